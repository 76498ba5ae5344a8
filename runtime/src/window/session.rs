//! Session windows with Flink's merging semantics.
//!
//! State: per key the sessions, sorted by start, pairwise neither overlapping nor
//! touching (touching ones are merged); timers in a `BTreeSet<(time, K)>` holding
//! exactly one entry per key with state. A session's action time is its `end` until it
//! fires, `end + allowed_lateness` after; a key's next action time is the least over its
//! sessions.
//!
//! The starts of all held sessions are also counted per bucket of 1024 ms
//! (`StartIndex`, a ring of buckets: O(1) amortized), so a lower bound of the oldest
//! held start (at most 1023 ms below it) is known at once for offset commits, without a
//! scan. The counts change only when a session is created, merged away or purged, not
//! when an event lands in a session or extends its end.
//!
//! The key's timer entry is at a time at most its next action time: it is moved at
//! once when the next action gets earlier, but left in place when it gets later (the
//! common case: each in-order event pushes its session's end out). When such an early
//! entry comes due, it is re-filed at the key's true next action time. So in-order
//! traffic costs no timer-tree operation per event, and every firing still happens when
//! its key's entry comes due at exactly the session's `end`, in order of time.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{Aggregator, Emission, fire_next};
use crate::state::{Backend, Decoder, Encoder, KeyedStore, Mode, StateError, StateKey, StateValue};

/// One session's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Win<A> {
    start: i64,
    end: i64,
    /// The revision of the next firing (a merged session starts at one more than the
    /// last revision its absorbed sessions emitted).
    next_rev: u32,
    /// Whether this session, with these bounds, has emitted (its last emission had
    /// revision `next_rev - 1`).
    fired: bool,
    /// Events in this session, those of the sessions it absorbed included.
    events: u64,
    acc: A,
}

impl<A: Aggregator> Win<A> {
    /// When this session next needs the watermark: firing, then purging.
    fn action_at(&self, lateness: i64) -> i64 {
        if self.fired {
            self.end.saturating_add(lateness)
        } else {
            self.end
        }
    }

    /// Emits the next revision of this session.
    fn fire<K>(&mut self, key: K, emit: &mut impl FnMut(Emission<K, A::Output>)) {
        emit(fire_next(
            key,
            self.start,
            self.end,
            &mut self.next_rev,
            &self.acc,
        ));
        self.fired = true;
    }
}

/// The sessions of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de>"))]
pub(super) struct KeySessions<A> {
    /// The time of the key's entry in the timer set (at most its next action time).
    timer: i64,
    wins: SmallVec<[Win<A>; 1]>,
}

impl<A: Aggregator> KeySessions<A> {
    fn next_action(&self, lateness: i64) -> i64 {
        self.wins
            .iter()
            .map(|w| w.action_at(lateness))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// A timer entry, ordered by time, then key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer<K> {
    at: i64,
    key: K,
}

/// Lets the timer set be searched by `(time, &K)` without cloning the key.
trait TimerKey<K> {
    fn parts(&self) -> (i64, &K);
}

impl<K> TimerKey<K> for Timer<K> {
    fn parts(&self) -> (i64, &K) {
        (self.at, &self.key)
    }
}

struct TimerProbe<'a, K> {
    at: i64,
    key: &'a K,
}

impl<K> TimerKey<K> for TimerProbe<'_, K> {
    fn parts(&self) -> (i64, &K) {
        (self.at, self.key)
    }
}

impl<'a, K: 'a> Borrow<dyn TimerKey<K> + 'a> for Timer<K> {
    fn borrow(&self) -> &(dyn TimerKey<K> + 'a) {
        self
    }
}

impl<K: Ord> Ord for dyn TimerKey<K> + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}
impl<K: Ord> PartialOrd for dyn TimerKey<K> + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for dyn TimerKey<K> + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for dyn TimerKey<K> + '_ {}

/// Session windows of every key.
pub(super) struct Sessions<K: StateKey, A: StateValue, B: Backend> {
    gap: i64,
    lateness: i64,
    keys: B::Store<K, KeySessions<A>>,
    /// Rebuilt from `keys` on restore, as are `live` and `starts`.
    timers: BTreeSet<Timer<K>>,
    live: usize,
    /// The starts of every held session, counted per bucket.
    starts: StartIndex,
}

/// Sessions are counted per bucket of `2^BUCKET_SHIFT` ms of start time.
const BUCKET_SHIFT: u32 = 10;
/// Buckets counted in the ring (about 18 hours of start times); farther ones go to
/// the overflow map.
const MAX_RING: usize = 1 << 16;

/// A multiset of session starts at bucket granularity. Held starts are almost all
/// within a window of recent event time, so the counts live in a ring of buckets
/// `base..base + ring.len()` (O(1) per change, amortized; trimmed so that its first and
/// last buckets are non-zero); a start far from the others (a stray timestamp) is
/// counted in an ordered map instead.
#[derive(Clone, Debug, Default)]
struct StartIndex {
    base: i64,
    ring: VecDeque<usize>,
    overflow: BTreeMap<i64, usize>,
}

impl StartIndex {
    fn bucket(start: i64) -> i64 {
        start >> BUCKET_SHIFT
    }

    /// The ring index of bucket `b`, if the ring covers it.
    fn index(&self, b: i64) -> Option<usize> {
        let i = usize::try_from(b.checked_sub(self.base)?).ok()?;
        (i < self.ring.len()).then_some(i)
    }

    fn add(&mut self, start: i64) {
        let b = Self::bucket(start);
        if self.ring.is_empty() {
            self.base = b;
            self.ring.push_back(1);
            return;
        }
        if let Some(i) = self.index(b) {
            self.ring[i] += 1;
            return;
        }
        let len = self.ring.len() as i128;
        let (b128, base) = (i128::from(b), i128::from(self.base));
        if b128 >= base + len && b128 - base < MAX_RING as i128 {
            let i = (b128 - base) as usize;
            self.ring.resize(i, 0);
            self.ring.push_back(1);
        } else if b128 < base && base + len - b128 <= MAX_RING as i128 {
            for _ in 0..(base - b128) {
                self.ring.push_front(0);
            }
            self.base = b;
            self.ring[0] = 1;
        } else {
            *self.overflow.entry(b).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, start: i64) {
        let b = Self::bucket(start);
        if let Some(i) = self.index(b)
            && self.ring[i] > 0
        {
            self.ring[i] -= 1;
            while self.ring.front() == Some(&0) {
                self.ring.pop_front();
                self.base += 1;
            }
            while self.ring.back() == Some(&0) {
                self.ring.pop_back();
            }
            return;
        }
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.overflow.entry(b) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }

    /// Whether `a` and `b` are counted in the same bucket.
    fn same(a: i64, b: i64) -> bool {
        Self::bucket(a) == Self::bucket(b)
    }

    /// At most the smallest start counted (its bucket's first millisecond).
    fn lower_bound(&self) -> Option<i64> {
        let ring = (!self.ring.is_empty()).then_some(self.base);
        let overflow = self.overflow.first_key_value().map(|(&b, _)| b);
        let b = match (ring, overflow) {
            (Some(r), Some(o)) => r.min(o),
            (r, o) => r.or(o)?,
        };
        Some(b << BUCKET_SHIFT)
    }
}

impl<K, A, B> Sessions<K, A, B>
where
    K: StateKey,
    A: Aggregator + StateValue,
    B: Backend,
{
    pub(super) fn new(gap: i64, lateness: i64, backend: &B) -> Self {
        Sessions {
            gap,
            lateness,
            keys: backend.store(b"w", 0),
            timers: BTreeSet::new(),
            live: 0,
            starts: StartIndex::default(),
        }
    }

    /// At most the smallest start of any held session (by less than 1024 ms).
    pub(super) fn oldest_held_start(&self) -> Option<i64> {
        self.starts.lower_bound()
    }

    /// `oldest_held_start` by a scan over every key (tests check the multiset with it).
    #[cfg(test)]
    pub(super) fn oldest_held_start_by_scan(&self) -> Option<i64> {
        let mut min: Option<i64> = None;
        self.keys.for_each(|_, ks| {
            for w in &ks.wins {
                min = Some(min.map_or(w.start, |m| m.min(w.start)));
            }
        });
        min.map(|start| (start >> BUCKET_SHIFT) << BUCKET_SHIFT)
    }

    pub(super) fn live_windows(&self) -> usize {
        self.live
    }

    /// Events in sessions that have not fired with their current bounds; a scan over
    /// every key.
    pub(super) fn unfired_events(&self) -> u64 {
        let mut n = 0;
        self.keys.for_each(|_, ks| {
            n += ks
                .wins
                .iter()
                .filter(|w| !w.fired)
                .map(|w| w.events)
                .sum::<u64>();
        });
        n
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
        emit: &mut impl FnMut(Emission<K, A::Output>),
    ) -> bool {
        let lateness = self.lateness;
        let (start, end) = (ts, ts.saturating_add(self.gap));
        let (ks, new) = self.keys.get_or_insert_with(key, || KeySessions {
            timer: i64::MAX,
            wins: SmallVec::new(),
        });
        if new && end.saturating_add(lateness) <= wm {
            // Dead on arrival for a key without sessions: leave no entry behind.
            self.keys.remove(key);
            return false;
        }
        let old_timer = (!new).then_some(ks.timer);
        // Sessions are sorted and pairwise apart, so the ones touching [start, end)
        // are the run i..j (and the cover of the run touches no other session).
        let i = ks.wins.partition_point(|w| w.end < start);
        let j = i + ks.wins[i..].partition_point(|w| w.start <= end);
        if i == j && end.saturating_add(lateness) <= wm {
            // Touches no session and is dead on arrival. (The key exists: a vacant
            // key was judged above.)
            return false;
        }
        if j == i + 1 && ks.wins[i].start <= start && end <= ks.wins[i].end {
            // Inside one session: update in place; re-fire at once if it has fired.
            let w = &mut ks.wins[i];
            w.events += 1;
            update(&mut w.acc);
            if w.end <= wm {
                w.fire(key.clone(), emit);
            }
            return true;
        }
        let (mut cstart, mut cend) = (start, end);
        if i < j {
            cstart = cstart.min(ks.wins[i].start);
            cend = cend.max(ks.wins[j - 1].end);
        }
        // A merge (bounds change: the in-place case returned above). Each absorbed
        // session that has emitted is retracted with its last emission (its
        // accumulator is unchanged since, as every change to a fired session re-fires
        // it); the merged session's next revision is 1 + the largest revision emitted by
        // any session it absorbs, directly or through the sessions those had absorbed
        // (an absorbed session that never fired carries its inherited `next_rev`), 0 if
        // none: along a chain of merges a revision never goes backwards.
        let mut acc: Option<A> = None;
        let mut next_rev = 0u32;
        let mut events = 1u64;
        // The common merge is an event extending one session's end: its start stays
        // (or stays in its bucket), and so do the counts.
        let same_bucket = j == i + 1 && StartIndex::same(ks.wins[i].start, cstart);
        if !same_bucket {
            for w in &ks.wins[i..j] {
                self.starts.remove(w.start);
            }
            self.starts.add(cstart);
        }
        for w in ks.wins.drain(i..j) {
            if w.fired {
                emit(Emission {
                    key: key.clone(),
                    start: w.start,
                    end: w.end,
                    revision: w.next_rev.saturating_sub(1),
                    retracted: true,
                    out: w.acc.output(),
                });
            }
            next_rev = next_rev.max(w.next_rev);
            events += w.events;
            match &mut acc {
                Some(a) => a.merge(w.acc),
                None => acc = Some(w.acc),
            }
        }
        self.live -= j - i;
        let mut acc = acc.unwrap_or_default();
        update(&mut acc);
        let mut win = Win {
            start: cstart,
            end: cend,
            next_rev,
            fired: false,
            events,
            acc,
        };
        if cend <= wm {
            win.fire(key.clone(), emit);
        }
        ks.wins.insert(i, win);
        self.live += 1;
        let next = ks.next_action(lateness);
        let owned = match old_timer {
            None => key.clone(),
            // The entry is early enough: `advance` re-files it when it comes due.
            Some(at) if at <= next => return true,
            Some(at) => {
                let probe = TimerProbe { at, key };
                match self.timers.take(&probe as &dyn TimerKey<K>) {
                    Some(t) => t.key,
                    None => key.clone(),
                }
            }
        };
        ks.timer = next;
        self.timers.insert(Timer {
            at: next,
            key: owned,
        });
        true
    }

    pub(super) fn advance(&mut self, wm: i64, emit: &mut impl FnMut(Emission<K, A::Output>)) {
        let lateness = self.lateness;
        while self.timers.first().is_some_and(|t| t.at <= wm) {
            let Some(Timer { at: t, key }) = self.timers.pop_first() else {
                break;
            };
            let Some(ks) = self.keys.get_mut(&key) else {
                continue;
            };
            let next = ks.next_action(lateness);
            if next > t {
                // An early entry: the key's sessions moved later. Re-file it.
                ks.timer = next;
                self.timers.insert(Timer { at: next, key });
                continue;
            }
            // `t` is the least action time of the key, so at most the one session
            // ending at `t` fires (sessions of a key have distinct ends).
            for w in ks.wins.iter_mut() {
                if !w.fired && w.end <= t {
                    w.fire(key.clone(), emit);
                }
            }
            let before = ks.wins.len();
            let starts = &mut self.starts;
            ks.wins.retain(|w| {
                let keep = w.end.saturating_add(lateness) > t;
                if !keep {
                    starts.remove(w.start);
                }
                keep
            });
            self.live -= before - ks.wins.len();
            if ks.wins.is_empty() {
                self.keys.remove(&key);
            } else {
                ks.timer = ks.next_action(lateness);
                self.timers.insert(Timer { at: ks.timer, key });
            }
        }
        // Memory follows live state after a burst of keys was purged.
        self.keys.shrink_if_sparse();
    }

    /// The key store; the timers, the live count and the start index are rebuilt from
    /// it on restore (each key's timer time is part of its state).
    pub(super) fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        self.keys.snapshot(mode, out)
    }

    pub(super) fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        self.keys.restore(input)?;
        let mut timers = BTreeSet::new();
        let mut starts = StartIndex::default();
        let mut live = 0;
        self.keys.for_each(|k, ks| {
            timers.insert(Timer {
                at: ks.timer,
                key: k.clone(),
            });
            for w in &ks.wins {
                starts.add(w.start);
                live += 1;
            }
        });
        self.timers = timers;
        self.starts = starts;
        self.live = live;
        Ok(())
    }
}

#[cfg(test)]
mod start_index_tests {
    use super::*;

    #[test]
    fn counts_near_and_far_starts() {
        const U: i64 = 1 << BUCKET_SHIFT;
        let mut x = StartIndex::default();
        assert_eq!(x.lower_bound(), None);
        x.add(10 * U + 5);
        x.add(12 * U);
        x.add(12 * U + 1);
        x.add(7 * U); // grows the ring at the front
        assert_eq!(x.lower_bound(), Some(7 * U));
        x.add(i64::MIN); // far: overflow
        x.add(i64::MAX);
        assert_eq!(
            x.lower_bound(),
            Some((i64::MIN >> BUCKET_SHIFT) << BUCKET_SHIFT)
        );
        x.remove(i64::MIN);
        assert_eq!(x.lower_bound(), Some(7 * U));
        x.remove(7 * U);
        assert_eq!(x.lower_bound(), Some(10 * U));
        assert_eq!(x.ring.len(), 3);
        x.remove(10 * U);
        x.remove(12 * U + 5);
        assert_eq!(x.lower_bound(), Some(12 * U));
        x.remove(12 * U);
        assert_eq!(
            x.lower_bound(),
            Some((i64::MAX >> BUCKET_SHIFT) << BUCKET_SHIFT)
        );
        assert!(x.ring.is_empty());
        x.remove(i64::MAX);
        assert_eq!(x.lower_bound(), None);
        // A bucket counted in the overflow map, then also in the ring once it moved.
        x.add(0);
        x.add((MAX_RING as i64 + 5) * U); // too far from 0: overflow
        x.remove(0);
        x.add((MAX_RING as i64 + 5) * U); // the ring starts there now
        x.remove((MAX_RING as i64 + 5) * U);
        x.remove((MAX_RING as i64 + 5) * U);
        assert_eq!(x.lower_bound(), None);
        assert!(x.overflow.is_empty());
    }

    #[test]
    fn agrees_with_a_plain_multiset() {
        let mut x = StartIndex::default();
        let mut model: BTreeMap<i64, usize> = BTreeMap::new();
        let mut held: Vec<i64> = Vec::new();
        let mut r: u64 = 0x853c_49e6_748f_ea9b;
        for step in 0..20_000i64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            if !r.is_multiple_of(3) || held.is_empty() {
                let start = match r % 50 {
                    0 => (r as i64) >> 3, // anywhere
                    _ => step * 300 - ((r >> 8) % 100_000) as i64,
                };
                x.add(start);
                *model.entry(start >> BUCKET_SHIFT).or_insert(0) += 1;
                held.push(start);
            } else {
                let start = held.swap_remove((r >> 16) as usize % held.len());
                x.remove(start);
                let b = start >> BUCKET_SHIFT;
                *model.get_mut(&b).unwrap() -= 1;
                if model[&b] == 0 {
                    model.remove(&b);
                }
            }
            let want = model.first_key_value().map(|(&b, _)| b << BUCKET_SHIFT);
            assert_eq!(x.lower_bound(), want, "step {step}");
        }
    }
}
