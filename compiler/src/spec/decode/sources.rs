//! `sources:` entries.

use chrono::DateTime;

use super::{Decoder, Keys, short};
use crate::diag::{Diagnostic, did_you_mean};
use crate::plan::KafkaStart;
use crate::spec::ast::{DatagenDecl, FieldDecl, SourceDecl, SourceKindDecl, Spanned};
use crate::spec::values::{ValueError, is_identifier, parse_type};
use crate::spec::yaml::{Entry, NodeKind};

const SOURCE_KINDS: [&str; 3] = ["kafka", "file", "datagen"];

impl Decoder<'_> {
    pub(super) fn source(&mut self, entry: &Entry) -> SourceDecl {
        let name = Spanned::new(entry.key_str().to_string(), entry.key.span);
        self.check_identifier(&name, "source name");
        let what = format!("source `{}`", name.value);
        let mut decl = SourceDecl {
            name,
            kind: None,
            schema: Vec::new(),
            schema_complete: true,
            poisoned: Vec::new(),
            event_time: None,
            max_out_of_orderness: 0,
            idle_timeout: None,
            max_ahead: None,
        };
        let Some(mut keys) = self.keys(
            &entry.value,
            what.clone(),
            entry.key.span,
            &[
                "kafka",
                "file",
                "datagen",
                "format",
                "schema",
                "event_time",
                "watermark",
            ],
            false,
        ) else {
            decl.schema_complete = false;
            return decl;
        };
        decl.kind = self.source_kind(&mut keys);
        if let Some(e) = keys.get("format")
            && let Some(f) = self.string(e, "a format")
            && f.value != "json"
        {
            self.error(
                Diagnostic::error(format!("unsupported format `{}`", short(&f.value)))
                    .label(f.span, "not supported")
                    .help("only `json` (one JSON object per message or line) is supported"),
            );
        }
        match self.require(
            &mut keys,
            "schema",
            Some("declare the fields of an event: `schema: {user_id: u64, ts: timestamp}`"),
        ) {
            Some(e) => self.schema(e, &mut decl),
            None => decl.schema_complete = false,
        }
        if let Some(e) = self.require(
            &mut keys,
            "event_time",
            Some("name the schema field that holds each event's time: `event_time: ts`"),
        ) {
            decl.event_time = self.string(e, "a field name");
        }
        if let Some(e) = keys.get("watermark")
            && let Some(mut wk) = self.keys(
                &e.value,
                "watermark",
                e.key.span,
                &["max_out_of_orderness", "idle_timeout", "max_ahead"],
                true,
            )
        {
            if let Some(e) = wk.get("max_out_of_orderness") {
                decl.max_out_of_orderness =
                    self.duration(e, "max_out_of_orderness", false).unwrap_or(0);
            }
            if let Some(e) = wk.get("idle_timeout")
                && let Some(ms) = self.duration(e, "idle_timeout", false)
            {
                if ms == 0 {
                    self.error(
                        Diagnostic::error("idle_timeout must be positive")
                            .label(e.value.span, "zero")
                            .help("leave `idle_timeout` out to never mark a partition idle"),
                    );
                } else {
                    decl.idle_timeout = Some(ms);
                }
            }
            if let Some(e) = wk.get("max_ahead")
                && let Some(ms) = self.duration(e, "max_ahead", false)
            {
                if ms == 0 {
                    self.error(
                        Diagnostic::error("max_ahead must be positive")
                            .label(e.value.span, "zero")
                            .help(
                                "it is how far ahead of the wall clock an event's time may be \
                                 (for example `1h`); leave it out to accept any event time",
                            ),
                    );
                } else {
                    decl.max_ahead = Some(ms);
                }
            }
            self.finish(wk);
        }
        self.finish(keys);
        decl
    }

    fn source_kind(&mut self, keys: &mut Keys<'_>) -> Option<SourceKindDecl> {
        let mut present: Vec<&Entry> = SOURCE_KINDS.iter().filter_map(|k| keys.get(k)).collect();
        present.sort_by_key(|e| e.key.span.start);
        match present.as_slice() {
            [] if keys.has_unknown() => None,
            [] => {
                let what = keys.what().to_string();
                self.error(
                    Diagnostic::error(format!("{what} has no kind"))
                        .label(keys.anchor(), "say where events come from")
                        .help("add one of `kafka: {topic: ...}`, `file: {path: ...}` or `datagen: {}`"),
                );
                None
            }
            [one] => {
                let what = keys.what().to_string();
                match one.key_str() {
                    "kafka" => self.kafka_source(one, &what),
                    "file" => self.file_source(one, &what),
                    _ => self.datagen(one, &what),
                }
            }
            [first, second, ..] => {
                self.error(
                    Diagnostic::error(format!("{} has more than one kind", keys.what()))
                        .label(second.key.span, "second kind")
                        .label(first.key.span, "first kind")
                        .help("a source is exactly one of `kafka`, `file` or `datagen`; declare another source for the other"),
                );
                None
            }
        }
    }

    fn kafka_source(&mut self, entry: &Entry, what: &str) -> Option<SourceKindDecl> {
        let mut k = self.keys(
            &entry.value,
            format!("the kafka settings of {what}"),
            entry.key.span,
            &[
                "topic",
                "group_id",
                "start",
                "properties",
                "partitioned_by",
                "static_membership",
            ],
            false,
        )?;
        let topic = self
            .require(
                &mut k,
                "topic",
                Some("name the topic to read: `topic: clicks`"),
            )
            .and_then(|e| self.nonempty_string(e, "a topic name"));
        let group_id = k
            .get("group_id")
            .and_then(|e| self.nonempty_string(e, "a group id"))
            .map(|s| s.value);
        let mut start = KafkaStart::Earliest;
        if let Some(e) = k.get("start")
            && let Some(s) = self.string(e, "`earliest` or `latest`")
        {
            match s.value.as_str() {
                "earliest" => start = KafkaStart::Earliest,
                "latest" => start = KafkaStart::Latest,
                other => {
                    let hint = did_you_mean(other, ["earliest", "latest"]);
                    self.error(
                        Diagnostic::error(format!("invalid start `{}`", short(other)))
                            .label(s.span, "expected `earliest` or `latest`")
                            .maybe_help(hint.map(|h| format!("did you mean `{h}`?"))),
                    );
                }
            }
        }
        let properties = match k.get("properties") {
            Some(e) => self.properties(e, "kafka properties"),
            None => Vec::new(),
        };
        let mut partitioned_by = Vec::new();
        if let Some(e) = k.get("partitioned_by")
            && let Some(v) = self.name_list(e, "field name")
        {
            if v.is_empty() {
                self.error(
                    Diagnostic::error("`partitioned_by` names no field")
                        .label(e.key.span, "empty")
                        .help("name the fields the producers partition by (the message key), e.g. `partitioned_by: [user_id]`, or leave it out"),
                );
            }
            partitioned_by = v;
        }
        let static_membership = k
            .get("static_membership")
            .and_then(|e| self.boolean(e, "static_membership"))
            .unwrap_or(false);
        self.finish(k);
        Some(SourceKindDecl::Kafka {
            topic: topic?.value,
            group_id,
            start,
            properties,
            partitioned_by,
            static_membership,
        })
    }

    fn file_source(&mut self, entry: &Entry, what: &str) -> Option<SourceKindDecl> {
        let mut k = self.keys(
            &entry.value,
            format!("the file settings of {what}"),
            entry.key.span,
            &["path"],
            false,
        )?;
        let path = self
            .require(
                &mut k,
                "path",
                Some("name a JSON-lines file: `path: events.jsonl` (relative to the spec)"),
            )
            .and_then(|e| self.nonempty_string(e, "a file path"));
        self.finish(k);
        Some(SourceKindDecl::File { path: path? })
    }

    fn datagen(&mut self, entry: &Entry, what: &str) -> Option<SourceKindDecl> {
        let mut k = self.keys(
            &entry.value,
            format!("the datagen settings of {what}"),
            entry.key.span,
            &[
                "rate",
                "keys",
                "max_delay",
                "late_fraction",
                "seed",
                "count",
                "start",
                "late_delay",
                "key_fields",
            ],
            true,
        )?;
        let mut g = DatagenDecl::default();
        let mut ok = true;
        if let Some(e) = k.get("rate") {
            match self.u64(e, "`rate` (events per second; 0 = as fast as possible)") {
                Some(v) => g.rate = v,
                None => ok = false,
            }
        }
        if let Some(e) = k.get("keys") {
            match self.u64(e, "`keys`") {
                Some(0) => {
                    self.error(
                        Diagnostic::error("`keys` must be at least 1")
                            .label(e.value.span, "zero keys"),
                    );
                    ok = false;
                }
                Some(v) => g.keys = v,
                None => ok = false,
            }
        }
        if let Some(e) = k.get("max_delay") {
            match self.duration(e, "`max_delay`", false) {
                Some(v) => g.max_delay = v,
                None => ok = false,
            }
        }
        if let Some(e) = k.get("late_fraction") {
            match self.f64(e, "`late_fraction`") {
                Some(v) if (0.0..=1.0).contains(&v) => g.late_fraction = v,
                Some(_) => {
                    self.error(
                        Diagnostic::error("`late_fraction` must be between 0 and 1")
                            .label(e.value.span, "out of range")
                            .help("it is the fraction of events made too late, such as `0.01`"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(e) = k.get("seed") {
            match self.u64(e, "`seed`") {
                Some(v) => g.seed = v,
                None => ok = false,
            }
        }
        if let Some(e) = k.get("count") {
            match self.u64(e, "`count` (number of events)") {
                Some(v) => g.count = Some(v),
                None => ok = false,
            }
        }
        if let Some(e) = k.get("start") {
            match self.start_time(e) {
                Some(v) => g.start = Some(v),
                None => ok = false,
            }
        }
        if let Some(e) = k.get("late_delay") {
            match self.duration(e, "`late_delay`", false) {
                Some(v) => g.late_delay = Some(v),
                None => ok = false,
            }
        }
        if let Some(e) = k.get("key_fields") {
            match self.name_list(e, "`key_fields` (schema fields drawn from `keys` values)") {
                Some(v) => g.key_fields = Some(v),
                None => ok = false,
            }
        }
        self.finish(k);
        ok.then_some(SourceKindDecl::Datagen(g))
    }

    /// Epoch millis or an RFC 3339 date-time.
    fn start_time(&mut self, e: &Entry) -> Option<i64> {
        if let NodeKind::Scalar(s) = &e.value.kind {
            let t = s.value.trim();
            if let Ok(ms) = t.parse::<i64>() {
                return Some(ms);
            }
            if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
                return Some(dt.timestamp_millis());
            }
        }
        self.error(
            Diagnostic::error("invalid `start`")
                .label(
                    e.value.head_span(&self.text),
                    "expected epoch millis or an RFC 3339 date-time",
                )
                .help("for example `start: 1700000000000` or `start: 2024-01-01T00:00:00Z`"),
        );
        None
    }

    fn schema(&mut self, entry: &Entry, decl: &mut SourceDecl) {
        let NodeKind::Map(fields) = &entry.value.kind else {
            self.expected(
                &entry.value,
                "a mapping of field names to types",
                entry.key.span,
            );
            decl.schema_complete = false;
            return;
        };
        if fields.is_empty() {
            self.error(Diagnostic::error("the schema is empty").label(entry.key.span, "no fields"));
            decl.schema_complete = false;
        }
        for f in fields {
            let name = Spanned::new(f.key_str().to_string(), f.key.span);
            if !is_identifier(&name.value) {
                self.check_identifier(&name, "field name");
                decl.poisoned.push(name.value);
                continue;
            }
            let NodeKind::Scalar(s) = &f.value.kind else {
                self.expected(
                    &f.value,
                    &format!("a type for field `{}`", name.value),
                    f.key.span,
                );
                decl.poisoned.push(name.value);
                continue;
            };
            match parse_type(&s.value) {
                Ok((ty, nullable)) => decl.schema.push(FieldDecl {
                    name,
                    ty,
                    nullable,
                    ty_span: f.value.span,
                }),
                Err(ValueError { message, help }) => {
                    self.error(
                        Diagnostic::error(message)
                            .label(f.value.span, format!("the type of `{}`", name.value))
                            .maybe_help(help),
                    );
                    decl.poisoned.push(name.value);
                }
            }
        }
    }
}
