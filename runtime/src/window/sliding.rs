//! Sliding windows, key-major: per key, its held windows (a short vector sorted by
//! start); per window end, the keys holding a window that ends there (the timers).
//!
//! An event of a sliding window `size / slide` lies in `size / slide` windows. The
//! window-major layout of `fixed.rs` (one hash map per window bounds) looks the key up
//! in each of them: on bench J2 (5 min / 1 min, 100k keys) those five random lookups
//! were 56% of the job's CPU (perf). Here an event costs one lookup, and the windows it
//! updates sit next to each other; firing and purging cost one lookup per key and
//! window, driven by the timers (ordered by end, keys sorted within an end: the same
//! emission order as `fixed.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fixed::{Assigner, clamp};
use super::{Aggregator, Emission, fire_next};
use crate::state::{Backend, Decoder, Encoder, KeyedStore, Mode, StateError, StateKey, StateValue};

/// One key's state in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct KeyWin<A> {
    start: i64,
    /// The revision of the next firing; 0 = never fired.
    next_rev: u32,
    /// Events whose window of largest end this is (each event counted once).
    events: u64,
    acc: A,
}

/// Sliding windows of every key.
pub(super) struct SlidingWindows<K: StateKey, A: StateValue, B: Backend> {
    assigner: Assigner,
    lateness: i64,
    /// Per key, its held windows sorted by start (at most `size / slide` plus those
    /// kept for lateness).
    keys: B::Store<K, Vec<KeyWin<A>>>,
    /// (end, start) -> every key holding that window: one entry per held window, so
    /// the first entry is the oldest held window. A window fires when the watermark
    /// reaches `end` and is dropped at `end + lateness`. Rebuilt from `keys` on restore.
    timers: BTreeMap<(i64, i64), Vec<K>>,
    /// The watermark of the last `advance`: windows with `end <= fired_to` have fired.
    fired_to: i64,
    live: usize,
    /// Room reserved per new key: the windows a key holds in a steady stream
    /// (`size / slide`, one more being opened, and those kept for lateness), so its
    /// vector is allocated once at the right size instead of growing to 8 by doubling.
    per_key: usize,
}

impl<K, A, B> SlidingWindows<K, A, B>
where
    K: StateKey,
    A: Aggregator + StateValue,
    B: Backend,
{
    pub(super) fn new(size: i64, slide: i64, lateness: i64, backend: &B) -> Self {
        SlidingWindows {
            assigner: Assigner::Sliding { size, slide },
            lateness,
            keys: backend.store(b"s", 0),
            timers: BTreeMap::new(),
            fired_to: i64::MIN,
            live: 0,
            per_key: usize::try_from(
                (size.max(1).saturating_add(lateness.max(0)) / slide.max(1)).saturating_add(1),
            )
            .unwrap_or(8)
            .min(8),
        }
    }

    pub(super) fn live_windows(&self) -> usize {
        self.live
    }

    pub(super) fn oldest_held_start(&self) -> Option<i64> {
        self.timers.first_key_value().map(|(&(_, start), _)| start)
    }

    /// `oldest_held_start` by a scan over every key (for tests).
    #[cfg(test)]
    pub(super) fn oldest_held_start_by_scan(&self) -> Option<i64> {
        let mut min: Option<i64> = None;
        self.keys.for_each(|_, wins| {
            for w in wins {
                min = Some(min.map_or(w.start, |m| m.min(w.start)));
            }
        });
        min
    }

    pub(super) fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Events held in windows that have not fired (`end > fired_to`), each counted
    /// once (in its window of largest end, which fires last); a scan over every key.
    pub(super) fn unfired_events(&self) -> u64 {
        let size = self.assigner.size();
        let fired_to = self.fired_to;
        let mut n = 0;
        self.keys.for_each(|_, wins| {
            for w in wins {
                if w.start.saturating_add(size) > fired_to {
                    n += w.events;
                }
            }
        });
        n
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
        let per_key = self.per_key;
        let (wins, _) = self
            .keys
            .get_or_insert_with(key, || Vec::with_capacity(per_key));
        let mut s = first;
        while s <= last {
            let (start, end) = (clamp(s), clamp(s + size));
            let is_last = s == last;
            s += step;
            let i = match wins.binary_search_by_key(&start, |w| w.start) {
                Ok(i) => i,
                Err(i) => {
                    wins.insert(
                        i,
                        KeyWin {
                            start,
                            next_rev: 0,
                            events: 0,
                            acc: A::default(),
                        },
                    );
                    self.live += 1;
                    self.timers
                        .entry((end, start))
                        .or_default()
                        .push(key.clone());
                    i
                }
            };
            let w = &mut wins[i];
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
        // Every timer with end <= wm: fire it if it became due (fired_to < end), drop
        // its windows if they are past lateness (end + lateness <= wm); in order of end.
        let fired_to = self.fired_to;
        let lateness = self.lateness;
        let due: Vec<(i64, i64)> = self
            .timers
            .range(..=(wm, i64::MAX))
            .map(|(&bounds, _)| bounds)
            .filter(|&(end, _)| end > fired_to || end.saturating_add(lateness) <= wm)
            .collect();
        for bounds @ (end, start) in due {
            let fire = end > fired_to;
            let dead = end.saturating_add(lateness) <= wm;
            let mut keys = if dead {
                self.timers.remove(&bounds).unwrap_or_default()
            } else {
                self.timers
                    .get_mut(&bounds)
                    .map(std::mem::take)
                    .unwrap_or_default()
            };
            if fire {
                keys.sort_unstable();
            }
            for key in &keys {
                let Some(wins) = self.keys.get_mut(key) else {
                    continue; // (cannot happen: a timer's key holds its window)
                };
                let Ok(i) = wins.binary_search_by_key(&start, |w| w.start) else {
                    continue;
                };
                if fire {
                    let w = &mut wins[i];
                    emit(fire_next(key.clone(), start, end, &mut w.next_rev, &w.acc));
                }
                if dead {
                    wins.remove(i);
                    self.live -= 1;
                    if wins.is_empty() {
                        self.keys.remove(key);
                    }
                }
            }
            if !dead {
                // Keep the (sorted) keys for the purge.
                if let Some(slot) = self.timers.get_mut(&bounds) {
                    *slot = keys;
                }
            }
        }
        self.fired_to = self.fired_to.max(wm);
        // Memory follows live state after a burst of keys was purged.
        self.keys.shrink_if_sparse();
    }

    /// `fired_to`, then the key store (the timers are rebuilt from it on restore).
    pub(super) fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        out.put(&self.fired_to)?;
        self.keys.snapshot(mode, out)
    }

    pub(super) fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        self.fired_to = input.take()?;
        self.keys.restore(input)?;
        let size = i128::from(self.assigner.size());
        let mut timers: BTreeMap<(i64, i64), Vec<K>> = BTreeMap::new();
        let mut live = 0;
        self.keys.for_each(|k, wins| {
            for w in wins {
                live += 1;
                let end = clamp(i128::from(w.start) + size);
                timers.entry((end, w.start)).or_default().push(k.clone());
            }
        });
        self.timers = timers;
        self.live = live;
        Ok(())
    }
}
