//! End to end on random out-of-order streams: the binary's final upsert view of a
//! tumbling and a sliding flow (one source, read once) against a direct model of
//! `pipeline-spec.md`: watermark = max event time - out-of-orderness, advanced after
//! every event; a window takes an event while `end + lateness > watermark`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use streamc_tests::*;

const OOO: i64 = 2000;
const LATENESS: i64 = 1000;

/// A small deterministic generator (splitmix64), so failures reproduce.
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

/// (key, start, end) -> (count, sum), plus the indexes of too-late events.
type Model = (BTreeMap<(u64, i64, i64), (u64, i64)>, Vec<usize>);

fn model(events: &[(u64, i64, i64)], windows_of: impl Fn(i64) -> Vec<(i64, i64)>) -> Model {
    let mut wm = i64::MIN;
    let mut view = BTreeMap::new();
    let mut late = Vec::new();
    for (i, &(k, v, ts)) in events.iter().enumerate() {
        let live: Vec<(i64, i64)> = windows_of(ts)
            .into_iter()
            .filter(|&(_, e)| e + LATENESS > wm)
            .collect();
        if live.is_empty() {
            late.push(i);
        }
        for (s, e) in live {
            let c = view.entry((k, s, e)).or_insert((0, 0));
            c.0 += 1;
            c.1 += v;
        }
        wm = wm.max(ts - OOO);
    }
    (view, late)
}

fn actual(rows: &[Value]) -> BTreeMap<(u64, i64, i64), (u64, i64)> {
    upsert_view(rows, &["k"])
        .values()
        .map(|r| {
            (
                (
                    r["k"].as_u64().unwrap(),
                    r["window_start"].as_i64().unwrap(),
                    r["window_end"].as_i64().unwrap(),
                ),
                (r["n"].as_u64().unwrap(), r["total"].as_i64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn tumbling_and_sliding_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("random.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"version: 1
name: random_streams
sources:
  events:
    file: {{ path: input.jsonl }}
    schema: {{ k: u64, v: i64, ts: timestamp }}
    event_time: ts
    watermark: {{ max_out_of_orderness: {OOO}ms }}
flows:
  tumbling:
    from: events
    steps:
      - key_by: [k]
      - window: {{ tumbling: 5s, allowed_lateness: {LATENESS}ms }}
      - aggregate: {{ n: count(), total: sum(v) }}
    to: [tumbling_out]
    late: tumbling_late
  sliding:
    from: events
    steps:
      - key_by: [k]
      - window: {{ sliding: {{ size: 6s, slide: 2s }}, allowed_lateness: {LATENESS}ms }}
      - aggregate: {{ n: count(), total: sum(v) }}
    to: [sliding_out]
    late: sliding_late
sinks:
  tumbling_out: {{ file: {{ path: out/t.jsonl }} }}
  tumbling_late: {{ file: {{ path: out/tl.jsonl }} }}
  sliding_out: {{ file: {{ path: out/s.jsonl }} }}
  sliding_late: {{ file: {{ path: out/sl.jsonl }} }}
"#
        ),
    )
    .unwrap();
    let bin = build(&spec, dir.path());

    for seed in 1..=3u64 {
        let mut rng = Rng(seed);
        let mut events = Vec::new();
        let mut clock = 0i64;
        for _ in 0..3000 {
            clock += rng.below(40) as i64;
            // Mostly within the out-of-orderness bound, sometimes far behind.
            let delay = match rng.below(100) {
                0..=79 => rng.below(OOO as u64) as i64,
                80..=94 => rng.below(3 * OOO as u64) as i64,
                _ => rng.below(12_000) as i64,
            };
            events.push((rng.below(20), rng.below(100) as i64 - 20, clock - delay));
        }
        let mut input = String::new();
        for (k, v, ts) in &events {
            writeln!(input, "{{\"k\":{k},\"v\":{v},\"ts\":{ts}}}").unwrap();
        }
        std::fs::write(dir.path().join("input.jsonl"), &input).unwrap();
        run(
            &bin,
            &outputs(
                dir.path(),
                &[
                    "tumbling_out",
                    "tumbling_late",
                    "sliding_out",
                    "sliding_late",
                ],
            ),
        );

        let tumbling = |ts: i64| {
            let s = ts - ts.rem_euclid(5000);
            vec![(s, s + 5000)]
        };
        let sliding = |ts: i64| {
            let last = ts - ts.rem_euclid(2000);
            (0..3)
                .map(|i| last - i * 2000)
                .map(|s| (s, s + 6000))
                .collect()
        };
        let lines: Vec<&str> = input.lines().collect();
        for (name, f) in [
            ("tumbling", &tumbling as &dyn Fn(i64) -> Vec<(i64, i64)>),
            ("sliding", &sliding),
        ] {
            let (want, late) = model(&events, f);
            let rows = read_jsonl(&dir.path().join(format!("{name}_out.jsonl")));
            let got = actual(&rows);
            assert_eq!(got.len(), want.len(), "{name} seed {seed}: window count");
            for (k, v) in &want {
                assert_eq!(got.get(k), Some(v), "{name} seed {seed}: window {k:?}");
            }
            let late_got =
                std::fs::read_to_string(dir.path().join(format!("{name}_late.jsonl"))).unwrap();
            let late_want: String = late.iter().map(|&i| format!("{}\n", lines[i])).collect();
            assert_eq!(late_got, late_want, "{name} seed {seed}: late events");
            assert!(!late.is_empty(), "the generator makes some events too late");
        }
    }
}
