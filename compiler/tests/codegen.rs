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
        let checked = match streamc::check::check_file(&spec) {
            Ok(c) => c,
            Err(d) => panic!("{name}: {}", streamc::diag::render(&d, false)),
        };
        insta::assert_snapshot!(
            format!("explain_{name}"),
            redact(&streamc::ir::explain(&checked.plan))
        );
        match streamc::codegen::generate_main(&checked.plan) {
            Ok(code) => insta::assert_snapshot!(format!("generated_{name}"), redact(&code)),
            Err(streamc::codegen::CodegenError::Unsupported(msg)) => {
                // Only the specs that need the Kafka/Redis issues.
                assert!(
                    msg.contains("Kafka") || msg.contains("Redis"),
                    "{name}: {msg}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
