//! Micro-benchmarks of the request path: three in-process nodes, no network.
//!
//! Three coordinators, each with its own RocksDB store in a temporary directory, reach each
//! other through an in-memory [`Transport`] that calls the peer's `handle()` directly. What
//! is left is the coordinator's own work (preference list, fan-out tasks, quorum
//! counting, merging) plus the three stores: the cost of a request without HTTP. The
//! `framed` variant also encodes and decodes every message as the HTTP transport does, to
//! show what the internode framing adds. Comparing these figures with the load generator's
//! says how much of a request's time goes to HTTP and the network stack.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorumkv_coordinator::message::{self, Request, Response};
use quorumkv_coordinator::{
    BucketName, ContextKey, Coordinator, CoordinatorOptions, Key, LiveValue, NodeId, QuorumSpec,
    ReadOptions, Transport, TransportError, VersionVector, WriteOptions,
};
use quorumkv_replica::{ActorId, Store, StoreOptions, SyncPolicy};

const KEYS: usize = 10_000;

/// Delivers requests to in-process coordinators by address.
struct InMemory {
    /// Weak: the coordinators own the transport, not the other way round.
    nodes: RwLock<HashMap<String, Weak<Coordinator>>>,
    /// Encode and decode every message, as over HTTP.
    framed: bool,
}

#[async_trait]
impl Transport for InMemory {
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        _timeout: Duration,
    ) -> Result<Response, TransportError> {
        let node = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .and_then(Weak::upgrade)
            .ok_or_else(|| TransportError::Unreachable(addr.to_string()))?;
        if !self.framed {
            return Ok(node.handle(request.clone()).await);
        }
        let request = message::decode(&message::encode(request))
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        let response = node.handle(request).await;
        message::decode(&message::encode(&response))
            .map_err(|e| TransportError::Protocol(e.to_string()))
    }
}

/// Three coordinators that know each other, and the directories of their stores.
struct Cluster {
    nodes: Vec<Arc<Coordinator>>,
    /// The upkeep loops (probes, as the server runs them), stopped on drop.
    upkeep: Vec<tokio::task::JoinHandle<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.upkeep {
            task.abort();
        }
    }
}

/// The server's upkeep period: peers that are not probed look down to the coordinator.
const TICK: Duration = Duration::from_millis(500);

async fn cluster(framed: bool) -> Cluster {
    let transport = Arc::new(InMemory {
        nodes: RwLock::new(HashMap::new()),
        framed,
    });
    let addrs: Vec<String> = (1..=3).map(|i| format!("node{i}.bench:7000")).collect();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            sync: SyncPolicy::None,
            ..StoreOptions::default()
        };
        let store = Arc::new(Store::open(dir.path(), options).expect("open the store"));
        let node = Arc::new(
            Coordinator::new(
                NodeId::new(format!("node{}", i + 1)),
                addr.clone(),
                &addrs,
                store,
                Arc::clone(&transport) as Arc<dyn Transport>,
                CoordinatorOptions::default(),
            )
            .expect("coordinator"),
        );
        transport
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone(), Arc::downgrade(&node));
        nodes.push(node);
        dirs.push(dir);
    }
    for node in &nodes {
        node.tick(Duration::from_secs(1)).await;
    }
    assert!(
        nodes.iter().all(|n| n.cluster_view().ring_formed),
        "the ring did not form"
    );
    let upkeep = nodes
        .iter()
        .map(|node| {
            let node = Arc::clone(node);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(TICK);
                loop {
                    interval.tick().await;
                    node.tick(Duration::from_secs(1)).await;
                }
            })
        })
        .collect();
    Cluster {
        nodes,
        upkeep,
        _dirs: dirs,
    }
}

fn key(i: usize) -> Key {
    Key::parse(format!("key{i:013}").into_bytes()).expect("valid key")
}

fn value() -> LiveValue {
    LiveValue {
        content_type: "application/octet-stream".into(),
        bytes: Bytes::from(vec![7u8; 100]),
    }
}

fn coordinator(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bucket = BucketName::parse(b"bench").expect("valid bucket");
    let mut group = c.benchmark_group("coordinator");
    for framed in [false, true] {
        let transport = if framed { "framed" } else { "direct" };
        let cluster = runtime.block_on(cluster(framed));
        // Preload, keeping each key's context so that writes supersede instead of piling
        // up siblings.
        let contexts: Vec<VersionVector> = runtime.block_on(async {
            let mut contexts = Vec::with_capacity(KEYS);
            for i in 0..KEYS {
                let node = &cluster.nodes[i % 3];
                let all = WriteOptions {
                    w: Some(QuorumSpec::All),
                    ..WriteOptions::default()
                };
                contexts.push(
                    node.put(&bucket, &key(i), VersionVector::new(), value(), all)
                        .await
                        .expect("preload"),
                );
            }
            contexts
        });
        let contexts = std::sync::Mutex::new(contexts);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("put w=2", transport), |b| {
            b.to_async(&runtime).iter(|| {
                i = (i + 1) % KEYS;
                let node = Arc::clone(&cluster.nodes[i % 3]);
                let context = contexts.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
                let (bucket, contexts) = (&bucket, &contexts);
                async move {
                    let w2 = WriteOptions {
                        w: Some(QuorumSpec::Count(2)),
                        ..WriteOptions::default()
                    };
                    let context = node
                        .put(bucket, &key(i), context, value(), w2)
                        .await
                        .expect("put");
                    contexts.lock().unwrap_or_else(|p| p.into_inner())[i] = context;
                }
            });
        });
        group.bench_function(BenchmarkId::new("get r=2", transport), |b| {
            b.to_async(&runtime).iter(|| {
                i = (i + 1) % KEYS;
                let node = Arc::clone(&cluster.nodes[i % 3]);
                let bucket = &bucket;
                async move {
                    let r2 = ReadOptions {
                        r: Some(QuorumSpec::Count(2)),
                        ..ReadOptions::default()
                    };
                    black_box(node.get(bucket, &key(i), r2).await.expect("get"))
                }
            });
        });
    }
    group.finish();
}

/// The causal context token each read answers with and each write with a context checks:
/// its cost is the MAC's (HMAC-SHA256), against a clock of three actors as a key written
/// at three owners holds.
fn context_token(c: &mut Criterion) {
    let signer = ContextKey::from_secret(b"a-cluster-secret-for-the-bench");
    let clock: VersionVector = [
        (ActorId(0x9a3f_0011_2233_4455), 1_234_567),
        (ActorId(0x1b2c_3d4e_5f60_7182), 1_234_001),
        (ActorId(0xfedc_ba98_7654_3210), 987_654),
    ]
    .into_iter()
    .collect();
    let token = signer.encode(b"bench", b"key-000123", &clock);
    let mut group = c.benchmark_group("context_token");
    group.bench_function("encode", |b| {
        b.iter(|| {
            signer.encode(
                black_box(b"bench"),
                black_box(b"key-000123"),
                black_box(&clock),
            )
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            signer.decode(
                black_box(b"bench"),
                black_box(b"key-000123"),
                black_box(&token),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = coordinator, context_token
}
criterion_main!(benches);
