//! The `quorumkv` binary: `quorumkv serve` runs a node; the other subcommands are a small
//! client for the HTTP API.

mod cli;
mod client;
mod config;
mod kube;
mod listener;
mod serve;
mod tls;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc rather than glibc's allocator: a node allocates and frees many small buffers
/// per request (messages, records, futures) on several threads, where glibc's malloc
/// spent about a tenth of the CPU in profiles; mimalloc's thread-local free lists make
/// that a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(error) = config::apply(&args) {
        eprintln!("quorumkv: {error:#}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse_from(args);
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
