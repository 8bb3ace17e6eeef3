//! What a node answers, wherever the data lives: the gRPC services call [`Api`], which serves
//! locally what this node owns and forwards the rest to the owners' gateways. It is also the
//! [`LocalHandler`] those gateways hand forwarded calls to.
//!
//! - **Ingest**: a batch is split by the owner of each reading's meter shard; the local part
//!   goes to the [`IngestPipeline`], each remote part is one forwarded call to its owner, all
//!   at once. The ack is merged with indices mapped back to the client's batch. A part whose
//!   owner is unreachable, saturated or stopping is rejected reading by reading with
//!   `OWNER_UNAVAILABLE` (nothing of it was stored); a part whose outcome is unknown (sent,
//!   no answer in time) fails the whole call with `UNAVAILABLE`, as an ack timeout does:
//!   resending is safe because ingest is idempotent.
//! - **Readings and meter status** go to the meter's owner.
//! - **Feeder load** adds up every reachable node's share (contributions are written by the
//!   node that stores the meter's readings).
//! - **Registry** writes are applied here, then on every reachable peer: every node keeps
//!   the whole registry (it is small, and every meter actor needs its entry locally).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gridmesh_proto::ids::{check_feeder_id, check_meter_id};
use gridmesh_proto::internal::{
    AlertCommand, AlertPage, ClusterReply, ClusterRequest, Done, FeederShare, FeederShareRequest,
    LocalReadings, LocalReadingsRequest, RegistryPage, RegistryPageRequest, RepairReply,
    ReplicaStatus, ReplicaStatusRequest, alert_command, cluster_reply, cluster_request,
};
use gridmesh_proto::v1::{
    AcknowledgeAlertRequest, Alert, DeadLetterInfo, DrainNodeRequest, DrainNodeResponse,
    EnergyChannel, FeederDay, GetAggregatesRequest, GetAggregatesResponse, GetFeederLoadRequest,
    GetFeederLoadResponse, GetForecastRequest, GetForecastResponse, GetMeterAnomaliesRequest,
    GetMeterAnomaliesResponse, GetMeterStatusRequest, GetNodeStatsRequest, GetReadingsRequest,
    GetReadingsResponse, GetReliabilityRequest, GetReliabilityResponse, GetReplicaStatusRequest,
    GetReplicaStatusResponse, GetValidatedIntervalsRequest, GetValidatedIntervalsResponse,
    ImportTopologyRequest, ImportTopologyResponse, Interruption, ListAlertsRequest,
    ListAlertsResponse, ListDeadLettersRequest, ListDeadLettersResponse, MailboxDepth,
    MeterAnomaly, MeterDay, MeterEventKind, MeterMonth, MeterStatus, NodeStats, PushAck, Reading,
    ReadingBatch, RejectReason, Rejection, RepairRequest, RepairResponse, ReplayDeadLettersRequest,
    ReplayDeadLettersResponse, ReplicaCopy, ReplicaNodeStatus, Resolution, ResolveAlertRequest,
    ShardReplicas, TouEnergy, ValidatedInterval,
};
use tonic::{Code, Status};

use crate::alerts::{AlertError, AlertMsg};
use crate::cluster::gateway::LocalHandler;
use crate::cluster::runtime::MembershipMsg;
use crate::cluster::{ForwardError, Owner, error_reply, into_result, ok_reply};
use crate::context::{Counters, NodeContext};
use crate::feeder::FeederSupervisorMsg;
use crate::ingest::{Admission, IngestError, IngestPipeline};
use crate::membership::MemberState;
use crate::node::{active_feeders, shard_stats};
use crate::placement::shard_of;
use crate::query::{self, ScanWindow};
use crate::repair::{self, ReplicatorMsg};
use crate::shard::ShardMsg;
use crate::status::{self, blocking};
use crate::storage::encode_reading;
use crate::validation::copy_wins;
use crate::{registry, registry::ImportCounts};

/// How long a status request may wait for the meter actor, ms.
const STATUS_TIMEOUT_MS: u64 = 5_000;

/// Most readings one node returns for a cluster-wide read (about 3 years of 15-minute data).
const CLUSTER_MAX_SCAN: usize = 100_000;

/// How old the digest tree answering a peer may be (a peer compares during a round).
const DIGEST_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Registry entries per page when a joining node copies the registry.
const REGISTRY_PAGE: usize = 10_000;

/// Most registry entries in one import.
pub const MAX_IMPORT_ENTRIES: usize = 200_000;

/// The node's request handling, cluster-aware. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    ctx: Arc<NodeContext>,
    pipeline: IngestPipeline,
}

/// One owner's share of a batch.
struct Part {
    indices: Vec<u32>,
    batch: ReadingBatch,
}

/// How one part ended.
enum PartOutcome {
    Acked(PushAck),
    /// Nothing of it was stored.
    Refused(String),
    /// It may or may not have been stored.
    Unknown(String),
}

impl Api {
    /// The API of a running node.
    pub fn new(ctx: Arc<NodeContext>, pipeline: IngestPipeline) -> Self {
        Self { ctx, pipeline }
    }

    /// The node context.
    pub fn ctx(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Ingests a batch, forwarding the parts other nodes own.
    pub async fn push(&self, batch: ReadingBatch, admission: Admission) -> Result<PushAck, Status> {
        if !self.ctx.cluster.enabled() {
            return self
                .pipeline
                .push(batch, admission)
                .await
                .map_err(status::ingest);
        }
        let max = self.ctx.config.ingest.max_batch_readings;
        let len = batch.readings.len();
        if len == 0 {
            return Err(status::ingest(IngestError::Empty {
                batch_id: batch.batch_id,
            }));
        }
        if len > max as usize {
            return Err(status::ingest(IngestError::TooLarge {
                batch_id: batch.batch_id,
                len,
                max,
            }));
        }
        let batch_id = batch.batch_id;
        let (local, remote, nobody) = self.split_by_owner(batch);
        if remote.is_empty() && nobody.is_empty() {
            // Everything is ours: the pipeline's errors apply to the whole batch as usual.
            let Some(part) = local else {
                return Err(Status::internal("a non-empty batch has no part"));
            };
            return self
                .pipeline
                .push(part.batch, admission)
                .await
                .map_err(status::ingest);
        }

        let wait = admission == Admission::Wait;
        let local_work = async {
            match local {
                None => None,
                Some(part) => {
                    let outcome = match self.pipeline.push(part.batch.clone(), admission).await {
                        Ok(ack) => PartOutcome::Acked(ack),
                        Err(e @ (IngestError::Saturated { .. } | IngestError::ShuttingDown)) => {
                            PartOutcome::Refused(e.to_string())
                        }
                        Err(e) => PartOutcome::Unknown(e.to_string()),
                    };
                    Some((part, outcome))
                }
            }
        };
        let remote_work = futures::future::join_all(remote.into_iter().map(|(node, part)| {
            let call = cluster_request::Call::Ingest(part.batch.clone());
            async move {
                let outcome = match self.ctx.cluster.forward(&node, call, wait).await {
                    Ok(reply) => ingest_outcome(&node, reply),
                    Err(e @ ForwardError::NotSent { .. }) => PartOutcome::Refused(e.to_string()),
                    Err(e @ ForwardError::Unknown { .. }) => PartOutcome::Unknown(e.to_string()),
                };
                (part, outcome)
            }
        }));
        let (local_done, remote_done) = tokio::join!(local_work, remote_work);

        let mut ack = PushAck {
            batch_id,
            ..PushAck::default()
        };
        for index in nobody {
            ack.rejected.push(owner_unavailable(
                index,
                "no live node owns this meter's shard (the cluster is draining)",
            ));
        }
        let mut unknown = Vec::new();
        for (part, outcome) in local_done.into_iter().chain(remote_done) {
            match outcome {
                PartOutcome::Acked(part_ack) => {
                    ack.accepted += part_ack.accepted;
                    ack.duplicates += part_ack.duplicates;
                    ack.corrections += part_ack.corrections;
                    for mut rejection in part_ack.rejected {
                        let Some(&index) = part.indices.get(rejection.index as usize) else {
                            unknown.push("a node acknowledged a reading it was not sent".into());
                            continue;
                        };
                        rejection.index = index;
                        ack.rejected.push(rejection);
                    }
                }
                PartOutcome::Refused(why) => {
                    for &index in &part.indices {
                        ack.rejected.push(owner_unavailable(index, &why));
                    }
                }
                PartOutcome::Unknown(why) => unknown.push(why),
            }
        }
        if !unknown.is_empty() {
            return Err(Status::unavailable(format!(
                "batch {batch_id}: part of it has an unknown outcome ({}); resending the whole \
                 batch is safe",
                unknown.join("; ")
            )));
        }
        ack.rejected.sort_by_key(|r| r.index);
        Ok(ack)
    }

    /// Splits a batch into this node's part, one part per other owner, and the indices no
    /// member owns.
    fn split_by_owner(
        &self,
        batch: ReadingBatch,
    ) -> (Option<Part>, HashMap<String, Part>, Vec<u32>) {
        let map = self.ctx.cluster.map();
        let shards = self.ctx.config.actors.shards;
        let mut local: Option<Part> = None;
        let mut remote: HashMap<String, Part> = HashMap::new();
        let mut nobody = Vec::new();
        let batch_id = batch.batch_id;
        let new_part = || Part {
            indices: Vec::new(),
            batch: ReadingBatch {
                batch_id,
                readings: Vec::new(),
            },
        };
        for (index, reading) in batch.readings.into_iter().enumerate() {
            let part = match self
                .ctx
                .cluster
                .owner_of_shard(&map, shard_of(&reading.meter_id, shards))
            {
                Owner::Local => local.get_or_insert_with(new_part),
                Owner::Remote(node) => remote.entry(node).or_insert_with(new_part),
                Owner::Nobody => {
                    nobody.push(index as u32);
                    continue;
                }
            };
            part.indices.push(index as u32);
            part.batch.readings.push(reading);
        }
        (local, remote, nobody)
    }

    /// Readings of a meter. In a cluster they are gathered from every reachable node and
    /// merged by timestamp (highest version wins): with one copy per reading, a meter's
    /// history can span nodes after its shard moved (failover, join), and a reading whose
    /// outcome was unknown may have been stored by one owner and resent to the next.
    pub async fn get_readings(
        &self,
        req: GetReadingsRequest,
    ) -> Result<GetReadingsResponse, Status> {
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !self.ctx.cluster.enabled() || req.local_only {
            return self.local_readings(req).await;
        }
        let resolution = resolution(req.resolution)?;
        let scan = ScanWindow::new(
            req.from_ts_ms,
            req.to_ts_ms,
            resolution,
            req.limit,
            CLUSTER_MAX_SCAN,
        )
        .map_err(status::query)?;
        let local = LocalReadingsRequest {
            meter_id: req.meter_id.clone(),
            from_ts_ms: scan.from,
            to_ts_ms: scan.to,
            max: scan.max as u32,
        };
        // The registry is on every node: an unknown meter is unknown here.
        let mut rows = self.local_raw(local.clone()).await?;
        let (shares, mut unavailable) = self
            .gather(|| cluster_request::Call::LocalReadings(local.clone()))
            .await;
        for (node, reply) in shares {
            match reply {
                cluster_reply::Reply::LocalReadings(r) => rows.extend(r.readings),
                _ => return Err(unexpected_reply(&node)),
            }
        }
        // Merge: one row per timestamp, the value replicas converge to (see `merge_copy`).
        let mut merged: BTreeMap<i64, (Reading, Vec<u8>)> = BTreeMap::new();
        for reading in rows {
            let encoded = encode_reading(&reading);
            match merged.entry(reading.ts_ms) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((reading, encoded));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    if o.get().1 != encoded && copy_wins(&o.get().1, &encoded, reading.version) {
                        o.insert((reading, encoded));
                    }
                }
            }
        }
        let merged: BTreeMap<i64, Reading> = merged.into_iter().map(|(t, (r, _))| (t, r)).collect();
        let rows: Vec<(i64, Reading)> = merged.into_iter().take(scan.max).collect();
        let mut response = scan.shape(rows);
        unavailable.sort();
        response.unavailable_nodes = unavailable;
        Ok(response)
    }

    async fn local_readings(&self, req: GetReadingsRequest) -> Result<GetReadingsResponse, Status> {
        let resolution = resolution(req.resolution)?;
        let ctx = self.ctx.clone();
        blocking(move || {
            query::readings(
                &ctx.store,
                &req.meter_id,
                req.from_ts_ms,
                req.to_ts_ms,
                resolution,
                req.limit,
            )
            .map_err(status::query)
        })
        .await
    }

    /// This node's stored readings of a meter (meter id set on each).
    async fn local_raw(&self, req: LocalReadingsRequest) -> Result<Vec<Reading>, Status> {
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ctx = self.ctx.clone();
        blocking(move || {
            if ctx
                .store
                .meter_info(&req.meter_id)
                .map_err(|e| status::internal(&e))?
                .is_none()
            {
                return Err(Status::not_found("meter is not registered"));
            }
            let max = (req.max as usize).min(CLUSTER_MAX_SCAN);
            let rows = ctx
                .store
                .readings_between(&req.meter_id, req.from_ts_ms, req.to_ts_ms, max)
                .map_err(|e| status::internal(&e))?;
            Ok(rows
                .into_iter()
                .map(|(_, mut r)| {
                    r.meter_id.clone_from(&req.meter_id);
                    r
                })
                .collect())
        })
        .await
    }

    /// Sends `call` to every other member; returns the replies, and the members that may hold
    /// data but are down or did not answer — only when they are as many as the write quorum,
    /// so that some acknowledged reading may have no copy among those that answered. A member
    /// that answers NOT_FOUND holds nothing.
    async fn gather(
        &self,
        call: impl Fn() -> cluster_request::Call,
    ) -> (Vec<(String, cluster_reply::Reply)>, Vec<String>) {
        let view = self.ctx.cluster.view();
        let mut unavailable: Vec<String> = view
            .members
            .iter()
            .skip(1)
            .filter(|m| m.state == MemberState::Down)
            .map(|m| m.name.clone())
            .collect();
        let peers = self.ctx.cluster.reachable_peers();
        let answers = futures::future::join_all(peers.into_iter().map(|node| {
            let call = call();
            async move {
                let answer = self.forward(&node, call).await;
                (node, answer)
            }
        }))
        .await;
        let mut replies = Vec::new();
        for (node, answer) in answers {
            match answer {
                Ok(reply) => replies.push((node, reply)),
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => {
                    tracing::debug!(node, error = %status, "a member did not answer a gather");
                    unavailable.push(node);
                }
            }
        }
        // Every acknowledged reading is durable on `write_quorum` members: with fewer of them
        // missing, at least one copy of each answered.
        let quorum =
            (self.ctx.config.replication.write_quorum as usize).min(self.effective_factor());
        if unavailable.len() < quorum {
            unavailable.clear();
        }
        (replies, unavailable)
    }

    /// Status of a meter, from its owner.
    pub async fn get_meter_status(
        &self,
        req: GetMeterStatusRequest,
    ) -> Result<MeterStatus, Status> {
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.ctx.cluster.owner_of(&req.meter_id) {
            Owner::Remote(node) => {
                match self
                    .forward(&node, cluster_request::Call::GetMeterStatus(req))
                    .await?
                {
                    cluster_reply::Reply::GetMeterStatus(r) => Ok(r),
                    _ => Err(unexpected_reply(&node)),
                }
            }
            Owner::Local | Owner::Nobody => self.local_meter_status(req.meter_id).await,
        }
    }

    async fn local_meter_status(&self, meter_id: String) -> Result<MeterStatus, Status> {
        check_meter_id(&meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let shard_id = shard_of(&meter_id, self.ctx.config.actors.shards);
        let shard = self
            .ctx
            .shard(shard_id)
            .ok_or_else(|| status::actor_unavailable("the meter's shard"))?;
        let answer = ractor::call_t!(
            shard,
            |reply| ShardMsg::Status { meter_id, reply },
            STATUS_TIMEOUT_MS
        )
        .map_err(|_| status::actor_unavailable("the meter actor"))?;
        answer.ok_or_else(|| Status::not_found("meter is not registered"))
    }

    /// Load of a feeder: every reachable node's share, each shard counted once (from its most
    /// complete copy).
    pub async fn get_feeder_load(
        &self,
        req: GetFeederLoadRequest,
    ) -> Result<GetFeederLoadResponse, Status> {
        check_feeder_id(&req.feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resolution = resolution(req.resolution)?;
        let bucket = query::feeder_bucket(resolution).map_err(status::query)?;
        let local = self.local_feeder_share(req.clone()).await?;
        let (shares, mut unavailable) = if self.ctx.cluster.enabled() {
            self.gather(|| {
                cluster_request::Call::FeederShare(FeederShareRequest {
                    request: Some(req.clone()),
                })
            })
            .await
        } else {
            (Vec::new(), Vec::new())
        };
        let feeder = local.feeder.clone();
        let mut named = vec![(self.ctx.cluster.name().to_owned(), local)];
        for (node, share) in shares {
            match share {
                cluster_reply::Reply::FeederShare(s) => named.push((node, s)),
                _ => return Err(unexpected_reply(&node)),
            }
        }
        // Ties between equally complete copies go to the same node whoever answers.
        named.sort_by(|a, b| a.0.cmp(&b.0));
        unavailable.sort();
        Ok(GetFeederLoadResponse {
            feeder,
            intervals: query::merge_feeder_shares(
                named.into_iter().map(|(_, s)| s).collect(),
                bucket,
            ),
            unavailable_nodes: unavailable,
        })
    }

    async fn local_feeder_share(&self, req: GetFeederLoadRequest) -> Result<FeederShare, Status> {
        check_feeder_id(&req.feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resolution = resolution(req.resolution)?;
        let ctx = self.ctx.clone();
        blocking(move || {
            query::feeder_share(
                &ctx.store,
                &req.feeder_id,
                req.from_ts_ms,
                req.to_ts_ms,
                resolution,
                ctx.config.actors.shards,
            )
            .map_err(status::query)
        })
        .await
    }

    /// Dead letters of one node or every reachable one.
    pub async fn dead_letters(
        &self,
        req: ListDeadLettersRequest,
    ) -> Result<ListDeadLettersResponse, Status> {
        let me = self.ctx.cluster.name().to_owned();
        let mut response = ListDeadLettersResponse::default();
        if req.node.is_empty() || req.node == me {
            response.letters = self.local_dead_letters(req.limit).await?.letters;
        }
        let peers: Vec<String> = if req.node.is_empty() {
            self.ctx.cluster.reachable_peers()
        } else if req.node != me {
            vec![req.node.clone()]
        } else {
            Vec::new()
        };
        for node in peers {
            match self
                .forward(&node, cluster_request::Call::DeadLetters(req.clone()))
                .await
            {
                Ok(cluster_reply::Reply::DeadLetters(r)) => response.letters.extend(r.letters),
                Ok(_) | Err(_) => response.unavailable.push(node),
            }
        }
        Ok(response)
    }

    async fn local_dead_letters(&self, limit: u32) -> Result<ListDeadLettersResponse, Status> {
        let limit = match limit {
            0 => 1000,
            n => n.min(100_000),
        } as usize;
        let ctx = self.ctx.clone();
        blocking(move || {
            let node = ctx.cluster.name().to_owned();
            let letters = crate::notify::dead_letters(&ctx.store, limit)
                .map_err(|e| status::internal(&e))?
                .into_iter()
                .map(|(id, d)| DeadLetterInfo {
                    node: node.clone(),
                    id,
                    sink: d.sink,
                    alert_id: d.alert_id,
                    event: d.event,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    failed_at_ms: d.failed_at_ms,
                })
                .collect();
            Ok(ListDeadLettersResponse {
                letters,
                unavailable: Vec::new(),
            })
        })
        .await
    }

    /// Replays dead letters on one node or every reachable one.
    pub async fn replay_dead_letters(
        &self,
        req: ReplayDeadLettersRequest,
    ) -> Result<ReplayDeadLettersResponse, Status> {
        let me = self.ctx.cluster.name().to_owned();
        let mut response = ReplayDeadLettersResponse::default();
        if req.node.is_empty() || req.node == me {
            response.queued += self.local_replay(req.sink.clone()).await?;
        }
        let peers: Vec<String> = if req.node.is_empty() {
            self.ctx.cluster.reachable_peers()
        } else if req.node != me {
            vec![req.node.clone()]
        } else {
            Vec::new()
        };
        for node in peers {
            match self
                .forward(&node, cluster_request::Call::ReplayDeadLetters(req.clone()))
                .await
            {
                Ok(cluster_reply::Reply::ReplayDeadLetters(r)) => response.queued += r.queued,
                Ok(_) | Err(_) => response.unavailable.push(node),
            }
        }
        Ok(response)
    }

    async fn local_replay(&self, sink: String) -> Result<u64, Status> {
        let notifier = self
            .ctx
            .notifier()
            .ok_or_else(|| status::actor_unavailable("the notifier"))?;
        let sink = (!sink.is_empty()).then_some(sink);
        ractor::call_t!(
            notifier,
            |reply| crate::notify::NotifyMsg::Replay { sink, reply },
            30_000
        )
        .map_err(|_| status::actor_unavailable("the notifier"))
    }

    /// Daily aggregates and monthly billing determinants of a meter, or a feeder's daily
    /// peaks, for the range. A meter's whole local days come from the daily aggregates its
    /// actor stored on this node when each day closed (unless `recompute`); everything else
    /// is computed from the stored 15-minute data, cluster-wide (see [`crate::daily`]).
    pub async fn get_aggregates(
        &self,
        req: GetAggregatesRequest,
    ) -> Result<GetAggregatesResponse, Status> {
        use gridmesh_analytics::aggregate::{self, DailyMeter, IntervalEnergy};
        const MAX_DAYS: i64 = 400;
        let span = req.to_ts_ms.saturating_sub(req.from_ts_ms);
        if span <= 0 || span > MAX_DAYS * 86_400_000 {
            return Err(Status::invalid_argument(format!(
                "[from_ts_ms, to_ts_ms) must be non-empty and at most {MAX_DAYS} days"
            )));
        }
        let built;
        let calendar = match self.ctx.daily_tariff() {
            Some(tariff) => &tariff.calendar,
            None => {
                built = self
                    .ctx
                    .config
                    .analytics
                    .tariff_calendar()
                    .map_err(|e| status::internal(&e))?;
                &built
            }
        };
        let quarter = crate::buckets::MIN15_MS;
        let date = |d: gridmesh_analytics::time::CivilDate| {
            format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
        };
        match (req.meter_id.is_empty(), req.feeder_id.is_empty()) {
            (false, true) => {
                check_meter_id(&req.meter_id)
                    .map_err(|e| Status::invalid_argument(format!("meter_id: {e}")))?;
                let stored = if req.recompute {
                    BTreeMap::new()
                } else {
                    self.stored_days(&req.meter_id, req.from_ts_ms, req.to_ts_ms)
                        .await?
                };
                // What the stored days leave of [from, to), read in pieces of at most 100
                // days: an answer holds at most 10 000 intervals.
                const PIECE_MS: i64 = 100 * 86_400_000;
                let mut gaps = Vec::new();
                let mut cursor = req.from_ts_ms;
                if let Some(tariff) = self.ctx.daily_tariff() {
                    for day in stored.keys() {
                        let (start, end) = tariff.day_bounds(*day);
                        if start > cursor {
                            gaps.push((cursor, start));
                        }
                        cursor = end;
                    }
                }
                if cursor < req.to_ts_ms {
                    gaps.push((cursor, req.to_ts_ms));
                }
                let mut intervals: Vec<IntervalEnergy> = Vec::new();
                let mut unavailable_nodes: Vec<String> = Vec::new();
                for (from, to) in gaps {
                    let mut start = from;
                    while start < to {
                        let end = (start + PIECE_MS).min(to);
                        let readings = self
                            .get_readings(GetReadingsRequest {
                                meter_id: req.meter_id.clone(),
                                from_ts_ms: start,
                                to_ts_ms: end,
                                resolution: Resolution::QuarterHour as i32,
                                limit: (PIECE_MS / quarter) as u32,
                                local_only: false,
                            })
                            .await?;
                        if readings.truncated {
                            return Err(Status::out_of_range(
                                "the range holds more readings than one answer reads; ask for \
                                 a shorter range",
                            ));
                        }
                        intervals
                            .extend(readings.intervals.iter().map(crate::daily::interval_energy));
                        for node in readings.unavailable_nodes {
                            if !unavailable_nodes.contains(&node) {
                                unavailable_nodes.push(node);
                            }
                        }
                        start = end;
                    }
                }
                let stored_days = stored.len() as u32;
                let mut all: BTreeMap<i64, DailyMeter> = stored;
                for d in aggregate::daily_meter(&intervals, quarter, calendar)
                    .map_err(|e| Status::internal(e.to_string()))?
                {
                    all.insert(d.day, d);
                }
                let all: Vec<DailyMeter> = all.into_values().collect();
                let buckets = calendar.buckets().to_vec();
                let tou = |import: &[f64], export: &[f64], demand: &[f64]| {
                    buckets
                        .iter()
                        .enumerate()
                        .map(|(b, name)| TouEnergy {
                            bucket: name.clone(),
                            import_wh: import.get(b).copied().unwrap_or(0.0),
                            export_wh: export.get(b).copied().unwrap_or(0.0),
                            max_demand_w: demand.get(b).copied().unwrap_or(0.0),
                        })
                        .collect::<Vec<_>>()
                };
                let months = aggregate::monthly_from_days(&all, quarter)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .into_iter()
                    .map(|m| MeterMonth {
                        year: m.year,
                        month: u32::from(m.month),
                        days: m.days,
                        intervals: m.intervals,
                        import_wh: m.import_wh,
                        export_wh: m.export_wh,
                        max_demand_w: m.max_demand.map_or(0.0, |x| x.0),
                        max_demand_ts_ms: m.max_demand.map_or(0, |x| x.1),
                        load_factor: m.load_factor.unwrap_or(0.0),
                        tou: tou(&m.tou_import_wh, &m.tou_export_wh, &m.tou_max_demand_w),
                    })
                    .collect();
                let days = all
                    .into_iter()
                    .map(|d| MeterDay {
                        date: date(d.date),
                        intervals: d.intervals,
                        expected_intervals: d.expected_intervals,
                        import_wh: d.import_wh,
                        export_wh: d.export_wh,
                        max_demand_w: d.max_demand.map_or(0.0, |m| m.0),
                        max_demand_ts_ms: d.max_demand.map_or(0, |m| m.1),
                        load_factor: d.load_factor.unwrap_or(0.0),
                        tou: tou(&d.tou_import_wh, &d.tou_export_wh, &d.tou_max_demand_w),
                    })
                    .collect();
                Ok(GetAggregatesResponse {
                    days,
                    months,
                    feeder_days: Vec::new(),
                    unavailable_nodes,
                    stored_days,
                })
            }
            (true, false) => {
                let load = self
                    .get_feeder_load(GetFeederLoadRequest {
                        feeder_id: req.feeder_id.clone(),
                        from_ts_ms: req.from_ts_ms,
                        to_ts_ms: req.to_ts_ms,
                        resolution: Resolution::QuarterHour as i32,
                    })
                    .await?;
                let loads: Vec<(i64, f64)> = load
                    .intervals
                    .iter()
                    .map(|i| (i.start_ts_ms, i.customer_mean_load_w))
                    .collect();
                let feeder_days = aggregate::feeder_daily_peaks(&loads, quarter, calendar.offset())
                    .map_err(|e| Status::internal(e.to_string()))?
                    .into_iter()
                    .map(|d| FeederDay {
                        date: date(d.date),
                        intervals: d.intervals,
                        peak_w: d.peak.0,
                        peak_ts_ms: d.peak.1,
                        min_w: d.min_w,
                        energy_wh: d.energy_wh,
                        load_factor: d.load_factor.unwrap_or(0.0),
                    })
                    .collect();
                Ok(GetAggregatesResponse {
                    feeder_days,
                    unavailable_nodes: load.unavailable_nodes,
                    ..GetAggregatesResponse::default()
                })
            }
            _ => Err(Status::invalid_argument(
                "name exactly one of meter_id (daily and monthly aggregates) or feeder_id \
                 (daily peaks)",
            )),
        }
    }

    /// The daily aggregates this node stored for `meter`'s whole local days in `[from, to)`
    /// (none when the analytics are off, or local days are not whole 15-minute intervals).
    async fn stored_days(
        &self,
        meter: &str,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<i64, gridmesh_analytics::aggregate::DailyMeter>, Status> {
        let ctx = self.ctx.clone();
        let meter = meter.to_owned();
        blocking(move || {
            let Some(tariff) = ctx.daily_tariff().filter(|t| t.aligned()) else {
                return Ok(BTreeMap::new());
            };
            // Whole days: from the first starting at or after `from` to the last ending at
            // or before `to`.
            let first = tariff.day_of_interval(from - 1) + 1;
            let last = tariff.day_of_interval(to) - 1;
            let rows = ctx
                .store
                .daily_rows(&meter, first, last)
                .map_err(|e| status::internal(&e))?;
            Ok(rows
                .into_iter()
                .filter_map(|(day, bytes)| {
                    tariff
                        .decode(&bytes)
                        .filter(|d| d.day == day)
                        .map(|d| (day, d))
                })
                .collect())
        })
        .await
    }

    /// The deployment's local time (`analytics.utc_offset_minutes`, validated at start).
    fn local_offset(&self) -> Result<gridmesh_analytics::time::LocalOffset, Status> {
        gridmesh_analytics::time::LocalOffset::new(self.ctx.config.analytics.utc_offset_minutes)
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// A meter's 15-minute series of one energy channel over `[start, end)` (both on interval
    /// boundaries) from its raw readings anywhere in the cluster: the interval starting at `t`
    /// holds the readings stamped in `(t, t + 15 min]`. Also the times of its last gasps and
    /// the nodes that did not answer.
    async fn quarter_series(
        &self,
        meter_id: &str,
        start: i64,
        end: i64,
        export: bool,
    ) -> Result<(Vec<Option<f64>>, Vec<i64>, Vec<String>), Status> {
        let q = crate::buckets::MIN15_MS;
        let readings = self
            .get_readings(GetReadingsRequest {
                meter_id: meter_id.to_owned(),
                from_ts_ms: start + 1,
                to_ts_ms: end + 1,
                resolution: Resolution::Raw as i32,
                limit: CLUSTER_MAX_SCAN as u32,
                local_only: false,
            })
            .await?;
        if readings.truncated {
            return Err(Status::resource_exhausted(format!(
                "meter {meter_id} has more than {CLUSTER_MAX_SCAN} readings in the range and \
                 its look-back; ask for a shorter range"
            )));
        }
        let n = ((end - start) / q) as usize;
        let mut values: Vec<Option<f64>> = vec![None; n];
        let mut supply_lost = Vec::new();
        for r in &readings.readings {
            if r.events.contains(&(MeterEventKind::LastGasp as i32)) {
                supply_lost.push(r.ts_ms);
            }
            let value = if export {
                r.interval_energy_export_wh
            } else {
                r.interval_energy_import_wh
            };
            let index = (r.ts_ms - 1 - start).div_euclid(q);
            if let (Some(v), Ok(i)) = (value, usize::try_from(index))
                && let Some(slot) = values.get_mut(i)
            {
                *slot = Some(slot.unwrap_or(0.0) + v);
            }
        }
        Ok((values, supply_lost, readings.unavailable_nodes))
    }

    /// A meter's anomalies over `[from, to)`: the anomaly rules run over its stored import
    /// energy from nine weeks before the range (the step rule's baseline needs about eight)
    /// to its end, and every condition open at some time in the range is returned.
    pub async fn get_meter_anomalies(
        &self,
        req: GetMeterAnomaliesRequest,
    ) -> Result<GetMeterAnomaliesResponse, Status> {
        use gridmesh_analytics::alert::{AlertEvent, Severity};
        use gridmesh_analytics::anomaly::MeterAnomalyDetector;

        use crate::anomaly::WARM_UP_DAYS;
        const MAX_DAYS: i64 = 92;
        const DAY: i64 = 86_400_000;
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = crate::buckets::MIN15_MS;
        let (from, to) = quarter_range(req.from_ts_ms, req.to_ts_ms, MAX_DAYS)?;
        let analytics = &self.ctx.config.analytics;
        let offset = self.local_offset()?;
        let rules = crate::anomaly::deployment_rules(analytics)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut detector = MeterAnomalyDetector::new(req.meter_id.clone(), rules)
            .map_err(|e| Status::internal(e.to_string()))?;
        let start = offset.day_start_ms(offset.day(from - WARM_UP_DAYS * DAY));
        let (values, _, unavailable) = self.quarter_series(&req.meter_id, start, to, false).await?;
        // Conditions by key: the open one, and the closed ones in order.
        let mut open: BTreeMap<String, MeterAnomaly> = BTreeMap::new();
        let mut closed: Vec<MeterAnomaly> = Vec::new();
        let mut intervals = 0;
        for (i, value) in values.iter().enumerate() {
            let Some(value) = value else {
                continue;
            };
            let interval_start = start + i as i64 * q;
            if interval_start >= from {
                intervals += 1;
            }
            for event in detector.observe_interval(interval_start, *value).events {
                match event {
                    AlertEvent::Raise(r) => {
                        let key = r.key.dedup_key();
                        open.entry(key).or_insert_with(|| MeterAnomaly {
                            kind: r.key.kind.as_str().to_owned(),
                            severity: match r.severity {
                                Severity::Info => "info",
                                Severity::Minor => "minor",
                                Severity::Major => "major",
                                Severity::Critical => "critical",
                            }
                            .to_owned(),
                            since_ts_ms: r.since_ts_ms,
                            raised_ts_ms: r.ts_ms,
                            cleared_ts_ms: 0,
                            value: r.value,
                            limit: r.limit,
                            message: r.message,
                        });
                    }
                    AlertEvent::Clear { key, ts_ms, .. } => {
                        if let Some(mut a) = open.remove(&key.dedup_key()) {
                            a.cleared_ts_ms = ts_ms;
                            closed.push(a);
                        }
                    }
                }
            }
        }
        let mut anomalies: Vec<MeterAnomaly> = closed
            .into_iter()
            .filter(|a| a.cleared_ts_ms > from)
            .chain(open.into_values())
            .filter(|a| a.raised_ts_ms < to)
            .collect();
        anomalies.sort_by_key(|a| (a.since_ts_ms, a.raised_ts_ms));
        Ok(GetMeterAnomaliesResponse {
            meter_id: req.meter_id,
            anomalies,
            intervals,
            unavailable_nodes: unavailable,
        })
    }

    /// A meter's 15-minute interval energy after VEE over `[from, to)`. The raw readings of the
    /// range and of the like-day look-back on both sides are read (any copy in the cluster)
    /// and run through [`gridmesh_analytics::vee::run_vee`]; days with a last gasp are not used
    /// as like days. Nothing is written: estimates are derived on every call.
    pub async fn get_validated_intervals(
        &self,
        req: GetValidatedIntervalsRequest,
    ) -> Result<GetValidatedIntervalsResponse, Status> {
        use gridmesh_analytics::vee::{self, VeeConfig};
        const MAX_DAYS: i64 = 92;
        const DAY: i64 = 86_400_000;
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = crate::buckets::MIN15_MS;
        let (from, to) = quarter_range(req.from_ts_ms, req.to_ts_ms, MAX_DAYS)?;
        let export = match EnergyChannel::try_from(req.channel) {
            Ok(EnergyChannel::Unspecified | EnergyChannel::Import) => false,
            Ok(EnergyChannel::Export) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown channel {}",
                    req.channel
                )));
            }
        };
        let offset = self.local_offset()?;
        let config = VeeConfig {
            offset,
            ..VeeConfig::default()
        };
        // Like days are looked for on both sides of a gap, up to the look-back; a day starts
        // at local midnight, so the window starts on one.
        let look = config.like_day_lookback_days as i64 * DAY;
        let start = offset.day_start_ms(offset.day(from - look));
        // Intervals that have not ended yet are not gaps: they are left out, not estimated.
        let newest = crate::context::now_ms().div_euclid(q) * q;
        let to = to.min(newest).max(from);
        let end = (to + look).min(newest).max(to);
        let (values, supply_lost, unavailable) = self
            .quarter_series(&req.meter_id, start, end, export)
            .await?;
        let outage_days: std::collections::BTreeSet<i64> =
            supply_lost.iter().map(|ts| offset.day(*ts)).collect();
        let n = values.len();
        let outcome = vee::run_vee(start, &values, &outage_days, &config)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut rules = vec![None; n];
        for edit in &outcome.edits {
            rules[edit.index] = Some(edit.rule);
        }
        let first = ((from - start) / q) as usize;
        let last = ((to - start) / q) as usize;
        let mut response = GetValidatedIntervalsResponse {
            meter_id: req.meter_id,
            unavailable_nodes: unavailable,
            ..GetValidatedIntervalsResponse::default()
        };
        for i in first..last {
            let rule = rules[i];
            match (values[i], rule) {
                (Some(_), Some(_)) => {
                    response.measured += 1;
                    response.flagged += 1;
                }
                (Some(_), None) => response.measured += 1,
                (None, Some(r)) if r.is_estimate() => response.estimated += 1,
                (None, _) => response.unestimated += 1,
            }
            response.intervals.push(ValidatedInterval {
                start_ts_ms: start + i as i64 * q,
                energy_wh: outcome.values[i],
                raw_energy_wh: values[i],
                rule: rule.map_or(String::new(), |r| r.as_str().to_owned()),
            });
        }
        Ok(response)
    }

    /// Reliability indices of a feeder over `[from, to)`: the stored readings of its customer
    /// meters are replayed, in time order, through the outage rules the feeder actor runs
    /// live, so the indices count what the outage alerts saw. Reads go through
    /// [`Api::get_readings`] (any copy, anywhere in the cluster), one week of every meter at a
    /// time, so memory stays bounded by a week of one feeder.
    pub async fn get_reliability(
        &self,
        req: GetReliabilityRequest,
    ) -> Result<GetReliabilityResponse, Status> {
        use gridmesh_analytics::outage::{MeterSignal, OutageRules, OutageTracker};
        const MAX_DAYS: i64 = 400;
        const WINDOW_MS: i64 = 7 * 86_400_000;
        const MAX_LISTED: usize = 10_000;
        check_feeder_id(&req.feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let span = req.to_ts_ms.saturating_sub(req.from_ts_ms);
        if span <= 0 || span > MAX_DAYS * 86_400_000 {
            return Err(Status::invalid_argument(format!(
                "[from_ts_ms, to_ts_ms) must be non-empty and at most {MAX_DAYS} days"
            )));
        }
        let ctx = self.ctx.clone();
        let id = req.feeder_id.clone();
        let (info, meters) = blocking(move || {
            let info = ctx
                .store
                .feeder_info(&id)
                .map_err(|e| status::internal(&e))?;
            let meters = ctx
                .store
                .meters_of_feeder(&id)
                .map_err(|e| status::internal(&e))?;
            Ok((info, meters))
        })
        .await?;
        let info = info.ok_or_else(|| {
            Status::not_found(format!("feeder {} is not registered", req.feeder_id))
        })?;
        let meters: Vec<(String, String)> = meters
            .into_iter()
            .filter(|(m, _)| *m != info.head_meter_id)
            .collect();
        let analytics = &self.ctx.config.analytics;
        let rules = OutageRules {
            confirm_ms: analytics.outage_confirm.as_millis() as i64,
            silent_after_ms: analytics.meter_silent_after.as_millis() as i64,
            ..OutageRules::default()
        };
        let mut tracker = OutageTracker::new(req.feeder_id.clone(), meters.clone(), rules)
            .map_err(|e| Status::internal(e.to_string()))?;
        // A day before the range tells who was already out when it began; readings up to a
        // day after it end the interruptions that began inside it.
        let start = req.from_ts_ms.saturating_sub(86_400_000);
        let end = req
            .to_ts_ms
            .saturating_add(86_400_000)
            .min(crate::context::now_ms().max(req.to_ts_ms));
        let mut unavailable = std::collections::BTreeSet::new();
        let mut window = start;
        while window < end {
            let window_end = (window + WINDOW_MS).min(end);
            // (time, meter index, signal): compact, since a week of a large feeder is
            // hundreds of thousands of readings.
            let mut signals: Vec<(i64, u32, MeterSignal)> = Vec::new();
            for (index, (meter, _)) in meters.iter().enumerate() {
                let readings = self
                    .get_readings(GetReadingsRequest {
                        meter_id: meter.clone(),
                        from_ts_ms: window,
                        to_ts_ms: window_end,
                        resolution: Resolution::Raw as i32,
                        limit: CLUSTER_MAX_SCAN as u32,
                        local_only: false,
                    })
                    .await?;
                if readings.truncated {
                    return Err(Status::resource_exhausted(format!(
                        "meter {meter} has more than {CLUSTER_MAX_SCAN} readings in one week; \
                         its readings cannot be replayed"
                    )));
                }
                unavailable.extend(readings.unavailable_nodes);
                for reading in &readings.readings {
                    for s in crate::grid::signals_of(meter, reading) {
                        signals.push((s.ts_ms, index as u32, s.signal.into()));
                    }
                }
            }
            signals.sort_by_key(|&(ts, index, _)| (ts, index));
            // Time moves in 15-minute steps, as the live rules see it: silent meters are
            // marked (and outages grouped) at each step before its signals are applied.
            let mut step = None;
            for (ts, index, signal) in signals {
                let this_step = ts.div_euclid(crate::buckets::MIN15_MS);
                if step != Some(this_step) {
                    tracker.tick(this_step * crate::buckets::MIN15_MS);
                    step = Some(this_step);
                }
                // Only registered meters are replayed: observe cannot refuse them.
                let _ = tracker.note(&meters[index as usize].0, signal, ts);
            }
            window = window_end;
        }
        // No tick past the newest reading: a meter counts as still out only if the readings
        // of the others moved on without it.
        let r = tracker.reliability(req.from_ts_ms, req.to_ts_ms);
        let started = tracker
            .interruptions()
            .iter()
            .filter(|i| i.start_ms >= req.from_ts_ms && i.start_ms < req.to_ts_ms);
        let interruptions: Vec<Interruption> = started
            .clone()
            .take(MAX_LISTED)
            .map(|i| Interruption {
                meter_id: i.meter_id.clone(),
                transformer_id: i.transformer_id.clone(),
                start_ts_ms: i.start_ms,
                end_ts_ms: i.end_ms,
                momentary: i.momentary,
            })
            .collect();
        Ok(GetReliabilityResponse {
            feeder_id: req.feeder_id,
            customers: r.customers,
            sustained_interruptions: r.sustained_interruptions,
            momentary_interruptions: r.momentary_interruptions,
            customer_minutes: r.customer_minutes,
            saifi: r.saifi,
            saidi_min: r.saidi_min,
            caidi_min: r.caidi_min.unwrap_or(0.0),
            maifi: r.maifi,
            interruptions_truncated: started.count() > interruptions.len(),
            interruptions,
            meters_down_at_end: tracker.meters_down() as u32,
            unavailable_nodes: unavailable.into_iter().collect(),
        })
    }

    /// A feeder's latest forecast, from the feeder's owner (its rules run there).
    pub async fn get_forecast(
        &self,
        req: GetForecastRequest,
    ) -> Result<GetForecastResponse, Status> {
        check_feeder_id(&req.feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.ctx.cluster.owner_of(&req.feeder_id) {
            Owner::Remote(node) => match self
                .forward(&node, cluster_request::Call::GetForecast(req))
                .await?
            {
                cluster_reply::Reply::GetForecast(r) => Ok(r),
                _ => Err(unexpected_reply(&node)),
            },
            Owner::Local | Owner::Nobody => self.local_forecast(req.feeder_id).await,
        }
    }

    async fn local_forecast(&self, feeder_id: String) -> Result<GetForecastResponse, Status> {
        check_feeder_id(&feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ctx = self.ctx.clone();
        let id = feeder_id.clone();
        let info = blocking(move || ctx.store.feeder_info(&id).map_err(|e| status::internal(&e)))
            .await?
            .ok_or_else(|| Status::not_found(format!("feeder {feeder_id} is not registered")))?;
        if !self.ctx.config.analytics.enabled {
            return Err(Status::failed_precondition(
                "analytics are off on this node (analytics.enabled = false)",
            ));
        }
        let feeders = self
            .ctx
            .feeder_supervisor()
            .ok_or_else(|| status::actor_unavailable("the feeder supervisor"))?;
        let id = feeder_id.clone();
        let forecast = ractor::call_t!(
            feeders,
            |reply| FeederSupervisorMsg::Forecast {
                feeder_id: id,
                reply
            },
            5_000
        )
        .map_err(|_| status::actor_unavailable("the feeder actor"))?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "feeder {feeder_id} has no forecast yet: one is made at each local midnight \
                 (meter time) once a day of its load has been judged"
            ))
        })?;
        Ok(GetForecastResponse {
            feeder_id,
            issued_ts_ms: forecast.issued_ts_ms,
            first_start_ts_ms: forecast.first_start_ms,
            step_ms: forecast.step_ms,
            load_w: forecast.values_w,
            method: forecast.method,
            rating_kva: info.rating_kva,
        })
    }

    /// Replication state: per shard the home set and every member's copy, per member its
    /// handoff backlog and anti-entropy progress.
    pub async fn replica_status(
        &self,
        req: GetReplicaStatusRequest,
    ) -> Result<GetReplicaStatusResponse, Status> {
        let shard_count = self.ctx.config.actors.shards;
        if let Some(bad) = req.shards.iter().find(|s| **s >= shard_count) {
            return Err(Status::invalid_argument(format!(
                "shard {bad} does not exist; shards are 0..{shard_count}"
            )));
        }
        let ask = ReplicaStatusRequest {
            shards: req.shards.clone(),
            before_ts_ms: req.before_ts_ms,
        };
        let local = self.local_replica_status(ask.clone()).await?;
        let (answers, unavailable) = if self.ctx.cluster.enabled() {
            self.gather(|| cluster_request::Call::ReplicaStatus(ask.clone()))
                .await
        } else {
            (Vec::new(), Vec::new())
        };
        let mut statuses = vec![(self.ctx.cluster.name().to_owned(), local)];
        for (node, reply) in answers {
            match reply {
                cluster_reply::Reply::ReplicaStatus(s) => statuses.push((node, s)),
                _ => return Err(unexpected_reply(&node)),
            }
        }
        statuses.sort_by(|a, b| a.0.cmp(&b.0));
        let factor = self.effective_factor();
        let view = self.ctx.cluster.view();
        let live = view.map.members();
        let mut shards: BTreeMap<u32, ShardReplicas> = BTreeMap::new();
        let wanted: Vec<u32> = if req.shards.is_empty() {
            (0..shard_count).collect()
        } else {
            req.shards.clone()
        };
        for shard in &wanted {
            let home = repair::home_set(&view.home, *shard, factor);
            shards.insert(
                *shard,
                ShardReplicas {
                    shard: *shard,
                    unavailable: home
                        .iter()
                        .filter(|h| unavailable.contains(h) || live.binary_search(h).is_err())
                        .cloned()
                        .collect(),
                    home,
                    copies: Vec::new(),
                    converged: false,
                },
            );
        }
        for (node, status) in &statuses {
            for d in &status.shards {
                if let Some(entry) = shards.get_mut(&d.shard)
                    && d.readings > 0
                {
                    entry.copies.push(ReplicaCopy {
                        node: node.clone(),
                        readings: d.readings,
                        digest: d.hash,
                        home: entry.home.contains(node),
                    });
                }
            }
        }
        for entry in shards.values_mut() {
            entry.converged = converged(entry);
        }
        let nodes = statuses
            .into_iter()
            .map(|(node, s)| ReplicaNodeStatus {
                node,
                hints_pending: s.hints_pending,
                handed_off: s.handed_off,
                anti_entropy_rounds: s.anti_entropy_rounds,
                anti_entropy_pushed: s.anti_entropy_pushed,
                anti_entropy_last_ms: s.anti_entropy_last_ms,
                error: String::new(),
            })
            .chain(unavailable.into_iter().map(|node| ReplicaNodeStatus {
                node,
                error: "did not answer".to_owned(),
                ..ReplicaNodeStatus::default()
            }))
            .collect();
        Ok(GetReplicaStatusResponse {
            replication_factor: factor as u32,
            write_quorum: (self.ctx.config.replication.write_quorum as usize).min(factor) as u32,
            shards: shards.into_values().collect(),
            nodes,
        })
    }

    /// Copies per reading in effect: the configured factor, one on a single node, never more
    /// than the home members.
    fn effective_factor(&self) -> usize {
        if !self.ctx.cluster.enabled() {
            return 1;
        }
        let home = self.ctx.cluster.view().home.members().len();
        (self.ctx.config.replication.factor as usize)
            .min(home)
            .max(1)
    }

    async fn local_replica_status(
        &self,
        req: ReplicaStatusRequest,
    ) -> Result<ReplicaStatus, Status> {
        let ctx = self.ctx.clone();
        blocking(move || {
            ctx.repair
                .status(&ctx, &req)
                .map_err(|e| status::internal(&e))
        })
        .await
    }

    /// Runs an anti-entropy round (and a handoff pass) now on one member or every reachable
    /// one.
    pub async fn repair(&self, req: RepairRequest) -> Result<RepairResponse, Status> {
        if !self.ctx.cluster.enabled() {
            return Err(Status::failed_precondition(
                "this node is not a cluster member (cluster.enabled = false): one copy, nothing \
                 to repair",
            ));
        }
        let me = self.ctx.cluster.name().to_owned();
        let targets: Vec<String> = if req.node.is_empty() {
            std::iter::once(me.clone())
                .chain(self.ctx.cluster.reachable_peers())
                .collect()
        } else {
            vec![req.node.clone()]
        };
        let runs = futures::future::join_all(targets.into_iter().map(|node| {
            let me = me.clone();
            let req = req.clone();
            async move {
                let result = if node == me {
                    self.local_repair(req.shards).await
                } else {
                    match self
                        .forward(&node, cluster_request::Call::Repair(req))
                        .await
                    {
                        Ok(cluster_reply::Reply::Repair(r)) => Ok(r),
                        Ok(_) => Err(unexpected_reply(&node)),
                        Err(status) => Err(status),
                    }
                };
                (node, result)
            }
        }))
        .await;
        let mut response = RepairResponse::default();
        for (node, result) in runs {
            match result {
                Ok(r) => {
                    response.readings_copied += r.pushed;
                    response.nodes.push(node);
                }
                Err(status) => response
                    .errors
                    .push(format!("{node}: {}", status.message())),
            }
        }
        Ok(response)
    }

    async fn local_repair(&self, shards: Vec<u32>) -> Result<RepairReply, Status> {
        let replicator = self
            .ctx
            .replicator()
            .ok_or_else(|| status::actor_unavailable("the replicator"))?;
        // A round is bounded by its push budget and the repair bandwidth; allow it minutes.
        ractor::call_t!(
            replicator,
            |reply| ReplicatorMsg::Repair { shards, reply },
            600_000
        )
        .map_err(|_| status::actor_unavailable("the replicator"))
    }

    /// Alerts matching the filters, newest first, from this node's copy (every node keeps
    /// every alert).
    pub async fn list_alerts(&self, req: ListAlertsRequest) -> Result<ListAlertsResponse, Status> {
        let limit = match req.limit {
            0 => 1000,
            n => n.min(100_000),
        } as usize;
        let ctx = self.ctx.clone();
        blocking(move || {
            let mut alerts: Vec<Alert> = crate::alerts::all_alerts(&ctx.store)
                .map_err(|e| status::internal(&e))?
                .into_iter()
                .filter(|a| alert_matches(a, &req))
                .collect();
            alerts
                .sort_by(|a, b| (b.raised_ts_ms, &b.alert_id).cmp(&(a.raised_ts_ms, &a.alert_id)));
            let truncated = alerts.len() > limit;
            alerts.truncate(limit);
            Ok(ListAlertsResponse { alerts, truncated })
        })
        .await
    }

    /// Acknowledges (or, with `resolve`, resolves) an alert at its owner: this node when the
    /// owner is down (it then owns the alert).
    pub async fn alert_command(
        &self,
        alert_id: String,
        resolve: bool,
        by: String,
        note: String,
    ) -> Result<Alert, Status> {
        if alert_id.is_empty() || alert_id.len() > 512 {
            return Err(Status::invalid_argument("alert_id must be 1 to 512 bytes"));
        }
        if by.len() > 128 || note.len() > 4096 {
            return Err(Status::invalid_argument(
                "`by` is at most 128 bytes, `note` 4096",
            ));
        }
        let ctx = self.ctx.clone();
        let id = alert_id.clone();
        let current = blocking(move || {
            crate::alerts::alert(&ctx.store, &id).map_err(|e| status::internal(&e))
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("alert {alert_id} does not exist")))?;
        let me = self.ctx.cluster.name();
        let owner_live =
            current.owner != me && self.ctx.cluster.reachable_peers().contains(&current.owner);
        if owner_live {
            let command = if resolve {
                alert_command::Command::Resolve(ResolveAlertRequest { alert_id, by, note })
            } else {
                alert_command::Command::Acknowledge(AcknowledgeAlertRequest { alert_id, by, note })
            };
            let call = cluster_request::Call::AlertCommand(AlertCommand {
                command: Some(command),
            });
            return match self.forward(&current.owner, call).await? {
                cluster_reply::Reply::AlertCommand(alert) => Ok(alert),
                _ => Err(unexpected_reply(&current.owner)),
            };
        }
        self.local_alert_command(alert_id, resolve, by, note).await
    }

    async fn local_alert_command(
        &self,
        alert_id: String,
        resolve: bool,
        by: String,
        note: String,
    ) -> Result<Alert, Status> {
        let manager = self
            .ctx
            .alert_manager()
            .ok_or_else(|| status::actor_unavailable("the alert manager"))?;
        let result = ractor::call_t!(
            manager,
            |reply| AlertMsg::Command {
                alert_id,
                resolve,
                by,
                note,
                reply
            },
            10_000
        )
        .map_err(|_| status::actor_unavailable("the alert manager"))?;
        result.map_err(|e| match e {
            AlertError::NotFound(_) => Status::not_found(e.to_string()),
            AlertError::Resolved(_) => Status::failed_precondition(e.to_string()),
            AlertError::Invalid(_) => Status::invalid_argument(e.to_string()),
        })
    }

    /// Registers feeders and meters here, then on every reachable peer.
    pub async fn import_topology(
        &self,
        req: ImportTopologyRequest,
    ) -> Result<ImportTopologyResponse, Status> {
        let counts = self.local_import(req.clone()).await?;
        let peers = self.ctx.cluster.reachable_peers();
        let applied = futures::future::join_all(peers.iter().map(|node| {
            let call = cluster_request::Call::RegistryApply(req.clone());
            async move { (node, self.forward(node, call).await) }
        }))
        .await;
        let failed: Vec<String> = applied
            .into_iter()
            .filter_map(|(node, r)| r.err().map(|e| format!("{node}: {}", e.message())))
            .collect();
        if !failed.is_empty() {
            return Err(Status::unavailable(format!(
                "registered on this node and {} of {} peers; not confirmed by {}. Registering \
                 is idempotent: send the same request again",
                peers.len() - failed.len(),
                peers.len(),
                failed.join("; ")
            )));
        }
        Ok(counts)
    }

    async fn local_import(
        &self,
        req: ImportTopologyRequest,
    ) -> Result<ImportTopologyResponse, Status> {
        let ImportTopologyRequest { feeders, meters } = req;
        if feeders.len() + meters.len() > MAX_IMPORT_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "{} entries in one import; split it into calls of at most {MAX_IMPORT_ENTRIES}",
                feeders.len() + meters.len()
            )));
        }
        let counts: ImportCounts = registry::import(&self.ctx, feeders, meters)
            .await
            .map_err(status::registry)?;
        Ok(ImportTopologyResponse {
            feeders_created: counts.feeders_created,
            feeders_updated: counts.feeders_updated,
            meters_created: counts.meters_created,
            meters_updated: counts.meters_updated,
        })
    }

    /// Copies, page by page, the registry entries this node lacks from `peer` (entries it
    /// has are kept: registry writes reach every reachable node when they are made).
    pub async fn copy_registry_from(&self, peer: &str) -> Result<u64, Status> {
        let mut after = Vec::new();
        let mut copied = 0u64;
        loop {
            let call = cluster_request::Call::RegistryPage(RegistryPageRequest {
                after_key: after.clone(),
                limit: REGISTRY_PAGE as u32,
            });
            let cluster_reply::Reply::RegistryPage(page) = self.forward(peer, call).await? else {
                return Err(unexpected_reply(peer));
            };
            let ctx = self.ctx.clone();
            let (feeders, meters, next_key) = blocking(move || {
                let mut feeders = Vec::new();
                for f in page.feeders {
                    let found = ctx.store.feeder_info(&f.feeder_id);
                    if found.map_err(|e| status::internal(&e))?.is_none() {
                        feeders.push(f);
                    }
                }
                let mut meters = Vec::new();
                for m in page.meters {
                    let found = ctx.store.meter_info(&m.meter_id);
                    if found.map_err(|e| status::internal(&e))?.is_none() {
                        meters.push(m);
                    }
                }
                Ok((feeders, meters, page.next_key))
            })
            .await?;
            if !feeders.is_empty() || !meters.is_empty() {
                copied += (feeders.len() + meters.len()) as u64;
                self.local_import(ImportTopologyRequest { feeders, meters })
                    .await?;
            }
            if next_key.is_empty() {
                return Ok(copied);
            }
            after = next_key;
        }
    }

    /// Drains (or, with `cancel`, undrains) `node`, this one when empty.
    pub async fn drain(&self, req: DrainNodeRequest) -> Result<DrainNodeResponse, Status> {
        let me = self.ctx.cluster.name();
        if !req.node.is_empty() && req.node != me {
            let call = cluster_request::Call::Drain(req.clone());
            return match self.forward(&req.node, call).await? {
                cluster_reply::Reply::Drain(r) => Ok(r),
                _ => Err(unexpected_reply(&req.node)),
            };
        }
        self.drain_self(!req.cancel)
    }

    /// Starts or stops draining this node.
    pub fn drain_self(&self, draining: bool) -> Result<DrainNodeResponse, Status> {
        let cluster = &self.ctx.cluster;
        let Some(membership) = cluster.membership_actor() else {
            return Err(Status::failed_precondition(
                "this node is not a cluster member (cluster.enabled = false); nothing to drain",
            ));
        };
        let owned = cluster.map().owned_by(cluster.name()).count() as u32;
        membership
            .cast(MembershipMsg::SetDraining(draining))
            .map_err(|_| status::actor_unavailable("the membership actor"))?;
        tracing::info!(draining, shards = owned, "drain requested");
        Ok(DrainNodeResponse {
            node: cluster.name().to_owned(),
            shards_moving: if draining { owned } else { 0 },
        })
    }

    /// Statistics of one node (`node` names it), or of this node and every reachable peer.
    pub async fn node_stats(&self, req: GetNodeStatsRequest) -> Vec<NodeStats> {
        let me = self.ctx.cluster.name().to_owned();
        let targets: Vec<String> = if req.node.is_empty() {
            std::iter::once(me.clone())
                .chain(self.ctx.cluster.reachable_peers())
                .collect()
        } else {
            vec![req.node.clone()]
        };
        futures::future::join_all(targets.into_iter().map(|node| {
            let me = me.clone();
            async move {
                if node == me {
                    return self.local_stats().await;
                }
                let call =
                    cluster_request::Call::NodeStats(GetNodeStatsRequest { node: node.clone() });
                match self.forward(&node, call).await {
                    Ok(cluster_reply::Reply::NodeStats(stats)) => stats,
                    Ok(_) => NodeStats {
                        node: node.clone(),
                        error: unexpected_reply(&node).message().to_owned(),
                        ..NodeStats::default()
                    },
                    Err(status) => NodeStats {
                        node,
                        error: status.message().to_owned(),
                        ..NodeStats::default()
                    },
                }
            }
        }))
        .await
    }

    async fn local_stats(&self) -> NodeStats {
        let shards = shard_stats(&self.ctx).await;
        let counters = &self.ctx.counters;
        NodeStats {
            node: self.ctx.cluster.name().to_owned(),
            active_meters: shards.iter().map(|s| s.active_meters as u64).sum(),
            active_feeders: active_feeders(&self.ctx).await as u64,
            passivations: Counters::get(&counters.passivations),
            readings_accepted: Counters::get(&counters.readings_accepted),
            readings_rejected: Counters::get(&counters.readings_rejected),
            batches_forwarded: self.ctx.cluster.batches_forwarded(),
            forwards_inflight: self.ctx.cluster.forwards_inflight(),
            restarts: Counters::get(&counters.actor_failures),
            uptime_s: self.ctx.cluster.started().elapsed().as_secs(),
            error: String::new(),
            active_sessions: Counters::get(&counters.active_sessions),
            mailboxes: self
                .ctx
                .mailboxes
                .snapshot()
                .into_iter()
                .map(|m| MailboxDepth {
                    kind: m.kind.label().to_owned(),
                    queued: m.queued,
                    high_water: m.high_water,
                })
                .collect(),
        }
    }

    /// Forwards a read-only call; errors become statuses for the client.
    async fn forward(
        &self,
        node: &str,
        call: cluster_request::Call,
    ) -> Result<cluster_reply::Reply, Status> {
        let reply = self
            .ctx
            .cluster
            .forward(node, call, true)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "{e}. It owns the data asked for; retry shortly (a down node's shards move \
                     to live nodes within the failure-detection deadline)"
                ))
            })?;
        into_result(node, reply)?.ok_or_else(|| unexpected_reply(node))
    }

    /// Answers a call forwarded by a peer, from this node's own data.
    async fn answer(&self, request: ClusterRequest) -> ClusterReply {
        use cluster_reply::Reply;
        let Some(call) = request.call else {
            return error_reply(&Status::invalid_argument("cluster request without a call"));
        };
        let result = match call {
            cluster_request::Call::Ingest(batch) => {
                match self.pipeline.push(batch, Admission::FailFast).await {
                    Ok(ack) => Ok(Reply::Ingest(ack)),
                    Err(e @ IngestError::ShuttingDown) => {
                        Err(Status::failed_precondition(e.to_string()))
                    }
                    Err(e @ IngestError::AckTimeout { .. }) => {
                        Err(Status::deadline_exceeded(e.to_string()))
                    }
                    Err(e) => Err(status::ingest(e)),
                }
            }
            cluster_request::Call::LocalReadings(req) => self
                .local_raw(req)
                .await
                .map(|readings| Reply::LocalReadings(LocalReadings { readings })),
            cluster_request::Call::GetReadings(req) => {
                self.local_readings(req).await.map(Reply::GetReadings)
            }
            cluster_request::Call::GetMeterStatus(req) => self
                .local_meter_status(req.meter_id)
                .await
                .map(Reply::GetMeterStatus),
            cluster_request::Call::FeederShare(req) => match req.request {
                Some(req) => self.local_feeder_share(req).await.map(Reply::FeederShare),
                None => Err(Status::invalid_argument("feeder share without a request")),
            },
            cluster_request::Call::Replicate(req) => {
                Ok(Reply::Replicate(self.pipeline.apply_copies(req).await))
            }
            cluster_request::Call::Digests(req) => {
                let ctx = self.ctx.clone();
                blocking(move || {
                    let tree = ctx
                        .repair
                        .tree(&ctx.store, ctx.config.actors.shards, DIGEST_MAX_AGE)
                        .map_err(|e| status::internal(&e))?;
                    Ok(Reply::Digests(tree.digests(&req)))
                })
                .await
            }
            cluster_request::Call::Entries(req) => {
                let ctx = self.ctx.clone();
                blocking(move || {
                    let tree = ctx
                        .repair
                        .tree(&ctx.store, ctx.config.actors.shards, DIGEST_MAX_AGE)
                        .map_err(|e| status::internal(&e))?;
                    repair::entries(&ctx.store, &tree, &req)
                        .map(Reply::Entries)
                        .map_err(|e| status::internal(&e))
                })
                .await
            }
            cluster_request::Call::ReplicaStatus(req) => self
                .local_replica_status(req)
                .await
                .map(Reply::ReplicaStatus),
            cluster_request::Call::Repair(req) => {
                self.local_repair(req.shards).await.map(Reply::Repair)
            }
            cluster_request::Call::DeadLetters(req) => self
                .local_dead_letters(req.limit)
                .await
                .map(Reply::DeadLetters),
            cluster_request::Call::ReplayDeadLetters(req) => {
                self.local_replay(req.sink).await.map(|queued| {
                    Reply::ReplayDeadLetters(ReplayDeadLettersResponse {
                        queued,
                        unavailable: Vec::new(),
                    })
                })
            }
            cluster_request::Call::GetForecast(req) => self
                .local_forecast(req.feeder_id)
                .await
                .map(Reply::GetForecast),
            cluster_request::Call::FeederUpdates(req) => match self.ctx.feeder_supervisor() {
                Some(_) => {
                    for delta in req.feeders {
                        let (feeder_id, updates, signals) = crate::ingest::from_delta(delta);
                        self.ctx
                            .send_feeder_updates(feeder_id, updates, signals)
                            .await;
                    }
                    Ok(Reply::FeederUpdates(Done {}))
                }
                None => Err(status::actor_unavailable("the feeder supervisor")),
            },
            cluster_request::Call::AlertUpserts(req) => match self.ctx.alert_manager() {
                Some(manager) => manager
                    .cast(AlertMsg::Upserts(req.alerts))
                    .map(|()| Reply::AlertUpserts(Done {}))
                    .map_err(|_| status::actor_unavailable("the alert manager")),
                None => Err(status::actor_unavailable("the alert manager")),
            },
            cluster_request::Call::AlertCommand(req) => match req.command {
                Some(alert_command::Command::Acknowledge(r)) => self
                    .local_alert_command(r.alert_id, false, r.by, r.note)
                    .await
                    .map(Reply::AlertCommand),
                Some(alert_command::Command::Resolve(r)) => self
                    .local_alert_command(r.alert_id, true, r.by, r.note)
                    .await
                    .map(Reply::AlertCommand),
                None => Err(Status::invalid_argument("alert command without a command")),
            },
            cluster_request::Call::AlertPage(req) => {
                let ctx = self.ctx.clone();
                let limit = (req.limit as usize).clamp(1, crate::alerts::ALERT_PAGE);
                blocking(move || {
                    let (alerts, next) =
                        crate::alerts::alert_page(&ctx.store, &req.after_id, limit)
                            .map_err(|e| status::internal(&e))?;
                    Ok(Reply::AlertPage(AlertPage { alerts, next }))
                })
                .await
            }
            cluster_request::Call::RegistryApply(req) => {
                self.local_import(req).await.map(Reply::RegistryApply)
            }
            cluster_request::Call::Auth(call) => match self.ctx.auth() {
                Some(auth) => auth.answer(&self.ctx, call).await.map(Reply::Auth),
                None => Err(Status::failed_precondition("this node has no auth layer")),
            },
            cluster_request::Call::NodeStats(_) => Ok(Reply::NodeStats(self.local_stats().await)),
            cluster_request::Call::Drain(req) => self.drain_self(!req.cancel).map(Reply::Drain),
            cluster_request::Call::RegistryPage(req) => {
                let ctx = self.ctx.clone();
                let limit = (req.limit as usize).clamp(1, REGISTRY_PAGE);
                blocking(move || {
                    let (feeders, meters, next) = ctx
                        .store
                        .registry_page(&req.after_key, limit)
                        .map_err(|e| status::internal(&e))?;
                    Ok(Reply::RegistryPage(RegistryPage {
                        feeders,
                        meters,
                        next_key: next.unwrap_or_default(),
                    }))
                })
                .await
            }
        };
        match result {
            Ok(reply) => ok_reply(reply),
            Err(status) => error_reply(&status),
        }
    }
}

impl LocalHandler for Api {
    fn handle(
        &self,
        request: ClusterRequest,
    ) -> Pin<Box<dyn Future<Output = ClusterReply> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.answer(request).await })
    }

    fn sync_registry(
        &self,
        peer: String,
    ) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            this.copy_registry_from(&peer)
                .await
                .map_err(|s| s.message().to_owned())
        })
    }
}

fn alert_matches(a: &Alert, f: &ListAlertsRequest) -> bool {
    (f.feeder_id.is_empty() || a.feeder_id == f.feeder_id)
        && (f.kind.is_empty() || a.kind == f.kind)
        && (f.asset_id.is_empty() || a.asset_id == f.asset_id)
        && a.severity >= f.min_severity
        && (f.state == 0 || a.state == f.state)
        && (f.from_ts_ms == 0 || a.raised_ts_ms >= f.from_ts_ms)
        && (f.to_ts_ms == 0 || a.raised_ts_ms < f.to_ts_ms)
}

/// Whether a shard's replicas agree: every live home member holds the same readings, and
/// every copy elsewhere is no larger than the home set's.
fn converged(entry: &ShardReplicas) -> bool {
    let home: Vec<&ReplicaCopy> = entry.copies.iter().filter(|c| c.home).collect();
    let live_home = entry.home.len() - entry.unavailable.len();
    if home.is_empty() {
        return entry.copies.is_empty();
    }
    let first = home[0];
    home.len() == live_home
        && home
            .iter()
            .all(|c| c.digest == first.digest && c.readings == first.readings)
        && entry
            .copies
            .iter()
            .filter(|c| !c.home)
            .all(|c| c.readings <= first.readings)
}

/// How a forwarded ingest part ended, from the owner's reply.
fn ingest_outcome(node: &str, reply: ClusterReply) -> PartOutcome {
    match Code::from_i32(reply.code) {
        Code::Ok => match reply.reply {
            Some(cluster_reply::Reply::Ingest(ack)) => PartOutcome::Acked(ack),
            _ => PartOutcome::Unknown(format!("node {node} sent an unexpected reply")),
        },
        // The owner refused before storing anything.
        Code::ResourceExhausted | Code::FailedPrecondition | Code::InvalidArgument => {
            PartOutcome::Refused(format!("node {node}: {}", reply.message))
        }
        _ => PartOutcome::Unknown(format!("node {node}: {}", reply.message)),
    }
}

fn owner_unavailable(index: u32, why: &str) -> Rejection {
    Rejection {
        index,
        reason: RejectReason::OwnerUnavailable as i32,
        message: format!("{why}; nothing was stored; send it again shortly"),
    }
}

/// `[from, to)` widened to 15-minute boundaries, refused when empty or longer than
/// `max_days`.
fn quarter_range(from_ts_ms: i64, to_ts_ms: i64, max_days: i64) -> Result<(i64, i64), Status> {
    let q = crate::buckets::MIN15_MS;
    let from = from_ts_ms.div_euclid(q) * q;
    let to = to_ts_ms.saturating_add(q - 1).div_euclid(q) * q;
    if to <= from || to - from > max_days * 86_400_000 {
        return Err(Status::invalid_argument(format!(
            "[from_ts_ms, to_ts_ms) must be non-empty and at most {max_days} days"
        )));
    }
    Ok((from, to))
}

fn unexpected_reply(node: &str) -> Status {
    Status::internal(format!("node {node} sent a reply of the wrong kind"))
}

fn resolution(value: i32) -> Result<Resolution, Status> {
    Resolution::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("resolution {value} is unknown")))
}
