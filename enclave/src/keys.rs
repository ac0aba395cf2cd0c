//! The enclave's own keys, generated inside it at start and never written
//! out: an X25519 key that grants are sealed to, and an Ed25519 key that signs
//! receipts and is the key of the enclave's TLS certificate.

use ed25519_dalek::{Signer, SigningKey};
use hpke::{Kem, Serializable};
use sealtune_attestation::evidence::EnclavePublicKeys;
use sealtune_attestation::grant::GrantKem;
use std::sync::Arc;

/// The enclave's key pairs. No `Debug` or `Clone`; both private keys zeroize
/// on drop (the signing key when the TLS configuration that shares it is
/// dropped too).
pub struct EnclaveKeys {
    kem_private: <GrantKem as Kem>::PrivateKey,
    kem_public: <GrantKem as Kem>::PublicKey,
    signing: Arc<SigningKey>,
}

impl EnclaveKeys {
    /// Fresh keys from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let (kem_private, kem_public) = GrantKem::gen_keypair(&mut rand_core::OsRng);
        EnclaveKeys { kem_private, kem_public, signing: Arc::new(SigningKey::generate(&mut rand_core::OsRng)) }
    }

    /// The public halves, as bound into evidence.
    pub fn public(&self) -> EnclavePublicKeys {
        EnclavePublicKeys { kem: self.kem_public.to_bytes().into(), signing: self.signing.verifying_key().to_bytes() }
    }

    /// Signs `message` with the enclave's Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The signing key itself, for the TLS server to sign handshakes with in
    /// place; it never leaves the enclave's memory in any encoding.
    pub(crate) fn shared_signing_key(&self) -> Arc<SigningKey> {
        Arc::clone(&self.signing)
    }

    pub(crate) fn kem_private(&self) -> &<GrantKem as Kem>::PrivateKey {
        &self.kem_private
    }
}
