//! Sinks, the dead letter, checkpoint storage, Redis sinks, unused declarations.

use super::Checker;
use super::flows::FlowOut;
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::plan::{RedisPlan, S3Plan, SinkKind, SinkPlan};
use crate::spec::ast::{CheckpointDecl, SinkBody, Spanned, Spec, StepKind};

/// A declared sink; `plan` is None when its body had an error.
pub(super) struct SinkOut {
    pub name: String,
    pub plan: Option<SinkPlan>,
}

impl Checker<'_> {
    pub(super) fn sinks(&mut self, spec: &Spec) -> Vec<SinkOut> {
        spec.sinks
            .iter()
            .map(|s| SinkOut {
                name: s.name.value.clone(),
                plan: s.body.as_ref().map(|b| SinkPlan {
                    name: s.name.value.clone(),
                    kind: self.sink_kind(b),
                }),
            })
            .collect()
    }

    pub(super) fn sink_kind(&self, body: &SinkBody) -> SinkKind {
        match body {
            SinkBody::Kafka { topic, properties } => SinkKind::Kafka {
                topic: topic.clone(),
                properties: properties.clone(),
            },
            SinkBody::File { path } => SinkKind::File {
                path: self.resolve(&path.value),
            },
            SinkBody::Stdout => SinkKind::Stdout,
            SinkBody::Redis(r) => SinkKind::Redis(RedisPlan {
                key: r.key.value.clone(),
                channel: r.channel.clone(),
                keep: r.keep,
                ttl: r.ttl,
                stream: r.stream.clone(),
                stream_max_len: r.stream_max_len,
                url: r.url.clone(),
            }),
        }
    }

    /// `file:///abs`, `s3://bucket/prefix`, or a plain path (made a `file://` URL).
    pub(super) fn checkpoint_storage(&mut self, storage: &Spanned<String>) -> Option<String> {
        let s = storage.value.trim();
        match s.split_once("://") {
            Some(("file", rest)) if !rest.is_empty() => Some(s.to_string()),
            Some(("s3", _)) => match streamc_runtime::checkpoint::storage::parse_s3_url(s) {
                Ok(_) => Some(s.trim_end_matches('/').to_string()),
                Err(reason) => {
                    self.error(
                        Diagnostic::error(format!("invalid S3 checkpoint storage `{s}`"))
                            .label(storage.span, reason)
                            .help("write `storage: s3://bucket/prefix`"),
                    );
                    None
                }
            },
            Some((scheme, _)) => {
                self.error(
                    Diagnostic::error(format!("unsupported checkpoint storage `{s}`"))
                        .label(storage.span, format!("`{scheme}://` is not supported"))
                        .help(
                            "use `file:///path/to/dir`, `s3://bucket/prefix`, or a directory path",
                        ),
                );
                None
            }
            None => Some(format!("file://{}", self.resolve(s).display())),
        }
    }

    /// `checkpoint.s3`: only with `s3://` storage.
    pub(super) fn s3_options(&mut self, c: &CheckpointDecl, storage: &str) -> S3Plan {
        let Some(s3) = &c.s3 else {
            return S3Plan::default();
        };
        if !storage.starts_with("s3://") {
            self.error(
                Diagnostic::error("`s3` options, but checkpoints do not go to S3")
                    .label(s3.span, "only for `s3://` storage")
                    .label(c.storage.span, "checkpoints go here")
                    .help("write `storage: s3://bucket/prefix`, or remove `s3:`"),
            );
        }
        S3Plan {
            endpoint: s3.endpoint.as_ref().map(|e| e.value.clone()),
            region: s3.region.as_ref().map(|r| r.value.clone()),
        }
    }

    /// Redis sinks hold the window results of one flow, keyed by the flow's key fields:
    /// each is written by exactly one windowed flow (not a late output, not the dead
    /// letter), and the `{field}` placeholders of its key template are key fields of
    /// that flow, so that one Redis key holds the windows of one key.
    pub(super) fn redis_sinks(&mut self, spec: &Spec, flows: &[FlowOut]) {
        if let Some(d) = &spec.dead_letter
            && let SinkBody::Redis(_) = d.value
        {
            self.error(
                Diagnostic::error("the dead letter output cannot be Redis")
                    .label(d.span, "invalid events are not window results")
                    .help("send them to `kafka: {topic: ...}` or `file: {path: ...}`"),
            );
        }
        for (si, sink) in spec.sinks.iter().enumerate() {
            let Some(SinkBody::Redis(redis)) = &sink.body else {
                continue;
            };
            let key = &redis.key;
            let name = &sink.name.value;
            let mut writers: Vec<(&FlowOut, Span)> = Vec::new();
            for f in flows {
                let Some(decl) = spec.flows.iter().find(|d| d.name.value == f.name) else {
                    continue;
                };
                if f.late == Some(si)
                    && let Some(l) = &decl.late
                {
                    self.error(
                        Diagnostic::error(format!(
                            "flow `{}` sends too-late events to Redis sink `{name}`",
                            f.name
                        ))
                        .label(l.span, "too-late events are raw events, not window results")
                        .help("send them to a `kafka` or `file` sink; a Redis sink stores window results"),
                    );
                }
                if !f.to.contains(&si) {
                    continue;
                }
                let at = decl
                    .to
                    .iter()
                    .find(|t| t.value == *name)
                    .map_or(decl.name.span, |t| t.span);
                let windowed = decl
                    .steps
                    .iter()
                    .any(|s| matches!(s.kind, Some(StepKind::Window(_))));
                if !windowed {
                    self.error(
                        Diagnostic::error(format!(
                            "flow `{}` has no window: Redis sink `{name}` stores window results",
                            f.name
                        ))
                        .label(at, "rows without window_start and window_end")
                        .help("give the flow a `window` and an `aggregate`, or write its rows to a `kafka` or `file` sink"),
                    );
                    continue;
                }
                writers.push((f, at));
            }
            let named = spec.flows.iter().any(|d| {
                d.to.iter().any(|t| t.value == *name)
                    || d.late.as_ref().is_some_and(|l| l.value == *name)
            });
            if writers.is_empty() && !named {
                // (When a flow names it but has errors of its own, those are reported.)
                self.error(
                    Diagnostic::error(format!("no flow writes Redis sink `{name}`"))
                        .label(sink.name.span, "a Redis sink without a flow")
                        .help("a Redis sink holds the windows of one flow: name it in that flow's `to`, or remove it"),
                );
            }
            if let [(first, _), (second, at), ..] = writers.as_slice() {
                self.error(
                    Diagnostic::error(format!(
                        "Redis sink `{name}` is written by flows `{}` and `{}`",
                        first.name, second.name
                    ))
                    .label(*at, "second writer")
                    .help("a Redis sink holds the windows of one flow: declare one sink per flow (they may share a channel)"),
                );
            }
            let holes = match placeholders(&key.value) {
                Ok(h) => h,
                Err(at) => {
                    let span = self.find_in(key.span, &key.value[at..at + 1]);
                    self.error(
                        Diagnostic::error(format!(
                            "unbalanced braces in the key template of sink `{name}`"
                        ))
                        .label(span, "unbalanced")
                        .help("placeholders are written `{field}`"),
                    );
                    continue;
                }
            };
            let Some((f, _)) = writers.first() else {
                continue;
            };
            let row = &f.output_row;
            for hole in &holes {
                if f.key_names.contains(hole) {
                    continue;
                }
                let span = self.find_in(key.span, &format!("{{{hole}}}"));
                let keys = || {
                    if f.key_names.is_empty() {
                        "the flow has no key_by: write a key without placeholders".to_string()
                    } else {
                        format!(
                            "its key fields are {}",
                            f.key_names
                                .iter()
                                .map(|k| format!("`{{{k}}}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                };
                if row.fields.iter().any(|x| &x.name == hole) {
                    self.error(
                        Diagnostic::error(format!(
                            "the key template of sink `{name}` uses `{hole}`, which is not a key field of flow `{}`",
                            f.name
                        ))
                        .label(span, "not a key_by field")
                        .help(format!(
                            "one Redis key holds the windows of one key, so placeholders name key fields; {}",
                            keys()
                        )),
                    );
                } else if row.reports_missing(hole) {
                    let help = match did_you_mean(hole, f.key_names.iter().map(String::as_str)) {
                        Some(m) => format!("did you mean `{{{m}}}`?"),
                        None => keys(),
                    };
                    self.error(
                        Diagnostic::error(format!(
                            "the key template of sink `{name}` uses `{hole}`, which flow `{}` does not output",
                            f.name
                        ))
                        .label(span, "unknown field")
                        .help(help),
                    );
                }
            }
        }
    }

    /// The span of `needle` inside the source text of `within` (or `within`).
    fn find_in(&self, within: Span, needle: &str) -> Span {
        let text = self.rep.text();
        text.get(within.start..within.end)
            .and_then(|raw| raw.find(needle))
            .map_or(within, |i| {
                Span::new(within.start + i, within.start + i + needle.len())
            })
    }

    /// Warnings for sources no flow reads and sinks no flow writes.
    pub(super) fn unused(&mut self, spec: &Spec) {
        for s in &spec.sources {
            if !spec
                .flows
                .iter()
                .any(|f| f.from.as_ref().is_some_and(|n| n.value == s.name.value))
            {
                self.rep.push(
                    Diagnostic::warning(format!(
                        "source `{}` is not read by any flow",
                        s.name.value
                    ))
                    .label(s.name.span, "unused")
                    .help(format!(
                        "read it with `from: {}`, or remove it",
                        s.name.value
                    )),
                );
            }
        }
        for s in &spec.sinks {
            let used = spec.flows.iter().any(|f| {
                f.to.iter().any(|t| t.value == s.name.value)
                    || f.late.as_ref().is_some_and(|l| l.value == s.name.value)
            });
            if !used {
                self.rep.push(
                    Diagnostic::warning(format!("sink `{}` is not used", s.name.value))
                        .label(s.name.span, "unused")
                        .help("list it in a flow's `to` or `late`, or remove it"),
                );
            }
        }
    }
}

/// The field names of `{field}` placeholders; `Err(byte offset)` of an unbalanced brace.
fn placeholders(t: &str) -> Result<Vec<String>, usize> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, c) in t.char_indices() {
        match c {
            '{' if open.is_none() => open = Some(i),
            '{' => return Err(i),
            '}' => match open.take() {
                Some(o) => {
                    let name = t[o + 1..i].trim().to_string();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                None => return Err(i),
            },
            _ => {}
        }
    }
    match open {
        Some(o) => Err(o),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn template_placeholders() {
        assert_eq!(
            placeholders("views:{user_id}:{url}"),
            Ok(vec!["user_id".to_string(), "url".to_string()])
        );
        assert_eq!(placeholders("plain"), Ok(vec![]));
        assert_eq!(placeholders("a{b"), Err(1));
        assert_eq!(placeholders("a}b"), Err(1));
        assert_eq!(placeholders("{a{b}}"), Err(2));
    }
}
