//! Logging and metrics set-up.

use std::sync::OnceLock;

use gridmesh_config::{LogConfig, LogFormat};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the `tracing` subscriber. `RUST_LOG` wins over the configured level.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(quiet_actor_spans(&config.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests, demo after serve) keeps the first subscriber.
    let _ = result;
}

/// ractor opens a span per actor and enters it on every poll; with per-meter actors that is a
/// measurable share of ingest CPU, so its spans stay off unless a filter names ractor itself.
fn quiet_actor_spans(level: &str) -> String {
    if level.contains("ractor") {
        level.to_owned()
    } else {
        format!("{level},ractor=warn")
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let group_sizes = [
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
            ];
            let group_metric = Matcher::Full("gridmesh_storage_group_requests".to_owned());
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &latency)
                .and_then(|b| b.set_buckets_for_metric(group_metric, &group_sizes))
                .and_then(|b| b.install_recorder())
                .expect(
                    "the recorder is installed once per process, before any metric is recorded",
                );
            describe_metrics();
            handle
        })
        .clone()
}

fn describe_metrics() {
    describe_auth_metrics();
    describe_counter!(
        "gridmesh_ingest_batches_total",
        "Batches acknowledged (unary and stream)."
    );
    describe_counter!(
        "gridmesh_readings_received_total",
        "Readings received in admitted batches."
    );
    describe_counter!(
        "gridmesh_readings_accepted_total",
        "Readings newly stored (duplicates excluded)."
    );
    describe_counter!(
        "gridmesh_readings_duplicate_total",
        "Readings acknowledged as duplicates of stored ones."
    );
    describe_counter!(
        "gridmesh_readings_corrected_total",
        "Readings that replaced a lower version."
    );
    describe_counter!(
        "gridmesh_readings_rejected_total",
        "Readings rejected, by reason."
    );
    describe_counter!(
        "gridmesh_ingest_saturated_total",
        "Batches refused with RESOURCE_EXHAUSTED."
    );
    describe_counter!(
        "gridmesh_ingest_ack_timeouts_total",
        "Batches answered UNAVAILABLE after the ack timeout."
    );
    describe_histogram!(
        "gridmesh_ingest_ack_latency_seconds",
        Unit::Seconds,
        "Time from admission to ack of a batch."
    );
    describe_histogram!(
        "gridmesh_storage_group_commit_seconds",
        Unit::Seconds,
        "Duration of one group commit, fsync included."
    );
    describe_histogram!(
        "gridmesh_storage_group_requests",
        Unit::Count,
        "Write requests per group commit."
    );
    describe_counter!(
        "gridmesh_storage_rows_written_total",
        "Rows written to the keyspace."
    );
    describe_gauge!(
        "gridmesh_storage_disk_bytes",
        Unit::Bytes,
        "Bytes the keyspace occupies on disk."
    );
    describe_gauge!("gridmesh_active_actors", "Resident actors, by kind.");
    describe_counter!(
        "gridmesh_meter_activations_total",
        "Meter actors activated from stored state."
    );
    describe_counter!(
        "gridmesh_meter_passivations_total",
        "Meter actors passivated, by reason."
    );
    describe_counter!(
        "gridmesh_actor_failures_total",
        "Supervised actors that stopped unexpectedly, by kind."
    );
    describe_gauge!(
        "gridmesh_ingest_inflight_readings",
        "Readings admitted and not yet acknowledged."
    );
    describe_gauge!(
        "gridmesh_storage_write_queue",
        "Write requests waiting for the group-commit writer."
    );
}

fn describe_auth_metrics() {
    describe_counter!(
        "gridmesh_auth_events_total",
        "Security events recorded in the audit log, by action and success."
    );
    describe_counter!(
        "gridmesh_auth_refused_total",
        "Calls refused by the auth layer, by reason (no_token, expired, bad_signature, role...)."
    );
    describe_gauge!(
        "gridmesh_sessions_active",
        "Login sessions whose SessionActor runs on this node."
    );
    describe_counter!(
        "gridmesh_cluster_handshakes_total",
        "Incoming cluster TLS handshakes, by outcome (ok, failed, timeout, refused_busy)."
    );
}
