//! `flows:` entries and their steps.

use super::Decoder;
use crate::diag::{Diagnostic, Span, did_you_mean, list_names};
use crate::plan::WindowKind;
use crate::spec::ast::{FlowDecl, Spanned, StepDecl, StepKind, WindowDecl};
use crate::spec::values::format_duration;
use crate::spec::yaml::{Entry, Node, NodeKind};

const STEP_KINDS: [&str; 5] = ["filter", "map", "key_by", "window", "aggregate"];
/// Steps of the spec that have their own issues and are not implemented yet.
const LATER_STEP_KINDS: [&str; 2] = ["join", "pattern"];

impl Decoder<'_> {
    pub(super) fn flow(&mut self, entry: &Entry) -> FlowDecl {
        let name = Spanned::new(entry.key_str().to_string(), entry.key.span);
        self.check_identifier(&name, "flow name");
        let what = format!("flow `{}`", name.value);
        let mut flow = FlowDecl {
            name,
            from: None,
            steps: Vec::new(),
            to: Vec::new(),
            late: None,
            broken: false,
        };
        let Some(mut keys) = self.keys(
            &entry.value,
            what,
            entry.key.span,
            &["from", "steps", "to", "late"],
            false,
        ) else {
            flow.broken = true;
            return flow;
        };
        flow.from = self
            .require(
                &mut keys,
                "from",
                Some("name the source or flow this flow reads: `from: clicks`"),
            )
            .and_then(|e| self.nonempty_string(e, "a source or flow name"));
        if let Some(e) = keys.get("steps") {
            self.steps(e, &mut flow);
        }
        if let Some(e) = keys.get("to") {
            flow.to = self.name_list(e, "sink name").unwrap_or_default();
        }
        if let Some(e) = keys.get("late") {
            flow.late = self.nonempty_string(e, "a sink name");
        }
        self.finish(keys);
        flow
    }

    fn steps(&mut self, entry: &Entry, flow: &mut FlowDecl) {
        let items: &[Node] = match &entry.value.kind {
            NodeKind::Seq(items) => items,
            NodeKind::Null => &[],
            _ => {
                self.expected(
                    &entry.value,
                    "a list of steps (`- filter: ...`)",
                    entry.key.span,
                );
                flow.steps.push(StepDecl {
                    span: entry.key.span,
                    kind: None,
                });
                return;
            }
        };
        for item in items {
            let span = match &item.kind {
                NodeKind::Map(entries) if !entries.is_empty() => entries[0].key.span,
                _ => item.head_span(&self.text),
            };
            let kind = self.step(item, entry.key.span);
            flow.steps.push(StepDecl { span, kind });
        }
    }

    fn step(&mut self, item: &Node, anchor: Span) -> Option<StepKind> {
        let entries = match &item.kind {
            NodeKind::Map(entries) if !entries.is_empty() => entries,
            _ => {
                self.expected(
                    item,
                    "a step such as `filter: EXPR` or `window: {...}`",
                    anchor,
                );
                return None;
            }
        };
        if let Some(second) = entries.get(1) {
            self.error(
                Diagnostic::error("more than one step in one list item")
                    .label(second.key.span, "a second step")
                    .label(entries[0].key.span, "the first step")
                    .help(format!(
                        "start each step with its own `- `:\n- {}: ...\n- {}: ...",
                        entries[0].key_str(),
                        second.key_str()
                    )),
            );
            return None;
        }
        let e = &entries[0];
        let key = e.key_str();
        let span = e.key.span;
        let kind = match key {
            "filter" => StepKind::Filter(self.expr(&e.value, span)),
            "map" => StepKind::Map(self.named_exprs(e, "map", "field name")?),
            "key_by" => {
                let fields = self.name_list(e, "field name")?;
                if fields.is_empty() {
                    self.error(
                        Diagnostic::error("`key_by` names no field")
                            .label(span, "empty")
                            .help("write `key_by: [user_id]`, or leave `key_by` out for a global window"),
                    );
                    return None;
                }
                StepKind::KeyBy(fields)
            }
            "window" => StepKind::Window(self.window(e)),
            "aggregate" => {
                StepKind::Aggregate(self.named_exprs(e, "aggregate", "aggregate name")?)
            }
            k if LATER_STEP_KINDS.contains(&k) => {
                self.error(
                    Diagnostic::error(format!("`{k}` steps are not supported yet"))
                        .label(span, "not supported by this version of streamc")
                        .help(format!("supported steps are {}", list_names(STEP_KINDS, 5))),
                );
                return None;
            }
            other => {
                let suggestion =
                    did_you_mean(other, STEP_KINDS.iter().chain(&LATER_STEP_KINDS).copied());
                let message = match suggestion {
                    Some(s) => format!("unknown step `{other}`; did you mean `{s}`?"),
                    None => format!("unknown step `{other}`"),
                };
                self.error(
                    Diagnostic::error(message)
                        .label(span, "not a step")
                        .help(format!("steps are {}", list_names(STEP_KINDS, 5))),
                );
                return None;
            }
        };
        Some(kind)
    }

    /// `map` and `aggregate`: a mapping of names to expressions.
    fn named_exprs(
        &mut self,
        e: &Entry,
        step: &str,
        what: &str,
    ) -> Option<Vec<(Spanned<String>, Option<crate::spec::expr::Expr>)>> {
        let NodeKind::Map(entries) = &e.value.kind else {
            self.expected(
                &e.value,
                &format!("a mapping of names to expressions for `{step}`"),
                e.key.span,
            );
            return None;
        };
        if entries.is_empty() {
            self.error(
                Diagnostic::error(format!("`{step}` is empty"))
                    .label(e.key.span, "no fields")
                    .help(format!("write `{step}: {{name: EXPR}}`")),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for entry in entries {
            let name = Spanned::new(entry.key_str().to_string(), entry.key.span);
            if !self.check_identifier(&name, what) {
                ok = false;
                continue;
            }
            let expr = self.expr(&entry.value, entry.key.span);
            out.push((name, expr));
        }
        ok.then_some(out)
    }

    fn window(&mut self, e: &Entry) -> Option<WindowDecl> {
        let mut k = self.keys(
            &e.value,
            "window",
            e.key.span,
            &[
                "tumbling",
                "offset",
                "sliding",
                "session",
                "allowed_lateness",
            ],
            false,
        )?;
        let mut kinds: Vec<&Entry> = ["tumbling", "sliding", "session"]
            .iter()
            .filter_map(|n| k.get(n))
            .collect();
        kinds.sort_by_key(|e| e.key.span.start);
        let offset = k.get("offset");
        let lateness = k.get("allowed_lateness");
        let has_unknown = k.has_unknown();
        self.finish(k);
        let allowed_lateness = match lateness {
            Some(l) => self.duration(l, "`allowed_lateness`", false),
            None => Some(0),
        };
        let kind = match kinds.as_slice() {
            [] if has_unknown => return None,
            [] => {
                self.error(
                    Diagnostic::error("window has no kind")
                        .label(e.key.span, "which window?")
                        .help("add one of `tumbling: 1m`, `sliding: {size: 10m, slide: 1m}` or `session: {gap: 30s}`"),
                );
                return None;
            }
            [first, second, ..] => {
                self.error(
                    Diagnostic::error("window has more than one kind")
                        .label(second.key.span, "second kind")
                        .label(first.key.span, "first kind")
                        .help("a window is exactly one of `tumbling`, `sliding` or `session`"),
                );
                return None;
            }
            [one] => match one.key_str() {
                "tumbling" => {
                    let size = self.duration(one, "the tumbling window size", false)?;
                    self.positive(size, one, "window size")?;
                    let offset = match offset {
                        Some(o) => {
                            let off = self.duration(o, "`offset`", true)?;
                            if off.unsigned_abs() >= size.unsigned_abs() {
                                self.error(
                                    Diagnostic::error("window offset must be smaller than the window size")
                                        .label(o.value.span, format!("not within (-{0}, {0})", format_duration(size)))
                                        .help("the offset shifts window starts: `start = ts - ((ts - offset) mod size)`"),
                                );
                                return None;
                            }
                            off.rem_euclid(size)
                        }
                        None => 0,
                    };
                    WindowKind::Tumbling { size, offset }
                }
                "sliding" => {
                    self.no_offset(offset)?;
                    let mut sk = self.keys(
                        &one.value,
                        "sliding window",
                        one.key.span,
                        &["size", "slide"],
                        false,
                    )?;
                    let size = self.require(
                        &mut sk,
                        "size",
                        Some("write `sliding: {size: 10m, slide: 1m}`"),
                    );
                    let slide = self.require(
                        &mut sk,
                        "slide",
                        Some("write `sliding: {size: 10m, slide: 1m}`"),
                    );
                    self.finish(sk);
                    let (size_e, slide_e) = (size?, slide?);
                    let size = self.duration(size_e, "the window size", false);
                    let slide = self.duration(slide_e, "the window slide", false);
                    let (size, slide) = (size?, slide?);
                    let size_ok = self.positive(size, size_e, "window size");
                    let slide_ok = self.positive(slide, slide_e, "window slide");
                    size_ok?;
                    slide_ok?;
                    if size % slide != 0 {
                        let lower = size / slide * slide;
                        let suggestion = if lower > 0 {
                            format!(
                                "`size: {}` or `size: {}`",
                                format_duration(lower),
                                format_duration(lower + slide)
                            )
                        } else {
                            format!("`size: {}`", format_duration(slide))
                        };
                        self.error(
                            Diagnostic::error(format!(
                                "sliding window size {} is not a multiple of its slide {}",
                                format_duration(size),
                                format_duration(slide)
                            ))
                            .label(size_e.value.span, "size")
                            .label(slide_e.value.span, "slide")
                            .help(format!(
                                "each event belongs to size/slide windows; use {suggestion}"
                            )),
                        );
                        return None;
                    }
                    WindowKind::Sliding { size, slide }
                }
                _ => {
                    self.no_offset(offset)?;
                    let mut sk =
                        self.keys(&one.value, "session window", one.key.span, &["gap"], false)?;
                    let gap = self.require(&mut sk, "gap", Some("write `session: {gap: 30s}`"));
                    self.finish(sk);
                    let gap_e = gap?;
                    let gap = self.duration(gap_e, "the session gap", false)?;
                    self.positive(gap, gap_e, "session gap")?;
                    WindowKind::Session { gap }
                }
            },
        };
        Some(WindowDecl {
            kind,
            allowed_lateness: allowed_lateness?,
        })
    }

    fn positive(&mut self, ms: i64, e: &Entry, what: &str) -> Option<()> {
        if ms > 0 {
            return Some(());
        }
        self.error(
            Diagnostic::error(format!("{what} must be positive"))
                .label(e.value.span, "zero")
                .help(format!("a {what} is a positive duration, such as `30s`")),
        );
        None
    }

    fn no_offset(&mut self, offset: Option<&Entry>) -> Option<()> {
        match offset {
            Some(o) => {
                self.error(
                    Diagnostic::error("`offset` applies to tumbling windows only")
                        .label(o.key.span, "not for this window kind"),
                );
                None
            }
            None => Some(()),
        }
    }
}
