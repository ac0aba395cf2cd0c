//! The training pipeline of a service job: wait for every grant, pull the
//! base model and the sealed corpora from the host's store by SHA-256,
//! decrypt in memory, run DP-SGD, then publish the adapter, the public
//! training summary and the signed receipt. Nothing else leaves: errors name
//! a step and a dataset commitment, never content.

use super::blobs::{fetch_blob, BlobError};
use super::{ServiceError, ServiceHandle};
use crate::corpus::{Corpus, CorpusError};
use crate::dpsgd::fine_tune::{fine_tune, Texts, Trained};
use crate::dpsgd::plan::{JobSpec, Plan};
use crate::dpsgd::summary::SUMMARY_FILE;
use crate::dpsgd::DpError;
use crate::key_release::ReleasedKey;
use crate::model::export::adapter_files;
use crate::model::load::read_gguf;
use crate::model::lora::LoraConfig;
use crate::model::tokenizer::record_text;
use crate::model::ModelError;
use crate::tee::Tee;
use candle_core::{DType, Device};
use sealtune_attestation::accountant::ACCOUNTANT_VERSION;
use sealtune_attestation::manifest::JobManifest;
use sealtune_attestation::protocol::{OutputBlob, Phase};
use sealtune_attestation::receipt::{OutputFile, PrivacySpent, Receipt, RECEIPT_VERSION};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest base model the enclave loads.
pub const MAX_MODEL_BYTES: u64 = 32 << 30;
/// Largest sealed corpus the enclave loads.
pub const MAX_CORPUS_BYTES: u64 = 16 << 30;

/// What the launch tells the job about where it runs and what it needs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The host's blob store.
    pub store: SocketAddr,
    /// How long to wait for every grant.
    pub grant_deadline: Duration,
    /// The launch measurement the receipt states.
    pub measurement: [u8; 48],
    /// Whether the platform is the simulated one (the receipt says so; verifiers check it).
    pub simulated: bool,
}

/// Why a job failed. Each step has its own variant; none carries data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The manifest's terms cannot be turned into a DP-SGD plan.
    #[error("the job's terms are unusable: {0}")]
    Terms(DpError),
    /// The manifest's LoRA terms are unusable.
    #[error("the job's LoRA terms are unusable: {0}")]
    Lora(ModelError),
    /// Waiting for grants, or a later service step, failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The base model could not be fetched.
    #[error("cannot fetch the base model: {0}")]
    FetchModel(BlobError),
    /// A sealed corpus could not be fetched.
    #[error("cannot fetch dataset {dataset}: {source}")]
    FetchCorpus {
        /// The dataset's commitment, hex.
        dataset: String,
        /// Why.
        source: BlobError,
    },
    /// The base model could not be loaded.
    #[error("cannot load the base model: {0}")]
    Model(ModelError),
    /// A sealed corpus could not be opened.
    #[error("cannot open dataset {dataset}: {source}")]
    Corpus {
        /// The dataset's commitment, hex.
        dataset: String,
        /// Why.
        source: CorpusError,
    },
    /// Training failed.
    #[error("training failed: {0}")]
    Training(DpError),
    /// The training task ended abnormally.
    #[error("the training task ended abnormally")]
    Aborted,
}

/// Runs the job of `service` to its end. On failure the job's phase becomes
/// [`Phase::Failed`] and the released keys and plaintext are dropped.
pub async fn run_job<T: Tee + Send + 'static>(service: ServiceHandle<T>, context: JobContext) -> Result<(), JobError> {
    let result = run(&service, &context).await;
    if result.is_err() {
        service.fail();
    }
    result
}

async fn run<T: Tee + Send + 'static>(service: &ServiceHandle<T>, context: &JobContext) -> Result<(), JobError> {
    let manifest = service.manifest();
    // σ is calibrated from the public terms before any grant or data arrives.
    let plan = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        move || JobSpec::from_manifest(&manifest).and_then(|spec| spec.plan())
    })
    .await
    .map_err(|_| JobError::Aborted)?
    .map_err(JobError::Terms)?;
    let targets: Vec<&str> = manifest.lora.targets.iter().map(String::as_str).collect();
    let lora = LoraConfig::new(manifest.lora.rank as usize, manifest.lora.alpha, &targets).map_err(JobError::Lora)?;

    let keys = service.wait_for_grants(context.grant_deadline).await?;
    tracing::info!("every dataset granted; loading");
    let model = fetch_blob(context.store, &manifest.base_model.sha256, MAX_MODEL_BYTES).await.map_err(JobError::FetchModel)?;
    let mut sealed = Vec::with_capacity(manifest.datasets.len());
    for dataset in &manifest.datasets {
        let blob = fetch_blob(context.store, &dataset.commitment, MAX_CORPUS_BYTES)
            .await
            .map_err(|source| JobError::FetchCorpus { dataset: hex::encode(dataset.commitment), source })?;
        sealed.push(blob);
    }

    let trainer = service.clone();
    let trained = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        let plan = plan.clone();
        move || train(&trainer, &manifest, &plan, lora, model, sealed, keys)
    })
    .await
    .map_err(|_| JobError::Aborted)??;

    let mut files = adapter_files(&trained.params, &manifest.base_model.name)
        .map_err(JobError::Model)?
        .into_iter()
        .map(|(name, bytes)| OutputBlob { name: name.to_string(), bytes })
        .collect::<Vec<_>>();
    files.push(OutputBlob { name: SUMMARY_FILE.to_string(), bytes: trained.summary.to_json().map_err(JobError::Training)? });
    let receipt = receipt(&manifest, &plan, &trained, &files, context);
    let signed = service.issue_receipt(&receipt)?;
    service.publish_outputs(files, signed);
    tracing::info!(steps = trained.summary.steps, "job finished; outputs published");
    Ok(())
}

/// Loads the model, opens every corpus in memory and trains. Runs on a
/// blocking thread; reports only the step count and ε.
fn train<T: Tee + Send + 'static>(
    service: &ServiceHandle<T>,
    manifest: &JobManifest,
    plan: &Plan,
    lora: LoraConfig,
    model: Vec<u8>,
    sealed: Vec<Vec<u8>>,
    keys: Vec<ReleasedKey>,
) -> Result<Trained, JobError> {
    let device = Device::cuda_if_available(0).map_err(|e| JobError::Model(ModelError::Candle(e)))?;
    let ckpt = read_gguf(&mut std::io::Cursor::new(model), DType::F32, &device).map_err(JobError::Model)?;
    let mut data = Texts { texts: Vec::new(), users: Some(Vec::new()) };
    for (dataset, blob) in manifest.datasets.iter().zip(&sealed) {
        let name = hex::encode(dataset.commitment);
        let key = keys.iter().find(|k| k.dataset == dataset.commitment).ok_or_else(|| JobError::Corpus {
            dataset: name.clone(),
            source: CorpusError::CommitmentMismatch(name.clone()),
        })?;
        let corpus = Corpus::open(blob, key).map_err(|source| JobError::Corpus { dataset: name, source })?;
        for record in corpus.records() {
            data.texts.push(record_text(record));
            // Users are scoped by owner: two owners' "patient-1" are two people.
            match (&mut data.users, &record.user_id) {
                (Some(users), Some(id)) => users.push(format!("{}:{id}", hex::encode(dataset.owner))),
                (users, _) => *users = None,
            }
        }
    }
    drop(keys);
    service.report_progress(Phase::Training, 0, 0.0);
    fine_tune(&ckpt, data, plan, lora, &mut |p| {
        // The step count and ε are public: the status request returns them too.
        tracing::info!(step = p.step, max_steps = p.max_steps, epsilon = p.epsilon, "DP-SGD step done");
        service.report_progress(Phase::Training, p.step, p.epsilon)
    })
    .map_err(JobError::Training)
}

fn receipt(manifest: &JobManifest, plan: &Plan, trained: &Trained, files: &[OutputBlob], context: &JobContext) -> Receipt {
    let s = &trained.summary;
    Receipt {
        version: RECEIPT_VERSION,
        manifest_hash: manifest.hash(),
        base_model: manifest.base_model.sha256,
        datasets: manifest.datasets.clone(),
        privacy: PrivacySpent {
            sampling_rate: s.sampling_rate,
            noise_multiplier: s.noise_multiplier,
            clip_norm: s.clip,
            expected_batch_size: s.expected_batch,
            steps: s.steps,
            delta: s.delta,
            privacy_unit: manifest.privacy.privacy_unit.clone(),
            neighbouring: s.neighbouring_relation.clone(),
            accountant: plan.spec.accountant.name().to_string(),
            accountant_version: ACCOUNTANT_VERSION.to_string(),
            // ε at the accounting δ, which is below δ: an upper bound on ε at δ.
            epsilon: s.epsilon[plan.spec.accountant.name()],
        },
        outputs: files.iter().map(|f| OutputFile { name: f.name.clone(), sha256: Sha256::digest(&f.bytes).into() }).collect(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        measurement: context.measurement,
        simulated: context.simulated,
    }
}
