//! The cluster harness: starts real `quorumkv` processes on loopback (or each on a host of
//! its own, see [`hosts`]), each with its own RocksDB directory, and drives them the way an
//! operator or a fault would: SIGKILL, SIGTERM, restart, a cut link. Every wait is bounded;
//! every process is killed when the harness is dropped, also when a test fails, and then
//! the tail of each node's log is printed.
//!
//! The binary is found next to the test executable's directory (`target/<profile>/`), or
//! at `$QUORUMKV_BIN`. `make test` builds it before the tests run.
//!
//! [`raw`] speaks HTTP over bare sockets, for the requests no HTTP client would send.
//! [`history`] records what clients saw and checks it; [`workload`] drives the clients
//! and the faults of the fault suite. [`kubelet`] starts the pods of the Kubernetes
//! StatefulSet as the kubelet would.
//!
//! Every cluster shares a cluster secret, as a real one must: the test's own if its flags
//! name a `--cluster-secret-file`, else one the harness makes. The harness's client sends
//! it, so that tests reach the internode and fault routes. Nodes started with `--tls-cert`
//! are reached over https, and the harness's client trusts their `--tls-ca`.

pub mod history;
pub mod hosts;
pub mod kubelet;
pub mod netns;
pub mod raw;
pub mod workload;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

/// The causal context header.
pub const CONTEXT: &str = "x-causal-context";

/// How long a node may take to start and see its peers.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `quorumkv` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUORUMKV_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/quorumkv
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join("quorumkv");
    assert!(
        path.exists(),
        "{} is missing: build it first (make test does) or set QUORUMKV_BIN",
        path.display()
    );
    path
}

/// The checkout under test: where the manifests, docs and sources the tests read are.
///
/// Taken from `CARGO_MANIFEST_DIR` as cargo sets it when it runs a test, and only failing
/// that from where the test was compiled: checkouts that share one target directory may
/// run a test binary another checkout built, whose compile-time path is that checkout's.
pub fn workspace_root() -> PathBuf {
    let tests = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    tests.join("..")
}

/// The ports test nodes listen on: below the kernel's ephemeral range (32768 and up by
/// default), so that no outgoing connection of this or another process can take a port
/// between the moment it is chosen and the moment the node binds it.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free port on 127.0.0.1 for a test node. Each test process starts at its own offset
/// (by process id) and hands out ports in order, checking each is free now; tests in one
/// process never get the same port, and processes rarely meet.
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// Like [`free_port`], for a node listening on `ip`.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(NODE_PORTS.end - NODE_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = NODE_PORTS.start + u16::try_from(offset).unwrap_or(0);
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {NODE_PORTS:?}");
}

/// Copies the directory tree `from` to `to`, creating `to`.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One node of a test cluster.
pub struct Node {
    /// Node id.
    pub id: String,
    /// `ip:port`: `127.0.0.1:port` unless the node has a host of its own.
    pub addr: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    seeds: Vec<String>,
    extra_args: Vec<String>,
    /// The command that runs the binary where the node lives (`ip netns exec <ns>`), or
    /// nothing to run it directly.
    launcher: Vec<OsString>,
    child: Option<Child>,
}

impl Node {
    /// Base URL, `http://127.0.0.1:port` (`https://` for a node started with `--tls-cert`).
    pub fn url(&self) -> String {
        let scheme = match flag_value(&self.extra_args, "--tls-cert") {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("open node log")?;
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        command
            .arg("serve")
            .arg("--node-id")
            .arg(&self.id)
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--seeds")
            .arg(self.seeds.join(","))
            .args(&self.extra_args)
            .env("QUORUMKV_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(command.spawn().context("spawn quorumkv")?);
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.id))?;
        let pid = i32::try_from(child.id()).context("pid")?;
        kill(Pid::from_raw(pid), signal).context("kill")?;
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().ok_or_else(|| anyhow!("not running"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.id);
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Everything the node has logged so far, across its restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A cluster of real nodes on loopback, or on hosts of their own.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    http: Client,
    _dir: tempfile::TempDir,
    /// Where the nodes live; dropped (namespaces deleted) after `drop` killed them.
    network: hosts::Network,
    /// The links cut by [`Cluster::partition`] and [`Cluster::cut_one_way`]: `(a, b)`
    /// means `a` cannot reach `b`.
    // A std Mutex: fault calls are rare and short.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
}

impl Cluster {
    /// Starts `size` nodes that know each other as seeds, and waits until every node sees
    /// every other one up.
    pub fn start(size: usize) -> Self {
        Self::start_with(size, &[])
    }

    /// Like [`Cluster::start`], with extra `serve` flags for every node.
    pub fn start_with(size: usize, extra_args: &[&str]) -> Self {
        Self::start_each(size, |_| extra_args.iter().map(|s| s.to_string()).collect())
    }

    /// Like [`Cluster::start`], with extra `serve` flags per node (`args_of(i)`).
    pub fn start_each(size: usize, args_of: impl Fn(usize) -> Vec<String>) -> Self {
        Self::start_inner(
            size,
            args_of,
            None,
            hosts::Network::Shared,
            &|_| None,
            &|_| None,
        )
    }

    /// Like [`Cluster::start_with`], with node `i`'s data directory at `data_dir_of(i)`
    /// when it names one (a small filesystem the test mounted, say), else in the cluster's
    /// own temporary directory.
    pub fn start_with_data_dirs(
        size: usize,
        extra_args: &[&str],
        data_dir_of: impl Fn(usize) -> Option<PathBuf>,
    ) -> Self {
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::start_inner(
            size,
            |_| args.clone(),
            None,
            hosts::Network::Shared,
            &data_dir_of,
            &|_| None,
        )
    }

    /// Like [`Cluster::start_with`], for nodes that require a client bearer token: the
    /// harness's own client sends `token` on every request.
    pub fn start_authenticated(size: usize, extra_args: &[&str], token: &str) -> Self {
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::start_inner(
            size,
            |_| args.clone(),
            Some(token),
            hosts::Network::Shared,
            &|_| None,
            &|_| None,
        )
    }

    /// Like [`Cluster::start`], with node `i`'s `--seeds` naming the nodes `seeds_of(i)`
    /// only (issue 2's contract: nodes started together may name only each other).
    pub fn start_seeded(size: usize, seeds_of: impl Fn(usize) -> Vec<usize>) -> Self {
        Self::start_inner(
            size,
            |_| Vec::new(),
            None,
            hosts::Network::Shared,
            &|_| None,
            &|i| Some(seeds_of(i)),
        )
    }

    fn start_inner(
        size: usize,
        args_of: impl Fn(usize) -> Vec<String>,
        token: Option<&str>,
        network: hosts::Network,
        data_dir_of: &dyn Fn(usize) -> Option<PathBuf>,
        seeds_of: &dyn Fn(usize) -> Option<Vec<usize>>,
    ) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("token header"),
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let own_secret =
            (0..size).any(|i| flag_value(&args_of(i), "--cluster-secret-file").is_some());
        let secret_file = dir.path().join("cluster-secret");
        if !own_secret {
            std::fs::write(&secret_file, random_secret()).expect("write the cluster secret");
        }
        let args_of = |i| {
            let mut args = args_of(i);
            if !own_secret {
                args.push("--cluster-secret-file".to_string());
                args.push(secret_file.display().to_string());
            }
            args
        };
        let addrs: Vec<String> = (0..size).map(|i| network.addr(i)).collect();
        let nodes = (0..size)
            .map(|i| Node {
                id: format!("node{}", i + 1),
                addr: addrs[i].clone(),
                data_dir: data_dir_of(i)
                    .unwrap_or_else(|| dir.path().join(format!("node{}", i + 1))),
                log_path: dir.path().join(format!("node{}.log", i + 1)),
                seeds: seeds_of(i).map_or_else(
                    || addrs.clone(),
                    |seeds| seeds.iter().map(|&j| addrs[j].clone()).collect(),
                ),
                extra_args: with_runtime_of(i, [args_of(i), network.node_args(i)].concat()),
                launcher: network.launcher(i),
                child: None,
            })
            .collect::<Vec<Node>>();
        let node_flag = |flag| flag_value(&nodes[0].extra_args, flag).map(PathBuf::from);
        if let Some(path) = node_flag("--cluster-secret-file") {
            let secret = std::fs::read_to_string(path).expect("read the cluster secret");
            headers.insert(
                "x-quorumkv-cluster-secret",
                secret.trim().parse().expect("secret header"),
            );
        }
        let mut http = Client::builder()
            .timeout(Duration::from_secs(30))
            // Nodes close idle connections after their header timeout (10 s by
            // default); let go of them first rather than race the close.
            .pool_idle_timeout(Duration::from_secs(5))
            .default_headers(headers);
        if let Some(path) = node_flag("--tls-ca") {
            let pem = std::fs::read(path).expect("read the CA certificates");
            for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("CA certificates") {
                http = http.add_root_certificate(cert);
            }
        }
        let mut cluster = Self {
            nodes,
            http: http.build().expect("http client"),
            _dir: dir,
            network,
            cuts: Mutex::default(),
        };
        for i in 0..size {
            cluster.nodes[i].spawn().expect("start node");
        }
        for i in 0..size {
            cluster.wait_ready(i).expect("cluster ready");
        }
        cluster
    }

    /// The HTTP client the harness uses.
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// The cluster secret the nodes share, for requests that call internode routes
    /// without the harness's client.
    pub fn cluster_secret(&self) -> String {
        let path = flag_value(&self.nodes[0].extra_args, "--cluster-secret-file")
            .expect("every harness cluster has a secret");
        let secret = std::fs::read_to_string(path).expect("read the cluster secret");
        secret.trim().to_string()
    }

    /// Base URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Waits until node `i` has formed its ring and sees every running node up.
    pub fn wait_ready(&self, i: usize) -> anyhow::Result<()> {
        let want_up: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id.as_str())
            .collect();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(view) = self.cluster_view(i) {
                let up: Vec<&str> = view["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter(|m| m["status"] == "up")
                            .filter_map(|m| m["id"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                if view["ready"] == true && want_up.iter().all(|id| up.contains(id)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not ready within {START_TIMEOUT:?}",
                    self.nodes[i].id
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `i` sees node `other` as `status` ("up" or "down").
    pub fn wait_member_status(&self, i: usize, other: usize, status: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(view) = self.cluster_view(i) {
                let seen = view["members"].as_array().and_then(|m| {
                    m.iter()
                        .find(|m| m["id"] == self.nodes[other].id.as_str())
                        .map(|m| m["status"] == status)
                });
                if seen == Some(true) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {i} never saw node {other} {status}");
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `GET /v1/cluster` of node `i`.
    pub fn cluster_view(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}/v1/cluster", self.url(i)))
            .timeout(Duration::from_secs(2))
            .send()?
            .json()?)
    }

    /// SIGKILL node `i` (no flush, no goodbye).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].signal(Signal::SIGKILL).expect("SIGKILL");
        self.nodes[i]
            .wait_exit(Duration::from_secs(10))
            .expect("killed node exits");
    }

    /// SIGTERM node `i` and returns its exit status.
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        self.nodes[i].signal(Signal::SIGTERM).expect("SIGTERM");
        self.nodes[i]
            .wait_exit(Duration::from_secs(30))
            .expect("terminated node exits")
    }

    /// Starts node `i` again with the same id and data directory, and waits until it is ready
    /// and every other running node sees it up again (their failure detectors marked it
    /// down while it was gone).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn().expect("restart node");
        self.wait_ready(i).expect("restarted node ready");
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].is_running() {
                self.wait_member_status(j, i, "up")
                    .expect("peers see the restarted node up");
            }
        }
    }

    /// Stops node `i` cleanly, copies its data directory (a backup of a stopped node, as an
    /// operator copies a volume), restarts it, and returns where the copy is.
    pub fn back_up(&mut self, i: usize) -> PathBuf {
        assert!(
            self.terminate(i).success(),
            "node {i} stops cleanly for its backup"
        );
        let copy = self
            ._dir
            .path()
            .join(format!("{}.backup", self.nodes[i].id));
        if copy.exists() {
            std::fs::remove_dir_all(&copy).expect("remove an earlier backup");
        }
        copy_dir(&self.nodes[i].data_dir, &copy).expect("copy the data directory");
        self.restart(i);
        copy
    }

    /// Stops node `i` cleanly, replaces its data directory with `copy` (from
    /// [`Cluster::back_up`]), and restarts it on the restored state.
    pub fn restore(&mut self, i: usize, copy: &Path) {
        assert!(
            self.terminate(i).success(),
            "node {i} stops cleanly for its restore"
        );
        std::fs::remove_dir_all(&self.nodes[i].data_dir).expect("remove the data directory");
        copy_dir(copy, &self.nodes[i].data_dir).expect("restore the data directory");
        self.restart(i);
    }

    /// Starts one more node, `node<k>`, whose seeds are the nodes `seeds` only (not itself,
    /// so it joins the running cluster rather than founding one), with node 0's flags plus
    /// `extra_args`. Returns its index; does not wait for it.
    pub fn join(&mut self, seeds: &[usize], extra_args: &[&str]) -> usize {
        let i = self.nodes.len();
        let addr = self.network.addr(i);
        let args = with_runtime_of(
            i,
            self.nodes[0]
                .extra_args
                .iter()
                .cloned()
                .chain(extra_args.iter().map(|s| s.to_string()))
                .collect(),
        );
        let dir = self._dir.path();
        self.nodes.push(Node {
            id: format!("node{}", i + 1),
            addr,
            data_dir: dir.join(format!("node{}", i + 1)),
            log_path: dir.join(format!("node{}.log", i + 1)),
            seeds: seeds.iter().map(|&s| self.nodes[s].addr.clone()).collect(),
            extra_args: args,
            launcher: self.network.launcher(i),
            child: None,
        });
        self.nodes[i].spawn().expect("start joining node");
        i
    }

    /// Waits until node `i` exits by itself (a node that left the cluster) and returns its
    /// exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> ExitStatus {
        self.nodes[i]
            .wait_exit(timeout)
            .expect("node exits by itself")
    }

    /// Pauses node `i` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal(Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Sends node `i` a SIGHUP, which makes it read its credential files again, and waits
    /// (at most 10 s) until it has: returns the outcome, `"applied"` or `"refused"` (its
    /// `quorumkv_credential_reloads_total`). The harness's token must stay good.
    pub fn reload_credentials(&mut self, i: usize) -> &'static str {
        const NAME: &str = "quorumkv_credential_reloads_total";
        let count = |cluster: &Self, outcome: &str| {
            cluster.metric(i, NAME, &format!("outcome=\"{outcome}\""))
        };
        let before = (count(self, "applied"), count(self, "refused"));
        self.nodes[i].signal(Signal::SIGHUP).expect("SIGHUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if count(self, "applied") > before.0 {
                return "applied";
            }
            if count(self, "refused") > before.1 {
                return "refused";
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node {i} did not read its credentials again within 10 s");
    }

    /// Resumes a paused node (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(Signal::SIGCONT).expect("SIGCONT");
    }

    /// Cuts node `i`'s internode sends to the nodes in `peers` (the node must run with
    /// `--fault-injection`); an empty list heals.
    pub fn cut(&self, i: usize, peers: &[usize]) {
        let blocked: Vec<&str> = peers.iter().map(|&p| self.nodes[p].addr.as_str()).collect();
        let body = serde_json::json!({ "blocked": blocked });
        self.set_fault_switch(i, "partition", &body, &format!("fault switch of node {i}"));
    }

    /// `PUT /internal/v1/fault/{switch}` on node `i` with `body`; asserts the 204, naming
    /// `what` if it does not come.
    fn set_fault_switch(&self, i: usize, switch: &str, body: &serde_json::Value, what: &str) {
        let response = self
            .http
            .put(format!("{}/internal/v1/fault/{switch}", self.url(i)))
            .json(body)
            .send()
            .expect("fault switch");
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{what}");
    }

    /// Waits until nodes `nodes` each see `members` members, all active, and nothing
    /// pending; panics after `bound`.
    pub fn wait_balanced(&self, nodes: &[usize], members: usize, bound: Duration) {
        let started = Instant::now();
        loop {
            let balanced = nodes.iter().all(|&i| {
                self.cluster_view(i).is_ok_and(|view| {
                    view["pending_transfers"] == 0
                        && view["members"].as_array().is_some_and(|m| {
                            m.len() == members && m.iter().all(|m| m["state"] == "active")
                        })
                })
            });
            if balanced {
                return;
            }
            assert!(
                started.elapsed() < bound,
                "nodes {nodes:?} not balanced with {members} members within {bound:?}"
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Plants the replica bug `fault` (a `PUT /internal/v1/fault/replica` name) on node
    /// `i`, which must run with `--fault-injection`.
    pub fn plant_fault(&self, i: usize, fault: &str) {
        let body = serde_json::json!({ "fault": fault });
        self.set_fault_switch(i, "replica", &body, &format!("plant {fault} on node {i}"));
    }

    /// Node `i`'s own copy of `bucket`/`key` (`local=true`): its value, or `None` when
    /// that replica holds no live value; siblings come back as the sorted list.
    pub fn local_values(&self, i: usize, bucket: &str, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        let response = self.get(i, bucket, key, "local=true");
        match response.status() {
            StatusCode::OK => Some(vec![response.bytes().expect("body").to_vec()]),
            StatusCode::MULTIPLE_CHOICES => Some(siblings_of(response)),
            _ => None,
        }
    }

    /// Starts node `i` again without waiting for its peers (they may be down).
    pub fn restart_alone(&mut self, i: usize) {
        self.nodes[i].spawn().expect("restart node");
    }

    /// The URL of `bucket`/`key` on node `i` (the key is percent-encoded byte by byte).
    pub fn key_url(&self, i: usize, bucket: &str, key: &[u8]) -> String {
        format!(
            "{}/v1/buckets/{}/keys/{}",
            self.url(i),
            bucket,
            percent_encode(key, NON_ALPHANUMERIC)
        )
    }

    /// PUT `value` at node `i` with `query` (e.g. `"w=2"`) and an optional context.
    pub fn put(
        &self,
        i: usize,
        bucket: &str,
        key: &[u8],
        value: &[u8],
        query: &str,
        context: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .put(with_query(self.key_url(i, bucket, key), query))
            .header("content-type", "application/octet-stream")
            .body(value.to_vec());
        if let Some(context) = context {
            request = request.header(CONTEXT, context);
        }
        request.send().expect("PUT")
    }

    /// GET at node `i` with `query` (e.g. `"r=2"`).
    pub fn get(&self, i: usize, bucket: &str, key: &[u8], query: &str) -> Response {
        self.http
            .get(with_query(self.key_url(i, bucket, key), query))
            .send()
            .expect("GET")
    }

    /// DELETE at node `i`.
    pub fn delete(
        &self,
        i: usize,
        bucket: &str,
        key: &[u8],
        query: &str,
        context: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .delete(with_query(self.key_url(i, bucket, key), query));
        if let Some(context) = context {
            request = request.header(CONTEXT, context);
        }
        request.send().expect("DELETE")
    }

    /// The value of a Prometheus counter or gauge on node `i` (summed over label sets whose
    /// text contains `label_filter`), or 0 when absent.
    pub fn metric(&self, i: usize, name: &str, label_filter: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(i)))
            .send()
            .and_then(Response::text)
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if failing {
                eprintln!(
                    "---- last log lines of {} ----\n{}",
                    node.id,
                    node.log_tail(40)
                );
            }
        }
    }
}

/// Runs `quorumkv serve` with `args`, expecting it to refuse to start: returns its
/// standard error once it has exited non-zero. A node that starts instead is killed
/// within the start timeout (20 s), and the test fails. No `QUORUMKV_*` variable set
/// around the test reaches the node: it would win over a configuration file and could
/// hide the error the test expects.
pub fn serve_refusal(args: &[&str]) -> String {
    use std::io::Read as _;
    let mut command = Command::new(binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("QUORUMKV_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("serve")
        .args(args)
        .env("QUORUMKV_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quorumkv");
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for quorumkv") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quorumkv serve {args:?} started instead of refusing");
        }
        sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "{args:?} exited 0: {stderr}");
    stderr
}

/// Node `i`'s flags, given one worker thread when `i` is odd and the test did not choose.
///
/// A node with one worker runs tokio's current-thread scheduler, and one with more the
/// multi-threaded one (`serve::main`). `make run`, the benchmarks and a pod with one core
/// run the first, a node with the cores of a machine the second: every cluster of two or
/// more nodes here mixes both, so the suite covers each, and nodes of the two kinds
/// talking to each other.
fn with_runtime_of(i: usize, mut args: Vec<String>) -> Vec<String> {
    if i % 2 == 1 && flag_value(&args, "--worker-threads").is_none() {
        args.extend(["--worker-threads".to_string(), "1".to_string()]);
    }
    args
}

/// The value of `flag` in `args` (`--flag value` or `--flag=value`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

/// 32 random hex digits, for a cluster secret.
fn random_secret() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends a query string when there is one.
pub fn with_query(url: String, query: &str) -> String {
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// The body of an error response: (status, error code).
pub fn error_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    (status, body["error"].as_str().unwrap_or("").to_string())
}

/// The causal context header of a response.
pub fn context_of(response: &Response) -> Option<String> {
    response
        .headers()
        .get(CONTEXT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The sibling values of a 300 response, sorted.
pub fn siblings_of(response: Response) -> Vec<Vec<u8>> {
    use base64::Engine;
    let body: serde_json::Value = response.json().expect("siblings JSON");
    let mut values: Vec<Vec<u8>> = body["siblings"]
        .as_array()
        .expect("siblings array")
        .iter()
        .map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s["value_base64"].as_str().expect("value_base64"))
                .expect("base64")
        })
        .collect();
    values.sort();
    values
}
