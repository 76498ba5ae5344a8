//! The generated event decoder as a fuzz target: bytes through the fused stage that
//! `streamc build` generates for `decoder.yaml` (JSON decoding, validation, filter, map,
//! keying, windows with lateness, late events, a stateless flow), with the watermark
//! advanced after every event as the driver does.
//!
//! The oracle, per record: no panic (arithmetic included: debug builds check
//! overflow); an event is either accepted (its event time returned, no dead letter) or
//! written as exactly one dead letter that keeps the record byte for byte, never both;
//! and the verdict agrees with an independent reading of the record against the
//! schema (`expected`), written from the spec's rules with `serde_json::Value`.

#![allow(dead_code, unused, clippy::all)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use serde_json::Value;
use streamc_runtime::driver::Context;
use streamc_runtime::sink::{Sink, SinkError, SinkSpec};
use streamc_runtime::watermark::WatermarkTracker;
use streamc_runtime::{Pipeline, Record, WATERMARK_MAX};

// The generated `Job` and `job_spec`, private to this module.
include!(concat!(env!("OUT_DIR"), "/decoder.rs"));

/// Values at the edges of the schema's types.
pub const DICT: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "1e39",
    "-1e39",
    "3.4028235e38",
    "1e308",
    "1e309",
    "1e-400",
    "0.5",
    "1.0",
    "1e2",
    "true",
    "false",
    "null",
    "\"\"",
    "\"a\"",
    "\"A\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\ud83d\\ude00\"",
    "\"é\"",
    "[]",
    "{}",
    "[1]",
    "{\"a\":1}",
    "\"1970-01-01T00:00:00Z\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"2023-11-14T22:13:20.5+01:00\"",
    "\"2023-13-45T99:99:99Z\"",
    "\"now\"",
    "a_i32",
    "a_i64",
    "a_u32",
    "a_u64",
    "a_f32",
    "a_f64",
    "a_bool",
    "a_str",
    "a_opt_str",
    "a_opt_ts",
    "ts",
    "\"ts\"",
    "\"a_i32\"",
];

struct Capture(Rc<RefCell<Vec<Vec<u8>>>>);

impl Sink for Capture {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        self.0.borrow_mut().push(value.to_vec());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The job, fed one record at a time; restarted now and then so state stays small.
pub struct Decoder {
    job: Job,
    ctx: Context,
    dead: Rc<RefCell<Vec<Vec<u8>>>>,
    rows: Rc<RefCell<Vec<Vec<u8>>>>,
    wm: WatermarkTracker,
    offset: u64,
    started: Instant,
}

pub struct Outcome {
    pub signature: String,
    pub finding: Option<String>,
}

impl Decoder {
    pub fn new() -> Self {
        let spec = job_spec();
        let dead = Rc::new(RefCell::new(Vec::new()));
        let rows = Rc::new(RefCell::new(Vec::new()));
        let ctx = {
            let (dead, rows) = (Rc::clone(&dead), Rc::clone(&rows));
            Context::with_sinks(&spec, move |s: &SinkSpec| -> Box<dyn Sink> {
                if s.name == "dead_letter" {
                    Box::new(Capture(Rc::clone(&dead)))
                } else {
                    Box::new(Capture(Rc::clone(&rows)))
                }
            })
        };
        let now = Instant::now();
        Decoder {
            job: Job::new(),
            ctx,
            dead,
            rows,
            wm: WatermarkTracker::new(1, spec.sources[0].max_out_of_orderness, None, now),
            offset: 0,
            started: now,
        }
    }

    /// Ends the input: every window fires (the end of a bounded source).
    pub fn finish(&mut self) {
        self.job.on_watermark(0, WATERMARK_MAX, &mut self.ctx);
    }

    pub fn run(&mut self, data: &[u8]) -> Outcome {
        self.dead.borrow_mut().clear();
        let rec = Record::new(0, self.offset, data);
        self.offset += 1;
        let got = self.job.on_record(0, &rec, &mut self.ctx);
        if let Some(ts) = got
            && let Some(w) = self.wm.on_event(0, ts, self.started)
        {
            self.job.on_watermark(0, w, &mut self.ctx);
        }
        self.rows.borrow_mut().clear();
        let dead = std::mem::take(&mut *self.dead.borrow_mut());
        let expected = expected(data);
        let signature = match (&got, dead.first()) {
            (Some(_), _) => "accepted".to_string(),
            (None, Some(d)) => {
                let v: Value = serde_json::from_slice(d).unwrap_or(Value::Null);
                format!("dead:{}", error_kind(v["error"].as_str().unwrap_or("?")))
            }
            (None, None) => "nothing".to_string(),
        };
        let finding = match (got, dead.as_slice()) {
            (Some(_), [_, ..]) => Some("accepted and dead-lettered".to_string()),
            (None, []) => Some("neither accepted nor dead-lettered: lost".to_string()),
            (None, [_, _, ..]) => Some(format!("{} dead letters for one record", dead.len())),
            (None, [d]) => check_dead_letter(d, data, rec.offset),
            (Some(ts), []) => None.or_else(|| match &expected {
                Expect::Invalid(why) => Some(format!("accepted, but the record is invalid: {why}")),
                Expect::Valid(want) if *want != ts => Some(format!(
                    "accepted with event time {ts}, the record says {want}"
                )),
                _ => None,
            }),
        }
        .or_else(|| match (&expected, got) {
            (Expect::Valid(_), None) => Some("dead-lettered, but the record is valid".to_string()),
            _ => None,
        });
        // Keep the state small: a fresh job now and then.
        if self.offset % 4096 == 0 {
            self.finish();
            *self = Decoder::new();
        }
        Outcome { signature, finding }
    }
}

/// The kind of a decoding error: its words before any quoted value, and what was
/// expected, without positions or numbers.
fn error_kind(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or_default();
    let head = msg.split(['"', '`']).next().unwrap_or_default();
    let tail = msg.rfind(", expected ").map_or("", |i| &msg[i..]);
    crate::spec::normalize(&format!("{head}{tail}"))
}

fn check_dead_letter(d: &[u8], data: &[u8], offset: u64) -> Option<String> {
    let v: Value = match serde_json::from_slice(d) {
        Ok(v) => v,
        Err(e) => return Some(format!("a dead letter that is not JSON: {e}")),
    };
    if v["offset"] != offset || v["source"] != "events" || v["partition"] != 0 {
        return Some(format!("dead letter at the wrong place: {v}"));
    }
    if v["error"].as_str().is_none_or(str::is_empty) {
        return Some(format!("dead letter without an error: {v}"));
    }
    let kept = match (v["raw"].as_str(), v["raw_base64"].as_str()) {
        (Some(raw), None) => raw.as_bytes().to_vec(),
        (None, Some(b64)) => base64_decode(b64),
        _ => return Some(format!("dead letter without raw or raw_base64: {v}")),
    };
    (kept != data).then(|| format!("dead letter not byte for byte: {v}"))
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let Some(v) = A.iter().position(|&a| a == c) else {
            return Vec::new();
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

enum Expect {
    /// Valid, with this event time.
    Valid(i64),
    Invalid(String),
    /// Past what the reading below can tell (JSON that `Value` cannot hold, which may
    /// sit in an ignored field): only the invariants are checked.
    Unknown,
}

#[derive(Clone, Copy)]
enum Ty {
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    Bool,
    Str,
    Ts,
}

const SCHEMA: &[(&str, Ty, bool)] = &[
    ("a_i32", Ty::I32, false),
    ("a_i64", Ty::I64, true),
    ("a_u32", Ty::U32, true),
    ("a_u64", Ty::U64, false),
    ("a_f32", Ty::F32, true),
    ("a_f64", Ty::F64, false),
    ("a_bool", Ty::Bool, true),
    ("a_str", Ty::Str, false),
    ("a_opt_str", Ty::Str, true),
    ("a_opt_ts", Ty::Ts, true),
    ("ts", Ty::Ts, false),
];

/// The keys of a JSON object in order, duplicates kept (a `Value` keeps the last).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Keys, M::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    m.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// What the spec says of `data` as an event of `decoder.yaml`'s source: one JSON
/// object; each required field present and not null, each optional one absent or null
/// or of its type; integers in the range of their type (no fraction, no exponent),
/// floats any JSON number, timestamps epoch millis (an i64) or an RFC 3339 string; a
/// field given twice is invalid; other fields are ignored.
fn expected(data: &[u8]) -> Expect {
    let v: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        // Valid JSON text that `Value` cannot hold (nesting past its limit, a number
        // past f64, an escape that is no Unicode scalar): fine in an ignored field,
        // which the decoder skips without reading it.
        Err(e)
            if [
                "recursion limit",
                "number out of range",
                "code point",
                "hex escape",
                "surrogate",
            ]
            .iter()
            .any(|m| e.to_string().contains(m)) =>
        {
            return Expect::Unknown;
        }
        Err(e) => return Expect::Invalid(format!("not JSON: {e}")),
    };
    let Value::Object(obj) = &v else {
        return Expect::Invalid("not an object".into());
    };
    let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(data) else {
        return Expect::Unknown;
    };
    for (name, _, _) in SCHEMA {
        if keys.iter().filter(|k| k == name).count() > 1 {
            return Expect::Invalid(format!("`{name}` twice"));
        }
    }
    let mut ts = None;
    for &(name, ty, nullable) in SCHEMA {
        let field = obj.get(name).filter(|f| !f.is_null());
        let Some(f) = field else {
            if nullable {
                continue;
            }
            return Expect::Invalid(format!("`{name}` missing or null"));
        };
        let int_in = |lo: i128, hi: i128| match f {
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                let x = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
                x.is_some_and(|x| lo <= x && x <= hi)
            }
            _ => false,
        };
        let ok = match ty {
            Ty::I32 => int_in(i32::MIN.into(), i32::MAX.into()),
            Ty::I64 => int_in(i64::MIN.into(), i64::MAX.into()),
            Ty::U32 => int_in(0, u32::MAX.into()),
            Ty::U64 => int_in(0, u64::MAX.into()),
            Ty::F32 | Ty::F64 => f.is_number(),
            Ty::Bool => f.is_boolean(),
            Ty::Str => f.is_string(),
            Ty::Ts => match f {
                Value::String(s) => {
                    let t = streamc_runtime::de::parse_rfc3339(s);
                    if name == "ts" {
                        ts = t;
                    }
                    t.is_some()
                }
                _ => {
                    let ok = int_in(i64::MIN.into(), i64::MAX.into());
                    if ok && name == "ts" {
                        ts = f.as_i64();
                    }
                    ok
                }
            },
        };
        if !ok {
            return Expect::Invalid(format!("`{name}` is not of its type: {f}"));
        }
    }
    match ts {
        Some(t) => Expect::Valid(t),
        None => Expect::Invalid("no event time".into()),
    }
}
