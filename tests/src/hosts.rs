//! Where a cluster's nodes live, and the network faults between them.
//!
//! [`Cluster::start`] and its kin put every node on 127.0.0.1. [`Cluster::start_hosts`]
//! gives each node a host of its own, so that a cut between two addresses separates
//! exactly two nodes, in one of two modes (it prints which, and
//! [`Cluster::network_mode`] tells):
//!
//! - **Namespaces**, when the tests run as root and `ip netns` works (as in CI): each node
//!   in a network namespace of its own, on a bridge (see [`crate::netns`]). Faults act in
//!   the kernel, outside the nodes, which run without `--fault-injection`.
//! - **Loopback** otherwise: node `i` on 127.0.0.(i+1), which Linux routes to the loopback
//!   interface without any setup. Faults go through each node's fault switch (the
//!   harness adds `--fault-injection`), which refuses the node's own sends: the nodes
//!   still see each other's connections fail, but the cut is inside the process under
//!   test.
//!
//! Either way each node listens on its own address and calls its peers from it
//! (`--internode-source-ip`). `QUORUMKV_TEST_NET=loopback` forces the loopback mode;
//! `QUORUMKV_TEST_NET=namespaces` makes the lack of namespaces fail the test instead of
//! falling back.
//!
//! | fault | namespaces | loopback |
//! |---|---|---|
//! | [`partition`](Cluster::partition), [`isolate`](Cluster::isolate), [`heal`](Cluster::heal) | blackhole routes in both namespaces | both nodes' fault switches |
//! | [`cut_one_way`](Cluster::cut_one_way) | a rule in the sender's namespace: no TCP to the peer's port | the sender's fault switch |
//! | [`netem`](Cluster::netem) (delay, jitter, loss) | `tc netem` on the node's link, if the kernel has it | [`Unsupported`] |
//!
//! Routes and rules belong to the namespace, so they outlive a node's restart; a fault
//! switch lives in the node's process, so a node restarted in loopback mode comes back
//! with no cut until the next fault call. A node that is not running is skipped by the
//! fault switch (the cut of its peers still holds). [`Cluster::restart`] waits for every
//! running peer to see the restarted node: heal first, or use
//! [`Cluster::restart_alone`] while a partition holds.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::sync::PoisonError;

use crate::netns::{self, HostNetwork, NODE_PORT};
use crate::{free_port, free_port_on, Cluster};

pub use crate::netns::Unsupported;

/// Where the nodes of a cluster live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Every node on 127.0.0.1 ([`Cluster::start`] and its kin).
    SharedLoopback,
    /// Node `i` on 127.0.0.(i+1); faults through the nodes' fault switches.
    Loopback,
    /// Node `i` in a network namespace of its own; faults in the kernel.
    Namespaces,
}

/// Where the nodes live, with what it takes to reach and cut them.
pub(crate) enum Network {
    Shared,
    Loopback,
    Namespaces(HostNetwork),
}

impl Network {
    /// Node `i`'s `ip:port`.
    pub(crate) fn addr(&self, i: usize) -> String {
        match self {
            Self::Shared => format!("127.0.0.1:{}", free_port()),
            Self::Loopback => {
                let ip = loopback_ip(i);
                format!("{ip}:{}", free_port_on(ip))
            }
            Self::Namespaces(network) => format!("{}:{NODE_PORT}", network.node_ip(i)),
        }
    }

    /// The flags that make node `i` call its peers from its own address.
    pub(crate) fn node_args(&self, i: usize) -> Vec<String> {
        let ip = match self {
            Self::Shared => return Vec::new(),
            Self::Loopback => loopback_ip(i),
            Self::Namespaces(network) => network.node_ip(i),
        };
        vec!["--internode-source-ip".to_string(), ip.to_string()]
    }

    /// What runs node `i`'s binary where it lives.
    pub(crate) fn launcher(&self, i: usize) -> Vec<OsString> {
        match self {
            Self::Namespaces(network) => network.launcher(i),
            Self::Shared | Self::Loopback => Vec::new(),
        }
    }
}

fn loopback_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).expect("at most 254 nodes"))
}

impl Cluster {
    /// Starts `size` nodes, each on a host of its own (a network namespace, or a loopback
    /// address; see the module docs), with extra `serve` flags for every node, and waits
    /// until every node sees every other one up.
    pub fn start_hosts(size: usize, extra_args: &[&str]) -> Self {
        let required = std::env::var("QUORUMKV_TEST_NET").as_deref() == Ok("namespaces");
        let made = netns::availability()
            .and_then(|()| HostNetwork::create(size).map_err(|e| format!("{e:#}")));
        let network = match made {
            Ok(network) => {
                println!("hosts: {size} nodes in {}", network.describe());
                Network::Namespaces(network)
            }
            Err(reason) => {
                assert!(
                    !required,
                    "QUORUMKV_TEST_NET=namespaces, but namespaces cannot be used: {reason}"
                );
                println!(
                    "hosts: {size} nodes on loopback, 127.0.0.1 to 127.0.0.{size} (no \
                     namespaces: {reason})"
                );
                Network::Loopback
            }
        };
        let mut args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if matches!(network, Network::Loopback) && !args.iter().any(|a| a == "--fault-injection") {
            args.push("--fault-injection".to_string());
        }
        Self::start_inner(size, |_| args.clone(), None, network, &|_| None, &|_| None)
    }

    /// Where this cluster's nodes live.
    pub fn network_mode(&self) -> NetworkMode {
        match self.network {
            Network::Shared => NetworkMode::SharedLoopback,
            Network::Loopback => NetworkMode::Loopback,
            Network::Namespaces(_) => NetworkMode::Namespaces,
        }
    }

    /// Cuts the network into `groups`: two nodes can reach each other only if a group holds
    /// both, so a node in no group is cut off from every other. Groups may overlap: with
    /// `&[&[0, 1], &[1, 2]]` node 1 bridges 0 and 2, which cannot reach each other. Replaces
    /// the cuts in place; [`Cluster::heal`] undoes it. On loopback the nodes must run with
    /// `--fault-injection` ([`Cluster::start_hosts`] adds it).
    pub fn partition(&self, groups: &[&[usize]]) {
        let size = self.nodes.len();
        let together = |a: usize, b: usize| groups.iter().any(|g| g.contains(&a) && g.contains(&b));
        let cuts = (0..size)
            .flat_map(|a| (0..size).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && !together(a, b))
            .collect();
        self.set_cuts(cuts);
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        self.partition(&[&[i], &others]);
    }

    /// Cuts the link from `from` to `to` only, on top of the cuts in place: `from` can no
    /// longer call `to`, while `to` still calls `from` and gets its answers (a cut of
    /// connections, see [`crate::netns`] for why not of packets).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let mut cuts = self
            .cuts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        cuts.insert((from, to));
        self.set_cuts(cuts);
    }

    /// Restores every link cut by [`Cluster::partition`], [`Cluster::isolate`] or
    /// [`Cluster::cut_one_way`] (netem stays: [`Cluster::clear_netem`]).
    pub fn heal(&self) {
        self.set_cuts(BTreeSet::new());
    }

    fn set_cuts(&self, cuts: BTreeSet<(usize, usize)>) {
        let mut current = self.cuts.lock().unwrap_or_else(PoisonError::into_inner);
        match &self.network {
            Network::Namespaces(network) => network.set_cuts(&cuts).expect("cut links"),
            Network::Shared | Network::Loopback => {
                for i in (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()) {
                    let peers: Vec<usize> = cuts
                        .iter()
                        .filter(|&&(from, _)| from == i)
                        .map(|&(_, to)| to)
                        .collect();
                    self.cut(i, &peers);
                }
            }
        }
        *current = cuts;
    }

    /// Shapes what node `i` sends with netem, e.g. `"delay 30ms 10ms loss 2%"` (the
    /// arguments of `tc qdisc ... netem`), until [`Cluster::clear_netem`].
    ///
    /// # Errors
    /// [`Unsupported`] on loopback, or when the kernel has no netem; what `tc` said when
    /// the spec is wrong.
    pub fn netem(&self, i: usize, spec: &str) -> anyhow::Result<()> {
        match &self.network {
            Network::Namespaces(network) => network.netem(i, spec),
            Network::Shared | Network::Loopback => Err(Unsupported(
                "netem shapes a node's link, and nodes on loopback have none of their own: \
                 it needs network namespaces"
                    .into(),
            )
            .into()),
        }
    }

    /// Removes node `i`'s netem, if any.
    ///
    /// # Errors
    /// [`Unsupported`] on loopback; an error when a netem is still in place afterwards.
    pub fn clear_netem(&self, i: usize) -> anyhow::Result<()> {
        match &self.network {
            Network::Namespaces(network) => network.clear_netem(i),
            Network::Shared | Network::Loopback => Err(Unsupported(
                "netem needs network namespaces; nodes on loopback have none".into(),
            )
            .into()),
        }
    }
}
