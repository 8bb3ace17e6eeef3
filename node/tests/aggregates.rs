//! Daily aggregates, billing determinants and feeder daily peaks over gRPC, checked against
//! sums computed here from the readings sent; reliability indices from supply events sent.

mod common;

use common::*;
use gridmesh_proto::v1::{
    EnergyChannel, GetAggregatesRequest, GetMeterAnomaliesRequest, GetReliabilityRequest,
    GetValidatedIntervalsRequest, MeterEventKind, Reading, ReadingBatch,
};
use tonic::Code;

/// Pushes `readings` in batches of `batch`; every reading must be accepted.
async fn push_all(client: &gridmesh_proto::client::Client, readings: &[Reading], batch: usize) {
    for chunk in readings.chunks(batch) {
        let (ack, _) = client
            .push_batch(ReadingBatch {
                batch_id: 1,
                readings: chunk.to_vec(),
            })
            .await
            .expect("push");
        assert!(ack.rejected.is_empty(), "{ack:?}");
    }
}

/// A started node with `feeders` feeders of `meters` meters each, and a client.
async fn started(
    dir: &std::path::Path,
    feeders: usize,
    meters: usize,
) -> (gridmesh_chaos::NodeProcess, gridmesh_proto::client::Client) {
    let mut node = node(dir, &[]);
    node.start().expect("start");
    let client = connect(&node).await;
    client
        .registry()
        .import_topology(topology(feeders, meters))
        .await
        .expect("topology");
    (node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_the_sums_of_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, client) = started(dir.path(), 1, 2).await;
    // Two days of 15-minute readings for both meters (reading k of `common` has k%7+1 tens
    // of Wh).
    let readings: Vec<_> = (0..2)
        .flat_map(|m| (0..192).map(move |k| reading(&meter_id(m), k)))
        .collect();
    push_all(&client, &readings, 100).await;
    let energy = |k: i64| (k % 7 + 1) as f64 * 10.0;
    let request = |meter: &str, feeder: &str| GetAggregatesRequest {
        meter_id: meter.into(),
        feeder_id: feeder.into(),
        from_ts_ms: base_ts(),
        to_ts_ms: base_ts() + 2 * DAY_MS,
        recompute: false,
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

/// One day of ten meters on one transformer: three lose supply for 74 minutes (last gasp,
/// then a restore), one for 3 minutes (momentary), one goes quiet for five hours without a
/// last gasp (a lone silent meter: a communications fault, not an interruption).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_counts_the_interruptions_the_meters_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, client) = started(dir.path(), 1, 10).await;
    let ts = |k: i64| base_ts() + (k + 1) * QUARTER_MS;
    let gasp = |meter: &str, at: i64| Reading {
        meter_id: meter.to_owned(),
        ts_ms: at,
        events: vec![MeterEventKind::LastGasp as i32],
        ..Reading::default()
    };
    let mut readings = Vec::new();
    for m in 0..10 {
        let id = meter_id(m);
        for k in 0..96 {
            let mut r = reading(&id, k);
            match (m, k) {
                (0..=2, 40) => r = gasp(&id, ts(39) + 60_000),
                (0..=2, 41..=43) | (7, 20..=39) => continue,
                (0..=2, 44) => r.events.push(MeterEventKind::PowerRestore as i32),
                (5, 60) => {
                    readings.push(gasp(&id, ts(60) - 3 * 60_000));
                    r.events.push(MeterEventKind::PowerRestore as i32);
                }
                _ => {}
            }
            readings.push(r);
        }
    }
    push_all(&client, &readings, 200).await;
    let request = |feeder: &str, days: i64| GetReliabilityRequest {
        feeder_id: feeder.into(),
        from_ts_ms: base_ts(),
        to_ts_ms: base_ts() + days * DAY_MS,
    };
    let r = client
        .query()
        .get_reliability(request("F-0", 1))
        .await
        .expect("reliability")
        .into_inner();
    assert_eq!(r.customers, 10, "{r:?}");
    assert_eq!(r.sustained_interruptions, 3, "{r:?}");
    assert_eq!(r.momentary_interruptions, 1, "{r:?}");
    assert!((r.customer_minutes - 3.0 * 74.0).abs() < 1e-9, "{r:?}");
    assert!(
        (r.saifi - 0.3).abs() < 1e-9 && (r.saidi_min - 22.2).abs() < 1e-9,
        "{r:?}"
    );
    assert!(
        (r.caidi_min - 74.0).abs() < 1e-9 && (r.maifi - 0.1).abs() < 1e-9,
        "{r:?}"
    );
    assert_eq!(r.meters_down_at_end, 0, "{r:?}");
    let mut out: Vec<&str> = r
        .interruptions
        .iter()
        .map(|i| i.meter_id.as_str())
        .collect();
    out.sort_unstable();
    assert_eq!(out, ["T-0000", "T-0001", "T-0002", "T-0005"], "{r:?}");
    for i in r.interruptions.iter().filter(|i| !i.momentary) {
        assert_eq!((i.start_ts_ms, i.end_ts_ms), (ts(39) + 60_000, ts(44)));
    }

    // A range that ends before the interruptions began counts none of them.
    let mut early = request("F-0", 1);
    early.to_ts_ms = ts(30);
    let r = client
        .query()
        .get_reliability(early)
        .await
        .expect("early")
        .into_inner();
    assert_eq!(
        r.sustained_interruptions + r.momentary_interruptions,
        0,
        "{r:?}"
    );

    let e = client
        .query()
        .get_reliability(request("F-404", 1))
        .await
        .expect_err("unknown feeder");
    assert_eq!(e.code(), Code::NotFound);
    for bad in [request("F-0", 0), request("F-0", 401), request("", 1)] {
        let e = client.query().get_reliability(bad).await.expect_err("bad");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

/// Two weeks of one meter with the same daily shape every day, then holes: a 30-minute gap
/// (interpolated), a 3-hour gap (like days), 7.5 hours of zeros (flagged, kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vee_estimates_gaps_and_flags_runs_without_touching_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, client) = started(dir.path(), 1, 1).await;
    let start = base_ts() - 12 * DAY_MS;
    // Constant within each hour, so both estimates are exact.
    let shape = |k: i64| 100.0 + 10.0 * ((k % 96) / 4) as f64;
    let day = |d: i64, slot: i64| d * 96 + slot;
    let gap = |k: i64| (day(10, 41)..=day(10, 42)).contains(&k);
    let long_gap = |k: i64| (day(11, 20)..=day(11, 31)).contains(&k);
    let zeros = |k: i64| (day(12, 0)..day(12, 30)).contains(&k);
    let readings: Vec<Reading> = (0..14 * 96)
        .filter(|&k| !gap(k) && !long_gap(k))
        .map(|k| Reading {
            meter_id: meter_id(0),
            ts_ms: start + (k + 1) * QUARTER_MS,
            interval_energy_import_wh: Some(if zeros(k) { 0.0 } else { shape(k) }),
            ..Reading::default()
        })
        .collect();
    push_all(&client, &readings, 500).await;
    let request = GetValidatedIntervalsRequest {
        meter_id: meter_id(0),
        from_ts_ms: start + 10 * DAY_MS,
        to_ts_ms: start + 13 * DAY_MS,
        channel: EnergyChannel::Import as i32,
    };
    let v = client
        .query()
        .get_validated_intervals(request.clone())
        .await
        .expect("validated")
        .into_inner();
    assert_eq!(v.intervals.len(), 3 * 96);
    assert_eq!(
        (v.estimated, v.flagged, v.unestimated),
        (14, 30, 0),
        "{v:?}"
    );
    assert_eq!(v.measured, 3 * 96 - 14);
    for (i, interval) in v.intervals.iter().enumerate() {
        let k = day(10, 0) + i as i64;
        assert_eq!(interval.start_ts_ms, start + k * QUARTER_MS);
        let (rule, raw, value) = match k {
            _ if gap(k) => ("linear_interpolation", None, shape(k)),
            _ if long_gap(k) => ("like_day", None, shape(k)),
            _ if zeros(k) => ("zero_run", Some(0.0), 0.0),
            _ => ("", Some(shape(k)), shape(k)),
        };
        assert_eq!(interval.rule, rule, "interval {k}");
        assert_eq!(interval.raw_energy_wh, raw, "interval {k}");
        let got = interval.energy_wh.expect("estimated");
        assert!((got - value).abs() < 1e-9, "interval {k}: {got} vs {value}");
    }
    // The stored readings are untouched: the gaps are still gaps.
    let raw = client
        .query()
        .get_readings(gridmesh_proto::v1::GetReadingsRequest {
            meter_id: meter_id(0),
            // Readings stamped in (from, to]: the intervals of the three days.
            from_ts_ms: start + 10 * DAY_MS + 1,
            to_ts_ms: start + 13 * DAY_MS + 1,
            resolution: gridmesh_proto::v1::Resolution::Raw as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("raw")
        .into_inner();
    assert_eq!(raw.readings.len(), 3 * 96 - 14);

    // Intervals that have not ended are not listed (nor estimated), however far `to` reaches.
    let mut ahead = request.clone();
    ahead.from_ts_ms = start + 13 * DAY_MS;
    ahead.to_ts_ms = gridmesh_actors::context::now_ms() + DAY_MS;
    let v = client
        .query()
        .get_validated_intervals(ahead)
        .await
        .expect("validated up to now")
        .into_inner();
    let now = gridmesh_actors::context::now_ms();
    assert!(v.intervals.len() >= 96, "{}", v.intervals.len());
    assert!(
        v.intervals
            .iter()
            .all(|i| i.start_ts_ms + QUARTER_MS <= now)
    );

    let mut unknown = request.clone();
    unknown.meter_id = "T-9999".into();
    let e = client
        .query()
        .get_validated_intervals(unknown)
        .await
        .expect_err("unknown meter");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut long = request.clone();
    long.to_ts_ms = long.from_ts_ms + 93 * DAY_MS;
    let mut channel = request;
    channel.channel = 7;
    for bad in [long, channel] {
        let e = client
            .query()
            .get_validated_intervals(bad)
            .await
            .expect_err("bad");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

/// Ten weeks of one meter with a daily shape and a weekly rhythm; on day 60 it reads zero for
/// two and a half hours where it usually consumes, and from day 63 on it reports 35 % less
/// (theft-like). Both are found in the last two weeks; the eight weeks before are quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_find_zero_runs_and_steps_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, client) = started(dir.path(), 1, 1).await;
    let start = base_ts() - 68 * DAY_MS;
    let shape = |k: i64| {
        let slot = k % 96;
        let weekday = (k / 96) % 7;
        100.0 + 10.0 * (slot / 4) as f64 + 5.0 * weekday as f64 + (k % 5) as f64
    };
    let value = |k: i64| match (k / 96, k % 96) {
        (60, 40..=49) => 0.0,
        (d, _) if d >= 63 => 0.65 * shape(k),
        _ => shape(k),
    };
    let readings: Vec<Reading> = (0..70 * 96)
        .map(|k| Reading {
            meter_id: meter_id(0),
            ts_ms: start + (k + 1) * QUARTER_MS,
            interval_energy_import_wh: Some(value(k)),
            ..Reading::default()
        })
        .collect();
    push_all(&client, &readings, 1000).await;
    let request = |from_day: i64, to_day: i64| GetMeterAnomaliesRequest {
        meter_id: meter_id(0),
        from_ts_ms: start + from_day * DAY_MS,
        to_ts_ms: start + to_day * DAY_MS,
    };
    let a = client
        .query()
        .get_meter_anomalies(request(56, 70))
        .await
        .expect("anomalies")
        .into_inner();
    assert_eq!(a.intervals, 14 * 96, "{a:?}");
    let kinds: Vec<&str> = a.anomalies.iter().map(|x| x.kind.as_str()).collect();
    assert!(kinds.contains(&"zero_run"), "{a:?}");
    assert!(kinds.contains(&"consumption_step"), "{a:?}");
    let zero = a
        .anomalies
        .iter()
        .find(|x| x.kind == "zero_run")
        .expect("zero run");
    assert_eq!(
        zero.since_ts_ms,
        start + (60 * 96 + 40) * QUARTER_MS,
        "{zero:?}"
    );
    assert!(zero.cleared_ts_ms > zero.raised_ts_ms, "{zero:?}");
    let step = a
        .anomalies
        .iter()
        .find(|x| x.kind == "consumption_step")
        .expect("step");
    assert!(step.since_ts_ms >= start + 63 * DAY_MS, "{step:?}");
    assert_eq!(step.cleared_ts_ms, 0, "still open at the end: {step:?}");

    let quiet = client
        .query()
        .get_meter_anomalies(request(28, 56))
        .await
        .expect("quiet weeks")
        .into_inner();
    assert!(quiet.anomalies.is_empty(), "{quiet:?}");

    let mut unknown = request(56, 70);
    unknown.meter_id = "T-9999".into();
    let e = client
        .query()
        .get_meter_anomalies(unknown)
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = client
        .query()
        .get_meter_anomalies(request(0, 93))
        .await
        .expect_err("too long");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

/// A meter's aggregates over `[range.0, range.1)`.
async fn meter_days(
    client: &gridmesh_proto::client::Client,
    meter: &str,
    range: (i64, i64),
    recompute: bool,
) -> gridmesh_proto::v1::GetAggregatesResponse {
    client
        .query()
        .get_aggregates(GetAggregatesRequest {
            meter_id: meter.to_owned(),
            from_ts_ms: range.0,
            to_ts_ms: range.1,
            recompute,
            ..GetAggregatesRequest::default()
        })
        .await
        .expect("aggregates")
        .into_inner()
}

/// Polls (bounded) until `days` of the meter's days come from stored rows; the last answer.
async fn wait_stored(
    client: &gridmesh_proto::client::Client,
    meter: &str,
    range: (i64, i64),
    days: u32,
) -> gridmesh_proto::v1::GetAggregatesResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = meter_days(client, meter, range, false).await;
        if answer.stored_days >= days || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A meter actor stores each local day's aggregate when a reading opens the next day; the
/// query answers those days from the rows, equal to recomputing them from the readings. A
/// late reading for a closed day drops its row in the same write, and the rows survive a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_days_are_stored_and_a_late_reading_drops_its_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, client) = started(dir.path(), 1, 2).await;
    let meter = meter_id(0);
    // Three UTC days back from today's midnight: days 0 and 1 whole (but for interval 10),
    // then two hours of day 2, which stays open.
    let base = base_ts() - DAY_MS;
    let sample = |k: i64| Reading {
        meter_id: meter.clone(),
        ts_ms: base + (k + 1) * QUARTER_MS,
        interval_energy_import_wh: Some(((k * 13) % 29 + 1) as f64 * 10.0),
        interval_energy_export_wh: Some((k % 5) as f64),
        ..Reading::default()
    };
    let readings: Vec<Reading> = (0..2 * 96 + 8).filter(|k| *k != 10).map(sample).collect();
    push_all(&client, &readings, 50).await;

    let range = (base, base + 3 * DAY_MS);
    let ask = |recompute: bool| meter_days(&client, &meter, range, recompute);
    // The day rows are written just after the batch that closed each day.
    let stored = wait_stored(&client, &meter, range, 2).await;
    assert_eq!(stored.stored_days, 2, "days 0 and 1 closed: {stored:?}");
    let same = |a: &gridmesh_proto::v1::GetAggregatesResponse,
                b: &gridmesh_proto::v1::GetAggregatesResponse| {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
        assert_eq!(a.days.len(), b.days.len());
        for (x, y) in a.days.iter().zip(&b.days) {
            assert_eq!(
                (&x.date, x.intervals, x.max_demand_ts_ms),
                (&y.date, y.intervals, y.max_demand_ts_ms)
            );
            assert!(close(x.import_wh, y.import_wh) && close(x.export_wh, y.export_wh));
            assert!(close(x.max_demand_w, y.max_demand_w) && close(x.load_factor, y.load_factor));
            for (s, t) in x.tou.iter().zip(&y.tou) {
                assert!(close(s.import_wh, t.import_wh) && close(s.max_demand_w, t.max_demand_w));
            }
        }
        assert_eq!(a.months.len(), b.months.len());
        for (x, y) in a.months.iter().zip(&b.months) {
            assert_eq!((x.days, x.intervals), (y.days, y.intervals));
            assert!(close(x.import_wh, y.import_wh) && close(x.max_demand_w, y.max_demand_w));
        }
    };
    let recomputed = ask(true).await;
    assert_eq!(recomputed.stored_days, 0);
    same(&stored, &recomputed);
    assert_eq!(stored.days[0].intervals, 95, "interval 10 is missing");

    // Another meter's whole backlog in one batch closes both days at once.
    let other = meter_id(1);
    let backlog: Vec<Reading> = (0..2 * 96 + 8)
        .map(|k| Reading {
            meter_id: other.clone(),
            ..sample(k)
        })
        .collect();
    push_all(&client, &backlog, backlog.len()).await;
    let both = wait_stored(&client, &other, range, 2).await;
    assert_eq!(
        both.stored_days, 2,
        "both days of one batch stored: {both:?}"
    );

    // The missing interval arrives late: day 0's row goes with it, day 1's stays.
    push_all(&client, &[sample(10)], 1).await;
    let after = ask(false).await;
    assert_eq!(after.stored_days, 1, "{after:?}");
    assert_eq!(after.days[0].intervals, 96);
    let energy = sample(10).interval_energy_import_wh.expect("energy");
    assert!((after.days[0].import_wh - stored.days[0].import_wh - energy).abs() < 1e-9);
    same(&after, &ask(true).await);

    // Rows are on disk: a restarted node answers day 1 from its row again.
    node.terminate(std::time::Duration::from_secs(30))
        .expect("SIGTERM");
    node.start().expect("restart");
    let client = connect(&node).await;
    let again = meter_days(&client, &meter, range, false).await;
    assert_eq!(again.stored_days, 1);
    same(&again, &after);
}
