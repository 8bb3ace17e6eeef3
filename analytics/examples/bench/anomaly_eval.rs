//! Anomaly-detection benchmark: labelled anomalies injected into SimBench load profiles.
//!
//! Each customer-level load profile of LoadProfile.csv is one meter (scaled to 5 kW rated,
//! interval energy in Wh). Aggregated profiles (lv_*, mv_*, hv_*) are not meters, and the
//! EV-charging and heat-pump profiles (HLS_*, APLS_*, Air_*, Soil_*, HSexp0) are devices that
//! are off most of the time, not whole premises, so they are left out. After a seven-week
//! warm-up each meter gets, per seed, 6 spikes, 4 zero runs, 4 frozen runs and 2 theft-like
//! steps (−35 % for 21 days) at random, non-overlapping times. An injected event counts as
//! detected when the matching rule raises inside it (plus one interval; a step within its 21
//! days). Every other raise after the warm-up is a false alarm. Figures are medians over
//! seeds.

use gridmesh_analytics::alert::{AlertEvent, AlertKind};
use gridmesh_analytics::anomaly::{AnomalyRules, MeterAnomalyDetector};
use gridmesh_analytics::stats::median;
use gridmesh_analytics::time::{CivilDate, DAY_MS, MIN15_MS};

use crate::data;

const WARM_UP_DAYS: i64 = 49;
const STEP_DAYS: i64 = 21;
const RATED_KW: f64 = 5.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Spike,
    ZeroRun,
    FrozenRun,
    Step,
}

const KINDS: [Kind; 4] = [Kind::Spike, Kind::ZeroRun, Kind::FrozenRun, Kind::Step];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::ZeroRun => "zero run",
            Kind::FrozenRun => "frozen run",
            Kind::Step => "-35 % step",
        }
    }

    fn alert(self) -> AlertKind {
        match self {
            Kind::Spike => AlertKind::ConsumptionDeviation,
            Kind::ZeroRun => AlertKind::ZeroRun,
            Kind::FrozenRun => AlertKind::FrozenRun,
            Kind::Step => AlertKind::ConsumptionStep,
        }
    }
}

/// Deterministic random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One injected anomaly, in interval indices `first..end`.
struct Injection {
    kind: Kind,
    first: usize,
    end: usize,
}

/// Places and applies the anomalies for one meter.
fn inject(values: &mut [f64], rng: &mut Rng) -> Vec<Injection> {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let mut plan: Vec<Kind> = [
        [Kind::Spike; 6].as_slice(),
        &[Kind::ZeroRun; 4],
        &[Kind::FrozenRun; 4],
        &[Kind::Step; 2],
    ]
    .concat();
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut out = Vec::new();
    let mut cursor = WARM_UP_DAYS as usize * 96;
    for kind in plan {
        cursor += (2 + rng.below(6) as usize) * 96 + rng.below(96) as usize;
        let len = match kind {
            Kind::Spike => 1,
            Kind::ZeroRun => 8 + rng.below(41) as usize,
            Kind::FrozenRun => 12 + rng.below(37) as usize,
            Kind::Step => STEP_DAYS as usize * 96,
        };
        if cursor + len + 96 >= values.len() {
            break;
        }
        let span = &mut values[cursor..cursor + len];
        match kind {
            Kind::Spike => span[0] += (3.0 + 3.0 * rng.unit()) * mean,
            Kind::ZeroRun => span.fill(0.0),
            Kind::FrozenRun => {
                let stuck = if span[0] != 0.0 { span[0] } else { mean };
                span.fill(stuck);
            }
            Kind::Step => span.iter_mut().for_each(|v| *v *= 0.65),
        }
        out.push(Injection {
            kind,
            first: cursor,
            end: cursor + len,
        });
        cursor += len;
    }
    out
}

/// Counts of one run (one seed, one threshold).
#[derive(Default, Clone)]
struct Counts {
    injected: [usize; 4],
    detected: [usize; 4],
    detected_any: [usize; 4],
    step_delay_days: Vec<f64>,
    false_alarms: [usize; 4],
    meter_weeks: f64,
}

fn run_meter(
    name: &str,
    clean: &[f64],
    start_ms: i64,
    rules: AnomalyRules,
    rng: &mut Rng,
    counts: &mut Counts,
) -> Result<(), String> {
    let mut values = clean.to_vec();
    let injections = inject(&mut values, rng);
    let mut detector = MeterAnomalyDetector::new(name, rules).map_err(|e| e.to_string())?;
    let mut raises: Vec<(AlertKind, usize)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        for event in detector
            .observe_interval(start_ms + i as i64 * MIN15_MS, *v)
            .events
        {
            if let AlertEvent::Raise(r) = event {
                raises.push((r.key.kind, i));
            }
        }
    }
    let mut explained = vec![false; raises.len()];
    for inj in &injections {
        let k = KINDS
            .iter()
            .position(|k| *k == inj.kind)
            .expect("every kind is listed");
        counts.injected[k] += 1;
        let slack = if inj.kind == Kind::Step { 0 } else { 1 };
        let inside = |i: usize| i >= inj.first && i <= inj.end + slack;
        let mut hit = None;
        for (j, (kind, at)) in raises.iter().enumerate() {
            // Anything raised during an event, or within a day after it, is explained by it.
            if *at >= inj.first && *at <= inj.end + 96 {
                explained[j] = true;
            }
            if inside(*at) && *kind == inj.kind.alert() && hit.is_none() {
                hit = Some(*at);
            }
        }
        if raises.iter().any(|(_, at)| inside(*at)) {
            counts.detected_any[k] += 1;
        }
        if let Some(at) = hit {
            counts.detected[k] += 1;
            if inj.kind == Kind::Step {
                counts.step_delay_days.push((at - inj.first) as f64 / 96.0);
            }
        }
    }
    let evaluated_from = WARM_UP_DAYS as usize * 96;
    for ((kind, at), explained) in raises.iter().zip(explained) {
        if *at >= evaluated_from && !explained {
            let k = KINDS
                .iter()
                .position(|k| k.alert() == *kind)
                .expect("only these rules");
            counts.false_alarms[k] += 1;
        }
    }
    counts.meter_weeks += (values.len() - evaluated_from) as f64 / (7.0 * 96.0);
    Ok(())
}

fn is_meter(column: &str) -> bool {
    let skip = [
        "lv_", "mv_", "hv_", "HLS_", "APLS_", "Air_", "Soil_", "HSexp0",
    ];
    column.ends_with("_pload") && !skip.iter().any(|p| column.starts_with(p))
}

/// Runs every `(z threshold, scale floor)` setting.
pub(crate) fn simbench(dir: &str, seeds: usize, settings: &[(f64, f64)]) -> Result<(), String> {
    let header = data::Table::header(dir, "LoadProfile.csv")?;
    let meters: Vec<String> = header.into_iter().filter(|c| is_meter(c)).collect();
    let profiles = data::read_profiles(dir, "LoadProfile.csv", &meters)?;
    let wh_per_unit = RATED_KW * 1000.0 * 0.25;
    let start_ms = CivilDate {
        year: 2016,
        month: 1,
        day: 1,
    }
    .to_day()
        * DAY_MS;
    println!(
        "# Anomaly detection: {} SimBench load profiles as meters, 2016 at 15 min, {seeds} seeds",
        meters.len()
    );
    for &(z, floor) in settings {
        let rules = AnomalyRules {
            z_threshold: z,
            scale_floor: floor,
            ..AnomalyRules::default()
        };
        let mut runs = Vec::new();
        for seed in 0..seeds as u64 {
            let mut counts = Counts::default();
            for (m, name) in meters.iter().enumerate() {
                let clean: Vec<f64> = profiles[name].iter().map(|v| v * wh_per_unit).collect();
                let mut rng = Rng(seed * 1_000_003 + m as u64);
                run_meter(name, &clean, start_ms, rules, &mut rng, &mut counts)?;
            }
            runs.push(counts);
        }
        report(z, floor, &runs);
    }
    Ok(())
}

fn report(z: f64, floor: f64, runs: &[Counts]) {
    let med = |f: &dyn Fn(&Counts) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    println!("\n## robust z threshold {z}, scale floor {floor} × mean level\n");
    println!(
        "| anomaly | injected | recall (its rule) | recall (any rule) | \
         false alarms of that rule per meter-week |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (k, kind) in KINDS.iter().enumerate() {
        let recall = med(&|c: &Counts| c.detected[k] as f64 / c.injected[k].max(1) as f64);
        let any = med(&|c: &Counts| c.detected_any[k] as f64 / c.injected[k].max(1) as f64);
        let fa = med(&|c: &Counts| c.false_alarms[k] as f64 / c.meter_weeks);
        let injected = med(&|c: &Counts| c.injected[k] as f64);
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.4} |",
            kind.name(),
            injected.unwrap_or(0.0),
            recall.unwrap_or(f64::NAN),
            any.unwrap_or(f64::NAN),
            fa.unwrap_or(f64::NAN)
        );
    }
    let total = med(&|c: &Counts| c.false_alarms.iter().sum::<usize>() as f64 / c.meter_weeks);
    let weeks = med(&|c: &Counts| c.meter_weeks);
    let delay = med(&|c: &Counts| median(&c.step_delay_days).unwrap_or(f64::NAN));
    println!(
        "\nall rules: {:.4} false alarms per meter-week over {:.0} meter-weeks; median step \
         detection delay {:.1} days",
        total.unwrap_or(f64::NAN),
        weeks.unwrap_or(0.0),
        delay.unwrap_or(f64::NAN)
    );
}
