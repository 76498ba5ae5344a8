//! The driver loop: polls the sources, hands records and watermark advances to the
//! pipeline, flushes the sinks, commits offsets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Context, Error, JobSpec, Pipeline, Stop};
use crate::metrics::{MetricsServer, PartitionMetrics};
use crate::sink::SinkError;
use crate::source::{Batch, PartitionChange, PartitionStats, Poll, PollLimits, Processed, Source};
use crate::watermark::WatermarkTracker;

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
}

/// Hands a watermark advance of source `src` to the pipeline.
fn advance<P: Pipeline>(pipeline: &mut P, ctx: &mut Context, src: usize, wm: i64) {
    ctx.metrics.sources[src].watermark = wm;
    pipeline.on_watermark(src, wm, ctx);
}

/// Partition `p` of source `src` ended (bounded): its aligned windows fire to the end.
fn finish_partition<P: Pipeline>(
    pipeline: &mut P,
    ctx: &mut Context,
    s: &mut SourceState,
    src: usize,
    p: u32,
) {
    let task = s.tracker.finish_partition(p);
    if s.aligned {
        pipeline.on_partition_watermark(src, p, crate::WATERMARK_MAX, ctx);
    }
    if let Some(wm) = task {
        advance(pipeline, ctx, src, wm);
    }
}

/// Drops the partition-aligned state of partition `p` of source `src` (revoked: it
/// leaves this instance; its next owner rebuilds it).
fn drop_partition_state<P: Pipeline>(pipeline: &mut P, src: usize, p: u32) {
    let group = crate::state::KeyGroup::Partition {
        source: src,
        partition: p,
    };
    for op in pipeline.state() {
        op.drop_group(group);
    }
}

/// Adds a processed record to the batch's run of its partition (one run per partition
/// per batch: a partition's records in a batch are consecutive in its offsets).
fn note_run(runs: &mut Vec<Processed>, partition: u32, offset: u64, ts: Option<i64>) {
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
        }),
    }
}

/// Waits until every sink has delivered what it was given, then lets every source that
/// tracks offsets commit what is safe (`sync`: waiting for the brokers).
pub(super) fn commit_offsets<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &P,
    ctx: &mut Context,
    sources: &mut [SourceState],
    sync: bool,
) -> Result<(), Error> {
    ctx.wait_delivered()?;
    for (i, s) in sources.iter_mut().enumerate() {
        if !s.tracks_offsets {
            continue;
        }
        let held_from = s.held_from(pipeline, i);
        s.source
            .commit(held_from, sync, &crate::source::CommitMetadata::new())
            .map_err(|source| Error::Source {
                name: spec.sources[i].name,
                source,
            })?;
    }
    Ok(())
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

pub(super) fn drive<P: Pipeline>(
    spec: &JobSpec,
    pipeline: &mut P,
    ctx: &mut Context,
    sources: &mut [SourceState],
    stop: &AtomicBool,
    server: Option<&MetricsServer>,
    commit_interval: Duration,
) -> Result<Stop, Error> {
    let limits = PollLimits::default();
    let mut batch = Batch::new();
    let mut runs: Vec<Processed> = Vec::new();
    let mut last_flush = Instant::now();
    let commits = sources.iter().any(|s| s.tracks_offsets);
    let mut last_commit = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!(job = spec.name, "stopping");
            return Ok(Stop::Signal);
        }
        let mut busy = false;
        let mut live = 0;
        let mut wake: Option<Instant> = None;
        for (i, s) in sources.iter_mut().enumerate() {
            if s.finished {
                continue;
            }
            batch.clear();
            let poll = s
                .source
                .poll(&mut batch, limits)
                .map_err(|source| Error::Source {
                    name: spec.sources[i].name,
                    source,
                })?;
            let now = Instant::now();
            // Rebalances first: the batch holds no record of a revoked partition, and
            // records of an assigned one may follow.
            for &change in batch.partition_changes() {
                match change {
                    PartitionChange::Assigned(p) => s.tracker.assign_partition(p, now),
                    PartitionChange::Revoked(p) => {
                        if s.aligned {
                            drop_partition_state(pipeline, i, p);
                        }
                        if let Some(wm) = s.tracker.revoke_partition(p) {
                            advance(pipeline, ctx, i, wm);
                        }
                    }
                }
            }
            busy |= !batch.is_empty();
            ctx.metrics.sources[i].records_in += batch.len() as u64;
            runs.clear();
            for rec in batch.iter() {
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
                    note_run(&mut runs, rec.partition, rec.offset, ts);
                }
                if ctx.error.is_some() {
                    return ctx.halt().unwrap_or(Ok(Stop::Finished));
                }
            }
            if !batch.is_empty() {
                ctx.metrics.sources[i].batch_time.observe(now.elapsed());
            }
            for &p in batch.ended_partitions() {
                finish_partition(pipeline, ctx, s, i, p);
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
                        let parts: Vec<u32> =
                            s.tracker.partition_states().map(|p| p.partition).collect();
                        for p in parts {
                            pipeline.on_partition_watermark(i, p, crate::WATERMARK_MAX, ctx);
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
                let held_from = s.held_from(pipeline, i);
                s.source.processed(&runs, held_from);
            }
            if let Some(halt) = ctx.halt() {
                return halt;
            }
        }
        if live == 0 {
            return Ok(Stop::Finished);
        }
        let now = Instant::now();
        if now >= last_flush + FLUSH_EVERY {
            // Also when nothing was written since: sinks report delivery errors of rows
            // written earlier (Kafka) here. A flush of an empty buffer costs nothing.
            match ctx.flush() {
                Ok(()) => {}
                Err(Error::Sink {
                    source: SinkError::Closed,
                    ..
                }) => return Ok(Stop::OutputClosed),
                Err(e) => return Err(e),
            }
            if server.is_some() || ctx.progress {
                refresh_partition_metrics(ctx, sources);
            }
            if let Some(server) = server {
                server.publish(&ctx.metrics);
            }
            ctx.progress();
            last_flush = now;
        }
        if commits && now >= last_commit + commit_interval {
            match commit_offsets(spec, pipeline, ctx, sources, false) {
                Ok(()) => {}
                Err(Error::Sink {
                    source: SinkError::Closed,
                    ..
                }) => return Ok(Stop::OutputClosed),
                Err(e) => return Err(e),
            }
            last_commit = Instant::now();
        }
        if !busy {
            let now = Instant::now();
            let mut until = wake.unwrap_or(now + BACKOFF).min(now + MAX_SLEEP);
            if ctx.dirty {
                until = until.min(last_flush + FLUSH_EVERY);
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
            note_run(&mut runs, p, off, ts);
        }
        let run = |partition, first, next, max_event_time| Processed {
            partition,
            first,
            next,
            max_event_time,
        };
        assert_eq!(
            runs,
            vec![run(0, 10, 14, 9), run(1, 7, 9, 1), run(2, 0, 1, i64::MIN)]
        );
    }
}
