//! State layouts across rebuilds, against the real broker and the independent oracle.
//!
//! A checkpointed run of the job is killed halfway through its input (the offsets its
//! last committed checkpoint names are the split point). Then three binaries built from
//! specs with incompatible changes (another window size, one more aggregate, another key)
//! must refuse to restore, naming what changed, exit non-zero and leave the committed
//! offsets and outputs alone. Finally a binary built from a compatible change (a filter
//! on the tumbling flow and an extra sink) restores and finishes with `--bounded`: the
//! outputs equal the oracle's for "records before the split unfiltered, after it
//! filtered", exactly, and the extra sink holds exactly the rows emitted after the split.

use std::time::Duration;
use streamc_tests::generator::{Params, generate};
use streamc_tests::harness::*;
use streamc_tests::kafka::{create_topic, unique};
use streamc_tests::oracle::{multiset, report_multisets};

const PARTITIONS: u32 = 4;

#[test]
fn restore_refuses_another_layout_and_accepts_a_compatible_one() {
    let _serial = serial();
    let seed = seed(5);
    let tag = "layout";
    let scratch = Scratch::new(tag);
    let mut journal = Journal::new();
    let topics = Topics::create(tag, PARTITIONS);
    let extra = unique("layout-extra");
    create_topic(&extra, 1);
    let base = StateJob::new(
        "layout_job",
        &topics,
        Some(Checkpoints::local("300ms", scratch.join("checkpoints"))),
    );
    let compatible = base.with_variant(Variant::FilterAndSink {
        extra_topic: extra.clone(),
    });
    let bin = base.build(&scratch.path, "base.yaml");
    let input = generate(&Params::standard(seed, PARTITIONS, 6000));
    let half: Vec<usize> = input.partitions.iter().map(|p| p.len() / 2).collect();
    let first: Vec<_> = input
        .partitions
        .iter()
        .zip(&half)
        .map(|(p, &h)| p[..h].to_vec())
        .collect();
    produce_all(&topics.input, first);

    // The first run: until a checkpoint has committed offsets on every partition.
    let mut a = Proc::start(
        "base",
        &bin,
        &base.args(0, false),
        &[],
        scratch.join("a.log"),
    );
    let committed = wait_until(Duration::from_secs(60), || {
        let o = group_offsets(&base.group, &topics.input);
        o.len() == PARTITIONS as usize && o.values().all(|&x| x > 0)
    });
    assert!(committed, "no checkpoint committed:\n{}", a.log_tail(40));
    std::thread::sleep(Duration::from_millis(500));
    journal.log(format!("SIGKILL the first run: {}", a.kill()));
    // (A commit the broker had received before the kill completes meanwhile.)
    std::thread::sleep(Duration::from_secs(1));
    let split = group_offsets(&base.group, &topics.input);
    journal.log(format!("split at the committed offsets {split:?}"));
    let before = Outputs::read(&topics, true).summary();
    produce_all(&topics.input, input.tail(&half));

    // Incompatible layouts: refused, named, nothing touched.
    // Each refusal names the flow and what changed in it (in any words: one of these).
    let changes: [(Variant, &str, &[&str]); 3] = [
        (
            Variant::WindowSize,
            "size.yaml",
            &["2000 ms", "2000ms", "2s", "2 s"],
        ),
        (
            Variant::Aggregate,
            "agg.yaml",
            &["countdistinct", "count_distinct", "spread"],
        ),
        (
            Variant::Key,
            "key.yaml",
            &["value i64", "value: i64", "(user, value)", "user, value"],
        ),
    ];
    for (variant, file, words) in changes {
        let job = base.with_variant(variant.clone());
        let bin = job.build(&scratch.path, file);
        let mut p = Proc::start(
            file,
            &bin,
            &job.args(0, true),
            &[],
            scratch.join(&format!("{file}.log")),
        );
        let status = p.wait_timeout(Duration::from_secs(60));
        let log = p.log_text();
        journal.log(format!("{variant:?}: {status:?}"));
        assert!(
            status.is_some_and(|s| !s.success() && s.code().is_some()),
            "{variant:?}: the binary did not refuse the checkpoint (exit {status:?}):\n{}",
            p.log_tail(40)
        );
        let lower = log.to_lowercase();
        assert!(
            lower.contains("`tumbling`")
                && lower.contains("checkpoint")
                && words.iter().any(|w| lower.contains(w)),
            "{variant:?}: the refusal does not name the flow and what changed (one of {words:?}):\n{log}"
        );
        assert_eq!(
            group_offsets(&base.group, &topics.input),
            split,
            "{variant:?} moved the committed offsets"
        );
        assert_eq!(
            Outputs::read(&topics, true).summary(),
            before,
            "{variant:?} committed output"
        );
    }

    // The compatible change restores and finishes exactly.
    let bin = compatible.build(&scratch.path, "compatible.yaml");
    let mut b = Proc::start(
        "compatible",
        &bin,
        &compatible.args(0, true),
        &[],
        scratch.join("b.log"),
    );
    let status = b.wait_timeout(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "the compatible binary: {status:?}\n{}",
        b.log_tail(40)
    );
    let at = |p: u32| split.get(&p).copied().unwrap_or(0);
    let expected = base.oracle().run_with(&input.payloads(), |flow, p, e| {
        flow != 0 || e.offset < at(p) || e.value % 5 != 0
    });
    let got = Outputs::read(&topics, true);
    if let Err(report) = compare_exact(&expected, &got) {
        panic!(
            "seed {seed}: after a compatible rebuild\n{report}\n{}",
            journal.text()
        );
    }
    let after_split: Vec<serde_json::Value> = expected.results["tumbling"]
        .iter()
        .zip(&expected.emitted_at["tumbling"])
        .filter(|(_, (p, o))| *o >= at(*p))
        .map(|(r, _)| r.clone())
        .collect();
    let extra_rows: Vec<serde_json::Value> = consume(&extra, true)
        .iter()
        .map(|m| serde_json::from_str(&m.payload).expect("JSON"))
        .collect();
    let r = report_multisets(
        "the extra sink",
        &multiset(&after_split),
        &multiset(&extra_rows),
    );
    assert!(r.is_empty(), "seed {seed}: {r}\n{}", journal.text());
}
