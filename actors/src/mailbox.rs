//! Mailbox depths of the actors on the ingest path.
//!
//! ractor's mailboxes are unbounded and it does not say how many messages wait in one. GridMesh
//! bounds them by admission (a batch holds permits until its ack), and these counters show the
//! bound holding: the sender of each message on the load path counts it in, the receiving actor
//! counts it out when it starts handling it. Per kind of actor the node keeps the number of
//! messages waiting now (summed over all actors of the kind) and the deepest single mailbox
//! seen since start, exported as `gridmesh_mailbox_queued{kind}` and
//! `gridmesh_mailbox_high_water{kind}` and reported by `AdminService.GetNodeStats`.
//!
//! Only messages a sender counted are counted out (the receiver decrements in the same match
//! arms), and a mailbox whose actor is gone is [closed](Mailbox::close) so its remainder
//! leaves the total.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kinds of actors whose mailboxes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxKind {
    /// `ShardSupervisor`: one `Ingest` message per batch and shard.
    Shard,
    /// `MeterActor`: one message per batch and meter, plus status queries.
    Meter,
    /// `FeederSupervisor`: one `Updates` message per batch and feeder.
    FeederSupervisor,
    /// `FeederActor`: the updates and queries routed to one feeder.
    Feeder,
}

impl MailboxKind {
    /// Every kind, in the order of [`Mailboxes::snapshot`].
    pub const ALL: [MailboxKind; 4] = [
        MailboxKind::Shard,
        MailboxKind::Meter,
        MailboxKind::FeederSupervisor,
        MailboxKind::Feeder,
    ];

    /// The label value in metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            MailboxKind::Shard => "shard",
            MailboxKind::Meter => "meter",
            MailboxKind::FeederSupervisor => "feeder_supervisor",
            MailboxKind::Feeder => "feeder",
        }
    }

    fn index(self) -> usize {
        match self {
            MailboxKind::Shard => 0,
            MailboxKind::Meter => 1,
            MailboxKind::FeederSupervisor => 2,
            MailboxKind::Feeder => 3,
        }
    }
}

/// Totals of one kind.
#[derive(Debug, Default)]
struct KindTotals {
    queued: AtomicU64,
    high_water: AtomicU64,
}

/// The node's mailbox counters, one set per [`MailboxKind`].
#[derive(Debug, Default)]
pub struct Mailboxes {
    kinds: [Arc<KindTotals>; 4],
}

/// What one kind's counters say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxSnapshot {
    /// The kind.
    pub kind: MailboxKind,
    /// Messages waiting now, summed over the kind's actors.
    pub queued: u64,
    /// Most messages seen waiting in one actor's mailbox since start.
    pub high_water: u64,
}

impl Mailboxes {
    /// A counter for one new actor of `kind`.
    pub fn open(&self, kind: MailboxKind) -> Mailbox {
        Mailbox {
            depth: Arc::new(AtomicU64::new(0)),
            totals: self.kinds[kind.index()].clone(),
        }
    }

    /// The counters of every kind.
    pub fn snapshot(&self) -> Vec<MailboxSnapshot> {
        MailboxKind::ALL
            .iter()
            .map(|&kind| {
                let totals = &self.kinds[kind.index()];
                MailboxSnapshot {
                    kind,
                    queued: totals.queued.load(Ordering::Relaxed),
                    high_water: totals.high_water.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// The depth counter of one actor's mailbox, shared by its senders and the actor.
#[derive(Debug, Clone)]
pub struct Mailbox {
    depth: Arc<AtomicU64>,
    totals: Arc<KindTotals>,
}

impl Mailbox {
    /// A message is about to be sent. Call before the send, so the receiver cannot count it
    /// out first; call [`Mailbox::received`] when the send fails.
    pub fn sent(&self) {
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        self.totals.queued.fetch_add(1, Ordering::Relaxed);
        self.totals.high_water.fetch_max(depth, Ordering::Relaxed);
    }

    /// A counted message was taken out (or its send failed).
    pub fn received(&self) {
        let taken = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .is_ok();
        if taken {
            self.totals.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Messages waiting now.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// The actor is gone: what still waited in its mailbox was dropped with it.
    pub fn close(&self) {
        let left = self.depth.swap(0, Ordering::Relaxed);
        self.totals.queued.fetch_sub(left, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_total_and_high_water_follow_sends_and_receives() {
        let boxes = Mailboxes::default();
        let a = boxes.open(MailboxKind::Meter);
        let b = boxes.open(MailboxKind::Meter);
        for _ in 0..3 {
            a.sent();
        }
        b.sent();
        a.received();
        let meter = boxes.snapshot()[1];
        assert_eq!((meter.queued, meter.high_water), (3, 3));
        assert_eq!((a.depth(), b.depth()), (2, 1));
        // A receive nobody counted in changes nothing.
        b.received();
        b.received();
        assert_eq!(boxes.snapshot()[1].queued, 2);
        // Closing drops the remainder from the total; the high-water mark stays.
        a.close();
        let meter = boxes.snapshot()[1];
        assert_eq!((meter.queued, meter.high_water), (0, 3));
        assert_eq!(boxes.snapshot()[0].queued, 0, "other kinds untouched");
    }
}
