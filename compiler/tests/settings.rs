//! No setting is accepted and then ignored: every setting a `Plan` carries either changes
//! the generated crate (what `streamc build` compiles) or is rejected by `streamc check`.
//!
//! Each variation edits one setting of a base spec. The plan types are destructured
//! exhaustively below, listing which variations cover each field: a new field of the plan
//! does not compile here until it is covered (or named as derived from covered ones).

use streamc::plan::{
    AccPlan, AggregatePlan, CheckpointPlan, DatagenPlan, FlowPlan, Plan, RedisPlan, S3Plan,
    ServePlan, SinkKind, SinkPlan, SourceKind, SourcePlan, StatePlan, WindowPlan,
};

const KAFKA: &str = r#"version: 1
name: job
sources:
  clicks:
    kafka:
      topic: clicks
      group_id: g1
      start: earliest
      properties: {fetch.wait.max.ms: "100"}
    schema:
      user_id: u64
      url: string
      amount: f64?
      ts: timestamp
    event_time: ts
    watermark:
      max_out_of_orderness: 2s
      idle_timeout: 5s
flows:
  per_user:
    from: clicks
    steps:
      - filter: "url <> ''"
      - map:
          cents: "coalesce(amount, 0) * 100"
      - key_by: [user_id]
      - window:
          tumbling: 10s
          allowed_lateness: 5s
      - aggregate:
          views: count()
          revenue: sum(cents)
    to: [out]
    late: late
sinks:
  out:
    kafka: {topic: views, properties: {linger.ms: "5"}}
  late:
    kafka: {topic: late}
dead_letter:
  kafka: {topic: dlq}
"#;

const EMBEDDED: &str = r#"version: 1
name: job
sources:
  gen:
    datagen: {rate: 100, keys: 10, max_delay: 1s, late_fraction: 0.01, seed: 1, count: 50, start: 0, late_delay: 30s, key_fields: [k]}
    schema:
      k: u64
      v: i64
      ts: timestamp
    event_time: ts
  lines:
    file: {path: in.jsonl}
    schema:
      k: u64
      ts: timestamp
    event_time: ts
flows:
  sums:
    from: gen
    steps:
      - key_by: [k]
      - window: {sliding: {size: 4s, slide: 2s}}
      - aggregate: {total: sum(v)}
    to: [file_out]
  sessions:
    from: lines
    steps:
      - key_by: [k]
      - window: {session: {gap: 3s}}
      - aggregate: {n: count()}
    to: [console]
  sums2:
    from: gen
    steps:
      - key_by: [k]
      - window: {tumbling: 2s}
      - aggregate: {total: sum(v)}
    to: [file_out]
  downstream:
    from: sums
    steps:
      - filter: "total > 0"
    to: [console]
sinks:
  file_out:
    file: {path: out.jsonl}
  console:
    stdout: {}
"#;

const REDIS: &str = r#"version: 1
name: job
sources:
  gen:
    datagen: {rate: 100, keys: 10}
    schema:
      k: u64
      v: i64
      ts: timestamp
    event_time: ts
flows:
  sums:
    from: gen
    steps:
      - key_by: [k]
      - window: {tumbling: 2s}
      - aggregate: {total: sum(v)}
    to: [dash]
sinks:
  dash:
    redis: {key: "s:{k}", channel: c, keep: 10, ttl: 1h, stream: log, stream_max_len: 500, url: "redis://127.0.0.1:6379"}
serve: {listen: "127.0.0.1:9999", keep: 7}
"#;

/// One setting's edit: (what, base spec, [(text to replace, replacement)]).
type Variation = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const VARIATIONS: &[Variation] = &[
    ("name", KAFKA, &[("name: job", "name: job2")]),
    (
        "source.name",
        KAFKA,
        &[
            ("  clicks:\n    kafka:", "  clicks2:\n    kafka:"),
            ("from: clicks", "from: clicks2"),
        ],
    ),
    ("kafka.topic", KAFKA, &[("topic: clicks", "topic: clicks2")]),
    ("kafka.group_id", KAFKA, &[("group_id: g1", "group_id: g2")]),
    (
        "kafka.start",
        KAFKA,
        &[("start: earliest", "start: latest")],
    ),
    (
        "kafka.partitioned_by",
        KAFKA,
        &[(
            "start: earliest",
            "start: earliest\n      partitioned_by: [user_id]",
        )],
    ),
    (
        "kafka.properties",
        KAFKA,
        &[("fetch.wait.max.ms: \"100\"", "fetch.wait.max.ms: \"200\"")],
    ),
    (
        "schema",
        KAFKA,
        &[("      url: string\n", "      url: string\n      x: i32\n")],
    ),
    ("schema.type", KAFKA, &[("amount: f64?", "amount: f64")]),
    (
        "event_time",
        KAFKA,
        &[("event_time: ts", "event_time: user_id")],
    ),
    (
        "max_out_of_orderness",
        KAFKA,
        &[("max_out_of_orderness: 2s", "max_out_of_orderness: 3s")],
    ),
    (
        "idle_timeout",
        KAFKA,
        &[("idle_timeout: 5s", "idle_timeout: 6s")],
    ),
    (
        "max_ahead",
        KAFKA,
        &[("idle_timeout: 5s", "idle_timeout: 5s\n      max_ahead: 1h")],
    ),
    (
        "default_dead_letter",
        KAFKA,
        &[("dead_letter:\n  kafka: {topic: dlq}\n", "")],
    ),
    ("dead_letter", KAFKA, &[("{topic: dlq}", "{topic: dlq2}")]),
    ("flow.name", KAFKA, &[("  per_user:\n", "  per_user2:\n")]),
    ("filter", KAFKA, &[("url <> ''", "url <> 'x'")]),
    ("map", KAFKA, &[("* 100", "* 10")]),
    (
        "key_by",
        KAFKA,
        &[("key_by: [user_id]", "key_by: [user_id, url]")],
    ),
    ("window.kind", KAFKA, &[("tumbling: 10s", "tumbling: 20s")]),
    (
        "allowed_lateness",
        KAFKA,
        &[("allowed_lateness: 5s", "allowed_lateness: 6s")],
    ),
    (
        "aggregate",
        KAFKA,
        &[("revenue: sum(cents)", "revenue: max(cents)")],
    ),
    ("to", KAFKA, &[("to: [out]", "to: [out, late]")]),
    ("late", KAFKA, &[("    late: late\n", "")]),
    (
        "sink.kafka.topic",
        KAFKA,
        &[("topic: views", "topic: views2")],
    ),
    (
        "sink.kafka.properties",
        KAFKA,
        &[("linger.ms: \"5\"", "linger.ms: \"6\"")],
    ),
    (
        "checkpoint",
        KAFKA,
        &[(
            "dead_letter:",
            "checkpoint: {interval: 10s, storage: /tmp/ck}\ndead_letter:",
        )],
    ),
    (
        "checkpoint.interval",
        KAFKA_CK,
        &[("interval: 10s", "interval: 20s")],
    ),
    (
        "checkpoint.storage",
        KAFKA_CK,
        &[("storage: /tmp/ck", "storage: /tmp/ck2")],
    ),
    (
        "checkpoint.mode",
        KAFKA_CK,
        &[("storage: /tmp/ck", "storage: /tmp/ck, mode: at_least_once")],
    ),
    (
        "checkpoint.retain",
        KAFKA_CK,
        &[("storage: /tmp/ck", "storage: /tmp/ck, retain: 5")],
    ),
    (
        "kafka.static_membership",
        KAFKA,
        &[(
            "start: earliest",
            "start: earliest\n      static_membership: true",
        )],
    ),
    (
        "checkpoint.s3",
        KAFKA,
        &[(
            "dead_letter:",
            "checkpoint: {interval: 10s, storage: s3://bkt/p}\ndead_letter:",
        )],
    ),
    (
        "state.memory",
        KAFKA,
        &[("dead_letter:", "state: {backend: memory}\ndead_letter:")],
    ),
    (
        "state.rocksdb",
        KAFKA,
        &[(
            "dead_letter:",
            "state: {backend: rocksdb, path: /tmp/s}\ndead_letter:",
        )],
    ),
    (
        "sink.redis",
        KAFKA,
        &[(
            "kafka: {topic: views, properties: {linger.ms: \"5\"}}",
            "redis: {key: \"v:{user_id}\"}",
        )],
    ),
    (
        "serve",
        REDIS,
        &[("serve: {listen: \"127.0.0.1:9999\", keep: 7}\n", "")],
    ),
    (
        "serve.listen",
        REDIS,
        &[("127.0.0.1:9999", "127.0.0.1:9998")],
    ),
    ("serve.keep", REDIS, &[("keep: 7}", "keep: 8}")]),
    (
        "sink.redis.key",
        REDIS,
        &[("key: \"s:{k}\"", "key: \"t:{k}\"")],
    ),
    (
        "sink.redis.channel",
        REDIS,
        &[("channel: c,", "channel: d,")],
    ),
    ("sink.redis.keep", REDIS, &[("keep: 10,", "keep: 11,")]),
    ("sink.redis.ttl", REDIS, &[("ttl: 1h,", "ttl: 2h,")]),
    (
        "sink.redis.stream",
        REDIS,
        &[("stream: log,", "stream: log2,")],
    ),
    (
        "sink.redis.stream_max_len",
        REDIS,
        &[("stream_max_len: 500,", "stream_max_len: 501,")],
    ),
    (
        "sink.redis.url",
        REDIS,
        &[(
            "url: \"redis://127.0.0.1:6379\"",
            "url: \"redis://127.0.0.1:6380\"",
        )],
    ),
    ("datagen.rate", EMBEDDED, &[("rate: 100", "rate: 101")]),
    ("datagen.keys", EMBEDDED, &[("keys: 10", "keys: 11")]),
    (
        "datagen.max_delay",
        EMBEDDED,
        &[("max_delay: 1s", "max_delay: 2s")],
    ),
    (
        "datagen.late_fraction",
        EMBEDDED,
        &[("late_fraction: 0.01", "late_fraction: 0.02")],
    ),
    ("datagen.seed", EMBEDDED, &[("seed: 1", "seed: 2")]),
    ("datagen.count", EMBEDDED, &[("count: 50", "count: 51")]),
    ("datagen.start", EMBEDDED, &[("start: 0", "start: 1")]),
    (
        "datagen.late_delay",
        EMBEDDED,
        &[("late_delay: 30s", "late_delay: 31s")],
    ),
    (
        "datagen.key_fields",
        EMBEDDED,
        &[("key_fields: [k]", "key_fields: [k, v]")],
    ),
    (
        "file.path",
        EMBEDDED,
        &[("path: in.jsonl", "path: in2.jsonl")],
    ),
    (
        "sink.file.path",
        EMBEDDED,
        &[("path: out.jsonl", "path: out2.jsonl")],
    ),
    (
        "sink.stdout",
        EMBEDDED,
        &[("    to: [file_out]", "    to: [console]")],
    ),
    (
        "window.sliding",
        EMBEDDED,
        &[("size: 4s, slide: 2s", "size: 6s, slide: 2s")],
    ),
    ("window.session", EMBEDDED, &[("gap: 3s", "gap: 4s")]),
    ("input.flow", EMBEDDED, &[("from: sums", "from: sums2")]),
    ("step after window", EMBEDDED, &[("total > 0", "total > 1")]),
];

/// Covers every field of every plan type: the variations (by name) that change it, or
/// why none is needed. A field added to the plan is a compile error here.
#[allow(dead_code)]
fn coverage(plan: &Plan) -> Vec<&'static str> {
    let Plan {
        name: _,        // "name"
        spec_path: _,   // derived: relative paths are resolved against it ("file.path")
        sources,        // below
        flows,          // below
        sinks,          // below
        dead_letter: _, // "dead_letter", "default_dead_letter"
        checkpoint,     // below
        state,          // below
        serve,          // below
    } = plan;
    for SourcePlan {
        name: _,                 // "source.name"
        kind,                    // below
        schema: _,               // "schema", "schema.type"
        event_time: _,           // "event_time"
        max_out_of_orderness: _, // "max_out_of_orderness"
        idle_timeout: _,         // "idle_timeout"
        max_ahead: _,            // "max_ahead"
        default_dead_letter: _,  // "default_dead_letter"
    } in sources
    {
        match kind {
            SourceKind::Kafka {
                topic: _,             // "kafka.topic"
                group_id: _,          // "kafka.group_id"
                start: _,             // "kafka.start"
                properties: _,        // "kafka.properties"
                partitioned_by: _,    // "kafka.partitioned_by" (aligns `per_user`)
                static_membership: _, // "kafka.static_membership"
            } => {}
            SourceKind::File { path: _ } => {} // "file.path"
            SourceKind::Datagen(DatagenPlan {
                rate: _,          // "datagen.rate"
                keys: _,          // "datagen.keys"
                max_delay: _,     // "datagen.max_delay"
                late_fraction: _, // "datagen.late_fraction"
                seed: _,          // "datagen.seed"
                count: _,         // "datagen.count"
                start: _,         // "datagen.start"
                late_delay: _,    // "datagen.late_delay"
                key_fields: _,    // "datagen.key_fields"
            }) => {}
        }
    }
    for FlowPlan {
        name: _,         // "flow.name"
        input: _,        // "input.flow"
        input_schema: _, // derived from the input's schema ("schema")
        steps: _,        // "filter", "map", "step after window"
        key_by: _,       // "key_by"
        window,          // below
        aggregate,       // below
        output: _,       // derived from key_by, aggregate and steps
        to: _,           // "to", "sink.stdout"
        late: _,         // "late"
        aligned: _,      // derived from key_by and the source's partitioned_by
    } in flows
    {
        if let Some(WindowPlan {
            kind: _,             // "window.kind", "window.sliding", "window.session"
            allowed_lateness: _, // "allowed_lateness"
        }) = window
        {}
        if let Some(AggregatePlan { accs, outputs: _ }) = aggregate {
            // outputs: "aggregate"
            for AccPlan {
                func: _,     // "aggregate"
                arg: _,      // "aggregate" (its argument: "map")
                q: _,        // quantile's q: covered by the typed expression tests
                ty: _,       // derived from func and arg
                nullable: _, // derived from func and arg
            } in accs
            {}
        }
    }
    for SinkPlan { name: _, kind } in sinks {
        // name: "late" (a sink is referred to by name)
        match kind {
            SinkKind::Kafka {
                topic: _,      // "sink.kafka.topic"
                properties: _, // "sink.kafka.properties"
            } => {}
            SinkKind::File { path: _ } => {} // "sink.file.path"
            SinkKind::Stdout => {}           // "sink.stdout"
            SinkKind::Redis(RedisPlan {
                key: _,            // "sink.redis.key"
                channel: _,        // "sink.redis.channel"
                keep: _,           // "sink.redis.keep"
                ttl: _,            // "sink.redis.ttl"
                stream: _,         // "sink.redis.stream"
                stream_max_len: _, // "sink.redis.stream_max_len"
                url: _,            // "sink.redis.url"
            }) => {}
        }
    }
    if let Some(CheckpointPlan {
        interval: _,     // "checkpoint", "checkpoint.interval"
        storage: _,      // "checkpoint", "checkpoint.storage", "checkpoint.s3"
        exactly_once: _, // "checkpoint.mode"
        retain: _,       // "checkpoint.retain"
        s3:
            S3Plan {
                endpoint: _, // s3_options_change_the_build
                region: _,   // s3_options_change_the_build
            },
    }) = checkpoint
    {}
    match state {
        StatePlan::Memory => {} // "state.memory" (the default: no change)
        StatePlan::RocksDb { path: _ } => {} // "state.rocksdb"
    }
    if let Some(ServePlan {
        listen: _, // "serve.listen"
        keep: _,   // "serve.keep"
    }) = serve
    {} // "serve"
    VARIATIONS.iter().map(|v| v.0).collect()
}

/// The files `streamc build` would compile for `text`, or the check errors. The spec's
/// path is the same for every call (it names the binary and resolves relative paths);
/// it is never read.
/// A marker base: the Kafka base with a `checkpoint:` block ([`kafka_ck`]), for the
/// variations of the block's own settings.
const KAFKA_CK: &str = "<the Kafka base with checkpoint: {interval: 10s, storage: /tmp/ck}>";

fn kafka_ck() -> String {
    KAFKA.replacen(
        "dead_letter:",
        "checkpoint: {interval: 10s, storage: /tmp/ck}\ndead_letter:",
        1,
    )
}

fn crate_of(text: &str) -> Result<String, String> {
    let spec = std::path::Path::new("/streamc-settings-test/job.yaml");
    let checked =
        streamc::check::check_source(spec, text).map_err(|d| streamc::check::render(&d, false))?;
    let dir = tempfile::tempdir().unwrap();
    streamc::build::write_crate(&checked.plan, dir.path()).map_err(|e| e.to_string())?;
    let mut all = String::new();
    for f in ["Cargo.toml", "src/main.rs"] {
        all.push_str(&std::fs::read_to_string(dir.path().join(f)).unwrap());
    }
    Ok(all)
}

#[test]
fn every_setting_changes_the_build_or_is_rejected() {
    let base_kafka = crate_of(KAFKA).expect("the Kafka base spec checks");
    let base_embedded = crate_of(EMBEDDED).expect("the embedded base spec checks");
    let base_redis = crate_of(REDIS).expect("the Redis base spec checks");
    let kafka_ck = kafka_ck();
    let base_kafka_ck = crate_of(&kafka_ck).expect("the Kafka base spec with checkpoints checks");
    let mut failures = Vec::new();
    for &(what, base, edits) in VARIATIONS {
        let base = if base == KAFKA_CK {
            kafka_ck.as_str()
        } else {
            base
        };
        let mut edited = base.to_string();
        for (from, to) in edits {
            assert!(
                edited.contains(from),
                "{what}: the base spec has no {from:?}"
            );
            edited = edited.replacen(from, to, 1);
        }
        let base_crate = if base == KAFKA {
            &base_kafka
        } else if base == kafka_ck {
            &base_kafka_ck
        } else if base == REDIS {
            &base_redis
        } else {
            &base_embedded
        };
        match crate_of(&edited) {
            // Rejected by the gate of what this build can run, with its location.
            Err(e) if e.contains("not in this version") => {}
            Err(e) => panic!("{what}: the variation does not check for another reason:\n{e}"),
            Ok(c) if &c != base_crate => {}       // honoured
            Ok(_) if what == "state.memory" => {} // the default, spelt out
            Ok(_) => failures.push(what),
        }
    }
    assert!(
        failures.is_empty(),
        "settings accepted by `streamc check` that do not change the generated crate: {failures:?}"
    );
}

#[test]
fn s3_options_change_the_build() {
    let with = |s3: &str| {
        crate_of(&KAFKA.replacen(
            "dead_letter:",
            &format!("checkpoint: {{interval: 10s, storage: s3://bkt/p{s3}}}\ndead_letter:"),
            1,
        ))
        .unwrap()
    };
    let plain = with("");
    assert!(plain.contains("\"s3\""), "the S3 client is compiled in");
    let endpoint = with(", s3: {endpoint: \"http://127.0.0.1:9000\"}");
    let region = with(", s3: {region: eu-west-1}");
    assert_ne!(plain, endpoint);
    assert_ne!(plain, region);
    assert_ne!(endpoint, region);
    assert!(endpoint.contains("http://127.0.0.1:9000"));
    assert!(
        !crate_of(&kafka_ck()).unwrap().contains("\"s3\""),
        "only for s3:// storage"
    );
}

#[test]
fn rejected_settings_are_located() {
    for what in ["checkpoint", "checkpoint.s3", "state.rocksdb"] {
        let &(_, base, edits) = VARIATIONS.iter().find(|v| v.0 == what).unwrap();
        let (from, to) = edits[0];
        let Err(err) = crate_of(&base.replacen(from, to, 1)) else {
            continue; // implemented: the other test checks that it is honoured
        };
        assert!(err.contains("job.yaml:"), "{what}: {err}");
        assert!(err.contains("not in this version"), "{what}: {err}");
    }
}
