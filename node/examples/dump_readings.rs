//! Writes the simulator's clean readings as CSV (meter_id, ts_ms, import register, interval
//! import, active power, reactive power, voltage l1), for loading the same data into other
//! systems (scripts/bench-postgres.sh).
//!
//! cargo run --release -p gridmesh --example dump_readings -- [meters] [days] > readings.csv

use std::io::Write;

use gridmesh::sim::{Generator, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let meters = args.next().transpose()?.unwrap_or(5000);
    let days = args.next().transpose()?.unwrap_or(2);
    let mut config = SimConfig::ending_today(meters, meters / 100, days, 42);
    config.anomalies = false;
    let mut generator = Generator::new(config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    while let Some(readings) = generator.next_interval() {
        for r in readings {
            writeln!(
                out,
                "{},{},{},{},{},{},{}",
                r.meter_id,
                r.ts_ms,
                opt(r.energy_import_register_wh),
                opt(r.interval_energy_import_wh),
                opt(r.active_power_w),
                opt(r.reactive_power_var),
                opt(r.voltage_v.and_then(|v| v.l1)),
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
