use std::sync::Arc;

use super::*;
use crate::diag::Severity;
use crate::spec::expr::parse;

fn row() -> Vec<Field> {
    let f = |name: &str, ty, nullable| Field {
        name: name.to_string(),
        ty,
        nullable,
    };
    vec![
        f("i", Type::I32, false),
        f("l", Type::I64, false),
        f("u", Type::U32, false),
        f("ul", Type::U64, false),
        f("f", Type::F32, false),
        f("d", Type::F64, false),
        f("s", Type::String, false),
        f("b", Type::Bool, false),
        f("ts", Type::Timestamp, false),
        f("on", Type::I64, true),
        f("os", Type::String, true),
        f("status", Type::I32, false),
    ]
}

/// A compact rendering of a typed expression: literals and casts show their types.
fn show(e: &TExpr) -> String {
    let t = |e: &TExpr| e.ty.map_or("null", Type::name);
    match &e.kind {
        TExprKind::Lit(Lit::Null) => "NULL".into(),
        TExprKind::Lit(Lit::Bool(b)) => b.to_string(),
        TExprKind::Lit(Lit::Int(v)) => format!("{v}:{}", t(e)),
        TExprKind::Lit(Lit::Float(v)) => format!("{v:?}:{}", t(e)),
        TExprKind::Lit(Lit::Str(s)) => format!("'{s}'"),
        TExprKind::Field(n) => n.clone(),
        TExprKind::Acc(i) => format!("acc{i}"),
        TExprKind::Binary { op, lhs, rhs } => {
            format!("({} {} {})", show(lhs), binop_symbol(*op), show(rhs))
        }
        TExprKind::Unary {
            op: UnOp::Not,
            expr,
        } => format!("NOT {}", show(expr)),
        TExprKind::Unary {
            op: UnOp::Neg,
            expr,
        } => format!("-{}", show(expr)),
        TExprKind::Cast { expr, to } => format!("{}({})", to.name(), show(expr)),
        TExprKind::IsNull { expr, negated } => {
            format!(
                "({} IS {}NULL)",
                show(expr),
                if *negated { "NOT " } else { "" }
            )
        }
        TExprKind::InList {
            expr,
            list,
            negated,
        } => format!(
            "({} {}IN [{}])",
            show(expr),
            if *negated { "NOT " } else { "" },
            list.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        TExprKind::Case {
            branches,
            otherwise,
        } => {
            let mut out = "CASE".to_string();
            for (c, v) in branches {
                out += &format!(" WHEN {} THEN {}", show(c), show(v));
            }
            if let Some(o) = otherwise {
                out += &format!(" ELSE {}", show(o));
            }
            out + " END"
        }
        TExprKind::Call { func, args } => format!(
            "{}({})",
            format!("{func:?}").to_lowercase(),
            args.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The type as `i32`, `i32?` (nullable) or `null`.
fn ty(e: &TExpr) -> String {
    format!(
        "{}{}",
        e.ty.map_or("null", Type::name),
        if e.nullable { "?" } else { "" }
    )
}

fn reporter(text: &str) -> Reporter {
    Reporter::new("t", Arc::new(text.to_string()))
}

fn offsets(text: &str) -> Vec<usize> {
    (0..=text.len()).collect()
}

/// Types `src` against `row()`: `(rendering, type)` or the error messages.
fn typed(src: &str) -> Result<(String, String), Vec<String>> {
    let e = parse(src, &offsets(src)).unwrap_or_else(|e| panic!("{src}: {e:?}"));
    let fields = row();
    let mut rep = reporter(src);
    let t = Typer::row(
        &mut rep,
        Row {
            fields: &fields,
            complete: true,
            poisoned: &[],
        },
        &[],
    )
    .expr(&e);
    let (errors, _) = rep.finish();
    match t {
        Some(t) if errors.is_empty() => Ok((show(&t), ty(&t))),
        _ => Err(errors.iter().map(|d| d.message().to_string()).collect()),
    }
}

fn ok(src: &str, expect: &str, expect_ty: &str) {
    match typed(src) {
        Ok((s, t)) => {
            assert_eq!(s, expect, "{src}");
            assert_eq!(t, expect_ty, "{src}");
        }
        Err(e) => panic!("{src}: {e:?}"),
    }
}

fn err(src: &str, message: &str) {
    match typed(src) {
        Ok((s, _)) => panic!("{src}: expected an error, typed as {s}"),
        Err(e) => assert!(e.iter().any(|m| m.contains(message)), "{src}: {e:?}"),
    }
}

#[test]
fn numeric_promotion() {
    ok("i + 1", "(i + 1:i32)", "i32");
    ok("1 + i", "(1:i32 + i)", "i32");
    ok("i + l", "(i64(i) + l)", "i64");
    ok("u + ul", "(u64(u) + ul)", "u64");
    ok("u + i", "(i64(u) + i64(i))", "i64");
    ok("i * d", "(f64(i) * d)", "f64");
    ok("f - f", "(f - f)", "f32");
    ok("f + 1.5", "(f64(f) + 1.5:f64)", "f64");
    ok("i + 1.5", "(f64(i) + 1.5:f64)", "f64");
    ok("d > 1", "(d > 1:f64)", "bool");
    ok("1 + 2", "(1:i64 + 2:i64)", "i64");
    ok("1 / 2.0", "(1:f64 / 2.0:f64)", "f64?");
    // A literal that does not fit the other side's type is promoted instead.
    ok("9999999999 > i", "(9999999999:i64 > i64(i))", "bool");
    ok("-1 < u", "(-1:i64 < i64(u))", "bool");
    ok("u > 5", "(u > 5:u32)", "bool");
}

#[test]
fn division_and_nulls() {
    ok("i / 2", "(i / 2:i32)", "i32?");
    ok("l % 3", "(l % 3:i64)", "i64?");
    ok("on + 1", "(on + 1:i64)", "i64?");
    ok("i + NULL", "(i + NULL)", "i32?");
    err("NULL + NULL", "has no type");
    err("s + 1", "cannot apply `+` to `string` and `i64`");
    err("b * 2", "cannot apply `*`");
}

#[test]
fn timestamps() {
    ok("ts > 1000", "(ts > 1000:timestamp)", "bool");
    ok("ts + 1000", "(i64(ts) + 1000:i64)", "i64");
    ok("ts - 60000", "(i64(ts) - 60000:i64)", "i64");
    ok("ts - ts", "(i64(ts) - i64(ts))", "i64");
    ok("ts + i", "(i64(ts) + i64(i))", "i64");
    ok("ts >= l", "(i64(ts) >= l)", "bool");
    ok("ts = ts", "(ts = ts)", "bool");
    err("ts + ts", "cannot apply `+` to `timestamp` and `timestamp`");
    err("ts * 2", "cannot apply `*`");
    err("ts > 1.5", "cannot compare `timestamp` with `f64`");
}

#[test]
fn comparisons_and_logic() {
    ok("s = 'x'", "(s = 'x')", "bool");
    ok("os <> s", "(os <> s)", "bool?");
    ok("b = TRUE", "(b = true)", "bool");
    err("b < TRUE", "cannot order booleans");
    err("s = 1", "cannot compare `string` with `i64`");
    ok(
        "b AND i > 0 OR NOT b",
        "((b AND (i > 0:i32)) OR NOT b)",
        "bool",
    );
    ok("b AND NULL", "(b AND NULL)", "bool?");
    err("i AND b", "`AND` needs conditions (bool), found `i32`");
    err("NOT i", "`NOT` needs a condition");
    ok("on IS NULL", "(on IS NULL)", "bool");
    ok("os IS NOT NULL", "(os IS NOT NULL)", "bool");
    ok("-u", "-i64(u)", "i64");
    ok("-d", "-d", "f64");
    err("-s", "cannot negate `string`");
}

#[test]
fn comparison_with_null_warns() {
    let src = "on = NULL";
    let e = parse(src, &offsets(src)).unwrap();
    let fields = row();
    let mut rep = reporter(src);
    let t = Typer::row(
        &mut rep,
        Row {
            fields: &fields,
            complete: true,
            poisoned: &[],
        },
        &[],
    )
    .expr(&e)
    .unwrap();
    assert_eq!(ty(&t), "bool?");
    let (errors, warnings) = rep.finish();
    assert!(errors.is_empty());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].severity(), Severity::Warning);
    assert_eq!(warnings[0].span(), Some(Span::new(5, 9)));
}

#[test]
fn in_lists() {
    ok("i IN (1, 2)", "(i IN [1:i32, 2:i32])", "bool");
    ok("l NOT IN (i, 3)", "(l NOT IN [i64(i), 3:i64])", "bool");
    ok("s IN ('a', NULL)", "(s IN ['a', NULL])", "bool?");
    ok("d IN (1, 2.5)", "(d IN [1:f64, 2.5:f64])", "bool");
    ok("ts IN (0)", "(ts IN [0:timestamp])", "bool");
    err(
        "i IN (1.5)",
        "`IN` list item of type `f64` does not match `i32`",
    );
    err("i IN (l)", "does not match `i32`");
    err("s IN (1)", "does not match `string`");
}

#[test]
fn case_expressions() {
    ok(
        "CASE WHEN b THEN 1 ELSE 2.5 END",
        "CASE WHEN b THEN 1:f64 ELSE 2.5:f64 END",
        "f64",
    );
    ok("CASE WHEN b THEN i END", "CASE WHEN b THEN i END", "i32?");
    ok(
        "CASE WHEN b THEN i WHEN i > 0 THEN l ELSE 0 END",
        "CASE WHEN b THEN i64(i) WHEN (i > 0:i32) THEN l ELSE 0:i64 END",
        "i64",
    );
    ok(
        "CASE i WHEN 1 THEN 'a' ELSE 'b' END",
        "CASE WHEN (i = 1:i32) THEN 'a' ELSE 'b' END",
        "string",
    );
    ok(
        "CASE WHEN b THEN on ELSE 0 END",
        "CASE WHEN b THEN on ELSE 0:i64 END",
        "i64?",
    );
    err(
        "CASE WHEN b THEN 's' ELSE 1 END",
        "incompatible types `string` and `i64`",
    );
    err(
        "CASE WHEN i THEN 1 END",
        "a `WHEN` condition must be bool, found `i32`",
    );
    err("CASE WHEN b THEN NULL END", "has no type");
}

#[test]
fn functions() {
    ok("lower(s)", "lower(s)", "string");
    ok("upper(os)", "upper(os)", "string?");
    ok("length(s)", "length(s)", "i64");
    ok("contains(s, 'a')", "contains(s, 'a')", "bool");
    ok("starts_with(os, s)", "startswith(os, s)", "bool?");
    ok("ends_with(s, 'z')", "endswith(s, 'z')", "bool");
    ok("abs(i)", "abs(i)", "i32");
    ok("abs(-on)", "abs(-on)", "i64?");
    ok("round(d)", "round(d)", "f64");
    ok("round(f)", "round(f64(f))", "f64");
    ok("round(i)", "round(i)", "i32");
    ok("round(d, 2)", "round(d, 2:i64)", "f64");
    ok("round(i, 2)", "round(f64(i), 2:i64)", "f64");
    ok("floor(l)", "floor(l)", "i64");
    ok("ceil(f)", "ceil(f64(f))", "f64");
    ok("coalesce(on, 0)", "coalesce(on, 0:i64)", "i64");
    ok("coalesce(on, on)", "coalesce(on, on)", "i64?");
    ok("coalesce(on, d)", "coalesce(f64(on), d)", "f64");
    ok("coalesce(os, 'none')", "coalesce(os, 'none')", "string");
    ok("LOWER(s)", "lower(s)", "string");
    err("coalesce(os, on)", "incompatible types `string` and `i64`");
    err("lower(i)", "`lower` expects a string, found `i32`");
    err(
        "round(d, i)",
        "the digits of `round` must be an integer literal",
    );
    err("abs(s)", "`abs` expects a number, found `string`");
    err("lower(s, s)", "wrong number of arguments to `lower`");
    err("lowr(s)", "unknown function `lowr`");
    err("abs(*)", "`abs(*)` is not valid");
}

#[test]
fn unknown_fields_and_hints() {
    let src = "sttus > 1";
    let e = parse(src, &offsets(src)).unwrap();
    let fields = row();
    let mut rep = reporter(src);
    assert!(
        Typer::row(
            &mut rep,
            Row {
                fields: &fields,
                complete: true,
                poisoned: &[],
            },
            &[]
        )
        .expr(&e)
        .is_none()
    );
    let (errors, _) = rep.finish();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message(), "unknown field `sttus`");
    assert_eq!(errors[0].span(), Some(Span::new(0, 5)));
    assert_eq!(errors[0].help_text(), Some("did you mean `status`?"));

    // A name defined by the same map step gets its own hint.
    let src = "twice + 1";
    let e = parse(src, &offsets(src)).unwrap();
    let mut rep = reporter(src);
    let pending = vec!["twice".to_string()];
    assert!(
        Typer::row(
            &mut rep,
            Row {
                fields: &fields,
                complete: true,
                poisoned: &[],
            },
            &pending
        )
        .expr(&e)
        .is_none()
    );
    let (errors, _) = rep.finish();
    assert!(errors[0].help_text().unwrap().contains("same `map` step"));

    // Both unknown fields are reported; an incomplete row reports none.
    err("zzz = 1 AND yyy = 2", "unknown field `zzz`");
    assert_eq!(typed("zzz = 1 AND yyy = 2").unwrap_err().len(), 2);
    let src = "zzz = 1";
    let e = parse(src, &offsets(src)).unwrap();
    let mut rep = reporter(src);
    assert!(
        Typer::row(
            &mut rep,
            Row {
                fields: &fields,
                complete: false,
                poisoned: &[],
            },
            &[]
        )
        .expr(&e)
        .is_none()
    );
    assert!(!rep.has_errors());
}

#[test]
fn aggregates_outside_aggregate_are_errors() {
    err(
        "count() > 1",
        "aggregate function `count` is only allowed in `aggregate`",
    );
    err("sum(i) > 1", "only allowed in `aggregate`");
}

/// Types each source as one output of an aggregate block (sharing accumulators).
/// Accumulators and `(rendering, type)` of each output.
type Typed = (Vec<AccPlan>, Vec<(String, String)>);

fn agg(srcs: &[&str]) -> Result<Typed, Vec<String>> {
    let fields = row();
    let mut ctx = AggCtx::new(vec!["s".to_string()]);
    let mut outs = Vec::new();
    let mut errors = Vec::new();
    for src in srcs {
        let e = parse(src, &offsets(src)).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        let mut rep = reporter(src);
        let t = Typer::aggregate(
            &mut rep,
            Row {
                fields: &fields,
                complete: true,
                poisoned: &[],
            },
            &mut ctx,
        )
        .expr(&e);
        errors.extend(rep.finish().0.iter().map(|d| d.message().to_string()));
        if let Some(t) = t {
            outs.push((show(&t), ty(&t)));
        }
    }
    if errors.is_empty() {
        Ok((ctx.accs, outs))
    } else {
        Err(errors)
    }
}

fn acc(a: &AccPlan) -> String {
    format!(
        "{:?}({}){}:{}{}",
        a.func,
        a.arg.as_ref().map(show).unwrap_or_default(),
        a.q.map(|q| format!("@{q}")).unwrap_or_default(),
        a.ty.name(),
        if a.nullable { "?" } else { "" }
    )
}

fn agg_ok(srcs: &[&str], accs: &[&str], outs: &[(&str, &str)]) {
    let (a, o) = agg(srcs).unwrap_or_else(|e| panic!("{srcs:?}: {e:?}"));
    assert_eq!(a.iter().map(acc).collect::<Vec<_>>(), accs, "{srcs:?}");
    let o: Vec<(&str, &str)> = o.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(o, outs, "{srcs:?}");
}

fn agg_err(src: &str, message: &str) {
    match agg(&[src]) {
        Ok((_, o)) => panic!("{src}: expected an error, got {o:?}"),
        Err(e) => assert!(e.iter().any(|m| m.contains(message)), "{src}: {e:?}"),
    }
}

#[test]
fn accumulators() {
    agg_ok(
        &[
            "count()",
            "count(*)",
            "count(on)",
            "count_if(b)",
            "count_distinct(s)",
            "approx_count_distinct(s)",
        ],
        &[
            "CountAll():u64",
            "Count(on):u64",
            "CountIf(b):u64",
            "CountDistinct(s):u64",
            "ApproxCountDistinct(s):u64",
        ],
        &[
            ("acc0", "u64"),
            ("acc0", "u64"),
            ("acc1", "u64"),
            ("acc2", "u64"),
            ("acc3", "u64"),
            ("acc4", "u64"),
        ],
    );
    agg_ok(
        &[
            "sum(i)",
            "sum(u)",
            "sum(f)",
            "avg(i)",
            "quantile(d, 0.95)",
            "quantile(d, 1)",
        ],
        &[
            "Sum(i64(i)):i64?",
            "Sum(u64(u)):u64?",
            "Sum(f64(f)):f64?",
            "Avg(f64(i)):f64?",
            "Quantile(d)@0.95:f64?",
            "Quantile(d)@1:f64?",
        ],
        &[
            ("acc0", "i64?"),
            ("acc1", "u64?"),
            ("acc2", "f64?"),
            ("acc3", "f64?"),
            ("acc4", "f64?"),
            ("acc5", "f64?"),
        ],
    );
    agg_ok(
        &["min(s)", "max(ts)", "first(os)", "last(b)"],
        &[
            "Min(s):string?",
            "Max(ts):timestamp?",
            "First(os):string?",
            "Last(b):bool?",
        ],
        &[
            ("acc0", "string?"),
            ("acc1", "timestamp?"),
            ("acc2", "string?"),
            ("acc3", "bool?"),
        ],
    );
}

#[test]
fn identical_calls_share_an_accumulator() {
    agg_ok(
        &[
            "sum(d)",
            "sum( d )",
            "SUM(d) / 2",
            "sum(d + 1)",
            "quantile(d, 0.5)",
            "quantile(d, 0.9)",
        ],
        &[
            "Sum(d):f64?",
            "Sum((d + 1:f64)):f64?",
            "Quantile(d)@0.5:f64?",
            "Quantile(d)@0.9:f64?",
        ],
        &[
            ("acc0", "f64?"),
            ("acc0", "f64?"),
            ("(acc0 / 2:f64)", "f64?"),
            ("acc1", "f64?"),
            ("acc2", "f64?"),
            ("acc3", "f64?"),
        ],
    );
}

#[test]
fn a_ratio_of_counts_is_a_float() {
    agg_ok(
        &["count_if(b) / count()"],
        &["CountIf(b):u64", "CountAll():u64"],
        &[("(f64(acc0) / f64(acc1))", "f64?")],
    );
    agg_ok(
        &["count() / 2"],
        &["CountAll():u64"],
        &[("(f64(acc0) / 2:f64)", "f64?")],
    );
    agg_ok(
        &["sum(i) / count()"],
        &["Sum(i64(i)):i64?", "CountAll():u64"],
        &[("(f64(acc0) / f64(acc1))", "f64?")],
    );
    agg_ok(
        &["(count_if(b) + 1) / count(on)"],
        &["CountIf(b):u64", "Count(on):u64"],
        &[("(f64((acc0 + 1:u64)) / f64(acc1))", "f64?")],
    );
    // Not counts: integer division stays.
    agg_ok(
        &["sum(l) / 2"],
        &["Sum(l):i64?"],
        &[("(acc0 / 2:i64)", "i64?")],
    );
    agg_ok(
        &["count() + 1"],
        &["CountAll():u64"],
        &[("(acc0 + 1:u64)", "u64")],
    );
    agg_ok(
        &["sum(d) / count()"],
        &["Sum(d):f64?", "CountAll():u64"],
        &[("(acc0 / f64(acc1))", "f64?")],
    );
}

#[test]
fn aggregate_errors() {
    agg_err("sum(s)", "cannot compute `sum` of `string`");
    agg_err("avg(b)", "cannot compute `avg` of `bool`");
    agg_err("min(b)", "`min` of `bool` is not supported");
    agg_err("count_if(i)", "`count_if` needs a condition");
    agg_err("quantile(d, 1.5)", "quantile 1.5 is out of range");
    agg_err("quantile(d, i)", "the quantile must be a number literal");
    agg_err("quantile(d)", "wrong number of arguments to `quantile`");
    agg_err("sum(count())", "aggregate functions cannot be nested");
    agg_err(
        "i + count()",
        "field `i` is used outside an aggregate function",
    );
    agg_err("sum(*)", "`sum(*)` is not valid");
    agg_err("count(i, l)", "wrong number of arguments to `count`");
    agg_err("sum(zz)", "unknown field `zz`");
    agg_err("sun(i)", "unknown function `sun`");
    let e = agg(&["s"]).unwrap_err();
    assert_eq!(e, vec!["field `s` is used outside an aggregate function"]);
}
