//! An order-preserving ("memcomparable") binary encoding of state keys, for the RocksDB
//! backend: the bytewise order of two encodings is the `Ord` of the keys, so a range
//! scan over a store yields its keys in order (the emission order of firings) and a key
//! group's entries are one contiguous range.
//!
//! It encodes what generated key structs are made of (`()`, structs and tuples of
//! integers, bools, strings, [`crate::key::F64Key`] floats and `Option`s of them), in
//! field order, the order of a derived `Ord`:
//! - unsigned integers big-endian; signed ones big-endian with the sign bit flipped;
//! - `bool` as one byte; `Option` as `0` (None) or `1` and the value;
//! - strings with every `0x00` byte escaped as `00 FF` and ended by `00 00` (so a
//!   prefix sorts first and the field after it cannot bleed into the comparison);
//! - floats as the bits of `f64::total_cmp` order with `-0.0` folded into `0.0`, the
//!   order and equality of `F64Key` (a NaN is a key like any other, each bit pattern
//!   its own).
//!
//! Anything else (maps, sequences, enums with data) is an error: keys never hold them.
//! Only encoding is needed: the store keeps the key's postcard encoding in the value.

use serde::Serialize;
use serde::ser::{self, Impossible};

/// A key could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a state key: {0}")]
pub struct KeyError(String);

impl ser::Error for KeyError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string())
    }
}

/// Appends the encoding of `key` to `out`.
pub fn encode_into<K: Serialize + ?Sized>(key: &K, out: &mut Vec<u8>) -> Result<(), KeyError> {
    key.serialize(&mut KeySer { out })
}

struct KeySer<'a> {
    out: &'a mut Vec<u8>,
}

fn unsupported(what: &str) -> KeyError {
    KeyError(format!("{what} in a key"))
}

impl<'a, 'b> ser::Serializer for &'a mut KeySer<'b> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Impossible<(), KeyError>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), KeyError>;
    type SerializeMap = Impossible<(), KeyError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), KeyError>;

    fn serialize_bool(self, v: bool) -> Result<(), KeyError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), KeyError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), KeyError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), KeyError> {
        self.out
            .extend_from_slice(&((v as u32) ^ (1 << 31)).to_be_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), KeyError> {
        self.out
            .extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), KeyError> {
        self.out.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), KeyError> {
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), KeyError> {
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), KeyError> {
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), KeyError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), KeyError> {
        let v = if v == 0.0 { 0.0 } else { v };
        let bits = v.to_bits();
        // total_cmp: negative numbers (sign set) reversed, positive ones above them.
        let ordered = if bits >> 63 == 1 {
            !bits
        } else {
            bits ^ (1 << 63)
        };
        self.out.extend_from_slice(&ordered.to_be_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), KeyError> {
        self.serialize_u32(u32::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyError> {
        for &b in v {
            self.out.push(b);
            if b == 0 {
                self.out.push(0xFF);
            }
        }
        self.out.extend_from_slice(&[0, 0]);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), KeyError> {
        self.out.push(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), KeyError> {
        self.out.push(1);
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), KeyError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), KeyError> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &str) -> Result<(), KeyError> {
        self.serialize_u32(index)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), KeyError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), KeyError> {
        Err(unsupported("an enum with data"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, KeyError> {
        Err(unsupported("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, KeyError> {
        Err(unsupported("an enum with data"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, KeyError> {
        Err(unsupported("a map"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, KeyError> {
        Err(unsupported("an enum with data"))
    }
}

impl ser::SerializeTuple for &mut KeySer<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), KeyError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), KeyError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut KeySer<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), KeyError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), KeyError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut KeySer<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), KeyError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), KeyError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::F64Key;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
    struct Key {
        a: Option<String>,
        b: i64,
        c: F64Key,
        d: Option<bool>,
        e: u32,
        f: i32,
        g: String,
    }

    fn enc<K: Serialize>(k: &K) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(k, &mut v).unwrap();
        v
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-3i8..3).prop_map(f64::from),
        ]
    }

    fn key() -> impl Strategy<Value = Key> {
        let s = prop_oneof![
            Just(String::new()),
            Just("\0".to_string()),
            Just("a\0".to_string()),
            "[a\\x00b]{0,4}"
        ];
        (
            proptest::option::of(s.clone()),
            prop_oneof![any::<i64>(), -2i64..2],
            float(),
            proptest::option::of(any::<bool>()),
            prop_oneof![any::<u32>(), 0u32..3],
            prop_oneof![any::<i32>(), -2i32..2],
            s,
        )
            .prop_map(|(a, b, c, d, e, f, g)| Key {
                a,
                b,
                c: F64Key(c),
                d,
                e,
                f,
                g,
            })
    }

    proptest! {
        #[test]
        fn byte_order_is_key_order(x in key(), y in key()) {
            prop_assert_eq!(enc(&x).cmp(&enc(&y)), x.cmp(&y));
            prop_assert_eq!(enc(&x) == enc(&y), x == y);
        }
    }

    #[test]
    fn unit_keys_and_unsupported_shapes() {
        assert!(enc(&()).is_empty());
        assert!(encode_into(&vec![1u8], &mut Vec::new()).is_err());
        assert_eq!(enc(&F64Key(-0.0)), enc(&F64Key(0.0)));
    }
}
