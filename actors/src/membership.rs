//! The membership view and failure detector of one node. Pure: time comes in as arguments,
//! events go out as return values; the cluster actor does the I/O.
//!
//! Every node heartbeats every peer over the cluster connection. A peer unheard for
//! `suspect_after` is **suspect** (still an owner: a slow peer should not move shards); unheard
//! for `down_after`, or whose connection closed, it is **down** and its shards move. Each node
//! has an **incarnation**, a number that only grows: it is at least the start time in ms (and
//! above any earlier one, which the node persists), and it grows again whenever the node learns
//! that the others may have declared it down:
//!
//! - it notices its own stall (SIGSTOP, a frozen VM): two ticks further apart than
//!   `down_after`;
//! - a peer's heartbeat says "you are down in my view at your current incarnation" (after a
//!   partition or a dropped connection).
//!
//! A down member comes back only with a higher incarnation, so a paused or cut-off node always
//! returns as a new member, never as if nothing happened. The **epoch** grows on every change
//! of the view; the shard map carries it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A member's state in this node's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Heard from within `suspect_after`.
    Alive,
    /// Silent for longer than `suspect_after`; still owns its shards.
    Suspect,
    /// Silent for longer than `down_after`, or its connection closed; owns nothing.
    Down,
}

impl MemberState {
    /// Lower-case name, as shown by admin tools.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
        }
    }
}

/// Addresses a member serves on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addresses {
    /// gRPC API.
    pub grpc: String,
    /// Cluster (ractor_cluster) listener.
    pub cluster: String,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Latest incarnation heard.
    pub incarnation: u64,
    /// State in this view.
    pub state: MemberState,
    /// Where it serves.
    pub addresses: Addresses,
    /// Whether it is moving its shards away before stopping.
    pub draining: bool,
    /// Whether it is still joining (copying the registry): it owns no shards yet.
    pub joining: bool,
    /// When it was last heard (for `self`: the last tick).
    pub last_heard: Instant,
}

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender.
    pub from: String,
    /// Sender's incarnation.
    pub incarnation: u64,
    /// Sender's addresses.
    pub addresses: Addresses,
    /// Whether the sender drains.
    pub draining: bool,
    /// Whether the sender is still joining.
    pub joining: bool,
    /// The incarnation of the recipient at which the sender holds it down; 0 when it does not.
    pub you_are_down_at: u64,
}

/// A change of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member never seen before.
    Joined(String),
    /// A member came back with a new incarnation (after being down, or restarted).
    Returned(String, u64),
    /// A member went silent past `suspect_after`.
    Suspected(String),
    /// A suspect member was heard again.
    Recovered(String),
    /// A member went silent past `down_after` or lost its connection.
    Down(String),
    /// A member started or stopped draining.
    Draining(String, bool),
    /// A member finished joining and now owns shards.
    Ready(String),
    /// This node took a new incarnation (it stalled, or a peer held it down).
    NewIncarnation(u64),
}

/// Failure-detector deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Silence before a peer is suspect.
    pub suspect_after: Duration,
    /// Silence before a peer is down; also the tick gap that means this node stalled.
    pub down_after: Duration,
}

/// This node's membership view.
#[derive(Debug, Clone)]
pub struct Membership {
    me: Member,
    peers: BTreeMap<String, Member>,
    epoch: u64,
    deadlines: Deadlines,
}

impl Membership {
    /// A view holding only this node.
    pub fn new(
        name: &str,
        incarnation: u64,
        addresses: Addresses,
        deadlines: Deadlines,
        now: Instant,
    ) -> Self {
        Self {
            me: Member {
                name: name.to_owned(),
                incarnation,
                state: MemberState::Alive,
                addresses,
                draining: false,
                joining: false,
                last_heard: now,
            },
            peers: BTreeMap::new(),
            epoch: 1,
            deadlines,
        }
    }

    /// This node.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Epoch of the view; grows on every change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every known member, this node first, then peers by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.me).chain(self.peers.values())
    }

    /// A peer by name.
    pub fn peer(&self, name: &str) -> Option<&Member> {
        self.peers.get(name)
    }

    /// Members that own shards: not down, not draining, not joining. Never empty while this
    /// node is neither draining nor joining.
    pub fn placement_members(&self) -> impl Iterator<Item = &str> {
        self.members()
            .filter(|m| m.state != MemberState::Down && !m.draining && !m.joining)
            .map(|m| m.name.as_str())
    }

    /// Members whose place in the shards' replica sets stands (see [`crate::replica`]): the
    /// placement members, plus members down for less than `hint_window` (and not draining or
    /// joining when they went down).
    pub fn home_members(&self, now: Instant, hint_window: Duration) -> impl Iterator<Item = &str> {
        self.members()
            .filter(move |m| {
                !m.draining
                    && !m.joining
                    && (m.state != MemberState::Down
                        || now.saturating_duration_since(m.last_heard) < hint_window)
            })
            .map(|m| m.name.as_str())
    }

    /// Marks this node as joining (it owns nothing until [`Membership::set_ready`]).
    pub fn set_joining(&mut self) {
        self.me.joining = true;
    }

    /// This node finished joining.
    pub fn set_ready(&mut self) -> Vec<Event> {
        if !self.me.joining {
            return Vec::new();
        }
        self.me.joining = false;
        self.epoch += 1;
        vec![Event::Ready(self.me.name.clone())]
    }

    /// Members worth talking to: not down.
    pub fn reachable_peers(&self) -> impl Iterator<Item = &Member> {
        self.peers.values().filter(|m| m.state != MemberState::Down)
    }

    /// Starts or stops draining this node.
    pub fn set_draining(&mut self, draining: bool) -> Vec<Event> {
        if self.me.draining == draining {
            return Vec::new();
        }
        self.me.draining = draining;
        self.epoch += 1;
        vec![Event::Draining(self.me.name.clone(), draining)]
    }

    /// The heartbeat to send to `peer` now.
    pub fn heartbeat_for(&self, peer: &str) -> Heartbeat {
        let you_are_down_at = match self.peers.get(peer) {
            Some(m) if m.state == MemberState::Down => m.incarnation,
            _ => 0,
        };
        Heartbeat {
            from: self.me.name.clone(),
            incarnation: self.me.incarnation,
            addresses: self.me.addresses.clone(),
            draining: self.me.draining,
            joining: self.me.joining,
            you_are_down_at,
        }
    }

    /// A heartbeat arrived.
    pub fn on_heartbeat(&mut self, hb: &Heartbeat, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if hb.from == self.me.name {
            return events;
        }
        if hb.you_are_down_at != 0 && hb.you_are_down_at >= self.me.incarnation {
            self.me.incarnation = hb.you_are_down_at + 1;
            events.push(Event::NewIncarnation(self.me.incarnation));
        }
        match self.peers.get_mut(&hb.from) {
            None => {
                self.peers.insert(
                    hb.from.clone(),
                    Member {
                        name: hb.from.clone(),
                        incarnation: hb.incarnation,
                        state: MemberState::Alive,
                        addresses: hb.addresses.clone(),
                        draining: hb.draining,
                        joining: hb.joining,
                        last_heard: now,
                    },
                );
                events.push(Event::Joined(hb.from.clone()));
            }
            Some(m) if hb.incarnation < m.incarnation => {} // from an earlier life: stale
            Some(m) => {
                if hb.incarnation > m.incarnation {
                    m.incarnation = hb.incarnation;
                    m.state = MemberState::Alive;
                    m.draining = false;
                    events.push(Event::Returned(hb.from.clone(), hb.incarnation));
                }
                match m.state {
                    // Same incarnation: it must refute (take a new one) before it counts again.
                    MemberState::Down => {}
                    MemberState::Suspect => {
                        m.state = MemberState::Alive;
                        events.push(Event::Recovered(hb.from.clone()));
                    }
                    MemberState::Alive => {}
                }
                if m.state != MemberState::Down {
                    m.last_heard = now;
                    m.addresses = hb.addresses.clone();
                    if m.draining != hb.draining {
                        m.draining = hb.draining;
                        events.push(Event::Draining(hb.from.clone(), hb.draining));
                    }
                    if m.joining != hb.joining {
                        m.joining = hb.joining;
                        if !hb.joining {
                            events.push(Event::Ready(hb.from.clone()));
                        }
                    }
                }
            }
        }
        self.epoch += events.len() as u64;
        events
    }

    /// The connection to `peer` closed: it is down now (it must refute to come back).
    pub fn on_disconnect(&mut self, peer: &str) -> Vec<Event> {
        match self.peers.get_mut(peer) {
            Some(m) if m.state != MemberState::Down => {
                m.state = MemberState::Down;
                self.epoch += 1;
                vec![Event::Down(peer.to_owned())]
            }
            _ => Vec::new(),
        }
    }

    /// Advances the failure detector to `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let gap = now.saturating_duration_since(self.me.last_heard);
        self.me.last_heard = now;
        if gap > self.deadlines.down_after {
            // This node stalled: the others have declared it down, and what it last heard of
            // them is as old as the stall. Start a new life and give every peer a fresh grace.
            self.me.incarnation += 1;
            events.push(Event::NewIncarnation(self.me.incarnation));
            for m in self.peers.values_mut() {
                m.last_heard = m.last_heard.max(now);
            }
        }
        for m in self.peers.values_mut() {
            let silence = now.saturating_duration_since(m.last_heard);
            let next = match m.state {
                MemberState::Down => continue,
                _ if silence > self.deadlines.down_after => MemberState::Down,
                MemberState::Alive if silence > self.deadlines.suspect_after => {
                    MemberState::Suspect
                }
                state => state,
            };
            if next != m.state {
                m.state = next;
                events.push(match next {
                    MemberState::Down => Event::Down(m.name.clone()),
                    _ => Event::Suspected(m.name.clone()),
                });
            }
        }
        self.epoch += events.len() as u64;
        events
    }
}

#[cfg(test)]
mod tests;
