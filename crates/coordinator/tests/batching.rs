//! Internode batching, in process: under concurrent load the storage requests for a peer
//! travel in batches that are answered item by item, every acknowledged write is on every
//! owner, and a peer that predates batches gets its requests one by one.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use quorumkv_coordinator::message::{RemoteErrorKind, Request, Response};
use quorumkv_coordinator::{
    BucketName, Coordinator, CoordinatorOptions, Key, LiveValue, NodeId, ReadOptions, ReadOutcome,
    Transport, TransportError, VersionVector, WriteOptions,
};
use quorumkv_replica::{Store, StoreOptions};

const NODES: usize = 3;

/// Delivers every request to its node after a short delay (so that requests queue behind
/// an exchange in flight), counting batches; can play nodes that predate batches.
#[derive(Default)]
struct Net {
    nodes: RwLock<Vec<Weak<Coordinator>>>,
    batches: AtomicUsize,
    batched_items: AtomicUsize,
    /// Whether every node refuses batches, as one from before them would.
    old_nodes: bool,
}

struct NetTransport(Arc<Net>);

#[async_trait]
impl Transport for NetTransport {
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let net = &self.0;
        if let Request::Batch(items) = request {
            if net.old_nodes {
                // What the HTTP transport reports when the peer cannot decode the body.
                return Err(TransportError::Protocol("peer answered 400".into()));
            }
            if !items.is_empty() {
                net.batches.fetch_add(1, Ordering::Relaxed);
                net.batched_items.fetch_add(items.len(), Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let to: usize = addr.trim_start_matches("net:").parse().unwrap();
        let target = net.nodes.read().unwrap()[to].upgrade().unwrap();
        tokio::time::timeout(timeout, target.handle(request.clone()))
            .await
            .map_err(|_| TransportError::Timeout)
    }
}

struct Cluster {
    net: Arc<Net>,
    nodes: Vec<Arc<Coordinator>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn new(old_nodes: bool) -> Self {
        let net = Arc::new(Net {
            old_nodes,
            ..Net::default()
        });
        let seeds: Vec<String> = (0..NODES).map(|i| format!("net:{i}")).collect();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, seed) in seeds.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
            let node = Coordinator::new(
                NodeId::new(format!("n{i}")),
                seed.clone(),
                &seeds,
                store,
                Arc::new(NetTransport(Arc::clone(&net))),
                CoordinatorOptions::default(),
            )
            .unwrap();
            nodes.push(Arc::new(node));
            dirs.push(dir);
        }
        *net.nodes.write().unwrap() = nodes.iter().map(Arc::downgrade).collect();
        for node in &nodes {
            node.tick(Duration::from_millis(500)).await;
        }
        Self {
            net,
            nodes,
            _dirs: dirs,
        }
    }

    /// Writes `count` new keys named `{prefix}{i}` through node 0, all at once, and returns
    /// their names.
    async fn write_concurrently(&self, prefix: &str, count: usize) -> Vec<String> {
        let bucket = BucketName::parse(b"b").unwrap();
        let writes = (0..count).map(|i| {
            let node = Arc::clone(&self.nodes[0]);
            let bucket = bucket.clone();
            async move {
                let name = format!("{prefix}{i}");
                let key = Key::parse(name.clone().into_bytes()).unwrap();
                let value = LiveValue {
                    content_type: "text/plain".into(),
                    bytes: Bytes::from(name.clone()),
                };
                node.put(
                    &bucket,
                    &key,
                    VersionVector::new(),
                    value,
                    WriteOptions::default(),
                )
                .await
                .unwrap();
                name
            }
        });
        futures::future::join_all(writes).await
    }

    /// Asserts that every owner holds every key (all three nodes own every key, n = 3),
    /// waiting up to 5 s for the copies still on their way after the answers.
    async fn assert_everywhere(&self, names: &[String]) {
        let bucket = BucketName::parse(b"b").unwrap();
        let started = tokio::time::Instant::now();
        for name in names {
            let key = Key::parse(name.clone().into_bytes()).unwrap();
            for node in &self.nodes {
                loop {
                    match node.get_local(&bucket, &key).await.unwrap() {
                        ReadOutcome::Found { values, .. } => {
                            assert_eq!(values.len(), 1);
                            assert_eq!(values[0].bytes, name.as_bytes());
                            break;
                        }
                        other => assert!(
                            started.elapsed() < Duration::from_secs(5),
                            "{name} missing at {}: {other:?}",
                            node.node()
                        ),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_travel_in_batches_and_reach_every_owner() {
    let cluster = Cluster::new(false).await;
    // The first writes learn that peers understand batches.
    cluster.write_concurrently("warm", 4).await;
    let names = cluster.write_concurrently("key", 200).await;
    let batches = cluster.net.batches.load(Ordering::Relaxed);
    let items = cluster.net.batched_items.load(Ordering::Relaxed);
    assert!(batches > 0, "no batch was sent");
    assert!(
        items > batches,
        "{items} items in {batches} batches: none held more than one"
    );
    cluster.assert_everywhere(&names).await;
    let bucket = BucketName::parse(b"b").unwrap();
    let key = Key::parse(b"key7".to_vec()).unwrap();
    let read = cluster.nodes[1]
        .get(&bucket, &key, ReadOptions::default())
        .await
        .unwrap();
    assert!(matches!(read, ReadOutcome::Found { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_predates_batches_gets_requests_one_by_one() {
    let cluster = Cluster::new(true).await;
    cluster.write_concurrently("warm", 4).await;
    let names = cluster.write_concurrently("key", 100).await;
    assert_eq!(cluster.net.batches.load(Ordering::Relaxed), 0);
    cluster.assert_everywhere(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item_and_never_nests() {
    let cluster = Cluster::new(false).await;
    let names = cluster.write_concurrently("key", 1).await;
    let get = |key: &str| Request::Get {
        bucket: b"b".to_vec(),
        key: key.as_bytes().to_vec(),
    };
    // Asked of node 0, which minted the write: the other owners may still be receiving it.
    let answer = cluster.nodes[0]
        .handle(Request::Batch(vec![
            get(&names[0]),
            Request::Batch(vec![get(&names[0])]),
            get("absent"),
        ]))
        .await;
    let Response::Batch(answers) = answer else {
        panic!("not a batch: {answer:?}");
    };
    assert_eq!(answers.len(), 3);
    assert!(matches!(&answers[0], Response::Object(Some(_))));
    assert!(matches!(
        &answers[1],
        Response::Error {
            kind: RemoteErrorKind::BadRequest,
            ..
        }
    ));
    assert_eq!(answers[2], Response::Object(None));
    assert_eq!(
        cluster.nodes[0].handle(Request::Batch(Vec::new())).await,
        Response::Batch(Vec::new())
    );
}
