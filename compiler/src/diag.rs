//! Diagnostics of the front end: every error (and warning) found in a spec, each with a
//! span into the YAML source, a message and an optional help line.
//!
//! Architecture invariant: the front end never stops at the first error. Passes push
//! into a [`Reporter`]; [`Diagnostics`] carries all of them at once, rendered by miette
//! with one snippet per error (`[file:line:col]`, the YAML line, a pointer).

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};

pub use miette::Severity;

/// A byte range `[start, end)` into the spec source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// An empty span at `at` (rendered as a pointer at that position).
    pub fn point(at: usize) -> Span {
        Span { start: at, end: at }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.len()).into()
    }
}

/// A labeled span of a diagnostic; the first label of a diagnostic is its primary one.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: Option<String>,
}

/// The source a diagnostic points into: the spec text under the path as the user gave it.
pub type Source = NamedSource<Arc<String>>;

/// One error or warning.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct Diagnostic {
    severity: Severity,
    message: String,
    labels: Vec<Label>,
    help: Option<String>,
    source_code: Option<Source>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, message.into())
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, message.into())
    }

    fn new(severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            message,
            labels: Vec::new(),
            help: None,
            source_code: None,
        }
    }

    /// Adds a label; the first one added is the primary label.
    pub fn label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: Some(text.into()).filter(|t: &String| !t.is_empty()),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Sets the help line if `help` is `Some`.
    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn with_source(mut self, source: Source) -> Diagnostic {
        self.source_code = Some(source);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The primary span, if the diagnostic points anywhere.
    pub fn span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// 1-based line and column (in characters) of the primary span, if any.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let span = self.span()?;
        let src = self.source_code.as_ref()?.inner();
        Some(line_col(src, span.start))
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(text, at.min(text.len()));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

pub(crate) fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl miette::Diagnostic for Diagnostic {
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source_code.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() || self.source_code.is_none() {
            return None;
        }
        Some(Box::new(self.labels.iter().enumerate().map(|(i, l)| {
            if i == 0 {
                LabeledSpan::new_primary_with_span(l.text.clone(), l.span)
            } else {
                LabeledSpan::new_with_span(l.text.clone(), l.span)
            }
        })))
    }
}

/// All the errors found in one spec (never empty).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{summary}")]
pub struct Diagnostics {
    summary: String,
    #[related]
    errors: Vec<Diagnostic>,
}

impl Diagnostics {
    /// `path` is the spec path as given by the user (it only appears in the summary).
    pub fn new(path: &str, errors: Vec<Diagnostic>) -> Diagnostics {
        let summary = match errors.len() {
            1 => format!("`{path}` has an error"),
            n => format!("`{path}` has {n} errors"),
        };
        Diagnostics { summary, errors }
    }

    pub fn errors(&self) -> &[Diagnostic] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.errors.iter()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.errors
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Renders all errors with miette's graphical handler (unicode; ANSI colors if `color`).
pub fn render(d: &Diagnostics, color: bool) -> String {
    render_diagnostic(d, color)
}

/// Renders one diagnostic (such as a warning of `Checked::warnings`).
pub fn render_one(d: &Diagnostic, color: bool) -> String {
    render_diagnostic(d, color)
}

/// Renders any miette diagnostic (e.g. one warning) the same way as [`render`].
pub fn render_diagnostic(d: &dyn miette::Diagnostic, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    handler
        .render_report(&mut out, d)
        .expect("rendering into a String cannot fail");
    out
}

/// Collects diagnostics during one check; attaches the spec source to each.
pub(crate) struct Reporter {
    source: Source,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Reporter {
    pub(crate) fn new(name: &str, text: Arc<String>) -> Reporter {
        Reporter {
            source: NamedSource::new(name, text),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn text(&self) -> &str {
        self.source.inner()
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        let d = d.with_source(self.source.clone());
        match d.severity {
            Severity::Error => self.errors.push(d),
            Severity::Warning | Severity::Advice => self.warnings.push(d),
        }
    }

    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Errors (sorted by position, in a stable way) and warnings.
    pub(crate) fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let key = |d: &Diagnostic| d.span().map_or(0, |s| s.start);
        self.errors.sort_by_key(key);
        self.warnings.sort_by_key(key);
        (self.errors, self.warnings)
    }
}

/// "did you mean" helper: the candidate closest to `name` by edit distance, if it is
/// close enough to be a plausible typo.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let max = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `a`, `b` and `c` (names quoted with backticks); at most `max` names, then "...".
pub fn list_names<'a, I>(names: I, max: usize) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    let names: Vec<&str> = names.into_iter().collect();
    let shown: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    let mut out = match shown.len() {
        0 => String::new(),
        1 => shown[0].clone(),
        n => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
    };
    if names.len() > max {
        out = format!("{}, ... ({} in all)", shown.join(", "), names.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("windw", "window"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("windw", ["filter", "window", "map"]),
            Some("window")
        );
        assert_eq!(did_you_mean("sttus", ["status", "url"]), Some("status"));
        assert_eq!(did_you_mean("zzzzzz", ["status", "url"]), None);
        assert_eq!(did_you_mean("Status", ["status"]), Some("status"));
    }

    #[test]
    fn names_list() {
        assert_eq!(list_names(["a"], 5), "`a`");
        assert_eq!(list_names(["a", "b", "c"], 5), "`a`, `b` and `c`");
        assert_eq!(list_names(["a", "b", "c"], 2), "`a`, `b`, ... (3 in all)");
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    #[test]
    fn renders_related_errors_with_positions() {
        let mut rep = Reporter::new("x.yaml", Arc::new("name: Bad\n".to_string()));
        rep.push(
            Diagnostic::error("bad name")
                .label(Span::new(6, 9), "here")
                .help("use `bad`"),
        );
        let (errors, _) = rep.finish();
        let d = Diagnostics::new("x.yaml", errors);
        let out = render(&d, false);
        assert!(out.contains("[x.yaml:1:7]"), "{out}");
        assert!(out.contains("bad name"), "{out}");
        assert!(out.contains("help: use `bad`"), "{out}");
    }
}
