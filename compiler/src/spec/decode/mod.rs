//! Structural decoding: YAML node tree → [`ast::Spec`](super::ast::Spec). Reports every
//! unknown or missing key, every scalar of the wrong shape and every expression syntax
//! error in one walk, then returns what it could read.

mod flows;
mod sinks;
mod sources;

use std::sync::Arc;

use crate::diag::{Diagnostic, Reporter, Span, did_you_mean, list_names};
use crate::plan::Millis;

use super::ast::{Spanned, Spec};
use super::expr::{self, Expr};
use super::values::{
    ValueError, is_identifier, is_pipeline_name, parse_duration, suggest_identifier,
};
use super::yaml::{Entry, Node, NodeKind};

/// Decodes a parsed document.
pub(crate) fn decode(rep: &mut Reporter, root: &Node) -> Spec {
    let text = Arc::new(rep.text().to_string());
    let mut d = Decoder { rep, text };
    d.spec(root)
}

pub(super) struct Decoder<'r> {
    pub rep: &'r mut Reporter,
    pub text: Arc<String>,
}

/// The keys of one YAML mapping being decoded: tracks which were read, so that the
/// others are reported as unknown.
pub(super) struct Keys<'n> {
    entries: &'n [Entry],
    used: Vec<bool>,
    allowed: &'static [&'static str],
    /// "source `clicks`", "window", ...: used in messages.
    what: String,
    /// Where "missing key" errors point: the key that owns this mapping.
    anchor: Span,
}

impl<'n> Keys<'n> {
    /// The entry for `key`, if present (and marks it read).
    pub fn get(&mut self, key: &str) -> Option<&'n Entry> {
        debug_assert!(
            self.allowed.contains(&key),
            "{key} not in {:?}",
            self.allowed
        );
        let i = self.entries.iter().position(|e| e.key_str() == key)?;
        self.used[i] = true;
        Some(&self.entries[i])
    }

    /// Whether the mapping has keys that are not allowed (reported by `finish`): then a
    /// "missing kind" error would only repeat a typo.
    pub fn has_unknown(&self) -> bool {
        self.entries
            .iter()
            .any(|e| !self.allowed.contains(&e.key_str()))
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn anchor(&self) -> Span {
        self.anchor
    }
}

impl Decoder<'_> {
    pub fn error(&mut self, d: Diagnostic) {
        self.rep.push(d);
    }

    /// Reads `node` as a mapping whose allowed keys are `allowed`. A null node reads as an
    /// empty mapping when `null_ok`.
    pub fn keys<'n>(
        &mut self,
        node: &'n Node,
        what: impl Into<String>,
        anchor: Span,
        allowed: &'static [&'static str],
        null_ok: bool,
    ) -> Option<Keys<'n>> {
        let what = what.into();
        let entries: &'n [Entry] = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null if null_ok => &[],
            _ => {
                self.expected(node, &format!("a mapping for {what}"), anchor);
                return None;
            }
        };
        Some(Keys {
            entries,
            used: vec![false; entries.len()],
            allowed,
            what,
            anchor,
        })
    }

    /// Reports the keys of `keys` that were not read.
    pub fn finish(&mut self, keys: Keys<'_>) {
        for (entry, used) in keys.entries.iter().zip(&keys.used) {
            if *used {
                continue;
            }
            let name = entry.key_str();
            let suggestion = did_you_mean(name, keys.allowed.iter().copied());
            let message = match suggestion {
                Some(s) => format!("unknown key `{name}` in {}; did you mean `{s}`?", keys.what),
                None => format!("unknown key `{name}` in {}", keys.what),
            };
            let label = if suggestion.is_some() {
                "a typo?"
            } else {
                "not a key of this mapping"
            };
            self.error(
                Diagnostic::error(message)
                    .label(entry.key.span, label)
                    .help(format!(
                        "the keys of {} are {}",
                        keys.what,
                        list_names(keys.allowed.iter().copied(), 12)
                    )),
            );
        }
    }

    /// The entry for a required key, or an error pointing at the mapping's owner.
    pub fn require<'n>(
        &mut self,
        keys: &mut Keys<'n>,
        key: &str,
        help: Option<&str>,
    ) -> Option<&'n Entry> {
        let entry = keys.get(key);
        if entry.is_none() {
            let what = keys.what.clone();
            self.error(
                Diagnostic::error(format!("missing `{key}` in {what}"))
                    .label(keys.anchor, format!("{what} needs `{key}`"))
                    .maybe_help(help.map(str::to_string)),
            );
        }
        entry
    }

    /// "expected X, found Y" at `node` (or at `anchor` when the node is empty).
    pub fn expected(&mut self, node: &Node, what: &str, anchor: Span) {
        let (span, found) = match &node.kind {
            NodeKind::Null => (
                if node.span.is_empty() {
                    anchor
                } else {
                    node.span
                },
                "nothing".to_string(),
            ),
            NodeKind::Scalar(s) => (node.span, format!("`{}`", short(&s.value))),
            _ => (node.head_span(&self.text), node.kind_name().to_string()),
        };
        self.error(
            Diagnostic::error(format!("expected {what}, found {found}"))
                .label(span, format!("expected {what}")),
        );
    }

    /// A string scalar (numbers and booleans read as their text).
    pub fn string(&mut self, entry: &Entry, what: &str) -> Option<Spanned<String>> {
        match &entry.value.kind {
            NodeKind::Scalar(s) => Some(Spanned::new(s.value.clone(), entry.value.span)),
            _ => {
                self.expected(&entry.value, what, entry.key.span);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn nonempty_string(&mut self, entry: &Entry, what: &str) -> Option<Spanned<String>> {
        let s = self.string(entry, what)?;
        if s.value.trim().is_empty() {
            self.error(Diagnostic::error(format!("{what} is empty")).label(s.span, "empty"));
            return None;
        }
        Some(s)
    }

    /// Checks that a declared or referenced name is an identifier; reports otherwise.
    pub fn check_identifier(&mut self, name: &Spanned<String>, what: &str) -> bool {
        if is_identifier(&name.value) {
            return true;
        }
        let help = match suggest_identifier(&name.value, false) {
            Some(s) => {
                format!("names use letters, digits and `_`, and do not start with a digit: `{s}`")
            }
            None => "names use letters, digits and `_`, and do not start with a digit".to_string(),
        };
        self.error(
            Diagnostic::error(format!("invalid {what} `{}`", short(&name.value)))
                .label(name.span, "must match [A-Za-z_][A-Za-z0-9_]*")
                .help(help),
        );
        false
    }

    /// A non-negative integer (`50000`, `50_000`).
    /// `true` or `false`.
    pub fn boolean(&mut self, entry: &Entry, what: &str) -> Option<bool> {
        let s = self.string(entry, "`true` or `false`")?;
        match s.value.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                self.error(
                    Diagnostic::error(format!("invalid {what} `{}`", short(other)))
                        .label(s.span, "expected `true` or `false`"),
                );
                None
            }
        }
    }

    pub fn u64(&mut self, entry: &Entry, what: &str) -> Option<u64> {
        if let NodeKind::Scalar(s) = &entry.value.kind {
            let digits: String = s.value.trim().chars().filter(|c| *c != '_').collect();
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                if let Ok(v) = digits.parse::<u64>() {
                    return Some(v);
                }
                self.error(
                    Diagnostic::error(format!("{what} `{}` is too large", s.value))
                        .label(entry.value.span, "out of range"),
                );
                return None;
            }
        }
        self.expected(
            &entry.value,
            &format!("a non-negative integer for {what}"),
            entry.key.span,
        );
        None
    }

    /// A number.
    pub fn f64(&mut self, entry: &Entry, what: &str) -> Option<f64> {
        if let NodeKind::Scalar(s) = &entry.value.kind
            && let Ok(v) = s.value.trim().replace('_', "").parse::<f64>()
            && v.is_finite()
        {
            return Some(v);
        }
        self.expected(
            &entry.value,
            &format!("a number for {what}"),
            entry.key.span,
        );
        None
    }

    /// A duration (`250ms`, `10s`, `1m`, `1h`, `1d`); negative only when `negative_ok`.
    pub fn duration(&mut self, entry: &Entry, what: &str, negative_ok: bool) -> Option<Millis> {
        let NodeKind::Scalar(s) = &entry.value.kind else {
            self.expected(
                &entry.value,
                &format!("a duration for {what} (such as `10s`)"),
                entry.key.span,
            );
            return None;
        };
        match parse_duration(&s.value) {
            Ok(ms) if ms < 0 && !negative_ok => {
                self.error(
                    Diagnostic::error(format!("{what} must not be negative"))
                        .label(entry.value.span, "negative duration"),
                );
                None
            }
            Ok(ms) => Some(ms),
            Err(ValueError { message, help }) => {
                self.error(
                    Diagnostic::error(format!("invalid duration for {what}: {message}"))
                        .label(entry.value.span, "not a duration")
                        .maybe_help(help),
                );
                None
            }
        }
    }

    /// A list of names, or a single name (references: resolution reports unknown ones).
    pub fn name_list(&mut self, entry: &Entry, what: &str) -> Option<Vec<Spanned<String>>> {
        match &entry.value.kind {
            NodeKind::Scalar(s) => Some(vec![Spanned::new(s.value.clone(), entry.value.span)]),
            NodeKind::Null => Some(Vec::new()),
            NodeKind::Seq(items) => {
                let mut out = Vec::new();
                for item in items {
                    match &item.kind {
                        NodeKind::Scalar(s) => out.push(Spanned::new(s.value.clone(), item.span)),
                        _ => self.expected(item, &format!("a {what}"), entry.key.span),
                    }
                }
                Some(out)
            }
            NodeKind::Map(_) => {
                self.expected(&entry.value, &format!("a list of {what}s"), entry.key.span);
                None
            }
        }
    }

    /// An expression string, parsed. Syntax errors are reported; None then.
    pub fn expr(&mut self, node: &Node, anchor: Span) -> Option<Expr> {
        let (value, offsets) = match &node.kind {
            NodeKind::Scalar(s) => (s.value.clone(), node.value_offsets(&self.text)),
            // `NULL`, `null` and `~` are YAML nulls, and the SQL NULL.
            NodeKind::Null if !node.span.is_empty() => (
                self.text[node.span.start..node.span.end].to_string(),
                (node.span.start..=node.span.end).collect(),
            ),
            _ => {
                self.expected(node, "an expression", anchor);
                return None;
            }
        };
        match expr::parse(&value, &offsets) {
            Ok(e) => Some(e),
            Err(e) => {
                self.error(e.into_diagnostic());
                None
            }
        }
    }

    /// String → string properties (`properties: {acks: all, linger.ms: 5}`).
    pub fn properties(&mut self, entry: &Entry, what: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &entry.value.kind {
            NodeKind::Null => {}
            NodeKind::Map(entries) => {
                for e in entries {
                    match &e.value.kind {
                        NodeKind::Scalar(s) => out.push((e.key_str().to_string(), s.value.clone())),
                        _ => self.expected(
                            &e.value,
                            &format!("a scalar value for {what} `{}`", e.key_str()),
                            e.key.span,
                        ),
                    }
                }
            }
            _ => self.expected(
                &entry.value,
                &format!("a mapping for {what}"),
                entry.key.span,
            ),
        }
        out
    }

    /// Each entry of a mapping of named declarations (`sources:`, `flows:`, `sinks:`).
    pub fn named_entries<'n>(
        &mut self,
        entry: Option<&'n Entry>,
        what: &str,
        required: bool,
        anchor: Span,
    ) -> &'n [Entry] {
        let Some(entry) = entry else {
            if required {
                self.error(
                    Diagnostic::error(format!("missing `{what}`"))
                        .label(anchor, format!("the spec needs `{what}`"))
                        .help(format!(
                            "declare `{what}:` at the top level (see docs/pipeline-spec.md)"
                        )),
                );
            }
            return &[];
        };
        match &entry.value.kind {
            NodeKind::Map(entries) => {
                if entries.is_empty() && required {
                    self.error(Diagnostic::error(format!("`{what}` is empty")).label(
                        entry.key.span,
                        format!("declare at least one under `{what}`"),
                    ));
                }
                entries
            }
            NodeKind::Null if required => {
                self.error(Diagnostic::error(format!("`{what}` is empty")).label(
                    entry.key.span,
                    format!("declare at least one under `{what}`"),
                ));
                &[]
            }
            NodeKind::Null => &[],
            _ => {
                self.expected(
                    &entry.value,
                    &format!("a mapping of names to {what}"),
                    entry.key.span,
                );
                &[]
            }
        }
    }

    fn spec(&mut self, root: &Node) -> Spec {
        let mut spec = Spec::default();
        if root.is_null() {
            self.error(
                Diagnostic::error("the spec is empty")
                    .label(Span::point(0), "nothing here")
                    .help("a spec starts with `version: 1` and `name:`, then `sources`, `flows` and `sinks`"),
            );
            return spec;
        }
        let top = Span::point(root.span.start);
        let Some(mut keys) = self.keys(
            root,
            "the spec",
            top,
            &[
                "version",
                "name",
                "sources",
                "flows",
                "sinks",
                "dead_letter",
                "checkpoint",
                "state",
                "serve",
            ],
            false,
        ) else {
            return spec;
        };
        if let Some(e) = self.require(
            &mut keys,
            "version",
            Some("start the spec with `version: 1`"),
        ) && !matches!(&e.value.kind, NodeKind::Scalar(s) if s.value.trim() == "1")
        {
            self.error(
                Diagnostic::error("unsupported spec version")
                    .label(e.value.head_span(&self.text), "expected 1")
                    .help("this streamc reads `version: 1`"),
            );
        }
        let name_help = "add `name: my_pipeline`: it names the generated binary";
        if let Some(e) = self.require(&mut keys, "name", Some(name_help))
            && let Some(name) = self.string(e, "a pipeline name")
        {
            if is_pipeline_name(&name.value) {
                spec.name = Some(name);
            } else {
                let help = match suggest_identifier(&name.value, true) {
                    Some(s) => format!("the name is used for the generated crate and binary; try `{s}`"),
                    None => "the name is used for the generated crate and binary: lowercase letters, digits and `_`"
                        .to_string(),
                };
                self.error(
                    Diagnostic::error(format!("invalid pipeline name `{}`", short(&name.value)))
                        .label(name.span, "must match [a-z][a-z0-9_]*")
                        .help(help),
                );
            }
        }
        let sources = keys.get("sources");
        for entry in self.named_entries(sources, "sources", true, top) {
            let s = self.source(entry);
            spec.sources.push(s);
        }
        let flows = keys.get("flows");
        for entry in self.named_entries(flows, "flows", true, top) {
            let f = self.flow(entry);
            spec.flows.push(f);
        }
        let sinks = keys.get("sinks");
        for entry in self.named_entries(sinks, "sinks", true, top) {
            let s = self.sink(entry);
            spec.sinks.push(s);
        }
        if let Some(e) = keys.get("dead_letter") {
            spec.dead_letter = self
                .sink_body(&e.value, "dead_letter", e.key.span)
                .map(|b| Spanned::new(b, e.key.span));
        }
        if let Some(e) = keys.get("checkpoint") {
            spec.checkpoint = self.checkpoint(e);
        }
        if let Some(e) = keys.get("state") {
            spec.state = self.state(e);
        }
        if let Some(e) = keys.get("serve") {
            spec.serve = self.serve(e);
        }
        self.finish(keys);
        spec
    }
}

/// At most 40 characters of `s` (for messages).
pub(super) fn short(s: &str) -> String {
    let first_line = s.lines().next().unwrap_or("");
    if first_line.chars().count() > 40 || first_line.len() < s.trim_end().len() {
        format!("{}...", first_line.chars().take(40).collect::<String>())
    } else {
        first_line.to_string()
    }
}
