//! Webhook notifications against a local HTTP server that works, fails, hangs and recovers on
//! purpose: deliveries, retries, the circuit breaker, dead letters and their replay.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    AlertState, FeederInfo, ImportTopologyRequest, ListAlertsRequest, ListDeadLettersRequest,
    MeterInfo, PhaseValues, Reading, ReadingBatch, ReplayDeadLettersRequest, ResolveAlertRequest,
    ServiceType,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

#[derive(Debug)]
struct Hook {
    mode: Mode,
    received: Vec<serde_json::Value>,
    attempts: u32,
}

type Shared = Arc<Mutex<Hook>>;

async fn hook(State(state): State<Shared>, body: String) -> StatusCode {
    let mode = {
        let mut s = state.lock().expect("lock");
        s.attempts += 1;
        s.mode
    };
    match mode {
        Mode::Ok => {
            let value = serde_json::from_str(&body).expect("the notifier posts JSON");
            state.lock().expect("lock").received.push(value);
            StatusCode::NO_CONTENT
        }
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

fn set_mode(state: &Shared, mode: Mode) {
    state.lock().expect("lock").mode = mode;
}

/// Events the hook received for alerts of `kind`, in order.
fn received(state: &Shared, kind: &str) -> Vec<String> {
    state
        .lock()
        .expect("lock")
        .received
        .iter()
        .filter(|v| v["alert"]["kind"] == kind)
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Readings of one meter at `volts` for intervals `ks`.
async fn push(client: &Client, meter: &str, ks: std::ops::Range<i64>, volts: f64) {
    for k in ks {
        let reading = Reading {
            meter_id: meter.to_owned(),
            ts_ms: base_ts() + (k + 1) * QUARTER_MS,
            interval_energy_import_wh: Some(100.0),
            voltage_v: Some(PhaseValues {
                l1: Some(volts),
                l2: None,
                l3: None,
            }),
            ..Reading::default()
        };
        let (ack, _) = client
            .push_batch(ReadingBatch {
                batch_id: k as u64,
                readings: vec![reading],
            })
            .await
            .expect("push");
        assert!(ack.rejected.is_empty(), "{ack:?}");
    }
}

async fn open_alert(client: &Client, meter: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = client
            .alerts()
            .list_alerts(ListAlertsRequest {
                asset_id: meter.into(),
                state: AlertState::Open as i32,
                ..ListAlertsRequest::default()
            })
            .await
            .expect("list")
            .into_inner()
            .alerts;
        if let Some(a) = alerts.first() {
            return a.alert_id.clone();
        }
        assert!(Instant::now() < deadline, "no open alert for {meter}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters(client: &Client) -> Vec<gridmesh_proto::v1::DeadLetterInfo> {
    client
        .alerts()
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .expect("dead letters")
        .into_inner()
        .letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_break_dead_letter_and_replay() {
    let state: Shared = Arc::new(Mutex::new(Hook {
        mode: Mode::Ok,
        received: Vec::new(),
        attempts: 0,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gridmesh.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[alerts]
auto_resolve_after = "1h"
[notify]
timeout = "300ms"
max_attempts = 3
retry_initial = "50ms"
retry_max = "200ms"
breaker_failures = 2
breaker_cooldown = "300ms"
[[notify.sinks]]
name = "control-room"
url = "http://127.0.0.1:{port}/hook"
kinds = ["undervoltage"]
"#
        ),
    )
    .expect("config");
    let mut node = node(dir.path(), &["--config", config.to_str().expect("utf-8")]);
    node.start().expect("start");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(ImportTopologyRequest {
            feeders: vec![FeederInfo {
                feeder_id: "F-N".into(),
                rating_kva: 100.0,
                head_meter_id: String::new(),
                transformers: Vec::new(),
            }],
            meters: (0..3)
                .map(|m| MeterInfo {
                    meter_id: meter_id(m),
                    feeder_id: "F-N".into(),
                    transformer_id: "TR".into(),
                    nominal_voltage_v: 230.0,
                    service_type: ServiceType::Residential as i32,
                    has_pv: false,
                })
                .collect(),
        })
        .await
        .expect("topology");

    // Working hook: a sag is notified once when it opens.
    push(&client, &meter_id(0), 0..4, 200.0).await;
    let first = open_alert(&client, &meter_id(0)).await;
    until("the opened notification", || {
        received(&state, "undervoltage") == ["opened"]
    })
    .await;
    let body = state.lock().expect("lock").received[0].clone();
    assert_eq!(body["alert"]["alert_id"], first.as_str());
    assert_eq!(
        body["alert"]["severity"].as_str().map(str::is_empty),
        Some(false)
    );

    // Failing hook: the resolve is retried max_attempts times, opens the breaker and ends as
    // a dead letter naming the error.
    set_mode(&state, Mode::Fail);
    let attempts_before = state.lock().expect("lock").attempts;
    client
        .alerts()
        .resolve_alert(ResolveAlertRequest {
            alert_id: first.clone(),
            by: "ops".into(),
            note: String::new(),
        })
        .await
        .expect("resolve");
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while letters.is_empty() {
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
        letters = dead_letters(&client).await;
    }
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, "resolved");
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].last_error.contains("500"), "{:?}", letters[0]);
    // Fewer posts than attempts would show: the breaker held some back.
    let attempts = state.lock().expect("lock").attempts - attempts_before;
    assert!((1..=3).contains(&attempts), "{attempts} posts");
    let (_, metrics) = node.http_get("/metrics").expect("metrics");
    assert!(
        metrics.contains("gridmesh_notify_failures_total"),
        "{metrics}"
    );

    // Hanging hook: a new sag's notification times out and is dead-lettered too.
    set_mode(&state, Mode::Hang);
    push(&client, &meter_id(1), 0..4, 200.0).await;
    open_alert(&client, &meter_id(1)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while letters.len() < 2 {
        assert!(Instant::now() < deadline, "no second dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
        letters = dead_letters(&client).await;
    }
    let hung = letters
        .iter()
        .find(|l| l.event == "opened")
        .expect("opened letter");
    assert!(hung.last_error.contains("no answer"), "{hung:?}");

    // Recovered hook: replaying sends both, in order, and empties the dead letters.
    set_mode(&state, Mode::Ok);
    let replayed = client
        .alerts()
        .replay_dead_letters(ReplayDeadLettersRequest::default())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.queued, 2);
    until("the replayed notifications", || {
        received(&state, "undervoltage").len() == 3
    })
    .await;
    assert_eq!(
        received(&state, "undervoltage"),
        ["opened", "resolved", "opened"]
    );
    assert!(dead_letters(&client).await.is_empty());
}
