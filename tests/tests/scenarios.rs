//! Scenarios that broke real Dynamo clones, replayed against real processes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::{context_of, siblings_of, Cluster};
use reqwest::StatusCode;

/// Riak's KV679: a node whose data directory is wiped comes back with the same id. Had its
/// dots been named by node id, its new writes would reuse dots the others already hold,
/// look already seen, and vanish. Each data directory has its own actor id, so they do not.
#[test]
fn a_wiped_node_rejoining_with_the_same_id_loses_none_of_its_new_writes() {
    let mut cluster = Cluster::start(3);
    assert_eq!(
        cluster.put(0, "kv679", b"k", b"v1", "w=3", None).status(),
        StatusCode::NO_CONTENT
    );
    assert!(cluster.terminate(0).success());
    std::fs::remove_dir_all(cluster.nodes[0].data_dir()).unwrap();
    cluster.restart(0);
    // A blind write through the wiped node: its first dot must not collide with v1's.
    let blind = cluster.put(0, "kv679", b"k", b"v2", "w=3", None);
    assert_eq!(blind.status(), StatusCode::NO_CONTENT);
    for node in 0..3 {
        let read = cluster.get(node, "kv679", b"k", "r=3");
        assert_eq!(
            read.status(),
            StatusCode::MULTIPLE_CHOICES,
            "through node {node}"
        );
        assert_eq!(siblings_of(read), vec![b"v1".to_vec(), b"v2".to_vec()]);
    }
    // A write with the read's context through the wiped node resolves both.
    let context = context_of(&cluster.get(1, "kv679", b"k", "r=3")).unwrap();
    assert_eq!(
        cluster
            .put(0, "kv679", b"k", b"v3", "w=3", Some(&context))
            .status(),
        StatusCode::NO_CONTENT
    );
    let read = cluster.get(2, "kv679", b"k", "r=3");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().unwrap().as_ref(), b"v3");
}

/// Interleaved read-modify-write clients on one key: each writes with the context of its
/// own last read, so each write supersedes what its client saw and is concurrent only with
/// the other client's latest write. With dotted version vectors a read never sees more
/// than two live siblings (with plain vector clocks per node they pile up).
#[test]
fn interleaved_read_modify_write_clients_never_hold_more_than_two_siblings() {
    let cluster = Cluster::start(3);
    let mut most = 0;
    let mut contexts: [Option<String>; 2] = [None, None];
    for round in 0..40 {
        // Both clients read (through different nodes) before either writes.
        for (client, context) in contexts.iter_mut().enumerate() {
            let read = cluster.get(client, "rmw", b"hot", "r=2");
            *context = context_of(&read);
            let live = match read.status() {
                StatusCode::NOT_FOUND => 0,
                StatusCode::OK => 1,
                StatusCode::MULTIPLE_CHOICES => siblings_of(read).len(),
                other => panic!("read answered {other}"),
            };
            most = most.max(live);
        }
        for (client, context) in contexts.iter().enumerate() {
            let value = format!("client{client}-round{round}");
            let put = cluster.put(
                client,
                "rmw",
                b"hot",
                value.as_bytes(),
                "w=2",
                context.as_deref(),
            );
            assert_eq!(put.status(), StatusCode::NO_CONTENT);
        }
    }
    assert!(most <= 2, "a read saw {most} live siblings");
    assert_eq!(
        most, 2,
        "the two clients' writes were concurrent, so two siblings were seen"
    );
}

/// Polls `done` every 100 ms until it holds; panics naming `what` after `limit`. Returns
/// how long it took.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// A node that holds hints is killed with SIGKILL before it could replay them (its WAL is
/// all that is left of them), and comes back after their owner did. With anti-entropy off
/// and no reads, hinted handoff is the only way the owner can learn of the writes it
/// missed: every one of them must still reach it.
#[test]
fn a_hint_holder_killed_with_sigkill_before_it_replays_loses_no_hint() {
    let mut cluster = Cluster::start_with(3, &["--anti-entropy-interval-ms", "0"]);
    assert!(cluster.terminate(2).success());
    let keys: Vec<String> = (0..300).map(|i| format!("hinted{i}")).collect();
    for key in &keys {
        let put = cluster.put(0, "kill9", key.as_bytes(), key.as_bytes(), "w=2", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
    }
    // Hints are kept off the request path: wait until node 1 holds one per key (with
    // three nodes and n=3 there is no fallback, so the coordinator keeps them all).
    let hinted = || cluster.metric(0, "quorumkv_hints_pending", "");
    wait_until(
        "node 1 holds a hint per write",
        Duration::from_secs(30),
        || hinted() >= keys.len() as f64,
    );
    let held = hinted();
    assert_eq!(
        cluster.metric(1, "quorumkv_hints_pending", ""),
        0.0,
        "node 2 acknowledged as an owner and keeps no hint"
    );

    cluster.kill(0);
    cluster.restart(2);
    assert_eq!(
        cluster.local_values(2, "kill9", keys[0].as_bytes()),
        None,
        "node 3 missed the writes, and only node 1's hints can bring them"
    );
    let restarted = Instant::now();
    cluster.restart(0);
    // The hint count comes back from disk with the node, and each replay moves one hint
    // from pending to replayed: a restart that lost hints would show fewer in all. Pending
    // is read first, so that a replay between the two reads can only add.
    let pending_at_start = cluster.metric(0, "quorumkv_hints_pending", "");
    let replayed_at_start = cluster.metric(0, "quorumkv_hints_replayed_total", "");
    assert!(
        pending_at_start + replayed_at_start >= held,
        "after the restart node 1 reports {pending_at_start} hints pending and \
         {replayed_at_start} replayed, of the {held} it held"
    );

    let mut missing: Vec<&String> = keys.iter().collect();
    wait_until(
        "every hinted write on node 3's own replica",
        Duration::from_secs(60),
        || {
            missing.retain(|k| {
                cluster.local_values(2, "kill9", k.as_bytes()) != Some(vec![k.as_bytes().to_vec()])
            });
            missing.is_empty()
        },
    );
    let delivered = restarted.elapsed();
    let drained = wait_until("node 1's hints drain", Duration::from_secs(60), || {
        cluster.metric(0, "quorumkv_hints_pending", "") == 0.0
    });
    let replayed = cluster.metric(0, "quorumkv_hints_replayed_total", "");
    assert!(
        replayed >= keys.len() as f64,
        "node 1 replayed {replayed} hints after its restart, fewer than the {} writes",
        keys.len()
    );
    println!(
        "kill -9 of a hint holder: {held} hints held; node 3 had all {} writes {delivered:?} \
         after node 1's restart, hints drained {drained:?} later ({replayed} replayed)",
        keys.len()
    );
}
