//! `sealtune dp`: the privacy accountant on the command line.

use crate::failure::{Failure, Outcome};
use clap::{Args, Subcommand, ValueEnum};
use sealtune_attestation::accountant::{calibrate_sigma, AccountantError, AccountantKind, Segment};
use serde::Serialize;

/// Privacy accounting for DP-SGD (Poisson sampling, Gaussian noise, add/remove
/// one unit).
#[derive(Args)]
pub(crate) struct Dp {
    #[command(subcommand)]
    command: DpCommand,
}

#[derive(Subcommand)]
enum DpCommand {
    /// Print the ε that a run spends at a given δ.
    Epsilon(EpsilonArgs),
    /// Print the smallest noise multiplier that keeps a run within (ε, δ).
    Calibrate(CalibrateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Accountant {
    /// Rényi DP (as TF-Privacy, Opacus and dp_accounting).
    Rdp,
    /// Privacy loss distributions: a certified, tighter bound.
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

#[derive(Args)]
struct EpsilonArgs {
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Noise multiplier σ (noise standard deviation over clipping norm), > 0.
    #[arg(long)]
    noise_multiplier: f64,
    /// Number of training steps, ≥ 1.
    #[arg(long)]
    steps: u64,
    /// Target δ, in (0, 1).
    #[arg(long)]
    delta: f64,
    /// Which accountant computes ε.
    #[arg(long, value_enum, default_value = "pld")]
    accountant: Accountant,
    /// Print one JSON object instead of the bare number.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Number of training steps, ≥ 1.
    #[arg(long)]
    steps: u64,
    /// Target δ, in (0, 1).
    #[arg(long)]
    delta: f64,
    /// Target ε, > 0.
    #[arg(long)]
    epsilon: f64,
    /// Which accountant computes ε.
    #[arg(long, value_enum, default_value = "pld")]
    accountant: Accountant,
    /// Print one JSON object instead of the bare number.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EpsilonReport {
    accountant: &'static str,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    epsilon: f64,
}

#[derive(Serialize)]
struct CalibrateReport {
    accountant: &'static str,
    q: f64,
    steps: u64,
    delta: f64,
    epsilon: f64,
    sigma: f64,
}

pub(crate) fn run(dp: Dp) -> Outcome {
    match dp.command {
        DpCommand::Epsilon(a) => {
            let kind = AccountantKind::from(a.accountant);
            let segment = Segment::new(a.sampling_rate, a.noise_multiplier, a.steps).map_err(failure)?;
            let epsilon = kind.epsilon(&[segment], a.delta).map_err(failure)?;
            let report = EpsilonReport {
                accountant: kind.name(),
                q: a.sampling_rate,
                sigma: a.noise_multiplier,
                steps: a.steps,
                delta: a.delta,
                epsilon,
            };
            print(a.json, epsilon, &report)
        }
        DpCommand::Calibrate(a) => {
            let kind = AccountantKind::from(a.accountant);
            let sigma = calibrate_sigma(kind, a.sampling_rate, a.steps, a.delta, a.epsilon).map_err(failure)?;
            let report = CalibrateReport {
                accountant: kind.name(),
                q: a.sampling_rate,
                steps: a.steps,
                delta: a.delta,
                epsilon: a.epsilon,
                sigma,
            };
            print(a.json, sigma, &report)
        }
    }
}

fn print(json: bool, value: f64, report: &impl Serialize) -> Outcome {
    if json {
        let line = serde_json::to_string(report).map_err(|e| Failure::input(format!("cannot encode JSON: {e}")))?;
        println!("{line}");
    } else {
        println!("{value}");
    }
    Ok(())
}

/// Every accountant error is about the request (an argument out of range, or
/// parameters no ε can be certified for): exit 2, naming the flag.
fn failure(err: AccountantError) -> Failure {
    let flag = match err {
        AccountantError::InvalidSamplingRate(_) => "--sampling-rate",
        AccountantError::InvalidNoiseMultiplier(_) => "--noise-multiplier",
        AccountantError::InvalidSteps => "--steps",
        AccountantError::InvalidDelta(_) | AccountantError::PrecisionExhausted { .. } => "--delta",
        AccountantError::InvalidEpsilon(_)
        | AccountantError::TargetUnreachable { .. }
        | AccountantError::TargetTooLoose { .. } => "--epsilon",
        _ => "dp",
    };
    Failure::input(format!("{flag}: {err}"))
}
