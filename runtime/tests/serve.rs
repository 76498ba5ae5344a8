//! `streamc serve` against a real Redis (`scripts/redis start`; `STREAMC_REDIS` or
//! redis://127.0.0.1:6379): the server runs in process (its own runtime on a thread),
//! rows are written by the real Redis sink, and clients are plain HTTP/SSE and
//! WebSocket clients over loopback. Every test has a change log, a job and keys of its
//! own (database 11), so tests run in parallel.
//!
//! Run with `cargo test -p streamc-runtime --features serve,redis --test serve`.

#![cfg(all(feature = "serve", feature = "redis"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use streamc_runtime::redis::conn::Conn;
use streamc_runtime::redis::resp::RedisUrl;
use streamc_runtime::redis::{FeedSpec, RedisSink, RedisSinkSpec};
use streamc_runtime::serve::hub::HubConfig;
use streamc_runtime::serve::redis::{ServeArgs, run};
use streamc_runtime::sink::Sink;
use tokio::sync::{oneshot, watch};

const DB: u32 = 11;

fn url() -> String {
    let base = std::env::var("STREAMC_REDIS")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let rest = base.trim().trim_start_matches("redis://");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("redis://{host}/{DB}")
}

fn redis() -> Conn {
    let u = url();
    Conn::connect(&RedisUrl::parse(&u).unwrap()).unwrap_or_else(|e| {
        panic!("no Redis answers at {u} ({e}): run `scripts/redis start` (or set STREAMC_REDIS)")
    })
}

fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A server on a free port, following its own change log.
struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// The settings of a test's server: its own change log, CORS for one origin.
fn args(stream: &str, hub: HubConfig) -> ServeArgs {
    ServeArgs {
        redis: url(),
        listen: "127.0.0.1:0".parse().unwrap(),
        stream: stream.to_string(),
        hub,
        cors: "https://example.test".to_string(),
        threads: Some(2),
        keepalive: Duration::from_secs(15),
    }
}

impl Server {
    fn start(stream: &str, hub: HubConfig) -> Self {
        Self::start_with(args(stream, hub))
    }

    fn start_with(args: ServeArgs) -> Self {
        let (stop, rx) = watch::channel(false);
        let (tx_addr, rx_addr) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run(args, rx, Some(tx_addr)))
        });
        let addr = rx_addr
            .blocking_recv()
            .expect("the server started (is Redis running? scripts/redis start)");
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// SIGTERM-like: every stream is told `bye`, then `run` returns.
    fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.send(true);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Case {
    spec: RedisSinkSpec,
    prefix: String,
}

fn case(what: &str) -> Case {
    let prefix = unique(what);
    Case {
        spec: RedisSinkSpec {
            url: Some(url()),
            key: format!("{prefix}:views:{{user}}"),
            channel: format!("{prefix}:ch"),
            stream: format!("{prefix}:log"),
            stream_max_len: 100_000,
            keep: 100,
            ttl_ms: Some(600_000),
            feed: FeedSpec {
                job: format!("{prefix}-job"),
                sink: "dash".into(),
                flow: "views".into(),
                key_fields: vec!["user".into()],
                aggregates: vec!["views".into()],
                window: "tumbling 1s".into(),
            },
        },
        prefix,
    }
}

impl Case {
    fn feed(&self) -> String {
        self.spec.feed.id()
    }
    fn key(&self, user: &str) -> String {
        format!("{}:views:{user}", self.prefix)
    }
    /// A second flow of the same job, its own sink, the same change log: another feed.
    fn other_flow(&self) -> RedisSinkSpec {
        let mut s = self.spec.clone();
        s.key = format!("{}:clicks:{{user}}", self.prefix);
        s.channel = format!("{}:ch2", self.prefix);
        s.feed.sink = "dash2".into();
        s.feed.flow = "clicks".into();
        s
    }
}

fn row(user: &str, start: i64, views: u64, revision: u32) -> String {
    json!({"views": views, "user": user, "window_start": start, "window_end": start + 1000, "revision": revision})
        .to_string()
}

fn write(sink: &mut RedisSink, rows: &[String]) {
    for r in rows {
        sink.write(None, r.as_bytes()).unwrap();
    }
    sink.flush().unwrap();
}

/// `GET path`: (status, headers, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(addr, "GET", path, "")
}

/// `METHOD path` with extra header lines (each ending in CRLF): (status, headers, body).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body.as_bytes()).0
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

/// Decodes complete chunks: (text, bytes used).
fn dechunk(raw: &[u8]) -> (String, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(nl) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[at..at + nl]).to_string();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            break;
        };
        let start = at + nl + 2;
        if raw.len() < start + size + 2 {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        at = start + size + 2;
        if size == 0 {
            break;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), at)
}

/// One SSE event.
#[derive(Debug, Clone)]
struct Event {
    id: Option<String>,
    event: String,
    data: Json,
}

/// A blocking SSE client: the raw HTTP/1.1 response, chunked body decoded.
struct Sse {
    s: TcpStream,
    raw: Vec<u8>,
    /// Chunked transfer encoding, or a body delimited by the connection's end.
    chunked: bool,
    text: String,
    /// The last `id:` seen (what a browser sends as `Last-Event-ID`).
    last_id: Option<String>,
    /// Comment lines seen (`: keep-alive`), without the colon.
    comments: Vec<String>,
}

impl Sse {
    fn open(addr: SocketAddr, query: &str, last_id: Option<&str>) -> Self {
        Self::open_with(TcpStream::connect(addr).unwrap(), query, last_id)
    }

    fn open_with(mut s: TcpStream, query: &str, last_id: Option<&str>) -> Self {
        let extra = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            s,
            "GET /api/events?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.contains("200"), "{status}");
        let mut cors = false;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("content-type") {
                assert!(lower.contains("text/event-stream"), "{h}");
            }
            chunked |= lower.starts_with("transfer-encoding") && lower.contains("chunked");
            cors |= lower.starts_with("access-control-allow-origin");
            if h == "\r\n" {
                break;
            }
        }
        assert!(cors, "CORS on the event stream");
        let raw = r.buffer().to_vec();
        Sse {
            s,
            raw,
            chunked,
            text: String::new(),
            last_id: last_id.map(str::to_string),
            comments: Vec::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.chunked {
                let (t, used) = dechunk(&self.raw);
                self.text.push_str(&t);
                self.raw.drain(..used);
            } else {
                // Whole UTF-8 only (a read may end inside a character).
                let valid = match std::str::from_utf8(&self.raw) {
                    Ok(t) => t.len(),
                    Err(e) => e.valid_up_to(),
                };
                self.text
                    .push_str(std::str::from_utf8(&self.raw[..valid]).unwrap());
                self.raw.drain(..valid);
            }
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text[..end].to_string();
                self.text.drain(..end + 2);
                let mut id = None;
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix(':') {
                        self.comments.push(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if id.is_some() {
                    self.last_id = id.clone();
                }
                if data.is_empty() {
                    continue;
                }
                return Some(Event {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 65536];
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The next `change` event (status and feeds events skipped).
    fn change(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.next(deadline.saturating_duration_since(Instant::now()))?;
            if e.event == "change" || e.event == "snapshot" || e.event == "bye" {
                return Some(e);
            }
        }
    }
}

const T: Duration = Duration::from_secs(10);

fn views(e: &Event) -> u64 {
    e.data["row"]["views"].as_u64().unwrap()
}

#[test]
fn rest_shows_the_current_state_of_feeds_and_keys() {
    let c = case("rest");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    write(
        &mut sink,
        &[
            row("a", 0, 1, 0),
            row("a", 1000, 5, 0),
            row("b", 0, 9, 0),
            row("a", 0, 2, 1),
        ],
    );
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let (st, head, body) = get(server.addr, "/api/feeds");
    assert_eq!(st, 200);
    assert!(
        head.contains("access-control-allow-origin: https://example.test"),
        "{head}"
    );
    let feeds: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(feeds["feeds"][0]["id"], json!(c.feed()));
    assert_eq!(feeds["feeds"][0]["aggregates"], json!(["views"]));

    let (st, _, body) = get(
        server.addr,
        &format!("/api/windows?feed={}&key={}&limit=1", c.feed(), c.key("a")),
    );
    assert_eq!(st, 200, "{body}");
    let w: Json = serde_json::from_str(&body).unwrap();
    let a = &w["windows"][c.key("a")];
    assert_eq!(a.as_array().unwrap().len(), 1, "limit 1: the newest");
    assert_eq!(a[0]["window_start"], json!(1000));
    // A key pattern, and the flow's name instead of the feed id.
    let pattern = format!("{}:views:*", c.prefix);
    let (_, _, body) = get(
        server.addr,
        &format!("/api/windows?feed=views&key={pattern}"),
    );
    let w: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        w["windows"][c.key("a")][1]["views"],
        json!(2),
        "revision 1 replaced revision 0"
    );
    assert_eq!(w["windows"][c.key("b")][0]["views"], json!(9));

    let (_, _, body) = get(
        server.addr,
        &format!("/api/keys?feed={}&sort=views", c.feed()),
    );
    let k: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        k["keys"][0]["key"],
        json!(c.key("b")),
        "top key by views: {k}"
    );
    assert_eq!(k["keys"][1]["key"], json!(c.key("a")));

    let (st, _, body) = get(server.addr, "/api/windows");
    assert_eq!(st, 400, "{body}");
    let (st, _, _) = get(server.addr, "/api/windows?feed=nope");
    assert_eq!(st, 404);
    let (st, _, page) = get(server.addr, "/");
    assert_eq!(st, 200);
    assert!(page.contains("streamc") && page.contains("app.js"));
    let (st, _, js) = get(server.addr, "/vendor/uPlot.iife.min.js");
    assert_eq!(st, 200);
    assert!(js.len() > 40_000);
    server.stop().unwrap();
}

#[test]
fn sse_sends_a_snapshot_then_every_change_and_resumes_without_gap_or_duplicate() {
    let c = case("sse");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    write(&mut sink, &[row("a", 0, 1, 0)]);
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let q = format!("feed={}", c.feed());
    let mut sse = Sse::open(server.addr, &q, None);
    let snap = sse.change(T).expect("a snapshot");
    assert_eq!(snap.event, "snapshot");
    assert_eq!(
        snap.data["windows"][c.feed()][c.key("a")][0]["views"],
        json!(1)
    );
    assert_eq!(snap.id.as_deref(), snap.data["id"].as_str());

    let rows: Vec<String> = (1..=10).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    let mut ids = Vec::new();
    for i in 1..=10 {
        let e = sse.change(T).expect("a change");
        assert_eq!(e.event, "change");
        assert_eq!(views(&e), i);
        assert_eq!(e.data["op"], json!("upsert"));
        assert_eq!(e.data["key"], json!(c.key("a")));
        ids.push(e.id.clone().unwrap());
    }
    let last = sse.last_id.clone().unwrap();
    assert_eq!(&last, ids.last().unwrap());
    drop(sse);

    // Missed while disconnected.
    let rows: Vec<String> = (11..=30).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    let mut sse = Sse::open(server.addr, &q, Some(&last));
    for i in 11..=30 {
        let e = sse.change(T).expect("a missed change");
        assert_eq!(e.event, "change", "{e:?}");
        assert_eq!(views(&e), i, "in order, none twice, none missing");
    }
    // Then live.
    write(&mut sink, &[row("a", 31_000, 31, 0)]);
    assert_eq!(views(&sse.change(T).unwrap()), 31);
    assert!(
        sse.change(Duration::from_millis(300)).is_none(),
        "nothing more"
    );
    drop(sse);
    server.stop().unwrap();
}

#[test]
fn a_resume_older_than_the_ring_is_read_from_the_change_log() {
    let c = case("backfill");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(
        &c.spec.stream,
        HubConfig {
            ring: 5,
            ..HubConfig::default()
        },
    );
    let q = format!("feed={}", c.feed());
    let mut sse = Sse::open(server.addr, &q, None);
    assert_eq!(sse.change(T).unwrap().event, "snapshot");
    write(&mut sink, &[row("a", 0, 0, 0)]);
    assert_eq!(views(&sse.change(T).unwrap()), 0);
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    let rows: Vec<String> = (1..=40).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    let mut sse = Sse::open(server.addr, &q, Some(&last));
    for i in 1..=40 {
        let e = sse.change(T).expect("a missed change");
        assert_eq!((e.event.as_str(), views(&e)), ("change", i));
    }
    assert!(sse.change(Duration::from_millis(300)).is_none());
    server.stop().unwrap();
}

#[test]
fn a_resume_past_the_change_logs_retention_is_an_explicit_resync() {
    let c = case("trimmed");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(
        &c.spec.stream,
        HubConfig {
            ring: 5,
            ..HubConfig::default()
        },
    );
    let q = format!("feed={}", c.feed());
    let mut sse = Sse::open(server.addr, &q, None);
    assert_eq!(sse.change(T).unwrap().event, "snapshot");
    write(&mut sink, &[row("a", 0, 0, 0)]);
    sse.change(T).unwrap();
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    let rows: Vec<String> = (1..=40).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    // Redis keeps only the newest 3 changes.
    let mut r = redis();
    r.cmd(&["XTRIM", &c.spec.stream, "MAXLEN", "3"]).unwrap();
    let mut sse = Sse::open(server.addr, &q, Some(&last));
    let e = sse.change(T).unwrap();
    assert_eq!(e.event, "snapshot");
    assert_eq!(e.data["resync"], json!("gone"));
    let a = &e.data["windows"][c.feed()][c.key("a")];
    assert_eq!(
        a[0]["views"],
        json!(40),
        "the snapshot is the current state"
    );
    write(&mut sink, &[row("a", 41_000, 41, 0)]);
    assert_eq!(
        views(&sse.change(T).unwrap()),
        41,
        "then changes from the snapshot's id"
    );
    server.stop().unwrap();
}

#[test]
fn a_stalled_client_is_told_to_resync_never_left_deaf() {
    let c = case("stalled");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(
        &c.spec.stream,
        HubConfig {
            channel: 16,
            ..HubConfig::default()
        },
    );
    // A client with a tiny receive buffer that stops reading.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let mut sse = Sse::open_with(sock.into(), &format!("feed={}", c.feed()), None);
    assert_eq!(sse.change(T).unwrap().event, "snapshot");
    // Rows of 4 KB: far more than the socket buffers and the 16-message channel hold.
    let pad = "x".repeat(4000);
    let rows: Vec<String> = (0..3000)
        .map(|i| {
            json!({"views": i, "pad": pad, "user": format!("u{}", i % 10), "window_start": i * 1000, "window_end": i * 1000 + 1000, "revision": 0})
                .to_string()
        })
        .collect();
    write(&mut sink, &rows);
    write(&mut sink, &[row("end", 5_000_000, 7, 0)]);
    // Reading again: changes that fit, then a resync snapshot (state as of its id), then
    // changes after it. Applying them in order must end at Redis's state.
    let mut resyncs = 0;
    let mut newest: std::collections::HashMap<String, i64> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no end marker");
        let e = sse.change(T).unwrap_or_else(|| {
            panic!(
                "the stream goes on (after {resyncs} resyncs, {} keys)",
                newest.len()
            )
        });
        if e.event == "snapshot" {
            assert_eq!(e.data["resync"], json!("lagged"));
            resyncs += 1;
            newest.clear();
            for (k, rows) in e.data["windows"][c.feed()].as_object().unwrap() {
                newest.insert(k.clone(), rows[0]["views"].as_i64().unwrap());
            }
            if newest.contains_key(&c.key("end")) {
                break;
            }
            continue;
        }
        let r = &e.data["row"];
        if e.data["key"] == json!(c.key("end")) {
            break;
        }
        newest.insert(
            e.data["key"].as_str().unwrap().to_string(),
            r["views"].as_i64().unwrap(),
        );
    }
    assert!(resyncs >= 1, "the stalled client was told to resync");
    for u in 0..10 {
        assert_eq!(newest[&c.key(&format!("u{u}"))], 2990 + u, "u{u}");
    }
    server.stop().unwrap();
}

#[test]
fn a_filter_by_key_gets_only_that_key() {
    let c = case("filter");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let mut sse = Sse::open(
        server.addr,
        &format!("feed=views&key={}&snapshot=0", c.key("b")),
        None,
    );
    write(
        &mut sink,
        &[
            row("a", 0, 1, 0),
            row("b", 0, 2, 0),
            row("a", 1000, 3, 0),
            row("b", 1000, 4, 0),
        ],
    );
    let e = sse.change(T).unwrap();
    assert_eq!(
        (e.event.as_str(), views(&e)),
        ("change", 2),
        "no snapshot asked for"
    );
    assert_eq!(views(&sse.change(T).unwrap()), 4);
    assert!(sse.change(Duration::from_millis(300)).is_none());
    server.stop().unwrap();
}

#[test]
fn missed_notifications_are_read_from_the_change_log() {
    let c = case("gap");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let q = format!("feed={}", c.feed());
    let mut sse = Sse::open(server.addr, &q, None);
    assert_eq!(sse.change(T).unwrap().event, "snapshot");
    write(&mut sink, &[row("a", 0, 0, 0)]);
    assert_eq!(views(&sse.change(T).unwrap()), 0);
    // Cut the server's subscription: Pub/Sub drops whatever is published meanwhile.
    let mut r = redis();
    r.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    let rows: Vec<String> = (1..=20).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    for i in 1..=20 {
        let e = sse
            .change(Duration::from_secs(20))
            .expect("every change, read from the log");
        assert_eq!(views(&e), i);
    }
    server.stop().unwrap();
}

#[test]
fn retractions_and_corrections_reach_clients_as_such() {
    let c = case("ops");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let mut sse = Sse::open(server.addr, &format!("feed={}&snapshot=0", c.feed()), None);
    // A retraction carries the revision of the window's last firing.
    let retracted = json!({"views": 2, "user": "a", "window_start": 0, "window_end": 1000, "revision": 1, "retracted": true}).to_string();
    write(
        &mut sink,
        &[row("a", 0, 1, 0), row("a", 0, 2, 1), retracted],
    );
    let ops: Vec<(Json, Json)> = (0..3)
        .map(|_| {
            let e = sse.change(T).unwrap();
            (e.data["op"].clone(), e.data["row"]["revision"].clone())
        })
        .collect();
    assert_eq!(
        ops,
        [
            (json!("upsert"), json!(0)),
            (json!("upsert"), json!(1)),
            (json!("retract"), json!(1))
        ]
    );
    let (_, _, body) = get(server.addr, &format!("/api/windows?feed={}", c.feed()));
    let w: Json = serde_json::from_str(&body).unwrap();
    assert!(
        w["windows"].get(c.key("a")).is_none(),
        "retracted: gone from the state"
    );
    server.stop().unwrap();
}

#[test]
fn websocket_snapshot_changes_and_resume() {
    let c = case("ws");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    write(&mut sink, &[row("a", 0, 1, 0)]);
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let read_json = |ws: &mut tungstenite::WebSocket<TcpStream>| -> Json {
        loop {
            match ws.read().unwrap() {
                tungstenite::Message::Text(t) => {
                    let v: Json = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] != json!("status") && v["type"] != json!("feeds") {
                        return v;
                    }
                }
                _ => continue,
            }
        }
    };
    let connect = |last: Option<&str>| {
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let extra = last.map_or(String::new(), |l| format!("&last_id={l}"));
        let (ws, resp) = tungstenite::client(
            format!("ws://{}/api/ws?feed={}{extra}", server.addr, c.feed()),
            s,
        )
        .unwrap();
        assert_eq!(resp.status(), 101);
        ws
    };
    let mut ws = connect(None);
    let snap = read_json(&mut ws);
    assert_eq!(snap["type"], json!("snapshot"));
    assert_eq!(snap["windows"][c.feed()][c.key("a")][0]["views"], json!(1));
    write(&mut sink, &[row("a", 1000, 2, 0)]);
    let ch = read_json(&mut ws);
    assert_eq!(
        (ch["type"].clone(), ch["row"]["views"].clone()),
        (json!("change"), json!(2))
    );
    let last = ch["id"].as_str().unwrap().to_string();
    drop(ws);
    write(&mut sink, &[row("a", 2000, 3, 0), row("a", 3000, 4, 0)]);
    let mut ws = connect(Some(&last));
    assert_eq!(read_json(&mut ws)["row"]["views"], json!(3));
    assert_eq!(read_json(&mut ws)["row"]["views"], json!(4));
    server.stop().unwrap();
}

#[test]
fn shutdown_says_bye_to_every_stream_and_returns() {
    let c = case("bye");
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let mut a = Sse::open(server.addr, "snapshot=0", None);
    let mut b = Sse::open(server.addr, "snapshot=0", None);
    let mut ws = ws_connect(server.addr, "snapshot=0");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    server.stop().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    for s in [&mut a, &mut b] {
        let e = s
            .change(T)
            .unwrap_or_else(|| panic!("no bye; the stream ended with {:?}", s.text));
        assert_eq!(e.event, "bye");
        assert_eq!(e.data["reason"], json!("shutdown"));
    }
    assert_eq!(
        ws_next(&mut ws),
        Some(json!({"type": "bye", "reason": "shutdown"}))
    );
}

#[test]
fn no_redis_is_an_error_at_start() {
    let (_tx, rx) = watch::channel(false);
    let args = ServeArgs {
        redis: "redis://127.0.0.1:1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        stream: "s".into(),
        hub: HubConfig::default(),
        cors: "*".into(),
        threads: None,
        keepalive: Duration::from_secs(15),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(run(args, rx, None)).unwrap_err();
    assert!(e.contains("127.0.0.1:1"), "{e}");
}

/// A WebSocket client of `/api/ws?query`.
fn ws_connect(addr: SocketAddr, query: &str) -> tungstenite::WebSocket<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/api/ws?{query}"), s).unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The next WebSocket message that is not `status` or `feeds`; None when nothing comes
/// within the socket's read timeout.
fn ws_next(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<Json> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Json = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] != json!("status") && v["type"] != json!("feeds") {
                    return Some(v);
                }
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn a_filter_by_flow_gets_only_that_flows_changes_on_sse_and_websocket() {
    let c = case("flows");
    let other = c.other_flow();
    let mut views = RedisSink::open(&c.spec).unwrap();
    let mut clicks = RedisSink::open(&other).unwrap();
    write(&mut views, &[row("a", 0, 1, 0), row("b", 0, 2, 0)]);
    write(&mut clicks, &[row("a", 0, 10, 0)]);
    let server = Server::start(&c.spec.stream, HubConfig::default());
    // By the flow's name on SSE; by feed id and key on the WebSocket, whose snapshot
    // (it is subscribed once it has it) holds only that feed's key.
    let mut sse = Sse::open(server.addr, "feed=clicks&snapshot=0", None);
    let mut ws = ws_connect(
        server.addr,
        &format!("feed={}&key={}", c.feed(), c.key("b")),
    );
    let snap = ws_next(&mut ws).expect("a snapshot");
    assert_eq!(snap["type"], json!("snapshot"));
    assert_eq!(
        snap["windows"],
        json!({c.feed(): {c.key("b"): [serde_json::from_str::<Json>(&row("b", 0, 2, 0)).unwrap()]}}),
        "{snap}"
    );
    write(&mut clicks, &[row("a", 1000, 10, 0)]);
    write(&mut views, &[row("b", 1000, 3, 0), row("a", 1000, 4, 0)]);
    write(&mut clicks, &[row("b", 0, 20, 0)]);
    for (v, user) in [(10, "a"), (20, "b")] {
        let e = sse.change(T).expect("a change of flow clicks");
        assert_eq!(e.event, "change", "{e:?}");
        assert_eq!(
            (
                views_of(&e.data),
                e.data["feed"].clone(),
                e.data["key"].clone()
            ),
            (
                v,
                json!(other.feed.id()),
                json!(format!("{}:clicks:{user}", c.prefix))
            )
        );
    }
    assert!(
        sse.change(Duration::from_millis(300)).is_none(),
        "nothing of flow views"
    );
    let m = ws_next(&mut ws).expect("a change of views, key b");
    assert_eq!(
        (m["type"].clone(), views_of(&m), m["key"].clone()),
        (json!("change"), 3, json!(c.key("b")))
    );
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(ws_next(&mut ws).is_none(), "nothing of other keys or flows");
    server.stop().unwrap();
}

fn views_of(change: &Json) -> u64 {
    change["row"]["views"].as_u64().unwrap()
}

#[test]
fn keep_alives_reach_idle_streams_and_move_a_filtered_clients_id() {
    let c = case("keepalive");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let mut a = args(
        &c.spec.stream,
        HubConfig {
            ring: 5,
            ..HubConfig::default()
        },
    );
    a.keepalive = Duration::from_millis(300);
    let server = Server::start_with(a);
    let q = format!("feed=views&key={}&snapshot=0", c.key("b"));
    // An idle stream gets keep-alives.
    let mut idle = Sse::open(server.addr, "snapshot=0", None);
    assert!(idle.next(Duration::from_secs(1)).is_none());
    assert!(
        idle.comments.iter().any(|l| l == "keep-alive"),
        "{:?}",
        idle.comments
    );
    // A client that only wants key b: a's changes pass it by, yet its id moves with
    // them, so a reconnect resumes from there, not from before them.
    let mut sse = Sse::open(server.addr, &q, None);
    write(&mut sink, &[row("a", 0, 0, 0)]);
    let e = idle.change(T).unwrap();
    assert_eq!(
        (e.event.as_str(), &e.data["row"]["views"]),
        ("change", &json!(0)),
        "{e:?}"
    );
    let before = idle.last_id.clone().unwrap();
    let rows: Vec<String> = (1..=40).map(|i| row("a", i * 1000, i as u64, 0)).collect();
    write(&mut sink, &rows);
    let mut r = redis();
    let last = r
        .cmd(&["XREVRANGE", &c.spec.stream, "+", "-", "COUNT", "1"])
        .unwrap();
    let last = last.as_array().unwrap()[0].as_array().unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + T;
    while sse.last_id.as_deref() != Some(last.as_str()) {
        assert!(
            Instant::now() < deadline,
            "no keep-alive with id {last}: {:?} {:?}",
            sse.last_id,
            sse.comments
        );
        assert!(
            sse.next(Duration::from_millis(400)).is_none(),
            "nothing for key b"
        );
    }
    drop(sse);
    // Redis drops every change but the last (the hub's ring holds only the last 5).
    r.cmd(&["XTRIM", &c.spec.stream, "MAXLEN", "1"]).unwrap();
    write(&mut sink, &[row("b", 0, 7, 0)]);
    let mut sse = Sse::open(server.addr, &q, Some(&last));
    let e = sse.change(T).unwrap();
    assert_eq!(
        (e.event.as_str(), views(&e)),
        ("change", 7),
        "resumed where the keep-alive left it: {e:?}"
    );
    // From the id before a's changes, the same resume is past retention: a resync.
    let mut old = Sse::open(server.addr, &q, Some(&before));
    let e = old.change(T).unwrap();
    assert_eq!(
        (e.event.as_str(), e.data["resync"].clone()),
        ("snapshot", json!("gone"))
    );
    assert_eq!(
        e.data["windows"][c.feed()][c.key("b")][0]["views"],
        json!(7)
    );
    server.stop().unwrap();
}

#[test]
fn cors_preflight_allows_the_resume_header() {
    let c = case("cors");
    let server = Server::start(&c.spec.stream, HubConfig::default());
    for path in ["/api/events?snapshot=0", "/api/windows?feed=x"] {
        let (st, head, _) = request(
            server.addr,
            "OPTIONS",
            path,
            "Origin: https://example.test\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n",
        );
        let head = head.to_ascii_lowercase();
        assert_eq!(st, 204, "{path}: {head}");
        assert!(
            head.contains("access-control-allow-origin: https://example.test"),
            "{head}"
        );
        assert!(head.contains("access-control-allow-methods: get"), "{head}");
        assert!(
            head.contains("access-control-allow-headers: last-event-id"),
            "{head}"
        );
    }
    server.stop().unwrap();
}

#[test]
fn one_redis_subscription_serves_every_client() {
    let c = case("one-sub");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(&c.spec.stream, HubConfig::default());
    let mut clients: Vec<Sse> = (0..20)
        .map(|_| Sse::open(server.addr, &format!("feed={}&snapshot=0", c.feed()), None))
        .collect();
    let mut ws = ws_connect(server.addr, &format!("feed={}", c.feed()));
    assert_eq!(ws_next(&mut ws).unwrap()["type"], json!("snapshot"));
    // (Another test cuts every subscription once: the server then subscribes again, so
    // the count may be 0 for a moment, never more than 1.)
    let mut r = redis();
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while seen.last() != Some(&1) || seen.len() < 5 {
        assert!(Instant::now() < deadline, "subscribers seen: {seen:?}");
        let subs = r.cmd(&["PUBSUB", "NUMSUB", &c.spec.channel]).unwrap();
        let n = subs.as_array().unwrap()[1].as_int().unwrap();
        assert!(n <= 1, "{n} subscriptions for 21 clients");
        seen.push(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    write(&mut sink, &[row("a", 0, 5, 0)]);
    for s in &mut clients {
        assert_eq!(views(&s.change(T).unwrap()), 5);
    }
    assert_eq!(ws_next(&mut ws).unwrap()["row"]["views"], json!(5));
    server.stop().unwrap();
}

#[test]
fn a_stalled_websocket_client_is_told_to_resync_too() {
    let c = case("ws-stalled");
    let mut sink = RedisSink::open(&c.spec).unwrap();
    let server = Server::start(
        &c.spec.stream,
        HubConfig {
            channel: 16,
            ..HubConfig::default()
        },
    );
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(T)).unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{}/api/ws?feed={}", server.addr, c.feed()), s).unwrap();
    assert_eq!(ws_next(&mut ws).unwrap()["type"], json!("snapshot"));
    // The client reads nothing while far more than the socket buffers and the
    // 16-message channel hold is written.
    let pad = "x".repeat(4000);
    let rows: Vec<String> = (0..3000)
        .map(|i| {
            json!({"views": i, "pad": pad, "user": format!("u{}", i % 10), "window_start": i * 1000, "window_end": i * 1000 + 1000, "revision": 0})
                .to_string()
        })
        .collect();
    write(&mut sink, &rows);
    write(&mut sink, &[row("end", 5_000_000, 7, 0)]);
    let mut resyncs = 0;
    let mut newest: std::collections::HashMap<String, i64> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no end marker");
        let m = ws_next(&mut ws).unwrap_or_else(|| {
            panic!(
                "the stream goes on (after {resyncs} resyncs, {} keys)",
                newest.len()
            )
        });
        if m["type"] == json!("snapshot") {
            assert_eq!(m["resync"], json!("lagged"));
            resyncs += 1;
            newest.clear();
            for (k, rows) in m["windows"][c.feed()].as_object().unwrap() {
                newest.insert(k.clone(), rows[0]["views"].as_i64().unwrap());
            }
            if newest.contains_key(&c.key("end")) {
                break;
            }
            continue;
        }
        if m["type"] == json!("position") {
            continue; // a keep-alive
        }
        assert_eq!(m["type"], json!("change"), "{m}");
        if m["key"] == json!(c.key("end")) {
            break;
        }
        newest.insert(
            m["key"].as_str().unwrap().to_string(),
            m["row"]["views"].as_i64().unwrap(),
        );
    }
    assert!(resyncs >= 1, "the stalled client was told to resync");
    for u in 0..10 {
        assert_eq!(newest[&c.key(&format!("u{u}"))], 2990 + u, "u{u}");
    }
    server.stop().unwrap();
}
