//! A YAML node tree where every node (keys included) keeps its byte span in the source.
//!
//! Built from `saphyr-parser` events. Only what specs need: scalars (with their style,
//! so that a quoted `'1'` stays a string), sequences, mappings with scalar keys, aliases
//! (expanded, bounded) and one document per file.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

use crate::diag::{Diagnostic, Reporter, Span};

/// Alias expansion bound (protection against "billion laughs" documents).
const MAX_ALIAS_NODES: usize = 100_000;
/// Nesting bound: later passes recurse over the tree.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// Byte span of the node in the source: a scalar's text (quotes included, except for
    /// block scalars, whose span is their content), a collection's extent.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// `null`, `~` or nothing.
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub value: String,
    pub style: Style,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
}

impl Entry {
    /// The key's text, if it is a scalar (the builder rejects other keys).
    pub fn key_str(&self) -> &str {
        match &self.key.kind {
            NodeKind::Scalar(s) => &s.value,
            _ => "",
        }
    }
}

impl Node {
    /// What kind of node this is, for messages ("expected a mapping, found a sequence").
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "nothing",
            NodeKind::Scalar(_) => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// A span that is short enough to point at: a collection's first line.
    pub fn head_span(&self, text: &str) -> Span {
        let end = text[self.span.start.min(text.len())..self.span.end.min(text.len())]
            .find('\n')
            .map_or(self.span.end, |i| self.span.start + i);
        Span::new(self.span.start, end)
    }

    /// For a scalar: the source byte offset of every byte index `0..=value.len()` of its
    /// decoded value, so that a position inside an expression string maps into the YAML
    /// (skipping the opening quote, escapes and line folding; best effort for block
    /// scalars). Empty for non-scalars.
    pub fn value_offsets(&self, text: &str) -> Vec<usize> {
        let NodeKind::Scalar(scalar) = &self.kind else {
            return Vec::new();
        };
        let end = self.span.end.min(text.len());
        let mut j = match scalar.style {
            Style::SingleQuoted | Style::DoubleQuoted => self.span.start + 1,
            _ => self.span.start,
        }
        .min(end);
        let raw = &text[..end];
        let mut out = Vec::with_capacity(scalar.value.len() + 1);
        for c in scalar.value.chars() {
            let at = align_char(raw, &mut j, c, scalar.style);
            for k in 0..c.len_utf8() {
                out.push((at + k).min(end));
            }
        }
        out.push(j.min(end));
        out
    }
}

/// Finds where decoded char `c` comes from, starting at raw byte `*j`; advances `*j`.
fn align_char(raw: &str, j: &mut usize, c: char, style: Style) -> usize {
    loop {
        let Some(r) = raw.get(*j..).and_then(|s| s.chars().next()) else {
            return raw.len();
        };
        let at = *j;
        let next = raw.get(at + r.len_utf8()..).and_then(|s| s.chars().next());
        if style == Style::DoubleQuoted && r == '\\' {
            match next {
                Some('\n' | '\r') => {
                    // An escaped line break produces nothing: skip it and the indentation.
                    *j += 2;
                    while let Some(w) = raw[*j..].chars().next().filter(|w| w.is_whitespace()) {
                        *j += w.len_utf8();
                    }
                    continue;
                }
                Some(e) => {
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        'U' => 8,
                        _ => 0,
                    };
                    *j = (at + 1 + e.len_utf8() + digits).min(raw.len());
                    return at;
                }
                None => {
                    *j += 1;
                    return at;
                }
            }
        }
        if style == Style::SingleQuoted && r == '\'' && next == Some('\'') {
            *j += 2;
            return at;
        }
        if r == c || (c.is_whitespace() && r.is_whitespace()) {
            *j += r.len_utf8();
            return at;
        }
        if r.is_whitespace() {
            *j += r.len_utf8();
            continue;
        }
        // Not aligned (should not happen): point here without consuming.
        return at;
    }
}

/// Converts the parser's character indexes to byte offsets.
struct Offsets {
    /// `bytes[i]` = byte offset of char `i`; empty when the text is ASCII.
    bytes: Vec<usize>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Offsets {
        let bytes = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(text.len()))
                .collect()
        };
        Offsets {
            bytes,
            len: text.len(),
        }
    }

    fn byte(&self, m: Marker) -> usize {
        let i = m.index();
        if self.bytes.is_empty() {
            i.min(self.len)
        } else {
            self.bytes.get(i).copied().unwrap_or(self.len)
        }
    }

    fn span(&self, s: saphyr_parser::Span) -> Span {
        Span::new(self.byte(s.start), self.byte(s.end))
    }
}

enum Frame {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<Node>,
    },
}

/// Parses the reporter's source into a node tree. `None` after a YAML syntax error (then
/// reported). An empty document gives a `Null` node.
pub(crate) fn parse(rep: &mut Reporter) -> Option<Node> {
    let text = rep.text().to_string();
    let offsets = Offsets::new(&text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut expanded = 0usize;
    let mut documents = 0usize;

    for item in Parser::new_from_str(&text) {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) => {
                let mut at = offsets.byte(*e.marker());
                let mut label = "here";
                if e.info().contains("tab")
                    && let Some(tab) = offending_tab(&text, at)
                {
                    // The scanner's marker is after the tab, or (a tab that ends a plain
                    // scalar) still on the line before it: point at the tab itself.
                    at = tab;
                    label = "this tab";
                }
                let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                let mut d = Diagnostic::error(format!("invalid YAML: {}", e.info()))
                    .label(Span::new(at, end), label);
                for (open, close, what) in [('{', '}', "flow mapping"), ('[', ']', "flow sequence")]
                {
                    if e.info().contains(what)
                        && let Some(o) = unclosed(&text[..at], open, close)
                    {
                        d = d
                            .label(Span::new(o, o + 1), format!("this `{open}` is not closed"))
                            .help(format!(
                                "close it with `{close}`, or write the value as an indented block"
                            ));
                        break;
                    }
                }
                if e.info().contains("tab") {
                    d = d.help("indent with spaces: YAML does not allow tabs in indentation");
                }
                rep.push(d);
                return None;
            }
        };
        let span = offsets.span(span);
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    rep.push(
                        Diagnostic::error("a spec is a single YAML document")
                            .label(span, "a second document starts here")
                            .help("remove the `---` line and what follows, or merge the documents"),
                    );
                    return None;
                }
                continue;
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                    _ => Style::Plain,
                };
                let kind = if style == Style::Plain
                    && matches!(&*value, "" | "~" | "null" | "Null" | "NULL")
                {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar(Scalar {
                        value: value.into_owned(),
                        style,
                    })
                };
                let node = Node { kind, span };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    expanded += count_nodes(n);
                    if expanded > MAX_ALIAS_NODES {
                        rep.push(
                            Diagnostic::error("aliases expand to too many nodes")
                                .label(span, "this alias"),
                        );
                        return None;
                    }
                    Node {
                        kind: n.kind.clone(),
                        span,
                    }
                }
                None => {
                    rep.push(Diagnostic::error("unknown alias").label(span, "no such anchor"));
                    return None;
                }
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                rep.push(
                    Diagnostic::error("the spec is nested too deeply")
                        .label(
                            Span::new(span.start, span.end.max(span.start + 1).min(text.len())),
                            "too deep",
                        )
                        .help(format!(
                            "a spec nests at most {MAX_DEPTH} levels of lists and mappings"
                        )),
                );
                return None;
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    start: span.start,
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    start: span.start,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) = stack.pop()
                else {
                    continue;
                };
                let last = items.last().map_or(start, |n| n.span.end);
                let node = Node {
                    kind: NodeKind::Seq(items),
                    span: Span::new(start, last.max(span.end)),
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    key,
                }) = stack.pop()
                else {
                    continue;
                };
                let mut entries = entries;
                if let Some(key) = key {
                    // A key without a value event cannot happen; keep it as null.
                    let at = key.span.end;
                    entries.push(Entry {
                        key,
                        value: Node {
                            kind: NodeKind::Null,
                            span: Span::point(at),
                        },
                    });
                }
                let last = entries
                    .last()
                    .map_or(start, |e| e.value.span.end.max(e.key.span.end));
                // Block mappings end where their last value ends; flow mappings at `}`.
                let end = if span.is_empty() {
                    last
                } else {
                    last.max(span.end)
                };
                let node = Node {
                    kind: NodeKind::Map(entries),
                    span: Span::new(start, end),
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {
                continue;
            }
        };
        // Attach the finished node to its parent.
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => {
                match key.take() {
                    None => {
                        if !matches!(node.kind, NodeKind::Scalar(_) | NodeKind::Null) {
                            rep.push(
                                Diagnostic::error(format!(
                                    "a mapping key must be a name, found {}",
                                    node.kind_name()
                                ))
                                .label(node.head_span(&text), "this key"),
                            );
                        }
                        *key = Some(node);
                    }
                    Some(k) => {
                        let name = match &k.kind {
                            NodeKind::Scalar(s) => Some(s.value.as_str()),
                            NodeKind::Null => Some(""),
                            _ => None,
                        };
                        let first = name.and_then(|name| {
                            entries.iter().find(
                                |e| matches!(&e.key.kind, NodeKind::Scalar(s) if s.value == name),
                            )
                        });
                        if let Some(first) = first {
                            rep.push(
                            Diagnostic::error(format!("duplicate key `{}`", first.key_str()))
                                .label(k.span, "defined again here")
                                .label(first.key.span, "first defined here")
                                .help("each key may appear once in a mapping; remove or rename one"),
                        );
                        } else if matches!(k.kind, NodeKind::Scalar(_)) {
                            entries.push(Entry {
                                key: k,
                                value: node,
                            });
                        } else if k.is_null() {
                            rep.push(
                                Diagnostic::error("empty mapping key")
                                    .label(Span::point(k.span.start), "a name is missing here"),
                            );
                        }
                    }
                }
            }
        }
    }
    Some(root.unwrap_or(Node {
        kind: NodeKind::Null,
        span: Span::point(0),
    }))
}

/// The tab a tab error of the scanner is about, given its marker `at`: the tab just
/// before it (among the blanks before `at` on its line), else the first tab after it.
fn offending_tab(text: &str, at: usize) -> Option<usize> {
    let at = at.min(text.len());
    let before = &text[..at];
    let blanks = before.len() - before.trim_end_matches([' ', '\t']).len();
    if let Some(i) = before[at - blanks..].rfind('\t') {
        return Some(at - blanks + i);
    }
    text[at..].find('\t').map(|i| at + i)
}

/// The offset of the last `open` in `before` that has no matching `close` (quotes and
/// comments are not considered: this only serves a hint).
fn unclosed(before: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in before.char_indices().rev() {
        if c == close {
            depth += 1;
        } else if c == open {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.kind {
        NodeKind::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeKind::Map(entries) => entries
            .iter()
            .map(|e| count_nodes(&e.key) + count_nodes(&e.value))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn parse_ok(text: &str) -> Node {
        let mut rep = Reporter::new("t.yaml", Arc::new(text.to_string()));
        let node = parse(&mut rep).expect("parses");
        assert!(!rep.has_errors(), "{:?}", rep.finish().0);
        node
    }

    fn errors(text: &str) -> Vec<String> {
        let mut rep = Reporter::new("t.yaml", Arc::new(text.to_string()));
        let _ = parse(&mut rep);
        rep.finish()
            .0
            .iter()
            .map(|d| d.message().to_string())
            .collect()
    }

    fn slice(text: &str, s: Span) -> &str {
        &text[s.start..s.end]
    }

    #[test]
    fn spans_of_keys_and_values() {
        let text = "a: 1\nb:\n  c: 'x y'\n  d: [1, two]\n";
        let root = parse_ok(text);
        let m = root.as_map().unwrap();
        assert_eq!(slice(text, m[0].key.span), "a");
        assert_eq!(slice(text, m[0].value.span), "1");
        let b = m[1].value.as_map().unwrap();
        assert_eq!(slice(text, b[0].value.span), "'x y'");
        assert_eq!(slice(text, b[1].value.span), "[1, two]");
        assert_eq!(slice(text, m[1].value.span), "c: 'x y'\n  d: [1, two]");
    }

    #[test]
    fn null_forms() {
        let root = parse_ok("a:\nb: ~\nc: null\nd: 'null'\n");
        let m = root.as_map().unwrap();
        assert!(m[0].value.is_null() && m[1].value.is_null() && m[2].value.is_null());
        assert!(!m[3].value.is_null());
    }

    #[test]
    fn non_ascii_offsets_are_bytes() {
        let text = "é: 'ü'\nk: v\n";
        let root = parse_ok(text);
        let m = root.as_map().unwrap();
        assert_eq!(slice(text, m[1].key.span), "k");
        assert_eq!(slice(text, m[0].value.span), "'ü'");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        assert_eq!(errors("a: 1\na: 2\n"), vec!["duplicate key `a`"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = errors("a: [1, 2\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("invalid YAML"), "{e:?}");
        assert_eq!(
            errors("a: 1\n---\nb: 2\n"),
            vec!["a spec is a single YAML document"]
        );
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let text = format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(errors(&text), vec!["the spec is nested too deeply"]);
        let text = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(errors(&text).len(), 1);
    }

    #[test]
    fn a_tab_in_the_indentation_is_located_on_its_line() {
        // (text, line and column of the tab, 1-based)
        let cases = [
            ("a: 1\n\tb: 2\n", (2, 1)),
            ("a:\n  - 1\n\t- 2\n", (3, 1)),
            ("a:\n\tb: 2\n", (2, 1)),
            ("a:\n  b:\n  \tc: 1\n", (3, 3)),
            ("a:\n  b: x\n  \tc: 1\n", (3, 3)),
            ("x:\n  - y\n  - z\n\n\t- w\n", (5, 1)),
        ];
        for (text, want) in cases {
            let mut rep = Reporter::new("t.yaml", Arc::new(text.to_string()));
            assert!(parse(&mut rep).is_none(), "{text:?} parses");
            let (diags, _) = rep.finish();
            assert_eq!(diags.len(), 1, "{text:?}");
            let span = diags[0].span().expect("located");
            assert_eq!(&text[span.start..span.end], "\t", "{text:?}");
            assert_eq!(crate::diag::line_col(text, span.start), want, "{text:?}");
            assert!(diags[0].help_text().unwrap().contains("indent with spaces"));
        }
    }

    #[test]
    fn aliases_are_expanded() {
        let root = parse_ok("a: &x {k: v}\nb: *x\n");
        let m = root.as_map().unwrap();
        assert_eq!(m[1].value.as_map().unwrap()[0].key_str(), "k");
    }

    #[test]
    fn offsets_inside_scalars() {
        let cases = [
            ("f: a > 1\n", "a > 1"),
            ("f: 'x = ''y'' AND b'\n", "x = 'y' AND b"),
            ("f: \"x \\\"q\\\" b\"\n", "x \"q\" b"),
            ("f: |\n  a\n  b > 1\n", "a\nb > 1\n"),
            ("f: >-\n  a\n  b > 1\n", "a b > 1"),
            ("f: a\n  b\n", "a b"),
        ];
        for (text, value) in cases {
            let root = parse_ok(text);
            let node = &root.as_map().unwrap()[0].value;
            assert_eq!(node.as_scalar().unwrap().value, value);
            let offs = node.value_offsets(text);
            assert_eq!(offs.len(), value.len() + 1);
            // Every non-space char of the value maps onto the same char in the source
            // (except escaped ones, which map onto their backslash or quote).
            for (i, c) in value.char_indices() {
                let src = text[offs[i]..].chars().next().unwrap();
                assert!(
                    src == c || c.is_whitespace() || src == '\\' || src == '\'',
                    "{text:?}: char {c:?} at {i} maps to {src:?}"
                );
            }
        }
    }
}
