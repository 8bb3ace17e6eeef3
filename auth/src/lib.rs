//! GridMesh security logic, kept free of I/O so that it can be tested exhaustively:
//!
//! - [`role`]: the five roles and what a principal is (user, roles, feeder scope);
//! - [`permissions`]: the one permission table every gRPC method is checked against;
//! - [`password`]: argon2id hashing with documented parameters, and the password policy;
//! - [`token`]: the JWT key ring (`kid` for rotation), issuing and strict validation;
//! - [`throttle`]: exponential backoff after failed logins;
//! - [`secret`]: secrets that never print, and random identifiers.
//!
//! The actors crate stores users and sessions and applies changes on every node; the node
//! crate enforces the table in one tower layer. See `docs/architecture.md#security`.

pub mod password;
pub mod permissions;
pub mod role;
pub mod secret;
pub mod throttle;
pub mod token;

pub use permissions::{Access, Decision, check, rule_for};
pub use role::{Principal, Role};
pub use secret::Secret;
