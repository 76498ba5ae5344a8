//! `quantile(x, q)`: exact while small, then a DDSketch (Masson, Rim, Lee, VLDB 2019).
//!
//! - Up to [`EXACT_MAX`] values the values themselves are kept: the answer is exact.
//! - Past that, values go to logarithmic buckets with relative accuracy
//!   [`ALPHA`] = 0.5%: bucket `i` holds `(γ^(i-1), γ^i]` with `γ = (1+α)/(1-α)` and
//!   answers `2γ^i/(γ+1)`, within `α` of every value in it. The sketch finds the bucket
//!   holding the value of the requested rank exactly, so the answer is within 0.5% of
//!   the exact value (half the spec's 1%, which leaves room for rounding in the
//!   logarithm). Negative values use a mirrored store, zeros (and ±0.0) a counter, and
//!   ±infinity counters of their own; NaN is ignored. The exact minimum and maximum are
//!   kept, so `q = 0` and `q = 1` are exact and no answer leaves `[min, max]`.
//! - Memory: one `u64` per bucket between the smallest and the largest bucket used;
//!   values spanning a factor of 10 take about 230 buckets, and the whole positive
//!   f64 range at most about 145,000 buckets (1.2 MiB): bounded.
//!   (Subnormal inputs, below 2.2e-308, have less precision than the bucket width.)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Relative accuracy of the sketch.
pub const ALPHA: f64 = 0.005;
/// Most values held exactly before switching to the sketch.
pub const EXACT_MAX: usize = 128;

/// `γ = (1 + α) / (1 - α)`.
fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// Counts of consecutive bucket indexes `offset, offset + 1, ...`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    counts: VecDeque<u64>,
}

impl Store {
    fn add(&mut self, idx: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push_back(n);
            return;
        }
        if idx < self.offset {
            for _ in idx..self.offset {
                self.counts.push_front(0);
            }
            self.offset = idx;
        }
        let pos = (i64::from(idx) - i64::from(self.offset)) as usize;
        while self.counts.len() <= pos {
            self.counts.push_back(0);
        }
        if let Some(c) = self.counts.get_mut(pos) {
            *c = c.saturating_add(n);
        }
    }

    fn merge(&mut self, other: &Store) {
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                self.add(other.offset + i as i32, c);
            }
        }
    }

    /// (bucket index, count) in increasing index order.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(move |(i, &c)| (offset + i as i32, c))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sketch {
    /// Buckets of positive finite values.
    pos: Store,
    /// Buckets of `-v` for negative finite values.
    neg: Store,
    zero: u64,
    pos_inf: u64,
    neg_inf: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            pos: Store::default(),
            neg: Store::default(),
            zero: 0,
            pos_inf: 0,
            neg_inf: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// `ceil(log_γ(v))` for a finite `v > 0`.
    fn index(v: f64) -> i32 {
        // |ln v| <= 745, so the index stays within +-75,000.
        (v.ln() / gamma().ln()).ceil() as i32
    }

    /// The answer for bucket `i`: `2γ^i / (γ + 1)`, within the finite range.
    fn value(i: i32) -> f64 {
        let g = gamma();
        let v = (f64::from(i) * g.ln() + (2.0 / (g + 1.0)).ln()).exp();
        v.min(f64::MAX)
    }

    fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if v == f64::INFINITY {
            self.pos_inf += 1;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += 1;
        } else if v > 0.0 {
            self.pos.add(Self::index(v), 1);
        } else if v < 0.0 {
            self.neg.add(Self::index(-v), 1);
        } else {
            self.zero += 1;
        }
    }

    fn merge(&mut self, other: &Sketch) {
        self.pos.merge(&other.pos);
        self.neg.merge(&other.neg);
        self.zero = self.zero.saturating_add(other.zero);
        self.pos_inf = self.pos_inf.saturating_add(other.pos_inf);
        self.neg_inf = self.neg_inf.saturating_add(other.neg_inf);
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value of 0-based `rank` in sorted order (rank < count).
    fn at_rank(&self, rank: u64) -> f64 {
        if rank == 0 {
            return self.min;
        }
        if rank >= self.count.saturating_sub(1) {
            return self.max;
        }
        let mut seen = self.neg_inf;
        if rank < seen {
            return f64::NEG_INFINITY;
        }
        // Most negative first: the negative store from its largest index down.
        for (i, c) in self.neg.iter().rev() {
            seen = seen.saturating_add(c);
            if rank < seen {
                return self.clamp(-Self::value(i));
            }
        }
        seen = seen.saturating_add(self.zero);
        if rank < seen {
            return 0.0;
        }
        for (i, c) in self.pos.iter() {
            seen = seen.saturating_add(c);
            if rank < seen {
                return self.clamp(Self::value(i));
            }
        }
        f64::INFINITY.min(self.max)
    }

    fn clamp(&self, v: f64) -> f64 {
        v.max(self.min).min(self.max)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Mode {
    /// The values themselves (no NaN), unsorted.
    Exact(Vec<f64>),
    Sketch(Box<Sketch>),
}

/// `quantile(x, q)`: a relative-error sketch (DDSketch), relative error at most 1% on
/// the returned value against the exact value of rank `floor(q * (n - 1))` (0-based)
/// in sorted order. Handles negative values and zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    mode: Mode,
}

impl Default for Quantile {
    fn default() -> Self {
        Quantile {
            mode: Mode::Exact(Vec::new()),
        }
    }
}

fn sketch_of(values: &[f64]) -> Box<Sketch> {
    let mut s = Box::new(Sketch::new());
    for &v in values {
        s.add(v);
    }
    s
}

impl Quantile {
    /// Adds one non-null value (NaN is ignored).
    pub fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        match &mut self.mode {
            Mode::Exact(vs) => {
                vs.push(v);
                if vs.len() > EXACT_MAX {
                    self.mode = Mode::Sketch(sketch_of(vs));
                }
            }
            Mode::Sketch(s) => s.add(v),
        }
    }

    /// Adds the values of `other`.
    pub fn merge(&mut self, other: Quantile) {
        let mine = std::mem::replace(&mut self.mode, Mode::Exact(Vec::new()));
        self.mode = match (mine, other.mode) {
            (Mode::Exact(mut a), Mode::Exact(b)) => {
                a.extend(b);
                if a.len() > EXACT_MAX {
                    Mode::Sketch(sketch_of(&a))
                } else {
                    Mode::Exact(a)
                }
            }
            (Mode::Sketch(mut s), Mode::Exact(vs)) | (Mode::Exact(vs), Mode::Sketch(mut s)) => {
                for v in vs {
                    s.add(v);
                }
                Mode::Sketch(s)
            }
            (Mode::Sketch(mut a), Mode::Sketch(b)) => {
                a.merge(&b);
                Mode::Sketch(a)
            }
        };
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        match &self.mode {
            Mode::Exact(vs) => vs.len() as u64,
            Mode::Sketch(s) => s.count,
        }
    }

    /// The value of 0-based rank `floor(q * (n - 1))` (q clamped to [0, 1], NaN as 0).
    /// None when empty.
    pub fn get(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * (n - 1) as f64).floor() as u64).min(n - 1);
        match &self.mode {
            Mode::Exact(vs) => {
                let mut sorted = vs.clone();
                sorted.sort_unstable_by(f64::total_cmp);
                sorted.get(rank as usize).copied()
            }
            Mode::Sketch(s) => Some(s.at_rank(rank)),
        }
    }

    /// True while the values are held exactly.
    pub fn is_exact(&self) -> bool {
        matches!(self.mode, Mode::Exact(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_small() {
        let mut q = Quantile::default();
        assert_eq!(q.get(0.5), None);
        for v in [5.0, -1.0, 0.0, 3.0, f64::NAN] {
            q.add(v);
        }
        assert_eq!(q.count(), 4);
        assert_eq!(q.get(0.0), Some(-1.0));
        assert_eq!(q.get(0.5), Some(0.0)); // rank floor(0.5 * 3) = 1
        assert_eq!(q.get(1.0), Some(5.0));
        assert_eq!(q.get(f64::NAN), Some(-1.0));
        assert_eq!(q.get(7.0), Some(5.0));
    }

    #[test]
    fn bucket_values_within_alpha() {
        for v in [1e-300, 1e-9, 0.001, 1.0, 1.5, 42.0, 1e9, 1e300, f64::MAX] {
            let r = Sketch::value(Sketch::index(v));
            assert!(((r - v) / v).abs() <= ALPHA * 1.000_001, "{v} -> {r}");
        }
    }

    #[test]
    fn infinities_and_extremes() {
        let mut q = Quantile::default();
        for i in 0..200 {
            q.add(f64::from(i));
        }
        q.add(f64::INFINITY);
        q.add(f64::NEG_INFINITY);
        q.add(f64::MAX);
        q.add(-f64::MAX);
        q.add(f64::MIN_POSITIVE / 4.0);
        assert!(!q.is_exact());
        assert_eq!(q.get(0.0), Some(f64::NEG_INFINITY));
        assert_eq!(q.get(1.0), Some(f64::INFINITY));
        let n = q.count();
        assert_eq!(n, 205);
        let second = q.get(1.0 / (n - 1) as f64).unwrap();
        assert!(((second + f64::MAX) / f64::MAX).abs() <= 0.01, "{second}");
    }
}
