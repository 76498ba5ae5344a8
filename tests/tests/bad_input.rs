//! The bad-input corpus: well over 50 kinds of malformed and unusual events, through a
//! file source and through a Kafka source of one pipeline, in one run. Each record is
//! accounted for exactly once: a result row (keyed by the record's `id`), a too-late
//! event (byte for byte), a dead letter (byte for byte, with its key and headers from
//! Kafka, and the error it names), or, in a file, a blank line, which holds no event.
//! Nothing crashes the job, and nothing is lost.
//!
//! The same binary then shows what a stop by SIGTERM leaves out (the events of windows
//! that had not fired, per flow, in the summary).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use streamc_tests::kafka::{self, brokers, create_topic, unique};
use streamc_tests::*;

/// Event times of on-time events: 2023-11-14T22:13:20Z and the hour after it.
const T0: i64 = 1_700_000_000_000;

/// Where a record must land.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    /// One result row, keyed by this id, counting one event.
    Result(i64),
    /// The late output, byte for byte.
    Late,
    /// A dead letter, byte for byte, whose error contains this.
    Dead(&'static str),
    /// A blank line of a file: no event at all.
    Blank,
    /// Not sent through this source.
    NotSent,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    file: Want,
    kafka: Want,
    /// Kafka only: the message key, its headers, no value at all (a tombstone).
    key: Option<Vec<u8>>,
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
    tombstone: bool,
}

impl Case {
    fn both(name: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Self {
        Case {
            name,
            bytes: bytes.into(),
            file: want.clone(),
            kafka: want,
            key: None,
            headers: Vec::new(),
            tombstone: false,
        }
    }

    fn kafka_only(name: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Self {
        Case {
            file: Want::NotSent,
            ..Case::both(name, bytes, want)
        }
    }

    fn file_only(name: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Self {
        Case {
            kafka: Want::NotSent,
            ..Case::both(name, bytes, want)
        }
    }

    fn in_kafka(mut self, want: Want) -> Self {
        self.kafka = want;
        self
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A valid event: `{"id": ID, "user": "u", "ts": TS}`.
fn ev(id: i64, ts: i64) -> String {
    format!(r#"{{"id":{id},"user":"u","ts":{ts}}}"#)
}

/// The corpus, in the order it is sent. Ids are unique; on-time event times lie in
/// the hour after T0 (the watermark trails by an hour, so none of them is late).
fn corpus() -> Vec<Case> {
    use Want::*;
    let deep_ok = format!(
        r#"{{"id":20,"user":"u","ts":{},"deep":{}1{}}}"#,
        T0 + 20,
        "[".repeat(100),
        "]".repeat(100)
    );
    let deep_bad = format!(
        r#"{{"id":901,"user":"u","ts":{},"deep":{}1{}}}"#,
        T0 + 901,
        "[".repeat(200),
        "]".repeat(200)
    );
    let very_deep = "[".repeat(100_000);
    // An ignored value is skipped without recursion: any depth is fine there.
    let deeper_ok = format!(
        r#"{{"id":902,"user":"u","ts":{},"deep":{}1{}}}"#,
        T0 + 902,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_user = format!(
        r#"{{"id":19,"user":"{}","ts":{}}}"#,
        "x".repeat(100_000),
        T0 + 19
    );
    let now = now_ms();
    vec![
        // Valid events, some unusual.
        Case::both("plain", ev(1, T0 + 1), Result(1)),
        Case::both(
            "unknown fields, nested",
            format!(
                r#"{{"id":2,"user":"u","ts":{},"extra":{{"a":[1,2,{{"b":null}}]}},"z":"q"}}"#,
                T0 + 2
            ),
            Result(2),
        ),
        Case::both(
            "fields reordered",
            format!(r#"{{"ts":{},"user":"u","id":3}}"#, T0 + 3),
            Result(3),
        ),
        Case::both(
            "whitespace and tabs",
            format!(
                "  {{\t\"id\" : 4 , \"user\":\"u\" ,\"ts\": {} }}\t ",
                T0 + 4
            ),
            Result(4),
        ),
        Case::both(
            "carriage return at the end",
            format!("{}\r", ev(5, T0 + 5)),
            Result(5),
        ),
        Case::both(
            "carriage return inside",
            format!("{{\"id\":6,\r\"user\":\"u\",\"ts\":{}}}", T0 + 6),
            Result(6),
        ),
        Case::both(
            "unicode escapes",
            format!(r#"{{"id":7,"user":"\u00e9t\u00e9","ts":{}}}"#, T0 + 7),
            Result(7),
        ),
        Case::both(
            "four-byte UTF-8",
            format!(r#"{{"id":8,"user":"😀 ok","ts":{}}}"#, T0 + 8),
            Result(8),
        ),
        Case::both(
            "empty string",
            format!(r#"{{"id":9,"user":"","ts":{}}}"#, T0 + 9),
            Result(9),
        ),
        Case::both(
            "optional fields null",
            format!(
                r#"{{"id":10,"user":"u","n":null,"x":null,"ok":null,"ts":{}}}"#,
                T0 + 10
            ),
            Result(10),
        ),
        Case::both(
            "optional fields set",
            format!(
                r#"{{"id":11,"user":"u","n":5,"x":1.5,"ok":true,"ts":{}}}"#,
                T0 + 11
            ),
            Result(11),
        ),
        Case::both(
            "float extremes",
            format!(
                r#"{{"id":12,"user":"u","x":1e308,"n":-9223372036854775808,"ts":{}}}"#,
                T0 + 12
            ),
            Result(12),
        ),
        Case::both(
            "negative zero",
            format!(r#"{{"id":13,"user":"u","x":-0.0,"ts":{}}}"#, T0 + 13),
            Result(13),
        ),
        Case::both("largest id", ev(i64::MAX, T0 + 14), Result(i64::MAX)),
        Case::both(
            "RFC 3339 with an offset",
            r#"{"id":15,"user":"u","ts":"2023-11-14T23:13:20.015+01:00"}"#,
            Result(15),
        ),
        Case::both(
            "RFC 3339 in UTC",
            r#"{"id":16,"user":"u","ts":"2023-11-14T22:13:21Z"}"#,
            Result(16),
        ),
        Case::both(
            "escaped key name",
            format!(r#"{{"\u0069d":17,"user":"u","ts":{}}}"#, T0 + 17),
            Result(17),
        ),
        Case::both(
            "an unknown field twice",
            format!(
                r#"{{"id":18,"extra":1,"extra":2,"user":"u","ts":{}}}"#,
                T0 + 18
            ),
            Result(18),
        ),
        Case::both("a 100 KB string", long_user, Result(19)),
        Case::both("100 levels in an unknown field", deep_ok, Result(20)),
        Case::both(
            "a huge integer in an unknown field",
            format!(
                r#"{{"id":21,"user":"u","big":123456789012345678901234567890,"ts":{}}}"#,
                T0 + 21
            ),
            Result(21),
        ),
        Case::kafka_only(
            "pretty-printed over lines",
            format!(
                "{{\n  \"id\": 23,\n  \"user\": \"u\",\n  \"ts\": {}\n}}\n",
                T0 + 23
            ),
            Result(23),
        ),
        Case {
            key: Some(b"\x00\xffkey".to_vec()),
            headers: vec![("h", Some(b"\xfe".to_vec())), ("empty", None)],
            ..Case::kafka_only("binary key and headers", ev(24, T0 + 24), Result(24))
        },
        // Blank lines hold no event in a file; in Kafka they are messages.
        Case::both("empty line", "", Blank).in_kafka(Dead("empty message")),
        Case::file_only("carriage returns only", "\r\r", Blank),
        Case::both("spaces only", "   \t ", Blank).in_kafka(Dead("not a JSON object")),
        // Not JSON, or not an object.
        Case::both("not JSON", "not json", Dead("not a JSON object")),
        Case::both("an array", "[1,2]", Dead("not a JSON object")),
        Case::both("a string", r#""hello""#, Dead("not a JSON object")),
        Case::both("a number", "42", Dead("not a JSON object")),
        Case::both("null", "null", Dead("not a JSON object")),
        Case::both("true", "true", Dead("not a JSON object")),
        Case::both(
            "an array in field order",
            format!(r#"[1,"u",null,null,null,{T0}]"#),
            Dead("not a JSON object"),
        ),
        Case::both("empty object", "{}", Dead("missing field")),
        Case::both(
            "truncated",
            r#"{"id": 100, "user": "a""#,
            Dead("EOF while parsing"),
        ),
        Case::both(
            "trailing garbage",
            format!("{} x", ev(101, T0)),
            Dead("trailing characters"),
        ),
        Case::both(
            "two objects on one line",
            format!("{}{}", ev(102, T0), ev(103, T0)),
            Dead("trailing characters"),
        ),
        Case::both(
            "single quotes",
            "{'id': 104, 'user': 'u', 'ts': 1}",
            Dead("key must be a string"),
        ),
        Case::both(
            "a comment",
            format!("// note\n{}", ev(105, T0)).replace('\n', " "),
            Dead("not a JSON object"),
        ),
        Case::both(
            "trailing comma",
            format!(r#"{{"id":106,"user":"u","ts":{},}}"#, T0),
            Dead("trailing comma"),
        ),
        Case::both(
            "NaN literal",
            format!(r#"{{"id":107,"user":"u","x":NaN,"ts":{}}}"#, T0),
            Dead("expected value"),
        ),
        Case::both(
            "a BOM inside the stream",
            format!("\u{feff}{}", ev(108, T0)),
            Dead("not a JSON object"),
        ),
        // Missing and mistyped fields.
        Case::both(
            "missing ts",
            r#"{"id":110,"user":"u"}"#,
            Dead("missing field `ts`"),
        ),
        Case::both(
            "missing id",
            format!(r#"{{"user":"u","ts":{T0}}}"#),
            Dead("missing field `id`"),
        ),
        Case::both(
            "missing user",
            format!(r#"{{"id":112,"ts":{T0}}}"#),
            Dead("missing field `user`"),
        ),
        Case::both(
            "id null",
            format!(r#"{{"id":null,"user":"u","ts":{T0}}}"#),
            Dead("invalid type: null"),
        ),
        Case::both(
            "ts null",
            r#"{"id":114,"user":"u","ts":null}"#,
            Dead("invalid type: null"),
        ),
        Case::both(
            "id as a string",
            format!(r#"{{"id":"115","user":"u","ts":{T0}}}"#),
            Dead("invalid type: string"),
        ),
        Case::both(
            "id as a float",
            format!(r#"{{"id":116.5,"user":"u","ts":{T0}}}"#),
            Dead("invalid type: floating point"),
        ),
        Case::both(
            "id overflows i64",
            format!(r#"{{"id":99999999999999999999,"user":"u","ts":{T0}}}"#),
            Dead("invalid type"),
        ),
        Case::both(
            "user as a number",
            format!(r#"{{"id":118,"user":7,"ts":{T0}}}"#),
            Dead("invalid type: integer"),
        ),
        Case::both(
            "bool as a string",
            format!(r#"{{"id":119,"user":"u","ok":"true","ts":{T0}}}"#),
            Dead("invalid type: string"),
        ),
        Case::both(
            "bool as a number",
            format!(r#"{{"id":120,"user":"u","ok":1,"ts":{T0}}}"#),
            Dead("invalid type: integer"),
        ),
        Case::both(
            "optional integer as a string",
            format!(r#"{{"id":121,"user":"u","n":"5","ts":{T0}}}"#),
            Dead("invalid type: string"),
        ),
        Case::both(
            "float out of range",
            format!(r#"{{"id":122,"user":"u","x":1e400,"ts":{T0}}}"#),
            Dead("number out of range"),
        ),
        Case::both(
            "ts as a bool",
            r#"{"id":123,"user":"u","ts":true}"#,
            Dead("a timestamp"),
        ),
        Case::both(
            "ts not RFC 3339",
            r#"{"id":124,"user":"u","ts":"yesterday"}"#,
            Dead("invalid RFC 3339 timestamp"),
        ),
        Case::both(
            "ts as a string of digits",
            format!(r#"{{"id":125,"user":"u","ts":"{T0}"}}"#),
            Dead("invalid RFC 3339 timestamp"),
        ),
        Case::both(
            "ts as a float",
            r#"{"id":126,"user":"u","ts":1.7e12}"#,
            Dead("a timestamp"),
        ),
        Case::both(
            "ts past i64",
            r#"{"id":127,"user":"u","ts":18446744073709551615}"#,
            Dead("out of range"),
        ),
        Case::both(
            "a field twice",
            format!(r#"{{"id":128,"id":129,"user":"u","ts":{T0}}}"#),
            Dead("duplicate field `id`"),
        ),
        // Bytes that are not clean UTF-8 or JSON text.
        Case::both(
            "invalid UTF-8 in a string",
            [
                br#"{"id":130,"user":"a"#.as_slice(),
                b"\xff",
                format!(r#"b","ts":{T0}}}"#).as_bytes(),
            ]
            .concat(),
            Dead("invalid unicode"),
        ),
        Case::both(
            "invalid UTF-8 alone",
            b"\xff\xfe\xfd".to_vec(),
            Dead("not a JSON object"),
        ),
        Case::both(
            "a lone surrogate escape",
            format!(r#"{{"id":132,"user":"\ud800","ts":{T0}}}"#),
            Dead("escape"),
        ),
        Case::both(
            "a NUL byte in a string",
            format!("{{\"id\":133,\"user\":\"a\0b\",\"ts\":{T0}}}"),
            Dead("control character"),
        ),
        Case::both(
            "a control character in a string",
            format!("{{\"id\":134,\"user\":\"a\x01b\",\"ts\":{T0}}}"),
            Dead("control character"),
        ),
        Case::both("200 levels in an unknown field", deep_bad, Result(901)),
        Case::both("100000 levels in an unknown field", deeper_ok, Result(902)),
        Case::both("100000 open brackets", very_deep, Dead("not a JSON object")),
        Case::both("a form feed alone", "\x0c", Dead("not a JSON object")),
        Case::kafka_only(
            "invalid JSON over lines",
            "{\n  \"id\": 140,\n  oops\n}",
            Dead("key must be a string"),
        ),
        Case {
            key: Some(b"k\xff".to_vec()),
            headers: vec![
                ("trace", Some(b"abc".to_vec())),
                ("bin", Some(b"\x00\x01".to_vec())),
                ("none", None),
                ("trace", Some(b"again".to_vec())),
            ],
            ..Case::kafka_only(
                "invalid with key and headers",
                "oops",
                Dead("not a JSON object"),
            )
        },
        Case {
            key: Some(b"gone".to_vec()),
            tombstone: true,
            ..Case::kafka_only("a tombstone", "", Dead("tombstone"))
        },
        Case {
            key: Some(b"k".to_vec()),
            headers: vec![("h", Some(b"v".to_vec()))],
            ..Case::kafka_only("an empty message with a key", "", Dead("empty message"))
        },
        // Too late: every window they belong to closed long ago.
        Case::both("a day old", ev(150, T0 - 86_400_000), Late),
        Case::both("at the epoch", ev(151, 0), Late),
        Case::both("before the epoch", ev(152, -5), Late),
        Case::both(
            "RFC 3339 at the epoch",
            r#"{"id":153,"user":"u","ts":"1970-01-01T00:00:00Z"}"#,
            Late,
        ),
        Case::both("the smallest time", ev(154, i64::MIN), Late),
        // Ahead of the wall clock: refused past `max_ahead` (1 h) ...
        Case::both(
            "2 h ahead",
            ev(160, now + 2 * 3_600_000),
            Dead("ahead of the wall clock, more than the source's watermark.max_ahead (1 h)"),
        ),
        Case::both(
            "year 9999",
            r#"{"id":161,"user":"u","ts":"9999-12-31T23:59:59Z"}"#,
            Dead("watermark.max_ahead"),
        ),
        Case::both(
            "the largest time",
            ev(162, i64::MAX),
            Dead("watermark.max_ahead"),
        ),
        // ... accepted within it (counted past the 1 s tolerance): with it the watermark
        // moves to the wall clock's time, so the on-time events after it are too late.
        Case::both(
            "ahead by less than the 1 s tolerance",
            ev(22, now + 500),
            Result(22),
        ),
        Case::both("30 min ahead", ev(163, now + 1_800_000), Result(163)),
        Case::both(
            "on time, after one from the future",
            ev(164, T0 + 100),
            Late,
        ),
    ]
}

const RESULTS: [&str; 4] = ["results_lines", "late_lines", "results_topic", "late_topic"];

fn spec(topic: &str) -> String {
    let schema = "
    schema:
      id: i64
      user: string
      n: i64?
      x: f64?
      ok: bool?
      ts: timestamp
    event_time: ts
    watermark:
      max_out_of_orderness: 1h
      max_ahead: 1h";
    let flow = |from: &str, to: &str, late: &str| {
        format!(
            "
  from_{from}:
    from: {from}
    steps:
      - key_by: [id]
      - window: {{ tumbling: 1s }}
      - aggregate:
          events: count()
    to: [{to}]
    late: {late}"
        )
    };
    format!(
        "version: 1
name: bad_input
sources:
  lines:
    file: {{ path: in.jsonl }}{schema}
  topic:
    kafka: {{ topic: {topic}, group_id: bad-input }}{schema}
flows:{}{}
sinks:
  results_lines: {{ file: {{ path: results_lines.jsonl }} }}
  late_lines: {{ file: {{ path: late_lines.jsonl }} }}
  results_topic: {{ file: {{ path: results_topic.jsonl }} }}
  late_topic: {{ file: {{ path: late_topic.jsonl }} }}
dead_letter: {{ file: {{ path: dead.jsonl }} }}
",
        flow("lines", "results_lines", "late_lines"),
        flow("topic", "results_topic", "late_topic"),
    )
}

fn produce(topic: &str, cases: &[&Case]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for c in cases {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0);
        if !c.tombstone {
            rec = rec.payload(&c.bytes[..]);
        }
        if let Some(k) = &c.key {
            rec = rec.key(&k[..]);
        }
        if !c.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (name, value) in &c.headers {
                h = h.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            rec = rec.headers(h);
        }
        p.send(rec).map_err(|(e, _)| e).expect("send");
        // One at a time keeps the order (and the offsets) of the corpus.
        p.flush(Duration::from_secs(30)).expect("flush");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).expect("base64 alphabet") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The bytes a dead letter (or one of its key/value pairs) keeps: `raw` as UTF-8, or
/// `raw_base64`.
fn bytes_of(obj: &Value, field: &str) -> Option<Vec<u8>> {
    if let Some(s) = obj.get(field).and_then(Value::as_str) {
        return Some(s.as_bytes().to_vec());
    }
    obj.get(format!("{field}_base64"))
        .and_then(Value::as_str)
        .map(base64_decode)
}

/// Checks what one source's records became: `sent` is (offset, case) in order.
fn check_source(
    which: &str,
    sent: &[(i64, &Case)],
    want: impl Fn(&Case) -> &Want,
    results: &Path,
    late: &Path,
    dead: &[Value],
) {
    // Results: exactly the expected ids, each once, counting one event.
    let mut got: BTreeMap<i64, u32> = BTreeMap::new();
    for row in read_jsonl(results) {
        assert_eq!(row["events"], 1, "{which}: {row}");
        assert_eq!(row["revision"], 0, "{which}: {row}");
        *got.entry(row["id"].as_i64().expect("id")).or_default() += 1;
    }
    let mut expected: BTreeMap<i64, u32> = BTreeMap::new();
    for (_, c) in sent {
        if let Want::Result(id) = want(c) {
            *expected.entry(*id).or_default() += 1;
        }
    }
    let name_of = |id: &i64| {
        sent.iter()
            .find(|(_, c)| want(c) == &Want::Result(*id))
            .map_or("?", |(_, c)| c.name)
    };
    for (id, n) in &expected {
        assert_eq!(
            got.get(id),
            Some(n),
            "{which}: `{}` (id {id}) is not in the results once",
            name_of(id)
        );
    }
    assert_eq!(got.len(), expected.len(), "{which}: results {got:?}");
    // Late events: byte for byte, in order.
    let late_bytes = std::fs::read(late).unwrap_or_default();
    let late_lines: Vec<&[u8]> = late_bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let expected_late: Vec<&Case> = sent
        .iter()
        .filter(|(_, c)| want(c) == &Want::Late)
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(
        late_lines.len(),
        expected_late.len(),
        "{which}: late {:?}",
        late_lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    for (line, c) in late_lines.iter().zip(&expected_late) {
        assert_eq!(
            *line,
            &c.bytes[..],
            "{which}: late `{}` is not byte for byte",
            c.name
        );
    }
    // Dead letters: one per invalid record, at its offset, byte for byte.
    let mut by_offset: BTreeMap<i64, &Value> = BTreeMap::new();
    for d in dead {
        assert_eq!(d["partition"], 0, "{which}: {d}");
        let off = d["offset"].as_i64().expect("offset");
        assert!(
            by_offset.insert(off, d).is_none(),
            "{which}: two dead letters at offset {off}"
        );
    }
    let mut n_dead = 0;
    let mut wrong = Vec::new();
    for (off, c) in sent {
        let Want::Dead(error) = want(c) else {
            if let Some(d) = by_offset.get(off) {
                wrong.push(format!(
                    "`{}` is a dead letter but should not be: {d}",
                    c.name
                ));
            }
            continue;
        };
        n_dead += 1;
        let Some(d) = by_offset.get(off) else {
            wrong.push(format!("`{}` has no dead letter", c.name));
            continue;
        };
        let text = d["error"].as_str().unwrap_or_default();
        if !text.contains(error) {
            wrong.push(format!(
                "`{}`: error {text:?} does not say {error:?}",
                c.name
            ));
        }
        let raw_ok = if c.tombstone {
            d["raw"].is_null()
        } else {
            bytes_of(d, "raw").as_deref() == Some(&c.bytes[..])
        };
        if !raw_ok {
            wrong.push(format!("`{}`: not byte for byte: {d}", c.name));
        }
        if bytes_of(d, "key") != c.key {
            wrong.push(format!("`{}`: key: {d}", c.name));
        }
        let headers: Vec<(String, Option<Vec<u8>>)> = d
            .get("headers")
            .and_then(Value::as_array)
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h["name"].as_str().unwrap_or_default().to_string(),
                            bytes_of(h, "value"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want_headers: Vec<(String, Option<Vec<u8>>)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        if headers != want_headers {
            wrong.push(format!("`{}`: headers: {d}", c.name));
        }
    }
    assert!(wrong.is_empty(), "{which}:\n{}", wrong.join("\n"));
    assert_eq!(dead.len(), n_dead, "{which}: dead letters");
}

#[test]
fn every_bad_input_lands_exactly_once_through_a_file_and_through_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("bad-input");
    create_topic(&topic, 1);
    let spec_path = dir.path().join("bad_input.yaml");
    std::fs::write(&spec_path, spec(&topic)).unwrap();
    let bin = build(&spec_path, dir.path());

    let cases = corpus();
    let kinds = cases.len();
    assert!(kinds >= 50, "the corpus has {kinds} kinds");
    // The file: one line per case (a first line opening with a BOM, which is not
    // part of the event); the topic: one message per case, from offset 0.
    let mut file = b"\xEF\xBB\xBF".to_vec();
    let (mut lines, mut msgs) = (Vec::new(), Vec::new());
    for c in &cases {
        if c.file != Want::NotSent {
            lines.push((lines.len() as i64, c));
            file.extend_from_slice(&c.bytes);
            file.push(b'\n');
        }
        if c.kafka != Want::NotSent {
            msgs.push((msgs.len() as i64, c));
        }
    }
    let input = dir.path().join("corpus.jsonl");
    std::fs::write(&input, &file).unwrap();
    produce(&topic, &msgs.iter().map(|(_, c)| *c).collect::<Vec<_>>());

    let (dead_lines, dead_topic) = (
        dir.path().join("dead_lines.jsonl"),
        dir.path().join("dead_topic.jsonl"),
    );
    let mut args = outputs(dir.path(), &RESULTS);
    args.extend([
        "--input".into(),
        format!("lines={}", input.display()),
        "--dead-letter".into(),
        format!("lines={}", dead_lines.display()),
        "--dead-letter".into(),
        format!("topic={}", dead_topic.display()),
        "--brokers".into(),
        brokers(),
        "--group-id".into(),
        format!("topic={}", unique("g")),
        "--bounded".into(),
    ]);
    let out = run(&bin, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let d = dir.path();
    check_source(
        "file",
        &lines,
        |c| &c.file,
        &d.join("results_lines.jsonl"),
        &d.join("late_lines.jsonl"),
        &read_jsonl(&dead_lines),
    );
    check_source(
        "kafka",
        &msgs,
        |c| &c.kafka,
        &d.join("results_topic.jsonl"),
        &d.join("late_topic.jsonl"),
        &read_jsonl(&dead_topic),
    );

    // The summary accounts for every record, and names what the counts are.
    let count = |list: &[(i64, &Case)], f: &dyn Fn(&Case) -> bool| {
        list.iter().filter(|(_, c)| f(c)).count()
    };
    let events = count(&lines, &|c| c.file != Want::Blank) + msgs.len();
    let late = count(&lines, &|c| c.file == Want::Late) + count(&msgs, &|c| c.kafka == Want::Late);
    let invalid = count(&lines, &|c| matches!(c.file, Want::Dead(_)))
        + count(&msgs, &|c| matches!(c.kafka, Want::Dead(_)));
    assert!(
        stderr.contains(&format!(": {events} events read (")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n  {late} too-late events: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n  {invalid} invalid events: ")),
        "{stderr}"
    );
    // Four events per source were dated more than 1 s ahead of the clock; the first
    // of each source was logged, once.
    assert!(
        stderr.contains("\n  8 events dated ahead of the wall clock"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("this is logged once").count(), 2, "{stderr}");
    eprintln!(
        "bad-input corpus: {kinds} kinds, {} records through the file, {} through Kafka",
        lines.len(),
        msgs.len()
    );

    // The usage of a job that reads Kafka has its Kafka flags, `--bounded` among them,
    // and says where each source's dead letters go by default.
    let help = Command::new(&bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["--brokers ADDRS", "--bounded", "Dead letters", "dead.jsonl"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let bad = Command::new(&bin).arg("--nope").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let usage = String::from_utf8_lossy(&bad.stderr);
    assert!(
        usage.contains("[--group-id SOURCE=ID] [--commit-interval MS] [--bounded]"),
        "{usage}"
    );

    stop_leaves_unfired_windows(&bin, d);
}

/// SIGTERM: the windows that have not fired are not fired on the way out, and the
/// summary says how many events they held, per flow.
fn stop_leaves_unfired_windows(bin: &Path, dir: &Path) {
    let now = now_ms();
    let input = dir.join("now.jsonl");
    std::fs::write(&input, format!("{}\n{}\n", ev(1, now), ev(2, now))).unwrap();
    let out = dir.join("stop");
    let port = free_port();
    let mut args = outputs(&out, &RESULTS);
    args.extend([
        "--input".into(),
        format!("lines={}", input.display()),
        // The topic's records come from standard input here, kept open: unbounded.
        "--input".into(),
        "topic=-".into(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{port}"),
    ]);
    let mut child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for id in 10..13 {
        writeln!(stdin, "{}", ev(id, now + id)).unwrap();
    }
    stdin.flush().unwrap();
    let read_all = kafka::wait_for(Duration::from_secs(30), || {
        http_get(port, "/metrics").is_some_and(|m| {
            m.contains("streamc_source_records_in_total{job=\"bad_input\",source=\"topic\"} 3")
                && m.contains(
                    "streamc_source_records_in_total{job=\"bad_input\",source=\"lines\"} 2",
                )
        })
    });
    assert!(read_all, "the job did not read its input");
    // (The metrics are published every few hundred ms; the records are processed.)
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let done = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(done.status.success(), "{:?}", done.status);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains("bad_input: stopped by signal after "),
        "{stderr}"
    );
    // The file's flow fired at the end of its file; the stdin flow's windows wait.
    assert!(
        stderr.contains(
            "\n  3 events in windows that had not fired (3 in flow `from_topic`): not in any result yet\n"
        ) || stderr.ends_with(
            "\n  3 events in windows that had not fired (3 in flow `from_topic`): not in any result yet"
        ),
        "{stderr}"
    );
    assert_eq!(read_jsonl(&out.join("results_lines.jsonl")).len(), 2);
    assert!(read_jsonl(&out.join("results_topic.jsonl")).is_empty());
}
