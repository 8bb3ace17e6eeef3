//! VEE (validation, estimation, editing) of one interval channel of one meter.
//!
//! The actors already reject readings that are malformed, duplicated or run registers
//! backwards (`actors/src/validation.rs`). What is left is the series itself:
//!
//! 1. **Gaps**: intervals without a value ([`find_gaps`]).
//! 2. **Estimation**: a gap of at most [`VeeConfig::max_interpolation_gap`] intervals with
//!    values on both sides is filled by linear interpolation between its neighbours
//!    ([`interpolate`]); longer gaps, and gaps at either end, by *like-day* estimation: the
//!    mean, slot by slot, of the nearest [`VeeConfig::like_days`] valid days of the same day
//!    class (same weekday, or workday/Saturday/Sunday) within the look-back, nearest first,
//!    before or after. A day is valid when it is complete, not excluded (outage days) and has
//!    no flagged run. A gap with no like day stays empty and is reported.
//! 3. **Flags**: runs of zeros ([`find_zero_runs`]) and runs of one repeated non-zero value
//!    ([`find_frozen_runs`]) of at least the configured length are flagged, not changed:
//!    zeros can be real (a vacant house) and only an operator or a field visit can say.
//!
//! Every estimate and flag is an [`Edit`] carrying its rule and the raw value (`None` for a
//! gap), so nothing measured is ever lost and the audit trail says why each value is what it
//! is. The function is pure; the meter actor writes the edits as versioned corrections.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result, invalid};
use crate::time::{DAY_MS, DayClasses, LocalOffset, MIN15_MS};

/// VEE settings for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VeeConfig {
    /// Interval length, ms (must divide a day).
    pub interval_ms: i64,
    /// Longest gap filled by interpolation, in intervals (4 = one hour at 15 minutes).
    pub max_interpolation_gap: usize,
    /// Like days averaged for a long gap.
    pub like_days: usize,
    /// How far (days, either direction) to look for like days.
    pub like_day_lookback_days: usize,
    /// Which days are alike.
    pub day_classes: DayClasses,
    /// Local time, for days and weekdays.
    pub offset: LocalOffset,
    /// Shortest run of zeros that is flagged, in intervals.
    pub zero_run_min: usize,
    /// Shortest run of one repeated non-zero value that is flagged, in intervals.
    pub frozen_run_min: usize,
}

impl Default for VeeConfig {
    /// 15-minute intervals, interpolation up to 1 h, 3 like days within 4 weeks, zero runs of
    /// 6 h and frozen runs of 2 h flagged.
    fn default() -> VeeConfig {
        VeeConfig {
            interval_ms: MIN15_MS,
            max_interpolation_gap: 4,
            like_days: 3,
            like_day_lookback_days: 28,
            day_classes: DayClasses::WorkdaySaturdaySunday,
            offset: LocalOffset::UTC,
            zero_run_min: 24,
            frozen_run_min: 8,
        }
    }
}

impl VeeConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.interval_ms <= 0 || DAY_MS % self.interval_ms != 0 {
            return Err(invalid(
                "interval_ms",
                self.interval_ms,
                "must divide a day evenly",
            ));
        }
        if self.like_days == 0 {
            return Err(invalid("like_days", self.like_days, "must be at least 1"));
        }
        if self.like_day_lookback_days == 0 {
            return Err(invalid(
                "like_day_lookback_days",
                self.like_day_lookback_days,
                "must be at least 1",
            ));
        }
        if self.zero_run_min < 2 || self.frozen_run_min < 2 {
            return Err(invalid(
                "zero_run_min / frozen_run_min",
                self.zero_run_min.min(self.frozen_run_min),
                "must be at least 2 intervals",
            ));
        }
        Ok(())
    }

    fn intervals_per_day(&self) -> usize {
        (DAY_MS / self.interval_ms) as usize
    }
}

/// Why a value was estimated or flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VeeRule {
    /// Estimated by linear interpolation between the gap's neighbours.
    LinearInterpolation,
    /// Estimated as the mean of like days.
    LikeDay,
    /// Flagged: part of a run of zeros.
    ZeroRun,
    /// Flagged: part of a run of one repeated non-zero value.
    FrozenRun,
}

impl VeeRule {
    /// Whether the rule produced a value (rather than flagging a measured one).
    pub fn is_estimate(self) -> bool {
        matches!(self, VeeRule::LinearInterpolation | VeeRule::LikeDay)
    }

    /// Stable name for the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            VeeRule::LinearInterpolation => "linear_interpolation",
            VeeRule::LikeDay => "like_day",
            VeeRule::ZeroRun => "zero_run",
            VeeRule::FrozenRun => "frozen_run",
        }
    }
}

/// One estimated or flagged interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// Index of the interval in the input.
    pub index: usize,
    /// Interval start, ms.
    pub start_ts_ms: i64,
    /// What was measured (`None`: nothing, a gap).
    pub raw: Option<f64>,
    /// The value after VEE (the estimate, or the raw value for a flag).
    pub value: f64,
    /// The rule.
    pub rule: VeeRule,
}

/// Consecutive intervals `first .. first + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First index.
    pub first: usize,
    /// Number of intervals.
    pub len: usize,
}

impl Run {
    /// One past the last index.
    pub fn end(&self) -> usize {
        self.first + self.len
    }
}

/// The channel after VEE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VeeOutcome {
    /// Values after estimation (`None` only inside [`VeeOutcome::unestimated`]).
    pub values: Vec<Option<f64>>,
    /// Every estimate and flag, by index.
    pub edits: Vec<Edit>,
    /// Gaps that could not be estimated (no valid like day in reach).
    pub unestimated: Vec<Run>,
}

/// Runs of missing values.
pub fn find_gaps(values: &[Option<f64>]) -> Vec<Run> {
    find_runs(values.len(), |i| values[i].is_none(), |_, _| true, 1)
}

/// Runs of at least `min_len` zeros.
pub fn find_zero_runs(values: &[Option<f64>], min_len: usize) -> Vec<Run> {
    find_runs(
        values.len(),
        |i| values[i] == Some(0.0),
        |_, _| true,
        min_len,
    )
}

/// Runs of at least `min_len` intervals repeating one non-zero value exactly (a stuck
/// register or pulse input repeats bit for bit; real consumption hardly ever does).
pub fn find_frozen_runs(values: &[Option<f64>], min_len: usize) -> Vec<Run> {
    let nonzero = |i: usize| values[i].is_some_and(|v| v != 0.0);
    find_runs(
        values.len(),
        nonzero,
        |a, b| values[a] == values[b],
        min_len,
    )
}

/// Maximal runs of indices where `member` holds and each index `continues` the previous one.
fn find_runs(
    len: usize,
    member: impl Fn(usize) -> bool,
    continues: impl Fn(usize, usize) -> bool,
    min_len: usize,
) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start: Option<usize> = None;
    for i in 0..=len {
        let extends = i < len && member(i) && start.is_none_or(|s| continues(i - 1, i) || i == s);
        match (start, extends) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                if i - s >= min_len {
                    runs.push(Run {
                        first: s,
                        len: i - s,
                    });
                }
                start = (i < len && member(i)).then_some(i);
            }
            _ => {}
        }
    }
    runs
}

/// `len` values on the straight line from `before` to `after` (exclusive at both ends).
pub fn interpolate(before: f64, after: f64, len: usize) -> Vec<f64> {
    let steps = (len + 1) as f64;
    (1..=len)
        .map(|k| before + (after - before) * (k as f64 / steps))
        .collect()
}

/// Runs VEE over a channel whose interval `i` starts at `start_ts_ms + i * interval_ms`.
/// `excluded_days` are local day numbers not to use as like days (outage days).
pub fn run_vee(
    start_ts_ms: i64,
    values: &[Option<f64>],
    excluded_days: &BTreeSet<i64>,
    config: &VeeConfig,
) -> Result<VeeOutcome> {
    config.validate()?;
    if let Some(i) = values
        .iter()
        .position(|v| v.is_some_and(|v| !v.is_finite()))
    {
        return Err(AnalyticsError::InvalidInput(format!(
            "value {i} is not finite; VEE works on accepted readings only"
        )));
    }
    let zero_runs = find_zero_runs(values, config.zero_run_min);
    let frozen_runs = find_frozen_runs(values, config.frozen_run_min);
    let days = DayIndex::new(
        start_ts_ms,
        values,
        config,
        excluded_days,
        &zero_runs,
        &frozen_runs,
    );

    let mut out = values.to_vec();
    let mut edits = Vec::new();
    let mut unestimated = Vec::new();
    for gap in find_gaps(values) {
        let neighbours = (gap.first.checked_sub(1), gap.end());
        let inner = match neighbours {
            (Some(b), a) if gap.len <= config.max_interpolation_gap && a < values.len() => {
                values[b].zip(values[a])
            }
            _ => None,
        };
        if let Some((before, after)) = inner {
            let estimates = interpolate(before, after, gap.len);
            for (k, value) in estimates.into_iter().enumerate() {
                out[gap.first + k] = Some(value);
                edits.push(days.edit(gap.first + k, None, value, VeeRule::LinearInterpolation));
            }
            continue;
        }
        let mut missing_from: Option<usize> = None;
        for (i, slot) in out.iter_mut().enumerate().take(gap.end()).skip(gap.first) {
            match days.like_day_estimate(values, i) {
                Some(value) => {
                    *slot = Some(value);
                    edits.push(days.edit(i, None, value, VeeRule::LikeDay));
                    if let Some(first) = missing_from.take() {
                        unestimated.push(Run {
                            first,
                            len: i - first,
                        });
                    }
                }
                None => {
                    missing_from.get_or_insert(i);
                }
            }
        }
        if let Some(first) = missing_from {
            unestimated.push(Run {
                first,
                len: gap.end() - first,
            });
        }
    }
    for (runs, rule) in [
        (&zero_runs, VeeRule::ZeroRun),
        (&frozen_runs, VeeRule::FrozenRun),
    ] {
        for i in runs.iter().flat_map(|r| r.first..r.end()) {
            let raw = values[i].expect("flagged runs consist of measured values");
            edits.push(days.edit(i, Some(raw), raw, rule));
        }
    }
    edits.sort_by_key(|e| e.index);
    Ok(VeeOutcome {
        values: out,
        edits,
        unestimated,
    })
}

/// Which local days of the series are usable as like days.
struct DayIndex<'a> {
    start_ts_ms: i64,
    config: &'a VeeConfig,
    first_day: i64,
    /// `valid[d - first_day]`.
    valid: Vec<bool>,
}

impl<'a> DayIndex<'a> {
    fn new(
        start_ts_ms: i64,
        values: &[Option<f64>],
        config: &'a VeeConfig,
        excluded: &BTreeSet<i64>,
        zero_runs: &[Run],
        frozen_runs: &[Run],
    ) -> DayIndex<'a> {
        let day_of = |i: usize| {
            config
                .offset
                .day(start_ts_ms + i as i64 * config.interval_ms)
        };
        let first_day = day_of(0);
        let last_day = day_of(values.len().saturating_sub(1));
        let mut valid = vec![true; (last_day - first_day + 1).max(0) as usize];
        let mut counts = vec![0usize; valid.len()];
        for (i, v) in values.iter().enumerate() {
            let d = (day_of(i) - first_day) as usize;
            if v.is_some() {
                counts[d] += 1;
            }
        }
        let flagged = zero_runs
            .iter()
            .chain(frozen_runs)
            .flat_map(|r| r.first..r.end());
        for i in flagged {
            valid[(day_of(i) - first_day) as usize] = false;
        }
        for (d, ok) in valid.iter_mut().enumerate() {
            let day = first_day + d as i64;
            *ok = *ok && counts[d] == config.intervals_per_day() && !excluded.contains(&day);
        }
        DayIndex {
            start_ts_ms,
            config,
            first_day,
            valid,
        }
    }

    fn ts(&self, i: usize) -> i64 {
        self.start_ts_ms + i as i64 * self.config.interval_ms
    }

    fn edit(&self, index: usize, raw: Option<f64>, value: f64, rule: VeeRule) -> Edit {
        Edit {
            index,
            start_ts_ms: self.ts(index),
            raw,
            value,
            rule,
        }
    }

    /// Mean of the same slot on the nearest valid like days of interval `i`'s day.
    fn like_day_estimate(&self, values: &[Option<f64>], i: usize) -> Option<f64> {
        let c = self.config;
        let per_day = c.intervals_per_day() as i64;
        let day = c.offset.day(self.ts(i));
        let class = c.day_classes.class_of(crate::time::Weekday::of_day(day));
        let mut found = Vec::with_capacity(c.like_days);
        for distance in 1..=c.like_day_lookback_days as i64 {
            for candidate in [day - distance, day + distance] {
                let offset = candidate - self.first_day;
                let usable = offset >= 0
                    && self.valid.get(offset as usize).copied().unwrap_or(false)
                    && c.day_classes
                        .class_of(crate::time::Weekday::of_day(candidate))
                        == class;
                let index = i as i64 + (candidate - day) * per_day;
                if usable && let Some(Some(v)) = values.get(index as usize) {
                    found.push(*v);
                }
                if found.len() == c.like_days {
                    return crate::stats::mean(&found);
                }
            }
        }
        crate::stats::mean(&found)
    }
}

#[cfg(test)]
mod tests;
