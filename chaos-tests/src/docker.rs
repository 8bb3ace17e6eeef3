//! The Docker lane: the same workload, monitor, checker and report against the three-node
//! Compose cluster of `cluster-config/docker/compose.yaml`, with container faults.
//!
//! 1. Checks that an engine answers (`docker info`) and that Compose exists (`docker-compose`
//!    or `docker compose`); otherwise prints why and returns success without running.
//! 2. Builds the node image from the local binary (`cluster-config/docker/build-image.sh`:
//!    `FROM scratch`, nothing pulled).
//! 3. Brings the project `gmc<pid>` up, waits for the three nodes and their views, registers the
//!    meters, and runs the seeded schedule with these kinds:
//!    - `kill`: `docker kill` (SIGKILL), then `docker start`;
//!    - `pause`: `docker pause` (cgroup freezer), then `docker unpause`;
//!    - `restart`: `docker stop` (SIGTERM, graceful), then `docker start`;
//!    - `isolate`: `docker network disconnect`, then `connect` with the same address (this cuts
//!      the clients' path to the node too).
//! 4. Heals, checks and reports like `gridmesh-chaos run` (mode `docker`), and takes the
//!    project down with its volumes, also on failure or ctrl-C (a guard), and removes what a
//!    crashed earlier run left (projects `gmc<pid>` whose pid is gone).
//!
//! The monitor reads each container's memory from `/proc/<pid>` of its main process (the
//! harness must run on the Docker host, as root, to see it).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gridmesh_proto::client::Client;

use crate::checker::{self, ResourceBounds};
use crate::monitor::{self, NodeSlot, Slots, node_name};
use crate::nemesis::{Applied, NemesisLog};
use crate::report::{self, RunSummary};
use crate::schedule::{self, FaultKind, FaultWindow, ScheduleConfig};
use crate::workload::{self, WorkloadConfig};

/// Fault kinds the Docker lane can inject.
pub const DOCKER_FAULTS: [FaultKind; 4] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::Restart,
    FaultKind::Isolate,
];

/// Nodes of the compose file, and their fixed addresses.
const NODES: usize = 3;

fn node_ip(i: usize) -> String {
    format!("172.29.0.{}", 10 + i)
}

/// `gridmesh-chaos docker` arguments.
#[derive(Debug, clap::Args)]
pub struct DockerArgs {
    /// Length of the fault schedule.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Seed of the schedule; random when not given (and printed, to replay).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault kinds: kill, pause, restart, isolate (docker network disconnect).
    #[arg(
        long,
        default_value = "kill,pause,restart,isolate",
        value_delimiter = ','
    )]
    pub faults: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Meters per client (readings per request).
    #[arg(long, default_value_t = 25)]
    pub meters_per_client: usize,
    /// The compose file.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"),
        "/../cluster-config/docker/compose.yaml"))]
    pub compose: PathBuf,
    /// The gridmesh binary the image is built from (default: next to this one).
    #[arg(long)]
    pub gridmesh_bin: Option<PathBuf>,
    /// Use the existing `gridmesh:local` image instead of building it.
    #[arg(long)]
    pub no_build: bool,
    /// Fail when a container's resident memory exceeds this, MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_rss_mib: u64,
    /// Where the reports go.
    #[arg(long, default_value = "chaos-report-docker")]
    pub out: PathBuf,
}

/// Why the lane cannot run here, or `None`.
pub fn unavailable_reason() -> Option<String> {
    match run_timeout("docker", &["info", "--format", "{{.ServerVersion}}"], 20) {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("docker is not usable here: {e:#}")),
    }
}

/// Runs a command with a timeout (via coreutils `timeout`), capturing its output.
fn run_timeout(program: &str, args: &[&str], secs: u32) -> anyhow::Result<Output> {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))
}

fn run_ok(program: &str, args: &[&str], secs: u32) -> anyhow::Result<String> {
    let out = run_timeout(program, args, secs)?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The Compose command: `docker-compose`, else the `docker compose` plugin.
fn compose_command() -> Option<Vec<String>> {
    let v1 = run_timeout("docker-compose", &["version"], 20);
    if v1.is_ok_and(|o| o.status.success()) {
        return Some(vec!["docker-compose".to_owned()]);
    }
    let v2 = run_timeout("docker", &["compose", "version"], 20);
    v2.is_ok_and(|o| o.status.success())
        .then(|| vec!["docker".to_owned(), "compose".to_owned()])
}

/// A Compose project that is taken down (with its volumes) when dropped.
#[derive(Debug)]
struct Project {
    compose: Vec<String>,
    file: PathBuf,
    name: String,
    cookie: String,
}

impl Project {
    fn run(&self, args: &[&str], secs: u32) -> anyhow::Result<String> {
        let file = self.file.to_string_lossy().into_owned();
        let mut full: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        full.extend(["-p", &self.name, "-f", &file]);
        full.extend_from_slice(args);
        let out = Command::new("timeout")
            .arg(secs.to_string())
            .arg(&self.compose[0])
            .args(&full)
            .env("GRIDMESH_COOKIE", &self.cookie)
            .env("GRIDMESH_BOOTSTRAP_PASSWORD", crate::TEST_ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                self.compose.join(" "),
                full.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn container(&self, i: usize) -> anyhow::Result<String> {
        let id = self.run(&["ps", "-q", &node_name(i)], 60)?;
        id.lines()
            .next()
            .map(str::to_owned)
            .with_context(|| format!("no container for {}", node_name(i)))
    }

    fn network(&self) -> String {
        format!("{}_gridmesh", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["down", "-v", "--timeout", "5"], 120) {
            eprintln!(
                "warning: taking the compose project {} down: {e:#}",
                self.name
            );
        }
    }
}

/// Takes down projects `gmc<pid>` of runs whose process is gone.
fn cleanup_stale(compose: &[String], file: &std::path::Path) {
    let Ok(networks) = run_ok("docker", &["network", "ls", "--format", "{{.Name}}"], 30) else {
        return;
    };
    for network in networks.lines() {
        let Some(pid) = network
            .strip_prefix("gmc")
            .and_then(|rest| rest.strip_suffix("_gridmesh"))
        else {
            continue;
        };
        if pid.chars().all(|c| c.is_ascii_digit())
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            println!("taking down the compose project gmc{pid} a crashed run left");
            drop(Project {
                compose: compose.to_vec(),
                file: file.to_owned(),
                name: format!("gmc{pid}"),
                cookie: "stale-project-cleanup".to_owned(),
            });
        }
    }
}

/// Runs the lane; `Ok(true)` also when it is skipped (with the reason printed).
pub async fn run(args: DockerArgs) -> anyhow::Result<bool> {
    if let Some(reason) = unavailable_reason() {
        println!("SKIPPED: the Docker lane needs a Docker engine: {reason}");
        return Ok(true);
    }
    let Some(compose) = compose_command() else {
        println!("SKIPPED: neither docker-compose nor the docker compose plugin is installed");
        return Ok(true);
    };
    let kinds = parse_docker_faults(&args.faults)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let replay = format!(
        "gridmesh-chaos docker --duration {}ms --seed {seed} --faults {} --clients {} \
         --meters-per-client {}",
        args.duration.as_millis(),
        args.faults.join(","),
        args.clients,
        args.meters_per_client
    );
    println!("seed {seed}; replay with: {replay}");
    let file = args
        .compose
        .canonicalize()
        .with_context(|| format!("compose file {}", args.compose.display()))?;
    cleanup_stale(&compose, &file);
    if !args.no_build {
        build_image(&file, args.gridmesh_bin.clone())?;
    }
    let project = Project {
        compose,
        file,
        name: format!("gmc{}", std::process::id()),
        cookie: format!("chaos-{:032x}", rand::random::<u128>()),
    };
    project.run(&["up", "-d"], 180)?;
    let started = bring_up(&project).await?;
    drive_and_check(&args, &project, &started, &kinds, seed, replay).await
}

fn parse_docker_faults(names: &[String]) -> anyhow::Result<Vec<FaultKind>> {
    let mut kinds = Vec::new();
    for name in names {
        let kind = FaultKind::parse(name.trim())
            .filter(|k| DOCKER_FAULTS.contains(k))
            .with_context(|| {
                format!("the Docker lane injects kill, pause, restart and isolate, not {name:?}")
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

fn build_image(compose_file: &std::path::Path, binary: Option<PathBuf>) -> anyhow::Result<()> {
    let script = compose_file
        .parent()
        .context("compose file directory")?
        .join("build-image.sh");
    let binary = match binary {
        Some(path) => path,
        None => crate::gridmesh_binary()?,
    };
    let status = Command::new(&script)
        .arg(&binary)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", script.display());
    }
    Ok(())
}

/// What the lane knows about the running project.
struct Started {
    containers: Vec<String>,
    slots: Slots,
    targets: Vec<Client>,
}

async fn bring_up(project: &Project) -> anyhow::Result<Started> {
    let containers: Vec<String> = (0..NODES)
        .map(|i| project.container(i))
        .collect::<anyhow::Result<_>>()?;
    let slots: Vec<NodeSlot> = (0..NODES)
        .map(|i| NodeSlot {
            name: node_name(i),
            grpc: format!("{}:7100", node_ip(i)),
            http: format!("{}:7180", node_ip(i))
                .parse()
                .expect("a valid address"),
            pid: None,
        })
        .collect();
    let slots: Slots = Arc::new(Mutex::new(slots));
    for (i, container) in containers.iter().enumerate() {
        refresh_pid(&slots, i, container);
        let http = format!("{}:7180", node_ip(i)).parse()?;
        tokio::task::block_in_place(|| {
            crate::wait_for(
                Duration::from_secs(90),
                "a container to become ready",
                || matches!(crate::http_get(http, "/readyz"), Ok((200, _))).then_some(()),
            )
        })
        .with_context(|| format!("container {} ({container})", node_name(i)))?;
    }
    let mut targets = Vec::new();
    for i in 0..NODES {
        targets.push(crate::connect_admin(&format!("{}:7100", node_ip(i))).await?);
    }
    let took = checker::views_converged(&targets, NODES, Duration::from_secs(90))
        .await
        .map_err(anyhow::Error::msg)?;
    println!("the compose cluster formed in {took:?}");
    Ok(Started {
        containers,
        slots,
        targets,
    })
}

fn refresh_pid(slots: &Slots, i: usize, container: &str) {
    let pid = run_ok(
        "docker",
        &["inspect", "-f", "{{.State.Pid}}", container],
        30,
    )
    .ok()
    .and_then(|p| p.parse::<u32>().ok())
    .filter(|p| *p > 0);
    if let Some(slot) = slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(i)
    {
        slot.pid = pid;
    }
}

async fn drive_and_check(
    args: &DockerArgs,
    project: &Project,
    started: &Started,
    kinds: &[FaultKind],
    seed: u64,
    replay: String,
) -> anyhow::Result<bool> {
    let config = WorkloadConfig {
        clients: args.clients,
        meters_per_client: args.meters_per_client,
        feeders: 4,
        base_ts_ms: workload::now_ms() - 60 * 86_400_000,
        request_timeout: Duration::from_secs(2),
        attempts: 1,
    };
    started.targets[0]
        .registry()
        .import_topology(workload::topology(&config))
        .await
        .context("registering meters")?;
    let schedule_config = ScheduleConfig {
        seed,
        duration: args.duration,
        faults: kinds.to_vec(),
        nodes: NODES,
        spare_nodes: 0,
        window: (Duration::from_secs(2), Duration::from_secs(5)),
        gap: (Duration::from_secs(2), Duration::from_secs(4)),
    };
    let windows = schedule::generate(&schedule_config);
    schedule::announce(&windows, kinds, &schedule_config);

    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let history = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            let targets = started.targets.clone();
            tokio::spawn(workload::run_client(
                c,
                config.clone(),
                targets,
                start,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();
    let probe = tokio::spawn(workload::run_probe(
        config.clone(),
        started.targets.clone(),
        stop.clone(),
    ));
    let (stop_monitor, stopped) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(monitor::run(started.slots.clone(), start, stopped));
    let log = apply_schedule(project, started, &windows, start).await?;
    tokio::time::sleep_until((start + args.duration).max(Instant::now()).into()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let probe_readings = probe.await?;

    let mut violations = log.violations.clone();
    let converged =
        match checker::views_converged(&started.targets, NODES, Duration::from_secs(90)).await {
            Ok(took) => Some(took),
            Err(e) => {
                violations.push(e);
                None
            }
        };
    let _ = stop_monitor.send(true);
    let observations = monitor.await?;
    let history = std::mem::take(&mut *history.lock().await);
    let target = format!("{}:7100", node_ip(0));
    let factor = checker::replication(&started.targets[0])
        .await
        .map_or(1, |r| r.factor);
    let mut replicas_converged_after = None;
    if factor > 1 {
        match checker::replicas_converged(&started.targets[0], Duration::from_secs(120)).await {
            Ok((took, _)) => replicas_converged_after = Some(took),
            Err(e) => violations.push(e),
        }
    }
    let (check, other) = checker::verify(&config, &target, &history, true, None).await?;
    violations.extend(other);
    if factor > 1 {
        let targets: Vec<String> = (0..NODES).map(|i| format!("{}:7100", node_ip(i))).collect();
        let short = checker::check_copies(&config, &targets, &history, factor).await?;
        if !short.is_empty() {
            violations.push(format!(
                "{} acknowledged reading(s) have fewer than {factor} copies after healing",
                short.len()
            ));
            violations.extend(short.into_iter().take(20));
        }
    }
    violations.extend(checker::check_resources(
        &observations,
        &ResourceBounds::node_defaults(args.max_rss_mib),
    ));
    violations.extend(crate::activation::check(&observations).violations);
    let mut running = Vec::new();
    for i in 0..NODES {
        let target = format!("{}:7100", node_ip(i));
        running.push((i, crate::connect_admin(&target).await?));
    }
    violations
        .extend(crate::activation::settled(&running, crate::activation::SETTLE_ACTIVATION).await);
    let node_targets: Vec<String> = (0..NODES).map(|i| format!("{}:7100", node_ip(i))).collect();
    let alerts =
        checker::check_alerts(&node_targets, probe_readings, Duration::from_secs(20)).await;
    violations.extend(alerts.violations.iter().cloned());
    let planned = windows;
    let windows = log.effective(&planned);
    let length = windows
        .iter()
        .map(FaultWindow::end)
        .max()
        .unwrap_or_default();
    let length = length.max(args.duration) + Duration::from_secs(3);
    let summary = RunSummary {
        seed,
        mode: "docker",
        mode_note: "three containers of cluster-config/docker/compose.yaml".to_owned(),
        nodes: NODES,
        duration: args.duration,
        windows: &windows,
        planned: &planned,
        applied: &log.applied,
        history: &history,
        observations: &observations,
        check: &check,
        other_violations: &violations,
        replication_factor: factor,
        replicas_converged_after,
        converged_after: converged,
        proxy: Vec::new(),
        skipped_faults: Vec::new(),
        max_rss_bytes: args.max_rss_mib << 20,
        replay,
        alerts: Some(&alerts),
    };
    report::write_all(&args.out, &summary, length)?;
    let passed = summary.passed();
    if !passed {
        println!("FAILED; replay with: {}", summary.replay);
    }
    Ok(passed)
}

/// Applies the windows with docker commands; heals each at its end.
async fn apply_schedule(
    project: &Project,
    started: &Started,
    windows: &[FaultWindow],
    start: Instant,
) -> anyhow::Result<NemesisLog> {
    let mut log = NemesisLog {
        applied: vec![Applied::default(); windows.len()],
        ..NemesisLog::default()
    };
    for (i, w) in windows.iter().enumerate() {
        tokio::time::sleep_until((start + w.start).into()).await;
        let container = &started.containers[w.node];
        println!(
            "[{:>6.1}s] start #{} {}",
            start.elapsed().as_secs_f64(),
            i + 1,
            w.describe()
        );
        log.applied[i].started = Some(start.elapsed());
        tokio::task::block_in_place(|| fault(project, w, container, true))?;
        refresh_pid(&started.slots, w.node, container);
        tokio::time::sleep_until((start + w.end()).into()).await;
        tokio::task::block_in_place(|| fault(project, w, container, false))?;
        refresh_pid(&started.slots, w.node, container);
        log.applied[i].healed = Some(start.elapsed());
        println!(
            "[{:>6.1}s] healed #{}",
            start.elapsed().as_secs_f64(),
            i + 1
        );
    }
    Ok(log)
}

/// Starts (`on`) or heals one window's fault on `container`.
fn fault(project: &Project, w: &FaultWindow, container: &str, on: bool) -> anyhow::Result<()> {
    let network = project.network();
    let ip = node_ip(w.node);
    let args: Vec<&str> = match (w.kind, on) {
        (FaultKind::Kill, true) => vec!["kill", "-s", "KILL", container],
        (FaultKind::Pause, true) => vec!["pause", container],
        (FaultKind::Pause, false) => vec!["unpause", container],
        (FaultKind::Restart, true) => vec!["stop", "-t", "30", container],
        (FaultKind::Kill | FaultKind::Restart, false) => vec!["start", container],
        (FaultKind::Isolate, true) => vec!["network", "disconnect", &network, container],
        (FaultKind::Isolate, false) => {
            vec!["network", "connect", "--ip", &ip, &network, container]
        }
        (other, _) => bail!("the Docker lane cannot inject {}", other.name()),
    };
    run_ok("docker", &args, 60)?;
    Ok(())
}
