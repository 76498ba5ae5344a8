//! Tokens of the expression language. Positions are byte offsets into the expression
//! string (the parser maps them into the YAML source).

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// Digits of an integer literal (range checked by the parser, which knows the sign).
    Int(String),
    Float(f64),
    Str(String),
    Ident(String),
    /// `"quoted identifier"`: never a keyword or a function.
    QuotedIdent(String),
    Kw(Kw),
    Punct(Punct),
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kw {
    And,
    Or,
    Not,
    Is,
    Null,
    In,
    Case,
    When,
    Then,
    Else,
    End,
    True,
    False,
}

const KEYWORDS: [(&str, Kw); 13] = [
    ("AND", Kw::And),
    ("OR", Kw::Or),
    ("NOT", Kw::Not),
    ("IS", Kw::Is),
    ("NULL", Kw::Null),
    ("IN", Kw::In),
    ("CASE", Kw::Case),
    ("WHEN", Kw::When),
    ("THEN", Kw::Then),
    ("ELSE", Kw::Else),
    ("END", Kw::End),
    ("TRUE", Kw::True),
    ("FALSE", Kw::False),
];

pub(super) fn keyword(word: &str) -> Option<Kw> {
    KEYWORDS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(word))
        .map(|(_, kw)| *kw)
}

/// Whether `word` is a keyword (any case), so a field with that name must be quoted.
pub fn is_keyword(word: &str) -> bool {
    keyword(word).is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Punct {
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    LParen,
    RParen,
    Comma,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// A lexical error: message, local byte range, label, help.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LexError {
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub label: String,
    pub help: Option<String>,
}

pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, LexError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'0'..=b'9' | b'.' if c != b'.' || bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (tok, end) = number(text, i)?;
                i = end;
                tok
            }
            b'\'' => {
                let (s, end) = quoted(text, i, b'\'').ok_or_else(|| LexError {
                    message: "unterminated string literal".to_string(),
                    start,
                    end: start + 1,
                    label: "this string is never closed".to_string(),
                    help: Some("close it with `'` (write `''` for a quote inside it)".to_string()),
                })?;
                i = end;
                Tok::Str(s)
            }
            b'"' => {
                let (s, end) = quoted(text, i, b'"').ok_or_else(|| LexError {
                    message: "unterminated quoted name".to_string(),
                    start,
                    end: start + 1,
                    label: "this name is never closed".to_string(),
                    help: Some(
                        "double quotes name a field; string literals use single quotes: 'text'"
                            .to_string(),
                    ),
                })?;
                i = end;
                Tok::QuotedIdent(s)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                match keyword(word) {
                    Some(kw) => Tok::Kw(kw),
                    None => Tok::Ident(word.to_string()),
                }
            }
            _ => {
                let two = text.get(i..i + 2).unwrap_or("");
                let (p, len) = match two {
                    "<=" => (Punct::LtEq, 2),
                    ">=" => (Punct::GtEq, 2),
                    "<>" | "!=" => (Punct::NotEq, 2),
                    "==" | "&&" | "||" => {
                        let (instead, what) = match two {
                            "==" => ("=", "equality is a single `=` in SQL"),
                            "&&" => ("AND", "use the keyword `AND`"),
                            _ => (
                                "OR",
                                "use the keyword `OR` (string concatenation is not supported)",
                            ),
                        };
                        return Err(LexError {
                            message: format!("`{two}` is not an operator here"),
                            start,
                            end: start + 2,
                            label: format!("write `{instead}`"),
                            help: Some(what.to_string()),
                        });
                    }
                    _ => {
                        let p = match c {
                            b'+' => Punct::Plus,
                            b'-' => Punct::Minus,
                            b'*' => Punct::Star,
                            b'/' => Punct::Slash,
                            b'%' => Punct::Percent,
                            b'=' => Punct::Eq,
                            b'<' => Punct::Lt,
                            b'>' => Punct::Gt,
                            b'(' => Punct::LParen,
                            b')' => Punct::RParen,
                            b',' => Punct::Comma,
                            _ => {
                                let ch = text[i..].chars().next().unwrap_or('?');
                                let help = match ch {
                                    '!' => Some("use `NOT` for negation and `<>` for inequality"),
                                    '`' => Some("quote a field name with double quotes: \"name\""),
                                    _ => None,
                                };
                                return Err(LexError {
                                    message: format!("unexpected character `{ch}` in expression"),
                                    start,
                                    end: start + ch.len_utf8(),
                                    label: "not valid here".to_string(),
                                    help: help.map(str::to_string),
                                });
                            }
                        };
                        (p, 1)
                    }
                };
                i += len;
                Tok::Punct(p)
            }
        };
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: text.len(),
        end: text.len(),
    });
    Ok(out)
}

/// A numeric literal at `i`: `123`, `1.5`, `.5`, `1e3`, `2.5E-3`.
fn number(text: &str, mut i: usize) -> Result<(Tok, usize), LexError> {
    let bytes = text.as_bytes();
    let start = i;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut float = false;
    if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        i += 1;
        digits(&mut i);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            float = true;
            i = j;
            digits(&mut i);
        }
    }
    if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
        let mut end = i;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let suffix = &text[i..end];
        let help = if matches!(suffix, "ms" | "s" | "m" | "h" | "d") {
            "durations are not expressions: write milliseconds (`10s` is `10000`)".to_string()
        } else {
            "a number must be followed by an operator, `)` or `,`".to_string()
        };
        return Err(LexError {
            message: format!("invalid number `{}`", &text[start..end]),
            start,
            end,
            label: "not a number".to_string(),
            help: Some(help),
        });
    }
    let lit = &text[start..i];
    if float {
        let v: f64 = lit.parse().map_err(|_| LexError {
            message: format!("invalid number `{lit}`"),
            start,
            end: i,
            label: "not a number".to_string(),
            help: None,
        })?;
        // (Rust reads `1e400` as infinity.)
        if !v.is_finite() {
            return Err(LexError {
                message: format!("the number `{lit}` is too large"),
                start,
                end: i,
                label: "past the largest float".to_string(),
                help: Some("floats reach about 1.8e308 (f64) and 3.4e38 (f32)".to_string()),
            });
        }
        Ok((Tok::Float(v), i))
    } else {
        Ok((Tok::Int(lit.to_string()), i))
    }
}

/// A string delimited by `q` starting at `i` (a doubled `q` stands for one). Returns the
/// content and the offset past the closing quote.
fn quoted(text: &str, i: usize, q: u8) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut j = i + 1;
    let mut seg = j;
    while j < bytes.len() {
        if bytes[j] == q {
            out.push_str(&text[seg..j]);
            if bytes.get(j + 1) == Some(&q) {
                out.push(q as char);
                j += 2;
                seg = j;
                continue;
            }
            return Some((out, j + 1));
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens() {
        assert_eq!(
            toks("a >= 1.5 AND b <> 'it''s'"),
            vec![
                Tok::Ident("a".into()),
                Tok::Punct(Punct::GtEq),
                Tok::Float(1.5),
                Tok::Kw(Kw::And),
                Tok::Ident("b".into()),
                Tok::Punct(Punct::NotEq),
                Tok::Str("it's".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("\"my field\" is not null"),
            vec![
                Tok::QuotedIdent("my field".into()),
                Tok::Kw(Kw::Is),
                Tok::Kw(Kw::Not),
                Tok::Kw(Kw::Null),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("1e3 .5 7"),
            vec![
                Tok::Float(1000.0),
                Tok::Float(0.5),
                Tok::Int("7".into()),
                Tok::Eof
            ]
        );
        assert_eq!(toks("a!=b")[1], Tok::Punct(Punct::NotEq));
    }

    #[test]
    fn positions() {
        let t = tokenize("ab  + 'x'").unwrap();
        assert_eq!((t[0].start, t[0].end), (0, 2));
        assert_eq!((t[1].start, t[1].end), (4, 5));
        assert_eq!((t[2].start, t[2].end), (6, 9));
        assert_eq!((t[3].start, t[3].end), (9, 9));
    }

    #[test]
    fn errors() {
        let e = tokenize("a = 'open").unwrap_err();
        assert_eq!(
            (e.start, e.message.as_str()),
            (4, "unterminated string literal")
        );
        let e = tokenize("a == 1").unwrap_err();
        assert_eq!((e.start, e.end), (2, 4));
        let e = tokenize("x > 1e400").unwrap_err();
        assert_eq!(
            (e.start, e.end, e.message.as_str()),
            (4, 9, "the number `1e400` is too large")
        );
        let e = tokenize("a $ 1").unwrap_err();
        assert_eq!(e.message, "unexpected character `$` in expression");
        let e = tokenize("ts > 10s").unwrap_err();
        assert!(e.help.unwrap().starts_with("durations"));
        let e = tokenize("x = é").unwrap_err();
        assert_eq!((e.start, e.end), (4, 6));
    }
}
