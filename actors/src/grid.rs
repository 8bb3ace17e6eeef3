//! The grid rules as the actors run them: the glue between the meter and feeder actors and the
//! pure rules of [`gridmesh_analytics`].
//!
//! - [`MeterRules`] (in each meter actor, on the meter's primary only — replicas do not raise
//!   alerts): per-phase voltage on interval means against the deployment's standard.
//! - [`FeederRules`] (in the feeder actor on the feeder's owner, which receives every meter's
//!   contributions and outage signals wherever the meters live): loading, overload and
//!   reverse flow once per 15-minute interval after `analytics.feeder_settle`; outages from
//!   last gasps, restores and silent meters, grouped by transformer; the daily energy balance;
//!   and a day-ahead load forecast refitted every local midnight, with a predicted-overload
//!   alert.
//!
//! Time is meter time throughout, and a feeder's time is the median of its meters' newest
//! readings ([`FeederRules::watermark`]): an interval is judged once most meters have
//! reported `feeder_settle` past its end, and a meter is silent when it lags most of its
//! feeder by `meter_silent_after`. A simulated day thus runs as fast as its readings arrive
//! and a real one in real time, and readings delivered out of order (many batches in flight,
//! late head-ends) neither make healthy meters look silent nor get an interval judged
//! before its readings are in.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use gridmesh_analytics::alert::{AlertEvent, Asset};
use gridmesh_analytics::balance::{BalanceDay, BalanceRules, EnergyBalanceMonitor};
use gridmesh_analytics::forecast::{ForecastConfig, Forecaster};
use gridmesh_analytics::loading::{LoadingMonitor, LoadingRules, PredictedOverloadMonitor};
use gridmesh_analytics::outage::{MeterSignal, OutageRules, OutageTracker};
use gridmesh_analytics::voltage::{VoltageMonitor, VoltageRules, VoltageStandard, WindowAverager};
use gridmesh_config::{AnalyticsConfig, VoltageStandard as Standard};
use gridmesh_proto::v1::{MeterEventKind, Reading};

use crate::buckets::MIN15_MS;

const DAY_MS: i64 = 86_400_000;

/// A meter's signal for its feeder's outage tracker.
#[derive(Debug, Clone, PartialEq)]
pub struct OutageSignal {
    /// The meter.
    pub meter_id: String,
    /// Reading time (meter time), ms.
    pub ts_ms: i64,
    /// What it says.
    pub signal: SignalKind,
}

/// What a meter's reading says about its supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// A reading: supplied at that time.
    Reading,
    /// Last gasp.
    LastGasp,
    /// Power restore.
    Restore,
}

impl From<SignalKind> for MeterSignal {
    fn from(kind: SignalKind) -> MeterSignal {
        match kind {
            SignalKind::Reading => MeterSignal::Reading,
            SignalKind::LastGasp => MeterSignal::LastGasp,
            SignalKind::Restore => MeterSignal::PowerRestore,
        }
    }
}

/// The supply signals in one accepted reading.
pub fn signals_of(meter_id: &str, reading: &Reading) -> Vec<OutageSignal> {
    let mut out = Vec::with_capacity(reading.events.len().max(1));
    for event in &reading.events {
        let signal = match MeterEventKind::try_from(*event) {
            Ok(MeterEventKind::LastGasp) => SignalKind::LastGasp,
            Ok(MeterEventKind::PowerRestore) => SignalKind::Restore,
            _ => continue,
        };
        out.push(OutageSignal {
            meter_id: meter_id.to_owned(),
            ts_ms: reading.ts_ms,
            signal,
        });
    }
    if out.is_empty() {
        out.push(OutageSignal {
            meter_id: meter_id.to_owned(),
            ts_ms: reading.ts_ms,
            signal: SignalKind::Reading,
        });
    }
    out
}

fn voltage_rules(config: &AnalyticsConfig) -> VoltageRules {
    VoltageRules {
        standard: match config.voltage_standard {
            Standard::AnsiRangeA => VoltageStandard::AnsiRangeA,
            Standard::AnsiRangeB => VoltageStandard::AnsiRangeB,
            Standard::En50160 => VoltageStandard::En50160,
        },
        raise_after_windows: config.voltage_raise_after_windows,
        clear_after_windows: config.voltage_clear_after_windows,
    }
}

/// The rules one meter actor runs.
#[derive(Debug)]
pub struct MeterRules {
    averager: WindowAverager,
    voltage: VoltageMonitor,
}

impl MeterRules {
    /// Rules for a meter of `nominal_v` (none when analytics are off or the meter has no
    /// nominal voltage: its voltage cannot be judged).
    pub fn new(config: &AnalyticsConfig, meter_id: &str, nominal_v: f64) -> Option<MeterRules> {
        if !config.enabled {
            return None;
        }
        let rules = voltage_rules(config);
        let voltage = VoltageMonitor::new(meter_id, nominal_v, rules).ok()?;
        let averager = WindowAverager::new(rules.standard.window_ms()).ok()?;
        Some(MeterRules { averager, voltage })
    }

    /// An accepted, in-order reading; returns alert events.
    pub fn observe(&mut self, reading: &Reading) -> Vec<AlertEvent> {
        let Some(v) = reading.voltage_v.as_ref() else {
            return Vec::new();
        };
        match self.averager.push(reading.ts_ms, [v.l1, v.l2, v.l3]) {
            Some(w) => self.voltage.observe_window(w.start_ms, w.end_ms, w.means_v),
            None => Vec::new(),
        }
    }
}

/// What a feeder's rules need from the registry.
#[derive(Debug, Clone)]
pub struct FeederSetup {
    /// The feeder.
    pub feeder_id: String,
    /// Rating, kVA (0: not rated, no loading rules).
    pub rating_kva: f64,
    /// Its meters with their transformer ids (the head meter excluded).
    pub meters: Vec<(String, String)>,
    /// Its rated transformers: id and rating, kVA.
    pub transformers: Vec<(String, f64)>,
}

/// A day-ahead forecast of a feeder's mean load.
#[derive(Debug, Clone, PartialEq)]
pub struct FeederForecast {
    /// When it was made (meter time), ms.
    pub issued_ts_ms: i64,
    /// Start of the first period, ms.
    pub first_start_ms: i64,
    /// Period length, ms.
    pub step_ms: i64,
    /// Mean load per period, W.
    pub values_w: Vec<f64>,
    /// The method used (after any fallback for short history).
    pub method: String,
}

#[derive(Debug, Default)]
struct DayAcc {
    day: i64,
    head_import_wh: f64,
    head_export_wh: f64,
    customers_wh: f64,
    meters: HashSet<String>,
}

/// The rules one feeder actor runs.
#[derive(Debug)]
pub struct FeederRules {
    feeder_id: String,
    loading: Option<LoadingMonitor>,
    /// Loading of each rated transformer, by id.
    transformer_loading: BTreeMap<String, LoadingMonitor>,
    /// The transformer of each customer meter whose transformer is rated.
    transformer_of: HashMap<String, String>,
    predicted: Option<PredictedOverloadMonitor>,
    outage: OutageTracker,
    balance: EnergyBalanceMonitor,
    forecast_config: ForecastConfig,
    customer_meters: u32,
    settle_ms: i64,
    offset_ms: i64,
    /// Start of the next interval to judge.
    next: Option<i64>,
    /// Newest reading time of each customer meter.
    last_seen: std::collections::HashMap<String, i64>,
    /// Mean load of judged intervals, oldest first (the forecast's history).
    history: VecDeque<f64>,
    history_max: usize,
    day: Option<DayAcc>,
    forecast: Option<FeederForecast>,
}

/// A judged interval's totals, as the feeder actor's live view has them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IntervalTotals {
    /// Customer import minus export, Wh.
    pub customer_net_wh: f64,
    /// Sum of the customer meters' mean reactive power, var.
    pub customer_reactive_var: f64,
    /// Head meter import, Wh.
    pub head_import_wh: f64,
    /// Head meter export (PV pushing back towards the source), Wh.
    pub head_export_wh: f64,
}

impl FeederRules {
    /// Rules for a feeder (none when analytics are off).
    pub fn new(config: &AnalyticsConfig, setup: FeederSetup) -> Option<FeederRules> {
        if !config.enabled {
            return None;
        }
        let asset = Asset::feeder(setup.feeder_id.clone());
        let rating_va = setup.rating_kva * 1000.0;
        let loading_rules = LoadingRules {
            warn_percent: config.loading_warn_percent,
            overload_percent: config.loading_overload_percent,
            raise_after_windows: config.loading_raise_after_windows,
            reverse_margin_percent: config.reverse_flow_margin_percent,
            ..LoadingRules::default()
        };
        let loading = LoadingMonitor::new(asset.clone(), rating_va, loading_rules).ok();
        let predicted =
            PredictedOverloadMonitor::new(asset, rating_va, config.loading_overload_percent).ok();
        let outage_rules = OutageRules {
            confirm_ms: config.outage_confirm.as_millis() as i64,
            silent_after_ms: config.meter_silent_after.as_millis() as i64,
            ..OutageRules::default()
        };
        let transformer_loading: BTreeMap<String, LoadingMonitor> = setup
            .transformers
            .iter()
            .filter_map(|(id, rating_kva)| {
                let asset = Asset::transformer(id.clone());
                LoadingMonitor::new(asset, rating_kva * 1000.0, loading_rules)
                    .ok()
                    .map(|m| (id.clone(), m))
            })
            .collect();
        let transformer_of = setup
            .meters
            .iter()
            .filter(|(_, t)| transformer_loading.contains_key(t))
            .map(|(m, t)| (m.clone(), t.clone()))
            .collect();
        let customer_meters = setup.meters.len() as u32;
        let outage =
            OutageTracker::new(setup.feeder_id.clone(), setup.meters, outage_rules).ok()?;
        let balance_rules = BalanceRules {
            loss_band: config.balance_loss_band,
            days_sustained: config.balance_days_sustained,
            ..BalanceRules::default()
        };
        let balance = EnergyBalanceMonitor::new(setup.feeder_id.clone(), balance_rules).ok()?;
        let forecast_config = ForecastConfig {
            training_weeks: config.forecast_training_weeks as usize,
            ..ForecastConfig::default()
        };
        let history_max = forecast_config.training_weeks * 7 * 96;
        Some(FeederRules {
            feeder_id: setup.feeder_id,
            loading,
            transformer_loading,
            transformer_of,
            predicted,
            outage,
            balance,
            forecast_config,
            customer_meters,
            settle_ms: config.feeder_settle.as_millis() as i64,
            offset_ms: i64::from(config.utc_offset_minutes) * 60_000,
            next: None,
            last_seen: std::collections::HashMap::new(),
            history: VecDeque::new(),
            history_max,
            day: None,
            forecast: None,
        })
    }

    /// Takes over what `old` learned that does not depend on the feeder's registry entry,
    /// after the entry changed (a new rating, transformers or meters): the feeder's time and
    /// meters' last readings (of meters still on the feeder), the judged-load history and
    /// forecast, and the day's energy balance. The loading monitors and the outage tracker
    /// start afresh on the new setup: a condition they had open is raised again if it still
    /// holds (the alert manager folds it into the open alert).
    pub fn inherit(&mut self, old: FeederRules) {
        let still: HashSet<&String> = self.outage_meters().collect();
        self.last_seen = old
            .last_seen
            .into_iter()
            .filter(|(m, _)| still.contains(m))
            .collect();
        self.next = old.next;
        self.history = old.history;
        while self.history.len() > self.history_max {
            self.history.pop_front();
        }
        self.day = old.day;
        self.forecast = old.forecast;
        self.balance = old.balance;
    }

    fn outage_meters(&self) -> impl Iterator<Item = &String> {
        self.outage.meters()
    }

    /// The latest forecast.
    pub fn forecast(&self) -> Option<&FeederForecast> {
        self.forecast.as_ref()
    }

    /// The feeder's time: the median of its meters' newest readings, once half of them have
    /// reported. Readings arrive out of order (batches in flight, late head-ends), so the
    /// newest timestamp seen says little about the feeder; the median says where most of
    /// its meters are. Silence and judged intervals are measured against it.
    pub fn watermark(&self) -> Option<i64> {
        if self.last_seen.len() * 2 < self.customer_meters as usize {
            return None;
        }
        let mut times: Vec<i64> = self.last_seen.values().copied().collect();
        let mid = times.len() / 2;
        times.select_nth_unstable(mid);
        times.get(mid).copied()
    }

    /// Outage signals from the feeder's meters.
    pub fn signals(&mut self, signals: &[OutageSignal]) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut newest = None;
        for s in signals {
            let signal = MeterSignal::from(s.signal);
            // A meter the tracker does not know (the head meter, or registered after
            // activation) is skipped. The alerts are derived once for the whole batch below.
            if self.outage.note(&s.meter_id, signal, s.ts_ms).is_ok() {
                newest = newest.max(Some(s.ts_ms));
                if signal != MeterSignal::LastGasp {
                    match self.last_seen.get_mut(&s.meter_id) {
                        Some(seen) => *seen = (*seen).max(s.ts_ms),
                        None => {
                            self.last_seen.insert(s.meter_id.clone(), s.ts_ms);
                        }
                    }
                }
            }
        }
        if let Some(now) = self.watermark() {
            if self.next.is_none() {
                self.next = Some((now - 1).div_euclid(MIN15_MS) * MIN15_MS);
            }
            events.extend(self.outage.tick(now));
        } else if let Some(newest) = newest {
            // Too few meters have reported for a feeder time: judge at the newest signal, as
            // each signal did before batches were evaluated once.
            events.extend(self.outage.evaluate_at(newest));
        }
        events
    }

    /// Intervals whose end plus the settle time the readings have passed, in order: the caller
    /// judges each with [`FeederRules::judge`].
    pub fn due(&mut self) -> Vec<i64> {
        let mut due = Vec::new();
        let Some(now) = self.watermark() else {
            return due;
        };
        while let Some(start) = self.next {
            if start + MIN15_MS + self.settle_ms > now || due.len() >= 96 {
                break;
            }
            due.push(start);
            self.next = Some(start + MIN15_MS);
        }
        due
    }

    /// The rated transformer a customer meter is on, if any: the caller sums the meter's
    /// contribution into that transformer's totals for [`FeederRules::judge`].
    pub fn transformer_of(&self, meter: &str) -> Option<&str> {
        self.transformer_of.get(meter).map(String::as_str)
    }

    /// Judges one interval with its totals, the totals of each rated transformer (customer
    /// fields only; a transformer none of whose meters reported counts as unloaded) and the
    /// customer meters that reported in it.
    pub fn judge(
        &mut self,
        start: i64,
        totals: IntervalTotals,
        transformers: &BTreeMap<String, IntervalTotals>,
        meters: &[String],
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let p_w = totals.customer_net_wh * 3_600_000.0 / MIN15_MS as f64;
        if let Some(loading) = &mut self.loading
            && let Ok(window) =
                loading.observe(start, start + MIN15_MS, p_w, totals.customer_reactive_var)
        {
            events.extend(window.events);
        }
        for (id, loading) in &mut self.transformer_loading {
            let t = transformers.get(id).copied().unwrap_or_default();
            let p_w = t.customer_net_wh * 3_600_000.0 / MIN15_MS as f64;
            if let Ok(window) =
                loading.observe(start, start + MIN15_MS, p_w, t.customer_reactive_var)
            {
                events.extend(window.events);
            }
        }
        self.history.push_back(p_w);
        while self.history.len() > self.history_max {
            self.history.pop_front();
        }
        // Local days for the balance and the forecast.
        let local_day = (start + self.offset_ms).div_euclid(DAY_MS);
        if self.day.as_ref().is_some_and(|d| d.day != local_day)
            && let Some(done) = self.day.take()
        {
            events.extend(self.close_day(done, start));
        }
        let day = self.day.get_or_insert_with(|| DayAcc {
            day: local_day,
            ..DayAcc::default()
        });
        day.head_import_wh += totals.head_import_wh;
        day.head_export_wh += totals.head_export_wh;
        day.customers_wh += totals.customer_net_wh;
        day.meters.extend(meters.iter().cloned());
        events
    }

    fn close_day(&mut self, done: DayAcc, next_start: i64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let end_ts_ms = (done.day + 1) * DAY_MS - self.offset_ms;
        // Losses as a share of the energy the head delivered: what left through the head
        // (reverse flow) is counted with what the customers took, so that feeders exporting
        // PV midday do not look lossy against a small net energy.
        let outcome = self.balance.observe_day(&BalanceDay {
            day: done.day,
            end_ts_ms,
            head_wh: done.head_import_wh,
            customers_wh: done.customers_wh + done.head_export_wh,
            meters_reporting: done.meters.len() as u32,
            meters_expected: self.customer_meters,
        });
        events.extend(outcome.events);
        // Refit and forecast the next day from the judged history.
        let history: Vec<f64> = self.history.iter().copied().collect();
        if let Ok(model) = Forecaster::fit(self.forecast_config, &history)
            && let Ok(forecast) = model.forecast(&history)
        {
            if let Some(p) = &mut self.predicted {
                events.extend(p.observe_forecast(
                    next_start,
                    next_start,
                    MIN15_MS,
                    &forecast.values,
                ));
            }
            self.forecast = Some(FeederForecast {
                issued_ts_ms: next_start,
                first_start_ms: next_start,
                step_ms: MIN15_MS,
                values_w: forecast.values,
                method: forecast.method.name().to_owned(),
            });
        }
        metrics::counter!("gridmesh_feeder_days_closed_total").increment(1);
        tracing::debug!(feeder = %self.feeder_id, day = done.day, "feeder day closed");
        events
    }
}

#[cfg(test)]
mod tests {
    use gridmesh_analytics::alert::AlertKind;

    use super::*;

    fn rules() -> FeederRules {
        let setup = FeederSetup {
            feeder_id: "F".into(),
            rating_kva: 100.0,
            meters: (0..4)
                .map(|i| (format!("M{i}"), format!("T{}", i / 2)))
                .collect(),
            transformers: vec![("T0".into(), 25.0)],
        };
        FeederRules::new(&AnalyticsConfig::default(), setup).expect("analytics are on")
    }

    /// Judges `windows` intervals of `p_w` and `q_var`; the kinds raised.
    fn raised(p_w: f64, q_var: f64, windows: i64) -> Vec<AlertKind> {
        let mut rules = rules();
        let totals = IntervalTotals {
            customer_net_wh: p_w * MIN15_MS as f64 / 3_600_000.0,
            customer_reactive_var: q_var,
            ..IntervalTotals::default()
        };
        (0..windows)
            .flat_map(|k| rules.judge(k * MIN15_MS, totals, &BTreeMap::new(), &[]))
            .filter_map(|e| match e {
                AlertEvent::Raise(r) => Some(r.key.kind),
                AlertEvent::Clear { .. } => None,
            })
            .collect()
    }

    #[test]
    fn loading_counts_reactive_power() {
        // 95 kW alone is 95 % of 100 kVA: a warning (above 90 %), no overload.
        let p_only = raised(95_000.0, 0.0, 4);
        assert!(p_only.contains(&AlertKind::LoadingHigh), "{p_only:?}");
        assert!(!p_only.contains(&AlertKind::Overload), "{p_only:?}");
        // With 40 kvar the apparent power is 103 kVA: an overload.
        let with_q = raised(95_000.0, 40_000.0, 4);
        assert!(with_q.contains(&AlertKind::Overload), "{with_q:?}");
    }

    #[test]
    fn a_rated_transformer_is_judged_on_its_own_meters() {
        let mut rules = rules();
        assert_eq!(rules.transformer_of("M0"), Some("T0"));
        assert_eq!(rules.transformer_of("M1"), Some("T0"));
        // T1 has no rating: its meters count for the feeder only.
        assert_eq!(rules.transformer_of("M2"), None);
        // 30 kW on T0 (25 kVA): 120 %, while the feeder (100 kVA) carries 40 kW.
        let wh = |w: f64| w * MIN15_MS as f64 / 3_600_000.0;
        let feeder = IntervalTotals {
            customer_net_wh: wh(40_000.0),
            ..IntervalTotals::default()
        };
        let on_t0 = IntervalTotals {
            customer_net_wh: wh(30_000.0),
            ..IntervalTotals::default()
        };
        let transformers = BTreeMap::from([("T0".to_owned(), on_t0)]);
        let mut raised = Vec::new();
        for k in 0..4 {
            for e in rules.judge(k * MIN15_MS, feeder, &transformers, &[]) {
                if let AlertEvent::Raise(r) = e {
                    raised.push((r.key.kind, r.key.asset));
                }
            }
        }
        let t0 = Asset::transformer("T0");
        assert!(
            raised.contains(&(AlertKind::Overload, t0.clone())),
            "{raised:?}"
        );
        assert!(raised.iter().all(|(_, asset)| *asset == t0), "{raised:?}");
        // The transformer unloaded (none of its meters reported) clears it.
        let mut cleared = Vec::new();
        for k in 4..12 {
            for e in rules.judge(k * MIN15_MS, feeder, &BTreeMap::new(), &[]) {
                if let AlertEvent::Clear { key, .. } = e {
                    cleared.push(key.kind);
                }
            }
        }
        assert!(cleared.contains(&AlertKind::Overload), "{cleared:?}");
    }

    #[test]
    fn re_rated_rules_keep_the_history_and_judge_by_the_new_rating() {
        let mut old = rules();
        let wh = |w: f64| w * MIN15_MS as f64 / 3_600_000.0;
        let totals = IntervalTotals {
            customer_net_wh: wh(40_000.0),
            ..IntervalTotals::default()
        };
        for k in 0..6 {
            assert!(
                old.judge(k * MIN15_MS, totals, &BTreeMap::new(), &[])
                    .is_empty()
            );
        }
        old.last_seen.insert("M0".into(), 5 * MIN15_MS);
        old.last_seen.insert("M3".into(), 5 * MIN15_MS);
        let history = old.history.len();
        assert!(history > 0);
        // M3 leaves the feeder, which is re-rated to 30 kVA.
        let setup = FeederSetup {
            feeder_id: "F".into(),
            rating_kva: 30.0,
            meters: (0..3)
                .map(|i| (format!("M{i}"), format!("T{}", i / 2)))
                .collect(),
            transformers: Vec::new(),
        };
        let mut new = FeederRules::new(&AnalyticsConfig::default(), setup).expect("rules");
        new.inherit(old);
        assert_eq!(new.history.len(), history, "the forecast's history stays");
        assert_eq!(new.last_seen.keys().collect::<Vec<_>>(), ["M0"]);
        assert_eq!(new.transformer_of("M0"), None, "T0 is no longer rated");
        let raised: Vec<AlertKind> = (6..10)
            .flat_map(|k| new.judge(k * MIN15_MS, totals, &BTreeMap::new(), &[]))
            .filter_map(|e| match e {
                AlertEvent::Raise(r) => Some(r.key.kind),
                AlertEvent::Clear { .. } => None,
            })
            .collect();
        assert!(
            raised.contains(&AlertKind::Overload),
            "40 kW on 30 kVA: {raised:?}"
        );
    }
}
