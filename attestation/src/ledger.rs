//! A data owner's privacy-budget ledger (`docs/formats/ledger.md`): every
//! key grant is a spend, recorded before the key leaves, signed by the owner
//! and chained to the spend before it; a budget group's spent ε is the
//! composition of all its spends' mechanisms by the accountant.
//!
//! This module is the format and the arithmetic; the file, its lock and its
//! crash-safe writes are the host's (`sealtune owner grant`, `owner budget`).

use crate::accountant::job::{job_noise, ACCOUNTING_DELTA_SHARE};
use crate::accountant::{self, AccountantError, AccountantKind, Segment};
use crate::cbor::{self, CborError};
use crate::identity::{verify_signature, IdentityKey};
use crate::manifest::JobManifest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The ledger format version this crate reads and writes.
pub const LEDGER_VERSION: u32 = 1;

/// Domain tag of the owner's signature over an entry.
pub const ENTRY_SIGNATURE_TAG: &[u8] = b"sealtune/v1/ledger-entry";

/// What one grant lets a job do with the owner's records: the job's
/// Poisson-subsampled Gaussian at its *maximum* step count, whatever the job
/// later reports, since a released key cannot be taken back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mechanism {
    /// The accountant the job enforces its own budget with (`pld` or `rdp`).
    pub accountant: String,
    /// q = B̄ / N_declared.
    pub sampling_rate: f64,
    /// σ as the enclave calibrates it from the job's public terms.
    pub noise_multiplier: f64,
    /// The job's step limit.
    pub max_steps: u64,
    /// Clipping norm C (σ·C is the noise; ε does not depend on C).
    pub clip_norm: f64,
    /// `record` or `user`: the job's neighbouring relation (add/remove one unit).
    pub privacy_unit: String,
    /// The job's own target ε.
    pub epsilon: f64,
    /// The job's own δ.
    pub delta: f64,
}

impl Mechanism {
    /// The mechanism of a job, from its signed public terms alone (the same
    /// calibration the enclave runs before it accepts a grant).
    pub fn of_job(manifest: &JobManifest) -> Result<Mechanism, LedgerError> {
        let p = &manifest.privacy;
        let kind = AccountantKind::parse(&p.accountant).ok_or_else(|| LedgerError::UnknownAccountant(p.accountant.clone()))?;
        let declared = p.declared_units().ok_or(LedgerError::NoDeclaredUnits)?;
        let noise = job_noise(kind, p.expected_batch_size, declared, p.max_steps, p.epsilon, p.delta)?;
        Ok(Mechanism {
            accountant: p.accountant.clone(),
            sampling_rate: noise.sampling_rate,
            noise_multiplier: noise.noise_multiplier,
            max_steps: p.max_steps,
            clip_norm: p.clip_norm,
            privacy_unit: p.privacy_unit.clone(),
            epsilon: p.epsilon,
            delta: p.delta,
        })
    }

    fn segment(&self) -> Segment {
        Segment { sampling_rate: self.sampling_rate, noise_multiplier: self.noise_multiplier, steps: self.max_steps }
    }

    /// The most this job's step overflows can add to δ (`JobNoise::overflow_budget`).
    fn overflow_probability(&self) -> f64 {
        self.delta * (1.0 - ACCOUNTING_DELTA_SHARE) / (1.0 + self.epsilon.exp())
    }
}

/// One spend: a key released for one dataset to one enclave running one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spend {
    /// Always [`LEDGER_VERSION`].
    pub version: u32,
    /// Position in the ledger, from 0.
    pub sequence: u64,
    /// SHA-256 of the previous entry's encoding; zeros for the first.
    #[serde(with = "serde_bytes")]
    pub previous: [u8; 32],
    /// The dataset's commitment (SHA-256 of its sealed file).
    #[serde(with = "serde_bytes")]
    pub dataset: [u8; 32],
    /// The budget group the dataset belonged to when the key was released.
    pub group: String,
    /// The job manifest's hash.
    #[serde(with = "serde_bytes")]
    pub manifest: [u8; 32],
    /// The job's id, for people reading the ledger.
    pub job_id: String,
    /// SHA-256 of the enclave evidence the key was sealed to.
    #[serde(with = "serde_bytes")]
    pub evidence: [u8; 32],
    /// What the job may do with the records.
    pub mechanism: Mechanism,
    /// When the entry was written (Unix seconds).
    pub time: i64,
}

/// An entry as stored: the exact encoding of a [`Spend`] and the owner's
/// signature over [`ENTRY_SIGNATURE_TAG`] ‖ `spend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEntry {
    /// Canonical CBOR of a [`Spend`].
    #[serde(with = "serde_bytes")]
    pub spend: Vec<u8>,
    /// Ed25519 signature by the ledger's owner.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl SignedEntry {
    /// SHA-256 of the entry's encoding: the next entry's `previous`.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(cbor::to_vec(self)).into()
    }
}

/// The file: the owner's key and the entries in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    version: u32,
    #[serde(with = "serde_bytes")]
    owner: [u8; 32],
    entries: Vec<SignedEntry>,
}

/// A ledger whose every entry verified: signed by its owner, numbered in
/// order, each chained to the one before.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    owner: [u8; 32],
    entries: Vec<SignedEntry>,
    spends: Vec<Spend>,
}

/// Why a ledger cannot be read or extended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Not a CBOR ledger (truncated, or not a ledger at all).
    #[error("not a budget ledger: {0}")]
    Malformed(#[from] CborError),
    /// A version this build does not read.
    #[error("unsupported ledger version {0} (this build reads version {LEDGER_VERSION})")]
    UnsupportedVersion(u32),
    /// The ledger belongs to another owner key.
    #[error("the ledger belongs to owner {found}, not {expected}")]
    ForeignOwner {
        /// The key the caller holds.
        expected: String,
        /// The key the file names.
        found: String,
    },
    /// An entry's signature does not verify under the owner's key.
    #[error("ledger entry {index}: the owner's signature does not verify")]
    BadSignature {
        /// The first bad entry.
        index: usize,
    },
    /// An entry's bytes are not a spend record.
    #[error("ledger entry {index} is not a spend record: {source}")]
    BadEntry {
        /// The first bad entry.
        index: usize,
        /// Why.
        source: CborError,
    },
    /// An entry's number is not its position: an entry was removed, inserted or moved.
    #[error("ledger entry {index} is numbered {found}: an entry was removed, inserted or reordered")]
    Sequence {
        /// The first bad entry.
        index: usize,
        /// The number it carries.
        found: u64,
    },
    /// An entry does not chain to the one before it.
    #[error("ledger entry {index} does not chain to the entry before it")]
    BrokenChain {
        /// The first bad entry.
        index: usize,
    },
    /// The job names an accountant this build does not know.
    #[error("the job's accountant `{0}` is unknown")]
    UnknownAccountant(String),
    /// The job's B̄ / q is not a whole number of units, so it has no mechanism.
    #[error("the job's expected batch over its sampling rate is not a whole number of units")]
    NoDeclaredUnits,
    /// The accountant cannot calibrate or compose these mechanisms.
    #[error("privacy accountant: {0}")]
    Accountant(#[from] AccountantError),
}

impl LedgerError {
    /// The index of the first entry that failed verification, if that is the failure.
    pub fn bad_entry(&self) -> Option<usize> {
        match self {
            LedgerError::BadSignature { index }
            | LedgerError::BadEntry { index, .. }
            | LedgerError::Sequence { index, .. }
            | LedgerError::BrokenChain { index } => Some(*index),
            _ => None,
        }
    }
}

impl Ledger {
    /// An empty ledger of `owner`.
    pub fn new(owner: [u8; 32]) -> Ledger {
        Ledger { owner, entries: Vec::new(), spends: Vec::new() }
    }

    /// Decodes a ledger and verifies every entry against `owner`'s key.
    pub fn from_cbor(bytes: &[u8], owner: &[u8; 32]) -> Result<Ledger, LedgerError> {
        let version = cbor::version_of(bytes)?;
        if version != LEDGER_VERSION {
            return Err(LedgerError::UnsupportedVersion(version));
        }
        let file: LedgerFile = cbor::from_slice(bytes)?;
        if &file.owner != owner {
            return Err(LedgerError::ForeignOwner { expected: hex::encode(owner), found: hex::encode(file.owner) });
        }
        let mut ledger = Ledger::new(file.owner);
        for (index, entry) in file.entries.into_iter().enumerate() {
            if !verify_signature(owner, &signed_message(&entry.spend), &entry.signature) {
                return Err(LedgerError::BadSignature { index });
            }
            let spend: Spend = cbor::from_slice(&entry.spend).map_err(|source| LedgerError::BadEntry { index, source })?;
            if spend.version != LEDGER_VERSION {
                return Err(LedgerError::UnsupportedVersion(spend.version));
            }
            if spend.sequence != index as u64 {
                return Err(LedgerError::Sequence { index, found: spend.sequence });
            }
            if spend.previous != ledger.head() {
                return Err(LedgerError::BrokenChain { index });
            }
            ledger.entries.push(entry);
            ledger.spends.push(spend);
        }
        Ok(ledger)
    }

    /// The canonical encoding (the file's contents).
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(&LedgerFile { version: LEDGER_VERSION, owner: self.owner, entries: self.entries.clone() })
    }

    /// The owner's key.
    pub fn owner(&self) -> [u8; 32] {
        self.owner
    }

    /// The spends, oldest first.
    pub fn spends(&self) -> &[Spend] {
        &self.spends
    }

    /// SHA-256 of the last entry (zeros when empty): what the next entry
    /// chains to, and what an owner can note down to detect a rollback.
    pub fn head(&self) -> [u8; 32] {
        self.entries.last().map_or([0; 32], SignedEntry::hash)
    }

    /// Appends a spend signed with `owner` (the ledger's key); its
    /// `version`, `sequence` and `previous` are set here.
    pub fn append(&mut self, mut spend: Spend, owner: &IdentityKey) -> Result<(), LedgerError> {
        if owner.public() != self.owner {
            return Err(LedgerError::ForeignOwner { expected: hex::encode(self.owner), found: hex::encode(owner.public()) });
        }
        spend.version = LEDGER_VERSION;
        spend.sequence = self.spends.len() as u64;
        spend.previous = self.head();
        let bytes = cbor::to_vec(&spend);
        let signature = owner.sign(&signed_message(&bytes));
        self.entries.push(SignedEntry { spend: bytes, signature });
        self.spends.push(spend);
        Ok(())
    }
}

fn signed_message(spend: &[u8]) -> Vec<u8> {
    [ENTRY_SIGNATURE_TAG, spend].concat()
}

/// The ε that `mechanisms`, composed, spend of a group at the group's
/// lifetime `delta` (0 for none; +∞ where nothing finite can be certified).
///
/// Each job's step overflows (probability ≤ pⱼ, [`crate::accountant::job`])
/// add (1 + e^ε)·Σpⱼ to the composed δ, so the group is (ε, δ)-DP when
/// f(ε) ≤ ε for f(ε) = the mechanisms' composed ε at δ − (1 + e^ε)·Σpⱼ.
/// f increases with ε; iterating it from 0 climbs to its smallest fixed
/// point, and the value returned is one where f(ε) ≤ ε was checked.
/// Composition is the PLD accountant's (heterogeneous segments, RDP where
/// the PLD cannot certify): never a sum of the jobs' ε.
pub fn group_epsilon(mechanisms: &[&Mechanism], delta: f64) -> Result<f64, LedgerError> {
    if mechanisms.is_empty() {
        return Ok(0.0);
    }
    let overflow: f64 = mechanisms.iter().map(|m| m.overflow_probability()).sum();
    let segments: Vec<Segment> = mechanisms.iter().map(|m| m.segment()).collect();
    let composed = |epsilon: f64| -> Result<f64, LedgerError> {
        let left = delta - (1.0 + epsilon.exp()) * overflow;
        if !(left > 0.0) {
            return Ok(f64::INFINITY);
        }
        match accountant::epsilon(AccountantKind::Pld, &segments, left) {
            Ok(eps) => Ok(eps),
            Err(AccountantError::Unbounded { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e.into()),
        }
    };
    let mut epsilon = composed(0.0)?;
    for _ in 0..64 {
        if !epsilon.is_finite() {
            break;
        }
        // A hair above the iterate: where the climb has converged, f is below it.
        let candidate = epsilon * (1.0 + 1e-9) + 1e-12;
        let next = composed(candidate)?;
        if next <= candidate {
            return Ok(candidate);
        }
        epsilon = next;
    }
    Ok(f64::INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mechanism(q: f64, sigma: f64, steps: u64) -> Mechanism {
        Mechanism {
            accountant: "pld".into(),
            sampling_rate: q,
            noise_multiplier: sigma,
            max_steps: steps,
            clip_norm: 1.0,
            privacy_unit: "record".into(),
            epsilon: 4.0,
            delta: 1e-5,
        }
    }

    fn spend(dataset: u8, m: Mechanism) -> Spend {
        Spend {
            version: 0,
            sequence: 0,
            previous: [0; 32],
            dataset: [dataset; 32],
            group: "g".into(),
            manifest: [7; 32],
            job_id: "job".into(),
            evidence: [9; 32],
            mechanism: m,
            time: 1_700_000_000,
        }
    }

    #[test]
    fn appended_entries_verify_and_any_change_is_named() {
        let owner = IdentityKey::generate();
        let mut ledger = Ledger::new(owner.public());
        for d in 1..=3 {
            ledger.append(spend(d, mechanism(0.01, 1.0, 100)), &owner).unwrap();
        }
        let bytes = ledger.to_cbor();
        assert_eq!(Ledger::from_cbor(&bytes, &owner.public()).unwrap(), ledger);

        let file: LedgerFile = cbor::from_slice(&bytes).unwrap();
        let reencode = |entries: Vec<SignedEntry>| cbor::to_vec(&LedgerFile { entries, ..file.clone() });
        // A removed middle entry: the next one's number is off.
        let mut removed = file.entries.clone();
        removed.remove(1);
        assert!(matches!(Ledger::from_cbor(&reencode(removed), &owner.public()), Err(LedgerError::Sequence { index: 1, found: 2 })));
        // Two swapped entries.
        let mut swapped = file.entries.clone();
        swapped.swap(0, 1);
        assert!(matches!(Ledger::from_cbor(&reencode(swapped), &owner.public()), Err(LedgerError::Sequence { index: 0, found: 1 })));
        // An altered spend.
        let mut altered = file.entries.clone();
        let at = altered[2].spend.len() - 3;
        altered[2].spend[at] ^= 1;
        assert!(matches!(Ledger::from_cbor(&reencode(altered), &owner.public()), Err(LedgerError::BadSignature { index: 2 })));
        // Re-signed entries that skip one: numbered right, chained wrong.
        let mut forged = Ledger::new(owner.public());
        forged.append(spend(1, mechanism(0.01, 1.0, 100)), &owner).unwrap();
        forged.append(spend(3, mechanism(0.01, 1.0, 100)), &owner).unwrap();
        let mut entries: Vec<SignedEntry> = cbor::from_slice::<LedgerFile>(&forged.to_cbor()).unwrap().entries;
        entries[1] = {
            let mut s: Spend = cbor::from_slice(&entries[1].spend).unwrap();
            s.previous = [1; 32];
            let bytes = cbor::to_vec(&s);
            SignedEntry { signature: owner.sign(&signed_message(&bytes)), spend: bytes }
        };
        assert!(matches!(Ledger::from_cbor(&reencode(entries), &owner.public()), Err(LedgerError::BrokenChain { index: 1 })));
        // Another owner's ledger, and another owner appending.
        let stranger = IdentityKey::generate();
        assert!(matches!(Ledger::from_cbor(&bytes, &stranger.public()), Err(LedgerError::ForeignOwner { .. })));
        assert!(matches!(ledger.append(spend(4, mechanism(0.01, 1.0, 1)), &stranger), Err(LedgerError::ForeignOwner { .. })));
        // Truncated and future files.
        assert!(matches!(Ledger::from_cbor(&bytes[..bytes.len() - 1], &owner.public()), Err(LedgerError::Malformed(_))));
        let future = cbor::to_vec(&LedgerFile { version: 2, ..file });
        assert!(matches!(Ledger::from_cbor(&future, &owner.public()), Err(LedgerError::UnsupportedVersion(2))));
    }

    #[test]
    fn group_epsilon_is_the_accountants_composition_not_a_sum() {
        let (a, b) = (mechanism(0.01, 1.0, 1000), mechanism(0.02, 1.5, 500));
        let both = group_epsilon(&[&a, &b], 1e-5).unwrap();
        // The guarantee it states holds: the composition at what the overflow terms leave of δ.
        let overflow = a.overflow_probability() + b.overflow_probability();
        let direct = accountant::epsilon(AccountantKind::Pld, &[a.segment(), b.segment()], 1e-5 - (1.0 + both.exp()) * overflow).unwrap();
        assert!(direct <= both && both <= direct * (1.0 + 1e-6), "{both} vs {direct}");
        let alone = |m: &Mechanism| group_epsilon(&[m], 1e-5).unwrap();
        assert!(both < alone(&a) + alone(&b), "{both} vs {} + {}", alone(&a), alone(&b));
        assert!(both > alone(&a).max(alone(&b)));
        assert_eq!(group_epsilon(&[], 1e-5).unwrap(), 0.0);
        // Overflow terms that use up δ leave nothing certifiable.
        assert_eq!(group_epsilon(&[&a], 1e-10).unwrap(), f64::INFINITY);
    }
}
