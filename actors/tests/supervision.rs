//! Supervision, passivation and backpressure of the actor tree, with a real store on disk.
//!
//! Each test kills real actors and polls observable state (the shard table, shard stats, the
//! supervisor's join handle) with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_actors::context::{Counters, NodeContext};
use gridmesh_actors::ingest::{Admission, IngestError, IngestPipeline};
use gridmesh_actors::node::{NodeSupervisor, shard_stats};
use gridmesh_actors::placement::shard_of;
use gridmesh_actors::registry;
use gridmesh_actors::shard::ShardMsg;
use gridmesh_actors::storage::Store;
use gridmesh_actors::writer::{Writer, WriterTask};
use gridmesh_config::Config;
use gridmesh_proto::v1::{FeederInfo, MeterInfo, MeterStatus, Reading, ReadingBatch};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const QUARTER_MS: i64 = 900_000;

struct Node {
    ctx: Arc<NodeContext>,
    pipeline: IngestPipeline,
    _writer: WriterTask,
    _dir: tempfile::TempDir,
}

fn node_context(config: Config) -> (Arc<NodeContext>, WriterTask, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path(), config.actors.shards, 8).expect("store"));
    let (writer, task) = Writer::spawn(store.clone(), &config.storage).expect("writer");
    (NodeContext::new(store, writer, config), task, dir)
}

async fn start(
    config: Config,
) -> (
    Node,
    ActorRef<gridmesh_actors::node::NodeMsg>,
    tokio::task::JoinHandle<()>,
) {
    let (ctx, writer, dir) = node_context(config);
    let (root, handle) = Actor::spawn(None, NodeSupervisor, ctx.clone())
        .await
        .expect("root starts");
    let pipeline = IngestPipeline::new(ctx.clone());
    let feeders = vec![FeederInfo {
        feeder_id: "F1".into(),
        rating_kva: 100.0,
        head_meter_id: String::new(),
        transformers: Vec::new(),
    }];
    let meters = (0..8)
        .map(|i| MeterInfo {
            meter_id: format!("M{i}"),
            feeder_id: "F1".into(),
            nominal_voltage_v: 230.0,
            ..Default::default()
        })
        .collect();
    registry::import(&ctx, feeders, meters)
        .await
        .expect("topology");
    (
        Node {
            ctx,
            pipeline,
            _writer: writer,
            _dir: dir,
        },
        root,
        handle,
    )
}

fn config() -> Config {
    let mut config = Config::default();
    config.actors.shards = 4;
    config
}

fn reading(meter: &str, k: i64) -> Reading {
    let base = gridmesh_actors::context::now_ms() / 86_400_000 * 86_400_000 - 86_400_000;
    Reading {
        meter_id: meter.to_owned(),
        ts_ms: base + (k + 1) * QUARTER_MS,
        energy_import_register_wh: Some(100.0 * k as f64),
        interval_energy_import_wh: Some(100.0),
        ..Default::default()
    }
}

async fn push(node: &Node, meter: &str, ks: std::ops::Range<i64>) -> u32 {
    let readings = ks.map(|k| reading(meter, k)).collect();
    let ack = node
        .pipeline
        .push(
            ReadingBatch {
                batch_id: 1,
                readings,
            },
            Admission::FailFast,
        )
        .await
        .expect("push");
    assert!(ack.rejected.is_empty(), "{ack:?}");
    ack.accepted
}

async fn status(node: &Node, meter: &str) -> MeterStatus {
    let shard = node
        .ctx
        .shard(shard_of(meter, node.ctx.config.actors.shards))
        .expect("shard running");
    ractor::call_t!(
        shard,
        |reply| ShardMsg::Status {
            meter_id: meter.to_owned(),
            reply
        },
        5000
    )
    .expect("status call")
    .expect("registered meter")
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn lookup(node: &Node, meter: &str) -> Option<ractor::ActorCell> {
    let shard = node
        .ctx
        .shard(shard_of(meter, node.ctx.config.actors.shards))?;
    ractor::call_t!(
        shard,
        |reply| ShardMsg::Lookup {
            meter_id: meter.to_owned(),
            reply
        },
        5000
    )
    .ok()?
}

/// Passivates every meter of `meter`'s shard (each writes its state row) and waits until
/// `meter` is gone.
async fn passivate(node: &Node, meter: &str) {
    let shard = node
        .ctx
        .shard(shard_of(meter, node.ctx.config.actors.shards))
        .expect("shard");
    shard
        .cast(ShardMsg::PassivateAll("test"))
        .expect("passivate");
    poll("the meter to passivate", async || {
        lookup(node, meter).await.is_none().then_some(())
    })
    .await;
}

/// State rows are written only when meters stop (an hour between checkpoints), so a killed
/// actor leaves a row older than its readings: the next incarnation must not trust it.
fn lazy_state_config() -> Config {
    let mut config = config();
    config.actors.state_checkpoint_interval = Duration::from_secs(3600);
    config
}

#[tokio::test]
async fn a_killed_meter_comes_back_on_demand_with_exact_state() {
    let (node, _root, _handle) = start(lazy_state_config()).await;
    assert_eq!(push(&node, "M1", 0..6).await, 6);
    passivate(&node, "M1").await;
    assert_eq!(push(&node, "M1", 6..10).await, 4);
    let meter = lookup(&node, "M1")
        .await
        .expect("meter is active after ingest");
    meter.kill();
    poll("the shard to notice the dead meter", async || {
        lookup(&node, "M1").await.is_none().then_some(())
    })
    .await;

    assert_eq!(push(&node, "M1", 10..20).await, 10);
    let status = status(&node, "M1").await;
    assert_eq!(
        status.readings_accepted, 20,
        "state resumed exactly after the kill"
    );
    // The killed incarnation never wrote its row: its activation is one of the counters an
    // unclean stop loses (rejections, duplicates, corrections, activations since the last row).
    assert_eq!(status.activations, 2);
    // The failure is counted for the admin API, and the dead actor's mailbox left the totals.
    assert_eq!(Counters::get(&node.ctx.counters.actor_failures), 1);
    poll("every counted message to be taken out", async || {
        let queued: u64 = node.ctx.mailboxes.snapshot().iter().map(|m| m.queued).sum();
        (queued == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_killed_shard_is_restarted_by_the_node_supervisor() {
    let (node, _root, handle) = start(lazy_state_config()).await;
    push(&node, "M2", 0..2).await;
    passivate(&node, "M2").await;
    push(&node, "M2", 2..4).await;
    let shard_id = shard_of("M2", 4);
    let old = node.ctx.shard(shard_id).expect("shard");
    old.get_cell().kill();
    let new = poll("a new shard supervisor", async || {
        node.ctx
            .shard(shard_id)
            .filter(|s| s.get_id() != old.get_id())
    })
    .await;
    assert_ne!(new.get_id(), old.get_id());
    assert_eq!(push(&node, "M2", 4..8).await, 4);
    assert_eq!(status(&node, "M2").await.readings_accepted, 8);
    assert!(!handle.is_finished(), "one restart is within the budget");
}

#[tokio::test]
async fn exceeding_the_restart_intensity_escalates_to_the_root() {
    let mut config = config();
    config.actors.max_restarts = 2;
    config.actors.restart_window = Duration::from_secs(30);
    let (node, _root, handle) = start(config).await;
    for round in 0..3 {
        let Some(shard) = node.ctx.shard(0) else {
            panic!("shard 0 missing in round {round}")
        };
        shard.get_cell().kill();
        if round < 2 {
            poll("shard 0 restarted", async || {
                node.ctx.shard(0).filter(|s| s.get_id() != shard.get_id())
            })
            .await;
        }
    }
    poll("the node supervisor to give up", async || {
        handle.is_finished().then_some(())
    })
    .await;
}

#[tokio::test]
async fn repeated_meter_failures_escalate_to_a_shard_restart() {
    let mut config = config();
    config.actors.max_restarts = 1;
    let (node, _root, handle) = start(config).await;
    let shard_id = shard_of("M3", 4);
    let shard = node.ctx.shard(shard_id).expect("shard");
    for k in 0..2 {
        push(&node, "M3", k * 2..k * 2 + 2).await;
        let meter = lookup(&node, "M3").await.expect("active meter");
        meter.kill();
        if k == 0 {
            poll("the meter to be gone", async || {
                lookup(&node, "M3").await.is_none().then_some(())
            })
            .await;
        }
    }
    poll("the shard to be replaced", async || {
        node.ctx
            .shard(shard_id)
            .filter(|s| s.get_id() != shard.get_id())
    })
    .await;
    assert!(!handle.is_finished());
    push(&node, "M3", 4..6).await;
    assert_eq!(status(&node, "M3").await.readings_accepted, 6);
}

#[tokio::test]
async fn budget_and_idle_passivation_keep_state_exact() {
    let mut config = config();
    config.actors.shards = 1;
    config.actors.max_active_meters = 2;
    config.actors.meter_idle_timeout = Duration::from_millis(200);
    config.actors.passivation_interval = Duration::from_millis(20);
    let (node, _root, _handle) = start(config).await;
    for round in 0..3 {
        for m in 0..6 {
            push(&node, &format!("M{m}"), round * 4..round * 4 + 4).await;
        }
        let stats = shard_stats(&node.ctx).await;
        assert!(stats[0].active_meters <= 2, "{stats:?}");
    }
    for m in 0..6 {
        let status = status(&node, &format!("M{m}")).await;
        assert_eq!(status.readings_accepted, 12, "meter M{m}");
        assert!(
            status.activations >= 2,
            "M{m} was passivated and re-activated"
        );
    }
    poll("idle meters to be passivated", async || {
        let stats = shard_stats(&node.ctx).await;
        (stats[0].active_meters == 0 && stats[0].passivating == 0).then_some(())
    })
    .await;
}

/// A shard stand-in that takes work and never answers, so batches stay in flight.
struct Blackhole;

impl Actor for Blackhole {
    type Msg = ShardMsg;
    type State = Vec<ShardMsg>;
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ActorRef<ShardMsg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Vec::new())
    }
    async fn handle(
        &self,
        _: ActorRef<ShardMsg>,
        msg: ShardMsg,
        held: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        held.push(msg);
        Ok(())
    }
}

#[tokio::test]
async fn a_saturated_node_refuses_with_resource_exhausted_and_recovers() {
    let mut config = config();
    config.actors.shards = 1;
    config.ingest.max_inflight_readings = 100;
    config.ingest.max_batch_readings = 100;
    config.ingest.ack_timeout = Duration::from_millis(300);
    let (ctx, _writer, _dir) = node_context(config);
    let (blackhole, _) = Actor::spawn(None, Blackhole, ()).await.expect("stand-in");
    ctx.set_shard(0, Some(blackhole));
    let pipeline = IngestPipeline::new(ctx.clone());
    let batch = |id| ReadingBatch {
        batch_id: id,
        readings: (0..100).map(|k| reading("M1", k)).collect(),
    };

    let first = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.push(batch(1), Admission::FailFast).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while pipeline.inflight() < 100 {
        assert!(Instant::now() < deadline, "first batch never admitted");
        tokio::task::yield_now().await;
    }
    let refused = pipeline.push(batch(2), Admission::FailFast).await;
    assert!(
        matches!(refused, Err(IngestError::Saturated { inflight: 100 })),
        "{refused:?}"
    );

    // The stuck batch times out (outcome unknown) and frees its budget.
    let timed_out = first.await.expect("task");
    assert!(
        matches!(timed_out, Err(IngestError::AckTimeout { batch_id: 1, .. })),
        "{timed_out:?}"
    );
    assert_eq!(pipeline.inflight(), 0);
}

/// Readings arriving a few intervals late (as concurrent batches deliver them) are decided from
/// the meter's newest readings held in memory instead of the store: the result must be exactly
/// what in-order delivery stores — readings, feeder contributions, counts — and the register
/// and conflict rules must still see the late readings' neighbours.
#[tokio::test]
async fn late_readings_store_exactly_what_in_order_readings_store() {
    let meters = ["M0", "M1", "M2", "M3"];
    let in_order: Vec<i64> = (0..40).collect();
    // Each block of four intervals arrives newest first.
    let late: Vec<i64> = (0..10)
        .flat_map(|b| (0..4).rev().map(move |i| b * 4 + i))
        .collect();
    let mut results = Vec::new();
    for order in [&in_order, &late] {
        let (node, _root, _handle) = start(config()).await;
        for &k in order {
            let readings = meters.iter().map(|m| reading(m, k)).collect();
            let ack = node
                .pipeline
                .push(
                    ReadingBatch {
                        batch_id: k as u64,
                        readings,
                    },
                    Admission::FailFast,
                )
                .await
                .expect("push");
            assert!(ack.rejected.is_empty(), "{ack:?}");
        }
        let mut stored = Vec::new();
        let mut late_counts = Vec::new();
        for m in meters {
            stored.push(
                node.ctx
                    .store
                    .readings_between(m, 0, i64::MAX, 1000)
                    .expect("scan"),
            );
            let s = status(&node, m).await;
            assert_eq!(s.readings_accepted, 40);
            late_counts.push(s.out_of_order);
        }
        let contributions = node
            .ctx
            .store
            .feeder_contributions("F1", 0, i64::MAX)
            .expect("contributions");
        // The rules still see stored neighbours: a conflicting value and a register below its
        // predecessor's are refused.
        let mut conflict = reading("M0", 20);
        conflict.interval_energy_import_wh = Some(1.0);
        let mut backwards = reading("M1", 41);
        backwards.energy_import_register_wh = Some(100.0 * 38.0);
        for bad in [conflict, backwards] {
            let ack = node
                .pipeline
                .push(
                    ReadingBatch {
                        batch_id: 99,
                        readings: vec![bad],
                    },
                    Admission::FailFast,
                )
                .await
                .expect("push");
            assert_eq!(ack.rejected.len(), 1, "{ack:?}");
        }
        results.push((stored, contributions, late_counts));
    }
    let (late_result, in_order_result) = (
        results.pop().expect("late"),
        results.pop().expect("in order"),
    );
    assert_eq!(in_order_result.0, late_result.0, "stored readings");
    assert_eq!(in_order_result.1, late_result.1, "feeder contributions");
    assert_eq!(in_order_result.2, vec![0; 4]);
    assert!(
        late_result.2.iter().all(|&n| n == 30),
        "{:?}",
        late_result.2
    );
}
