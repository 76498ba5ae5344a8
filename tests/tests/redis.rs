//! End to end through Redis: a generated binary with a Redis sink (real Redis, from
//! `scripts/redis start`; `STREAMC_REDIS` or redis://127.0.0.1:6379) on an input with
//! session merges (retractions) and late corrections. Redis must hold exactly the final
//! upsert view of the same rows written to a file, and a second run over the same input
//! (a replay after a restart) must change nothing: no key, no change-log entry.
//!
//! The test uses Redis database 9 of its own and empties it first (holding a lock, so
//! that two runs on one machine take turns).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use streamc_runtime::redis::conn::Conn;
use streamc_runtime::redis::resp::{RedisUrl, Value as Reply};
use streamc_tests::*;

const DB: u32 = 9;

/// `STREAMC_REDIS` (or the default) with our database.
fn url() -> String {
    let base = std::env::var("STREAMC_REDIS")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let rest = base.trim().trim_start_matches("redis://");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("redis://{host}/{DB}")
}

fn redis() -> Conn {
    let u = url();
    Conn::connect(&RedisUrl::parse(&u).unwrap()).unwrap_or_else(|e| {
        panic!("no Redis answers at {u} ({e}): run `scripts/redis start` (or set STREAMC_REDIS)")
    })
}

fn strs(v: &Reply) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v:?}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Events of 12 users in bursts, out of order by up to 3 s (the watermark allows 1 s):
/// sessions fire, then late events within the 30 s lateness correct them or bridge two
/// fired sessions (a merge: both retracted, the cover fires).
fn events() -> Vec<String> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut out = Vec::new();
    let mut t: i64 = 0;
    for i in 0..3000 {
        t += next(400) as i64;
        let user = next(12);
        let jitter = next(3000) as i64;
        let ts = (t - jitter).max(0);
        let amount = if i % 7 == 0 {
            "null".to_string()
        } else {
            format!("{}.5", next(100))
        };
        out.push(format!(
            r#"{{"user":"u{user}","ts":{ts},"amount":{amount}}}"#
        ));
        // Now and then a pause longer than the gap, so sessions end.
        if next(50) == 0 {
            t += 8000;
        }
    }
    out
}

/// Every window kept in Redis, by (user, window_start, window_end) as `upsert_view` keys.
fn redis_view(c: &mut Conn) -> BTreeMap<String, Value> {
    let keys = strs(&c.cmd(&["KEYS", "sessions:*"]).unwrap());
    let mut view = BTreeMap::new();
    for k in keys {
        for m in strs(&c.cmd(&["ZRANGE", &k, "0", "-1"]).unwrap()) {
            let r: Value = serde_json::from_str(&m).unwrap();
            assert_eq!(format!("sessions:{}", r["user"].as_str().unwrap()), k);
            let key = format!("{}|{}|{}", r["user"], r["window_start"], r["window_end"]);
            assert!(view.insert(key, r).is_none());
        }
    }
    view
}

fn log_len(c: &mut Conn) -> i64 {
    c.cmd(&["XLEN", "streamc:changes"])
        .unwrap()
        .as_int()
        .unwrap()
}

#[test]
fn redis_holds_the_final_upsert_view_and_a_replay_changes_nothing() {
    let _lock = redis_db_lock(DB);
    let mut c = redis();
    assert!(matches!(c.cmd(&["FLUSHDB"]).unwrap(), Reply::Status(_)));
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("redis_sessions.yaml"), dir.path());
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, events().join("\n") + "\n").unwrap();
    let mut args = outputs(dir.path(), &["results"]);
    args.extend([
        "--input".to_string(),
        format!("events={}", input.display()),
        "--redis".to_string(),
        url(),
    ]);
    run(&bin, &args);

    let rows = read_jsonl(&dir.path().join("results.jsonl"));
    let retractions = rows
        .iter()
        .filter(|r| r["retracted"] == json!(true))
        .count();
    let corrections = rows
        .iter()
        .filter(|r| r["revision"].as_u64() > Some(0) && r.get("retracted").is_none())
        .count();
    assert!(
        retractions > 5 && corrections > 5,
        "the input should exercise merges and corrections: {retractions} retractions, {corrections} corrections"
    );
    let expected = upsert_view(&rows, &["user"]);
    let got = redis_view(&mut c);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);

    // Every row that changed Redis is one change-log entry, in the file's order.
    let logged = log_len(&mut c);
    let entries = c.cmd(&["XRANGE", "streamc:changes", "-", "+"]).unwrap();
    let ops: Vec<String> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = strs(&e.as_array().unwrap()[1]);
            f[f.iter().position(|x| x == "op").unwrap() + 1].clone()
        })
        .collect();
    assert_eq!(ops.len() as i64, logged);
    assert_eq!(
        ops.iter().filter(|o| *o == "retract").count(),
        retractions,
        "each retraction of a shown window is logged once"
    );
    assert!(logged <= rows.len() as i64);
    // The feed and the job's final progress are there.
    let feed = c
        .cmd(&["HGET", "streamc:feeds", "redis_sessions.dashboard"])
        .unwrap();
    let feed: Value = serde_json::from_str(feed.as_str().unwrap()).unwrap();
    assert_eq!(feed["flow"], json!("user_sessions"));
    assert_eq!(feed["key_fields"], json!(["user"]));
    assert_eq!(
        feed["aggregates"],
        json!(["events", "first_seen", "last_seen", "spent"])
    );
    assert_eq!(feed["window"], json!("session gap 5s, lateness 30s"));
    let status = c
        .cmd(&["HGET", "streamc:status", "redis_sessions"])
        .unwrap();
    let status: Value = serde_json::from_str(status.as_str().unwrap()).unwrap();
    assert_eq!(status["sources"][0]["records_in"], json!(3000));
    assert_eq!(status["sources"][0]["watermark"], json!(i64::MAX), "ended");
    let ttl = c.cmd(&["PTTL", "sessions:u1"]).unwrap().as_int().unwrap();
    assert!(ttl > 3_500_000, "ttl 1h: {ttl}");

    // The same input again: a restarted job replays it.
    run(&bin, &args);
    assert_eq!(redis_view(&mut c), expected);
    assert_eq!(log_len(&mut c), logged, "a replay logs nothing");
}

#[test]
fn no_redis_fails_the_job_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("redis_sessions.yaml"), dir.path());
    let out = std::process::Command::new(&bin)
        .args(outputs(dir.path(), &["results"]))
        .args(["--redis", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sink `dashboard`") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}
