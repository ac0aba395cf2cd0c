//! `sealtune-enclave`: the trusted program.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod serve_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sealtune-enclave", version, about = "The trusted program: key release, decryption, DP-SGD training")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this build's launch measurement on the simulated platform (hex).
    Measurement,
    /// Run one job: serve attested TLS (owners' grants, status, outputs), fetch the
    /// sealed corpora and the base model from the host's store, train, publish.
    Serve(serve_cmd::Args),
    /// DP-SGD fine-tuning of LoRA adapters on a plaintext JSON Lines file (development
    /// entry point). Writes a PEFT adapter and training-summary.json to --out.
    Train(train_cmd::TrainArgs),
}

fn main() -> ExitCode {
    sealtune_enclave::model::settle_thread_settings();
    let result = match Cli::parse().command {
        Command::Measurement => sealtune_enclave::measurement::own_measurement()
            .map(|m| println!("{}", hex::encode(m)))
            .map_err(|e| format!("cannot measure this executable: {e}")),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
