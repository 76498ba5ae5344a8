//! What the dashboard sinks (Redis, the embedded server) share: [`WindowRow`], what they
//! read of a window result row (its window, revision, retraction and some named fields:
//! a sink gets the row serialized, `Sink::write`, and this reads only those fields from
//! the JSON, skipping the others without allocating), and [`status_json`], the job's
//! progress as dashboards show it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// The parts of a window result row a dashboard sink needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WindowRow {
    /// `window_start` (None: not a window result).
    pub start: Option<i64>,
    /// `window_end`.
    pub end: Option<i64>,
    /// `revision` (0 when absent).
    pub revision: u64,
    /// `retracted` (false when absent).
    pub retracted: bool,
    /// The asked-for fields in order, as text: strings as they are, other values as
    /// JSON (`42`, `true`, `null`); empty when absent.
    pub values: Vec<String>,
}

impl WindowRow {
    /// Reads `row` (a JSON object), keeping the values of `fields`.
    pub fn parse(fields: &[String], row: &[u8]) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_slice(row);
        let r = RowSeed { fields }
            .deserialize(&mut de)
            .map_err(|e| format!("not a window result row ({e})"))?;
        de.end()
            .map_err(|e| format!("not a window result row ({e})"))?;
        Ok(r)
    }

    /// The window's bounds, or an error naming what is missing.
    pub fn window(&self) -> Result<(i64, i64), String> {
        match (self.start, self.end) {
            (Some(s), Some(e)) => Ok((s, e)),
            _ => Err("the row has no window_start/window_end: not a window result".into()),
        }
    }
}

struct RowSeed<'a> {
    fields: &'a [String],
}

enum FieldName {
    Start,
    End,
    Revision,
    Retracted,
    Field(usize),
    Other,
}

struct NameSeed<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = FieldName;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FieldName, D::Error> {
        struct V<'a>(&'a [String]);
        impl Visitor<'_> for V<'_> {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldName, E> {
                Ok(match s {
                    "window_start" => FieldName::Start,
                    "window_end" => FieldName::End,
                    "revision" => FieldName::Revision,
                    "retracted" => FieldName::Retracted,
                    s => self
                        .0
                        .iter()
                        .position(|f| f == s)
                        .map_or(FieldName::Other, FieldName::Field),
                })
            }
        }
        d.deserialize_str(V(self.0))
    }
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = WindowRow;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<WindowRow, D::Error> {
        struct V<'a>(&'a [String]);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = WindowRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a window result row (a JSON object)")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<WindowRow, M::Error> {
                let mut m = WindowRow {
                    values: vec![String::new(); self.0.len()],
                    ..WindowRow::default()
                };
                while let Some(name) = map.next_key_seed(NameSeed(self.0))? {
                    match name {
                        FieldName::Start => m.start = Some(map.next_value()?),
                        FieldName::End => m.end = Some(map.next_value()?),
                        FieldName::Revision => m.revision = map.next_value()?,
                        FieldName::Retracted => m.retracted = map.next_value()?,
                        FieldName::Field(i) => {
                            let v: serde_json::Value = map.next_value()?;
                            m.values[i] = match v {
                                serde_json::Value::String(s) => s,
                                v => v.to_string(),
                            };
                        }
                        FieldName::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V(self.fields))
    }
}

#[derive(serde::Serialize)]
struct Status<'a> {
    job: &'a str,
    time: i64,
    sources: Vec<SourceStatus>,
    flows: Vec<FlowStatus>,
}

#[derive(serde::Serialize)]
struct SourceStatus {
    name: &'static str,
    /// None before any event; i64::MAX at the end of a bounded source.
    watermark: Option<i64>,
    records_in: u64,
    invalid: u64,
    /// Sum over partitions of the consumer lag (None: not a Kafka source, or unknown).
    lag: Option<i64>,
    partitions: usize,
}

#[derive(serde::Serialize)]
struct FlowStatus {
    name: &'static str,
    late: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The progress of a job as dashboards read it (Redis: the hash `streamc:status`):
/// `{job, time, sources: [{name, watermark, records_in, invalid, lag, partitions}],
/// flows: [{name, late}]}`.
pub fn status_json(job: &str, m: &Metrics) -> String {
    let status = Status {
        job,
        time: now_ms(),
        sources: m
            .sources
            .iter()
            .map(|s| {
                let lags: Vec<i64> = s.partitions.iter().filter_map(|p| p.lag).collect();
                SourceStatus {
                    name: s.name,
                    watermark: (s.watermark != crate::WATERMARK_MIN).then_some(s.watermark),
                    records_in: s.records_in,
                    invalid: s.invalid,
                    lag: (!lags.is_empty()).then(|| lags.iter().sum()),
                    partitions: s.partitions.len(),
                }
            })
            .collect(),
        flows: m
            .flows
            .iter()
            .map(|f| FlowStatus {
                name: f.name,
                late: f.late,
            })
            .collect(),
    };
    serde_json::to_string(&status).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_for_what_the_sink_needs() {
        let fields = vec!["user_id".to_string(), "url".to_string(), "ok".to_string()];
        let row = br#"{"views":3,"nested":{"window_start":1},"user_id":42,"url":"/x\"y","ok":null,"window_start":1000,"window_end":2000,"revision":2,"retracted":true}"#;
        let m = WindowRow::parse(&fields, row).unwrap();
        assert_eq!(
            m,
            WindowRow {
                start: Some(1000),
                end: Some(2000),
                revision: 2,
                retracted: true,
                values: vec!["42".into(), "/x\"y".into(), "null".into()],
            }
        );
        assert_eq!(m.window(), Ok((1000, 2000)));
        let m =
            WindowRow::parse(&[], br#"{"window_start":-5,"window_end":5,"revision":0}"#).unwrap();
        assert!(!m.retracted);
        assert_eq!(m.window(), Ok((-5, 5)));
        assert!(WindowRow::parse(&[], b"[1,2]").is_err());
        assert!(WindowRow::parse(&[], b"{\"window_start\":\"x\"}").is_err());
        assert!(WindowRow::parse(&[], b"{} trailing").is_err());
        let m = WindowRow::parse(&[], br#"{"a":1}"#).unwrap();
        assert!(m.window().is_err());
    }
}
