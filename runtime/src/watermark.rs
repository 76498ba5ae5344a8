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
//!   `idle_timeout` after the tracker was created. Without `idle_timeout` a silent
//!   partition holds the watermark back forever (as in Flink);
//! - when every unfinished partition is idle the watermark does not advance by itself;
//! - a bounded partition at its end has `W_p = +infinity` (`WATERMARK_MAX`); once every
//!   partition has ended the task watermark is `WATERMARK_MAX`.
//!
//! Time is passed in (`now: Instant`) so that tests control the clock.

use std::time::{Duration, Instant};

use crate::{WATERMARK_MAX, WATERMARK_MIN};

#[derive(Clone, Debug)]
struct Partition {
    /// `max event time seen - max_out_of_orderness`, WATERMARK_MIN before any event.
    wm: i64,
    /// Last event, or when the tracker was created.
    last_activity: Instant,
    idle: bool,
    finished: bool,
}

impl Partition {
    fn new(now: Instant) -> Self {
        Partition {
            wm: WATERMARK_MIN,
            last_activity: now,
            idle: false,
            finished: false,
        }
    }
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

    /// Number of partitions tracked.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Whether partition `p` is currently idle.
    pub fn is_idle(&self, p: u32) -> bool {
        self.partitions.get(p as usize).is_some_and(|s| s.idle)
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
    /// becomes active if it was idle. Returns the new task watermark if it advanced.
    pub fn on_event(&mut self, p: u32, ts: i64, now: Instant) -> Option<i64> {
        let ooo = self.max_out_of_orderness;
        let current = self.current;
        let part = self.partition_mut(p);
        let (was_idle, old) = (part.idle, part.wm);
        part.last_activity = now;
        part.idle = false;
        if !part.finished {
            part.wm = part.wm.max(ts.saturating_sub(ooo));
        }
        // Fast path (no scan over partitions): after every operation the minimum over
        // active partitions is at most the task watermark. So if `p` was active and its
        // watermark did not move, or was already above the task watermark (another active
        // partition holds it), the task watermark cannot advance.
        if !was_idle && (part.wm == old || old > current) {
            return None;
        }
        self.advance()
    }

    /// Marks partitions without data for `idle_timeout` as idle. Returns the new task
    /// watermark if that let it advance.
    pub fn check_idle(&mut self, now: Instant) -> Option<i64> {
        let timeout = self.idle_timeout?;
        let mut changed = false;
        for part in &mut self.partitions {
            if !part.idle
                && !part.finished
                && now.saturating_duration_since(part.last_activity) >= timeout
            {
                part.idle = true;
                changed = true;
            }
        }
        if changed { self.advance() } else { None }
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

    /// Recomputes the task watermark: the minimum over active (not idle) unfinished
    /// partitions, `WATERMARK_MAX` once all partitions have finished, no change when the
    /// unfinished ones are all idle.
    fn advance(&mut self) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut any_unfinished = false;
        for part in &self.partitions {
            if part.finished {
                continue;
            }
            any_unfinished = true;
            if !part.idle {
                min = Some(min.map_or(part.wm, |m| m.min(part.wm)));
            }
        }
        let candidate = match (min, any_unfinished) {
            (Some(m), _) => m,
            // No partitions at all is not "all finished": a source with no partitions
            // yet (Kafka before assignment) must not jump to the end.
            (None, false) if !self.partitions.is_empty() => WATERMARK_MAX,
            _ => return None,
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
}
