//! Tumbling windows (and the window arithmetic of tumbling and sliding ones): the
//! windows of an event are a function of its event time alone, so a window is
//! identified by `(key, start, end)` and never merges.
//!
//! State is window-major: `BTreeMap<(end, start), HashMap<K, Win>>`, one "slot" per
//! window bounds, holding every key's state for those bounds. The ordered map is the
//! timer structure: a slot fires when the watermark passes its `end` (slots in order of
//! end, keys within a slot in key order) and is dropped whole at `end + lateness`.
//! So firing reads due slots sequentially and never looks keys up, purging frees whole
//! maps, and per event there is one hash lookup by `&K` (the key is cloned only when it
//! gets state in a slot). Measured against a key-major layout (per key a small vec of
//! windows plus `BTreeMap<time, Vec<K>>` timers) on the `window` bench: faster for
//! tumbling windows, where an event lands in one window. Sliding windows, where it
//! lands in `size / slide`, are key-major (`sliding.rs`): one lookup instead of several.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{Aggregator, Emission, fire_next};
use crate::state::{Backend, Decoder, Encoder, KeyedStore, Mode, StateError, StateKey, StateValue};

/// How event times map to windows (sizes and slides are at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Assigner {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64 },
}

pub(super) fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The start of the tumbling window holding `ts` (may lie below `i64::MIN`).
fn tumbling_start(ts: i64, size: i64, offset: i64) -> i128 {
    // i64 fast path (i128 division is a library call); exact whenever nothing overflows.
    if let Some(start) = ts
        .checked_sub(offset)
        .and_then(|d| ts.checked_sub(d.rem_euclid(size)))
    {
        return i128::from(start);
    }
    let ts = i128::from(ts);
    ts - (ts - i128::from(offset)).rem_euclid(i128::from(size))
}

/// The tumbling window `[start, end)` holding `ts`, clamped to the i64 range.
pub fn tumbling_window(ts: i64, size: i64, offset: i64) -> (i64, i64) {
    let size = size.max(1);
    let start = tumbling_start(ts, size, offset);
    (clamp(start), clamp(start + i128::from(size)))
}

/// The starts `s` of the sliding windows holding `ts`, as the inclusive range
/// `(first, last)` stepped by `slide` (computed in i128: no overflow).
fn sliding_starts(ts: i64, size: i64, slide: i64) -> (i128, i128) {
    // i64 fast path, as for tumbling windows.
    if let Some(last) = ts.checked_sub(ts.rem_euclid(slide))
        && let Some(lo) = ts.checked_sub(size).and_then(|v| v.checked_add(1))
        && let Some(first) = lo
            .checked_neg()
            .and_then(|n| lo.checked_add(n.rem_euclid(slide)))
    {
        return (i128::from(first), i128::from(last));
    }
    let (ts, size, slide) = (i128::from(ts), i128::from(size), i128::from(slide));
    let last = ts - ts.rem_euclid(slide);
    let lo = ts - size + 1;
    let first = lo + (-lo).rem_euclid(slide);
    (first, last)
}

/// Every sliding window `[start, end)` holding `ts`, in order of start, clamped to the
/// i64 range (for tests and tools; the operator uses the same arithmetic).
pub fn sliding_windows(ts: i64, size: i64, slide: i64) -> Vec<(i64, i64)> {
    let (size, slide) = (size.max(1), slide.max(1));
    let (first, last) = sliding_starts(ts, size, slide);
    let mut v = Vec::new();
    let mut s = first;
    while s <= last {
        v.push((clamp(s), clamp(s + i128::from(size))));
        s += i128::from(slide);
    }
    v
}

impl Assigner {
    pub(super) fn size(self) -> i64 {
        match self {
            Assigner::Tumbling { size, .. } | Assigner::Sliding { size, .. } => size,
        }
    }

    /// The starts of the windows of `ts` that are live at watermark `wm < i64::MAX`
    /// (`end + lateness > wm`), as `(first, last, step)`; empty when `first > last`.
    pub(super) fn live_starts(self, ts: i64, wm: i64, lateness: i64) -> (i128, i128, i128) {
        let size = i128::from(self.size());
        let (first, last, step) = match self {
            Assigner::Tumbling { size, offset } => {
                let s = tumbling_start(ts, size, offset);
                (s, s, 1)
            }
            Assigner::Sliding { size, slide } => {
                let (first, last) = sliding_starts(ts, size, slide);
                (first, last, i128::from(slide))
            }
        };
        // Live: s + size + lateness > wm, i.e. s >= min_live. Liveness grows with s, so
        // the live windows are a suffix: round min_live up onto the grid of starts.
        let min_live = i128::from(wm) - size - i128::from(lateness) + 1;
        let first = if first >= min_live {
            first
        } else {
            min_live + (first - min_live).rem_euclid(step)
        };
        (first, last, step)
    }
}

/// One key's state in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Win<A> {
    /// The revision of the next firing; 0 = never fired.
    next_rev: u32,
    /// Events whose last window this is (for a sliding window, the one of largest
    /// end; so each event is counted once): see `unfired_events`.
    events: u64,
    acc: A,
}

/// Every window's keys, by window bounds `(end, start)`.
type Slots<K, A, B> = BTreeMap<(i64, i64), Slot<<B as Backend>::Store<K, Win<A>>>>;

/// One window's bounds: every key's state for them.
struct Slot<S> {
    keys: S,
    /// Created since the last snapshot: the next one writes it whole.
    fresh: bool,
}

/// The store tag of the slot of window bounds `(end, start)`: `f`, then both bounds
/// big-endian with the sign bit flipped (ordered like the bounds).
fn slot_tag(end: i64, start: i64) -> [u8; 17] {
    let mut tag = [0u8; 17];
    tag[0] = b'f';
    tag[1..9].copy_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    tag[9..].copy_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    tag
}

/// Tumbling (or sliding) windows of every key.
pub(super) struct FixedWindows<K: StateKey, A: StateValue, B: Backend> {
    assigner: Assigner,
    lateness: i64,
    backend: B,
    /// (end, start) -> every key's state of window [start, end). Slots with
    /// `end <= fired_to` have fired; a slot is removed at `end + lateness <= watermark`.
    slots: Slots<K, A, B>,
    /// The watermark of the last `advance`.
    fired_to: i64,
    live: usize,
    /// The number of keys of the last purged slot: a new slot's map is created with
    /// room for as many (windows of a steady stream hold similar key counts), so it
    /// does not rehash its way up from empty. Measured on bench J1 (1M events, 100k
    /// keys per window): see `BENCHMARKS.md`.
    size_hint: usize,
}

impl<K, A, B> FixedWindows<K, A, B>
where
    K: StateKey,
    A: Aggregator + StateValue,
    B: Backend,
{
    pub(super) fn new(assigner: Assigner, lateness: i64, backend: B) -> Self {
        FixedWindows {
            assigner,
            lateness,
            backend,
            slots: BTreeMap::new(),
            fired_to: i64::MIN,
            live: 0,
            size_hint: 0,
        }
    }

    pub(super) fn live_windows(&self) -> usize {
        self.live
    }

    /// The smallest start of any held window: the first slot's, since every slot spans
    /// `size` (ordered by end is ordered by start; clamping at the i64 extremes keeps
    /// the order).
    pub(super) fn oldest_held_start(&self) -> Option<i64> {
        self.slots.first_key_value().map(|(&(_, start), _)| start)
    }

    /// `oldest_held_start` by a scan over every slot (for tests).
    #[cfg(test)]
    pub(super) fn oldest_held_start_by_scan(&self) -> Option<i64> {
        self.slots.keys().map(|&(_, start)| start).min()
    }

    /// Events held in windows that have not fired (`end > fired_to`), each counted
    /// once; a scan over those windows (for the summary of a stopped job).
    pub(super) fn unfired_events(&self) -> u64 {
        let due = (Bound::Excluded((self.fired_to, i64::MAX)), Bound::Unbounded);
        let mut n = 0;
        for slot in self.slots.range(due).map(|(_, s)| s) {
            slot.keys.for_each(|_, w| n += w.events);
        }
        n
    }

    /// Each slot is one pending timer (its firing, then its purge).
    pub(super) fn pending_timers(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn process(
        &mut self,
        wm: i64,
        key: &K,
        ts: i64,
        mut update: impl FnMut(&mut A),
        emit: &mut impl FnMut(Emission<K, A::Output>),
    ) -> bool {
        if wm == i64::MAX {
            return false; // end of input: every window is dead
        }
        let (first, last, step) = self.assigner.live_starts(ts, wm, self.lateness);
        if first > last {
            return false;
        }
        let size = i128::from(self.assigner.size());
        let mut s = first;
        while s <= last {
            let (start, end) = (clamp(s), clamp(s + size));
            let is_last = s == last;
            s += step;
            let (hint, backend) = (self.size_hint, &self.backend);
            let slot = self.slots.entry((end, start)).or_insert_with(|| Slot {
                keys: backend.store(&slot_tag(end, start), hint),
                fresh: true,
            });
            let (w, new) = slot.keys.get_or_insert_with(key, || Win {
                next_rev: 0,
                events: 0,
                acc: A::default(),
            });
            if new {
                self.live += 1;
            }
            w.events += u64::from(is_last);
            update(&mut w.acc);
            if end <= wm {
                // Fired already (or due and new): fire at once with the next revision.
                emit(fire_next(key.clone(), start, end, &mut w.next_rev, &w.acc));
            }
        }
        true
    }

    pub(super) fn advance(&mut self, wm: i64, emit: &mut impl FnMut(Emission<K, A::Output>)) {
        // Fire the slots that became due: fired_to < end <= wm, in order of end.
        let due = (
            Bound::Excluded((self.fired_to, i64::MAX)),
            Bound::Included((wm, i64::MAX)),
        );
        // (`range_mut` panics on an empty or inverted range: the guard rules that out.)
        if self.fired_to < wm {
            for (&(end, start), slot) in self.slots.range_mut(due) {
                slot.keys.for_each_sorted_mut(|key, w| {
                    emit(fire_next(key.clone(), start, end, &mut w.next_rev, &w.acc));
                });
            }
            self.fired_to = wm;
        }
        // Purge: slots are ordered by end, so the dead ones are a prefix.
        while let Some(slot) = self.slots.first_entry() {
            if slot.key().0.saturating_add(self.lateness) > wm {
                break;
            }
            let keys = slot.remove().keys.len();
            self.live -= keys;
            self.size_hint = keys;
        }
    }

    /// The slots' bounds, then each slot's store: whole when it is new since the last
    /// snapshot (or `mode` is full), else its changes. A slot purged since is simply not
    /// listed.
    pub(super) fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        out.put(&self.fired_to)?;
        out.put_len(self.size_hint)?;
        out.put_len(self.slots.len())?;
        for (bounds, slot) in &mut self.slots {
            out.put(bounds)?;
            let m = if slot.fresh { Mode::Full } else { mode };
            slot.keys.snapshot(m, out)?;
            slot.fresh = false;
        }
        Ok(())
    }

    pub(super) fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        self.fired_to = input.take()?;
        self.size_hint = input.take_len()?;
        let n = input.take_len()?;
        let mut old = std::mem::take(&mut self.slots);
        for _ in 0..n {
            let bounds: (i64, i64) = input.take()?;
            let mut slot = old.remove(&bounds).unwrap_or_else(|| Slot {
                keys: self.backend.store(&slot_tag(bounds.0, bounds.1), 0),
                fresh: false,
            });
            slot.keys.restore(input)?;
            slot.fresh = false;
            self.slots.insert(bounds, slot);
        }
        self.live = self.slots.values().map(|s| s.keys.len()).sum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_basic_and_offset() {
        assert_eq!(tumbling_window(0, 10, 0), (0, 10));
        assert_eq!(tumbling_window(9, 10, 0), (0, 10));
        assert_eq!(tumbling_window(10, 10, 0), (10, 20));
        assert_eq!(tumbling_window(12, 10, 3), (3, 13));
        assert_eq!(tumbling_window(2, 10, 3), (-7, 3));
        assert_eq!(tumbling_window(13, 10, 3), (13, 23));
        // Offset larger than size and negative offset are the same grid mod size.
        assert_eq!(tumbling_window(12, 10, 23), (3, 13));
        assert_eq!(tumbling_window(12, 10, -7), (3, 13));
    }

    #[test]
    fn tumbling_negative_timestamps() {
        assert_eq!(tumbling_window(-1, 10, 0), (-10, 0));
        assert_eq!(tumbling_window(-10, 10, 0), (-10, 0));
        assert_eq!(tumbling_window(-11, 10, 0), (-20, -10));
        assert_eq!(tumbling_window(-60_001, 60_000, 0), (-120_000, -60_000));
    }

    #[test]
    fn tumbling_extremes_do_not_overflow() {
        let (s, e) = tumbling_window(i64::MIN, 60_000, 0);
        assert_eq!(s, i64::MIN); // clamped: the true start lies below i64::MIN
        assert!(e > s);
        let (s, e) = tumbling_window(i64::MAX, 60_000, 17);
        assert!(s < e && e == i64::MAX);
        let (s, e) = tumbling_window(i64::MIN, i64::MAX, i64::MAX);
        assert!(s <= e);
        let (s, e) = tumbling_window(i64::MAX, i64::MAX, i64::MIN);
        assert!(s <= e);
    }

    #[test]
    fn sliding_assignment_counts() {
        assert_eq!(
            sliding_windows(12, 30, 10),
            vec![(-10, 20), (0, 30), (10, 40)]
        );
        assert_eq!(
            sliding_windows(10, 30, 10),
            vec![(-10, 20), (0, 30), (10, 40)]
        );
        assert_eq!(
            sliding_windows(-1, 30, 10),
            vec![(-30, 0), (-20, 10), (-10, 20)]
        );
        for ts in -100..100 {
            assert_eq!(sliding_windows(ts, 60, 15).len(), 4);
            assert_eq!(
                sliding_windows(ts, 10, 10),
                vec![tumbling_window(ts, 10, 0)]
            );
            for (s, e) in sliding_windows(ts, 60, 15) {
                assert!(s <= ts && ts < e && s.rem_euclid(15) == 0 && e - s == 60);
            }
        }
        // Size not a multiple of slide still yields exactly the windows holding ts.
        assert_eq!(sliding_windows(5, 25, 10), vec![(-10, 15), (0, 25)]);
        assert_eq!(sliding_windows(i64::MIN, 30, 10).len(), 3);
        assert_eq!(sliding_windows(i64::MAX, 30, 10).len(), 3);
    }

    #[test]
    fn fast_paths_agree_with_wide_arithmetic() {
        let wide_tumbling = |ts: i64, size: i64, offset: i64| {
            let ts = i128::from(ts);
            ts - (ts - i128::from(offset)).rem_euclid(i128::from(size))
        };
        let wide_sliding = |ts: i64, size: i64, slide: i64| {
            let (ts, size, slide) = (i128::from(ts), i128::from(size), i128::from(slide));
            let lo = ts - size + 1;
            (lo + (-lo).rem_euclid(slide), ts - ts.rem_euclid(slide))
        };
        let times = [
            i64::MIN,
            i64::MIN + 1,
            i64::MIN + 59_999,
            -60_001,
            -1,
            0,
            1,
            59_999,
        ];
        let times = times
            .into_iter()
            .chain([i64::MAX - 60_000, i64::MAX - 1, i64::MAX]);
        for ts in times {
            for size in [1, 7, 60_000, i64::MAX] {
                for offset in [i64::MIN, -13, 0, 5, i64::MAX] {
                    assert_eq!(
                        tumbling_start(ts, size, offset),
                        wide_tumbling(ts, size, offset)
                    );
                }
                for slide in [1, 7, 15_000, i64::MAX] {
                    assert_eq!(
                        sliding_starts(ts, size, slide),
                        wide_sliding(ts, size, slide)
                    );
                }
            }
        }
    }

    #[test]
    fn live_starts_skip_dead_prefix() {
        let a = Assigner::Sliding {
            size: 30,
            slide: 10,
        };
        // Windows of ts=25: [0,30) [10,40) [20,50). At wm=35, L=0: [0,30) is dead.
        assert_eq!(a.live_starts(25, 35, 0), (10, 20, 10));
        // With lateness 10, [0,30) lives while wm < 40.
        assert_eq!(a.live_starts(25, 35, 10), (0, 20, 10));
        let (f, l, _) = a.live_starts(25, 50, 0);
        assert!(f > l);
        let t = Assigner::Tumbling {
            size: 10,
            offset: 0,
        };
        assert_eq!(t.live_starts(5, 9, 0), (0, 0, 1));
        let (f, l, _) = t.live_starts(5, 10, 0);
        assert!(f > l);
    }
}
