//! Ed25519 identity keys of data owners and model vendors. They sign key
//! grants and job manifests; their public halves name owners in manifests.
//! Stored as PKCS#8 PEM (RFC 8410).

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

/// An identity signing key. No `Debug` or `Clone`: the key never appears in
/// output, and the inner key zeroizes itself on drop.
pub struct IdentityKey(SigningKey);

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file is not a PKCS#8 Ed25519 private key (its bytes are not echoed).
    #[error("not a PKCS#8 PEM Ed25519 private key")]
    Malformed,
}

impl IdentityKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        IdentityKey(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 PEM key.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        SigningKey::from_pkcs8_pem(pem).map(IdentityKey).map_err(|_| IdentityError::Malformed)
    }

    /// The PKCS#8 PEM encoding, zeroized when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let pem = self.0.to_pkcs8_pem(Default::default()).expect("encoding an Ed25519 key");
        Zeroizing::new(pem.to_string())
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// Verifies an Ed25519 signature strictly (no malleable or small-order keys).
pub fn verify_signature(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(public)
        .is_ok_and(|key| key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok())
}
