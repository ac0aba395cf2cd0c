//! Attested TLS end to end on real sockets: client ↔ relay ↔ enclave
//! service on the simulated platform, and the attacks the session binding
//! stops (evidence relayed from another TLS session, a TLS peer holding
//! another key), plus the session state machine seen from the wire.

use futures::{SinkExt, StreamExt};
use sealtune_attestation::grant::make_grant;
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::manifest::JobManifest;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::{
    OutputBlob, Phase, Request, Response, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, PROTOCOL_VERSION, TLS_SERVER_NAME,
};
use sealtune_attestation::verify::VerifyError;
use sealtune_enclave::key_release::KeyRelease;
use sealtune_enclave::keys::EnclaveKeys;
use sealtune_enclave::service::{codec, tls, ServiceError, ServiceHandle};
use sealtune_enclave::tee::sim::{SimLaunch, SimTee};
use sealtune_host::client::{connect, tls_config, ClientError, JobStatus};
use sealtune_tests::fixtures::{manifest, owner_policy, sim_platform, vendor, MEASUREMENT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::Bytes;
use tokio_util::codec::Framed;

struct Job {
    owner: IdentityKey,
    dataset: [u8; 32],
    manifest: JobManifest,
    service: ServiceHandle<SimTee>,
    enclave: SocketAddr,
}

/// An enclave service for a one-dataset job, serving on an ephemeral port.
async fn start_job() -> Job {
    let owner = IdentityKey::generate();
    let dataset = [0xda; 32];
    let manifest = manifest(&[(dataset, owner.public())]);
    let tee = SimTee::launch(sim_platform(), SimLaunch::new(MEASUREMENT, manifest.hash()));
    let service = ServiceHandle::new(KeyRelease::new(manifest.clone(), tee)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let enclave = listener.local_addr().unwrap();
    tokio::spawn(service.clone().serve(listener));
    Job { owner, dataset, manifest, service, enclave }
}

/// The host's relay in front of `upstream`.
async fn start_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sealtune_host::relay::relay(listener, upstream));
    addr
}

/// A man in the middle: terminates the victim's TLS with `identity`, opens
/// its own TLS session to the enclave, and copies the plaintext both ways.
async fn start_mitm(identity: Arc<rustls::ServerConfig>, enclave: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&identity));
            tokio::spawn(async move {
                let Ok(mut victim) = acceptor.accept(tcp).await else { return };
                let mut upstream = raw_tls(enclave).await;
                let _ = tokio::io::copy_bidirectional(&mut victim, &mut upstream).await;
            });
        }
    });
    addr
}

async fn raw_tls(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(TLS_SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await.unwrap()
}

type RawSession = Framed<tokio_rustls::client::TlsStream<TcpStream>, tokio_util::codec::LengthDelimitedCodec>;

/// A TLS session to the enclave that speaks raw frames and attests nothing.
async fn raw_session(addr: SocketAddr) -> RawSession {
    Framed::new(raw_tls(addr).await, codec(MAX_RESPONSE_LEN))
}

async fn send_raw(session: &mut RawSession, frame: Vec<u8>) -> Option<Response> {
    session.send(Bytes::from(frame)).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), session.next()).await.unwrap()?.ok()?;
    Some(Response::from_cbor(&frame).unwrap())
}

async fn closed(session: &mut RawSession) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(10), session.next()).await.unwrap(), None | Some(Err(_)))
}

fn error_message(response: Option<Response>) -> String {
    match response {
        Some(Response::Error { message }) => message,
        other => panic!("expected an error message, got {other:?}"),
    }
}

#[tokio::test]
async fn owner_attests_grants_and_reads_status_through_the_relay() {
    let job = start_job().await;
    let relay = start_relay(job.enclave).await;
    let policy = owner_policy();

    let mut session = connect(relay, &policy, &job.manifest).await.unwrap();
    assert!(session.evidence().claims.simulated);
    assert_eq!(session.evidence().manifest_hash, job.manifest.hash());
    let status = session.status().await.unwrap();
    assert_eq!(status, JobStatus { phase: Phase::AwaitingGrants, steps: 0, epsilon_spent: 0.0 });

    let dek = [0x42; 32];
    session.grant(&job.manifest, &policy, &job.dataset, &dek, &job.owner).await.unwrap();
    // One key per dataset: a second grant is refused, and the session goes on.
    let err = session.grant(&job.manifest, &policy, &job.dataset, &dek, &job.owner).await.unwrap_err();
    assert!(matches!(&err, ClientError::GrantRefused(r) if r.contains("already released")), "{err}");

    let keys = job.service.wait_for_grants(Duration::from_secs(5)).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].dataset, *keys[0].dek), (job.dataset, dek));
    assert_eq!(session.status().await.unwrap().phase, Phase::Loading);

    // Progress is what the pipeline reports, nothing else.
    job.service.report_progress(Phase::Training, 7, 0.25);
    assert_eq!(session.status().await.unwrap(), JobStatus { phase: Phase::Training, steps: 7, epsilon_spent: 0.25 });
    // Outputs before the job finished: an error, and the enclave closes the session.
    let err = session.fetch_outputs(vendor()).await.unwrap_err();
    assert!(matches!(&err, ClientError::Remote(m) if m.contains("not ready") && m.contains("training")), "{err}");

    let files = vec![OutputBlob { name: "adapter_model.safetensors".into(), bytes: vec![1, 2, 3] }];
    job.service.publish_outputs(files.clone(), vec![9, 9]);
    let mut vendor = connect(relay, &policy, &job.manifest).await.unwrap();
    let outputs = vendor.fetch_outputs(sealtune_tests::fixtures::vendor()).await.unwrap();
    assert_eq!((outputs.files, outputs.receipt), (files, vec![9, 9]));
    assert_eq!(vendor.status().await.unwrap().phase, Phase::Finished);
    vendor.close().await.unwrap();
}

#[tokio::test]
async fn evidence_relayed_from_another_session_is_refused() {
    // The relay holds the enclave's own certificate and key (the strongest
    // relay there is), so the key check passes; the evidence it forwards was
    // produced for its own session with the enclave, not the victim's.
    let job = start_job().await;
    let mitm = start_mitm(job.service.tls_config(), job.enclave).await;
    let err = connect(mitm, &owner_policy(), &job.manifest).await.err().unwrap();
    assert!(matches!(err, ClientError::EvidenceNotForThisSession), "{err}");
    assert!(err.to_string().contains("another session"), "{err}");
}

#[tokio::test]
async fn a_tls_peer_with_another_key_is_refused() {
    let job = start_job().await;
    let impostor = tls::server_config(&EnclaveKeys::generate()).unwrap();
    let mitm = start_mitm(impostor, job.enclave).await;
    let err = connect(mitm, &owner_policy(), &job.manifest).await.err().unwrap();
    assert!(matches!(err, ClientError::PeerKeyNotAttested { .. }), "{err}");
}

#[tokio::test]
async fn policy_and_manifest_are_checked_on_the_session() {
    let job = start_job().await;
    let production = Policy { allow_simulated: false, ..owner_policy() };
    let err = connect(job.enclave, &production, &job.manifest).await.err().unwrap();
    assert!(matches!(err, ClientError::Verify(VerifyError::SimulatedNotAllowed)), "{err}");

    let mut other = job.manifest.clone();
    other.job_id = "another job".into();
    let err = connect(job.enclave, &owner_policy(), &other).await.err().unwrap();
    assert!(matches!(err, ClientError::Verify(VerifyError::ManifestMismatch { .. })), "{err}");
}

#[tokio::test]
async fn the_session_state_machine_refuses_out_of_order_messages() {
    let job = start_job().await;
    let hello = Request::Hello { version: PROTOCOL_VERSION }.to_cbor();

    // Anything before hello.
    let mut s = raw_session(job.enclave).await;
    let message = error_message(send_raw(&mut s, Request::Status.to_cbor()).await);
    assert_eq!(message, "unexpected status message before hello");
    assert!(closed(&mut s).await);

    // Another protocol version.
    let mut s = raw_session(job.enclave).await;
    let future = PROTOCOL_VERSION + 1;
    let message = error_message(send_raw(&mut s, Request::Hello { version: future }.to_cbor()).await);
    assert!(message.contains(&format!("unsupported protocol version {future}")), "{message}");
    assert!(closed(&mut s).await);

    // A grant before a challenge on this session.
    let mut s = raw_session(job.enclave).await;
    assert_eq!(send_raw(&mut s, hello.clone()).await, Some(Response::Hello { version: PROTOCOL_VERSION }));
    let message = error_message(send_raw(&mut s, Request::Grant { grant: vec![0; 8] }.to_cbor()).await);
    assert_eq!(message, "unexpected grant message before a challenge");
    assert!(closed(&mut s).await);

    // A second hello.
    let mut s = raw_session(job.enclave).await;
    send_raw(&mut s, hello.clone()).await.unwrap();
    assert!(matches!(send_raw(&mut s, Request::Challenge { nonce: [1; 32] }.to_cbor()).await, Some(Response::Evidence { .. })));
    let message = error_message(send_raw(&mut s, hello.clone()).await);
    assert_eq!(message, "unexpected hello message after hello");

    // An unknown message, and a malformed one.
    let mut s = raw_session(job.enclave).await;
    send_raw(&mut s, hello.clone()).await.unwrap();
    let message = error_message(send_raw(&mut s, hex("665265626f6f74")).await);
    assert!(message.contains("unknown message \"Reboot\""), "{message}");
    let mut s = raw_session(job.enclave).await;
    send_raw(&mut s, hello.clone()).await.unwrap();
    let message = error_message(send_raw(&mut s, hex("a1696368616c6c656e6765a1656e6f6e636542abab")).await);
    assert!(message.contains("malformed challenge message"), "{message}");

    // A frame over the request limit is refused before it is read.
    let mut s = raw_session(job.enclave).await;
    let message = error_message(send_raw(&mut s, vec![0; MAX_REQUEST_LEN + 1]).await);
    assert!(message.contains("frame size too big"), "{message}");
    assert!(closed(&mut s).await);

    // None of this released anything or moved the job.
    assert_eq!(job.service.wait_for_grants(Duration::from_millis(10)).await.err().map(|e| e.to_string()),
        Some("only 0 of the 1 datasets of the manifest were granted before the deadline".to_string()));
}

#[tokio::test]
async fn a_grant_replayed_to_a_second_enclave_of_the_same_job_is_refused() {
    let job = start_job().await;
    // The operator launches a twin of the enclave for the same manifest.
    let tee = SimTee::launch(sim_platform(), SimLaunch::new(MEASUREMENT, job.manifest.hash()));
    let twin = ServiceHandle::new(KeyRelease::new(job.manifest.clone(), tee)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin_addr = listener.local_addr().unwrap();
    tokio::spawn(twin.clone().serve(listener));

    // The owner's grant, made for the first enclave's attested session...
    let session = connect(job.enclave, &owner_policy(), &job.manifest).await.unwrap();
    let grant = make_grant(session.evidence(), &job.manifest, &owner_policy(), &job.dataset, &[0x42; 32], &job.owner).unwrap();
    // ...sent by the operator to the twin, on an attested session of its own.
    let mut s = raw_session(twin_addr).await;
    send_raw(&mut s, Request::Hello { version: PROTOCOL_VERSION }.to_cbor()).await.unwrap();
    assert!(matches!(send_raw(&mut s, Request::Challenge { nonce: [3; 32] }.to_cbor()).await, Some(Response::Evidence { .. })));
    match send_raw(&mut s, Request::Grant { grant }.to_cbor()).await {
        Some(Response::Refused { reason }) => assert!(reason.contains("another enclave"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(twin.wait_for_grants(Duration::from_millis(10)).await.is_err(), "the twin released nothing");
}

#[tokio::test]
async fn after_the_grant_deadline_the_job_fails_and_refuses_grants() {
    let job = start_job().await;
    let err = job.service.wait_for_grants(Duration::from_millis(50)).await.err().unwrap();
    assert!(matches!(err, ServiceError::GrantDeadline { granted: 0, required: 1 }), "{err}");

    let mut session = connect(job.enclave, &owner_policy(), &job.manifest).await.unwrap();
    assert_eq!(session.status().await.unwrap().phase, Phase::Failed);
    let err = session.grant(&job.manifest, &owner_policy(), &job.dataset, &[1; 32], &job.owner).await.unwrap_err();
    assert!(matches!(&err, ClientError::GrantRefused(r) if r.contains("no longer accepts grants")), "{err}");
}

fn hex(s: &str) -> Vec<u8> {
    ::hex::decode(s).unwrap()
}
