//! `gridmesh-chaos`: runs a seeded fault schedule against real `gridmesh` processes while
//! clients ingest, then checks every acknowledged reading and writes a report.
//!
//! ```text
//! gridmesh-chaos run --duration 60s --seed 42 --faults kill,pause,restart
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use gridmesh_chaos::checker::{self, CheckResult};
use gridmesh_chaos::report::{self, RunSummary};
use gridmesh_chaos::schedule::{self, FaultKind, FaultWindow, ScheduleConfig};
use gridmesh_chaos::workload::{self, Op, WorkloadConfig};
use gridmesh_chaos::{NodeProcess, gridmesh_binary};
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetMeterStatusRequest, ListMembersRequest, MemberState, Resolution,
};

/// Chaos testing for GridMesh.
#[derive(Debug, Parser)]
#[command(name = "gridmesh-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one seeded schedule and check the outcome.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Nodes to start. Runs with more than one node need the cluster, which is not built yet.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Length of the fault schedule (clients keep going a few seconds longer to see recovery).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the schedule; random when not given (and printed, to replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma separated: kill, pause, restart.
    #[arg(long, default_value = "kill,pause,restart", value_delimiter = ',')]
    faults: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Meters per client (readings per request).
    #[arg(long, default_value_t = 25)]
    meters_per_client: usize,
    /// Where report.json and report.md go.
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
    /// The gridmesh binary (default: next to this one).
    #[arg(long)]
    gridmesh_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let faults = parse_faults(&args.faults)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let replay = format!(
        "gridmesh-chaos run --nodes {} --duration {} --seed {seed} --faults {} --clients {} \
         --meters-per-client {}",
        args.nodes,
        humantime::format_duration(args.duration),
        args.faults.join(","),
        args.clients,
        args.meters_per_client
    );
    println!("seed {seed}; replay with: {replay}");
    println!(
        "mode: loopback (one process per node on 127.0.0.1; \
         network faults need namespaces, not built yet)"
    );

    let data = tempfile::Builder::new()
        .prefix("gridmesh-chaos-")
        .tempdir()?;
    let binary = match &args.gridmesh_bin {
        Some(path) => path.clone(),
        None => gridmesh_binary()?,
    };
    let clustered = args.nodes > 1;
    let mut nodes = if clustered {
        let cookie = format!("chaos-{:032x}", rand::random::<u128>());
        gridmesh_chaos::cluster_processes(data.path(), args.nodes, &binary, &cookie)?
    } else {
        vec![NodeProcess::new(&data.path().join("node0"))?.binary(&binary)]
    };
    for node in &mut nodes {
        node.spawn()?;
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        node.wait_ready(Duration::from_secs(60))
            .with_context(|| format!("starting node {i}"))?;
    }
    let targets = connect_all(&nodes).await?;
    if clustered {
        let took = wait_converged(&targets, Duration::from_secs(60)).await?;
        println!("{} nodes formed a cluster in {took:?}", args.nodes);
    }
    let now = gridmesh_proto_now_ms();
    let config = WorkloadConfig {
        clients: args.clients,
        meters_per_client: args.meters_per_client,
        feeders: 4,
        base_ts_ms: now - 60 * 86_400_000,
        request_timeout: Duration::from_secs(2),
        attempts: if clustered { 1 } else { 3 },
    };
    targets[0]
        .registry()
        .import_topology(workload::topology(&config))
        .await
        .context("registering meters")?;

    let windows = schedule::generate(&ScheduleConfig {
        seed,
        duration: args.duration,
        faults,
        nodes: args.nodes,
        window: (Duration::from_secs(1), Duration::from_secs(4)),
        gap: (Duration::from_secs(1), Duration::from_secs(3)),
    });
    println!("{} fault windows over {:?}", windows.len(), args.duration);

    let history = drive(&config, &targets, nodes, &windows, args.duration).await?;
    let (nodes, history) = history;
    if clustered {
        let took = wait_converged(&targets, Duration::from_secs(60)).await?;
        println!("cluster converged {took:?} after the last fault healed");
    }
    let (check, other) = verify(&config, &nodes, &history, clustered).await?;
    let summary = RunSummary {
        seed,
        mode: "loopback",
        nodes: args.nodes,
        duration: args.duration,
        windows: &windows,
        history: &history,
        check: &check,
        other_violations: &other,
        replay,
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report::to_json(&summary))?,
    )?;
    let markdown = report::to_markdown(&summary);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    println!("{markdown}");
    println!("reports written to {}", args.out.display());
    let passed = check.is_ok() && other.is_empty();
    if !passed {
        println!("FAILED; replay with: {}", summary.replay);
    }
    Ok(passed)
}

fn gridmesh_proto_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_faults(names: &[String]) -> anyhow::Result<Vec<FaultKind>> {
    names
        .iter()
        .map(|name| match FaultKind::parse(name.trim()) {
            Some(kind) => Ok(kind),
            None if ["partition", "latency", "loss", "bandwidth"].contains(&name.trim()) => {
                bail!(
                    "fault {name:?} needs network namespaces, which the harness does not build yet"
                )
            }
            None => bail!("unknown fault {name:?}; known: kill, pause, restart"),
        })
        .collect()
}

/// Waits until every node sees every node alive and owning shards (none joining).
async fn wait_converged(clients: &[Client], timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut converged = true;
        for client in clients {
            let view = client
                .admin()
                .list_members(ListMembersRequest {})
                .await
                .map(tonic::Response::into_inner);
            let ok = view.is_ok_and(|v| {
                v.members.len() == clients.len()
                    && v.members.iter().all(|m| {
                        m.state == MemberState::Alive as i32 && !m.joining && m.shards_owned > 0
                    })
            });
            converged &= ok;
        }
        if converged {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("the nodes did not converge to one cluster within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect_all(nodes: &[NodeProcess]) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for node in nodes {
        clients.push(node.connect().await?);
    }
    Ok(clients)
}

/// Runs the workload and the nemesis together; returns the nodes (healed) and the history.
async fn drive(
    config: &WorkloadConfig,
    targets: &[Client],
    nodes: Vec<NodeProcess>,
    windows: &[FaultWindow],
    duration: Duration,
) -> anyhow::Result<(Vec<NodeProcess>, Vec<Op>)> {
    let start = Instant::now();
    // Clients go on a little after the last fault so recovery is measured.
    let stop = start + duration + Duration::from_secs(3);
    let history = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            tokio::spawn(workload::run_client(
                c,
                config.clone(),
                targets.to_vec(),
                start,
                stop,
                history.clone(),
            ))
        })
        .collect();
    let plan = windows.to_vec();
    let nodes = tokio::task::spawn_blocking(move || nemesis(nodes, &plan, start)).await??;
    for client in clients {
        client.await?;
    }
    let history = std::mem::take(&mut *history.lock().await);
    Ok((nodes, history))
}

/// Applies the schedule (blocking: it waits on processes).
fn nemesis(
    mut nodes: Vec<NodeProcess>,
    windows: &[FaultWindow],
    start: Instant,
) -> anyhow::Result<Vec<NodeProcess>> {
    for w in windows {
        std::thread::sleep((start + w.start).saturating_duration_since(Instant::now()));
        let node = &mut nodes[w.node];
        println!(
            "[{:>6.1}s] {} node {} for {:?}",
            start.elapsed().as_secs_f64(),
            w.kind.name(),
            w.node,
            w.length
        );
        match w.kind {
            FaultKind::Kill => node.kill()?,
            FaultKind::Pause => node.signal(libc::SIGSTOP)?,
            FaultKind::Restart => {
                let status = node.terminate(Duration::from_secs(30))?;
                if !status.success() {
                    bail!(
                        "node {} exited with {status} after SIGTERM:\n{}",
                        w.node,
                        node.log_tail(30)
                    );
                }
            }
        }
        std::thread::sleep((start + w.end()).saturating_duration_since(Instant::now()));
        match w.kind {
            FaultKind::Kill | FaultKind::Restart => node.start()?,
            FaultKind::Pause => node.signal(libc::SIGCONT)?,
        }
        println!(
            "[{:>6.1}s] healed node {}",
            start.elapsed().as_secs_f64(),
            w.node
        );
    }
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(30))?;
    }
    Ok(nodes)
}

/// Reads everything back and checks readings, per-meter counters and feeder aggregates.
async fn verify(
    config: &WorkloadConfig,
    nodes: &[NodeProcess],
    history: &[Op],
    clustered: bool,
) -> anyhow::Result<(CheckResult, Vec<String>)> {
    let client = nodes[0].connect().await?;
    let meters: Vec<(usize, usize)> = (0..config.clients)
        .flat_map(|c| (0..config.meters_per_client).map(move |m| (c, m)))
        .collect();
    let ids: Vec<String> = meters
        .iter()
        .map(|(c, m)| workload::meter_id(*c, *m))
        .collect();
    let to = gridmesh_proto_now_ms();
    let stored = checker::read_back(&client, &ids, config.base_ts_ms, to).await?;
    let check = checker::check_history(history, &stored);
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
