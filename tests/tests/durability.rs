//! Durability and failure behaviour against real processes: SIGKILL, restarts, quorum
//! failures and on-disk corruption.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use quorumkv_replica::{Store, StoreOptions};
use quorumkv_tests::{error_of, Cluster};
use reqwest::StatusCode;

#[test]
fn an_acknowledged_write_survives_sigkill_of_a_replica() {
    let mut cluster = Cluster::start(3);
    for i in 0..50u32 {
        let key = format!("k{i}");
        let put = cluster.put(
            (i % 3) as usize,
            "dur",
            key.as_bytes(),
            key.as_bytes(),
            "w=2",
            None,
        );
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    cluster.kill(0);
    for i in 0..50u32 {
        let key = format!("k{i}");
        let get = cluster.get(1 + (i % 2) as usize, "dur", key.as_bytes(), "r=2");
        assert_eq!(get.status(), StatusCode::OK, "{key}");
        assert_eq!(get.bytes().unwrap().as_ref(), key.as_bytes());
    }
}

#[test]
fn with_one_node_down_w3_fails_with_quorum_unavailable_and_w2_succeeds() {
    let mut cluster = Cluster::start(3);
    cluster.kill(2);
    let refused = cluster.put(0, "q", b"k", b"v", "w=3", None);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"], "quorum_unavailable");
    assert_eq!(body["required"], 3);
    // Two answered if the write went out before the failure detector noticed the kill;
    // none were asked if it went out after (the coordinator refuses at once).
    let answered = body["answered"].as_u64().unwrap();
    assert!(answered == 2 || answered == 0, "answered {answered}");
    assert!(
        body["message"].as_str().unwrap().contains("node3"),
        "names the missing replica: {body}"
    );
    let accepted = cluster.put(1, "q", b"k2", b"v", "w=2", None);
    assert_eq!(accepted.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(0, "q", b"k2", "r=3");
    assert_eq!(
        error_of(read),
        (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable".into())
    );
    assert!(cluster.metric(0, "quorumkv_quorum_failures_total", "") >= 2.0);
}

#[test]
fn a_node_killed_and_restarted_holds_every_write_it_acknowledged() {
    let mut cluster = Cluster::start(3);
    // w=3: every replica, node1 included, acknowledged every write before the kill.
    for i in 0..200u32 {
        let key = format!("key-{i}");
        let put = cluster.put(
            (i % 3) as usize,
            "restart",
            key.as_bytes(),
            format!("v{i}").as_bytes(),
            "w=3",
            None,
        );
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    cluster.kill(0);
    cluster.restart(0);
    // Stop the other two so that only node1's own replica can answer.
    assert!(cluster.terminate(1).success());
    assert!(cluster.terminate(2).success());
    for i in 0..200u32 {
        let key = format!("key-{i}");
        let get = cluster.get(0, "restart", key.as_bytes(), "r=1");
        assert_eq!(
            get.status(),
            StatusCode::OK,
            "{key} lost by the restarted node"
        );
        assert_eq!(get.bytes().unwrap(), format!("v{i}").as_bytes());
    }
}

#[test]
fn under_sync_always_every_acknowledged_write_is_kept_and_every_start_renews_the_actor() {
    // Node 1 coordinates every write, so it mints each one itself and acknowledges it
    // only after the fsync that it overlaps with sending the version to the others.
    let mut cluster = Cluster::start_with(3, &["--sync", "always"]);
    for i in 0..150u32 {
        let key = format!("key-{i}");
        let w = if i % 2 == 0 { "w=3" } else { "w=1" };
        let put = cluster.put(
            0,
            "always",
            key.as_bytes(),
            format!("v{i}").as_bytes(),
            w,
            None,
        );
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
    }
    const RENEWED: &str = "new actor id for this start";
    // A clean stop and a kill alike: every start takes a new actor (a copy of the data
    // directory restored later could otherwise mint dots again).
    assert!(!cluster.nodes[0].log().contains(RENEWED));
    assert!(cluster.terminate(0).success());
    cluster.restart(0);
    assert_eq!(cluster.nodes[0].log().matches(RENEWED).count(), 1);
    cluster.kill(0);
    cluster.restart(0);
    assert_eq!(cluster.nodes[0].log().matches(RENEWED).count(), 2);

    // Writes minted under the new actor and the old versions they do not cover are
    // siblings, never one lost for the other.
    let fresh = cluster.put(0, "always", b"key-0", b"after", "w=3", None);
    assert_eq!(fresh.status(), StatusCode::NO_CONTENT);
    let both = quorumkv_tests::siblings_of(cluster.get(1, "always", b"key-0", "r=3"));
    assert_eq!(both.len(), 2, "{both:?}");

    // Only node 1's own replica answers now: it minted every write, so it holds each one
    // it coordinated, including those a peer acknowledged first (w=1).
    assert!(cluster.terminate(1).success());
    assert!(cluster.terminate(2).success());
    for i in 1..150u32 {
        let key = format!("key-{i}");
        let get = cluster.get(0, "always", key.as_bytes(), "r=1");
        assert_eq!(get.status(), StatusCode::OK, "{key} lost");
        assert_eq!(get.bytes().unwrap(), format!("v{i}").as_bytes());
    }
}

#[test]
fn a_corrupt_record_is_detected_counted_and_never_returned() {
    let mut cluster = Cluster::start(3);
    let put = cluster.put(0, "crc", b"victim", b"precious value", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert!(cluster.terminate(2).success());
    {
        let store = Store::open(cluster.nodes[2].data_dir(), StoreOptions::default()).unwrap();
        let mut record = store
            .raw_get(b"crc", b"victim")
            .unwrap()
            .expect("node3 holds the record");
        let last = record.len() - 1;
        record[last] ^= 0x40;
        store.raw_put(b"crc", b"victim", &record).unwrap();
        store.flush().unwrap();
    }
    cluster.restart(2);
    // Through node3 with r=3: its own replica is corrupt and does not count.
    let read = cluster.get(2, "crc", b"victim", "r=3&timeout_ms=2000");
    assert_eq!(
        error_of(read),
        (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable".into())
    );
    assert!(
        cluster.metric(2, "quorumkv_corrupt_records_total", "") >= 1.0,
        "corruption is counted"
    );
    // The healthy replicas still serve the value, never the damaged bytes.
    let read = cluster.get(2, "crc", b"victim", "r=2");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().unwrap().as_ref(), b"precious value");
    // The node is still healthy.
    let health = cluster
        .http()
        .get(format!("{}/v1/health", cluster.url(2)))
        .send()
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
