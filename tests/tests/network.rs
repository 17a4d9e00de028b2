//! Network faults between nodes on hosts of their own ([`Cluster::start_hosts`]: network
//! namespaces when the tests run as root, else one loopback address per node): a
//! majority/minority partition, a bridge, a one-way cut, and delay with loss. Each test
//! heals and checks that every acknowledged write reaches every replica. Every wait is
//! bounded; the figures are printed for the record, never asserted.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::hosts::{NetworkMode, Unsupported};
use quorumkv_tests::{error_of, Cluster};
use reqwest::StatusCode;

/// How long convergence may take before a test gives up.
const CONVERGE: Duration = Duration::from_secs(60);

/// Strict quorums: only owners count, so a cut owner cannot be stood in for.
const STRICT_W2: &str = "w=2&sloppy=false&timeout_ms=3000";
const STRICT_W3: &str = "w=3&sloppy=false&timeout_ms=3000";

/// Writes `key=value` through node `i` with `query`; returns whether it was acknowledged.
fn write(cluster: &Cluster, i: usize, bucket: &str, key: &str, query: &str) -> bool {
    cluster
        .put(i, bucket, key.as_bytes(), key.as_bytes(), query, None)
        .status()
        == StatusCode::NO_CONTENT
}

/// Waits until node `i` sees each node of `others` as `status`; returns how long it took.
fn wait_seen(cluster: &Cluster, i: usize, others: &[usize], status: &str) -> Duration {
    let started = Instant::now();
    for &other in others {
        cluster.wait_member_status(i, other, status).unwrap();
    }
    started.elapsed()
}

/// The status node `i` gives node `other` in its cluster view.
fn status_seen(cluster: &Cluster, i: usize, other: usize) -> String {
    let view = cluster.cluster_view(i).unwrap();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == cluster.nodes[other].id.as_str())
        .map(|m| m["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Waits until every replica's own copy of every key in `keys` holds the key as its only
/// value (what [`write`] wrote); returns how long it took.
fn wait_everywhere(cluster: &Cluster, bucket: &str, keys: &[String]) -> Duration {
    let started = Instant::now();
    let mut missing: Vec<(usize, &String)> = (0..cluster.nodes.len())
        .flat_map(|i| keys.iter().map(move |k| (i, k)))
        .collect();
    while !missing.is_empty() {
        missing.retain(|(i, k)| {
            cluster.local_values(*i, bucket, k.as_bytes()) != Some(vec![k.as_bytes().to_vec()])
        });
        assert!(
            started.elapsed() < CONVERGE,
            "{} copies still missing after {CONVERGE:?}, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        if !missing.is_empty() {
            sleep(Duration::from_millis(100));
        }
    }
    started.elapsed()
}

#[test]
fn nodes_on_hosts_of_their_own_form_one_ring_and_obey_every_harness_fault() {
    let mut cluster = Cluster::start_hosts(3, &[]);
    let ips: BTreeSet<&str> = cluster
        .nodes
        .iter()
        .map(|n| n.addr.rsplit_once(':').unwrap().0)
        .collect();
    assert_eq!(ips.len(), 3, "one address per node: {ips:?}");
    for i in 0..3 {
        let view = cluster.cluster_view(i).unwrap();
        assert_eq!(view["ready"], true, "node {i}");
        let members = view["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "node {i} knows every node: {view}");
        for member in members {
            assert_eq!(member["status"], "up", "node {i}: {member}");
            let node = cluster
                .nodes
                .iter()
                .find(|n| member["id"] == n.id.as_str())
                .unwrap();
            assert_eq!(member["addr"], node.addr.as_str(), "node {i}: {member}");
        }
    }
    assert!(write(&cluster, 0, "ring", "k", STRICT_W3));
    let took = wait_everywhere(&cluster, "ring", &["k".to_string()]);

    // The process faults reach the node itself, wherever it runs: SIGKILL and a restart
    // with its data, SIGSTOP and SIGCONT, SIGTERM.
    cluster.kill(1);
    cluster.wait_member_status(0, 1, "down").unwrap();
    cluster.restart(1);
    assert_eq!(
        cluster.local_values(1, "ring", b"k"),
        Some(vec![b"k".to_vec()]),
        "node 2 kept its data across SIGKILL"
    );
    cluster.pause(2);
    cluster.wait_member_status(0, 2, "down").unwrap();
    cluster.resume(2);
    cluster.wait_member_status(0, 2, "up").unwrap();
    assert!(
        cluster.terminate(0).success(),
        "SIGTERM ends node 1 cleanly"
    );
    println!(
        "ring: {:?}, nodes at {:?}; a w=3 write on every replica {took:?} after its ack",
        cluster.network_mode(),
        cluster.nodes.iter().map(|n| &n.addr).collect::<Vec<_>>()
    );
}

#[test]
fn a_minority_cannot_reach_a_strict_quorum_and_after_heal_every_acknowledged_write_is_everywhere() {
    let cluster = Cluster::start_hosts(3, &[]);
    let cut_at = Instant::now();
    cluster.isolate(2);
    wait_seen(&cluster, 2, &[0, 1], "down");
    wait_seen(&cluster, 0, &[2], "down");
    let detected = cut_at.elapsed();
    println!(
        "majority/minority ({:?}): the two sides saw each other down {detected:?} after the cut",
        cluster.network_mode()
    );
    assert_eq!(
        status_seen(&cluster, 0, 1),
        "up",
        "the majority still sees itself"
    );

    let keys: Vec<String> = (0..100).map(|i| format!("majority{i}")).collect();
    for (n, key) in keys.iter().enumerate() {
        assert!(
            write(&cluster, n % 2, "split", key, STRICT_W2),
            "the majority acknowledges {key} at w=2"
        );
    }
    for n in 0..10 {
        let refused = cluster.put(
            2,
            "split",
            format!("minority{n}").as_bytes(),
            b"never acknowledged",
            STRICT_W2,
            None,
        );
        let (status, code) = error_of(refused);
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable"),
            "the isolated node cannot reach w=2 among owners"
        );
    }
    let partitioned_for = cut_at.elapsed();

    cluster.heal();
    let healed_at = Instant::now();
    wait_seen(&cluster, 0, &[2], "up");
    wait_seen(&cluster, 2, &[0, 1], "up");
    let rejoined = healed_at.elapsed();
    wait_everywhere(&cluster, "split", &keys);
    println!(
        "majority/minority: partitioned for {partitioned_for:?}; after heal, seen up again in \
         {rejoined:?}, {} acknowledged writes on all 3 replicas {:?} after heal",
        keys.len(),
        healed_at.elapsed()
    );
}

#[test]
fn across_a_bridge_each_side_reaches_the_middle_and_everything_converges_after_heal() {
    let cluster = Cluster::start_hosts(3, &[]);
    // Node 1 sees nodes 0 and 2; they do not see each other.
    let cut_at = Instant::now();
    cluster.partition(&[&[0, 1], &[1, 2]]);
    wait_seen(&cluster, 0, &[2], "down");
    wait_seen(&cluster, 2, &[0], "down");
    let detected = cut_at.elapsed();
    for (i, other) in [(0, 1), (2, 1), (1, 0), (1, 2)] {
        assert_eq!(
            status_seen(&cluster, i, other),
            "up",
            "node {i} still reaches node {other} across the bridge"
        );
    }

    let mut acknowledged = Vec::new();
    for n in 0..30 {
        for (i, query) in [(0, STRICT_W2), (2, STRICT_W2), (1, STRICT_W3)] {
            let key = format!("via{i}-{n}");
            assert!(
                write(&cluster, i, "bridge", &key, query),
                "{key}: node {i} reaches enough owners ({query})"
            );
            acknowledged.push(key);
        }
    }
    let (status, code) = error_of(cluster.put(0, "bridge", b"far", b"x", STRICT_W3, None));
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable"),
        "node 0 cannot reach node 2, so not all three owners"
    );

    cluster.heal();
    wait_seen(&cluster, 0, &[2], "up");
    let converged = wait_everywhere(&cluster, "bridge", &acknowledged);
    println!(
        "bridge ({:?}): ends saw each other down {detected:?} after the cut; {} acknowledged \
         writes on all 3 replicas {converged:?} after heal",
        cluster.network_mode(),
        acknowledged.len()
    );
}

#[test]
fn after_a_one_way_cut_the_cut_off_sender_sees_its_peer_down_and_the_peer_sees_it_up() {
    let cluster = Cluster::start_hosts(3, &[]);
    // Node 0 can no longer call node 2; node 2 still calls node 0.
    cluster.cut_one_way(0, 2);
    let detected = wait_seen(&cluster, 0, &[2], "down");
    // Node 2's probes of node 0 keep succeeding meanwhile.
    assert_eq!(
        status_seen(&cluster, 2, 0),
        "up",
        "node 2 still reaches node 0"
    );

    let mut acknowledged = Vec::new();
    for n in 0..30 {
        let key = format!("from2-{n}");
        assert!(
            write(&cluster, 2, "oneway", &key, STRICT_W3),
            "{key}: node 2 reaches every owner"
        );
        acknowledged.push(key);
    }
    let (status, code) = error_of(cluster.put(0, "oneway", b"from0", b"x", STRICT_W3, None));
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable"),
        "node 0 cannot reach node 2"
    );
    assert!(
        write(&cluster, 0, "oneway", "from0-w2", STRICT_W2),
        "node 0 still reaches a majority of owners"
    );
    acknowledged.push("from0-w2".to_string());

    cluster.heal();
    wait_seen(&cluster, 0, &[2], "up");
    let converged = wait_everywhere(&cluster, "oneway", &acknowledged);
    println!(
        "one-way cut ({:?}): the sender saw its peer down {detected:?} after the cut while the \
         peer saw it up; {} acknowledged writes on all 3 replicas {converged:?} after heal",
        cluster.network_mode(),
        acknowledged.len()
    );
}

#[test]
fn with_delay_and_loss_on_one_node_every_request_still_answers_correctly() {
    let cluster = Cluster::start_hosts(3, &[]);
    match cluster.netem(2, "delay 30ms 10ms loss 2%") {
        Ok(()) => {}
        Err(error) if error.is::<Unsupported>() => {
            // On loopback there is no link to shape; in a namespace the kernel may lack
            // sch_netem. Either way the harness must say so, not pretend.
            if cluster.network_mode() == NetworkMode::Loopback {
                assert!(format!("{error}").contains("namespaces"), "{error}");
            }
            println!("netem: SKIPPED ({:?}): {error}", cluster.network_mode());
            return;
        }
        Err(error) => panic!("netem: {error:#}"),
    }
    let mut latencies = Vec::new();
    for n in 0..60 {
        let key = format!("slow{n}");
        let started = Instant::now();
        let put = cluster.put(
            n % 3,
            "netem",
            key.as_bytes(),
            key.as_bytes(),
            "w=3&timeout_ms=10000",
            None,
        );
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
        let read = cluster.get((n + 1) % 3, "netem", key.as_bytes(), "r=3&timeout_ms=10000");
        assert_eq!(read.status(), StatusCode::OK, "{key}");
        assert_eq!(read.bytes().unwrap(), key.as_bytes(), "{key}");
        latencies.push(started.elapsed());
    }
    cluster.clear_netem(2).unwrap();
    latencies.sort();
    println!(
        "netem (delay 30ms 10ms loss 2% on node 3's link): {} w=3 writes and r=3 reads all \
         correct; write+read took min {:?}, median {:?}, max {:?}",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}
