//! ECDSA certificate chains with a pinned root: Intel's PCK chain (P-256,
//! SHA-256) behind a TDX quote and NVIDIA's device chain (P-384, SHA-384)
//! behind a GPU report.
//!
//! As for AMD's chain, the root certificate itself is an input; it is trusted
//! only when the SHA-384 of its SubjectPublicKeyInfo equals a pinned
//! fingerprint. Signatures are checked over the exact TBS bytes received.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use sha2::{Digest, Sha384};
use time::OffsetDateTime;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Why an ECDSA certificate chain is not trusted at the requested time.
/// Certificates are numbered from the leaf (0) to the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EcChainError {
    /// The chain does not have the length this kind of evidence always has.
    #[error("certificate chain has {actual} certificates; expected {expected}")]
    Length {
        /// How many were given.
        actual: usize,
        /// How many the vendor's chain has.
        expected: usize,
    },
    /// A certificate cannot be parsed.
    #[error("certificate {index} is malformed: {reason}")]
    Malformed {
        /// Position from the leaf.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// The root's public key is not the pinned vendor root.
    #[error("untrusted root: public key SHA-384 {fingerprint} is not the pinned {vendor} root")]
    UntrustedRoot {
        /// Whose root was expected.
        vendor: &'static str,
        /// Hex SHA-384 of the root's SubjectPublicKeyInfo.
        fingerprint: String,
    },
    /// A certificate's issuer is not the subject of the next one up.
    #[error("certificate {index} ({subject}): issuer does not name the certificate above it")]
    IssuerMismatch {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
    },
    /// An issuing certificate is not marked as a CA, so it may not sign certificates.
    #[error("certificate {index} ({subject}) signs another certificate but is not a CA")]
    NotCa {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
    },
    /// The signature algorithm is not ECDSA with the curve's hash, or the key is not on that curve.
    #[error("certificate {index} ({subject}) is not signed with ECDSA P-256/SHA-256 or P-384/SHA-384")]
    UnsupportedAlgorithm {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
    },
    /// The signature does not verify under the issuer's key.
    #[error("certificate {index} ({subject}): signature is invalid")]
    BadSignature {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
    },
    /// The time is before notBefore.
    #[error("certificate {index} ({subject}) is not valid before {not_before}")]
    NotYetValid {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
        /// RFC 3339.
        not_before: String,
    },
    /// The time is after notAfter.
    #[error("certificate {index} ({subject}) expired at {not_after}")]
    Expired {
        /// Position from the leaf.
        index: usize,
        /// Its subject CN.
        subject: String,
        /// RFC 3339.
        not_after: String,
    },
}

/// An ECDSA public key of one of the two curves the vendors use.
#[derive(Debug, Clone)]
pub enum EcKey {
    /// NIST P-256 (Intel).
    P256(p256::ecdsa::VerifyingKey),
    /// NIST P-384 (NVIDIA).
    P384(p384::ecdsa::VerifyingKey),
}

/// A parsed certificate with the exact bytes its signature covers.
#[derive(Debug, Clone)]
pub struct EcCert {
    /// The decoded certificate.
    pub cert: Certificate,
    tbs: Vec<u8>,
}

/// The exact TBSCertificate bytes: the first TLV inside the outer SEQUENCE.
pub(crate) fn tbs_bytes(der_bytes: &[u8]) -> Result<&[u8], der::Error> {
    let mut outer = SliceReader::new(der_bytes)?;
    let header = der::Header::decode(&mut outer)?;
    let mut body = SliceReader::new(outer.read_slice(header.length)?)?;
    body.tlv_bytes()
}

impl EcCert {
    /// Parses a DER certificate.
    pub fn parse(der_bytes: &[u8]) -> Result<Self, der::Error> {
        let cert = Certificate::from_der(der_bytes)?;
        let tbs = tbs_bytes(der_bytes)?.to_vec();
        Ok(EcCert { cert, tbs })
    }

    /// The subject's common name, or an empty string.
    pub fn subject_cn(&self) -> String {
        self.cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == COMMON_NAME)
            .and_then(|atv| {
                atv.value.decode_as::<String>().ok().or_else(|| {
                    atv.value.decode_as::<der::asn1::PrintableString>().ok().map(|s| s.to_string())
                })
            })
            .unwrap_or_default()
    }

    /// SHA-384 of the SubjectPublicKeyInfo DER.
    pub fn spki_sha384(&self) -> [u8; 48] {
        let spki = self.cert.tbs_certificate.subject_public_key_info.to_der().expect("re-encoding a parsed SPKI");
        Sha384::digest(spki).into()
    }

    /// The subject public key, if it is a P-256 or P-384 ECDSA key.
    pub fn ec_key(&self) -> Option<EcKey> {
        let spki = self.cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
        use p256::pkcs8::DecodePublicKey as _;
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            return Some(EcKey::P256(key));
        }
        p384::ecdsa::VerifyingKey::from_public_key_der(&spki).ok().map(EcKey::P384)
    }

    fn is_ca(&self) -> bool {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id == BASIC_CONSTRAINTS))
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// Verifies that `issuer` signed this certificate. The hash must be the
    /// one that belongs to the issuer's curve, so a weaker pairing is refused.
    fn signed_by(&self, issuer: &EcCert) -> Option<bool> {
        let sig = self.cert.signature.as_bytes()?;
        let alg = self.cert.signature_algorithm.oid;
        match issuer.ec_key()? {
            EcKey::P256(key) if alg == ECDSA_WITH_SHA256 => {
                use p256::ecdsa::signature::Verifier as _;
                let sig = p256::ecdsa::Signature::from_der(sig).ok()?;
                Some(key.verify(&self.tbs, &sig).is_ok())
            }
            EcKey::P384(key) if alg == ECDSA_WITH_SHA384 => {
                use p384::ecdsa::signature::Verifier as _;
                let sig = p384::ecdsa::Signature::from_der(sig).ok()?;
                Some(key.verify(&self.tbs, &sig).is_ok())
            }
            _ => None,
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Verifies a chain given leaf first, root last: the root's key is one of
/// `pins`, every certificate is signed by the next (the root by itself),
/// every issuer is a CA, and every certificate is valid at `at`.
pub fn verify_chain(
    chain: &[Vec<u8>],
    expected_len: usize,
    vendor: &'static str,
    pins: &[[u8; 48]],
    at: OffsetDateTime,
) -> Result<Vec<EcCert>, EcChainError> {
    if chain.len() != expected_len {
        return Err(EcChainError::Length { actual: chain.len(), expected: expected_len });
    }
    let certs = chain
        .iter()
        .enumerate()
        .map(|(index, der_bytes)| EcCert::parse(der_bytes).map_err(|e| EcChainError::Malformed { index, reason: e.to_string() }))
        .collect::<Result<Vec<_>, _>>()?;
    let root = certs.last().expect("expected_len is at least 1");
    let fingerprint = root.spki_sha384();
    if !pins.contains(&fingerprint) {
        return Err(EcChainError::UntrustedRoot { vendor, fingerprint: hex::encode(fingerprint) });
    }
    for (index, cert) in certs.iter().enumerate() {
        let issuer = certs.get(index + 1).unwrap_or(cert);
        let subject = cert.subject_cn();
        if cert.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(EcChainError::IssuerMismatch { index, subject });
        }
        if !issuer.is_ca() {
            return Err(EcChainError::NotCa { index: (index + 1).min(certs.len() - 1), subject: issuer.subject_cn() });
        }
        match cert.signed_by(issuer) {
            None => return Err(EcChainError::UnsupportedAlgorithm { index, subject }),
            Some(false) => return Err(EcChainError::BadSignature { index, subject }),
            Some(true) => {}
        }
    }
    for (index, cert) in certs.iter().enumerate() {
        let validity = &cert.cert.tbs_certificate.validity;
        let not_before = OffsetDateTime::from(validity.not_before.to_system_time());
        let not_after = OffsetDateTime::from(validity.not_after.to_system_time());
        if at < not_before {
            return Err(EcChainError::NotYetValid { index, subject: cert.subject_cn(), not_before: rfc3339(not_before) });
        }
        if at > not_after {
            return Err(EcChainError::Expired { index, subject: cert.subject_cn(), not_after: rfc3339(not_after) });
        }
    }
    Ok(certs)
}
