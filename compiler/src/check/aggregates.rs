//! Aggregate functions: names and the type of each accumulator. Adding an aggregate
//! means one entry in [`AGGREGATES`] and one arm in [`acc_type`] (and its runtime
//! accumulator).

use super::typeck::coerce;
use crate::plan::{AggFn, TExpr, TExprKind, Type};

/// `count` maps to [`AggFn::Count`]; `count()` and `count(*)` become
/// [`AggFn::CountAll`] once the arguments are known.
pub(super) const AGGREGATES: [(&str, AggFn); 11] = [
    ("count", AggFn::Count),
    ("count_if", AggFn::CountIf),
    ("sum", AggFn::Sum),
    ("min", AggFn::Min),
    ("max", AggFn::Max),
    ("avg", AggFn::Avg),
    ("first", AggFn::First),
    ("last", AggFn::Last),
    ("count_distinct", AggFn::CountDistinct),
    ("approx_count_distinct", AggFn::ApproxCountDistinct),
    ("quantile", AggFn::Quantile),
];

pub(super) fn lookup(name: &str) -> Option<AggFn> {
    AGGREGATES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Accumulators whose value is a count: a ratio of two of them is a float.
pub(super) fn is_count_kind(f: AggFn) -> bool {
    matches!(
        f,
        AggFn::CountAll
            | AggFn::Count
            | AggFn::CountIf
            | AggFn::CountDistinct
            | AggFn::ApproxCountDistinct
    )
}

/// The number of arguments of a call (after `count(*)` became `count()`).
pub(super) fn arity_ok(f: AggFn, n: usize) -> bool {
    match f {
        AggFn::CountAll => n == 0,
        AggFn::Quantile => n == 2,
        _ => n == 1,
    }
}

pub(super) fn signature(f: AggFn) -> &'static str {
    match f {
        AggFn::CountAll | AggFn::Count => "count(), count(*) or count(x)",
        AggFn::CountIf => "count_if(condition)",
        AggFn::Sum => "sum(number)",
        AggFn::Min => "min(x)",
        AggFn::Max => "max(x)",
        AggFn::Avg => "avg(number)",
        AggFn::First => "first(x)",
        AggFn::Last => "last(x)",
        AggFn::CountDistinct => "count_distinct(x)",
        AggFn::ApproxCountDistinct => "approx_count_distinct(x)",
        AggFn::Quantile => "quantile(number, q) with q a literal in [0, 1]",
    }
}

/// The accumulator's result type and nullability, and its argument as the accumulator
/// takes it: `sum`, `avg` and `quantile` get their argument already cast to the
/// accumulator's type (i64/u64/f64 for `sum`, f64 for `avg` and `quantile`).
pub(super) fn acc_type(
    f: AggFn,
    name: &str,
    arg: Option<TExpr>,
) -> Result<(Type, bool, Option<TExpr>), String> {
    let Some(arg) = arg else {
        return Ok((Type::U64, false, None));
    };
    let arg_ty = arg.ty;
    let untyped = || format!("`{name}(NULL)` has no type");
    match f {
        AggFn::CountAll | AggFn::Count | AggFn::CountDistinct | AggFn::ApproxCountDistinct => {
            Ok((Type::U64, false, Some(arg)))
        }
        AggFn::CountIf => match arg_ty {
            Some(Type::Bool) | None => Ok((Type::U64, false, Some(arg))),
            Some(t) => Err(format!(
                "`count_if` needs a condition (bool), found `{}`",
                t.name()
            )),
        },
        AggFn::Sum | AggFn::Avg | AggFn::Quantile => {
            let t = arg_ty.ok_or_else(untyped)?;
            if !t.is_numeric() {
                return Err(format!(
                    "cannot compute `{name}` of `{}`: it needs a number",
                    t.name()
                ));
            }
            let acc = match f {
                AggFn::Sum if t.is_float() => Type::F64,
                AggFn::Sum if matches!(t, Type::U32 | Type::U64) => Type::U64,
                AggFn::Sum => Type::I64,
                _ => Type::F64,
            };
            Ok((acc, true, Some(coerce(arg, acc))))
        }
        AggFn::Min | AggFn::Max => {
            let t = arg_ty.ok_or_else(untyped)?;
            if t == Type::Bool {
                return Err(format!(
                    "`{name}` of `bool` is not supported; use `count_if(x) > 0` (any) or `count_if(NOT x) = 0` (all)"
                ));
            }
            Ok((t, true, Some(arg)))
        }
        AggFn::First | AggFn::Last => {
            let t = arg_ty.ok_or_else(untyped)?;
            Ok((t, true, Some(arg)))
        }
    }
}

/// Whether `e` is a count accumulator, or arithmetic over count accumulators (and
/// integer literals) that involves at least one of them.
pub(super) fn is_count_expr(e: &TExpr, acc_funcs: &[AggFn]) -> bool {
    fn walk(e: &TExpr, accs: &[AggFn], seen: &mut bool) -> bool {
        match &e.kind {
            TExprKind::Acc(i) => {
                let ok = accs.get(*i).is_some_and(|f| is_count_kind(*f));
                *seen |= ok;
                ok
            }
            TExprKind::Lit(crate::plan::Lit::Int(_)) => true,
            TExprKind::Cast { expr, .. } => walk(expr, accs, seen),
            TExprKind::Binary { op, lhs, rhs } => {
                use crate::plan::BinOp::*;
                matches!(op, Add | Sub | Mul | Div | Mod)
                    && walk(lhs, accs, seen)
                    && walk(rhs, accs, seen)
            }
            _ => false,
        }
    }
    let mut seen = false;
    walk(e, acc_funcs, &mut seen) && seen
}
