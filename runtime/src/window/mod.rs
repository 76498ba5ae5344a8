//! Event-time window operators (`pipeline-spec.md`, "Event time, watermarks, firing").
//!
//! One generic operator per window kind family, monomorphized over the generated key
//! struct `K` and accumulator struct `A`. State is organised so that firing and purging
//! cost no scan over all keys: timers are kept ordered by time.
//!
//! - `fixed.rs`: tumbling windows (and the window arithmetic of sliding ones). State
//!   is window-major, `BTreeMap<(end, start), HashMap<K, _>>`, which is its own timer
//!   structure: due windows are a prefix of the map.
//! - `sliding.rs`: sliding windows, key-major (an event lies in `size / slide` windows:
//!   one lookup for all of them); timers `BTreeMap<(end, start), Vec<K>>`.
//! - `session.rs`: merging session windows. State is key-major (sessions of a key
//!   merge); timers: `BTreeSet<(time, K)>` with exactly one entry per key that holds
//!   state (its next action time).
//!
//! Architecture invariants (checked by `tests/window_model.rs`):
//! - every held window with `end <= watermark` has fired (revision 0 at least);
//! - every held window is reachable from a time-ordered structure at its next action
//!   time (`end` until it fires, `end + allowed_lateness` after), so nothing leaks:
//!   after `advance(WATERMARK_MAX)` no window, key or timer is left;
//! - key maps are looked up by `&K`; a key is cloned only when state or a timer is
//!   created for it, and once per emission.

mod fixed;
mod session;
mod sliding;

pub use fixed::{sliding_windows, tumbling_window};

use serde::{Deserialize, Serialize};

use fixed::FixedWindows;
use session::Sessions;
use sliding::SlidingWindows;

/// What kind of window, in epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// `[start, start + size)` with `start = ts - ((ts - offset) mod size)`.
    Tumbling {
        /// Window length (ms).
        size: i64,
        /// Shift of the window grid from the epoch (ms).
        offset: i64,
    },
    /// Every `[s, s + size)` with `s ≡ 0 (mod slide)` and `s <= ts < s + size`.
    Sliding {
        /// Window length (ms), a multiple of `slide`.
        size: i64,
        /// Distance between window starts (ms).
        slide: i64,
    },
    /// Each event opens `[ts, ts + gap)`; windows of one key that overlap or touch merge.
    Session {
        /// Inactivity gap (ms).
        gap: i64,
    },
}

/// A window step of a flow: the kind and its allowed lateness (ms, default 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Tumbling, sliding or session, with its sizes.
    pub kind: WindowKind,
    /// How long (ms) a fired window's state is kept for late events: until
    /// `watermark >= end + allowed_lateness`.
    pub allowed_lateness: i64,
}

impl WindowSpec {
    /// The spec the operator actually runs: sizes, slides and gaps below 1 ms are
    /// raised to 1 ms and a negative lateness to 0 (the compiler rejects such specs;
    /// this only keeps the runtime total).
    pub fn normalized(self) -> WindowSpec {
        let kind = match self.kind {
            WindowKind::Tumbling { size, offset } => WindowKind::Tumbling {
                size: size.max(1),
                offset,
            },
            WindowKind::Sliding { size, slide } => WindowKind::Sliding {
                size: size.max(1),
                slide: slide.max(1),
            },
            WindowKind::Session { gap } => WindowKind::Session { gap: gap.max(1) },
        };
        WindowSpec {
            kind,
            allowed_lateness: self.allowed_lateness.max(0),
        }
    }
}

/// An accumulator struct (generated: one per `aggregate` block, plain fields).
pub trait Aggregator: Default {
    /// The aggregate values of one firing.
    type Output;
    /// Merge `other` into `self` (session windows).
    fn merge(&mut self, other: Self);
    /// The aggregate values for the current contents (called at every firing).
    fn output(&self) -> Self::Output;
}

/// One window result to emit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Emission<K, O> {
    /// The window's key (`()` for a global window).
    pub key: K,
    /// Window start (inclusive), epoch millis.
    pub start: i64,
    /// Window end (exclusive), epoch millis.
    pub end: i64,
    /// 0 for the first firing of a window, then +1 for each re-firing.
    pub revision: u32,
    /// True for a session window absorbed by a merge after it had fired: `out` and
    /// `revision` repeat its last emission, and readers must drop the row.
    pub retracted: bool,
    /// The aggregate values ([`Aggregator::output`]).
    pub out: O,
}

/// The next firing of window `[start, end)` of `key`: its emission with revision
/// `*next_rev` and the accumulator's current output; `*next_rev` moves on.
fn fire_next<K, A: Aggregator>(
    key: K,
    start: i64,
    end: i64,
    next_rev: &mut u32,
    acc: &A,
) -> Emission<K, A::Output> {
    let revision = *next_rev;
    *next_rev = next_rev.saturating_add(1);
    Emission {
        key,
        start,
        end,
        revision,
        retracted: false,
        out: acc.output(),
    }
}

/// Window operator for all three kinds. `K` is the key (use `()` for a global window).
///
/// All state is plain data (`Serialize`/`Deserialize` when `K` and `A` are), so a
/// checkpoint can snapshot and restore it as is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Deserialize<'de> + std::hash::Hash + Eq + Ord, A: Deserialize<'de>"
))]
pub struct WindowOperator<K, A> {
    spec: WindowSpec,
    watermark: i64,
    state: State<K, A>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Deserialize<'de> + std::hash::Hash + Eq + Ord, A: Deserialize<'de>"
))]
enum State<K, A> {
    Fixed(FixedWindows<K, A>),
    Sliding(SlidingWindows<K, A>),
    Session(Sessions<K, A>),
}

impl<K, A> WindowOperator<K, A>
where
    K: std::hash::Hash + Eq + Ord + Clone,
    A: Aggregator,
{
    /// A new operator with no state and the watermark at `WATERMARK_MIN`. The spec is
    /// [normalized](WindowSpec::normalized).
    pub fn new(spec: WindowSpec) -> Self {
        let spec = spec.normalized();
        let lateness = spec.allowed_lateness;
        let state = match spec.kind {
            WindowKind::Tumbling { size, offset } => State::Fixed(FixedWindows::new(
                fixed::Assigner::Tumbling { size, offset },
                lateness,
            )),
            WindowKind::Sliding { size, slide } => {
                State::Sliding(SlidingWindows::new(size, slide, lateness))
            }
            WindowKind::Session { gap } => State::Session(Sessions::new(gap, lateness)),
        };
        WindowOperator {
            spec,
            watermark: crate::WATERMARK_MIN,
            state,
        }
    }

    /// The (normalized) spec this operator runs.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The watermark the operator has seen (WATERMARK_MIN initially).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Adds one event with event time `ts` for `key`, judged against the current
    /// watermark. `update` is called once per live window the event belongs to, with
    /// that window's accumulator. Windows that had already fired and are updated fire
    /// again at once (next revision) into `out`; session merges push retractions into
    /// `out`. Returns false, touching nothing, when the event is too late.
    pub fn process(
        &mut self,
        key: &K,
        ts: i64,
        update: impl FnMut(&mut A),
        out: &mut Vec<Emission<K, A::Output>>,
    ) -> bool {
        match &mut self.state {
            State::Fixed(f) => f.process(self.watermark, key, ts, update, out),
            State::Sliding(s) => s.process(self.watermark, key, ts, update, out),
            State::Session(s) => s.process(self.watermark, key, ts, update, out),
        }
    }

    /// Advances the watermark to `wm` (ignored if not greater than the current one):
    /// fires every window with `end <= wm` in order of `end`, purges every window with
    /// `end + allowed_lateness <= wm`.
    ///
    /// Windows with the same `end` fire in order of key (then start), so the output is
    /// a function of the input alone.
    pub fn advance(&mut self, wm: i64, out: &mut Vec<Emission<K, A::Output>>) {
        self.advance_with(wm, |e| out.push(e));
    }

    /// [`advance`](Self::advance), handing each emission to `emit` as it is made
    /// instead of collecting them: a watermark step that fires a window of 100k keys
    /// then needs no buffer of 100k emissions (the generated code's way).
    pub fn advance_with(&mut self, wm: i64, mut emit: impl FnMut(Emission<K, A::Output>)) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        match &mut self.state {
            State::Fixed(f) => f.advance(wm, &mut emit),
            State::Sliding(s) => s.advance(wm, &mut emit),
            State::Session(s) => s.advance(wm, &mut emit),
        }
    }

    /// Number of windows whose state is held (for tests and metrics).
    pub fn live_windows(&self) -> usize {
        match &self.state {
            State::Fixed(f) => f.live_windows(),
            State::Sliding(s) => s.live_windows(),
            State::Session(s) => s.live_windows(),
        }
    }

    /// The smallest `start` of any window whose state is held (fired or not, until it
    /// is purged at `end + allowed_lateness <= watermark`); None when no state is held.
    /// O(log n), no scan over keys. Exact for tumbling and sliding windows; for session
    /// windows a lower bound, at most 1023 ms below it (starts are counted per second,
    /// which keeps the per-event cost low): lower only makes commits more conservative.
    ///
    /// Every event with an event time below it has had all of its windows fire and be
    /// purged (an event lies in windows starting at or before its time), so its input
    /// record can no longer affect a result: offsets of such records may be committed
    /// (see `Pipeline::held_from`).
    pub fn oldest_held_start(&self) -> Option<i64> {
        match &self.state {
            State::Fixed(f) => f.oldest_held_start(),
            State::Sliding(s) => s.oldest_held_start(),
            State::Session(s) => s.oldest_held_start(),
        }
    }

    /// Number of pending timer entries (for tests: 0 once everything is purged).
    pub fn pending_timers(&self) -> usize {
        match &self.state {
            State::Fixed(f) => f.pending_timers(),
            State::Sliding(s) => s.pending_timers(),
            State::Session(s) => s.pending_timers(),
        }
    }
}

/// Maps are serialized as a sequence of `(key, value)` pairs, so any key type works
/// with any format (JSON objects only allow string keys).
mod map_as_seq {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, M, K, V, S>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
