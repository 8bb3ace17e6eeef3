//! Copying accepted readings to other nodes: the fan-out of a write to its replicas (with a
//! substitute for a replica that does not answer), used by the ingest pipeline for client
//! writes and by hinted handoff and anti-entropy for repairs.
//!
//! One request per destination node carries every shard part meant for it, whatever the
//! number of meters: cross-node messages are per batch and node, never per reading. A part is
//! *durable* on a node when the node's meters merged every reading of it and its writer synced
//! them (see [`crate::meter::WorkKind::Copy`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use gridmesh_proto::internal::{
    ReplicaPart, ReplicateCause, ReplicateReply, ReplicateRequest, cluster_reply, cluster_request,
};
use gridmesh_proto::v1::Reading;

use crate::cluster::{Cluster, into_result};
use crate::replica::Plan;

/// The readings of one shard to copy, and where to.
#[derive(Debug, Clone)]
pub struct ShardCopies {
    /// The shard.
    pub shard: u32,
    /// Targets and spares (from [`Cluster::plan`]).
    pub plan: Plan,
    /// Readings, meter id set.
    pub readings: Vec<Reading>,
}

/// How copying one shard's readings went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardResult {
    /// Nodes that hold the readings durably now (this node not counted).
    pub durable_on: Vec<String>,
    /// Why the others failed: `node: reason`.
    pub failures: Vec<String>,
}

/// Copies each shard's readings to its plan's targets, all destinations at once. A target that
/// fails (no session, timeout, refusal) is replaced once by the plan's next spare, which keeps
/// a hint for it. Returns the result per shard.
pub async fn copy(
    cluster: &Arc<Cluster>,
    shards: Vec<ShardCopies>,
    cause: ReplicateCause,
    timeout: Duration,
) -> BTreeMap<u32, ShardResult> {
    let mut results: BTreeMap<u32, ShardResult> = BTreeMap::new();
    let mut spares: HashMap<u32, std::vec::IntoIter<String>> = HashMap::new();
    let mut readings: HashMap<u32, Arc<Vec<Reading>>> = HashMap::new();
    // Round one: every target of every shard.
    let mut round: Vec<(String, u32, Vec<String>)> = Vec::new();
    for s in shards {
        results.entry(s.shard).or_default();
        for target in s.plan.targets {
            round.push((target.node, s.shard, target.hinted_for));
        }
        spares.insert(s.shard, s.plan.spares.into_iter());
        readings.insert(s.shard, Arc::new(s.readings));
    }
    for attempt in 0..2 {
        if round.is_empty() {
            break;
        }
        let failed = send_round(cluster, &round, &readings, cause, timeout, &mut results).await;
        round = Vec::new();
        if attempt == 1 {
            break;
        }
        for (node, shard, hinted_for, _) in failed {
            let used = |n: &str| {
                results
                    .get(&shard)
                    .is_some_and(|r| r.durable_on.iter().any(|d| d == n))
            };
            let Some(spare) = spares
                .get_mut(&shard)
                .and_then(|it| it.by_ref().find(|n| !used(n)))
            else {
                continue;
            };
            // The spare stands in for the failed node, and for whomever it stood in for.
            let mut hints = hinted_for;
            if hints.is_empty() {
                hints.push(node);
            }
            round.push((spare, shard, hints));
        }
    }
    results
}

/// Sends one round; returns the failed `(node, shard, hinted_for, reason)`.
async fn send_round(
    cluster: &Arc<Cluster>,
    round: &[(String, u32, Vec<String>)],
    readings: &HashMap<u32, Arc<Vec<Reading>>>,
    cause: ReplicateCause,
    timeout: Duration,
    results: &mut BTreeMap<u32, ShardResult>,
) -> Vec<(String, u32, Vec<String>, String)> {
    let mut by_node: BTreeMap<&str, Vec<(u32, &Vec<String>)>> = BTreeMap::new();
    for (node, shard, hinted_for) in round {
        by_node
            .entry(node.as_str())
            .or_default()
            .push((*shard, hinted_for));
    }
    let calls = by_node.into_iter().map(|(node, parts)| {
        let request = ReplicateRequest {
            cause: cause as i32,
            parts: parts
                .iter()
                .map(|(shard, hinted_for)| ReplicaPart {
                    shard: *shard,
                    hinted_for: (*hinted_for).clone(),
                    readings: readings
                        .get(shard)
                        .map(|r| r.as_ref().clone())
                        .unwrap_or_default(),
                })
                .collect(),
        };
        let shards: Vec<(u32, Vec<String>)> =
            parts.iter().map(|(s, h)| (*s, (*h).clone())).collect();
        async move {
            let reply = cluster
                .forward_within(
                    node,
                    cluster_request::Call::Replicate(request),
                    true,
                    timeout,
                )
                .await;
            (node, shards, reply)
        }
    });
    let mut failed = Vec::new();
    for (node, shards, reply) in futures::future::join_all(calls).await {
        let answer: Result<ReplicateReply, String> = match reply {
            Err(e) => Err(e.to_string()),
            Ok(reply) => match into_result(node, reply) {
                Ok(Some(cluster_reply::Reply::Replicate(r))) => Ok(r),
                Ok(_) => Err(format!("node {node} sent a reply of the wrong kind")),
                Err(status) => Err(status.message().to_owned()),
            },
        };
        for (i, (shard, hinted_for)) in shards.into_iter().enumerate() {
            let outcome = match &answer {
                Ok(reply) => match reply.parts.get(i) {
                    Some(part) if part.durable => Ok(()),
                    Some(part) => Err(part.error.clone()),
                    None => Err("the reply has fewer parts than the request".to_owned()),
                },
                Err(why) => Err(why.clone()),
            };
            let result = results.entry(shard).or_default();
            match outcome {
                Ok(()) => result.durable_on.push(node.to_owned()),
                Err(why) => {
                    metrics::counter!("gridmesh_replica_write_failures_total").increment(1);
                    result.failures.push(format!("{node}: {why}"));
                    failed.push((node.to_owned(), shard, hinted_for, why));
                }
            }
        }
    }
    failed
}
