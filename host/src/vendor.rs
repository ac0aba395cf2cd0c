//! `sealtune vendor`: what a model vendor runs to define a job.

use crate::failure::{Failure, Outcome};
use crate::files::{self, parse_hex, Access};
use clap::{Args, Subcommand};
use sealtune_attestation::manifest::{
    BaseModel, DatasetRef, JobManifest, LoraTerms, PrivacyTerms, TrainingTerms, MANIFEST_VERSION,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Write a job manifest (CBOR); prints its hash, the enclave's HOST_DATA.
    Job(JobArgs),
}

#[derive(Args)]
pub(crate) struct JobArgs {
    /// The base model file; the manifest names it by SHA-256.
    #[arg(long)]
    model: PathBuf,
    /// A name for the model (for example its Hugging Face repository).
    #[arg(long)]
    model_name: Option<String>,
    /// A dataset as COMMITMENT:OWNER_KEY (both hex); repeat for several.
    #[arg(long = "dataset", required = true)]
    datasets: Vec<String>,
    /// Ed25519 key (hex) of a vendor allowed to receive the outputs; repeat for several.
    #[arg(long = "recipient", required = true)]
    recipients: Vec<String>,
    /// Target ε.
    #[arg(long)]
    epsilon: f64,
    /// Target δ.
    #[arg(long)]
    delta: f64,
    /// Per-unit clipping norm C.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Poisson sampling rate q.
    #[arg(long)]
    sampling_rate: f64,
    /// Declared expected batch size B̄ = q·N (a public constant of the job).
    #[arg(long)]
    expected_batch: f64,
    /// Maximum number of DP-SGD steps.
    #[arg(long)]
    max_steps: u64,
    /// Privacy accountant: pld or rdp.
    #[arg(long, default_value = "pld")]
    accountant: String,
    /// Privacy unit: record or user.
    #[arg(long, default_value = "record")]
    privacy_unit: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    lora_rank: u32,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// LoRA target modules, comma-separated (q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,v", value_delimiter = ',')]
    lora_targets: Vec<String>,
    /// Optimiser: adamw or sgd.
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    /// Maximum sequence length in tokens.
    #[arg(long, default_value_t = 128)]
    max_seq_len: u32,
    /// A name for the job.
    #[arg(long, default_value = "job")]
    job_id: String,
    /// Where to write the manifest.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Job(args) => job(args),
    }
}

fn job(args: JobArgs) -> Outcome {
    let model_sha256: [u8; 32] = Sha256::digest(files::read(&args.model)?).into();
    let datasets = args
        .datasets
        .iter()
        .map(|d| {
            let (commitment, owner) = d
                .split_once(':')
                .ok_or_else(|| Failure::input(format!("--dataset {d}: expected COMMITMENT:OWNER_KEY")))?;
            Ok(DatasetRef {
                commitment: parse_hex("--dataset commitment", commitment)?,
                owner: parse_hex("--dataset owner key", owner)?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let recipients = args
        .recipients
        .iter()
        .map(|r| parse_hex::<32>("--recipient", r).map(Into::into))
        .collect::<Result<Vec<_>, Failure>>()?;
    let model_name = args.model_name.unwrap_or_else(|| {
        args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let manifest = JobManifest {
        version: MANIFEST_VERSION,
        job_id: args.job_id,
        base_model: BaseModel { name: model_name, sha256: model_sha256 },
        lora: LoraTerms { rank: args.lora_rank, alpha: args.lora_alpha, targets: args.lora_targets },
        training: TrainingTerms {
            optimizer: args.optimizer,
            learning_rate: args.learning_rate,
            max_seq_len: args.max_seq_len,
        },
        privacy: PrivacyTerms {
            epsilon: args.epsilon,
            delta: args.delta,
            clip_norm: args.clip,
            sampling_rate: args.sampling_rate,
            expected_batch_size: args.expected_batch,
            max_steps: args.max_steps,
            accountant: args.accountant,
            privacy_unit: args.privacy_unit,
        },
        datasets,
        recipients,
    };
    manifest.validate().map_err(Failure::input)?;
    files::write_atomic(&args.out, &manifest.to_cbor(), Access::Public)?;
    println!("{}", hex::encode(manifest.hash()));
    Ok(())
}
