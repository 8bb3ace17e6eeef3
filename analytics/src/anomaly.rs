//! Per-meter anomaly detection on interval energy.
//!
//! [`MeterAnomalyDetector`] is fed one interval at a time and runs four rules:
//!
//! 1. **Seasonal deviation** ([`AlertKind::ConsumptionDeviation`]): the value is compared with
//!    the meter's own values at the same time of week (±[`AnomalyRules::neighbour_slots`]
//!    intervals) over the last [`AnomalyRules::history_weeks`] weeks. The robust z-score is
//!    `(value − median) / scale` with `scale = max(1.4826 · MAD, floor · mean level)`; the
//!    floor keeps a meter with very regular consumption from alerting on tiny changes. It
//!    raises when `|z|` exceeds [`AnomalyRules::z_threshold`] and clears after
//!    [`AnomalyRules::deviation_clear_after`] normal intervals.
//! 2. **Zero run** ([`AlertKind::ZeroRun`]): at least [`AnomalyRules::zero_run_min`] zeros in a
//!    row, where the meter usually consumes (the usual values of those slots average at least
//!    [`AnomalyRules::zero_usual_fraction`] of its mean level) — a vacant house or a meter
//!    that only ever reads zero at night does not alert.
//! 3. **Frozen run** ([`AlertKind::FrozenRun`]): at least [`AnomalyRules::frozen_run_min`]
//!    identical non-zero values in a row.
//! 4. **Persistent step down** ([`AlertKind::ConsumptionStep`], theft-like): a lower CUSUM on
//!    the standardised log ratio of each complete day's energy to the median of the last
//!    [`AnomalyRules::step_baseline_days`] days of its class (by default the same weekday:
//!    commercial meters differ from Monday to Friday)
//!    that are at least [`AnomalyRules::step_baseline_lag_days`] old: without the lag the
//!    first days of a step become its own baseline within a working week and the sum stops
//!    growing before it reaches the limit.
//!    It raises when the sum passes [`AnomalyRules::step_h`] and clears after
//!    [`AnomalyRules::step_clear_days`] days back near the baseline. Days while a step is open
//!    are kept out of the baseline, so a step stays raised until consumption returns, the
//!    operator calls [`MeterAnomalyDetector::rebaseline`], or it has lasted
//!    [`AnomalyRules::step_max_open_days`]: then it becomes the new baseline and clears with
//!    [`ClearReason::NewBaseline`] (the alert manager keeps such an alert open for a person
//!    to close), so one legitimate change cannot blind the rule for good. Rises are not
//!    alerted: a new heat pump is not an anomaly.
//!
//! State is about 11 KB per meter in memory (four weeks of f32 values plus eight weeks of
//! daily records); persisted, the ring keeps only its present values. It serialises (serde),
//! so a caller can persist it between activations; one
//! without persisted state rebuilds it from stored readings with
//! [`MeterAnomalyDetector::warm_up`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, AlertKey, AlertKind, Asset, ClearReason, Raise, Severity};
use crate::error::{Result, invalid};
use crate::stats::{MAD_TO_SIGMA, median_in_place, median_mad};
use crate::time::{DAY_MS, DayClasses, LocalOffset, MIN15_MS, Weekday};

/// Anomaly settings; the defaults are the ones measured in `docs/analytics.md`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyRules {
    /// Interval length, ms (must divide a day).
    pub interval_ms: i64,
    /// Local time, for days and weekdays.
    pub offset: LocalOffset,
    /// Weeks of history for the seasonal deviation.
    pub history_weeks: usize,
    /// Neighbouring intervals on each side pooled with the same time of week.
    pub neighbour_slots: usize,
    /// |robust z| above which an interval deviates.
    pub z_threshold: f64,
    /// Smallest scale, as a share of the meter's mean level.
    pub scale_floor: f64,
    /// Normal intervals before a deviation alert clears.
    pub deviation_clear_after: u32,
    /// Shortest zero run that alerts, intervals.
    pub zero_run_min: usize,
    /// Usual consumption during a zero run, as a share of the mean level, needed to alert.
    pub zero_usual_fraction: f64,
    /// Shortest frozen run that alerts, intervals.
    pub frozen_run_min: usize,
    /// Same-class days whose median is a day's baseline.
    pub step_baseline_days: usize,
    /// Days skipped before the baseline days (the baseline lags this much).
    pub step_baseline_lag_days: i64,
    /// Days of standardised ratios the step rule's σ is taken from.
    pub step_sigma_days: usize,
    /// Judged days needed before the step rule alerts.
    pub step_min_days: usize,
    /// CUSUM allowance, in σ.
    pub step_k: f64,
    /// CUSUM decision limit, in σ.
    pub step_h: f64,
    /// Smallest σ of the daily log ratio.
    pub step_sigma_floor: f64,
    /// Days back near the baseline before a step clears.
    pub step_clear_days: u32,
    /// Days after which an open step becomes the new baseline.
    pub step_max_open_days: i64,
    /// Which days are alike.
    pub day_classes: DayClasses,
}

impl Default for AnomalyRules {
    fn default() -> AnomalyRules {
        AnomalyRules {
            interval_ms: MIN15_MS,
            offset: LocalOffset::UTC,
            history_weeks: 4,
            neighbour_slots: 1,
            z_threshold: 10.0,
            scale_floor: 0.3,
            deviation_clear_after: 4,
            zero_run_min: 8,
            zero_usual_fraction: 0.25,
            frozen_run_min: 12,
            step_baseline_days: 5,
            step_baseline_lag_days: 7,
            step_sigma_days: 28,
            step_min_days: 14,
            step_k: 0.75,
            step_h: 6.0,
            step_sigma_floor: 0.05,
            step_clear_days: 3,
            step_max_open_days: 28,
            day_classes: DayClasses::SameWeekday,
        }
    }
}

impl AnomalyRules {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.interval_ms <= 0 || DAY_MS % self.interval_ms != 0 {
            return Err(invalid(
                "interval_ms",
                self.interval_ms,
                "must divide a day evenly",
            ));
        }
        if self.history_weeks == 0 || self.step_baseline_days == 0 || self.step_min_days < 3 {
            return Err(invalid(
                "history_weeks / step_baseline_days / step_min_days",
                format!(
                    "{} / {} / {}",
                    self.history_weeks, self.step_baseline_days, self.step_min_days
                ),
                "need at least 1 / 1 / 3",
            ));
        }
        let positive = [self.z_threshold, self.step_h, self.step_sigma_floor];
        if positive.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(invalid(
                "z_threshold / step_h / step_sigma_floor",
                format!("{positive:?}"),
                "must be above 0",
            ));
        }
        if self.zero_run_min < 2 || self.frozen_run_min < 2 {
            return Err(invalid(
                "zero_run_min / frozen_run_min",
                self.zero_run_min.min(self.frozen_run_min),
                "must be at least 2",
            ));
        }
        Ok(())
    }

    fn per_day(&self) -> usize {
        (DAY_MS / self.interval_ms) as usize
    }

    fn per_week(&self) -> usize {
        7 * self.per_day()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Run {
    len: usize,
    start_ts_ms: i64,
    value: f64,
    usual_sum: f64,
    raised: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct DayRecord {
    day: i64,
    class: u8,
    energy: f64,
    /// Log ratio to its baseline, when judged.
    ratio: Option<f64>,
    /// Inside an open step: not part of baselines.
    flagged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct OpenDay {
    day: i64,
    energy: f64,
    intervals: usize,
}

/// Anomaly state machine of one meter's interval energy channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterAnomalyDetector {
    meter_id: String,
    rules: AnomalyRules,
    /// Ring of the last weeks, by absolute interval position; NaN = no value.
    #[serde(with = "sparse_ring")]
    ring: Vec<f32>,
    ring_sum: f64,
    ring_count: usize,
    last_position: Option<i64>,
    deviation_open: bool,
    deviation_normal_run: u32,
    zero: Option<Run>,
    frozen: Option<Run>,
    open_day: Option<OpenDay>,
    days: VecDeque<DayRecord>,
    cusum: f64,
    cusum_start_day: i64,
    step_open: bool,
    step_opened_day: i64,
    step_clean_days: u32,
}

/// What one interval did.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalVerdict {
    /// Robust z-score against the same time of week (`None` while history is short).
    pub z: Option<f64>,
    /// Alerts raised or cleared.
    pub events: Vec<AlertEvent>,
}

impl MeterAnomalyDetector {
    /// A detector with no history.
    pub fn new(meter_id: impl Into<String>, rules: AnomalyRules) -> Result<MeterAnomalyDetector> {
        rules.validate()?;
        Ok(MeterAnomalyDetector {
            meter_id: meter_id.into(),
            ring: vec![f32::NAN; rules.history_weeks * rules.per_week()],
            rules,
            ring_sum: 0.0,
            ring_count: 0,
            last_position: None,
            deviation_open: false,
            deviation_normal_run: 0,
            zero: None,
            frozen: None,
            open_day: None,
            days: VecDeque::new(),
            cusum: 0.0,
            cusum_start_day: 0,
            step_open: false,
            step_opened_day: 0,
            step_clean_days: 0,
        })
    }

    /// The rules it runs.
    pub fn rules(&self) -> &AnomalyRules {
        &self.rules
    }

    /// Start of the newest interval it observed, ms (`None` before the first).
    pub fn last_interval_start_ms(&self) -> Option<i64> {
        self.last_position.map(|position| {
            position * self.rules.interval_ms - i64::from(self.rules.offset.offset_minutes) * 60_000
        })
    }

    /// Feeds history without reporting (rebuilding a passivated meter's state). Alerts that
    /// were open stay open in the alert manager; a repeated raise is deduplicated there.
    pub fn warm_up(&mut self, intervals: impl IntoIterator<Item = (i64, f64)>) {
        for (start_ts_ms, value) in intervals {
            self.observe_interval(start_ts_ms, value);
        }
    }

    /// Forgets the daily baseline and closes the step rule (after a known change of
    /// consumption, such as a new tenant).
    pub fn rebaseline(&mut self) {
        self.days.clear();
        self.cusum = 0.0;
        self.step_open = false;
        self.step_clean_days = 0;
    }

    /// Feeds the interval starting at `start_ts_ms` with energy `value` (Wh). Intervals must
    /// come in time order; an older one is ignored.
    pub fn observe_interval(&mut self, start_ts_ms: i64, value: f64) -> IntervalVerdict {
        let position = (start_ts_ms + i64::from(self.rules.offset.offset_minutes) * 60_000)
            .div_euclid(self.rules.interval_ms);
        if !value.is_finite() || self.last_position.is_some_and(|last| position <= last) {
            return IntervalVerdict {
                z: None,
                events: Vec::new(),
            };
        }
        self.forget_skipped(position);
        let mut events = Vec::new();
        events.extend(self.close_day_if_new(start_ts_ms));

        let usual = self.usual(position);
        let level = self.level();
        let z = usual.map(|(median, mad)| {
            let scale = (MAD_TO_SIGMA * mad)
                .max(self.rules.scale_floor * level)
                .max(1e-9);
            (value - median) / scale
        });
        events.extend(self.deviation(start_ts_ms, z));
        events.extend(self.zero_run(start_ts_ms, value, usual.map(|u| u.0), level));
        events.extend(self.frozen_run(start_ts_ms, value));

        self.store(position, value);
        self.add_to_day(start_ts_ms, value);
        IntervalVerdict { z, events }
    }

    fn key(&self, kind: AlertKind) -> AlertKey {
        AlertKey::new(kind, Asset::meter(&self.meter_id))
    }

    fn raise(&self, kind: AlertKind, since: i64, ts: i64, value: f64, limit: f64) -> AlertEvent {
        let severity = match kind {
            AlertKind::ConsumptionStep => Severity::Major,
            _ => Severity::Minor,
        };
        let message = match kind {
            AlertKind::ConsumptionDeviation => {
                format!("consumption {value:.2} σ from this meter's usual (limit {limit})")
            }
            AlertKind::ZeroRun => format!("{value} intervals of zero where it usually consumes"),
            AlertKind::FrozenRun => format!("{value} identical non-zero intervals in a row"),
            _ => format!(
                "daily consumption stepped down: {:.0} % of its baseline",
                100.0 * value.exp()
            ),
        };
        AlertEvent::Raise(Raise {
            key: self.key(kind),
            severity,
            since_ts_ms: since,
            ts_ms: ts,
            value,
            limit,
            message,
        })
    }

    fn clear(&self, kind: AlertKind, ts_ms: i64) -> AlertEvent {
        AlertEvent::Clear {
            key: self.key(kind),
            ts_ms,
            reason: ClearReason::Recovered,
        }
    }

    fn ring_index(&self, position: i64) -> usize {
        position.rem_euclid(self.ring.len() as i64) as usize
    }

    fn forget_skipped(&mut self, position: i64) {
        let Some(last) = self.last_position else {
            return;
        };
        let skipped = (position - last - 1).min(self.ring.len() as i64);
        for p in (position - skipped)..position {
            self.store_raw(p, f32::NAN);
        }
    }

    fn store(&mut self, position: i64, value: f64) {
        self.store_raw(position, value as f32);
        self.last_position = Some(position);
    }

    fn store_raw(&mut self, position: i64, value: f32) {
        let i = self.ring_index(position);
        let old = self.ring[i];
        if !old.is_nan() {
            self.ring_sum -= f64::from(old);
            self.ring_count -= 1;
        }
        if !value.is_nan() {
            self.ring_sum += f64::from(value);
            self.ring_count += 1;
        }
        self.ring[i] = value;
    }

    fn level(&self) -> f64 {
        if self.ring_count == 0 {
            0.0
        } else {
            (self.ring_sum / self.ring_count as f64).abs()
        }
    }

    /// Median and MAD of the same time of week (and neighbours) in the previous weeks; `None`
    /// unless at least half of those values exist.
    fn usual(&self, position: i64) -> Option<(f64, f64)> {
        let week = self.rules.per_week() as i64;
        let n = self.rules.neighbour_slots as i64;
        let mut values = Vec::with_capacity(self.rules.history_weeks * (2 * n as usize + 1));
        for k in 1..=self.rules.history_weeks as i64 {
            for j in -n..=n {
                let p = position - k * week + j;
                if self.last_position.is_some_and(|last| p <= last) {
                    let v = self.ring[self.ring_index(p)];
                    if !v.is_nan() {
                        values.push(f64::from(v));
                    }
                }
            }
        }
        let possible = self.rules.history_weeks * (2 * n as usize + 1);
        if values.len() * 2 < possible {
            return None;
        }
        let median = median_in_place(&mut values)?;
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        Some((median, median_in_place(&mut deviations)?))
    }

    fn deviation(&mut self, ts: i64, z: Option<f64>) -> Option<AlertEvent> {
        let z = z?;
        let end = ts + self.rules.interval_ms;
        if z.abs() > self.rules.z_threshold {
            self.deviation_normal_run = 0;
            if !self.deviation_open {
                self.deviation_open = true;
                return Some(self.raise(
                    AlertKind::ConsumptionDeviation,
                    ts,
                    end,
                    z,
                    self.rules.z_threshold,
                ));
            }
            return None;
        }
        self.deviation_normal_run += 1;
        if self.deviation_open && self.deviation_normal_run >= self.rules.deviation_clear_after {
            self.deviation_open = false;
            return Some(self.clear(AlertKind::ConsumptionDeviation, end));
        }
        None
    }

    fn zero_run(
        &mut self,
        ts: i64,
        value: f64,
        usual: Option<f64>,
        level: f64,
    ) -> Option<AlertEvent> {
        let end = ts + self.rules.interval_ms;
        if value != 0.0 {
            let run = self.zero.take()?;
            return run.raised.then(|| self.clear(AlertKind::ZeroRun, end));
        }
        let run = self.zero.get_or_insert(Run {
            len: 0,
            start_ts_ms: ts,
            value: 0.0,
            usual_sum: 0.0,
            raised: false,
        });
        run.len += 1;
        run.usual_sum += usual.unwrap_or(0.0);
        let usually_consumes =
            run.usual_sum / run.len as f64 >= self.rules.zero_usual_fraction * level && level > 0.0;
        if !run.raised && run.len >= self.rules.zero_run_min && usually_consumes {
            run.raised = true;
            let (since, len) = (run.start_ts_ms, run.len);
            let limit = self.rules.zero_run_min as f64;
            return Some(self.raise(AlertKind::ZeroRun, since, end, len as f64, limit));
        }
        None
    }

    fn frozen_run(&mut self, ts: i64, value: f64) -> Option<AlertEvent> {
        let end = ts + self.rules.interval_ms;
        let continues = self.frozen.is_some_and(|run| run.value == value) && value != 0.0;
        if !continues {
            let previous = self.frozen.take();
            if value != 0.0 {
                self.frozen = Some(Run {
                    len: 1,
                    start_ts_ms: ts,
                    value,
                    usual_sum: 0.0,
                    raised: false,
                });
            }
            return previous
                .filter(|run| run.raised)
                .map(|_| self.clear(AlertKind::FrozenRun, end));
        }
        let run = self.frozen.as_mut().expect("a continuing run exists");
        run.len += 1;
        if !run.raised && run.len >= self.rules.frozen_run_min {
            run.raised = true;
            let (since, len) = (run.start_ts_ms, run.len);
            let limit = self.rules.frozen_run_min as f64;
            return Some(self.raise(AlertKind::FrozenRun, since, end, len as f64, limit));
        }
        None
    }

    fn add_to_day(&mut self, ts: i64, value: f64) {
        let day = self.rules.offset.day(ts);
        let open = self.open_day.get_or_insert(OpenDay {
            day,
            energy: 0.0,
            intervals: 0,
        });
        open.energy += value;
        open.intervals += 1;
    }

    fn close_day_if_new(&mut self, ts: i64) -> Option<AlertEvent> {
        let day = self.rules.offset.day(ts);
        let open = self.open_day.filter(|open| open.day < day)?;
        self.open_day = None;
        // A day missing more than a tenth of its intervals is not judged: its energy would
        // look like a step.
        if open.intervals * 10 < self.rules.per_day() * 9 {
            return None;
        }
        let energy = open.energy * self.rules.per_day() as f64 / open.intervals as f64;
        let end_ms = self.rules.offset.day_start_ms(open.day + 1);
        self.judge_day(open.day, energy, end_ms)
    }

    fn judge_day(&mut self, day: i64, energy: f64, end_ms: i64) -> Option<AlertEvent> {
        let r = &self.rules;
        let class = r.day_classes.class_of(Weekday::of_day(day));
        let baseline: Vec<f64> = self
            .days
            .iter()
            .rev()
            .filter(|d| d.class == class && !d.flagged)
            .filter(|d| (r.step_baseline_lag_days..=56).contains(&(day - d.day)))
            .take(r.step_baseline_days)
            .map(|d| d.energy)
            .collect();
        let ratios: Vec<f64> = self
            .days
            .iter()
            .rev()
            .filter(|d| !d.flagged)
            .filter_map(|d| d.ratio)
            .take(r.step_sigma_days)
            .collect();
        let mut record = DayRecord {
            day,
            class,
            energy,
            ratio: None,
            flagged: self.step_open,
        };
        let mut event = None;
        if baseline.len() >= r.step_baseline_days.min(3) {
            let base = crate::stats::median(&baseline).unwrap_or(0.0);
            let floor = 0.01 * base.abs() + 1e-9;
            let ratio = ((energy.max(0.0) + floor) / (base.max(0.0) + floor)).ln();
            record.ratio = Some(ratio);
            if ratios.len() >= r.step_min_days {
                let (_, mad) = median_mad(&ratios).unwrap_or((0.0, 0.0));
                let sigma = (MAD_TO_SIGMA * mad).max(r.step_sigma_floor);
                event = self.step(day, ratio, ratio / sigma, end_ms);
                record.flagged = self.step_open;
            }
        }
        self.days.push_back(record);
        while self.days.len() > 56 {
            self.days.pop_front();
        }
        event
    }

    fn step(&mut self, day: i64, ratio: f64, z: f64, end_ms: i64) -> Option<AlertEvent> {
        let (k, h) = (self.rules.step_k, self.rules.step_h);
        if self.step_open {
            self.step_clean_days = if z > -k { self.step_clean_days + 1 } else { 0 };
            if self.step_clean_days >= self.rules.step_clear_days {
                self.step_open = false;
                self.cusum = 0.0;
                return Some(self.clear(AlertKind::ConsumptionStep, end_ms));
            }
            if day - self.step_opened_day >= self.rules.step_max_open_days {
                // Let the step's own days become the baseline from now on.
                self.days.iter_mut().for_each(|d| d.flagged = false);
                self.step_open = false;
                self.cusum = 0.0;
                return Some(AlertEvent::Clear {
                    key: self.key(AlertKind::ConsumptionStep),
                    ts_ms: end_ms,
                    reason: ClearReason::NewBaseline,
                });
            }
            return None;
        }
        if self.cusum == 0.0 {
            self.cusum_start_day = day;
        }
        self.cusum = (self.cusum - z - k).max(0.0);
        if self.cusum > h {
            self.step_open = true;
            self.step_opened_day = day;
            self.step_clean_days = 0;
            let since = self.rules.offset.day_start_ms(self.cusum_start_day);
            return Some(self.raise(AlertKind::ConsumptionStep, since, end_ms, ratio, -k));
        }
        None
    }
}

/// How the ring is persisted: its length, then each run of present values as its start, its
/// count and the values as little-endian `f32`, all in one byte string. A young meter's ring
/// is mostly empty and costs a few hundred bytes instead of 11 KB; a full one is copied as
/// bytes instead of going through serde value by value. Anything malformed fails the
/// decoding (the caller then rebuilds the detector from stored readings).
mod sparse_ring {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Longer rings than any valid rules make (52 weeks of 1-minute intervals) are refused
    /// before anything is allocated.
    pub(super) const MAX_LEN: usize = 52 * 7 * 24 * 60;

    pub(super) fn serialize<S: Serializer>(ring: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode(ring))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Vec<f32>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an encoded interval ring")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<f32>, E> {
                decode(v).ok_or_else(|| E::custom("malformed interval ring"))
            }
        }
        d.deserialize_bytes(Bytes)
    }

    pub(super) fn encode(ring: &[f32]) -> Vec<u8> {
        let present = ring.iter().filter(|v| !v.is_nan()).count();
        let mut out = Vec::with_capacity(4 + 4 * present + 16);
        out.extend_from_slice(&(ring.len() as u32).to_le_bytes());
        let mut i = 0;
        while i < ring.len() {
            if ring[i].is_nan() {
                i += 1;
                continue;
            }
            let start = i;
            while i < ring.len() && !ring[i].is_nan() {
                i += 1;
            }
            out.extend_from_slice(&(start as u32).to_le_bytes());
            out.extend_from_slice(&((i - start) as u32).to_le_bytes());
            for v in &ring[start..i] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
        fn take_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
            let (head, rest) = bytes.split_first_chunk::<4>()?;
            Some((u32::from_le_bytes(*head) as usize, rest))
        }
        let (len, mut rest) = take_u32(bytes)?;
        if len > MAX_LEN {
            return None;
        }
        let mut ring = vec![f32::NAN; len];
        // Runs come in order and never touch: one encoding per ring.
        let mut free_from = 0;
        while !rest.is_empty() {
            let (start, r) = take_u32(rest)?;
            let (count, r) = take_u32(r)?;
            let end = start.checked_add(count)?;
            if count == 0 || start < free_from || end > len {
                return None;
            }
            let (values, r) = r.split_at_checked(4 * count)?;
            for (slot, value) in ring[start..end].iter_mut().zip(values.chunks_exact(4)) {
                let value = f32::from_le_bytes(value.try_into().ok()?);
                if value.is_nan() {
                    return None;
                }
                *slot = value;
            }
            free_from = end + 1;
            rest = r;
        }
        Some(ring)
    }
}

#[cfg(test)]
mod tests;
