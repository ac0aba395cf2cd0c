//! One client session as a state machine: a struct per state, each consuming
//! itself in `handle` and passing on only what the next state needs. A
//! message in the wrong state is a typed error that closes the session.
//!
//! ```text
//! AwaitingHello --hello--> Open --challenge--> Attested
//!                           |                    |  challenge, grant,
//!                           +- status, outputs   +- status, outputs
//! ```

use super::SharedState;
use crate::tee::{Tee, TeeError};
use sealtune_attestation::binding::{fetch_outputs_message, TLS_EXPORTER_LEN};
use sealtune_attestation::identity::verify_signature;
use sealtune_attestation::protocol::{Phase, Request, Response, PROTOCOL_VERSION};
use zeroize::Zeroizing;

/// This session's TLS exporter value. Evidence binds it; it stays in the
/// session and is wiped with it.
pub(crate) struct Exporter(Zeroizing<[u8; TLS_EXPORTER_LEN]>);

impl Exporter {
    pub(crate) fn new(value: [u8; TLS_EXPORTER_LEN]) -> Self {
        Exporter(Zeroizing::new(value))
    }
}

/// Why a session ends with an `error` message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client speaks another protocol version.
    #[error("unsupported protocol version {offered} (this enclave speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// What the client's hello said.
        offered: u32,
    },
    /// The message is not allowed in the session's state.
    #[error("unexpected {message} message {state}")]
    UnexpectedMessage {
        /// Where the session was.
        state: &'static str,
        /// The message received.
        message: &'static str,
    },
    /// The platform could not produce evidence.
    #[error("cannot produce evidence: {0}")]
    Attestation(#[from] TeeError),
    /// Outputs were requested by a key the manifest does not name as a recipient.
    #[error("{0} is not a recipient of this job's outputs")]
    NotRecipient(String),
    /// The recipient's signature does not cover this session.
    #[error("the recipient's signature does not verify for this session")]
    BadRecipientSignature,
    /// Outputs were requested before the job finished.
    #[error("the outputs are not ready: the job is in phase {}", .0.name())]
    OutputsNotReady(Phase),
}

/// What the connection does after a message.
pub(crate) enum Step {
    /// Send the response and read the next message in this state.
    Continue(Session, Response),
    /// Send the error and close the session.
    Close(SessionError),
}

/// Waiting for the client's hello; nothing else is answered.
pub(crate) struct AwaitingHello {
    exporter: Exporter,
}

/// The versions agree; the client has not challenged the enclave on this session yet.
pub(crate) struct Open {
    exporter: Exporter,
}

/// The enclave answered a challenge on this session, so grants may follow.
pub(crate) struct Attested {
    exporter: Exporter,
}

/// A session in one of its states.
pub(crate) enum Session {
    AwaitingHello(AwaitingHello),
    Open(Open),
    Attested(Attested),
}

impl Session {
    /// A session whose TLS handshake just completed.
    pub(crate) fn new(exporter: Exporter) -> Self {
        Session::AwaitingHello(AwaitingHello { exporter })
    }

    pub(crate) fn handle<T: Tee>(self, request: Request, state: &SharedState<T>) -> Step {
        let result = match self {
            Session::AwaitingHello(s) => s.handle(request),
            Session::Open(s) => s.handle(request, state),
            Session::Attested(s) => s.handle(request, state),
        };
        match result {
            Ok((next, response)) => Step::Continue(next, response),
            Err(e) => Step::Close(e),
        }
    }
}

type Handled = Result<(Session, Response), SessionError>;

impl AwaitingHello {
    fn handle(self, request: Request) -> Handled {
        match request {
            Request::Hello { version: PROTOCOL_VERSION } => {
                Ok((Session::Open(Open { exporter: self.exporter }), Response::Hello { version: PROTOCOL_VERSION }))
            }
            Request::Hello { version } => Err(SessionError::UnsupportedVersion { offered: version }),
            other => Err(SessionError::UnexpectedMessage { state: "before hello", message: other.name() }),
        }
    }
}

impl Open {
    fn handle<T: Tee>(self, request: Request, state: &SharedState<T>) -> Handled {
        match request {
            Request::Challenge { nonce } => {
                let response = challenge(&self.exporter, &nonce, state)?;
                Ok((Session::Attested(Attested { exporter: self.exporter }), response))
            }
            Request::Status => Ok((Session::Open(self), status(state))),
            Request::FetchOutputs { recipient, signature } => {
                let response = outputs(&self.exporter, &recipient, &signature, state)?;
                Ok((Session::Open(self), response))
            }
            other => Err(SessionError::UnexpectedMessage { state: "before a challenge", message: other.name() }),
        }
    }
}

impl Attested {
    fn handle<T: Tee>(self, request: Request, state: &SharedState<T>) -> Handled {
        let response = match request {
            Request::Challenge { nonce } => challenge(&self.exporter, &nonce, state)?,
            Request::Grant { grant } => state.lock().accept_grant(&grant),
            Request::Status => status(state),
            Request::FetchOutputs { recipient, signature } => outputs(&self.exporter, &recipient, &signature, state)?,
            other @ Request::Hello { .. } => {
                return Err(SessionError::UnexpectedMessage { state: "after hello", message: other.name() })
            }
        };
        Ok((Session::Attested(self), response))
    }
}

fn challenge<T: Tee>(exporter: &Exporter, nonce: &[u8; 32], state: &SharedState<T>) -> Result<Response, SessionError> {
    let evidence = state.lock().key_release.challenge_session(&exporter.0, nonce)?;
    Ok(Response::Evidence { evidence: evidence.to_cbor() })
}

fn status<T: Tee>(state: &SharedState<T>) -> Response {
    let shared = state.lock();
    Response::Status { phase: shared.phase, steps: shared.steps, epsilon_spent: shared.epsilon_spent }
}

/// The outputs, for a recipient of the manifest who signed this session's exporter.
fn outputs<T: Tee>(
    exporter: &Exporter,
    recipient: &[u8; 32],
    signature: &[u8; 64],
    state: &SharedState<T>,
) -> Result<Response, SessionError> {
    let mut shared = state.lock();
    if !shared.key_release.manifest().recipients.iter().any(|r| **r == *recipient) {
        return Err(SessionError::NotRecipient(hex::encode(recipient)));
    }
    if !verify_signature(recipient, &fetch_outputs_message(&exporter.0), signature) {
        return Err(SessionError::BadRecipientSignature);
    }
    let response = match &shared.outputs {
        Some((files, receipt)) => Response::Outputs { files: files.clone(), receipt: receipt.clone() },
        None => return Err(SessionError::OutputsNotReady(shared.phase)),
    };
    if !shared.delivered_to.contains(recipient) {
        shared.delivered_to.push(*recipient);
    }
    Ok(response)
}
