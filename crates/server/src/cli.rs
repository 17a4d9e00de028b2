//! Command-line flags. Every flag of `serve` also reads from an environment variable
//! (`QUORUMKV_<FLAG>`), so a container can be configured without a command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A leaderless, quorum-replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "quorumkv", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Read a key.
    Get(GetArgs),
    /// Write a key (the value is the argument, or standard input).
    Put(PutArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// Cluster administration.
    Cluster(ClusterArgs),
}

/// fsync policy of the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SyncArg {
    /// Write the WAL to the OS on every write; a process crash loses nothing, a power loss
    /// may lose the last writes.
    None,
    /// fsync the WAL before acknowledging a write; a power loss loses nothing.
    Always,
}

/// `quorumkv serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id, unique in the cluster and stable across restarts.
    #[arg(long, env = "QUORUMKV_NODE_ID")]
    pub node_id: String,
    /// Address to listen on for client, admin and internode traffic.
    #[arg(long, env = "QUORUMKV_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Directory of this node's RocksDB database (created if missing).
    #[arg(long, env = "QUORUMKV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The other nodes, `host:port`, comma-separated (this node's own address may be listed).
    #[arg(long, env = "QUORUMKV_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Address the other nodes reach this one at; defaults to --listen.
    #[arg(long, env = "QUORUMKV_ADVERTISE")]
    pub advertise: Option<String>,
    /// Replication factor of buckets that were not configured.
    #[arg(long, env = "QUORUMKV_DEFAULT_N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub default_n: u16,
    /// fsync policy of the write-ahead log.
    #[arg(long, env = "QUORUMKV_SYNC", value_enum, default_value_t = SyncArg::None)]
    pub sync: SyncArg,
    /// The largest value a client may write, in bytes.
    #[arg(long, env = "QUORUMKV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub max_value_bytes: u64,
    /// Log format.
    #[arg(long, env = "QUORUMKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a client command sends its request.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// Base URL of any node.
    #[arg(
        long,
        env = "QUORUMKV_ENDPOINT",
        default_value = "http://127.0.0.1:7001"
    )]
    pub endpoint: String,
    /// Request timeout in milliseconds (sent as timeout_ms).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// `quorumkv get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Bucket name.
    pub bucket: String,
    /// Key (any text; it is percent-encoded on the wire).
    pub key: String,
    /// Read quorum: a number, one, quorum or all.
    #[arg(long)]
    pub r: Option<String>,
    /// Print the causal context token on standard error.
    #[arg(long)]
    pub show_context: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // documented by its fields
    pub endpoint: Endpoint,
}

/// `quorumkv put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Bucket name.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The value; read from standard input when absent.
    pub value: Option<String>,
    /// Write quorum: a number, one, quorum or all.
    #[arg(long)]
    pub w: Option<String>,
    /// Content type stored with the value.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    /// Causal context token from an earlier read: the write supersedes what it covers.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)] // documented by its fields
    pub endpoint: Endpoint,
}

/// `quorumkv delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Bucket name.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Write quorum: a number, one, quorum or all.
    #[arg(long)]
    pub w: Option<String>,
    /// Causal context token from an earlier read.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)] // documented by its fields
    pub endpoint: Endpoint,
}

/// `quorumkv cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `quorumkv cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members and their status as one node sees them.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        endpoint: Endpoint,
    },
}
