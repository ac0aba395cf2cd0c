//! The development entry point: DP-SGD on a plaintext JSON Lines file
//! (`sealtune-enclave train`). The service wraps the same steps behind sealed inputs,
//! taking every public parameter, `N_declared` included, from the signed job manifest.

use super::engine::{OptimizerConfig, Progress};
use super::fine_tune::{fine_tune, Texts};
use super::plan::JobSpec;
use super::sampling::PrivacyUnit;
use super::summary::TrainingSummary;
use super::{DpError, Result};
use crate::model::export::save_adapter;
use crate::model::load::load_checkpoint;
use crate::model::lora::LoraConfig;
use crate::model::tokenizer::record_text;
use crate::model::ModelError;
use candle_core::{DType, Device};
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

    let ckpt = load_checkpoint(&req.model, DType::F32, &Device::cuda_if_available(0)?)?;
    let trained = fine_tune(&ckpt, Texts { texts, users }, &plan, req.lora.clone(), progress)?;
    save_adapter(&trained.params, &req.base_model_name, &req.out)?;
    trained.summary.write(&req.out)?;
    Ok(trained.summary)
}
