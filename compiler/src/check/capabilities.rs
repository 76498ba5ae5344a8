//! What this build of streamc can run. A spec form that the language defines but the
//! runtime does not implement yet is a located error of `streamc check`, never a setting
//! accepted and then ignored (Architecture Invariant: a spec setting the build cannot
//! honour is an error).
//!
//! When a form gets implemented, its entry here goes; `compiler/tests/settings.rs` checks
//! that every setting a plan carries either changes the generated crate or is rejected.

use crate::diag::Diagnostic;
use crate::spec::ast::{Spec, StateBackend};

use super::Checker;

impl Checker<'_> {
    /// Reports every form of `spec` that this build cannot run.
    pub(super) fn not_in_this_build(&mut self, spec: &Spec) {
        if let Some(c) = &spec.checkpoint {
            self.error(
                Diagnostic::error("checkpoints are not in this version of streamc yet")
                    .label(c.span, "not implemented")
                    .help(
                        "remove `checkpoint:`; Kafka jobs commit offsets only for records whose \
                         windows have fired (at-least-once)",
                    ),
            );
        }
        if let Some(s) = &spec.state
            && s.backend.value == StateBackend::RocksDb
        {
            self.error(
                Diagnostic::error(
                    "the RocksDB state backend is not in this version of streamc yet",
                )
                .label(s.backend.span, "not implemented")
                .help("write `backend: memory` (or remove `state:`): state is kept in memory"),
            );
        }
    }
}
