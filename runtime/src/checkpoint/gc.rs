//! Collection of old checkpoints: [`CheckpointStore::collect`] (and
//! [`CheckpointStore::plan_collect`], the same decisions without deleting).
//!
//! Architecture Invariant: collection never deletes an object that a kept manifest
//! references, and deletes the manifests it drops before their blobs, so that at every
//! moment (a crash included) every manifest in storage references only blobs that
//! exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::catalog::instance_dirs;
use super::paths::{self, is_manifest};
use super::{CheckpointError, CheckpointRef, CheckpointStore, GcReport, Result};

impl CheckpointStore {
    /// Deletes this instance's checkpoints that are no longer needed.
    ///
    /// Kept: the `keep_newest` newest complete checkpoints (at least one: the newest is
    /// always kept, so ids never go back), every checkpoint of this instance named in
    /// `also_keep` (e.g. those the group's committed offsets reference; references to
    /// other instances or to checkpoints that do not exist are ignored), and every
    /// blob their chains reference, in whichever older directory it lies.
    ///
    /// Deleted: every other object of every checkpoint directory older than the newest
    /// complete checkpoint, incomplete directories included. Directories newer than it
    /// (a write in progress, or one that crashed) are left alone. Other instances'
    /// files, and files outside the `chk-<id>` directories, are never touched.
    ///
    /// If a kept manifest cannot be read, nothing is deleted and the error is returned.
    pub fn collect(&self, keep_newest: usize, also_keep: &[CheckpointRef]) -> Result<GcReport> {
        self.collect_or_plan(keep_newest, also_keep, true)
    }

    /// What [`collect`](Self::collect) would keep and delete, deleting nothing.
    pub fn plan_collect(
        &self,
        keep_newest: usize,
        also_keep: &[CheckpointRef],
    ) -> Result<GcReport> {
        self.collect_or_plan(keep_newest, also_keep, false)
    }

    fn collect_or_plan(
        &self,
        keep_newest: usize,
        also_keep: &[CheckpointRef],
        delete: bool,
    ) -> Result<GcReport> {
        let dirs = instance_dirs(self.storage(), self.job(), self.instance())?;
        let complete: Vec<u64> = dirs
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| is_manifest(k)))
            .map(|(&id, _)| id)
            .collect();
        let Some(&newest) = complete.last() else {
            return Ok(GcReport::default());
        };

        let mut kept: BTreeSet<u64> = complete
            .iter()
            .rev()
            .take(keep_newest.max(1))
            .copied()
            .collect();
        kept.extend(
            also_keep
                .iter()
                .filter(|r| r.instance == self.instance() && complete.binary_search(&r.id).is_ok())
                .map(|r| r.id),
        );

        let instance_dir = paths::instance_prefix(self.job(), self.instance());
        let mut referenced: HashSet<String> = HashSet::new();
        for &id in &kept {
            let r = CheckpointRef::new(self.instance(), id);
            let manifest = self.get(&r)?.ok_or_else(|| CheckpointError::Missing {
                path: self.storage().location(&paths::manifest_key(
                    self.job(),
                    self.instance(),
                    id,
                )),
                checkpoint: r.clone(),
            })?;
            referenced.insert(paths::manifest_key(self.job(), self.instance(), id));
            for blob in manifest.groups.values().flatten() {
                referenced.insert(format!("{instance_dir}/{}", blob.path));
            }
        }

        let garbage: BTreeMap<u64, &Vec<String>> = dirs
            .range(..newest)
            .filter(|(id, _)| !kept.contains(id))
            .map(|(&id, keys)| (id, keys))
            .collect();
        let mut report = GcReport {
            kept: kept.into_iter().collect(),
            ..GcReport::default()
        };
        // Manifests first: once a dropped checkpoint's manifest is gone, nothing
        // references the blobs deleted next.
        for (&id, keys) in &garbage {
            if let Some(key) = keys.iter().find(|k| is_manifest(k)) {
                if delete {
                    self.delete(key)?;
                }
                report.deleted.push(id);
                report.deleted_objects += 1;
            }
        }
        for (&id, keys) in &garbage {
            let blobs = keys.iter().filter(|k| !is_manifest(k));
            if keys.iter().any(|k| referenced.contains(k)) {
                for key in blobs.filter(|k| !referenced.contains(*k)) {
                    if delete {
                        self.delete(key)?;
                    }
                    report.deleted_objects += 1;
                }
            } else {
                let prefix = paths::checkpoint_prefix(self.job(), self.instance(), id);
                if delete {
                    self.storage().delete_prefix(&prefix).map_err(|source| {
                        CheckpointError::Io {
                            path: self.storage().location(&prefix),
                            source,
                        }
                    })?;
                }
                report.deleted_objects += blobs.count();
            }
        }
        Ok(report)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.storage()
            .delete(key)
            .map_err(|source| CheckpointError::Io {
                path: self.storage().location(key),
                source,
            })
    }
}
