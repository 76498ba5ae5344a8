//! [`Context`]: what the generated code writes through (results, late events, dead
//! letters), and the sinks behind it.

use super::cli::Resolved;
use super::{Error, JobSpec, Record, Stop};
use crate::kafka::KafkaEnv;
use crate::metrics::{AHEAD_TOLERANCE_MS, Metrics};
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
    /// The record being processed was processed before a restart (at-least-once
    /// without checkpoints: re-read below the committed position, judged against the
    /// watermark it was judged against then): every row, late event and dead letter it
    /// leads to was written then, so none is written again. (Windows with records
    /// before the replay were purged before the commit: their partial rows never go
    /// out.)
    pub(super) replaying: bool,
    /// The wall clock (epoch ms) when last read: event times at or below it plus the
    /// tolerance need no clock read ([`Context::admit_event_time`]).
    clock_ms: i64,
    /// Per source: an event ahead of the wall clock has been logged.
    warned_ahead: Vec<bool>,
}

impl Context {
    /// Opens the sinks as resolved. Logical sinks with the same kind (two sources sharing
    /// a dead-letter file, a sink and a dead-letter output both on stdout) share one
    /// writer.
    pub(super) fn open<'a>(
        spec: &JobSpec,
        resolved: &'a Resolved,
        env: &KafkaEnv,
        checkpointed: bool,
    ) -> Result<Self, Error> {
        let mut writers: Vec<(&SinkKind, Writer)> = Vec::new();
        // Dead-letter files are created at their first record (`dead`).
        let mut get = |entry: &'a (String, SinkKind), dead: bool| -> Result<usize, Error> {
            let (label, kind) = entry;
            if let Some(i) = writers.iter().position(|(k, _)| *k == kind) {
                return Ok(i);
            }
            let label = format!("{label} ({kind})");
            let open = if checkpointed {
                crate::connectors::open_sink_kept
            } else if dead {
                crate::connectors::open_dead_letter_with
            } else {
                crate::connectors::open_sink_with
            };
            let sink = open(kind, env).map_err(|source| Error::Sink {
                sink: label.clone(),
                source,
            })?;
            writers.push((kind, Writer { sink, label }));
            Ok(writers.len() - 1)
        };
        let sink_writer = resolved
            .outputs
            .iter()
            .map(|e| get(e, false))
            .collect::<Result<_, _>>()?;
        let dead_letter_writer = resolved
            .dead_letters
            .iter()
            .map(|e| get(e, true))
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
            replaying: false,
            clock_ms: crate::metrics::now_ms(),
            warned_ahead: vec![false; spec.sources.len()],
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
        if sinks.is_empty() || self.error.is_some() || self.replaying {
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
        if self.replaying {
            self.metrics.flows[flow].replayed_late += 1;
            return;
        }
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
        self.metrics.sinks[s].late_out += 1;
        self.dirty = true;
    }

    /// An invalid record of source `src`: written to its dead-letter sink as
    /// `{"error", "source", "partition", "offset", "raw"}` and, from Kafka, the message's
    /// `key` and `headers`, every byte kept (see [`dead_letter_json`]).
    pub fn dead_letter(&mut self, src: usize, rec: &Record<'_>, error: &str) {
        if self.replaying {
            self.metrics.sources[src].replayed_invalid += 1;
            return;
        }
        self.metrics.sources[src].invalid += 1;
        if self.error.is_some() {
            return;
        }
        // Name what is wrong with records that have nothing to parse.
        let error = match rec.kafka {
            Some(k) if k.tombstone => {
                "tombstone: the Kafka message has no value (null), so there is no event to read"
            }
            _ if rec.payload.is_empty() => "empty message: the record has no bytes",
            _ => error,
        };
        let w = &mut self.writers[self.dead_letter_writer[src]];
        let budget = w.sink.max_record_bytes();
        let truncated = dead_letter_json(&mut self.row, error, self.source_names[src], rec, budget);
        if truncated {
            tracing::warn!(
                source = self.source_names[src],
                partition = rec.partition,
                offset = rec.offset,
                size = rec.payload.len(),
                limit = budget.unwrap_or(0),
                "a dead letter was too large for its output: written truncated, with its original size and position"
            );
        }
        if let Err(e) = w.sink.write(None, &self.row) {
            let e = Self::sink_error(w, e);
            return self.fail(e);
        }
        self.dirty = true;
    }

    /// Judges the event time `ts` of a record of source `src` against the wall clock
    /// (called by the generated code before the event touches any state). An event more
    /// than [`AHEAD_TOLERANCE_MS`] ahead is counted in `ahead_of_clock`, and the first
    /// of each source is logged as a warning (it moves the watermark ahead, so later
    /// events may all be too late). With `max_ahead` (the source's `watermark.max_ahead`,
    /// ms) an event further ahead than that goes to the dead letters instead and this
    /// returns false: the caller drops it, and it never moves the watermark.
    ///
    /// Costs a comparison per event: the clock is read again only for an event past the
    /// last reading.
    #[inline]
    pub fn admit_event_time(
        &mut self,
        src: usize,
        rec: &Record<'_>,
        ts: i64,
        max_ahead: Option<i64>,
    ) -> bool {
        if ts <= self.clock_ms.saturating_add(AHEAD_TOLERANCE_MS) {
            return true;
        }
        self.ahead_of_clock(src, rec, ts, max_ahead)
    }

    #[cold]
    fn ahead_of_clock(
        &mut self,
        src: usize,
        rec: &Record<'_>,
        ts: i64,
        max_ahead: Option<i64>,
    ) -> bool {
        self.clock_ms = crate::metrics::now_ms();
        let ahead = i128::from(ts) - i128::from(self.clock_ms);
        if ahead <= i128::from(AHEAD_TOLERANCE_MS) {
            return true;
        }
        self.metrics.sources[src].ahead_of_clock += 1;
        let name = self.source_names[src];
        let rejected = max_ahead.is_some_and(|max| ahead > i128::from(max));
        if !self.warned_ahead[src] {
            self.warned_ahead[src] = true;
            let ahead = human_ms(ahead);
            if rejected {
                tracing::warn!(
                    source = name,
                    partition = rec.partition,
                    offset = rec.offset,
                    event_time = %event_time_text(ts),
                    ahead = %ahead,
                    "an event dated ahead of the wall clock by more than the source's watermark.max_ahead went to the dead letters (counted in streamc_source_ahead_of_clock_total; this is logged once)"
                );
            } else {
                tracing::warn!(
                    source = name,
                    partition = rec.partition,
                    offset = rec.offset,
                    event_time = %event_time_text(ts),
                    ahead = %ahead,
                    "an event is dated ahead of the wall clock: it moves the watermark ahead with it, so the events after it may all be too late; the source's watermark.max_ahead sends such events to the dead letters (counted in streamc_source_ahead_of_clock_total; this is logged once)"
                );
            }
        }
        if rejected {
            let error = format!(
                "event time {} is {} ahead of the wall clock, more than the source's watermark.max_ahead ({})",
                event_time_text(ts),
                human_ms(ahead),
                human_ms(i128::from(max_ahead.unwrap_or(0)))
            );
            self.dead_letter(src, rec, &error);
            return false;
        }
        true
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

    /// Checkpoints: every writer made durable, and its position (see
    /// [`Sink::durable_position`]), named by its label.
    pub(super) fn durable_positions(&mut self) -> Result<Vec<(String, Option<u64>)>, Error> {
        self.dirty = false;
        let mut out = Vec::with_capacity(self.writers.len());
        for w in &mut self.writers {
            let pos = w
                .sink
                .durable_position()
                .map_err(|e| Self::sink_error(w, e))?;
            out.push((w.label.clone(), pos));
        }
        Ok(out)
    }

    /// A restore: each writer back to its position in `positions` (by label; a writer
    /// with none there, new since the checkpoint, to 0).
    pub(super) fn truncate(&mut self, positions: &[(String, Option<u64>)]) -> Result<(), Error> {
        for w in &mut self.writers {
            let pos = positions
                .iter()
                .find(|(label, _)| *label == w.label)
                .and_then(|(_, p)| *p)
                .unwrap_or(0);
            w.sink.truncate(pos).map_err(|e| Self::sink_error(w, e))?;
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

/// Writes the dead letter of `rec` into `out` (cleared first), one JSON object:
///
/// - `error`, `source`, `partition`, `offset`;
/// - the record: `raw`, a string, when its bytes are UTF-8 (JSON escapes keep every
///   byte), else `raw_base64` (standard alphabet, padded); `"raw": null` for a Kafka
///   tombstone (no value, as opposed to `""` for an empty one);
/// - from Kafka: `key` (or `key_base64`) when the message had one, and `headers`, a list
///   of `{"name", "value"}` (or `"value_base64"`; `"value": null` for a header without a
///   value) in order, when it had any.
///
/// With a `budget` (the most bytes its output takes in one record) a dead letter that
/// would exceed it keeps a prefix of the record that fits, marked `"truncated": true`
/// with `raw_size` (the record's size in bytes; the whole record is still at its
/// `partition` and `offset` in the source); a key or headers too large to leave room are
/// replaced by `key_size` / `headers_size`. Returns whether anything was truncated.
pub fn dead_letter_json(
    out: &mut Vec<u8>,
    error: &str,
    source: &str,
    rec: &Record<'_>,
    budget: Option<usize>,
) -> bool {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"{\"error\":");
    json_str(&mut head, error);
    head.extend_from_slice(b",\"source\":");
    json_str(&mut head, source);
    head.extend_from_slice(
        format!(",\"partition\":{},\"offset\":{}", rec.partition, rec.offset).as_bytes(),
    );
    // The key and headers, as one fragment after the record.
    let mut meta = Vec::new();
    if let Some(k) = rec.kafka {
        if let Some(key) = k.key {
            bytes_field(&mut meta, "key", key, key.len());
        }
        let mut first = true;
        for (name, value) in k.headers() {
            meta.extend_from_slice(if first { b",\"headers\":[" } else { b"," });
            first = false;
            meta.extend_from_slice(b"{\"name\":");
            match std::str::from_utf8(name) {
                Ok(n) => json_str(&mut meta, n),
                Err(_) => json_str(&mut meta, &String::from_utf8_lossy(name)),
            }
            match value {
                Some(v) => bytes_field(&mut meta, "value", v, v.len()),
                None => meta.extend_from_slice(b",\"value\":null"),
            }
            meta.push(b'}');
        }
        if !first {
            meta.push(b']');
        }
    }
    let tombstone = rec.kafka.is_some_and(|k| k.tombstone);
    let write = |out: &mut Vec<u8>, meta: &[u8], raw_len: usize| {
        out.clear();
        out.extend_from_slice(&head);
        if tombstone {
            out.extend_from_slice(b",\"raw\":null");
        } else {
            bytes_field(out, "raw", &rec.payload[..raw_len], raw_len);
        }
        if raw_len < rec.payload.len() {
            out.extend_from_slice(
                format!(",\"truncated\":true,\"raw_size\":{}", rec.payload.len()).as_bytes(),
            );
        }
        out.extend_from_slice(meta);
        out.push(b'}');
    };
    write(out, &meta, rec.payload.len());
    let Some(budget) = budget else {
        return false;
    };
    if out.len() <= budget {
        return false;
    }
    // Too large: first give the key and headers no more than a quarter of the budget.
    if meta.len() > budget / 4 {
        let mut short = Vec::new();
        if let Some(k) = rec.kafka {
            if let Some(key) = k.key {
                if key.len() * 6 + 32 <= budget / 8 {
                    bytes_field(&mut short, "key", key, key.len());
                } else {
                    short.extend_from_slice(format!(",\"key_size\":{}", key.len()).as_bytes());
                }
            }
            if !k.headers.is_empty() {
                short
                    .extend_from_slice(format!(",\"headers_size\":{}", k.headers.len()).as_bytes());
            }
        }
        meta = short;
        write(out, &meta, rec.payload.len());
        if out.len() <= budget {
            return true;
        }
    }
    // Then keep the longest prefix of the record that fits (the encoded size grows with
    // the prefix: binary search), cut at a character boundary when it is text.
    let text = std::str::from_utf8(rec.payload).ok();
    let boundary = |mut n: usize| {
        if let Some(t) = text {
            while n > 0 && !t.is_char_boundary(n) {
                n -= 1;
            }
        }
        n
    };
    let (mut lo, mut hi) = (0usize, rec.payload.len());
    while lo < hi {
        let mid = boundary(lo + (hi - lo).div_ceil(2));
        if mid <= lo {
            break;
        }
        write(out, &meta, mid);
        if out.len() <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    write(out, &meta, boundary(lo));
    true
}

/// `,"<name>":"<text>"` when `bytes` are UTF-8, else `,"<name>_base64":"..."`.
fn bytes_field(out: &mut Vec<u8>, name: &str, bytes: &[u8], _len: usize) {
    out.push(b',');
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            json_str(out, name);
            out.push(b':');
            json_str(out, text);
        }
        Err(_) => {
            json_str(out, &format!("{name}_base64"));
            out.extend_from_slice(b":\"");
            base64(out, bytes);
            out.push(b'"');
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63]);
        out.push(ALPHABET[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// An event time for messages: epoch millis and, when in range, RFC 3339.
fn event_time_text(ts: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts) {
        Some(t) => format!(
            "{ts} ({})",
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        None => ts.to_string(),
    }
}

/// A span of milliseconds in the largest unit it reaches, to a tenth: `750 ms`,
/// `12.5 s`, `3.0 min`, `1.9 h`, `2913913.6 days`; a whole number of that unit shows
/// none (`1 h`).
fn human_ms(ms: i128) -> String {
    const UNITS: [(i128, &str); 4] = [
        (86_400_000, "days"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size {
            if ms % size == 0 {
                return format!("{} {unit}", ms / size);
            }
            return format!("{:.1} {unit}", ms as f64 / size as f64);
        }
    }
    format!("{ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::KafkaMeta;
    use proptest::prelude::*;

    #[test]
    fn spans_read_in_the_largest_unit_they_reach() {
        for (ms, text) in [
            (750, "750 ms"),
            (1000, "1 s"),
            (12_500, "12.5 s"),
            (3_600_000, "1 h"),
            (7_140_000, "2.0 h"),
            (5_400_000, "1.5 h"),
            (86_400_000 * 3, "3 days"),
        ] {
            assert_eq!(human_ms(ms), text);
        }
        assert_eq!(
            event_time_text(1_700_000_000_000),
            "1700000000000 (2023-11-14T22:13:20.000Z)"
        );
        assert_eq!(event_time_text(i64::MAX), i64::MAX.to_string());
    }
    use serde_json::Value;

    fn unbase64(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let mut out = Vec::new();
        for chunk in s.as_bytes().chunks(4) {
            let pad = chunk.iter().filter(|&&c| c == b'=').count();
            let mut n = 0u32;
            for &c in chunk {
                n = (n << 6) | if c == b'=' { 0 } else { u32::from(val(c)) };
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        out
    }

    /// The bytes a dead letter keeps under `name` (`name` or `name_base64`).
    fn bytes_of(v: &Value, name: &str) -> Option<Vec<u8>> {
        if let Some(s) = v.get(name).and_then(Value::as_str) {
            return Some(s.as_bytes().to_vec());
        }
        v.get(format!("{name}_base64"))
            .and_then(Value::as_str)
            .map(unbase64)
    }

    fn letter(rec: &Record<'_>, budget: Option<usize>) -> (Value, usize, bool) {
        let mut out = Vec::new();
        let truncated = dead_letter_json(&mut out, "bad", "src", rec, budget);
        let v: Value = serde_json::from_slice(&out).expect("a dead letter is JSON");
        (v, out.len(), truncated)
    }

    #[test]
    fn base64_is_the_standard_padded_alphabet() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            let mut out = Vec::new();
            base64(&mut out, raw);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn dead_letters_keep_the_record_byte_exact() {
        // Text, with what JSON must escape.
        let text = "{\"a\": \"\u{0}\\\"\u{7f}é\u{1F600}\n\"";
        let (v, _, t) = letter(&Record::new(2, 9, text.as_bytes()), None);
        assert!(!t);
        assert_eq!(v["raw"], text);
        assert_eq!(
            (v["partition"].clone(), v["offset"].clone()),
            (2.into(), 9.into())
        );
        assert!(v.get("raw_base64").is_none() && v.get("key").is_none());
        // Not UTF-8: base64.
        let bin = b"{\"a\":\"\xff\xc3\x28\"}";
        let (v, _, _) = letter(&Record::new(0, 0, bin), None);
        assert!(v.get("raw").is_none());
        assert_eq!(bytes_of(&v, "raw").unwrap(), bin);
    }

    #[test]
    fn kafka_dead_letters_keep_key_and_headers() {
        let mut headers = Vec::new();
        KafkaMeta::encode_header(&mut headers, b"trace", Some(b"abc"));
        KafkaMeta::encode_header(&mut headers, b"bin", Some(b"\x00\xff"));
        KafkaMeta::encode_header(&mut headers, b"flag", None);
        let rec = Record {
            partition: 1,
            offset: 5,
            payload: b"nope",
            kafka: Some(KafkaMeta {
                tombstone: false,
                key: Some(b"\xfe\x01"),
                headers: &headers,
            }),
        };
        let (v, _, _) = letter(&rec, Some(1_000_000));
        assert_eq!(v["raw"], "nope");
        assert_eq!(bytes_of(&v, "key").unwrap(), b"\xfe\x01");
        let h = v["headers"].as_array().unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(
            (h[0]["name"].clone(), h[0]["value"].clone()),
            ("trace".into(), "abc".into())
        );
        assert_eq!(bytes_of(&h[1], "value").unwrap(), b"\x00\xff");
        assert_eq!(h[2]["value"], Value::Null);
        // A tombstone: no value at all, told apart from an empty value.
        let tomb = Record {
            payload: b"",
            kafka: Some(KafkaMeta {
                tombstone: true,
                key: Some(b"user-1"),
                headers: &[],
            }),
            ..rec
        };
        let (v, _, _) = letter(&tomb, None);
        assert_eq!(v["raw"], Value::Null);
        assert_eq!(v["key"], "user-1");
        assert!(v.get("headers").is_none());
        let empty = Record {
            kafka: Some(KafkaMeta {
                tombstone: false,
                ..tomb.kafka.unwrap()
            }),
            ..tomb
        };
        assert_eq!(letter(&empty, None).0["raw"], "");
    }

    #[test]
    fn a_poison_pill_is_truncated_to_fit_its_output() {
        // 900 KB of quotes: legal in, 1.8 MB once escaped.
        let big = vec![b'"'; 900_000];
        let budget = 1_000_000 - 1024;
        let (v, len, truncated) = letter(&Record::new(0, 42, &big), Some(budget));
        assert!(truncated && len <= budget, "{len}");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["raw_size"], 900_000);
        assert_eq!(v["offset"], 42);
        let kept = bytes_of(&v, "raw").unwrap();
        assert!(
            kept.len() > budget / 2 - 100 && big.starts_with(&kept),
            "{}",
            kept.len()
        );
        // A huge key and headers give way first.
        let key = vec![b'k'; 600_000];
        let mut headers = Vec::new();
        KafkaMeta::encode_header(&mut headers, b"h", Some(&[b'x'; 600_000]));
        let rec = Record {
            partition: 0,
            offset: 1,
            payload: b"{}",
            kafka: Some(KafkaMeta {
                tombstone: false,
                key: Some(&key),
                headers: &headers,
            }),
        };
        let (v, len, truncated) = letter(&rec, Some(budget));
        assert!(truncated && len <= budget);
        assert_eq!(v["raw"], "{}");
        assert_eq!(v["key_size"], 600_000);
        assert_eq!(v["headers_size"], headers.len());
        // Multi-byte text is cut at a character boundary.
        let text = "é".repeat(400_000);
        let (v, len, _) = letter(&Record::new(0, 0, text.as_bytes()), Some(100_000));
        assert!(len <= 100_000);
        assert!(text.starts_with(v["raw"].as_str().unwrap()));
    }

    proptest! {
        #[test]
        fn any_record_gives_a_dead_letter_that_fits_and_keeps_its_bytes(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            text in ".{0,300}",
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
            budget in proptest::option::of(300usize..4000),
            use_text in any::<bool>(),
        ) {
            let payload = if use_text { text.into_bytes() } else { payload };
            let rec = Record {
                partition: 0,
                offset: 3,
                payload: &payload,
                kafka: key.as_deref().map(|k| KafkaMeta { tombstone: false, key: Some(k), headers: &[] }),
            };
            let (v, len, truncated) = letter(&rec, budget);
            if let Some(b) = budget {
                prop_assert!(len <= b, "{} > {}", len, b);
            }
            let kept = bytes_of(&v, "raw").unwrap();
            if truncated {
                prop_assert!(payload.starts_with(&kept) || v.get("key_size").is_some());
            } else {
                prop_assert_eq!(&kept, &payload);
                if let Some(k) = &key {
                    prop_assert_eq!(&bytes_of(&v, "key").unwrap(), k);
                }
            }
        }
    }
}
