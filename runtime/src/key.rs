//! Helpers for generated key structs.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A float key field: equality, hashing and order by `f64::total_cmp` (with -0.0 folded
/// into 0.0), serialized as the plain number.
#[derive(Clone, Copy, Debug)]
pub struct F64Key(pub f64);

impl F64Key {
    fn canonical(self) -> u64 {
        if self.0 == 0.0 { 0 } else { self.0.to_bits() }
    }
}

impl PartialEq for F64Key {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}
impl Eq for F64Key {}

impl Hash for F64Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical().hash(state)
    }
}

impl PartialOrd for F64Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64Key {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = if self.0 == 0.0 { 0.0 } else { self.0 };
        let b = if other.0 == 0.0 { 0.0 } else { other.0 };
        a.total_cmp(&b)
    }
}

impl Serialize for F64Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for F64Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(F64Key)
    }
}

#[cfg(test)]
mod tests {
    use super::F64Key;

    #[test]
    fn zero_folds_and_orders() {
        assert_eq!(F64Key(0.0), F64Key(-0.0));
        assert!(F64Key(-1.0) < F64Key(0.5));
        assert_eq!(serde_json::to_string(&F64Key(1.5)).unwrap(), "1.5");
    }
}
