//! Kafka sources and sinks end to end against a real broker (`scripts/kafka start`;
//! `STREAMC_BROKERS` or 127.0.0.1:9092), with a hand-written `Pipeline` as in
//! `tests/driver.rs`. Every test creates its own topics (and consumer group) with unique
//! names, runs the driver in process with `run_until`, and is bounded in time.
//!
//! Run with `cargo test -p streamc-runtime --features kafka --test kafka`.

#![cfg(feature = "kafka")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use streamc_runtime::driver::{self, Error, JobSpec, Stop, Summary};
use streamc_runtime::sink::{SinkKind, SinkSpec};
use streamc_runtime::source::{KafkaSourceSpec, KafkaStart, SourceKind, SourceSpec};
use streamc_runtime::window::{Aggregator, Emission, WindowKind, WindowOperator, WindowSpec};
use streamc_runtime::{Context, Pipeline, Record, WATERMARK_MAX, WATERMARK_MIN};

// ---------------------------------------------------------------------------------
// The broker, topics, producing and reading back.

fn brokers() -> String {
    std::env::var("STREAMC_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_string())
}

/// Fails (never skips) when no broker answers. With `STREAMC_LOG` set, the jobs' logs
/// go to stderr.
fn require_broker() -> String {
    if std::env::var_os("STREAMC_LOG").is_some() {
        driver::init_logging().unwrap();
    }
    let b = brokers();
    let first = b.split(',').next().unwrap_or_default().trim().to_string();
    let ok = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        ok,
        "no Kafka broker answers at {b}: run `scripts/kafka start` (or set STREAMC_BROKERS)"
    );
    b
}

fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "streamc-test-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls a future to completion on this thread (the admin client needs no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "admin request timed out");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn create_topic(brokers: &str, partitions: i32) -> String {
    create_topic_with(brokers, partitions, &[])
}

/// A fresh topic with topic-level configuration `config`.
fn create_topic_with(brokers: &str, partitions: i32, config: &[(&str, &str)]) -> String {
    let name = unique("t");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics([&topic], &opts)).expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
    // Wait until the topic's partitions have leaders (metadata shows them).
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    loop {
        let ready = probe
            .fetch_metadata(Some(&name), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics().first().map(|t| {
                    t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            })
            .unwrap_or(false);
        if ready {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "topic {name} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// A message to produce: partition, key, value (None: a tombstone).
type Out<'a> = (i32, Option<&'a str>, Option<&'a [u8]>);
/// The same, owned.
type OwnedOut = (i32, Option<String>, Option<Vec<u8>>);
/// A window result: key, start, end, count, revision.
type Fired = (String, i64, i64, u64, u32);

/// Produces `(partition, key, value)` messages in order and waits for them.
fn produce(brokers: &str, topic: &str, msgs: &[Out<'_>]) {
    let p = producer(brokers);
    for &(partition, key, value) in msgs {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).partition(partition);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        let mut rec = rec;
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces `msgs` from another thread once the job has seen `after` records (so they
/// arrive in later batches than everything before).
fn send_after(
    brokers: &str,
    topic: &str,
    progress: &Arc<Progress>,
    after: usize,
    msgs: Vec<OwnedOut>,
) -> std::thread::JoinHandle<()> {
    let (brokers, topic, progress) = (brokers.to_string(), topic.to_string(), Arc::clone(progress));
    std::thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        while progress.seen.load(Ordering::Relaxed) < after {
            assert!(
                Instant::now() < deadline,
                "the job never saw {after} records"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let refs: Vec<_> = msgs
            .iter()
            .map(|(p, k, v)| (*p, k.as_deref(), v.as_deref()))
            .collect();
        produce(&brokers, &topic, &refs);
    })
}

fn as_msgs(evs: Vec<(i32, Vec<u8>)>) -> Vec<OwnedOut> {
    evs.into_iter().map(|(p, v)| (p, None, Some(v))).collect()
}

/// Events `{"k":..,"ts":..}` as (partition, payload).
fn events(list: &[(i32, &str, i64)]) -> Vec<(i32, Vec<u8>)> {
    list.iter()
        .map(|&(p, k, ts)| (p, json!({"k": k, "ts": ts}).to_string().into_bytes()))
        .collect()
}

fn produce_events(brokers: &str, topic: &str, evs: &[(i32, Vec<u8>)]) {
    let msgs: Vec<_> = evs
        .iter()
        .map(|(p, v)| (*p, None, Some(v.as_slice())))
        .collect();
    produce(brokers, topic, &msgs);
}

/// One message read back.
#[derive(Clone, Debug)]
struct Msg {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.value).unwrap()
    }
    fn key_json(&self) -> Option<Value> {
        self.key
            .as_ref()
            .map(|k| serde_json::from_slice(k).unwrap())
    }
}

/// Reads every message of `topic` (from the beginning of each partition) until `n`
/// have arrived, or until the topic has been quiet for `quiet` after the deadline.
fn read_topic(brokers: &str, topic: &str, n: usize, within: Duration) -> Vec<Msg> {
    // (librdkafka wants a group id even for assigned partitions; nothing is committed.)
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < n && Instant::now() < deadline {
        if let Some(r) = c.poll(Duration::from_millis(100)) {
            let m = r.expect("consume");
            out.push(Msg {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// The committed offsets of `group` for `topic`'s partitions `0..partitions`.
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The pipeline.

/// Count of events per window.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Count(u64);

impl Aggregator for Count {
    type Output = u64;
    fn merge(&mut self, other: Self) {
        self.0 += other.0;
    }
    fn output(&self) -> u64 {
        self.0
    }
}

/// What tests watch while a job runs.
#[derive(Default)]
struct Progress {
    /// Records handed to the pipeline (valid or not).
    seen: AtomicUsize,
    /// Window results emitted: (key, start, end, count, revision).
    windows: Mutex<Vec<Fired>>,
}

/// Parses `{"k": string, "ts": int}` (else dead letter). Pass-through mode emits each
/// event as a row `{"k","ts","p","o"}` with message key `{"k"}`; windowed mode counts
/// events per key in tumbling windows (rows `{"k","window_start","window_end","count",
/// "revision"}`, message key `{"k","window_start","window_end"}`), sending too-late
/// events to the late sink.
struct Job {
    passthrough: bool,
    window: Option<WindowOperator<String, Count>>,
    out: Vec<usize>,
    late_sink: Option<usize>,
    progress: Arc<Progress>,
    /// Sleep per record (a slow job, for consumer lag).
    delay: Option<Duration>,
    buf: Vec<Emission<String, u64>>,
}

impl Job {
    fn passthrough(progress: &Arc<Progress>) -> Self {
        Job {
            passthrough: true,
            window: None,
            out: vec![0],
            late_sink: None,
            progress: Arc::clone(progress),
            delay: None,
            buf: Vec::new(),
        }
    }

    fn windowed(
        progress: &Arc<Progress>,
        size: i64,
        lateness: i64,
        late_sink: Option<usize>,
    ) -> Self {
        Job {
            passthrough: false,
            window: Some(WindowOperator::new(WindowSpec {
                kind: WindowKind::Tumbling { size, offset: 0 },
                allowed_lateness: lateness,
            })),
            out: vec![0],
            late_sink,
            progress: Arc::clone(progress),
            delay: None,
            buf: Vec::new(),
        }
    }

    fn emit_windows(&mut self, ctx: &mut Context) {
        for e in self.buf.drain(..) {
            self.progress.windows.lock().unwrap().push((
                e.key.clone(),
                e.start,
                e.end,
                e.out,
                e.revision,
            ));
            let key = json!({"k": e.key, "window_start": e.start, "window_end": e.end});
            let row = json!({"k": e.key, "window_start": e.start, "window_end": e.end,
                "count": e.out, "revision": e.revision});
            ctx.emit(&self.out, Some(&key), &row);
        }
    }
}

impl Pipeline for Job {
    fn on_record(&mut self, src: usize, rec: &Record<'_>, ctx: &mut Context) -> Option<i64> {
        self.progress.seen.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let v: Value = match serde_json::from_slice(rec.payload) {
            Ok(v) => v,
            Err(e) => {
                ctx.dead_letter(src, rec, &e.to_string());
                return None;
            }
        };
        let (Some(k), Some(ts)) = (
            v.get("k").and_then(Value::as_str),
            v.get("ts").and_then(Value::as_i64),
        ) else {
            ctx.dead_letter(src, rec, "missing `k` or `ts`");
            return None;
        };
        if self.passthrough {
            let row = json!({"k": k, "ts": ts, "p": rec.partition, "o": rec.offset});
            ctx.emit(&self.out, Some(&json!({"k": k})), &row);
        }
        if let Some(w) = &mut self.window {
            let mut buf = std::mem::take(&mut self.buf);
            if !w.process(&k.to_string(), ts, |c| c.0 += 1, &mut buf) {
                ctx.late(0, self.late_sink, rec.payload);
            }
            self.buf = buf;
            self.emit_windows(ctx);
        }
        Some(ts)
    }

    fn on_watermark(&mut self, _src: usize, wm: i64, ctx: &mut Context) {
        if let Some(w) = &mut self.window {
            let mut buf = std::mem::take(&mut self.buf);
            w.advance(wm, &mut buf);
            self.buf = buf;
            self.emit_windows(ctx);
        }
    }

    fn held_from(&self, _src: usize, _partition: u32) -> i64 {
        self.window
            .as_ref()
            .and_then(WindowOperator::oldest_held_start)
            .unwrap_or(i64::MAX)
    }
}

fn kafka_source(topic: &str, group: &str, ooo: i64, idle_ms: Option<i64>) -> SourceSpec {
    SourceSpec {
        name: "events",
        kind: SourceKind::Kafka(KafkaSourceSpec {
            topic: topic.to_string(),
            group_id: group.to_string(),
            start: KafkaStart::Earliest,
            properties: vec![("fetch.wait.max.ms".into(), "100".into())],
            static_membership: false,
        }),
        max_out_of_orderness: ooo,
        idle_timeout: idle_ms,
        dead_letter: 0,
        groups: Default::default(),
    }
}

fn kafka_sink(name: &'static str, topic: &str) -> SinkSpec {
    SinkSpec {
        name,
        kind: SinkKind::Kafka {
            topic: topic.to_string(),
            properties: vec![],
        },
    }
}

/// Runs the job until `done(progress)` holds (then stops it as SIGTERM would), or
/// `limit` passes (then stops it too and fails the test, after the job returned).
fn run_job(
    spec: &JobSpec,
    job: &mut Job,
    args: &[&str],
    limit: Duration,
    done: impl Fn(&Progress) -> bool + Send + 'static,
) -> Result<Summary, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, finished, progress) = (
            Arc::clone(&stop),
            Arc::clone(&finished),
            Arc::clone(&job.progress),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !finished.load(Ordering::Relaxed) {
                if done(&progress) {
                    stop.store(true, Ordering::Relaxed);
                    return true;
                }
                if Instant::now() > deadline {
                    stop.store(true, Ordering::Relaxed);
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        })
    };
    let result = driver::run_until(spec, job, args.iter().copied(), stop);
    finished.store(true, Ordering::Relaxed);
    let in_time = watcher.join().unwrap();
    if result.is_ok() {
        assert!(in_time, "the job did not get there within {limit:?}");
    }
    result
}

fn job_spec(sources: Vec<SourceSpec>, sinks: Vec<SinkSpec>, dead_letter: SinkSpec) -> JobSpec {
    JobSpec {
        name: "kafka_job",
        sources,
        sinks,
        dead_letters: vec![dead_letter],
        flows: vec!["flow"],
        checkpoint: None,
    }
}

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// The tests.

#[test]
fn multi_partition_round_trip() {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 3),
        create_topic(&b, 2),
        create_topic(&b, 1),
    );
    // Out of order within and across partitions.
    let n = 3000;
    let list: Vec<(i32, String, i64)> = (0..n)
        .map(|i| {
            let ts = 1_000_000 + i * 10 - (i * 7919 % 13) * 100;
            ((i % 3) as i32, format!("k{}", i % 10), ts)
        })
        .collect();
    let evs: Vec<_> = list
        .iter()
        .map(|(p, k, ts)| (*p, k.as_str(), *ts))
        .collect();
    produce_events(&b, &input, &events(&evs));

    let spec = job_spec(
        vec![kafka_source(&input, &unique("g"), 100, None)],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::passthrough(&progress);
    let summary = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, move |p| {
        p.seen.load(Ordering::Relaxed) >= n as usize
    })
    .unwrap();
    assert_eq!(summary.stop, Stop::Signal);
    assert_eq!(summary.metrics.sources[0].records_in, n as u64);
    assert_eq!(summary.metrics.sinks[0].rows_out, n as u64);
    assert_eq!(summary.metrics.invalid(), 0);

    // Every event exactly once (nothing failed, no restart), message key = {"k"}.
    let msgs = read_topic(&b, &output, n as usize, Duration::from_secs(30));
    assert_eq!(msgs.len(), n as usize);
    let mut got: Vec<(String, String, i64)> = msgs
        .iter()
        .map(|m| {
            let v = m.json();
            let k = v["k"].as_str().unwrap().to_string();
            assert_eq!(m.key_json(), Some(json!({"k": k})));
            (k, v["p"].to_string(), v["ts"].as_i64().unwrap())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, i64)> = list
        .iter()
        .map(|(p, k, ts)| (k.clone(), p.to_string(), *ts))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Offsets per input partition are 0..n/3, each once.
    let mut offsets: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for m in &msgs {
        let v = m.json();
        offsets
            .entry(v["p"].as_i64().unwrap())
            .or_default()
            .insert(v["o"].as_i64().unwrap());
    }
    for p in 0..3 {
        assert_eq!(offsets[&p], (0..n / 3).collect::<BTreeSet<_>>());
    }
    // The per-partition watermarks were tracked for the three assigned partitions.
    let parts: Vec<u32> = summary.metrics.sources[0]
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    assert_eq!(parts, vec![0, 1, 2]);
    assert!(read_topic(&b, &dlq, 1, Duration::from_secs(1)).is_empty());
}

#[test]
fn an_empty_partition_lets_windows_fire_after_idle_timeout() {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 2),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    // Data only in partition 0; partition 1 stays empty. Windows of 1 s.
    let evs: Vec<(i32, String, i64)> = (0..40).map(|i| (0, "a".to_string(), i * 100)).collect();
    let evs: Vec<_> = evs.iter().map(|(p, k, ts)| (*p, k.as_str(), *ts)).collect();
    produce_events(&b, &input, &events(&evs));
    let spec = job_spec(
        vec![kafka_source(&input, &unique("g"), 0, Some(1000))],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 1000, 0, None);
    let t0 = Instant::now();
    let summary = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, |p| {
        p.windows.lock().unwrap().len() >= 3
    })
    .unwrap();
    // The windows [0,1000) [1000,2000) [2000,3000) fired: partition 1 went idle.
    let windows = progress.windows.lock().unwrap().clone();
    assert_eq!(
        &windows[..3],
        &[
            ("a".to_string(), 0, 1000, 10, 0),
            ("a".to_string(), 1000, 2000, 10, 0),
            ("a".to_string(), 2000, 3000, 10, 0),
        ]
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "idle before its timeout"
    );
    let m = &summary.metrics.sources[0];
    assert!(
        m.watermark >= 3000 && m.watermark < WATERMARK_MAX,
        "{}",
        m.watermark
    );
    let p1 = m.partitions.iter().find(|p| p.partition == 1).unwrap();
    assert!(p1.idle, "{:?}", m.partitions);
    assert_eq!(p1.watermark, WATERMARK_MIN);
    assert_eq!(p1.lag, Some(0));
    let rows = read_topic(&b, &output, 3, Duration::from_secs(30));
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0].key_json(),
        Some(json!({"k": "a", "window_start": 0, "window_end": 1000}))
    );
    assert_eq!(rows[0].json()["count"], 10);
}

#[test]
fn bounded_stops_at_the_end_offsets_at_start_fires_everything_and_commits() {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 3),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    // Partitions 0 and 1 hold 300 events each (keys a and b, 1 s windows); partition
    // 2 stays empty. No idle timeout: only the end of input can fire the last windows.
    let list: Vec<(i32, &str, i64)> = (0..600)
        .map(|i| {
            (
                (i % 2) as i32,
                if i % 2 == 0 { "a" } else { "b" },
                i / 2 * 10,
            )
        })
        .collect();
    produce_events(&b, &input, &events(&list));
    let group = unique("g");
    let spec = job_spec(
        vec![kafka_source(&input, &group, 0, None)],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 1000, 0, None);
    // A slow job (2 ms per record): records appended after it started (once it has
    // seen 50) lie beyond the end offsets it read at start, so it must leave them.
    job.delay = Some(Duration::from_millis(2));
    let later = send_after(
        &b,
        &input,
        &progress,
        50,
        as_msgs(events(&[(0, "a", 100), (1, "b", 3100), (2, "c", 50)])),
    );
    // The job ends by itself (`done` never asks it to stop); its windows, sorted.
    let run_bounded = |job: &mut Job| {
        let args = ["--brokers", b.as_str(), "--bounded"];
        let summary = run_job(&spec, job, &args, LIMIT, |_| false).unwrap();
        assert_eq!(summary.stop, Stop::Finished);
        let mut windows = job.progress.windows.lock().unwrap().clone();
        windows.sort();
        (summary, windows)
    };
    let (summary, windows) = run_bounded(&mut job);
    later.join().unwrap();
    assert_eq!(summary.metrics.sources[0].records_in, 600);
    assert_eq!(summary.metrics.sources[0].watermark, WATERMARK_MAX);
    // Every window fired once, with every event read, none of the later ones.
    let want: Vec<Fired> = ["a", "b"]
        .iter()
        .flat_map(|k| (0..3).map(move |w| (k.to_string(), w * 1000, w * 1000 + 1000, 100, 0)))
        .collect();
    assert_eq!(windows, want);
    assert_eq!(read_topic(&b, &output, 6, Duration::from_secs(30)).len(), 6);
    // The committed offsets are the end offsets at start (the later records are left
    // for the next run), the empty partition has nothing to commit.
    assert_eq!(
        committed(&b, &group, &input, 3),
        vec![Some(300), Some(300), None]
    );

    // A second bounded run of the same group reads just the three later records.
    let progress = Arc::new(Progress::default());
    let (summary, windows) = run_bounded(&mut Job::windowed(&progress, 1000, 0, None));
    assert_eq!(summary.metrics.sources[0].records_in, 3);
    assert_eq!(
        windows,
        vec![
            ("a".to_string(), 0, 1000, 1, 0),
            ("b".to_string(), 3000, 4000, 1, 0),
            ("c".to_string(), 0, 1000, 1, 0),
        ]
    );
    assert_eq!(
        committed(&b, &group, &input, 3),
        vec![Some(301), Some(301), Some(1)]
    );
}

#[test]
fn dead_letters_and_late_events_land_in_their_topics() {
    let b = require_broker();
    let (input, output, late, dlq) = (
        create_topic(&b, 2),
        create_topic(&b, 1),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let good = |k: &str, ts: i64| Some(json!({"k": k, "ts": ts}).to_string().into_bytes());
    let late_event = b"{\"k\":\"x\",  \"ts\": 5}".to_vec();
    // First both partitions pass 10 s (the watermark is their minimum), then the rest.
    let first: Vec<OwnedOut> = vec![
        (0, None, good("a", 10_000)),               // p0 o0
        (0, None, Some(b"not json".to_vec())),      // p0 o1
        (1, None, good("b", 10_000)),               // p1 o0
        (1, Some("k".to_string()), None),           // p1 o1: a tombstone (no value)
        (1, None, Some(b"{\"k\":\"c\"}".to_vec())), // p1 o2: no ts
    ];
    let then = vec![
        (0, None, Some(late_event.clone())), // p0 o2: too late (watermark 10 s)
        (0, None, good("a", 20_000)),        // p0 o3
        (1, None, good("b", 20_000)),        // p1 o3
    ];
    let refs: Vec<_> = first
        .iter()
        .map(|(p, k, v)| (*p, k.as_deref(), v.as_deref()))
        .collect();
    produce(&b, &input, &refs);
    let spec = job_spec(
        vec![kafka_source(&input, &unique("g"), 0, None)],
        vec![kafka_sink("out", &output), kafka_sink("late", &late)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 1000, 0, Some(1));
    let sender = send_after(&b, &input, &progress, 5, then);
    let summary = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, |p| {
        p.seen.load(Ordering::Relaxed) >= 8
    })
    .unwrap();
    sender.join().unwrap();
    assert_eq!(summary.metrics.invalid(), 3);
    assert_eq!(summary.metrics.late(), 1);

    let mut dead: Vec<(i64, i64, Option<String>, Value)> =
        read_topic(&b, &dlq, 3, Duration::from_secs(30))
            .iter()
            .map(|m| {
                assert_eq!(m.key, None);
                let v = m.json();
                assert_eq!(v["source"], "events");
                assert!(!v["error"].as_str().unwrap().is_empty());
                (
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                    // A tombstone has no value: `"raw": null`.
                    v["raw"].as_str().map(str::to_string),
                    v,
                )
            })
            .collect();
    dead.sort_by_key(|d| (d.0, d.1));
    let where_raw: Vec<(i64, i64, Option<&str>)> =
        dead.iter().map(|d| (d.0, d.1, d.2.as_deref())).collect();
    assert_eq!(
        where_raw,
        vec![
            (0, 1, Some("not json")),
            (1, 1, None),
            (1, 2, Some("{\"k\":\"c\"}"))
        ]
    );
    assert_eq!(
        dead[1].3["key"], "k",
        "a tombstone's dead letter keeps its key"
    );
    assert_eq!(dead[2].3["error"], "missing `k` or `ts`");
    // The too-late event, unchanged, without a key.
    let late_msgs = read_topic(&b, &late, 1, Duration::from_secs(30));
    assert_eq!(late_msgs.len(), 1);
    assert_eq!(late_msgs[0].value, late_event);
    assert_eq!(late_msgs[0].key, None);
}

#[test]
fn restart_resumes_from_committed_offsets_and_keeps_held_records() {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 2),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let group = unique("g");
    // Tumbling windows of 10 s (event time), no lateness, no out-of-orderness.
    let spec = job_spec(
        vec![kafka_source(&input, &group, 0, None)],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let args = ["--brokers", b.as_str(), "--commit-interval", "100"];
    // Per partition p, key "k{p}", one event every 500 ms of event time in [from, to).
    let span = |from: i64, to: i64| {
        let evs: Vec<(i32, String, i64)> = (0..2)
            .flat_map(|p| {
                (from..to)
                    .step_by(500)
                    .map(move |ts| (p, format!("k{p}"), ts))
            })
            .collect();
        let evs: Vec<_> = evs.iter().map(|(p, k, ts)| (*p, k.as_str(), *ts)).collect();
        events(&evs)
    };
    let windows = |progress: &Progress| -> BTreeSet<(String, i64, u64)> {
        progress
            .windows
            .lock()
            .unwrap()
            .iter()
            .map(|w| (w.0.clone(), w.1, w.3))
            .collect()
    };

    // Run 1: [0, 20 s), 40 records per partition; once they are read, [20 s, 25 s)
    // (later batches). The watermark passes 20 s: [0, 10 s) and [10 s, 20 s) fire and
    // are purged; [20 s, 30 s) stays open, held by the last 10 records per partition.
    produce_events(&b, &input, &span(0, 20_000));
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 10_000, 0, None);
    let sender = send_after(&b, &input, &progress, 80, as_msgs(span(20_000, 25_000)));
    let summary = run_job(&spec, &mut job, &args, LIMIT, move |p| {
        p.seen.load(Ordering::Relaxed) >= 100 && p.windows.lock().unwrap().len() >= 4
    })
    .unwrap();
    sender.join().unwrap();
    assert_eq!(summary.metrics.sources[0].records_in, 100);
    assert_eq!(
        windows(&progress),
        BTreeSet::from([
            ("k0".into(), 0, 20),
            ("k0".into(), 10_000, 20),
            ("k1".into(), 0, 20),
            ("k1".into(), 10_000, 20),
        ])
    );
    // Committed: per partition the 40 records whose windows are gone, not the 10 held
    // by the open window (which a restart must read again).
    assert_eq!(committed(&b, &group, &input, 2), vec![Some(40), Some(40)]);
    let m = &summary.metrics.sources[0].partitions;
    assert_eq!(
        m.iter().map(|p| p.committed).collect::<Vec<_>>(),
        vec![Some(40), Some(40)]
    );

    // Run 2, a fresh job (no state) in the same group, with [25 s, 40 s) waiting and
    // [40 s, 45 s) sent once those are read.
    produce_events(&b, &input, &span(25_000, 40_000));
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 10_000, 0, None);
    let sender = send_after(&b, &input, &progress, 80, as_msgs(span(40_000, 45_000)));
    let summary = run_job(&spec, &mut job, &args, LIMIT, |p| {
        p.seen.load(Ordering::Relaxed) >= 100
            && p.windows
                .lock()
                .unwrap()
                .iter()
                .filter(|w| w.1 == 30_000)
                .count()
                >= 2
    })
    .unwrap();
    sender.join().unwrap();
    // It resumed at the committed offsets: the 10 held records per partition again,
    // then 30 + 10 new ones; not the 40 before.
    assert_eq!(summary.metrics.sources[0].records_in, 2 * (10 + 30 + 10));
    // [20 s, 30 s) is complete: 10 records read before the restart + 10 after.
    assert_eq!(
        windows(&progress),
        BTreeSet::from([
            ("k0".into(), 20_000, 20),
            ("k0".into(), 30_000, 20),
            ("k1".into(), 20_000, 20),
            ("k1".into(), 30_000, 20),
        ])
    );
    // Now [40 s, 50 s) is held: 10 records per partition.
    assert_eq!(committed(&b, &group, &input, 2), vec![Some(80), Some(80)]);
    // The output topic holds every window once (no window was emitted by both runs).
    let rows = read_topic(&b, &output, 8, Duration::from_secs(30));
    assert_eq!(rows.len(), 8);
}

#[test]
fn a_missing_output_topic_is_named_at_start() {
    let b = require_broker();
    let (input, out, dlq) = (
        create_topic(&b, 1),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let missing = unique("missing");
    produce_events(&b, &input, &events(&[(0, "a", 1)]));
    let group = unique("g");
    // The late topic is missing, the others exist: the error names exactly that one.
    let spec = job_spec(
        vec![kafka_source(&input, &group, 0, None)],
        vec![kafka_sink("out", &out), kafka_sink("late", &missing)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::passthrough(&progress);
    let t0 = Instant::now();
    let err = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, |_| false).unwrap_err();
    // At start, not after librdkafka's 30 s of waiting for the topic's metadata.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("sink `late` (kafka topic {missing}): ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Kafka topic `{missing}` does not exist")),
        "{text}"
    );
    assert!(!text.contains(&out) && !text.contains(&dlq), "{text}");
    assert!(!text.contains("reachable"), "{text}");
    // A missing dead-letter topic is named the same way.
    let spec = job_spec(
        vec![kafka_source(&input, &group, 0, None)],
        vec![kafka_sink("out", &out)],
        kafka_sink("dlq", &missing),
    );
    let mut job = Job::passthrough(&progress);
    let err = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, |_| false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "dead-letter output `dlq` (kafka topic {missing}): "
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("Kafka topic `{missing}` does not exist")),
        "{text}"
    );
    assert_eq!(committed(&b, &group, &input, 1), vec![None]);
}

#[test]
fn a_delivery_error_ends_the_job_with_exit_code_1() {
    let b = require_broker();
    let (input, dlq) = (create_topic(&b, 1), create_topic(&b, 1));
    // A topic that takes no message over 10 bytes: every row's delivery fails.
    let small = create_topic_with(&b, 1, &[("max.message.bytes", "10")]);
    produce_events(&b, &input, &events(&[(0, "a", 1), (0, "b", 2)]));
    let mut out = kafka_sink("out", &small);
    out.kind = SinkKind::Kafka {
        topic: small.clone(),
        properties: vec![("message.timeout.ms".into(), "10000".into())],
    };
    let group = unique("g");
    let spec = job_spec(
        vec![kafka_source(&input, &group, 0, None)],
        vec![out],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::passthrough(&progress);
    let t0 = Instant::now();
    // Never done by itself: only the error ends it.
    let err = run_job(&spec, &mut job, &["--brokers", &b], LIMIT, |_| false).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("sink `out` (kafka topic {small}): ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("delivery to Kafka topic `{small}` failed")),
        "{text}"
    );
    // The records whose results were lost are not committed (not even as the consumer
    // closed): a restart reads them again.
    assert_eq!(committed(&b, &group, &input, 1), vec![None]);
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

/// The value of the series `name{...labels}` in a Prometheus text page.
fn series(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_show_consumer_lag_going_to_zero() {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 2),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let n = 4000;
    let evs: Vec<(i32, String, i64)> = (0..n)
        .map(|i| ((i % 2) as i32, "k".to_string(), i))
        .collect();
    let evs: Vec<_> = evs.iter().map(|(p, k, ts)| (*p, k.as_str(), *ts)).collect();
    produce_events(&b, &input, &events(&evs));
    let spec = job_spec(
        vec![kafka_source(&input, &unique("g"), 0, None)],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let progress = Arc::new(Progress::default());
    let mut job = Job::windowed(&progress, 100, 0, None);
    // A slow job (~2 s for the backlog), so the lag is seen while it is worked off.
    job.delay = Some(Duration::from_micros(500));
    let port = free_port();
    let pages: Arc<Mutex<Vec<String>>> = Arc::default();
    let scraper = {
        let pages = Arc::clone(&pages);
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIMIT;
            while Instant::now() < deadline {
                if let Some(page) = http_get(port, "/metrics") {
                    let zero = (0..2).all(|p| {
                        series(
                            &page,
                            "streamc_kafka_consumer_lag",
                            &format!("job=\"kafka_job\",source=\"events\",partition=\"{p}\""),
                        ) == Some(0.0)
                    });
                    let all_read = progress.seen.load(Ordering::Relaxed) >= n as usize;
                    pages.lock().unwrap().push(page);
                    if zero && all_read {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let addr = format!("127.0.0.1:{port}");
    let done_pages = Arc::clone(&pages);
    let summary = run_job(
        &spec,
        &mut job,
        &[
            "--brokers",
            &b,
            "--metrics-addr",
            &addr,
            "--commit-interval",
            "200",
        ],
        LIMIT,
        move |p| {
            p.seen.load(Ordering::Relaxed) >= n as usize && {
                let pages = done_pages.lock().unwrap();
                pages.last().is_some_and(|page| {
                    (0..2).all(|part| {
                        series(
                            page,
                            "streamc_kafka_consumer_lag",
                            &format!("job=\"kafka_job\",source=\"events\",partition=\"{part}\""),
                        ) == Some(0.0)
                    })
                })
            }
        },
    )
    .unwrap();
    scraper.join().unwrap();
    let pages = pages.lock().unwrap();
    let lags: Vec<f64> = pages
        .iter()
        .filter_map(|page| {
            series(
                page,
                "streamc_kafka_consumer_lag",
                "job=\"kafka_job\",source=\"events\",partition=\"0\"",
            )
        })
        .collect();
    let trace: Vec<(Option<f64>, Option<f64>, Option<f64>)> = pages
        .iter()
        .map(|page| {
            let l = |p: u32| {
                series(
                    page,
                    "streamc_kafka_consumer_lag",
                    &format!("job=\"kafka_job\",source=\"events\",partition=\"{p}\""),
                )
            };
            (
                l(0),
                l(1),
                series(
                    page,
                    "streamc_source_records_in_total",
                    "job=\"kafka_job\",source=\"events\"",
                ),
            )
        })
        .collect();
    assert!(lags.iter().any(|&l| l > 0.0), "never saw a lag: {trace:?}");
    assert_eq!(lags.last(), Some(&0.0), "{lags:?}");
    let last = pages.last().unwrap();
    let label = "job=\"kafka_job\",source=\"events\",partition=\"1\"";
    assert!(
        series(last, "streamc_partition_watermark_milliseconds", label).is_some(),
        "{last}"
    );
    assert!(
        series(last, "streamc_partition_watermark_lag_seconds", label).is_some(),
        "{last}"
    );
    // Offsets committed while running (asynchronously), confirmed by the broker.
    assert!(
        pages
            .iter()
            .any(|page| series(page, "streamc_kafka_committed_offset", label).is_some()),
        "{last}"
    );
    assert!(
        series(
            last,
            "streamc_source_batch_seconds_count",
            "job=\"kafka_job\",source=\"events\""
        )
        .is_some_and(|c| c > 0.0),
        "{last}"
    );
    assert!(
        series(
            last,
            "streamc_source_watermark_lag_seconds",
            "job=\"kafka_job\",source=\"events\""
        )
        .is_some()
    );
    assert_eq!(summary.metrics.sources[0].records_in, n as u64);
    // At the end, what is safe is committed (windows of 100 ms: all but the last few).
    assert!(
        summary.metrics.sources[0]
            .partitions
            .iter()
            .all(|p| p.committed.is_some_and(|c| c > 0)),
        "{:?}",
        summary.metrics.sources[0].partitions
    );
}

/// Runs a job in a thread until `stop` is set; returns its outcome and its progress.
fn spawn_job(
    spec: &JobSpec,
    job: Job,
    args: Vec<String>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Result<Summary, Error>, Job)> {
    let (spec, stop) = (spec.clone(), Arc::clone(stop));
    std::thread::spawn(move || {
        let mut job = job;
        let result = driver::run_until(&spec, &mut job, args.iter().map(String::as_str), stop);
        (result, job)
    })
}

#[test]
fn a_rebalance_between_two_members_loses_nothing() {
    rebalance_loses_nothing(None);
}

#[test]
fn a_cooperative_rebalance_loses_nothing() {
    rebalance_loses_nothing(Some("cooperative-sticky"));
}

/// Member A reads a 4-partition topic alone, member B joins the group while A is busy:
/// A commits and gives up partitions, B takes them; every record reaches the output.
fn rebalance_loses_nothing(strategy: Option<&str>) {
    let b = require_broker();
    let (input, output, dlq) = (
        create_topic(&b, 4),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let group = unique("g");
    let mut source = kafka_source(&input, &group, 0, None);
    if let (Some(strategy), SourceKind::Kafka(k)) = (strategy, &mut source.kind) {
        k.properties
            .push(("partition.assignment.strategy".into(), strategy.into()));
    }
    let spec = job_spec(
        vec![source],
        vec![kafka_sink("out", &output)],
        kafka_sink("dlq", &dlq),
    );
    let batch = |from: i64, to: i64| -> Vec<(i32, Vec<u8>)> {
        (from..to)
            .map(|i| {
                (
                    (i % 4) as i32,
                    json!({"k": format!("k{i}"), "ts": i})
                        .to_string()
                        .into_bytes(),
                )
            })
            .collect()
    };
    produce_events(&b, &input, &batch(0, 2000));
    let args = vec![
        "--brokers".to_string(),
        b.clone(),
        "--commit-interval".to_string(),
        "200".to_string(),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    // Member A alone, slow: still busy when B joins.
    let (pa, pb) = (Arc::new(Progress::default()), Arc::new(Progress::default()));
    let mut a = Job::passthrough(&pa);
    a.delay = Some(Duration::from_micros(300));
    let ha = spawn_job(&spec, a, args.clone(), &stop);
    let deadline = Instant::now() + LIMIT;
    while pa.seen.load(Ordering::Relaxed) < 500 {
        assert!(Instant::now() < deadline, "member A read nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let hb = spawn_job(&spec, Job::passthrough(&pb), args, &stop);
    // Keep producing until B has partitions and reads (A notices the new member at its
    // next heartbeat and revokes while it is busy).
    let mut n = 2000;
    while pb.seen.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "member B never got a partition");
        produce_events(&b, &input, &batch(n, n + 400));
        n += 400;
        std::thread::sleep(Duration::from_millis(200));
    }
    produce_events(&b, &input, &batch(n, n + 2000));
    n += 2000;
    // Every input record reaches the output at least once (duplicates are allowed:
    // at-least-once), whoever read it.
    let want: BTreeSet<(i64, i64)> = (0..n).map(|i| (i % 4, i / 4)).collect();
    let mut got: BTreeSet<(i64, i64)> = BTreeSet::new();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[&output]).unwrap();
    let mut rows = 0u64;
    while got != want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            got.insert((v["p"].as_i64().unwrap(), v["o"].as_i64().unwrap()));
            rows += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ra, _) = ha.join().unwrap();
    let (rb, _) = hb.join().unwrap();
    let (sa, sb) = (ra.unwrap(), rb.unwrap());
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    assert!(
        missing.is_empty(),
        "lost records (partition, offset): {missing:?}..."
    );
    // Both members read: the partitions were shared after the rebalance.
    assert!(
        sb.metrics.sources[0].records_in > 0,
        "member B never got a partition"
    );
    let n = n as u64;
    let total = sa.metrics.sources[0].records_in + sb.metrics.sources[0].records_in;
    assert!(total >= n && rows >= n, "{total} {rows} {n}");
    // A's revoked partitions were committed at the revocation, so B re-read at most
    // what A had not processed: few duplicates.
    assert!(total < n + n / 2, "{total} of {n}");
}
