//! The trust core on the simulated platform: evidence, verification order,
//! and attestation-gated key grants, including the attacks each check stops.

use sealtune_attestation::binding::attested_tls_report_data;
use sealtune_attestation::evidence::Evidence;
use sealtune_attestation::grant::{make_grant, GrantError};
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::manifest::JobManifest;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::snp::report::SIGNED_LEN;
use sealtune_attestation::verify::{verify_report, BoundEvidence, VerifyError};
use sealtune_enclave::key_release::KeyRelease;
use sealtune_enclave::tee::sim::{SimLaunch, SimTee};
use sealtune_tests::fixtures::{manifest, owner_policy, sim_platform, MEASUREMENT};
use time::OffsetDateTime;

struct Setup {
    owner: IdentityKey,
    dataset: [u8; 32],
    manifest: JobManifest,
    enclave: KeyRelease<SimTee>,
}

fn setup_with(launch: impl FnOnce(&mut SimLaunch)) -> Setup {
    let owner = IdentityKey::generate();
    let dataset = [0xda; 32];
    let manifest = manifest(&[(dataset, owner.public())]);
    let mut l = SimLaunch::new(MEASUREMENT, manifest.hash());
    launch(&mut l);
    let enclave = KeyRelease::new(manifest.clone(), SimTee::launch(sim_platform(), l));
    Setup { owner, dataset, manifest, enclave }
}

fn setup() -> Setup {
    setup_with(|_| {})
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The TLS exporter value of the session the challenges in these tests are answered on.
const EXPORTER: [u8; 32] = [0xe0; 32];

/// The owner's full check of evidence answering `nonce` on the session of [`EXPORTER`].
fn owner_verifies(evidence: &Evidence, policy: &Policy, manifest: &JobManifest, nonce: &[u8; 32]) -> Result<BoundEvidence, VerifyError> {
    let expected = attested_tls_report_data(&EXPORTER, nonce, &evidence.keys, &manifest.hash());
    verify_report(evidence, policy, now())?.bind(evidence, &manifest.hash(), &expected)
}

#[test]
fn simulated_evidence_verifies_only_when_the_policy_allows_it() {
    let mut s = setup();
    let nonce = [7; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &s.manifest, &nonce).unwrap();
    assert!(bound.claims.simulated);
    assert_eq!(bound.claims.tee, "sim");

    let production = Policy { allow_simulated: false, ..owner_policy() };
    let err = owner_verifies(&evidence, &production, &s.manifest, &nonce).unwrap_err();
    assert!(matches!(err, VerifyError::SimulatedNotAllowed), "{err}");
}

#[test]
fn evidence_survives_its_encoding() {
    let mut s = setup();
    let evidence = s.enclave.challenge_session(&EXPORTER, &[1; 32]).unwrap();
    assert_eq!(Evidence::from_cbor(&evidence.to_cbor()).unwrap(), evidence);
}

#[test]
fn every_bit_flip_in_the_signed_report_fails() {
    let mut s = setup();
    let nonce = [9; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let policy = owner_policy();
    // Every byte, one bit each (cycling through bit positions), plus the signature.
    for at in 0..SIGNED_LEN + 144 {
        let mut bad = evidence.clone();
        bad.report[at] ^= 1 << (at % 8);
        assert!(owner_verifies(&bad, &policy, &s.manifest, &nonce).is_err(), "flip at {at:#x} accepted");
    }
}

#[test]
fn a_claimed_real_kind_with_a_simulated_root_is_refused() {
    let mut s = setup();
    let mut evidence = s.enclave.challenge_session(&EXPORTER, &[2; 32]).unwrap();
    evidence.tee = sealtune_attestation::evidence::TeeKind::SevSnp;
    let err = owner_verifies(&evidence, &owner_policy(), &s.manifest, &[2; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::KindMismatch { .. }), "{err}");
}

#[test]
fn each_check_has_its_own_error() {
    let policy = owner_policy();

    let mut s = setup();
    let evidence = s.enclave.challenge_session(&EXPORTER, &[1; 32]).unwrap();
    let err = owner_verifies(&evidence, &policy, &s.manifest, &[2; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::ReportDataMismatch), "wrong nonce: {err}");

    let other = manifest(&[([0xee; 32], s.owner.public())]);
    let err = owner_verifies(&evidence, &policy, &other, &[1; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::ManifestMismatch { .. }), "wrong manifest: {err}");

    let strict = Policy { measurements: vec!["00".repeat(48)], ..owner_policy() };
    let err = owner_verifies(&evidence, &strict, &s.manifest, &[1; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::MeasurementNotAllowed(_)), "measurement: {err}");

    let mut s = setup_with(|l| l.debug = true);
    let evidence = s.enclave.challenge_session(&EXPORTER, &[1; 32]).unwrap();
    let err = owner_verifies(&evidence, &policy, &s.manifest, &[1; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::DebugEnabled), "debug: {err}");

    let mut s = setup_with(|l| l.vmpl = 2);
    let evidence = s.enclave.challenge_session(&EXPORTER, &[1; 32]).unwrap();
    let err = owner_verifies(&evidence, &policy, &s.manifest, &[1; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::Vmpl { vmpl: 2, max: 0 }), "vmpl: {err}");

    // A stale firmware: the simulated platform reports SIM_TCB; demand more.
    let mut s = setup();
    let evidence = s.enclave.challenge_session(&EXPORTER, &[1; 32]).unwrap();
    let mut min = sealtune_enclave::tee::sim::SIM_TCB;
    min.snp += 1;
    let stale = Policy { min_tcb: Some(min), ..owner_policy() };
    let err = owner_verifies(&evidence, &stale, &s.manifest, &[1; 32]).unwrap_err();
    assert!(matches!(err, VerifyError::StaleTcb { .. }), "tcb: {err}");
}

#[test]
fn a_grant_opens_in_the_enclave_it_was_made_for() {
    let mut s = setup();
    let nonce = [3; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &s.manifest, &nonce).unwrap();
    let dek = [0x42; 32];
    let grant = make_grant(&bound, &s.manifest, &owner_policy(), &s.dataset, &dek, &s.owner).unwrap();
    let released = s.enclave.accept(&grant).unwrap();
    assert_eq!(released.dataset, s.dataset);
    assert_eq!(*released.dek, dek);
}

#[test]
fn a_grant_replayed_to_another_enclave_is_refused() {
    let mut s = setup();
    let nonce = [4; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &s.manifest, &nonce).unwrap();
    let grant = make_grant(&bound, &s.manifest, &owner_policy(), &s.dataset, &[1; 32], &s.owner).unwrap();

    // Same job, same platform, but another enclave instance (other keys).
    let mut twin = KeyRelease::new(s.manifest.clone(), SimTee::launch(sim_platform(), SimLaunch::new(MEASUREMENT, s.manifest.hash())));
    twin.challenge_session(&EXPORTER, &nonce).unwrap();
    assert!(matches!(twin.accept(&grant), Err(GrantError::WrongEnclave)));
}

#[test]
fn a_grant_for_another_manifest_is_refused() {
    // The owner verified enclave A (job A) and granted; enclave B runs job B.
    let mut a = setup();
    let nonce = [5; 32];
    let evidence = a.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &a.manifest, &nonce).unwrap();
    let grant = make_grant(&bound, &a.manifest, &owner_policy(), &a.dataset, &[1; 32], &a.owner).unwrap();

    let mut other = a.manifest.clone();
    other.job_id = "another job".into();
    let b = KeyRelease::new(other.clone(), SimTee::launch(sim_platform(), SimLaunch::new(MEASUREMENT, other.hash())));
    assert!(matches!(b.accept(&grant), Err(GrantError::ManifestMismatch)));

    // And an owner cannot be talked into granting with a manifest other than the one bound.
    let err = make_grant(&bound, &other, &owner_policy(), &a.dataset, &[1; 32], &a.owner).unwrap_err();
    assert!(matches!(err, GrantError::ManifestMismatch));
}

#[test]
fn a_tampered_or_foreign_grant_is_refused() {
    let mut s = setup();
    let nonce = [6; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &s.manifest, &nonce).unwrap();
    let grant = make_grant(&bound, &s.manifest, &owner_policy(), &s.dataset, &[1; 32], &s.owner).unwrap();
    for at in 0..grant.len() {
        let mut bad = grant.clone();
        bad[at] ^= 0x01;
        assert!(s.enclave.accept(&bad).is_err(), "flip at {at} accepted");
    }
    // A key the manifest does not list for the dataset cannot grant it.
    let stranger = IdentityKey::generate();
    let err = make_grant(&bound, &s.manifest, &owner_policy(), &s.dataset, &[1; 32], &stranger).unwrap_err();
    assert!(matches!(err, GrantError::OwnerMismatch { .. }));
}

#[test]
fn terms_outside_the_owner_policy_release_nothing() {
    let mut s = setup();
    let nonce = [8; 32];
    let evidence = s.enclave.challenge_session(&EXPORTER, &nonce).unwrap();
    let bound = owner_verifies(&evidence, &owner_policy(), &s.manifest, &nonce).unwrap();
    let mut tight = owner_policy();
    tight.job.as_mut().unwrap().max_epsilon = 1.0;
    let err = make_grant(&bound, &s.manifest, &tight, &s.dataset, &[1; 32], &s.owner).unwrap_err();
    assert!(matches!(err, GrantError::Terms(_)), "{err}");
}
