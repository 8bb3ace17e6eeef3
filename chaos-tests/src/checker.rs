//! The checker: compares the workload's history with what the cluster stores, and checks the
//! cluster's own invariants after healing.
//!
//! [`check_history`] is pure: given every request with its outcome and every stored reading,
//! it finds acknowledged readings that are missing or changed (lost), readings that were
//! refused yet stored, and stored readings nobody sent. Unknown outcomes may go either way and
//! are counted. [`read_back`] fetches what the node stores, paginating through every meter.
//!
//! Beyond the history: [`check_resources`] (every node's memory and in-flight gauges stayed
//! under their bounds during the run) and [`views_converged`] (after healing, every node lists
//! every member alive and computes the same shard map).
//!
//! With replication (factor above 1, as `GetReplicaStatus` reports it): [`replicas_converged`]
//! waits (bounded) until the nodes report every shard's live home replicas equal and no hinted
//! write pending, without asking for a repair, and [`under_replicated`] counts, from every
//! node's own copy (`GetReadings.local_only`), the acknowledged readings held by fewer than
//! `min(factor, members)` nodes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetMeterStatusRequest, GetReadingsRequest, GetReplicaStatusRequest,
    GetShardMapRequest, ListAlertsRequest, ListMembersRequest, MemberState, Resolution,
};

use crate::monitor::Observations;
use crate::workload::{self, Op, Outcome, WorkloadConfig};

/// Acknowledged readings that may be missing without a violation: those acknowledged before a
/// node's data directory was wiped, of meters whose shard that node owned before the wipe, in
/// a cluster that keeps **one copy** per reading. With more copies nothing is allowed to go.
#[derive(Debug, Clone, Default)]
pub struct WipeAllowance {
    /// Shards meters are hashed into.
    pub shard_count: u32,
    /// Per wipe: when, and the shards the wiped node owned in any map seen before it.
    pub wipes: Vec<(Duration, HashSet<u32>)>,
}

impl WipeAllowance {
    /// Whether a reading of `meter` sent by a request that started at `start` may be lost.
    fn covers(&self, meter: &str, start: Duration) -> bool {
        if self.shard_count == 0 {
            return false;
        }
        let shard = gridmesh_actors::placement::shard_of(meter, self.shard_count);
        self.wipes
            .iter()
            .any(|(at, owned)| start < *at && owned.contains(&shard))
    }
}

/// Stored readings: (meter, ts) → energy.
pub type Stored = HashMap<(String, i64), f64>;

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckResult {
    /// Readings acknowledged.
    pub acked: u64,
    /// Acknowledged readings missing or stored with another value.
    pub lost: Vec<String>,
    /// Readings refused (definitely not stored) that are stored anyway.
    pub refused_but_stored: Vec<String>,
    /// Stored readings that no request sent.
    pub phantoms: Vec<String>,
    /// Readings with unknown outcome found stored.
    pub unknown_present: u64,
    /// Readings with unknown outcome not stored.
    pub unknown_absent: u64,
    /// Readings refused and (correctly) absent.
    pub refused: u64,
    /// Acknowledged readings missing that a wipe with one copy per reading explains.
    pub wiped: Vec<String>,
    /// Readings the read path returned more than once (filled by [`verify`]).
    pub duplicated: Vec<String>,
}

impl CheckResult {
    /// Whether no invariant was violated.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty()
            && self.refused_but_stored.is_empty()
            && self.phantoms.is_empty()
            && self.duplicated.is_empty()
    }
}

/// Checks the history against the stored readings. `allowance` lists wipes whose losses are
/// expected (one copy per reading only).
pub fn check_history(
    history: &[Op],
    stored: &Stored,
    allowance: Option<&WipeAllowance>,
) -> CheckResult {
    let mut result = CheckResult::default();
    let mut sent: HashMap<(String, i64), ()> = HashMap::new();
    for op in history {
        for (index, (meter, ts, energy)) in op.readings.iter().enumerate() {
            let key = (meter.clone(), *ts);
            sent.insert(key.clone(), ());
            let found = stored.get(&key);
            let describe = || {
                format!(
                    "{meter}@{ts} (request at {:?}, client {})",
                    op.start, op.client
                )
            };
            match &op.outcome {
                Outcome::Acked { rejected } if !rejected.contains(&(index as u32)) => {
                    result.acked += 1;
                    let wiped = allowance.is_some_and(|a| a.covers(meter, op.start));
                    match found {
                        Some(stored) if stored == energy => {}
                        None if wiped => result.wiped.push(describe()),
                        _ => result.lost.push(describe()),
                    }
                }
                Outcome::Acked { .. } | Outcome::Failed(_) => {
                    result.refused += 1;
                    if found.is_some() {
                        result.refused_but_stored.push(describe());
                    }
                }
                Outcome::Unknown(_) => match found {
                    Some(_) => result.unknown_present += 1,
                    None => result.unknown_absent += 1,
                },
            }
        }
    }
    for (meter, ts) in stored.keys() {
        if !sent.contains_key(&(meter.clone(), *ts)) {
            result.phantoms.push(format!("{meter}@{ts}"));
        }
    }
    result
}

/// Messages beyond the admitted readings a mailbox may hold (queries, control messages).
pub const MAILBOX_MARGIN: f64 = 1_000.0;

/// Upper bounds on what the monitor sampled.
#[derive(Debug, Clone)]
pub struct ResourceBounds {
    /// Resident memory of any node, bytes.
    pub max_rss_bytes: u64,
    /// Gauge name → largest value allowed.
    pub gauges: Vec<(String, f64)>,
}

impl ResourceBounds {
    /// `max_rss_mib`, and the in-flight limits of a node with the default configuration
    /// (readings in flight per node, forwarded calls in flight per peer, and what these
    /// allow into one mailbox).
    pub fn node_defaults(max_rss_mib: u64) -> Self {
        let defaults = gridmesh_config::Config::default();
        Self {
            max_rss_bytes: max_rss_mib << 20,
            gauges: vec![
                (
                    "gridmesh_ingest_inflight_readings".to_owned(),
                    f64::from(defaults.ingest.max_inflight_readings),
                ),
                (
                    "gridmesh_forward_inflight".to_owned(),
                    f64::from(defaults.cluster.max_inflight_per_peer),
                ),
                // Every message on the ingest path carries admitted readings, so no mailbox
                // holds more messages than there are readings in flight; the margin is for
                // queries and control messages, which admission does not count.
                (
                    "gridmesh_mailbox_high_water".to_owned(),
                    f64::from(defaults.ingest.max_inflight_readings) + MAILBOX_MARGIN,
                ),
            ],
        }
    }
}

/// Violations of the bounds, naming the node and when.
pub fn check_resources(observations: &Observations, bounds: &ResourceBounds) -> Vec<String> {
    let mut violations = Vec::new();
    for sample in &observations.resources {
        if let Some(rss) = sample.rss_bytes.filter(|r| *r > bounds.max_rss_bytes) {
            violations.push(format!(
                "node {} used {} MiB of memory at {:.1} s (bound {} MiB)",
                sample.node,
                rss >> 20,
                sample.at.as_secs_f64(),
                bounds.max_rss_bytes >> 20
            ));
        }
        for (gauge, bound) in &bounds.gauges {
            if let Some(value) = sample.gauges.get(gauge).filter(|v| *v > bound) {
                violations.push(format!(
                    "node {}: {gauge} = {value} at {:.1} s (bound {bound})",
                    sample.node,
                    sample.at.as_secs_f64()
                ));
            }
        }
    }
    violations.truncate(20);
    violations
}

/// Waits (bounded) until every node in `clients` lists exactly `members` members, all alive and
/// neither joining nor draining, and all nodes compute the same owner for every shard. Epochs
/// are not compared: each node counts its own view changes. Returns how long it took, or what
/// still differed at the deadline.
pub async fn views_converged(
    clients: &[Client],
    members: usize,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let differences = view_differences(clients, members).await;
        if differences.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "views did not converge within {timeout:?} after healing: {}",
                differences.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn view_differences(clients: &[Client], members: usize) -> Vec<String> {
    let call = Duration::from_secs(2);
    let mut differences = Vec::new();
    let mut maps: Vec<(String, Vec<String>)> = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let mut admin = client.admin();
        let view = tokio::time::timeout(call, admin.list_members(ListMembersRequest {}));
        let Ok(Ok(view)) = view.await.map(|r| r.map(tonic::Response::into_inner)) else {
            differences.push(format!("node {i} does not answer ListMembers"));
            continue;
        };
        let settled = view.members.len() == members
            && view
                .members
                .iter()
                .all(|m| m.state == MemberState::Alive as i32 && !m.joining && !m.draining);
        if !settled {
            let listed: Vec<String> = view
                .members
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}{}",
                        m.name,
                        m.state,
                        if m.draining { "d" } else { "" }
                    )
                })
                .collect();
            differences.push(format!("node {i} lists {listed:?}"));
        }
        let map = tokio::time::timeout(call, admin.get_shard_map(GetShardMapRequest {}));
        let Ok(Ok(map)) = map.await.map(|r| r.map(tonic::Response::into_inner)) else {
            differences.push(format!("node {i} does not answer GetShardMap"));
            continue;
        };
        let mut shards = map.shards;
        shards.sort_by_key(|s| s.shard);
        maps.push((
            map.answered_by,
            shards.into_iter().map(|s| s.owner).collect(),
        ));
    }
    if let Some((first, owners)) = maps.first() {
        for (node, other) in &maps[1..] {
            let differ = owners.iter().zip(other).filter(|(a, b)| a != b).count();
            if differ > 0 || owners.len() != other.len() {
                differences.push(format!(
                    "{node} and {first} disagree on {differ} shard owners"
                ));
            }
        }
    }
    differences
}

/// Everything `client` stores for `meters` between `from` and `to`, and the readings the
/// answers listed more than once (a reading must come back exactly once, however many copies
/// the members hold).
pub async fn read_back(
    client: &Client,
    meters: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<(Stored, Vec<String>)> {
    read_pages(client, meters, from, to, false).await
}

/// What the node behind `client` stores itself (`local_only`), with duplicates as in
/// [`read_back`].
pub async fn read_local(
    client: &Client,
    meters: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<(Stored, Vec<String>)> {
    read_pages(client, meters, from, to, true).await
}

async fn read_pages(
    client: &Client,
    meters: &[String],
    from: i64,
    to: i64,
    local_only: bool,
) -> anyhow::Result<(Stored, Vec<String>)> {
    let mut stored = Stored::new();
    let mut duplicated = Vec::new();
    for meter in meters {
        let mut cursor = from;
        loop {
            let request = GetReadingsRequest {
                meter_id: meter.clone(),
                from_ts_ms: cursor,
                to_ts_ms: to,
                resolution: Resolution::Raw as i32,
                limit: 10_000,
                local_only,
            };
            let page = client.query().get_readings(request).await?.into_inner();
            if !page.unavailable_nodes.is_empty() {
                anyhow::bail!(
                    "reading back {meter}: nodes {:?} did not answer; cannot check",
                    page.unavailable_nodes
                );
            }
            for r in &page.readings {
                let energy = r.interval_energy_import_wh.unwrap_or(f64::NAN);
                if stored.insert((meter.clone(), r.ts_ms), energy).is_some() {
                    duplicated.push(format!("{meter}@{} returned twice", r.ts_ms));
                }
            }
            match (page.truncated, page.readings.last()) {
                (true, Some(last)) => cursor = last.ts_ms + 1,
                _ => break,
            }
        }
    }
    Ok((stored, duplicated))
}

/// Copies per reading and the cluster's settings, as the nodes report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Copies kept per reading (`replication.factor`; 1 on a single node).
    pub factor: u32,
    /// Copies durable before an ack.
    pub write_quorum: u32,
}

/// The replication settings in effect, from `GetReplicaStatus` (`None` when the node has no
/// such RPC or does not answer).
pub async fn replication(client: &Client) -> Option<Replication> {
    let mut admin = client.admin();
    let request = GetReplicaStatusRequest {
        shards: vec![0],
        before_ts_ms: None,
    };
    let call = tokio::time::timeout(Duration::from_secs(5), admin.get_replica_status(request));
    let status = call.await.ok()?.ok()?.into_inner();
    Some(Replication {
        factor: status.replication_factor,
        write_quorum: status.write_quorum,
    })
}

/// Waits (bounded) until every shard's live home replicas hold the same readings, no copy
/// elsewhere holds one they lack, every home member answered, and no hinted write is pending.
/// The nodes get there by hinted handoff and anti-entropy on their own; nothing is asked to
/// repair. Returns how long it took and, if it had to wait, what it first waited for; or what
/// still differed at the deadline.
pub async fn replicas_converged(
    client: &Client,
    timeout: Duration,
) -> Result<(Duration, Option<String>), String> {
    let started = Instant::now();
    let mut first_problem = None;
    loop {
        let mut admin = client.admin();
        let request = GetReplicaStatusRequest {
            shards: Vec::new(),
            before_ts_ms: None,
        };
        let call = tokio::time::timeout(Duration::from_secs(10), admin.get_replica_status(request));
        let problem = match call.await {
            Ok(Ok(status)) => {
                let status = status.into_inner();
                let differing: Vec<String> = status
                    .shards
                    .iter()
                    .filter(|s| !s.converged || !s.unavailable.is_empty())
                    .map(|s| {
                        let copies: Vec<String> = s
                            .copies
                            .iter()
                            .map(|c| format!("{}={}@{:x}", c.node, c.readings, c.digest))
                            .collect();
                        format!("shard {} home {:?} copies {copies:?}", s.shard, s.home)
                    })
                    .collect();
                let hints: u64 = status
                    .nodes
                    .iter()
                    .flat_map(|n| n.hints_pending.values())
                    .sum();
                let errors: Vec<&str> = status
                    .nodes
                    .iter()
                    .filter(|n| !n.error.is_empty())
                    .map(|n| n.error.as_str())
                    .collect();
                if differing.is_empty() && hints == 0 && errors.is_empty() {
                    return Ok((started.elapsed(), first_problem));
                }
                format!(
                    "{} shard(s) differ (first: {}); {hints} hinted write(s) pending; \
                     errors {errors:?}",
                    differing.len(),
                    differing.first().map_or("-", String::as_str)
                )
            }
            Ok(Err(status)) => format!("GetReplicaStatus failed: {status}"),
            Err(_) => "GetReplicaStatus did not answer within 10 s".to_owned(),
        };
        if first_problem.is_none() {
            first_problem = Some(problem.clone());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "replicas did not converge within {timeout:?} after healing: {problem}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (bounded) until every shard has been reported converged (live home replicas equal,
/// no copy elsewhere holding a reading they lack, every home member answering) at least once
/// since the call began, counting only readings stamped before `before_ms` when it is given.
/// With writes in flight the shards are rarely all equal at one instant, and under a steady
/// load some never are: a cutoff in the past (older readings are no longer being written)
/// asks only whether the copies agree on those.
pub async fn each_shard_converged(
    client: &Client,
    timeout: Duration,
    before_ms: Option<i64>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut seen: HashSet<u32> = HashSet::new();
    loop {
        let mut admin = client.admin();
        let request = GetReplicaStatusRequest {
            shards: Vec::new(),
            before_ts_ms: before_ms,
        };
        let call = tokio::time::timeout(Duration::from_secs(10), admin.get_replica_status(request));
        let problem = match call.await {
            Ok(Ok(status)) => {
                let shards = status.into_inner().shards;
                seen.extend(
                    shards
                        .iter()
                        .filter(|s| s.converged && s.unavailable.is_empty())
                        .map(|s| s.shard),
                );
                let pending: Vec<u32> = shards
                    .iter()
                    .map(|s| s.shard)
                    .filter(|s| !seen.contains(s))
                    .collect();
                if pending.is_empty() && !shards.is_empty() {
                    return Ok(started.elapsed());
                }
                format!(
                    "{} shard(s) never seen converged: {pending:?}",
                    pending.len()
                )
            }
            Ok(Err(status)) => format!("GetReplicaStatus failed: {status}"),
            Err(_) => "GetReplicaStatus did not answer within 10 s".to_owned(),
        };
        if started.elapsed() > timeout {
            return Err(format!("not converged within {timeout:?}: {problem}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One line on the shards whose home replicas differ now, the furthest apart first (by
/// readings held), for notes.
pub async fn replica_snapshot(client: &Client) -> String {
    let mut admin = client.admin();
    let request = GetReplicaStatusRequest {
        shards: Vec::new(),
        before_ts_ms: None,
    };
    let call = tokio::time::timeout(Duration::from_secs(10), admin.get_replica_status(request));
    let Ok(Ok(status)) = call.await else {
        return "no replica status".to_owned();
    };
    let mut differing: Vec<(u64, String)> = status
        .into_inner()
        .shards
        .iter()
        .filter(|s| !s.converged)
        .map(|s| {
            let home: Vec<_> = s.copies.iter().filter(|c| c.home).collect();
            let most = home.iter().map(|c| c.readings).max().unwrap_or(0);
            let least = home.iter().map(|c| c.readings).min().unwrap_or(0);
            let copies: Vec<String> = s
                .copies
                .iter()
                .map(|c| format!("{}{}={}", c.node, if c.home { "" } else { "*" }, c.readings))
                .collect();
            (
                most - least,
                format!("shard {} {}", s.shard, copies.join(" ")),
            )
        })
        .collect();
    differing.sort_by_key(|d| std::cmp::Reverse(d.0));
    let worst: Vec<String> = differing.iter().take(3).map(|(_, d)| d.clone()).collect();
    format!(
        "{} shard(s) differ; widest: {}",
        differing.len(),
        worst.join("; ")
    )
}

/// Acknowledged readings that fewer than `expected` of the nodes' own copies hold with the
/// value sent, and copies that hold another value.
pub fn under_replicated(history: &[Op], copies: &[Stored], expected: usize) -> Vec<String> {
    let mut short = Vec::new();
    for op in history {
        let Outcome::Acked { rejected } = &op.outcome else {
            continue;
        };
        for (index, (meter, ts, energy)) in op.readings.iter().enumerate() {
            if rejected.contains(&(index as u32)) {
                continue;
            }
            let key = (meter.clone(), *ts);
            let held = copies
                .iter()
                .filter(|c| c.get(&key) == Some(energy))
                .count();
            let other = copies
                .iter()
                .filter(|c| c.get(&key).is_some_and(|e| e != energy));
            if held < expected {
                short.push(format!("{meter}@{ts}: {held} of {expected} copies"));
            }
            if other.count() > 0 {
                short.push(format!(
                    "{meter}@{ts}: a copy holds another value than was sent"
                ));
            }
        }
    }
    short
}

/// Reads every node's own copy and returns the acknowledged readings with too few copies
/// (`min(factor, nodes)` expected).
pub async fn check_copies(
    config: &WorkloadConfig,
    grpc_targets: &[String],
    history: &[Op],
    factor: u32,
) -> anyhow::Result<Vec<String>> {
    let ids = meter_ids(config);
    let to = workload::now_ms();
    let mut copies = Vec::new();
    for target in grpc_targets {
        let client = crate::connect_admin(target).await?;
        copies.push(read_local(&client, &ids, config.base_ts_ms, to).await?.0);
    }
    let expected = (factor as usize).min(grpc_targets.len());
    Ok(tokio::task::block_in_place(|| {
        under_replicated(history, &copies, expected)
    }))
}

/// What the nodes say about the alert probe's frozen-run condition after healing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertCheck {
    /// Probe readings acknowledged.
    pub probe_readings: u64,
    /// Distinct alerts for the condition, as the first answering node has them.
    pub alerts: usize,
    /// Of those, the ones resolved as `merged` into another (raised on both sides of a
    /// partition).
    pub merged: usize,
    /// Alerts raised more than once, nodes disagreeing, or no alert although the run was long
    /// enough.
    pub violations: Vec<String>,
}

/// Checks that the probe's frozen run became exactly one alert that every node keeps the
/// same way: at most one alert that is not merged into another, the same alerts (id, state)
/// on every node, and one at all once the probe sent more than a run's worth of readings.
/// Alerts travel to the other nodes asynchronously, so it polls for up to `within`.
pub async fn check_alerts(
    grpc_targets: &[String],
    probe_readings: u64,
    within: Duration,
) -> AlertCheck {
    let deadline = Instant::now() + within;
    loop {
        let result = alerts_once(grpc_targets, probe_readings).await;
        if result.violations.is_empty() || Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn alerts_once(grpc_targets: &[String], probe_readings: u64) -> AlertCheck {
    let mut check = AlertCheck {
        probe_readings,
        ..AlertCheck::default()
    };
    let mut views: Vec<(String, AlertView)> = Vec::new();
    for target in grpc_targets {
        let listed = match crate::connect_admin(target).await {
            Ok(client) => client
                .alerts()
                .list_alerts(ListAlertsRequest {
                    kind: "frozen_run".into(),
                    asset_id: workload::PROBE_METER.into(),
                    ..ListAlertsRequest::default()
                })
                .await
                .map(|r| r.into_inner().alerts)
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        match listed {
            Ok(alerts) => {
                let mut view: AlertView = alerts
                    .into_iter()
                    .map(|a| (a.alert_id, a.state, a.resolved_by))
                    .collect();
                view.sort();
                views.push((target.clone(), view));
            }
            Err(e) => check
                .violations
                .push(format!("alerts of {target}: could not list them: {e}")),
        }
    }
    judge_alert_views(&views, &mut check);
    check
}

/// One node's alerts of the probe condition: (alert id, state, resolved by), sorted.
type AlertView = Vec<(String, i32, String)>;

/// The pure part of [`check_alerts`]: judges what each node listed.
fn judge_alert_views(views: &[(String, AlertView)], check: &mut AlertCheck) {
    let probe_readings = check.probe_readings;
    let Some((first, view)) = views.first() else {
        return;
    };
    check.alerts = view.len();
    check.merged = view.iter().filter(|a| a.2 == "merged").count();
    let live = check.alerts - check.merged;
    if live > 1 {
        check.violations.push(format!(
            "the probe's frozen run was raised as {live} alerts (not merged) on {first}: {view:?}"
        ));
    }
    if live == 0 && probe_readings > workload::PROBE_RUN + 1 {
        check.violations.push(format!(
            "{probe_readings} identical probe intervals raised no frozen-run alert on {first}"
        ));
    }
    for (target, other) in &views[1..] {
        if other != view {
            check.violations.push(format!(
                "alerts differ after healing: {first} has {view:?}, {target} has {other:?}"
            ));
        }
    }
}

fn meter_ids(config: &WorkloadConfig) -> Vec<String> {
    (0..config.clients)
        .flat_map(|c| (0..config.meters_per_client).map(move |m| workload::meter_id(c, m)))
        .collect()
}

/// Reads everything back through `grpc_target` and checks readings, per-meter counters (single
/// node only) and feeder aggregates. Returns the history check and further violations.
pub async fn verify(
    config: &WorkloadConfig,
    grpc_target: &str,
    history: &[Op],
    clustered: bool,
    allowance: Option<&WipeAllowance>,
) -> anyhow::Result<(CheckResult, Vec<String>)> {
    let client = crate::connect_admin(grpc_target).await?;
    let meters: Vec<(usize, usize)> = (0..config.clients)
        .flat_map(|c| (0..config.meters_per_client).map(move |m| (c, m)))
        .collect();
    let ids: Vec<String> = meters
        .iter()
        .map(|(c, m)| workload::meter_id(*c, *m))
        .collect();
    let to = crate::workload::now_ms();
    let (stored, duplicated) = read_back(&client, &ids, config.base_ts_ms, to).await?;
    // Checking a large history is CPU work: keep it off the runtime's other tasks.
    let mut check = tokio::task::block_in_place(|| check_history(history, &stored, allowance));
    check.duplicated = duplicated;
    let mut other = Vec::new();

    // Each meter counts what it stored exactly once. In a cluster a meter's counters are
    // per node (its history spans the nodes that owned it), so this needs one node.
    for id in ids.iter().filter(|_| !clustered) {
        let status = client
            .query()
            .get_meter_status(GetMeterStatusRequest {
                meter_id: id.clone(),
            })
            .await?
            .into_inner();
        let count = stored.keys().filter(|(meter, _)| meter == id).count() as u64;
        if status.readings_accepted != count {
            other.push(format!(
                "meter {id}: counts {} stored readings, {count} are stored",
                status.readings_accepted
            ));
        }
    }
    // Feeder load equals the sum of the stored readings of its meters.
    for f in 0..config.feeders {
        let feeder = format!("CHF-{f}");
        let expected: f64 = meters
            .iter()
            .filter(|(c, m)| workload::feeder_of(config, *c, *m) == feeder)
            .map(|(c, m)| workload::meter_id(*c, *m))
            .flat_map(|id| {
                stored
                    .iter()
                    .filter(move |((meter, _), _)| *meter == id)
                    .map(|(_, e)| *e)
            })
            .sum();
        let request = GetFeederLoadRequest {
            feeder_id: feeder.clone(),
            from_ts_ms: config.base_ts_ms - 86_400_000,
            to_ts_ms: to,
            resolution: Resolution::Day as i32,
        };
        let load = client.query().get_feeder_load(request).await?.into_inner();
        if !load.unavailable_nodes.is_empty() {
            other.push(format!(
                "feeder {feeder}: load incomplete after healing; unavailable: {:?}",
                load.unavailable_nodes
            ));
        }
        let actual: f64 = load
            .intervals
            .iter()
            .map(|i| i.customer_energy_import_wh)
            .sum();
        if (actual - expected).abs() > 1e-6 * expected.max(1.0) {
            other.push(format!(
                "feeder {feeder}: load {actual} Wh, stored readings sum to {expected} Wh"
            ));
        }
    }
    Ok((check, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_one_alert_kept_alike_everywhere() {
        let alert = |id: &str, state: i32, by: &str| (id.to_owned(), state, by.to_owned());
        let judge = |views: Vec<(&str, AlertView)>, readings: u64| {
            let mut check = AlertCheck {
                probe_readings: readings,
                ..AlertCheck::default()
            };
            let views: Vec<(String, AlertView)> =
                views.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
            judge_alert_views(&views, &mut check);
            check
        };
        let open = alert("k@1", 1, "");
        let merged = alert("k@2", 3, "merged");
        // One open alert and one merged into it (both sides of a partition), alike on both.
        let fine = judge(
            vec![
                ("n0", vec![open.clone(), merged.clone()]),
                ("n1", vec![open.clone(), merged.clone()]),
            ],
            40,
        );
        assert_eq!((fine.alerts, fine.merged), (2, 1));
        assert!(fine.violations.is_empty(), "{:?}", fine.violations);
        // Raised twice.
        let twice = judge(vec![("n0", vec![open.clone(), alert("k@3", 1, "")])], 40);
        assert_eq!(twice.violations.len(), 1, "{:?}", twice.violations);
        // Nodes disagree.
        let apart = judge(vec![("n0", vec![open.clone()]), ("n1", vec![])], 40);
        assert_eq!(apart.violations.len(), 1, "{:?}", apart.violations);
        // Never raised although the run was long enough; fine while it was too short.
        assert_eq!(judge(vec![("n0", vec![])], 40).violations.len(), 1);
        assert!(judge(vec![("n0", vec![])], 5).violations.is_empty());
    }

    fn op(outcome: Outcome, readings: &[(&str, i64, f64)]) -> Op {
        Op {
            client: 0,
            node: 0,
            start: Duration::ZERO,
            latency: Duration::ZERO,
            readings: readings
                .iter()
                .map(|(m, t, e)| ((*m).to_owned(), *t, *e))
                .collect(),
            outcome,
        }
    }

    #[test]
    fn finds_lost_changed_refused_and_phantom_readings() {
        let history = vec![
            op(
                Outcome::Acked { rejected: vec![1] },
                &[("a", 1, 5.0), ("a", 2, 6.0)],
            ),
            op(
                Outcome::Acked { rejected: vec![] },
                &[("b", 1, 1.0), ("b", 2, 2.0)],
            ),
            op(
                Outcome::Failed("ResourceExhausted".into()),
                &[("c", 1, 1.0)],
            ),
            op(
                Outcome::Unknown("DeadlineExceeded".into()),
                &[("d", 1, 1.0), ("d", 2, 1.0)],
            ),
        ];
        let stored: Stored = [
            (("a".to_owned(), 1), 5.0), // acked, present
            (("b".to_owned(), 1), 9.0), // acked, wrong value
            (("c".to_owned(), 1), 1.0), // refused but stored
            (("d".to_owned(), 1), 1.0), // unknown, present
            (("e".to_owned(), 7), 1.0), // nobody sent it
        ]
        .into_iter()
        .collect();
        let result = check_history(&history, &stored, None);
        assert_eq!(result.acked, 3);
        assert_eq!(
            result.lost.len(),
            2,
            "b@1 changed and b@2 missing: {:?}",
            result.lost
        );
        assert_eq!(result.refused_but_stored.len(), 1);
        assert_eq!(result.phantoms, vec!["e@7".to_owned()]);
        assert_eq!((result.unknown_present, result.unknown_absent), (1, 1));
        assert_eq!(result.refused, 2);
        assert!(!result.is_ok());
    }

    #[test]
    fn a_wipe_excuses_only_earlier_readings_of_the_shards_the_node_owned() {
        let shards = 8;
        let shard = |m: &str| gridmesh_actors::placement::shard_of(m, shards);
        let (owned, other) = (0..100)
            .map(|i| format!("M{i}"))
            .fold((None, None), |(o, t), m| {
                if shard(&m) == shard("M0") {
                    (o.or(Some(m)), t)
                } else {
                    (o, t.or(Some(m)))
                }
            });
        let (owned, other) = (owned.expect("a meter"), other.expect("another shard"));
        let mut early = op(Outcome::Acked { rejected: vec![] }, &[(&owned, 1, 1.0)]);
        early.start = Duration::from_secs(1);
        let mut late = op(Outcome::Acked { rejected: vec![] }, &[(&owned, 2, 1.0)]);
        late.start = Duration::from_secs(9);
        let mut elsewhere = op(Outcome::Acked { rejected: vec![] }, &[(&other, 1, 1.0)]);
        elsewhere.start = Duration::from_secs(1);
        let allowance = WipeAllowance {
            shard_count: shards,
            wipes: vec![(
                Duration::from_secs(5),
                [shard(&owned)].into_iter().collect(),
            )],
        };
        let result = check_history(&[early, late, elsewhere], &Stored::new(), Some(&allowance));
        assert_eq!(result.wiped.len(), 1, "{result:?}");
        assert_eq!(
            result.lost.len(),
            2,
            "after the wipe, and on another shard: {result:?}"
        );
    }

    #[test]
    fn resources_over_their_bounds_are_named() {
        use crate::monitor::ResourceSample;
        let sample = |node, rss_mib: u64, inflight: f64| ResourceSample {
            at: Duration::from_secs(3),
            node,
            rss_bytes: Some(rss_mib << 20),
            gauges: [("gridmesh_forward_inflight".to_owned(), inflight)]
                .into_iter()
                .collect(),
        };
        let observations = Observations {
            views: Vec::new(),
            resources: vec![sample(0, 100, 3.0), sample(1, 900, 70.0)],
            activity: Vec::new(),
        };
        let bounds = ResourceBounds {
            max_rss_bytes: 512 << 20,
            gauges: vec![("gridmesh_forward_inflight".to_owned(), 64.0)],
        };
        let violations = check_resources(&observations, &bounds);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations.iter().all(|v| v.starts_with("node 1")));
    }

    #[test]
    fn acknowledged_readings_need_their_copies() {
        let history = vec![
            op(
                Outcome::Acked { rejected: vec![1] },
                &[("a", 1, 1.0), ("a", 2, 1.0)],
            ),
            op(Outcome::Unknown("Unavailable".into()), &[("a", 3, 1.0)]),
            op(Outcome::Acked { rejected: vec![] }, &[("b", 1, 1.0)]),
        ];
        let one: Stored = [(("a".to_owned(), 1), 1.0), (("b".to_owned(), 1), 1.0)]
            .into_iter()
            .collect();
        let other: Stored = [(("a".to_owned(), 1), 1.0)].into_iter().collect();
        let short = under_replicated(&history, &[one.clone(), other], 2);
        // a@2 was rejected and a@3 unknown: only b@1 counts, with one copy.
        assert_eq!(short, vec!["b@1: 1 of 2 copies".to_owned()]);
        let changed: Stored = [(("a".to_owned(), 1), 7.0), (("b".to_owned(), 1), 1.0)]
            .into_iter()
            .collect();
        let short = under_replicated(&history, &[one, changed], 2);
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(short[1].contains("another value"));
    }

    #[test]
    fn a_clean_history_passes() {
        let history = vec![op(Outcome::Acked { rejected: vec![] }, &[("a", 1, 5.0)])];
        let stored: Stored = [(("a".to_owned(), 1), 5.0)].into_iter().collect();
        assert!(check_history(&history, &stored, None).is_ok());
    }
}
