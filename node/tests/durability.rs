//! Durability and lifecycle of a real node process: SIGKILL mid-stream loses no acknowledged
//! reading and aggregates resume exactly; SIGTERM drains and exits 0; a data directory cannot
//! be shared; a bad configuration is refused with exit code 2.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetMeterStatusRequest, GetReadingsRequest, MeterStatus, PushAck, Reading,
    ReadingBatch, Resolution,
};

const METERS: usize = 40;
const STEPS: i64 = 150;

/// Batches of one quarter-hour for all meters, in time order.
fn batches() -> Vec<ReadingBatch> {
    (0..STEPS)
        .map(|k| ReadingBatch {
            batch_id: k as u64,
            readings: (0..METERS).map(|m| reading(&meter_id(m), k)).collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_sigkill_and_aggregates_resume_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(2, METERS / 2))
        .await
        .expect("import");

    // Four concurrent pushers; the node is SIGKILLed once 40 batches are acknowledged.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let all = batches();
    let queue = Arc::new(Mutex::new(all.clone().into_iter()));
    let mut pushers = Vec::new();
    for _ in 0..4 {
        let (client, queue, acked) = (
            client
                .clone()
                .with_retry(gridmesh_proto::client::RetryPolicy::none()),
            queue.clone(),
            acked.clone(),
        );
        pushers.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().expect("queue").next() else {
                    return;
                };
                let id = batch.batch_id;
                match client.push_batch(batch).await {
                    Ok((ack, _)) if ack.rejected.is_empty() => {
                        acked.lock().expect("acked").push(id)
                    }
                    Ok((ack, _)) => panic!("unexpected rejections before the kill: {ack:?}"),
                    Err(_) => return, // the node is gone
                }
            }
        }));
    }
    gridmesh_chaos::wait_for(Duration::from_secs(60), "40 acknowledged batches", || {
        (acked.lock().ok()?.len() >= 40).then_some(())
    })
    .expect("acks");
    node.kill().expect("SIGKILL");
    for pusher in pushers {
        pusher.await.expect("pusher");
    }
    let acked_ids: Vec<u64> = acked.lock().expect("acked").clone();
    assert!(acked_ids.len() >= 40);

    // Restart on the same directory: every acknowledged reading is there.
    node.start().expect("node restarts");
    let client = connect(&node).await;
    let stored = stored_readings(&client).await;
    for id in &acked_ids {
        for reading in &all[*id as usize].readings {
            assert_eq!(
                stored[&reading.meter_id].get(&reading.ts_ms),
                Some(reading),
                "acked reading lost: {} @ {}",
                reading.meter_id,
                reading.ts_ms
            );
        }
    }

    // Meter state resumed exactly: counters match what is stored.
    for m in 0..METERS {
        let status = client
            .query()
            .get_meter_status(GetMeterStatusRequest {
                meter_id: meter_id(m),
            })
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            status.readings_accepted,
            stored[&meter_id(m)].len() as u64,
            "meter {m}"
        );
        assert!(status.activations >= 1);
    }

    // Replaying everything (as a client that lost acks would) stores each reading once and
    // feeder load equals the sum of the stored readings, whatever was in flight at the kill.
    for batch in batches() {
        let (ack, _) = client.push_batch(batch).await.expect("replay");
        assert!(ack.rejected.is_empty(), "{ack:?}");
    }
    let stored = stored_readings(&client).await;
    for feeder in 0..2 {
        let expected: f64 = stored
            .iter()
            .filter(|(id, _)| {
                id[2..].parse::<usize>().ok().map(|i| i / (METERS / 2)) == Some(feeder)
            })
            .flat_map(|(_, rs)| rs.values())
            .map(|r| r.interval_energy_import_wh.unwrap_or_default())
            .sum();
        let load = client
            .query()
            .get_feeder_load(GetFeederLoadRequest {
                feeder_id: format!("F-{feeder}"),
                from_ts_ms: base_ts(),
                to_ts_ms: base_ts() + 3 * DAY_MS,
                resolution: Resolution::Day as i32,
            })
            .await
            .expect("feeder load")
            .into_inner();
        let total: f64 = load
            .intervals
            .iter()
            .map(|i| i.customer_energy_import_wh)
            .sum();
        assert_eq!(total, expected, "feeder F-{feeder}");
    }
    assert!(stored.values().all(|rs| rs.len() == STEPS as usize));
}

async fn stored_readings(
    client: &gridmesh_proto::client::Client,
) -> HashMap<String, BTreeMap<i64, Reading>> {
    let mut out = HashMap::new();
    for m in 0..METERS {
        let request = GetReadingsRequest {
            meter_id: meter_id(m),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + 3 * DAY_MS,
            resolution: Resolution::Raw as i32,
            limit: 0,
            local_only: false,
        };
        let readings = client
            .query()
            .get_readings(request)
            .await
            .expect("readings")
            .into_inner()
            .readings;
        out.insert(
            meter_id(m),
            readings.into_iter().map(|r| (r.ts_ms, r)).collect(),
        );
    }
    out
}

/// `gridmesh_meter_state_rebuilds_total` on the node's /metrics (absent: none yet).
fn state_rebuilds(node: &gridmesh_chaos::NodeProcess) -> u64 {
    let (_, body) = node.http_get("/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("gridmesh_meter_state_rebuilds_total "))
        .map_or(0, |v| {
            v.trim().parse::<f64>().expect("counter value") as u64
        })
}

async fn push_one(client: &gridmesh_proto::client::Client, reading: Reading) -> PushAck {
    client
        .push_batch(ReadingBatch {
            batch_id: 1,
            readings: vec![reading],
        })
        .await
        .expect("push")
        .0
}

async fn status_of(client: &gridmesh_proto::client::Client, m: usize) -> MeterStatus {
    client
        .query()
        .get_meter_status(GetMeterStatusRequest {
            meter_id: meter_id(m),
        })
        .await
        .expect("status")
        .into_inner()
}

/// Meters write their state row at most once per `actors.state_checkpoint_interval` (here an
/// hour, so only the forced writes happen). After a SIGKILL each meter rebuilds its state from
/// its readings on activation — newest timestamp, registers, count — and the register rules
/// hold exactly as before the kill; after a clean stop the rows are trusted as written and
/// every counter survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_state_is_rebuilt_after_sigkill_and_trusted_after_a_clean_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]).env("GRIDMESH_ACTORS__STATE_CHECKPOINT_INTERVAL", "1h");
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(1, 4))
        .await
        .expect("import");
    // Meter 0: two readings with registers. Meter 1: a register, then a newer reading without
    // one (the state keeps the older register: that batch must write the state row).
    for k in 0..2 {
        assert!(
            push_one(&client, reading(&meter_id(0), k))
                .await
                .rejected
                .is_empty()
        );
    }
    let first = reading(&meter_id(1), 0);
    let first_register = first.energy_import_register_wh.expect("register");
    assert!(push_one(&client, first).await.rejected.is_empty());
    let mut bare = reading(&meter_id(1), 1);
    bare.energy_import_register_wh = None;
    assert!(push_one(&client, bare).await.rejected.is_empty());
    // Meter 3: the same forced row after its second reading, then two more that only the
    // readings keyspace holds when the node dies: its row is stale.
    for k in 0..4 {
        let mut r = reading(&meter_id(3), k);
        if k == 1 {
            r.energy_import_register_wh = None;
        }
        assert!(push_one(&client, r).await.rejected.is_empty());
    }
    node.kill().expect("SIGKILL");

    node.start().expect("node restarts");
    let client = connect(&node).await;
    assert_eq!(
        state_rebuilds(&node),
        0,
        "meters rebuild when they activate"
    );
    let status = status_of(&client, 0).await;
    assert_eq!(status.readings_accepted, 2);
    assert_eq!(
        status.last_reading.map(|r| r.ts_ms),
        Some(reading(&meter_id(0), 1).ts_ms)
    );
    assert!(state_rebuilds(&node) >= 1);
    let status = status_of(&client, 3).await;
    assert_eq!(
        (
            status.readings_accepted,
            status.last_reading.map(|r| r.ts_ms)
        ),
        (4, Some(reading(&meter_id(3), 3).ts_ms)),
        "a row older than the readings is not trusted after an unclean stop"
    );
    // The rebuilt registers still refuse a register going backwards.
    let mut backwards = reading(&meter_id(0), 2);
    backwards.energy_import_register_wh = reading(&meter_id(0), 0).energy_import_register_wh;
    let ack = push_one(&client, backwards).await;
    assert_eq!(ack.rejected.len(), 1, "{ack:?}");
    assert!(ack.rejected[0].message.contains("register"), "{ack:?}");
    let mut backwards = reading(&meter_id(1), 2);
    backwards.energy_import_register_wh = Some(first_register - 1.0);
    let ack = push_one(&client, backwards).await;
    assert_eq!(
        ack.rejected.len(),
        1,
        "the forced row kept meter 1's register: {ack:?}"
    );
    // Meter 2: a duplicate and a conflict, counted only in memory until it stops.
    assert!(
        push_one(&client, reading(&meter_id(2), 0))
            .await
            .rejected
            .is_empty()
    );
    assert_eq!(
        push_one(&client, reading(&meter_id(2), 0)).await.duplicates,
        1
    );
    let mut conflict = reading(&meter_id(2), 0);
    conflict.active_power_w = Some(1.0);
    assert_eq!(push_one(&client, conflict).await.rejected.len(), 1);

    let status = node.terminate(Duration::from_secs(20)).expect("exit");
    assert!(status.success(), "{}", node.log_tail(20));
    node.start().expect("node restarts after a clean stop");
    let client = connect(&node).await;
    let status = status_of(&client, 2).await;
    assert_eq!(
        (
            status.readings_accepted,
            status.duplicates,
            status.readings_rejected
        ),
        (1, 1, 1)
    );
    let status = status_of(&client, 0).await;
    assert_eq!((status.readings_accepted, status.readings_rejected), (2, 1));
    assert_eq!(state_rebuilds(&node), 0, "a clean stop leaves current rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(1, 4))
        .await
        .expect("import");
    client
        .push_batch(ReadingBatch {
            batch_id: 1,
            readings: vec![reading(&meter_id(0), 0)],
        })
        .await
        .expect("push");
    let status = node.terminate(Duration::from_secs(20)).expect("exit");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        node.log_tail(20)
    );
    assert!(
        node.log().contains("journal synced"),
        "{}",
        node.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_node_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = node(dir.path(), &[]);
    first.start().expect("first node starts");
    let mut second = gridmesh_chaos::NodeProcess::new(&dir.path().join("node"))
        .expect("ports")
        .binary(env!("CARGO_BIN_EXE_gridmesh"));
    second.log_path = dir.path().join("second.log");
    second.spawn().expect("spawn second");
    let status = second
        .wait_exit(Duration::from_secs(20))
        .expect("second exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        second.log().contains("in use by another gridmesh node"),
        "{}",
        second.log()
    );
    assert_eq!(
        first.http_get("/readyz").expect("first still serves").0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "version = 1\n[ingest]\nmax_batch_reading = 5\n")
        .expect("write config");
    let mut node = node(
        dir.path(),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    node.spawn().expect("spawn");
    let status = node.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(node.log().contains("max_batch_reading"), "{}", node.log());

    let mut node = node_with_env(dir.path(), "GRIDMESH_ACTORS__SHARDS", "0");
    node.spawn().expect("spawn");
    assert_eq!(
        node.wait_exit(Duration::from_secs(20))
            .expect("exits")
            .code(),
        Some(2)
    );
    assert!(node.log().contains("actors.shards"), "{}", node.log());
}

fn node_with_env(dir: &std::path::Path, key: &str, value: &str) -> gridmesh_chaos::NodeProcess {
    let mut node = node(dir, &[]).env(key, value);
    node.log_path = dir.join(format!("{key}.log"));
    node
}
