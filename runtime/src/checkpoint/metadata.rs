//! The metadata streamc stores with committed Kafka offsets (`docs/design/state.md`,
//! "Modes"):
//!
//! - `streamc1;ck=<instance>/<id>`: the offsets belong to that checkpoint (with a
//!   `checkpoint:` block); a restart restores exactly it;
//! - `streamc1;wm=<i64>;pos=<u64>`: without checkpoints, the partition's watermark and
//!   read position when the offset was committed.
//!
//! Parsing never fails: metadata of another tool, an empty string, a future version
//! (`streamc2;...`) or a malformed value is [`OffsetMetadata::None`], so a foreign
//! commit can never stop a job. Fields are `;`-separated `key=value` pairs after the
//! version tag; unknown keys are ignored (a later writer may add some), a repeated key
//! makes the whole metadata `None`.

use std::fmt;

use super::CheckpointRef;
use super::manifest::parse_id;

/// The version tag that starts every metadata string streamc writes.
pub const TAG: &str = "streamc1";

/// What a committed offset's metadata says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetMetadata {
    /// Nothing streamc understands.
    None,
    /// `streamc1;ck=<instance>/<id>`.
    Checkpoint(CheckpointRef),
    /// `streamc1;wm=<watermark>;pos=<position>`.
    Position {
        /// The partition's watermark at commit time.
        watermark: i64,
        /// The partition's read position (next offset) at commit time.
        position: u64,
    },
}

impl OffsetMetadata {
    /// Parses metadata; anything not understood is [`OffsetMetadata::None`].
    pub fn parse(s: &str) -> OffsetMetadata {
        Self::try_parse(s).unwrap_or(OffsetMetadata::None)
    }

    fn try_parse(s: &str) -> Option<OffsetMetadata> {
        let mut fields = s.split(';');
        if fields.next()? != TAG {
            return None;
        }
        let (mut ck, mut wm, mut pos) = (None, None, None);
        for field in fields {
            let (key, value) = field.split_once('=')?;
            let slot = match key {
                "ck" => &mut ck,
                "wm" => &mut wm,
                "pos" => &mut pos,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        if let Some(ck) = ck {
            return ck.parse().ok().map(OffsetMetadata::Checkpoint);
        }
        let watermark = parse_i64(wm?)?;
        let position = parse_id(pos?)?;
        Some(OffsetMetadata::Position {
            watermark,
            position,
        })
    }
}

/// A decimal i64: an optional `-` then digits (no `+`, no spaces).
fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The metadata string to commit (`None` formats as the empty string).
impl fmt::Display for OffsetMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetMetadata::None => Ok(()),
            OffsetMetadata::Checkpoint(r) => write!(f, "{TAG};ck={r}"),
            OffsetMetadata::Position {
                watermark,
                position,
            } => write!(f, "{TAG};wm={watermark};pos={position}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_the_design_says_and_parses_back() {
        let ck = OffsetMetadata::Checkpoint(CheckpointRef::new("node-2", 17));
        assert_eq!(ck.to_string(), "streamc1;ck=node-2/17");
        let pos = OffsetMetadata::Position {
            watermark: -3,
            position: 1042,
        };
        assert_eq!(pos.to_string(), "streamc1;wm=-3;pos=1042");
        let extremes = OffsetMetadata::Position {
            watermark: i64::MIN,
            position: u64::MAX,
        };
        for m in [ck, pos, extremes] {
            assert_eq!(OffsetMetadata::parse(&m.to_string()), m);
        }
        assert_eq!(OffsetMetadata::None.to_string(), "");
    }

    #[test]
    fn field_order_and_unknown_keys_do_not_matter() {
        assert_eq!(
            OffsetMetadata::parse("streamc1;pos=5;future=x;wm=9"),
            OffsetMetadata::Position {
                watermark: 9,
                position: 5
            }
        );
        assert_eq!(
            OffsetMetadata::parse("streamc1;wm=1;pos=2;ck=a/3"),
            OffsetMetadata::Checkpoint(CheckpointRef::new("a", 3))
        );
    }

    #[test]
    fn foreign_and_malformed_metadata_is_none() {
        for s in [
            "",
            "streamc1",
            "streamc1;",
            "streamc2;ck=a/1",
            "STREAMC1;ck=a/1",
            "kafka-streams-metadata",
            "streamc1;ck=a",
            "streamc1;ck=../x/1",
            "streamc1;ck=a/1;ck=a/2",
            "streamc1;wm=1",
            "streamc1;pos=1",
            "streamc1;wm=x;pos=1",
            "streamc1;wm=+1;pos=1",
            "streamc1;wm=1;pos=-1",
            "streamc1;wm=99999999999999999999;pos=1",
            "streamc1;wm=1;pos=1;garbage",
            " streamc1;wm=1;pos=1",
        ] {
            assert_eq!(OffsetMetadata::parse(s), OffsetMetadata::None, "{s:?}");
        }
    }
}
