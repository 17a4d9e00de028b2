//! Membership changes against real processes: gossip of the member table, joins.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::thread::sleep;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use quorumkv_tests::history::{check, Event, Promises, Recorder, Verdict};
use quorumkv_tests::workload::{final_state, Workload};
use quorumkv_tests::Cluster;
use reqwest::StatusCode;
use serde_json::Value;

/// How long gossip may take to spread a change to every node (a round every 500 ms).
const CONVERGENCE: Duration = Duration::from_secs(15);

/// Each running node's `ring_version` and member states, once every one of `nodes` reports
/// the same ones (with `members` members); panics after [`CONVERGENCE`].
fn wait_converged(cluster: &Cluster, nodes: &[usize], members: usize) -> (u64, Vec<Value>) {
    let started = Instant::now();
    loop {
        let views: Vec<Option<Value>> = nodes
            .iter()
            .map(|&i| cluster.cluster_view(i).ok())
            .collect();
        let versions: Vec<Option<u64>> = views
            .iter()
            .map(|v| v.as_ref().and_then(|v| v["ring_version"].as_u64()))
            .collect();
        let sizes: Vec<usize> = views
            .iter()
            .map(|v| {
                v.as_ref()
                    .and_then(|v| v["members"].as_array().map(Vec::len))
                    .unwrap_or(0)
            })
            .collect();
        if versions.iter().all(|v| v.is_some() && *v == versions[0])
            && sizes.iter().all(|&s| s == members)
        {
            let elapsed = started.elapsed();
            println!("ring version converged on {nodes:?} in {elapsed:?}");
            let members = views[0].as_ref().unwrap()["members"]
                .as_array()
                .unwrap()
                .clone();
            return (versions[0].unwrap(), members);
        }
        assert!(
            started.elapsed() < CONVERGENCE,
            "no agreement within {CONVERGENCE:?}: versions {versions:?}, members {sizes:?}"
        );
        sleep(Duration::from_millis(100));
    }
}

fn state_of(members: &[Value], id: &str) -> String {
    members
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "absent".to_string())
}

#[test]
fn a_node_with_seeds_of_a_running_cluster_joins_and_every_node_agrees_on_the_ring_version() {
    let mut cluster = Cluster::start(3);
    let (founded, members) = wait_converged(&cluster, &[0, 1, 2], 3);
    assert!(
        members.iter().all(|m| m["state"] == "active"),
        "{members:?}"
    );

    let joiner = cluster.join(&[0, 1, 2], &[]);
    let (joined, members) = wait_converged(&cluster, &[0, 1, 2, joiner], 4);
    assert_ne!(joined, founded, "a join changes the ring version");
    assert_eq!(state_of(&members, "node4"), "joining");
    for id in ["node1", "node2", "node3"] {
        assert_eq!(state_of(&members, id), "active");
    }
    // Not ready while joining: transfers start only after a settling delay (5 s from
    // when the joiner saw the change, longer than convergence took here), so it has not
    // received its partitions yet and says so.
    let probe = cluster
        .http()
        .get(format!("{}/v1/ready", cluster.url(joiner)))
        .send()
        .unwrap();
    assert_eq!(probe.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason: Value = probe.json().unwrap();
    assert_eq!(reason["error"], "not_ready");
    assert!(
        reason["message"].as_str().unwrap().starts_with("joining"),
        "{reason}"
    );
    // Ready once its partitions are in, still before the commit makes it active.
    cluster.wait_ready(joiner).unwrap();
    assert_eq!(
        cluster.put(joiner, "b", b"k", b"v", "w=3", None).status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(cluster.get(0, "b", b"k", "r=3").status(), StatusCode::OK);

    // Every node having its partitions, the change commits: a new ring version, with
    // the joiner active.
    wait_balanced(&cluster, &[0, 1, 2, joiner], 4, Duration::from_secs(60));
    let (committed, members) = wait_converged(&cluster, &[0, 1, 2, joiner], 4);
    assert_ne!(committed, joined);
    assert_eq!(state_of(&members, "node4"), "active");

    // The table is kept: a restarted node is ready at once with the same view.
    assert!(cluster.terminate(joiner).success());
    cluster.restart(joiner);
    let (again, _) = wait_converged(&cluster, &[0, 1, 2, joiner], 4);
    assert_eq!(again, committed);
}

/// Partitions of the ring (the server's default).
const PARTITIONS: u32 = quorumkv_ring::DEFAULT_PARTITIONS;

/// The fraction of (partition, replica) slots whose owner changes from a ring of
/// `before` nodes to one of `after`, for `n` replicas (n = 1: primary owners only).
fn slots_moved(before: usize, after: usize, n: usize) -> f64 {
    let ring = |size: usize| {
        quorumkv_ring::Ring::new(
            (1..=size).map(|i| quorumkv_ring::NodeId::new(format!("node{i}"))),
            PARTITIONS,
        )
        .unwrap()
    };
    let (old, new) = (ring(before), ring(after));
    let moved: usize = old
        .partitions()
        .map(|p| {
            let was = old.preference_list_for(p, n);
            new.preference_list_for(p, n)
                .iter()
                .filter(|o| !was.contains(o))
                .count()
        })
        .sum();
    moved as f64 / (f64::from(PARTITIONS) * n as f64)
}

/// The longest time during which requests failed and none succeeded, from a history.
fn longest_failure_window(events: &[Event]) -> Duration {
    use quorumkv_tests::history::EventType;
    let mut completions: Vec<(u64, bool)> = events
        .iter()
        .filter(|e| e.kind != EventType::Invoke)
        .map(|e| (e.time_ns, e.kind == EventType::Ok))
        .collect();
    completions.sort_unstable();
    let mut longest = 0;
    let mut last_ok = completions.first().map_or(0, |c| c.0);
    let mut failed_since = false;
    for (time, ok) in completions {
        if ok {
            if failed_since {
                longest = longest.max(time - last_ok);
            }
            last_ok = time;
            failed_since = false;
        } else {
            failed_since = true;
        }
    }
    Duration::from_nanos(longest)
}

/// Waits until every node in `nodes` reports the same ring version, every member
/// active and nothing pending; returns how long that took and the most pending
/// transfers seen.
fn wait_balanced(
    cluster: &Cluster,
    nodes: &[usize],
    members: usize,
    bound: Duration,
) -> (Duration, u64) {
    let started = Instant::now();
    let mut most_pending = 0;
    loop {
        let views: Vec<Option<Value>> = nodes
            .iter()
            .map(|&i| cluster.cluster_view(i).ok())
            .collect();
        let pending: Vec<Option<u64>> = views
            .iter()
            .map(|v| v.as_ref().and_then(|v| v["pending_transfers"].as_u64()))
            .collect();
        most_pending = most_pending.max(pending.iter().flatten().copied().max().unwrap_or(0));
        let versions: Vec<Option<u64>> = views
            .iter()
            .map(|v| v.as_ref().and_then(|v| v["ring_version"].as_u64()))
            .collect();
        let all_active = views.iter().all(|v| {
            v.as_ref()
                .and_then(|v| v["members"].as_array())
                .is_some_and(|m| m.len() == members && m.iter().all(|m| m["state"] == "active"))
        });
        if all_active
            && pending.iter().all(|p| *p == Some(0))
            && versions.iter().all(|v| v.is_some() && *v == versions[0])
        {
            return (started.elapsed(), most_pending);
        }
        assert!(
            started.elapsed() < bound,
            "not balanced within {bound:?}: pending {pending:?}, versions {versions:?}, views {views:?}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// A strict-quorum workload running against nodes of a cluster while its membership
/// changes, recorded as a history.
struct Load {
    workload: Workload,
    recorder: Recorder,
    clients: Vec<std::thread::JoinHandle<usize>>,
}

impl Load {
    /// Starts `workload`'s clients against `nodes`; they stop by themselves after its
    /// duration.
    fn start(cluster: &Cluster, nodes: &[usize], workload: Workload) -> Self {
        let recorder = Recorder::new();
        let urls: Vec<String> = nodes.iter().map(|&i| cluster.url(i)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = workload.start(cluster.http(), &urls, &recorder, &stop);
        Self {
            workload,
            recorder,
            clients,
        }
    }

    /// Waits for the clients, reads the final state through node `reader` and checks the
    /// history (n = 3, no read-your-writes assumed across the change): the operations, the
    /// events and the verdict.
    fn finish(self, cluster: &Cluster, reader: usize) -> (usize, Vec<Event>, Verdict) {
        let operations = self.clients.into_iter().map(|c| c.join().unwrap()).sum();
        let (registers, sets) = final_state(
            cluster,
            reader,
            &self.workload.register_key_names(),
            &self.workload.set_key_names(),
            Duration::from_secs(30),
        );
        let events = self.recorder.events();
        let verdict = check(
            &events,
            &registers,
            &sets,
            Promises {
                n: 3,
                assume_ryw: false,
            },
        );
        (operations, events, verdict)
    }
}

/// Runs `quorumkv cluster status --watch` against node `i` once it reports transfers,
/// in a thread that returns the CLI's output when it exits (it does once the cluster is
/// balanced, or after its 120 s timeout).
fn follow_with_cli(cluster: &Cluster, i: usize) -> std::thread::JoinHandle<std::process::Output> {
    let started = Instant::now();
    while cluster
        .cluster_view(i)
        .ok()
        .and_then(|v| v["transfers_total"].as_u64())
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < CONVERGENCE,
            "node {i} never saw the change"
        );
        sleep(Duration::from_millis(50));
    }
    let url = cluster.url(i);
    std::thread::spawn(move || {
        std::process::Command::new(quorumkv_tests::binary())
            .args([
                "cluster",
                "status",
                "--watch",
                "--timeout",
                "120",
                "--endpoint",
            ])
            .arg(url)
            .output()
            .unwrap()
    })
}

/// Writes keys `pre0`.. `pre{count-1}` (value = key) at w=3 through every node in turn;
/// returns `count`.
fn preload(cluster: &Cluster, count: usize) -> usize {
    for k in 0..count {
        let key = format!("pre{k}");
        let node = k % cluster.nodes.len();
        let put = cluster.put(node, "pre", key.as_bytes(), key.as_bytes(), "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    count
}

#[test]
fn growing_from_three_to_five_nodes_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    // Data that is there before the change, in every partition: it must all move.
    let preloaded = preload(&cluster, 600);
    let load = Load::start(
        &cluster,
        &[0, 1, 2],
        Workload::strict(4, Duration::from_secs(30), 41),
    );

    sleep(Duration::from_secs(3));
    let fourth = cluster.join(&[0, 1, 2], &[]);
    let fifth = cluster.join(&[0, 1, 2], &[]);
    // The CLI follows the transfers from the moment node1 knows of them (they wait 5 s
    // to settle first, so it sees them from the start) until the cluster is balanced.
    let follower = follow_with_cli(&cluster, 0);
    let bound = Duration::from_secs(90);
    let (took, most_pending) = wait_balanced(&cluster, &[0, 1, 2, fourth, fifth], 5, bound);
    let followed = follower.join().unwrap();
    assert!(followed.status.success(), "{followed:?}");
    let lines = String::from_utf8(followed.stdout).unwrap();
    let progress: Vec<(u64, u64)> = lines
        .lines()
        .filter_map(|l| l.strip_prefix("transfers: "))
        .filter_map(|l| {
            let (done, rest) = l.split_once('/')?;
            let (total, _) = rest.split_once(' ')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect();
    assert!(
        progress.first().is_some_and(|&(done, total)| done < total),
        "the CLI saw transfers to do: {lines}"
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].1 != w[1].1 || w[0].0 <= w[1].0),
        "progress never goes back within one change: {lines}"
    );
    assert!(lines.contains("balanced: no transfers pending"), "{lines}");
    let (operations, events, verdict) = load.finish(&cluster, fourth);
    let theoretical = 2.0 / 5.0;
    let moved = slots_moved(3, 5, 3);
    let primaries_moved = slots_moved(3, 5, 1);
    let expected_pairs = (moved * f64::from(PARTITIONS) * 3.0).round() as u64;
    println!(
        "grow 3 -> 5: balanced in {took:.1?} (bound {bound:?}); most pending transfers seen {most_pending} \
         (pairs to move {expected_pairs}); slots moved {:.1}% vs theoretical minimum {:.1}% \
         (ratio {:.3}; primary owners alone {:.1}%, ratio {:.3}); {operations} operations, \
         longest window of failed requests {:?}; {}",
        100.0 * moved,
        100.0 * theoretical,
        moved / theoretical,
        100.0 * primaries_moved,
        primaries_moved / theoretical,
        longest_failure_window(&events),
        verdict.summary()
    );
    assert!(verdict.valid(), "{verdict:?}");
    assert_eq!(verdict.lost_count(), 0);
    assert!(verdict.acknowledged_writes >= 50, "{}", verdict.summary());
    // Within 10% of the minimum, as promised for this change (41.9% of the slots
    // against 40% with these node ids): a property of `quorumkv-ring`, pinned here so
    // that a change of placement shows.
    assert!(
        moved / theoretical <= 1.10,
        "moved {moved}, minimum {theoretical}"
    );
    // Every key written before the change is on its new owners: a strict read through
    // a new node finds it.
    for k in 0..preloaded {
        let key = format!("pre{k}");
        let read = cluster.get(
            fifth,
            "pre",
            key.as_bytes(),
            "r=3&sloppy=false&read_repair=false",
        );
        assert_eq!(read.status(), StatusCode::OK, "{key}");
    }
}

fn post(cluster: &Cluster, i: usize, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = cluster.http().post(format!("{}{path}", cluster.url(i)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status();
    (status, response.json().unwrap_or_default())
}

#[test]
fn shrinking_with_leave_and_remove_under_load_loses_nothing_and_a_fresh_node_joins() {
    let mut cluster = Cluster::start(5);
    let preloaded = preload(&cluster, 300);
    // The clients talk to the nodes that stay.
    let load = Load::start(
        &cluster,
        &[0, 1, 2],
        Workload::strict(4, Duration::from_secs(40), 43),
    );
    sleep(Duration::from_secs(2));

    // 5 -> 4: node5 leaves, hands its partitions over, and exits 0.
    let (status, answer) = post(&cluster, 4, "/v1/cluster/leave", None);
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["state"], "leaving");
    let started = Instant::now();
    let exit = cluster.wait_exit(4, Duration::from_secs(90));
    assert!(exit.success(), "the leaving node exits 0: {exit:?}");
    let bound = Duration::from_secs(60);
    let (took, _) = wait_balanced(&cluster, &[0, 1, 2, 3], 4, bound);
    // A leave's minimum is what the leaving node held; the ring moves nothing else.
    let moved = slots_moved(5, 4, 3);
    println!(
        "shrink 5 -> 4: node5 exited after {:.1?}, balanced {took:.1?} later; slots moved \
         {:.1}% (node5's share; fair share 20%)",
        started.elapsed() - took,
        100.0 * moved
    );

    // 4 -> 3: node4 dies for good and is removed; its partitions come from the survivors.
    // A member still seen up is not removed without force: wait until node1 sees it down.
    cluster.kill(3);
    cluster
        .wait_member_status(0, 3, "down")
        .expect("node1 sees the killed node4 down");
    let (status, answer) = post(
        &cluster,
        0,
        "/v1/cluster/remove",
        Some(serde_json::json!({"node": "nobody"})),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("node_not_found"))
    );
    let (status, answer) = post(
        &cluster,
        0,
        "/v1/cluster/remove",
        Some(serde_json::json!({"node": "node1"})),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_change"))
    );
    let (status, answer) = post(
        &cluster,
        0,
        "/v1/cluster/remove",
        Some(serde_json::json!({"node": "node4"})),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (took, _) = wait_balanced(&cluster, &[0, 1, 2], 3, bound);
    println!("remove node4: balanced in {took:.1?}");

    let (operations, events, verdict) = load.finish(&cluster, 0);
    println!(
        "shrink: {operations} operations, longest window of failed requests {:?}; {}",
        longest_failure_window(&events),
        verdict.summary()
    );
    assert!(verdict.valid(), "{verdict:?}");
    assert_eq!(verdict.lost_count(), 0);
    // Every key is back to n = 3 replicas: with three nodes left, on each of them.
    for k in 0..preloaded {
        let key = format!("pre{k}");
        for node in 0..3 {
            assert_eq!(
                cluster.local_values(node, "pre", key.as_bytes()),
                Some(vec![key.as_bytes().to_vec()]),
                "{key} on node{}",
                node + 1
            );
        }
    }
    // A removed id stays removed; a fresh node (a new id) takes the place.
    let fresh = cluster.join(&[0, 1, 2], &[]);
    let (took, _) = wait_balanced(&cluster, &[0, 1, 2, fresh], 4, bound);
    println!("fresh node6 joined and balanced in {took:.1?}");
    let (_, members) = wait_converged(&cluster, &[0, 1, 2, fresh], 4);
    assert_eq!(state_of(&members, "node4"), "absent");
    assert_eq!(state_of(&members, "node6"), "active");
}

/// A member removed while it is still joining goes straight out, never to `leaving`:
/// leaving members count in the current ring, and this one holds none of the data, so
/// reads at r=1 through it would miss acknowledged writes. Reads through it until it exits
/// must find every key.
#[test]
fn removing_a_member_that_is_still_joining_never_serves_reads_from_an_empty_replica() {
    let mut cluster = Cluster::start(3);
    let keys: Vec<String> = (0..200).map(|k| format!("k{k}")).collect();
    for key in &keys {
        let put = cluster.put(0, "joinrm", key.as_bytes(), key.as_bytes(), "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
    }
    let joiner = cluster.join(&[0, 1, 2], &[]);
    let started = Instant::now();
    loop {
        let listed = cluster.cluster_view(0).ok().is_some_and(|view| {
            view["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == "node4"))
        });
        if listed {
            break;
        }
        assert!(started.elapsed() < CONVERGENCE, "node1 never listed node4");
        sleep(Duration::from_millis(20));
    }
    // node4 runs (the failure detector may already see it up): the removal is forced.
    let (status, answer) = post(
        &cluster,
        0,
        "/v1/cluster/remove",
        Some(serde_json::json!({"node": "node4", "force": true})),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["state"], "removed", "{answer}");

    // Read through node4 until it stops answering (it exits once it learns it is out).
    let (mut reads, mut misses) = (0, 0);
    let reading = Instant::now();
    'reading: while reading.elapsed() < Duration::from_secs(30) {
        for key in &keys {
            let url = format!(
                "{}?r=1&read_repair=false",
                cluster.key_url(joiner, "joinrm", key.as_bytes())
            );
            let Ok(response) = cluster.http().get(url).send() else {
                break 'reading;
            };
            reads += 1;
            if response.status() == StatusCode::NOT_FOUND {
                misses += 1;
            }
        }
    }
    println!("{reads} reads through the removed joiner, {misses} answered 404");
    assert!(reads > 0);
    assert_eq!(misses, 0, "reads missed acknowledged writes");
    let exit = cluster.wait_exit(joiner, Duration::from_secs(30));
    assert!(exit.success(), "the removed joiner exits 0: {exit:?}");
    let (_, members) = wait_converged(&cluster, &[0, 1, 2], 3);
    assert_eq!(state_of(&members, "node4"), "absent");
}

/// Issue 2's contract: nodes started together, each with only the *other* nodes as seeds,
/// found one cluster (here with both shapes side by side: two name only the others, one
/// names itself too), and a node started later with seeds of that cluster joins it.
#[test]
fn nodes_started_with_each_other_as_seeds_found_one_cluster_and_a_later_node_joins_it() {
    let mut cluster = Cluster::start_seeded(3, |i| match i {
        0 => vec![1, 2],
        1 => vec![0, 2],
        _ => vec![0, 1, 2],
    });
    // The founder (node 3) may learn of the others as joining before it learns their ids:
    // then they join its cluster, with nothing to move, and the commit makes them active.
    let started = Instant::now();
    loop {
        let (_, members) = wait_converged(&cluster, &[0, 1, 2], 3);
        if members.iter().all(|m| m["state"] == "active") {
            break;
        }
        assert!(started.elapsed() < CONVERGENCE, "{members:?}");
        sleep(Duration::from_millis(200));
    }
    let put = cluster.put(0, "founded", b"k", b"v", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(2, "founded", b"k", "r=3");
    assert_eq!(read.status(), StatusCode::OK);

    let joiner = cluster.join(&[0, 1], &[]);
    let (_, members) = wait_converged(&cluster, &[0, 1, 2, joiner], 4);
    assert_eq!(state_of(&members, "node4"), "joining");
}

/// Three nodes that each name only the other two, all at once: they found one cluster.
#[test]
fn three_nodes_naming_only_each_other_found_one_cluster() {
    let cluster = Cluster::start_seeded(3, |i| (0..3).filter(|&j| j != i).collect());
    let (_, members) = wait_converged(&cluster, &[0, 1, 2], 3);
    assert!(
        members.iter().all(|m| m["state"] == "active"),
        "{members:?}"
    );
    for node in 0..3 {
        let put = cluster.put(node, "founded", b"k", b"v", "w=3", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "through node {node}");
    }
}
