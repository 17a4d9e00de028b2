//! The fault suite: clients record histories while a nemesis partitions, kills, pauses
//! and restarts nodes; at the end the faults heal, the replicas converge, and the history
//! checkers judge what the clients saw (see `quorumkv_tests::history` for what each
//! checker asserts and `docs/consistency.md` for which settings promise what).
//!
//! `make test` runs it briefly; `make soak` sets `QUORUMKV_SOAK_SECONDS` for a long run.
//! Each test prints its figures and keeps its history as JSON lines under the test
//! artifacts directory.
//!
//! The negative controls plant the anomalies the checkers exist for, and assert that
//! the checkers report them: a checker that cannot fail proves nothing.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumkv_tests::history::{check, Promises, Quorum, Recorder, Verdict};
use quorumkv_tests::workload::{
    final_state, wait_converged, Fault, Mix, Nemesis, Workload, BUCKET,
};
use quorumkv_tests::Cluster;

/// Flags of every node of the suite: fault injection for partitions and planted bugs,
/// and brisk anti-entropy so that convergence after the heal is quick.
const NODE_ARGS: &[&str] = &["--fault-injection", "--anti-entropy-interval-ms", "500"];

/// How long the main run lasts: short in `make test`, long under `make soak`.
fn run_length() -> Duration {
    let seconds = std::env::var("QUORUMKV_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    Duration::from_secs(seconds)
}

/// Where histories are kept after the test.
fn history_path(name: &str) -> PathBuf {
    std::env::var_os("QUORUMKV_TEST_ARTIFACTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from)
        .join("histories")
        .join(format!("{name}.jsonl"))
}

/// Runs `workload` against every node while `nemesis` injects faults, then heals,
/// converges, reads the final state and checks the history.
fn run(
    name: &str,
    cluster: &mut Cluster,
    workload: &Workload,
    nemesis: &Nemesis,
    promises: Promises,
) -> Verdict {
    let recorder = Recorder::new();
    let urls: Vec<String> = (0..cluster.nodes.len()).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = workload.start(cluster.http(), &urls, &recorder, &stop);
    let faults = nemesis.run(cluster, started + workload.duration);
    let operations: usize = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .sum();
    let verdict = judge(name, cluster, workload, &recorder, promises);
    println!(
        "{name}: {operations} operations in {:.1} s; faults injected: {faults:?}",
        started.elapsed().as_secs_f64()
    );
    verdict
}

/// Waits for convergence, reads the final state, saves and checks the history.
fn judge(
    name: &str,
    cluster: &Cluster,
    workload: &Workload,
    recorder: &Recorder,
    promises: Promises,
) -> Verdict {
    let registers = workload.register_key_names();
    let sets = workload.set_key_names();
    let all_keys: Vec<String> = registers.iter().chain(&sets).cloned().collect();
    let converged = wait_converged(cluster, &all_keys, Duration::from_secs(60));
    let (final_registers, final_sets) =
        final_state(cluster, 0, &registers, &sets, Duration::from_secs(30));
    let path = history_path(name);
    recorder.save(&path).expect("save the history");
    let verdict = check(&recorder.events(), &final_registers, &final_sets, promises);
    println!(
        "{name}: replicas converged after the heal in {}; history in {}",
        converged.map_or_else(|| "NEVER (60 s)".to_string(), |d| format!("{d:.2?}")),
        path.display()
    );
    println!("{name}: {}", verdict.summary());
    for line in verdict
        .stale_reads
        .iter()
        .chain(&verdict.false_siblings)
        .take(5)
    {
        println!("{name}:   {line}");
    }
    for (key, values) in verdict.lost.iter().chain(&verdict.lost_adds) {
        let shown: Vec<&String> = values.iter().take(8).collect();
        println!(
            "{name}:   lost on {key}: {} values, e.g. {shown:?}",
            values.len()
        );
    }
    verdict
}

#[test]
fn no_acknowledged_write_is_lost_under_partitions_kills_and_pauses() {
    // Each node a host of its own: partitions are cut in the network, not in the nodes.
    let mut cluster = Cluster::start_hosts(3, NODE_ARGS);
    let workload = Workload::strict(6, run_length(), 7);
    let nemesis = Nemesis {
        faults: vec![
            Fault::Partition,
            Fault::Isolate,
            Fault::Bridge,
            Fault::Kill,
            Fault::Pause,
            Fault::Netem,
        ],
        hold: (Duration::from_millis(1_000), Duration::from_millis(4_000)),
        calm: (Duration::from_millis(500), Duration::from_millis(2_000)),
        seed: 11,
    };
    let verdict = run(
        "fault-suite",
        &mut cluster,
        &workload,
        &nemesis,
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(verdict.valid(), "the checkers found anomalies: {verdict:?}");
    assert_eq!(verdict.lost_count(), 0);
    // A run in which nothing was acknowledged or read would prove nothing.
    assert!(
        verdict.acknowledged_writes >= 100,
        "too few acknowledged writes to judge: {}",
        verdict.acknowledged_writes
    );
    assert!(
        verdict.ryw_checked_reads >= 50,
        "too few reads checked: {}",
        verdict.ryw_checked_reads
    );
}

#[test]
fn the_checker_catches_last_write_wins() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    for node in 0..3 {
        cluster.plant_fault(node, "last-write-wins");
    }
    let workload = Workload::strict(6, Duration::from_secs(10), 23);
    let nemesis = Nemesis {
        faults: vec![Fault::Isolate],
        hold: (Duration::from_millis(1_000), Duration::from_millis(2_000)),
        calm: (Duration::from_millis(500), Duration::from_millis(1_000)),
        seed: 29,
    };
    let verdict = run(
        "last-write-wins",
        &mut cluster,
        &workload,
        &nemesis,
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(
        verdict.lost_count() > 0,
        "last-write-wins discards concurrent acknowledged writes, and the checker must say so: {}",
        verdict.summary()
    );
}

#[test]
fn the_checker_catches_stale_reads_at_w1_r1() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    let one = Quorum {
        size: 1,
        sloppy: false,
    };
    let workload = Workload {
        read: one,
        write: one,
        ..Workload::strict(6, Duration::from_secs(10), 31)
    };
    let nemesis = Nemesis {
        faults: vec![Fault::Isolate],
        hold: (Duration::from_millis(2_000), Duration::from_millis(3_000)),
        calm: (Duration::from_millis(300), Duration::from_millis(600)),
        seed: 37,
    };
    let promised = Promises {
        n: 3,
        assume_ryw: false,
    };
    let verdict = run("w1-r1", &mut cluster, &workload, &nemesis, promised);
    // r = w = 1 promises no read-your-writes, and the checker claims none...
    assert_eq!(verdict.ryw_checked_reads, 0);
    assert!(verdict.valid(), "{}", verdict.summary());
    // ...but held to it, the same history breaks it.
    let recorder_path = history_path("w1-r1");
    let events: Vec<_> = std::fs::read_to_string(&recorder_path)
        .expect("history")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let (registers, sets) = final_state(
        &cluster,
        0,
        &workload.register_key_names(),
        &workload.set_key_names(),
        Duration::from_secs(30),
    );
    let held = check(
        &events,
        &registers,
        &sets,
        Promises {
            n: 3,
            assume_ryw: true,
        },
    );
    println!("w1-r1 held to read-your-writes: {}", held.summary());
    assert!(
        !held.stale_reads.is_empty(),
        "r = w = 1 under an isolated node must show stale reads"
    );
}

#[test]
fn the_checker_catches_acknowledged_writes_that_were_not_stored() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    // Nodes 2 and 3 acknowledge what node 1 sends them and keep none of it: every write
    // through node 1 is acknowledged at w=2 with one real copy.
    cluster.plant_fault(1, "ack-without-storing");
    cluster.plant_fault(2, "ack-without-storing");
    let recorder = Recorder::new();
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Workload {
        targets: vec![0],
        ..Workload::strict(4, Duration::from_secs(4), 41)
    };
    for client in writes.start(cluster.http(), &urls, &recorder, &stop) {
        client.join().expect("client");
    }
    // With node 1 paused, strict-quorum reads are answered by nodes 2 and 3 alone.
    cluster.pause(0);
    cluster
        .wait_member_status(1, 0, "down")
        .expect("node 2 sees node 1 down");
    let reads = Workload {
        targets: vec![1, 2],
        mix: Mix::READS,
        ..Workload::strict(4, Duration::from_secs(2), 43)
    };
    for client in reads.start(cluster.http(), &urls, &recorder, &stop) {
        client.join().expect("client");
    }
    cluster.resume(0);
    cluster.wait_ready(0).expect("node 1 back");
    for node in [1, 2] {
        cluster
            .wait_member_status(node, 0, "up")
            .expect("node 1 seen up again");
    }
    // Healed, the replicas converge, and the final read finds every write on node 1:
    // the anomaly is the stale reads, not a loss.
    cluster.plant_fault(1, "none");
    cluster.plant_fault(2, "none");
    let verdict = judge(
        "ack-without-storing",
        &cluster,
        &writes,
        &recorder,
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(
        !verdict.stale_reads.is_empty(),
        "reads that miss acknowledged writes must be reported: {}",
        verdict.summary()
    );
    assert_eq!(verdict.lost_count(), 0, "{}", verdict.summary());
}

/// Clients that keep writing with the context their own last write was answered with,
/// against blind writers on the same keys. Correct answers cover only what their writer
/// saw, and nothing is lost; answers that cover the minting replica's whole clock (the
/// planted bug) silently replace the blind writers' values, and the checker must say so.
#[test]
fn the_checker_catches_write_answers_that_cover_unseen_siblings() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    let workload = |seed| Workload {
        register_keys: 2,
        set_keys: 0,
        mix: Mix::REUSE,
        ..Workload::strict(6, Duration::from_secs(6), seed)
    };
    let calm = Nemesis {
        faults: Vec::new(),
        hold: (Duration::ZERO, Duration::ZERO),
        calm: (Duration::ZERO, Duration::ZERO),
        seed: 0,
    };
    let promises = Promises {
        n: 3,
        assume_ryw: false,
    };
    let exact = run(
        "reuse-answers",
        &mut cluster,
        &workload(53),
        &calm,
        promises,
    );
    assert!(exact.valid(), "{}", exact.summary());
    assert_eq!(exact.lost_count(), 0, "{}", exact.summary());
    assert!(exact.acknowledged_writes >= 100, "{}", exact.summary());

    drop(cluster);

    // A fresh cluster, so that the first run's values do not mix in.
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    for node in 0..3 {
        cluster.plant_fault(node, "whole-clock-answers");
    }
    let verdict = run(
        "whole-clock-answers",
        &mut cluster,
        &workload(59),
        &calm,
        promises,
    );
    assert!(
        verdict.lost_count() > 0,
        "answers covering unseen siblings make writes vanish, and the checker must say so: {}",
        verdict.summary()
    );
}

/// Flags of the delete workload's nodes: tombstones reaped one second after every owner
/// holds them, hints as short-lived, anti-entropy every half second, so that deletes,
/// reaps and recreations of one key all happen within the run.
const REAPING_ARGS: &[&str] = &[
    "--fault-injection",
    "--anti-entropy-interval-ms",
    "500",
    "--tombstone-grace-secs",
    "1",
    "--hint-ttl-secs",
    "1",
];

/// The delete workload: reads, deletes with the read's context, recreations (blind,
/// read-modify-write and context-reusing writes) on a few keys whose tombstones are
/// reaped as the run goes, while nodes are isolated, killed and paused.
/// Many keys at a slow pace, so that a deleted key often stays untouched for longer than
/// the grace and its tombstone is reaped before the key is written again.
fn deletes(seed: u64, duration: Duration) -> Workload {
    Workload {
        register_keys: 200,
        set_keys: 0,
        mix: Mix::DELETES,
        think: Duration::from_millis(15),
        ..Workload::strict(6, duration, seed)
    }
}

fn delete_nemesis(seed: u64) -> Nemesis {
    Nemesis {
        faults: vec![Fault::Isolate, Fault::Kill, Fault::Pause],
        hold: (Duration::from_millis(1_000), Duration::from_millis(3_000)),
        calm: (Duration::from_millis(500), Duration::from_millis(1_500)),
        seed,
    }
}

fn reaped(cluster: &Cluster) -> f64 {
    (0..cluster.nodes.len())
        .map(|node| cluster.metric(node, "quorumkv_tombstones_reaped_total", ""))
        .sum()
}

#[test]
fn deletes_and_recreations_with_reaping_lose_nothing_and_resurrect_nothing() {
    let mut cluster = Cluster::start_with(3, REAPING_ARGS);
    let verdict = run(
        "deletes",
        &mut cluster,
        &deletes(61, run_length() / 2),
        &delete_nemesis(67),
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    let reaps = reaped(&cluster);
    println!("deletes: {reaps} tombstones reaped, summed over the owners");
    assert!(verdict.valid(), "the checkers found anomalies: {verdict:?}");
    assert!(
        verdict.acknowledged_deletes >= 50,
        "too few deletes to judge: {}",
        verdict.summary()
    );
    assert!(reaps > 0.0, "no tombstone was reaped during the run");
}

/// The negative control of the delete workload: owners that reap a tombstone without
/// asking the others whether they hold it (the planted bug). An owner that missed the
/// delete while it was isolated hands the deleted value back, and the checker must report
/// it resurrected.
#[test]
fn the_checker_catches_tombstones_reaped_without_the_owners_agreeing() {
    let mut cluster = Cluster::start_with(3, REAPING_ARGS);
    for node in 0..3 {
        cluster.plant_fault(node, "reap-without-agreement");
    }
    let verdict = run(
        "reap-without-agreement",
        &mut cluster,
        &deletes(71, Duration::from_secs(15)),
        &Nemesis {
            faults: vec![Fault::Isolate],
            hold: (Duration::from_millis(2_500), Duration::from_millis(3_500)),
            calm: (Duration::from_millis(300), Duration::from_millis(600)),
            seed: 73,
        },
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(
        verdict.resurrected_count() > 0,
        "tombstones reaped while an owner still held the value bring it back, and the \
         checker must say so: {}",
        verdict.summary()
    );
}

/// The restore workload: the main mix over more keys, so that a restored node's stale
/// records meet many of the keys written since its copy.
fn restores(seed: u64, duration: Duration) -> Workload {
    Workload {
        register_keys: 40,
        ..Workload::strict(6, duration, seed)
    }
}

/// The restore nemesis: a node is copied while stopped and, after the hold, put back to
/// that copy ([`Fault::Restore`]), between kills and pauses.
fn restore_nemesis(seed: u64) -> Nemesis {
    Nemesis {
        faults: vec![Fault::Restore, Fault::Restore, Fault::Kill, Fault::Pause],
        hold: (Duration::from_millis(2_000), Duration::from_millis(4_000)),
        calm: (Duration::from_millis(300), Duration::from_millis(1_000)),
        seed,
    }
}

/// Nodes restored from copies of their data directories forget what they stored since the
/// copy, dots they minted included; the other replicas still hold those writes. The
/// restored node must never mint those dots again (a new actor at every start), or its
/// new writes would be dropped as already seen.
#[test]
fn nodes_restored_from_copies_of_their_data_lose_no_acknowledged_write() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    let verdict = run(
        "restores",
        &mut cluster,
        &restores(89, run_length() / 2),
        &restore_nemesis(97),
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(verdict.valid(), "the checkers found anomalies: {verdict:?}");
    assert!(
        verdict.acknowledged_writes >= 100,
        "too few acknowledged writes to judge: {}",
        verdict.summary()
    );
}

/// The negative control: stores that keep their actor from one start to the next (the
/// planted `reuse-actor-across-starts`), as releases that kept it across a clean close
/// did. A restored node then counts its dots again from the copy's, mints dots the other
/// replicas cover, and they drop its writes: the checker must report them lost.
#[test]
fn the_checker_catches_restored_nodes_that_mint_their_old_dots_again() {
    let mut cluster = Cluster::start_with(3, NODE_ARGS);
    for node in 0..3 {
        cluster.plant_fault(node, "reuse-actor-across-starts");
    }
    let verdict = run(
        "reuse-actor-across-starts",
        &mut cluster,
        &restores(101, Duration::from_secs(15)),
        &Nemesis {
            faults: vec![Fault::Restore],
            ..restore_nemesis(103)
        },
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    assert!(
        verdict.lost_count() > 0,
        "a restored node that mints its old dots again loses writes, and the checker must \
         say so: {}",
        verdict.summary()
    );
}

/// Membership churn for [`churn_run`]: a fresh node joins (the three first nodes lose
/// partitions to it), stays for a few seconds (deletes of keys it now owns are reaped
/// meanwhile), then leaves and exits (the partitions go back); again while at least 15 s
/// remain before `until`. The last leave may end after `until`, when the clients have
/// stopped: nothing written later then hides what it brought back. Returns how many
/// joins and leaves it completed.
fn churn(cluster: &mut Cluster, until: Instant) -> usize {
    let bound = Duration::from_secs(90);
    let mut cycles = 0;
    // A cycle takes about 20 s: two settle delays, the transfers and the stay.
    loop {
        let fresh = cluster.join(&[0, 1, 2], &[]);
        cluster.wait_balanced(&[0, 1, 2, fresh], 4, bound);
        std::thread::sleep(Duration::from_secs(8));
        let left = cluster
            .http()
            .post(format!("{}/v1/cluster/leave", cluster.url(fresh)))
            .send()
            .expect("leave");
        assert_eq!(left.status(), reqwest::StatusCode::ACCEPTED);
        assert!(cluster.wait_exit(fresh, bound).success());
        cluster.wait_balanced(&[0, 1, 2], 3, bound);
        cycles += 1;
        if Instant::now() + Duration::from_secs(15) >= until {
            return cycles;
        }
    }
}

/// The delete workload against the three first nodes while nodes join and leave
/// ([`churn`]), then the checkers.
fn churn_run(name: &str, cluster: &mut Cluster, duration: Duration, seed: u64) -> Verdict {
    let workload = deletes(seed, duration);
    let recorder = Recorder::new();
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = workload.start(cluster.http(), &urls, &recorder, &stop);
    let cycles = churn(cluster, started + duration);
    let operations: usize = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .sum();
    let verdict = judge(
        name,
        cluster,
        &workload,
        &recorder,
        Promises {
            n: 3,
            assume_ryw: false,
        },
    );
    println!(
        "{name}: {operations} operations in {:.1} s; {cycles} joins and leaves; {} \
         tombstones reaped",
        started.elapsed().as_secs_f64(),
        reaped(cluster)
    );
    verdict
}

#[test]
fn deletes_while_nodes_join_and_leave_lose_nothing_and_resurrect_nothing() {
    let mut args = REAPING_ARGS.to_vec();
    args.extend(["--cleanup-delay-secs", "5"]);
    let mut cluster = Cluster::start_with(3, &args);
    let length = run_length().max(Duration::from_secs(45));
    let verdict = churn_run("churn", &mut cluster, length, 79);
    assert!(verdict.valid(), "the checkers found anomalies: {verdict:?}");
    assert!(
        verdict.acknowledged_deletes >= 50,
        "too few deletes to judge: {}",
        verdict.summary()
    );
}

/// The negative control: the former owners keep their old copies and merge them back
/// when the partitions return (the planted `keep-old-copies` bug), and the checker must
/// report the deleted values that come back.
#[test]
fn the_checker_catches_old_copies_merged_back_after_a_leave() {
    let mut cluster = Cluster::start_with(3, REAPING_ARGS);
    for node in 0..3 {
        cluster.plant_fault(node, "keep-old-copies");
    }
    let verdict = churn_run("keep-old-copies", &mut cluster, Duration::from_secs(16), 83);
    assert!(
        verdict.resurrected_count() > 0,
        "old copies merged back bring deleted values back, and the checker must say so: {}",
        verdict.summary()
    );
}

/// Blind writes mostly, with reads and writes that reuse their own last answer's context
/// (which resolve one sibling each, their own).
const HOT_KEY_MIX: Mix = Mix {
    add: 0,
    read: 10,
    read_modify_write: 0,
    reuse_answer: 10,
    delete: 0,
};

/// Six clients writing one key through every node, blindly for the most part, with a
/// sibling limit of `max_siblings`. Returns the verdict, the siblings the key holds at
/// the end, and how many writes were refused with 409.
fn hot_key_run(name: &str, max_siblings: &str, seed: u64) -> (Verdict, usize, f64) {
    let mut args = NODE_ARGS.to_vec();
    args.extend(["--max-siblings", max_siblings]);
    let mut cluster = Cluster::start_with(3, &args);
    // Short and paced: every write of the one key is judged against every other, so the
    // checker's work grows with the square of the writes.
    let workload = Workload {
        register_keys: 1,
        set_keys: 0,
        mix: HOT_KEY_MIX,
        think: Duration::from_millis(10),
        ..Workload::strict(6, Duration::from_secs(5), seed)
    };
    let calm = Nemesis {
        faults: Vec::new(),
        hold: (Duration::ZERO, Duration::ZERO),
        calm: (Duration::ZERO, Duration::ZERO),
        seed,
    };
    let promises = Promises {
        n: 3,
        assume_ryw: false,
    };
    let verdict = run(name, &mut cluster, &workload, &calm, promises);
    let key = &workload.register_key_names()[0];
    let read = cluster.get(0, BUCKET, key.as_bytes(), "r=3");
    let siblings = match read.status() {
        reqwest::StatusCode::MULTIPLE_CHOICES => quorumkv_tests::siblings_of(read).len(),
        reqwest::StatusCode::OK => 1,
        other => panic!("the final read answered {other}"),
    };
    let refused: f64 = (0..3)
        .map(|i| cluster.metric(i, "quorumkv_http_requests_total", "status=\"409\""))
        .sum();
    println!("{name}: the key holds {siblings} siblings; {refused} writes refused with 409");
    (verdict, siblings, refused)
}

/// A key holds at most its sibling limit plus one for each other owner: owners mint
/// concurrently, each against the limit, and a state merged from another replica is
/// never refused.
fn within_limit(siblings: usize, limit: usize) -> bool {
    siblings <= limit + 2
}

#[test]
fn many_blind_writers_on_one_key_lose_nothing_and_stay_within_the_sibling_limit() {
    let (verdict, siblings, refused) = hot_key_run("hot-key", "20", 89);
    assert!(verdict.valid(), "the checkers found anomalies: {verdict:?}");
    assert!(verdict.acknowledged_writes >= 100, "{}", verdict.summary());
    assert!(refused > 0.0, "the workload never reached the limit");
    assert!(within_limit(siblings, 20), "{siblings} siblings");
}

/// The negative control of the limit check: with a limit of 200, the same workload leaves
/// the key with more siblings than a limit of 20 allows, and the check says so.
#[test]
fn the_sibling_check_fails_when_the_limit_is_not_enforced() {
    let (_, siblings, _) = hot_key_run("hot-key-200", "200", 97);
    assert!(!within_limit(siblings, 20), "only {siblings} siblings");
}
