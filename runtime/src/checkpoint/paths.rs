//! Names in storage (`docs/design/state.md`, "Storage layout") and the rules for the
//! names that become path segments.
//!
//! ```text
//! <job>/<instance>/chk-<id:020>/MANIFEST.json   written last: the commit point
//! <job>/<instance>/chk-<id:020>/<group>.bin     one blob per key group written then
//! ```
//!
//! A blob is referenced by its path relative to the instance directory
//! (`chk-<id:020>/<group>.bin`), so a chain can only name blobs of its own instance.

use super::{CheckpointError, Result};

/// The manifest's file name in a checkpoint directory.
pub const MANIFEST: &str = "MANIFEST.json";

/// Longest job name or key group name.
const MAX_NAME: usize = 128;
/// Longest instance id.
pub const MAX_INSTANCE_ID: usize = 64;

/// Checks a name that becomes one path segment: 1 to `max` characters of
/// `[A-Za-z0-9._-]`, not starting with `.` (so never `.`, `..` or a hidden name).
fn check_name(what: &'static str, value: &str, max: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty".to_string())
    } else if value.len() > max {
        Some(format!("longer than {max} characters"))
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, `.`, `_` and `-` are allowed".to_string())
    } else if value.starts_with('.') {
        Some("it must not start with `.`".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(CheckpointError::BadName {
            what,
            value: value.to_string(),
            reason,
        }),
    }
}

/// Checks an instance id: `[A-Za-z0-9._-]{1,64}`, not starting with `.`.
pub fn validate_instance_id(id: &str) -> Result<()> {
    check_name("instance id", id, MAX_INSTANCE_ID)
}

/// Checks a job name as a path segment (the spec's `[a-z][a-z0-9_]*` always passes).
pub fn validate_job(job: &str) -> Result<()> {
    check_name("job name", job, MAX_NAME)
}

/// Checks a key group name (`task`, `s<source>-p<partition>`): `[A-Za-z0-9._-]{1,128}`,
/// not starting with `.`.
pub fn validate_group(group: &str) -> Result<()> {
    check_name("key group", group, MAX_NAME)
}

/// `chk-<id:020>`: the directory of checkpoint `id` (zero-padded, so names sort as ids).
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id:020}")
}

/// The id of a checkpoint directory name, if it is one.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `<job>/<instance>`.
pub fn instance_prefix(job: &str, instance: &str) -> String {
    format!("{job}/{instance}")
}

/// `<job>/<instance>/chk-<id:020>`.
pub fn checkpoint_prefix(job: &str, instance: &str, id: u64) -> String {
    format!("{job}/{instance}/{}", checkpoint_dir(id))
}

/// `<job>/<instance>/chk-<id:020>/MANIFEST.json`.
pub fn manifest_key(job: &str, instance: &str, id: u64) -> String {
    format!("{}/{MANIFEST}", checkpoint_prefix(job, instance, id))
}

/// `chk-<id:020>/<group>.bin`: a blob's path relative to its instance directory.
pub fn blob_path(id: u64, group: &str) -> String {
    format!("{}/{group}.bin", checkpoint_dir(id))
}

/// The checkpoint id of a blob path relative to the instance directory
/// (`chk-<id:020>/<file>`), if it has that shape and `<file>` is not the manifest.
pub fn parse_blob_path(path: &str) -> Option<u64> {
    let (dir, file) = path.split_once('/')?;
    if file == MANIFEST || check_name("file", file, MAX_NAME + 4).is_err() {
        return None;
    }
    parse_checkpoint_dir(dir)
}

/// The key names a manifest (its last segment is [`MANIFEST`]).
pub fn is_manifest(key: &str) -> bool {
    key.rsplit('/').next() == Some(MANIFEST)
}

/// An object of the layout: `<job>/<instance>/chk-<id>/<file>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The job directory.
    pub job: &'a str,
    /// The instance directory.
    pub instance: &'a str,
    /// The checkpoint id.
    pub id: u64,
    /// The file name in the checkpoint directory.
    pub file: &'a str,
}

/// Splits a storage key into an [`Entry`]; None for anything else (foreign files,
/// deeper paths, malformed names), which the store ignores.
pub fn parse_key(key: &str) -> Option<Entry<'_>> {
    let mut parts = key.split('/');
    let (job, instance, dir, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || validate_job(job).is_err()
        || validate_instance_id(instance).is_err()
    {
        return None;
    }
    Some(Entry {
        job,
        instance,
        id: parse_checkpoint_dir(dir)?,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        for ok in ["0", "a", "node-1.eu_west", &"x".repeat(64)] {
            validate_instance_id(ok).unwrap();
        }
        for bad in ["", ".", "..", ".x", "a/b", "a b", "é", &"x".repeat(65)] {
            let e = validate_instance_id(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    CheckpointError::BadName {
                        what: "instance id",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn checkpoint_dirs_sort_as_ids_and_parse_back() {
        assert_eq!(checkpoint_dir(7), "chk-00000000000000000007");
        assert!(checkpoint_dir(9) < checkpoint_dir(10));
        assert_eq!(
            parse_checkpoint_dir(&checkpoint_dir(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "chk-7",
            "chk-0000000000000000000x",
            "chk-99999999999999999999",
            "x-00000000000000000007",
        ] {
            assert_eq!(parse_checkpoint_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_and_blob_paths() {
        let key = manifest_key("job", "0", 3);
        assert_eq!(key, "job/0/chk-00000000000000000003/MANIFEST.json");
        assert_eq!(
            parse_key(&key),
            Some(Entry {
                job: "job",
                instance: "0",
                id: 3,
                file: MANIFEST
            })
        );
        assert_eq!(parse_key("job/0/chk-00000000000000000003"), None);
        assert_eq!(parse_key("job/0/chk-00000000000000000003/a/b"), None);
        assert_eq!(parse_key("job/0/notes/x"), None);
        assert_eq!(parse_blob_path(&blob_path(5, "s0-p1")), Some(5));
        assert_eq!(
            parse_blob_path("chk-00000000000000000005/MANIFEST.json"),
            None
        );
        assert_eq!(parse_blob_path("../chk-00000000000000000005/a.bin"), None);
        assert_eq!(parse_blob_path("chk-00000000000000000005/../x"), None);
    }
}
