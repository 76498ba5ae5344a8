//! Expressions → Rust. Every expression becomes a Rust expression of type
//! `Option<V>` (None = SQL NULL), `V` given by [`val_ty`]; the runtime's `expr`
//! helpers give SQL semantics and are inlined, so non-null values lose their `Some`.

use super::CodegenError;
use crate::plan::{BinOp, Func, Lit, TExpr, TExprKind, Type, UnOp};
use proc_macro2::{Ident, Literal, TokenStream};
use quote::quote;

/// A name visible to expressions: a local `Option<V>` variable.
#[derive(Clone, Debug)]
pub struct Binding {
    pub name: String,
    pub var: Ident,
    pub ty: Type,
    pub nullable: bool,
}

/// The row as seen by the expressions of one step: later bindings shadow earlier ones.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub bindings: Vec<Binding>,
}

impl Env {
    pub fn get(&self, name: &str) -> Option<&Binding> {
        self.bindings.iter().rev().find(|b| b.name == name)
    }
    pub fn push(&mut self, b: Binding) {
        self.bindings.push(b);
    }
}

/// The value type `V` of an expression of spec type `t` (strings are `Cow<str>` so that
/// fields borrowed from the input cost no copy).
pub fn val_ty(t: Type) -> TokenStream {
    match t {
        Type::Bool => quote!(bool),
        Type::I32 => quote!(i32),
        Type::I64 | Type::Timestamp => quote!(i64),
        Type::U32 => quote!(u32),
        Type::U64 => quote!(u64),
        Type::F32 => quote!(f32),
        Type::F64 => quote!(f64),
        Type::String => quote!(::std::borrow::Cow<'_, str>),
    }
}

/// The owned type of a value of spec type `t`, for struct fields.
pub fn owned_ty(t: Type) -> TokenStream {
    match t {
        Type::String => quote!(::std::string::String),
        other => val_ty(other),
    }
}

/// Reads a binding as an `Option<V>` expression (strings re-borrowed, no copy).
pub fn read(b: &Binding) -> TokenStream {
    let v = &b.var;
    if b.ty == Type::String {
        quote!(#v.as_deref().map(::std::borrow::Cow::Borrowed))
    } else {
        quote!(#v)
    }
}

/// What `TExprKind::Acc(i)` reads: the i-th accumulator value of a firing.
pub struct AccRefs<'a> {
    pub vars: &'a [Binding],
}

/// Generates the code of expressions against one row.
///
/// The code is flat: every operand that is not a leaf is computed into a `let` before the
/// operation that uses it (in the order Rust would evaluate it inline), so a chain such as
/// `a + b + c + ...` becomes one line per operator at one indentation, not a nest of
/// calls whose formatting grows with the square of its length. Only the parts SQL
/// evaluates lazily (the right side of `AND`/`OR`, CASE branches, later `coalesce`
/// arguments) open blocks of their own.
pub struct ExprGen<'a> {
    pub env: &'a Env,
    pub accs: Option<AccRefs<'a>>,
    next: std::cell::Cell<usize>,
}

fn rt() -> TokenStream {
    quote!(::streamc_runtime)
}

/// Whether `e` is generated as a short expression that needs no `let` of its own.
fn is_leaf(e: &TExpr) -> bool {
    match &e.kind {
        TExprKind::Lit(_) | TExprKind::Field(_) | TExprKind::Acc(_) => true,
        TExprKind::Binary { .. }
        | TExprKind::Unary { .. }
        | TExprKind::Cast { .. }
        | TExprKind::IsNull { .. }
        | TExprKind::InList { .. }
        | TExprKind::Case { .. }
        | TExprKind::Call { .. } => false,
    }
}

/// `{ stmts; value }`, or `value` alone when there is no statement.
fn block(stmts: Vec<TokenStream>, value: TokenStream) -> TokenStream {
    if stmts.is_empty() {
        value
    } else {
        quote!({ #(#stmts)* #value })
    }
}

impl<'a> ExprGen<'a> {
    pub fn new(env: &'a Env, accs: Option<AccRefs<'a>>) -> Self {
        ExprGen {
            env,
            accs,
            next: std::cell::Cell::new(0),
        }
    }

    /// Generates `e` as one Rust expression; `hint` types a bare NULL literal from its
    /// context.
    pub fn expr(&self, e: &TExpr, hint: Option<Type>) -> Result<TokenStream, CodegenError> {
        let mut stmts = Vec::new();
        let v = self.value(e, hint, &mut stmts)?;
        Ok(block(stmts, v))
    }

    /// An operand evaluated now: a leaf inline, anything else bound to a fresh local by a
    /// statement pushed on `out`.
    fn operand(
        &self,
        e: &TExpr,
        hint: Option<Type>,
        out: &mut Vec<TokenStream>,
    ) -> Result<TokenStream, CodegenError> {
        let v = self.value(e, hint, out)?;
        if is_leaf(e) {
            return Ok(v);
        }
        let n = self.next.get();
        self.next.set(n + 1);
        let id = quote::format_ident!("__e{}", n);
        out.push(quote!(let #id = #v;));
        Ok(quote!(#id))
    }

    /// The code of `e` itself, its operands' statements pushed on `out`.
    fn value(
        &self,
        e: &TExpr,
        hint: Option<Type>,
        out: &mut Vec<TokenStream>,
    ) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let ty = e.ty.or(hint);
        Ok(match &e.kind {
            TExprKind::Lit(l) => lit(l, ty),
            TExprKind::Field(name) => {
                let b = self.env.get(name).ok_or_else(|| {
                    CodegenError::Internal(format!("field `{name}` is not bound"))
                })?;
                read(b)
            }
            TExprKind::Acc(i) => {
                let b = self
                    .accs
                    .as_ref()
                    .and_then(|a| a.vars.get(*i))
                    .ok_or_else(|| {
                        CodegenError::Internal(format!("accumulator #{i} outside an aggregate"))
                    })?;
                read(b)
            }
            TExprKind::Binary { op, lhs, rhs } => {
                let operand = lhs.ty.or(rhs.ty);
                let l = self.operand(lhs, operand, out)?;
                let r = match op {
                    // The right side of AND / OR is evaluated only when needed.
                    BinOp::And | BinOp::Or => self.expr(rhs, operand)?,
                    BinOp::Add
                    | BinOp::Sub
                    | BinOp::Mul
                    | BinOp::Div
                    | BinOp::Mod
                    | BinOp::Eq
                    | BinOp::NotEq
                    | BinOp::Lt
                    | BinOp::LtEq
                    | BinOp::Gt
                    | BinOp::GtEq => self.operand(rhs, operand, out)?,
                };
                binary(*op, operand, l, r)
            }
            TExprKind::Unary { op, expr } => {
                let x = self.operand(expr, ty, out)?;
                match op {
                    UnOp::Not => quote!(#rt::expr::not(#x)),
                    UnOp::Neg => match expr.ty.or(ty) {
                        Some(t) if t.is_float() => quote!((#x).map(|v| -v)),
                        _ => quote!((#x).map(#rt::expr::SqlInt::sql_neg)),
                    },
                }
            }
            TExprKind::Cast { expr, to } => {
                let x = self.operand(expr, Some(*to), out)?;
                cast(x, expr.ty, *to)
            }
            TExprKind::IsNull { expr, negated } => {
                let x = self.operand(expr, None, out)?;
                if *negated {
                    quote!(::std::option::Option::Some((#x).is_some()))
                } else {
                    quote!(::std::option::Option::Some((#x).is_none()))
                }
            }
            TExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let t = expr.ty.or_else(|| list.iter().find_map(|i| i.ty));
                let x = self.operand(expr, t, out)?;
                // The items are compared one after the other, each computed in turn.
                let mut checks = Vec::new();
                for item in list {
                    let y = self.operand(item, t, &mut checks)?;
                    checks.push(quote! {
                        match #y {
                            ::std::option::Option::Some(__y) => {
                                if __y == __x { __found = true; }
                            }
                            ::std::option::Option::None => { __null = true; }
                        }
                    });
                }
                let res = quote! {
                    match #x {
                        ::std::option::Option::None => ::std::option::Option::None,
                        ::std::option::Option::Some(__x) => {
                            let mut __found = false;
                            let mut __null = false;
                            #(#checks)*
                            if __found {
                                ::std::option::Option::Some(true)
                            } else if __null {
                                ::std::option::Option::None
                            } else {
                                ::std::option::Option::Some(false)
                            }
                        }
                    }
                };
                if *negated {
                    quote!(#rt::expr::not(#res))
                } else {
                    res
                }
            }
            TExprKind::Case {
                branches,
                otherwise,
            } => {
                // A labelled block with one `if ... break` per branch: flat, however many
                // branches; each condition is computed only when the ones before it failed.
                let n = self.next.get();
                self.next.set(n + 1);
                let label =
                    syn::Lifetime::new(&format!("'__case{n}"), proc_macro2::Span::call_site());
                let mut body = Vec::new();
                for (c, v) in branches {
                    let c = self.operand(c, Some(Type::Bool), &mut body)?;
                    let v = self.expr(v, ty)?;
                    // (In parentheses: `break 'l ::path` would read as a labelled loop.)
                    body.push(quote!(if #rt::expr::truthy(#c) { break #label (#v); }));
                }
                let last = match otherwise {
                    Some(o) => self.expr(o, ty)?,
                    None => null(ty),
                };
                quote!(#label: { #(#body)* #last })
            }
            TExprKind::Call { func, args } => self.call(*func, args, ty, out)?,
        })
    }

    fn call(
        &self,
        func: Func,
        args: &[TExpr],
        ty: Option<Type>,
        out: &mut Vec<TokenStream>,
    ) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let arg = |i: usize,
                   hint: Option<Type>,
                   out: &mut Vec<TokenStream>|
         -> Result<TokenStream, CodegenError> {
            let a = args.get(i).ok_or_else(|| {
                CodegenError::Internal(format!("{func:?} is missing argument {i}"))
            })?;
            self.operand(a, a.ty.or(hint), out)
        };
        let arg_ty = |i: usize| args.get(i).and_then(|a| a.ty);
        let s = Some(Type::String);
        Ok(match func {
            Func::Lower => {
                let a = arg(0, s, out)?;
                quote!((#a).map(#rt::expr::lower))
            }
            Func::Upper => {
                let a = arg(0, s, out)?;
                quote!((#a).map(#rt::expr::upper))
            }
            Func::Length => {
                let a = arg(0, s, out)?;
                quote!((#a).map(|s| #rt::expr::length(&s)))
            }
            Func::Contains | Func::StartsWith | Func::EndsWith => {
                let a = arg(0, s, out)?;
                let b = arg(1, s, out)?;
                let m = if func == Func::Contains {
                    quote!(contains)
                } else if func == Func::StartsWith {
                    quote!(starts_with)
                } else {
                    quote!(ends_with)
                };
                quote!(#rt::expr::bin(#a, #b, |a, b| a.#m(&*b)))
            }
            Func::Abs => {
                let a = arg(0, ty, out)?;
                if arg_ty(0).or(ty).is_some_and(Type::is_float) {
                    quote!((#a).map(|v| v.abs()))
                } else {
                    quote!((#a).map(#rt::expr::SqlInt::sql_abs))
                }
            }
            Func::Round | Func::Floor | Func::Ceil => {
                let t = arg_ty(0).or(ty);
                let a = arg(0, t, out)?;
                let a = if args.len() > 1 && t.is_some_and(Type::is_integer) {
                    quote!((#a).map(|v| v as f64))
                } else {
                    a
                };
                if args.len() > 1 {
                    let n = arg(1, Some(Type::I64), out)?;
                    quote!(#rt::expr::bin(#a, #n, |x, n| #rt::expr::round_to(x as f64, n as i64)))
                } else if t.is_some_and(Type::is_float) {
                    if func == Func::Round {
                        quote!((#a).map(|v| v.round()))
                    } else if func == Func::Floor {
                        quote!((#a).map(|v| v.floor()))
                    } else {
                        quote!((#a).map(|v| v.ceil()))
                    }
                } else {
                    a
                }
            }
            Func::Coalesce => {
                // The first argument now, each later one only if those before are NULL.
                let Some((first, rest)) = args.split_first() else {
                    return Ok(null(ty));
                };
                let mut acc = self.operand(first, first.ty.or(ty), out)?;
                for a in rest {
                    let p = self.expr(a, a.ty.or(ty))?;
                    acc = quote!((#acc).or_else(|| #p));
                }
                acc
            }
        })
    }
}

fn null(ty: Option<Type>) -> TokenStream {
    match ty {
        Some(t) => {
            let v = val_ty(t);
            quote!(::std::option::Option::None::<#v>)
        }
        None => quote!(::std::option::Option::None::<()>),
    }
}

fn lit(l: &Lit, ty: Option<Type>) -> TokenStream {
    let some = |v: TokenStream| quote!(::std::option::Option::Some(#v));
    match l {
        Lit::Null => null(ty),
        Lit::Bool(b) => some(quote!(#b)),
        Lit::Int(i) => match ty {
            Some(Type::I32) => some(tok(Literal::i32_suffixed(*i as i32))),
            Some(Type::U32) => some(tok(Literal::u32_suffixed(*i as u32))),
            Some(Type::U64) => some(tok(Literal::u64_suffixed(*i as u64))),
            Some(Type::F32) => some(tok(Literal::f32_suffixed(*i as f32))),
            Some(Type::F64) => some(tok(Literal::f64_suffixed(*i as f64))),
            Some(Type::I64 | Type::Timestamp | Type::Bool | Type::String) | None => {
                some(tok(Literal::i64_suffixed(*i)))
            }
        },
        Lit::Float(x) => match ty {
            // A literal past f32 is infinity there, as the arithmetic would give (and no
            // token: a literal token cannot be infinite).
            Some(Type::F32) if !(*x as f32).is_finite() => {
                if *x > 0.0 {
                    some(quote!(f32::INFINITY))
                } else {
                    some(quote!(f32::NEG_INFINITY))
                }
            }
            Some(Type::F32) => some(tok(Literal::f32_suffixed(*x as f32))),
            Some(
                Type::F64
                | Type::I32
                | Type::I64
                | Type::U32
                | Type::U64
                | Type::Timestamp
                | Type::Bool
                | Type::String,
            )
            | None => some(tok(Literal::f64_suffixed(*x))),
        },
        Lit::Str(s) => some(quote!(::std::borrow::Cow::Borrowed(#s))),
    }
}

fn tok(l: Literal) -> TokenStream {
    quote!(#l)
}

fn binary(op: BinOp, operand: Option<Type>, l: TokenStream, r: TokenStream) -> TokenStream {
    let rt = rt();
    let float = operand.is_some_and(Type::is_float);
    // Arithmetic: floats with Rust's operators, integers with the SQL helpers (wrapping;
    // division and remainder by zero are NULL).
    let arith = |o: TokenStream, m: TokenStream| {
        if float {
            quote!(#rt::expr::bin(#l, #r, |a, b| a #o b))
        } else {
            quote!(#rt::expr::bin(#l, #r, #rt::expr::SqlInt::#m))
        }
    };
    let div = |o: TokenStream, m: TokenStream| {
        if float {
            quote!(#rt::expr::bin_opt(#l, #r, |a, b| if b == 0.0 {
                ::std::option::Option::None
            } else {
                ::std::option::Option::Some(a #o b)
            }))
        } else {
            quote!(#rt::expr::bin_opt(#l, #r, #rt::expr::SqlInt::#m))
        }
    };
    let cmp = |o: TokenStream| quote!(#rt::expr::bin(#l, #r, |a, b| a #o b));
    match op {
        BinOp::And => quote!(#rt::expr::and(#l, || #r)),
        BinOp::Or => quote!(#rt::expr::or(#l, || #r)),
        BinOp::Add => arith(quote!(+), quote!(sql_add)),
        BinOp::Sub => arith(quote!(-), quote!(sql_sub)),
        BinOp::Mul => arith(quote!(*), quote!(sql_mul)),
        BinOp::Div => div(quote!(/), quote!(sql_div)),
        BinOp::Mod => div(quote!(%), quote!(sql_rem)),
        BinOp::Eq => cmp(quote!(==)),
        BinOp::NotEq => cmp(quote!(!=)),
        BinOp::Lt => cmp(quote!(<)),
        BinOp::LtEq => cmp(quote!(<=)),
        BinOp::Gt => cmp(quote!(>)),
        BinOp::GtEq => cmp(quote!(>=)),
    }
}

fn cast(x: TokenStream, from: Option<Type>, to: Type) -> TokenStream {
    let Some(from) = from else {
        return null(Some(to));
    };
    let same_repr = from == to
        || matches!(
            (from, to),
            (Type::Timestamp, Type::I64) | (Type::I64, Type::Timestamp)
        );
    if same_repr {
        return x;
    }
    let t = val_ty(to);
    match (from, to) {
        (Type::Bool, t2) if t2.is_numeric() => quote!((#x).map(|v| v as u8 as #t)),
        _ => quote!((#x).map(|v| v as #t)),
    }
}
