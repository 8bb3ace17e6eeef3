//! The monitor: what the nodes themselves say during a run, sampled from outside.
//!
//! Every [`SAMPLE_EVERY`] it asks each running node for its member list (and its shard map
//! when the view's epoch changed), and every second it reads each node's resident memory from
//! `/proc/<pid>/status`, the gauges of its `/metrics` and the meters it has active. Every call
//! has a short timeout, so a paused or cut-off node costs one timeout per round and never
//! stalls the others (they are asked concurrently). The report derives detection times and
//! shard moves from these samples ([`detection_time`], [`shards_moved`]); the checker derives
//! the memory and mailbox bounds and the single-activation check from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    GetShardMapRequest, ListActiveMetersRequest, ListMembersRequest, MemberState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::schedule::FaultWindow;

/// Interval between member-list samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Timeout of one admin call or scrape.
const CALL_TIMEOUT: Duration = Duration::from_millis(600);

/// Gauges sampled from `/metrics` (the maximum over label sets is kept).
pub const GAUGES: [&str; 6] = [
    "gridmesh_ingest_inflight_readings",
    "gridmesh_storage_write_queue",
    "gridmesh_forward_inflight",
    "gridmesh_active_actors",
    "gridmesh_mailbox_queued",
    "gridmesh_mailbox_high_water",
];

/// A node the monitor watches. The nemesis updates `pid` as it stops and starts the node.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// Node name (`n0`, ...).
    pub name: String,
    /// gRPC `host:port`.
    pub grpc: String,
    /// HTTP address.
    pub http: SocketAddr,
    /// Process id while running.
    pub pid: Option<u32>,
}

/// The slots, shared between the nemesis and the monitor.
pub type Slots = Arc<Mutex<Vec<NodeSlot>>>;

/// One member as one observer listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Member name.
    pub name: String,
    /// Its state in the observer's view.
    pub state: MemberState,
    /// Whether it drains.
    pub draining: bool,
    /// Whether it is still joining.
    pub joining: bool,
}

/// One observer's view at one moment.
#[derive(Debug, Clone)]
pub struct ViewSample {
    /// When, from the start of the run.
    pub at: Duration,
    /// Index of the observing node.
    pub observer: usize,
    /// Its view's epoch.
    pub epoch: u64,
    /// Members it lists.
    pub members: Vec<MemberView>,
    /// Owner of every shard in its latest map (fetched when the epoch changes).
    pub owners: Arc<Vec<String>>,
}

/// One node's resources at one moment.
#[derive(Debug, Clone)]
pub struct ResourceSample {
    /// When, from the start of the run.
    pub at: Duration,
    /// Node index.
    pub node: usize,
    /// Resident set size, bytes.
    pub rss_bytes: Option<u64>,
    /// Gauges from [`GAUGES`] (the largest value over their label sets).
    pub gauges: HashMap<String, f64>,
}

/// The meters one node had active at one moment.
#[derive(Debug, Clone)]
pub struct ActivitySample {
    /// Sampling round; the nodes of one round are asked at the same time.
    pub round: u64,
    /// When the answer came, from the start of the run.
    pub at: Duration,
    /// Node index.
    pub node: usize,
    /// Meters with a resident actor in shards the node owns, sorted.
    pub meters: Vec<String>,
}

/// Everything sampled.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Member views, in sampling order.
    pub views: Vec<ViewSample>,
    /// Resource samples, in sampling order.
    pub resources: Vec<ResourceSample>,
    /// Active-meter lists, in sampling order (once a second, with the resources).
    pub activity: Vec<ActivitySample>,
}

impl Observations {
    /// The largest resident size seen per node, bytes.
    pub fn max_rss(&self) -> HashMap<usize, u64> {
        let mut max: HashMap<usize, u64> = HashMap::new();
        for sample in &self.resources {
            if let Some(rss) = sample.rss_bytes {
                let entry = max.entry(sample.node).or_default();
                *entry = (*entry).max(rss);
            }
        }
        max
    }

    /// The largest value of each gauge over all nodes and samples.
    pub fn max_gauges(&self) -> HashMap<String, f64> {
        let mut max: HashMap<String, f64> = HashMap::new();
        for (name, value) in self.resources.iter().flat_map(|s| &s.gauges) {
            let entry = max.entry(name.clone()).or_insert(f64::MIN);
            *entry = entry.max(*value);
        }
        max
    }
}

/// Samples until `stop` turns true; returns what it saw.
pub async fn run(
    slots: Slots,
    run_start: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Observations {
    let mut observations = Observations::default();
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut last: HashMap<usize, (u64, Arc<Vec<String>>)> = HashMap::new();
    let mut round = 0u64;
    loop {
        let current: Vec<(usize, NodeSlot)> = {
            let slots = slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slots
                .iter()
                .cloned()
                .enumerate()
                .filter(|(_, s)| s.pid.is_some())
                .collect()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (index, slot) in &current {
            let client = clients.get(index).cloned();
            let known = last.get(index).cloned();
            let with_resources = round.is_multiple_of(5);
            let slot = slot.clone();
            let index = *index;
            tasks.spawn(async move {
                let client = match client {
                    Some(c) => Some(c),
                    None => connect(&slot.grpc).await,
                };
                let view = match &client {
                    Some(c) => sample_view(c, known).await,
                    None => None,
                };
                let (resources, active) = if with_resources {
                    let active = match &client {
                        Some(c) => active_meters(c).await,
                        None => None,
                    };
                    (Some(sample_resources(&slot).await), active)
                } else {
                    (None, None)
                };
                (index, client, view, resources, active)
            });
        }
        while let Some(Ok((index, client, view, resources, active))) = tasks.join_next().await {
            let at = run_start.elapsed();
            if let Some(client) = client {
                clients.insert(index, client);
            }
            if let Some((epoch, members, owners)) = view {
                last.insert(index, (epoch, owners.clone()));
                observations.views.push(ViewSample {
                    at,
                    observer: index,
                    epoch,
                    members,
                    owners,
                });
            }
            if let Some((at, meters)) = active {
                observations.activity.push(ActivitySample {
                    round,
                    at: at.saturating_duration_since(run_start),
                    node: index,
                    meters,
                });
            }
            if let Some((rss_bytes, gauges)) = resources {
                observations.resources.push(ResourceSample {
                    at,
                    node: index,
                    rss_bytes,
                    gauges,
                });
            }
        }
        round += 1;
        let stopped = tokio::time::timeout(SAMPLE_EVERY, stop.wait_for(|s| *s)).await;
        if matches!(stopped, Ok(Ok(_)) | Ok(Err(_))) {
            return observations;
        }
    }
}

async fn connect(grpc: &str) -> Option<Client> {
    tokio::time::timeout(CALL_TIMEOUT, crate::connect_admin(grpc))
        .await
        .ok()?
        .ok()
}

/// The meters active on a node in shards it owns, and when it answered; `None` when it did not
/// answer in time.
pub async fn active_meters(client: &Client) -> Option<(Instant, Vec<String>)> {
    let mut admin = client.admin();
    let call = admin.list_active_meters(ListActiveMetersRequest {});
    let reply = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((Instant::now(), reply.meter_ids))
}

type View = (u64, Vec<MemberView>, Arc<Vec<String>>);

async fn sample_view(client: &Client, known: Option<(u64, Arc<Vec<String>>)>) -> Option<View> {
    let mut admin = client.admin();
    let call = admin.list_members(ListMembersRequest {});
    let view = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    let members = view
        .members
        .iter()
        .map(|m| MemberView {
            name: m.name.clone(),
            state: MemberState::try_from(m.state).unwrap_or(MemberState::Unspecified),
            draining: m.draining,
            joining: m.joining,
        })
        .collect();
    let owners = match known {
        Some((epoch, owners)) if epoch == view.epoch => owners,
        _ => {
            let call = admin.get_shard_map(GetShardMapRequest {});
            let map = tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .ok()?
                .ok()?
                .into_inner();
            let mut shards = map.shards;
            shards.sort_by_key(|s| s.shard);
            Arc::new(shards.into_iter().map(|s| s.owner).collect())
        }
    };
    Some((view.epoch, members, owners))
}

async fn sample_resources(slot: &NodeSlot) -> (Option<u64>, HashMap<String, f64>) {
    let rss = slot.pid.and_then(rss_bytes);
    let gauges = match tokio::time::timeout(CALL_TIMEOUT, http_get(slot.http, "/metrics")).await {
        Ok(Ok(body)) => parse_gauges(&body),
        _ => HashMap::new(),
    };
    (rss, gauges)
}

/// `VmRSS` of a process, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// The largest value per gauge of [`GAUGES`] in a Prometheus text exposition.
pub fn parse_gauges(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Some(gauge) = GAUGES.iter().find(|g| **g == name) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let entry = out.entry((*gauge).to_owned()).or_insert(value);
        *entry = entry.max(value);
    }
    out
}

/// Name of node `i` in the cluster.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// From the window's start until every observer of it lists every victim as down, if that
/// happened before the window ended (plus one second). `None` also for windows without
/// victims or observers.
pub fn detection_time(views: &[ViewSample], window: &FaultWindow) -> Option<Duration> {
    let victims: Vec<String> = window.victims().into_iter().map(node_name).collect();
    let observers = window.observers();
    if victims.is_empty() || observers.is_empty() {
        return None;
    }
    let until = window.end() + Duration::from_secs(1);
    let mut worst = Duration::ZERO;
    for observer in observers {
        let seen = views
            .iter()
            .filter(|v| v.observer == observer && v.at >= window.start && v.at <= until)
            .find(|v| {
                victims.iter().all(|victim| {
                    v.members
                        .iter()
                        .any(|m| &m.name == victim && m.state == MemberState::Down)
                })
            })?;
        worst = worst.max(seen.at - window.start);
    }
    Some(worst)
}

/// How long until every member lists the node that joins as alive and owning shards.
pub fn join_time(views: &[ViewSample], window: &FaultWindow) -> Option<Duration> {
    let name = node_name(window.node);
    let until = window.end() + Duration::from_secs(5);
    let observers: Vec<usize> = (0..window.members).collect();
    let mut worst = Duration::ZERO;
    for observer in observers {
        let seen = views
            .iter()
            .filter(|v| v.observer == observer && v.at >= window.start && v.at <= until)
            .find(|v| {
                v.members
                    .iter()
                    .any(|m| m.name == name && m.state == MemberState::Alive && !m.joining)
                    && v.owners.contains(&name)
            })?;
        worst = worst.max(seen.at - window.start);
    }
    Some(worst)
}

/// The most shards whose owner differed, in one observer's view during the window, from its
/// map just before the window. The observer is the window's first observer (or node 0).
pub fn shards_moved(views: &[ViewSample], window: &FaultWindow) -> Option<usize> {
    let observer = window.observers().first().copied().unwrap_or(0);
    let own: Vec<&ViewSample> = views.iter().filter(|v| v.observer == observer).collect();
    let before = own.iter().rev().find(|v| v.at <= window.start)?;
    let moved = own
        .iter()
        .filter(|v| v.at > window.start && v.at <= window.end())
        .map(|v| {
            v.owners
                .iter()
                .zip(before.owners.iter())
                .filter(|(a, b)| a != b)
                .count()
        })
        .max()
        .unwrap_or(0);
    Some(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::FaultKind;

    fn window(kind: FaultKind, node: usize) -> FaultWindow {
        FaultWindow {
            start: Duration::from_secs(10),
            length: Duration::from_secs(4),
            kind,
            node,
            peer: node,
            members: 3,
            param: 0,
            nested: false,
        }
    }

    fn sample(at_ms: u64, observer: usize, down: &[usize], owners: &[&str]) -> ViewSample {
        ViewSample {
            at: Duration::from_millis(at_ms),
            observer,
            epoch: at_ms,
            members: (0..3)
                .map(|i| MemberView {
                    name: node_name(i),
                    state: if down.contains(&i) {
                        MemberState::Down
                    } else {
                        MemberState::Alive
                    },
                    draining: false,
                    joining: false,
                })
                .collect(),
            owners: Arc::new(owners.iter().map(|o| (*o).to_owned()).collect()),
        }
    }

    #[test]
    fn detection_waits_for_the_slowest_observer_and_shard_moves_count() {
        let views = vec![
            sample(9_900, 1, &[], &["n0", "n1", "n2"]),
            sample(10_500, 1, &[0], &["n1", "n1", "n2"]),
            sample(10_500, 2, &[], &["n0", "n1", "n2"]),
            sample(11_600, 2, &[0], &["n1", "n1", "n2"]),
            sample(12_000, 1, &[0], &["n1", "n1", "n1"]),
        ];
        let kill = window(FaultKind::Kill, 0);
        assert_eq!(
            detection_time(&views, &kill),
            Some(Duration::from_millis(1_600))
        );
        assert_eq!(shards_moved(&views, &kill), Some(2));
        // Node 2 is never seen down: not detected.
        assert_eq!(detection_time(&views, &window(FaultKind::Pause, 2)), None);
        assert_eq!(detection_time(&views, &window(FaultKind::Join, 3)), None);
    }

    #[test]
    fn gauges_keep_the_largest_series() {
        let text = "# TYPE gridmesh_forward_inflight gauge\n\
                    gridmesh_forward_inflight{peer=\"n1\"} 3\n\
                    gridmesh_forward_inflight{peer=\"n2\"} 7\n\
                    gridmesh_storage_write_queue 0\n\
                    gridmesh_other 99\n";
        let gauges = parse_gauges(text);
        assert_eq!(gauges["gridmesh_forward_inflight"], 7.0);
        assert_eq!(gauges["gridmesh_storage_write_queue"], 0.0);
        assert!(!gauges.contains_key("gridmesh_other"));
    }
}
