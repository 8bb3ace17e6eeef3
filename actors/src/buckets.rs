//! UTC interval buckets and the running sums kept per bucket.
//!
//! Interval readings are stamped at the *end* of the interval they measure, so a reading with
//! timestamp `t` belongs to the bucket containing `t - 1 ms`: the 15-minute reading stamped
//! 10:15:00 covers [10:00, 10:15). Buckets are aligned to the Unix epoch in UTC, so they never
//! shift with daylight saving time and every node computes the same boundaries.

use gridmesh_proto::internal::BucketAccumulator;
use gridmesh_proto::v1::{ChannelStats, MeterInterval, Reading, Resolution};

/// Length of a 15-minute bucket, ms.
pub const MIN15_MS: i64 = 15 * 60 * 1000;
/// Length of an hour bucket, ms.
pub const HOUR_MS: i64 = 60 * 60 * 1000;
/// Length of a day bucket, ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// An aggregation bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// 15 minutes.
    Min15,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Bucket {
    /// All sizes, smallest first.
    pub const ALL: [Bucket; 3] = [Bucket::Min15, Bucket::Hour, Bucket::Day];

    /// Bucket length in ms.
    pub const fn len_ms(self) -> i64 {
        match self {
            Bucket::Min15 => MIN15_MS,
            Bucket::Hour => HOUR_MS,
            Bucket::Day => DAY_MS,
        }
    }

    /// Start of the bucket a reading stamped `ts_ms` belongs to.
    pub fn start_of(self, ts_ms: i64) -> i64 {
        let len = self.len_ms();
        (ts_ms - 1).div_euclid(len) * len
    }

    /// The bucket size of an API resolution; `None` for raw (or unspecified).
    pub fn from_resolution(resolution: Resolution) -> Option<Bucket> {
        match resolution {
            Resolution::QuarterHour => Some(Bucket::Min15),
            Resolution::Hour => Some(Bucket::Hour),
            Resolution::Day => Some(Bucket::Day),
            Resolution::Raw | Resolution::Unspecified => None,
        }
    }
}

/// An empty accumulator for the bucket starting at `start_ts_ms`.
pub fn empty_accumulator(start_ts_ms: i64) -> BucketAccumulator {
    BucketAccumulator {
        start_ts_ms,
        power_min_w: f64::INFINITY,
        power_max_w: f64::NEG_INFINITY,
        voltage_min_v: f64::INFINITY,
        voltage_max_v: f64::NEG_INFINITY,
        reactive_min_var: f64::INFINITY,
        reactive_max_var: f64::NEG_INFINITY,
        ..BucketAccumulator::default()
    }
}

/// Adds one reading's channels to an accumulator.
pub fn accumulate(acc: &mut BucketAccumulator, reading: &Reading) {
    acc.reading_count += 1;
    if let Some(wh) = reading.interval_energy_import_wh {
        acc.energy_import_wh += wh;
        acc.energy_import_count += 1;
    }
    acc.energy_export_wh += reading.interval_energy_export_wh.unwrap_or(0.0);
    if let Some(p) = reading.active_power_w {
        acc.power_count += 1;
        acc.power_sum_w += p;
        acc.power_min_w = acc.power_min_w.min(p);
        acc.power_max_w = acc.power_max_w.max(p);
    }
    if let Some(q) = reading.reactive_power_var {
        acc.reactive_count += 1;
        acc.reactive_sum_var += q;
        acc.reactive_min_var = acc.reactive_min_var.min(q);
        acc.reactive_max_var = acc.reactive_max_var.max(q);
    }
    for v in phase_values(reading.voltage_v.as_ref()) {
        acc.voltage_count += 1;
        acc.voltage_sum_v += v;
        acc.voltage_min_v = acc.voltage_min_v.min(v);
        acc.voltage_max_v = acc.voltage_max_v.max(v);
    }
}

/// Combines two accumulators of the same bucket.
pub fn merge(into: &mut BucketAccumulator, other: &BucketAccumulator) {
    into.reading_count += other.reading_count;
    into.energy_import_wh += other.energy_import_wh;
    into.energy_import_count += other.energy_import_count;
    into.energy_export_wh += other.energy_export_wh;
    into.power_count += other.power_count;
    into.power_sum_w += other.power_sum_w;
    into.power_min_w = into.power_min_w.min(other.power_min_w);
    into.power_max_w = into.power_max_w.max(other.power_max_w);
    into.reactive_count += other.reactive_count;
    into.reactive_sum_var += other.reactive_sum_var;
    into.reactive_min_var = into.reactive_min_var.min(other.reactive_min_var);
    into.reactive_max_var = into.reactive_max_var.max(other.reactive_max_var);
    into.voltage_count += other.voltage_count;
    into.voltage_sum_v += other.voltage_sum_v;
    into.voltage_min_v = into.voltage_min_v.min(other.voltage_min_v);
    into.voltage_max_v = into.voltage_max_v.max(other.voltage_max_v);
}

/// The values present in a per-phase channel.
pub fn phase_values(phases: Option<&gridmesh_proto::v1::PhaseValues>) -> impl Iterator<Item = f64> {
    phases
        .into_iter()
        .flat_map(|p| [p.l1, p.l2, p.l3])
        .flatten()
}

/// The API view of an accumulator.
pub fn to_interval(acc: &BucketAccumulator, bucket: Bucket) -> MeterInterval {
    let stats = |count: u32, sum: f64, min: f64, max: f64| {
        (count > 0).then(|| ChannelStats {
            count,
            mean: sum / f64::from(count),
            min,
            max,
        })
    };
    MeterInterval {
        start_ts_ms: acc.start_ts_ms,
        end_ts_ms: acc.start_ts_ms + bucket.len_ms(),
        reading_count: acc.reading_count,
        energy_import_wh: acc.energy_import_wh,
        energy_export_wh: acc.energy_export_wh,
        active_power_w: stats(
            acc.power_count,
            acc.power_sum_w,
            acc.power_min_w,
            acc.power_max_w,
        ),
        reactive_power_var: stats(
            acc.reactive_count,
            acc.reactive_sum_var,
            acc.reactive_min_var,
            acc.reactive_max_var,
        ),
        voltage_v: stats(
            acc.voltage_count,
            acc.voltage_sum_v,
            acc.voltage_min_v,
            acc.voltage_max_v,
        ),
    }
}

/// Aggregates time-ordered readings into buckets (only buckets with readings are returned).
pub fn aggregate<'a>(
    readings: impl IntoIterator<Item = (i64, &'a Reading)>,
    bucket: Bucket,
) -> Vec<BucketAccumulator> {
    let mut out: Vec<BucketAccumulator> = Vec::new();
    for (ts_ms, reading) in readings {
        let start = bucket.start_of(ts_ms);
        match out.last_mut() {
            Some(acc) if acc.start_ts_ms == start => accumulate(acc, reading),
            _ => {
                let mut acc = empty_accumulator(start);
                accumulate(&mut acc, reading);
                out.push(acc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reading(import_wh: f64, power_w: f64) -> Reading {
        Reading {
            interval_energy_import_wh: Some(import_wh),
            active_power_w: Some(power_w),
            ..Reading::default()
        }
    }

    #[test]
    fn end_stamped_readings_fall_in_the_interval_they_close() {
        let ten_fifteen = 1_700_000_100_000 / MIN15_MS * MIN15_MS; // some aligned instant
        assert_eq!(Bucket::Min15.start_of(ten_fifteen), ten_fifteen - MIN15_MS);
        assert_eq!(Bucket::Min15.start_of(ten_fifteen + 1), ten_fifteen);
        assert_eq!(Bucket::Day.start_of(DAY_MS * 20_000), DAY_MS * 19_999);
    }

    proptest! {
        #[test]
        fn every_timestamp_lies_in_its_bucket(ts in 946_684_800_000i64..4_102_444_800_000i64) {
            for bucket in Bucket::ALL {
                let start = bucket.start_of(ts);
                prop_assert!(start < ts && ts <= start + bucket.len_ms());
                prop_assert_eq!(start % bucket.len_ms(), 0);
            }
            // Coarser buckets contain the finer ones: a day holds exactly 96 quarter-hours.
            let q = Bucket::Min15.start_of(ts);
            prop_assert_eq!(Bucket::Day.start_of(q + 1), Bucket::Day.start_of(ts));
            prop_assert_eq!(Bucket::Hour.start_of(q + 1), Bucket::Hour.start_of(ts));
        }

        #[test]
        fn aggregation_equals_the_sum_however_it_is_split(
            values in prop::collection::vec((0.0f64..5000.0, -5000.0f64..5000.0), 1..200),
            split in 0usize..200,
        ) {
            let readings: Vec<Reading> = values.iter().map(|(e, p)| reading(*e, *p)).collect();
            let split = split.min(readings.len());
            let mut whole = empty_accumulator(0);
            readings.iter().for_each(|r| accumulate(&mut whole, r));
            let mut left = empty_accumulator(0);
            let mut right = empty_accumulator(0);
            readings[..split].iter().for_each(|r| accumulate(&mut left, r));
            readings[split..].iter().for_each(|r| accumulate(&mut right, r));
            merge(&mut left, &right);

            let total: f64 = values.iter().map(|(e, _)| e).sum();
            prop_assert_eq!(left.reading_count, whole.reading_count);
            prop_assert!((left.energy_import_wh - total).abs() < 1e-6 * total.max(1.0));
            prop_assert_eq!(left.power_max_w, whole.power_max_w);
            prop_assert_eq!(left.power_min_w, whole.power_min_w);
        }

        #[test]
        fn aggregate_puts_each_reading_in_exactly_one_bucket(
            offsets in prop::collection::btree_set(1i64..(3 * DAY_MS), 1..300)
        ) {
            let base = 1_600_000_000_000 / DAY_MS * DAY_MS;
            let r = reading(1.0, 1.0);
            let items: Vec<(i64, &Reading)> = offsets.iter().map(|o| (base + o, &r)).collect();
            for bucket in Bucket::ALL {
                let accs = aggregate(items.iter().copied(), bucket);
                let counted: u32 = accs.iter().map(|a| a.reading_count).sum();
                prop_assert_eq!(counted as usize, items.len());
                prop_assert!(accs.windows(2).all(|w| w[0].start_ts_ms < w[1].start_ts_ms));
            }
        }
    }
}
