//! The Redis sink against a real Redis (`scripts/redis start`; `STREAMC_REDIS` or
//! redis://127.0.0.1:6379): upserts, revision order, retractions, replays, `keep`, TTL,
//! the change log and its notifications, reconnection, progress. Every test uses keys,
//! a stream and a channel of its own.
//!
//! Run with `cargo test -p streamc-runtime --features redis --test redis`.

#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use streamc_runtime::metrics::Metrics;
use streamc_runtime::redis::conn::Conn;
use streamc_runtime::redis::resp::{RedisUrl, Value};
use streamc_runtime::redis::{FeedSpec, RedisSink, RedisSinkSpec, key_index};
use streamc_runtime::sink::Sink;

/// `STREAMC_REDIS` (or the default) with database 10: tests leave their keys there,
/// not in the database demos and users look at.
fn url() -> String {
    let base = std::env::var("STREAMC_REDIS")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let rest = base.trim().trim_start_matches("redis://");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("redis://{host}/10")
}

/// A connection of the test's own; fails (never skips) when no Redis answers.
fn redis() -> Conn {
    let u = url();
    Conn::connect(&RedisUrl::parse(&u).unwrap()).unwrap_or_else(|e| {
        panic!("no Redis answers at {u} ({e}): run `scripts/redis start` (or set STREAMC_REDIS)")
    })
}

fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Case {
    spec: RedisSinkSpec,
    prefix: String,
}

fn case(what: &str, keep: u64, ttl_ms: Option<u64>) -> Case {
    let prefix = unique(what);
    Case {
        spec: RedisSinkSpec {
            url: Some(url()),
            key: format!("{prefix}:views:{{user_id}}"),
            channel: format!("{prefix}:ch"),
            stream: format!("{prefix}:log"),
            stream_max_len: 10_000,
            keep,
            ttl_ms,
            feed: FeedSpec {
                job: format!("{prefix}-job"),
                sink: "dashboard".into(),
                flow: "views".into(),
                key_fields: vec!["user_id".into()],
                aggregates: vec!["views".into()],
                window: "tumbling 1s".into(),
            },
        },
        prefix,
    }
}

fn row(user: u64, start: i64, views: u64, revision: u32, retracted: bool) -> String {
    let mut r = json!({
        "views": views,
        "user_id": user,
        "window_start": start,
        "window_end": start + 1000,
        "revision": revision,
    });
    if retracted {
        r["retracted"] = json!(true);
    }
    r.to_string()
}

fn write(sink: &mut RedisSink, rows: &[String]) {
    for r in rows {
        sink.write(None, r.as_bytes()).unwrap();
    }
    sink.flush().unwrap();
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v:?}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The members of a key's sorted set, oldest window first, parsed.
fn windows(c: &mut Conn, key: &str) -> Vec<Json> {
    strs(&c.cmd(&["ZRANGE", key, "0", "-1"]).unwrap())
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

/// The change log: (id, op, key, row).
fn log(c: &mut Conn, stream: &str) -> Vec<(String, String, String, Json)> {
    let v = c.cmd(&["XRANGE", stream, "-", "+"]).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let e = e.as_array().unwrap();
            let id = e[0].as_str().unwrap().to_string();
            let f = strs(&e[1]);
            let get = |k: &str| {
                let i = f.iter().position(|x| x == k).unwrap();
                f[i + 1].clone()
            };
            (
                id,
                get("op"),
                get("key"),
                serde_json::from_str(&get("row")).unwrap(),
            )
        })
        .collect()
}

fn subscribe(channel: &str) -> Conn {
    let mut c = redis();
    let ok = c.cmd(&["SUBSCRIBE", channel]).unwrap();
    assert_eq!(ok.as_array().unwrap()[0].as_str(), Some("subscribe"));
    c
}

/// The next notification on a subscribed connection.
fn notification(c: &mut Conn) -> Json {
    let v = c.read().unwrap();
    let parts = v.as_array().unwrap();
    assert_eq!(parts[0].as_str(), Some("message"));
    serde_json::from_str(parts[2].as_str().unwrap()).unwrap()
}

#[test]
fn a_later_revision_replaces_the_window_and_each_change_is_logged_and_published() {
    let t = case("upsert", 100, None);
    let mut c = redis();
    let mut sub = subscribe(&t.spec.channel);
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(
        &mut sink,
        &[
            row(1, 0, 3, 0, false),
            row(2, 0, 1, 0, false),
            row(1, 0, 4, 1, false),
        ],
    );
    let key1 = format!("{}:views:1", t.prefix);
    let w = windows(&mut c, &key1);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (w[0]["views"].clone(), w[0]["revision"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(windows(&mut c, &format!("{}:views:2", t.prefix)).len(), 1);
    let score = c.cmd(&["ZSCORE", &key1, &w[0].to_string()]).unwrap();
    assert_eq!(score.as_str(), Some("0"), "score = window_start");

    let entries = log(&mut c, &t.spec.stream);
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.1 == "upsert"));
    assert_eq!(entries[2].2, key1);
    assert_eq!(entries[2].3["views"], json!(4));
    // One notification per change, with its change-log id and the id before it.
    let mut prev = "0-0".to_string();
    for e in &entries {
        let n = notification(&mut sub);
        assert_eq!(n["id"].as_str(), Some(e.0.as_str()));
        assert_eq!(n["prev"].as_str(), Some(prev.as_str()));
        assert_eq!(n["key"].as_str(), Some(e.2.as_str()));
        assert_eq!(n["op"], json!("upsert"));
        assert_eq!(n["row"], e.3);
        assert_eq!(n["feed"].as_str(), Some(t.spec.feed.id().as_str()));
        prev = e.0.clone();
    }
    assert_eq!(sink.applied(), 3);
    // The feed is registered, its keys indexed.
    let d = c
        .cmd(&["HGET", "streamc:feeds", &t.spec.feed.id()])
        .unwrap();
    let d: Json = serde_json::from_str(d.as_str().unwrap()).unwrap();
    assert_eq!(d["flow"], json!("views"));
    assert_eq!(d["stream"].as_str(), Some(t.spec.stream.as_str()));
    assert_eq!(d["aggregates"], json!(["views"]));
    let keys = strs(
        &c.cmd(&["ZRANGE", &key_index(&t.spec.feed.id()), "0", "-1"])
            .unwrap(),
    );
    assert_eq!(keys.len(), 2);
    sink.close().unwrap();
}

#[test]
fn an_older_revision_never_overwrites_a_newer_one() {
    let t = case("order", 100, None);
    let mut c = redis();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(&mut sink, &[row(1, 0, 9, 2, false)]);
    write(&mut sink, &[row(1, 0, 3, 0, false), row(1, 0, 5, 1, false)]);
    write(&mut sink, &[row(1, 0, 9, 2, false)]);
    let w = windows(&mut c, &format!("{}:views:1", t.prefix));
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["revision"], json!(2));
    assert_eq!(w[0]["views"], json!(9));
    assert_eq!(
        log(&mut c, &t.spec.stream).len(),
        1,
        "stale rows are not logged"
    );
    assert_eq!(sink.applied(), 1);
}

#[test]
fn a_retraction_removes_the_window_and_a_replay_cannot_bring_it_back() {
    let t = case("retract", 100, None);
    let mut c = redis();
    let mut sub = subscribe(&t.spec.channel);
    let mut sink = RedisSink::open(&t.spec).unwrap();
    // A session [0, 1000) fires, then is absorbed by a merge: retracted; the merged
    // window [0, 3000) has the same start and fires with the next revision.
    let merged =
        json!({"views": 7, "user_id": 1, "window_start": 0, "window_end": 3000, "revision": 1})
            .to_string();
    write(
        &mut sink,
        &[
            row(1, 0, 3, 0, false),
            row(1, 0, 3, 0, true),
            merged.clone(),
        ],
    );
    let key = format!("{}:views:1", t.prefix);
    let w = windows(&mut c, &key);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["window_end"], json!(3000));
    let ops: Vec<String> = log(&mut c, &t.spec.stream)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(ops, ["upsert", "retract", "upsert"]);
    let ops: Vec<Json> = (0..3)
        .map(|_| notification(&mut sub)["op"].clone())
        .collect();
    assert_eq!(ops, [json!("upsert"), json!("retract"), json!("upsert")]);
    // Replaying everything (a restart re-reading its input) changes nothing.
    write(
        &mut sink,
        &[row(1, 0, 3, 0, false), row(1, 0, 3, 0, true), merged],
    );
    assert_eq!(windows(&mut c, &key), w);
    assert_eq!(log(&mut c, &t.spec.stream).len(), 3);
    // A retraction of a window never shown changes nothing visible.
    write(&mut sink, &[row(1, 5000, 1, 0, true)]);
    assert_eq!(log(&mut c, &t.spec.stream).len(), 3);
    // ...and blocks its replay.
    write(&mut sink, &[row(1, 5000, 1, 0, false)]);
    assert_eq!(windows(&mut c, &key).len(), 1);
}

#[test]
fn a_replay_of_a_whole_run_is_idempotent() {
    let t = case("replay", 100, None);
    let mut c = redis();
    let run: Vec<String> = (0..50u64)
        .flat_map(|i| {
            let user = i % 5;
            let start = (i / 5) as i64 * 1000;
            [row(user, start, 1, 0, false), row(user, start, 2, 1, false)]
        })
        .collect();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(&mut sink, &run);
    let before: Vec<Vec<Json>> = (0..5)
        .map(|u| windows(&mut c, &format!("{}:views:{u}", t.prefix)))
        .collect();
    assert!(
        before
            .iter()
            .all(|w| w.len() == 10 && w.iter().all(|r| r["revision"] == json!(1)))
    );
    let logged = log(&mut c, &t.spec.stream).len();
    assert_eq!(logged, 100);
    // A second sink (a restarted job) replays the same rows.
    let mut again = RedisSink::open(&t.spec).unwrap();
    write(&mut again, &run);
    assert_eq!(again.applied(), 0);
    let after: Vec<Vec<Json>> = (0..5)
        .map(|u| windows(&mut c, &format!("{}:views:{u}", t.prefix)))
        .collect();
    assert_eq!(before, after);
    assert_eq!(log(&mut c, &t.spec.stream).len(), logged);
}

#[test]
fn only_the_newest_windows_are_kept_and_older_ones_are_not_brought_back() {
    let t = case("keep", 3, None);
    let mut c = redis();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    let rows: Vec<String> = (0..6)
        .map(|i| row(1, i * 1000, i as u64, 0, false))
        .collect();
    write(&mut sink, &rows);
    let key = format!("{}:views:1", t.prefix);
    let starts: Vec<Json> = windows(&mut c, &key)
        .iter()
        .map(|w| w["window_start"].clone())
        .collect();
    assert_eq!(starts, [json!(3000), json!(4000), json!(5000)]);
    let revs = c.cmd(&["HLEN", &format!("streamc:rev:{key}")]).unwrap();
    assert_eq!(
        revs.as_int(),
        Some(3),
        "revision records go with their windows"
    );
    // A late correction of a window no longer kept is not brought back.
    write(&mut sink, &[row(1, 0, 99, 1, false)]);
    assert_eq!(windows(&mut c, &key).len(), 3);
    assert_eq!(log(&mut c, &t.spec.stream).len(), 6);
    // A correction of a kept one is applied.
    write(&mut sink, &[row(1, 3000, 42, 1, false)]);
    assert_eq!(windows(&mut c, &key)[0]["views"], json!(42));
}

#[test]
fn keys_expire_after_their_ttl() {
    let t = case("ttl", 100, Some(60_000));
    let mut c = redis();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(&mut sink, &[row(1, 0, 1, 0, false)]);
    let key = format!("{}:views:1", t.prefix);
    for k in [key.clone(), format!("streamc:rev:{key}")] {
        let ttl = c.cmd(&["PTTL", &k]).unwrap().as_int().unwrap();
        assert!(ttl > 50_000 && ttl <= 60_000, "{k}: {ttl}");
    }
    let no_ttl = case("nottl", 100, None);
    let mut sink = RedisSink::open(&no_ttl.spec).unwrap();
    write(&mut sink, &[row(1, 0, 1, 0, false)]);
    let k = format!("{}:views:1", no_ttl.prefix);
    assert_eq!(c.cmd(&["PTTL", &k]).unwrap().as_int(), Some(-1));
}

#[test]
fn a_lost_connection_is_reconnected_and_the_batch_sent_again() {
    let t = case("reconnect", 100, None);
    let mut c = redis();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(&mut sink, &[row(1, 0, 1, 0, false)]);
    // Kill the sink's connection (named after its job).
    let name = format!("streamc:{}", t.spec.feed.job);
    let list = c.cmd(&["CLIENT", "LIST"]).unwrap();
    let id = list
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no client named {name}"))
        .to_string();
    let killed = c.cmd(&["CLIENT", "KILL", "ID", &id]).unwrap();
    assert_eq!(killed.as_int(), Some(1));
    write(
        &mut sink,
        &[row(1, 1000, 2, 0, false), row(1, 0, 5, 1, false)],
    );
    let w = windows(&mut c, &format!("{}:views:1", t.prefix));
    assert_eq!(w.len(), 2);
    assert_eq!(w[0]["views"], json!(5));
    assert_eq!(log(&mut c, &t.spec.stream).len(), 3);
    // A Redis that lost its scripts (a restart, SCRIPT FLUSH) gets the script again.
    assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]).unwrap().as_str(), Some("OK"));
    write(&mut sink, &[row(1, 2000, 1, 0, false)]);
    assert_eq!(windows(&mut c, &format!("{}:views:1", t.prefix)).len(), 3);
}

#[test]
fn a_key_of_another_type_fails_the_sink_naming_the_key() {
    let t = case("wrongtype", 100, None);
    let mut c = redis();
    let key = format!("{}:views:1", t.prefix);
    assert!(matches!(
        c.cmd(&["SET", &key, "x"]).unwrap(),
        Value::Status(_)
    ));
    let mut sink = RedisSink::open(&t.spec).unwrap();
    sink.write(None, row(1, 0, 1, 0, false).as_bytes()).unwrap();
    let e = sink.flush().unwrap_err().to_string();
    assert!(e.contains(&key) && e.contains("WRONGTYPE"), "{e}");
}

#[test]
fn a_row_that_is_not_a_window_result_is_an_error() {
    let t = case("notarow", 100, None);
    let mut sink = RedisSink::open(&t.spec).unwrap();
    let e = sink
        .write(None, br#"{"user_id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("window_start"), "{e}");
    assert!(sink.write(None, b"not json").is_err());
}

#[test]
fn no_redis_is_an_error_at_open() {
    let mut t = case("nothing", 100, None);
    t.spec.url = Some("redis://127.0.0.1:1".into());
    assert!(RedisSink::open(&t.spec).is_err());
    t.spec.url = Some("http://x".into());
    let e = RedisSink::open(&t.spec).err().unwrap().to_string();
    assert!(e.contains("redis://"), "{e}");
}

#[test]
fn progress_is_stored_and_published() {
    let t = case("progress", 100, None);
    let mut c = redis();
    let mut sub = subscribe("streamc:status");
    let mut sink = RedisSink::open(&t.spec).unwrap();
    let mut m = Metrics::new(["clicks"], ["views"], ["dashboard"]);
    m.sources[0].records_in = 1234;
    m.sources[0].watermark = 5000;
    m.flows[0].late = 2;
    assert!(sink.wants_progress());
    sink.progress(&m);
    sink.flush().unwrap();
    let job = &t.spec.feed.job;
    // Other jobs may publish progress meanwhile: read until ours.
    let n = loop {
        let n = notification(&mut sub);
        if n["job"].as_str() == Some(job) {
            break n;
        }
    };
    assert_eq!(n["sources"][0]["records_in"], json!(1234));
    assert_eq!(n["sources"][0]["watermark"], json!(5000));
    assert_eq!(n["flows"][0]["late"], json!(2));
    let stored = c.cmd(&["HGET", "streamc:status", job]).unwrap();
    let stored: Json = serde_json::from_str(stored.as_str().unwrap()).unwrap();
    assert_eq!(stored["sources"][0]["name"], json!("clicks"));
}

#[test]
fn the_change_log_is_bounded_near_its_length_and_ends_with_the_newest_change() {
    let mut t = case("bounded", 10_000, None);
    t.spec.stream_max_len = 200;
    let mut c = redis();
    let rows: Vec<String> = (0..2000u64)
        .map(|i| row(i % 7, i as i64 * 1000, i, 0, false))
        .collect();
    let mut sink = RedisSink::open(&t.spec).unwrap();
    write(&mut sink, &rows);
    let len = c.cmd(&["XLEN", &t.spec.stream]).unwrap().as_int().unwrap();
    // `MAXLEN ~`: Redis trims whole nodes (100 entries each by default), so the log
    // holds at least the length asked for and at most a node more.
    assert!((200..=400).contains(&len), "{len} entries");
    let last = log(&mut c, &t.spec.stream).pop().unwrap();
    assert_eq!(last.3["views"], json!(1999));
    // The sorted sets keep their windows whatever the log's length.
    assert_eq!(windows(&mut c, &format!("{}:views:0", t.prefix)).len(), 286);
}
