//! The product as its users meet it, over the real binaries on localhost:
//! two hospitals seal and upload notes, the vendor uploads a model and signs
//! a job, the operator serves the store and launches the simulated enclave,
//! both owners verify and grant through the relay, the enclave trains, the
//! vendor fetches and verifies offline. Then the host side is scanned for
//! the marker strings the notes carry: nothing the host holds may contain
//! them.

use sealtune_tests::tiny_model::tiny_gguf;
use sha2::{Digest, Sha384};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const MARKERS: [&str; 2] = ["ZEBRA-PATIENT-7731", "QUOKKA-PATIENT-4410"];

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The `sealtune` binary with the host side's temporary directory.
fn sealtune(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sealtune"));
    c.env("TMPDIR", tmp);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{:?} failed: {}", c, String::from_utf8_lossy(&out.stderr));
    out
}

fn line(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap().trim().to_string()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&line(out)).unwrap()
}

/// A long-running host process, its logs (standard error) in `log`; its
/// first line of standard output is its JSON announcement.
struct Daemon(Child);

impl Daemon {
    fn start(mut c: Command, log: &Path) -> (Self, serde_json::Value) {
        let mut child = c.stdout(Stdio::piped()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        let announced = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        (Daemon(child), announced)
    }
}

impl Daemon {
    /// The exit status, if the process ends by itself within `limit`.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir` that contains one of the markers.
fn files_with_markers(dir: &Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_with_markers(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            if MARKERS.iter().any(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes())) {
                hits.push(path);
            }
        }
    }
    hits
}

fn notes(hospital: &str, marker: &str) -> String {
    (0..30)
        .map(|i| format!("{{\"text\": \"{hospital} clinic note {i}. Patient {marker} (NHS 943 476 {i:04}) reports a dry cough; advised rest.\"}}\n"))
        .collect()
}

#[test]
fn two_hospitals_and_a_vendor_over_the_cli_leave_no_plaintext_on_the_host() {
    let root = tempfile::tempdir().unwrap();
    let (owners_dir, vendor_dir, host) = (root.path().join("owners"), root.path().join("vendor"), root.path().join("host"));
    let host_tmp = host.join("tmp");
    for d in [&owners_dir, &vendor_dir, &host_tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let enclave_bin = Path::new(env!("CARGO_BIN_EXE_sealtune")).with_file_name("sealtune-enclave");
    assert!(enclave_bin.exists(), "run `cargo build --workspace --bins` first (scripts/test.sh does)");

    // The operator: the simulated platform, the store.
    run({
        let mut c = sealtune(&host_tmp);
        c.args(["sim", "init", "--out", p(&host.join("sim"))]);
        c
    });
    let (_store, announced) = Daemon::start(
        {
            let mut c = sealtune(&host_tmp);
            c.args(["host", "serve", "--store", p(&host.join("store")), "--listen", "127.0.0.1:0", "--json"]);
            c
        },
        &host.join("store.log"),
    );
    let store_addr = announced["listen"].as_str().unwrap().to_string();

    // Two owners seal and upload.
    let mut owners = Vec::new();
    for (name, marker) in [("stmary", MARKERS[0]), ("royalfree", MARKERS[1])] {
        let dir = owners_dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.jsonl"), notes(name, marker)).unwrap();
        let key = line(&run({
            let mut c = sealtune(&dir);
            c.args(["owner", "keygen", "--out", p(&dir.join("owner.key"))]);
            c
        }));
        run({
            let mut c = sealtune(&dir);
            c.args(["owner", "seal", p(&dir.join("notes.jsonl")), "--out", p(&dir.join("notes.sealed")), "--dek-out", p(&dir.join("notes.dek"))]);
            c
        });
        let uploaded = json(&run({
            let mut c = sealtune(&dir);
            c.args(["owner", "upload", p(&dir.join("notes.sealed")), "--host", &store_addr, "--json"]);
            c
        }));
        owners.push((dir, key, uploaded["commitment"].as_str().unwrap().to_string()));
    }

    // The vendor uploads the model and signs the job.
    std::fs::write(vendor_dir.join("model.gguf"), tiny_gguf(11)).unwrap();
    let vendor_key = line(&run({
        let mut c = sealtune(&vendor_dir);
        c.args(["vendor", "keygen", "--out", p(&vendor_dir.join("vendor.key"))]);
        c
    }));
    let model = json(&run({
        let mut c = sealtune(&vendor_dir);
        c.args(["vendor", "upload", p(&vendor_dir.join("model.gguf")), "--host", &store_addr, "--json"]);
        c
    }))["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let job = vendor_dir.join("job.cbor");
    run({
        let mut c = sealtune(&vendor_dir);
        c.args(["vendor", "job", "--model", p(&vendor_dir.join("model.gguf")), "--identity", p(&vendor_dir.join("vendor.key"))]);
        for (_, key, commitment) in &owners {
            c.args(["--dataset", &format!("{commitment}:{key}")]);
        }
        c.args(["--epsilon", "4", "--delta", "1e-5", "--sampling-rate", "0.1", "--expected-batch", "8", "--max-steps", "3"]);
        c.args(["--max-seq-len", "32", "--out", p(&job)]);
        c
    });

    // The operator launches the enclave for the job; clients reach it through the relay.
    let (mut launcher, announced) = Daemon::start(
        {
            let mut c = sealtune(&host_tmp);
            c.args(["host", "launch", "--manifest", p(&job), "--tee", "sim", "--sim-platform", p(&host.join("sim"))]);
            c.args(["--store", &store_addr, "--enclave-bin", p(&enclave_bin), "--listen", "127.0.0.1:0", "--json"]);
            c
        },
        &host.join("launch.log"),
    );
    let relay = announced["listen"].as_str().unwrap().to_string();

    // Everyone trusts exactly this enclave build on the simulated platform.
    let measurement = hex::encode(Sha384::digest(std::fs::read(&enclave_bin).unwrap()));
    let policy = |max_epsilon: f64| {
        format!(
            "version = 1\nallow_simulated = true\nmeasurements = [\"{measurement}\"]\n[job]\nmax_epsilon = {max_epsilon:?}\nmax_delta = 1e-5\nbase_models = [\"{model}\"]\nrecipients = [\"{vendor_key}\"]\n[budget]\nlifetime_epsilon = 10.0\nlifetime_delta = 1e-5\n"
        )
    };
    for (dir, _, commitment) in &owners {
        std::fs::write(dir.join("owner.toml"), policy(8.0)).unwrap();
        let granted = json(&run({
            let mut c = sealtune(dir);
            c.args(["owner", "grant", "--host", &relay, "--manifest", p(&job), "--policy", p(&dir.join("owner.toml"))]);
            c.args(["--dek", p(&dir.join("notes.dek")), "--sealed", p(&dir.join("notes.sealed")), "--identity", p(&dir.join("owner.key")), "--json"]);
            c
        }));
        assert_eq!(granted["dataset"].as_str().unwrap(), commitment);
        assert_eq!(granted["vendor"].as_str().unwrap(), vendor_key);
        // The spend is in the owner's ledger beside their key, and the job fits the budget.
        assert!(dir.join("sealtune-ledger.cbor").exists());
        let spent = granted["spent_epsilon"].as_f64().unwrap();
        assert!((spent - 4.0).abs() < 0.01, "{spent}");
    }

    // The vendor waits, fetches and verifies offline.
    std::fs::write(vendor_dir.join("vendor.toml"), policy(4.0)).unwrap();
    let out = vendor_dir.join("out");
    let fetched = json(&run({
        let mut c = sealtune(&vendor_dir);
        c.args(["vendor", "fetch", "--host", &relay, "--manifest", p(&job), "--policy", p(&vendor_dir.join("vendor.toml"))]);
        c.args(["--identity", p(&vendor_dir.join("vendor.key")), "--out", p(&out), "--timeout", "600", "--json"]);
        c
    }));
    assert_eq!(fetched["files"].as_array().unwrap().len(), 3);
    // Its only recipient has the outputs: the enclave drops its keys and data
    // and exits, and the launcher reports that and exits 0.
    assert_eq!(launcher.wait_for_exit(Duration::from_secs(60)), Some(0), "the enclave outlived its job");
    let log = std::fs::read_to_string(host.join("launch.log")).unwrap();
    assert!(log.contains("the enclave finished"), "{log}");
    let verify = |policy: &Path| {
        let mut c = sealtune(&vendor_dir);
        c.args(["verify", p(&out), "--policy", p(policy), "--manifest", p(&job), "--json"]);
        c.output().unwrap()
    };
    let facts = json(&run({
        let mut c = sealtune(&vendor_dir);
        c.args(["verify", p(&out), "--policy", p(&vendor_dir.join("vendor.toml")), "--manifest", p(&job), "--json"]);
        c
    }));
    assert_eq!(facts["steps"], 3);
    assert_eq!(facts["simulated"], true);
    let datasets: Vec<&str> = facts["datasets"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(datasets, owners.iter().map(|(_, _, c)| c.as_str()).collect::<Vec<_>>());
    let (epsilon, recomputed) = (facts["epsilon"].as_f64().unwrap(), facts["epsilon_recomputed"].as_f64().unwrap());
    assert!(0.0 < recomputed && recomputed <= epsilon && epsilon <= 4.0, "{recomputed} {epsilon}");

    // A stricter vendor policy, a flipped receipt bit, a replaced weight file: exit 1, each with its reason.
    std::fs::write(vendor_dir.join("strict.toml"), policy(epsilon / 2.0)).unwrap();
    let refused = verify(&vendor_dir.join("strict.toml"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exceeds the policy maximum"), "{}", String::from_utf8_lossy(&refused.stderr));
    let receipt = std::fs::read(out.join("receipt.cbor")).unwrap();
    let mut flipped = receipt.clone();
    flipped[receipt.len() / 2] ^= 0x10;
    std::fs::write(out.join("receipt.cbor"), &flipped).unwrap();
    assert_eq!(verify(&vendor_dir.join("vendor.toml")).status.code(), Some(1));
    std::fs::write(out.join("receipt.cbor"), &receipt).unwrap();
    std::fs::write(out.join("adapter_model.safetensors"), b"replaced").unwrap();
    let refused = verify(&vendor_dir.join("vendor.toml"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("adapter_model.safetensors"), "{}", String::from_utf8_lossy(&refused.stderr));

    // The host's store, logs and temporary files hold no plaintext; the
    // markers are where they must be, so the scan can find them.
    drop(launcher);
    drop(_store);
    assert_eq!(files_with_markers(&host), Vec::<PathBuf>::new());
    assert!(std::fs::read_dir(host.join("store")).unwrap().count() >= 3);
    assert_eq!(files_with_markers(&owners_dir).len(), 2, "the scan finds the markers in the owners' plaintext");
    assert_eq!(files_with_markers(&out), Vec::<PathBuf>::new());
}
