//! Anti-entropy alone (no hints, no read repair) converges diverged replicas, and its cost
//! follows the differences.
//!
//! Each node is a real `Coordinator` on a real store in a temporary directory; nodes talk
//! through an in-memory transport that frames every message as on the wire and hands it
//! to the peer's `handle`. `QUORUMKV_AAE_TEST_KEYS` scales the key count (default 10,000).

#![cfg(feature = "store")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use quorumkv_coordinator::message::{self, Request, Response};
use quorumkv_coordinator::{
    AntiEntropyOptions, AntiEntropyStats, BucketName, Coordinator, CoordinatorOptions, NodeId,
    PropsUpdate, Transport, TransportError,
};
use quorumkv_replica::{Store, StoreOptions, Value, VersionVector};
use tempfile::TempDir;

const BUCKET: &[u8] = b"users";

/// Delivers each request to the addressed node's `handle`, through the wire format.
#[derive(Default)]
struct Network {
    nodes: Mutex<HashMap<String, Weak<Coordinator>>>,
}

struct MemoryTransport(Arc<Network>);

#[async_trait]
impl Transport for MemoryTransport {
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let node = self
            .0
            .nodes
            .lock()
            .unwrap()
            .get(addr)
            .and_then(Weak::upgrade);
        let node = node.ok_or_else(|| TransportError::Unreachable(addr.to_string()))?;
        let request: Request = message::decode(&message::encode(request))
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        let response = tokio::time::timeout(timeout, node.handle(request))
            .await
            .map_err(|_| TransportError::Timeout)?;
        message::decode(&message::encode(&response))
            .map_err(|e| TransportError::Protocol(e.to_string()))
    }
}

struct Cluster {
    nodes: Vec<Arc<Coordinator>>,
    stores: Vec<Arc<Store>>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start(size: usize) -> Cluster {
        let network = Arc::new(Network::default());
        let addrs: Vec<String> = (0..size).map(|i| format!("node{i}:7000")).collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            stores: Vec::new(),
            _dirs: Vec::new(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let dir = TempDir::new().unwrap();
            let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
            let options = CoordinatorOptions {
                hinted_handoff: false,
                read_repair: false,
                anti_entropy: AntiEntropyOptions {
                    partitions_per_round: 1 << 16,
                    keys_per_round: usize::MAX,
                    round_budget: Duration::from_secs(600),
                    ..AntiEntropyOptions::default()
                },
                ..CoordinatorOptions::default()
            };
            let node = Arc::new(
                Coordinator::new(
                    NodeId::new(format!("n{i}")),
                    addr.clone(),
                    &addrs,
                    Arc::clone(&store),
                    Arc::new(MemoryTransport(Arc::clone(&network))),
                    options,
                )
                .unwrap(),
            );
            network
                .nodes
                .lock()
                .unwrap()
                .insert(addr.clone(), Arc::downgrade(&node));
            cluster.nodes.push(node);
            cluster.stores.push(store);
            cluster._dirs.push(dir);
        }
        cluster.probe().await;
        for node in &cluster.nodes {
            assert!(node.cluster_view().ring_formed, "the ring formed");
        }
        cluster
    }

    /// Lets every node see every other as up.
    async fn probe(&self) {
        for node in &self.nodes {
            node.tick(Duration::from_secs(1)).await;
        }
    }

    /// Whether every tree of every partition is equal on every node.
    fn in_sync(&self) -> bool {
        (0..quorumkv_ring::DEFAULT_PARTITIONS).all(|p| {
            let first = self.stores[0].aae_roots(p);
            self.stores[1..].iter().all(|s| s.aae_roots(p) == first)
        })
    }

    /// Runs rounds on every node until the trees agree; returns the summed stats and the
    /// number of rounds (one round = one round on each node).
    async fn converge(&self) -> (AntiEntropyStats, usize) {
        let mut total = AntiEntropyStats::default();
        for round in 1..=10 {
            self.probe().await;
            for node in &self.nodes {
                let stats = node.anti_entropy_round().await;
                assert_eq!(stats.errors, 0, "round {round}: {stats:?}");
                total.exchanges += stats.exchanges;
                total.trees_differing += stats.trees_differing;
                total.keys_exchanged += stats.keys_exchanged;
                total.bytes_sent += stats.bytes_sent;
                total.bytes_received += stats.bytes_received;
            }
            if self.in_sync() {
                return (total, round);
            }
        }
        panic!("replicas did not converge in 10 rounds: {total:?}");
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn value(tag: &str) -> Value {
    let mut bytes = tag.as_bytes().to_vec();
    bytes.resize(100, b'.');
    Value::data("application/octet-stream", bytes)
}

fn key_count() -> usize {
    std::env::var("QUORUMKV_AAE_TEST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Writes `keys` keys to every store, as a write fully replicated would leave them, then
/// makes `diverged` of them differ on one store: a newer version at one node, a delete at
/// another, a key only one node has.
fn load(stores: &[Arc<Store>], keys: usize, diverged: usize) {
    for i in 0..keys {
        let object = stores[0]
            .coordinate(
                BUCKET,
                &key(i),
                &VersionVector::new(),
                value(&format!("v{i}")),
            )
            .unwrap();
        for store in &stores[1..] {
            store.merge(BUCKET, &key(i), &object).unwrap();
        }
    }
    let stride = keys / diverged.max(1);
    for d in 0..diverged {
        let i = d * stride;
        let store = &stores[d % stores.len()];
        match d % 3 {
            0 => {
                let context = store.get(BUCKET, &key(i)).unwrap().unwrap().clock().clone();
                store
                    .coordinate(BUCKET, &key(i), &context, value(&format!("newer{i}")))
                    .unwrap();
            }
            1 => {
                let context = store.get(BUCKET, &key(i)).unwrap().unwrap().clock().clone();
                store
                    .coordinate(BUCKET, &key(i), &context, Value::Tombstone)
                    .unwrap();
            }
            _ => {
                store
                    .coordinate(
                        BUCKET,
                        format!("only-here-{i}").as_bytes(),
                        &VersionVector::new(),
                        value("lonely"),
                    )
                    .unwrap();
            }
        }
    }
}

async fn run_case(size: usize, keys: usize, diverged: usize) -> (AntiEntropyStats, usize) {
    let cluster = Cluster::start(size).await;
    let stores = cluster.stores.clone();
    tokio::task::spawn_blocking(move || load(&stores, keys, diverged))
        .await
        .unwrap();
    assert_eq!(cluster.in_sync(), diverged == 0);
    let (stats, rounds) = cluster.converge().await;

    // Every key, the diverged ones included, is now the same object everywhere.
    let stores = cluster.stores.clone();
    tokio::task::spawn_blocking(move || {
        let stride = keys / diverged.max(1);
        let extra = (0..diverged)
            .filter(|d| d % 3 == 2)
            .map(|d| format!("only-here-{}", d * stride).into_bytes());
        for k in (0..keys).map(key).chain(extra) {
            let first = stores[0].get(BUCKET, &k).unwrap();
            assert!(first.is_some());
            for store in &stores[1..] {
                assert_eq!(store.get(BUCKET, &k).unwrap(), first);
            }
        }
    })
    .await
    .unwrap();
    (stats, rounds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_converges_diverged_replicas() {
    let keys = key_count();
    let diverged = keys / 100;
    for (label, diverged) in [("0%", 0), ("1%", diverged)] {
        let (stats, rounds) = run_case(3, keys, diverged).await;
        eprintln!(
            "anti-entropy, 3 nodes, {keys} keys, {label} differing ({diverged} keys): \
             {} keys exchanged, {} bytes sent, {} bytes received, {} bytes in all, \
             {} exchanges, {} trees differing, {rounds} round(s)",
            stats.keys_exchanged,
            stats.bytes_sent,
            stats.bytes_received,
            stats.bytes_sent + stats.bytes_received,
            stats.exchanges,
            stats.trees_differing,
        );
        if diverged == 0 {
            assert_eq!(stats.keys_exchanged, 0);
            assert_eq!(stats.trees_differing, 0);
        } else {
            // Each diverged key differs between its node and both others.
            assert!(stats.keys_exchanged >= diverged as u64, "{stats:?}");
            assert!(stats.keys_exchanged <= 4 * diverged as u64, "{stats:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_exchanged_only_between_its_replicas() {
    let cluster = Cluster::start(2).await;
    let solo = BucketName::parse(b"solo").unwrap();
    cluster.nodes[0]
        .set_bucket_props(
            &solo,
            PropsUpdate {
                n: Some(1),
                ..PropsUpdate::default()
            },
        )
        .await
        .unwrap();
    cluster.probe().await;
    // With n = 1 each key has one replica; copies planted on the other node are not its
    // business, and anti-entropy must not spread them.
    for (i, store) in cluster.stores.iter().enumerate() {
        for k in 0..50 {
            store
                .coordinate(
                    b"solo",
                    format!("k{k}").as_bytes(),
                    &VersionVector::new(),
                    value(&format!("node{i}")),
                )
                .unwrap();
        }
    }
    for node in &cluster.nodes {
        let stats = node.anti_entropy_round().await;
        assert_eq!(stats.keys_exchanged, 0, "{stats:?}");
        assert_eq!(stats.exchanges, 0, "{stats:?}");
    }
    assert!(!cluster.in_sync());
}
