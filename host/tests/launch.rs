//! `sealtune host serve` and `sealtune host launch` as operators run them:
//! the launched simulated enclave answers an owner through the relay, and
//! does not outlive its launcher.

use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::Phase;
use sealtune_host::client::connect;
use sealtune_attestation::manifest::SignedManifest;
use sealtune_tests::fixtures::{manifest, owner_policy, vendor};
use sha2::{Digest, Sha384};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// `sealtune-enclave` is built beside `sealtune` by the workspace build
/// (`scripts/test.sh` runs `cargo build --workspace --bins` first).
fn enclave_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sealtune")).with_file_name("sealtune-enclave");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)", path.display());
    path
}

/// Starts `sealtune ARGS` and returns it with its first line of output (JSON).
async fn spawn(args: &[&str]) -> (tokio::process::Child, serde_json::Value) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sealtune"))
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await.unwrap().unwrap().unwrap();
    (child, serde_json::from_str(&line).unwrap())
}

/// An owner policy that trusts exactly this build of the enclave on the simulated platform.
fn policy() -> Policy {
    let measurement = Sha384::digest(std::fs::read(enclave_bin()).unwrap());
    Policy { measurements: vec![hex::encode(measurement)], ..owner_policy() }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn launch_relays_an_attested_session_to_the_simulated_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealtune")).args(["sim", "init", "--out", p(&sim)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let owner = IdentityKey::generate();
    let dataset = [0xda; 32];
    // Two datasets, one granted below: the job stays waiting for grants.
    let manifest = manifest(&[(dataset, owner.public()), ([0xdb; 32], owner.public())]);
    let manifest_path = dir.path().join("job.cbor");
    std::fs::write(&manifest_path, SignedManifest::sign(&manifest, vendor()).unwrap().to_cbor()).unwrap();

    // Nothing listens on the store address: the job never gets that far.
    let args = ["host", "launch", "--manifest", p(&manifest_path), "--tee", "sim", "--sim-platform", p(&sim), "--store", "127.0.0.1:9"];
    let (mut launcher, info) = spawn(&[&args[..], &["--enclave-bin", p(&enclave_bin()), "--listen", "127.0.0.1:0", "--json"]].concat()).await;
    assert_eq!(info["manifest_hash"], hex::encode(manifest.hash()));
    let relay = info["listen"].as_str().unwrap().to_string();
    let enclave = info["enclave"].as_str().unwrap().to_string();
    assert_ne!(relay, enclave);

    let policy = policy();
    let mut session = connect(relay.as_str(), &policy, &manifest).await.unwrap();
    assert!(session.evidence().claims.simulated);
    session.grant(&manifest, &policy, &dataset, &[0x42; 32], &owner).await.unwrap();
    assert_eq!(session.status().await.unwrap().phase, Phase::AwaitingGrants);
    drop(session);

    // Killed without a chance to clean up, the launcher takes the enclave with it.
    launcher.kill().await.unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(enclave.as_str()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the enclave at {enclave} outlived its launcher");
}

#[tokio::test]
async fn launch_refuses_a_missing_platform_or_enclave_program() {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("job.cbor");
    std::fs::write(&manifest_path, SignedManifest::sign(&manifest(&[([1; 32], [2; 32])]), vendor()).unwrap().to_cbor()).unwrap();
    let base = ["host", "launch", "--manifest", p(&manifest_path), "--listen", "127.0.0.1:0"];

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealtune")).args(base).args(["--tee", "sim"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sim-platform"));

    let missing = dir.path().join("no-such-enclave");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealtune"))
        .args(base)
        .args(["--tee", "sim", "--sim-platform", p(dir.path()), "--store", "127.0.0.1:9", "--enclave-bin", p(&missing)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn serve_stores_uploads_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (_server, info) = spawn(&["host", "serve", "--store", p(&store), "--listen", "127.0.0.1:0", "--json"]).await;
    let addr = info["listen"].as_str().unwrap().to_string();
    let file = dir.path().join("model.bin");
    std::fs::write(&file, b"public base model bytes").unwrap();
    let digest = sealtune_host::store::upload(addr.as_str(), &file).await.unwrap();
    assert_eq!(std::fs::read(store.join(hex::encode(digest))).unwrap(), b"public base model bytes");
}
