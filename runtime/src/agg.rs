//! Accumulator building blocks that generated accumulator structs are made of.
//! Simple aggregates (`count`, `sum`) are plain fields in generated code; the ones here
//! carry logic. Every type merges (session windows) and will be checkpointed, so each
//! is plain data.

use std::hash::Hash;

/// `avg(x)`: sum and count of non-null values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Avg {
    pub sum: f64,
    pub n: u64,
}

impl Avg {
    pub fn add(&mut self, v: f64) {
        let _ = v;
        todo!()
    }
    pub fn merge(&mut self, other: &Avg) {
        let _ = other;
        todo!()
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<f64> {
        todo!()
    }
}

/// `min(x)`: smallest non-null value (floats by total order, NaN never stored).
#[derive(Clone, Debug, PartialEq)]
pub struct Min<T>(pub Option<T>);
/// `max(x)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Max<T>(pub Option<T>);

impl<T> Default for Min<T> {
    fn default() -> Self {
        Min(None)
    }
}
impl<T> Default for Max<T> {
    fn default() -> Self {
        Max(None)
    }
}

impl<T: PartialOrd + Clone> Min<T> {
    pub fn add(&mut self, v: T) {
        let _ = v;
        todo!()
    }
    pub fn merge(&mut self, other: Min<T>) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> Option<T> {
        todo!()
    }
}

impl<T: PartialOrd + Clone> Max<T> {
    pub fn add(&mut self, v: T) {
        let _ = v;
        todo!()
    }
    pub fn merge(&mut self, other: Max<T>) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> Option<T> {
        todo!()
    }
}

/// `first(x)`: the non-null value with the smallest event time, ties by arrival
/// (smaller `seq` = earlier arrival).
#[derive(Clone, Debug, PartialEq)]
pub struct First<T>(pub Option<(i64, u64, T)>);
/// `last(x)`: the non-null value with the largest event time, ties by arrival (the
/// later arrival wins).
#[derive(Clone, Debug, PartialEq)]
pub struct Last<T>(pub Option<(i64, u64, T)>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}
impl<T> Default for Last<T> {
    fn default() -> Self {
        Last(None)
    }
}

impl<T: Clone> First<T> {
    pub fn add(&mut self, ts: i64, seq: u64, v: T) {
        let _ = (ts, seq, v);
        todo!()
    }
    pub fn merge(&mut self, other: First<T>) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> Option<T> {
        todo!()
    }
}

impl<T: Clone> Last<T> {
    pub fn add(&mut self, ts: i64, seq: u64, v: T) {
        let _ = (ts, seq, v);
        todo!()
    }
    pub fn merge(&mut self, other: Last<T>) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> Option<T> {
        todo!()
    }
}

/// A value that can be counted distinctly: integers, strings, bools, and floats by bit
/// pattern (with -0.0 folded into 0.0).
pub trait DistinctValue: Clone {
    type Repr: Hash + Eq + Clone;
    fn repr(&self) -> Self::Repr;
    /// 64-bit hash (xxh3) used by `ApproxCountDistinct`.
    fn hash64(&self) -> u64;
}

/// `count_distinct(x)`: exact.
#[derive(Clone, Debug)]
pub struct CountDistinct<T: DistinctValue> {
    _p: std::marker::PhantomData<T>,
}

impl<T: DistinctValue> Default for CountDistinct<T> {
    fn default() -> Self {
        todo!()
    }
}

impl<T: DistinctValue> CountDistinct<T> {
    pub fn add(&mut self, v: &T) {
        let _ = v;
        todo!()
    }
    pub fn merge(&mut self, other: CountDistinct<T>) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> u64 {
        todo!()
    }
}

/// `approx_count_distinct(x)`: HyperLogLog (exact while small), relative error at most
/// 2%.
#[derive(Clone, Debug, Default)]
pub struct ApproxCountDistinct {}

impl ApproxCountDistinct {
    pub fn add_hash(&mut self, h: u64) {
        let _ = h;
        todo!()
    }
    pub fn add<T: DistinctValue>(&mut self, v: &T) {
        self.add_hash(v.hash64())
    }
    pub fn merge(&mut self, other: ApproxCountDistinct) {
        let _ = other;
        todo!()
    }
    pub fn get(&self) -> u64 {
        todo!()
    }
}

/// `quantile(x, q)`: a relative-error sketch (DDSketch), relative error at most 1% on
/// the returned value against the exact value of rank `floor(q * (n - 1))` (0-based)
/// in sorted order. Handles negative values and zero.
#[derive(Clone, Debug, Default)]
pub struct Quantile {}

impl Quantile {
    pub fn add(&mut self, v: f64) {
        let _ = v;
        todo!()
    }
    pub fn merge(&mut self, other: Quantile) {
        let _ = other;
        todo!()
    }
    /// None when empty.
    pub fn get(&self, q: f64) -> Option<f64> {
        let _ = q;
        todo!()
    }
}
