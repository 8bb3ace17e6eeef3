//! What the rules emit: alert raises and clears, keyed for deduplication.
//!
//! Every rule in this crate is a state machine that returns [`AlertEvent`]s. A rule raises a
//! condition once when it becomes true (after its sustain window) and clears it once when it
//! ends, so the same [`AlertKey`] alternates raise, clear, raise … and never raises twice in a
//! row. The `AlertManager` can therefore treat a raise of an open key as a repeat (an
//! occurrence) and a clear as the trigger for auto-resolve.

use serde::{Deserialize, Serialize};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Worth recording; no action expected.
    Info,
    /// Look at it during working hours.
    Minor,
    /// Act soon: equipment stressed or customers affected.
    Major,
    /// Act now: customers out of supply or equipment overloaded.
    Critical,
}

/// The kind of grid asset an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssetKind {
    /// One customer or head meter.
    Meter,
    /// A distribution transformer (the meters registered with its `transformer_id`).
    Transformer,
    /// A feeder.
    Feeder,
}

/// The asset an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Asset {
    /// Meter, transformer or feeder.
    pub kind: AssetKind,
    /// Its id as registered.
    pub id: String,
}

impl Asset {
    /// A meter.
    pub fn meter(id: impl Into<String>) -> Asset {
        Asset {
            kind: AssetKind::Meter,
            id: id.into(),
        }
    }

    /// A transformer.
    pub fn transformer(id: impl Into<String>) -> Asset {
        Asset {
            kind: AssetKind::Transformer,
            id: id.into(),
        }
    }

    /// A feeder.
    pub fn feeder(id: impl Into<String>) -> Asset {
        Asset {
            kind: AssetKind::Feeder,
            id: id.into(),
        }
    }
}

/// What condition an alert reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertKind {
    /// Voltage below the standard's lower limit for the sustain window.
    Undervoltage,
    /// Voltage above the standard's upper limit for the sustain window.
    Overvoltage,
    /// Loading above the warning threshold.
    LoadingHigh,
    /// Loading above 100 % for the sustain window.
    Overload,
    /// Net active power flowing back towards the source beyond the margin.
    ReverseFlow,
    /// A load forecast crosses the rating.
    PredictedOverload,
    /// Energy-balance loss ratio above the loss band for the configured days.
    EnergyLoss,
    /// Energy-balance loss ratio stepped away from the feeder's own history.
    EnergyBalanceStep,
    /// Meters out of supply (last gasp, or silent together with their transformer).
    Outage,
    /// One meter silent with no sign of an outage (most likely communications).
    MeterSilent,
    /// A value far from the meter's usual value at that time of week.
    ConsumptionDeviation,
    /// A run of zero readings where the meter usually consumes.
    ZeroRun,
    /// A run of identical non-zero readings (a stuck register or a stuck pulse input).
    FrozenRun,
    /// Daily energy stepped away from its baseline and stayed there (theft-like when down).
    ConsumptionStep,
}

impl AlertKind {
    /// Stable snake_case name, used in dedup keys and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Undervoltage => "undervoltage",
            AlertKind::Overvoltage => "overvoltage",
            AlertKind::LoadingHigh => "loading_high",
            AlertKind::Overload => "overload",
            AlertKind::ReverseFlow => "reverse_flow",
            AlertKind::PredictedOverload => "predicted_overload",
            AlertKind::EnergyLoss => "energy_loss",
            AlertKind::EnergyBalanceStep => "energy_balance_step",
            AlertKind::Outage => "outage",
            AlertKind::MeterSilent => "meter_silent",
            AlertKind::ConsumptionDeviation => "consumption_deviation",
            AlertKind::ZeroRun => "zero_run",
            AlertKind::FrozenRun => "frozen_run",
            AlertKind::ConsumptionStep => "consumption_step",
        }
    }
}

/// Identity of one condition on one asset: the same key is the same alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    /// What condition.
    pub kind: AlertKind,
    /// On which asset.
    pub asset: Asset,
    /// Narrows the condition where one asset can have several at once (a phase such as
    /// `l2`, a direction such as `down`); empty otherwise.
    pub qualifier: String,
}

impl AlertKey {
    /// A key without qualifier.
    pub fn new(kind: AlertKind, asset: Asset) -> AlertKey {
        AlertKey {
            kind,
            asset,
            qualifier: String::new(),
        }
    }

    /// A key with a qualifier.
    pub fn qualified(kind: AlertKind, asset: Asset, qualifier: impl Into<String>) -> AlertKey {
        AlertKey {
            kind,
            asset,
            qualifier: qualifier.into(),
        }
    }

    /// The flat dedup key, e.g. `overvoltage/meter/M-17/l2`.
    pub fn dedup_key(&self) -> String {
        let asset = match self.asset.kind {
            AssetKind::Meter => "meter",
            AssetKind::Transformer => "transformer",
            AssetKind::Feeder => "feeder",
        };
        let mut key = format!("{}/{asset}/{}", self.kind.as_str(), self.asset.id);
        if !self.qualifier.is_empty() {
            key.push('/');
            key.push_str(&self.qualifier);
        }
        key
    }
}

/// A condition became true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Raise {
    /// Which alert.
    pub key: AlertKey,
    /// How urgent.
    pub severity: Severity,
    /// When the condition started (start of the first violating window), ms.
    pub since_ts_ms: i64,
    /// When it was confirmed (end of the window that completed the sustain rule), ms.
    pub ts_ms: i64,
    /// The measured value that confirmed it (per unit, percent, ratio … see `message`).
    pub value: f64,
    /// The limit it crossed.
    pub limit: f64,
    /// One line for an operator.
    pub message: String,
}

/// Why a condition stopped being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClearReason {
    /// The condition ended (for the configured clear window).
    Recovered,
    /// A wider alert now covers it (a meter outage absorbed into its transformer's outage).
    Superseded,
    /// The condition lasted so long that the rule took it as the new normal (a consumption
    /// step older than its hold time). Not a recovery: the alert manager should not
    /// auto-resolve on it.
    NewBaseline,
}

/// What a rule tells the alert manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlertEvent {
    /// Open (or repeat) the alert.
    Raise(Raise),
    /// The condition is over.
    Clear {
        /// Which alert.
        key: AlertKey,
        /// When the clear was confirmed, ms.
        ts_ms: i64,
        /// Why.
        reason: ClearReason,
    },
}

impl AlertEvent {
    /// The key of the alert this event is about.
    pub fn key(&self) -> &AlertKey {
        match self {
            AlertEvent::Raise(raise) => &raise.key,
            AlertEvent::Clear { key, .. } => key,
        }
    }

    /// Whether this event opens an alert.
    pub fn is_raise(&self) -> bool {
        matches!(self, AlertEvent::Raise(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_name_kind_asset_and_qualifier() {
        let key = AlertKey::qualified(AlertKind::Overvoltage, Asset::meter("M-17"), "l2");
        assert_eq!(key.dedup_key(), "overvoltage/meter/M-17/l2");
        let key = AlertKey::new(AlertKind::Outage, Asset::transformer("T1"));
        assert_eq!(key.dedup_key(), "outage/transformer/T1");
    }
}
