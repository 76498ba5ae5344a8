//! The front end on whole specs: the example of pipeline-spec.md gives the expected
//! plan; no input makes it panic; every plan it returns keeps the plan invariants.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use streamc::check::{Checked, check_file, check_source, check_source_ungated, render};
use streamc::plan::{
    AggFn, BinOp, Field, Input, KafkaStart, Plan, RowStep, SinkKind, SourceKind, StatePlan, TExpr,
    TExprKind, Type, WindowKind,
};

const EXAMPLE: &str = "tests/fixtures/page_views.yaml";

fn example_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE)).unwrap()
}

fn field(name: &str, ty: Type, nullable: bool) -> Field {
    Field {
        name: name.to_string(),
        ty,
        nullable,
    }
}

fn check_example() -> Checked {
    // Ungated, though this build runs every form of the example (Redis, RocksDB,
    // checkpoints): `the_whole_example_checks_in_this_build` checks it gated.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE);
    match check_source_ungated(&path, &example_text()) {
        Ok(c) => c,
        Err(d) => panic!("{}", render(&d, false)),
    }
}

#[test]
fn the_spec_example_gives_the_expected_plan() {
    let c = check_example();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        c.notes.is_empty(),
        "a dead letter is declared: {:?}",
        c.notes
    );
    let p = &c.plan;
    assert_invariants(p);
    assert_eq!(p.name, "page_views");
    assert!(p.spec_path.is_absolute() && p.spec_path.ends_with(EXAMPLE));

    // Source.
    assert_eq!(p.sources.len(), 1);
    let s = &p.sources[0];
    assert_eq!(s.name, "clicks");
    let SourceKind::Kafka {
        topic,
        group_id,
        start,
        properties,
        partitioned_by,
        static_membership: _,
    } = &s.kind
    else {
        panic!("{:?}", s.kind)
    };
    assert_eq!(partitioned_by, &["user_id".to_string()]);
    assert_eq!(
        (topic.as_str(), group_id.as_str(), *start),
        ("clicks", "page-views", KafkaStart::Earliest)
    );
    assert!(properties.is_empty());
    assert_eq!(
        s.schema,
        vec![
            field("user_id", Type::U64, false),
            field("url", Type::String, false),
            field("status", Type::I32, false),
            field("latency_ms", Type::F64, false),
            field("amount", Type::F64, true),
            field("ts", Type::Timestamp, false),
        ]
    );
    assert_eq!(s.event_time, 5);
    assert_eq!(
        (s.max_out_of_orderness, s.idle_timeout),
        (10_000, Some(30_000))
    );
    assert_eq!(
        s.default_dead_letter,
        SinkKind::Kafka {
            topic: "page_views-dead-letter".into(),
            properties: vec![]
        }
    );

    // Flow.
    assert_eq!(p.flows.len(), 1);
    let f = &p.flows[0];
    assert_eq!(
        (f.name.as_str(), f.input),
        ("views_per_minute", Input::Source(0))
    );
    assert_eq!(f.input_schema, s.schema);
    assert_eq!(f.steps.len(), 2);
    let RowStep::Filter(filter) = &f.steps[0] else {
        panic!()
    };
    assert_eq!((filter.ty, filter.nullable), (Some(Type::Bool), false));
    let RowStep::Map(map) = &f.steps[1] else {
        panic!()
    };
    let map: Vec<(&str, Option<Type>, bool)> = map
        .iter()
        .map(|(n, e)| (n.as_str(), e.ty, e.nullable))
        .collect();
    assert_eq!(
        map,
        [
            ("is_error", Some(Type::Bool), false),
            ("amount_cents", Some(Type::F64), false)
        ]
    );
    assert_eq!(f.key_by, vec![field("user_id", Type::U64, false)]);
    let w = f.window.unwrap();
    assert_eq!(
        w.kind,
        WindowKind::Tumbling {
            size: 60_000,
            offset: 0
        }
    );
    assert_eq!(w.allowed_lateness, 60_000);

    let a = f.aggregate.as_ref().unwrap();
    let accs: Vec<(AggFn, Option<f64>, Type, bool)> = a
        .accs
        .iter()
        .map(|a| (a.func, a.q, a.ty, a.nullable))
        .collect();
    assert_eq!(
        accs,
        [
            (AggFn::CountAll, None, Type::U64, false),
            (AggFn::CountIf, None, Type::U64, false),
            (AggFn::Sum, None, Type::F64, true),
            (AggFn::Avg, None, Type::F64, true),
            (AggFn::Quantile, Some(0.95), Type::F64, true),
            (AggFn::CountDistinct, None, Type::U64, false),
        ]
    );
    // `error_rate` reuses the accumulators of `errors` and `views`, as a float ratio.
    let (name, rate) = &a.outputs[2];
    assert_eq!(name, "error_rate");
    let TExprKind::Binary {
        op: BinOp::Div,
        lhs,
        rhs,
    } = &rate.kind
    else {
        panic!("{rate:?}")
    };
    assert!(
        matches!(&lhs.kind, TExprKind::Cast { expr, to: Type::F64 } if matches!(expr.kind, TExprKind::Acc(1)))
    );
    assert!(
        matches!(&rhs.kind, TExprKind::Cast { expr, to: Type::F64 } if matches!(expr.kind, TExprKind::Acc(0)))
    );
    assert_eq!((rate.ty, rate.nullable), (Some(Type::F64), true));

    assert_eq!(
        f.output,
        vec![
            field("user_id", Type::U64, false),
            field("window_start", Type::Timestamp, false),
            field("window_end", Type::Timestamp, false),
            field("views", Type::U64, false),
            field("errors", Type::U64, false),
            field("error_rate", Type::F64, true),
            field("revenue", Type::F64, true),
            field("avg_latency", Type::F64, true),
            field("p95_latency", Type::F64, true),
            field("distinct_urls", Type::U64, false),
            field("revision", Type::U32, false),
            field("retracted", Type::Bool, false),
        ]
    );
    assert_eq!((f.to.clone(), f.late), (vec![0, 1], Some(2)));

    // Sinks and the rest.
    let sinks: Vec<(&str, &SinkKind)> =
        p.sinks.iter().map(|s| (s.name.as_str(), &s.kind)).collect();
    assert_eq!(
        sinks,
        [
            (
                "views_topic",
                &SinkKind::Kafka {
                    topic: "page-views-1m".into(),
                    properties: vec![]
                }
            ),
            (
                "dashboard",
                &SinkKind::Redis(streamc::plan::RedisPlan {
                    key: "views:{user_id}".into(),
                    channel: Some("page-views".into()),
                    ..Default::default()
                })
            ),
            (
                "late_clicks",
                &SinkKind::Kafka {
                    topic: "clicks-late".into(),
                    properties: vec![]
                }
            ),
        ]
    );
    assert_eq!(
        p.dead_letter,
        Some(SinkKind::Kafka {
            topic: "clicks-dlq".into(),
            properties: vec![]
        })
    );
    let cp = p.checkpoint.as_ref().unwrap();
    assert_eq!(
        (cp.interval, cp.storage.as_str()),
        (30_000, "file:///var/lib/streamc/checkpoints")
    );
    assert_eq!(
        p.state,
        StatePlan::RocksDb {
            path: PathBuf::from("/var/lib/streamc/state")
        }
    );
}

#[test]
fn a_missing_file_is_a_diagnostic() {
    let d = check_file(Path::new("no/such/spec.yaml")).unwrap_err();
    assert_eq!(d.len(), 1);
    assert!(
        d.errors()[0]
            .message()
            .starts_with("cannot read `no/such/spec.yaml`")
    );
}

#[test]
fn the_whole_example_checks_in_this_build() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE);
    if let Err(d) = check_source(&path, &example_text()) {
        panic!("{}", render(&d, false));
    }
}

#[test]
fn every_prefix_of_the_example_is_handled_without_panic() {
    let text = example_text();
    let path = Path::new("pipelines/page_views.yaml");
    let mut accepted = 0;
    for i in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
        match check_source_ungated(path, &text[..i]) {
            Ok(c) => {
                assert_invariants(&c.plan);
                accepted += 1;
            }
            Err(d) => {
                assert!(!d.is_empty());
                let _ = render(&d, false);
            }
        }
    }
    // The whole text (and prefixes that only drop trailing comments) check.
    assert!(accepted >= 1);
}

#[test]
fn every_prefix_of_every_pipeline_is_handled_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["pipelines", "pipelines/errors"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for i in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
                if let Ok(c) = check_source_ungated(&path, &text[..i]) {
                    assert_invariants(&c.plan);
                }
            }
        }
    }
}

#[test]
fn every_line_dropped_is_handled_without_panic() {
    let text = example_text();
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let edited: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        match check_source_ungated(Path::new("t.yaml"), &edited.join("\n")) {
            Ok(c) => assert_invariants(&c.plan),
            Err(d) => {
                let _ = render(&d, false);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random edits of the example (inserted YAML and SQL punctuation, deleted ranges)
    /// never make the front end panic, and whatever it accepts keeps the invariants.
    #[test]
    fn random_edits_never_panic(
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..6, prop::sample::select(vec![
                "", " ", "\n", "  ", ":", "- ", "{", "}", "[", "]", ",", "'", "\"", "#", "&a ", "*a",
                "(", ")", "count()", " AND ", " + ", "NULL", "-", "1", "0.5", "é", "\t", "\\", "?",
            ])),
            1..6,
        )
    ) {
        let mut text = example_text();
        for (at, delete, insert) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut j = (i + delete).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            text.replace_range(i..j, insert);
        }
        match check_source_ungated(Path::new("t.yaml"), &text) {
            Ok(c) => assert_invariants(&c.plan),
            Err(d) => {
                prop_assert!(!d.is_empty());
                let _ = render(&d, false);
            }
        }
    }
}

/// The invariants of `plan.rs` that code generation relies on.
fn assert_invariants(p: &Plan) {
    for s in &p.sources {
        let et = &s.schema[s.event_time];
        assert!(et.ty == Type::Timestamp || et.ty.is_integer());
        assert!(!et.nullable);
    }
    for (i, f) in p.flows.iter().enumerate() {
        match f.input {
            Input::Source(s) => {
                assert!(s < p.sources.len());
                assert_eq!(f.input_schema, p.sources[s].schema);
            }
            Input::Flow(k) => {
                assert!(k < i, "flows are in topological order");
                assert_eq!(f.input_schema, p.flows[k].output);
            }
        }
        assert_eq!(f.window.is_some(), f.aggregate.is_some());
        assert!(f.to.iter().chain(&f.late).all(|s| *s < p.sinks.len()));
        for step in &f.steps {
            match step {
                RowStep::Filter(e) => {
                    assert_eq!(e.ty, Some(Type::Bool));
                    assert_typed(e, None);
                }
                RowStep::Map(m) => m.iter().for_each(|(_, e)| {
                    assert!(e.ty.is_some());
                    assert_typed(e, None);
                }),
            }
        }
        if let Some(a) = &f.aggregate {
            for acc in &a.accs {
                if let Some(arg) = &acc.arg {
                    assert_typed(arg, None);
                }
            }
            for (_, e) in &a.outputs {
                assert!(e.ty.is_some());
                assert_typed(e, Some(a.accs.len()));
            }
        }
    }
}

/// Both operands of arithmetic and comparisons have one type; `Acc` only in aggregate
/// outputs (`accs` = the number of accumulators), `Field` never there.
fn assert_typed(e: &TExpr, accs: Option<usize>) {
    match &e.kind {
        TExprKind::Binary { op, lhs, rhs } => {
            if !matches!(op, BinOp::And | BinOp::Or) && lhs.ty.is_some() && rhs.ty.is_some() {
                assert_eq!(lhs.ty, rhs.ty, "{e:?}");
            }
            assert_typed(lhs, accs);
            assert_typed(rhs, accs);
        }
        TExprKind::Acc(i) => assert!(accs.is_some_and(|n| *i < n)),
        TExprKind::Field(_) => assert!(accs.is_none()),
        TExprKind::Lit(_) => {}
        TExprKind::Unary { expr, .. }
        | TExprKind::Cast { expr, .. }
        | TExprKind::IsNull { expr, .. } => assert_typed(expr, accs),
        TExprKind::InList { expr, list, .. } => {
            for item in list {
                assert!(item.ty.is_none() || item.ty == expr.ty);
                assert_typed(item, accs);
            }
            assert_typed(expr, accs);
        }
        TExprKind::Case {
            branches,
            otherwise,
        } => {
            for (c, v) in branches {
                assert!(v.ty.is_none() || v.ty == e.ty);
                assert_typed(c, accs);
                assert_typed(v, accs);
            }
            if let Some(o) = otherwise {
                assert_typed(o, accs);
            }
        }
        TExprKind::Call { args, .. } => args.iter().for_each(|a| assert_typed(a, accs)),
    }
}
