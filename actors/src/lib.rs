//! The GridMesh actor system of one node.
//!
//! ```text
//! NodeSupervisor                      root; escalation ends the process (exit code 1)
//! ├── ShardSupervisor × shards        meters hashed into a fixed number of shards
//! │     └── MeterActor × active       one per active meter: validation, state, writes
//! ├── FeederSupervisor
//! │     └── FeederActor × active      live feeder load from meter contributions
//! └── SessionSupervisor
//!       └── SessionActor × sessions   login sessions owned here: activity, idle, refresh
//! storage writer (thread)             group commit: ack only after fsync
//! ```
//!
//! A batch travels: gRPC → [`ingest::IngestPipeline`] (admission, shape checks, split by
//! shard) → [`shard::ShardSupervisor`] (activation) → [`meter::MeterActor`] (decisions) →
//! [`writer`] (one atomic batch + fsync per group) → ack. See `docs/architecture.md`.
//!
//! Deciding logic is pure and lives apart from the actors: [`validation`], [`buckets`],
//! [`placement`], [`restart`].

pub mod alerts;
pub mod anomaly;
pub mod api;
pub mod auth;
pub mod buckets;
pub mod cluster;
pub mod context;
pub mod daily;
pub mod feeder;
pub mod grid;
pub mod ingest;
pub mod keys;
pub mod mailbox;
pub mod membership;
pub mod meter;
pub mod node;
pub mod notify;
pub mod placement;
pub mod query;
pub mod recent;
pub mod registry;
pub mod repair;
pub mod replica;
pub mod replication;
pub mod restart;
pub mod session;
pub mod shard;
pub mod status;
pub mod storage;
pub mod validation;
pub mod writer;
