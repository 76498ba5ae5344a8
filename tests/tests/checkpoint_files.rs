//! Checkpoints of a job without Kafka (a paced `datagen` source, file sinks): killed with
//! SIGKILL at random moments (and once inside each checkpoint phase through
//! `STREAMC_FAULT`) and restarted, the result and late files end byte for byte as those
//! of one uninterrupted run: the restore puts the generator back at its position, the
//! windows and watermark back as they were, and the files back to their length at the
//! checkpoint (exactly once for files).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spec(dir: &Path) -> String {
    format!(
        r#"version: 1
name: ckfiles
sources:
  clicks:
    datagen:
      rate: 4000
      keys: 50
      max_delay: 1500ms
      late_fraction: 0.01
      count: 24000
      seed: 11
      start: 2026-01-01T00:00:00Z
    schema: {{ user_id: u64, amount: f64, ts: timestamp }}
    event_time: ts
    watermark: {{ max_out_of_orderness: 1s }}
flows:
  per_user:
    from: clicks
    steps:
      - key_by: [user_id]
      - window: {{ tumbling: 1s, allowed_lateness: 500ms }}
      - aggregate: {{ n: count(), total: sum(amount) }}
    to: [out]
    late: late
  sessions:
    from: clicks
    steps:
      - key_by: [user_id]
      - window: {{ session: {{ gap: 20ms }}, allowed_lateness: 300ms }}
      - aggregate: {{ n: count() }}
    to: [sess]
sinks:
  out: {{ file: {{ path: {out} }} }}
  sess: {{ file: {{ path: {sess} }} }}
  late: {{ file: {{ path: {late} }} }}
checkpoint:
  interval: 200ms
  storage: {ck}
"#,
        out = dir.join("out.jsonl").display(),
        sess = dir.join("sess.jsonl").display(),
        late = dir.join("late.jsonl").display(),
        ck = dir.join("ck").display(),
    )
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

#[test]
fn kills_and_restarts_leave_the_files_of_one_clean_run() {
    let build_dir = tempfile::tempdir().unwrap();
    let clean = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    // One binary for both runs: the paths are overridden per run.
    let spec_path = build_dir.path().join("ckfiles.yaml");
    std::fs::write(&spec_path, spec(clean.path())).unwrap();
    let bin = streamc_tests::build(&spec_path, build_dir.path());
    let args = |dir: &Path| -> Vec<String> {
        vec![
            "--output".into(),
            format!("out={}", dir.join("out.jsonl").display()),
            "--output".into(),
            format!("sess={}", dir.join("sess.jsonl").display()),
            "--output".into(),
            format!("late={}", dir.join("late.jsonl").display()),
            "--checkpoint-storage".into(),
            dir.join("ck").display().to_string(),
        ]
    };
    let status = Command::new(&bin)
        .args(args(clean.path()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let want = (
        read(clean.path(), "out.jsonl"),
        read(clean.path(), "sess.jsonl"),
        read(clean.path(), "late.jsonl"),
    );
    assert!(
        want.0.lines().count() > 500 && !want.2.is_empty(),
        "{want:?}"
    );

    // Kill it at moments spread over the 6 s run, and inside each checkpoint phase.
    let kills: Vec<(Option<Duration>, Option<&str>)> = vec![
        (Some(Duration::from_millis(900)), None),
        (None, Some("checkpoint.blobs@2")),
        (Some(Duration::from_millis(700)), None),
        (None, Some("checkpoint.manifest@1")),
        (None, Some("checkpoint.start@3")),
        (Some(Duration::from_millis(1300)), None),
        (None, Some("checkpoint.commit@2")),
        (None, Some("restore@1")),
        (None, Some("record@3000")),
    ];
    let mut log = String::new();
    for (after, fault) in kills {
        let mut cmd = Command::new(&bin);
        cmd.args(args(crashed.path())).stderr(Stdio::null());
        if let Some(f) = fault {
            cmd.env("STREAMC_FAULT", f);
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        if let Some(after) = after {
            std::thread::sleep(after);
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        log += &format!(
            "{after:?} {fault:?}: {status:?} after {:?}\n",
            started.elapsed()
        );
    }
    let status = Command::new(&bin)
        .args(args(crashed.path()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{log}");
    let got = (
        read(crashed.path(), "out.jsonl"),
        read(crashed.path(), "sess.jsonl"),
        read(crashed.path(), "late.jsonl"),
    );
    for (name, w, g) in [
        ("results", &want.0, &got.0),
        ("sessions", &want.1, &got.1),
        ("late", &want.2, &got.2),
    ] {
        if w != g {
            let first = w
                .lines()
                .zip(g.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(w.lines().count().min(g.lines().count()));
            panic!(
                "{name}: the restarted runs' file differs from the clean run's at line {first} \
                 ({} lines vs {}):\n  want {:?}\n  got  {:?}\nruns:\n{log}",
                w.lines().count(),
                g.lines().count(),
                w.lines().nth(first),
                g.lines().nth(first)
            );
        }
    }
}
