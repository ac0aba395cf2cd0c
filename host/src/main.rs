//! `sealtune`: the command-line tool for data owners, model vendors and
//! operators. It runs on untrusted machines and never sees another party's
//! plaintext.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod attest;
mod dp;
mod failure;
mod files;
mod host_cmd;
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
    /// The privacy accountant: ε of a DP-SGD run, or the noise a target ε needs.
    #[command(subcommand)]
    Dp(dp::Command),
    /// Operators: the blob store, and launching and relaying to the enclave.
    #[command(subcommand)]
    Host(host_cmd::Command),
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
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Owner(c) => owner::run(c),
        Command::Vendor(c) => vendor::run(c),
        Command::Sim(c) => sim::run(c),
        Command::Attest(c) => attest::run(c),
        Command::Dp(c) => dp::run(c),
        Command::Host(c) => host_cmd::run(c),
        Command::Model { command } => model::run(command),
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
