//! The `gridmesh` node: configuration loading, the gRPC and HTTP servers, and the CLI
//! subcommands (serve, demo, simulate, topology, query). This crate wires the others together
//! and owns no domain logic of its own.

pub mod admin;
pub mod alerts_cli;
pub mod authn;
pub mod bootstrap;
pub mod cli;
pub mod connect;
pub mod demo;
pub mod http;
pub mod load;
pub mod scope;
pub mod secrets;
pub mod server;
pub mod services;
pub mod sim;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod users;

pub use gridmesh_actors::status;
