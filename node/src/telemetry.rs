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
        "gridmesh_daily_aggregates_stored_total",
        "Daily aggregates meter actors stored when a local day closed."
    );
    describe_counter!(
        "gridmesh_meter_activations_total",
        "Meter actors activated from stored state."
    );
    describe_counter!(
        "gridmesh_meter_state_rebuilds_total",
        "Meter activations that rebuilt the state from the stored readings because the state \
         row may predate them (after an unclean stop of the node, the shard or the meter)."
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
    describe_gauge!(
        "gridmesh_mailbox_queued",
        "Messages waiting in the mailboxes of the ingest path's actors, summed per kind."
    );
    describe_gauge!(
        "gridmesh_mailbox_high_water",
        "Most messages seen waiting in one actor's mailbox since start, per kind."
    );
    describe_counter!(
        "gridmesh_alert_changes_total",
        "Alert changes made on this node (opened, occurred, cleared, acknowledged, resolved)."
    );
    describe_counter!(
        "gridmesh_alert_events_total",
        "Raise and clear events from the grid rules, by event."
    );
    describe_gauge!(
        "gridmesh_alerts_open",
        "Alerts not resolved, as this node knows them."
    );
    describe_gauge!(
        "gridmesh_anti_entropy_differing_shards",
        "Shard copies that differed from a peer's at the start of the last round."
    );
    describe_counter!(
        "gridmesh_anti_entropy_pushed_total",
        "Readings anti-entropy copied to peers."
    );
    describe_counter!(
        "gridmesh_anti_entropy_rounds_total",
        "Anti-entropy rounds finished."
    );
    describe_counter!(
        "gridmesh_cluster_bad_frames_total",
        "Frames from peers that did not decode."
    );
    describe_gauge!(
        "gridmesh_cluster_epoch",
        "Epoch of this node's membership view."
    );
    describe_gauge!(
        "gridmesh_cluster_members",
        "Members in this node's view, by state."
    );
    describe_counter!(
        "gridmesh_cluster_sessions_refused_total",
        "Cluster sessions that closed before authenticating."
    );
    describe_counter!(
        "gridmesh_cluster_peers_refused_total",
        "Authenticated peers refused as members, by reason (shards: another actors.shards)."
    );
    describe_histogram!(
        "gridmesh_digest_build_seconds",
        Unit::Seconds,
        "Time to scan the store into anti-entropy digests."
    );
    describe_counter!(
        "gridmesh_failure_detections_total",
        "Peers this node declared suspect or down, by state."
    );
    describe_counter!(
        "gridmesh_feeder_days_closed_total",
        "Local days of feeder load closed (balance and forecast run)."
    );
    describe_counter!(
        "gridmesh_feeder_updates_dropped_total",
        "Feeder updates that could not reach the feeder's owner."
    );
    describe_gauge!(
        "gridmesh_forward_inflight",
        "Forwarded calls in flight, by peer."
    );
    describe_histogram!(
        "gridmesh_forward_latency_seconds",
        Unit::Seconds,
        "Round trip of a call forwarded to a peer."
    );
    describe_counter!(
        "gridmesh_forward_unknown_total",
        "Forwarded calls without an answer in time (outcome unknown)."
    );
    describe_counter!(
        "gridmesh_forwarded_calls_total",
        "Calls forwarded to peers."
    );
    describe_counter!(
        "gridmesh_gateway_busy_total",
        "Calls from peers refused because too many were in flight."
    );
    describe_counter!(
        "gridmesh_hints_handed_off_total",
        "Hinted writes handed off to the members they were kept for."
    );
    describe_gauge!(
        "gridmesh_hints_pending",
        "Hinted writes this node keeps for members that were down."
    );
    describe_counter!(
        "gridmesh_ingest_unreplicated_total",
        "Batches that missed the write quorum (answered UNAVAILABLE)."
    );
    describe_counter!(
        "gridmesh_notifications_dead_total",
        "Notifications given up as dead letters, by sink."
    );
    describe_counter!(
        "gridmesh_notifications_sent_total",
        "Notifications delivered, by sink."
    );
    describe_gauge!(
        "gridmesh_notify_breaker_open",
        "1 while a sink's circuit breaker is open, by sink."
    );
    describe_counter!(
        "gridmesh_notify_failures_total",
        "Failed notification attempts, by sink."
    );
    describe_histogram!(
        "gridmesh_notify_latency_seconds",
        Unit::Seconds,
        "Duration of one notification attempt, by sink."
    );
    describe_counter!(
        "gridmesh_replica_readings_received_total",
        "Readings other nodes copied here, by cause."
    );
    describe_counter!(
        "gridmesh_replica_write_failures_total",
        "Copies of a write a replica did not make durable."
    );
    describe_histogram!(
        "gridmesh_replication_latency_seconds",
        Unit::Seconds,
        "Time to copy a batch's readings to its replicas."
    );
    describe_counter!(
        "gridmesh_shard_moves_total",
        "Shards whose owner changed in this node's map."
    );
    describe_counter!(
        "gridmesh_substitute_copies_dropped_total",
        "Copies a substitute deleted after handing them off."
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
