//! Helpers shared by the node's process-level tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use gridmesh_chaos::NodeProcess;
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    FeederInfo, ImportTopologyRequest, MeterInfo, PhaseValues, Reading, ServiceType,
};

pub const QUARTER_MS: i64 = 15 * 60 * 1000;
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// A node process on fresh ports with its data under `dir`.
pub fn node(dir: &Path, extra: &[&str]) -> NodeProcess {
    NodeProcess::new(&dir.join("node"))
        .expect("free ports")
        .binary(env!("CARGO_BIN_EXE_gridmesh"))
        .args(extra)
        .env("RUST_LOG", "info")
}

/// Midnight UTC two days ago: every test timestamp is safely in the past.
pub fn base_ts() -> i64 {
    let now = gridmesh_actors::context::now_ms();
    now.div_euclid(DAY_MS) * DAY_MS - 2 * DAY_MS
}

pub fn meter_id(i: usize) -> String {
    format!("T-{i:04}")
}

/// `feeders` feeders F-0.. with `meters_per_feeder` meters each; meter 0 of each feeder's
/// block is not the head (no head meters, so feeder sums are customer sums).
pub fn topology(feeders: usize, meters_per_feeder: usize) -> ImportTopologyRequest {
    let feeder_infos = (0..feeders)
        .map(|f| FeederInfo {
            feeder_id: format!("F-{f}"),
            rating_kva: 500.0,
            head_meter_id: String::new(),
            transformers: Vec::new(),
        })
        .collect();
    let meters = (0..feeders * meters_per_feeder)
        .map(|i| MeterInfo {
            meter_id: meter_id(i),
            feeder_id: format!("F-{}", i / meters_per_feeder),
            transformer_id: String::new(),
            nominal_voltage_v: 230.0,
            service_type: ServiceType::Residential as i32,
            has_pv: false,
        })
        .collect();
    ImportTopologyRequest {
        feeders: feeder_infos,
        meters,
    }
}

/// The k-th 15-minute reading of a meter: energy k+1 Wh per interval, so values are easy to sum.
pub fn reading(meter: &str, k: i64) -> Reading {
    let energy = (k % 7 + 1) as f64 * 10.0;
    Reading {
        meter_id: meter.to_owned(),
        ts_ms: base_ts() + (k + 1) * QUARTER_MS,
        version: 0,
        energy_import_register_wh: Some(
            1_000.0 + (0..=k).map(|j| (j % 7 + 1) as f64 * 10.0).sum::<f64>(),
        ),
        energy_export_register_wh: None,
        interval_energy_import_wh: Some(energy),
        interval_energy_export_wh: None,
        active_power_w: Some(energy * 4.0),
        reactive_power_var: Some(energy),
        voltage_v: Some(PhaseValues {
            l1: Some(229.0 + (k % 3) as f64),
            l2: None,
            l3: None,
        }),
        current_a: Some(PhaseValues {
            l1: Some(1.5),
            l2: None,
            l3: None,
        }),
        events: vec![],
    }
}

/// A client logged in as the test clusters' bootstrap admin.
pub async fn connect(node: &NodeProcess) -> Client {
    node.connect().await.expect("connect to node")
}
