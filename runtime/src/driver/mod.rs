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

mod checkpoint;
mod cli;
mod context;
mod drive;
mod fault;
mod state;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use crate::pipeline::{Pipeline, Record};
pub use checkpoint::{CheckpointSpec, DEFAULT_RETAIN};
pub use cli::{
    Command, DEFAULT_COMMIT_INTERVAL, INSTANCE_ENV, Options, parse_args, short_usage, usage,
};
pub use context::Context;
pub use fault::FAULT_ENV;
pub use state::{StateEnv, StateSpec};

use crate::kafka::{BROKERS_ENV, KafkaEnv};
use crate::metrics::{Metrics, MetricsServer};
use crate::sink::{SinkError, SinkSpec};
use crate::source::{SourceError, SourceSpec};
use crate::watermark::WatermarkTracker;
use cli::Resolved;
use drive::{Checkpointing, Run, SourceState, refresh_partition_metrics};

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
    /// The spec's `checkpoint:` block; None: no checkpoints (at-least-once Kafka
    /// offsets with the watermark and position in their metadata).
    pub checkpoint: Option<CheckpointSpec>,
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
    /// Checkpoint storage failed (opening it, reading a checkpoint).
    #[error("checkpoints: {0}")]
    Checkpoint(#[source] crate::checkpoint::CheckpointError),
    /// The state backend failed (RocksDB: it cannot open its directory, an I/O error),
    /// or a snapshot could not be encoded (a streamc bug).
    #[error("state: {0}")]
    State(#[source] crate::state::StateError),
    /// A checkpoint's state layout is not this binary's.
    #[error(
        "checkpoint {checkpoint} cannot be restored into this binary: {problems}. Restore it with the binary \
         that wrote it, or start without its state (another --checkpoint-storage, or a new consumer group)"
    )]
    Layout {
        /// The checkpoint.
        checkpoint: String,
        /// What changed, per flow.
        problems: String,
    },
    /// A checkpoint's state could not be applied.
    #[error("checkpoint {checkpoint}: key group {group} cannot be restored: {reason}")]
    Restore {
        /// The checkpoint.
        checkpoint: String,
        /// The key group.
        group: String,
        /// Why.
        reason: String,
    },
    /// A source that flows which are not partition-aligned read was assigned only some
    /// of its partitions.
    #[error(
        "source `{name}` was assigned {} of its {total} partitions ({assigned:?}), but a stateful flow reading it \
         is not partition-aligned: its state needs every partition in one instance, so this instance stops rather \
         than compute a wrong answer. Run one instance, or make the flow aligned (declare `partitioned_by` on the \
         source and key the flow by those fields)",
        assigned.len()
    )]
    PartialAssignment {
        /// The source.
        name: &'static str,
        /// The partitions it was assigned.
        assigned: Vec<u32>,
        /// The topic's partitions.
        total: u32,
    },
    /// The exactly-once transaction failed in a way this run cannot recover from.
    #[error("{0}")]
    Txn(#[source] crate::kafka::TxnError),
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
    /// Per output sink (as in `JobSpec::sinks`): what it is and where it writes, for
    /// example ``sink `out` (file out.jsonl)``.
    pub outputs: Vec<String>,
    /// Per source: where its invalid records went.
    pub dead_letters: Vec<String>,
    /// Per windowed flow reading a source: the events held in its windows that had not
    /// fired when the job stopped on a signal ([`Pipeline::unfired_events`]); empty
    /// otherwise.
    pub unfired: Vec<(&'static str, u64)>,
    /// Some source reads Kafka (whose uncommitted records are read again on restart).
    pub kafka_sources: bool,
    /// With checkpoints, the last one the stop took (`<instance>/<id>`, where): the
    /// unfired windows' state is in it, and a restart restores them.
    pub saved_in: Option<String>,
}

impl fmt::Display for Summary {
    /// The first line says how the job ended, after how long, and how many events it
    /// read; then one line per kind of output, each count named for what it is
    /// (results, too-late events, dead letters) and where it went:
    ///
    /// ```text
    /// demo: finished after 1.52 s: 300000 events read (197368 events/s)
    ///   2412 result rows: 2412 to sink `console` (stdout)
    ///   301 too-late events: 301 to sink `late_clicks` (file out/demo-late.jsonl)
    ///   0 invalid events
    /// ```
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
            "{}: {how} after {secs:.2} s: {} events read ({rate:.0} events/s)",
            self.job,
            m.records_in(),
        )?;
        let label = |i: usize| {
            self.outputs
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("sink `{}`", m.sinks[i].name))
        };
        let per_sink = |count: &dyn Fn(&crate::metrics::SinkMetrics) -> u64| {
            m.sinks
                .iter()
                .enumerate()
                .filter(|(_, s)| count(s) > 0)
                .map(|(i, s)| format!("{} to {}", count(s), label(i)))
                .collect::<Vec<_>>()
        };
        let results = m.results_out();
        write!(f, "\n  {results} result rows")?;
        let to = per_sink(&|s| s.rows_out - s.late_out);
        if !to.is_empty() {
            write!(f, ": {}", to.join(", "))?;
        }
        let late = m.late();
        write!(f, "\n  {late} too-late events")?;
        let mut to = per_sink(&|s| s.late_out);
        let written: u64 = m.sinks.iter().map(|s| s.late_out).sum();
        if late > written {
            to.push(format!(
                "{} counted and dropped (their flow has no `late` sink)",
                late - written
            ));
        }
        if !to.is_empty() {
            write!(f, ": {}", to.join(", "))?;
        }
        write!(f, "\n  {} invalid events", m.invalid())?;
        let to: Vec<String> = m
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.invalid > 0)
            .map(|(i, s)| {
                let dl = self
                    .dead_letters
                    .get(i)
                    .map_or("the dead letters", String::as_str);
                format!("{} of source `{}` to {dl}", s.invalid, s.name)
            })
            .collect();
        if !to.is_empty() {
            write!(f, ": {}", to.join(", "))?;
        }
        let ahead = m.ahead_of_clock();
        if ahead > 0 {
            write!(
                f,
                "\n  {ahead} events dated ahead of the wall clock (see the warning above)"
            )?;
        }
        let unfired: u64 = self.unfired.iter().map(|(_, n)| n).sum();
        if unfired > 0 {
            let per_flow: Vec<String> = self
                .unfired
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(flow, n)| format!("{n} in flow `{flow}`"))
                .collect();
            let after = match (&self.saved_in, self.kafka_sources) {
                (Some(at), _) => format!("; saved in checkpoint {at}: a restart restores them"),
                (None, true) => {
                    "; a restart reads them again from the committed Kafka offsets".to_string()
                }
                (None, false) => String::new(),
            };
            write!(
                f,
                "\n  {unfired} events in windows that had not fired ({}): not in any result yet{after}",
                per_flow.join(", "),
            )?;
        }
        Ok(())
    }
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
        &StateSpec::Memory,
        Target::<P, Given<P>>::Given(pipeline),
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
    run_with(
        spec,
        &StateSpec::Memory,
        Target::<P, Given<P>>::Given(pipeline),
        args,
        false,
        stop,
    )
}

/// The maker of a `Target::Given` (never called).
type Given<P> = fn(&StateEnv) -> Result<P, crate::state::StateError>;

/// The pipeline a run drives: given, or made once the state backend is open.
enum Target<'p, P, F> {
    Given(&'p mut P),
    Make(F),
}

fn run_with<P, I, F>(
    spec: &JobSpec,
    state: &StateSpec,
    target: Target<'_, P, F>,
    args: I,
    force_second: bool,
    stop: Arc<AtomicBool>,
) -> Result<Summary, Error>
where
    P: Pipeline,
    I: IntoIterator,
    I::Item: Into<OsString>,
    F: FnOnce(&StateEnv) -> Result<P, crate::state::StateError>,
{
    let text = match parse_args(spec, args)? {
        Command::Run(opts) => {
            let signals = Signals::install(force_second, stop)?;
            let instance = instance_id(&opts)?;
            let env = StateEnv::open(state, spec.name, &instance)?;
            let mut made;
            let pipeline = match target {
                Target::Given(p) => p,
                Target::Make(make) => {
                    made = make(&env).map_err(Error::State)?;
                    &mut made
                }
            };
            return execute(spec, pipeline, &opts, &signals.flag, &env, instance);
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
        outputs: Vec::new(),
        dead_letters: Vec::new(),
        unfired: Vec::new(),
        kafka_sources: false,
        saved_in: None,
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
    main_of(
        spec,
        &StateSpec::Memory,
        Target::<P, Given<P>>::Given(&mut pipeline),
    )
}

/// [`main`] for a pipeline made by `make` once the state backend `state` is open
/// (the generated `main`: `Job::open`).
pub fn main_with<P, F>(spec: JobSpec, state: StateSpec, make: F) -> std::process::ExitCode
where
    P: Pipeline,
    F: FnOnce(&StateEnv) -> Result<P, crate::state::StateError>,
{
    main_of(spec, &state, Target::Make(make))
}

fn main_of<P, F>(spec: JobSpec, state: &StateSpec, target: Target<'_, P, F>) -> ExitCode
where
    P: Pipeline,
    F: FnOnce(&StateEnv) -> Result<P, crate::state::StateError>,
{
    if let Err(e) = init_logging() {
        eprintln!("{}: error: {e}", spec.name);
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    match run_with(
        &spec,
        state,
        target,
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
            eprintln!("{}: {e}\n{}", spec.name, short_usage(&spec));
            ExitCode::from(e.exit_code())
        }
        Err(e) if spec.checkpoint.is_some() && restarts_from_checkpoint(&e) => {
            restart(&spec, &e);
            eprintln!("{}: error: {e}", spec.name);
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("{}: error: {e}", spec.name);
            ExitCode::from(e.exit_code())
        }
    }
}

/// How many times in a row (each within [`RESTART_WINDOW`] of the one before) a binary
/// restarts itself from its last checkpoint ([`restart`]) before it gives up and exits
/// with the error.
pub const MAX_RESTARTS: u32 = 5;

/// Restarts further apart than this are not "in a row".
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// The environment variable counting a binary's restarts of itself: `<n>:<epoch secs>`.
const RESTARTS_ENV: &str = "STREAMC_RESTARTS";

/// Whether `e` is a failure of the exactly-once transaction that a restart from the last
/// checkpoint recovers from: the producer failed (a fatal librdkafka error, a call that
/// did not return within its bound), or the transaction became abortable where the
/// driver could not roll back (a delivery failed inside a sink write). Not a fenced
/// producer (another instance took over) nor a configuration that cannot work.
pub fn restarts_from_checkpoint(e: &Error) -> bool {
    use crate::kafka::TxnError;
    let txn = match e {
        Error::Txn(t) => Some(t),
        Error::Sink { source, .. } => TxnError::of_sink_error(source),
        _ => None,
    };
    matches!(
        txn,
        Some(TxnError::Fatal { .. } | TxnError::Abortable { .. })
    )
}

/// Replaces the process with a fresh run of the same binary and arguments (without
/// `--from-checkpoint`: the restart resumes from what the committed offsets name), which
/// restores the last committed checkpoint; a new producer's `init_transactions` fences
/// the failed one and aborts its transaction. Returns only if that is not possible, or
/// after [`MAX_RESTARTS`] restarts in a row.
fn restart(spec: &JobSpec, e: &Error) {
    use std::os::unix::process::CommandExt as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let done: u32 = std::env::var(RESTARTS_ENV)
        .ok()
        .and_then(|v| {
            let (n, at) = v.split_once(':')?;
            let at: u64 = at.parse().ok()?;
            (now.saturating_sub(at) < RESTART_WINDOW.as_secs()).then(|| n.parse().ok())?
        })
        .unwrap_or(0);
    if done >= MAX_RESTARTS {
        tracing::error!(
            job = spec.name,
            restarts = done,
            "giving up after restarting from the last checkpoint {done} times in a row"
        );
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args: Vec<OsString> = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if a == "--from-checkpoint" {
            skip = true;
            continue;
        }
        if a.to_string_lossy().starts_with("--from-checkpoint=") {
            continue;
        }
        args.push(a);
    }
    tracing::warn!(job = spec.name, error = %e, restart = done + 1, "restarting from the last committed checkpoint");
    std::thread::sleep(Duration::from_millis(500 * u64::from(done + 1)));
    let err = std::process::Command::new(exe)
        .args(args)
        .env(RESTARTS_ENV, format!("{}:{now}", done + 1))
        .exec();
    tracing::error!(job = spec.name, error = %err, "cannot restart");
}

/// The instance id: `--instance-id`, `STREAMC_INSTANCE`, or `0`.
fn instance_id(opts: &Options) -> Result<String, Error> {
    let instance = opts
        .instance_id
        .clone()
        .or_else(|| {
            std::env::var(INSTANCE_ENV)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "0".to_string());
    crate::checkpoint::validate_instance_id(&instance)
        .map_err(|e| Error::Usage(format!("instance id {instance:?}: {e}")))?;
    Ok(instance)
}

fn execute<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &mut P,
    opts: &Options,
    stop: &AtomicBool,
    state: &StateEnv,
    instance: String,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let faults = fault::Faults::from_env().map_err(Error::Usage)?;
    let resolved = Resolved::new(spec, opts);
    resolved.check_overwrites()?;
    let brokers = opts
        .brokers
        .clone()
        .or_else(|| std::env::var(BROKERS_ENV).ok());
    let mut env = KafkaEnv::new(spec.name, brokers);
    env.bounded = opts.bounded;
    env.instance = instance.clone();
    let kafka_sources = resolved
        .sources
        .iter()
        .filter(|s| matches!(s.kind, crate::source::SourceKind::Kafka(_)))
        .count();
    let mut checkpointer = match &spec.checkpoint {
        None => None,
        Some(c) => {
            if kafka_sources != 0 && kafka_sources != resolved.sources.len() {
                return Err(Error::Usage(
                    "a checkpointed job reads either only Kafka sources or none (--input turned some into files)"
                        .into(),
                ));
            }
            let interval = opts.checkpoint_interval.unwrap_or_else(|| {
                Duration::from_millis(u64::try_from(c.interval_ms).unwrap_or(1).max(1))
            });
            let storage = opts.checkpoint_storage.as_deref().unwrap_or(&c.storage);
            let storage = if storage.contains("://") {
                storage.to_string()
            } else {
                format!("file://{storage}")
            };
            if c.mode == crate::checkpoint::Mode::ExactlyOnce && kafka_sources > 0 {
                env.transactional_id = Some(crate::kafka::transactional_id(spec.name, &instance));
                env.txn_timeouts = crate::kafka::TxnTimeouts::for_checkpoint_interval(interval)
                    .map_err(Error::Txn)?;
            }
            Some(checkpoint::Checkpointer::open(
                c,
                &storage,
                interval,
                spec.name,
                &instance,
                opts.from_checkpoint.as_deref(),
            )?)
        }
    };
    // Sources first: a missing input must not cost the outputs their old content.
    let mut sources = Vec::with_capacity(resolved.sources.len());
    for s in &resolved.sources {
        let source =
            crate::connectors::open_source_with(s, &env).map_err(|source| Error::Source {
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
            aligned: s.groups.partitions,
            task: s.groups.task,
            kafka: matches!(s.kind, crate::source::SourceKind::Kafka(_)),
            replay: Vec::new(),
            start: std::collections::BTreeMap::new(),
        });
    }
    let mut ctx = Context::open(spec, &resolved, &env, checkpointer.is_some())?;
    let txn = if env.exactly_once() {
        let txn = env.transaction().map_err(Error::Txn)?;
        txn.begin().map_err(Error::Txn)?;
        Some(txn)
    } else {
        None
    };
    let server = match opts.metrics_addr {
        Some(addr) => Some(
            MetricsServer::start(addr, spec.name, ctx.metrics.clone())
                .map_err(|source| Error::Metrics { addr, source })?,
        ),
        None => None,
    };
    tracing::info!(
        job = spec.name,
        instance = %instance,
        sources = ?resolved.sources.iter().map(|s| format!("{} ({})", s.name, s.kind)).collect::<Vec<_>>(),
        metrics = ?server.as_ref().map(MetricsServer::local_addr),
        checkpoints = ?checkpointer.as_ref().map(|c| format!("{} every {:?}, {}", c.store.storage().location(""), c.interval, c.mode)),
        "job started"
    );
    if let Some(c) = &mut checkpointer {
        c.last = Instant::now();
    }
    let commit_interval = opts.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    let mut run = Run {
        spec,
        pipeline,
        ctx: &mut ctx,
        sources: &mut sources,
        checkpoints: checkpointer.map(|ck| Checkpointing { ck, txn }),
        faults,
        commit_interval,
        sinks_restored: false,
        manifests: std::collections::BTreeMap::new(),
        task_from: None,
        state,
    };
    let mut outcome = if kafka_sources == 0 {
        run.restore_at_start()
    } else {
        Ok(())
    }
    .and_then(|()| run.drive(stop, server.as_ref()));
    // A clean stop commits (a last checkpoint, or the safe offsets), synchronously,
    // while the consumers are still in their groups. (Not after an error or a closed
    // output: results may be lost.)
    if let Ok(Stop::Signal | Stop::Finished) = outcome
        && let Err(e) = run.finish()
    {
        outcome = Err(e);
    }
    if !matches!(outcome, Ok(Stop::Signal | Stop::Finished)) {
        run.abandon();
        // Results may be lost: closing the consumers must not commit anything.
        for s in run.sources.iter_mut() {
            s.source.stop_committing();
        }
    }
    // What the stop leaves unfired (a signal: windows are not fired on the way out).
    let unfired = match outcome {
        Ok(Stop::Signal) => run
            .pipeline
            .unfired_events()
            .into_iter()
            .filter_map(|(flow, n)| Some((*spec.flows.get(flow)?, n)))
            .collect(),
        _ => Vec::new(),
    };
    let saved_in = match outcome {
        Ok(Stop::Signal) => run.checkpoints.as_ref().and_then(|c| {
            let m = c.ck.committed.as_ref()?;
            Some(format!(
                "{}/{} ({})",
                m.instance,
                m.id,
                c.ck.store.storage().location("")
            ))
        }),
        _ => None,
    };
    drop(run);
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
    let describe = |list: &[(String, crate::sink::SinkKind)]| {
        list.iter()
            .map(|(label, kind)| format!("{label} ({kind})"))
            .collect()
    };
    Ok(Summary {
        job: spec.name,
        stop,
        metrics: ctx.metrics,
        elapsed: started.elapsed(),
        outputs: describe(&resolved.outputs),
        dead_letters: describe(&resolved.dead_letters),
        unfired,
        saved_in,
        kafka_sources: resolved
            .sources
            .iter()
            .any(|s| matches!(s.kind, crate::source::SourceKind::Kafka(_))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{TxnError, TxnOp};

    #[test]
    fn transaction_failures_restart_from_the_checkpoint_and_others_do_not() {
        let fatal = TxnError::Fatal {
            op: TxnOp::Commit,
            message: "timed out".into(),
        };
        let abortable = TxnError::Abortable {
            op: TxnOp::Produce,
            message: "delivery failed".into(),
        };
        let fenced = TxnError::Fenced {
            op: TxnOp::Commit,
            transactional_id: "streamc-j-0".into(),
            message: "fenced".into(),
        };
        assert!(restarts_from_checkpoint(&Error::Txn(fatal)));
        let in_sink = Error::Sink {
            sink: "sink `out`".into(),
            source: crate::sink::SinkError::Other(Box::new(abortable)),
        };
        assert!(restarts_from_checkpoint(&in_sink));
        assert!(!restarts_from_checkpoint(&Error::Txn(fenced)));
        assert!(!restarts_from_checkpoint(&Error::Txn(TxnError::Config {
            message: "bad".into()
        })));
        assert!(!restarts_from_checkpoint(&Error::Usage("x".into())));
    }
}
