//! `gridmesh topology …` and `gridmesh query …`: the CLI side of the registry and queries.
//!
//! Topology files come in two formats, chosen by extension:
//!
//! - JSON: `{"feeders": [{"feeder_id", "rating_kva", "head_meter_id",
//!   "transformers": [{"transformer_id", "rating_kva"}]}], "meters": [{"meter_id",
//!   "feeder_id", "transformer_id", "nominal_voltage_v", "service_type", "has_pv"}]}` with
//!   `service_type` one of `residential`, `commercial`, `industrial`;
//! - CSV with a header and a `kind` column (`feeder`, `transformer` or `meter`); the columns
//!   are the JSON fields (a transformer row has `id`, `feeder_id` and `rating_kva`, and its
//!   feeder must be a row of the same file), and columns that do not apply to a row are left
//!   empty.
//!
//! The whole file is validated by the node before anything is stored.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use gridmesh_proto::v1::{
    FeederInfo, GetFeederLoadRequest, GetMeterStatusRequest, GetReadingsRequest,
    ImportTopologyRequest, MeterInfo, Resolution, ServiceType, TransformerInfo,
};
use serde::{Deserialize, Serialize};

use crate::demo::format_ts;

/// `gridmesh topology` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Register the feeders and meters of a CSV or JSON file (all or nothing).
    Import {
        /// The file (.json or .csv).
        file: PathBuf,
        /// Node address.
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Print the simulator's topology as JSON or CSV (a starting point for your own file).
    Generate {
        /// Customer meters.
        #[arg(long, default_value_t = 100)]
        meters: u32,
        /// Feeders.
        #[arg(long, default_value_t = 4)]
        feeders: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// Topology file format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// JSON document.
    Json,
    /// CSV with a kind column.
    Csv,
}

/// `gridmesh query` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Live status of a meter.
    Status {
        /// Meter id.
        meter: String,
        /// Node address.
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Readings of a meter, raw or aggregated.
    Readings {
        /// Meter id.
        meter: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Load of a feeder per interval.
    Feeder {
        /// Feeder id.
        feeder: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Daily aggregates and monthly billing determinants of a meter, or daily peaks of a
    /// feeder (give the id of either; feeders start with the feeder prefix you registered).
    Aggregates {
        /// Meter id (or, with --feeder, a feeder id).
        id: String,
        /// The id is a feeder: show its daily peaks.
        #[arg(long)]
        feeder: bool,
        /// Compute every day from the readings, ignoring the daily aggregates stored when
        /// each day closed.
        #[arg(long)]
        recompute: bool,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// A meter's 15-minute energy after VEE: gaps estimated, zero and frozen runs flagged,
    /// each value with its rule (only edited intervals are listed unless --all).
    Validated {
        /// Meter id.
        meter: String,
        /// The export channel instead of import.
        #[arg(long)]
        export: bool,
        /// List every interval, not only the estimated and flagged ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// A meter's consumption anomalies over the range (deviations, zero and frozen runs,
    /// theft-like steps down).
    Anomalies {
        /// Meter id.
        meter: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Reliability of a feeder over the range: SAIFI, SAIDI, CAIDI, MAIFI and the
    /// interruptions its customers had.
    Reliability {
        /// Feeder id.
        feeder: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// The feeder's latest day-ahead load forecast (hourly means of the 15-minute values).
    Forecast {
        /// Feeder id.
        feeder: String,
        /// Node address.
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
}

/// A time range and resolution.
#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    /// Node address.
    #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
    target: String,
    /// Start: RFC 3339 (2026-01-01T00:00:00Z) or ms since epoch. Default: 3 days ago.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive). Default: now.
    #[arg(long)]
    to: Option<String>,
    /// raw, quarter-hour, hour or day.
    #[arg(long, value_enum, default_value_t = ResolutionArg::Hour)]
    resolution: ResolutionArg,
    /// Most rows.
    #[arg(long, default_value_t = 200)]
    limit: u32,
}

/// Query resolution on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResolutionArg {
    /// Every reading.
    Raw,
    /// 15 minutes.
    QuarterHour,
    /// Hour.
    Hour,
    /// Day.
    Day,
}

impl From<ResolutionArg> for Resolution {
    fn from(value: ResolutionArg) -> Self {
        match value {
            ResolutionArg::Raw => Resolution::Raw,
            ResolutionArg::QuarterHour => Resolution::QuarterHour,
            ResolutionArg::Hour => Resolution::Hour,
            ResolutionArg::Day => Resolution::Day,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    #[serde(default)]
    feeders: Vec<FeederRow>,
    #[serde(default)]
    meters: Vec<MeterRow>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeederRow {
    feeder_id: String,
    rating_kva: f64,
    #[serde(default)]
    head_meter_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transformers: Vec<TransformerRow>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformerRow {
    transformer_id: String,
    rating_kva: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterRow {
    meter_id: String,
    feeder_id: String,
    #[serde(default)]
    transformer_id: String,
    nominal_voltage_v: f64,
    #[serde(default)]
    service_type: Option<String>,
    #[serde(default)]
    has_pv: bool,
}

/// One CSV row: the union of both kinds.
#[derive(Debug, Serialize, Deserialize)]
struct CsvRow {
    kind: String,
    id: String,
    #[serde(default)]
    feeder_id: String,
    #[serde(default)]
    transformer_id: String,
    #[serde(default)]
    nominal_voltage_v: Option<f64>,
    #[serde(default)]
    service_type: Option<String>,
    #[serde(default)]
    has_pv: Option<bool>,
    #[serde(default)]
    rating_kva: Option<f64>,
    #[serde(default)]
    head_meter_id: String,
}

/// Runs a topology subcommand.
pub async fn run_topology(command: TopologyCommand) -> anyhow::Result<()> {
    match command {
        TopologyCommand::Import { file, target } => {
            let request = read_topology(&file)?;
            let (feeders, meters) = (request.feeders.len(), request.meters.len());
            let client = crate::connect::connect(&target).await?;
            let response = client
                .registry()
                .import_topology(request)
                .await?
                .into_inner();
            println!(
                "imported {feeders} feeders ({} new, {} updated) and {meters} meters \
                 ({} new, {} updated)",
                response.feeders_created,
                response.feeders_updated,
                response.meters_created,
                response.meters_updated
            );
            Ok(())
        }
        TopologyCommand::Generate {
            meters,
            feeders,
            format,
        } => {
            let generator = crate::sim::Generator::new(crate::sim::SimConfig::ending_today(
                meters, feeders, 1, 42,
            ));
            let request = ImportTopologyRequest {
                feeders: generator.feeders(),
                meters: generator.meters(),
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&to_file(&request))?),
                Format::Csv => write_csv(&request, std::io::stdout())?,
            }
            Ok(())
        }
    }
}

/// Parses a topology file (JSON or CSV by extension).
pub fn read_topology(path: &Path) -> anyhow::Result<ImportTopologyRequest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let file = if is_csv {
        parse_csv(&text).with_context(|| format!("parsing {} as CSV", path.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("parsing {} as JSON", path.display()))?
    };
    from_file(file)
}

fn parse_csv(text: &str) -> anyhow::Result<TopologyFile> {
    let mut file = TopologyFile::default();
    for (line, row) in csv::Reader::from_reader(text.as_bytes())
        .deserialize::<CsvRow>()
        .enumerate()
    {
        let row = row.with_context(|| format!("row {}", line + 2))?;
        match row.kind.as_str() {
            "feeder" => file.feeders.push(FeederRow {
                feeder_id: row.id,
                rating_kva: row
                    .rating_kva
                    .with_context(|| format!("row {}: feeder needs rating_kva", line + 2))?,
                head_meter_id: row.head_meter_id,
                transformers: Vec::new(),
            }),
            "transformer" => {
                let rating_kva = row
                    .rating_kva
                    .with_context(|| format!("row {}: transformer needs rating_kva", line + 2))?;
                let feeder = file
                    .feeders
                    .iter_mut()
                    .find(|f| f.feeder_id == row.feeder_id)
                    .with_context(|| {
                        format!(
                            "row {}: transformer {}: feeder {:?} must be a feeder row above it",
                            line + 2,
                            row.id,
                            row.feeder_id
                        )
                    })?;
                feeder.transformers.push(TransformerRow {
                    transformer_id: row.id,
                    rating_kva,
                });
            }
            "meter" => file.meters.push(MeterRow {
                meter_id: row.id,
                feeder_id: row.feeder_id,
                transformer_id: row.transformer_id,
                nominal_voltage_v: row
                    .nominal_voltage_v
                    .with_context(|| format!("row {}: meter needs nominal_voltage_v", line + 2))?,
                service_type: row.service_type,
                has_pv: row.has_pv.unwrap_or(false),
            }),
            other => anyhow::bail!(
                "row {}: kind must be feeder, transformer or meter, not {other:?}",
                line + 2
            ),
        }
    }
    Ok(file)
}

fn from_file(file: TopologyFile) -> anyhow::Result<ImportTopologyRequest> {
    let feeders = file
        .feeders
        .into_iter()
        .map(|f| FeederInfo {
            feeder_id: f.feeder_id,
            rating_kva: f.rating_kva,
            head_meter_id: f.head_meter_id,
            transformers: f
                .transformers
                .into_iter()
                .map(|t| TransformerInfo {
                    transformer_id: t.transformer_id,
                    rating_kva: t.rating_kva,
                })
                .collect(),
        })
        .collect();
    let meters = file
        .meters
        .into_iter()
        .map(|m| {
            let service_type = match m.service_type.as_deref().unwrap_or("residential") {
                "residential" | "" => ServiceType::Residential,
                "commercial" => ServiceType::Commercial,
                "industrial" => ServiceType::Industrial,
                other => anyhow::bail!(
                    "meter {}: service_type {other:?} is not residential, commercial or industrial",
                    m.meter_id
                ),
            };
            Ok(MeterInfo {
                meter_id: m.meter_id,
                feeder_id: m.feeder_id,
                transformer_id: m.transformer_id,
                nominal_voltage_v: m.nominal_voltage_v,
                service_type: service_type as i32,
                has_pv: m.has_pv,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ImportTopologyRequest { feeders, meters })
}

fn service_name(value: i32) -> String {
    match ServiceType::try_from(value) {
        Ok(ServiceType::Commercial) => "commercial",
        Ok(ServiceType::Industrial) => "industrial",
        _ => "residential",
    }
    .to_owned()
}

fn to_file(request: &ImportTopologyRequest) -> TopologyFile {
    TopologyFile {
        feeders: request
            .feeders
            .iter()
            .map(|f| FeederRow {
                feeder_id: f.feeder_id.clone(),
                rating_kva: f.rating_kva,
                head_meter_id: f.head_meter_id.clone(),
                transformers: f
                    .transformers
                    .iter()
                    .map(|t| TransformerRow {
                        transformer_id: t.transformer_id.clone(),
                        rating_kva: t.rating_kva,
                    })
                    .collect(),
            })
            .collect(),
        meters: request
            .meters
            .iter()
            .map(|m| MeterRow {
                meter_id: m.meter_id.clone(),
                feeder_id: m.feeder_id.clone(),
                transformer_id: m.transformer_id.clone(),
                nominal_voltage_v: m.nominal_voltage_v,
                service_type: Some(service_name(m.service_type)),
                has_pv: m.has_pv,
            })
            .collect(),
    }
}

fn write_csv(request: &ImportTopologyRequest, out: impl std::io::Write) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    for f in &request.feeders {
        writer.serialize(CsvRow {
            kind: "feeder".into(),
            id: f.feeder_id.clone(),
            feeder_id: String::new(),
            transformer_id: String::new(),
            nominal_voltage_v: None,
            service_type: None,
            has_pv: None,
            rating_kva: Some(f.rating_kva),
            head_meter_id: f.head_meter_id.clone(),
        })?;
        for t in &f.transformers {
            writer.serialize(CsvRow {
                kind: "transformer".into(),
                id: t.transformer_id.clone(),
                feeder_id: f.feeder_id.clone(),
                transformer_id: String::new(),
                nominal_voltage_v: None,
                service_type: None,
                has_pv: None,
                rating_kva: Some(t.rating_kva),
                head_meter_id: String::new(),
            })?;
        }
    }
    for m in &request.meters {
        writer.serialize(CsvRow {
            kind: "meter".into(),
            id: m.meter_id.clone(),
            feeder_id: m.feeder_id.clone(),
            transformer_id: m.transformer_id.clone(),
            nominal_voltage_v: Some(m.nominal_voltage_v),
            service_type: Some(service_name(m.service_type)),
            has_pv: Some(m.has_pv),
            rating_kva: None,
            head_meter_id: String::new(),
        })?;
    }
    writer.flush()?;
    Ok(())
}

/// A time given as RFC 3339 or as ms since epoch; `default_ms` when not given.
pub(crate) fn parse_time(text: Option<&str>, default_ms: i64) -> anyhow::Result<i64> {
    let Some(text) = text else {
        return Ok(default_ms);
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("{text:?} is neither RFC 3339 nor ms since epoch"))?;
    Ok(time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

/// Runs a query subcommand.
pub async fn run_query(command: QueryCommand) -> anyhow::Result<()> {
    match command {
        QueryCommand::Status { meter, target } => {
            let client = crate::connect::connect(&target).await?;
            let s = client
                .query()
                .get_meter_status(GetMeterStatusRequest { meter_id: meter })
                .await?
                .into_inner();
            println!("meter           {}", s.meter_id);
            println!(
                "actor           {}",
                if s.activation == 1 {
                    "active"
                } else {
                    "passivated (activated by this query)"
                }
            );
            println!(
                "last reading    {}",
                s.last_reading
                    .as_ref()
                    .map_or("-".to_owned(), |r| format_ts(r.ts_ms))
            );
            println!("stored          {}", s.readings_accepted);
            println!("rejected        {}", s.readings_rejected);
            println!("duplicates      {}", s.duplicates);
            println!("corrections     {}", s.corrections);
            println!("late accepted   {}", s.out_of_order);
            println!("activations     {}", s.activations);
            Ok(())
        }
        QueryCommand::Readings { meter, range } => query_readings(meter, range).await,
        QueryCommand::Feeder { feeder, range } => query_feeder(feeder, range).await,
        QueryCommand::Validated {
            meter,
            export,
            all,
            range,
        } => {
            let (from, to) = time_range(&range)?;
            let client = crate::connect::connect(&range.target).await?;
            let channel = if export {
                gridmesh_proto::v1::EnergyChannel::Export
            } else {
                gridmesh_proto::v1::EnergyChannel::Import
            };
            let v = client
                .query()
                .get_validated_intervals(gridmesh_proto::v1::GetValidatedIntervalsRequest {
                    meter_id: meter,
                    from_ts_ms: from,
                    to_ts_ms: to,
                    channel: channel as i32,
                })
                .await?
                .into_inner();
            println!(
                "meter {}: {} intervals measured, {} estimated, {} flagged, {} gaps left",
                v.meter_id, v.measured, v.estimated, v.flagged, v.unestimated
            );
            println!("{:<17} {:>10} {:>10}  RULE", "start (UTC)", "Wh", "raw Wh");
            let shown = v
                .intervals
                .iter()
                .filter(|i| all || !i.rule.is_empty() || i.energy_wh.is_none());
            for i in shown.take(range.limit as usize) {
                let wh = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
                println!(
                    "{:<17} {:>10} {:>10}  {}",
                    format_ts(i.start_ts_ms),
                    wh(i.energy_wh),
                    wh(i.raw_energy_wh),
                    i.rule
                );
            }
            if !v.unavailable_nodes.is_empty() {
                println!(
                    "may be incomplete: {:?} did not answer",
                    v.unavailable_nodes
                );
            }
            Ok(())
        }
        QueryCommand::Anomalies { meter, range } => {
            let (from, to) = time_range(&range)?;
            let client = crate::connect::connect(&range.target).await?;
            let a = client
                .query()
                .get_meter_anomalies(gridmesh_proto::v1::GetMeterAnomaliesRequest {
                    meter_id: meter,
                    from_ts_ms: from,
                    to_ts_ms: to,
                })
                .await?
                .into_inner();
            println!(
                "meter {}: {} anomalies in {} intervals with data",
                a.meter_id,
                a.anomalies.len(),
                a.intervals
            );
            for x in &a.anomalies {
                let cleared = if x.cleared_ts_ms == 0 {
                    "open".to_owned()
                } else {
                    format!("cleared {}", format_ts(x.cleared_ts_ms))
                };
                println!(
                    "  {:<22} {:<8} since {} ({cleared}): {}",
                    x.kind,
                    x.severity,
                    format_ts(x.since_ts_ms),
                    x.message
                );
            }
            Ok(())
        }
        QueryCommand::Reliability { feeder, range } => {
            let (from, to) = time_range(&range)?;
            let client = crate::connect::connect(&range.target).await?;
            let r = client
                .query()
                .get_reliability(gridmesh_proto::v1::GetReliabilityRequest {
                    feeder_id: feeder,
                    from_ts_ms: from,
                    to_ts_ms: to,
                })
                .await?
                .into_inner();
            print_reliability(&r);
            Ok(())
        }
        QueryCommand::Aggregates {
            id,
            feeder,
            recompute,
            range,
        } => {
            let (from, to) = time_range(&range)?;
            let client = crate::connect::connect(&range.target).await?;
            let (meter_id, feeder_id) = if feeder {
                (String::new(), id)
            } else {
                (id, String::new())
            };
            let a = client
                .query()
                .get_aggregates(gridmesh_proto::v1::GetAggregatesRequest {
                    meter_id,
                    feeder_id,
                    from_ts_ms: from,
                    to_ts_ms: to,
                    recompute,
                })
                .await?
                .into_inner();
            if feeder {
                println!(
                    "{:<10} {:>9} {:>12} {:>17} {:>12} {:>6}",
                    "DATE", "INTERVALS", "PEAK kW", "AT", "ENERGY kWh", "LF"
                );
                for d in &a.feeder_days {
                    println!(
                        "{:<10} {:>9} {:>12.1} {:>17} {:>12.1} {:>6.2}",
                        d.date,
                        d.intervals,
                        d.peak_w / 1000.0,
                        format_ts(d.peak_ts_ms),
                        d.energy_wh / 1000.0,
                        d.load_factor
                    );
                }
            } else {
                println!(
                    "{:<10} {:>9} {:>12} {:>12} {:>12} {:>6}  TIME-OF-USE kWh",
                    "DATE", "INTERVALS", "IMPORT kWh", "EXPORT kWh", "MAX kW", "LF"
                );
                for d in &a.days {
                    let tou: Vec<String> = d
                        .tou
                        .iter()
                        .map(|t| format!("{} {:.2}", t.bucket, t.import_wh / 1000.0))
                        .collect();
                    println!(
                        "{:<10} {:>5}/{:<3} {:>12.2} {:>12.2} {:>12.2} {:>6.2}  {}",
                        d.date,
                        d.intervals,
                        d.expected_intervals,
                        d.import_wh / 1000.0,
                        d.export_wh / 1000.0,
                        d.max_demand_w / 1000.0,
                        d.load_factor,
                        tou.join(", ")
                    );
                }
                for m in &a.months {
                    println!(
                        "month {}-{:02}: {} days, import {:.1} kWh, export {:.1} kWh, max demand \
                         {:.2} kW at {}",
                        m.year,
                        m.month,
                        m.days,
                        m.import_wh / 1000.0,
                        m.export_wh / 1000.0,
                        m.max_demand_w / 1000.0,
                        format_ts(m.max_demand_ts_ms)
                    );
                }
                println!(
                    "{} of {} days from the daily aggregates stored when they closed",
                    a.stored_days,
                    a.days.len()
                );
            }
            if !a.unavailable_nodes.is_empty() {
                println!(
                    "may be incomplete: {:?} did not answer",
                    a.unavailable_nodes
                );
            }
            Ok(())
        }
        QueryCommand::Forecast { feeder, target } => {
            let client = crate::connect::connect(&target).await?;
            let f = client
                .query()
                .get_forecast(gridmesh_proto::v1::GetForecastRequest { feeder_id: feeder })
                .await?
                .into_inner();
            println!(
                "forecast of {} made {} with {} ({} periods of {} min; rating {} kVA)",
                f.feeder_id,
                format_ts(f.issued_ts_ms),
                f.method,
                f.load_w.len(),
                f.step_ms / 60_000,
                f.rating_kva
            );
            let per_hour = (3_600_000 / f.step_ms.max(1)).max(1) as usize;
            for (h, chunk) in f.load_w.chunks(per_hour).enumerate() {
                let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
                let start = f.first_start_ts_ms + h as i64 * 3_600_000;
                let loading = if f.rating_kva > 0.0 {
                    format!("{:>6.1} %", 100.0 * mean / (f.rating_kva * 1000.0))
                } else {
                    String::new()
                };
                println!(
                    "  {}  {:>10.1} kW  {loading}",
                    format_ts(start),
                    mean / 1000.0
                );
            }
            Ok(())
        }
    }
}

fn time_range(range: &RangeArgs) -> anyhow::Result<(i64, i64)> {
    let now = gridmesh_actors::context::now_ms();
    Ok((
        parse_time(range.from.as_deref(), now - 3 * 86_400_000)?,
        parse_time(range.to.as_deref(), now)?,
    ))
}

async fn query_readings(meter: String, range: RangeArgs) -> anyhow::Result<()> {
    let (from, to) = time_range(&range)?;
    let client = crate::connect::connect(&range.target).await?;
    let request = GetReadingsRequest {
        meter_id: meter,
        from_ts_ms: from,
        to_ts_ms: to,
        resolution: Resolution::from(range.resolution) as i32,
        limit: range.limit,
        local_only: false,
    };
    let response = client.query().get_readings(request).await?.into_inner();
    if !response.readings.is_empty() {
        println!(
            "{:<17} {:>14} {:>10} {:>10} {:>8}",
            "time (UTC)", "register Wh", "interval Wh", "power W", "V l1"
        );
    }
    for r in &response.readings {
        println!(
            "{:<17} {:>14.0} {:>10.0} {:>10.0} {:>8.1}",
            format_ts(r.ts_ms),
            r.energy_import_register_wh.unwrap_or(f64::NAN),
            r.interval_energy_import_wh.unwrap_or(f64::NAN),
            r.active_power_w.unwrap_or(f64::NAN),
            r.voltage_v.as_ref().and_then(|v| v.l1).unwrap_or(f64::NAN)
        );
    }
    if !response.intervals.is_empty() {
        println!(
            "{:<17} {:>6} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8}",
            "start (UTC)", "n", "import Wh", "export Wh", "mean W", "max W", "min V", "max V"
        );
    }
    for i in &response.intervals {
        let p = i.active_power_w.unwrap_or_default();
        let v = i.voltage_v.unwrap_or_default();
        println!(
            "{:<17} {:>6} {:>12.0} {:>12.0} {:>10.0} {:>10.0} {:>8.1} {:>8.1}",
            format_ts(i.start_ts_ms),
            i.reading_count,
            i.energy_import_wh,
            i.energy_export_wh,
            p.mean,
            p.max,
            v.min,
            v.max
        );
    }
    if response.truncated {
        println!(
            "(truncated at --limit {}; ask again from the last time shown)",
            range.limit
        );
    }
    Ok(())
}

async fn query_feeder(feeder: String, range: RangeArgs) -> anyhow::Result<()> {
    let (from, to) = time_range(&range)?;
    let client = crate::connect::connect(&range.target).await?;
    let request = GetFeederLoadRequest {
        feeder_id: feeder,
        from_ts_ms: from,
        to_ts_ms: to,
        resolution: Resolution::from(range.resolution) as i32,
    };
    let response = client.query().get_feeder_load(request).await?.into_inner();
    if let Some(f) = &response.feeder {
        println!(
            "feeder {} rated {} kVA, head meter {}",
            f.feeder_id,
            f.rating_kva,
            if f.head_meter_id.is_empty() {
                "-"
            } else {
                &f.head_meter_id
            }
        );
        if !f.transformers.is_empty() {
            let shown: Vec<String> = f
                .transformers
                .iter()
                .take(8)
                .map(|t| format!("{} {} kVA", t.transformer_id, t.rating_kva))
                .collect();
            let more = if f.transformers.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            println!(
                "{} rated transformers: {}{more}",
                f.transformers.len(),
                shown.join(", ")
            );
        }
    }
    println!(
        "{:<17} {:>7} {:>12} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "start (UTC)",
        "meters",
        "import kWh",
        "export kWh",
        "mean kW",
        "mean kvar",
        "peak kW",
        "head kWh"
    );
    for i in response.intervals.iter().take(range.limit as usize) {
        println!(
            "{:<17} {:>7} {:>12.1} {:>12.1} {:>10.1} {:>10.1} {:>10.1} {:>12.1}",
            format_ts(i.start_ts_ms),
            i.meters_reporting,
            i.customer_energy_import_wh / 1000.0,
            i.customer_energy_export_wh / 1000.0,
            i.customer_mean_load_w / 1000.0,
            i.customer_mean_reactive_var / 1000.0,
            i.customer_peak_load_w / 1000.0,
            i.head_energy_import_wh / 1000.0
        );
    }
    Ok(())
}

/// A feeder's reliability indices and interruptions, as `gridmesh query reliability` and the
/// demo print them.
pub fn print_reliability(r: &gridmesh_proto::v1::GetReliabilityResponse) {
    println!(
        "feeder {}: {} customers, {} sustained and {} momentary interruptions, {:.0} \
         customer-minutes",
        r.feeder_id,
        r.customers,
        r.sustained_interruptions,
        r.momentary_interruptions,
        r.customer_minutes
    );
    println!(
        "SAIFI {:.3}  SAIDI {:.1} min  CAIDI {:.1} min  MAIFI {:.3}",
        r.saifi, r.saidi_min, r.caidi_min, r.maifi
    );
    for i in r.interruptions.iter().take(20) {
        println!(
            "  {:<14} {:<14} {} .. {} {}",
            i.meter_id,
            i.transformer_id,
            format_ts(i.start_ts_ms),
            format_ts(i.end_ts_ms),
            if i.momentary {
                "momentary"
            } else {
                "sustained"
            }
        );
    }
    if r.interruptions.len() > 20 || r.interruptions_truncated {
        println!("  ... and more");
    }
    if r.meters_down_at_end > 0 {
        println!(
            "{} meters still without supply at the end of the data",
            r.meters_down_at_end
        );
    }
    if !r.unavailable_nodes.is_empty() {
        println!(
            "may be incomplete: {:?} did not answer",
            r.unavailable_nodes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_describe_the_same_topology() {
        let generator =
            crate::sim::Generator::new(crate::sim::SimConfig::ending_today(10, 2, 1, 1));
        let request = ImportTopologyRequest {
            feeders: generator.feeders(),
            meters: generator.meters(),
        };
        let mut csv_bytes = Vec::new();
        write_csv(&request, &mut csv_bytes).expect("write csv");
        let from_csv =
            from_file(parse_csv(&String::from_utf8(csv_bytes).expect("utf8")).expect("parse"))
                .expect("convert");
        let json = serde_json::to_string(&to_file(&request)).expect("json");
        let from_json =
            from_file(serde_json::from_str(&json).expect("parse json")).expect("convert");
        assert_eq!(from_csv, request);
        assert_eq!(from_json, request);
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let header = "kind,id,feeder_id,transformer_id,nominal_voltage_v,service_type,has_pv,\
                      rating_kva,head_meter_id";
        let err =
            parse_csv(&format!("{header}\nfeeder,F1,,,,,,,\n")).expect_err("feeder without rating");
        assert!(format!("{err:#}").contains("row 2"), "{err:#}");
        let err = parse_csv(&format!("{header}\ntransformer,T1,F1,,,,,50,\n"))
            .expect_err("transformer before its feeder");
        assert!(
            format!("{err:#}").contains("must be a feeder row"),
            "{err:#}"
        );
        let err = from_file(TopologyFile {
            feeders: vec![],
            meters: vec![MeterRow {
                meter_id: "m".into(),
                feeder_id: "f".into(),
                transformer_id: String::new(),
                nominal_voltage_v: 230.0,
                service_type: Some("farm".into()),
                has_pv: false,
            }],
        })
        .expect_err("unknown service type");
        assert!(err.to_string().contains("farm"));
    }
}
