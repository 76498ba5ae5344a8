//! The driver: reads the sources, hands each record to the generated `Pipeline`,
//! tracks watermarks, and owns the sinks. Single-threaded: one task per binary (scaling
//! out is by Kafka partitions: several binaries in one consumer group).
//!
//! The loop polls every unfinished source for one batch in turn (round-robin). A
//! batch's partition assignments and revocations (Kafka rebalances) go to the source's
//! [`WatermarkTracker`] first. Each record goes to [`Pipeline::on_record`]; its event
//! time advances the tracker, and every advance of the task watermark is handed to
//! [`Pipeline::on_watermark`] at once (so each event is judged against the watermark
//! of every event before it). Then the partitions' caught-up statuses, and idleness is
//! checked after every poll. A source that ends moves to `WATERMARK_MAX`; when every
//! source has ended the sinks are flushed and closed and the job ends. SIGTERM/SIGINT
//! stop reading (no window fires), flush and close the sinks. Sinks are flushed at
//! least every ~100 ms while rows are written.
//!
//! Offsets (Kafka, at-least-once): for sources that track offsets the driver reports
//! each batch's processed records as one run per partition (first offset, next offset,
//! max event time) with [`Pipeline::held_from`], and every `--commit-interval` (default
//! 5 s) and at shutdown it first waits until every sink has delivered what it was given
//! ([`Sink::wait_delivered`]), then asks the sources to commit what is safe:
//! asynchronously while running, synchronously at shutdown. See `kafka/offsets.rs`.
//!
//! Architecture invariant: nothing the data does makes the driver panic; an invalid
//! record is the pipeline's to dead-letter, and every sink error ends the job with a
//! message and exit code 1.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::kafka::{BROKERS_ENV, KafkaEnv};
use crate::metrics::{Metrics, MetricsServer, PartitionMetrics};
use crate::sink::{self, Sink, SinkError, SinkKind, SinkSpec};
use crate::source::{
    self, Batch, PartitionChange, PartitionStats, Poll, PollLimits, Processed, Source, SourceError,
    SourceKind, SourceSpec,
};
use crate::watermark::WatermarkTracker;

/// One input record as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Partition of the source (0 for `file` and `datagen`).
    pub partition: u32,
    /// Position in the partition (`file`: 0-based line number; `datagen`: event index).
    pub offset: u64,
    /// The raw bytes (a JSON line without its newline).
    pub payload: &'a [u8],
}

/// The generated part of a job: one fused loop per source.
pub trait Pipeline {
    /// Parses, validates and processes one record of source `src` through every flow
    /// fed by it (filter, map, key, window assignment, accumulation, emission).
    /// Returns the record's event time, or None when it was invalid (and already sent
    /// to the dead letter output through `ctx`).
    fn on_record(&mut self, src: usize, rec: &Record<'_>, ctx: &mut Context) -> Option<i64>;

    /// Source `src`'s task watermark advanced to `wm` (WATERMARK_MAX at the end of a
    /// bounded source): fire and purge windows of every flow fed by it, transitively.
    fn on_watermark(&mut self, src: usize, wm: i64, ctx: &mut Context);

    /// The smallest event time of source `src` whose records may still affect a
    /// result: every record with an event time below it has had all its windows fire
    /// AND be purged (past allowed lateness), in every flow fed by the source,
    /// transitively (a downstream window holding rows derived from the source counts);
    /// `i64::MAX` when no window state is held (a flow without windows holds nothing:
    /// its rows are written at once). Typically the minimum of
    /// `WindowOperator::oldest_held_start` over those windows (None = `i64::MAX`).
    ///
    /// The driver commits a Kafka partition's offsets only up to the first record whose
    /// event time may be held (at-least-once: a restart re-reads held records and
    /// rebuilds the window state from them). Called once per poll of such a source, so
    /// it must be cheap (no scan over keys). The default, `i64::MIN`, holds everything:
    /// nothing read since the last commit is ever committed.
    fn held_from(&self, src: usize) -> i64 {
        let _ = src;
        i64::MIN
    }
}

/// What the generated `main` tells the driver about the job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// The pipeline's name (also the binary's).
    pub name: &'static str,
    /// Sources, indexed as in the plan (`src` of `Pipeline` calls).
    pub sources: Vec<SourceSpec>,
    /// Output sinks, indexed as in the plan.
    pub sinks: Vec<SinkSpec>,
    /// Dead-letter sinks; `SourceSpec::dead_letter` indexes this.
    pub dead_letters: Vec<SinkSpec>,
    /// Flow names, indexed as in the plan (for metrics and logs).
    pub flows: Vec<&'static str>,
}

/// Why a job could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The tracing subscriber (logs) could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// A source could not be opened or read.
    #[error("source `{name}`: {source}")]
    Source {
        /// The source's name.
        name: &'static str,
        /// What went wrong.
        source: SourceError,
    },
    /// `sink` names the sink (or the dead-letter output) and where it writes.
    #[error("{sink}: {source}")]
    Sink {
        /// For example ``sink `out` (file /tmp/out.jsonl)``.
        sink: String,
        /// What went wrong.
        source: SinkError,
    },
    /// A row the generated code emitted could not be serialized (a streamc bug).
    #[error("cannot serialize a row: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signal(#[source] io::Error),
    /// `--metrics-addr` could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding it failed.
        source: io::Error,
    },
}

impl Error {
    /// The process exit code for this error: 2 for usage errors, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Why the job stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every source ended and every window fired.
    Finished,
    /// SIGTERM or SIGINT (or the stop flag of [`run_until`]): reading stopped, sinks
    /// flushed, safe offsets committed; unbounded windows not fired.
    Signal,
    /// The reader of stdout went away (broken pipe, e.g. `| head`).
    OutputClosed,
    /// `--help` or `--version` was printed; nothing ran.
    Info,
}

/// The outcome of a job that ran.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The job's name.
    pub job: &'static str,
    /// Why it stopped.
    pub stop: Stop,
    /// Final counters.
    pub metrics: Metrics,
    /// Wall-clock time from start to the sinks' close.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metrics;
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            m.records_in() as f64 / secs
        } else {
            0.0
        };
        let how = match self.stop {
            Stop::Finished => "finished",
            Stop::Signal => "stopped by signal",
            Stop::OutputClosed => "stopped, output closed",
            Stop::Info => "did not run",
        };
        write!(
            f,
            "{}: {how}: {} events in, {} invalid, {} late, {} rows out in {secs:.2} s ({rate:.0} events/s)",
            self.job,
            m.records_in(),
            m.invalid(),
            m.late(),
            m.rows_out()
        )
    }
}

/// Command-line settings that override the spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// `--input SOURCE=PATH`: source index, JSON-lines file (`-` = stdin).
    pub inputs: Vec<(usize, String)>,
    /// `--output SINK=PATH`: sink index, new kind (`-` = stdout).
    pub outputs: Vec<(usize, SinkKind)>,
    /// `--dead-letter SOURCE=PATH`: source index, new kind (`-` = stdout).
    pub dead_letters: Vec<(usize, SinkKind)>,
    /// `--metrics-addr ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--brokers ADDRS`: Kafka bootstrap servers of every Kafka source and sink
    /// (overrides `STREAMC_BROKERS` and `bootstrap.servers` properties).
    pub brokers: Option<String>,
    /// `--commit-interval MS`: how often Kafka offsets are committed (default 5 s).
    pub commit_interval: Option<Duration>,
    /// `--group-id SOURCE=ID`: source index, consumer group.
    pub group_ids: Vec<(usize, String)>,
    /// `--bounded`: Kafka sources stop at the end offsets their partitions had at
    /// start (like Flink's `setBounded(OffsetsInitializer.latest())`), so the job
    /// ends like a job on files: every window fires, offsets are committed, exit 0.
    pub bounded: bool,
    /// `--redis URL`: the Redis of every Redis sink (overrides `STREAMC_REDIS` and the
    /// spec's `url`).
    pub redis: Option<String>,
    /// `--serve ADDR`: where the embedded dashboard serves (specs with `serve:`).
    pub serve: Option<String>,
}

/// Offsets are committed this often unless `--commit-interval` says otherwise.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the job with these overrides.
    Run(Options),
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
}

/// The `--help` text of the job's binary.
pub fn usage(spec: &JobSpec) -> String {
    let mut s = format!(
        "{name}: a streaming pipeline compiled by streamc\n\n\
         Usage: {name} [OPTIONS]\n\n\
         Options:\n\
         \x20 --input SOURCE=PATH        read source SOURCE from the JSON-lines file PATH (- = stdin)\n\
         \x20 --output SINK=PATH         write sink SINK to the JSON-lines file PATH (- = stdout)\n\
         \x20 --dead-letter SOURCE=PATH  write invalid records of SOURCE to PATH (- = stdout)\n\
         \x20 --metrics-addr ADDR        serve Prometheus metrics on http://ADDR/metrics (e.g. :9090)\n\
         \x20 --brokers ADDRS            Kafka bootstrap servers, host:port[,host:port...]\n\
         \x20                            (default: $STREAMC_BROKERS, else the spec's, else 127.0.0.1:9092)\n\
         \x20 --group-id SOURCE=ID       consumer group of Kafka source SOURCE\n\
         \x20 --commit-interval MS       commit Kafka offsets every MS milliseconds (also 5s, 1m; default 5s)\n\
         \x20 --bounded                  read Kafka sources up to the end offsets they have at start,\n\
         \x20                            then fire every window, commit and exit 0 (backfill, replay)\n\
         \x20 --redis URL                Redis of the Redis sinks, redis://host:port[/db]\n\
         \x20                            (default: $STREAMC_REDIS, else the spec's, else redis://127.0.0.1:6379)\n\
         \x20 --serve ADDR               serve the dashboard page and API on http://ADDR/ (specs with `serve:`)\n\
         \x20 -h, --help                 print this help\n\
         \x20 -V, --version              print the version\n",
        name = spec.name
    );
    s.push_str("\nSources:\n");
    for src in &spec.sources {
        s.push_str(&format!("  {:<26} {}\n", src.name, src.kind));
    }
    s.push_str("\nSinks:\n");
    for sink in &spec.sinks {
        s.push_str(&format!("  {:<26} {}\n", sink.name, sink.kind));
    }
    s.push_str(
        "\nRuns until every source has ended (bounded sources) or SIGTERM/SIGINT, then flushes\n\
         the sinks (and commits Kafka offsets) and exits 0; exits 1 on errors, 2 on a bad\n\
         command line. Logs go to stderr; STREAMC_LOG sets the level (error, warn, info,\n\
         debug, trace; per module: info,streamc_runtime=debug,librdkafka=warn).\n",
    );
    s
}

fn usage_error(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn name_and_path(
    flag: &str,
    value: OsString,
    what: &str,
    names: &[&'static str],
) -> Result<(usize, String), Error> {
    let value = value
        .into_string()
        .map_err(|v| usage_error(format!("--{flag} {v:?}: not valid UTF-8")))?;
    let Some((name, path)) = value.split_once('=') else {
        return Err(usage_error(format!(
            "--{flag} {value:?}: expected {}=PATH",
            what.to_uppercase()
        )));
    };
    if path.is_empty() {
        return Err(usage_error(format!("--{flag} {value:?}: empty path")));
    }
    let Some(i) = names.iter().position(|n| *n == name) else {
        let known = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        return Err(usage_error(format!(
            "--{flag}: no {what} named `{name}` (known: {known})"
        )));
    };
    Ok((i, path.to_string()))
}

fn sink_kind(path: String) -> SinkKind {
    if path == "-" {
        SinkKind::Stdout
    } else {
        SinkKind::File { path }
    }
}

fn utf8(flag: &str, value: OsString) -> Result<String, Error> {
    value
        .into_string()
        .map_err(|v| usage_error(format!("--{flag} {v:?}: not valid UTF-8")))
}

/// `250`, `250ms`, `5s`, `1m`: a positive duration, plain numbers in milliseconds.
fn parse_interval(flag: &str, value: OsString) -> Result<Duration, Error> {
    let value = utf8(flag, value)?;
    let v = value.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "ms"),
    };
    let ms = match (num.parse::<u64>(), unit) {
        (Ok(n), "ms") => Some(n),
        (Ok(n), "s") => n.checked_mul(1000),
        (Ok(n), "m") => n.checked_mul(60_000),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(usage_error(format!(
            "--{flag} {value:?}: expected a positive number of milliseconds (or 5s, 1m)"
        ))),
    }
}

fn parse_addr(value: OsString) -> Result<SocketAddr, Error> {
    let value = value
        .into_string()
        .map_err(|v| usage_error(format!("--metrics-addr {v:?}: not valid UTF-8")))?;
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.clone()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            usage_error(format!(
                "--metrics-addr {value:?}: expected HOST:PORT or :PORT"
            ))
        })
}

/// Parses the command line (without the program name).
pub fn parse_args<I>(spec: &JobSpec, args: I) -> Result<Command, Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let sources: Vec<&'static str> = spec.sources.iter().map(|s| s.name).collect();
    let sinks: Vec<&'static str> = spec.sinks.iter().map(|s| s.name).collect();
    let mut opts = Options::default();
    let mut parser = lexopt::Parser::from_args(args);
    let lex = |e: lexopt::Error| usage_error(e.to_string());
    while let Some(arg) = parser.next().map_err(lex)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("input") => {
                let v = parser.value().map_err(lex)?;
                opts.inputs
                    .push(name_and_path("input", v, "source", &sources)?);
            }
            Long("output") => {
                let v = parser.value().map_err(lex)?;
                let (i, path) = name_and_path("output", v, "sink", &sinks)?;
                opts.outputs.push((i, sink_kind(path)));
            }
            Long("dead-letter") => {
                let v = parser.value().map_err(lex)?;
                let (i, path) = name_and_path("dead-letter", v, "source", &sources)?;
                opts.dead_letters.push((i, sink_kind(path)));
            }
            Long("metrics-addr") => {
                opts.metrics_addr = Some(parse_addr(parser.value().map_err(lex)?)?);
            }
            Long("brokers") => {
                let v = utf8("brokers", parser.value().map_err(lex)?)?;
                if v.trim().is_empty() {
                    return Err(usage_error("--brokers: empty"));
                }
                opts.brokers = Some(v.trim().to_string());
            }
            Long("commit-interval") => {
                opts.commit_interval = Some(parse_interval(
                    "commit-interval",
                    parser.value().map_err(lex)?,
                )?);
            }
            Long("bounded") => opts.bounded = true,
            Long("redis") => {
                let v = utf8("redis", parser.value().map_err(lex)?)?;
                if !v.trim().starts_with("redis://") {
                    return Err(usage_error(format!(
                        "--redis {v:?}: expected redis://host:port[/db]"
                    )));
                }
                opts.redis = Some(v.trim().to_string());
            }
            Long("serve") => {
                let v = utf8("serve", parser.value().map_err(lex)?)?;
                if !spec
                    .sinks
                    .iter()
                    .any(|s| matches!(s.kind, SinkKind::Serve(_)))
                {
                    return Err(usage_error(
                        "--serve: this job has no dashboard; add `serve: {}` to its spec and build it again",
                    ));
                }
                if v.trim().is_empty() {
                    return Err(usage_error("--serve: expected HOST:PORT or :PORT"));
                }
                opts.serve = Some(v.trim().to_string());
            }
            Long("group-id") => {
                let v = parser.value().map_err(lex)?;
                let (i, id) = name_and_path("group-id", v, "source", &sources)?;
                if !matches!(spec.sources[i].kind, SourceKind::Kafka(_)) {
                    return Err(usage_error(format!(
                        "--group-id: source `{}` does not read Kafka",
                        spec.sources[i].name
                    )));
                }
                opts.group_ids.push((i, id));
            }
            other => return Err(lex(other.unexpected())),
        }
    }
    Ok(Command::Run(opts))
}

/// One opened sink, shared by every logical sink with the same kind.
struct Writer {
    sink: Box<dyn Sink>,
    /// For error messages: `sink `name` (file /path)`.
    label: String,
}

/// Handed to the pipeline with every call: where results, late and invalid events go.
pub struct Context {
    writers: Vec<Writer>,
    /// Output sink index → writer.
    sink_writer: Vec<usize>,
    /// Source index → writer of its dead-letter output.
    dead_letter_writer: Vec<usize>,
    source_names: Vec<&'static str>,
    row: Vec<u8>,
    key: Vec<u8>,
    metrics: Metrics,
    /// The first write error; the driver stops at the next check.
    error: Option<Error>,
    /// Rows written since the last flush.
    dirty: bool,
    /// Some sink reports progress ([`Sink::wants_progress`]).
    progress: bool,
}

#[derive(serde::Serialize)]
struct DeadLetter<'a> {
    error: &'a str,
    source: &'a str,
    partition: u32,
    offset: u64,
    raw: Cow<'a, str>,
}

impl Context {
    /// Opens the sinks as resolved. Logical sinks with the same kind (two sources sharing
    /// a dead-letter file, a sink and a dead-letter output both on stdout) share one
    /// writer.
    fn open<'a>(spec: &JobSpec, resolved: &'a Resolved, env: &KafkaEnv) -> Result<Self, Error> {
        let mut writers: Vec<(&SinkKind, Writer)> = Vec::new();
        let mut get = |entry: &'a (String, SinkKind)| -> Result<usize, Error> {
            let (label, kind) = entry;
            if let Some(i) = writers.iter().position(|(k, _)| *k == kind) {
                return Ok(i);
            }
            let label = format!("{label} ({kind})");
            let sink = sink::open_with(kind, env).map_err(|source| Error::Sink {
                sink: label.clone(),
                source,
            })?;
            writers.push((kind, Writer { sink, label }));
            Ok(writers.len() - 1)
        };
        let sink_writer = resolved
            .outputs
            .iter()
            .map(&mut get)
            .collect::<Result<_, _>>()?;
        let dead_letter_writer = resolved
            .dead_letters
            .iter()
            .map(&mut get)
            .collect::<Result<_, _>>()?;
        Ok(Context::from_writers(
            spec,
            writers.into_iter().map(|(_, w)| w).collect(),
            sink_writer,
            dead_letter_writer,
        ))
    }

    /// The context over opened writers: `sink_writer[i]` is output sink i's writer,
    /// `dead_letter_writer[s]` source s's dead-letter writer.
    fn from_writers(
        spec: &JobSpec,
        writers: Vec<Writer>,
        sink_writer: Vec<usize>,
        dead_letter_writer: Vec<usize>,
    ) -> Self {
        Context {
            progress: writers.iter().any(|w| w.sink.wants_progress()),
            writers,
            sink_writer,
            dead_letter_writer,
            source_names: spec.sources.iter().map(|s| s.name).collect(),
            row: Vec::with_capacity(512),
            key: Vec::with_capacity(128),
            metrics: Metrics::new(
                spec.sources.iter().map(|s| s.name),
                spec.flows.iter().copied(),
                spec.sinks.iter().map(|s| s.name),
            ),
            error: None,
            dirty: false,
        }
    }

    /// A context whose sinks are made by `make` rather than opened from their kinds
    /// (one per output sink, then one per dead-letter output): for benchmarks and tests
    /// that drive a generated pipeline in process.
    pub fn with_sinks(spec: &JobSpec, mut make: impl FnMut(&SinkSpec) -> Box<dyn Sink>) -> Self {
        let mut writers = Vec::new();
        for s in spec.sinks.iter().chain(spec.dead_letters.iter()) {
            writers.push(Writer {
                sink: make(s),
                label: format!("sink `{}` ({})", s.name, s.kind),
            });
        }
        let n = spec.sinks.len();
        let dead_letter_writer = spec.sources.iter().map(|s| n + s.dead_letter).collect();
        Context::from_writers(spec, writers, (0..n).collect(), dead_letter_writer)
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn sink_error(writer: &Writer, source: SinkError) -> Error {
        Error::Sink {
            sink: writer.label.clone(),
            source,
        }
    }

    /// The job's counters so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serializes `row` as JSON once (and `key`, the Kafka message key, if any) and
    /// writes it to each sink index in `sinks`.
    pub fn emit<R: serde::Serialize, K: serde::Serialize>(
        &mut self,
        sinks: &[usize],
        key: Option<&K>,
        row: &R,
    ) {
        if sinks.is_empty() || self.error.is_some() {
            return;
        }
        self.row.clear();
        if let Err(e) = serde_json::to_writer(&mut self.row, row) {
            return self.fail(Error::Serialize(e));
        }
        let mut key_done = false;
        for &s in sinks {
            let w = &mut self.writers[self.sink_writer[s]];
            let k = match key {
                Some(k) if w.sink.uses_key() => {
                    if !key_done {
                        self.key.clear();
                        if let Err(e) = serde_json::to_writer(&mut self.key, k) {
                            return self.fail(Error::Serialize(e));
                        }
                        key_done = true;
                    }
                    Some(&self.key[..])
                }
                _ => None,
            };
            if let Err(e) = w.sink.write(k, &self.row) {
                let e = Self::sink_error(w, e);
                return self.fail(e);
            }
            self.metrics.sinks[s].rows_out += 1;
        }
        self.dirty = true;
    }

    /// A too-late event of flow `flow`: `payload` written unchanged to sink `sink`, or
    /// only counted when the flow names no late sink.
    pub fn late(&mut self, flow: usize, sink: Option<usize>, payload: &[u8]) {
        self.metrics.flows[flow].late += 1;
        let Some(s) = sink else { return };
        if self.error.is_some() {
            return;
        }
        let w = &mut self.writers[self.sink_writer[s]];
        if let Err(e) = w.sink.write(None, payload) {
            let e = Self::sink_error(w, e);
            return self.fail(e);
        }
        self.metrics.sinks[s].rows_out += 1;
        self.dirty = true;
    }

    /// An invalid record of source `src`: written to its dead-letter sink as
    /// `{"error", "source", "partition", "offset", "raw"}`.
    pub fn dead_letter(&mut self, src: usize, rec: &Record<'_>, error: &str) {
        self.metrics.sources[src].invalid += 1;
        if self.error.is_some() {
            return;
        }
        let dl = DeadLetter {
            error,
            source: self.source_names[src],
            partition: rec.partition,
            offset: rec.offset,
            raw: String::from_utf8_lossy(rec.payload),
        };
        self.row.clear();
        if let Err(e) = serde_json::to_writer(&mut self.row, &dl) {
            return self.fail(Error::Serialize(e));
        }
        let w = &mut self.writers[self.dead_letter_writer[src]];
        if let Err(e) = w.sink.write(None, &self.row) {
            let e = Self::sink_error(w, e);
            return self.fail(e);
        }
        self.dirty = true;
    }

    /// Hands the counters to the sinks that report progress (dashboards).
    fn progress(&mut self) {
        if !self.progress {
            return;
        }
        for w in &mut self.writers {
            if w.sink.wants_progress() {
                w.sink.progress(&self.metrics);
            }
        }
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.dirty = false;
        for w in &mut self.writers {
            w.sink.flush().map_err(|e| Self::sink_error(w, e))?;
        }
        Ok(())
    }

    /// Waits until every sink has delivered every row written so far (before offsets
    /// are committed).
    fn wait_delivered(&mut self) -> Result<(), Error> {
        self.dirty = false;
        for w in &mut self.writers {
            w.sink
                .wait_delivered()
                .map_err(|e| Self::sink_error(w, e))?;
        }
        Ok(())
    }

    /// Closes every writer (all of them, even after a failure); the first error wins.
    fn close(&mut self) -> Result<(), Error> {
        let mut first = None;
        for w in &mut self.writers {
            if let Err(e) = w.sink.close() {
                first.get_or_insert_with(|| Self::sink_error(w, e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes the recorded write error: a closed stdout ends the job normally.
    fn halt(&mut self) -> Option<Result<Stop, Error>> {
        self.error.take().map(|e| match e {
            Error::Sink {
                source: SinkError::Closed,
                ..
            } => Ok(Stop::OutputClosed),
            e => Err(e),
        })
    }
}

/// The job's sources and sinks with the command line applied.
struct Resolved {
    sources: Vec<SourceSpec>,
    /// Per output sink: label for messages, kind.
    outputs: Vec<(String, SinkKind)>,
    /// Per source: label for messages, kind of its dead-letter output.
    dead_letters: Vec<(String, SinkKind)>,
}

impl Resolved {
    fn new(spec: &JobSpec, opts: &Options) -> Self {
        // The flag, else the environment, else the spec's (else the sink's default).
        let redis_url = opts.redis.clone().or_else(|| {
            std::env::var(crate::redis::REDIS_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty())
        });
        let sources = spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| match last_override(&opts.inputs, i) {
                Some(path) => SourceSpec {
                    kind: SourceKind::File { path: path.clone() },
                    ..s.clone()
                },
                None => {
                    let mut s = s.clone();
                    if let (SourceKind::Kafka(k), Some(id)) =
                        (&mut s.kind, last_override(&opts.group_ids, i))
                    {
                        // The flag wins over the spec's group id and a `group.id` property.
                        k.group_id = id.clone();
                        k.properties.retain(|(key, _)| key.trim() != "group.id");
                    }
                    s
                }
            })
            .collect();
        let outputs = spec
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut kind = last_override(&opts.outputs, i).unwrap_or(&s.kind).clone();
                match (&mut kind, &redis_url, &opts.serve) {
                    (SinkKind::Redis(r), Some(url), _) => r.url = Some(url.clone()),
                    (SinkKind::Serve(d), _, Some(addr)) => d.listen = Some(addr.clone()),
                    _ => {}
                }
                (format!("sink `{}`", s.name), kind)
            })
            .collect();
        let dead_letters = spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let declared = spec.dead_letters.get(src.dead_letter);
                let kind = match (last_override(&opts.dead_letters, i), declared) {
                    (Some(k), _) => k.clone(),
                    (None, Some(d)) => d.kind.clone(),
                    // A JobSpec without the dead-letter sink it names: the code
                    // generator's bug, but never lose invalid records over it.
                    (None, None) => SinkKind::Stdout,
                };
                let label = match declared {
                    Some(d) => format!("dead-letter output `{}`", d.name),
                    None => format!("dead-letter output of `{}`", src.name),
                };
                (label, kind)
            })
            .collect();
        Resolved {
            sources,
            outputs,
            dead_letters,
        }
    }

    /// Refuses to start when a file sink is the input file of a source: opening the sink
    /// would truncate the input.
    fn check_overwrites(&self) -> Result<(), Error> {
        let canonical = |p: &str| std::fs::canonicalize(p).ok();
        for src in &self.sources {
            let SourceKind::File { path: input } = &src.kind else {
                continue;
            };
            let Some(input_c) = canonical(input) else {
                continue;
            };
            for (label, kind) in self.outputs.iter().chain(&self.dead_letters) {
                if let SinkKind::File { path } = kind
                    && canonical(path).as_ref() == Some(&input_c)
                {
                    return Err(usage_error(format!(
                        "{label} would overwrite {input}, the input of source `{}`",
                        src.name
                    )));
                }
            }
        }
        Ok(())
    }
}

fn last_override<T>(list: &[(usize, T)], i: usize) -> Option<&T> {
    list.iter().rev().find(|(j, _)| *j == i).map(|(_, v)| v)
}

/// SIGTERM/SIGINT set a flag (given: a caller may set it too); the handlers are
/// removed on drop.
struct Signals {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// With `force_second`, a second signal exits the process at once (code 130), in
    /// case flushing hangs.
    fn install(force_second: bool, flag: Arc<AtomicBool>) -> Result<Self, Error> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = Signals {
            flag,
            ids: Vec::new(),
        };
        for sig in [SIGTERM, SIGINT] {
            if force_second {
                let id = signal_hook::flag::register_conditional_shutdown(
                    sig,
                    130,
                    Arc::clone(&signals.flag),
                )
                .map_err(Error::Signal)?;
                signals.ids.push(id);
            }
            let id = signal_hook::flag::register(sig, Arc::clone(&signals.flag))
                .map_err(Error::Signal)?;
            signals.ids.push(id);
        }
        Ok(signals)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Runs the job with the command line `args` (without the program name) until every
/// source has ended or SIGTERM/SIGINT, and returns what happened; `main` wraps this.
/// `--help`/`--version` print to stdout and return a summary with `Stop::Info`.
pub fn run<P, I>(spec: &JobSpec, pipeline: &mut P, args: I) -> Result<Summary, Error>
where
    P: Pipeline,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    run_with(
        spec,
        pipeline,
        args,
        false,
        Arc::new(AtomicBool::new(false)),
    )
}

/// [`run`], also stopping (as on SIGTERM: sinks flushed, offsets committed,
/// `Stop::Signal`) once `stop` is set, from another thread for example. For tests and
/// embedding; SIGTERM/SIGINT set the same flag.
pub fn run_until<P, I>(
    spec: &JobSpec,
    pipeline: &mut P,
    args: I,
    stop: Arc<AtomicBool>,
) -> Result<Summary, Error>
where
    P: Pipeline,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    run_with(spec, pipeline, args, false, stop)
}

fn run_with<P, I>(
    spec: &JobSpec,
    pipeline: &mut P,
    args: I,
    force_second: bool,
    stop: Arc<AtomicBool>,
) -> Result<Summary, Error>
where
    P: Pipeline,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let text = match parse_args(spec, args)? {
        Command::Run(opts) => {
            let signals = Signals::install(force_second, stop)?;
            return execute(spec, pipeline, &opts, &signals.flag);
        }
        Command::Help => usage(spec),
        Command::Version => format!(
            "{} (streamc runtime {})\n",
            spec.name,
            env!("CARGO_PKG_VERSION")
        ),
    };
    // A closed stdout (`--help | head -1`) is not worth a panic.
    let _ = io::stdout().write_all(text.as_bytes());
    let _ = io::stdout().flush();
    Ok(Summary {
        job: spec.name,
        stop: Stop::Info,
        metrics: Metrics::default(),
        elapsed: Duration::ZERO,
    })
}

/// The environment variable with the log filter: a level (`info`, the default) and/or
/// `target=level` pairs, comma-separated (`warn,streamc_runtime=debug`).
pub const LOG_ENV: &str = "STREAMC_LOG";

/// Installs the process's log subscriber: `tracing` events to stderr, filtered by
/// `STREAMC_LOG` (default `info`). Fails on a bad filter; a subscriber already
/// installed (a second call, or the embedding program's) is kept.
pub fn init_logging() -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var(LOG_ENV).unwrap_or_default();
    let filter = if filter.trim().is_empty() {
        "info"
    } else {
        filter.trim()
    };
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .map_err(|e| Error::Logging(format!("{LOG_ENV}={filter:?}: {e}")))?;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(false),
        )
        .with(targets)
        .try_init();
    Ok(())
}

/// Runs the job to completion: parses flags (`--help`, `--input SOURCE=PATH`,
/// `--output SINK=PATH`, `--dead-letter SOURCE=PATH`, `--metrics-addr`, `--brokers`,
/// `--group-id`, `--commit-interval`), sets up logging, opens sinks and sources, loops
/// until every source is finished (bounded: exit 0 once every window has fired) or
/// SIGTERM/SIGINT (flush sinks, commit offsets, exit 0). Errors are printed and give
/// exit code 1.
pub fn main<P: Pipeline>(spec: JobSpec, mut pipeline: P) -> std::process::ExitCode {
    if let Err(e) = init_logging() {
        eprintln!("{}: error: {e}", spec.name);
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    match run_with(
        &spec,
        &mut pipeline,
        std::env::args_os().skip(1),
        true,
        stop,
    ) {
        Ok(summary) => {
            if summary.stop != Stop::Info {
                eprintln!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ Error::Usage(_)) => {
            eprintln!(
                "{name}: {e}\nUsage: {name} [--input SOURCE=PATH] [--output SINK=PATH] \
                 [--dead-letter SOURCE=PATH] [--metrics-addr ADDR] [--brokers ADDRS] \
                 [--group-id SOURCE=ID] [--commit-interval MS]; see {name} --help",
                name = spec.name
            );
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("{}: error: {e}", spec.name);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Sinks are flushed at least this often while rows are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The longest the loop naps (the signal flag and idleness are checked after it).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Sleep when a source has nothing and gives no hint when it will.
const BACKOFF: Duration = Duration::from_millis(5);

struct SourceState {
    source: Box<dyn Source>,
    tracker: WatermarkTracker,
    finished: bool,
    /// The source commits offsets (Kafka): the driver reports processed runs.
    tracks_offsets: bool,
}

fn execute<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &mut P,
    opts: &Options,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let resolved = Resolved::new(spec, opts);
    resolved.check_overwrites()?;
    let brokers = opts
        .brokers
        .clone()
        .or_else(|| std::env::var(BROKERS_ENV).ok());
    let mut env = KafkaEnv::new(spec.name, brokers);
    env.bounded = opts.bounded;
    // Sources first: a missing input must not cost the outputs their old content.
    let mut sources = Vec::with_capacity(resolved.sources.len());
    for s in &resolved.sources {
        let source = source::open_with(s, &env).map_err(|source| Error::Source {
            name: s.name,
            source,
        })?;
        let idle = s
            .idle_timeout
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let tracker =
            WatermarkTracker::new(source.partitions(), s.max_out_of_orderness, idle, started);
        let tracks_offsets = source.tracks_offsets();
        sources.push(SourceState {
            source,
            tracker,
            finished: false,
            tracks_offsets,
        });
    }
    let mut ctx = Context::open(spec, &resolved, &env)?;
    let server = match opts.metrics_addr {
        Some(addr) => Some(
            MetricsServer::start(addr, spec.name, ctx.metrics.clone())
                .map_err(|source| Error::Metrics { addr, source })?,
        ),
        None => None,
    };
    tracing::info!(
        job = spec.name,
        sources = ?resolved.sources.iter().map(|s| format!("{} ({})", s.name, s.kind)).collect::<Vec<_>>(),
        metrics = ?server.as_ref().map(MetricsServer::local_addr),
        "job started"
    );
    let commit_interval = opts.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    let mut outcome = drive(
        spec,
        pipeline,
        &mut ctx,
        &mut sources,
        stop,
        server.as_ref(),
        commit_interval,
    );
    // A clean stop commits what is safe, synchronously, while the consumers are still
    // in their groups. (Not after an error or a closed output: results may be lost.)
    if let Ok(Stop::Signal | Stop::Finished) = outcome
        && sources.iter().any(|s| s.tracks_offsets)
    {
        tracing::info!(job = spec.name, "committing offsets");
        if let Err(e) = commit_offsets(spec, pipeline, &mut ctx, &mut sources, true) {
            outcome = Err(e);
        }
    }
    if !matches!(outcome, Ok(Stop::Signal | Stop::Finished)) {
        // Results may be lost: closing the consumers must not commit anything.
        for s in &mut sources {
            s.source.stop_committing();
        }
    }
    refresh_partition_metrics(&mut ctx, &sources);
    drop(sources);
    ctx.progress();
    let closed = ctx.close();
    if let Some(server) = &server {
        server.publish(&ctx.metrics);
    }
    let stop = match (outcome?, closed) {
        (stop, Ok(())) => stop,
        (
            _,
            Err(Error::Sink {
                source: SinkError::Closed,
                ..
            }),
        ) => Stop::OutputClosed,
        (_, Err(e)) => return Err(e),
    };
    Ok(Summary {
        job: spec.name,
        stop,
        metrics: ctx.metrics,
        elapsed: started.elapsed(),
    })
}

/// Hands a watermark advance of source `src` to the pipeline.
fn advance<P: Pipeline>(pipeline: &mut P, ctx: &mut Context, src: usize, wm: i64) {
    ctx.metrics.sources[src].watermark = wm;
    pipeline.on_watermark(src, wm, ctx);
}

/// Adds a processed record to the batch's run of its partition (one run per partition
/// per batch: a partition's records in a batch are consecutive in its offsets).
fn note_run(runs: &mut Vec<Processed>, partition: u32, offset: u64, ts: Option<i64>) {
    let ts = ts.unwrap_or(i64::MIN);
    let next = offset.saturating_add(1);
    let run = match runs.last_mut() {
        Some(r) if r.partition == partition => Some(r),
        _ => runs.iter_mut().find(|r| r.partition == partition),
    };
    match run {
        Some(r) => {
            r.next = r.next.max(next);
            r.max_event_time = r.max_event_time.max(ts);
        }
        None => runs.push(Processed {
            partition,
            first: offset,
            next,
            max_event_time: ts,
        }),
    }
}

/// Waits until every sink has delivered what it was given, then lets every source that
/// tracks offsets commit what is safe (`sync`: waiting for the brokers).
fn commit_offsets<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &P,
    ctx: &mut Context,
    sources: &mut [SourceState],
    sync: bool,
) -> Result<(), Error> {
    ctx.wait_delivered()?;
    for (i, s) in sources.iter_mut().enumerate() {
        if !s.tracks_offsets {
            continue;
        }
        let held_from = pipeline.held_from(i);
        s.source
            .commit(held_from, sync)
            .map_err(|source| Error::Source {
                name: spec.sources[i].name,
                source,
            })?;
    }
    Ok(())
}

/// Per-partition metrics: watermarks and idleness from the trackers, lag and committed
/// offsets from the sources.
fn refresh_partition_metrics(ctx: &mut Context, sources: &[SourceState]) {
    let mut stats: Vec<PartitionStats> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        stats.clear();
        s.source.partition_stats(&mut stats);
        let out = &mut ctx.metrics.sources[i].partitions;
        out.clear();
        for ps in s.tracker.partition_states() {
            let st = stats.iter().find(|st| st.partition == ps.partition);
            out.push(PartitionMetrics {
                partition: ps.partition,
                watermark: ps.watermark,
                idle: ps.idle,
                lag: st.and_then(|st| st.lag),
                committed: st.and_then(|st| st.committed),
            });
        }
    }
}

fn drive<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &mut P,
    ctx: &mut Context,
    sources: &mut [SourceState],
    stop: &AtomicBool,
    server: Option<&MetricsServer>,
    commit_interval: Duration,
) -> Result<Stop, Error> {
    let limits = PollLimits::default();
    let mut batch = Batch::new();
    let mut runs: Vec<Processed> = Vec::new();
    let mut last_flush = Instant::now();
    let commits = sources.iter().any(|s| s.tracks_offsets);
    let mut last_commit = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!(job = spec.name, "stopping");
            return Ok(Stop::Signal);
        }
        let mut busy = false;
        let mut live = 0;
        let mut wake: Option<Instant> = None;
        for (i, s) in sources.iter_mut().enumerate() {
            if s.finished {
                continue;
            }
            batch.clear();
            let poll = s
                .source
                .poll(&mut batch, limits)
                .map_err(|source| Error::Source {
                    name: spec.sources[i].name,
                    source,
                })?;
            let now = Instant::now();
            // Rebalances first: the batch holds no record of a revoked partition, and
            // records of an assigned one may follow.
            for &change in batch.partition_changes() {
                match change {
                    PartitionChange::Assigned(p) => s.tracker.assign_partition(p, now),
                    PartitionChange::Revoked(p) => {
                        if let Some(wm) = s.tracker.revoke_partition(p) {
                            advance(pipeline, ctx, i, wm);
                        }
                    }
                }
            }
            busy |= !batch.is_empty();
            ctx.metrics.sources[i].records_in += batch.len() as u64;
            runs.clear();
            for rec in batch.iter() {
                let ts = pipeline.on_record(i, &rec, ctx);
                if let Some(ts) = ts
                    && let Some(wm) = s.tracker.on_event(rec.partition, ts, now)
                {
                    advance(pipeline, ctx, i, wm);
                }
                if s.tracks_offsets {
                    note_run(&mut runs, rec.partition, rec.offset, ts);
                }
                if ctx.error.is_some() {
                    return ctx.halt().unwrap_or(Ok(Stop::Finished));
                }
            }
            if !batch.is_empty() {
                ctx.metrics.sources[i].batch_time.observe(now.elapsed());
            }
            for &p in batch.ended_partitions() {
                if let Some(wm) = s.tracker.finish_partition(p) {
                    advance(pipeline, ctx, i, wm);
                }
            }
            for &(p, caught_up) in batch.caught_up() {
                s.tracker.set_caught_up(p, caught_up);
            }
            match poll {
                Poll::More => {
                    busy = true;
                    live += 1;
                }
                Poll::Pending { retry_at } => {
                    live += 1;
                    let at = retry_at.unwrap_or(now + BACKOFF);
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
                Poll::Finished => {
                    s.finished = true;
                    if let Some(wm) = s.tracker.finish_all() {
                        advance(pipeline, ctx, i, wm);
                    }
                }
            }
            if !s.finished
                && let Some(wm) = s.tracker.check_idle(now)
            {
                advance(pipeline, ctx, i, wm);
            }
            if s.tracks_offsets {
                s.source.processed(&runs, pipeline.held_from(i));
            }
            if let Some(halt) = ctx.halt() {
                return halt;
            }
        }
        if live == 0 {
            return Ok(Stop::Finished);
        }
        let now = Instant::now();
        if now >= last_flush + FLUSH_EVERY {
            // Also when nothing was written since: sinks report delivery errors of rows
            // written earlier (Kafka) here. A flush of an empty buffer costs nothing.
            match ctx.flush() {
                Ok(()) => {}
                Err(Error::Sink {
                    source: SinkError::Closed,
                    ..
                }) => return Ok(Stop::OutputClosed),
                Err(e) => return Err(e),
            }
            if server.is_some() || ctx.progress {
                refresh_partition_metrics(ctx, sources);
            }
            if let Some(server) = server {
                server.publish(&ctx.metrics);
            }
            ctx.progress();
            last_flush = now;
        }
        if commits && now >= last_commit + commit_interval {
            match commit_offsets(spec, pipeline, ctx, sources, false) {
                Ok(()) => {}
                Err(Error::Sink {
                    source: SinkError::Closed,
                    ..
                }) => return Ok(Stop::OutputClosed),
                Err(e) => return Err(e),
            }
            last_commit = Instant::now();
        }
        if !busy {
            let now = Instant::now();
            let mut until = wake.unwrap_or(now + BACKOFF).min(now + MAX_SLEEP);
            if ctx.dirty {
                until = until.min(last_flush + FLUSH_EVERY);
            }
            let nap = until.saturating_duration_since(now);
            if !nap.is_zero() {
                // A source may wake the loop early (Kafka: records arrived), so a park,
                // not a sleep. Spurious wake-ups only cost a round of polls.
                std::thread::park_timeout(nap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_one_per_partition_per_batch() {
        let mut runs = Vec::new();
        for (p, off, ts) in [
            (0, 10, Some(5)),
            (1, 7, None),
            (0, 11, Some(3)),
            (0, 13, Some(9)),
            (1, 8, Some(1)),
            (2, 0, None),
        ] {
            note_run(&mut runs, p, off, ts);
        }
        let run = |partition, first, next, max_event_time| Processed {
            partition,
            first,
            next,
            max_event_time,
        };
        assert_eq!(
            runs,
            vec![run(0, 10, 14, 9), run(1, 7, 9, 1), run(2, 0, 1, i64::MIN)]
        );
    }

    #[test]
    fn commit_interval_and_kafka_flags() {
        let spec = JobSpec {
            name: "job",
            sources: vec![
                SourceSpec {
                    name: "clicks",
                    kind: SourceKind::Kafka(crate::source::KafkaSourceSpec {
                        topic: "clicks".into(),
                        group_id: "g".into(),
                        start: crate::source::KafkaStart::Earliest,
                        properties: vec![("group.id".into(), "p".into())],
                    }),
                    max_out_of_orderness: 0,
                    idle_timeout: None,
                    dead_letter: 0,
                },
                SourceSpec {
                    name: "file",
                    kind: SourceKind::File { path: "x".into() },
                    max_out_of_orderness: 0,
                    idle_timeout: None,
                    dead_letter: 0,
                },
            ],
            sinks: vec![],
            dead_letters: vec![],
            flows: vec![],
        };
        let Command::Run(opts) = parse_args(
            &spec,
            [
                "--brokers",
                "a:1,b:2",
                "--commit-interval",
                "250",
                "--group-id",
                "clicks=mine",
                "--bounded",
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert!(opts.bounded);
        assert_eq!(opts.brokers.as_deref(), Some("a:1,b:2"));
        assert_eq!(opts.commit_interval, Some(Duration::from_millis(250)));
        assert_eq!(opts.group_ids, vec![(0, "mine".to_string())]);
        let resolved = Resolved::new(&spec, &opts);
        let SourceKind::Kafka(k) = &resolved.sources[0].kind else {
            panic!()
        };
        assert_eq!(k.group_id, "mine");
        assert!(k.properties.is_empty());
        for (v, ms) in [("5s", 5000), ("1m", 60_000), ("20ms", 20)] {
            let Command::Run(o) = parse_args(&spec, ["--commit-interval", v]).unwrap() else {
                panic!()
            };
            assert_eq!(o.commit_interval, Some(Duration::from_millis(ms)));
        }
        for bad in [
            &["--commit-interval", "0"][..],
            &["--commit-interval", "5h"],
            &["--commit-interval", "x"],
            &["--group-id", "file=g"],
            &["--group-id", "nope=g"],
            &["--brokers", ""],
        ] {
            let err = parse_args(&spec, bad.iter().copied()).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{bad:?}: {err}");
        }
        let help = usage(&spec);
        for needle in [
            "--brokers ADDRS",
            "--group-id SOURCE=ID",
            "--commit-interval MS",
            "--bounded",
            "kafka topic clicks (group g)",
            "STREAMC_LOG",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }
}
