//! Per-partition watermarks with idleness (`pipeline-spec.md`, "Event time, watermarks,
//! firing").
//!
//! One [`WatermarkTracker`] per source. Each partition `p` keeps
//! `W_p = max event time seen - max_out_of_orderness` (saturating), advanced after every
//! event. The source's task watermark is the minimum of `W_p` over its *active*
//! partitions and never decreases:
//!
//! - a partition with no data for `idle_timeout` (wall clock) is idle and stops holding
//!   the watermark back until it has data again; a partition that never had data is idle
//!   `idle_timeout` after the tracker was created (or it was assigned). Without
//!   `idle_timeout` a silent partition holds the watermark back forever (as in Flink);
//! - idleness knows whether a partition is *caught up* ([`WatermarkTracker::set_caught_up`]):
//!   only a caught-up partition (a Kafka consumer whose position has reached the
//!   partition's high watermark) can be idle. A partition that is behind has data the
//!   job has not read yet, so it is never idle however long it has been quiet
//!   (backpressure, FLINK-5479), and an idle partition that falls behind is active again.
//!   Partitions are caught up unless a source says otherwise (`file`, `datagen`);
//! - when every unfinished partition is idle the watermark does not advance by itself;
//! - a bounded partition at its end has `W_p = +infinity` (`WATERMARK_MAX`); once every
//!   partition has ended the task watermark is `WATERMARK_MAX`;
//! - partitions can be assigned and revoked (Kafka rebalances): a revoked partition stops
//!   holding the watermark back at once; a source whose partitions are all revoked keeps
//!   its watermark (it does not jump to the end).
//!
//! Time is passed in (`now: Instant`) so that tests control the clock.

use std::time::{Duration, Instant};

use crate::{WATERMARK_MAX, WATERMARK_MIN};

#[derive(Clone, Debug)]
struct Partition {
    /// `max event time seen - max_out_of_orderness`, WATERMARK_MIN before any event.
    wm: i64,
    /// Last event, or when the tracker was created or the partition assigned.
    last_activity: Instant,
    idle: bool,
    finished: bool,
    /// The source has read everything there is (see `set_caught_up`); true by default.
    caught_up: bool,
    /// Assigned to this task (false once revoked).
    assigned: bool,
}

impl Partition {
    fn new(now: Instant) -> Self {
        Partition {
            wm: WATERMARK_MIN,
            last_activity: now,
            idle: false,
            finished: false,
            caught_up: true,
            assigned: true,
        }
    }

    /// Counts in the minimum.
    fn active(&self) -> bool {
        self.assigned && !self.finished && !self.idle
    }
}

/// The state of one partition, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// `max event time seen - max_out_of_orderness` (`WATERMARK_MIN` before any event,
    /// `WATERMARK_MAX` at its end).
    pub watermark: i64,
    /// Idle: not holding the task watermark back.
    pub idle: bool,
    /// Caught up with its end (see [`WatermarkTracker::set_caught_up`]).
    pub caught_up: bool,
}

/// The watermark of one source task, from the event times of its partitions.
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    max_out_of_orderness: i64,
    idle_timeout: Option<Duration>,
    created: Instant,
    partitions: Vec<Partition>,
    current: i64,
}

impl WatermarkTracker {
    /// A tracker for partitions `0..partitions` (more are added when an event of a higher
    /// partition arrives). `idle_timeout` of None: a silent partition is never idle.
    pub fn new(
        partitions: u32,
        max_out_of_orderness: i64,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        WatermarkTracker {
            max_out_of_orderness,
            idle_timeout,
            created: now,
            partitions: (0..partitions).map(|_| Partition::new(now)).collect(),
            current: WATERMARK_MIN,
        }
    }

    /// The task watermark (`WATERMARK_MIN` until the first advance).
    pub fn watermark(&self) -> i64 {
        self.current
    }

    /// Number of partitions tracked (assigned or not).
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// The watermark of partition `p` (`WATERMARK_MIN` for a partition never seen).
    pub fn partition_watermark(&self, p: u32) -> i64 {
        self.partitions
            .get(p as usize)
            .map_or(WATERMARK_MIN, |s| s.wm)
    }

    /// Whether partition `p` is currently idle.
    pub fn is_idle(&self, p: u32) -> bool {
        self.partitions.get(p as usize).is_some_and(|s| s.idle)
    }

    /// The assigned partitions in order, with their watermark and idleness.
    pub fn partition_states(&self) -> impl Iterator<Item = PartitionState> + '_ {
        self.partitions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.assigned)
            .map(|(p, s)| PartitionState {
                partition: p as u32,
                watermark: s.wm,
                idle: s.idle,
                caught_up: s.caught_up,
            })
    }

    fn partition_mut(&mut self, p: u32) -> &mut Partition {
        let p = p as usize;
        if p >= self.partitions.len() {
            // A partition seen for the first time counts as created with the tracker: a
            // later-discovered silent partition must not hold the watermark back longer
            // than one that was known from the start.
            let created = self.created;
            self.partitions
                .resize_with(p + 1, || Partition::new(created));
        }
        &mut self.partitions[p]
    }

    /// An event with event time `ts` on partition `p` at wall-clock `now`. The partition
    /// becomes active if it was idle (or revoked: an event is never ignored). Returns the
    /// new task watermark if it advanced.
    pub fn on_event(&mut self, p: u32, ts: i64, now: Instant) -> Option<i64> {
        let ooo = self.max_out_of_orderness;
        let current = self.current;
        let part = self.partition_mut(p);
        let (was_active, old) = (part.assigned && !part.idle, part.wm);
        part.last_activity = now;
        part.idle = false;
        part.assigned = true;
        if !part.finished {
            part.wm = part.wm.max(ts.saturating_sub(ooo));
        }
        // Fast path (no scan over partitions): after every operation the minimum over
        // active partitions is at most the task watermark. So if `p` was active and its
        // watermark did not move, or was already above the task watermark (another active
        // partition holds it), the task watermark cannot advance.
        if was_active && (part.wm == old || old > current) {
            return None;
        }
        self.advance()
    }

    /// Marks partitions without data for `idle_timeout` that are caught up as idle.
    /// Returns the new task watermark if that let it advance.
    pub fn check_idle(&mut self, now: Instant) -> Option<i64> {
        let timeout = self.idle_timeout?;
        let mut changed = false;
        for part in &mut self.partitions {
            if !part.idle
                && !part.finished
                && part.assigned
                && part.caught_up
                && now.saturating_duration_since(part.last_activity) >= timeout
            {
                part.idle = true;
                changed = true;
            }
        }
        if changed { self.advance() } else { None }
    }

    /// Whether the source has read everything partition `p` holds (Kafka: the consumer's
    /// position has reached the high watermark). A partition that is not caught up is
    /// never idle: it has data that is not read yet. One that was idle becomes active
    /// again (holding the watermark where it is until its data arrives), which never
    /// advances the watermark, so this returns nothing.
    pub fn set_caught_up(&mut self, p: u32, caught_up: bool) {
        // Only for partitions the tracker knows (a status never creates a partition).
        if let Some(part) = self.partitions.get_mut(p as usize) {
            part.caught_up = caught_up;
            if !caught_up {
                part.idle = false;
            }
        }
    }

    /// Partition `p` is assigned to this task at `now` (Kafka: after a rebalance). It is
    /// active, not caught up until the source says so, and its idle timeout counts from
    /// `now`. A partition assigned again keeps its watermark (the task watermark never
    /// decreases anyway). Partitions below `p` that the tracker did not know yet are not
    /// assigned by this.
    pub fn assign_partition(&mut self, p: u32, now: Instant) {
        let i = p as usize;
        if i >= self.partitions.len() {
            self.partitions.resize_with(i + 1, || Partition {
                assigned: false,
                ..Partition::new(now)
            });
        }
        let part = &mut self.partitions[i];
        if !part.assigned {
            part.assigned = true;
            part.idle = false;
            part.finished = false;
            part.caught_up = false;
            part.last_activity = now;
        }
    }

    /// Partition `p` is no longer this task's (Kafka: revoked in a rebalance): it stops
    /// holding the watermark back. Returns the new task watermark if it advanced.
    pub fn revoke_partition(&mut self, p: u32) -> Option<i64> {
        let part = self.partitions.get_mut(p as usize)?;
        if !part.assigned {
            return None;
        }
        part.assigned = false;
        part.idle = false;
        self.advance()
    }

    /// A restore (checkpoint, committed offsets' metadata, rollback): partition `p` is
    /// assigned with watermark `wm` and idleness `idle`, as they were when its state was
    /// saved, even if that is below its watermark now (a rollback goes back in time).
    /// Call [`WatermarkTracker::restore_task`] after the partitions.
    pub fn restore_partition(&mut self, p: u32, wm: i64, idle: bool, now: Instant) {
        self.assign_partition(p, now);
        let part = self.partition_mut(p);
        part.wm = wm;
        part.idle = idle;
        part.finished = false;
        part.last_activity = now;
    }

    /// A restore: the task watermark is `wm` (a checkpoint's), or, with None, the
    /// minimum over the active partitions now (which may be below the current one: a
    /// rollback). Returns the task watermark.
    pub fn restore_task(&mut self, wm: Option<i64>) -> i64 {
        match wm {
            Some(wm) => self.current = wm,
            None => {
                let min = self
                    .partitions
                    .iter()
                    .filter(|p| p.active())
                    .map(|p| p.wm)
                    .min();
                if let Some(m) = min {
                    self.current = m;
                }
            }
        }
        self.current
    }

    /// Partition `p` reached its end (bounded): from now on it is at `WATERMARK_MAX`.
    /// Returns the new task watermark if it advanced.
    pub fn finish_partition(&mut self, p: u32) -> Option<i64> {
        let part = self.partition_mut(p);
        part.finished = true;
        part.idle = false;
        part.wm = WATERMARK_MAX;
        self.advance()
    }

    /// Every partition reached its end: the watermark becomes `WATERMARK_MAX`. Returns it
    /// if it advanced.
    pub fn finish_all(&mut self) -> Option<i64> {
        for part in &mut self.partitions {
            part.finished = true;
            part.idle = false;
            part.wm = WATERMARK_MAX;
        }
        self.set(WATERMARK_MAX)
    }

    /// Recomputes the task watermark: the minimum over active (assigned, not idle,
    /// unfinished) partitions; `WATERMARK_MAX` once all partitions are assigned and
    /// finished; no change when there is no active partition otherwise.
    fn advance(&mut self) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut all_finished = !self.partitions.is_empty();
        for part in &self.partitions {
            all_finished &= part.finished && part.assigned;
            if part.active() {
                min = Some(min.map_or(part.wm, |m| m.min(part.wm)));
            }
        }
        let candidate = match min {
            Some(m) => m,
            // No partitions at all is not "all finished": a source with no partitions
            // yet (Kafka before assignment) must not jump to the end.
            None if all_finished => WATERMARK_MAX,
            None => return None,
        };
        self.set(candidate)
    }

    fn set(&mut self, candidate: i64) -> Option<i64> {
        if candidate > self.current {
            self.current = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn single_partition_follows_max_minus_out_of_orderness() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(1, 10, None, t0);
        assert_eq!(w.watermark(), WATERMARK_MIN);
        assert_eq!(w.on_event(0, 100, t0), Some(90));
        // Out of order: no advance, never decreases.
        assert_eq!(w.on_event(0, 95, t0), None);
        assert_eq!(w.on_event(0, 50, t0), None);
        assert_eq!(w.watermark(), 90);
        assert_eq!(w.on_event(0, 101, t0), Some(91));
        assert_eq!(w.finish_partition(0), Some(WATERMARK_MAX));
        assert_eq!(w.on_event(0, 200, t0), None);
        assert_eq!(w.watermark(), WATERMARK_MAX);
    }

    #[test]
    fn saturates_at_both_ends() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(1, 1000, None, t0);
        assert_eq!(w.on_event(0, i64::MIN + 5, t0), None);
        assert_eq!(w.watermark(), WATERMARK_MIN);
        let mut w = WatermarkTracker::new(1, -5, None, t0);
        assert_eq!(w.on_event(0, i64::MAX - 1, t0), Some(i64::MAX));
    }

    #[test]
    fn minimum_over_partitions() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 0, None, t0);
        // Partition 1 has no data and no idle timeout: it holds the watermark back.
        assert_eq!(w.on_event(0, 100, t0), None);
        assert_eq!(w.check_idle(t0 + 3600 * S), None);
        assert_eq!(w.on_event(1, 50, t0), Some(50));
        assert_eq!(w.on_event(1, 150, t0), Some(100));
        assert_eq!(w.on_event(0, 120, t0), Some(120));
        // Finishing one partition leaves the other one in charge.
        assert_eq!(w.finish_partition(0), Some(150));
        assert_eq!(w.finish_partition(1), Some(WATERMARK_MAX));
    }

    #[test]
    fn partitions_grow_on_demand() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(1, 0, None, t0);
        assert_eq!(w.on_event(0, 10, t0), Some(10));
        // Partition 3 appears: partitions 1 and 2 (never seen) hold the watermark.
        assert_eq!(w.on_event(3, 20, t0), None);
        assert_eq!(w.partitions(), 4);
        assert_eq!(w.watermark(), 10);
    }

    #[test]
    fn idle_partition_stops_holding_back_until_it_has_data() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 0, Some(30 * S), t0);
        assert_eq!(w.on_event(0, 100, t0), None);
        assert_eq!(w.on_event(1, 40, t0), Some(40));
        // Partition 0 keeps getting data, partition 1 goes silent.
        assert_eq!(w.on_event(0, 200, t0 + 20 * S), None);
        assert_eq!(w.check_idle(t0 + 29 * S), None);
        assert!(!w.is_idle(1));
        assert_eq!(w.check_idle(t0 + 30 * S), Some(200));
        assert!(w.is_idle(1));
        assert!(!w.is_idle(0));
        assert_eq!(w.on_event(0, 300, t0 + 31 * S), Some(300));
        // Partition 1 has data again: active, holds back (watermark stays monotonic).
        assert_eq!(w.on_event(1, 50, t0 + 32 * S), None);
        assert!(!w.is_idle(1));
        assert_eq!(w.watermark(), 300);
        assert_eq!(w.on_event(0, 400, t0 + 33 * S), None);
        assert_eq!(w.on_event(1, 350, t0 + 34 * S), Some(350));
    }

    #[test]
    fn never_seen_partition_is_idle_after_timeout_from_start() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 5, Some(10 * S), t0);
        assert_eq!(w.on_event(0, 100, t0 + 9 * S), None);
        assert_eq!(w.check_idle(t0 + 10 * S), Some(95));
        assert!(w.is_idle(1));
        // Partition 0 is not idle: it had data 1 s ago.
        assert!(!w.is_idle(0));
    }

    #[test]
    fn all_idle_does_not_advance() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 0, Some(S), t0);
        assert_eq!(w.on_event(0, 100, t0), None);
        assert_eq!(w.on_event(1, 50, t0), Some(50));
        assert_eq!(w.check_idle(t0 + 2 * S), None);
        assert!(w.is_idle(0) && w.is_idle(1));
        assert_eq!(w.watermark(), 50);
        // One partition wakes up: the minimum over the active ones is its own.
        assert_eq!(w.on_event(1, 70, t0 + 3 * S), Some(70));
        // Idle partitions plus finished ones: still no advance by itself.
        assert_eq!(w.finish_partition(1), None);
        assert_eq!(w.watermark(), 70);
        assert_eq!(w.on_event(0, 120, t0 + 4 * S), Some(120));
    }

    #[test]
    fn idle_and_finished_interplay() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(3, 0, Some(S), t0);
        assert_eq!(w.on_event(0, 10, t0), None);
        assert_eq!(w.finish_partition(1), None);
        // Partition 2 never had data, becomes idle; partition 0 was active at t0.
        assert_eq!(w.on_event(0, 20, t0 + S / 2), None);
        assert_eq!(w.check_idle(t0 + S), Some(20));
        assert_eq!(w.finish_partition(0), None);
        assert_eq!(w.watermark(), 20);
        assert_eq!(w.finish_partition(2), Some(WATERMARK_MAX));
    }

    #[test]
    fn finish_all_jumps_to_max_once() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(1, 0, None, t0);
        assert_eq!(w.finish_all(), Some(WATERMARK_MAX));
        assert_eq!(w.finish_all(), None);
        // No partitions at all: finishing all still ends the source.
        let mut w = WatermarkTracker::new(0, 0, None, t0);
        assert_eq!(w.check_idle(t0), None);
        assert_eq!(w.finish_all(), Some(WATERMARK_MAX));
    }

    #[test]
    fn monotonic_under_arbitrary_input() {
        // A small deterministic pseudo-random walk over events, idleness and clock.
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(4, 7, Some(S), t0);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = t0;
        let mut last = w.watermark();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = w_step(&mut w, x, &mut now);
            if let Some(wm) = r {
                assert!(wm > last, "{wm} <= {last}");
                last = wm;
            }
            assert_eq!(w.watermark(), last);
        }
    }

    fn w_step(w: &mut WatermarkTracker, x: u64, now: &mut Instant) -> Option<i64> {
        *now += Duration::from_millis(x % 300);
        match x % 10 {
            0 => w.check_idle(*now),
            _ => w.on_event(((x >> 8) % 4) as u32, ((x >> 16) % 100_000) as i64, *now),
        }
    }

    #[test]
    fn backpressured_partition_is_never_idle() {
        // FLINK-5479: a partition that is behind (position < high watermark) has data the
        // job has not read; however long it is quiet, it must hold the watermark back.
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 0, Some(S), t0);
        w.set_caught_up(1, false);
        assert_eq!(w.on_event(0, 100, t0), None);
        assert_eq!(w.on_event(1, 10, t0), Some(10));
        assert_eq!(w.on_event(0, 200, t0 + 10 * S), None);
        assert_eq!(w.check_idle(t0 + 60 * S), None);
        assert!(!w.is_idle(1));
        assert_eq!(w.watermark(), 10);
        // Caught up now: idle once quiet for the timeout (it was quiet long enough).
        w.set_caught_up(1, true);
        assert_eq!(w.check_idle(t0 + 60 * S), None, "partition 0 is idle too");
        assert!(w.is_idle(1));
        assert_eq!(w.on_event(0, 300, t0 + 61 * S), Some(300));
    }

    #[test]
    fn idle_partition_that_falls_behind_is_active_again() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, 0, Some(S), t0);
        assert_eq!(w.on_event(0, 100, t0 + 2 * S), None);
        assert_eq!(w.check_idle(t0 + 2 * S), Some(100));
        assert!(w.is_idle(1));
        // New data arrived in partition 1 but is not read yet: it holds the watermark
        // where it is (which never decreases) until its events arrive.
        w.set_caught_up(1, false);
        assert!(!w.is_idle(1));
        assert_eq!(w.on_event(0, 200, t0 + 3 * S), None);
        assert_eq!(w.check_idle(t0 + 10 * S), None);
        assert_eq!(w.watermark(), 100);
        assert_eq!(w.on_event(1, 150, t0 + 11 * S), Some(150));
        // Unknown partitions are not created by a status.
        w.set_caught_up(7, false);
        assert_eq!(w.partitions(), 2);
    }

    #[test]
    fn assigned_empty_partition_is_idle_after_timeout_once_caught_up() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, 0, Some(10 * S), t0);
        // Kafka: nothing assigned yet, no jump to the end.
        assert_eq!(w.check_idle(t0 + 100 * S), None);
        w.assign_partition(0, t0 + 20 * S);
        w.assign_partition(2, t0 + 20 * S);
        // Partition 1 is a gap, not assigned: it never holds anything back.
        assert_eq!(
            w.partition_states()
                .map(|s| s.partition)
                .collect::<Vec<_>>(),
            vec![0, 2]
        );
        // Partition 2 is assigned and has no data: it holds the watermark back.
        assert_eq!(w.on_event(0, 500, t0 + 21 * S), None);
        assert_eq!(w.on_event(0, 600, t0 + 25 * S), None);
        // Partition 2 never gets data. Not caught up: never idle.
        assert_eq!(w.check_idle(t0 + 35 * S), None);
        w.set_caught_up(2, true);
        // Caught up, and quiet since its assignment for the timeout (20 s + 10 s).
        assert_eq!(w.check_idle(t0 + 29 * S), None);
        assert_eq!(w.check_idle(t0 + 30 * S), Some(600));
        assert!(w.is_idle(2) && !w.is_idle(0));
    }

    #[test]
    fn revoked_partition_stops_holding_back() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, 0, None, t0);
        w.assign_partition(0, t0);
        w.assign_partition(1, t0);
        assert_eq!(w.on_event(0, 100, t0), None);
        assert_eq!(w.on_event(1, 50, t0), Some(50));
        assert_eq!(w.revoke_partition(1), Some(100));
        assert_eq!(w.revoke_partition(1), None);
        assert_eq!(w.revoke_partition(9), None);
        // All revoked: the watermark stays, never jumps to the end.
        assert_eq!(w.revoke_partition(0), None);
        assert_eq!(w.watermark(), 100);
        assert_eq!(w.partition_states().count(), 0);
        // Assigned again: holds from its old watermark; the task watermark never drops.
        w.assign_partition(1, t0);
        assert_eq!(w.on_event(1, 80, t0), None);
        assert_eq!(w.watermark(), 100);
        assert_eq!(w.on_event(1, 130, t0), Some(130));
        // An event on a revoked partition is not ignored: the partition counts again.
        assert_eq!(w.on_event(0, 90, t0), None);
        assert_eq!(w.on_event(1, 200, t0), None);
        assert_eq!(w.on_event(0, 250, t0), Some(200));
    }
}
