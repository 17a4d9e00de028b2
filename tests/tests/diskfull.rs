//! A node whose disk fills up, against real processes: the node's data directory is a
//! small tmpfs, nearly filled by a file before the node starts, so that its replica runs
//! out of space after a few megabytes of writes. Mounting needs root: elsewhere the test
//! says why it skips and passes. Every wait is bounded; the figures are printed for the
//! record.
//!
//! What is true, and asserted: the full node stays up and answers (its health, reads,
//! clean JSON errors for what needs its disk); writes through the healthy nodes go on;
//! every acknowledged write stays readable at r=2; and once space is freed the node's
//! store takes writes again by itself, without a restart, and catches up.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::netns::{is_alive, is_root};
use quorumkv_tests::Cluster;
use reqwest::StatusCode;

/// The tmpfs under the full node.
const TMPFS_MIB: usize = 128;
/// What the filler leaves free when the node starts.
const FREE_MIB: usize = 8;
/// Names the test's temporary directories, with the owning pid after it.
const DIR_PREFIX: &str = "quorumkv-diskfull-";
/// How long filling, recovering and catching up may each take.
const PATIENCE: Duration = Duration::from_secs(90);

/// A tmpfs mounted for the test, unmounted on drop (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, mib: usize) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(&self.path);
    }
}

/// Unmounts `path`, lazily if something still holds it, so that it goes in any case.
fn unmount(path: &Path) {
    let done = Command::new("umount").arg(path).status();
    if !done.is_ok_and(|s| s.success()) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// Unmounts and deletes what earlier runs of this test left when they were killed: their
/// temporary directories name their pid.
fn sweep_stale_mounts() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for mountpoint in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(dir) = mountpoint
            .split('/')
            .find(|part| part.starts_with(DIR_PREFIX))
        else {
            continue;
        };
        let pid = dir[DIR_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !is_alive(pid)) {
            eprintln!("unmounting {mountpoint}, left by a dead test process");
            unmount(Path::new(mountpoint));
            if let Some(root) = mountpoint.split(dir).next() {
                let _ = std::fs::remove_dir_all(Path::new(root).join(dir));
            }
        }
    }
}

/// Fills `path` with zeros, `mib` MiB of them (zeros take real pages on a tmpfs).
fn write_filler(path: &Path, mib: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
}

/// A value of 16 KiB that names its key.
fn value_of(key: &str) -> Vec<u8> {
    let mut value = key.as_bytes().to_vec();
    value.resize(16 * 1024, b'.');
    value
}

/// Polls `done` every 200 ms until it holds; panics naming `what` after [`PATIENCE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// A strict write through `node` that needs every owner, the full node's replica
/// included: (status, JSON body).
fn probe(cluster: &Cluster, node: usize, key: &str) -> (StatusCode, serde_json::Value) {
    let response = cluster.put(
        node,
        "full",
        key.as_bytes(),
        &value_of(key),
        "w=3&sloppy=false&timeout_ms=3000",
        None,
    );
    let status = response.status();
    (status, response.json().unwrap_or_default())
}

#[test]
fn a_node_whose_disk_is_full_answers_cleanly_loses_nothing_and_recovers_once_space_is_freed() {
    if !is_root() {
        println!("disk full: SKIPPED: mounting a tmpfs needs root");
        return;
    }
    sweep_stale_mounts();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let mount = match Tmpfs::mount(&dir.path().join("node3"), TMPFS_MIB) {
        Ok(mount) => mount,
        Err(reason) => {
            println!("disk full: SKIPPED: cannot mount a tmpfs: {reason}");
            return;
        }
    };
    let filler = mount.path.join("filler");
    write_filler(&filler, TMPFS_MIB - FREE_MIB);
    let data_dir = mount.path.join("db");
    // Anti-entropy often: the one write the full node coordinated itself (below) has no
    // hint, as a coordinator keeps none for itself, and reaches it through anti-entropy.
    let cluster = Cluster::start_with_data_dirs(3, &["--anti-entropy-interval-ms", "1000"], |i| {
        (i == 2).then(|| data_dir.clone())
    });
    let full = 2;

    // Fill: writes at w=2 through the healthy nodes, until a write that needs the third
    // replica fails for lack of space.
    let mut acknowledged: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut refusal = serde_json::Value::Null;
    for n in 0.. {
        assert!(
            started.elapsed() < PATIENCE && n < 5000,
            "node 3 never ran out of space ({n} writes)"
        );
        let key = format!("fill{n}");
        let put = cluster.put(n % 2, "full", key.as_bytes(), &value_of(&key), "w=2", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
        acknowledged.push(key);
        if n % 10 == 9 {
            let (status, body) = probe(&cluster, 0, &format!("probe{n}"));
            if status != StatusCode::NO_CONTENT {
                refusal = body;
                break;
            }
        }
    }
    let filled_after = acknowledged.len();
    assert_eq!(refusal["error"], "quorum_unavailable", "{refusal}");
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("out of disk space"),
        "the failure names the full disk: {message}"
    );

    // The healthy nodes go on acknowledging at w=2.
    for n in 0..50 {
        let key = format!("more{n}");
        let put = cluster.put(n % 2, "full", key.as_bytes(), &value_of(&key), "w=2", None);
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "{key}");
        acknowledged.push(key);
    }

    // The full node stays up and answers: its probe, reads, and JSON errors for what needs
    // its own disk.
    let health = cluster
        .http()
        .get(format!("{}/v1/health", cluster.url(full)))
        .send()
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let (status, body) = probe(&cluster, full, "through-the-full-node");
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("quorum_unavailable")),
        "{body}"
    );
    assert!(body["message"].as_str().is_some(), "{body}");
    // At w=2 another owner mints the write the full node could not store.
    let key = "via-the-full-node".to_string();
    let put = cluster.put(full, "full", key.as_bytes(), &value_of(&key), "w=2", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    acknowledged.push(key);
    // A change of bucket properties must be stored on the node that takes it.
    let props_url = |i: usize| format!("{}/v1/buckets/full/props", cluster.url(i));
    let before: serde_json::Value = cluster
        .http()
        .get(props_url(0))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let change = cluster
        .http()
        .put(props_url(full))
        .json(&serde_json::json!({ "r": 1 }))
        .send()
        .unwrap();
    assert_eq!(change.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        change
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: serde_json::Value = change.json().unwrap();
    assert_eq!(body["error"], "insufficient_storage", "{body}");
    assert!(body["message"].as_str().is_some(), "{body}");
    // Refused whole: the change did not spread to the peers either (they pull every
    // 500 ms; give them a few rounds).
    sleep(Duration::from_secs(2));
    for i in 0..3 {
        let now: serde_json::Value = cluster
            .http()
            .get(props_url(i))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(now, before, "node {i}'s props after the refused change");
    }

    // Every acknowledged write is readable at r=2, through any node.
    for (n, key) in acknowledged.iter().enumerate() {
        let read = cluster.get(n % 3, "full", key.as_bytes(), "r=2");
        assert_eq!(read.status(), StatusCode::OK, "{key}");
        assert_eq!(read.bytes().unwrap(), value_of(key), "{key}");
    }
    let missing_on_full = acknowledged
        .iter()
        .filter(|k| cluster.local_values(full, "full", k.as_bytes()).is_none())
        .count();
    assert!(
        missing_on_full > 0,
        "node 3 stored every write despite its full disk"
    );

    // Free the space: the store resumes by itself (no restart) and catches up.
    std::fs::remove_file(&filler).unwrap();
    let mut n = 0;
    let resumed = wait_until("node 3 takes writes again", || {
        n += 1;
        probe(&cluster, 0, &format!("after{n}")).0 == StatusCode::NO_CONTENT
    });
    let caught_up = wait_until("node 3 holds every acknowledged write", || {
        acknowledged
            .iter()
            .all(|k| cluster.local_values(full, "full", k.as_bytes()) == Some(vec![value_of(k)]))
    });
    let drained = wait_until("the hints for node 3 drain", || {
        cluster.metric(0, "quorumkv_hints_pending", "")
            + cluster.metric(1, "quorumkv_hints_pending", "")
            == 0.0
    });
    assert!(cluster.nodes[full].is_running());
    let replayed = cluster.metric(0, "quorumkv_hints_replayed_total", "")
        + cluster.metric(1, "quorumkv_hints_replayed_total", "");
    println!(
        "disk full: node 3 ran out of space after {filled_after} writes of 16 KiB \
         ({FREE_MIB} MiB free at start), lacked {missing_on_full} of {} acknowledged writes; \
         after the filler was deleted it took writes again in {resumed:?} (no restart) and \
         held every acknowledged write {caught_up:?} later ({replayed} hints replayed); \
         hints drained {drained:?} after",
        acknowledged.len()
    );
    drop(cluster);
    drop(mount);
}
