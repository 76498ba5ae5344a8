//! Helpers shared by the end-to-end tests in `tests/tests/`: build a spec from
//! `pipelines/` into a temporary directory, run the binary with its file sinks
//! redirected there, and read the results back as an upsert view.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// `pipelines/<name>`.
pub fn pipeline(name: &str) -> PathBuf {
    root().join("pipelines").join(name)
}

/// Checks and builds a spec; the binary lands in `dir`.
pub fn build(spec: &Path, dir: &Path) -> PathBuf {
    let checked = match streamc::check::check_file(spec) {
        Ok(c) => c,
        Err(d) => panic!(
            "{} does not check:\n{}",
            spec.display(),
            streamc::diag::render(&d, false)
        ),
    };
    let out = dir.join(&checked.plan.name);
    let built = streamc::build::build(
        &checked.plan,
        &streamc::build::BuildOptions {
            output: Some(out),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("building {}: {e}", spec.display()));
    built.binary
}

/// Runs a built pipeline with extra flags; fails the test on a non-zero exit.
pub fn run(binary: &Path, args: &[String]) -> Output {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{} {:?} exited with {}\nstderr:\n{}",
        binary.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `--output SINK=DIR/SINK.jsonl` for each sink name.
pub fn outputs(dir: &Path, sinks: &[&str]) -> Vec<String> {
    sinks
        .iter()
        .flat_map(|s| {
            [
                "--output".to_string(),
                format!("{s}={}", dir.join(format!("{s}.jsonl")).display()),
            ]
        })
        .collect()
}

/// Every line of a JSON-lines file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The final result of a windowed flow's output read as an upsert stream keyed by
/// (key fields, window_start, window_end), retracted rows deleting their key.
pub fn upsert_view(rows: &[Value], key_fields: &[&str]) -> BTreeMap<String, Value> {
    let mut view = BTreeMap::new();
    for r in rows {
        let mut key: Vec<String> = key_fields.iter().map(|k| r[*k].to_string()).collect();
        key.push(r["window_start"].to_string());
        key.push(r["window_end"].to_string());
        let key = key.join("|");
        if r.get("retracted") == Some(&Value::Bool(true)) {
            view.remove(&key);
        } else {
            view.insert(key, r.clone());
        }
    }
    view
}
