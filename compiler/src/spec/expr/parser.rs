//! Pratt parser. Precedence, loosest first: `OR` < `AND` < `NOT` < comparisons, `IS`,
//! `IN` < `+ -` < `* / %` < unary minus.

use super::lexer::{Kw, LexError, Punct, Tok, Token, tokenize};
use super::{Expr, ExprError, ExprKind, Literal};
use crate::diag::Span;
use crate::plan::{BinOp, UnOp};

const BP_OR: u8 = 1;
const BP_AND: u8 = 3;
const BP_NOT: u8 = 5;
const BP_CMP: u8 = 7;
const BP_ADD: u8 = 9;
const BP_MUL: u8 = 11;
const BP_NEG: u8 = 13;
/// Nesting bound, documented in `docs/pipeline-spec.md` ("Limits"): both the parser's
/// recursion (parentheses, prefix operators, calls, CASE) and the height of the tree it
/// builds (a chain `a + b + c` is a tree of one level per operator) stay within it, so
/// that every later pass, which recurses over the tree, has bounded depth. Deeper input is
/// a located error, never a stack overflow.
pub const MAX_DEPTH: usize = 128;

/// Parses `text`, the decoded value of a YAML scalar. `offsets[i]` is the source byte
/// offset of byte `i` of `text` (`offsets.len() == text.len() + 1`); spans of the result
/// are source spans.
pub fn parse(text: &str, offsets: &[usize]) -> Result<Expr, ExprError> {
    let map = SpanMap { offsets };
    let tokens = tokenize(text).map_err(|e: LexError| ExprError {
        message: e.message,
        span: map.span(e.start, e.end),
        label: e.label,
        help: e.help,
    })?;
    if tokens.len() == 1 {
        return Err(ExprError {
            message: "empty expression".to_string(),
            span: map.span(0, text.len()),
            label: "an expression is expected here".to_string(),
            help: None,
        });
    }
    let mut p = Parser {
        text,
        tokens,
        pos: 0,
        map,
        depth: 0,
    };
    let expr = p.expr(0)?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        let help = match &t.tok {
            Tok::Ident(w) if w.eq_ignore_ascii_case("LIKE") => Some(like_help()),
            Tok::Ident(w) if w.eq_ignore_ascii_case("BETWEEN") => Some(between_help()),
            Tok::Punct(Punct::RParen) => Some("this `)` has no matching `(`".to_string()),
            _ => Some("an operator (such as `AND` or `+`) is missing before it".to_string()),
        };
        return Err(p.error_at(
            t.clone(),
            format!("unexpected {} after the expression", p.describe(t)),
            "unexpected here",
            help,
        ));
    }
    Ok(expr)
}

fn too_deep(span: Span) -> ExprError {
    ExprError {
        message: "expression nested too deeply".to_string(),
        span,
        label: "this nests too deep".to_string(),
        help: Some(depth_help()),
    }
}

fn depth_help() -> String {
    format!(
        "expressions nest at most {MAX_DEPTH} levels (each operator of a chain such as \
         `a + b + c` is one level); use `IN (...)` for a long list of alternatives, or \
         compute parts in a `map` step"
    )
}

/// The height of an expression tree (a leaf is 1). Only called on trees whose subtrees
/// were checked against [`MAX_DEPTH`], so its recursion is bounded.
fn height(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Lit(_) | ExprKind::Field(_) => 0,
        ExprKind::Unary { expr, .. } | ExprKind::IsNull { expr, .. } => height(expr),
        ExprKind::Binary { lhs, rhs, .. } => height(lhs).max(height(rhs)),
        ExprKind::InList { expr, list, .. } => {
            list.iter().map(height).fold(height(expr), usize::max)
        }
        ExprKind::Case {
            operand,
            branches,
            otherwise,
        } => branches
            .iter()
            .map(|(w, t)| height(w).max(height(t)))
            .chain(operand.iter().map(|o| height(o)))
            .chain(otherwise.iter().map(|o| height(o)))
            .fold(0, usize::max),
        ExprKind::Call { args, .. } => args.iter().map(height).fold(0, usize::max),
    }
}

fn like_help() -> String {
    "`LIKE` is not supported; use `contains(s, 'x')`, `starts_with(s, 'x')` or `ends_with(s, 'x')`"
        .to_string()
}

fn between_help() -> String {
    "`BETWEEN` is not supported; write `x >= a AND x <= b`".to_string()
}

#[derive(Clone, Copy)]
struct SpanMap<'a> {
    offsets: &'a [usize],
}

impl SpanMap<'_> {
    fn at(&self, i: usize) -> usize {
        self.offsets
            .get(i)
            .or(self.offsets.last())
            .copied()
            .unwrap_or(0)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        if end <= start {
            Span::point(self.at(start))
        } else {
            Span::new(self.at(start), self.at(end - 1) + 1)
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    map: SpanMap<'a>,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn span(&self, t: &Token) -> Span {
        self.map.span(t.start, t.end)
    }

    /// `a` + `b` → the span from a's start to b's end.
    fn join(a: Span, b: Span) -> Span {
        a.to(b)
    }

    fn describe(&self, t: &Token) -> String {
        match t.tok {
            Tok::Eof => "end of expression".to_string(),
            _ => format!("`{}`", &self.text[t.start..t.end]),
        }
    }

    fn error_at(&self, t: Token, message: String, label: &str, help: Option<String>) -> ExprError {
        ExprError {
            message,
            span: self.span(&t),
            label: label.to_string(),
            help,
        }
    }

    fn expect_punct(
        &mut self,
        p: Punct,
        what: &str,
        open: Option<&Token>,
    ) -> Result<Token, ExprError> {
        let t = self.peek().clone();
        if t.tok == Tok::Punct(p) {
            return Ok(self.bump());
        }
        let mut e = self.error_at(
            t.clone(),
            format!("expected {what}, found {}", self.describe(&t)),
            &format!("expected {what}"),
            None,
        );
        if let Some(open) = open {
            e.help = Some(format!(
                "the `{}` at column {} is not closed",
                &self.text[open.start..open.end],
                self.text[..open.start].chars().count() + 1
            ));
        }
        Err(e)
    }

    fn expect_kw(&mut self, kw: Kw, what: &str, case: &Token) -> Result<Token, ExprError> {
        let t = self.peek().clone();
        if t.tok == Tok::Kw(kw) {
            return Ok(self.bump());
        }
        let mut e = self.error_at(
            t.clone(),
            format!("expected `{what}`, found {}", self.describe(&t)),
            &format!("expected `{what}`"),
            None,
        );
        e.help = Some(format!(
            "in the `CASE` at column {}: CASE WHEN condition THEN value [ELSE value] END",
            self.text[..case.start].chars().count() + 1
        ));
        Err(e)
    }

    fn expr(&mut self, min_bp: u8) -> Result<Expr, ExprError> {
        self.depth += 1;
        let result = if self.depth > MAX_DEPTH {
            let t = self.peek().clone();
            Err(self.error_at(
                t,
                "expression nested too deeply".to_string(),
                "too deep",
                Some(depth_help()),
            ))
        } else {
            self.expr_inner(min_bp)
        };
        self.depth -= 1;
        result
    }

    fn expr_inner(&mut self, min_bp: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.prefix()?;
        // The height of `lhs`, which grows by one with each operator of a chain (the
        // chain is a left-deep tree that no recursion of the parser bounds).
        let mut h = height(&lhs);
        if h > MAX_DEPTH {
            return Err(too_deep(lhs.span));
        }
        loop {
            let t = self.peek().clone();
            let (op, bp) = match &t.tok {
                Tok::Kw(Kw::Or) => (Some(BinOp::Or), BP_OR),
                Tok::Kw(Kw::And) => (Some(BinOp::And), BP_AND),
                Tok::Punct(p) => match p {
                    Punct::Eq => (Some(BinOp::Eq), BP_CMP),
                    Punct::NotEq => (Some(BinOp::NotEq), BP_CMP),
                    Punct::Lt => (Some(BinOp::Lt), BP_CMP),
                    Punct::LtEq => (Some(BinOp::LtEq), BP_CMP),
                    Punct::Gt => (Some(BinOp::Gt), BP_CMP),
                    Punct::GtEq => (Some(BinOp::GtEq), BP_CMP),
                    Punct::Plus => (Some(BinOp::Add), BP_ADD),
                    Punct::Minus => (Some(BinOp::Sub), BP_ADD),
                    Punct::Star => (Some(BinOp::Mul), BP_MUL),
                    Punct::Slash => (Some(BinOp::Div), BP_MUL),
                    Punct::Percent => (Some(BinOp::Mod), BP_MUL),
                    _ => break,
                },
                Tok::Kw(Kw::Is | Kw::In | Kw::Not) => (None, BP_CMP),
                Tok::Ident(w)
                    if w.eq_ignore_ascii_case("LIKE") || w.eq_ignore_ascii_case("BETWEEN") =>
                {
                    let help = if w.eq_ignore_ascii_case("LIKE") {
                        like_help()
                    } else {
                        between_help()
                    };
                    return Err(self.error_at(
                        t.clone(),
                        format!("`{}` is not supported", w.to_ascii_uppercase()),
                        "not supported",
                        Some(help),
                    ));
                }
                _ => break,
            };
            if bp < min_bp {
                break;
            }
            self.bump();
            lhs = match op {
                Some(op) => {
                    let rhs = self.expr(bp + 1)?;
                    h = 1 + h.max(height(&rhs));
                    if h > MAX_DEPTH {
                        return Err(too_deep(self.span(&t)));
                    }
                    let span = Self::join(lhs.span, rhs.span);
                    Expr {
                        kind: ExprKind::Binary {
                            op,
                            op_span: self.span(&t),
                            lhs: Box::new(lhs),
                            rhs: Box::new(rhs),
                        },
                        span,
                    }
                }
                None => {
                    let e = self.postfix(lhs, t.clone())?;
                    h = height(&e);
                    if h > MAX_DEPTH {
                        return Err(too_deep(self.span(&t)));
                    }
                    e
                }
            };
        }
        Ok(lhs)
    }

    /// After `lhs`: `IS [NOT] NULL`, `[NOT] IN (...)`; `t` (already consumed) is `IS`,
    /// `IN` or `NOT`.
    fn postfix(&mut self, lhs: Expr, t: Token) -> Result<Expr, ExprError> {
        match t.tok {
            Tok::Kw(Kw::Is) => {
                let negated = if self.peek().tok == Tok::Kw(Kw::Not) {
                    self.bump();
                    true
                } else {
                    false
                };
                let n = self.peek().clone();
                if n.tok != Tok::Kw(Kw::Null) {
                    return Err(self.error_at(
                        n.clone(),
                        format!("expected `NULL` after `IS`, found {}", self.describe(&n)),
                        "expected `NULL`",
                        Some(
                            "write `x IS NULL` or `x IS NOT NULL`; compare values with `=`"
                                .to_string(),
                        ),
                    ));
                }
                self.bump();
                let span = Self::join(lhs.span, self.span(&n));
                Ok(Expr {
                    kind: ExprKind::IsNull {
                        expr: Box::new(lhs),
                        negated,
                    },
                    span,
                })
            }
            Tok::Kw(Kw::Not) => {
                let n = self.peek().clone();
                match &n.tok {
                    Tok::Kw(Kw::In) => {
                        self.bump();
                        self.in_list(lhs, true)
                    }
                    Tok::Ident(w)
                        if w.eq_ignore_ascii_case("LIKE") || w.eq_ignore_ascii_case("BETWEEN") =>
                    {
                        let help = if w.eq_ignore_ascii_case("LIKE") {
                            like_help()
                        } else {
                            between_help()
                        };
                        Err(self.error_at(
                            n.clone(),
                            format!("`{}` is not supported", w.to_ascii_uppercase()),
                            "not supported",
                            Some(help),
                        ))
                    }
                    _ => Err(self.error_at(
                        t.clone(),
                        "unexpected `NOT` after a value".to_string(),
                        "`NOT` goes before a condition",
                        Some(
                            "write `NOT (a = b)`, `a NOT IN (...)` or `a IS NOT NULL`".to_string(),
                        ),
                    )),
                }
            }
            _ => self.in_list(lhs, false),
        }
    }

    fn in_list(&mut self, lhs: Expr, negated: bool) -> Result<Expr, ExprError> {
        let open = self.expect_punct(Punct::LParen, "`(` after `IN`", None)?;
        let mut list = Vec::new();
        loop {
            list.push(self.expr(0)?);
            if self.peek().tok == Tok::Punct(Punct::Comma) {
                self.bump();
                continue;
            }
            break;
        }
        let close = self.expect_punct(Punct::RParen, "`,` or `)`", Some(&open))?;
        let span = Self::join(lhs.span, self.span(&close));
        Ok(Expr {
            kind: ExprKind::InList {
                expr: Box::new(lhs),
                list,
                negated,
            },
            span,
        })
    }

    fn prefix(&mut self) -> Result<Expr, ExprError> {
        let t = self.bump();
        let span = self.span(&t);
        let lit = |l| {
            Ok(Expr {
                kind: ExprKind::Lit(l),
                span,
            })
        };
        match &t.tok {
            Tok::Int(digits) => match digits.parse::<i64>() {
                Ok(v) => lit(Literal::Int(v)),
                Err(_) => Err(self.error_at(
                    t.clone(),
                    format!("integer literal `{digits}` is too large"),
                    "out of range",
                    Some(
                        "integers are 64-bit signed; write a decimal for larger numbers"
                            .to_string(),
                    ),
                )),
            },
            Tok::Float(v) => lit(Literal::Float(*v)),
            Tok::Str(s) => lit(Literal::Str(s.clone())),
            Tok::Kw(Kw::True) => lit(Literal::Bool(true)),
            Tok::Kw(Kw::False) => lit(Literal::Bool(false)),
            Tok::Kw(Kw::Null) => lit(Literal::Null),
            Tok::QuotedIdent(name) => Ok(Expr {
                kind: ExprKind::Field(name.clone()),
                span,
            }),
            Tok::Ident(name) => {
                if self.peek().tok == Tok::Punct(Punct::LParen) {
                    self.call(t.clone(), name.to_ascii_lowercase())
                } else {
                    Ok(Expr {
                        kind: ExprKind::Field(name.clone()),
                        span,
                    })
                }
            }
            Tok::Punct(Punct::LParen) => {
                let inner = self.expr(0)?;
                let close = self.expect_punct(Punct::RParen, "`)`", Some(&t))?;
                Ok(Expr {
                    kind: inner.kind,
                    span: Self::join(span, self.span(&close)),
                })
            }
            Tok::Punct(Punct::Minus) => {
                // A literal integer directly after `-` may be i64::MIN.
                if let Tok::Int(digits) = &self.peek().tok
                    && digits.parse::<i64>().is_err()
                    && digits.parse::<i128>().ok() == Some(-(i64::MIN as i128))
                {
                    let n = self.bump();
                    return Ok(Expr {
                        kind: ExprKind::Lit(Literal::Int(i64::MIN)),
                        span: Self::join(span, self.span(&n)),
                    });
                }
                let expr = self.expr(BP_NEG)?;
                let full = Self::join(span, expr.span);
                let kind = match expr.kind {
                    ExprKind::Lit(Literal::Int(v)) => ExprKind::Lit(Literal::Int(-v)),
                    ExprKind::Lit(Literal::Float(v)) => ExprKind::Lit(Literal::Float(-v)),
                    kind => ExprKind::Unary {
                        op: UnOp::Neg,
                        op_span: span,
                        expr: Box::new(Expr {
                            kind,
                            span: expr.span,
                        }),
                    },
                };
                Ok(Expr { kind, span: full })
            }
            Tok::Punct(Punct::Plus) => self.expr(BP_NEG),
            Tok::Kw(Kw::Not) => {
                let expr = self.expr(BP_NOT)?;
                Ok(Expr {
                    span: Self::join(span, expr.span),
                    kind: ExprKind::Unary {
                        op: UnOp::Not,
                        op_span: span,
                        expr: Box::new(expr),
                    },
                })
            }
            Tok::Kw(Kw::Case) => self.case(t.clone()),
            Tok::Kw(kw) => {
                let word = &self.text[t.start..t.end];
                let help = match kw {
                    Kw::And
                    | Kw::Or
                    | Kw::Is
                    | Kw::In
                    | Kw::When
                    | Kw::Then
                    | Kw::Else
                    | Kw::End => Some(format!(
                        "`{}` is a keyword; a field with that name is written \"{word}\"",
                        word.to_ascii_uppercase()
                    )),
                    _ => None,
                };
                Err(self.error_at(
                    t.clone(),
                    format!("expected an expression, found `{word}`"),
                    "expected a value here",
                    help,
                ))
            }
            Tok::Eof => Err(self.error_at(
                t.clone(),
                "the expression ends too early".to_string(),
                "a value is missing here",
                None,
            )),
            Tok::Punct(_) => Err(self.error_at(
                t.clone(),
                format!("expected an expression, found {}", self.describe(&t)),
                "expected a value here",
                None,
            )),
        }
    }

    fn call(&mut self, name_tok: Token, name: String) -> Result<Expr, ExprError> {
        let open = self.bump();
        let name_span = self.span(&name_tok);
        let mut args = Vec::new();
        let mut star = false;
        if self.peek().tok == Tok::Punct(Punct::Star)
            && self.peek_at(1).tok == Tok::Punct(Punct::RParen)
        {
            self.bump();
            star = true;
        } else if self.peek().tok != Tok::Punct(Punct::RParen) {
            loop {
                args.push(self.expr(0)?);
                if self.peek().tok == Tok::Punct(Punct::Comma) {
                    self.bump();
                    continue;
                }
                break;
            }
        }
        let close = self.expect_punct(Punct::RParen, "`,` or `)`", Some(&open))?;
        Ok(Expr {
            kind: ExprKind::Call {
                name,
                name_span,
                args,
                star,
            },
            span: Self::join(name_span, self.span(&close)),
        })
    }

    fn case(&mut self, case: Token) -> Result<Expr, ExprError> {
        let operand = if self.peek().tok == Tok::Kw(Kw::When) {
            None
        } else {
            Some(Box::new(self.expr(0)?))
        };
        let mut branches = Vec::new();
        while self.peek().tok == Tok::Kw(Kw::When) {
            self.bump();
            let cond = self.expr(0)?;
            self.expect_kw(Kw::Then, "THEN", &case)?;
            let value = self.expr(0)?;
            branches.push((cond, value));
        }
        if branches.is_empty() {
            return Err(self.expect_kw(Kw::When, "WHEN", &case).unwrap_err());
        }
        let otherwise = if self.peek().tok == Tok::Kw(Kw::Else) {
            self.bump();
            Some(Box::new(self.expr(0)?))
        } else {
            None
        };
        let end = self.expect_kw(Kw::End, "END", &case)?;
        Ok(Expr {
            kind: ExprKind::Case {
                operand,
                branches,
                otherwise,
            },
            span: Self::join(self.span(&case), self.span(&end)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Expr {
        let offsets: Vec<usize> = (0..=text.len()).collect();
        parse(text, &offsets).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    fn err(text: &str) -> ExprError {
        let offsets: Vec<usize> = (0..=text.len()).collect();
        parse(text, &offsets).expect_err(text)
    }

    fn canon(text: &str) -> String {
        p(text).to_string()
    }

    #[test]
    fn precedence() {
        assert_eq!(canon("a OR b AND c"), "(a OR (b AND c))");
        assert_eq!(canon("NOT a = b AND c"), "((NOT (a = b)) AND c)");
        assert_eq!(canon("a + b * c - d"), "((a + (b * c)) - d)");
        assert_eq!(canon("-a * b"), "((-a) * b)");
        assert_eq!(canon("a < b + 1"), "(a < (b + 1))");
        assert_eq!(canon("a IS NOT NULL AND b"), "((a IS NOT NULL) AND b)");
        assert_eq!(canon("a + 1 IN (1, 2)"), "((a + 1) IN (1, 2))");
        assert_eq!(canon("x not in ('a')"), "(x NOT IN ('a'))");
        assert_eq!(canon("(a OR b) AND c"), "((a OR b) AND c)");
        assert_eq!(canon("a - b - c"), "((a - b) - c)");
        assert_eq!(canon("a / b % c"), "((a / b) % c)");
    }

    #[test]
    fn literals() {
        assert_eq!(canon("-5"), "-5");
        assert_eq!(canon("-2.5"), "-2.5");
        assert_eq!(canon("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(
            canon("'it''s' = TRUE or null"),
            "(('it''s' = TRUE) OR NULL)"
        );
        assert_eq!(canon("\"the end\" + \"end\""), "(\"the end\" + \"end\")");
        assert!(err("9223372036854775808").message.contains("too large"));
    }

    #[test]
    fn calls_and_case() {
        assert_eq!(canon("COUNT(*)"), "count(*)");
        assert_eq!(canon("count()"), "count()");
        assert_eq!(canon("round(x, 2)"), "round(x, 2)");
        assert_eq!(
            canon("case when a > 1 then 'x' when a > 0 then 'y' else 'z' end"),
            "CASE WHEN (a > 1) THEN 'x' WHEN (a > 0) THEN 'y' ELSE 'z' END"
        );
        assert_eq!(
            canon("CASE s WHEN 1 THEN 2 END"),
            "CASE s WHEN 1 THEN 2 END"
        );
        assert_eq!(
            canon("count_if(is_error) / count()"),
            "(count_if(is_error) / count())"
        );
    }

    #[test]
    fn spans() {
        let e = p("url <> '' AND status >= 0");
        let ExprKind::Binary { op_span, rhs, .. } = &e.kind else {
            panic!()
        };
        assert_eq!((op_span.start, op_span.end), (10, 13));
        assert_eq!((rhs.span.start, rhs.span.end), (14, 25));
        let e = p("  (a)  ");
        assert_eq!((e.span.start, e.span.end), (2, 5));
    }

    #[test]
    fn spans_go_through_the_offset_map() {
        // As if the expression sat at byte 100 of the YAML.
        let text = "a + b";
        let offsets: Vec<usize> = (100..=105).collect();
        let e = parse(text, &offsets).unwrap();
        assert_eq!(e.span, Span::new(100, 105));
    }

    #[test]
    fn syntax_errors() {
        let e = err("a >");
        assert_eq!(e.message, "the expression ends too early");
        assert_eq!(e.span, Span::point(3));
        let e = err("(a + b");
        assert_eq!(e.message, "expected `)`, found end of expression");
        assert!(e.help.unwrap().contains("column 1"));
        let e = err("a b");
        assert_eq!(e.message, "unexpected `b` after the expression");
        assert_eq!(e.span, Span::new(2, 3));
        let e = err("a LIKE 'x%'");
        assert_eq!(e.message, "`LIKE` is not supported");
        let e = err("CASE WHEN a THEN 1");
        assert_eq!(e.message, "expected `END`, found end of expression");
        let e = err("CASE a END");
        assert_eq!(e.message, "expected `WHEN`, found `END`");
        let e = err("a IS 1");
        assert_eq!(e.message, "expected `NULL` after `IS`, found `1`");
        let e = err("a NOT b");
        assert_eq!(e.message, "unexpected `NOT` after a value");
        let e = err("   ");
        assert_eq!(e.message, "empty expression");
        let e = err("f(a,)");
        assert_eq!(e.message, "expected an expression, found `)`");
        let e = err("a AND AND b");
        assert_eq!(e.span, Span::new(6, 9));
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(err(&deep).message, "expression nested too deeply");
        let deep = format!("{}1", "-".repeat(10_000));
        assert_eq!(err(&deep).message, "expression nested too deeply");
        let e = err("x IN 1");
        assert_eq!(e.message, "expected `(` after `IN`, found `1`");
    }
}
