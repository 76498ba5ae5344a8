//! The contract between generated code and the runtime: the generated `Job` implements
//! [`Pipeline`] (one fused function per source, the watermark calls, the state contract)
//! and the driver calls it with each [`Record`] and every watermark advance.

use crate::driver::Context;

/// One input record as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Partition of the source (0 for `file` and `datagen`).
    pub partition: u32,
    /// Position in the partition (`file`: 0-based line number; `datagen`: event index).
    pub offset: u64,
    /// The raw bytes (a JSON line without its newline; a Kafka message's value).
    pub payload: &'a [u8],
    /// A Kafka message's key, headers and whether it had a value at all (None for files
    /// and datagen): kept so a dead letter can carry the record whole.
    pub kafka: Option<KafkaMeta<'a>>,
}

impl<'a> Record<'a> {
    /// A record without Kafka metadata.
    pub fn new(partition: u32, offset: u64, payload: &'a [u8]) -> Self {
        Record {
            partition,
            offset,
            payload,
            kafka: None,
        }
    }
}

/// What a Kafka message carried besides its value.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaMeta<'a> {
    /// The message had no value (a tombstone); `payload` is then empty. An empty value
    /// is not a tombstone.
    pub tombstone: bool,
    /// The message key, if it had one.
    pub key: Option<&'a [u8]>,
    /// The headers in order, encoded as by [`KafkaMeta::encode_header`]; read them with
    /// [`KafkaMeta::headers`].
    pub headers: &'a [u8],
}

impl<'a> KafkaMeta<'a> {
    /// Appends one header (`value` None: a header without a value) to `out`.
    pub fn encode_header(out: &mut Vec<u8>, name: &[u8], value: Option<&[u8]>) {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        match value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }

    /// The headers, in order: (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut rest: &'a [u8] = self.headers;
        std::iter::from_fn(move || {
            let take = |rest: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
                if rest.len() < n {
                    return None;
                }
                let (a, b) = rest.split_at(n);
                *rest = b;
                Some(a)
            };
            let len = |rest: &mut &'a [u8]| -> Option<usize> {
                let b = take(rest, 4)?;
                Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            };
            let n = len(&mut rest)?;
            let name = take(&mut rest, n)?;
            let flag = take(&mut rest, 1)?;
            let value = if flag[0] == 1 {
                let n = len(&mut rest)?;
                Some(take(&mut rest, n)?)
            } else {
                None
            };
            Some((name, value))
        })
    }
}

/// The generated part of a job: one fused loop per source.
pub trait Pipeline {
    /// Parses, validates and processes one record of source `src` through every flow
    /// fed by it (filter, map, key, window assignment, accumulation, emission).
    /// Returns the record's event time, or None when it was invalid (and already sent
    /// to the dead letter output through `ctx`).
    fn on_record(&mut self, src: usize, rec: &Record<'_>, ctx: &mut Context) -> Option<i64>;

    /// Source `src`'s task watermark advanced to `wm` (WATERMARK_MAX at the end of a
    /// bounded source): fire and purge windows of every flow fed by it that follows the
    /// task watermark, transitively.
    fn on_watermark(&mut self, src: usize, wm: i64, ctx: &mut Context);

    /// The watermark of partition `partition` of source `src` advanced to `wm`
    /// (`W = max event time - max_out_of_orderness` of that partition; idleness does
    /// not apply; WATERMARK_MAX at its end): fire and purge the windows of the
    /// partition-aligned flows of that partition. Called before the task watermark
    /// advance the same event causes, and only for sources whose `SourceSpec::groups`
    /// has `partitions`. The default does nothing.
    fn on_partition_watermark(&mut self, src: usize, partition: u32, wm: i64, ctx: &mut Context) {
        let _ = (src, partition, wm, ctx);
    }

    /// The smallest event time of partition `partition` of source `src` whose records
    /// may still affect a result: every record with an event time below it has had all its windows fire
    /// AND be purged (past allowed lateness), in every flow fed by the source,
    /// transitively (a downstream window holding rows derived from the source counts);
    /// `i64::MAX` when no window state is held (a flow without windows holds nothing:
    /// its rows are written at once). Typically the minimum of
    /// `WindowOperator::oldest_held_start` over those windows (None = `i64::MAX`).
    ///
    /// The driver commits a Kafka partition's offsets only up to the first record whose
    /// event time may be held (at-least-once: a restart re-reads held records and
    /// rebuilds the window state from them). Called once per poll of such a source, so
    /// it must be cheap (no scan over keys). The default, `i64::MIN`, holds everything:
    /// nothing read since the last commit is ever committed.
    fn held_from(&self, src: usize, partition: u32) -> i64 {
        let _ = (src, partition);
        i64::MIN
    }

    /// Per windowed flow reading a source (flow index as in `JobSpec::flows`): the
    /// events held in its windows that have not fired, each counted once. What a stop
    /// by a signal leaves out of the results, for the summary; called once, at the
    /// stop, and may scan the state. The default: not counted (empty).
    fn unfired_events(&self) -> Vec<(usize, u64)> {
        Vec::new()
    }

    /// The state contract: every stateful operator's state by key group, for the driver
    /// to snapshot, drop and restore (checkpoints, rebalances). The default: no state.
    fn state(&mut self) -> Vec<&mut dyn crate::state::GroupState> {
        Vec::new()
    }
}
