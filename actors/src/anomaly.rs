//! Live anomaly alerts of one meter: the meter actor feeds its
//! [`MeterAnomalyDetector`] every 15-minute interval as it closes, on the meter's primary
//! (copies on replicas raise nothing), and hands the events to the alert manager.
//!
//! The detector keeps four weeks of every time-of-week slot (about 11 KiB per meter), too
//! much to rebuild from the readings on every activation. It is persisted when the actor
//! passivates (`anomaly` keyspace: a format byte, then postcard) and, on the next activation,
//! caught up on the intervals stored since; what those intervals raise or clear is reported
//! then (the alert manager folds a repeated raise into the open alert). A meter without a
//! usable persisted detector (first activation, a new primary after a failover, a crash
//! before any passivation, changed rules) warms a fresh one up on up to nine weeks of its
//! stored import energy without reporting: conditions found open then were raised by the
//! actor that saw them happen.
//!
//! Only buckets holding at least one interval import energy are fed (a meter that reports no
//! interval energy is never judged on it).

use gridmesh_analytics::alert::AlertEvent;
use gridmesh_analytics::anomaly::{AnomalyRules, MeterAnomalyDetector};
use gridmesh_analytics::time::LocalOffset;
use gridmesh_config::AnalyticsConfig;
use gridmesh_proto::internal::BucketAccumulator;

use crate::buckets::{Bucket, MIN15_MS};
use crate::storage::{Store, StoreError};
use crate::writer::{Row, Space};

/// Format byte of the persisted detector. 2: the interval ring is stored sparsely. A row of
/// another format is not decoded: the detector is rebuilt from the stored readings.
const FORMAT: u8 = 2;

/// Days of stored import energy a fresh detector warms up on (the step rule's same-weekday
/// baseline needs about eight weeks).
pub const WARM_UP_DAYS: i64 = 63;

/// Most readings read for one warm-up or catch-up (63 days of 1-minute data).
const MAX_READINGS: usize = 63 * 1_440;

/// One meter's live anomaly rules.
#[derive(Debug)]
pub struct LiveAnomaly {
    detector: MeterAnomalyDetector,
    /// Changed since it was loaded (then it is persisted at passivation).
    changed: bool,
}

/// The anomaly rules of a deployment (`[analytics]`), as the live alerts and the
/// `GetMeterAnomalies` query both run them.
pub fn deployment_rules(
    config: &AnalyticsConfig,
) -> Result<AnomalyRules, gridmesh_analytics::AnalyticsError> {
    let rules = AnomalyRules {
        offset: LocalOffset::new(config.utc_offset_minutes)?,
        z_threshold: config.anomaly_z_threshold,
        ..AnomalyRules::default()
    };
    rules.validate()?;
    Ok(rules)
}

/// The live anomaly rules, or `None` when live anomaly alerts are off.
pub fn rules(config: &AnalyticsConfig) -> Option<AnomalyRules> {
    if !config.enabled || !config.anomaly_alerts {
        return None;
    }
    deployment_rules(config).ok()
}

impl LiveAnomaly {
    /// The detector of `meter` ready to judge the interval starting at `next_start`: the
    /// persisted one caught up on the stored intervals since (with their events), or a fresh
    /// one warmed up on the stored history (no events).
    pub fn load(
        store: &Store,
        meter: &str,
        rules: AnomalyRules,
        next_start: i64,
    ) -> Result<(LiveAnomaly, Vec<AlertEvent>), LoadError> {
        let earliest = next_start - WARM_UP_DAYS * 86_400_000;
        let persisted = store
            .anomaly_state(meter)?
            .and_then(|bytes| decode(&bytes))
            .filter(|d| *d.rules() == rules);
        let (mut detector, report) = match persisted {
            Some(d) => (d, true),
            None => (MeterAnomalyDetector::new(meter, rules)?, false),
        };
        let from = detector
            .last_interval_start_ms()
            .map_or(earliest, |last| last + MIN15_MS)
            .max(earliest);
        let mut events = Vec::new();
        let intervals = stored_intervals(store, meter, from, next_start)?;
        let changed = !report || !intervals.is_empty();
        for (start, wh) in intervals {
            let verdict = detector.observe_interval(start, wh);
            if report {
                events.extend(verdict.events);
            }
        }
        Ok((LiveAnomaly { detector, changed }, events))
    }

    /// Feeds the buckets that closed, oldest first; returns the events.
    pub fn observe_closed<'a>(
        &mut self,
        closed: impl IntoIterator<Item = &'a BucketAccumulator>,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for bucket in closed {
            if bucket.energy_import_count == 0 {
                continue;
            }
            self.changed = true;
            events.extend(
                self.detector
                    .observe_interval(bucket.start_ts_ms, bucket.energy_import_wh)
                    .events,
            );
        }
        events
    }

    /// The row that persists the detector, when it changed since it was loaded.
    pub fn row(&self, meter: &str) -> Option<Row> {
        if !self.changed {
            return None;
        }
        let value = vec![FORMAT];
        postcard::to_extend(&self.detector, value)
            .ok()
            .map(|value| Row::put(Space::Anomaly, meter.as_bytes().to_vec(), value))
    }
}

fn decode(bytes: &[u8]) -> Option<MeterAnomalyDetector> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// The meter's stored 15-minute import energy over `[from, to)` (interval starts), only
/// intervals holding at least one reading with the channel.
fn stored_intervals(
    store: &Store,
    meter: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    if from >= to {
        return Ok(out);
    }
    // A reading stamped t belongs to the interval holding t - 1: the range is (from, to].
    for (ts, reading) in store.readings_between(meter, from + 1, to + 1, MAX_READINGS)? {
        let Some(wh) = reading.interval_energy_import_wh else {
            continue;
        };
        let start = Bucket::Min15.start_of(ts);
        match out.last_mut() {
            Some((last, sum)) if *last == start => *sum += wh,
            _ => out.push((start, wh)),
        }
    }
    Ok(out)
}

/// Why a detector could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rules were refused.
    #[error("anomaly rules: {0}")]
    Rules(#[from] gridmesh_analytics::AnalyticsError),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gridmesh_analytics::alert::AlertKind;
    use gridmesh_config::StorageConfig;
    use gridmesh_proto::v1::Reading;

    use super::*;
    use crate::keys;
    use crate::writer::{WriteCursor, WriteRequest, Writer};

    #[test]
    fn a_detector_survives_its_encoding_and_a_foreign_format_is_refused() {
        let mut d = MeterAnomalyDetector::new("m", AnomalyRules::default()).unwrap();
        for i in 0..500 {
            d.observe_interval(i * MIN15_MS, (i % 7) as f64 + 1.0);
        }
        let live = LiveAnomaly {
            detector: d.clone(),
            changed: true,
        };
        let row = live.row("m").expect("changed: persisted");
        let bytes = row.value.expect("a put");
        // The ring holds NaN for missing values, so compare what the two would persist.
        let decoded = decode(&bytes).expect("decodes");
        assert_eq!(format!("{decoded:?}"), format!("{d:?}"));
        assert_eq!(
            postcard::to_allocvec(&decoded).unwrap(),
            postcard::to_allocvec(&d).unwrap()
        );
        let mut a = decoded;
        let mut b = d;
        assert_eq!(
            a.observe_interval(500 * MIN15_MS, 40.0),
            b.observe_interval(500 * MIN15_MS, 40.0),
            "the decoded detector judges the next interval as the original does"
        );
        assert!(decode(&[FORMAT + 1, 0, 0]).is_none());
        assert!(decode(&[]).is_none());
        let unchanged = LiveAnomaly {
            detector: live.detector,
            changed: false,
        };
        assert!(unchanged.row("m").is_none());
    }

    /// Stores `intervals` identical 15-minute readings of meter `m` (interval `i` is stamped
    /// at its end), plus `extra` rows, through a real writer.
    async fn store_with(intervals: i64, extra: Vec<Row>) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), 4, 8).expect("open store"));
        let (writer, _task) =
            Writer::spawn(store.clone(), &StorageConfig::default()).expect("spawn");
        let mut rows = extra;
        for i in 0..intervals {
            let ts_ms = BASE + (i + 1) * MIN15_MS;
            let reading = Reading {
                ts_ms,
                interval_energy_import_wh: Some(123.0),
                ..Reading::default()
            };
            rows.push(Row::put(
                Space::Readings,
                keys::reading_key("m", ts_ms),
                crate::storage::encode_reading(&reading),
            ));
        }
        let cursor = Arc::new(WriteCursor::default());
        let seq = cursor.next_seq();
        writer
            .submit(WriteRequest {
                rows,
                cursor: Some((cursor.clone(), seq)),
                completion: None,
            })
            .await
            .expect("submit");
        cursor.wait_applied().await;
        (dir, store)
    }

    /// A Monday, so that no day boundary logic depends on the weekday.
    const BASE: i64 = 1_704_067_200_000;

    fn frozen_raises(events: &[AlertEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, AlertEvent::Raise(r) if r.key.kind == AlertKind::FrozenRun))
            .count()
    }

    #[tokio::test]
    async fn a_fresh_detector_warms_up_silently_and_a_persisted_one_reports_its_catch_up() {
        let rules = AnomalyRules::default();
        let next = BASE + 13 * MIN15_MS;

        // No persisted detector: thirteen frozen intervals are history, not news.
        let (_dir, store) = store_with(13, Vec::new()).await;
        let (mut live, events) = LiveAnomaly::load(&store, "m", rules, next).expect("load");
        assert!(events.is_empty(), "warm-up reports nothing: {events:?}");
        assert!(live.changed, "a warmed-up detector is worth persisting");
        let later = BucketAccumulator {
            start_ts_ms: next,
            energy_import_wh: 123.0,
            energy_import_count: 1,
            ..BucketAccumulator::default()
        };
        assert_eq!(
            frozen_raises(&live.observe_closed([&later])),
            0,
            "the run it warmed up on is already open"
        );

        // Persisted after six intervals: the six stored since are caught up, and the run that
        // completed among them is reported once.
        let mut seen = MeterAnomalyDetector::new("m", rules).expect("rules");
        for i in 0..6 {
            seen.observe_interval(BASE + i * MIN15_MS, 123.0);
        }
        let row = LiveAnomaly {
            detector: seen,
            changed: true,
        }
        .row("m")
        .expect("row");
        let (_dir, store) = store_with(13, vec![row]).await;
        let (live, events) = LiveAnomaly::load(&store, "m", rules, next).expect("load");
        assert_eq!(frozen_raises(&events), 1, "{events:?}");
        assert_eq!(
            live.detector.last_interval_start_ms(),
            Some(BASE + 12 * MIN15_MS)
        );

        // Other rules than the persisted ones: the state is not trusted, a fresh one warms up.
        let other = AnomalyRules {
            z_threshold: rules.z_threshold + 1.0,
            ..rules
        };
        let (_, events) = LiveAnomaly::load(&store, "m", other, next).expect("load");
        assert!(events.is_empty(), "{events:?}");
    }
}
