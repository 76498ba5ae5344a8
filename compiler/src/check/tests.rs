//! Spec-level tests of the front end: small specs in, plan or diagnostics out.

use std::path::{Path, PathBuf};

use super::*;
use crate::plan::{
    AggFn, Field, Input, KafkaStart, RowStep, SinkKind, SourceKind, Type, WindowKind,
};

const PATH: &str = "specs/t.yaml";

fn spec_dir() -> PathBuf {
    std::path::absolute(Path::new(PATH))
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The front end as the language defines it (`capabilities.rs`' gate is tested in
/// `tests/frontend.rs` and `tests/settings.rs`).
fn check(text: &str) -> Result<Checked, Diagnostics> {
    check_source_ungated(Path::new(PATH), text)
}

fn plan(text: &str) -> Checked {
    match check(text) {
        Ok(c) => c,
        Err(d) => panic!("{}", render(&d, false)),
    }
}

/// The error messages, in source order.
fn errors(text: &str) -> Vec<String> {
    match check(text) {
        Ok(_) => panic!("expected errors:\n{text}"),
        Err(d) => d.iter().map(|e| e.message().to_string()).collect(),
    }
}

/// The only error of `text`: message, the source text it points at, help.
fn one_error(text: &str) -> (String, String, Option<String>) {
    let d = check(text).expect_err("an error");
    assert_eq!(d.len(), 1, "{}", render(&d, false));
    let e = &d.errors()[0];
    let span = e.span().expect("a span");
    (
        e.message().to_string(),
        text[span.start..span.end].to_string(),
        e.help_text().map(str::to_string),
    )
}

/// A spec with one datagen source `ev` (fields k: string, n: i64, x: f64?, ts:
/// timestamp), the given flows, and sinks `out` (stdout) and `late_out` (file).
fn with_flows(flows: &str) -> String {
    format!(
        "version: 1\nname: t\nsources:\n  ev:\n    datagen: {{}}\n    schema: {{k: string, n: i64, x: f64?, ts: timestamp}}\n    event_time: ts\nflows:\n{flows}sinks:\n  out: {{stdout: {{}}}}\n  late_out: {{file: {{path: late.jsonl}}}}\n"
    )
}

fn field(name: &str, ty: Type, nullable: bool) -> Field {
    Field {
        name: name.to_string(),
        ty,
        nullable,
    }
}

#[test]
fn a_minimal_spec() {
    let c = plan(&with_flows("  f:\n    from: ev\n    to: [out, late_out]\n"));
    let p = &c.plan;
    assert_eq!(p.name, "t");
    assert_eq!(p.spec_path, spec_dir().join("t.yaml"));
    assert_eq!(p.flows.len(), 1);
    assert_eq!(p.flows[0].input, Input::Source(0));
    assert_eq!(p.flows[0].output, p.sources[0].schema);
    assert_eq!(p.flows[0].to, vec![0, 1]);
    assert_eq!(
        p.sinks[1].kind,
        SinkKind::File {
            path: spec_dir().join("late.jsonl")
        }
    );
    assert_eq!(p.state, crate::plan::StatePlan::Memory);
    assert!(p.checkpoint.is_none() && p.dead_letter.is_none());
    let SourceKind::Datagen(g) = &p.sources[0].kind else {
        panic!()
    };
    assert_eq!(
        (g.rate, g.keys, g.max_delay, g.late_fraction, g.seed),
        (1000, 1000, 0, 0.0, 0)
    );
    assert_eq!((g.count, g.start), (None, None));
    assert_eq!(g.late_delay, 1000);
    assert!(g.key_fields.is_empty());
    assert_eq!(
        p.sources[0].default_dead_letter,
        SinkKind::File {
            path: spec_dir().join("t-dead-letter.jsonl")
        }
    );
    // A generator's events are valid by construction: no note about its dead letters.
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn source_kinds_and_defaults() {
    let text = "version: 1
name: kinds
sources:
  k:
    kafka: {topic: clicks, properties: {acks: all, linger.ms: 5, idempotence: true}}
    schema: {ts: i64}
    event_time: ts
    watermark: {max_out_of_orderness: 10s, idle_timeout: 30s}
  f:
    file: {path: ../data/in.jsonl}
    format: json
    schema: {ts: timestamp}
    event_time: ts
  g:
    datagen: {rate: 50_000, keys: 10, max_delay: 5s, late_fraction: 0.01, seed: 7, count: 100, start: 2024-01-01T00:00:01Z}
    schema: {ts: timestamp}
    event_time: ts
  h:
    kafka: {topic: other, group_id: mine, start: latest}
    schema: {ts: u64}
    event_time: ts
flows:
  a: {from: k, to: o}
  b: {from: f, to: o}
  c: {from: g, to: o}
  d: {from: h, to: o}
sinks:
  o: {stdout: }
";
    let c = plan(text);
    let s = &c.plan.sources;
    let SourceKind::Kafka {
        topic,
        group_id,
        start,
        properties,
        partitioned_by,
        static_membership,
    } = &s[0].kind
    else {
        panic!()
    };
    assert!(partitioned_by.is_empty());
    assert!(!static_membership);
    assert_eq!(
        (topic.as_str(), group_id.as_str(), *start),
        ("clicks", "kinds", KafkaStart::Earliest)
    );
    let props: Vec<(&str, &str)> = properties
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        props,
        [("acks", "all"), ("linger.ms", "5"), ("idempotence", "true")]
    );
    assert_eq!(
        (s[0].max_out_of_orderness, s[0].idle_timeout),
        (10_000, Some(30_000))
    );
    assert_eq!(
        s[0].default_dead_letter,
        SinkKind::Kafka {
            topic: "kinds-dead-letter".into(),
            properties: vec![]
        }
    );
    let in_path = spec_dir().parent().unwrap().join("data/in.jsonl");
    let SourceKind::File { path } = &s[1].kind else {
        panic!()
    };
    assert_eq!(path, &in_path);
    assert_eq!(
        s[1].default_dead_letter,
        SinkKind::File {
            path: spec_dir()
                .parent()
                .unwrap()
                .join("data/in.jsonl.dead-letter.jsonl")
        }
    );
    let SourceKind::Datagen(g) = &s[2].kind else {
        panic!()
    };
    assert_eq!(
        (g.rate, g.keys, g.max_delay, g.seed, g.count, g.start),
        (50_000, 10, 5000, 7, Some(100), Some(1_704_067_201_000))
    );
    assert!((g.late_fraction - 0.01).abs() < 1e-12);
    let SourceKind::Kafka {
        group_id, start, ..
    } = &s[3].kind
    else {
        panic!()
    };
    assert_eq!((group_id.as_str(), *start), ("mine", KafkaStart::Latest));
    assert_eq!(s[3].event_time, 0);
    // One note per source but the datagen one.
    assert_eq!(c.notes.len(), 3, "{:?}", c.notes);
    assert!(c.notes[0].contains("Kafka topic `kinds-dead-letter`"));
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains(".dead-letter.jsonl, created at the first one")),
        "{:?}",
        c.notes
    );
}

#[test]
fn a_declared_dead_letter_replaces_the_notes() {
    let text = format!(
        "{}dead_letter:\n  kafka: {{topic: dlq}}\n",
        with_flows("  f: {from: ev, to: [out, late_out]}\n")
    );
    let c = plan(&text);
    assert_eq!(
        c.plan.dead_letter,
        Some(SinkKind::Kafka {
            topic: "dlq".into(),
            properties: vec![]
        })
    );
    assert!(c.notes.is_empty());
}

#[test]
fn stateless_steps_and_output_row() {
    let c = plan(&with_flows(
        "  f:
    from: ev
    steps:
      - filter: \"n > 0\"
      - map: {n: \"n * 1.5\", big: \"x > 10\", k: k}
      - filter: big
    to: [out, late_out]
",
    ));
    let f = &c.plan.flows[0];
    assert_eq!(f.steps.len(), 3);
    assert!(matches!(f.steps[0], RowStep::Filter(_)));
    let RowStep::Map(m) = &f.steps[1] else {
        panic!()
    };
    assert_eq!(
        m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["n", "big", "k"]
    );
    // A replaced field keeps its position; its type may change; new fields go last.
    assert_eq!(
        f.output,
        vec![
            field("k", Type::String, false),
            field("n", Type::F64, false),
            field("x", Type::F64, true),
            field("ts", Type::Timestamp, false),
            field("big", Type::Bool, true),
        ]
    );
    assert!(f.window.is_none() && f.aggregate.is_none() && f.key_by.is_empty() && f.late.is_none());
}

#[test]
fn windowed_output_row() {
    let c = plan(&with_flows(
        "  f:
    from: ev
    steps:
      - key_by: k
      - window: {tumbling: 1m, offset: -15s, allowed_lateness: 30s}
      - aggregate: {c: count(), s: sum(n), r: \"sum(x) / count()\"}
    to: [out]
    late: late_out
",
    ));
    let f = &c.plan.flows[0];
    assert_eq!(f.key_by, vec![field("k", Type::String, false)]);
    let w = f.window.unwrap();
    assert_eq!(
        w.kind,
        WindowKind::Tumbling {
            size: 60_000,
            offset: 45_000
        }
    );
    assert_eq!(w.allowed_lateness, 30_000);
    let a = f.aggregate.as_ref().unwrap();
    assert_eq!(
        a.accs.iter().map(|a| a.func).collect::<Vec<_>>(),
        [AggFn::CountAll, AggFn::Sum, AggFn::Sum]
    );
    assert_eq!(
        a.outputs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["c", "s", "r"]
    );
    assert_eq!(
        f.output,
        vec![
            field("k", Type::String, false),
            field("window_start", Type::Timestamp, false),
            field("window_end", Type::Timestamp, false),
            field("c", Type::U64, false),
            field("s", Type::I64, true),
            field("r", Type::F64, true),
            field("revision", Type::U32, false),
            field("retracted", Type::Bool, false),
        ]
    );
    assert_eq!((f.to.clone(), f.late), (vec![0], Some(1)));
    let SourceKind::Datagen(g) = &c.plan.sources[0].kind else {
        panic!()
    };
    assert_eq!(g.late_delay, 60_000 + 30_000 + 1000);
    assert_eq!(g.key_fields, ["k"]);
}

#[test]
fn window_kinds() {
    let flow = |w: &str| {
        with_flows(&format!(
            "  f:\n    from: ev\n    steps:\n      - window: {w}\n      - aggregate: {{c: count()}}\n    to: [out, late_out]\n"
        ))
    };
    let kind = |w: &str| plan(&flow(w)).plan.flows[0].window.unwrap().kind;
    assert_eq!(
        kind("{sliding: {size: 10m, slide: 1m}}"),
        WindowKind::Sliding {
            size: 600_000,
            slide: 60_000
        }
    );
    assert_eq!(
        kind("{session: {gap: 30s}}"),
        WindowKind::Session { gap: 30_000 }
    );
    assert_eq!(
        kind("{tumbling: 1h}"),
        WindowKind::Tumbling {
            size: 3_600_000,
            offset: 0
        }
    );
    assert_eq!(
        kind("{tumbling: 1m, offset: 15s}"),
        WindowKind::Tumbling {
            size: 60_000,
            offset: 15_000
        }
    );

    let (m, at, _) = one_error(&flow("{sliding: {size: 10m, slide: 3m}}"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        (
            "sliding window size 10m is not a multiple of its slide 3m",
            "10m"
        )
    );
    let (m, at, _) = one_error(&flow("{session: {gap: 0s}}"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("session gap must be positive", "0s")
    );
    let (m, at, _) = one_error(&flow("{tumbling: 1m, offset: 1m}"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("window offset must be smaller than the window size", "1m")
    );
    let (m, at, h) = one_error(&flow("{tumbling: 60}"));
    assert_eq!(
        m,
        "invalid duration for the tumbling window size: duration `60` has no unit"
    );
    assert_eq!(at, "60");
    assert!(h.unwrap().contains("`60s`"));
    let (m, _, _) = one_error(&flow("{tumbling: 1m, session: {gap: 1s}}"));
    assert_eq!(m, "window has more than one kind");
    let (m, at, _) = one_error(&flow("{tumblng: 1m}"));
    assert_eq!(
        m,
        "unknown key `tumblng` in window; did you mean `tumbling`?"
    );
    assert_eq!(at, "tumblng");
    let (m, _, _) = one_error(&flow("{sliding: {size: 10m, slide: 1m}, offset: 1s}"));
    assert_eq!(m, "`offset` applies to tumbling windows only");
}

#[test]
fn flows_are_in_topological_order() {
    let c = plan(&with_flows(
        "  c: {from: b, to: out}
  b: {from: a}
  a: {from: ev, to: late_out}
",
    ));
    let names: Vec<&str> = c.plan.flows.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(c.plan.flows[1].input, Input::Flow(0));
    assert_eq!(c.plan.flows[2].input, Input::Flow(1));
    // `b` has no `to` but `c` reads it.
    assert!(c.plan.flows[1].to.is_empty());
}

#[test]
fn a_flow_reads_a_windowed_flow() {
    let c = plan(&with_flows(
        "  w:
    from: ev
    steps:
      - window: {tumbling: 1m}
      - aggregate: {c: count()}
  big:
    from: w
    steps:
      - filter: \"c > 10 AND window_end - window_start = 60000\"
    to: [out, late_out]
",
    ));
    let big = &c.plan.flows[1];
    assert_eq!(big.input, Input::Flow(0));
    assert_eq!(big.input_schema, c.plan.flows[0].output);
}

#[test]
fn graph_errors() {
    let e = errors(&with_flows(
        "  f: {from: evv, to: out}\n  g: {from: ev, to: late_out}\n",
    ));
    assert_eq!(e, ["unknown source or flow `evv`"]);
    let (_, at, help) = one_error(&with_flows("  f: {from: evv, to: [out, late_out]}\n"));
    assert_eq!(
        (at.as_str(), help.as_deref()),
        ("evv", Some("did you mean `ev`?"))
    );

    let text = with_flows("  a: {from: b, to: out}\n  b: {from: a, to: late_out}\n");
    let (m, at, _) = one_error(&text);
    assert_eq!(
        m,
        "flows read each other in a cycle: `a` reads `b`, `b` reads `a`"
    );
    assert_eq!(at, "b");
    let (m, _, _) = one_error(&with_flows("  a: {from: a, to: [out, late_out]}\n"));
    assert_eq!(m, "flow `a` reads itself");

    let (m, at, _) = one_error(&with_flows("  ev: {from: ev, to: [out, late_out]}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("flow `ev` has the same name as a source", "ev")
    );
}

#[test]
fn sink_references() {
    let (m, at, help) = one_error(&with_flows("  f: {from: ev, to: [outt, late_out]}\n"));
    assert_eq!((m.as_str(), at.as_str()), ("unknown sink `outt`", "outt"));
    assert_eq!(help.as_deref(), Some("did you mean `out`?"));
    let (m, at, _) = one_error(&with_flows("  f: {from: ev}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("the results of flow `f` go nowhere", "f")
    );
    let (m, at, _) = one_error(&with_flows("  f: {from: ev, to: [out], late: late_out}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`late` applies to windowed flows only", "late_out")
    );
    let (m, _, _) = one_error(&with_flows("  f: {from: ev, to: [out, out, late_out]}\n"));
    assert_eq!(m, "sink `out` is listed twice in `to`");
}

#[test]
fn unused_declarations_warn() {
    let c = plan(&with_flows("  f: {from: ev, to: out}\n"));
    let w: Vec<&str> = c.warnings.iter().map(|w| w.message()).collect();
    assert_eq!(w, ["sink `late_out` is not used"]);
}

#[test]
fn step_order() {
    let steps = |s: &str| {
        with_flows(&format!(
            "  f:\n    from: ev\n    steps:\n{s}    to: [out, late_out]\n"
        ))
    };
    let (m, at, _) = one_error(&steps("      - key_by: [k]\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`key_by` needs a `window`", "key_by")
    );
    let (m, at, _) = one_error(&steps("      - window: {tumbling: 1m}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`window` must be followed by `aggregate`", "window")
    );
    let (m, at, _) = one_error(&steps("      - aggregate: {c: count()}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`aggregate` needs a `window` before it", "aggregate")
    );
    let (m, at, help) = one_error(&steps(
        "      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n      - filter: \"c > 1\"\n",
    ));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("no step may follow `aggregate`, found `filter`", "filter")
    );
    assert_eq!(
        help.as_deref(),
        Some("read this flow from another flow to filter its results: `from: f`")
    );
    let (m, _, _) = one_error(&steps(
        "      - key_by: [k]\n      - filter: \"n > 1\"\n      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n",
    ));
    assert_eq!(m, "`filter` must come before `key_by`");
    let (m, _, _) = one_error(&steps(
        "      - window: {tumbling: 1m}\n      - key_by: [k]\n      - aggregate: {c: count()}\n",
    ));
    assert_eq!(m, "`key_by` must come before `window`");
    let (m, at, _) = one_error(&steps("      - join: {with: x}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`join` steps are not supported yet", "join")
    );
    let (m, at, _) = one_error(&steps("      - fliter: \"n > 1\"\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("unknown step `fliter`; did you mean `filter`?", "fliter")
    );
    // A broken step does not cause step-order errors.
    let e = errors(&steps(
        "      - key_by: [k]\n      - windw: {tumbling: 1m}\n      - aggregate: {c: count()}\n",
    ));
    assert_eq!(e, ["unknown step `windw`; did you mean `window`?"]);
    let (m, _, _) = one_error(&steps("      - filter: \"n > 1\"\n        map: {a: n}\n"));
    assert_eq!(m, "more than one step in one list item");
}

#[test]
fn a_key_field_named_like_a_window_column_is_a_located_error() {
    // Every column of a window result, as a key field made by a map step.
    for col in ["window_start", "window_end", "revision", "retracted"] {
        let text = with_flows(&format!(
            "  f:\n    from: ev\n    steps:\n      - map: {{{col}: n}}\n      - key_by: [k, {col}]\n      - window: {{tumbling: 1m}}\n      - aggregate: {{c: count()}}\n    to: [out]\n"
        ));
        let (m, at, help) = one_error(&text);
        assert_eq!(
            (m.as_str(), at.as_str()),
            (format!("duplicate output name `{col}`").as_str(), col)
        );
        assert!(help.unwrap().contains("rename the field first"));
    }
    // A flow reading a windowed flow, keyed by the window bounds it reads: its own
    // result has a `window_start` too.
    let text = with_flows(
        "  f:\n    from: ev\n    steps:\n      - key_by: [k]\n      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n    to: [out]\n  g:\n    from: f\n    steps:\n      - key_by: [window_start]\n      - window: {tumbling: 1h}\n      - aggregate: {total: sum(c)}\n    to: [out]\n",
    );
    let (m, at, _) = one_error(&text);
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("duplicate output name `window_start`", "window_start")
    );
    // Keyed by a renamed copy, it checks.
    let text = with_flows(
        "  f:\n    from: ev\n    steps:\n      - key_by: [k]\n      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n    to: [out]\n  g:\n    from: f\n    steps:\n      - map: {minute: window_start}\n      - key_by: [minute]\n      - window: {tumbling: 1h}\n      - aggregate: {total: sum(c)}\n    to: [out]\n",
    );
    let p = plan(&text).plan;
    let names: Vec<&str> = p.flows[1].output.iter().map(|f| f.name.as_str()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

#[test]
fn key_and_output_names() {
    let steps = |s: &str| {
        with_flows(&format!(
            "  f:\n    from: ev\n    steps:\n{s}    to: [out, late_out]\n"
        ))
    };
    let (m, at, _) = one_error(&steps(
        "      - key_by: [k]\n      - window: {tumbling: 1m}\n      - aggregate: {k: count()}\n",
    ));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("duplicate output name `k`", "k")
    );
    let (m, _, _) = one_error(&steps(
        "      - window: {tumbling: 1m}\n      - aggregate: {window_start: count()}\n",
    ));
    assert_eq!(m, "duplicate output name `window_start`");
    let (m, at, help) = one_error(&steps(
        "      - key_by: [kk]\n      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n",
    ));
    assert_eq!(
        (m.as_str(), at.as_str(), help.as_deref()),
        ("unknown key field `kk`", "kk", Some("did you mean `k`?"))
    );
    let (m, _, _) = one_error(&steps(
        "      - key_by: [x]\n      - window: {tumbling: 1m}\n      - aggregate: {c: count()}\n",
    ));
    assert_eq!(m, "cannot key by `x`: it is a float (`f64`)");
    let (m, _, _) = one_error(&steps("      - map: {n: NULL}\n"));
    assert_eq!(m, "field `n` would always be NULL and has no type");
    let (m, _, _) = one_error(&steps("      - filter: \"n + 1\"\n"));
    assert_eq!(m, "a filter must be a condition (bool), found `i64`");
}

#[test]
fn expression_errors_point_into_the_yaml_string() {
    let steps = |s: &str| {
        with_flows(&format!(
            "  f:\n    from: ev\n    steps:\n{s}    to: [out, late_out]\n"
        ))
    };
    let text = steps("      - filter: \"k <> '' AND nn >= 0\"\n");
    let (m, at, _) = one_error(&text);
    assert_eq!((m.as_str(), at.as_str()), ("unknown field `nn`", "nn"));
    // Single-quoted YAML: `''` is one quote; offsets still land on the token.
    let text = steps("      - filter: 'k <> '''' AND nn >= 0'\n");
    let (_, at, _) = one_error(&text);
    assert_eq!(at, "nn");
    // Double-quoted YAML with escapes before the token.
    let text = steps("      - filter: \"k <> \\\"\\\" AND nn >= 0\"\n");
    let d = check(&text).unwrap_err();
    let e = d
        .iter()
        .find(|e| e.message() == "unknown field `nn`")
        .unwrap();
    let s = e.span().unwrap();
    assert_eq!(&text[s.start..s.end], "nn");
    // Block scalar.
    let text = steps("      - filter: >-\n          k <> ''\n          AND nn >= 0\n");
    let (_, at, _) = one_error(&text);
    assert_eq!(at, "nn");
    // Syntax error: pointer at the token.
    let text = steps("      - filter: \"n > > 1\"\n");
    let (m, at, _) = one_error(&text);
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("expected an expression, found `>`", ">")
    );
    // A type mismatch names both types and points at the operator.
    let text = steps("      - filter: \"k = 1\"\n");
    let d = check(&text).unwrap_err();
    let e = &d.errors()[0];
    assert_eq!(e.message(), "cannot compare `string` with `i64`");
    let texts: Vec<&str> = e
        .labels()
        .iter()
        .map(|l| &text[l.span.start..l.span.end])
        .collect();
    assert_eq!(texts, ["=", "k", "1"]);
}

#[test]
fn source_errors() {
    let src = |body: &str| {
        format!(
            "version: 1\nname: t\nsources:\n  ev:\n{body}flows:\n  f: {{from: ev, to: o}}\nsinks:\n  o: {{stdout: {{}}}}\n"
        )
    };
    let (m, at, _) = one_error(&src(
        "    datagen: {}\n    schema: {ts: timestamp}\n    event_time: tss\n",
    ));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("event_time field `tss` is not in the schema", "tss")
    );
    let (m, _, _) = one_error(&src(
        "    datagen: {}\n    schema: {ts: string}\n    event_time: ts\n",
    ));
    assert_eq!(m, "event_time field `ts` has type `string`");
    let (m, _, _) = one_error(&src(
        "    datagen: {}\n    schema: {ts: timestamp?}\n    event_time: ts\n",
    ));
    assert_eq!(m, "event_time field `ts` is optional");
    let (m, at, help) = one_error(&src(
        "    datagen: {}\n    schema: {ts: timestamp, n: int}\n    event_time: ts\n",
    ));
    assert_eq!((m.as_str(), at.as_str()), ("unknown type `int`", "int"));
    assert!(help.unwrap().starts_with("did you mean `i64`?"));
    let (m, at, _) = one_error(&src("    datagen: {}\n    event_time: ts\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("missing `schema` in source `ev`", "ev")
    );
    let (m, at, _) = one_error(&src("    schema: {ts: timestamp}\n    event_time: ts\n"));
    assert_eq!((m.as_str(), at.as_str()), ("source `ev` has no kind", "ev"));
    let (m, _, _) = one_error(&src(
        "    datagen: {}\n    file: {path: x}\n    schema: {ts: timestamp}\n    event_time: ts\n",
    ));
    assert_eq!(m, "source `ev` has more than one kind");
    let (m, _, _) = one_error(&src(
        "    kafka: {}\n    schema: {ts: timestamp}\n    event_time: ts\n",
    ));
    assert_eq!(m, "missing `topic` in the kafka settings of source `ev`");
    let (m, _, _) = one_error(&src(
        "    datagen: {late_fraction: 2}\n    schema: {ts: timestamp}\n    event_time: ts\n",
    ));
    assert_eq!(m, "`late_fraction` must be between 0 and 1");
    let (m, _, _) = one_error(&src(
        "    datagen: {start: yesterday}\n    schema: {ts: timestamp}\n    event_time: ts\n",
    ));
    assert_eq!(m, "invalid `start`");
    let (m, _, _) = one_error(&src(
        "    datagen: {}\n    format: csv\n    schema: {ts: timestamp}\n    event_time: ts\n",
    ));
    assert_eq!(m, "unsupported format `csv`");
    let (m, _, _) = one_error(&src(
        "    datagen: {}\n    schema: {ts: timestamp, 1x: i32}\n    event_time: ts\n",
    ));
    assert_eq!(m, "invalid field name `1x`");
}

#[test]
fn top_level_errors() {
    assert_eq!(errors(""), ["the spec is empty"]);
    assert_eq!(
        errors("- a\n- b\n"),
        ["expected a mapping for the spec, found a list"]
    );
    assert!(errors("version: [1\n")[0].starts_with("invalid YAML"));
    let text = with_flows("  f: {from: ev, to: [out, late_out]}\n");
    let e = errors(&text.replace("version: 1", "version: 2"));
    assert_eq!(e, ["unsupported spec version"]);
    let e = errors(&text.replace("name: t", "name: Page-Views"));
    assert_eq!(e, ["invalid pipeline name `Page-Views`"]);
    let e = errors(&text.replace("version: 1\n", ""));
    assert_eq!(e, ["missing `version` in the spec"]);
    let e = errors(&format!("{text}flowz: {{}}\n"));
    assert_eq!(
        e,
        ["unknown key `flowz` in the spec; did you mean `flows`?"]
    );
    let e = errors("version: 1\nname: x\n");
    assert_eq!(
        e,
        ["missing `sources`", "missing `flows`", "missing `sinks`"]
    );
}

#[test]
fn errors_are_not_repeated_downstream() {
    // A map field whose expression is broken is not reported again where it is used, but
    // other unknown names still are.
    let text = with_flows(
        "  f:
    from: ev
    steps:
      - map: {twice: \"k || k\"}
      - filter: \"twice <> '' AND zz > 1\"
    to: [out, late_out]
",
    );
    assert_eq!(
        errors(&text),
        ["`||` is not an operator here", "unknown field `zz`"]
    );
    // A schema field with a bad type is reported once.
    let text = with_flows(
        "  f:\n    from: ev\n    steps:\n      - filter: \"n > 1\"\n    to: [out, late_out]\n",
    )
    .replace("n: i64", "n: int");
    assert_eq!(errors(&text), ["unknown type `int`"]);
    // A flow reading a flow with an error still has its own errors reported.
    let text = with_flows(
        "  a:
    from: ev
    steps:
      - window: {tumbling: 1m}
      - aggregate: {c: count(), s: sum(k)}
  b:
    from: a
    steps:
      - filter: \"c > 1 AND s > 1 AND cc > 1\"
    to: [out, late_out]
",
    );
    assert_eq!(
        errors(&text),
        [
            "cannot compute `sum` of `string`: it needs a number",
            "unknown field `cc`"
        ]
    );
}

#[test]
fn broken_declarations_still_resolve() {
    // The source body is broken: flows reading it are not told it does not exist.
    let text = with_flows("  f: {from: ev, to: [out, late_out]}\n").replace(
        "    datagen: {}\n    schema: {k: string, n: i64, x: f64?, ts: timestamp}\n    event_time: ts\n",
        "    kafka\n",
    );
    assert_eq!(
        errors(&text),
        ["expected a mapping for source `ev`, found `kafka`"]
    );
    // Same for a flow, and a broken flow is not said to go nowhere.
    let text = with_flows("  a: [from, ev]\n  b: {from: a, to: [out, late_out]}\n");
    assert_eq!(
        errors(&text),
        ["expected a mapping for flow `a`, found a list"]
    );
    // An invalid declared name is reported once, not again where it is used.
    let text =
        with_flows("  f: {from: ev, to: [my-out, late_out]}\n").replace("  out: {", "  my-out: {");
    assert_eq!(errors(&text), ["invalid sink name `my-out`"]);
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = with_flows(
        "  f:
    from: ev
    steps:
      - filter: \"nn > 0\"
      - window: {tumbling: 1x}
      - aggregate: {s: sum(k)}
    to: [outt]
",
    );
    let e = errors(&text);
    assert_eq!(
        e,
        [
            "unknown field `nn`",
            "invalid duration for the tumbling window size: unknown duration unit `x` in `1x`",
            "cannot compute `sum` of `string`: it needs a number",
            "unknown sink `outt`",
        ]
    );
}

#[test]
fn sinks_checkpoint_and_state() {
    let text = format!(
        "{}  r: {{redis: {{key: \"ev:{{k}}\", channel: c}}}}\n  k: {{kafka: {{topic: res, properties: {{acks: all}}}}}}\n\
         checkpoint: {{interval: 30s, storage: ckpt}}\nstate: {{backend: rocksdb, path: /var/state}}\n",
        with_flows(
            "  f: {from: ev, to: [out, late_out, k]}\n  w:\n    from: ev\n    steps: [{key_by: [k]}, {window: {tumbling: 1s}}, {aggregate: {c: count()}}]\n    to: [r]\n"
        )
    );
    let c = plan(&text);
    let cp = c.plan.checkpoint.as_ref().unwrap();
    assert_eq!(cp.interval, 30_000);
    assert_eq!(
        cp.storage,
        format!("file://{}", spec_dir().join("ckpt").display())
    );
    assert_eq!(
        c.plan.state,
        crate::plan::StatePlan::RocksDb {
            path: PathBuf::from("/var/state")
        }
    );
    assert_eq!(
        c.plan.sinks[2].kind,
        SinkKind::Redis(crate::plan::RedisPlan {
            key: "ev:{k}".into(),
            channel: Some("c".into()),
            ..Default::default()
        })
    );
    assert_eq!(
        c.plan.sinks[3].kind,
        SinkKind::Kafka {
            topic: "res".into(),
            properties: vec![("acks".into(), "all".into())]
        }
    );

    let bad = text.replace("ev:{k}", "ev:{kk}");
    let (m, at, help) = one_error(&bad);
    assert_eq!(
        m,
        "the key template of sink `r` uses `kk`, which flow `w` does not output"
    );
    assert_eq!(
        (at.as_str(), help.as_deref()),
        ("{kk}", Some("did you mean `{k}`?"))
    );
    let (m, _, _) = one_error(&text.replace("rocksdb", "rocks"));
    assert_eq!(m, "unknown state backend `rocks`");
    let (m, _, _) = one_error(&text.replace("storage: ckpt", "storage: \"ftp://x\""));
    assert_eq!(m, "unsupported checkpoint storage `ftp://x`");

    // S3 storage and its options.
    let s3 = text.replace(
        "storage: ckpt}",
        "storage: \"s3://my-bucket/ck/\", s3: {endpoint: \"http://127.0.0.1:9000/\", region: eu-west-1}}",
    );
    let cp = plan(&s3).plan.checkpoint.unwrap();
    assert_eq!(cp.storage, "s3://my-bucket/ck");
    assert!(cp.uses_s3());
    assert_eq!(
        cp.s3,
        crate::plan::S3Plan {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into())
        }
    );
    let (m, at, _) = one_error(&s3.replace("s3://my-bucket", "s3://My_Bucket"));
    assert_eq!(m, "invalid S3 checkpoint storage `s3://My_Bucket/ck/`");
    assert_eq!(at, "\"s3://My_Bucket/ck/\"");
    let (m, at, _) = one_error(&s3.replace("\"http://127.0.0.1:9000/\"", "127.0.0.1:9000"));
    assert_eq!(m, "invalid S3 endpoint `127.0.0.1:9000`");
    assert_eq!(at, "127.0.0.1:9000");
    let (m, at, _) = one_error(&text.replace("storage: ckpt}", "storage: ckpt, s3: {region: x}}"));
    assert_eq!(m, "`s3` options, but checkpoints do not go to S3");
    assert_eq!(at, "s3");
    let (m, _, _) = one_error(&s3.replace("region:", "regio:"));
    assert!(m.contains("regio"), "{m}");
    let (m, _, _) = one_error(&text.replace("{stdout: {}}", "{stdout: {}, file: {path: x}}"));
    assert_eq!(m, "sink `out` has more than one kind");
}

#[test]
fn duplicate_keys_point_at_the_second_key() {
    let text = with_flows("  f: {from: ev, to: [out, late_out]}\n")
        .replace("name: t\n", "name: t\nname: u\n");
    let d = check(&text).unwrap_err();
    assert_eq!(d.errors()[0].message(), "duplicate key `name`");
    let span = d.errors()[0].span().unwrap();
    assert_eq!(span.start, text.find("name: u").unwrap());
}

#[test]
fn datagen_key_fields_and_late_delay_can_be_declared() {
    let text = with_flows("  f:\n    from: ev\n    to: [out]\n")
        .replace("datagen: {}", "datagen: {key_fields: [k], late_delay: 1m}");
    let c = plan(&text);
    let SourceKind::Datagen(g) = &c.plan.sources[0].kind else {
        panic!()
    };
    assert_eq!(g.key_fields, ["k"]);
    assert_eq!(g.late_delay, 60_000);

    let text = with_flows("  f:\n    from: ev\n    to: [out]\n")
        .replace("datagen: {}", "datagen: {key_fields: [kk]}");
    let (msg, at, help) = one_error(&text);
    assert!(msg.contains("`kk`"), "{msg}");
    assert_eq!(at, "kk");
    assert_eq!(help.as_deref(), Some("did you mean `k`?"));
}

/// A spec with one windowed flow `w` (keyed by `k`) writing to sink `r`, whose body is
/// `redis`; `extra` is appended to the flows.
fn redis_spec(redis: &str, extra_flows: &str) -> String {
    format!(
        "version: 1\nname: t\nsources:\n  ev:\n    datagen: {{}}\n    schema: {{k: string, n: i64, ts: timestamp}}\n    event_time: ts\n\
         flows:\n  w:\n    from: ev\n    steps: [{{key_by: [k]}}, {{window: {{tumbling: 1s}}}}, {{aggregate: {{c: count(), s: sum(n)}}}}]\n    to: [r]\n{extra_flows}\
         sinks:\n  r: {{redis: {redis}}}\n  out: {{stdout: {{}}}}\n"
    )
}

#[test]
fn redis_sink_options() {
    let c = plan(&redis_spec(
        "{key: \"v:{k}\", channel: ch, keep: 10, ttl: 1h, stream: log, stream_max_len: 500, url: \"redis://h:1/2\"}",
        "",
    ));
    assert_eq!(
        c.plan.sinks[0].kind,
        SinkKind::Redis(crate::plan::RedisPlan {
            key: "v:{k}".into(),
            channel: Some("ch".into()),
            keep: Some(10),
            ttl: Some(3_600_000),
            stream: Some("log".into()),
            stream_max_len: Some(500),
            url: Some("redis://h:1/2".into()),
        })
    );
    let cases: [(&str, &str, &str); 5] = [
        (
            "{key: \"v:{k}\", keep: 0}",
            "`keep` must be at least 1",
            "0",
        ),
        (
            "{key: \"v:{k}\", stream_max_len: 0}",
            "`stream_max_len` must be at least 1",
            "0",
        ),
        (
            "{key: \"v:{k}\", ttl: 0s}",
            "the Redis TTL must be positive",
            "0s",
        ),
        (
            "{key: \"v:{k}\", url: \"http://h\"}",
            "unsupported Redis URL `http://h`",
            "\"http://h\"",
        ),
        (
            "{key: \"v:{k}\", keeep: 3}",
            "unknown key `keeep` in the redis settings of sink `r`; did you mean `keep`?",
            "keeep",
        ),
    ];
    for (redis, msg, at) in cases {
        let (m, span, _) = one_error(&redis_spec(redis, ""));
        assert_eq!((m.as_str(), span.as_str()), (msg, at), "{redis}");
    }
}

#[test]
fn redis_sinks_hold_the_windows_of_one_flow() {
    // A placeholder that is an aggregate, not a key.
    let (m, at, help) = one_error(&redis_spec("{key: \"v:{c}\"}", ""));
    assert_eq!(
        m,
        "the key template of sink `r` uses `c`, which is not a key field of flow `w`"
    );
    assert_eq!(at, "{c}");
    assert!(help.unwrap().contains("`{k}`"));
    // Two flows writing one Redis sink.
    let second = "  w2:\n    from: ev\n    steps: [{key_by: [k]}, {window: {tumbling: 1m}}, {aggregate: {c: count()}}]\n    to: [r]\n";
    let (m, at, _) = one_error(&redis_spec("{key: \"v:{k}\"}", second));
    assert_eq!(m, "Redis sink `r` is written by flows `w` and `w2`");
    assert_eq!(at, "r");
    // A stateless flow.
    let stateless = "  s: {from: ev, to: [r, out]}\n";
    let (m, at, _) = one_error(&redis_spec("{key: \"v:{k}\"}", stateless));
    assert_eq!(
        m,
        "flow `s` has no window: Redis sink `r` stores window results"
    );
    assert_eq!(at, "r");
    // Too-late events.
    let late = "  l:\n    from: ev\n    steps: [{key_by: [k]}, {window: {tumbling: 1m}}, {aggregate: {c: count()}}]\n    to: [out]\n    late: r\n";
    let (m, at, _) = one_error(&redis_spec("{key: \"v:{k}\"}", late));
    assert_eq!(m, "flow `l` sends too-late events to Redis sink `r`");
    assert_eq!(at, "r");
    // The dead letter.
    let dl = redis_spec("{key: \"v:{k}\"}", "") + "dead_letter: {redis: {key: bad}}\n";
    let (m, at, _) = one_error(&dl);
    assert_eq!(m, "the dead letter output cannot be Redis");
    assert_eq!(at, "dead_letter");
    // A global window: a key without placeholders.
    let global = redis_spec("{key: totals}", "").replace("{key_by: [k]}, ", "");
    assert!(check(&global).is_ok());
}

/// `partitioned_by` on a Kafka source: which flows are partition-aligned, and the
/// diagnostics around it.
#[test]
fn partitioned_by_makes_keyed_flows_aligned() {
    let text = |pb: &str, steps: &str| {
        format!(
            "version: 1\nname: t\nsources:\n  clicks:\n    kafka: {{topic: c{pb}}}\n    schema: {{user_id: u64, url: string, ts: timestamp}}\n    event_time: ts\nflows:\n  f:\n    from: clicks\n    steps:\n{steps}      - window: {{tumbling: 1m}}\n      - aggregate: {{n: count()}}\n    to: [o]\n  g:\n    from: f\n    steps: []\n    to: [o]\nsinks:\n  o: {{stdout: {{}}}}\n"
        )
    };
    let pb = ", partitioned_by: [user_id]";
    let c = plan(&text(pb, "      - key_by: [user_id]\n"));
    assert!(c.plan.flows[0].aligned);
    assert!(
        !c.plan.flows[1].aligned,
        "a flow reading a flow is never aligned"
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A wider key is still aligned: every key of it lives in one partition.
    let c = plan(&text(pb, "      - key_by: [url, user_id]\n"));
    assert!(c.plan.flows[0].aligned);
    // No partitioned_by: not aligned, no warning.
    let c = plan(&text("", "      - key_by: [user_id]\n"));
    assert!(!c.plan.flows[0].aligned);
    assert!(c.warnings.is_empty());
    // A key that cuts across partitions, or a partition field changed before the key:
    // not aligned, and said so.
    for (steps, why) in [
        (
            "      - key_by: [url]\n",
            "its key does not include `user_id`",
        ),
        (
            "      - map: {user_id: \"user_id + 1\"}\n      - key_by: [user_id]\n",
            "a `map` step changes `user_id` before the key",
        ),
        ("", "its key does not include `user_id`"),
    ] {
        let c = plan(&text(pb, steps));
        assert!(!c.plan.flows[0].aligned, "{steps}");
        let w: Vec<&str> = c.warnings.iter().map(|w| w.message()).collect();
        assert_eq!(
            w,
            [format!("flow `f` is not partition-aligned: {why}")],
            "{steps}"
        );
    }
    // Unknown and repeated fields are located errors.
    let (m, at, help) = one_error(&text(
        ", partitioned_by: [usr_id]",
        "      - key_by: [user_id]\n",
    ));
    assert_eq!(
        m,
        "`partitioned_by` names `usr_id`, which is not in the schema"
    );
    assert_eq!(
        (at.as_str(), help.as_deref()),
        ("usr_id", Some("did you mean `user_id`?"))
    );
    let (m, _, _) = one_error(&text(
        ", partitioned_by: [user_id, user_id]",
        "      - key_by: [user_id]\n",
    ));
    assert_eq!(m, "`partitioned_by` names `user_id` twice");
    let (m, _, _) = one_error(&text(", partitioned_by: []", "      - key_by: [user_id]\n"));
    assert_eq!(m, "`partitioned_by` names no field");
}

#[test]
fn serve_shows_windowed_flows_without_a_sink() {
    // A windowed flow with no `to` is fine with `serve:` (its results go to the page).
    let spec = |serve: &str| {
        format!(
            "version: 1\nname: t\nsources:\n  ev:\n    datagen: {{}}\n    schema: {{k: string, ts: timestamp}}\n    event_time: ts\n\
             flows:\n  w:\n    from: ev\n    steps: [{{key_by: [k]}}, {{window: {{tumbling: 1s}}}}, {{aggregate: {{c: count()}}}}]\n\
             sinks:\n  out: {{stdout: {{}}}}\n{serve}"
        )
    };
    assert_eq!(errors(&spec("")), ["the results of flow `w` go nowhere"]);
    let c = plan(&spec("serve: {listen: \":8080\", keep: 5}\n"));
    assert_eq!(
        c.plan.serve,
        Some(crate::plan::ServePlan {
            listen: Some(":8080".into()),
            keep: Some(5)
        })
    );
    assert!(plan(&spec("serve:\n")).plan.serve.is_some());
    let (m, at, _) = one_error(&spec("serve: {listen: \"localhost\"}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("invalid address `localhost` to serve on", "\"localhost\"")
    );
    let (m, at, _) = one_error(&spec("serve: {keep: 0}\n"));
    assert_eq!(
        (m.as_str(), at.as_str()),
        ("`keep` must be at least 1", "0")
    );
    let (m, _, _) = one_error(&spec("serve: {port: 1}\n"));
    assert!(m.starts_with("unknown key `port` in serve"), "{m}");
}
