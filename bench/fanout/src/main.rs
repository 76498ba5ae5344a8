//! The fan-out benchmark of `streamc serve` (see bench/fanout/run and bench/README.md).
//!
//! For each client count N: starts a fresh `streamc-serve` (its own change log in Redis),
//! connects N SSE clients over loopback (one feed, no snapshot), then writes `updates`
//! rows with the real Redis sink at `rate` rows/s, each stamped with its wall-clock write
//! time and a sequence number. Every client records, per row, the time from the write
//! (just before `Sink::write` + `flush`) to its receipt, and checks the sequence: each
//! row exactly once, in order. Then the reconnect storm: every client drops its
//! connection at the same instant and reconnects with `Last-Event-ID` while the writer
//! goes on (`storm` more rows); again every row must arrive exactly once. The server's
//! CPU (utime + stime from /proc) and memory (VmRSS, VmHWM) are read around the
//! steady phase. Prints one JSON object per N, then a Markdown table.
//!
//! Bounded: each phase stops after its rows plus 60 s at most; loopback only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streamc_runtime::redis::{FeedSpec, RedisSink, RedisSinkSpec};
use streamc_runtime::sink::Sink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

struct Args {
    server: String,
    redis: String,
    clients: Vec<usize>,
    updates: u64,
    storm: u64,
    rate: f64,
    keys: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "target/streamc/bin/streamc-serve".into(),
        redis: "redis://127.0.0.1:6379/13".into(),
        clients: vec![100, 1000, 10_000],
        updates: 200,
        storm: 100,
        rate: 20.0,
        keys: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| die(&format!("{f}: a value")));
        match f.as_str() {
            "--server" => a.server = v(),
            "--redis" => a.redis = v(),
            "--clients" => {
                a.clients = v()
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .unwrap_or_else(|_| die("--clients N,N,..."))
                    })
                    .collect()
            }
            "--updates" => a.updates = v().parse().unwrap_or_else(|_| die("--updates N")),
            "--storm" => a.storm = v().parse().unwrap_or_else(|_| die("--storm N")),
            "--rate" => a.rate = v().parse().unwrap_or_else(|_| die("--rate R")),
            "--keys" => a.keys = v().parse().unwrap_or_else(|_| die("--keys N")),
            _ => die(&format!("unknown flag {f}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("fanout: {msg}");
    std::process::exit(2)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, sys) = cpu_user_sys(pid);
    user + sys
}

/// utime and stime of a process (user space; the kernel on its behalf: the sockets), in
/// seconds.
fn cpu_user_sys(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { f.get(i).and_then(|x| x.parse().ok()).unwrap_or(0.0) };
    (ticks(11) / 100.0, ticks(12) / 100.0) // USER_HZ
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// One client's record.
#[derive(Default)]
struct Record {
    /// Write → receipt, microseconds, per row received (in order).
    latency_us: Vec<u32>,
    /// The next sequence number expected.
    next: u64,
    /// Rows received out of sequence (a gap or a repeat).
    errors: u64,
    /// The last SSE id seen.
    last_id: Option<String>,
    /// Connections made.
    connects: u32,
}

struct Shared {
    /// Rows every client must have received before it counts as done.
    target: AtomicUsize,
    done: AtomicUsize,
    connected: AtomicUsize,
    failures: AtomicUsize,
}

/// Reads one SSE client until `stop`; reconnects (with `Last-Event-ID`) whenever the
/// storm generation changes or the connection drops.
async fn client(
    addr: String,
    query: String,
    rec: Arc<Mutex<Record>>,
    shared: Arc<Shared>,
    mut storm: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
) {
    let mut counted_done = 0usize;
    let mut raw: Vec<u8> = Vec::with_capacity(8192);
    let mut text: Vec<u8> = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 8192];
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let last = rec.lock().unwrap().last_id.clone();
        let extra = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!("GET /api/events?{query} HTTP/1.1\r\nHost: b\r\n{extra}\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        raw.clear();
        text.clear();
        let chunked: bool;
        // Headers.
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => continue 'connect,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
                chunked = head.contains("transfer-encoding: chunked");
                raw.drain(..i + 4);
                break;
            }
        }
        {
            let mut r = rec.lock().unwrap();
            r.connects += 1;
            if r.connects == 1 {
                shared.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        let generation = *storm.borrow_and_update();
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => continue 'connect,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                },
                _ = storm.changed() => {
                    if *storm.borrow() != generation {
                        // Drop the connection now, reconnect at once.
                        drop(s);
                        continue 'connect;
                    }
                }
            }
            if chunked {
                dechunk(&mut raw, &mut text);
            } else {
                text.append(&mut raw);
            }
            let now = now_us();
            let mut r = rec.lock().unwrap();
            while let Some(end) = find(&text, b"\n\n") {
                let block = &text[..end];
                if let Some(id) = field(block, b"id: ") {
                    r.last_id = Some(String::from_utf8_lossy(id).into_owned());
                }
                if find(block, b"event: change").is_some() {
                    let seq = number_after(block, b"\"seq\":");
                    let sent = number_after(block, b"\"sent_us\":");
                    match seq {
                        Some(seq) if seq == r.next => {
                            r.next += 1;
                            let l = sent.map_or(0, |s| now.saturating_sub(s));
                            r.latency_us.push(l.min(u32::MAX as u64) as u32);
                        }
                        _ => r.errors += 1,
                    }
                }
                text.drain(..end + 2);
            }
            let target = shared.target.load(Ordering::Relaxed);
            if r.latency_us.len() >= target && counted_done < target {
                counted_done = target;
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn field<'a>(block: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    block
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(name))
}

fn number_after(block: &[u8], key: &[u8]) -> Option<u64> {
    let i = find(block, key)? + key.len();
    let digits: Vec<u8> = block[i..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Moves whole chunks of `raw` (chunked transfer encoding) into `text`.
fn dechunk(raw: &mut Vec<u8>, text: &mut Vec<u8>) {
    let mut at = 0;
    while let Some(nl) = find(&raw[at..], b"\r\n") {
        let Some(size) = std::str::from_utf8(&raw[at..at + nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            break;
        };
        let start = at + nl + 2;
        if raw.len() < start + size + 2 {
            break;
        }
        text.extend_from_slice(&raw[start..start + size]);
        at = start + size + 2;
    }
    raw.drain(..at);
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Phase {
    p50: f64,
    p99: f64,
    max: f64,
    rows: u64,
    errors: u64,
    incomplete: usize,
}

fn phase_stats(records: &[Arc<Mutex<Record>>], from: usize, upto: usize) -> Phase {
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut incomplete = 0;
    for r in records {
        let r = r.lock().unwrap();
        errors += r.errors;
        if r.latency_us.len() < upto {
            incomplete += 1;
        }
        let hi = r.latency_us.len().min(upto);
        if from < hi {
            all.extend_from_slice(&r.latency_us[from..hi]);
        }
    }
    all.sort_unstable();
    Phase {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: all.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        rows: all.len() as u64,
        errors,
        incomplete,
    }
}

struct Writer {
    sink: RedisSink,
    seq: u64,
    keys: u64,
}

impl Writer {
    /// Writes `n` rows at `rate` per second (each stamped just before the write).
    fn write(&mut self, n: u64, rate: f64) {
        let start = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            self.seq += 1;
            let s = self.seq;
            let k = s % self.keys;
            let row = format!(
                "{{\"k\":{k},\"seq\":{s},\"sent_us\":{},\"window_start\":{},\"window_end\":{},\"revision\":0}}",
                now_us(),
                s * 1000,
                s * 1000 + 1000
            );
            if let Err(e) = self
                .sink
                .write(None, row.as_bytes())
                .and_then(|()| self.sink.flush())
            {
                die(&format!("writing to Redis: {e}"));
            }
        }
    }
}

struct Server {
    child: Child,
    addr: String,
}

fn start_server(bin: &str, redis: &str, stream: &str) -> Server {
    let mut child = Command::new(bin)
        .args([
            "--redis",
            redis,
            "--listen",
            "127.0.0.1:0",
            "--stream",
            stream,
        ])
        .env("STREAMC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("starting {bin}: {e}")));
    let err = child.stderr.take().unwrap_or_else(|| die("no stderr"));
    let mut lines = BufReader::new(err).lines();
    let addr = loop {
        let Some(Ok(l)) = lines.next() else {
            die("the server exited before listening");
        };
        if let Some(rest) = l.split("dashboard at http://").nth(1) {
            break rest.split('/').next().unwrap_or_default().to_string();
        }
    };
    // Keep draining its stderr.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("fanout: timed out waiting for {what}");
    false
}

fn main() {
    let a = parse_args();
    let run = format!("{}", now_us());
    // The clients: one worker thread (the load generator's cost is reported too).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&e.to_string()));
    let client_pid = std::process::id();
    for &n in &a.clients {
        let stream = format!("bench:{run}:{n}:log");
        let server = start_server(&a.server, &a.redis, &stream);
        let pid = server.child.id();
        let spec = RedisSinkSpec {
            url: Some(a.redis.clone()),
            key: format!("bench:{run}:{n}:{{k}}"),
            channel: format!("bench:{run}:{n}:ch"),
            stream: stream.clone(),
            stream_max_len: 100_000,
            keep: 10,
            ttl_ms: Some(600_000),
            feed: FeedSpec {
                job: format!("fanout_{run}"),
                sink: format!("n{n}"),
                flow: "bench".into(),
                key_fields: vec!["k".into()],
                aggregates: vec!["seq".into(), "sent_us".into()],
                window: "tumbling 1s".into(),
            },
        };
        let feed = spec.feed.id();
        let sink = RedisSink::open(&spec).unwrap_or_else(|e| die(&format!("Redis: {e}")));
        let mut writer = Writer {
            sink,
            seq: 0,
            keys: a.keys,
        };
        wait_until(
            "the server to see the feed",
            Duration::from_secs(10),
            || http_get(&server.addr, "/api/feeds").contains(&feed),
        );

        let shared = Arc::new(Shared {
            target: AtomicUsize::new(a.updates as usize),
            done: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (storm_tx, storm_rx) = watch::channel(0u64);
        let records: Vec<Arc<Mutex<Record>>> = (0..n)
            .map(|_| {
                Arc::new(Mutex::new(Record {
                    next: 1,
                    ..Record::default()
                }))
            })
            .collect();
        let query = format!("feed={feed}&snapshot=0");
        let handles: Vec<_> = records
            .iter()
            .map(|r| {
                rt.spawn(client(
                    server.addr.clone(),
                    query.clone(),
                    Arc::clone(r),
                    Arc::clone(&shared),
                    storm_rx.clone(),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let ok = wait_until("the clients to connect", Duration::from_secs(120), || {
            shared.connected.load(Ordering::Relaxed) == n
                && http_get(&server.addr, "/healthz").contains(&format!("\"clients\":{n}"))
        });
        if !ok {
            shared.failures.fetch_add(1, Ordering::Relaxed);
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let (rss0, _) = memory_mb(pid);
        // Steady phase.
        let (user0, sys0) = cpu_user_sys(pid);
        let ccpu0 = cpu_seconds(client_pid);
        let t0 = Instant::now();
        writer.write(a.updates, a.rate);
        wait_until(
            "every client to receive every row",
            Duration::from_secs(60),
            || shared.done.load(Ordering::Relaxed) == n,
        );
        let wall = t0.elapsed().as_secs_f64();
        let (user1, sys1) = cpu_user_sys(pid);
        let (user, sys) = (user1 - user0, sys1 - sys0);
        let cpu = user + sys;
        let ccpu = cpu_seconds(client_pid) - ccpu0;
        let (rss, hwm) = memory_mb(pid);
        let steady = phase_stats(&records, 0, a.updates as usize);

        // Reconnect storm: every client drops and reconnects with Last-Event-ID at once,
        // while rows keep coming.
        let total = (a.updates + a.storm) as usize;
        shared.target.store(total, Ordering::Relaxed);
        let t_storm = Instant::now();
        let scpu0 = cpu_seconds(pid);
        let caught = if a.storm > 0 {
            let _ = storm_tx.send(1);
            writer.write(a.storm, a.rate);
            wait_until(
                "every client to catch up after the storm",
                Duration::from_secs(60),
                || shared.done.load(Ordering::Relaxed) == 2 * n,
            )
        } else {
            true
        };
        let storm_wall = t_storm.elapsed().as_secs_f64();
        let storm_cpu = cpu_seconds(pid) - scpu0;
        let storm = phase_stats(&records, a.updates as usize, total);
        let reconnected = records
            .iter()
            .filter(|r| r.lock().unwrap().connects >= 2)
            .count();
        let (_, hwm2) = memory_mb(pid);

        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.abort();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let mut server = server;
        let _ = server.child.wait();
        let _ = writer.sink.close();

        let line = format!(
            "{{\"clients\":{n},\"rows\":{},\"rate\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"deliveries\":{},\"sequence_errors\":{},\"incomplete_clients\":{},\"server_cpu_s\":{cpu:.2},\"server_user_s\":{user:.2},\"server_sys_s\":{sys:.2},\"server_cpu_pct\":{:.1},\"client_cpu_pct\":{:.1},\"server_rss_mb_idle\":{rss0:.1},\"server_rss_mb\":{rss:.1},\"server_hwm_mb\":{:.1},\"storm_rows\":{},\"storm_catch_up_s\":{storm_wall:.2},\"storm_caught_up\":{caught},\"storm_reconnected\":{reconnected},\"storm_p50_ms\":{:.2},\"storm_p99_ms\":{:.2},\"storm_sequence_errors\":{},\"storm_incomplete\":{},\"storm_server_cpu_s\":{storm_cpu:.2},\"loadavg\":\"{}\",\"connect_failures\":{}}}",
            a.updates,
            a.rate,
            steady.p50,
            steady.p99,
            steady.max,
            steady.rows,
            steady.errors,
            steady.incomplete,
            100.0 * cpu / wall,
            100.0 * ccpu / wall,
            hwm.max(hwm2),
            a.storm,
            storm.p50,
            storm.p99,
            storm.errors,
            storm.incomplete,
            load.trim(),
            shared.failures.load(Ordering::Relaxed),
        );
        println!("{line}");
    }
}
