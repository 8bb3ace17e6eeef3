//! How fast a three-node cluster (R = 2, W = 2, the defaults) refills a replaced disk and
//! drains its hinted-handoff backlog, on loopback.
//!
//! Per run, on three fresh members:
//! 1. **load**: `--readings` readings (default 1,000,000) for `--meters` meters, in batches of
//!    one reading per meter, round-robin through the three members, four batches in flight;
//! 2. **refill**: SIGKILL `n2`, delete its data directory, start it empty; measure from its
//!    start until the cluster reports every shard's home replicas equal and no hint pending
//!    (`GetReplicaStatus`, nothing asked to repair: anti-entropy runs on its own timer), and
//!    the readings `n2` received by repair;
//! 3. **handoff**: SIGKILL `n2` again, load `--handoff` readings (default 200,000) while it is
//!    down (substitutes store its copies with hints), start it, and measure from its start
//!    until no member has a hint pending; the rate is the hints pending at the start over
//!    that time.
//!
//! Prints every run and the medians.
//!
//! ```text
//! cargo build --release -p gridmesh -p gridmesh-chaos
//! cargo run --release -p gridmesh-chaos --example refill -- --runs 3
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_chaos::checker::replicas_converged;
use gridmesh_chaos::{NodeProcess, cluster_processes, gridmesh_binary};
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    FeederInfo, GetReplicaStatusRequest, ImportTopologyRequest, MeterInfo, Reading, ReadingBatch,
    ServiceType,
};

const COOKIE: &str = "refill-bench-cookie-0123456789ab";
const QUARTER_MS: i64 = 900_000;

struct Args {
    runs: usize,
    readings: usize,
    handoff: usize,
    meters: usize,
}

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::args().skip_while(|a| a != name).nth(1) {
        Some(v) => v.parse().with_context(|| format!("{name} {v}")),
        None => Ok(default),
    }
}

#[derive(Debug, Clone, Copy)]
struct RunFigures {
    load_per_s: f64,
    refill_s: f64,
    refilled: u64,
    hints: u64,
    drain_s: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args {
        runs: arg("--runs", 3)?,
        readings: arg("--readings", 1_000_000)?,
        handoff: arg("--handoff", 200_000)?,
        meters: arg("--meters", 2_000)?,
    };
    let binary = gridmesh_binary()?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let f = one_run(&binary, &args).await?;
        println!(
            "run {run}: loaded {} readings at {:.0}/s; refilled {} readings into the empty node \
             in {:.1} s ({:.1} s per million stored); {} hints drained in {:.1} s ({:.0}/s)",
            args.readings,
            f.load_per_s,
            f.refilled,
            f.refill_s,
            f.refill_s * 1e6 / args.readings as f64,
            f.hints,
            f.drain_s,
            f.hints as f64 / f.drain_s.max(1e-3)
        );
        runs.push(f);
    }
    let med = |f: &dyn Fn(&RunFigures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "medians over {} runs: refill {:.1} s per million readings stored ({:.1} s for {}); \
         hinted handoff {:.0} hints/s; load {:.0} readings/s",
        runs.len(),
        med(&|f| f.refill_s * 1e6 / args.readings as f64),
        med(&|f| f.refill_s),
        args.readings,
        med(&|f| f.hints as f64 / f.drain_s.max(1e-3)),
        med(&|f| f.load_per_s)
    );
    Ok(())
}

async fn one_run(binary: &std::path::Path, args: &Args) -> anyhow::Result<RunFigures> {
    let dir = tempfile::tempdir()?;
    let mut nodes = cluster_processes(dir.path(), 3, binary, COOKIE)?;
    for node in &mut nodes {
        node.spawn()?;
    }
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(60))?;
    }
    let clients = connect(&nodes).await?;
    members_alive(&clients, 3).await?;
    let meters: Vec<String> = (0..args.meters).map(|i| format!("RF-{i:05}")).collect();
    clients[0]
        .registry()
        .import_topology(topology(&meters))
        .await?;

    // Load, then wait until the replicas agree, so the refill starts from a settled cluster.
    let base = now_ms() - 40 * 86_400_000;
    let steps = args.readings.div_ceil(meters.len());
    let started = Instant::now();
    load(&clients, &meters, base, 0..steps).await?;
    let load_per_s = (steps * meters.len()) as f64 / started.elapsed().as_secs_f64();
    replicas_converged(&clients[0], Duration::from_secs(300))
        .await
        .map_err(anyhow::Error::msg)?;

    // Refill an empty n2.
    nodes[2].kill()?;
    nodes[2].wipe_data()?;
    let restarted = Instant::now();
    nodes[2].start()?;
    nodes[2].wait_ready(Duration::from_secs(60))?;
    let clients = connect(&nodes).await?;
    replicas_converged(&clients[0], Duration::from_secs(900))
        .await
        .map_err(anyhow::Error::msg)?;
    let refill_s = restarted.elapsed().as_secs_f64();
    let refilled = repair_received(&nodes[2])?;

    // Hinted handoff: n2 down while readings arrive, then back.
    nodes[2].kill()?;
    members_alive(&clients[..2], 2).await?;
    let more = args.handoff.div_ceil(meters.len());
    load(&clients[..2], &meters, base, steps..steps + more).await?;
    let hints = hints_pending(&clients[0]).await?;
    let restarted = Instant::now();
    nodes[2].start()?;
    nodes[2].wait_ready(Duration::from_secs(60))?;
    loop {
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(600),
            "hints not drained"
        );
        if hints_pending(&clients[0]).await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_s = restarted.elapsed().as_secs_f64();
    for node in &mut nodes {
        let _ = node.terminate(Duration::from_secs(30));
    }
    Ok(RunFigures {
        load_per_s,
        refill_s,
        refilled,
        hints,
        drain_s,
    })
}

/// Pushes one batch per step (one reading per meter), round-robin over `clients`, four in
/// flight; every reading must be accepted.
async fn load(
    clients: &[Client],
    meters: &[String],
    base: i64,
    steps: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let mut inflight = tokio::task::JoinSet::new();
    for step in steps {
        if inflight.len() >= 4
            && let Some(done) = inflight.join_next().await
        {
            done??;
        }
        let client = clients[step % clients.len()].clone();
        let readings: Vec<Reading> = meters
            .iter()
            .map(|m| Reading {
                meter_id: m.clone(),
                ts_ms: base + step as i64 * QUARTER_MS,
                interval_energy_import_wh: Some(100.0 + (step % 7) as f64),
                active_power_w: Some(400.0),
                ..Reading::default()
            })
            .collect();
        inflight.spawn(async move {
            let expected = readings.len() as u32;
            let mut batch = ReadingBatch {
                batch_id: step as u64,
                readings,
            };
            for attempt in 0.. {
                match client.ingest().push_batch(batch.clone()).await {
                    Ok(ack) if ack.get_ref().rejected.is_empty() => return Ok(()),
                    Ok(ack) if attempt < 50 => {
                        // Resend what was refused for retry (owner moving, saturated).
                        let refused: std::collections::HashSet<u32> =
                            ack.get_ref().rejected.iter().map(|r| r.index).collect();
                        batch.readings = batch
                            .readings
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| refused.contains(&(*i as u32)))
                            .map(|(_, r)| r)
                            .collect();
                    }
                    Err(_) if attempt < 50 => {}
                    other => anyhow::bail!("batch {step} ({expected} readings): {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        });
    }
    while let Some(done) = inflight.join_next().await {
        done??;
    }
    Ok(())
}

async fn hints_pending(client: &Client) -> anyhow::Result<u64> {
    let status = client
        .admin()
        .get_replica_status(GetReplicaStatusRequest {
            shards: vec![0],
            before_ts_ms: None,
        })
        .await?
        .into_inner();
    Ok(status
        .nodes
        .iter()
        .flat_map(|n| n.hints_pending.values())
        .sum())
}

/// Readings a node received by anti-entropy repair since it started (its own metrics).
fn repair_received(node: &NodeProcess) -> anyhow::Result<u64> {
    let (_, body) = node.http_get("/metrics")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("gridmesh_replica_readings_received_total{cause=\"repair\"}"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn connect(nodes: &[NodeProcess]) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::new();
    for node in nodes {
        out.push(node.connect().await?);
    }
    Ok(out)
}

/// Until every one of `clients` lists `n` members, all alive and settled, with the same
/// shard owners (the harness's own convergence check).
async fn members_alive(clients: &[Client], n: usize) -> anyhow::Result<()> {
    gridmesh_chaos::checker::views_converged(clients, n, Duration::from_secs(60))
        .await
        .map(|_| ())
        .map_err(anyhow::Error::msg)
}

fn topology(meters: &[String]) -> ImportTopologyRequest {
    ImportTopologyRequest {
        feeders: (0..10)
            .map(|f| FeederInfo {
                feeder_id: format!("RF-F{f}"),
                rating_kva: 5000.0,
                head_meter_id: String::new(),
                transformers: Vec::new(),
            })
            .collect(),
        meters: meters
            .iter()
            .enumerate()
            .map(|(i, m)| MeterInfo {
                meter_id: m.clone(),
                feeder_id: format!("RF-F{}", i % 10),
                transformer_id: String::new(),
                nominal_voltage_v: 230.0,
                service_type: ServiceType::Residential as i32,
                has_pv: false,
            })
            .collect(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
