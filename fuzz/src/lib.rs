//! The fuzzers of `streamc-fuzz`: fuzzing that runs on the stable toolchain (cargo-fuzz needs a
//! nightly one). Each target runs inputs mutated from its corpus (`fuzz/corpus/<target>`,
//! plus the specs in `pipelines/` for the front end) and checks an oracle on each; an
//! input that gets a new kind of answer (a new set of diagnostics, a new dead-letter
//! error, acceptance) joins the corpus in memory, so the search follows what the code
//! under test distinguishes: feedback-guided, with the kinds of answers standing in
//! for the coverage counters a nightly toolchain would give.
//!
//! ```text
//! streamc-fuzz spec|decoder|all [--seconds N] [--runs N] [--seed N] [--save]
//! ```
//!
//! `--save` writes the inputs that found new kinds of answers into the corpus. Findings
//! (panics, broken invariants) go to `fuzz/findings/` and make the exit code 1. Before
//! each input runs it is written to `target/fuzz/<target>.current`, so an abort (a
//! stack overflow) leaves the input behind; `scripts/fuzz` saves it as a finding.

pub mod coverage;
pub mod decoder;
pub mod mutate;
pub mod spec;

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::Rng;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hash(data: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The seed inputs of a target.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut dirs = vec![repo().join("fuzz/corpus").join(target)];
    if target == "spec" {
        dirs.push(repo().join("pipelines"));
        dirs.push(repo().join("pipelines/errors"));
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let is_yaml = p.extension().is_some_and(|e| e == "yaml");
            if p.is_file()
                && (target != "spec" || is_yaml || d.ends_with(target))
                && let Ok(b) = std::fs::read(&p)
            {
                out.push(b);
            }
        }
    }
    if out.is_empty() {
        out.push(b"{}".to_vec());
    }
    out
}

enum Target {
    Spec,
    Decoder(Box<decoder::Decoder>),
}

impl Target {
    /// Runs one input: its kinds of answer, and a broken invariant if any.
    fn run(&mut self, data: &[u8]) -> (Vec<String>, Option<String>) {
        match self {
            Target::Spec => {
                let o = spec::run(data);
                (o.features, o.finding)
            }
            Target::Decoder(d) => {
                let o = d.run(data);
                (vec![o.signature], o.finding)
            }
        }
    }

    fn mutate(&self, rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
        let rounds = 1 + rng.below(4);
        for _ in 0..rounds {
            match (self, rng.below(3)) {
                (Target::Spec, 0) => mutate::lines(rng, data, spec::LINES),
                (Target::Spec, 1) => mutate::token(rng, data, spec::DICT),
                (Target::Decoder(_), 0 | 1) => mutate::token(rng, data, decoder::DICT),
                _ => mutate::bytes(rng, data, other),
            }
        }
    }
}

/// What one run of a target did.
pub struct Report {
    pub target: &'static str,
    pub runs: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    pub kept: usize,
    pub signatures: usize,
    /// With coverage: the counters of the binary, and how many were reached.
    pub coverage: Option<(usize, usize)>,
    pub findings: Vec<(String, PathBuf)>,
}

/// How long a run goes and how it starts.
pub struct Budget {
    pub seconds: Option<u64>,
    pub runs: Option<u64>,
    pub seed: u64,
    /// Write the inputs that found new kinds of answers into `fuzz/corpus/<target>`.
    pub save: bool,
}

/// Fuzzes `target` ("spec" or "decoder") within `args`; `panic_msg` holds the message
/// of the last panic (set by the caller's panic hook).
pub fn fuzz(target: &'static str, args: &Budget, panic_msg: &Arc<Mutex<String>>) -> Report {
    let mut rng = Rng::new(args.seed ^ hash(target.as_bytes()));
    let mut corpus = seeds(target);
    let seeds = corpus.len();
    let mut t = match target {
        "spec" => Target::Spec,
        _ => Target::Decoder(Box::new(decoder::Decoder::new())),
    };
    let work = repo().join("target/fuzz");
    let _ = std::fs::create_dir_all(&work);
    let current = File::create(work.join(format!("{target}.current"))).ok();
    let findings_dir = repo().join("fuzz/findings");
    let corpus_dir = repo().join("fuzz/corpus").join(target);
    let mut signatures: BTreeSet<String> = BTreeSet::new();
    let mut seen_findings: HashSet<String> = HashSet::new();
    let mut findings = Vec::new();
    let mut kept = 0;
    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs(s));
    let mut runs = 0u64;
    let mut cov = coverage::Coverage::new();
    // The seeds first, as they are; then mutations of the corpus.
    let mut next_seed = 0;
    loop {
        if args.runs.is_some_and(|n| runs >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let input = if next_seed < seeds {
            next_seed += 1;
            corpus[next_seed - 1].clone()
        } else {
            let mut data = rng.pick(&corpus).clone();
            let other = rng.pick(&corpus).clone();
            t.mutate(&mut rng, &mut data, &other);
            data
        };
        if let Some(f) = &current {
            let _ = f.set_len(0);
            let _ = f.write_all_at(&input, 0);
        }
        runs += 1;
        cov.reset();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(&input)));
        let (signature, finding) = match outcome {
            Ok(o) => o,
            Err(_) => {
                if let Target::Decoder(_) = t {
                    // Its state is whatever the panic left: start afresh.
                    t = Target::Decoder(Box::new(decoder::Decoder::new()));
                }
                let msg = panic_msg.lock().map(|m| m.clone()).unwrap_or_default();
                (vec!["panic".to_string()], Some(format!("panic: {msg}")))
            }
        };
        if let Some(why) = finding {
            let kind = spec::normalize(&why);
            if seen_findings.insert(kind) {
                let _ = std::fs::create_dir_all(&findings_dir);
                let path = findings_dir.join(format!("{target}-{:016x}", hash(&input)));
                let _ = std::fs::write(&path, &input);
                let _ = std::fs::write(path.with_extension("txt"), format!("{why}\n"));
                eprintln!("{target}: FINDING ({}): {why}", path.display());
                findings.push((why, path));
            }
            continue;
        }
        let mut new = cov.take_new() > 0;
        for f in signature {
            new |= signatures.insert(f);
        }
        if new && next_seed >= seeds {
            kept += 1;
            if args.save {
                let _ = std::fs::create_dir_all(&corpus_dir);
                let _ = std::fs::write(corpus_dir.join(format!("{:016x}", hash(&input))), &input);
            }
            corpus.push(input);
        }
    }
    // For a look at what the target tells apart.
    let _ = std::fs::write(
        work.join(format!("{target}.signatures")),
        signatures
            .iter()
            .map(|s| format!("{s}\n"))
            .collect::<String>(),
    );
    Report {
        target,
        runs,
        elapsed: started.elapsed(),
        seeds,
        kept,
        signatures: signatures.len(),
        coverage: cov.enabled().then(|| cov.reached()),
        findings,
    }
}

/// Runs every input of `target`'s corpus once, unmutated, and returns the broken
/// invariants (input number, what broke): the corpus as a regression test.
pub fn replay(target: &str) -> Vec<(usize, String)> {
    let mut t = match target {
        "spec" => Target::Spec,
        _ => Target::Decoder(Box::new(decoder::Decoder::new())),
    };
    let mut out = Vec::new();
    for (i, input) in seeds(target).iter().enumerate() {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(input))) {
            Ok((_, Some(why))) => out.push((i, why)),
            Ok(_) => {}
            Err(_) => out.push((i, "panic".to_string())),
        }
    }
    out
}
