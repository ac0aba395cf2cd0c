//! The owner's budget ledger on disk, and `sealtune owner budget`.
//!
//! One file per owner (`docs/formats/ledger.md`), rewritten whole for each
//! spend: the new contents go to a temporary file that is synced, renamed
//! over the ledger, and the directory synced, so the file is always either
//! the old ledger or the new one. A lock file beside it serialises grants,
//! so two grants that each fit alone cannot both pass the check.

use crate::failure::{Failure, Outcome};
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::ledger::{group_epsilon, Ledger, Mechanism, Spend};
use sealtune_attestation::policy::BudgetPolicy;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The ledger's file name beside the owner's identity key, unless `--ledger` names one.
pub(crate) const DEFAULT_LEDGER_NAME: &str = "sealtune-ledger.cbor";

/// How long a grant waits for another grant to release the ledger.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The ledger path: `explicit`, or [`DEFAULT_LEDGER_NAME`] beside the identity key.
pub(crate) fn ledger_path(explicit: Option<&Path>, identity: &Path) -> PathBuf {
    explicit.map_or_else(|| identity.with_file_name(DEFAULT_LEDGER_NAME), Path::to_path_buf)
}

/// Reads and verifies the ledger at `path` (an absent file is an empty ledger).
pub(crate) fn read_ledger(path: &Path, owner: &[u8; 32]) -> Result<Ledger, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => Ledger::from_cbor(&bytes, owner).map_err(|e| Failure::rejected(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::new(*owner)),
        Err(e) => Err(Failure::input(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The ledger held under its lock until dropped.
pub(crate) struct LockedLedger {
    path: PathBuf,
    _lock: File,
    ledger: Ledger,
}

impl LockedLedger {
    /// Takes the ledger's lock (waiting for another grant to finish), then reads and verifies it.
    pub(crate) fn acquire(path: &Path, owner: &[u8; 32]) -> Result<LockedLedger, Failure> {
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Failure::input(format!("cannot open {}: {e}", lock_path.display())))?;
        let start = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => std::thread::sleep(Duration::from_millis(20)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Failure::rejected(format!("{} is held by another grant for over {LOCK_WAIT:?}", lock_path.display())))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Failure::input(format!("cannot lock {}: {e}", lock_path.display()))),
            }
        }
        let ledger = read_ledger(path, owner)?;
        fault_point("ledger-read");
        Ok(LockedLedger { path: path.to_path_buf(), _lock: lock, ledger })
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Appends `spend` and makes it durable before returning: temporary
    /// file synced, renamed over the ledger, directory synced.
    pub(crate) fn record(&mut self, spend: Spend, owner: &IdentityKey) -> Result<(), Failure> {
        let mut next = self.ledger.clone();
        next.append(spend, owner).map_err(|e| Failure::rejected(e.to_string()))?;
        let fail = |e: std::io::Error| Failure::input(format!("cannot write {}: {e}", self.path.display()));
        let tmp = sibling(&self.path, ".tmp");
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp).map_err(fail)?;
        file.write_all(&next.to_cbor()).and_then(|()| file.sync_all()).map_err(fail)?;
        fault_point("ledger-tmp-synced");
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        fault_point("ledger-renamed");
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
        fault_point("ledger-committed");
        self.ledger = next;
        Ok(())
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// For the crash tests (host/tests/ledger.rs): with `SEALTUNE_FAULT_PAUSE`
/// set to `name`, the process announces the point on standard error and
/// waits there to be killed. Pausing only delays; it changes no outcome.
fn fault_point(name: &str) {
    if std::env::var_os("SEALTUNE_FAULT_PAUSE").is_some_and(|v| v == name) {
        eprintln!("paused at fault point {name}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// A group's spends and spent ε.
pub(crate) struct GroupState<'a> {
    pub(crate) name: String,
    pub(crate) spends: Vec<&'a Spend>,
    pub(crate) epsilon: f64,
}

/// The spends that count against `group`: those recorded under its name,
/// and those of datasets the policy puts in it now.
pub(crate) fn group_state<'a>(ledger: &'a Ledger, budget: &BudgetPolicy, group: &str) -> Result<GroupState<'a>, Failure> {
    let spends: Vec<&Spend> = ledger.spends().iter().filter(|s| s.group == group || budget.group_of(&s.dataset) == group).collect();
    let mechanisms: Vec<&Mechanism> = spends.iter().map(|s| &s.mechanism).collect();
    let epsilon = group_epsilon(&mechanisms, budget.lifetime_delta).map_err(|e| Failure::rejected(e.to_string()))?;
    Ok(GroupState { name: group.to_string(), spends, epsilon })
}

/// What a new spend does to its group.
pub(crate) struct Assessment {
    pub(crate) group: String,
    pub(crate) spent_before: f64,
    pub(crate) spent_after: f64,
}

/// Checks a grant of `dataset` to the job `manifest_hash` with `mechanism`
/// against the budget: the grant count per job, the unit, and the group's
/// lifetime ε with the new mechanism composed in. Refusals exit 3.
pub(crate) fn assess(
    ledger: &Ledger,
    budget: &BudgetPolicy,
    dataset: &[u8; 32],
    manifest_hash: &[u8; 32],
    mechanism: &Mechanism,
) -> Result<Assessment, Failure> {
    if budget.unit == "user" && mechanism.privacy_unit != "user" {
        return Err(Failure::over_budget(format!(
            "refused: the lifetime budget protects users, and this job protects only `{}`s (its ε bounds nothing per user)",
            mechanism.privacy_unit
        )));
    }
    let grants = ledger.spends().iter().filter(|s| &s.manifest == manifest_hash && &s.dataset == dataset).count();
    if grants >= budget.max_grants_per_job as usize {
        return Err(Failure::over_budget(format!(
            "refused: job {} already has {grants} grant(s) of dataset {} (max_grants_per_job = {}); a relaunched job spends again",
            hex::encode(manifest_hash),
            hex::encode(dataset),
            budget.max_grants_per_job
        )));
    }
    let group = budget.group_of(dataset);
    let before = group_state(ledger, budget, &group)?;
    let mut mechanisms: Vec<&Mechanism> = before.spends.iter().map(|s| &s.mechanism).collect();
    mechanisms.push(mechanism);
    let after = group_epsilon(&mechanisms, budget.lifetime_delta).map_err(|e| Failure::rejected(e.to_string()))?;
    if !(after <= budget.lifetime_epsilon) {
        return Err(Failure::over_budget(format!(
            "refused: budget group `{group}` has spent ε = {:.4} of its lifetime ε = {} (δ = {:e}); this job (ε = {} at δ = {:e}, {} steps) would bring it to ε = {after:.4}",
            before.epsilon, budget.lifetime_epsilon, budget.lifetime_delta, mechanism.epsilon, mechanism.delta, mechanism.max_steps
        )));
    }
    Ok(Assessment { group, spent_before: before.epsilon, spent_after: after })
}

/// `sealtune owner budget`: each group's lifetime, spent and remaining ε.
pub(crate) fn show(ledger_path: &Path, owner: &[u8; 32], budget: &BudgetPolicy, only: Option<&str>, verify: bool, json: bool) -> Outcome {
    let ledger = read_ledger(ledger_path, owner)?;
    if verify {
        let head = hex::encode(ledger.head());
        return crate::print_result(
            json,
            serde_json::json!({ "ledger": ledger_path.display().to_string(), "entries": ledger.spends().len(), "head": head, "verified": true }),
            format!("{}: {} entries, every signature and link verified; head {head}", ledger_path.display(), ledger.spends().len()),
        );
    }
    let mut names: Vec<String> = budget.groups.iter().map(|g| g.name.clone()).collect();
    for s in ledger.spends() {
        for name in [s.group.clone(), budget.group_of(&s.dataset)] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if let Some(only) = only {
        if !names.iter().any(|n| n == only) {
            return Err(Failure::input(format!("no budget group `{only}` in the policy or the ledger")));
        }
        names.retain(|n| n == only);
    }
    let mut groups = Vec::new();
    let mut text = Vec::new();
    for name in names {
        let state = group_state(&ledger, budget, &name)?;
        let remaining = (budget.lifetime_epsilon - state.epsilon).max(0.0);
        text.push(format!(
            "group {name}: spent ε = {:.4} of {} (δ = {:e}), remaining {remaining:.4}, {} grant(s)",
            state.epsilon,
            budget.lifetime_epsilon,
            budget.lifetime_delta,
            state.spends.len()
        ));
        let spends: Vec<serde_json::Value> = state
            .spends
            .iter()
            .map(|s| {
                text.push(format!(
                    "  #{} job {} ({}) dataset {}…: ε = {} at δ = {:e}, q = {}, σ = {:.4}, {} steps",
                    s.sequence,
                    s.job_id,
                    &hex::encode(s.manifest)[..16],
                    &hex::encode(s.dataset)[..16],
                    s.mechanism.epsilon,
                    s.mechanism.delta,
                    s.mechanism.sampling_rate,
                    s.mechanism.noise_multiplier,
                    s.mechanism.max_steps
                ));
                serde_json::json!({
                    "sequence": s.sequence,
                    "job_id": s.job_id,
                    "manifest": hex::encode(s.manifest),
                    "dataset": hex::encode(s.dataset),
                    "evidence": hex::encode(s.evidence),
                    "time": s.time,
                    "mechanism": s.mechanism,
                })
            })
            .collect();
        groups.push(serde_json::json!({
            "group": state.name,
            "lifetime_epsilon": budget.lifetime_epsilon,
            "lifetime_delta": budget.lifetime_delta,
            "spent_epsilon": state.epsilon,
            "remaining_epsilon": remaining,
            "spends": spends,
        }));
    }
    crate::print_result(
        json,
        serde_json::json!({ "ledger": ledger_path.display().to_string(), "head": hex::encode(ledger.head()), "groups": groups }),
        text.join("\n"),
    )
}
