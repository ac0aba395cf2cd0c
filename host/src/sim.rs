//! `sealtune sim`: the simulated SEV-SNP platform for development and tests.

use crate::failure::{Failure, Outcome};
use clap::Subcommand;
use sealtune_enclave::tee::sim::SimPlatform;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a simulated platform (ARK, ASK, VCEK and the VCEK key) in a new directory.
    Init {
        /// Directory to create; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Init { out } => {
            if out.exists() {
                return Err(Failure::input(format!("{} already exists", out.display())));
            }
            let staging = tempfile::Builder::new()
                .prefix(".sim-")
                .tempdir_in(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")))
                .map_err(|e| Failure::input(format!("cannot create {}: {e}", out.display())))?;
            SimPlatform::generate()
                .save(staging.path())
                .map_err(|e| Failure::input(format!("cannot write the simulated platform: {e}")))?;
            std::fs::rename(staging.keep(), &out)
                .map_err(|e| Failure::input(format!("cannot create {}: {e}", out.display())))?;
            eprintln!("warning: a SIMULATED platform proves nothing about confidentiality; verifiers refuse it unless their policy sets allow_simulated = true");
            println!("{}", out.display());
            Ok(())
        }
    }
}
