//! `streamc checkpoints list|inspect|gc STORAGE`: what a checkpoint storage holds, and
//! collecting what no kept checkpoint references. The `streamc` CLI calls these for
//! local storage; for `s3://` it builds a small binary of the runtime with the feature
//! `s3` whose `main` is [`main`] (as `streamc serve` builds its server), so the CLI
//! itself never links the S3 client.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    self as checkpoint, CheckpointRef, CheckpointStore, Found, Manifest, OffsetMetadata, Storage,
    manifest::parse_id, paths,
};
use crate::{WATERMARK_MAX, WATERMARK_MIN};

/// Partitions shown per source in a `list` row before `+N`.
const SHORT_PARTITIONS: usize = 4;

/// Opens the storage `url` names (S3 configured from the AWS environment variables).
fn open(url: &str) -> Result<Box<dyn Storage>, String> {
    checkpoint::open_storage(url).map_err(|e| e.to_string())
}

/// Prints a table of every complete checkpoint in `url` (of one job, one instance).
pub fn list(url: &str, job: Option<&str>, instance: Option<&str>) -> Result<(), String> {
    let storage = open(url)?;
    let found = checkpoint::scan(storage.as_ref(), job, instance).map_err(|e| e.to_string())?;
    let incomplete = found.iter().filter(|f| !f.complete).count();
    let now = now_ms();
    let mut rows = vec![
        [
            "JOB",
            "INSTANCE",
            "ID",
            "CREATED (UTC)",
            "AGE",
            "MODE",
            "SIZE",
            "WRITTEN",
            "GROUPS",
            "SOURCES (partition:offset)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in found.iter().filter(|f| f.complete) {
        let mut row = vec![f.job.clone(), f.instance.clone(), f.id.to_string()];
        match checkpoint::load_manifest(storage.as_ref(), &f.job, &f.reference()) {
            Ok(Some(m)) => row.extend([
                time(m.created_ms),
                age(now.saturating_sub(m.created_ms)),
                m.mode.to_string(),
                bytes(m.total_bytes),
                bytes(m.written_bytes),
                m.groups.len().to_string(),
                short_sources(&m),
            ]),
            Ok(None) => continue, // collected since the scan
            Err(e) => row.push(format!("unreadable: {e}")),
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        eprintln!(
            "no checkpoints in {}{}",
            storage.location(""),
            scope(job, instance)
        );
    } else {
        print!("{}", table(&rows));
    }
    if incomplete > 0 {
        eprintln!(
            "({incomplete} incomplete checkpoint director{} without a manifest: \
             half-written, or kept for the blobs of newer chains)",
            if incomplete == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// Prints one checkpoint: readable, or its manifest as stored (`json`).
pub fn inspect(
    url: &str,
    id: &str,
    job: Option<&str>,
    instance: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let storage = open(url)?;
    let found = resolve(storage.as_ref(), id, job, instance)?;
    let r = found.reference();
    let manifest = checkpoint::load_manifest(storage.as_ref(), &found.job, &r)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("checkpoint {}/{r} was deleted meanwhile", found.job))?;
    let key = paths::manifest_key(&found.job, &r.instance, r.id);
    if json {
        let raw = storage
            .get(&key)
            .map_err(|e| format!("{}: {e}", storage.location(&key)))?
            .ok_or_else(|| format!("checkpoint {}/{r} was deleted meanwhile", found.job))?;
        print!("{}", String::from_utf8_lossy(&raw));
    } else {
        print!("{}", describe(&manifest, &storage.location(&key), now_ms()));
    }
    Ok(())
}

/// Collects the checkpoints of `job` (every instance, or one): per instance, keeps the
/// newest `retain` complete checkpoints, those named in `keep`, and every blob their
/// chains reference; deletes the other manifests (first), their blobs, and incomplete
/// directories no kept chain uses. With `dry_run`, only says what it would delete.
pub fn gc(
    url: &str,
    job: &str,
    instance: Option<&str>,
    retain: usize,
    keep: &[CheckpointRef],
    dry_run: bool,
) -> Result<(), String> {
    if retain == 0 {
        return Err("--retain must keep at least one checkpoint".into());
    }
    let storage = open(url)?;
    let found =
        checkpoint::scan(storage.as_ref(), Some(job), instance).map_err(|e| e.to_string())?;
    let mut instances: Vec<String> = found.iter().map(|f| f.instance.clone()).collect();
    instances.dedup();
    if instances.is_empty() {
        eprintln!(
            "no checkpoints in {}{}",
            storage.location(""),
            scope(Some(job), instance)
        );
        return Ok(());
    }
    for inst in instances {
        let store = CheckpointStore::new(open(url)?, job, &inst).map_err(|e| e.to_string())?;
        if dry_run {
            let plan = store
                .plan_collect(retain, keep)
                .map_err(|e| e.to_string())?;
            let ids: Vec<String> = plan.deleted.iter().map(u64::to_string).collect();
            println!(
                "{job}/{inst}: would keep {}, would delete checkpoints [{}] ({} object{})",
                plan.kept.len(),
                ids.join(", "),
                plan.deleted_objects,
                if plan.deleted_objects == 1 { "" } else { "s" }
            );
            continue;
        }
        let report = store.collect(retain, keep).map_err(|e| e.to_string())?;
        println!(
            "{job}/{inst}: kept {:?}, deleted checkpoints {:?}, {} object{} deleted",
            report.kept,
            report.deleted,
            report.deleted_objects,
            if report.deleted_objects == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The `main` of the checkpoint tool `streamc checkpoints` runs for `s3://` storage:
/// `list STORAGE [--job J] [--instance I]`, `inspect STORAGE ID [--job J] [--instance I]
/// [--json]`, `gc STORAGE --job J [--instance I] [--retain N] [--keep I/ID]...
/// [--dry-run]` (the `streamc checkpoints` options, which it checked already).
pub fn main() -> ExitCode {
    match run(std::env::args_os().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<(), String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let text = |v: std::ffi::OsString| {
        v.into_string()
            .map_err(|_| "an argument is not UTF-8".to_string())
    };
    let (mut positional, mut job, mut instance, mut json, mut dry_run) =
        (Vec::new(), None, None, false, false);
    let (mut retain, mut keep) = (
        usize::try_from(crate::driver::DEFAULT_RETAIN).unwrap_or(3),
        Vec::new(),
    );
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(e)? {
        match arg {
            Long("job") => job = Some(text(parser.value().map_err(e)?)?),
            Long("instance") => instance = Some(text(parser.value().map_err(e)?)?),
            Long("json") => json = true,
            Long("dry-run") => dry_run = true,
            Long("retain") => {
                retain = text(parser.value().map_err(e)?)?
                    .parse()
                    .map_err(|_| "--retain takes a number".to_string())?;
            }
            Long("keep") => {
                let r: CheckpointRef = text(parser.value().map_err(e)?)?
                    .parse()
                    .map_err(|e: super::CheckpointError| e.to_string())?;
                keep.push(r);
            }
            Value(v) => positional.push(text(v)?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let (job, instance) = (job.as_deref(), instance.as_deref());
    match positional.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list", url] => list(url, job, instance),
        ["inspect", url, id] => inspect(url, id, job, instance, json),
        ["gc", url] => {
            let job = job.ok_or("gc needs --job")?;
            gc(url, job, instance, retain, &keep, dry_run)
        }
        _ => Err("usage: list STORAGE | inspect STORAGE ID | gc STORAGE --job J".into()),
    }
}

/// The one complete checkpoint that `id` (`<instance>/<id>` or a bare id) names.
fn resolve(
    storage: &dyn Storage,
    id: &str,
    job: Option<&str>,
    instance: Option<&str>,
) -> Result<Found, String> {
    let (instance, id) = if id.contains('/') {
        let r: CheckpointRef = id
            .parse()
            .map_err(|e: super::CheckpointError| e.to_string())?;
        if let Some(flag) = instance.filter(|i| *i != r.instance) {
            return Err(format!(
                "`{id}` is a checkpoint of instance `{}`, but --instance says `{flag}`",
                r.instance
            ));
        }
        (Some(r.instance), r.id)
    } else {
        let n = parse_id(id).ok_or_else(|| {
            format!(
                "invalid checkpoint `{id}`: expected <instance>/<id> or an id, e.g. `0/42` or `42`"
            )
        })?;
        (instance.map(str::to_string), n)
    };
    let candidates: Vec<Found> = checkpoint::scan(storage, job, instance.as_deref())
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|f| f.id == id)
        .collect();
    let complete: Vec<&Found> = candidates.iter().filter(|f| f.complete).collect();
    let names = |fs: &[&Found]| {
        fs.iter()
            .map(|f| format!("{}/{}", f.job, f.reference()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match complete.as_slice() {
        [one] => Ok((*one).clone()),
        [] if !candidates.is_empty() => Err(format!(
            "checkpoint {} is incomplete (no manifest): it was never committed, or it was \
             collected and only blobs that newer chains use are left",
            names(&candidates.iter().collect::<Vec<_>>())
        )),
        [] => Err(format!(
            "no checkpoint {id} in {}{}",
            storage.location(""),
            scope(job, instance.as_deref())
        )),
        many => Err(format!(
            "checkpoint id {id} is ambiguous: {}; name one as <instance>/<id> (and --job)",
            names(many)
        )),
    }
}

/// The readable form of a manifest for `inspect`.
fn describe(m: &Manifest, location: &str, now: i64) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "checkpoint {} {}", m.job, m.reference());
    let _ = writeln!(o, "  manifest  {location}");
    let _ = writeln!(
        o,
        "  created   {} UTC ({} ago)",
        time(m.created_ms),
        age(now.saturating_sub(m.created_ms))
    );
    let _ = writeln!(o, "  mode      {}", m.mode);
    let _ = writeln!(o, "  format    {}", m.format_version);
    let _ = writeln!(
        o,
        "  size      {} of state, {} written by this checkpoint",
        bytes(m.total_bytes),
        bytes(m.written_bytes)
    );
    let metadata = OffsetMetadata::Checkpoint(m.reference());
    let _ = writeln!(
        o,
        "  kafka     offsets committed with it carry `{metadata}`"
    );

    let _ = writeln!(o, "\nsources");
    if m.sources.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for s in &m.sources {
        let _ = writeln!(o, "  {} ({})", s.name, s.kind);
        let mut rows = vec![
            ["PARTITION", "NEXT OFFSET", "WATERMARK", "IDLE"]
                .map(String::from)
                .to_vec(),
        ];
        for p in &s.partitions {
            rows.push(vec![
                p.partition.to_string(),
                p.offset.to_string(),
                watermark(p.watermark),
                if p.idle { "yes" } else { "no" }.to_string(),
            ]);
        }
        indent(o, &table(&rows), "    ");
    }

    let _ = writeln!(o, "\nsinks");
    if m.sinks.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for s in &m.sinks {
        let position = match s.position {
            Some(p) => format!("position {p} bytes (truncated back to it on restore)"),
            None => "no position".to_string(),
        };
        let _ = writeln!(o, "  {} ({}): {position}", s.name, s.kind);
    }

    let _ = writeln!(o, "\nstate layout");
    if m.layout.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    let mut rows = Vec::new();
    for l in &m.layout {
        rows.push(vec![
            l.name.clone(),
            l.fingerprint.clone(),
            l.description.clone(),
        ]);
    }
    indent(o, &table(&rows), "  ");

    let _ = writeln!(o, "\nkey groups ({})", m.groups.len());
    for (group, chain) in &m.groups {
        let total = chain.iter().fold(0u64, |n, b| n.saturating_add(b.bytes));
        let _ = writeln!(
            o,
            "  {group}: chain of {} blob{}, {}",
            chain.len(),
            if chain.len() == 1 { "" } else { "s" },
            bytes(total)
        );
        let rows: Vec<Vec<String>> = chain
            .iter()
            .map(|b| {
                vec![
                    if b.full { "full" } else { "delta" }.to_string(),
                    b.path.clone(),
                    bytes(b.bytes),
                    format!("xxh3 {:016x}", b.xxh3),
                ]
            })
            .collect();
        indent(o, &table(&rows), "    ");
    }
    if !m.extra.is_null() {
        let _ = writeln!(o, "\nextra\n  {}", m.extra);
    }
    out
}

/// `source p:offset p:offset ... +N`, per source, `; `-separated.
fn short_sources(m: &Manifest) -> String {
    let sources: Vec<String> = m
        .sources
        .iter()
        .map(|s| {
            let mut text = s.name.clone();
            for p in s.partitions.iter().take(SHORT_PARTITIONS) {
                let _ = write!(text, " {}:{}", p.partition, p.offset);
            }
            if s.partitions.len() > SHORT_PARTITIONS {
                let _ = write!(text, " +{}", s.partitions.len() - SHORT_PARTITIONS);
            }
            text
        })
        .collect();
    if sources.is_empty() {
        "-".to_string()
    } else {
        sources.join("; ")
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn indent(out: &mut String, text: &str, by: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{by}{line}");
    }
}

fn scope(job: Option<&str>, instance: Option<&str>) -> String {
    match (job, instance) {
        (None, None) => String::new(),
        (Some(j), None) => format!(" for job `{j}`"),
        (None, Some(i)) => format!(" for instance `{i}`"),
        (Some(j), Some(i)) => format!(" for job `{j}`, instance `{i}`"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2024-05-01 12:00:00.123` (UTC), or the raw number out of chrono's range.
fn time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => format!("{ms} ms"),
    }
}

fn watermark(w: i64) -> String {
    match w {
        WATERMARK_MIN => "none (no event yet)".to_string(),
        WATERMARK_MAX => "end (+infinity)".to_string(),
        w => format!("{w} ({} UTC)", time(w)),
    }
}

/// `45s`, `3m 10s`, `2h 5m`, `4d 3h`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
