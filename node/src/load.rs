//! The load driver behind `gridmesh simulate` and `gridmesh demo`: registers the simulated
//! topology, then pushes the generator's readings through the real gRPC client with a number
//! of concurrent workers, optionally paced to a target rate, and measures throughput and ack
//! latency per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gridmesh_actors::ingest::reason_label;
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{ImportTopologyRequest, PushAck, Reading, ReadingBatch, RejectReason};
use tokio::sync::mpsc;

use crate::sim::{Generator, Injected, SimConfig};

/// How to drive the load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Node address.
    pub target: String,
    /// Concurrent batches in flight.
    pub concurrency: usize,
    /// Readings per batch.
    pub batch_size: usize,
    /// Target readings per second; `None` = as fast as the node acknowledges.
    pub rate: Option<f64>,
    /// Intervals collected and regrouped per meter before batching (1 = interval by interval).
    pub block_intervals: usize,
    /// What to simulate.
    pub sim: SimConfig,
}

/// Live counters, readable while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Readings acknowledged (accepted or rejected).
    pub acked: AtomicU64,
    /// Readings accepted.
    pub accepted: AtomicU64,
    /// Readings rejected.
    pub rejected: AtomicU64,
    /// Simulated time reached, ms.
    pub sim_ts_ms: AtomicU64,
    /// Batches that failed after all retries.
    pub failed_batches: AtomicU64,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Readings sent in acknowledged batches.
    pub readings: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Readings accepted (including duplicates).
    pub accepted: u64,
    /// Duplicates among them.
    pub duplicates: u64,
    /// Rejections by reason label.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Batch errors (after retries) by status code.
    pub errors: BTreeMap<String, u64>,
    /// Retries needed.
    pub retries: u64,
    /// Wall time of the push phase.
    pub elapsed: Duration,
    /// Ack latency of every batch, ms.
    pub latencies_ms: Vec<f64>,
    /// What the generator injected.
    pub injected: Injected,
}

impl LoadReport {
    /// Readings acknowledged per second.
    pub fn throughput(&self) -> f64 {
        self.readings as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile `p` (0..=100), ms.
    pub fn latency_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, p)
    }

    fn record(&mut self, ack: &PushAck, readings: usize, attempts: u32, latency: Duration) {
        self.batches += 1;
        self.readings += readings as u64;
        self.accepted += u64::from(ack.accepted);
        self.duplicates += u64::from(ack.duplicates);
        self.retries += u64::from(attempts - 1);
        self.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        for r in &ack.rejected {
            let reason = RejectReason::try_from(r.reason).unwrap_or(RejectReason::Unspecified);
            *self.rejected.entry(reason_label(reason)).or_default() += 1;
        }
    }
}

/// The value at percentile `p` of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Registers the simulated topology on the node.
pub async fn register_topology(client: &Client, generator: &Generator) -> anyhow::Result<()> {
    let request = ImportTopologyRequest {
        feeders: generator.feeders(),
        meters: generator.meters(),
    };
    client
        .registry()
        .import_topology(request)
        .await
        .context("registering the simulated topology")?;
    Ok(())
}

/// Runs the whole load: registration, then the push phase.
pub async fn run(options: LoadOptions, progress: Arc<Progress>) -> anyhow::Result<LoadReport> {
    let client = crate::connect::connect(&options.target).await?;
    let mut generator = Generator::new(options.sim.clone());
    register_topology(&client, &generator).await?;

    let (batches_tx, batches_rx) = mpsc::channel::<ReadingBatch>(options.concurrency * 2);
    let batches_rx = Arc::new(tokio::sync::Mutex::new(batches_rx));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();

    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                batches_rx.clone(),
                report.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let injected = produce(&mut generator, &options, &batches_tx, &progress, started).await;
    drop(batches_tx);
    for worker in workers {
        worker.await?;
    }
    let mut report = std::mem::take(
        &mut *report
            .lock()
            .map_err(|_| anyhow::anyhow!("report lock poisoned"))?,
    );
    report.elapsed = started.elapsed();
    report.injected = injected;
    Ok(report)
}

/// Cuts the generator's output into batches, pacing them when a rate is set.
///
/// With `block_intervals == 1` each batch holds one interval of many meters (what a head-end
/// sends as readings arrive). With more, that many intervals are collected first and regrouped
/// meter by meter, so each batch holds runs of consecutive readings of a few meters (what a
/// head-end sends when it delivers a collected load-profile backlog).
async fn produce(
    generator: &mut Generator,
    options: &LoadOptions,
    batches: &mpsc::Sender<ReadingBatch>,
    progress: &Progress,
    started: Instant,
) -> Injected {
    let mut pacer = Pacer {
        batch_id: 0,
        sent: 0,
        started,
        rate: options.rate,
    };
    let block = options.block_intervals.max(1);
    let mut pending: Vec<Reading> = Vec::new();
    let mut intervals = 0usize;
    loop {
        let next = generator.next_interval();
        let done = next.is_none();
        if let Some(readings) = next {
            progress
                .sim_ts_ms
                .store(generator.current_ts_ms().max(0) as u64, Ordering::Relaxed);
            pending.extend(readings);
            intervals += 1;
        }
        if intervals < block && !done {
            continue;
        }
        if block > 1 {
            // Stable: each meter's readings stay in time order.
            pending.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
        }
        for chunk in pending.chunks(options.batch_size.max(1)) {
            if !pacer.send(chunk, batches).await {
                return generator.injected;
            }
        }
        pending.clear();
        intervals = 0;
        if done {
            return generator.injected;
        }
    }
}

/// Numbers batches and spaces them to the target rate.
struct Pacer {
    batch_id: u64,
    sent: u64,
    started: Instant,
    rate: Option<f64>,
}

impl Pacer {
    async fn send(&mut self, chunk: &[Reading], batches: &mpsc::Sender<ReadingBatch>) -> bool {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        self.batch_id += 1;
        self.sent += chunk.len() as u64;
        let batch = ReadingBatch {
            batch_id: self.batch_id,
            readings: chunk.to_vec(),
        };
        batches.send(batch).await.is_ok()
    }
}

async fn worker(
    client: Client,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<ReadingBatch>>>,
    report: Arc<Mutex<LoadReport>>,
    progress: Arc<Progress>,
) {
    loop {
        let Some(batch) = batches.lock().await.recv().await else {
            return;
        };
        let readings = batch.readings.len();
        let sent_at = Instant::now();
        let result = client.push_batch(batch).await;
        let latency = sent_at.elapsed();
        let Ok(mut report) = report.lock() else {
            return;
        };
        match result {
            Ok((ack, attempts)) => {
                report.record(&ack, readings, attempts, latency);
                progress.acked.fetch_add(readings as u64, Ordering::Relaxed);
                progress
                    .accepted
                    .fetch_add(u64::from(ack.accepted), Ordering::Relaxed);
                progress
                    .rejected
                    .fetch_add(ack.rejected.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let code = match &e {
                    gridmesh_proto::client::ClientError::Status(s) => format!("{:?}", s.code()),
                    other => other.to_string(),
                };
                *report.errors.entry(code).or_default() += 1;
                progress.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&samples, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[3.0], 0.0), 3.0);
    }
}
