//! The dashboard end to end, in headless Chromium: a generated binary reads clicks from
//! its stdin (fed here step by step), writes its windows to a real Redis and serves the
//! page itself (`serve:`, `--serve`); `streamc serve` serves the same windows from
//! Redis. `tests/browser/dashboard.mjs` (playwright-core driving Debian's chromium)
//! watches both pages: they load and show data, show a new window when it fires, show a
//! late correction as such, and, on another flow (session windows), show the two
//! sessions a late click bridges as retracted and their merge as fired. Screenshots are
//! kept in `target/test-artifacts/`: `dashboard-correction-{0,1}.png` (the corrected
//! window) and `dashboard-{0,1}.png` (the retractions), 0 the job's own page, 1
//! `streamc serve`'s.
//!
//! Needs Redis (`scripts/redis start`), node, chromium and `tests/browser/node_modules`
//! (`scripts/test` installs and starts them); fails with a hint when one is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};
use streamc_runtime::redis::conn::Conn;
use streamc_runtime::redis::resp::RedisUrl;
use streamc_tests::*;

const DB: u32 = 12;
/// 2026-12-01T12:00:00Z.
const BASE: i64 = 1_796_126_400_000;

fn url() -> String {
    let base = std::env::var("STREAMC_REDIS")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let rest = base.trim().trim_start_matches("redis://");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("redis://{host}/{DB}")
}

/// A child process whose stderr lines arrive on a channel (and are kept for messages).
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the `dashboard at http://ADDR/` line; the URL.
    fn dashboard_url(&mut self) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("no dashboard address; stderr:\n{}", self.seen.join("\n"))
                });
            self.seen.push(l.clone());
            if let Some(rest) = l.split("dashboard at ").nth(1)
                && !l.contains(" INFO ")
            {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
    }

    fn stderr(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn click(user: &str, amount: f64, at: i64) -> String {
    json!({"user": user, "amount": amount, "ts": BASE + at}).to_string()
}

fn feed(stdin: &mut ChildStdin, lines: &[String]) {
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
}

fn need(what: &str, ok: bool) {
    assert!(
        ok,
        "the browser test needs {what}: run `scripts/test` (it installs it)"
    );
}

#[test]
fn the_page_shows_windows_firing_and_late_corrections_live() {
    let _lock = redis_db_lock(DB);
    let root = root();
    let browser_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    need("chromium (Debian's package)", Path::new(&chromium).exists());
    need(
        "node",
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
    );
    need(
        "playwright-core in tests/browser/node_modules (npm ci)",
        browser_dir.join("node_modules/playwright-core").exists(),
    );
    let mut redis = Conn::connect(&RedisUrl::parse(&url()).unwrap())
        .unwrap_or_else(|e| panic!("no Redis at {} ({e}): run `scripts/redis start`", url()));
    redis.cmd(&["FLUSHDB"]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let job_bin = build(&pipeline("dashboard_e2e.yaml"), dir.path());
    let server_bin = streamc::build::build_server(&streamc::build::BuildOptions {
        output: Some(dir.path().join("streamc-serve")),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("building the server: {e}"))
    .binary;

    let mut job = Proc::start(
        Command::new(&job_bin)
            .args([
                "--input",
                "clicks=-",
                "--serve",
                "127.0.0.1:0",
                "--redis",
                &url(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let embedded = job.dashboard_url();
    let mut stdin = job.child.stdin.take().unwrap();
    let mut server = Proc::start(
        Command::new(&server_bin)
            .args(["--redis", &url(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    let served = server.dashboard_url();

    // Step 1: a and b click in [12:00:00, 12:00:10); c at 12:00:12 moves the watermark
    // to 12:00:11, so that window fires (revision 0).
    feed(
        &mut stdin,
        &[
            click("a", 5.0, 1000),
            click("a", 7.5, 2000),
            click("b", 1.0, 3000),
            click("c", 2.0, 12_000),
        ],
    );
    let shots: PathBuf = root.join("target/test-artifacts");
    // No picture of an earlier run is taken for one of this run.
    for name in [
        "dashboard-0",
        "dashboard-1",
        "dashboard-correction-0",
        "dashboard-correction-1",
        "dashboard-failure",
    ] {
        let _ = std::fs::remove_file(shots.join(format!("{name}.png")));
    }
    let mut node = Command::new("node")
        .current_dir(&browser_dir)
        .arg("dashboard.mjs")
        .arg("--shots")
        .arg(&shots)
        .args([&embedded, &served])
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let mut from_node = BufReader::new(node.stdout.take().unwrap());
    // Feeds: the embedded page's `<job>.<flow>`, `streamc serve`'s `<job>.<sink>`.
    let tumbling = json!(["dashboard_e2e.spend_per_10s", "dashboard_e2e.dashboard"]);
    let keys = json!(["user=a", "e2e:a"]);
    let w0 = format!("{}:{}", BASE, BASE + 10_000);
    let w1 = format!("{}:{}", BASE + 10_000, BASE + 20_000);
    let mut step = |s: Value, job: &mut Proc, server: &mut Proc| {
        writeln!(to_node, "{s}").unwrap();
        to_node.flush().unwrap();
        let mut line = String::new();
        from_node.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!(
                "the browser script said {line:?}\njob:\n{}\nserver:\n{}",
                job.stderr(),
                server.stderr()
            )
        });
        assert_eq!(
            answer["ok"],
            json!(true),
            "{answer:#}\njob:\n{}\nserver:\n{}",
            job.stderr(),
            server.stderr()
        );
    };
    step(
        json!({"name": "loads and shows data", "feeds": tumbling, "keys": keys, "window": w0, "status": "fired", "revision": 0,
               "values": {"clicks": "2", "spent": "12.5"}}),
        &mut job,
        &mut server,
    );
    // Step 2: a new window fires: a at 12:00:15, then c at 12:00:23 (watermark 12:00:22).
    feed(
        &mut stdin,
        &[click("a", 3.0, 15_000), click("c", 4.0, 23_000)],
    );
    step(
        json!({"name": "a new window fires", "feeds": tumbling, "keys": keys, "window": w1, "status": "fired", "revision": 0,
               "values": {"clicks": "1", "spent": "3"}}),
        &mut job,
        &mut server,
    );
    // Step 3: a late click for 12:00:05, within the 30 s lateness: the first window
    // fires again with revision 1 and the corrected sums.
    feed(&mut stdin, &[click("a", 9.0, 5000)]);
    step(
        json!({"name": "a late correction arrives", "feeds": tumbling, "keys": keys, "window": w0, "status": "corrected", "revision": 1,
               "values": {"clicks": "3", "spent": "21.5", "biggest": "9"}, "shot": "dashboard-correction"}),
        &mut job,
        &mut server,
    );
    // Step 4, the flow of sessions (gap 5 s): s clicks at 12:00:30 and 12:00:38, then c
    // at 12:00:45 moves the watermark to 12:00:44: both sessions of s fire.
    let feeds = json!(["dashboard_e2e.sessions", "dashboard_e2e.session_dashboard"]);
    let skeys = json!(["user=s", "e2e-session:s"]);
    let s0 = format!("{}:{}", BASE + 30_000, BASE + 35_000);
    let s1 = format!("{}:{}", BASE + 38_000, BASE + 43_000);
    let merged = format!("{}:{}", BASE + 30_000, BASE + 43_000);
    feed(
        &mut stdin,
        &[
            click("s", 1.0, 30_000),
            click("s", 2.0, 38_000),
            click("c", 1.0, 45_000),
        ],
    );
    for w in [&s0, &s1] {
        step(
            json!({"name": "sessions fire", "feeds": feeds, "keys": skeys, "window": w, "status": "fired", "revision": 0,
                   "values": {"clicks": "1"}}),
            &mut job,
            &mut server,
        );
    }
    // Step 5: a late click at 12:00:34 (within the 30 s lateness) bridges them: both are
    // retracted, and their merge fires as a new revision of the first (it had fired).
    feed(&mut stdin, &[click("s", 4.0, 34_000)]);
    for w in [&s0, &s1] {
        step(
            json!({"name": "a late click merges two sessions: both retracted", "feeds": feeds, "keys": skeys, "window": w,
                   "status": "retracted", "revision": 0}),
            &mut job,
            &mut server,
        );
    }
    step(
        json!({"name": "a late click merges two sessions: the merge fires as a correction", "feeds": feeds, "keys": skeys, "window": merged,
               "status": "corrected", "revision": 1, "values": {"clicks": "3", "spent": "7"}, "leader": "3"}),
        &mut job,
        &mut server,
    );
    step(json!({"done": true}), &mut job, &mut server);
    assert!(node.wait().unwrap().success());
    for name in ["dashboard-correction", "dashboard"] {
        for i in 0..2 {
            let png = shots.join(format!("{name}-{i}.png"));
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            assert!(size > 20_000, "{}: {size} bytes", png.display());
            eprintln!("screenshot: {}", png.display());
        }
    }

    // End of input: the job fires what is left and exits 0; the server stops cleanly
    // on SIGTERM.
    drop(stdin);
    let status = job.child.wait().unwrap();
    assert!(status.success(), "job: {status}\n{}", job.stderr());
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "server: {status}\n{}", server.stderr());
    // And Redis holds the corrected window.
    let rows = redis.cmd(&["ZRANGE", "e2e:a", "0", "0"]).unwrap();
    let first: Value = serde_json::from_str(rows.as_array().unwrap()[0].as_str().unwrap()).unwrap();
    assert_eq!(
        (first["clicks"].clone(), first["revision"].clone()),
        (json!(3), json!(1))
    );
    // And only the merge of the two sessions.
    let rows = redis.cmd(&["ZRANGE", "e2e-session:s", "0", "-1"]).unwrap();
    let rows: Vec<Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| (
                r["window_start"].clone(),
                r["window_end"].clone(),
                r["clicks"].clone()
            ))
            .collect::<Vec<_>>(),
        [(json!(BASE + 30_000), json!(BASE + 43_000), json!(3))]
    );
}
