//! The owner's budget ledger as `sealtune owner grant` and `owner budget`
//! use it, against a launched simulated enclave: spends that fit and the one
//! that does not, composition by the accountant, crashes at every point
//! between reading the ledger and sending the key, tampering, and racing
//! grants.

use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::ledger::{group_epsilon, Mechanism};
use sealtune_attestation::manifest::{JobManifest, SignedManifest};
use sealtune_attestation::policy::Policy;
use sealtune_attestation::sealed::{self, DataKey, SealOptions, CHUNK_SIZE};
use sealtune_host::client::connect;
use sealtune_tests::fixtures::{manifest, owner_policy, vendor};
use sha2::{Digest, Sha384};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn enclave_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sealtune")).with_file_name("sealtune-enclave");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)", path.display());
    path
}

struct Dataset {
    commitment: [u8; 32],
    sealed: PathBuf,
    dek: PathBuf,
}

/// An owner with `n` sealed datasets, a job over all of them, and its
/// enclave launched (it waits for grants for as long as the test runs).
struct Rig {
    dir: tempfile::TempDir,
    identity: PathBuf,
    datasets: Vec<Dataset>,
    job: PathBuf,
    manifest: JobManifest,
    relay: String,
    measurement: String,
    launcher: Child,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

impl Rig {
    fn new(n: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let owner = IdentityKey::generate();
        let identity = dir.path().join("owner.key");
        std::fs::write(&identity, owner.to_pem().as_bytes()).unwrap();
        let datasets: Vec<Dataset> = (0..n)
            .map(|i| {
                let dek = DataKey::generate();
                let options = SealOptions { dataset_id: format!("extract-{i}"), content_type: "jsonl".into(), chunk_size: CHUNK_SIZE, created: 0 };
                let mut bytes = Vec::new();
                let corpus = format!("{{\"text\": \"extract {i}: patient seen for a cough\"}}\n");
                let commitment = sealed::seal(corpus.as_bytes(), &mut bytes, &dek, &options).unwrap();
                let (sealed, dek_path) = (dir.path().join(format!("{i}.sealed")), dir.path().join(format!("{i}.dek")));
                std::fs::write(&sealed, bytes).unwrap();
                std::fs::write(&dek_path, dek.to_file().as_bytes()).unwrap();
                Dataset { commitment, sealed, dek: dek_path }
            })
            .collect();
        let mut manifest = manifest(&datasets.iter().map(|d| (d.commitment, owner.public())).collect::<Vec<_>>());
        // A small job: its σ calibrates in well under a second.
        manifest.privacy.epsilon = 2.0;
        manifest.privacy.sampling_rate = 0.1;
        manifest.privacy.expected_batch_size = 8.0;
        manifest.privacy.max_steps = 3;
        let job = dir.path().join("job.cbor");
        std::fs::write(&job, SignedManifest::sign(&manifest, vendor()).unwrap().to_cbor()).unwrap();

        let sim = dir.path().join("sim");
        let out = Command::new(env!("CARGO_BIN_EXE_sealtune")).args(["sim", "init", "--out", p(&sim)]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Nothing listens on the store address: the job never gets past its grants.
        let mut launcher = Command::new(env!("CARGO_BIN_EXE_sealtune"))
            .args(["host", "launch", "--manifest", p(&job), "--tee", "sim", "--sim-platform", p(&sim), "--store", "127.0.0.1:9"])
            .args(["--enclave-bin", p(&enclave_bin()), "--listen", "127.0.0.1:0", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(launcher.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let announced: serde_json::Value = serde_json::from_str(&first).unwrap();
        let relay = announced["listen"].as_str().unwrap().to_string();
        let measurement = hex::encode(Sha384::digest(std::fs::read(enclave_bin()).unwrap()));
        Rig { dir, identity, datasets, job, manifest, relay, measurement, launcher }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a policy with this lifetime ε and one group of `group`'s datasets.
    fn policy(&self, name: &str, lifetime_epsilon: f64, group: &[usize]) -> PathBuf {
        let members: Vec<String> = group.iter().map(|&i| format!("\"{}\"", hex::encode(self.datasets[i].commitment))).collect();
        let text = format!(
            "version = 1\nallow_simulated = true\nmeasurements = [\"{}\"]\n\n[job]\nmax_epsilon = 8.0\nmax_delta = 1e-5\nbase_models = [\"{}\"]\nrecipients = [\"{}\"]\n\n[budget]\nlifetime_epsilon = {lifetime_epsilon:?}\nlifetime_delta = 1e-5\n\n[[budget.groups]]\nname = \"patients\"\ndatasets = [{}]\n",
            self.measurement,
            hex::encode(self.manifest.base_model.sha256),
            hex::encode(vendor().public()),
            members.join(", ")
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn grant_command(&self, dataset: usize, policy: &Path, ledger: &Path) -> Command {
        let d = &self.datasets[dataset];
        let mut c = Command::new(env!("CARGO_BIN_EXE_sealtune"));
        c.args(["owner", "grant", "--host", &self.relay, "--manifest", p(&self.job), "--policy", p(policy)]);
        c.args(["--dek", p(&d.dek), "--sealed", p(&d.sealed), "--identity", p(&self.identity), "--ledger", p(ledger), "--json"]);
        c
    }

    fn grant(&self, dataset: usize, policy: &Path, ledger: &Path) -> Output {
        self.grant_command(dataset, policy, ledger).output().unwrap()
    }

    fn budget(&self, policy: &Path, ledger: &Path, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sealtune"))
            .args(["owner", "budget", "--policy", p(policy), "--identity", p(&self.identity), "--ledger", p(ledger)])
            .args(extra)
            .output()
            .unwrap()
    }

    /// Whether the enclave still takes a key for `dataset`: it refuses a
    /// second one, so this tells whether an earlier grant reached it.
    fn enclave_takes(&self, dataset: usize) -> bool {
        let policy = Policy { measurements: vec![self.measurement.clone()], ..owner_policy() };
        let owner = IdentityKey::from_pem(&std::fs::read_to_string(&self.identity).unwrap()).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let mut session = connect(self.relay.as_str(), &policy, &self.manifest).await.unwrap();
            session.grant(&self.manifest, &policy, &self.datasets[dataset].commitment, &[0x42; 32], &owner).await.is_ok()
        })
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn mechanism(rig: &Rig) -> Mechanism {
    Mechanism::of_job(&rig.manifest).unwrap()
}

#[test]
fn three_grants_fit_the_fourth_is_refused_with_the_numbers_and_the_ledger_is_unchanged() {
    let rig = Rig::new(4);
    let m = mechanism(&rig);
    let spent = |k: usize| group_epsilon(&vec![&m; k], 1e-5).unwrap();
    // Three spends fit, four do not.
    let lifetime = (spent(3) + spent(4)) / 2.0;
    let policy = rig.policy("owner.toml", lifetime, &[0, 1, 2, 3]);
    let ledger = rig.path("ledger.cbor");
    for i in 0..3 {
        let granted = json(&rig.grant(i, &policy, &ledger));
        assert_eq!(granted["budget_group"], "patients");
        assert!((granted["spent_epsilon"].as_f64().unwrap() - spent(i + 1)).abs() <= 1e-12 * spent(i + 1));
        assert!((granted["remaining_epsilon"].as_f64().unwrap() - (lifetime - spent(i + 1))).abs() < 1e-9);
    }
    let before = std::fs::read(&ledger).unwrap();
    let refused = rig.grant(3, &policy, &ledger);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("`patients`") && message.contains(&format!("{:.4}", spent(3))) && message.contains(&format!("{:.4}", spent(4))), "{message}");
    assert!(message.contains(&format!("lifetime ε = {lifetime}")), "{message}");
    assert_eq!(std::fs::read(&ledger).unwrap(), before, "a refusal changed the ledger");
    assert!(rig.enclave_takes(3), "the refused grant's key reached the enclave");

    // The ledger's spent ε is the accountant's composition, and far below the sum of the jobs' ε.
    let shown = json(&rig.budget(&policy, &ledger, &["--json", "--group", "patients"]));
    let group = &shown["groups"][0];
    assert_eq!(group["spent_epsilon"].as_f64().unwrap(), spent(3));
    assert_eq!(group["spends"].as_array().unwrap().len(), 3);
    assert!(spent(3) < 3.0 * spent(1) * 0.8, "{} vs 3 × {}", spent(3), spent(1));
    // A second grant of the same dataset to the same job (a relaunch) is refused by default.
    let again = rig.grant(0, &rig.policy("roomy.toml", 100.0, &[0, 1, 2, 3]), &ledger);
    assert_eq!(again.status.code(), Some(3));
    assert!(stderr(&again).contains("max_grants_per_job"), "{}", stderr(&again));
}

#[test]
fn a_grant_killed_anywhere_before_sending_leaves_a_verifying_ledger_and_no_key_out() {
    const POINTS: [(&str, usize); 4] = [("ledger-read", 0), ("ledger-tmp-synced", 0), ("ledger-renamed", 1), ("ledger-committed", 1)];
    let rig = Rig::new(POINTS.len() + 1);
    let policy = rig.policy("owner.toml", 100.0, &[]);
    for (i, (point, entries)) in POINTS.into_iter().enumerate() {
        let ledger = rig.path(&format!("ledger-{point}.cbor"));
        let mut child = rig.grant_command(i, &policy, &ledger).env("SEALTUNE_FAULT_PAUSE", point).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let reached = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("paused at fault point"))).is_some();
        assert!(reached, "{point}: the grant never reached its fault point");
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();

        let report = json(&rig.budget(&policy, &ledger, &["--verify", "--json"]));
        assert_eq!(report["entries"], entries, "{point}");
        assert!(rig.enclave_takes(i), "{point}: the key left before the grant finished");
    }
    // The lock died with its process, and a temporary file left by a crash
    // is no obstacle: the next grant on that ledger goes through.
    let ledger = rig.path("ledger-ledger-tmp-synced.cbor");
    assert!(Path::new(&format!("{}.tmp", p(&ledger))).exists());
    json(&rig.grant(POINTS.len(), &policy, &ledger));
    assert_eq!(json(&rig.budget(&policy, &ledger, &["--verify", "--json"]))["entries"], 1);
}

/// The ledger file's layout (docs/formats/ledger.md), to tamper with it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct LedgerFile {
    version: u32,
    #[serde(with = "serde_bytes")]
    owner: [u8; 32],
    entries: Vec<Entry>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(with = "serde_bytes")]
    spend: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: [u8; 64],
}

#[test]
fn a_tampered_ledger_fails_verify_naming_the_entry_and_grants_refuse() {
    let rig = Rig::new(4);
    let policy = rig.policy("owner.toml", 100.0, &[]);
    let ledger = rig.path("ledger.cbor");
    for i in 0..3 {
        json(&rig.grant(i, &policy, &ledger));
    }
    let good = std::fs::read(&ledger).unwrap();
    let file: LedgerFile = serde_cbor::from_slice(&good).unwrap();
    let with_entries = |entries: Vec<Entry>| serde_cbor::to_vec(&LedgerFile { entries, ..file.clone() }).unwrap();
    let list = file.entries.clone();
    // One bit of the last entry's spend (its time): still CBOR, no longer what was signed.
    let mut altered = list.clone();
    *altered[2].spend.last_mut().unwrap() ^= 0x01;
    let flipped = with_entries(altered);
    let removed = with_entries([list[0].clone(), list[2].clone()].to_vec());
    let reordered = with_entries([list[1].clone(), list[0].clone(), list[2].clone()].to_vec());
    for (name, bytes, names) in [("flipped", flipped, "entry 2"), ("removed", removed, "entry 1"), ("reordered", reordered, "entry 0")] {
        std::fs::write(&ledger, &bytes).unwrap();
        let verified = rig.budget(&policy, &ledger, &["--verify"]);
        assert_eq!(verified.status.code(), Some(1), "{name}");
        assert!(stderr(&verified).contains(names), "{name}: {}", stderr(&verified));
        let refused = rig.grant(3, &policy, &ledger);
        assert_eq!(refused.status.code(), Some(1), "{name}: {}", stderr(&refused));
        assert_eq!(std::fs::read(&ledger).unwrap(), bytes, "{name}: the grant rewrote a bad ledger");
    }
    assert!(rig.enclave_takes(3), "a grant on a tampered ledger sent the key");
}

#[test]
fn racing_grants_that_fit_only_one_at_a_time_never_both_succeed() {
    const TRIALS: usize = 50;
    let rig = Rig::new(2 * TRIALS);
    let m = mechanism(&rig);
    let lifetime = (group_epsilon(&[&m], 1e-5).unwrap() + group_epsilon(&[&m, &m], 1e-5).unwrap()) / 2.0;
    for trial in 0..TRIALS {
        let (a, b) = (2 * trial, 2 * trial + 1);
        let policy = rig.policy(&format!("policy-{trial}.toml"), lifetime, &[a, b]);
        let ledger = rig.path(&format!("ledger-{trial}.cbor"));
        let racers: Vec<Child> = [a, b].iter().map(|&d| rig.grant_command(d, &policy, &ledger).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()).collect();
        let codes: Vec<Option<i32>> = racers.into_iter().map(|mut c| c.wait().unwrap().code()).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(3)], "trial {trial}: exit codes {codes:?}");
        assert_eq!(json(&rig.budget(&policy, &ledger, &["--verify", "--json"]))["entries"], 1, "trial {trial}");
    }
}
