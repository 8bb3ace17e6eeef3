//! The nemesis: applies a schedule to a [`ClusterUnderTest`], logging when each fault really
//! started and healed.
//!
//! The schedule becomes a list of timed actions (start, heal, and for flapping partitions the
//! cuts and heals in between), applied in order. Network faults are nftables tables named
//! `gmc_w<window>` inside the namespaces (created to start the fault, deleted to heal it), tc
//! qdiscs on a node's veth, or toxics in the proxy; process faults are signals; membership
//! faults start a spare node or call `AdminService.DrainNode`. Whatever is still active when
//! the schedule ends (or when a step fails) is healed before [`run`] returns.
//!
//! Partitions cut only node-to-node links (the proxy's alias addresses): the clients, like
//! head-ends that reach every data centre, keep a path to both sides. `isolate` is the one
//! fault that also cuts the clients' path.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gridmesh_proto::v1::DrainNodeRequest;

use crate::cluster::ClusterUnderTest;
use crate::monitor::node_name;
use crate::netns::Network;
use crate::proxy::Toxics;
use crate::schedule::{FaultKind, FaultWindow};
use crate::workload::{Op, STEP_MS};

/// When a window really started and healed, and what happened on the way.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Started, from the run's start.
    pub started: Option<Duration>,
    /// Healed, from the run's start.
    pub healed: Option<Duration>,
    /// Remarks (e.g. a drain call that failed).
    pub notes: Vec<String>,
}

/// What the nemesis did.
#[derive(Debug, Clone, Default)]
pub struct NemesisLog {
    /// Per window, same order as the schedule.
    pub applied: Vec<Applied>,
    /// Node wipes: (node, when).
    pub wipes: Vec<(usize, Duration)>,
    /// Misbehaviour seen while applying faults (a node that exited non-zero after SIGTERM).
    pub violations: Vec<String>,
}

impl NemesisLog {
    /// The windows as they really happened: each one's start and length replaced by when its
    /// fault was applied and healed (they differ from the plan when a step took long, e.g. a
    /// wipe waiting for replicas). The report measures from these.
    pub fn effective(&self, planned: &[FaultWindow]) -> Vec<FaultWindow> {
        planned
            .iter()
            .zip(
                self.applied
                    .iter()
                    .chain(std::iter::repeat(&Applied::default())),
            )
            .map(|(w, applied)| match (applied.started, applied.healed) {
                (Some(start), Some(healed)) if healed >= start => FaultWindow {
                    start,
                    length: healed - start,
                    ..*w
                },
                _ => *w,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Heal,
    FlapHeal,
    Start,
    FlapCut,
}

/// The schedule as ordered actions: (time, action, window).
fn actions(windows: &[FaultWindow]) -> Vec<(Duration, Action, usize)> {
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        out.push((w.start, Action::Start, i));
        out.push((w.end(), Action::Heal, i));
        if w.kind == FaultKind::Flap && w.param > 1 {
            let phase = w.length / (2 * w.param - 1);
            for k in 1..(2 * w.param - 1) {
                let action = if k % 2 == 1 {
                    Action::FlapHeal
                } else {
                    Action::FlapCut
                };
                out.push((w.start + phase * k, action, i));
            }
        }
    }
    // Heals before starts at the same instant, so back-to-back windows do not overlap.
    out.sort();
    out
}

/// Applies `windows` from `start`, then heals everything still active. `history` is the
/// workload's (a wipe waits on what was written before the previous one).
pub async fn run(
    cluster: &mut ClusterUnderTest,
    windows: &[FaultWindow],
    start: Instant,
    history: Arc<tokio::sync::Mutex<Vec<Op>>>,
) -> anyhow::Result<NemesisLog> {
    let mut nemesis = Nemesis {
        cluster,
        start,
        log: NemesisLog {
            applied: vec![Applied::default(); windows.len()],
            ..NemesisLog::default()
        },
        active: BTreeMap::new(),
        history,
        wiped_before: None,
    };
    let mut result = Ok(());
    for (at, action, i) in actions(windows) {
        tokio::time::sleep_until((start + at).into()).await;
        if let Err(e) = nemesis.apply(&windows[i], i, action).await {
            result = Err(e.context(format!("applying {}", windows[i].describe())));
            break;
        }
    }
    let pending: Vec<usize> = nemesis.active.keys().copied().collect();
    for i in pending {
        let healed = nemesis.apply(&windows[i], i, Action::Heal).await;
        if result.is_ok() {
            result = healed.context("healing at the end of the schedule");
        }
    }
    result.map(|()| nemesis.log)
}

struct Nemesis<'a> {
    cluster: &'a mut ClusterUnderTest,
    start: Instant,
    log: NemesisLog,
    /// Windows started and not healed yet, with the nodes holding their nft tables.
    active: BTreeMap<usize, HashSet<usize>>,
    /// The workload's history so far.
    history: Arc<tokio::sync::Mutex<Vec<Op>>>,
    /// After a wipe: every workload reading that can have been sent before it is stamped
    /// before this (ms).
    wiped_before: Option<i64>,
}

impl Nemesis<'_> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn apply(&mut self, w: &FaultWindow, i: usize, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Start => {
                if w.kind == FaultKind::Wipe {
                    let note = self.wait_for_copies(w.node).await;
                    self.log.applied[i].notes.extend(note);
                }
                println!(
                    "[{:>6.1}s] start #{} {}",
                    self.now().as_secs_f64(),
                    i + 1,
                    w.describe()
                );
                self.log.applied[i].started = Some(self.now());
                self.active.insert(i, HashSet::new());
                self.start_fault(w, i).await
            }
            Action::FlapCut => self.cut(w, i),
            Action::FlapHeal => self.remove_tables(i),
            Action::Heal => {
                if !self.active.contains_key(&i) {
                    return Ok(());
                }
                let healed = self.heal_fault(w, i).await;
                self.active.remove(&i);
                self.log.applied[i].healed = Some(self.now());
                println!(
                    "[{:>6.1}s] healed #{} {}",
                    self.now().as_secs_f64(),
                    i + 1,
                    w.kind.name()
                );
                healed
            }
        }
    }

    fn network(&self) -> anyhow::Result<&Network> {
        self.cluster
            .network
            .as_ref()
            .context("network faults need the namespace mode")
    }

    async fn start_fault(&mut self, w: &FaultWindow, i: usize) -> anyhow::Result<()> {
        let node = w.node;
        match w.kind {
            FaultKind::Kill => self.block(|c| c.nodes[node].kill())?,
            FaultKind::Pause => self.cluster.nodes[node].signal(libc::SIGSTOP)?,
            FaultKind::Restart => {
                let status = self.block(|c| c.nodes[node].terminate(Duration::from_secs(30)))?;
                if !status.success() {
                    let tail = self.cluster.nodes[node].log_tail(30);
                    self.log.violations.push(format!(
                        "node {node} exited with {status} after SIGTERM:\n{tail}"
                    ));
                }
            }
            FaultKind::Wipe => {
                self.block(|c| c.nodes[node].kill())?;
                self.cluster.nodes[node].wipe_data()?;
                self.log.wipes.push((node, self.now()));
                self.wiped_before = Some(self.sent_before().await);
            }
            FaultKind::Isolate | FaultKind::Split | FaultKind::Flap | FaultKind::Bridge => {
                self.cut(w, i)?;
            }
            FaultKind::OneWay | FaultKind::Loss => self.cut(w, i)?,
            FaultKind::Bandwidth => self.network()?.limit_bandwidth(node, w.param)?,
            FaultKind::Latency | FaultKind::Slow | FaultKind::Reset => self.set_toxics(w)?,
            FaultKind::Join => self.cluster.spawn(node)?,
            FaultKind::Drain => {
                let note = self.drain(node, false).await;
                self.log.applied[i].notes.extend(note);
            }
        }
        self.cluster.refresh_pid(node);
        Ok(())
    }

    async fn heal_fault(&mut self, w: &FaultWindow, i: usize) -> anyhow::Result<()> {
        let node = w.node;
        match w.kind {
            FaultKind::Kill | FaultKind::Restart | FaultKind::Wipe => {
                if let Err(e) = self.block(|c| {
                    c.spawn(node)?;
                    c.nodes[node].wait_ready(Duration::from_secs(15))
                }) {
                    // Readiness may wait for another active fault; the end of the run waits
                    // again. A node that exits at start-up is not ready either: say which.
                    self.log.applied[i]
                        .notes
                        .push(format!("not ready 15 s after start: {e:#}"));
                }
            }
            FaultKind::Pause => self.cluster.nodes[node].signal(libc::SIGCONT)?,
            FaultKind::Bandwidth => self.network()?.clear_bandwidth(node)?,
            FaultKind::Latency | FaultKind::Slow | FaultKind::Reset => {
                if let Some(proxy) = &self.cluster.proxy {
                    proxy.clear();
                }
            }
            FaultKind::Drain => {
                let note = self.drain(node, true).await;
                self.log.applied[i].notes.extend(note);
            }
            FaultKind::Join => {}
            _ => {}
        }
        self.remove_tables(i)?;
        self.cluster.refresh_pid(node);
        Ok(())
    }

    /// Runs a blocking step (process waits) without stalling the runtime's other tasks.
    fn block<T>(&mut self, step: impl FnOnce(&mut ClusterUnderTest) -> T) -> T {
        let cluster = &mut *self.cluster;
        tokio::task::block_in_place(|| step(cluster))
    }

    /// Installs window `i`'s nftables tables (one per node it touches).
    fn cut(&mut self, w: &FaultWindow, i: usize) -> anyhow::Result<()> {
        let network = self.network()?;
        let rules = firewall_rules(&|n| network.alias_ip(n), w);
        let table = format!("gmc_w{}", i + 1);
        for (node, (input, output)) in &rules {
            network.add_table(*node, &table, input, output)?;
        }
        self.active.entry(i).or_default().extend(rules.keys());
        Ok(())
    }

    fn remove_tables(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(nodes) = self.active.get_mut(&i) else {
            return Ok(());
        };
        let nodes: Vec<usize> = nodes.drain().collect();
        let table = format!("gmc_w{}", i + 1);
        for node in nodes {
            self.network()?.delete_table(node, &table)?;
        }
        Ok(())
    }

    fn set_toxics(&mut self, w: &FaultWindow) -> anyhow::Result<()> {
        let proxy = self
            .cluster
            .proxy
            .as_ref()
            .context("proxy faults need the namespace mode")?;
        let toxics = match w.kind {
            FaultKind::Latency => Toxics {
                latency: Duration::from_millis(u64::from(w.param)),
                jitter: Duration::from_millis(u64::from(w.param / 4)),
                ..Toxics::default()
            },
            FaultKind::Slow => Toxics {
                bytes_per_s: Some(w.param),
                ..Toxics::default()
            },
            FaultKind::Reset => Toxics {
                reset_after: Some((Duration::from_millis(200), Duration::from_millis(1_500))),
                ..Toxics::default()
            },
            other => bail!("{} is not a proxy fault", other.name()),
        };
        proxy.set_node(w.node, toxics);
        if w.kind == FaultKind::Reset {
            let reset = proxy.reset_node(w.node);
            println!(
                "          reset {reset} open connection(s) of node {}",
                w.node
            );
        }
        Ok(())
    }

    /// A time every workload reading sent so far is stamped before: each client sends one
    /// request at a time with increasing timestamps, so a request still in flight is at most
    /// one step past the newest one recorded.
    async fn sent_before(&self) -> i64 {
        let newest = self
            .history
            .lock()
            .await
            .iter()
            .flat_map(|op| op.readings.iter().map(|(_, ts, _)| *ts))
            .max()
            .unwrap_or(0);
        newest + STEP_MS + 1
    }

    /// Before a wipe: with replication, waits (bounded, 120 s) until the node an earlier wipe
    /// emptied has been refilled, i.e. until every shard has been seen converged (see
    /// [`crate::checker::each_shard_converged`]) on the readings stamped before that wipe, so
    /// that this wipe removes one copy of each reading and never the last one: two failures
    /// at once are not what the fault means. The first wipe of a run waits for nothing (every
    /// acknowledged reading is on the write quorum); readings written after an earlier wipe
    /// went to the members then live, also on the write quorum. Only the earlier readings
    /// are compared because under a steady load the newest ones are always in flight to some
    /// copy, so whole shards may never be seen equal. Returns a note for the report.
    async fn wait_for_copies(&self, victim: usize) -> Option<String> {
        let peer = self.cluster.running().into_iter().find(|n| *n != victim)?;
        let client = crate::connect_admin(&self.cluster.nodes[peer].grpc_target())
            .await
            .ok()?;
        let factor = crate::checker::replication(&client).await?.factor;
        if factor <= 1 {
            return None;
        }
        let Some(before) = self.wiped_before else {
            return Some("the run's first wipe: no emptied node to wait for".to_owned());
        };
        let timeout = Duration::from_secs(120);
        let waited = crate::checker::each_shard_converged(&client, timeout, Some(before)).await;
        Some(match waited {
            Ok(took) => format!(
                "waited {:.1} s until every shard was seen converged on the readings written \
                 before the previous wipe",
                took.as_secs_f64()
            ),
            Err(e) => {
                let snapshot = crate::checker::replica_snapshot(&client).await;
                format!("wiped with the previous wipe not refilled: {e}; {snapshot}")
            }
        })
    }

    /// Drains node `node` (or cancels its drain) through its own gRPC port; a failure is a
    /// note for the report, not an error of the run.
    async fn drain(&self, node: usize, cancel: bool) -> Option<String> {
        let target = self.cluster.nodes[node].grpc_target();
        let call = async {
            let client = crate::connect_admin(&target).await?;
            let request = DrainNodeRequest {
                node: node_name(node),
                cancel,
            };
            let answer = client.admin().drain_node(request).await?.into_inner();
            anyhow::Ok(answer.shards_moving)
        };
        let what = if cancel { "undrain" } else { "drain" };
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(moving)) => {
                println!("          {what} node {node}: {moving} shard(s) moving");
                None
            }
            Ok(Err(e)) => Some(format!("{what} node {node} failed: {e:#}")),
            Err(_) => Some(format!("{what} node {node}: no answer within 5 s")),
        }
    }
}

/// The nftables rules of a window, per node: (input rules, output rules). `alias` is where a
/// node's peers see its traffic come from (see [`crate::netns`]).
pub fn firewall_rules(
    alias: &dyn Fn(usize) -> Ipv4Addr,
    w: &FaultWindow,
) -> BTreeMap<usize, (Vec<String>, Vec<String>)> {
    let mut rules: BTreeMap<usize, (Vec<String>, Vec<String>)> = BTreeMap::new();
    match w.kind {
        FaultKind::Isolate => {
            rules.insert(
                w.node,
                (
                    vec!["iifname \"eth0\" drop".to_owned()],
                    vec!["oifname \"eth0\" drop".to_owned()],
                ),
            );
        }
        FaultKind::Loss => {
            let drop = format!("numgen random mod 100 < {} drop", w.param);
            rules.insert(
                w.node,
                (
                    vec![format!("iifname \"eth0\" {drop}")],
                    vec![format!("oifname \"eth0\" {drop}")],
                ),
            );
        }
        FaultKind::OneWay => {
            // The peer drops everything from the node's alias: it does not hear the node.
            let from = alias(w.node);
            rules.insert(w.peer, (vec![format!("ip saddr {from} drop")], Vec::new()));
        }
        FaultKind::Split | FaultKind::Flap | FaultKind::Bridge => {
            for (a, b) in w.cut_pairs() {
                for (here, there) in [(a, b), (b, a)] {
                    let there = alias(there);
                    let entry = rules.entry(here).or_default();
                    entry.0.push(format!("ip saddr {there} drop"));
                    entry.1.push(format!("ip daddr {there} drop"));
                }
            }
        }
        _ => {}
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: FaultKind, param: u32) -> FaultWindow {
        FaultWindow {
            start: Duration::from_secs(10),
            length: Duration::from_secs(5),
            kind,
            node: 0,
            peer: 1,
            members: 3,
            param,
            nested: false,
        }
    }

    #[test]
    fn flapping_alternates_cuts_and_heals_inside_the_window() {
        let plan = actions(&[window(FaultKind::Flap, 3)]);
        let kinds: Vec<Action> = plan.iter().map(|(_, a, _)| *a).collect();
        assert_eq!(
            kinds,
            vec![
                Action::Start,
                Action::FlapHeal,
                Action::FlapCut,
                Action::FlapHeal,
                Action::FlapCut,
                Action::Heal
            ]
        );
        assert!(plan.windows(2).all(|p| p[0].0 <= p[1].0));
        assert_eq!(plan[1].0, Duration::from_secs(11));
    }

    #[test]
    fn partitions_drop_the_other_sides_aliases_and_isolation_drops_everything() {
        let alias = |n: usize| Ipv4Addr::new(10, 201, 0, 100 + n as u8);
        let split = firewall_rules(&alias, &window(FaultKind::Split, 0));
        assert_eq!(split.len(), 3);
        assert_eq!(
            split[&0].0,
            vec!["ip saddr 10.201.0.101 drop", "ip saddr 10.201.0.102 drop"]
        );
        assert_eq!(split[&2].1, vec!["ip daddr 10.201.0.100 drop"]);
        let oneway = firewall_rules(&alias, &window(FaultKind::OneWay, 0));
        assert_eq!(oneway.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            oneway[&1],
            (vec!["ip saddr 10.201.0.100 drop".to_owned()], vec![])
        );
        let mut bridge = window(FaultKind::Bridge, 0);
        bridge.node = 1;
        let bridged = firewall_rules(&alias, &bridge);
        assert!(
            !bridged.contains_key(&1),
            "the bridge node keeps every link"
        );
        let loss = firewall_rules(&alias, &window(FaultKind::Loss, 25));
        assert!(loss[&0].0[0].contains("numgen random mod 100 < 25 drop"));
        assert!(firewall_rules(&alias, &window(FaultKind::Isolate, 0))[&0].1[0].contains("drop"));
    }

    #[test]
    fn effective_windows_follow_what_was_applied() {
        let planned = [window(FaultKind::Wipe, 0), window(FaultKind::Kill, 0)];
        let log = NemesisLog {
            applied: vec![Applied {
                started: Some(Duration::from_secs(40)),
                healed: Some(Duration::from_secs(43)),
                notes: Vec::new(),
            }],
            ..NemesisLog::default()
        };
        let effective = log.effective(&planned);
        assert_eq!(
            (effective[0].start, effective[0].length),
            (Duration::from_secs(40), Duration::from_secs(3))
        );
        assert_eq!(effective[1], planned[1], "not applied: as planned");
    }

    #[test]
    fn a_heal_comes_before_a_start_at_the_same_time() {
        let mut second = window(FaultKind::Kill, 0);
        second.start = Duration::from_secs(15);
        let plan = actions(&[window(FaultKind::Pause, 0), second]);
        assert_eq!(plan[1], (Duration::from_secs(15), Action::Heal, 0));
        assert_eq!(plan[2], (Duration::from_secs(15), Action::Start, 1));
    }
}
