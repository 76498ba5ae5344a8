//! Sources: the embedded `file` (JSON lines, bounded) and `datagen`, and Kafka
//! (`crate::kafka`, with the `kafka` feature).
//!
//! The driver polls each [`Source`] for a [`Batch`] of records. A batch owns one byte
//! buffer that every payload is appended to, reused from poll to poll: reading a record
//! allocates nothing once the buffer has grown to the batch size. A record carries its
//! partition and offset; [`Poll`] tells the driver whether more records are ready at
//! once, none are ready right now (and when to ask again), or the source has ended.
//!
//! A batch also carries what changed about the source's partitions in that poll:
//! assignments and revocations (Kafka rebalances, applied before the batch's records),
//! partitions that ended, and whether a partition is caught up with its end (for
//! idleness, see `watermark.rs`). Sources whose offsets the runtime commits (Kafka) are
//! told which records were processed ([`Source::processed`]) and when to commit
//! ([`Source::commit`]); `file` and `datagen` ignore both.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{RngExt as _, SeedableRng as _};
use rand_pcg::Pcg64Mcg;

use crate::pipeline::Record;

/// A schema field type, as the datagen needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the spec's type names
pub enum FieldType {
    Bool,
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    String,
    /// Epoch milliseconds.
    Timestamp,
}

/// A schema field, for the datagen.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// The field's name in the JSON object.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// `T?`: null about 10% of the time (never for key or event-time fields).
    pub nullable: bool,
    /// Some flow keys by this field: draw it from `DatagenSpec::keys` values.
    pub key: bool,
}

/// Settings of a `datagen` source (times in milliseconds).
#[derive(Clone, Debug)]
pub struct DatagenSpec {
    /// Events per second of wall clock; 0 = as fast as possible (event time then
    /// advances 1 ms per event).
    pub rate: u64,
    /// Distinct values of each key field.
    pub keys: u64,
    /// Events are out of order by up to this much.
    pub max_delay: i64,
    /// Fraction of events made too late for every flow.
    pub late_fraction: f64,
    /// Seed of the generator: same seed (and `start`), same events.
    pub seed: u64,
    /// Stop after this many events (bounded); None = unbounded.
    pub count: Option<u64>,
    /// Event time of the first event; None = wall clock at start.
    pub start: Option<i64>,
    /// How far behind the newest event time so far a late event is placed.
    pub late_delay: i64,
    /// The fields of each event, in order.
    pub schema: Vec<FieldSpec>,
    /// Index into `schema` of the event-time field.
    pub event_time: usize,
}

/// Where a Kafka source starts when its consumer group has no committed offset for a
/// partition (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KafkaStart {
    /// From the oldest record still in the partition.
    #[default]
    Earliest,
    /// From the next record produced after the job starts.
    Latest,
}

impl std::fmt::Display for KafkaStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KafkaStart::Earliest => "earliest",
            KafkaStart::Latest => "latest",
        })
    }
}

/// Settings of a `kafka` source. The brokers come from `--brokers`, `STREAMC_BROKERS`,
/// a `bootstrap.servers` property, or `127.0.0.1:9092`, in that order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KafkaSourceSpec {
    /// The topic to read (all of its partitions, shared with the consumer group).
    pub topic: String,
    /// The consumer group (`group.id`); `--group-id SOURCE=ID` overrides it.
    pub group_id: String,
    /// Where to start without a committed offset.
    pub start: KafkaStart,
    /// librdkafka consumer properties, passed through as is; they override the
    /// runtime's defaults (not its offset management: `enable.auto.commit=true` and
    /// `enable.partition.eof=false` are refused).
    pub properties: Vec<(String, String)>,
    /// Static membership: the consumer joins with `group.instance.id =
    /// <group id>-<instance id>`, so a restarted instance gets its partitions back at
    /// once (no rebalance while it is away, up to `session.timeout.ms`).
    pub static_membership: bool,
}

/// What a source reads.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// JSON lines; bounded. `offset` of a record is its 0-based line number. A path of
    /// `-` reads standard input.
    File {
        /// Absolute, or relative to the working directory.
        path: String,
    },
    /// Generated events.
    Datagen(DatagenSpec),
    /// A Kafka topic (unbounded). Needs the runtime's `kafka` feature; without it,
    /// opening the source fails with a clear error.
    Kafka(KafkaSourceSpec),
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::File { path } => write!(f, "file {path}"),
            SourceKind::Datagen(d) => match d.rate {
                0 => f.write_str("datagen"),
                rate => write!(f, "datagen {rate}/s"),
            },
            SourceKind::Kafka(k) => write!(f, "kafka topic {} (group {})", k.topic, k.group_id),
        }
    }
}

/// A named source of the job with its watermark settings (milliseconds).
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// The source's name in the spec.
    pub name: &'static str,
    /// What it reads.
    pub kind: SourceKind,
    /// Watermark lag behind the largest event time of a partition.
    pub max_out_of_orderness: i64,
    /// A partition without data this long stops holding the watermark back.
    pub idle_timeout: Option<i64>,
    /// Index into `JobSpec::dead_letters`.
    pub dead_letter: usize,
    /// The key groups of the state its flows keep.
    pub groups: SourceGroups,
}

/// The key groups that the flows reading a source keep state in (`state::KeyGroup`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceGroups {
    /// The fields the source's producers partition by (`partitioned_by`).
    pub partitioned_by: Vec<&'static str>,
    /// Some partition-aligned flow reads it: state per partition that follows the
    /// partition's watermark (the driver reports every partition watermark advance).
    pub partitions: bool,
    /// Some stateful flow that is not aligned reads it (directly or downstream): task
    /// state, which needs every partition of the source in one instance.
    pub task: bool,
}

/// Why a source failed (not a bad record: those go to the dead-letter output).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The input's path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Reading the input failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The input's path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Errors of sources that are not plain I/O (Kafka).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl SourceError {
    /// An error with this message.
    pub fn msg(msg: impl Into<String>) -> Self {
        SourceError::Other(msg.into().into())
    }
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    partition: u32,
    offset: u64,
    start: usize,
    end: usize,
    kafka: Option<KafkaSpans>,
}

/// Where a Kafka record's key and headers are in a batch's buffer.
#[derive(Clone, Copy, Debug)]
struct KafkaSpans {
    tombstone: bool,
    key: Option<(usize, usize)>,
    headers: (usize, usize),
}

/// A change of a source's partitions reported with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionChange {
    /// The partition is now read by this task (Kafka: assigned in a rebalance).
    Assigned(u32),
    /// The partition is no longer read by this task (Kafka: revoked). Records of it
    /// polled before the revocation are not in the batch (the next owner reads them
    /// again from the committed offset).
    Revoked(u32),
}

/// Records of one poll. Payloads live in one reused buffer.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    records: Vec<Meta>,
    ended: Vec<u32>,
    changes: Vec<PartitionChange>,
    caught_up: Vec<(u32, bool)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.ended.clear();
        self.changes.clear();
        self.caught_up.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of payload held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Appends a record with a copy of `payload`.
    pub fn push(&mut self, partition: u32, offset: u64, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.records.push(Meta {
            partition,
            offset,
            start,
            end: self.data.len(),
            kafka: None,
        });
    }

    /// Appends a Kafka message: its value (None: a tombstone), key and headers (name,
    /// value), all copied, so that a dead letter can carry the message whole.
    pub fn push_kafka<'h>(
        &mut self,
        partition: u32,
        offset: u64,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        let start = self.data.len();
        self.data.extend_from_slice(value.unwrap_or_default());
        let end = self.data.len();
        let key = key.map(|k| {
            self.data.extend_from_slice(k);
            (end, self.data.len())
        });
        let h = self.data.len();
        for (name, v) in headers {
            crate::pipeline::KafkaMeta::encode_header(&mut self.data, name, v);
        }
        self.records.push(Meta {
            partition,
            offset,
            start,
            end,
            kafka: Some(KafkaSpans {
                tombstone: value.is_none(),
                key,
                headers: (h, self.data.len()),
            }),
        });
    }

    fn record(&self, m: &Meta) -> Record<'_> {
        Record {
            partition: m.partition,
            offset: m.offset,
            payload: &self.data[m.start..m.end],
            kafka: m.kafka.map(|k| crate::pipeline::KafkaMeta {
                tombstone: k.tombstone,
                key: k.key.map(|(a, b)| &self.data[a..b]),
                headers: &self.data[k.headers.0..k.headers.1],
            }),
        }
    }

    /// Appends a record whose payload `write` appends to the buffer it is given (which
    /// holds earlier payloads: only append). If `write` returns `Ok(false)` or an error,
    /// what it appended is discarded and no record is added.
    pub fn push_with<E>(
        &mut self,
        partition: u32,
        offset: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let start = self.data.len();
        match write(&mut self.data) {
            Ok(true) => {
                self.records.push(Meta {
                    partition,
                    offset,
                    start,
                    end: self.data.len(),
                    kafka: None,
                });
                Ok(true)
            }
            other => {
                self.data.truncate(start);
                other
            }
        }
    }

    /// Partition `p` reached its end (bounded sources with several partitions).
    pub fn end_partition(&mut self, p: u32) {
        self.ended.push(p);
    }

    /// Partitions that reached their end in this poll, after the batch's records.
    pub fn ended_partitions(&self) -> &[u32] {
        &self.ended
    }

    /// Partition `p` was assigned to this task (in order with revocations; the driver
    /// applies them before the batch's records).
    pub fn assign_partition(&mut self, p: u32) {
        self.changes.push(PartitionChange::Assigned(p));
    }

    /// Partition `p` was revoked: its records already in the batch are removed (they
    /// were not processed, so they are not committed and the partition's next reader
    /// gets them again).
    pub fn revoke_partition(&mut self, p: u32) {
        self.records.retain(|m| m.partition != p);
        self.changes.push(PartitionChange::Revoked(p));
    }

    /// Assignments and revocations of this poll, in order.
    pub fn partition_changes(&self) -> &[PartitionChange] {
        &self.changes
    }

    /// Whether partition `p` is caught up with its end after this batch's records
    /// (Kafka: the consumer's position has reached the high watermark). Only changes
    /// need to be reported; partitions are caught up unless a source says otherwise.
    pub fn set_caught_up(&mut self, p: u32, caught_up: bool) {
        self.caught_up.push((p, caught_up));
    }

    /// Caught-up statuses reported in this poll, in order (the driver applies them
    /// after the batch's records).
    pub fn caught_up(&self) -> &[(u32, bool)] {
        &self.caught_up
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        self.records.get(i).map(|m| self.record(m))
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        self.records.iter().map(|m| self.record(m))
    }
}

/// What a poll found, besides the records it put in the batch (which the driver always
/// processes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// More records may be ready at once: poll again without waiting.
    More,
    /// Nothing more right now. Poll again at `retry_at`, or after a short backoff when
    /// None.
    Pending {
        /// When data is expected (datagen pacing), if known.
        retry_at: Option<Instant>,
    },
    /// The source has ended: no records follow this batch's. Every partition is at its
    /// end (watermark `WATERMARK_MAX`).
    Finished,
}

/// Limits of one poll.
#[derive(Clone, Copy, Debug)]
pub struct PollLimits {
    /// At most this many records.
    pub max_records: usize,
    /// Stop adding records once the batch holds this many payload bytes.
    pub max_bytes: usize,
}

impl Default for PollLimits {
    fn default() -> Self {
        PollLimits {
            max_records: 1024,
            max_bytes: 1 << 20,
        }
    }
}

/// A run of processed records of one partition, reported to sources that track
/// offsets: consecutive records of one batch, offsets `first..next` (gaps allowed),
/// with the largest event time among them (`i64::MIN` when none had one: invalid
/// records, already dead-lettered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processed {
    /// The partition.
    pub partition: u32,
    /// Offset of the run's first record.
    pub first: u64,
    /// One past the offset of its last record.
    pub next: u64,
    /// Largest event time of its records (`i64::MIN`: none).
    pub max_event_time: i64,
    /// The partition's watermark after the batch (`WATERMARK_MIN`: none yet).
    pub watermark: i64,
    /// The partition's watermark before the run's first record: without checkpoints a
    /// Kafka source commits, with an offset, the watermark its record was judged
    /// against, so a restart replays from there exactly.
    pub watermark_before: i64,
}

/// Per-partition figures of a source for metrics (Kafka).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// Records between the position and the high watermark (None until both are known).
    pub lag: Option<i64>,
    /// The last offset committed for the partition by this job.
    pub committed: Option<i64>,
}

/// A source of records, polled by the driver in batches.
///
/// Only `partitions` and `poll` are required; the rest is for sources whose offsets the
/// runtime commits (Kafka).
pub trait Source {
    /// Partitions known now, numbered `0..n` (a source may report assignments later;
    /// the driver tracks a partition from its assignment or first record). Kafka: 0.
    fn partitions(&self) -> u32;

    /// Appends up to `limits` records to `batch` (which the driver has cleared). Must not
    /// block for long: return `Poll::Pending` when no data is available.
    fn poll(&mut self, batch: &mut Batch, limits: PollLimits) -> Result<Poll, SourceError>;

    /// Whether the driver reports processed records ([`Source::processed`]) and asks
    /// for commits ([`Source::commit`]). False for `file` and `datagen`.
    fn tracks_offsets(&self) -> bool {
        false
    }

    /// The records of the last batch have been processed, as `runs`; `held_from` is
    /// `Pipeline::held_from` of this source now (a revocation during the next poll
    /// commits with it).
    fn processed(&mut self, runs: &[Processed], held_from: i64) {
        let _ = (runs, held_from);
    }

    /// Commits, per assigned partition, the offset of the first processed record that
    /// may still affect a result (event time >= `held_from`), or the position when none
    /// may. The driver has made sure every output written so far is delivered.
    /// `sync`: wait for the broker (shutdown); else asynchronous. `metadata`: the string
    /// to commit with each partition's offset (`streamc1;wm=<i64>;pos=<u64>`; a
    /// partition missing from it gets the source's own, see `kafka/consumer.rs`; the
    /// commits a source makes on its own, before a revocation completes, use its own
    /// too). Kafka
    /// sources of an exactly-once job commit nothing here: their offsets are committed
    /// in the epoch's transaction.
    fn commit(
        &mut self,
        held_from: i64,
        sync: bool,
        metadata: &CommitMetadata,
    ) -> Result<(), SourceError> {
        let _ = (held_from, sync, metadata);
        Ok(())
    }

    /// Appends per-partition figures for metrics (consumer lag, committed offset).
    fn partition_stats(&self, out: &mut Vec<PartitionStats>) {
        let _ = out;
    }

    /// The job failed (or lost its output): commit nothing more, not even when the
    /// source is closed and gives up its partitions. Results of records processed
    /// since the last commit may be lost, so they must be read again.
    fn stop_committing(&mut self) {}

    /// The Kafka consumer behind this source, for the exactly-once protocol (committed
    /// offsets with metadata, group metadata, seeks). None: not a Kafka source.
    fn kafka(&mut self) -> Option<&mut dyn crate::kafka::ConsumerControl> {
        None
    }

    /// Per partition, the position of the next record to read (a checkpoint's source
    /// positions). Kafka: one past the last record reported processed, per assigned
    /// partition. Default: none.
    fn positions(&self) -> Vec<(u32, u64)> {
        Vec::new()
    }

    /// Moves to `positions` (partition, next record) before anything is read: a restore
    /// from a checkpoint of a source that is not Kafka (Kafka seeks through
    /// [`Source::kafka`]). Default: refused.
    fn restore_positions(&mut self, positions: &[(u32, u64)]) -> Result<(), SourceError> {
        match positions {
            [] => Ok(()),
            _ => Err(SourceError::msg(
                "this source cannot resume from a checkpoint position",
            )),
        }
    }
}

/// Per-partition metadata strings of an offset commit, by partition
/// ([`Source::commit`]).
pub type CommitMetadata = std::collections::BTreeMap<u32, String>;

/// JSON lines from a file (or stdin for `-`), one partition (0), bounded. Offsets are
/// 0-based physical line numbers; blank lines are skipped (but counted); a last line
/// without a newline counts; the `\n` (and a `\r` before it) is not part of the payload.
/// Lines are not validated here: invalid UTF-8 or JSON is the pipeline's to dead-letter.
///
/// Standard input is read by a thread of its own, so that a job fed live through a pipe
/// (`producer | job --input src=-`) processes lines as they arrive and never blocks
/// the driver: with nothing to read, `poll` says `Pending` (sinks are still flushed,
/// progress still reported) and the reader wakes the driver when data comes.
pub struct FileSource {
    path: String,
    reader: BufReader<Box<dyn Read>>,
    /// Standard input: what the reader thread has handed over.
    live: Option<std::sync::Arc<Live>>,
    line: u64,
    done: bool,
}

/// Chunks of standard input read by a thread, for [`FileSource`].
struct Live {
    state: std::sync::Mutex<LiveState>,
    arrived: std::sync::Condvar,
}

#[derive(Default)]
struct LiveState {
    chunks: std::collections::VecDeque<Vec<u8>>,
    /// End of input (or a read error, kept for the reader).
    ended: Option<Option<io::Error>>,
}

impl Live {
    /// Reads `input` on a thread; every chunk wakes `wake` (the driver's thread).
    fn start(mut input: Box<dyn Read + Send>, wake: std::thread::Thread) -> std::sync::Arc<Self> {
        let live = std::sync::Arc::new(Live {
            state: std::sync::Mutex::new(LiveState::default()),
            arrived: std::sync::Condvar::new(),
        });
        let shared = std::sync::Arc::clone(&live);
        let spawned = std::thread::Builder::new()
            .name("streamc-stdin".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let r = input.read(&mut buf);
                    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(0) => st.ended = Some(None),
                        Ok(n) => st.chunks.push_back(buf[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => st.ended = Some(Some(e)),
                    }
                    let ended = st.ended.is_some();
                    // At most 16 chunks (1 MB) wait for the driver: backpressure.
                    while st.chunks.len() >= 16 {
                        st = shared.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(st);
                    shared.arrived.notify_all();
                    wake.unpark();
                    if ended {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            live.state.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(Some(e));
        }
        live
    }

    /// Whether a read would not block.
    fn ready(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        !st.chunks.is_empty() || st.ended.is_some()
    }
}

/// The reading side of [`Live`] (blocks only when nothing has arrived, which `poll`
/// avoids by asking [`Live::ready`] first).
struct LiveReader(std::sync::Arc<Live>);

impl Read for LiveReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(mut chunk) = st.chunks.pop_front() {
                let n = chunk.len().min(out.len());
                out[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunk.drain(..n);
                    st.chunks.push_front(chunk);
                }
                drop(st);
                self.0.arrived.notify_all();
                return Ok(n);
            }
            match &mut st.ended {
                Some(e) => {
                    return match e.take() {
                        Some(e) => Err(e),
                        None => Ok(0),
                    };
                }
                None => st = self.0.arrived.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

impl FileSource {
    /// Opens `path` (`-` = standard input, read on a thread of its own).
    pub fn open(path: &str) -> Result<Self, SourceError> {
        if path == "-" {
            return Ok(Self::live(path, Box::new(io::stdin())));
        }
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_reader(path, Box::new(file)))
    }

    fn from_reader(path: &str, inner: Box<dyn Read>) -> Self {
        FileSource {
            path: path.to_owned(),
            reader: BufReader::with_capacity(64 * 1024, inner),
            live: None,
            line: 0,
            done: false,
        }
    }

    /// A source over a pipe read on a thread (`poll` never blocks on it).
    fn live(path: &str, input: Box<dyn Read + Send>) -> Self {
        let live = Live::start(input, std::thread::current());
        let mut s = Self::from_reader(path, Box::new(LiveReader(std::sync::Arc::clone(&live))));
        s.live = Some(live);
        s
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

impl Source for FileSource {
    fn partitions(&self) -> u32 {
        1
    }

    fn poll(&mut self, batch: &mut Batch, limits: PollLimits) -> Result<Poll, SourceError> {
        while !self.done && batch.len() < limits.max_records && batch.bytes() < limits.max_bytes {
            if self.reader.buffer().is_empty()
                && let Some(live) = &self.live
                && !live.ready()
            {
                if batch.is_empty() {
                    // The reader thread wakes the driver when data arrives.
                    return Ok(Poll::Pending {
                        retry_at: Some(Instant::now() + Duration::from_millis(50)),
                    });
                }
                break;
            }
            let reader = &mut self.reader;
            let line = self.line;
            let mut read_any = false;
            let pushed = batch.push_with(0, self.line, |buf| -> io::Result<bool> {
                let start = buf.len();
                if reader.read_until(b'\n', buf)? == 0 {
                    return Ok(false);
                }
                read_any = true;
                // A UTF-8 byte order mark opens the file, not its first event.
                if line == 0 && buf[start..].starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(start..start + 3);
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.len() > start && buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Ok(!is_blank(&buf[start..]))
            });
            match pushed {
                Ok(_) if read_any => self.line += 1,
                Ok(_) => self.done = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(if self.done {
            Poll::Finished
        } else {
            Poll::More
        })
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        vec![(0, self.line)]
    }

    /// Skips the first `line` lines (a restore: they were read before the checkpoint).
    fn restore_positions(&mut self, positions: &[(u32, u64)]) -> Result<(), SourceError> {
        let Some(&(_, line)) = positions.iter().find(|(p, _)| *p == 0) else {
            return Ok(());
        };
        let mut batch = Batch::new();
        while self.line < line && !self.done {
            batch.clear();
            let want = usize::try_from(line - self.line).unwrap_or(usize::MAX);
            let limits = PollLimits {
                max_records: want.min(4096),
                ..PollLimits::default()
            };
            if let Poll::Pending { .. } = self.poll(&mut batch, limits)? {
                // Standard input: wait for more of it.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.line < line {
            return Err(SourceError::msg(format!(
                "{} has {} lines, fewer than the checkpoint's position {line}: is it the same input?",
                self.path, self.line
            )));
        }
        Ok(())
    }
}

/// How the datagen fills one field.
#[derive(Clone, Copy, Debug)]
enum Gen {
    EventTime,
    Key(FieldType),
    Status,
    Path,
    Word,
    Int {
        lo: i64,
        hi: i64,
    },
    Float,
    Bool,
    /// Epoch millis up to a second before the event time.
    NearTime,
}

#[derive(Clone, Debug)]
struct GenField {
    /// `{"name":` or `,"name":`, JSON-escaped.
    prefix: Vec<u8>,
    kind: Gen,
    nullable: bool,
}

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];
const STATUSES: [i64; 13] = [
    200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 500, 503,
];

/// JSON events generated from a schema: seeded and reproducible (same spec and seed,
/// same bytes, when `start` is set), bounded by `count` or unbounded, paced to `rate`
/// events per second of wall clock. One partition (0); the offset is the event's index.
///
/// Event `i` has event time `base + floor(i * 1000 / rate)` (`base + i` at rate 0) minus
/// a random disorder in `[0, max_delay]`, where `base` is `start` or the wall clock at
/// start. A `late_fraction` of events (never the first) is instead placed `late_delay`
/// behind the newest event time generated so far, which makes it too late for every flow
/// when `late_delay` covers out-of-orderness, window extent and allowed lateness. Key
/// fields take `keys` distinct values (integers `0..keys`, strings `"k<n>"`); other
/// fields are random by type (strings `/page/<n>` for fields named like a URL or path,
/// else words; `status`/`code` integers from HTTP statuses; other integers in small
/// ranges; floats in `0..1000` with 2 decimals; timestamps near the event time);
/// optional non-key fields are null about 10% of the time. The event-time field is
/// epoch millis.
pub struct DatagenSource {
    spec: DatagenSpec,
    fields: Vec<GenField>,
    rng: Pcg64Mcg,
    next: u64,
    base: i64,
    newest: Option<i64>,
    started: Instant,
}

impl DatagenSource {
    /// A generator starting now.
    pub fn new(spec: DatagenSpec) -> Self {
        let base = spec.start.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        });
        let fields = spec
            .schema
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut prefix = vec![if i == 0 { b'{' } else { b',' }];
                // Serializing a &str into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut prefix, f.name);
                prefix.push(b':');
                let lname = f.name.to_ascii_lowercase();
                let kind = if i == spec.event_time {
                    Gen::EventTime
                } else if f.key {
                    Gen::Key(f.ty)
                } else {
                    match f.ty {
                        FieldType::Bool => Gen::Bool,
                        FieldType::F32 | FieldType::F64 => Gen::Float,
                        FieldType::Timestamp => Gen::NearTime,
                        FieldType::String
                            if ["url", "path", "page", "uri"]
                                .iter()
                                .any(|w| lname.contains(w)) =>
                        {
                            Gen::Path
                        }
                        FieldType::String => Gen::Word,
                        _ if lname.contains("status") || lname.ends_with("code") => Gen::Status,
                        FieldType::I32 | FieldType::U32 => Gen::Int { lo: 0, hi: 999 },
                        FieldType::I64 | FieldType::U64 => Gen::Int { lo: 0, hi: 999_999 },
                    }
                };
                GenField {
                    prefix,
                    kind,
                    nullable: f.nullable && !f.key && i != spec.event_time,
                }
            })
            .collect();
        DatagenSource {
            rng: Pcg64Mcg::seed_from_u64(spec.seed),
            spec,
            fields,
            next: 0,
            base,
            newest: None,
            started: Instant::now(),
        }
    }

    /// When event `i` is due (rate > 0).
    fn due(&self, i: u64) -> Instant {
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.spec.rate.max(1));
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.started
            .checked_add(Duration::from_nanos(nanos))
            .unwrap_or(self.started + Duration::from_secs(86_400 * 365 * 100))
    }

    /// Event time of event `i` before disorder.
    fn nominal(&self, i: u64) -> i64 {
        let offset = if self.spec.rate == 0 {
            i128::from(i)
        } else {
            i128::from(i) * 1000 / i128::from(self.spec.rate)
        };
        let t = i128::from(self.base) + offset;
        i64::try_from(t).unwrap_or(i64::MAX)
    }

    fn event_time(&mut self, i: u64) -> i64 {
        let late = self.newest.is_some()
            && self.spec.late_fraction > 0.0
            && self.rng.random::<f64>() < self.spec.late_fraction;
        let disorder = if self.spec.max_delay > 0 {
            self.rng.random_range(0..=self.spec.max_delay)
        } else {
            0
        };
        match self.newest {
            Some(newest) if late => newest.saturating_sub(self.spec.late_delay.max(0)),
            _ => {
                let ts = self.nominal(i).saturating_sub(disorder);
                self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
                ts
            }
        }
    }

    /// Writes event `i` as one JSON object.
    fn write_event(&mut self, i: u64, buf: &mut Vec<u8>) {
        let ts = self.event_time(i);
        let keys = self.spec.keys.max(1);
        for f in &self.fields {
            buf.extend_from_slice(&f.prefix);
            if f.nullable && self.rng.random_range(0..10u32) == 0 {
                buf.extend_from_slice(b"null");
                continue;
            }
            // Writing into a Vec cannot fail.
            let _ = match f.kind {
                Gen::EventTime => write!(buf, "{ts}"),
                Gen::Key(ty) => {
                    let n = self.rng.random_range(0..keys);
                    match ty {
                        FieldType::String => write!(buf, "\"k{n}\""),
                        FieldType::Bool => write!(buf, "{}", n % 2 == 1),
                        FieldType::I32 => write!(buf, "{}", n % (i32::MAX as u64 + 1)),
                        FieldType::U32 => write!(buf, "{}", n % (u64::from(u32::MAX) + 1)),
                        FieldType::I64 | FieldType::Timestamp => {
                            write!(buf, "{}", n % (i64::MAX as u64 + 1))
                        }
                        FieldType::U64 => write!(buf, "{n}"),
                        FieldType::F32 | FieldType::F64 => write!(buf, "{n}.0"),
                    }
                }
                Gen::Status => write!(
                    buf,
                    "{}",
                    STATUSES[self.rng.random_range(0..STATUSES.len())]
                ),
                Gen::Path => write!(buf, "\"/page/{}\"", self.rng.random_range(0..100u32)),
                Gen::Word => write!(buf, "\"{}\"", WORDS[self.rng.random_range(0..WORDS.len())]),
                Gen::Int { lo, hi } => write!(buf, "{}", self.rng.random_range(lo..=hi)),
                Gen::Float => {
                    let cents = self.rng.random_range(0..100_000u32);
                    write!(buf, "{}.{:02}", cents / 100, cents % 100)
                }
                Gen::Bool => write!(buf, "{}", self.rng.random::<bool>()),
                Gen::NearTime => write!(
                    buf,
                    "{}",
                    ts.saturating_sub(self.rng.random_range(0..=1000i64))
                ),
            };
        }
        if self.fields.is_empty() {
            buf.push(b'{');
        }
        buf.push(b'}');
    }
}

impl Source for DatagenSource {
    fn partitions(&self) -> u32 {
        1
    }

    fn poll(&mut self, batch: &mut Batch, limits: PollLimits) -> Result<Poll, SourceError> {
        let now = Instant::now();
        loop {
            if self.spec.count.is_some_and(|c| self.next >= c) {
                return Ok(Poll::Finished);
            }
            if batch.len() >= limits.max_records || batch.bytes() >= limits.max_bytes {
                return Ok(Poll::More);
            }
            let i = self.next;
            if self.spec.rate > 0 {
                let due = self.due(i);
                if due > now {
                    return Ok(Poll::Pending {
                        retry_at: Some(due),
                    });
                }
            }
            batch
                .push_with(0, i, |buf| {
                    self.write_event(i, buf);
                    Ok::<_, std::convert::Infallible>(true)
                })
                .unwrap_or_else(|never| match never {});
            self.next += 1;
        }
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        vec![(0, self.next)]
    }

    /// Generates and drops the first `next` events (the sequence is the seed's), and
    /// paces the rest from now.
    fn restore_positions(&mut self, positions: &[(u32, u64)]) -> Result<(), SourceError> {
        let Some(&(_, next)) = positions.iter().find(|(p, _)| *p == 0) else {
            return Ok(());
        };
        let mut scratch = Vec::new();
        while self.next < next {
            scratch.clear();
            self.write_event(self.next, &mut scratch);
            self.next += 1;
        }
        if self.spec.rate > 0 {
            let nanos = u128::from(next) * 1_000_000_000 / u128::from(self.spec.rate);
            let ahead = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            self.started = Instant::now().checked_sub(ahead).unwrap_or(self.started);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_source(content: &[u8]) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, content).unwrap();
        let src = FileSource::open(path.to_str().unwrap()).unwrap();
        (dir, src)
    }

    fn drain(src: &mut dyn Source, limits: PollLimits) -> (Vec<(u64, Vec<u8>)>, usize) {
        let mut batch = Batch::new();
        let mut out = Vec::new();
        for polls in 1.. {
            batch.clear();
            let p = src.poll(&mut batch, limits).unwrap();
            out.extend(batch.iter().map(|r| (r.offset, r.payload.to_vec())));
            if p == Poll::Finished {
                return (out, polls);
            }
            assert!(polls < 10_000);
        }
        unreachable!()
    }

    #[test]
    fn a_byte_order_mark_opens_the_file_and_is_not_part_of_the_first_event() {
        let limits = PollLimits::default();
        let (_d, mut src) =
            file_source(b"\xEF\xBB\xBF{\"a\":1}\r\n{\"a\":2}\n\xEF\xBB\xBF{\"a\":3}\n");
        let (lines, _) = drain(&mut src, limits);
        assert_eq!(
            lines,
            vec![
                (0, b"{\"a\":1}".to_vec()),
                (1, b"{\"a\":2}".to_vec()),
                // Only at the start of the file: elsewhere it is data (and invalid).
                (2, b"\xEF\xBB\xBF{\"a\":3}".to_vec()),
            ]
        );
        // A file that is only a BOM holds no event.
        let (_d, mut src) = file_source(b"\xEF\xBB\xBF");
        assert_eq!(drain(&mut src, limits).0, vec![]);
    }

    #[test]
    fn kafka_records_keep_key_headers_and_tombstones() {
        let mut batch = Batch::new();
        batch.push(0, 0, b"file");
        let h: Vec<(&[u8], Option<&[u8]>)> =
            vec![(b"a", Some(b"1")), (b"\xff", None), (b"", Some(b""))];
        batch.push_kafka(3, 7, Some(b"v"), Some(b"k\x00"), h.clone());
        batch.push_kafka(3, 8, None, None, Vec::new());
        batch.push_kafka(3, 9, Some(b""), Some(b""), Vec::new());
        let recs: Vec<Record<'_>> = batch.iter().collect();
        assert!(recs[0].kafka.is_none());
        let k = recs[1].kafka.unwrap();
        assert_eq!(
            (recs[1].payload, k.key, k.tombstone),
            (&b"v"[..], Some(&b"k\x00"[..]), false)
        );
        assert_eq!(k.headers().collect::<Vec<_>>(), h);
        let t = recs[2].kafka.unwrap();
        assert!(t.tombstone && t.key.is_none() && recs[2].payload.is_empty());
        assert_eq!(t.headers().count(), 0);
        let e = recs[3].kafka.unwrap();
        assert!(!e.tombstone && e.key == Some(&b""[..]) && recs[3].payload.is_empty());
    }

    /// A pipe fed by the test: chunks written to `tx` arrive as reads.
    struct Pipe(std::sync::mpsc::Receiver<Vec<u8>>);

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.recv() {
                Ok(c) => {
                    buf[..c.len()].copy_from_slice(&c);
                    Ok(c.len())
                }
                Err(_) => Ok(0),
            }
        }
    }

    fn poll_until(src: &mut FileSource, want: usize) -> (Vec<u64>, Poll) {
        let mut offsets = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut batch = Batch::new();
            let p = src.poll(&mut batch, PollLimits::default()).unwrap();
            offsets.extend(batch.iter().map(|r| r.offset));
            if offsets.len() >= want || p == Poll::Finished || Instant::now() > deadline {
                return (offsets, p);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_pipe_is_read_as_lines_arrive_and_never_blocks_the_driver() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut src = FileSource::live("-", Box::new(Pipe(rx)));
        // Nothing yet: pending, at once.
        let t = Instant::now();
        let mut batch = Batch::new();
        assert!(matches!(
            src.poll(&mut batch, PollLimits::default()).unwrap(),
            Poll::Pending { .. }
        ));
        assert!(t.elapsed() < Duration::from_secs(1));
        tx.send(b"{\"a\":1}\n{\"a\":2}\n".to_vec()).unwrap();
        assert_eq!(poll_until(&mut src, 2).0, [0, 1]);
        // A line split across two writes.
        tx.send(b"{\"a\":".to_vec()).unwrap();
        tx.send(b"3}\n".to_vec()).unwrap();
        assert_eq!(poll_until(&mut src, 1).0, [2]);
        drop(tx);
        let (rest, p) = poll_until(&mut src, usize::MAX);
        assert!(rest.is_empty());
        assert_eq!(p, Poll::Finished);
    }

    #[test]
    fn file_lines_offsets_blank_lines_and_last_line() {
        let (_d, mut src) =
            file_source(b"{\"a\":1}\n\n  \r\n{\"a\":2}\r\nnot json\n\xff\xfe\n{\"a\":3}");
        let (recs, _) = drain(&mut src, PollLimits::default());
        let expect: Vec<(u64, Vec<u8>)> = vec![
            (0, b"{\"a\":1}".to_vec()),
            (3, b"{\"a\":2}".to_vec()),
            (4, b"not json".to_vec()),
            (5, b"\xff\xfe".to_vec()),
            (6, b"{\"a\":3}".to_vec()),
        ];
        assert_eq!(recs, expect);
        assert_eq!(src.partitions(), 1);
    }

    #[test]
    fn file_in_small_batches() {
        let content: String = (0..100).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        let (_d, mut src) = file_source(content.as_bytes());
        let limits = PollLimits {
            max_records: 7,
            max_bytes: 1 << 20,
        };
        let (recs, polls) = drain(&mut src, limits);
        assert_eq!(recs.len(), 100);
        assert!(polls >= 15);
        for (i, (off, p)) in recs.iter().enumerate() {
            assert_eq!(*off, i as u64);
            assert_eq!(p, format!("{{\"i\":{i}}}").as_bytes());
        }
    }

    #[test]
    fn empty_file_finishes_at_once() {
        let (_d, mut src) = file_source(b"");
        let (recs, polls) = drain(&mut src, PollLimits::default());
        assert!(recs.is_empty());
        assert_eq!(polls, 1);
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let err = FileSource::open("/nonexistent/x.jsonl").err().unwrap();
        assert!(matches!(err, SourceError::Open { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot open /nonexistent/x.jsonl: ")
        );
    }

    #[test]
    fn batch_push_with_discards_on_false_and_error() {
        let mut b = Batch::new();
        b.push(0, 1, b"one");
        assert_eq!(
            b.push_with(0, 2, |buf| {
                buf.extend_from_slice(b"junk");
                Ok::<_, ()>(false)
            }),
            Ok(false)
        );
        assert_eq!(
            b.push_with(0, 3, |buf| {
                buf.extend_from_slice(b"junk");
                Err(())
            }),
            Err(())
        );
        b.push(2, 4, b"two");
        b.end_partition(2);
        let recs: Vec<_> = b
            .iter()
            .map(|r| (r.partition, r.offset, r.payload))
            .collect();
        assert_eq!(recs, vec![(0, 1, &b"one"[..]), (2, 4, &b"two"[..])]);
        assert_eq!(b.get(1).unwrap().payload, b"two");
        assert_eq!(b.ended_partitions(), &[2]);
        b.clear();
        assert!(b.is_empty() && b.ended_partitions().is_empty() && b.bytes() == 0);
    }

    fn schema() -> Vec<FieldSpec> {
        let f = |name, ty, nullable, key| FieldSpec {
            name,
            ty,
            nullable,
            key,
        };
        vec![
            f("user_id", FieldType::U64, false, true),
            f("region", FieldType::String, false, true),
            f("url", FieldType::String, false, false),
            f("word", FieldType::String, true, false),
            f("status", FieldType::I32, false, false),
            f("n", FieldType::I64, false, false),
            f("latency_ms", FieldType::F64, true, false),
            f("ok", FieldType::Bool, false, false),
            f("seen", FieldType::Timestamp, true, false),
            f("ts", FieldType::Timestamp, false, false),
        ]
    }

    fn datagen(count: Option<u64>, rate: u64, late_fraction: f64) -> DatagenSpec {
        DatagenSpec {
            rate,
            keys: 5,
            max_delay: 100,
            late_fraction,
            seed: 42,
            count,
            start: Some(1_700_000_000_000),
            late_delay: 60_000,
            schema: schema(),
            event_time: 9,
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Ev {
        user_id: u64,
        region: String,
        url: String,
        word: Option<String>,
        status: i32,
        n: i64,
        latency_ms: Option<f64>,
        ok: bool,
        seen: Option<i64>,
        ts: i64,
    }

    #[test]
    fn datagen_is_reproducible_and_bounded() {
        let spec = datagen(Some(2000), 0, 0.05);
        let (a, _) = drain(&mut DatagenSource::new(spec.clone()), PollLimits::default());
        let limits = PollLimits {
            max_records: 3,
            max_bytes: 1 << 20,
        };
        let (b, _) = drain(&mut DatagenSource::new(spec.clone()), limits);
        assert_eq!(a.len(), 2000);
        assert_eq!(a, b);
        let mut other = spec;
        other.seed = 43;
        let (c, _) = drain(&mut DatagenSource::new(other), PollLimits::default());
        assert_ne!(a, c);
    }

    #[test]
    fn datagen_events_follow_the_schema() {
        let spec = datagen(Some(5000), 0, 0.0);
        let (recs, _) = drain(&mut DatagenSource::new(spec), PollLimits::default());
        let evs: Vec<Ev> = recs
            .iter()
            .map(|(_, p)| serde_json::from_slice(p).unwrap())
            .collect();
        let mut users = std::collections::BTreeSet::new();
        let mut regions = std::collections::BTreeSet::new();
        let (mut null_words, mut null_seen) = (0, 0);
        for (i, (e, (off, _))) in evs.iter().zip(&recs).enumerate() {
            assert_eq!(*off, i as u64);
            users.insert(e.user_id);
            regions.insert(e.region.clone());
            assert!(e.url.starts_with("/page/"));
            assert!(e.status >= 200 && e.status < 600);
            assert!((0..1_000_000).contains(&e.n));
            if let Some(l) = e.latency_ms {
                assert!((0.0..1000.0).contains(&l));
            }
            // Rate 0: 1 ms per event, minus up to max_delay.
            let nominal = 1_700_000_000_000 + i as i64;
            assert!(
                e.ts <= nominal && e.ts >= nominal - 100,
                "{} {}",
                e.ts,
                nominal
            );
            if let Some(s) = e.seen {
                assert!(s <= e.ts && s >= e.ts - 1000);
            } else {
                null_seen += 1;
            }
            null_words += usize::from(e.word.is_none());
        }
        assert_eq!(users, (0..5).collect());
        assert_eq!(regions, (0..5).map(|n| format!("k{n}")).collect());
        // ~10% nulls.
        for nulls in [null_words, null_seen] {
            assert!((300..=700).contains(&nulls), "{nulls}");
        }
    }

    #[test]
    fn datagen_event_time_follows_rate() {
        let mut spec = datagen(Some(10), 1_000_000, 0.0);
        spec.max_delay = 0;
        spec.rate = 4; // 250 ms apart in event time; pacing is not exercised here
        let mut g = DatagenSource::new(spec);
        let times: Vec<i64> = (0..10).map(|i| g.event_time(i)).collect();
        let expect: Vec<i64> = (0..10).map(|i| 1_700_000_000_000 + i * 250).collect();
        assert_eq!(times, expect);
    }

    #[test]
    fn datagen_late_events_are_behind_the_newest() {
        let spec = datagen(Some(20_000), 0, 0.1);
        let (recs, _) = drain(&mut DatagenSource::new(spec), PollLimits::default());
        let mut newest = 0;
        let mut late = 0;
        for (_, p) in &recs {
            let e: Ev = serde_json::from_slice(p).unwrap();
            if e.ts <= newest - 60_000 {
                late += 1;
                assert_eq!(e.ts, newest - 60_000);
            } else {
                assert!(e.ts > newest - 200);
            }
            newest = newest.max(e.ts);
        }
        assert!((1700..=2300).contains(&late), "{late}");
    }

    #[test]
    fn datagen_is_paced() {
        let mut spec = datagen(Some(30), 200, 0.0);
        spec.start = None;
        let mut g = DatagenSource::new(spec);
        let t0 = Instant::now();
        let mut batch = Batch::new();
        let mut n = 0;
        loop {
            batch.clear();
            let p = g.poll(&mut batch, PollLimits::default()).unwrap();
            n += batch.len();
            match p {
                Poll::Finished => break,
                Poll::Pending { retry_at: Some(t) } => {
                    std::thread::sleep(t.saturating_duration_since(Instant::now()));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(n, 30);
        // 30 events at 200/s: the last is due 145 ms after start.
        assert!(t0.elapsed() >= Duration::from_millis(140));
    }

    #[test]
    fn datagen_with_empty_schema_writes_empty_objects() {
        let mut spec = datagen(Some(2), 0, 0.0);
        spec.schema.clear();
        spec.event_time = 0;
        let (recs, _) = drain(&mut DatagenSource::new(spec), PollLimits::default());
        assert_eq!(recs, vec![(0, b"{}".to_vec()), (1, b"{}".to_vec())]);
    }
}
