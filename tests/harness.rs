//! The harness of the state tests (restarts, crashes, rebalances, layouts): the job they
//! run (its spec and its oracle model side by side), its topics, processes of the built
//! binary that can be killed and restarted with their logs kept, a producer that feeds
//! a topic while jobs run, read-committed consumption, and the comparisons with the
//! oracle (exact for exactly-once, by upsert view for at-least-once).

use crate::generator::Record;
use crate::kafka::{brokers, create_topic, unique};
use crate::oracle::{self, Agg, Expected, Flow, Window, canonical, multiset, multiset_str};
use crate::root;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The seed of a test: `STREAMC_TEST_SEED` if set (to reproduce or explore), else the
/// test's own fixed default.
pub fn seed(default: u64) -> u64 {
    std::env::var("STREAMC_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The heavy state tests of one test binary run one at a time (2 cores, shared).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory for one test: removed when the test passes, kept (and named in
/// the failure) when it fails.
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch { path, keep: false }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep = true;
            eprintln!(
                "state test: logs and checkpoints kept in {}",
                self.path.display()
            );
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A journal of what a test did (kills, restarts, assignments), printed as it goes and
/// included in failure messages with the seed.
#[derive(Default)]
pub struct Journal {
    start: Option<Instant>,
    pub lines: Vec<String>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            start: Some(Instant::now()),
            lines: vec![],
        }
    }

    pub fn log(&mut self, line: impl Into<String>) {
        let t = self.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let line = format!("[{t:7.2}s] {}", line.into());
        eprintln!("{line}");
        self.lines.push(line);
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

// ---------------------------------------------------------------------------------
// The job.

/// A variation of the base job's spec (for the layout tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    Base,
    /// Compatible: a filter on the tumbling flow (`value % 5 <> 0`) and an extra sink.
    FilterAndSink {
        extra_topic: String,
    },
    /// Incompatible: the tumbling window is 2 s instead of 1 s.
    WindowSize,
    /// Incompatible: the tumbling flow has one more aggregate.
    Aggregate,
    /// Incompatible: the tumbling flow keys by `[user, value]`.
    Key,
}

/// The project's S3 server (`scripts/s3 start`), or `STREAMC_S3_ENDPOINT`.
pub fn s3_endpoint() -> String {
    std::env::var("STREAMC_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

/// Checkpoint settings of a job.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    pub interval: String,
    /// The storage URL (`file:///dir`, `s3://bucket/prefix`).
    pub storage: String,
    /// `checkpoint.s3` options, as YAML flow text (`{endpoint: ...}`), if any.
    pub s3: Option<String>,
}

impl Checkpoints {
    /// Checkpoints every `interval` into the local directory `dir`.
    pub fn local(interval: &str, dir: PathBuf) -> Self {
        Checkpoints {
            interval: interval.into(),
            storage: format!("file://{}", dir.display()),
            s3: None,
        }
    }

    /// Checkpoints every `interval` into `s3://streamc/<prefix>` on the project's S3
    /// server (`scripts/s3 start`; `STREAMC_S3_ENDPOINT` names another).
    pub fn s3(interval: &str, prefix: &str) -> Self {
        let endpoint = s3_endpoint();
        Checkpoints {
            interval: interval.into(),
            storage: format!("s3://streamc/{prefix}"),
            s3: Some(format!("{{endpoint: \"{endpoint}\", region: us-east-1}}")),
        }
    }

    /// The environment a job checkpointing here needs (S3 credentials).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        if self.storage.starts_with("s3://") {
            vec![
                ("AWS_ACCESS_KEY_ID", "streamc".into()),
                ("AWS_SECRET_ACCESS_KEY", "streamc-secret".into()),
            ]
        } else {
            vec![]
        }
    }
}

/// The topics of one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub partitions: u32,
    pub tumbling_out: String,
    pub tumbling_late: String,
    pub sessions_out: String,
    pub sessions_late: String,
    pub dead: String,
}

impl Topics {
    /// Creates fresh topics: the input with `partitions`, results with 2 (keyed), the
    /// late and dead-letter topics with 1.
    pub fn create(tag: &str, partitions: u32) -> Topics {
        let t = Topics {
            input: unique(&format!("{tag}-in")),
            partitions,
            tumbling_out: unique(&format!("{tag}-tout")),
            tumbling_late: unique(&format!("{tag}-tlate")),
            sessions_out: unique(&format!("{tag}-sout")),
            sessions_late: unique(&format!("{tag}-slate")),
            dead: unique(&format!("{tag}-dlq")),
        };
        create_topics(&[
            (&t.input, partitions),
            (&t.tumbling_out, 2),
            (&t.sessions_out, 2),
            (&t.tumbling_late, 1),
            (&t.sessions_late, 1),
            (&t.dead, 1),
        ]);
        t
    }
}

/// Creates topics (name, partitions), a few at a time (each is a JVM tool's run).
pub fn create_topics(topics: &[(&str, u32)]) {
    for chunk in topics.chunks(3) {
        std::thread::scope(|s| {
            for &(name, n) in chunk {
                s.spawn(move || create_topic(name, n));
            }
        });
    }
}

/// The job of the state tests: one Kafka source (`partitioned_by: [user]`), a tumbling
/// flow with allowed lateness and a session flow, each with its result and late topics,
/// and a dead-letter topic. Its spec and its oracle model are written side by side.
#[derive(Clone, Debug)]
pub struct StateJob {
    pub name: String,
    pub topics: Topics,
    pub group: String,
    pub checkpoints: Option<Checkpoints>,
    pub static_membership: bool,
    pub variant: Variant,
    /// RocksDB state in this directory (`state: {backend: rocksdb}`); None: memory.
    pub rocksdb: Option<PathBuf>,
}

/// The write-back cache of RocksDB state jobs, in entries per store: small, so that
/// most of the state lives in RocksDB.
pub const ROCKSDB_CACHE_ENTRIES: &str = "64";

pub const MAX_OUT_OF_ORDERNESS: i64 = 500;
pub const TUMBLING: i64 = 1000;
pub const LATENESS: i64 = 2000;
pub const SESSION_GAP: i64 = 300;

impl StateJob {
    pub fn new(name: &str, topics: &Topics, checkpoints: Option<Checkpoints>) -> StateJob {
        StateJob {
            name: name.to_string(),
            topics: topics.clone(),
            group: unique(&format!("{name}-group")),
            checkpoints,
            static_membership: true,
            variant: Variant::Base,
            rocksdb: None,
        }
    }

    pub fn with_variant(&self, variant: Variant) -> StateJob {
        StateJob {
            variant,
            ..self.clone()
        }
    }

    /// The spec text.
    pub fn yaml(&self) -> String {
        let t = &self.topics;
        let membership = if self.static_membership {
            "      static_membership: true\n"
        } else {
            ""
        };
        let checkpoint = match &self.checkpoints {
            Some(c) => format!(
                "checkpoint:\n  interval: {}\n  storage: {}\n{}",
                c.interval,
                c.storage,
                c.s3.as_ref()
                    .map(|s| format!("  s3: {s}\n"))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let state = match &self.rocksdb {
            Some(dir) => format!("state: {{ backend: rocksdb, path: {} }}\n", dir.display()),
            None => String::new(),
        };
        let size = if self.variant == Variant::WindowSize {
            "2s"
        } else {
            "1s"
        };
        let filter = if matches!(self.variant, Variant::FilterAndSink { .. }) {
            "      - filter: \"value % 5 <> 0\"\n"
        } else {
            ""
        };
        let key = if self.variant == Variant::Key {
            "[user, value]"
        } else {
            "[user]"
        };
        let extra_agg = if self.variant == Variant::Aggregate {
            ", spread: count_distinct(value)"
        } else {
            ""
        };
        let (extra_to, extra_sink) = match &self.variant {
            Variant::FilterAndSink { extra_topic } => (
                ", extra_out".to_string(),
                format!("  extra_out: {{ kafka: {{ topic: {extra_topic} }} }}\n"),
            ),
            _ => (String::new(), String::new()),
        };
        let aggs = |f: &Flow| -> String {
            f.aggregates
                .iter()
                .map(|(n, a)| format!("{n}: \"{}\"", a.spec()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let model = self.oracle();
        let (tf, sf) = (&model.flows[0], &model.flows[1]);
        format!(
            r#"version: 1
name: {name}
sources:
  events:
    kafka:
      topic: {input}
      group_id: {group}
      start: earliest
      partitioned_by: [user]
{membership}      properties: {{ session.timeout.ms: "6000", heartbeat.interval.ms: "1000" }}
    format: json
    schema: {{ user: string, value: i64, ts: timestamp }}
    event_time: ts
    watermark: {{ max_out_of_orderness: {ooo}ms }}
flows:
  tumbling:
    from: events
    steps:
{filter}      - key_by: {key}
      - window: {{ tumbling: {size}, allowed_lateness: {lateness}ms }}
      - aggregate: {{ {taggs}{extra_agg} }}
    to: [tumbling_out{extra_to}]
    late: tumbling_late
  sessions:
    from: events
    steps:
      - key_by: [user]
      - window: {{ session: {{ gap: {gap}ms }}, allowed_lateness: {lateness}ms }}
      - aggregate: {{ {saggs} }}
    to: [sessions_out]
    late: sessions_late
sinks:
  tumbling_out: {{ kafka: {{ topic: {tout} }} }}
  tumbling_late: {{ kafka: {{ topic: {tlate} }} }}
  sessions_out: {{ kafka: {{ topic: {sout} }} }}
  sessions_late: {{ kafka: {{ topic: {slate} }} }}
{extra_sink}dead_letter:
  kafka: {{ topic: {dead} }}
{checkpoint}{state}"#,
            name = self.name,
            input = t.input,
            group = self.group,
            ooo = MAX_OUT_OF_ORDERNESS,
            lateness = LATENESS,
            gap = SESSION_GAP,
            taggs = aggs(tf),
            saggs = aggs(sf),
            tout = t.tumbling_out,
            tlate = t.tumbling_late,
            sout = t.sessions_out,
            slate = t.sessions_late,
            dead = t.dead,
        )
    }

    /// Writes the spec into `dir` and builds it.
    pub fn build(&self, dir: &Path, file: &str) -> PathBuf {
        let spec = dir.join(file);
        std::fs::write(&spec, self.yaml()).expect("writing the spec");
        let out = dir.join(format!("bin-{}", file.trim_end_matches(".yaml")));
        std::fs::create_dir_all(&out).expect("bin dir");
        crate::build(&spec, &out)
    }

    /// The oracle's model of the base job (variants that change results are not
    /// modelled; the filter is applied with [`oracle::Job::run_with`]).
    pub fn oracle(&self) -> oracle::Job {
        oracle::Job {
            source: "events".into(),
            max_out_of_orderness: MAX_OUT_OF_ORDERNESS,
            flows: vec![
                Flow {
                    name: "tumbling".into(),
                    window: Window::Tumbling { size: TUMBLING },
                    allowed_lateness: LATENESS,
                    aggregates: vec![
                        ("n".into(), Agg::Count),
                        ("total".into(), Agg::Sum),
                        ("lo".into(), Agg::Min),
                        ("hi".into(), Agg::Max),
                        ("first_v".into(), Agg::First),
                        ("last_v".into(), Agg::Last),
                    ],
                },
                Flow {
                    name: "sessions".into(),
                    window: Window::Session { gap: SESSION_GAP },
                    allowed_lateness: LATENESS,
                    aggregates: vec![
                        ("n".into(), Agg::Count),
                        ("total".into(), Agg::Sum),
                        ("first_ts".into(), Agg::MinTs),
                        ("last_ts".into(), Agg::MaxTs),
                    ],
                },
            ],
        }
    }

    /// The environment every run of the job needs (S3 credentials for `s3://` storage;
    /// RocksDB state: a small write-back cache).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self
            .checkpoints
            .as_ref()
            .map(Checkpoints::env)
            .unwrap_or_default();
        if self.rocksdb.is_some() {
            env.push((
                "STREAMC_ROCKSDB_CACHE_ENTRIES",
                ROCKSDB_CACHE_ENTRIES.to_string(),
            ));
        }
        env
    }

    /// Arguments of instance `id` (`--instance-id` only when not the default 0).
    pub fn args(&self, id: u32, bounded: bool) -> Vec<String> {
        let mut a = vec![];
        if id != 0 {
            a.extend(["--instance-id".to_string(), id.to_string()]);
        }
        if self.checkpoints.is_none() {
            a.extend(["--commit-interval".to_string(), "300".to_string()]);
        }
        if bounded {
            a.push("--bounded".to_string());
        }
        a
    }
}

// ---------------------------------------------------------------------------------
// Processes.

/// A running job binary, its stderr (the log) in a file that outlives it.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env("STREAMC_BROKERS", brokers())
            .env_remove("STREAMC_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
            started: Instant::now(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for an exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (if still running), then the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if self.status().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait"));
        }
        self.status.expect("status")
    }

    /// SIGTERM, then the exit status; SIGKILL after `timeout` (then `Err` with it).
    pub fn term(&mut self, timeout: Duration) -> Result<ExitStatus, ExitStatus> {
        if let Some(s) = self.status() {
            return Ok(s);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        match self.wait_timeout(timeout) {
            Some(s) => Ok(s),
            None => Err(self.kill()),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The partitions this process holds now, from its log ("partitions assigned" and
    /// "partitions revoked" lines, in order).
    pub fn assignment(&self) -> BTreeSet<u32> {
        assignment_of(&self.log_text())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a status is a death by SIGKILL.
pub fn killed(s: ExitStatus) -> bool {
    s.signal() == Some(9)
}

/// The partitions held after the assignment and revocation lines of a job's log.
pub fn assignment_of(log: &str) -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    for line in log.lines() {
        let assigned = line.contains("partitions assigned");
        let revoked = line.contains("partitions revoked");
        if !assigned && !revoked {
            continue;
        }
        let Some(list) = line
            .split("partitions=[")
            .nth(1)
            .and_then(|r| r.split(']').next())
        else {
            continue;
        };
        for p in list.split(',').filter_map(|x| x.trim().parse::<u32>().ok()) {
            if assigned {
                held.insert(p);
            } else {
                held.remove(&p);
            }
        }
    }
    held
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// Producing and consuming.

fn kcat_producer(topic: &str, partition: u32) -> Child {
    Command::new("timeout")
        .args(["300", "kcat", "-P", "-b", &brokers(), "-t", topic])
        .args(["-p", &partition.to_string()])
        .args(["-K", "\t", "-z", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (apt-get install kcat)")
}

/// Produces records into a topic in the background, partition by partition in order, in
/// `rounds` rounds with `pause` between them (so jobs read while it writes).
pub struct Feeder {
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Feeder {
    pub fn start(topic: &str, parts: Vec<Vec<Record>>, rounds: usize, pause: Duration) -> Feeder {
        let topic = topic.to_string();
        let handle = std::thread::spawn(move || -> Result<(), String> {
            let mut kids: Vec<Child> = (0..parts.len())
                .map(|p| kcat_producer(&topic, p as u32))
                .collect();
            let rounds = rounds.max(1);
            for r in 0..rounds {
                for (p, recs) in parts.iter().enumerate() {
                    let (a, b) = (recs.len() * r / rounds, recs.len() * (r + 1) / rounds);
                    let stdin = kids[p].stdin.as_mut().ok_or("kcat stdin")?;
                    let mut buf = String::new();
                    for rec in &recs[a..b] {
                        buf.push_str(&rec.key);
                        buf.push('\t');
                        buf.push_str(&rec.payload);
                        buf.push('\n');
                    }
                    stdin
                        .write_all(buf.as_bytes())
                        .and_then(|()| stdin.flush())
                        .map_err(|e| format!("writing to kcat: {e}"))?;
                }
                if r + 1 < rounds {
                    std::thread::sleep(pause);
                }
            }
            for mut k in kids.drain(..) {
                drop(k.stdin.take());
                let out = k.wait_with_output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "kcat -P failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(())
        });
        Feeder {
            handle: Some(handle),
        }
    }

    pub fn done(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the producer to finish; fails the test if it failed.
    pub fn wait(mut self) {
        if let Some(h) = self.handle.take() {
            h.join().expect("feeder thread").expect("producing");
        }
    }
}

/// Produces every record now.
pub fn produce_all(topic: &str, parts: Vec<Vec<Record>>) {
    Feeder::start(topic, parts, 1, Duration::ZERO).wait();
}

/// One consumed message.
#[derive(Clone, Debug)]
pub struct Msg {
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: String,
}

/// Everything in `topic` from the beginning, read committed (`isolation.level`
/// read_committed) or not.
pub fn consume(topic: &str, read_committed: bool) -> Vec<Msg> {
    let isolation = if read_committed {
        "isolation.level=read_committed"
    } else {
        "isolation.level=read_uncommitted"
    };
    let out = Command::new("timeout")
        .args(["120", "kcat", "-C", "-b", &brokers(), "-t", topic])
        .args(["-X", isolation, "-o", "beginning", "-e", "-J", "-q"])
        .output()
        .expect("kcat");
    assert!(
        out.status.success(),
        "kcat -C {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("kcat -J line");
            Msg {
                partition: v["partition"].as_i64().unwrap_or(-1),
                offset: v["offset"].as_i64().unwrap_or(-1),
                key: v["key"].as_str().map(str::to_string),
                payload: v["payload"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// The committed offsets of a consumer group on a topic (partition -> offset), from the
/// broker's own tool.
pub fn group_offsets(group: &str, topic: &str) -> BTreeMap<u32, u64> {
    let out = Command::new("timeout")
        .arg("120")
        .arg(root().join("scripts/kafka"))
        .args(["groups", "--describe", "--group", group])
        .output()
        .expect("scripts/kafka groups");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 4
            && cols[1] == topic
            && let (Ok(p), Ok(o)) = (cols[2].parse::<u32>(), cols[3].parse::<u64>())
        {
            m.insert(p, o);
        }
    }
    m
}

// ---------------------------------------------------------------------------------
// Comparisons with the oracle.

/// What the job wrote, read back.
pub struct Outputs {
    pub results: BTreeMap<String, Vec<Msg>>,
    pub late: BTreeMap<String, Vec<Msg>>,
    pub dead: Vec<Msg>,
}

impl Outputs {
    pub fn read(t: &Topics, read_committed: bool) -> Outputs {
        let mut results = BTreeMap::new();
        results.insert(
            "tumbling".to_string(),
            consume(&t.tumbling_out, read_committed),
        );
        results.insert(
            "sessions".to_string(),
            consume(&t.sessions_out, read_committed),
        );
        let mut late = BTreeMap::new();
        late.insert(
            "tumbling".to_string(),
            consume(&t.tumbling_late, read_committed),
        );
        late.insert(
            "sessions".to_string(),
            consume(&t.sessions_late, read_committed),
        );
        Outputs {
            results,
            late,
            dead: consume(&t.dead, read_committed),
        }
    }

    pub fn rows(&self, flow: &str) -> Vec<Value> {
        self.results[flow]
            .iter()
            .map(|m| {
                serde_json::from_str(&m.payload)
                    .unwrap_or_else(|e| panic!("result of {flow} not JSON ({e}): {}", m.payload))
            })
            .collect()
    }

    pub fn summary(&self) -> String {
        format!(
            "results: tumbling {}, sessions {}; late: tumbling {}, sessions {}; dead letters {}",
            self.results["tumbling"].len(),
            self.results["sessions"].len(),
            self.late["tumbling"].len(),
            self.late["sessions"].len(),
            self.dead.len()
        )
    }
}

fn dead_letter_id(m: &Msg) -> Result<String, String> {
    let v: Value = serde_json::from_str(&m.payload)
        .map_err(|e| format!("dead letter not JSON ({e}): {}", m.payload))?;
    let err = v["error"].as_str().unwrap_or_default();
    if err.is_empty() {
        return Err(format!("dead letter without an error: {}", m.payload));
    }
    Ok(canonical(&serde_json::json!({
        "source": v["source"], "partition": v["partition"], "offset": v["offset"], "raw": v["raw"]
    })))
}

fn expected_dead(x: &Expected) -> Vec<String> {
    x.dead
        .iter()
        .map(|d| {
            canonical(&serde_json::json!({
                "source": d.source, "partition": d.partition, "offset": d.offset, "raw": d.raw
            }))
        })
        .collect()
}

/// The message key a result must carry: the JSON of the key fields and the bounds.
fn key_check(flow: &str, msgs: &[Msg]) -> Result<(), String> {
    for m in msgs {
        let row: Value = serde_json::from_str(&m.payload).map_err(|e| e.to_string())?;
        let want = serde_json::json!({
            "user": row["user"], "window_start": row["window_start"], "window_end": row["window_end"]
        });
        let got: Option<Value> = m.key.as_deref().and_then(|k| serde_json::from_str(k).ok());
        if got.as_ref() != Some(&want) {
            return Err(format!(
                "{flow}: message key {:?} of {} is not {want}",
                m.key, m.payload
            ));
        }
    }
    Ok(())
}

/// Exactly-once: every output equals the oracle's exactly (results as multisets of rows,
/// late events byte for byte, dead letters by source, partition, offset and raw).
/// `Err` with a readable report of every difference.
pub fn compare_exact(x: &Expected, got: &Outputs) -> Result<(), String> {
    let mut report = String::new();
    for flow in ["tumbling", "sessions"] {
        report += &oracle::report_multisets(
            &format!("{flow} results"),
            &multiset(&x.results[flow]),
            &multiset(&got.rows(flow)),
        );
        if let Err(e) = key_check(flow, &got.results[flow]) {
            report += &format!("{e}\n");
        }
        let late: Vec<String> = got.late[flow].iter().map(|m| m.payload.clone()).collect();
        report += &oracle::report_multisets(
            &format!("{flow} late events"),
            &multiset_str(&x.late[flow]),
            &multiset_str(&late),
        );
    }
    let dead: Result<Vec<String>, String> = got.dead.iter().map(dead_letter_id).collect();
    match dead {
        Ok(d) => {
            report += &oracle::report_multisets(
                "dead letters",
                &multiset_str(&expected_dead(x)),
                &multiset_str(&d),
            )
        }
        Err(e) => report += &format!("{e}\n"),
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// A row without its revision (see [`compare_at_least_once`]).
pub fn without_revision(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("revision");
    }
    v
}

/// The upsert view of rows (`crate::upsert_view`), revisions left out.
pub fn view(rows: &[Value]) -> BTreeMap<String, String> {
    crate::upsert_view(rows, &["user"])
        .into_iter()
        .map(|(k, v)| (k, canonical(&without_revision(&v))))
        .collect()
}

/// At-least-once: the upsert view of each flow's results equals the oracle's final view
/// (key, bounds, aggregates; not the revision numbers, which a replay after a restart
/// counts again from the rebuilt window's first re-read record); every too-late event
/// is in the late topic at least once and nothing else is; every dead letter is there at
/// least once and nothing else is.
pub fn compare_at_least_once(x: &Expected, got: &Outputs) -> Result<(), String> {
    let mut report = String::new();
    for flow in ["tumbling", "sessions"] {
        let want = view(&x.results[flow]);
        let have = view(&got.rows(flow));
        let to_multi = |m: &BTreeMap<String, String>| -> BTreeMap<String, usize> {
            m.iter().map(|(k, v)| (format!("{k} => {v}"), 1)).collect()
        };
        report += &oracle::report_multisets(
            &format!("{flow} upsert view"),
            &to_multi(&want),
            &to_multi(&have),
        );
        if let Err(e) = key_check(flow, &got.results[flow]) {
            report += &format!("{e}\n");
        }
        let want: BTreeSet<&String> = x.late[flow].iter().collect();
        let have: BTreeSet<&String> = got.late[flow].iter().map(|m| &m.payload).collect();
        let missing: Vec<&&String> = want.difference(&have).take(20).collect();
        let extra: Vec<&&String> = have.difference(&want).take(20).collect();
        if !missing.is_empty() || !extra.is_empty() {
            report += &format!(
                "{flow} late events: {} too-late events missing (e.g. {missing:?}); {} events that are not too late (e.g. {extra:?})\n",
                want.difference(&have).count(),
                have.difference(&want).count()
            );
        }
    }
    let want: BTreeSet<String> = expected_dead(x).into_iter().collect();
    match got
        .dead
        .iter()
        .map(dead_letter_id)
        .collect::<Result<BTreeSet<String>, String>>()
    {
        Ok(have) => {
            if want != have {
                report += &format!(
                    "dead letters: missing {:?}; not invalid {:?}\n",
                    want.difference(&have).take(10).collect::<Vec<_>>(),
                    have.difference(&want).take(10).collect::<Vec<_>>()
                );
            }
        }
        Err(e) => report += &format!("{e}\n"),
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Only the late check of [`compare_at_least_once`]: nothing in a late topic that the
/// oracle does not call too late.
pub fn nothing_late_that_is_not(x: &Expected, got: &Outputs) -> Result<(), String> {
    let mut report = String::new();
    for flow in ["tumbling", "sessions"] {
        let want: BTreeSet<&String> = x.late[flow].iter().collect();
        let extra: Vec<&String> = got.late[flow]
            .iter()
            .map(|m| &m.payload)
            .filter(|p| !want.contains(p))
            .collect();
        if !extra.is_empty() {
            report += &format!(
                "{flow}: {} events in the late topic that are not too late, e.g. {:?}\n",
                extra.len(),
                &extra[..extra.len().min(10)]
            );
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}
