//! The `streamc` command line: exit codes and what a user sees.

use std::process::Command;

fn streamc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamc"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running streamc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_valid_spec() {
    let (code, out, _) = streamc(&["check", "pipelines/tumbling.yaml"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok (1 sources, 1 flows, 2 sinks)"), "{out}");
}

#[test]
fn check_reports_every_error_with_position_and_fails() {
    let (code, _, err) = streamc(&["check", "pipelines/errors/90_three_mistakes.yaml"]);
    assert_eq!(code, 1, "{err}");
    let positions = err
        .matches("[pipelines/errors/90_three_mistakes.yaml:")
        .count();
    assert!(positions >= 3, "{err}");
}

#[test]
fn explain_prints_both_plans() {
    let (code, out, err) = streamc(&["explain", "pipelines/chained.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Logical plan of `chained`"), "{out}");
    assert!(out.contains("Fused plan (2 stages)"), "{out}");
    // The stateless flow and the windowed flow reading it share one fused stage.
    assert!(
        out.contains("flow big_orders: filter -> map(1) -> emit [big]"),
        "{out}"
    );
}

#[test]
fn build_of_an_unsupported_form_is_a_clear_error_not_rustc_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pv");
    // Exactly-once Kafka output without a Kafka source: a form `streamc check` rejects.
    let spec = dir.path().join("eo.yaml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/tumbling.yaml"),
    )
    .unwrap();
    let sinks = text.find("\nsinks:").expect("tumbling.yaml has sinks");
    let text = format!(
        "{}\ncheckpoint: {{interval: 10s, storage: {}}}\nsinks:\n  k: {{kafka: {{topic: t}}}}\n{}",
        &text[..sinks],
        dir.path().join("ck").display(),
        &text[sinks + "\nsinks:\n".len()..]
    );
    let text = text.replacen("to: [", "to: [k, ", 1);
    std::fs::write(&spec, text).unwrap();
    let (code, _, err) = streamc(&["build", spec.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    // `streamc check`'s located errors, before anything is generated.
    assert!(
        err.contains("exactly-once Kafka output needs a Kafka source in this version of streamc"),
        "{err}"
    );
    assert!(err.contains("eo.yaml:"), "{err}");
    assert!(!err.contains("error[E"), "no rustc error codes: {err}");
    assert!(!out.exists());
}
