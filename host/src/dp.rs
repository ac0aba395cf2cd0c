//! `sealtune dp`: the privacy accountant on the command line.

use crate::failure::{Failure, Outcome};
use clap::{Subcommand, ValueEnum};
use sealtune_attestation::accountant::{self, AccountantError, AccountantKind, Segment};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Accountant {
    /// Rényi DP (as TF-Privacy, Opacus and dp_accounting).
    Rdp,
    /// Privacy loss distributions (certified, tighter).
    Pld,
}

impl From<Accountant> for AccountantKind {
    fn from(a: Accountant) -> Self {
        match a {
            Accountant::Rdp => AccountantKind::Rdp,
            Accountant::Pld => AccountantKind::Pld,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// ε of DP-SGD with Poisson sampling rate Q, noise multiplier S and T steps.
    Epsilon {
        /// Poisson sampling rate q ∈ (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Noise multiplier σ > 0.
        #[arg(long)]
        noise_multiplier: f64,
        /// Number of steps ≥ 1.
        #[arg(long)]
        steps: u64,
        /// δ ∈ (0, 1).
        #[arg(long)]
        delta: f64,
        /// Which accountant.
        #[arg(long, value_enum, default_value = "pld")]
        accountant: Accountant,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The smallest noise multiplier σ that keeps ε at or below a target.
    Calibrate {
        /// Poisson sampling rate q ∈ (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Number of steps ≥ 1.
        #[arg(long)]
        steps: u64,
        /// δ ∈ (0, 1).
        #[arg(long)]
        delta: f64,
        /// Target ε > 0.
        #[arg(long)]
        epsilon: f64,
        /// Which accountant.
        #[arg(long, value_enum, default_value = "pld")]
        accountant: Accountant,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Invalid arguments are unusable input (exit 2), named as the flag.
fn failure(e: AccountantError) -> Failure {
    let flag = match e {
        AccountantError::InvalidSamplingRate(_) => "--sampling-rate",
        AccountantError::InvalidNoiseMultiplier(_) => "--noise-multiplier",
        AccountantError::InvalidSteps => "--steps",
        AccountantError::InvalidDelta(_) => "--delta",
        AccountantError::InvalidEpsilon(_) => "--epsilon",
        _ => return Failure::rejected(e),
    };
    Failure::input(format!("{flag}: {e}"))
}

pub(crate) fn run(command: Command) -> Outcome {
    match command {
        Command::Epsilon { sampling_rate, noise_multiplier, steps, delta, accountant, json } => {
            let kind = AccountantKind::from(accountant);
            let segment = Segment { sampling_rate, noise_multiplier, steps };
            let eps = accountant::epsilon(kind, &[segment], delta).map_err(failure)?;
            if json {
                let value = serde_json::json!({
                    "accountant": kind.name(), "q": sampling_rate, "sigma": noise_multiplier,
                    "steps": steps, "delta": delta, "epsilon": eps,
                });
                println!("{value}");
            } else {
                println!("{eps}");
            }
            Ok(())
        }
        Command::Calibrate { sampling_rate, steps, delta, epsilon, accountant, json } => {
            let kind = AccountantKind::from(accountant);
            let sigma = accountant::calibrate_sigma(kind, sampling_rate, steps, delta, epsilon).map_err(failure)?;
            if json {
                let value = serde_json::json!({
                    "accountant": kind.name(), "q": sampling_rate, "steps": steps,
                    "delta": delta, "epsilon": epsilon, "sigma": sigma,
                });
                println!("{value}");
            } else {
                println!("{sigma}");
            }
            Ok(())
        }
    }
}
