//! Counters every binary keeps: per source records in, invalid records, watermark and
//! its lag behind wall time, batch processing time; per partition (sources that have
//! several: Kafka) watermark, its lag, idleness, consumer lag and committed offset; per
//! flow too-late events; per sink rows out.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{WATERMARK_MAX, WATERMARK_MIN};

/// An event counts as ahead of the wall clock (`streamc_source_ahead_of_clock_total`)
/// when its event time is more than this many milliseconds past the wall clock at its
/// arrival: clocks of producers a little ahead of this machine's are not worth a word.
pub const AHEAD_TOLERANCE_MS: i64 = 1000;

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Upper bounds (seconds) of the batch processing time histogram's buckets.
pub const BATCH_SECONDS_BUCKETS: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// A histogram of durations (Prometheus buckets are cumulative when rendered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket of [`BATCH_SECONDS_BUCKETS`] (not cumulative), then one for +Inf.
    pub buckets: [u64; BATCH_SECONDS_BUCKETS.len() + 1],
    /// Observations.
    pub count: u64,
    /// Their sum in nanoseconds.
    pub sum_nanos: u64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BATCH_SECONDS_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BATCH_SECONDS_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Figures of one partition of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionMetrics {
    /// The partition.
    pub partition: u32,
    /// Its watermark (`max event time - out-of-orderness`; i64 min before any event).
    pub watermark: i64,
    /// Idle: not holding the source's watermark back.
    pub idle: bool,
    /// Kafka: records between the consumer's position and the high watermark.
    pub lag: Option<i64>,
    /// Kafka: the last offset committed by the job.
    pub committed: Option<i64>,
}

/// Counters of one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceMetrics {
    /// The source's name.
    pub name: &'static str,
    /// Records read (valid or not).
    pub records_in: u64,
    /// Records sent to the dead-letter output.
    pub invalid: u64,
    /// Invalid records read again after a restart (at-least-once, no checkpoints) whose
    /// dead letters were written before: not written again.
    pub replayed_invalid: u64,
    /// Events whose event time was more than [`AHEAD_TOLERANCE_MS`] ahead of the wall
    /// clock when they arrived (counted whether they were processed or, past the
    /// source's `max_ahead`, sent to the dead letters).
    pub ahead_of_clock: u64,
    /// The source's task watermark (`WATERMARK_MIN` before the first advance).
    pub watermark: i64,
    /// The source's partitions (assigned ones, for Kafka), refreshed when metrics are
    /// published.
    pub partitions: Vec<PartitionMetrics>,
    /// Time to process one non-empty batch (parse, fused steps, windows, sinks).
    pub batch_time: Histogram,
}

/// Counters of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMetrics {
    /// The flow's name.
    pub name: &'static str,
    /// Too-late events, whether written to the flow's late sink or dropped.
    pub late: u64,
    /// Too-late events read again after a restart (at-least-once, no checkpoints)
    /// that were accounted for before (sent to the late sink then): not again.
    pub replayed_late: u64,
}

/// Checkpoints and transactions of the job (all zero without `checkpoint:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointMetrics {
    /// Checkpoints completed (durable, and committed with the offsets).
    pub completed: u64,
    /// Checkpoints that failed (the job went on, or stopped with the error).
    pub failed: u64,
    /// The duration of the last completed one, snapshot to commit, in milliseconds.
    pub last_duration_ms: u64,
    /// Bytes of state the last one references (what a restore reads).
    pub last_size_bytes: u64,
    /// Bytes the last one wrote (its incremental size).
    pub last_written_bytes: u64,
    /// When the last one completed, epoch milliseconds (0: none yet).
    pub last_completed_ms: i64,
    /// Kafka transactions committed (exactly once).
    pub transactions_committed: u64,
    /// Kafka transactions aborted (rebalances, failures).
    pub transactions_aborted: u64,
    /// Restores from a checkpoint (at start, after rebalances and rollbacks).
    pub restores: u64,
}

/// Figures of the state backend (RocksDB state only): RocksDB's own, summed over the
/// column families, and the write-back caches'.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMetrics {
    /// `rocksdb.total-sst-files-size`: state on disk, bytes.
    pub sst_bytes: u64,
    /// `rocksdb.estimate-live-data-size`, bytes.
    pub live_bytes: u64,
    /// `rocksdb.cur-size-all-mem-tables`, bytes.
    pub memtable_bytes: u64,
    /// Bytes in RocksDB's block cache.
    pub block_cache_bytes: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Bytes read by compactions.
    pub compaction_read_bytes: u64,
    /// Bytes written by compactions.
    pub compaction_write_bytes: u64,
    /// Lookups a write-back cache answered.
    pub cache_hits: u64,
    /// Lookups a write-back cache did not answer (a RocksDB get, unless the store has
    /// never written to RocksDB).
    pub cache_misses: u64,
}

/// Counters of one output sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkMetrics {
    /// The sink's name.
    pub name: &'static str,
    /// Lines written: result rows plus too-late events passed through.
    pub rows_out: u64,
    /// Of `rows_out`, the too-late events passed through (a flow's `late` sink).
    pub late_out: u64,
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
    /// Checkpoints and transactions.
    pub checkpoints: CheckpointMetrics,
    /// The state backend's figures (None: memory state).
    pub state: Option<StateMetrics>,
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
                    replayed_invalid: 0,
                    ahead_of_clock: 0,
                    watermark: WATERMARK_MIN,
                    partitions: Vec::new(),
                    batch_time: Histogram::default(),
                })
                .collect(),
            flows: flows
                .into_iter()
                .map(|name| FlowMetrics {
                    name,
                    late: 0,
                    replayed_late: 0,
                })
                .collect(),
            sinks: sinks
                .into_iter()
                .map(|name| SinkMetrics {
                    name,
                    rows_out: 0,
                    late_out: 0,
                })
                .collect(),
            checkpoints: CheckpointMetrics::default(),
            state: None,
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

    /// Result rows (window results and rows of stateless flows) written to all output
    /// sinks: `rows_out` without the too-late events passed through.
    pub fn results_out(&self) -> u64 {
        self.sinks.iter().map(|s| s.rows_out - s.late_out).sum()
    }

    /// Events of all sources that arrived ahead of the wall clock.
    pub fn ahead_of_clock(&self) -> u64 {
        self.sources.iter().map(|s| s.ahead_of_clock).sum()
    }

    /// Appends the counters in the Prometheus text exposition format (version 0.0.4),
    /// each series labelled with `job`. Lags behind wall time are computed now.
    pub fn render_prometheus(&self, job: &str, out: &mut String) {
        self.render_prometheus_at(job, now_ms(), out);
    }

    /// [`Metrics::render_prometheus`] with the wall clock at `now_ms` (epoch millis).
    pub fn render_prometheus_at(&self, job: &str, now_ms: i64, out: &mut String) {
        let job_label = escape_label(job);
        self.render_families(&job_label, out);
        self.render_extra(&job_label, now_ms, out);
    }

    fn render_families(&self, job: &str, out: &mut String) {
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
            "streamc_source_ahead_of_clock_total",
            "counter",
            "Events of a source whose event time was more than 1 s ahead of the wall clock at arrival (they move the watermark ahead: see the source's watermark.max_ahead).",
            "source",
            &mut self.sources.iter().map(|s| (s.name, c(s.ahead_of_clock))),
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
        family(
            "streamc_sink_late_out_total",
            "counter",
            "Of the lines written to an output sink, the too-late events passed through.",
            "sink",
            &mut self.sinks.iter().map(|s| (s.name, c(s.late_out))),
        );
        family(
            "streamc_source_replayed_invalid_total",
            "counter",
            "Invalid records read again after a restart whose dead letters were already written (not written again).",
            "source",
            &mut self.sources.iter().map(|s| (s.name, c(s.replayed_invalid))),
        );
        family(
            "streamc_flow_replayed_late_total",
            "counter",
            "Too-late events read again after a restart that were already accounted for (not sent again).",
            "flow",
            &mut self.flows.iter().map(|f| (f.name, c(f.replayed_late))),
        );
        let k = &self.checkpoints;
        for (name, kind, help, v) in [
            (
                "streamc_checkpoints_completed_total",
                "counter",
                "Checkpoints completed (durable and committed).",
                c(k.completed),
            ),
            (
                "streamc_checkpoints_failed_total",
                "counter",
                "Checkpoints that failed.",
                c(k.failed),
            ),
            (
                "streamc_checkpoint_duration_milliseconds",
                "gauge",
                "Duration of the last completed checkpoint, snapshot to commit.",
                c(k.last_duration_ms),
            ),
            (
                "streamc_checkpoint_size_bytes",
                "gauge",
                "Bytes of state the last completed checkpoint references.",
                c(k.last_size_bytes),
            ),
            (
                "streamc_checkpoint_written_bytes",
                "gauge",
                "Bytes the last completed checkpoint wrote (incremental size).",
                c(k.last_written_bytes),
            ),
            (
                "streamc_checkpoint_last_completed_milliseconds",
                "gauge",
                "When the last checkpoint completed, epoch milliseconds (0: none yet); its age is now minus this.",
                k.last_completed_ms,
            ),
            (
                "streamc_transactions_committed_total",
                "counter",
                "Kafka transactions committed (exactly once).",
                c(k.transactions_committed),
            ),
            (
                "streamc_transactions_aborted_total",
                "counter",
                "Kafka transactions aborted.",
                c(k.transactions_aborted),
            ),
            (
                "streamc_restores_total",
                "counter",
                "Restores from a checkpoint.",
                c(k.restores),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{job=\"{job}\"}} {v}");
        }
        if let Some(st) = &self.state {
            for (name, kind, help, v) in [
                (
                    "streamc_rocksdb_sst_bytes",
                    "gauge",
                    "RocksDB state on disk: total size of the SST files.",
                    st.sst_bytes,
                ),
                (
                    "streamc_rocksdb_live_data_bytes",
                    "gauge",
                    "RocksDB's estimate of its live data.",
                    st.live_bytes,
                ),
                (
                    "streamc_rocksdb_memtable_bytes",
                    "gauge",
                    "Bytes in RocksDB's memtables.",
                    st.memtable_bytes,
                ),
                (
                    "streamc_rocksdb_block_cache_bytes",
                    "gauge",
                    "Bytes in RocksDB's block cache.",
                    st.block_cache_bytes,
                ),
                (
                    "streamc_rocksdb_compactions_total",
                    "counter",
                    "RocksDB compactions done.",
                    st.compactions,
                ),
                (
                    "streamc_rocksdb_compaction_read_bytes_total",
                    "counter",
                    "Bytes RocksDB compactions read.",
                    st.compaction_read_bytes,
                ),
                (
                    "streamc_rocksdb_compaction_written_bytes_total",
                    "counter",
                    "Bytes RocksDB compactions wrote.",
                    st.compaction_write_bytes,
                ),
                (
                    "streamc_state_cache_hits_total",
                    "counter",
                    "State lookups the write-back cache in front of RocksDB answered.",
                    st.cache_hits,
                ),
                (
                    "streamc_state_cache_misses_total",
                    "counter",
                    "State lookups the write-back cache in front of RocksDB did not answer.",
                    st.cache_misses,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name}{{job=\"{job}\"}} {v}");
            }
        }
    }
}

/// Seconds the watermark `wm` is behind `now_ms`; None before the first advance and at
/// the end of a bounded source.
fn lag_seconds(now_ms: i64, wm: i64) -> Option<f64> {
    (wm != WATERMARK_MIN && wm != WATERMARK_MAX)
        .then(|| (i128::from(now_ms) - i128::from(wm)) as f64 / 1000.0)
}

impl Metrics {
    /// Watermark lags, per-partition figures and batch times.
    fn render_extra(&self, job: &str, now_ms: i64, out: &mut String) {
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        head(
            out,
            "streamc_source_watermark_lag_seconds",
            "gauge",
            "Wall-clock time minus the task watermark of a source (absent before the first advance and at the end).",
        );
        for s in &self.sources {
            if let Some(lag) = lag_seconds(now_ms, s.watermark) {
                let src = escape_label(s.name);
                let _ = writeln!(
                    out,
                    "streamc_source_watermark_lag_seconds{{job=\"{job}\",source=\"{src}\"}} {lag}"
                );
            }
        }
        type Row<'a> = (&'a str, &'a PartitionMetrics);
        let rows = || {
            self.sources
                .iter()
                .flat_map(|s| s.partitions.iter().map(move |p| (s.name, p)))
        };
        let mut family = |name: &str, help: &str, value: &dyn Fn(Row<'_>) -> Option<String>| {
            head(out, name, "gauge", help);
            for row in rows() {
                if let Some(v) = value(row) {
                    let _ = writeln!(
                        out,
                        "{name}{{job=\"{job}\",source=\"{}\",partition=\"{}\"}} {v}",
                        escape_label(row.0),
                        row.1.partition
                    );
                }
            }
        };
        family(
            "streamc_partition_watermark_milliseconds",
            "Watermark of one partition of a source (max event time - max_out_of_orderness), epoch milliseconds.",
            &|(_, p)| Some(p.watermark.to_string()),
        );
        family(
            "streamc_partition_watermark_lag_seconds",
            "Wall-clock time minus the watermark of one partition (absent before its first event).",
            &|(_, p)| lag_seconds(now_ms, p.watermark).map(|l| l.to_string()),
        );
        family(
            "streamc_partition_idle",
            "1 when the partition is idle (caught up and quiet for idle_timeout: not holding the watermark back).",
            &|(_, p)| Some(u8::from(p.idle).to_string()),
        );
        family(
            "streamc_kafka_consumer_lag",
            "Records of a Kafka partition not yet read: high watermark - consumer position.",
            &|(_, p)| p.lag.map(|l| l.to_string()),
        );
        family(
            "streamc_kafka_committed_offset",
            "The last offset the job committed for a Kafka partition (its consumer group's).",
            &|(_, p)| p.committed.map(|c| c.to_string()),
        );
        head(
            out,
            "streamc_source_batch_seconds",
            "histogram",
            "Time to process one non-empty batch of a source, through every flow it feeds.",
        );
        for s in &self.sources {
            let src = escape_label(s.name);
            let h = &s.batch_time;
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = BATCH_SECONDS_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "streamc_source_batch_seconds_bucket{{job=\"{job}\",source=\"{src}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "streamc_source_batch_seconds_sum{{job=\"{job}\",source=\"{src}\"}} {}",
                h.sum_nanos as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "streamc_source_batch_seconds_count{{job=\"{job}\",source=\"{src}\"}} {}",
                h.count
            );
        }
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
    fn state_figures_are_rendered_only_for_rocksdb_state() {
        let mut m = sample();
        let mut text = String::new();
        m.render_prometheus_at("j", 0, &mut text);
        assert!(!text.contains("rocksdb"), "{text}");
        m.state = Some(StateMetrics {
            sst_bytes: 4096,
            cache_misses: 7,
            ..StateMetrics::default()
        });
        let mut text = String::new();
        m.render_prometheus_at("j", 0, &mut text);
        assert!(
            text.contains("streamc_rocksdb_sst_bytes{job=\"j\"} 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("streamc_state_cache_misses_total{job=\"j\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE streamc_rocksdb_compactions_total counter"),
            "{text}"
        );
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
    fn partitions_lags_and_batch_times() {
        let mut m = sample();
        m.sources[0].partitions = vec![
            PartitionMetrics {
                partition: 0,
                watermark: 1000,
                idle: false,
                lag: Some(42),
                committed: Some(7),
            },
            PartitionMetrics {
                partition: 3,
                watermark: WATERMARK_MIN,
                idle: true,
                lag: None,
                committed: None,
            },
        ];
        m.sources[0].batch_time.observe(Duration::from_micros(50));
        m.sources[0].batch_time.observe(Duration::from_millis(3));
        m.sources[0].batch_time.observe(Duration::from_secs(10));
        let mut s = String::new();
        m.render_prometheus_at("j", 5234, &mut s);
        for line in [
            "streamc_source_watermark_lag_seconds{job=\"j\",source=\"clicks\"} 4\n",
            "streamc_partition_watermark_milliseconds{job=\"j\",source=\"clicks\",partition=\"0\"} 1000\n",
            "streamc_partition_watermark_lag_seconds{job=\"j\",source=\"clicks\",partition=\"0\"} 4.234\n",
            "streamc_partition_idle{job=\"j\",source=\"clicks\",partition=\"3\"} 1\n",
            "streamc_kafka_consumer_lag{job=\"j\",source=\"clicks\",partition=\"0\"} 42\n",
            "streamc_kafka_committed_offset{job=\"j\",source=\"clicks\",partition=\"0\"} 7\n",
            "# TYPE streamc_source_batch_seconds histogram\n",
            "streamc_source_batch_seconds_bucket{job=\"j\",source=\"clicks\",le=\"0.0001\"} 1\n",
            "streamc_source_batch_seconds_bucket{job=\"j\",source=\"clicks\",le=\"0.005\"} 2\n",
            "streamc_source_batch_seconds_bucket{job=\"j\",source=\"clicks\",le=\"+Inf\"} 3\n",
            "streamc_source_batch_seconds_count{job=\"j\",source=\"clicks\"} 3\n",
        ] {
            assert!(s.contains(line), "{line}\n{s}");
        }
        // Unknown figures are absent, not made up.
        assert!(!s.contains(
            "partition_watermark_lag_seconds{job=\"j\",source=\"clicks\",partition=\"3\"}"
        ));
        assert!(!s.contains("consumer_lag{job=\"j\",source=\"clicks\",partition=\"3\"}"));
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
