//! Checkpoint storage: where a job's consistent snapshots live and how they are found,
//! read and collected (`docs/design/state.md`, "Storage layout").
//!
//! State blobs are opaque bytes here: the driver snapshots key groups and hands the
//! bytes over; this module stores them, chains deltas onto full snapshots, records
//! source and sink positions and the state layout in a [`Manifest`], and gives them
//! back, verified.
//!
//! ```text
//! <root>/<job>/<instance>/chk-<id:020>/<group>.bin      blobs, written first
//! <root>/<job>/<instance>/chk-<id:020>/MANIFEST.json    written last: the commit point
//! ```
//!
//! - [`storage`]: the [`Storage`] trait (put/get/list/delete of whole objects, atomic
//!   puts, conditional puts) and [`FileStorage`]; [`open_storage_with`] turns a URL
//!   into one; `s3` (feature `s3`): `S3Storage`, through `object_store`.
//! - [`manifest`]: [`Manifest`] and its parts, [`CheckpointRef`] (`<instance>/<id>`).
//! - [`metadata`]: [`OffsetMetadata`], the codec of the metadata committed with Kafka
//!   offsets (`streamc1;ck=...`, `streamc1;wm=...;pos=...`).
//! - [`store`]: [`CheckpointStore`]: write, latest, get, list, read a chain; `gc`:
//!   [`CheckpointStore::collect`].
//! - [`catalog`]: [`scan`] and [`load_manifest`] over any storage (the CLI's view);
//!   [`inspect`]: `streamc checkpoints list|inspect|gc` (and the `s3://` tool's `main`).
//!
//! Architecture Invariants:
//! - the manifest is written last: a checkpoint without a manifest does not exist;
//! - checkpoint ids of an instance only grow, and a directory is never written twice;
//! - collection never deletes what a kept manifest references, and removes a dropped
//!   checkpoint's manifest before its blobs.

pub mod catalog;
mod error;
mod gc;
pub mod inspect;
pub mod manifest;
pub mod metadata;
pub mod paths;
#[cfg(feature = "s3")]
pub mod s3;
pub mod storage;
pub mod store;

#[cfg(test)]
mod tests;

pub use catalog::{Found, load_manifest, scan};
pub use error::{CheckpointError, Result};
pub use manifest::{
    BlobRef, CheckpointRef, FORMAT_VERSION, Manifest, Mode, OperatorLayout, PartitionPosition,
    SinkPosition, SourcePositions,
};
pub use metadata::OffsetMetadata;
pub use paths::validate_instance_id;
pub use storage::{FileStorage, S3Options, Storage, open_storage, open_storage_with};
pub use store::{CheckpointStore, GcReport, GroupState, NewCheckpoint};
