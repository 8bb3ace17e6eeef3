//! A meter actor's newest stored readings, so that a reading arriving a few intervals late is
//! decided without reading the store.
//!
//! Head-ends send several batches at once, so a meter often receives interval *t + 1* before
//! interval *t*. Deciding the late reading needs the stored reading at its timestamp
//! (duplicate or conflict), its stored neighbours (registers must not go backwards) and the
//! readings of its 15-minute bucket (to recompute the feeder contribution): four store
//! lookups, after waiting for the meter's queued writes to be applied. [`Recent`] answers them
//! from memory whenever it can prove its answer is the store's.
//!
//! The proof is one invariant: **every stored reading of the meter stamped at or after `from`
//! is in `entries`**. It starts true at activation (nothing is stored after the newest
//! timestamp), every write of the meter's readings passes through its actor, which records
//! it here, and dropping the oldest entry raises `from` past it. Deletions (`Forget`) start
//! over from the new newest timestamp.

/// Readings kept per meter: a reorder distance of up to three intervals is answered from
/// memory. About 130 bytes each (the stored encoding and its timestamp).
pub const RECENT_READINGS: usize = 4;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// Every stored reading stamped at or after this is in `entries`.
    from: i64,
    /// `(ts_ms, stored encoding)`, oldest first.
    entries: Vec<(i64, Vec<u8>)>,
}

impl Recent {
    /// Knows nothing: every question goes to the store.
    pub fn unknown() -> Self {
        Self {
            from: i64::MAX,
            entries: Vec::new(),
        }
    }

    /// Nothing is stored after `last_ts_ms` (0: nothing is stored at all).
    pub fn above(last_ts_ms: i64) -> Self {
        Self {
            from: if last_ts_ms == 0 {
                i64::MIN
            } else {
                last_ts_ms.saturating_add(1)
            },
            entries: Vec::new(),
        }
    }

    /// Records that `encoded` is now stored at `ts_ms` (new or replacing). Nothing is
    /// dropped until [`Recent::trim`], so what [`Recent::covers`] said before a batch holds
    /// for the whole batch.
    pub fn stored(&mut self, ts_ms: i64, encoded: &[u8]) {
        if ts_ms < self.from {
            return;
        }
        match self.entries.binary_search_by_key(&ts_ms, |e| e.0) {
            Ok(i) => encoded.clone_into(&mut self.entries[i].1),
            Err(i) => self.entries.insert(i, (ts_ms, encoded.to_vec())),
        }
    }

    /// Drops the oldest readings beyond [`RECENT_READINGS`] (after each batch).
    pub fn trim(&mut self) {
        let excess = self.entries.len().saturating_sub(RECENT_READINGS);
        if let Some((newest_dropped, _)) = self.entries.drain(..excess).next_back() {
            self.from = newest_dropped.saturating_add(1);
        }
    }

    /// Whether every question about a reading at `ts_ms` in the bucket starting at
    /// `bucket_start` (readings in `(bucket_start, bucket_start + len]`) is answered here.
    pub fn covers(&self, ts_ms: i64, bucket_start: i64) -> bool {
        self.complete_from(bucket_start.saturating_add(1)) && self.before(ts_ms).is_some()
    }

    /// Whether every stored reading at or after `ts_ms` is here.
    pub fn complete_from(&self, ts_ms: i64) -> bool {
        ts_ms >= self.from
    }

    /// The stored encoding at `ts_ms`, when known (`Some(None)`: nothing is stored there).
    pub fn at(&self, ts_ms: i64) -> Option<Option<&[u8]>> {
        self.complete_from(ts_ms).then(|| {
            self.entries
                .binary_search_by_key(&ts_ms, |e| e.0)
                .ok()
                .map(|i| self.entries[i].1.as_slice())
        })
    }

    /// The newest stored reading before `ts_ms`, when known: known when one is here, or when
    /// nothing at all was stored before `from`.
    pub fn before(&self, ts_ms: i64) -> Option<Option<(i64, &[u8])>> {
        let newest = self.entries.iter().rev().find(|e| e.0 < ts_ms);
        match newest {
            Some((ts, encoded)) => Some(Some((*ts, encoded.as_slice()))),
            None if self.from == i64::MIN => Some(None),
            None => None,
        }
    }

    /// The oldest stored reading after `ts_ms`, when known.
    pub fn after(&self, ts_ms: i64) -> Option<Option<(i64, &[u8])>> {
        self.complete_from(ts_ms.saturating_add(1)).then(|| {
            self.entries
                .iter()
                .find(|e| e.0 > ts_ms)
                .map(|(ts, encoded)| (*ts, encoded.as_slice()))
        })
    }

    /// The stored readings in `[from_ts_ms, to_ts_ms)`, oldest first, when known.
    pub fn between(&self, from_ts_ms: i64, to_ts_ms: i64) -> Option<Vec<(i64, &[u8])>> {
        self.complete_from(from_ts_ms).then(|| {
            self.entries
                .iter()
                .filter(|e| e.0 >= from_ts_ms && e.0 < to_ts_ms)
                .map(|(ts, encoded)| (*ts, encoded.as_slice()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever is written in whatever order, every answer `Recent` gives is the answer
        /// the store (modelled by a map of everything written) gives.
        #[test]
        fn every_known_answer_is_the_stores(
            stored_before in prop::collection::btree_set(0i64..40, 0..6),
            writes in prop::collection::vec((0i64..60, any::<u8>(), any::<bool>()), 0..40),
            questions in prop::collection::vec(0i64..70, 1..20),
        ) {
            let mut store: BTreeMap<i64, Vec<u8>> =
                stored_before.iter().map(|t| (*t + 1, vec![0])).collect();
            let last = store.keys().next_back().copied().unwrap_or(0);
            // Timestamps start at 1 in the model so that 0 can mean "nothing stored".
            let mut recent = if store.is_empty() { Recent::above(0) } else { Recent::above(last) };
            for (ts, value, end_of_batch) in writes {
                let ts = ts + 1;
                store.insert(ts, vec![value]);
                recent.stored(ts, &[value]);
                if end_of_batch {
                    recent.trim();
                    prop_assert!(recent.entries.len() <= RECENT_READINGS);
                }
            }
            for q in questions {
                if let Some(answer) = recent.at(q) {
                    prop_assert_eq!(answer, store.get(&q).map(Vec::as_slice));
                }
                if let Some(answer) = recent.before(q) {
                    let expected = store.range(..q).next_back().map(|(t, v)| (*t, v.as_slice()));
                    prop_assert_eq!(answer, expected);
                }
                if let Some(answer) = recent.after(q) {
                    let expected = store.range(q + 1..).next().map(|(t, v)| (*t, v.as_slice()));
                    prop_assert_eq!(answer, expected);
                }
                if let Some(answer) = recent.between(q, q + 5) {
                    let expected: Vec<(i64, &[u8])> =
                        store.range(q..q + 5).map(|(t, v)| (*t, v.as_slice())).collect();
                    prop_assert_eq!(answer, expected);
                }
            }
        }
    }

    #[test]
    fn in_order_readings_cover_a_reading_a_few_intervals_late() {
        let mut recent = Recent::above(100);
        for ts in [200, 300, 400, 600] {
            recent.stored(ts, &[1]);
            recent.trim();
        }
        // 500 arrives late: its neighbours and its bucket (400, 500] are known.
        assert!(recent.covers(500, 400));
        assert_eq!(recent.before(500), Some(Some((400, &[1][..]))));
        assert_eq!(recent.after(500), Some(Some((600, &[1][..]))));
        assert_eq!(recent.at(500), Some(None));
        recent.stored(500, &[2]);
        recent.stored(700, &[1]);
        // Within a batch nothing is dropped.
        assert!(recent.covers(300, 200));
        recent.trim();
        // 200 and 300 were dropped: a reading at 250 goes to the store.
        assert!(!recent.covers(250, 200));
        assert_eq!(recent.at(250), None);
    }
}
