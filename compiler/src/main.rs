//! `streamc`: the command line. A thin layer over the `streamc` library; the only place
//! that pretty-prints errors (miette).

mod cli;

use clap::{Parser, Subcommand};
use miette::{IntoDiagnostic, miette};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamc::build::{self, BuildOptions};
use streamc::check::{self, Checked};

#[derive(Parser)]
#[command(
    name = "streamc",
    version,
    about = "A dataflow compiler for streaming analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a spec; report every error with file:line:col.
    Check { spec: PathBuf },
    /// Print the logical plan and the fused plan.
    Explain { spec: PathBuf },
    /// Generate the pipeline crate and compile it into a native binary.
    Build {
        spec: PathBuf,
        /// Where to place the binary (default: ./<pipeline name>).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Shared cargo target directory (default: $STREAMC_TARGET_DIR or the
        /// streamc workspace's target/streamc).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Build if needed, then run the binary; arguments after `--` go to it.
    Run {
        spec: PathBuf,
        #[arg(long)]
        target_dir: Option<PathBuf>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write the generated crate to a directory without compiling it.
    Generate {
        spec: PathBuf,
        /// Directory for the crate.
        #[arg(long)]
        out: PathBuf,
    },
    /// The dashboard API and page (SSE and WebSocket), fed by the jobs' Redis sinks.
    /// Builds the server once (like a pipeline), then runs it; see `streamc serve --help`
    /// for its options (--redis URL, --listen ADDR, --stream KEY, ...).
    #[command(disable_help_flag = true)]
    Serve {
        /// Shared cargo target directory (as for `build`).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// The server's options, passed through (`--help` shows them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show or collect the checkpoints in a checkpoint storage (the spec's
    /// `checkpoint.storage`).
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCmd,
    },
}

#[derive(Subcommand)]
enum CheckpointsCmd {
    /// One line per checkpoint: job, instance, id, time, age, mode, size, offsets.
    List {
        /// `file:///abs/dir`, a directory or `s3://bucket/prefix` (S3 configured by the
        /// AWS_* environment variables).
        storage: String,
        /// Only this job (pipeline name).
        #[arg(long)]
        job: Option<String>,
        /// Only this instance (`--instance-id` of the job's binary).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Everything a checkpoint holds: offsets and watermarks per partition, sinks,
    /// state layout, the chain of blobs of every key group.
    Inspect {
        /// `file:///abs/dir`, a directory or `s3://bucket/prefix`.
        storage: String,
        /// `<instance>/<id>`, or a bare id when only one checkpoint has it.
        id: String,
        /// The job (pipeline name), if the storage holds several.
        #[arg(long)]
        job: Option<String>,
        /// The instance, to pick among checkpoints of one id.
        #[arg(long)]
        instance: Option<String>,
        /// Print the manifest as stored (JSON).
        #[arg(long)]
        json: bool,
    },
    /// Delete what no kept checkpoint references: per instance, keep the newest
    /// `--retain` complete checkpoints and those named by `--keep` (with every blob their
    /// chains use); delete other manifests first, then their blobs and half-written
    /// directories. A running job collects by itself and also keeps what its group's
    /// committed offsets name: name those with `--keep` (see `inspect`).
    Gc {
        /// `file:///abs/dir`, a directory or `s3://bucket/prefix`.
        storage: String,
        /// The job (pipeline name).
        #[arg(long)]
        job: String,
        /// Only this instance.
        #[arg(long)]
        instance: Option<String>,
        /// Complete checkpoints kept per instance.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        retain: u64,
        /// Also keep this checkpoint (`<instance>/<id>`); repeatable.
        #[arg(long)]
        keep: Vec<String>,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The stack of the thread that runs a command. Every recursive pass of the front end and
/// of code generation is bounded by the spec's documented limits (YAML nesting, expression
/// depth); this is a margin over what those limits need in any build profile, reserved
/// rather than used (pages are touched only as deep as a pass goes).
const STACK: usize = 256 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .name("streamc".into())
        .stack_size(STACK)
        .spawn(move || run(cli.command));
    let result = match worker {
        Ok(handle) => match handle.join() {
            Ok(result) => result,
            Err(_) => Err(miette!(
                "internal error: streamc stopped unexpectedly; this is a bug in streamc, \
                 please report it with the spec"
            )),
        },
        // No thread (a system limit): run on this one.
        Err(_) => run(Cli::parse().command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Checks a spec; on errors prints every diagnostic and returns None.
fn load(spec: &Path) -> Option<Checked> {
    let color = std::io::stderr().is_terminal();
    match check::check_file(spec) {
        Ok(checked) => {
            for w in &checked.warnings {
                eprintln!("{}", streamc::diag::render_one(w, color));
            }
            Some(checked)
        }
        Err(diags) => {
            eprintln!("{}", streamc::diag::render(&diags, color));
            None
        }
    }
}

fn run(cmd: Cmd) -> miette::Result<ExitCode> {
    match cmd {
        Cmd::Serve { target_dir, args } => {
            let built = build::build_server(&BuildOptions {
                output: None,
                target_dir,
                crate_dir: None,
                progress: true,
            })
            .map_err(|e| miette!("{e}"))?;
            if built.compiled > 0 {
                eprintln!(
                    "built the dashboard server in {:.1}s",
                    built.elapsed.as_secs_f64()
                );
            }
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&built.binary).args(&args).exec();
            Err(err).into_diagnostic()
        }
        Cmd::Checkpoints { command } => {
            use cli::checkpoints::{Command, run};
            match command {
                CheckpointsCmd::List {
                    storage,
                    job,
                    instance,
                } => run(&storage, Command::List, job.as_deref(), instance.as_deref())?,
                CheckpointsCmd::Inspect {
                    storage,
                    id,
                    job,
                    instance,
                    json,
                } => run(
                    &storage,
                    Command::Inspect { id: &id, json },
                    job.as_deref(),
                    instance.as_deref(),
                )?,
                CheckpointsCmd::Gc {
                    storage,
                    job,
                    instance,
                    retain,
                    keep,
                    dry_run,
                } => run(
                    &storage,
                    Command::Gc {
                        job: &job,
                        retain: usize::try_from(retain).unwrap_or(usize::MAX),
                        keep: &keep,
                        dry_run,
                    },
                    None,
                    instance.as_deref(),
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { spec } => {
            let Some(c) = load(&spec) else {
                return Ok(ExitCode::FAILURE);
            };
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            let p = &c.plan;
            println!(
                "{}: ok ({} sources, {} flows, {} sinks)",
                spec.display(),
                p.sources.len(),
                p.flows.len(),
                p.sinks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Explain { spec } => {
            let Some(c) = load(&spec) else {
                return Ok(ExitCode::FAILURE);
            };
            print!("{}", streamc::ir::explain(&c.plan));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Generate { spec, out } => {
            let Some(c) = load(&spec) else {
                return Ok(ExitCode::FAILURE);
            };
            build::write_crate(&c.plan, &out).map_err(|e| miette!("{e}"))?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build {
            spec,
            output,
            target_dir,
        } => {
            let Some(c) = load(&spec) else {
                return Ok(ExitCode::FAILURE);
            };
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            let built = build::build(
                &c.plan,
                &BuildOptions {
                    output,
                    target_dir,
                    crate_dir: None,
                    progress: true,
                },
            )
            .map_err(|e| miette!("{e}"))?;
            eprintln!(
                "built {} in {:.1}s ({} crate{} compiled)",
                built.binary.display(),
                built.elapsed.as_secs_f64(),
                built.compiled,
                if built.compiled == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            spec,
            target_dir,
            args,
        } => {
            let Some(c) = load(&spec) else {
                return Ok(ExitCode::FAILURE);
            };
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            let target = target_dir.unwrap_or_else(build::default_target_dir);
            let output = target.join("bin").join(&c.plan.name);
            let built = build::build(
                &c.plan,
                &BuildOptions {
                    output: Some(output),
                    target_dir: Some(target),
                    crate_dir: None,
                    progress: true,
                },
            )
            .map_err(|e| miette!("{e}"))?;
            if built.compiled > 0 {
                eprintln!(
                    "built {} in {:.1}s",
                    c.plan.name,
                    built.elapsed.as_secs_f64()
                );
            }
            // Replace this process, so signals (SIGTERM, Ctrl-C) reach the job directly.
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&built.binary).args(&args).exec();
            Err(err).into_diagnostic()
        }
    }
}
