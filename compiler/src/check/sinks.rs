//! Sinks, the dead letter, checkpoint storage, Redis key templates, unused declarations.

use super::Checker;
use super::flows::{FlowOut, RowInfo};
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::plan::{SinkKind, SinkPlan};
use crate::spec::ast::{SinkBody, Spanned, Spec};

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
            SinkBody::Redis { key, channel } => SinkKind::Redis {
                key: key.value.clone(),
                channel: channel.clone(),
            },
        }
    }

    /// `file:///abs`, `s3://bucket/prefix`, or a plain path (made a `file://` URL).
    pub(super) fn checkpoint_storage(&mut self, storage: &Spanned<String>) -> Option<String> {
        let s = storage.value.trim();
        match s.split_once("://") {
            Some(("file" | "s3", rest)) if !rest.is_empty() => Some(s.to_string()),
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

    /// The `{field}` placeholders of each Redis key template must be fields of the rows
    /// written to it.
    pub(super) fn redis_templates(&mut self, spec: &Spec, flows: &[FlowOut]) {
        for (si, sink) in spec.sinks.iter().enumerate() {
            let Some(SinkBody::Redis { key, .. }) = &sink.body else {
                continue;
            };
            let holes = match placeholders(&key.value) {
                Ok(h) => h,
                Err(at) => {
                    let span = self.find_in(key.span, &key.value[at..at + 1]);
                    self.error(
                        Diagnostic::error(format!(
                            "unbalanced braces in the key template of sink `{}`",
                            sink.name.value
                        ))
                        .label(span, "unbalanced")
                        .help("placeholders are written `{field}`"),
                    );
                    continue;
                }
            };
            for f in flows {
                let rows: [(bool, &RowInfo); 2] = [
                    (f.to.contains(&si), &f.output_row),
                    (f.late == Some(si), &f.input_row),
                ];
                for (writes, row) in rows {
                    if !writes {
                        continue;
                    }
                    let fields = &row.fields;
                    for hole in &holes {
                        if fields.iter().any(|x| &x.name == hole) || !row.reports_missing(hole) {
                            continue;
                        }
                        let span = self.find_in(key.span, &format!("{{{hole}}}"));
                        let names = fields.iter().map(|x| x.name.as_str());
                        let help = match did_you_mean(hole, names) {
                            Some(m) => format!("did you mean `{{{m}}}`?"),
                            None => "placeholders name fields of the rows written to the sink"
                                .to_string(),
                        };
                        self.error(
                            Diagnostic::error(format!(
                                "the key template of sink `{}` uses `{hole}`, which flow `{}` does not output",
                                sink.name.value, f.name
                            ))
                            .label(span, "unknown field")
                            .help(help),
                        );
                    }
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
