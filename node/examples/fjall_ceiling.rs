//! The raw fjall ceiling: the simulator's readings written straight into fjall with the same
//! keys and values GridMesh stores, in batches with one fsync each, and nothing else (no gRPC,
//! no actors, no validation, no state or feeder rows). End-to-end ingest is compared with this.
//!
//! cargo run --release -p gridmesh --example fjall_ceiling -- [meters] [days] [batch]

use std::time::Instant;

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use gridmesh::sim::{Generator, SimConfig};
use gridmesh_actors::keys::reading_key;
use gridmesh_actors::storage::encode_reading;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let meters = args.next().transpose()?.unwrap_or(5000) as u32;
    let days = args.next().transpose()?.unwrap_or(2) as u32;
    let batch = args.next().transpose()?.unwrap_or(1000) as usize;

    let mut config = SimConfig::ending_today(meters, meters / 100, days, 42);
    config.anomalies = false;
    let mut generator = Generator::new(config);
    let mut records = Vec::new();
    while let Some(readings) = generator.next_interval() {
        records.extend(
            readings
                .iter()
                .map(|r| (reading_key(&r.meter_id, r.ts_ms), encode_reading(r))),
        );
    }

    let dir = tempfile::tempdir()?;
    let db = Database::builder(dir.path())
        .manual_journal_persist(true)
        .open()?;
    let readings = db.keyspace("readings", KeyspaceCreateOptions::default)?;
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        let mut write = db.batch();
        for (key, value) in chunk {
            write.insert(&readings, key.clone(), value.clone());
        }
        write.commit()?;
        db.persist(PersistMode::SyncData)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
    println!(
        "{{\"records\": {}, \"batch\": {batch}, \"avg_record_bytes\": {}, \
         \"elapsed_s\": {elapsed:.3}, \"records_per_s\": {:.0}}}",
        records.len(),
        bytes / records.len().max(1),
        records.len() as f64 / elapsed
    );
    Ok(())
}
