//! The host's relay: clients reach the enclave through it, and it forwards
//! bytes both ways without terminating TLS, so it sees only TLS records. It
//! needs no trust: a relay that tampers, drops or redirects makes the
//! client's attestation or the TLS session fail.
//!
//! [`launch_sim`] starts `sealtune-enclave serve` on the simulated platform
//! and learns the enclave's port from its first line of output.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};

/// The enclave must accept the relay's connection within this time.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A launched enclave must report its address within this time (it hashes
/// its own executable and loads the platform first).
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the enclave could not be launched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The enclave program cannot be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The enclave exited or closed its output before reporting its address.
    #[error("the enclave exited before it listened ({0})")]
    Exited(String),
    /// The enclave reported nothing in time.
    #[error("the enclave did not report its address within {LAUNCH_TIMEOUT:?}")]
    Timeout,
    /// The first line of the enclave's output is not its address.
    #[error("the enclave's first line of output is not {{\"listen\": ADDR}}: {0}")]
    BadAnnouncement(String),
}

/// A running enclave process and the address it serves on. Dropping it
/// kills the process; if this process dies first, the enclave sees its
/// standard input close and stops.
pub struct LaunchedEnclave {
    child: tokio::process::Child,
    // Held apart from `child`: tokio closes a child's stdin when waiting on it.
    _lifeline: tokio::process::ChildStdin,
    /// Where it serves attested TLS.
    pub addr: SocketAddr,
}

impl LaunchedEnclave {
    /// Waits for the enclave process to exit.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Announcement {
    listen: SocketAddr,
}

/// Starts `enclave_bin serve` for the job file `manifest` on the simulated
/// platform in `sim_platform`, fetching its inputs from the blob store at
/// `store`, on a free loopback port, and waits for its address. Its standard
/// error (logs) goes to ours.
pub async fn launch_sim(enclave_bin: &Path, manifest: &Path, sim_platform: &Path, store: SocketAddr) -> Result<LaunchedEnclave, LaunchError> {
    let mut command = tokio::process::Command::new(enclave_bin);
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // A value the operator set is left as it is.
        command.env("GLIBC_TUNABLES", sealtune_enclave::MALLOC_TUNABLES);
    }
    let mut child = command
        .arg("serve")
        .arg("--manifest")
        .arg(manifest)
        .args(["--tee", "sim", "--listen", "127.0.0.1:0", "--stop-on-stdin-close"])
        .arg("--sim-platform")
        .arg(sim_platform)
        .arg("--store")
        .arg(store.to_string())
        // The pipe closes when this process ends, however it ends; the enclave then stops.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LaunchError::Spawn { program: enclave_bin.display().to_string(), source })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let lifeline = child.stdin.take().expect("stdin is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = match tokio::time::timeout(LAUNCH_TIMEOUT, lines.next_line()).await {
        Err(_) => return Err(LaunchError::Timeout),
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            return Err(LaunchError::Exited(status));
        }
        Ok(Err(e)) => return Err(LaunchError::Exited(e.to_string())),
    };
    let announcement: Announcement =
        serde_json::from_str(&line).map_err(|e| LaunchError::BadAnnouncement(e.to_string()))?;
    Ok(LaunchedEnclave { child, _lifeline: lifeline, addr: announcement.listen })
}

/// Relays every connection on `listener` to `upstream`, byte for byte, until
/// the task is dropped.
pub async fn relay(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Accept fails transiently (e.g. out of file descriptors); back off.
                tracing::warn!("relay: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut enclave = match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::warn!(%peer, "relay: cannot reach the enclave at {upstream}: {e}"),
                Err(_) => return tracing::warn!(%peer, "relay: the enclave at {upstream} did not accept in time"),
            };
            // Either side closing or failing ends the relayed connection; that is its normal end.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut enclave).await;
        });
    }
}
