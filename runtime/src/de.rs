//! Deserialization helpers for generated event structs.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

struct TsVisitor;

impl<'de> Visitor<'de> for TsVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp (epoch millis integer or RFC 3339 string)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("timestamp {v} out of range")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_rfc3339(v).ok_or_else(|| E::custom(format!("invalid RFC 3339 timestamp {v:?}")))
    }
}

/// Whether `payload` opens a JSON object (its first byte after JSON whitespace is `{`).
/// An event is one object: serde would also read an array into an event struct, by
/// the position of its fields, and accept `[1, "a", 1700000000000]` as an event.
#[inline]
pub fn opens_object(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// The dead-letter error of a record that is not a JSON object.
pub const NOT_AN_OBJECT: &str = "not a JSON object: an event is one object, {\"field\": value, ...}, on one line of a file or in one message";

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `#[serde(deserialize_with = "streamc_runtime::de::timestamp")]` for a required
/// `timestamp` field.
pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(TsVisitor)
}

struct OptTsVisitor;

impl<'de> Visitor<'de> for OptTsVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp (epoch millis integer or RFC 3339 string) or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        timestamp(d).map(Some)
    }
}

/// For an optional (`timestamp?`) field; pair with `#[serde(default)]`.
pub fn opt_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(OptTsVisitor)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[test]
    fn only_objects_open_an_object() {
        for yes in [&b"{}"[..], b" \t\r\n{\"a\":1}", b"{"] {
            assert!(super::opens_object(yes), "{yes:?}");
        }
        for no in [
            &b""[..],
            b"   ",
            b"[1]",
            b"null",
            b"\"{\"",
            b"\x0c{}",
            b"\xEF\xBB\xBF{}",
        ] {
            assert!(!super::opens_object(no), "{no:?}");
        }
    }

    #[derive(Deserialize, Debug)]
    struct Ev {
        #[serde(deserialize_with = "super::timestamp")]
        ts: i64,
        #[serde(default, deserialize_with = "super::opt_timestamp")]
        at: Option<i64>,
    }

    #[test]
    fn millis_and_rfc3339() {
        let e: Ev = serde_json::from_str(r#"{"ts": 1000}"#).unwrap();
        assert_eq!((e.ts, e.at), (1000, None));
        let e: Ev =
            serde_json::from_str(r#"{"ts": "1970-01-01T00:00:01.5Z", "at": null}"#).unwrap();
        assert_eq!((e.ts, e.at), (1500, None));
        let e: Ev =
            serde_json::from_str(r#"{"ts": "2024-01-01T01:00:00+01:00", "at": 7}"#).unwrap();
        assert_eq!((e.ts, e.at), (1_704_067_200_000, Some(7)));
        assert!(serde_json::from_str::<Ev>(r#"{"ts": "yesterday"}"#).is_err());
        assert!(serde_json::from_str::<Ev>(r#"{"ts": null}"#).is_err());
        assert!(serde_json::from_str::<Ev>(r#"{"at": 1}"#).is_err());
    }
}
