//! Golden bytes of every CBOR format (the test vectors of docs/formats/):
//! a change to any encoding fails here.

use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, EvidenceError, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::grant::{GrantBody, SignedGrant, GRANT_VERSION};
use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::ledger::{Ledger, Mechanism, Spend, LEDGER_VERSION};
use sealtune_attestation::manifest::{
    BaseModel, DatasetRef, JobManifest, LoraTerms, ManifestError, PrivacyTerms, SignedManifest, TrainingTerms, MANIFEST_VERSION,
};

/// docs/formats/job-manifest.md, "Test vector".
pub fn vector_manifest() -> JobManifest {
    JobManifest {
        version: MANIFEST_VERSION,
        job_id: "j".into(),
        base_model: BaseModel { name: "m".into(), sha256: [0xaa; 32] },
        lora: LoraTerms { rank: 8, alpha: 16.0, targets: vec!["q".into(), "v".into()] },
        training: TrainingTerms { optimizer: "adamw".into(), learning_rate: 0.002, max_seq_len: 128 },
        privacy: PrivacyTerms {
            epsilon: 8.0,
            delta: 1e-5,
            clip_norm: 1.0,
            sampling_rate: 0.01,
            expected_batch_size: 10.0,
            max_steps: 500,
            accountant: "pld".into(),
            privacy_unit: "record".into(),
        },
        datasets: vec![DatasetRef { commitment: [0xcc; 32], owner: [0x0e; 32] }],
        recipients: vec![[0xfe; 32].into()],
    }
}

const MANIFEST_HEX: &str = "a86776657273696f6e01666a6f625f6964616a6a626173655f6d6f64656ca2646e616d65616d667368613235365820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa646c6f7261a36472616e6b0865616c706861f94c006774617267657473826171617668747261696e696e67a3696f7074696d697a6572656164616d776d6c6561726e696e675f72617465fb3f60624dd2f1a9fc6b6d61785f7365715f6c656e18806770726976616379a867657073696c6f6ef948006564656c7461fb3ee4f8b588e368f169636c69705f6e6f726df93c006d73616d706c696e675f72617465fb3f847ae147ae147b7365787065637465645f62617463685f73697a65f94900696d61785f73746570731901f46a6163636f756e74616e7463706c646c707269766163795f756e6974667265636f726468646174617365747381a26a636f6d6d69746d656e745820cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc656f776e657258200e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e6a726563697069656e7473815820fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe";
const MANIFEST_SHA256: &str = "5f63316bd31dcba447aa419f28e3e676244cceaeafe811a4714ea30d1350abce";

#[test]
fn manifest_golden_bytes() {
    let m = vector_manifest();
    let bytes = m.to_cbor();
    assert_eq!(hex::encode(&bytes), MANIFEST_HEX);
    assert_eq!(hex::encode(m.hash()), MANIFEST_SHA256);
    assert_eq!(JobManifest::from_cbor(&bytes).unwrap(), m);
    // A CBOR map of 8 entries whose first key is the text "version".
    assert_eq!(&bytes[..9], b"\xa8\x67version");
}

#[test]
fn manifest_rejects_unknown_versions_and_bad_fields() {
    let mut m = vector_manifest();
    m.version = 2;
    assert!(matches!(JobManifest::from_cbor(&m.to_cbor()), Err(ManifestError::UnsupportedVersion(2))));
    let mut m = vector_manifest();
    m.privacy.delta = 1.0;
    match JobManifest::from_cbor(&m.to_cbor()) {
        Err(ManifestError::Invalid { field, .. }) => assert_eq!(field, "privacy.delta"),
        other => panic!("{other:?}"),
    }
    let mut m = vector_manifest();
    m.lora.targets.push("lm_head".into());
    assert!(matches!(JobManifest::from_cbor(&m.to_cbor()), Err(ManifestError::Invalid { field: "lora.targets", .. })));
    assert!(matches!(JobManifest::from_cbor(b"\x00"), Err(ManifestError::Malformed(_))));
}

const EVIDENCE_HEX: &str = "a56776657273696f6e01637465656373696d667265706f72744301020365636572747383410441054106646b657973a2636b656d58200707070707070707070707070707070707070707070707070707070707070707677369676e696e6758200808080808080808080808080808080808080808080808080808080808080808";

#[test]
fn evidence_golden_bytes() {
    let e = Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::Sim,
        report: vec![1, 2, 3],
        certs: vec![vec![4].into(), vec![5].into(), vec![6].into()],
        keys: EnclavePublicKeys { kem: [7; 32], signing: [8; 32] },
    };
    assert_eq!(hex::encode(e.to_cbor()), EVIDENCE_HEX);
    assert_eq!(Evidence::from_cbor(&e.to_cbor()).unwrap(), e);
    let mut future = e.clone();
    future.version = 9;
    assert!(matches!(Evidence::from_cbor(&future.to_cbor()), Err(EvidenceError::UnsupportedVersion(9))));
}

const GRANT_HEX: &str = "a36776657273696f6e0164626f647959015aa86776657273696f6e016d6d616e69666573745f68617368582001010101010101010101010101010101010101010101010101010101010101016f65766964656e63655f6469676573745820020202020202020202020202020202020202020202020202020202020202020267646174617365745820030303030303030303030303030303030303030303030303030303030303030369726563697069656e7458200404040404040404040404040404040404040404040404040404040404040404656f776e65725820050505050505050505050505050505050505050505050505050505050505050570656e63617073756c617465645f6b6579582006060606060606060606060606060606060606060606060606060606060606066a7365616c65645f6b65795830070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707697369676e6174757265584008080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808";

#[test]
fn grant_golden_bytes() {
    let body = GrantBody {
        version: GRANT_VERSION,
        manifest_hash: [1; 32],
        evidence_digest: [2; 32],
        dataset: [3; 32],
        recipient: [4; 32],
        owner: [5; 32],
        encapsulated_key: [6; 32],
        sealed_key: vec![7; 48],
    };
    let body = sealtune_attestation::cbor::to_vec(&body);
    let signed = SignedGrant { version: GRANT_VERSION, body, signature: [8; 64] };
    assert_eq!(hex::encode(sealtune_attestation::cbor::to_vec(&signed)), GRANT_HEX);
}

/// The vendor key of the signed-job vector: Ed25519 with the seed 0x11 × 32.
const VECTOR_VENDOR_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBERERERERERERERERERERERERERERERERERERERERER\n-----END PRIVATE KEY-----\n";
const VECTOR_VENDOR_PUBLIC: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";

/// docs/formats/job-manifest.md, "Signed job file": the vector manifest with
/// the vendor as its recipient, signed (Ed25519 signatures are deterministic).
#[test]
fn signed_manifest_golden_bytes() {
    let vendor = IdentityKey::from_pem(VECTOR_VENDOR_PEM).unwrap();
    assert_eq!(hex::encode(vendor.public()), VECTOR_VENDOR_PUBLIC);
    let mut m = vector_manifest();
    m.recipients = vec![vendor.public().into()];
    let bytes = SignedManifest::sign(&m, &vendor).unwrap().to_cbor();
    let golden = include_str!("vectors/signed-manifest-v1.hex").trim();
    assert_eq!(hex::encode(&bytes), golden);
    let job = SignedManifest::open(&bytes).unwrap();
    assert_eq!((job.manifest, job.vendor), (m, vendor.public()));
}

#[test]
fn signed_manifest_refuses_forgeries_and_strangers() {
    let vendor = IdentityKey::from_pem(VECTOR_VENDOR_PEM).unwrap();
    let mut m = vector_manifest();
    m.recipients = vec![vendor.public().into()];
    let signed = SignedManifest::sign(&m, &vendor).unwrap();
    // Any change to the manifest bytes breaks the signature.
    let mut altered = signed.clone();
    let at = altered.manifest.len() - 1;
    altered.manifest[at] ^= 1;
    assert!(matches!(SignedManifest::open(&altered.to_cbor()), Err(ManifestError::BadSignature)));
    // A vendor may sign only jobs whose outputs it receives.
    let stranger = IdentityKey::generate();
    assert!(matches!(SignedManifest::sign(&m, &stranger), Err(ManifestError::VendorNotRecipient(_))));
    let mut forged = SignedManifest::sign(&vector_manifest_for(&stranger), &stranger).unwrap();
    forged.manifest = signed.manifest.clone();
    forged.signature = stranger.sign(&[b"sealtune/v1/job-manifest".as_slice(), &signed.manifest].concat());
    assert!(matches!(SignedManifest::open(&forged.to_cbor()), Err(ManifestError::VendorNotRecipient(_))));
    let mut future = signed;
    future.version = 2;
    assert!(matches!(SignedManifest::open(&future.to_cbor()), Err(ManifestError::UnsupportedVersion(2))));
}

fn vector_manifest_for(vendor: &IdentityKey) -> JobManifest {
    JobManifest { recipients: vec![vendor.public().into()], ..vector_manifest() }
}

/// The owner key of the ledger vector: Ed25519 with the seed 0x22 × 32.
const VECTOR_OWNER_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi\n-----END PRIVATE KEY-----\n";

/// docs/formats/ledger.md: two spends of one dataset group, signed and
/// chained (Ed25519 signatures are deterministic, so the bytes are fixed).
#[test]
fn ledger_golden_bytes() {
    let owner = IdentityKey::from_pem(VECTOR_OWNER_PEM).unwrap();
    let mechanism = Mechanism {
        accountant: "pld".into(),
        sampling_rate: 0.025,
        noise_multiplier: 0.75,
        max_steps: 400,
        clip_norm: 1.0,
        privacy_unit: "record".into(),
        epsilon: 4.0,
        delta: 1e-5,
    };
    let spend = |dataset: u8, manifest: u8, time: i64| Spend {
        version: LEDGER_VERSION,
        sequence: 0,
        previous: [0; 32],
        dataset: [dataset; 32],
        group: "cardiology".into(),
        manifest: [manifest; 32],
        job_id: "clinical-notes".into(),
        evidence: [0xee; 32],
        mechanism: mechanism.clone(),
        time,
    };
    let mut ledger = Ledger::new(owner.public());
    ledger.append(spend(0xd1, 0xa1, 1_780_000_000), &owner).unwrap();
    ledger.append(spend(0xd2, 0xa2, 1_780_086_400), &owner).unwrap();
    let bytes = ledger.to_cbor();
    assert_eq!(hex::encode(&bytes), include_str!("vectors/ledger-v1.hex").trim());
    let read = Ledger::from_cbor(&bytes, &owner.public()).unwrap();
    assert_eq!(read.spends()[1].sequence, 1);
    let mut first = Ledger::new(owner.public());
    first.append(spend(0xd1, 0xa1, 1_780_000_000), &owner).unwrap();
    assert_eq!(read.spends()[1].previous, first.head());
}
