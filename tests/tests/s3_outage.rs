//! An S3 outage under a running, checkpointed, exactly-once Kafka job: the job's own S3
//! server (port 9012, `scripts/s3` with a data directory of the test's) is stopped for
//! 20 s while the input is being produced, then started again. The job must go on (checkpoints that cannot be written are skipped, not
//! fatal), checkpoint again once the server is back, and its read-committed results,
//! late events and dead letters must equal the independent oracle's exactly.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use streamc_tests::generator::{Params, generate};
use streamc_tests::harness::*;

const PORT: u16 = 9012;

/// The test's own S3 server; reset when dropped.
struct Server {
    data: PathBuf,
}

impl Server {
    fn script(&self, cmd: &str) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(root.join("scripts/s3"))
            .arg(cmd)
            .env("STREAMC_S3_PORT", PORT.to_string())
            .env("STREAMC_S3_DATA", &self.data)
            .output()
            .expect("running scripts/s3");
        assert!(
            out.status.success(),
            "scripts/s3 {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.script("reset");
    }
}

/// The checkpoints written so far: the manifests in the server's directory (s3s-fs
/// keeps each object as a file).
fn manifests(data: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.file_name().is_some_and(|f| f == "MANIFEST.json") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(data, &mut n);
    n
}

#[test]
fn an_s3_outage_skips_checkpoints_and_loses_nothing() {
    let _serial = serial();
    let seed = seed(909);
    let scratch = Scratch::new("s3out");
    let mut journal = Journal::new();
    let server = Server {
        data: scratch.join("s3-data"),
    };
    server.script("start");
    let topics = Topics::create("s3out", 3);
    let ck = Checkpoints {
        interval: "300ms".into(),
        storage: format!("s3://streamc/outage-{}", std::process::id()),
        s3: Some(format!(
            "{{endpoint: \"http://127.0.0.1:{PORT}\", region: us-east-1}}"
        )),
    };
    let job = StateJob::new("s3out", &topics, Some(ck));
    let bin = job.build(&scratch.path, "job.yaml");
    let input = generate(&Params::standard(seed, 3, 6000));
    let expected = job.oracle().run(&input.payloads());
    journal.log(format!(
        "seed {seed}: {} records; oracle: {:?}",
        input.len(),
        expected.stats
    ));
    // Produced over about 40 s, so the outage falls in the middle of the input.
    let feeder = Feeder::start(
        &topics.input,
        input.partitions.clone(),
        80,
        Duration::from_millis(500),
    );
    let mut p = Proc::start(
        "live",
        &bin,
        &job.args(0, false),
        &job.env(),
        scratch.join("live.log"),
    );
    let before = wait_until(Duration::from_secs(30), || manifests(&server.data) >= 3);
    assert!(
        before,
        "no checkpoints before the outage:\n{}",
        p.log_tail(30)
    );
    journal.log(format!(
        "{} manifests before the outage",
        manifests(&server.data)
    ));

    server.script("stop");
    let down = Instant::now();
    // A checkpoint fails once the store's retries (at most 15 s) give up.
    let failed = wait_until(Duration::from_secs(40), || {
        p.log_text().contains("a checkpoint could not be written")
    });
    assert!(
        failed,
        "no checkpoint failed during the outage:\n{}",
        p.log_tail(30)
    );
    // Down for 20 s in all: several checkpoints in a row fail, the job reads on.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    let failures = p
        .log_text()
        .matches("a checkpoint could not be written")
        .count();
    assert!(
        failures >= 2,
        "{failures} failed checkpoints:\n{}",
        p.log_tail(30)
    );
    assert!(
        p.status().is_none(),
        "the job ended during the outage:\n{}",
        p.log_tail(40)
    );
    let during = manifests(&server.data);
    server.script("start");
    journal.log(format!(
        "server down for {:.1} s; {failures} checkpoints failed; {during} manifests",
        down.elapsed().as_secs_f64()
    ));
    let resumed = wait_until(Duration::from_secs(30), || manifests(&server.data) > during);
    assert!(
        resumed,
        "no checkpoint after the server came back:\n{}",
        p.log_tail(40)
    );
    journal.log(format!(
        "{} manifests after it came back",
        manifests(&server.data)
    ));

    assert!(
        wait_until(Duration::from_secs(90), || feeder.done()),
        "the producer did not finish"
    );
    feeder.wait();
    // A clean stop takes a last checkpoint; a bounded run reads what is left.
    let stopped = p.term(Duration::from_secs(60));
    assert!(
        stopped.is_ok_and(|s| s.success()),
        "SIGTERM: {stopped:?}\n{}",
        p.log_tail(40)
    );
    let mut last = Proc::start(
        "final",
        &bin,
        &job.args(0, true),
        &job.env(),
        scratch.join("final.log"),
    );
    let status = last.wait_timeout(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "the final bounded run: {status:?}\n{}",
        last.log_tail(40)
    );
    let got = Outputs::read(&topics, true);
    journal.log(format!("read back: {}", got.summary()));
    if let Err(report) = compare_exact(&expected, &got) {
        panic!(
            "seed {seed}: results after an S3 outage differ from the oracle\n{report}\njournal:\n{}\nlog:\n{}",
            journal.text(),
            p.log_tail(40)
        );
    }
}
