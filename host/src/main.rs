//! `sealtune`: the command-line tool for data owners, model vendors and
//! operators. It runs on untrusted machines and never sees another party's
//! plaintext.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod dp;
mod failure;

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
    /// Privacy accounting: the ε of a DP-SGD run, or the noise a budget needs.
    Dp(dp::Dp),
}

fn run(command: Command) -> Outcome {
    match command {
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
