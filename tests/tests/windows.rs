//! End to end: build the window specs in `pipelines/`, run them on their input files,
//! check the final upsert view, the emission sequence where it matters, the late output
//! and the dead-letter output. The expected values are worked out by hand from
//! `pipeline-spec.md` (comments give the reasoning).

use serde_json::{Value, json};
use streamc_tests::*;

fn row<'a>(view: &'a std::collections::BTreeMap<String, Value>, key: &str) -> &'a Value {
    view.get(key)
        .unwrap_or_else(|| panic!("no row {key} in {:#?}", view.keys().collect::<Vec<_>>()))
}

#[test]
fn tumbling_lateness_late_output_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("tumbling.yaml"), dir.path());
    let mut args = outputs(dir.path(), &["results", "late_events"]);
    let dl = dir.path().join("dead.jsonl");
    args.extend(["--dead-letter".into(), format!("events={}", dl.display())]);
    run(&bin, &args);

    let rows = read_jsonl(&dir.path().join("results.jsonl"));
    // ts 12500 moves the watermark to 10500: [0,10s) fires for a and b (revision 0);
    // then a's ts 9000 is late but within the 5 s lateness: a fires again at once with
    // revision 1 and the corrected count.
    let a0: Vec<&Value> = rows
        .iter()
        .filter(|r| r["user"] == "a" && r["window_start"] == 0)
        .collect();
    assert_eq!(a0.len(), 2, "{rows:#?}");
    assert_eq!(
        (a0[0]["views"].clone(), a0[0]["revision"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        (a0[1]["views"].clone(), a0[1]["revision"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(a0[1]["total"], json!(5));

    let view = upsert_view(&rows, &["user"]);
    assert_eq!(view.len(), 5, "{view:#?}");
    let expect = [
        ("\"a\"|0|10000", 2, 5, 1),
        ("\"b\"|0|10000", 1, 2, 0),
        ("\"a\"|10000|20000", 1, 3, 0),
        ("\"b\"|10000|20000", 1, 5, 0),
        ("\"c\"|10000|20000", 1, 7, 0),
    ];
    for (key, views, total, revision) in expect {
        let r = row(&view, key);
        assert_eq!(r["views"], json!(views), "{key}");
        assert_eq!(r["total"], json!(total), "{key}");
        assert_eq!(r["revision"], json!(revision), "{key}");
        assert!(r.get("retracted").is_none(), "{key}");
    }
    // Windows fire in order of their end.
    let ends: Vec<i64> = rows
        .iter()
        .map(|r| r["window_end"].as_i64().unwrap())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] <= w[1]), "{ends:?}");

    // ts 7000 arrives at watermark 16000: [0,10s) was purged at 15000, too late. It goes
    // to the late output byte for byte, and never touches results.
    let late = std::fs::read_to_string(dir.path().join("late_events.jsonl")).unwrap();
    assert_eq!(late, "{\"user\":\"a\",\"value\":6,\"ts\":7000}\n");

    // Three invalid lines, with their 0-based line numbers as offsets.
    let dead = read_jsonl(&dl);
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let offsets: Vec<i64> = dead.iter().map(|d| d["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [5, 6, 8]);
    assert_eq!(dead[0]["raw"], "{\"user\":\"a\",\"value\":\"x\",\"ts\":1}");
    assert_eq!(dead[1]["raw"], "not json");
    assert!(
        dead[2]["error"].as_str().unwrap().contains("value"),
        "{}",
        dead[2]
    );
    for d in &dead {
        assert_eq!(d["source"], "events");
        assert_eq!(d["partition"], 0);
        let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["error", "offset", "partition", "raw", "source"]);
    }
}

#[test]
fn sessions_merge_retract_and_late() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("sessions.yaml"), dir.path());
    run(&bin, &outputs(dir.path(), &["results", "late_events"]));
    let rows = read_jsonl(&dir.path().join("results.jsonl"));

    // a: 1000, 3000 → [1000, 8000); b: [4000, 9000). ts 20000 fires both (revision 0).
    // a: 9000 opens [9000, 14000), already complete: fires at once, revision 0.
    // a: 8000 bridges [1000, 8000) and [9000, 14000) into [1000, 14000): both absorbed
    // windows are retracted, and the merged one fires at once with revision 1.
    let retracted: Vec<(i64, i64, i64)> = rows
        .iter()
        .filter(|r| r.get("retracted") == Some(&json!(true)))
        .map(|r| {
            (
                r["window_start"].as_i64().unwrap(),
                r["window_end"].as_i64().unwrap(),
                r["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = retracted.clone();
    sorted.sort();
    assert_eq!(sorted, [(1000, 8000, 0), (9000, 14000, 0)], "{rows:#?}");

    let view = upsert_view(&rows, &["user"]);
    let merged = row(&view, "\"a\"|1000|14000");
    assert_eq!(merged["events"], 4);
    assert_eq!(merged["first_seen"], 1000);
    assert_eq!(merged["last_seen"], 9000);
    assert_eq!(merged["revision"], 1);
    assert_eq!(row(&view, "\"b\"|4000|9000")["events"], 1);
    assert_eq!(row(&view, "\"a\"|20000|25000")["events"], 1);
    assert_eq!(row(&view, "\"c\"|100000|105000")["events"], 1);
    assert_eq!(view.len(), 4, "{view:#?}");

    // After c's 100000 every earlier session is purged (end + 30 s <= watermark); a's
    // 2000 opens [2000, 7000), which touches nothing and is past its lateness: too late.
    let late = std::fs::read_to_string(dir.path().join("late_events.jsonl")).unwrap();
    assert_eq!(late, "{\"user\":\"a\",\"ts\":2000}\n");
}

#[test]
fn sliding_global_window_partial_lateness() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("sliding.yaml"), dir.path());
    run(&bin, &outputs(dir.path(), &["results", "late_readings"]));
    let rows = read_jsonl(&dir.path().join("results.jsonl"));
    let view = upsert_view(&rows, &[]);
    // (start, end, n, total, biggest). ts 4200 fires every window ending by 4200; 1200
    // then belongs only to fired-and-purged windows (lateness 0): too late. 3900 is too
    // late for [1000, 4000) but counts in [2000, 5000) and [3000, 6000).
    let expect = [
        (-2000, 1000, 1, 1, 1),
        (-1000, 2000, 2, 3, 2),
        (0, 3000, 3, 6, 3),
        (1000, 4000, 2, 5, 3),
        (2000, 5000, 3, 12, 5),
        (3000, 6000, 2, 9, 5),
        (4000, 7000, 1, 4, 4),
    ];
    assert_eq!(view.len(), expect.len(), "{view:#?}");
    for (s, e, n, total, biggest) in expect {
        let r = row(&view, &format!("{s}|{e}"));
        assert_eq!(
            (&r["n"], &r["total"], &r["biggest"]),
            (&json!(n), &json!(total), &json!(biggest)),
            "[{s}, {e})"
        );
    }
    let late = std::fs::read_to_string(dir.path().join("late_readings.jsonl")).unwrap();
    assert_eq!(late, "{\"v\":10,\"ts\":1200}\n");
}

#[test]
fn chained_flows_share_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&pipeline("chained.yaml"), dir.path());
    let sinks = ["big", "per_shop_out", "busy", "totals", "big_counts"];
    run(&bin, &outputs(dir.path(), &sinks));
    let read = |s: &str| read_jsonl(&dir.path().join(format!("{s}.jsonl")));

    let big = read("big");
    let cents: Vec<f64> = big
        .iter()
        .map(|r| r["amount_cents"].as_f64().unwrap())
        .collect();
    assert_eq!(cents, [15000.0, 20000.0, 12050.0]);
    assert_eq!(big[0]["shop"], "x");
    assert_eq!(big[0]["ts"], 2000);

    let per_shop = upsert_view(&read("per_shop_out"), &["shop"]);
    assert_eq!(per_shop.len(), 4);
    assert_eq!(row(&per_shop, "\"x\"|0|10000")["n"], 2);
    assert_eq!(row(&per_shop, "\"x\"|0|10000")["revenue"], 200.0);
    assert_eq!(row(&per_shop, "\"y\"|10000|20000")["revenue"], 120.5);

    // A stateless flow over window results: only x's first window has n >= 2.
    let busy = read("busy");
    assert_eq!(busy.len(), 1, "{busy:#?}");
    assert_eq!(
        (&busy[0]["shop"], &busy[0]["window_start"], &busy[0]["n"]),
        (&json!("x"), &json!(0), &json!(2))
    );

    // A global window over window results (each result at event time window_end - 1).
    let totals = upsert_view(&read("totals"), &[]);
    assert_eq!(totals.len(), 2, "{totals:#?}");
    assert_eq!(row(&totals, "0|10000")["shops"], 2);
    assert_eq!(row(&totals, "0|10000")["revenue"], 400.0);
    assert_eq!(row(&totals, "10000|20000")["revenue"], 130.5);

    // A windowed flow reading a stateless flow.
    let big_counts = upsert_view(&read("big_counts"), &["shop"]);
    assert_eq!(big_counts.len(), 3, "{big_counts:#?}");
    assert_eq!(row(&big_counts, "\"y\"|0|10000")["big"], 1);
}
