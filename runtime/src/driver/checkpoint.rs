//! Checkpoints as the driver takes and restores them (`docs/design/state.md`): the
//! state of every operator by key group, encoded into one blob per key group, the
//! layout check on restore, and the driver's side of the store (ids, bases for deltas,
//! the committed checkpoint, collection).
//!
//! A key group's blob holds, for every operator with state in that group, its layout
//! name and its snapshot: `(name: String, bytes)` frames in operator order. A restore
//! applies a chain of such blobs (a full one, then deltas) in order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::Error;
use crate::checkpoint::{
    CheckpointError, CheckpointRef, CheckpointStore, GroupState as Blob, Manifest, Mode,
    OperatorLayout,
};
use crate::pipeline::Pipeline;
use crate::state::{self, Decoder, Encoder, KeyGroup};

/// The spec's `checkpoint:` block, as the generated `main` hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// `interval`, in milliseconds (`--checkpoint-interval` overrides it).
    pub interval_ms: i64,
    /// `storage`: `file:///dir` or `s3://bucket/prefix` (`--checkpoint-storage`
    /// overrides it).
    pub storage: String,
    /// `s3`: the endpoint and region of `s3://` storage (else from the environment).
    pub s3: crate::checkpoint::S3Options,
    /// `mode`: exactly once (the default) or at least once.
    pub mode: Mode,
    /// `retain`: complete checkpoints kept per instance (None: [`DEFAULT_RETAIN`]).
    pub retain: Option<u64>,
}

/// Complete checkpoints kept per instance unless the spec says `retain:`.
pub const DEFAULT_RETAIN: u64 = 3;

/// A chain of deltas this long (full snapshot included) gets a full snapshot next.
const MAX_CHAIN: usize = 8;

/// Old checkpoints are collected every this many checkpoints.
const GC_EVERY: u64 = 5;

/// How long a call to the brokers may take inside a checkpoint or a restore.
pub(super) const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// The driver's checkpointing state.
pub(super) struct Checkpointer {
    pub(super) store: CheckpointStore,
    pub(super) mode: Mode,
    pub(super) interval: Duration,
    retain: usize,
    /// The checkpoint of this instance that the state was last written to (the base of
    /// deltas); None: write every group in full.
    base: Option<Manifest>,
    /// The last checkpoint committed (or restored), which the summary names. (A
    /// rollback goes back to what the committed offsets name, not to this.)
    pub(super) committed: Option<Manifest>,
    /// Key groups restored or reset since the last checkpoint: written in full next.
    fresh: BTreeSet<String>,
    pub(super) next_id: u64,
    pub(super) last: Instant,
    taken: u64,
    /// `--from-checkpoint`, until the first restore uses it.
    pub(super) from: Option<CheckpointRef>,
}

impl Checkpointer {
    pub(super) fn open(
        spec: &CheckpointSpec,
        storage: &str,
        interval: Duration,
        job: &str,
        instance: &str,
        from: Option<&str>,
    ) -> Result<Self, Error> {
        let store = CheckpointStore::open_with(storage, &spec.s3, job, instance)
            .map_err(Error::Checkpoint)?;
        let next_id = store.next_id().map_err(Error::Checkpoint)?;
        let from = match from {
            None => None,
            Some(s) => Some(match s.parse::<CheckpointRef>() {
                Ok(r) => r,
                Err(_) => match crate::checkpoint::manifest::parse_id(s) {
                    Some(id) => CheckpointRef::new(instance, id),
                    None => {
                        return Err(Error::Usage(format!(
                            "--from-checkpoint {s:?}: expected ID or INSTANCE/ID"
                        )));
                    }
                },
            }),
        };
        Ok(Checkpointer {
            store,
            mode: spec.mode,
            interval,
            retain: usize::try_from(spec.retain.unwrap_or(DEFAULT_RETAIN).max(1))
                .unwrap_or(usize::MAX),
            base: None,
            committed: None,
            fresh: BTreeSet::new(),
            next_id,
            last: Instant::now(),
            taken: 0,
            from,
        })
    }

    /// The manifest `r` names, or an error naming it.
    pub(super) fn load(&self, r: &CheckpointRef) -> Result<Manifest, Error> {
        match self.store.get(r).map_err(Error::Checkpoint)? {
            Some(m) => Ok(m),
            None => Err(Error::Checkpoint(CheckpointError::BadRef(format!(
                "checkpoint {r} is not in {} (its manifest is missing): it was collected or never completed",
                self.store.storage().location("")
            )))),
        }
    }

    /// Group `g` was restored or reset: its next snapshot is a full one.
    pub(super) fn mark_fresh(&mut self, g: KeyGroup) {
        self.fresh.insert(g.to_string());
    }

    /// A manifest was restored: it is the committed one, and the base for deltas if it
    /// is this instance's.
    pub(super) fn restored(&mut self, m: &Manifest) {
        if m.instance == self.store.instance() && m.job == self.store.job() {
            self.base = Some(m.clone());
        }
        self.committed = Some(m.clone());
    }

    /// Snapshots every key group that holds state: full when it is new, fresh, its
    /// chain is long, or `full`; else the changes since the last snapshot.
    pub(super) fn snapshot<P: Pipeline>(
        &mut self,
        pipeline: &mut P,
        full: bool,
    ) -> Result<BTreeMap<String, Blob>, Error> {
        let mut ops = pipeline.state();
        let groups: BTreeSet<KeyGroup> = ops.iter().flat_map(|o| o.groups()).collect();
        let mut out = BTreeMap::new();
        for g in groups {
            let name = g.to_string();
            let chain = self.base.as_ref().map_or(0, |b| b.chain_len(&name));
            let whole = full || chain == 0 || chain >= MAX_CHAIN || self.fresh.contains(&name);
            let mode = if whole {
                state::Mode::Full
            } else {
                state::Mode::Delta
            };
            let mut blob = Encoder::new();
            for op in ops.iter_mut() {
                let mut inner = Encoder::new();
                if op.snapshot(g, mode, &mut inner).map_err(Error::State)? {
                    blob.put(op.layout().name).map_err(Error::State)?;
                    blob.put_bytes(inner.as_bytes()).map_err(Error::State)?;
                }
            }
            let bytes = blob.into_bytes();
            out.insert(
                name,
                if whole {
                    Blob::Full(bytes)
                } else {
                    Blob::Delta(bytes)
                },
            );
        }
        Ok(out)
    }

    /// The base of the next checkpoint's deltas (see [`Checkpointer::snapshot`]).
    pub(super) fn base(&self) -> Option<&Manifest> {
        self.base.as_ref()
    }

    /// A checkpoint was written (durable): the base of the next one.
    pub(super) fn written(&mut self, m: &Manifest) {
        self.base = Some(m.clone());
        self.fresh.clear();
        self.next_id = m.id + 1;
        self.taken += 1;
    }

    /// A checkpoint failed after its snapshot: the deltas it took are lost, so the
    /// next one is full, with a new id.
    pub(super) fn failed(&mut self) {
        self.base = None;
        self.next_id += 1;
    }

    /// Whether old checkpoints are collected after this one (every few).
    pub(super) fn collect_due(&self) -> bool {
        self.taken.is_multiple_of(GC_EVERY)
    }

    /// Deletes this instance's checkpoints beyond the newest `retain`, keeping any that
    /// `referenced` (committed offsets of the group) names.
    pub(super) fn collect(&mut self, referenced: &[CheckpointRef]) {
        match self.store.collect(self.retain, referenced) {
            Ok(r) => {
                tracing::debug!(kept = ?r.kept, deleted = ?r.deleted, "old checkpoints collected");
            }
            // Not fatal: collected the next time.
            Err(e) => tracing::warn!(error = %e, "collecting old checkpoints failed"),
        }
    }
}

/// The layouts of the pipeline's operators, for a manifest.
pub(super) fn layouts<P: Pipeline>(pipeline: &mut P) -> Vec<OperatorLayout> {
    pipeline
        .state()
        .iter()
        .map(|o| OperatorLayout {
            name: o.layout().name.to_string(),
            fingerprint: o.layout().fingerprint(),
            description: o.layout().description.clone(),
        })
        .collect()
}

/// Refuses a checkpoint whose state layout differs from the binary's, naming the flow
/// and what changed. A flow new since the checkpoint starts empty; a flow the
/// checkpoint has and the binary does not is refused (its state would be lost).
pub(super) fn check_layout<P: Pipeline>(pipeline: &mut P, m: &Manifest) -> Result<(), Error> {
    let mine = layouts(pipeline);
    let mut problems = Vec::new();
    for theirs in &m.layout {
        match mine.iter().find(|l| l.name == theirs.name) {
            Some(l) if l.fingerprint == theirs.fingerprint => {}
            Some(l) => problems.push(format!(
                "the state of flow `{}` changed: the checkpoint has {}; this binary has {}",
                l.name, theirs.description, l.description
            )),
            None => problems.push(format!(
                "the checkpoint has state of flow `{}` ({}), which this binary does not have",
                theirs.name, theirs.description
            )),
        }
    }
    for l in &mine {
        if !m.layout.iter().any(|t| t.name == l.name) {
            tracing::info!(flow = l.name, checkpoint = %m.reference(), "a flow new since the checkpoint starts with empty state");
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Layout {
        checkpoint: m.reference().to_string(),
        problems: problems.join("; "),
    })
}

/// Restores key group `g` from manifest `m` into every operator (dropping what they
/// held for it first). Returns whether the manifest had the group.
pub(super) fn restore_group<P: Pipeline>(
    pipeline: &mut P,
    store: &CheckpointStore,
    m: &Manifest,
    g: KeyGroup,
) -> Result<bool, Error> {
    let name = g.to_string();
    let mut ops = pipeline.state();
    for op in ops.iter_mut() {
        op.drop_group(g);
    }
    if m.chain_len(&name) == 0 {
        return Ok(false);
    }
    let chain = store.read_chain(m, &name).map_err(Error::Checkpoint)?;
    let bad = |e: state::StateError| Error::Restore {
        checkpoint: m.reference().to_string(),
        group: name.clone(),
        reason: e.to_string(),
    };
    for blob in &chain {
        let mut d = Decoder::new(blob);
        while !d.is_empty() {
            let op_name: String = d.take().map_err(bad)?;
            let bytes = d.take_bytes().map_err(bad)?;
            let Some(op) = ops.iter_mut().find(|o| o.layout().name == op_name) else {
                return Err(bad(state::StateError::new(format!(
                    "state of an operator `{op_name}` that this binary does not have"
                ))));
            };
            let mut inner = Decoder::new(bytes);
            op.restore(g, &mut inner).map_err(bad)?;
            inner.finish().map_err(bad)?;
        }
    }
    Ok(true)
}
