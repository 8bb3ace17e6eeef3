use super::*;
use proptest::prelude::*;

const MIN: i64 = MINUTE_MS;

/// Feeder f: transformer t1 with meters a1..a5, t2 with b1..b5.
fn tracker() -> OutageTracker {
    let meters = (1..=5)
        .map(|i| (format!("a{i}"), "t1".to_owned()))
        .chain((1..=5).map(|i| (format!("b{i}"), "t2".to_owned())));
    let mut t = OutageTracker::new("f", meters, OutageRules::default()).unwrap();
    for id in t.meters.keys().cloned().collect::<Vec<_>>() {
        t.observe(&id, MeterSignal::Reading, 0).unwrap();
    }
    t
}

fn summary(events: &[AlertEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            AlertEvent::Raise(r) => format!("+{}", r.key.dedup_key()),
            AlertEvent::Clear { key, reason, .. } => format!("-{} {reason:?}", key.dedup_key()),
        })
        .collect()
}

#[test]
fn a_transformer_outage_is_one_alert_and_sustained_interruptions() {
    let mut t = tracker();
    for id in ["a1", "a2", "a3", "a4", "a5"] {
        assert!(
            t.observe(id, MeterSignal::LastGasp, 10 * MIN)
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        t.tick(14 * MIN).is_empty(),
        "not confirmed before 5 minutes"
    );
    assert_eq!(summary(&t.tick(15 * MIN)), ["+outage/transformer/t1"]);
    assert!(t.tick(20 * MIN).is_empty(), "raised once");
    let mut events = Vec::new();
    for id in ["a1", "a2", "a3", "a4"] {
        events.extend(t.observe(id, MeterSignal::PowerRestore, 70 * MIN).unwrap());
    }
    assert!(
        events.is_empty(),
        "open until the last meter is back: {events:?}"
    );
    // A reading from before the gasp proves nothing; one after it means supply is back.
    assert!(
        t.observe("a5", MeterSignal::Reading, 5 * MIN)
            .unwrap()
            .is_empty()
    );
    let events = t.observe("a5", MeterSignal::Reading, 90 * MIN).unwrap();
    assert_eq!(summary(&events), ["-outage/transformer/t1 Recovered"]);
    let r = t.reliability(0, 100 * MIN);
    assert_eq!(
        (
            r.customers,
            r.sustained_interruptions,
            r.momentary_interruptions
        ),
        (10, 5, 0)
    );
    assert!((r.customer_minutes - (4.0 * 60.0 + 80.0)).abs() < 1e-9);
    assert!((r.saifi - 0.5).abs() < 1e-12 && (r.saidi_min - 32.0).abs() < 1e-9);
}

#[test]
fn a_meter_outage_is_absorbed_when_its_transformer_follows() {
    let mut t = tracker();
    t.observe("a1", MeterSignal::LastGasp, 0).unwrap();
    assert_eq!(summary(&t.tick(6 * MIN)), ["+outage/meter/a1"]);
    for id in ["a2", "a3", "a4", "a5"] {
        t.observe(id, MeterSignal::LastGasp, 10 * MIN).unwrap();
    }
    assert_eq!(
        summary(&t.tick(16 * MIN)),
        ["+outage/transformer/t1", "-outage/meter/a1 Superseded"]
    );
}

#[test]
fn momentary_interruptions_count_but_never_alert() {
    let mut t = tracker();
    t.observe("b1", MeterSignal::LastGasp, 10 * MIN).unwrap();
    assert!(
        t.observe("b1", MeterSignal::PowerRestore, 12 * MIN)
            .unwrap()
            .is_empty()
    );
    assert!(t.tick(20 * MIN).is_empty());
    let r = t.reliability(0, i64::MAX);
    assert_eq!(
        (r.sustained_interruptions, r.momentary_interruptions),
        (0, 1)
    );
    assert!((r.maifi - 0.1).abs() < 1e-12);
    assert_eq!(r.caidi_min, None);
}

#[test]
fn a_lone_silent_meter_is_a_comms_alert_but_many_are_an_outage() {
    let mut t = tracker();
    for id in ["a1", "a2", "a3", "a4", "a5", "b2", "b3", "b4", "b5"] {
        t.observe(id, MeterSignal::Reading, 40 * MIN).unwrap();
    }
    assert_eq!(summary(&t.tick(50 * MIN)), ["+meter_silent/meter/b1"]);
    t.observe("b1", MeterSignal::Reading, 55 * MIN).unwrap();
    let r = t.reliability(0, i64::MAX);
    assert_eq!(
        r.sustained_interruptions, 0,
        "a lone silent meter is not an interruption"
    );

    // The whole of t2 goes silent: a transformer outage, counted for SAIFI.
    for id in ["a1", "a2", "a3", "a4", "a5"] {
        t.observe(id, MeterSignal::Reading, 100 * MIN).unwrap();
    }
    let events = t.tick(101 * MIN);
    assert_eq!(
        summary(&events),
        ["+outage/transformer/t2"],
        "b1 was seen at 55, b2-5 at 40"
    );
    for id in ["b1", "b2", "b3", "b4", "b5"] {
        t.observe(id, MeterSignal::Reading, 120 * MIN).unwrap();
    }
    assert_eq!(t.reliability(0, i64::MAX).sustained_interruptions, 5);
}

#[test]
fn the_whole_feeder_out_supersedes_transformer_alerts() {
    let mut t = tracker();
    for id in ["a1", "a2", "a3", "a4", "a5"] {
        t.observe(id, MeterSignal::LastGasp, 0).unwrap();
    }
    t.tick(6 * MIN);
    for id in ["b1", "b2", "b3", "b4", "b5"] {
        t.observe(id, MeterSignal::LastGasp, 7 * MIN).unwrap();
    }
    let events = t.tick(12 * MIN);
    assert_eq!(
        summary(&events),
        ["+outage/feeder/f", "-outage/transformer/t1 Superseded"]
    );
    let AlertEvent::Raise(raise) = &events[0] else {
        panic!("expected a raise")
    };
    assert_eq!((raise.severity, raise.since_ts_ms), (Severity::Critical, 0));
}

#[test]
fn bad_topology_and_unknown_meters() {
    let twice = vec![
        ("m".to_owned(), "t".to_owned()),
        ("m".to_owned(), "t".to_owned()),
    ];
    assert!(OutageTracker::new("f", twice, OutageRules::default()).is_err());
    let bad = OutageRules {
        feeder_fraction: 0.0,
        ..OutageRules::default()
    };
    assert!(OutageTracker::new("f", vec![], bad).is_err());
    assert!(tracker().observe("zz", MeterSignal::Reading, 0).is_err());
}

proptest! {
    #![proptest_config(crate::test_config(256))]
    /// Whatever happens, every alert key alternates raise/clear starting with a raise, and
    /// once every meter reports again all alerts are closed and nobody is down.
    #[test]
    fn alerts_alternate_and_everything_clears_on_recovery(
        steps in prop::collection::vec((0usize..10, 0u8..4, 1i64..20), 1..120)
    ) {
        let mut t = tracker();
        let ids: Vec<String> = t.meters.keys().cloned().collect();
        let mut open: BTreeSet<AlertKey> = BTreeSet::new();
        let mut now = 0;
        let mut check = |events: Vec<AlertEvent>| -> std::result::Result<(), TestCaseError> {
            for e in events {
                let key = e.key().clone();
                prop_assert_eq!(open.contains(&key), !e.is_raise(), "{:?}", e);
                if e.is_raise() { open.insert(key); } else { open.remove(&key); }
            }
            Ok(())
        };
        for (meter, action, minutes) in steps {
            now += minutes * MIN;
            let id = &ids[meter];
            match action {
                0 => check(t.observe(id, MeterSignal::LastGasp, now).unwrap())?,
                1 => check(t.observe(id, MeterSignal::PowerRestore, now).unwrap())?,
                2 => check(t.observe(id, MeterSignal::Reading, now).unwrap())?,
                _ => check(t.tick(now))?,
            }
        }
        now += MIN;
        for id in &ids {
            check(t.observe(id, MeterSignal::Reading, now).unwrap())?;
        }
        check(t.tick(now))?;
        prop_assert!(open.is_empty(), "{:?}", open);
        prop_assert_eq!(t.meters_down(), 0);
        for i in t.interruptions() {
            prop_assert!(i.end_ms > i.start_ms);
            prop_assert_eq!(i.momentary, i.end_ms - i.start_ms < 5 * MIN);
        }
    }

    /// Noting a batch of signals and evaluating once records the same interruptions as
    /// observing them one by one, and ends with the same meters down.
    #[test]
    fn batched_notes_record_what_single_observations_record(
        steps in prop::collection::vec((0usize..10, 0u8..3, 0i64..20), 1..120),
        batch in 1usize..12,
    ) {
        let (mut single, mut batched) = (tracker(), tracker());
        let ids: Vec<String> = single.meters.keys().cloned().collect();
        let mut now = 0;
        let signals: Vec<(usize, MeterSignal, i64)> = steps
            .into_iter()
            .map(|(meter, action, minutes)| {
                now += minutes * MIN;
                let signal = match action {
                    0 => MeterSignal::LastGasp,
                    1 => MeterSignal::PowerRestore,
                    _ => MeterSignal::Reading,
                };
                (meter, signal, now)
            })
            .collect();
        for chunk in signals.chunks(batch) {
            for &(meter, signal, ts) in chunk {
                single.observe(&ids[meter], signal, ts).unwrap();
                batched.note(&ids[meter], signal, ts).unwrap();
            }
            batched.evaluate_at(chunk[chunk.len() - 1].2);
        }
        prop_assert_eq!(single.interruptions(), batched.interruptions());
        prop_assert_eq!(single.meters_down(), batched.meters_down());
    }

    /// The quiet fast path (no meter down, nothing open, no silence due) never changes what
    /// the tracker reports: the same steps with the cached bound thrown away before every
    /// call, which forces the full walk each time, give the same events and the same state.
    #[test]
    fn skipping_quiet_evaluations_changes_nothing(
        steps in prop::collection::vec((0usize..10, 0u8..5, 0i64..30), 1..150)
    ) {
        let (mut fast, mut full) = (tracker(), tracker());
        let ids: Vec<String> = fast.meters.keys().cloned().collect();
        let mut now = 0;
        for (meter, action, minutes) in steps {
            now += minutes * MIN;
            let id = &ids[meter];
            full.quiet_until = None;
            let (a, b) = match action {
                0..=2 => {
                    let signal = [MeterSignal::LastGasp, MeterSignal::PowerRestore,
                        MeterSignal::Reading][action as usize];
                    fast.note(id, signal, now).unwrap();
                    full.note(id, signal, now).unwrap();
                    full.quiet_until = None;
                    (fast.evaluate_at(now), full.evaluate_at(now))
                }
                _ => (fast.tick(now), full.tick(now)),
            };
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            prop_assert_eq!(fast.meters_down(), full.meters_down());
        }
        prop_assert_eq!(fast.interruptions(), full.interruptions());
    }
}
