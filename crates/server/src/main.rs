//! The `quorumkv` binary: `quorumkv serve` runs a node; the other subcommands are a small
//! client for the HTTP API.

mod background;
mod cli;
mod client;
mod config;
mod credentials;
mod kube;
mod listener;
mod node_config;
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

/// Bounds the malloc arenas glibc may create (`M_ARENA_MAX`) to one per core the process
/// may use, at least two; called first thing in `main`, before any other thread exists.
///
/// RocksDB is C++ and allocates through glibc's malloc, not through the global allocator
/// above: memtable blocks, block-cache entries, table readers. glibc gives each thread
/// that contends for the heap an arena of its own, up to eight per core, and memory freed
/// in one arena serves only that arena. Under 20 minutes of writes over 5 million keys on
/// two cores, a node's resident set grew to 325-370 MiB with the default, and to 230-251
/// MiB with two arenas, at the same throughput (BENCHMARKS.md, "Memory over 20
/// minutes"). One arena per core keeps threads from queueing for an arena on a larger
/// machine. The Rust side, where most allocations happen, is unaffected: it is served by
/// mimalloc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets a tunable of the C allocator; it takes no pointers and is
    // called before any other thread could be allocating.
    let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    if done != 1 {
        eprintln!("quorumkv: could not limit malloc arenas; memory use may be higher");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(error) = config::apply(&args) {
        eprintln!("quorumkv: {error:#}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Serve(args) => serve::main(*args),
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
