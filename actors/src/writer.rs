//! The group-commit writer: the only path by which anything reaches the disk.
//!
//! Protocol:
//! 1. Actors submit [`WriteRequest`]s (rows plus a completion) into a bounded channel; a full
//!    channel makes the submitting actor wait, which is how storage backpressure reaches the
//!    ingest pipeline.
//! 2. A dedicated OS thread takes the first request, then everything else already queued (up to
//!    `max_group_requests`, optionally waiting `group_commit_window_ms` for more), writes it as
//!    **one** atomic fjall batch, and marks each request *applied* (visible to reads).
//! 3. It then syncs the journal once for the whole group (`fsync`), and only then runs the
//!    completions, which is what sends acks to clients. One fsync thus covers every batch that
//!    arrived while the previous one ran: throughput grows with load instead of collapsing.
//!
//! Requests are applied in channel order. Each meter actor submits its own requests in the
//! order it decided them, so per-meter write order is decision order. A [`WriteCursor`] lets an
//! actor wait until its own earlier writes are applied before it reads the store (needed for
//! backfill checks and for re-activation after a passivation or crash).
//!
//! If fjall fails, the writer stops: outstanding completions get an error (nothing is
//! acknowledged), and the failure is published so the node can stop with a non-zero status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gridmesh_config::{StorageConfig, SyncMode};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::storage::{Store, StoreError};

/// Capacity of the request channel.
const CHANNEL_CAPACITY: usize = 8192;

/// The keyspace a row goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Readings.
    Readings,
    /// Meter actor state.
    Meters,
    /// Persisted anomaly detectors.
    Anomaly,
    /// Daily aggregates stored when a meter's local day closes.
    Daily,
    /// Meter and feeder registry.
    Registry,
    /// Feeder interval contributions.
    FeederLoad,
    /// Correction audit.
    Audit,
    /// Writes kept for a replica that was down (hinted handoff).
    Hints,
    /// Alerts by id.
    Alerts,
    /// The alert change log.
    AlertLog,
    /// Notifications that could not be delivered.
    DeadLetters,
}

/// One key to put (or delete, with `value: None`).
#[derive(Debug, Clone)]
pub struct Row {
    /// Target keyspace.
    pub space: Space,
    /// Key.
    pub key: Vec<u8>,
    /// Value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl Row {
    /// A put.
    pub fn put(space: Space, key: Vec<u8>, value: Vec<u8>) -> Self {
        Self {
            space,
            key,
            value: Some(value),
        }
    }

    /// A delete.
    pub fn delete(space: Space, key: Vec<u8>) -> Self {
        Self {
            space,
            key,
            value: None,
        }
    }
}

/// Why a write was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The writer has stopped (shutdown or an earlier storage failure).
    #[error("storage writer is not running")]
    Stopped,
    /// The storage engine failed on this write.
    #[error("storage write failed: {0}")]
    Failed(String),
}

/// Runs once the request is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

/// Tracks how far one submitter's requests have been applied.
#[derive(Debug, Default)]
pub struct WriteCursor {
    enqueued: AtomicU64,
    applied: AtomicU64,
    /// Tasks inside `wait_applied`: the writer only touches `notify` (a lock) when some wait.
    waiters: std::sync::atomic::AtomicUsize,
    notify: Notify,
}

impl WriteCursor {
    /// Reserves the sequence number of the next request of this submitter.
    pub fn next_seq(&self) -> u64 {
        self.enqueued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Waits until every request reserved so far is applied (visible to reads).
    pub async fn wait_applied(&self) {
        let target = self.enqueued.load(Ordering::Acquire);
        if self.applied.load(Ordering::Acquire) >= target {
            return;
        }
        // SeqCst pairs with `mark_applied`: either the writer sees this waiter and notifies, or
        // this waiter sees the writer's progress (the store/load pattern needs a total order).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = self.notify.notified();
            if self.applied.load(Ordering::SeqCst) >= target {
                break;
            }
            notified.await;
        }
        self.waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether everything reserved so far is applied.
    pub fn is_caught_up(&self) -> bool {
        self.applied.load(Ordering::Acquire) >= self.enqueued.load(Ordering::Acquire)
    }

    fn mark_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Marks a reserved sequence number as done without a write (its request was never sent),
    /// so waiters do not wait for it forever.
    pub fn abandon(&self, seq: u64) {
        self.mark_applied(seq);
    }
}

/// A unit of work for the writer.
pub struct WriteRequest {
    /// Rows written atomically with the rest of the group.
    pub rows: Vec<Row>,
    /// The submitter's cursor and this request's sequence number.
    pub cursor: Option<(Arc<WriteCursor>, u64)>,
    /// Runs after the group is durable.
    pub completion: Option<Completion>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

/// Handle to submit writes. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteRequest>,
}

/// The running writer thread and its failure signal.
#[derive(Debug)]
pub struct WriterTask {
    /// Joins when every [`Writer`] handle is dropped and the last group is synced.
    pub thread: JoinHandle<()>,
    /// Becomes `Some(message)` if the writer stopped on a storage failure.
    pub failure: watch::Receiver<Option<String>>,
}

impl Writer {
    /// Starts the writer thread.
    pub fn spawn(
        store: Arc<Store>,
        config: &StorageConfig,
    ) -> std::io::Result<(Writer, WriterTask)> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (failure_tx, failure) = watch::channel(None);
        let settings = Settings {
            sync: config.sync,
            window: Duration::from_millis(config.group_commit_window_ms),
            max_group: config.max_group_requests as usize,
        };
        let completions = spawn_completion_runner();
        let thread = std::thread::Builder::new()
            .name("gridmesh-writer".to_owned())
            .spawn(move || run(&store, rx, settings, &failure_tx, &completions))?;
        Ok((Writer { tx }, WriterTask { thread, failure }))
    }

    /// Queues a request, waiting while the queue is full.
    pub async fn submit(&self, request: WriteRequest) -> Result<(), WriteError> {
        self.tx.send(request).await.map_err(|rejected| {
            let request = rejected.0;
            if let Some((cursor, seq)) = &request.cursor {
                cursor.abandon(*seq);
            }
            if let Some(completion) = request.completion {
                completion(Err(WriteError::Stopped));
            }
            WriteError::Stopped
        })
    }

    /// Writes rows and waits until they are durable.
    pub async fn write(&self, rows: Vec<Row>) -> Result<(), WriteError> {
        let (done_tx, done_rx) = oneshot::channel();
        let completion: Completion = Box::new(move |result| {
            let _ = done_tx.send(result);
        });
        self.submit(WriteRequest {
            rows,
            cursor: None,
            completion: Some(completion),
        })
        .await?;
        done_rx.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        CHANNEL_CAPACITY - self.tx.capacity()
    }
}

#[derive(Clone, Copy)]
struct Settings {
    sync: SyncMode,
    window: Duration,
    max_group: usize,
}

/// Completions of one group, handed to the async runtime in one message.
type CompletionBatch = Vec<Completion>;

/// Runs completions on the async runtime rather than on the writer thread. Completions wake
/// the tasks waiting for acks; waking from outside the runtime costs a thread unpark each,
/// and the writer thread is the one serial stage of ingest, so it hands them over once per
/// group instead. The channel holds at most a few groups; when it is full the writer waits,
/// which bounds it like every other queue on the ingest path.
fn spawn_completion_runner() -> Option<mpsc::Sender<CompletionBatch>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = mpsc::channel::<CompletionBatch>(16);
    runtime.spawn(async move {
        while let Some(batch) = rx.recv().await {
            for completion in batch {
                completion(Ok(()));
            }
        }
    });
    Some(tx)
}

fn run(
    store: &Store,
    mut rx: mpsc::Receiver<WriteRequest>,
    settings: Settings,
    failure: &watch::Sender<Option<String>>,
    completions: &Option<mpsc::Sender<CompletionBatch>>,
) {
    let mut group = Vec::with_capacity(settings.max_group);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        if !settings.window.is_zero() {
            std::thread::sleep(settings.window);
        }
        let max = if settings.sync == SyncMode::PerBatch {
            1
        } else {
            settings.max_group
        };
        while group.len() < max {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        if let Err(e) = commit_group(store, &mut group, settings.sync, completions) {
            tracing::error!(error = %e, "storage writer failed; refusing further writes");
            let _ = failure.send(Some(e.to_string()));
            fail_all(group.drain(..), &e);
            rx.close();
            while let Some(request) = rx.blocking_recv() {
                fail_all(std::iter::once(request), &e);
            }
            return;
        }
    }
    // Every handle is gone (shutdown): make the last groups durable whatever the sync mode.
    if let Err(e) = store.db.persist(fjall::PersistMode::SyncAll) {
        tracing::error!(error = %e, "final journal sync failed");
        let _ = failure.send(Some(e.to_string()));
    }
}

fn commit_group(
    store: &Store,
    group: &mut Vec<WriteRequest>,
    sync: SyncMode,
    completions: &Option<mpsc::Sender<CompletionBatch>>,
) -> Result<(), StoreError> {
    commit_rows(store, group, sync)?;
    let batch: CompletionBatch = group.drain(..).filter_map(|r| r.completion).collect();
    let batch = match completions {
        Some(runner) => match runner.blocking_send(batch) {
            Ok(()) => return Ok(()),
            // The runtime is gone (shutdown): complete here instead.
            Err(mpsc::error::SendError(batch)) => batch,
        },
        None => batch,
    };
    for completion in batch {
        completion(Ok(()));
    }
    Ok(())
}

fn commit_rows(
    store: &Store,
    group: &mut [WriteRequest],
    sync: SyncMode,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::with_capacity(group.iter().map(|r| r.rows.len()).sum());
    for request in group.iter_mut() {
        rows.append(&mut request.rows);
    }
    // Inserting in key order keeps each memtable skiplist search on cache-hot nodes next to the
    // previous insert; requests from many meters otherwise scatter across the whole memtable.
    // The sort is stable, so when one group holds two writes of a key (a meter with two
    // requests in the group), the later one is still inserted last and wins.
    rows.sort_by(|a, b| (a.space as u8, &a.key).cmp(&(b.space as u8, &b.key)));
    let row_count = rows.len();
    let mut batch = store.db.batch();
    for row in rows {
        let space = match row.space {
            Space::Readings => &store.readings,
            Space::Meters => &store.meters,
            Space::Anomaly => &store.anomaly,
            Space::Daily => &store.daily,
            Space::Registry => &store.registry,
            Space::FeederLoad => &store.feeder_load,
            Space::Audit => &store.audit,
            Space::Hints => &store.hints,
            Space::Alerts => &store.alerts,
            Space::AlertLog => &store.alert_log,
            Space::DeadLetters => &store.dead_letters,
        };
        match row.value {
            Some(value) => batch.insert(space, row.key, value),
            None => batch.remove(space, row.key),
        }
    }
    batch.commit()?;
    for request in group.iter() {
        if let Some((cursor, seq)) = &request.cursor {
            cursor.mark_applied(*seq);
        }
    }
    if sync != SyncMode::None {
        store.db.persist(fjall::PersistMode::SyncData)?;
    }
    metrics::histogram!("gridmesh_storage_group_commit_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("gridmesh_storage_group_requests").record(group.len() as f64);
    metrics::counter!("gridmesh_storage_rows_written_total").increment(row_count as u64);
    Ok(())
}

fn fail_all(requests: impl Iterator<Item = WriteRequest>, e: &StoreError) {
    for request in requests {
        if let Some((cursor, seq)) = &request.cursor {
            cursor.abandon(*seq);
        }
        if let Some(completion) = request.completion {
            completion(Err(WriteError::Failed(e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    fn open() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), 4, 8).expect("open store"));
        (dir, store)
    }

    #[tokio::test]
    async fn writes_are_visible_after_completion_and_cursor_tracks_them() {
        let (_dir, store) = open();
        let (writer, task) =
            Writer::spawn(store.clone(), &StorageConfig::default()).expect("spawn");
        let cursor = Arc::new(WriteCursor::default());
        let mut acks = Vec::new();
        for i in 0..100i64 {
            let (tx, rx) = oneshot::channel();
            let ts_ms = 1_000_000_000_000 + i;
            let reading = gridmesh_proto::v1::Reading {
                ts_ms,
                active_power_w: Some(1.0),
                ..Default::default()
            };
            let row = Row::put(
                Space::Readings,
                keys::reading_key("m", ts_ms),
                crate::storage::encode_reading(&reading),
            );
            writer
                .submit(WriteRequest {
                    rows: vec![row],
                    cursor: Some((cursor.clone(), cursor.next_seq())),
                    completion: Some(Box::new(move |r| {
                        let _ = tx.send(r);
                    })),
                })
                .await
                .expect("submit");
            acks.push(rx);
        }
        cursor.wait_applied().await;
        assert!(cursor.is_caught_up());
        for ack in acks {
            ack.await.expect("completion runs").expect("durable");
        }
        let stored = store
            .readings_between("m", 0, i64::MAX, 1000)
            .expect("scan");
        assert_eq!(stored.len(), 100);
        assert!(
            stored.windows(2).all(|w| w[0].0 < w[1].0),
            "a meter's readings come back in time order"
        );
        drop(writer);
        task.thread
            .join()
            .expect("writer thread exits cleanly after the last handle");
        assert!(task.failure.borrow().is_none());
    }

    #[test]
    fn a_second_node_cannot_open_the_same_directory() {
        let (dir, _store) = open();
        let err = Store::open(dir.path(), 4, 8).expect_err("locked");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn shard_count_cannot_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path(), 4, 8).expect("first open"));
        let err = Store::open(dir.path(), 8, 8).expect_err("mismatch");
        assert!(
            matches!(
                err,
                StoreError::ShardMismatch {
                    found: 4,
                    configured: 8
                }
            ),
            "{err}"
        );
    }
}
