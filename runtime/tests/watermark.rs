//! `WatermarkTracker` against a direct transcription of the rules in
//! `pipeline-spec.md` (per partition `max ts - out-of-orderness`; minimum over active
//! partitions; idle after `idle_timeout` without data; +infinity at the end; monotonic),
//! on random sequences of events, clock ticks and partition ends.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use streamc_runtime::watermark::WatermarkTracker;
use streamc_runtime::{WATERMARK_MAX, WATERMARK_MIN};

#[derive(Clone, Debug)]
enum Op {
    /// Advance the clock by `dt` ms, then an event on partition `p` with time `ts`.
    Event {
        dt: u64,
        p: u32,
        ts: i64,
    },
    /// Advance the clock by `dt` ms, then check idleness.
    Tick {
        dt: u64,
    },
    Finish {
        p: u32,
    },
}

fn op(partitions: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..400u64, 0..partitions, -1000..10_000i64).prop_map(|(dt, p, ts)| Op::Event { dt, p, ts }),
        2 => (0..2000u64).prop_map(|dt| Op::Tick { dt }),
        1 => (0..partitions).prop_map(|p| Op::Finish { p }),
    ]
}

/// The rules, written out plainly.
struct Model {
    ooo: i64,
    idle_timeout: Option<u64>,
    /// Per partition: max event time, last data (ms on the model clock), idle, finished.
    parts: Vec<(Option<i64>, u64, bool, bool)>,
    wm: i64,
}

impl Model {
    fn candidate(&self) -> Option<i64> {
        let unfinished: Vec<_> = self.parts.iter().filter(|p| !p.3).collect();
        if unfinished.is_empty() {
            return Some(WATERMARK_MAX);
        }
        unfinished
            .iter()
            .filter(|p| !p.2)
            .map(|p| p.0.map_or(WATERMARK_MIN, |m| m.saturating_sub(self.ooo)))
            .min()
    }

    fn step(&mut self) -> Option<i64> {
        match self.candidate() {
            Some(c) if c > self.wm => {
                self.wm = c;
                Some(c)
            }
            _ => None,
        }
    }
}

fn check(partitions: u32, ooo: i64, idle_timeout: Option<u64>, ops: &[Op]) {
    let t0 = Instant::now();
    let mut tracker =
        WatermarkTracker::new(partitions, ooo, idle_timeout.map(Duration::from_millis), t0);
    let mut model = Model {
        ooo,
        idle_timeout,
        parts: vec![(None, 0, false, false); partitions as usize],
        wm: WATERMARK_MIN,
    };
    let mut clock = 0u64;
    for op in ops {
        let got = match *op {
            Op::Event { dt, p, ts } => {
                clock += dt;
                let part = &mut model.parts[p as usize];
                if !part.3 {
                    part.0 = Some(part.0.map_or(ts, |m| m.max(ts)));
                }
                part.1 = clock;
                part.2 = false;
                tracker.on_event(p, ts, t0 + Duration::from_millis(clock))
            }
            Op::Tick { dt } => {
                clock += dt;
                if let Some(timeout) = model.idle_timeout {
                    for part in &mut model.parts {
                        if !part.3 && clock - part.1 >= timeout {
                            part.2 = true;
                        }
                    }
                }
                tracker.check_idle(t0 + Duration::from_millis(clock))
            }
            Op::Finish { p } => {
                model.parts[p as usize].3 = true;
                model.parts[p as usize].2 = false;
                tracker.finish_partition(p)
            }
        };
        let expect = model.step();
        assert_eq!(got, expect, "after {op:?}");
        assert_eq!(tracker.watermark(), model.wm);
        for p in 0..partitions {
            let part = model.parts[p as usize];
            assert_eq!(
                tracker.is_idle(p),
                part.2 && !part.3,
                "idle {p} after {op:?}"
            );
        }
    }
}

proptest! {
    #[test]
    fn matches_the_rules_with_idleness(
        partitions in 1..5u32,
        ooo in 0..500i64,
        timeout in 100..3000u64,
        ops in prop::collection::vec(op(4), 0..200),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| match o {
            Op::Event { p, .. } | Op::Finish { p } => *p < partitions,
            Op::Tick { .. } => true,
        }).collect();
        check(partitions, ooo, Some(timeout), &ops);
    }

    #[test]
    fn matches_the_rules_without_idleness(
        partitions in 1..4u32,
        ooo in 0..500i64,
        ops in prop::collection::vec(op(3), 0..200),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| match o {
            Op::Event { p, .. } | Op::Finish { p } => *p < partitions,
            Op::Tick { .. } => true,
        }).collect();
        check(partitions, ooo, None, &ops);
    }
}

#[test]
fn watermark_never_decreases_when_an_idle_partition_returns_behind() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut w = WatermarkTracker::new(2, 0, Some(5 * s), t0);
    w.on_event(0, 1_000, t0);
    w.on_event(1, 1_000, t0);
    assert_eq!(w.watermark(), 1_000);
    // Partition 1 goes silent; partition 0 moves on and carries the watermark.
    assert_eq!(w.on_event(0, 9_000, t0 + 4 * s), None);
    assert_eq!(w.check_idle(t0 + 6 * s), Some(9_000));
    // Partition 1 comes back far behind: active again, but the watermark holds.
    assert_eq!(w.on_event(1, 2_000, t0 + 7 * s), None);
    assert_eq!(w.watermark(), 9_000);
    assert_eq!(w.on_event(0, 20_000, t0 + 7 * s), None);
    assert_eq!(w.on_event(1, 15_000, t0 + 8 * s), Some(15_000));
}

#[test]
fn a_silent_partition_without_idle_timeout_holds_forever() {
    let t0 = Instant::now();
    let mut w = WatermarkTracker::new(2, 0, None, t0);
    for i in 0..100 {
        assert_eq!(
            w.on_event(0, i * 1000, t0 + Duration::from_secs(i as u64)),
            None
        );
        assert_eq!(
            w.check_idle(t0 + Duration::from_secs(i as u64 * 3600)),
            None
        );
    }
    assert_eq!(w.watermark(), WATERMARK_MIN);
    // Its end releases the watermark.
    assert_eq!(w.finish_partition(1), Some(99_000));
    assert_eq!(w.finish_partition(0), Some(WATERMARK_MAX));
}
