//! `--serve ADDR`: the dashboard inside a generated binary, fed by the job itself.
//!
//! Each windowed flow gets a [`ServeSink`] (the generated `JobSpec` lists one per flow
//! when the spec says `serve:`); its rows go straight into the process's [`Hub`] on the
//! job's thread (parse the row's window and key, one lock, one broadcast: a few
//! microseconds). The HTTP server runs on a thread of its own with a single-threaded
//! tokio runtime. Ids are `<start ms>-<n>`: a browser that reconnects to a restarted
//! binary is recognized and resyncs. The server stops when the last sink closes (the
//! job's end).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::ServeSinkSpec;
use super::http::{self, HttpConfig};
use super::hub::{Change, EventId, FeedDesc, Hub, HubConfig, Op};
use crate::dash::{WindowRow, status_json};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};

/// The running embedded server.
struct Embedded {
    hub: Arc<Hub>,
    addr: SocketAddr,
    epoch: u64,
    seq: u64,
    sinks: usize,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The process's embedded server (one per process: every flow's sink feeds it).
static SERVER: Mutex<Option<Embedded>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Embedded>> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

fn resolve(listen: &str) -> Result<SocketAddr, SinkError> {
    let full = if listen.starts_with(':') {
        format!("127.0.0.1{listen}")
    } else {
        listen.to_string()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SinkError::msg(format!("--serve {listen:?}: expected HOST:PORT")))
}

/// Opens the dashboard sink of one flow; the first one starts the server.
pub fn open_sink(spec: &ServeSinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    let Some(listen) = &spec.listen else {
        return Ok(Box::new(ServeSink::off()));
    };
    let addr = resolve(listen)?;
    let mut guard = lock();
    if guard.is_none() {
        *guard = Some(start(addr, spec.keep)?);
    }
    let Some(e) = guard.as_mut() else {
        return Err(SinkError::msg("the dashboard server did not start"));
    };
    e.sinks += 1;
    let feed_id = format!("{}.{}", spec.feed.job, spec.feed.flow);
    let desc = serde_json::json!({
        "id": feed_id,
        "job": spec.feed.job,
        "flow": spec.feed.flow,
        "sink": "",
        "key_fields": spec.feed.key_fields,
        "aggregates": spec.feed.aggregates,
        "window": spec.feed.window,
        "keep": spec.keep,
    });
    e.hub
        .set_feeds(vec![FeedDesc::from_json(&feed_id, &desc.to_string())]);
    Ok(Box::new(ServeSink {
        on: true,
        feed: feed_id,
        job: spec.feed.job.clone(),
        key_fields: spec.feed.key_fields.clone(),
        last_progress: None,
    }))
}

fn start(addr: SocketAddr, keep: u64) -> Result<Embedded, SinkError> {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let hub = Hub::new(
        HubConfig {
            keep: usize::try_from(keep).unwrap_or(usize::MAX),
            epoch: Some(epoch),
            ..HubConfig::default()
        },
        EventId { ms: epoch, seq: 0 },
    );
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| SinkError::msg(format!("cannot serve the dashboard on {addr}: {e}")))?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let thread = {
        let hub = Arc::clone(&hub);
        std::thread::Builder::new()
            .name("streamc-dashboard".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "dashboard: cannot start its runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "dashboard: cannot listen");
                            return;
                        }
                    };
                    let cfg = HttpConfig {
                        source: "embedded".to_string(),
                        ..HttpConfig::default()
                    };
                    let router = http::router(hub, None, cfg, rx.clone());
                    if let Err(e) = http::serve(listener, router, rx, Duration::from_secs(2)).await
                    {
                        tracing::error!(error = %e, "dashboard server failed");
                    }
                });
            })?
    };
    tracing::info!("dashboard at http://{bound}/");
    // For people and for tests that asked for port 0.
    eprintln!("dashboard at http://{bound}/");
    Ok(Embedded {
        hub,
        addr: bound,
        epoch,
        seq: 0,
        sinks: 0,
        shutdown: tx,
        thread: Some(thread),
    })
}

/// The address the embedded dashboard is bound to, if it runs.
pub fn local_addr() -> Option<SocketAddr> {
    lock().as_ref().map(|e| e.addr)
}

/// One flow's rows into the embedded hub.
pub struct ServeSink {
    on: bool,
    feed: String,
    job: String,
    key_fields: Vec<String>,
    last_progress: Option<Instant>,
}

impl ServeSink {
    /// A sink that does nothing (no `--serve` and no `listen` in the spec).
    fn off() -> Self {
        ServeSink {
            on: false,
            feed: String::new(),
            job: String::new(),
            key_fields: Vec::new(),
            last_progress: None,
        }
    }

    /// The key as shown: `user_id=42` (fields separated by spaces; `all` without keys).
    fn key_of(&self, row: &WindowRow) -> String {
        if self.key_fields.is_empty() {
            return "all".to_string();
        }
        let parts: Vec<String> = self
            .key_fields
            .iter()
            .zip(&row.values)
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        parts.join(" ")
    }
}

impl Sink for ServeSink {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        if !self.on {
            return Ok(());
        }
        let row = WindowRow::parse(&self.key_fields, value).map_err(SinkError::msg)?;
        row.window().map_err(SinkError::msg)?;
        let key = self.key_of(&row);
        let text = std::str::from_utf8(value).map_err(|e| SinkError::msg(e.to_string()))?;
        let mut guard = lock();
        let Some(e) = guard.as_mut() else {
            return Ok(());
        };
        e.seq += 1;
        let change = Change {
            id: EventId {
                ms: e.epoch,
                seq: e.seq,
            },
            feed: self.feed.clone(),
            key,
            op: if row.retracted {
                Op::Retract
            } else {
                Op::Upsert
            },
            row: text.to_string(),
        };
        let hub = Arc::clone(&e.hub);
        drop(guard);
        hub.publish(&change);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if !self.on {
            return Ok(());
        }
        self.on = false;
        let mut guard = lock();
        let last = guard.as_mut().is_some_and(|e| {
            e.sinks = e.sinks.saturating_sub(1);
            e.sinks == 0
        });
        if last && let Some(mut e) = guard.take() {
            drop(guard);
            let _ = e.shutdown.send(true);
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
        Ok(())
    }

    fn wants_progress(&self) -> bool {
        self.on
    }

    fn progress(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        if self
            .last_progress
            .is_some_and(|t| now < t + Duration::from_millis(250))
        {
            return;
        }
        self.last_progress = Some(now);
        let hub = lock().as_ref().map(|e| Arc::clone(&e.hub));
        if let Some(hub) = hub {
            hub.set_status(&self.job, &status_json(&self.job, metrics));
        }
    }
}
