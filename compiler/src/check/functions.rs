//! Scalar functions: names, signatures and typing rules. Adding a function means one
//! entry in [`FUNCTIONS`] and one arm in [`type_call`].

use super::typeck::{coerce, common_type, texpr};
use crate::plan::{Func, TExpr, TExprKind, Type};
use crate::spec::expr::{Expr, ExprKind, Literal};

/// Name, function, signature (for messages).
pub(super) const FUNCTIONS: [(&str, Func, &str); 11] = [
    ("lower", Func::Lower, "lower(string) -> string"),
    ("upper", Func::Upper, "upper(string) -> string"),
    ("length", Func::Length, "length(string) -> i64"),
    (
        "contains",
        Func::Contains,
        "contains(string, string) -> bool",
    ),
    (
        "starts_with",
        Func::StartsWith,
        "starts_with(string, string) -> bool",
    ),
    (
        "ends_with",
        Func::EndsWith,
        "ends_with(string, string) -> bool",
    ),
    ("abs", Func::Abs, "abs(number) -> number"),
    (
        "round",
        Func::Round,
        "round(number) or round(number, digits) -> f64",
    ),
    ("floor", Func::Floor, "floor(number) -> number"),
    ("ceil", Func::Ceil, "ceil(number) -> number"),
    (
        "coalesce",
        Func::Coalesce,
        "coalesce(value, value, ...) -> value",
    ),
];

pub(super) fn lookup(name: &str) -> Option<Func> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, f, _)| *f)
}

fn entry(f: Func) -> (&'static str, &'static str) {
    FUNCTIONS
        .iter()
        .find(|(_, g, _)| *g == f)
        .map(|(n, _, s)| (*n, *s))
        .unwrap_or(("?", "?"))
}

/// Why a call does not type-check. `arg`: the argument to point at (None: the call).
#[derive(Debug)]
pub(super) struct CallError {
    pub message: String,
    pub arg: Option<usize>,
    pub help: Option<String>,
}

impl CallError {
    fn arg(i: usize, message: String) -> CallError {
        CallError {
            message,
            arg: Some(i),
            help: None,
        }
    }
}

fn ty_name(t: Option<Type>) -> &'static str {
    t.map_or("NULL", Type::name)
}

/// Types a call whose arguments are typed. `exprs` are the untyped arguments (for
/// arguments that must be literals).
pub(super) fn type_call(func: Func, args: Vec<TExpr>, exprs: &[Expr]) -> Result<TExpr, CallError> {
    let (name, sig) = entry(func);
    let arity = |ok: bool| -> Result<(), CallError> {
        if ok {
            Ok(())
        } else {
            Err(CallError {
                message: format!(
                    "wrong number of arguments to `{name}`: found {}",
                    args.len()
                ),
                arg: None,
                help: Some(format!("the signature is `{sig}`")),
            })
        }
    };
    let want = |i: usize, a: &TExpr, ok: bool, what: &str| -> Result<(), CallError> {
        if ok || a.ty.is_none() {
            Ok(())
        } else {
            Err(CallError {
                message: format!("`{name}` expects {what}, found `{}`", ty_name(a.ty)),
                arg: Some(i),
                help: Some(format!("the signature is `{sig}`")),
            })
        }
    };
    let any_nullable = args.iter().any(|a| a.nullable);
    match func {
        Func::Lower | Func::Upper | Func::Length => {
            arity(args.len() == 1)?;
            want(0, &args[0], args[0].ty == Some(Type::String), "a string")?;
            let ty = if func == Func::Length {
                Type::I64
            } else {
                Type::String
            };
            Ok(texpr(
                TExprKind::Call { func, args },
                Some(ty),
                any_nullable,
            ))
        }
        Func::Contains | Func::StartsWith | Func::EndsWith => {
            arity(args.len() == 2)?;
            for (i, a) in args.iter().enumerate() {
                want(i, a, a.ty == Some(Type::String), "strings")?;
            }
            Ok(texpr(
                TExprKind::Call { func, args },
                Some(Type::Bool),
                any_nullable,
            ))
        }
        Func::Abs => {
            arity(args.len() == 1)?;
            let ty = numeric_arg(name, &args[0])?;
            Ok(texpr(
                TExprKind::Call { func, args },
                Some(ty),
                any_nullable,
            ))
        }
        Func::Round | Func::Floor | Func::Ceil => {
            arity(args.len() == 1 || (func == Func::Round && args.len() == 2))?;
            let ty = numeric_arg(name, &args[0])?;
            let mut args = args;
            if args.len() == 2 {
                match exprs.get(1).map(|e| &e.kind) {
                    Some(ExprKind::Lit(Literal::Int(n))) if i32::try_from(*n).is_ok() => {}
                    _ => {
                        return Err(CallError {
                            message: "the digits of `round` must be an integer literal".to_string(),
                            arg: Some(1),
                            help: Some("write `round(x, 2)`".to_string()),
                        });
                    }
                }
                let digits = args.pop().expect("two arguments");
                let x = coerce(args.pop().expect("two arguments"), Type::F64);
                let nullable = x.nullable;
                let args = vec![x, digits];
                return Ok(texpr(
                    TExprKind::Call { func, args },
                    Some(Type::F64),
                    nullable,
                ));
            }
            let ty = if ty.is_float() { Type::F64 } else { ty };
            let x = args.pop().expect("one argument");
            let args = vec![coerce(x, ty)];
            Ok(texpr(
                TExprKind::Call { func, args },
                Some(ty),
                any_nullable,
            ))
        }
        Func::Coalesce => {
            arity(!args.is_empty())?;
            let ty = match common_type(&args) {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return Err(CallError {
                        message: "`coalesce` of only NULLs has no type".to_string(),
                        arg: None,
                        help: None,
                    });
                }
                Err((i, a, b)) => {
                    return Err(CallError::arg(
                        i,
                        format!(
                            "`coalesce` arguments have incompatible types `{}` and `{}`",
                            a.name(),
                            b.name()
                        ),
                    ));
                }
            };
            let nullable = args.iter().all(|a| a.nullable);
            let args = args.into_iter().map(|a| coerce(a, ty)).collect();
            Ok(texpr(TExprKind::Call { func, args }, Some(ty), nullable))
        }
    }
}

fn numeric_arg(name: &str, a: &TExpr) -> Result<Type, CallError> {
    match a.ty {
        Some(t) if t.is_numeric() => Ok(t),
        Some(t) => Err(CallError::arg(
            0,
            format!("`{name}` expects a number, found `{}`", t.name()),
        )),
        None => Err(CallError::arg(0, format!("`{name}(NULL)` has no type"))),
    }
}
