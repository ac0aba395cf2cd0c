//! `sealtune`: the command-line tool for data owners, model vendors and
//! operators. It runs on untrusted machines and never sees another party's
//! plaintext.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod attest;
mod budget;
mod dp;
mod failure;
mod files;
mod host_cmd;
mod model;
mod owner;
mod progress;
mod sim;
mod vendor;
mod verify;

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
    /// Data owners: keys, sealing, uploads and key grants.
    #[command(subcommand)]
    Owner(owner::Command),
    /// Model vendors: keys, model uploads, signed jobs, fetching outputs.
    #[command(subcommand)]
    Vendor(vendor::Command),
    /// Vendors: verify a job's outputs and receipt offline.
    Verify(verify::VerifyArgs),
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

/// The async runtime the network commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, failure::Failure> {
    tokio::runtime::Runtime::new().map_err(|e| failure::Failure::input(format!("cannot start the async runtime: {e}")))
}

/// Uploads a file to the host's store with a progress bar (on a terminal); returns its SHA-256.
fn upload(host: &str, path: &std::path::Path) -> Result<[u8; 32], failure::Failure> {
    let bar = progress::Transfer::new("upload");
    let result = runtime()?.block_on(sealtune_host::store::upload_reporting(host, path, &mut |sent, total| bar.update(sent, total)));
    bar.finish();
    result.map_err(|e| failure::Failure::rejected(format!("upload of {} to {host} failed: {e}", path.display())))
}

/// Prints a command's result on one line (JSON with `--json`) and flushes
/// it: a script may be waiting for it.
fn print_result(json: bool, value: serde_json::Value, text: String) -> Outcome {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let line = if json { value.to_string() } else { text };
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| failure::Failure::input(format!("cannot write to standard output: {e}")))
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Owner(c) => owner::run(c),
        Command::Vendor(c) => vendor::run(c),
        Command::Verify(args) => verify::run(args),
        Command::Sim(c) => sim::run(c),
        Command::Attest(c) => attest::run(c),
        Command::Dp(c) => dp::run(c),
        Command::Host(c) => host_cmd::run(c),
        Command::Model { command } => model::run(command),
    }
}

fn main() -> ExitCode {
    sealtune_enclave::model::settle_thread_settings();
    let cli = Cli::parse();
    // Logs (the store's and the relay's) go to standard error; results to standard output.
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}
