//! `sealtune`: the command-line tool for data owners, model vendors and
//! operators. It runs on untrusted machines and never sees another party's
//! plaintext.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod attest;
mod dp;
mod failure;
mod files;
mod model;
mod owner;
mod sim;
mod vendor;

use clap::{Parser, Subcommand};
use failure::Outcome;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sealtune", version, about = "Confidential DP fine-tuning: owner, vendor and operator tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Data owners: keys, challenges and key grants.
    #[command(subcommand)]
    Owner(owner::Command),
    /// Model vendors: job manifests.
    #[command(subcommand)]
    Vendor(vendor::Command),
    /// Verify attestation evidence offline.
    #[command(subcommand)]
    Attest(attest::Command),
    /// The simulated SEV-SNP platform for development and tests.
    #[command(subcommand)]
    Sim(sim::Command),
    /// Check base models and LoRA adapters: generate text, measure perplexity.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Privacy accounting: the ε of a DP-SGD run, or the noise a budget needs.
    Dp(dp::Dp),
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Owner(c) => owner::run(c),
        Command::Vendor(c) => vendor::run(c),
        Command::Sim(c) => sim::run(c),
        Command::Attest(c) => attest::run(c),
        Command::Model { command } => model::run(command),
        Command::Dp(args) => dp::run(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}
