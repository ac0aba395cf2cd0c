//! `sealtune vendor`: what a model vendor runs to define a job and collect
//! its outputs.

use crate::failure::{Failure, Outcome};
use crate::files::{self, parse_hex, Access};
use clap::{Args, Subcommand};
use sealtune_attestation::manifest::{
    BaseModel, DatasetRef, JobManifest, LoraTerms, PrivacyTerms, TrainingTerms, MANIFEST_VERSION,
};
use crate::owner::read_identity;
use sealtune_attestation::manifest::SignedManifest;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::Phase;
use sealtune_attestation::receipt::RECEIPT_FILE;
use sealtune_host::client::{connect, ClientError};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an identity signing key (Ed25519, PKCS#8 PEM, mode 0600); prints the public key.
    Keygen(crate::owner::KeygenArgs),
    /// Upload the base model file to the host's store; prints its SHA-256.
    Upload {
        /// The model file (GGUF).
        model: PathBuf,
        /// The host's store address.
        #[arg(long)]
        host: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a job manifest signed with your key (CBOR); prints its hash, the enclave's HOST_DATA.
    Job(JobArgs),
    /// Wait for the job to finish, then fetch its adapter files and signed receipt
    /// (check them with `sealtune verify`).
    Fetch(FetchArgs),
}

#[derive(Args)]
pub(crate) struct FetchArgs {
    /// The host's relay address for the job.
    #[arg(long)]
    host: String,
    /// The signed job file.
    #[arg(long)]
    manifest: PathBuf,
    /// Your policy (TOML): which enclaves you accept.
    #[arg(long)]
    policy: PathBuf,
    /// Your identity key: a recipient the job names.
    #[arg(long)]
    identity: PathBuf,
    /// Directory to write the outputs and `receipt.cbor` to (created; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Give up if the job has not finished after this many seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
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
    /// Your identity key: it signs the job, and you receive the outputs.
    #[arg(long)]
    identity: PathBuf,
    /// Ed25519 key (hex) of another vendor allowed to receive the outputs; repeat for several.
    #[arg(long = "recipient")]
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
    /// Where to write the signed job file.
    #[arg(long)]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Keygen(args) => crate::owner::keygen(&args),
        Command::Upload { model, host, json } => {
            let digest = crate::upload(&host, &model)?;
            crate::print_result(json, serde_json::json!({ "sha256": hex::encode(digest) }), hex::encode(digest))
        }
        Command::Job(args) => job(args),
        Command::Fetch(args) => fetch(args),
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
    let vendor = read_identity(&args.identity)?;
    let mut recipients = vec![vendor.public().into()];
    for r in &args.recipients {
        let key = parse_hex::<32>("--recipient", r)?.into();
        if !recipients.contains(&key) {
            recipients.push(key);
        }
    }
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
    let signed = SignedManifest::sign(&manifest, &vendor).map_err(Failure::input)?;
    files::write_atomic(&args.out, &signed.to_cbor(), Access::Public)?;
    let hash = hex::encode(manifest.hash());
    crate::print_result(args.json, serde_json::json!({ "manifest_hash": hash, "vendor": hex::encode(vendor.public()) }), hash.clone())
}

/// How often the job's status is asked for while waiting.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn fetch(args: FetchArgs) -> Outcome {
    let job = files::read_job(&args.manifest)?;
    let policy = Policy::from_toml(&files::read_text(&args.policy)?)
        .map_err(|e| Failure::input(format!("{}: {e}", args.policy.display())))?;
    let identity = read_identity(&args.identity)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    let outputs = crate::runtime()?.block_on(async {
        let rejected = |e: ClientError| Failure::rejected(e.to_string());
        let mut session = connect(args.host.as_str(), &policy, &job.manifest).await.map_err(rejected)?;
        let progress = crate::progress::Steps::new(job.manifest.privacy.max_steps);
        loop {
            let status = session.status().await.map_err(rejected)?;
            progress.update(status.phase.name(), status.steps, status.epsilon_spent);
            match status.phase {
                Phase::Finished => break,
                Phase::Failed => return Err(Failure::rejected("the job failed in the enclave; there are no outputs")),
                _ if std::time::Instant::now() > deadline => {
                    return Err(Failure::rejected(format!("the job did not finish within {} s", args.timeout)))
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
        progress.finish();
        let outputs = session.fetch_outputs(&identity).await.map_err(rejected)?;
        let _ = session.close().await;
        Ok::<_, Failure>(outputs)
    })?;
    std::fs::create_dir_all(&args.out).map_err(|e| Failure::input(format!("cannot create {}: {e}", args.out.display())))?;
    let mut names = Vec::new();
    for file in &outputs.files {
        let plain = std::path::Path::new(&file.name);
        if plain.components().count() != 1 || plain.file_name().is_none() || file.name == RECEIPT_FILE {
            return Err(Failure::rejected(format!("the enclave sent an output named {:?}, which is not a plain file name", file.name)));
        }
        files::write_atomic(&args.out.join(plain), &file.bytes, Access::Public)?;
        names.push(file.name.clone());
    }
    files::write_atomic(&args.out.join(RECEIPT_FILE), &outputs.receipt, Access::Public)?;
    crate::print_result(
        args.json,
        serde_json::json!({ "out": args.out.display().to_string(), "files": names, "receipt": RECEIPT_FILE }),
        format!("fetched {} and {RECEIPT_FILE} into {}; check them with `sealtune verify`", names.join(", "), args.out.display()),
    )
}
