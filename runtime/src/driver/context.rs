//! [`Context`]: what the generated code writes through (results, late events, dead
//! letters), and the sinks behind it.

use std::borrow::Cow;

use super::cli::Resolved;
use super::{Error, JobSpec, Record, Stop};
use crate::kafka::KafkaEnv;
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, SinkKind, SinkSpec};

/// One opened sink, shared by every logical sink with the same kind.
struct Writer {
    sink: Box<dyn Sink>,
    /// For error messages: `sink `name` (file /path)`.
    label: String,
}

/// Handed to the pipeline with every call: where results, late and invalid events go.
pub struct Context {
    writers: Vec<Writer>,
    /// Output sink index → writer.
    sink_writer: Vec<usize>,
    /// Source index → writer of its dead-letter output.
    dead_letter_writer: Vec<usize>,
    source_names: Vec<&'static str>,
    row: Vec<u8>,
    key: Vec<u8>,
    pub(super) metrics: Metrics,
    /// The first write error; the driver stops at the next check.
    pub(super) error: Option<Error>,
    /// Rows written since the last flush.
    pub(super) dirty: bool,
    /// Some sink reports progress ([`Sink::wants_progress`]).
    pub(super) progress: bool,
}

#[derive(serde::Serialize)]
struct DeadLetter<'a> {
    error: &'a str,
    source: &'a str,
    partition: u32,
    offset: u64,
    raw: Cow<'a, str>,
}

impl Context {
    /// Opens the sinks as resolved. Logical sinks with the same kind (two sources sharing
    /// a dead-letter file, a sink and a dead-letter output both on stdout) share one
    /// writer.
    pub(super) fn open<'a>(
        spec: &JobSpec,
        resolved: &'a Resolved,
        env: &KafkaEnv,
    ) -> Result<Self, Error> {
        let mut writers: Vec<(&SinkKind, Writer)> = Vec::new();
        let mut get = |entry: &'a (String, SinkKind)| -> Result<usize, Error> {
            let (label, kind) = entry;
            if let Some(i) = writers.iter().position(|(k, _)| *k == kind) {
                return Ok(i);
            }
            let label = format!("{label} ({kind})");
            let sink =
                crate::connectors::open_sink_with(kind, env).map_err(|source| Error::Sink {
                    sink: label.clone(),
                    source,
                })?;
            writers.push((kind, Writer { sink, label }));
            Ok(writers.len() - 1)
        };
        let sink_writer = resolved
            .outputs
            .iter()
            .map(&mut get)
            .collect::<Result<_, _>>()?;
        let dead_letter_writer = resolved
            .dead_letters
            .iter()
            .map(&mut get)
            .collect::<Result<_, _>>()?;
        Ok(Context::from_writers(
            spec,
            writers.into_iter().map(|(_, w)| w).collect(),
            sink_writer,
            dead_letter_writer,
        ))
    }

    /// The context over opened writers: `sink_writer[i]` is output sink i's writer,
    /// `dead_letter_writer[s]` source s's dead-letter writer.
    fn from_writers(
        spec: &JobSpec,
        writers: Vec<Writer>,
        sink_writer: Vec<usize>,
        dead_letter_writer: Vec<usize>,
    ) -> Self {
        Context {
            progress: writers.iter().any(|w| w.sink.wants_progress()),
            writers,
            sink_writer,
            dead_letter_writer,
            source_names: spec.sources.iter().map(|s| s.name).collect(),
            row: Vec::with_capacity(512),
            key: Vec::with_capacity(128),
            metrics: Metrics::new(
                spec.sources.iter().map(|s| s.name),
                spec.flows.iter().copied(),
                spec.sinks.iter().map(|s| s.name),
            ),
            error: None,
            dirty: false,
        }
    }

    /// A context whose sinks are made by `make` rather than opened from their kinds
    /// (one per output sink, then one per dead-letter output): for benchmarks and tests
    /// that drive a generated pipeline in process.
    pub fn with_sinks(spec: &JobSpec, mut make: impl FnMut(&SinkSpec) -> Box<dyn Sink>) -> Self {
        let mut writers = Vec::new();
        for s in spec.sinks.iter().chain(spec.dead_letters.iter()) {
            writers.push(Writer {
                sink: make(s),
                label: format!("sink `{}` ({})", s.name, s.kind),
            });
        }
        let n = spec.sinks.len();
        let dead_letter_writer = spec.sources.iter().map(|s| n + s.dead_letter).collect();
        Context::from_writers(spec, writers, (0..n).collect(), dead_letter_writer)
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn sink_error(writer: &Writer, source: SinkError) -> Error {
        Error::Sink {
            sink: writer.label.clone(),
            source,
        }
    }

    /// The job's counters so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serializes `row` as JSON once (and `key`, the Kafka message key, if any) and
    /// writes it to each sink index in `sinks`.
    pub fn emit<R: serde::Serialize, K: serde::Serialize>(
        &mut self,
        sinks: &[usize],
        key: Option<&K>,
        row: &R,
    ) {
        if sinks.is_empty() || self.error.is_some() {
            return;
        }
        self.row.clear();
        if let Err(e) = serde_json::to_writer(&mut self.row, row) {
            return self.fail(Error::Serialize(e));
        }
        let mut key_done = false;
        for &s in sinks {
            let w = &mut self.writers[self.sink_writer[s]];
            let k = match key {
                Some(k) if w.sink.uses_key() => {
                    if !key_done {
                        self.key.clear();
                        if let Err(e) = serde_json::to_writer(&mut self.key, k) {
                            return self.fail(Error::Serialize(e));
                        }
                        key_done = true;
                    }
                    Some(&self.key[..])
                }
                _ => None,
            };
            if let Err(e) = w.sink.write(k, &self.row) {
                let e = Self::sink_error(w, e);
                return self.fail(e);
            }
            self.metrics.sinks[s].rows_out += 1;
        }
        self.dirty = true;
    }

    /// A too-late event of flow `flow`: `payload` written unchanged to sink `sink`, or
    /// only counted when the flow names no late sink.
    pub fn late(&mut self, flow: usize, sink: Option<usize>, payload: &[u8]) {
        self.metrics.flows[flow].late += 1;
        let Some(s) = sink else { return };
        if self.error.is_some() {
            return;
        }
        let w = &mut self.writers[self.sink_writer[s]];
        if let Err(e) = w.sink.write(None, payload) {
            let e = Self::sink_error(w, e);
            return self.fail(e);
        }
        self.metrics.sinks[s].rows_out += 1;
        self.dirty = true;
    }

    /// An invalid record of source `src`: written to its dead-letter sink as
    /// `{"error", "source", "partition", "offset", "raw"}`.
    pub fn dead_letter(&mut self, src: usize, rec: &Record<'_>, error: &str) {
        self.metrics.sources[src].invalid += 1;
        if self.error.is_some() {
            return;
        }
        let dl = DeadLetter {
            error,
            source: self.source_names[src],
            partition: rec.partition,
            offset: rec.offset,
            raw: String::from_utf8_lossy(rec.payload),
        };
        self.row.clear();
        if let Err(e) = serde_json::to_writer(&mut self.row, &dl) {
            return self.fail(Error::Serialize(e));
        }
        let w = &mut self.writers[self.dead_letter_writer[src]];
        if let Err(e) = w.sink.write(None, &self.row) {
            let e = Self::sink_error(w, e);
            return self.fail(e);
        }
        self.dirty = true;
    }

    /// Hands the counters to the sinks that report progress (dashboards).
    pub(super) fn progress(&mut self) {
        if !self.progress {
            return;
        }
        for w in &mut self.writers {
            if w.sink.wants_progress() {
                w.sink.progress(&self.metrics);
            }
        }
    }

    pub(super) fn flush(&mut self) -> Result<(), Error> {
        self.dirty = false;
        for w in &mut self.writers {
            w.sink.flush().map_err(|e| Self::sink_error(w, e))?;
        }
        Ok(())
    }

    /// Waits until every sink has delivered every row written so far (before offsets
    /// are committed).
    pub(super) fn wait_delivered(&mut self) -> Result<(), Error> {
        self.dirty = false;
        for w in &mut self.writers {
            w.sink
                .wait_delivered()
                .map_err(|e| Self::sink_error(w, e))?;
        }
        Ok(())
    }

    /// Closes every writer (all of them, even after a failure); the first error wins.
    pub(super) fn close(&mut self) -> Result<(), Error> {
        let mut first = None;
        for w in &mut self.writers {
            if let Err(e) = w.sink.close() {
                first.get_or_insert_with(|| Self::sink_error(w, e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes the recorded write error: a closed stdout ends the job normally.
    pub(super) fn halt(&mut self) -> Option<Result<Stop, Error>> {
        self.error.take().map(|e| match e {
            Error::Sink {
                source: SinkError::Closed,
                ..
            } => Ok(Stop::OutputClosed),
            e => Err(e),
        })
    }
}
