//! End to end against the real broker of `scripts/kafka` (start it first; the test
//! command does): generated pipelines reading and writing Kafka topics, fed and read
//! back with Debian's `kcat`. Each test makes its own topics.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use streamc_tests::kafka::*;
use streamc_tests::*;

fn ev(user: &str, value: i64, ts: i64) -> String {
    format!(r#"{{"user":"{user}","value":{value},"ts":{ts}}}"#)
}

/// (user, window_start) -> (views, total) of an upsert view.
fn counts(rows: &[Value]) -> BTreeMap<(String, i64), (i64, i64)> {
    upsert_view(rows, &["user"])
        .values()
        .map(|r| {
            (
                (
                    r["user"].as_str().unwrap_or_default().to_string(),
                    r["window_start"].as_i64().unwrap_or_default(),
                ),
                (
                    r["views"].as_i64().unwrap_or_default(),
                    r["total"].as_i64().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

fn spec(input: &str, out: &str, late: &str, dlq: &str, extra_source: &str) -> String {
    format!(
        r#"version: 1
name: kafka_e2e
sources:
  events:
    kafka: {{ topic: {input}, group_id: {input}-group }}
    schema: {{ user: string, value: i64, ts: timestamp }}
    event_time: ts
    watermark: {{ max_out_of_orderness: 3s{extra_source} }}
flows:
  per_user:
    from: events
    steps:
      - key_by: [user]
      - window: {{ tumbling: 10s }}
      - aggregate: {{ views: count(), total: sum(value) }}
    to: [results]
    late: late_events
sinks:
  results: {{ kafka: {{ topic: {out} }} }}
  late_events: {{ kafka: {{ topic: {late} }} }}
dead_letter:
  kafka: {{ topic: {dlq} }}
"#
    )
}

const FAR: i64 = 1_000_000;

#[test]
fn partitions_out_of_order_idle_partition_dead_letters_and_late_events() {
    let (input, out, late, dlq) = (unique("in"), unique("out"), unique("late"), unique("dlq"));
    create_topic(&input, 4);
    for t in [&out, &late, &dlq] {
        create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("kafka_e2e.yaml");
    std::fs::write(
        &spec_path,
        spec(&input, &out, &late, &dlq, ", idle_timeout: 2s"),
    )
    .unwrap();
    let bin = build(&spec_path, dir.path());

    // Out of order within each partition (by less than the 3 s bound, so nothing here is
    // late whatever the interleaving of partitions) and across partitions. Partition 3
    // stays empty: it must not hold the watermark back. Each partition ends with an
    // event far ahead, so every earlier window fires.
    produce(
        &input,
        0,
        &[
            ev("a", 1, 1000),
            ev("b", 2, 4000),
            ev("a", 3, 2500),
            ev("a", 4, 12000),
            ev("b", 5, 11000),
            ev("z", 0, FAR),
        ],
    );
    produce(
        &input,
        1,
        &[
            ev("b", 10, 3000),
            "garbage".to_string(),
            r#"{"user":"x","value":"nope","ts":1}"#.to_string(),
            ev("a", 20, 9000),
            ev("c", 30, 7000),
            ev("c", 40, 15000),
            ev("z", 0, FAR),
        ],
    );
    produce(
        &input,
        2,
        &[
            ev("c", 100, 500),
            ev("a", 200, 18000),
            ev("b", 300, 16000),
            ev("z", 0, FAR),
        ],
    );

    let port = free_port();
    let job = Running::start(
        &bin,
        &["--metrics-addr".into(), format!("127.0.0.1:{port}")],
    );
    let want: BTreeMap<(String, i64), (i64, i64)> = [
        (("a", 0), (3, 24)),
        (("b", 0), (2, 12)),
        (("c", 0), (2, 130)),
        (("a", 10000), (2, 204)),
        (("b", 10000), (2, 305)),
        (("c", 10000), (1, 40)),
    ]
    .into_iter()
    .map(|((u, s), v)| ((u.to_string(), s), v))
    .collect();
    let done = wait_for(Duration::from_secs(60), || {
        counts(&consume_json(&out)) == want
    });
    assert!(done, "results: {:#?}", counts(&consume_json(&out)));

    // The consumer lag of every partition, as Prometheus sees it, goes to zero.
    let lags = |body: &str| -> Vec<f64> {
        body.lines()
            .filter(|l| l.starts_with("streamc_kafka_consumer_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let caught_up = wait_for(Duration::from_secs(30), || {
        http_get(port, "/metrics").is_some_and(|b| {
            let l = lags(&b);
            l.len() == 4 && l.iter().all(|&x| x == 0.0)
        })
    });
    assert!(caught_up, "/metrics: {:?}", http_get(port, "/metrics"));

    // Now the watermark is near FAR: an event for [0, 10 s) is too late. It goes to the
    // late topic unchanged and never touches the results.
    let late_event = ev("a", 7, 5000);
    produce(&input, 0, std::slice::from_ref(&late_event));
    let got_late = wait_for(Duration::from_secs(30), || {
        consume(&late).iter().any(|m| m.payload == late_event)
    });
    let (status, stderr) = job.stop();
    assert!(got_late, "late topic: {:?}\n{stderr}", consume(&late));
    assert!(status.success(), "exit {status}\n{stderr}");
    assert_eq!(counts(&consume_json(&out)), want);

    // The message key is the JSON of the key fields and the window bounds.
    let keyed = consume(&out);
    let first_a = keyed
        .iter()
        .find(|m| m.payload.contains(r#""user":"a""#) && m.payload.contains(r#""window_start":0,"#))
        .expect("a result for a in [0, 10 s)");
    let key: Value = serde_json::from_str(first_a.key.as_deref().expect("a key")).unwrap();
    assert_eq!(
        key,
        json!({"user": "a", "window_start": 0, "window_end": 10000})
    );

    // Invalid records: to the dead-letter topic with their partition and offset.
    let dead = consume_json(&dlq);
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert_eq!(
        (dead[0]["partition"].clone(), dead[0]["offset"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(dead[0]["raw"], "garbage");
    assert_eq!(
        (dead[1]["partition"].clone(), dead[1]["offset"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(dead[1]["source"], "events");
}

#[test]
fn restart_resumes_from_committed_offsets_without_loss() {
    let (input, out, late, dlq) = (
        unique("rin"),
        unique("rout"),
        unique("rlate"),
        unique("rdlq"),
    );
    create_topic(&input, 2);
    for t in [&out, &late, &dlq] {
        create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("kafka_e2e.yaml");
    std::fs::write(&spec_path, spec(&input, &out, &late, &dlq, "")).unwrap();
    let bin = build(&spec_path, dir.path());
    let args = vec!["--commit-interval".to_string(), "300".to_string()];

    let a = |from: i64, to: i64| -> Vec<String> {
        (from..=to).step_by(2000).map(|t| ev("a", 1, t)).collect()
    };
    let b = |from: i64, to: i64| -> Vec<String> {
        (from..=to).step_by(2000).map(|t| ev("b", 1, t)).collect()
    };
    produce(&input, 0, &a(1000, 29000));
    produce(&input, 1, &b(2000, 28000));
    let job = Running::start(&bin, &args);
    // Watermark min(29 s, 28 s) - 3 s = 25 s: [0, 10 s) and [10 s, 20 s) fire; [20 s, 30 s)
    // is held in memory when the job stops.
    let fired = wait_for(Duration::from_secs(60), || {
        counts(&consume_json(&out)).len() == 4
    });
    std::thread::sleep(Duration::from_millis(800)); // a commit interval passes
    let (status, stderr) = job.stop();
    assert!(
        fired,
        "first run: {:#?}\n{stderr}",
        counts(&consume_json(&out))
    );
    assert!(status.success(), "exit {status}\n{stderr}");

    let mut p0 = a(31000, 59000);
    p0.push(ev("z", 0, FAR));
    let mut p1 = b(32000, 58000);
    p1.push(ev("z", 0, FAR));
    produce(&input, 0, &p0);
    produce(&input, 1, &p1);
    let job = Running::start(&bin, &args);
    let mut want = BTreeMap::new();
    for start in (0..60000).step_by(10000) {
        let a_n = (start..start + 10000).filter(|t| t % 2000 == 1000).count() as i64;
        let b_n = (start..start + 10000)
            .filter(|t| t % 2000 == 0 && *t >= 2000 && *t != 30000)
            .count() as i64;
        want.insert(("a".to_string(), start), (a_n, a_n));
        want.insert(("b".to_string(), start), (b_n, b_n));
    }
    let done = wait_for(Duration::from_secs(60), || {
        counts(&consume_json(&out)) == want
    });
    let (status, stderr) = job.stop();
    assert!(
        done,
        "after restart: {:#?}\nwant {want:#?}\n{stderr}",
        counts(&consume_json(&out))
    );
    assert!(status.success(), "exit {status}\n{stderr}");
}
