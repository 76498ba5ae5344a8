//! `streamc serve`: the hub fed by Redis (features `serve` and `redis`).
//!
//! One subscription per server: a connection SUBSCRIBEd to the channels of every feed of
//! the change log it serves, to `streamc:feeds` (new feeds) and to `streamc:status` (job
//! progress). Pub/Sub is at most once, so it is only trusted as far as it can be
//! checked: each notification carries its change-log id and the id before it; when
//! `prev` is not the hub's position, the server reads what it missed from the change log
//! (`XRANGE`) before going on. At start, and whenever it had to reconnect, the server
//! reads the change log from its position; if Redis trimmed the log past it (or lost it),
//! the server rebuilds its state from Redis (one `MULTI`: the log's last id and the
//! newest windows of every key, consistent with it) and every client resyncs.
//!
//! Clients that resume from before the hub's ring are served from the change log too
//! ([`RedisBackfill`]), or told to resync when Redis no longer has those changes.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use super::http::{self, Backfill, HttpConfig};
use super::hub::{Change, EventId, FeedDesc, Hub, HubConfig, Op};
use crate::redis::resp::{self, RedisUrl, Value};
use crate::redis::{
    DEFAULT_STREAM, FEEDS_CHANNEL, FEEDS_KEY, REDIS_ENV, RedisError, STATUS_CHANNEL, STATUS_KEY,
};

/// An asynchronous Redis connection (tokio).
pub struct AsyncConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
}

impl AsyncConn {
    /// Connects, authenticates and selects the database of `url`.
    pub async fn connect(url: &RedisUrl) -> Result<Self, RedisError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(url.addr()))
            .await
            .map_err(|_| {
                RedisError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{url}: connect timed out"),
                ))
            })?
            .map_err(|e| RedisError::Io(std::io::Error::new(e.kind(), format!("{url}: {e}"))))?;
        stream.set_nodelay(true)?;
        let mut c = AsyncConn {
            stream,
            rbuf: Vec::with_capacity(64 * 1024),
            rpos: 0,
        };
        let (hello, n) = url.handshake();
        if n > 0 {
            c.send(&hello).await?;
            for _ in 0..n {
                if let Value::Error(e) = c.read().await? {
                    return Err(RedisError::Server(format!("{url}: {e}")));
                }
            }
        }
        Ok(c)
    }

    /// Writes encoded commands.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), RedisError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next reply or push message. Cancel-safe: bytes read are kept for the next call.
    pub async fn read(&mut self) -> Result<Value, RedisError> {
        loop {
            if let Some((v, n)) = resp::parse(&self.rbuf[self.rpos..])? {
                self.rpos += n;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(v);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(RedisError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                )));
            }
        }
    }

    /// One command and its reply (an error reply is `Err(Server)`).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, RedisError> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.send(&out).await?;
        match self.read().await? {
            Value::Error(e) => Err(RedisError::Server(e)),
            v => Ok(v),
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A stream entry `[id, [field, value, ...]]` as a change.
fn entry_change(v: &Value) -> Option<Change> {
    let e = v.as_array()?;
    let id: EventId = e.first()?.as_str()?.parse().ok()?;
    let fields = e.get(1)?.as_array()?;
    let mut feed = None;
    let mut key = None;
    let mut op = None;
    let mut row = None;
    for pair in fields.chunks(2) {
        let [k, v] = pair else { continue };
        match k.as_str() {
            Some("feed") => feed = Some(text(v)),
            Some("key") => key = Some(text(v)),
            Some("op") => {
                op = v.as_str().map(|o| {
                    if o == "retract" {
                        Op::Retract
                    } else {
                        Op::Upsert
                    }
                })
            }
            Some("row") => row = Some(text(v)),
            _ => {}
        }
    }
    Some(Change {
        id,
        feed: feed?,
        key: key?,
        op: op?,
        row: row?,
    })
}

/// A flat `[k, v, k, v...]` reply's value of `name`.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_array()?
        .chunks(2)
        .find(|p| p.first().and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get(1))
}

/// Where the change log stands.
struct LogInfo {
    /// Its newest id.
    last: EventId,
    /// Its oldest entry's id (None: empty).
    first: Option<EventId>,
    /// The largest id removed by XDEL.
    max_deleted: EventId,
    /// Entries now, and ever added.
    length: u64,
    added: u64,
}

impl LogInfo {
    /// Whether changes after `after` may have been removed (trimmed or deleted): then
    /// resuming from `after` could leave a gap. Trimming removes the oldest entries, so
    /// nothing after `after` is gone while `after` (or an older entry) is still there,
    /// or while nothing was ever removed. (Conservative: an `after` just before the
    /// oldest entry is taken as gone.)
    fn gone_after(&self, after: EventId) -> bool {
        self.max_deleted > after
            || (self.added > self.length && self.first.is_some_and(|f| f > after))
            || after > self.last
    }
}

/// Where the change log stands: Ok(None) when it does not exist.
async fn log_info(c: &mut AsyncConn, stream: &str) -> Result<Option<LogInfo>, RedisError> {
    match c.cmd(&["XINFO", "STREAM", stream]).await {
        Ok(v) => {
            let id = |name| {
                field(&v, name)
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<EventId>().ok())
            };
            let first = field(&v, "first-entry")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let num = |name| field(&v, name).and_then(Value::as_int).unwrap_or(0).max(0) as u64;
            Ok(Some(LogInfo {
                last: id("last-generated-id").unwrap_or_default(),
                first,
                max_deleted: id("max-deleted-entry-id").unwrap_or_default(),
                length: num("length"),
                added: num("entries-added"),
            }))
        }
        Err(RedisError::Server(e)) if e.contains("no such key") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The feeds of `stream` and their channels.
async fn read_feeds(
    c: &mut AsyncConn,
    stream: &str,
) -> Result<Vec<(FeedDesc, String, String)>, RedisError> {
    let v = c.cmd(&["HGETALL", FEEDS_KEY]).await?;
    let mut out = Vec::new();
    for pair in v.as_array().unwrap_or(&[]).chunks(2) {
        let [id, desc] = pair else { continue };
        let (id, desc) = (text(id), text(desc));
        let j: serde_json::Value = serde_json::from_str(&desc).unwrap_or_default();
        if j["stream"].as_str().unwrap_or(DEFAULT_STREAM) != stream {
            continue;
        }
        let channel = j["channel"].as_str().unwrap_or_default().to_string();
        let index = j["index"].as_str().unwrap_or_default().to_string();
        out.push((FeedDesc::from_json(&id, &desc), channel, index));
    }
    Ok(out)
}

/// Feeds the hub from Redis.
struct Follower {
    hub: Arc<Hub>,
    url: RedisUrl,
    stream: String,
    /// The hub holds Redis's state as of its position.
    synced: bool,
}

#[derive(serde::Deserialize)]
struct Note<'a> {
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    feed: String,
    key: String,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    row: &'a serde_json::value::RawValue,
}

impl Follower {
    /// Rebuilds the hub from Redis: the log's last id and the newest windows of every
    /// key of every feed, read in one MULTI (consistent with each other).
    async fn bootstrap(
        &mut self,
        c: &mut AsyncConn,
        feeds: &[(FeedDesc, String, String)],
    ) -> Result<(), RedisError> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for (f, _, index) in feeds {
            if index.is_empty() {
                continue;
            }
            let v = c.cmd(&["ZRANGE", index, "0", "-1"]).await?;
            for k in v.as_array().unwrap_or(&[]) {
                keys.push((f.id.clone(), text(k)));
            }
        }
        let keep = self.hub.config().keep.max(1).to_string();
        let top = format!("-{keep}");
        let mut out = Vec::new();
        resp::encode(&mut out, &["MULTI"]);
        resp::encode(
            &mut out,
            &["XREVRANGE", &self.stream, "+", "-", "COUNT", "1"],
        );
        for (_, k) in &keys {
            // The newest `keep` windows, oldest first.
            resp::encode(&mut out, &["ZRANGE", k, &top, "-1"]);
        }
        resp::encode(&mut out, &["EXEC"]);
        c.send(&out).await?;
        for _ in 0..keys.len() + 2 {
            if let Value::Error(e) = c.read().await? {
                return Err(RedisError::Server(e));
            }
        }
        let exec = c.read().await?;
        let results = match exec {
            Value::Array(a) => a,
            Value::Error(e) => return Err(RedisError::Server(e)),
            other => {
                return Err(RedisError::Server(format!(
                    "MULTI: unexpected reply {other:?}"
                )));
            }
        };
        let pos = results
            .first()
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_array)
            .and_then(|e| e.first())
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let windows: Vec<(String, String, Vec<String>)> = keys
            .into_iter()
            .zip(results.iter().skip(1))
            .map(|((feed, key), rows)| {
                let rows = rows.as_array().unwrap_or(&[]).iter().map(text).collect();
                (feed, key, rows)
            })
            .collect();
        tracing::info!(position = %pos, keys = windows.len(), feeds = feeds.len(), "dashboard: state read from Redis");
        self.hub.reset(
            pos,
            feeds.iter().map(|(f, _, _)| f.clone()).collect(),
            windows,
        );
        self.synced = true;
        Ok(())
    }

    /// Reads the change log after the hub's position; rebuilds from Redis when the log
    /// no longer holds everything after it.
    async fn catch_up(
        &mut self,
        c: &mut AsyncConn,
        feeds: &[(FeedDesc, String, String)],
    ) -> Result<(), RedisError> {
        let pos = self.hub.position();
        let gone = match log_info(c, &self.stream).await? {
            None => pos != EventId::default(),
            Some(_) if pos == EventId::default() => false,
            Some(info) if info.gone_after(pos) => true,
            Some(info) => {
                // The position itself must be in the log when the log reaches back to
                // it: otherwise this is another log (Redis flushed and refilled).
                let p = pos.to_string();
                let v = c.cmd(&["XRANGE", &self.stream, &p, &p]).await?;
                info.first.is_some_and(|f| f <= pos) && v.as_array().is_none_or(|a| a.is_empty())
            }
        };
        if gone || !self.synced {
            if self.synced {
                tracing::warn!(position = %pos, "dashboard: Redis no longer has the changes after this server's position; reading its state again (clients resync)");
            }
            return self.bootstrap(c, feeds).await;
        }
        loop {
            let from = format!("({}", self.hub.position());
            let v = c
                .cmd(&["XRANGE", &self.stream, &from, "+", "COUNT", "1000"])
                .await?;
            let entries = v.as_array().unwrap_or(&[]);
            for e in entries {
                if let Some(ch) = entry_change(e) {
                    self.hub.publish(&ch);
                }
            }
            if entries.len() < 1000 {
                return Ok(());
            }
        }
    }

    async fn statuses(&self, c: &mut AsyncConn) -> Result<(), RedisError> {
        let v = c.cmd(&["HGETALL", STATUS_KEY]).await?;
        for pair in v.as_array().unwrap_or(&[]).chunks(2) {
            if let [job, s] = pair {
                self.hub.set_status(&text(job), &text(s));
            }
        }
        Ok(())
    }

    async fn subscribe(sub: &mut AsyncConn, channels: &BTreeSet<String>) -> Result<(), RedisError> {
        let mut args = vec!["SUBSCRIBE".to_string()];
        args.extend(channels.iter().cloned());
        let mut out = Vec::new();
        resp::encode(&mut out, &args);
        sub.send(&out).await
    }

    /// One connected session: until Redis fails (Err) or shutdown (Ok).
    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        ready: &mut Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), RedisError> {
        let mut sub = AsyncConn::connect(&self.url).await?;
        let mut cmd = AsyncConn::connect(&self.url).await?;
        let mut feeds = read_feeds(&mut cmd, &self.stream).await?;
        let mut channels: BTreeSet<String> =
            [FEEDS_CHANNEL.to_string(), STATUS_CHANNEL.to_string()].into();
        channels.extend(feeds.iter().map(|f| f.1.clone()).filter(|c| !c.is_empty()));
        // Subscribe first, then read the log: nothing falls between the two.
        Self::subscribe(&mut sub, &channels).await?;
        self.hub
            .set_feeds(feeds.iter().map(|f| f.0.clone()).collect());
        self.catch_up(&mut cmd, &feeds).await?;
        self.statuses(&mut cmd).await?;
        tracing::info!(url = %self.url, stream = %self.stream, channels = channels.len(), position = %self.hub.position(), "dashboard: following Redis");
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        loop {
            let msg = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
                m = sub.read() => m?,
            };
            let Some(parts) = msg.as_array() else {
                continue;
            };
            if parts.first().and_then(Value::as_str) != Some("message") || parts.len() < 3 {
                continue;
            }
            let channel = parts[1].as_str().unwrap_or_default();
            let payload = parts[2].as_str().unwrap_or_default();
            if channel == FEEDS_CHANNEL {
                feeds = read_feeds(&mut cmd, &self.stream).await?;
                self.hub
                    .set_feeds(feeds.iter().map(|f| f.0.clone()).collect());
                let new: BTreeSet<String> = feeds
                    .iter()
                    .map(|f| f.1.clone())
                    .filter(|c| !c.is_empty() && !channels.contains(c))
                    .collect();
                if !new.is_empty() {
                    Self::subscribe(&mut sub, &new).await?;
                    channels.extend(new);
                    // Changes published before the subscription took effect.
                    self.catch_up(&mut cmd, &feeds).await?;
                }
                continue;
            }
            if channel == STATUS_CHANNEL {
                let job = serde_json::from_str::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v["job"].as_str().map(str::to_string));
                if let Some(job) = job {
                    self.hub.set_status(&job, payload);
                }
                continue;
            }
            let Ok(note) = serde_json::from_str::<Note<'_>>(payload) else {
                tracing::debug!(
                    channel,
                    "dashboard: a message that is not a change notification"
                );
                continue;
            };
            if note.stream.as_deref().is_some_and(|s| s != self.stream) {
                continue;
            }
            let (Ok(id), Ok(prev)) = (note.id.parse::<EventId>(), note.prev.parse::<EventId>())
            else {
                continue;
            };
            let pos = self.hub.position();
            if id <= pos {
                continue; // already applied (read from the log)
            }
            if prev == pos {
                self.hub.publish(&Change {
                    id,
                    feed: note.feed,
                    key: note.key,
                    op: if note.op == "retract" {
                        Op::Retract
                    } else {
                        Op::Upsert
                    },
                    row: note.row.get().to_string(),
                });
            } else {
                tracing::debug!(position = %pos, prev = %prev, id = %id, "dashboard: a gap in the notifications; reading the change log");
                self.catch_up(&mut cmd, &feeds).await?;
            }
        }
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        ready: oneshot::Sender<Result<(), String>>,
    ) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut shutdown, &mut ready).await {
                Ok(()) => return,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(format!("{}: {e}", self.url)));
                        return;
                    }
                    tracing::warn!(url = %self.url, error = %e, "dashboard: lost Redis; reconnecting");
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Changes older than the hub's ring, from the change log.
pub struct RedisBackfill {
    url: RedisUrl,
    stream: String,
    conn: tokio::sync::Mutex<Option<AsyncConn>>,
}

/// At most this many changes are replayed to one client; more is a resync.
const MAX_BACKFILL: usize = 100_000;

impl RedisBackfill {
    async fn read(&self, after: EventId, upto: EventId) -> Result<Vec<Change>, String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(
                AsyncConn::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let Some(c) = guard.as_mut() else {
            return Err("no connection".into());
        };
        let r: Result<Vec<Change>, RedisError> = async {
            match log_info(c, &self.stream).await? {
                Some(info) if info.gone_after(after) => {
                    return Err(RedisError::Config(format!(
                        "the change log no longer holds the changes after {after}"
                    )));
                }
                None => return Err(RedisError::Config("the change log is gone".into())),
                Some(_) => {}
            }
            let mut out = Vec::new();
            let mut from = after;
            loop {
                let v = c
                    .cmd(&[
                        "XRANGE",
                        &self.stream,
                        &format!("({from}"),
                        &upto.to_string(),
                        "COUNT",
                        "1000",
                    ])
                    .await?;
                let entries = v.as_array().unwrap_or(&[]);
                for e in entries {
                    if let Some(ch) = entry_change(e) {
                        from = ch.id;
                        out.push(ch);
                    }
                }
                if out.len() > MAX_BACKFILL {
                    return Err(RedisError::Config(format!(
                        "more than {MAX_BACKFILL} changes to replay"
                    )));
                }
                if entries.len() < 1000 {
                    return Ok(out);
                }
            }
        }
        .await;
        if let Err(RedisError::Io(_) | RedisError::Protocol(_)) = &r {
            *guard = None;
        }
        r.map_err(|e| e.to_string())
    }
}

impl Backfill for RedisBackfill {
    fn changes(&self, after: EventId, upto: EventId) -> BoxFuture<'_, Result<Vec<Change>, String>> {
        Box::pin(self.read(after, upto))
    }
}

/// Settings of `streamc serve`.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    /// `--redis`.
    pub redis: String,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--stream`.
    pub stream: String,
    /// `--keep`, `--ring`, `--buffer`.
    pub hub: HubConfig,
    /// `--cors`.
    pub cors: String,
    /// `--threads` (None: one per core).
    pub threads: Option<usize>,
    /// `--keepalive`: how often idle streams get a keep-alive.
    pub keepalive: Duration,
}

/// `streamc serve --help`.
pub const USAGE: &str = "streamc serve: the dashboard API and page, fed by Redis

Usage: streamc serve [OPTIONS]

Options:
  --redis URL      the Redis the jobs' Redis sinks write to, redis://host:port[/db]
                   (default: $STREAMC_REDIS, else redis://127.0.0.1:6379)
  --listen ADDR    where to serve, HOST:PORT or :PORT (default 127.0.0.1:8080)
  --stream KEY     the change log to follow (default streamc:changes)
  --keep N         windows kept in memory per key, for snapshots and REST (default 30)
  --ring N         recent changes kept in memory for resuming clients (default 20000)
  --buffer N       messages a client may fall behind before it must resync (default 4096)
  --cors ORIGIN    Access-Control-Allow-Origin (default *)
  --keepalive SECS keep-alive period of idle streams (default 15; below a proxy's
                   idle timeout)
  --threads N      worker threads (default: one per core)
  -h, --help       print this help

Serves http://ADDR/ (the page), /api/feeds, /api/status, /api/windows, /api/keys,
/api/events (SSE) and /api/ws (WebSocket); see the README. Stops cleanly on SIGTERM or
Ctrl-C (streams are told `bye`).
";

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    let full = if v.starts_with(':') {
        format!("127.0.0.1{v}")
    } else {
        v.to_string()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--listen {v:?}: expected HOST:PORT or :PORT"))
}

/// Parses the command line of `streamc serve` (None: `--help` was asked for).
pub fn parse_args<I>(args: I) -> Result<Option<ServeArgs>, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut a = ServeArgs {
        redis: std::env::var(REDIS_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| resp::DEFAULT_URL.to_string()),
        listen: parse_listen(super::DEFAULT_LISTEN)?,
        stream: DEFAULT_STREAM.to_string(),
        hub: HubConfig {
            keep: 30,
            ..HubConfig::default()
        },
        cors: "*".to_string(),
        threads: None,
        keepalive: HttpConfig::default().keepalive,
    };
    let mut p = lexopt::Parser::from_args(args);
    let err = |e: lexopt::Error| e.to_string();
    let string = |p: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        p.value()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|v| format!("--{flag} {v:?}: not valid UTF-8"))
    };
    let number = |p: &mut lexopt::Parser, flag: &str| -> Result<usize, String> {
        let v = string(p, flag)?;
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("--{flag} {v:?}: expected a positive number"))
    };
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("redis") => a.redis = string(&mut p, "redis")?,
            Long("listen") => a.listen = parse_listen(&string(&mut p, "listen")?)?,
            Long("stream") => a.stream = string(&mut p, "stream")?,
            Long("keep") => a.hub.keep = number(&mut p, "keep")?,
            Long("ring") => a.hub.ring = number(&mut p, "ring")?,
            Long("buffer") => a.hub.channel = number(&mut p, "buffer")?,
            Long("cors") => a.cors = string(&mut p, "cors")?,
            Long("threads") => a.threads = Some(number(&mut p, "threads")?),
            Long("keepalive") => {
                a.keepalive = Duration::from_secs(number(&mut p, "keepalive")? as u64)
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    RedisUrl::parse(&a.redis).map_err(|e| format!("--redis {e}"))?;
    if a.stream.trim().is_empty() {
        return Err("--stream: empty".into());
    }
    Ok(Some(a))
}

/// Runs the server until `shutdown` turns true; `bound` learns the listening address.
/// Fails at once when Redis does not answer or the address cannot be bound.
pub async fn run(
    args: ServeArgs,
    shutdown: watch::Receiver<bool>,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), String> {
    let url = RedisUrl::parse(&args.redis)?;
    let hub = Hub::new(args.hub.clone(), EventId::default());
    let follower = Follower {
        hub: Arc::clone(&hub),
        url: url.clone(),
        stream: args.stream.clone(),
        synced: false,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let follow = tokio::spawn(follower.run(shutdown.clone(), ready_tx));
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot read Redis at {e}")),
        Err(_) => return Err("the Redis follower stopped".into()),
    }
    let listener =
        http::listen(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    tracing::info!(%addr, redis = %url, stream = %args.stream, "dashboard at http://{addr}/");
    eprintln!(
        "streamc serve: dashboard at http://{addr}/ (Redis {url}, change log {})",
        args.stream
    );
    let backfill: Arc<dyn Backfill> = Arc::new(RedisBackfill {
        url: url.clone(),
        stream: args.stream.clone(),
        conn: tokio::sync::Mutex::new(None),
    });
    let cfg = HttpConfig {
        cors_origin: args.cors.clone(),
        keepalive: args.keepalive,
        source: format!("Redis {url} · {}", args.stream),
        ..HttpConfig::default()
    };
    let router = http::router(hub, Some(backfill), cfg, shutdown.clone());
    let served = http::serve(listener, router, shutdown, Duration::from_secs(5)).await;
    let _ = follow.await;
    served.map_err(|e| e.to_string())
}

/// The `main` of the `streamc serve` binary (`streamc serve` builds and runs it).
pub fn main() -> ExitCode {
    if let Err(e) = crate::driver::init_logging() {
        eprintln!("streamc serve: {e}");
        return ExitCode::from(2);
    }
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("streamc serve: {e}\nsee streamc serve --help");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamc serve: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "no SIGTERM handler");
                        let _ = tokio::signal::ctrl_c().await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("dashboard: stopping");
            let _ = tx.send(true);
        });
        run(args, rx, None).await
    });
    // Streams that did not close within the grace period are dropped here.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamc serve: error: {e}");
            ExitCode::FAILURE
        }
    }
}
