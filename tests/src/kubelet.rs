//! The kubelet, as far as the StatefulSet tests need it: starts the pods of
//! `deploy/k8s/base/statefulset.yaml` from the image of `deploy/docker/Dockerfile` as local
//! `quorumkv` processes, sends their probes, runs commands inside them (the HEALTHCHECK,
//! the preStop hook) and stops them.
//!
//! What is taken as is, from the two files:
//! - the command line: the container's `command`/`args`, or else the image's
//!   `ENTRYPOINT`/`CMD`, with `$(VAR)` references expanded as Kubernetes does;
//! - the environment: only the image's `ENV` and the container's `env` (in order, each value
//!   expanded against the variables before it), the downward-API fields filled in for
//!   the pod, nothing inherited from the test process;
//! - the probes: each readiness, liveness and startup probe is sent as the kubelet sends
//!   it, and commands run inside a pod get its environment;
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
use serde_json::Value;

use crate::binary;

/// How long the pods may take to start and form their ring.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace the pods are imagined in.
pub const NAMESPACE: &str = "quorumkv";

/// The identities of the first `replicas` pods of `statefulset`, each on an address of its
/// own and with its directory under `dir`.
pub fn pod_identities(
    statefulset: &str,
    replicas: usize,
    port: u16,
    dir: &Path,
) -> Vec<PodIdentity> {
    let base_ip = free_loopback_base(port);
    (0..replicas)
        .map(|ordinal| PodIdentity {
            name: format!("{statefulset}-{ordinal}"),
            ip: Ipv4Addr::from(u32::from(base_ip) + ordinal as u32 + 1),
            zone: format!("zone-{}", (b'a' + ordinal as u8) as char),
            dir: dir.join(format!("{statefulset}-{ordinal}")),
        })
        .collect()
}

/// Each pod's DNS names under the headless `service`, with the address it resolves to.
pub fn cluster_dns(pods: &[PodIdentity], service: &str) -> Vec<(String, String)> {
    pods.iter()
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
        .collect()
}

/// The keys of the Secret the example overlay generates (its `secrets.env`).
pub fn secret_keys(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("deploy/k8s/overlays/example/secrets.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// Fills each Secret volume of each pod as the kubelet does: one file per key.
pub fn fill_secret_volumes(
    pod_spec: &Value,
    pods: &[PodIdentity],
    keys: &[String],
    value: impl Fn(&str) -> String,
) {
    for pod in pods {
        for volume in pod_spec["volumes"].as_array().into_iter().flatten() {
            if volume.get("secret").is_some() {
                let dir = pod
                    .dir
                    .join("volumes")
                    .join(volume["name"].as_str().unwrap());
                std::fs::create_dir_all(&dir).unwrap();
                for key in keys {
                    std::fs::write(dir.join(key), value(key)).unwrap();
                }
            }
        }
    }
}

/// Who a pod is: its name, its pod IP (a loopback address here), its zone, its volumes.
pub struct PodIdentity {
    /// `<statefulset>-<ordinal>`.
    pub name: String,
    /// Its pod IP: an address of its own on loopback.
    pub ip: Ipv4Addr,
    /// The zone label the pod gets from its Node.
    pub zone: String,
    /// The directory of its volumes and log.
    pub dir: PathBuf,
}

/// The image's configuration, from the final stage of the Dockerfile.
pub struct Image {
    /// `ENV`, in order.
    pub env: Vec<(String, String)>,
    /// `ENTRYPOINT`, exec form.
    pub entrypoint: Vec<String>,
    /// `CMD`, exec form.
    pub cmd: Vec<String>,
    /// The command of `HEALTHCHECK`, if any.
    pub healthcheck: Option<Vec<String>>,
}

impl Image {
    /// The final stage's configuration of a Dockerfile.
    pub fn parse(dockerfile: &str) -> Self {
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

/// A JSON-array (exec form) instruction argument.
pub fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{text}: use the exec (JSON array) form: {e}"))
}

/// One pod's process: the program, its arguments and its whole environment.
pub struct Launch {
    /// The program, resolved on this machine.
    pub program: PathBuf,
    /// Its arguments, mapped to this machine.
    pub args: Vec<String>,
    /// The container's whole environment, mapped to this machine.
    pub env: Vec<(String, String)>,
    /// The volume mounts as (mount path, directory of this pod).
    pub mounts: Vec<(String, PathBuf)>,
}

impl Launch {
    /// What the kubelet runs for `container` of `pod` from `image`, mapped to this machine.
    pub fn of(
        container: &Value,
        image: &Image,
        pod: &PodIdentity,
        dns: &[(String, String)],
    ) -> Self {
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
            mounts,
        }
    }

    /// A command the kubelet runs inside the running container (an exec probe or hook,
    /// the image's HEALTHCHECK): the container's environment, its loopback and volumes
    /// mapped to this pod's.
    pub fn exec(&self, command: &[String], pod: &PodIdentity) -> Command {
        let mut process = Command::new(resolve_program(&command[0]));
        process
            .args(
                command[1..]
                    .iter()
                    .map(|a| map_to_this_machine(&in_pod(a, pod), pod, &[], &self.mounts)),
            )
            .env_clear()
            .envs(self.env.iter().cloned());
        process
    }

    /// Starts the pod's process, its output in `pod.log` of its directory.
    pub fn spawn(self, pod: &PodIdentity) -> RunningPod {
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
pub struct RunningPod {
    /// Which pod.
    pub identity: PodIdentity,
    /// Its process, until it was seen to exit.
    pub child: Option<Child>,
    /// Its output.
    pub log_path: PathBuf,
}

impl RunningPod {
    /// SIGTERM, then waits for exit 0 within `grace`.
    pub fn stop(&mut self, grace: Duration) {
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
pub fn expand(value: &str, defined: &[(String, String)]) -> String {
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
pub fn downward_field(field: &str, pod: &PodIdentity) -> String {
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
pub fn volume_mounts(container: &Value, pod: &PodIdentity) -> Vec<(String, PathBuf)> {
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
pub fn map_to_this_machine(
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
pub fn in_pod(arg: &str, pod: &PodIdentity) -> String {
    arg.replace("127.0.0.1:", &format!("{}:", pod.ip))
}

/// The image's `quorumkv` is the binary under test; anything else must be on the PATH.
pub fn resolve_program(name: &str) -> PathBuf {
    match name {
        "quorumkv" | "/usr/local/bin/quorumkv" => binary(),
        other => panic!("the image runs {other}, which the test does not know"),
    }
}

/// The strings of a YAML list.
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The container port named `name`.
pub fn container_port(container: &Value, name: &str) -> u16 {
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
pub fn free_loopback_base(port: u16) -> Ipv4Addr {
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
pub fn probe_status(
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

/// An HTTP client that sends `token` as a bearer token on every request, as a client
/// reading the pods' Secret would (the probes need none).
pub fn client_with_token(token: &str, timeout: Duration) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token is a header value"),
    );
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// Waits, bounded, until `probe` answers 200 (the kubelet counts 200..400 as success; the
/// server's answers are 200 or an error).
pub fn wait_for_probe(
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
