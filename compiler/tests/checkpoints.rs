//! `streamc checkpoints list|inspect` over a store written with the runtime's API.

use std::path::Path;
use std::process::Command;

use streamc_runtime::checkpoint::{
    CheckpointStore, GroupState, Manifest, Mode, NewCheckpoint, OperatorLayout, PartitionPosition,
    SinkPosition, SourcePositions,
};

fn streamc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamc"))
        .args(args)
        .output()
        .expect("running streamc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checkpoint(id: u64, partitions: u32, groups: Vec<(&str, GroupState)>) -> NewCheckpoint {
    NewCheckpoint {
        id,
        created_ms: 1_700_000_000_000 + id as i64 * 1000,
        mode: Mode::ExactlyOnce,
        layout: vec![OperatorLayout {
            name: "views_per_minute".into(),
            fingerprint: "9f3a".into(),
            description: "tumbling 1m by user_id: count, sum".into(),
        }],
        sources: vec![SourcePositions {
            name: "clicks".into(),
            kind: "kafka".into(),
            partitions: (0..partitions)
                .map(|p| PartitionPosition {
                    partition: p,
                    offset: 1000 * id + u64::from(p),
                    watermark: if p == 0 { i64::MIN } else { 1_700_000_000_000 },
                    idle: p == 1,
                })
                .collect(),
        }],
        sinks: vec![SinkPosition {
            name: "out".into(),
            kind: "file".into(),
            position: Some(4096),
        }],
        groups: groups
            .into_iter()
            .map(|(g, s)| (g.to_string(), s))
            .collect(),
        extra: serde_json::json!({"late": 3}),
    }
}

/// Job `page_views`: instance 0 with checkpoints 1 (full) and 2 (delta), instance 1 with
/// checkpoint 2; job `other`: instance 0 with checkpoint 7.
fn sample_storage(dir: &Path) -> Manifest {
    let url = dir.to_str().unwrap();
    let s0 = CheckpointStore::open(url, "page_views", "0").unwrap();
    let m1 = s0
        .write(
            None,
            checkpoint(1, 6, vec![("task", GroupState::Full(vec![7; 2048]))]),
        )
        .unwrap();
    let m2 = s0
        .write(
            Some(&m1),
            checkpoint(2, 6, vec![("task", GroupState::Delta(vec![1; 10]))]),
        )
        .unwrap();
    let s1 = CheckpointStore::open(url, "page_views", "1").unwrap();
    s1.write(
        None,
        checkpoint(2, 2, vec![("s0-p1", GroupState::Full(b"p1".to_vec()))]),
    )
    .unwrap();
    let other = CheckpointStore::open(url, "other", "0").unwrap();
    other
        .write(
            None,
            checkpoint(7, 1, vec![("task", GroupState::Full(b"o".to_vec()))]),
        )
        .unwrap();
    m2
}

#[test]
fn list_shows_one_row_per_checkpoint_of_every_job_and_instance() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let (code, out, err) = streamc(&["checkpoints", "list", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("JOB") && lines[0].contains("SOURCES"),
        "{out}"
    );
    let words: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0][..3], ["other", "0", "7"], "{out}");
    assert_eq!(words[1][..3], ["page_views", "0", "1"], "{out}");
    assert_eq!(words[3][..3], ["page_views", "1", "2"], "{out}");
    // Created time in UTC, mode, sizes (referenced, written), groups, short offsets.
    assert!(lines[3].contains("2023-11-14 22:13:22.000"), "{out}");
    assert!(lines[3].contains("exactly_once"), "{out}");
    assert!(lines[3].contains("2.0 KiB  10 B"), "{out}");
    assert!(
        lines[3].contains("clicks 0:2000 1:2001 2:2002 3:2003 +2"),
        "{out}"
    );
    assert!(lines[4].ends_with("clicks 0:2000 1:2001"), "{out}");

    let (code, out, _) = streamc(&[
        "checkpoints",
        "list",
        &format!("file://{}", d.path().display()),
        "--job",
        "page_views",
        "--instance",
        "0",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().skip(1).all(|l| l.starts_with("page_views  0 ")),
        "{out}"
    );
}

#[test]
fn list_of_an_empty_storage_says_so_and_reports_incomplete_directories() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = streamc(&["checkpoints", "list", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("no checkpoints in"), "{err}");

    let half = d.path().join("job/0/chk-00000000000000000003");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("task.bin"), b"torn").unwrap();
    let (code, _, err) = streamc(&["checkpoints", "list", d.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(err.contains("1 incomplete checkpoint directory"), "{err}");
}

#[test]
fn list_shows_a_corrupt_manifest_as_such_and_goes_on() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let m = d
        .path()
        .join("other/0/chk-00000000000000000007/MANIFEST.json");
    std::fs::write(&m, b"{ not json").unwrap();
    let (code, out, err) = streamc(&["checkpoints", "list", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("other")).unwrap();
    assert!(
        row.contains("unreadable") && row.contains("corrupt"),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        5,
        "the other rows are still shown: {out}"
    );
}

#[test]
fn inspect_shows_offsets_watermarks_sinks_layout_and_chains() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let dir = d.path().to_str().unwrap();
    let (code, out, err) = streamc(&["checkpoints", "inspect", dir, "0/2", "--job", "page_views"]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "checkpoint page_views 0/2",
        "page_views/0/chk-00000000000000000002/MANIFEST.json",
        "created   2023-11-14 22:13:22.000 UTC",
        "mode      exactly_once",
        "offsets committed with it carry `streamc1;ck=0/2`",
        "clicks (kafka)",
        "PARTITION  NEXT OFFSET  WATERMARK",
        "none (no event yet)",
        "1700000000000 (2023-11-14 22:13:20.000 UTC)  yes",
        "out (file): position 4096 bytes",
        "views_per_minute  9f3a  tumbling 1m by user_id: count, sum",
        "task: chain of 2 blobs, 2.0 KiB",
        "full   chk-00000000000000000001/task.bin  2.0 KiB",
        "delta  chk-00000000000000000002/task.bin  10 B",
        "{\"late\":3}",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // The first partition's row, whole.
    assert!(
        out.contains("    0          2000         none (no event yet)"),
        "{out}"
    );
}

#[test]
fn inspect_json_prints_the_manifest_as_stored() {
    let d = tempfile::tempdir().unwrap();
    let m2 = sample_storage(d.path());
    let dir = d.path().to_str().unwrap();
    let (code, out, err) = streamc(&[
        "checkpoints",
        "inspect",
        dir,
        "2",
        "--job",
        "page_views",
        "--instance",
        "0",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let stored = std::fs::read_to_string(
        d.path()
            .join("page_views/0/chk-00000000000000000002/MANIFEST.json"),
    )
    .unwrap();
    assert_eq!(out, stored);
    assert_eq!(Manifest::from_json(out.as_bytes(), "stdout").unwrap(), m2);
}

#[test]
fn inspect_resolves_bare_ids_only_when_unambiguous() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let dir = d.path().to_str().unwrap();
    // Only one checkpoint anywhere has id 7, and only one has id 1.
    let (code, out, err) = streamc(&["checkpoints", "inspect", dir, "7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("checkpoint other 0/7\n"), "{out}");
    let (code, out, _) = streamc(&["checkpoints", "inspect", dir, "1"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("checkpoint page_views 0/1\n"), "{out}");

    let (code, _, err) = streamc(&["checkpoints", "inspect", dir, "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("ambiguous"), "{err}");
    assert!(
        err.contains("page_views/0/2") && err.contains("page_views/1/2"),
        "{err}"
    );
    let (code, out, err) = streamc(&["checkpoints", "inspect", dir, "2", "--instance", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("checkpoint page_views 1/2\n"), "{out}");
}

#[test]
fn inspect_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let dir = d.path().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["9"], "no checkpoint 9 in"),
        (&["x/1"], "no checkpoint 1 in"),
        (&["0/2", "--instance", "1"], "but --instance says `1`"),
        (&["two"], "invalid checkpoint `two`"),
        (&["../0/1"], "invalid checkpoint reference"),
        (&["1", "--job", "a/b"], "invalid job name `a/b`"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["checkpoints", "inspect", dir];
        all.extend(args);
        let (code, _, err) = streamc(&all);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let half = d.path().join("other/0/chk-00000000000000000009");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("task.bin"), b"torn").unwrap();
    let (code, _, err) = streamc(&["checkpoints", "inspect", dir, "0/9", "--job", "other"]);
    assert_eq!(code, 1);
    assert!(err.contains("incomplete (no manifest)"), "{err}");
}

#[test]
fn gc_keeps_the_newest_and_named_checkpoints_and_what_their_chains_use() {
    let d = tempfile::tempdir().unwrap();
    let m2 = sample_storage(d.path());
    let dir = d.path().to_str().unwrap();
    let store = CheckpointStore::open(dir, "page_views", "0").unwrap();
    let m3 = store
        .write(
            Some(&m2),
            checkpoint(3, 6, vec![("task", GroupState::Delta(vec![2; 10]))]),
        )
        .unwrap();
    // A dry run deletes nothing.
    let (code, out, err) = streamc(&[
        "checkpoints",
        "gc",
        dir,
        "--job",
        "page_views",
        "--retain",
        "1",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("page_views/0: would keep 1, would delete checkpoints [1, 2]"),
        "{out}"
    );
    assert_eq!(store.list(Some("0")).unwrap().len(), 3);

    let (code, out, err) = streamc(&[
        "checkpoints",
        "gc",
        dir,
        "--job",
        "page_views",
        "--retain",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("page_views/0: kept [3], deleted checkpoints [1, 2]"),
        "{out}"
    );
    assert!(out.contains("page_views/1: kept [2]"), "{out}");
    let ids: Vec<u64> = store
        .list(Some("0"))
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [3]);
    // Checkpoint 3's chain (the full blob of 1, the deltas of 2 and 3) is whole.
    assert_eq!(
        store.read_chain(&m3, "task").unwrap(),
        [vec![7; 2048], vec![1; 10], vec![2; 10]]
    );
    // The other job is untouched.
    let other = CheckpointStore::open(dir, "other", "0").unwrap();
    assert_eq!(other.list(None).unwrap().len(), 1);

    // --keep names one more to keep; errors are clear.
    let (code, _, err) = streamc(&[
        "checkpoints",
        "gc",
        dir,
        "--job",
        "page_views",
        "--keep",
        "x",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--keep: invalid checkpoint reference `x`"),
        "{err}"
    );
    let (code, _, err) = streamc(&[
        "checkpoints",
        "gc",
        dir,
        "--job",
        "page_views",
        "--retain",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("retain"), "{err}");
    let (code, _, err) = streamc(&["checkpoints", "gc", dir]);
    assert_ne!(code, 0);
    assert!(err.contains("--job"), "{err}");
}

#[test]
fn extreme_values_in_a_manifest_are_shown_not_panicked_on() {
    let d = tempfile::tempdir().unwrap();
    sample_storage(d.path());
    let path = d
        .path()
        .join("page_views/0/chk-00000000000000000002/MANIFEST.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["created_ms"] = i64::MIN.into();
    v["total_bytes"] = u64::MAX.into();
    v["groups"]["task"][0]["bytes"] = u64::MAX.into();
    v["groups"]["task"][1]["bytes"] = u64::MAX.into();
    v["sources"][0]["partitions"][1]["watermark"] = i64::MAX.into();
    std::fs::write(&path, v.to_string()).unwrap();
    let dir = d.path().to_str().unwrap();
    let (code, out, err) = streamc(&["checkpoints", "inspect", dir, "0/2", "--job", "page_views"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("end (+infinity)"), "{out}");
    assert!(out.contains("-9223372036854775808 ms"), "{out}");
    let (code, _, err) = streamc(&["checkpoints", "list", dir]);
    assert_eq!(code, 0, "{err}");
}
