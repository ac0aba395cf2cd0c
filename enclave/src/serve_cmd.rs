//! `sealtune-enclave serve`: the enclave service on a TCP port, and the job's
//! training pipeline behind it. It prints `{"listen": "ADDR"}` on one line of
//! standard output once it accepts connections, so a launcher that asked for
//! port 0 learns the port. After the job ends (finished or failed) it keeps
//! serving status and outputs.

use clap::{Parser, ValueEnum};
use sealtune_attestation::evidence::TeeKind;
use sealtune_attestation::manifest::{JobManifest, SignedManifest};
use sealtune_enclave::key_release::KeyRelease;
use sealtune_enclave::measurement::own_measurement;
use sealtune_enclave::service::job::{run_job, JobContext};
use sealtune_enclave::service::{JobEnd, ServiceHandle};
use sealtune_enclave::tee::configfs::DEFAULT_REPORT_ROOT;
use sealtune_enclave::tee::Hardware;
use sealtune_enclave::tee::launch::check_launch;
use sealtune_enclave::tee::sim::{SimLaunch, SimPlatform, SimTee};
use sealtune_enclave::tee::Tee;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The platforms this build can attest on.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TeeChoice {
    /// sealtune's simulated SEV-SNP platform (development only).
    Sim,
    /// An AMD SEV-SNP guest, through Linux configfs-tsm (or /dev/sev-guest without it).
    Snp,
    /// An Intel TDX guest, through Linux configfs-tsm.
    Tdx,
}

#[derive(Parser)]
pub(crate) struct Args {
    /// The vendor-signed job file the enclave is launched with (the manifest's hash becomes HOST_DATA).
    #[arg(long)]
    manifest: PathBuf,
    /// The host's blob store, where the base model and the sealed corpora are fetched from by SHA-256.
    #[arg(long)]
    store: SocketAddr,
    /// Seconds to wait for every dataset's grant before the job fails.
    #[arg(long, default_value_t = 3600)]
    grant_deadline: u64,
    /// The platform to attest on.
    #[arg(long, value_enum, default_value = "sim")]
    tee: TeeChoice,
    /// With --tee sim: the simulated platform directory (`sealtune sim init`).
    #[arg(long, required_if_eq("tee", "sim"))]
    sim_platform: Option<PathBuf>,
    /// With --tee snp|tdx: the configfs-tsm report directory; if it does not
    /// exist, --tee snp uses /dev/sev-guest.
    #[arg(long, default_value = DEFAULT_REPORT_ROOT)]
    configfs: PathBuf,
    /// Address to serve attested TLS on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Exit when standard input closes: a launcher keeps a pipe open, so the
    /// enclave does not outlive it even when it is killed.
    #[arg(long)]
    stop_on_stdin_close: bool,
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    // Logs go to standard error; nothing logged depends on private data.
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let manifest_bytes = std::fs::read(&args.manifest).map_err(|e| format!("{}: {e}", args.manifest.display()))?;
    let manifest = SignedManifest::open(&manifest_bytes).map_err(|e| format!("{}: {e}", args.manifest.display()))?.manifest;
    match (args.tee, &args.sim_platform) {
        (TeeChoice::Sim, Some(dir)) => {
            let platform = SimPlatform::load(dir).map_err(|e| e.to_string())?;
            let measurement = own_measurement().map_err(|e| format!("cannot measure this executable: {e}"))?;
            let tee = SimTee::launch(platform, SimLaunch::new(measurement, manifest.hash()));
            serve(args, manifest, tee, measurement, true)
        }
        (TeeChoice::Snp | TeeChoice::Tdx, _) => {
            let kind = if matches!(args.tee, TeeChoice::Snp) { TeeKind::SevSnp } else { TeeKind::Tdx };
            let tee = Hardware::select(kind, &args.configfs).map_err(|e| e.to_string())?;
            let measurement = check_launch(&tee, kind, &manifest.hash()).map_err(|e| e.to_string())?;
            serve(args, manifest, tee, measurement, false)
        }
        // clap requires --sim-platform with --tee sim.
        (TeeChoice::Sim, None) => Err("--tee sim needs --sim-platform".into()),
    }
}

/// Serves the job on `tee` until every recipient has its outputs (exit 0),
/// the job failed (exit 1, after `service::FAILED_LINGER`) or it is stopped.
fn serve<T: Tee + Send + 'static>(args: Args, manifest: JobManifest, tee: T, measurement: [u8; 48], simulated: bool) -> Result<(), String> {
    let service = ServiceHandle::new(KeyRelease::new(manifest, tee)).map_err(|e| e.to_string())?;
    let context = JobContext {
        store: args.store,
        grant_deadline: Duration::from_secs(args.grant_deadline),
        measurement,
        simulated,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", serde_json::json!({ "listen": local.to_string() }))
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to standard output: {e}"))?;
        drop(stdout);
        let job = service.clone();
        tokio::spawn(async move {
            if let Err(e) = run_job(job, context).await {
                tracing::error!("job failed: {e}");
            }
        });
        let end = if args.stop_on_stdin_close {
            tokio::select! {
                end = service.serve_until_end(listener) => end,
                () = stdin_closed() => return Err("standard input closed; stopped before the job ended".to_string()),
            }
        } else {
            service.serve_until_end(listener).await
        };
        match end {
            JobEnd::Delivered => Ok(()),
            JobEnd::Failed => Err("the job failed; nothing was published".to_string()),
        }
    });
    // Shutting the runtime down drops every task and with them the released
    // DEKs and the decrypted corpora (zeroized on drop) before the process
    // exits. The timeout: the blocking read of standard input never returns
    // while the launcher holds the pipe, and a plain drop would wait for it.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Returns once standard input reaches its end (or fails).
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
