//! Real `gridmesh` processes for tests and the chaos harness.
//!
//! [`NodeProcess`] starts the node binary with its own data directory and free loopback ports,
//! waits until `/readyz` answers, and can stop it gracefully (SIGTERM), kill it (SIGKILL),
//! pause and resume it (SIGSTOP/SIGCONT) and start it again on the same directory and ports.
//! Every wait polls observable state with a deadline; nothing sleeps a fixed time to "let
//! things settle".
//!
//! A node can also run inside a network namespace ([`NodeProcess::in_namespace`]): it is then
//! started with `ip netns exec <namespace> gridmesh serve ...` (the same process: `ip` execs
//! the binary, so signals and `/proc/<pid>` reach the node itself).
//!
//! The chaos harness builds on it: [`schedule`] (the seeded nemesis schedule), [`netns`]
//! (namespaces, nftables, tc), [`proxy`] (latency, slow and reset links between nodes),
//! [`workload`] (clients recording every request and its outcome), [`monitor`] (members, shard
//! maps, memory and gauges sampled during the run), [`checker`] (history against storage, and
//! the cluster's own invariants) and [`report`] (JSON, Markdown and an SVG timeline); the
//! `gridmesh-chaos` binary runs them. See `chaos-tests/README.md`.

pub mod activation;
pub mod checker;
pub mod cluster;
pub mod docker;
pub mod monitor;
pub mod nemesis;
pub mod netns;
pub mod proxy;
pub mod report;
pub mod schedule;
pub mod timeline;
pub mod workload;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Bootstrap admin password every [`NodeProcess`] is started with (test clusters only; a
/// production node refuses it, since it is published here).
pub const TEST_ADMIN_PASSWORD: &str = "gridmesh-test-bootstrap-secret";

/// The bootstrap admin's name.
pub const TEST_ADMIN: &str = "admin";

/// Credentials of the test clusters' bootstrap admin.
pub fn admin_credentials() -> gridmesh_proto::client::Credentials {
    gridmesh_proto::client::Credentials::password(TEST_ADMIN, TEST_ADMIN_PASSWORD)
}

/// A client of the node at `target` (`http://host:port`), logged in as the test bootstrap admin.
pub async fn connect_admin(target: &str) -> anyhow::Result<gridmesh_proto::client::Client> {
    Ok(gridmesh_proto::client::Client::connect_with(target, admin_credentials()).await?)
}

/// Path of the `gridmesh` binary: `GRIDMESH_BIN`, else next to the running test executable
/// (`target/<profile>/gridmesh`).
pub fn gridmesh_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("GRIDMESH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .ancestors()
        .find(|p| p.join("gridmesh").is_file())
        .context(
            "gridmesh binary not found next to the test executable; build it or set GRIDMESH_BIN",
        )?;
    Ok(profile_dir.join("gridmesh"))
}

/// A free TCP port on 127.0.0.1 (bound, then released), for a node to listen on.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), never from it: a port the
/// kernel hands out for `:0` is one it also hands to outgoing connections, so between release
/// and the node's bind a peer connection of another test's node could take it ("address
/// already in use"). Ports handed out by this process are not handed out again.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if ephemeral_low > 11_000 {
        for _ in 0..500 {
            let port = 10_000 + (rand::random::<u16>() % (ephemeral_low - 10_000));
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    given.insert(port);
    Ok(port)
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One node process.
#[derive(Debug)]
pub struct NodeProcess {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Extra `serve` arguments.
    pub extra_args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    /// The `gridmesh` executable.
    pub binary: PathBuf,
    /// Node name and cluster listener, when the node is part of a cluster.
    pub cluster: Option<(String, SocketAddr)>,
    /// Network namespace the node runs in (`None`: the harness's own).
    pub netns: Option<String>,
    child: Option<Child>,
}

/// Ports a node uses on its own address inside a namespace.
pub const NETNS_PORTS: NodePorts = NodePorts {
    grpc: 7100,
    http: 7180,
    cluster: 7200,
};

/// The ports of a node on an address of its own.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// gRPC.
    pub grpc: u16,
    /// HTTP (`/metrics`, `/readyz`).
    pub http: u16,
    /// Node-to-node protocol.
    pub cluster: u16,
}

impl NodeProcess {
    /// A node that will use `data_dir` and fresh loopback ports. Not started yet.
    pub fn new(data_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            data_dir: data_dir.to_owned(),
            extra_args: Vec::new(),
            env: Vec::new(),
            log_path: data_dir.with_extension("log"),
            binary: gridmesh_binary().unwrap_or_else(|_| PathBuf::from("gridmesh")),
            cluster: None,
            netns: None,
            child: None,
        }
        .env("GRIDMESH_BOOTSTRAP_PASSWORD", TEST_ADMIN_PASSWORD))
    }

    /// A node inside network namespace `netns`, listening on `ip` (its own address there) with
    /// [`NETNS_PORTS`]. Not started yet.
    pub fn in_namespace(data_dir: &Path, netns: &str, ip: IpAddr) -> anyhow::Result<Self> {
        let mut node = Self::new(data_dir)?;
        node.grpc_addr = SocketAddr::new(ip, NETNS_PORTS.grpc);
        node.http_addr = SocketAddr::new(ip, NETNS_PORTS.http);
        node.netns = Some(netns.to_owned());
        Ok(node)
    }

    /// Makes this node a cluster member named `name` listening on `listen` and telling its
    /// peers to dial `advertise` (e.g. the proxy in front of it), seeded with `seeds`.
    pub fn clustered_at(
        mut self,
        name: &str,
        cookie: &str,
        listen: SocketAddr,
        advertise: SocketAddr,
        seeds: &[SocketAddr],
    ) -> Self {
        self.cluster = Some((name.to_owned(), listen));
        self.extra_args.extend([
            "--name".to_owned(),
            name.to_owned(),
            "--cluster-addr".to_owned(),
            listen.to_string(),
        ]);
        for seed in seeds {
            self.extra_args.push("--seed".to_owned());
            self.extra_args.push(seed.to_string());
        }
        self.env("GRIDMESH_COOKIE", cookie)
            .env("GRIDMESH_CLUSTER__ADVERTISE_ADDR", &advertise.to_string())
    }

    /// The operating-system process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not been reaped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Deletes the data directory (the node must be stopped): the next start is empty.
    pub fn wipe_data(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("wiping the data directory of a running node");
        }
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("removing the data directory"),
        }
    }

    /// Makes this node a cluster member named `name` on a fresh loopback cluster port, with
    /// `cookie` and the given seeds (other members' cluster addresses).
    pub fn clustered(
        mut self,
        name: &str,
        cookie: &str,
        seeds: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        self.cluster = Some((name.to_owned(), addr));
        let mut args = vec![
            "--name".to_owned(),
            name.to_owned(),
            "--cluster-addr".to_owned(),
            addr.to_string(),
        ];
        for seed in seeds {
            args.push("--seed".to_owned());
            args.push(seed.to_string());
        }
        self.extra_args.extend(args);
        Ok(self.env("GRIDMESH_COOKIE", cookie))
    }

    /// The cluster address, when clustered.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|(_, addr)| *addr)
    }

    /// The node name, when clustered.
    pub fn name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(name, _)| name.as_str())
    }

    /// Adds `serve` arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Uses this executable (tests pass `env!("CARGO_BIN_EXE_gridmesh")`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the process without waiting for readiness.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = match &self.netns {
            Some(netns) => {
                // `ip netns exec` enters the namespace and execs the binary: same pid.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--grpc-addr")
            .arg(self.grpc_addr.to_string())
            .arg("--http-addr")
            .arg(self.http_addr.to_string())
            .args(&self.extra_args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(command.spawn().context("spawning gridmesh serve")?);
        Ok(())
    }

    /// Starts the process and waits until `/readyz` answers 200.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits for `/readyz`, failing early if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = self.http_addr;
        let result = wait_for(timeout, "the node to become ready", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow::anyhow!(
                    "node exited during start-up with {status}"
                )));
            }
            matches!(http_get(http, "/readyz"), Ok((200, _))).then_some(Ok(()))
        });
        match result.and_then(|r| r) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.context(format!("log:\n{}", self.log_tail(40)))),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("node is not running")?;
        let pid = i32::try_from(child.id())?;
        // The workspace denies unsafe code, so signals go through kill(1) rather than libc.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let child = self.child.as_mut().context("node is not running")?;
        let status = wait_for(timeout, "the node to exit after SIGTERM", || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Ok(status)
    }

    /// Waits for the process to exit on its own (bounded).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("node is not running")?;
        let status = wait_for(timeout, "the node to exit", || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Ok(status)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GETs a path from the node's HTTP port: (status, body).
    pub fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.http_addr, path)
    }

    /// `host:port` of gRPC, for the client.
    pub fn grpc_target(&self) -> String {
        self.grpc_addr.to_string()
    }

    /// A client logged in as the bootstrap admin.
    pub async fn connect(&self) -> anyhow::Result<gridmesh_proto::client::Client> {
        connect_admin(&self.grpc_target()).await
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `n` cluster members named `n0`.. under `dir`, each seeded with every member's cluster
/// address (itself included, as a shared seed list would be). Not started.
pub fn cluster_processes(
    dir: &Path,
    n: usize,
    binary: &Path,
    cookie: &str,
) -> anyhow::Result<Vec<NodeProcess>> {
    let ports: Vec<SocketAddr> = (0..n)
        .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
        .collect::<anyhow::Result<_>>()?;
    ports
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let mut node = NodeProcess::new(&dir.join(format!("n{i}")))?
                .binary(binary)
                .clustered(&format!("n{i}"), cookie, &ports)?;
            // Use the pre-allocated port so every seed list is right from the start.
            node.cluster = Some((format!("n{i}"), *addr));
            let at = node
                .extra_args
                .iter()
                .position(|a| a == "--cluster-addr")
                .context("cluster args")?;
            node.extra_args[at + 1] = addr.to_string();
            Ok(node)
        })
        .collect()
}

/// A minimal HTTP/1.1 GET (no client dependency needed for three fixed endpoints).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
