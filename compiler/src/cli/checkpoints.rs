//! `streamc checkpoints list|inspect|gc STORAGE`: the runtime's own reading of a
//! checkpoint storage (`streamc_runtime::checkpoint::inspect`). Local storage is read in
//! process; for `s3://` the CLI builds (once) and runs the runtime's checkpoint tool,
//! which links the S3 client the CLI does not.

use std::os::unix::process::CommandExt;

use miette::{IntoDiagnostic, miette};
use streamc_runtime::checkpoint::{CheckpointRef, inspect};

use crate::build::{self, BuildOptions};

/// What to do.
pub enum Command<'a> {
    List,
    Inspect {
        id: &'a str,
        json: bool,
    },
    Gc {
        job: &'a str,
        retain: usize,
        keep: &'a [String],
        dry_run: bool,
    },
}

/// Runs `command` on the storage `url` (of `job` / `instance` when given).
pub fn run(
    url: &str,
    command: Command<'_>,
    job: Option<&str>,
    instance: Option<&str>,
) -> miette::Result<()> {
    // `--keep` is checked here, for local and S3 storage alike.
    let keep = match &command {
        Command::Gc { keep, .. } => keep
            .iter()
            .map(|k| {
                k.parse::<CheckpointRef>()
                    .map_err(|e| miette!("--keep: {e}"))
            })
            .collect::<miette::Result<Vec<_>>>()?,
        Command::List | Command::Inspect { .. } => Vec::new(),
    };
    if url.starts_with("s3://") {
        return on_s3(url, &command, &keep, job, instance);
    }
    let result = match command {
        Command::List => inspect::list(url, job, instance),
        Command::Inspect { id, json } => inspect::inspect(url, id, job, instance, json),
        Command::Gc {
            job,
            retain,
            dry_run,
            ..
        } => inspect::gc(url, job, instance, retain, &keep, dry_run),
    };
    result.map_err(|e| miette!("{e}"))
}

/// Builds the checkpoint tool with S3 support (once: it is cached in the shared target
/// directory like pipelines) and runs it with the same command.
fn on_s3(
    url: &str,
    command: &Command<'_>,
    keep: &[CheckpointRef],
    job: Option<&str>,
    instance: Option<&str>,
) -> miette::Result<()> {
    let mut args: Vec<String> = Vec::new();
    let mut job = job;
    match command {
        Command::List => args.extend(["list".into(), url.into()]),
        Command::Inspect { id, json } => {
            args.extend(["inspect".into(), url.into(), id.to_string()]);
            if *json {
                args.push("--json".into());
            }
        }
        Command::Gc {
            job: gc_job,
            retain,
            dry_run,
            ..
        } => {
            job = Some(gc_job);
            args.extend([
                "gc".into(),
                url.into(),
                "--retain".into(),
                retain.to_string(),
            ]);
            for k in keep {
                args.extend(["--keep".into(), k.to_string()]);
            }
            if *dry_run {
                args.push("--dry-run".into());
            }
        }
    }
    if let Some(j) = job {
        args.extend(["--job".into(), j.into()]);
    }
    if let Some(i) = instance {
        args.extend(["--instance".into(), i.into()]);
    }
    let built = build::build_checkpoint_tool(&BuildOptions {
        output: None,
        target_dir: None,
        crate_dir: None,
        progress: true,
    })
    .map_err(|e| miette!("{e}"))?;
    if built.compiled > 0 {
        eprintln!(
            "built the S3 checkpoint tool in {:.1}s",
            built.elapsed.as_secs_f64()
        );
    }
    let err = std::process::Command::new(&built.binary).args(&args).exec();
    Err(err).into_diagnostic()
}
