//! What this build of streamc can run. A spec form that the language defines but the
//! runtime does not implement yet is a located error of `streamc check`, never a setting
//! accepted and then ignored (Architecture Invariant: a spec setting the build cannot
//! honour is an error).
//!
//! When a form gets implemented, its entry here goes; `compiler/tests/settings.rs` checks
//! that every setting a plan carries either changes the generated crate or is rejected.

use crate::diag::Diagnostic;
use crate::spec::ast::{CheckpointMode, SinkBody, SourceKindDecl, Spec};

use super::Checker;

impl Checker<'_> {
    /// Reports every form of `spec` that this build cannot run.
    pub(super) fn not_in_this_build(&mut self, spec: &Spec) {
        if let Some(c) = &spec.checkpoint {
            let exactly_once = c
                .mode
                .as_ref()
                .is_none_or(|m| m.value == CheckpointMode::ExactlyOnce);
            let kafka_source = spec
                .sources
                .iter()
                .any(|s| matches!(s.kind, Some(SourceKindDecl::Kafka { .. })));
            let kafka_output = spec
                .sinks
                .iter()
                .filter_map(|s| s.body.as_ref())
                .chain(spec.dead_letter.iter().map(|d| &d.value))
                .any(|b| matches!(b, SinkBody::Kafka { .. }));
            let other_source = spec
                .sources
                .iter()
                .any(|s| !matches!(s.kind, Some(SourceKindDecl::Kafka { .. }) | None));
            if kafka_source && other_source {
                self.error(
                    Diagnostic::error(
                        "a job with checkpoints reads either only Kafka sources or none in this version of streamc",
                    )
                    .label(c.span, "checkpoints")
                    .help(
                        "a Kafka source resumes from the checkpoint its committed offsets name, a file or \
                         datagen source from the newest one: split the job in two",
                    ),
                );
            }
            if exactly_once && kafka_output && !kafka_source {
                let at = c.mode.as_ref().map_or(c.span, |m| m.span);
                self.error(
                    Diagnostic::error(
                        "exactly-once Kafka output needs a Kafka source in this version of streamc",
                    )
                    .label(at, "exactly once (the default)")
                    .help(
                        "a Kafka transaction commits the outputs together with the consumed offsets, \
                         which say which checkpoint they belong to; write `mode: at_least_once` \
                         (outputs may repeat after a crash) or read from Kafka",
                    ),
                );
            }
        }
    }
}
