//! End to end: expressions at the documented depth limit (docs/pipeline-spec.md,
//! "Limits") compile into a binary (no rustc error) and compute what SQL says.

use serde_json::json;
use streamc::spec::expr::MAX_DEPTH;
use streamc_tests::*;

fn nest(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

#[test]
fn expressions_at_the_depth_limit_build_and_compute() {
    let dir = tempfile::tempdir().unwrap();
    let sum = vec!["v"; MAX_DEPTH].join(" + ");
    let all = vec!["v >= 0"; MAX_DEPTH - 1].join(" AND ");
    let nots = format!("{}b", "NOT ".repeat(MAX_DEPTH - 2));
    let cases = nest("CASE WHEN b THEN ", "v", " ELSE 0 END", MAX_DEPTH - 1);
    let abs = nest("abs(", "v", ")", MAX_DEPTH - 1);
    let right = nest("v - (", "v", ")", MAX_DEPTH / 2 - 1);
    let spec = format!(
        r#"version: 1
name: deep_exprs
sources:
  events:
    file: {{ path: in.jsonl }}
    schema: {{ v: i64, b: bool, ts: timestamp }}
    event_time: ts
flows:
  deep:
    from: events
    steps:
      - map:
          sum: "{sum}"
          all: "{all}"
          nots: "{nots}"
          cases: "{cases}"
          abs: "{abs}"
          right: "{right}"
    to: [out]
sinks:
  out: {{ file: {{ path: out.jsonl }} }}
dead_letter: {{ file: {{ path: bad.jsonl }} }}
"#
    );
    let spec_path = dir.path().join("deep.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"v\": 3, \"b\": true, \"ts\": 1}\n{\"v\": -2, \"b\": false, \"ts\": 2}\n",
    )
    .unwrap();
    let bin = build(&spec_path, dir.path());
    run(&bin, &[]);
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let n = MAX_DEPTH as i64;
    assert_eq!(rows[0]["sum"], json!(3 * n));
    assert_eq!(rows[1]["sum"], json!(-2 * n));
    assert_eq!(rows[0]["all"], json!(true));
    assert_eq!(rows[1]["all"], json!(false));
    // An even number of NOTs.
    assert_eq!(rows[0]["nots"], json!(true));
    assert_eq!(rows[1]["nots"], json!(false));
    assert_eq!(rows[0]["cases"], json!(3));
    assert_eq!(rows[1]["cases"], json!(0));
    assert_eq!(rows[0]["abs"], json!(3));
    assert_eq!(rows[1]["abs"], json!(2));
    // v - (v - (... - v)) with k minus signs is v when k is even, 0 when odd.
    let k = MAX_DEPTH / 2 - 1;
    let want = |v: i64| if k.is_multiple_of(2) { v } else { 0 };
    assert_eq!(rows[0]["right"], json!(want(3)));
    assert_eq!(rows[1]["right"], json!(want(-2)));
}
