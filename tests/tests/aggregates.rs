//! End to end: every aggregate function and expression function on a small input whose
//! results are worked out by hand (`pipelines/aggregates.yaml`).

use serde_json::{Value, json};
use streamc_tests::*;

fn close(v: &Value, want: f64, rel: f64) -> bool {
    v.as_f64()
        .is_some_and(|x| (x - want).abs() <= rel * want.abs())
}

#[test]
fn every_aggregate_with_sql_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("aggregates.yaml"), dir.path());
    run(
        &bin,
        &outputs(dir.path(), &["aggregates_out", "functions_out"]),
    );

    let rows = read_jsonl(&dir.path().join("aggregates_out.jsonl"));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(
        (r["window_start"].clone(), r["window_end"].clone()),
        (json!(0), json!(60000))
    );
    assert_eq!(r["c_all"], 5);
    assert_eq!(r["c_n"], 3, "null and missing n are not counted");
    assert_eq!(r["c_if"], 3);
    assert_eq!(r["sum_n"], 8);
    assert_eq!(r["sum_x"], 20.0);
    assert_eq!(r["min_s"], "c");
    assert_eq!(r["max_x"], 10.0);
    assert_eq!(r["avg_x"], 4.0);
    // first by event time: ts 1000 has "c" and null (skipped); last: ts 9000 has "z"
    // then "q", the later arrival wins the tie.
    assert_eq!(r["first_s"], "c");
    assert_eq!(r["last_s"], "q");
    assert_eq!(r["distinct_k"], 3);
    assert_eq!(r["approx_k"], 3);
    // x sorted: 1 2 3 4 10; rank floor(0.5 * 4) = 2 -> 3, within 1 %.
    assert!(close(&r["p50"], 3.0, 0.01), "{}", r["p50"]);
    // A ratio of counts is a float.
    assert_eq!(r["ratio"], 0.6);
    assert!(
        close(&r["per_n"], 20.0 / 3.0 + 1.0, 1e-12),
        "{}",
        r["per_n"]
    );
    assert_eq!(r["revision"], 0);
}

#[test]
fn expression_functions_and_null_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("aggregates.yaml"), dir.path());
    run(
        &bin,
        &outputs(dir.path(), &["aggregates_out", "functions_out"]),
    );
    let rows = read_jsonl(&dir.path().join("functions_out.jsonl"));
    assert_eq!(rows.len(), 5);
    let col = |name: &str| -> Vec<Value> { rows.iter().map(|r| r[name].clone()).collect() };
    // Input fields come first, unchanged; missing optional fields are null.
    assert_eq!(
        col("k"),
        [json!("a"), json!("b"), json!("a"), json!("c"), json!("b")]
    );
    assert_eq!(
        col("n"),
        [json!(1), Value::Null, Value::Null, json!(5), json!(2)]
    );
    assert_eq!(
        col("up"),
        [
            json!("M"),
            json!("C"),
            json!("NONE"),
            json!("Z"),
            json!("Q")
        ]
    );
    assert_eq!(col("len"), vec![json!(1); 5]);
    assert_eq!(
        col("has_a"),
        [
            json!(true),
            json!(false),
            json!(true),
            json!(false),
            json!(false)
        ]
    );
    assert_eq!(
        col("sw"),
        [
            json!(true),
            json!(false),
            json!(false),
            json!(false),
            json!(false)
        ]
    );
    // round half away from zero: 1.5 -> 2, 4.5 -> 5.
    assert_eq!(
        col("rx"),
        [json!(2.0), json!(3.0), json!(5.0), json!(6.0), json!(15.0)]
    );
    assert_eq!(
        col("fl"),
        [json!(0.0), json!(0.0), json!(0.0), json!(1.0), json!(2.0)]
    );
    // Integer division; NULL propagates; division by zero is NULL, never a crash.
    assert_eq!(
        col("half"),
        [json!(0), Value::Null, Value::Null, json!(2), json!(1)]
    );
    assert_eq!(col("modz"), vec![Value::Null; 5]);
    assert_eq!(
        col("kind"),
        [
            json!("small"),
            json!("mid"),
            json!("mid"),
            json!("big"),
            json!("big")
        ]
    );
    assert_eq!(
        col("in_ab"),
        [
            json!(true),
            json!(true),
            json!(true),
            json!(false),
            json!(true)
        ]
    );
    assert_eq!(
        col("n_null"),
        [
            json!(false),
            json!(true),
            json!(true),
            json!(false),
            json!(false)
        ]
    );
    assert_eq!(
        col("neg"),
        [json!(1), Value::Null, Value::Null, json!(5), json!(2)]
    );
}
