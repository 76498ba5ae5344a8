//! Which offsets of a Kafka partition are safe to commit (at-least-once).
//!
//! A record may be committed once nothing it contributed to can still change or be
//! lost: every window it belongs to has fired and been purged (past allowed lateness),
//! and the rows that came of it are delivered. The second part is the driver's: it waits
//! for the sinks (`Sink::wait_delivered`) before it commits. The first is answered by
//! `Pipeline::held_from(src)`: every record with an event time below it is done.
//!
//! Per partition the tracker keeps a deque of blocks `(first offset, max event time)`,
//! one per run of records processed together (a batch's consecutive records of the
//! partition), not one per record. The offset to commit is the first offset of the first
//! block whose max event time is `>= held_from`, or the position (one past the last
//! processed record) when every block is done. Committed offsets form a prefix, so a
//! done block behind a held one waits; that only costs re-reading on restart.
//!
//! Compaction, lossless: only blocks whose max event time exceeds every earlier block's
//! can be the first held one (an earlier block with a larger max would be held first),
//! so a run whose max is not larger than the last block's is merged into it. The deque
//! is strictly increasing in max event time; in-order traffic appends one block per
//! batch, out-of-order traffic mostly merges. Blocks are dropped from the front as they
//! become done.

use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    first: u64,
    max_event_time: i64,
    /// The partition's watermark before the block's first record: where a replay from
    /// `first` starts (see [`OffsetTracker::watermark_at`]).
    wm_before: i64,
}

#[derive(Clone, Debug, Default)]
struct Part {
    /// Strictly increasing in `max_event_time`.
    blocks: VecDeque<Block>,
    /// One past the last processed record; None before the first.
    position: Option<u64>,
    /// The last offset handed to a commit (the broker may not have confirmed it yet).
    requested: Option<u64>,
    /// The last offset the broker confirmed.
    committed: Option<u64>,
    /// The partition's watermark after the last processed record.
    wm_after: i64,
}

/// Safe commit offsets of the partitions assigned to one consumer.
#[derive(Clone, Debug, Default)]
pub struct OffsetTracker {
    parts: BTreeMap<u32, Part>,
}

impl OffsetTracker {
    /// No partitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Partition `p` is assigned: tracking starts afresh (reading resumes from the
    /// group's committed offset).
    pub fn assign(&mut self, p: u32) {
        self.parts.insert(
            p,
            Part {
                wm_after: i64::MIN,
                ..Part::default()
            },
        );
    }

    /// Partition `p` is revoked: its tracking is dropped.
    pub fn revoke(&mut self, p: u32) {
        self.parts.remove(&p);
    }

    /// Whether `p` is assigned.
    pub fn is_assigned(&self, p: u32) -> bool {
        self.parts.contains_key(&p)
    }

    /// The assigned partitions, in order.
    pub fn assigned(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.keys().copied()
    }

    /// Records `first..next` of partition `p` were processed; the largest event time
    /// among them is `max_event_time` (`i64::MIN` if none had one). Records of a
    /// partition that is not assigned are ignored (never committed).
    pub fn processed(&mut self, p: u32, first: u64, next: u64, max_event_time: i64) {
        self.processed_with(p, first, next, max_event_time, i64::MIN, i64::MIN);
    }

    /// [`OffsetTracker::processed`], with the partition's watermark before the run's
    /// first record and after its last.
    pub fn processed_with(
        &mut self,
        p: u32,
        first: u64,
        next: u64,
        max_event_time: i64,
        wm_before: i64,
        wm_after: i64,
    ) {
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        part.position = Some(part.position.map_or(next, |pos| pos.max(next)));
        part.wm_after = part.wm_after.max(wm_after);
        match part.blocks.back() {
            Some(last) if max_event_time <= last.max_event_time => {}
            _ => part.blocks.push_back(Block {
                first,
                max_event_time,
                wm_before,
            }),
        }
    }

    /// The partition's watermark when the record at `offset` was about to be processed,
    /// for an offset [`OffsetTracker::safe_offset`] returned: a block's start, or the
    /// position (the watermark now). None otherwise.
    pub fn watermark_at(&self, p: u32, offset: u64) -> Option<i64> {
        let part = self.parts.get(&p)?;
        if let Some(b) = part.blocks.iter().find(|b| b.first == offset) {
            return Some(b.wm_before);
        }
        (part.position == Some(offset)).then_some(part.wm_after)
    }

    /// The offset of partition `p` that is safe to commit with `held_from`: the first
    /// offset of the first block whose max event time is `>= held_from`, else the
    /// position. None when nothing was processed since the assignment (or `p` is not
    /// assigned). Drops the blocks that are done.
    pub fn safe_offset(&mut self, p: u32, held_from: i64) -> Option<u64> {
        let part = self.parts.get_mut(&p)?;
        while part
            .blocks
            .front()
            .is_some_and(|b| b.max_event_time < held_from)
        {
            part.blocks.pop_front();
        }
        match part.blocks.front() {
            Some(b) => Some(b.first),
            None => part.position,
        }
    }

    /// The offsets to commit now: per assigned partition its safe offset, when it moved
    /// past the last one requested (`force`: in any case). Marks them requested.
    pub fn to_commit(&mut self, held_from: i64, force: bool) -> Vec<(u32, u64)> {
        let ps: Vec<u32> = self.parts.keys().copied().collect();
        let mut out = Vec::new();
        for p in ps {
            let Some(off) = self.safe_offset(p, held_from) else {
                continue;
            };
            let part = self.parts.get_mut(&p).expect("listed above");
            if force || part.requested.is_none_or(|r| off > r) {
                part.requested = Some(off);
                out.push((p, off));
            }
        }
        out
    }

    /// Marks `off` as requested for `p` (a commit made outside `to_commit`).
    pub fn requested(&mut self, p: u32, off: u64) {
        if let Some(part) = self.parts.get_mut(&p) {
            part.requested = Some(part.requested.map_or(off, |r| r.max(off)));
        }
    }

    /// A commit of `p` failed: the next `to_commit` asks again.
    pub fn failed(&mut self, p: u32) {
        if let Some(part) = self.parts.get_mut(&p) {
            part.requested = part.committed;
        }
    }

    /// The broker confirmed offset `off` of `p`.
    pub fn confirmed(&mut self, p: u32, off: u64) {
        if let Some(part) = self.parts.get_mut(&p) {
            part.committed = Some(part.committed.map_or(off, |c| c.max(off)));
        }
    }

    /// The last confirmed offset of `p`.
    pub fn committed(&self, p: u32) -> Option<u64> {
        self.parts.get(&p)?.committed
    }

    /// One past the last processed record of `p`.
    pub fn position(&self, p: u32) -> Option<u64> {
        self.parts.get(&p)?.position
    }

    /// Number of blocks held for `p` (for tests and metrics).
    pub fn blocks(&self, p: u32) -> usize {
        self.parts.get(&p).map_or(0, |part| part.blocks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = i64::MIN;

    #[test]
    fn nothing_is_safe_while_everything_is_held() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.safe_offset(0, 0), None);
        t.assign(0);
        assert_eq!(t.safe_offset(0, 0), None);
        t.processed(0, 10, 20, 100);
        t.processed(0, 20, 30, 200);
        // held_from MIN (the default): nothing is done.
        assert_eq!(t.safe_offset(0, MIN), Some(10));
        assert_eq!(t.safe_offset(0, 100), Some(10));
        assert_eq!(t.safe_offset(0, 101), Some(20));
        assert_eq!(t.blocks(0), 1);
        // All done: the position.
        assert_eq!(t.safe_offset(0, i64::MAX), Some(30));
        assert_eq!(t.blocks(0), 0);
        assert_eq!(t.position(0), Some(30));
    }

    #[test]
    fn out_of_order_runs_merge_losslessly() {
        let mut t = OffsetTracker::new();
        t.assign(3);
        t.processed(3, 0, 5, 500);
        t.processed(3, 5, 9, 300); // merged: held with the first block anyway
        t.processed(3, 9, 12, 700);
        t.processed(3, 12, 15, 700); // equal max: merged
        t.processed(3, 15, 16, MIN); // only invalid records: merged
        assert_eq!(t.blocks(3), 2);
        assert_eq!(t.safe_offset(3, 400), Some(0));
        assert_eq!(t.safe_offset(3, 501), Some(9));
        assert_eq!(t.safe_offset(3, 701), Some(16));
    }

    #[test]
    fn a_block_of_invalid_records_alone_is_done_once_anything_is() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        t.processed(0, 0, 4, MIN);
        assert_eq!(t.safe_offset(0, MIN), Some(0));
        assert_eq!(t.safe_offset(0, MIN + 1), Some(4));
    }

    #[test]
    fn to_commit_only_reports_progress_and_assigned_partitions() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        t.assign(1);
        t.processed(0, 0, 10, 100);
        t.processed(1, 50, 60, 300);
        t.processed(2, 0, 10, 1); // not assigned: ignored
        assert_eq!(t.to_commit(200, false), vec![(0, 10), (1, 50)]);
        assert_eq!(t.to_commit(200, false), vec![]);
        assert_eq!(t.to_commit(200, true), vec![(0, 10), (1, 50)]);
        t.processed(0, 10, 20, 150);
        assert_eq!(t.to_commit(200, false), vec![(0, 20)]);
        t.confirmed(0, 20);
        assert_eq!(t.committed(0), Some(20));
        // A failed commit is asked for again.
        t.failed(1);
        assert_eq!(t.to_commit(200, false), vec![(1, 50)]);
        t.revoke(0);
        assert!(!t.is_assigned(0));
        assert_eq!(t.to_commit(i64::MAX, false), vec![(1, 60)]);
        // Assigned again: afresh.
        t.assign(0);
        assert_eq!(t.committed(0), None);
        assert_eq!(t.assigned().collect::<Vec<_>>(), vec![0, 1]);
    }

    /// A small xorshift generator for the randomized tests.
    fn rng(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Random runs of records (with invalid ones and offset gaps); calls `check` after
    /// each run with the runs so far, the records so far and the position.
    fn random_runs(
        seed: u64,
        mut held_from: impl FnMut(usize, &mut dyn FnMut() -> u64) -> i64,
        mut check: impl FnMut(&mut OffsetTracker, i64, &[(u64, i64)], &[(u64, i64)], u64),
    ) {
        let mut next = rng(seed);
        let mut t = OffsetTracker::new();
        t.assign(0);
        let (mut runs, mut records) = (Vec::new(), Vec::new());
        let mut offset = 0u64;
        for step in 0..4000usize {
            let first = offset;
            let mut max = MIN;
            for _ in 0..1 + next() % 8 {
                let ts = if next().is_multiple_of(10) {
                    MIN // invalid
                } else {
                    (step as i64) * 3 - (next() % 50) as i64
                };
                records.push((offset, ts));
                max = max.max(ts);
                offset += 1 + next() % 2; // gaps (compaction, transaction markers)
            }
            runs.push((first, max));
            t.processed(0, first, offset, max);
            let h = held_from(step, &mut next);
            check(&mut t, h, &runs, &records, offset);
        }
    }

    #[test]
    fn with_a_rising_held_from_compaction_loses_nothing() {
        // Equal to the uncompacted per-run answer: the first run (after the done
        // prefix) whose max event time is >= held_from.
        let mut done = 0usize;
        let mut last = MIN;
        random_runs(
            0x9e37_79b9_7f4a_7c15,
            |step, next| {
                last = last.max((step as i64) * 3 - (next() % 120) as i64);
                last
            },
            |t, h, runs, _, position| {
                while done < runs.len() && runs[done].1 < h {
                    done += 1;
                }
                let expect = runs.get(done).map_or(position, |r| r.0);
                assert_eq!(t.safe_offset(0, h), Some(expect));
                assert!(t.blocks(0) <= runs.len() - done);
            },
        );
    }

    #[test]
    fn with_a_falling_held_from_it_stays_safe() {
        // held_from can fall in a real job (a new window may start below the oldest
        // held one). A record is done once held_from has passed its event time (its
        // windows are gone for good). Every record below the committed offset must be
        // done; and once everything is done, the position is committed.
        let mut done: Vec<bool> = Vec::new();
        random_runs(
            0x2545_f491_4f6c_dd1d,
            |step, next| (step as i64) * 3 - (next() % 300) as i64,
            |t, h, _, records, position| {
                done.resize(records.len(), false);
                for (d, r) in done.iter_mut().zip(records) {
                    *d |= r.1 < h;
                }
                let off = t.safe_offset(0, h).unwrap();
                let first_not_done = done
                    .iter()
                    .position(|d| !d)
                    .map_or(position, |i| records[i].0);
                assert!(off <= first_not_done, "{off} > {first_not_done}");
            },
        );
        let mut t = OffsetTracker::new();
        t.assign(0);
        t.processed(0, 0, 10, 50);
        t.processed(0, 10, 20, 10);
        assert_eq!(t.safe_offset(0, 40), Some(0));
        assert_eq!(t.safe_offset(0, i64::MAX), Some(20));
    }
}
