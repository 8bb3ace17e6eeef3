//! Failure detection and failover figures of a three-node cluster on loopback.
//!
//! For each of `--runs` rounds per fault (SIGKILL, SIGSTOP): start three fresh members,
//! register meters, then fault one node and measure
//! - **detection**: from the signal until both other members list it as down;
//! - **serving again**: from the signal until a batch for meters the faulted node owned is
//!   fully accepted through another member (retrying OWNER_UNAVAILABLE every 20 ms).
//!
//! On the first round it also counts the shards moved when a fourth member joins and when it
//! leaves. Prints every run and the medians.
//!
//! ```text
//! cargo build --release -p gridmesh -p gridmesh-chaos
//! cargo run --release -p gridmesh-chaos --example failover -- --runs 10
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_actors::placement::shard_of;
use gridmesh_chaos::{NodeProcess, cluster_processes, gridmesh_binary};
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    FeederInfo, GetShardMapRequest, ImportTopologyRequest, ListMembersRequest, MemberState,
    MeterInfo, Reading, ReadingBatch, ServiceType,
};

const COOKIE: &str = "failover-bench-cookie-0123456789";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map_or(Ok(10), |v| v.parse())?;
    let binary = gridmesh_binary()?;
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for fault in ["SIGKILL", "SIGSTOP"] {
        for run in 0..runs {
            let (detect, serve) = one_round(&binary, fault, run == 0 && fault == "SIGKILL").await?;
            println!(
                "{fault} run {run}: detected in {:.0} ms, serving again in {:.0} ms",
                detect * 1e3,
                serve * 1e3
            );
            results.push((fault, detect, serve));
        }
    }
    for fault in ["SIGKILL", "SIGSTOP"] {
        let mut detect: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == fault)
            .map(|r| r.1)
            .collect();
        let mut serve: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == fault)
            .map(|r| r.2)
            .collect();
        println!(
            "{fault}: median detection {:.0} ms (max {:.0}), median serving again {:.0} ms \
             (max {:.0}) over {} runs",
            median(&mut detect) * 1e3,
            detect.last().copied().unwrap_or(0.0) * 1e3,
            median(&mut serve) * 1e3,
            serve.last().copied().unwrap_or(0.0) * 1e3,
            detect.len()
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

async fn one_round(
    binary: &std::path::Path,
    fault: &str,
    measure_moves: bool,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut nodes = cluster_processes(dir.path(), 3, binary, COOKIE)?;
    for node in &mut nodes {
        node.spawn()?;
    }
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(60))?;
    }
    let clients = connect(&nodes).await?;
    wait(Duration::from_secs(30), || async {
        for c in &clients {
            if alive(c).await != 3 {
                return false;
            }
        }
        true
    })
    .await
    .context("three members")?;
    let meters: Vec<String> = (0..300).map(|i| format!("FO-{i:04}")).collect();
    clients[0]
        .registry()
        .import_topology(topology(&meters))
        .await?;

    // Meters the victim (n1) owns now.
    let map = clients[0]
        .admin()
        .get_shard_map(GetShardMapRequest {})
        .await?
        .into_inner();
    let victim_meters: Vec<String> = meters
        .iter()
        .filter(|m| {
            let shard = shard_of(m, map.shard_count);
            map.shards[shard as usize].owner == "n1"
        })
        .cloned()
        .collect();

    // Moves are counted on the healthy three (before this round's fault: after it the victim
    // is down, and a fourth member joining two would take a third, not a quarter).
    if measure_moves {
        shard_moves(dir.path(), binary, &nodes, &clients).await?;
    }

    let start = Instant::now();
    match fault {
        "SIGKILL" => nodes[1].kill()?,
        _ => nodes[1].signal(libc::SIGSTOP)?,
    }
    // Detection and serving again are measured side by side: a push stuck on the hung node
    // must not delay noticing that the others declared it down.
    let limit = Duration::from_secs(30);
    let detect = async {
        loop {
            anyhow::ensure!(start.elapsed() < limit, "not detected in 30 s");
            if down(&clients[0], "n1").await && down(&clients[2], "n1").await {
                return Ok(start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let serve = async {
        let mut step = 1;
        loop {
            anyhow::ensure!(start.elapsed() < limit, "no failover in 30 s");
            let batch = ReadingBatch {
                batch_id: step,
                readings: victim_meters
                    .iter()
                    .map(|m| reading(m, step as i64))
                    .collect(),
            };
            if let Ok(ack) = clients[2].ingest().push_batch(batch).await
                && ack.get_ref().rejected.is_empty()
            {
                return Ok(start.elapsed().as_secs_f64());
            }
            step += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (detected, serving) = tokio::try_join!(detect, serve)?;
    if fault == "SIGSTOP" {
        nodes[1].signal(libc::SIGCONT)?;
    }

    Ok((detected, serving))
}

/// Shards moved when a fourth member joins, then when it leaves (SIGTERM).
async fn shard_moves(
    dir: &std::path::Path,
    binary: &std::path::Path,
    nodes: &[NodeProcess],
    clients: &[Client],
) -> anyhow::Result<()> {
    let before = owners(&clients[0]).await?;
    let mut n3 = NodeProcess::new(&dir.join("n3"))?
        .binary(binary)
        .clustered(
            "n3",
            COOKIE,
            &[nodes[0].cluster_addr().context("clustered")?],
        )?;
    n3.start()?;
    wait(Duration::from_secs(30), || async {
        owners(&clients[0])
            .await
            .is_ok_and(|o| o.iter().any(|x| x == "n3"))
    })
    .await?;
    let joined = owners(&clients[0]).await?;
    let moved_in = before.iter().zip(&joined).filter(|(a, b)| a != b).count();
    n3.terminate(Duration::from_secs(30))?;
    wait(Duration::from_secs(30), || async {
        owners(&clients[0])
            .await
            .is_ok_and(|o| !o.iter().any(|x| x == "n3"))
    })
    .await?;
    let left = owners(&clients[0]).await?;
    let moved_out = joined.iter().zip(&left).filter(|(a, b)| a != b).count();
    println!(
        "shard moves: {moved_in} of {} when a 4th member joined (1/4 = {}), {moved_out} when \
         it left; {} differ from before it joined",
        before.len(),
        before.len() / 4,
        before.iter().zip(&left).filter(|(a, b)| a != b).count()
    );
    Ok(())
}

async fn owners(client: &Client) -> anyhow::Result<Vec<String>> {
    let map = client.admin().get_shard_map(GetShardMapRequest {}).await?;
    Ok(map
        .into_inner()
        .shards
        .into_iter()
        .map(|s| s.owner)
        .collect())
}

async fn connect(nodes: &[NodeProcess]) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::new();
    for node in nodes {
        out.push(node.connect().await?);
    }
    Ok(out)
}

async fn members(client: &Client) -> Vec<gridmesh_proto::v1::Member> {
    match client.admin().list_members(ListMembersRequest {}).await {
        Ok(r) => r.into_inner().members,
        Err(_) => Vec::new(),
    }
}

async fn alive(client: &Client) -> usize {
    members(client)
        .await
        .iter()
        .filter(|m| m.state == MemberState::Alive as i32 && !m.joining)
        .count()
}

async fn down(client: &Client, name: &str) -> bool {
    members(client)
        .await
        .iter()
        .any(|m| m.name == name && m.state == MemberState::Down as i32)
}

async fn wait<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        anyhow::ensure!(start.elapsed() < timeout, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn topology(meters: &[String]) -> ImportTopologyRequest {
    ImportTopologyRequest {
        feeders: vec![FeederInfo {
            feeder_id: "FO-F".to_owned(),
            rating_kva: 1000.0,
            head_meter_id: String::new(),
            transformers: Vec::new(),
        }],
        meters: meters
            .iter()
            .map(|m| MeterInfo {
                meter_id: m.clone(),
                feeder_id: "FO-F".to_owned(),
                transformer_id: String::new(),
                nominal_voltage_v: 230.0,
                service_type: ServiceType::Residential as i32,
                has_pv: false,
            })
            .collect(),
    }
}

fn reading(meter: &str, step: i64) -> Reading {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Reading {
        meter_id: meter.to_owned(),
        ts_ms: now - 86_400_000 + step * 1000,
        interval_energy_import_wh: Some(10.0),
        ..Reading::default()
    }
}
