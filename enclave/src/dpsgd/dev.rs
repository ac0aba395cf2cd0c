//! The development entry point: DP-SGD on a plaintext JSON Lines file
//! (`sealtune-enclave train`). The service wraps the same steps behind sealed inputs,
//! taking every public parameter, `N_declared` included, from the signed job manifest.

use super::engine::{DpSgd, OptimizerConfig, Progress};
use super::plan::JobSpec;
use super::sampling::{Dataset, PrivacyUnit};
use super::summary::TrainingSummary;
use super::{DpError, Result};
use crate::model::decoder::Llama;
use crate::model::export::save_adapter;
use crate::model::load::load_checkpoint;
use crate::model::lora::{LoraConfig, LoraParams};
use crate::model::tokenizer::{encode, record_text};
use crate::model::ModelError;
use candle_core::{DType, Device};
use rand_chacha::rand_core::{OsRng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::path::PathBuf;

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Duration {
    /// Exactly this many steps (unless the budget runs out first).
    Steps(u64),
    /// This many expected passes over the data: `⌈epochs / q⌉` steps.
    Epochs(f64),
}

/// A development training job.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Base model: GGUF file or Hugging Face directory (it must carry a tokenizer).
    pub model: PathBuf,
    /// JSON Lines records with `text` or `messages`, and optionally `user_id`.
    pub data: PathBuf,
    /// Output directory for the PEFT adapter and `training-summary.json`.
    pub out: PathBuf,
    /// The base model's name in `adapter_config.json`.
    pub base_model_name: String,
    /// Target ε.
    pub epsilon: f64,
    /// Target δ.
    pub delta: f64,
    /// Clipping bound `C`.
    pub clip: f64,
    /// `B̄` in units.
    pub expected_batch: f64,
    /// How long to train.
    pub duration: Duration,
    /// `N_declared` in units; `None` counts the file's units (development only: the
    /// service takes it from the manifest, a public constant).
    pub declared_units: Option<u64>,
    /// For user-level data: the most records of one user per step.
    pub max_records_per_user: usize,
    /// LoRA rank, alpha and targets.
    pub lora: LoraConfig,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Rows per micro-batch.
    pub micro_batch: usize,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The accountant that calibrates σ and enforces the budget.
    pub accountant: sealtune_attestation::accountant::AccountantKind,
}

/// Parses JSON Lines records (the corpus record format of
/// `attestation::sealed::record`); returns their texts and, if every record
/// has a `user_id`, the user ids (mixing records with and without one is
/// refused). Errors name the line, never its content.
pub fn parse_jsonl(text: &str) -> Result<(Vec<String>, Option<Vec<String>>)> {
    let records = sealtune_attestation::sealed::record::parse_jsonl(text).map_err(|e| DpError::bad("data", e.to_string()))?;
    let texts = records.iter().map(record_text).collect();
    let users: Vec<Option<String>> = records.iter().map(|r| r.user_id.clone()).collect();
    match users.iter().filter(|u| u.is_some()).count() {
        0 => Ok((texts, None)),
        n if n == users.len() => Ok((texts, Some(users.into_iter().flatten().collect()))),
        _ => Err(DpError::bad("user_id", "either every record carries a `user_id` or none does")),
    }
}

/// Runs a development job end to end: plan (σ calibrated from the public parameters),
/// load, tokenise, train, write the adapter and the summary. `progress` sees only the
/// step count and ε.
pub fn train_plaintext(req: &TrainRequest, progress: &mut dyn FnMut(Progress)) -> Result<TrainingSummary> {
    let text = std::fs::read_to_string(&req.data).map_err(|e| ModelError::io(&req.data, e))?;
    let (texts, users) = parse_jsonl(&text)?;
    let unit = match users {
        None => PrivacyUnit::Record,
        Some(_) => PrivacyUnit::User { max_records: req.max_records_per_user },
    };
    let file_units = match &users {
        None => texts.len(),
        Some(u) => u.iter().collect::<std::collections::BTreeSet<_>>().len(),
    } as u64;
    let declared_units = req.declared_units.unwrap_or(file_units);
    if file_units > declared_units {
        return Err(DpError::bad("declared_units", format!("the data has {file_units} units, more than the {declared_units} declared")));
    }
    let q = req.expected_batch / declared_units.max(1) as f64;
    let max_steps = match req.duration {
        Duration::Steps(s) => s,
        Duration::Epochs(e) if e.is_finite() && e > 0.0 => (e / q).ceil() as u64,
        Duration::Epochs(_) => return Err(DpError::bad("epochs", "must be a positive number")),
    };
    let plan = JobSpec {
        epsilon: req.epsilon,
        delta: req.delta,
        clip: req.clip,
        expected_batch: req.expected_batch,
        declared_units,
        max_steps,
        privacy_unit: unit,
        seq_len: req.seq_len,
        micro_batch: req.micro_batch,
        optimizer: req.optimizer,
        accountant: req.accountant,
    }
    .plan()?;

    let device = Device::cuda_if_available(0)?;
    let ckpt = load_checkpoint(&req.model, DType::F32, &device)?;
    let tokenizer = ckpt.tokenizer.as_ref().ok_or_else(|| DpError::bad("model", "the model carries no tokenizer"))?;
    let records = texts.iter().map(|t| encode(tokenizer, t)).collect::<crate::model::Result<Vec<_>>>()?;
    drop(texts);
    let data = match users {
        None => Dataset::records(records),
        Some(u) => Dataset::by_user(records, &u, req.max_records_per_user)?,
    };
    let model = Llama::load(&ckpt.weights, &ckpt.config)?;
    let mut rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| DpError::Entropy(e.to_string()))?;
    let params = LoraParams::init(&ckpt.config, req.lora.clone(), &mut rng, DType::F32, &device)?;
    let mut trainer = DpSgd::new(&model, params, plan.config)?;
    let outcome = trainer.train(&data, req.epsilon, &mut plan.ledger(), progress)?;
    let summary = TrainingSummary::new(&plan, &outcome, &req.lora)?;
    save_adapter(trainer.params(), &req.base_model_name, &req.out)?;
    summary.write(&req.out)?;
    Ok(summary)
}
