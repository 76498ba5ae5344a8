//! `streamc-fuzz spec|decoder|all [--seconds N] [--runs N] [--seed N] [--save]`: see
//! the crate's documentation (`src/lib.rs`) and `scripts/fuzz`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use streamc_fuzz::{Budget, fuzz};

const USAGE: &str =
    "usage: streamc-fuzz spec|decoder|all [--seconds N] [--runs N] [--seed N] [--save]";

fn parse_args() -> Result<(Vec<&'static str>, Budget), String> {
    let mut args = std::env::args().skip(1);
    let mut targets = Vec::new();
    let mut budget = Budget {
        seconds: None,
        runs: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        save: false,
    };
    let num = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "spec" => targets.push("spec"),
            "decoder" => targets.push("decoder"),
            "all" => targets.extend(["spec", "decoder"]),
            "--seconds" => budget.seconds = Some(num(args.next(), "--seconds")?),
            "--runs" => budget.runs = Some(num(args.next(), "--runs")?),
            "--seed" => budget.seed = num(args.next(), "--seed")?,
            "--save" => budget.save = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if targets.is_empty() {
        return Err(format!("name a target: spec, decoder or all\n{USAGE}"));
    }
    if budget.seconds.is_none() && budget.runs.is_none() {
        budget.seconds = Some(60);
    }
    Ok((targets, budget))
}

fn main() -> ExitCode {
    let (targets, budget) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("streamc-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    // A panic is a finding: keep its message for the report, print nothing else.
    let panic_msg = Arc::new(Mutex::new(String::new()));
    {
        let msg = Arc::clone(&panic_msg);
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut m) = msg.lock() {
                *m = info.to_string();
            }
        }));
    }
    eprintln!("streamc-fuzz: seed {}", budget.seed);
    let mut failed = false;
    for &target in &targets {
        // The stack the CLI gives the front end (compiler/src/main.rs).
        let report = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, || fuzz(target, &budget, &panic_msg))
                .map(|h| h.join())
        });
        let Ok(Ok(report)) = report else {
            eprintln!("streamc-fuzz: the {target} fuzz loop could not run");
            return ExitCode::FAILURE;
        };
        let secs = report.elapsed.as_secs_f64();
        println!(
            "{}: {} inputs in {secs:.1} s ({:.0}/s), corpus {} seeds + {} kept, {} kinds of answers, {} findings",
            report.target,
            report.runs,
            report.runs as f64 / secs.max(1e-9),
            report.seeds,
            report.kept,
            report.signatures,
            report.findings.len()
        );
        if let Some((all, reached)) = report.coverage {
            println!("  coverage: {reached} of {all} code regions reached");
        }
        for (why, path) in &report.findings {
            println!("  {}: {why}", path.display());
        }
        failed |= !report.findings.is_empty();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
