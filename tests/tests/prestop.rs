//! The StatefulSet's preStop hook: a pod hands its data off when it is scaled away, and
//! only then.
//!
//! Three pods (`quorumkv-0..2`) are started as the kubelet starts them (see
//! [`quorumkv_tests::kubelet`]) and found the cluster; then the StatefulSet is scaled to
//! four: `quorumkv-3` starts with the same environment (its seeds are the three founders,
//! not itself), joins, and turns ready once it has received its partitions. A small
//! stand-in for the Kubernetes API answers the one request the hook makes (the
//! StatefulSet, now scaled back to 3 replicas), and checks its bearer token.
//! The hook's command is the manifest's, run inside a pod as the kubelet runs it, with the
//! pod's environment; only the API's address and the service-account directory are this
//! test's (a pod reads them from `KUBERNETES_SERVICE_HOST` and its mounted token).
//!
//! What is checked, in order:
//! - the fourth pod joins as deploy/k8s/README.md scales up: ready only with its data in,
//!   then an active member of a balanced ring of four;
//! - when the API cannot be asked (it answers 500, or there is none), the hook fails and
//!   the node does not leave: a stop is then a plain restart;
//! - a pod that stays (ordinal 1 < 3 replicas) returns at once and its node stays active;
//! - the pod that goes (ordinal 3) returns only once its node has handed its partitions
//!   off and exited 0; the three others are balanced, and every key written before reads
//!   back from them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::kubelet::{
    client_with_token, cluster_dns, container_port, fill_secret_volumes, pod_identities,
    secret_keys, strings, wait_for_probe, Image, Launch, PodIdentity, RunningPod, NAMESPACE,
};
use serde_json::Value;

/// The client token in the pods' Secret volume.
const TEST_TOKEN: &str = "client-token-of-the-prestop-test";
/// The service account token the stand-in API accepts.
const SERVICE_ACCOUNT_TOKEN: &str = "service-account-token-of-the-prestop-test";
/// The replicas the StatefulSet is scaled down to.
const REPLICAS_AFTER: u64 = 3;
/// Keys written before the scale-down.
const KEYS: usize = 200;
/// How long a hook that does not leave may take.
const QUICK: Duration = Duration::from_secs(15);
/// How long the leaving pod's hook may take: its node hands off its partitions.
const HAND_OFF: Duration = Duration::from_secs(120);

#[test]
fn the_prestop_hook_hands_off_on_scale_down_and_only_then() {
    let root = quorumkv_tests::workspace_root();
    let manifest: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/k8s/base/statefulset.yaml")).unwrap(),
    )
    .unwrap();
    let image =
        Image::parse(&std::fs::read_to_string(root.join("deploy/docker/Dockerfile")).unwrap());
    let spec = &manifest["spec"];
    let pod_spec = &spec["template"]["spec"];
    let container = pod_spec["containers"][0].clone();
    let hook = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
    assert_eq!(
        pod_spec["automountServiceAccountToken"], true,
        "the hook reads the StatefulSet with the pod's service account token"
    );

    let statefulset = manifest["metadata"]["name"].as_str().unwrap();
    let service = spec["serviceName"].as_str().unwrap();
    let port = container_port(&container, "http");
    let dir = tempfile::tempdir().unwrap();
    let pods = pod_identities(statefulset, 4, port, dir.path());
    let dns = cluster_dns(&pods, service);
    fill_secret_volumes(pod_spec, &pods, &secret_keys(&root), |key| match key {
        "auth-token" => TEST_TOKEN.to_string(),
        other => format!("{other}-value-of-the-prestop-test"),
    });
    let launches: Vec<Launch> = pods
        .iter()
        .map(|pod| Launch::of(&container, &image, pod, &dns))
        .collect();
    // The three the manifest starts; the fourth comes with the scale-up below.
    let mut running: Vec<RunningPod> = pods[..3]
        .iter()
        .map(|pod| Launch::of(&container, &image, pod, &dns).spawn(pod))
        .collect();

    let http = client_with_token(TEST_TOKEN, Duration::from_secs(5));
    for pod in &mut running {
        wait_for_probe(&http, &container, "readinessProbe", pod, port);
    }
    let url = |pod: &PodIdentity, path: &str| format!("http://{}:{port}{path}", pod.ip);

    for i in 0..KEYS {
        let response = http
            .put(url(
                &pods[0],
                &format!("/v1/buckets/prestop/keys/k{i}?w=all"),
            ))
            .body(format!("value-{i}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 204, "write of k{i}");
    }

    // Scaled to four, seeds unchanged: quorumkv-3 joins. Its readiness probe passes only
    // once it holds the partitions it gains, and then the change commits.
    running.push(Launch::of(&container, &image, &pods[3], &dns).spawn(&pods[3]));
    let ready = url(&pods[3], "/v1/ready");
    let deadline = Instant::now() + HAND_OFF;
    let mut unready_while_joining = false;
    loop {
        if let Ok(response) = http.get(&ready).send() {
            if response.status() == 200 {
                break;
            }
            let reason: Value = response.json().unwrap_or_default();
            unready_while_joining |= reason["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("joining"));
        }
        assert!(Instant::now() < deadline, "quorumkv-3 never turned ready");
        sleep(Duration::from_millis(100));
    }
    assert!(
        unready_while_joining,
        "quorumkv-3 was not ready while it received its partitions"
    );
    wait_balanced(&http, &pods[..4], port);

    let api = FakeKubeApi::start(statefulset, REPLICAS_AFTER);
    let account = dir.path().join("serviceaccount");
    std::fs::create_dir_all(&account).unwrap();
    std::fs::write(account.join("namespace"), NAMESPACE).unwrap();
    std::fs::write(account.join("token"), SERVICE_ACCOUNT_TOKEN).unwrap();
    let run_hook = |ordinal: usize, api_url: Option<&str>| -> Child {
        let mut command = launches[ordinal].exec(&hook, &pods[ordinal]);
        command.env("QUORUMKV_KUBE_SERVICEACCOUNT_DIR", &account);
        if let Some(api_url) = api_url {
            command.env("QUORUMKV_KUBE_API", api_url);
        }
        let log = pods[ordinal].dir.join("prestop.log");
        let out = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    };
    let hook_log = |ordinal: usize| {
        std::fs::read_to_string(pods[ordinal].dir.join("prestop.log")).unwrap_or_default()
    };

    // The API fails, or there is none: the hook fails and the node stays.
    api.answer_with(500);
    let status = wait_exit(run_hook(3, Some(&api.url)), QUICK, "the hook of quorumkv-3");
    assert!(!status.success(), "{}", hook_log(3));
    assert!(hook_log(3).contains("does not leave"), "{}", hook_log(3));
    let status = wait_exit(run_hook(3, None), QUICK, "the hook of quorumkv-3");
    assert!(!status.success(), "{}", hook_log(3));
    assert!(
        hook_log(3).contains("KUBERNETES_SERVICE_HOST"),
        "{}",
        hook_log(3)
    );
    assert_stays(
        &http,
        &url(&pods[0], "/v1/cluster"),
        &mut running[3],
        "quorumkv-3",
    );

    // A pod that stays returns at once, without touching its node.
    api.answer_with(200);
    let started = Instant::now();
    let status = wait_exit(run_hook(1, Some(&api.url)), QUICK, "the hook of quorumkv-1");
    assert!(status.success(), "{}", hook_log(1));
    assert!(
        hook_log(1).contains("quorumkv-1 stays (ordinal 1 < replicas 3): not leaving"),
        "{}",
        hook_log(1)
    );
    println!(
        "the hook of a pod that stays returned in {:.1?}",
        started.elapsed()
    );
    assert_stays(
        &http,
        &url(&pods[1], "/v1/cluster"),
        &mut running[1],
        "quorumkv-1",
    );

    // The pod scaled away: its hook returns once its node has left and stopped answering.
    let started = Instant::now();
    let status = wait_exit(
        run_hook(3, Some(&api.url)),
        HAND_OFF,
        "the hook of quorumkv-3",
    );
    assert!(status.success(), "{}", hook_log(3));
    println!(
        "the hook of the pod scaled away returned in {:.1?}:\n{}",
        started.elapsed(),
        hook_log(3)
    );
    assert!(
        http.get(url(&pods[3], "/v1/health")).send().is_err(),
        "quorumkv-3 no longer answers once its hook returned"
    );
    let node = running[3].child.take().unwrap();
    let exit = wait_exit(node, Duration::from_secs(30), "quorumkv-3");
    assert!(exit.success(), "the node that left exits 0: {exit}");
    assert!(
        api.requests()
            .iter()
            .all(|auth| *auth == format!("Bearer {SERVICE_ACCOUNT_TOKEN}")),
        "the hook sends the service account token"
    );

    // The three others: balanced, three members, every key readable at r=2 from each.
    wait_balanced(&http, &pods[..3], port);
    for pod in &pods[..3] {
        for i in 0..KEYS {
            let response = http
                .get(url(pod, &format!("/v1/buckets/prestop/keys/k{i}?r=2")))
                .send()
                .unwrap();
            assert_eq!(response.status(), 200, "k{i} through {}", pod.name);
            assert_eq!(response.text().unwrap(), format!("value-{i}"));
        }
    }

    let grace = Duration::from_secs(30);
    for pod in running.iter_mut().take(3) {
        pod.stop(grace);
    }
}

/// Waits, bounded, until every one of `pods` reports a ring of exactly them, all active,
/// and no transfers pending.
fn wait_balanced(http: &reqwest::blocking::Client, pods: &[PodIdentity], port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<Option<Value>> = pods
            .iter()
            .map(|pod| {
                http.get(format!("http://{}:{port}/v1/cluster", pod.ip))
                    .send()
                    .ok()
                    .and_then(|r| r.json().ok())
            })
            .collect();
        let balanced = views.iter().all(|view| {
            view.as_ref().is_some_and(|v| {
                v["pending_transfers"] == 0
                    && v["members"].as_array().is_some_and(|m| {
                        m.len() == pods.len() && m.iter().all(|m| m["state"] == "active")
                    })
            })
        });
        if balanced {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not balanced within 60 s: {views:?}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// Asserts that `id` is still an active member (as the cluster view at `url` says) and
/// that its process still runs: a hook that did not leave left it alone.
fn assert_stays(http: &reqwest::blocking::Client, url: &str, pod: &mut RunningPod, id: &str) {
    assert_eq!(member_state(http, url, id), "active", "{id}");
    let process = pod.child.as_mut().unwrap();
    assert!(process.try_wait().unwrap().is_none(), "{id} still runs");
}

/// The state of member `id` in the cluster view at `url`.
fn member_state(http: &reqwest::blocking::Client, url: &str, id: &str) -> String {
    let view: Value = http.get(url).send().unwrap().json().unwrap();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| format!("absent from {view}"))
}

/// Waits, bounded, for `child` to exit; kills it and fails past `bound`.
fn wait_exit(mut child: Child, bound: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {bound:?}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// A stand-in for the Kubernetes API server: answers `GET` of one StatefulSet with its
/// replicas (or with the error status it is told to answer), on a loopback port, in a
/// thread that lives as long as the test process.
struct FakeKubeApi {
    url: String,
    status: Arc<AtomicU16>,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl FakeKubeApi {
    fn start(statefulset: &str, replicas: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(200));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{statefulset}");
        let (answer, seen) = (Arc::clone(&status), Arc::clone(&authorizations));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let mut authorization = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            authorization = value.trim().to_string();
                        }
                    }
                }
                seen.lock().unwrap().push(authorization.clone());
                let (code, body) = if request_line != format!("GET {path} HTTP/1.1\r\n") {
                    (
                        404,
                        r#"{"kind":"Status","message":"not found"}"#.to_string(),
                    )
                } else if authorization != format!("Bearer {SERVICE_ACCOUNT_TOKEN}") {
                    (
                        401,
                        r#"{"kind":"Status","message":"Unauthorized"}"#.to_string(),
                    )
                } else {
                    match answer.load(Ordering::SeqCst) {
                        200 => (200, format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#)),
                        code => (
                            code,
                            r#"{"kind":"Status","message":"injected"}"#.to_string(),
                        ),
                    }
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: \
                     {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            url,
            status,
            authorizations,
        }
    }

    /// Answers the StatefulSet with `status` from now on (200: its replicas).
    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The Authorization header of each request so far.
    fn requests(&self) -> Vec<String> {
        self.authorizations.lock().unwrap().clone()
    }
}
