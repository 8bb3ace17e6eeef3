//! `gridmesh demo` and `gridmesh simulate`.
//!
//! The demo starts a real node in this process (embedded data directory, loopback ports),
//! drives it through the real gRPC client with the built-in simulator, shows progress and a
//! live summary, and ends with a report: what was accepted and rejected and why, what the
//! simulator injected on purpose, feeder peaks against their ratings, throughput and ack
//! latency. `simulate` runs the same driver against any running node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use gridmesh_config::{Config, SyncMode};
use gridmesh_proto::v1::{GetFeederLoadRequest, GetMeterStatusRequest, Resolution};
use indicatif::{ProgressBar, ProgressStyle};

use crate::load::{self, LoadOptions, LoadReport, Progress};
use crate::server::RunningNode;
use crate::sim::SimConfig;

/// Options shared by demo and simulate.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Customer meters to simulate.
    #[arg(long, default_value_t = 5000)]
    pub meters: u32,
    /// Feeders (each gets a head meter as well).
    #[arg(long, default_value_t = 50)]
    pub feeders: u32,
    /// Simulated days (15-minute readings), ending at the last UTC midnight. Four days let
    /// the energy balance see the simulated tampering sustained.
    #[arg(long, default_value_t = 4)]
    pub days: u32,
    /// Random seed: same seed, same readings.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Send only clean readings (no gaps, duplicates, late readings or garbage).
    #[arg(long)]
    pub no_anomalies: bool,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Pace the load to this many readings per second (default: as fast as acks come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Collect this many intervals and send them meter by meter (a head-end delivering a
    /// load-profile backlog) instead of interval by interval (1, the default).
    #[arg(long, default_value_t = 1)]
    pub block_intervals: usize,
}

impl SimArgs {
    fn options(&self, target: String) -> LoadOptions {
        let mut sim = SimConfig::ending_today(self.meters, self.feeders, self.days, self.seed);
        sim.anomalies = !self.no_anomalies;
        LoadOptions {
            target,
            concurrency: self.concurrency.max(1),
            batch_size: self.batch_size.max(1),
            rate: self.rate,
            block_intervals: self.block_intervals,
            sim,
        }
    }
}

/// `gridmesh demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    sim: SimArgs,
    /// Keep the node's data here instead of a temporary directory that is deleted at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `gridmesh simulate` options.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address of any node, e.g. 127.0.0.1:7100.
    #[arg(long, short = 't')]
    target: String,
    #[command(flatten)]
    sim: SimArgs,
    /// Print the report as JSON (for scripts and benchmarks).
    #[arg(long)]
    json: bool,
}

/// Runs the demo.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("gridmesh-demo-")
        .tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let mut config = Config::default();
    config.node.name = "demo".to_owned();
    config.node.data_dir = data_dir.clone();
    config.node.grpc_addr = "127.0.0.1:0".parse()?;
    config.node.http_addr = "127.0.0.1:0".parse()?;
    config.storage.sync = SyncMode::Group;
    config.log.level = "warn".to_owned();
    // Simulated days pass in seconds: resolve cleared alerts at once rather than after 15
    // minutes of wall clock.
    config.alerts.auto_resolve_after = Duration::ZERO;
    config.analytics.feeder_settle = demo_settle(&args.sim);
    config.validate()?;
    crate::telemetry::init_logging(&config.log);

    println!(
        "GridMesh demo: one node, {} meters on {} feeders, {} simulated days",
        args.sim.meters, args.sim.feeders, args.sim.days
    );
    let node = RunningNode::start(config.clone()).await?;
    login_as_bootstrap_admin(&node, &config)?;
    println!(
        "  node       gRPC {}  metrics http://{}/metrics",
        node.grpc_addr, node.http_addr
    );
    println!(
        "  data       {}{}",
        data_dir.display(),
        if args.data_dir.is_none() {
            " (temporary)"
        } else {
            ""
        }
    );
    println!("  durability every ack waits for fsync (group commit)\n");

    let options = args.sim.options(node.grpc_addr.to_string());
    let events = crate::sim::Generator::new(options.sim.clone()).grid_events();
    if !events.is_empty() {
        println!("The simulator will play out these grid events:");
        for e in &events {
            println!("  - {}", e.what);
        }
        println!();
    }
    let report = drive_with_progress(options.clone(), Some(&node)).await?;
    print_report(&report, &options);
    print_grid_summary(&node.grpc_addr.to_string(), &options).await?;
    print_alerts(&node.grpc_addr.to_string(), &events).await?;
    print_reliability(&node.grpc_addr.to_string(), &events, &options.sim).await?;
    print_billing_days(&node.grpc_addr.to_string(), &options.sim).await?;
    print_node_summary(&node).await;
    node.shutdown().await?;
    Ok(())
}

/// How long the demo node's feeders wait for an interval's readings, in meter time. The
/// simulator plays days in seconds with `concurrency` batches in flight, and batches complete
/// in any order, so readings of an interval can arrive after readings up to
/// `concurrency x batch` later (in meter time, hours when meters are few). A head-end
/// delivering in real time needs only the default 15 minutes. Capped at two hours so the
/// last day's events are judged before the simulated data ends.
fn demo_settle(sim: &SimArgs) -> Duration {
    let intervals_per_batch = sim.batch_size as f64 / f64::from(sim.meters.max(1));
    let spread = sim.concurrency as f64 * intervals_per_batch * sim.block_intervals as f64;
    let minutes = (15.0 * (spread + 1.0)).clamp(15.0, 120.0);
    Duration::from_secs((minutes * 60.0) as u64)
}

/// Runs `simulate`.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let options = args.sim.options(args.target.clone());
    if args.json {
        let report = load::run(options, Arc::new(Progress::default())).await?;
        println!("{}", report_json(&report));
        return Ok(());
    }
    let report = drive_with_progress(options.clone(), None).await?;
    print_report(&report, &options);
    Ok(())
}

async fn drive_with_progress(
    options: LoadOptions,
    node: Option<&RunningNode>,
) -> anyhow::Result<LoadReport> {
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(options.sim.expected_readings());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:32} {human_pos}/{human_len} readings  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let run = tokio::spawn(load::run(options, progress.clone()));
    let started = std::time::Instant::now();
    while !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let acked = progress.acked.load(Ordering::Relaxed);
        bar.set_position(acked);
        let rate = acked as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let sim_time = format_ts(progress.sim_ts_ms.load(Ordering::Relaxed) as i64);
        let active = match node {
            Some(node) => {
                let stats = gridmesh_actors::node::shard_stats(&node.ctx).await;
                let (head, _) = node.ctx.alert_feed.subscribe();
                format!(
                    "  active meters {}  alert changes {head}",
                    stats.iter().map(|s| s.active_meters).sum::<usize>()
                )
            }
            None => String::new(),
        };
        bar.set_message(format!(
            "{rate:>8.0}/s  sim {sim_time}  rejected {}{active}",
            progress.rejected.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    run.await?
}

fn print_report(report: &LoadReport, options: &LoadOptions) {
    let i = report.injected;
    println!("Ingest");
    println!(
        "  readings sent      {:>12}  in {} batches of up to {}",
        report.readings, report.batches, options.batch_size
    );
    println!(
        "  accepted           {:>12}  (of which duplicates acknowledged idempotently: {})",
        report.accepted, report.duplicates
    );
    let rejected: u64 = report.rejected.values().sum();
    println!("  rejected           {rejected:>12}");
    for (reason, count) in &report.rejected {
        println!("    {reason:<22} {count:>8}");
    }
    if !report.errors.is_empty() {
        println!("  failed batches (after retries): {:?}", report.errors);
    }
    println!("  retried batches    {:>12}", report.retries);
    if options.sim.anomalies {
        println!("Injected on purpose by the simulator");
        println!(
            "  gaps (never sent) {:>8}   duplicates {:>8}   late (out of order) {:>8}   \
             garbage {:>6}",
            i.gaps, i.duplicates, i.late, i.garbage
        );
    }
    println!(
        "Performance (durable acks, {} batches in flight)",
        options.concurrency
    );
    println!(
        "  throughput         {:>12.0} readings/s over {:.1} s",
        report.throughput(),
        report.elapsed.as_secs_f64()
    );
    println!(
        "  ack latency        p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        report.latency_ms(50.0),
        report.latency_ms(99.0),
        report.latency_ms(100.0)
    );
    let simulated = Duration::from_secs(u64::from(options.sim.days) * 86_400);
    println!(
        "  speed              {:.0}x real time\n",
        simulated.as_secs_f64() / report.elapsed.as_secs_f64().max(1e-3)
    );
}

/// Feeder peaks against ratings, from the node's own feeder-load query.
async fn print_grid_summary(target: &str, options: &LoadOptions) -> anyhow::Result<()> {
    let client = crate::connect::connect(target).await?;
    let generator = crate::sim::Generator::new(options.sim.clone());
    let mut peaks = Vec::new();
    let to = options.sim.start_ms + options.sim.ticks() as i64 * crate::sim::INTERVAL_MS + 1;
    for feeder in generator.feeders() {
        let request = GetFeederLoadRequest {
            feeder_id: feeder.feeder_id.clone(),
            from_ts_ms: options.sim.start_ms,
            to_ts_ms: to,
            resolution: Resolution::Day as i32,
        };
        let load = client.query().get_feeder_load(request).await?.into_inner();
        let peak = load
            .intervals
            .iter()
            .map(|d| d.customer_peak_load_w)
            .fold(f64::NEG_INFINITY, f64::max);
        let energy: f64 = load
            .intervals
            .iter()
            .map(|d| d.customer_energy_import_wh)
            .sum();
        let head: f64 = load.intervals.iter().map(|d| d.head_energy_import_wh).sum();
        peaks.push((feeder.feeder_id, feeder.rating_kva, peak, energy, head));
    }
    peaks.sort_by(|a, b| (b.2 / b.1).total_cmp(&(a.2 / a.1)));
    println!("Feeders with the highest peak load (15-minute mean, from GetFeederLoad)");
    println!(
        "  {:<10} {:>10} {:>12} {:>8} {:>14} {:>9}",
        "feeder", "rating", "peak", "loading", "customer MWh", "losses"
    );
    for (id, rating, peak, energy, head) in peaks.iter().take(5) {
        let losses = if *head > 0.0 {
            format!("{:.1} %", 100.0 * (head - energy) / head)
        } else {
            "-".to_owned()
        };
        println!(
            "  {id:<10} {:>7.0} kVA {:>9.1} kW {:>7.0} % {:>14.1} {losses:>9}",
            rating,
            peak / 1000.0,
            100.0 * peak / 1000.0 / rating,
            energy / 1e6
        );
    }
    let status = client
        .query()
        .get_meter_status(GetMeterStatusRequest {
            meter_id: "MTR-0000000".to_owned(),
        })
        .await?
        .into_inner();
    println!(
        "\nMeter MTR-0000000: {} readings stored, {} duplicates, {} late arrivals accepted, \
         last at {}",
        status.readings_accepted,
        status.duplicates,
        status.out_of_order,
        status
            .last_reading
            .map_or("-".to_owned(), |r| format_ts(r.ts_ms))
    );
    Ok(())
}

/// The alerts the grid rules raised, and whether each simulated event was caught.
async fn print_alerts(target: &str, events: &[crate::sim::GridEvent]) -> anyhow::Result<()> {
    let client = crate::connect::connect(target).await?;
    let alerts = client
        .alerts()
        .list_alerts(gridmesh_proto::v1::ListAlertsRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .alerts;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *by_kind.entry(a.kind.as_str()).or_default() += 1;
    }
    println!("\nAlerts raised by the grid rules: {}", alerts.len());
    for (kind, n) in &by_kind {
        println!("  {kind:<22} {n:>6}");
    }
    if !events.is_empty() {
        println!("Simulated grid events");
        for e in events {
            // The alert on the event's own asset first, else one on its feeder (a transformer
            // overloaded by a feeder-wide surge, a meter of a sagging transformer).
            let of_kind = || alerts.iter().filter(|a| a.kind == e.expect_kind);
            let caught = of_kind()
                .find(|a| a.asset_id == e.asset)
                .or_else(|| of_kind().find(|a| a.feeder_id == e.feeder));
            let verdict = match caught {
                Some(a) => format!("caught: {}", a.message),
                None => format!("NOT caught (expected a {} alert)", e.expect_kind),
            };
            println!("  - {}\n      {verdict}", e.what);
        }
    }
    println!("Newest alerts (gridmesh alerts list shows all):");
    for a in alerts.iter().take(8) {
        println!("  {}", crate::alerts_cli::line(a));
    }
    Ok(())
}

/// The reliability indices of the feeders the simulated outages hit, replayed from the
/// stored supply events (`gridmesh query reliability` does the same for any feeder).
async fn print_reliability(
    target: &str,
    events: &[crate::sim::GridEvent],
    sim: &crate::sim::SimConfig,
) -> anyhow::Result<()> {
    let client = crate::connect::connect(target).await?;
    let mut feeders: Vec<&str> = events
        .iter()
        .filter(|e| e.expect_kind == "outage")
        .map(|e| e.feeder.as_str())
        .collect();
    feeders.dedup();
    for feeder in feeders {
        let r = client
            .query()
            .get_reliability(gridmesh_proto::v1::GetReliabilityRequest {
                feeder_id: feeder.to_owned(),
                from_ts_ms: sim.start_ms,
                to_ts_ms: sim.start_ms + i64::from(sim.days) * 86_400_000,
            })
            .await?
            .into_inner();
        println!("\nReliability over the simulated days (gridmesh query reliability):");
        crate::topology::print_reliability(&r);
    }
    println!();
    Ok(())
}

/// One meter's billing days (`gridmesh query aggregates` does the same for any meter), and
/// how many came from the daily aggregates its actor stored as each local day closed.
async fn print_billing_days(target: &str, sim: &crate::sim::SimConfig) -> anyhow::Result<()> {
    const METER: &str = "MTR-0000001";
    let client = crate::connect::connect(target).await?;
    let a = client
        .query()
        .get_aggregates(gridmesh_proto::v1::GetAggregatesRequest {
            meter_id: METER.to_owned(),
            from_ts_ms: sim.start_ms,
            to_ts_ms: sim.start_ms + i64::from(sim.days) * 86_400_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("Billing days of {METER} (gridmesh query aggregates):");
    for d in &a.days {
        println!(
            "  {}  {:>3}/{} intervals  import {:>7.2} kWh  export {:>6.2} kWh  max {:>5.2} kW",
            d.date,
            d.intervals,
            d.expected_intervals,
            d.import_wh / 1000.0,
            d.export_wh / 1000.0,
            d.max_demand_w / 1000.0
        );
    }
    println!(
        "  {} of {} days answered from the aggregates the meter actor stored as each day \
         closed\n",
        a.stored_days,
        a.days.len()
    );
    Ok(())
}

async fn print_node_summary(node: &RunningNode) {
    let stats = gridmesh_actors::node::shard_stats(&node.ctx).await;
    let active: usize = stats.iter().map(|s| s.active_meters).sum();
    let feeders = gridmesh_actors::node::active_feeders(&node.ctx).await;
    println!(
        "Node: {active} meter actors and {feeders} feeder actors resident in {} shards; \
         {:.1} MiB on disk\n",
        stats.len(),
        node.ctx.store.disk_space() as f64 / 1048576.0
    );
}

fn report_json(report: &LoadReport) -> String {
    let rejected: BTreeMap<&str, u64> = report.rejected.clone();
    serde_json::json!({
        "readings": report.readings,
        "batches": report.batches,
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": rejected,
        "errors": report.errors,
        "retries": report.retries,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "throughput_rps": report.throughput(),
        "latency_ms": {
            "p50": report.latency_ms(50.0),
            "p90": report.latency_ms(90.0),
            "p99": report.latency_ms(99.0),
            "max": report.latency_ms(100.0),
        },
    })
    .to_string()
}

/// Makes the demo's own calls log in as the node's bootstrap admin (unless the command line
/// gave credentials): the password this start generated, or the one kept in the data
/// directory or given in the environment when the directory was used before.
fn login_as_bootstrap_admin(node: &RunningNode, config: &Config) -> anyhow::Result<()> {
    let password = match &node.bootstrap {
        Some(b) => b.password.expose().to_owned(),
        None => {
            let file = config.node.data_dir.join(crate::bootstrap::PASSWORD_FILE);
            match std::fs::read_to_string(&file) {
                Ok(text) => text.trim().to_owned(),
                Err(_) => config
                    .auth
                    .bootstrap_password
                    .read(|n| std::env::var(n).ok())?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "this data directory has users; give credentials (--user or --token)"
                        )
                    })?,
            }
        }
    };
    crate::connect::set_options(gridmesh_proto::client::ConnectOptions {
        credentials: gridmesh_proto::client::Credentials::password(
            &config.auth.bootstrap_admin,
            &password,
        ),
        tls: None,
    });
    Ok(())
}

/// `YYYY-MM-DD HH:MM` UTC.
pub fn format_ts(ts_ms: i64) -> String {
    let secs = u64::try_from(ts_ms / 1000).unwrap_or(0);
    let text = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}
