//! The logical plan as a DAG, the fusion pass, and their readable rendering
//! (`streamc explain`).
//!
//! Fusion: every chain of stateless steps (parse, filter, map, key, window assignment,
//! accumulation) that starts at a source, or at the output of a window, becomes one
//! fused stage: straight-line code in one generated function, with no channel or dynamic
//! dispatch inside it. A flow that reads a stateless flow is inlined into its parent's
//! stage; a flow that reads a windowed flow starts a new stage, called when that window
//! fires.
//!
//! Architecture invariant: every flow appears in exactly one stage, after its input.

use crate::plan::{
    AggFn, Func, Input, Lit, Plan, RowStep, SinkKind, SourceKind, TExpr, TExprKind, UnOp,
    WindowKind,
};
use std::fmt::{self, Write};

/// Where a fused stage starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageInput {
    /// Parse the raw records of a source.
    Source(usize),
    /// The rows a windowed flow emits when it fires.
    WindowOutput(usize),
}

/// One flow's part of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedFlow {
    pub flow: usize,
    pub end: FlowEnd,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEnd {
    /// Stateless: emit rows to the flow's sinks, then run the flows that read it,
    /// inline.
    Emit { children: Vec<FusedFlow> },
    /// Key, assign windows, accumulate into the flow's window state.
    Accumulate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub input: StageInput,
    pub flows: Vec<FusedFlow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedPlan {
    /// Source stages first (in source order), then window-output stages in flow order.
    pub stages: Vec<Stage>,
}

/// The fusion pass.
pub fn fuse(plan: &Plan) -> FusedPlan {
    fn fused(plan: &Plan, flow: usize) -> FusedFlow {
        let f = &plan.flows[flow];
        let end = if f.window.is_some() {
            FlowEnd::Accumulate
        } else {
            FlowEnd::Emit {
                children: readers(plan, Input::Flow(flow))
                    .map(|c| fused(plan, c))
                    .collect(),
            }
        };
        FusedFlow { flow, end }
    }
    let mut stages = Vec::new();
    for s in 0..plan.sources.len() {
        stages.push(Stage {
            input: StageInput::Source(s),
            flows: readers(plan, Input::Source(s))
                .map(|c| fused(plan, c))
                .collect(),
        });
    }
    for (i, f) in plan.flows.iter().enumerate() {
        if f.window.is_some() && readers(plan, Input::Flow(i)).next().is_some() {
            stages.push(Stage {
                input: StageInput::WindowOutput(i),
                flows: readers(plan, Input::Flow(i))
                    .map(|c| fused(plan, c))
                    .collect(),
            });
        }
    }
    FusedPlan { stages }
}

/// The flows that read `input`, in plan order.
pub fn readers(plan: &Plan, input: Input) -> impl Iterator<Item = usize> + '_ {
    plan.flows
        .iter()
        .enumerate()
        .filter(move |(_, f)| f.input == input)
        .map(|(i, _)| i)
}

/// The source a flow's data comes from, following flow inputs.
pub fn root_source(plan: &Plan, flow: usize) -> usize {
    match plan.flows[flow].input {
        Input::Source(s) => s,
        Input::Flow(f) => root_source(plan, f),
    }
}

/// `streamc explain`: the logical plan, then the fused plan.
pub fn explain(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = write_logical(plan, &mut o);
    o.push('\n');
    let _ = write_fused(plan, &fuse(plan), &mut o);
    o
}

fn write_logical(plan: &Plan, o: &mut String) -> fmt::Result {
    writeln!(o, "Logical plan of `{}`", plan.name)?;
    for s in &plan.sources {
        let kind = match &s.kind {
            SourceKind::Kafka {
                topic,
                partitioned_by,
                ..
            } if !partitioned_by.is_empty() => {
                format!(
                    "kafka topic {topic}, partitioned by {}",
                    partitioned_by.join(", ")
                )
            }
            SourceKind::Kafka { topic, .. } => format!("kafka topic {topic}"),
            SourceKind::File { path } => format!("file {}", path.display()),
            SourceKind::Datagen(d) => format!(
                "datagen rate {}/s, {} keys{}",
                d.rate,
                d.keys,
                d.count.map(|c| format!(", {c} events")).unwrap_or_default()
            ),
        };
        let fields: Vec<String> = s
            .schema
            .iter()
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.name,
                    f.ty.name(),
                    if f.nullable { "?" } else { "" }
                )
            })
            .collect();
        writeln!(o, "  source {} ({kind})", s.name)?;
        writeln!(o, "    schema {{{}}}", fields.join(", "))?;
        writeln!(
            o,
            "    event time {}, watermark max_out_of_orderness {}{}{}",
            s.schema[s.event_time].name,
            dur(s.max_out_of_orderness),
            s.idle_timeout
                .map(|t| format!(", idle_timeout {}", dur(t)))
                .unwrap_or_default(),
            s.max_ahead
                .map(|t| format!(
                    ", max_ahead {} (events further ahead of the wall clock are dead letters)",
                    dur(t)
                ))
                .unwrap_or_default()
        )?;
    }
    for f in &plan.flows {
        let from = match f.input {
            Input::Source(s) => format!("source {}", plan.sources[s].name),
            Input::Flow(p) => format!("flow {}", plan.flows[p].name),
        };
        writeln!(o, "  flow {} <- {from}", f.name)?;
        for step in &f.steps {
            match step {
                RowStep::Filter(e) => writeln!(o, "    filter {}", ExprDisplay(e, &[]))?,
                RowStep::Map(m) => {
                    for (name, e) in m {
                        writeln!(o, "    map {name} = {}", ExprDisplay(e, &[]))?;
                    }
                }
            }
        }
        if !f.key_by.is_empty() {
            let keys: Vec<&str> = f.key_by.iter().map(|k| k.name.as_str()).collect();
            writeln!(o, "    key_by [{}]", keys.join(", "))?;
        }
        if let (Some(w), Some(a)) = (&f.window, &f.aggregate) {
            let state = if f.aligned {
                "state per partition, partition watermark"
            } else {
                "task state, task watermark"
            };
            writeln!(
                o,
                "    window {}, allowed_lateness {} ({state})",
                window_name(&w.kind),
                dur(w.allowed_lateness)
            )?;
            let accs: Vec<String> = a.accs.iter().map(acc_name).collect();
            for (name, e) in &a.outputs {
                writeln!(o, "    aggregate {name} = {}", ExprDisplay(e, &accs))?;
            }
        }
        let to: Vec<&str> = f.to.iter().map(|&s| plan.sinks[s].name.as_str()).collect();
        write!(o, "    -> [{}]", to.join(", "))?;
        if let Some(l) = f.late {
            write!(o, ", late -> {}", plan.sinks[l].name)?;
        }
        writeln!(o)?;
    }
    for s in &plan.sinks {
        writeln!(o, "  sink {} ({})", s.name, sink_kind(&s.kind))?;
    }
    match &plan.dead_letter {
        Some(k) => writeln!(o, "  dead letter ({})", sink_kind(k))?,
        None => {
            for s in &plan.sources {
                writeln!(
                    o,
                    "  dead letter of {} ({}, default)",
                    s.name,
                    sink_kind(&s.default_dead_letter)
                )?;
            }
        }
    }
    Ok(())
}

fn write_fused(plan: &Plan, fused: &FusedPlan, o: &mut String) -> fmt::Result {
    let n = fused.stages.len();
    writeln!(o, "Fused plan ({n} stage{})", if n == 1 { "" } else { "s" })?;
    for (i, st) in fused.stages.iter().enumerate() {
        match st.input {
            StageInput::Source(s) => writeln!(
                o,
                "  stage {i}: for each record of source {}: parse json -> validate",
                plan.sources[s].name
            )?,
            StageInput::WindowOutput(f) => writeln!(
                o,
                "  stage {i}: for each result of window {}",
                plan.flows[f].name
            )?,
        }
        for ff in &st.flows {
            write_fused_flow(plan, ff, 2, o)?;
        }
    }
    Ok(())
}

fn write_fused_flow(plan: &Plan, ff: &FusedFlow, depth: usize, o: &mut String) -> fmt::Result {
    let f = &plan.flows[ff.flow];
    let mut ops: Vec<String> = Vec::new();
    for step in &f.steps {
        match step {
            RowStep::Filter(_) => ops.push("filter".into()),
            RowStep::Map(m) => ops.push(format!("map({})", m.len())),
        }
    }
    let pad = "  ".repeat(depth);
    match &ff.end {
        FlowEnd::Accumulate => {
            if !f.key_by.is_empty() {
                let keys: Vec<&str> = f.key_by.iter().map(|k| k.name.as_str()).collect();
                ops.push(format!("key [{}]", keys.join(", ")));
            }
            if let (Some(w), Some(a)) = (&f.window, &f.aggregate) {
                ops.push(format!("assign {}", window_name(&w.kind)));
                let accs: Vec<String> = a.accs.iter().map(acc_name).collect();
                ops.push(format!("accumulate [{}]", accs.join(", ")));
            }
            writeln!(o, "{pad}flow {}: {}", f.name, ops.join(" -> "))?;
        }
        FlowEnd::Emit { children } => {
            let to: Vec<&str> = f.to.iter().map(|&s| plan.sinks[s].name.as_str()).collect();
            ops.push(format!("emit [{}]", to.join(", ")));
            writeln!(o, "{pad}flow {}: {}", f.name, ops.join(" -> "))?;
            for c in children {
                write_fused_flow(plan, c, depth + 1, o)?;
            }
        }
    }
    Ok(())
}

/// A window as the spec says it: `tumbling 1m`, `sliding 5m every 1m`, `session gap 30s`.
pub fn window_name(k: &WindowKind) -> String {
    match *k {
        WindowKind::Tumbling { size, offset: 0 } => format!("tumbling {}", dur(size)),
        WindowKind::Tumbling { size, offset } => {
            format!("tumbling {} offset {}", dur(size), dur(offset))
        }
        WindowKind::Sliding { size, slide } => {
            format!("sliding {} every {}", dur(size), dur(slide))
        }
        WindowKind::Session { gap } => format!("session gap {}", dur(gap)),
    }
}

fn sink_kind(k: &SinkKind) -> String {
    match k {
        SinkKind::Kafka { topic, .. } => format!("kafka topic {topic}"),
        SinkKind::File { path } => format!("file {}", path.display()),
        SinkKind::Stdout => "stdout".into(),
        SinkKind::Redis(r) => {
            let mut s = format!("redis key {}", r.key);
            if let Some(c) = &r.channel {
                s.push_str(&format!(", channel {c}"));
            }
            if let Some(k) = r.keep {
                s.push_str(&format!(", keep {k}"));
            }
            if let Some(t) = r.ttl {
                s.push_str(&format!(", ttl {}", dur(t)));
            }
            s
        }
    }
}

/// A duration in the spec's own notation.
pub fn dur(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if ms == 0 {
        return "0s".into();
    }
    for (n, u) in UNITS {
        if ms % n == 0 {
            return format!("{}{u}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn acc_name(a: &crate::plan::AccPlan) -> String {
    let f = match a.func {
        AggFn::CountAll => return "count()".into(),
        AggFn::Count => "count",
        AggFn::CountIf => "count_if",
        AggFn::Sum => "sum",
        AggFn::Min => "min",
        AggFn::Max => "max",
        AggFn::Avg => "avg",
        AggFn::First => "first",
        AggFn::Last => "last",
        AggFn::CountDistinct => "count_distinct",
        AggFn::ApproxCountDistinct => "approx_count_distinct",
        AggFn::Quantile => "quantile",
    };
    let arg = a
        .arg
        .as_ref()
        .map(|e| ExprDisplay(e, &[]).to_string())
        .unwrap_or_default();
    match a.q {
        Some(q) => format!("{f}({arg}, {q})"),
        None => format!("{f}({arg})"),
    }
}

/// Renders a checked expression back in SQL (casts shown as `CAST(x AS t)`).
pub struct ExprDisplay<'a>(pub &'a TExpr, pub &'a [String]);

impl fmt::Display for ExprDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accs = self.1;
        let sub = |e: &TExpr| ExprDisplay(e, accs).to_string();
        match &self.0.kind {
            TExprKind::Lit(l) => match l {
                Lit::Null => write!(f, "NULL"),
                Lit::Bool(b) => write!(f, "{}", if *b { "TRUE" } else { "FALSE" }),
                Lit::Int(i) => write!(f, "{i}"),
                Lit::Float(x) => write!(f, "{x:?}"),
                Lit::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            },
            TExprKind::Field(n) => write!(f, "{n}"),
            TExprKind::Acc(i) => match accs.get(*i) {
                Some(a) => write!(f, "{a}"),
                None => write!(f, "acc#{i}"),
            },
            TExprKind::Binary { op, lhs, rhs } => {
                let op = crate::spec::expr::binop_symbol(*op);
                write!(f, "({} {op} {})", sub(lhs), sub(rhs))
            }
            TExprKind::Unary {
                op: UnOp::Not,
                expr,
            } => write!(f, "NOT {}", sub(expr)),
            TExprKind::Unary {
                op: UnOp::Neg,
                expr,
            } => write!(f, "-{}", sub(expr)),
            TExprKind::Cast { expr, to } => write!(f, "CAST({} AS {})", sub(expr), to.name()),
            TExprKind::IsNull { expr, negated } => write!(
                f,
                "{} IS {}NULL",
                sub(expr),
                if *negated { "NOT " } else { "" }
            ),
            TExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let items: Vec<String> = list.iter().map(sub).collect();
                write!(
                    f,
                    "{} {}IN ({})",
                    sub(expr),
                    if *negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
            TExprKind::Case {
                branches,
                otherwise,
            } => {
                write!(f, "CASE")?;
                for (c, v) in branches {
                    write!(f, " WHEN {} THEN {}", sub(c), sub(v))?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {}", sub(e))?;
                }
                write!(f, " END")
            }
            TExprKind::Call { func, args } => {
                let name = match func {
                    Func::Lower => "lower",
                    Func::Upper => "upper",
                    Func::Length => "length",
                    Func::Contains => "contains",
                    Func::StartsWith => "starts_with",
                    Func::EndsWith => "ends_with",
                    Func::Abs => "abs",
                    Func::Round => "round",
                    Func::Floor => "floor",
                    Func::Ceil => "ceil",
                    Func::Coalesce => "coalesce",
                };
                let a: Vec<String> = args.iter().map(sub).collect();
                write!(f, "{name}({})", a.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dur;

    #[test]
    fn durations_render_in_spec_notation() {
        assert_eq!(dur(0), "0s");
        assert_eq!(dur(250), "250ms");
        assert_eq!(dur(10_000), "10s");
        assert_eq!(dur(60_000), "1m");
        assert_eq!(dur(90_000), "90s");
        assert_eq!(dur(86_400_000), "1d");
    }
}
