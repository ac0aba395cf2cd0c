//! A verifier's policy (TOML, `docs/formats/policy.md`): which enclaves it
//! trusts and, for data owners, which job terms it accepts.

use crate::manifest::JobManifest;
use crate::snp::tcb::Tcb;
use serde::{Deserialize, Serialize};

/// The policy format version this crate reads.
pub const POLICY_VERSION: u32 = 1;

/// A verification policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Always [`POLICY_VERSION`].
    pub version: u32,
    /// Accept evidence from sealtune's simulated platform. Never set this in production.
    #[serde(default)]
    pub allow_simulated: bool,
    /// Accept TEEs launched with debugging enabled (the host can read their memory).
    #[serde(default)]
    pub allow_debug: bool,
    /// Highest VMPL a report may come from; 0 (the default) admits only the
    /// guest's most privileged level, where sealtune's enclave runs.
    #[serde(default)]
    pub max_vmpl: u32,
    /// Launch measurements (hex, 48 bytes) of enclave builds this policy trusts.
    pub measurements: Vec<String>,
    /// Minimum firmware TCB; absent means any TCB the VCEK was issued for.
    #[serde(default)]
    pub min_tcb: Option<Tcb>,
    /// Intel TDX settings; absent means the TDX defaults (see [`TdxPolicy`]).
    #[serde(default)]
    pub tdx: Option<TdxPolicy>,
    /// For data owners: the job terms under which they release a key.
    #[serde(default)]
    pub job: Option<JobTerms>,
    /// For data owners: the lifetime privacy budget every grant must fit.
    #[serde(default)]
    pub budget: Option<BudgetPolicy>,
}

/// A data owner's lifetime budget (`docs/formats/ledger.md`): each group of
/// datasets that share data subjects may lose at most (ε, δ) over all the
/// jobs ever granted any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetPolicy {
    /// ε every group may spend over its lifetime.
    pub lifetime_epsilon: f64,
    /// δ of the lifetime guarantee.
    pub lifetime_delta: f64,
    /// How many grants one job (manifest hash) may get per dataset; a
    /// relaunched enclave asks again, and each grant is a spend.
    #[serde(default = "one_grant")]
    pub max_grants_per_job: u32,
    /// `record` (the default) or `user`: what the lifetime guarantee
    /// protects. A user-level budget cannot count record-level jobs.
    #[serde(default = "record_unit")]
    pub unit: String,
    /// Datasets that share data subjects (the same patients in two extracts).
    /// A dataset in no group is a group of its own.
    #[serde(default)]
    pub groups: Vec<BudgetGroup>,
}

fn one_grant() -> u32 {
    1
}

fn record_unit() -> String {
    "record".into()
}

/// Datasets that share one budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetGroup {
    /// The group's name in the ledger and in `owner budget`.
    pub name: String,
    /// Dataset commitments (hex, 32 bytes).
    pub datasets: Vec<String>,
}

impl BudgetPolicy {
    /// The name of the group `dataset` belongs to: its group's, or
    /// `dataset:` and its commitment when it is in none.
    pub fn group_of(&self, dataset: &[u8; 32]) -> String {
        let hex = hex::encode(dataset);
        self.groups
            .iter()
            .find(|g| g.datasets.iter().any(|d| d.eq_ignore_ascii_case(&hex)))
            .map_or_else(|| format!("dataset:{hex}"), |g| g.name.clone())
    }

    fn check(&self) -> Result<(), PolicyError> {
        let bad = |reason: String| Err(PolicyError::BadBudget(reason));
        if !(self.lifetime_epsilon > 0.0 && self.lifetime_epsilon.is_finite()) {
            return bad(format!("lifetime_epsilon must be a positive number, got {}", self.lifetime_epsilon));
        }
        if !(self.lifetime_delta > 0.0 && self.lifetime_delta < 1.0) {
            return bad(format!("lifetime_delta must be in (0, 1), got {}", self.lifetime_delta));
        }
        if self.max_grants_per_job == 0 {
            return bad("max_grants_per_job must be at least 1".into());
        }
        if !matches!(self.unit.as_str(), "record" | "user") {
            return bad(format!("unit `{}` is not `record` or `user`", self.unit));
        }
        let mut seen: Vec<[u8; 32]> = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            if group.name.is_empty() || group.name.starts_with("dataset:") || self.groups[..i].iter().any(|g| g.name == group.name) {
                return bad(format!("group name `{}` is empty, reserved (`dataset:`) or used twice", group.name));
            }
            for d in &group.datasets {
                let Some(commitment) = hex::decode(d).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
                    return bad(format!("group `{}`: `{d}` is not a 32-byte hex commitment", group.name));
                };
                if seen.contains(&commitment) {
                    return bad(format!("dataset {d} is in two groups (or twice in one)"));
                }
                seen.push(commitment);
            }
        }
        Ok(())
    }
}

/// What a TDX quote must show beyond MRTD (which `measurements` lists).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxPolicy {
    /// Intel security advisories (`INTEL-SA-xxxxx`) a TCB below UpToDate may
    /// be affected by and still be accepted. Empty (the default): only an
    /// UpToDate TCB is accepted.
    #[serde(default)]
    pub allowed_advisories: Vec<String>,
    /// Accept collateral without CRLs (and then also without a QE
    /// identity): the PCK, its CA and the collateral signer are not checked
    /// for revocation, and the claims list what went unchecked. For
    /// archived evidence whose CRLs are gone; the default (false) refuses it.
    #[serde(default)]
    pub allow_partial_collateral: bool,
    /// Allowed RTMR0 values (48 bytes, hex); absent means not checked.
    #[serde(default)]
    pub rtmr0: Option<Vec<String>>,
    /// Allowed RTMR1 values.
    #[serde(default)]
    pub rtmr1: Option<Vec<String>>,
    /// Allowed RTMR2 values.
    #[serde(default)]
    pub rtmr2: Option<Vec<String>>,
    /// Allowed RTMR3 values.
    #[serde(default)]
    pub rtmr3: Option<Vec<String>>,
}

impl TdxPolicy {
    /// The RTMR allow-lists, decoded, by register; `None` where unchecked.
    pub fn rtmr_lists(&self) -> Result<[Option<Vec<[u8; 48]>>; 4], PolicyError> {
        let decode = |register: usize, list: &Option<Vec<String>>| -> Result<Option<Vec<[u8; 48]>>, PolicyError> {
            list.as_ref()
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(index, m)| {
                            hex::decode(m)
                                .ok()
                                .and_then(|b| <[u8; 48]>::try_from(b).ok())
                                .ok_or(PolicyError::BadRtmr { register, index })
                        })
                        .collect()
                })
                .transpose()
        };
        Ok([decode(0, &self.rtmr0)?, decode(1, &self.rtmr1)?, decode(2, &self.rtmr2)?, decode(3, &self.rtmr3)?])
    }
}

/// The job terms a data owner accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTerms {
    /// Largest ε the job may spend.
    pub max_epsilon: f64,
    /// Largest δ the job may use.
    pub max_delta: f64,
    /// SHA-256 digests (hex) of the base models the owner accepts.
    pub base_models: Vec<String>,
    /// Ed25519 keys (hex) of the vendors allowed to receive the outputs.
    pub recipients: Vec<String>,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML or not the policy schema.
    #[error("policy is not valid: {0}")]
    Syntax(String),
    /// The version field names an unknown policy format.
    #[error("unsupported policy version {0} (this build reads version {POLICY_VERSION})")]
    UnsupportedVersion(u32),
    /// A measurement is not 96 hex digits.
    #[error("policy measurement {index} is not 48 bytes of hex")]
    BadMeasurement {
        /// Position in the list.
        index: usize,
    },
    /// An RTMR allow-list entry is not 96 hex digits.
    #[error("policy tdx.rtmr{register} entry {index} is not 48 bytes of hex")]
    BadRtmr {
        /// Which RTMR (0–3).
        register: usize,
        /// Position in the list.
        index: usize,
    },
    /// The allow-list is empty, so no enclave could ever verify.
    #[error("policy allows no measurement")]
    NoMeasurements,
    /// The `[budget]` section is not usable.
    #[error("policy [budget]: {0}")]
    BadBudget(String),
}

/// Why a job manifest's terms are not acceptable to a data owner.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TermsViolation {
    /// The owner's policy has no `[job]` section, so it accepts no job.
    #[error("the policy has no [job] terms, so it cannot release a key to any job")]
    NoJobTerms,
    /// ε above the owner's maximum.
    #[error("job epsilon {job} exceeds the policy maximum {max}")]
    Epsilon {
        /// The job's ε.
        job: f64,
        /// The policy's maximum.
        max: f64,
    },
    /// δ above the owner's maximum.
    #[error("job delta {job} exceeds the policy maximum {max}")]
    Delta {
        /// The job's δ.
        job: f64,
        /// The policy's maximum.
        max: f64,
    },
    /// The base model is not in the owner's list.
    #[error("base model {0} is not allowed by the policy")]
    BaseModel(String),
    /// A recipient is not in the owner's list.
    #[error("output recipient {0} is not allowed by the policy")]
    Recipient(String),
}

impl Policy {
    /// Parses and checks a TOML policy.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_string()))?;
        if probe.version != POLICY_VERSION {
            return Err(PolicyError::UnsupportedVersion(probe.version));
        }
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_string()))?;
        policy.measurement_list()?;
        if let Some(tdx) = &policy.tdx {
            tdx.rtmr_lists()?;
        }
        if let Some(budget) = &policy.budget {
            budget.check()?;
        }
        Ok(policy)
    }

    /// The allowed measurements, decoded.
    pub fn measurement_list(&self) -> Result<Vec<[u8; 48]>, PolicyError> {
        if self.measurements.is_empty() {
            return Err(PolicyError::NoMeasurements);
        }
        self.measurements
            .iter()
            .enumerate()
            .map(|(index, m)| {
                hex::decode(m).ok().and_then(|b| <[u8; 48]>::try_from(b).ok()).ok_or(PolicyError::BadMeasurement { index })
            })
            .collect()
    }

    /// Checks a manifest's terms against the owner's `[job]` section.
    pub fn check_job(&self, manifest: &JobManifest) -> Result<(), TermsViolation> {
        let terms = self.job.as_ref().ok_or(TermsViolation::NoJobTerms)?;
        let privacy = &manifest.privacy;
        // `!(a <= b)` also rejects NaN.
        if !(privacy.epsilon <= terms.max_epsilon) {
            return Err(TermsViolation::Epsilon { job: privacy.epsilon, max: terms.max_epsilon });
        }
        if !(privacy.delta <= terms.max_delta) {
            return Err(TermsViolation::Delta { job: privacy.delta, max: terms.max_delta });
        }
        let model = hex::encode(manifest.base_model.sha256);
        if !terms.base_models.iter().any(|m| m.eq_ignore_ascii_case(&model)) {
            return Err(TermsViolation::BaseModel(model));
        }
        for recipient in &manifest.recipients {
            let recipient = hex::encode(&recipient[..]);
            if !terms.recipients.iter().any(|r| r.eq_ignore_ascii_case(&recipient)) {
                return Err(TermsViolation::Recipient(recipient));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
version = 1
allow_simulated = true
measurements = ["7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"]

[min_tcb]
bootloader = 3
tee = 0
snp = 8
microcode = 115

[tdx]
allowed_advisories = ["INTEL-SA-00837"]
rtmr3 = ["000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]

[job]
max_epsilon = 8.0
max_delta = 1e-5
base_models = []
recipients = []

[budget]
lifetime_epsilon = 10.0
lifetime_delta = 1e-5

[[budget.groups]]
name = "cardiology"
datasets = ["2bec72891b5f640c40a655abc5aea96c27543bbf9debc8e8506e320de039c22c", "c808fb80ab79d2b400b0d784048c701d09dc42af9365825dfbc2caa007d53d3d"]
"#;

    #[test]
    fn parses_the_documented_example() {
        let p = Policy::from_toml(EXAMPLE).unwrap();
        assert!(p.allow_simulated && !p.allow_debug);
        assert_eq!(p.max_vmpl, 0);
        assert_eq!(p.min_tcb, Some(Tcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 }));
        let tdx = p.tdx.as_ref().unwrap();
        assert_eq!(tdx.allowed_advisories, ["INTEL-SA-00837"]);
        assert_eq!(tdx.rtmr_lists().unwrap(), [None, None, None, Some(vec![[0; 48]])]);
        assert_eq!(p.job.unwrap().max_delta, 1e-5);
        let budget = p.budget.unwrap();
        assert_eq!((budget.lifetime_epsilon, budget.max_grants_per_job, budget.unit.as_str()), (10.0, 1, "record"));
        let grouped = hex_literal::hex!("c808fb80ab79d2b400b0d784048c701d09dc42af9365825dfbc2caa007d53d3d");
        assert_eq!(budget.group_of(&grouped), "cardiology");
        assert_eq!(budget.group_of(&[0xab; 32]), format!("dataset:{}", "ab".repeat(32)));
    }

    #[test]
    fn rejects_unusable_budgets_naming_the_field() {
        for (from, to, names) in [
            ("lifetime_epsilon = 10.0", "lifetime_epsilon = -1.0", "lifetime_epsilon"),
            ("lifetime_delta = 1e-5", "lifetime_delta = 1.0", "lifetime_delta"),
            ("lifetime_delta = 1e-5", "lifetime_delta = 1e-5\nmax_grants_per_job = 0", "max_grants_per_job"),
            ("lifetime_delta = 1e-5", "lifetime_delta = 1e-5\nunit = \"patient\"", "unit"),
            ("name = \"cardiology\"", "name = \"dataset:x\"", "reserved"),
            ("\"2bec72891b5f640c40a655abc5aea96c27543bbf9debc8e8506e320de039c22c\"", "\"2bec\"", "2bec"),
            ("\"2bec72891b5f640c40a655abc5aea96c27543bbf9debc8e8506e320de039c22c\"", "\"c808fb80ab79d2b400b0d784048c701d09dc42af9365825dfbc2caa007d53d3d\"", "two groups"),
        ] {
            let text = EXAMPLE.replace(from, to);
            assert_ne!(text, EXAMPLE, "{from}");
            match Policy::from_toml(&text) {
                Err(PolicyError::BadBudget(reason)) => assert!(reason.contains(names), "{reason}"),
                other => panic!("{to}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_typos_versions_and_empty_allow_lists() {
        let typo = EXAMPLE.replace("allow_simulated", "allow_simulation");
        assert!(matches!(Policy::from_toml(&typo), Err(PolicyError::Syntax(_))));
        let v2 = EXAMPLE.replace("version = 1", "version = 2");
        assert!(matches!(Policy::from_toml(&v2), Err(PolicyError::UnsupportedVersion(2))));
        let empty = EXAMPLE.replace(r#"["7a1e"#, r#"[] # ["7a1e"#);
        assert!(matches!(Policy::from_toml(&empty), Err(PolicyError::NoMeasurements)));
        let short = EXAMPLE.replace("841f\"", "\"");
        assert!(matches!(Policy::from_toml(&short), Err(PolicyError::BadMeasurement { index: 0 })));
        let rtmr = EXAMPLE.replace("rtmr3 = [\"00", "rtmr3 = [\"0");
        assert!(matches!(Policy::from_toml(&rtmr), Err(PolicyError::BadRtmr { register: 3, index: 0 })));
        let tdx_typo = EXAMPLE.replace("allowed_advisories", "allowed_advisory");
        assert!(matches!(Policy::from_toml(&tdx_typo), Err(PolicyError::Syntax(_))));
    }
}
