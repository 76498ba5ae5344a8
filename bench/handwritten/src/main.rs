//! J1 by hand: the least work that gives streamc's answer (bench/README.md).
//!
//! Key by user_id, tumbling 1 minute, allowed lateness 10 s, count / sum(amount) /
//! avg(latency_ms); watermark = min over partitions of (max event time - 5 s), advanced
//! after every event; a window fires when W >= end, fires again at once on an update
//! while W < end + 10 s, and is dropped when W >= end + 10 s; an event whose window has
//! end + 10 s <= W is too late (counted). Results are streamc's rows with the same
//! message key.
//!
//! One thread, one `BaseConsumer` assigned every partition from the beginning (no
//! consumer group, no commits), bounded at the end offsets it sees at start (then the
//! watermark goes to +inf and everything fires), one `BaseProducer`; streamc's consumer
//! and producer settings (runtime/src/kafka/mod.rs `consumer_config` and
//! `producer_config`: `fetch.queue.backoff.ms=20`, `queued.min.messages=10000`,
//! `queued.max.messages.kbytes=8192`, partition-EOF events, no auto commit or offset
//! store; idempotence, `acks=all`, `linger.ms=5`, no compression). The JSON is not
//! parsed: the four fields are found with memmem.
//!
//! `--unbounded` (bench/run's latency mode): no end offsets; it consumes until SIGTERM or
//! SIGINT, then flushes its producer (the rows already emitted reach the topic) and exits
//! without firing the open windows.
//!
//! Usage: handwritten-j1 [--brokers B] [--input TOPIC] [--output TOPIC] [--unbounded]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memchr::memmem::Finder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const SIZE: i64 = 60_000;
const LATENESS: i64 = 10_000;
const BOUND: i64 = 5_000;

#[derive(Default, Clone, Copy)]
struct Acc {
    cnt: u64,
    sum_amount: f64,
    sum_latency: f64,
    revision: u32,
}

type Window = HashMap<u64, Acc, foldhash::fast::FixedState>;

struct Out {
    producer: BaseProducer,
    topic: String,
    key: Vec<u8>,
    row: Vec<u8>,
    rows: u64,
}

impl Out {
    fn emit(&mut self, user: u64, start: i64, a: &Acc) {
        let end = start + SIZE;
        self.key.clear();
        let _ = write!(
            self.key,
            "{{\"user_id\":{user},\"window_start\":{start},\"window_end\":{end}}}"
        );
        self.row.clear();
        let _ = write!(
            self.row,
            "{{\"user_id\":{user},\"window_start\":{start},\"window_end\":{end},\"cnt\":{},\"sum_amount\":{:?},\"avg_latency_ms\":{:?},\"revision\":{}}}",
            a.cnt,
            a.sum_amount,
            a.sum_latency / a.cnt as f64,
            a.revision
        );
        loop {
            let rec = BaseRecord::to(&self.topic)
                .key(&self.key[..])
                .payload(&self.row[..]);
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        self.rows += 1;
        if self.rows % 1024 == 0 {
            self.producer.poll(Duration::ZERO);
        }
    }
}

struct J1 {
    /// Window start -> per-user accumulators; at most a few windows are live.
    windows: BTreeMap<i64, Window>,
    /// Windows with start < fired_below have fired (starts are multiples of SIZE).
    fired_below: i64,
    wm: i64,
    late: u64,
}

impl J1 {
    fn event(&mut self, user: u64, ts: i64, amount: f64, latency: f64, out: &mut Out) {
        let start = ts - ts.rem_euclid(SIZE);
        if start + SIZE + LATENESS <= self.wm {
            self.late += 1;
            return;
        }
        let w = self.windows.entry(start).or_default();
        let a = w.entry(user).or_default();
        a.cnt += 1;
        a.sum_amount += amount;
        a.sum_latency += latency;
        if start < self.fired_below {
            // the window has fired: fire it again at once (a first firing if it is new)
            if a.cnt > 1 {
                a.revision += 1;
            }
            let a = *a;
            out.emit(user, start, &a);
        }
    }

    fn advance(&mut self, wm: i64, out: &mut Out) {
        if wm <= self.wm {
            return;
        }
        self.wm = wm;
        // fire, in order of end
        while let Some((&start, w)) = self.windows.range(self.fired_below..).next() {
            if start + SIZE > wm {
                break;
            }
            for (&user, a) in w.iter() {
                out.emit(user, start, a);
            }
            self.fired_below = start + 1;
        }
        // purge
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() + SIZE + LATENESS > wm {
                break;
            }
            entry.remove();
        }
    }
}

fn int(s: &[u8]) -> Option<i64> {
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    let mut n = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + i64::from(c - b'0');
        n += 1;
    }
    (n > 0).then_some(if neg { -v } else { v })
}

fn float(s: &[u8]) -> Option<f64> {
    let n = s
        .iter()
        .position(|&c| !(c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')))
        .unwrap_or(s.len());
    std::str::from_utf8(&s[..n]).ok()?.parse().ok()
}

/// The bytes right after `"name":` (the first occurrence).
fn field<'a>(f: &Finder<'_>, payload: &'a [u8]) -> Option<&'a [u8]> {
    f.find(payload).map(|i| &payload[i + f.needle().len()..])
}

/// Set by SIGTERM / SIGINT: the loop stops at its next poll (at most 100 ms later).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn main() {
    let mut brokers = "127.0.0.1:9092".to_string();
    let mut input = "bench-input".to_string();
    let mut output = "bench-handwritten-j1".to_string();
    let mut unbounded = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--unbounded" {
            unbounded = true;
            continue;
        }
        let v = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--brokers" => brokers = v,
            "--input" => input = v,
            "--output" => output = v,
            _ => usage(),
        }
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }

    // streamc's librdkafka settings (runtime/src/kafka/mod.rs, `consumer_config` and
    // `producer_config`), so that the two differ only in what runs between the client
    // calls: no group membership here (partitions are assigned), but the same fetch
    // backoff, the same bounded prefetch and partition-EOF events.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("client.id", "handwritten-j1")
        .set("group.id", "bench-handwritten-unused")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // librdkafka's default (1 s) idles a consumer that drains its prefetch queue
        // faster than the queue refills
        .set("fetch.queue.backoff.ms", "20")
        // librdkafka prefetches 100k records per partition and 64 MB by default
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "8192")
        .create()
        .expect("consumer");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("client.id", "handwritten-j1")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .create()
        .expect("producer");

    let md = consumer
        .fetch_metadata(Some(&input), Duration::from_secs(10))
        .expect("metadata");
    let nparts = md.topics()[0].partitions().len();
    assert!(nparts > 0, "topic {input} has no partitions");
    let mut tpl = TopicPartitionList::new();
    let mut end = vec![0i64; nparts];
    let mut remaining = 0;
    for p in 0..nparts {
        let (lo, hi) = consumer
            .fetch_watermarks(&input, p as i32, Duration::from_secs(10))
            .expect("watermarks");
        end[p] = hi;
        if hi > lo {
            remaining += 1;
        }
        tpl.add_partition_offset(&input, p as i32, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&tpl).expect("assign");

    let f_user = Finder::new(b"\"user_id\":");
    let f_lat = Finder::new(b"\"latency_ms\":");
    let f_amt = Finder::new(b"\"amount\":");
    let f_ts = Finder::new(b"\"ts\":");

    let mut out = Out {
        producer,
        topic: output,
        key: Vec::with_capacity(128),
        row: Vec::with_capacity(256),
        rows: 0,
    };
    let mut job = J1 {
        windows: BTreeMap::new(),
        fired_below: i64::MIN,
        wm: i64::MIN,
        late: 0,
    };
    let mut max_ts = vec![i64::MIN; nparts];
    let mut done = vec![false; nparts];
    let (mut records, mut invalid) = (0u64, 0u64);

    while (unbounded || remaining > 0) && !STOP.load(Ordering::Relaxed) {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            out.producer.poll(Duration::ZERO);
            continue;
        };
        let msg = match msg {
            Ok(msg) => msg,
            // (enable.partition.eof, as streamc's consumer: the end is found by offsets)
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => panic!("consume: {e}"),
        };
        let p = msg.partition() as usize;
        records += 1;
        if records == 1 {
            eprintln!("FIRST_RECORD {}", now_ms());
        }
        let payload = msg.payload().unwrap_or_default();
        let parsed = (|| {
            let user = u64::try_from(int(field(&f_user, payload)?)?).ok()?;
            let ts = int(field(&f_ts, payload)?)?;
            let amount = float(field(&f_amt, payload)?)?;
            let latency = float(field(&f_lat, payload)?)?;
            Some((user, ts, amount, latency))
        })();
        match parsed {
            Some((user, ts, amount, latency)) => {
                job.event(user, ts, amount, latency, &mut out);
                if ts > max_ts[p] {
                    max_ts[p] = ts;
                    let wm = max_ts.iter().min().copied().unwrap_or(i64::MIN);
                    if wm != i64::MIN {
                        job.advance(wm - BOUND, &mut out);
                    }
                }
            }
            None => invalid += 1,
        }
        if msg.offset() + 1 >= end[p] && !done[p] {
            done[p] = true;
            remaining -= 1;
        }
    }
    // end of input: the watermark goes to +inf (not on a stop: the windows stay open)
    let consumed = now_ms();
    if remaining == 0 && !unbounded {
        job.advance(i64::MAX, &mut out);
    }
    let fired = now_ms();
    out.producer.flush(Duration::from_secs(60)).expect("flush");
    eprintln!("END consumed={consumed} fired={fired}");
    eprintln!(
        "DONE {} records={records} invalid={invalid} late={} rows={}",
        now_ms(),
        job.late,
        out.rows
    );
}

fn usage() -> ! {
    eprintln!("usage: handwritten-j1 [--brokers B] [--input TOPIC] [--output TOPIC] [--unbounded]");
    std::process::exit(2);
}
