//! The fan-out core: one [`Hub`] per server, fed by one writer (the Redis subscription
//! of `streamc serve`, or the job itself with `--serve`), read by every client.
//!
//! The hub holds, under one lock: the feeds, the newest windows of every key (the
//! mirror, for snapshots and REST), the recent changes (the ring, for resuming clients)
//! and the latest progress of every job. A change is applied to all three and sent on a
//! `broadcast` channel as one [`Frame`], serialized once (SSE and JSON forms) whatever
//! the number of clients: each client only clones an `Arc`.
//!
//! Gap-free by construction: a client subscribes under the same lock the writer holds
//! while it publishes, so its snapshot (or its replay from the ring) ends exactly where
//! its live changes begin. The channel's capacity bounds what a slow client may fall
//! behind; one that falls further is told to resync (`Lagged` → a fresh snapshot), never
//! dropped silently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::dash::WindowRow;

/// The position of a change: Redis Stream ids (`<ms>-<seq>`), ordered. With `--serve`
/// (no Redis) `ms` is the process's start time and `seq` counts changes, so an id of an
/// earlier process is recognized as such.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EventId { ms, seq }),
            _ => Err(format!("`{s}` is not an event id (<ms>-<seq>)")),
        }
    }
}

/// What a change does to its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The window's (new) result.
    Upsert,
    /// The window is gone (absorbed by a session merge).
    Retract,
}

impl Op {
    /// `upsert` or `retract`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Retract => "retract",
        }
    }
}

/// One change of one window of one key of one feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its position.
    pub id: EventId,
    /// The feed (`<job>.<sink>`, or `<job>.<flow>` with `--serve`).
    pub feed: String,
    /// The key (the Redis key, or the key fields with `--serve`).
    pub key: String,
    /// Upsert or retract.
    pub op: Op,
    /// The result row (JSON).
    pub row: String,
}

/// What a frame is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A change: its id, feed and key (for filters).
    Change {
        /// Its position.
        id: EventId,
        /// Its feed.
        feed: Arc<str>,
        /// Its key.
        key: Arc<str>,
    },
    /// A job's progress.
    Status,
    /// The feeds changed.
    Feeds,
    /// The hub's history was replaced (Redis lost what the server had): every client
    /// resyncs.
    Reset,
    /// Time for idle streams to send a keep-alive (one timer for all clients).
    KeepAlive,
    /// The server is stopping: every stream says `bye` and ends.
    Bye,
}

/// A message to every client, serialized once.
#[derive(Debug)]
pub struct Frame {
    /// What it is.
    pub kind: FrameKind,
    /// The SSE form (`id:`, `event:`, `data:` lines and a blank line).
    pub sse: Bytes,
    /// The JSON form (WebSocket text messages).
    pub json: Bytes,
}

impl Frame {
    fn new(kind: FrameKind, event: &str, id: Option<EventId>, json: String) -> Self {
        let sse = sse_bytes(event, id, &json);
        Frame {
            kind,
            sse,
            json: Bytes::from(json),
        }
    }
}

/// The SSE form of one message (`data` must be one line: JSON is).
pub fn sse_bytes(event: &str, id: Option<EventId>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 48);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(&id.to_string());
        s.push('\n');
    }
    s.push_str("event: ");
    s.push_str(event);
    s.push_str("\ndata: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// Which changes a client wants: feeds (none: all) and keys (none: all; `*` matches any
/// run of characters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Feed ids, or flow names (`views`, `job.views`).
    pub feeds: Vec<String>,
    /// Keys or key patterns.
    pub keys: Vec<String>,
}

impl Filter {
    /// Whether a feed is wanted (`flow` is its flow's name, `job` its job's).
    pub fn wants_feed(&self, feed: &str, job: &str, flow: &str) -> bool {
        self.feeds.is_empty()
            || self.feeds.iter().any(|f| {
                f == feed
                    || f == flow
                    || f.strip_prefix(job)
                        .and_then(|r| r.strip_prefix('.'))
                        .is_some_and(|r| r == flow)
            })
    }

    /// Whether a key is wanted.
    pub fn wants_key(&self, key: &str) -> bool {
        self.keys.is_empty() || self.keys.iter().any(|p| glob(p, key))
    }
}

/// `*` matches any run of characters; everything else itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// Sizes of a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Windows kept in memory per key (snapshots and REST show at most this many).
    pub keep: usize,
    /// Recent changes kept for resuming clients.
    pub ring: usize,
    /// How far (in messages) a client may fall behind before it must resync.
    pub channel: usize,
    /// Keys in one snapshot at most (the most recently changed).
    pub snapshot_keys: usize,
    /// `Some(ms)`: ids are `<ms>-<seq>` made by this hub (no Redis); a resume id with
    /// another `ms` is from another process.
    pub epoch: Option<u64>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            keep: 60,
            ring: 20_000,
            channel: 4096,
            snapshot_keys: 1000,
            epoch: None,
        }
    }
}

/// A feed as the hub knows it.
#[derive(Clone, Debug)]
pub struct FeedDesc {
    /// `<job>.<sink>`.
    pub id: String,
    /// Its job.
    pub job: String,
    /// Its flow.
    pub flow: String,
    /// The descriptor as JSON (for clients).
    pub json: String,
}

impl FeedDesc {
    /// From the descriptor JSON (`streamc:feeds`); fields that are missing are empty.
    pub fn from_json(id: &str, json: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let json = if v.is_object() {
            json.to_string()
        } else {
            serde_json::json!({ "id": id }).to_string()
        };
        FeedDesc {
            id: id.to_string(),
            job: s("job"),
            flow: s("flow"),
            json,
        }
    }
}

struct KeyState {
    /// Newest windows, by (start, end).
    windows: BTreeMap<(i64, i64), Arc<str>>,
    /// The last change.
    changed: EventId,
}

struct FeedState {
    desc: FeedDesc,
    keys: HashMap<Arc<str>, KeyState>,
}

struct JobStatus {
    json: String,
    records_in: u64,
    time: i64,
    rate: Option<f64>,
}

struct State {
    feeds: BTreeMap<String, FeedState>,
    status: BTreeMap<String, JobStatus>,
    ring: VecDeque<Arc<Frame>>,
    /// Every change after this one is in `ring`.
    ring_base: EventId,
    /// The last change.
    pos: EventId,
    tx: broadcast::Sender<Arc<Frame>>,
}

/// The hub: see the module docs.
pub struct Hub {
    cfg: HubConfig,
    state: Mutex<State>,
}

/// Something to send to one client: a shared frame, or a message made for it alone.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame every client gets.
    Frame(Arc<Frame>),
    /// A message of this client's own (snapshot, resync).
    Own {
        /// The SSE event name (also the JSON `type`).
        event: &'static str,
        /// The SSE id (a snapshot's position).
        id: Option<EventId>,
        /// The JSON.
        json: String,
    },
}

/// How a client starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A snapshot, then changes.
    Snapshot,
    /// The changes after this id (`Last-Event-ID`).
    Resume(EventId),
    /// Only the changes from now on.
    Live,
}

/// A client's subscription.
pub struct Subscription {
    /// Its live changes.
    pub rx: broadcast::Receiver<Arc<Frame>>,
    /// What to send first.
    pub initial: Vec<Outgoing>,
    /// The position the client is at once `initial` and `backfill` are sent.
    pub pos: EventId,
    /// Changes after `.0` up to and including `.1` that are older than the ring: the
    /// caller reads them from the change log (Redis), and sends them before `initial`.
    pub backfill: Option<(EventId, EventId)>,
}

/// Why a client resyncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// It fell behind by more than the channel holds.
    Lagged,
    /// Its `Last-Event-ID` is older than what the change log keeps, or unknown.
    Gone,
    /// The server lost its history (Redis was flushed or trimmed past it).
    Reset,
}

impl Resync {
    fn as_str(self) -> &'static str {
        match self {
            Resync::Lagged => "lagged",
            Resync::Gone => "gone",
            Resync::Reset => "reset",
        }
    }
}

impl Hub {
    /// An empty hub at position `pos` (Redis: the change log's last id; else `epoch-0`).
    pub fn new(cfg: HubConfig, pos: EventId) -> Arc<Self> {
        let (tx, _) = broadcast::channel(cfg.channel.max(16));
        Arc::new(Hub {
            state: Mutex::new(State {
                feeds: BTreeMap::new(),
                status: BTreeMap::new(),
                ring: VecDeque::new(),
                ring_base: pos,
                pos,
                tx,
            }),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than stopping; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The position of the last change.
    pub fn position(&self) -> EventId {
        self.lock().pos
    }

    /// Clients subscribed now.
    pub fn clients(&self) -> usize {
        self.lock().tx.receiver_count()
    }

    /// Adds or replaces feeds; tells clients.
    pub fn set_feeds(&self, feeds: Vec<FeedDesc>) {
        let mut st = self.lock();
        let mut changed = false;
        for f in feeds {
            match st.feeds.get_mut(&f.id) {
                Some(fs) if fs.desc.json == f.json => {}
                Some(fs) => {
                    fs.desc = f;
                    changed = true;
                }
                None => {
                    st.feeds.insert(
                        f.id.clone(),
                        FeedState {
                            desc: f,
                            keys: HashMap::new(),
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            let json = format!("{{\"type\":\"feeds\",\"feeds\":{}}}", feeds_json(&st));
            let _ = st
                .tx
                .send(Arc::new(Frame::new(FrameKind::Feeds, "feeds", None, json)));
        }
    }

    /// The feeds as a JSON array of descriptors.
    pub fn feeds_json(&self) -> String {
        feeds_json(&self.lock())
    }

    /// Applies a change and sends it to every client. A change at or before the
    /// current position is a duplicate and ignored (returns false).
    pub fn publish(&self, change: &Change) -> bool {
        let window = WindowRow::parse(&[], change.row.as_bytes())
            .and_then(|w| w.window())
            .ok();
        let mut st = self.lock();
        if change.id <= st.pos {
            return false;
        }
        let keep = self.cfg.keep.max(1);
        if !st.feeds.contains_key(&change.feed) {
            let desc = FeedDesc::from_json(&change.feed, "");
            st.feeds.insert(
                change.feed.clone(),
                FeedState {
                    desc,
                    keys: HashMap::new(),
                },
            );
        }
        let Some(fs) = st.feeds.get_mut(&change.feed) else {
            return false;
        };
        let feed: Arc<str> = Arc::from(fs.desc.id.as_str());
        let key: Arc<str> = match fs.keys.get_key_value(change.key.as_str()) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(change.key.as_str()),
        };
        if let Some(w) = window {
            match change.op {
                Op::Upsert => {
                    let ks = fs.keys.entry(Arc::clone(&key)).or_insert_with(|| KeyState {
                        windows: BTreeMap::new(),
                        changed: change.id,
                    });
                    ks.changed = change.id;
                    ks.windows.insert(w, Arc::from(change.row.as_str()));
                    while ks.windows.len() > keep {
                        ks.windows.pop_first();
                    }
                }
                Op::Retract => {
                    if let Some(ks) = fs.keys.get_mut(&key) {
                        ks.windows.remove(&w);
                        ks.changed = change.id;
                        if ks.windows.is_empty() {
                            fs.keys.remove(&key);
                        }
                    }
                }
            }
        }
        let json = change_json_of(change);
        let frame = Arc::new(Frame::new(
            FrameKind::Change {
                id: change.id,
                feed,
                key,
            },
            "change",
            Some(change.id),
            json,
        ));
        st.pos = change.id;
        st.ring.push_back(Arc::clone(&frame));
        while st.ring.len() > self.cfg.ring.max(1) {
            if let Some(old) = st.ring.pop_front()
                && let FrameKind::Change { id, .. } = old.kind
            {
                st.ring_base = id;
            }
        }
        let _ = st.tx.send(frame);
        true
    }

    /// A job's progress (the status JSON of `crate::redis::status_json`): kept for
    /// snapshots and sent to every client, with the event rate since the last one.
    pub fn set_status(&self, job: &str, json: &str) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let records_in: u64 = v["sources"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x["records_in"].as_u64()).sum())
            .unwrap_or(0);
        let time = v["time"].as_i64().unwrap_or(0);
        let mut st = self.lock();
        if st.status.get(job).is_some_and(|s| s.json == json) {
            return;
        }
        let rate = match st.status.get(job) {
            Some(prev) if time > prev.time && records_in >= prev.records_in => {
                let r = (records_in - prev.records_in) as f64 * 1000.0 / (time - prev.time) as f64;
                // Smoothed over about a second of 250 ms reports.
                Some(prev.rate.map_or(r, |p| p * 0.6 + r * 0.4))
            }
            Some(prev) if time == prev.time => prev.rate,
            _ => None,
        };
        let status = JobStatus {
            json: json.to_string(),
            records_in,
            time,
            rate,
        };
        let out = status_json(job, &status);
        st.status.insert(job.to_string(), status);
        let _ = st.tx.send(Arc::new(Frame::new(
            FrameKind::Status,
            "status",
            None,
            format!("{{\"type\":\"status\",\"status\":{out}}}"),
        )));
    }

    /// Replaces everything (feeds, windows, position) after the writer lost track (Redis
    /// trimmed its log past the server's position, or was flushed); every client is
    /// told to resync.
    pub fn reset(
        &self,
        pos: EventId,
        feeds: Vec<FeedDesc>,
        windows: Vec<(String, String, Vec<String>)>,
    ) {
        let mut st = self.lock();
        st.feeds.clear();
        st.ring.clear();
        st.ring_base = pos;
        st.pos = pos;
        for f in feeds {
            st.feeds.insert(
                f.id.clone(),
                FeedState {
                    desc: f,
                    keys: HashMap::new(),
                },
            );
        }
        let keep = self.cfg.keep.max(1);
        for (feed, key, rows) in windows {
            let Some(fs) = st.feeds.get_mut(&feed) else {
                continue;
            };
            let mut ks = KeyState {
                windows: BTreeMap::new(),
                changed: EventId::default(),
            };
            for r in rows {
                if let Ok(w) = WindowRow::parse(&[], r.as_bytes()).and_then(|w| w.window()) {
                    ks.windows.insert(w, Arc::from(r.as_str()));
                }
            }
            while ks.windows.len() > keep {
                ks.windows.pop_first();
            }
            if !ks.windows.is_empty() {
                fs.keys.insert(Arc::from(key.as_str()), ks);
            }
        }
        let _ = st.tx.send(Arc::new(Frame::new(
            FrameKind::Reset,
            "reset",
            None,
            "{\"type\":\"reset\"}".to_string(),
        )));
    }

    /// Tells every client to send a keep-alive (see `http.rs`).
    pub fn keep_alive(&self) {
        let st = self.lock();
        let _ = st.tx.send(Arc::new(Frame {
            kind: FrameKind::KeepAlive,
            sse: Bytes::from_static(b": keep-alive\n\n"),
            json: Bytes::new(),
        }));
    }

    /// Tells every client that the server is stopping.
    pub fn bye(&self) {
        let st = self.lock();
        let _ = st.tx.send(Arc::new(Frame::new(
            FrameKind::Bye,
            "bye",
            None,
            "{\"type\":\"bye\",\"reason\":\"shutdown\"}".to_string(),
        )));
    }

    /// Subscribes a client: under the publishing lock, so what `initial` (and
    /// `backfill`) hold ends exactly where `rx` begins. `backfill_ok`: changes older
    /// than the ring can be read from a change log (Redis).
    pub fn subscribe(
        &self,
        filter: &Filter,
        start: Start,
        limit: usize,
        backfill_ok: bool,
    ) -> Subscription {
        let st = self.lock();
        let rx = st.tx.subscribe();
        let mut initial = Vec::new();
        let mut backfill = None;
        match start {
            Start::Live => {}
            Start::Snapshot => initial.push(self.snapshot(&st, filter, limit, None)),
            Start::Resume(last) => {
                let foreign = self.cfg.epoch.is_some_and(|e| last.ms != e);
                if last == st.pos && !foreign {
                } else if foreign || last > st.pos || (last < st.ring_base && !backfill_ok) {
                    initial.push(self.snapshot(&st, filter, limit, Some(Resync::Gone)));
                } else {
                    if last < st.ring_base {
                        backfill = Some((last, st.ring_base));
                    }
                    for f in &st.ring {
                        if let FrameKind::Change { id, feed, key } = &f.kind
                            && *id > last
                            && wants(&st, filter, feed, key)
                        {
                            initial.push(Outgoing::Frame(Arc::clone(f)));
                        }
                    }
                }
            }
        }
        Subscription {
            rx,
            initial,
            pos: st.pos,
            backfill,
        }
    }

    /// A fresh snapshot and subscription for a client that must resync.
    pub fn resync(&self, filter: &Filter, limit: usize, why: Resync) -> Subscription {
        let st = self.lock();
        let rx = st.tx.subscribe();
        let initial = vec![self.snapshot(&st, filter, limit, Some(why))];
        Subscription {
            rx,
            initial,
            pos: st.pos,
            backfill: None,
        }
    }

    /// The ids of the feeds a filter names (by id, flow name or `job.flow`); None when
    /// it names none (all feeds).
    pub fn resolve(&self, filter: &Filter) -> Option<Vec<String>> {
        if filter.feeds.is_empty() {
            return None;
        }
        let st = self.lock();
        let mut ids: Vec<String> = st
            .feeds
            .values()
            .filter(|f| filter.wants_feed(&f.desc.id, &f.desc.job, &f.desc.flow))
            .map(|f| f.desc.id.clone())
            .collect();
        // Names that are no feed yet may be ids of feeds to come.
        ids.extend(filter.feeds.iter().cloned());
        Some(ids)
    }

    fn snapshot(&self, st: &State, filter: &Filter, limit: usize, why: Option<Resync>) -> Outgoing {
        let limit = limit.clamp(1, self.cfg.keep.max(1));
        let mut out = String::with_capacity(4096);
        out.push_str("{\"type\":\"snapshot\",\"id\":\"");
        out.push_str(&st.pos.to_string());
        out.push('"');
        if let Some(w) = why {
            out.push_str(",\"resync\":\"");
            out.push_str(w.as_str());
            out.push('"');
        }
        out.push_str(",\"feeds\":");
        out.push_str(&feeds_json(st));
        out.push_str(",\"status\":");
        out.push_str(&all_status_json(st));
        out.push_str(",\"windows\":{");
        let mut truncated = false;
        let mut first_feed = true;
        for fs in st.feeds.values() {
            if !filter.wants_feed(&fs.desc.id, &fs.desc.job, &fs.desc.flow) {
                continue;
            }
            let mut keys: Vec<(&Arc<str>, &KeyState)> = fs
                .keys
                .iter()
                .filter(|(k, _)| filter.wants_key(k))
                .collect();
            if keys.len() > self.cfg.snapshot_keys {
                truncated = true;
                keys.sort_by_key(|k| std::cmp::Reverse(k.1.changed));
                keys.truncate(self.cfg.snapshot_keys);
            }
            keys.sort_by(|a, b| a.0.cmp(b.0));
            if !first_feed {
                out.push(',');
            }
            first_feed = false;
            push_json_str(&mut out, &fs.desc.id);
            out.push_str(":{");
            for (i, (k, ks)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(&mut out, k);
                out.push_str(":[");
                for (j, row) in ks.windows.values().rev().take(limit).enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str(row);
                }
                out.push(']');
            }
            out.push('}');
        }
        out.push_str("},\"truncated\":");
        out.push_str(if truncated { "true" } else { "false" });
        out.push('}');
        Outgoing::Own {
            event: "snapshot",
            id: Some(st.pos),
            json: out,
        }
    }

    /// REST: the newest `limit` windows (newest first) of the keys of `feed` that pass
    /// `keys` (all keys when empty; at most the configured snapshot size).
    pub fn windows_json(&self, feed: &str, keys: &[String], limit: usize) -> Option<String> {
        let st = self.lock();
        let fs = find_feed(&st, feed)?;
        let filter = Filter {
            feeds: Vec::new(),
            keys: keys.to_vec(),
        };
        let limit = limit.clamp(1, self.cfg.keep.max(1));
        let mut ks: Vec<(&Arc<str>, &KeyState)> = fs
            .keys
            .iter()
            .filter(|(k, _)| filter.wants_key(k))
            .collect();
        let truncated = ks.len() > self.cfg.snapshot_keys;
        if truncated {
            ks.sort_by_key(|k| std::cmp::Reverse(k.1.changed));
            ks.truncate(self.cfg.snapshot_keys);
        }
        ks.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = format!("{{\"id\":\"{}\",\"feed\":", st.pos);
        push_json_str(&mut out, &fs.desc.id);
        out.push_str(",\"windows\":{");
        for (i, (k, s)) in ks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push_str(":[");
            for (j, row) in s.windows.values().rev().take(limit).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(row);
            }
            out.push(']');
        }
        out.push_str("},\"truncated\":");
        out.push_str(if truncated { "true" } else { "false" });
        out.push('}');
        Some(out)
    }

    /// REST: the keys of `feed` with their newest window, sorted by that window's
    /// `sort` field (descending; numbers only), else by their last change.
    pub fn keys_json(&self, feed: &str, sort: Option<&str>, limit: usize) -> Option<String> {
        let rows: Vec<(Arc<str>, EventId, Arc<str>)> = {
            let st = self.lock();
            let fs = find_feed(&st, feed)?;
            fs.keys
                .iter()
                .filter_map(|(k, s)| {
                    s.windows
                        .values()
                        .next_back()
                        .map(|r| (Arc::clone(k), s.changed, Arc::clone(r)))
                })
                .collect()
        };
        let mut rows: Vec<(f64, Arc<str>, EventId, Arc<str>)> = rows
            .into_iter()
            .map(|(k, changed, row)| {
                let v = sort
                    .and_then(|f| {
                        serde_json::from_str::<serde_json::Value>(&row)
                            .ok()
                            .and_then(|v| v.get(f).and_then(serde_json::Value::as_f64))
                    })
                    .unwrap_or(f64::NEG_INFINITY);
                (v, k, changed, row)
            })
            .collect();
        if sort.is_some() {
            rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        } else {
            rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        }
        rows.truncate(limit.max(1));
        let mut out = String::from("{\"keys\":[");
        for (i, (_, k, changed, row)) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"key\":");
            push_json_str(&mut out, k);
            out.push_str(",\"changed\":\"");
            out.push_str(&changed.to_string());
            out.push_str("\",\"latest\":");
            out.push_str(row);
            out.push('}');
        }
        out.push_str("]}");
        Some(out)
    }

    /// REST: every job's latest progress.
    pub fn status_json(&self) -> String {
        all_status_json(&self.lock())
    }
}

fn find_feed<'a>(st: &'a State, feed: &str) -> Option<&'a FeedState> {
    st.feeds.get(feed).or_else(|| {
        st.feeds
            .values()
            .find(|f| f.desc.flow == feed || format!("{}.{}", f.desc.job, f.desc.flow) == feed)
    })
}

fn wants(st: &State, filter: &Filter, feed: &str, key: &str) -> bool {
    if !filter.wants_key(key) {
        return false;
    }
    if filter.feeds.is_empty() {
        return true;
    }
    match st.feeds.get(feed) {
        Some(fs) => filter.wants_feed(&fs.desc.id, &fs.desc.job, &fs.desc.flow),
        None => filter.wants_feed(feed, "", ""),
    }
}

fn feeds_json(st: &State) -> String {
    let mut out = String::from("[");
    for (i, f) in st.feeds.values().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&f.desc.json);
    }
    out.push(']');
    out
}

fn status_json(job: &str, s: &JobStatus) -> String {
    let mut out = String::from("{\"job\":");
    push_json_str(&mut out, job);
    out.push_str(",\"rate\":");
    match s.rate {
        Some(r) if r.is_finite() => out.push_str(&format!("{r:.1}")),
        _ => out.push_str("null"),
    }
    out.push_str(",\"progress\":");
    if serde_json::from_str::<serde_json::Value>(&s.json).is_ok() {
        out.push_str(&s.json);
    } else {
        out.push_str("null");
    }
    out.push('}');
    out
}

fn all_status_json(st: &State) -> String {
    let mut out = String::from("[");
    for (i, (job, s)) in st.status.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&status_json(job, s));
    }
    out.push(']');
    out
}

/// The JSON message of a change (`{"type": "change", "id", "feed", "key", "op", "row"}`).
pub fn change_json_of(c: &Change) -> String {
    let mut out = String::with_capacity(c.row.len() + c.key.len() + c.feed.len() + 64);
    out.push_str("{\"type\":\"change\",\"id\":\"");
    out.push_str(&c.id.to_string());
    out.push_str("\",\"feed\":");
    push_json_str(&mut out, &c.feed);
    out.push_str(",\"key\":");
    push_json_str(&mut out, &c.key);
    out.push_str(",\"op\":\"");
    out.push_str(c.op.as_str());
    out.push_str("\",\"row\":");
    if serde_json::from_str::<serde::de::IgnoredAny>(&c.row).is_ok() {
        out.push_str(&c.row);
    } else {
        out.push_str("null");
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    // serde_json never fails on a str.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> EventId {
        EventId { ms: 7, seq }
    }

    fn change(seq: u64, key: &str, start: i64, views: u64, rev: u32, op: Op) -> Change {
        Change {
            id: id(seq),
            feed: "job.dash".into(),
            key: key.into(),
            op,
            row: format!(
                r#"{{"views":{views},"window_start":{start},"window_end":{},"revision":{rev}}}"#,
                start + 1000
            ),
        }
    }

    fn hub(ring: usize, channel: usize) -> Arc<Hub> {
        let h = Hub::new(
            HubConfig {
                keep: 3,
                ring,
                channel,
                snapshot_keys: 10,
                epoch: Some(7),
            },
            id(0),
        );
        h.set_feeds(vec![FeedDesc::from_json(
            "job.dash",
            r#"{"id":"job.dash","job":"job","flow":"views"}"#,
        )]);
        h
    }

    fn json(o: &Outgoing) -> serde_json::Value {
        match o {
            Outgoing::Frame(f) => serde_json::from_slice(&f.json).unwrap(),
            Outgoing::Own { json, .. } => serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn ids_parse_and_order() {
        let a: EventId = "1700000000000-3".parse().unwrap();
        assert_eq!(
            a,
            EventId {
                ms: 1700000000000,
                seq: 3
            }
        );
        assert_eq!(a.to_string(), "1700000000000-3");
        assert!(a < "1700000000000-10".parse().unwrap());
        assert_eq!("5".parse::<EventId>().unwrap(), EventId { ms: 5, seq: 0 });
        assert!("x-1".parse::<EventId>().is_err());
        assert!("".parse::<EventId>().is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("views:*", "views:42"));
        assert!(glob("*:42", "views:42"));
        assert!(glob("v*s:*2", "views:42"));
        assert!(!glob("views:*", "clicks:1"));
        assert!(glob("a", "a") && !glob("a", "ab"));
        assert!(glob("*", ""));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn the_mirror_keeps_the_newest_windows_and_applies_retractions() {
        let h = hub(100, 16);
        for (i, s) in [0, 1000, 2000, 3000].iter().enumerate() {
            assert!(h.publish(&change(i as u64 + 1, "k1", *s, 1, 0, Op::Upsert)));
        }
        assert!(
            !h.publish(&change(2, "k1", 0, 1, 0, Op::Upsert)),
            "duplicate"
        );
        h.publish(&change(5, "k1", 3000, 9, 1, Op::Upsert));
        h.publish(&change(6, "k1", 1000, 1, 0, Op::Retract));
        let w: serde_json::Value =
            serde_json::from_str(&h.windows_json("views", &[], 10).unwrap()).unwrap();
        let starts: Vec<i64> = w["windows"]["k1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["window_start"].as_i64().unwrap())
            .collect();
        assert_eq!(starts, [3000, 2000], "newest first, 3 kept, one retracted");
        assert_eq!(w["windows"]["k1"][0]["views"], 9);
        assert_eq!(w["id"], "7-6");
    }

    #[test]
    fn a_resume_replays_exactly_the_missed_changes_that_pass_the_filter() {
        let h = hub(100, 16);
        for i in 1..=6 {
            let key = if i % 2 == 0 { "even" } else { "odd" };
            h.publish(&change(i, key, i as i64 * 1000, i, 0, Op::Upsert));
        }
        let f = Filter {
            feeds: vec!["views".into()],
            keys: vec!["ev*".into()],
        };
        let s = h.subscribe(&f, Start::Resume(id(2)), 10, false);
        let ids: Vec<serde_json::Value> = s.initial.iter().map(|o| json(o)["id"].clone()).collect();
        assert_eq!(ids, ["7-4", "7-6"]);
        assert_eq!(s.pos, id(6));
        assert!(s.backfill.is_none());
        // Nothing missed: nothing to send.
        let s = h.subscribe(&f, Start::Resume(id(6)), 10, false);
        assert!(s.initial.is_empty());
        // Another process's id, or one from the future: a resync.
        for other in [EventId { ms: 8, seq: 1 }, id(99)] {
            let s = h.subscribe(&f, Start::Resume(other), 10, false);
            assert_eq!(s.initial.len(), 1);
            assert_eq!(json(&s.initial[0])["resync"], "gone");
        }
    }

    #[test]
    fn a_resume_older_than_the_ring_resyncs_or_backfills() {
        let h = hub(3, 16);
        for i in 1..=10 {
            h.publish(&change(i, "k", i as i64 * 1000, i, 0, Op::Upsert));
        }
        let f = Filter::default();
        let s = h.subscribe(&f, Start::Resume(id(7)), 10, false);
        assert_eq!(s.initial.len(), 3, "8, 9, 10 are in the ring");
        let s = h.subscribe(&f, Start::Resume(id(6)), 10, false);
        assert_eq!(json(&s.initial[0])["resync"], "gone");
        let s = h.subscribe(&f, Start::Resume(id(2)), 10, true);
        assert_eq!(s.backfill, Some((id(2), id(7))));
        assert_eq!(s.initial.len(), 3);
    }

    #[test]
    fn a_resume_from_another_process_or_the_future_resyncs() {
        let h = hub(100, 16);
        for i in 1..=5 {
            h.publish(&change(i, "k", i as i64 * 1000, i, 0, Op::Upsert));
        }
        let f = Filter::default();
        // An id of an earlier run of the job (another epoch), though its sequence is
        // within this run's ring; one past this hub's position; one of this run.
        let earlier = EventId { ms: 6, seq: 2 };
        let s = h.subscribe(&f, Start::Resume(earlier), 10, false);
        assert_eq!(s.initial.len(), 1);
        assert_eq!(json(&s.initial[0])["resync"], "gone");
        let s = h.subscribe(&f, Start::Resume(id(9)), 10, true);
        assert_eq!(json(&s.initial[0])["resync"], "gone");
        assert_eq!(s.backfill, None);
        let s = h.subscribe(&f, Start::Resume(id(2)), 10, false);
        assert_eq!(
            s.initial
                .iter()
                .map(|o| json(o)["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            ["7-3", "7-4", "7-5"]
        );
    }

    #[test]
    fn subscribing_is_gap_free_against_a_concurrent_writer() {
        let h = hub(1_000_000, 1 << 16);
        let writer = {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                for i in 1..=20_000u64 {
                    h.publish(&change(
                        i,
                        &format!("k{}", i % 50),
                        (i as i64 / 50) * 1000,
                        i,
                        0,
                        Op::Upsert,
                    ));
                }
            })
        };
        let mut subs = Vec::new();
        while !writer.is_finished() {
            let s = h.subscribe(&Filter::default(), Start::Resume(id(0)), 10, false);
            subs.push(s);
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        writer.join().unwrap();
        assert!(subs.len() > 3);
        for mut s in subs {
            let mut seqs: Vec<u64> = s
                .initial
                .iter()
                .map(|o| match o {
                    Outgoing::Frame(f) => match &f.kind {
                        FrameKind::Change { id, .. } => id.seq,
                        _ => 0,
                    },
                    Outgoing::Own { .. } => 0,
                })
                .collect();
            while let Ok(f) = s.rx.try_recv() {
                if let FrameKind::Change { id, .. } = &f.kind {
                    seqs.push(id.seq);
                }
            }
            let expect: Vec<u64> = (1..=20_000).collect();
            assert_eq!(seqs, expect, "every change once, in order");
        }
    }

    #[test]
    fn snapshots_hold_the_filtered_windows_at_a_position() {
        let h = hub(100, 16);
        h.publish(&change(1, "a", 0, 1, 0, Op::Upsert));
        h.publish(&change(2, "b", 0, 2, 0, Op::Upsert));
        h.publish(&change(3, "a", 0, 5, 1, Op::Upsert));
        h.set_status(
            "job",
            r#"{"job":"job","time":1000,"sources":[{"name":"s","records_in":10}]}"#,
        );
        h.set_status(
            "job",
            r#"{"job":"job","time":2000,"sources":[{"name":"s","records_in":110}]}"#,
        );
        let f = Filter {
            feeds: vec![],
            keys: vec!["a".into()],
        };
        let s = h.subscribe(&f, Start::Snapshot, 10, false);
        let snap = json(&s.initial[0]);
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["id"], "7-3");
        assert_eq!(snap["windows"]["job.dash"]["a"][0]["views"], 5);
        assert!(snap["windows"]["job.dash"].get("b").is_none());
        assert_eq!(snap["feeds"][0]["flow"], "views");
        assert_eq!(snap["status"][0]["rate"], 100.0);
        let keys: serde_json::Value =
            serde_json::from_str(&h.keys_json("job.dash", Some("views"), 10).unwrap()).unwrap();
        assert_eq!(keys["keys"][0]["key"], "a");
        assert_eq!(keys["keys"][1]["key"], "b");
        assert!(h.keys_json("nope", None, 10).is_none());
    }
}
