//! The client API end to end, against a real 3-node cluster: round trips at every quorum,
//! siblings and causal contexts, bucket properties, admin routes and the CLI.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::process::Command;
use std::time::{Duration, Instant};

use quorumkv_tests::{binary, context_of, error_of, siblings_of, Cluster};
use reqwest::StatusCode;

#[test]
fn put_get_delete_round_trip_at_every_quorum() {
    let cluster = Cluster::start(3);
    for r in 1..=3 {
        for w in 1..=3 {
            let key = format!("k-r{r}-w{w}");
            let value = format!("value for r={r} w={w}");
            let put = cluster.put(
                (r + w) % 3,
                "rt",
                key.as_bytes(),
                value.as_bytes(),
                &format!("w={w}"),
                None,
            );
            assert_eq!(put.status(), StatusCode::NO_CONTENT, "put w={w}");
            assert!(context_of(&put).is_some(), "a write returns a context");
            // With r + w <= n a read may miss the write for a moment; it converges at once
            // here because every owner gets every write, so poll briefly.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let get = cluster.get(r % 3, "rt", key.as_bytes(), &format!("r={r}"));
                if get.status() == StatusCode::OK {
                    assert_eq!(get.bytes().unwrap(), value.as_bytes());
                    break;
                }
                assert!(
                    r + w <= 3,
                    "r={r} w={w}: read-your-writes must hold, got {}",
                    get.status()
                );
                assert!(
                    Instant::now() < deadline,
                    "r={r} w={w}: value never appeared"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let delete = cluster.delete(w % 3, "rt", key.as_bytes(), &format!("w={w}"), None);
            assert_eq!(delete.status(), StatusCode::NO_CONTENT, "delete w={w}");
            let gone = cluster.get(0, "rt", key.as_bytes(), "r=3");
            assert_eq!(gone.status(), StatusCode::NOT_FOUND);
            assert!(
                context_of(&gone).is_some(),
                "a deleted key's 404 carries the tombstone context"
            );
        }
    }
}

#[test]
fn every_byte_value_and_binary_keys_round_trip_with_their_content_type() {
    let cluster = Cluster::start(3);
    let value: Vec<u8> = (0..=255u8).collect();
    let key: Vec<u8> = vec![0, 1, b'/', b'%', 0xff, b' ', b'?', b'#'];
    let put = cluster
        .http()
        .put(cluster.key_url(0, "bin", &key))
        .header("content-type", "image/x-test; charset=binary")
        .body(value.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let get = cluster.get(1, "bin", &key, "r=3");
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers()["content-type"].to_str().unwrap(),
        "image/x-test; charset=binary"
    );
    assert_eq!(get.bytes().unwrap().to_vec(), value);
    // A key with a raw '/' is a different key from its parts.
    let slashed = cluster.put(2, "bin", b"a/b", b"x", "", None);
    assert_eq!(slashed.status(), StatusCode::NO_CONTENT);
    let raw = cluster
        .http()
        .get(format!("{}/v1/buckets/bin/keys/a/b", cluster.url(0)))
        .send()
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.bytes().unwrap().as_ref(), b"x");
    assert_eq!(
        cluster.get(0, "bin", b"a", "").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn concurrent_writes_become_siblings_and_a_context_resolves_them() {
    let cluster = Cluster::start(3);
    let key = b"fork";
    assert_eq!(
        cluster.put(0, "sib", key, b"one", "w=3", None).status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cluster.put(1, "sib", key, b"two", "w=3", None).status(),
        StatusCode::NO_CONTENT
    );
    let read = cluster.get(2, "sib", key, "r=2");
    assert_eq!(read.status(), StatusCode::MULTIPLE_CHOICES);
    assert_eq!(read.headers()["content-type"], "application/json");
    let context = context_of(&read).unwrap();
    assert_eq!(siblings_of(read), vec![b"one".to_vec(), b"two".to_vec()]);

    let resolved = cluster.put(2, "sib", key, b"merged", "w=2", Some(&context));
    assert_eq!(resolved.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(0, "sib", key, "r=2");
    assert_eq!(read.status(), StatusCode::OK);
    let context = context_of(&read).unwrap();
    assert_eq!(read.bytes().unwrap().as_ref(), b"merged");

    let deleted = cluster.delete(1, "sib", key, "w=2", Some(&context));
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        cluster.get(2, "sib", key, "r=2").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn a_write_with_a_stale_context_is_kept_beside_the_newer_version() {
    let cluster = Cluster::start(3);
    let key = b"stale";
    cluster.put(0, "lost", key, b"v1", "w=3", None);
    let stale = context_of(&cluster.get(0, "lost", key, "r=3")).unwrap();
    // A second client reads v1 and replaces it with v2 through another node.
    let fresh = context_of(&cluster.get(1, "lost", key, "r=3")).unwrap();
    assert_eq!(
        cluster
            .put(1, "lost", key, b"v2", "w=3", Some(&fresh))
            .status(),
        StatusCode::NO_CONTENT
    );
    // The first client, still holding v1's context, writes v3 through a third node: v3
    // supersedes v1 only, so v2 must survive as a sibling.
    assert_eq!(
        cluster
            .put(2, "lost", key, b"v3", "w=2", Some(&stale))
            .status(),
        StatusCode::NO_CONTENT
    );
    for node in 0..3 {
        let read = cluster.get(node, "lost", key, "r=3");
        assert_eq!(
            read.status(),
            StatusCode::MULTIPLE_CHOICES,
            "via node {node}"
        );
        assert_eq!(siblings_of(read), vec![b"v2".to_vec(), b"v3".to_vec()]);
    }
}

#[test]
fn bucket_props_are_cluster_wide_and_n_is_frozen_once_data_exists() {
    let cluster = Cluster::start(3);
    let props_url =
        |i: usize, bucket: &str| format!("{}/v1/buckets/{bucket}/props", cluster.url(i));
    let defaults: serde_json::Value = cluster
        .http()
        .get(props_url(1, "fresh"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(defaults, serde_json::json!({"n": 3, "r": 2, "w": 2}));

    let set = cluster
        .http()
        .put(props_url(0, "strict"))
        .body(r#"{"n": 3, "r": 3, "w": 3}"#)
        .send()
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    // Applied on every node within a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    for i in 0..3 {
        loop {
            let seen: serde_json::Value = cluster
                .http()
                .get(props_url(i, "strict"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if seen == serde_json::json!({"n": 3, "r": 3, "w": 3}) {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} still has {seen}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // n of an empty bucket may change; r and w follow as a majority unless given.
    let one: serde_json::Value = cluster
        .http()
        .put(props_url(2, "small"))
        .body(r#"{"n": 1}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(one, serde_json::json!({"n": 1, "r": 1, "w": 1}));
    assert_eq!(
        cluster.put(0, "small", b"k", b"v", "", None).status(),
        StatusCode::NO_CONTENT
    );
    let refused = cluster
        .http()
        .put(props_url(1, "small"))
        .body(r#"{"n": 3}"#)
        .send()
        .unwrap();
    assert_eq!(
        error_of(refused),
        (StatusCode::CONFLICT, "bucket_not_empty".into())
    );
    // Quorums may still change.
    let quorum = cluster
        .http()
        .put(props_url(1, "small"))
        .body(r#"{"r": 1, "w": 1}"#)
        .send()
        .unwrap();
    assert_eq!(quorum.status(), StatusCode::OK);
}

#[test]
fn health_cluster_metrics_and_openapi_routes() {
    let cluster = Cluster::start(3);
    let health: serde_json::Value = cluster
        .http()
        .get(format!("{}/v1/health", cluster.url(1)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "node": "node2"}));

    let view = cluster.cluster_view(0).unwrap();
    assert_eq!(view["node"], "node1");
    assert_eq!(view["partitions"], 256);
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for (member, node) in members.iter().zip(&cluster.nodes) {
        assert_eq!(member["id"], node.id.as_str());
        assert_eq!(member["addr"], node.addr.as_str());
        assert_eq!(member["status"], "up");
    }

    cluster.put(0, "m", b"k", b"v", "", None);
    assert!(
        cluster.metric(0, "quorumkv_http_requests_total", "status=\"204\"") >= 1.0,
        "requests are counted by status"
    );
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(0)))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("quorumkv_http_request_duration_seconds_bucket"),
        "latency histogram"
    );

    let openapi: serde_json::Value = cluster
        .http()
        .get(format!("{}/v1/openapi.json", cluster.url(2)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/v1/buckets/{bucket}/keys/{key}"]["put"].is_object());
}

#[test]
fn a_node_marks_a_dead_peer_down_and_sigterm_exits_cleanly() {
    let mut cluster = Cluster::start(3);
    cluster.kill(2);
    cluster.wait_member_status(0, 2, "down").unwrap();
    let status = cluster.terminate(1);
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

#[test]
fn the_cli_reads_writes_deletes_and_shows_the_cluster() {
    let cluster = Cluster::start(3);
    let endpoint = cluster.url(0);
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .args(args)
            .args(["--endpoint", &endpoint])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, context, err) = run(&["put", "cli", "greeting", "hello world", "--w", "3"]);
    assert!(ok, "put failed: {err}");
    assert!(!context.trim().is_empty(), "put prints the new context");
    let (ok, value, err) = run(&["get", "cli", "greeting", "--r", "2"]);
    assert!(ok, "get failed: {err}");
    assert_eq!(value, "hello world");
    let (ok, document, err) = run(&["get", "cli", "greeting", "--json"]);
    assert!(ok, "get --json failed: {err}");
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    assert!(document.to_string().contains("hello world"), "{document}");
    let (ok, _, err) = run(&["delete", "cli", "greeting"]);
    assert!(ok, "delete failed: {err}");
    let (ok, _, err) = run(&["get", "cli", "greeting"]);
    assert!(!ok, "get of a deleted key fails");
    assert!(err.contains("404"), "says 404: {err}");
    let (ok, status, err) = run(&["cluster", "status"]);
    assert!(ok, "cluster status failed: {err}");
    for node in &cluster.nodes {
        assert!(
            status.contains(&node.id) && status.contains(&node.addr),
            "{status}"
        );
    }
    assert_eq!(status.matches(" up").count(), 3, "{status}");
}
