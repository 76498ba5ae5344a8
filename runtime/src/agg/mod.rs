//! Accumulator building blocks that generated accumulator structs are made of.
//! Simple aggregates (`count`, `sum`) are plain fields in generated code; the ones here
//! carry logic. Every type merges (session windows) and will be checkpointed, so each
//! is plain data (`Serialize`/`Deserialize`).
//!
//! - [`ApproxCountDistinct`] (HyperLogLog) lives in `hll.rs`;
//! - [`Quantile`] (DDSketch) lives in `quantile.rs`.

mod hll;
mod quantile;

use std::cmp::Ordering;
use std::hash::Hash;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

pub use hll::ApproxCountDistinct;
pub use quantile::Quantile;

/// `avg(x)`: sum and count of non-null values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Avg {
    /// Sum of the values added.
    pub sum: f64,
    /// Number of values added.
    pub n: u64,
}

impl Avg {
    /// Adds one non-null value.
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.n = self.n.saturating_add(1);
    }
    /// Adds the values of `other`.
    pub fn merge(&mut self, other: &Avg) {
        self.sum += other.sum;
        self.n = self.n.saturating_add(other.n);
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// True for a value that is not equal to itself (a float NaN): such values are never
/// stored by `Min`/`Max`.
#[allow(clippy::eq_op)]
fn is_nan_like<T: PartialOrd>(v: &T) -> bool {
    v.partial_cmp(v).is_none()
}

/// `min(x)`: smallest non-null value (floats by total order, NaN never stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Min<T>(pub Option<T>);
/// `max(x)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Adds one non-null value (a NaN is ignored).
    pub fn add(&mut self, v: T) {
        if is_nan_like(&v) {
            return;
        }
        let smaller = match &self.0 {
            None => true,
            Some(cur) => v.partial_cmp(cur) == Some(Ordering::Less),
        };
        if smaller {
            self.0 = Some(v);
        }
    }
    /// Adds the minimum of `other`.
    pub fn merge(&mut self, other: Min<T>) {
        if let Some(v) = other.0 {
            self.add(v);
        }
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<T> {
        self.0.clone()
    }
}

impl<T: PartialOrd + Clone> Max<T> {
    /// Adds one non-null value (a NaN is ignored).
    pub fn add(&mut self, v: T) {
        if is_nan_like(&v) {
            return;
        }
        let larger = match &self.0 {
            None => true,
            Some(cur) => v.partial_cmp(cur) == Some(Ordering::Greater),
        };
        if larger {
            self.0 = Some(v);
        }
    }
    /// Adds the maximum of `other`.
    pub fn merge(&mut self, other: Max<T>) {
        if let Some(v) = other.0 {
            self.add(v);
        }
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<T> {
        self.0.clone()
    }
}

/// `first(x)`: the non-null value with the smallest event time, ties by arrival
/// (smaller `seq` = earlier arrival).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct First<T>(pub Option<(i64, u64, T)>);
/// `last(x)`: the non-null value with the largest event time, ties by arrival (the
/// later arrival wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Adds value `v` of the event with event time `ts` and arrival number `seq`.
    pub fn add(&mut self, ts: i64, seq: u64, v: T) {
        match &self.0 {
            Some((cts, cseq, _)) if (*cts, *cseq) <= (ts, seq) => {}
            _ => self.0 = Some((ts, seq, v)),
        }
    }
    /// Keeps the earlier of the two (same rule as `add`).
    pub fn merge(&mut self, other: First<T>) {
        if let Some((ts, seq, v)) = other.0 {
            self.add(ts, seq, v);
        }
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<T> {
        self.0.as_ref().map(|(_, _, v)| v.clone())
    }
}

impl<T: Clone> Last<T> {
    /// Adds value `v` of the event with event time `ts` and arrival number `seq`.
    pub fn add(&mut self, ts: i64, seq: u64, v: T) {
        match &self.0 {
            Some((cts, cseq, _)) if (*cts, *cseq) >= (ts, seq) => {}
            _ => self.0 = Some((ts, seq, v)),
        }
    }
    /// Keeps the later of the two (same rule as `add`).
    pub fn merge(&mut self, other: Last<T>) {
        if let Some((ts, seq, v)) = other.0 {
            self.add(ts, seq, v);
        }
    }
    /// None when no value was added.
    pub fn get(&self) -> Option<T> {
        self.0.as_ref().map(|(_, _, v)| v.clone())
    }
}

/// A value that can be counted distinctly: integers, strings, bools, and floats by bit
/// pattern (with -0.0 folded into 0.0).
pub trait DistinctValue: Clone {
    /// What the exact set stores: equal values have equal representations.
    type Repr: Hash + Eq + Clone;
    /// The representation of this value in the exact set.
    fn repr(&self) -> Self::Repr;
    /// 64-bit hash (xxh3) used by `ApproxCountDistinct`.
    fn hash64(&self) -> u64;
}

macro_rules! distinct_int {
    ($($t:ty),*) => {$(
        /// By value; hashed as little-endian bytes.
        impl DistinctValue for $t {
            type Repr = $t;
            fn repr(&self) -> $t {
                *self
            }
            fn hash64(&self) -> u64 {
                xxh3_64(&self.to_le_bytes())
            }
        }
    )*};
}
distinct_int!(i32, i64, u32, u64);

/// `false`/`true`; hashed as one byte 0/1.
impl DistinctValue for bool {
    type Repr = bool;
    fn repr(&self) -> bool {
        *self
    }
    fn hash64(&self) -> u64 {
        xxh3_64(&[u8::from(*self)])
    }
}

/// The canonical bit pattern of an f64: -0.0 is 0.0, every NaN is the one quiet NaN.
fn f64_bits(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// The canonical bit pattern of an f32 (as for f64).
fn f32_bits(v: f32) -> u32 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// By bit pattern, -0.0 folded into 0.0 and all NaNs into one; hashed as the
/// little-endian bytes of that pattern.
impl DistinctValue for f64 {
    type Repr = u64;
    fn repr(&self) -> u64 {
        f64_bits(*self)
    }
    fn hash64(&self) -> u64 {
        xxh3_64(&f64_bits(*self).to_le_bytes())
    }
}

/// As for f64.
impl DistinctValue for f32 {
    type Repr = u32;
    fn repr(&self) -> u32 {
        f32_bits(*self)
    }
    fn hash64(&self) -> u64 {
        xxh3_64(&f32_bits(*self).to_le_bytes())
    }
}

/// By content; hashed as its UTF-8 bytes.
impl DistinctValue for String {
    type Repr = String;
    fn repr(&self) -> String {
        self.clone()
    }
    fn hash64(&self) -> u64 {
        xxh3_64(self.as_bytes())
    }
}

/// `count_distinct(x)`: exact.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T::Repr: Serialize",
    deserialize = "T::Repr: Deserialize<'de>"
))]
pub struct CountDistinct<T: DistinctValue> {
    set: hashbrown::HashSet<T::Repr>,
}

impl<T: DistinctValue> Default for CountDistinct<T> {
    fn default() -> Self {
        CountDistinct {
            set: hashbrown::HashSet::default(),
        }
    }
}

impl<T: DistinctValue> CountDistinct<T> {
    /// Adds one non-null value.
    pub fn add(&mut self, v: &T) {
        self.set.insert(v.repr());
    }
    /// Adds the values of `other`.
    pub fn merge(&mut self, other: CountDistinct<T>) {
        let (mut big, small) = if other.set.len() > self.set.len() {
            (other.set, std::mem::take(&mut self.set))
        } else {
            (std::mem::take(&mut self.set), other.set)
        };
        big.extend(small);
        self.set = big;
    }
    /// The number of distinct values added.
    pub fn get(&self) -> u64 {
        self.set.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg() {
        let mut a = Avg::default();
        assert_eq!(a.get(), None);
        a.add(1.0);
        a.add(2.0);
        let mut b = Avg::default();
        b.add(6.0);
        a.merge(&b);
        assert_eq!(a.get(), Some(3.0));
    }

    #[test]
    fn min_max_skip_nan() {
        let mut mn = Min::default();
        let mut mx = Max::default();
        for v in [f64::NAN, 3.0, f64::NAN, -1.5, 7.0, f64::NAN] {
            mn.add(v);
            mx.add(v);
        }
        assert_eq!(mn.get(), Some(-1.5));
        assert_eq!(mx.get(), Some(7.0));
        let mut m2 = Min(None);
        m2.add(f64::NAN);
        assert_eq!(m2.get(), None);
        m2.merge(mn.clone());
        assert_eq!(m2.get(), Some(-1.5));
        let mut s = Max::default();
        s.add("b".to_string());
        s.merge(Max(Some("a".to_string())));
        assert_eq!(s.get().as_deref(), Some("b"));
    }

    #[test]
    fn first_last_ties_by_arrival() {
        let mut f = First::default();
        let mut l = Last::default();
        for (ts, seq, v) in [
            (5, 1, "a"),
            (3, 2, "b"),
            (3, 3, "c"),
            (9, 4, "d"),
            (9, 5, "e"),
        ] {
            f.add(ts, seq, v);
            l.add(ts, seq, v);
        }
        assert_eq!(f.get(), Some("b"));
        assert_eq!(l.get(), Some("e"));
    }

    #[test]
    fn distinct_float_folding() {
        assert_eq!((-0.0f64).repr(), 0.0f64.repr());
        assert_eq!((-0.0f64).hash64(), 0.0f64.hash64());
        assert_eq!((-0.0f32).repr(), 0.0f32.repr());
        assert_eq!(f64::NAN.repr(), (-f64::NAN).repr());
        assert_ne!(1.0f64.repr(), (-1.0f64).repr());
        let mut c = CountDistinct::<f64>::default();
        for v in [0.0, -0.0, 1.0, 1.0, f64::NAN, f64::NAN] {
            c.add(&v);
        }
        assert_eq!(c.get(), 3);
    }
}
