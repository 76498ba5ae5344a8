//! The driver: reads the sources, hands each record to the generated `Pipeline`,
//! tracks watermarks, and owns the sinks. Single-threaded: one task per binary (the
//! Kafka issue adds partition-parallel tasks).
//!
//! The loop polls every unfinished source for one batch in turn (round-robin). Each
//! record goes to [`Pipeline::on_record`]; its event time advances the source's
//! [`WatermarkTracker`], and every advance of the task watermark is handed to
//! [`Pipeline::on_watermark`] at once (so each event is judged against the watermark
//! of every event before it). Idleness is checked after every poll. A source that ends
//! moves to `WATERMARK_MAX`; when every source has ended the sinks are flushed and
//! closed and the job ends. SIGTERM/SIGINT stop reading (no window fires), flush and
//! close the sinks. Sinks are flushed at least every ~100 ms while rows are written.
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

use crate::metrics::{Metrics, MetricsServer};
use crate::sink::{self, Sink, SinkError, SinkKind, SinkSpec};
use crate::source::{self, Batch, Poll, PollLimits, Source, SourceError, SourceKind, SourceSpec};
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
    /// SIGTERM or SIGINT: reading stopped, sinks flushed; unbounded windows not fired.
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
}

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
         \x20 -h, --help                 print this help\n\
         \x20 -V, --version              print the version\n",
        name = spec.name
    );
    s.push_str("\nSources:\n");
    for src in &spec.sources {
        let kind = match &src.kind {
            SourceKind::File { path } => format!("file {path}"),
            SourceKind::Datagen(_) => "datagen".to_string(),
        };
        s.push_str(&format!("  {:<26} {kind}\n", src.name));
    }
    s.push_str("\nSinks:\n");
    for sink in &spec.sinks {
        s.push_str(&format!("  {:<26} {}\n", sink.name, sink.kind));
    }
    s.push_str(
        "\nRuns until every source has ended (bounded sources) or SIGTERM/SIGINT, then flushes\n\
         the sinks and exits 0; exits 1 on errors, 2 on a bad command line.\n",
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
    fn open<'a>(spec: &JobSpec, resolved: &'a Resolved) -> Result<Self, Error> {
        let mut writers: Vec<(&SinkKind, Writer)> = Vec::new();
        let mut get = |entry: &'a (String, SinkKind)| -> Result<usize, Error> {
            let (label, kind) = entry;
            if let Some(i) = writers.iter().position(|(k, _)| *k == kind) {
                return Ok(i);
            }
            let label = format!("{label} ({kind})");
            let sink = sink::open(kind).map_err(|source| Error::Sink {
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
        Ok(Context {
            writers: writers.into_iter().map(|(_, w)| w).collect(),
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
        })
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
        Context {
            writers,
            sink_writer: (0..n).collect(),
            dead_letter_writer: spec.sources.iter().map(|s| n + s.dead_letter).collect(),
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

    fn flush(&mut self) -> Result<(), Error> {
        self.dirty = false;
        for w in &mut self.writers {
            w.sink.flush().map_err(|e| Self::sink_error(w, e))?;
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
        let sources = spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| match last_override(&opts.inputs, i) {
                Some(path) => SourceSpec {
                    kind: SourceKind::File { path: path.clone() },
                    ..s.clone()
                },
                None => s.clone(),
            })
            .collect();
        let outputs = spec
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let kind = last_override(&opts.outputs, i).unwrap_or(&s.kind);
                (format!("sink `{}`", s.name), kind.clone())
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

/// SIGTERM/SIGINT set a flag; the handlers are removed on drop.
struct Signals {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// With `force_second`, a second signal exits the process at once (code 130), in
    /// case flushing hangs.
    fn install(force_second: bool) -> Result<Self, Error> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
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
    run_with(spec, pipeline, args, false)
}

fn run_with<P, I>(
    spec: &JobSpec,
    pipeline: &mut P,
    args: I,
    force_second: bool,
) -> Result<Summary, Error>
where
    P: Pipeline,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let text = match parse_args(spec, args)? {
        Command::Run(opts) => {
            let signals = Signals::install(force_second)?;
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

/// Runs the job to completion: parses flags (`--help`, `--input SOURCE=PATH`,
/// `--output SINK=PATH`, `--dead-letter SOURCE=PATH`), opens sinks and sources, loops
/// until every source is finished (bounded: exit 0 once every window has fired) or
/// SIGTERM/SIGINT (flush sinks, exit 0). Errors are printed and give exit code 1.
pub fn main<P: Pipeline>(spec: JobSpec, mut pipeline: P) -> std::process::ExitCode {
    match run_with(&spec, &mut pipeline, std::env::args_os().skip(1), true) {
        Ok(summary) => {
            if summary.stop != Stop::Info {
                eprintln!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ Error::Usage(_)) => {
            eprintln!(
                "{name}: {e}\nUsage: {name} [--input SOURCE=PATH] [--output SINK=PATH] \
                 [--dead-letter SOURCE=PATH] [--metrics-addr ADDR]; see {name} --help",
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
/// The longest the loop sleeps (the signal flag and idleness are checked after it).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Sleep when a source has nothing and gives no hint when it will.
const BACKOFF: Duration = Duration::from_millis(5);

struct SourceState {
    source: Box<dyn Source>,
    tracker: WatermarkTracker,
    finished: bool,
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
    // Sources first: a missing input must not cost the outputs their old content.
    let mut sources = Vec::with_capacity(resolved.sources.len());
    for s in &resolved.sources {
        let source = source::open(s).map_err(|source| Error::Source {
            name: s.name,
            source,
        })?;
        let idle = s
            .idle_timeout
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let tracker =
            WatermarkTracker::new(source.partitions(), s.max_out_of_orderness, idle, started);
        sources.push(SourceState {
            source,
            tracker,
            finished: false,
        });
    }
    let mut ctx = Context::open(spec, &resolved)?;
    let server = match opts.metrics_addr {
        Some(addr) => Some(
            MetricsServer::start(addr, spec.name, ctx.metrics.clone())
                .map_err(|source| Error::Metrics { addr, source })?,
        ),
        None => None,
    };
    let outcome = drive(
        spec,
        pipeline,
        &mut ctx,
        &mut sources,
        stop,
        server.as_ref(),
    );
    drop(sources);
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

fn drive<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &mut P,
    ctx: &mut Context,
    sources: &mut [SourceState],
    stop: &AtomicBool,
    server: Option<&MetricsServer>,
) -> Result<Stop, Error> {
    let limits = PollLimits::default();
    let mut batch = Batch::new();
    let mut last_flush = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
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
            busy |= !batch.is_empty();
            ctx.metrics.sources[i].records_in += batch.len() as u64;
            for rec in batch.iter() {
                if let Some(ts) = pipeline.on_record(i, &rec, ctx)
                    && let Some(wm) = s.tracker.on_event(rec.partition, ts, now)
                {
                    advance(pipeline, ctx, i, wm);
                }
                if ctx.error.is_some() {
                    return ctx.halt().unwrap_or(Ok(Stop::Finished));
                }
            }
            for &p in batch.ended_partitions() {
                if let Some(wm) = s.tracker.finish_partition(p) {
                    advance(pipeline, ctx, i, wm);
                }
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
            if let Some(halt) = ctx.halt() {
                return halt;
            }
        }
        if live == 0 {
            return Ok(Stop::Finished);
        }
        let now = Instant::now();
        if now >= last_flush + FLUSH_EVERY {
            if ctx.dirty {
                match ctx.flush() {
                    Ok(()) => {}
                    Err(Error::Sink {
                        source: SinkError::Closed,
                        ..
                    }) => return Ok(Stop::OutputClosed),
                    Err(e) => return Err(e),
                }
            }
            if let Some(server) = server {
                server.publish(&ctx.metrics);
            }
            last_flush = now;
        }
        if !busy {
            let mut until = wake.unwrap_or(now + BACKOFF).min(now + MAX_SLEEP);
            if ctx.dirty {
                until = until.min(last_flush + FLUSH_EVERY);
            }
            let nap = until.saturating_duration_since(now);
            if !nap.is_zero() {
                std::thread::sleep(nap);
            }
        }
    }
}
