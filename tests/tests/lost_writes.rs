//! The paths where Dynamo-style stores have lost acknowledged writes or silently replaced
//! concurrent ones (Riak's KV679 and its relatives), each replayed through the HTTP API
//! against real processes: a write answer's context, a write after a tombstone was
//! reaped, a node restored from a copy of its data directory.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::{context_of, copy_dir, siblings_of, Cluster};
use reqwest::StatusCode;

/// Reads `bucket`/`key` at `r=3` through every node and asserts the live values.
fn assert_everywhere(cluster: &Cluster, bucket: &str, key: &[u8], expected: &[&[u8]]) {
    for node in 0..cluster.nodes.len() {
        let read = cluster.get(node, bucket, key, "r=3");
        let values = match read.status() {
            StatusCode::OK => vec![read.bytes().unwrap().to_vec()],
            StatusCode::MULTIPLE_CHOICES => siblings_of(read),
            StatusCode::NOT_FOUND => Vec::new(),
            other => panic!("read through node {node} answered {other}"),
        };
        let mut expected: Vec<Vec<u8>> = expected.iter().map(|v| v.to_vec()).collect();
        expected.sort();
        assert_eq!(values, expected, "read through node {node}");
    }
}

/// Polls `done` every 100 ms until it holds; panics naming `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(100));
    }
}

/// Client Y writes blindly; client X writes blindly, then again with the context its own
/// write answered. X never read Y's value, so Y's value must survive X's second write as a
/// sibling: the answer to a write covers what its writer saw and its own version, nothing
/// else. Played with every write through one node (one minting replica, whose clock covers
/// both blind writes) and with each write through another node.
#[test]
fn a_write_answer_never_covers_a_sibling_its_writer_did_not_see() {
    let cluster = Cluster::start(3);
    for (key, through) in [
        (b"same-node".as_slice(), [0, 0, 0]),
        (b"each-node", [0, 1, 2]),
    ] {
        let put = |node: usize, value: &[u8], context: Option<&str>| {
            let answer = cluster.put(node, "answers", key, value, "w=3", context);
            assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            context_of(&answer).unwrap()
        };
        put(through[0], b"y", None);
        let x = put(through[1], b"x", None);
        let x2 = put(through[2], b"x2", Some(&x));
        assert_everywhere(&cluster, "answers", key, &[b"y", b"x2"]);

        // A chain of writes, each with the previous answer, keeps replacing X's own value.
        let x3 = put(through[1], b"x3", Some(&x2));
        assert_everywhere(&cluster, "answers", key, &[b"y", b"x3"]);

        // A writer that read both resolves them.
        let read = cluster.get(through[0], "answers", key, "r=3");
        assert_eq!(read.status(), StatusCode::MULTIPLE_CHOICES);
        put(through[2], b"merged", context_of(&read).as_deref());
        assert_everywhere(&cluster, "answers", key, &[b"merged"]);
        // The stale answer of X's third write supersedes nothing written since.
        put(through[0], b"late", Some(&x3));
        assert_everywhere(&cluster, "answers", key, &[b"merged", b"late"]);
    }
}

/// Riak's KV679, the tombstone variant. Node 1 reaps a tombstone soon (a short grace);
/// nodes 2 and 3 keep theirs (their grace is long, and they play a lost reap request). A
/// new write of the key through node 1 must not take a dot that their clocks still cover,
/// or they drop it as already seen while acknowledging it. And a client holding a context
/// from before the delete must not silently replace the value written after the reap.
#[test]
fn a_write_after_a_reap_is_not_dropped_by_replicas_that_still_hold_the_tombstone() {
    let cluster = Cluster::start_each(3, |i| {
        let mut args = vec![
            "--anti-entropy-interval-ms",
            "0",
            "--read-repair",
            "false",
            "--fault-injection",
        ];
        if i == 0 {
            args.extend(["--tombstone-grace-secs", "1", "--hint-ttl-secs", "1"]);
        }
        args.into_iter().map(str::to_string).collect()
    });
    for node in [1, 2] {
        cluster.plant_fault(node, "ignore-reap-requests");
    }
    let put = cluster.put(0, "reaped", b"k", b"v1", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let before_delete = context_of(&cluster.get(0, "reaped", b"k", "r=3")).unwrap();
    let delete = cluster.delete(0, "reaped", b"k", "w=3", Some(&before_delete));
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    wait_until(
        "node 1 reaps the tombstone",
        Duration::from_secs(30),
        || cluster.metric(0, "quorumkv_tombstones_reaped_total", "") >= 1.0,
    );
    // Nodes 2 and 3 still hold it (a context, no value).
    assert_eq!(cluster.local_values(1, "reaped", b"k"), None);
    assert!(context_of(&cluster.get(1, "reaped", b"k", "local=true")).is_some());

    let again = cluster.put(0, "reaped", b"k", b"v2", "w=2", None);
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    wait_until("every owner holds v2", Duration::from_secs(10), || {
        (0..3).all(|i| cluster.local_values(i, "reaped", b"k") == Some(vec![b"v2".to_vec()]))
    });
    assert_everywhere(&cluster, "reaped", b"k", &[b"v2"]);

    let stale = cluster.put(1, "reaped", b"k", b"v3", "w=3", Some(&before_delete));
    assert_eq!(stale.status(), StatusCode::NO_CONTENT);
    assert_everywhere(&cluster, "reaped", b"k", &[b"v2", b"v3"]);
}

/// A node's data directory is copied while it is stopped cleanly, the node runs on and
/// takes a write, and is then restored from the copy. The restored node must not mint the
/// dots it minted after the copy again: both blind writes stay readable everywhere.
#[test]
fn a_node_restored_from_a_copy_of_its_data_directory_loses_no_write() {
    let mut cluster = Cluster::start(3);
    let backup = tempfile::TempDir::new().unwrap();
    let copy = backup.path().join("node1");
    assert!(cluster.terminate(0).success());
    copy_dir(cluster.nodes[0].data_dir(), &copy).unwrap();
    cluster.restart(0);

    let put = cluster.put(0, "restore", b"k", b"after-the-copy", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert!(cluster.terminate(0).success());
    std::fs::remove_dir_all(cluster.nodes[0].data_dir()).unwrap();
    copy_dir(&copy, cluster.nodes[0].data_dir()).unwrap();
    cluster.restart(0);

    let put = cluster.put(0, "restore", b"k", b"after-the-restore", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_everywhere(
        &cluster,
        "restore",
        b"k",
        &[b"after-the-copy", b"after-the-restore"],
    );
}

/// A key holds at most `--max-siblings` siblings (100 by default): the 101st blind write is
/// refused with 409 `too_many_siblings` and the count, nothing is stored, and the 100
/// earlier writes stay readable; a write with a read's context resolves them.
#[test]
fn the_101st_blind_write_to_one_key_is_refused_and_the_100_before_it_stay() {
    let cluster = Cluster::start(3);
    let mut written: Vec<Vec<u8>> = Vec::new();
    for i in 0..100 {
        let value = format!("v{i:03}").into_bytes();
        let put = cluster.put(i % 3, "siblings", b"k", &value, "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "write {i}");
        written.push(value);
    }
    let refused = cluster.put(1, "siblings", b"k", b"one-too-many", "w=3", None);
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"], "too_many_siblings", "{body}");
    assert_eq!(body["count"], 100, "{body}");
    let read = cluster.get(2, "siblings", b"k", "r=3");
    assert_eq!(read.status(), StatusCode::MULTIPLE_CHOICES);
    let context = context_of(&read).unwrap();
    assert_eq!(siblings_of(read), written);

    let resolved = cluster.put(0, "siblings", b"k", b"resolved", "w=3", Some(&context));
    assert_eq!(resolved.status(), StatusCode::NO_CONTENT);
    assert_everywhere(&cluster, "siblings", b"k", &[b"resolved"]);
}

/// A key's clock is bounded by `--max-clock-entries`: each node mints the writes it
/// coordinates under its own actor, so with a limit of 2 the third node's write is refused
/// with 409 `clock_too_large` and stores nothing; the delete is accepted, and once its
/// tombstone is reaped the key is written afresh under a new clock.
#[test]
fn a_write_that_would_pass_the_clock_limit_is_refused_and_the_key_can_start_anew() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--max-clock-entries",
            "2",
            "--tombstone-grace-secs",
            "1",
            "--hint-ttl-secs",
            "1",
        ],
    );
    let first = cluster.put(0, "clocks", b"k", b"one", "w=3", None);
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = cluster.put(
        1,
        "clocks",
        b"k",
        b"two",
        "w=3",
        context_of(&first).as_deref(),
    );
    assert_eq!(second.status(), StatusCode::NO_CONTENT);
    let context = context_of(&second).unwrap();

    let refused = cluster.put(2, "clocks", b"k", b"three", "w=3", Some(&context));
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"], "clock_too_large", "{body}");
    assert_everywhere(&cluster, "clocks", b"k", &[b"two"]);

    let deleted = cluster.delete(2, "clocks", b"k", "w=3", Some(&context));
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_everywhere(&cluster, "clocks", b"k", &[]);
    wait_until(
        "the delete reaped by every owner",
        Duration::from_secs(30),
        || total(&cluster, &[0, 1, 2], "quorumkv_tombstones_reaped_total") >= 3.0,
    );
    let again = cluster.put(2, "clocks", b"k", b"anew", "w=3", None);
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_everywhere(&cluster, "clocks", b"k", &[b"anew"]);
}

/// A key's record is bounded by `--max-object-bytes`: a blind write that would pass it is
/// refused with 413 `object_too_large` and stores nothing; a write that replaces the
/// siblings it saw fits again.
#[test]
fn a_write_that_would_pass_the_record_limit_is_refused_and_stores_nothing() {
    let cluster = Cluster::start_with(
        3,
        &["--max-value-bytes", "1000", "--max-object-bytes", "2000"],
    );
    let value = |tag: u8| vec![tag; 900];
    for tag in [b'a', b'b'] {
        let put = cluster.put(0, "large", b"k", &value(tag), "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    let refused = cluster.put(1, "large", b"k", &value(b'c'), "w=3", None);
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"], "object_too_large", "{body}");
    let a = value(b'a');
    let b = value(b'b');
    assert_everywhere(&cluster, "large", b"k", &[&a, &b]);

    let context = context_of(&cluster.get(0, "large", b"k", "r=3")).unwrap();
    let c = value(b'c');
    let put = cluster.put(2, "large", b"k", &c, "w=3", Some(&context));
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_everywhere(&cluster, "large", b"k", &[&c]);
}

/// With anti-entropy running, a tombstone every owner agreed to reap is gone from all of
/// them within the grace plus a cycle, and stays gone. Node 1 has a short grace and reaps
/// first; nodes 2 and 3 have a longer one. Anti-entropy must not hand the tombstone back to
/// node 1 from them, which would start its grace again, and again, until theirs ran out.
#[test]
fn reaping_converges_on_every_owner_with_anti_entropy_on() {
    let cluster = Cluster::start_each(3, |i| {
        let grace = if i == 0 { "1" } else { "8" };
        [
            "--tombstone-grace-secs",
            grace,
            "--hint-ttl-secs",
            "1",
            "--anti-entropy-interval-ms",
            "500",
        ]
        .into_iter()
        .map(str::to_string)
        .collect()
    });
    let keys: Vec<String> = (0..20).map(|k| format!("k{k}")).collect();
    for key in &keys {
        let put = cluster.put(0, "reap", key.as_bytes(), b"v", "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
        let delete = cluster.delete(1, "reap", key.as_bytes(), "w=3", None);
        assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    }
    let gone_everywhere = || {
        keys.iter().all(|key| {
            (0..3).all(|node| {
                let local = cluster.get(node, "reap", key.as_bytes(), "local=true");
                local.status() == StatusCode::NOT_FOUND && context_of(&local).is_none()
            })
        })
    };
    // Node 1's grace plus a few rounds: well before nodes 2 and 3 would reap on their own.
    wait_until(
        "every owner drops every tombstone",
        Duration::from_secs(6),
        gone_everywhere,
    );
    let reaped_by_node1 = || cluster.metric(0, "quorumkv_tombstones_reaped_total", "");
    let settled = reaped_by_node1();
    // Once per key; a reap request racing an anti-entropy round may cost one more.
    assert!(
        settled >= keys.len() as f64 && settled < 2.0 * keys.len() as f64,
        "node 1 reaped {settled} times for {} keys",
        keys.len()
    );
    // Several anti-entropy cycles later: nothing came back, nothing was reaped again.
    sleep(Duration::from_secs(3));
    assert!(gone_everywhere(), "a tombstone came back");
    assert_eq!(reaped_by_node1(), settled, "tombstones were reaped again");
}

/// A minting owner that is paused (SIGSTOP) and not yet marked down must not fail writes:
/// after a short patience the write mints at the next up owner, while `w` replicas are
/// reachable. Every write through the three live nodes of four succeeds.
#[test]
fn a_paused_minting_owner_fails_no_write() {
    let mut cluster = Cluster::start(4);
    cluster.pause(3);
    let mut failed = Vec::new();
    for i in 0..120 {
        let key = format!("k{i}");
        let put = cluster.put(
            i % 3,
            "paused",
            key.as_bytes(),
            key.as_bytes(),
            "w=2&timeout_ms=3000",
            None,
        );
        if put.status() != StatusCode::NO_CONTENT {
            failed.push((key, put.status(), put.text().unwrap_or_default()));
        }
    }
    cluster.resume(3);
    assert!(
        failed.is_empty(),
        "{} writes failed: {failed:?}",
        failed.len()
    );
    // Each write is readable. A paused owner that applied a mint after the write had
    // moved on holds a second copy of the value: a sibling equal to it, never another one.
    for i in 0..120 {
        let key = format!("k{i}");
        let read = cluster.get(i % 3, "paused", key.as_bytes(), "r=2");
        let values = match read.status() {
            StatusCode::OK => vec![read.bytes().unwrap().to_vec()],
            StatusCode::MULTIPLE_CHOICES => siblings_of(read),
            other => panic!("{key}: read answered {other}"),
        };
        assert!(
            !values.is_empty() && values.iter().all(|v| v == key.as_bytes()),
            "{key}: {values:?}"
        );
    }
}

/// Waits until nodes `nodes` each see `members` members, all active, nothing pending.
fn wait_balanced(cluster: &Cluster, nodes: &[usize], members: usize) {
    cluster.wait_balanced(nodes, members, Duration::from_secs(90));
}

/// POST `path` on node `i`, the status and the JSON answer.
fn post(cluster: &Cluster, i: usize, path: &str) -> (StatusCode, serde_json::Value) {
    let response = cluster
        .http()
        .post(format!("{}{path}", cluster.url(i)))
        .send()
        .unwrap();
    (response.status(), response.json().unwrap_or_default())
}

/// The sum of a counter over nodes `nodes`.
fn total(cluster: &Cluster, nodes: &[usize], metric: &str) -> f64 {
    nodes.iter().map(|&i| cluster.metric(i, metric, "")).sum()
}

/// How the former owners of the partitions treat their old copies in
/// [`deleted_keys_after_partitions_return`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OldCopies {
    /// The automatic cleanup drops them after the join.
    CleanedUp,
    /// No automatic cleanup (`--cleanup-delay-secs 0`): they are still there when the
    /// leave gives the partitions back (node1 is cleaned on demand, nodes 2 and 3 not).
    Kept,
    /// The planted `keep-old-copies` bug: kept, and merged back when regained.
    MergedBack,
}

/// Issue 25, item 3: 300 keys written on three nodes; node4 joins (the three lose some
/// partitions to it); every key is deleted and every owner reaps; node4 leaves, and the
/// partitions go back to their former owners. Returns the deleted keys that read again
/// at r=3, and asserts that the former owners hold none of them when `old` is not
/// [`OldCopies::MergedBack`].
fn deleted_keys_after_partitions_return(old: OldCopies) -> Vec<String> {
    let cleanup_delay = if old == OldCopies::Kept { "0" } else { "5" };
    let args = [
        "--tombstone-grace-secs",
        "1",
        "--hint-ttl-secs",
        "1",
        "--anti-entropy-interval-ms",
        "0",
        "--cleanup-delay-secs",
        cleanup_delay,
        "--fault-injection",
    ];
    let mut cluster = Cluster::start_with(3, &args);
    let former = [0, 1, 2];
    if old == OldCopies::MergedBack {
        for &i in &former {
            cluster.plant_fault(i, "keep-old-copies");
        }
    }
    let keys: Vec<Vec<u8>> = (0..300).map(|k| format!("k{k}").into_bytes()).collect();
    let mut contexts = Vec::new();
    for key in &keys {
        let put = cluster.put(0, "gone", key, key, "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
        contexts.push(context_of(&put).unwrap());
    }
    let node4 = cluster.join(&[0, 1, 2], &[]);
    wait_balanced(&cluster, &[0, 1, 2, node4], 4);
    match old {
        OldCopies::CleanedUp => wait_until(
            "the former owners drop the partitions they lost",
            Duration::from_secs(60),
            || {
                former
                    .iter()
                    .all(|&i| cluster.metric(i, "quorumkv_cleanup_keys_dropped_total", "") > 0.0)
            },
        ),
        OldCopies::Kept => {
            let answer = cleanup_when_allowed(&cluster, 0);
            // Node1's answer is the proof the copies were there; nodes 2 and 3 keep theirs.
            assert!(answer["keys"].as_u64().unwrap() > 0, "{answer}");
        }
        // Past the joint window: deletes reach the new owners only.
        OldCopies::MergedBack => sleep(Duration::from_secs(12)),
    }
    for (key, context) in keys.iter().zip(&contexts) {
        let delete = cluster.delete(0, "gone", key, "w=3", Some(context));
        assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    }
    let everyone = [0, 1, 2, node4];
    wait_until(
        "every owner reaps every tombstone",
        Duration::from_secs(60),
        || total(&cluster, &everyone, "quorumkv_tombstones_reaped_total") >= 900.0,
    );
    let (status, answer) = post(&cluster, node4, "/v1/cluster/leave");
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(cluster.wait_exit(node4, Duration::from_secs(90)).success());
    wait_balanced(&cluster, &former, 3);
    let back: Vec<String> = keys
        .iter()
        .filter(|key| cluster.get(0, "gone", key, "r=3").status() != StatusCode::NOT_FOUND)
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect();
    println!(
        "{old:?}: {} of {} deleted keys read again after the leave",
        back.len(),
        keys.len()
    );
    if old != OldCopies::MergedBack {
        for &i in &former {
            for key in &keys {
                assert_eq!(cluster.local_values(i, "gone", key), None, "node{}", i + 1);
            }
        }
    }
    back
}

#[test]
fn deleted_keys_stay_deleted_when_partitions_return_after_the_automatic_cleanup() {
    let back = deleted_keys_after_partitions_return(OldCopies::CleanedUp);
    assert!(back.is_empty(), "deleted keys came back: {back:?}");
}

#[test]
fn deleted_keys_stay_deleted_when_partitions_return_to_owners_that_kept_old_copies() {
    let back = deleted_keys_after_partitions_return(OldCopies::Kept);
    assert!(back.is_empty(), "deleted keys came back: {back:?}");
}

/// The negative control: with old copies merged back, the same steps bring deleted keys
/// back, so the two tests above would see it.
#[test]
fn old_copies_merged_back_bring_deleted_keys_back() {
    let back = deleted_keys_after_partitions_return(OldCopies::MergedBack);
    assert!(!back.is_empty(), "the planted bug went unseen");
}

/// `POST /v1/cluster/cleanup` on node `i`, again while the node answers that the change
/// is too recent (its joint window); its answer once it ran.
fn cleanup_when_allowed(cluster: &Cluster, i: usize) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, answer) = post(cluster, i, "/v1/cluster/cleanup");
        if status == StatusCode::OK {
            return answer;
        }
        assert_eq!(answer["error"], "change_in_progress", "{answer}");
        assert!(started.elapsed() < Duration::from_secs(30), "{answer}");
        sleep(Duration::from_millis(500));
    }
}

/// `POST /v1/cluster/cleanup` (and `quorumkv cluster cleanup`): refused while a change is
/// under way; afterwards it drops exactly the copies of keys the node no longer owns, and
/// every key still reads everywhere.
#[test]
fn cleanup_on_demand_drops_exactly_the_copies_a_node_no_longer_owns() {
    let mut cluster = Cluster::start_with(3, &["--cleanup-delay-secs", "0"]);
    let keys: Vec<Vec<u8>> = (0..300).map(|k| format!("k{k}").into_bytes()).collect();
    for key in &keys {
        let put = cluster.put(0, "moved", key, key, "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    let (status, answer) = post(&cluster, 0, "/v1/cluster/cleanup");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["keys"].as_u64(), answer["partitions"].as_u64()),
        (Some(0), Some(0)),
        "{answer}"
    );
    let node4 = cluster.join(&[0, 1, 2], &[]);
    wait_until("node1 sees the change", Duration::from_secs(30), || {
        cluster
            .cluster_view(0)
            .is_ok_and(|v| v["transfers_total"].as_u64().unwrap_or(0) > 0)
    });
    // Transfers start a settle time after the change is seen: it is still under way.
    let (status, answer) = post(&cluster, 0, "/v1/cluster/cleanup");
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::CONFLICT, Some("change_in_progress")),
        "{answer}"
    );
    wait_balanced(&cluster, &[0, 1, 2, node4], 4);
    let held = |i: usize| {
        keys.iter()
            .filter(|key| cluster.local_values(i, "moved", key).is_some())
            .count()
    };
    assert_eq!(held(0), keys.len(), "nothing dropped without being asked");
    let answer = cleanup_when_allowed(&cluster, 0);
    let kept = held(0);
    assert!(kept < keys.len(), "node1 lost partitions to node4");
    assert_eq!(
        answer["keys"].as_u64(),
        Some((keys.len() - kept) as u64),
        "{answer}"
    );
    assert_eq!(answer["buckets"][0]["bucket"], "moved", "{answer}");
    println!(
        "cleanup on node1 dropped {} of {} keys ({} bytes)",
        answer["keys"],
        keys.len(),
        answer["bytes"]
    );
    // The CLI, on node2, once node2's joint window is over too (it may have seen the
    // commit later than node1).
    let started = Instant::now();
    let output = loop {
        let output = std::process::Command::new(quorumkv_tests::binary())
            .args(["cluster", "cleanup", "--endpoint", &cluster.url(1)])
            .output()
            .unwrap();
        let refused = String::from_utf8_lossy(&output.stderr).contains("409 change_in_progress");
        if !refused || started.elapsed() > Duration::from_secs(30) {
            break output;
        }
        sleep(Duration::from_millis(500));
    };
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let kept_by_2 = held(1);
    assert!(
        printed.contains(&format!("dropped {} keys", keys.len() - kept_by_2)),
        "{printed}"
    );
    cleanup_when_allowed(&cluster, 2);
    // Every key, on n = 3 owners still.
    for key in &keys {
        let read = cluster.get(2, "moved", key, "r=3");
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.bytes().unwrap().as_ref(), key.as_slice());
    }
    let owners = (0..4).map(held).sum::<usize>();
    assert_eq!(
        owners,
        3 * keys.len(),
        "each key on exactly its three owners"
    );
}

/// Issue 25, item 7: a node that leaves the cluster hands over the hints it holds. Node4
/// and node3 cannot reach each other while 200 keys are written through node4 at w=2, so
/// node4 keeps hints for node3 (as a fallback, or as the coordinator); node4 then leaves,
/// and exits without ever reaching node3. With anti-entropy and read repair off, only those
/// hints bring the writes to node3 (its transfers pull only the partitions it gains): once
/// the other nodes have delivered every hint, node3 must hold every key.
#[test]
fn a_leaving_node_hands_over_its_hints_before_it_exits() {
    let mut cluster = Cluster::start_with(
        4,
        &[
            "--anti-entropy-interval-ms",
            "0",
            "--read-repair",
            "false",
            "--fault-injection",
        ],
    );
    cluster.cut(3, &[2]);
    cluster.cut(2, &[3]);
    cluster.wait_member_status(3, 2, "down").unwrap();
    let keys: Vec<Vec<u8>> = (0..200).map(|k| format!("h{k}").into_bytes()).collect();
    for key in &keys {
        let put = cluster.put(3, "hinted", key, key, "w=2", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    let held_by_4 = cluster.metric(3, "quorumkv_hints_pending", "");
    assert!(held_by_4 > 0.0, "node4 holds hints for node3");
    let (status, answer) = post(&cluster, 3, "/v1/cluster/leave");
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(cluster.wait_exit(3, Duration::from_secs(90)).success());
    let log = cluster.nodes[3].log();
    assert!(
        log.contains("handed every hint over before leaving"),
        "{log}"
    );
    wait_until("every hint is delivered", Duration::from_secs(60), || {
        [0, 1, 2]
            .iter()
            .all(|&i| cluster.metric(i, "quorumkv_hints_pending", "") == 0.0)
    });
    let missing = keys
        .iter()
        .filter(|key| cluster.local_values(2, "hinted", key).is_none())
        .count();
    println!(
        "node4 held {held_by_4} hints; node3 misses {missing} of {} keys",
        keys.len()
    );
    assert_eq!(missing, 0);
}
