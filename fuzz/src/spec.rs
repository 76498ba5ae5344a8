//! The spec front end as a fuzz target: YAML and expressions through `streamc check`
//! (the same `check_source` the CLI runs), then, for an accepted spec, fusion, explain
//! and code generation. The oracle: no panic; every error is located inside the text
//! (on a character boundary) and renders; a checked plan always generates code
//! (code generation never reports a user error) and that code parses as Rust.

use std::path::Path;

use streamc::check::check_source;
use streamc::diag::render;

/// Values that tend to find edges in a spec: numbers at limits, durations, names,
/// YAML forms (anchors, tags, flow collections, block scalars), expression fragments.
pub const DICT: &[&str] = &[
    "0",
    "-1",
    "1",
    "99999999999999999999",
    "1e400",
    "0.0",
    "NaN",
    "0s",
    "1ms",
    "-5s",
    "250ms",
    "9999999999d",
    "1x",
    "1h",
    "''",
    "\"\"",
    "null",
    "~",
    "[]",
    "{}",
    "true",
    "yes",
    "&a x",
    "*a",
    "!!binary AA==",
    "!!str",
    "|",
    ">-",
    "? k",
    "window_start",
    "window_end",
    "revision",
    "retracted",
    "count()",
    "count(*)",
    "sum(x)",
    "quantile(v, 2)",
    "quantile(v, 0.5)",
    "approx_count_distinct(url)",
    "first(url)",
    "a + b * c",
    "(((((",
    ")))",
    "NOT NOT NOT x",
    "x IN ()",
    "x IN (1, 'a')",
    "CASE WHEN x THEN 1 END",
    "CASE END",
    "'unterminated",
    "lower(1)",
    "coalesce()",
    "1 / 0",
    "x = NULL",
    "x IS NOT NULL",
    "-9223372036854775808",
    "9223372036854775807",
    "u64",
    "i32",
    "f32?",
    "string?",
    "timestamp",
    "bool",
    "map",
    "filter",
    "key_by",
    "window",
    "aggregate",
    "tumbling",
    "sliding",
    "session",
    "gap",
    "size",
    "slide",
    "allowed_lateness",
    "offset",
    "max_out_of_orderness",
    "idle_timeout",
    "max_ahead",
    "kafka",
    "file",
    "datagen",
    "redis",
    "stdout",
    "serve",
    "late",
    "to",
    "from",
    "partitioned_by",
    "dead_letter",
    "checkpoint",
    "state",
    "version",
    "name",
];

/// YAML lines to insert.
pub const LINES: &[&str] = &[
    "x: 1",
    "- filter: \"a > 1\"",
    "- map: {y: \"x + 1\"}",
    "- key_by: [x, x]",
    "- window: {tumbling: 1s}",
    "- aggregate: {n: count()}",
    "watermark: {max_out_of_orderness: 1s, max_ahead: 1h}",
    "from: nowhere",
    "to: [a, a]",
    "<<: *a",
    "a: &a {b: 1}",
    "--- ",
    "...",
    "%YAML 1.2",
    "\tx: 1",
    "k: |",
    "  multi",
    "? complex",
    ": value",
    "\"quoted key\": 1",
    "sessions: {from: clicks, steps: [{window: {session: {gap: 0s}}}]}",
];

pub struct Outcome {
    /// The kinds of answer the input got: each diagnostic's message without names and
    /// numbers, or the shape of an accepted plan. An input with a kind not seen before
    /// joins the corpus.
    pub features: Vec<String>,
    /// A broken invariant.
    pub finding: Option<String>,
}

/// Messages without names, values and numbers, so that kinds of diagnostics compare:
/// everything from the first quote (`` ` `` or `"`) to the last is one `_` (quoted
/// values may hold quotes themselves), digits are `0`.
pub fn normalize(msg: &str) -> String {
    let is_quote = |c: char| c == '`' || c == '"';
    let msg = match (msg.find(is_quote), msg.rfind(is_quote)) {
        (Some(a), Some(b)) if a < b => format!("{}_{}", &msg[..a], &msg[b + 1..]),
        _ => msg.to_string(),
    };
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('0') {
                out.push('0');
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn run(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let fail = |features: Vec<String>, why: String| Outcome {
        features,
        finding: Some(why),
    };
    match check_source(Path::new("/fuzz/spec.yaml"), &text) {
        Err(d) => {
            if d.is_empty() {
                return fail(Vec::new(), "an error without any diagnostic".into());
            }
            let mut signature: Vec<String> = d
                .iter()
                .map(|e| format!("err:{}", normalize(e.message())))
                .collect();
            signature.sort();
            signature.dedup();
            for e in d.iter() {
                for l in e.labels() {
                    let (s, end) = (l.span.start, l.span.end);
                    if end > text.len() || !text.is_char_boundary(s) || !text.is_char_boundary(end)
                    {
                        return fail(
                            signature,
                            format!(
                                "diagnostic {:?} points at {s}..{end}, outside the text or inside a character (length {})",
                                e.message(),
                                text.len()
                            ),
                        );
                    }
                }
                if e.message().is_empty() {
                    return fail(signature, "a diagnostic without a message".into());
                }
            }
            let rendered = render(&d, false);
            if rendered.trim().is_empty() {
                return fail(signature, "diagnostics rendered as nothing".into());
            }
            Outcome {
                features: signature,
                finding: None,
            }
        }
        Ok(c) => {
            let plan = &c.plan;
            let fused = streamc::ir::fuse(plan);
            let signature = vec![format!(
                "ok:{} sources, {} flows, {} stages, {} sinks",
                plan.sources.len(),
                plan.flows.len(),
                fused.stages.len(),
                plan.sinks.len()
            )];
            let _ = streamc::ir::explain(plan);
            match streamc::codegen::generate_module(plan) {
                Err(e) => fail(
                    signature,
                    format!("a checked spec does not generate code: {e}"),
                ),
                Ok(code) => match syn::parse_file(&code) {
                    Err(e) => fail(signature, format!("generated code does not parse: {e}")),
                    Ok(_) => Outcome {
                        features: signature,
                        finding: None,
                    },
                },
            }
        }
    }
}
