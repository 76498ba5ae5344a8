//! [`CheckpointError`]: everything the checkpoint store can report.

use std::io;

use super::CheckpointRef;

/// Why a checkpoint could not be written, found or read.
///
/// Every variant that concerns an object names it (`path` is the storage's
/// [`location`](super::Storage::location) of it: a file path, later an `s3://` URL).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// `s3://` storage in a binary built without the feature `s3`.
    #[error(
        "cannot use `{url}`: this binary was built without S3 support; `streamc build` \
         includes it when the spec's `checkpoint.storage` is an `s3://` URL (a \
         `--checkpoint-storage` flag cannot add it)"
    )]
    S3NotBuilt {
        /// The URL as given.
        url: String,
    },
    /// The storage URL is malformed or of an unknown scheme.
    #[error("invalid checkpoint storage `{url}`: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A job name, instance id, key group name or object path that is not allowed.
    #[error("invalid {what} `{value}`: {reason}")]
    BadName {
        /// What kind of name (`instance id`, `job name`, `key group`, ...).
        what: &'static str,
        /// The name as given.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A checkpoint reference that is not `<instance>/<id>`.
    #[error("invalid checkpoint reference `{0}`: expected <instance>/<id>, e.g. `0/42`")]
    BadRef(String),
    /// Reading, writing, listing or deleting an object failed.
    #[error("{path}: {source}")]
    Io {
        /// The object (or prefix) concerned.
        path: String,
        /// The storage's error.
        #[source]
        source: io::Error,
    },
    /// An object exists but its content is wrong: a manifest that does not parse or
    /// contradicts where it was found, a blob of the wrong size or checksum.
    #[error("{path}: corrupt checkpoint data: {reason}")]
    Corrupt {
        /// The object.
        path: String,
        /// What does not match.
        reason: String,
    },
    /// A blob that a manifest references is not in storage.
    #[error("{path}: missing, but checkpoint {checkpoint} references it")]
    Missing {
        /// The blob.
        path: String,
        /// The checkpoint whose chain names it.
        checkpoint: CheckpointRef,
    },
    /// A manifest of a format version newer than this build reads.
    #[error(
        "{path}: written by a newer streamc (manifest format {found}; this build reads up to {supported})"
    )]
    NewerFormat {
        /// The manifest.
        path: String,
        /// Its `format_version`.
        found: u64,
        /// [`FORMAT_VERSION`](super::FORMAT_VERSION).
        supported: u32,
    },
    /// A checkpoint to write that is inconsistent with storage or with its base: an id
    /// that is not fresh, a delta or an unchanged group without a chain to extend, a
    /// base of another instance.
    #[error("cannot write checkpoint {checkpoint}: {reason}")]
    Write {
        /// The checkpoint being written.
        checkpoint: CheckpointRef,
        /// Why not.
        reason: String,
    },
}

/// `Result` with a [`CheckpointError`].
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
