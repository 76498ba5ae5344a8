//! SQL expressions inside spec strings: a hand-written lexer and Pratt parser whose spans
//! are byte offsets into the YAML source (through the scalar's offset map), so that an
//! error points at the offending token inside the string.

mod lexer;
mod parser;

use std::fmt;

use crate::diag::{Diagnostic, Span};
use crate::plan::{BinOp, UnOp};

pub use parser::{MAX_DEPTH, parse};

/// An untyped expression. Spans are byte ranges of the YAML source.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Lit(Literal),
    /// A field name (case-sensitive; `"quoted"` names allowed).
    Field(String),
    Unary {
        op: UnOp,
        op_span: Span,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    /// `CASE [operand] WHEN w THEN v ... [ELSE e] END`; with an operand, each `w` is
    /// compared to it.
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    /// A function call; `name` is lowercased. `count(*)` has `star` set and no args.
    Call {
        name: String,
        name_span: Span,
        args: Vec<Expr>,
        star: bool,
    },
}

/// A syntax error in an expression.
#[derive(Clone, Debug, PartialEq)]
pub struct ExprError {
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
}

impl ExprError {
    pub fn into_diagnostic(self) -> Diagnostic {
        Diagnostic::error(self.message)
            .label(self.span, self.label)
            .maybe_help(self.help)
    }
}

pub fn binop_symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::Eq => "=",
        BinOp::NotEq => "<>",
        BinOp::Lt => "<",
        BinOp::LtEq => "<=",
        BinOp::Gt => ">",
        BinOp::GtEq => ">=",
        BinOp::And => "AND",
        BinOp::Or => "OR",
    }
}

fn write_ident(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if super::values::is_identifier(name) && !lexer::is_keyword(name) {
        f.write_str(name)
    } else {
        write!(f, "\"{}\"", name.replace('"', "\"\""))
    }
}

/// The canonical text of an expression: fully parenthesized binary operations,
/// uppercase keywords, single spaces. Two expressions that differ only in whitespace,
/// keyword case or redundant parentheses print the same.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Lit(Literal::Null) => f.write_str("NULL"),
            ExprKind::Lit(Literal::Bool(b)) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            ExprKind::Lit(Literal::Int(i)) => write!(f, "{i}"),
            ExprKind::Lit(Literal::Float(x)) => write!(f, "{x:?}"),
            ExprKind::Lit(Literal::Str(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            ExprKind::Field(name) => write_ident(f, name),
            ExprKind::Unary { op, expr, .. } => match op {
                UnOp::Not => write!(f, "(NOT {expr})"),
                UnOp::Neg => write!(f, "(-{expr})"),
            },
            ExprKind::Binary { op, lhs, rhs, .. } => {
                write!(f, "({lhs} {} {rhs})", binop_symbol(*op))
            }
            ExprKind::IsNull { expr, negated } => {
                let not = if *negated { " NOT" } else { "" };
                write!(f, "({expr} IS{not} NULL)")
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let not = if *negated { " NOT" } else { "" };
                write!(f, "({expr}{not} IN (")?;
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("))")
            }
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => {
                f.write_str("CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in branches {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            ExprKind::Call {
                name, args, star, ..
            } => {
                write!(f, "{name}(")?;
                if *star {
                    f.write_str("*")?;
                }
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Expr {
    /// Calls `visit` on this expression and every subexpression, parents first.
    pub fn walk<'a>(&'a self, visit: &mut impl FnMut(&'a Expr)) {
        visit(self);
        match &self.kind {
            ExprKind::Lit(_) | ExprKind::Field(_) => {}
            ExprKind::Unary { expr, .. } | ExprKind::IsNull { expr, .. } => expr.walk(visit),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.walk(visit);
                rhs.walk(visit);
            }
            ExprKind::InList { expr, list, .. } => {
                expr.walk(visit);
                list.iter().for_each(|e| e.walk(visit));
            }
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk(visit);
                }
                for (w, t) in branches {
                    w.walk(visit);
                    t.walk(visit);
                }
                if let Some(e) = otherwise {
                    e.walk(visit);
                }
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| a.walk(visit)),
        }
    }
}
