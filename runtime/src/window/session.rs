//! Session windows with Flink's merging semantics.
//!
//! State: per key the sessions, sorted by start, pairwise neither overlapping nor
//! touching (touching ones are merged); timers in a `BTreeSet<(time, K)>` holding
//! exactly one entry per key with state. A session's action time is its `end` until it
//! fires, `end + allowed_lateness` after; a key's next action time is the least over its
//! sessions.
//!
//! The starts of all held sessions are also kept as a multiset (`start -> count`), so
//! the oldest held start is known in O(log n) (for offset commits) without a scan. It
//! changes only when a session is created, merged away or purged, not when an event
//! lands in a session or extends its end.
//!
//! The key's timer entry is at a time at most its next action time: it is moved at
//! once when the next action gets earlier, but left in place when it gets later (the
//! common case: each in-order event pushes its session's end out). When such an early
//! entry comes due, it is re-filed at the key's true next action time. So in-order
//! traffic costs no timer-tree operation per event, and every firing still happens when
//! its key's entry comes due at exactly the session's `end`, in order of time.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;
use hashbrown::hash_map::RawEntryMut;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{Aggregator, Emission};

/// One session's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Win<A> {
    start: i64,
    end: i64,
    /// The revision of the next firing (a merged session starts at one more than the
    /// last revision its absorbed sessions emitted).
    next_rev: u32,
    /// Whether this session, with these bounds, has emitted (its last emission had
    /// revision `next_rev - 1`).
    fired: bool,
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
    fn fire<K>(&mut self, key: K, out: &mut Vec<Emission<K, A::Output>>) {
        out.push(Emission {
            key,
            start: self.start,
            end: self.end,
            revision: self.next_rev,
            retracted: false,
            out: self.acc.output(),
        });
        self.next_rev = self.next_rev.saturating_add(1);
        self.fired = true;
    }
}

/// The sessions of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeySessions<A> {
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Deserialize<'de> + std::hash::Hash + Eq + Ord, A: Deserialize<'de>"
))]
pub(super) struct Sessions<K, A> {
    gap: i64,
    lateness: i64,
    #[serde(with = "super::map_as_seq")]
    keys: HashMap<K, KeySessions<A>>,
    timers: BTreeSet<Timer<K>>,
    live: usize,
    /// Multiset of the starts of every held session: start -> number of sessions.
    #[serde(with = "super::map_as_seq")]
    starts: BTreeMap<i64, usize>,
}

fn add_start(starts: &mut BTreeMap<i64, usize>, start: i64) {
    *starts.entry(start).or_insert(0) += 1;
}

fn remove_start(starts: &mut BTreeMap<i64, usize>, start: i64) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = starts.entry(start) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

impl<K, A> Sessions<K, A>
where
    K: std::hash::Hash + Eq + Ord + Clone,
    A: Aggregator,
{
    pub(super) fn new(gap: i64, lateness: i64) -> Self {
        Sessions {
            gap,
            lateness,
            keys: HashMap::new(),
            timers: BTreeSet::new(),
            live: 0,
            starts: BTreeMap::new(),
        }
    }

    /// The smallest start of any held session.
    pub(super) fn oldest_held_start(&self) -> Option<i64> {
        self.starts.first_key_value().map(|(&start, _)| start)
    }

    /// `oldest_held_start` by a scan over every key (tests check the multiset with it).
    #[cfg(test)]
    pub(super) fn oldest_held_start_by_scan(&self) -> Option<i64> {
        self.keys
            .values()
            .flat_map(|ks| ks.wins.iter().map(|w| w.start))
            .min()
    }

    pub(super) fn live_windows(&self) -> usize {
        self.live
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
        let lateness = self.lateness;
        let (start, end) = (ts, ts.saturating_add(self.gap));
        let (ks, old_timer) = match self.keys.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(o) => {
                let ks = o.into_mut();
                let timer = ks.timer;
                (ks, Some(timer))
            }
            RawEntryMut::Vacant(v) => {
                if end.saturating_add(lateness) <= wm {
                    return false;
                }
                let ks = KeySessions {
                    timer: i64::MAX,
                    wins: SmallVec::new(),
                };
                (v.insert(key.clone(), ks).1, None)
            }
        };
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
            update(&mut w.acc);
            if w.end <= wm {
                w.fire(key.clone(), out);
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
        // it); the merged session's next revision is 1 + the largest revision those
        // emitted, 0 if none did. (Revisions of an absorbed session that never emitted
        // are not inherited: it emitted none.)
        let mut acc: Option<A> = None;
        let mut next_rev = 0u32;
        // The common merge is an event extending one session's end: its start stays,
        // and so does the multiset of starts.
        let same_start = j == i + 1 && ks.wins[i].start == cstart;
        if !same_start {
            for w in &ks.wins[i..j] {
                remove_start(&mut self.starts, w.start);
            }
            add_start(&mut self.starts, cstart);
        }
        for w in ks.wins.drain(i..j) {
            if w.fired {
                out.push(Emission {
                    key: key.clone(),
                    start: w.start,
                    end: w.end,
                    revision: w.next_rev.saturating_sub(1),
                    retracted: true,
                    out: w.acc.output(),
                });
                next_rev = next_rev.max(w.next_rev);
            }
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
            acc,
        };
        if cend <= wm {
            win.fire(key.clone(), out);
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

    pub(super) fn advance(&mut self, wm: i64, out: &mut Vec<Emission<K, A::Output>>) {
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
                    w.fire(key.clone(), out);
                }
            }
            let before = ks.wins.len();
            let starts = &mut self.starts;
            ks.wins.retain(|w| {
                let keep = w.end.saturating_add(lateness) > t;
                if !keep {
                    remove_start(starts, w.start);
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
        shrink_if_sparse(&mut self.keys);
    }
}

/// Shrinks the key map after a burst of keys has been purged, so memory follows live
/// state (hysteresis: only when under 1/8 full, to twice the live size).
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 8 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
