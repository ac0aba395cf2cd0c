//! The enclave service end to end, in process: two owners' sealed corpora
//! and a tiny model in the host's store, attested grants over TLS, DP-SGD in
//! the enclave, and the vendor's offline verification of what comes out;
//! then the attacks on that flow, each with its own error and no release.

use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::manifest::{JobManifest, PrivacyTerms, TrainingTerms};
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::Phase;
use sealtune_attestation::receipt::{check_epsilon, recompute_epsilon, verify_receipt, ReceiptError, RECEIPT_FILE};
use sealtune_attestation::grant::GrantError;
use sealtune_attestation::sealed::{self, DataKey, SealOptions, CHUNK_SIZE};
use sealtune_enclave::key_release::KeyRelease;
use sealtune_enclave::service::blobs::BlobError;
use sealtune_enclave::service::job::{run_job, JobContext, JobError};
use sealtune_enclave::service::ServiceHandle;
use sealtune_enclave::tee::sim::{SimLaunch, SimTee};
use sealtune_host::client::{connect, ClientError, JobOutputs};
use sealtune_host::store::{serve, upload, Store};
use sealtune_tests::fixtures::{manifest, owner_policy, sim_platform, vendor, MEASUREMENT};
use sealtune_tests::tiny_model::tiny_gguf;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Every training test waits at most this long for the job.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

struct HostStore {
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl HostStore {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, store));
        HostStore { dir, addr }
    }

    async fn put(&self, bytes: &[u8]) -> [u8; 32] {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        upload(self.addr, file.path()).await.unwrap()
    }

    fn object(&self, digest: &[u8; 32]) -> std::path::PathBuf {
        self.dir.path().join(hex::encode(digest))
    }
}

struct Owner {
    key: IdentityKey,
    dek: DataKey,
    sealed: Vec<u8>,
    commitment: [u8; 32],
}

/// An owner with `n` synthetic notes, each carrying `marker`.
fn owner(hospital: &str, marker: &str, n: usize) -> Owner {
    let corpus: String = (0..n)
        .map(|i| format!("{{\"text\": \"{hospital} note {i}: patient {marker}-{i} seen for a cough; rest and fluids.\"}}\n"))
        .collect();
    let dek = DataKey::generate();
    let options = SealOptions { dataset_id: hospital.into(), content_type: "jsonl".into(), chunk_size: CHUNK_SIZE, created: 0 };
    let mut sealed = Vec::new();
    let commitment = sealed::seal(corpus.as_bytes(), &mut sealed, &dek, &options).unwrap();
    Owner { key: IdentityKey::generate(), dek, sealed, commitment }
}

/// The job of the tests: two datasets of 40 records each, N_declared = 100.
fn job_manifest(owners: &[&Owner], model: [u8; 32]) -> JobManifest {
    let mut m = manifest(&owners.iter().map(|o| (o.commitment, o.key.public())).collect::<Vec<_>>());
    m.base_model.sha256 = model;
    m.training = TrainingTerms { optimizer: "adamw".into(), learning_rate: 1e-2, max_seq_len: 32 };
    m.privacy = PrivacyTerms {
        epsilon: 8.0,
        delta: 1e-5,
        clip_norm: 1.0,
        sampling_rate: 0.1,
        expected_batch_size: 10.0,
        max_steps: 3,
        accountant: "pld".into(),
        privacy_unit: "record".into(),
    };
    m
}

fn policy_for(model: [u8; 32]) -> Policy {
    let mut policy = owner_policy();
    policy.job.as_mut().unwrap().base_models = vec![hex::encode(model)];
    policy
}

struct Enclave {
    addr: SocketAddr,
    job: JoinHandle<Result<(), JobError>>,
}

/// Launches the enclave service and its job on the simulated platform.
async fn launch(manifest: &JobManifest, store: SocketAddr) -> Enclave {
    let tee = SimTee::launch(sim_platform(), SimLaunch::new(MEASUREMENT, manifest.hash()));
    let service = ServiceHandle::new(KeyRelease::new(manifest.clone(), tee)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service.clone().serve(listener));
    let context = JobContext { store, grant_deadline: Duration::from_secs(60), measurement: MEASUREMENT, simulated: true };
    let job = tokio::spawn(run_job(service, context));
    Enclave { addr, job }
}

async fn grant(enclave: SocketAddr, manifest: &JobManifest, policy: &Policy, owner: &Owner) {
    let mut session = connect(enclave, policy, manifest).await.unwrap();
    session.grant(manifest, policy, &owner.commitment, owner.dek.expose(), &owner.key).await.unwrap();
    session.close().await.unwrap();
}

async fn finish(enclave: Enclave) -> Result<(), JobError> {
    tokio::time::timeout(JOB_TIMEOUT, enclave.job).await.expect("the job finishes in time").unwrap()
}

/// Writes the outputs as `sealtune vendor fetch` does.
fn write_outputs(outputs: &JobOutputs, dir: &Path) {
    for file in &outputs.files {
        std::fs::write(dir.join(&file.name), &file.bytes).unwrap();
    }
    std::fs::write(dir.join(RECEIPT_FILE), &outputs.receipt).unwrap();
}

/// Two owners with `records` notes each, their sealed corpora and a tiny model in
/// the host's store, and the enclave launched for their job.
struct TwoOwnerJob {
    store: HostStore,
    model: [u8; 32],
    a: Owner,
    b: Owner,
    manifest: JobManifest,
    policy: Policy,
    enclave: Enclave,
}

async fn two_owner_job(records: usize) -> TwoOwnerJob {
    let store = HostStore::start().await;
    let model = store.put(&tiny_gguf(7)).await;
    let (a, b) = (owner("St Mary", "MARKER-A", records), owner("Royal Free", "MARKER-B", records));
    assert_eq!(store.put(&a.sealed).await, a.commitment);
    assert_eq!(store.put(&b.sealed).await, b.commitment);
    let manifest = job_manifest(&[&a, &b], model);
    let policy = policy_for(model);
    let enclave = launch(&manifest, store.addr).await;
    TwoOwnerJob { store, model, a, b, manifest, policy, enclave }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_grant_the_enclave_trains_and_the_vendor_verifies_offline() {
    let TwoOwnerJob { store: _store, model, a, b, manifest, policy, enclave } = two_owner_job(40).await;
    // Grants arrive after the job has calibrated σ and waits for them: each
    // accepted grant must wake it (a lost wake-up once hung the job here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    grant(enclave.addr, &manifest, &policy, &a).await;
    grant(enclave.addr, &manifest, &policy, &b).await;
    let addr = enclave.addr;
    finish(enclave).await.unwrap();

    let mut session = connect(addr, &policy, &manifest).await.unwrap();
    let status = session.status().await.unwrap();
    assert_eq!((status.phase, status.steps), (Phase::Finished, 3));
    // Only a recipient the manifest names gets the outputs.
    let stranger = IdentityKey::generate();
    let err = session.fetch_outputs(&stranger).await.unwrap_err();
    assert!(matches!(&err, ClientError::Remote(m) if m.contains("not a recipient")), "{err}");
    let mut session = connect(addr, &policy, &manifest).await.unwrap();
    let outputs = session.fetch_outputs(vendor()).await.unwrap();
    let names: Vec<&str> = outputs.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["adapter_config.json", "adapter_model.safetensors", "training-summary.json"]);

    let dir = tempfile::tempdir().unwrap();
    write_outputs(&outputs, dir.path());
    let now = time::OffsetDateTime::now_utc();
    let verified = verify_receipt(&outputs.receipt, dir.path(), &policy, now).unwrap();
    let r = &verified.receipt;
    assert_eq!((r.manifest_hash, r.base_model), (manifest.hash(), model));
    assert_eq!(r.datasets, manifest.datasets);
    assert!(r.simulated && verified.claims.simulated);
    assert_eq!((r.privacy.steps, r.privacy.clip_norm, r.privacy.delta), (3, 1.0, 1e-5));
    // The receipt's ε is what an independent recomputation from its own terms gives.
    let p = &r.privacy;
    assert_eq!(p.accountant, "pld");
    let recomputed = recompute_epsilon(r).unwrap();
    assert!(recomputed > 0.0 && recomputed <= p.epsilon && p.epsilon <= 8.0, "{recomputed} vs {}", p.epsilon);
    check_epsilon(r, recomputed, &policy).unwrap();

    // The adapter's B factors start at zero; the noised updates moved every one.
    let tensors = candle_core::safetensors::load_buffer(&outputs.files[1].bytes, &candle_core::Device::Cpu).unwrap();
    let b_factors: Vec<_> = tensors.iter().filter(|(n, _)| n.ends_with("lora_B.weight")).collect();
    assert_eq!(b_factors.len(), 4, "q and v in two layers");
    for (name, t) in b_factors {
        let norm = t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "{name} did not move");
    }

    // Attacks on the outputs, each caught by its own check.
    let mut flipped = outputs.receipt.clone();
    let at = flipped.len() / 3;
    flipped[at] ^= 0x01;
    assert!(verify_receipt(&flipped, dir.path(), &policy, now).is_err(), "a flipped receipt bit was accepted");
    std::fs::write(dir.path().join("adapter_model.safetensors"), b"other weights").unwrap();
    let err = verify_receipt(&outputs.receipt, dir.path(), &policy, now).unwrap_err();
    assert!(matches!(&err, ReceiptError::OutputDigest(n) if n == "adapter_model.safetensors"), "{err}");
    let strict = {
        let mut strict = policy.clone();
        strict.job.as_mut().unwrap().max_epsilon = p.epsilon / 2.0;
        strict
    };
    let err = check_epsilon(r, recomputed, &strict).unwrap_err();
    assert!(matches!(err, ReceiptError::EpsilonOverPolicy { .. }), "{err}");
    // A production policy refuses the simulated enclave's receipt.
    let production = Policy { allow_simulated: false, ..policy.clone() };
    write_outputs(&outputs, dir.path());
    assert!(matches!(verify_receipt(&outputs.receipt, dir.path(), &production, now), Err(ReceiptError::Verify(_))));
    // The job is over: no more grants.
    let mut late = connect(addr, &policy, &manifest).await.unwrap();
    let err = late.grant(&manifest, &policy, &a.commitment, a.dek.expose(), &a.key).await.unwrap_err();
    assert!(matches!(&err, ClientError::GrantRefused(r) if r.contains("no longer accepts grants")), "{err}");
}

#[tokio::test]
async fn a_tampered_blob_in_the_store_fails_the_job_and_releases_nothing() {
    let TwoOwnerJob { store, a, b, manifest, policy, enclave, .. } = two_owner_job(4).await;
    // The operator flips one ciphertext byte of a's corpus.
    let path = store.object(&a.commitment);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    grant(enclave.addr, &manifest, &policy, &a).await;
    grant(enclave.addr, &manifest, &policy, &b).await;
    let addr = enclave.addr;
    let err = finish(enclave).await.unwrap_err();
    assert!(
        matches!(&err, JobError::FetchCorpus { dataset, source: BlobError::DigestMismatch(_) } if *dataset == hex::encode(a.commitment)),
        "{err}"
    );
    assert_failed_without_outputs(addr, &manifest, &policy).await;
}

#[tokio::test]
async fn a_dataset_swapped_for_another_owners_is_refused() {
    let TwoOwnerJob { store, a, b, manifest, policy, enclave, .. } = two_owner_job(4).await;

    // Owner b cannot grant its own key for a's dataset: the manifest lists a's key for it.
    let mut session = connect(enclave.addr, &policy, &manifest).await.unwrap();
    let err = session.grant(&manifest, &policy, &a.commitment, b.dek.expose(), &b.key).await.unwrap_err();
    assert!(matches!(&err, ClientError::Grant(GrantError::OwnerMismatch { .. })), "{err}");

    // The operator serves b's corpus under a's commitment.
    std::fs::copy(store.object(&b.commitment), store.object(&a.commitment)).unwrap();
    grant(enclave.addr, &manifest, &policy, &a).await;
    grant(enclave.addr, &manifest, &policy, &b).await;
    let addr = enclave.addr;
    let err = finish(enclave).await.unwrap_err();
    assert!(matches!(&err, JobError::FetchCorpus { source: BlobError::DigestMismatch(_), .. }), "{err}");
    assert_failed_without_outputs(addr, &manifest, &policy).await;
}

async fn assert_failed_without_outputs(addr: SocketAddr, manifest: &JobManifest, policy: &Policy) {
    let mut session = connect(addr, policy, manifest).await.unwrap();
    assert_eq!(session.status().await.unwrap().phase, Phase::Failed);
    let err = session.fetch_outputs(vendor()).await.unwrap_err();
    assert!(matches!(&err, ClientError::Remote(m) if m.contains("not ready") && m.contains("failed")), "{err}");
}
