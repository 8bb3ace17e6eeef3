//! The ingest pipeline: from a client's batch to its ack.
//!
//! 1. **Admission.** Empty and oversized batches are refused whole. The batch then takes one
//!    permit per reading from the node's in-flight budget (`ingest.max_inflight_readings`);
//!    unary calls that find it exhausted are refused with RESOURCE_EXHAUSTED, stream calls wait
//!    (and so stop reading their stream). This is the bound on ingest memory.
//! 2. **Shape.** Each reading is checked without any state ([`check_shape`]); bad ones are
//!    rejected individually and never reach an actor.
//! 3. **Split.** Valid readings are grouped by meter, groups by shard, and each shard gets
//!    one message with all its groups: messages per batch grow with shards touched, not
//!    readings.
//! 4. **Collect.** Every group's outcome arrives on one bounded channel once its writes are
//!    durable. A group whose actor died before writing is answered RETRY (nothing of it was
//!    stored). If the acks do not all arrive within `ingest.ack_timeout`, the call fails with
//!    UNAVAILABLE: the outcome is unknown and resending is safe because ingest is idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use gridmesh_proto::v1::{PushAck, ReadingBatch, RejectReason, Rejection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::context::{Counters, NodeContext, now_ms};
use crate::feeder::FeederSupervisorMsg;
use crate::meter::{FeederUpdate, GroupOutcome, MeterWork};
use crate::placement::shard_of;
use crate::shard::ShardMsg;
use crate::validation::check_shape;

/// Rejection text for readings whose meter actor died before storing them.
const RETRY_MESSAGE: &str =
    "the meter's actor restarted before storing this reading; nothing was stored, send it again";

/// Why a whole batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch has no readings.
    #[error("batch {batch_id} has no readings")]
    Empty {
        /// The batch id.
        batch_id: u64,
    },
    /// The batch has more readings than allowed.
    #[error("batch {batch_id} has {len} readings; at most {max} are accepted per batch")]
    TooLarge {
        /// The batch id.
        batch_id: u64,
        /// Readings in it.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The node's in-flight budget is exhausted.
    #[error("node is saturated ({inflight} readings in flight); retry with backoff")]
    Saturated {
        /// Readings in flight now.
        inflight: u32,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The acks did not arrive in time.
    #[error(
        "batch {batch_id} was not acknowledged within {timeout_ms} ms; its outcome is unknown \
         and resending is safe"
    )]
    AckTimeout {
        /// The batch id.
        batch_id: u64,
        /// The configured timeout.
        timeout_ms: u64,
    },
}

/// Whether an admission waits for in-flight budget or fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Fail with [`IngestError::Saturated`] (unary calls).
    FailFast,
    /// Wait for budget (streams: waiting stops reading the stream).
    Wait,
}

/// The node's ingest entry point. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestPipeline {
    ctx: Arc<NodeContext>,
    inflight: Arc<Semaphore>,
}

struct Group {
    indices: Vec<u32>,
    answered: bool,
}

impl IngestPipeline {
    /// A pipeline over a running node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        let permits = ctx.config.ingest.max_inflight_readings as usize;
        Self {
            ctx,
            inflight: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Readings currently in flight.
    pub fn inflight(&self) -> u32 {
        self.ctx.config.ingest.max_inflight_readings - self.inflight.available_permits() as u32
    }

    /// Refuses all new batches (graceful shutdown); in-flight ones complete.
    pub fn close(&self) {
        self.inflight.close();
    }

    /// Waits until no batch is in flight, or `timeout` passes. Returns whether it drained.
    pub async fn drained(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.inflight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Ingests one batch and returns its ack once every accepted reading is durable.
    pub async fn push(
        &self,
        batch: ReadingBatch,
        admission: Admission,
    ) -> Result<PushAck, IngestError> {
        let started = Instant::now();
        let batch_id = batch.batch_id;
        let _permit = self.admit(&batch, admission).await?;
        let len = batch.readings.len();

        let mut ack = PushAck {
            batch_id,
            ..PushAck::default()
        };
        let (mut groups, per_shard, rx) = self.split(batch, &mut ack.rejected);
        self.dispatch(per_shard);
        let feeder_updates = self.collect(rx, &mut groups, &mut ack).await?;
        self.notify_feeders(feeder_updates);

        ack.rejected.sort_by_key(|r| r.index);
        record_metrics(&ack, len, started);
        let counters = &self.ctx.counters;
        Counters::add(
            &counters.readings_accepted,
            u64::from(ack.accepted - ack.duplicates),
        );
        Counters::add(&counters.readings_rejected, ack.rejected.len() as u64);
        Ok(ack)
    }

    async fn admit(
        &self,
        batch: &ReadingBatch,
        admission: Admission,
    ) -> Result<OwnedSemaphorePermit, IngestError> {
        let len = batch.readings.len();
        let max = self.ctx.config.ingest.max_batch_readings;
        if len == 0 {
            return Err(IngestError::Empty {
                batch_id: batch.batch_id,
            });
        }
        if len > max as usize {
            return Err(IngestError::TooLarge {
                batch_id: batch.batch_id,
                len,
                max,
            });
        }
        let permits = len as u32;

        match admission {
            Admission::FailFast => self
                .inflight
                .clone()
                .try_acquire_many_owned(permits)
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::Closed => IngestError::ShuttingDown,
                    tokio::sync::TryAcquireError::NoPermits => {
                        metrics::counter!("gridmesh_ingest_saturated_total").increment(1);
                        IngestError::Saturated {
                            inflight: self.inflight(),
                        }
                    }
                }),
            Admission::Wait => self
                .inflight
                .clone()
                .acquire_many_owned(permits)
                .await
                .map_err(|_| IngestError::ShuttingDown),
        }
    }

    /// Shape-checks readings and groups the valid ones by meter and shard.
    #[allow(clippy::type_complexity)]
    fn split(
        &self,
        batch: ReadingBatch,
        rejected: &mut Vec<Rejection>,
    ) -> (
        Vec<Group>,
        HashMap<u32, Vec<MeterWork>>,
        mpsc::Receiver<GroupOutcome>,
    ) {
        let ingest = &self.ctx.config.ingest;
        let (now, tolerance) = (now_ms(), ingest.future_tolerance.as_millis() as i64);
        let mut by_meter: HashMap<String, Vec<(u32, gridmesh_proto::v1::Reading)>> = HashMap::new();
        for (index, reading) in batch.readings.into_iter().enumerate() {
            let index = index as u32;
            match check_shape(&reading, now, tolerance) {
                Ok(()) => {
                    // The id moves to the group: stored readings do not repeat it.
                    let mut reading = reading;
                    let meter_id = std::mem::take(&mut reading.meter_id);
                    by_meter.entry(meter_id).or_default().push((index, reading));
                }
                Err((reason, message)) => rejected.push(Rejection {
                    index,
                    reason: reason as i32,
                    message,
                }),
            }
        }
        let (tx, rx) = mpsc::channel(by_meter.len().max(1));
        let shards = self.ctx.config.actors.shards;
        let mut groups = Vec::with_capacity(by_meter.len());
        let mut per_shard: HashMap<u32, Vec<MeterWork>> = HashMap::new();
        for (meter_id, readings) in by_meter {
            let group = groups.len() as u32;
            groups.push(Group {
                indices: readings.iter().map(|(i, _)| *i).collect(),
                answered: false,
            });
            let shard = shard_of(&meter_id, shards);
            per_shard.entry(shard).or_default().push(MeterWork {
                meter_id,
                group,
                readings,
                outcome: tx.clone(),
            });
        }
        (groups, per_shard, rx)
    }

    fn dispatch(&self, per_shard: HashMap<u32, Vec<MeterWork>>) {
        for (shard, work) in per_shard {
            let sent = match self.ctx.shard(shard) {
                Some(actor) => actor.cast(ShardMsg::Ingest(work)).map_err(|_| ()),
                None => Err(()),
            };
            if sent.is_err() {
                // The shard is restarting. The work (and its outcome senders) is dropped, so
                // `collect` answers its groups RETRY; nothing of it was stored.
                tracing::debug!(shard, "shard unavailable; readings answered with retry");
            }
        }
    }

    async fn collect(
        &self,
        mut rx: mpsc::Receiver<GroupOutcome>,
        groups: &mut [Group],
        ack: &mut PushAck,
    ) -> Result<Vec<FeederUpdate>, IngestError> {
        let timeout = self.ctx.config.ingest.ack_timeout;
        let mut feeder_updates = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(outcome)) => {
                    if let Some(group) = groups.get_mut(outcome.group as usize) {
                        group.answered = true;
                    }
                    ack.accepted += outcome.accepted;
                    ack.duplicates += outcome.duplicates;
                    ack.corrections += outcome.corrections;
                    ack.rejected.extend(outcome.rejected);
                    feeder_updates.extend(outcome.feeder_updates);
                }
                // Every sender is gone: all groups answered or their actors dropped them.
                Ok(None) => break,
                Err(_) => {
                    metrics::counter!("gridmesh_ingest_ack_timeouts_total").increment(1);
                    return Err(IngestError::AckTimeout {
                        batch_id: ack.batch_id,
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
            }
        }
        for group in groups.iter().filter(|g| !g.answered) {
            for index in &group.indices {
                ack.rejected.push(Rejection {
                    index: *index,
                    reason: RejectReason::Retry as i32,
                    message: RETRY_MESSAGE.to_owned(),
                });
            }
        }
        Ok(feeder_updates)
    }

    /// Hands durable feeder contributions to the feeder actors: one message per feeder.
    fn notify_feeders(&self, updates: Vec<FeederUpdate>) {
        if updates.is_empty() {
            return;
        }
        let Some(feeders) = self.ctx.feeder_supervisor() else {
            return;
        };
        let mut by_feeder: HashMap<String, Vec<FeederUpdate>> = HashMap::new();
        for update in updates {
            by_feeder
                .entry(update.feeder_id.clone())
                .or_default()
                .push(update);
        }
        for (feeder_id, updates) in by_feeder {
            // The live view is best effort; the stored rows are the source of truth.
            let _ = feeders.cast(FeederSupervisorMsg::Updates { feeder_id, updates });
        }
    }
}

fn record_metrics(ack: &PushAck, len: usize, started: Instant) {
    metrics::counter!("gridmesh_ingest_batches_total").increment(1);
    metrics::counter!("gridmesh_readings_received_total").increment(len as u64);
    metrics::counter!("gridmesh_readings_accepted_total")
        .increment(u64::from(ack.accepted - ack.duplicates));
    metrics::counter!("gridmesh_readings_duplicate_total").increment(u64::from(ack.duplicates));
    metrics::counter!("gridmesh_readings_corrected_total").increment(u64::from(ack.corrections));
    for rejection in &ack.rejected {
        let reason = RejectReason::try_from(rejection.reason).unwrap_or(RejectReason::Unspecified);
        metrics::counter!("gridmesh_readings_rejected_total", "reason" => reason_label(reason))
            .increment(1);
    }
    metrics::histogram!("gridmesh_ingest_ack_latency_seconds")
        .record(started.elapsed().as_secs_f64());
}

/// A short lowercase label for a reject reason (metrics, reports).
pub fn reason_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Unspecified => "unspecified",
        RejectReason::UnknownMeter => "unknown_meter",
        RejectReason::InvalidMeterId => "invalid_meter_id",
        RejectReason::TimestampTooEarly => "timestamp_too_early",
        RejectReason::TimestampInFuture => "timestamp_in_future",
        RejectReason::TooOld => "too_old",
        RejectReason::Conflict => "conflict",
        RejectReason::RegisterBackwards => "register_backwards",
        RejectReason::NotFinite => "not_finite",
        RejectReason::OutOfRange => "out_of_range",
        RejectReason::Empty => "empty",
        RejectReason::Retry => "retry",
        RejectReason::StaleVersion => "stale_version",
        RejectReason::InvalidEvent => "invalid_event",
        RejectReason::OwnerUnavailable => "owner_unavailable",
    }
}
