//! The `quorumkv` binary: `quorumkv serve` runs a node; the other subcommands are a small
//! client for the HTTP API.

mod cli;
mod client;
mod listener;
mod serve;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::main(args),
        Command::Get(args) => client::get(&args),
        Command::Put(args) => client::put(&args),
        Command::Delete(args) => client::delete(&args),
        Command::Cluster(args) => client::cluster(&args),
        Command::Health { endpoint } => client::health(&endpoint),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quorumkv: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
