//! Event-time window operators (`pipeline-spec.md`, "Event time, watermarks, firing").
//!
//! One generic operator per window kind family, monomorphized over the generated key
//! struct `K` and accumulator struct `A`. State is organised so that firing and purging
//! cost no scan over all keys: timers are kept ordered by time.
//!
//! State lives in keyed stores of a [`Backend`] (`crate::state::store`: memory, or
//! RocksDB with feature `rocksdb`); what is only an index over it (timers, counts) is
//! kept in memory with either backend and rebuilt from the stores on restore, so a
//! snapshot holds the stores and a few scalars.
//!
//! - `fixed.rs`: tumbling windows (and the window arithmetic of sliding ones). State
//!   is window-major, `BTreeMap<(end, start), store of K>`, which is its own timer
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

use crate::state::{
    Backend, Decoder, Encoder, Memory, Mode, Operator, StateError, StateKey, StateValue, Verdict,
};
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

/// An accumulator struct that takes one input per event: the generated code's
/// `aggregate` blocks (the values the accumulators need, computed from the row).
pub trait Accumulate: Aggregator {
    /// The values of one event (borrowing the event's strings).
    type Input<'a>;
    /// Folds one event into the accumulator: event time `ts`, `seq` its arrival number
    /// in the key group (ties of `first` and `last` by arrival).
    fn add(&mut self, ts: i64, seq: u64, input: &Self::Input<'_>);
}

/// Window operator for all three kinds. `K` is the key (use `()` for a global window),
/// `A` the accumulator struct, `B` the state backend its stores live in.
pub struct WindowOperator<K: StateKey, A: StateValue, B: Backend = Memory> {
    spec: WindowSpec,
    watermark: i64,
    /// Events processed (the `seq` of [`Accumulate::add`]).
    arrivals: u64,
    state: State<K, A, B>,
}

enum State<K: StateKey, A: StateValue, B: Backend> {
    Fixed(FixedWindows<K, A, B>),
    Sliding(SlidingWindows<K, A, B>),
    Session(Sessions<K, A, B>),
}

impl<K: StateKey, A: StateValue, B: Backend> std::fmt::Debug for WindowOperator<K, A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("spec", &self.spec)
            .field("watermark", &self.watermark)
            .field("arrivals", &self.arrivals)
            .finish_non_exhaustive()
    }
}

impl<K, A> WindowOperator<K, A, Memory>
where
    K: StateKey,
    A: Aggregator + StateValue,
{
    /// A new operator with memory state (no change tracking), no state and the
    /// watermark at `WATERMARK_MIN`. The spec is [normalized](WindowSpec::normalized).
    pub fn new(spec: WindowSpec) -> Self {
        Self::with_backend(spec, Memory::default())
    }
}

impl<K, A, B> WindowOperator<K, A, B>
where
    K: StateKey,
    A: Aggregator + StateValue,
    B: Backend,
{
    /// A new operator whose state lives in `backend`.
    pub fn with_backend(spec: WindowSpec, backend: B) -> Self {
        let spec = spec.normalized();
        let lateness = spec.allowed_lateness;
        let state = match spec.kind {
            WindowKind::Tumbling { size, offset } => State::Fixed(FixedWindows::new(
                fixed::Assigner::Tumbling { size, offset },
                lateness,
                backend,
            )),
            WindowKind::Sliding { size, slide } => {
                State::Sliding(SlidingWindows::new(size, slide, lateness, &backend))
            }
            WindowKind::Session { gap } => State::Session(Sessions::new(gap, lateness, &backend)),
        };
        WindowOperator {
            spec,
            watermark: crate::WATERMARK_MIN,
            arrivals: 0,
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
        self.process_with(key, ts, update, &mut |e| out.push(e))
    }

    /// [`process`](Self::process), handing each emission to `emit` as it is made.
    pub fn process_with(
        &mut self,
        key: &K,
        ts: i64,
        update: impl FnMut(&mut A),
        emit: &mut impl FnMut(Emission<K, A::Output>),
    ) -> bool {
        match &mut self.state {
            State::Fixed(f) => f.process(self.watermark, key, ts, update, emit),
            State::Sliding(s) => s.process(self.watermark, key, ts, update, emit),
            State::Session(s) => s.process(self.watermark, key, ts, update, emit),
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

    /// Events held in windows that have not fired yet, each event counted once (a
    /// scan over the held windows: for the summary of a job stopped by a signal).
    pub fn unfired_events(&self) -> u64 {
        match &self.state {
            State::Fixed(f) => f.unfired_events(),
            State::Sliding(s) => s.unfired_events(),
            State::Session(s) => s.unfired_events(),
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

    /// Writes the operator's state: watermark, arrivals, then the window kind's (see
    /// [`crate::state::Operator::snapshot`]).
    pub fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        out.put(&self.watermark)?;
        out.put(&self.arrivals)?;
        match &mut self.state {
            State::Fixed(f) => f.snapshot(mode, out),
            State::Sliding(s) => s.snapshot(mode, out),
            State::Session(s) => s.snapshot(mode, out),
        }
    }

    /// Applies a snapshot written by [`Self::snapshot`] (a full one, then deltas).
    pub fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        self.watermark = input.take()?;
        self.arrivals = input.take()?;
        match &mut self.state {
            State::Fixed(f) => f.restore(input),
            State::Sliding(s) => s.restore(input),
            State::Session(s) => s.restore(input),
        }
    }
}

impl<K, A, B> Operator for WindowOperator<K, A, B>
where
    K: StateKey,
    A: Accumulate + StateValue,
    B: Backend,
{
    type Input<'a> = (&'a K, A::Input<'a>);
    type Output = Emission<K, A::Output>;

    #[inline]
    fn process(
        &mut self,
        ts: i64,
        (key, input): Self::Input<'_>,
        emit: &mut impl FnMut(Self::Output),
    ) -> Verdict {
        let seq = self.arrivals;
        self.arrivals = self.arrivals.wrapping_add(1);
        if self.process_with(key, ts, |acc| acc.add(ts, seq, &input), emit) {
            Verdict::Accepted
        } else {
            Verdict::TooLate
        }
    }

    fn advance(&mut self, wm: i64, emit: &mut impl FnMut(Self::Output)) {
        self.advance_with(wm, emit);
    }

    fn watermark(&self) -> i64 {
        self.watermark
    }

    fn held_from(&self) -> Option<i64> {
        self.oldest_held_start()
    }

    fn is_empty(&self) -> bool {
        self.live_windows() == 0
    }

    fn unfired_events(&self) -> u64 {
        WindowOperator::unfired_events(self)
    }

    fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        WindowOperator::snapshot(self, mode, out)
    }

    fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        WindowOperator::restore(self, input)
    }
}

#[cfg(test)]
mod tests;
