//! Single activation: a meter's actor decides client writes on one node at a time, except
//! while the members' views disagree.
//!
//! The monitor asks every node once a second, all nodes in the same round, for the meters with
//! a resident actor in shards it owns ([`crate::monitor::ActivitySample`]; actors that only
//! merge copies on replicas are listed apart by the node and not counted). A meter listed by
//! two nodes in one round is an *overlap*. Overlaps are expected while views disagree —
//! during a partition both sides own the shard, and just after a failure or a return the
//! nodes learn the new view a heartbeat apart — so an overlap is allowed when the nodes
//! involved computed different shard owners at that moment, or when some node's view changed
//! within [`OVERLAP_GRACE`] before it. Any other overlap is a violation naming the meter, the
//! nodes and the time. After healing, [`settled`] waits (bounded) until no meter is active as
//! owner on two nodes.
//!
//! Double counting is what an overlap could cost; the checker's exact feeder-aggregate and
//! exactly-once checks cover it independently.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use gridmesh_proto::client::Client;

use crate::monitor::{ActivitySample, Observations, ViewSample};

/// How long after a view change an overlap may last.
pub const OVERLAP_GRACE: Duration = Duration::from_secs(10);

/// How long [`settled`] waits, after the views converged, for the last overlap to end.
pub const SETTLE_ACTIVATION: Duration = Duration::from_secs(15);

/// What the activity samples showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivationSummary {
    /// Sampling rounds with at least two nodes answering.
    pub rounds: usize,
    /// (meter, round) pairs where the meter was active on two or more nodes.
    pub overlaps: usize,
    /// Of those, the ones not explained by disagreeing or changing views.
    pub unexplained: usize,
    /// The longest run of consecutive rounds one meter stayed active on two nodes, seconds
    /// from its first to its last sample.
    pub longest_overlap: Duration,
    /// Violations, at most 20.
    pub violations: Vec<String>,
}

/// Checks every sampled round (see the module docs).
pub fn check(observations: &Observations) -> ActivationSummary {
    let mut summary = ActivationSummary::default();
    let mut rounds: BTreeMap<u64, Vec<&ActivitySample>> = BTreeMap::new();
    for sample in &observations.activity {
        rounds.entry(sample.round).or_default().push(sample);
    }
    let changes = view_changes(&observations.views);
    // Meter → (first seen overlapping, last seen, last round) of its current overlap; rounds
    // are counted among those where two or more nodes answered.
    let mut open: HashMap<&str, (Duration, Duration, usize)> = HashMap::new();
    for samples in rounds.values() {
        if samples.len() < 2 {
            continue;
        }
        summary.rounds += 1;
        let round = summary.rounds;
        let at = samples.iter().map(|s| s.at).max().unwrap_or_default();
        let mut holders: HashMap<&str, Vec<usize>> = HashMap::new();
        for sample in samples {
            for meter in &sample.meters {
                holders.entry(meter.as_str()).or_default().push(sample.node);
            }
        }
        let mut overlapping: Vec<(&str, Vec<usize>)> =
            holders.into_iter().filter(|(_, n)| n.len() > 1).collect();
        overlapping.sort();
        for (meter, nodes) in overlapping {
            summary.overlaps += 1;
            let entry = open.entry(meter).or_insert((at, at, round));
            if entry.2 + 1 < round {
                *entry = (at, at, round); // a new overlap, not a continuation
            }
            entry.1 = at;
            entry.2 = round;
            summary.longest_overlap = summary.longest_overlap.max(entry.1 - entry.0);
            let changed = changes
                .iter()
                .any(|&c| c <= at && at.saturating_sub(c) <= OVERLAP_GRACE);
            if changed || disagree(&observations.views, &nodes, at) {
                continue;
            }
            summary.unexplained += 1;
            if summary.violations.len() < 20 {
                let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
                summary.violations.push(format!(
                    "meter {meter} was active on {} at {:.1} s while their views agreed and \
                     no view had changed for {} s",
                    names.join(" and "),
                    at.as_secs_f64(),
                    OVERLAP_GRACE.as_secs()
                ));
            }
        }
    }
    summary
}

/// When some observer's view epoch changed (the time of the first sample showing it).
fn view_changes(views: &[ViewSample]) -> Vec<Duration> {
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut changes = Vec::new();
    for view in views {
        if let Some(previous) = last.insert(view.observer, view.epoch)
            && previous != view.epoch
        {
            changes.push(view.at);
        }
    }
    changes
}

/// Whether the latest views of `nodes` at `at` assign any shard differently (or one of them
/// has no view yet).
fn disagree(views: &[ViewSample], nodes: &[usize], at: Duration) -> bool {
    let latest: Vec<Option<&ViewSample>> = nodes
        .iter()
        .map(|&n| {
            views
                .iter()
                .filter(|v| v.observer == n && v.at <= at)
                .max_by_key(|v| v.at)
        })
        .collect();
    let Some(Some(first)) = latest.first() else {
        return true;
    };
    latest
        .iter()
        .any(|v| v.is_none_or(|v| v.owners != first.owners))
}

/// Waits (up to `timeout`) until no meter is active on two of the nodes behind `clients`;
/// returns the meters still active on several, with their nodes, when it gives up.
pub async fn settled(clients: &[(usize, Client)], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut complete = true;
        for (node, client) in clients {
            match crate::monitor::active_meters(client).await {
                Some((_, meters)) => {
                    for meter in meters {
                        holders.entry(meter).or_default().push(*node);
                    }
                }
                None => complete = false,
            }
        }
        let doubled: Vec<String> = holders
            .into_iter()
            .filter(|(_, nodes)| nodes.len() > 1)
            .map(|(meter, nodes)| {
                let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
                format!("meter {meter} still active on {}", names.join(" and "))
            })
            .collect();
        if complete && doubled.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            let mut out = doubled;
            if !complete {
                out.push("a node did not list its active meters".to_owned());
            }
            out.truncate(20);
            return out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn activity(round: u64, at_s: u64, node: usize, meters: &[&str]) -> ActivitySample {
        ActivitySample {
            round,
            at: Duration::from_secs(at_s),
            node,
            meters: meters.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn view(at_s: u64, observer: usize, epoch: u64, owner: &str) -> ViewSample {
        ViewSample {
            at: Duration::from_secs(at_s),
            observer,
            epoch,
            members: Vec::new(),
            owners: Arc::new(vec![owner.to_owned()]),
        }
    }

    #[test]
    fn an_overlap_with_agreeing_settled_views_is_a_violation() {
        let observations = Observations {
            views: vec![view(0, 0, 1, "n0"), view(0, 1, 1, "n0")],
            resources: Vec::new(),
            activity: vec![
                activity(1, 30, 0, &["m1", "m2"]),
                activity(1, 30, 1, &["m2"]),
                activity(2, 31, 0, &["m2"]),
                activity(2, 31, 1, &["m2"]),
            ],
        };
        let summary = check(&observations);
        assert_eq!(
            (summary.rounds, summary.overlaps, summary.unexplained),
            (2, 2, 2)
        );
        assert_eq!(summary.longest_overlap, Duration::from_secs(1));
        assert!(summary.violations[0].contains("meter m2 was active on n0 and n1 at 30.0 s"));
    }

    #[test]
    fn overlaps_while_views_disagree_or_just_changed_are_allowed() {
        let observations = Observations {
            views: vec![
                view(0, 0, 1, "n0"),
                view(0, 1, 1, "n0"),
                // n1 sees a new view at 20 s; n0 follows only at 45 s.
                view(20, 1, 2, "n1"),
                view(45, 0, 2, "n1"),
            ],
            resources: Vec::new(),
            activity: vec![
                activity(1, 25, 0, &["m1"]),
                activity(1, 25, 1, &["m1"]), // within the grace of the change at 20 s
                activity(2, 40, 0, &["m1"]),
                activity(2, 40, 1, &["m1"]), // views disagree
                activity(3, 50, 0, &["m1"]),
                activity(3, 50, 1, &["m1"]), // grace of n0's change at 45 s
                activity(4, 70, 0, &[]),
                activity(4, 70, 1, &["m1"]),
            ],
        };
        let summary = check(&observations);
        assert_eq!(summary.overlaps, 3);
        assert_eq!(summary.unexplained, 0, "{:?}", summary.violations);
        assert_eq!(summary.longest_overlap, Duration::from_secs(25));
    }
}
