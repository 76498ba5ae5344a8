//! Helpers shared by the end-to-end tests in `tests/tests/`: build a spec from
//! `pipelines/` into a temporary directory, run the binary with its file sinks
//! redirected there, and read the results back as an upsert view.

pub mod generator;
pub mod harness;
pub mod oracle;

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

/// Kafka helpers: the real broker of `scripts/kafka`, driven with Debian's `kcat` and the
/// broker's own topic tool. Every test makes its own topics.
pub mod kafka {
    use super::root;
    use serde_json::Value;
    use std::io::Write;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub fn brokers() -> String {
        std::env::var("STREAMC_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
    }

    /// A topic name unique to this test run.
    pub fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("t{}-{nanos:x}-{name}", std::process::id())
    }

    /// Creates a topic with `partitions` partitions; fails the test with a hint when no
    /// broker answers.
    pub fn create_topic(topic: &str, partitions: u32) {
        let out = Command::new(root().join("scripts/kafka"))
            .args(["topics", "--create", "--topic", topic])
            .args([
                "--partitions",
                &partitions.to_string(),
                "--replication-factor",
                "1",
            ])
            .output()
            .expect("running scripts/kafka");
        assert!(
            out.status.success(),
            "creating topic {topic} failed (is the broker running? `scripts/kafka start`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces one message per line to one partition, in order.
    pub fn produce(topic: &str, partition: u32, lines: &[String]) {
        let mut child = Command::new("kcat")
            .args([
                "-P",
                "-b",
                &brokers(),
                "-t",
                topic,
                "-p",
                &partition.to_string(),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kcat (apt-get install kcat)");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for l in lines {
                writeln!(stdin, "{l}").expect("writing to kcat");
            }
        }
        assert!(child.wait().expect("kcat").success(), "kcat -P failed");
    }

    /// One consumed message.
    #[derive(Debug, Clone)]
    pub struct Message {
        pub partition: i64,
        pub offset: i64,
        pub key: Option<String>,
        pub payload: String,
    }

    /// Everything in the topic now, from the beginning.
    pub fn consume(topic: &str) -> Vec<Message> {
        let out = Command::new("kcat")
            .args([
                "-C",
                "-b",
                &brokers(),
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-J",
                "-q",
            ])
            .output()
            .expect("kcat");
        assert!(
            out.status.success(),
            "kcat -C: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("kcat -J line");
                Message {
                    partition: v["partition"].as_i64().unwrap_or(-1),
                    offset: v["offset"].as_i64().unwrap_or(-1),
                    key: v["key"].as_str().map(str::to_string),
                    payload: v["payload"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect()
    }

    /// The payloads of a topic, parsed as JSON.
    pub fn consume_json(topic: &str) -> Vec<Value> {
        consume(topic)
            .iter()
            .map(|m| serde_json::from_str(&m.payload).expect("JSON payload"))
            .collect()
    }

    /// Polls `cond` until it holds or `timeout` passes; returns whether it held.
    pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        cond()
    }

    /// A running pipeline binary; stopped with SIGTERM by `stop`, killed if dropped.
    pub struct Running {
        child: Child,
        stderr: Option<std::thread::JoinHandle<String>>,
    }

    impl Running {
        pub fn start(binary: &Path, args: &[String]) -> Self {
            let mut child = Command::new(binary)
                .args(args)
                .env("STREAMC_BROKERS", brokers())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting the pipeline");
            let mut err = child.stderr.take().expect("stderr");
            let stderr = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                s
            });
            Running {
                child,
                stderr: Some(stderr),
            }
        }

        /// Whether the process has exited already.
        pub fn exited(&mut self) -> bool {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }

        /// SIGTERM, then the exit status and everything it wrote to stderr.
        pub fn stop(mut self) -> (std::process::ExitStatus, String) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            let status = loop {
                if let Ok(Some(s)) = self.child.try_wait() {
                    break s;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break self.child.wait().expect("wait");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let err = self
                .stderr
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            (status, err)
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A port free on loopback right now (for `--metrics-addr`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port; the response body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Holds a machine-wide lock for tests that use a fixed Redis database (their specs name
/// fixed keys): two test runs at once on one machine (one Redis) take turns instead of
/// flushing each other's data. Released when dropped.
pub fn redis_db_lock(db: u32) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("streamc-test-redis-db{db}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    f
}
