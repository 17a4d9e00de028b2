//! Authentication against real processes: client bearer tokens and the cluster secret.
//! A refused request changes nothing; the probes stay open; the nodes, which share the
//! secret, still replicate. A node with peers does not start without the secret; a node
//! alone does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::{binary, error_of, free_port, serve_refusal, Cluster};
use reqwest::StatusCode;

const TOKEN: &str = "client-token-for-tests-0123456789";
const SECRET: &str = "cluster-secret-for-tests-0123456789";

#[test]
fn without_the_right_token_or_secret_nothing_is_read_or_changed() {
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    let secret = files.path().join("secret");
    std::fs::write(&tokens, format!("# clients\n{TOKEN}\n")).unwrap();
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let cluster = Cluster::start_authenticated(
        3,
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
        TOKEN,
    );
    // The harness's client sends the token; this one sends only what each case says.
    let http = &reqwest::blocking::Client::new();
    let key_url = cluster.key_url(0, "auth", b"k");
    let bearer = |token: &str| format!("Bearer {token}");

    // The probes stay open.
    assert_eq!(
        http.get(format!("{}/v1/health", cluster.url(0)))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{}/v1/ready", cluster.url(1)))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // With the token: a write at w=3 succeeds, so the nodes' internode calls carry the
    // secret.
    let put = http
        .put(format!("{key_url}?w=3"))
        .header("authorization", bearer(TOKEN))
        .body("kept")
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    // Without a token, or with a wrong one: 401, and nothing changes.
    for authorization in [None, Some(bearer("wrong-token")), Some(TOKEN.to_string())] {
        let mut request = http.put(key_url.clone()).body("overwritten");
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            error_of(response),
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{authorization:?}"
        );
        let mut read = http.get(key_url.clone());
        if let Some(value) = &authorization {
            read = read.header("authorization", value);
        }
        assert_eq!(read.send().unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    for path in ["/v1/cluster", "/metrics", "/v1/buckets/auth/props"] {
        let response = http
            .get(format!("{}{path}", cluster.url(2)))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // The routes that change the cluster, too; none of them acts.
    for path in [
        "/v1/cluster/leave",
        "/v1/cluster/remove",
        "/v1/cluster/cleanup",
    ] {
        let response = http
            .post(format!("{}{path}", cluster.url(2)))
            .json(&serde_json::json!({ "node": "node1" }))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let view: serde_json::Value = http
        .get(format!("{}/v1/cluster", cluster.url(2)))
        .header("authorization", bearer(TOKEN))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let states: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["state"].as_str())
        .collect();
    assert_eq!(states, ["active"; 3], "{view}");
    let read = http
        .get(format!("{key_url}?r=3"))
        .header("authorization", bearer(TOKEN))
        .send()
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.text().unwrap(), "kept");

    // An internode request without the secret, or with a wrong one, is refused before it
    // is even decoded.
    let rpc = format!("{}/internal/v1/rpc", cluster.url(1));
    for secret in [None, Some("cluster-secret-for-tests-0123456788")] {
        let mut request = http.post(rpc.clone()).body(vec![1u8, 0]);
        if let Some(value) = secret {
            request = request.header("x-quorumkv-cluster-secret", value);
        }
        assert_eq!(
            error_of(request.send().unwrap()),
            (StatusCode::UNAUTHORIZED, "unauthorized".into())
        );
    }
    // The client token is no cluster secret.
    let response = http
        .post(rpc)
        .header("authorization", bearer(TOKEN))
        .body(vec![1u8, 0])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_node_with_peers_but_no_cluster_secret_refuses_to_start() {
    let files = tempfile::tempdir().unwrap();
    let config = files.path().join("quorumkv.toml");
    let (own, other) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "node_id = \"node1\"\nlisten = \"127.0.0.1:{own}\"\ndata_dir = {:?}\n\
             seeds = [\"127.0.0.1:{own}\", \"127.0.0.1:{other}\"]\n",
            files.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let stderr = serve_refusal(&["--config", config.to_str().unwrap()]);
    assert!(
        stderr.contains("--cluster-secret-file"),
        "the error does not name --cluster-secret-file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{other}")),
        "the error does not name the other node: {stderr}"
    );
    assert!(
        !files.path().join("data").exists(),
        "the store was opened before the check"
    );
}

#[test]
fn a_node_alone_needs_no_cluster_secret() {
    let files = tempfile::tempdir().unwrap();
    // No seeds at all, and seeds that name only this node.
    for seeds in [None, Some("own")] {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(binary());
        command
            .args([
                "serve",
                "--node-id",
                "alone",
                "--listen",
                &addr,
                "--data-dir",
            ])
            .arg(files.path().join(addr.replace(':', "-")))
            .env_remove("QUORUMKV_CLUSTER_SECRET_FILE")
            .env_remove("QUORUMKV_SEEDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if seeds.is_some() {
            command.args(["--seeds", &addr]);
        }
        let mut child = command.spawn().unwrap();
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let answer = http
                .get(format!("http://{addr}/v1/ready"))
                .timeout(Duration::from_secs(1))
                .send();
            if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
                break true;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                break false;
            }
            sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready, "a node alone (seeds {seeds:?}) did not start");
    }
}
