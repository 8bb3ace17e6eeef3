use std::collections::BTreeMap;

use proptest::prelude::*;
use prost::Message;

use super::*;

const NOW: i64 = 1_750_000_000_000;
const TOL: i64 = 300_000;

fn reading(ts_ms: i64, register_wh: f64) -> Reading {
    Reading {
        meter_id: "m1".to_owned(),
        ts_ms,
        energy_import_register_wh: Some(register_wh),
        interval_energy_import_wh: Some(10.0),
        ..Reading::default()
    }
}

fn encode(r: &Reading) -> Vec<u8> {
    Reading {
        meter_id: String::new(),
        ..r.clone()
    }
    .encode_to_vec()
}

/// A meter's stored readings in memory.
#[derive(Default)]
struct MapHistory(BTreeMap<i64, Reading>);

impl History for MapHistory {
    fn at(&mut self, ts_ms: i64) -> Option<Vec<u8>> {
        self.0.get(&ts_ms).map(encode)
    }
    fn before(&mut self, ts_ms: i64) -> Option<Neighbour> {
        self.0.range(..ts_ms).next_back().map(|(t, r)| Neighbour {
            ts_ms: *t,
            reading: r.clone(),
        })
    }
    fn after(&mut self, ts_ms: i64) -> Option<Neighbour> {
        self.0.range(ts_ms + 1..).next().map(|(t, r)| Neighbour {
            ts_ms: *t,
            reading: r.clone(),
        })
    }
}

/// Runs readings through `decide` the way the meter actor does, applying accepted ones.
fn apply(state: &mut MeterState, history: &mut MapHistory, r: &Reading) -> Decision {
    let rules = MeterRules {
        out_of_order_window_ms: 7 * 86_400_000,
        nominal_voltage_v: 230.0,
    };
    let decision = decide(state, &rules, r, &encode(r), history);
    if matches!(
        decision,
        Decision::Insert { .. } | Decision::Correction { .. }
    ) {
        history.0.insert(r.ts_ms, r.clone());
        if r.ts_ms >= state.last_ts_ms {
            state.last_ts_ms = r.ts_ms;
            state.last_import_register_wh = r.energy_import_register_wh;
        }
    }
    decision
}

#[test]
fn shape_rejects_each_kind_of_garbage() {
    let ok = reading(NOW, 1.0);
    assert_eq!(check_shape(&ok, NOW, TOL), Ok(()));
    let cases: Vec<(Reading, RejectReason)> = vec![
        (
            Reading {
                meter_id: "x".repeat(10_000),
                ..ok.clone()
            },
            RejectReason::InvalidMeterId,
        ),
        (
            Reading {
                meter_id: String::new(),
                ..ok.clone()
            },
            RejectReason::InvalidMeterId,
        ),
        (
            Reading {
                ts_ms: 0,
                ..ok.clone()
            },
            RejectReason::TimestampTooEarly,
        ),
        (
            Reading {
                ts_ms: NOW + TOL + 1,
                ..ok.clone()
            },
            RejectReason::TimestampInFuture,
        ),
        (
            Reading {
                active_power_w: Some(f64::NAN),
                ..ok.clone()
            },
            RejectReason::NotFinite,
        ),
        (
            Reading {
                interval_energy_import_wh: Some(f64::INFINITY),
                ..ok.clone()
            },
            RejectReason::NotFinite,
        ),
        (
            Reading {
                interval_energy_import_wh: Some(-1.0),
                ..ok.clone()
            },
            RejectReason::OutOfRange,
        ),
        (
            Reading {
                voltage_v: Some(PhaseValues {
                    l2: Some(-5.0),
                    ..PhaseValues::default()
                }),
                ..ok.clone()
            },
            RejectReason::OutOfRange,
        ),
        (
            Reading {
                events: vec![0],
                ..ok.clone()
            },
            RejectReason::InvalidEvent,
        ),
        (
            Reading {
                events: vec![99],
                ..ok.clone()
            },
            RejectReason::InvalidEvent,
        ),
        (
            Reading {
                meter_id: "m1".to_owned(),
                ts_ms: NOW,
                ..Reading::default()
            },
            RejectReason::Empty,
        ),
    ];
    for (bad, reason) in cases {
        assert_eq!(
            check_shape(&bad, NOW, TOL).map_err(|e| e.0),
            Err(reason),
            "{bad:?}"
        );
    }
    let last_gasp = Reading {
        meter_id: "m1".to_owned(),
        ts_ms: NOW,
        events: vec![MeterEventKind::LastGasp as i32],
        ..Reading::default()
    };
    assert_eq!(check_shape(&last_gasp, NOW, TOL), Ok(()));
}

#[test]
fn duplicates_conflicts_and_corrections() {
    let mut state = MeterState::default();
    let mut history = MapHistory::default();
    let first = reading(NOW - 60_000, 100.0);
    assert_eq!(
        apply(&mut state, &mut history, &first),
        Decision::Insert {
            out_of_order: false
        }
    );
    assert_eq!(apply(&mut state, &mut history, &first), Decision::Duplicate);

    let different = Reading {
        interval_energy_import_wh: Some(11.0),
        ..first.clone()
    };
    assert!(matches!(
        apply(&mut state, &mut history, &different),
        Decision::Reject((RejectReason::Conflict, _))
    ));
    let correction = Reading {
        version: 1,
        ..different.clone()
    };
    assert_eq!(
        apply(&mut state, &mut history, &correction),
        Decision::Correction {
            replaced: encode(&first)
        }
    );
    assert!(matches!(
        apply(&mut state, &mut history, &first),
        Decision::Reject((RejectReason::StaleVersion, _))
    ));
}

#[test]
fn registers_may_not_run_backwards_in_order_or_when_backfilled() {
    let mut state = MeterState::default();
    let mut history = MapHistory::default();
    apply(&mut state, &mut history, &reading(NOW - 3_600_000, 100.0));
    apply(&mut state, &mut history, &reading(NOW - 1_800_000, 200.0));
    assert!(matches!(
        apply(&mut state, &mut history, &reading(NOW, 150.0)),
        Decision::Reject((RejectReason::RegisterBackwards, _))
    ));
    // Backfill between the two must fit between their registers.
    assert_eq!(
        apply(&mut state, &mut history, &reading(NOW - 2_700_000, 150.0)),
        Decision::Insert { out_of_order: true }
    );
    assert!(matches!(
        apply(&mut state, &mut history, &reading(NOW - 2_000_000, 250.0)),
        Decision::Reject((RejectReason::RegisterBackwards, _))
    ));
}

#[test]
fn too_old_and_over_voltage_are_rejected() {
    let mut state = MeterState::default();
    let mut history = MapHistory::default();
    apply(&mut state, &mut history, &reading(NOW, 100.0));
    assert!(matches!(
        apply(
            &mut state,
            &mut history,
            &reading(NOW - 8 * 86_400_000, 1.0)
        ),
        Decision::Reject((RejectReason::TooOld, _))
    ));
    let surge = Reading {
        voltage_v: Some(PhaseValues {
            l1: Some(600.0),
            ..PhaseValues::default()
        }),
        ..reading(NOW + 1000, 100.0)
    };
    assert!(matches!(
        apply(&mut state, &mut history, &surge),
        Decision::Reject((RejectReason::OutOfRange, _))
    ));
}

proptest! {
    /// Whatever order readings arrive in (with repeats), what is stored has monotonic registers,
    /// every reading sent is either stored exactly or rejected, and resending is idempotent.
    #[test]
    fn any_arrival_order_keeps_registers_monotonic(
        steps in prop::collection::vec(0.0f64..50.0, 1..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 1..80),
    ) {
        let mut register = 0.0;
        let truth: Vec<Reading> = steps.iter().enumerate().map(|(i, step)| {
            register += step;
            reading(NOW - 86_400_000 + i as i64 * 900_000, register)
        }).collect();
        let mut state = MeterState::default();
        let mut history = MapHistory::default();
        for index in order {
            let r = &truth[index.index(truth.len())];
            let decision = apply(&mut state, &mut history, r);
            let is_correction = matches!(decision, Decision::Correction { .. });
            prop_assert!(!is_correction, "no correction without a version bump");
            if let Decision::Reject((reason, _)) = decision {
                prop_assert_eq!(reason, RejectReason::RegisterBackwards);
            }
        }
        let registers: Vec<f64> =
            history.0.values().filter_map(|r| r.energy_import_register_wh).collect();
        prop_assert!(registers.windows(2).all(|w| w[0] <= w[1]));
        for (ts, stored) in &history.0 {
            prop_assert!(truth.iter().any(|r| r.ts_ms == *ts && r == stored));
        }
        // A second pass over everything stored is all duplicates.
        for stored in history.0.clone().values() {
            prop_assert_eq!(apply(&mut state, &mut history, stored), Decision::Duplicate);
        }
    }

    #[test]
    fn shape_check_never_panics_and_rejects_non_finite(
        v in prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<f64>(),
        ],
        field in 0usize..6, ts in any::<i64>(),
    ) {
        let mut r = reading(ts, 1.0);
        match field {
            0 => r.energy_import_register_wh = Some(v),
            1 => r.interval_energy_export_wh = Some(v),
            2 => r.active_power_w = Some(v),
            3 => r.reactive_power_var = Some(v),
            4 => r.voltage_v = Some(PhaseValues { l3: Some(v), ..PhaseValues::default() }),
            _ => r.current_a = Some(PhaseValues { l1: Some(v), ..PhaseValues::default() }),
        }
        let result = check_shape(&r, NOW, TOL);
        if !v.is_finite() && (EARLIEST_TS_MS..=NOW + TOL).contains(&ts) {
            prop_assert_eq!(result.map_err(|e| e.0), Err(RejectReason::NotFinite));
        }
    }
}

fn versioned(ts_ms: i64, version: u32, wh: f64) -> Reading {
    Reading {
        version,
        interval_energy_import_wh: Some(wh),
        ..reading(ts_ms, 1.0)
    }
}

/// Applies copies in the given order with `merge_copy`, as a replica's store would.
fn merged(copies: &[Reading]) -> Option<Vec<u8>> {
    let mut stored: Option<Vec<u8>> = None;
    for copy in copies {
        let encoded = encode(copy);
        match merge_copy(stored.as_deref(), &encoded, copy.version) {
            Merge::Insert | Merge::Replace { .. } => stored = Some(encoded),
            Merge::Same | Merge::KeepStored => {}
        }
    }
    stored
}

#[test]
fn higher_versions_win_and_equal_copies_are_no_ops() {
    let v0 = encode(&versioned(NOW, 0, 1.0));
    let v1 = encode(&versioned(NOW, 1, 2.0));
    assert_eq!(merge_copy(None, &v0, 0), Merge::Insert);
    assert_eq!(merge_copy(Some(&v0), &v0, 0), Merge::Same);
    assert_eq!(
        merge_copy(Some(&v0), &v1, 1),
        Merge::Replace {
            replaced: v0.clone()
        }
    );
    assert_eq!(merge_copy(Some(&v1), &v0, 0), Merge::KeepStored);
}

proptest! {
    /// Every replica ends with the same value whatever order (and how often) copies arrive:
    /// the highest version, then the largest encoding.
    #[test]
    fn replicas_converge_whatever_the_order(
        copies in proptest::collection::vec((0u32..3, 0u32..4), 1..8),
        seed in any::<u64>(),
    ) {
        let copies: Vec<Reading> = copies
            .iter()
            .map(|(v, wh)| versioned(NOW, *v, f64::from(*wh)))
            .collect();
        let expected = copies
            .iter()
            .map(|c| (c.version, encode(c)))
            .max()
            .map(|(_, e)| e);
        let mut shuffled = copies.clone();
        // A deterministic shuffle with duplicates: rotate, then repeat a prefix.
        let k = (seed as usize) % shuffled.len();
        shuffled.rotate_left(k);
        let again = shuffled[..k].to_vec();
        shuffled.extend(again);
        shuffled.reverse();
        prop_assert_eq!(merged(&copies), expected.clone());
        prop_assert_eq!(merged(&shuffled), expected);
    }
}
