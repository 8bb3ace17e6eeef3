//! The one place where internal errors become gRPC statuses.
//!
//! Messages are written for the caller: they say what was wrong with the request and what to
//! do, and never include internals such as file paths (those go to the log instead).

use crate::ingest::IngestError;
use crate::query::QueryError;
use crate::registry::RegistryError;
use tonic::Status;

/// Converts an ingest error.
pub fn ingest(error: IngestError) -> Status {
    match &error {
        IngestError::Empty { .. } | IngestError::TooLarge { .. } => {
            Status::invalid_argument(error.to_string())
        }
        IngestError::Saturated { .. } => Status::resource_exhausted(error.to_string()),
        IngestError::ShuttingDown
        | IngestError::AckTimeout { .. }
        | IngestError::Unreplicated { .. } => Status::unavailable(error.to_string()),
    }
}

/// Converts a registry error.
pub fn registry(error: RegistryError) -> Status {
    match &error {
        RegistryError::Invalid(_) => Status::invalid_argument(error.to_string()),
        RegistryError::UnknownFeeder { .. } => Status::failed_precondition(error.to_string()),
        RegistryError::Store(e) => internal(e),
        RegistryError::Write(e) => {
            tracing::error!(error = %e, "registry write failed");
            Status::unavailable("the registry could not be written; try again")
        }
    }
}

/// Converts a query error.
pub fn query(error: QueryError) -> Status {
    match &error {
        QueryError::Invalid(_) => Status::invalid_argument(error.to_string()),
        QueryError::NotFound { .. } => Status::not_found(error.to_string()),
        QueryError::Store(e) => internal(e),
    }
}

/// A storage failure: logged in full, reported without details.
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error answering a request");
    Status::internal("internal storage error; see the node log")
}

/// An actor could not be reached in time.
pub fn actor_unavailable(what: &str) -> Status {
    Status::unavailable(format!("{what} did not answer in time; try again"))
}

/// Runs a synchronous store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(&e))?
}
