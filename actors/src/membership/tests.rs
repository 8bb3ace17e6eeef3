use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const DEADLINES: Deadlines = Deadlines {
    suspect_after: Duration::from_millis(500),
    down_after: Duration::from_millis(1500),
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn view(name: &str, incarnation: u64, t0: Instant) -> Membership {
    Membership::new(name, incarnation, Addresses::default(), DEADLINES, t0)
}

fn hb(from: &str, incarnation: u64) -> Heartbeat {
    Heartbeat {
        from: from.to_owned(),
        incarnation,
        addresses: Addresses::default(),
        draining: false,
        joining: false,
        you_are_down_at: 0,
    }
}

fn state(m: &Membership, peer: &str) -> MemberState {
    m.peer(peer).unwrap().state
}

#[test]
fn silence_makes_a_peer_suspect_then_down() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    assert_eq!(
        a.on_heartbeat(&hb("b", 1), t0),
        vec![Event::Joined("b".into())]
    );
    let mut placement: Vec<&str> = a.placement_members().collect();
    placement.sort_unstable();
    assert_eq!(placement, ["a", "b"]);
    let e0 = a.epoch();

    assert!(a.tick(t0 + ms(400)).is_empty());
    assert_eq!(a.tick(t0 + ms(600)), vec![Event::Suspected("b".into())]);
    // A suspect still owns its shards.
    assert_eq!(a.placement_members().count(), 2);
    assert_eq!(a.tick(t0 + ms(1200)), vec![]);
    assert_eq!(a.tick(t0 + ms(1600)), vec![Event::Down("b".into())]);
    assert_eq!(a.placement_members().collect::<Vec<_>>(), ["a"]);
    assert_eq!(a.epoch(), e0 + 2);
}

#[test]
fn a_suspect_heard_again_recovers() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    a.on_heartbeat(&hb("b", 1), t0);
    a.tick(t0 + ms(700));
    assert_eq!(state(&a, "b"), MemberState::Suspect);
    assert_eq!(
        a.on_heartbeat(&hb("b", 1), t0 + ms(800)),
        vec![Event::Recovered("b".into())]
    );
    // Heard at 800 ms: suspect again at 1600 ms, but not down.
    assert_eq!(a.tick(t0 + ms(1600)), vec![Event::Suspected("b".into())]);
}

#[test]
fn a_down_member_returns_only_with_a_new_incarnation() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    let mut b = view("b", 10, t0);
    a.on_heartbeat(&b.heartbeat_for("a"), t0);
    a.tick(t0 + ms(500));
    a.tick(t0 + ms(1000));
    a.tick(t0 + ms(2000));
    assert_eq!(state(&a, "b"), MemberState::Down);

    // b was cut off but not stalled: its heartbeats at the old incarnation do not count.
    let t1 = t0 + ms(2100);
    assert!(a.on_heartbeat(&b.heartbeat_for("a"), t1).is_empty());
    assert_eq!(state(&a, "b"), MemberState::Down);
    // a tells b it holds it down; b takes a new incarnation and comes back as a new member.
    let verdict = a.heartbeat_for("b");
    assert_eq!(verdict.you_are_down_at, 10);
    assert_eq!(
        b.on_heartbeat(&verdict, t1),
        vec![Event::NewIncarnation(11), Event::Joined("a".into())]
    );
    // A repeated verdict about the old incarnation does not bump it again.
    assert!(
        !b.on_heartbeat(&verdict, t1)
            .contains(&Event::NewIncarnation(12))
    );
    assert_eq!(
        a.on_heartbeat(&b.heartbeat_for("a"), t1 + ms(10)),
        vec![Event::Returned("b".into(), 11)]
    );
    assert_eq!(state(&a, "b"), MemberState::Alive);
    assert_eq!(a.heartbeat_for("b").you_are_down_at, 0);
}

#[test]
fn a_closed_connection_is_down_at_once() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    a.on_heartbeat(&hb("b", 1), t0);
    assert_eq!(a.on_disconnect("b"), vec![Event::Down("b".into())]);
    assert!(a.on_disconnect("b").is_empty());
    assert!(a.on_disconnect("unknown").is_empty());
    // A restarted b has a higher incarnation and returns directly.
    assert_eq!(
        a.on_heartbeat(&hb("b", 2), t0 + ms(50)),
        vec![Event::Returned("b".into(), 2)]
    );
}

#[test]
fn a_stalled_node_takes_a_new_incarnation_and_does_not_blame_its_peers() {
    let t0 = Instant::now();
    let mut a = view("a", 5, t0);
    a.on_heartbeat(&hb("b", 1), t0);
    a.tick(t0 + ms(100));
    // SIGSTOP for 3 s: the next tick comes late.
    let events = a.tick(t0 + ms(3100));
    assert_eq!(events, vec![Event::NewIncarnation(6)]);
    assert_eq!(
        state(&a, "b"),
        MemberState::Alive,
        "b gets a fresh grace period"
    );
    assert_eq!(a.heartbeat_for("b").incarnation, 6);
    // If b really is gone, the deadline still applies, counted from the resume.
    let mut events = Vec::new();
    for t in (3200..=4700).step_by(100) {
        events.extend(a.tick(t0 + ms(t)));
    }
    assert_eq!(
        events,
        vec![Event::Suspected("b".into()), Event::Down("b".into())]
    );
}

#[test]
fn stale_heartbeats_from_an_earlier_life_are_ignored() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    a.on_heartbeat(&hb("b", 7), t0);
    assert!(a.on_heartbeat(&hb("b", 6), t0 + ms(10)).is_empty());
    assert_eq!(a.peer("b").unwrap().incarnation, 7);
}

#[test]
fn draining_members_own_no_shards() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    a.on_heartbeat(&hb("b", 1), t0);
    let mut draining = hb("b", 1);
    draining.draining = true;
    assert_eq!(
        a.on_heartbeat(&draining, t0 + ms(10)),
        vec![Event::Draining("b".into(), true)]
    );
    assert_eq!(a.placement_members().collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        a.set_draining(true),
        vec![Event::Draining("a".into(), true)]
    );
    assert_eq!(a.placement_members().count(), 0);
    assert!(a.heartbeat_for("b").draining);
}

#[test]
fn joining_members_own_no_shards_until_ready() {
    let t0 = Instant::now();
    let mut a = view("a", 1, t0);
    let mut b = view("b", 1, t0);
    b.set_joining();
    assert_eq!(b.placement_members().count(), 0);
    a.on_heartbeat(&b.heartbeat_for("a"), t0);
    assert_eq!(a.placement_members().collect::<Vec<_>>(), ["a"]);
    assert_eq!(b.set_ready(), vec![Event::Ready("b".into())]);
    assert!(b.set_ready().is_empty());
    assert_eq!(
        a.on_heartbeat(&b.heartbeat_for("a"), t0 + ms(10)),
        vec![Event::Ready("b".into())]
    );
    assert_eq!(a.placement_members().count(), 2);
}

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Heartbeat { from: usize, incarnation_bump: bool },
    Disconnect(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..2500).prop_map(Step::Advance),
        (0usize..4, any::<bool>()).prop_map(|(from, incarnation_bump)| Step::Heartbeat {
            from,
            incarnation_bump
        }),
        (0usize..4).prop_map(Step::Disconnect),
    ]
}

proptest! {
    /// Whatever happens: the epoch never goes back and grows with every event, incarnations
    /// never go back, this node always owns shards (it is never down in its own view), and a
    /// peer silent for longer than `down_after` is down after the next tick.
    #[test]
    fn invariants_hold_under_any_history(steps in proptest::collection::vec(step(), 1..80)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut a = view("a", 1, t0);
        let mut incarnations = [1u64; 4];
        let mut last_heard = [None::<Instant>; 4];
        for s in steps {
            let epoch = a.epoch();
            let before: Vec<(String, u64)> =
                a.members().map(|m| (m.name.clone(), m.incarnation)).collect();
            let events = match s {
                Step::Advance(d) => {
                    now += ms(d);
                    let events = a.tick(now);
                    if events.iter().any(|e| matches!(e, Event::NewIncarnation(_))) {
                        // A stall: every peer gets a fresh grace period.
                        for heard in last_heard.iter_mut().flatten() {
                            *heard = now;
                        }
                    }
                    events
                }
                Step::Heartbeat { from, incarnation_bump } => {
                    if incarnation_bump {
                        incarnations[from] += 1;
                    }
                    let name = format!("p{from}");
                    let events = a.on_heartbeat(&hb(&name, incarnations[from]), now);
                    if a.peer(&name).is_some_and(|m| m.state != MemberState::Down) {
                        last_heard[from] = Some(now);
                    }
                    events
                }
                Step::Disconnect(p) => a.on_disconnect(&format!("p{p}")),
            };
            prop_assert_eq!(a.epoch(), epoch + events.len() as u64);
            for (name, inc) in before {
                let now_inc = a.members().find(|m| m.name == name).unwrap().incarnation;
                prop_assert!(now_inc >= inc);
            }
            prop_assert!(a.placement_members().any(|m| m == "a"));
            if matches!(s, Step::Advance(_)) {
                for (i, heard) in last_heard.iter().enumerate() {
                    if let (Some(heard), Some(m)) = (heard, a.peer(&format!("p{i}")))
                        && now.duration_since(*heard) > DEADLINES.down_after
                    {
                        prop_assert_eq!(m.state, MemberState::Down);
                    }
                }
            }
        }
    }
}
