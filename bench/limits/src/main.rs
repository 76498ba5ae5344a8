//! The limits of bench/README.md ("The limits"): the least work any engine must do on
//! this machine for the benchmark's input, one mode per part (Cargo.toml says which).
//!
//! Every mode reads (or writes) the whole topic once, bounded like `streamc --bounded`
//! (each partition up to the end offset it had at start), prints `FIRST_RECORD <ms>`
//! at its first record and `DONE <ms> records=<n> ...` at the end (stderr), and exits 0.
//!
//! Usage: limits MODE [--brokers B] [--input TOPIC] [--partitions P] [--output TOPIC] [--rows N]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

struct Args {
    mode: String,
    brokers: String,
    input: String,
    partitions: i32,
    output: String,
    rows: u64,
}

fn args() -> Args {
    let mut a = Args {
        mode: String::new(),
        brokers: "127.0.0.1:9092".into(),
        input: "bench-input".into(),
        partitions: 2,
        output: "bench-limit-produce".into(),
        rows: 0,
    };
    let mut it = std::env::args().skip(1);
    a.mode = it.next().unwrap_or_else(|| usage());
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--brokers" => a.brokers = v,
            "--input" => a.input = v,
            "--partitions" => a.partitions = v.parse().unwrap_or_else(|_| usage()),
            "--output" => a.output = v,
            "--rows" => a.rows = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!(
        "usage: limits consume|fetch|scan|serde|produce [--brokers B] [--input TOPIC] [--partitions P] \
         [--output TOPIC] [--rows N]"
    );
    std::process::exit(2);
}

fn main() {
    let a = args();
    match a.mode.as_str() {
        "consume" => consume(&a),
        "fetch" => {
            let mut n = 0u64;
            let mut bytes = 0u64;
            fetch_all(&a, |_, _, v| {
                n += 1;
                bytes += v.len() as u64;
            });
            eprintln!("DONE {} records={n} bytes={bytes}", now_ms());
        }
        "scan" => {
            let (mut n, mut bad, mut sum) = (0u64, 0u64, Sums::default());
            fetch_all(&a, |_, _, v| {
                n += 1;
                match scan(v) {
                    Some(ev) => sum.add(&ev),
                    None => bad += 1,
                }
            });
            eprintln!(
                "DONE {} records={n} unparsed={bad} {}",
                now_ms(),
                sum.show()
            );
        }
        "serde" => {
            let (mut n, mut bad, mut sum) = (0u64, 0u64, Sums::default());
            fetch_all(&a, |_, _, v| {
                n += 1;
                match serde_json::from_slice::<SerdeEv>(v) {
                    Ok(e) => sum.add(&Ev {
                        user_id: e.user_id,
                        latency_ms: e.latency_ms,
                        amount: e.amount,
                        ts: e.ts,
                    }),
                    Err(_) => bad += 1,
                }
            });
            eprintln!(
                "DONE {} records={n} unparsed={bad} {}",
                now_ms(),
                sum.show()
            );
        }
        "produce" => produce(&a),
        _ => usage(),
    }
}

// ---------------------------------------------------------------------------------------
// the schema's four fields (bench/specs/j1.yaml): user_id u64, latency_ms f64, amount
// f64, ts timestamp (epoch millis)

#[derive(Default)]
struct Ev {
    user_id: u64,
    latency_ms: f64,
    amount: f64,
    ts: i64,
}

#[derive(serde::Deserialize)]
struct SerdeEv {
    user_id: u64,
    latency_ms: f64,
    amount: f64,
    ts: i64,
}

/// Checksums, so that nothing is optimized away and the modes can be compared.
#[derive(Default)]
struct Sums {
    users: u64,
    ts: i64,
    amount: f64,
    latency: f64,
}

impl Sums {
    fn add(&mut self, e: &Ev) {
        self.users = self.users.wrapping_add(e.user_id);
        self.ts = self.ts.wrapping_add(e.ts);
        self.amount += e.amount;
        self.latency += e.latency_ms;
    }
    fn show(&self) -> String {
        format!(
            "sum_user={} sum_ts={} sum_amount={:.2} sum_latency={:.3}",
            self.users, self.ts, self.amount, self.latency
        )
    }
}

/// A strict scan of one JSON object for the four fields: keys without escapes, the
/// four values as JSON numbers, every other value a string without escapes, a number
/// or a literal. None for anything else (an engine would fall back to a full parser).
fn scan(s: &[u8]) -> Option<Ev> {
    let mut i = ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    let mut ev = Ev::default();
    let mut seen = 0u8;
    i = ws(s, i + 1);
    if s.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return None;
        }
        let k0 = i + 1;
        let k1 = k0 + memchr_quote(&s[k0..])?;
        let key = &s[k0..k1];
        if key.contains(&b'\\') {
            return None;
        }
        i = ws(s, k1 + 1);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = ws(s, i + 1);
        let bit = match key {
            b"user_id" => 1,
            b"latency_ms" => 2,
            b"amount" => 4,
            b"ts" => 8,
            _ => 0,
        };
        if bit != 0 {
            if seen & bit != 0 {
                return None; // duplicate field
            }
            seen |= bit;
            let (end, neg, frac) = number(s, i)?;
            let text = &s[i..end];
            match bit {
                1 if !frac && !neg => ev.user_id = digits(text)?,
                8 if !frac => {
                    let v = i64::try_from(digits(text.strip_prefix(b"-").unwrap_or(text))?).ok()?;
                    ev.ts = if neg { -v } else { v };
                }
                2 | 4 => {
                    let v = if !frac {
                        // small integers convert exactly
                        let m = digits(text.strip_prefix(b"-").unwrap_or(text))?;
                        if m > 1 << 53 {
                            parse_f64(text)?
                        } else if neg {
                            -(m as f64)
                        } else {
                            m as f64
                        }
                    } else {
                        parse_f64(text)?
                    };
                    if bit == 2 {
                        ev.latency_ms = v;
                    } else {
                        ev.amount = v;
                    }
                }
                _ => return None,
            }
            i = end;
        } else {
            i = skip_value(s, i)?;
        }
        i = ws(s, i);
        match s.get(i) {
            Some(b',') => i = ws(s, i + 1),
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    (ws(s, i) == s.len() && seen == 15).then_some(ev)
}

#[inline]
fn ws(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = s.get(i) {
        i += 1;
    }
    i
}

#[inline]
fn memchr_quote(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'"')
}

/// The end of the run of digits at `i` (`i` itself if there is none).
#[inline]
fn digit_run(s: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = s.get(i) {
        i += 1;
    }
    i
}

/// One or more digits at `i`: their end.
#[inline]
fn some_digits(s: &[u8], i: usize) -> Option<usize> {
    let end = digit_run(s, i);
    (end > i).then_some(end)
}

/// A JSON number at `i`: (end, negative, has a fraction or exponent).
#[inline]
fn number(s: &[u8], mut i: usize) -> Option<(usize, bool, bool)> {
    let neg = s.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    i = match s.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digit_run(s, i),
        _ => return None,
    };
    let mut frac = false;
    if s.get(i) == Some(&b'.') {
        frac = true;
        i = some_digits(s, i + 1)?;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        frac = true;
        i += 1;
        if let Some(b'+' | b'-') = s.get(i) {
            i += 1;
        }
        i = some_digits(s, i)?;
    }
    Some((i, neg, frac))
}

#[inline]
fn digits(t: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in t {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[inline]
fn parse_f64(t: &[u8]) -> Option<f64> {
    // SAFETY-free: a JSON number is ASCII
    let v: f64 = std::str::from_utf8(t).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Skips a string without escapes, a number or a literal.
#[inline]
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => {
            let n = memchr_quote(&s[i + 1..])?;
            let body = &s[i + 1..i + 1 + n];
            if body.iter().any(|&b| b == b'\\' || b < 0x20) {
                return None;
            }
            std::str::from_utf8(body).ok()?;
            Some(i + n + 2)
        }
        b'-' | b'0'..=b'9' => number(s, i).map(|n| n.0),
        b't' => s[i..].starts_with(b"true").then_some(i + 4),
        b'f' => s[i..].starts_with(b"false").then_some(i + 5),
        b'n' => s[i..].starts_with(b"null").then_some(i + 4),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// librdkafka: consume-only and produce-only, with streamc's settings
// (runtime/src/kafka/mod.rs `consumer_config`, `producer_config`)

fn consume(a: &Args) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("client.id", "limits-consume")
        .set("group.id", "bench-limits-unused")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "20")
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "8192")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let np = a.partitions as usize;
    let mut end = vec![0i64; np];
    let mut remaining = 0;
    for p in 0..np {
        let (lo, hi) = consumer
            .fetch_watermarks(&a.input, p as i32, Duration::from_secs(10))
            .expect("watermarks");
        end[p] = hi;
        if hi > lo {
            remaining += 1;
        }
        tpl.add_partition_offset(&a.input, p as i32, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut done = vec![false; np];
    while remaining > 0 {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => panic!("consume: {e}"),
        };
        n += 1;
        if n == 1 {
            eprintln!("FIRST_RECORD {}", now_ms());
        }
        bytes += msg.payload().map_or(0, |v| v.len() as u64);
        let p = msg.partition() as usize;
        if msg.offset() + 1 >= end[p] && !done[p] {
            done[p] = true;
            remaining -= 1;
        }
    }
    eprintln!("DONE {} records={n} bytes={bytes}", now_ms());
}

/// `rows` rows shaped like J1's (key and value JSON as streamc writes them), to
/// `output`, then a flush.
fn produce(a: &Args) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("client.id", "limits-produce")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .create()
        .expect("producer");
    eprintln!("FIRST_RECORD {}", now_ms());
    let (mut key, mut row) = (Vec::with_capacity(128), Vec::with_capacity(256));
    for i in 0..a.rows {
        let user = i % 100_000;
        let start = 1_767_225_600_000i64 + (i / 100_000) as i64 * 60_000;
        let end = start + 60_000;
        key.clear();
        let _ = write!(
            key,
            "{{\"user_id\":{user},\"window_start\":{start},\"window_end\":{end}}}"
        );
        row.clear();
        let _ = write!(
            row,
            "{{\"user_id\":{user},\"window_start\":{start},\"window_end\":{end},\"cnt\":{},\"sum_amount\":{:?},\
             \"avg_latency_ms\":{:?},\"revision\":0}}",
            i % 7 + 1,
            (i % 10_000) as f64 * 0.37,
            (i % 1_000) as f64 * 1.25,
        );
        loop {
            match producer.send(BaseRecord::to(&a.output).key(&key[..]).payload(&row[..])) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    eprintln!("DONE {} records={} rows={}", now_ms(), a.rows, a.rows);
}

// ---------------------------------------------------------------------------------------
// The data plane without a client library: Fetch v4 requests (topic names, isolation
// level; Kafka 4 still serves v4-v17) to the one broker on one TCP connection, the
// record batches (v2, uncompressed) decoded in place. Bounded: a partition is done at
// the high watermark of its first response. Request sizes as librdkafka's defaults
// (fetch.max.bytes 50 MB, max.partition.fetch.bytes 1 MB, fetch.wait.max.ms 500).

struct Conn {
    s: TcpStream,
    corr: i32,
    buf: Vec<u8>,
}

impl Conn {
    fn request(&mut self, api_key: i16, version: i16, body: &[u8]) -> &[u8] {
        self.corr += 1;
        let client = b"limits";
        let mut req = Vec::with_capacity(body.len() + 32);
        let size = (2 + 2 + 4 + 2 + client.len() + body.len()) as i32;
        req.extend_from_slice(&size.to_be_bytes());
        req.extend_from_slice(&api_key.to_be_bytes());
        req.extend_from_slice(&version.to_be_bytes());
        req.extend_from_slice(&self.corr.to_be_bytes());
        req.extend_from_slice(&(client.len() as i16).to_be_bytes());
        req.extend_from_slice(client);
        req.extend_from_slice(body);
        self.s.write_all(&req).expect("send");
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).expect("receive");
        let len = i32::from_be_bytes(len) as usize;
        self.buf.resize(len, 0);
        self.s.read_exact(&mut self.buf).expect("receive");
        let corr = i32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes"));
        assert_eq!(corr, self.corr, "correlation id");
        &self.buf[4..]
    }
}

struct Rd<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        s
    }
    fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().expect("2"))
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4"))
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().expect("8"))
    }
    fn string(&mut self) -> &'a [u8] {
        let n = self.i16();
        if n < 0 { &[] } else { self.take(n as usize) }
    }
    fn varint(&mut self) -> i64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.take(1)[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// Reads every partition of `a.input` from offset 0 to its high watermark at start,
/// calling `f(partition, offset, value)` per record.
fn fetch_all(a: &Args, mut f: impl FnMut(i32, i64, &[u8])) {
    let s = TcpStream::connect(&a.brokers).expect("connect");
    s.set_nodelay(true).ok();
    let mut c = Conn {
        s,
        corr: 0,
        buf: Vec::new(),
    };
    let np = a.partitions as usize;
    let mut next = vec![0i64; np];
    let mut stop: Vec<Option<i64>> = vec![None; np];
    let mut first = true;
    let mut body = Vec::new();
    loop {
        let open: Vec<usize> = (0..np)
            .filter(|&p| stop[p].is_none_or(|s| next[p] < s))
            .collect();
        if open.is_empty() {
            break;
        }
        body.clear();
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&500i32.to_be_bytes()); // max wait ms
        body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
        body.extend_from_slice(&52_428_800i32.to_be_bytes()); // max bytes
        body.push(0); // read_uncommitted (the input has no transactions)
        body.extend_from_slice(&1i32.to_be_bytes()); // one topic
        put_str(&mut body, &a.input);
        body.extend_from_slice(&(open.len() as i32).to_be_bytes());
        for &p in &open {
            body.extend_from_slice(&(p as i32).to_be_bytes());
            body.extend_from_slice(&next[p].to_be_bytes());
            body.extend_from_slice(&1_048_576i32.to_be_bytes());
        }
        let resp = c.request(1, 4, &body);
        let mut r = Rd { b: resp, i: 0 };
        let _throttle = r.i32();
        for _ in 0..r.i32() {
            let _topic = r.string();
            for _ in 0..r.i32() {
                let p = r.i32();
                let err = r.i16();
                assert_eq!(err, 0, "fetch error {err} on partition {p}");
                let high = r.i64();
                let _lso = r.i64();
                let aborted = r.i32();
                for _ in 0..aborted.max(0) {
                    r.i64();
                    r.i64();
                }
                let n = r.i32();
                let records = if n > 0 { r.take(n as usize) } else { &[] };
                let pu = p as usize;
                stop[pu].get_or_insert(high);
                next[pu] = decode_batches(records, next[pu], p, &mut f, &mut first);
            }
        }
    }
}

/// Decodes the record batches of one partition's fetch, calling `f` for every record
/// at or after `from`; the next offset to fetch.
fn decode_batches(
    b: &[u8],
    from: i64,
    p: i32,
    f: &mut impl FnMut(i32, i64, &[u8]),
    first: &mut bool,
) -> i64 {
    let mut next = from;
    let mut i = 0;
    while i + 61 <= b.len() {
        let mut r = Rd { b, i };
        let base = r.i64();
        let len = r.i32() as usize;
        if i + 12 + len > b.len() {
            break; // a partial batch at the end of the response
        }
        let end = i + 12 + len;
        let _epoch = r.i32();
        let magic = r.i8();
        assert_eq!(magic, 2, "record batch v2 only");
        let _crc = r.i32(); // librdkafka does not check it either (check.crcs=false)
        let attrs = r.i16();
        assert_eq!(attrs & 7, 0, "uncompressed batches only");
        let last_delta = r.i32();
        r.take(8 + 8 + 8 + 2 + 4);
        let count = r.i32();
        if attrs & 0x20 == 0 {
            for _ in 0..count {
                let _len = r.varint();
                let _attr = r.i8();
                let _ts = r.varint();
                let off = base + r.varint();
                let kl = r.varint();
                if kl > 0 {
                    r.take(kl as usize);
                }
                let vl = r.varint();
                let v = if vl > 0 { r.take(vl as usize) } else { &[][..] };
                for _ in 0..r.varint() {
                    let hk = r.varint();
                    r.take(hk.max(0) as usize);
                    let hv = r.varint();
                    r.take(hv.max(0) as usize);
                }
                if off >= from {
                    if *first {
                        *first = false;
                        eprintln!("FIRST_RECORD {}", now_ms());
                    }
                    f(p, off, v);
                }
            }
        }
        next = next.max(base + i64::from(last_delta) + 1);
        i = end;
    }
    next
}
