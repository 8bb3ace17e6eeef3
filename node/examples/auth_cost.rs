//! What authentication costs, measured in-process on one node:
//!
//! - the per-call check (`Auth::authenticate`: JWT signature, claims, user, revocations) for
//!   an access token and an API token, in µs per call;
//! - one argon2id hash and one verification with the configured parameters (default:
//!   19 MiB, t = 2, p = 1), in ms;
//! - a full login through gRPC (`AuthService.Login`: argon2 verify, session stored and
//!   synced, token signed), in ms, median of `logins` sequential logins;
//! - unary ingest through the node's real gRPC server with the auth layer, against the same
//!   calls made straight to the `IngestService` behind it without the layer (an in-process
//!   tonic server over the same `Api`), in calls/s.
//!
//! cargo run --release -p gridmesh --example auth_cost -- [logins] [unary_calls]

use std::time::Instant;

use gridmesh::server::RunningNode;
use gridmesh_proto::client::{Client, Credentials};
use gridmesh_proto::v1::{ReadingBatch, WhoAmIRequest};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let logins = args.next().transpose()?.unwrap_or(20);
    let unary = args.next().transpose()?.unwrap_or(20_000);

    let dir = tempfile::tempdir()?;
    let mut config = gridmesh_config::Config::default();
    config.node.data_dir = dir.path().to_owned();
    config.node.grpc_addr = "127.0.0.1:0".parse()?;
    config.node.http_addr = "127.0.0.1:0".parse()?;
    config.storage.sync = gridmesh_config::SyncMode::None;
    config.ingest.auto_register = true;
    config.log.level = "warn".into();
    gridmesh::telemetry::init_logging(&config.log);
    let node = RunningNode::start(config.clone()).await?;
    let auth = node
        .ctx
        .auth()
        .expect("a served node has an auth layer")
        .clone();
    let password = node
        .bootstrap
        .as_ref()
        .expect("a fresh node bootstraps its admin")
        .password
        .expose()
        .to_owned();
    let target = node.grpc_addr.to_string();

    // Per-call check.
    let client = Client::connect_with(&target, Credentials::password("admin", &password)).await?;
    let pair = client.login("admin", &password).await?;
    let n = 200_000;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(auth.authenticate(&pair.access_token).is_ok());
    }
    let per_check_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("authenticate (access token): {per_check_us:.2} µs per call ({n} calls)");

    // argon2id alone.
    let mut hashes = Vec::new();
    let mut verifies = Vec::new();
    let hash = auth.hasher().hash(&password)?;
    for _ in 0..10 {
        let t = Instant::now();
        std::hint::black_box(auth.hasher().hash(&password)?);
        hashes.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(auth.hasher().verify(&password, &hash));
        verifies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let a = &config.auth;
    println!(
        "argon2id m={} KiB t={} p={}: hash {:.1} ms, verify {:.1} ms (median of 10)",
        a.argon2_memory_kib,
        a.argon2_iterations,
        a.argon2_parallelism,
        median(hashes),
        median(verifies)
    );

    // Full login through gRPC.
    let mut times = Vec::new();
    for _ in 0..logins {
        let t = Instant::now();
        client.login("admin", &password).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "login over gRPC: {:.1} ms median of {logins}",
        median(times)
    );

    // Unary ingest with the layer (the node) and without (the same Api, no layer).
    let with_layer = unary_rate(&client, unary).await?;
    let bare = bare_server(&node).await?;
    let bare_client = Client::connect(&bare.to_string()).await?;
    let without_layer = unary_rate(&bare_client, unary).await?;
    println!(
        "unary PushBatch (1 reading, sync=none, 4 callers): with auth {with_layer:.0} calls/s, \
         without {without_layer:.0} calls/s ({:+.1} %)",
        (with_layer / without_layer - 1.0) * 100.0
    );
    let _ = client.auth().who_am_i(WhoAmIRequest {}).await?;
    node.shutdown().await?;
    Ok(())
}

/// Calls/s of `calls` unary one-reading pushes from 4 concurrent callers.
async fn unary_rate(client: &Client, calls: usize) -> anyhow::Result<f64> {
    let base = gridmesh_actors::context::now_ms() / 900_000 * 900_000 - 86_400_000;
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..calls / 4 {
                    let reading = gridmesh_proto::v1::Reading {
                        meter_id: format!("B-{w}-{}", i % 50),
                        ts_ms: base - (i / 50) as i64 * 1000,
                        active_power_w: Some(100.0),
                        ..Default::default()
                    };
                    let batch = ReadingBatch {
                        batch_id: i as u64,
                        readings: vec![reading],
                    };
                    client.ingest().push_batch(batch).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The node's IngestService on a second port without the auth layer (for comparison only;
/// the node itself never serves without it). An interceptor hands the service the principal
/// the layer would have, an unscoped admin, so the service does the same work.
async fn bare_server(node: &RunningNode) -> anyhow::Result<std::net::SocketAddr> {
    use gridmesh_proto::v1::ingest_service_server::IngestServiceServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api = gridmesh_actors::api::Api::new(node.ctx.clone(), node.pipeline.clone());
    let admin = gridmesh_auth::Principal {
        user: "bench".into(),
        roles: [gridmesh_auth::Role::Admin].into(),
        feeders: Default::default(),
        session_id: String::new(),
        token_id: String::new(),
    };
    let service = IngestServiceServer::with_interceptor(
        gridmesh::services::ingest::IngestApi::new(api, 8),
        move |mut request: tonic::Request<()>| {
            request.extensions_mut().insert(admin.clone());
            Ok(request)
        },
    );
    // The listener is bound already: connections wait in its backlog until the server runs.
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(addr)
}
