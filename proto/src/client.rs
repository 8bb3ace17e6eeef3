//! The GridMesh Rust client: one way to talk gRPC to a node, shared by `gridmesh simulate`, the
//! demo, the integration tests and the chaos harness.
//!
//! Pushing is retried on `UNAVAILABLE` and `RESOURCE_EXHAUSTED` with exponential backoff and
//! full jitter. That is safe because ingest is idempotent: a reading sent twice is stored once
//! and acknowledged as a duplicate the second time.
//!
//! **Credentials** ([`Credentials`], passed with [`Client::connect_with`]): a bearer token
//! (an API token, or an access token from elsewhere) is sent as is; a user name and password
//! log in once at connect and the client then keeps a valid access token by itself: a task
//! refreshes it at two thirds of its lifetime and logs in again if the session has ended. The
//! task stops when the last clone of the client is dropped. [`Client::connect`] connects
//! without credentials (only health, reflection and Login then work).
//!
//! **TLS** ([`ClientTls`]): `https://` addresses, or any address with TLS options, connect
//! over TLS, verifying the node's certificate against the given CA.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rand::Rng;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::alert_service_client::AlertServiceClient;
use crate::v1::auth_service_client::AuthServiceClient;
use crate::v1::ingest_service_client::IngestServiceClient;
use crate::v1::query_service_client::QueryServiceClient;
use crate::v1::registry_service_client::RegistryServiceClient;
use crate::v1::{LoginRequest, PushAck, ReadingBatch, RefreshRequest, TokenPair};

/// How a client authenticates.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// A bearer token (API token or access token), sent unchanged.
    Token(String),
    /// Log in with a password and keep the access token fresh.
    Password {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl Credentials {
    /// Password credentials.
    pub fn password(user: &str, password: &str) -> Self {
        Credentials::Password {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// Token credentials.
    pub fn token(token: &str) -> Self {
        Credentials::Token(token.to_owned())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Password { user, .. } => {
                write!(f, "Password {{ user: {user:?}, password: <redacted> }}")
            }
        }
    }
}

/// TLS settings of a client.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM of the CA that signed the node's certificate (`None`: the system's roots are not
    /// built in, so give one).
    pub ca_pem: Option<Vec<u8>>,
    /// Name to verify in the node's certificate; default: the host of the address.
    pub domain: Option<String>,
    /// Client certificate and key (PEM), for nodes that require mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Everything [`Client::connect_with`] needs besides the address.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// How to authenticate.
    pub credentials: Credentials,
    /// TLS, when the node serves it.
    pub tls: Option<ClientTls>,
}

impl From<Credentials> for ConnectOptions {
    fn from(credentials: Credentials) -> Self {
        Self {
            credentials,
            tls: None,
        }
    }
}

/// The current bearer header value, shared by every stub of a client.
type TokenCell = Arc<RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerInterceptor {
    token: TokenCell,
}

impl std::fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerInterceptor(<redacted>)")
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(value) = token {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A channel that authenticates every call.
pub type AuthChannel = InterceptedService<Channel, BearerInterceptor>;

fn bearer(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, ClientError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::Status(Status::invalid_argument("the token is not ASCII")))
}

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

/// A connection to one GridMesh node. Cloning is cheap and shares the connection (and the
/// credentials).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: TokenCell,
    retry: RetryPolicy,
    /// Keeps the refresher running while any clone lives.
    _session: Option<Arc<SessionKeeper>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Owned by the clients of a password login; the refresher holds only a weak reference.
#[derive(Debug)]
struct SessionKeeper;

fn endpoint(addr: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let bad = |message: String| ClientError::BadAddress {
        addr: addr.to_owned(),
        message,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| bad(e.to_string()))?;
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(endpoint)
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`) without credentials.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects to `addr` with credentials and optional TLS (see the module docs).
    pub async fn connect_with(
        addr: &str,
        options: impl Into<ConnectOptions>,
    ) -> Result<Self, ClientError> {
        let options = options.into();
        let channel = endpoint(addr, options.tls.as_ref())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let token: TokenCell = Arc::new(RwLock::new(None));
        let mut client = Self {
            channel,
            token,
            retry: RetryPolicy::default(),
            _session: None,
        };
        match options.credentials {
            Credentials::None => {}
            Credentials::Token(token) => client.set_token(&token)?,
            Credentials::Password { user, password } => {
                let pair = client.login(&user, &password).await?;
                client.set_token(&pair.access_token)?;
                let keeper = Arc::new(SessionKeeper);
                tokio::spawn(keep_fresh(
                    client.clone(),
                    Arc::downgrade(&keeper),
                    pair,
                    user,
                    password,
                ));
                client._session = Some(keeper);
            }
        }
        Ok(client)
    }

    /// Uses `token` for every later call (of this client and its clones).
    pub fn set_token(&self, token: &str) -> Result<(), ClientError> {
        let value = bearer(token)?;
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
        Ok(())
    }

    /// Logs in (without changing the token this client uses).
    pub async fn login(&self, user: &str, password: &str) -> Result<TokenPair, ClientError> {
        let request = LoginRequest {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        Ok(self.auth().login(request).await?.into_inner())
    }

    /// The auth stub.
    pub fn auth(&self) -> AuthServiceClient<AuthChannel> {
        AuthServiceClient::new(self.intercepted())
    }

    fn intercepted(&self) -> AuthChannel {
        InterceptedService::new(
            self.channel.clone(),
            BearerInterceptor {
                token: self.token.clone(),
            },
        )
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The ingest stub.
    pub fn ingest(&self) -> IngestServiceClient<AuthChannel> {
        IngestServiceClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The registry stub.
    pub fn registry(&self) -> RegistryServiceClient<AuthChannel> {
        RegistryServiceClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The query stub.
    pub fn query(&self) -> QueryServiceClient<AuthChannel> {
        QueryServiceClient::new(self.intercepted()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The admin stub.
    pub fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.intercepted()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The alert stub.
    pub fn alerts(&self) -> AlertServiceClient<AuthChannel> {
        AlertServiceClient::new(self.intercepted()).max_decoding_message_size(MAX_MESSAGE_BYTES)
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

/// Keeps a password client's access token fresh: refreshes at two thirds of its lifetime, logs
/// in again when the session has ended, and stops when the client is gone.
async fn keep_fresh(
    client: Client,
    alive: Weak<SessionKeeper>,
    mut pair: TokenPair,
    user: String,
    password: String,
) {
    // The task must not keep the client's session alive itself: hold only the channel.
    let client = Client {
        _session: None,
        ..client
    };
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let left = (pair.access_expires_ms - now_ms).max(0) as u64;
        let mut wait = Duration::from_millis(left * 2 / 3).max(Duration::from_secs(1));
        while !wait.is_zero() {
            let step = wait.min(Duration::from_millis(500));
            tokio::time::sleep(step).await;
            wait -= step;
            if alive.upgrade().is_none() {
                return;
            }
        }
        let refreshed = client
            .auth()
            .refresh(RefreshRequest {
                refresh_token: pair.refresh_token.clone(),
            })
            .await;
        let next = match refreshed {
            Ok(next) => Ok(next.into_inner()),
            Err(_) => client.login(&user, &password).await,
        };
        match next {
            Ok(next) => {
                if client.set_token(&next.access_token).is_ok() {
                    pair = next;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the access token; retrying");
                pair.access_expires_ms = now_ms + 3_000;
            }
        }
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
