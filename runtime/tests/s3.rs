//! `s3://` checkpoint storage against a real S3-compatible server: `scripts/s3 start`
//! (s3s-fs on 127.0.0.1:9000, bucket `streamc`); `STREAMC_S3_ENDPOINT` names another.
//! The outage test runs a second server of its own on port 9011, which it stops and
//! starts again.
#![cfg(feature = "s3")]

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streamc_runtime::checkpoint::s3::{MULTIPART_ABOVE, RETRY_TIMEOUT, S3Storage};
use streamc_runtime::checkpoint::{
    CheckpointStore, GroupState, Mode, NewCheckpoint, S3Options, Storage,
};

fn endpoint() -> String {
    std::env::var("STREAMC_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

fn options(endpoint: String) -> S3Options {
    // SAFETY: set before any thread of this test binary reads the environment for AWS
    // settings; every test sets the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "streamc");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "streamc-secret");
    }
    S3Options {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
    }
}

/// A prefix no other run uses.
fn unique(what: &str) -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3://streamc/tests/{what}-{}-{ns}", std::process::id())
}

fn storage(what: &str) -> S3Storage {
    let url = unique(what);
    let s = S3Storage::open(&url, &options(endpoint())).unwrap();
    if let Err(e) = s.list("") {
        panic!(
            "no S3 server answers at {} ({e}): run `scripts/s3 start` (or set STREAMC_S3_ENDPOINT)",
            endpoint()
        );
    }
    s
}

#[test]
fn put_get_list_delete_contract() {
    let s = storage("contract");
    assert_eq!(s.list("").unwrap(), Vec::<String>::new());
    assert_eq!(s.get("a/b.bin").unwrap(), None);
    s.put("a/b.bin", b"one").unwrap();
    s.put("a/b.bin", b"two!").unwrap();
    assert_eq!(s.get("a/b.bin").unwrap().as_deref(), Some(&b"two!"[..]));
    s.put("empty", b"").unwrap();
    assert_eq!(s.get("empty").unwrap(), Some(Vec::new()));
    for k in ["j/1/chk-2/b", "j/1/chk-1/a", "j/10/x", "j/1/chk-2/a"] {
        s.put(k, k.as_bytes()).unwrap();
    }
    assert_eq!(
        s.list("j/1").unwrap(),
        ["j/1/chk-1/a", "j/1/chk-2/a", "j/1/chk-2/b"],
        "scoped to the prefix as a directory (not j/10), sorted"
    );
    assert_eq!(s.list("").unwrap().len(), 6);
    assert_eq!(s.list("a/b.bin").unwrap(), Vec::<String>::new());
    s.delete("j/1/chk-1/a").unwrap();
    s.delete("no/such/object").unwrap();
    s.delete_prefix("j/1").unwrap();
    assert_eq!(s.list("j").unwrap(), ["j/10/x"]);
    assert!(s.put("../escape", b"x").is_err());
    assert!(
        s.location("a/b.bin")
            .starts_with("s3://streamc/tests/contract-")
    );
    s.delete_prefix("a").unwrap();
    s.delete_prefix("j").unwrap();
    s.delete("empty").unwrap();
    assert_eq!(s.list("").unwrap(), Vec::<String>::new());
}

#[test]
fn large_objects_go_up_in_parts_and_come_back_whole() {
    let s = storage("multipart");
    let big: Vec<u8> = (0..MULTIPART_ABOVE + 3 * 1024 * 1024 + 7)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    s.put("big.bin", &big).unwrap();
    let back = s.get("big.bin").unwrap().unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "the parts were joined in order");
    s.delete("big.bin").unwrap();
}

#[test]
fn put_new_never_replaces_an_object() {
    let s = storage("conditional");
    s.put_new("chk/MANIFEST.json", b"first").unwrap();
    let err = s.put_new("chk/MANIFEST.json", b"second").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(
        s.get("chk/MANIFEST.json").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    s.delete_prefix("chk").unwrap();
}

fn checkpoint(id: u64, groups: &[(&str, GroupState)]) -> NewCheckpoint {
    NewCheckpoint {
        id,
        created_ms: 1_700_000_000_000 + id as i64,
        mode: Mode::ExactlyOnce,
        groups: groups
            .iter()
            .map(|(g, s)| (g.to_string(), s.clone()))
            .collect::<BTreeMap<_, _>>(),
        ..NewCheckpoint::default()
    }
}

#[test]
fn checkpoint_chains_are_written_read_and_collected_on_s3() {
    let url = unique("store");
    let store = CheckpointStore::open_with(&url, &options(endpoint()), "job", "0").unwrap();
    assert_eq!(store.next_id().unwrap(), 1);
    let m1 = store
        .write(
            None,
            checkpoint(1, &[("s0-p0", GroupState::Full(b"full-0".to_vec()))]),
        )
        .unwrap();
    let m2 = store
        .write(
            Some(&m1),
            checkpoint(2, &[("s0-p0", GroupState::Delta(b"delta-1".to_vec()))]),
        )
        .unwrap();
    let m3 = store
        .write(
            Some(&m2),
            checkpoint(3, &[("s0-p0", GroupState::Unchanged)]),
        )
        .unwrap();
    assert_eq!(store.latest().unwrap().unwrap().id, 3);
    assert_eq!(
        store.read_chain(&m3, "s0-p0").unwrap(),
        [b"full-0".to_vec(), b"delta-1".to_vec()]
    );
    // A manifest is never written twice: an id already taken is refused.
    assert!(
        store
            .write(
                Some(&m2),
                checkpoint(3, &[("s0-p0", GroupState::Unchanged)])
            )
            .is_err()
    );
    // A fourth, full checkpoint; keeping one drops 1-3 and their blobs.
    let m4 = store
        .write(
            Some(&m3),
            checkpoint(4, &[("s0-p0", GroupState::Full(b"full-4".to_vec()))]),
        )
        .unwrap();
    let report = store.collect(1, &[]).unwrap();
    assert_eq!(report.kept, [4]);
    assert_eq!(report.deleted, [1, 2, 3]);
    assert_eq!(
        store.read_chain(&m4, "s0-p0").unwrap(),
        [b"full-4".to_vec()]
    );
    let left = store.storage().list("job/0").unwrap();
    assert_eq!(
        left,
        [
            "job/0/chk-00000000000000000004/MANIFEST.json",
            "job/0/chk-00000000000000000004/s0-p0.bin"
        ]
    );
    // Another process (a fresh store over the same URL) sees the same.
    let again = CheckpointStore::open_with(&url, &options(endpoint()), "job", "0").unwrap();
    assert_eq!(again.latest().unwrap().unwrap().id, 4);
    assert_eq!(again.next_id().unwrap(), 5);
    again.storage().delete_prefix("job").unwrap();
}

/// A server of this test's own (port 9011), so stopping it disturbs no other test.
struct OwnServer {
    port: u16,
    data: PathBuf,
}

impl OwnServer {
    fn script(&self, cmd: &str) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(root.join("scripts/s3"))
            .arg(cmd)
            .env("STREAMC_S3_PORT", self.port.to_string())
            .env("STREAMC_S3_DATA", &self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/s3 {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.script("reset");
    }
}

#[test]
fn an_outage_fails_the_call_within_the_retry_bound_and_the_next_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = OwnServer {
        port: 9011,
        data: dir.path().join("data"),
    };
    server.script("start");
    let url = "s3://streamc/outage";
    let store = CheckpointStore::open_with(
        url,
        &options(format!("http://127.0.0.1:{}", server.port)),
        "job",
        "0",
    )
    .unwrap();
    let m1 = store
        .write(
            None,
            checkpoint(1, &[("task", GroupState::Full(b"one".to_vec()))]),
        )
        .unwrap();

    server.script("stop");
    let started = Instant::now();
    let err = store
        .write(
            Some(&m1),
            checkpoint(2, &[("task", GroupState::Full(b"two".to_vec()))]),
        )
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took <= RETRY_TIMEOUT + Duration::from_secs(20),
        "bounded by the retry timeout: {took:?}"
    );
    assert!(err.to_string().contains("s3://streamc/outage"), "{err}");

    server.script("start");
    // The failed checkpoint left nothing that counts; the next id is fresh and the
    // checkpoint before the outage is still the latest until a new one is written.
    assert_eq!(store.latest().unwrap().unwrap().id, 1);
    let next = store.next_id().unwrap();
    let m = store
        .write(
            Some(&m1),
            checkpoint(next, &[("task", GroupState::Delta(b"two".to_vec()))]),
        )
        .unwrap();
    assert_eq!(store.latest().unwrap().unwrap().id, m.id);
    assert_eq!(
        store.read_chain(&m, "task").unwrap(),
        [b"one".to_vec(), b"two".to_vec()]
    );
}
