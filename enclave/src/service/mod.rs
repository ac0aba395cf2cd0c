//! The enclave's network service: attested TLS sessions (`docs/formats/protocol.md`)
//! in front of the key release of one job.
//!
//! Each connection is a TLS 1.3 session on the enclave's self-signed
//! certificate ([`tls`]); its exporter value is bound into every piece of
//! evidence the session gets, so evidence is worth nothing on another
//! session. Requests run through the per-session state machine of
//! [`session`] against one shared state: the key release, the released
//! keys, the job's public status and, once the job is done, its outputs.
//!
//! The training pipeline drives the job through a [`ServiceHandle`]: it waits
//! for every grant the manifest requires, reports progress, and publishes the
//! outputs and the receipt. It pulls sealed corpora and the base model from
//! the host's store with [`blobs::fetch_blob`], which checks their SHA-256.
//!
//! What the untrusted host observes: TLS records (their sizes and timing)
//! and connection attempts. Nothing is logged that depends on private data.

pub mod blobs;
pub mod job;
pub mod session;
pub mod tls;

use crate::key_release::{KeyRelease, ReleasedKey};
use crate::tee::{Tee, TeeError};
use futures::{SinkExt, StreamExt};
use rustls::ServerConfig;
use sealtune_attestation::binding::{TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use sealtune_attestation::protocol::{OutputBlob, Phase, Request, Response, MAX_REQUEST_LEN, MAX_RESPONSE_LEN};
use sealtune_attestation::receipt::Receipt;
use session::{Exporter, Session, SessionError, Step};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// A TLS handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A session with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Sessions served at once; further connections wait to be accepted.
pub const MAX_SESSIONS: usize = 64;
/// How long a failed job still answers `status`, so that its clients learn
/// that it failed rather than find nothing listening.
pub const FAILED_LINGER: Duration = Duration::from_secs(60);

/// Why the service cannot start or a job step fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// Not every dataset of the manifest was granted before the deadline.
    #[error("only {granted} of the {required} datasets of the manifest were granted before the deadline")]
    GrantDeadline {
        /// Datasets with a released key.
        granted: usize,
        /// Datasets the manifest lists.
        required: usize,
    },
    /// The job is not in the phase the call needs.
    #[error("the job is in phase {}, not {}", .actual.name(), .expected)]
    WrongPhase {
        /// Where the job is.
        actual: Phase,
        /// Where the call needs it.
        expected: &'static str,
    },
    /// The receipt cannot be issued.
    #[error("cannot issue the receipt: {0}")]
    Receipt(#[from] TeeError),
}

/// Why one session ended abnormally. Never carries data from the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    /// The exporter value cannot be derived.
    #[error("TLS exporter: {0}")]
    Exporter(rustls::Error),
    /// Reading or writing a frame failed, or a frame was over the limit.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent nothing for too long.
    #[error("idle for {IDLE_TIMEOUT:?}")]
    Idle,
    /// A frame was not a request of this protocol.
    #[error("{0}")]
    Protocol(#[from] sealtune_attestation::protocol::ProtocolError),
    /// The session's state machine refused a request.
    #[error("{0}")]
    Session(#[from] SessionError),
}

/// The state every session and the pipeline share.
pub(crate) struct Shared<T: Tee> {
    key_release: KeyRelease<T>,
    required: usize,
    released: Vec<ReleasedKey>,
    phase: Phase,
    steps: u64,
    epsilon_spent: f64,
    outputs: Option<(Vec<OutputBlob>, Vec<u8>)>,
    /// Recipients that have been handed the outputs.
    delivered_to: Vec<[u8; 32]>,
}

impl<T: Tee> Shared<T> {
    /// Opens a grant while the job waits for grants; one key per dataset.
    fn accept_grant(&mut self, grant: &[u8]) -> Response {
        if self.phase != Phase::AwaitingGrants {
            return refused(format!("the job no longer accepts grants (phase {})", self.phase.name()));
        }
        let key = match self.key_release.accept(grant) {
            Ok(key) => key,
            Err(e) => return refused(e.to_string()),
        };
        if self.released.iter().any(|k| k.dataset == key.dataset) {
            return refused(format!("a key for dataset {} was already released", hex::encode(key.dataset)));
        }
        let dataset = key.dataset;
        self.released.push(key);
        Response::GrantAccepted { dataset }
    }
}

fn refused(reason: String) -> Response {
    Response::Refused { reason }
}

/// How a job's service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// Every recipient the manifest names was handed the outputs.
    Delivered,
    /// The job failed and published nothing.
    Failed,
}

/// The shared state behind its lock.
pub(crate) struct SharedState<T: Tee>(Mutex<Shared<T>>);

impl<T: Tee> SharedState<T> {
    fn lock(&self) -> MutexGuard<'_, Shared<T>> {
        // A panic while the state was held may have left it half-updated;
        // every later use panics too, so the service fails closed.
        self.0.lock().expect("enclave service state poisoned by an earlier panic")
    }
}

/// The service of one job, shared by every session and by the pipeline.
pub struct ServiceHandle<T: Tee> {
    state: Arc<SharedState<T>>,
    granted: Arc<Notify>,
    tls: Arc<ServerConfig>,
}

impl<T: Tee> Clone for ServiceHandle<T> {
    fn clone(&self) -> Self {
        ServiceHandle { state: Arc::clone(&self.state), granted: Arc::clone(&self.granted), tls: Arc::clone(&self.tls) }
    }
}

impl<T: Tee + Send + 'static> ServiceHandle<T> {
    /// A service for the job of `key_release`, waiting for grants.
    pub fn new(key_release: KeyRelease<T>) -> Result<Self, ServiceError> {
        let tls = tls::server_config(key_release.keys())?;
        let required = key_release.manifest().datasets.len();
        let shared = Shared {
            key_release,
            required,
            released: Vec::new(),
            phase: Phase::AwaitingGrants,
            steps: 0,
            epsilon_spent: 0.0,
            outputs: None,
            delivered_to: Vec::new(),
        };
        Ok(ServiceHandle { state: Arc::new(SharedState(Mutex::new(shared))), granted: Arc::new(Notify::new()), tls })
    }

    /// The TLS configuration sessions are served with.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.tls)
    }

    /// Waits until every dataset of the manifest has a released key, then
    /// hands the keys over and moves the job to [`Phase::Loading`]; later
    /// grants are refused. At the deadline the job fails instead.
    pub async fn wait_for_grants(&self, timeout: Duration) -> Result<Vec<ReleasedKey>, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let mut shared = self.state.lock();
                if shared.phase != Phase::AwaitingGrants {
                    return Err(ServiceError::WrongPhase { actual: shared.phase, expected: "awaiting_grants" });
                }
                if shared.released.len() == shared.required {
                    shared.phase = Phase::Loading;
                    return Ok(std::mem::take(&mut shared.released));
                }
            }
            // notify_one keeps a permit when no one waits, so a grant
            // accepted between the check above and this wait is not missed.
            if tokio::time::timeout_at(deadline, self.granted.notified()).await.is_err() {
                let mut shared = self.state.lock();
                shared.phase = Phase::Failed;
                return Err(ServiceError::GrantDeadline { granted: shared.released.len(), required: shared.required });
            }
        }
    }

    /// The job's manifest.
    pub fn manifest(&self) -> sealtune_attestation::manifest::JobManifest {
        self.state.lock().key_release.manifest().clone()
    }

    /// Marks the job failed: no outputs will come, and grants are refused.
    pub fn fail(&self) {
        let mut shared = self.state.lock();
        shared.phase = Phase::Failed;
        shared.released.clear();
    }

    /// Publishes public progress: the phase, DP-SGD steps done and ε spent.
    pub fn report_progress(&self, phase: Phase, steps: u64, epsilon_spent: f64) {
        let mut shared = self.state.lock();
        shared.phase = phase;
        shared.steps = steps;
        shared.epsilon_spent = epsilon_spent;
    }

    /// Signs `receipt` with the enclave's key and attaches fresh evidence that binds it.
    pub fn issue_receipt(&self, receipt: &Receipt) -> Result<Vec<u8>, ServiceError> {
        let shared = self.state.lock();
        Ok(crate::receipt::issue_receipt(receipt, shared.key_release.keys(), shared.key_release.tee())?)
    }

    /// Makes the outputs and the signed receipt available to clients and
    /// moves the job to [`Phase::Finished`].
    pub fn publish_outputs(&self, files: Vec<OutputBlob>, receipt: Vec<u8>) {
        let mut shared = self.state.lock();
        shared.phase = Phase::Finished;
        shared.outputs = Some((files, receipt));
    }

    /// Serves sessions on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        self.accept(listener, Arc::new(Semaphore::new(MAX_SESSIONS))).await
    }

    /// Serves sessions on `listener` until the job has ended: every
    /// recipient has been handed the outputs, or the job failed (then
    /// after [`FAILED_LINGER`]). It stops accepting, lets open sessions
    /// finish (at most [`IDLE_TIMEOUT`]), and says how the job ended.
    pub async fn serve_until_end(self, listener: TcpListener) -> JobEnd {
        let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
        let ended = async {
            let end = self.ended().await;
            if end == JobEnd::Failed {
                tokio::time::sleep(FAILED_LINGER).await;
            }
            end
        };
        let end = tokio::select! {
            () = self.clone().accept(listener, Arc::clone(&sessions)) => unreachable!("the accept loop only ends when dropped"),
            end = ended => end,
        };
        // A permit per open session: all of them back means every session closed.
        let _ = tokio::time::timeout(IDLE_TIMEOUT, sessions.acquire_many(MAX_SESSIONS as u32)).await;
        end
    }

    /// How the job has ended, if it has.
    pub fn end(&self) -> Option<JobEnd> {
        let shared = self.state.lock();
        let recipients = &shared.key_release.manifest().recipients;
        match shared.phase {
            Phase::Failed => Some(JobEnd::Failed),
            Phase::Finished if recipients.iter().all(|r| shared.delivered_to.contains(r)) => Some(JobEnd::Delivered),
            _ => None,
        }
    }

    async fn ended(&self) -> JobEnd {
        loop {
            if let Some(end) = self.end() {
                return end;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn accept(self, listener: TcpListener, sessions: Arc<Semaphore>) {
        loop {
            let Ok(permit) = Arc::clone(&sessions).acquire_owned().await else { return };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Accept fails transiently (e.g. out of file descriptors); back off.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handle = self.clone();
            tokio::spawn(async move {
                match handle.session(tcp).await {
                    Ok(()) => tracing::debug!(%peer, "session closed"),
                    Err(e) => tracing::info!(%peer, "session ended: {e}"),
                }
                drop(permit);
            });
        }
    }

    /// Runs one session to its end.
    async fn session(&self, tcp: TcpStream) -> Result<(), ConnectionError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls));
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(ConnectionError::Handshake)?;
        let exporter = tls
            .get_ref()
            .1
            .export_keying_material([0u8; TLS_EXPORTER_LEN], TLS_EXPORTER_LABEL, None)
            .map_err(ConnectionError::Exporter)?;
        let (reader, writer) = tokio::io::split(tls);
        let mut requests = FramedRead::new(reader, codec(MAX_REQUEST_LEN));
        let mut responses = FramedWrite::new(writer, codec(MAX_RESPONSE_LEN));
        let mut session = Session::new(Exporter::new(exporter));
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, requests.next()).await {
                Err(_) => return Err(ConnectionError::Idle),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return close(&mut responses, ConnectionError::Io(e)).await,
                Ok(Some(Ok(frame))) => frame,
            };
            let request = match Request::from_cbor(&frame) {
                Ok(request) => request,
                Err(e) => return close(&mut responses, e.into()).await,
            };
            match session.handle(request, &self.state) {
                Step::Continue(next, response) => {
                    if matches!(response, Response::GrantAccepted { .. }) {
                        // Wakes the job in `wait_for_grants` (or leaves it a permit).
                        self.granted.notify_one();
                    }
                    responses.send(Bytes::from(response.to_cbor())).await?;
                    session = next;
                }
                Step::Close(e) => return close(&mut responses, e.into()).await,
            }
        }
    }
}

type Responses = FramedWrite<tokio::io::WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>, LengthDelimitedCodec>;

/// Tells the client why the session ends, then closes it (TLS close_notify).
async fn close(responses: &mut Responses, error: ConnectionError) -> Result<(), ConnectionError> {
    let message = Response::Error { message: error.to_string() };
    // The session is over either way; a client that already left is not an error of its own.
    let _ = responses.send(Bytes::from(message.to_cbor())).await;
    let _ = SinkExt::<Bytes>::close(responses).await;
    Err(error)
}

/// Length-delimited frames (4-byte big-endian length) of at most `max` bytes.
pub fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(max).new_codec()
}
