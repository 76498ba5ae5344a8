//! Deserialization helpers for generated event structs.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

/// Decodes one JSON event into a generated event struct (strings borrowed from
/// `bytes`). The bytes are checked as UTF-8 once, then parsed as `&str`: serde_json's
/// byte-slice reader would check every string (and every field name) on its own,
/// which cost ~5% of a whole Kafka-to-Kafka job (perf, bench J1).
pub fn from_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
        Err(e) => Err(format!(
            "invalid UTF-8 at byte {} of the record",
            e.valid_up_to()
        )),
    }
}

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

    #[derive(Deserialize, Debug)]
    struct Ev {
        #[serde(deserialize_with = "super::timestamp")]
        ts: i64,
        #[serde(default, deserialize_with = "super::opt_timestamp")]
        at: Option<i64>,
    }

    #[test]
    fn from_json_checks_utf8_once_and_borrows() {
        #[derive(Deserialize, Debug)]
        struct S<'a> {
            #[serde(borrow)]
            s: std::borrow::Cow<'a, str>,
        }
        let v: S<'_> = super::from_json(br#"{"s": "caf\u00e9 ok", "x": "\u00e9"}"#).unwrap();
        assert_eq!(v.s, "caf\u{e9} ok");
        let raw = "{\"s\": \"café\"}".as_bytes();
        let v: S<'_> = super::from_json(raw).unwrap();
        assert!(matches!(v.s, std::borrow::Cow::Borrowed("café")));
        let bad = b"{\"s\": \"caf\xff\"}";
        assert_eq!(
            super::from_json::<S<'_>>(bad).unwrap_err(),
            "invalid UTF-8 at byte 10 of the record"
        );
        assert!(
            super::from_json::<S<'_>>(b"{\"s\": 1}")
                .unwrap_err()
                .contains("line 1")
        );
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
