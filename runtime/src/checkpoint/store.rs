//! [`CheckpointStore`]: the checkpoints of one instance of a job, over a [`Storage`].
//!
//! Architecture Invariants:
//! - the manifest is written last, after every blob it references: a checkpoint whose
//!   manifest exists is whole, one without a manifest does not exist;
//! - ids only grow: a write takes an id above every directory in storage (complete or
//!   not), so a half-written checkpoint is never overwritten and an id never names two
//!   different checkpoints;
//! - a chain only references blobs of its own instance, so an instance's collection
//!   never needs to look at, nor touches, another instance's files.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

use super::catalog::{self, instance_dirs};
use super::paths;
use super::{
    BlobRef, CheckpointError, CheckpointRef, FORMAT_VERSION, Manifest, Mode, OperatorLayout,
    Result, S3Options, SinkPosition, SourcePositions, Storage, open_storage, open_storage_with,
};

/// The new state of one key group in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// A full snapshot: the group's chain restarts with it.
    Full(Vec<u8>),
    /// The changes since the base checkpoint: appended to the base's chain.
    Delta(Vec<u8>),
    /// No change since the base checkpoint: its chain is carried over as is.
    Unchanged,
}

/// Everything a checkpoint records, as the driver hands it over.
#[derive(Clone, Debug, Default)]
pub struct NewCheckpoint {
    /// Its id: at least [`CheckpointStore::next_id`].
    pub id: u64,
    /// When it was taken, epoch milliseconds.
    pub created_ms: i64,
    /// The delivery mode.
    pub mode: Mode,
    /// The state layout of every operator.
    pub layout: Vec<OperatorLayout>,
    /// Source positions and watermarks.
    pub sources: Vec<SourcePositions>,
    /// Sink positions.
    pub sinks: Vec<SinkPosition>,
    /// Every key group the instance holds. A group of the base that is not here is
    /// dropped (its partition left the instance).
    pub groups: BTreeMap<String, GroupState>,
    /// Free-form data of the runtime.
    pub extra: serde_json::Value,
}

/// What [`CheckpointStore::collect`] kept and deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Ids of the checkpoints kept, ascending.
    pub kept: Vec<u64>,
    /// Ids of the checkpoints whose manifest was deleted, ascending.
    pub deleted: Vec<u64>,
    /// Objects deleted (manifests, blobs), including those of incomplete directories.
    pub deleted_objects: usize,
}

/// The checkpoints of one instance of a job (`<job>/<instance>/` in storage), with
/// read access to every instance of the job (a partition's state may be restored by
/// another instance than the one that wrote it).
///
/// One writer per instance: two live processes with one instance id would write the
/// same directories (the Kafka transactional id, named after the instance, fences the
/// older one's outputs, not its files).
pub struct CheckpointStore {
    storage: Box<dyn Storage>,
    job: String,
    instance: String,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("at", &self.storage.location(""))
            .field("job", &self.job)
            .field("instance", &self.instance)
            .finish()
    }
}

impl CheckpointStore {
    /// Opens the storage `url` names (see [`open_storage`]) for `instance` of `job`.
    pub fn open(url: &str, job: &str, instance: &str) -> Result<Self> {
        Self::new(open_storage(url)?, job, instance)
    }

    /// [`open`](Self::open) with the spec's `checkpoint.s3` options.
    pub fn open_with(url: &str, s3: &S3Options, job: &str, instance: &str) -> Result<Self> {
        Self::new(open_storage_with(url, s3)?, job, instance)
    }

    /// A store over `storage`; checks the job name and the instance id.
    pub fn new(storage: Box<dyn Storage>, job: &str, instance: &str) -> Result<Self> {
        paths::validate_job(job)?;
        paths::validate_instance_id(instance)?;
        Ok(CheckpointStore {
            storage,
            job: job.to_string(),
            instance: instance.to_string(),
        })
    }

    /// The job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The instance this store writes for.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The storage underneath.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// The id for the next checkpoint: one more than the largest id of any directory of
    /// this instance in storage, complete or not (1 in an empty storage).
    pub fn next_id(&self) -> Result<u64> {
        let dirs = instance_dirs(self.storage(), &self.job, &self.instance)?;
        match dirs.keys().next_back() {
            None => Ok(1),
            Some(&max) => max.checked_add(1).ok_or_else(|| CheckpointError::Write {
                checkpoint: CheckpointRef::new(self.instance.clone(), max),
                reason: "checkpoint ids are exhausted".into(),
            }),
        }
    }

    /// Writes a checkpoint: every new blob, then the manifest (the commit point).
    ///
    /// `base` is the checkpoint the instance's state was last written to or restored
    /// from: `Delta` and `Unchanged` groups extend its chains. It is passed explicitly
    /// rather than taken to be the latest: after a crash between "checkpoint durable"
    /// and "offsets committed" the job restores an older checkpoint than the latest,
    /// and its deltas are relative to that one. The base must be of this instance (a
    /// group restored from another instance's checkpoint is written `Full` first);
    /// `None` means every group is `Full`.
    ///
    /// Fails, writing nothing, if the id is below [`next_id`](Self::next_id) or not
    /// above the base's, or a `Delta`/`Unchanged` group has no chain in the base. A
    /// failure while writing leaves an incomplete directory, which does not exist as a
    /// checkpoint and is collected later; the next write needs a new id.
    pub fn write(&self, base: Option<&Manifest>, ck: NewCheckpoint) -> Result<Manifest> {
        self.write_with(base, ck, &mut || {})
    }

    /// [`CheckpointStore::write`], calling `blobs_written` between the last blob and the
    /// manifest (the driver's fault hook `checkpoint.blobs`).
    pub fn write_with(
        &self,
        base: Option<&Manifest>,
        ck: NewCheckpoint,
        blobs_written: &mut dyn FnMut(),
    ) -> Result<Manifest> {
        let me = CheckpointRef::new(self.instance.clone(), ck.id);
        let refuse = |reason: String| CheckpointError::Write {
            checkpoint: me.clone(),
            reason,
        };
        if let Some(b) = base {
            if b.job != self.job || b.instance != self.instance {
                return Err(refuse(format!(
                    "its base {}/{} is another instance's; chains only extend checkpoints \
                     of their own instance (write such groups Full)",
                    b.job,
                    b.reference()
                )));
            }
            if b.id >= ck.id {
                return Err(refuse(format!("its base {} is not older", b.reference())));
            }
        }
        let next = self.next_id()?;
        if ck.id < next {
            return Err(refuse(format!(
                "storage already has checkpoint directories up to id {} (use next_id)",
                next - 1
            )));
        }

        let mut groups = BTreeMap::new();
        let mut blobs = Vec::new();
        for (group, state) in ck.groups {
            paths::validate_group(&group)?;
            let carried = || -> Result<Vec<BlobRef>> {
                match base.map(|b| b.chain(&group)).filter(|c| !c.is_empty()) {
                    Some(chain) => Ok(chain.to_vec()),
                    None => Err(refuse(format!(
                        "key group `{group}` is a delta or unchanged, but the base has no \
                         chain for it (write it Full)"
                    ))),
                }
            };
            let (chain, new) = match state {
                GroupState::Full(bytes) => (Vec::new(), Some((bytes, true))),
                GroupState::Delta(bytes) => (carried()?, Some((bytes, false))),
                GroupState::Unchanged => (carried()?, None),
            };
            let mut chain = chain;
            if let Some((bytes, full)) = new {
                let path = paths::blob_path(ck.id, &group);
                chain.push(BlobRef {
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                    xxh3: xxh3_64(&bytes),
                    full,
                });
                blobs.push((path, bytes));
            }
            groups.insert(group, chain);
        }

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            job: self.job.clone(),
            instance: self.instance.clone(),
            id: ck.id,
            created_ms: ck.created_ms,
            mode: ck.mode,
            layout: ck.layout,
            sources: ck.sources,
            sinks: ck.sinks,
            // Saturating: a base read from storage may carry any sizes.
            total_bytes: groups
                .values()
                .flatten()
                .fold(0u64, |n, b| n.saturating_add(b.bytes)),
            written_bytes: blobs.iter().map(|(_, b)| b.len() as u64).sum(),
            groups,
            extra: ck.extra,
        };
        let json = manifest
            .to_json()
            .map_err(|e| refuse(format!("cannot encode the manifest: {e}")))?;

        let instance_dir = paths::instance_prefix(&self.job, &self.instance);
        for (path, bytes) in &blobs {
            self.put(&format!("{instance_dir}/{path}"), bytes)?;
        }
        blobs_written();
        // Conditional: a manifest is never replaced. Two processes writing with one
        // instance id would otherwise commit over each other's checkpoints unseen.
        let key = paths::manifest_key(&self.job, &self.instance, ck.id);
        self.storage.put_new(&key, &json).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                refuse(format!(
                    "its manifest {} already exists: another process writes checkpoints \
                     with this instance id (two processes with one `--instance-id`?)",
                    self.storage.location(&key)
                ))
            } else {
                CheckpointError::Io {
                    path: self.storage.location(&key),
                    source,
                }
            }
        })?;
        Ok(manifest)
    }

    /// The newest complete checkpoint of this instance, if any. A corrupt newest
    /// manifest is an error, not a silent fall-back to older state.
    pub fn latest(&self) -> Result<Option<Manifest>> {
        let dirs = instance_dirs(self.storage(), &self.job, &self.instance)?;
        let newest = dirs
            .iter()
            .rev()
            .find(|(_, keys)| keys.iter().any(|k| paths::is_manifest(k)));
        match newest {
            None => Ok(None),
            Some((&id, _)) => self.get(&CheckpointRef::new(self.instance.clone(), id)),
        }
    }

    /// A complete checkpoint of any instance of the job; None if it does not exist or
    /// has no manifest.
    pub fn get(&self, r: &CheckpointRef) -> Result<Option<Manifest>> {
        catalog::load_manifest(self.storage(), &self.job, r)
    }

    /// Every complete checkpoint of the job (of one instance, or all), sorted by
    /// instance and id. A corrupt manifest is an error.
    pub fn list(&self, instance: Option<&str>) -> Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        for found in catalog::scan(self.storage(), Some(&self.job), instance)? {
            if found.complete
                && let Some(m) = self.get(&found.reference())?
            {
                manifests.push(m);
            }
        }
        Ok(manifests)
    }

    /// The blobs of `group`'s chain in `manifest`, in the order to apply them (a full
    /// snapshot, then deltas); empty if the checkpoint has no state for the group.
    /// Each blob's size and xxh3 checksum are verified: a mismatch is
    /// [`CheckpointError::Corrupt`], an absent blob [`CheckpointError::Missing`], both
    /// naming the file.
    pub fn read_chain(&self, manifest: &Manifest, group: &str) -> Result<Vec<Vec<u8>>> {
        let dir = paths::instance_prefix(&manifest.job, &manifest.instance);
        let mut out = Vec::with_capacity(manifest.chain_len(group));
        for blob in manifest.chain(group) {
            let key = format!("{dir}/{}", blob.path);
            let path = self.storage.location(&key);
            let bytes = self
                .storage
                .get(&key)
                .map_err(|source| CheckpointError::Io {
                    path: path.clone(),
                    source,
                })?
                .ok_or_else(|| CheckpointError::Missing {
                    path: path.clone(),
                    checkpoint: manifest.reference(),
                })?;
            let corrupt = |reason| CheckpointError::Corrupt {
                path: path.clone(),
                reason,
            };
            if bytes.len() as u64 != blob.bytes {
                return Err(corrupt(format!(
                    "{} bytes, checkpoint {} says {}",
                    bytes.len(),
                    manifest.reference(),
                    blob.bytes
                )));
            }
            let sum = xxh3_64(&bytes);
            if sum != blob.xxh3 {
                return Err(corrupt(format!(
                    "xxh3 {sum:016x}, checkpoint {} says {:016x}",
                    manifest.reference(),
                    blob.xxh3
                )));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    pub(crate) fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.storage
            .put(key, bytes)
            .map_err(|source| CheckpointError::Io {
                path: self.storage.location(key),
                source,
            })
    }
}
