//! `sealtune-enclave train`: the development entry point of the DP-SGD
//! engine on a plaintext corpus (the service wraps the same engine behind
//! sealed inputs).

use clap::{Args, ValueEnum};
use sealtune_attestation::accountant::AccountantKind;
use sealtune_enclave::dpsgd::dev::{train_plaintext, Duration, TrainRequest};
use sealtune_enclave::dpsgd::engine::OptimizerConfig;
use sealtune_enclave::model::lora::LoraConfig;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerKind {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Accountant {
    Pld,
    Rdp,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("duration").required(true).args(["epochs", "steps"]))]
pub(crate) struct TrainArgs {
    /// Base model: a GGUF file or a Hugging Face directory, with a tokenizer.
    #[arg(long)]
    model: PathBuf,
    /// JSON Lines records with `text` or `messages`; with `user_id` on every record the
    /// privacy unit is the user.
    #[arg(long)]
    data: PathBuf,
    /// Target ε.
    #[arg(long)]
    epsilon: f64,
    /// Target δ.
    #[arg(long)]
    delta: f64,
    /// Per-unit gradient clipping bound C.
    #[arg(long)]
    clip: f64,
    /// Expected batch size B̄ in units; q = B̄ / N_declared.
    #[arg(long)]
    expected_batch: f64,
    /// Expected passes over the data (steps = ⌈epochs / q⌉).
    #[arg(long)]
    epochs: Option<f64>,
    /// Number of steps.
    #[arg(long)]
    steps: Option<u64>,
    /// LoRA rank.
    #[arg(long)]
    lora_rank: usize,
    /// LoRA alpha (default: twice the rank).
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Adapted modules.
    #[arg(long, value_delimiter = ',', default_value = "q,v")]
    lora_targets: Vec<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// N_declared in units (default: the file's count; the service takes it from the manifest).
    #[arg(long)]
    declared_units: Option<u64>,
    /// With user ids: the most records of one user a step uses.
    #[arg(long, default_value_t = 4)]
    max_records_per_user: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Optimiser.
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// Accountant that calibrates σ and enforces the budget (both are reported).
    #[arg(long, value_enum, default_value = "pld")]
    accountant: Accountant,
    /// The base model's name in adapter_config.json (default: the --model path).
    #[arg(long)]
    base_model_name: Option<String>,
}

pub(crate) fn run(a: TrainArgs) -> Result<(), String> {
    let targets: Vec<&str> = a.lora_targets.iter().map(String::as_str).collect();
    let lora = LoraConfig::new(a.lora_rank, a.lora_alpha.unwrap_or(2.0 * a.lora_rank as f64), &targets).map_err(|e| e.to_string())?;
    let duration = a.steps.map(Duration::Steps).or(a.epochs.map(Duration::Epochs)).ok_or("give --steps or --epochs")?;
    let request = TrainRequest {
        base_model_name: a.base_model_name.unwrap_or_else(|| a.model.display().to_string()),
        model: a.model,
        data: a.data,
        out: a.out,
        epsilon: a.epsilon,
        delta: a.delta,
        clip: a.clip,
        expected_batch: a.expected_batch,
        duration,
        declared_units: a.declared_units,
        max_records_per_user: a.max_records_per_user,
        lora,
        seq_len: a.seq_len,
        micro_batch: a.micro_batch,
        optimizer: match a.optimizer {
            OptimizerKind::Adamw => OptimizerConfig::adamw(a.lr),
            OptimizerKind::Sgd => OptimizerConfig::Sgd { lr: a.lr },
        },
        accountant: match a.accountant {
            Accountant::Pld => AccountantKind::Pld,
            Accountant::Rdp => AccountantKind::Rdp,
        },
    };
    let summary = train_plaintext(&request, &mut |p| eprintln!("step {}/{}  ε = {:.4}", p.step, p.max_steps, p.epsilon))
        .map_err(|e| e.to_string())?;
    let eps: Vec<String> = summary.epsilon.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
    eprintln!(
        "done: {} steps, σ = {:.4}, ε ({}) at δ = {:e}; adapter and summary in {}",
        summary.steps,
        summary.noise_multiplier,
        eps.join(", "),
        summary.delta_accounting,
        request.out.display()
    );
    Ok(())
}
