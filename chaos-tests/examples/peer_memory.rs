//! Memory one cluster member spends per peer: the ractor_cluster session, the remote proxies of
//! the peer's gateway, heartbeats and the per-peer forwarding state.
//!
//! Starts `n0` alone, then adds members one at a time up to `--peers` (default 7). After each
//! join, once every member lists all of them alive, it waits `--settle` seconds (default 3)
//! with the cluster idle and reads `n0`'s resident memory (`VmRSS`). Prints each step and the
//! Theil–Sen slope in KiB per peer (robust to the allocator returning memory mid-run).
//! Repeats `--runs` times (default 3) and prints the median slope.
//!
//! ```text
//! cargo build --release -p gridmesh -p gridmesh-chaos
//! cargo run --release -p gridmesh-chaos --example peer_memory -- --runs 3
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use gridmesh_chaos::monitor::rss_bytes;
use gridmesh_chaos::{NodeProcess, gridmesh_binary};
use gridmesh_proto::client::Client;

const COOKIE: &str = "peer-memory-cookie-0123456789abc";

fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::args().skip_while(|a| a != name).nth(1) {
        Some(v) => v.parse().with_context(|| format!("{name} {v}")),
        None => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let peers = arg("--peers", 7)? as usize;
    let runs = arg("--runs", 3)? as usize;
    let settle = Duration::from_secs(arg("--settle", 3)?);
    let binary = gridmesh_binary()?;
    let mut slopes = Vec::new();
    for run in 0..runs {
        let points = one_run(&binary, peers, settle).await?;
        let slope = slope(&points);
        println!(
            "run {run}: {}; slope {:.0} KiB per peer",
            points
                .iter()
                .map(|(p, kib)| format!("{p} peers {:.1} MiB", kib / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
            slope
        );
        slopes.push(slope);
    }
    slopes.sort_by(f64::total_cmp);
    println!(
        "median over {runs} runs: {:.0} KiB of resident memory per peer",
        slopes[slopes.len() / 2]
    );
    Ok(())
}

/// (peers, RSS KiB of n0) after each join.
async fn one_run(
    binary: &std::path::Path,
    peers: usize,
    settle: Duration,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let dir = tempfile::tempdir()?;
    let mut nodes: Vec<NodeProcess> = Vec::new();
    let mut points = Vec::new();
    for i in 0..=peers {
        let name = format!("n{i}");
        // Every member is seeded with n0 only; the others find each other through it.
        let seeds: Vec<SocketAddr> = nodes
            .first()
            .and_then(NodeProcess::cluster_addr)
            .into_iter()
            .collect();
        let mut node = NodeProcess::new(&dir.path().join(&name))?
            .binary(binary)
            .clustered(&name, COOKIE, &seeds)?;
        node.start()?;
        node.wait_ready(Duration::from_secs(60))?;
        nodes.push(node);
        let n0 = nodes[0].connect().await?;
        members_alive(std::slice::from_ref(&n0), i + 1).await?;
        tokio::time::sleep(settle).await;
        let pid = nodes[0].pid().context("n0 runs")?;
        let rss = rss_bytes(pid).context("n0 RSS")?;
        points.push((i, rss as f64 / 1024.0));
    }
    for node in &mut nodes {
        let _ = node.terminate(Duration::from_secs(30));
    }
    Ok(points)
}

/// Theil–Sen slope: the median of the slopes between every pair of steps. The allocator now
/// and then hands tens of MiB back to the kernel between two samples; a least-squares fit
/// follows such a drop, the median of pairwise slopes does not.
fn slope(points: &[(usize, f64)]) -> f64 {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 as f64 - a.0 as f64));
            }
        }
    }
    slopes.sort_by(f64::total_cmp);
    slopes.get(slopes.len() / 2).copied().unwrap_or(0.0)
}

/// Until every one of `clients` lists `n` members, all alive and settled, with the same
/// shard owners (the harness's own convergence check).
async fn members_alive(clients: &[Client], n: usize) -> anyhow::Result<()> {
    gridmesh_chaos::checker::views_converged(clients, n, Duration::from_secs(60))
        .await
        .map(|_| ())
        .map_err(anyhow::Error::msg)
}
