//! Turning a job's public parameters into an engine configuration, before any data is
//! touched: σ calibrated by the privacy accountant, the physical layout chosen, δ split.

use super::engine::{Accountant, DpSgdConfig, OptimizerConfig};
use super::sampling::{Layout, PrivacyUnit};
use super::{DpError, Result};
use sealtune_attestation::accountant::job::job_noise;
use sealtune_attestation::accountant::{self, AccountantKind, Segment};
use sealtune_attestation::manifest::JobManifest;
use std::collections::BTreeMap;

/// The public parameters of a DP-SGD job (in the service: from the signed manifest).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Target ε.
    pub epsilon: f64,
    /// Target δ of the whole guarantee.
    pub delta: f64,
    /// Clipping bound `C`.
    pub clip: f64,
    /// `B̄`, in units (records or users).
    pub expected_batch: f64,
    /// `N_declared`, in units: a public upper bound on the units of the dataset.
    pub declared_units: u64,
    /// The step budget σ is calibrated for.
    pub max_steps: u64,
    /// The privacy unit.
    pub privacy_unit: PrivacyUnit,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Rows per micro-batch.
    pub micro_batch: usize,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The accountant that calibrates σ and enforces the budget.
    pub accountant: AccountantKind,
}

/// Rows per micro-batch in service jobs: a physical choice, not a term of the job.
pub const SERVICE_MICRO_BATCH: usize = 8;

/// With user-level privacy, the most records of one user a step uses (service jobs).
pub const SERVICE_MAX_RECORDS_PER_USER: usize = 4;

impl JobSpec {
    /// The DP-SGD terms of a signed job manifest. `N_declared = B̄ / q` must be a
    /// whole number of units: both are public terms the vendor chose together.
    pub fn from_manifest(manifest: &JobManifest) -> Result<Self> {
        let p = &manifest.privacy;
        let declared = p.declared_units().ok_or_else(|| {
            DpError::bad(
                "expected_batch_size",
                format!("B̄ / q = {} / {} is not a whole number of units", p.expected_batch_size, p.sampling_rate),
            )
        })?;
        let accountant = match p.accountant.as_str() {
            "pld" => AccountantKind::Pld,
            "rdp" => AccountantKind::Rdp,
            other => return Err(DpError::bad("accountant", format!("`{other}` is not `pld` or `rdp`"))),
        };
        let privacy_unit = match p.privacy_unit.as_str() {
            "record" => PrivacyUnit::Record,
            "user" => PrivacyUnit::User { max_records: SERVICE_MAX_RECORDS_PER_USER },
            other => return Err(DpError::bad("privacy_unit", format!("`{other}` is not `record` or `user`"))),
        };
        let t = &manifest.training;
        let optimizer = match t.optimizer.as_str() {
            "adamw" => OptimizerConfig::adamw(t.learning_rate),
            "sgd" => OptimizerConfig::Sgd { lr: t.learning_rate },
            other => return Err(DpError::bad("optimizer", format!("`{other}` is not `adamw` or `sgd`"))),
        };
        Ok(JobSpec {
            epsilon: p.epsilon,
            delta: p.delta,
            clip: p.clip_norm,
            expected_batch: p.expected_batch_size,
            declared_units: declared,
            max_steps: p.max_steps,
            privacy_unit,
            seq_len: t.max_seq_len as usize,
            micro_batch: SERVICE_MICRO_BATCH,
            optimizer,
            accountant,
        })
    }
}

/// A job made ready to run: the engine configuration and the accounting facts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job it was made from.
    pub spec: JobSpec,
    /// The engine configuration (σ calibrated).
    pub config: DpSgdConfig,
    /// The δ the accountants compute ε at.
    pub delta_accounting: f64,
    /// Bound on the probability that any step overflows its layout.
    pub overflow_probability: f64,
}

impl JobSpec {
    /// `q = B̄ / N_declared`, then σ from the accountant so that `max_steps` steps
    /// spend at most ε at the accounting δ, then the fewest micro-batches per step whose
    /// overflow probability fits the rest of δ.
    ///
    /// An overflow is observable, so the guarantee is `(ε, δ_acc + (1 + e^ε)·p)` for an
    /// overflow probability `p` (the output given no overflow is within `p` of the
    /// unconditioned one on both datasets); `p` is chosen so that this is δ.
    pub fn plan(&self) -> Result<Plan> {
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(DpError::bad("delta", "must be in (0, 1)"));
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(DpError::bad("epsilon", "must be a positive number"));
        }
        if self.declared_units == 0 || self.max_steps == 0 {
            return Err(DpError::bad("declared_units", "the declared dataset size and the step budget must be positive"));
        }
        let q = self.expected_batch / self.declared_units as f64;
        if !(q > 0.0 && q <= 1.0) {
            return Err(DpError::bad("expected_batch", format!("B̄ = {} is not in (0, N_declared = {}]", self.expected_batch, self.declared_units)));
        }
        let noise = job_noise(self.accountant, self.expected_batch, self.declared_units, self.max_steps, self.epsilon, self.delta).map_err(acct)?;
        let (sigma, delta_accounting, overflow_budget) = (noise.noise_multiplier, noise.delta_accounting, noise.overflow_budget);
        let layout = Layout::for_job(self.micro_batch, self.privacy_unit, self.declared_units as usize, q, self.max_steps, overflow_budget)?;
        let overflow_probability = layout.overflow_probability(self.privacy_unit, self.declared_units as usize, q, self.max_steps);
        let config = DpSgdConfig {
            sampling_rate: q,
            expected_batch: self.expected_batch,
            noise_multiplier: sigma,
            clip: self.clip,
            max_steps: self.max_steps,
            seq_len: self.seq_len,
            layout,
            optimizer: self.optimizer,
        };
        Ok(Plan { spec: self.clone(), config, delta_accounting, overflow_probability })
    }
}

impl Plan {
    /// The accountant that enforces the budget during training.
    pub fn ledger(&self) -> Ledger {
        Ledger {
            kind: self.spec.accountant,
            q: self.config.sampling_rate,
            sigma: self.config.noise_multiplier,
            delta: self.delta_accounting,
        }
    }

    /// ε after `steps` steps by every accountant, keyed by name.
    pub fn epsilon_by_accountant(&self, steps: u64) -> Result<BTreeMap<String, f64>> {
        [AccountantKind::Rdp, AccountantKind::Pld]
            .into_iter()
            .map(|kind| {
                let mut ledger = Ledger { kind, ..self.ledger() };
                Ok((kind.name().to_string(), ledger.epsilon_after(steps)?))
            })
            .collect()
    }
}

/// ε of `steps` steps of the Poisson-subsampled Gaussian with the plan's `q` and `σ`.
#[derive(Debug, Clone, Copy)]
pub struct Ledger {
    kind: AccountantKind,
    q: f64,
    sigma: f64,
    delta: f64,
}

impl Accountant for Ledger {
    fn epsilon_after(&mut self, steps: u64) -> Result<f64> {
        if steps == 0 {
            return Ok(0.0);
        }
        let segment = Segment { sampling_rate: self.q, noise_multiplier: self.sigma, steps };
        accountant::epsilon(self.kind, &[segment], self.delta).map_err(acct)
    }
}

fn acct(e: sealtune_attestation::accountant::AccountantError) -> DpError {
    DpError::Accountant(e.to_string())
}
