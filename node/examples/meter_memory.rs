//! Memory per active meter actor and the cost of activation, in process (no gRPC):
//!
//! 1. registers N meters, pushes one reading to each (first activation), measures the RSS
//!    delta with all N meter actors resident;
//! 2. pushes one more reading to each (closing the first interval builds each meter's anomaly
//!    detector), then another while all are active (steady state);
//! 3. waits until every meter is passivated for idleness, then pushes again: every meter is
//!    re-activated from stored state, its anomaly detector included. (3) minus the steady
//!    push per meter is the re-activation cost.
//!
//! cargo run --release -p gridmesh --example meter_memory -- [meters]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_actors::context::{NodeContext, now_ms};
use gridmesh_actors::ingest::{Admission, IngestPipeline};
use gridmesh_actors::node::{NodeSupervisor, shard_stats};
use gridmesh_actors::storage::Store;
use gridmesh_actors::writer::Writer;
use gridmesh_config::Config;
use gridmesh_proto::v1::{FeederInfo, MeterInfo, Reading, ReadingBatch};
use ractor::Actor;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

async fn push_all(pipeline: &IngestPipeline, meters: usize, ts_ms: i64) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk_start in (0..meters).step_by(5000) {
        let pipeline = pipeline.clone();
        let readings: Vec<Reading> = (chunk_start..(chunk_start + 5000).min(meters))
            .map(|i| Reading {
                meter_id: format!("MEM-{i:07}"),
                ts_ms,
                interval_energy_import_wh: Some(100.0),
                active_power_w: Some(400.0),
                ..Default::default()
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let ack = pipeline
                .push(
                    ReadingBatch {
                        batch_id: 0,
                        readings,
                    },
                    Admission::Wait,
                )
                .await
                .expect("push");
            assert!(ack.rejected.is_empty(), "{:?}", ack.rejected.first());
        }));
    }
    for task in tasks {
        task.await.expect("push task");
    }
    started.elapsed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let meters: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.actors.max_active_meters = (meters as u32 * 2).max(64);
    config.actors.meter_idle_timeout = Duration::from_secs(8);
    config.actors.passivation_interval = Duration::from_millis(200);
    config.ingest.max_batch_readings = 5000;
    config.ingest.max_inflight_readings = 50_000;
    let store = Arc::new(Store::open(dir.path(), config.actors.shards, 64)?);
    let (writer, _task) = Writer::spawn(store.clone(), &config.storage)?;
    let ctx = NodeContext::new(store, writer, config);
    let (_root, _) = Actor::spawn(None, NodeSupervisor, ctx.clone()).await?;
    let pipeline = IngestPipeline::new(ctx.clone());

    let feeders = vec![FeederInfo {
        feeder_id: "F".into(),
        rating_kva: 1e5,
        head_meter_id: String::new(),
        transformers: Vec::new(),
    }];
    for start in (0..meters).step_by(50_000) {
        let batch = (start..(start + 50_000).min(meters))
            .map(|i| MeterInfo {
                meter_id: format!("MEM-{i:07}"),
                feeder_id: "F".into(),
                nominal_voltage_v: 230.0,
                ..Default::default()
            })
            .collect();
        gridmesh_actors::registry::import(
            &ctx,
            if start == 0 { feeders.clone() } else { vec![] },
            batch,
        )
        .await?;
    }

    let base = now_ms() / 900_000 * 900_000 - 86_400_000;
    let rss_before = rss_bytes();
    let first = push_all(&pipeline, meters, base).await;
    let active: usize = shard_stats(&ctx)
        .await
        .iter()
        .map(|s| s.active_meters)
        .sum();
    let rss_active = rss_bytes();
    // The first interval to close builds each meter's anomaly detector: done once before the
    // steady push, so that the steady push is only what every later reading costs.
    push_all(&pipeline, meters, base + 900_000).await;
    let steady = push_all(&pipeline, meters, base + 1_800_000).await;

    let wait = Instant::now();
    while shard_stats(&ctx)
        .await
        .iter()
        .map(|s| s.active_meters + s.passivating)
        .sum::<usize>()
        > 0
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            wait.elapsed() < Duration::from_secs(120),
            "passivation did not finish"
        );
    }
    let reactivated = push_all(&pipeline, meters, base + 2_700_000).await;

    let per_meter = (rss_active.saturating_sub(rss_before)) as f64 / active.max(1) as f64;
    println!(
        "{{\"meters\": {meters}, \"active\": {active}, \"rss_delta_mib\": {:.1}, \
         \"bytes_per_active_meter\": {per_meter:.0}, \"first_activation_s\": {:.3}, \
         \"steady_push_s\": {:.3}, \"reactivation_push_s\": {:.3}, \
         \"reactivation_us_per_meter\": {:.1}}}",
        (rss_active.saturating_sub(rss_before)) as f64 / 1048576.0,
        first.as_secs_f64(),
        steady.as_secs_f64(),
        reactivated.as_secs_f64(),
        (reactivated.as_secs_f64() - steady.as_secs_f64()) * 1e6 / meters as f64,
    );
    Ok(())
}
