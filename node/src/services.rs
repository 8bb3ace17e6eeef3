//! gRPC service implementations. Each is a thin adapter: it checks request fields, calls the
//! actor system or the store, and maps errors through [`crate::status`].

pub mod ingest;
pub mod query;
pub mod registry;

/// Runs a synchronous store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::status::internal(&e))?
}
