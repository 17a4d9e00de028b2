//! The configuration file against a real process: its settings apply, flags win over it,
//! and a bad file stops the node at start with a message naming the option.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::process::Command;

use quorumkv_tests::{binary, error_of, serve_refusal, Cluster};
use reqwest::StatusCode;

#[test]
fn file_settings_apply_and_flags_take_precedence() {
    let files = tempfile::tempdir().unwrap();
    let config = files.path().join("quorumkv.toml");
    std::fs::write(
        &config,
        "default_n = 1\nmax_value_bytes = 100\nread_repair = false\n",
    )
    .unwrap();
    let cluster = Cluster::start_with(
        1,
        &[
            "--config",
            config.to_str().unwrap(),
            "--max-value-bytes",
            "200",
        ],
    );
    let props: serde_json::Value = cluster
        .http()
        .get(format!("{}/v1/buckets/fresh/props", cluster.url(0)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        props,
        serde_json::json!({"n": 1, "r": 1, "w": 1}),
        "default_n from the file"
    );
    // The flag's 200 bytes, not the file's 100.
    assert_eq!(
        cluster.put(0, "fresh", b"k", &[7; 150], "", None).status(),
        StatusCode::NO_CONTENT
    );
    let (status, code) = error_of(cluster.put(0, "fresh", b"k", &[7; 201], "", None));
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large")
    );
}

#[test]
fn a_bad_file_stops_the_node_naming_the_option() {
    let files = tempfile::tempdir().unwrap();
    for (text, named) in [
        ("node_id = \"n\"\nmax_value_byte = 10\n", "max_value_byte"),
        ("node_id = \"n\"\ndefault_n = 99\n", "default-n"),
        ("node_id = \"n\"\nsync = \"sometimes\"\n", "sync"),
        ("node_id = \"n\"\nmemtable_mib = 4\n", "memtable-mib"),
        ("node_id = \"n\"\nworker_threads = 0\n", "worker-threads"),
    ] {
        let config = files.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let data = files.path().join("data");
        let stderr = serve_refusal(&[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(
            stderr.contains(named),
            "{text:?}: the error does not name {named}: {stderr}"
        );
    }
}

#[test]
fn an_internode_source_ip_the_host_does_not_have_stops_the_node_naming_it() {
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("data");
    // An address of TEST-NET-3 (RFC 5737), assigned to no host.
    let output = Command::new(binary())
        .args([
            "serve",
            "--node-id",
            "n1",
            "--internode-source-ip",
            "203.0.113.77",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("QUORUMKV_INTERNODE_SOURCE_IP")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "an unusable source address was accepted"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--internode-source-ip 203.0.113.77"),
        "the error names the option: {stderr}"
    );
    assert!(!data.exists(), "refused before the store was created");
}

/// What a lone node started with `flags` says as it refuses to start.
fn refusal_with(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--node-id",
        "n1",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(flags);
    serve_refusal(&args)
}

/// `--max-object-bytes` must leave room for two values of `--max-value-bytes`: a key must
/// be able to hold a value beside a concurrent one.
#[test]
fn a_record_limit_below_two_values_is_refused_naming_both_options() {
    let stderr = refusal_with(&["--max-value-bytes", "1000", "--max-object-bytes", "1999"]);
    assert!(
        stderr.contains("--max-object-bytes") && stderr.contains("--max-value-bytes"),
        "{stderr}"
    );
}

/// A cleanup delay shorter than the settle time would drop copies that nodes which have not
/// yet heard of a change still read. (0, on demand only, is what the cleanup tests run.)
#[test]
fn a_cleanup_delay_below_the_settle_time_is_refused() {
    let stderr = refusal_with(&["--cleanup-delay-secs", "4"]);
    assert!(
        stderr.contains("--cleanup-delay-secs (4) must be 0") && stderr.contains("at least 5"),
        "{stderr}"
    );
}

/// A node whose seeds never answer cannot found a cluster nor join one: it says so within
/// 10 s, at warning level, naming the flag to change.
#[test]
fn a_node_whose_seeds_never_answer_says_why_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let silent = format!("127.0.0.1:{}", quorumkv_tests::free_port());
    let listen = format!("127.0.0.1:{}", quorumkv_tests::free_port());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a cluster secret of the test").unwrap();
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--node-id",
            "lonely",
            "--listen",
            &listen,
            "--seeds",
            &silent,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cluster-secret-file")
        .arg(&secret)
        .env("QUORUMKV_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let said = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        if text.contains("check --seeds") {
            break Some(started.elapsed());
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let said = said.unwrap_or_else(|| {
        panic!(
            "the node never said why it has no ring: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        said <= std::time::Duration::from_secs(15),
        "said why only after {said:?}"
    );
}
