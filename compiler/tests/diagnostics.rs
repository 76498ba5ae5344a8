//! Snapshots of the rendered diagnostics for every spec in `pipelines/errors/`: one
//! mistake per file (the `*three_mistakes*` file has three, all reported). A change in
//! wording or in where an error points shows up as a reviewable diff.

use std::path::{Path, PathBuf};

use streamc::check::{check_source, render};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn error_specs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("pipelines/errors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_error_spec_is_rejected_with_pointed_diagnostics() {
    let names = error_specs();
    assert!(names.len() >= 19, "pipelines/errors has the error fixtures");
    for name in names {
        let rel = format!("pipelines/errors/{name}");
        let text = std::fs::read_to_string(repo().join(&rel)).unwrap();
        // The path as a user gives it: relative, so that snapshots hold no machine path.
        let diags = match check_source(Path::new(&rel), &text) {
            Ok(_) => panic!("{rel} should not check"),
            Err(d) => d,
        };
        let expected = if name.contains("three_mistakes") {
            3
        } else {
            1
        };
        let rendered = render(&diags, false);
        assert_eq!(diags.len(), expected, "{rel}:\n{rendered}");
        for e in &diags {
            let (line, col) = e
                .line_col()
                .unwrap_or_else(|| panic!("{rel}: `{}` points nowhere", e.message()));
            assert!(
                rendered.contains(&format!("[{rel}:{line}:{col}]")),
                "{rel}: no file:line:col for `{}`:\n{rendered}",
                e.message()
            );
        }
        let stem = name.trim_end_matches(".yaml").to_string();
        insta::assert_snapshot!(stem, rendered);
    }
}

#[test]
fn colors_are_only_used_when_asked() {
    let rel = "pipelines/errors/01_unknown_field.yaml";
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    let d = check_source(Path::new(rel), &text).unwrap_err();
    assert!(!render(&d, false).contains('\u{1b}'));
    assert!(render(&d, true).contains('\u{1b}'));
}
