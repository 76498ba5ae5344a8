//! `sinks:` entries, `dead_letter`, `checkpoint` and `state`.

use super::{Decoder, short};
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::spec::ast::{
    CheckpointDecl, CheckpointMode, RedisDecl, S3Decl, ServeDecl, SinkBody, SinkDecl, Spanned,
    StateBackend, StateDecl,
};

/// `HOST:PORT` or `:PORT` with a numeric port (the host is resolved at run time).
fn valid_listen(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && !host.contains(char::is_whitespace),
        None => false,
    }
}
use crate::spec::yaml::{Entry, Node, NodeKind};

const SINK_KINDS: [&str; 4] = ["kafka", "file", "stdout", "redis"];

impl Decoder<'_> {
    pub(super) fn sink(&mut self, entry: &Entry) -> SinkDecl {
        let name = Spanned::new(entry.key_str().to_string(), entry.key.span);
        self.check_identifier(&name, "sink name");
        let what = format!("sink `{}`", name.value);
        let body = self.sink_body(&entry.value, &what, entry.key.span);
        SinkDecl { name, body }
    }

    /// A sink body: exactly one of `kafka`, `file`, `stdout`, `redis`.
    pub(super) fn sink_body(&mut self, node: &Node, what: &str, anchor: Span) -> Option<SinkBody> {
        let mut k = self.keys(node, what, anchor, &SINK_KINDS, false)?;
        let mut present: Vec<&Entry> = SINK_KINDS.iter().filter_map(|n| k.get(n)).collect();
        present.sort_by_key(|e| e.key.span.start);
        let has_unknown = k.has_unknown();
        self.finish(k);
        match present.as_slice() {
            [] if has_unknown => None,
            [] => {
                self.error(
                    Diagnostic::error(format!("{what} has no kind"))
                        .label(anchor, "say where results go")
                        .help("add one of `kafka: {topic: ...}`, `file: {path: ...}`, `stdout: {}` or `redis: {key: ...}`"),
                );
                None
            }
            [first, second, ..] => {
                self.error(
                    Diagnostic::error(format!("{what} has more than one kind"))
                        .label(second.key.span, "second kind")
                        .label(first.key.span, "first kind")
                        .help("a sink is exactly one of `kafka`, `file`, `stdout` or `redis`; declare another sink and list both in `to`"),
                );
                None
            }
            [one] => {
                let e = *one;
                match e.key_str() {
                    "kafka" => {
                        let mut k = self.keys(
                            &e.value,
                            format!("the kafka settings of {what}"),
                            e.key.span,
                            &["topic", "properties"],
                            false,
                        )?;
                        let topic = self
                            .require(
                                &mut k,
                                "topic",
                                Some("name the topic to write: `topic: results`"),
                            )
                            .and_then(|t| self.nonempty_string(t, "a topic name"));
                        let properties = match k.get("properties") {
                            Some(p) => self.properties(p, "kafka properties"),
                            None => Vec::new(),
                        };
                        self.finish(k);
                        Some(SinkBody::Kafka {
                            topic: topic?.value,
                            properties,
                        })
                    }
                    "file" => {
                        let mut k = self.keys(
                            &e.value,
                            format!("the file settings of {what}"),
                            e.key.span,
                            &["path"],
                            false,
                        )?;
                        let path = self
                            .require(&mut k, "path", Some("name the output file: `path: out.jsonl` (relative to the spec)"))
                            .and_then(|p| self.nonempty_string(p, "a file path"));
                        self.finish(k);
                        Some(SinkBody::File { path: path? })
                    }
                    "stdout" => {
                        let k = self.keys(&e.value, "stdout", e.key.span, &[], true)?;
                        self.finish(k);
                        Some(SinkBody::Stdout)
                    }
                    _ => self.redis(e, what),
                }
            }
        }
    }

    fn redis(&mut self, e: &Entry, what: &str) -> Option<SinkBody> {
        let mut k = self.keys(
            &e.value,
            format!("the redis settings of {what}"),
            e.key.span,
            &[
                "key",
                "channel",
                "keep",
                "ttl",
                "stream",
                "stream_max_len",
                "url",
            ],
            false,
        )?;
        let key = self
            .require(
                &mut k,
                "key",
                Some("give a key template: `key: \"views:{user_id}\"`"),
            )
            .and_then(|t| self.nonempty_string(t, "a key template"));
        let channel = k
            .get("channel")
            .and_then(|c| self.nonempty_string(c, "a channel name"))
            .map(|c| c.value);
        let stream = k
            .get("stream")
            .and_then(|c| self.nonempty_string(c, "a stream key"))
            .map(|c| c.value);
        let mut ok = true;
        let mut at_least_one = |d: &mut Self, name: &str, what: &str, help: &str| -> Option<u64> {
            let e = k.get(name)?;
            let v = d.u64(e, what);
            if v == Some(0) {
                d.error(
                    Diagnostic::error(format!("{what} must be at least 1"))
                        .label(e.value.span, "zero")
                        .help(help.to_string()),
                );
                ok = false;
                return None;
            }
            ok &= v.is_some();
            v
        };
        let keep = at_least_one(
            self,
            "keep",
            "`keep`",
            "`keep: N` keeps the newest N windows of each key; leave it out for 1000",
        );
        let stream_max_len = at_least_one(
            self,
            "stream_max_len",
            "`stream_max_len`",
            "the change log keeps about this many changes; leave it out for 100000",
        );
        let ttl = match k.get("ttl") {
            Some(t) => match self.duration(t, "the Redis TTL", false) {
                Some(0) => {
                    self.error(
                        Diagnostic::error("the Redis TTL must be positive")
                            .label(t.value.span, "zero")
                            .help("leave `ttl` out for keys that never expire"),
                    );
                    ok = false;
                    None
                }
                Some(ms) => Some(ms),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let url = match k.get("url") {
            Some(u) => match self.nonempty_string(u, "a Redis URL") {
                Some(s) if s.value.trim().starts_with("redis://") => {
                    Some(s.value.trim().to_string())
                }
                Some(s) => {
                    self.error(
                        Diagnostic::error(format!("unsupported Redis URL `{}`", short(&s.value)))
                            .label(s.span, "expected redis://host:port[/db]")
                            .help("for example `url: redis://127.0.0.1:6379/0`"),
                    );
                    ok = false;
                    None
                }
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        self.finish(k);
        if !ok {
            return None;
        }
        Some(SinkBody::Redis(RedisDecl {
            key: key?,
            channel,
            keep,
            ttl,
            stream,
            stream_max_len,
            url,
        }))
    }

    /// `serve: {listen: HOST:PORT, keep: N}` (both optional; `serve: {}` is enough).
    pub(super) fn serve(&mut self, e: &Entry) -> Option<ServeDecl> {
        let mut k = self.keys(&e.value, "serve", e.key.span, &["listen", "keep"], true)?;
        let listen = match k.get("listen") {
            Some(l) => match self.nonempty_string(l, "an address") {
                Some(a) if valid_listen(a.value.trim()) => Some(a.value.trim().to_string()),
                Some(a) => {
                    self.error(
                        Diagnostic::error(format!("invalid address `{}` to serve on", short(&a.value)))
                            .label(a.span, "expected HOST:PORT or :PORT")
                            .help("for example `listen: 127.0.0.1:8080` (or `:8080`; port 0 picks a free one)"),
                    );
                    None
                }
                None => None,
            },
            None => None,
        };
        let keep = match k.get("keep") {
            Some(e) => match self.u64(e, "`keep`") {
                Some(0) => {
                    self.error(
                        Diagnostic::error("`keep` must be at least 1")
                            .label(e.value.span, "zero")
                            .help("`keep: N` keeps the newest N windows of each key in memory; leave it out for 60"),
                    );
                    None
                }
                Some(n) => Some(n),
                None => None,
            },
            None => None,
        };
        self.finish(k);
        // Declared even when a value had an error (reported): no follow-on errors.
        Some(ServeDecl {
            span: e.key.span,
            listen,
            keep,
        })
    }

    pub(super) fn checkpoint(&mut self, e: &Entry) -> Option<CheckpointDecl> {
        let mut k = self.keys(
            &e.value,
            "checkpoint",
            e.key.span,
            &["interval", "storage", "mode", "retain", "s3"],
            false,
        )?;
        let interval = self
            .require(&mut k, "interval", Some("write `interval: 30s`"))
            .and_then(|i| {
                let ms = self.duration(i, "the checkpoint interval", false)?;
                if ms == 0 {
                    self.error(
                        Diagnostic::error("checkpoint interval must be positive")
                            .label(i.value.span, "zero"),
                    );
                    return None;
                }
                Some(ms)
            });
        let storage = self
            .require(
                &mut k,
                "storage",
                Some(
                    "write `storage: file:///var/lib/streamc/checkpoints` or `s3://bucket/prefix`",
                ),
            )
            .and_then(|s| self.nonempty_string(s, "a storage URL"));
        let mode = k.get("mode").and_then(|m| {
            let s = self.string(m, "`exactly_once` or `at_least_once`")?;
            let value = match s.value.as_str() {
                "exactly_once" => CheckpointMode::ExactlyOnce,
                "at_least_once" => CheckpointMode::AtLeastOnce,
                other => {
                    let hint = did_you_mean(other, ["exactly_once", "at_least_once"]);
                    self.error(
                        Diagnostic::error(format!("invalid checkpoint mode `{}`", short(other)))
                            .label(s.span, "expected `exactly_once` or `at_least_once`")
                            .maybe_help(hint.map(|h| format!("did you mean `{h}`?"))),
                    );
                    return None;
                }
            };
            Some(Spanned {
                value,
                span: s.span,
            })
        });
        let retain = k.get("retain").and_then(|r| {
            let n = self.u64(r, "the number of checkpoints to keep")?;
            if n == 0 {
                self.error(
                    Diagnostic::error("`retain` must keep at least one checkpoint")
                        .label(r.value.span, "zero")
                        .help("write `retain: 3` (the default) or leave it out"),
                );
                return None;
            }
            Some(n)
        });
        let s3 = k.get("s3").and_then(|s| self.s3_options(s));
        self.finish(k);
        Some(CheckpointDecl {
            span: e.key.span,
            interval: interval?,
            storage: storage?,
            mode,
            retain,
            s3,
        })
    }

    /// `checkpoint.s3: {endpoint, region}`.
    fn s3_options(&mut self, e: &Entry) -> Option<S3Decl> {
        let mut k = self.keys(&e.value, "s3", e.key.span, &["endpoint", "region"], false)?;
        let endpoint = k.get("endpoint").and_then(|v| {
            let s = self.nonempty_string(v, "the S3 endpoint")?;
            let url = s.value.trim();
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                self.error(
                    Diagnostic::error(format!("invalid S3 endpoint `{}`", short(url)))
                        .label(s.span, "expected an http:// or https:// URL with a host")
                        .help("write `endpoint: http://127.0.0.1:9000` (a local server) or leave it out (AWS)"),
                );
                return None;
            }
            Some(Spanned::new(url.trim_end_matches('/').to_string(), s.span))
        });
        let region = k
            .get("region")
            .and_then(|v| self.nonempty_string(v, "the S3 region"))
            .map(|s| Spanned::new(s.value.trim().to_string(), s.span));
        self.finish(k);
        Some(S3Decl {
            span: e.key.span,
            endpoint,
            region,
        })
    }

    pub(super) fn state(&mut self, e: &Entry) -> Option<StateDecl> {
        let mut k = self.keys(&e.value, "state", e.key.span, &["backend", "path"], false)?;
        let backend = match k.get("backend") {
            Some(b) => {
                self.string(b, "`memory` or `rocksdb`")
                    .and_then(|s| match s.value.as_str() {
                        "memory" => Some(Spanned::new(StateBackend::Memory, s.span)),
                        "rocksdb" => Some(Spanned::new(StateBackend::RocksDb, s.span)),
                        other => {
                            let hint = did_you_mean(other, ["memory", "rocksdb"]);
                            self.error(
                                Diagnostic::error(format!(
                                    "unknown state backend `{}`",
                                    short(other)
                                ))
                                .label(s.span, "expected `memory` or `rocksdb`")
                                .maybe_help(hint.map(|h| format!("did you mean `{h}`?"))),
                            );
                            None
                        }
                    })
            }
            None => Some(Spanned::new(StateBackend::Memory, e.key.span)),
        };
        let path = k
            .get("path")
            .and_then(|p| self.nonempty_string(p, "a directory path"));
        self.finish(k);
        let has_path =
            matches!(&e.value.kind, NodeKind::Map(m) if m.iter().any(|x| x.key_str() == "path"));
        if has_path && path.is_none() {
            return None;
        }
        Some(StateDecl {
            backend: backend?,
            path,
        })
    }
}
