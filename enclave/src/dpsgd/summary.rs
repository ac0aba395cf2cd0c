//! `training-summary.json`: the public description of a finished DP-SGD job.

use super::engine::{OptimizerConfig, Outcome, Stop};
use super::plan::Plan;
use super::sampling::{Layout, PrivacyUnit};
use super::Result;
use crate::model::lora::LoraConfig;
use sealtune_attestation::accountant::ACCOUNTANT_VERSION;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The file name of the summary inside the output directory.
pub const SUMMARY_FILE: &str = "training-summary.json";

/// The summary format version (`docs/formats/training-summary.md`).
pub const SUMMARY_VERSION: u32 = 1;

/// Everything needed to state and check the privacy guarantee of a trained adapter.
/// Every field is a public parameter of the job or a function of them, never of the data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingSummary {
    /// Always [`SUMMARY_VERSION`].
    pub version: u32,
    /// The privacy unit.
    pub privacy_unit: PrivacyUnit,
    /// The neighbouring relation the guarantee holds for.
    pub neighbouring_relation: String,
    /// Always `poisson`: each unit included independently at every step.
    pub sampling: &'static str,
    /// `q`.
    pub sampling_rate: f64,
    /// `N_declared`: the dataset size `q` and `B̄` were derived from.
    pub declared_units: u64,
    /// `B̄ = q · N_declared`, the normaliser.
    pub expected_batch: f64,
    /// `σ`.
    pub noise_multiplier: f64,
    /// `C`.
    pub clip: f64,
    /// `σ · C`, the standard deviation of the noise added to every coordinate of the sum.
    pub noise_std: f64,
    /// How the noise is generated.
    pub noise_source: &'static str,
    /// Steps taken.
    pub steps: u64,
    /// The step limit σ was calibrated for.
    pub max_steps: u64,
    /// Why training ended.
    pub stop: Stop,
    /// The target ε.
    pub target_epsilon: f64,
    /// The δ of the whole guarantee (`delta_accounting` plus the overflow term).
    pub delta: f64,
    /// The δ at which the accountants computed ε.
    pub delta_accounting: f64,
    /// The accountant that calibrated σ and enforced the budget.
    pub enforcing_accountant: &'static str,
    /// The version of the accounting algorithms.
    pub accountant_version: &'static str,
    /// ε after `steps` steps at `delta_accounting`, by accountant name.
    pub epsilon: BTreeMap<String, f64>,
    /// The physical shape of every step, which the host can observe.
    pub layout: Layout,
    /// Bound on the probability that any step needed more than `layout.micro_batches`
    /// micro-batches (the one data-dependent thing the host could observe).
    pub overflow_probability: f64,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// LoRA rank.
    pub lora_rank: usize,
    /// LoRA alpha.
    pub lora_alpha: f64,
    /// Adapted modules (PEFT names).
    pub lora_targets: Vec<String>,
}

/// The noise generator, as [`TrainingSummary::noise_source`] states it.
pub const NOISE_SOURCE: &str =
    "ChaCha20 seeded from the OS; each sample the sum of four Box-Muller normals divided by 2 (Opacus secure mode)";

impl TrainingSummary {
    /// The summary of a run of `plan` that ended with `outcome`, ε recomputed by every
    /// accountant for the steps actually taken.
    pub fn new(plan: &Plan, outcome: &Outcome, lora: &LoraConfig) -> Result<Self> {
        let (config, spec) = (&plan.config, &plan.spec);
        Ok(TrainingSummary {
            version: SUMMARY_VERSION,
            privacy_unit: spec.privacy_unit,
            neighbouring_relation: spec.privacy_unit.neighbouring_relation().to_string(),
            sampling: "poisson",
            sampling_rate: config.sampling_rate,
            declared_units: spec.declared_units,
            expected_batch: config.expected_batch,
            noise_multiplier: config.noise_multiplier,
            clip: config.clip,
            noise_std: config.noise_multiplier * config.clip,
            noise_source: NOISE_SOURCE,
            steps: outcome.steps,
            max_steps: config.max_steps,
            stop: outcome.stop,
            target_epsilon: spec.epsilon,
            delta: spec.delta,
            delta_accounting: plan.delta_accounting,
            enforcing_accountant: spec.accountant.name(),
            accountant_version: ACCOUNTANT_VERSION,
            epsilon: plan.epsilon_by_accountant(outcome.steps)?,
            layout: config.layout,
            overflow_probability: plan.overflow_probability,
            seq_len: config.seq_len,
            optimizer: config.optimizer,
            lora_rank: lora.rank,
            lora_alpha: lora.alpha,
            lora_targets: lora.targets.iter().map(|t| t.peft_name().to_string()).collect(),
        })
    }

    /// The summary as pretty JSON, the contents of [`SUMMARY_FILE`].
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| super::DpError::bad("summary", e.to_string()))
    }

    /// Writes the summary as pretty JSON to `dir/training-summary.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(SUMMARY_FILE);
        std::fs::write(&path, self.to_json()?).map_err(|e| crate::model::ModelError::Io { path, source: e })?;
        Ok(())
    }
}
