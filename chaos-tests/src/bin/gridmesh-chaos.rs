//! `gridmesh-chaos`: runs a seeded fault schedule against real `gridmesh` processes while
//! clients ingest, then checks every acknowledged reading and writes a report.
//!
//! ```text
//! gridmesh-chaos run --nodes 3 --duration 120s --seed 42 --faults network,membership,kill
//! gridmesh-chaos docker --duration 60s --seed 7
//! gridmesh-chaos cleanup
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use gridmesh_chaos::activation;
use gridmesh_chaos::checker::{self, ResourceBounds, WipeAllowance};
use gridmesh_chaos::cluster::{ClusterSpec, ClusterUnderTest, Mode};
use gridmesh_chaos::monitor::{self, Observations};
use gridmesh_chaos::nemesis::{self, NemesisLog};
use gridmesh_chaos::report::{self, RunSummary};
use gridmesh_chaos::schedule::{self, FaultKind, FaultWindow, ScheduleConfig};
use gridmesh_chaos::workload::{self, Op, WorkloadConfig};
use gridmesh_chaos::{docker, gridmesh_binary, netns};
use gridmesh_proto::client::Client;

/// Chaos testing for GridMesh.
#[derive(Debug, Parser)]
#[command(name = "gridmesh-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one seeded schedule against node processes and check the outcome.
    Run(Box<RunArgs>),
    /// Run against the three-node Docker Compose cluster of cluster-config/docker.
    Docker(Box<docker::DockerArgs>),
    /// Remove namespaces, bridges and processes that crashed runs left behind.
    Cleanup,
}

/// How to isolate the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetMode {
    /// Namespaces when root and the tools are there, else loopback.
    Auto,
    /// One network namespace per node (root, iproute2, nftables); fails if unavailable.
    Netns,
    /// Loopback ports: process and membership faults only.
    Loopback,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Length of the fault schedule (clients keep going a few seconds longer to see recovery).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the schedule; random when not given (and printed, to replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds or groups, comma separated: kill, pause, restart, wipe, isolate, split
    /// (alias partition), oneway, flap, bridge, loss, bandwidth, latency, slow, reset, join,
    /// drain; groups process, network, membership, all (all but wipe).
    #[arg(long, default_value = "kill,pause,restart", value_delimiter = ',')]
    faults: Vec<String>,
    /// How nodes are isolated.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    net: NetMode,
    /// Nodes that may join during the run (used by `join` windows).
    #[arg(long, default_value_t = 2)]
    spares: usize,
    /// Shortest fault window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    window_min: Duration,
    /// Longest fault window.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    window_max: Duration,
    /// Shortest quiet gap between windows.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    gap_min: Duration,
    /// Longest quiet gap between windows.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    gap_max: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Meters per client (readings per request).
    #[arg(long, default_value_t = 25)]
    meters_per_client: usize,
    /// Copies per reading, for nodes that cannot report it (`GetReplicaStatus`); the nodes'
    /// own figure wins. Only with 1 are readings lost to a `wipe` expected (reported apart).
    /// (Default 1; the replay line repeats it only when given.)
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Fail the run when any node's resident memory exceeds this, MiB.
    #[arg(long, default_value_t = 1024)]
    max_rss_mib: u64,
    /// Where report.json, report.md and timeline.svg go.
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
    /// The gridmesh binary (default: next to this one).
    #[arg(long)]
    gridmesh_bin: Option<PathBuf>,
    /// Log filter of the nodes (their logs are copied to `<out>/logs/`).
    #[arg(long, default_value = "info")]
    node_log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let outcome = match cli.command {
        Command::Run(args) => runtime.block_on(interruptible(run(*args))),
        Command::Docker(args) => runtime.block_on(interruptible(docker::run(*args))),
        Command::Cleanup => {
            let removed = netns::cleanup_stale();
            println!("removed {} stale item(s): {removed:?}", removed.len());
            Ok(true)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `work` as a task; on ctrl-C aborts it, which drops (and so tears down) whatever it
/// created: processes, proxy, namespaces, data.
async fn interruptible(
    work: impl Future<Output = anyhow::Result<bool>> + Send + 'static,
) -> anyhow::Result<bool> {
    let mut task = tokio::spawn(work);
    tokio::select! {
        joined = &mut task => joined.context("the run panicked")?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: tearing down");
            task.abort();
            let _ = task.await;
            bail!("interrupted")
        }
    }
}

/// The mode to use and why, and the kinds that mode cannot inject.
fn choose_mode(
    args: &RunArgs,
    kinds: &mut Vec<FaultKind>,
) -> anyhow::Result<(Mode, String, Vec<String>)> {
    let unavailable = netns::unavailable_reason();
    let (mode, note) = match (args.net, unavailable) {
        (NetMode::Loopback, _) => (Mode::Loopback, "asked for with --net loopback".to_owned()),
        (NetMode::Netns, Some(reason)) => bail!("--net netns is not possible here: {reason}"),
        (NetMode::Auto, Some(reason)) => (Mode::Loopback, format!("no namespaces: {reason}")),
        (_, None) => (
            Mode::Netns,
            "one network namespace per node; cluster links through the fault proxy".to_owned(),
        ),
    };
    let mut skipped = Vec::new();
    if mode == Mode::Loopback {
        kinds.retain(|k| {
            let keep = !k.needs_namespaces();
            if !keep {
                skipped.push(format!("{} (needs network namespaces)", k.name()));
            }
            keep
        });
    }
    Ok((mode, note, skipped))
}

fn parse_faults(names: &[String]) -> anyhow::Result<Vec<FaultKind>> {
    let mut kinds = Vec::new();
    for name in names {
        let Some(group) = FaultKind::parse_group(name.trim()) else {
            let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            bail!(
                "unknown fault {name:?}; known: {}, or process, network, membership, all",
                known.join(", ")
            );
        };
        for kind in group {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    Ok(kinds)
}

fn replay_command(args: &RunArgs, seed: u64) -> String {
    // Milliseconds: humantime would write `3s 500ms`, which the shell splits.
    let d = |d: Duration| format!("{}ms", d.as_millis());
    format!(
        "gridmesh-chaos run --nodes {} --duration {} --seed {seed} --faults {} --net {} \
         --spares {} --window-min {} --window-max {} --gap-min {} --gap-max {} --clients {} \
         --meters-per-client {}{}",
        args.nodes,
        d(args.duration),
        args.faults.join(","),
        format!("{:?}", args.net).to_lowercase(),
        args.spares,
        d(args.window_min),
        d(args.window_max),
        d(args.gap_min),
        d(args.gap_max),
        args.clients,
        args.meters_per_client,
        args.replication_factor
            .map(|r| format!(" --replication-factor {r}"))
            .unwrap_or_default()
    )
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let mut kinds = parse_faults(&args.faults)?;
    let (mode, mode_note, skipped) = choose_mode(&args, &mut kinds)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let replay = replay_command(&args, seed);
    println!("seed {seed}; replay with: {replay}");
    println!("mode: {} ({mode_note})", mode.name());
    if !skipped.is_empty() {
        println!("not injected in this mode: {}", skipped.join(", "));
    }
    if mode == Mode::Netns {
        let removed = netns::cleanup_stale();
        if !removed.is_empty() {
            println!("removed what earlier runs left: {removed:?}");
        }
    }

    let joins = kinds.contains(&FaultKind::Join);
    let clustered = args.nodes > 1 || joins || kinds.contains(&FaultKind::Drain);
    let spec = ClusterSpec {
        mode,
        nodes: args.nodes,
        spares: if joins { args.spares } else { 0 },
        clustered,
        binary: match &args.gridmesh_bin {
            Some(path) => path.clone(),
            None => gridmesh_binary()?,
        },
        env: vec![("GRIDMESH_LOG__LEVEL".to_owned(), args.node_log.clone())],
    };
    let mut cluster = ClusterUnderTest::start(&spec).await?;
    tokio::task::block_in_place(|| cluster.wait_all_ready(Duration::from_secs(60)))?;
    let targets = connect_all(&cluster, cluster.initial).await?;
    if clustered {
        let took = checker::views_converged(&targets, args.nodes, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
        println!("{} nodes formed a cluster in {took:?}", args.nodes);
    }
    let config = WorkloadConfig {
        clients: args.clients,
        meters_per_client: args.meters_per_client,
        feeders: 4,
        base_ts_ms: workload::now_ms() - 60 * 86_400_000,
        request_timeout: Duration::from_secs(2),
        attempts: if clustered { 1 } else { 3 },
    };
    targets[0]
        .registry()
        .import_topology(workload::topology(&config))
        .await
        .context("registering meters")?;

    let schedule_config = ScheduleConfig {
        seed,
        duration: args.duration,
        faults: kinds.clone(),
        nodes: args.nodes,
        spare_nodes: spec.spares,
        window: (args.window_min, args.window_max),
        gap: (args.gap_min, args.gap_max),
    };
    let windows = schedule::generate(&schedule_config);
    schedule::announce(&windows, &kinds, &schedule_config);

    let driven = drive(&config, &targets, &mut cluster, &windows, args.duration).await?;
    let Driven {
        history,
        log,
        observations,
        converged,
        probe_readings,
        mut violations,
    } = driven;
    violations.extend(log.violations.iter().cloned());
    violations.extend(proxy_violations(&cluster));
    let planned = windows;
    let windows = log.effective(&planned);
    let length = windows
        .iter()
        .map(FaultWindow::end)
        .max()
        .unwrap_or_default();
    let length = length.max(args.duration) + Duration::from_secs(3);

    let replicas =
        check_replicas(&cluster, &targets[0], args.replication_factor.unwrap_or(1)).await;
    violations.extend(replicas.violations.iter().cloned());
    let allowance = (replicas.factor == 1).then(|| wipe_allowance(&log, &observations));
    let target = cluster.nodes[0].grpc_target();
    let verified = checker::verify(&config, &target, &history, clustered, allowance.as_ref());
    let (check, other) = verified.await?;
    violations.extend(other);
    if replicas.factor > 1 {
        let running: Vec<String> = cluster
            .running()
            .into_iter()
            .map(|i| cluster.nodes[i].grpc_target())
            .collect();
        let short = checker::check_copies(&config, &running, &history, replicas.factor).await?;
        if !short.is_empty() {
            violations.push(format!(
                "{} acknowledged reading(s) have fewer than {} copies after healing",
                short.len(),
                replicas.factor.min(running.len() as u32)
            ));
            violations.extend(short.into_iter().take(20));
        }
    }
    violations.extend(checker::check_resources(
        &observations,
        &ResourceBounds::node_defaults(args.max_rss_mib),
    ));
    violations.extend(activation::check(&observations).violations);
    let mut running = Vec::new();
    for i in cluster.running() {
        running.push((
            i,
            gridmesh_chaos::connect_admin(&cluster.nodes[i].grpc_target()).await?,
        ));
    }
    violations.extend(activation::settled(&running, activation::SETTLE_ACTIVATION).await);
    let running_targets: Vec<String> = cluster
        .running()
        .into_iter()
        .map(|i| cluster.nodes[i].grpc_target())
        .collect();
    let alerts = checker::check_alerts(&running_targets, probe_readings, ALERTS_SETTLE).await;
    violations.extend(alerts.violations.iter().cloned());

    let summary = RunSummary {
        seed,
        mode: mode.name(),
        mode_note,
        nodes: args.nodes,
        duration: args.duration,
        windows: &windows,
        planned: &planned,
        applied: &log.applied,
        history: &history,
        observations: &observations,
        check: &check,
        other_violations: &violations,
        replication_factor: replicas.factor,
        replicas_converged_after: replicas.converged_after,
        converged_after: converged,
        proxy: proxy_stats(&cluster),
        skipped_faults: skipped,
        max_rss_bytes: args.max_rss_mib << 20,
        replay,
        alerts: Some(&alerts),
    };
    report::write_all(&args.out, &summary, length)?;
    write_violations(&args.out, &summary)?;
    copy_logs(&cluster, &args.out)?;
    let passed = summary.passed();
    if !passed {
        println!("FAILED; replay with: {}", summary.replay);
    }
    Ok(passed)
}

async fn connect_all(cluster: &ClusterUnderTest, count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for node in cluster.nodes.iter().take(count) {
        clients.push(gridmesh_chaos::connect_admin(&node.grpc_target()).await?);
    }
    Ok(clients)
}

struct Driven {
    history: Vec<Op>,
    log: NemesisLog,
    observations: Observations,
    converged: Option<Duration>,
    /// Alert probe readings acknowledged.
    probe_readings: u64,
    violations: Vec<String>,
}

/// How long the alerts of the probe may take to reach every node after healing.
const ALERTS_SETTLE: Duration = Duration::from_secs(20);

/// Runs the workload, the monitor and the nemesis together, then waits for the healed cluster
/// to be ready and its views to converge.
async fn drive(
    config: &WorkloadConfig,
    targets: &[Client],
    cluster: &mut ClusterUnderTest,
    windows: &[FaultWindow],
    duration: Duration,
) -> anyhow::Result<Driven> {
    let start = Instant::now();
    // Clients go on until a little after the last fault healed, so recovery is measured, also
    // when the nemesis ran late (a wipe waiting for replicas).
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            tokio::spawn(workload::run_client(
                c,
                config.clone(),
                targets.to_vec(),
                start,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();
    let probe = tokio::spawn(workload::run_probe(
        config.clone(),
        targets.to_vec(),
        stop.clone(),
    ));
    let (stop_monitor, stopped) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(monitor::run(cluster.slots.clone(), start, stopped));

    let log = nemesis::run(cluster, windows, start, history.clone()).await?;
    tokio::time::sleep_until((start + duration).max(Instant::now()).into()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let probe_readings = probe.await?;
    let mut violations = Vec::new();
    if let Err(e) = tokio::task::block_in_place(|| cluster.wait_all_ready(Duration::from_secs(60)))
    {
        violations.push(format!("after healing: {e:#}"));
    }
    let running = cluster.running();
    let converged = if running.len() > 1 {
        let all = connect_all(cluster, cluster.nodes.len()).await;
        let all: Vec<Client> = match all {
            Ok(all) => all,
            Err(_) => connect_running(cluster, &running).await?,
        };
        match checker::views_converged(&all, running.len(), Duration::from_secs(60)).await {
            Ok(took) => {
                println!("cluster converged {took:?} after the last fault healed");
                Some(took)
            }
            Err(e) => {
                violations.push(e);
                None
            }
        }
    } else {
        None
    };
    let _ = stop_monitor.send(true);
    let observations = monitor.await?;
    let history = std::mem::take(&mut *history.lock().await);
    Ok(Driven {
        history,
        log,
        observations,
        converged,
        probe_readings,
        violations,
    })
}

async fn connect_running(
    cluster: &ClusterUnderTest,
    running: &[usize],
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for i in running {
        clients.push(gridmesh_chaos::connect_admin(&cluster.nodes[*i].grpc_target()).await?);
    }
    Ok(clients)
}

/// In namespace mode: no established connection goes around the proxy, and every pair of
/// nodes that ran talked through it.
fn proxy_violations(cluster: &ClusterUnderTest) -> Vec<String> {
    let (Some(network), Some(proxy)) = (&cluster.network, &cluster.proxy) else {
        return Vec::new();
    };
    let mut violations = Vec::new();
    for i in cluster.running() {
        match network.connections_bypassing_proxy(i) {
            Ok(bypass) => violations.extend(
                bypass
                    .into_iter()
                    .map(|c| format!("cluster connection around the proxy: {c}")),
            ),
            Err(e) => violations.push(format!("could not list node {i}'s connections: {e:#}")),
        }
    }
    let stats = proxy.stats();
    let running = cluster.running();
    for a in &running {
        for b in running.iter().filter(|b| *b > a) {
            let talked = [(*a, *b), (*b, *a)]
                .iter()
                .any(|link| stats.get(link).is_some_and(|s| s.connections > 0));
            if !talked {
                violations.push(format!(
                    "nodes {a} and {b} never connected through the proxy"
                ));
            }
        }
    }
    if proxy.strangers() > 0 {
        violations.push(format!(
            "{} connection(s) reached the proxy from an address that is no node",
            proxy.strangers()
        ));
    }
    violations
}

fn proxy_stats(
    cluster: &ClusterUnderTest,
) -> Vec<((usize, usize), gridmesh_chaos::proxy::LinkStats)> {
    let mut stats: Vec<_> = cluster
        .proxy
        .as_ref()
        .map(|p| p.stats().into_iter().collect())
        .unwrap_or_default();
    stats.sort_by_key(|(link, _)| *link);
    stats
}

/// What the replication checks found.
struct ReplicaOutcome {
    factor: u32,
    converged_after: Option<Duration>,
    violations: Vec<String>,
}

/// The factor the nodes report (else `fallback`) and, with more than one copy, how long the
/// replicas took to converge after healing (bounded, 120 s).
async fn check_replicas(
    cluster: &ClusterUnderTest,
    client: &Client,
    fallback: u32,
) -> ReplicaOutcome {
    let reported = checker::replication(client).await;
    let factor = reported.map_or(fallback, |r| r.factor);
    match reported {
        Some(r) => println!(
            "replication: factor {}, write quorum {}",
            r.factor, r.write_quorum
        ),
        None => println!("replication: the nodes do not report it; assuming factor {fallback}"),
    }
    let mut outcome = ReplicaOutcome {
        factor,
        converged_after: None,
        violations: Vec::new(),
    };
    if factor <= 1 || cluster.running().len() < 2 {
        return outcome;
    }
    match checker::replicas_converged(client, Duration::from_secs(120)).await {
        Ok((took, waited_for)) => {
            println!("replicas converged {took:?} after the views did");
            if let Some(first) = waited_for {
                println!("  (at first: {first})");
            }
            outcome.converged_after = Some(took);
        }
        Err(e) => outcome.violations.push(e),
    }
    outcome
}

/// Shards each wiped node owned in any map the monitor saw before its wipe.
fn wipe_allowance(log: &NemesisLog, observations: &Observations) -> WipeAllowance {
    let shard_count = observations
        .views
        .iter()
        .map(|v| v.owners.len() as u32)
        .max()
        .unwrap_or(0);
    let wipes = log
        .wipes
        .iter()
        .map(|(node, at)| {
            let name = monitor::node_name(*node);
            let owned: HashSet<u32> = observations
                .views
                .iter()
                .filter(|v| v.at <= *at)
                .flat_map(|v| {
                    v.owners
                        .iter()
                        .enumerate()
                        .filter(|(_, owner)| **owner == name)
                        .map(|(shard, _)| shard as u32)
                        .collect::<Vec<_>>()
                })
                .collect();
            (*at, owned)
        })
        .collect();
    WipeAllowance { shard_count, wipes }
}

/// Every violation, one per line, in `<out>/violations.txt` (the reports list the first ones).
fn write_violations(out: &std::path::Path, summary: &RunSummary<'_>) -> anyhow::Result<()> {
    let check = summary.check;
    let all: Vec<&String> = check
        .lost
        .iter()
        .chain(&check.duplicated)
        .chain(&check.refused_but_stored)
        .chain(&check.phantoms)
        .chain(summary.other_violations)
        .collect();
    let text: String = all.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(out.join("violations.txt"), text)?;
    Ok(())
}

/// Copies every node's log to `<out>/logs/n<i>.log` (the data directories go with the run).
fn copy_logs(cluster: &ClusterUnderTest, out: &std::path::Path) -> anyhow::Result<()> {
    let dir = out.join("logs");
    std::fs::create_dir_all(&dir)?;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if node.log_path.exists() {
            std::fs::copy(
                &node.log_path,
                dir.join(format!("{}.log", monitor::node_name(i))),
            )?;
        }
    }
    Ok(())
}
