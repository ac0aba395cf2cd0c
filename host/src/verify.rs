//! `sealtune verify`: a vendor's offline check of a job's outputs. Nothing
//! here trusts the host or the enclave's word: the receipt's evidence is
//! verified against the vendor's policy, the receipt's signature and binding
//! against that evidence, every output file against its digest, and ε is
//! recomputed with this build's accountant.

use crate::failure::{Failure, Outcome};
use crate::files;
use clap::Args;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::receipt::{check_epsilon, recompute_epsilon, verify_receipt, RECEIPT_FILE};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The directory `sealtune vendor fetch` wrote: the outputs and `receipt.cbor`.
    dir: PathBuf,
    /// Your policy (TOML): accepted enclaves, and a [job] section with max_epsilon and max_delta.
    #[arg(long)]
    policy: PathBuf,
    /// Also require the receipt to be for this signed job file.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Verify as of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Print the receipt's facts as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: VerifyArgs) -> Outcome {
    let policy = Policy::from_toml(&files::read_text(&args.policy)?)
        .map_err(|e| Failure::input(format!("{}: {e}", args.policy.display())))?;
    let at = crate::attest::parse_at(args.at)?;
    let bytes = files::read(&args.dir.join(RECEIPT_FILE))?;
    let verified = verify_receipt(&bytes, &args.dir, &policy, at).map_err(|e| Failure::rejected(format!("receipt refused: {e}")))?;
    let receipt = &verified.receipt;
    if let Some(path) = &args.manifest {
        let job = files::read_job(path)?;
        if job.manifest.hash() != receipt.manifest_hash {
            return Err(Failure::rejected(format!("receipt refused: it is for another job than {}", path.display())));
        }
    }
    let recomputed = recompute_epsilon(receipt).map_err(|e| Failure::rejected(format!("receipt refused: {e}")))?;
    check_epsilon(receipt, recomputed, &policy).map_err(|e| Failure::rejected(format!("receipt refused: {e}")))?;
    let p = &receipt.privacy;

    let datasets: Vec<String> = receipt.datasets.iter().map(|d| hex::encode(d.commitment)).collect();
    let facts = serde_json::json!({
        "valid": true,
        "manifest_hash": hex::encode(receipt.manifest_hash),
        "base_model": hex::encode(receipt.base_model),
        "datasets": datasets,
        "epsilon": p.epsilon,
        "epsilon_recomputed": recomputed,
        "delta": p.delta,
        "steps": p.steps,
        "sampling_rate": p.sampling_rate,
        "noise_multiplier": p.noise_multiplier,
        "clip_norm": p.clip_norm,
        "expected_batch_size": p.expected_batch_size,
        "privacy_unit": p.privacy_unit,
        "accountant": format!("{} {}", p.accountant, p.accountant_version),
        "outputs": receipt.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        "measurement": hex::encode(receipt.measurement),
        "simulated": receipt.simulated,
        "software_version": receipt.software_version,
    });
    let text = format!(
        "receipt valid: ε = {:.4} (recomputed {:.4}) at δ = {:e}, {} steps, q = {}, σ = {:.4}, C = {}, {} dataset(s); outputs {}{}",
        p.epsilon,
        recomputed,
        p.delta,
        p.steps,
        p.sampling_rate,
        p.noise_multiplier,
        p.clip_norm,
        datasets.len(),
        receipt.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "),
        if receipt.simulated { "; SIMULATED enclave (no confidentiality)" } else { "" },
    );
    crate::print_result(args.json, facts, text)
}
