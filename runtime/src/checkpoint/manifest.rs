//! The manifest of a checkpoint (`chk-<id>/MANIFEST.json`) and [`CheckpointRef`].
//!
//! JSON, pretty-printed, so an operator can read it (`streamc checkpoints inspect`
//! renders it). Reading tolerates unknown fields (a newer minor writer may add some) and
//! refuses a `format_version` above [`FORMAT_VERSION`]. A manifest is validated when
//! read: names, chain shapes and blob paths; a bad one is [`CheckpointError::Corrupt`],
//! never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::paths::{self, validate_group, validate_instance_id, validate_job};
use super::{CheckpointError, Result};

/// The manifest format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Delivery guarantee the checkpoint was taken under (the spec's `checkpoint.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Outputs in one Kafka transaction per epoch, offsets committed inside it (the
    /// default).
    #[default]
    ExactlyOnce,
    /// Offsets committed after the checkpoint is durable; outputs may repeat.
    AtLeastOnce,
}

impl Mode {
    /// `exactly_once` or `at_least_once`, as in the spec and the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ExactlyOnce => "exactly_once",
            Mode::AtLeastOnce => "at_least_once",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state layout of one operator: a restore refuses a checkpoint whose layout
/// differs from the binary's (the lead's code compares them and names what changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorLayout {
    /// The operator (e.g. the flow it belongs to).
    pub name: String,
    /// A fingerprint of its state types; equal fingerprints restore.
    pub fingerprint: String,
    /// What the state is, readable (shown by `streamc checkpoints inspect`).
    #[serde(default)]
    pub description: String,
}

/// The read position of one source partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// The partition.
    pub partition: u32,
    /// The next record to read (a Kafka offset, a line number, a datagen sequence).
    pub offset: u64,
    /// The partition's watermark (`WATERMARK_MIN` before any event).
    pub watermark: i64,
    /// Idle: not holding the task watermark back.
    #[serde(default)]
    pub idle: bool,
}

/// The positions of one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePositions {
    /// The source's name in the spec.
    pub name: String,
    /// `kafka`, `file`, `datagen`, ...
    pub kind: String,
    /// One per partition the instance had.
    #[serde(default)]
    pub partitions: Vec<PartitionPosition>,
}

/// The position of one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// The sink's name in the spec.
    pub name: String,
    /// `kafka`, `file`, `stdout`, ...
    pub kind: String,
    /// Bytes of a file sink at the checkpoint (a restore truncates it back there);
    /// None for sinks without a position.
    #[serde(default)]
    pub position: Option<u64>,
}

/// One blob of a key group's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Relative to the instance directory: `chk-<id:020>/<group>.bin`, possibly of an
    /// older checkpoint than the manifest's.
    pub path: String,
    /// Its size; a read of another size is corruption.
    pub bytes: u64,
    /// xxh3-64 of its content (16 hex digits in JSON); checked on read.
    #[serde(with = "hex_u64")]
    pub xxh3: u64,
    /// A full snapshot (the first of a chain) rather than a delta.
    pub full: bool,
}

/// What a checkpoint holds. Written last, atomically: the commit point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The job (the pipeline's name).
    pub job: String,
    /// The instance that wrote it.
    pub instance: String,
    /// Its id, monotonic per instance.
    pub id: u64,
    /// When it was taken, epoch milliseconds.
    pub created_ms: i64,
    /// The delivery mode it was taken under.
    pub mode: Mode,
    /// The state layout of every operator.
    #[serde(default)]
    pub layout: Vec<OperatorLayout>,
    /// Every source's partitions: offsets and watermarks.
    #[serde(default)]
    pub sources: Vec<SourcePositions>,
    /// Every sink's position.
    #[serde(default)]
    pub sinks: Vec<SinkPosition>,
    /// Per key group, the chain of blobs to apply in order: one full, then deltas.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<BlobRef>>,
    /// Free-form data of the runtime (counters and such).
    #[serde(default)]
    pub extra: serde_json::Value,
    /// Bytes of state the checkpoint references: every blob of every chain, counted
    /// once (what a restore reads).
    pub total_bytes: u64,
    /// Bytes of the blobs this checkpoint wrote (its incremental size).
    #[serde(default)]
    pub written_bytes: u64,
}

impl Manifest {
    /// `<instance>/<id>`.
    pub fn reference(&self) -> CheckpointRef {
        CheckpointRef {
            instance: self.instance.clone(),
            id: self.id,
        }
    }

    /// The chain of `group` (empty if the checkpoint has no state for it).
    pub fn chain(&self, group: &str) -> &[BlobRef] {
        self.groups.get(group).map_or(&[], Vec::as_slice)
    }

    /// The number of blobs a restore of `group` applies (0 if it has no state).
    pub fn chain_len(&self, group: &str) -> usize {
        self.chain(group).len()
    }

    /// The position of one source partition, if the checkpoint has it.
    pub fn position(&self, source: &str, partition: u32) -> Option<&PartitionPosition> {
        self.sources
            .iter()
            .find(|s| s.name == source)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses and validates a manifest; `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<Manifest> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        // The version first: a newer format may not parse as this one.
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| corrupt("no numeric `format_version`".into()))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(CheckpointError::NewerFormat {
                path: path.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        manifest.validate().map_err(corrupt)?;
        Ok(manifest)
    }

    /// The checks of [`from_json`](Manifest::from_json) beyond the schema.
    fn validate(&self) -> std::result::Result<(), String> {
        validate_job(&self.job).map_err(|e| e.to_string())?;
        validate_instance_id(&self.instance).map_err(|e| e.to_string())?;
        for (group, chain) in &self.groups {
            validate_group(group).map_err(|e| e.to_string())?;
            let Some((first, rest)) = chain.split_first() else {
                return Err(format!("key group `{group}` has an empty chain"));
            };
            if !first.full || rest.iter().any(|b| b.full) {
                return Err(format!(
                    "key group `{group}`: a chain is one full blob then deltas"
                ));
            }
            for blob in chain {
                match paths::parse_blob_path(&blob.path) {
                    Some(id) if id <= self.id => {}
                    _ => {
                        return Err(format!(
                            "key group `{group}`: `{}` is not a blob of this or an older checkpoint",
                            blob.path
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A checkpoint of a job: `<instance>/<id>` (`Display` and `FromStr` use that form,
/// as do the offset commit metadata and the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckpointRef {
    /// The instance that wrote it.
    pub instance: String,
    /// Its id.
    pub id: u64,
}

impl CheckpointRef {
    /// A reference; the instance id must be valid to be parsed back.
    pub fn new(instance: impl Into<String>, id: u64) -> Self {
        CheckpointRef {
            instance: instance.into(),
            id,
        }
    }
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.id)
    }
}

impl FromStr for CheckpointRef {
    type Err = CheckpointError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || CheckpointError::BadRef(s.to_string());
        let (instance, id) = s.rsplit_once('/').ok_or_else(bad)?;
        validate_instance_id(instance).map_err(|_| bad())?;
        Ok(CheckpointRef {
            instance: instance.to_string(),
            id: parse_id(id).ok_or_else(bad)?,
        })
    }
}

/// A checkpoint id in decimal: digits only (no sign, no spaces).
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `u64` as 16 lowercase hex digits in JSON (checksums read better so, and stay exact
/// in JSON readers that use doubles).
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 16 {
            return Err(D::Error::custom(format!("`{s}` is not 1 to 16 hex digits")));
        }
        u64::from_str_radix(&s, 16).map_err(|_| D::Error::custom(format!("`{s}` is not hex")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            job: "page_views".into(),
            instance: "0".into(),
            id: 12,
            created_ms: 1_700_000_000_123,
            mode: Mode::ExactlyOnce,
            layout: vec![OperatorLayout {
                name: "views".into(),
                fingerprint: "ab12".into(),
                description: "tumbling 1m, count".into(),
            }],
            sources: vec![SourcePositions {
                name: "clicks".into(),
                kind: "kafka".into(),
                partitions: vec![PartitionPosition {
                    partition: 3,
                    offset: 1042,
                    watermark: -5,
                    idle: true,
                }],
            }],
            sinks: vec![SinkPosition {
                name: "out".into(),
                kind: "file".into(),
                position: Some(77),
            }],
            groups: BTreeMap::from([(
                "s0-p3".to_string(),
                vec![
                    BlobRef {
                        path: paths::blob_path(10, "s0-p3"),
                        bytes: 5,
                        xxh3: u64::MAX,
                        full: true,
                    },
                    BlobRef {
                        path: paths::blob_path(12, "s0-p3"),
                        bytes: 2,
                        xxh3: 1,
                        full: false,
                    },
                ],
            )]),
            extra: serde_json::json!({"late": 4}),
            total_bytes: 7,
            written_bytes: 2,
        }
    }

    #[test]
    fn round_trips_through_pretty_json() {
        let m = sample();
        let json = m.to_json().unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains("\n  \"format_version\": 1,"), "{text}");
        assert!(text.contains("\"mode\": \"exactly_once\""), "{text}");
        assert!(text.contains("\"xxh3\": \"ffffffffffffffff\""), "{text}");
        assert_eq!(Manifest::from_json(&json, "m").unwrap(), m);
        assert_eq!(m.chain_len("s0-p3"), 2);
        assert_eq!(m.chain_len("task"), 0);
        assert_eq!(m.position("clicks", 3).unwrap().offset, 1042);
        assert_eq!(m.position("clicks", 4), None);
    }

    #[test]
    fn unknown_fields_are_tolerated_and_optional_ones_default() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["added_later"] = serde_json::json!({"x": 1});
        v["sources"][0]["partitions"][0]["lag"] = 3.into();
        let obj = v.as_object_mut().unwrap();
        for optional in ["extra", "written_bytes", "layout", "sinks"] {
            obj.remove(optional);
        }
        let m = Manifest::from_json(v.to_string().as_bytes(), "m").unwrap();
        assert_eq!(m.extra, serde_json::Value::Null);
        assert!(m.layout.is_empty() && m.sinks.is_empty());
        assert_eq!(m.sources, sample().sources);
    }

    #[test]
    fn newer_formats_are_refused_by_name() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format_version"] = 2.into();
        v["groups"] = "a new shape".into();
        let e = Manifest::from_json(v.to_string().as_bytes(), "/x/MANIFEST.json").unwrap_err();
        assert!(
            matches!(e, CheckpointError::NewerFormat { found: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("/x/MANIFEST.json: "), "{e}");
    }

    #[test]
    fn corrupt_manifests_are_errors_naming_the_file() {
        let base = serde_json::to_value(sample()).unwrap();
        let mut cases: Vec<(String, serde_json::Value)> = Vec::new();
        let mut edit = |what: &str, f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            f(&mut v);
            cases.push((what.to_string(), v));
        };
        edit("no version", &|v| {
            v.as_object_mut().unwrap().remove("format_version");
        });
        edit("bad instance", &|v| v["instance"] = "../1".into());
        edit("bad job", &|v| v["job"] = "a/b".into());
        edit("bad mode", &|v| v["mode"] = "sometimes".into());
        edit("bad group", &|v| {
            v["groups"] = serde_json::json!({"../x": base["groups"]["s0-p3"]})
        });
        edit("empty chain", &|v| {
            v["groups"]["s0-p3"] = serde_json::json!([])
        });
        edit("delta first", &|v| {
            v["groups"]["s0-p3"][0]["full"] = false.into()
        });
        edit("two fulls", &|v| {
            v["groups"]["s0-p3"][1]["full"] = true.into()
        });
        edit("escaping blob", &|v| {
            v["groups"]["s0-p3"][0]["path"] = "../1/chk-00000000000000000001/a.bin".into()
        });
        edit("blob of a newer checkpoint", &|v| {
            v["groups"]["s0-p3"][0]["path"] = paths::blob_path(13, "s0-p3").into()
        });
        edit("bad checksum", &|v| {
            v["groups"]["s0-p3"][0]["xxh3"] = "xyz".into()
        });
        edit("negative offset", &|v| {
            v["sources"][0]["partitions"][0]["offset"] = (-1).into()
        });
        for (what, v) in cases {
            let e = Manifest::from_json(v.to_string().as_bytes(), "/d/MANIFEST.json").unwrap_err();
            assert!(matches!(e, CheckpointError::Corrupt { .. }), "{what}: {e}");
            assert!(
                e.to_string().starts_with("/d/MANIFEST.json: "),
                "{what}: {e}"
            );
        }
        for garbage in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"[]",
            b"null",
            b"{\"format_version\": \"1\"}",
        ] {
            let e = Manifest::from_json(garbage, "m").unwrap_err();
            assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        }
    }

    #[test]
    fn checkpoint_refs_display_and_parse() {
        let r: CheckpointRef = "node-1/42".parse().unwrap();
        assert_eq!(r, CheckpointRef::new("node-1", 42));
        assert_eq!(r.to_string(), "node-1/42");
        let max = format!("a/{}", u64::MAX);
        assert_eq!(max.parse::<CheckpointRef>().unwrap().id, u64::MAX);
        for bad in [
            "42",
            "/42",
            "a/",
            "a/+1",
            "a/-1",
            "a/1 ",
            "a b/1",
            "../1",
            "a/18446744073709551616",
        ] {
            assert!(
                matches!(
                    bad.parse::<CheckpointRef>(),
                    Err(CheckpointError::BadRef(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the bytes (garbage, or a valid manifest with one byte changed), reading
        /// is a manifest or an error, never a panic.
        #[test]
        fn reading_any_bytes_never_panics(
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..10_000,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let _ = Manifest::from_json(&garbage, "m");
            let mut json = sample().to_json().unwrap();
            let i = at % json.len();
            json[i] = byte;
            if let Ok(m) = Manifest::from_json(&json, "m") {
                proptest::prop_assert!(m.groups.values().all(|c| !c.is_empty() && c[0].full));
            }
        }
    }
}
