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
    /// Run a node. Boxed: its options outweigh every other command's several times over.
    Serve(Box<ServeArgs>),
    /// Read a key.
    Get(GetArgs),
    /// Write a key (the value is the argument, or standard input).
    Put(PutArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// Cluster administration.
    Cluster(ClusterArgs),
    /// Exits 0 when the node answers its liveness probe (GET /v1/health, which needs no
    /// token): for container health checks.
    Health {
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        endpoint: Endpoint,
    },
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
    /// TOML file of options (keys are these long flags without dashes); flags and
    /// QUORUMKV_* variables take precedence over it.
    #[arg(long, env = "QUORUMKV_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Local IP address every connection to another node leaves from; by default the OS
    /// picks one per peer. Give it on a host with several addresses, so that peers (and
    /// firewall rules) see this node at one address.
    #[arg(long, env = "QUORUMKV_INTERNODE_SOURCE_IP")]
    pub internode_source_ip: Option<std::net::IpAddr>,
    /// Replication factor of buckets that were not configured.
    #[arg(long, env = "QUORUMKV_DEFAULT_N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub default_n: u16,
    /// fsync policy of the write-ahead log.
    #[arg(long, env = "QUORUMKV_SYNC", value_enum, default_value_t = SyncArg::None)]
    pub sync: SyncArg,
    /// RocksDB's block cache, in MiB: recently read blocks of every column family. Part of
    /// the node's memory with --memtable-mib (see BENCHMARKS.md, "Memory over 20 minutes").
    #[arg(long, env = "QUORUMKV_BLOCK_CACHE_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub block_cache_mib: u32,
    /// What RocksDB's memtables may hold together, in MiB; past it the largest is flushed
    /// to disk.
    #[arg(long, env = "QUORUMKV_MEMTABLE_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(8..=65_536))]
    pub memtable_mib: u32,
    /// Threads that run requests (the async runtime's workers); by default one per core
    /// the process may use. Nodes that share a machine each take their share of its cores
    /// (see BENCHMARKS.md, "Threads per node"). With one, the node runs a single-threaded
    /// scheduler, which costs less per request than a pool of one ("One scheduler thread").
    #[arg(long, env = "QUORUMKV_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// The largest value a client may write, in bytes.
    #[arg(long, env = "QUORUMKV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub max_value_bytes: u64,
    /// The most siblings a key may hold: a write that would add one more without
    /// resolving any is refused with 409 `too_many_siblings` (Riak's `max_siblings`).
    #[arg(long, env = "QUORUMKV_MAX_SIBLINGS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_siblings: u32,
    /// The largest record a key may have, in bytes (all its siblings together): a write
    /// that would pass it is refused with 413 `object_too_large`. At least twice
    /// `--max-value-bytes`.
    #[arg(long, env = "QUORUMKV_MAX_OBJECT_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_object_bytes: u64,
    /// The most entries a key's clock may hold (one per start of each node that minted a
    /// write of it): a write that would pass it is refused with 409 `clock_too_large`;
    /// deletes are not, and a key written again once its delete is reaped starts anew.
    /// At most 256, so that a causal context always fits the 8 KiB a client sends back.
    #[arg(long, env = "QUORUMKV_MAX_CLOCK_ENTRIES", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(2..=256))]
    pub max_clock_entries: u16,
    /// The most client and peer connections served at once. Past it, a new connection
    /// takes one of the --peer-connections kept for peers: an internode request is served
    /// on it, any other gets 503 `overloaded`; when those are held too, new connections
    /// wait until one closes.
    #[arg(long, env = "QUORUMKV_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Connections kept for the node's peers beyond --max-connections, taken only once
    /// every other slot is held and serving internode requests only: clients together
    /// cannot take what peers need to see the node up and replicate to it.
    #[arg(long, env = "QUORUMKV_PEER_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub peer_connections: u32,
    /// The most connections served at once from one client address; one more from it is
    /// closed as soon as it is accepted. Keep it under --max-connections, so that one
    /// client cannot take every slot from the others and from the node's peers.
    #[arg(long, env = "QUORUMKV_MAX_CONNECTIONS_PER_IP", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections_per_ip: u32,
    /// How long a client may take to send a request's head (request line and headers), in
    /// milliseconds; also how long an idle kept-alive connection stays open.
    #[arg(long, env = "QUORUMKV_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_timeout_ms: u64,
    /// How long a request may take from its head to its response, body included, in
    /// milliseconds; past it the node answers 408. Keep it above the largest `timeout_ms`
    /// a request may ask for (60000).
    #[arg(long, env = "QUORUMKV_REQUEST_TIMEOUT_MS", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub request_timeout_ms: u64,
    /// Log format.
    #[arg(long, env = "QUORUMKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Keep hints for owners a write could not reach, and let sloppy quorums use
    /// fallbacks (`false`: strict placement, no hints).
    #[arg(long, env = "QUORUMKV_HINTED_HANDOFF", default_value_t = true, action = clap::ArgAction::Set)]
    pub hinted_handoff: bool,
    /// Repair stale owners after reads (a request can still turn it off with read_repair=false).
    #[arg(long, env = "QUORUMKV_READ_REPAIR", default_value_t = true, action = clap::ArgAction::Set)]
    pub read_repair: bool,
    /// The most hints this node keeps; past it, writes for down owners count one
    /// acknowledgement fewer and anti-entropy repairs the keys later.
    #[arg(long, env = "QUORUMKV_MAX_HINTS", default_value_t = 1_000_000)]
    pub max_hints: u64,
    /// How long a hint is kept before it is dropped, in seconds.
    #[arg(long, env = "QUORUMKV_HINT_TTL_SECS", default_value_t = 3 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub hint_ttl_secs: u64,
    /// How often this node compares its anti-entropy hash trees with replica peers and
    /// exchanges the keys that differ, in milliseconds; 0 turns anti-entropy off.
    #[arg(
        long,
        env = "QUORUMKV_ANTI_ENTROPY_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub anti_entropy_interval_ms: u64,
    /// How long a tombstone is kept, in seconds, once every owner holds it (like
    /// Cassandra's gc_grace_seconds); at least --hint-ttl-secs. A node down for longer must
    /// be repaired before it rejoins.
    #[arg(long, env = "QUORUMKV_TOMBSTONE_GRACE_SECS", default_value_t = 10 * 24 * 3600)]
    pub tombstone_grace_secs: u64,
    /// How long after a membership change commits this node drops its copies of the
    /// partitions it no longer owns, in seconds (at least 5, the time gossip is assumed to
    /// take); 0 leaves them until `quorumkv cluster cleanup` asks.
    #[arg(long, env = "QUORUMKV_CLEANUP_DELAY_SECS", default_value_t = 10)]
    pub cleanup_delay_secs: u64,
    /// File of client bearer tokens, one per line (each at least 16 characters): when
    /// given, every route but the probes (/v1/health, /v1/ready) and the status page shell
    /// needs one (401 otherwise), and the admin routes need an admin token (403 otherwise).
    #[arg(long, env = "QUORUMKV_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Origins (`scheme://host[:port]`, comma-separated) of web pages that may call this
    /// node besides its own status page, e.g. a dashboard's; a request from any other
    /// page's origin is refused with 403 `forbidden_origin`.
    #[arg(long, env = "QUORUMKV_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// File of admin bearer tokens, one per line (each at least 16 characters): the only
    /// tokens that may call the admin routes (leave, remove, cleanup, bucket properties);
    /// they reach the data routes too. Either token file turns authentication on.
    #[arg(long, env = "QUORUMKV_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the cluster secret (at least 16 characters): when given, internode
    /// routes need it and this node sends it. Give every node the same file. During a
    /// rotation it holds two lines: the first is sent, both are accepted.
    #[arg(long, env = "QUORUMKV_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM file of this node's certificate chain, leaf first: with --tls-key, the node
    /// serves HTTPS only (client, admin and internode routes) and calls its peers over
    /// HTTPS. The certificate must name the --advertise host (DNS name or IP address).
    #[arg(long, env = "QUORUMKV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "QUORUMKV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates this node trusts to vouch for its peers (and only
    /// those): required with --tls-cert when --seeds name other nodes.
    #[arg(long, env = "QUORUMKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's zone (a failure domain: rack, availability zone). With at least n zones,
    /// each key's n replicas are placed in n distinct zones.
    #[arg(long, env = "QUORUMKV_ZONE")]
    pub zone: Option<String>,
    /// Suspicion level (phi) above which the failure detector reports a peer down; with
    /// probes every 500 ms, 3 means about 3.5 s of silence.
    #[arg(long, env = "QUORUMKV_PHI_THRESHOLD", default_value_t = 3.0)]
    pub phi_threshold: f64,
    /// Serve `PUT /internal/v1/fault/partition`, which cuts this node's internode sends to
    /// chosen peers. For partition tests only; never on a production node.
    #[arg(long, env = "QUORUMKV_FAULT_INJECTION")]
    pub fault_injection: bool,
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
    /// Print one JSON document instead of human-readable text.
    #[arg(long)]
    pub json: bool,
    /// Bearer token, for nodes started with --auth-token-file.
    #[arg(long, env = "QUORUMKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA certificates trusted to vouch for an https:// endpoint (and
    /// only those).
    #[arg(long, env = "QUORUMKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
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
    /// Members and their status as one node sees them. While partitions move, and the
    /// output is a terminal, it then follows the transfers with a live progress bar until
    /// the cluster is balanced (Ctrl-C stops following; nothing else is affected).
    Status {
        /// Follow the transfers until the cluster is balanced even when the output is not
        /// a terminal (a line per change), then exit 0; exit 1 if --timeout passes first.
        #[arg(long)]
        watch: bool,
        /// Print the status once and return, even on a terminal while partitions move.
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// How long to follow the transfers at most, in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        endpoint: Endpoint,
    },
    /// The node at the endpoint drops its copies of the partitions it no longer owns, and
    /// prints what it dropped (nodes also do so by themselves after every membership
    /// change). Refused while a change is under way.
    Cleanup {
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        endpoint: Endpoint,
    },
    /// The node at the endpoint hands its partitions to the other members, then exits.
    Leave {
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        endpoint: Endpoint,
        #[command(flatten)]
        #[allow(missing_docs)] // documented by its fields
        options: LeaveOptions,
    },
}

/// How `quorumkv cluster leave` waits, and when it leaves at all: what a Kubernetes
/// preStop hook needs.
#[derive(Debug, Args)]
pub struct LeaveOptions {
    /// Return only once the node has handed off its partitions and exited (it no longer
    /// answers), printing progress; fail after --wait-timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits for the node to exit, in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_timeout: u64,
    /// File of bearer tokens, one per line (the node's --auth-token-file): the first is
    /// sent when --token is not given.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Leave only if this pod is being scaled away: its ordinal is at least its
    /// StatefulSet's spec.replicas, asked of the Kubernetes API. Otherwise (a restart, an
    /// upgrade) exit 0 at once; if the API cannot be asked, fail without leaving. Implies
    /// --wait.
    #[arg(long)]
    pub if_scaled_down: bool,
    /// This pod's name, `<statefulset>-<ordinal>`; defaults to $POD_NAME, then the
    /// hostname.
    #[arg(long)]
    pub pod_name: Option<String>,
    /// Base URL of the Kubernetes API; defaults to
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (an http:// URL needs no
    /// CA).
    #[arg(long, env = "QUORUMKV_KUBE_API")]
    pub kube_api: Option<String>,
    /// Directory of the pod's service account credentials (namespace, token, ca.crt).
    #[arg(
        long,
        env = "QUORUMKV_KUBE_SERVICEACCOUNT_DIR",
        default_value = crate::kube::DEFAULT_SERVICEACCOUNT_DIR
    )]
    pub kube_serviceaccount_dir: PathBuf,
}
