//! The cluster under test: node processes on loopback ports, or one network namespace per node
//! with every node-to-node connection through the fault proxy.
//!
//! [`ClusterUnderTest`] owns everything it creates and tears it down when dropped, in order:
//! the node processes first, then the proxy, then the namespaces and bridge, then the data
//! directories. Spare slots (nodes that join during the run) are prepared up front — their
//! namespace, proxy listener and data directory exist — but not started.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::monitor::{NodeSlot, Slots, node_name};
use crate::netns::Network;
use crate::proxy::{Proxy, ProxyNode};
use crate::{NETNS_PORTS, NodeProcess, free_port};

/// How nodes are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every node on 127.0.0.1 with its own ports: process faults only.
    Loopback,
    /// One network namespace per node on a bridge, cluster links through the proxy.
    Netns,
}

impl Mode {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Netns => "netns",
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Isolation mode.
    pub mode: Mode,
    /// Nodes started at once.
    pub nodes: usize,
    /// Further slots that join during the run.
    pub spares: usize,
    /// Whether the nodes form a cluster (always with more than one slot).
    pub clustered: bool,
    /// The `gridmesh` executable.
    pub binary: std::path::PathBuf,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
}

/// The running cluster. Field order is teardown order.
#[derive(Debug)]
pub struct ClusterUnderTest {
    /// Every slot's process (spares are not started until they join).
    pub nodes: Vec<NodeProcess>,
    /// The fault proxy (namespace mode).
    pub proxy: Option<Proxy>,
    /// Namespaces and bridge (namespace mode).
    pub network: Option<Network>,
    /// Names, addresses and pids the monitor watches.
    pub slots: Slots,
    /// Isolation mode.
    pub mode: Mode,
    /// Nodes started at once.
    pub initial: usize,
    data: tempfile::TempDir,
}

impl ClusterUnderTest {
    /// Prepares every slot and starts the initial nodes (not waiting for readiness).
    pub async fn start(spec: &ClusterSpec) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("gridmesh-chaos-")
            .tempdir()?;
        let total = spec.nodes + spec.spares;
        let cookie = format!("chaos-{:032x}", rand::random::<u128>());
        let (nodes, proxy, network) = match spec.mode {
            Mode::Netns => {
                let network = Network::create(total)?;
                let proxy = Proxy::start(proxy_nodes(&network))?;
                let nodes = netns_nodes(&network, spec, data.path(), &cookie)?;
                (nodes, Some(proxy), Some(network))
            }
            Mode::Loopback => (loopback_nodes(spec, data.path(), &cookie)?, None, None),
        };
        let slots = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeSlot {
                name: node_name(i),
                grpc: n.grpc_target(),
                http: n.http_addr,
                pid: None,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            proxy,
            network,
            slots: Arc::new(Mutex::new(slots)),
            mode: spec.mode,
            initial: spec.nodes,
            data,
        };
        for i in 0..spec.nodes {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Where the data directories live.
    pub fn data_root(&self) -> &Path {
        self.data.path()
    }

    /// Starts node `i` without waiting for readiness.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].spawn()?;
        self.refresh_pid(i);
        Ok(())
    }

    /// Starts node `i` and waits until it is ready.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.nodes[i].wait_ready(Duration::from_secs(60))
    }

    /// Records node `i`'s current pid (or none) for the monitor.
    pub fn refresh_pid(&self, i: usize) {
        let pid = self.nodes[i].pid();
        if let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(i)
        {
            slot.pid = pid;
        }
    }

    /// Indexes of the nodes that run now.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    /// Waits until every running node answers `/readyz`.
    pub fn wait_all_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for i in self.running() {
            self.nodes[i]
                .wait_ready(timeout)
                .with_context(|| format!("node {i} did not become ready"))?;
        }
        Ok(())
    }
}

fn proxy_nodes(network: &Network) -> Vec<ProxyNode> {
    (0..network.slots())
        .map(|i| ProxyNode {
            listen: SocketAddr::new(IpAddr::V4(network.alias_ip(i)), NETNS_PORTS.cluster),
            upstream: SocketAddr::new(IpAddr::V4(network.node_ip(i)), NETNS_PORTS.cluster),
            node_ip: IpAddr::V4(network.node_ip(i)),
            source_ip: IpAddr::V4(network.alias_ip(i)),
        })
        .collect()
}

/// Nodes in their namespaces: each listens on its own address, advertises its alias (the
/// proxy) and is seeded with the initial nodes' aliases, so no cluster connection can go
/// around the proxy.
fn netns_nodes(
    network: &Network,
    spec: &ClusterSpec,
    data: &Path,
    cookie: &str,
) -> anyhow::Result<Vec<NodeProcess>> {
    let alias = |i: usize| SocketAddr::new(IpAddr::V4(network.alias_ip(i)), NETNS_PORTS.cluster);
    let seeds: Vec<SocketAddr> = (0..spec.nodes).map(alias).collect();
    (0..network.slots())
        .map(|i| {
            let ip = IpAddr::V4(network.node_ip(i));
            let node =
                NodeProcess::in_namespace(&data.join(node_name(i)), &network.namespace(i), ip)?
                    .binary(&spec.binary)
                    .clustered_at(
                        &node_name(i),
                        cookie,
                        SocketAddr::new(ip, NETNS_PORTS.cluster),
                        alias(i),
                        &seeds,
                    );
            Ok(with_env(node, &spec.env))
        })
        .collect()
}

/// Nodes on loopback ports; in a cluster every slot is seeded with the initial nodes.
fn loopback_nodes(
    spec: &ClusterSpec,
    data: &Path,
    cookie: &str,
) -> anyhow::Result<Vec<NodeProcess>> {
    let total = spec.nodes + spec.spares;
    let ports: Vec<SocketAddr> = (0..total)
        .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
        .collect::<anyhow::Result<_>>()?;
    (0..total)
        .map(|i| {
            let mut node = NodeProcess::new(&data.join(node_name(i)))?.binary(&spec.binary);
            if spec.clustered {
                node = node.clustered_at(
                    &node_name(i),
                    cookie,
                    ports[i],
                    ports[i],
                    &ports[..spec.nodes],
                );
            }
            Ok(with_env(node, &spec.env))
        })
        .collect()
}

fn with_env(mut node: NodeProcess, env: &[(String, String)]) -> NodeProcess {
    for (key, value) in env {
        node = node.env(key, value);
    }
    node
}
