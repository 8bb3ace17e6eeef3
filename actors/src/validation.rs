//! The rules a reading must pass, as pure functions.
//!
//! Validation happens in two places. [`check_shape`] needs nothing but the reading and the
//! clock: it runs in the ingest pipeline before anything is sent to an actor, so garbage never
//! activates a meter. [`decide`] needs the meter's history and runs inside the meter actor,
//! which is the only writer of that meter's readings and so can decide duplicates, conflicts,
//! corrections and register monotonicity without races.

use gridmesh_proto::EARLIEST_TS_MS;
use gridmesh_proto::ids::check_meter_id;
use gridmesh_proto::internal::MeterState;
use gridmesh_proto::v1::{MeterEventKind, PhaseValues, Reading, RejectReason};

/// A rejection: the reason code and a message naming the offending field and value.
pub type Rejected = (RejectReason, String);

/// Physical bounds of each channel. Wide enough for any LV/MV meter, narrow enough to catch
/// unit mistakes (kWh sent as Wh·1000, mV as V) and corrupted frames.
pub mod bounds {
    /// Energy registers, Wh (1 TWh).
    pub const REGISTER_WH: f64 = 1e12;
    /// Interval energy, Wh (1 GWh in one interval).
    pub const INTERVAL_WH: f64 = 1e9;
    /// Active and reactive power magnitude, W / var (100 MW).
    pub const POWER_W: f64 = 1e8;
    /// Absolute voltage bound when the nominal voltage is unknown, V.
    pub const VOLTAGE_V: f64 = 1e6;
    /// Current, A.
    pub const CURRENT_A: f64 = 1e5;
    /// Largest voltage as a multiple of the meter's nominal voltage.
    pub const VOLTAGE_PER_NOMINAL: f64 = 2.0;
}

/// Tolerance when comparing registers, Wh: registers are often reported with rounding.
const REGISTER_EPSILON_WH: f64 = 1e-6;

/// Checks everything that needs no meter history.
pub fn check_shape(
    reading: &Reading,
    now_ms: i64,
    future_tolerance_ms: i64,
) -> Result<(), Rejected> {
    if let Err(e) = check_meter_id(&reading.meter_id) {
        return Err((RejectReason::InvalidMeterId, e.to_string()));
    }
    if reading.ts_ms < EARLIEST_TS_MS {
        return Err((
            RejectReason::TimestampTooEarly,
            format!("ts_ms = {} is before 2000-01-01T00:00:00Z", reading.ts_ms),
        ));
    }
    if reading.ts_ms > now_ms.saturating_add(future_tolerance_ms) {
        return Err((
            RejectReason::TimestampInFuture,
            format!(
                "ts_ms = {} is {} ms ahead of the node clock",
                reading.ts_ms,
                reading.ts_ms - now_ms
            ),
        ));
    }
    for event in &reading.events {
        match MeterEventKind::try_from(*event) {
            Ok(MeterEventKind::Unspecified) | Err(_) => {
                return Err((
                    RejectReason::InvalidEvent,
                    format!("event kind {event} is not a known event"),
                ));
            }
            Ok(_) => {}
        }
    }
    check_channels(reading)?;
    if !has_measurement(reading) && reading.events.is_empty() {
        return Err((
            RejectReason::Empty,
            "the reading has no measurement and no event".to_owned(),
        ));
    }
    Ok(())
}

/// Whether any measurement channel is present.
pub fn has_measurement(r: &Reading) -> bool {
    let phases =
        |p: &Option<PhaseValues>| p.as_ref().is_some_and(|p| p.l1.or(p.l2).or(p.l3).is_some());
    r.energy_import_register_wh.is_some()
        || r.energy_export_register_wh.is_some()
        || r.interval_energy_import_wh.is_some()
        || r.interval_energy_export_wh.is_some()
        || r.active_power_w.is_some()
        || r.reactive_power_var.is_some()
        || phases(&r.voltage_v)
        || phases(&r.current_a)
}

fn check_channels(r: &Reading) -> Result<(), Rejected> {
    use bounds::*;
    let scalars = [
        (
            "energy_import_register_wh",
            r.energy_import_register_wh,
            0.0,
            REGISTER_WH,
        ),
        (
            "energy_export_register_wh",
            r.energy_export_register_wh,
            0.0,
            REGISTER_WH,
        ),
        (
            "interval_energy_import_wh",
            r.interval_energy_import_wh,
            0.0,
            INTERVAL_WH,
        ),
        (
            "interval_energy_export_wh",
            r.interval_energy_export_wh,
            0.0,
            INTERVAL_WH,
        ),
        ("active_power_w", r.active_power_w, -POWER_W, POWER_W),
        (
            "reactive_power_var",
            r.reactive_power_var,
            -POWER_W,
            POWER_W,
        ),
    ];
    for (name, value, min, max) in scalars {
        if let Some(v) = value {
            check_value(name, v, min, max)?;
        }
    }
    check_phases("voltage_v", r.voltage_v.as_ref(), VOLTAGE_V)?;
    check_phases("current_a", r.current_a.as_ref(), CURRENT_A)
}

fn check_phases(name: &str, phases: Option<&PhaseValues>, max: f64) -> Result<(), Rejected> {
    let Some(p) = phases else { return Ok(()) };
    for (phase, value) in [("l1", p.l1), ("l2", p.l2), ("l3", p.l3)] {
        if let Some(v) = value {
            // The field name is only formatted when the value is bad: this runs per reading.
            check_value("", v, 0.0, max)
                .map_err(|(reason, message)| (reason, format!("{name}.{phase}{message}")))?;
        }
    }
    Ok(())
}

fn check_value(name: &str, v: f64, min: f64, max: f64) -> Result<(), Rejected> {
    if !v.is_finite() {
        return Err((
            RejectReason::NotFinite,
            format!("{name} = {v} is not a finite number"),
        ));
    }
    if v < min || v > max {
        return Err((
            RejectReason::OutOfRange,
            format!("{name} = {v} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

/// A stored reading next to the one being decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// Its timestamp.
    pub ts_ms: i64,
    /// The reading.
    pub reading: Reading,
}

/// The meter's stored readings, as [`decide`] needs them. The meter actor implements this over
/// fjall plus the not-yet-written readings of the current batch; tests over a map.
pub trait History {
    /// The stored reading at exactly `ts_ms`, encoded (meter id cleared).
    fn at(&mut self, ts_ms: i64) -> Option<Vec<u8>>;
    /// The closest stored reading strictly before `ts_ms`.
    fn before(&mut self, ts_ms: i64) -> Option<Neighbour>;
    /// The closest stored reading strictly after `ts_ms`.
    fn after(&mut self, ts_ms: i64) -> Option<Neighbour>;
}

/// What to do with a reading that passed [`check_shape`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store it. `out_of_order` when it is older than the meter's newest reading.
    Insert {
        /// Backfill rather than a new newest reading.
        out_of_order: bool,
    },
    /// The same reading is already stored: acknowledge, store nothing.
    Duplicate,
    /// A higher version replaces the stored one, which is kept for audit.
    Correction {
        /// The encoded reading being replaced.
        replaced: Vec<u8>,
    },
    /// Refuse it.
    Reject(Rejected),
}

/// Per-meter settings for [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct MeterRules {
    /// Original (version 0) readings older than the newest by more than this are refused.
    pub out_of_order_window_ms: i64,
    /// Nominal voltage from the registry; 0 when unknown.
    pub nominal_voltage_v: f64,
}

/// Decides one reading against the meter's state and history. `encoded` is the reading's
/// storage encoding (meter id cleared), used to recognise exact duplicates.
pub fn decide(
    state: &MeterState,
    rules: &MeterRules,
    reading: &Reading,
    encoded: &[u8],
    history: &mut impl History,
) -> Decision {
    if let Err(rejected) = check_voltage_against_nominal(reading, rules.nominal_voltage_v) {
        return Decision::Reject(rejected);
    }
    let has_history = state.last_ts_ms > 0;
    if !has_history || reading.ts_ms > state.last_ts_ms {
        return match check_registers_after_last(state, reading) {
            Ok(()) => Decision::Insert {
                out_of_order: false,
            },
            Err(rejected) => Decision::Reject(rejected),
        };
    }
    if reading.version == 0 && reading.ts_ms < state.last_ts_ms - rules.out_of_order_window_ms {
        return Decision::Reject((
            RejectReason::TooOld,
            format!(
                "ts_ms = {} is more than {} ms older than the meter's newest reading ({})",
                reading.ts_ms, rules.out_of_order_window_ms, state.last_ts_ms
            ),
        ));
    }
    let existing = history.at(reading.ts_ms);
    if let Some(stored) = &existing {
        if stored.as_slice() == encoded {
            return Decision::Duplicate;
        }
        if let Some(rejected) = version_conflict(stored, reading) {
            return Decision::Reject(rejected);
        }
    }
    if let Err(rejected) = check_registers_between(reading, history) {
        return Decision::Reject(rejected);
    }
    match existing {
        Some(replaced) => Decision::Correction { replaced },
        None => Decision::Insert { out_of_order: true },
    }
}

/// `Some(rejection)` unless `reading` may replace the stored encoding.
/// How a replica copy of a reading meets what the node already stores at its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Nothing is stored there: insert it.
    Insert,
    /// The same bytes are stored: nothing to do.
    Same,
    /// The copy wins: replace the stored value (kept for audit).
    Replace {
        /// The stored value it replaces.
        replaced: Vec<u8>,
    },
    /// The stored value wins: keep it.
    KeepStored,
}

/// Merges a replica copy (`encoded`, version `version`) with the stored value, if any.
///
/// Copies arrive from a primary, a hinted-handoff substitute or anti-entropy, in any order and
/// any number of times, so the rule must give every replica the same value whatever it saw
/// first: the higher version wins, and between two different values of one version (two
/// primaries accepted different values during a partition) the larger encoding wins. That is
/// a maximum over a total order, hence commutative, associative and idempotent.
pub fn merge_copy(stored: Option<&[u8]>, encoded: &[u8], version: u32) -> Merge {
    let Some(stored) = stored else {
        return Merge::Insert;
    };
    if stored == encoded {
        return Merge::Same;
    }
    if copy_wins(stored, encoded, version) {
        Merge::Replace {
            replaced: stored.to_vec(),
        }
    } else {
        Merge::KeepStored
    }
}

/// Whether `encoded` (version `version`) beats the different value `stored`.
pub fn copy_wins(stored: &[u8], encoded: &[u8], version: u32) -> bool {
    let stored_version = <Reading as prost::Message>::decode(stored)
        .map(|r| r.version)
        .unwrap_or(0);
    (version, encoded) > (stored_version, stored)
}

fn version_conflict(stored: &[u8], reading: &Reading) -> Option<Rejected> {
    let stored_version = <Reading as prost::Message>::decode(stored)
        .map(|r| r.version)
        .unwrap_or(0);
    if reading.version > stored_version {
        return None;
    }
    if reading.version < stored_version {
        return Some((
            RejectReason::StaleVersion,
            format!(
                "version {} is older than the stored version {stored_version}",
                reading.version
            ),
        ));
    }
    Some((
        RejectReason::Conflict,
        format!(
            "a different value is stored for ts_ms = {} with version {}; send a higher version \
             to correct it",
            reading.ts_ms, reading.version
        ),
    ))
}

fn check_voltage_against_nominal(reading: &Reading, nominal_v: f64) -> Result<(), Rejected> {
    if nominal_v <= 0.0 {
        return Ok(());
    }
    let max = nominal_v * bounds::VOLTAGE_PER_NOMINAL;
    match crate::buckets::phase_values(reading.voltage_v.as_ref()).find(|v| *v > max) {
        Some(v) => Err((
            RejectReason::OutOfRange,
            format!(
                "voltage {v} V exceeds {max} V ({}x the meter's nominal {nominal_v} V)",
                bounds::VOLTAGE_PER_NOMINAL
            ),
        )),
        None => Ok(()),
    }
}

fn check_registers_after_last(state: &MeterState, reading: &Reading) -> Result<(), Rejected> {
    let pairs = [
        (
            "energy_import_register_wh",
            state.last_import_register_wh,
            reading.energy_import_register_wh,
        ),
        (
            "energy_export_register_wh",
            state.last_export_register_wh,
            reading.energy_export_register_wh,
        ),
    ];
    for (name, last, new) in pairs {
        if let (Some(last), Some(new)) = (last, new)
            && new + REGISTER_EPSILON_WH < last
        {
            return Err((
                RejectReason::RegisterBackwards,
                format!("{name} = {new} is below the previous reading's {last}"),
            ));
        }
    }
    Ok(())
}

/// Reads one register channel of a reading.
type RegisterOf = fn(&Reading) -> Option<f64>;

fn check_registers_between(reading: &Reading, history: &mut impl History) -> Result<(), Rejected> {
    let before = history.before(reading.ts_ms);
    let after = history.after(reading.ts_ms);
    let channels: [(&str, RegisterOf); 2] = [
        ("energy_import_register_wh", |r| r.energy_import_register_wh),
        ("energy_export_register_wh", |r| r.energy_export_register_wh),
    ];
    for (name, get) in channels {
        let Some(new) = get(reading) else { continue };
        if let Some(prev) = before.as_ref().and_then(|n| get(&n.reading))
            && new + REGISTER_EPSILON_WH < prev
        {
            return Err((
                RejectReason::RegisterBackwards,
                format!("{name} = {new} is below the earlier reading's {prev}"),
            ));
        }
        if let Some(next) = after.as_ref().and_then(|n| get(&n.reading))
            && new > next + REGISTER_EPSILON_WH
        {
            return Err((
                RejectReason::RegisterBackwards,
                format!("{name} = {new} is above the later reading's {next}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
