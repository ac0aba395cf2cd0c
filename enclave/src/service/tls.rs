//! The enclave's TLS 1.3 server identity: a self-signed certificate for the
//! enclave's Ed25519 signing key, with handshakes signed by that key in place.
//! The private key is never encoded (no PKCS#8 for rustls or rcgen): both
//! sign through the same in-memory key.

use crate::keys::EnclaveKeys;
use ed25519_dalek::{Signer as _, SigningKey};
use rustls::crypto::ring;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};
use sealtune_attestation::protocol::TLS_SERVER_NAME;
use std::sync::Arc;

/// Why the TLS server configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate cannot be produced.
    #[error("cannot create the enclave's TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refuses the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The signing key as rustls and rcgen see it. `Debug` names the algorithm only.
struct EnclaveSigner {
    key: Arc<SigningKey>,
    public: [u8; 32],
}

impl EnclaveSigner {
    fn new(keys: &EnclaveKeys) -> Self {
        EnclaveSigner { key: keys.shared_signing_key(), public: keys.public().signing }
    }
}

impl std::fmt::Debug for EnclaveSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnclaveSigner(ed25519)")
    }
}

impl rustls::sign::SigningKey for EnclaveSigner {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(EnclaveSigner { key: Arc::clone(&self.key), public: self.public }) as _)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl rustls::sign::Signer for EnclaveSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.key.sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

impl rcgen::RemoteKeyPair for EnclaveSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(message).to_bytes().to_vec())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A self-signed certificate (DER) whose subject key is the enclave's
/// signing key. Clients take only the key from it; validity and names carry
/// no trust.
pub fn certificate(keys: &EnclaveKeys) -> Result<CertificateDer<'static>, TlsSetupError> {
    let mut params = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, TLS_SERVER_NAME);
    // rcgen draws serials only with its own crypto backend, which is left out.
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01; // positive, and no leading zero byte in DER
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key_pair = rcgen::KeyPair::from_remote(Box::new(EnclaveSigner::new(keys)))?;
    Ok(params.self_signed(&key_pair)?.der().clone())
}

/// The rustls server configuration: TLS 1.3 only, ring's algorithms, the
/// self-signed certificate, no client authentication (clients authenticate
/// inside the session with signed grants) and no session tickets (every
/// session is a full handshake with its own exporter).
pub fn server_config(keys: &EnclaveKeys) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let certified = CertifiedKey::new(vec![certificate(keys)?], Arc::new(EnclaveSigner::new(keys)));
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
