//! Network namespaces for the cluster harness: every node on a host of its own, so that
//! network faults act on real links, outside the node under test.
//!
//! # Layout
//! A Linux bridge in the test's own (root) namespace holds the host address
//! `10.A.B.254/24`. Node `i` runs in a namespace of its own whose only link, `eth0`, is
//! one end of a veth pair at `10.A.B.(i+1)/24`; the other end is a port of the bridge.
//! The test process reaches every node through the bridge, and the nodes reach each other
//! through it, each calling from its own address (`--internode-source-ip`). Every node
//! listens on [`NODE_PORT`]: each namespace has a port space of its own. `ip netns exec`
//! execs the node, so the child's pid is the node's and signals reach it directly.
//!
//! # Names
//! A network is tagged `<pid>x<n>` (both hex): the test process's id and a counter of the
//! networks it made. The bridge is `qb<tag>`, node `i`'s namespace `qk<tag>n<i>` and the
//! bridge end of its veth `qv<tag>n<i>`, all within the kernel's 15 bytes for an interface
//! name. The /24 is drawn from the tag and checked against the root namespace's routes and
//! addresses, before the bridge takes it and again after, so that the clusters of parallel
//! tests and processes never share one. A process killed before it cleaned up (SIGKILL, a
//! CI timeout) leaves names whose pid is gone: every new network first deletes them,
//! killing what still runs in their namespaces.
//!
//! # Faults
//! - A cut, both ways: a blackhole route to the peer's address in each of the two
//!   namespaces. New connections fail at once; packets of open connections are dropped,
//!   so calls on them hang until their timeouts, as across a failed switch.
//! - A one-way cut, `a` to `b`: a policy rule in `a`'s namespace that blackholes TCP to
//!   `b`'s listening port (`ip rule ... ipproto tcp dport`). `a` cannot call `b`, while
//!   `b`'s calls to `a`, and `a`'s answers to them (bound for `b`'s ephemeral ports), go
//!   through. That is a cut of connections, not of packets: dropping the packets of one
//!   direction only would stop TCP both ways (every connection needs packets in both), and
//!   without iptables or nftables nothing here filters on the receiving side anyway.
//! - Delay, jitter, loss: a `netem` queueing discipline on the node's `eth0`, so it shapes
//!   everything the node sends (its answers and its calls). It needs the kernel's
//!   `sch_netem`; without it [`HostNetwork::netem`] answers [`Unsupported`].
//!
//! # Requirements and limits
//! Root, iproute2 (`ip`, and `tc` for netem), and a kernel with network namespaces, veth
//! and bridges. A host that loads `br_netfilter` with `bridge-nf-call-iptables=1` and a
//! forwarding policy of DROP (as Docker sets up) drops the traffic between the nodes: the
//! cluster then never becomes ready, and the harness says which node was not.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The port every node listens on, each in its own namespace.
pub const NODE_PORT: u16 = 7001;

/// The most nodes one network holds (addresses `.1` up to `.253`).
const MAX_NODES: usize = 253;

/// A fault this harness cannot inject here (the mode, or the kernel, lacks what it needs).
#[derive(Debug)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsupported here: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Whether networks can be made here; the reason when not.
pub fn availability() -> Result<(), String> {
    if std::env::var("QUORUMKV_TEST_NET").as_deref() == Ok("loopback") {
        return Err("QUORUMKV_TEST_NET=loopback".into());
    }
    if !is_root() {
        return Err("not running as root".into());
    }
    let ip = tool("ip").ok_or("no `ip` command (iproute2)")?;
    run(&ip, ["netns", "list"])
        .map(drop)
        .map_err(|e| format!("`ip netns` does not work: {e:#}"))
}

/// A bridge and one namespace per node, deleted on drop.
pub struct HostNetwork {
    ip: PathBuf,
    tag: String,
    /// `A` and `B` of `10.A.B.0/24`.
    subnet: [u8; 2],
    /// Set once the bridge exists.
    bridge: Option<String>,
    /// Node `i`'s namespace and the bridge end of its veth, as far as they were made.
    hosts: Vec<(String, String)>,
    /// The rules in place, so that each change removes exactly what an earlier one added.
    // A std Mutex: taken by one fault call at a time, around a few `ip` commands.
    applied: Mutex<BTreeSet<Rule>>,
}

/// One fault rule, kept in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// In `node`'s namespace, a blackhole route to `peer`'s address.
    Blackhole { node: usize, peer: usize },
    /// In `node`'s namespace, a blackhole rule for TCP to `peer`'s listening port.
    NoConnect { node: usize, peer: usize },
}

impl HostNetwork {
    /// Makes a bridge and `size` namespaces, after deleting those of dead test processes.
    ///
    /// # Errors
    /// When an `ip` command fails or no free name or subnet is found; what was made is
    /// deleted again.
    pub fn create(size: usize) -> anyhow::Result<Self> {
        // One network at a time per process: `ip netns add` mounts its directory on first
        // use, racily, and the subnet check below is a check-then-act.
        static SETUP: Mutex<()> = Mutex::new(());
        static NETWORKS: AtomicU32 = AtomicU32::new(0);
        let _one_at_a_time = SETUP.lock().unwrap_or_else(PoisonError::into_inner);
        if size == 0 || size > MAX_NODES {
            bail!("a network holds 1 to {MAX_NODES} nodes, not {size}");
        }
        let ip = tool("ip").ok_or_else(|| anyhow!("no `ip` command (iproute2)"))?;
        sweep_stale(&ip);
        let links = link_names(&ip)?;
        let namespaces = namespace_names(&ip)?;
        let pid = std::process::id();
        for _ in 0..256 {
            let n = NETWORKS.fetch_add(1, Ordering::Relaxed) % 256;
            let tag = format!("{pid:x}x{n:x}");
            let taken = links.contains(&format!("qb{tag}"))
                || namespaces
                    .iter()
                    .any(|ns| ns.starts_with(&format!("qk{tag}n")));
            if taken {
                continue;
            }
            let mut network = HostNetwork {
                ip: ip.clone(),
                tag,
                subnet: [0, 0],
                bridge: None,
                hosts: Vec::new(),
                applied: Mutex::default(),
            };
            network.build(size, pid, n)?;
            return Ok(network);
        }
        bail!("every network name of process {pid} is in use")
    }

    fn build(&mut self, size: usize, pid: u32, n: u32) -> anyhow::Result<()> {
        let bridge = format!("qb{}", self.tag);
        for attempt in 0..64u64 {
            // A hash of (pid, n, attempt) spreads the /24s of parallel processes.
            let h = (u64::from(pid) << 16 | u64::from(n) << 8 | attempt)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                >> 40;
            let subnet = [1 + (h % 254) as u8, (h >> 8) as u8];
            if subnet_in_use(&self.ip, subnet, None)? {
                continue;
            }
            self.run(["link", "add", &bridge, "type", "bridge"])?;
            self.bridge = Some(bridge.clone());
            let host = format!("10.{}.{}.254/24", subnet[0], subnet[1]);
            self.run(["addr", "add", &host, "dev", &bridge])?;
            self.run(["link", "set", &bridge, "up"])?;
            // Another process may have taken the same /24 in the meantime.
            if subnet_in_use(&self.ip, subnet, Some(&bridge))? {
                self.run(["link", "del", &bridge])?;
                self.bridge = None;
                continue;
            }
            self.subnet = subnet;
            break;
        }
        if self.bridge.is_none() {
            bail!("no free /24 in 10.0.0.0/8 after 64 draws");
        }
        for i in 0..size {
            let namespace = format!("qk{}n{i}", self.tag);
            let veth = format!("qv{}n{i}", self.tag);
            self.run(["netns", "add", &namespace])?;
            self.hosts.push((namespace.clone(), veth.clone()));
            self.run([
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            self.run(["link", "set", &veth, "master", &bridge])?;
            self.run(["link", "set", &veth, "up"])?;
            self.run(["-n", &namespace, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", self.node_ip(i));
            self.run(["-n", &namespace, "addr", "add", &addr, "dev", "eth0"])?;
            self.run(["-n", &namespace, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Node `i`'s address.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        let last = u8::try_from(i + 1).expect("at most 253 nodes");
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], last)
    }

    /// Node `i`'s namespace.
    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// The command line that runs a program (appended to it) in node `i`'s namespace.
    pub fn launcher(&self, i: usize) -> Vec<OsString> {
        let mut launcher = vec![self.ip.clone().into_os_string()];
        launcher.extend(["netns", "exec", self.namespace(i)].map(OsString::from));
        launcher
    }

    /// The network in a few words, for the test's output.
    pub fn describe(&self) -> String {
        format!(
            "network namespaces qk{}n0..{} on bridge qb{}, 10.{}.{}.0/24",
            self.tag,
            self.hosts.len() - 1,
            self.tag,
            self.subnet[0],
            self.subnet[1]
        )
    }

    /// Makes the cut links exactly `cuts`: `(a, b)` means `a` cannot reach `b`. A pair cut
    /// both ways is cut with routes, a pair cut one way with a rule (see the module docs).
    ///
    /// # Errors
    /// When an `ip` command fails; the rules applied until then stay recorded.
    pub fn set_cuts(&self, cuts: &BTreeSet<(usize, usize)>) -> anyhow::Result<()> {
        let wanted: BTreeSet<Rule> = cuts
            .iter()
            .map(|&(node, peer)| {
                if cuts.contains(&(peer, node)) {
                    Rule::Blackhole { node, peer }
                } else {
                    Rule::NoConnect { node, peer }
                }
            })
            .collect();
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<Rule> = applied.difference(&wanted).copied().collect();
        for rule in stale {
            self.apply("del", rule)?;
            applied.remove(&rule);
        }
        let fresh: Vec<Rule> = wanted.difference(&applied).copied().collect();
        for rule in fresh {
            self.apply("add", rule)?;
            applied.insert(rule);
        }
        Ok(())
    }

    fn apply(&self, action: &str, rule: Rule) -> anyhow::Result<()> {
        match rule {
            Rule::Blackhole { node, peer } => {
                let to = format!("{}/32", self.node_ip(peer));
                self.run([
                    "-n",
                    self.namespace(node),
                    "route",
                    action,
                    "blackhole",
                    &to,
                ])
            }
            Rule::NoConnect { node, peer } => {
                let to = format!("{}/32", self.node_ip(peer));
                let port = NODE_PORT.to_string();
                self.run([
                    "-n",
                    self.namespace(node),
                    "rule",
                    action,
                    "to",
                    &to,
                    "ipproto",
                    "tcp",
                    "dport",
                    &port,
                    "blackhole",
                ])
            }
        }
    }

    /// Shapes what node `i` sends with netem, e.g. `"delay 30ms 10ms loss 2%"`.
    ///
    /// # Errors
    /// [`Unsupported`] when `tc` is missing or the kernel has no netem; otherwise what
    /// `tc` said.
    pub fn netem(&self, i: usize, spec: &str) -> anyhow::Result<()> {
        let tc = tool("tc").ok_or_else(|| Unsupported("no `tc` command (iproute2)".into()))?;
        let mut args = vec!["-n", self.namespace(i), "qdisc", "replace", "dev", "eth0"];
        args.extend(["root", "netem"]);
        args.extend(spec.split_whitespace());
        match run(&tc, args) {
            Ok(_) => Ok(()),
            Err(error) if format!("{error:#}").contains("qdisc kind is unknown") => {
                Err(Unsupported(format!(
                    "the kernel has no netem queueing discipline (sch_netem): {error:#}"
                ))
                .into())
            }
            Err(error) => Err(error),
        }
    }

    /// Removes node `i`'s netem, if any.
    ///
    /// # Errors
    /// When a netem is still in place afterwards.
    pub fn clear_netem(&self, i: usize) -> anyhow::Result<()> {
        let Some(tc) = tool("tc") else {
            return Ok(());
        };
        let namespace = self.namespace(i);
        // Fails when there is nothing to delete, which is fine: the check below decides.
        let _ = run(
            &tc,
            ["-n", namespace, "qdisc", "del", "dev", "eth0", "root"],
        );
        let left = run(&tc, ["-n", namespace, "qdisc", "show", "dev", "eth0"])?;
        if left.contains("netem") {
            bail!("node {i} still has a netem after its removal: {left}");
        }
        Ok(())
    }

    fn run<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        run(&self.ip, args).map(drop)
    }
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        for (namespace, veth) in &self.hosts {
            kill_all_in(&self.ip, namespace);
            // Deleting one end of a veth pair deletes both, without waiting for the
            // namespace to go (it lingers while anything still holds it).
            let _ = run(&self.ip, ["link", "del", veth]);
            if let Err(error) = run(&self.ip, ["netns", "del", namespace]) {
                eprintln!("cannot delete namespace {namespace}: {error:#}");
            }
        }
        if let Some(bridge) = &self.bridge {
            if let Err(error) = run(&self.ip, ["link", "del", bridge]) {
                eprintln!("cannot delete bridge {bridge}: {error:#}");
            }
        }
    }
}

/// Deletes the namespaces and links whose owning process is gone.
fn sweep_stale(ip: &Path) {
    for namespace in namespace_names(ip).unwrap_or_default() {
        if let Some(pid) = owner_pid(&namespace, "qk") {
            if !is_alive(pid) {
                eprintln!("deleting namespace {namespace}, left by dead process {pid}");
                kill_all_in(ip, &namespace);
                let _ = run(ip, ["netns", "del", &namespace]);
            }
        }
    }
    for link in link_names(ip).unwrap_or_default() {
        let owner = owner_pid(&link, "qb").or_else(|| owner_pid(&link, "qv"));
        if let Some(pid) = owner {
            if !is_alive(pid) {
                eprintln!("deleting link {link}, left by dead process {pid}");
                let _ = run(ip, ["link", "del", &link]);
            }
        }
    }
}

/// The pid in a name this module made (`<prefix><pid>x<n>[n<i>]`, hex pid and n), if it
/// is one.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix(prefix)?.split_once('x')?;
    let (n, node) = match rest.split_once('n') {
        Some((n, node)) => (n, Some(node)),
        None => (rest, None),
    };
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    let decimal = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !hex(n) || !node.is_none_or(decimal) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// SIGKILLs every process in `namespace`, waiting (boundedly) until they are gone.
fn kill_all_in(ip: &Path, namespace: &str) {
    let pids: Vec<i32> = run(ip, ["netns", "pids", namespace])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| is_running(p)) && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie (an orphan killed here may stay one until
/// whoever adopted it reaps it, and no longer holds anything).
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) S ...`: the state follows the last parenthesis, as comm may hold any.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Whether `10.A.B.0/24` overlaps a route or an address of the root namespace, other than
/// those of `ours`.
fn subnet_in_use(ip: &Path, subnet: [u8; 2], ours: Option<&str>) -> anyhow::Result<bool> {
    let mine = (u32::from(Ipv4Addr::new(10, subnet[0], subnet[1], 0)), 24);
    let routes = run(ip, ["-4", "route", "show", "table", "all"])?;
    let addrs = run(ip, ["-4", "-o", "addr", "show"])?;
    let routed = routes.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let mut first = words.next()?;
        // `ip route show table all` starts local and broadcast routes with their type.
        if [
            "local",
            "broadcast",
            "unicast",
            "blackhole",
            "unreachable",
            "prohibit",
        ]
        .contains(&first)
        {
            first = words.next()?;
        }
        let dev = line.split_whitespace().skip_while(|w| *w != "dev").nth(1);
        Some((first.to_string(), dev.map(str::to_string)))
    });
    let addressed = addrs.lines().filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "inet")?;
        Some((
            words.get(at + 1)?.to_string(),
            words.get(1).map(|d| d.to_string()),
        ))
    });
    for (prefix, dev) in routed.chain(addressed) {
        if ours.is_some() && dev.as_deref() == ours {
            continue;
        }
        if let Some(theirs) = parse_prefix(&prefix) {
            if overlap(mine, theirs) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `a.b.c.d/len` or `a.b.c.d` (a /32); `default` and the like are not prefixes here.
fn parse_prefix(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, len.parse().ok()?),
        None => (text, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    // A default route (length 0) overlaps everything and says nothing about use.
    (1..=32).contains(&len).then_some((u32::from(addr), len))
}

fn overlap((a, a_len): (u32, u8), (b, b_len): (u32, u8)) -> bool {
    let len = a_len.min(b_len);
    let mask = u32::MAX << (32 - u32::from(len));
    a & mask == b & mask
}

fn namespace_names(ip: &Path) -> anyhow::Result<Vec<String>> {
    Ok(run(ip, ["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn link_names(ip: &Path) -> anyhow::Result<Vec<String>> {
    // `ip -o link` lines: `12: qv1a2bx0n0@if2: <BROADCAST,...> ...`.
    Ok(run(ip, ["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|name| {
            let name = name.trim_end_matches(':');
            name.split('@').next().unwrap_or(name).to_string()
        })
        .collect())
}

/// Runs `program` and returns its standard output, or an error with its standard error.
fn run<'a>(program: &Path, args: impl IntoIterator<Item = &'a str>) -> anyhow::Result<String> {
    let args: Vec<&str> = args.into_iter().collect();
    let output = Command::new(program)
        .args(&args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The path of a system tool: on `PATH`, or in the sbin directories a non-login shell
/// may leave out.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    // `Uid:` lists the real, effective, saved and filesystem ids.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether process `pid` exists (a process of another user counts as existing).
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_module_name_an_owner() {
        assert_eq!(owner_pid("qk1f2ax3n0", "qk"), Some(0x1f2a));
        assert_eq!(owner_pid("qb1f2ax3", "qb"), Some(0x1f2a));
        assert_eq!(owner_pid("qv1f2axffn12", "qv"), Some(0x1f2a));
        assert_eq!(owner_pid("qbridge", "qb"), None);
        assert_eq!(owner_pid("qk1f2ax3nz", "qk"), None);
        assert_eq!(owner_pid("eth0", "qk"), None);
    }

    #[test]
    fn prefixes_overlap_when_one_contains_the_other() {
        let mine = (u32::from(Ipv4Addr::new(10, 7, 9, 0)), 24);
        assert!(overlap(mine, parse_prefix("10.0.0.0/8").unwrap_or((0, 32))));
        assert!(overlap(mine, parse_prefix("10.7.9.3").unwrap_or((0, 32))));
        assert!(!overlap(
            mine,
            parse_prefix("10.7.10.0/24").unwrap_or((0, 32))
        ));
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("0.0.0.0/0"), None);
    }
}
