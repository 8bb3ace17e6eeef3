//! The built-in grid simulator: a deterministic generator of feeders, meters and readings.
//!
//! Every meter gets a daily load shape by customer type (residential double peak, commercial
//! working-hours plateau with quiet weekends), a random size, and for some homes a PV system
//! whose output follows the sun with day-to-day cloudiness, so they export around noon. Voltage
//! sags with feeder loading and carries noise. Each feeder has a head meter that measures the
//! customer sum plus a few percent of losses.
//!
//! With `anomalies` on (the default) the stream also carries what real head-ends send: gaps,
//! duplicates, readings delayed by up to an hour (out of order), and a trickle of garbage (NaN
//! power, timestamps from 1999, unknown meters, impossible voltages). The generator counts what
//! it injected so a run can compare that with what the node reported.
//!
//! With anomalies on it also plays out four grid events the grid rules should catch (see
//! [`GridEvent`]): an evening overload on `FDR-001`, a two-hour voltage sag on one
//! transformer of `FDR-002`, a 90-minute outage of one transformer of `FDR-003` (last gasps,
//! silence, power restores), and in runs of four days or more theft-like tampering on
//! `FDR-004`, where a third of the meters under-report by 35 % (the feeder's energy balance
//! shows the loss).
//!
//! Same seed, same configuration, same readings, on every machine.

use gridmesh_proto::v1::{
    FeederInfo, MeterEventKind, MeterInfo, PhaseValues, Reading, ServiceType, TransformerInfo,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Distribution transformers per feeder.
const TRANSFORMERS: usize = 8;

/// The simulated grid events' places: feeder index, transformer index.
const OVERLOAD_FEEDER: usize = 1;
const SAG_AT: (usize, usize) = (2, 3);
const OUTAGE_AT: (usize, usize) = (3, 1);
const THEFT_FEEDER: usize = 4;

fn transformer_id(feeder_id: &str, t: usize) -> String {
    format!("{feeder_id}-T{t:02}")
}

/// The smallest standard distribution transformer rating of at least `kva`.
fn nameplate_kva(kva: f64) -> f64 {
    const SIZES: [f64; 10] = [
        16.0, 25.0, 50.0, 100.0, 160.0, 250.0, 400.0, 630.0, 1000.0, 1600.0,
    ];
    SIZES
        .into_iter()
        .find(|s| *s >= kva)
        .unwrap_or((kva / 100.0).ceil() * 100.0)
}

/// Interval between readings, ms (15 minutes).
pub const INTERVAL_MS: i64 = 15 * 60 * 1000;
const DAY_MS: i64 = 24 * 3600 * 1000;
const TICKS_PER_DAY: i64 = DAY_MS / INTERVAL_MS;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Customer meters.
    pub meters: u32,
    /// Feeders (each also gets a head meter).
    pub feeders: u32,
    /// Simulated days.
    pub days: u32,
    /// Random seed.
    pub seed: u64,
    /// First interval start, ms (aligned to a UTC day).
    pub start_ms: i64,
    /// Inject gaps, duplicates, late readings and garbage.
    pub anomalies: bool,
}

impl SimConfig {
    /// `days` ending at the last UTC midnight, so every timestamp is in the past.
    pub fn ending_today(meters: u32, feeders: u32, days: u32, seed: u64) -> Self {
        let now = gridmesh_actors::context::now_ms();
        let start_ms = now.div_euclid(DAY_MS) * DAY_MS - i64::from(days) * DAY_MS;
        Self {
            meters,
            feeders,
            days,
            seed,
            start_ms,
            anomalies: true,
        }
    }

    /// Intervals to simulate.
    pub fn ticks(&self) -> u64 {
        u64::from(self.days) * TICKS_PER_DAY as u64
    }

    /// Readings the run will send, approximately (anomalies change it slightly).
    pub fn expected_readings(&self) -> u64 {
        self.ticks() * u64::from(self.meters + self.feeders)
    }
}

/// A grid event the simulator plays out (with anomalies on), and what should catch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridEvent {
    /// What happens, for the report.
    pub what: String,
    /// The alert kind the grid rules should raise.
    pub expect_kind: &'static str,
    /// The asset it should be raised on (a feeder or a transformer), or for per-meter rules
    /// the feeder whose meters it concerns.
    pub asset: String,
    /// The feeder.
    pub feeder: String,
}

/// What the generator injected on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Readings never sent.
    pub gaps: u64,
    /// Readings sent a second time, identical.
    pub duplicates: u64,
    /// Readings sent late (after newer ones).
    pub late: u64,
    /// Invalid readings.
    pub garbage: u64,
    /// Readings a meter could not send while its transformer was out.
    pub dark: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Residential,
    Commercial,
}

#[derive(Debug, Clone)]
struct SimMeter {
    id: String,
    feeder: usize,
    transformer: usize,
    kind: Kind,
    scale: f64,
    pv_kwp: f64,
    import_register_wh: f64,
    export_register_wh: f64,
}

/// The generator.
#[derive(Debug)]
pub struct Generator {
    config: SimConfig,
    feeders: Vec<FeederInfo>,
    meters: Vec<SimMeter>,
    heads: Vec<(String, f64)>,
    rng: StdRng,
    tick: u64,
    cloudiness: f64,
    delayed: Vec<(u64, Reading)>,
    resend: Vec<Reading>,
    /// What was injected so far.
    pub injected: Injected,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let feeders_n = config.feeders.max(1) as usize;
        let meters: Vec<SimMeter> = (0..config.meters)
            .map(|i| {
                let kind = if rng.random_bool(0.8) {
                    Kind::Residential
                } else {
                    Kind::Commercial
                };
                let pv_kwp = if kind == Kind::Residential && rng.random_bool(0.25) {
                    rng.random_range(3.0..6.0)
                } else {
                    0.0
                };
                SimMeter {
                    id: format!("MTR-{i:07}"),
                    feeder: i as usize % feeders_n,
                    transformer: (i as usize / feeders_n) % TRANSFORMERS,
                    kind,
                    scale: if kind == Kind::Residential {
                        rng.random_range(0.5..2.0)
                    } else {
                        rng.random_range(0.5..3.0)
                    },
                    pv_kwp,
                    import_register_wh: rng.random_range(1e6..5e7),
                    export_register_wh: 0.0,
                }
            })
            .collect();
        let feeders: Vec<FeederInfo> = (0..feeders_n)
            .map(|f| {
                let customers = meters
                    .iter()
                    .filter(|m| m.feeder == f)
                    .map(|m| m.scale)
                    .sum::<f64>();
                // Sized so that ordinary evening peaks load the feeder to 60–95 %.
                let rating_kva = (customers * 2.4).max(50.0).round();
                let feeder_id = format!("FDR-{f:03}");
                // Fewer customers share a transformer, so their peaks coincide less: each is
                // sized with more headroom, then rounded up to a standard nameplate.
                let transformers = (0..TRANSFORMERS)
                    .filter_map(|t| {
                        let scale = meters
                            .iter()
                            .filter(|m| m.feeder == f && m.transformer == t)
                            .map(|m| m.scale)
                            .sum::<f64>();
                        (scale > 0.0).then(|| TransformerInfo {
                            transformer_id: transformer_id(&feeder_id, t),
                            rating_kva: nameplate_kva(scale * 4.0),
                        })
                    })
                    .collect();
                FeederInfo {
                    head_meter_id: format!("{feeder_id}-HEAD"),
                    feeder_id,
                    rating_kva,
                    transformers,
                }
            })
            .collect();
        let heads = feeders
            .iter()
            .map(|f| (f.head_meter_id.clone(), rng.random_range(1e8..5e8)))
            .collect();
        Self {
            config,
            feeders,
            meters,
            heads,
            rng,
            tick: 0,
            cloudiness: 0.8,
            delayed: vec![],
            resend: vec![],
            injected: Injected::default(),
        }
    }

    /// The feeders to register.
    pub fn feeders(&self) -> Vec<FeederInfo> {
        self.feeders.clone()
    }

    /// The meters to register: customers and one head meter per feeder.
    pub fn meters(&self) -> Vec<MeterInfo> {
        let customers = self.meters.iter().map(|m| MeterInfo {
            meter_id: m.id.clone(),
            feeder_id: self.feeders[m.feeder].feeder_id.clone(),
            transformer_id: transformer_id(&self.feeders[m.feeder].feeder_id, m.transformer),
            nominal_voltage_v: 230.0,
            service_type: match m.kind {
                Kind::Residential => ServiceType::Residential,
                Kind::Commercial => ServiceType::Commercial,
            } as i32,
            has_pv: m.pv_kwp > 0.0,
        });
        let heads = self.feeders.iter().map(|f| MeterInfo {
            meter_id: f.head_meter_id.clone(),
            feeder_id: f.feeder_id.clone(),
            transformer_id: String::new(),
            nominal_voltage_v: 230.0,
            service_type: ServiceType::Industrial as i32,
            has_pv: false,
        });
        customers.chain(heads).collect()
    }

    /// Day index of `ts_ms` in the run (0 = first simulated day).
    fn day_of(&self, ts_ms: i64) -> i64 {
        (ts_ms - 1 - self.config.start_ms).div_euclid(DAY_MS)
    }

    /// Hour of day of a reading stamped `ts_ms` (the interval's middle).
    fn hour_of(ts_ms: i64) -> f64 {
        (ts_ms.rem_euclid(DAY_MS) as f64 - INTERVAL_MS as f64 / 2.0) / 3_600_000.0
    }

    /// The grid events this run plays out (none without anomalies).
    pub fn grid_events(&self) -> Vec<GridEvent> {
        let feeder = |f: usize| self.feeders.get(f).map(|f| f.feeder_id.clone());
        if !self.config.anomalies {
            return Vec::new();
        }
        let mut events = Vec::new();
        if let Some(f) = feeder(OVERLOAD_FEEDER) {
            events.push(GridEvent {
                what: format!("{f}: load x1.8 from 17:00 to 21:00 on the last day"),
                expect_kind: "overload",
                asset: f.clone(),
                feeder: f,
            });
        }
        if let Some(f) = feeder(SAG_AT.0) {
            let t = transformer_id(&f, SAG_AT.1);
            events.push(GridEvent {
                what: format!("{t}: voltage at 0.88 pu from 10:00 to 12:00 on the first day"),
                expect_kind: "undervoltage",
                asset: t,
                feeder: f,
            });
        }
        if let Some(f) = feeder(OUTAGE_AT.0) {
            let t = transformer_id(&f, OUTAGE_AT.1);
            events.push(GridEvent {
                what: format!("{t}: outage from 02:00 to 03:30 on the last day"),
                expect_kind: "outage",
                asset: t,
                feeder: f,
            });
        }
        if let Some(f) = feeder(THEFT_FEEDER).filter(|_| self.config.days >= 4) {
            events.push(GridEvent {
                what: format!("{f}: a third of the meters under-report their energy by 35 %"),
                expect_kind: "energy_loss",
                asset: f.clone(),
                feeder: f,
            });
        }
        events
    }

    /// Simulated time of the interval the next call generates.
    pub fn current_ts_ms(&self) -> i64 {
        self.config.start_ms + (self.tick as i64 + 1) * INTERVAL_MS
    }

    /// All readings of the next interval, or `None` when the run is over.
    pub fn next_interval(&mut self) -> Option<Vec<Reading>> {
        if self.tick >= self.config.ticks() {
            return self.flush_delayed();
        }
        let ts_ms = self.current_ts_ms();
        if (self.tick as i64) % TICKS_PER_DAY == 0 {
            self.cloudiness = self.rng.random_range(0.3..1.0);
        }
        let mut out = std::mem::take(&mut self.resend);
        let mut feeder_import_wh = vec![0.0; self.feeders.len()];
        let loads: Vec<(f64, f64)> = (0..self.meters.len())
            .map(|i| self.meter_load(i, ts_ms))
            .collect();
        let mut feeder_load_fraction = vec![0.0; self.feeders.len()];
        for (m, (net_w, _)) in self.meters.iter().zip(&loads) {
            feeder_load_fraction[m.feeder] +=
                net_w.max(0.0) / 1000.0 / self.feeders[m.feeder].rating_kva;
        }
        for i in 0..self.meters.len() {
            let mut reading = self.meter_reading(
                i,
                ts_ms,
                loads[i],
                feeder_load_fraction[self.meters[i].feeder],
            );
            let phase = self.outage_phase(i, ts_ms);
            if matches!(phase, OutagePhase::None | OutagePhase::Restore) {
                // The head meter measures the net flow the meters really drew (nothing while
                // dark; PV export offsets import).
                feeder_import_wh[self.meters[i].feeder] +=
                    reading.interval_energy_import_wh.unwrap_or(0.0)
                        - reading.interval_energy_export_wh.unwrap_or(0.0);
            }
            match phase {
                OutagePhase::None => {}
                OutagePhase::LastGasp => {
                    reading = Reading {
                        meter_id: reading.meter_id,
                        ts_ms: ts_ms - INTERVAL_MS + 60_000,
                        events: vec![MeterEventKind::LastGasp as i32],
                        ..Reading::default()
                    };
                }
                OutagePhase::Dark => {
                    self.injected.dark += 1;
                    continue;
                }
                OutagePhase::Restore => reading.events.push(MeterEventKind::PowerRestore as i32),
            }
            self.tamper(i, ts_ms, &mut reading);
            self.route(reading, &mut out);
        }
        for (f, import_wh) in feeder_import_wh.into_iter().enumerate() {
            out.push(self.head_reading(f, ts_ms, import_wh));
        }
        self.release_delayed(&mut out);
        if self.config.anomalies {
            self.add_garbage(ts_ms, &mut out);
        }
        self.tick += 1;
        Some(out)
    }

    /// Where meter `i` is in the simulated outage at `ts_ms`.
    fn outage_phase(&self, i: usize, ts_ms: i64) -> OutagePhase {
        let m = &self.meters[i];
        let last_day = self.day_of(ts_ms) + 1 == i64::from(self.config.days);
        if !self.config.anomalies || !last_day || (m.feeder, m.transformer) != OUTAGE_AT {
            return OutagePhase::None;
        }
        let minutes = (ts_ms - 1).rem_euclid(DAY_MS) / 60_000;
        match minutes {
            // The interval 02:00-02:15: a last gasp at 02:01, then nothing.
            120..=134 => OutagePhase::LastGasp,
            135..=209 => OutagePhase::Dark,
            // The reading at 03:45 carries the restore.
            210..=224 => OutagePhase::Restore,
            _ => OutagePhase::None,
        }
    }

    /// Theft-like under-reporting: a third of `FDR-004`'s meters report 65 % of their energy
    /// (runs of 4 days or more, so that the energy balance can see it sustained).
    fn tamper(&self, i: usize, ts_ms: i64, reading: &mut Reading) {
        let m = &self.meters[i];
        if !self.config.anomalies
            || self.config.days < 4
            || m.feeder != THEFT_FEEDER
            || !i.is_multiple_of(3)
            || ts_ms <= self.config.start_ms
        {
            return;
        }
        if let Some(wh) = reading.interval_energy_import_wh.as_mut() {
            *wh = (*wh * 0.65).round();
        }
    }

    /// (net active power W, reactive power var) of meter `i` at `ts_ms`.
    fn meter_load(&mut self, i: usize, ts_ms: i64) -> (f64, f64) {
        let hour = (ts_ms.rem_euclid(DAY_MS) as f64 - INTERVAL_MS as f64 / 2.0) / 3_600_000.0;
        let weekday = (ts_ms.div_euclid(DAY_MS) + 4).rem_euclid(7); // 0 = Sunday
        let weekend = weekday == 0 || weekday == 6;
        let m = &self.meters[i];
        let shape = match m.kind {
            Kind::Residential => {
                let morning = if weekend { 9.5 } else { 7.5 };
                250.0 + 600.0 * bell(hour, morning, 1.2) + 1200.0 * bell(hour, 19.5, 2.0)
            }
            Kind::Commercial => {
                let open = smooth_step(hour, 7.5, 9.0) * (1.0 - smooth_step(hour, 17.5, 19.0));
                (1500.0 + 6000.0 * open) * if weekend { 0.3 } else { 1.0 }
            }
        };
        let noise = 1.0 + 0.15 * (self.rng.random::<f64>() - 0.5) * 2.0;
        let mut load_w = shape * m.scale * noise;
        if self.config.anomalies
            && m.feeder == OVERLOAD_FEEDER
            && self.day_of(ts_ms) + 1 == i64::from(self.config.days)
            && (17.0..21.0).contains(&hour)
        {
            // A heat wave evening: every air conditioner on the feeder at once.
            load_w *= 1.8;
        }
        let sun = (std::f64::consts::PI * (hour - 6.0) / 12.0).sin().max(0.0);
        let pv_w = m.pv_kwp * 1000.0 * sun * self.cloudiness * self.rng.random_range(0.85..1.0);
        (load_w - pv_w, 0.3 * load_w)
    }

    fn meter_reading(
        &mut self,
        i: usize,
        ts_ms: i64,
        (net_w, reactive_var): (f64, f64),
        feeder_load: f64,
    ) -> Reading {
        let hours = INTERVAL_MS as f64 / 3_600_000.0;
        let (import_wh, export_wh) = (
            (net_w.max(0.0) * hours).round(),
            ((-net_w).max(0.0) * hours).round(),
        );
        let m = &mut self.meters[i];
        m.import_register_wh += import_wh;
        m.export_register_wh += export_wh;
        let mut base_v = 230.0 * (1.0 + 0.03 * (0.5 - feeder_load));
        let sagging = self.config.anomalies
            && (m.feeder, m.transformer) == SAG_AT
            && (ts_ms - 1 - self.config.start_ms).div_euclid(DAY_MS) == 0
            && (10.0..12.0).contains(&Self::hour_of(ts_ms));
        if sagging {
            base_v = 230.0 * 0.88;
        }
        let mut volt = || (base_v + self.rng.random_range(-2.0..2.0) * 1.5).max(0.0);
        let voltage_v = match m.kind {
            Kind::Residential => PhaseValues {
                l1: Some(volt()),
                l2: None,
                l3: None,
            },
            Kind::Commercial => PhaseValues {
                l1: Some(volt()),
                l2: Some(volt()),
                l3: Some(volt()),
            },
        };
        let phases = if m.kind == Kind::Commercial { 3.0 } else { 1.0 };
        let amps = net_w.abs() / 230.0 / phases;
        let current_a = match m.kind {
            Kind::Residential => PhaseValues {
                l1: Some(amps),
                l2: None,
                l3: None,
            },
            Kind::Commercial => PhaseValues {
                l1: Some(amps),
                l2: Some(amps),
                l3: Some(amps),
            },
        };
        Reading {
            meter_id: m.id.clone(),
            ts_ms,
            version: 0,
            energy_import_register_wh: Some(m.import_register_wh),
            energy_export_register_wh: (m.pv_kwp > 0.0).then_some(m.export_register_wh),
            interval_energy_import_wh: Some(import_wh),
            interval_energy_export_wh: (m.pv_kwp > 0.0).then_some(export_wh),
            active_power_w: Some(net_w.round()),
            reactive_power_var: Some(reactive_var.round()),
            voltage_v: Some(voltage_v),
            current_a: Some(current_a),
            events: vec![],
        }
    }

    /// The feeder head's reading: the customers' net flow plus line losses (2-5 %), import
    /// or, when PV export wins, export.
    fn head_reading(&mut self, f: usize, ts_ms: i64, customer_net_wh: f64) -> Reading {
        let losses = self.rng.random_range(0.02..0.05);
        let (import_wh, export_wh) = if customer_net_wh >= 0.0 {
            ((customer_net_wh * (1.0 + losses)).round(), 0.0)
        } else {
            (0.0, (-customer_net_wh * (1.0 - losses)).round())
        };
        let (id, register) = &mut self.heads[f];
        *register += import_wh;
        Reading {
            meter_id: id.clone(),
            ts_ms,
            energy_import_register_wh: Some(*register),
            interval_energy_import_wh: Some(import_wh),
            interval_energy_export_wh: Some(export_wh),
            active_power_w: Some(((import_wh - export_wh) * 4.0).round()),
            ..Reading::default()
        }
    }

    /// Sends a reading now, later, twice, or never.
    fn route(&mut self, reading: Reading, out: &mut Vec<Reading>) {
        if !self.config.anomalies {
            out.push(reading);
            return;
        }
        let roll: f64 = self.rng.random();
        if roll < 0.005 {
            self.injected.gaps += 1;
        } else if roll < 0.010 {
            self.injected.duplicates += 1;
            self.resend.push(reading.clone());
            out.push(reading);
        } else if roll < 0.020 {
            self.injected.late += 1;
            let due = self.tick + self.rng.random_range(1..=4);
            self.delayed.push((due, reading));
        } else {
            out.push(reading);
        }
    }

    fn release_delayed(&mut self, out: &mut Vec<Reading>) {
        let tick = self.tick;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= tick);
        self.delayed = later;
        out.extend(due.into_iter().map(|(_, r)| r));
    }

    fn flush_delayed(&mut self) -> Option<Vec<Reading>> {
        let mut out: Vec<Reading> = std::mem::take(&mut self.delayed)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        out.append(&mut self.resend);
        (!out.is_empty()).then_some(out)
    }

    fn add_garbage(&mut self, ts_ms: i64, out: &mut Vec<Reading>) {
        let count = (self.meters.len() as f64 * 0.0005).ceil() as usize;
        for _ in 0..count {
            let i = self.rng.random_range(0..self.meters.len().max(1));
            let Some(m) = self.meters.get(i) else { return };
            let base = Reading {
                meter_id: m.id.clone(),
                ts_ms,
                active_power_w: Some(100.0),
                ..Reading::default()
            };
            let bad = match self.rng.random_range(0..4) {
                0 => Reading {
                    active_power_w: Some(f64::NAN),
                    ..base
                },
                1 => Reading {
                    ts_ms: 915_148_800_000,
                    ..base
                }, // 1999-01-01
                2 => Reading {
                    meter_id: format!("GHOST-{i}"),
                    ..base
                },
                _ => Reading {
                    voltage_v: Some(PhaseValues {
                        l1: Some(9000.0),
                        l2: None,
                        l3: None,
                    }),
                    ..base
                },
            };
            self.injected.garbage += 1;
            out.push(bad);
        }
    }
}

/// A meter's place in the simulated outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutagePhase {
    None,
    LastGasp,
    Dark,
    Restore,
}

fn bell(x: f64, centre: f64, width: f64) -> f64 {
    (-((x - centre) / width).powi(2)).exp()
}

fn smooth_step(x: f64, from: f64, to: f64) -> f64 {
    let t = ((x - from) / (to - from)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_actors::validation::check_shape;

    fn config(anomalies: bool) -> SimConfig {
        SimConfig {
            meters: 200,
            feeders: 4,
            days: 2,
            seed: 7,
            start_ms: 1_700_006_400_000 / DAY_MS * DAY_MS,
            anomalies,
        }
    }

    #[test]
    fn same_seed_same_readings() {
        let (mut a, mut b) = (Generator::new(config(true)), Generator::new(config(true)));
        // Compared as encoded bytes: the garbage includes NaN, which is never equal to itself.
        let encode = |rs: Option<Vec<Reading>>| -> Vec<Vec<u8>> {
            rs.unwrap_or_default()
                .iter()
                .map(prost::Message::encode_to_vec)
                .collect()
        };
        for _ in 0..10 {
            assert!(
                encode(a.next_interval()) == encode(b.next_interval()),
                "generators diverged"
            );
        }
    }

    #[test]
    fn clean_runs_are_all_valid_and_registers_rise() {
        let mut generator = Generator::new(config(false));
        let far_future = i64::MAX / 2;
        let mut last: std::collections::HashMap<String, f64> = Default::default();
        let mut count = 0u64;
        while let Some(readings) = generator.next_interval() {
            for r in readings {
                assert_eq!(check_shape(&r, far_future, 0), Ok(()), "{r:?}");
                let register = r.energy_import_register_wh.unwrap_or_default();
                let previous = last.insert(r.meter_id.clone(), register).unwrap_or(0.0);
                assert!(register >= previous);
                count += 1;
            }
        }
        assert_eq!(count, config(false).expected_readings());
    }

    #[test]
    fn anomalies_are_injected_and_counted() {
        let mut generator = Generator::new(config(true));
        let mut sent = 0u64;
        while let Some(readings) = generator.next_interval() {
            sent += readings.len() as u64;
        }
        let i = generator.injected;
        assert!(
            i.gaps > 0 && i.duplicates > 0 && i.late > 0 && i.garbage > 0 && i.dark > 0,
            "{i:?}"
        );
        assert_eq!(
            sent,
            config(true).expected_readings() - i.gaps - i.dark + i.duplicates + i.garbage
        );
    }
}
