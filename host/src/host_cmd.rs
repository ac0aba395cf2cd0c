//! `sealtune host`: what the operator runs. The host is untrusted: it stores
//! ciphertext and public models, and relays the enclave's TLS bytes.

use crate::failure::{Failure, Outcome};
use clap::{Subcommand, ValueEnum};
use sealtune_host::relay::{launch_sim, relay};
use sealtune_host::store::{serve, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the enclave runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TeeChoice {
    /// Spawn `sealtune-enclave` on the simulated platform (development only).
    Sim,
    /// An enclave already running in an SEV-SNP confidential VM (give --enclave).
    Snp,
    /// An enclave already running in a TDX confidential VM (give --enclave).
    Tdx,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve the blob store: sealed corpora and base models by SHA-256.
    Serve {
        /// The store directory (created if absent).
        #[arg(long)]
        store: PathBuf,
        /// Address to listen on (port 0: any free port).
        #[arg(long)]
        listen: SocketAddr,
        /// Largest blob accepted, in bytes.
        #[arg(long, default_value_t = 64 << 30)]
        max_blob_bytes: u64,
        /// Print the listening address as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start (or reach) the enclave for a job and relay clients to it without terminating TLS.
    Launch {
        /// The job manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Where the enclave runs.
        #[arg(long, value_enum)]
        tee: TeeChoice,
        /// With --tee sim: the simulated platform directory (`sealtune sim init`).
        #[arg(long, required_if_eq("tee", "sim"))]
        sim_platform: Option<PathBuf>,
        /// With --tee sim: the blob store the enclave fetches the model and corpora from.
        #[arg(long, required_if_eq("tee", "sim"))]
        store: Option<SocketAddr>,
        /// With --tee sim: the enclave program (default: `sealtune-enclave` beside this program).
        #[arg(long)]
        enclave_bin: Option<PathBuf>,
        /// With --tee snp|tdx: the enclave's address in the confidential VM.
        #[arg(long, required_if_eq_any([("tee", "snp"), ("tee", "tdx")]))]
        enclave: Option<SocketAddr>,
        /// Address clients connect to (port 0: any free port).
        #[arg(long)]
        listen: SocketAddr,
        /// Print the addresses as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: Command) -> Outcome {
    let runtime = crate::runtime()?;
    match command {
        Command::Serve { store, listen, max_blob_bytes, json } => runtime.block_on(serve_store(&store, listen, max_blob_bytes, json)),
        Command::Launch { manifest, tee, sim_platform, store, enclave_bin, enclave, listen, json } => {
            runtime.block_on(launch(&manifest, tee, sim_platform.as_deref(), store, enclave_bin, enclave, listen, json))
        }
    }
}

async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Failure> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| Failure::input(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Failure::input(format!("cannot listen on {listen}: {e}")))?;
    Ok((listener, local))
}

async fn serve_store(dir: &Path, listen: SocketAddr, max_blob_bytes: u64, json: bool) -> Outcome {
    let store = Store::open(dir, max_blob_bytes).map_err(Failure::input)?;
    let (listener, local) = bind(listen).await?;
    crate::print_result(
        json,
        serde_json::json!({ "listen": local.to_string(), "store": dir.display().to_string() }),
        format!("store {} listening on {local}", dir.display()),
    )?;
    serve(listener, Arc::new(store)).await;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line flag
async fn launch(
    manifest_path: &Path,
    tee: TeeChoice,
    sim_platform: Option<&Path>,
    store: Option<SocketAddr>,
    enclave_bin: Option<PathBuf>,
    enclave: Option<SocketAddr>,
    listen: SocketAddr,
    json: bool,
) -> Outcome {
    let manifest = crate::files::read_job(manifest_path)?.manifest;
    let (mut launched, upstream) = match (tee, sim_platform.zip(store), enclave) {
        (TeeChoice::Sim, Some((platform, store)), _) => {
            let program = match enclave_bin {
                Some(path) => path,
                None => beside_this_program("sealtune-enclave")?,
            };
            let launched = launch_sim(&program, manifest_path, platform, store).await.map_err(Failure::input)?;
            let addr = launched.addr;
            (Some(launched), addr)
        }
        (TeeChoice::Snp | TeeChoice::Tdx, _, Some(addr)) => (None, addr),
        // clap requires the flag each choice needs.
        _ => return Err(Failure::input("--tee sim needs --sim-platform and --store; --tee snp|tdx needs --enclave")),
    };
    let (listener, local) = bind(listen).await?;
    crate::print_result(
        json,
        serde_json::json!({
            "listen": local.to_string(),
            "enclave": upstream.to_string(),
            "manifest_hash": hex::encode(manifest.hash()),
        }),
        format!("relaying {local} to the enclave at {upstream} (job {})", hex::encode(manifest.hash())),
    )?;
    match launched.as_mut() {
        Some(enclave) => tokio::select! {
            () = relay(listener, upstream) => Ok(()),
            status = enclave.exited() => match status {
                Ok(status) if status.success() => {
                    eprintln!("the enclave finished: every recipient has the outputs, and it dropped its keys and data");
                    Ok(())
                }
                Ok(status) => Err(Failure::rejected(format!("the enclave exited without delivering the outputs ({status}); see its log above"))),
                Err(e) => Err(Failure::rejected(format!("cannot wait for the enclave: {e}"))),
            },
        },
        None => {
            relay(listener, upstream).await;
            Ok(())
        }
    }
}

fn beside_this_program(name: &str) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::input(format!("cannot locate this program: {e}")))?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        return Err(Failure::input(format!("{} is missing; give --enclave-bin", path.display())));
    }
    Ok(path)
}
