//! The enclave's side of attestation-gated key release: answer a verifier's
//! challenge with evidence that binds the nonce, the enclave's keys and the
//! job manifest; then accept a key grant only if it is for this enclave, this
//! job and a dataset the job lists.

use crate::keys::EnclaveKeys;
use crate::tee::{Tee, TeeError};
use hpke::{Deserializable, Kem, OpModeR};
use sealtune_attestation::binding::{attested_tls_report_data, TLS_EXPORTER_LEN};
use sealtune_attestation::evidence::{Evidence, EVIDENCE_VERSION};
use sealtune_attestation::grant::{check_grant, hpke_info, GrantAead, GrantError, GrantKdf, GrantKem};
use sealtune_attestation::manifest::JobManifest;
use zeroize::Zeroizing;

/// A data-encryption key released to this enclave, with the dataset it opens.
pub struct ReleasedKey {
    /// Commitment of the dataset.
    pub dataset: [u8; 32],
    /// The owner's DEK; zeroized on drop, never printed.
    pub dek: Zeroizing<[u8; 32]>,
}

/// An enclave waiting for key grants for one job.
pub struct KeyRelease<T: Tee> {
    manifest: JobManifest,
    manifest_hash: [u8; 32],
    keys: EnclaveKeys,
    tee: T,
    issued: Vec<[u8; 32]>,
}

impl<T: Tee> KeyRelease<T> {
    /// Starts key release for `manifest` with fresh enclave keys.
    pub fn new(manifest: JobManifest, tee: T) -> Self {
        let manifest_hash = manifest.hash();
        KeyRelease { manifest, manifest_hash, keys: EnclaveKeys::generate(), tee, issued: Vec::new() }
    }

    /// The job this enclave runs.
    pub fn manifest(&self) -> &JobManifest {
        &self.manifest
    }

    /// The enclave's keys.
    pub fn keys(&self) -> &EnclaveKeys {
        &self.keys
    }

    /// The platform the enclave runs on.
    pub fn tee(&self) -> &T {
        &self.tee
    }

    /// Evidence answering the challenge `nonce` inside the TLS session whose
    /// exporter value is `exporter`.
    pub fn challenge_session(&mut self, exporter: &[u8; TLS_EXPORTER_LEN], nonce: &[u8; 32]) -> Result<Evidence, TeeError> {
        let report_data = attested_tls_report_data(exporter, nonce, &self.keys.public(), &self.manifest_hash);
        self.issue(&report_data)
    }

    fn issue(&mut self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let keys = self.keys.public();
        let raw = self.tee.attest(report_data)?;
        let evidence = Evidence {
            version: EVIDENCE_VERSION,
            tee: raw.tee,
            report: raw.report,
            certs: raw.certs.into_iter().map(Into::into).collect(),
            keys,
        };
        self.issued.push(evidence.digest());
        Ok(evidence)
    }

    /// Checks a grant and opens the DEK it carries.
    pub fn accept(&self, grant: &[u8]) -> Result<ReleasedKey, GrantError> {
        let body = check_grant(grant, &self.manifest)?;
        if body.recipient != self.keys.public().kem {
            return Err(GrantError::WrongEnclave);
        }
        if !self.issued.contains(&body.evidence_digest) {
            return Err(GrantError::UnknownEvidence);
        }
        let encapsulated = <GrantKem as Kem>::EncappedKey::from_bytes(&body.encapsulated_key)
            .map_err(|_| GrantError::Decryption)?;
        let info = hpke_info(&self.manifest_hash, &body.evidence_digest, &body.dataset);
        let dek = hpke::single_shot_open::<GrantAead, GrantKdf, GrantKem>(
            &OpModeR::Base,
            self.keys.kem_private(),
            &encapsulated,
            &info,
            &body.sealed_key,
            &[],
        )
        .map(Zeroizing::new)
        .map_err(|_| GrantError::Decryption)?;
        let dek: [u8; 32] = dek.as_slice().try_into().map_err(|_| GrantError::Decryption)?;
        Ok(ReleasedKey { dataset: body.dataset, dek: Zeroizing::new(dek) })
    }
}
