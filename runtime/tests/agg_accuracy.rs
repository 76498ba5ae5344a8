//! Accuracy of the sketching aggregates against exact answers, and the merge and
//! tie-breaking rules of the others. Data comes from fixed seeds (splitmix64), so the
//! checks are deterministic.

use streamc_runtime::agg::{
    ApproxCountDistinct, CountDistinct, DistinctValue, First, Last, Max, Min, Quantile,
};

/// splitmix64: a bijection of its input, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` distinct u64 values for `seed`.
fn distinct_values(seed: u64, n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| mix(seed.wrapping_mul(1 << 40) ^ i))
}

fn rel_err(est: u64, exact: u64) -> f64 {
    (est as f64 - exact as f64).abs() / exact as f64
}

// ---------------------------------------------------------------------------------
// approx_count_distinct

#[test]
fn hll_error_within_2_percent_at_required_cardinalities() {
    for (seed, n) in [
        (1u64, 1u64),
        (2, 10),
        (3, 1000),
        (4, 100_000),
        (5, 1_000_000),
    ] {
        let mut s = ApproxCountDistinct::default();
        for v in distinct_values(seed, n) {
            s.add(&v);
        }
        // Duplicates change nothing.
        for v in distinct_values(seed, n.min(10_000)) {
            s.add(&v);
        }
        let e = rel_err(s.get(), n);
        assert!(
            e <= 0.02,
            "n={n}: estimate {} (error {:.3}%)",
            s.get(),
            e * 100.0
        );
        if n <= 1000 {
            assert_eq!(s.get(), n, "small cardinalities are exact");
            assert!(s.is_exact());
        }
    }
}

#[test]
fn hll_error_within_2_percent_across_the_range() {
    // Around the switch from the exact set to registers, and through the range where
    // classic HyperLogLog needs its small-range correction.
    let mut worst: f64 = 0.0;
    for n in [
        2049u64, 2500, 4000, 7000, 12_000, 20_000, 33_000, 50_000, 82_000, 130_000, 250_000,
        500_000,
    ] {
        for seed in 10..13u64 {
            let mut s = ApproxCountDistinct::default();
            for v in distinct_values(seed, n) {
                s.add(&v);
            }
            let e = rel_err(s.get(), n);
            worst = worst.max(e);
            assert!(
                e <= 0.02,
                "n={n} seed={seed}: estimate {} ({:.3}%)",
                s.get(),
                e * 100.0
            );
        }
    }
    eprintln!("worst HLL error over the sweep: {:.3}%", worst * 100.0);
}

#[test]
fn hll_strings() {
    let n = 100_000u64;
    let mut s = ApproxCountDistinct::default();
    for i in 0..n {
        s.add(&format!("user-{i}"));
        s.add(&format!("user-{}", i / 2)); // duplicates of earlier ones
    }
    assert!(rel_err(s.get(), n) <= 0.02, "{}", s.get());
}

#[test]
fn hll_merge_equals_one_sketch_of_the_union() {
    // (size of a, size of b, overlap): exact+exact, exact+exact crossing the switch,
    // exact+dense, dense+exact, dense+dense.
    for (na, nb, overlap) in [
        (10u64, 20u64, 5u64),
        (1500, 1500, 100),
        (100, 50_000, 50),
        (50_000, 100, 0),
        (60_000, 80_000, 30_000),
    ] {
        let a_vals: Vec<u64> = distinct_values(7, na).collect();
        let b_vals: Vec<u64> = distinct_values(7, na + nb)
            .skip((na - overlap) as usize)
            .take(nb as usize)
            .collect();
        let (mut a, mut b, mut all) = (
            ApproxCountDistinct::default(),
            ApproxCountDistinct::default(),
            ApproxCountDistinct::default(),
        );
        for v in &a_vals {
            a.add(v);
            all.add(v);
        }
        for v in &b_vals {
            b.add(v);
            all.add(v);
        }
        let mut ab = a.clone();
        ab.merge(b.clone());
        let mut ba = b;
        ba.merge(a);
        assert_eq!(ab.get(), all.get(), "{na}+{nb}");
        assert_eq!(ba.get(), all.get(), "{na}+{nb}");
        let exact = na + nb - overlap;
        assert!(rel_err(ab.get(), exact) <= 0.02, "{na}+{nb}: {}", ab.get());
    }
    let mut empty = ApproxCountDistinct::default();
    empty.merge(ApproxCountDistinct::default());
    assert_eq!(empty.get(), 0);
}

#[test]
fn hll_stays_small_for_small_windows() {
    let mut s = ApproxCountDistinct::default();
    for v in 0..100u64 {
        s.add(&v);
    }
    assert!(s.is_exact());
    // 100 hashes: the serialized state is about 100 numbers, not 2^15 registers.
    let json = serde_json::to_string(&s).expect("serialize");
    assert!(json.len() < 100 * 25, "{} bytes", json.len());
}

// ---------------------------------------------------------------------------------
// quantile

const QS: [f64; 7] = [0.0, 0.01, 0.25, 0.5, 0.95, 0.99, 1.0];

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
    sorted[rank]
}

fn check_quantiles(name: &str, data: &[f64]) {
    let mut s = Quantile::default();
    for &v in data {
        s.add(v);
    }
    let mut sorted = data.to_vec();
    sorted.sort_by(f64::total_cmp);
    for q in QS {
        let exact = exact_quantile(&sorted, q);
        let got = s.get(q).expect("not empty");
        let err = if exact == 0.0 {
            got.abs()
        } else {
            ((got - exact) / exact).abs()
        };
        assert!(
            err <= 0.01,
            "{name}: q={q}: got {got}, exact {exact} (error {:.4}%)",
            err * 100.0
        );
        if exact == 0.0 {
            assert_eq!(got, 0.0, "{name}: q={q}");
        }
    }
}

fn distributions(n: usize, seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let mut r = Rng(seed);
    let mut d = vec![];
    d.push((
        "uniform 0..1000",
        (0..n).map(|_| r.unit() * 1000.0).collect(),
    ));
    d.push((
        "lognormal",
        (0..n).map(|_| (r.normal() * 2.0).exp()).collect(),
    ));
    d.push((
        "normal around 0",
        (0..n).map(|_| r.normal() * 50.0).collect(),
    ));
    d.push((
        "all negative",
        (0..n).map(|_| -1.0 - r.unit() * 1e6).collect(),
    ));
    d.push((
        "pareto (heavy tail)",
        (0..n)
            .map(|_| 1.0 / (1.0 - r.unit()).powf(1.0 / 1.2))
            .collect(),
    ));
    d.push((
        "a third zeros, rest both signs",
        (0..n)
            .map(|i| match i % 3 {
                0 => 0.0,
                1 => -r.unit() * 10.0,
                _ => r.unit() * 1e-3,
            })
            .collect(),
    ));
    d.push((
        "integers (latency ms)",
        (0..n)
            .map(|_| (r.unit() * r.unit() * 5000.0).floor())
            .collect(),
    ));
    d.push(("constant", vec![42.5; n]));
    d.push((
        "wide range",
        (0..n)
            .map(|_| {
                let sign = if r.next() & 1 == 0 { 1.0 } else { -1.0 };
                sign * 10f64.powf(r.unit() * 200.0 - 100.0)
            })
            .collect(),
    ));
    d
}

#[test]
fn quantile_error_within_1_percent() {
    for n in [1usize, 2, 7, 100, 128, 129, 1000, 100_000] {
        for (name, data) in distributions(n, 99 + n as u64) {
            check_quantiles(&format!("{name}, n={n}"), &data);
        }
    }
}

#[test]
fn quantile_small_is_exact() {
    let mut s = Quantile::default();
    let data = [3.5, -2.0, 0.0, 1e9, 7.25, -0.0];
    for v in data {
        s.add(v);
    }
    assert!(s.is_exact());
    let mut sorted = data.to_vec();
    sorted.sort_by(f64::total_cmp);
    for q in [0.0, 0.2, 0.5, 0.7, 1.0] {
        assert_eq!(s.get(q), Some(exact_quantile(&sorted, q)), "q={q}");
    }
    assert_eq!(Quantile::default().get(0.5), None);
}

#[test]
fn quantile_merge() {
    for (name, data) in distributions(30_000, 5) {
        // Uneven parts: one stays exact, two become sketches.
        let parts = [&data[..50], &data[50..10_000], &data[10_000..]];
        let mut whole = Quantile::default();
        for &v in &data {
            whole.add(v);
        }
        let mut sketches: Vec<Quantile> = parts
            .iter()
            .map(|p| {
                let mut s = Quantile::default();
                for &v in p.iter() {
                    s.add(v);
                }
                s
            })
            .collect();
        let mut merged = sketches.remove(0);
        for s in sketches {
            merged.merge(s);
        }
        assert_eq!(merged.count(), data.len() as u64);
        for q in QS {
            assert_eq!(merged.get(q), whole.get(q), "{name} q={q}");
        }
        // Exact + exact past the switch, in both orders.
        let (mut a, mut b) = (Quantile::default(), Quantile::default());
        for &v in &data[..100] {
            a.add(v);
        }
        for &v in &data[100..200] {
            b.add(v);
        }
        let mut ab = a.clone();
        ab.merge(b.clone());
        b.merge(a);
        let mut sorted = data[..200].to_vec();
        sorted.sort_by(f64::total_cmp);
        for q in QS {
            let exact = exact_quantile(&sorted, q);
            for got in [ab.get(q), b.get(q)] {
                let got = got.expect("not empty");
                assert!(
                    got == exact || ((got - exact) / exact).abs() <= 0.01,
                    "{name} q={q}: {got} vs {exact}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// first / last, min / max, count_distinct

#[test]
fn first_last_ties_by_arrival_and_merge_in_any_order() {
    // (ts, seq, value); ties at ts 5 and ts 9.
    let events = [
        (7, 0, "g"),
        (5, 1, "a"),
        (9, 2, "x"),
        (5, 3, "b"),
        (9, 4, "y"),
        (6, 5, "c"),
    ];
    let mut f = First::default();
    let mut l = Last::default();
    for (ts, seq, v) in events {
        f.add(ts, seq, v);
        l.add(ts, seq, v);
    }
    assert_eq!(f.get(), Some("a"), "smallest ts, earlier arrival");
    assert_eq!(l.get(), Some("y"), "largest ts, later arrival");
    // Any split into two accumulators, merged either way, gives the same answer.
    for mask in 0u32..64 {
        let (mut f1, mut f2, mut l1, mut l2) = (
            First::default(),
            First::default(),
            Last::default(),
            Last::default(),
        );
        for (i, &(ts, seq, v)) in events.iter().enumerate() {
            if mask & (1 << i) != 0 {
                f1.add(ts, seq, v);
                l1.add(ts, seq, v);
            } else {
                f2.add(ts, seq, v);
                l2.add(ts, seq, v);
            }
        }
        let (mut fa, mut la) = (f1.clone(), l1.clone());
        fa.merge(f2.clone());
        la.merge(l2.clone());
        f2.merge(f1);
        l2.merge(l1);
        assert_eq!((fa.get(), f2.get()), (Some("a"), Some("a")), "mask {mask}");
        assert_eq!((la.get(), l2.get()), (Some("y"), Some("y")), "mask {mask}");
    }
    assert_eq!(First::<i64>::default().get(), None);
}

#[test]
fn min_max_never_store_nan() {
    let mut mn = Min::default();
    let mut mx = Max::default();
    for v in [f64::NAN, 2.0, -3.0, f64::NAN, 8.0] {
        mn.add(v);
        mx.add(v);
    }
    assert_eq!((mn.get(), mx.get()), (Some(-3.0), Some(8.0)));
    let mut only_nan = Max::default();
    only_nan.add(f32::NAN);
    assert_eq!(only_nan.get(), None);
}

#[test]
fn count_distinct_folds_floats() {
    let mut c = CountDistinct::<f64>::default();
    for v in [
        0.0,
        -0.0,
        1.5,
        1.5,
        -1.5,
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
    ] {
        c.add(&v);
    }
    assert_eq!(c.get(), 5, "0.0 = -0.0, one NaN");
    let mut c32 = CountDistinct::<f32>::default();
    for v in [0.0f32, -0.0, 2.0] {
        c32.add(&v);
    }
    assert_eq!(c32.get(), 2);
    // -0.0 and 0.0 also hash alike for approx_count_distinct.
    assert_eq!((-0.0f64).hash64(), 0.0f64.hash64());
    let mut a = ApproxCountDistinct::default();
    a.add(&-0.0f64);
    a.add(&0.0f64);
    assert_eq!(a.get(), 1);
}

#[test]
fn count_distinct_merge_and_types() {
    let mut a = CountDistinct::<String>::default();
    let mut b = CountDistinct::<String>::default();
    for s in ["x", "y", "z"] {
        a.add(&s.to_string());
    }
    for s in ["z", "w"] {
        b.add(&s.to_string());
    }
    a.merge(b);
    assert_eq!(a.get(), 4);
    let mut i = CountDistinct::<i32>::default();
    let mut u = CountDistinct::<u64>::default();
    let mut t = CountDistinct::<bool>::default();
    for k in 0..100 {
        i.add(&(k % 7));
        u.add(&(k as u64 % 13));
        t.add(&(k % 2 == 0));
    }
    assert_eq!((i.get(), u.get(), t.get()), (7, 13, 2));
    let mut x = CountDistinct::<i64>::default();
    let mut y = CountDistinct::<u32>::default();
    x.add(&-1);
    y.add(&1);
    assert_eq!((x.get(), y.get()), (1, 1));
}
