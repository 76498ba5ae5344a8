//! Sources: schema, event time, kind, default dead letter; datagen parameters that
//! depend on the flows (late delay, key fields).

use std::ffi::OsString;
use std::path::PathBuf;

use super::Checker;
use super::flows::FlowOut;
use crate::diag::{Diagnostic, did_you_mean, list_names};
use crate::plan::{
    DatagenPlan, Field, Input, RowStep, SinkKind, SourceKind, SourcePlan, Type, WindowKind,
};
use crate::spec::ast::{SourceKindDecl, Spec};

/// A checked source: its row (for flows) and its plan (None after an error).
pub(super) struct SourceOut {
    pub name: String,
    pub fields: Vec<Field>,
    /// Whether `fields` is the whole schema (false after a schema error).
    pub complete: bool,
    /// Fields whose declaration had an error.
    pub poisoned: Vec<String>,
    pub plan: Option<SourcePlan>,
    /// Datagen `late_delay` / `key_fields` given in the spec (else derived from flows).
    pub datagen_declared: (bool, bool),
}

impl Checker<'_> {
    pub(super) fn sources(&mut self, spec: &Spec) -> Vec<SourceOut> {
        let mut out = Vec::new();
        for s in &spec.sources {
            let fields: Vec<Field> = s
                .schema
                .iter()
                .map(|f| Field {
                    name: f.name.value.clone(),
                    ty: f.ty,
                    nullable: f.nullable,
                })
                .collect();
            let event_time = s.event_time.as_ref().and_then(|et| {
                let Some(i) = s.schema.iter().position(|f| f.name.value == et.value) else {
                    if s.schema_complete && !s.poisoned.contains(&et.value) {
                        let names = fields.iter().map(|f| f.name.as_str());
                        let help = match did_you_mean(&et.value, names.clone()) {
                            Some(m) => format!("did you mean `{m}`?"),
                            None if fields.is_empty() => "declare it in the schema".to_string(),
                            None => format!("the schema has {}", list_names(names, 12)),
                        };
                        self.error(
                            Diagnostic::error(format!("event_time field `{}` is not in the schema", et.value))
                                .label(et.span, "not a schema field")
                                .help(help),
                        );
                    }
                    return None;
                };
                let f = &s.schema[i];
                if !(f.ty == Type::Timestamp || f.ty.is_integer()) {
                    self.error(
                        Diagnostic::error(format!(
                            "event_time field `{}` has type `{}`",
                            et.value,
                            f.ty.name()
                        ))
                        .label(et.span, "the event time")
                        .label(f.ty_span, format!("declared `{}` here", f.ty.name()))
                        .help("event time is a `timestamp` (epoch millis or RFC 3339) or an integer of epoch millis"),
                    );
                    return None;
                }
                if f.nullable {
                    self.error(
                        Diagnostic::error(format!("event_time field `{}` is optional", et.value))
                            .label(et.span, "the event time")
                            .label(f.ty_span, "optional here")
                            .help(format!(
                                "every event needs a time: declare `{}: {}` (events without it go to the dead letter)",
                                et.value,
                                f.ty.name()
                            )),
                    );
                    return None;
                }
                Some(i)
            });
            let kind = s.kind.as_ref().map(|k| match k {
                SourceKindDecl::Kafka {
                    topic,
                    group_id,
                    start,
                    properties,
                    partitioned_by,
                    static_membership,
                } => SourceKind::Kafka {
                    topic: topic.clone(),
                    group_id: group_id.clone().unwrap_or_else(|| self.pipeline.clone()),
                    start: *start,
                    properties: properties.clone(),
                    partitioned_by: partitioned_by.iter().map(|n| n.value.clone()).collect(),
                    static_membership: *static_membership,
                },
                SourceKindDecl::File { path } => SourceKind::File {
                    path: self.resolve(&path.value),
                },
                SourceKindDecl::Datagen(g) => SourceKind::Datagen(DatagenPlan {
                    rate: g.rate,
                    keys: g.keys,
                    max_delay: g.max_delay,
                    late_fraction: g.late_fraction,
                    seed: g.seed,
                    count: g.count,
                    start: g.start,
                    late_delay: g.late_delay.unwrap_or(0),
                    key_fields: g
                        .key_fields
                        .as_ref()
                        .map(|v| v.iter().map(|n| n.value.clone()).collect())
                        .unwrap_or_default(),
                }),
            });
            let plan = match (kind, event_time) {
                (Some(kind), Some(event_time)) => {
                    let default_dead_letter = self.default_dead_letter(&kind);
                    Some(SourcePlan {
                        name: s.name.value.clone(),
                        kind,
                        schema: fields.clone(),
                        event_time,
                        max_out_of_orderness: s.max_out_of_orderness,
                        idle_timeout: s.idle_timeout,
                        max_ahead: s.max_ahead,
                        default_dead_letter,
                    })
                }
                _ => None,
            };
            if let Some(SourceKindDecl::Kafka { partitioned_by, .. }) = &s.kind {
                let mut seen: Vec<&str> = Vec::new();
                for k in partitioned_by {
                    if seen.contains(&k.value.as_str()) {
                        self.error(
                            Diagnostic::error(format!(
                                "`partitioned_by` names `{}` twice",
                                k.value
                            ))
                            .label(k.span, "again"),
                        );
                    }
                    seen.push(&k.value);
                    if s.schema_complete && !fields.iter().any(|f| f.name == k.value) {
                        let names = fields.iter().map(|f| f.name.as_str());
                        let help = did_you_mean(&k.value, names.clone())
                            .map(|m| format!("did you mean `{m}`?"));
                        self.error(
                            Diagnostic::error(format!(
                                "`partitioned_by` names `{}`, which is not in the schema",
                                k.value
                            ))
                            .label(k.span, "not a schema field")
                            .maybe_help(help),
                        );
                    }
                }
            }
            let mut datagen_declared = (false, false);
            if let Some(SourceKindDecl::Datagen(g)) = &s.kind {
                datagen_declared = (g.late_delay.is_some(), g.key_fields.is_some());
                for k in g.key_fields.iter().flatten() {
                    if s.schema_complete && !fields.iter().any(|f| f.name == k.value) {
                        let names = fields.iter().map(|f| f.name.as_str());
                        let help = did_you_mean(&k.value, names.clone())
                            .map(|m| format!("did you mean `{m}`?"));
                        self.error(
                            Diagnostic::error(format!(
                                "datagen `key_fields` names `{}`, which is not in the schema",
                                k.value
                            ))
                            .label(k.span, "not a schema field")
                            .maybe_help(help),
                        );
                    }
                }
            }
            out.push(SourceOut {
                name: s.name.value.clone(),
                fields,
                complete: s.schema_complete,
                poisoned: s.poisoned.clone(),
                plan,
                datagen_declared,
            });
        }
        out
    }

    fn default_dead_letter(&self, kind: &SourceKind) -> SinkKind {
        match kind {
            SourceKind::Kafka { .. } => SinkKind::Kafka {
                topic: format!("{}-dead-letter", self.pipeline),
                properties: Vec::new(),
            },
            SourceKind::File { path } => {
                let mut p = OsString::from(path.as_os_str());
                p.push(".dead-letter.jsonl");
                SinkKind::File {
                    path: PathBuf::from(p),
                }
            }
            SourceKind::Datagen(_) => SinkKind::File {
                path: self
                    .spec_dir
                    .join(format!("{}-dead-letter.jsonl", self.pipeline)),
            },
        }
    }

    /// Fills what depends on the flows (datagen late delay and key fields) and adds the
    /// notes on default dead letters.
    pub(super) fn finish_sources(
        &mut self,
        mut sources: Vec<SourceOut>,
        flows: &[FlowOut],
        dead_letter_declared: bool,
    ) -> Vec<SourceOut> {
        for (i, src) in sources.iter_mut().enumerate() {
            let Some(plan) = &mut src.plan else { continue };
            let readers: Vec<&FlowOut> = flows
                .iter()
                .filter(|f| f.input == Some(Input::Source(i)))
                .collect();
            if let SourceKind::Datagen(g) = &mut plan.kind {
                let (late_declared, keys_declared) = src.datagen_declared;
                let extent = readers
                    .iter()
                    .filter_map(|f| f.window)
                    .map(|w| {
                        let size = match w.kind {
                            WindowKind::Tumbling { size, .. }
                            | WindowKind::Sliding { size, .. } => size,
                            WindowKind::Session { gap } => gap,
                        };
                        size.saturating_add(w.allowed_lateness)
                    })
                    .max()
                    .unwrap_or(0);
                if !late_declared {
                    g.late_delay = plan
                        .max_out_of_orderness
                        .saturating_add(extent)
                        .saturating_add(1000);
                }
                let mut keys: Vec<String> = Vec::new();
                for f in &readers {
                    for k in &f.key_names {
                        let replaced = f.steps.iter().any(|s| match s {
                            RowStep::Map(m) => m.iter().any(|(n, _)| n == k),
                            RowStep::Filter(_) => false,
                        });
                        if !replaced
                            && plan.schema.iter().any(|s| &s.name == k)
                            && !keys.contains(k)
                        {
                            keys.push(k.clone());
                        }
                    }
                }
                if !keys_declared {
                    g.key_fields = plan
                        .schema
                        .iter()
                        .filter(|s| keys.contains(&s.name))
                        .map(|s| s.name.clone())
                        .collect();
                }
            }
            // A generator's events are valid by construction: only `max_ahead` can
            // refuse one, so a note about its dead letters would be noise.
            let generated = matches!(plan.kind, SourceKind::Datagen(_)) && plan.max_ahead.is_none();
            if !dead_letter_declared && !generated {
                let target = match &plan.default_dead_letter {
                    SinkKind::Kafka { topic, .. } => format!("Kafka topic `{topic}`"),
                    SinkKind::File { path } => path.display().to_string(),
                    SinkKind::Stdout => "stdout".to_string(),
                    SinkKind::Redis(r) => format!("Redis key `{}`", r.key),
                };
                let created = match &plan.default_dead_letter {
                    SinkKind::File { .. } => ", created at the first one",
                    _ => "",
                };
                self.notes.push(format!(
                    "invalid events from source `{}` go to {target}{created} (no `dead_letter` is declared)",
                    src.name
                ));
            }
        }
        sources
    }
}
