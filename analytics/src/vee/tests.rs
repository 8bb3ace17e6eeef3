use super::*;
use crate::time::CivilDate;
use proptest::prelude::*;

fn monday() -> i64 {
    CivilDate {
        year: 2024,
        month: 1,
        day: 1,
    }
    .to_day()
        * DAY_MS
}

/// Two weeks of a daily shape; weekends lower.
fn two_weeks() -> Vec<Option<f64>> {
    (0..14 * 96)
        .map(|i| {
            let slot = (i % 96) as f64;
            let weekend = if (i / 96) % 7 >= 5 { 0.5 } else { 1.0 };
            Some(weekend * (100.0 + slot))
        })
        .collect()
}

#[test]
fn short_gaps_are_interpolated_between_neighbours() {
    let mut values = two_weeks();
    values[10] = None;
    values[11] = None;
    let outcome = run_vee(monday(), &values, &BTreeSet::new(), &VeeConfig::default()).unwrap();
    assert_eq!(outcome.values[10], Some(110.0));
    assert_eq!(outcome.values[11], Some(111.0));
    let rules: Vec<VeeRule> = outcome.edits.iter().map(|e| e.rule).collect();
    assert_eq!(rules, vec![VeeRule::LinearInterpolation; 2]);
    assert!(outcome.edits.iter().all(|e| e.raw.is_none()));
}

#[test]
fn long_gaps_use_like_days_of_the_same_class_and_skip_excluded_days() {
    let mut values = two_weeks();
    // Wednesday of week 2 loses six hours; so does the Saturday of week 2 (its like days are
    // Saturdays only: week 1's).
    values[9 * 96 + 20..9 * 96 + 44].fill(None);
    values[12 * 96..12 * 96 + 24].fill(None);
    // Make the Tuesday of week 2 an outage day with odd values: it must not be used.
    let tuesday = monday() / DAY_MS + 8;
    for (slot, v) in values[8 * 96..9 * 96].iter_mut().enumerate() {
        *v = Some(5000.0 + slot as f64);
    }
    let excluded = BTreeSet::from([tuesday]);
    let outcome = run_vee(monday(), &values, &excluded, &VeeConfig::default()).unwrap();
    assert!(outcome.unestimated.is_empty());
    for i in (9 * 96 + 20)..(9 * 96 + 44) {
        assert_eq!(
            outcome.values[i],
            Some(100.0 + (i % 96) as f64),
            "interval {i}"
        );
    }
    for i in (12 * 96)..(12 * 96 + 24) {
        assert_eq!(outcome.values[i], Some(0.5 * (100.0 + (i % 96) as f64)));
    }
    assert!(outcome.edits.iter().all(|e| e.rule == VeeRule::LikeDay));
}

#[test]
fn a_gap_without_like_days_is_reported_not_invented() {
    let mut values: Vec<Option<f64>> = (0..96).map(|i| Some(f64::from(i))).collect();
    values[0] = None;
    values[1] = None;
    let outcome = run_vee(monday(), &values, &BTreeSet::new(), &VeeConfig::default()).unwrap();
    assert_eq!(outcome.unestimated, vec![Run { first: 0, len: 2 }]);
    assert_eq!(outcome.values[0], None);
    assert!(outcome.edits.is_empty());
}

#[test]
fn zero_and_frozen_runs_are_flagged_with_raw_values_kept() {
    let mut values = two_weeks();
    for v in &mut values[100..130] {
        *v = Some(0.0);
    }
    for v in &mut values[300..310] {
        *v = Some(42.5);
    }
    let outcome = run_vee(monday(), &values, &BTreeSet::new(), &VeeConfig::default()).unwrap();
    let zero: Vec<&Edit> = outcome
        .edits
        .iter()
        .filter(|e| e.rule == VeeRule::ZeroRun)
        .collect();
    let frozen: Vec<&Edit> = outcome
        .edits
        .iter()
        .filter(|e| e.rule == VeeRule::FrozenRun)
        .collect();
    assert_eq!(zero.len(), 30);
    assert_eq!(frozen.len(), 10);
    assert!(
        frozen
            .iter()
            .all(|e| e.raw == Some(42.5) && e.value == 42.5)
    );
    assert_eq!(outcome.values, values, "flags change no value");
    assert_eq!(find_frozen_runs(&values, 11), vec![]);
    assert_eq!(find_zero_runs(&[Some(0.0), None, Some(0.0)], 2), vec![]);
}

#[test]
fn bad_settings_and_input_are_refused() {
    let config = VeeConfig {
        interval_ms: 7 * 60_000,
        ..VeeConfig::default()
    };
    assert!(run_vee(0, &[Some(1.0)], &BTreeSet::new(), &config).is_err());
    let config = VeeConfig::default();
    assert!(run_vee(0, &[Some(f64::NAN)], &BTreeSet::new(), &config).is_err());
}

proptest! {
    #![proptest_config(crate::test_config(256))]
    #[test]
    fn interpolation_stays_within_the_neighbours(
        before in -1e6f64..1e6, after in -1e6f64..1e6, len in 1usize..50
    ) {
        let (lo, hi) = (before.min(after), before.max(after));
        for v in interpolate(before, after, len) {
            prop_assert!(v >= lo - 1e-9 && v <= hi + 1e-9);
        }
    }

    /// VEE keeps every measured value, fills a gap only with values inside the range of
    /// measured values (interpolation between neighbours, like-day means), explains every
    /// change with an edit that keeps the raw value, and leaves empty only what it reports.
    #[test]
    fn vee_never_loses_or_invents(
        raw in prop::collection::vec(prop::option::weighted(0.8, 0.0f64..10.0), 96..(96 * 10)),
        start_day in 19_000i64..19_100,
    ) {
        let config = VeeConfig::default();
        let outcome = run_vee(start_day * DAY_MS, &raw, &BTreeSet::new(), &config).unwrap();
        prop_assert_eq!(outcome.values.len(), raw.len());
        let measured: Vec<f64> = raw.iter().flatten().copied().collect();
        let lo = measured.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = measured.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (i, (before, after)) in raw.iter().zip(&outcome.values).enumerate() {
            match (before, after) {
                (Some(b), a) => prop_assert_eq!(Some(*b), *a),
                (None, Some(a)) => {
                    prop_assert!(*a >= lo - 1e-9 && *a <= hi + 1e-9);
                    let edit = outcome.edits.iter().find(|e| e.index == i && e.rule.is_estimate());
                    prop_assert!(edit.is_some_and(|e| e.raw.is_none() && e.value == *a));
                }
                (None, None) => {
                    prop_assert!(outcome.unestimated.iter().any(|r| r.first <= i && i < r.end()));
                }
            }
        }
        for edit in &outcome.edits {
            prop_assert_eq!(edit.raw, raw[edit.index]);
            prop_assert_eq!(edit.start_ts_ms, start_day * DAY_MS + edit.index as i64 * MIN15_MS);
        }
    }
}
