//! Snapshots of the generated code and of `streamc explain` for every pipeline in
//! `pipelines/` (machine paths redacted). A change in generated code shows up here as a
//! reviewable diff.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn specs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Rewrites the machine's repository path in every file path of the plan to `/ROOT`
/// before generating, so the snapshot (including line wrapping) does not depend on
/// where the repository is checked out.
fn normalize(plan: &mut streamc::plan::Plan) {
    use streamc::plan::{SinkKind, SourceKind};
    let root = root();
    let fix = |p: &mut std::path::PathBuf| {
        if let Ok(rest) = p.strip_prefix(&root) {
            *p = Path::new("/ROOT").join(rest);
        }
    };
    let fix_sink = |k: &mut SinkKind| {
        if let SinkKind::File { path } = k {
            fix(path);
        }
    };
    fix(&mut plan.spec_path);
    for s in &mut plan.sources {
        if let SourceKind::File { path } = &mut s.kind {
            fix(path);
        }
        fix_sink(&mut s.default_dead_letter);
    }
    for s in &mut plan.sinks {
        fix_sink(&mut s.kind);
    }
    if let Some(k) = &mut plan.dead_letter {
        fix_sink(k);
    }
}

fn redact(s: &str) -> String {
    s.replace(&root().display().to_string(), "[ROOT]").replace(
        &streamc::build::runtime_dir().display().to_string(),
        "[ROOT]/runtime",
    )
}

#[test]
fn every_pipeline_checks_and_generates() {
    let specs = specs();
    assert!(specs.len() >= 6, "pipelines/ has the example specs");
    for spec in specs {
        let name = spec.file_stem().unwrap().to_string_lossy().into_owned();
        // Ungated: a form `streamc check` rejects would still be explained, and code
        // generation would refuse it (none of the examples has one).
        let text = std::fs::read_to_string(&spec).unwrap();
        let mut checked = match streamc::check::check_source_ungated(&spec, &text) {
            Ok(c) => c,
            Err(d) => panic!("{name}: {}", streamc::diag::render(&d, false)),
        };
        normalize(&mut checked.plan);
        insta::assert_snapshot!(
            format!("explain_{name}"),
            redact(&streamc::ir::explain(&checked.plan))
        );
        match streamc::codegen::generate_main(&checked.plan) {
            Ok(code) => insta::assert_snapshot!(format!("generated_{name}"), redact(&code)),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
