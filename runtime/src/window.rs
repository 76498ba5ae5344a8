//! Event-time window operators (`pipeline-spec.md`, "Event time, watermarks, firing").
//!
//! One generic operator per window kind family, monomorphized over the generated key
//! struct `K` and accumulator struct `A`. State is organised so that firing and purging
//! cost no scan over all keys: timers are kept ordered by time.

/// What kind of window, in epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub allowed_lateness: i64,
}

/// An accumulator struct (generated: one per `aggregate` block, plain fields).
pub trait Aggregator: Default {
    /// The aggregate values of one firing.
    type Output;
    /// Merge `other` into `self` (session windows).
    fn merge(&mut self, other: Self);
    fn output(&self) -> Self::Output;
}

/// One window result to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct Emission<K, O> {
    pub key: K,
    pub start: i64,
    pub end: i64,
    pub revision: u32,
    pub retracted: bool,
    pub out: O,
}

/// Window operator for all three kinds. `K` is the key (use `()` for a global window).
pub struct WindowOperator<K, A> {
    _p: std::marker::PhantomData<(K, A)>,
}

impl<K, A> WindowOperator<K, A>
where
    K: std::hash::Hash + Eq + Ord + Clone,
    A: Aggregator,
{
    pub fn new(spec: WindowSpec) -> Self {
        let _ = spec;
        todo!()
    }

    /// The watermark the operator has seen (WATERMARK_MIN initially).
    pub fn watermark(&self) -> i64 {
        todo!()
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
        let _ = (key, ts, update, out);
        todo!()
    }

    /// Advances the watermark to `wm` (ignored if not greater than the current one):
    /// fires every window with `end <= wm` in order of `end`, purges every window with
    /// `end + allowed_lateness <= wm`.
    pub fn advance(&mut self, wm: i64, out: &mut Vec<Emission<K, A::Output>>) {
        let _ = (wm, out);
        todo!()
    }

    /// Number of windows whose state is held (for tests and metrics).
    pub fn live_windows(&self) -> usize {
        todo!()
    }
}
