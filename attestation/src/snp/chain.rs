//! The AMD key chain behind an SNP report: ARK → ASK (or ASVK) → VCEK (or
//! VLEK), every certificate signed with RSASSA-PSS/SHA-384, and the
//! endorsement key (P-384) signing the report.
//!
//! The ARK is trusted only if the SHA-384 of its public key equals one of the
//! pinned fingerprints, or it is a simulated root (which the verifier refuses
//! unless the policy allows simulation). Certificates are checked over the
//! exact TBS bytes received, never over a re-encoding.

use super::report::{SigningKey, SnpReport, SIGNED_LEN};
use super::tcb::{Product, Tcb};
use der::{asn1::ObjectIdentifier, Decode, Encode, Reader, SliceReader};
use hex_literal::hex;
use p384::ecdsa::{signature::Verifier as _, Signature as EcdsaSignature, VerifyingKey as EcdsaKey};
use rsa::{pkcs8::DecodePublicKey, pss, RsaPublicKey};
use sha2::{Digest, Sha384};
use time::OffsetDateTime;
use x509_cert::Certificate;

/// SHA-384 of the SubjectPublicKeyInfo DER of AMD's ARK for each product (the
/// root of `/vcek/v1/{product}/cert_chain` on AMD's key distribution service).
pub const PINNED_ARKS: [(Product, [u8; 48]); 3] = [
    (Product::Milan, hex!("1249f67f15cf229a4069195e1a9ce537d1765ef706a1f4a123c36be9518786515d25ecc007f366b564d2b3f31c48082e")),
    (Product::Genoa, hex!("32ab53a6ce5ec14926207396e5c475ae768a6a9831b7e860b5acf2e1c1dff222bc5a8bfc43eb5e06393189c1f246d880")),
    (Product::Turin, hex!("3475f08a9727f8ac9a1deaea5f2a2097aa59d64d05c2a678c229c873e6359d3a6926287a2a22cd5f88a385e333a2fcc5")),
];

/// The organisation name that marks a simulated platform's root.
pub const SIMULATED_ORGANIZATION: &str = "sealtune simulated platform";

/// id-RSASSA-PSS.
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// The RSASSA-PSS parameters AMD uses: SHA-384, MGF1 with SHA-384, salt 48;
/// AMD's own certificates spell out the default trailerField (1), KDS-issued
/// leaves omit it.
const PSS_SHA384_PARAMS: [&[u8]; 2] = [
    &hex!("3034a00f300d06096086480165030402020500a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130"),
    &hex!("3039a00f300d06096086480165030402020500a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130a303020101"),
];
/// The signature algorithm AMD (and the simulated platform) sign
/// certificates with: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
pub fn amd_signature_algorithm() -> spki::AlgorithmIdentifierOwned {
    spki::AlgorithmIdentifierOwned {
        oid: RSASSA_PSS,
        parameters: Some(der::Any::from_der(PSS_SHA384_PARAMS[0]).expect("constant DER")),
    }
}

/// OIDs of the AMD extensions a VCEK carries, for building simulated ones.
pub mod oid {
    use der::asn1::ObjectIdentifier;
    /// Boot loader SPL.
    pub const BL_SPL: ObjectIdentifier = super::BL_SPL;
    /// PSP OS SPL.
    pub const TEE_SPL: ObjectIdentifier = super::TEE_SPL;
    /// SNP firmware SPL.
    pub const SNP_SPL: ObjectIdentifier = super::SNP_SPL;
    /// Microcode SPL.
    pub const UCODE_SPL: ObjectIdentifier = super::UCODE_SPL;
    /// Hardware id (CHIP_ID).
    pub const HW_ID: ObjectIdentifier = super::HW_ID;
}

const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// A certificate's place in the chain, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The AMD Root Key.
    Ark,
    /// The AMD SEV Key (or, for VLEK chains, the AMD SEV VLEK Key).
    Ask,
    /// The VCEK or VLEK that signs reports.
    Endorsement,
}

impl std::fmt::Display for CertRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK/ASVK",
            CertRole::Endorsement => "VCEK/VLEK",
        })
    }
}

/// What the chain's root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// One of AMD's pinned ARKs.
    Amd(Product),
    /// A simulated platform's root, trusted only when the policy allows it.
    Simulated(Product),
}

impl Anchor {
    /// The CPU generation of the chain.
    pub fn product(self) -> Product {
        match self {
            Anchor::Amd(p) | Anchor::Simulated(p) => p,
        }
    }
}

/// Why the key chain or the report signature is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A certificate could not be parsed.
    #[error("{role} certificate is malformed: {reason}")]
    Malformed {
        /// Which certificate.
        role: CertRole,
        /// The parser's message.
        reason: String,
    },
    /// The root is neither a pinned AMD ARK nor a simulated root.
    #[error("untrusted root: ARK public key SHA-384 {fingerprint} is not a pinned AMD root")]
    UnknownRoot {
        /// Hex SHA-384 of the root's SubjectPublicKeyInfo.
        fingerprint: String,
    },
    /// A certificate is signed with something other than RSASSA-PSS/SHA-384/salt 48.
    #[error("{role} certificate is not signed with RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48)")]
    UnsupportedCertSignature {
        /// Which certificate.
        role: CertRole,
    },
    /// A certificate's issuer is not the subject of the next one up.
    #[error("{role} certificate's issuer does not name the certificate above it")]
    IssuerMismatch {
        /// Which certificate.
        role: CertRole,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("{role} certificate signature is invalid")]
    BadCertSignature {
        /// Which certificate.
        role: CertRole,
    },
    /// The endorsement certificate's kind (VCEK or VLEK) differs from the report's KEY_INFO.
    #[error("report says it is signed by the {report}, but the certificate is a {cert}")]
    SigningKeyKind {
        /// What the report's KEY_INFO says.
        report: &'static str,
        /// What the certificate's subject says.
        cert: &'static str,
    },
    /// The endorsement key is not a P-384 ECDSA key.
    #[error("the VCEK/VLEK public key is not an ECDSA P-384 key")]
    EndorsementKey,
    /// The report signature does not verify under the endorsement key.
    #[error("report signature is invalid")]
    BadReportSignature,
    /// REPORTED_TCB differs from the TCB the VCEK/VLEK was issued for.
    #[error("REPORTED_TCB ({report}) differs from the TCB in the certificate ({cert})")]
    TcbMismatch {
        /// From the report.
        report: Tcb,
        /// From the certificate's extensions.
        cert: Tcb,
    },
    /// The VCEK's hwID extension differs from the report's CHIP_ID.
    #[error("CHIP_ID does not match the VCEK's hwID")]
    ChipIdMismatch,
}

/// Why a certificate is not valid at the requested time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidityError {
    /// The time is before notBefore.
    #[error("{role} certificate is not valid before {not_before}")]
    NotYetValid {
        /// Which certificate.
        role: CertRole,
        /// Its notBefore, RFC 3339.
        not_before: String,
    },
    /// The time is after notAfter.
    #[error("{role} certificate expired at {not_after}")]
    Expired {
        /// Which certificate.
        role: CertRole,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
}

struct ParsedCert<'a> {
    role: CertRole,
    cert: Certificate,
    tbs: &'a [u8],
}

impl<'a> ParsedCert<'a> {
    fn parse(role: CertRole, der_bytes: &'a [u8]) -> Result<Self, ChainError> {
        let malformed = |e: der::Error| ChainError::Malformed { role, reason: e.to_string() };
        let cert = Certificate::from_der(der_bytes).map_err(malformed)?;
        // Certificate ::= SEQUENCE { tbsCertificate, .. }: take the first TLV
        // inside the outer SEQUENCE as the exact signed bytes.
        let mut outer = SliceReader::new(der_bytes).map_err(malformed)?;
        let header = der::Header::decode(&mut outer).map_err(malformed)?;
        let mut body = SliceReader::new(outer.read_slice(header.length).map_err(malformed)?).map_err(malformed)?;
        let tbs = body.tlv_bytes().map_err(malformed)?;
        Ok(ParsedCert { role, cert, tbs })
    }

    fn spki_der(&self) -> Vec<u8> {
        self.cert.tbs_certificate.subject_public_key_info.to_der().expect("re-encoding a parsed SPKI")
    }

    fn subject_attr(&self, oid: ObjectIdentifier) -> Option<String> {
        name_attr(&self.cert.tbs_certificate.subject, oid)
    }

    /// Verifies that `issuer` signed this certificate with RSASSA-PSS/SHA-384.
    fn verify_signed_by(&self, issuer: &ParsedCert<'_>) -> Result<(), ChainError> {
        let role = self.role;
        let alg = &self.cert.signature_algorithm;
        let params = alg.parameters.as_ref().and_then(|p| p.to_der().ok());
        if alg.oid != RSASSA_PSS || !params.is_some_and(|p| PSS_SHA384_PARAMS.contains(&p.as_slice())) {
            return Err(ChainError::UnsupportedCertSignature { role });
        }
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(ChainError::IssuerMismatch { role });
        }
        let key = RsaPublicKey::from_public_key_der(&issuer.spki_der())
            .map_err(|_| ChainError::BadCertSignature { role })?;
        let signature = pss::Signature::try_from(self.cert.signature.raw_bytes())
            .map_err(|_| ChainError::BadCertSignature { role })?;
        pss::VerifyingKey::<Sha384>::new(key)
            .verify(self.tbs, &signature)
            .map_err(|_| ChainError::BadCertSignature { role })
    }

    fn check_validity(&self, at: OffsetDateTime) -> Result<(), ValidityError> {
        let validity = &self.cert.tbs_certificate.validity;
        let not_before = OffsetDateTime::from(validity.not_before.to_system_time());
        let not_after = OffsetDateTime::from(validity.not_after.to_system_time());
        let rfc3339 = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        if at < not_before {
            return Err(ValidityError::NotYetValid { role: self.role, not_before: rfc3339(not_before) });
        }
        if at > not_after {
            return Err(ValidityError::Expired { role: self.role, not_after: rfc3339(not_after) });
        }
        Ok(())
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

fn name_attr(name: &x509_cert::name::Name, oid: ObjectIdentifier) -> Option<String> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == oid).and_then(|atv| {
        atv.value
            .decode_as::<String>()
            .ok()
            .or_else(|| atv.value.decode_as::<der::asn1::PrintableString>().ok().map(|s| s.to_string()))
    })
}

/// KDS has encoded hwID as the raw bytes and, in newer certificates, as a DER
/// OCTET STRING; Turin chips have an 8-byte id with CHIP_ID zero-padded.
fn chip_id_matches(hw_id_ext: &[u8], chip_id: &[u8; 64]) -> bool {
    let hw_id = match der::asn1::OctetStringRef::from_der(hw_id_ext) {
        Ok(inner) if matches!(inner.as_bytes().len(), 8 | 64) => inner.as_bytes(),
        _ => hw_id_ext,
    };
    matches!(hw_id.len(), 8 | 64)
        && chip_id[..hw_id.len()] == *hw_id
        && chip_id[hw_id.len()..].iter().all(|&b| b == 0)
}

/// The three certificates behind a report, in DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertChain {
    /// The VCEK or VLEK.
    pub endorsement: Vec<u8>,
    /// The ASK (VCEK chains) or ASVK (VLEK chains).
    pub intermediate: Vec<u8>,
    /// The ARK.
    pub root: Vec<u8>,
}

/// A chain whose signatures all verify up to a recognised root; the report
/// and the certificates' validity period are checked through it.
pub struct VerifiedChain<'a> {
    anchor: Anchor,
    certs: [ParsedCert<'a>; 3],
}

impl CertChain {
    /// Builds the chain above `endorsement` from a pool of certificates (as
    /// AMD's key distribution service serves them: ASK and ARK, plus the ASVK
    /// for VLEKs), matching issuer to subject names. Signatures are checked
    /// later, by [`CertChain::verify`].
    pub fn assemble(endorsement: Vec<u8>, pool: &[Vec<u8>]) -> Result<CertChain, ChainError> {
        let leaf = ParsedCert::parse(CertRole::Endorsement, &endorsement)?;
        let parsed = pool
            .iter()
            .map(|der_bytes| ParsedCert::parse(CertRole::Ask, der_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let issuer_of = |cert: &ParsedCert<'_>, role: CertRole| {
            parsed
                .iter()
                .position(|c| c.cert.tbs_certificate.subject == cert.cert.tbs_certificate.issuer)
                .ok_or(ChainError::IssuerMismatch { role })
        };
        let ask = issuer_of(&leaf, CertRole::Endorsement)?;
        let ark = issuer_of(&parsed[ask], CertRole::Ask)?;
        Ok(CertChain { endorsement: endorsement.clone(), intermediate: pool[ask].clone(), root: pool[ark].clone() })
    }

    /// Checks every signature from the root down and classifies the root.
    pub fn verify(&self) -> Result<VerifiedChain<'_>, ChainError> {
        let ark = ParsedCert::parse(CertRole::Ark, &self.root)?;
        let ask = ParsedCert::parse(CertRole::Ask, &self.intermediate)?;
        let leaf = ParsedCert::parse(CertRole::Endorsement, &self.endorsement)?;
        let anchor = classify_root(&ark)?;
        ark.verify_signed_by(&ark)?;
        ask.verify_signed_by(&ark)?;
        leaf.verify_signed_by(&ask)?;
        Ok(VerifiedChain { anchor, certs: [ark, ask, leaf] })
    }
}

fn classify_root(ark: &ParsedCert<'_>) -> Result<Anchor, ChainError> {
    let fingerprint: [u8; 48] = Sha384::digest(ark.spki_der()).into();
    if let Some((product, _)) = PINNED_ARKS.iter().find(|(_, fp)| *fp == fingerprint) {
        return Ok(Anchor::Amd(*product));
    }
    if ark.subject_attr(ORGANIZATION).as_deref() == Some(SIMULATED_ORGANIZATION) {
        let product = match ark.subject_attr(COMMON_NAME).as_deref() {
            Some("ARK-Milan") => Some(Product::Milan),
            Some("ARK-Genoa") => Some(Product::Genoa),
            Some("ARK-Turin") => Some(Product::Turin),
            _ => None,
        };
        if let Some(product) = product {
            return Ok(Anchor::Simulated(product));
        }
    }
    Err(ChainError::UnknownRoot { fingerprint: hex::encode(fingerprint) })
}

impl VerifiedChain<'_> {
    /// The recognised root.
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    /// Verifies the report's signature with the endorsement key, then that
    /// the report's key kind, REPORTED_TCB and CHIP_ID match the certificate.
    pub fn verify_report(&self, report_bytes: &[u8], report: &SnpReport) -> Result<(), ChainError> {
        let leaf = &self.certs[2];
        let cert_kind = match leaf.subject_attr(COMMON_NAME).as_deref() {
            Some("SEV-VCEK") => SigningKey::Vcek,
            Some("SEV-VLEK") => SigningKey::Vlek,
            _ => return Err(ChainError::Malformed { role: CertRole::Endorsement, reason: "subject CN is neither SEV-VCEK nor SEV-VLEK".into() }),
        };
        if cert_kind != report.signing_key {
            return Err(ChainError::SigningKeyKind { report: report.signing_key.name(), cert: cert_kind.name() });
        }
        let key = EcdsaKey::from_public_key_der(&leaf.spki_der()).map_err(|_| ChainError::EndorsementKey)?;
        let signature = EcdsaSignature::from_scalars(report.signature_r, report.signature_s)
            .map_err(|_| ChainError::BadReportSignature)?;
        key.verify(&report_bytes[..SIGNED_LEN], &signature).map_err(|_| ChainError::BadReportSignature)?;

        let product = self.anchor.product();
        let reported = report.reported_tcb.decode(product);
        let certified = self.certified_tcb(product)?;
        if reported != certified {
            return Err(ChainError::TcbMismatch { report: reported, cert: certified });
        }
        // VLEKs are not chip-unique and carry no hwID; a masked CHIP_ID is zero.
        if cert_kind == SigningKey::Vcek && !report.mask_chip_key {
            let hw_id = leaf.extension(HW_ID).ok_or(ChainError::ChipIdMismatch)?;
            if !chip_id_matches(hw_id, &report.chip_id) {
                return Err(ChainError::ChipIdMismatch);
            }
        }
        Ok(())
    }

    fn certified_tcb(&self, product: Product) -> Result<Tcb, ChainError> {
        let leaf = &self.certs[2];
        let spl = |oid: ObjectIdentifier, name: &str| -> Result<u8, ChainError> {
            let raw = leaf.extension(oid).ok_or_else(|| ChainError::Malformed {
                role: CertRole::Endorsement,
                reason: format!("missing {name} extension"),
            })?;
            u8::from_der(raw).map_err(|e| ChainError::Malformed { role: CertRole::Endorsement, reason: format!("{name}: {e}") })
        };
        Ok(Tcb {
            fmc: if product == Product::Turin { spl(FMC_SPL, "fmcSPL")? } else { 0 },
            bootloader: spl(BL_SPL, "blSPL")?,
            tee: spl(TEE_SPL, "teeSPL")?,
            snp: spl(SNP_SPL, "snpSPL")?,
            microcode: spl(UCODE_SPL, "ucodeSPL")?,
        })
    }

    /// Checks that every certificate of the chain is valid at `at`.
    pub fn check_validity(&self, at: OffsetDateTime) -> Result<(), ValidityError> {
        self.certs.iter().try_for_each(|c| c.check_validity(at))
    }
}

/// Why a PEM certificate file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PEM certificate {index}: {reason}")]
pub struct PemError {
    /// Position of the block in the file (0-based).
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Splits a PEM file into the exact DER bytes of each CERTIFICATE block, in order.
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, PemError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let index = out.len();
        let end = rest[start..].find(END).ok_or_else(|| PemError { index, reason: "no END line".into() })? + start + END.len();
        let (label, der_bytes) = der::pem::decode_vec(rest[start..end].as_bytes())
            .map_err(|e| PemError { index, reason: e.to_string() })?;
        if label != "CERTIFICATE" {
            return Err(PemError { index, reason: format!("label {label}") });
        }
        out.push(der_bytes);
        rest = &rest[end..];
    }
    Ok(out)
}
