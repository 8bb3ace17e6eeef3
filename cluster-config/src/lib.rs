//! GridMesh node configuration.
//!
//! A node is configured in three layers, later layers winning:
//!
//! 1. built-in defaults (every field below documents its default),
//! 2. an optional TOML file (`gridmesh serve --config FILE`),
//! 3. environment variables `GRIDMESH_<SECTION>__<KEY>` (for example
//!    `GRIDMESH_INGEST__AUTO_REGISTER=true`), then command-line flags applied by the binary.
//!
//! The file is versioned (`version = 1`) and unknown keys are rejected, in the file and in the
//! environment alike, so a typo never silently falls back to a default. [`Config::validate`]
//! checks the values together and explains what to change.
//!
//! The annotated reference with every key is `cluster-config/gridmesh.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod duration;

/// The only config file version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "GRIDMESH_";

/// The config file's sections, as environment overrides name them.
const SECTIONS: [&str; 12] = [
    "node",
    "ingest",
    "storage",
    "actors",
    "cluster",
    "replication",
    "auth",
    "tls",
    "alerts",
    "notify",
    "analytics",
    "log",
];

/// Alert kinds the grid rules raise (names as in `Alert.kind`).
pub const ALERT_KINDS: [&str; 14] = [
    "undervoltage",
    "overvoltage",
    "loading_high",
    "overload",
    "reverse_flow",
    "predicted_overload",
    "energy_loss",
    "energy_balance_step",
    "outage",
    "meter_silent",
    "consumption_deviation",
    "zero_run",
    "frozen_run",
    "consumption_step",
];

/// Errors loading or validating a configuration. Each message names the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or an override is not valid TOML of the expected shape.
    #[error("invalid configuration{origin}: {message}")]
    Parse {
        /// Where the bad value came from (file or environment variable).
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// The values parse but cannot work together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Config file format version. Must be 1.
    pub version: u32,
    /// Identity and listen addresses of this node.
    pub node: NodeConfig,
    /// Limits and rules applied to incoming readings.
    pub ingest: IngestConfig,
    /// Durability of the embedded store.
    pub storage: StorageConfig,
    /// Sharding and the meter actor budget.
    pub actors: ActorsConfig,
    /// Membership, failure detection and forwarding between nodes.
    pub cluster: ClusterConfig,
    /// Copies of every reading, write quorum, hinted handoff and anti-entropy.
    pub replication: ReplicationConfig,
    /// Users, tokens, sessions and where their secrets come from.
    pub auth: AuthConfig,
    /// TLS for gRPC and between nodes.
    pub tls: TlsConfig,
    /// Alert lifecycle and history.
    pub alerts: AlertsConfig,
    /// Outbound notification sinks.
    pub notify: NotifyConfig,
    /// Grid rules: voltage, loading, outages, energy balance, anomalies, forecasts.
    pub analytics: AnalyticsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Identity and listen addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name, unique in a cluster. Default `gridmesh-1`.
    pub name: String,
    /// Directory of the node's fjall keyspace; locked by the running node. Default
    /// `./gridmesh-data`.
    pub data_dir: PathBuf,
    /// gRPC listen address. Default `127.0.0.1:7100`.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for `/metrics`, `/healthz` and `/readyz`. Default `127.0.0.1:7180`.
    pub http_addr: SocketAddr,
    /// How long a graceful shutdown may take before the node gives up waiting for in-flight
    /// batches. Default `10s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// `development` (default) or `production`. Production refuses to start with a missing or
    /// well-known secret, a generated bootstrap password or a key derived from the cookie, and
    /// without TLS on gRPC (and between nodes when clustered).
    pub mode: Mode,
}

/// How strict a node is about its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Works out of the box: a missing JWT key is derived (from the cluster cookie, or a random
    /// seed kept in the data directory), a missing bootstrap password is generated and
    /// printed once, plaintext is allowed.
    Development,
    /// Every secret must be configured (file or environment) and TLS is required.
    Production,
}

/// Where a secret comes from: a file (preferred) or an environment variable. The value itself
/// never appears in the configuration, logs, metrics or errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSource {
    /// File holding the secret; surrounding whitespace is ignored. Empty: use `env`.
    pub file: PathBuf,
    /// Environment variable holding the secret when `file` is empty.
    pub env: String,
}

impl SecretSource {
    fn env(name: &str) -> Self {
        Self {
            file: PathBuf::new(),
            env: name.to_owned(),
        }
    }

    /// Where this source looks, for messages (never the value).
    pub fn describe(&self) -> String {
        if self.file.as_os_str().is_empty() {
            format!("environment variable {}", self.env)
        } else {
            format!("file {}", self.file.display())
        }
    }

    /// Reads the secret: `Ok(None)` when the source is not set at all (no file configured and
    /// the variable absent or empty). A configured file that cannot be read is an error.
    pub fn read(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let value = if self.file.as_os_str().is_empty() {
            if self.env.is_empty() {
                return Ok(None);
            }
            env(&self.env)
        } else {
            Some(
                std::fs::read_to_string(&self.file).map_err(|source| ConfigError::Read {
                    path: self.file.clone(),
                    source,
                })?,
            )
        };
        Ok(value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
    }
}

/// Users, tokens and sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of issued tokens, the only issuer accepted. Default `gridmesh`.
    pub issuer: String,
    /// `aud` of issued tokens, the only audience accepted. Default `gridmesh-api`.
    pub audience: String,
    /// JWT key file text (`<kid> <alg> <key>` lines, the first signs; see `gridmesh auth
    /// keygen`). Default: environment variable `GRIDMESH_JWT_KEYS`. Required in production.
    pub jwt_keys: SecretSource,
    /// Name of the admin created when a node starts with no users at all. Default `admin`.
    pub bootstrap_admin: String,
    /// Initial password of that admin. Default: environment variable
    /// `GRIDMESH_BOOTSTRAP_PASSWORD`; when unset (development only) one is generated and
    /// printed once on standard error. In a cluster give every node the same one.
    pub bootstrap_password: SecretSource,
    /// Lifetime of access tokens. Short, because a token is checked without asking anyone.
    /// Default `15m`.
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Longest a login session lives (its refresh token's lifetime). Default `12h`.
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// A session with no activity this long ends (its refresh is refused). Default `30m`.
    #[serde(with = "duration")]
    pub session_idle_timeout: Duration,
    /// Clock skew tolerated on token times (exp, nbf, iat). Default `30s`, at most `5m`.
    #[serde(with = "duration")]
    pub clock_skew: Duration,
    /// Longest lifetime of an API token. Default `365days`.
    #[serde(with = "duration")]
    pub api_token_max_ttl: Duration,
    /// argon2id memory cost, KiB. Default 19456 (19 MiB, OWASP's recommendation).
    pub argon2_memory_kib: u32,
    /// argon2id passes. Default 2.
    pub argon2_iterations: u32,
    /// argon2id lanes. Default 1.
    pub argon2_parallelism: u32,
    /// Failed logins in a row (per user name and per client address) before backoff.
    /// Default 3.
    pub login_free_failures: u32,
    /// First backoff delay; doubles per further failure. Default `1s`.
    #[serde(with = "duration")]
    pub login_backoff_base: Duration,
    /// Longest backoff delay. Default `5m`.
    #[serde(with = "duration")]
    pub login_backoff_max: Duration,
    /// How often each node compares its users and revocations with a peer's and copies what
    /// differs (the bound for a member that missed a change while unreachable). Default `5s`.
    #[serde(with = "duration")]
    pub sync_interval: Duration,
}

/// TLS. Certificates and keys are PEM files; `scripts/gen-certs.sh` makes a test CA and
/// certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// gRPC server certificate chain. Empty (default): gRPC is plaintext.
    pub grpc_cert_file: PathBuf,
    /// gRPC server private key. Required with `grpc_cert_file`.
    pub grpc_key_file: PathBuf,
    /// When set, gRPC clients must present a certificate signed by this CA (mutual TLS).
    pub grpc_client_ca_file: PathBuf,
    /// Node certificate for the cluster port (used as server and as client). Empty (default):
    /// node-to-node traffic is plaintext, authenticated by the cookie only.
    pub cluster_cert_file: PathBuf,
    /// Its private key.
    pub cluster_key_file: PathBuf,
    /// CA that signs every node's certificate; peers must present one (mutual TLS).
    pub cluster_ca_file: PathBuf,
    /// Name checked in peers' certificates. Empty (default): the peer's IP address.
    pub cluster_server_name: String,
    /// Longest an incoming cluster connection may take to finish its TLS handshake before it
    /// is dropped (a stalled or slow peer cannot hold the accept path). Default `5s`.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
}

/// Rules and limits for incoming readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most readings accepted in one batch; larger batches are refused whole with
    /// INVALID_ARGUMENT. Default 10 000.
    pub max_batch_readings: u32,
    /// Largest gRPC message accepted, bytes. Default 16 MiB.
    pub max_message_bytes: u32,
    /// Readings that may be in flight (received, not yet acknowledged) on the whole node. When
    /// reached, new batches get RESOURCE_EXHAUSTED. This bounds ingest memory. Default 200 000.
    pub max_inflight_readings: u32,
    /// Unacknowledged batches one `Push` stream may have; the node stops reading the stream
    /// beyond that (HTTP/2 flow control). Default 8.
    pub max_inflight_batches_per_stream: u32,
    /// How far a timestamp may be ahead of the node's clock. Default `5m`.
    #[serde(with = "duration")]
    pub future_tolerance: Duration,
    /// How far behind a meter's newest reading a late reading is still accepted. Older ones are
    /// rejected as TOO_OLD. Default `7days`.
    #[serde(with = "duration")]
    pub out_of_order_window: Duration,
    /// Register unknown meters on first reading (on a feeder named `unassigned`) instead of
    /// rejecting them. Default false.
    pub auto_register: bool,
    /// How long a batch may wait for its ack before the node answers UNAVAILABLE (the readings
    /// may or may not be stored; resending is safe). Default `30s`.
    #[serde(with = "duration")]
    pub ack_timeout: Duration,
}

/// When an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Group commit: all writes queued while the previous fsync ran are committed and synced
    /// together, then acknowledged. Durable against power loss. The default.
    Group,
    /// One fsync per write request. Durable, much slower; for comparison.
    PerBatch,
    /// No fsync: acknowledged once in the OS page cache. Survives a process crash, not a power
    /// loss. For benchmarks and throwaway demos only.
    None,
}

/// Storage durability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// When acknowledged writes are synced. Default `group`.
    pub sync: SyncMode,
    /// Extra time the group-commit writer waits for more writes before syncing, ms. 0 (the
    /// default) syncs as soon as the previous sync finished, which already batches under load;
    /// a few ms trade ack latency for fewer fsyncs.
    pub group_commit_window_ms: u64,
    /// Most write requests committed in one group. Default 4096.
    pub max_group_requests: u32,
    /// Block cache size of the keyspace, MiB. Default 64.
    pub cache_mib: u64,
    /// Journal kept on disk before the keyspaces still holding its oldest part are flushed,
    /// MiB (at least 64). A node restarted after a crash replays this much at most, so it
    /// bounds the restart time (about 75 MiB/s of replay on the project's 2-core machine);
    /// lower means more, smaller flushes of the quiet keyspaces. Default 128.
    pub max_journal_mib: u64,
}

/// Sharding and actor budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Number of shards meters are hashed into, and the unit that moves between members.
    /// Fixed for the life of a data directory (a node refuses to open a directory created
    /// with another count) and the same on every member. More shards spread ownership more
    /// evenly: with rendezvous placement a member's share and the shards a join moves vary
    /// by about √shards, so 1024 keeps a join within 1/N + 5 % of the shards while 64 moved
    /// up to 1.4 × 1/N. The active-meter budget is split per shard (`max_active_meters /
    /// shards`), which therefore varies by about ±10 % at 1024. Default 1024.
    pub shards: u32,
    /// Most meter actors resident on this node; beyond it the least recently used are
    /// passivated. Default 100 000 (about 1 GB at the measured cost per actor).
    pub max_active_meters: u32,
    /// A meter actor idle this long is passivated. Default `10m`.
    #[serde(with = "duration")]
    pub meter_idle_timeout: Duration,
    /// How often shards look for idle meters. Default `1s`.
    #[serde(with = "duration")]
    pub passivation_interval: Duration,
    /// A meter actor writes its state row (newest timestamp, registers, open 15-minute
    /// accumulator, counters) at most this often while it takes readings, and always when it
    /// stops. After an unclean stop (SIGKILL, a crash, a failed actor) the state is rebuilt
    /// from the stored readings, which always hold everything acknowledged; the counters of
    /// rejections, duplicates and corrections since the last write are lost then.
    /// `0s` writes it with every batch (one more row per reading). Default `1s`.
    #[serde(with = "duration")]
    pub state_checkpoint_interval: Duration,
    /// Restarts of one supervised child allowed within `restart_window` before its supervisor
    /// gives up and escalates. Default 3.
    pub max_restarts: u32,
    /// Window for `max_restarts`. Default `5s`.
    #[serde(with = "duration")]
    pub restart_window: Duration,
}

/// Membership, failure detection and forwarding between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Whether this node joins a cluster. When false (the default) it is a cluster of one: it
    /// owns every shard and opens no cluster port.
    pub enabled: bool,
    /// Listen address of the node-to-node (ractor_cluster) protocol. Default `127.0.0.1:7200`.
    pub listen_addr: SocketAddr,
    /// Address other nodes reach this one at, when it differs from `listen_addr` (e.g. it
    /// listens on `0.0.0.0`). Default: `listen_addr`.
    pub advertise_addr: Option<SocketAddr>,
    /// gRPC address clients reach this node at, as shown by `gridmesh admin members`.
    /// Default: `node.grpc_addr`.
    pub advertise_grpc_addr: Option<SocketAddr>,
    /// Static seeds: cluster addresses (`host:port`) of other nodes. Every node connects to
    /// every node it learns of (full mesh); listing all of them is simplest. Default empty.
    pub seeds: Vec<String>,
    /// A DNS name resolving to every node (e.g. a Kubernetes headless service) with the cluster
    /// port, as `name:port`; re-resolved while connecting. Default empty (none).
    pub seed_dns: String,
    /// File holding the cluster cookie (the shared secret peers authenticate with). Read at
    /// start; surrounding whitespace is ignored. Default empty: use `cookie_env`.
    pub cookie_file: PathBuf,
    /// Environment variable holding the cookie when `cookie_file` is empty. Default
    /// `GRIDMESH_COOKIE`. A cluster node refuses to start without a cookie.
    pub cookie_env: String,
    /// Interval between heartbeats to each peer. Default `200ms`.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is suspect (it keeps its shards). Default `800ms`.
    #[serde(with = "duration")]
    pub suspect_after: Duration,
    /// Silence after which a peer is down and its shards move; a closed connection counts at
    /// once. Default `1500ms`.
    #[serde(with = "duration")]
    pub down_after: Duration,
    /// First reconnect delay to a peer; doubles per failure (with jitter). Default `100ms`.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default `5s`.
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// Timeout of one call forwarded to another node (ingest part, query). Default `10s`.
    #[serde(with = "duration")]
    pub forward_timeout: Duration,
    /// Calls this node may have in flight to one peer; beyond it callers get UNAVAILABLE for
    /// that part. Default 64.
    pub max_inflight_per_peer: u32,
    /// Largest node-to-node frame accepted, bytes. Must exceed the largest forwarded batch.
    /// Default 64 MiB.
    pub max_frame_bytes: u64,
}

/// Replication between nodes (only used when `cluster.enabled`; a single node keeps one copy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Copies of every reading (R): the shard's primary and the next R-1 live members of its
    /// preference list. 1 to 5. Default 2. A cluster with fewer members keeps one copy per
    /// member.
    pub factor: u32,
    /// Durable copies (W) a write needs before it is acknowledged, the primary's included.
    /// 1 to `factor`. Default 2: an acknowledged reading survives the loss of any one node.
    /// With W = R every replica must answer, so a down replica is replaced by the next live
    /// member, which keeps a hint and hands the write off when the replica returns.
    pub write_quorum: u32,
    /// How long the primary waits for one replica before giving its copy to the next live
    /// member instead. Default `2s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a down member keeps its place in the shards' replica sets. Writes meant for it
    /// go to a substitute with a hint meanwhile; after this it counts as gone, and
    /// anti-entropy rebuilds its copies on the members that take its place. Default `1h`.
    #[serde(with = "duration")]
    pub hint_window: Duration,
    /// How often hinted writes are offered to members that are back. Default `1s`.
    #[serde(with = "duration")]
    pub handoff_interval: Duration,
    /// How often replicas compare digests of each shard and copy what is missing. Default
    /// `30s`. A member that just returned or joined is compared with at once.
    #[serde(with = "duration")]
    pub anti_entropy_interval: Duration,
    /// Bytes per second that hinted handoff and anti-entropy together may send. Default
    /// 16 MiB/s.
    pub repair_bytes_per_s: u64,
}

/// Which voltage standard applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoltageStandard {
    /// ANSI C84.1 Range A: 0.95–1.05 pu on 15-minute means.
    AnsiRangeA,
    /// ANSI C84.1 Range B: 0.917–1.058 pu on 15-minute means.
    AnsiRangeB,
    /// EN 50160: ±10 % on 10-minute means.
    En50160,
}

/// The grid rules (see `docs/analytics.md` for each rule and its evaluation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Run the grid rules at all. Default true.
    pub enabled: bool,
    /// Voltage standard, per deployment: `ansi_range_a` (default), `ansi_range_b`, `en50160`.
    pub voltage_standard: VoltageStandard,
    /// Consecutive windows outside the range before a voltage alert. Default 2.
    pub voltage_raise_after_windows: u32,
    /// Consecutive windows inside before it clears. Default 2.
    pub voltage_clear_after_windows: u32,
    /// Feeder loading warning above this, % of rating. Default 90.
    pub loading_warn_percent: f64,
    /// Overload above this, % of rating. Default 100.
    pub loading_overload_percent: f64,
    /// 15-minute windows above a loading threshold before its alert. Default 2.
    pub loading_raise_after_windows: u32,
    /// Reverse power flow when net P is below minus this share of the rating, %. Default 5.
    pub reverse_flow_margin_percent: f64,
    /// How long after an interval's end its feeder load is judged (late readings). Default
    /// `15m`.
    #[serde(with = "duration")]
    pub feeder_settle: Duration,
    /// Energy balance: a daily loss ratio above this is flagged (when sustained over
    /// `balance_days_sustained` days). Default 0.08.
    pub balance_loss_band: f64,
    /// Days the loss band must be exceeded in a row. Default 3.
    pub balance_days_sustained: u32,
    /// A meter down this long is an outage (shorter ones are momentary). Default `5m`.
    #[serde(with = "duration")]
    pub outage_confirm: Duration,
    /// A meter whose newest reading lags most of its feeder's by this much is silent (a
    /// communications problem unless many go quiet together). Keep it above the delay the
    /// head-ends deliver with. Default `2h`.
    #[serde(with = "duration")]
    pub meter_silent_after: Duration,
    /// Raise per-meter anomaly alerts (consumption deviation, zero and frozen runs, persistent
    /// steps) live from the meter actors. Each active meter then holds about 11 KiB of
    /// detector state, persisted when it passivates. Default true.
    pub anomaly_alerts: bool,
    /// Robust z-score above which a 15-minute value is a consumption deviation. Default 10.
    pub anomaly_z_threshold: f64,
    /// Weeks of history the feeder load forecast is fitted on. Default 12.
    pub forecast_training_weeks: u32,
    /// Minutes east of UTC that define local days (energy balance, daily aggregates).
    /// Default 0.
    pub utc_offset_minutes: i32,
    /// Time-of-use calendar for daily aggregates and billing determinants
    /// (`[[analytics.tariff]]`): periods with a bucket name, optional months (1-12) and
    /// weekdays (`Mon` … `Sun`), and `start_minute`..`end_minute` of the local day. Every
    /// minute of every day must be in exactly one period. Default: one `flat` bucket.
    pub tariff: Vec<gridmesh_analytics::tariff::TouPeriod>,
}

/// Alert lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A cleared alert resolves itself once its condition stayed clear this long (node clock;
    /// a new raise meanwhile keeps it open). `0s` resolves at the clear. Default `15m`.
    #[serde(with = "duration")]
    pub auto_resolve_after: Duration,
    /// Alert changes kept per node for `WatchAlerts` to resume from. Default 100 000.
    pub history: u64,
}

/// Outbound notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Webhook sinks (`[[notify.sinks]]`). Default none.
    pub sinks: Vec<SinkConfig>,
    /// Timeout of one delivery. Default `5s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Attempts per notification before it becomes a dead letter. Default 6.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with full jitter. Default `500ms`.
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    /// Longest retry delay. Default `60s`.
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Consecutive failures that open a sink's circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker waits before one probe. Default `30s`.
    #[serde(with = "duration")]
    pub breaker_cooldown: Duration,
    /// Notifications queued per sink; beyond it they go straight to the dead letters.
    /// Default 10 000.
    pub queue: u32,
}

/// One webhook: it receives a JSON POST per notified alert change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name (metrics and dead letters use it).
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Lowest severity sent: `info`, `minor`, `major` or `critical`. Default `info`.
    #[serde(default = "default_min_severity")]
    pub min_severity: String,
    /// Only these alert kinds; empty = all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only alerts of these feeders; empty = all.
    #[serde(default)]
    pub feeders: Vec<String>,
}

fn default_min_severity() -> String {
    "info".to_owned()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `gridmesh=debug,info`. `RUST_LOG` wins when set.
    /// Default `info`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            node: NodeConfig::default(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            actors: ActorsConfig::default(),
            cluster: ClusterConfig::default(),
            replication: ReplicationConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            alerts: AlertsConfig::default(),
            notify: NotifyConfig::default(),
            analytics: AnalyticsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "gridmesh-1".to_owned(),
            data_dir: PathBuf::from("./gridmesh-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7180)),
            shutdown_grace: Duration::from_secs(10),
            mode: Mode::Development,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_readings: 10_000,
            max_message_bytes: 16 * 1024 * 1024,
            max_inflight_readings: 200_000,
            max_inflight_batches_per_stream: 8,
            future_tolerance: Duration::from_secs(5 * 60),
            out_of_order_window: Duration::from_secs(7 * 24 * 3600),
            auto_register: false,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sync: SyncMode::Group,
            group_commit_window_ms: 0,
            max_group_requests: 4096,
            cache_mib: 64,
            max_journal_mib: 128,
        }
    }
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            shards: 1024,
            max_active_meters: 100_000,
            meter_idle_timeout: Duration::from_secs(600),
            passivation_interval: Duration::from_secs(1),
            state_checkpoint_interval: Duration::from_secs(1),
            max_restarts: 3,
            restart_window: Duration::from_secs(5),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7200)),
            advertise_addr: None,
            advertise_grpc_addr: None,
            seeds: Vec::new(),
            seed_dns: String::new(),
            cookie_file: PathBuf::new(),
            cookie_env: "GRIDMESH_COOKIE".to_owned(),
            heartbeat_interval: Duration::from_millis(200),
            suspect_after: Duration::from_millis(800),
            down_after: Duration::from_millis(1500),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            forward_timeout: Duration::from_secs(10),
            max_inflight_per_peer: 64,
            max_frame_bytes: 64 << 20,
        }
    }
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            factor: 2,
            write_quorum: 2,
            timeout: Duration::from_secs(2),
            hint_window: Duration::from_secs(3600),
            handoff_interval: Duration::from_secs(1),
            anti_entropy_interval: Duration::from_secs(30),
            repair_bytes_per_s: 16 << 20,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "gridmesh".to_owned(),
            audience: "gridmesh-api".to_owned(),
            jwt_keys: SecretSource::env("GRIDMESH_JWT_KEYS"),
            bootstrap_admin: "admin".to_owned(),
            bootstrap_password: SecretSource::env("GRIDMESH_BOOTSTRAP_PASSWORD"),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(12 * 3600),
            session_idle_timeout: Duration::from_secs(30 * 60),
            clock_skew: Duration::from_secs(30),
            api_token_max_ttl: Duration::from_secs(365 * 24 * 3600),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            login_free_failures: 3,
            login_backoff_base: Duration::from_secs(1),
            login_backoff_max: Duration::from_secs(300),
            sync_interval: Duration::from_secs(5),
        }
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            voltage_standard: VoltageStandard::AnsiRangeA,
            voltage_raise_after_windows: 2,
            voltage_clear_after_windows: 2,
            loading_warn_percent: 90.0,
            loading_overload_percent: 100.0,
            loading_raise_after_windows: 2,
            reverse_flow_margin_percent: 5.0,
            feeder_settle: Duration::from_secs(900),
            balance_loss_band: 0.08,
            balance_days_sustained: 3,
            outage_confirm: Duration::from_secs(300),
            meter_silent_after: Duration::from_secs(7200),
            anomaly_alerts: true,
            anomaly_z_threshold: 10.0,
            forecast_training_weeks: 12,
            utc_offset_minutes: 0,
            tariff: vec![gridmesh_analytics::tariff::TouPeriod {
                bucket: "flat".to_owned(),
                months: Vec::new(),
                weekdays: Vec::new(),
                start_minute: 0,
                end_minute: 1440,
            }],
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            grpc_cert_file: PathBuf::new(),
            grpc_key_file: PathBuf::new(),
            grpc_client_ca_file: PathBuf::new(),
            cluster_cert_file: PathBuf::new(),
            cluster_key_file: PathBuf::new(),
            cluster_ca_file: PathBuf::new(),
            cluster_server_name: String::new(),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

impl AnalyticsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        check_range(
            "analytics.voltage_raise_after_windows",
            self.voltage_raise_after_windows.into(),
            1,
            1000,
        )?;
        check_range(
            "analytics.voltage_clear_after_windows",
            self.voltage_clear_after_windows.into(),
            1,
            1000,
        )?;
        check_range(
            "analytics.loading_raise_after_windows",
            self.loading_raise_after_windows.into(),
            1,
            1000,
        )?;
        check_range(
            "analytics.balance_days_sustained",
            self.balance_days_sustained.into(),
            1,
            365,
        )?;
        check_range(
            "analytics.forecast_training_weeks",
            self.forecast_training_weeks.into(),
            3,
            104,
        )?;
        if !(self.loading_warn_percent > 0.0
            && self.loading_warn_percent <= self.loading_overload_percent
            && self.loading_overload_percent.is_finite())
        {
            return invalid(format!(
                "analytics.loading_warn_percent ({}) must be above 0 and at most \
                 analytics.loading_overload_percent ({})",
                self.loading_warn_percent, self.loading_overload_percent
            ));
        }
        for (key, v, max) in [
            (
                "analytics.reverse_flow_margin_percent",
                self.reverse_flow_margin_percent,
                100.0,
            ),
            ("analytics.balance_loss_band", self.balance_loss_band, 1.0),
            (
                "analytics.anomaly_z_threshold",
                self.anomaly_z_threshold,
                1000.0,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return invalid(format!("{key} = {v} must be above 0 and at most {max}"));
            }
        }
        if self.utc_offset_minutes.abs() > 14 * 60 {
            return invalid(format!(
                "analytics.utc_offset_minutes = {} is beyond ±14 h",
                self.utc_offset_minutes
            ));
        }
        for (key, value) in [
            ("analytics.feeder_settle", self.feeder_settle),
            ("analytics.meter_silent_after", self.meter_silent_after),
        ] {
            if value.is_zero() {
                return invalid(format!("{key} must be more than 0s"));
            }
        }
        self.tariff_calendar()
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid(format!("analytics.tariff: {e}")))
    }

    /// The validated time-of-use calendar.
    pub fn tariff_calendar(
        &self,
    ) -> Result<gridmesh_analytics::tariff::TariffCalendar, gridmesh_analytics::AnalyticsError>
    {
        let offset = gridmesh_analytics::time::LocalOffset::new(self.utc_offset_minutes)?;
        gridmesh_analytics::tariff::TariffCalendar::new(offset, &self.tariff, [])
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            auto_resolve_after: Duration::from_secs(900),
            history: 100_000,
        }
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            timeout: Duration::from_secs(5),
            max_attempts: 6,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            queue: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `GRIDMESH_*` variables from `env`. Does not
    /// validate; call [`Config::validate`] after applying command-line flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => parse_file(path)?,
            None => toml::Table::new(),
        };
        for (name, value) in env {
            apply_env_override(&mut table, &name, &value)?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: String::new(),
                message: e.to_string(),
            })
    }

    /// Checks the values together. Every error says which key to change and how.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.version != CONFIG_VERSION {
            return invalid(format!(
                "version = {} is not supported; this build reads version = {CONFIG_VERSION}",
                self.version
            ));
        }
        if self.node.name.is_empty() || self.node.name.len() > 64 {
            return invalid("node.name must be 1 to 64 characters".to_owned());
        }
        if self.node.grpc_addr == self.node.http_addr && self.node.grpc_addr.port() != 0 {
            return invalid(format!(
                "node.grpc_addr and node.http_addr are both {}; give them different ports",
                self.node.grpc_addr
            ));
        }
        self.ingest.validate()?;
        self.storage.validate()?;
        self.actors.validate()?;
        self.cluster.validate(self)?;
        self.replication.validate()?;
        check_range("alerts.history", self.alerts.history, 100, 100_000_000)?;
        self.notify.validate()?;
        self.analytics.validate()?;
        self.auth.validate()?;
        self.tls.validate(self)
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        for (key, value) in [
            ("auth.issuer", &self.issuer),
            ("auth.audience", &self.audience),
        ] {
            if value.is_empty() || value.len() > 256 {
                return invalid(format!("{key} must be 1 to 256 characters"));
            }
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        };
        if !name_ok(&self.bootstrap_admin) {
            return invalid(
                "auth.bootstrap_admin must be 1 to 64 characters from [A-Za-z0-9._@-]".to_owned(),
            );
        }
        for (key, value) in [
            ("auth.access_ttl", self.access_ttl),
            ("auth.refresh_ttl", self.refresh_ttl),
            ("auth.session_idle_timeout", self.session_idle_timeout),
            ("auth.api_token_max_ttl", self.api_token_max_ttl),
            ("auth.sync_interval", self.sync_interval),
            ("auth.login_backoff_base", self.login_backoff_base),
        ] {
            if value.as_secs() == 0 {
                return invalid(format!("{key} must be at least 1s"));
            }
        }
        if self.refresh_ttl < self.access_ttl {
            return invalid("auth.refresh_ttl must be at least auth.access_ttl".to_owned());
        }
        if self.clock_skew > Duration::from_secs(300) {
            return invalid("auth.clock_skew must be at most 5m".to_owned());
        }
        if self.login_backoff_max < self.login_backoff_base {
            return invalid("auth.login_backoff_max must be at least login_backoff_base".into());
        }
        check_range(
            "auth.argon2_memory_kib",
            self.argon2_memory_kib.into(),
            8,
            4 << 20,
        )?;
        check_range(
            "auth.argon2_iterations",
            self.argon2_iterations.into(),
            1,
            100,
        )?;
        check_range(
            "auth.argon2_parallelism",
            self.argon2_parallelism.into(),
            1,
            64,
        )?;
        if u64::from(self.argon2_memory_kib) < 8 * u64::from(self.argon2_parallelism) {
            return invalid("auth.argon2_memory_kib must be at least 8 per lane".to_owned());
        }
        Ok(())
    }
}

impl TlsConfig {
    /// Whether gRPC is served over TLS.
    pub fn grpc_enabled(&self) -> bool {
        !self.grpc_cert_file.as_os_str().is_empty()
    }

    /// Whether the cluster port uses TLS.
    pub fn cluster_enabled(&self) -> bool {
        !self.cluster_cert_file.as_os_str().is_empty()
    }

    fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        if set(&self.grpc_cert_file) != set(&self.grpc_key_file) {
            return invalid("tls.grpc_cert_file and tls.grpc_key_file go together: set both");
        }
        if set(&self.grpc_client_ca_file) && !self.grpc_enabled() {
            return invalid("tls.grpc_client_ca_file needs tls.grpc_cert_file and grpc_key_file");
        }
        let cluster = [
            &self.cluster_cert_file,
            &self.cluster_key_file,
            &self.cluster_ca_file,
        ];
        if cluster.iter().any(|p| set(p)) && !cluster.iter().all(|p| set(p)) {
            return invalid(
                "tls.cluster_cert_file, cluster_key_file and cluster_ca_file go together: set \
                 all three (peers authenticate each other with the CA)",
            );
        }
        if self.handshake_timeout.is_zero() || self.handshake_timeout > Duration::from_secs(60) {
            return invalid("tls.handshake_timeout must be between 1ms and 60s");
        }
        if config.node.mode == Mode::Production {
            if !self.grpc_enabled() {
                return invalid(
                    "node.mode = \"production\" requires TLS on gRPC: set tls.grpc_cert_file \
                     and tls.grpc_key_file (scripts/gen-certs.sh makes test certificates)",
                );
            }
            if config.cluster.enabled && !self.cluster_enabled() {
                return invalid(
                    "node.mode = \"production\" with cluster.enabled requires TLS between \
                     nodes: set tls.cluster_cert_file, cluster_key_file and cluster_ca_file",
                );
            }
        }
        Ok(())
    }
}

impl IngestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "ingest.max_batch_readings",
            self.max_batch_readings.into(),
            1,
            100_000,
        )?;
        check_range(
            "ingest.max_message_bytes",
            self.max_message_bytes.into(),
            4096,
            256 << 20,
        )?;
        check_range(
            "ingest.max_inflight_readings",
            self.max_inflight_readings.into(),
            1,
            10_000_000,
        )?;
        check_range(
            "ingest.max_inflight_batches_per_stream",
            self.max_inflight_batches_per_stream.into(),
            1,
            1024,
        )?;
        if self.max_inflight_readings < self.max_batch_readings {
            return Err(ConfigError::Invalid(format!(
                "ingest.max_inflight_readings ({}) is below ingest.max_batch_readings ({}): \
                 no full batch could ever be admitted; raise max_inflight_readings",
                self.max_inflight_readings, self.max_batch_readings
            )));
        }
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ingest.ack_timeout must be more than 0s".to_owned(),
            ));
        }
        if self.out_of_order_window.is_zero() {
            return Err(ConfigError::Invalid(
                "ingest.out_of_order_window must be more than 0s (use e.g. \"1h\")".to_owned(),
            ));
        }
        Ok(())
    }
}

impl StorageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "storage.group_commit_window_ms",
            self.group_commit_window_ms,
            0,
            1000,
        )?;
        check_range(
            "storage.max_group_requests",
            self.max_group_requests.into(),
            1,
            1_000_000,
        )?;
        check_range("storage.cache_mib", self.cache_mib, 1, 1 << 20)?;
        check_range("storage.max_journal_mib", self.max_journal_mib, 64, 1 << 20)
    }
}

impl ActorsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("actors.shards", self.shards.into(), 1, 65_536)?;
        check_range(
            "actors.max_active_meters",
            self.max_active_meters.into(),
            1,
            100_000_000,
        )?;
        check_range("actors.max_restarts", self.max_restarts.into(), 0, 1000)?;
        if self.max_active_meters < self.shards {
            return Err(ConfigError::Invalid(format!(
                "actors.max_active_meters ({}) must be at least actors.shards ({}) so every shard \
                 can hold one meter",
                self.max_active_meters, self.shards
            )));
        }
        if self.state_checkpoint_interval > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(format!(
                "actors.state_checkpoint_interval ({:?}) must be at most 1h: a crash loses the \
                 meters' rejection counters since their last write",
                self.state_checkpoint_interval
            )));
        }
        for (key, value) in [
            ("actors.meter_idle_timeout", self.meter_idle_timeout),
            ("actors.passivation_interval", self.passivation_interval),
            ("actors.restart_window", self.restart_window),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!("{key} must be more than 0s")));
            }
        }
        Ok(())
    }

    /// Active-meter budget of one shard: the node budget split evenly, rounded up.
    pub fn meters_per_shard(&self) -> usize {
        self.max_active_meters.div_ceil(self.shards) as usize
    }
}

impl NotifyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        check_range("notify.max_attempts", self.max_attempts.into(), 1, 100)?;
        check_range(
            "notify.breaker_failures",
            self.breaker_failures.into(),
            1,
            1000,
        )?;
        check_range("notify.queue", self.queue.into(), 1, 10_000_000)?;
        for (key, value) in [
            ("notify.timeout", self.timeout),
            ("notify.retry_initial", self.retry_initial),
            ("notify.breaker_cooldown", self.breaker_cooldown),
        ] {
            if value.is_zero() {
                return invalid(format!("{key} must be more than 0s"));
            }
        }
        if self.retry_max < self.retry_initial {
            return invalid("notify.retry_max must be at least notify.retry_initial".to_owned());
        }
        let mut names = std::collections::BTreeSet::new();
        for sink in &self.sinks {
            if sink.name.is_empty() || sink.name.len() > 64 {
                return invalid(
                    "notify.sinks: every sink needs a name of 1 to 64 characters".into(),
                );
            }
            if !names.insert(sink.name.as_str()) {
                return invalid(format!(
                    "notify.sinks: the name {:?} is used twice",
                    sink.name
                ));
            }
            let rest = sink
                .url
                .strip_prefix("http://")
                .or_else(|| sink.url.strip_prefix("https://"));
            let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or(""));
            if host.is_none_or(str::is_empty) {
                return invalid(format!(
                    "notify.sinks {:?}: url {:?} must be an http:// or https:// URL with a host",
                    sink.name, sink.url
                ));
            }
            if !["info", "minor", "major", "critical"].contains(&sink.min_severity.as_str()) {
                return invalid(format!(
                    "notify.sinks {:?}: min_severity {:?} must be info, minor, major or critical",
                    sink.name, sink.min_severity
                ));
            }
            if let Some(kind) = sink
                .kinds
                .iter()
                .find(|k| !ALERT_KINDS.contains(&k.as_str()))
            {
                return invalid(format!(
                    "notify.sinks {:?}: kind {kind:?} is not an alert kind; known: {}",
                    sink.name,
                    ALERT_KINDS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl ReplicationConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("replication.factor", self.factor.into(), 1, 5)?;
        if self.write_quorum == 0 || self.write_quorum > self.factor {
            return Err(ConfigError::Invalid(format!(
                "replication.write_quorum = {} must be between 1 and replication.factor ({})",
                self.write_quorum, self.factor
            )));
        }
        for (key, value) in [
            ("replication.timeout", self.timeout),
            ("replication.hint_window", self.hint_window),
            ("replication.handoff_interval", self.handoff_interval),
            (
                "replication.anti_entropy_interval",
                self.anti_entropy_interval,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!("{key} must be more than 0s")));
            }
        }
        check_range(
            "replication.repair_bytes_per_s",
            self.repair_bytes_per_s,
            64 << 10,
            1 << 40,
        )
    }
}

impl ClusterConfig {
    fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        for (key, addr) in [
            ("node.grpc_addr", config.node.grpc_addr),
            ("node.http_addr", config.node.http_addr),
        ] {
            if addr == self.listen_addr && addr.port() != 0 {
                return invalid(format!(
                    "cluster.listen_addr and {key} are both {addr}; give them different ports"
                ));
            }
        }
        if self.listen_addr.port() == 0 && self.advertise_addr.is_none() {
            return invalid(
                "cluster.listen_addr needs a fixed port (peers must know where to connect), \
                 or set cluster.advertise_addr"
                    .to_owned(),
            );
        }
        for seed in &self.seeds {
            if seed
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return invalid(format!(
                    "cluster.seeds entry {seed:?} is not host:port (e.g. \"10.0.0.2:7200\")"
                ));
            }
        }
        if !self.seed_dns.is_empty()
            && self
                .seed_dns
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return invalid(format!(
                "cluster.seed_dns {:?} must be name:port, e.g. \"gridmesh.default.svc:7200\"",
                self.seed_dns
            ));
        }
        for (key, value) in [
            ("cluster.heartbeat_interval", self.heartbeat_interval),
            ("cluster.reconnect_min", self.reconnect_min),
            ("cluster.forward_timeout", self.forward_timeout),
        ] {
            if value.is_zero() {
                return invalid(format!("{key} must be more than 0s"));
            }
        }
        if self.suspect_after <= self.heartbeat_interval * 2 {
            return invalid(format!(
                "cluster.suspect_after ({:?}) must exceed two heartbeat intervals ({:?}), or \
                 one late heartbeat makes a healthy peer suspect",
                self.suspect_after, self.heartbeat_interval
            ));
        }
        if self.down_after <= self.suspect_after {
            return invalid(format!(
                "cluster.down_after ({:?}) must be longer than cluster.suspect_after ({:?})",
                self.down_after, self.suspect_after
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return invalid("cluster.reconnect_max must be at least cluster.reconnect_min".into());
        }
        check_range(
            "cluster.max_inflight_per_peer",
            self.max_inflight_per_peer.into(),
            1,
            100_000,
        )?;
        check_range(
            "cluster.max_frame_bytes",
            self.max_frame_bytes,
            u64::from(config.ingest.max_message_bytes) + 4096,
            1 << 30,
        )
    }

    /// The address peers connect to.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertise_addr.unwrap_or(self.listen_addr)
    }

    /// Where the cookie is read from, for messages (never the value).
    pub fn cookie_source(&self) -> String {
        if self.cookie_file.as_os_str().is_empty() {
            format!("environment variable {}", self.cookie_env)
        } else {
            format!("file {}", self.cookie_file.display())
        }
    }

    /// Reads the cookie from `cookie_file`, else from the variable `cookie_env` (looked up
    /// with `env`). The error names where it looked, never the value.
    pub fn read_cookie(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
        let cookie = if self.cookie_file.as_os_str().is_empty() {
            env(&self.cookie_env).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "cluster.enabled needs a cookie: set cluster.cookie_file or the environment \
                     variable {}",
                    self.cookie_env
                ))
            })?
        } else {
            std::fs::read_to_string(&self.cookie_file).map_err(|source| ConfigError::Read {
                path: self.cookie_file.clone(),
                source,
            })?
        };
        let cookie = cookie.trim().to_owned();
        if cookie.len() < 16 {
            return Err(ConfigError::Invalid(format!(
                "the cluster cookie (from {}) is {} characters; use at least 16 random ones, \
                 e.g. `openssl rand -hex 16`",
                if self.cookie_file.as_os_str().is_empty() {
                    self.cookie_env.clone()
                } else {
                    self.cookie_file.display().to_string()
                },
                cookie.len()
            )));
        }
        Ok(cookie)
    }
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "{key} = {value} is outside the allowed range {min}..={max}"
    )))
}

fn parse_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: format!(" in {}", path.display()),
        message: e.to_string(),
    })
}

/// Applies `GRIDMESH_SECTION__KEY=value` onto the TOML table. Values are parsed as TOML scalars
/// (`true`, `42`, `"text"`), falling back to a plain string, so `GRIDMESH_NODE__NAME=n1` works.
fn apply_env_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !path.contains("__") {
        // Other GRIDMESH_* variables (GRIDMESH_CONFIG, test switches) are not overrides, but a
        // single underscore after a section name is almost certainly a typo: say so.
        let lower = path.to_ascii_lowercase();
        if let Some(section) = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        {
            let key = &path[section.len() + 1..];
            return Err(ConfigError::Parse {
                origin: format!(" in environment variable {name}"),
                message: format!(
                    "overrides use two underscores between section and key: {ENV_PREFIX}{}__{key}",
                    section.to_ascii_uppercase()
                ),
            });
        }
        return Ok(());
    }
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let [section, key] = parts.as_slice() else {
        return Err(ConfigError::Parse {
            origin: format!(" in environment variable {name}"),
            message: "expected GRIDMESH_<SECTION>__<KEY>, e.g. GRIDMESH_NODE__NAME".to_owned(),
        });
    };
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = entry else {
        return Err(ConfigError::Parse {
            origin: format!(" in environment variable {name}"),
            message: format!("`{section}` is not a section"),
        });
    };
    section_table.insert(key.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests;
