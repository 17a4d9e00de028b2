//! Authentication against real processes: client bearer tokens and the cluster secret.
//! A refused request changes nothing; the probes stay open; the nodes, which share the
//! secret, still replicate. A node with peers does not start without the secret; a node
//! alone does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::{binary, error_of, free_port, serve_refusal, Cluster};
use reqwest::StatusCode;

const TOKEN: &str = "client-token-for-tests-0123456789";
const SECRET: &str = "cluster-secret-for-tests-0123456789";

/// The state of each member in a `GET /v1/cluster` answer, in its order.
fn member_states(view: &serde_json::Value) -> Vec<String> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

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
    assert_eq!(member_states(&view), ["active"; 3], "{view}");
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

const ADMIN: &str = "admin-token-for-tests-0123456789";

/// Reading and writing keys is not the right to change the cluster: with an admin token
/// file, a client token on an admin route gets 403 `forbidden` and changes nothing, and an
/// admin token reaches the admin routes and the data routes. Before, any client token took
/// a healthy member out for good. A member the failure detector sees up is removed only
/// with `"force": true` (409 `member_up` otherwise).
#[test]
fn admin_routes_need_an_admin_token_and_a_live_member_is_removed_only_by_force() {
    let files = tempfile::tempdir().unwrap();
    let (tokens, admins, secret) = (
        files.path().join("tokens"),
        files.path().join("admins"),
        files.path().join("secret"),
    );
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&admins, format!("# operators\n{ADMIN}\n")).unwrap();
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let cluster = Cluster::start_authenticated(
        3,
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--admin-token-file",
            admins.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
        TOKEN,
    );
    let http = reqwest::blocking::Client::new();
    let send =
        |token: &str, method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
            let mut request = http
                .request(method, format!("{}{path}", cluster.url(0)))
                .header("authorization", format!("Bearer {token}"));
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send().unwrap()
        };
    let props = |token: &str| -> serde_json::Value {
        send(token, reqwest::Method::GET, "/v1/buckets/adm/props", None)
            .json()
            .unwrap()
    };
    let states = || {
        let view: serde_json::Value = send(TOKEN, reqwest::Method::GET, "/v1/cluster", None)
            .json()
            .unwrap();
        member_states(&view)
    };
    let n_before = props(TOKEN)["n"].clone();
    assert_ne!(n_before, 2);

    let admin_routes = [
        (reqwest::Method::POST, "/v1/cluster/leave", None),
        (
            reqwest::Method::POST,
            "/v1/cluster/remove",
            Some(serde_json::json!({"node": "node2", "force": true})),
        ),
        (reqwest::Method::POST, "/v1/cluster/cleanup", None),
        (
            reqwest::Method::PUT,
            "/v1/buckets/adm/props",
            Some(serde_json::json!({"n": 2})),
        ),
    ];
    for (method, path, body) in admin_routes {
        let refused = send(TOKEN, method, path, body);
        assert_eq!(
            error_of(refused),
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{path} with a client token"
        );
    }
    assert_eq!(
        props(TOKEN)["n"],
        n_before,
        "a forbidden request changed nothing"
    );
    assert_eq!(states(), ["active"; 3]);

    // The admin token: a bucket's rules, a cleanup, and the data routes too.
    let set = send(
        ADMIN,
        reqwest::Method::PUT,
        "/v1/buckets/adm/props",
        Some(serde_json::json!({"n": 2})),
    );
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(props(TOKEN)["n"], 2);
    let cleanup = send(ADMIN, reqwest::Method::POST, "/v1/cluster/cleanup", None);
    let (status, code) = error_of(cleanup);
    assert!(
        status == StatusCode::OK
            || (status, code.as_str()) == (StatusCode::CONFLICT, "change_in_progress"),
        "cleanup with the admin token: {status} {code}"
    );
    let put = http
        .put(cluster.key_url(0, "adm", b"k"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body("by the admin")
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    // node2 is up: not removed without force, and nothing changes.
    let remove = |body: serde_json::Value| {
        send(
            ADMIN,
            reqwest::Method::POST,
            "/v1/cluster/remove",
            Some(body),
        )
    };
    assert_eq!(
        error_of(remove(serde_json::json!({"node": "node2"}))),
        (StatusCode::CONFLICT, "member_up".into())
    );
    assert_eq!(states(), ["active"; 3]);
    let forced = remove(serde_json::json!({"node": "node2", "force": true}));
    assert_eq!(forced.status(), StatusCode::ACCEPTED);
    let answer: serde_json::Value = forced.json().unwrap();
    assert_eq!(answer["state"], "leaving", "{answer}");
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

/// A node alone on `port`, started with `args` and no cluster secret (nor one from the
/// environment), with its data under `dir`; returns it, its address, and whether it
/// became ready within 20 s.
fn start_alone(dir: &Path, port: u16, args: &[&str]) -> (Child, String, bool) {
    let addr = format!("127.0.0.1:{port}");
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
        .arg(dir.join(addr.replace(':', "-")))
        .args(args)
        .env_remove("QUORUMKV_CLUSTER_SECRET_FILE")
        .env_remove("QUORUMKV_SEEDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
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
    (child, addr, ready)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_node_alone_needs_no_cluster_secret() {
    let files = tempfile::tempdir().unwrap();
    // No seeds at all, and seeds that name only this node.
    for own_seed in [false, true] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args: &[&str] = if own_seed { &["--seeds", &addr] } else { &[] };
        let (child, _, ready) = start_alone(files.path(), port, args);
        stop(child);
        assert!(ready, "a node alone (own seed: {own_seed}) did not start");
    }
}

/// A node with client tokens and no cluster secret has no peers, and calls itself in
/// process: its internode routes, the fault routes included, refuse every caller, a client
/// token holder too. Before, a `Hello` with no credential at all got 200, and through the
/// same route anyone could read and write every key.
#[test]
fn a_node_alone_serves_its_internode_routes_to_nobody() {
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (child, addr, ready) = start_alone(
        files.path(),
        free_port(),
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--fault-injection",
        ],
    );
    let http = reqwest::blocking::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    let check = || {
        assert!(ready, "the node did not start");
        // One node holds one replica of each key: quorums of one.
        let key = format!("http://{addr}/v1/buckets/alone/keys/k");
        let put = http
            .put(format!("{key}?w=1"))
            .header("authorization", &bearer)
            .body("v");
        assert_eq!(put.send().unwrap().status(), StatusCode::NO_CONTENT);
        let read = http
            .get(format!("{key}?r=1"))
            .header("authorization", &bearer)
            .send()
            .unwrap();
        assert_eq!(read.text().unwrap(), "v");

        let rpc = format!("http://{addr}/internal/v1/rpc");
        let hello = vec![1u8, 0];
        for authorization in [None, Some(bearer.as_str())] {
            let mut request = http.post(&rpc).body(hello.clone());
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            assert_eq!(
                error_of(request.send().unwrap()),
                (StatusCode::UNAUTHORIZED, "unauthorized".into()),
                "internode, {authorization:?}"
            );
        }
        let fault = format!("http://{addr}/internal/v1/fault/replica");
        assert_eq!(
            http.get(&fault).send().unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let planted = http
            .put(&fault)
            .header("authorization", &bearer)
            .json(&serde_json::json!({ "fault": "last-write-wins" }))
            .send()
            .unwrap();
        assert_eq!(planted.status(), StatusCode::UNAUTHORIZED);

        let view: serde_json::Value = http
            .get(format!("http://{addr}/v1/cluster"))
            .header("authorization", &bearer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(view["fault_injection"], true, "{view}");
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    stop(child);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A token anyone could guess stops the node at start, naming the flag and the line but
/// never quoting the token: the example Secret's placeholder, and anything shorter than
/// 16 characters, in either token file or as the cluster secret.
#[test]
fn guessable_tokens_and_secrets_stop_the_node_at_start() {
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let data = files.path().join("data");
    let data = data.to_str().unwrap();
    let long = file("long", &format!("{TOKEN}\n"));
    for (flag, text, named) in [
        ("--auth-token-file", "replace-me\n", "line 1"),
        ("--auth-token-file", "# clients\nshort-token\n", "line 2"),
        ("--admin-token-file", "replace-me\n", "line 1"),
        ("--cluster-secret-file", "replace-me\n", "16 characters"),
    ] {
        let guessable = file("guessable", text);
        let mut args = vec!["--node-id", "n1", "--data-dir", data, flag, &guessable];
        if flag != "--auth-token-file" {
            args.extend(["--auth-token-file", &long]);
        }
        let stderr = serve_refusal(&args);
        assert!(stderr.contains(flag), "{flag} {text:?}: {stderr}");
        assert!(stderr.contains(named), "{flag} {text:?}: {stderr}");
        let token = text.lines().last().unwrap();
        assert!(!stderr.contains(token), "{flag} quoted the token: {stderr}");
    }
}

/// With authentication off (the default, and `make run`), a web page could drive a node
/// through its visitor's browser: a `POST /v1/cluster/leave` with `Content-Type:
/// text/plain` (a request any page may send without a preflight) made the node leave, and a
/// value stored as `text/html` ran its scripts in the node's origin. Now a request from
/// another page's origin is refused (403 `forbidden_origin`), a POST body must be JSON (415),
/// a loopback node answers only loopback names (403 `forbidden_host`, against DNS
/// rebinding), and values are served with `nosniff` and a sandbox.
#[test]
fn pages_of_other_origins_cannot_drive_a_node() {
    let cluster = Cluster::start(3);
    let http = reqwest::blocking::Client::new();
    let node = cluster.url(0);
    let leave = format!("{node}/v1/cluster/leave");
    let attack = http
        .post(&leave)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(
        error_of(attack),
        (StatusCode::FORBIDDEN, "forbidden_origin".into())
    );
    let form = http
        .post(format!("{node}/v1/cluster/remove"))
        .header("content-type", "text/plain")
        .body(r#"{"node": "node2", "force": true}"#)
        .send()
        .unwrap();
    assert_eq!(
        error_of(form),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    let rebound = http
        .get(format!("{node}/v1/cluster"))
        .header("host", "rebind.evil.example")
        .send()
        .unwrap();
    assert_eq!(
        error_of(rebound),
        (StatusCode::FORBIDDEN, "forbidden_host".into())
    );
    // Nothing changed: every member still active.
    let view = cluster.cluster_view(0).unwrap();
    assert_eq!(member_states(&view), ["active"; 3], "{view}");

    // The node's own origin (its status page) and the probes from anywhere still work.
    let own = http
        .get(format!("{node}/v1/cluster"))
        .header("origin", &node)
        .send()
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let probe = http
        .get(format!("{node}/v1/health"))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(probe.status(), StatusCode::OK);

    // A stored page is served, but confined.
    let key = cluster.key_url(0, "pages", b"p.html");
    let put = http
        .put(format!("{key}?w=3"))
        .header("content-type", "text/html")
        .body("<script>fetch('/v1/cluster/leave', {method: 'POST'})</script>")
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let page = http.get(&key).send().unwrap();
    assert_eq!(page.headers()["content-type"], "text/html");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["content-security-policy"], "sandbox");
}

/// A causal context is the cluster's word, for one key. Before, a token was a CRC anyone
/// could recompute: one PUT with the key's own actors at counters near 2^64 made every
/// later write of the key fail with "dot counter overflow", and a token of one key was
/// taken for another. Now tokens are signed and bound to their key: a borrowed, edited or
/// re-checksummed token gets 400 `invalid_context`, nothing is stored, and the key takes
/// writes with the token a read gave.
#[test]
fn forged_or_borrowed_contexts_are_refused_and_the_key_stays_writable() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use quorumkv_replica::{with_format, VersionVector, WireFormat};
    use quorumkv_tests::context_of;

    let cluster = Cluster::start(3);
    let put = cluster.put(0, "ctx", b"k", b"one", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(1, "ctx", b"k", "r=3");
    let token = context_of(&read).unwrap();

    // The token of k, on another key.
    let borrowed = cluster.put(0, "ctx", b"other", b"x", "w=3", Some(&token));
    assert_eq!(
        error_of(borrowed),
        (StatusCode::BAD_REQUEST, "invalid_context".into())
    );
    assert_eq!(
        cluster.get(2, "ctx", b"other", "r=3").status(),
        StatusCode::NOT_FOUND
    );

    // The key's own actors at counters near 2^64, checksummed as earlier releases did.
    let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
    // Format 3 holds the vector as format 1 did: the map alone.
    let v1 = |f: &mut dyn FnMut()| with_format(WireFormat::V1, f);
    let mut clock = VersionVector::new();
    v1(&mut || clock = postcard::from_bytes(&bytes[1..bytes.len() - 16]).unwrap());
    assert!(!clock.is_empty());
    let near_max: VersionVector = clock.iter().map(|(a, _)| (a, u64::MAX - 1)).collect();
    let mut body = vec![1u8];
    v1(&mut || body.extend(postcard::to_stdvec(&near_max).unwrap()));
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"quorumkv-causal-context");
    crc.update(&body);
    body.extend(crc.finalize().to_be_bytes());
    let forged = URL_SAFE_NO_PAD.encode(&body);
    // An edit of the real token.
    let mut edited = token.clone().into_bytes();
    let last = edited.len() - 3;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for (what, bad) in [("re-checksummed", &forged), ("edited", &edited)] {
        let put = cluster.put(2, "ctx", b"k", b"forged", "w=3", Some(bad));
        assert_eq!(
            error_of(put),
            (StatusCode::BAD_REQUEST, "invalid_context".into()),
            "{what}"
        );
        let delete = cluster.delete(0, "ctx", b"k", "w=3", Some(bad));
        assert_eq!(delete.status(), StatusCode::BAD_REQUEST, "{what}");
    }

    // Nothing changed, and the key takes a write with the token its read gave, at any node.
    let read = cluster.get(0, "ctx", b"k", "r=3");
    assert_eq!(read.text().unwrap(), "one");
    let put = cluster.put(2, "ctx", b"k", b"two", "w=3", Some(&token));
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(1, "ctx", b"k", "r=3");
    assert_eq!(read.text().unwrap(), "two");
}

/// A context signed with the cluster's key (one that leaked, or a bug that hands out
/// clocks of the future) still cannot name dots the minting replica never made: the
/// replica compares the context's entry for its own actor with what it has minted, and a
/// context ahead of it gets 400 `invalid_context`, on a write and on a delete. Nothing is
/// stored, and the key goes on taking writes; before the check, counters near 2^64 in a
/// well-signed context made every later write of the key fail on counter overflow. (Only
/// the minting replica's own entry can be checked so: the signature is what keeps the
/// other entries honest.)
#[test]
fn a_signed_context_ahead_of_the_minting_replica_is_refused() {
    use quorumkv_coordinator::ContextKey;
    use quorumkv_replica::VersionVector;
    use quorumkv_tests::context_of;

    let cluster = Cluster::start(3);
    let signer = ContextKey::from_secret(cluster.cluster_secret().as_bytes());
    // Each node owns every key of a cluster of three, and mints the writes it coordinates:
    // a first write through it names its actor alone.
    let actors: Vec<_> = (0..3)
        .map(|node| {
            let probe = format!("probe-{node}");
            let put = cluster.put(node, "ahead", probe.as_bytes(), b"p", "w=3", None);
            assert_eq!(put.status(), StatusCode::NO_CONTENT);
            let token = context_of(&put).unwrap();
            let clock = signer.decode(b"ahead", probe.as_bytes(), &token).unwrap();
            let entries: Vec<_> = clock.iter().collect();
            assert_eq!(entries.len(), 1, "{clock:?}");
            entries[0].0
        })
        .collect();
    let put = cluster.put(0, "ahead", b"k", b"one", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let token = context_of(&cluster.get(1, "ahead", b"k", "r=3")).unwrap();
    let clock = signer.decode(b"ahead", b"k", &token).unwrap();
    for counter in [1_000, u64::MAX - 1] {
        for (node, actor) in actors.iter().enumerate() {
            let ahead: VersionVector = clock.iter().chain([(*actor, counter)]).collect();
            let forged = signer.encode(b"ahead", b"k", &ahead);
            let put = cluster.put(node, "ahead", b"k", b"forged", "w=2", Some(&forged));
            assert_eq!(
                error_of(put),
                (StatusCode::BAD_REQUEST, "invalid_context".into()),
                "counter {counter}, at node {node}"
            );
            let delete = cluster.delete(node, "ahead", b"k", "w=2", Some(&forged));
            assert_eq!(
                error_of(delete),
                (StatusCode::BAD_REQUEST, "invalid_context".into()),
                "counter {counter}, at node {node}"
            );
        }
    }
    for node in 0..3 {
        let read = cluster.get(node, "ahead", b"k", "r=3");
        assert_eq!(read.text().unwrap(), "one", "node {node}");
    }
    let put = cluster.put(2, "ahead", b"k", b"two", "w=3", Some(&token));
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(0, "ahead", b"k", "r=3");
    let context = context_of(&read);
    assert_eq!(read.text().unwrap(), "two");
    let put = cluster.put(1, "ahead", b"k", b"three", "w=3", context.as_deref());
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
}

/// The cluster secret changes without an outage, in three rolling restarts of the secret
/// file: `old` then `new` (every node sends the old one and accepts both), `new` then `old`
/// (nodes send the new one, which every node accepts), then `new` alone. After each restart
/// a write at w=3, with the context the previous write answered, reaches every node; at the
/// end a peer sending the old secret is refused.
#[test]
fn the_cluster_secret_rotates_in_three_rolling_restarts_without_an_outage() {
    use quorumkv_tests::context_of;
    const OLD: &str = "old-cluster-secret-0123456789";
    const NEW: &str = "new-cluster-secret-0123456789";
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("secret");
    std::fs::write(&secret, format!("{OLD}\n")).unwrap();
    let mut cluster = Cluster::start_with(3, &["--cluster-secret-file", secret.to_str().unwrap()]);
    let put = cluster.put(0, "rotate", b"k", b"v0", "w=3", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let mut context = context_of(&put).unwrap();
    for (step, text) in [
        (1, format!("{OLD}\n{NEW}\n")),
        (2, format!("{NEW}\n{OLD}\n")),
        (3, format!("{NEW}\n")),
    ] {
        std::fs::write(&secret, text).unwrap();
        for node in 0..3 {
            assert!(cluster.terminate(node).success());
            cluster.restart(node);
            let value = format!("v{step}-{node}");
            let put = cluster.put(
                (node + 1) % 3,
                "rotate",
                b"k",
                value.as_bytes(),
                "w=3",
                Some(&context),
            );
            assert_eq!(
                put.status(),
                StatusCode::NO_CONTENT,
                "step {step}, node {node} restarted"
            );
            context = context_of(&put).unwrap();
        }
    }
    let read = cluster.get(2, "rotate", b"k", "r=3");
    assert_eq!(read.text().unwrap(), "v3-2");
    let rpc = format!("{}/internal/v1/rpc", cluster.url(0));
    let old = reqwest::blocking::Client::new()
        .post(rpc)
        .header("x-quorumkv-cluster-secret", OLD)
        .body(vec![1u8, 0])
        .send()
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
}

/// On SIGHUP a node reads its token files and its cluster secret again, so credentials
/// change without a restart: a client token and an admin token are replaced, a file that
/// fails the start-up checks changes nothing, and the secret rotates through its two-line
/// file in three steps, each applied on every node, while writes at w=3 go on reaching
/// every node. Contexts issued under the old secret stay good until its last step.
#[test]
fn credentials_and_the_cluster_secret_are_read_again_on_sighup() {
    use quorumkv_tests::context_of;
    const OLD_CLIENT: &str = "old-client-token-0123456789";
    const NEW_CLIENT: &str = "new-client-token-0123456789";
    const OLD_ADMIN: &str = "old-admin-token-0123456789";
    const NEW_ADMIN: &str = "new-admin-token-0123456789";
    const OLD: &str = "old-cluster-secret-0123456789";
    const NEW: &str = "new-cluster-secret-0123456789";
    let files = tempfile::tempdir().unwrap();
    let (tokens, admins, secret) = (
        files.path().join("tokens"),
        files.path().join("admins"),
        files.path().join("secret"),
    );
    // The harness's token stays on line 1 throughout; line 2 changes.
    std::fs::write(&tokens, format!("{TOKEN}\n{OLD_CLIENT}\n")).unwrap();
    std::fs::write(&admins, format!("{OLD_ADMIN}\n")).unwrap();
    std::fs::write(&secret, format!("{OLD}\n")).unwrap();
    let mut cluster = Cluster::start_authenticated(
        3,
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--admin-token-file",
            admins.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
        TOKEN,
    );
    let http = reqwest::blocking::Client::new();
    let urls: Vec<String> = (0..3).map(|node| cluster.url(node)).collect();
    // What a token gets at a node: on a data route (GET /v1/cluster), or on an admin route
    // (PUT of a bucket's properties) when `admin`.
    let status = |node: usize, token: &str, admin: bool| {
        let request = if admin {
            http.put(format!("{}/v1/buckets/hup/props", urls[node]))
                .json(&serde_json::json!({"n": 3}))
        } else {
            http.get(format!("{}/v1/cluster", urls[node]))
        };
        let request = request.header("authorization", format!("Bearer {token}"));
        request.send().unwrap().status()
    };
    let expect = |nodes: &[usize], answers: &[(&str, bool, StatusCode)]| {
        for &node in nodes {
            for &(token, admin, answer) in answers {
                assert_eq!(
                    status(node, token, admin),
                    answer,
                    "node {node}, {token}, admin route: {admin}"
                );
            }
        }
    };
    expect(
        &[0, 1, 2],
        &[
            (OLD_CLIENT, false, StatusCode::OK),
            (OLD_ADMIN, true, StatusCode::OK),
            (NEW_CLIENT, false, StatusCode::UNAUTHORIZED),
        ],
    );

    std::fs::write(&tokens, format!("{TOKEN}\n{NEW_CLIENT}\n")).unwrap();
    std::fs::write(&admins, format!("{NEW_ADMIN}\n")).unwrap();
    for node in 0..3 {
        assert_eq!(cluster.reload_credentials(node), "applied");
    }
    expect(
        &[0, 1, 2],
        &[
            (NEW_CLIENT, false, StatusCode::OK),
            (OLD_CLIENT, false, StatusCode::UNAUTHORIZED),
            (NEW_ADMIN, true, StatusCode::OK),
            (OLD_ADMIN, true, StatusCode::UNAUTHORIZED),
            (NEW_CLIENT, true, StatusCode::FORBIDDEN),
        ],
    );

    // A file the start-up checks refuse: the node keeps what it had.
    std::fs::write(&tokens, "replace-me\n").unwrap();
    assert_eq!(cluster.reload_credentials(0), "refused");
    expect(
        &[0],
        &[
            (NEW_CLIENT, false, StatusCode::OK),
            (OLD_CLIENT, false, StatusCode::UNAUTHORIZED),
        ],
    );
    std::fs::write(&tokens, format!("{TOKEN}\n{NEW_CLIENT}\n")).unwrap();
    assert_eq!(cluster.reload_credentials(0), "applied");

    // The secret, in three steps: after each node's reload, a write at w=3 with the context
    // the previous write answered reaches every node.
    let put_key = |cluster: &Cluster, node: usize, value: &str, context: Option<&str>| {
        cluster.put(node, "hup", b"k", value.as_bytes(), "w=3", context)
    };
    let first = put_key(&cluster, 0, "v0", None);
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let mut context = context_of(&first).unwrap();
    let mut signed_under_old = String::new();
    for (step, text) in [
        (1, format!("{OLD}\n{NEW}\n")),
        (2, format!("{NEW}\n{OLD}\n")),
        (3, format!("{NEW}\n")),
    ] {
        std::fs::write(&secret, text).unwrap();
        for node in 0..3 {
            assert_eq!(cluster.reload_credentials(node), "applied", "step {step}");
            let value = format!("v{step}-{node}");
            let put = put_key(&cluster, (node + 1) % 3, &value, Some(&context));
            assert_eq!(
                put.status(),
                StatusCode::NO_CONTENT,
                "step {step}, node {node}"
            );
            context = context_of(&put).unwrap();
            if step == 1 {
                signed_under_old.clone_from(&context);
            }
        }
    }
    let read = cluster.get(2, "hup", b"k", "r=3");
    assert_eq!(read.text().unwrap(), "v3-2");
    // The last step dropped the old secret: its contexts and its peers are refused.
    let stale = put_key(&cluster, 0, "stale", Some(&signed_under_old));
    assert_eq!(
        error_of(stale),
        (StatusCode::BAD_REQUEST, "invalid_context".into())
    );
    let rpc = |secret: &str| {
        http.post(format!("{}/internal/v1/rpc", cluster.url(1)))
            .header("x-quorumkv-cluster-secret", secret)
            .body(vec![1u8, 0])
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(rpc(OLD), StatusCode::UNAUTHORIZED);
    assert_ne!(rpc(NEW), StatusCode::UNAUTHORIZED);
}
