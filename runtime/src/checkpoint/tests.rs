//! Tests of the store and its collection, over real files in a temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use proptest::prelude::*;

use super::paths::{self, MANIFEST};
use super::*;

fn store_at(dir: &std::path::Path, instance: &str) -> CheckpointStore {
    CheckpointStore::open(dir.to_str().unwrap(), "job", instance).unwrap()
}

fn ck(id: u64, groups: Vec<(&str, GroupState)>) -> NewCheckpoint {
    NewCheckpoint {
        id,
        created_ms: 1_700_000_000_000 + id as i64,
        mode: Mode::ExactlyOnce,
        sources: vec![SourcePositions {
            name: "clicks".into(),
            kind: "kafka".into(),
            partitions: vec![PartitionPosition {
                partition: 0,
                offset: id * 10,
                watermark: id as i64,
                idle: false,
            }],
        }],
        groups: groups
            .into_iter()
            .map(|(g, s)| (g.to_string(), s))
            .collect(),
        ..NewCheckpoint::default()
    }
}

fn full(b: &[u8]) -> GroupState {
    GroupState::Full(b.to_vec())
}

fn delta(b: &[u8]) -> GroupState {
    GroupState::Delta(b.to_vec())
}

/// Every file under `dir`, relative, with `/` separators.
fn files(dir: &std::path::Path) -> BTreeSet<String> {
    fn walk(root: &std::path::Path, at: &std::path::Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(at) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_store_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CheckpointStore>();
    send_sync::<Box<dyn Storage>>();
}

#[test]
fn write_then_read_chains_of_full_delta_and_unchanged_groups() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    assert_eq!(s.next_id().unwrap(), 1);
    assert_eq!(s.latest().unwrap(), None);

    let m1 = s
        .write(
            None,
            ck(1, vec![("task", full(b"T1")), ("s0-p0", full(b"P1"))]),
        )
        .unwrap();
    assert_eq!((m1.total_bytes, m1.written_bytes), (4, 4));
    let m2 = s
        .write(
            Some(&m1),
            ck(
                2,
                vec![("task", delta(b"t2")), ("s0-p0", GroupState::Unchanged)],
            ),
        )
        .unwrap();
    assert_eq!(
        s.read_chain(&m2, "task").unwrap(),
        [b"T1".to_vec(), b"t2".to_vec()]
    );
    assert_eq!(s.read_chain(&m2, "s0-p0").unwrap(), [b"P1".to_vec()]);
    assert_eq!(m2.chain("s0-p0")[0].path, paths::blob_path(1, "s0-p0"));
    assert_eq!((m2.total_bytes, m2.written_bytes), (6, 2));
    assert_eq!(s.read_chain(&m2, "absent").unwrap(), Vec::<Vec<u8>>::new());

    // A group left out is dropped; a full snapshot restarts the chain.
    let m3 = s
        .write(Some(&m2), ck(3, vec![("task", full(b"T3"))]))
        .unwrap();
    assert_eq!(m3.groups.keys().collect::<Vec<_>>(), ["task"]);
    assert_eq!(m3.chain_len("task"), 1);
    assert_eq!(s.read_chain(&m3, "task").unwrap(), [b"T3".to_vec()]);

    assert_eq!(s.latest().unwrap().as_ref(), Some(&m3));
    assert_eq!(
        s.get(&CheckpointRef::new("0", 2)).unwrap().as_ref(),
        Some(&m2)
    );
    assert_eq!(s.get(&CheckpointRef::new("0", 9)).unwrap(), None);
    assert_eq!(s.list(None).unwrap(), [m1, m2, m3]);
    assert_eq!(s.next_id().unwrap(), 4);
    // The manifest on disk is the returned one.
    let on_disk = fs::read(
        d.path()
            .join("job/0/chk-00000000000000000003/MANIFEST.json"),
    )
    .unwrap();
    assert_eq!(
        Manifest::from_json(&on_disk, "m").unwrap(),
        s.latest().unwrap().unwrap()
    );
}

#[test]
fn a_crash_after_the_blobs_and_before_the_manifest_leaves_the_previous_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    let m1 = s.write(None, ck(1, vec![("task", full(b"one"))])).unwrap();
    // Checkpoint 2 crashed: its blobs are written, its manifest is not.
    s.storage()
        .put("job/0/chk-00000000000000000002/task.bin", b"half")
        .unwrap();
    assert_eq!(s.latest().unwrap().as_ref(), Some(&m1));
    assert_eq!(s.get(&CheckpointRef::new("0", 2)).unwrap(), None);
    assert!(s.list(None).unwrap().iter().all(|m| m.id != 2));
    assert_eq!(s.next_id().unwrap(), 3, "the half-written id is not reused");
    let refused = s
        .write(Some(&m1), ck(2, vec![("task", full(b"x"))]))
        .unwrap_err();
    assert!(
        matches!(refused, CheckpointError::Write { .. }),
        "{refused}"
    );
    assert_eq!(
        fs::read(d.path().join("job/0/chk-00000000000000000002/task.bin")).unwrap(),
        b"half",
        "never overwritten"
    );

    let m3 = s
        .write(Some(&m1), ck(3, vec![("task", delta(b"three"))]))
        .unwrap();
    assert_eq!(s.latest().unwrap().as_ref(), Some(&m3));
    // Planning decides what collecting does, and deletes nothing.
    let before = files(d.path());
    let plan = s.plan_collect(1, &[]).unwrap();
    assert_eq!(files(d.path()), before);
    let report = s.collect(1, &[]).unwrap();
    assert_eq!(plan, report);
    assert_eq!(report.kept, [3]);
    assert_eq!(report.deleted, [1]);
    // 1's manifest, and 2's blob with its directory; 1's blob stays for 3's chain.
    assert_eq!(report.deleted_objects, 2);
    assert_eq!(
        files(d.path()),
        BTreeSet::from([
            "job/0/chk-00000000000000000001/task.bin".to_string(),
            "job/0/chk-00000000000000000003/task.bin".into(),
            "job/0/chk-00000000000000000003/MANIFEST.json".into(),
        ])
    );
    assert_eq!(
        s.read_chain(&m3, "task").unwrap(),
        [b"one".to_vec(), b"three".to_vec()]
    );
    assert_eq!(s.next_id().unwrap(), 4);
}

#[test]
fn writes_that_do_not_fit_their_base_are_refused_before_writing_anything() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    let other = store_at(d.path(), "1");
    let m1 = s.write(None, ck(1, vec![("task", full(b"a"))])).unwrap();
    let o1 = other
        .write(None, ck(1, vec![("task", full(b"b"))]))
        .unwrap();
    let before = files(d.path());
    let cases = [
        (
            "delta without base",
            None,
            ck(2, vec![("task", delta(b"x"))]),
        ),
        (
            "unchanged without chain",
            Some(&m1),
            ck(2, vec![("s0-p1", GroupState::Unchanged)]),
        ),
        (
            "delta of a new group",
            Some(&m1),
            ck(2, vec![("s0-p1", delta(b"x"))]),
        ),
        (
            "another instance's base",
            Some(&o1),
            ck(2, vec![("task", GroupState::Unchanged)]),
        ),
        (
            "base not older",
            Some(&m1),
            ck(1, vec![("task", full(b"x"))]),
        ),
        ("id not fresh", None, ck(1, vec![("task", full(b"x"))])),
    ];
    for (what, base, new) in cases {
        let e = s.write(base, new).unwrap_err();
        assert!(matches!(e, CheckpointError::Write { .. }), "{what}: {e}");
        assert!(
            e.to_string().starts_with("cannot write checkpoint 0/"),
            "{what}: {e}"
        );
    }
    let bad_group = s
        .write(None, ck(2, vec![("../x", full(b"x"))]))
        .unwrap_err();
    assert!(matches!(
        bad_group,
        CheckpointError::BadName {
            what: "key group",
            ..
        }
    ));
    assert_eq!(files(d.path()), before);
}

#[test]
fn corrupt_truncated_and_missing_blobs_are_errors_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    let m = s
        .write(None, ck(1, vec![("task", full(b"abcdef"))]))
        .unwrap();
    let blob = d.path().join("job/0/chk-00000000000000000001/task.bin");
    let name = blob.display().to_string();

    fs::write(&blob, b"abcdeX").unwrap();
    let e = s.read_chain(&m, "task").unwrap_err();
    assert!(
        matches!(e, CheckpointError::Corrupt { .. }) && e.to_string().contains(&name),
        "{e}"
    );
    assert!(e.to_string().contains("xxh3"), "{e}");

    fs::write(&blob, b"abc").unwrap();
    let e = s.read_chain(&m, "task").unwrap_err();
    assert!(
        e.to_string().contains("3 bytes, checkpoint 0/1 says 6"),
        "{e}"
    );

    fs::remove_file(&blob).unwrap();
    let e = s.read_chain(&m, "task").unwrap_err();
    assert!(
        matches!(e, CheckpointError::Missing { .. }) && e.to_string().contains(&name),
        "{e}"
    );
}

#[test]
fn corrupt_or_misplaced_manifests_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    s.write(None, ck(1, vec![("task", full(b"a"))])).unwrap();
    let dir = d.path().join("job/0");
    let m1 = dir.join("chk-00000000000000000001").join(MANIFEST);
    // A manifest copied into another checkpoint's directory contradicts its place.
    fs::create_dir_all(dir.join("chk-00000000000000000002")).unwrap();
    fs::copy(&m1, dir.join("chk-00000000000000000002").join(MANIFEST)).unwrap();
    let e = s.latest().unwrap_err();
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("manifest of job/0/1"), "{e}");

    fs::write(
        dir.join("chk-00000000000000000002").join(MANIFEST),
        b"{\"trunc",
    )
    .unwrap();
    let e = s.get(&CheckpointRef::new("0", 2)).unwrap_err();
    assert!(
        e.to_string()
            .contains("chk-00000000000000000002/MANIFEST.json: corrupt"),
        "{e}"
    );
    assert!(s.list(None).is_err());
    // next_id does not read manifests: a corrupt one still takes its id.
    assert_eq!(s.next_id().unwrap(), 3);
}

#[test]
fn checkpoints_of_other_instances_are_readable_and_never_collected() {
    let d = tempfile::tempdir().unwrap();
    let a = store_at(d.path(), "a");
    let b = store_at(d.path(), "b");
    let b1 = b
        .write(None, ck(1, vec![("s0-p1", full(b"from b"))]))
        .unwrap();
    let b2 = b
        .write(Some(&b1), ck(2, vec![("s0-p1", GroupState::Unchanged)]))
        .unwrap();
    let mut prev = None;
    for id in 1..=4 {
        prev = Some(
            a.write(prev.as_ref(), ck(id, vec![("task", full(b"x"))]))
                .unwrap(),
        );
    }
    // Instance a restores b's partition state (a rebalance moved it).
    let got = a.get(&CheckpointRef::new("b", 2)).unwrap().unwrap();
    assert_eq!(a.read_chain(&got, "s0-p1").unwrap(), [b"from b".to_vec()]);
    assert_eq!(a.list(Some("b")).unwrap(), [b1.clone(), b2.clone()]);
    assert_eq!(a.list(None).unwrap().len(), 6);

    let b_files: BTreeSet<_> = files(d.path())
        .into_iter()
        .filter(|f| f.starts_with("job/b/"))
        .collect();
    // A reference to b's checkpoint keeps nothing of a's and deletes nothing of b's.
    let report = a
        .collect(
            1,
            &[CheckpointRef::new("b", 1), CheckpointRef::new("a", 99)],
        )
        .unwrap();
    assert_eq!(report.kept, [4]);
    assert_eq!(report.deleted, [1, 2, 3]);
    let after: BTreeSet<_> = files(d.path())
        .into_iter()
        .filter(|f| f.starts_with("job/b/"))
        .collect();
    assert_eq!(after, b_files);
    assert_eq!(b.latest().unwrap(), Some(b2));
}

#[test]
fn collect_keeps_the_newest_and_named_checkpoints_and_what_they_reference() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    // 1 full; 2..=5 deltas; 6 full: 5's chain is 1,2,3,4,5 and 6's is 6 alone.
    let mut m = s.write(None, ck(1, vec![("task", full(b"1"))])).unwrap();
    let mut all = vec![m.clone()];
    for id in 2..=5 {
        m = s
            .write(
                Some(&m),
                ck(id, vec![("task", delta(id.to_string().as_bytes()))]),
            )
            .unwrap();
        all.push(m.clone());
    }
    let m6 = s
        .write(Some(&m), ck(6, vec![("task", full(b"6"))]))
        .unwrap();
    // A half-written 7 is newer than the newest complete: left alone.
    s.storage()
        .put("job/0/chk-00000000000000000007/task.bin", b"wip")
        .unwrap();

    let report = s.collect(1, &[CheckpointRef::new("0", 3)]).unwrap();
    assert_eq!(report.kept, [3, 6]);
    assert_eq!(report.deleted, [1, 2, 4, 5]);
    assert_eq!(
        s.read_chain(&all[2], "task").unwrap(),
        [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(s.read_chain(&m6, "task").unwrap(), [b"6".to_vec()]);
    let left = files(d.path());
    let expect: BTreeSet<String> = [
        "chk-00000000000000000001/task.bin",
        "chk-00000000000000000002/task.bin",
        "chk-00000000000000000003/task.bin",
        "chk-00000000000000000003/MANIFEST.json",
        "chk-00000000000000000006/task.bin",
        "chk-00000000000000000006/MANIFEST.json",
        "chk-00000000000000000007/task.bin",
    ]
    .iter()
    .map(|f| format!("job/0/{f}"))
    .collect();
    assert_eq!(left, expect);
    assert!(
        !d.path().join("job/0/chk-00000000000000000004").exists(),
        "whole directories go"
    );

    // keep_newest 0 still keeps the newest; collecting again changes nothing more.
    let again = s.collect(0, &[]).unwrap();
    assert_eq!(again.kept, [6]);
    assert_eq!(again.deleted, [3]);
    assert_eq!(s.next_id().unwrap(), 8);
    assert_eq!(
        s.collect(0, &[]).unwrap(),
        GcReport {
            kept: vec![6],
            ..GcReport::default()
        }
    );
}

#[test]
fn collect_deletes_nothing_when_a_kept_manifest_is_unreadable() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path(), "0");
    let m1 = s.write(None, ck(1, vec![("task", full(b"1"))])).unwrap();
    s.write(Some(&m1), ck(2, vec![("task", full(b"2"))]))
        .unwrap();
    fs::write(
        d.path()
            .join("job/0/chk-00000000000000000002")
            .join(MANIFEST),
        b"oops",
    )
    .unwrap();
    let before = files(d.path());
    assert!(matches!(
        s.collect(1, &[]),
        Err(CheckpointError::Corrupt { .. })
    ));
    assert_eq!(files(d.path()), before);
}

#[test]
fn scan_finds_every_job_and_instance_and_says_which_are_complete() {
    let d = tempfile::tempdir().unwrap();
    let storage = open_storage(d.path().to_str().unwrap()).unwrap();
    for (job, inst) in [("j1", "0"), ("j1", "1"), ("j2", "0")] {
        let s = CheckpointStore::open(d.path().to_str().unwrap(), job, inst).unwrap();
        s.write(None, ck(1, vec![("task", full(b"x"))])).unwrap();
    }
    storage
        .put("j1/0/chk-00000000000000000002/task.bin", b"half")
        .unwrap();
    storage.put("j1/0/notes.txt", b"not ours").unwrap();
    let all = scan(storage.as_ref(), None, None).unwrap();
    let short: Vec<_> = all
        .iter()
        .map(|f| (f.job.as_str(), f.instance.as_str(), f.id, f.complete))
        .collect();
    assert_eq!(
        short,
        [
            ("j1", "0", 1, true),
            ("j1", "0", 2, false),
            ("j1", "1", 1, true),
            ("j2", "0", 1, true)
        ]
    );
    assert_eq!(
        scan(storage.as_ref(), Some("j1"), Some("1")).unwrap().len(),
        1
    );
    assert_eq!(scan(storage.as_ref(), None, Some("0")).unwrap().len(), 3);
    assert_eq!(scan(storage.as_ref(), Some("nope"), None).unwrap(), []);
    assert!(matches!(
        scan(storage.as_ref(), Some("../x"), None),
        Err(CheckpointError::BadName { .. })
    ));
    let m = load_manifest(storage.as_ref(), "j2", &CheckpointRef::new("0", 1))
        .unwrap()
        .unwrap();
    assert_eq!(m.job, "j2");
}

// ---- the property test ------------------------------------------------------------

const GROUPS: [&str; 4] = ["task", "s0-p0", "s0-p1", "s1-p0"];

#[derive(Clone, Debug)]
enum Action {
    Full(Vec<u8>),
    Delta(Vec<u8>),
    Unchanged,
    Drop,
}

#[derive(Clone, Debug)]
enum Op {
    /// Writes a checkpoint; `base_back` picks the base among the checkpoints that
    /// exist, counted from the newest (a restore of an older one, then a write).
    Write {
        actions: Vec<Action>,
        base_back: usize,
    },
    /// Blobs of a checkpoint, then a crash before its manifest.
    Crash { groups: Vec<bool> },
    /// Collection; `also` picks existing checkpoints to keep by index.
    Collect {
        keep_newest: usize,
        also: Vec<usize>,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        bytes().prop_map(Action::Full),
        bytes().prop_map(Action::Delta),
        Just(Action::Unchanged),
        Just(Action::Drop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop::collection::vec(action(), GROUPS.len()), 0..3usize)
            .prop_map(|(actions, base_back)| Op::Write { actions, base_back }),
        1 => prop::collection::vec(any::<bool>(), GROUPS.len()).prop_map(|groups| Op::Crash { groups }),
        2 => (0..4usize, prop::collection::vec(0..16usize, 0..3))
            .prop_map(|(keep_newest, also)| Op::Collect { keep_newest, also }),
    ]
}

/// What each checkpoint that exists must give back: per group, the chain's payloads.
type Expected = BTreeMap<u64, (Manifest, BTreeMap<String, Vec<Vec<u8>>>)>;

fn check_all_readable(s: &CheckpointStore, expected: &Expected) -> Result<(), TestCaseError> {
    for (id, (manifest, chains)) in expected {
        let got = s.get(&CheckpointRef::new("0", *id)).unwrap();
        prop_assert_eq!(got.as_ref(), Some(manifest));
        for g in GROUPS {
            let want = chains.get(g).cloned().unwrap_or_default();
            prop_assert_eq!(s.read_chain(manifest, g).unwrap(), want, "{} of {}", g, id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_and_collections_keep_every_kept_chain_exact_and_nothing_else(
        ops in prop::collection::vec(op(), 1..20)
    ) {
        let d = tempfile::tempdir().unwrap();
        let s = store_at(d.path(), "0");
        // Another instance's files must survive every collection untouched.
        let other = store_at(d.path(), "1");
        other.write(None, ck(1, vec![("task", full(b"other"))])).unwrap();
        let other_files: BTreeSet<_> =
            files(d.path()).into_iter().filter(|f| f.starts_with("job/1/")).collect();

        let mut expected: Expected = BTreeMap::new();
        // Directories newer than the newest complete checkpoint: never collected.
        let mut pending: BTreeSet<String> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Write { actions, base_back } => {
                    let id = s.next_id().unwrap();
                    let base = expected.values().rev().nth(base_back).cloned();
                    let mut groups = Vec::new();
                    let mut chains = BTreeMap::new();
                    for (g, a) in GROUPS.iter().zip(actions) {
                        let prev = base.as_ref().and_then(|(_, c)| c.get(*g)).cloned();
                        let (state, chain) = match (a, prev) {
                            (Action::Drop, _) => continue,
                            (Action::Full(b), _)
                            | (Action::Delta(b), None) => (GroupState::Full(b.clone()), vec![b]),
                            (Action::Unchanged, None) => (GroupState::Full(Vec::new()), vec![Vec::new()]),
                            (Action::Delta(b), Some(mut c)) => {
                                c.push(b.clone());
                                (GroupState::Delta(b), c)
                            }
                            (Action::Unchanged, Some(c)) => (GroupState::Unchanged, c),
                        };
                        groups.push((*g, state));
                        chains.insert(g.to_string(), chain);
                    }
                    let m = s.write(base.as_ref().map(|(m, _)| m), ck(id, groups)).unwrap();
                    expected.insert(id, (m, chains));
                    pending.clear();
                }
                Op::Crash { groups } => {
                    let id = s.next_id().unwrap();
                    for (g, _) in GROUPS.iter().zip(groups).filter(|(_, on)| *on) {
                        let key = format!("job/0/{}", paths::blob_path(id, g));
                        s.storage().put(&key, b"torn").unwrap();
                        pending.insert(key);
                    }
                    prop_assert!(s.latest().unwrap().map(|m| m.id) == expected.keys().next_back().copied());
                }
                Op::Collect { keep_newest, also } => {
                    let ids: Vec<u64> = expected.keys().copied().collect();
                    let also: Vec<CheckpointRef> = also
                        .iter()
                        .filter_map(|i| ids.get(*i))
                        .map(|id| CheckpointRef::new("0", *id))
                        .collect();
                    let report = s.collect(keep_newest, &also).unwrap();
                    let mut keep: BTreeSet<u64> =
                        ids.iter().rev().take(keep_newest.max(1)).copied().collect();
                    keep.extend(also.iter().map(|r| r.id));
                    prop_assert_eq!(&report.kept, &keep.iter().copied().collect::<Vec<_>>());
                    expected.retain(|id, _| keep.contains(id));

                    // On disk: exactly the kept manifests, their blobs, the pending ones.
                    let mut want: BTreeSet<String> = pending.clone();
                    for (id, (m, _)) in &expected {
                        want.insert(paths::manifest_key("job", "0", *id));
                        for b in m.groups.values().flatten() {
                            want.insert(format!("job/0/{}", b.path));
                        }
                    }
                    let mine: BTreeSet<_> =
                        files(d.path()).into_iter().filter(|f| f.starts_with("job/0/")).collect();
                    prop_assert_eq!(mine, want);
                    let theirs: BTreeSet<_> =
                        files(d.path()).into_iter().filter(|f| f.starts_with("job/1/")).collect();
                    prop_assert_eq!(&theirs, &other_files);
                }
            }
            check_all_readable(&s, &expected)?;
        }
    }
}
