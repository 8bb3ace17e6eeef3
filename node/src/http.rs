//! The HTTP side of a node: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//!
//! `/healthz` answers 200 while the process serves at all; `/readyz` answers 200 only while the
//! node accepts traffic (not during start-up, while joining a cluster, or during shutdown),
//! which is what load balancers and Kubernetes readiness probes should use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use gridmesh_actors::context::NodeContext;
use gridmesh_actors::ingest::IngestPipeline;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Node context (storage size).
    pub ctx: Arc<NodeContext>,
    /// Pipeline (in-flight gauge).
    pub pipeline: IngestPipeline,
    /// Whether the node accepts traffic.
    pub ready: Arc<AtomicBool>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    // Gauges that are cheaper to read at scrape time than to maintain on every write.
    metrics::gauge!("gridmesh_storage_disk_bytes").set(state.ctx.store.disk_space() as f64);
    metrics::gauge!("gridmesh_ingest_inflight_readings").set(f64::from(state.pipeline.inflight()));
    metrics::gauge!("gridmesh_storage_write_queue").set(state.ctx.writer.queued() as f64);
    for mailbox in state.ctx.mailboxes.snapshot() {
        let kind = mailbox.kind.label();
        metrics::gauge!("gridmesh_mailbox_queued", "kind" => kind).set(mailbox.queued as f64);
        metrics::gauge!("gridmesh_mailbox_high_water", "kind" => kind)
            .set(mailbox.high_water as f64);
    }
    for (peer, inflight) in state.ctx.cluster.inflight_per_peer() {
        metrics::gauge!("gridmesh_forward_inflight", "peer" => peer).set(inflight as f64);
    }
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    // A cluster member is ready once it has joined: it has the registry and owns shards.
    let joining = state.ctx.cluster.enabled()
        && state
            .ctx
            .cluster
            .view()
            .members
            .first()
            .is_none_or(|me| me.joining);
    if joining {
        return (StatusCode::SERVICE_UNAVAILABLE, "joining the cluster\n");
    }
    (StatusCode::OK, "ready\n")
}
