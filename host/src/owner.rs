//! `sealtune owner`: what a data owner runs on their own machine.

use crate::budget::{self, LockedLedger};
use crate::failure::{Failure, Outcome};
use crate::files::{self, Access};
use clap::Subcommand;
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::ledger::{Mechanism, Spend, LEDGER_VERSION};
use sealtune_attestation::policy::{BudgetPolicy, Policy};
use sealtune_attestation::sealed::{self, record::validate_jsonl, DataKey, Header, SealOptions, SealedError};
use sealtune_host::client::connect;
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an identity signing key (Ed25519, PKCS#8 PEM, mode 0600); prints the public key.
    Keygen(KeygenArgs),
    /// Seal a JSONL corpus; prints the dataset commitment (SHA-256 of the sealed file).
    Seal {
        /// The corpus: one JSON record per line with `text` or `messages` (and optionally `user_id`).
        corpus: PathBuf,
        /// Where to write the sealed file.
        #[arg(long)]
        out: PathBuf,
        /// Write a new random DEK here (mode 0600).
        #[arg(long, conflicts_with = "dek", required_unless_present = "dek")]
        dek_out: Option<PathBuf>,
        /// Reuse an existing DEK.
        #[arg(long)]
        dek: Option<PathBuf>,
        /// The dataset's name in the header (default: the corpus file name).
        #[arg(long)]
        dataset_id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt your own sealed file (written only if every chunk authenticates).
    Open {
        /// The sealed file.
        sealed: PathBuf,
        /// The DEK it was sealed with.
        #[arg(long)]
        dek: PathBuf,
        /// Where to write the plaintext.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a sealed file's header and commitment (no key needed).
    Inspect {
        /// The sealed file.
        sealed: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a sealed file to the host's store; prints its commitment.
    Upload {
        /// The sealed file.
        sealed: PathBuf,
        /// The host's store address.
        #[arg(long)]
        host: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect to the job's enclave through the host, verify its evidence for
    /// this session against your policy and the job, record the spend in your
    /// budget ledger if the dataset's group can afford it (exit 3 if not),
    /// then seal your DEK to the enclave in a signed grant.
    Grant {
        /// The host's relay address for the job.
        #[arg(long)]
        host: String,
        /// The vendor-signed job file the enclave runs.
        #[arg(long)]
        manifest: PathBuf,
        /// Your policy (TOML) with a [job] section.
        #[arg(long)]
        policy: PathBuf,
        /// The DEK to release.
        #[arg(long)]
        dek: PathBuf,
        /// The sealed file the DEK opens (names the dataset by its commitment).
        #[arg(long)]
        sealed: PathBuf,
        /// Your identity key (signs the grant and the ledger entry).
        #[arg(long)]
        identity: PathBuf,
        /// Your budget ledger (default: sealtune-ledger.cbor beside the identity key).
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show each budget group's lifetime, spent and remaining ε and the jobs
    /// that spent it (from your ledger, composed by the accountant).
    Budget {
        /// Your policy (TOML) with a [budget] section.
        #[arg(long)]
        policy: PathBuf,
        /// Your identity key (the ledger's entries must carry its signatures).
        #[arg(long)]
        identity: PathBuf,
        /// Your budget ledger (default: sealtune-ledger.cbor beside the identity key).
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Only check every signature and link, and report the first bad entry.
        #[arg(long)]
        verify: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Keygen(args) => keygen(&args),
        Command::Seal { corpus, out, dek_out, dek, dataset_id, json } => {
            seal(&corpus, &out, dek_out.as_deref(), dek.as_deref(), dataset_id, json)
        }
        Command::Open { sealed, dek, out } => open(&sealed, &dek, &out),
        Command::Inspect { sealed, json } => inspect(&sealed, json),
        Command::Upload { sealed, host, json } => upload(&sealed, &host, json),
        Command::Grant { host, manifest, policy, dek, sealed, identity, ledger, json } => {
            grant(&host, &manifest, &policy, &dek, &sealed, &identity, ledger.as_deref(), json)
        }
        Command::Budget { policy, identity, ledger, group, verify, json } => {
            let parsed = read_policy(&policy)?;
            let budget = budget_of(&parsed, &policy)?;
            let owner = read_identity(&identity)?.public();
            crate::budget::show(&budget::ledger_path(ledger.as_deref(), &identity), &owner, budget, group.as_deref(), verify, json)
        }
    }
}

/// Where a new identity key goes.
#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key; must not exist.
    #[arg(long)]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Writes a new identity key (never over an existing file) and prints its public half.
pub(crate) fn keygen(args: &KeygenArgs) -> Outcome {
    let (out, json) = (args.out.as_path(), args.json);
    if out.exists() {
        return Err(Failure::input(format!("{} already exists; refusing to overwrite a key", out.display())));
    }
    let key = IdentityKey::generate();
    files::write_atomic(out, key.to_pem().as_bytes(), Access::Private)?;
    let public = hex::encode(key.public());
    crate::print_result(json, serde_json::json!({ "public_key": public }), public.clone())
}

fn sealed_failure(path: &Path, e: SealedError) -> Failure {
    match e {
        SealedError::Io(_) | SealedError::BadRecord { .. } | SealedError::BadKeyFile | SealedError::NotSealed => {
            Failure::input(format!("{}: {e}", path.display()))
        }
        _ => Failure::rejected(format!("{}: {e}", path.display())),
    }
}

fn open_file(path: &Path) -> Result<std::fs::File, Failure> {
    std::fs::File::open(path).map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))
}

fn read_dek(path: &Path) -> Result<DataKey, Failure> {
    let text = zeroize::Zeroizing::new(files::read_text(path)?);
    DataKey::from_file(&text).map_err(|e| sealed_failure(path, e))
}

fn seal(corpus: &Path, out: &Path, dek_out: Option<&Path>, dek: Option<&Path>, dataset_id: Option<String>, json: bool) -> Outcome {
    // First pass: refuse garbage before anything is written.
    let records = validate_jsonl(BufReader::new(open_file(corpus)?)).map_err(|e| sealed_failure(corpus, e))?;
    let key = match dek {
        Some(path) => read_dek(path)?,
        None => DataKey::generate(),
    };
    let options = SealOptions {
        dataset_id: dataset_id.unwrap_or_else(|| corpus.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        content_type: "jsonl".into(),
        chunk_size: sealed::CHUNK_SIZE,
        created: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let commitment = files::write_streamed(out, Access::Public, |w| {
        sealed::seal(BufReader::new(open_file(corpus)?), BufWriter::new(w), &key, &options).map_err(|e| sealed_failure(corpus, e))
    })?;
    if let Some(path) = dek_out {
        files::write_atomic(path, key.to_file().as_bytes(), Access::Private)?;
    }
    eprintln!("sealed {records} records");
    let commitment = hex::encode(commitment);
    crate::print_result(json, serde_json::json!({ "commitment": commitment, "records": records }), commitment.clone())
}

fn open(sealed_path: &Path, dek: &Path, out: &Path) -> Outcome {
    let key = read_dek(dek)?;
    files::write_streamed(out, Access::Private, |w| {
        let mut w = BufWriter::new(w);
        sealed::open(BufReader::new(open_file(sealed_path)?), &mut w, &key).map_err(|e| sealed_failure(sealed_path, e))?;
        w.flush().map_err(|e| Failure::input(format!("cannot write {}: {e}", out.display())))
    })
}

fn inspect(sealed_path: &Path, json: bool) -> Outcome {
    let mut file = BufReader::new(open_file(sealed_path)?);
    let (header, _, _) = Header::read_from(&mut file).map_err(|e| sealed_failure(sealed_path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut open_file(sealed_path)?, &mut hasher).map_err(|e| Failure::input(format!("cannot read {}: {e}", sealed_path.display())))?;
    let commitment = hex::encode(hasher.finalize());
    if json {
        let value = serde_json::json!({
            "version": header.version,
            "dataset_id": header.dataset_id,
            "content_type": header.content_type,
            "chunk_size": header.chunk_size,
            "created": header.created,
            "commitment": commitment,
        });
        println!("{value}");
    } else {
        println!("sealed corpus v{}  dataset {}  content {}  chunk {} B  created {}", header.version, header.dataset_id, header.content_type, header.chunk_size, header.created);
        println!("commitment {commitment}");
    }
    Ok(())
}

fn upload(sealed: &Path, host: &str, json: bool) -> Outcome {
    // Only sealed files go to the host: refuse anything whose header does not parse.
    Header::read_from(&mut BufReader::new(open_file(sealed)?)).map_err(|e| sealed_failure(sealed, e))?;
    let digest = crate::upload(host, sealed)?;
    crate::print_result(json, serde_json::json!({ "commitment": hex::encode(digest) }), hex::encode(digest))
}

fn read_policy(path: &Path) -> Result<Policy, Failure> {
    Policy::from_toml(&files::read_text(path)?).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// The policy's `[budget]` section; `path` names the file in the error.
fn budget_of<'a>(policy: &'a Policy, path: &Path) -> Result<&'a BudgetPolicy, Failure> {
    policy.budget.as_ref().ok_or_else(|| {
        Failure::input(format!("{}: no [budget] section: set lifetime_epsilon and lifetime_delta (docs/formats/policy.md)", path.display()))
    })
}

#[allow(clippy::too_many_arguments)]
fn grant(host: &str, manifest: &Path, policy_path: &Path, dek: &Path, sealed_path: &Path, identity_path: &Path, ledger: Option<&Path>, json: bool) -> Outcome {
    let job = crate::files::read_job(manifest)?;
    let policy = read_policy(policy_path)?;
    let budget = budget_of(&policy, policy_path)?;
    let key = read_dek(dek)?;
    let identity = read_identity(identity_path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut open_file(sealed_path)?, &mut hasher).map_err(|e| Failure::input(format!("cannot read {}: {e}", sealed_path.display())))?;
    let dataset: [u8; 32] = hasher.finalize().into();
    // Whatever would make the grant fail is checked before the ledger records a spend.
    policy.check_job(&job.manifest).map_err(|e| Failure::rejected(e.to_string()))?;
    match job.manifest.dataset(&dataset) {
        Some(listed) if listed.owner == identity.public() => {}
        Some(_) => return Err(Failure::rejected(format!("the job lists dataset {} under another owner's key", hex::encode(dataset)))),
        None => return Err(Failure::rejected(format!("the job does not list dataset {}", hex::encode(dataset)))),
    }
    let mechanism = Mechanism::of_job(&job.manifest).map_err(|e| Failure::rejected(e.to_string()))?;
    let ledger_path = budget::ledger_path(ledger, identity_path);

    // The lock is held from the check until the key has left, so two grants
    // that each fit the budget alone cannot both pass it.
    let mut ledger = LockedLedger::acquire(&ledger_path, &identity.public())?;
    let manifest_hash = job.manifest.hash();
    let assessment = budget::assess(ledger.ledger(), budget, &dataset, &manifest_hash, &mechanism)?;
    let enclave_key = crate::runtime()?.block_on(async {
        let mut session = connect(host, &policy, &job.manifest).await.map_err(|e| Failure::rejected(e.to_string()))?;
        if session.evidence().claims.simulated {
            eprintln!("WARNING: releasing a key to a SIMULATED enclave (allowed by this policy): it offers no confidentiality");
        }
        // The spend is durable before the key leaves: a crash after this
        // counts as spent, a crash before leaves no entry and sent nothing.
        let spend = Spend {
            version: LEDGER_VERSION,
            sequence: 0,
            previous: [0; 32],
            dataset,
            group: assessment.group.clone(),
            manifest: manifest_hash,
            job_id: job.manifest.job_id.clone(),
            evidence: session.evidence().evidence_digest,
            mechanism,
            time: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        ledger.record(spend, &identity)?;
        session.grant(&job.manifest, &policy, &dataset, key.expose(), &identity).await.map_err(|e| {
            Failure::rejected(format!("{e} (the ledger counts this grant as spent: the key may have reached the enclave)"))
        })?;
        let enclave_key = session.evidence().keys.kem;
        // The grant is in; a failed close_notify changes nothing.
        let _ = session.close().await;
        Ok::<_, Failure>(enclave_key)
    })?;
    drop(ledger);
    let remaining = (budget.lifetime_epsilon - assessment.spent_after).max(0.0);
    crate::print_result(
        json,
        serde_json::json!({
            "dataset": hex::encode(dataset),
            "enclave_key": hex::encode(enclave_key),
            "vendor": hex::encode(job.vendor),
            "budget_group": assessment.group,
            "spent_epsilon_before": assessment.spent_before,
            "spent_epsilon": assessment.spent_after,
            "lifetime_epsilon": budget.lifetime_epsilon,
            "remaining_epsilon": remaining,
            "ledger": ledger_path.display().to_string(),
        }),
        format!(
            "granted dataset {} to enclave key {}\nbudget group {}: spent ε = {:.4} of {} (was {:.4}), remaining {remaining:.4}",
            hex::encode(dataset),
            hex::encode(enclave_key),
            assessment.group,
            assessment.spent_after,
            budget.lifetime_epsilon,
            assessment.spent_before
        ),
    )
}

/// Reads an identity key file.
pub(crate) fn read_identity(path: &std::path::Path) -> Result<IdentityKey, Failure> {
    let pem = zeroize::Zeroizing::new(files::read_text(path)?);
    IdentityKey::from_pem(&pem).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}
