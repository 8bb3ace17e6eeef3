//! Starting and stopping one node: the wiring of store, writer, actors, gRPC and HTTP.
//!
//! Shutdown order (SIGTERM/SIGINT or [`RunningNode::shutdown`]):
//! 0. a cluster member drains: its shards move to the other members (three heartbeats);
//! 1. readiness and gRPC health flip to not serving, so balancers stop sending;
//! 2. the ingest pipeline refuses new batches (UNAVAILABLE) and in-flight ones finish, up to
//!    `node.shutdown_grace`;
//! 3. every meter actor stops after writing its state row, and their writes are made durable;
//! 4. the gRPC and HTTP servers stop, the supervision tree stops;
//! 5. the journal is synced one last time, whatever the sync mode, and — when step 3
//!    completed — the run is recorded as clean, so the next start trusts the state rows
//!    instead of rebuilding each meter's state from its readings; the process exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use gridmesh_actors::api::Api;
use gridmesh_actors::auth::Auth;
use gridmesh_actors::cluster::Secret;
use gridmesh_actors::cluster::runtime::MembershipMsg;
use gridmesh_actors::context::NodeContext;
use gridmesh_actors::ingest::IngestPipeline;
use gridmesh_actors::node::{NodeMsg, NodeSupervisor};
use gridmesh_actors::storage::Store;
use gridmesh_actors::writer::{Writer, WriterTask};
use gridmesh_config::Config;
use gridmesh_proto::v1::admin_service_server::AdminServiceServer;
use gridmesh_proto::v1::alert_service_server::AlertServiceServer;
use gridmesh_proto::v1::auth_service_server::AuthServiceServer;
use gridmesh_proto::v1::ingest_service_server::IngestServiceServer;
use gridmesh_proto::v1::query_service_server::QueryServiceServer;
use gridmesh_proto::v1::registry_service_server::RegistryServiceServer;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::authn::AuthLayer;
use crate::http::{self, HttpState};
use crate::services::admin::AdminApi;
use crate::services::alerts::AlertApi;
use crate::services::auth::AuthApi;
use crate::services::ingest::IngestApi;
use crate::services::query::QueryApi;
use crate::services::registry::RegistryApi;
use crate::telemetry;

/// A node that is up: its addresses and the handles to stop it.
pub struct RunningNode {
    /// Where gRPC listens (the real port when 0 was configured).
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The node context.
    pub ctx: Arc<NodeContext>,
    /// The ingest pipeline.
    pub pipeline: IngestPipeline,
    supervisor: ActorRef<NodeMsg>,
    supervisor_task: JoinHandle<()>,
    writer: WriterTask,
    grpc: (
        oneshot::Sender<()>,
        JoinHandle<Result<(), tonic::transport::Error>>,
    ),
    http: (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>),
    ready: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
    /// The bootstrap admin's password when this start created that admin (for the in-process
    /// demo; `None` when users existed already).
    pub bootstrap: Option<crate::bootstrap::Bootstrapped>,
}

impl RunningNode {
    /// Opens the data directory and starts everything. `config` must be validated.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let metrics = telemetry::metrics_handle();
        let cookie = if config.cluster.enabled {
            let cookie = config
                .cluster
                .read_cookie(|name| std::env::var(name).ok())?;
            Some(Secret::new(cookie))
        } else {
            None
        };
        let (ctx, writer) = open_context(config).await?;
        let (auth, bootstrap) =
            crate::bootstrap::start_auth(&ctx, cookie.as_ref().map(Secret::expose)).await?;
        ctx.set_auth(auth.clone());
        if let Some(tls) = crate::tls::cluster(&ctx.config.tls)? {
            ctx.set_cluster_tls(tls);
        }
        let pipeline = IngestPipeline::new(ctx.clone());
        let api = Api::new(ctx.clone(), pipeline.clone());
        if let Some(cookie) = cookie {
            ctx.set_cluster_runtime(cookie, Arc::new(api.clone()));
        }
        let (supervisor, supervisor_task) = Actor::spawn(None, NodeSupervisor, ctx.clone())
            .await
            .context("starting the supervision tree")?;
        let ready = Arc::new(AtomicBool::new(false));

        let node = &ctx.config.node;
        let grpc_listener = bind(node.grpc_addr, "node.grpc_addr / --grpc-addr").await?;
        let http_listener = bind(node.http_addr, "node.http_addr / --http-addr").await?;
        let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);

        let (health, grpc) = serve_grpc(&ctx, &api, &auth, grpc_listener).await?;
        let http_state = HttpState {
            metrics,
            ctx: ctx.clone(),
            pipeline: pipeline.clone(),
            ready: ready.clone(),
        };
        let http = serve_http(http_state, http_listener);
        ready.store(true, Ordering::Release);
        let (name, data_dir) = (&ctx.config.node.name, ctx.store.path().display());
        let tls = ctx.config.tls.grpc_enabled();
        tracing::info!(
            node = %name, %grpc_addr, %http_addr, data_dir = %data_dir, tls, "node ready"
        );
        Ok(Self {
            grpc_addr,
            http_addr,
            ctx,
            pipeline,
            supervisor,
            supervisor_task,
            writer,
            grpc,
            http,
            ready,
            health,
            bootstrap,
        })
    }

    /// Resolves if the node fails on its own: the supervision tree escalated past its restart
    /// budget, or the storage writer stopped on an error.
    pub async fn failed(&mut self) -> String {
        let mut failure = self.writer.failure.clone();
        tokio::select! {
            _ = &mut self.supervisor_task => {
                "the supervision tree exhausted its restart budget".to_owned()
            }
            changed = failure.wait_for(Option::is_some) => match changed {
                Ok(message) => format!("storage failed: {}", message.clone().unwrap_or_default()),
                Err(_) => "storage writer stopped".to_owned(),
            },
        }
    }

    /// Graceful shutdown (see the module docs). Returns whether in-flight batches drained.
    pub async fn shutdown(self) -> anyhow::Result<bool> {
        if let Some(membership) = self.ctx.cluster.membership_actor() {
            // Drain first: the other members take this node's shards once their views show
            // the drain (heartbeats carry it), while this node still answers and forwards.
            tracing::info!("shutting down: draining this node's shards to the other members");
            let _ = membership.cast(MembershipMsg::SetDraining(true));
            let settle = self.ctx.config.cluster.heartbeat_interval * 3;
            tokio::time::sleep(settle.min(self.ctx.config.node.shutdown_grace)).await;
        }
        tracing::info!("shutting down: refusing new batches");
        self.ready.store(false, Ordering::Release);
        self.health
            .set_not_serving::<IngestServiceServer<IngestApi>>()
            .await;
        self.pipeline.close();
        let drained = self
            .pipeline
            .drained(self.ctx.config.node.shutdown_grace)
            .await;
        if !drained {
            tracing::warn!(
                inflight = self.pipeline.inflight(),
                "shutdown grace elapsed with batches in flight"
            );
        }
        // Every meter writes its state row as it stops; a run that ends with all of them
        // written is marked clean, and the next one trusts the rows without rebuilding.
        let meters_saved = gridmesh_actors::node::stop_meters(
            &self.ctx,
            self.ctx
                .config
                .node
                .shutdown_grace
                .max(Duration::from_secs(5)),
        )
        .await;
        let _ = self.grpc.0.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.grpc.1).await;
        self.supervisor.stop(Some("shutdown".to_owned()));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.supervisor_task).await;
        let _ = self.http.0.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.http.1).await;
        let store = self.ctx.store.clone();
        tokio::task::spawn_blocking(move || {
            if meters_saved {
                store.mark_clean()
            } else {
                store.persist()
            }
        })
        .await??;
        tracing::info!(meters_saved, "shutdown complete; journal synced");
        Ok(drained)
    }
}

async fn open_context(config: Config) -> anyhow::Result<(Arc<NodeContext>, WriterTask)> {
    let (dir, shards, cache, journal) = (
        config.node.data_dir.clone(),
        config.actors.shards,
        config.storage.cache_mib,
        config.storage.max_journal_mib,
    );
    let store =
        tokio::task::spawn_blocking(move || Store::open_with_journal(&dir, shards, cache, journal))
            .await??;
    let store = Arc::new(store);
    let (writer, writer_task) =
        Writer::spawn(store.clone(), &config.storage).context("starting the storage writer")?;
    Ok((NodeContext::new(store, writer, config), writer_task))
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key}); is another node running there?"))
}

async fn serve_grpc(
    ctx: &Arc<NodeContext>,
    api: &Api,
    auth: &Arc<Auth>,
    listener: TcpListener,
) -> anyhow::Result<(
    tonic_health::server::HealthReporter,
    (
        oneshot::Sender<()>,
        JoinHandle<Result<(), tonic::transport::Error>>,
    ),
)> {
    let ingest_cfg = &ctx.config.ingest;
    let max_message = ingest_cfg.max_message_bytes as usize;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServiceServer<IngestApi>>().await;
    health
        .set_serving::<RegistryServiceServer<RegistryApi>>()
        .await;
    health.set_serving::<QueryServiceServer<QueryApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    health.set_serving::<AuthServiceServer<AuthApi>>().await;
    health.set_serving::<AlertServiceServer<AlertApi>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gridmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gridmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let ingest = IngestServiceServer::new(IngestApi::new(
        api.clone(),
        ingest_cfg.max_inflight_batches_per_stream,
    ))
    .max_decoding_message_size(max_message);
    let registry = RegistryServiceServer::new(RegistryApi::new(api.clone()))
        .max_decoding_message_size(max_message);
    let query =
        QueryServiceServer::new(QueryApi::new(api.clone())).max_encoding_message_size(max_message);
    let admin = AdminServiceServer::new(AdminApi::new(api.clone()));
    let auth_service = AuthServiceServer::new(AuthApi::new(auth.clone(), ctx.clone()));
    let alerts = AlertServiceServer::new(AlertApi::new(api.clone()));

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = crate::tls::grpc_server(&ctx.config.tls)? {
        builder = builder
            .tls_config(tls)
            .context("tls.grpc_cert_file / grpc_key_file")?;
    }
    // Every call, of every service, passes the auth layer first (see `authn`).
    let server = builder
        .layer(AuthLayer::new(auth.clone(), ctx.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .add_service(registry)
        .add_service(query)
        .add_service(admin)
        .add_service(auth_service)
        .add_service(alerts)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    Ok((health, (stop_tx, tokio::spawn(server))))
}

fn serve_http(
    state: HttpState,
    listener: TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    (stop_tx, tokio::spawn(async move { server.await }))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
