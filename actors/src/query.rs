//! Read-side queries served straight from the store.
//!
//! Aggregates are recomputed from stored readings at query time rather than kept as separate
//! rollups: a 15-minute, hourly or daily bucket is always exactly the readings stored in it,
//! including corrections and backfill, and no bookkeeping can drift. A prefix scan of one
//! meter's 1000 readings costs about 0.35 ms, so a year of 15-minute data (35 040 readings)
//! aggregates in about 12 ms. Feeder load sums the per-meter contributions the meters wrote
//! (keyed by feeder, interval and meter, so a revision replaces rather than adds).
//!
//! Everything here is synchronous; callers run it on a blocking thread.

use std::collections::{BTreeMap, HashSet};

use gridmesh_proto::internal::{FeederContribution, FeederShare, FeederSums, ShardFeederShare};
use gridmesh_proto::v1::{
    FeederInterval, GetFeederLoadResponse, GetReadingsResponse, Reading, Resolution,
};

use crate::buckets::{self, Bucket, MIN15_MS};
use crate::placement::shard_of;
use crate::storage::{Store, StoreError};

/// Default and largest number of rows in one answer.
pub const DEFAULT_LIMIT: u32 = 10_000;
/// Most readings one aggregated query scans (about 30 years of 15-minute data).
pub const MAX_SCAN: usize = 1_000_000;

/// Query errors.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad arguments; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The meter or feeder does not exist.
    #[error("{kind} {id} is not registered")]
    NotFound {
        /// "meter" or "feeder".
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_range(from_ts_ms: i64, to_ts_ms: i64) -> Result<(), QueryError> {
    if from_ts_ms >= to_ts_ms {
        return Err(QueryError::Invalid(format!(
            "from_ts_ms ({from_ts_ms}) must be before to_ts_ms ({to_ts_ms})"
        )));
    }
    Ok(())
}

/// Readings (raw or aggregated) of one meter in `[from, to)`, from this node's store.
pub fn readings(
    store: &Store,
    meter_id: &str,
    from_ts_ms: i64,
    to_ts_ms: i64,
    resolution: Resolution,
    limit: u32,
) -> Result<GetReadingsResponse, QueryError> {
    if store.meter_info(meter_id)?.is_none() {
        return Err(QueryError::NotFound {
            kind: "meter",
            id: meter_id.to_owned(),
        });
    }
    let scan = ScanWindow::new(from_ts_ms, to_ts_ms, resolution, limit, MAX_SCAN)?;
    let rows = store.readings_between(meter_id, scan.from, scan.to, scan.max)?;
    Ok(scan.shape(rows))
}

/// Which stored readings answer a readings query, and how to shape them into the answer.
/// Split out so a cluster can gather the rows from several nodes and shape them once.
#[derive(Debug, Clone, Copy)]
pub struct ScanWindow {
    /// First timestamp to read (inclusive).
    pub from: i64,
    /// Last timestamp to read (exclusive).
    pub to: i64,
    /// Most rows to read.
    pub max: usize,
    resolution: Resolution,
    limit: usize,
}

impl ScanWindow {
    /// The window of a query; `max_scan` caps aggregated scans.
    pub fn new(
        from_ts_ms: i64,
        to_ts_ms: i64,
        resolution: Resolution,
        limit: u32,
        max_scan: usize,
    ) -> Result<Self, QueryError> {
        check_range(from_ts_ms, to_ts_ms)?;
        let limit = if limit == 0 {
            DEFAULT_LIMIT
        } else {
            limit.min(DEFAULT_LIMIT)
        } as usize;
        match resolution {
            Resolution::Unspecified => Err(QueryError::Invalid(
                "resolution must be set (RAW, QUARTER_HOUR, HOUR or DAY)".to_owned(),
            )),
            Resolution::Raw => Ok(Self {
                from: from_ts_ms,
                to: to_ts_ms,
                max: limit + 1,
                resolution,
                limit,
            }),
            // Readings stamped in (start, end] belong to [start, end): scan one ms later.
            Resolution::QuarterHour | Resolution::Hour | Resolution::Day => Ok(Self {
                from: from_ts_ms + 1,
                to: to_ts_ms + 1,
                max: max_scan,
                resolution,
                limit,
            }),
        }
    }

    /// The answer from the rows read (time order, at most `max`).
    pub fn shape(&self, mut rows: Vec<(i64, Reading)>) -> GetReadingsResponse {
        match Bucket::from_resolution(self.resolution) {
            None => {
                let truncated = rows.len() > self.limit;
                rows.truncate(self.limit);
                GetReadingsResponse {
                    readings: rows.into_iter().map(|(_, r)| r).collect(),
                    intervals: vec![],
                    truncated,
                    unavailable_nodes: vec![],
                }
            }
            Some(bucket) => {
                let accs = buckets::aggregate(rows.iter().map(|(ts, r)| (*ts, r)), bucket);
                let truncated = accs.len() > self.limit || rows.len() >= self.max;
                let intervals = accs
                    .iter()
                    .take(self.limit)
                    .map(|a| buckets::to_interval(a, bucket))
                    .collect();
                GetReadingsResponse {
                    readings: vec![],
                    intervals,
                    truncated,
                    unavailable_nodes: vec![],
                }
            }
        }
    }
}

/// Load of one feeder per interval in `[from, to)`, from this node's store alone.
pub fn feeder_load(
    store: &Store,
    feeder_id: &str,
    from_ts_ms: i64,
    to_ts_ms: i64,
    resolution: Resolution,
    shards: u32,
) -> Result<GetFeederLoadResponse, QueryError> {
    let bucket = feeder_bucket(resolution)?;
    let share = feeder_share(store, feeder_id, from_ts_ms, to_ts_ms, resolution, shards)?;
    let feeder = share.feeder.clone();
    Ok(GetFeederLoadResponse {
        feeder,
        intervals: merge_feeder_shares(vec![share], bucket),
        unavailable_nodes: vec![],
    })
}

/// The bucket of a feeder-load resolution.
pub fn feeder_bucket(resolution: Resolution) -> Result<Bucket, QueryError> {
    match resolution {
        Resolution::QuarterHour | Resolution::Hour | Resolution::Day => {
            Ok(Bucket::from_resolution(resolution)
                .expect("aggregated resolutions have a bucket size"))
        }
        _ => Err(QueryError::Invalid(
            "feeder load resolution must be QUARTER_HOUR, HOUR or DAY".to_owned(),
        )),
    }
}

/// This node's share of a feeder's load in `[from, to)`: the contributions of the meters it
/// stores, summed per shard of those meters. In a cluster every replica of a shard holds the
/// same meters, so shares are combined by taking each (shard, bucket) from one node only
/// ([`merge_feeder_shares`]), never by adding replicas.
pub fn feeder_share(
    store: &Store,
    feeder_id: &str,
    from_ts_ms: i64,
    to_ts_ms: i64,
    resolution: Resolution,
    shards: u32,
) -> Result<FeederShare, QueryError> {
    check_range(from_ts_ms, to_ts_ms)?;
    let bucket = feeder_bucket(resolution)?;
    let Some(feeder) = store.feeder_info(feeder_id)? else {
        return Err(QueryError::NotFound {
            kind: "feeder",
            id: feeder_id.to_owned(),
        });
    };
    if (to_ts_ms - from_ts_ms) / MIN15_MS > 366 * 96 * 5 {
        return Err(QueryError::Invalid(
            "feeder load ranges are limited to 5 years per call".to_owned(),
        ));
    }
    // Contributions are keyed by 15-minute interval start; align the scan to whole intervals.
    let from = from_ts_ms.div_euclid(MIN15_MS) * MIN15_MS;
    let rows = store.feeder_contributions(feeder_id, from, to_ts_ms)?;

    #[derive(Default)]
    struct Acc {
        quarters: BTreeMap<i64, FeederSums>,
        buckets: BTreeMap<i64, FeederSums>,
        meters: BTreeMap<i64, HashSet<String>>,
    }
    let mut per_shard: BTreeMap<u32, Acc> = BTreeMap::new();
    for (start, meter, c) in rows {
        if c.reading_count == 0 {
            continue;
        }
        let acc = per_shard.entry(shard_of(&meter, shards)).or_default();
        let bucket_start = start.div_euclid(bucket.len_ms()) * bucket.len_ms();
        let q = acc.quarters.entry(start).or_insert_with(|| FeederSums {
            start_ts_ms: start,
            ..FeederSums::default()
        });
        add_contribution(q, &c);
        let b = acc
            .buckets
            .entry(bucket_start)
            .or_insert_with(|| FeederSums {
                start_ts_ms: bucket_start,
                ..FeederSums::default()
            });
        add_contribution(b, &c);
        if !c.head_meter {
            acc.meters.entry(bucket_start).or_default().insert(meter);
        }
    }
    let shards = per_shard
        .into_iter()
        .map(|(shard, mut acc)| {
            for (start, b) in &mut acc.buckets {
                b.meters = acc.meters.get(start).map_or(0, |m| m.len() as u32);
            }
            ShardFeederShare {
                shard,
                buckets: acc.buckets.into_values().collect(),
                quarters: acc.quarters.into_values().collect(),
            }
        })
        .collect();
    Ok(FeederShare {
        feeder: Some(feeder),
        shards,
    })
}

fn add_contribution(sums: &mut FeederSums, c: &FeederContribution) {
    sums.readings += u64::from(c.reading_count);
    if c.head_meter {
        sums.head_import_wh += c.energy_import_wh;
    } else {
        sums.customer_import_wh += c.energy_import_wh;
        sums.customer_export_wh += c.energy_export_wh;
        sums.customer_reactive_varh += c.reactive_power_var * MIN15_MS as f64 / 3_600_000.0;
    }
}

/// Combines nodes' shares of a feeder's load: each (shard, bucket) and each (shard, quarter)
/// is taken from the share that counted the most readings there (the most complete replica;
/// the first such share on a tie), then added up over shards, and peaks and mean loads are
/// computed. Replicas of a shard are never added to each other.
pub fn merge_feeder_shares(shares: Vec<FeederShare>, bucket: Bucket) -> Vec<FeederInterval> {
    let mut best_buckets: BTreeMap<(u32, i64), FeederSums> = BTreeMap::new();
    let mut best_quarters: BTreeMap<(u32, i64), FeederSums> = BTreeMap::new();
    let keep_best =
        |map: &mut BTreeMap<(u32, i64), FeederSums>, shard: u32, sums: FeederSums| match map
            .entry((shard, sums.start_ts_ms))
        {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(sums);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if sums.readings > o.get().readings {
                    o.insert(sums);
                }
            }
        };
    for share in shares {
        for s in share.shards {
            for b in s.buckets {
                keep_best(&mut best_buckets, s.shard, b);
            }
            for q in s.quarters {
                keep_best(&mut best_quarters, s.shard, q);
            }
        }
    }
    let mut out: BTreeMap<i64, FeederInterval> = BTreeMap::new();
    for ((_, start), b) in best_buckets {
        let m = out.entry(start).or_insert_with(|| FeederInterval {
            start_ts_ms: start,
            end_ts_ms: start + bucket.len_ms(),
            customer_peak_load_w: f64::NEG_INFINITY,
            ..FeederInterval::default()
        });
        m.customer_energy_import_wh += b.customer_import_wh;
        m.customer_energy_export_wh += b.customer_export_wh;
        m.head_energy_import_wh += b.head_import_wh;
        m.meters_reporting += b.meters;
        m.customer_mean_reactive_var += b.customer_reactive_varh;
    }
    let mut quarters: BTreeMap<i64, f64> = BTreeMap::new();
    for ((_, start), q) in best_quarters {
        *quarters.entry(start).or_default() += q.customer_import_wh - q.customer_export_wh;
    }
    for (start, net) in quarters {
        let bucket_start = start.div_euclid(bucket.len_ms()) * bucket.len_ms();
        if let Some(b) = out.get_mut(&bucket_start) {
            b.customer_peak_load_w = b.customer_peak_load_w.max(mean_load_w(net, MIN15_MS));
        }
    }
    out.into_values()
        .map(|mut b| {
            if b.customer_peak_load_w == f64::NEG_INFINITY {
                b.customer_peak_load_w = 0.0;
            }
            b.customer_mean_load_w = mean_load_w(
                b.customer_energy_import_wh - b.customer_energy_export_wh,
                bucket.len_ms(),
            );
            // Summed as varh above; the mean over the bucket, like the active load.
            b.customer_mean_reactive_var =
                mean_load_w(b.customer_mean_reactive_var, bucket.len_ms());
            b
        })
        .collect()
}

/// Mean power over a duration from energy in it: Wh → W.
pub fn mean_load_w(energy_wh: f64, duration_ms: i64) -> f64 {
    energy_wh * 3_600_000.0 / duration_ms as f64
}
