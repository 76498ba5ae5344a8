//! Scalar value syntax of specs: durations, types, names.

use crate::diag::did_you_mean;
use crate::plan::{Millis, Type};

/// A value that did not parse: message and optional help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
    pub help: Option<String>,
}

impl ValueError {
    fn new(message: String, help: Option<String>) -> ValueError {
        ValueError { message, help }
    }
}

pub const DURATION_UNITS: [(&str, Millis); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// `250ms`, `10s`, `1m`, `5m`, `1h`, `1d` (an integer and a unit; `-` allowed in front,
/// callers reject negatives where they make no sense). A bare `0` is accepted.
pub fn parse_duration(text: &str) -> Result<Millis, ValueError> {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(body.len());
    let (digits, unit) = body.split_at(digits_end);
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    let example = "write an integer and a unit: `250ms`, `10s`, `1m`, `1h` or `1d`";
    if digits.is_empty() {
        return Err(ValueError::new(
            format!("`{text}` is not a duration"),
            Some(example.to_string()),
        ));
    }
    let Ok(n) = digits.parse::<i64>() else {
        return Err(ValueError::new(
            format!("duration `{text}` is too large"),
            None,
        ));
    };
    let unit = unit.trim();
    if unit.is_empty() {
        if n == 0 {
            return Ok(0);
        }
        return Err(ValueError::new(
            format!("duration `{text}` has no unit"),
            Some(format!(
                "write `{n}ms` for milliseconds or `{n}s` for seconds (units: ms, s, m, h, d)"
            )),
        ));
    }
    let Some((_, scale)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        let hint = match unit {
            "sec" | "secs" | "second" | "seconds" => Some("s"),
            "min" | "mins" | "minute" | "minutes" => Some("m"),
            "hr" | "hrs" | "hour" | "hours" => Some("h"),
            "day" | "days" => Some("d"),
            "millis" | "msec" | "milliseconds" => Some("ms"),
            _ => did_you_mean(unit, DURATION_UNITS.iter().map(|(u, _)| *u)),
        };
        let help = match hint {
            Some(u) => format!("write `{n}{u}`"),
            None => "units are ms, s, m, h and d".to_string(),
        };
        return Err(ValueError::new(
            format!("unknown duration unit `{unit}` in `{text}`"),
            Some(help),
        ));
    };
    let ms = n
        .checked_mul(*scale)
        .ok_or_else(|| ValueError::new(format!("duration `{text}` is too large"), None))?;
    Ok(if neg { -ms } else { ms })
}

/// Formats milliseconds the way a spec writes them (largest exact unit).
pub fn format_duration(ms: Millis) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    for (unit, scale) in DURATION_UNITS.iter().rev() {
        if ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

pub const TYPE_NAMES: [&str; 9] = [
    "bool",
    "i32",
    "i64",
    "u32",
    "u64",
    "f32",
    "f64",
    "string",
    "timestamp",
];

/// `T` or `T?` (optional). Returns the type and whether it is optional.
pub fn parse_type(text: &str) -> Result<(Type, bool), ValueError> {
    let t = text.trim();
    let (base, optional) = match t.strip_suffix('?') {
        Some(b) => (b.trim_end(), true),
        None => (t, false),
    };
    let ty = match base {
        "bool" => Type::Bool,
        "i32" => Type::I32,
        "i64" => Type::I64,
        "u32" => Type::U32,
        "u64" => Type::U64,
        "f32" => Type::F32,
        "f64" => Type::F64,
        "string" => Type::String,
        "timestamp" => Type::Timestamp,
        _ => {
            let hint = match base.to_ascii_lowercase().as_str() {
                "int" | "integer" | "long" | "bigint" | "int64" => Some("i64"),
                "int32" => Some("i32"),
                "uint" | "uint64" => Some("u64"),
                "uint32" => Some("u32"),
                "float" | "double" | "float64" | "real" | "number" => Some("f64"),
                "float32" => Some("f32"),
                "str" | "text" | "varchar" => Some("string"),
                "boolean" => Some("bool"),
                "datetime" | "time" | "instant" => Some("timestamp"),
                _ => did_you_mean(base, TYPE_NAMES),
            };
            let q = if optional { "?" } else { "" };
            let help = match hint {
                Some(h) => format!("did you mean `{h}{q}`? Types are {}", TYPE_NAMES.join(", ")),
                None => format!(
                    "types are {}, with a trailing `?` when optional",
                    TYPE_NAMES.join(", ")
                ),
            };
            return Err(ValueError::new(format!("unknown type `{t}`"), Some(help)));
        }
    };
    Ok((ty, optional))
}

/// `[A-Za-z_][A-Za-z0-9_]*`: field, source, flow and sink names.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[a-z][a-z0-9_]*`: the pipeline name (it names a crate and a binary).
pub fn is_pipeline_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A valid name close to `s`: lowercase, other characters replaced by `_`.
pub fn suggest_identifier(s: &str, lowercase: bool) -> Option<String> {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = if lowercase { c.to_ascii_lowercase() } else { c };
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit() || (lowercase && c == '_')) {
        out.insert(0, 'p');
    }
    let ok = if lowercase {
        is_pipeline_name(&out)
    } else {
        is_identifier(&out)
    };
    (ok && out != s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("1m"), Ok(60_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("-15m"), Ok(-900_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1_000ms"), Ok(1000));
        let e = parse_duration("10").unwrap_err();
        assert!(e.message.contains("no unit"), "{e:?}");
        let e = parse_duration("10 secs").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("write `10s`"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("999999999999999d").is_err());
    }

    #[test]
    fn duration_formatting() {
        assert_eq!(format_duration(60_000), "1m");
        assert_eq!(format_duration(1500), "1500ms");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn types() {
        assert_eq!(parse_type("u64"), Ok((Type::U64, false)));
        assert_eq!(parse_type("f64?"), Ok((Type::F64, true)));
        assert_eq!(parse_type("timestamp"), Ok((Type::Timestamp, false)));
        let e = parse_type("int").unwrap_err();
        assert!(e.help.unwrap().starts_with("did you mean `i64`?"));
        let e = parse_type("strng?").unwrap_err();
        assert!(e.help.unwrap().starts_with("did you mean `string?`?"));
    }

    #[test]
    fn names() {
        assert!(is_pipeline_name("page_views2"));
        assert!(!is_pipeline_name("Page"));
        assert!(!is_pipeline_name("_x"));
        assert!(!is_pipeline_name("a-b"));
        assert!(is_identifier("_x9"));
        assert!(!is_identifier("9x"));
        assert_eq!(
            suggest_identifier("Page-Views", true).as_deref(),
            Some("page_views")
        );
        assert_eq!(suggest_identifier("ok", true), None);
    }
}
