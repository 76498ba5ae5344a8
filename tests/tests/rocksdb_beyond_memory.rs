//! State larger than the memory the job uses: one tumbling window holding 300,000 keys
//! (each with an exact distinct-count set), run with memory state and with RocksDB
//! state behind a write-back cache of 1,000 entries per store. Both give the exact
//! answer, computed here from the input independently of the runtime, and the RocksDB
//! run's peak resident set (VmHWM from /proc, sampled while it runs) stays well below
//! the memory run's (measured here: 83 MiB against 145 MiB; RocksDB's own memory, its
//! 32 MiB block cache and two 8 MiB memtables, is most of it). The figures are printed
//! (`--nocapture`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use streamc_tests::*;

const KEYS: u64 = 300_000;
const EVENTS: u64 = 3_000_000;

/// A small deterministic generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn spec(events: &Path, out: &Path, state: Option<&Path>) -> String {
    let state = state.map_or(String::new(), |p| {
        format!("state: {{ backend: rocksdb, path: {} }}\n", p.display())
    });
    let name = if state.is_empty() {
        "big_memory"
    } else {
        "big_rocksdb"
    };
    format!(
        "version: 1
name: {name}
sources:
  ev:
    file: {{ path: {events} }}
    schema: {{ user: string, v: i64, ts: i64 }}
    event_time: ts
flows:
  per_user:
    from: ev
    steps:
      - key_by: [user]
      - window: {{ tumbling: 1h }}
      - aggregate: {{ n: count(), total: sum(v), values: count_distinct(v) }}
    to: [out]
sinks:
  out: {{ file: {{ path: {out} }} }}
{state}",
        events = events.display(),
        out = out.display(),
    )
}

/// Runs `bin` to its end; its peak resident set in KiB.
fn run_measured(bin: &Path, env: &[(&str, &str)]) -> u64 {
    let mut child = Command::new(bin)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.success(),
        "{} exited with {status}:\n{err}",
        bin.display()
    );
    peak
}

/// user → (n, total, distinct values) from the output.
fn read_results(path: &Path) -> HashMap<String, (u64, i64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut got = HashMap::new();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = r["user"].as_str().unwrap().to_string();
        let row = (
            r["n"].as_u64().unwrap(),
            r["total"].as_i64().unwrap(),
            r["values"].as_u64().unwrap(),
        );
        assert!(got.insert(user, row).is_none(), "one row per key: {line}");
    }
    got
}

#[test]
fn rocksdb_state_beyond_the_memory_it_uses_gives_the_exact_answer() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // The input, and the expected answer worked out from it directly.
    let mut expected: HashMap<String, (u64, i64, std::collections::HashSet<i64>)> =
        HashMap::with_capacity(KEYS as usize);
    let mut rng = Rng(0xb16_5747e);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
    let mut line = String::new();
    for i in 0..EVENTS {
        let key = rng.next() % KEYS;
        let user = format!("user-{key:012}-with-a-longish-name-for-its-key");
        let v = (rng.next() % 1_000_000) as i64;
        let ts = 1_700_000_000_000 + (i / 1000) as i64;
        line.clear();
        let _ = writeln!(line, "{{\"user\":\"{user}\",\"v\":{v},\"ts\":{ts}}}");
        file.write_all(line.as_bytes()).unwrap();
        let e = expected.entry(user).or_default();
        e.0 += 1;
        e.1 += v;
        e.2.insert(v);
    }
    file.flush().unwrap();
    drop(file);
    let expected: HashMap<String, (u64, i64, u64)> = expected
        .into_iter()
        .map(|(k, (n, t, d))| (k, (n, t, d.len() as u64)))
        .collect();

    let mut peaks = Vec::new();
    for rocks in [false, true] {
        let sub = dir.path().join(if rocks { "rocksdb" } else { "memory" });
        std::fs::create_dir_all(&sub).unwrap();
        let out = sub.join("out.jsonl");
        let state = sub.join("state");
        let spec_path = sub.join("job.yaml");
        std::fs::write(&spec_path, spec(&events, &out, rocks.then_some(&*state))).unwrap();
        let bin = build(&spec_path, &sub);
        let started = std::time::Instant::now();
        let peak = run_measured(&bin, &[("STREAMC_ROCKSDB_CACHE_ENTRIES", "1000")]);
        let took = started.elapsed();
        let got = read_results(&out);
        assert_eq!(got.len(), expected.len(), "rocksdb: {rocks}");
        for (user, want) in &expected {
            assert_eq!(got.get(user), Some(want), "rocksdb: {rocks}, {user}");
        }
        println!(
            "{} state: {KEYS} keys, {EVENTS} events: peak RSS {} MiB, {:.1} s",
            if rocks { "RocksDB" } else { "memory" },
            peak / 1024,
            took.as_secs_f64()
        );
        peaks.push(peak);
    }
    assert!(
        peaks[1] * 4 < peaks[0] * 3,
        "RocksDB state's peak RSS ({} KiB) is not well below memory state's ({} KiB)",
        peaks[1],
        peaks[0]
    );
}
