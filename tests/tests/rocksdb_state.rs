//! RocksDB state end to end: the same spec built with memory state and with
//! `state: {backend: rocksdb}` writes byte-identical outputs (results, late events,
//! dead letters): the window specs of `pipelines/` (tumbling with lateness, sliding,
//! merging sessions, every aggregate, chained flows), and a random out-of-order stream
//! over tumbling, sliding and session flows keyed by a string and a nullable integer,
//! run with a write-back cache of 16 entries per store (so nearly all state lives in
//! RocksDB) and with checkpoints (so snapshots of RocksDB stores are taken while it
//! runs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use streamc_tests::*;

/// `text` with its name suffixed, its relative input paths made absolute, and a
/// `state:` block for RocksDB (when `rocks`), written to `dir/<name>.yaml`.
fn variant(text: &str, dir: &Path, rocks: bool, extra: &str) -> std::path::PathBuf {
    let data = pipeline("data");
    let suffix = if rocks { "_rocksdb" } else { "_memory" };
    let mut text = text.replace("path: data/", &format!("path: {}/", data.display()));
    let name_at = text.find("\nname: ").expect("a name") + "\nname: ".len();
    let name_end = name_at + text[name_at..].find('\n').expect("a line");
    let name = text[name_at..name_end].trim().to_string();
    text.replace_range(name_at..name_end, &format!("{name}{suffix}"));
    text.push_str(extra);
    if rocks {
        let _ = writeln!(
            text,
            "\nstate: {{backend: rocksdb, path: {}}}",
            dir.join("state").display()
        );
    }
    let spec = dir.join(format!("{name}{suffix}.yaml"));
    std::fs::write(&spec, text).unwrap();
    spec
}

/// Sink names of a spec: the keys under `sinks:`.
fn sink_names(text: &str) -> Vec<String> {
    let at = text.find("\nsinks:\n").expect("sinks") + "\nsinks:\n".len();
    text[at..]
        .lines()
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.trim().split(':').next().map(str::to_string))
        .collect()
}

/// Builds and runs the memory and the RocksDB variant of `text`; returns every output
/// file of each, by name.
fn both(text: &str, extra: &str, env: &[(&str, &str)]) -> [Vec<(String, String)>; 2] {
    let sinks = sink_names(text);
    let source_at = text.find("\nsources:\n  ").expect("a source") + "\nsources:\n  ".len();
    let source = text[source_at..]
        .split(':')
        .next()
        .unwrap()
        .trim()
        .to_string();
    [false, true].map(|rocks| {
        let dir = tempfile::tempdir().unwrap();
        let spec = variant(text, dir.path(), rocks, extra);
        let bin = build(&spec, dir.path());
        let names: Vec<&str> = sinks.iter().map(String::as_str).collect();
        let mut args = outputs(dir.path(), &names);
        let dead = dir.path().join("dead.jsonl");
        args.extend([
            "--dead-letter".into(),
            format!("{source}={}", dead.display()),
        ]);
        let out = Command::new(&bin)
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} exited with {}\n{}",
            spec.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if rocks {
            assert!(
                dir.path().join("state").exists(),
                "the RocksDB state directory is made"
            );
        }
        let mut files: Vec<(String, String)> = sinks
            .iter()
            .map(|s| {
                let p = dir.path().join(format!("{s}.jsonl"));
                (s.clone(), std::fs::read_to_string(&p).unwrap_or_default())
            })
            .collect();
        files.push((
            "dead letters".into(),
            std::fs::read_to_string(&dead).unwrap_or_default(),
        ));
        files
    })
}

fn assert_same(name: &str, [memory, rocks]: [Vec<(String, String)>; 2]) {
    assert!(
        memory.iter().any(|(_, text)| !text.is_empty()),
        "{name}: some output"
    );
    for ((sink, m), (_, r)) in memory.iter().zip(&rocks) {
        assert!(
            m == r,
            "{name}: sink `{sink}` differs\nmemory:\n{m}\nrocksdb:\n{r}"
        );
    }
}

#[test]
fn the_window_specs_give_the_same_bytes_on_both_backends() {
    for name in ["tumbling", "sliding", "sessions", "aggregates", "chained"] {
        let text = std::fs::read_to_string(pipeline(&format!("{name}.yaml"))).unwrap();
        assert_same(name, both(&text, "", &[]));
    }
}

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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const RANDOM_SPEC: &str = "version: 1
name: rocks_random

sources:
  ev:
    file: { path: EVENTS }
    schema:
      user: string
      n: i64?
      v: i64
      ts: i64
    event_time: ts
    watermark:
      max_out_of_orderness: 2s

flows:
  per_second:
    from: ev
    steps:
      - key_by: [user, n]
      - window:
          tumbling: 1s
          allowed_lateness: 1s
      - aggregate:
          c: count()
          total: sum(v)
          last_v: last(v)
    to: [tumbling_out]
    late: tumbling_late
  rolling:
    from: ev
    steps:
      - key_by: [user]
      - window:
          sliding: { size: 3s, slide: 1s }
          allowed_lateness: 500ms
      - aggregate:
          c: count()
          biggest: max(v)
    to: [sliding_out]
    late: sliding_late
  visits:
    from: ev
    steps:
      - key_by: [n]
      - window:
          session: { gap: 700ms }
          allowed_lateness: 2s
      - aggregate:
          c: count()
          users: count_distinct(user)
    to: [session_out]
    late: session_late

sinks:
  tumbling_out: { file: { path: out/t.jsonl } }
  tumbling_late: { file: { path: out/tl.jsonl } }
  sliding_out: { file: { path: out/s.jsonl } }
  sliding_late: { file: { path: out/sl.jsonl } }
  session_out: { file: { path: out/w.jsonl } }
  session_late: { file: { path: out/wl.jsonl } }
";

#[test]
fn a_random_stream_spilling_to_rocksdb_gives_the_same_bytes() {
    let seed: u64 = std::env::var("STREAMC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0012);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut text = String::new();
    for i in 0..20_000i64 {
        let user = match rng.below(4) {
            0 => format!("u{}", rng.below(3)),
            1 => format!("user\\u0000{}", rng.below(50)),
            _ => format!("u{}", rng.below(400)),
        };
        let n = match rng.below(10) {
            0 => "null".to_string(),
            1 => format!("{}", -(rng.below(5) as i64)),
            _ => format!("{}", rng.below(40)),
        };
        let late = if rng.below(50) == 0 { 4000 } else { 0 };
        let ts = 1_000_000 + i * 5 - rng.below(2500) as i64 - late;
        let v = rng.below(1000) as i64 - 500;
        let _ = writeln!(
            text,
            "{{\"user\":\"{user}\",\"n\":{n},\"v\":{v},\"ts\":{ts}}}"
        );
        if rng.below(500) == 0 {
            text.push_str("{\"user\": 5}\n"); // a dead letter
        }
    }
    std::fs::write(&events, text).unwrap();
    let spec = RANDOM_SPEC.replace("EVENTS", &events.display().to_string());
    let cache = [("STREAMC_ROCKSDB_CACHE_ENTRIES", "16")];
    assert_same("random", both(&spec, "", &cache));
    // With checkpoints: stores snapshotted (full and delta) while the job runs.
    let ck = format!(
        "\ncheckpoint: {{interval: 20ms, storage: {}}}\n",
        dir.path().join("ck").display()
    );
    assert_same("random with checkpoints", both(&spec, &ck, &cache));
}
