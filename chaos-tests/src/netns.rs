//! One Linux network namespace per node, joined by veth pairs to a bridge, and the nftables and
//! tc faults applied inside them.
//!
//! Layout of a run with id `<pid>` on subnet `10.201.<k>.0/24`:
//!
//! ```text
//!   root namespace: bridge gmc<pid>b   10.201.k.1        the harness's clients
//!                                      10.201.k.(100+i)  node i's alias: the proxy
//!        │ veth gmc<pid>v<i>
//!   namespace gmc-<pid>-n<i>: eth0     10.201.k.(10+i)   node i (gRPC, HTTP, cluster)
//! ```
//!
//! The namespaces get no default route and forwarding is left as it is, so their packets can
//! reach the bridge's subnet and nothing else; the root namespace's addresses exist only on the
//! bridge. Node-to-node traffic always goes through the proxy (node i dials peer j at j's alias;
//! the proxy dials j's real address from i's alias), so inside node j's namespace every packet
//! of the link with i carries i's alias address and nothing else does. That is what lets plain
//! nftables rules on addresses cut one link, one direction, or every link of a node, while the
//! clients' path (from 10.201.k.1) stays open.
//!
//! Every fault is one nftables table named after its window (`gmc_w<n>`), created to start the
//! fault and deleted to heal it. Everything the harness creates carries the prefix `gmc`
//! and the harness's pid, so [`cleanup_stale`] can remove what a crashed run left behind
//! (namespaces whose pid is gone, with the processes still inside them, and their bridge).
//! [`Network`]'s `Drop` removes everything of its own run.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// First octets of every subnet the harness uses.
const SUBNET_PREFIX: [u8; 2] = [10, 201];

/// Why the namespace mode cannot run here, or `None` when it can.
pub fn unavailable_reason() -> Option<String> {
    if !is_root() {
        return Some("not running as root (network namespaces and nftables need root)".into());
    }
    let missing: Vec<&str> = [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")]
        .into_iter()
        .filter(|(tool, _)| !tool_exists(tool))
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing tools; install the Debian packages: {} (apt-get install -y {})",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Runs a command with `input` on stdin, failing with its stderr.
fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .context("stdin of the child")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}\ninput:\n{input}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Removes what crashed runs left: `gmc-<pid>-*` namespaces and `gmc<pid>b` bridges whose pid
/// is no longer alive, killing the processes still inside those namespaces. Returns what it
/// removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let namespaces = run("ip", &["netns", "list"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let Some(pid) = name
            .strip_prefix("gmc-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        kill_namespace_processes(name);
        if run("ip", &["netns", "del", name]).is_ok() {
            removed.push(format!("namespace {name}"));
        }
    }
    let links = run("ip", &["-o", "link", "show"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in links.lines() {
        // `12: gmc123v0@if11: <...>`: the name up to `@` or `:`.
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let Some(pid) = link_owner(name) else {
            continue;
        };
        if !pid_alive(pid) && run("ip", &["link", "del", name]).is_ok() {
            removed.push(format!("link {name}"));
        }
    }
    removed
}

/// The pid in a link name the harness made: `gmc<pid>b` (bridge) or `gmc<pid>v<i>` (veth).
fn link_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("gmc")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let (pid, kind) = rest.split_at(digits);
    let valid = !pid.is_empty()
        && (kind == "b"
            || kind
                .strip_prefix('v')
                .is_some_and(|i| i.parse::<u32>().is_ok()));
    valid.then_some(pid)
}

fn pid_alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// SIGKILLs every process in namespace `name` (all of them were started by a harness run).
fn kill_namespace_processes(name: &str) {
    let pids = run("ip", &["netns", "pids", name])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

/// The namespaces, bridge and addresses of one run. Dropping it tears everything down.
#[derive(Debug)]
pub struct Network {
    id: u32,
    subnet: [u8; 3],
    slots: usize,
}

impl Network {
    /// Creates `slots` namespaces (nodes and spare nodes that may join) on a fresh bridge.
    pub fn create(slots: usize) -> anyhow::Result<Self> {
        if let Some(reason) = unavailable_reason() {
            bail!("network namespaces unavailable: {reason}");
        }
        if slots == 0 || slots > 80 {
            bail!("between 1 and 80 nodes fit on one bridge, not {slots}");
        }
        let id = std::process::id();
        let subnet = free_subnet()?;
        let network = Self { id, subnet, slots };
        network.create_bridge()?;
        for i in 0..slots {
            network
                .create_namespace(i)
                .with_context(|| format!("creating the namespace of node {i}"))?;
        }
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("gmc{}b", self.id)
    }

    fn root_veth(&self, i: usize) -> String {
        format!("gmc{}v{i}", self.id)
    }

    /// Name of node `i`'s namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("gmc-{}-n{i}", self.id)
    }

    /// Namespaces created (nodes plus spares).
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], host)
    }

    /// Node `i`'s own address, inside its namespace.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.ip(10 + i as u8)
    }

    /// Node `i`'s alias in the root namespace: its peers reach it there (through the proxy),
    /// and the proxy dials its peers from there.
    pub fn alias_ip(&self, i: usize) -> Ipv4Addr {
        self.ip(100 + i as u8)
    }

    /// The clients' address in the root namespace.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    fn create_bridge(&self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        let mut addresses = vec![self.client_ip()];
        addresses.extend((0..self.slots).map(|i| self.alias_ip(i)));
        for address in addresses {
            let cidr = format!("{address}/24");
            run("ip", &["addr", "add", &cidr, "dev", &bridge])?;
        }
        Ok(())
    }

    fn create_namespace(&self, i: usize) -> anyhow::Result<()> {
        let ns = self.namespace(i);
        let root = self.root_veth(i);
        let inner = format!("gmc{}p{i}", self.id);
        run("ip", &["netns", "add", &ns])?;
        run(
            "ip",
            &["link", "add", &root, "type", "veth", "peer", "name", &inner],
        )?;
        run("ip", &["link", "set", &inner, "netns", &ns])?;
        self.exec(i, "ip", &["link", "set", &inner, "name", "eth0"])?;
        let cidr = format!("{}/24", self.node_ip(i));
        self.exec(i, "ip", &["addr", "add", &cidr, "dev", "eth0"])?;
        self.exec(i, "ip", &["link", "set", "eth0", "up"])?;
        self.exec(i, "ip", &["link", "set", "lo", "up"])?;
        run("ip", &["link", "set", &root, "master", &self.bridge()])?;
        run("ip", &["link", "set", &root, "up"])?;
        Ok(())
    }

    /// Runs `program args` inside node `i`'s namespace.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let ns = self.namespace(i);
        let mut full = vec!["netns", "exec", ns.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Creates nftables table `table` in node `i`'s namespace with an input and an output
    /// chain holding `input` and `output` rules (one per line).
    pub fn add_table(
        &self,
        i: usize,
        table: &str,
        input: &[String],
        output: &[String],
    ) -> anyhow::Result<()> {
        let script = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -10; \
             policy accept;\n{}  }}\n  chain output {{\n    type filter hook output priority \
             -10; policy accept;\n{}  }}\n}}\n",
            rules_block(input),
            rules_block(output)
        );
        let ns = self.namespace(i);
        run_with_input("ip", &["netns", "exec", &ns, "nft", "-f", "-"], &script)
            .with_context(|| format!("adding nftables table {table} on node {i}"))
    }

    /// Deletes table `table` in node `i`'s namespace; a table that is not there is fine.
    pub fn delete_table(&self, i: usize, table: &str) -> anyhow::Result<()> {
        match self.exec(i, "nft", &["delete", "table", "inet", table]) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("No such file") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Limits node `i`'s link to `kbit` kbit/s each way with a token bucket (`tc tbf`) on both
    /// ends of its veth.
    pub fn limit_bandwidth(&self, i: usize, kbit: u32) -> anyhow::Result<()> {
        let rate = format!("{kbit}kbit");
        let args = [
            "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "32kbit",
            "latency", "400ms",
        ];
        self.exec(i, "tc", &args)?;
        let root = self.root_veth(i);
        let mut outer = args;
        outer[3] = &root;
        run("tc", &outer)?;
        Ok(())
    }

    /// Removes the bandwidth limit of node `i`.
    pub fn clear_bandwidth(&self, i: usize) -> anyhow::Result<()> {
        let inner = self.exec(i, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
        let outer = run("tc", &["qdisc", "del", "dev", &self.root_veth(i), "root"]);
        // Deleting a qdisc that is not there fails harmlessly; report only other failures.
        for result in [inner, outer] {
            if let Err(e) = result
                && !e.to_string().contains("No such file")
                && !e.to_string().contains("Cannot find")
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Established TCP connections inside node `i`'s namespace whose remote end is another
    /// node's own address: traffic that bypassed the proxy. Empty when all is well.
    pub fn connections_bypassing_proxy(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let out = self.exec(i, "ss", &["-Htn", "state", "established"])?;
        let peers: Vec<String> = (0..self.slots)
            .filter(|j| *j != i)
            .map(|j| format!("{}:", self.node_ip(j)))
            .collect();
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| {
                let remote = line.split_whitespace().nth(3).unwrap_or("");
                peers.iter().any(|p| remote.starts_with(p.as_str()))
            })
            .map(|line| format!("node {i}: {}", line.trim()))
            .collect())
    }
}

fn rules_block(rules: &[String]) -> String {
    rules.iter().map(|r| format!("    {r}\n")).collect()
}

/// The first `10.201.k.0/24` no interface uses.
fn free_subnet() -> anyhow::Result<[u8; 3]> {
    let addresses = run("ip", &["-o", "-4", "addr", "show"])?;
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let used = format!(
        "{}{}",
        String::from_utf8_lossy(&addresses.stdout),
        String::from_utf8_lossy(&routes.stdout)
    );
    let start = (std::process::id() % 250) as u8;
    (0..=255u8)
        .map(|k| start.wrapping_add(k))
        .find(|k| {
            let prefix = format!("{}.{}.{k}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
            !used.contains(&prefix)
        })
        .map(|k| [SUBNET_PREFIX[0], SUBNET_PREFIX[1], k])
        .context("no free 10.201.x.0/24 subnet for the chaos bridge")
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.slots {
            let ns = self.namespace(i);
            kill_namespace_processes(&ns);
            let _ = run("ip", &["netns", "del", &ns]);
            // A namespace can outlive its name for a while (the kernel dismantles it lazily),
            // and its veth with it: delete the root end, which takes the pair.
            let _ = run("ip", &["link", "del", &self.root_veth(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_harness_link_names_have_owners() {
        assert_eq!(link_owner("gmc4242b"), Some("4242"));
        assert_eq!(link_owner("gmc4242v12"), Some("4242"));
        assert_eq!(link_owner("gmc4242p1"), None);
        assert_eq!(link_owner("gmcb"), None);
        assert_eq!(link_owner("eth0"), None);
        assert_eq!(link_owner("gmc12vx"), None);
    }
}
