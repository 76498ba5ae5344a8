//! The Redis sink (feature `redis`): window results into Redis for live dashboards.
//!
//! Per result row (see `upsert.lua`, run atomically by Redis for each row):
//! - the row's key (the spec's template, e.g. `views:{user_id}` → `views:42`) is a sorted
//!   set with one member per window: score `window_start`, member the row's JSON. A later
//!   revision replaces the earlier one; a retraction removes it. Changes are ordered by
//!   (revision, retracted) per window (recorded in the hash `streamc:rev:<key>`), so a
//!   replay after a restart changes nothing and an older revision never overwrites a
//!   newer one. Only the newest `keep` windows of a key are kept; with `ttl` the key
//!   expires that long after its last change.
//! - every change is appended to the change log, a Redis Stream (`stream`, shared by
//!   every sink of a Redis by default, trimmed to about `stream_max_len` entries), whose
//!   ids let `streamc serve` resume a client without a gap, and PUBLISHed on `channel`
//!   as `{"stream", "id", "prev", "feed", "key", "op", "row"}` (`prev`: the log's
//!   previous id, so a subscriber can tell it missed nothing).
//! - the feed (one per Redis sink: job, flow, key fields, aggregates) is described in the
//!   hash `streamc:feeds`, its keys indexed by last change in `streamc:keys:<feed>`, and
//!   the job's progress (watermarks, lag, counts) is in the hash `streamc:status` and
//!   PUBLISHed on `streamc:status` a few times a second.
//!
//! The client is a small RESP implementation of our own (`resp.rs`, `conn.rs`): the
//! `redis` crate would bring ~75 crates (URL parsing with IDNA among them) into every
//! binary with a Redis sink. The spec types here are always compiled, so generated code
//! is the same with and without the feature.

#[cfg(feature = "redis")]
pub mod conn;
#[cfg(feature = "redis")]
pub mod resp;
#[cfg(feature = "redis")]
mod sink;

#[cfg(feature = "redis")]
pub use sink::{FEEDS_CHANNEL, FEEDS_KEY, RedisSink, STATUS_CHANNEL, STATUS_KEY, key_index};

/// The environment variable with the Redis URL of every Redis sink (`--redis` wins).
pub const REDIS_ENV: &str = "STREAMC_REDIS";

/// The error of opening a Redis sink in a binary built without the feature.
pub const NO_REDIS: &str = "this binary was built without Redis support (the `redis` feature of streamc-runtime); \
     rebuild it with `streamc build`, which enables the feature for specs that use Redis";

/// The change log every Redis sink appends to unless its spec names another.
pub const DEFAULT_STREAM: &str = "streamc:changes";
/// The change log's default length (approximate: Redis trims whole nodes).
pub const DEFAULT_STREAM_MAX_LEN: u64 = 100_000;
/// Windows kept per key unless the spec says `keep`.
pub const DEFAULT_KEEP: u64 = 1000;

/// Which flow's results a Redis sink holds: what a dashboard needs to show them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FeedSpec {
    /// The job (pipeline) name.
    pub job: String,
    /// The sink's name in the spec.
    pub sink: String,
    /// The flow writing to it.
    pub flow: String,
    /// The flow's `key_by` fields.
    pub key_fields: Vec<String>,
    /// The flow's aggregates, in spec order.
    pub aggregates: Vec<String>,
    /// The window, as the spec says it (`tumbling 1m`).
    pub window: String,
}

impl FeedSpec {
    /// The feed's id: `<job>.<sink>`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.job, self.sink)
    }
}

/// A Redis sink as the spec configures it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedisSinkSpec {
    /// `redis://host:port[/db]`; None: `--redis`, `STREAMC_REDIS` or 127.0.0.1:6379.
    pub url: Option<String>,
    /// Key template: `{field}` placeholders name key fields of the flow.
    pub key: String,
    /// PUBLISH channel of the notifications.
    pub channel: String,
    /// The change log (a Redis Stream).
    pub stream: String,
    /// Its approximate length.
    pub stream_max_len: u64,
    /// Windows kept per key (at least 1).
    pub keep: u64,
    /// Keys expire this long after their last change (None: never).
    pub ttl_ms: Option<u64>,
    /// The flow it holds.
    pub feed: FeedSpec,
}

/// Why Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not RESP.
    #[cfg(feature = "redis")]
    #[error("{0}")]
    Protocol(#[from] resp::ProtocolError),
    /// The server refused a command.
    #[error("Redis refused: {0}")]
    Server(String),
    /// A bad URL or configuration.
    #[error("{0}")]
    Config(String),
}

/// Opens a Redis sink (connects, loads the script, registers the feed).
#[cfg(feature = "redis")]
pub fn open_sink(
    spec: &RedisSinkSpec,
) -> Result<Box<dyn crate::sink::Sink>, crate::sink::SinkError> {
    Ok(Box::new(RedisSink::open(spec)?))
}

/// Without the `redis` feature, opening fails with [`NO_REDIS`].
#[cfg(not(feature = "redis"))]
pub fn open_sink(
    _spec: &RedisSinkSpec,
) -> Result<Box<dyn crate::sink::Sink>, crate::sink::SinkError> {
    Err(crate::sink::SinkError::msg(NO_REDIS))
}

impl From<RedisError> for crate::sink::SinkError {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Io(e) => crate::sink::SinkError::Io(e),
            e => crate::sink::SinkError::Other(Box::new(e)),
        }
    }
}
