//! Crashes and restarts against the real broker, checked against the independent oracle
//! (`tests/oracle.rs`) on a generated multi-partition input (`tests/generator.rs`):
//!
//! - one uninterrupted bounded run, with and without checkpoints, equals the oracle
//!   exactly (the baseline: the job and the oracle agree before anything is killed);
//! - the crash test: the checkpointed, exactly-once job killed with SIGKILL at random
//!   moments and inside every phase of a checkpoint and of the commit (the test-only
//!   hook `STREAMC_FAULT`), restarted each time while the input is being produced, then
//!   finished with `--bounded`: read-committed results, late events and dead letters
//!   equal the oracle's exactly;
//! - the same job without checkpoints, killed (SIGKILL and SIGTERM) and restarted: the
//!   upsert view is exact, every too-late event is in the late topic and nothing else.
//!
//! The crash test runs with memory state and local checkpoints, with RocksDB state (a
//! write-back cache of 64 entries per store, so most of the state is in RocksDB when the
//! job is killed) and local checkpoints, and with RocksDB state and `s3://` checkpoints
//! on the project's S3 server (every restart rebuilds the state from S3 alone; then
//! `streamc checkpoints list|inspect|gc` through the S3 tool on what the job left).
//!
//! `STREAMC_TEST_SEED` overrides the seeds (the failure message names the one used).
//! Restarts use static membership (`group.instance.id`): a restarted instance takes its
//! partitions back at once instead of waiting out the old member's session (6 s here;
//! librdkafka's default is 45 s).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use streamc_tests::generator::{Params, Rng, generate};
use streamc_tests::harness::*;

const PARTITIONS: u32 = 5;

/// One uninterrupted `--bounded` run over an input produced beforehand.
fn uninterrupted(tag: &str, checkpoints: bool, seed: u64) {
    let _serial = serial();
    let scratch = Scratch::new(tag);
    let mut journal = Journal::new();
    let topics = Topics::create(tag, PARTITIONS);
    journal.log("topics created");
    let ck = checkpoints.then(|| Checkpoints::local("300ms", scratch.join("checkpoints")));
    let mut job = StateJob::new(tag, &topics, ck);
    // One run: no restart to speed up (and the build without checkpoints has no static
    // membership yet).
    job.static_membership = checkpoints;
    let bin = job.build(&scratch.path, "job.yaml");
    journal.log("built");
    let input = generate(&Params::standard(seed, PARTITIONS, 6000));
    let expected = job.oracle().run(&input.payloads());
    journal.log(format!("oracle: {:?}", expected.stats));
    produce_all(&topics.input, input.partitions.clone());
    journal.log(format!("produced {} records", input.len()));

    let started = Instant::now();
    let mut p = Proc::start(
        "bounded",
        &bin,
        &job.args(0, true),
        &[],
        scratch.join("bounded.log"),
    );
    let status = p.wait_timeout(Duration::from_secs(120));
    let log = p.log_tail(30);
    assert!(
        status.is_some_and(|s| s.success()),
        "seed {seed}: the bounded run ended with {status:?} after {:?}:\n{log}",
        started.elapsed()
    );
    journal.log(format!("bounded run: {status:?}"));
    let got = Outputs::read(&topics, true);
    journal.log(format!("read back: {}", got.summary()));
    let verdict = compare_exact(&expected, &got);
    journal.log("compared");
    if let Err(report) = verdict {
        panic!(
            "seed {seed}: one uninterrupted bounded run (checkpoints: {checkpoints}) differs from the oracle\n\
             got {}\n{report}\nlog:\n{log}",
            got.summary()
        );
    }
}

#[test]
fn one_bounded_run_without_checkpoints_matches_the_oracle() {
    uninterrupted("base", false, seed(11));
}

#[test]
fn one_bounded_run_with_checkpoints_matches_the_oracle() {
    uninterrupted("baseck", true, seed(12));
}

/// How one run of the crash test ends.
#[derive(Clone, Debug)]
enum Kill {
    /// The harness sends SIGKILL this long after the start.
    After(Duration),
    /// The harness sends SIGTERM this long after the start (a clean stop).
    Term(Duration),
    /// `STREAMC_FAULT=<point>@<n>`: the process kills itself there.
    Fault(&'static str, u32),
}

/// The fault points of `docs/design/state.md` reached by a checkpointed job.
const CHECKPOINT_POINTS: [&str; 5] = [
    "checkpoint.start",
    "checkpoint.blobs",
    "checkpoint.manifest",
    "checkpoint.offsets",
    "checkpoint.commit",
];

/// The crash schedule: two plain SIGKILLs first (so that there is a checkpoint to
/// restore), then, shuffled by the seed, each checkpoint phase twice, `restore` twice,
/// `record` three times and a few random SIGKILLs, all while the input is still being
/// produced (a checkpoint phase is reached within a few intervals); then more random
/// SIGKILLs (and, without checkpoints, SIGTERMs) while the job catches up.
fn crash_schedule(rng: &mut Rng, checkpoints: bool) -> Vec<Kill> {
    let kill = |rng: &mut Rng| Kill::After(Duration::from_millis(rng.range(150, 3000) as u64));
    let term = |rng: &mut Rng| Kill::Term(Duration::from_millis(rng.range(300, 3000) as u64));
    let mut head = vec![
        Kill::After(Duration::from_millis(rng.range(1500, 3000) as u64)),
        Kill::After(Duration::from_millis(rng.range(200, 2500) as u64)),
    ];
    let mut middle = vec![];
    if checkpoints {
        for p in CHECKPOINT_POINTS {
            for _ in 0..2 {
                middle.push(Kill::Fault(p, rng.range(1, 4) as u32));
            }
        }
        middle.push(Kill::Fault("restore", 1));
        middle.push(Kill::Fault("restore", 1));
    } else {
        for _ in 0..4 {
            middle.push(Kill::Fault("commit", rng.range(1, 4) as u32));
        }
        for _ in 0..3 {
            middle.push(term(rng));
        }
    }
    for _ in 0..3 {
        middle.push(Kill::Fault("record", rng.range(1, 5000) as u32));
        middle.push(kill(rng));
    }
    rng.shuffle(&mut middle);
    let mut tail: Vec<Kill> = (0..4).map(|_| kill(rng)).collect();
    if !checkpoints {
        tail.push(term(rng));
        tail.push(term(rng));
    }
    rng.shuffle(&mut tail);
    head.extend(middle);
    head.extend(tail);
    head
}

/// Runs the job once, ending as `kill` says; a line for the journal and, for a fault,
/// whether the process reached the point.
fn one_run(
    job: &StateJob,
    bin: &std::path::Path,
    scratch: &Scratch,
    i: usize,
    kill: &Kill,
) -> (String, Option<bool>) {
    let log = scratch.join(&format!("run-{i:02}.log"));
    let mut env = job.env();
    if let Kill::Fault(point, n) = kill {
        env.push(("STREAMC_FAULT", format!("{point}@{n}")));
    }
    let mut p = Proc::start(&format!("run {i}"), bin, &job.args(0, false), &env, log);
    match kill {
        Kill::After(d) | Kill::Term(d) => {
            if let Some(s) = p.wait_timeout(*d) {
                panic!(
                    "run {i} exited by itself with {s} before the harness stopped it:\n{}",
                    p.log_tail(40)
                );
            }
            if let Kill::Term(_) = kill {
                match p.term(Duration::from_secs(30)) {
                    Ok(s) if s.success() => (format!("run {i}: SIGTERM after {d:?}: exit 0"), None),
                    Ok(s) => panic!("run {i}: SIGTERM: exit {s}:\n{}", p.log_tail(40)),
                    Err(_) => panic!(
                        "run {i}: no exit within 30 s of SIGTERM:\n{}",
                        p.log_tail(40)
                    ),
                }
            } else {
                p.kill();
                (format!("run {i}: SIGKILL after {d:?}"), None)
            }
        }
        Kill::Fault(point, n) => match p.wait_timeout(Duration::from_secs(15)) {
            Some(s) if killed(s) => (
                format!(
                    "run {i}: killed itself at {point}@{n} after {:.2} s",
                    p.started.elapsed().as_secs_f64()
                ),
                Some(true),
            ),
            Some(s) => panic!(
                "run {i}: STREAMC_FAULT={point}@{n}: exited with {s}, not by SIGKILL:\n{}",
                p.log_tail(40)
            ),
            None => {
                p.kill();
                (
                    format!("run {i}: {point}@{n} not reached within 15 s: SIGKILL"),
                    Some(false),
                )
            }
        },
    }
}

/// Where the crash test's checkpoints go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    /// No checkpoints.
    None,
    /// A local directory.
    Local,
    /// `s3://` on the project's S3 server: every restart restores from S3 alone.
    S3,
}

/// The crash loop: `schedule` runs while the input is produced, then a `--bounded` run
/// (RocksDB state when `rocksdb`).
fn crash_and_finish(tag: &str, storage: Storage, rocksdb: bool, seed: u64) {
    let _serial = serial();
    let scratch = Scratch::new(tag);
    let mut journal = Journal::new();
    let topics = Topics::create(tag, PARTITIONS);
    let checkpoints = storage != Storage::None;
    let ck = match storage {
        Storage::None => None,
        Storage::Local => Some(Checkpoints::local("300ms", scratch.join("checkpoints"))),
        Storage::S3 => Some(Checkpoints::s3("300ms", &scratch_prefix(&scratch))),
    };
    let mut job = StateJob::new(tag, &topics, ck);
    if rocksdb {
        job.rocksdb = Some(scratch.join("state"));
    }
    let bin = job.build(&scratch.path, "job.yaml");
    let input = generate(&Params::standard(seed, PARTITIONS, 8000));
    let expected = job.oracle().run(&input.payloads());
    journal.log(format!(
        "seed {seed}: {} records in {PARTITIONS} partitions; oracle: {:?}",
        input.len(),
        expected.stats
    ));
    let mut rng = Rng::new(seed ^ 0xc7a5);
    let schedule = crash_schedule(&mut rng, checkpoints);
    // Produced over about 45 s: the kills fall before, during and after the input grows.
    let feeder = Feeder::start(
        &topics.input,
        input.partitions.clone(),
        90,
        Duration::from_millis(500),
    );
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    for (i, kill) in schedule.iter().enumerate() {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the crash loop took too long\n{}",
            journal.text()
        );
        let (line, hit) = one_run(&job, &bin, &scratch, i, kill);
        journal.log(line);
        if let (Kill::Fault(point, _), Some(true)) = (kill, hit) {
            *reached.entry(point).or_default() += 1;
        }
    }
    let waited = wait_until(Duration::from_secs(60), || feeder.done());
    assert!(waited, "seed {seed}: the producer did not finish");
    feeder.wait();
    journal.log("input complete; the final --bounded run");
    let mut last = Proc::start(
        "final",
        &bin,
        &job.args(0, true),
        &job.env(),
        scratch.join("final.log"),
    );
    let status = last.wait_timeout(Duration::from_secs(120));
    journal.log(format!("final run: {status:?}"));
    assert!(
        status.is_some_and(|s| s.success()),
        "seed {seed}: the final bounded run ended with {status:?}:\n{}\n{}",
        last.log_tail(40),
        journal.text()
    );
    let got = Outputs::read(&topics, true);
    journal.log(format!("read back: {}", got.summary()));
    if checkpoints {
        // The kills left aborted transactions behind (what read_committed must hide).
        let all =
            consume(&topics.tumbling_out, false).len() + consume(&topics.sessions_out, false).len();
        let committed = got.results.values().map(Vec::len).sum::<usize>();
        journal.log(format!("results written {all}, committed {committed}"));
        assert!(
            all > committed,
            "seed {seed}: no aborted output: the kills hit no open transaction\n{}",
            journal.text()
        );
    }
    let verdict = if checkpoints {
        compare_exact(&expected, &got)
    } else {
        compare_at_least_once(&expected, &got)
    };
    if let Err(report) = verdict {
        panic!(
            "seed {seed} (STREAMC_TEST_SEED={seed} reproduces the input and the schedule):\n{report}\njournal:\n{}",
            journal.text()
        );
    }
    // The test killed where it says it did.
    let points: Vec<&str> = if checkpoints {
        CHECKPOINT_POINTS
            .iter()
            .copied()
            .chain(["restore"])
            .collect()
    } else {
        vec!["commit"]
    };
    for p in points {
        assert!(
            reached.get(p).copied().unwrap_or(0) >= 1,
            "seed {seed}: no run reached the fault point {p}: {reached:?}\n{}",
            journal.text()
        );
    }
    assert!(schedule.len() >= 20);
    if storage == Storage::S3 {
        checkpoint_tool_on_s3(&job);
    }
}

/// `streamc checkpoints list|inspect|gc` on the checkpoints the crash test left on S3
/// (through the tool the CLI builds for `s3://`).
fn checkpoint_tool_on_s3(job: &StateJob) {
    let ck = job.checkpoints.as_ref().expect("checkpoints");
    let tool = streamc::build::build_checkpoint_tool(&Default::default())
        .unwrap_or_else(|e| panic!("building the checkpoint tool: {e}"))
        .binary;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&tool)
            .args(args)
            .envs(ck.env())
            .env("AWS_ENDPOINT", s3_endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("running the checkpoint tool");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let url = ck.storage.as_str();
    let rows = |text: &str| text.lines().skip(1).count();
    let listed = run(&["list", url, "--job", &job.name]);
    assert!(rows(&listed) >= 1, "{listed}");
    let newest = listed
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let shown = run(&["inspect", url, &format!("0/{newest}"), "--job", &job.name]);
    assert!(shown.contains(url), "{shown}");
    assert!(shown.contains("key groups"), "{shown}");
    let gc = run(&["gc", url, "--job", &job.name, "--retain", "1"]);
    assert!(gc.contains("kept"), "{gc}");
    let after = run(&["list", url, "--job", &job.name]);
    assert_eq!(rows(&after), 1, "one checkpoint kept:\n{after}");
    assert!(after.lines().last().unwrap().split_whitespace().nth(2) == Some(newest.as_str()));
}

/// A prefix in the S3 bucket of this test run alone.
fn scratch_prefix(scratch: &Scratch) -> String {
    let name = scratch
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("crash/{name}-{}", std::process::id())
}

#[test]
fn crash_test_exactly_once_with_rocksdb_state_and_s3_checkpoints() {
    // RocksDB state (its directory wiped at every start) and s3:// storage: every
    // restart rebuilds the state from S3 alone, as on an empty machine.
    crash_and_finish("s3", Storage::S3, true, seed(5151));
}

#[test]
fn crash_test_exactly_once() {
    crash_and_finish("crash", Storage::Local, false, seed(2024));
}

#[test]
fn crash_test_exactly_once_with_rocksdb_state() {
    crash_and_finish("crashrocks", Storage::Local, true, seed(2025));
}

#[test]
fn restarts_without_checkpoints_keep_the_upsert_view_exact() {
    crash_and_finish("alo", Storage::None, false, seed(77));
}

/// A restart judges a new record against the watermark its partition had when it was
/// committed, even when nothing is read again before it: a window purged before the
/// restart stays purged, and an event too late for it goes to the late topic (a focused,
/// deterministic case of what the crash tests check at random).
fn restart_keeps_the_watermark(tag: &str, checkpoints: bool) {
    let _serial = serial();
    let scratch = Scratch::new(tag);
    let topics = Topics::create(tag, 1);
    let ck = checkpoints.then(|| Checkpoints::local("200ms", scratch.join("checkpoints")));
    let job = StateJob::new(tag, &topics, ck);
    let bin = job.build(&scratch.path, "job.yaml");
    let t0 = 1_700_000_000_000i64;
    let ev = |user: &str, value: i64, ts: i64| streamc_tests::generator::Record {
        key: user.into(),
        payload: format!(r#"{{"user":"{user}","value":{value},"ts":{}}}"#, t0 + ts),
    };
    // W = 9.5 s after the second record: a's window [1 s, 2 s) fires and is purged
    // (2 s + 2 s lateness <= 9.5 s); z's [10 s, 11 s) stays open.
    let first = vec![ev("a", 1, 1000), ev("z", 2, 10_000)];
    produce_all(&topics.input, vec![first.clone()]);
    let mut p = Proc::start(
        "first",
        &bin,
        &job.args(0, false),
        &[],
        scratch.join("1.log"),
    );
    let fired = wait_until(Duration::from_secs(60), || {
        consume(&topics.tumbling_out, true)
            .iter()
            .any(|m| m.payload.contains(r#""user":"a""#))
    });
    assert!(fired, "a's window did not fire:\n{}", p.log_tail(30));
    std::thread::sleep(Duration::from_secs(1)); // a commit (or a checkpoint) passes
    let status = p.term(Duration::from_secs(30));
    assert!(
        matches!(status, Ok(s) if s.success()),
        "SIGTERM: {status:?}\n{}",
        p.log_tail(30)
    );
    // Too late for [1 s, 2 s) at W = 9.5 s.
    let late = ev("a", 3, 1100);
    produce_all(&topics.input, vec![vec![late.clone()]]);
    let mut p = Proc::start(
        "second",
        &bin,
        &job.args(0, true),
        &[],
        scratch.join("2.log"),
    );
    let status = p.wait_timeout(Duration::from_secs(60));
    let log = format!(
        "first run:\n{}\nsecond run:\n{}",
        std::fs::read_to_string(scratch.join("1.log")).unwrap_or_default(),
        p.log_tail(30)
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "bounded run: {status:?}\n{log}"
    );
    let expected = job.oracle().run(&[vec![
        first[0].payload.clone(),
        first[1].payload.clone(),
        late.payload.clone(),
    ]]);
    let got = Outputs::read(&topics, true);
    let verdict = if checkpoints {
        compare_exact(&expected, &got)
    } else {
        compare_at_least_once(&expected, &got)
    };
    if let Err(report) = verdict {
        panic!("{report}\n{log}");
    }
}

#[test]
fn a_restart_without_checkpoints_keeps_the_committed_watermark() {
    restart_keeps_the_watermark("wmalo", false);
}

#[test]
fn a_restart_from_a_checkpoint_keeps_its_watermark() {
    restart_keeps_the_watermark("wmck", true);
}
