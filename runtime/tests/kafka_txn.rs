//! Exactly-once Kafka output primitives against a real broker (`scripts/kafka start`;
//! `STREAMC_BROKERS` or 127.0.0.1:9092): the transactional producer (`TxnProducer`), the
//! exactly-once Kafka sinks and the consumer side of the protocol (`ConsumerControl`).
//! Every test creates its own topics, groups and transactional ids and is bounded in
//! time; bounds are generous (they tell "at once" from "after transaction.timeout.ms",
//! they do not measure).
//!
//! Run with `cargo test -p streamc-runtime --features kafka --test kafka_txn`.

#![cfg(feature = "kafka")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamc_runtime::connectors;
use streamc_runtime::kafka::{
    Committed, ConsumerError, KafkaEnv, OffsetAndMetadata, TxnError, TxnOp, TxnProducer, TxnStats,
    TxnTimeouts, producer_config, transactional_id,
};
use streamc_runtime::sink::SinkKind;
use streamc_runtime::source::{
    Batch, CommitMetadata, KafkaSourceSpec, KafkaStart, PartitionChange, PollLimits, Processed,
    Source, SourceKind, SourceSpec,
};

// ---------------------------------------------------------------------------------
// The broker and topics (as in tests/kafka.rs).

fn brokers() -> String {
    std::env::var("STREAMC_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_string())
}

/// Fails (never skips) when no broker answers.
fn require_broker() -> String {
    if std::env::var_os("STREAMC_LOG").is_some() {
        let _ = streamc_runtime::driver::init_logging();
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
    let name = unique("t");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics([&topic], &opts)).expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
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

/// Produces `(partition, value)` messages (not transactionally) and waits for them.
fn produce(brokers: &str, topic: &str, msgs: &[(i32, String)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (partition, value) in msgs {
        let mut rec: BaseRecord<'_, str, str> =
            BaseRecord::to(topic).partition(*partition).payload(value);
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

/// Reads `topic` from the beginning with `isolation` (`read_committed` or
/// `read_uncommitted`) until `stop(values so far)` holds or `within` passes; returns the
/// values and when `stop` first held (None: never).
fn read_until(
    brokers: &str,
    topic: &str,
    isolation: &str,
    within: Duration,
    stop: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Option<Instant>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
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
    while Instant::now() < deadline {
        if stop(&out) {
            return (out, Some(Instant::now()));
        }
        if let Some(r) = c.poll(Duration::from_millis(50)) {
            let m = r.expect("consume");
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    let done = stop(&out).then(Instant::now);
    (out, done)
}

/// Every value of `topic` readable with `isolation`: read from the beginning until
/// every partition has reached its end (for `read_committed`, the last stable offset:
/// the reader cannot get past an open transaction) or `within` passes.
fn read_all(brokers: &str, topic: &str, isolation: &str, within: Duration) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut open: BTreeSet<i32> = BTreeSet::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        open.insert(p.id());
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic} ({isolation}): partitions {open:?} not read to their end within {within:?}"
        );
        match c.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The committed offsets (with metadata) of `group` for `topic`'s partitions
/// `0..partitions`, read by a plain consumer that does not join the group
/// (`read_committed`: offsets of a transaction in progress are waited for).
fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<i64>, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
    (0..partitions)
        .map(|p| {
            let e = got.find_partition(topic, p).unwrap();
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (o, e.metadata().to_string())
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------
// Transactional producers, sources and polling.

/// Producer configuration for `brokers`, as the sinks layer it.
fn cfg(brokers: &str) -> Vec<(String, String)> {
    producer_config(&[], &KafkaEnv::new("txn_test", Some(brokers.to_string())))
}

fn timeouts(transaction: Duration) -> TxnTimeouts {
    TxnTimeouts {
        transaction,
        ..TxnTimeouts::default()
    }
}

fn open(brokers: &str, id: &str) -> TxnProducer {
    TxnProducer::open(cfg(brokers), id, timeouts(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("open {id}: {e}"))
}

fn send_all(p: &TxnProducer, topic: &str, values: &[String]) {
    for v in values {
        p.send(topic, None, v.as_bytes())
            .unwrap_or_else(|e| panic!("send: {e}"));
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// An exactly-once environment (transactional id `id`) on `brokers`.
fn eos_env(brokers: &str, id: &str) -> KafkaEnv {
    let mut env = KafkaEnv::new("txn_test", Some(brokers.to_string()));
    env.transactional_id = Some(id.to_string());
    env
}

fn kafka_source(topic: &str, group: &str, properties: &[(&str, &str)]) -> SourceSpec {
    SourceSpec {
        name: "events",
        kind: SourceKind::Kafka(KafkaSourceSpec {
            topic: topic.to_string(),
            group_id: group.to_string(),
            start: KafkaStart::Earliest,
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            static_membership: false,
        }),
        max_out_of_orderness: 0,
        idle_timeout: None,
        dead_letter: 0,
        groups: Default::default(),
    }
}

/// What a polled source has delivered so far.
#[derive(Default)]
struct Seen {
    assigned: BTreeSet<u32>,
    revocations: usize,
    /// (partition, offset, value), in arrival order.
    records: Vec<(u32, u64, String)>,
}

/// Polls `src` once (the driver's way: records reported processed afterwards).
fn poll_once(src: &mut dyn Source, seen: &mut Seen) {
    let mut batch = Batch::new();
    src.poll(&mut batch, PollLimits::default()).expect("poll");
    for c in batch.partition_changes() {
        match *c {
            PartitionChange::Assigned(p) => {
                seen.assigned.insert(p);
            }
            PartitionChange::Revoked(p) => {
                seen.assigned.remove(&p);
                seen.revocations += 1;
            }
        }
    }
    let mut runs: Vec<Processed> = Vec::new();
    for r in batch.iter() {
        seen.records.push((
            r.partition,
            r.offset,
            String::from_utf8_lossy(r.payload).into_owned(),
        ));
        match runs.last_mut() {
            Some(run) if run.partition == r.partition => run.next = r.offset + 1,
            _ => runs.push(Processed {
                partition: r.partition,
                first: r.offset,
                next: r.offset + 1,
                max_event_time: 0,
                watermark: 0,
                watermark_before: 0,
            }),
        }
    }
    src.processed(&runs, i64::MAX);
}

/// Polls `src` until `done(seen)` holds (at most `within`).
fn poll_until(
    src: &mut dyn Source,
    seen: &mut Seen,
    within: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?} (assigned {:?}, {} records)",
            seen.assigned,
            seen.records.len()
        );
        poll_once(src, seen);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Offsets with one metadata string for every position of `positions`.
fn with_metadata(positions: &[(u32, u64)], metadata: &str) -> Vec<OffsetAndMetadata> {
    positions
        .iter()
        .map(|&(partition, offset)| OffsetAndMetadata {
            partition,
            offset,
            metadata: metadata.to_string(),
        })
        .collect()
}

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// The tests.

#[test]
fn committed_transactions_are_visible_and_aborted_ones_are_not() {
    let b = require_broker();
    let topic = create_topic(&b, 2);
    let p = open(&b, &unique("txn"));
    assert!(!p.in_transaction());

    p.begin().unwrap();
    assert!(p.in_transaction());
    send_all(&p, &topic, &values("c1", 50));
    p.commit_epoch(&[]).unwrap();

    p.begin().unwrap();
    send_all(&p, &topic, &values("a", 50));
    // Delivered (written to the log), then aborted.
    p.wait_delivered(Duration::from_secs(30)).unwrap();
    p.abort().unwrap();
    assert!(!p.in_transaction());
    // An abort with nothing open does nothing (and is not counted).
    p.abort().unwrap();

    p.begin().unwrap();
    send_all(&p, &topic, &values("c2", 50));
    p.commit().unwrap();
    assert_eq!(
        p.stats(),
        TxnStats {
            committed: 2,
            aborted: 1
        }
    );

    let mut want = values("c1", 50);
    want.extend(values("c2", 50));
    let got = read_all(&b, &topic, "read_committed", LIMIT);
    assert_eq!(sorted(got), sorted(want.clone()));
    // The aborted messages are in the log: a reader of uncommitted data sees them.
    let raw = read_all(&b, &topic, "read_uncommitted", LIMIT);
    want.extend(values("a", 50));
    assert_eq!(sorted(raw), sorted(want));
}

#[test]
fn a_write_outside_a_transaction_is_refused_and_begin_twice_is_an_error() {
    let b = require_broker();
    let topic = create_topic(&b, 1);
    let p = open(&b, &unique("txn"));
    let err = p.send(&topic, None, b"x").unwrap_err();
    assert!(
        matches!(&err, TxnError::Fatal { op: TxnOp::Produce, message } if message.contains("outside a transaction")),
        "{err}"
    );
    let err = p.commit().unwrap_err();
    assert!(
        matches!(&err, TxnError::Fatal { op: TxnOp::Commit, message } if message.contains("begin was not called")),
        "{err}"
    );
    // Those were the caller's mistakes, not the producer's: it still works.
    p.begin().unwrap();
    let err = p.begin().unwrap_err();
    assert!(
        matches!(
            &err,
            TxnError::Fatal {
                op: TxnOp::Begin,
                ..
            }
        ),
        "{err}"
    );
    p.send(&topic, None, b"y").unwrap();
    p.commit().unwrap();
    assert_eq!(read_all(&b, &topic, "read_committed", LIMIT), vec!["y"]);
}

#[test]
fn offsets_commit_with_their_metadata_in_the_transaction_and_not_when_it_aborts() {
    let b = require_broker();
    let (input, output) = (create_topic(&b, 2), create_topic(&b, 1));
    produce(
        &b,
        &input,
        &(0..20)
            .map(|i| (i % 2, format!("in-{i}")))
            .collect::<Vec<_>>(),
    );
    let group = unique("g");
    let id = unique("txn");
    let env = eos_env(&b, &id);
    let mut src = connectors::open_source_with(&kafka_source(&input, &group, &[]), &env).unwrap();
    let mut seen = Seen::default();
    poll_until(&mut *src, &mut seen, LIMIT, "read the input", |s| {
        s.records.len() >= 20
    });
    // With no Kafka sink, the driver's transaction is opened with the defaults.
    let p = env.transaction().unwrap();
    assert_eq!(p.transactional_id(), id);
    assert!(Arc::ptr_eq(&p, &env.transaction().unwrap()));

    // Epoch 1: outputs and offsets with the checkpoint reference, committed.
    let ctl = src.kafka().expect("a Kafka source has a consumer");
    let positions = ctl.positions();
    assert_eq!(positions, vec![(0, 10), (1, 10)]);
    p.begin().unwrap();
    send_all(&p, &output, &values("e1", 5));
    let offsets = ctl
        .group_offsets(with_metadata(&positions, "streamc1;ck=0/1"))
        .unwrap();
    assert_eq!(offsets.group.group_id(), group);
    assert!(offsets.group.generation() >= 1, "{:?}", offsets.group);
    p.commit_epoch(&[offsets]).unwrap();
    // Read back by the source itself and by another consumer of the group.
    let want = vec![
        Committed {
            partition: 0,
            offset: Some(10),
            metadata: "streamc1;ck=0/1".into(),
        },
        Committed {
            partition: 1,
            offset: Some(10),
            metadata: "streamc1;ck=0/1".into(),
        },
    ];
    let ctl = src.kafka().unwrap();
    assert_eq!(ctl.committed(&[0, 1], LIMIT).unwrap(), want);
    assert_eq!(
        committed(&b, &group, &input, 2),
        vec![
            (Some(10), "streamc1;ck=0/1".to_string()),
            (Some(10), "streamc1;ck=0/1".to_string())
        ]
    );

    // Epoch 2: more input, outputs and offsets sent into the transaction, then aborted.
    produce(
        &b,
        &input,
        &(20..30)
            .map(|i| (i % 2, format!("in-{i}")))
            .collect::<Vec<_>>(),
    );
    poll_until(&mut *src, &mut seen, LIMIT, "read more input", |s| {
        s.records.len() >= 30
    });
    let ctl = src.kafka().unwrap();
    let positions = ctl.positions();
    assert_eq!(positions, vec![(0, 15), (1, 15)]);
    p.begin().unwrap();
    send_all(&p, &output, &values("e2", 5));
    let offsets = ctl
        .group_offsets(with_metadata(&positions, "streamc1;ck=0/2"))
        .unwrap();
    p.send_offsets(&[offsets]).unwrap();
    p.abort().unwrap();
    assert_eq!(ctl.committed(&[0, 1], LIMIT).unwrap(), want);
    assert_eq!(
        read_all(&b, &output, "read_committed", LIMIT),
        values("e1", 5)
    );

    // Epoch 3 commits again (the abort left the producer usable).
    p.begin().unwrap();
    send_all(&p, &output, &values("e3", 5));
    let offsets = ctl
        .group_offsets(with_metadata(&positions, "streamc1;ck=0/3"))
        .unwrap();
    p.commit_epoch(&[offsets]).unwrap();
    assert_eq!(
        ctl.committed(&[0, 1], LIMIT)
            .unwrap()
            .iter()
            .map(|c| (c.offset, c.metadata.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some(15), "streamc1;ck=0/3"), (Some(15), "streamc1;ck=0/3")]
    );
    assert_eq!(
        p.stats(),
        TxnStats {
            committed: 2,
            aborted: 1
        }
    );
    let mut want = values("e1", 5);
    want.extend(values("e3", 5));
    assert_eq!(read_all(&b, &output, "read_committed", LIMIT), want);
}

#[test]
fn a_second_producer_with_the_same_id_fences_the_first_and_aborts_its_transaction() {
    let b = require_broker();
    let topic = create_topic(&b, 1);
    let id = unique("txn");
    // A transaction timeout far beyond the bound asserted below.
    let long = timeouts(Duration::from_secs(300));
    let first = TxnProducer::open(cfg(&b), &id, long).unwrap();
    first.begin().unwrap();
    send_all(&first, &topic, &values("zombie", 20));
    first.wait_delivered(Duration::from_secs(30)).unwrap();

    let t0 = Instant::now();
    let second = TxnProducer::open(cfg(&b), &id, long).unwrap();
    second.begin().unwrap();
    send_all(&second, &topic, &["marker".to_string()]);
    second.commit_epoch(&[]).unwrap();
    // The marker lies after the first producer's open transaction: a read_committed
    // reader gets it only once that transaction is aborted.
    let (got, at) = read_until(&b, &topic, "read_committed", LIMIT, |v| {
        v.iter().any(|m| m == "marker")
    });
    let at = at.unwrap_or_else(|| panic!("the marker never became readable: {got:?}"));
    assert!(
        at - t0 < Duration::from_secs(60),
        "read past the fenced transaction only after {:?} (transaction timeout 300 s)",
        at - t0
    );
    assert_eq!(got, vec!["marker"]);

    // The first producer's next call says it was fenced, and so do the ones after.
    let err = first.commit_epoch(&[]).unwrap_err();
    match &err {
        TxnError::Fenced {
            transactional_id, ..
        } => assert_eq!(transactional_id, &id),
        other => panic!("expected fenced, got {other:?}"),
    }
    assert!(err.to_string().contains("--instance-id"), "{err}");
    assert!(matches!(first.begin(), Err(TxnError::Fenced { .. })));
    assert!(matches!(first.abort(), Err(TxnError::Fenced { .. })));
    assert!(matches!(
        first.send(&topic, None, b"late"),
        Err(TxnError::Fenced { .. })
    ));
    // The second one is unaffected.
    second.begin().unwrap();
    send_all(&second, &topic, &["after".to_string()]);
    second.commit().unwrap();
    assert_eq!(
        read_all(&b, &topic, "read_committed", LIMIT),
        vec!["marker", "after"]
    );
}

/// The environment variable that makes [`child_producer_killed_mid_transaction`] run
/// (set by the parent test): `brokers|input|group|output|transactional id`.
const CHILD_ENV: &str = "STREAMC_TXN_TEST_CHILD";

#[test]
fn a_producer_killed_mid_transaction_is_fenced_and_aborted_by_the_next_init() {
    let b = require_broker();
    let (input, output) = (create_topic(&b, 1), create_topic(&b, 1));
    produce(
        &b,
        &input,
        &(0..10).map(|i| (0, format!("in-{i}"))).collect::<Vec<_>>(),
    );
    let (group, id) = (unique("g"), unique("txn"));
    // The child: this test binary, running only the child "test" below.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_producer_killed_mid_transaction",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{b}|{input}|{group}|{output}|{id}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // (libtest prints the test's name without a newline before running it.)
            if let Some(at) = line.find("CHILD ") {
                let _ = tx.send(line[at..].to_string());
            }
        }
    });
    let ready = rx.recv_timeout(LIMIT);
    if ready.is_err() {
        let _ = child.kill();
    }
    let ready = ready.expect("the child never reported its open transaction");
    assert_eq!(ready, "CHILD READY", "{ready}");
    // Mid-transaction: outputs delivered, offsets sent, no commit. SIGKILL.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let t0 = Instant::now();

    // The next run of the instance: init_transactions fences and aborts.
    let next = open(&b, &id);
    next.begin().unwrap();
    send_all(&next, &output, &["marker".to_string()]);
    next.commit_epoch(&[]).unwrap();
    let (got, at) = read_until(&b, &output, "read_committed", LIMIT, |v| {
        v.iter().any(|m| m == "marker")
    });
    let at = at.unwrap_or_else(|| panic!("the marker never became readable: {got:?}"));
    assert!(
        at - t0 < Duration::from_secs(60),
        "read past the killed producer's transaction only after {:?} (transaction timeout 300 s)",
        at - t0
    );
    assert_eq!(got, vec!["marker"]);
    // Its outputs were written (a reader of uncommitted data sees them), and aborted.
    let raw = read_all(&b, &output, "read_uncommitted", LIMIT);
    assert_eq!(raw.len(), 21, "{raw:?}");
    // Its offsets were aborted with it: the group has none.
    assert_eq!(
        committed(&b, &group, &input, 1),
        vec![(None, String::new())]
    );
}

/// The child process of
/// [`a_producer_killed_mid_transaction_is_fenced_and_aborted_by_the_next_init`]: reads the
/// input, writes 20 outputs and sends the consumed offsets into a transaction that it
/// leaves open, says so on stdout, and waits to be killed. Run only by that test (it
/// sets [`CHILD_ENV`]).
#[test]
#[ignore = "the child process of a_producer_killed_mid_transaction_..., which runs it"]
fn child_producer_killed_mid_transaction() {
    let spec = std::env::var(CHILD_ENV).expect("run by its parent test, which sets the variable");
    let parts: Vec<&str> = spec.split('|').collect();
    let [b, input, group, output, id] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let _ = require_broker();
    let mut env = eos_env(b, id);
    env.txn_timeouts = timeouts(Duration::from_secs(300));
    let mut src = connectors::open_source_with(&kafka_source(input, group, &[]), &env).unwrap();
    let mut seen = Seen::default();
    poll_until(&mut *src, &mut seen, LIMIT, "child: read the input", |s| {
        s.records.len() >= 10
    });
    let p = env.transaction().unwrap();
    p.begin().unwrap();
    send_all(&p, output, &values("killed", 20));
    p.wait_delivered(Duration::from_secs(30)).unwrap();
    let ctl = src.kafka().unwrap();
    let offsets = ctl
        .group_offsets(with_metadata(&ctl.positions(), "streamc1;ck=0/9"))
        .unwrap();
    p.send_offsets(&[offsets]).unwrap();
    println!("CHILD READY");
    std::thread::sleep(Duration::from_secs(300));
    panic!("the child was not killed");
}

#[test]
fn offsets_of_an_older_group_generation_are_refused_after_a_rebalance() {
    let b = require_broker();
    let (input, output) = (create_topic(&b, 2), create_topic(&b, 1));
    produce(
        &b,
        &input,
        &(0..20)
            .map(|i| (i % 2, format!("in-{i}")))
            .collect::<Vec<_>>(),
    );
    let group = unique("g");
    let env = eos_env(&b, &unique("txn"));
    let props = [("session.timeout.ms", "10000")];
    let mut a = connectors::open_source_with(&kafka_source(&input, &group, &props), &env).unwrap();
    let mut seen_a = Seen::default();
    poll_until(&mut *a, &mut seen_a, LIMIT, "member A reads", |s| {
        s.records.len() >= 20 && s.assigned.len() == 2
    });
    let old = a.kafka().unwrap().group_metadata().unwrap();
    let positions = a.kafka().unwrap().positions();
    assert_eq!(positions, vec![(0, 10), (1, 10)]);

    let p = env.transaction().unwrap();
    p.begin().unwrap();
    send_all(&p, &output, &values("stale", 5));

    // Member B joins: a rebalance moves a partition to B and starts a new generation.
    let other = KafkaEnv::new("txn_test", Some(b.clone()));
    let mut bm =
        connectors::open_source_with(&kafka_source(&input, &group, &props), &other).unwrap();
    let mut seen_b = Seen::default();
    let deadline = Instant::now() + LIMIT;
    loop {
        poll_once(&mut *a, &mut seen_a);
        poll_once(&mut *bm, &mut seen_b);
        let gen_a = a.kafka().unwrap().group_metadata().map(|g| g.generation());
        if !seen_b.assigned.is_empty()
            && seen_a.assigned.len() == 1
            && gen_a.is_ok_and(|g| g > old.generation())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the rebalance did not complete");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen_a.revocations > 0);

    // The zombie's offsets (older generation) are refused: abortable, nothing committed.
    let zombie = a
        .kafka()
        .unwrap()
        .group_offsets(with_metadata(&positions, "streamc1;ck=0/1"))
        .unwrap();
    let zombie = streamc_runtime::kafka::GroupOffsets {
        group: old.clone(),
        ..zombie
    };
    let err = p.commit_epoch(&[zombie]).unwrap_err();
    match &err {
        TxnError::Abortable { op, message } => {
            assert_eq!(*op, TxnOp::SendOffsets, "{err}");
            assert!(
                message.to_lowercase().contains("generation")
                    || message.to_lowercase().contains("member"),
                "{err}"
            );
        }
        other => panic!("expected abortable, got {other:?}"),
    }
    // Until aborted, the transaction refuses everything else.
    assert_eq!(p.commit().unwrap_err(), err);
    p.abort().unwrap();
    assert_eq!(
        committed(&b, &group, &input, 2),
        vec![(None, String::new()), (None, String::new())]
    );

    // With the current generation, A commits the partition it kept.
    let kept: Vec<(u32, u64)> = positions
        .iter()
        .copied()
        .filter(|(p, _)| seen_a.assigned.contains(p))
        .collect();
    assert_eq!(kept.len(), 1);
    p.begin().unwrap();
    send_all(&p, &output, &values("fresh", 5));
    let fresh = a
        .kafka()
        .unwrap()
        .group_offsets(with_metadata(&kept, "streamc1;ck=0/2"))
        .unwrap();
    assert!(fresh.group.generation() > old.generation());
    p.commit_epoch(&[fresh]).unwrap();
    let got = committed(&b, &group, &input, 2);
    let kept_p = kept[0].0 as usize;
    assert_eq!(got[kept_p], (Some(10), "streamc1;ck=0/2".to_string()));
    assert_eq!(got[1 - kept_p], (None, String::new()));
    assert_eq!(
        read_all(&b, &output, "read_committed", LIMIT),
        values("fresh", 5)
    );
}

#[test]
fn an_unreachable_broker_is_a_bounded_error_not_a_hang() {
    let _ = require_broker();
    let dead = format!("127.0.0.1:{}", free_port());
    let short = TxnTimeouts {
        call: Duration::from_secs(1),
        operation: Duration::from_secs(4),
        grace: Duration::from_secs(2),
        transaction: Duration::from_secs(60),
    };
    let t0 = Instant::now();
    let err = TxnProducer::open(cfg(&dead), &unique("txn"), short).unwrap_err();
    let took = t0.elapsed();
    match &err {
        TxnError::Fatal { op, message } => {
            assert_eq!(*op, TxnOp::Init, "{err}");
            assert!(message.contains("reachable"), "{err}");
            assert!(message.contains(&dead), "{err}");
        }
        other => panic!("expected fatal, got {other:?}"),
    }
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "{took:?}"
    );

    // The consumer side is bounded too.
    let env = eos_env(&dead, &unique("txn"));
    let mut src =
        connectors::open_source_with(&kafka_source("nowhere", &unique("g"), &[]), &env).unwrap();
    let ctl = src.kafka().unwrap();
    assert!(matches!(
        ctl.group_metadata(),
        Err(ConsumerError::NotInGroup { .. })
    ));
    let t0 = Instant::now();
    let err = ctl.committed(&[0], Duration::from_secs(2)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(
        matches!(&err, ConsumerError::TimedOut { .. }),
        "{err:?}: {err}"
    );
    assert!(err.to_string().contains("reachable"), "{err}");
    let err = ctl.seek(&[(0, 5)], Duration::from_secs(2)).unwrap_err();
    assert!(
        matches!(err, ConsumerError::NotAssigned { partition: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn every_kafka_sink_of_an_exactly_once_job_writes_in_the_one_transaction() {
    let b = require_broker();
    let (results, late, dlq) = (
        create_topic(&b, 2),
        create_topic(&b, 1),
        create_topic(&b, 1),
    );
    let id = unique("txn");
    // Brokers from the sinks' properties (no override), to test the cluster check.
    let mut env = KafkaEnv::new("txn_test", None);
    env.transactional_id = Some(id.clone());
    let kafka = |topic: &str, props: &[(&str, &str)]| SinkKind::Kafka {
        topic: topic.to_string(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let props = [("bootstrap.servers", b.as_str()), ("linger.ms", "5")];
    let mut out = connectors::open_sink_with(&kafka(&results, &props), &env).unwrap();
    // The same properties in another order: the same producer.
    let swapped = [("linger.ms", "5"), ("bootstrap.servers", b.as_str())];
    let mut late_sink = connectors::open_sink_with(&kafka(&late, &swapped), &env).unwrap();
    let mut dlq_sink = connectors::open_sink_with(&kafka(&dlq, &props), &env).unwrap();

    // A sink that would need another producer cannot be in the transaction.
    let other = [("bootstrap.servers", b.as_str()), ("linger.ms", "50")];
    let err = connectors::open_sink_with(&kafka(&dlq, &other), &env)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("`linger.ms`: `5` there, `50` here"), "{text}");
    assert!(text.contains("one transactional producer"), "{text}");
    assert!(matches!(
        TxnError::of_sink_error(&err),
        Some(TxnError::Config { .. })
    ));
    let elsewhere = [("bootstrap.servers", "127.0.0.1:1"), ("linger.ms", "5")];
    let text = connectors::open_sink_with(&kafka(&dlq, &elsewhere), &env)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("`bootstrap.servers`"), "{text}");
    // So can a source on another cluster (its offsets go into the transaction).
    let src = kafka_source(
        &results,
        &unique("g"),
        &[("bootstrap.servers", "127.0.0.1:1")],
    );
    let text = connectors::open_source_with(&src, &env)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("one cluster"), "{text}");
    // And a source reading uncommitted data.
    let src = kafka_source(
        &results,
        &unique("g"),
        &[
            ("bootstrap.servers", b.as_str()),
            ("isolation.level", "read_uncommitted"),
        ],
    );
    let text = connectors::open_source_with(&src, &env)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("read_committed"), "{text}");

    let p = env.transaction().unwrap();
    assert_eq!(p.transactional_id(), id);
    // Before begin, writes are refused (the driver begins the first epoch).
    let err = out.write(Some(b"k"), b"early").unwrap_err();
    assert!(
        matches!(
            TxnError::of_sink_error(&err),
            Some(TxnError::Fatal {
                op: TxnOp::Produce,
                ..
            })
        ),
        "{err}"
    );

    // Epoch 1 aborted, epoch 2 committed.
    for (epoch, commit) in [(1, false), (2, true)] {
        p.begin().unwrap();
        for i in 0..10 {
            out.write(
                Some(format!("k{i}").as_bytes()),
                format!("row-{epoch}-{i}").as_bytes(),
            )
            .unwrap();
        }
        late_sink
            .write(None, format!("late-{epoch}").as_bytes())
            .unwrap();
        dlq_sink
            .write(None, format!("bad-{epoch}").as_bytes())
            .unwrap();
        out.flush().unwrap();
        out.wait_delivered().unwrap();
        if commit {
            p.commit_epoch(&[]).unwrap();
        } else {
            p.abort().unwrap();
        }
    }
    for s in [&mut out, &mut late_sink, &mut dlq_sink] {
        s.close().unwrap();
    }
    assert_eq!(
        p.stats(),
        TxnStats {
            committed: 1,
            aborted: 1
        }
    );
    assert_eq!(
        sorted(read_all(&b, &results, "read_committed", LIMIT)),
        sorted((0..10).map(|i| format!("row-2-{i}")).collect())
    );
    assert_eq!(read_all(&b, &late, "read_committed", LIMIT), vec!["late-2"]);
    assert_eq!(read_all(&b, &dlq, "read_committed", LIMIT), vec!["bad-2"]);
    assert_eq!(read_all(&b, &dlq, "read_uncommitted", LIMIT).len(), 2);
}

#[test]
fn a_failed_delivery_makes_the_transaction_abortable() {
    let b = require_broker();
    let topic = create_topic(&b, 1);
    let missing = unique("missing");
    let mut c = cfg(&b);
    // librdkafka gives up on an unknown topic after this (the broker creates none).
    c.push(("topic.metadata.propagation.max.ms".into(), "1000".into()));
    c.push(("message.timeout.ms".into(), "5000".into()));
    let p = TxnProducer::open(c, &unique("txn"), timeouts(Duration::from_secs(60))).unwrap();
    p.begin().unwrap();
    send_all(&p, &topic, &values("ok", 3));
    p.send(&missing, None, b"lost").unwrap();
    let err = p.commit_epoch(&[]).unwrap_err();
    assert!(matches!(err, TxnError::Abortable { .. }), "{err:?}");
    assert_eq!(p.begin().unwrap_err(), err);
    p.abort().unwrap();
    // Recovered: the next epoch commits.
    p.begin().unwrap();
    send_all(&p, &topic, &values("next", 3));
    p.commit().unwrap();
    assert_eq!(
        read_all(&b, &topic, "read_committed", LIMIT),
        values("next", 3)
    );
}

#[test]
fn the_transaction_timeout_bounds_message_timeouts() {
    let b = require_broker();
    let mut c = cfg(&b);
    c.push(("message.timeout.ms".into(), "120000".into()));
    let err = TxnProducer::open(c, &unique("txn"), timeouts(Duration::from_secs(60))).unwrap_err();
    assert!(
        matches!(&err, TxnError::Config { message } if message.contains("`message.timeout.ms` (120000)") && message.contains("60000 ms")),
        "{err}"
    );
    let mut c = cfg(&b);
    c.push(("transactional.id".into(), "mine".into()));
    let err = TxnProducer::open(c, "streamc-j-0", TxnTimeouts::default()).unwrap_err();
    assert!(
        matches!(&err, TxnError::Config { message } if message.contains("--instance-id")),
        "{err}"
    );
    // A transaction timeout beyond the brokers' maximum is refused by them: Config.
    let err = TxnProducer::open(cfg(&b), &unique("txn"), timeouts(Duration::from_secs(3600)))
        .unwrap_err();
    assert!(matches!(err, TxnError::Config { .. }), "{err:?}");
    assert_eq!(transactional_id("j", "1"), "streamc-j-1");
}

#[test]
fn at_least_once_commits_carry_metadata_and_seek_rolls_back() {
    let b = require_broker();
    let input = create_topic(&b, 2);
    produce(
        &b,
        &input,
        &(0..20)
            .map(|i| (i % 2, format!("in-{i}")))
            .collect::<Vec<_>>(),
    );
    let group = unique("g");
    let env = KafkaEnv::new("txn_test", Some(b.clone()));
    let mut src = connectors::open_source_with(&kafka_source(&input, &group, &[]), &env).unwrap();
    let mut seen = Seen::default();
    poll_until(&mut *src, &mut seen, LIMIT, "read the input", |s| {
        s.records.len() >= 20
    });
    // An at-least-once commit with per-partition metadata given for partition 0; for
    // partition 1 the source commits its own: the watermark the driver reported with
    // the records (0 here) and the position.
    let metadata = CommitMetadata::from([(0, "streamc1;wm=1234;pos=10".to_string())]);
    src.commit(i64::MAX, true, &metadata).unwrap();
    let ctl = src.kafka().unwrap();
    assert_eq!(
        ctl.committed(&[0, 1], LIMIT).unwrap(),
        vec![
            Committed {
                partition: 0,
                offset: Some(10),
                metadata: "streamc1;wm=1234;pos=10".into()
            },
            Committed {
                partition: 1,
                offset: Some(10),
                metadata: "streamc1;wm=0;pos=10".into()
            },
        ]
    );

    // A rollback: partition 0 back to offset 3; partition 1 stays where it is.
    ctl.seek(&[(0, 3)], LIMIT).unwrap();
    assert_eq!(ctl.positions(), vec![(1, 10)]);
    let before = seen.records.len();
    poll_until(&mut *src, &mut seen, LIMIT, "re-read after the seek", |s| {
        s.records.len() >= before + 7
    });
    let reread: BTreeMap<u64, String> = seen.records[before..]
        .iter()
        .map(|(p, o, v)| {
            assert_eq!(*p, 0, "only partition 0 is read again");
            (*o, v.clone())
        })
        .collect();
    assert_eq!(
        reread.keys().copied().collect::<Vec<_>>(),
        (3..10).collect::<Vec<_>>()
    );
    assert_eq!(reread[&3], "in-6");
    let ctl = src.kafka().unwrap();
    assert_eq!(ctl.positions(), vec![(0, 10), (1, 10)]);
    let err = ctl.seek(&[(5, 0)], LIMIT).unwrap_err();
    assert!(
        matches!(err, ConsumerError::NotAssigned { partition: 5, .. }),
        "{err:?}"
    );
}
