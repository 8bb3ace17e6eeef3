//! Voltage compliance per meter and phase, on window means.
//!
//! Standards ([`VoltageStandard`]), in per unit of the meter's nominal voltage:
//! ANSI C84.1 Range A 0.95–1.05 (normal service), Range B 0.917–1.058 (tolerable, corrective
//! action needed outside it), EN 50160 0.90–1.10 on 10-minute means. A phase whose window
//! mean is outside the range raises [`AlertKind::Undervoltage`] / [`AlertKind::Overvoltage`]
//! only after [`VoltageRules::raise_after_windows`] consecutive windows, and clears after
//! [`VoltageRules::clear_after_windows`] windows back inside.
//!
//! Counters per phase ([`PhaseCounters`]): windows seen, windows below / above, and sag and
//! swell *excursions* (each entry into the low / high band counts once, however long it
//! lasts). On interval means these are sustained under/over-voltages; true PQ sags (half-cycle
//! RMS below 90 %) need a PQ meter and are out of reach of interval data.
//!
//! [`WindowAverager`] turns raw readings into the window means the monitor needs, so the meter
//! actor does not have to keep per-phase sums in its 15-minute accumulator.

use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, AlertKey, AlertKind, Asset, ClearReason, Raise, Severity};
use crate::error::{Result, invalid};
use crate::sustain::{Edge, Sustain};
use crate::time::MINUTE_MS;

/// Which voltage standard applies (chosen per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoltageStandard {
    /// ANSI C84.1 Range A: 0.95–1.05 pu.
    AnsiRangeA,
    /// ANSI C84.1 Range B: 0.917–1.058 pu.
    AnsiRangeB,
    /// EN 50160: ±10 % on 10-minute means.
    En50160,
}

impl VoltageStandard {
    /// Lower and upper limit, per unit.
    pub fn limits_pu(self) -> (f64, f64) {
        match self {
            VoltageStandard::AnsiRangeA => (0.95, 1.05),
            VoltageStandard::AnsiRangeB => (0.917, 1.058),
            VoltageStandard::En50160 => (0.90, 1.10),
        }
    }

    /// The averaging window the standard is defined on, ms (ANSI: the meter's interval, here
    /// 15 minutes; EN 50160: 10 minutes).
    pub fn window_ms(self) -> i64 {
        match self {
            VoltageStandard::En50160 => 10 * MINUTE_MS,
            _ => 15 * MINUTE_MS,
        }
    }
}

/// Voltage rule settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoltageRules {
    /// The standard.
    pub standard: VoltageStandard,
    /// Consecutive windows outside the range before an alert.
    pub raise_after_windows: u32,
    /// Consecutive windows inside before it clears.
    pub clear_after_windows: u32,
}

impl Default for VoltageRules {
    /// ANSI Range A, alert after 2 windows (30 minutes), clear after 2.
    fn default() -> VoltageRules {
        VoltageRules {
            standard: VoltageStandard::AnsiRangeA,
            raise_after_windows: 2,
            clear_after_windows: 2,
        }
    }
}

/// The three phases.
pub const PHASES: [&str; 3] = ["l1", "l2", "l3"];

/// Per-phase counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounters {
    /// Windows with a mean for this phase.
    pub windows: u64,
    /// Windows below the lower limit.
    pub low_windows: u64,
    /// Windows above the upper limit.
    pub high_windows: u64,
    /// Entries into the low band.
    pub sags: u64,
    /// Entries into the high band.
    pub swells: u64,
}

impl PhaseCounters {
    /// Share of windows inside the range (EN 50160 asks ≥ 95 % of a week's 10-minute means).
    pub fn compliance(&self) -> Option<f64> {
        (self.windows > 0)
            .then(|| 1.0 - (self.low_windows + self.high_windows) as f64 / self.windows as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PhaseState {
    low: Sustain,
    high: Sustain,
    in_low: bool,
    in_high: bool,
    counters: PhaseCounters,
    /// Start of the current violating run, ms.
    low_since: i64,
    high_since: i64,
}

/// Voltage state machine of one meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoltageMonitor {
    meter_id: String,
    nominal_v: f64,
    rules: VoltageRules,
    phases: Vec<PhaseState>,
}

impl VoltageMonitor {
    /// A monitor for a meter with `nominal_v` phase-to-neutral (must be > 0: a meter without
    /// a nominal voltage cannot be judged).
    pub fn new(
        meter_id: impl Into<String>,
        nominal_v: f64,
        rules: VoltageRules,
    ) -> Result<VoltageMonitor> {
        if !(nominal_v.is_finite() && nominal_v > 0.0) {
            return Err(invalid(
                "nominal_voltage_v",
                nominal_v,
                "must be set (above 0) to check voltage limits",
            ));
        }
        let phase = PhaseState {
            low: Sustain::new(rules.raise_after_windows, rules.clear_after_windows)?,
            high: Sustain::new(rules.raise_after_windows, rules.clear_after_windows)?,
            in_low: false,
            in_high: false,
            counters: PhaseCounters::default(),
            low_since: 0,
            high_since: 0,
        };
        Ok(VoltageMonitor {
            meter_id: meter_id.into(),
            nominal_v,
            rules,
            phases: vec![phase; 3],
        })
    }

    /// Feeds one window's per-phase means (V); a phase without a value is skipped, neither
    /// confirming nor clearing its condition.
    pub fn observe_window(
        &mut self,
        window_start_ms: i64,
        window_end_ms: i64,
        means_v: [Option<f64>; 3],
    ) -> Vec<AlertEvent> {
        let (lo, hi) = self.rules.standard.limits_pu();
        let mut events = Vec::new();
        for (p, mean) in means_v.iter().enumerate() {
            let Some(mean) = mean.filter(|m| m.is_finite()) else {
                continue;
            };
            let pu = mean / self.nominal_v;
            let (low, high) = (pu < lo, pu > hi);
            let state = &mut self.phases[p];
            state.counters.windows += 1;
            state.counters.low_windows += u64::from(low);
            state.counters.high_windows += u64::from(high);
            state.counters.sags += u64::from(low && !state.in_low);
            state.counters.swells += u64::from(high && !state.in_high);
            if low && !state.in_low {
                state.low_since = window_start_ms;
            }
            if high && !state.in_high {
                state.high_since = window_start_ms;
            }
            state.in_low = low;
            state.in_high = high;
            let checks = [
                (
                    state.low.observe(low),
                    AlertKind::Undervoltage,
                    lo,
                    state.low_since,
                ),
                (
                    state.high.observe(high),
                    AlertKind::Overvoltage,
                    hi,
                    state.high_since,
                ),
            ];
            for (edge, kind, limit, since) in checks {
                let key = AlertKey::qualified(kind, Asset::meter(&self.meter_id), PHASES[p]);
                events.extend(edge.map(|edge| {
                    let message = format!(
                        "{} {} at {:.3} pu ({mean:.1} V, nominal {} V), limit {limit} pu ({:?})",
                        PHASES[p],
                        kind.as_str(),
                        pu,
                        self.nominal_v,
                        self.rules.standard
                    );
                    edge_event(edge, key, since, window_end_ms, pu, limit, message)
                }));
            }
        }
        events
    }

    /// Counters of phase `0..3`.
    pub fn counters(&self, phase: usize) -> PhaseCounters {
        self.phases[phase].counters
    }
}

fn edge_event(
    edge: Edge,
    key: AlertKey,
    since_ts_ms: i64,
    ts_ms: i64,
    value: f64,
    limit: f64,
    message: String,
) -> AlertEvent {
    match edge {
        Edge::Raised { .. } => AlertEvent::Raise(Raise {
            key,
            severity: Severity::Major,
            since_ts_ms,
            ts_ms,
            value,
            limit,
            message,
        }),
        Edge::Cleared => AlertEvent::Clear {
            key,
            ts_ms,
            reason: ClearReason::Recovered,
        },
    }
}

/// A closed averaging window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosedWindow {
    /// Window start, ms.
    pub start_ms: i64,
    /// Window end, ms.
    pub end_ms: i64,
    /// Mean per phase (`None`: no value for that phase in the window).
    pub means_v: [Option<f64>; 3],
}

/// Averages raw per-phase readings into fixed windows (aligned to the epoch).
///
/// Readings are stamped at the end of what they measure, like everywhere in GridMesh, so a
/// reading at `ts` belongs to the window containing `ts - 1`. A reading for a later window
/// closes the open one; a reading for an already closed window is counted as late and
/// dropped (its window has been judged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAverager {
    window_ms: i64,
    open_start_ms: Option<i64>,
    sums: [f64; 3],
    counts: [u32; 3],
    late: u64,
}

impl WindowAverager {
    /// Windows of `window_ms` (> 0).
    pub fn new(window_ms: i64) -> Result<WindowAverager> {
        if window_ms <= 0 {
            return Err(invalid("window_ms", window_ms, "must be above 0"));
        }
        Ok(WindowAverager {
            window_ms,
            open_start_ms: None,
            sums: [0.0; 3],
            counts: [0; 3],
            late: 0,
        })
    }

    /// Adds a reading; returns the window it closed, if any.
    pub fn push(&mut self, ts_ms: i64, volts: [Option<f64>; 3]) -> Option<ClosedWindow> {
        let start = (ts_ms - 1).div_euclid(self.window_ms) * self.window_ms;
        let closed = match self.open_start_ms {
            Some(open) if start < open => {
                self.late += 1;
                return None;
            }
            Some(open) if start > open => self.close(),
            _ => None,
        };
        self.open_start_ms = Some(start);
        for (p, v) in volts.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                self.sums[p] += v;
                self.counts[p] += 1;
            }
        }
        closed
    }

    /// Closes the open window (on a timer when readings stop).
    pub fn close(&mut self) -> Option<ClosedWindow> {
        let start_ms = self.open_start_ms.take()?;
        let means_v = std::array::from_fn(|p| {
            (self.counts[p] > 0).then(|| self.sums[p] / f64::from(self.counts[p]))
        });
        self.sums = [0.0; 3];
        self.counts = [0; 3];
        Some(ClosedWindow {
            start_ms,
            end_ms: start_ms + self.window_ms,
            means_v,
        })
    }

    /// Readings dropped because their window had already closed.
    pub fn late_readings(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: i64 = 15 * MINUTE_MS;

    fn feed(monitor: &mut VoltageMonitor, l1: &[f64]) -> Vec<AlertEvent> {
        l1.iter()
            .enumerate()
            .flat_map(|(i, v)| {
                let start = i as i64 * W;
                let nominal = monitor.nominal_v;
                monitor.observe_window(start, start + W, [Some(*v), Some(nominal), None])
            })
            .collect()
    }

    #[test]
    fn sustained_undervoltage_raises_once_and_clears() {
        let mut m = VoltageMonitor::new("m1", 230.0, VoltageRules::default()).unwrap();
        // 0.94 pu is below Range A; one window alone is not sustained.
        let events = feed(
            &mut m,
            &[230.0, 216.0, 230.0, 216.0, 216.0, 216.0, 230.0, 230.0],
        );
        assert_eq!(events.len(), 2, "{events:?}");
        let AlertEvent::Raise(raise) = &events[0] else {
            panic!("expected a raise first")
        };
        assert_eq!(raise.key.dedup_key(), "undervoltage/meter/m1/l1");
        assert_eq!((raise.since_ts_ms, raise.ts_ms), (3 * W, 5 * W));
        assert!(matches!(events[1], AlertEvent::Clear { ts_ms, .. } if ts_ms == 8 * W));
        let c = m.counters(0);
        assert_eq!((c.windows, c.low_windows, c.sags, c.swells), (8, 4, 2, 0));
        assert_eq!(m.counters(1).compliance(), Some(1.0));
        assert_eq!(
            m.counters(2).windows,
            0,
            "a phase without values is not counted"
        );
    }

    #[test]
    fn the_standard_decides_the_limits() {
        // 0.93 pu: outside Range A, inside Range B and EN 50160.
        for (standard, alerts) in [
            (VoltageStandard::AnsiRangeA, 1),
            (VoltageStandard::AnsiRangeB, 0),
            (VoltageStandard::En50160, 0),
        ] {
            let rules = VoltageRules {
                standard,
                ..VoltageRules::default()
            };
            let mut m = VoltageMonitor::new("m", 120.0, rules).unwrap();
            let events = feed(&mut m, &[111.6; 4]);
            assert_eq!(events.len(), alerts, "{standard:?}");
        }
        assert!(VoltageMonitor::new("m", 0.0, VoltageRules::default()).is_err());
    }

    #[test]
    fn window_averager_closes_windows_and_drops_late_readings() {
        let mut avg = WindowAverager::new(10 * MINUTE_MS).unwrap();
        let minute = MINUTE_MS;
        assert_eq!(avg.push(5 * minute, [Some(230.0), None, None]), None);
        assert_eq!(avg.push(10 * minute, [Some(240.0), None, None]), None);
        let closed = avg.push(11 * minute, [Some(1.0), None, None]).unwrap();
        assert_eq!((closed.start_ms, closed.end_ms), (0, 10 * minute));
        assert_eq!(closed.means_v, [Some(235.0), None, None]);
        assert_eq!(avg.push(3 * minute, [Some(1.0), None, None]), None);
        assert_eq!(avg.late_readings(), 1);
        assert_eq!(avg.close().unwrap().means_v[0], Some(1.0));
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        /// Per phase and direction, raises and clears alternate (starting with a raise), and
        /// the counters add up.
        #[test]
        fn alerts_alternate_and_counters_add_up(
            volts in prop::collection::vec(180.0f64..280.0, 1..300),
            raise_after in 1u32..4,
            clear_after in 1u32..4,
        ) {
            let rules = VoltageRules {
                standard: VoltageStandard::AnsiRangeA,
                raise_after_windows: raise_after,
                clear_after_windows: clear_after,
            };
            let mut m = VoltageMonitor::new("m", 230.0, rules).unwrap();
            let events = feed(&mut m, &volts);
            for kind in [AlertKind::Undervoltage, AlertKind::Overvoltage] {
                let edges: Vec<bool> = events
                    .iter()
                    .filter(|e| e.key().kind == kind)
                    .map(AlertEvent::is_raise)
                    .collect();
                for (i, raise) in edges.iter().enumerate() {
                    prop_assert_eq!(*raise, i % 2 == 0);
                }
            }
            let c = m.counters(0);
            prop_assert_eq!(c.windows as usize, volts.len());
            prop_assert!(c.sags <= c.low_windows && c.swells <= c.high_windows);
            prop_assert!(c.low_windows + c.high_windows <= c.windows);
        }
    }
}
