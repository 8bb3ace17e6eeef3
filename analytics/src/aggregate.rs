//! Batch aggregates: daily per meter, monthly billing determinants, feeder daily peaks.
//!
//! All functions take interval values (by interval start) and group them by *local* day of
//! the tariff calendar's offset, so a billing day is the customer's day, not UTC's. They are
//! pure and recompute from whatever range they are given: a meter actor runs [`daily_meter`]
//! when its local day closes and stores the day, and queries run them on demand for any
//! range from stored intervals (building months from stored days with
//! [`monthly_from_days`]), so a late reading or a correction is reflected by recomputing,
//! never by patching a sum.
//!
//! Demand is the mean power over one interval, `energy_wh · 3.6e6 / interval_ms` W, so with
//! 15-minute data the maximum demand is the usual 15-minute demand. Load factor is the mean
//! demand over the intervals present divided by the maximum demand.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result, invalid};
use crate::tariff::TariffCalendar;
use crate::time::{CivilDate, DAY_MS, HOUR_MS, LocalOffset};

/// Energy of one meter interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalEnergy {
    /// Interval start, ms.
    pub start_ts_ms: i64,
    /// Energy imported, Wh.
    pub import_wh: f64,
    /// Energy exported, Wh.
    pub export_wh: f64,
}

/// One meter's day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyMeter {
    /// Local day number.
    pub day: i64,
    /// Its date.
    pub date: CivilDate,
    /// Intervals present.
    pub intervals: u32,
    /// Intervals in a complete day.
    pub expected_intervals: u32,
    /// Energy imported, Wh.
    pub import_wh: f64,
    /// Energy exported, Wh.
    pub export_wh: f64,
    /// Highest interval import demand, W, and the start of its interval.
    pub max_demand: Option<(f64, i64)>,
    /// Mean over maximum import demand (`None` without import).
    pub load_factor: Option<f64>,
    /// Import per tariff bucket (indexed like `TariffCalendar::buckets`), Wh.
    pub tou_import_wh: Vec<f64>,
    /// Export per tariff bucket, Wh.
    pub tou_export_wh: Vec<f64>,
    /// Highest interval import demand within each bucket, W (what a month's demand charges
    /// by period are built from).
    #[serde(default)]
    pub tou_max_demand_w: Vec<f64>,
}

/// One meter's month of billing determinants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthlyBilling {
    /// Year.
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Days with at least one interval.
    pub days: u32,
    /// Intervals present.
    pub intervals: u32,
    /// Energy imported, Wh.
    pub import_wh: f64,
    /// Energy exported, Wh.
    pub export_wh: f64,
    /// Import per tariff bucket, Wh.
    pub tou_import_wh: Vec<f64>,
    /// Export per tariff bucket, Wh.
    pub tou_export_wh: Vec<f64>,
    /// Highest interval demand of the month, W, and when.
    pub max_demand: Option<(f64, i64)>,
    /// Highest interval demand within each bucket, W (demand charges by period).
    pub tou_max_demand_w: Vec<f64>,
    /// Mean over maximum demand for the month.
    pub load_factor: Option<f64>,
}

impl MonthlyBilling {
    fn empty(year: i32, month: u8, buckets: usize) -> Self {
        Self {
            year,
            month,
            days: 0,
            intervals: 0,
            import_wh: 0.0,
            export_wh: 0.0,
            tou_import_wh: vec![0.0; buckets],
            tou_export_wh: vec![0.0; buckets],
            max_demand: None,
            tou_max_demand_w: vec![0.0; buckets],
            load_factor: None,
        }
    }
}

/// One feeder's day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeederDailyPeak {
    /// Local day number.
    pub day: i64,
    /// Its date.
    pub date: CivilDate,
    /// Intervals present.
    pub intervals: u32,
    /// Highest interval mean load, W, and the start of its interval.
    pub peak: (f64, i64),
    /// Lowest interval mean load, W (negative when the feeder exported).
    pub min_w: f64,
    /// Net energy over the day, Wh.
    pub energy_wh: f64,
    /// Mean load over peak load (`None` if the peak is not positive).
    pub load_factor: Option<f64>,
}

/// Daily aggregates of one meter's intervals (any order; one value per interval start).
pub fn daily_meter(
    intervals: &[IntervalEnergy],
    interval_ms: i64,
    calendar: &TariffCalendar,
) -> Result<Vec<DailyMeter>> {
    check_intervals(intervals.iter().map(|i| i.start_ts_ms), interval_ms)?;
    let offset = calendar.offset();
    let buckets = calendar.buckets().len();
    let mut days: BTreeMap<i64, DailyMeter> = BTreeMap::new();
    for i in intervals {
        let day = offset.day(i.start_ts_ms);
        let entry = days.entry(day).or_insert_with(|| DailyMeter {
            day,
            date: CivilDate::from_day(day),
            intervals: 0,
            expected_intervals: (DAY_MS / interval_ms) as u32,
            import_wh: 0.0,
            export_wh: 0.0,
            max_demand: None,
            load_factor: None,
            tou_import_wh: vec![0.0; buckets],
            tou_export_wh: vec![0.0; buckets],
            tou_max_demand_w: vec![0.0; buckets],
        });
        let bucket = calendar.bucket_at(i.start_ts_ms);
        let demand = demand_w(i.import_wh, interval_ms);
        entry.intervals += 1;
        entry.import_wh += i.import_wh;
        entry.export_wh += i.export_wh;
        entry.tou_import_wh[bucket] += i.import_wh;
        entry.tou_export_wh[bucket] += i.export_wh;
        entry.tou_max_demand_w[bucket] = entry.tou_max_demand_w[bucket].max(demand);
        entry.max_demand = higher(entry.max_demand, demand, i);
    }
    let mut out: Vec<DailyMeter> = days.into_values().collect();
    for d in &mut out {
        d.load_factor = load_factor(d.import_wh, d.intervals, interval_ms, d.max_demand);
    }
    Ok(out)
}

/// Monthly billing determinants of one meter's intervals.
pub fn monthly_billing(
    intervals: &[IntervalEnergy],
    interval_ms: i64,
    calendar: &TariffCalendar,
) -> Result<Vec<MonthlyBilling>> {
    check_intervals(intervals.iter().map(|i| i.start_ts_ms), interval_ms)?;
    let offset = calendar.offset();
    let buckets = calendar.buckets().len();
    let mut months: BTreeMap<(i32, u8), (MonthlyBilling, BTreeSet<i64>)> = BTreeMap::new();
    for i in intervals {
        let day = offset.day(i.start_ts_ms);
        let date = CivilDate::from_day(day);
        let (m, days) = &mut months.entry((date.year, date.month)).or_insert_with(|| {
            (
                MonthlyBilling::empty(date.year, date.month, buckets),
                BTreeSet::new(),
            )
        });
        days.insert(day);
        let bucket = calendar.bucket_at(i.start_ts_ms);
        let demand = demand_w(i.import_wh, interval_ms);
        m.intervals += 1;
        m.import_wh += i.import_wh;
        m.export_wh += i.export_wh;
        m.tou_import_wh[bucket] += i.import_wh;
        m.tou_export_wh[bucket] += i.export_wh;
        m.tou_max_demand_w[bucket] = m.tou_max_demand_w[bucket].max(demand);
        m.max_demand = higher(m.max_demand, demand, i);
    }
    Ok(months
        .into_values()
        .map(|(mut m, days)| {
            m.days = days.len() as u32;
            m.load_factor = load_factor(m.import_wh, m.intervals, interval_ms, m.max_demand);
            m
        })
        .collect())
}

/// Monthly billing determinants from daily aggregates (one per local day, any order), as
/// [`monthly_billing`] computes them from the days' intervals: sums add up, maxima are the
/// maxima of the days (the earliest day's on a tie, as the intervals' earliest would be).
/// This is how stored daily rows answer a month without reading its intervals again.
pub fn monthly_from_days(days: &[DailyMeter], interval_ms: i64) -> Result<Vec<MonthlyBilling>> {
    if interval_ms <= 0 || DAY_MS % interval_ms != 0 {
        return Err(invalid(
            "interval_ms",
            interval_ms,
            "must divide a day evenly",
        ));
    }
    let mut sorted: Vec<&DailyMeter> = days.iter().collect();
    sorted.sort_by_key(|d| d.day);
    if let Some(pair) = sorted.windows(2).find(|w| w[0].day == w[1].day) {
        return Err(AnalyticsError::InvalidInput(format!(
            "day {} appears twice; a month would count it twice",
            pair[0].day
        )));
    }
    let mut months: BTreeMap<(i32, u8), MonthlyBilling> = BTreeMap::new();
    for d in sorted.into_iter().filter(|d| d.intervals > 0) {
        let buckets = d.tou_import_wh.len();
        let m = months
            .entry((d.date.year, d.date.month))
            .or_insert_with(|| MonthlyBilling::empty(d.date.year, d.date.month, buckets));
        if d.tou_export_wh.len() != buckets
            || d.tou_max_demand_w.len() != buckets
            || m.tou_import_wh.len() != buckets
        {
            return Err(AnalyticsError::InvalidInput(format!(
                "day {} has another number of tariff buckets than its month",
                d.day
            )));
        }
        m.days += 1;
        m.intervals += d.intervals;
        m.import_wh += d.import_wh;
        m.export_wh += d.export_wh;
        for b in 0..buckets {
            m.tou_import_wh[b] += d.tou_import_wh[b];
            m.tou_export_wh[b] += d.tou_export_wh[b];
            m.tou_max_demand_w[b] = m.tou_max_demand_w[b].max(d.tou_max_demand_w[b]);
        }
        if let Some((w, at)) = d.max_demand
            && m.max_demand.is_none_or(|(best, _)| w > best)
        {
            m.max_demand = Some((w, at));
        }
    }
    Ok(months
        .into_values()
        .map(|mut m| {
            m.load_factor = load_factor(m.import_wh, m.intervals, interval_ms, m.max_demand);
            m
        })
        .collect())
}

/// Daily peaks of a feeder's interval mean loads `(start_ts_ms, load_w)`.
pub fn feeder_daily_peaks(
    loads: &[(i64, f64)],
    interval_ms: i64,
    offset: LocalOffset,
) -> Result<Vec<FeederDailyPeak>> {
    check_intervals(loads.iter().map(|(ts, _)| *ts), interval_ms)?;
    let mut days: BTreeMap<i64, FeederDailyPeak> = BTreeMap::new();
    for &(start, load_w) in loads {
        if !load_w.is_finite() {
            return Err(AnalyticsError::InvalidInput(format!(
                "feeder load at {start} is {load_w}"
            )));
        }
        let day = offset.day(start);
        let d = days.entry(day).or_insert(FeederDailyPeak {
            day,
            date: CivilDate::from_day(day),
            intervals: 0,
            peak: (load_w, start),
            min_w: load_w,
            energy_wh: 0.0,
            load_factor: None,
        });
        d.intervals += 1;
        d.energy_wh += load_w * interval_ms as f64 / HOUR_MS as f64;
        if load_w > d.peak.0 {
            d.peak = (load_w, start);
        }
        d.min_w = d.min_w.min(load_w);
    }
    Ok(days
        .into_values()
        .map(|mut d| {
            let mean_w =
                d.energy_wh * HOUR_MS as f64 / (f64::from(d.intervals) * interval_ms as f64);
            d.load_factor = (d.peak.0 > 0.0).then(|| mean_w / d.peak.0);
            d
        })
        .collect())
}

fn demand_w(energy_wh: f64, interval_ms: i64) -> f64 {
    energy_wh * HOUR_MS as f64 / interval_ms as f64
}

fn higher(current: Option<(f64, i64)>, demand: f64, i: &IntervalEnergy) -> Option<(f64, i64)> {
    match current {
        Some((best, _)) if best >= demand => current,
        _ => Some((demand, i.start_ts_ms)),
    }
}

fn load_factor(
    import_wh: f64,
    intervals: u32,
    interval_ms: i64,
    max: Option<(f64, i64)>,
) -> Option<f64> {
    let (max_w, _) = max?;
    if max_w <= 0.0 || intervals == 0 {
        return None;
    }
    Some(demand_w(import_wh / f64::from(intervals), interval_ms) / max_w)
}

/// Interval length divides a day, starts are on the grid, and no start appears twice (a
/// duplicate would be counted twice).
fn check_intervals(starts: impl Iterator<Item = i64>, interval_ms: i64) -> Result<()> {
    if interval_ms <= 0 || DAY_MS % interval_ms != 0 {
        return Err(invalid(
            "interval_ms",
            interval_ms,
            "must divide a day evenly",
        ));
    }
    let mut seen = BTreeSet::new();
    for start in starts {
        if start.rem_euclid(interval_ms) != 0 {
            return Err(AnalyticsError::InvalidInput(format!(
                "interval start {start} is not a multiple of {interval_ms} ms"
            )));
        }
        if !seen.insert(start) {
            return Err(AnalyticsError::InvalidInput(format!(
                "interval {start} appears twice; aggregates would count it twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::TouPeriod;
    use crate::time::{MIN15_MS, Weekday};
    use proptest::prelude::*;

    fn calendar(offset_minutes: i32) -> TariffCalendar {
        let work = Weekday::ALL[..5].to_vec();
        let p = |bucket: &str, weekdays: Vec<Weekday>, start, end| TouPeriod {
            bucket: bucket.to_owned(),
            months: Vec::new(),
            weekdays,
            start_minute: start,
            end_minute: end,
        };
        let periods = [
            p("off_peak", work.clone(), 0, 420),
            p("peak", work.clone(), 420, 1260),
            p("off_peak", work, 1260, 1440),
            p("off_peak", vec![Weekday::Sat, Weekday::Sun], 0, 1440),
        ];
        TariffCalendar::new(LocalOffset::new(offset_minutes).unwrap(), &periods, []).unwrap()
    }

    fn monday() -> i64 {
        CivilDate {
            year: 2024,
            month: 1,
            day: 29,
        }
        .to_day()
            * DAY_MS
    }

    #[test]
    fn a_day_of_a_meter() {
        // 100 Wh every quarter hour, 400 Wh in the 08:00 interval, 50 Wh exported at noon.
        let intervals: Vec<IntervalEnergy> = (0..96)
            .map(|i| IntervalEnergy {
                start_ts_ms: monday() + i * MIN15_MS,
                import_wh: if i == 32 { 400.0 } else { 100.0 },
                export_wh: if i == 48 { 50.0 } else { 0.0 },
            })
            .collect();
        let days = daily_meter(&intervals, MIN15_MS, &calendar(0)).unwrap();
        assert_eq!(days.len(), 1);
        let d = &days[0];
        assert_eq!((d.intervals, d.expected_intervals), (96, 96));
        assert_eq!((d.import_wh, d.export_wh), (9_900.0, 50.0));
        assert_eq!(d.max_demand, Some((1_600.0, monday() + 32 * MIN15_MS)));
        assert!((d.load_factor.unwrap() - 9_900.0 / 24.0 / 1_600.0).abs() < 1e-12);
        // Peak 07:00-21:00 = 56 intervals, one of them the 400 Wh one.
        assert_eq!(d.tou_import_wh, vec![40.0 * 100.0, 55.0 * 100.0 + 400.0]);
        assert_eq!(d.tou_export_wh, vec![0.0, 50.0]);
    }

    #[test]
    fn local_days_follow_the_calendar_offset() {
        // 23:30 UTC on Monday is Tuesday 00:30 at UTC+1.
        let late = IntervalEnergy {
            start_ts_ms: monday() + 23 * HOUR_MS + 30 * 60_000,
            import_wh: 1.0,
            export_wh: 0.0,
        };
        let utc = daily_meter(&[late], MIN15_MS, &calendar(0)).unwrap();
        let cet = daily_meter(&[late], MIN15_MS, &calendar(60)).unwrap();
        assert_eq!(cet[0].day, utc[0].day + 1);
    }

    #[test]
    fn bad_input_is_refused() {
        let i = IntervalEnergy {
            start_ts_ms: monday(),
            import_wh: 1.0,
            export_wh: 0.0,
        };
        let cal = calendar(0);
        assert!(daily_meter(&[i, i], MIN15_MS, &cal).is_err(), "duplicates");
        let off_grid = IntervalEnergy {
            start_ts_ms: monday() + 1,
            ..i
        };
        assert!(daily_meter(&[off_grid], MIN15_MS, &cal).is_err());
        assert!(monthly_billing(&[i], 7 * 60_000, &cal).is_err());
        assert!(feeder_daily_peaks(&[(0, f64::NAN)], MIN15_MS, LocalOffset::UTC).is_err());
    }

    #[test]
    fn feeder_peaks() {
        let loads: Vec<(i64, f64)> = (0..192)
            .map(|i| (monday() + i * MIN15_MS, if i == 100 { 9e3 } else { 1e3 }))
            .collect();
        let peaks = feeder_daily_peaks(&loads, MIN15_MS, LocalOffset::UTC).unwrap();
        assert_eq!(peaks.len(), 2);
        assert_eq!(peaks[1].peak, (9e3, monday() + 100 * MIN15_MS));
        assert_eq!(peaks[0].energy_wh, 24e3);
        assert_eq!(peaks[0].load_factor, Some(1.0));
    }

    proptest! {
        #![proptest_config(crate::test_config(64))]

        /// Days and months both add up to the total, buckets add up to their day, maximum
        /// demand bounds the mean, and months agree with the days they contain.
        #[test]
        fn aggregates_equal_the_sum(
            slots in prop::collection::btree_map(
                0i64..(96 * 62),
                (0.0f64..2000.0, 0.0f64..500.0),
                1..400,
            ),
        ) {
            let base = CivilDate { year: 2024, month: 1, day: 15 }.to_day() * DAY_MS;
            let intervals: Vec<IntervalEnergy> = slots
                .iter()
                .map(|(slot, (import_wh, export_wh))| IntervalEnergy {
                    start_ts_ms: base + slot * MIN15_MS,
                    import_wh: *import_wh,
                    export_wh: *export_wh,
                })
                .collect();
            let cal = calendar(60);
            let total: f64 = intervals.iter().map(|i| i.import_wh).sum();
            let days = daily_meter(&intervals, MIN15_MS, &cal).unwrap();
            let months = monthly_billing(&intervals, MIN15_MS, &cal).unwrap();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
            prop_assert!(close(days.iter().map(|d| d.import_wh).sum(), total));
            prop_assert!(close(months.iter().map(|m| m.import_wh).sum(), total));
            let counted: u32 = days.iter().map(|d| d.intervals).sum();
            prop_assert_eq!(counted as usize, intervals.len());
            for d in &days {
                prop_assert!(close(d.tou_import_wh.iter().sum(), d.import_wh));
                prop_assert!(close(d.tou_export_wh.iter().sum(), d.export_wh));
                if let Some(lf) = d.load_factor {
                    prop_assert!(lf > 0.0 && lf <= 1.0 + 1e-12);
                }
            }
            for m in &months {
                let of_month: Vec<&DailyMeter> = days
                    .iter()
                    .filter(|d| (d.date.year, d.date.month) == (m.year, m.month))
                    .collect();
                prop_assert_eq!(m.days as usize, of_month.len());
                let best = of_month.iter().filter_map(|d| d.max_demand).map(|(w, _)| w);
                prop_assert_eq!(m.max_demand.map(|(w, _)| w), best.reduce(f64::max));
                let peak_of_buckets = m.tou_max_demand_w.iter().copied().fold(0.0, f64::max);
                prop_assert_eq!(Some(peak_of_buckets), m.max_demand.map(|(w, _)| w));
            }

            // Months built from the days (as stored daily rows answer them) are the months
            // built from the intervals, whatever order the days come in.
            let mut shuffled = days.clone();
            shuffled.reverse();
            let from_days = monthly_from_days(&shuffled, MIN15_MS).unwrap();
            prop_assert_eq!(from_days.len(), months.len());
            for (a, b) in from_days.iter().zip(&months) {
                let id = |m: &MonthlyBilling| (m.year, m.month, m.days, m.intervals);
                prop_assert_eq!(id(a), id(b));
                prop_assert!(close(a.import_wh, b.import_wh) && close(a.export_wh, b.export_wh));
                prop_assert_eq!(a.max_demand, b.max_demand);
                prop_assert_eq!(&a.tou_max_demand_w, &b.tou_max_demand_w);
                for (x, y) in a.tou_import_wh.iter().zip(&b.tou_import_wh) {
                    prop_assert!(close(*x, *y));
                }
                for (x, y) in a.tou_export_wh.iter().zip(&b.tou_export_wh) {
                    prop_assert!(close(*x, *y));
                }
                match (a.load_factor, b.load_factor) {
                    (Some(x), Some(y)) => prop_assert!(close(x, y)),
                    (x, y) => prop_assert_eq!(x, y),
                }
            }
        }
    }

    #[test]
    fn a_day_given_twice_is_refused_by_the_months() {
        let i = IntervalEnergy {
            start_ts_ms: monday(),
            import_wh: 1.0,
            export_wh: 0.0,
        };
        let days = daily_meter(&[i], MIN15_MS, &calendar(0)).unwrap();
        let twice = [days[0].clone(), days[0].clone()];
        assert!(monthly_from_days(&twice, MIN15_MS).is_err());
        assert!(monthly_from_days(&days, 7 * 60_000).is_err());
    }
}
