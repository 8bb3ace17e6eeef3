//! A real node process: ingest through gRPC, read back through queries, health, reflection,
//! metrics.

mod common;

use common::*;
use gridmesh_proto::client::RetryPolicy;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetMeterStatusRequest, GetNodeStatsRequest, GetReadingsRequest,
    ListActiveMetersRequest, ReadingBatch, Resolution,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_go_in_and_come_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(2, 5))
        .await
        .expect("import");

    // 10 meters × 16 quarter-hours (4 hours), shuffled across two batches.
    let mut readings: Vec<_> = (0..10)
        .flat_map(|m| (0..16).map(move |k| reading(&meter_id(m), k)))
        .collect();
    readings.reverse();
    let second = readings.split_off(80);
    for (id, part) in [(1, readings), (2, second)] {
        let (ack, _) = client
            .push_batch(ReadingBatch {
                batch_id: id,
                readings: part,
            })
            .await
            .expect("push");
        assert_eq!(
            (ack.batch_id, ack.accepted, ack.rejected.len()),
            (id, 80, 0),
            "{ack:?}"
        );
    }

    // Raw readings of one meter come back in time order with their values.
    let raw = client
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: meter_id(3),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Raw as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("raw")
        .into_inner();
    assert_eq!(raw.readings.len(), 16);
    assert_eq!(raw.readings[5], reading(&meter_id(3), 5));

    // Hourly buckets sum energy and give power statistics.
    let hourly = client
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: meter_id(3),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Hour as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("hourly")
        .into_inner();
    assert_eq!(hourly.intervals.len(), 4);
    let first_hour: f64 = (0..4)
        .map(|k| {
            reading("x", k)
                .interval_energy_import_wh
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(hourly.intervals[0].energy_import_wh, first_hour);
    assert_eq!(hourly.intervals[0].reading_count, 4);
    let power = hourly.intervals[0].active_power_w.expect("power stats");
    assert_eq!((power.min, power.max), (40.0, 160.0));

    // Feeder load is the sum of its meters.
    let load = client
        .query()
        .get_feeder_load(GetFeederLoadRequest {
            feeder_id: "F-0".into(),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Day as i32,
        })
        .await
        .expect("feeder load")
        .into_inner();
    let per_meter: f64 = (0..16)
        .map(|k| {
            reading("x", k)
                .interval_energy_import_wh
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(load.intervals.len(), 1);
    assert_eq!(load.intervals[0].customer_energy_import_wh, 5.0 * per_meter);
    assert_eq!(load.intervals[0].meters_reporting, 5);
    // Reactive power (reading k carries as many var as Wh) is the day's mean of the meters'
    // sum: 16 quarter-hours of 5 meters over 96 quarter-hours.
    let q = load.intervals[0].customer_mean_reactive_var;
    assert!((q - 5.0 * per_meter / 96.0).abs() < 1e-9, "{q}");

    // Status reflects what was stored; a second push of the same readings only adds duplicates.
    let again: Vec<_> = (0..16).map(|k| reading(&meter_id(3), k)).collect();
    let (ack, _) = client
        .push_batch(ReadingBatch {
            batch_id: 3,
            readings: again,
        })
        .await
        .expect("repush");
    assert_eq!((ack.accepted, ack.duplicates), (16, 16));
    let status = client
        .query()
        .get_meter_status(GetMeterStatusRequest {
            meter_id: meter_id(3),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.readings_accepted, status.duplicates), (16, 16));
    assert_eq!(
        status.last_reading.map(|r| r.ts_ms),
        Some(reading("x", 15).ts_ms)
    );
    let _ = client.clone().with_retry(RetryPolicy::none());

    // The node lists the ten meters as active, and its statistics show what went through the
    // ingest path's mailboxes: every message counted in was counted out again.
    let active = client
        .admin()
        .list_active_meters(ListActiveMetersRequest {})
        .await
        .expect("active meters")
        .into_inner();
    let expected: Vec<String> = (0..10).map(meter_id).collect();
    assert_eq!(active.meter_ids, expected);
    // Feeder updates leave after the ack, so the last ones may still be on their way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let node = loop {
        let stats = client
            .admin()
            .get_node_stats(GetNodeStatsRequest::default())
            .await
            .expect("stats")
            .into_inner();
        let node = stats.nodes[0].clone();
        if node.mailboxes.iter().all(|m| m.queued == 0) || std::time::Instant::now() > deadline {
            break node;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(node.active_meters, 10);
    assert_eq!(node.restarts, 0);
    assert!(node.active_sessions >= 1, "this client's session: {node:?}");
    let kinds: Vec<&str> = node.mailboxes.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["shard", "meter", "feeder_supervisor", "feeder"]);
    let node = &node;
    for mailbox in &node.mailboxes {
        assert_eq!(mailbox.queued, 0, "{mailbox:?}");
        assert!(mailbox.high_water >= 1, "{mailbox:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_acks_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(1, 20))
        .await
        .expect("import");

    let (tx, mut acks) = client.push_stream(4).await.expect("open stream");
    let sender = tokio::spawn(async move {
        for k in 0..50i64 {
            let readings = (0..20).map(|m| reading(&meter_id(m), k)).collect();
            tx.send(ReadingBatch {
                batch_id: k as u64 + 100,
                readings,
            })
            .await
            .expect("send");
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    while let Some(ack) = acks.message().await.expect("ack stream") {
        assert_eq!((ack.accepted, ack.rejected.len()), (20, 0), "{ack:?}");
        seen.insert(ack.batch_id);
        if seen.len() == 50 {
            break;
        }
    }
    sender.await.expect("sender");
    assert_eq!(seen, (100..150).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc_target()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut health = HealthClient::new(channel.clone());
    let check = HealthCheckRequest {
        service: "gridmesh.v1.IngestService".into(),
    };
    let status = health
        .check(check)
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    for services in [
        list_services_v1(channel.clone()).await,
        list_services_v1alpha(channel).await,
    ] {
        for expected in [
            "gridmesh.v1.IngestService",
            "gridmesh.v1.QueryService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }

    let (code, body) = node.http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(body.contains("gridmesh_storage_disk_bytes"), "{body}");
    assert_eq!(node.http_get("/healthz").expect("healthz").0, 200);
    assert_eq!(node.http_get("/readyz").expect("readyz").0, 200);
}

async fn list_services_v1(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("response")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("response")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// `promtool check metrics` on a live node's /metrics after some traffic. Skipped (with a
/// message) when promtool is missing, unless GRIDMESH_REQUIRE_PROMTOOL=1 (as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        assert!(
            std::env::var("GRIDMESH_REQUIRE_PROMTOOL").is_err(),
            "promtool is required but missing"
        );
        eprintln!("skipping: promtool not installed (Debian package prometheus)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(1, 3))
        .await
        .expect("import");
    let mut readings: Vec<_> = (0..3).map(|m| reading(&meter_id(m), 0)).collect();
    readings.push(reading("GHOST", 0));
    client
        .push_batch(ReadingBatch {
            batch_id: 1,
            readings,
        })
        .await
        .expect("push");

    let (_, body) = node.http_get("/metrics").expect("metrics");
    assert!(
        body.contains("gridmesh_readings_rejected_total{reason=\"unknown_meter\"} 1"),
        "{body}"
    );
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let output = check.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
