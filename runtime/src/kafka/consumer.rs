//! The Kafka source: a `BaseConsumer` in a consumer group, polled without blocking.
//!
//! Rebalances are served inside `BaseConsumer::poll`, on the driver's thread, through
//! [`SourceContext`]: an assignment starts offset tracking for the partition and is
//! reported to the driver (the watermark tracker learns the assigned partitions); a
//! revocation first commits the partition's safe offset synchronously (after waiting
//! for the job's Kafka producers, so the committed records' outputs are delivered),
//! then drops records of the partition already in the batch (not processed, not
//! committed: the next owner reads them) and is reported to the driver (the partition
//! stops holding the watermark back).
//!
//! Records come one per `BaseConsumer::poll` (an event, an `Arc` and a few clock reads
//! each: roughly a tenth of a J1 job's CPU in perf). Reading split partition queues in batches
//! with `rd_kafka_consume_batch_queue` was tried and dropped: librdkafka (2.12) then
//! sets a partition's application position one past a partition-EOF event, and the
//! pause/resume around a cooperative rebalance resumes fetching from there, skipping
//! a record (caught by `a_cooperative_rebalance_loses_nothing`).
//!
//! Caught up (for idleness): librdkafka emits a partition-EOF event when the fetch
//! position reaches the high watermark. A partition is caught up from that event until
//! a record of it arrives or its (cached) high watermark grows past the one seen at the
//! event. Unlike `position >= high watermark`, this is right when a partition ends in
//! transaction markers, which take offsets but are never delivered.
//!
//! Exactly-once mode (`KafkaEnv::transactional_id`): the source commits nothing itself
//! (neither `Source::commit` nor at a revocation): the consumed offsets are committed
//! by the epoch's transaction, with the checkpoint reference as their metadata. The
//! driver reaches the consumer through [`ConsumerControl`] (`Source::kafka`): the
//! group metadata for `send_offsets_to_transaction`, the committed offsets with their
//! metadata (which checkpoint to restore) and seeks (a rollback).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::{
    Committed, ConsumerControl, ConsumerError, DELIVERY_TIMEOUT, GroupMetadata, KafkaEnv,
    OffsetTracker,
};
use crate::source::{
    Batch, CommitMetadata, KafkaSourceSpec, PartitionChange, PartitionStats, Poll, PollLimits,
    Processed, Source, SourceError,
};

/// How often the cached high watermarks are read (lag, caught-up).
const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// How long bounded mode waits for the brokers to tell the end offsets at start.
const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);
/// The same consumer warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What the rebalance callbacks and the source share.
struct Shared {
    /// A rebalance happened: `State::changes` has news.
    changed: AtomicBool,
    /// An assignment (maybe empty) has arrived since the subscription.
    assigned_once: AtomicBool,
    /// The job failed: no more commits (`Source::stop_committing`).
    frozen: AtomicBool,
    state: Mutex<State>,
}

struct State {
    offsets: OffsetTracker,
    /// `Pipeline::held_from` as of the last processed batch.
    held_from: i64,
    /// Assignments and revocations not yet handed to the driver.
    changes: Vec<PartitionChange>,
    /// Per partition: the watermark after the last processed batch (or the restored
    /// one) and the position below which records were processed before a restart.
    marks: std::collections::BTreeMap<u32, (i64, u64)>,
}

impl State {
    /// The metadata to commit with offset `offset` of partition `p`: the caller's if it
    /// gave one, else `streamc1;wm=<watermark>;pos=<position>` (what a restart without
    /// checkpoints resumes from), else none.
    fn metadata_for(&self, p: u32, offset: u64, given: &CommitMetadata) -> Option<String> {
        if let Some(m) = given.get(&p).filter(|m| !m.is_empty()) {
            return Some(m.clone());
        }
        let &(restored, replayed) = self.marks.get(&p)?;
        // The watermark the record at `offset` was judged against (a replay from there
        // judges every record as before), else the restored one (nothing read since).
        let watermark = self.offsets.watermark_at(p, offset).unwrap_or(restored);
        let position = self
            .offsets
            .position(p)
            .unwrap_or(offset)
            .max(offset)
            .max(replayed);
        Some(
            crate::checkpoint::OffsetMetadata::Position {
                watermark,
                position,
            }
            .to_string(),
        )
    }

    /// [`State::metadata_for`] of every offset.
    fn metadata_of(&self, offsets: &[(u32, u64)], given: &CommitMetadata) -> CommitMetadata {
        offsets
            .iter()
            .filter_map(|&(p, o)| Some((p, self.metadata_for(p, o, given)?)))
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The consumer's callbacks (run on the driver's thread, inside `poll`).
pub(crate) struct SourceContext {
    source: &'static str,
    topic: String,
    shared: Arc<Shared>,
    env: KafkaEnv,
    /// Exactly-once: offsets are committed by transactions, never here.
    exactly_once: bool,
}

impl ClientContext for SourceContext {
    /// librdkafka's consumer errors: `poll` returns each of them too, where partition
    /// ends are used and the rest are logged (rate-limited), so nothing more here.
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::debug!(source = self.source, %error, reason, "Kafka consumer error event");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<u32> {
    tpl.elements_for_topic(topic)
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect()
}

impl SourceContext {
    /// Commits the safe offsets of `parts` synchronously, once the job's outputs are
    /// delivered (else not at all: the next owner then reads more again, which is
    /// at-least-once; committing could lose results).
    fn commit_revoked(&self, consumer: &BaseConsumer<SourceContext>, parts: &[u32]) {
        if self.exactly_once || self.shared.frozen.load(Ordering::Acquire) {
            return;
        }
        let (offsets, metadata): (Vec<(u32, u64)>, CommitMetadata) = {
            let mut st = self.shared.lock();
            let held_from = st.held_from;
            let mut offsets = Vec::with_capacity(parts.len());
            for &p in parts {
                // Not when already committed (at shutdown, just before the close).
                if let Some(o) = st.offsets.safe_offset(p, held_from)
                    && st.offsets.committed(p) != Some(o)
                {
                    offsets.push((p, o));
                }
            }
            // The watermarks as of the last processed batch: nothing was processed since.
            let metadata = st.metadata_of(&offsets, &CommitMetadata::new());
            (offsets, metadata)
        };
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = self.env.wait_delivered(DELIVERY_TIMEOUT) {
            tracing::warn!(
                source = self.source,
                topic = %self.topic,
                error = %e,
                "not committing the offsets of revoked partitions: outputs are not delivered"
            );
            return;
        }
        let tpl = match tpl_of(&self.topic, &offsets, &metadata) {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::warn!(source = self.source, error = %e, "cannot build the commit");
                return;
            }
        };
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(
                    source = self.source,
                    topic = %self.topic,
                    offsets = ?offsets,
                    "committed the offsets of revoked partitions"
                );
            }
            Err(e) => tracing::warn!(
                source = self.source,
                topic = %self.topic,
                error = %e,
                "committing the offsets of revoked partitions failed; their next reader re-reads more"
            ),
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions_of(tpl, &self.topic);
            self.commit_revoked(consumer, &parts);
            let mut st = self.shared.lock();
            for &p in &parts {
                st.offsets.revoke(p);
                st.changes.push(PartitionChange::Revoked(p));
            }
            drop(st);
            self.shared.changed.store(true, Ordering::Release);
            if !parts.is_empty() {
                tracing::info!(source = self.source, topic = %self.topic, partitions = ?parts, "partitions revoked");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions_of(tpl, &self.topic);
                self.shared.assigned_once.store(true, Ordering::Release);
                let mut st = self.shared.lock();
                for &p in &parts {
                    st.offsets.assign(p);
                    st.changes.push(PartitionChange::Assigned(p));
                }
                drop(st);
                self.shared.changed.store(true, Ordering::Release);
                if parts.is_empty() {
                    // (Cooperative rebalances end with an empty incremental assignment.)
                    tracing::debug!(source = self.source, topic = %self.topic, "no partitions assigned");
                } else {
                    tracing::info!(source = self.source, topic = %self.topic, partitions = ?parts, "partitions assigned");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::error!(source = self.source, topic = %self.topic, error = %e, "rebalance failed");
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let elems = offsets.elements_for_topic(&self.topic);
        let mut st = self.shared.lock();
        match result {
            Ok(()) => {
                for e in elems {
                    if let (Ok(p), Offset::Offset(o)) = (u32::try_from(e.partition()), e.offset()) {
                        st.offsets.confirmed(p, u64::try_from(o).unwrap_or(0));
                    }
                }
            }
            Err(err) => {
                for e in elems {
                    if let Ok(p) = u32::try_from(e.partition()) {
                        st.offsets.failed(p);
                    }
                }
                drop(st);
                tracing::warn!(source = self.source, topic = %self.topic, error = %err, "offset commit failed; retried at the next commit");
            }
        }
    }
}

/// Commits `tpl` asynchronously; the broker's answer comes back through the consumer's
/// queue, so `poll` hands it to [`SourceContext::commit_callback`] (which confirms the
/// offsets, or asks for them again). `Consumer::commit(.., Async)` would post no answer
/// for a manual commit: librdkafka only logs failures then.
fn commit_async(
    consumer: &BaseConsumer<SourceContext>,
    tpl: &TopicPartitionList,
) -> Result<(), KafkaError> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is valid while `consumer` lives; the queue handle is checked for null
    // and released after the call (the pending commit keeps its own reference to the
    // queue); librdkafka copies `tpl`.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownGroup));
        }
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(err.into()))
    }
}

/// The offsets of `topic` as a partition list, each with its `metadata` (if any).
fn tpl_of(
    topic: &str,
    offsets: &[(u32, u64)],
    metadata: &CommitMetadata,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(p, o) in offsets {
        let md = metadata.get(&p).filter(|m| !m.is_empty());
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        let o = i64::try_from(o).unwrap_or(i64::MAX);
        let mut e = tpl.add_partition(topic, p);
        e.set_offset(Offset::Offset(o))?;
        if let Some(md) = md {
            e.set_metadata(md);
        }
    }
    Ok(tpl)
}

/// One element of a partition list, read without rdkafka's accessors (its `metadata`
/// panics on bytes that are not UTF-8, which another client may have committed).
struct RawElem {
    topic: String,
    partition: i32,
    offset: i64,
    metadata: String,
    error: RDKafkaErrorCode,
}

fn raw_elems(tpl: &TopicPartitionList) -> Vec<RawElem> {
    // SAFETY: `tpl.ptr()` is a valid list owned by `tpl` for this borrow; `elems` has
    // `cnt` initialized elements; each `topic` is a NUL-terminated string and
    // `metadata` points to `metadata_size` bytes (or is null); all are only read.
    unsafe {
        let list = &*tpl.ptr();
        let n = usize::try_from(list.cnt).unwrap_or(0);
        if list.elems.is_null() || n == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(list.elems, n)
            .iter()
            .map(|e| {
                let topic = if e.topic.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(e.topic)
                        .to_string_lossy()
                        .into_owned()
                };
                let metadata = if e.metadata.is_null() || e.metadata_size == 0 {
                    String::new()
                } else {
                    let bytes =
                        std::slice::from_raw_parts(e.metadata.cast::<u8>(), e.metadata_size);
                    String::from_utf8_lossy(bytes).into_owned()
                };
                RawElem {
                    topic,
                    partition: e.partition,
                    offset: e.offset,
                    metadata,
                    error: e.err.into(),
                }
            })
            .collect()
    }
}

/// What the source knows of one partition.
#[derive(Clone, Copy, Debug, Default)]
struct Part {
    assigned: bool,
    /// One past the last record handed out (or the high watermark at a partition end).
    position: Option<i64>,
    /// A partition-end event arrived and nothing since says there is more.
    eof: bool,
    /// The high watermark when the partition-end event arrived.
    high_at_eof: Option<i64>,
    /// The cached high watermark, last read.
    high: Option<i64>,
    /// The caught-up status last reported to the driver.
    reported: Option<bool>,
    /// Bounded mode: the partition has reached its stop offset (and is paused).
    done: bool,
}

impl Part {
    /// Records between the position and `high` (the freshest high watermark known).
    fn lag(&self, high: Option<i64>) -> Option<i64> {
        if self.eof {
            return Some(0);
        }
        Some((high.or(self.high)? - self.position?).max(0))
    }
}

/// A Kafka topic read by a consumer group member.
pub(crate) struct KafkaSource {
    name: &'static str,
    topic: String,
    group_id: String,
    /// Exactly-once: offsets are committed by transactions, never by `commit`.
    exactly_once: bool,
    topic_c: CString,
    consumer: BaseConsumer<SourceContext>,
    shared: Arc<Shared>,
    parts: Vec<Part>,
    /// Bounded mode (`--bounded`): the end offset of each partition when the job
    /// started, by partition (a partition missing here had none: it stops at once).
    stop_at: Option<Vec<i64>>,
    last_refresh: Instant,
    /// The last consumer warning and when it was logged.
    last_warning: Option<(String, Instant)>,
}

impl KafkaSource {
    pub(crate) fn open(
        name: &'static str,
        spec: &KafkaSourceSpec,
        cfg: Vec<(String, String)>,
        env: &KafkaEnv,
    ) -> Result<Self, SourceError> {
        let topic_c = CString::new(spec.topic.as_str())
            .map_err(|_| SourceError::msg(format!("invalid topic name {:?}", spec.topic)))?;
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg {
            cc.set(k, v);
        }
        let shared = Arc::new(Shared {
            changed: AtomicBool::new(false),
            assigned_once: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            state: Mutex::new(State {
                offsets: OffsetTracker::new(),
                held_from: i64::MIN,
                changes: Vec::new(),
                marks: std::collections::BTreeMap::new(),
            }),
        });
        let context = SourceContext {
            source: name,
            topic: spec.topic.clone(),
            shared: Arc::clone(&shared),
            env: env.clone(),
            exactly_once: env.exactly_once(),
        };
        let mut consumer: BaseConsumer<SourceContext> =
            cc.create_with_context(context).map_err(|e| {
                SourceError::msg(format!(
                    "cannot create the Kafka consumer for topic `{}`: {e}",
                    spec.topic
                ))
            })?;
        // The driver naps (`thread::park_timeout`) when no source has data; records (or
        // any event) arriving in the empty consumer queue wake it at once.
        let driver = std::thread::current();
        consumer.set_nonempty_callback(move || driver.unpark());
        let stop_at = if env.bounded {
            Some(Self::end_offsets(&consumer, &spec.topic)?)
        } else {
            None
        };
        consumer.subscribe(&[&spec.topic]).map_err(|e| {
            SourceError::msg(format!(
                "cannot subscribe to Kafka topic `{}`: {e}",
                spec.topic
            ))
        })?;
        tracing::info!(
            source = name,
            topic = %spec.topic,
            group = cc.get("group.id").unwrap_or_default(),
            brokers = cc.get("bootstrap.servers").unwrap_or_default(),
            start = %spec.start,
            stop_at = ?stop_at,
            "Kafka source subscribed"
        );
        Ok(KafkaSource {
            name,
            topic: spec.topic.clone(),
            group_id: cc.get("group.id").unwrap_or_default().to_string(),
            exactly_once: env.exactly_once(),
            topic_c,
            consumer,
            shared,
            parts: Vec::new(),
            stop_at,
            last_refresh: Instant::now(),
            last_warning: None,
        })
    }

    /// The end offsets (high watermarks) of every partition of `topic`, asked of the
    /// brokers (bounded mode).
    fn end_offsets(
        consumer: &BaseConsumer<SourceContext>,
        topic: &str,
    ) -> Result<Vec<i64>, SourceError> {
        let fail = |e: KafkaError| {
            SourceError::msg(format!(
                "--bounded: cannot read the end offsets of Kafka topic `{topic}`: {e}"
            ))
        };
        let md = consumer
            .fetch_metadata(Some(topic), END_OFFSETS_TIMEOUT)
            .map_err(fail)?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(SourceError::msg(format!(
                "--bounded: Kafka topic `{topic}` not found"
            )));
        };
        if let Some(e) = t.error() {
            return Err(fail(KafkaError::MetadataFetch(e.into())));
        }
        let mut ends = vec![0; t.partitions().len()];
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), END_OFFSETS_TIMEOUT)
                .map_err(fail)?;
            if let Ok(i) = usize::try_from(p.id()) {
                if i >= ends.len() {
                    ends.resize(i + 1, 0);
                }
                ends[i] = high.max(0);
            }
        }
        Ok(ends)
    }

    /// Bounded mode: partition `p` is done (it reached its stop offset): it ends for
    /// the driver (its watermark goes to +infinity) and is paused (no more fetching).
    fn finish_partition(&mut self, p: u32, batch: &mut Batch) {
        let Some(part) = self.parts.get_mut(p as usize) else {
            return;
        };
        if part.done {
            return;
        }
        part.done = true;
        batch.end_partition(p);
        tracing::info!(source = self.name, topic = %self.topic, partition = p, "partition read up to its end offset at start");
        let mut tpl = TopicPartitionList::new();
        if let Ok(pi) = i32::try_from(p)
            && tpl
                .add_partition(&self.topic, pi)
                .set_offset(Offset::Stored)
                .is_ok()
            && let Err(e) = self.consumer.pause(&tpl)
        {
            tracing::debug!(source = self.name, partition = p, error = %e, "cannot pause a finished partition");
        }
    }

    /// Bounded mode: the stop offset of partition `p`.
    fn stop_of(&self, p: u32) -> Option<i64> {
        self.stop_at
            .as_ref()
            .map(|ends| ends.get(p as usize).copied().unwrap_or(0))
    }

    /// Bounded mode: every assigned partition is done (and an assignment came).
    fn all_done(&self) -> bool {
        self.stop_at.is_some()
            && self.shared.assigned_once.load(Ordering::Acquire)
            && self.parts.iter().all(|p| !p.assigned || p.done)
    }

    /// The cached high watermark of partition `p` (librdkafka's, from the last fetch
    /// response: no request to the broker).
    fn cached_high(consumer: &BaseConsumer<SourceContext>, topic: &CString, p: u32) -> Option<i64> {
        let (mut low, mut high) = (-1i64, -1i64);
        let partition = i32::try_from(p).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives; `topic` is a
        // NUL-terminated string; `low` and `high` are valid for writes. The call only
        // reads librdkafka's cache under its own locks.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
    }

    /// Hands assignments and revocations from the callbacks to the batch.
    fn apply_changes(shared: &Shared, parts: &mut Vec<Part>, batch: &mut Batch) {
        if !shared.changed.swap(false, Ordering::AcqRel) {
            return;
        }
        let changes = std::mem::take(&mut shared.lock().changes);
        for change in changes {
            match change {
                PartitionChange::Assigned(p) => {
                    let i = p as usize;
                    if i >= parts.len() {
                        parts.resize(i + 1, Part::default());
                    }
                    parts[i] = Part {
                        assigned: true,
                        ..Part::default()
                    };
                    batch.assign_partition(p);
                }
                PartitionChange::Revoked(p) => {
                    if let Some(part) = parts.get_mut(p as usize) {
                        *part = Part::default();
                    }
                    shared.lock().marks.remove(&p);
                    batch.revoke_partition(p);
                }
            }
        }
    }

    fn warn(&mut self, error: &KafkaError) {
        let text = error.to_string();
        let now = Instant::now();
        if let Some((last, at)) = &self.last_warning
            && *last == text
            && now.duration_since(*at) < WARN_EVERY
        {
            return;
        }
        tracing::warn!(source = self.name, topic = %self.topic, error = %text, "Kafka consumer");
        self.last_warning = Some((text, now));
    }

    /// Reads the cached high watermarks and reports caught-up changes.
    fn refresh(&mut self, batch: &mut Batch) {
        self.last_refresh = Instant::now();
        for (p, part) in self.parts.iter_mut().enumerate() {
            if !part.assigned {
                continue;
            }
            let p = p as u32;
            part.high = Self::cached_high(&self.consumer, &self.topic_c, p).or(part.high);
            if part.eof && part.high > part.high_at_eof {
                // New data behind the end we saw: not caught up until the next end.
                part.eof = false;
            }
            if part.reported != Some(part.eof) {
                part.reported = Some(part.eof);
                batch.set_caught_up(p, part.eof);
            }
        }
    }
}

impl Source for KafkaSource {
    fn partitions(&self) -> u32 {
        0
    }

    fn poll(&mut self, batch: &mut Batch, limits: PollLimits) -> Result<Poll, SourceError> {
        let mut full = false;
        let mut ends = false;
        loop {
            if batch.len() >= limits.max_records || batch.bytes() >= limits.max_bytes {
                full = true;
                break;
            }
            let polled = self.consumer.poll(Duration::ZERO);
            // Rebalance callbacks run inside `poll` (and end that call): apply them before
            // the message it returns, if any, which came after them.
            let rebalanced = self.shared.changed.load(Ordering::Acquire);
            if rebalanced {
                Self::apply_changes(&self.shared, &mut self.parts, batch);
            }
            match polled {
                None if rebalanced => {}
                None => break,
                Some(Ok(m)) => {
                    let (Ok(p), Ok(offset)) =
                        (u32::try_from(m.partition()), u64::try_from(m.offset()))
                    else {
                        continue;
                    };
                    let stop = self.stop_of(p);
                    let Some(part) = self.parts.get_mut(p as usize).filter(|s| s.assigned) else {
                        // A record of a partition this consumer no longer owns (it was not
                        // committed: its owner reads it).
                        tracing::debug!(
                            source = self.name,
                            partition = p,
                            offset,
                            "record of an unassigned partition skipped"
                        );
                        continue;
                    };
                    if part.done {
                        continue;
                    }
                    if stop.is_some_and(|stop| m.offset() >= stop) {
                        // Bounded: appended after the job started; not read, not committed.
                        self.finish_partition(p, batch);
                        continue;
                    }
                    part.position = Some(m.offset() + 1);
                    part.eof = false;
                    // Tombstones (no value) are records too: the pipeline dead-letters them,
                    // with the message's key and headers.
                    let headers = m.headers().map(|h| {
                        (0..h.count())
                            .filter_map(|i| h.try_get(i))
                            .map(|h| (h.key.as_bytes(), h.value))
                            .collect::<Vec<_>>()
                    });
                    batch.push_kafka(p, offset, m.payload(), m.key(), headers.unwrap_or_default());
                    if stop.is_some_and(|stop| m.offset() + 1 >= stop) {
                        self.finish_partition(p, batch);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let Ok(p) = u32::try_from(p) else {
                        continue;
                    };
                    let high = Self::cached_high(&self.consumer, &self.topic_c, p);
                    let stop = self.stop_of(p);
                    if let Some(part) = self.parts.get_mut(p as usize).filter(|s| s.assigned) {
                        part.eof = true;
                        part.high_at_eof = high.or(part.high);
                        part.high = part.high_at_eof;
                        if let Some(h) = part.high_at_eof {
                            part.position = Some(part.position.map_or(h, |pos| pos.max(h)));
                        }
                        ends = true;
                        if let (Some(stop), Some(pos)) = (stop, part.position)
                            && pos >= stop
                        {
                            self.finish_partition(p, batch);
                        }
                    }
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(SourceError::msg(format!(
                        "Kafka consumer of topic `{}` failed: {e}",
                        self.topic
                    )));
                }
                Some(Err(e)) => {
                    // Transient or configuration trouble (broker down, topic missing):
                    // librdkafka keeps trying; say so, and keep polling.
                    self.warn(&e);
                    break;
                }
            }
        }
        if ends || self.last_refresh.elapsed() >= REFRESH_EVERY {
            self.refresh(batch);
        }
        if self.all_done() {
            tracing::info!(source = self.name, topic = %self.topic, "bounded: every assigned partition read up to its end offset at start");
            return Ok(Poll::Finished);
        }
        Ok(if full {
            Poll::More
        } else {
            Poll::Pending { retry_at: None }
        })
    }

    fn tracks_offsets(&self) -> bool {
        true
    }

    fn processed(&mut self, runs: &[Processed], held_from: i64) {
        let mut st = self.shared.lock();
        st.held_from = held_from;
        for r in runs {
            st.offsets.processed_with(
                r.partition,
                r.first,
                r.next,
                r.max_event_time,
                r.watermark_before,
                r.watermark,
            );
            let replayed = st.marks.get(&r.partition).map_or(0, |m| m.1);
            st.marks.insert(r.partition, (r.watermark, replayed));
        }
    }

    fn commit(
        &mut self,
        held_from: i64,
        sync: bool,
        metadata: &CommitMetadata,
    ) -> Result<(), SourceError> {
        if self.exactly_once || self.shared.frozen.load(Ordering::Acquire) {
            return Ok(());
        }
        let (offsets, metadata) = {
            let mut st = self.shared.lock();
            st.held_from = held_from;
            let offsets = st.offsets.to_commit(held_from, sync);
            let metadata = st.metadata_of(&offsets, metadata);
            (offsets, metadata)
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = tpl_of(&self.topic, &offsets, &metadata)
            .map_err(|e| SourceError::msg(format!("cannot build an offset commit: {e}")))?;
        let result = if sync {
            self.consumer.commit(&tpl, CommitMode::Sync)
        } else {
            commit_async(&self.consumer, &tpl)
        };
        match result {
            Ok(()) => {
                if sync {
                    let mut st = self.shared.lock();
                    for &(p, o) in &offsets {
                        st.offsets.confirmed(p, o);
                    }
                }
                tracing::debug!(source = self.name, topic = %self.topic, offsets = ?offsets, sync, "offsets committed");
            }
            Err(e) => {
                // Not fatal: the last committed offsets stay (more is re-read after a
                // restart, nothing is lost). Asked again at the next commit.
                let mut st = self.shared.lock();
                for &(p, _) in &offsets {
                    st.offsets.failed(p);
                }
                drop(st);
                tracing::warn!(source = self.name, topic = %self.topic, error = %e, "offset commit failed");
            }
        }
        Ok(())
    }

    fn stop_committing(&mut self) {
        self.shared.frozen.store(true, Ordering::Release);
    }

    fn kafka(&mut self) -> Option<&mut dyn ConsumerControl> {
        Some(self)
    }

    fn partition_stats(&self, out: &mut Vec<PartitionStats>) {
        let st = self.shared.lock();
        for (p, part) in self.parts.iter().enumerate() {
            if !part.assigned {
                continue;
            }
            let p = p as u32;
            // The cached high watermark now (cheap: no request), not as of the last
            // poll: a long batch may have been processed since.
            let high = Self::cached_high(&self.consumer, &self.topic_c, p);
            out.push(PartitionStats {
                partition: p,
                lag: part.lag(high),
                committed: st
                    .offsets
                    .committed(p)
                    .map(|o| i64::try_from(o).unwrap_or(i64::MAX)),
            });
        }
    }
}

impl KafkaSource {
    fn timed_out_or_failed(
        &self,
        what: &'static str,
        e: &KafkaError,
        timeout: Duration,
    ) -> ConsumerError {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
                ConsumerError::TimedOut {
                    what,
                    topic: self.topic.clone(),
                    group: self.group_id.clone(),
                    timeout,
                }
            }
            _ => self.failed(what, e.to_string()),
        }
    }

    fn failed(&self, what: &'static str, message: String) -> ConsumerError {
        ConsumerError::Failed {
            what,
            topic: self.topic.clone(),
            group: self.group_id.clone(),
            message,
        }
    }

    fn partition_list(&self, partitions: &[u32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for &p in partitions {
            tpl.add_partition(&self.topic, i32::try_from(p).unwrap_or(i32::MAX));
        }
        tpl
    }
}

impl ConsumerControl for KafkaSource {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn group_id(&self) -> &str {
        &self.group_id
    }

    fn group_metadata(&self) -> Result<GroupMetadata, ConsumerError> {
        let not_in_group = || ConsumerError::NotInGroup {
            topic: self.topic.clone(),
            group: self.group_id.clone(),
        };
        if !self.shared.assigned_once.load(Ordering::Acquire) {
            return Err(not_in_group());
        }
        let native = self.consumer.group_metadata().ok_or_else(not_in_group)?;
        // rdkafka hides the fields: read them from a second copy (a request to
        // librdkafka's group thread, no broker round trip).
        use rdkafka::bindings as rd;
        // SAFETY: the client pointer is valid while `self.consumer` lives; the copy is
        // checked for null, its strings are read (copied) before it is destroyed once.
        let (member_id, generation) = unsafe {
            let raw = rd::rd_kafka_consumer_group_metadata(self.consumer.client().native_ptr());
            if raw.is_null() {
                return Err(not_in_group());
            }
            let member = rd::rd_kafka_consumer_group_metadata_member_id(raw);
            let member = if member.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(member)
                    .to_string_lossy()
                    .into_owned()
            };
            let generation = rd::rd_kafka_consumer_group_metadata_generation_id(raw);
            rd::rd_kafka_consumer_group_metadata_destroy(raw);
            (member, generation)
        };
        if generation < 0 || member_id.is_empty() {
            // Offsets sent with no generation would not be fenced (KIP-447).
            return Err(not_in_group());
        }
        Ok(GroupMetadata {
            native: Arc::new(native),
            group_id: self.group_id.clone(),
            member_id,
            generation,
        })
    }

    fn committed(
        &self,
        partitions: &[u32],
        timeout: Duration,
    ) -> Result<Vec<Committed>, ConsumerError> {
        const WHAT: &str = "reading the committed offsets";
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let got = self
            .consumer
            .committed_offsets(self.partition_list(partitions), timeout)
            .map_err(|e| self.timed_out_or_failed(WHAT, &e, timeout))?;
        let elems = raw_elems(&got);
        partitions
            .iter()
            .map(|&p| {
                let e = elems
                    .iter()
                    .find(|e| e.topic == self.topic && u32::try_from(e.partition) == Ok(p))
                    .ok_or_else(|| self.failed(WHAT, format!("no answer for partition {p}")))?;
                if e.error != RDKafkaErrorCode::NoError {
                    return Err(self.failed(WHAT, format!("partition {p}: {}", e.error)));
                }
                Ok(Committed {
                    partition: p,
                    offset: u64::try_from(e.offset).ok(),
                    metadata: e.metadata.clone(),
                })
            })
            .collect()
    }

    fn seek(&mut self, offsets: &[(u32, u64)], timeout: Duration) -> Result<(), ConsumerError> {
        const WHAT: &str = "seeking";
        if offsets.is_empty() {
            return Ok(());
        }
        if let Some(&(p, _)) = offsets
            .iter()
            .find(|(p, _)| !self.parts.get(*p as usize).is_some_and(|s| s.assigned))
        {
            return Err(ConsumerError::NotAssigned {
                topic: self.topic.clone(),
                partition: p,
            });
        }
        let tpl = tpl_of(&self.topic, offsets, &CommitMetadata::new())
            .map_err(|e| self.failed(WHAT, e.to_string()))?;
        let result = self
            .consumer
            .seek_partitions(tpl, timeout)
            .map_err(|e| self.timed_out_or_failed(WHAT, &e, timeout))?;
        if let Some(e) = raw_elems(&result)
            .into_iter()
            .find(|e| e.error != RDKafkaErrorCode::NoError)
        {
            return match e.error {
                RDKafkaErrorCode::OperationTimedOut => Err(ConsumerError::TimedOut {
                    what: WHAT,
                    topic: self.topic.clone(),
                    group: self.group_id.clone(),
                    timeout,
                }),
                other => Err(self.failed(WHAT, format!("partition {}: {other}", e.partition))),
            };
        }
        // Tracking starts afresh at the new position (offsets of records processed
        // before the seek are not this epoch's).
        let mut st = self.shared.lock();
        for &(p, _) in offsets {
            st.offsets.assign(p);
            if let Some(part) = self.parts.get_mut(p as usize) {
                *part = Part {
                    assigned: true,
                    ..Part::default()
                };
            }
        }
        drop(st);
        tracing::info!(source = self.name, topic = %self.topic, offsets = ?offsets, "partitions sought");
        Ok(())
    }

    fn commit_offsets(
        &mut self,
        offsets: &[(u32, u64, String)],
        timeout: Duration,
    ) -> Result<(), ConsumerError> {
        const WHAT: &str = "committing offsets";
        if offsets.is_empty() {
            return Ok(());
        }
        let plain: Vec<(u32, u64)> = offsets.iter().map(|(p, o, _)| (*p, *o)).collect();
        let metadata: CommitMetadata = offsets.iter().map(|(p, _, m)| (*p, m.clone())).collect();
        let tpl =
            tpl_of(&self.topic, &plain, &metadata).map_err(|e| self.failed(WHAT, e.to_string()))?;
        // rdkafka's synchronous commit takes no timeout: librdkafka's request timeouts
        // bound it. One that took longer than `timeout` is logged.
        let started = Instant::now();
        let result = self.consumer.commit(&tpl, CommitMode::Sync);
        if started.elapsed() > timeout {
            tracing::warn!(source = self.name, topic = %self.topic, "an offset commit took {:?}", started.elapsed());
        }
        result.map_err(|e| self.timed_out_or_failed(WHAT, &e, timeout))?;
        let mut st = self.shared.lock();
        for &(p, o) in &plain {
            st.offsets.confirmed(p, o);
        }
        Ok(())
    }

    fn partition_count(&self, timeout: Duration) -> Result<u32, ConsumerError> {
        const WHAT: &str = "reading the partitions";
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| self.timed_out_or_failed(WHAT, &e, timeout))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| self.failed(WHAT, "the topic is not in the metadata".into()))?;
        if let Some(e) = t.error() {
            return Err(self.failed(WHAT, format!("{e:?}")));
        }
        Ok(u32::try_from(t.partitions().len()).unwrap_or(u32::MAX))
    }

    fn note_restored(&mut self, p: u32, watermark: i64, position: u64) {
        self.shared.lock().marks.insert(p, (watermark, position));
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        let st = self.shared.lock();
        let assigned: Vec<u32> = st.offsets.assigned().collect();
        assigned
            .into_iter()
            .filter_map(|p| st.offsets.position(p).map(|o| (p, o)))
            .collect()
    }
}
