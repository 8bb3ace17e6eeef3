//! Time-of-use tariff calendars.
//!
//! A calendar is a list of periods, each naming a bucket (`peak`, `off_peak` …) and the
//! months, weekdays and minutes of the local day it covers. Holidays are treated as Sundays.
//! [`TariffCalendar::new`] proves that every minute of every weekday of every month belongs
//! to exactly one bucket, and names the first overlap or gap otherwise, so an aggregate can
//! never drop or double-count energy because of a calendar mistake. Intervals are assigned by
//! their start; boundaries off the interval grid (say 07:10 with 15-minute data) therefore
//! round to the interval that contains them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result};
use crate::time::{CivilDate, LocalOffset, Weekday};

/// Minutes in a day.
const DAY_MINUTES: u16 = 1440;

/// One rule of a calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouPeriod {
    /// Bucket name.
    pub bucket: String,
    /// Months 1..=12 it applies to; empty = every month.
    #[serde(default)]
    pub months: Vec<u8>,
    /// Weekdays it applies to; empty = every day.
    #[serde(default)]
    pub weekdays: Vec<Weekday>,
    /// First minute of the local day, 0..1440.
    pub start_minute: u16,
    /// Minute after the last, 1..=1440 (1440 = midnight at the end of the day).
    pub end_minute: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    start: u16,
    end: u16,
    bucket: usize,
}

/// A validated calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffCalendar {
    offset: LocalOffset,
    buckets: Vec<String>,
    /// `segments[(month - 1) * 7 + weekday]`, sorted, covering the day exactly once.
    segments: Vec<Vec<Segment>>,
    holidays: BTreeSet<i64>,
}

impl TariffCalendar {
    /// Builds and validates a calendar.
    pub fn new(
        offset: LocalOffset,
        periods: &[TouPeriod],
        holidays: impl IntoIterator<Item = CivilDate>,
    ) -> Result<TariffCalendar> {
        let mut buckets: Vec<String> = Vec::new();
        let mut segments: Vec<Vec<Segment>> = vec![Vec::new(); 12 * 7];
        for (index, period) in periods.iter().enumerate() {
            check_period(index, period)?;
            let bucket = match buckets.iter().position(|b| *b == period.bucket) {
                Some(i) => i,
                None => {
                    buckets.push(period.bucket.clone());
                    buckets.len() - 1
                }
            };
            let months: Vec<u8> = if period.months.is_empty() {
                (1..=12).collect()
            } else {
                period.months.clone()
            };
            let weekdays: &[Weekday] = if period.weekdays.is_empty() {
                &Weekday::ALL
            } else {
                &period.weekdays
            };
            for month in months {
                for weekday in weekdays {
                    segments[slot(month, *weekday)].push(Segment {
                        start: period.start_minute,
                        end: period.end_minute,
                        bucket,
                    });
                }
            }
        }
        for month in 1..=12u8 {
            for weekday in Weekday::ALL {
                let day = &mut segments[slot(month, weekday)];
                day.sort_by_key(|s| (s.start, s.end));
                check_day(day, month, weekday, &buckets)?;
            }
        }
        Ok(TariffCalendar {
            offset,
            buckets,
            segments,
            holidays: holidays.into_iter().map(CivilDate::to_day).collect(),
        })
    }

    /// A calendar with one bucket for all time.
    pub fn flat(bucket: impl Into<String>) -> TariffCalendar {
        let period = TouPeriod {
            bucket: bucket.into(),
            months: Vec::new(),
            weekdays: Vec::new(),
            start_minute: 0,
            end_minute: DAY_MINUTES,
        };
        TariffCalendar::new(LocalOffset::UTC, &[period], [])
            .expect("one period covering every minute is a valid calendar")
    }

    /// Bucket names; aggregates index their per-bucket vectors by position here.
    pub fn buckets(&self) -> &[String] {
        &self.buckets
    }

    /// The local offset of the calendar.
    pub fn offset(&self) -> LocalOffset {
        self.offset
    }

    /// The bucket (index into [`TariffCalendar::buckets`]) in force at `ts_ms`.
    pub fn bucket_at(&self, ts_ms: i64) -> usize {
        let day = self.offset.day(ts_ms);
        let weekday = if self.holidays.contains(&day) {
            Weekday::Sun
        } else {
            Weekday::of_day(day)
        };
        let month = CivilDate::from_day(day).month;
        let minute = self.offset.minute_of_day(ts_ms);
        let day_segments = &self.segments[slot(month, weekday)];
        let i = day_segments.partition_point(|s| s.end <= minute);
        day_segments[i].bucket
    }
}

fn slot(month: u8, weekday: Weekday) -> usize {
    usize::from(month - 1) * 7 + weekday.index()
}

fn check_period(index: usize, p: &TouPeriod) -> Result<()> {
    let fail = |reason: String| {
        Err(AnalyticsError::TariffPeriod {
            index,
            bucket: p.bucket.clone(),
            reason,
        })
    };
    if p.bucket.trim().is_empty() {
        return fail("the bucket name is empty".to_owned());
    }
    if p.start_minute >= p.end_minute || p.end_minute > DAY_MINUTES {
        return fail(format!(
            "minutes {}..{} are not a range within 0..=1440 (split a period that crosses \
             midnight in two)",
            p.start_minute, p.end_minute
        ));
    }
    if let Some(m) = p.months.iter().find(|m| !(1..=12).contains(*m)) {
        return fail(format!("month {m} is not within 1..=12"));
    }
    Ok(())
}

fn check_day(day: &[Segment], month: u8, weekday: Weekday, buckets: &[String]) -> Result<()> {
    let mut covered_to = 0u16;
    let mut previous: Option<&Segment> = None;
    for segment in day {
        if segment.start < covered_to {
            let other = previous.expect("coverage past 0 comes from a previous segment");
            return Err(AnalyticsError::TariffOverlap {
                month,
                weekday: weekday.name(),
                minute: segment.start,
                first: buckets[other.bucket].clone(),
                second: buckets[segment.bucket].clone(),
            });
        }
        if segment.start > covered_to {
            return Err(gap(month, weekday, covered_to, segment.start));
        }
        covered_to = segment.end;
        previous = Some(segment);
    }
    if covered_to < DAY_MINUTES {
        return Err(gap(month, weekday, covered_to, DAY_MINUTES));
    }
    Ok(())
}

fn gap(month: u8, weekday: Weekday, from_minute: u16, to_minute: u16) -> AnalyticsError {
    AnalyticsError::TariffGap {
        month,
        weekday: weekday.name(),
        from_minute,
        to_minute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY_MS, MINUTE_MS};
    use proptest::prelude::*;

    fn period(bucket: &str, weekdays: &[Weekday], start: u16, end: u16) -> TouPeriod {
        TouPeriod {
            bucket: bucket.to_owned(),
            months: Vec::new(),
            weekdays: weekdays.to_vec(),
            start_minute: start,
            end_minute: end,
        }
    }

    /// Peak 07:00–21:00 on workdays, off-peak otherwise.
    fn two_rate() -> Vec<TouPeriod> {
        let work = &Weekday::ALL[..5];
        vec![
            period("off_peak", work, 0, 420),
            period("peak", work, 420, 1260),
            period("off_peak", work, 1260, 1440),
            period("off_peak", &[Weekday::Sat, Weekday::Sun], 0, 1440),
        ]
    }

    #[test]
    fn a_valid_calendar_assigns_buckets_and_holidays_are_sundays() {
        let christmas = CivilDate {
            year: 2024,
            month: 12,
            day: 25,
        }; // a Wednesday
        let cal = TariffCalendar::new(LocalOffset::UTC, &two_rate(), [christmas]).unwrap();
        assert_eq!(cal.buckets(), ["off_peak", "peak"]);
        let wednesday = CivilDate {
            year: 2024,
            month: 12,
            day: 18,
        }
        .to_day()
            * DAY_MS;
        assert_eq!(
            cal.buckets()[cal.bucket_at(wednesday + 8 * 60 * MINUTE_MS)],
            "peak"
        );
        assert_eq!(
            cal.buckets()[cal.bucket_at(wednesday + 6 * 60 * MINUTE_MS)],
            "off_peak"
        );
        let holiday = christmas.to_day() * DAY_MS + 8 * 60 * MINUTE_MS;
        assert_eq!(cal.buckets()[cal.bucket_at(holiday)], "off_peak");
        assert_eq!(TariffCalendar::flat("all").bucket_at(12345), 0);
    }

    #[test]
    fn overlaps_gaps_and_bad_periods_are_named() {
        let mut overlap = two_rate();
        overlap[1].end_minute = 1300;
        let err = TariffCalendar::new(LocalOffset::UTC, &overlap, []).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tariff periods peak and off_peak overlap on Mon in month 1 from minute 1260 of \
             the day"
        );
        let mut gap = two_rate();
        gap.pop();
        let err = TariffCalendar::new(LocalOffset::UTC, &gap, []).unwrap_err();
        assert!(matches!(
            err,
            AnalyticsError::TariffGap {
                weekday: "Sat",
                from_minute: 0,
                ..
            }
        ));
        let mut crossing = two_rate();
        crossing.push(period("night", &[], 1380, 60));
        assert!(matches!(
            TariffCalendar::new(LocalOffset::UTC, &crossing, []),
            Err(AnalyticsError::TariffPeriod { index: 4, .. })
        ));
        let mut month = two_rate();
        month[0].months = vec![13];
        assert!(TariffCalendar::new(LocalOffset::UTC, &month, []).is_err());
    }

    /// A random partition of the day into buckets, as periods.
    fn partition() -> impl Strategy<Value = Vec<TouPeriod>> {
        prop::collection::btree_set(1u16..1440, 0..8).prop_map(|cuts| {
            let bounds: Vec<u16> = std::iter::once(0)
                .chain(cuts)
                .chain(std::iter::once(1440))
                .collect();
            bounds
                .windows(2)
                .enumerate()
                .map(|(i, w)| period(&format!("b{}", i % 3), &[], w[0], w[1]))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        #[test]
        fn partitions_are_valid_and_lookups_follow_them(
            periods in partition(), minute in 0u16..1440, day in 0i64..40_000
        ) {
            let cal = TariffCalendar::new(LocalOffset::UTC, &periods, []).unwrap();
            let ts = day * DAY_MS + i64::from(minute) * MINUTE_MS;
            let owner = periods
                .iter()
                .find(|p| p.start_minute <= minute && minute < p.end_minute)
                .unwrap();
            prop_assert_eq!(&cal.buckets()[cal.bucket_at(ts)], &owner.bucket);
        }

        #[test]
        fn removing_or_stretching_a_period_is_refused(periods in partition(), pick in 0usize..9) {
            let i = pick % periods.len();
            let mut missing = periods.clone();
            missing.remove(i);
            let gap_err = TariffCalendar::new(LocalOffset::UTC, &missing, []).is_err();
            prop_assert!(gap_err);
            if periods.len() > 1 {
                let mut stretched = periods.clone();
                if i + 1 < periods.len() {
                    stretched[i].end_minute += 1;
                } else {
                    stretched[i].start_minute -= 1;
                }
                let err = TariffCalendar::new(LocalOffset::UTC, &stretched, []).unwrap_err();
                prop_assert!(matches!(err, AnalyticsError::TariffOverlap { .. }), "{}", err);
            }
        }
    }
}
