//! `sealtune-enclave key-release`: the trust-core flow over files, until the
//! networked service carries the same messages. The process keeps its keys
//! in memory for its whole life and never writes them out.

use clap::Parser;
use sealtune_attestation::manifest::SignedManifest;
use sealtune_enclave::corpus::Corpus;
use sealtune_enclave::key_release::KeyRelease;
use sealtune_enclave::measurement::own_measurement;
use sealtune_enclave::tee::sim::{SimLaunch, SimPlatform, SimTee};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
pub(crate) struct Args {
    /// The job manifest the enclave is launched with (its hash becomes HOST_DATA).
    #[arg(long)]
    manifest: PathBuf,
    /// The simulated platform directory (`sealtune sim init`).
    #[arg(long)]
    sim_platform: PathBuf,
    /// A challenge to answer, as NONCE_HEX=EVIDENCE_OUT; repeat for several owners.
    #[arg(long = "challenge", required = true)]
    challenges: Vec<String>,
    /// A grant and the sealed corpus it opens, as GRANT=SEALED; repeat per dataset.
    #[arg(long = "grant", required = true)]
    grants: Vec<String>,
    /// How long to wait for the grant files.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

fn pair(flag: &str, value: &str) -> Result<(String, PathBuf), String> {
    let (a, b) = value.split_once('=').ok_or_else(|| format!("--{flag} {value}: expected A=B"))?;
    Ok((a.to_string(), PathBuf::from(b)))
}

fn wait_for(path: &Path, deadline: Instant) -> Result<Vec<u8>, String> {
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(bytes);
        }
        if Instant::now() > deadline {
            return Err(format!("no grant at {} before the deadline", path.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    let manifest_bytes = std::fs::read(&args.manifest).map_err(|e| format!("{}: {e}", args.manifest.display()))?;
    let manifest = SignedManifest::open(&manifest_bytes).map_err(|e| format!("{}: {e}", args.manifest.display()))?.manifest;
    let platform = SimPlatform::load(&args.sim_platform).map_err(|e| e.to_string())?;
    let measurement = own_measurement().map_err(|e| format!("cannot measure this executable: {e}"))?;
    let mut enclave = KeyRelease::new(manifest.clone(), SimTee::launch(platform, SimLaunch::new(measurement, manifest.hash())));

    for challenge in &args.challenges {
        let (nonce, out) = pair("challenge", challenge)?;
        let nonce: [u8; 32] = hex::decode(&nonce)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("--challenge nonce must be 32 bytes of hex")?;
        let evidence = enclave.challenge(&nonce).map_err(|e| e.to_string())?;
        let tmp = out.with_extension("partial");
        std::fs::write(&tmp, evidence.to_cbor()).and_then(|()| std::fs::rename(&tmp, &out)).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("evidence written to {}", out.display());
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    for grant in &args.grants {
        let (grant_path, sealed_path) = pair("grant", grant)?;
        let grant = wait_for(Path::new(&grant_path), deadline)?;
        let released = enclave.accept(&grant).map_err(|e| format!("grant {grant_path} refused: {e}"))?;
        let sealed = std::fs::read(&sealed_path).map_err(|e| format!("{}: {e}", sealed_path.display()))?;
        let corpus = Corpus::open(&sealed, &released).map_err(|e| format!("{}: {e}", sealed_path.display()))?;
        // On the simulated platform only, print the plaintext digest so the
        // development flow can be checked end to end; real enclaves release
        // nothing derived from the data except DP outputs.
        println!(
            "dataset {} opened in memory: {} records, plaintext sha256 {} (simulated platform)",
            hex::encode(released.dataset),
            corpus.records().len(),
            hex::encode(corpus.plaintext_sha256())
        );
    }
    Ok(())
}
