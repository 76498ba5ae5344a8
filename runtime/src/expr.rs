//! SQL semantics for generated expression code. Every expression value is an
//! `Option<T>` (None = SQL NULL); these helpers are `#[inline]` so that the optimizer
//! strips the `Some` wrappers of values that cannot be null.

use std::borrow::Cow;

/// Three-valued AND.
#[inline]
pub fn and(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(false) => Some(false),
        Some(true) => b(),
        None => match b() {
            Some(false) => Some(false),
            _ => None,
        },
    }
}

/// Three-valued OR.
#[inline]
pub fn or(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(true) => Some(true),
        Some(false) => b(),
        None => match b() {
            Some(true) => Some(true),
            _ => None,
        },
    }
}

#[inline]
pub fn not(a: Option<bool>) -> Option<bool> {
    a.map(|v| !v)
}

/// A filter keeps a row only when its predicate is true (NULL counts as false).
#[inline]
pub fn truthy(a: Option<bool>) -> bool {
    a == Some(true)
}

/// Applies `f` when both operands are non-null.
#[inline]
pub fn bin<A, B, R>(a: Option<A>, b: Option<B>, f: impl FnOnce(A, B) -> R) -> Option<R> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    }
}

/// Like `bin`, for operations that can themselves yield NULL (division by zero).
#[inline]
pub fn bin_opt<A, B, R>(
    a: Option<A>,
    b: Option<B>,
    f: impl FnOnce(A, B) -> Option<R>,
) -> Option<R> {
    match (a, b) {
        (Some(a), Some(b)) => f(a, b),
        _ => None,
    }
}

/// Integer arithmetic never panics: wrapping on overflow, NULL on division by zero.
pub trait SqlInt: Copy {
    fn sql_add(self, o: Self) -> Self;
    fn sql_sub(self, o: Self) -> Self;
    fn sql_mul(self, o: Self) -> Self;
    fn sql_div(self, o: Self) -> Option<Self>;
    fn sql_rem(self, o: Self) -> Option<Self>;
    fn sql_neg(self) -> Self;
    fn sql_abs(self) -> Self;
}

macro_rules! sql_int {
    ($($t:ty),*) => {$(
        impl SqlInt for $t {
            #[inline] fn sql_add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline] fn sql_sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline] fn sql_mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline] fn sql_div(self, o: Self) -> Option<Self> { self.checked_div(o) }
            #[inline] fn sql_rem(self, o: Self) -> Option<Self> { self.checked_rem(o) }
            #[inline] fn sql_neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[inline] fn sql_abs(self) -> Self {
                #[allow(unused_comparisons)]
                if self < (0 as $t) { self.sql_neg() } else { self }
            }
        }
    )*};
}
sql_int!(i32, i64, u32, u64);

/// Float division: NULL on division by zero (JSON has no infinities).
#[inline]
pub fn fdiv<F: Into<f64> + Copy>(a: F, b: F) -> Option<f64> {
    let b: f64 = b.into();
    if b == 0.0 { None } else { Some(a.into() / b) }
}

#[inline]
pub fn frem<F: Into<f64> + Copy>(a: F, b: F) -> Option<f64> {
    let b: f64 = b.into();
    if b == 0.0 { None } else { Some(a.into() % b) }
}

/// `ROUND(x)`: half away from zero, as SQL.
#[inline]
pub fn round(x: f64) -> f64 {
    x.round()
}

/// `ROUND(x, d)`.
#[inline]
pub fn round_to(x: f64, digits: i64) -> f64 {
    let m = 10f64.powi(digits.clamp(-30, 30) as i32);
    (x * m).round() / m
}

#[inline]
pub fn lower(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.chars().any(|c| c.is_uppercase()) {
        Cow::Owned(s.to_lowercase())
    } else {
        s
    }
}

#[inline]
pub fn upper(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.chars().any(|c| c.is_lowercase()) {
        Cow::Owned(s.to_uppercase())
    } else {
        s
    }
}

/// `length(s)`: characters, not bytes.
#[inline]
pub fn length(s: &str) -> i64 {
    s.chars().count() as i64
}

/// `skip_serializing_if` for a `retracted` column carried through a stateless flow:
/// like window results, rows say `retracted` only when it is true.
#[inline]
pub fn not_true(v: &Option<bool>) -> bool {
    *v != Some(true)
}

/// Total order on f64 for comparisons in expressions (NaN cannot come from JSON).
#[inline]
pub fn fcmp(a: f64, b: f64) -> std::cmp::Ordering {
    a.total_cmp(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_logic() {
        assert_eq!(and(None, || Some(false)), Some(false));
        assert_eq!(and(None, || Some(true)), None);
        assert_eq!(and(Some(true), || Some(true)), Some(true));
        assert_eq!(or(None, || Some(true)), Some(true));
        assert_eq!(or(None, || Some(false)), None);
        assert_eq!(or(Some(false), || Some(false)), Some(false));
        assert_eq!(not(None), None);
        assert!(!truthy(None));
    }

    #[test]
    fn integer_ops_never_panic() {
        assert_eq!(7i64.sql_div(0), None);
        assert_eq!(7i64.sql_div(2), Some(3));
        assert_eq!((-7i64).sql_rem(0), None);
        assert_eq!(i64::MIN.sql_div(-1), None);
        assert_eq!(i64::MAX.sql_add(1), i64::MIN);
        assert_eq!((-5i32).sql_abs(), 5);
        assert_eq!(5u64.sql_abs(), 5);
        assert_eq!(fdiv(1.0f64, 0.0), None);
        assert_eq!(fdiv(3.0f64, 2.0), Some(1.5));
    }

    #[test]
    fn string_functions() {
        assert_eq!(lower(Cow::Borrowed("AbC")), "abc");
        assert!(matches!(lower(Cow::Borrowed("abc")), Cow::Borrowed(_)));
        assert_eq!(upper(Cow::Borrowed("abc")), "ABC");
        assert_eq!(length("héllo"), 5);
        assert_eq!(round_to(1.2345, 2), 1.23);
        assert_eq!(round(-2.5), -3.0);
    }
}
