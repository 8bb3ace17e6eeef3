//! Replication on a real three-node cluster (R = 2, W = 2): clients write readings with unique
//! identities through every node while one node is SIGKILLed, one loses its data directory and
//! comes back empty, and one is paused past the down deadline. After the faults heal and the
//! replicas converge, every acknowledged reading is readable exactly once, has a copy on at
//! least two nodes, and feeder load equals the sum of the stored readings.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use gridmesh_chaos::{NodeProcess, cluster_processes};
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetReadingsRequest, GetReplicaStatusRequest, ListMembersRequest,
    MemberState, Reading, ReadingBatch, RejectReason, RepairRequest, Resolution,
};

const COOKIE: &str = "replication-cookie-0123456789";
const FEEDERS: usize = 3;
const PER_FEEDER: usize = 8;
const METERS: usize = FEEDERS * PER_FEEDER;

const STEP_MS: i64 = 60_000;

/// Start of the test's readings: well in the past, so thousands of steps stay there too.
fn start_ts() -> i64 {
    base_ts() - 30 * DAY_MS
}

/// The reading of meter `m` at `step`: a unique identity and a value derived from it.
fn sample(m: usize, step: i64) -> Reading {
    Reading {
        meter_id: meter_id(m),
        ts_ms: start_ts() + step * STEP_MS,
        energy_import_register_wh: Some(1_000.0 + step as f64 * 20.0),
        interval_energy_import_wh: Some(energy(m, step)),
        active_power_w: Some(100.0),
        ..Reading::default()
    }
}

fn energy(m: usize, step: i64) -> f64 {
    ((m as i64 * 7 + step) % 13 + 1) as f64
}

/// What the writers learned about each reading `(meter, step)`.
#[derive(Debug, Default)]
struct History {
    acked: BTreeSet<(usize, i64)>,
    unknown: BTreeSet<(usize, i64)>,
    refused: BTreeSet<(usize, i64)>,
}

/// Writes step after step (one reading per meter per batch) through the nodes in turn until
/// `stop`; a batch's readings are acknowledged, refused (owner unavailable: not stored) or
/// unknown (error or timeout).
async fn write(clients: Vec<Client>, stop: Arc<AtomicBool>) -> History {
    let mut history = History::default();
    let mut step = 0i64;
    while !stop.load(Ordering::Relaxed) && step < 5000 {
        let client = &clients[step as usize % clients.len()];
        let batch = ReadingBatch {
            batch_id: step as u64,
            readings: (0..METERS).map(|m| sample(m, step)).collect(),
        };
        let mut ingest = client.ingest();
        match tokio::time::timeout(Duration::from_secs(5), ingest.push_batch(batch)).await {
            Ok(Ok(ack)) => {
                let ack = ack.into_inner();
                let mut refused = BTreeSet::new();
                for r in &ack.rejected {
                    assert_eq!(
                        r.reason,
                        RejectReason::OwnerUnavailable as i32,
                        "step {step}: {r:?}"
                    );
                    refused.insert(r.index as usize);
                }
                for m in 0..METERS {
                    if refused.contains(&m) {
                        history.refused.insert((m, step));
                    } else {
                        history.acked.insert((m, step));
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                history.unknown.extend((0..METERS).map(|m| (m, step)));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        step += 1;
    }
    history
}

async fn view(client: &Client) -> Option<HashMap<String, (i32, bool)>> {
    let members = client
        .admin()
        .list_members(ListMembersRequest {})
        .await
        .ok()?
        .into_inner();
    Some(
        members
            .members
            .into_iter()
            .map(|m| (m.name, (m.state, m.joining)))
            .collect(),
    )
}

/// Polls until `check` holds, or panics after `timeout`.
async fn until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every client's node sees every node alive and ready.
async fn healthy(clients: &[Client]) -> bool {
    for c in clients {
        let Some(v) = view(c).await else { return false };
        let ok = v.len() == clients.len()
            && v.values()
                .all(|(state, joining)| *state == MemberState::Alive as i32 && !joining);
        if !ok {
            return false;
        }
    }
    true
}

/// `client`'s node sees `node` down.
async fn sees_down(client: &Client, node: &str) -> bool {
    view(client)
        .await
        .is_some_and(|v| v.get(node).is_some_and(|s| s.0 == MemberState::Down as i32))
}

fn start_all(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut() {
        node.spawn().expect("spawn");
    }
    for node in nodes.iter_mut() {
        node.wait_ready(Duration::from_secs(30)).expect("ready");
    }
}

/// Readings of meter `m` as `client`'s node answers (merged, or its own copy only).
async fn readings_of(client: &Client, m: usize, local_only: bool) -> BTreeMap<i64, f64> {
    let answer = client
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: meter_id(m),
            from_ts_ms: start_ts(),
            to_ts_ms: start_ts() + 10 * DAY_MS,
            resolution: Resolution::Raw as i32,
            limit: 0,
            local_only,
        })
        .await
        .expect("readings")
        .into_inner();
    assert!(answer.unavailable_nodes.is_empty(), "{answer:?}");
    answer
        .readings
        .into_iter()
        .map(|r| (r.ts_ms, r.interval_energy_import_wh.unwrap_or(0.0)))
        .collect()
}

/// Copies beyond two of every stored reading, over all meters, and the readings counted.
async fn extra_copies(clients: &[Client]) -> (usize, usize) {
    let (mut extra, mut total) = (0, 0);
    for m in 0..METERS {
        let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
        for client in clients {
            for ts in readings_of(client, m, true).await.keys() {
                *copies.entry(*ts).or_default() += 1;
            }
        }
        total += copies.len();
        extra += copies.values().map(|n| n.saturating_sub(2)).sum::<usize>();
    }
    (extra, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_kill_empty_disk_and_pause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = env!("CARGO_BIN_EXE_gridmesh");
    let mut nodes = cluster_processes(dir.path(), 3, binary.as_ref(), COOKIE).expect("ports");
    for node in &mut nodes {
        node.env.push((
            "GRIDMESH_REPLICATION__ANTI_ENTROPY_INTERVAL".into(),
            "\"2s\"".into(),
        ));
    }
    start_all(&mut nodes);
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect(node).await);
    }
    until(Duration::from_secs(20), "a healthy cluster", || {
        healthy(&clients)
    })
    .await;
    clients[0]
        .registry()
        .import_topology(topology(FEEDERS, PER_FEEDER))
        .await
        .expect("topology");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(clients.clone(), stop.clone()));
    let progress = || tokio::time::sleep(Duration::from_millis(1500));
    progress().await;

    // 1. SIGKILL n1 mid-stream, keep writing, restart it on its own disk.
    nodes[1].kill().expect("kill n1");
    until(Duration::from_secs(10), "n1 down", || {
        sees_down(&clients[0], "n1")
    })
    .await;
    progress().await;
    nodes[1].start().expect("restart n1");
    until(Duration::from_secs(30), "n1 back", || healthy(&clients)).await;
    progress().await;

    // 2. n2 loses its disk: killed, data directory deleted, started empty.
    nodes[2].kill().expect("kill n2");
    std::fs::remove_dir_all(&nodes[2].data_dir).expect("delete n2's data");
    until(Duration::from_secs(10), "n2 down", || {
        sees_down(&clients[0], "n2")
    })
    .await;
    progress().await;
    nodes[2].start().expect("start n2 empty");
    until(Duration::from_secs(30), "n2 back", || healthy(&clients)).await;
    progress().await;

    // 3. SIGSTOP n0 past the down deadline, then SIGCONT: it returns as a new incarnation.
    nodes[0].signal(libc::SIGSTOP).expect("stop n0");
    until(Duration::from_secs(10), "n0 down", || {
        sees_down(&clients[1], "n0")
    })
    .await;
    progress().await;
    nodes[0].signal(libc::SIGCONT).expect("resume n0");
    until(Duration::from_secs(30), "n0 back", || healthy(&clients)).await;
    progress().await;

    stop.store(true, Ordering::Relaxed);
    let history = writer.await.expect("writer");
    println!(
        "acked {}, unknown {}, refused {}",
        history.acked.len(),
        history.unknown.len(),
        history.refused.len()
    );
    assert!(history.acked.len() > 500, "too few acknowledged readings");

    // Heal: repair rounds until every shard's live home replicas hold the same readings.
    until(Duration::from_secs(60), "replicas to converge", || async {
        let _ = clients[0].admin().repair(RepairRequest::default()).await;
        let status = clients[1]
            .admin()
            .get_replica_status(GetReplicaStatusRequest::default())
            .await
            .map(tonic::Response::into_inner);
        status.is_ok_and(|s| {
            s.shards.iter().all(|shard| shard.converged)
                && s.nodes
                    .iter()
                    .all(|n| n.hints_pending.values().sum::<u64>() == 0)
        })
    })
    .await;
    // Substitutes drop what they handed off (through their meter actors, just after the
    // handoff): wait until at most a few copies beyond R remain — those made while views
    // disagreed, which nothing owes anyone. Since writes fail over at the down deadline
    // instead of the forward timeout, more of them land while views disagree (up to 7.6 %
    // seen); more than a tenth would mean handed-off copies are kept.
    let mut extra;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        extra = extra_copies(&clients).await;
        if extra.0 * 10 <= extra.1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "copies beyond the replication factor: {} of {} readings",
        extra.0, extra.1
    );
    assert!(
        extra.0 * 10 <= extra.1,
        "substitutes kept {} copies of {} readings after handing them off",
        extra.0,
        extra.1
    );

    // Every acknowledged reading is readable once, from any node, with its value; no refused
    // reading is stored; every stored reading has copies on at least two nodes.
    let mut lost = Vec::new();
    let mut stored_sum = [0.0; FEEDERS];
    for m in 0..METERS {
        let merged = readings_of(&clients[m % 3], m, false).await;
        let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
        for client in &clients {
            for (ts, value) in readings_of(client, m, true).await {
                assert_eq!(
                    merged.get(&ts),
                    Some(&value),
                    "meter {m} ts {ts}: copies differ"
                );
                *copies.entry(ts).or_default() += 1;
            }
        }
        for (ts, n) in &copies {
            assert!(*n >= 2, "meter {m} ts {ts}: {n} copies");
        }
        let step_of = |ts: i64| (ts - start_ts()) / STEP_MS;
        let stored: BTreeSet<i64> = merged.keys().map(|ts| step_of(*ts)).collect();
        for &(mm, step) in history.acked.iter().filter(|(mm, _)| *mm == m) {
            if !stored.contains(&step) {
                lost.push((mm, step));
            }
        }
        for &(_, step) in history.refused.iter().filter(|(mm, _)| *mm == m) {
            assert!(
                !stored.contains(&step),
                "meter {m} step {step}: refused but stored"
            );
        }
        for (ts, value) in &merged {
            let step = step_of(*ts);
            assert!(
                history.acked.contains(&(m, step)) || history.unknown.contains(&(m, step)),
                "meter {m}: phantom reading at step {step}"
            );
            assert_eq!(
                *value,
                energy(m, step),
                "meter {m} step {step}: wrong value"
            );
            stored_sum[m / PER_FEEDER] += value;
        }
    }
    assert!(lost.is_empty(), "acknowledged readings lost: {lost:?}");

    // Feeder load is the sum of the stored readings: replicas are never counted twice.
    for (f, expected) in stored_sum.iter().enumerate() {
        let load = clients[f % 3]
            .query()
            .get_feeder_load(GetFeederLoadRequest {
                feeder_id: format!("F-{f}"),
                from_ts_ms: start_ts() - DAY_MS,
                to_ts_ms: start_ts() + 10 * DAY_MS,
                resolution: Resolution::Day as i32,
            })
            .await
            .expect("feeder load")
            .into_inner();
        let actual: f64 = load
            .intervals
            .iter()
            .map(|i| i.customer_energy_import_wh)
            .sum();
        assert!(
            (actual - expected).abs() < 1e-6,
            "feeder F-{f}: load {actual}, stored readings sum to {expected}"
        );
    }

    // The empty node was refilled: it holds a copy of what it is home for, and the handoff
    // backlog is gone.
    let status = clients[2]
        .admin()
        .get_replica_status(GetReplicaStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    let n2_copies: u64 = status
        .shards
        .iter()
        .flat_map(|s| s.copies.iter())
        .filter(|c| c.node == "n2" && c.home)
        .map(|c| c.readings)
        .sum();
    assert!(
        n2_copies > 0,
        "the emptied node was not refilled: {status:?}"
    );
    for node in &status.nodes {
        let pending: u64 = node.hints_pending.values().sum();
        assert_eq!(pending, 0, "{}: hints still pending", node.node);
    }

    // Digests with a cutoff count only older readings: none before the first step; before
    // step 5, some but fewer than in all, each shard still converged.
    let before = |ts: i64| {
        let client = clients[1].clone();
        async move {
            client
                .admin()
                .get_replica_status(GetReplicaStatusRequest {
                    shards: Vec::new(),
                    before_ts_ms: Some(ts),
                })
                .await
                .expect("status with a cutoff")
                .into_inner()
        }
    };
    let none = before(start_ts()).await;
    assert!(
        none.shards
            .iter()
            .all(|s| s.copies.is_empty() && s.converged),
        "readings before the first step: {none:?}"
    );
    let early = before(start_ts() + 5 * STEP_MS).await;
    let total = |s: &gridmesh_proto::v1::GetReplicaStatusResponse| -> u64 {
        s.shards
            .iter()
            .flat_map(|s| s.copies.iter())
            .map(|c| c.readings)
            .sum()
    };
    assert!(early.shards.iter().all(|s| s.converged), "{early:?}");
    assert!(
        total(&early) > 0 && total(&early) < total(&status),
        "cutoff copies {} of {}",
        total(&early),
        total(&status)
    );
}
