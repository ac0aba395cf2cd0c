//! The simulated platform: an AMD SEV-SNP "secure processor" in software.
//!
//! `SimPlatform::generate` creates an ARK → ASK → VCEK chain shaped exactly
//! like AMD's (RSASSA-PSS/SHA-384 certificates, a P-384 VCEK with the TCB and
//! hwID extensions, serial number 0 as AMD's), and `SimTee` signs reports in
//! the SEV-SNP layout with it. Verifiers run the same code as for hardware;
//! only the root differs, and they refuse it unless their policy allows
//! simulation. The simulated VCEK private key sits in a file: simulated
//! evidence proves nothing about confidentiality.

use super::{RawEvidence, Tee, TeeError};
use der::asn1::{BitString, OctetString, UtcTime};
use der::{Decode, Encode};
use p384::ecdsa::{signature::Signer as _, Signature as EcdsaSignature, SigningKey as EcdsaKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey as _};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{pss, RsaPrivateKey};
use sealtune_attestation::evidence::TeeKind;
use sealtune_attestation::snp::chain::{amd_signature_algorithm, oid, pem_certificates, SIMULATED_ORGANIZATION};
use sealtune_attestation::snp::report::{offset, ECDSA_P384_SHA384, REPORT_LEN, SIGNED_LEN};
use sealtune_attestation::snp::tcb::{Product, Tcb};
use sha2::Sha384;
use spki::SubjectPublicKeyInfoOwned;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The simulated chip is a Milan part; its TCB uses the Milan layout.
pub const SIM_PRODUCT: Product = Product::Milan;
/// The firmware levels the simulated platform reports and certifies.
pub const SIM_TCB: Tcb = Tcb { fmc: 0, bootloader: 4, tee: 0, snp: 23, microcode: 213 };
/// Report format version the simulated firmware writes.
const SIM_REPORT_VERSION: u32 = 3;
/// RSA size of the simulated ARK and ASK. AMD's are 4096 bits; the verifier
/// accepts any size, and 2048 keeps `sim init` and the tests quick.
const SIM_RSA_BITS: usize = 2048;
/// POLICY with SMT allowed and the must-be-one bit 17 set, as typical launches.
const BASE_GUEST_POLICY: u64 = 0x3_0000;
const DEBUG_BIT: u64 = 1 << 19;

const ARK_FILE: &str = "ark.pem";
const ASK_FILE: &str = "ask.pem";
const VCEK_FILE: &str = "vcek.pem";
const VCEK_KEY_FILE: &str = "vcek-key.pem";
const CHIP_ID_FILE: &str = "chip-id.hex";

/// A simulated AMD platform: its certificate chain and its VCEK.
pub struct SimPlatform {
    ark: Vec<u8>,
    ask: Vec<u8>,
    vcek: Vec<u8>,
    vcek_key: EcdsaKey,
    chip_id: [u8; 64],
}

fn name(cn: &str) -> Name {
    Name::from_str(&format!("CN={cn},O={SIMULATED_ORGANIZATION}")).expect("constant RFC 4514 name")
}

fn validity() -> Validity {
    let now = SystemTime::now();
    let utc = |t: SystemTime| Time::UtcTime(UtcTime::from_system_time(t).expect("time within UTCTime range"));
    Validity {
        not_before: utc(now - Duration::from_secs(24 * 3600)),
        not_after: utc(now + Duration::from_secs(10 * 365 * 24 * 3600)),
    }
}

fn extension(oid: der::asn1::ObjectIdentifier, value: Vec<u8>) -> Extension {
    Extension { extn_id: oid, critical: false, extn_value: OctetString::new(value).expect("short value") }
}

fn issue(
    serial: u8,
    subject: &str,
    issuer: &str,
    spki_der: &[u8],
    extensions: Option<Vec<Extension>>,
    signer: &RsaPrivateKey,
) -> Vec<u8> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[serial]).expect("one-byte serial"),
        signature: amd_signature_algorithm(),
        issuer: name(issuer),
        validity: validity(),
        subject: name(subject),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der).expect("encoded SPKI"),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    };
    let tbs_der = tbs.to_der().expect("encoding a TBS certificate");
    let signature = pss::SigningKey::<Sha384>::new(signer.clone()).sign_with_rng(&mut rand_core::OsRng, &tbs_der);
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: amd_signature_algorithm(),
        signature: BitString::from_bytes(&signature.to_bytes()).expect("signature bits"),
    }
    .to_der()
    .expect("encoding a certificate")
}

fn pem(der_bytes: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der_bytes).expect("PEM encoding")
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TeeError {
    TeeError::Unavailable(format!("simulated platform {what}: {e}"))
}

impl SimPlatform {
    /// Creates a new simulated platform with fresh keys.
    pub fn generate() -> Self {
        let mut rng = rand_core::OsRng;
        let ark_key = RsaPrivateKey::new(&mut rng, SIM_RSA_BITS).expect("RSA key generation");
        let ask_key = RsaPrivateKey::new(&mut rng, SIM_RSA_BITS).expect("RSA key generation");
        let vcek_key = EcdsaKey::random(&mut rng);
        let mut chip_id = [0u8; 64];
        rand_core::RngCore::fill_bytes(&mut rng, &mut chip_id);

        let ark_cn = format!("ARK-{}", SIM_PRODUCT.name());
        let ask_cn = format!("SEV-{}", SIM_PRODUCT.name());
        let rsa_spki = |k: &RsaPrivateKey| k.to_public_key().to_public_key_der().expect("SPKI").into_vec();
        let ark = issue(1, &ark_cn, &ark_cn, &rsa_spki(&ark_key), None, &ark_key);
        let ask = issue(1, &ask_cn, &ark_cn, &rsa_spki(&ask_key), None, &ark_key);
        let spl = |v: u8| v.to_der().expect("INTEGER");
        let vcek_extensions = vec![
            extension(oid::BL_SPL, spl(SIM_TCB.bootloader)),
            extension(oid::TEE_SPL, spl(SIM_TCB.tee)),
            extension(oid::SNP_SPL, spl(SIM_TCB.snp)),
            extension(oid::UCODE_SPL, spl(SIM_TCB.microcode)),
            extension(oid::HW_ID, chip_id.to_vec()),
        ];
        let vcek_spki = vcek_key.verifying_key().to_public_key_der().expect("SPKI").into_vec();
        // AMD issues VCEKs with serial number 0; so does the simulation.
        let vcek = issue(0, "SEV-VCEK", &ask_cn, &vcek_spki, Some(vcek_extensions), &ask_key);
        SimPlatform { ark, ask, vcek, vcek_key, chip_id }
    }

    /// Writes the platform to `dir`: the three certificates as PEM and the
    /// simulated VCEK private key (mode 0600).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(ARK_FILE), pem(&self.ark))?;
        std::fs::write(dir.join(ASK_FILE), pem(&self.ask))?;
        std::fs::write(dir.join(VCEK_FILE), pem(&self.vcek))?;
        std::fs::write(dir.join(CHIP_ID_FILE), hex::encode(self.chip_id))?;
        let key = self.vcek_key.to_pkcs8_pem(der::pem::LineEnding::LF).map_err(std::io::Error::other)?;
        write_private(&dir.join(VCEK_KEY_FILE), key.as_bytes())
    }

    /// Reads a platform written by [`SimPlatform::save`].
    pub fn load(dir: &Path) -> Result<Self, TeeError> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| unavailable(f, e));
        let cert = |f: &str| -> Result<Vec<u8>, TeeError> {
            pem_certificates(&read(f)?)?.into_iter().next().ok_or_else(|| unavailable(f, "no certificate"))
        };
        let vcek_key = EcdsaKey::from_pkcs8_pem(&read(VCEK_KEY_FILE)?).map_err(|e| unavailable(VCEK_KEY_FILE, e))?;
        let chip_id = hex::decode(read(CHIP_ID_FILE)?.trim())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| unavailable(CHIP_ID_FILE, "not 64 bytes of hex"))?;
        Ok(SimPlatform { ark: cert(ARK_FILE)?, ask: cert(ASK_FILE)?, vcek: cert(VCEK_FILE)?, vcek_key, chip_id })
    }

    /// The ARK certificate (DER).
    pub fn ark(&self) -> &[u8] {
        &self.ark
    }
}

impl From<sealtune_attestation::snp::chain::PemError> for TeeError {
    fn from(e: sealtune_attestation::snp::chain::PemError) -> Self {
        TeeError::Unavailable(e.to_string())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The launch-time inputs of a simulated guest, as a hypervisor would set them.
#[derive(Debug, Clone)]
pub struct SimLaunch {
    /// MEASUREMENT: the launch digest of the guest image.
    pub measurement: [u8; 48],
    /// HOST_DATA: sealtune puts the job manifest hash here.
    pub host_data: [u8; 32],
    /// Launch with POLICY.DEBUG set (for testing the verifier).
    pub debug: bool,
    /// VMPL the guest requests reports from (for testing the verifier).
    pub vmpl: u32,
}

impl SimLaunch {
    /// An ordinary launch: no debug, VMPL 0.
    pub fn new(measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        SimLaunch { measurement, host_data, debug: false, vmpl: 0 }
    }
}

/// A guest running on a simulated platform.
pub struct SimTee {
    platform: SimPlatform,
    launch: SimLaunch,
    report_id: [u8; 32],
}

impl SimTee {
    /// Launches a guest on `platform`.
    pub fn launch(platform: SimPlatform, launch: SimLaunch) -> Self {
        let mut report_id = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut report_id);
        SimTee { platform, launch, report_id }
    }
}

impl Tee for SimTee {
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError> {
        let mut r = vec![0u8; REPORT_LEN];
        let mut put = |at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
        let tcb = SIM_TCB.encode(SIM_PRODUCT).0.to_le_bytes();
        let policy = BASE_GUEST_POLICY | if self.launch.debug { DEBUG_BIT } else { 0 };
        put(offset::VERSION, &SIM_REPORT_VERSION.to_le_bytes());
        put(offset::POLICY, &policy.to_le_bytes());
        put(offset::VMPL, &self.launch.vmpl.to_le_bytes());
        put(offset::SIGNATURE_ALGO, &ECDSA_P384_SHA384.to_le_bytes());
        put(offset::CURRENT_TCB, &tcb);
        put(offset::REPORT_DATA, report_data);
        put(offset::MEASUREMENT, &self.launch.measurement);
        put(offset::HOST_DATA, &self.launch.host_data);
        put(offset::REPORT_ID, &self.report_id);
        put(offset::REPORTED_TCB, &tcb);
        put(offset::CPUID_FMS, &[0x19, 0x01, 0x01]);
        put(offset::CHIP_ID, &self.platform.chip_id);
        put(offset::COMMITTED_TCB, &tcb);
        put(offset::LAUNCH_TCB, &tcb);
        let signature: EcdsaSignature = self.platform.vcek_key.sign(&r[..SIGNED_LEN]);
        let (sig_r, sig_s) = signature.split_bytes();
        for (field, scalar) in [(offset::SIGNATURE, sig_r), (offset::SIGNATURE + 72, sig_s)] {
            let mut le: [u8; 48] = scalar.into();
            le.reverse();
            r[field..field + 48].copy_from_slice(&le);
        }
        Ok(RawEvidence {
            tee: TeeKind::Sim,
            report: r,
            certs: vec![self.platform.vcek.clone(), self.platform.ask.clone(), self.platform.ark.clone()],
        })
    }
}
