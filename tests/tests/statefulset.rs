//! The Kubernetes StatefulSet, started here: three local `quorumkv` processes launched
//! exactly as the kubelet would launch the pods of `deploy/k8s/base/statefulset.yaml` from
//! the image of `deploy/docker/Dockerfile`, and checked to form one ring.
//!
//! What is taken as is, from the two files:
//! - the command line: the container's `command`/`args`, or else the image's
//!   `ENTRYPOINT`/`CMD`, with `$(VAR)` references expanded as Kubernetes does;
//! - the environment: only the image's `ENV` and the container's `env` (in order, each value
//!   expanded against the variables before it), the downward-API fields filled in for
//!   the pod, nothing inherited from the test process;
//! - the probes: each readiness, liveness and startup probe is sent as the kubelet sends
//!   it, and the image's `HEALTHCHECK` command is run;
//! - the stop: SIGTERM, and the process must exit 0 within the grace period.
//!
//! What is mapped, because this machine has no cluster and no DNS for it:
//! - each pod gets an address of its own on loopback (`127.a.b.N`, one per pod, the port
//!   unchanged) standing for its pod IP, so `0.0.0.0` (every interface of the pod) becomes
//!   that address, and so does `127.0.0.1` in the commands the kubelet runs inside the pod;
//! - each pod's stable DNS name from the headless Service
//!   (`<pod>.<service>.<namespace>.svc[.cluster.local]`) is replaced by that address in the
//!   environment, as the cluster's DNS would resolve it;
//! - each volume mount (the PersistentVolume, the Secret) is a directory of the test.
//!
//! A variable or argument the server does not accept therefore fails here before it can
//! fail in a cluster.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorumkv_tests::binary;
use serde_json::Value;

/// How long the pods may take to start and form their ring.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace the pods are imagined in.
const NAMESPACE: &str = "quorumkv";
/// The client token this test puts in the pods' Secret volume.
const TEST_TOKEN: &str = "client-token-of-the-statefulset-test";

#[test]
fn three_nodes_started_as_the_statefulset_starts_them_form_one_ring() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/k8s/base/statefulset.yaml")).unwrap(),
    )
    .unwrap();
    let image =
        Image::parse(&std::fs::read_to_string(root.join("deploy/docker/Dockerfile")).unwrap());
    let spec = &manifest["spec"];
    let pod_spec = &spec["template"]["spec"];
    let containers = pod_spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container per pod");
    let container = &containers[0];
    assert_eq!(
        pod_spec["enableServiceLinks"], false,
        "Kubernetes would add QUORUMKV_SERVICE_HOST, QUORUMKV_PORT, ... for the Service \
         named quorumkv, in the server's own variable namespace"
    );

    let replicas = usize::try_from(spec["replicas"].as_u64().unwrap()).unwrap();
    let statefulset = manifest["metadata"]["name"].as_str().unwrap();
    let service = spec["serviceName"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base_ip = free_loopback_base(container_port(container, "http"));
    let pods: Vec<PodIdentity> = (0..replicas)
        .map(|ordinal| PodIdentity {
            name: format!("{statefulset}-{ordinal}"),
            ip: Ipv4Addr::from(u32::from(base_ip) + ordinal as u32 + 1),
            zone: format!("zone-{}", (b'a' + ordinal as u8) as char),
            dir: dir.path().join(format!("{statefulset}-{ordinal}")),
        })
        .collect();
    let dns: Vec<(String, String)> = pods
        .iter()
        .flat_map(|pod| {
            let short = format!("{}.{service}", pod.name);
            // The longest names first, so that a shorter one never cuts a longer one.
            [
                format!("{short}.{NAMESPACE}.svc.cluster.local"),
                format!("{short}.{NAMESPACE}.svc"),
                format!("{short}.{NAMESPACE}"),
                short,
            ]
            .map(|name| (name, pod.ip.to_string()))
        })
        .collect();

    // The kubelet fills each Secret volume with one file per key of the Secret; the keys
    // are those the overlay generates the Secret from, the values are this test's own.
    let secret_keys: Vec<String> =
        std::fs::read_to_string(root.join("deploy/k8s/overlays/example/secrets.env"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
    let secret_value = |key: &str| match key {
        "auth-token" => TEST_TOKEN.to_string(),
        other => format!("{other}-value-of-the-statefulset-test"),
    };
    for pod in &pods {
        for volume in pod_spec["volumes"].as_array().into_iter().flatten() {
            if volume.get("secret").is_some() {
                let dir = pod
                    .dir
                    .join("volumes")
                    .join(volume["name"].as_str().unwrap());
                std::fs::create_dir_all(&dir).unwrap();
                for key in &secret_keys {
                    std::fs::write(dir.join(key), secret_value(key)).unwrap();
                }
            }
        }
    }

    let mut running: Vec<RunningPod> = pods
        .iter()
        .map(|pod| {
            let launch = Launch::of(container, &image, pod, &dns);
            launch.spawn(pod)
        })
        .collect();

    // Clients authenticate with the token from the Secret; the probes need none.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TEST_TOKEN}").parse().unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .default_headers(headers)
        .build()
        .unwrap();
    let probe_port = container_port(container, "http");
    for pod in &mut running {
        wait_for_probe(&http, container, "readinessProbe", pod, probe_port);
        for probe in ["livenessProbe", "startupProbe"] {
            assert_eq!(
                probe_status(&http, container, probe, pod, probe_port),
                Some(200),
                "{probe} of {}",
                pod.identity.name
            );
        }
    }

    // One ring: every node ready, every member up, the same members at the same addresses
    // and the same ownership everywhere.
    let want: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (p.name.clone(), format!("{}:{probe_port}", p.ip)))
        .collect();
    let mut views = Vec::new();
    for pod in &running {
        let url = format!("http://{}:{probe_port}/v1/cluster", pod.identity.ip);
        let view: Value = http.get(url).send().unwrap().json().unwrap();
        assert_eq!(view["ready"], true, "{view}");
        assert_eq!(
            view["node"],
            pod.identity.name.as_str(),
            "the node id is the pod name"
        );
        let members = view["members"].as_array().unwrap();
        let seen: BTreeMap<String, String> = members
            .iter()
            .map(|m| {
                assert_eq!(m["status"], "up", "{view}");
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["addr"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(seen, want, "members as {} sees them", pod.identity.name);
        let ownership: BTreeMap<String, u64> = members
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["ownership"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ownership.values().sum::<u64>(),
            view["partitions"].as_u64().unwrap(),
            "every partition has an owner"
        );
        views.push(ownership);
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "every node computes the same ring: {views:?}"
    );

    // A write through one pod is read back through another, at the default quorums.
    let put = http
        .put(format!(
            "http://{}:{probe_port}/v1/buckets/k8s/keys/hello",
            pods[0].ip
        ))
        .body("world")
        .send()
        .unwrap();
    assert_eq!(put.status(), 204);
    let get = http
        .get(format!(
            "http://{}:{probe_port}/v1/buckets/k8s/keys/hello",
            pods[2].ip
        ))
        .send()
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().unwrap(), "world");

    // The image's HEALTHCHECK, run inside the first pod.
    let healthcheck = image
        .healthcheck
        .as_ref()
        .expect("the image declares a HEALTHCHECK");
    let launch = Launch::of(container, &image, &pods[0], &dns);
    let status = Command::new(resolve_program(&healthcheck[0]))
        .args(healthcheck[1..].iter().map(|a| in_pod(a, &pods[0])))
        .env_clear()
        .envs(launch.env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "HEALTHCHECK failed: {status}");

    // Stop as Kubernetes stops a pod (SIGTERM; the preStop hook needs `cluster leave`, see
    // deploy/k8s/README.md): each node drains and exits 0 within the grace period.
    let grace = Duration::from_secs(pod_spec["terminationGracePeriodSeconds"].as_u64().unwrap())
        .min(Duration::from_secs(30));
    for pod in &mut running {
        pod.stop(grace);
    }
}

/// Who a pod is: its name, its pod IP (a loopback address here), its zone, its volumes.
struct PodIdentity {
    name: String,
    ip: Ipv4Addr,
    zone: String,
    dir: PathBuf,
}

/// The image's configuration, from the final stage of the Dockerfile.
struct Image {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Option<Vec<String>>,
}

impl Image {
    fn parse(dockerfile: &str) -> Self {
        let joined = dockerfile.replace("\\\n", " ");
        let mut image = Self {
            env: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            healthcheck: None,
        };
        for line in joined.lines().map(str::trim) {
            let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
            match instruction {
                // A new stage starts from nothing (the runtime stage is the last one).
                "FROM" => {
                    image = Self {
                        env: Vec::new(),
                        entrypoint: Vec::new(),
                        cmd: Vec::new(),
                        healthcheck: None,
                    }
                }
                "ENV" => {
                    let (name, value) = rest
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {rest}: write one NAME=value per ENV"));
                    assert!(!value.contains(' '), "ENV {rest}: one NAME=value per ENV");
                    image.env.push((name.to_string(), value.to_string()));
                }
                "ENTRYPOINT" => image.entrypoint = exec_form(rest),
                "CMD" => image.cmd = exec_form(rest),
                "HEALTHCHECK" => {
                    let command = rest
                        .split_once("CMD ")
                        .map(|(_, c)| c)
                        .expect("HEALTHCHECK ... CMD [...]");
                    image.healthcheck = Some(exec_form(command));
                }
                _ => {}
            }
        }
        assert!(!image.entrypoint.is_empty(), "the image has an ENTRYPOINT");
        image
    }
}

fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{text}: use the exec (JSON array) form: {e}"))
}

/// One pod's process: the program, its arguments and its whole environment.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// What the kubelet runs for `container` of `pod` from `image`, mapped to this machine.
    fn of(container: &Value, image: &Image, pod: &PodIdentity, dns: &[(String, String)]) -> Self {
        // The container's own variables, expanded in order as Kubernetes does.
        let mut defined: Vec<(String, String)> = Vec::new();
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap().to_string();
            let value = if let Some(value) = var["value"].as_str() {
                expand(value, &defined)
            } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                downward_field(field, pod)
            } else {
                panic!("{name}: the test does not know how Kubernetes fills {var}; teach it");
            };
            defined.retain(|(n, _)| *n != name);
            defined.push((name, value));
        }
        // The container sees the image's variables, overridden by its own.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        env.insert("HOSTNAME".into(), pod.name.clone());
        env.extend(image.env.iter().cloned());
        env.extend(defined.iter().cloned());
        let mounts = volume_mounts(container, pod);
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(name, value)| {
                let value = map_to_this_machine(&value, pod, dns, &mounts);
                (name, value)
            })
            .collect();

        // Kubernetes: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.
        let (entrypoint, cmd) = match (container.get("command"), container.get("args")) {
            (Some(command), args) => (strings(command), args.map(strings).unwrap_or_default()),
            (None, Some(args)) => (image.entrypoint.clone(), strings(args)),
            (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
        };
        let mut argv: Vec<String> = entrypoint
            .into_iter()
            .chain(cmd)
            .map(|a| expand(&a, &defined))
            .map(|a| map_to_this_machine(&a, pod, dns, &mounts))
            .collect();
        let program = resolve_program(&argv.remove(0));
        Self {
            program,
            args: argv,
            env,
        }
    }

    fn spawn(self, pod: &PodIdentity) -> RunningPod {
        std::fs::create_dir_all(&pod.dir).unwrap();
        let log_path = pod.dir.join("pod.log");
        let log = File::create(&log_path).unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        RunningPod {
            identity: PodIdentity {
                name: pod.name.clone(),
                ip: pod.ip,
                zone: pod.zone.clone(),
                dir: pod.dir.clone(),
            },
            child: Some(child),
            log_path,
        }
    }
}

/// A started pod; killed when dropped, its log printed when the test failed.
struct RunningPod {
    identity: PodIdentity,
    child: Option<Child>,
    log_path: PathBuf,
}

impl RunningPod {
    /// SIGTERM, then waits for exit 0 within `grace`.
    fn stop(&mut self, grace: Duration) {
        let child = self.child.as_mut().unwrap();
        kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap()),
            Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {grace:?}",
                self.identity.name
            );
            sleep(Duration::from_millis(50));
        };
        self.child = None;
        assert!(
            status.success(),
            "{} exited with {status}",
            self.identity.name
        );
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- last log lines of {} ----\n{}",
                self.identity.name,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: a reference to a variable defined before is replaced,
/// `$$` is a literal `$`, anything else is left as written.
fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match defined.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[at..at + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What the downward API gives the pod.
fn downward_field(field: &str, pod: &PodIdentity) -> String {
    match field {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => NAMESPACE.to_string(),
        "status.podIP" => pod.ip.to_string(),
        // Copied from the Node's label where the cluster does so (see the manifest).
        "metadata.labels['topology.kubernetes.io/zone']" => pod.zone.clone(),
        other => panic!("the test does not know the downward-API field {other}; teach it"),
    }
}

/// The volume mounts of the container as (mount path, directory of this pod).
fn volume_mounts(container: &Value, pod: &PodIdentity) -> Vec<(String, PathBuf)> {
    container["volumeMounts"]
        .as_array()
        .map(|mounts| {
            mounts
                .iter()
                .map(|m| {
                    let dir = pod.dir.join("volumes").join(m["name"].as_str().unwrap());
                    std::fs::create_dir_all(&dir).unwrap();
                    (m["mountPath"].as_str().unwrap().to_string(), dir)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A value as the pod would see it, with its cluster addresses and paths replaced by
/// their stand-ins on this machine (see the module docs).
fn map_to_this_machine(
    value: &str,
    pod: &PodIdentity,
    dns: &[(String, String)],
    mounts: &[(String, PathBuf)],
) -> String {
    let mut value = value.replace("0.0.0.0:", &format!("{}:", pod.ip));
    for (name, ip) in dns {
        value = value.replace(name.as_str(), ip);
    }
    for (path, dir) in mounts {
        if value == *path || value.starts_with(&format!("{path}/")) {
            value = format!("{}{}", dir.display(), &value[path.len()..]);
        }
    }
    value
}

/// An argument of a command run inside the pod: its loopback is the pod's own.
fn in_pod(arg: &str, pod: &PodIdentity) -> String {
    arg.replace("127.0.0.1:", &format!("{}:", pod.ip))
}

/// The image's `quorumkv` is the binary under test; anything else must be on the PATH.
fn resolve_program(name: &str) -> PathBuf {
    match name {
        "quorumkv" | "/usr/local/bin/quorumkv" => binary(),
        other => panic!("the image runs {other}, which the test does not know"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The container port named `name`.
fn container_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// A base `127.a.b.0` whose next addresses have `port` free, chosen per run so that two
/// runs on one machine do not meet.
fn free_loopback_base(port: u16) -> Ipv4Addr {
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    for attempt in 0..64u32 {
        let mix = seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9));
        let base = Ipv4Addr::new(
            127,
            100 + (mix % 100) as u8,
            ((mix >> 8) % 250) as u8 + 1,
            0,
        );
        let free = (1..=8u32).all(|i| {
            let ip = Ipv4Addr::from(u32::from(base) + i);
            TcpListener::bind(SocketAddr::from((ip, port))).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free loopback range for port {port}");
}

/// The status the kubelet's HTTP probe `probe` of the container gets from `pod`, or `None`
/// when nothing answered.
fn probe_status(
    http: &reqwest::blocking::Client,
    container: &Value,
    probe: &str,
    pod: &RunningPod,
    named_port: u16,
) -> Option<u16> {
    let get = &container[probe]["httpGet"];
    let path = get["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{probe} is an HTTP GET"));
    let port = match &get["port"] {
        Value::Number(n) => u16::try_from(n.as_u64().unwrap()).unwrap(),
        Value::String(_) => named_port,
        other => panic!("{probe} port {other}"),
    };
    let url = format!("http://{}:{port}{path}", pod.identity.ip);
    http.get(url).send().ok().map(|r| r.status().as_u16())
}

/// Waits, bounded, until `probe` answers 200 (the kubelet counts 200..400 as success; the
/// server's answers are 200 or an error).
fn wait_for_probe(
    http: &reqwest::blocking::Client,
    container: &Value,
    probe: &str,
    pod: &mut RunningPod,
    named_port: u16,
) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let status = probe_status(http, container, probe, pod, named_port);
        if status == Some(200) {
            return;
        }
        if let Some(exit) = pod.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "{} exited with {exit} before it was ready",
                pod.identity.name
            );
        }
        assert!(
            Instant::now() < deadline,
            "{probe} of {} still answers {status:?} after {READY_TIMEOUT:?}",
            pod.identity.name
        );
        sleep(Duration::from_millis(100));
    }
}
