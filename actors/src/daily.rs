//! Daily aggregates computed when a meter's local day closes, stored, and used by
//! `GetAggregates` in place of the day's 15-minute intervals.
//!
//! **When.** A meter actor closes a local day (the deployment's `analytics.utc_offset_minutes`)
//! when a reading opens a 15-minute interval of a later day: meter time, like the feeder's
//! midnight rules, so a simulator running days in minutes closes days as they pass. It then
//! waits until its own writes are applied (the day's last readings may still be queued in
//! the group-commit writer), reads the day's readings from its node's store, and writes one
//! row: the day's [`DailyMeter`] (energy, maximum demand, load factor, and per tariff bucket
//! energy and maximum demand). Every node holding a copy of the meter does this for its own
//! copy, since every stored reading, a client's or a replica's, passes through the meter's
//! actor on that node.
//!
//! **Never stale.** A reading stored later for a closed day (late data, a correction, a
//! hinted handoff or an anti-entropy copy) deletes that day's row in the same atomic batch,
//! so a query recomputes the day from readings until the next close rewrites it, and a
//! deleted reading (`Forget`) deletes its day's row the same way. A row also records which
//! tariff configuration it was computed with, and a row of another one is ignored.
//!
//! **Decision: rows are a cache of an exact computation, not the source.** Readings stay the
//! only source of truth; a query uses a day's row when this node has one and falls back to
//! the readings (cluster-wide) for any other day, and `GetAggregatesRequest.recompute` skips
//! the rows altogether. What a row can miss: readings of the day this node's copy did not have
//! yet when the day closed and that reach it afterwards — those delete the row when they land.

use gridmesh_analytics::aggregate::{self, DailyMeter, IntervalEnergy};
use gridmesh_analytics::tariff::TariffCalendar;
use gridmesh_config::AnalyticsConfig;
use xxhash_rust::xxh3::xxh3_64;

use gridmesh_proto::v1::{MeterInterval, Resolution};

use crate::buckets::{Bucket, MIN15_MS};
use crate::keys;
use crate::query::{MAX_SCAN, ScanWindow};
use crate::storage::Store;
use crate::writer::{Row, Space};

/// Format byte of a stored row: then the tariff fingerprint (u64, big-endian), then the
/// postcard encoding of the day's [`DailyMeter`].
const FORMAT: u8 = 1;

/// The tariff calendar daily aggregates are computed with, and a fingerprint of the
/// configuration it came from (rows of another configuration are not used).
#[derive(Debug)]
pub struct DailyTariff {
    /// The calendar (offset and tariff buckets).
    pub calendar: TariffCalendar,
    /// Hash of the offset and tariff periods.
    pub fingerprint: u64,
}

impl DailyTariff {
    /// The deployment's calendar; `None` when the analytics are off or the tariff does not
    /// build (the node refuses to start then).
    pub fn from_config(analytics: &AnalyticsConfig) -> Option<Self> {
        if !analytics.enabled {
            return None;
        }
        let calendar = analytics.tariff_calendar().ok()?;
        let described = serde_json::to_vec(&(analytics.utc_offset_minutes, &analytics.tariff))
            .unwrap_or_default();
        Some(Self {
            calendar,
            fingerprint: xxh3_64(&described),
        })
    }

    /// Whether local days are whole 15-minute intervals (offsets in steps of 15 minutes, as
    /// every real one is); only then can a day's row stand in for its intervals.
    pub fn aligned(&self) -> bool {
        let start = self.calendar.offset().day_start_ms(0);
        start.rem_euclid(MIN15_MS) == 0
    }

    /// The local day of the 15-minute interval starting at `start_ts_ms`.
    pub fn day_of_interval(&self, start_ts_ms: i64) -> i64 {
        self.calendar.offset().day(start_ts_ms)
    }

    /// The local day a reading stamped `ts_ms` counts in (that of the interval it closes).
    pub fn day_of_reading(&self, ts_ms: i64) -> i64 {
        self.day_of_interval(Bucket::Min15.start_of(ts_ms))
    }

    /// First and last-plus-one interval start of a local day, ms.
    pub fn day_bounds(&self, day: i64) -> (i64, i64) {
        let offset = self.calendar.offset();
        (offset.day_start_ms(day), offset.day_start_ms(day + 1))
    }

    /// The stored value of a day's aggregate.
    pub fn encode(&self, day: &DailyMeter) -> Option<Vec<u8>> {
        let mut value = vec![FORMAT];
        value.extend_from_slice(&self.fingerprint.to_be_bytes());
        postcard::to_extend(day, value).ok()
    }

    /// A stored day, when it is of this format and tariff.
    pub fn decode(&self, bytes: &[u8]) -> Option<DailyMeter> {
        let (&format, rest) = bytes.split_first()?;
        let (fingerprint, rest) = rest.split_at_checked(8)?;
        if format != FORMAT || fingerprint != self.fingerprint.to_be_bytes() {
            return None;
        }
        postcard::from_bytes(rest).ok()
    }
}

/// The energy of a quarter-hour interval of a `GetReadings` answer.
pub fn interval_energy(i: &MeterInterval) -> IntervalEnergy {
    IntervalEnergy {
        start_ts_ms: i.start_ts_ms,
        import_wh: i.energy_import_wh,
        export_wh: i.energy_export_wh,
    }
}

/// A meter's 15-minute interval energies in this node's store, for intervals starting in
/// `[from, to)`, shaped exactly as `GetReadings` at quarter-hour resolution shapes them (so a
/// stored day equals the day a query computes from the same readings).
pub fn stored_intervals(
    store: &Store,
    meter: &str,
    from: i64,
    to: i64,
) -> Result<Vec<IntervalEnergy>, String> {
    // A day holds 96 intervals; the scan window's own caps are far above.
    let scan = ScanWindow::new(from, to, Resolution::QuarterHour, 0, MAX_SCAN)
        .map_err(|e| e.to_string())?;
    let rows = store
        .readings_between(meter, scan.from, scan.to, scan.max)
        .map_err(|e| e.to_string())?;
    Ok(scan
        .shape(rows)
        .intervals
        .iter()
        .map(interval_energy)
        .collect())
}

/// The row of `meter`'s local `day` computed from this node's store: a put of the day's
/// aggregate, or a delete when the day has no intervals here.
pub fn day_row(store: &Store, tariff: &DailyTariff, meter: &str, day: i64) -> Result<Row, String> {
    let (from, to) = tariff.day_bounds(day);
    let intervals = stored_intervals(store, meter, from, to)?;
    let key = keys::daily_key(meter, day);
    let computed = aggregate::daily_meter(&intervals, MIN15_MS, &tariff.calendar)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.day == day);
    Ok(match computed.as_ref().and_then(|d| tariff.encode(d)) {
        Some(value) => Row::put(Space::Daily, key, value),
        None => Row::delete(Space::Daily, key),
    })
}

/// The delete of a day's row (a reading of that day changed).
pub fn stale(meter: &str, day: i64) -> Row {
    Row::delete(Space::Daily, keys::daily_key(meter, day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tariff(offset_minutes: i32) -> DailyTariff {
        let analytics = AnalyticsConfig {
            utc_offset_minutes: offset_minutes,
            ..AnalyticsConfig::default()
        };
        DailyTariff::from_config(&analytics).expect("the default tariff builds")
    }

    #[test]
    fn a_row_round_trips_only_under_its_own_tariff() {
        let utc = tariff(0);
        let intervals: Vec<IntervalEnergy> = (0..96)
            .map(|i| IntervalEnergy {
                start_ts_ms: 20_000 * 86_400_000 + i * MIN15_MS,
                import_wh: 10.0 + i as f64,
                export_wh: 0.0,
            })
            .collect();
        let day = aggregate::daily_meter(&intervals, MIN15_MS, &utc.calendar).expect("day");
        let bytes = utc.encode(&day[0]).expect("encodes");
        assert_eq!(utc.decode(&bytes), Some(day[0].clone()));
        assert_eq!(tariff(60).decode(&bytes), None, "another offset");
        assert_eq!(utc.decode(&bytes[..5]), None, "truncated");
        assert_eq!(utc.decode(&[]), None);
    }

    #[test]
    fn readings_count_in_the_day_of_the_interval_they_close() {
        let cet = tariff(60);
        let midnight = cet.day_bounds(20_000).0;
        // The reading stamped at local midnight closes 23:45-24:00 of the day before.
        assert_eq!(cet.day_of_reading(midnight), 19_999);
        assert_eq!(cet.day_of_reading(midnight + 1), 20_000);
        assert!(cet.aligned());
        assert!(!tariff(7).aligned());
    }
}
