//! The semantic front end: resolves names, checks step order and types every expression
//! of a decoded spec, and produces the checked [`Plan`].
//!
//! Architecture invariant: `check_source` returns a plan only when no error was found,
//! and then every name in it is resolved and every expression typed (`plan.rs`). All
//! errors of a spec are reported at once; parts that depend on an erroneous part are
//! checked as far as possible without reporting follow-on errors.

mod aggregates;
mod capabilities;
mod flows;
mod functions;
mod sinks;
mod sources;
mod typeck;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::diag::Reporter;
use crate::plan::{CheckpointPlan, Plan, ServePlan, StatePlan};
use crate::spec::ast::{CheckpointMode, Spec, StateBackend};
use crate::spec::{self};

pub use crate::diag::{Diagnostic, Diagnostics, render, render_diagnostic};

/// A spec that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub plan: Plan,
    /// Warnings (unused sources and sinks, comparisons with NULL, ...): render each with
    /// [`crate::diag::render_diagnostic`].
    pub warnings: Vec<Diagnostic>,
    /// Facts the build reports, such as where invalid events go by default.
    pub notes: Vec<String>,
}

/// Reads, parses, validates and type-checks a spec file. All errors at once.
pub fn check_file(path: &Path) -> Result<Checked, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => check_source(path, &text),
        Err(e) => {
            let shown = path.display().to_string();
            Err(Diagnostics::new(
                &shown,
                vec![Diagnostic::error(format!("cannot read `{shown}`: {e}"))],
            ))
        }
    }
}

/// Same, from text (`path` is used for messages and to resolve relative file paths
/// against its directory).
pub fn check_source(path: &Path, text: &str) -> Result<Checked, Diagnostics> {
    check_with(path, text, true)
}

/// [`check_source`] without the last gate: the plan of a spec as the language defines
/// it, including forms this build of streamc cannot run yet (`capabilities.rs`). For
/// tests of the front end and for tools that only read plans; `streamc check`, `build`
/// and `explain` use [`check_source`].
pub fn check_source_ungated(path: &Path, text: &str) -> Result<Checked, Diagnostics> {
    check_with(path, text, false)
}

fn check_with(path: &Path, text: &str, gate: bool) -> Result<Checked, Diagnostics> {
    let shown = path.display().to_string();
    let mut rep = Reporter::new(&shown, Arc::new(text.to_string()));
    let spec_path = absolute(path);
    let spec_dir = spec_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut checker = Checker {
        rep: &mut rep,
        spec_dir,
        pipeline: String::new(),
        notes: Vec::new(),
        gate,
    };
    let plan = spec::parse(checker.rep).and_then(|s| checker.check(&s, spec_path));
    let notes = std::mem::take(&mut checker.notes);
    let (errors, warnings) = rep.finish();
    if !errors.is_empty() {
        return Err(Diagnostics::new(&shown, errors));
    }
    match plan {
        Some(plan) => Ok(Checked {
            plan,
            warnings,
            notes,
        }),
        // Unreachable by construction; never panic on user input.
        None => Err(Diagnostics::new(
            &shown,
            vec![Diagnostic::error(
                "internal error: the spec has no errors but no plan was produced (a streamc bug)",
            )],
        )),
    }
}

/// `path` made absolute (against the current directory) and lexically normalized.
fn absolute(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    normalize(&abs)
}

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !matches!(
                    out.components().next_back(),
                    Some(Component::Normal(_)) | None
                ) || !out.pop()
                {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) struct Checker<'r> {
    rep: &'r mut Reporter,
    /// Absolute directory of the spec: relative paths are resolved against it.
    spec_dir: PathBuf,
    /// The pipeline name ("" when missing or invalid; then there is an error anyway).
    pipeline: String,
    notes: Vec<String>,
    /// Report the forms this build cannot run (`capabilities.rs`).
    gate: bool,
}

impl Checker<'_> {
    fn error(&mut self, d: Diagnostic) {
        self.rep.push(d);
    }

    /// A path of the spec, absolute.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.spec_dir.join(p))
        }
    }

    fn check(&mut self, spec: &Spec, spec_path: PathBuf) -> Option<Plan> {
        self.pipeline = spec
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_default();
        let sources = self.sources(spec);
        let sink_table = self.sinks(spec);
        let flows = self.flows(spec, &sources, &sink_table);
        self.redis_sinks(spec, &flows);
        self.unused(spec);
        let dead_letter = spec.dead_letter.as_ref().map(|d| self.sink_kind(&d.value));
        let checkpoint = spec.checkpoint.as_ref().and_then(|c| {
            let storage = self.checkpoint_storage(&c.storage)?;
            let s3 = self.s3_options(c, &storage);
            Some(CheckpointPlan {
                interval: c.interval,
                storage,
                s3,
                exactly_once: c
                    .mode
                    .as_ref()
                    .is_none_or(|m| m.value == CheckpointMode::ExactlyOnce),
                retain: c.retain,
            })
        });
        let state = match &spec.state {
            None => StatePlan::Memory,
            Some(s) => match s.backend.value {
                StateBackend::Memory => {
                    if let Some(p) = &s.path {
                        self.rep.push(
                            Diagnostic::warning("`path` is ignored with the memory state backend")
                                .label(p.span, "not used")
                                .help("write `backend: rocksdb` to keep state on disk"),
                        );
                    }
                    StatePlan::Memory
                }
                StateBackend::RocksDb => {
                    let path = match &s.path {
                        Some(p) => self.resolve(&p.value),
                        None => {
                            let p = self.spec_dir.join(format!("{}-state", self.pipeline));
                            self.notes
                                .push(format!("RocksDB state is kept in {}", p.display()));
                            p
                        }
                    };
                    StatePlan::RocksDb { path }
                }
            },
        };
        let serve = spec.serve.as_ref().map(|s| {
            if !flows.iter().any(|f| f.window.is_some()) {
                self.rep.push(
                    Diagnostic::warning("`serve` has nothing to show: no flow has a window")
                        .label(s.span, "the dashboard shows window results")
                        .help("give a flow a `window` and an `aggregate`, or remove `serve`"),
                );
            }
            ServePlan {
                listen: s.listen.clone(),
                keep: s.keep,
            }
        });
        let mut sources = self.finish_sources(sources, &flows, dead_letter.is_some());
        // Only a spec that is otherwise right learns what this build cannot run yet.
        if self.gate && !self.rep.has_errors() {
            self.not_in_this_build(spec);
        }
        if self.rep.has_errors() || spec.name.is_none() {
            return None;
        }
        let flows: Vec<_> = flows.into_iter().map(|f| f.plan).collect::<Option<_>>()?;
        let sinks: Vec<_> = sink_table
            .into_iter()
            .map(|s| s.plan)
            .collect::<Option<_>>()?;
        let sources: Vec<_> = sources.drain(..).map(|s| s.plan).collect::<Option<_>>()?;
        Some(Plan {
            name: self.pipeline.clone(),
            spec_path,
            sources,
            flows,
            sinks,
            dead_letter,
            checkpoint,
            state,
            serve,
        })
    }
}

#[cfg(test)]
mod tests;
