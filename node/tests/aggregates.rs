//! Daily aggregates, billing determinants and feeder daily peaks over gRPC, checked against
//! sums computed here from the readings sent.

mod common;

use common::*;
use gridmesh_proto::v1::{GetAggregatesRequest, ReadingBatch};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_the_sums_of_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("start");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(1, 2))
        .await
        .expect("topology");
    // Two days of 15-minute readings for both meters (reading k of `common` has k%7+1 tens
    // of Wh).
    let readings: Vec<_> = (0..2)
        .flat_map(|m| (0..192).map(move |k| reading(&meter_id(m), k)))
        .collect();
    for chunk in readings.chunks(100) {
        let (ack, _) = client
            .push_batch(ReadingBatch {
                batch_id: 1,
                readings: chunk.to_vec(),
            })
            .await
            .expect("push");
        assert!(ack.rejected.is_empty(), "{ack:?}");
    }
    let energy = |k: i64| (k % 7 + 1) as f64 * 10.0;
    let request = |meter: &str, feeder: &str| GetAggregatesRequest {
        meter_id: meter.into(),
        feeder_id: feeder.into(),
        from_ts_ms: base_ts(),
        to_ts_ms: base_ts() + 2 * DAY_MS,
    };

    let a = client
        .query()
        .get_aggregates(request(&meter_id(0), ""))
        .await
        .expect("meter aggregates")
        .into_inner();
    assert_eq!(a.days.len(), 2, "{a:?}");
    for (d, day) in a.days.iter().enumerate() {
        let expected: f64 = (d as i64 * 96..(d as i64 + 1) * 96).map(energy).sum();
        assert_eq!(day.intervals, 96);
        assert!((day.import_wh - expected).abs() < 1e-6, "{day:?}");
        // 70 Wh in 15 minutes is the largest value: 280 W.
        assert!((day.max_demand_w - 280.0).abs() < 1e-6, "{day:?}");
        assert_eq!(day.tou.len(), 1);
        assert_eq!(day.tou[0].bucket, "flat");
        assert!((day.tou[0].import_wh - expected).abs() < 1e-6);
        assert!(day.load_factor > 0.0 && day.load_factor < 1.0);
    }
    let month_energy: f64 = a.months.iter().map(|m| m.import_wh).sum();
    let all: f64 = (0..192).map(energy).sum();
    assert!((month_energy - all).abs() < 1e-6, "{:?}", a.months);

    let f = client
        .query()
        .get_aggregates(request("", "F-0"))
        .await
        .expect("feeder peaks")
        .into_inner();
    assert_eq!(f.feeder_days.len(), 2, "{f:?}");
    for day in &f.feeder_days {
        // Both meters at 70 Wh: 140 Wh in 15 minutes is 560 W.
        assert!((day.peak_w - 560.0).abs() < 1e-6, "{day:?}");
    }

    for bad in [request("", ""), request(&meter_id(0), "F-0")] {
        let e = client.query().get_aggregates(bad).await.expect_err("bad");
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let mut huge = request(&meter_id(0), "");
    huge.to_ts_ms = huge.from_ts_ms + 500 * DAY_MS;
    let e = client
        .query()
        .get_aggregates(huge)
        .await
        .expect_err("too long");
    assert_eq!(e.code(), Code::InvalidArgument);
}
