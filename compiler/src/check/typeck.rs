//! The expression type checker: untyped [`Expr`] against a row → [`TExpr`].
//!
//! The rules the code generator relies on (see also `plan.rs`):
//! - both operands of an arithmetic or comparison `Binary` have the same `ty` (casts are
//!   inserted; an integer literal takes the other side's type when it fits; the literal
//!   NULL keeps `ty: None`);
//! - integers of different types meet at i64 (u64 if both are unsigned), anything with a
//!   float at f64;
//! - `timestamp ± integer` and `timestamp - timestamp` are i64 arithmetic on the casted
//!   timestamp; a timestamp compares with a timestamp, an integer literal (which becomes a
//!   timestamp literal) or an integer expression (both sides cast to i64);
//! - `/` and `%` are nullable (division by zero is NULL);
//! - in aggregate outputs a `/` between integer operands where one side is a count (or
//!   arithmetic over counts) is a float division: both sides are cast to f64.

use super::aggregates;
use super::functions::{self, CallError};
use crate::diag::{Diagnostic, Reporter, Span, did_you_mean, list_names};
use crate::plan::{AccPlan, AggFn, BinOp, Field, Lit, TExpr, TExprKind, Type, UnOp};
use crate::spec::expr::{Expr, ExprKind, Literal, binop_symbol};

/// The row an expression is checked against.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    pub fields: &'a [Field],
    /// False when the row is not fully known (an earlier error): unknown names are then
    /// not reported.
    pub complete: bool,
    /// Names known to exist whose type is unknown (an earlier error): uses of them are
    /// not reported.
    pub poisoned: &'a [String],
}

/// The accumulators of one `aggregate` block, deduplicated.
#[derive(Default)]
pub(crate) struct AggCtx {
    pub accs: Vec<AccPlan>,
    keys: Vec<(AggFn, String, Option<u64>)>,
    /// The flow's key fields (for a hint when one is used bare).
    pub key_fields: Vec<String>,
}

impl AggCtx {
    pub fn new(key_fields: Vec<String>) -> AggCtx {
        AggCtx {
            key_fields,
            ..AggCtx::default()
        }
    }
}

pub(crate) fn texpr(kind: TExprKind, ty: Option<Type>, nullable: bool) -> TExpr {
    TExpr { kind, ty, nullable }
}

fn int_lit(e: &TExpr) -> Option<i64> {
    match e.kind {
        TExprKind::Lit(Lit::Int(v)) => Some(v),
        _ => None,
    }
}

fn is_num_lit(e: &TExpr) -> bool {
    matches!(e.kind, TExprKind::Lit(Lit::Int(_) | Lit::Float(_)))
}

/// Whether integer literal `v` can be given type `t`.
fn fits(v: i64, t: Type) -> bool {
    match t {
        Type::I32 => i32::try_from(v).is_ok(),
        Type::U32 => u32::try_from(v).is_ok(),
        Type::U64 => v >= 0,
        Type::I64 | Type::F32 | Type::F64 | Type::Timestamp => true,
        Type::Bool | Type::String => false,
    }
}

/// The type two numeric types meet at.
pub(crate) fn promote(a: Type, b: Type) -> Option<Type> {
    if a == b {
        return Some(a);
    }
    if !(a.is_numeric() && b.is_numeric()) {
        return None;
    }
    Some(if a.is_float() || b.is_float() {
        Type::F64
    } else if matches!(a, Type::U32 | Type::U64) && matches!(b, Type::U32 | Type::U64) {
        Type::U64
    } else {
        Type::I64
    })
}

/// Converts `e` to type `to`: nothing if it has it (or is NULL), a retyped literal for a
/// numeric literal, a `Cast` otherwise.
pub(crate) fn coerce(e: TExpr, to: Type) -> TExpr {
    match e.ty {
        Some(t) if t == to => return e,
        None => return e,
        _ => {}
    }
    match e.kind {
        // A cast of a cast (u64 -> i64 -> f64) converts the original value once.
        TExprKind::Cast { expr, .. } if expr.ty.is_some_and(Type::is_numeric) => coerce(*expr, to),
        TExprKind::Lit(Lit::Int(v))
            if (to.is_numeric() || to == Type::Timestamp) && fits(v, to) =>
        {
            texpr(TExprKind::Lit(Lit::Int(v)), Some(to), false)
        }
        TExprKind::Lit(Lit::Float(v)) if to.is_float() => {
            texpr(TExprKind::Lit(Lit::Float(v)), Some(to), false)
        }
        kind => {
            let nullable = e.nullable;
            texpr(
                TExprKind::Cast {
                    expr: Box::new(TExpr { kind, ..e }),
                    to,
                },
                Some(to),
                nullable,
            )
        }
    }
}

/// The common type of several values (CASE branches, coalesce arguments): numeric
/// literals adapt to the typed values, other numbers are promoted. `Ok(None)` when all
/// are NULL; `Err((index, a, b))` when value `index` (type `b`) does not go with `a`.
pub(crate) fn common_type(items: &[TExpr]) -> Result<Option<Type>, (usize, Type, Type)> {
    let mut ty: Option<Type> = None;
    for (i, item) in items.iter().enumerate() {
        let Some(t) = item.ty else { continue };
        if is_num_lit(item) {
            continue;
        }
        ty = match ty {
            None => Some(t),
            Some(cur) => Some(promote(cur, t).ok_or((i, cur, t))?),
        };
    }
    for (i, item) in items.iter().enumerate() {
        if !is_num_lit(item) {
            continue;
        }
        let lit_ty = item.ty.unwrap_or(Type::I64);
        ty = match (ty, int_lit(item)) {
            (None, _) => Some(lit_ty),
            (Some(cur), Some(v))
                if (cur.is_numeric() || cur == Type::Timestamp) && fits(v, cur) =>
            {
                Some(cur)
            }
            (Some(cur), _) => Some(promote(cur, lit_ty).ok_or((i, cur, lit_ty))?),
        };
    }
    Ok(ty)
}

fn ty_name(t: Option<Type>) -> &'static str {
    t.map_or("NULL", Type::name)
}

/// Checks expressions against one row; reports into `rep`.
pub(crate) struct Typer<'a, 'r> {
    rep: &'r mut Reporter,
    row: Row<'a>,
    /// Names defined by the `map` step being checked (for a hint: they are not visible).
    pending: &'a [String],
    agg: Option<&'a mut AggCtx>,
    in_agg_arg: bool,
}

impl<'a, 'r> Typer<'a, 'r> {
    /// For row expressions (filter, map): aggregate functions are errors.
    pub fn row(rep: &'r mut Reporter, row: Row<'a>, pending: &'a [String]) -> Self {
        Typer {
            rep,
            row,
            pending,
            agg: None,
            in_agg_arg: false,
        }
    }

    /// For the outputs of an `aggregate` block: fields only inside aggregate calls.
    pub fn aggregate(rep: &'r mut Reporter, row: Row<'a>, agg: &'a mut AggCtx) -> Self {
        Typer {
            rep,
            row,
            pending: &[],
            agg: Some(agg),
            in_agg_arg: false,
        }
    }

    fn error(&mut self, d: Diagnostic) -> Option<TExpr> {
        self.rep.push(d);
        None
    }

    fn warn(&mut self, d: Diagnostic) {
        self.rep.push(d);
    }

    /// Types `e`; None after an error (reported) or when it depends on an unknown row.
    pub fn expr(&mut self, e: &Expr) -> Option<TExpr> {
        match &e.kind {
            ExprKind::Lit(l) => Some(match l {
                Literal::Null => texpr(TExprKind::Lit(Lit::Null), None, true),
                Literal::Bool(b) => texpr(TExprKind::Lit(Lit::Bool(*b)), Some(Type::Bool), false),
                Literal::Int(v) => texpr(TExprKind::Lit(Lit::Int(*v)), Some(Type::I64), false),
                Literal::Float(v) => texpr(TExprKind::Lit(Lit::Float(*v)), Some(Type::F64), false),
                Literal::Str(s) => texpr(
                    TExprKind::Lit(Lit::Str(s.clone())),
                    Some(Type::String),
                    false,
                ),
            }),
            ExprKind::Field(name) => self.field(name, e.span),
            ExprKind::Unary { op, op_span, expr } => self.unary(*op, *op_span, expr),
            ExprKind::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let l = self.expr(lhs);
                let r = self.expr(rhs);
                self.binary(*op, *op_span, (l?, lhs.span), (r?, rhs.span))
            }
            ExprKind::IsNull { expr, negated } => {
                let inner = self.expr(expr)?;
                Some(texpr(
                    TExprKind::IsNull {
                        expr: Box::new(inner),
                        negated: *negated,
                    },
                    Some(Type::Bool),
                    false,
                ))
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated),
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => self.case(e.span, operand.as_deref(), branches, otherwise.as_deref()),
            ExprKind::Call {
                name,
                name_span,
                args,
                star,
            } => self.call(e.span, name, *name_span, args, *star),
        }
    }

    fn field(&mut self, name: &str, span: Span) -> Option<TExpr> {
        if let Some(agg) = &self.agg
            && !self.in_agg_arg
        {
            let help = if agg.key_fields.iter().any(|k| k == name) {
                format!("`{name}` is a key field: it is already in every output row")
            } else {
                format!(
                    "aggregate it, for example `first({name})`, `max({name})` or `count_distinct({name})`"
                )
            };
            return self.error(
                Diagnostic::error(format!(
                    "field `{name}` is used outside an aggregate function"
                ))
                .label(span, "not aggregated")
                .help(help),
            );
        }
        if let Some(f) = self.row.fields.iter().find(|f| f.name == name) {
            return Some(texpr(
                TExprKind::Field(name.to_string()),
                Some(f.ty),
                f.nullable,
            ));
        }
        if !self.row.complete || self.row.poisoned.iter().any(|p| p == name) {
            return None;
        }
        let names = self.row.fields.iter().map(|f| f.name.as_str());
        let help = if self.pending.iter().any(|p| p == name) {
            format!(
                "`{name}` is defined in this same `map` step, and each expression sees the row as it was before the step; \
                 use it in a later step"
            )
        } else if let Some(s) = did_you_mean(name, names.clone()) {
            format!("did you mean `{s}`?")
        } else if self.row.fields.is_empty() {
            "the row has no fields".to_string()
        } else {
            format!("the row has {}", list_names(names, 12))
        };
        self.error(
            Diagnostic::error(format!("unknown field `{name}`"))
                .label(span, "not a field of the row")
                .help(help),
        )
    }

    fn unary(&mut self, op: UnOp, op_span: Span, expr: &Expr) -> Option<TExpr> {
        let inner = self.expr(expr)?;
        match op {
            UnOp::Not => {
                if !matches!(inner.ty, Some(Type::Bool) | None) {
                    return self.error(
                        Diagnostic::error(format!(
                            "`NOT` needs a condition (bool), found `{}`",
                            ty_name(inner.ty)
                        ))
                        .label(expr.span, ty_name(inner.ty))
                        .label(op_span, "NOT"),
                    );
                }
                let nullable = inner.nullable;
                Some(texpr(
                    TExprKind::Unary {
                        op,
                        expr: Box::new(inner),
                    },
                    Some(Type::Bool),
                    nullable,
                ))
            }
            UnOp::Neg => {
                let ty = match inner.ty {
                    Some(t @ (Type::I32 | Type::I64 | Type::F32 | Type::F64)) => t,
                    Some(Type::U32 | Type::U64) => Type::I64,
                    t => {
                        return self.error(
                            Diagnostic::error(format!("cannot negate `{}`", ty_name(t)))
                                .label(op_span, "unary minus")
                                .label(expr.span, ty_name(t)),
                        );
                    }
                };
                let nullable = inner.nullable;
                Some(texpr(
                    TExprKind::Unary {
                        op,
                        expr: Box::new(coerce(inner, ty)),
                    },
                    Some(ty),
                    nullable,
                ))
            }
        }
    }

    fn mismatch(
        &mut self,
        message: String,
        op_span: Span,
        l: (&TExpr, Span),
        r: (&TExpr, Span),
        help: Option<String>,
    ) -> Option<TExpr> {
        self.error(
            Diagnostic::error(message)
                .label(op_span, "incompatible types")
                .label(l.1, format!("this is `{}`", ty_name(l.0.ty)))
                .label(r.1, format!("this is `{}`", ty_name(r.0.ty)))
                .maybe_help(help),
        )
    }

    fn binary(
        &mut self,
        op: BinOp,
        op_span: Span,
        (l, ls): (TExpr, Span),
        (r, rs): (TExpr, Span),
    ) -> Option<TExpr> {
        let sym = binop_symbol(op);
        let mk = |op, l: TExpr, r: TExpr, ty, nullable| {
            texpr(
                TExprKind::Binary {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                },
                ty,
                nullable,
            )
        };
        let nullable = l.nullable || r.nullable;
        match op {
            BinOp::And | BinOp::Or => {
                for (side, span) in [(&l, ls), (&r, rs)] {
                    if !matches!(side.ty, Some(Type::Bool) | None) {
                        return self.error(
                            Diagnostic::error(format!(
                                "`{sym}` needs conditions (bool), found `{}`",
                                ty_name(side.ty)
                            ))
                            .label(span, format!("this is `{}`", ty_name(side.ty)))
                            .label(op_span, sym),
                        );
                    }
                }
                Some(mk(op, l, r, Some(Type::Bool), nullable))
            }
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                if l.ty.is_none() || r.ty.is_none() {
                    let which = if l.ty.is_none() { ls } else { rs };
                    self.warn(
                        Diagnostic::warning(format!(
                            "a comparison with NULL is never true: `{sym} NULL` is NULL"
                        ))
                        .label(which, "NULL")
                        .help("test for a missing value with `IS NULL` or `IS NOT NULL`"),
                    );
                    if l.ty.is_none() && r.ty.is_none() {
                        return self.error(
                            Diagnostic::error("cannot compare NULL with NULL")
                                .label(op_span, "both sides are NULL")
                                .help("use `IS NULL`"),
                        );
                    }
                }
                let ordering = !matches!(op, BinOp::Eq | BinOp::NotEq);
                let (l, r) = match self.unify(l, r) {
                    Ok((l, r, t)) => {
                        if t == Some(Type::Bool) && ordering {
                            return self.error(
                                Diagnostic::error(format!("cannot order booleans with `{sym}`"))
                                    .label(op_span, "only `=` and `<>` apply to bool"),
                            );
                        }
                        (l, r)
                    }
                    Err((l, r)) => {
                        let ts_int = |a: Option<Type>, b: Option<Type>| {
                            a == Some(Type::Timestamp) && b.is_some_and(Type::is_integer)
                        };
                        if ts_int(l.ty, r.ty) || ts_int(r.ty, l.ty) {
                            (coerce(l, Type::I64), coerce(r, Type::I64))
                        } else {
                            let help = match (l.ty, r.ty) {
                                (Some(Type::String), Some(t)) | (Some(t), Some(Type::String)) if t.is_numeric() => {
                                    Some("strings only compare with strings; string literals are in single quotes: 'text'".to_string())
                                }
                                _ => None,
                            };
                            return self.mismatch(
                                format!(
                                    "cannot compare `{}` with `{}`",
                                    ty_name(l.ty),
                                    ty_name(r.ty)
                                ),
                                op_span,
                                (&l, ls),
                                (&r, rs),
                                help,
                            );
                        }
                    }
                };
                Some(mk(op, l, r, Some(Type::Bool), nullable))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                if l.ty.is_none() && r.ty.is_none() {
                    return self.error(
                        Diagnostic::error(format!("`NULL {sym} NULL` has no type"))
                            .label(op_span, "both sides are NULL"),
                    );
                }
                let nullable = nullable || matches!(op, BinOp::Div | BinOp::Mod);
                let ts = Some(Type::Timestamp);
                if l.ty == ts || r.ty == ts {
                    let int_or_null = |t: Option<Type>| t.is_none_or(Type::is_integer);
                    let ok = match op {
                        BinOp::Add => {
                            (l.ty == ts && int_or_null(r.ty)) || (r.ty == ts && int_or_null(l.ty))
                        }
                        BinOp::Sub => l.ty == ts && (int_or_null(r.ty) || r.ty == ts),
                        _ => false,
                    };
                    if !ok {
                        return self.mismatch(
                            format!("cannot apply `{sym}` to `{}` and `{}`", ty_name(l.ty), ty_name(r.ty)),
                            op_span,
                            (&l, ls),
                            (&r, rs),
                            Some(
                                "timestamps support `timestamp + millis`, `timestamp - millis` and `timestamp - timestamp` (i64 millis)"
                                    .to_string(),
                            ),
                        );
                    }
                    let (l, r) = (coerce(l, Type::I64), coerce(r, Type::I64));
                    return Some(mk(op, l, r, Some(Type::I64), nullable));
                }
                let numeric = |t: Option<Type>| t.is_none_or(Type::is_numeric);
                if !numeric(l.ty) || !numeric(r.ty) {
                    return self.mismatch(
                        format!(
                            "cannot apply `{sym}` to `{}` and `{}`",
                            ty_name(l.ty),
                            ty_name(r.ty)
                        ),
                        op_span,
                        (&l, ls),
                        (&r, rs),
                        Some("arithmetic needs numbers".to_string()),
                    );
                }
                let (mut l, mut r, mut ty) = match self.unify(l, r) {
                    Ok(x) => x,
                    Err((l, r)) => {
                        return self.mismatch(
                            format!(
                                "cannot apply `{sym}` to `{}` and `{}`",
                                ty_name(l.ty),
                                ty_name(r.ty)
                            ),
                            op_span,
                            (&l, ls),
                            (&r, rs),
                            None,
                        );
                    }
                };
                if op == BinOp::Div
                    && ty.is_some_and(Type::is_integer)
                    && let Some(agg) = &self.agg
                    && !self.in_agg_arg
                {
                    let funcs: Vec<AggFn> = agg.accs.iter().map(|a| a.func).collect();
                    if aggregates::is_count_expr(&l, &funcs)
                        || aggregates::is_count_expr(&r, &funcs)
                    {
                        l = coerce(l, Type::F64);
                        r = coerce(r, Type::F64);
                        ty = Some(Type::F64);
                    }
                }
                Some(mk(op, l, r, ty, nullable))
            }
        }
    }

    /// Brings two operands to one type; `Err` gives them back when they do not go together.
    #[allow(clippy::result_large_err)]
    fn unify(&self, l: TExpr, r: TExpr) -> Result<(TExpr, TExpr, Option<Type>), (TExpr, TExpr)> {
        match (l.ty, r.ty) {
            (None, None) => Ok((l, r, None)),
            (None, Some(t)) | (Some(t), None) => Ok((l, r, Some(t))),
            (Some(a), Some(b)) if a == b => Ok((l, r, Some(a))),
            (Some(a), Some(b)) => {
                let adapts = |v: Option<i64>, t: Type| {
                    v.is_some_and(|v| (t.is_numeric() || t == Type::Timestamp) && fits(v, t))
                };
                if adapts(int_lit(&l), b) {
                    return Ok((coerce(l, b), r, Some(b)));
                }
                if adapts(int_lit(&r), a) {
                    return Ok((l, coerce(r, a), Some(a)));
                }
                match promote(a, b) {
                    Some(t) => Ok((coerce(l, t), coerce(r, t), Some(t))),
                    None => Err((l, r)),
                }
            }
        }
    }

    fn in_list(&mut self, expr: &Expr, list: &[Expr], negated: bool) -> Option<TExpr> {
        let value = self.expr(expr);
        let items: Vec<Option<TExpr>> = list.iter().map(|i| self.expr(i)).collect();
        let value = value?;
        let Some(ty) = value.ty else {
            return self.error(
                Diagnostic::error("`NULL IN (...)` is always NULL")
                    .label(expr.span, "NULL")
                    .help("test for a missing value with `IS NULL`"),
            );
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (item, e) in items.into_iter().zip(list) {
            let Some(item) = item else {
                ok = false;
                continue;
            };
            let fits_in = match item.ty {
                None => true,
                Some(t) if t == ty => true,
                Some(_)
                    if int_lit(&item).is_some_and(|v| {
                        (ty.is_numeric() || ty == Type::Timestamp) && fits(v, ty)
                    }) =>
                {
                    true
                }
                Some(t) if t.is_float() && is_num_lit(&item) => ty.is_float(),
                Some(t) => promote(t, ty) == Some(ty),
            };
            if !fits_in {
                self.rep.push(
                    Diagnostic::error(format!(
                        "`IN` list item of type `{}` does not match `{}`",
                        ty_name(item.ty),
                        ty.name()
                    ))
                    .label(e.span, format!("this is `{}`", ty_name(item.ty)))
                    .label(expr.span, format!("this is `{}`", ty.name())),
                );
                ok = false;
                continue;
            }
            out.push(coerce(item, ty));
        }
        if !ok {
            return None;
        }
        let nullable = value.nullable || out.iter().any(|i| i.nullable);
        Some(texpr(
            TExprKind::InList {
                expr: Box::new(value),
                list: out,
                negated,
            },
            Some(Type::Bool),
            nullable,
        ))
    }

    fn case(
        &mut self,
        span: Span,
        operand: Option<&Expr>,
        branches: &[(Expr, Expr)],
        otherwise: Option<&Expr>,
    ) -> Option<TExpr> {
        let mut ok = true;
        let mut conds = Vec::new();
        let mut values = Vec::new();
        let mut value_spans = Vec::new();
        for (when, then) in branches {
            let cond = match operand {
                // `CASE x WHEN v` is `CASE WHEN x = v`.
                Some(o) => {
                    let l = self.expr(o);
                    let r = self.expr(when);
                    match (l, r) {
                        (Some(l), Some(r)) => {
                            self.binary(BinOp::Eq, when.span, (l, o.span), (r, when.span))
                        }
                        _ => None,
                    }
                }
                None => {
                    let c = self.expr(when);
                    if let Some(c) = &c
                        && !matches!(c.ty, Some(Type::Bool) | None)
                    {
                        self.rep.push(
                            Diagnostic::error(format!(
                                "a `WHEN` condition must be bool, found `{}`",
                                ty_name(c.ty)
                            ))
                            .label(when.span, format!("this is `{}`", ty_name(c.ty))),
                        );
                        ok = false;
                    }
                    c
                }
            };
            let value = self.expr(then);
            match (cond, value) {
                (Some(c), Some(v)) => {
                    conds.push(c);
                    values.push(v);
                    value_spans.push(then.span);
                }
                _ => ok = false,
            }
        }
        let otherwise_t = match otherwise {
            Some(e) => {
                let t = self.expr(e);
                if t.is_none() {
                    ok = false;
                }
                value_spans.push(e.span);
                t
            }
            None => None,
        };
        if !ok {
            return None;
        }
        let mut all: Vec<TExpr> = values;
        let has_else = otherwise_t.is_some();
        all.extend(otherwise_t);
        let ty = match common_type(&all) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return self.error(
                    Diagnostic::error("every branch of this `CASE` is NULL, so it has no type")
                        .label(span, "no type"),
                );
            }
            Err((i, a, b)) => {
                return self.error(
                    Diagnostic::error(format!("`CASE` branches have incompatible types `{}` and `{}`", a.name(), b.name()))
                        .label(value_spans[i], format!("this is `{}`", b.name()))
                        .help("every THEN and ELSE value must have one type (numbers of different types are promoted)"),
                );
            }
        };
        let nullable = !has_else || all.iter().any(|v| v.nullable);
        let mut all: Vec<TExpr> = all.into_iter().map(|v| coerce(v, ty)).collect();
        let otherwise = if has_else {
            all.pop().map(Box::new)
        } else {
            None
        };
        Some(texpr(
            TExprKind::Case {
                branches: conds.into_iter().zip(all).collect(),
                otherwise,
            },
            Some(ty),
            nullable,
        ))
    }

    fn call(
        &mut self,
        span: Span,
        name: &str,
        name_span: Span,
        args: &[Expr],
        star: bool,
    ) -> Option<TExpr> {
        if let Some(func) = aggregates::lookup(name) {
            return self.agg_call(span, name, name_span, func, args, star);
        }
        let Some(func) = functions::lookup(name) else {
            let mut candidates: Vec<&str> =
                functions::FUNCTIONS.iter().map(|(n, _, _)| *n).collect();
            candidates.extend(aggregates::AGGREGATES.iter().map(|(n, _)| *n));
            let help = match did_you_mean(name, candidates.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "functions are {}",
                    list_names(functions::FUNCTIONS.iter().map(|(n, _, _)| *n), 20)
                ),
            };
            return self.error(
                Diagnostic::error(format!("unknown function `{name}`"))
                    .label(name_span, "not a function")
                    .help(help),
            );
        };
        if star {
            return self.error(
                Diagnostic::error(format!("`{name}(*)` is not valid"))
                    .label(span, "`*` only goes in `count(*)`"),
            );
        }
        let typed: Vec<Option<TExpr>> = args.iter().map(|a| self.expr(a)).collect();
        let typed: Vec<TExpr> = typed.into_iter().collect::<Option<_>>()?;
        match functions::type_call(func, typed, args) {
            Ok(t) => Some(t),
            Err(CallError { message, arg, help }) => {
                let (at, label) = match arg.and_then(|i| args.get(i)) {
                    Some(a) => (a.span, "this argument"),
                    None => (span, "this call"),
                };
                self.error(Diagnostic::error(message).label(at, label).maybe_help(help))
            }
        }
    }

    fn agg_call(
        &mut self,
        span: Span,
        name: &str,
        name_span: Span,
        func: AggFn,
        args: &[Expr],
        star: bool,
    ) -> Option<TExpr> {
        if self.agg.is_none() {
            return self.error(
                Diagnostic::error(format!("aggregate function `{name}` is only allowed in `aggregate`"))
                    .label(name_span, "an aggregate function")
                    .help("aggregates are computed per window: use them in an `aggregate` step after `window`"),
            );
        }
        if self.in_agg_arg {
            return self.error(
                Diagnostic::error("aggregate functions cannot be nested")
                    .label(name_span, "inside another aggregate function")
                    .help("compute the inner value in a `map` step before the window, or combine aggregates outside: `sum(x) / count()`"),
            );
        }
        let func = if func == AggFn::Count && args.is_empty() {
            AggFn::CountAll
        } else {
            func
        };
        if star && func != AggFn::CountAll {
            return self.error(
                Diagnostic::error(format!("`{name}(*)` is not valid"))
                    .label(span, "`*` only goes in `count(*)`"),
            );
        }
        if !aggregates::arity_ok(func, args.len()) {
            return self.error(
                Diagnostic::error(format!(
                    "wrong number of arguments to `{name}`: found {}",
                    args.len()
                ))
                .label(span, "this call")
                .help(format!("write `{}`", aggregates::signature(func))),
            );
        }
        let mut q = None;
        if func == AggFn::Quantile {
            let v = match &args[1].kind {
                ExprKind::Lit(Literal::Float(v)) => Some(*v),
                ExprKind::Lit(Literal::Int(v)) => Some(*v as f64),
                _ => None,
            };
            match v {
                Some(v) if (0.0..=1.0).contains(&v) => q = Some(v),
                Some(v) => {
                    return self.error(
                        Diagnostic::error(format!("quantile {v} is out of range"))
                            .label(args[1].span, "must be between 0 and 1")
                            .help("for the 95th percentile write `quantile(x, 0.95)`"),
                    );
                }
                None => {
                    return self.error(
                        Diagnostic::error("the quantile must be a number literal")
                            .label(args[1].span, "not a literal")
                            .help("write `quantile(x, 0.95)`"),
                    );
                }
            }
        }
        let arg = match args.first() {
            Some(a) => {
                self.in_agg_arg = true;
                let t = self.expr(a);
                self.in_agg_arg = false;
                Some(t?)
            }
            None => None,
        };
        let (ty, nullable, arg) = match aggregates::acc_type(func, name, arg) {
            Ok(x) => x,
            Err(message) => {
                let at = args.first().map_or(span, |a| a.span);
                return self.error(
                    Diagnostic::error(message)
                        .label(at, "this argument")
                        .help(format!("write `{}`", aggregates::signature(func))),
                );
            }
        };
        let key = (
            func,
            args.first().map(|a| a.to_string()).unwrap_or_default(),
            q.map(f64::to_bits),
        );
        let agg = self.agg.as_deref_mut().expect("checked above");
        let index = match agg.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                agg.keys.push(key);
                agg.accs.push(AccPlan {
                    func,
                    arg,
                    q,
                    ty,
                    nullable,
                });
                agg.accs.len() - 1
            }
        };
        Some(texpr(TExprKind::Acc(index), Some(ty), nullable))
    }
}

#[cfg(test)]
mod tests;
