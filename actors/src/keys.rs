//! Key layout of the fjall keyspaces. All integers are big-endian so that byte order is time
//! order and one meter's readings are one contiguous range.
//!
//! | keyspace      | key                                             | value                  |
//! |---------------|-------------------------------------------------|------------------------|
//! | `readings`    | `len(meter) u8, meter, ts_ms u64`               | `v1.Reading` (no id)   |
//! | `meters`      | `meter`                                         | `MeterState`           |
//! | `anomaly`     | `meter`                                         | `u8` format, postcard   |
//! | `daily`       | `len(meter) u8, meter, local day u64`           | `u8` format, postcard   |
//! | `registry`    | `b'm', meter` / `b'f', feeder`                  | `MeterInfo`/`FeederInfo` |
//! | `feeder_load` | `len(feeder) u8, feeder, interval u64, meter`   | `FeederContribution`   |
//! | `audit`       | `len(meter) u8, meter, ts_ms u64, applied u64`  | `CorrectionAudit`      |
//! | `hints`       | `len(node) u8, node, shard u32, len(meter) u8, meter, ts_ms u64` | empty  |
//! | `alerts`      | alert id (UTF-8)                                | `v1.Alert`             |
//! | `alert_log`   | `seq u64`                                       | `v1.Alert` (as changed) |
//! | `dead_letters`| `failed_at_ms << 16 | n` (u64)                  | `DeadLetter`           |
//! | `meta`        | UTF-8 name                                      | UTF-8 value            |
//!
//! An `anomaly` value is a format byte, then the postcard encoding of the meter's
//! `MeterAnomalyDetector` (see [`crate::anomaly`]). A `daily` value is a format byte, then
//! the postcard encoding of the day's `DailyMeter` and the tariff it was computed with (see
//! [`crate::daily`]).
//!
//! Timestamps are at or after 2000-01-01 (validated), so they are positive and the `u64`
//! encoding preserves order. Ids are at most 64 bytes, so one length byte suffices; the length
//! prefix stops `m1` from being a key prefix of `m10`.

/// `len, id` — the prefix of everything stored per meter (or feeder).
pub fn id_prefix(id: &str) -> Vec<u8> {
    debug_assert!(
        id.len() <= gridmesh_proto::ids::MAX_ID_LEN,
        "ids are validated before storage"
    );
    let mut key = Vec::with_capacity(1 + id.len() + 16);
    key.push(id.len() as u8);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of one reading.
pub fn reading_key(meter: &str, ts_ms: i64) -> Vec<u8> {
    let mut key = id_prefix(meter);
    key.extend_from_slice(&(ts_ms as u64).to_be_bytes());
    key
}

/// The timestamp at the end of a reading (or audit) key.
pub fn ts_of_reading_key(key: &[u8]) -> Option<i64> {
    let len = *key.first()? as usize;
    let bytes: [u8; 8] = key.get(1 + len..1 + len + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as i64)
}

/// Key of one meter's stored daily aggregate for a local day (days since 1970-01-01 in the
/// deployment's offset; positive, since readings are from 2000 on).
pub fn daily_key(meter: &str, day: i64) -> Vec<u8> {
    reading_key(meter, day)
}

/// Registry key of a meter.
pub fn meter_info_key(meter: &str) -> Vec<u8> {
    [b"m".as_slice(), meter.as_bytes()].concat()
}

/// Registry key of a feeder.
pub fn feeder_info_key(feeder: &str) -> Vec<u8> {
    [b"f".as_slice(), feeder.as_bytes()].concat()
}

/// Key of one meter's contribution to one feeder interval.
pub fn feeder_load_key(feeder: &str, interval_start_ms: i64, meter: &str) -> Vec<u8> {
    let mut key = id_prefix(feeder);
    key.extend_from_slice(&(interval_start_ms as u64).to_be_bytes());
    key.extend_from_slice(meter.as_bytes());
    key
}

/// Splits a feeder load key into (interval start, meter).
pub fn split_feeder_load_key(key: &[u8]) -> Option<(i64, &str)> {
    let len = *key.first()? as usize;
    let bytes: [u8; 8] = key.get(1 + len..1 + len + 8)?.try_into().ok()?;
    let meter = std::str::from_utf8(key.get(1 + len + 8..)?).ok()?;
    Some((u64::from_be_bytes(bytes) as i64, meter))
}

/// Key of one hint: the reading `(meter, ts_ms)` of `shard`, stored here, is owed to `node`.
pub fn hint_key(node: &str, shard: u32, meter: &str, ts_ms: i64) -> Vec<u8> {
    let mut key = id_prefix(node);
    key.extend_from_slice(&shard.to_be_bytes());
    key.extend_from_slice(&reading_key(meter, ts_ms));
    key
}

/// Splits a hint key into (node, shard, meter, ts).
pub fn split_hint_key(key: &[u8]) -> Option<(&str, u32, &str, i64)> {
    let len = *key.first()? as usize;
    let node = std::str::from_utf8(key.get(1..1 + len)?).ok()?;
    let rest = key.get(1 + len..)?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let reading = rest.get(4..)?;
    let mlen = *reading.first()? as usize;
    let meter = std::str::from_utf8(reading.get(1..1 + mlen)?).ok()?;
    let ts = ts_of_reading_key(reading)?;
    (reading.len() == 1 + mlen + 8).then_some((node, shard, meter, ts))
}

/// Splits a reading key into (meter, ts).
pub fn split_reading_key(key: &[u8]) -> Option<(&str, i64)> {
    let len = *key.first()? as usize;
    let meter = std::str::from_utf8(key.get(1..1 + len)?).ok()?;
    let ts = ts_of_reading_key(key)?;
    (key.len() == 1 + len + 8).then_some((meter, ts))
}

/// Key of one audit record.
pub fn audit_key(meter: &str, ts_ms: i64, applied_at_ms: i64) -> Vec<u8> {
    let mut key = reading_key(meter, ts_ms);
    key.extend_from_slice(&(applied_at_ms as u64).to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EARLIEST: i64 = 946_684_800_000;
    const LATEST: i64 = 4_102_444_800_000;

    proptest! {
        #[test]
        fn reading_keys_sort_by_meter_then_time(
            a in "[a-z0-9]{1,8}", b in "[a-z0-9]{1,8}",
            t1 in EARLIEST..LATEST,
            t2 in EARLIEST..LATEST,
        ) {
            let (k1, k2) = (reading_key(&a, t1), reading_key(&a, t2));
            prop_assert_eq!(k1.cmp(&k2), t1.cmp(&t2));
            prop_assert_eq!(ts_of_reading_key(&k1), Some(t1));
            // Keys of different meters never interleave: one meter is one prefix range.
            if a != b {
                prop_assert!(!reading_key(&b, t2).starts_with(&id_prefix(&a)));
            }
        }

        #[test]
        fn hint_and_reading_keys_round_trip(
            node in "[a-z0-9-]{1,12}", meter in "[A-Z0-9-]{1,16}", shard in 0u32..65_536,
            t in EARLIEST..LATEST,
        ) {
            let key = hint_key(&node, shard, &meter, t);
            prop_assert_eq!(split_hint_key(&key), Some((node.as_str(), shard, meter.as_str(), t)));
            // One node's hints are one prefix range, ordered by shard.
            prop_assert!(key.starts_with(&id_prefix(&node)));
            let reading = reading_key(&meter, t);
            prop_assert_eq!(split_reading_key(&reading), Some((meter.as_str(), t)));
        }

        #[test]
        fn feeder_keys_round_trip(f in "[a-z0-9]{1,8}", m in "[a-z0-9]{1,8}", t in 0i64..i64::MAX) {
            let key = feeder_load_key(&f, t, &m);
            prop_assert_eq!(split_feeder_load_key(&key), Some((t, m.as_str())));
        }
    }
}
