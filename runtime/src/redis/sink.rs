//! [`RedisSink`]: each result row becomes one `EVALSHA` of `upsert.lua`, pipelined: rows
//! are queued by `write` and sent, with their replies read back, by `flush` (or once
//! [`MAX_PENDING`] are queued). Every script call is idempotent, so after a lost
//! connection the sink reconnects and sends the unacknowledged batch again; a batch that
//! cannot be delivered within [`RETRY_FOR`] fails the job.

use std::time::{Duration, Instant};

use super::conn::Conn;
use super::resp::{self, RedisUrl, Value};
use super::{REDIS_ENV, RedisError, RedisSinkSpec};
use crate::dash::{WindowRow, status_json};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};

/// The script, loaded once per connection (`SCRIPT LOAD`) and called by its SHA-1.
pub const UPSERT_LUA: &str = include_str!("upsert.lua");
/// The hash of feed descriptors (field: feed id, value: [`super::FeedSpec`] as JSON).
pub const FEEDS_KEY: &str = "streamc:feeds";
/// Where a sink announces its feed when it opens.
pub const FEEDS_CHANNEL: &str = "streamc:feeds";
/// The hash of job progress (field: job name, value: JSON).
pub const STATUS_KEY: &str = "streamc:status";
/// Where job progress is PUBLISHed.
pub const STATUS_CHANNEL: &str = "streamc:status";
/// Rows queued before the sink sends them without waiting for `flush`.
pub const MAX_PENDING: usize = 512;
/// How long a batch is retried (reconnecting) before the sink fails.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// Progress is written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The sorted set indexing a feed's keys by their last change (wall-clock millis).
pub fn key_index(feed: &str) -> String {
    format!("streamc:keys:{feed}")
}

fn rev_key(key: &str) -> String {
    format!("streamc:rev:{key}")
}

/// A piece of a key template.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    /// Index into `Template::fields`.
    Field(usize),
}

/// `views:{user_id}` parsed.
#[derive(Clone, Debug)]
struct Template {
    parts: Vec<Part>,
    fields: Vec<String>,
}

impl Template {
    fn parse(t: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("key template `{t}`: unbalanced `{{`"))?;
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let name = rest[open + 1..close].trim().to_string();
            let i = match fields.iter().position(|f| *f == name) {
                Some(i) => i,
                None => {
                    fields.push(name);
                    fields.len() - 1
                }
            };
            parts.push(Part::Field(i));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts, fields })
    }

    fn render(&self, values: &[String], out: &mut String) {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(i) => out.push_str(values.get(*i).map_or("", String::as_str)),
            }
        }
    }
}

/// What a queued command was, to make sense of its reply.
enum Queued {
    /// A row for this Redis key.
    Row(String),
    /// Progress and feed registration (the reply does not matter unless an error).
    Aux,
}

/// The Redis sink: see the module docs of `crate::redis`.
pub struct RedisSink {
    spec: RedisSinkSpec,
    url: RedisUrl,
    feed_id: String,
    template: Template,
    sha: String,
    conn: Option<Conn>,
    /// Encoded commands not yet acknowledged, in order, and what each is.
    out: Vec<u8>,
    queued: Vec<Queued>,
    key: String,
    last_progress: Option<Instant>,
    /// Rows applied (not skipped as stale or duplicate) since the sink opened.
    applied: u64,
}

impl RedisSink {
    /// Connects to `spec.url` (or `STREAMC_REDIS`, or the default), loads the script and
    /// registers the feed.
    pub fn open(spec: &RedisSinkSpec) -> Result<Self, RedisError> {
        let url_text = spec
            .url
            .clone()
            .or_else(|| {
                std::env::var(REDIS_ENV)
                    .ok()
                    .filter(|u| !u.trim().is_empty())
            })
            .unwrap_or_else(|| resp::DEFAULT_URL.to_string());
        let url = RedisUrl::parse(&url_text).map_err(RedisError::Config)?;
        let template = Template::parse(&spec.key).map_err(RedisError::Config)?;
        let mut sink = RedisSink {
            feed_id: spec.feed.id(),
            spec: spec.clone(),
            url,
            template,
            sha: String::new(),
            conn: None,
            out: Vec::with_capacity(64 * 1024),
            queued: Vec::new(),
            key: String::new(),
            last_progress: None,
            applied: 0,
        };
        sink.connect()?;
        let descriptor = serde_json::to_string(&Descriptor {
            feed: &spec.feed,
            id: &sink.feed_id,
            key: &spec.key,
            channel: &spec.channel,
            stream: &spec.stream,
            keep: spec.keep,
            ttl_ms: spec.ttl_ms,
            index: key_index(&sink.feed_id),
        })
        .map_err(|e| RedisError::Config(e.to_string()))?;
        resp::encode(
            &mut sink.out,
            &["HSET", FEEDS_KEY, &sink.feed_id, &descriptor],
        );
        sink.queued.push(Queued::Aux);
        resp::encode(&mut sink.out, &["PUBLISH", FEEDS_CHANNEL, &sink.feed_id]);
        sink.queued.push(Queued::Aux);
        sink.send_batch()?;
        tracing::info!(sink = %spec.feed.sink, url = %sink.url, feed = %sink.feed_id, "Redis sink open");
        Ok(sink)
    }

    /// Rows applied so far (not skipped as stale, duplicate or older than `keep`).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    fn connect(&mut self) -> Result<(), RedisError> {
        let mut conn = Conn::connect(&self.url)?;
        // Named after the job, so `CLIENT LIST` tells who is connected.
        let name = format!("streamc:{}", self.spec.feed.job);
        if let Value::Error(e) = conn.cmd(&["CLIENT", "SETNAME", &name])? {
            tracing::debug!(error = %e, "Redis sink: CLIENT SETNAME refused");
        }
        let sha = conn.cmd(&["SCRIPT", "LOAD", UPSERT_LUA])?;
        self.sha = match sha {
            Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::Error(e) => return Err(RedisError::Server(format!("loading the script: {e}"))),
            other => {
                return Err(RedisError::Server(format!(
                    "loading the script: unexpected reply {other:?}"
                )));
            }
        };
        self.conn = Some(conn);
        Ok(())
    }

    fn queue_row(&mut self, row: &[u8]) -> Result<(), SinkError> {
        let meta = WindowRow::parse(&self.template.fields, row).map_err(SinkError::msg)?;
        let (start, end) = meta.window().map_err(SinkError::msg)?;
        self.template.render(&meta.values, &mut self.key);
        let order = meta.revision * 2 + u64::from(meta.retracted);
        let row = std::str::from_utf8(row).map_err(|e| SinkError::msg(e.to_string()))?;
        let spec = &self.spec;
        resp::encode(
            &mut self.out,
            &[
                "EVALSHA",
                &self.sha,
                "4",
                &self.key,
                &rev_key(&self.key),
                &spec.stream,
                &key_index(&self.feed_id),
                &format!("{start}:{end}"),
                &start.to_string(),
                &end.to_string(),
                &order.to_string(),
                row,
                &spec.channel,
                &spec.keep.to_string(),
                &spec.ttl_ms.unwrap_or(0).to_string(),
                &spec.stream_max_len.to_string(),
                &self.feed_id,
            ],
        );
        self.queued.push(Queued::Row(self.key.clone()));
        Ok(())
    }

    /// Sends every queued command and reads the replies; reconnects and sends the batch
    /// again after a connection error or a Redis that lost the script (idempotent).
    fn send_batch(&mut self) -> Result<(), RedisError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        loop {
            let err = match self.try_batch() {
                Ok(()) => {
                    self.out.clear();
                    self.queued.clear();
                    return Ok(());
                }
                Err(e) => e,
            };
            let retry = match &err {
                RedisError::Io(_) | RedisError::Protocol(_) => true,
                RedisError::Server(m) => m.starts_with("NOSCRIPT"),
                RedisError::Config(_) => false,
            };
            if !retry || Instant::now() >= deadline {
                return Err(err);
            }
            tracing::warn!(url = %self.url, error = %err, "Redis sink: reconnecting and sending the batch again");
            self.conn = None;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if let Err(e) = self.connect() {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tracing::warn!(url = %self.url, error = %e, "Redis sink: cannot reconnect yet");
            }
        }
    }

    fn try_batch(&mut self) -> Result<(), RedisError> {
        if self.conn.is_none() {
            self.connect()?;
        }
        // (Borrow the re-encoded batch: a new script SHA cannot differ, it is the
        // hash of the same text.)
        let Some(conn) = self.conn.as_mut() else {
            return Err(RedisError::Config("no connection".into()));
        };
        conn.send(&self.out)?;
        let mut first_err: Option<RedisError> = None;
        let mut applied = 0;
        // Every reply is read, even after an error, so the connection stays in step.
        for q in &self.queued {
            let v = conn.read()?;
            match (v, q) {
                (Value::Error(e), _) if e.starts_with("NOSCRIPT") => {
                    first_err.get_or_insert(RedisError::Server(e));
                }
                (Value::Error(e), Queued::Row(key)) => {
                    first_err.get_or_insert(RedisError::Server(format!("key `{key}`: {e}")));
                }
                (Value::Error(e), Queued::Aux) => {
                    first_err.get_or_insert(RedisError::Server(e));
                }
                (Value::Bulk(_), Queued::Row(_)) => applied += 1,
                _ => {}
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        self.applied += applied;
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct Descriptor<'a> {
    id: &'a str,
    #[serde(flatten)]
    feed: &'a super::FeedSpec,
    key: &'a str,
    channel: &'a str,
    stream: &'a str,
    keep: u64,
    ttl_ms: Option<u64>,
    index: String,
}

impl Sink for RedisSink {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        self.queue_row(value)?;
        if self.queued.len() >= MAX_PENDING {
            self.send_batch()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.send_batch()?)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.send_batch()?;
        self.conn = None;
        Ok(())
    }

    fn wants_progress(&self) -> bool {
        true
    }

    fn progress(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        if self.last_progress.is_some_and(|t| now < t + PROGRESS_EVERY) {
            return;
        }
        self.last_progress = Some(now);
        let json = status_json(&self.spec.feed.job, metrics);
        resp::encode(
            &mut self.out,
            &["HSET", STATUS_KEY, &self.spec.feed.job, &json],
        );
        self.queued.push(Queued::Aux);
        resp::encode(&mut self.out, &["PUBLISH", STATUS_CHANNEL, &json]);
        self.queued.push(Queued::Aux);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("views:{user_id}:{ url }:{user_id}").unwrap();
        assert_eq!(t.fields, vec!["user_id".to_string(), "url".to_string()]);
        let mut out = String::new();
        t.render(&["7".into(), "/a".into()], &mut out);
        assert_eq!(out, "views:7:/a:7");
        let t = Template::parse("global").unwrap();
        t.render(&[], &mut out);
        assert_eq!(out, "global");
        assert!(Template::parse("a{b").is_err());
    }
}
