//! A seeded simulation of the protocol: four coordinators with real stores, connected by a
//! simulated network that drops, delays and partitions messages according to a seed.
//!
//! Each schedule runs a random sequence of writes (with contexts from earlier reads, or
//! none), reads, partitions and heals, then heals everything, hands hints off, and reads
//! every key from all owners. Two properties are checked (named as Stateright does):
//!
//! - *always: no acknowledged write is lost*: every write acknowledged at `w` is in the
//!   final state, or was superseded by a later write whose context covered it;
//! - *always: read-your-writes under a strict R + W > N*: a strict read that starts after a
//!   strict write was acknowledged returns that write or a successor.
//!
//! The schedule is a function of its seed; a failure prints the seed, and
//! `SIM_SEED=<seed> cargo test --release -p quorumkv-coordinator --test simulation`
//! replays it. `SIM_SCHEDULES` sets how many run (default 1000). Task scheduling and
//! RocksDB timing are real, so a replay reproduces the faults, not every interleaving.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use quorumkv_coordinator::detector::DetectorOptions;
use quorumkv_coordinator::message::{Request, Response};
use quorumkv_coordinator::{
    BucketName, Coordinator, CoordinatorOptions, Key, LiveValue, NodeId, QuorumSpec, ReadOptions,
    ReadOutcome, Transport, TransportError, VersionVector, WriteOptions,
};
use quorumkv_replica::{Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 4;
const N: usize = 3;
const KEYS: usize = 2;
const OPS: usize = 14;

/// The simulated network: who can reach whom, how often messages are lost, and the nodes.
struct Net {
    rng: Mutex<StdRng>,
    cut: RwLock<HashSet<(usize, usize)>>,
    drop_percent: RwLock<u32>,
    nodes: RwLock<Vec<Weak<Coordinator>>>,
}

struct SimTransport {
    from: usize,
    net: Arc<Net>,
}

fn addr(i: usize) -> String {
    format!("sim:{i}")
}

#[async_trait]
impl Transport for SimTransport {
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let to: usize = addr.trim_start_matches("sim:").parse().unwrap();
        if self.net.cut.read().unwrap().contains(&(self.from, to)) {
            return Err(TransportError::Unreachable("partitioned".into()));
        }
        let (drop_request, drop_response, delay_ms) = {
            let drop = *self.net.drop_percent.read().unwrap();
            let mut rng = self.net.rng.lock().unwrap();
            (
                rng.random_range(0..100) < drop,
                rng.random_range(0..100) < drop,
                // Most messages are delivered at once; some wait a millisecond or two, which
                // reorders them against the others.
                if rng.random_bool(0.2) {
                    rng.random_range(1..3)
                } else {
                    0
                },
            )
        };
        if drop_request {
            return Err(TransportError::Timeout);
        }
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let target = self.net.nodes.read().unwrap()[to].upgrade();
        let Some(target) = target else {
            return Err(TransportError::Unreachable("gone".into()));
        };
        let response = tokio::time::timeout(timeout, target.handle(request.clone()))
            .await
            .map_err(|_| TransportError::Timeout)?;
        // A lost response: the request took effect, the caller does not know.
        if drop_response {
            return Err(TransportError::Timeout);
        }
        Ok(response)
    }
}

struct Cluster {
    net: Arc<Net>,
    nodes: Vec<Arc<Coordinator>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn new() -> Self {
        let net = Arc::new(Net {
            rng: Mutex::new(StdRng::seed_from_u64(0)),
            cut: RwLock::default(),
            drop_percent: RwLock::new(0),
            nodes: RwLock::default(),
        });
        let seeds: Vec<String> = (0..NODES).map(addr).collect();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..NODES {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
            let options = CoordinatorOptions {
                default_n: N,
                default_timeout: Duration::from_millis(300),
                detector: DetectorOptions {
                    phi_threshold: 3.0,
                    min_mean: Duration::from_millis(500),
                },
                ..CoordinatorOptions::default()
            };
            let transport = Arc::new(SimTransport {
                from: i,
                net: Arc::clone(&net),
            });
            let node = Coordinator::new(
                NodeId::new(format!("n{i}")),
                addr(i),
                &seeds,
                store,
                transport,
                options,
            )
            .unwrap();
            nodes.push(Arc::new(node));
            dirs.push(dir);
        }
        *net.nodes.write().unwrap() = nodes.iter().map(Arc::downgrade).collect();
        let cluster = Self {
            net,
            nodes,
            _dirs: dirs,
        };
        cluster.probe().await;
        cluster
    }

    async fn probe(&self) {
        for node in &self.nodes {
            node.tick(Duration::from_millis(200)).await;
        }
    }

    fn reset(&self, seed: u64, drop_percent: u32) {
        *self.net.rng.lock().unwrap() = StdRng::seed_from_u64(seed);
        self.net.cut.write().unwrap().clear();
        *self.net.drop_percent.write().unwrap() = drop_percent;
    }

    fn isolate(&self, group: &BTreeSet<usize>) {
        let mut cut = self.net.cut.write().unwrap();
        cut.clear();
        for a in 0..NODES {
            for b in 0..NODES {
                if group.contains(&a) != group.contains(&b) {
                    cut.insert((a, b));
                }
            }
        }
    }
}

/// What the model knows of one write.
#[derive(Clone, Debug)]
struct Write {
    value: Vec<u8>,
    key: usize,
    acknowledged: bool,
    /// Written with a strict quorum.
    strict: bool,
    /// The write quorum.
    w: usize,
    /// Values this write's context covered (what the read it was based on saw, and their
    /// causal past).
    covers: BTreeSet<Vec<u8>>,
}

/// What a read returned.
#[derive(Clone, Debug)]
struct Seen {
    key: usize,
    values: BTreeSet<Vec<u8>>,
    context: VersionVector,
}

fn values_of(outcome: &ReadOutcome) -> (BTreeSet<Vec<u8>>, VersionVector) {
    match outcome {
        ReadOutcome::Found { values, context } => (
            values.iter().map(|v| v.bytes.to_vec()).collect(),
            context.clone(),
        ),
        ReadOutcome::NotFound { context } => (BTreeSet::new(), context.clone().unwrap_or_default()),
    }
}

async fn run_schedule(cluster: &Cluster, seed: u64) -> Result<usize, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    cluster.reset(seed, rng.random_range(0..15));
    cluster.probe().await;
    let bucket = BucketName::parse(format!("s{seed}").as_bytes()).unwrap();
    let keys: Vec<Key> = (0..KEYS)
        .map(|k| Key::parse(vec![b'k', k as u8]).unwrap())
        .collect();
    let mut writes: Vec<Write> = Vec::new();
    let mut reads: Vec<Seen> = Vec::new();
    // value -> what it covers, for the transitive causal past.
    let mut past: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
    for op in 0..OPS {
        let node = &cluster.nodes[rng.random_range(0..NODES)];
        match rng.random_range(0..10) {
            0 => {
                let group: BTreeSet<usize> = (0..NODES).filter(|_| rng.random_bool(0.5)).collect();
                cluster.isolate(&group);
                cluster.probe().await;
            }
            1 => {
                cluster.net.cut.write().unwrap().clear();
                cluster.probe().await;
            }
            2..=5 => {
                let key = rng.random_range(0..KEYS);
                let strict = rng.random_bool(0.5);
                let w = rng.random_range(1..=N);
                let based_on = reads
                    .iter()
                    .rfind(|r| r.key == key)
                    .cloned()
                    .filter(|_| rng.random_bool(0.7));
                let value = format!("{seed}-{op}").into_bytes();
                let mut covers = BTreeSet::new();
                if let Some(seen) = &based_on {
                    for v in &seen.values {
                        covers.insert(v.clone());
                        covers.extend(past.get(v).cloned().unwrap_or_default());
                    }
                }
                past.insert(value.clone(), covers.clone());
                let context = based_on.map(|s| s.context).unwrap_or_default();
                let result = node
                    .put(
                        &bucket,
                        &keys[key],
                        context,
                        LiveValue {
                            content_type: "t".into(),
                            bytes: Bytes::from(value.clone()),
                        },
                        WriteOptions {
                            w: Some(QuorumSpec::Count(w)),
                            sloppy: Some(!strict),
                            ..WriteOptions::default()
                        },
                    )
                    .await;
                writes.push(Write {
                    value,
                    key,
                    acknowledged: result.is_ok(),
                    strict,
                    w,
                    covers,
                });
            }
            _ => {
                let key = rng.random_range(0..KEYS);
                let strict = rng.random_bool(0.5);
                let r = rng.random_range(1..=N);
                let before: Vec<Write> = writes
                    .iter()
                    .filter(|w| w.key == key && w.acknowledged)
                    .cloned()
                    .collect();
                let result = node
                    .get(
                        &bucket,
                        &keys[key],
                        ReadOptions {
                            r: Some(QuorumSpec::Count(r)),
                            sloppy: Some(!strict),
                            ..ReadOptions::default()
                        },
                    )
                    .await;
                if let Ok(outcome) = result {
                    let (values, context) = values_of(&outcome);
                    if strict {
                        check_read_your_writes(seed, &before, &values, &past, r)?;
                    }
                    reads.push(Seen {
                        key,
                        values,
                        context,
                    });
                }
            }
        }
    }
    // Heal, let the detector and handoff catch up, then read everything from all owners.
    cluster.reset(seed, 0);
    cluster.probe().await;
    for _ in 0..3 {
        for node in &cluster.nodes {
            node.replay_hints(10_000).await;
        }
    }
    for (k, key) in keys.iter().enumerate() {
        let outcome = cluster.nodes[0]
            .get(
                &bucket,
                key,
                ReadOptions {
                    r: Some(QuorumSpec::All),
                    sloppy: Some(false),
                    read_repair: Some(false),
                    ..ReadOptions::default()
                },
            )
            .await
            .map_err(|e| format!("seed {seed}: final read of key {k} failed: {e}"))?;
        let (present, _) = values_of(&outcome);
        let attempted: Vec<&Write> = writes.iter().filter(|w| w.key == k).collect();
        for write in attempted.iter().filter(|w| w.acknowledged) {
            let superseded = attempted
                .iter()
                .any(|other| other.covers.contains(&write.value));
            if !present.contains(&write.value) && !superseded {
                return Err(format!(
                    "seed {seed}: acknowledged write {:?} of key {k} is lost; final values {:?}",
                    String::from_utf8_lossy(&write.value),
                    present
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok(writes.iter().filter(|w| w.acknowledged).count())
}

fn check_read_your_writes(
    seed: u64,
    before: &[Write],
    values: &BTreeSet<Vec<u8>>,
    past: &HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    r: usize,
) -> Result<(), String> {
    for write in before.iter().filter(|w| w.strict) {
        let w = write.w;
        if r + w <= N {
            continue;
        }
        let seen = values.contains(&write.value)
            || values
                .iter()
                .any(|v| past.get(v).is_some_and(|p| p.contains(&write.value)));
        if !seen {
            return Err(format!(
                "seed {seed}: a strict read at r={r} missed the acknowledged strict write {:?} (w={w})",
                String::from_utf8_lossy(&write.value)
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_no_acknowledged_write_is_lost_and_strict_quorums_read_their_writes() {
    let schedules: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let seeds: Vec<u64> = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..schedules).map(|i| 0x5eed_0000 + i).collect(),
    };
    let cluster = Cluster::new().await;
    let mut acknowledged = 0;
    for seed in &seeds {
        match run_schedule(&cluster, *seed).await {
            Ok(count) => acknowledged += count,
            Err(failure) => panic!("{failure}\nreplay: SIM_SEED={seed} cargo test --release -p quorumkv-coordinator --test simulation"),
        }
    }
    eprintln!(
        "simulation: {} schedules, {acknowledged} acknowledged writes, none lost",
        seeds.len()
    );
    assert!(
        acknowledged > seeds.len(),
        "the schedules acknowledged too few writes to mean anything"
    );
}
