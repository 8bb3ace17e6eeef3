//! Outage detection, grouping and reliability counts for one feeder.
//!
//! Inputs, one at a time ([`OutageTracker::observe`]): any reading (the meter is alive), a
//! *last gasp* (the meter lost supply and said so from its capacitor) and a *power restore*.
//! A timer ([`OutageTracker::tick`]) marks meters *silent* when nothing arrived for
//! [`OutageRules::silent_after_ms`].
//!
//! Every [`OutageTracker::tick`] and observation re-derives the alert set from the meters'
//! states, so grouping cannot drift:
//!
//! 1. A meter is *confirmed down* once it has been down (gasp or silent) for
//!    [`OutageRules::confirm_ms`]. With the default (5 minutes, the momentary limit) a
//!    momentary interruption never alerts, and by the time an outage is confirmed all the
//!    gasps of a transformer have arrived, so it is reported once, at the right level.
//! 2. A transformer is out when at least [`OutageRules::transformer_fraction`] of its meters
//!    (and at least [`OutageRules::transformer_min_meters`]) are confirmed down; the feeder is
//!    out when [`OutageRules::feeder_fraction`] of all its meters are. An outage stays open
//!    until the last of its meters is back: restores trickle in one by one, and re-reporting
//!    the stragglers as single-meter outages halfway through would be noise. A nested fault
//!    (a few meters still out after the rest came back) therefore shows as the transformer's
//!    outage until they return.
//! 3. Alerts: one [`AlertKind::Outage`] for the feeder, or else one per transformer out, plus
//!    one per confirmed meter outside those (an `Outage` after a last gasp, a
//!    [`AlertKind::MeterSilent`] when it only went quiet — a lone silent meter is most likely
//!    a communications fault). When a wider alert takes over, the narrower ones clear with
//!    [`ClearReason::Superseded`]; raises go out before those clears.
//!
//! **Interruptions** are recorded when a meter comes back (restore event, or any newer
//! reading): momentary if shorter than [`OutageRules::momentary_ms`], sustained otherwise. A
//! silent period counts only if the meter was part of a transformer or feeder outage;
//! a lone silent meter was probably supplied all along. [`OutageTracker::reliability`] turns
//! them into SAIFI / SAIDI / CAIDI / MAIFI with every registered meter as one customer.
//! A silent meter's interruption starts at its last reading, so its duration is an upper bound
//! by up to one reading interval.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, AlertKey, AlertKind, Asset, ClearReason, Raise, Severity};
use crate::error::{AnalyticsError, Result, invalid};
use crate::time::MINUTE_MS;

/// Outage settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageRules {
    /// Interruptions shorter than this are momentary, ms (IEEE 1366: 5 minutes).
    pub momentary_ms: i64,
    /// How long a meter must be down before it alerts, ms.
    pub confirm_ms: i64,
    /// A meter with no reading for this long is silent, ms.
    pub silent_after_ms: i64,
    /// Share of a transformer's meters down that makes a transformer outage.
    pub transformer_fraction: f64,
    /// Fewest meters down for a transformer outage.
    pub transformer_min_meters: u32,
    /// Share of the feeder's meters down that makes a feeder outage.
    pub feeder_fraction: f64,
}

impl Default for OutageRules {
    /// 5-minute momentary limit and confirmation, silent after 45 minutes (three 15-minute
    /// readings missed), 80 % of a transformer (at least 2 meters) or of the feeder.
    fn default() -> OutageRules {
        OutageRules {
            momentary_ms: 5 * MINUTE_MS,
            confirm_ms: 5 * MINUTE_MS,
            silent_after_ms: 45 * MINUTE_MS,
            transformer_fraction: 0.8,
            transformer_min_meters: 2,
            feeder_fraction: 0.8,
        }
    }
}

impl OutageRules {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.momentary_ms < 0 || self.confirm_ms < 0 || self.silent_after_ms <= 0 {
            return Err(invalid(
                "momentary_ms / confirm_ms / silent_after_ms",
                format!(
                    "{} / {} / {}",
                    self.momentary_ms, self.confirm_ms, self.silent_after_ms
                ),
                "must be >= 0 (silent_after_ms > 0)",
            ));
        }
        let fraction = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !fraction(self.transformer_fraction) || !fraction(self.feeder_fraction) {
            return Err(invalid(
                "transformer_fraction / feeder_fraction",
                format!("{} / {}", self.transformer_fraction, self.feeder_fraction),
                "must be within (0, 1]",
            ));
        }
        Ok(())
    }
}

/// What arrived from a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeterSignal {
    /// Any accepted reading: the meter is alive at that time.
    Reading,
    /// The meter lost supply.
    LastGasp,
    /// The meter's supply came back.
    PowerRestore,
}

/// One meter's completed interruption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interruption {
    /// The meter.
    pub meter_id: String,
    /// Its transformer.
    pub transformer_id: String,
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// Shorter than the momentary limit.
    pub momentary: bool,
}

/// Reliability indices over a period, every registered meter counted as one customer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Customers served (meters registered on the feeder).
    pub customers: u32,
    /// Sustained customer interruptions.
    pub sustained_interruptions: u64,
    /// Momentary customer interruptions.
    pub momentary_interruptions: u64,
    /// Customer minutes of sustained interruption.
    pub customer_minutes: f64,
    /// SAIFI: sustained interruptions per customer.
    pub saifi: f64,
    /// SAIDI: minutes of sustained interruption per customer.
    pub saidi_min: f64,
    /// CAIDI: minutes per sustained interruption (`None` without any).
    pub caidi_min: Option<f64>,
    /// MAIFI: momentary interruptions per customer.
    pub maifi: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Cause {
    LastGasp,
    Silent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Down {
    since_ms: i64,
    cause: Cause,
    /// Part of a transformer or feeder outage at some point.
    grouped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MeterState {
    transformer_id: String,
    last_seen_ms: Option<i64>,
    down: Option<Down>,
}

/// Outage state machine of one feeder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutageTracker {
    feeder_id: String,
    rules: OutageRules,
    meters: BTreeMap<String, MeterState>,
    transformers: BTreeMap<String, Vec<String>>,
    open: BTreeMap<AlertKey, i64>,
    interruptions: Vec<Interruption>,
    /// `Some(t)`: no meter is down, no alert is open, and no meter can turn silent before
    /// `t` (the earliest `last_seen + silent_after` when it was computed; `last_seen` only
    /// grows, so the bound stays safe). Deriving the alerts then yields nothing, so
    /// [`OutageTracker::tick`] and [`OutageTracker::evaluate_at`] skip the walk over every
    /// meter, which a healthy feeder would otherwise pay once per batch. Any change to a
    /// meter's `down`, or a meter seen for the first time, clears it.
    #[serde(skip)]
    quiet_until: Option<i64>,
}

impl OutageTracker {
    /// A tracker for a feeder's `(meter_id, transformer_id)` pairs.
    pub fn new(
        feeder_id: impl Into<String>,
        meters: impl IntoIterator<Item = (String, String)>,
        rules: OutageRules,
    ) -> Result<OutageTracker> {
        rules.validate()?;
        let mut tracker = OutageTracker {
            feeder_id: feeder_id.into(),
            rules,
            meters: BTreeMap::new(),
            transformers: BTreeMap::new(),
            open: BTreeMap::new(),
            interruptions: Vec::new(),
            quiet_until: None,
        };
        for (meter_id, transformer_id) in meters {
            tracker
                .transformers
                .entry(transformer_id.clone())
                .or_default()
                .push(meter_id.clone());
            let state = MeterState {
                transformer_id,
                last_seen_ms: None,
                down: None,
            };
            if tracker.meters.insert(meter_id.clone(), state).is_some() {
                return Err(AnalyticsError::InvalidInput(format!(
                    "meter {meter_id} is listed twice on feeder {}",
                    tracker.feeder_id
                )));
            }
        }
        Ok(tracker)
    }

    /// Feeds one signal of one meter at `ts_ms` and re-derives the alerts.
    pub fn observe(
        &mut self,
        meter_id: &str,
        signal: MeterSignal,
        ts_ms: i64,
    ) -> Result<Vec<AlertEvent>> {
        self.note(meter_id, signal, ts_ms)?;
        Ok(self.evaluate(ts_ms))
    }

    /// Applies one signal without re-deriving the alerts. Deriving them walks every meter of
    /// the feeder, so a caller with a batch of signals notes them all and then calls
    /// [`OutageTracker::tick`] (or [`OutageTracker::evaluate_at`]) once. Interruptions are
    /// recorded here, exactly as [`OutageTracker::observe`] records them.
    pub fn note(&mut self, meter_id: &str, signal: MeterSignal, ts_ms: i64) -> Result<()> {
        let Some(meter) = self.meters.get_mut(meter_id) else {
            return Err(AnalyticsError::InvalidInput(format!(
                "meter {meter_id} is not registered on feeder {}",
                self.feeder_id
            )));
        };
        let first_seen = signal != MeterSignal::LastGasp && meter.last_seen_ms.is_none();
        let before = meter.down;
        let restored = match (signal, meter.down) {
            (MeterSignal::LastGasp, down) => {
                let stale = meter.last_seen_ms.is_some_and(|seen| ts_ms < seen);
                let already = down.is_some_and(|d| d.cause == Cause::LastGasp);
                if !stale && !already {
                    let grouped = down.is_some_and(|d| d.grouped);
                    meter.down = Some(Down {
                        since_ms: ts_ms,
                        cause: Cause::LastGasp,
                        grouped,
                    });
                }
                None
            }
            (MeterSignal::Reading | MeterSignal::PowerRestore, Some(down))
                if ts_ms > down.since_ms =>
            {
                meter.down = None;
                Some(down)
            }
            _ => None,
        };
        if signal != MeterSignal::LastGasp {
            meter.last_seen_ms = Some(meter.last_seen_ms.map_or(ts_ms, |s| s.max(ts_ms)));
        }
        // A meter going down or up, or a first silence deadline (possibly earlier than the
        // cached one), ends the quiet spell.
        if first_seen || meter.down != before {
            self.quiet_until = None;
        }
        if let Some(down) = restored {
            self.record(meter_id, down, ts_ms);
        }
        Ok(())
    }

    /// Re-derives the alerts at `now_ms` without marking silent meters.
    pub fn evaluate_at(&mut self, now_ms: i64) -> Vec<AlertEvent> {
        if self.quiet_until.is_some() {
            return Vec::new();
        }
        self.evaluate(now_ms)
    }

    /// Marks silent meters and re-evaluates at `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<AlertEvent> {
        if self.quiet_until.is_some_and(|until| now_ms < until) {
            return Vec::new();
        }
        for meter in self.meters.values_mut() {
            if let (None, Some(seen)) = (meter.down, meter.last_seen_ms)
                && now_ms - seen >= self.rules.silent_after_ms
            {
                meter.down = Some(Down {
                    since_ms: seen,
                    cause: Cause::Silent,
                    grouped: false,
                });
            }
        }
        self.evaluate(now_ms)
    }

    /// The customer meters it tracks.
    pub fn meters(&self) -> impl Iterator<Item = &String> {
        self.meters.keys()
    }

    /// Completed interruptions, oldest first.
    pub fn interruptions(&self) -> &[Interruption] {
        &self.interruptions
    }

    /// Forgets interruptions that started before `ts_ms` (retention).
    pub fn prune_before(&mut self, ts_ms: i64) {
        self.interruptions.retain(|i| i.start_ms >= ts_ms);
    }

    /// Meters currently down.
    pub fn meters_down(&self) -> usize {
        self.meters.values().filter(|m| m.down.is_some()).count()
    }

    /// Reliability indices of the interruptions that started in `[from_ms, to_ms)`.
    pub fn reliability(&self, from_ms: i64, to_ms: i64) -> Reliability {
        let in_range = self
            .interruptions
            .iter()
            .filter(|i| i.start_ms >= from_ms && i.start_ms < to_ms);
        let (mut sustained, mut momentary, mut minutes) = (0u64, 0u64, 0.0);
        for i in in_range {
            if i.momentary {
                momentary += 1;
            } else {
                sustained += 1;
                minutes += (i.end_ms - i.start_ms) as f64 / MINUTE_MS as f64;
            }
        }
        let customers = self.meters.len() as u32;
        let per_customer = |v: f64| {
            if customers == 0 {
                0.0
            } else {
                v / f64::from(customers)
            }
        };
        Reliability {
            customers,
            sustained_interruptions: sustained,
            momentary_interruptions: momentary,
            customer_minutes: minutes,
            saifi: per_customer(sustained as f64),
            saidi_min: per_customer(minutes),
            caidi_min: (sustained > 0).then(|| minutes / sustained as f64),
            maifi: per_customer(momentary as f64),
        }
    }

    fn record(&mut self, meter_id: &str, down: Down, end_ms: i64) {
        if down.cause == Cause::Silent && !down.grouped {
            return;
        }
        let transformer_id = self.meters[meter_id].transformer_id.clone();
        self.interruptions.push(Interruption {
            meter_id: meter_id.to_owned(),
            transformer_id,
            start_ms: down.since_ms,
            end_ms,
            momentary: end_ms - down.since_ms < self.rules.momentary_ms,
        });
    }

    /// The alerts that should be open now, with the start of each condition.
    fn wanted(&mut self, now_ms: i64) -> BTreeMap<AlertKey, (i64, usize)> {
        let confirm = self.rules.confirm_ms;
        let confirmed = |m: &MeterState| m.down.filter(|d| now_ms - d.since_ms >= confirm);
        let earliest = |ids: &[&String], meters: &BTreeMap<String, MeterState>| {
            ids.iter()
                .filter_map(|id| confirmed(&meters[*id]).map(|d| d.since_ms))
                .min()
                .unwrap_or(now_ms)
        };
        let mut wanted = BTreeMap::new();
        let all: Vec<&String> = self.meters.keys().collect();
        let down_total = all
            .iter()
            .filter(|id| confirmed(&self.meters[**id]).is_some())
            .count();
        let any_down = |ids: &[&String], meters: &BTreeMap<String, MeterState>| {
            ids.iter().any(|id| meters[*id].down.is_some())
        };
        let feeder_key = AlertKey::new(AlertKind::Outage, Asset::feeder(&self.feeder_id));
        let feeder_out = !all.is_empty()
            && down_total as f64 >= self.rules.feeder_fraction * all.len() as f64
            && down_total >= self.rules.transformer_min_meters as usize
            || self.open.contains_key(&feeder_key) && any_down(&all, &self.meters);
        let mut grouped: BTreeSet<String> = BTreeSet::new();
        if feeder_out {
            let key = feeder_key;
            wanted.insert(key, (earliest(&all, &self.meters), down_total));
            grouped.extend(all.iter().map(|id| (*id).clone()));
        } else {
            for (transformer, ids) in &self.transformers {
                let ids: Vec<&String> = ids.iter().collect();
                let down = ids
                    .iter()
                    .filter(|id| confirmed(&self.meters[**id]).is_some())
                    .count();
                let key = AlertKey::new(AlertKind::Outage, Asset::transformer(transformer));
                let out = down >= self.rules.transformer_min_meters as usize
                    && down as f64 >= self.rules.transformer_fraction * ids.len() as f64
                    || self.open.contains_key(&key) && any_down(&ids, &self.meters);
                if out {
                    wanted.insert(key, (earliest(&ids, &self.meters), down));
                    grouped.extend(ids.iter().map(|id| (*id).clone()));
                }
            }
        }
        for (id, meter) in &mut self.meters {
            if grouped.contains(id) {
                if let Some(d) = meter.down.as_mut() {
                    d.grouped = true;
                }
                continue;
            }
            let Some(down) = confirmed(meter) else {
                continue;
            };
            let kind = match down.cause {
                Cause::LastGasp => AlertKind::Outage,
                Cause::Silent => AlertKind::MeterSilent,
            };
            wanted.insert(AlertKey::new(kind, Asset::meter(id)), (down.since_ms, 1));
        }
        wanted
    }

    fn evaluate(&mut self, now_ms: i64) -> Vec<AlertEvent> {
        let wanted = self.wanted(now_ms);
        let mut events = Vec::new();
        for (key, (since, meters)) in &wanted {
            if self.open.contains_key(key) {
                continue;
            }
            self.open.insert(key.clone(), *since);
            events.push(AlertEvent::Raise(self.raise(
                key.clone(),
                *since,
                now_ms,
                *meters,
            )));
        }
        let gone: Vec<AlertKey> = self
            .open
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.open.remove(&key);
            let still_down = key.asset.kind == crate::alert::AssetKind::Meter
                && self
                    .meters
                    .get(&key.asset.id)
                    .is_some_and(|m| m.down.is_some())
                || key.asset.kind == crate::alert::AssetKind::Transformer
                    && wanted
                        .keys()
                        .any(|k| k.asset.kind == crate::alert::AssetKind::Feeder);
            let reason = if still_down {
                ClearReason::Superseded
            } else {
                ClearReason::Recovered
            };
            events.push(AlertEvent::Clear {
                key,
                ts_ms: now_ms,
                reason,
            });
        }
        self.quiet_until = self.quiet_bound();
        events
    }

    /// See [`OutageTracker::quiet_until`]: `None` unless every meter is up and nothing is open.
    fn quiet_bound(&self) -> Option<i64> {
        if !self.open.is_empty() || self.meters.values().any(|m| m.down.is_some()) {
            return None;
        }
        let silent_after = self.rules.silent_after_ms;
        Some(
            self.meters
                .values()
                .filter_map(|m| m.last_seen_ms)
                .map(|seen| seen.saturating_add(silent_after))
                .min()
                .unwrap_or(i64::MAX),
        )
    }

    fn raise(&self, key: AlertKey, since_ms: i64, now_ms: i64, meters: usize) -> Raise {
        let (severity, what) = match (key.kind, key.asset.kind) {
            (AlertKind::MeterSilent, _) => (Severity::Minor, "silent (no readings)"),
            (_, crate::alert::AssetKind::Feeder) => (Severity::Critical, "feeder outage"),
            (_, crate::alert::AssetKind::Transformer) => (Severity::Major, "transformer outage"),
            _ => (Severity::Minor, "meter out of supply (last gasp)"),
        };
        let message = format!(
            "{} {}: {what}, {meters} meter(s) down since {}",
            match key.asset.kind {
                crate::alert::AssetKind::Meter => "meter",
                crate::alert::AssetKind::Transformer => "transformer",
                crate::alert::AssetKind::Feeder => "feeder",
            },
            key.asset.id,
            crate::time::format_utc(since_ms)
        );
        Raise {
            key,
            severity,
            since_ts_ms: since_ms,
            ts_ms: now_ms,
            value: meters as f64,
            limit: 0.0,
            message,
        }
    }
}

#[cfg(test)]
mod tests;
