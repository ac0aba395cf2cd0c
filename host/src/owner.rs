//! `sealtune owner`: what a data owner runs on their own machine.

use crate::failure::{Failure, Outcome};
use crate::files::{self, Access};
use clap::Subcommand;
use sealtune_attestation::identity::IdentityKey;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an identity signing key (Ed25519, PKCS#8 PEM, mode 0600); prints the public key.
    Keygen {
        /// Where to write the private key; must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a fresh random challenge nonce (hex) for an enclave to answer.
    Challenge,
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Keygen { out } => {
            if out.exists() {
                return Err(Failure::input(format!("{} already exists; refusing to overwrite a key", out.display())));
            }
            let key = IdentityKey::generate();
            files::write_atomic(&out, key.to_pem().as_bytes(), Access::Private)?;
            println!("{}", hex::encode(key.public()));
            Ok(())
        }
        Command::Challenge => {
            let mut nonce = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
            println!("{}", hex::encode(nonce));
            Ok(())
        }
    }
}

/// Reads an identity key file.
pub(crate) fn read_identity(path: &std::path::Path) -> Result<IdentityKey, Failure> {
    let pem = zeroize::Zeroizing::new(files::read_text(path)?);
    IdentityKey::from_pem(&pem).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}
