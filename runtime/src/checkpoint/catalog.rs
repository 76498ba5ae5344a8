//! Finding checkpoints in storage: which directories exist, which are complete, and
//! reading a manifest by reference. Used by [`CheckpointStore`](super::CheckpointStore)
//! and by `streamc checkpoints`, which browses every job of a storage.
//!
//! Architecture Invariant: a checkpoint exists when its `MANIFEST.json` does. A
//! directory without one (a crash while writing, or the remains of a collected
//! checkpoint whose blobs newer chains still use) is incomplete: never listed as a
//! checkpoint, never restored, but counted by `next_id` so its id is not reused.

use std::collections::BTreeMap;

use super::paths::{self, MANIFEST};
use super::{CheckpointError, CheckpointRef, Manifest, Result, Storage};

/// A checkpoint directory found in storage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// The job directory.
    pub job: String,
    /// The instance directory.
    pub instance: String,
    /// The checkpoint id.
    pub id: u64,
    /// Has a manifest: the checkpoint exists. False: half-written or collected.
    pub complete: bool,
}

impl Found {
    /// `<instance>/<id>`.
    pub fn reference(&self) -> CheckpointRef {
        CheckpointRef::new(self.instance.clone(), self.id)
    }
}

/// The object keys of every checkpoint directory of one instance, by id.
pub(crate) fn instance_dirs(
    storage: &dyn Storage,
    job: &str,
    instance: &str,
) -> Result<BTreeMap<u64, Vec<String>>> {
    let prefix = paths::instance_prefix(job, instance);
    let mut dirs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for key in list(storage, &prefix)? {
        if let Some(entry) = paths::parse_key(&key) {
            dirs.entry(entry.id).or_default().push(key);
        }
    }
    Ok(dirs)
}

/// Every checkpoint directory in storage, of one job or all (`job: None`), of one
/// instance or all, sorted by job, instance and id. Names are checked first, so a bad
/// filter is [`CheckpointError::BadName`].
pub fn scan(
    storage: &dyn Storage,
    job: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<Found>> {
    if let Some(job) = job {
        paths::validate_job(job)?;
    }
    if let Some(instance) = instance {
        paths::validate_instance_id(instance)?;
    }
    let prefix = match (job, instance) {
        (Some(job), Some(instance)) => paths::instance_prefix(job, instance),
        (Some(job), None) => job.to_string(),
        (None, _) => String::new(),
    };
    let mut found: BTreeMap<(String, String, u64), bool> = BTreeMap::new();
    for key in list(storage, &prefix)? {
        let Some(e) = paths::parse_key(&key) else {
            continue;
        };
        if instance.is_some_and(|i| i != e.instance) {
            continue;
        }
        let complete = found
            .entry((e.job.to_string(), e.instance.to_string(), e.id))
            .or_default();
        *complete |= e.file == MANIFEST;
    }
    Ok(found
        .into_iter()
        .map(|((job, instance, id), complete)| Found {
            job,
            instance,
            id,
            complete,
        })
        .collect())
}

/// Reads and validates the manifest of `job`'s checkpoint `r`; None if it has none
/// (it does not exist, or is incomplete). A manifest that contradicts the directory it
/// is in is [`CheckpointError::Corrupt`].
pub fn load_manifest(
    storage: &dyn Storage,
    job: &str,
    r: &CheckpointRef,
) -> Result<Option<Manifest>> {
    paths::validate_job(job)?;
    paths::validate_instance_id(&r.instance)?;
    let key = paths::manifest_key(job, &r.instance, r.id);
    let path = storage.location(&key);
    let Some(bytes) = storage.get(&key).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?
    else {
        return Ok(None);
    };
    let manifest = Manifest::from_json(&bytes, &path)?;
    if manifest.job != job || manifest.instance != r.instance || manifest.id != r.id {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!(
                "it is the manifest of {}/{}, found where {job}/{r} belongs",
                manifest.job,
                manifest.reference()
            ),
        });
    }
    Ok(Some(manifest))
}

fn list(storage: &dyn Storage, prefix: &str) -> Result<Vec<String>> {
    storage.list(prefix).map_err(|source| CheckpointError::Io {
        path: storage.location(prefix),
        source,
    })
}
