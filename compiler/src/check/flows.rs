//! Flows: the DAG (`from`, cycles, topological order), step order, typed steps, output
//! rows, `to` and `late`.

use std::collections::HashMap;

use super::Checker;
use super::sinks::SinkOut;
use super::sources::SourceOut;
use super::typeck::{AggCtx, Row, Typer};
use crate::diag::{Diagnostic, Span, did_you_mean, list_names};
use crate::plan::{
    AggregatePlan, Field, FlowPlan, Input, RowStep, SourceKind, TExpr, Type, WindowPlan,
};
use crate::spec::ast::{FlowDecl, Spanned, Spec, StepKind};
use crate::spec::expr::Expr;

/// Columns every window result has besides keys and aggregates.
const WINDOW_COLUMNS: [(&str, Type); 4] = [
    ("window_start", Type::Timestamp),
    ("window_end", Type::Timestamp),
    ("revision", Type::U32),
    ("retracted", Type::Bool),
];

/// A checked flow, in plan order. `plan` is None when it (or what it reads) has errors;
/// the rest is what could be worked out, for checks that depend on it.
pub(super) struct FlowOut {
    pub name: String,
    /// Plan indexes (`Input::Flow` indexes into the plan's flows).
    pub input: Option<Input>,
    pub steps: Vec<RowStep>,
    pub key_names: Vec<String>,
    pub window: Option<WindowPlan>,
    pub output_row: RowInfo,
    pub to: Vec<usize>,
    pub late: Option<usize>,
    pub plan: Option<FlowPlan>,
}

/// A row as far as it is known.
#[derive(Clone, Debug, Default)]
pub(super) struct RowInfo {
    pub fields: Vec<Field>,
    /// False when the row is not fully known (an earlier error).
    pub complete: bool,
    /// Names that exist but whose type is unknown (an earlier error).
    pub poisoned: Vec<String>,
}

impl RowInfo {
    fn view(&self) -> Row<'_> {
        Row {
            fields: &self.fields,
            complete: self.complete,
            poisoned: &self.poisoned,
        }
    }

    /// Whether a missing `name` is worth reporting.
    pub fn reports_missing(&self, name: &str) -> bool {
        self.complete && !self.poisoned.iter().any(|p| p == name)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Parent {
    Source(usize),
    /// Declaration index.
    Flow(usize),
    Unknown,
}

/// Where a flow is in its step sequence.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Rows,
    Keyed,
    Windowed,
    Aggregated,
}

impl Checker<'_> {
    pub(super) fn flows(
        &mut self,
        spec: &Spec,
        sources: &[SourceOut],
        sinks: &[SinkOut],
    ) -> Vec<FlowOut> {
        let flows = &spec.flows;
        let source_index: HashMap<&str, usize> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let flow_index: HashMap<&str, usize> = flows
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.value.as_str(), i))
            .collect();

        for f in flows {
            if let Some(&si) = source_index.get(f.name.value.as_str()) {
                self.error(
                    Diagnostic::error(format!(
                        "flow `{}` has the same name as a source",
                        f.name.value
                    ))
                    .label(f.name.span, "this flow")
                    .label(spec.sources[si].name.span, "the source")
                    .help("`from` names a source or a flow, so the names must differ; rename one"),
                );
            }
        }

        // Resolve `from`.
        let parents: Vec<Parent> = flows
            .iter()
            .map(|f| {
                let Some(from) = &f.from else {
                    return Parent::Unknown;
                };
                // A name clash of a flow and a source is reported above; read the source.
                if let Some(&i) = source_index.get(from.value.as_str()) {
                    return Parent::Source(i);
                }
                if let Some(&i) = flow_index.get(from.value.as_str()) {
                    return Parent::Flow(i);
                }
                let names: Vec<&str> = sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .chain(
                        flows
                            .iter()
                            .map(|g| g.name.value.as_str())
                            .filter(|n| *n != f.name.value),
                    )
                    .collect();
                let help = match did_you_mean(&from.value, names.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None if names.is_empty() => "declare it under `sources:`".to_string(),
                    None => format!(
                        "sources and flows are {}",
                        list_names(names.iter().copied(), 12)
                    ),
                };
                let is_sink = spec.sinks.iter().any(|s| s.name.value == from.value);
                let help = if is_sink {
                    format!(
                        "`{}` is a sink: flows write to sinks with `to`, and read sources or flows",
                        from.value
                    )
                } else {
                    help
                };
                self.error(
                    Diagnostic::error(format!("unknown source or flow `{}`", from.value))
                        .label(from.span, "not declared")
                        .help(help),
                );
                Parent::Unknown
            })
            .collect();

        let in_cycle = self.cycles(flows, &parents);

        // Topological order: repeatedly place the first declared flow whose input is
        // placed. Flows that cannot be placed (cycles, unknown inputs) come last.
        let n = flows.len();
        let mut position: Vec<Option<usize>> = vec![None; n];
        let mut order: Vec<usize> = Vec::with_capacity(n);
        loop {
            let next = (0..n).find(|&j| {
                position[j].is_none()
                    && !in_cycle[j]
                    && match parents[j] {
                        Parent::Source(_) => true,
                        Parent::Flow(k) => position[k].is_some(),
                        Parent::Unknown => false,
                    }
            });
            let Some(j) = next else { break };
            position[j] = Some(order.len());
            order.push(j);
        }
        let placed = order.len();
        order.extend((0..n).filter(|j| position[*j].is_none()));

        let mut outs: Vec<FlowOut> = Vec::with_capacity(n);
        let mut out_of_decl: Vec<Option<usize>> = vec![None; n];
        for (pos, &j) in order.iter().enumerate() {
            let f = &flows[j];
            let (input, row) = match parents[j] {
                Parent::Source(i) if pos < placed => (
                    Some(Input::Source(i)),
                    RowInfo {
                        fields: sources[i].fields.clone(),
                        complete: sources[i].complete,
                        poisoned: sources[i].poisoned.clone(),
                    },
                ),
                Parent::Flow(k) if pos < placed => {
                    let p = out_of_decl[k].expect("parents are placed first");
                    (Some(Input::Flow(p)), outs[p].output_row.clone())
                }
                _ => (None, RowInfo::default()),
            };
            let has_reader = parents.contains(&Parent::Flow(j));
            let partitioned_by: &[String] = match input {
                Some(Input::Source(s)) => match sources[s].plan.as_ref().map(|p| &p.kind) {
                    Some(SourceKind::Kafka { partitioned_by, .. }) => partitioned_by,
                    _ => &[],
                },
                _ => &[],
            };
            let out = self.flow(spec, f, input, row, has_reader, sinks, partitioned_by);
            out_of_decl[j] = Some(outs.len());
            outs.push(out);
        }
        outs
    }

    /// Reports each cycle of flows once; returns which flows are in one.
    fn cycles(&mut self, flows: &[FlowDecl], parents: &[Parent]) -> Vec<bool> {
        let n = flows.len();
        let mut state = vec![0u8; n]; // 0 new, 1 on the current path, 2 done
        let mut in_cycle = vec![false; n];
        for start in 0..n {
            let mut path = Vec::new();
            let mut cur = start;
            let mut closed = None;
            loop {
                if state[cur] != 0 {
                    if state[cur] == 1 {
                        closed = Some(cur);
                    }
                    break;
                }
                state[cur] = 1;
                path.push(cur);
                match parents[cur] {
                    Parent::Flow(k) => cur = k,
                    _ => break,
                }
            }
            if let Some(cur) = closed
                && let Some(at) = path.iter().position(|&p| p == cur)
            {
                let cycle = &path[at..];
                for &c in cycle {
                    in_cycle[c] = true;
                }
                // Report at the first declared flow of the cycle.
                let first = *cycle.iter().min().expect("non-empty");
                let rot = cycle.iter().position(|&c| c == first).expect("member");
                let members: Vec<usize> =
                    cycle[rot..].iter().chain(&cycle[..rot]).copied().collect();
                let from_span = |i: usize| {
                    flows[i]
                        .from
                        .as_ref()
                        .map_or(flows[i].name.span, |f| f.span)
                };
                let name = |i: usize| flows[i].name.value.as_str();
                let mut d = if members.len() == 1 {
                    Diagnostic::error(format!("flow `{}` reads itself", name(first)))
                        .label(from_span(first), "its own name")
                } else {
                    let chain: Vec<String> = members
                        .iter()
                        .map(|&m| {
                            format!(
                                "`{}` reads `{}`",
                                name(m),
                                name(match parents[m] {
                                    Parent::Flow(k) => k,
                                    _ => m,
                                })
                            )
                        })
                        .collect();
                    Diagnostic::error(format!(
                        "flows read each other in a cycle: {}",
                        chain.join(", ")
                    ))
                    .label(from_span(first), "this `from` closes a cycle")
                };
                for &m in members.iter().skip(1) {
                    d = d.label(from_span(m), format!("`{}` reads this", name(m)));
                }
                self.error(
                    d.help("flows form a DAG: each flow reads a source or a flow upstream of it"),
                );
            }
            for p in path {
                state[p] = 2;
            }
        }
        in_cycle
    }

    #[allow(clippy::too_many_arguments)] // one flow's context, all read once
    fn flow(
        &mut self,
        spec: &Spec,
        f: &FlowDecl,
        input: Option<Input>,
        input_row: RowInfo,
        has_reader: bool,
        sinks: &[SinkOut],
        partitioned_by: &[String],
    ) -> FlowOut {
        let errors_before = self.rep.error_count();
        let order_ok = f.steps.iter().all(|s| s.kind.is_some());
        let mut row = input_row.clone();
        let mut phase = Phase::Rows;
        let mut steps: Vec<RowStep> = Vec::new();
        let mut key_by: Option<(Vec<Field>, Span)> = None;
        let mut window: Option<(Option<WindowPlan>, Span)> = None;
        let mut aggregate: Option<AggregatePlan> = None;

        for step in &f.steps {
            let Some(kind) = &step.kind else {
                row.complete = false;
                continue;
            };
            let keyword = kind.keyword();
            let order_error = |phase: Phase| -> Option<(String, String, String)> {
                let (msg, label, help) = match (kind, phase) {
                    (_, Phase::Aggregated) if !matches!(kind, StepKind::Aggregate(_)) => (
                        format!("no step may follow `aggregate`, found `{keyword}`"),
                        "after the aggregate".to_string(),
                        format!(
                            "read this flow from another flow to {} its results: `from: {}`",
                            match kind {
                                StepKind::Filter(_) => "filter",
                                StepKind::Map(_) => "transform",
                                _ => "process",
                            },
                            f.name.value
                        ),
                    ),
                    (StepKind::Aggregate(_), Phase::Aggregated) => (
                        "only one `aggregate` per flow".to_string(),
                        "a second aggregate".to_string(),
                        "put every aggregate in one `aggregate` mapping".to_string(),
                    ),
                    (StepKind::Filter(_) | StepKind::Map(_), Phase::Keyed | Phase::Windowed) => (
                        format!(
                            "`{keyword}` must come before `{}`",
                            if phase == Phase::Keyed { "key_by" } else { "window" }
                        ),
                        "too late in the flow".to_string(),
                        "move this step up: row steps come first, then `key_by`, `window` and `aggregate`".to_string(),
                    ),
                    (StepKind::KeyBy(_), Phase::Keyed) => (
                        "only one `key_by` per flow".to_string(),
                        "a second key_by".to_string(),
                        "list every key field in one: `key_by: [a, b]`".to_string(),
                    ),
                    (StepKind::KeyBy(_), Phase::Windowed) => (
                        "`key_by` must come before `window`".to_string(),
                        "after the window".to_string(),
                        "move `key_by` above `window`".to_string(),
                    ),
                    (StepKind::Window(_), Phase::Windowed) => (
                        "only one `window` per flow".to_string(),
                        "a second window".to_string(),
                        "to window results again, read this flow from another flow".to_string(),
                    ),
                    (StepKind::Aggregate(_), Phase::Rows | Phase::Keyed) => (
                        "`aggregate` needs a `window` before it".to_string(),
                        "no window before this".to_string(),
                        "aggregates are computed per window: add `- window: {tumbling: 1m}` before `aggregate`"
                            .to_string(),
                    ),
                    _ => return None,
                };
                Some((msg, label, help))
            };
            let misplaced = if order_ok {
                match order_error(phase) {
                    Some((msg, label, help)) => {
                        self.error(Diagnostic::error(msg).label(step.span, label).help(help));
                        true
                    }
                    None => false,
                }
            } else {
                false
            };
            match kind {
                StepKind::Filter(e) => {
                    let Some(e) = e else { continue };
                    let t = Typer::row(self.rep, row.view(), &[]).expr(e);
                    if let Some(t) = t {
                        if t.ty != Some(Type::Bool) {
                            self.error(
                                Diagnostic::error(format!(
                                    "a filter must be a condition (bool), found `{}`",
                                    t.ty.map_or("NULL", Type::name)
                                ))
                                .label(e.span, "not a condition")
                                .help("for example `status >= 500` or `url <> ''`"),
                            );
                        } else if !misplaced {
                            steps.push(RowStep::Filter(t));
                        }
                    }
                }
                StepKind::Map(items) => {
                    let pending: Vec<String> = items.iter().map(|(n, _)| n.value.clone()).collect();
                    let mut typed: Vec<(String, TExpr)> = Vec::new();
                    let mut next = row.clone();
                    for (name, e) in items {
                        let t = e
                            .as_ref()
                            .and_then(|e| Typer::row(self.rep, row.view(), &pending).expr(e));
                        let field_ty = match &t {
                            Some(t) => match t.ty {
                                Some(ty) => Some((ty, t.nullable)),
                                None => {
                                    self.error(
                                        Diagnostic::error(format!("field `{}` would always be NULL and has no type", name.value))
                                            .label(e.as_ref().map_or(name.span, |e| e.span), "NULL")
                                            .help("give the NULL a type, e.g. `CASE WHEN FALSE THEN 0 END` for a null i64"),
                                    );
                                    None
                                }
                            },
                            None => None,
                        };
                        match field_ty {
                            Some((ty, nullable)) => {
                                let field = Field {
                                    name: name.value.clone(),
                                    ty,
                                    nullable,
                                };
                                match next.fields.iter_mut().find(|x| x.name == name.value) {
                                    Some(slot) => *slot = field,
                                    None => next.fields.push(field),
                                }
                                typed.push((name.value.clone(), t.expect("typed")));
                            }
                            None => {
                                // Its type is unknown from here on: do not report uses of it.
                                next.fields.retain(|x| x.name != name.value);
                                next.poisoned.push(name.value.clone());
                            }
                        }
                    }
                    if misplaced {
                        row.complete = false;
                    } else {
                        row = next;
                        steps.push(RowStep::Map(typed));
                    }
                }
                StepKind::KeyBy(names) => {
                    let fields = self.key_fields(names, &row);
                    if !misplaced {
                        key_by = Some((fields, step.span));
                        phase = Phase::Keyed;
                    }
                }
                StepKind::Window(w) => {
                    if !misplaced {
                        window = Some((
                            w.map(|w| WindowPlan {
                                kind: w.kind,
                                allowed_lateness: w.allowed_lateness,
                            }),
                            step.span,
                        ));
                        phase = Phase::Windowed;
                    }
                }
                StepKind::Aggregate(items) => {
                    let keys: Vec<Field> =
                        key_by.as_ref().map(|(k, _)| k.clone()).unwrap_or_default();
                    let key_spans: Vec<Span> = match &key_by {
                        Some(_) => f
                            .steps
                            .iter()
                            .filter_map(|s| match &s.kind {
                                Some(StepKind::KeyBy(n)) => {
                                    Some(n.iter().map(|x| x.span).collect::<Vec<_>>())
                                }
                                _ => None,
                            })
                            .next()
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let (plan, output) = self.aggregate(items, &row, &keys, &key_spans);
                    if misplaced {
                        row.complete = false;
                    } else {
                        aggregate = Some(plan);
                        row = output;
                        phase = Phase::Aggregated;
                    }
                }
            }
        }
        if order_ok {
            match phase {
                Phase::Keyed => {
                    let span = key_by.as_ref().map_or(f.name.span, |(_, s)| *s);
                    self.error(
                        Diagnostic::error("`key_by` needs a `window`")
                            .label(span, "keyed, but never windowed")
                            .help("key_by partitions the state of a window: add `- window: ...` and `- aggregate: ...` after it, or remove it"),
                    );
                }
                Phase::Windowed => {
                    let span = window.as_ref().map_or(f.name.span, |(_, s)| *s);
                    self.error(
                        Diagnostic::error("`window` must be followed by `aggregate`")
                            .label(span, "this window computes nothing")
                            .help("add an aggregate step after it, such as `- aggregate: {events: count()}`"),
                    );
                }
                Phase::Rows | Phase::Aggregated => {}
            }
        }

        let windowed = window.is_some();
        let to = self.sink_refs(spec, &f.to, sinks);
        let mut seen: Vec<&str> = Vec::new();
        for t in &f.to {
            if seen.contains(&t.value.as_str()) {
                self.error(
                    Diagnostic::error(format!("sink `{}` is listed twice in `to`", t.value))
                        .label(t.span, "again"),
                );
            }
            seen.push(&t.value);
        }
        // With `serve:`, a windowed flow's results go to the dashboard.
        let served = windowed && spec.serve.is_some();
        if f.to.is_empty() && !has_reader && !f.broken && !served {
            self.error(
                Diagnostic::error(format!("the results of flow `{}` go nowhere", f.name.value))
                    .label(f.name.span, "no `to` and no flow reads it")
                    .help("add `to: [some_sink]`, or read this flow from another flow"),
            );
        }
        let late = f.late.as_ref().and_then(|l| {
            if order_ok && !windowed {
                self.error(
                    Diagnostic::error("`late` applies to windowed flows only")
                        .label(l.span, format!("flow `{}` has no window", f.name.value))
                        .help("only a window makes an event too late; remove `late`"),
                );
            }
            self.sink_refs(spec, std::slice::from_ref(l), sinks)
                .first()
                .copied()
        });

        let key_span = key_by.as_ref().map(|(_, s)| *s);
        let key_fields: Vec<Field> = key_by.map(|(k, _)| k).unwrap_or_default();
        let window_plan = window.and_then(|(w, _)| w);
        // Partition-aligned: keyed by every field the source is partitioned by, none of
        // them changed by a step before the key.
        let redefined = |name: &String| {
            steps
                .iter()
                .any(|s| matches!(s, RowStep::Map(m) if m.iter().any(|(n, _)| n == name)))
        };
        let aligned = !partitioned_by.is_empty()
            && !key_fields.is_empty()
            && partitioned_by
                .iter()
                .all(|p| key_fields.iter().any(|k| &k.name == p) && !redefined(p));
        if windowed && !partitioned_by.is_empty() && !aligned && order_ok {
            let why = match partitioned_by.iter().find(|p| redefined(p)) {
                Some(p) => format!("a `map` step changes `{p}` before the key"),
                None => format!(
                    "its key does not include {}",
                    partitioned_by
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.rep.push(
                Diagnostic::warning(format!(
                    "flow `{}` is not partition-aligned: {why}",
                    f.name.value
                ))
                .label(key_span.unwrap_or(f.name.span), "not aligned with the source's partitions")
                .help("it follows the task watermark and needs every partition of its source in one instance (it refuses to run on a partial assignment); key by the `partitioned_by` fields to scale it out"),
            );
        }
        let ok = self.rep.error_count() == errors_before
            && row.complete
            && row.poisoned.is_empty()
            && input_row.poisoned.is_empty()
            && input.is_some();
        let plan = match (ok, input) {
            (true, Some(input)) => Some(FlowPlan {
                name: f.name.value.clone(),
                input,
                input_schema: input_row.fields.clone(),
                steps: steps.clone(),
                key_by: key_fields.clone(),
                window: window_plan,
                aggregate,
                output: row.fields.clone(),
                to: to.clone(),
                late,
                aligned,
            }),
            _ => None,
        };
        FlowOut {
            name: f.name.value.clone(),
            input,
            steps,
            key_names: key_fields.iter().map(|k| k.name.clone()).collect(),
            window: window_plan,
            output_row: row,
            to,
            late,
            plan,
        }
    }

    fn key_fields(&mut self, names: &[Spanned<String>], row: &RowInfo) -> Vec<Field> {
        let mut out: Vec<Field> = Vec::new();
        for n in names {
            let Some(field) = row.fields.iter().find(|f| f.name == n.value) else {
                if row.reports_missing(&n.value) {
                    let names = row.fields.iter().map(|f| f.name.as_str());
                    let help = match did_you_mean(&n.value, names.clone()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("the row has {}", list_names(names, 12)),
                    };
                    self.error(
                        Diagnostic::error(format!("unknown key field `{}`", n.value))
                            .label(n.span, "not a field of the row")
                            .help(help),
                    );
                }
                continue;
            };
            if out.iter().any(|f| f.name == n.value) {
                self.error(
                    Diagnostic::error(format!("key field `{}` is listed twice", n.value))
                        .label(n.span, "again"),
                );
                continue;
            }
            if WINDOW_COLUMNS.iter().any(|(c, _)| *c == n.value) {
                // A window result carries its key fields and these columns side by side:
                // the row (and a Kafka message key) would have the name twice.
                self.error(
                    Diagnostic::error(format!("duplicate output name `{}`", n.value))
                        .label(
                            n.span,
                            "a key field named like a column of every window result",
                        )
                        .help(format!(
                            "window results always have `window_start`, `window_end`, `revision` \
                             and `retracted`; rename the field first, e.g. \
                             `- map: {{ {0}_in: {0} }}`, and key by the new name",
                            n.value
                        )),
                );
                continue;
            }
            if field.ty.is_float() {
                self.error(
                    Diagnostic::error(format!(
                        "cannot key by `{}`: it is a float (`{}`)",
                        n.value,
                        field.ty.name()
                    ))
                    .label(n.span, "a float key")
                    .help(
                        "floats make poor keys (NaN, -0.0); map it to an integer or a string first",
                    ),
                );
                continue;
            }
            out.push(field.clone());
        }
        out
    }

    /// Types an `aggregate` block; returns its plan and the window result row.
    fn aggregate(
        &mut self,
        items: &[(Spanned<String>, Option<Expr>)],
        row: &RowInfo,
        keys: &[Field],
        key_spans: &[Span],
    ) -> (AggregatePlan, RowInfo) {
        let mut ctx = AggCtx::new(keys.iter().map(|k| k.name.clone()).collect());
        let mut outputs: Vec<(String, TExpr)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for (name, e) in items {
            if let Some(k) = keys.iter().position(|k| k.name == name.value) {
                let mut d = Diagnostic::error(format!("duplicate output name `{}`", name.value))
                    .label(name.span, "an aggregate named like a key field");
                if let Some(s) = key_spans.get(k) {
                    d = d.label(*s, "the key field");
                }
                self.error(d.help(
                    "key fields are output columns of every window result; rename the aggregate",
                ));
            } else if WINDOW_COLUMNS.iter().any(|(c, _)| *c == name.value) {
                self.error(
                    Diagnostic::error(format!("duplicate output name `{}`", name.value))
                        .label(name.span, "a column of every window result")
                        .help("window results always have `window_start`, `window_end`, `revision` and `retracted`; rename the aggregate"),
                );
            }
            let Some(e) = e else {
                failed.push(name.value.clone());
                continue;
            };
            let t = Typer::aggregate(self.rep, row.view(), &mut ctx).expr(e);
            match t {
                Some(t) if t.ty.is_some() => outputs.push((name.value.clone(), t)),
                Some(_) => {
                    self.error(
                        Diagnostic::error(format!(
                            "aggregate `{}` is always NULL and has no type",
                            name.value
                        ))
                        .label(e.span, "NULL"),
                    );
                    failed.push(name.value.clone());
                }
                None => failed.push(name.value.clone()),
            }
        }
        let mut output: Vec<Field> = keys.to_vec();
        output.extend(WINDOW_COLUMNS[..2].iter().map(|(n, t)| Field {
            name: n.to_string(),
            ty: *t,
            nullable: false,
        }));
        output.extend(outputs.iter().map(|(n, t)| Field {
            name: n.clone(),
            ty: t.ty.expect("typed outputs have a type"),
            nullable: t.nullable,
        }));
        output.extend(WINDOW_COLUMNS[2..].iter().map(|(n, t)| Field {
            name: n.to_string(),
            ty: *t,
            nullable: false,
        }));
        (
            AggregatePlan {
                accs: ctx.accs,
                outputs,
            },
            RowInfo {
                fields: output,
                complete: row.complete,
                poisoned: failed,
            },
        )
    }

    /// Sink indexes of `names`; unknown names are reported.
    fn sink_refs(
        &mut self,
        spec: &Spec,
        names: &[Spanned<String>],
        sinks: &[SinkOut],
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for n in names {
            if let Some(i) = sinks.iter().position(|s| s.name == n.value) {
                out.push(i);
                continue;
            }
            let candidates = sinks.iter().map(|s| s.name.as_str());
            let help = if spec.flows.iter().any(|f| f.name.value == n.value) {
                format!(
                    "`{}` is a flow: to feed it, write `from: <this flow>` in `{}`",
                    n.value, n.value
                )
            } else if spec.sources.iter().any(|s| s.name.value == n.value) {
                format!("`{}` is a source, not a sink", n.value)
            } else if let Some(m) = did_you_mean(&n.value, candidates.clone()) {
                format!("did you mean `{m}`?")
            } else if sinks.is_empty() {
                "declare it under `sinks:`".to_string()
            } else {
                format!(
                    "sinks are {}; or declare it under `sinks:`",
                    list_names(candidates, 12)
                )
            };
            self.error(
                Diagnostic::error(format!("unknown sink `{}`", n.value))
                    .label(n.span, "not declared under `sinks`")
                    .help(help),
            );
        }
        out
    }
}
