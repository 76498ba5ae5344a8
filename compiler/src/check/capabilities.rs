//! What this build of streamc can run. A spec form that the language defines but the
//! runtime does not implement yet is a located error of `streamc check`, never a setting
//! accepted and then ignored (Architecture Invariant: a spec setting the build cannot
//! honour is an error).
//!
//! When a form gets implemented, its entry here goes; `compiler/tests/settings.rs` checks
//! that every setting a plan carries either changes the generated crate or is rejected.

use crate::diag::Diagnostic;
use crate::spec::ast::{SinkBody, Spec, StateBackend};

use super::Checker;

impl Checker<'_> {
    /// Reports every form of `spec` that this build cannot run.
    pub(super) fn not_in_this_build(&mut self, spec: &Spec) {
        for s in &spec.sinks {
            if let Some(SinkBody::Redis { .. }) = &s.body {
                self.error(
                    Diagnostic::error(format!(
                        "sink `{}`: the Redis sink is not in this version of streamc yet",
                        s.name.value
                    ))
                    .label(s.name.span, "writes to Redis")
                    .help("write the results to Kafka, a file or stdout for now"),
                );
            }
        }
        if let Some(d) = &spec.dead_letter
            && let SinkBody::Redis { .. } = d.value
        {
            self.error(
                Diagnostic::error(
                    "the Redis sink is not in this version of streamc yet (dead letters)",
                )
                .label(d.span, "writes to Redis")
                .help("write dead letters to Kafka, a file or stdout"),
            );
        }
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
