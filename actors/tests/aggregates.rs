//! Feeder load stays exactly the sum of the stored readings whatever shape, order and
//! repetition the readings arrive in: in-order runs spanning many intervals, shuffled batches,
//! duplicates and corrections. Runs the real pipeline, actors and store in process.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridmesh_actors::context::{NodeContext, now_ms};
use gridmesh_actors::ingest::{Admission, IngestPipeline};
use gridmesh_actors::node::NodeSupervisor;
use gridmesh_actors::query;
use gridmesh_actors::storage::Store;
use gridmesh_actors::writer::{Writer, WriterTask};
use gridmesh_config::Config;
use gridmesh_proto::v1::{FeederInfo, MeterInfo, Reading, ReadingBatch, Resolution};
use ractor::Actor;

const QUARTER_MS: i64 = 900_000;
const DAY_MS: i64 = 86_400_000;
const METERS: usize = 3;
const STEPS: i64 = 200;

/// A tiny deterministic generator (no extra dependency; the seed makes each case repeatable).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

struct Node {
    ctx: Arc<NodeContext>,
    pipeline: IngestPipeline,
    _writer: WriterTask,
    _dir: tempfile::TempDir,
}

async fn node() -> Node {
    let mut config = Config::default();
    config.actors.shards = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path(), config.actors.shards, 8).expect("store"));
    let (writer, task) = Writer::spawn(store.clone(), &config.storage).expect("writer");
    let ctx = NodeContext::new(store, writer, config);
    Actor::spawn(None, NodeSupervisor, ctx.clone())
        .await
        .expect("root");
    let feeders = vec![FeederInfo {
        feeder_id: "F".into(),
        rating_kva: 50.0,
        head_meter_id: String::new(),
        transformers: Vec::new(),
    }];
    let meters = (0..METERS)
        .map(|m| MeterInfo {
            meter_id: format!("M{m}"),
            feeder_id: "F".into(),
            nominal_voltage_v: 230.0,
            ..Default::default()
        })
        .collect();
    gridmesh_actors::registry::import(&ctx, feeders, meters)
        .await
        .expect("topology");
    let pipeline = IngestPipeline::new(ctx.clone());
    Node {
        ctx,
        pipeline,
        _writer: task,
        _dir: dir,
    }
}

fn base() -> i64 {
    now_ms() / DAY_MS * DAY_MS - 4 * DAY_MS
}

/// Some readings are 5-minute, so several share a 15-minute interval.
fn reading(m: usize, k: i64, version: u32) -> Reading {
    let energy = ((k * 7 + m as i64 * 3) % 11 + 1) as f64 + f64::from(version) * 100.0;
    Reading {
        meter_id: format!("M{m}"),
        ts_ms: base() + (k + 1) * QUARTER_MS / 3,
        version,
        interval_energy_import_wh: Some(energy),
        active_power_w: Some(energy * 12.0),
        ..Default::default()
    }
}

async fn push(node: &Node, readings: Vec<Reading>) {
    for chunk in readings.chunks(50) {
        let batch = ReadingBatch {
            batch_id: 0,
            readings: chunk.to_vec(),
        };
        let ack = node
            .pipeline
            .push(batch, Admission::Wait)
            .await
            .expect("push");
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
    }
}

/// Compares the feeder's per-interval load with the sum of what each meter has stored.
fn assert_feeder_equals_readings(node: &Node, case: &str) {
    let store = &node.ctx.store;
    let (from, to) = (base(), base() + 2 * DAY_MS);
    let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
    for m in 0..METERS {
        let stored = query::readings(store, &format!("M{m}"), from, to, Resolution::Raw, 10_000)
            .expect("readings");
        for r in stored.readings {
            let interval = (r.ts_ms - 1).div_euclid(QUARTER_MS) * QUARTER_MS;
            *expected.entry(interval).or_default() +=
                r.interval_energy_import_wh.unwrap_or_default();
        }
    }
    let load =
        query::feeder_load(store, "F", from, to, Resolution::QuarterHour, 2).expect("feeder load");
    let actual: BTreeMap<i64, f64> = load
        .intervals
        .iter()
        .map(|i| (i.start_ts_ms, i.customer_energy_import_wh))
        .collect();
    assert_eq!(
        actual, expected,
        "{case}: feeder load differs from the stored readings"
    );
}

#[tokio::test]
async fn in_order_runs_spanning_many_intervals() {
    let node = node().await;
    let readings = (0..METERS)
        .flat_map(|m| (0..STEPS).map(move |k| reading(m, k, 0)))
        .collect();
    push(&node, readings).await;
    assert_feeder_equals_readings(&node, "meter-major, in order");
}

#[tokio::test]
async fn shuffled_batches_with_duplicates_and_corrections() {
    for seed in [1u64, 7, 42, 1234] {
        let node = node().await;
        let mut rng = Lcg(seed);
        let mut readings: Vec<Reading> = (0..METERS)
            .flat_map(|m| (0..STEPS).map(move |k| reading(m, k, 0)))
            .collect();
        // Shuffle within a window so the out-of-order window is respected, then repeat some.
        for i in (1..readings.len()).rev() {
            let j = i.saturating_sub(rng.next(40));
            readings.swap(i, j);
        }
        let repeats: Vec<Reading> = (0..60)
            .map(|_| readings[rng.next(readings.len())].clone())
            .collect();
        readings.extend(repeats);
        push(&node, readings).await;
        // Corrections of random readings, some landing in closed intervals, some in the open one.
        let corrections: Vec<Reading> = (0..30)
            .map(|_| reading(rng.next(METERS), rng.next(STEPS as usize) as i64, 1))
            .collect();
        let mut unique = BTreeMap::new();
        for c in corrections {
            unique.insert((c.meter_id.clone(), c.ts_ms), c);
        }
        push(&node, unique.into_values().collect()).await;
        assert_feeder_equals_readings(&node, &format!("seed {seed}"));
    }
}
