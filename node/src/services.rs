//! gRPC service implementations. Each is a thin adapter: it checks request fields, calls the
//! actor system or the store, and maps errors through [`crate::status`].

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod ingest;
pub mod query;
pub mod registry;

pub(crate) use gridmesh_actors::status::blocking;
