//! The driver end to end with a hand-written `Pipeline`: file and datagen sources, file
//! sinks, dead letters, late events, watermarks, command-line overrides, SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use streamc_runtime::WATERMARK_MAX;
use streamc_runtime::driver::{self, Command, Error, JobSpec, Stop, Summary};
use streamc_runtime::sink::{SinkError, SinkKind, SinkSpec};
use streamc_runtime::source::{DatagenSpec, FieldSpec, FieldType, SourceKind, SourceSpec};
use streamc_runtime::{Context, Pipeline, Record};

/// A raised SIGTERM reaches every `run` of the process: the signal test runs alone,
/// the others share.
static SIGNAL_LOCK: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SIGNAL_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SIGNAL_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// Parses `{"k": .., "ts": ..}`; invalid events are dead-lettered, events behind the
/// source's watermark are late (flow 0), the others are emitted as rows to `out`. At
/// the end of a source it emits an `end` row.
struct TestPipeline {
    out: Vec<usize>,
    late_sink: Option<usize>,
    wm: Vec<i64>,
    calls: Vec<(usize, i64)>,
}

impl TestPipeline {
    fn new(sources: usize, out: Vec<usize>, late_sink: Option<usize>) -> Self {
        TestPipeline {
            out,
            late_sink,
            wm: vec![i64::MIN; sources],
            calls: Vec::new(),
        }
    }
}

impl Pipeline for TestPipeline {
    fn on_record(&mut self, src: usize, rec: &Record<'_>, ctx: &mut Context) -> Option<i64> {
        let v: Value = match serde_json::from_slice(rec.payload) {
            Ok(v) => v,
            Err(e) => {
                ctx.dead_letter(src, rec, &e.to_string());
                return None;
            }
        };
        let Some(ts) = v.get("ts").and_then(Value::as_i64) else {
            ctx.dead_letter(src, rec, "missing or invalid field `ts`");
            return None;
        };
        if ts < self.wm[src] {
            ctx.late(0, self.late_sink, rec.payload);
            return Some(ts);
        }
        let key = v.get("k").cloned().unwrap_or(Value::Null);
        let row = json!({"src": src, "k": key, "ts": ts, "offset": rec.offset});
        ctx.emit(&self.out, Some(&key), &row);
        Some(ts)
    }

    fn on_watermark(&mut self, src: usize, wm: i64, ctx: &mut Context) {
        self.wm[src] = wm;
        self.calls.push((src, wm));
        if wm == WATERMARK_MAX {
            ctx.emit(&self.out, None::<&()>, &json!({"src": src, "end": true}));
        }
    }
}

fn file_source(name: &'static str, path: &Path, dead_letter: usize) -> SourceSpec {
    SourceSpec {
        name,
        kind: SourceKind::File {
            path: path.to_str().unwrap().to_string(),
        },
        max_out_of_orderness: 10,
        idle_timeout: None,
        dead_letter,
        groups: Default::default(),
    }
}

fn file_sink(name: &'static str, path: &Path) -> SinkSpec {
    SinkSpec {
        name,
        kind: SinkKind::File {
            path: path.to_str().unwrap().to_string(),
        },
    }
}

fn datagen(count: Option<u64>, rate: u64, late_fraction: f64) -> DatagenSpec {
    let f = |name, ty, nullable, key| FieldSpec {
        name,
        ty,
        nullable,
        key,
    };
    DatagenSpec {
        rate,
        keys: 10,
        max_delay: 50,
        late_fraction,
        seed: 7,
        count,
        start: Some(1_700_000_000_000),
        late_delay: 1000,
        schema: vec![
            f("k", FieldType::String, false, true),
            f("url", FieldType::String, false, false),
            f("amount", FieldType::F64, true, false),
            f("ts", FieldType::Timestamp, false, false),
        ],
        event_time: 3,
    }
}

fn datagen_source(spec: DatagenSpec) -> SourceSpec {
    SourceSpec {
        name: "gen",
        kind: SourceKind::Datagen(spec),
        max_out_of_orderness: 100,
        idle_timeout: None,
        dead_letter: 0,
        groups: Default::default(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    read(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run(spec: &JobSpec, p: &mut TestPipeline, args: &[&str]) -> Result<Summary, Error> {
    driver::run(spec, p, args.iter().copied())
}

fn assert_watermarks(calls: &[(usize, i64)], sources: usize) {
    for src in 0..sources {
        let wms: Vec<i64> = calls
            .iter()
            .filter(|(s, _)| *s == src)
            .map(|(_, w)| *w)
            .collect();
        assert!(
            wms.windows(2).all(|w| w[0] < w[1]),
            "not monotonic: {wms:?}"
        );
        assert_eq!(wms.last(), Some(&WATERMARK_MAX), "source {src}: {wms:?}");
    }
}

struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        Files { _dir: dir, root }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

const INPUT: &[u8] = b"{\"k\":\"a\",\"ts\":100}\n\
    {\"k\":\"b\",\"ts\":120}\n\
    \n\
    not json\n\
    {\"k\":\"a\",\"ts\":115}\n\
    { \"k\" : \"late\",   \"ts\": 50 }\n\
    \xff\xfe{\"k\":1}\n\
    {\"k\":\"c\"}\n\
    {\"k\":\"d\",\"ts\":200}";

fn err_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_err()
        .to_string()
}

#[test]
fn file_to_file_sinks_dead_letters_and_late_events() {
    let _g = shared();
    let f = Files::new();
    let input = f.write("in.jsonl", INPUT);
    let (out, late, dlq) = (
        f.path("out.jsonl"),
        f.path("late.jsonl"),
        f.path("dlq.jsonl"),
    );
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &input, 0)],
        sinks: vec![file_sink("out", &out), file_sink("late", &late)],
        dead_letters: vec![file_sink("dlq", &dlq)],
        flows: vec!["flow"],
        checkpoint: None,
    };
    let mut p = TestPipeline::new(1, vec![0], Some(1));
    let summary = run(&spec, &mut p, &[]).unwrap();

    assert_eq!(summary.stop, Stop::Finished);
    let rows = lines(&out);
    assert_eq!(
        rows,
        vec![
            json!({"src": 0, "k": "a", "ts": 100, "offset": 0}),
            json!({"src": 0, "k": "b", "ts": 120, "offset": 1}),
            json!({"src": 0, "k": "a", "ts": 115, "offset": 4}),
            json!({"src": 0, "k": "d", "ts": 200, "offset": 8}),
            json!({"src": 0, "end": true}),
        ]
    );
    // Late events pass through byte for byte.
    assert_eq!(read(&late), "{ \"k\" : \"late\",   \"ts\": 50 }\n");
    // Dead letters: exactly this shape and key order.
    let expect = [
        format!(
            r#"{{"error":{},"source":"events","partition":0,"offset":3,"raw":"not json"}}"#,
            serde_json::to_string(&err_of(b"not json")).unwrap()
        ),
        format!(
            // Not UTF-8: the bytes as base64, byte-exact.
            r#"{{"error":{},"source":"events","partition":0,"offset":6,"raw_base64":"//57ImsiOjF9"}}"#,
            serde_json::to_string(&err_of(b"\xff\xfe{\"k\":1}")).unwrap()
        ),
        r#"{"error":"missing or invalid field `ts`","source":"events","partition":0,"offset":7,"raw":"{\"k\":\"c\"}"}"#
            .to_string(),
    ];
    assert_eq!(read(&dlq), expect.join("\n") + "\n");

    assert_eq!(
        p.calls,
        vec![(0, 90), (0, 110), (0, 190), (0, WATERMARK_MAX)]
    );
    assert_watermarks(&p.calls, 1);
    let m = &summary.metrics;
    assert_eq!(m.sources[0].records_in, 8);
    assert_eq!(m.sources[0].invalid, 3);
    assert_eq!(m.sources[0].watermark, WATERMARK_MAX);
    assert_eq!(m.flows[0].late, 1);
    assert_eq!(m.sinks[0].rows_out, 5);
    assert_eq!(m.sinks[1].rows_out, 1);
    // Each count named for what it is and where it went: the late event is not a
    // result row.
    let text = summary.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("job: finished after ") && lines[0].contains(": 8 events read ("),
        "{text}"
    );
    let at = |p: &Path| p.display().to_string();
    assert_eq!(
        lines[1..],
        [
            format!("  5 result rows: 5 to sink `out` (file {})", at(&out)),
            format!("  1 too-late events: 1 to sink `late` (file {})", at(&late)),
            format!(
                "  3 invalid events: 3 of source `events` to dead-letter output `dlq` (file {})",
                at(&dlq)
            ),
        ],
        "{text}"
    );
}

#[test]
fn late_events_without_a_late_sink_are_counted() {
    let _g = shared();
    let f = Files::new();
    let input = f.write("in.jsonl", INPUT);
    let (out, dlq) = (f.path("out.jsonl"), f.path("dlq.jsonl"));
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &input, 0)],
        sinks: vec![file_sink("out", &out)],
        dead_letters: vec![file_sink("dlq", &dlq)],
        flows: vec!["flow"],
        checkpoint: None,
    };
    let mut p = TestPipeline::new(1, vec![0], None);
    let summary = run(&spec, &mut p, &[]).unwrap();
    assert_eq!(summary.metrics.flows[0].late, 1);
    assert_eq!(summary.metrics.sinks[0].rows_out, 5);
    assert!(!read(&out).contains("late"));
}

#[test]
fn overrides_input_output_and_dead_letter() {
    let _g = shared();
    let f = Files::new();
    let input = f.write("other.jsonl", INPUT);
    let missing = f.path("does/not/exist.jsonl");
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &missing, 0)],
        // Stdout in the spec; the flag turns it into a file.
        sinks: vec![
            SinkSpec {
                name: "out",
                kind: SinkKind::Stdout,
            },
            file_sink("late", &f.path("late.jsonl")),
        ],
        dead_letters: vec![file_sink("dlq", &f.path("dlq.jsonl"))],
        flows: vec!["flow"],
        checkpoint: None,
    };
    let (out, dlq) = (f.path("o/out.jsonl"), f.path("d/dead.jsonl"));
    let input_arg = format!("events={}", input.display());
    let out_arg = format!("--output=out={}", out.display());
    let dlq_arg = format!("events={}", dlq.display());
    let mut p = TestPipeline::new(1, vec![0], Some(1));
    let summary = run(
        &spec,
        &mut p,
        &["--input", &input_arg, &out_arg, "--dead-letter", &dlq_arg],
    )
    .unwrap();
    assert_eq!(summary.stop, Stop::Finished);
    assert_eq!(lines(&out).len(), 5);
    assert_eq!(lines(&dlq).len(), 3);
    assert!(!f.path("dlq.jsonl").exists());
    assert_eq!(read(&f.path("late.jsonl")).lines().count(), 1);
}

#[test]
fn two_sources_share_one_dead_letter_file() {
    let _g = shared();
    let f = Files::new();
    let a = f.write("a.jsonl", b"{\"k\":1,\"ts\":5}\nbad a\n");
    let b = f.write("b.jsonl", b"bad b\n{\"k\":2,\"ts\":7}\n");
    let dlq = f.path("dlq.jsonl");
    let out = f.path("out.jsonl");
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("a", &a, 0), file_source("b", &b, 1)],
        sinks: vec![file_sink("out", &out)],
        // Two identical dead-letter specs: one file, opened (and truncated) once.
        dead_letters: vec![file_sink("dlq", &dlq), file_sink("dlq", &dlq)],
        flows: vec![],
        checkpoint: None,
    };
    let mut p = TestPipeline::new(2, vec![0], None);
    let summary = run(&spec, &mut p, &[]).unwrap();
    let mut dead: Vec<(String, u64)> = lines(&dlq)
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap().to_string(),
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    dead.sort();
    assert_eq!(dead, vec![("a".into(), 1), ("b".into(), 0)]);
    assert_eq!(summary.metrics.invalid(), 2);
    assert_watermarks(&p.calls, 2);
    // Each source's end row, plus one row per valid event.
    assert_eq!(lines(&out).len(), 4);
}

#[test]
fn usage_errors_exit_2() {
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", Path::new("/x"), 0)],
        sinks: vec![file_sink("out", Path::new("/y"))],
        dead_letters: vec![file_sink("dlq", Path::new("/z"))],
        flows: vec![],
        checkpoint: None,
    };
    for args in [
        &["--bogus"][..],
        &["positional"],
        &["--input"],
        &["--input", "nope=/tmp/x"],
        &["--input", "events"],
        &["--input", "events="],
        &["--output", "events=/tmp/x"],
        &["--dead-letter", "out=/tmp/x"],
        &["--metrics-addr", "not an address"],
    ] {
        let err = driver::parse_args(&spec, args.iter().copied()).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{args:?}: {err:?}");
        assert_eq!(err.exit_code(), 2);
    }
    let err = driver::parse_args(&spec, ["--input", "nope=/tmp/x"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--input: no source named `nope` (known: events)"
    );
    assert_eq!(driver::parse_args(&spec, ["-h"]).unwrap(), Command::Help);
    assert_eq!(
        driver::parse_args(&spec, ["--version"]).unwrap(),
        Command::Version
    );
    let Command::Run(opts) = driver::parse_args(
        &spec,
        [
            "--output",
            "out=-",
            "--input=events=a=b.jsonl",
            "--metrics-addr",
            ":9187",
        ],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(opts.outputs, vec![(0, SinkKind::Stdout)]);
    assert_eq!(opts.inputs, vec![(0, "a=b.jsonl".to_string())]);
    assert_eq!(opts.metrics_addr, Some("0.0.0.0:9187".parse().unwrap()));
    let help = driver::usage(&spec);
    for needle in [
        "--input SOURCE=PATH",
        "events",
        "file /x",
        "out",
        "file /y",
        // Where invalid records go by default.
        "Dead letters",
        "  events                     file /z\n",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    // A job without Kafka, Redis or a dashboard lists none of their flags.
    for flag in [
        "--brokers",
        "--group-id",
        "--commit-interval",
        "--bounded",
        "--redis",
        "--serve",
        "offsets",
    ] {
        assert!(!help.contains(flag), "{flag}: {help}");
        assert!(!driver::short_usage(&spec).contains(flag), "{flag}");
    }
    assert_eq!(
        driver::short_usage(&spec),
        "Usage: job [--input SOURCE=PATH] [--output SINK=PATH] [--dead-letter SOURCE=PATH] \
         [--metrics-addr ADDR]; see job --help"
    );
}

#[test]
fn a_dead_letter_file_is_created_at_its_first_record() {
    let _g = shared();
    let f = Files::new();
    let valid = f.write("valid.jsonl", b"{\"k\":\"a\",\"ts\":1}\n");
    let (out, dlq) = (f.path("out.jsonl"), f.path("dir/dlq.jsonl"));
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &valid, 0)],
        sinks: vec![file_sink("out", &out)],
        dead_letters: vec![file_sink("dlq", &dlq)],
        flows: vec!["flow"],
        checkpoint: None,
    };
    run(&spec, &mut TestPipeline::new(1, vec![0], None), &[]).unwrap();
    // No invalid record: no file (nor its directory) left behind.
    assert!(!dlq.exists() && !dlq.parent().unwrap().exists());
    assert_eq!(lines(&out).len(), 2);
    // A stale file of an earlier run is emptied, not left to look like this run's.
    std::fs::create_dir_all(dlq.parent().unwrap()).unwrap();
    std::fs::write(&dlq, "old\n").unwrap();
    run(&spec, &mut TestPipeline::new(1, vec![0], None), &[]).unwrap();
    assert_eq!(read(&dlq), "");
    // The first invalid record creates it.
    std::fs::remove_file(&dlq).unwrap();
    let mixed = f.write("mixed.jsonl", b"{\"k\":\"a\",\"ts\":1}\nbad\n");
    let spec = JobSpec {
        sources: vec![file_source("events", &mixed, 0)],
        ..spec
    };
    run(&spec, &mut TestPipeline::new(1, vec![0], None), &[]).unwrap();
    assert!(read(&dlq).starts_with("{\"error\":"), "{}", read(&dlq));
}

#[test]
fn missing_input_is_an_error() {
    let _g = shared();
    let f = Files::new();
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &f.path("nope.jsonl"), 0)],
        sinks: vec![file_sink("out", &f.path("out.jsonl"))],
        dead_letters: vec![file_sink("dlq", &f.path("dlq.jsonl"))],
        flows: vec![],
        checkpoint: None,
    };
    let err = run(&spec, &mut TestPipeline::new(1, vec![0], None), &[]).unwrap_err();
    assert!(
        matches!(err, Error::Source { name: "events", .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().starts_with("source `events`: cannot open "));
}

#[test]
fn refuses_to_overwrite_an_input_and_keeps_outputs_on_a_missing_input() {
    let _g = shared();
    let f = Files::new();
    let input = f.write("in.jsonl", INPUT);
    let out = f.write("out.jsonl", b"previous results\n");
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &input, 0)],
        sinks: vec![file_sink("out", &out)],
        dead_letters: vec![file_sink("dlq", &f.path("dlq.jsonl"))],
        flows: vec!["flow"],
        checkpoint: None,
    };
    let mut p = TestPipeline::new(1, vec![0], None);
    // Same file through another path.
    let same = format!("out={}/./in.jsonl", f.root.display());
    let err = run(&spec, &mut p, &["--output", &same]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().starts_with("sink `out` would overwrite "),
        "{err}"
    );
    let dl = format!("events={}", input.display());
    let err = run(&spec, &mut p, &["--dead-letter", &dl]).unwrap_err();
    assert!(matches!(err, Error::Usage(_)));
    assert_eq!(std::fs::read(&input).unwrap(), INPUT);
    // A missing input fails before any sink is opened (truncated).
    let missing = format!("events={}", f.path("missing.jsonl").display());
    let err = run(&spec, &mut p, &["--input", &missing]).unwrap_err();
    assert!(matches!(err, Error::Source { .. }));
    assert_eq!(read(&out), "previous results\n");
}

#[test]
fn sink_write_error_fails_the_job() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let _g = shared();
    let f = Files::new();
    let input = f.write("in.jsonl", INPUT);
    let spec = JobSpec {
        name: "job",
        sources: vec![file_source("events", &input, 0)],
        sinks: vec![file_sink("out", &f.path("out.jsonl"))],
        dead_letters: vec![file_sink("dlq", &f.path("dlq.jsonl"))],
        flows: vec!["flow"],
        checkpoint: None,
    };
    let mut p = TestPipeline::new(1, vec![0], None);
    let err = run(&spec, &mut p, &["--output", "out=/dev/full"]).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        matches!(&err, Error::Sink { source: SinkError::Io(e), .. } if e.raw_os_error() == Some(28)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("sink `out` (file /dev/full): No space left on device"),
        "{err}"
    );
    // The dead-letter output, too.
    let mut p = TestPipeline::new(1, vec![0], None);
    let err = run(&spec, &mut p, &["--dead-letter", "events=/dev/full"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("dead-letter output `dlq` (file /dev/full): ")
    );
}

fn gen_spec(f: &Files, spec: DatagenSpec) -> JobSpec {
    JobSpec {
        name: "gen_job",
        sources: vec![datagen_source(spec)],
        sinks: vec![
            file_sink("out", &f.path("out.jsonl")),
            file_sink("late", &f.path("late.jsonl")),
        ],
        dead_letters: vec![file_sink("dlq", &f.path("dlq.jsonl"))],
        flows: vec!["flow"],
        checkpoint: None,
    }
}

#[test]
fn datagen_is_reproducible_and_bounded() {
    let _g = shared();
    let (f1, f2) = (Files::new(), Files::new());
    let mut outputs = Vec::new();
    for f in [&f1, &f2] {
        let spec = gen_spec(f, datagen(Some(3000), 0, 0.02));
        let mut p = TestPipeline::new(1, vec![0], Some(1));
        let summary = run(&spec, &mut p, &[]).unwrap();
        assert_eq!(summary.stop, Stop::Finished);
        assert_eq!(summary.metrics.records_in(), 3000);
        assert_eq!(summary.metrics.invalid(), 0);
        assert_watermarks(&p.calls, 1);
        outputs.push((read(&f.path("out.jsonl")), read(&f.path("late.jsonl"))));
    }
    assert_eq!(outputs[0], outputs[1]);
    let (out, late) = &outputs[0];
    // Every event is a row or a late event; plus the end row.
    assert_eq!(out.lines().count() + late.lines().count(), 3001);
    // Late events pass through as generated.
    for l in late.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["k"].as_str().unwrap().starts_with('k'));
        assert!(v.get("url").is_some() && v.get("amount").is_some());
    }
}

#[test]
fn datagen_late_fraction_is_roughly_honoured() {
    let _g = shared();
    let f = Files::new();
    let spec = gen_spec(&f, datagen(Some(10_000), 0, 0.05));
    let mut p = TestPipeline::new(1, vec![0], Some(1));
    let summary = run(&spec, &mut p, &[]).unwrap();
    // max_delay (50) < out-of-orderness (100): only the generated late events are late.
    let late = summary.metrics.flows[0].late;
    assert!((350..=650).contains(&late), "{late}");
    assert_eq!(read(&f.path("late.jsonl")).lines().count() as u64, late);
}

#[test]
fn datagen_and_file_sources_together() {
    let _g = shared();
    let f = Files::new();
    let input = f.write("in.jsonl", INPUT);
    let mut spec = gen_spec(&f, datagen(Some(500), 0, 0.0));
    spec.sources.push(file_source("events", &input, 0));
    let mut p = TestPipeline::new(2, vec![0], Some(1));
    let summary = run(&spec, &mut p, &[]).unwrap();
    assert_eq!(summary.metrics.sources[0].records_in, 500);
    assert_eq!(summary.metrics.sources[1].records_in, 8);
    assert_watermarks(&p.calls, 2);
    let ends = lines(&f.path("out.jsonl"))
        .iter()
        .filter(|v| v.get("end").is_some())
        .count();
    assert_eq!(ends, 2);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp)
}

#[test]
fn sigterm_stops_an_unbounded_source_cleanly() {
    let _g = exclusive();
    let f = Files::new();
    // Unbounded, paced: only a signal ends this job.
    let spec = gen_spec(&f, datagen(None, 2000, 0.0));
    let out = f.path("out.jsonl");
    let port = free_port();
    let done = Arc::new(AtomicBool::new(false));
    let metrics = {
        let (out, done) = (out.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            // Rows show up while the job runs (periodic flush), and the metrics endpoint
            // answers; then SIGTERM. Bounded: give up after 5 s (the job then hangs no
            // longer than the test harness allows; the asserts below fail).
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut metrics = None;
            while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                let seen = std::fs::read_to_string(&out)
                    .map(|s| s.lines().count())
                    .unwrap_or(0);
                if seen >= 50 {
                    metrics = http_get(port, "/metrics");
                    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            metrics
        })
    };
    let mut p = TestPipeline::new(1, vec![0], Some(1));
    let addr = format!("127.0.0.1:{port}");
    let result = run(&spec, &mut p, &["--metrics-addr", &addr]);
    done.store(true, Ordering::Relaxed);
    let metrics = metrics.join().unwrap();
    let summary = result.unwrap();
    assert_eq!(summary.stop, Stop::Signal);
    // Flushed: every row counted is in the file, complete.
    let rows = lines(&out);
    assert!(rows.len() >= 50);
    assert_eq!(rows.len() as u64, summary.metrics.sinks[0].rows_out);
    // No firing at shutdown for an unbounded source.
    assert!(p.calls.iter().all(|(_, wm)| *wm != WATERMARK_MAX));
    assert!(rows.iter().all(|r| r.get("end").is_none()));
    let text = summary.to_string();
    assert!(
        text.starts_with("gen_job: stopped by signal after "),
        "{text}"
    );
    // The test pipeline does not count the events of unfired windows: no such line.
    assert!(!text.contains("had not fired"), "{text}");
    let metrics = metrics.expect("metrics endpoint did not answer");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("streamc_source_records_in_total{job=\"gen_job\",source=\"gen\"} "),
        "{metrics}"
    );
    // The endpoint is gone with the job.
    assert!(http_get(port, "/metrics").is_none());
}

#[test]
fn the_summary_names_each_count_and_where_unfired_windows_went() {
    let mut metrics =
        streamc_runtime::metrics::Metrics::new(["clicks"], ["views"], ["out", "late"]);
    metrics.sources[0].records_in = 10;
    metrics.sources[0].invalid = 1;
    metrics.sources[0].ahead_of_clock = 2;
    metrics.flows[0].late = 3;
    metrics.sinks[0].rows_out = 4;
    metrics.sinks[1].rows_out = 2;
    metrics.sinks[1].late_out = 2;
    let mut summary = Summary {
        job: "job",
        stop: Stop::Signal,
        metrics,
        elapsed: Duration::from_secs(2),
        outputs: vec!["sink `out` (stdout)".into(), "sink `late` (file l)".into()],
        dead_letters: vec!["dead-letter output `dlq` (file d)".into()],
        unfired: vec![("views", 5)],
        kafka_sources: true,
        saved_in: None,
    };
    assert_eq!(
        summary.to_string(),
        "job: stopped by signal after 2.00 s: 10 events read (5 events/s)\n\
         \x20 4 result rows: 4 to sink `out` (stdout)\n\
         \x20 3 too-late events: 2 to sink `late` (file l), 1 counted and dropped (their flow has no `late` sink)\n\
         \x20 1 invalid events: 1 of source `clicks` to dead-letter output `dlq` (file d)\n\
         \x20 2 events dated ahead of the wall clock (see the warning above)\n\
         \x20 5 events in windows that had not fired (5 in flow `views`): not in any result yet; \
         a restart reads them again from the committed Kafka offsets"
    );
    // With checkpoints the last one holds them.
    summary.saved_in = Some("0/7 (/var/ck)".into());
    assert!(
        summary.to_string().ends_with(
            "not in any result yet; saved in checkpoint 0/7 (/var/ck): a restart restores them"
        ),
        "{summary}"
    );
}
