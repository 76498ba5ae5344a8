//! Counters every binary keeps: per source records in, invalid records and watermark;
//! per flow too-late events; per sink rows out.
//!
//! The driver is single-threaded and owns one [`Metrics`] as plain integers (no atomics
//! on the hot path). With `--metrics-addr`, the driver publishes a copy to a
//! [`MetricsServer`] every ~100 ms, which serves it in the Prometheus text format on
//! `GET /metrics` from a thread of its own.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::WATERMARK_MIN;

/// Counters of one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceMetrics {
    /// The source's name.
    pub name: &'static str,
    /// Records read (valid or not).
    pub records_in: u64,
    /// Records sent to the dead-letter output.
    pub invalid: u64,
    /// The source's task watermark (`WATERMARK_MIN` before the first advance).
    pub watermark: i64,
}

/// Counters of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMetrics {
    /// The flow's name.
    pub name: &'static str,
    /// Too-late events, whether written to the flow's late sink or dropped.
    pub late: u64,
}

/// Counters of one output sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkMetrics {
    /// The sink's name.
    pub name: &'static str,
    /// Lines written: result rows plus too-late events passed through.
    pub rows_out: u64,
}

/// All counters of a job, indexed as in the `JobSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Per source, as in `JobSpec::sources`.
    pub sources: Vec<SourceMetrics>,
    /// Per flow, as in `JobSpec::flows`.
    pub flows: Vec<FlowMetrics>,
    /// Per output sink, as in `JobSpec::sinks`.
    pub sinks: Vec<SinkMetrics>,
}

impl Metrics {
    /// Zeroed counters for the named sources, flows and sinks.
    pub fn new(
        sources: impl IntoIterator<Item = &'static str>,
        flows: impl IntoIterator<Item = &'static str>,
        sinks: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        Metrics {
            sources: sources
                .into_iter()
                .map(|name| SourceMetrics {
                    name,
                    records_in: 0,
                    invalid: 0,
                    watermark: WATERMARK_MIN,
                })
                .collect(),
            flows: flows
                .into_iter()
                .map(|name| FlowMetrics { name, late: 0 })
                .collect(),
            sinks: sinks
                .into_iter()
                .map(|name| SinkMetrics { name, rows_out: 0 })
                .collect(),
        }
    }

    /// Records read by all sources.
    pub fn records_in(&self) -> u64 {
        self.sources.iter().map(|s| s.records_in).sum()
    }

    /// Invalid records of all sources.
    pub fn invalid(&self) -> u64 {
        self.sources.iter().map(|s| s.invalid).sum()
    }

    /// Too-late events of all flows.
    pub fn late(&self) -> u64 {
        self.flows.iter().map(|f| f.late).sum()
    }

    /// Lines written to all output sinks.
    pub fn rows_out(&self) -> u64 {
        self.sinks.iter().map(|s| s.rows_out).sum()
    }

    /// Appends the counters in the Prometheus text exposition format (version 0.0.4),
    /// each series labelled with `job`.
    pub fn render_prometheus(&self, job: &str, out: &mut String) {
        let job = escape_label(job);
        let mut family = |name: &str,
                          kind: &str,
                          help: &str,
                          label: &str,
                          rows: &mut dyn Iterator<Item = (&str, i64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (l, v) in rows {
                let _ = writeln!(
                    out,
                    "{name}{{job=\"{job}\",{label}=\"{}\"}} {v}",
                    escape_label(l)
                );
            }
        };
        let c = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        family(
            "streamc_source_records_in_total",
            "counter",
            "Records read from a source, valid or not.",
            "source",
            &mut self.sources.iter().map(|s| (s.name, c(s.records_in))),
        );
        family(
            "streamc_source_invalid_total",
            "counter",
            "Records of a source sent to its dead-letter output.",
            "source",
            &mut self.sources.iter().map(|s| (s.name, c(s.invalid))),
        );
        family(
            "streamc_source_watermark_milliseconds",
            "gauge",
            "Task watermark of a source in epoch milliseconds (i64 min before the first advance, i64 max at the end of a bounded source).",
            "source",
            &mut self.sources.iter().map(|s| (s.name, s.watermark)),
        );
        family(
            "streamc_flow_late_total",
            "counter",
            "Too-late events of a flow (written to its late sink or dropped).",
            "flow",
            &mut self.flows.iter().map(|f| (f.name, c(f.late))),
        );
        family(
            "streamc_sink_rows_out_total",
            "counter",
            "Lines written to an output sink.",
            "sink",
            &mut self.sinks.iter().map(|s| (s.name, c(s.rows_out))),
        );
    }
}

fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A tiny HTTP endpoint serving the last published [`Metrics`] on `GET /metrics`.
/// One request at a time, `Connection: close`; enough for a Prometheus scraper.
pub struct MetricsServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Metrics>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub fn start(addr: SocketAddr, job: &'static str, initial: Metrics) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(initial));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("streamc-metrics".into())
                .spawn(move || serve(listener, job, &shared, &stop))?
        };
        Ok(MetricsServer {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the served counters with `metrics`.
    pub fn publish(&self, metrics: &Metrics) {
        if let Ok(mut m) = self.shared.lock() {
            m.clone_from(metrics);
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, job: &str, shared: &Mutex<Metrics>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A misbehaving client only costs its own connection.
                let _ = respond(stream, job, shared);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn respond(mut stream: TcpStream, job: &str, shared: &Mutex<Metrics>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let path = req
        .split(|&b| b == b' ')
        .nth(1)
        .map(|p| p.split(|&b| b == b'?').next().unwrap_or(p));
    let (status, ctype, body) = if req.starts_with(b"GET ") && path == Some(b"/metrics") {
        let mut body = String::new();
        if let Ok(m) = shared.lock() {
            m.render_prometheus(job, &mut body);
        }
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let mut m = Metrics::new(["clicks"], ["per_minute", "errors"], ["out"]);
        m.sources[0].records_in = 10;
        m.sources[0].invalid = 2;
        m.sources[0].watermark = 1234;
        m.flows[1].late = 3;
        m.sinks[0].rows_out = 4;
        m
    }

    #[test]
    fn totals() {
        let m = sample();
        assert_eq!(
            (m.records_in(), m.invalid(), m.late(), m.rows_out()),
            (10, 2, 3, 4)
        );
    }

    #[test]
    fn prometheus_text() {
        let mut s = String::new();
        sample().render_prometheus("job\"x", &mut s);
        assert!(s.contains("# TYPE streamc_source_records_in_total counter\n"));
        assert!(
            s.contains("streamc_source_records_in_total{job=\"job\\\"x\",source=\"clicks\"} 10\n")
        );
        assert!(s.contains("streamc_source_invalid_total{job=\"job\\\"x\",source=\"clicks\"} 2\n"));
        assert!(s.contains(
            "streamc_source_watermark_milliseconds{job=\"job\\\"x\",source=\"clicks\"} 1234\n"
        ));
        assert!(s.contains("streamc_flow_late_total{job=\"job\\\"x\",flow=\"errors\"} 3\n"));
        assert!(s.contains("streamc_flow_late_total{job=\"job\\\"x\",flow=\"per_minute\"} 0\n"));
        assert!(s.contains("streamc_sink_rows_out_total{job=\"job\\\"x\",sink=\"out\"} 4\n"));
    }

    #[test]
    fn serves_metrics_over_http() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), "j", Metrics::default()).unwrap();
        server.publish(&sample());
        let get = |path: &str| {
            let mut s = TcpStream::connect(server.local_addr()).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            resp
        };
        let resp = get("/metrics");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("streamc_source_records_in_total{job=\"j\",source=\"clicks\"} 10\n"));
        assert!(get("/").starts_with("HTTP/1.1 404"));
        drop(server);
    }
}
