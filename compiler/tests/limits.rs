//! The documented limits of the spec language (docs/pipeline-spec.md, "Limits"): every
//! shape of expression up to the depth limit checks and generates code on an ordinary
//! test thread (debug build, 2 MB of stack), one level more is a located error, far
//! deeper input too (never a stack overflow), and generated code grows linearly with the
//! expression.

use std::path::Path;

use streamc::check::{Checked, check_source};
use streamc::diag::Diagnostics;
use streamc::spec::expr::MAX_DEPTH;

/// A spec whose one map step computes `x: EXPR`, with fields `v: i64`, `s: string?` and
/// `b: bool` in scope.
fn spec(expr: &str) -> String {
    format!(
        r#"version: 1
name: limits
sources:
  events:
    file: {{ path: in.jsonl }}
    schema:
      v: i64
      s: string?
      b: bool
      ts: timestamp
    event_time: ts
flows:
  deep:
    from: events
    steps:
      - map:
          x: "{expr}"
    to: [out]
sinks:
  out:
    file: {{ path: out.jsonl }}
"#
    )
}

fn check(expr: &str) -> Result<Checked, Diagnostics> {
    check_source(Path::new("/tmp/limits.yaml"), &spec(expr))
}

fn generated_len(expr: &str) -> usize {
    let c = check(expr).unwrap_or_else(|d| panic!("{}", streamc::diag::render(&d, false)));
    streamc::codegen::generate_main(&c.plan)
        .expect("generates")
        .len()
}

fn repeat_join(item: &str, sep: &str, n: usize) -> String {
    vec![item; n].join(sep)
}

fn nest(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// Each shape of deep expression, as a function of a size.
/// A named family of expressions, by size.
type Shape = (&'static str, Box<dyn Fn(usize) -> String>);

fn shapes() -> Vec<Shape> {
    vec![
        ("chain of +", Box::new(|n| repeat_join("v", " + ", n))),
        ("chain of *", Box::new(|n| repeat_join("v", " * ", n))),
        ("chain of AND", Box::new(|n| repeat_join("b", " AND ", n))),
        ("chain of OR", Box::new(|n| repeat_join("b", " OR ", n))),
        (
            "chain of comparisons under AND",
            Box::new(|n| repeat_join("v >= 0", " AND ", n)),
        ),
        (
            "chain of IS NULL",
            Box::new(|n| format!("b{}", " IS NOT NULL".repeat(n))),
        ),
        (
            "right-nested parentheses",
            Box::new(|n| nest("v + (", "v", ")", n)),
        ),
        ("nested NOT", Box::new(|n| format!("{}b", "NOT ".repeat(n)))),
        ("nested minus", Box::new(|n| nest("-(", "v", ")", n))),
        ("nested calls", Box::new(|n| nest("abs(", "v", ")", n))),
        (
            "nested coalesce",
            Box::new(|n| nest("coalesce(", "s", ", 'x')", n)),
        ),
        (
            "nested CASE",
            Box::new(|n| nest("CASE WHEN b THEN ", "v", " ELSE 0 END", n)),
        ),
        ("nested IN", Box::new(|n| nest("b IN (", "b", ")", n))),
        ("parentheses", Box::new(|n| nest("(", "v", ")", n))),
    ]
}

fn is_depth_error(d: &Diagnostics) -> bool {
    d.len() == 1 && d.errors()[0].message() == "expression nested too deeply"
}

#[test]
fn every_shape_up_to_the_limit_checks_and_generates_and_deeper_is_a_located_error() {
    for (name, shape) in shapes() {
        // The largest accepted size: everything below it is accepted, everything above it
        // rejected with the depth error.
        let mut largest = 0;
        for n in 1..=MAX_DEPTH + 2 {
            match check(&shape(n)) {
                Ok(_) => {
                    assert_eq!(
                        largest,
                        n - 1,
                        "{name}: size {n} accepted after a rejection"
                    );
                    largest = n;
                }
                Err(d) => assert!(
                    is_depth_error(&d),
                    "{name} of size {n}: {}",
                    streamc::diag::render(&d, false)
                ),
            }
        }
        assert!(largest >= 8, "{name}: only {largest} levels accepted");
        assert!(largest <= MAX_DEPTH, "{name}: {largest} levels accepted");
        // The deepest accepted expression generates code.
        assert!(generated_len(&shape(largest)) > 0);
        // Far deeper: the same error, located in the expression, not a crash.
        for n in [5_000, 50_000] {
            let text = spec(&shape(n));
            let d = check_source(Path::new("/tmp/limits.yaml"), &text).expect_err(name);
            assert!(is_depth_error(&d), "{name} of size {n}");
            let e = &d.errors()[0];
            let (line, col) = e.line_col().expect("located");
            assert_eq!(line, 17, "{name}: the error is on the map line");
            assert!(col > 13, "{name}: column {col} is inside the expression");
            let rendered = streamc::diag::render(&d, false);
            assert!(
                rendered.contains(&format!("/tmp/limits.yaml:17:{col}")),
                "{rendered}"
            );
            assert!(rendered.contains("at most 128 levels"), "{rendered}");
        }
    }
}

#[test]
fn a_chain_too_long_is_reported_at_the_operator_past_the_limit() {
    // A chain of n terms has n - 1 operators and is a tree of height n.
    let ok = repeat_join("v", " + ", MAX_DEPTH);
    assert!(check(&ok).is_ok());
    let long = repeat_join("v", " + ", MAX_DEPTH + 1);
    let d = check(&long).expect_err("too deep");
    let (line, col) = d.errors()[0].line_col().unwrap();
    assert_eq!(line, 17);
    // `          x: "` is 14 columns; the k-th `+` (1-based) is at offset 4k - 2 in the
    // expression; the one past the limit is operator number MAX_DEPTH.
    assert_eq!(col, 15 + 4 * MAX_DEPTH - 2);
    let text = spec(&long);
    let line_text = text.lines().nth(16).unwrap();
    assert_eq!(&line_text[col - 1..col], "+");
}

/// Bytes of generated code per unit of size between `n` and `2n`, and between `2n` and
/// `4n`: equal for linear growth, doubled for quadratic.
fn growth(shape: &dyn Fn(usize) -> String, n: usize) -> (usize, usize) {
    let a = generated_len(&shape(n));
    let b = generated_len(&shape(2 * n));
    let c = generated_len(&shape(4 * n));
    ((b - a) / n, (c - b) / (2 * n))
}

#[test]
fn generated_code_grows_linearly_with_expressions() {
    let linear: Vec<Shape> = vec![
        ("chain of +", Box::new(|n| repeat_join("v", " + ", n))),
        (
            "chain of AND",
            Box::new(|n| repeat_join("v >= 0", " AND ", n)),
        ),
        (
            "chain of IS NULL",
            Box::new(|n| format!("b{}", " IS NOT NULL".repeat(n))),
        ),
        (
            "right-nested arithmetic",
            Box::new(|n| nest("v + (", "v", ")", n)),
        ),
        ("nested NOT", Box::new(|n| format!("{}b", "NOT ".repeat(n)))),
        (
            "CASE with many branches",
            Box::new(|n| {
                let branches: String = (0..n).map(|i| format!(" WHEN v = {i} THEN {i}")).collect();
                format!("CASE{branches} ELSE 0 END")
            }),
        ),
        (
            "IN with many items",
            Box::new(|n| {
                let items: Vec<String> = (0..n).map(|i| format!("v + {i}")).collect();
                format!("v IN ({})", items.join(", "))
            }),
        ),
        (
            "coalesce with many arguments",
            Box::new(|n| format!("coalesce({}, 'x')", repeat_join("lower(s)", ", ", n))),
        ),
    ];
    for (name, shape) in linear {
        let (first, second) = growth(&*shape, 12);
        assert!(
            second * 10 <= first * 13,
            "{name}: {first} bytes per level from 12 to 24, {second} from 24 to 48"
        );
    }
}
