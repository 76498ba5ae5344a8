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

use hashbrown::HashMap;
use hashbrown::hash_map::RawEntryMut;
use serde::{Deserialize, Serialize};

use super::fixed::{Assigner, clamp};
use super::{Aggregator, Emission, fire_next};

/// One key's state in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyWin<A> {
    start: i64,
    /// The revision of the next firing; 0 = never fired.
    next_rev: u32,
    acc: A,
}

/// Sliding windows of every key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Deserialize<'de> + std::hash::Hash + Eq + Ord, A: Deserialize<'de>"
))]
pub(super) struct SlidingWindows<K, A> {
    assigner: Assigner,
    lateness: i64,
    /// Per key, its held windows sorted by start (at most `size / slide` plus those
    /// kept for lateness).
    #[serde(with = "super::map_as_seq")]
    keys: HashMap<K, Vec<KeyWin<A>>>,
    /// (end, start) -> every key holding that window: one entry per held window, so
    /// the first entry is the oldest held window. A window fires when the watermark
    /// reaches `end` and is dropped at `end + lateness`.
    #[serde(with = "super::map_as_seq")]
    timers: BTreeMap<(i64, i64), Vec<K>>,
    /// The watermark of the last `advance`: windows with `end <= fired_to` have fired.
    fired_to: i64,
    live: usize,
    /// Room reserved per new key: the windows a key holds in a steady stream
    /// (`size / slide`, one more being opened, and those kept for lateness), so its
    /// vector is allocated once at the right size instead of growing to 8 by doubling.
    per_key: usize,
}

impl<K, A> SlidingWindows<K, A>
where
    K: std::hash::Hash + Eq + Ord + Clone,
    A: Aggregator,
{
    pub(super) fn new(size: i64, slide: i64, lateness: i64) -> Self {
        SlidingWindows {
            assigner: Assigner::Sliding { size, slide },
            lateness,
            keys: HashMap::new(),
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
        self.keys.values().flatten().map(|w| w.start).min()
    }

    pub(super) fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    pub(super) fn process(
        &mut self,
        wm: i64,
        key: &K,
        ts: i64,
        mut update: impl FnMut(&mut A),
        out: &mut Vec<Emission<K, A::Output>>,
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
        let wins = match self.keys.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(o) => o.into_mut(),
            RawEntryMut::Vacant(v) => v.insert(key.clone(), Vec::with_capacity(per_key)).1,
        };
        let mut s = first;
        while s <= last {
            let (start, end) = (clamp(s), clamp(s + size));
            s += step;
            let i = match wins.binary_search_by_key(&start, |w| w.start) {
                Ok(i) => i,
                Err(i) => {
                    wins.insert(
                        i,
                        KeyWin {
                            start,
                            next_rev: 0,
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
            update(&mut w.acc);
            if end <= wm {
                // Fired already (or due and new): fire at once with the next revision.
                out.push(fire_next(key.clone(), start, end, &mut w.next_rev, &w.acc));
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
                let RawEntryMut::Occupied(mut o) = self.keys.raw_entry_mut().from_key(key) else {
                    continue; // (cannot happen: a timer's key holds its window)
                };
                let wins = o.get_mut();
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
                        o.remove();
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
        if self.keys.capacity() > 64 && self.keys.len() * 8 < self.keys.capacity() {
            // Memory follows live state after a burst of keys was purged.
            self.keys.shrink_to(self.keys.len() * 2);
        }
    }
}
