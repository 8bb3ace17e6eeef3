//! The workload: concurrent clients ingest readings with unique identities and record every
//! request with its outcome and latency.
//!
//! Each client owns a disjoint set of meters and sends, step by step, one reading per owned
//! meter with a strictly increasing timestamp, so every reading's identity (meter, ts) is
//! unique in the run and its value is known. Outcomes per reading:
//!
//! - **acked**: the node acknowledged it (it must be stored, exactly once, with this value);
//! - **failed**: refused definitely (rejected with a reason, INVALID_ARGUMENT,
//!   RESOURCE_EXHAUSTED): it must not be stored;
//! - **unknown**: no answer (timeout, connection lost, UNAVAILABLE): stored or not, both fine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_proto::client::{Client, ClientError, RetryPolicy};
use gridmesh_proto::v1::{FeederInfo, ImportTopologyRequest, MeterInfo, Reading, ReadingBatch};
use tokio::sync::Mutex;
use tonic::Code;

/// Spacing of one meter's readings: 10 s (power-quality cadence), so long runs stay in the past.
pub const STEP_MS: i64 = 10_000;

/// Workload parameters.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Meters per client (= readings per request).
    pub meters_per_client: usize,
    /// Feeders the meters are spread over.
    pub feeders: usize,
    /// Timestamp of step 0, ms.
    pub base_ts_ms: i64,
    /// Per-attempt timeout of a request.
    pub request_timeout: Duration,
    /// Attempts per request (retries on UNAVAILABLE / RESOURCE_EXHAUSTED). In a cluster a
    /// retry after an unknown outcome may reach another owner and store a second copy, which
    /// only replication makes exact; cluster runs use 1.
    pub attempts: u32,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged; `rejected` readings (by index) were refused individually.
    Acked {
        /// Indexes of readings the ack rejected.
        rejected: Vec<u32>,
    },
    /// Refused as a whole, definitely not stored.
    Failed(String),
    /// No definite answer.
    Unknown(String),
}

/// One request of the history.
#[derive(Debug, Clone)]
pub struct Op {
    /// Client index.
    pub client: usize,
    /// Index of the node the request went to.
    pub node: usize,
    /// Start, from the beginning of the run.
    pub start: Duration,
    /// Until the outcome was known.
    pub latency: Duration,
    /// The readings: (meter, ts, energy).
    pub readings: Vec<(String, i64, f64)>,
    /// Outcome.
    pub outcome: Outcome,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Meter id of client `c`, meter `m`.
pub fn meter_id(client: usize, meter: usize) -> String {
    format!("CH-{client:02}-{meter:04}")
}

/// The energy of one reading: a pure function of its identity, so the checker knows it.
pub fn energy_wh(client: usize, meter: usize, step: i64) -> f64 {
    ((step * 7 + meter as i64 * 3 + client as i64) % 23 + 1) as f64
}

/// The topology of the workload's meters.
pub fn topology(config: &WorkloadConfig) -> ImportTopologyRequest {
    let feeders = (0..config.feeders.max(1))
        .map(|f| FeederInfo {
            feeder_id: format!("CHF-{f}"),
            rating_kva: 500.0,
            head_meter_id: String::new(),
            transformers: Vec::new(),
        })
        .chain([FeederInfo {
            feeder_id: PROBE_FEEDER.into(),
            rating_kva: 500.0,
            head_meter_id: String::new(),
            transformers: Vec::new(),
        }])
        .collect();
    let meters = (0..config.clients)
        .flat_map(|c| (0..config.meters_per_client).map(move |m| (c, m)))
        .map(|(c, m)| MeterInfo {
            meter_id: meter_id(c, m),
            feeder_id: format!("CHF-{}", (c + m) % config.feeders.max(1)),
            nominal_voltage_v: 230.0,
            ..MeterInfo::default()
        })
        .chain([MeterInfo {
            meter_id: PROBE_METER.into(),
            feeder_id: PROBE_FEEDER.into(),
            nominal_voltage_v: 230.0,
            ..MeterInfo::default()
        }])
        .collect();
    ImportTopologyRequest { feeders, meters }
}

/// The alert probe's meter: it reports the same 15-minute energy over and over (a stuck
/// register), so its primary's anomaly rules raise one frozen-run alert after
/// [`PROBE_RUN`] intervals; the checker then asks every node how many alerts that became.
pub const PROBE_METER: &str = "CH-PROBE";
/// The probe meter's feeder (apart from the workload's, whose loads the checker sums).
pub const PROBE_FEEDER: &str = "CHF-PROBE";
/// Intervals in a row after which the anomaly rules call the probe's values frozen (their
/// default `frozen_run_min`).
pub const PROBE_RUN: u64 = 12;
/// Most probe readings a run sends (15 minutes apart, so they stay in the past).
const PROBE_MAX: i64 = 5_000;

/// Runs the alert probe until `stop` is set; returns how many of its readings were
/// acknowledged. Each reading is resent (through the next node) until a node acknowledges
/// it, so the run of identical intervals has no gap whatever the faults do; a resend after an
/// unknown outcome is an idempotent duplicate.
pub async fn run_probe(
    config: WorkloadConfig,
    targets: Vec<Client>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    let retry = RetryPolicy {
        max_attempts: 1,
        attempt_timeout: Some(config.request_timeout),
        ..RetryPolicy::default()
    };
    let targets: Vec<Client> = targets.into_iter().map(|t| t.with_retry(retry)).collect();
    let (mut k, mut attempt) = (0i64, 0usize);
    while k < PROBE_MAX && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let batch = ReadingBatch {
            batch_id: k as u64,
            readings: vec![Reading {
                meter_id: PROBE_METER.into(),
                ts_ms: config.base_ts_ms + (k + 1) * 900_000,
                interval_energy_import_wh: Some(123.0),
                ..Reading::default()
            }],
        };
        let target = &targets[attempt % targets.len()];
        attempt += 1;
        match target.push_batch(batch).await {
            Ok((ack, _)) if ack.rejected.is_empty() => {
                k += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    k as u64
}

/// Feeder of a meter.
pub fn feeder_of(config: &WorkloadConfig, client: usize, meter: usize) -> String {
    format!("CHF-{}", (client + meter) % config.feeders.max(1))
}

/// Runs client `client` against `targets` (in turn) until `stop` is set.
pub async fn run_client(
    client: usize,
    config: WorkloadConfig,
    targets: Vec<Client>,
    run_start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let retry = RetryPolicy {
        max_attempts: config.attempts.max(1),
        attempt_timeout: Some(config.request_timeout),
        ..RetryPolicy::default()
    };
    let targets: Vec<Client> = targets.into_iter().map(|t| t.with_retry(retry)).collect();
    let mut step = 0i64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let readings: Vec<(String, i64, f64)> = (0..config.meters_per_client)
            .map(|m| {
                (
                    meter_id(client, m),
                    config.base_ts_ms + step * STEP_MS,
                    energy_wh(client, m, step),
                )
            })
            .collect();
        let batch = ReadingBatch {
            batch_id: step as u64,
            readings: readings
                .iter()
                .map(|(meter, ts, energy)| Reading {
                    meter_id: meter.clone(),
                    ts_ms: *ts,
                    interval_energy_import_wh: Some(*energy),
                    ..Reading::default()
                })
                .collect(),
        };
        let node = (step as usize + client) % targets.len();
        let target = &targets[node];
        let started = Instant::now();
        let outcome = classify(target.push_batch(batch).await);
        history.lock().await.push(Op {
            client,
            node,
            start: started - run_start,
            latency: started.elapsed(),
            readings,
            outcome,
        });
        step += 1;
    }
}

fn classify(result: Result<(gridmesh_proto::v1::PushAck, u32), ClientError>) -> Outcome {
    match result {
        Ok((ack, _)) => Outcome::Acked {
            rejected: ack.rejected.iter().map(|r| r.index).collect(),
        },
        Err(ClientError::Status(status)) => match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::NotFound => Outcome::Failed(format!("{:?}", status.code())),
            code => Outcome::Unknown(format!("{code:?}")),
        },
        Err(other) => Outcome::Unknown(other.to_string()),
    }
}
