//! The GridMesh Rust client: one way to talk gRPC to a node, shared by `gridmesh simulate`, the
//! demo, the integration tests and the chaos harness.
//!
//! Pushing is retried on `UNAVAILABLE` and `RESOURCE_EXHAUSTED` with exponential backoff and
//! full jitter. That is safe because ingest is idempotent: a reading sent twice is stored once
//! and acknowledged as a duplicate the second time.

use std::time::Duration;

use rand::Rng;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::alert_service_client::AlertServiceClient;
use crate::v1::ingest_service_client::IngestServiceClient;
use crate::v1::query_service_client::QueryServiceClient;
use crate::v1::registry_service_client::RegistryServiceClient;
use crate::v1::{PushAck, ReadingBatch};

/// Largest message the client sends or accepts, matching the node's default limit.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the client layer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a valid URI.
    #[error("invalid node address {addr:?}: {message}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// Why it is invalid.
        message: String,
    },
    /// The TCP/HTTP2 connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The node answered with an error status (after any retries).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

/// How pushes are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles per attempt.
    pub initial_backoff: Duration,
    /// Largest backoff cap.
    pub max_backoff: Duration,
    /// Longest one attempt may take before it is abandoned with DEADLINE_EXCEEDED (which is
    /// not retried: the batch may or may not have been stored). `None` waits as long as the
    /// node takes; a hung node then hangs the caller.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: every error is returned as it came.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The sleep before retry number `attempt` (1-based): uniformly random up to the capped
    /// exponential bound ("full jitter"), so that many clients do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Whether a status is worth retrying unchanged.
pub fn is_retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
}

/// A connection to one GridMesh node. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    retry: RetryPolicy,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::BadAddress {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            channel,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The ingest stub.
    pub fn ingest(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The registry stub.
    pub fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The query stub.
    pub fn query(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The admin stub.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The alert stub.
    pub fn alerts(&self) -> AlertServiceClient<Channel> {
        AlertServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Pushes one batch, retrying transient errors per the policy. Returns the ack and how
    /// many attempts it took.
    pub async fn push_batch(&self, batch: ReadingBatch) -> Result<(PushAck, u32), ClientError> {
        let mut ingest = self.ingest();
        let mut attempt = 1;
        loop {
            let call = ingest.push_batch(batch.clone());
            let result = match self.retry.attempt_timeout {
                Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer within {limit:?}"
                    )))
                }),
                None => call.await,
            };
            match result {
                Ok(ack) => return Ok((ack.into_inner(), attempt)),
                Err(status) if is_retryable(&status) && attempt < self.retry.max_attempts => {
                    tracing::debug!(attempt, code = ?status.code(), "push retry");
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Opens a `Push` stream: batches sent on the returned sender are acknowledged, one ack per
    /// batch, on the returned stream. `window` bounds the batches the caller may queue locally.
    pub async fn push_stream(
        &self,
        window: usize,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<ReadingBatch>,
            tonic::Streaming<PushAck>,
        ),
        ClientError,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(window.max(1));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let acks = self.ingest().push(stream).await?.into_inner();
        Ok((tx, acks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_capped_exponential() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            let cap = policy
                .initial_backoff
                .saturating_mul(1 << (attempt - 1).min(16));
            assert!(policy.backoff(attempt) <= cap.min(policy.max_backoff));
        }
    }

    #[test]
    fn only_transient_codes_are_retried() {
        assert!(is_retryable(&Status::unavailable("down")));
        assert!(is_retryable(&Status::resource_exhausted("busy")));
        assert!(!is_retryable(&Status::invalid_argument("bad")));
        assert!(!is_retryable(&Status::not_found("who")));
    }
}
