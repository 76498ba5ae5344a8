//! The command line of a generated binary: flags, `--help`, and the job's sources and
//! sinks with the flags applied ([`Resolved`]).

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{Error, JobSpec};
use crate::sink::SinkKind;
use crate::source::{SourceKind, SourceSpec};

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
    /// `--instance-id ID` (else `STREAMC_INSTANCE_ID`, else `0`): this instance of the
    /// job; several instances in one consumer group need distinct ids.
    pub instance_id: Option<String>,
    /// `--checkpoint-storage URL`: overrides the spec's `checkpoint.storage`.
    pub checkpoint_storage: Option<String>,
    /// `--checkpoint-interval DURATION`: overrides the spec's `checkpoint.interval`.
    pub checkpoint_interval: Option<Duration>,
    /// `--from-checkpoint [INSTANCE/]ID`: restore that checkpoint (and read from its
    /// offsets), whatever the consumer group committed.
    pub from_checkpoint: Option<String>,
}

/// The environment variable with the instance id (`--instance-id` wins).
pub const INSTANCE_ENV: &str = "STREAMC_INSTANCE_ID";

/// Offsets are committed this often unless `--commit-interval` says otherwise.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// What the command line asks for.
// Parsed once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the job with these overrides.
    Run(Options),
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
}

/// What the job's sources and sinks use, which decides the flags its `--help` lists.
struct Uses {
    kafka: bool,
    redis: bool,
    serve: bool,
    checkpoints: bool,
}

impl Uses {
    fn of(spec: &JobSpec) -> Self {
        let sinks = || spec.sinks.iter().chain(&spec.dead_letters);
        Uses {
            kafka: spec
                .sources
                .iter()
                .any(|s| matches!(s.kind, SourceKind::Kafka(_)))
                || sinks().any(|s| matches!(s.kind, SinkKind::Kafka { .. })),
            redis: sinks().any(|s| matches!(s.kind, SinkKind::Redis(_))),
            serve: sinks().any(|s| matches!(s.kind, SinkKind::Serve(_))),
            checkpoints: spec.checkpoint.is_some(),
        }
    }
}

/// The one-line usage printed after a command-line error: every flag the job takes.
pub fn short_usage(spec: &JobSpec) -> String {
    let uses = Uses::of(spec);
    let mut s = format!(
        "Usage: {} [--input SOURCE=PATH] [--output SINK=PATH] [--dead-letter SOURCE=PATH] [--metrics-addr ADDR]",
        spec.name
    );
    if uses.kafka {
        s.push_str(" [--brokers ADDRS] [--group-id SOURCE=ID]");
        if !uses.checkpoints {
            s.push_str(" [--commit-interval MS]");
        }
        s.push_str(" [--bounded]");
    }
    if uses.redis {
        s.push_str(" [--redis URL]");
    }
    if uses.serve {
        s.push_str(" [--serve ADDR]");
    }
    if uses.kafka || uses.checkpoints {
        s.push_str(" [--instance-id ID]");
    }
    if uses.checkpoints {
        s.push_str(
            " [--checkpoint-storage URL] [--checkpoint-interval D] [--from-checkpoint [INSTANCE/]ID]",
        );
    }
    s.push_str(&format!("; see {} --help", spec.name));
    s
}

/// What a restart after a crash may do to a sink's output, for `--help`.
fn delivery(spec: &JobSpec, kind: &SinkKind) -> &'static str {
    use crate::checkpoint::Mode;
    let mode = spec.checkpoint.as_ref().map(|c| c.mode);
    match (mode, kind) {
        (Some(Mode::ExactlyOnce), SinkKind::Kafka { .. }) => {
            "exactly once: one Kafka transaction per checkpoint"
        }
        (Some(_), SinkKind::File { .. }) => {
            "exactly once: truncated back to the checkpoint on restore"
        }
        (Some(Mode::AtLeastOnce), SinkKind::Kafka { .. }) | (Some(_), SinkKind::Stdout) => {
            "at least once: rows after the last checkpoint may repeat"
        }
        (None, SinkKind::Kafka { .. } | SinkKind::File { .. } | SinkKind::Stdout) => {
            "at least once: rows may repeat after a restart"
        }
        (_, SinkKind::Redis(_)) => "idempotent by key, window and revision",
        (_, SinkKind::Serve(_)) => "live view",
    }
}

/// The `--help` text of the job's binary: the flags that apply to its sources and
/// sinks (a job without Kafka lists no Kafka flags), its sources and sinks, and where
/// each source's invalid records go by default.
pub fn usage(spec: &JobSpec) -> String {
    let uses = Uses::of(spec);
    let mut s = format!(
        "{name}: a streaming pipeline compiled by streamc\n\n\
         Usage: {name} [OPTIONS]\n\n\
         Options:\n\
         \x20 --input SOURCE=PATH        read source SOURCE from the JSON-lines file PATH (- = stdin)\n\
         \x20 --output SINK=PATH         write sink SINK to the JSON-lines file PATH (- = stdout)\n\
         \x20 --dead-letter SOURCE=PATH  write invalid records of SOURCE to PATH (- = stdout;\n\
         \x20                            default: see Dead letters below)\n\
         \x20 --metrics-addr ADDR        serve Prometheus metrics on http://ADDR/metrics (e.g. :9090)\n",
        name = spec.name
    );
    if uses.kafka {
        s.push_str(
            "\x20 --brokers ADDRS            Kafka bootstrap servers, host:port[,host:port...]\n\
             \x20                            (default: $STREAMC_BROKERS, else the spec's, else 127.0.0.1:9092)\n\
             \x20 --group-id SOURCE=ID       consumer group of Kafka source SOURCE\n\
             \x20 --bounded                  read Kafka sources up to the end offsets they have at start,\n\
             \x20                            then fire every window, commit and exit 0 (backfill, replay)\n",
        );
        if !uses.checkpoints {
            s.push_str(
                "\x20 --commit-interval MS       commit Kafka offsets every MS milliseconds (also 5s, 1m; default 5s)\n",
            );
        }
    }
    if uses.redis {
        s.push_str(
            "\x20 --redis URL                Redis of the Redis sinks, redis://host:port[/db]\n\
             \x20                            (default: $STREAMC_REDIS, else the spec's, else redis://127.0.0.1:6379)\n",
        );
    }
    if uses.serve {
        s.push_str(
            "\x20 --serve ADDR               serve the dashboard page and API on http://ADDR/\n",
        );
    }
    if uses.kafka || uses.checkpoints {
        s.push_str(
            "\x20 --instance-id ID           this instance of the job (default: $STREAMC_INSTANCE_ID, else 0);\n\
             \x20                            instances sharing a consumer group need distinct ids\n",
        );
    }
    if uses.checkpoints {
        s.push_str(
            "\x20 --checkpoint-storage URL   where checkpoints go (file:///dir or a directory)\n\
             \x20 --checkpoint-interval D    checkpoint every D (250ms, 5s, 1m)\n\
             \x20 --from-checkpoint [I/]ID   restore checkpoint ID (of instance I, default this one) and read\n\
             \x20                            from its offsets, whatever the consumer group committed\n",
        );
    }
    s.push_str(
        "\x20 -h, --help                 print this help\n\
         \x20 -V, --version              print the version\n",
    );
    s.push_str("\nSources:\n");
    for src in &spec.sources {
        s.push_str(&format!("  {:<26} {}\n", src.name, src.kind));
    }
    s.push_str("\nSinks:\n");
    for sink in &spec.sinks {
        s.push_str(&format!(
            "  {:<26} {} ({})\n",
            sink.name,
            sink.kind,
            delivery(spec, &sink.kind)
        ));
    }
    s.push_str(
        "\nDead letters (invalid records, kept byte-exact; a file is created at the first one):\n",
    );
    for src in &spec.sources {
        let to = spec
            .dead_letters
            .get(src.dead_letter)
            .map_or_else(|| "stdout".to_string(), |d| d.kind.to_string());
        s.push_str(&format!("  {:<26} {to}\n", src.name));
    }
    s.push_str(if uses.kafka {
        "\nRuns until every source has ended (bounded sources) or SIGTERM/SIGINT, then flushes\n\
         the sinks (and commits Kafka offsets) and exits 0; exits 1 on errors, 2 on a bad\n\
         command line. Logs go to stderr; STREAMC_LOG sets the level (error, warn, info,\n\
         debug, trace; per module: info,streamc_runtime=debug,librdkafka=warn).\n"
    } else {
        "\nRuns until every source has ended (bounded sources) or SIGTERM/SIGINT, then flushes\n\
         the sinks and exits 0; exits 1 on errors, 2 on a bad command line. Logs go to stderr;\n\
         STREAMC_LOG sets the level (error, warn, info, debug, trace; per module:\n\
         info,streamc_runtime=debug).\n"
    });
    s
}

fn usage_error(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// `--FLAG` only applies to a job with `checkpoint:`.
fn needs_checkpoints(spec: &JobSpec, flag: &str) -> Result<(), Error> {
    match spec.checkpoint {
        Some(_) => Ok(()),
        None => Err(usage_error(format!(
            "--{flag}: this job takes no checkpoints; add `checkpoint:` to its spec and build it again"
        ))),
    }
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
                let v = parse_interval("commit-interval", parser.value().map_err(lex)?)?;
                if spec.checkpoint.is_some() {
                    return Err(usage_error(
                        "--commit-interval: this job commits its offsets with each checkpoint; use --checkpoint-interval",
                    ));
                }
                opts.commit_interval = Some(v);
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
            Long("instance-id") => {
                let v = utf8("instance-id", parser.value().map_err(lex)?)?;
                crate::checkpoint::validate_instance_id(v.trim())
                    .map_err(|e| usage_error(format!("--instance-id {v:?}: {e}")))?;
                opts.instance_id = Some(v.trim().to_string());
            }
            Long("checkpoint-storage") => {
                let v = utf8("checkpoint-storage", parser.value().map_err(lex)?)?;
                needs_checkpoints(spec, "checkpoint-storage")?;
                if v.trim().is_empty() {
                    return Err(usage_error("--checkpoint-storage: empty"));
                }
                opts.checkpoint_storage = Some(v.trim().to_string());
            }
            Long("checkpoint-interval") => {
                let v = parse_interval("checkpoint-interval", parser.value().map_err(lex)?)?;
                needs_checkpoints(spec, "checkpoint-interval")?;
                opts.checkpoint_interval = Some(v);
            }
            Long("from-checkpoint") => {
                let v = utf8("from-checkpoint", parser.value().map_err(lex)?)?;
                needs_checkpoints(spec, "from-checkpoint")?;
                opts.from_checkpoint = Some(v.trim().to_string());
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

/// The job's sources and sinks with the command line applied.
pub(super) struct Resolved {
    pub(super) sources: Vec<SourceSpec>,
    /// Per output sink: label for messages, kind.
    pub(super) outputs: Vec<(String, SinkKind)>,
    /// Per source: label for messages, kind of its dead-letter output.
    pub(super) dead_letters: Vec<(String, SinkKind)>,
}

impl Resolved {
    pub(super) fn new(spec: &JobSpec, opts: &Options) -> Self {
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
    pub(super) fn check_overwrites(&self) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_flags_and_delivery_in_help() {
        let sink = |name, kind| crate::sink::SinkSpec { name, kind };
        let mut spec = JobSpec {
            name: "job",
            sources: vec![],
            sinks: vec![
                sink(
                    "out",
                    SinkKind::Kafka {
                        topic: "t".into(),
                        properties: vec![],
                    },
                ),
                sink("debug", SinkKind::Stdout),
            ],
            dead_letters: vec![],
            flows: vec![],
            checkpoint: None,
        };
        // Without `checkpoint:` the flags are refused and everything is at least once.
        let err = parse_args(&spec, ["--checkpoint-interval", "1s"]).unwrap_err();
        assert!(err.to_string().contains("takes no checkpoints"), "{err}");
        assert!(!usage(&spec).contains("--from-checkpoint"));
        assert_eq!(usage(&spec).matches("at least once").count(), 2);
        spec.checkpoint = Some(crate::driver::CheckpointSpec {
            interval_ms: 1000,
            storage: "file:///tmp/ck".into(),
            s3: Default::default(),
            mode: crate::checkpoint::Mode::ExactlyOnce,
            retain: None,
        });
        let Command::Run(opts) = parse_args(
            &spec,
            [
                "--checkpoint-interval",
                "250ms",
                "--instance-id",
                "b",
                "--from-checkpoint",
                "a/7",
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(opts.checkpoint_interval, Some(Duration::from_millis(250)));
        assert_eq!(opts.instance_id.as_deref(), Some("b"));
        assert_eq!(opts.from_checkpoint.as_deref(), Some("a/7"));
        assert!(parse_args(&spec, ["--instance-id", "a/b"]).is_err());
        let err = parse_args(&spec, ["--commit-interval", "1s"]).unwrap_err();
        assert!(err.to_string().contains("--checkpoint-interval"), "{err}");
        let help = usage(&spec);
        assert!(help.contains("--from-checkpoint"), "{help}");
        assert!(
            help.contains("exactly once: one Kafka transaction per checkpoint"),
            "{help}"
        );
        assert!(
            help.contains("at least once: rows after the last checkpoint may repeat"),
            "{help}"
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
                        static_membership: false,
                    }),
                    max_out_of_orderness: 0,
                    idle_timeout: None,
                    dead_letter: 0,
                    groups: Default::default(),
                },
                SourceSpec {
                    name: "file",
                    kind: SourceKind::File { path: "x".into() },
                    max_out_of_orderness: 0,
                    idle_timeout: None,
                    dead_letter: 0,
                    groups: Default::default(),
                },
            ],
            sinks: vec![],
            dead_letters: vec![],
            flows: vec![],
            checkpoint: None,
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
