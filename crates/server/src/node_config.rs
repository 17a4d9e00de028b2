//! What `quorumkv serve`'s flags mean for one node, checked whole before anything is
//! opened: a configuration that cannot work stops the node at start, naming the flag,
//! rather than failing later in a way that looks like a fault of the cluster. Pure (no
//! file, socket or store is touched), so every rule is unit-tested here; `serve` does the
//! wiring and the checks that need the machine (credential and TLS files, the source
//! address).

use std::time::Duration;

use anyhow::bail;
use quorumkv_coordinator::detector::DetectorOptions;
use quorumkv_coordinator::{CoordinatorOptions, NodeId, SyncPolicy, SETTLE, TICK};
use quorumkv_replica::StoreOptions;

use crate::cli::{ServeArgs, SyncArg};
use crate::listener::ConnectionLimits;

/// One node's configuration, checked.
#[derive(Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub node: NodeId,
    /// The address peers reach it at.
    pub advertise: String,
    /// The seeds as given, trimmed, empty ones dropped.
    pub seeds: Vec<String>,
    /// The seeds that are other nodes: with any, the node needs the cluster secret.
    pub peers: Vec<String>,
    /// The store's options (its path is `--data-dir`).
    pub store: StoreOptions,
    /// The coordinator's options.
    pub coordinator: CoordinatorOptions,
    /// The largest value a PUT may carry.
    pub max_value_bytes: usize,
    /// What clients may hold of the listener.
    pub limits: ConnectionLimits,
}

impl NodeConfig {
    /// Reads `args`; the first rule it breaks is the error.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let node = NodeId::new(args.node_id.trim());
        if node.as_str().is_empty() {
            bail!("--node-id must not be empty");
        }
        let advertise = match &args.advertise {
            Some(addr) => addr.clone(),
            None if args.listen.ip().is_unspecified() => {
                bail!(
                    "--listen {} is a wildcard address: give --advertise host:port",
                    args.listen
                )
            }
            None => args.listen.to_string(),
        };
        if args.max_object_bytes < 2 * args.max_value_bytes {
            bail!(
                "--max-object-bytes ({}) must be at least twice --max-value-bytes ({}): a \
                 key must be able to hold a value beside a concurrent one",
                args.max_object_bytes,
                args.max_value_bytes
            );
        }
        if !(args.phi_threshold.is_finite() && args.phi_threshold > 0.0) {
            bail!(
                "--phi-threshold must be a positive number, got {}",
                args.phi_threshold
            );
        }
        if (1..SETTLE.as_secs()).contains(&args.cleanup_delay_secs) {
            bail!(
                "--cleanup-delay-secs ({}) must be 0 (clean up on demand only) or at least \
                 {}: nodes that have not yet heard of a change may still read the copies it \
                 drops",
                args.cleanup_delay_secs,
                SETTLE.as_secs()
            );
        }
        if args.tombstone_grace_secs < args.hint_ttl_secs {
            bail!(
                "--tombstone-grace-secs ({}) must be at least --hint-ttl-secs ({}): a \
                 tombstone reaped while a hint of the deleted value can still be delivered \
                 would let the value come back",
                args.tombstone_grace_secs,
                args.hint_ttl_secs
            );
        }
        let seeds: Vec<String> = args
            .seeds
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // A seed other than the advertised or the listen address is taken for another
        // node, even if it is another name of this one.
        let listen = args.listen.to_string();
        let peers: Vec<String> = seeds
            .iter()
            .filter(|s| **s != advertise && **s != listen)
            .cloned()
            .collect();
        Ok(Self {
            store: store_options(args),
            coordinator: coordinator_options(args, &seeds, &peers),
            max_value_bytes: usize_of(args.max_value_bytes),
            limits: ConnectionLimits {
                max_connections: usize_of(args.max_connections),
                peer_connections: usize_of(args.peer_connections),
                max_connections_per_ip: usize_of(args.max_connections_per_ip),
                header_timeout: Duration::from_millis(args.header_timeout_ms),
            },
            node,
            advertise,
            seeds,
            peers,
        })
    }
}

/// A count of the flags as a `usize` (theirs ranges keep them within it).
fn usize_of(count: impl TryInto<usize>) -> usize {
    count.try_into().unwrap_or(usize::MAX)
}

fn store_options(args: &ServeArgs) -> StoreOptions {
    // Mebibytes to bytes; the flags' ranges keep it well within usize.
    let mib = |mib: u32| usize_of(u64::from(mib) << 20);
    StoreOptions {
        sync: match args.sync {
            SyncArg::None => SyncPolicy::None,
            SyncArg::Always => SyncPolicy::Always,
        },
        block_cache_bytes: mib(args.block_cache_mib),
        memtable_budget_bytes: mib(args.memtable_mib),
        max_siblings: usize_of(args.max_siblings),
        max_object_bytes: usize_of(args.max_object_bytes),
        max_clock_entries: usize::from(args.max_clock_entries),
        ..StoreOptions::default()
    }
}

fn coordinator_options(args: &ServeArgs, seeds: &[String], peers: &[String]) -> CoordinatorOptions {
    CoordinatorOptions {
        default_n: usize::from(args.default_n),
        hinted_handoff: args.hinted_handoff,
        read_repair: args.read_repair,
        max_hints: args.max_hints,
        hint_ttl: Duration::from_secs(args.hint_ttl_secs),
        detector: DetectorOptions {
            phi_threshold: args.phi_threshold,
            min_mean: TICK,
        },
        tombstone_grace: Duration::from_secs(args.tombstone_grace_secs),
        cleanup_delay: (args.cleanup_delay_secs > 0)
            .then(|| Duration::from_secs(args.cleanup_delay_secs)),
        // Seeds that do not name this node are a cluster to join, not one to found.
        joining: !seeds.is_empty() && peers.len() == seeds.len(),
        zone: args
            .zone
            .as_deref()
            .map(str::trim)
            .filter(|z| !z.is_empty())
            .map(str::to_string),
        ..CoordinatorOptions::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(flags: &[&str]) -> anyhow::Result<NodeConfig> {
        let node_id: &[&str] = if flags.contains(&"--node-id") {
            &[]
        } else {
            &["--node-id", "n1"]
        };
        let args = ["quorumkv", "serve", "--data-dir", "unused"]
            .iter()
            .chain(node_id)
            .chain(flags);
        let Command::Serve(args) = Cli::try_parse_from(args).unwrap().command else {
            panic!("not serve");
        };
        NodeConfig::from_args(&args)
    }

    fn refusal(flags: &[&str]) -> String {
        format!("{:#}", config(flags).unwrap_err())
    }

    #[test]
    fn the_defaults_make_a_node_alone_on_loopback() {
        let config = config(&[]).unwrap();
        assert_eq!(config.node.as_str(), "n1");
        assert_eq!(config.advertise, "127.0.0.1:7001");
        assert!(config.peers.is_empty());
        assert!(!config.coordinator.joining);
        assert_eq!(config.limits.max_connections, 1024);
        assert_eq!(config.limits.peer_connections, 64);
    }

    #[test]
    fn a_blank_node_id_is_refused() {
        assert!(refusal(&["--node-id", "  "]).contains("--node-id"));
    }

    #[test]
    fn a_wildcard_listen_address_needs_an_advertised_one() {
        assert!(refusal(&["--listen", "0.0.0.0:7001"]).contains("--advertise"));
        let config = config(&["--listen", "0.0.0.0:7001", "--advertise", "db1:7001"]).unwrap();
        assert_eq!(config.advertise, "db1:7001");
    }

    #[test]
    fn the_phi_threshold_must_be_a_positive_number() {
        for bad in ["0", "-1", "NaN", "inf"] {
            let flag = format!("--phi-threshold={bad}");
            assert!(refusal(&[&flag]).contains("--phi-threshold"), "{bad}");
        }
    }

    #[test]
    fn the_tombstone_grace_covers_the_hints_lifetime() {
        let refused = refusal(&["--tombstone-grace-secs", "10", "--hint-ttl-secs", "20"]);
        assert!(refused.contains("--tombstone-grace-secs"), "{refused}");
        assert!(config(&["--tombstone-grace-secs", "20", "--hint-ttl-secs", "20"]).is_ok());
    }

    #[test]
    fn a_cleanup_delay_is_none_or_longer_than_the_settling_time() {
        assert!(refusal(&["--cleanup-delay-secs", "1"]).contains("--cleanup-delay-secs"));
        assert!(config(&["--cleanup-delay-secs", "0"]).is_ok());
        let settle = SETTLE.as_secs().to_string();
        assert!(config(&["--cleanup-delay-secs", &settle]).is_ok());
    }

    #[test]
    fn an_object_holds_two_values() {
        let refused = refusal(&["--max-value-bytes", "1000", "--max-object-bytes", "1999"]);
        assert!(refused.contains("--max-object-bytes"), "{refused}");
    }

    #[test]
    fn seeds_other_than_this_node_are_peers_and_only_they_make_it_join() {
        let founding = config(&["--seeds", "127.0.0.1:7001, 127.0.0.1:7002,,"]).unwrap();
        assert_eq!(founding.seeds, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(founding.peers, ["127.0.0.1:7002"]);
        assert!(!founding.coordinator.joining);
        let joining = config(&["--seeds", "127.0.0.1:7002"]).unwrap();
        assert!(joining.coordinator.joining);
    }
}
