//! Scenarios that broke real Dynamo clones, replayed against real processes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

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
