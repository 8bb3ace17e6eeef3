//! Time arithmetic on Unix milliseconds (UTC), local days and civil dates.
//!
//! Every timestamp in this crate is Unix time in ms. Intervals are named by their **start**
//! (`start_ts_ms`), like the actors' accumulators: the 15-minute interval [10:00, 10:15) is
//! `start_ts_ms = 10:00`. Days, weekdays and months are *local* days of a fixed UTC offset
//! ([`LocalOffset`]). Daylight saving time is not modelled: a deployment that needs it must
//! pick the standard-time offset, which shifts tariff boundaries by an hour in summer.

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// One minute, ms.
pub const MINUTE_MS: i64 = 60_000;
/// One hour, ms.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day, ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// One week, ms.
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// The meters' interval, ms.
pub const MIN15_MS: i64 = 15 * MINUTE_MS;

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The weekday of a day number (days since 1970-01-01, a Thursday).
    pub fn of_day(day: i64) -> Weekday {
        Weekday::ALL[(day + 3).rem_euclid(7) as usize]
    }

    /// 0 for Monday … 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Sat | Weekday::Sun)
    }

    /// English short name.
    pub fn name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self.index()]
    }
}

/// Which days count as "like" each other (like-day estimation, step detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DayClasses {
    /// Monday to Friday are alike; Saturday and Sunday each form their own class.
    #[default]
    WorkdaySaturdaySunday,
    /// Every weekday is its own class (Mondays are like Mondays only).
    SameWeekday,
}

impl DayClasses {
    /// The class of a weekday: equal numbers mean alike.
    pub fn class_of(self, weekday: Weekday) -> u8 {
        match self {
            DayClasses::SameWeekday => weekday.index() as u8,
            DayClasses::WorkdaySaturdaySunday => match weekday {
                Weekday::Sat => 1,
                Weekday::Sun => 2,
                _ => 0,
            },
        }
    }
}

/// A fixed offset from UTC that defines local days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOffset {
    /// Minutes east of UTC, e.g. 60 for CET, -300 for EST.
    pub offset_minutes: i32,
}

impl LocalOffset {
    /// UTC itself.
    pub const UTC: LocalOffset = LocalOffset { offset_minutes: 0 };

    /// An offset of `offset_minutes` east of UTC (at most ±14 h).
    pub fn new(offset_minutes: i32) -> Result<LocalOffset> {
        if offset_minutes.abs() > 14 * 60 {
            return Err(invalid(
                "offset_minutes",
                offset_minutes,
                "must be within -840..=840 (±14 h)",
            ));
        }
        Ok(LocalOffset { offset_minutes })
    }

    fn offset_ms(self) -> i64 {
        i64::from(self.offset_minutes) * MINUTE_MS
    }

    /// The local day number of an instant (days since local 1970-01-01).
    pub fn day(self, ts_ms: i64) -> i64 {
        (ts_ms + self.offset_ms()).div_euclid(DAY_MS)
    }

    /// UTC ms of the local midnight that starts `day`.
    pub fn day_start_ms(self, day: i64) -> i64 {
        day * DAY_MS - self.offset_ms()
    }

    /// Local minute of the day, 0..1440.
    pub fn minute_of_day(self, ts_ms: i64) -> u16 {
        ((ts_ms + self.offset_ms()).rem_euclid(DAY_MS) / MINUTE_MS) as u16
    }

    /// Local weekday.
    pub fn weekday(self, ts_ms: i64) -> Weekday {
        Weekday::of_day(self.day(ts_ms))
    }

    /// Local calendar date.
    pub fn date(self, ts_ms: i64) -> CivilDate {
        CivilDate::from_day(self.day(ts_ms))
    }
}

/// `ts_ms` as `YYYY-MM-DD HH:MM UTC`, for alert messages people read.
pub fn format_utc(ts_ms: i64) -> String {
    let day = ts_ms.div_euclid(DAY_MS);
    let minute = ts_ms.rem_euclid(DAY_MS) / MINUTE_MS;
    let d = CivilDate::from_day(day);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        d.year,
        d.month,
        d.day,
        minute / 60,
        minute % 60
    )
}

/// A proleptic Gregorian calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CivilDate {
    /// Year, e.g. 2016.
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Day of the month 1..=31.
    pub day: u8,
}

impl CivilDate {
    /// The date of a day number (days since 1970-01-01).
    pub fn from_day(day: i64) -> CivilDate {
        // Count in 400-year eras starting on 0000-03-01, so the leap day ends each year.
        let z = day + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day_of_month = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        CivilDate {
            year: year as i32,
            month: month as u8,
            day: day_of_month as u8,
        }
    }

    /// The day number of this date (days since 1970-01-01).
    pub fn to_day(self) -> i64 {
        let month = i64::from(self.month);
        let year = i64::from(self.year) - i64::from(month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utc_times_are_formatted_for_people() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        // 2016-02-29 23:59:59.999 and one ms before the epoch.
        assert_eq!(format_utc(1_456_790_399_999), "2016-02-29 23:59 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59 UTC");
    }

    #[test]
    fn known_dates() {
        assert_eq!(
            CivilDate::from_day(0),
            CivilDate {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        let leap = CivilDate {
            year: 2016,
            month: 2,
            day: 29,
        };
        assert_eq!(CivilDate::from_day(leap.to_day()), leap);
        assert_eq!(Weekday::of_day(0), Weekday::Thu);
        // 2016-01-01 was a Friday; 2000-06-05 (the Taylor series' first day) a Monday.
        let jan1 = CivilDate {
            year: 2016,
            month: 1,
            day: 1,
        }
        .to_day();
        assert_eq!(Weekday::of_day(jan1), Weekday::Fri);
        let june5 = CivilDate {
            year: 2000,
            month: 6,
            day: 5,
        }
        .to_day();
        assert_eq!(Weekday::of_day(june5), Weekday::Mon);
    }

    #[test]
    fn local_days_shift_with_the_offset() {
        let cet = LocalOffset::new(60).unwrap();
        let utc_2330 = 23 * HOUR_MS + 30 * MINUTE_MS;
        assert_eq!(LocalOffset::UTC.day(utc_2330), 0);
        assert_eq!(cet.day(utc_2330), 1);
        assert_eq!(cet.minute_of_day(utc_2330), 30);
        assert_eq!(cet.day_start_ms(1), DAY_MS - HOUR_MS);
        assert!(LocalOffset::new(15 * 60).is_err());
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        #[test]
        fn civil_dates_round_trip(day in -800_000i64..800_000) {
            let date = CivilDate::from_day(day);
            prop_assert!((1..=12).contains(&date.month) && (1..=31).contains(&date.day));
            prop_assert_eq!(date.to_day(), day);
            // The next day is either the next day of the month or the first of a month.
            let next = CivilDate::from_day(day + 1);
            prop_assert!(next.day == date.day + 1 || next.day == 1);
        }

        #[test]
        fn local_day_start_contains_the_instant(
            ts in -10_000_000_000_000i64..10_000_000_000_000, offset in -840i32..=840
        ) {
            let local = LocalOffset::new(offset).unwrap();
            let start = local.day_start_ms(local.day(ts));
            prop_assert!(start <= ts && ts < start + DAY_MS);
            prop_assert_eq!(i64::from(local.minute_of_day(ts)), (ts - start) / MINUTE_MS);
        }
    }
}
