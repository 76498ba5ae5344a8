//! The HTTP side (axum): the page, REST for current state, the SSE and WebSocket
//! streams of changes, CORS, keep-alives and graceful shutdown.
//!
//! - `GET /`: the dashboard page (and `/app.js`, `/app.css`, `/vendor/...`).
//! - `GET /api/feeds`, `/api/status`: the feeds and every job's progress.
//! - `GET /api/windows?feed=F[&key=K...][&limit=N]`: the newest N windows of the keys
//!   of a feed (`key` repeatable; `*` in a key matches any run of characters).
//! - `GET /api/keys?feed=F[&sort=AGG][&limit=N]`: keys with their newest window, by
//!   that window's AGG (the top keys) or by their last change.
//! - `GET /api/events` (SSE) and `GET /api/ws` (WebSocket): `feed=` and `key=`
//!   (repeatable) filter; `limit=` windows per key in snapshots; `snapshot=0` starts with
//!   live changes only. A client that sends `Last-Event-ID` (SSE) or `last_id=` gets
//!   the changes after it, from the ring or the change log, without a gap or a
//!   duplicate, or, past the log's retention, a snapshot marked `"resync": "gone"`.
//!
//! Messages (SSE events and WebSocket text messages, the same JSON): `snapshot` (with
//! its position as the SSE id), `change` (`id`, `feed`, `key`, `op`, `row`), `status`,
//! `feeds`, `bye` (the server is stopping). A client that falls behind by more than the
//! channel holds gets a snapshot marked `"resync": "lagged"`. Every 15 s an idle stream
//! gets a keep-alive that also moves its `Last-Event-ID` past the changes its filter
//! skipped, so a quiet filtered client never resumes from far back.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, broadcast, watch};

use super::hub::{
    Change, EventId, Filter, Frame, FrameKind, Hub, Outgoing, Resync, Start, sse_bytes,
};

/// Reads changes older than the hub's ring from a change log (Redis).
pub trait Backfill: Send + Sync {
    /// The changes after `after` up to and including `upto`, in order; `Err` when the
    /// log no longer holds all of them (the client must resync).
    fn changes(&self, after: EventId, upto: EventId) -> BoxFuture<'_, Result<Vec<Change>, String>>;
}

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `Access-Control-Allow-Origin` (`*` by default).
    pub cors_origin: String,
    /// Keep-alive period of idle streams.
    pub keepalive: Duration,
    /// Windows per key in a snapshot unless the client says `limit`.
    pub default_limit: usize,
    /// What the page says it is connected to (`Redis redis://...`, `job demo`).
    pub source: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_origin: "*".to_string(),
            keepalive: Duration::from_secs(15),
            default_limit: 30,
            source: String::new(),
        }
    }
}

pub(super) struct App {
    pub(super) hub: Arc<Hub>,
    pub(super) backfill: Option<Arc<dyn Backfill>>,
    pub(super) cfg: HttpConfig,
    /// The SSE and WebSocket streams open: neither is a connection axum's graceful
    /// shutdown waits for (SSE sockets never reach axum, upgraded ones leave it), so
    /// [`serve`] waits for them itself, until each has said `bye`.
    pub(super) streams: Streams,
}

/// A count of open streams that can be waited on to reach zero.
#[derive(Default)]
pub(super) struct Streams {
    open: AtomicUsize,
    closed: Notify,
}

/// One open stream, counted until dropped.
pub(super) struct StreamGuard(Arc<App>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.0.streams;
        if s.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.closed.notify_waiters();
        }
    }
}

impl Streams {
    /// Counts a stream of `app` open while the guard lives.
    pub(super) fn open(app: &Arc<App>) -> StreamGuard {
        app.streams.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(Arc::clone(app))
    }

    /// Returns once no stream is open.
    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// The dashboard's routes and state, for [`serve`].
pub struct Dashboard {
    router: Router,
    app: Arc<App>,
}

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");
const UPLOT_JS: &str = include_str!("page/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("page/vendor/uPlot.min.css");
const FAVICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><path d='M1 12l4-5 3 3 4-7 3 4' fill='none' stroke='#2b6cb0' stroke-width='2'/></svg>";

/// The router of the dashboard server (call it within a tokio runtime: it starts the
/// keep-alive timer).
pub fn router(
    hub: Arc<Hub>,
    backfill: Option<Arc<dyn Backfill>>,
    cfg: HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> Dashboard {
    let origin = cfg.cors_origin.clone();
    // One timer for every client's keep-alive, and the `bye` of a shutdown, both
    // through the hub's channel: a client only ever waits on that channel.
    {
        let (hub, mut stop, every) = (Arc::clone(&hub), shutdown.clone(), cfg.keepalive);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {
                        hub.bye();
                        return;
                    }
                    _ = tick.tick() => hub.keep_alive(),
                }
            }
        });
    }
    let app = Arc::new(App {
        hub,
        backfill,
        cfg,
        streams: Streams::default(),
    });
    let router = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/vendor/uPlot.iife.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/vendor/uPlot.min.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", FAVICON) }),
        )
        .route("/healthz", get(healthz))
        .route("/api/feeds", get(feeds))
        .route("/api/status", get(status))
        .route("/api/windows", get(windows))
        .route("/api/keys", get(keys))
        .route("/api/events", get(events))
        .route("/api/ws", get(ws))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let origin = origin.clone();
            async move { cors(origin, req, next).await }
        }))
        .with_state(Arc::clone(&app));
    Dashboard { router, app }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn cors(origin: String, req: Request, next: Next) -> Response {
    let allow = HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("*"));
    if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Last-Event-ID, Content-Type, Cache-Control"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return r;
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    r
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn bad_request(msg: &str) -> Response {
    let mut body = String::from("{\"error\":");
    super::hub::push_json_str(&mut body, msg);
    body.push('}');
    json(StatusCode::BAD_REQUEST, body)
}

/// Query parameters, repeatable.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn parse(q: Option<String>) -> Self {
        Params(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn number(&self, name: &str, default: usize, max: usize) -> Result<usize, String> {
        match self.one(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map(|n| n.clamp(1, max))
                .map_err(|_| format!("`{name}={v}`: expected a positive number")),
        }
    }
    pub(super) fn filter(&self) -> Filter {
        Filter {
            feeds: self.all("feed"),
            keys: self.all("key"),
        }
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        format!(
            "{{\"ok\":true,\"id\":\"{}\",\"clients\":{}}}",
            app.hub.position(),
            app.hub.clients()
        ),
    )
}

async fn feeds(State(app): State<Arc<App>>) -> Response {
    let mut body = String::from("{\"source\":");
    super::hub::push_json_str(&mut body, &app.cfg.source);
    body.push_str(&format!(
        ",\"id\":\"{}\",\"feeds\":{}}}",
        app.hub.position(),
        app.hub.feeds_json()
    ));
    json(StatusCode::OK, body)
}

async fn status(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        format!("{{\"status\":{}}}", app.hub.status_json()),
    )
}

async fn windows(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q);
    let Some(feed) = p.one("feed").filter(|f| !f.is_empty()) else {
        return bad_request("say which feed: /api/windows?feed=FEED[&key=KEY][&limit=N]");
    };
    let limit = match p.number("limit", app.cfg.default_limit, app.hub.config().keep) {
        Ok(n) => n,
        Err(e) => return bad_request(&e),
    };
    match app.hub.windows_json(feed, &p.all("key"), limit) {
        Some(body) => json(StatusCode::OK, body),
        None => json(
            StatusCode::NOT_FOUND,
            format!("{{\"error\":\"no feed {feed:?}\"}}"),
        ),
    }
}

async fn keys(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q);
    let Some(feed) = p.one("feed").filter(|f| !f.is_empty()) else {
        return bad_request("say which feed: /api/keys?feed=FEED[&sort=AGGREGATE][&limit=N]");
    };
    let limit = match p.number("limit", 20, 10_000) {
        Ok(n) => n,
        Err(e) => return bad_request(&e),
    };
    let sort = p.one("sort").filter(|s| !s.is_empty());
    match app.hub.keys_json(feed, sort, limit) {
        Some(body) => json(StatusCode::OK, body),
        None => json(
            StatusCode::NOT_FOUND,
            format!("{{\"error\":\"no feed {feed:?}\"}}"),
        ),
    }
}

/// How a stream starts, from `Last-Event-ID` / `last_id=` and `snapshot=`.
pub(super) fn start_of(headers: &HeaderMap, p: &Params) -> Start {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| p.one("last_id").map(str::to_string))
        .filter(|s| !s.trim().is_empty());
    match last {
        // An id we cannot read: like one we no longer have.
        Some(l) => Start::Resume(l.parse().unwrap_or(EventId {
            ms: u64::MAX,
            seq: u64::MAX,
        })),
        None if p.one("snapshot") == Some("0") => Start::Live,
        None => Start::Snapshot,
    }
}

/// What a client's stream does next.
pub(super) enum Step {
    Send(Outgoing),
    /// Nothing to send for a while; `Some(id)`: the client's position moved (changes
    /// its filter skipped).
    KeepAlive(Option<EventId>),
    /// The stream ends.
    End(&'static str),
}

/// One client's position in the stream of changes: shared by SSE and WebSocket.
pub(super) struct Client {
    app: Arc<App>,
    filter: Filter,
    /// The feed ids `filter` names (None: all).
    feeds: Option<Vec<String>>,
    limit: usize,
    rx: broadcast::Receiver<Arc<Frame>>,
    queue: VecDeque<Outgoing>,
    backfill: Option<(EventId, EventId)>,
    /// A keep-alive or bye met while batching, for the next call of `next`.
    pending: Option<Arc<Frame>>,
    /// The last change seen (sent or skipped).
    last: EventId,
    /// The last id the client was told.
    told: EventId,
}

impl Client {
    pub(super) fn new(app: Arc<App>, filter: Filter, start: Start, limit: usize) -> Self {
        let sub = app
            .hub
            .subscribe(&filter, start, limit, app.backfill.is_some());
        let feeds = app.hub.resolve(&filter);
        let told = match start {
            Start::Resume(id) => id,
            _ => EventId::default(),
        };
        Client {
            feeds,
            limit,
            rx: sub.rx,
            queue: sub.initial.into(),
            backfill: sub.backfill,
            pending: None,
            last: sub.pos,
            told,
            filter,
            app,
        }
    }

    fn wants(&self, feed: &str, key: &str) -> bool {
        self.filter.wants_key(key)
            && self
                .feeds
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|f| f == feed))
    }

    fn resync(&mut self, why: Resync) {
        let sub = self.app.hub.resync(&self.filter, self.limit, why);
        self.rx = sub.rx;
        self.queue = sub.initial.into();
        self.backfill = None;
        self.last = sub.pos;
        tracing::debug!(why = ?why, "client resyncs");
    }

    /// Changes older than the ring, from the change log, before what is queued.
    /// Cancel-safe (the WebSocket loop may drop it half-way): the backfill is only
    /// marked done once its changes are queued.
    async fn run_backfill(&mut self, after: EventId, upto: EventId) {
        let Some(b) = self.app.backfill.clone() else {
            self.backfill = None;
            return self.resync(Resync::Gone);
        };
        let r = b.changes(after, upto).await;
        self.backfill = None;
        match r {
            Ok(changes) => {
                let mut front = Vec::new();
                for c in changes {
                    if c.id > after && c.id <= upto && self.wants(&c.feed, &c.key) {
                        front.push(Outgoing::Own {
                            event: "change",
                            id: Some(c.id),
                            json: super::hub::change_json_of(&c),
                        });
                    }
                }
                for o in front.into_iter().rev() {
                    self.queue.push_front(o);
                }
            }
            Err(e) => {
                tracing::info!(error = %e, after = %after, "resume past the change log: resync");
                self.resync(Resync::Gone);
            }
        }
    }

    fn note_sent(&mut self, o: &Outgoing) {
        let id = match o {
            Outgoing::Frame(f) => match &f.kind {
                FrameKind::Change { id, .. } => Some(*id),
                _ => None,
            },
            Outgoing::Own { id, .. } => *id,
        };
        if let Some(id) = id {
            self.told = id;
        }
    }

    /// Handles one live frame: Some(what to send), or None (skipped).
    fn take(&mut self, f: Arc<Frame>) -> Option<Outgoing> {
        match &f.kind {
            FrameKind::KeepAlive | FrameKind::Bye => None,
            FrameKind::Change { id, feed, key } => {
                if *id <= self.last {
                    return None;
                }
                self.last = *id;
                self.wants(feed, key).then_some(Outgoing::Frame(f))
            }
            FrameKind::Status => Some(Outgoing::Frame(f)),
            FrameKind::Feeds => {
                self.feeds = self.app.hub.resolve(&self.filter);
                Some(Outgoing::Frame(f))
            }
            FrameKind::Reset => {
                self.resync(Resync::Reset);
                None
            }
        }
    }

    /// What is ready without waiting (to batch several messages in one write).
    pub(super) fn try_next(&mut self) -> Option<Outgoing> {
        if self.backfill.is_some() {
            return None;
        }
        loop {
            if let Some(o) = self.queue.pop_front() {
                self.note_sent(&o);
                return Some(o);
            }
            match self.rx.try_recv() {
                Ok(f) if matches!(f.kind, FrameKind::KeepAlive | FrameKind::Bye) => {
                    // Handled by `next` (a keep-alive or the end): put off by one message.
                    self.pending = Some(f);
                    return None;
                }
                Ok(f) => {
                    if let Some(o) = self.take(f) {
                        self.note_sent(&o);
                        return Some(o);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(Resync::Lagged),
                Err(_) => return None,
            }
        }
    }

    pub(super) async fn next(&mut self) -> Step {
        loop {
            if let Some((after, upto)) = self.backfill {
                self.run_backfill(after, upto).await;
            }
            if let Some(o) = self.queue.pop_front() {
                self.note_sent(&o);
                return Step::Send(o);
            }
            let r = match self.pending.take() {
                Some(f) => Ok(f),
                None => self.rx.recv().await,
            };
            match r {
                Ok(f) => match f.kind {
                    FrameKind::Bye => return Step::End("shutdown"),
                    FrameKind::KeepAlive => {
                        let moved = (self.last > self.told).then_some(self.last);
                        if let Some(id) = moved {
                            self.told = id;
                        }
                        return Step::KeepAlive(moved);
                    }
                    _ => {
                        if let Some(o) = self.take(f) {
                            self.note_sent(&o);
                            return Step::Send(o);
                        }
                    }
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "client lagged");
                    self.resync(Resync::Lagged);
                }
                Err(broadcast::error::RecvError::Closed) => return Step::End("closed"),
            }
        }
    }
}

pub(super) fn sse_of(o: &Outgoing, out: &mut Vec<u8>) {
    match o {
        Outgoing::Frame(f) => out.extend_from_slice(&f.sse),
        Outgoing::Own { event, id, json } => out.extend_from_slice(&sse_bytes(event, *id, json)),
    }
}

/// At most this many messages go into one write of a stream.
pub(super) const BATCH: usize = 64;

async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q);
    let limit = match p.number("limit", app.cfg.default_limit, app.hub.config().keep) {
        Ok(n) => n,
        Err(e) => return bad_request(&e),
    };
    let start = start_of(&headers, &p);
    let client = Client::new(Arc::clone(&app), p.filter(), start, limit);
    // `retry`: reconnect after 1 s; the comment makes the headers go out at once.
    let hello = Bytes::from_static(b"retry: 1000\n: streamc\n\n");
    let stream =
        futures_util::stream::unfold((Some(client), Some(hello)), |(client, hello)| async move {
            if let Some(h) = hello {
                return Some((Ok::<Bytes, Infallible>(h), (client, None)));
            }
            let mut c = client?;
            let mut out = Vec::new();
            match c.next().await {
                Step::Send(o) => {
                    let Some(second) = c.try_next() else {
                        // One message: the frame's own bytes, no copy.
                        let bytes = match o {
                            Outgoing::Frame(f) => f.sse.clone(),
                            own => {
                                sse_of(&own, &mut out);
                                Bytes::from(out)
                            }
                        };
                        return Some((Ok(bytes), (Some(c), None)));
                    };
                    sse_of(&o, &mut out);
                    sse_of(&second, &mut out);
                    for _ in 2..BATCH {
                        match c.try_next() {
                            Some(o) => sse_of(&o, &mut out),
                            None => break,
                        }
                    }
                }
                Step::KeepAlive(Some(id)) => {
                    out.extend_from_slice(format!(": keep-alive\nid: {id}\n\n").as_bytes());
                }
                Step::KeepAlive(None) => out.extend_from_slice(b": keep-alive\n\n"),
                Step::End(reason) => {
                    let bye = sse_bytes(
                        "bye",
                        None,
                        &format!("{{\"type\":\"bye\",\"reason\":\"{reason}\"}}"),
                    );
                    return Some((Ok(bye), (None, None)));
                }
            }
            Some((Ok(Bytes::from(out)), (Some(c), None)))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn ws(
    State(app): State<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let p = Params::parse(q);
    let limit = match p.number("limit", app.cfg.default_limit, app.hub.config().keep) {
        Ok(n) => n,
        Err(e) => return bad_request(&e),
    };
    let start = start_of(&headers, &p);
    let filter = p.filter();
    upgrade
        // Bounded: a client that stops reading is cut off once 4 MB wait for it (it
        // reconnects with its last id).
        .max_write_buffer_size(4 << 20)
        .on_upgrade(move |socket| {
            let open = Streams::open(&app);
            async move {
                ws_client(socket, Client::new(app, filter, start, limit)).await;
                drop(open);
            }
        })
}

fn ws_text(o: &Outgoing) -> Message {
    match o {
        Outgoing::Frame(f) => match Utf8Bytes::try_from(f.json.clone()) {
            Ok(t) => Message::Text(t),
            Err(_) => Message::Text(Utf8Bytes::from_static("{}")),
        },
        Outgoing::Own { json, .. } => Message::Text(json.clone().into()),
    }
}

async fn ws_client(mut socket: WebSocket, mut c: Client) {
    loop {
        tokio::select! {
            next = c.next() => {
                let sent = match next {
                    Step::Send(o) => {
                        let mut r = socket.feed(ws_text(&o)).await;
                        for _ in 1..BATCH {
                            if r.is_err() {
                                break;
                            }
                            match c.try_next() {
                                Some(o) => r = socket.feed(ws_text(&o)).await,
                                None => break,
                            }
                        }
                        match r {
                            Ok(()) => socket.flush().await,
                            Err(e) => Err(e),
                        }
                    }
                    Step::KeepAlive(moved) => {
                        let r = match moved {
                            Some(id) => socket
                                .feed(Message::Text(format!("{{\"type\":\"position\",\"id\":\"{id}\"}}").into()))
                                .await,
                            None => Ok(()),
                        };
                        match r {
                            Ok(()) => socket.send(Message::Ping(Bytes::new())).await,
                            Err(e) => Err(e),
                        }
                    }
                    Step::End(reason) => {
                        let _ = socket
                            .send(Message::Text(format!("{{\"type\":\"bye\",\"reason\":\"{reason}\"}}").into()))
                            .await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"resync\"") => {
                    c.resync(Resync::Gone);
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A listening socket with a deep accept queue (8192, as far as `net.core.somaxconn`
/// allows): when thousands of clients reconnect at once, a short queue drops their SYNs
/// and each waits out TCP's retransmission backoff (1 s, 3 s, 7 s, ...).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// Serves `router` on `listener` until `shutdown` turns true; then every stream says
/// `bye` and the server stops (waiting at most `grace` for connections to close).
///
/// SSE streams (`GET /api/events`) are served by `sse.rs` straight on their sockets;
/// every other request goes through axum.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dashboard: Dashboard,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let mut stop = shutdown.clone();
    let app = Arc::clone(&dashboard.app);
    let listener = super::sse::SseListener::new(listener, dashboard.app);
    let server = axum::serve(listener, dashboard.router).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let server = server.into_future();
    tokio::pin!(server);
    // Both may be ready at once (axum stops at the same signal): either way, once the
    // signal is given, the streams are waited for too.
    let ended = tokio::select! {
        r = &mut server => Some(r),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let ended = match ended {
        // Axum stopped on its own (an error): nothing to wait for.
        Some(r) if !*shutdown.borrow() => return r,
        e => e,
    };
    // Axum's own connections, then the streams (each ends with its `bye`).
    let deadline = tokio::time::Instant::now() + grace;
    let served = match ended {
        Some(r) => Ok(r),
        None => tokio::time::timeout_at(deadline, server).await,
    };
    let streams = tokio::time::timeout_at(deadline, app.streams.all_closed()).await;
    if served.is_err() || streams.is_err() {
        tracing::info!(addr = ?addr, "dashboard: connections still open after the grace period; closing them");
    }
    served.unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_starts() {
        let p = Params::parse(Some("feed=a&key=k1&key=k%3A2&limit=5&snapshot=0".into()));
        assert_eq!(p.filter().keys, ["k1", "k:2"]);
        assert_eq!(p.number("limit", 30, 100), Ok(5));
        assert_eq!(p.number("nope", 30, 100), Ok(30));
        assert!(
            Params::parse(Some("limit=x".into()))
                .number("limit", 1, 2)
                .is_err()
        );
        assert_eq!(start_of(&HeaderMap::new(), &p), Start::Live);
        let mut h = HeaderMap::new();
        h.insert("last-event-id", HeaderValue::from_static("5-3"));
        assert_eq!(start_of(&h, &p), Start::Resume(EventId { ms: 5, seq: 3 }));
        let p = Params::parse(Some("last_id=garbage".into()));
        assert!(matches!(start_of(&HeaderMap::new(), &p), Start::Resume(id) if id.ms == u64::MAX));
        assert_eq!(
            start_of(&HeaderMap::new(), &Params::parse(None)),
            Start::Snapshot
        );
    }
}
