//! The driver loop ([`Run`]): polls the sources, hands records and watermark advances to
//! the pipeline, flushes the sinks, commits offsets, and, with `checkpoint:`, takes
//! checkpoints, commits them (in the epoch's Kafka transaction when exactly once) and
//! restores state on partition assignments and rollbacks (`docs/design/state.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checkpoint::{self, BROKER_TIMEOUT, Checkpointer};
use super::fault::Faults;
use super::{Context, Error, JobSpec, Pipeline, Stop};
use crate::checkpoint::{
    CheckpointRef, Manifest, Mode, NewCheckpoint, OffsetMetadata, PartitionPosition, SinkPosition,
    SourcePositions,
};
use crate::kafka::{OffsetAndMetadata, TxnError, TxnProducer};
use crate::metrics::{MetricsServer, PartitionMetrics};
use crate::sink::SinkError;
use crate::source::{Batch, PartitionChange, PartitionStats, Poll, PollLimits, Processed, Source};
use crate::state::KeyGroup;
use crate::watermark::WatermarkTracker;
use crate::{WATERMARK_MAX, WATERMARK_MIN};

/// Sinks are flushed at least this often while rows are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The longest the loop naps (the signal flag and idleness are checked after it).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Sleep when a source has nothing and gives no hint when it will.
const BACKOFF: Duration = Duration::from_millis(5);

pub(super) struct SourceState {
    pub(super) source: Box<dyn Source>,
    pub(super) tracker: WatermarkTracker,
    pub(super) finished: bool,
    /// The source commits offsets (Kafka): the driver reports processed runs.
    pub(super) tracks_offsets: bool,
    /// Partition-aligned flows read it: partition watermark advances go to the pipeline.
    pub(super) aligned: bool,
    /// A stateful flow that is not aligned reads it: it needs all of its partitions.
    pub(super) task: bool,
    /// Kafka (partitions come and go; positions are the consumer's).
    pub(super) kafka: bool,
    /// Without checkpoints, per partition: records below this offset were processed
    /// before a restart (from the committed metadata): too late or invalid, they were
    /// accounted for then.
    pub(super) replay: Vec<u64>,
    /// Per assigned partition, where reading (re)started: the committed or restored
    /// offset, the position of a partition that nothing has been read of since.
    pub(super) start: BTreeMap<u32, u64>,
}

impl SourceState {
    /// `Pipeline::held_from` of this source: the least over its assigned partitions
    /// (what one commit for all partitions may use).
    fn held_from<P: Pipeline>(&self, pipeline: &P, src: usize) -> i64 {
        self.tracker
            .partition_states()
            .map(|p| pipeline.held_from(src, p.partition))
            .min()
            .unwrap_or_else(|| pipeline.held_from(src, 0))
    }

    fn assigned(&self) -> Vec<u32> {
        self.tracker
            .partition_states()
            .map(|p| p.partition)
            .collect()
    }

    /// Per assigned partition, the next record to read: the consumer's position if it
    /// has read any since the partition was (re)started, else where it started.
    fn positions(&mut self) -> Vec<(u32, u64)> {
        let read: BTreeMap<u32, u64> = match self.source.kafka() {
            Some(k) => k.positions().into_iter().collect(),
            None => self.source.positions().into_iter().collect(),
        };
        if !self.kafka {
            // A file or datagen source: its own position, assigned or not.
            return read.into_iter().collect();
        }
        self.assigned()
            .into_iter()
            .filter_map(|p| Some((p, *read.get(&p).or_else(|| self.start.get(&p))?)))
            .collect()
    }

    fn replaying(&self, partition: u32, offset: u64) -> bool {
        self.replay
            .get(partition as usize)
            .is_some_and(|&end| offset < end)
    }
}

/// Hands a watermark advance of source `src` to the pipeline.
fn advance<P: Pipeline>(pipeline: &mut P, ctx: &mut Context, src: usize, wm: i64) {
    ctx.metrics.sources[src].watermark = wm;
    pipeline.on_watermark(src, wm, ctx);
}

/// Drops the state of key group `g` in every operator.
fn drop_group<P: Pipeline>(pipeline: &mut P, g: KeyGroup) {
    for op in pipeline.state() {
        op.drop_group(g);
    }
}

/// Adds a processed record to the batch's run of its partition (one run per partition
/// per batch: a partition's records in a batch are consecutive in its offsets).
/// `wm_before` is the partition's watermark before the record.
fn note_run(
    runs: &mut Vec<Processed>,
    partition: u32,
    offset: u64,
    ts: Option<i64>,
    wm_before: i64,
) {
    let ts = ts.unwrap_or(i64::MIN);
    let next = offset.saturating_add(1);
    let run = match runs.last_mut() {
        Some(r) if r.partition == partition => Some(r),
        _ => runs.iter_mut().find(|r| r.partition == partition),
    };
    match run {
        Some(r) => {
            r.next = r.next.max(next);
            r.max_event_time = r.max_event_time.max(ts);
        }
        None => runs.push(Processed {
            partition,
            first: offset,
            next,
            max_event_time: ts,
            watermark: WATERMARK_MIN,
            watermark_before: wm_before,
        }),
    }
}

/// Per-partition metrics: watermarks and idleness from the trackers, lag and committed
/// offsets from the sources.
pub(super) fn refresh_partition_metrics(ctx: &mut Context, sources: &[SourceState]) {
    let mut stats: Vec<PartitionStats> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        stats.clear();
        s.source.partition_stats(&mut stats);
        let out = &mut ctx.metrics.sources[i].partitions;
        out.clear();
        for ps in s.tracker.partition_states() {
            let st = stats.iter().find(|st| st.partition == ps.partition);
            out.push(PartitionMetrics {
                partition: ps.partition,
                watermark: ps.watermark,
                idle: ps.idle,
                lag: st.and_then(|st| st.lag),
                committed: st.and_then(|st| st.committed),
            });
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A closed output ends the job normally; other errors stay errors.
fn closed_is_stop(r: Result<(), Error>) -> Result<Option<Stop>, Error> {
    match r {
        Ok(()) => Ok(None),
        Err(Error::Sink {
            source: SinkError::Closed,
            ..
        }) => Ok(Some(Stop::OutputClosed)),
        Err(e) => Err(e),
    }
}

/// Checkpoints, when the spec has them: the store and, exactly once, the job's
/// transactional producer.
pub(super) struct Checkpointing {
    pub(super) ck: Checkpointer,
    pub(super) txn: Option<Arc<TxnProducer>>,
}

/// One run of the job.
pub(super) struct Run<'a, P: Pipeline> {
    pub(super) spec: &'a JobSpec,
    pub(super) pipeline: &'a mut P,
    pub(super) ctx: &'a mut Context,
    pub(super) sources: &'a mut [SourceState],
    pub(super) checkpoints: Option<Checkpointing>,
    pub(super) faults: Faults,
    pub(super) commit_interval: Duration,
    /// The file sinks were truncated to the restored checkpoint (once, at the first
    /// restore of a Kafka job).
    pub(super) sinks_restored: bool,
    /// Manifests read during this run, by reference.
    pub(super) manifests: BTreeMap<CheckpointRef, Manifest>,
    /// The manifest the task group was last restored from (a multi-source job restores
    /// it once per manifest).
    pub(super) task_from: Option<CheckpointRef>,
    /// The state backend (checked for errors after every batch).
    pub(super) state: &'a super::StateEnv,
}

impl<P: Pipeline> Run<'_, P> {
    fn name(&self, i: usize) -> &'static str {
        self.spec.sources[i].name
    }

    fn manifest(&mut self, r: &CheckpointRef) -> Result<Manifest, Error> {
        if let Some(m) = self.manifests.get(r) {
            return Ok(m.clone());
        }
        let Some(c) = &self.checkpoints else {
            return Err(Error::Usage("no checkpoint storage".into()));
        };
        let m = c.ck.load(r)?;
        checkpoint::check_layout(self.pipeline, &m)?;
        self.manifests.insert(r.clone(), m.clone());
        Ok(m)
    }

    /// A job without Kafka sources, with checkpoints: restores the newest checkpoint of
    /// this instance (or `--from-checkpoint`) at start: every key group, the sources'
    /// positions and watermarks, the file sinks' lengths. With none, the file sinks
    /// start empty.
    pub(super) fn restore_at_start(&mut self) -> Result<(), Error> {
        let Some(c) = &mut self.checkpoints else {
            return Ok(());
        };
        let found = match c.ck.from.take() {
            Some(r) => Some(r),
            None => {
                c.ck.store
                    .latest()
                    .map_err(Error::Checkpoint)?
                    .map(|m| m.reference())
            }
        };
        let Some(r) = found else {
            self.ctx.truncate(&[])?;
            return Ok(());
        };
        let m = self.manifest(&r)?;
        let Some(c) = &mut self.checkpoints else {
            return Ok(());
        };
        for name in m.groups.keys() {
            let g: KeyGroup = name.parse().map_err(|reason| Error::Restore {
                checkpoint: r.to_string(),
                group: name.clone(),
                reason,
            })?;
            checkpoint::restore_group(self.pipeline, &c.ck.store, &m, g)?;
            c.ck.mark_fresh(g);
        }
        let now = Instant::now();
        for (i, s) in self.sources.iter_mut().enumerate() {
            let Some(pos) = m
                .sources
                .iter()
                .find(|p| p.name == self.spec.sources[i].name)
            else {
                continue;
            };
            let at: Vec<(u32, u64)> = pos
                .partitions
                .iter()
                .map(|p| (p.partition, p.offset))
                .collect();
            s.source
                .restore_positions(&at)
                .map_err(|source| Error::Source {
                    name: self.spec.sources[i].name,
                    source,
                })?;
            for p in &pos.partitions {
                s.tracker
                    .restore_partition(p.partition, p.watermark, p.idle, now);
                if s.aligned {
                    self.pipeline
                        .on_partition_watermark(i, p.partition, p.watermark, self.ctx);
                }
            }
            let wm = s.tracker.restore_task(None);
            advance(self.pipeline, self.ctx, i, wm);
        }
        let sinks: Vec<(String, Option<u64>)> = m
            .sinks
            .iter()
            .map(|s| (s.name.clone(), s.position))
            .collect();
        self.ctx.truncate(&sinks)?;
        c.ck.restored(&m);
        self.ctx.metrics.checkpoints.restores += 1;
        tracing::info!(checkpoint = %r, "restored");
        self.faults.reach("restore");
        Ok(())
    }

    /// Partitions `parts` of Kafka source `i` were assigned (or, `rollback`, every
    /// assigned partition goes back to the committed state): restores each one's state
    /// and watermark from what its committed offset's metadata names (a checkpoint, or
    /// without checkpoints the watermark and position at commit time). Returns the
    /// partitions it moved the consumer of (their records in the current batch are
    /// stale).
    fn establish(&mut self, i: usize, parts: &[u32], rollback: bool) -> Result<Vec<u32>, Error> {
        let name = self.name(i);
        let source_err = |e: crate::kafka::ConsumerError| Error::Source {
            name,
            source: crate::source::SourceError::msg(e.to_string()),
        };
        if self.sources[i].task {
            let assigned = self.sources[i].assigned();
            let total = match self.sources[i].source.kafka() {
                Some(k) => k.partition_count(BROKER_TIMEOUT).map_err(source_err)?,
                None => 0,
            };
            if (assigned.len() as u32) < total {
                return Err(Error::PartialAssignment {
                    name,
                    assigned,
                    total,
                });
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let committed = match self.sources[i].source.kafka() {
            Some(k) => k.committed(parts, BROKER_TIMEOUT).map_err(source_err)?,
            None => return Ok(Vec::new()),
        };
        let now = Instant::now();
        let checkpointed = self.checkpoints.is_some();
        let from = self.checkpoints.as_mut().and_then(|c| c.ck.from.take());
        let mut seeks: Vec<(u32, u64)> = Vec::new();
        let mut newest: Option<Manifest> = None;
        let mut restored_any = false;
        for c in committed {
            let p = c.partition;
            let group = KeyGroup::Partition {
                source: i,
                partition: p,
            };
            let aligned = self.sources[i].aligned;
            let meta = OffsetMetadata::parse(&c.metadata);
            let reference = match (&from, meta) {
                (Some(r), _) => Some(r.clone()),
                (None, OffsetMetadata::Checkpoint(r)) if checkpointed => Some(r),
                (
                    None,
                    OffsetMetadata::Position {
                        watermark,
                        position,
                    },
                ) if !checkpointed => {
                    // Without checkpoints: the state is rebuilt from the records read
                    // again, judged against the watermark they were judged against.
                    drop_group(self.pipeline, group);
                    let s = &mut self.sources[i];
                    s.tracker.restore_partition(p, watermark, false, now);
                    if let Some(k) = s.source.kafka() {
                        k.note_restored(p, watermark, position);
                    }
                    let slot = p as usize;
                    if s.replay.len() <= slot {
                        s.replay.resize(slot + 1, 0);
                    }
                    s.replay[slot] = position;
                    if let Some(o) = c.offset {
                        s.start.insert(p, o);
                    }
                    if aligned {
                        self.pipeline
                            .on_partition_watermark(i, p, watermark, self.ctx);
                    }
                    tracing::info!(
                        source = name,
                        partition = p,
                        watermark,
                        replayed_below = position,
                        "partition resumed from its committed watermark"
                    );
                    continue;
                }
                (None, _) => None,
            };
            match reference {
                Some(r) => {
                    let m = self.manifest(&r)?;
                    let Some(pos) = m.position(name, p).copied() else {
                        return Err(Error::Restore {
                            checkpoint: r.to_string(),
                            group: group.to_string(),
                            reason: format!(
                                "it has no position for partition {p} of source `{name}` (was the topic re-created?)"
                            ),
                        });
                    };
                    if aligned && let Some(ck) = &self.checkpoints {
                        checkpoint::restore_group(self.pipeline, &ck.ck.store, &m, group)?;
                    }
                    let s = &mut self.sources[i];
                    s.tracker.restore_partition(p, pos.watermark, pos.idle, now);
                    s.start.insert(p, pos.offset);
                    if aligned {
                        // (A partition without state in the checkpoint gets an instance
                        // at its watermark.)
                        self.pipeline
                            .on_partition_watermark(i, p, pos.watermark, self.ctx);
                    }
                    if rollback || c.offset != Some(pos.offset) {
                        seeks.push((p, pos.offset));
                    }
                    if newest
                        .as_ref()
                        .is_none_or(|n| (n.created_ms, n.id) < (m.created_ms, m.id))
                    {
                        newest = Some(m);
                    }
                    restored_any = true;
                }
                None => {
                    // Nothing of streamc's committed: a fresh start of the partition.
                    drop_group(self.pipeline, group);
                    let s = &mut self.sources[i];
                    s.tracker.restore_partition(p, WATERMARK_MIN, false, now);
                    if let Some(o) = c.offset {
                        s.start.insert(p, o);
                        if rollback {
                            seeks.push((p, o));
                        }
                    } else if rollback {
                        match &self.spec.sources[i].kind {
                            crate::source::SourceKind::Kafka(k)
                                if k.start == crate::source::KafkaStart::Earliest =>
                            {
                                seeks.push((p, 0));
                            }
                            _ => tracing::warn!(
                                source = name,
                                partition = p,
                                "rolled back with no committed offset and `start: latest`: records read since the start are not read again"
                            ),
                        }
                    }
                }
            }
            if let Some(ck) = &mut self.checkpoints {
                ck.ck.mark_fresh(group);
            }
        }
        if let Some(ck) = &mut self.checkpoints {
            if self.sources[i].task {
                let r = newest.as_ref().map(Manifest::reference);
                if r.is_none() || r != self.task_from {
                    match &newest {
                        Some(m) => {
                            checkpoint::restore_group(
                                self.pipeline,
                                &ck.ck.store,
                                m,
                                KeyGroup::Task,
                            )?;
                        }
                        None => drop_group(self.pipeline, KeyGroup::Task),
                    }
                    ck.ck.mark_fresh(KeyGroup::Task);
                    self.task_from = r;
                }
            }
            if let Some(m) = &newest {
                ck.ck.restored(m);
            }
            if !self.sinks_restored || rollback {
                // File sinks back to the checkpoint (this instance's), else to empty.
                let sinks: Vec<(String, Option<u64>)> = newest
                    .as_ref()
                    .filter(|m| m.instance == ck.ck.store.instance())
                    .map(|m| {
                        m.sinks
                            .iter()
                            .map(|s| (s.name.clone(), s.position))
                            .collect()
                    })
                    .unwrap_or_default();
                self.ctx.truncate(&sinks)?;
                self.sinks_restored = true;
            }
        }
        let wm = self.sources[i].tracker.restore_task(None);
        advance(self.pipeline, self.ctx, i, wm);
        if !seeks.is_empty()
            && let Some(k) = self.sources[i].source.kafka()
        {
            k.seek(&seeks, BROKER_TIMEOUT).map_err(source_err)?;
        }
        if restored_any {
            self.ctx.metrics.checkpoints.restores += 1;
            if let Some(m) = &newest {
                tracing::info!(source = name, partitions = ?parts, checkpoint = %m.reference(), "restored from the checkpoint the committed offsets name");
            }
            self.faults.reach("restore");
        }
        Ok(seeks.into_iter().map(|(p, _)| p).collect())
    }

    /// Exactly once, after a revocation or an abortable transaction: aborts the open
    /// transaction and rolls every Kafka source's assigned partitions back to their
    /// committed state (restored, and the consumers moved back). Returns whether the
    /// current batch is stale.
    fn rollback(&mut self, why: &str) -> Result<(), Error> {
        let Some(c) = &self.checkpoints else {
            return Ok(());
        };
        if let Some(txn) = &c.txn {
            txn.abort().map_err(Error::Txn)?;
            self.ctx.metrics.checkpoints.transactions_aborted += 1;
            txn.begin().map_err(Error::Txn)?;
        }
        tracing::info!(why, "rolled back to the last committed checkpoint");
        self.task_from = None;
        self.manifests.clear();
        for i in 0..self.sources.len() {
            if !self.sources[i].kafka {
                return Err(Error::Usage(format!(
                    "source `{}` cannot be rolled back ({why}): exactly-once jobs read Kafka only",
                    self.name(i)
                )));
            }
            let parts = self.sources[i].assigned();
            self.sources[i].replay.clear();
            self.establish(i, &parts, true)?;
        }
        Ok(())
    }

    /// Takes a checkpoint and commits it: snapshot, blobs, manifest (durable), then
    /// the offsets (inside the epoch's transaction when exactly once) and the commit.
    /// A failure to write it is logged and retried at the next interval; a rejected
    /// transaction rolls back.
    fn checkpoint(&mut self) -> Result<(), Error> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        self.faults.reach("checkpoint.start");
        let started = Instant::now();
        let mut sources = Vec::with_capacity(self.sources.len());
        let mut offsets: Vec<Vec<(u32, u64)>> = Vec::with_capacity(self.sources.len());
        for (i, s) in self.sources.iter_mut().enumerate() {
            let pos = s.positions();
            sources.push(SourcePositions {
                name: self.spec.sources[i].name.to_string(),
                kind: match &self.spec.sources[i].kind {
                    crate::source::SourceKind::File { .. } => "file",
                    crate::source::SourceKind::Datagen(_) => "datagen",
                    crate::source::SourceKind::Kafka(_) => "kafka",
                }
                .to_string(),
                partitions: pos
                    .iter()
                    .map(|&(p, offset)| PartitionPosition {
                        partition: p,
                        offset,
                        watermark: s.tracker.partition_watermark(p),
                        idle: s.tracker.is_idle(p),
                    })
                    .collect(),
            });
            offsets.push(pos);
        }
        let Some(c) = &mut self.checkpoints else {
            return Ok(());
        };
        let mode = c.ck.mode;
        if mode == Mode::AtLeastOnce {
            // The outputs of every record the offsets pass are delivered first.
            self.ctx.wait_delivered()?;
        }
        let sinks = self
            .ctx
            .durable_positions()?
            .into_iter()
            .map(|(name, position)| SinkPosition {
                name,
                kind: String::new(),
                position,
            })
            .collect();
        let groups = c.ck.snapshot(self.pipeline, false)?;
        let new = NewCheckpoint {
            id: c.ck.next_id,
            created_ms: now_ms(),
            mode,
            layout: checkpoint::layouts(self.pipeline),
            sources,
            sinks,
            groups,
            extra: serde_json::Value::Null,
        };
        let faults = &mut self.faults;
        // The deltas were taken against the base the snapshot chained onto.
        let base = c.ck.base().cloned();
        let written =
            c.ck.store
                .write_with(base.as_ref(), new, &mut || faults.reach("checkpoint.blobs"));
        let manifest = match written {
            Ok(m) => m,
            Err(e) => {
                c.ck.failed();
                self.ctx.metrics.checkpoints.failed += 1;
                tracing::warn!(error = %e, "a checkpoint could not be written; the next one is full");
                return Ok(());
            }
        };
        c.ck.written(&manifest);
        self.faults.reach("checkpoint.manifest");
        let reference = manifest.reference();
        let metadata = OffsetMetadata::Checkpoint(reference.clone()).to_string();
        let committed = match self.commit_checkpoint(&offsets, &metadata) {
            Ok(()) => true,
            Err(Error::Txn(TxnError::Abortable { op, message })) => {
                tracing::warn!(%op, %message, checkpoint = %reference, "the epoch's transaction was refused; rolling back");
                self.rollback("the transaction was refused")?;
                false
            }
            Err(e) => return Err(e),
        };
        let Some(c) = &mut self.checkpoints else {
            return Ok(());
        };
        if committed {
            c.ck.committed = Some(manifest.clone());
            let k = &mut self.ctx.metrics.checkpoints;
            k.completed += 1;
            k.last_duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            k.last_size_bytes = manifest.total_bytes;
            k.last_written_bytes = manifest.written_bytes;
            k.last_completed_ms = now_ms();
            tracing::debug!(checkpoint = %reference, bytes = manifest.total_bytes, written = manifest.written_bytes, ms = k.last_duration_ms, "checkpoint committed");
            if c.ck.collect_due() {
                let referenced = self.referenced();
                if let Some(c) = &mut self.checkpoints {
                    c.ck.collect(&referenced);
                }
            }
        }
        Ok(())
    }

    /// The checkpoints this job's committed offsets name (kept by collection): every
    /// partition of every Kafka source, whoever committed it.
    fn referenced(&mut self) -> Vec<CheckpointRef> {
        let mut out = Vec::new();
        for s in self.sources.iter_mut() {
            let Some(k) = s.source.kafka() else { continue };
            let Ok(n) = k.partition_count(BROKER_TIMEOUT) else {
                continue;
            };
            let all: Vec<u32> = (0..n).collect();
            if let Ok(committed) = k.committed(&all, BROKER_TIMEOUT) {
                for c in committed {
                    if let OffsetMetadata::Checkpoint(r) = OffsetMetadata::parse(&c.metadata) {
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// Commits the offsets of a durable checkpoint: in the epoch's transaction (then the
    /// next epoch begins), or after the outputs are delivered.
    fn commit_checkpoint(
        &mut self,
        offsets: &[Vec<(u32, u64)>],
        metadata: &str,
    ) -> Result<(), Error> {
        let txn = self.checkpoints.as_ref().and_then(|c| c.txn.clone());
        let name_of = |i: usize| self.spec.sources[i].name;
        match txn {
            Some(txn) => {
                let mut groups = Vec::new();
                for (i, s) in self.sources.iter_mut().enumerate() {
                    let Some(k) = s.source.kafka() else { continue };
                    let list: Vec<OffsetAndMetadata> = offsets[i]
                        .iter()
                        .map(|&(partition, offset)| OffsetAndMetadata {
                            partition,
                            offset,
                            metadata: metadata.to_string(),
                        })
                        .collect();
                    if list.is_empty() {
                        continue;
                    }
                    groups.push(k.group_offsets(list).map_err(|e| Error::Source {
                        name: name_of(i),
                        source: crate::source::SourceError::msg(e.to_string()),
                    })?);
                }
                txn.send_offsets(&groups).map_err(Error::Txn)?;
                self.faults.reach("checkpoint.offsets");
                txn.commit().map_err(Error::Txn)?;
                self.ctx.metrics.checkpoints.transactions_committed += 1;
                self.faults.reach("checkpoint.commit");
                txn.begin().map_err(Error::Txn)?;
            }
            None => {
                self.faults.reach("checkpoint.offsets");
                for (i, s) in self.sources.iter_mut().enumerate() {
                    let Some(k) = s.source.kafka() else { continue };
                    let list: Vec<(u32, u64, String)> = offsets[i]
                        .iter()
                        .map(|&(p, o)| (p, o, metadata.to_string()))
                        .collect();
                    k.commit_offsets(&list, BROKER_TIMEOUT)
                        .map_err(|e| Error::Source {
                            name: name_of(i),
                            source: crate::source::SourceError::msg(e.to_string()),
                        })?;
                }
                self.faults.reach("checkpoint.commit");
            }
        }
        Ok(())
    }

    /// Without checkpoints: waits until every sink has delivered what it was given,
    /// then lets every source that tracks offsets commit what is safe (`sync`: waiting
    /// for the brokers), with each partition's watermark and position as metadata.
    pub(super) fn commit_offsets(&mut self, sync: bool) -> Result<(), Error> {
        self.ctx.wait_delivered()?;
        for (i, s) in self.sources.iter_mut().enumerate() {
            if !s.tracks_offsets {
                continue;
            }
            let held_from = s.held_from(self.pipeline, i);
            s.source
                .commit(held_from, sync, &crate::source::CommitMetadata::new())
                .map_err(|source| Error::Source {
                    name: self.spec.sources[i].name,
                    source,
                })?;
        }
        self.faults.reach("commit");
        Ok(())
    }

    /// A clean stop (every source ended, or a signal): a last checkpoint, or the safe
    /// offsets committed synchronously, while the consumers are still in their groups.
    pub(super) fn finish(&mut self) -> Result<(), Error> {
        if self.checkpoints.is_some() {
            tracing::info!(job = self.spec.name, "taking a last checkpoint");
            return self.checkpoint();
        }
        if self.sources.iter().any(|s| s.tracks_offsets) {
            tracing::info!(job = self.spec.name, "committing offsets");
            return self.commit_offsets(true);
        }
        Ok(())
    }

    /// The job failed: an open transaction is aborted at once (read-committed readers
    /// are not held up until its timeout). Best effort.
    pub(super) fn abandon(&mut self) {
        if let Some(txn) = self.checkpoints.as_ref().and_then(|c| c.txn.as_ref())
            && let Err(e) = txn.abort()
        {
            tracing::debug!(error = %e, "aborting the open transaction");
        }
    }

    /// The partition changes of source `i`'s last poll. Returns the partitions whose
    /// records in the batch are stale (the consumer was moved back).
    fn apply_changes(&mut self, i: usize, changes: &[PartitionChange]) -> Result<Vec<u32>, Error> {
        let now = Instant::now();
        let mut assigned = Vec::new();
        let mut revoked = false;
        for &change in changes {
            match change {
                PartitionChange::Assigned(p) => {
                    self.sources[i].tracker.assign_partition(p, now);
                    if let Some(slot) = self.sources[i].replay.get_mut(p as usize) {
                        *slot = 0;
                    }
                    assigned.push(p);
                }
                PartitionChange::Revoked(p) => {
                    revoked = true;
                    assigned.retain(|&a| a != p);
                    let s = &mut self.sources[i];
                    s.start.remove(&p);
                    if let Some(slot) = s.replay.get_mut(p as usize) {
                        *slot = 0;
                    }
                    if s.aligned {
                        drop_group(
                            self.pipeline,
                            KeyGroup::Partition {
                                source: i,
                                partition: p,
                            },
                        );
                    }
                    // (Its watermark is set again by `establish` if it comes back.)
                    let s = &mut self.sources[i];
                    if let Some(wm) = s.tracker.revoke_partition(p) {
                        advance(self.pipeline, self.ctx, i, wm);
                    }
                }
            }
        }
        if revoked && self.checkpoints.is_some() {
            self.rollback("partitions were revoked")?;
            return Ok(self.sources[i].assigned());
        }
        if revoked && self.sources[i].task {
            // Task state was built from every partition: it is rebuilt from the
            // committed offsets of all of them, which needs all of them here.
            drop_group(self.pipeline, KeyGroup::Task);
            let left = self.sources[i].assigned();
            if !left.is_empty() && assigned.is_empty() {
                let total = match self.sources[i].source.kafka() {
                    Some(k) => k.partition_count(BROKER_TIMEOUT).unwrap_or(0),
                    None => 0,
                };
                return Err(Error::PartialAssignment {
                    name: self.name(i),
                    assigned: left,
                    total,
                });
            }
        }
        if !assigned.is_empty() {
            return self.establish(i, &assigned, false);
        }
        Ok(Vec::new())
    }

    pub(super) fn drive(
        &mut self,
        stop: &AtomicBool,
        server: Option<&MetricsServer>,
    ) -> Result<Stop, Error> {
        let limits = PollLimits::default();
        let mut batch = Batch::new();
        let mut runs: Vec<Processed> = Vec::new();
        let mut last_flush = Instant::now();
        let commits = self.checkpoints.is_none() && self.sources.iter().any(|s| s.tracks_offsets);
        let mut last_commit = Instant::now();
        let record_faults = self.faults.any();
        loop {
            if stop.load(Ordering::Relaxed) {
                tracing::info!(job = self.spec.name, "stopping");
                return Ok(Stop::Signal);
            }
            let mut busy = false;
            let mut live = 0;
            let mut wake: Option<Instant> = None;
            for i in 0..self.sources.len() {
                if self.sources[i].finished {
                    continue;
                }
                batch.clear();
                let poll = self.sources[i]
                    .source
                    .poll(&mut batch, limits)
                    .map_err(|source| Error::Source {
                        name: self.spec.sources[i].name,
                        source,
                    })?;
                let now = Instant::now();
                // Rebalances first: the batch holds no record of a revoked partition, and
                // records of an assigned one may follow.
                let stale = if batch.partition_changes().is_empty() {
                    Vec::new()
                } else {
                    let changes = batch.partition_changes().to_vec();
                    self.apply_changes(i, &changes)?
                };
                busy |= !batch.is_empty();
                self.ctx.metrics.sources[i].records_in += batch.len() as u64;
                runs.clear();
                let (pipeline, ctx) = (&mut *self.pipeline, &mut *self.ctx);
                let s = &mut self.sources[i];
                let replays = !s.replay.is_empty();
                for rec in batch.iter() {
                    if !stale.is_empty() && stale.contains(&rec.partition) {
                        ctx.metrics.sources[i].records_in -= 1;
                        continue;
                    }
                    if replays {
                        ctx.replaying = s.replaying(rec.partition, rec.offset);
                    }
                    let wm_before = s.tracker.partition_watermark(rec.partition);
                    let ts = pipeline.on_record(i, &rec, ctx);
                    if let Some(ts) = ts {
                        let p = rec.partition;
                        let before = s.tracker.partition_watermark(p);
                        let task = s.tracker.on_event(p, ts, now);
                        // The partition's windows first: their results reach downstream
                        // flows before the task watermark moves past them.
                        if s.aligned {
                            let after = s.tracker.partition_watermark(p);
                            if after > before {
                                pipeline.on_partition_watermark(i, p, after, ctx);
                            }
                        }
                        if let Some(wm) = task {
                            advance(pipeline, ctx, i, wm);
                        }
                    }
                    if s.tracks_offsets {
                        note_run(&mut runs, rec.partition, rec.offset, ts, wm_before);
                    }
                    if ctx.error.is_some() {
                        return ctx.halt().unwrap_or(Ok(Stop::Finished));
                    }
                    if record_faults {
                        self.faults.reach("record");
                    }
                }
                ctx.replaying = false;
                if !batch.is_empty() {
                    ctx.metrics.sources[i].batch_time.observe(now.elapsed());
                }
                for &p in batch.ended_partitions() {
                    let task = s.tracker.finish_partition(p);
                    if s.aligned {
                        pipeline.on_partition_watermark(i, p, WATERMARK_MAX, ctx);
                    }
                    if let Some(wm) = task {
                        advance(pipeline, ctx, i, wm);
                    }
                }
                for &(p, caught_up) in batch.caught_up() {
                    s.tracker.set_caught_up(p, caught_up);
                }
                match poll {
                    Poll::More => {
                        busy = true;
                        live += 1;
                    }
                    Poll::Pending { retry_at } => {
                        live += 1;
                        let at = retry_at.unwrap_or(now + BACKOFF);
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                    Poll::Finished => {
                        s.finished = true;
                        if s.aligned {
                            for p in s.assigned() {
                                pipeline.on_partition_watermark(i, p, WATERMARK_MAX, ctx);
                            }
                        }
                        if let Some(wm) = s.tracker.finish_all() {
                            advance(pipeline, ctx, i, wm);
                        }
                    }
                }
                if !s.finished
                    && let Some(wm) = s.tracker.check_idle(now)
                {
                    advance(pipeline, ctx, i, wm);
                }
                if s.tracks_offsets {
                    for r in &mut runs {
                        r.watermark = s.tracker.partition_watermark(r.partition);
                    }
                    let held_from = s.held_from(pipeline, i);
                    s.source.processed(&runs, held_from);
                }
                if let Some(halt) = ctx.halt() {
                    return halt;
                }
                // A state backend error (RocksDB I/O) ends the job before anything of
                // the batch is flushed, committed or checkpointed.
                self.state.check()?;
            }
            if live == 0 {
                return Ok(Stop::Finished);
            }
            let now = Instant::now();
            if now >= last_flush + FLUSH_EVERY {
                // Also when nothing was written since: sinks report delivery errors of rows
                // written earlier (Kafka) here. A flush of an empty buffer costs nothing.
                if let Some(stop) = closed_is_stop(self.ctx.flush())? {
                    return Ok(stop);
                }
                if server.is_some() || self.ctx.progress {
                    refresh_partition_metrics(self.ctx, self.sources);
                }
                if let Some(server) = server {
                    server.publish(&self.ctx.metrics);
                }
                self.ctx.progress();
                last_flush = now;
            }
            if commits && now >= last_commit + self.commit_interval {
                if let Some(stop) = closed_is_stop(self.commit_offsets(false))? {
                    return Ok(stop);
                }
                last_commit = Instant::now();
            }
            if let Some(c) = &self.checkpoints
                && now >= c.ck.last + c.ck.interval
            {
                if let Some(stop) = closed_is_stop(self.checkpoint())? {
                    return Ok(stop);
                }
                if let Some(c) = &mut self.checkpoints {
                    c.ck.last = Instant::now();
                }
            }
            if !busy {
                let now = Instant::now();
                let mut until = wake.unwrap_or(now + BACKOFF).min(now + MAX_SLEEP);
                if self.ctx.dirty {
                    until = until.min(last_flush + FLUSH_EVERY);
                }
                if let Some(c) = &self.checkpoints {
                    until = until.min(c.ck.last + c.ck.interval);
                }
                let nap = until.saturating_duration_since(now);
                if !nap.is_zero() {
                    // A source may wake the loop early (Kafka: records arrived), so a park,
                    // not a sleep. Spurious wake-ups only cost a round of polls.
                    std::thread::park_timeout(nap);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_one_per_partition_per_batch() {
        let mut runs = Vec::new();
        for (p, off, ts) in [
            (0, 10, Some(5)),
            (1, 7, None),
            (0, 11, Some(3)),
            (0, 13, Some(9)),
            (1, 8, Some(1)),
            (2, 0, None),
        ] {
            note_run(&mut runs, p, off, ts, off as i64);
        }
        let run = |partition, first, next, max_event_time| Processed {
            partition,
            first,
            next,
            max_event_time,
            watermark: WATERMARK_MIN,
            watermark_before: first as i64,
        };
        assert_eq!(
            runs,
            vec![run(0, 10, 14, 9), run(1, 7, 9, 1), run(2, 0, 1, i64::MIN)]
        );
    }
}
