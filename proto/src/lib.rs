//! The `gridmesh.v1` API: generated protobuf and gRPC code, identifier rules, and the one
//! Rust client that the CLI, the simulator, the tests and the chaos harness all share.
//!
//! The internal storage records (`gridmesh.internal.v1`) are generated here too so that every
//! crate encodes them the same way; they are not part of the public API.

pub mod client;
pub mod ids;

/// Generated code, nested as the protobuf packages are so that cross-package references
/// (`gridmesh.internal.v1` messages holding `gridmesh.v1` ones) resolve.
#[allow(unreachable_pub)]
mod generated {
    pub mod gridmesh {
        #[allow(missing_docs, clippy::all, unreachable_pub)]
        pub mod v1 {
            tonic::include_proto!("gridmesh.v1");
        }
        pub mod internal {
            #[allow(missing_docs, clippy::all, unreachable_pub)]
            pub mod v1 {
                tonic::include_proto!("gridmesh.internal.v1");
            }
        }
    }
}

/// Generated code of the public API, package `gridmesh.v1`.
pub use generated::gridmesh::v1;

/// Generated records of the on-disk format and the node-to-node messages, package
/// `gridmesh.internal.v1`.
pub use generated::gridmesh::internal::v1 as internal;

/// Encoded `FileDescriptorSet` of every GridMesh proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gridmesh_descriptor");

/// Milliseconds since the Unix epoch of 2000-01-01T00:00:00Z, the earliest timestamp accepted.
pub const EARLIEST_TS_MS: i64 = 946_684_800_000;
