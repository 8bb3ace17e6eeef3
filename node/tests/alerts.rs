//! Alerts end to end on a real node: the grid rules raise them from readings, `AlertService`
//! lists and streams them, operators acknowledge and resolve them, cleared conditions resolve
//! themselves, a watcher resumes from its cursor, and alerts survive a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    AcknowledgeAlertRequest, Alert, AlertChange, AlertState, AssetKind, FeederInfo,
    GetForecastRequest, ImportTopologyRequest, ListAlertsRequest, MeterInfo, PhaseValues, Reading,
    ReadingBatch, ResolveAlertRequest, ServiceType, TransformerInfo, WatchAlertsRequest,
};
use tonic::Code;

const METERS: usize = 4;

fn topology() -> ImportTopologyRequest {
    ImportTopologyRequest {
        feeders: vec![FeederInfo {
            feeder_id: "F-A".into(),
            // 10 kVA: four meters drawing 3 kW each overload it.
            rating_kva: 10.0,
            head_meter_id: String::new(),
            // Meters 0 and 1 on a 5 kVA transformer: 6 kW overload it too. TR-2 is not
            // rated, so it has no loading rules.
            transformers: vec![TransformerInfo {
                transformer_id: "TR-1".into(),
                rating_kva: 5.0,
            }],
        }],
        meters: (0..METERS)
            .map(|m| MeterInfo {
                meter_id: meter_id(m),
                feeder_id: "F-A".into(),
                transformer_id: if m < 2 { "TR-1" } else { "TR-2" }.into(),
                nominal_voltage_v: 230.0,
                service_type: ServiceType::Residential as i32,
                has_pv: false,
            })
            .collect(),
    }
}

/// Reading `k` (15 minutes apart) of meter `m`, with a voltage and an interval energy.
fn sample(m: usize, k: i64, volts: f64, energy_wh: f64) -> Reading {
    Reading {
        meter_id: meter_id(m),
        ts_ms: base_ts() + (k + 1) * QUARTER_MS,
        energy_import_register_wh: Some(1000.0 + k as f64 * 1000.0),
        interval_energy_import_wh: Some(energy_wh),
        voltage_v: Some(PhaseValues {
            l1: Some(volts),
            l2: None,
            l3: None,
        }),
        ..Reading::default()
    }
}

async fn push(client: &Client, k: i64, volts: impl Fn(usize) -> f64, energy_wh: f64) {
    push_each(client, k, volts, |_| energy_wh).await;
}

/// Pushes reading `k` of every meter, with its own voltage and energy; all must be accepted.
async fn push_each(
    client: &Client,
    k: i64,
    volts: impl Fn(usize) -> f64,
    energy_wh: impl Fn(usize) -> f64,
) {
    let readings = (0..METERS)
        .map(|m| sample(m, k, volts(m), energy_wh(m)))
        .collect();
    let (ack, _) = client
        .push_batch(ReadingBatch {
            batch_id: k as u64,
            readings,
        })
        .await
        .expect("push");
    assert!(ack.rejected.is_empty(), "{ack:?}");
}

async fn alerts(client: &Client, kind: &str) -> Vec<Alert> {
    client
        .alerts()
        .list_alerts(ListAlertsRequest {
            kind: kind.into(),
            ..ListAlertsRequest::default()
        })
        .await
        .expect("list")
        .into_inner()
        .alerts
}

/// Polls until `kind` has an alert in `state`, or panics.
async fn wait_alert(client: &Client, kind: &str, state: AlertState) -> Alert {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = alerts(client, kind)
            .await
            .into_iter()
            .find(|a| a.state == state as i32)
        {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} alert in state {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next change on the stream (bounded wait).
async fn next_change(stream: &mut tonic::Streaming<AlertChange>) -> AlertChange {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a change in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_raise_alerts_that_operators_and_time_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]).env("GRIDMESH_ALERTS__AUTO_RESOLVE_AFTER", "\"0s\"");
    node.start().expect("start");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology())
        .await
        .expect("topology");
    let mut watch = client
        .alerts()
        .watch_alerts(WatchAlertsRequest::default())
        .await
        .expect("watch")
        .into_inner();

    // Meter 0 at 200 V (0.87 pu, below ANSI Range A) for three intervals; the others normal.
    let volts = |m: usize| if m == 0 { 200.0 } else { 230.0 };
    for k in 0..4 {
        push(&client, k, volts, 100.0).await;
    }
    let sag = wait_alert(&client, "undervoltage", AlertState::Open).await;
    assert_eq!(sag.asset_id, meter_id(0));
    assert_eq!(sag.feeder_id, "F-A");
    assert!(sag.value < 0.95, "{sag:?}");
    let change = next_change(&mut watch).await;
    assert_eq!(
        change.alert.as_ref().map(|a| &a.alert_id),
        Some(&sag.alert_id)
    );
    let cursor_after_open = change.cursor.clone();

    // Still low: occurrences grow on the same alert, no second alert.
    for k in 4..6 {
        push(&client, k, volts, 100.0).await;
    }
    let acked = client
        .alerts()
        .acknowledge_alert(AcknowledgeAlertRequest {
            alert_id: sag.alert_id.clone(),
            by: "operator-1".into(),
            note: "crew dispatched".into(),
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.state, AlertState::Acknowledged as i32);
    // The authenticated caller is recorded, not the request's `by`.
    assert_eq!(acked.acknowledged_by, gridmesh_chaos::TEST_ADMIN);
    assert_eq!(
        alerts(&client, "undervoltage").await.len(),
        1,
        "deduplicated"
    );

    // Back to normal: the condition clears and, with auto_resolve_after = 0s, resolves.
    for k in 6..10 {
        push(&client, k, |_| 230.0, 100.0).await;
    }
    let resolved = wait_alert(&client, "undervoltage", AlertState::Resolved).await;
    assert_eq!(resolved.alert_id, sag.alert_id);
    assert_eq!(resolved.resolved_by, "auto");
    assert!(resolved.occurrences >= 1);

    // Overload: four meters at 750 Wh per 15 minutes are 12 kW on a 10 kVA feeder. It is
    // judged once readings 15 minutes past each interval (the settle time) have arrived.
    for k in 10..16 {
        push(&client, k, |_| 230.0, 750.0).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let overloads = loop {
        let open: Vec<Alert> = alerts(&client, "overload")
            .await
            .into_iter()
            .filter(|a| a.state == AlertState::Open as i32)
            .collect();
        if open.len() >= 2 || Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut assets: Vec<(i32, &str, &str)> = overloads
        .iter()
        .map(|a| (a.asset_kind, a.asset_id.as_str(), a.feeder_id.as_str()))
        .collect();
    assets.sort();
    assert_eq!(
        assets,
        [
            (AssetKind::Transformer as i32, "TR-1", "F-A"),
            (AssetKind::Feeder as i32, "F-A", "F-A"),
        ],
        "the feeder and its rated transformer, not the unrated one: {overloads:?}"
    );
    let overload = overloads
        .into_iter()
        .find(|a| a.asset_id == "F-A")
        .expect("feeder overload");
    assert!(overload.value > 100.0, "{overload:?}");
    let transformer = alerts(&client, "overload")
        .await
        .into_iter()
        .find(|a| a.asset_id == "TR-1")
        .expect("transformer overload");
    // 6 kW on 5 kVA.
    assert!((transformer.value - 120.0).abs() < 1.0, "{transformer:?}");
    let warning = wait_alert(&client, "loading_high", AlertState::Open).await;
    assert!(
        ["F-A", "TR-1"].contains(&warning.asset_id.as_str()),
        "{warning:?}"
    );

    // An operator resolves the overload; resolving twice is refused.
    let request = ResolveAlertRequest {
        alert_id: overload.alert_id.clone(),
        by: "operator-1".into(),
        note: "load transferred".into(),
    };
    client
        .alerts()
        .resolve_alert(request.clone())
        .await
        .expect("resolve");
    let twice = client
        .alerts()
        .resolve_alert(request)
        .await
        .expect_err("twice");
    assert_eq!(twice.code(), Code::FailedPrecondition);
    let unknown = client
        .alerts()
        .acknowledge_alert(AcknowledgeAlertRequest {
            alert_id: "no-such-alert@1".into(),
            ..AcknowledgeAlertRequest::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let garbage = client
        .alerts()
        .watch_alerts(WatchAlertsRequest {
            cursor: "not a cursor".into(),
            ..WatchAlertsRequest::default()
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(garbage.code(), Code::InvalidArgument);

    // A watcher resuming from a cursor gets every later change, in order, and none before.
    let mut resumed = client
        .alerts()
        .watch_alerts(WatchAlertsRequest {
            cursor: cursor_after_open,
            ..WatchAlertsRequest::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let first = next_change(&mut resumed).await;
    let first = first.alert.expect("alert");
    assert_eq!(first.alert_id, sag.alert_id);
    assert!(
        first.version > sag.version,
        "the open change is not repeated"
    );
    let mut seen_overload = false;
    while !seen_overload {
        let a = next_change(&mut resumed).await.alert.expect("alert");
        seen_overload = a.alert_id == overload.alert_id && a.state == AlertState::Resolved as i32;
    }

    // No forecast before a local day of load has been judged.
    let none = client
        .query()
        .get_forecast(GetForecastRequest {
            feeder_id: "F-A".into(),
        })
        .await
        .expect_err("no forecast yet");
    assert_eq!(none.code(), Code::FailedPrecondition);

    // Alerts survive a restart.
    let before = alerts(&client, "").await;
    node.terminate(Duration::from_secs(20)).expect("stop");
    node.start().expect("restart");
    let client = connect(&node).await;
    let after = alerts(&client, "").await;
    assert_eq!(
        before
            .iter()
            .map(|a| (&a.alert_id, a.version))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|a| (&a.alert_id, a.version))
            .collect::<Vec<_>>()
    );
}

/// Meter 0 reports the same interval energy again and again (a stuck register): the anomaly
/// rules in its actor raise one frozen-run alert. Half of the run is seen by an actor that is
/// then passivated (its detector persisted), the rest by the next incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_meter_raises_one_anomaly_alert_across_passivation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[])
        .env("GRIDMESH_ACTORS__METER_IDLE_TIMEOUT", "\"1s\"")
        .env("GRIDMESH_ACTORS__PASSIVATION_INTERVAL", "\"100ms\"");
    node.start().expect("start");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology())
        .await
        .expect("topology");
    let energy = |m: usize, k: i64| {
        if m == 0 {
            123.0
        } else {
            100.0 + ((k * 7 + m as i64) % 11) as f64
        }
    };
    let push_k = async |k: i64| push_each(&client, k, |_| 230.0, |m| energy(m, k)).await;
    for k in 0..7 {
        push_k(k).await;
    }
    // Every meter goes idle and is passivated.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active = client
            .admin()
            .list_active_meters(gridmesh_proto::v1::ListActiveMetersRequest {})
            .await
            .expect("active meters")
            .into_inner();
        if active.meter_ids.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "meters never passivated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        alerts(&client, "frozen_run").await.is_empty(),
        "six intervals are not a run yet"
    );
    // Twelve identical intervals in a row are a frozen run; reading 14 closes interval 13.
    for k in 7..16 {
        push_k(k).await;
    }
    let frozen = wait_alert(&client, "frozen_run", AlertState::Open).await;
    assert_eq!(frozen.asset_id, meter_id(0));
    assert_eq!(frozen.feeder_id, "F-A");
    let all = alerts(&client, "frozen_run").await;
    assert_eq!(all.len(), 1, "only the frozen meter: {all:?}");
}

/// A feeder re-rated while its actor runs is judged with the new rating from the next
/// interval on: 12 kW is nothing for 100 kVA and an overload of 10 kVA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_rerated_while_running_is_judged_by_its_new_rating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("start");
    let client = connect(&node).await;
    let mut generous = topology();
    generous.feeders[0].rating_kva = 100.0;
    generous.feeders[0].transformers.clear();
    client
        .registry()
        .import_topology(generous.clone())
        .await
        .expect("topology");
    for k in 0..8 {
        push(&client, k, |_| 230.0, 750.0).await;
    }
    // The feeder actor has judged intervals by now (its live view answers), none loaded.
    let loaded = |alerts: Vec<Alert>| alerts.into_iter().any(|a| a.asset_id == "F-A");
    assert!(!loaded(alerts(&client, "overload").await));
    assert!(!loaded(alerts(&client, "loading_high").await));

    let mut tight = generous;
    tight.feeders[0].rating_kva = 10.0;
    tight.meters.clear();
    client
        .registry()
        .import_topology(tight)
        .await
        .expect("re-rating");
    for k in 8..16 {
        push(&client, k, |_| 230.0, 750.0).await;
    }
    let overload = wait_alert(&client, "overload", AlertState::Open).await;
    assert_eq!(overload.asset_id, "F-A");
    assert!(overload.value > 100.0, "12 kW on 10 kVA: {overload:?}");
}
