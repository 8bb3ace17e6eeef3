use super::*;
use crate::time::MINUTE_MS;
use proptest::prelude::*;

const Q: i64 = 15 * MINUTE_MS;

/// A household-like day: low at night, peaks morning and evening, a little deterministic
/// noise, and a lower weekend.
fn usual(i: i64) -> f64 {
    let slot = i % 96;
    let day = i / 96;
    let shape = match slot {
        0..=23 => 40.0,
        24..=35 => 120.0,
        36..=67 => 80.0,
        68..=87 => 160.0,
        _ => 60.0,
    };
    // Day 0 (1970-01-01) was a Thursday.
    let weekend = if (day + 3) % 7 >= 5 { 0.8 } else { 1.0 };
    let noise = ((i * 7919) % 23) as f64 - 11.0;
    weekend * shape + noise
}

fn detector() -> MeterAnomalyDetector {
    MeterAnomalyDetector::new("m", AnomalyRules::default()).unwrap()
}

/// Feeds intervals `from..to` of `values` and returns the alert kinds raised (+) / cleared (−).
fn feed(
    d: &mut MeterAnomalyDetector,
    from: i64,
    to: i64,
    value: impl Fn(i64) -> f64,
) -> Vec<String> {
    (from..to)
        .flat_map(|i| d.observe_interval(i * Q, value(i)).events)
        .map(|e| {
            format!(
                "{}{}",
                if e.is_raise() { '+' } else { '-' },
                e.key().kind.as_str()
            )
        })
        .collect()
}

#[test]
fn normal_consumption_raises_nothing() {
    let mut d = detector();
    assert_eq!(feed(&mut d, 0, 96 * 70, usual), Vec::<String>::new());
}

#[test]
fn a_spike_is_a_deviation_that_clears() {
    let mut d = detector();
    feed(&mut d, 0, 96 * 35, usual);
    let spike = 96 * 35 + 50;
    let events = feed(&mut d, 96 * 35, 96 * 36, |i| {
        if i == spike { 900.0 } else { usual(i) }
    });
    assert_eq!(events, ["+consumption_deviation", "-consumption_deviation"]);
    let z = d.observe_interval((96 * 36) * Q, usual(96 * 36)).z.unwrap();
    assert!(z.abs() < 3.0, "{z}");
}

#[test]
fn zero_and_frozen_runs() {
    let mut d = detector();
    feed(&mut d, 0, 96 * 35, usual);
    let start = 96 * 35 + 30;
    let zeros = feed(&mut d, 96 * 35, 96 * 36, |i| {
        if (start..start + 10).contains(&i) {
            0.0
        } else {
            usual(i)
        }
    });
    assert!(zeros.contains(&"+zero_run".to_owned()) && zeros.contains(&"-zero_run".to_owned()));
    let frozen = feed(&mut d, 96 * 36, 96 * 37, |i| {
        if (96 * 36 + 40..96 * 36 + 60).contains(&i) {
            77.7
        } else {
            usual(i)
        }
    });
    assert!(frozen.contains(&"+frozen_run".to_owned()), "{frozen:?}");
    assert!(frozen.contains(&"-frozen_run".to_owned()));
}

#[test]
fn zeros_where_the_meter_usually_reads_zero_do_not_alert() {
    let mut d = detector();
    let night_off = |i: i64| if i % 96 < 24 { 0.0 } else { usual(i) };
    let events = feed(&mut d, 0, 96 * 50, night_off);
    assert!(!events.iter().any(|e| e.contains("zero_run")), "{events:?}");
}

#[test]
fn a_persistent_step_down_is_caught_and_clears_when_consumption_returns() {
    let mut d = detector();
    feed(&mut d, 0, 96 * 42, usual);
    let theft = feed(&mut d, 96 * 42, 96 * 70, |i| 0.65 * usual(i));
    let steps: Vec<&String> = theft
        .iter()
        .filter(|e| e.contains("consumption_step"))
        .collect();
    assert_eq!(steps, ["+consumption_step"], "{theft:?}");
    let back = feed(&mut d, 96 * 70, 96 * 80, usual);
    assert!(back.contains(&"-consumption_step".to_owned()), "{back:?}");
}

#[test]
fn bad_rules_are_refused() {
    let bad = AnomalyRules {
        z_threshold: 0.0,
        ..AnomalyRules::default()
    };
    assert!(MeterAnomalyDetector::new("m", bad).is_err());
    let bad = AnomalyRules {
        interval_ms: 7 * MINUTE_MS,
        ..AnomalyRules::default()
    };
    assert!(MeterAnomalyDetector::new("m", bad).is_err());
}

proptest! {
    #![proptest_config(crate::test_config(48))]

    /// Whatever the values (and gaps), each alert kind alternates raise and clear, starting
    /// with a raise.
    #[test]
    fn alerts_alternate_per_kind(
        values in prop::collection::vec(prop::option::weighted(0.95, 0.0f64..200.0), 0..3000),
        repeat in 0usize..3,
    ) {
        let mut d = detector();
        let mut open = std::collections::BTreeSet::new();
        let mut previous = 0.0;
        for (i, value) in values.iter().enumerate() {
            let Some(mut value) = *value else { continue };
            if repeat == 1 && i % 50 < 20 { value = previous; }
            if repeat == 2 && i % 70 < 15 { value = 0.0; }
            previous = value;
            for e in d.observe_interval(i as i64 * Q, value).events {
                let kind = e.key().kind;
                prop_assert_eq!(open.contains(&kind), !e.is_raise(), "{:?}", e);
                if e.is_raise() { open.insert(kind); } else { open.remove(&kind); }
            }
        }
    }
}

#[test]
fn the_newest_interval_is_known_in_any_offset() {
    for minutes in [0, 60, -330] {
        let rules = AnomalyRules {
            offset: crate::time::LocalOffset::new(minutes).unwrap(),
            ..AnomalyRules::default()
        };
        let mut d = MeterAnomalyDetector::new("m", rules).unwrap();
        assert_eq!(d.last_interval_start_ms(), None);
        d.observe_interval(1_000 * Q, 5.0);
        d.observe_interval(1_003 * Q, 5.0);
        assert_eq!(
            d.last_interval_start_ms(),
            Some(1_003 * Q),
            "offset {minutes}"
        );
        assert_eq!(d.rules(), &rules);
    }
}

fn ring_strategy() -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(
        prop_oneof![
            Just(f32::NAN),
            -1.0e6f32..1.0e6f32,
            Just(0.0f32),
            Just(-0.0f32)
        ],
        0..3000,
    )
}

proptest! {
    /// The persisted ring is the ring: every present value bit for bit, every gap a gap.
    #[test]
    fn the_sparse_ring_encoding_round_trips(ring in ring_strategy()) {
        let decoded = sparse_ring::decode(&sparse_ring::encode(&ring)).expect("decodes");
        prop_assert_eq!(decoded.len(), ring.len());
        for (a, b) in ring.iter().zip(&decoded) {
            prop_assert!(a.is_nan() && b.is_nan() || a.to_bits() == b.to_bits());
        }
    }

    /// Garbage (a truncated, extended or flipped encoding) is refused or decodes to some
    /// ring of at most the stated length; it never panics or allocates without bound.
    #[test]
    fn a_corrupt_ring_encoding_is_refused_without_panicking(
        ring in ring_strategy(),
        cut in 0usize..64,
        flip in proptest::option::of((0usize..4096, 1u8..=255)),
    ) {
        let mut bytes = sparse_ring::encode(&ring);
        bytes.truncate(bytes.len().saturating_sub(cut));
        if let Some((at, mask)) = flip && !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        if let Some(decoded) = sparse_ring::decode(&bytes) {
            prop_assert!(decoded.len() <= sparse_ring::MAX_LEN);
        }
    }
}

#[test]
fn a_young_meters_ring_is_stored_in_a_few_hundred_bytes() {
    let mut d = MeterAnomalyDetector::new("m", AnomalyRules::default()).unwrap();
    for i in 0..96 {
        d.observe_interval(i * MIN15_MS, 1.0 + (i % 5) as f64);
    }
    // One day of values: 4 bytes of length, one run header, 96 values.
    assert_eq!(sparse_ring::encode(&d.ring).len(), 4 + 8 + 96 * 4);
}
