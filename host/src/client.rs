//! The client side of attested TLS: connect to the enclave (directly or
//! through the host's relay), verify its evidence for *this* TLS session,
//! and only then send grants or read status and outputs.
//!
//! The TLS layer accepts the enclave's self-signed certificate without web
//! PKI ([`tls_config`]); trust comes from the evidence. [`connect`] checks,
//! in order: the evidence against the policy; that the certificate's key is
//! the attested signing key; that HOST_DATA is the expected manifest; that
//! REPORT_DATA binds this session's TLS exporter and the client's fresh
//! nonce. An [`AttestedSession`] exists only once all of these passed.

use futures::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sealtune_attestation::binding::{attested_tls_report_data, fetch_outputs_message, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use sealtune_attestation::evidence::{Evidence, EvidenceError};
use sealtune_attestation::grant::{make_grant, GrantError};
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::manifest::JobManifest;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::{
    OutputBlob, Phase, ProtocolError, Request, Response, MAX_RESPONSE_LEN, PROTOCOL_VERSION, TLS_SERVER_NAME,
};
use sealtune_attestation::verify::{verify_report, BoundEvidence, VerifyError};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Connecting and the TLS handshake must finish within this time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The enclave must answer a request within this time.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// OID 1.3.101.112, id-Ed25519 (RFC 8410).
const ED25519_OID: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why a session with the enclave failed. Each check has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting or the handshake took too long.
    #[error("connecting to {0} timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(String),
    /// The TLS handshake failed (including a certificate that is not a bare Ed25519 key).
    #[error("TLS handshake with the enclave failed: {0}")]
    Handshake(std::io::Error),
    /// The peer's certificate cannot be read after the handshake.
    #[error("the enclave's TLS certificate is unusable: {0}")]
    Certificate(String),
    /// The TLS exporter cannot be derived.
    #[error("TLS exporter: {0}")]
    Exporter(rustls::Error),
    /// Reading or writing a frame failed, or an answer was over the size limit.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// The enclave closed the session before answering.
    #[error("the enclave closed the session")]
    Closed,
    /// The enclave did not answer in time.
    #[error("no answer from the enclave within {ANSWER_TIMEOUT:?}")]
    Timeout,
    /// The answer is not a message of this protocol.
    #[error("the enclave's answer is not a protocol message: {0}")]
    Protocol(#[from] ProtocolError),
    /// The enclave speaks another protocol version.
    #[error("the enclave speaks protocol version {theirs}; this client speaks version {PROTOCOL_VERSION}")]
    VersionMismatch {
        /// The enclave's version.
        theirs: u32,
    },
    /// The enclave answered with an error and closed the session.
    #[error("the enclave refused the request: {0}")]
    Remote(String),
    /// The enclave answered with another message than the request calls for.
    #[error("expected a {expected} message, the enclave sent {got}")]
    Unexpected {
        /// What the request calls for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The evidence document cannot be read.
    #[error("evidence: {0}")]
    Evidence(#[from] EvidenceError),
    /// The evidence fails the policy, or binds another manifest.
    #[error("evidence: {0}")]
    Verify(VerifyError),
    /// The TLS peer's key is not the key the evidence attests: another
    /// endpoint terminates this session and relays the enclave's evidence.
    #[error("the TLS peer's key {peer} is not the attested signing key {attested}: the session does not end in the attested enclave")]
    PeerKeyNotAttested {
        /// The certificate's key, hex.
        peer: String,
        /// The evidence's signing key, hex.
        attested: String,
    },
    /// REPORT_DATA does not bind this session's exporter and this nonce.
    #[error("the evidence is not bound to this TLS session and nonce: it was obtained on another session (relayed) or for another challenge")]
    EvidenceNotForThisSession,
    /// The grant cannot be made (terms, manifest or owner checks).
    #[error("cannot make the grant: {0}")]
    Grant(#[from] GrantError),
    /// The enclave refused the grant.
    #[error("the enclave refused the grant: {0}")]
    GrantRefused(String),
    /// The enclave confirmed a grant for another dataset than the one sent.
    #[error("the enclave confirmed dataset {got}, not the granted {sent}")]
    GrantConfirmation {
        /// The dataset granted, hex.
        sent: String,
        /// The dataset confirmed, hex.
        got: String,
    },
}

/// The job's public status.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct JobStatus {
    /// Where the job stands.
    pub phase: Phase,
    /// DP-SGD steps done.
    pub steps: u64,
    /// ε spent so far.
    pub epsilon_spent: f64,
}

/// The outputs of a finished job, as received (verify the receipt offline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutputs {
    /// The adapter files.
    pub files: Vec<OutputBlob>,
    /// The encoded `SignedReceipt`.
    pub receipt: Vec<u8>,
}

/// Accepts the enclave's self-signed certificate if it holds a bare Ed25519
/// key, and checks the handshake signature against that key. It proves
/// nothing about who holds the key: [`connect`] compares it with the
/// attested key before the session is used.
#[derive(Debug)]
struct SelfSignedEd25519 {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SelfSignedEd25519 {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let invalid = |reason: &str| rustls::Error::General(format!("enclave certificate: {reason}"));
        if !intermediates.is_empty() {
            return Err(invalid("a chain was sent; the enclave's certificate is self-signed"));
        }
        ed25519_key(end_entity).map_err(|e| invalid(&e))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The Ed25519 key of a certificate (SubjectPublicKeyInfo with id-Ed25519).
fn ed25519_key(cert: &CertificateDer<'_>) -> Result<[u8; 32], String> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != ED25519_OID || spki.algorithm.parameters.is_some() {
        return Err(format!("its key is not Ed25519 (algorithm {})", spki.algorithm.oid));
    }
    spki.subject_public_key
        .as_bytes()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| "its Ed25519 key is not 32 bytes".to_string())
}

/// The TLS client configuration of attested sessions: TLS 1.3 only, ring's
/// algorithms, the enclave's self-signed Ed25519 certificate accepted as is.
/// A session on this configuration proves nothing until its evidence is
/// checked: use [`connect`], which does.
pub fn tls_config() -> Arc<ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let verifier = SelfSignedEd25519 { algorithms: provider.signature_verification_algorithms };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

type Transport = Framed<TlsStream<TcpStream>, LengthDelimitedCodec>;

/// A TLS session whose far end is proven to be the attested enclave running
/// the expected job.
pub struct AttestedSession {
    transport: Transport,
    evidence: BoundEvidence,
    exporter: [u8; TLS_EXPORTER_LEN],
}

/// Connects to the enclave at `addr`, checks its evidence for this session
/// against `policy` and `manifest`, and returns the attested session.
pub async fn connect<A: ToSocketAddrs + Display>(
    addr: A,
    policy: &Policy,
    manifest: &JobManifest,
) -> Result<AttestedSession, ClientError> {
    let name = addr.to_string();
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr: name.clone(), source })?;
        let server_name = ServerName::try_from(TLS_SERVER_NAME).expect("a valid DNS name");
        tokio_rustls::TlsConnector::from(tls_config()).connect(server_name, tcp).await.map_err(ClientError::Handshake)
    })
    .await
    .map_err(|_| ClientError::ConnectTimeout(name))??;

    let (_, conn) = tls.get_ref();
    let exporter = conn
        .export_keying_material([0u8; TLS_EXPORTER_LEN], TLS_EXPORTER_LABEL, None)
        .map_err(ClientError::Exporter)?;
    let peer_key = match conn.peer_certificates() {
        Some([cert]) => ed25519_key(cert).map_err(ClientError::Certificate)?,
        _ => return Err(ClientError::Certificate("expected exactly one certificate".into())),
    };

    let mut transport = Framed::new(tls, crate::frames(MAX_RESPONSE_LEN));
    match exchange(&mut transport, Request::Hello { version: PROTOCOL_VERSION }).await? {
        Response::Hello { version: PROTOCOL_VERSION } => {}
        Response::Hello { version } => return Err(ClientError::VersionMismatch { theirs: version }),
        other => return Err(ClientError::Unexpected { expected: "hello", got: other.name() }),
    }

    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let evidence = match exchange(&mut transport, Request::Challenge { nonce }).await? {
        Response::Evidence { evidence } => Evidence::from_cbor(&evidence)?,
        other => return Err(ClientError::Unexpected { expected: "evidence", got: other.name() }),
    };
    let evidence = check_evidence(&evidence, policy, manifest, &peer_key, &exporter, &nonce)?;
    Ok(AttestedSession { transport, evidence, exporter })
}

/// The checks of [`connect`] on evidence received on a session with TLS
/// peer key `peer_key` and exporter value `exporter`, for challenge `nonce`.
fn check_evidence(
    evidence: &Evidence,
    policy: &Policy,
    manifest: &JobManifest,
    peer_key: &[u8; 32],
    exporter: &[u8; TLS_EXPORTER_LEN],
    nonce: &[u8; 32],
) -> Result<BoundEvidence, ClientError> {
    let verified = verify_report(evidence, policy, time::OffsetDateTime::now_utc()).map_err(ClientError::Verify)?;
    if *peer_key != evidence.keys.signing {
        return Err(ClientError::PeerKeyNotAttested {
            peer: hex::encode(peer_key),
            attested: hex::encode(evidence.keys.signing),
        });
    }
    let manifest_hash = manifest.hash();
    let expected = attested_tls_report_data(exporter, nonce, &evidence.keys, &manifest_hash);
    verified.bind(evidence, &manifest_hash, &expected).map_err(|e| match e {
        VerifyError::ReportDataMismatch => ClientError::EvidenceNotForThisSession,
        other => ClientError::Verify(other),
    })
}

/// Sends one request and reads its answer; an `error` answer becomes [`ClientError::Remote`].
async fn exchange(transport: &mut Transport, request: Request) -> Result<Response, ClientError> {
    transport.send(Bytes::from(request.to_cbor())).await?;
    let frame = tokio::time::timeout(ANSWER_TIMEOUT, transport.next())
        .await
        .map_err(|_| ClientError::Timeout)?
        .ok_or(ClientError::Closed)??;
    match Response::from_cbor(&frame)? {
        Response::Error { message } => Err(ClientError::Remote(message)),
        response => Ok(response),
    }
}

impl AttestedSession {
    /// The verified evidence of this session.
    pub fn evidence(&self) -> &BoundEvidence {
        &self.evidence
    }

    /// Makes a grant of `dek` for `dataset` to this session's enclave (after
    /// checking the job's terms against `policy`) and sends it.
    pub async fn grant(
        &mut self,
        manifest: &JobManifest,
        policy: &Policy,
        dataset: &[u8; 32],
        dek: &[u8; 32],
        owner: &IdentityKey,
    ) -> Result<(), ClientError> {
        let grant = make_grant(&self.evidence, manifest, policy, dataset, dek, owner)?;
        match exchange(&mut self.transport, Request::Grant { grant }).await? {
            Response::GrantAccepted { dataset: confirmed } if confirmed == *dataset => Ok(()),
            Response::GrantAccepted { dataset: confirmed } => {
                Err(ClientError::GrantConfirmation { sent: hex::encode(dataset), got: hex::encode(confirmed) })
            }
            Response::Refused { reason } => Err(ClientError::GrantRefused(reason)),
            other => Err(ClientError::Unexpected { expected: "grant_accepted", got: other.name() }),
        }
    }

    /// The job's public status.
    pub async fn status(&mut self) -> Result<JobStatus, ClientError> {
        match exchange(&mut self.transport, Request::Status).await? {
            Response::Status { phase, steps, epsilon_spent } => Ok(JobStatus { phase, steps, epsilon_spent }),
            other => Err(ClientError::Unexpected { expected: "status", got: other.name() }),
        }
    }

    /// The outputs and receipt of the finished job, for `recipient`, one of
    /// the manifest's recipients (it signs this session's exporter value).
    pub async fn fetch_outputs(&mut self, recipient: &IdentityKey) -> Result<JobOutputs, ClientError> {
        let signature = recipient.sign(&fetch_outputs_message(&self.exporter));
        let request = Request::FetchOutputs { recipient: recipient.public(), signature };
        match exchange(&mut self.transport, request).await? {
            Response::Outputs { files, receipt } => Ok(JobOutputs { files, receipt }),
            other => Err(ClientError::Unexpected { expected: "outputs", got: other.name() }),
        }
    }

    /// Ends the session (TLS close_notify).
    pub async fn close(mut self) -> Result<(), ClientError> {
        Ok(SinkExt::<Bytes>::close(&mut self.transport).await?)
    }
}
