//! Poisson sampling of privacy units, and their packing into a fixed number of
//! fixed-size micro-batches.
//!
//! Poisson sampling (each unit independently with probability `q`) is what the
//! subsampled-Gaussian accountants assume; fixed-size or shuffled batches accounted as
//! Poisson would overstate the privacy. The batch is therefore of random size, possibly
//! empty. To keep that size from the host, a step always processes the same number of
//! micro-batches ([`Layout`]) of the same number of rows, padding with empty rows; only
//! when the sampled batch overflows that capacity (an event whose probability
//! [`Layout::overflow_probability`] bounds) are more micro-batches processed.

use super::{DpError, Result};
use rand::Rng;
use rand_chacha::rand_core::{OsRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::collections::BTreeMap;

/// What one "neighbouring dataset" differs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrivacyUnit {
    /// One record (one line of the data file).
    Record,
    /// One user: every record carrying the same `user_id`. A sampled user contributes
    /// at most `max_records` of their records to a step, chosen uniformly afresh each step.
    User {
        /// The most records of one user a step uses.
        max_records: usize,
    },
}

impl PrivacyUnit {
    /// The neighbouring relation the privacy guarantee is stated for.
    pub fn neighbouring_relation(&self) -> &'static str {
        match self {
            PrivacyUnit::Record => "add/remove one record: datasets are neighbours if one is the other plus one record",
            PrivacyUnit::User { .. } => {
                "add/remove one user: datasets are neighbours if one is the other plus all records of one user"
            }
        }
    }

    /// The most records of one unit a step uses.
    pub fn max_records(&self) -> usize {
        match *self {
            PrivacyUnit::Record => 1,
            PrivacyUnit::User { max_records } => max_records,
        }
    }
}

/// Tokenised training records grouped into privacy units.
#[derive(Debug, Clone)]
pub struct Dataset {
    records: Vec<Vec<u32>>,
    units: Vec<Vec<usize>>,
    unit: PrivacyUnit,
}

impl Dataset {
    /// Record-level privacy: every record is its own unit.
    pub fn records(records: Vec<Vec<u32>>) -> Self {
        let units = (0..records.len()).map(|i| vec![i]).collect();
        Dataset { records, units, unit: PrivacyUnit::Record }
    }

    /// User-level privacy: records with the same `user_ids[i]` form one unit, of which a
    /// step uses at most `max_records_per_user` records.
    pub fn by_user(records: Vec<Vec<u32>>, user_ids: &[String], max_records_per_user: usize) -> Result<Self> {
        if user_ids.len() != records.len() {
            return Err(DpError::bad("user_id", format!("{} user ids for {} records", user_ids.len(), records.len())));
        }
        if max_records_per_user == 0 {
            return Err(DpError::bad("max_records_per_user", "must be positive"));
        }
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, u) in user_ids.iter().enumerate() {
            by_user.entry(u.as_str()).or_default().push(i);
        }
        Ok(Dataset {
            records,
            units: by_user.into_values().collect(),
            unit: PrivacyUnit::User { max_records: max_records_per_user },
        })
    }

    /// The number of privacy units.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The privacy unit.
    pub fn privacy_unit(&self) -> PrivacyUnit {
        self.unit
    }

    pub(crate) fn record(&self, i: usize) -> &[u32] {
        &self.records[i]
    }
}

/// Draws Poisson-sampled batches of units and, for users, their records.
#[derive(Debug)]
pub struct PoissonSampler {
    rng: ChaCha20Rng,
    /// A unit is included when a uniform `u64` is below this; `None` includes every unit (q = 1).
    threshold: Option<u64>,
}

impl PoissonSampler {
    /// A sampler for rate `q` seeded from the operating system.
    pub fn from_os(q: f64) -> Result<Self> {
        let rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| DpError::Entropy(e.to_string()))?;
        Self::with_rng(q, rng)
    }

    /// A sampler with a caller-chosen generator: tests only, never for training.
    pub(crate) fn with_rng(q: f64, rng: ChaCha20Rng) -> Result<Self> {
        if !(q > 0.0 && q <= 1.0) {
            return Err(DpError::bad("sampling_rate", format!("{q} is not in (0, 1]")));
        }
        // Comparing a uniform u64 with ⌊q·2⁶⁴⌋ includes with probability within 2⁻⁶⁴ of
        // q, with no floating-point rounding of the random value.
        let threshold = if q == 1.0 { None } else { Some((q * 2f64.powi(64)) as u64) };
        Ok(PoissonSampler { rng, threshold })
    }

    /// One Poisson sample of `data`: for each included unit, the records it contributes
    /// (all of them, or `max_records` chosen uniformly without replacement).
    pub fn sample(&mut self, data: &Dataset) -> Vec<Vec<usize>> {
        let k = data.unit.max_records();
        let mut batch = Vec::new();
        for unit in &data.units {
            let included = match self.threshold {
                None => true,
                Some(t) => self.rng.next_u64() < t,
            };
            if !included {
                continue;
            }
            let mut records = unit.clone();
            if records.len() > k {
                // Partial Fisher-Yates: the first k positions end up a uniform k-subset.
                for i in 0..k {
                    let j = self.rng.gen_range(i..records.len());
                    records.swap(i, j);
                }
                records.truncate(k);
            }
            batch.push(records);
        }
        batch
    }
}

/// The physical shape of every step: `micro_batches` forward/backward passes of
/// `micro_batch` rows each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Rows per micro-batch.
    pub micro_batch: usize,
    /// Micro-batches per step (more only when the sampled batch overflows).
    pub micro_batches: usize,
}

/// One micro-batch: the records of its rows, and which unit (numbered within the
/// micro-batch) each row belongs to. Rows beyond `records.len()` are padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MicroBatch {
    pub(crate) records: Vec<usize>,
    pub(crate) unit_of_row: Vec<usize>,
    pub(crate) units: usize,
}

impl Layout {
    /// Checks that a unit of `max_records` records fits in one micro-batch.
    pub fn new(micro_batch: usize, micro_batches: usize, unit: PrivacyUnit) -> Result<Self> {
        if micro_batch < unit.max_records() {
            return Err(DpError::bad(
                "micro_batch",
                format!("{micro_batch} rows cannot hold one unit's {} records", unit.max_records()),
            ));
        }
        if micro_batches == 0 {
            return Err(DpError::bad("micro_batches", "must be positive"));
        }
        Ok(Layout { micro_batch, micro_batches })
    }

    /// The fewest micro-batches per step such that over `max_steps` steps the sampled
    /// batch overflows the capacity with probability at most `overflow_probability`,
    /// for `n_units` units sampled at rate `q`.
    pub fn for_job(micro_batch: usize, unit: PrivacyUnit, n_units: usize, q: f64, max_steps: u64, overflow_probability: f64) -> Result<Self> {
        Layout::new(micro_batch, 1, unit)?;
        if !(overflow_probability > 0.0 && overflow_probability < 1.0) {
            return Err(DpError::bad("overflow_probability", "must be in (0, 1)"));
        }
        let per_step = overflow_probability / max_steps.max(1) as f64;
        let tail = binomial_upper_tails(n_units as u64, q);
        let cap = tail.iter().position(|&p| p <= per_step).unwrap_or(n_units);
        let per_mb = units_per_micro_batch(micro_batch, unit);
        Layout::new(micro_batch, cap.div_ceil(per_mb).max(1), unit)
    }

    /// The units every step is guaranteed to hold without overflowing.
    pub fn capacity(&self, unit: PrivacyUnit) -> usize {
        self.micro_batches * units_per_micro_batch(self.micro_batch, unit)
    }

    /// An upper bound (union bound over steps) on the probability that any of `steps`
    /// steps overflows, for `n_units` units sampled at rate `q`.
    pub fn overflow_probability(&self, unit: PrivacyUnit, n_units: usize, q: f64, steps: u64) -> f64 {
        let tail = binomial_upper_tails(n_units as u64, q);
        let per_step = tail.get(self.capacity(unit)).copied().unwrap_or(0.0);
        (per_step * steps as f64).min(1.0)
    }

    /// Packs a sampled batch into micro-batches, a unit never split across two, padded
    /// with empty micro-batches to `micro_batches`.
    pub(crate) fn pack(&self, batch: &[Vec<usize>]) -> Vec<MicroBatch> {
        let mut out = vec![MicroBatch::default()];
        for unit in batch {
            let last = out.last_mut().expect("never empty");
            let current = if last.records.len() + unit.len() > self.micro_batch {
                out.push(MicroBatch::default());
                out.last_mut().expect("just pushed")
            } else {
                last
            };
            current.unit_of_row.extend(std::iter::repeat_n(current.units, unit.len()));
            current.records.extend_from_slice(unit);
            current.units += 1;
        }
        if out.len() < self.micro_batches {
            out.resize(self.micro_batches, MicroBatch::default());
        }
        out
    }
}

/// Next-fit packing closes a micro-batch only when more than `m − k` rows are used, so
/// every closed micro-batch holds at least ⌈(m − k + 1)/k⌉ = ⌊m/k⌋ units.
fn units_per_micro_batch(micro_batch: usize, unit: PrivacyUnit) -> usize {
    micro_batch / unit.max_records()
}

/// `ln P(X = k)` for `k = 0, 1, …` and `X ~ Binomial(n, q)`, up to the `k` past the
/// mode where the probability falls below e⁻⁷⁰⁰.
pub(crate) fn binomial_log_pmf(n: u64, q: f64) -> Vec<f64> {
    if q >= 1.0 {
        let mut l = vec![f64::NEG_INFINITY; n as usize];
        l.push(0.0);
        return l;
    }
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let mode = ((n + 1) as f64 * q).floor();
    let mut log_pmf = Vec::new();
    let mut lp = n as f64 * l1q;
    for k in 0..=n {
        log_pmf.push(lp);
        if k as f64 > mode && lp < -700.0 {
            break;
        }
        lp += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + lq - l1q;
    }
    log_pmf
}

/// `P(X > c)` for `c = 0, 1, …` and `X ~ Binomial(n, q)`, summed from the top so that
/// tiny tails keep their precision.
fn binomial_upper_tails(n: u64, q: f64) -> Vec<f64> {
    let log_pmf = binomial_log_pmf(n, q);
    let mut tails = vec![0.0; log_pmf.len()];
    let mut above = 0.0;
    for c in (0..log_pmf.len()).rev() {
        tails[c] = above;
        above += log_pmf[c].exp();
    }
    tails
}
