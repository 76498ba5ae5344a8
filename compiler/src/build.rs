//! `streamc build`: write the pipeline crate (from `templates/` and `codegen`), compile
//! it with cargo against the runtime in one shared target directory, place the binary.
//!
//! Architecture invariant: the runtime and its dependencies compile once per feature set
//! and profile; a spec change recompiles only the small generated crate. Three things
//! make that true: one target directory for every generated crate, the workspace's
//! `Cargo.lock` copied into each crate (same dependency versions), and one release
//! profile (`templates/Cargo.toml.hbs` repeats the workspace's).

use crate::codegen::{self, CodegenError};
use crate::plan::Plan;
use handlebars::Handlebars;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CARGO_TOML_TEMPLATE: &str = include_str!("../../templates/Cargo.toml.hbs");
const MAIN_RS_TEMPLATE: &str = include_str!("../../templates/main.rs.hbs");
/// The workspace lock file: generated crates resolve to exactly these versions.
const WORKSPACE_LOCK: &str = include_str!("../../Cargo.lock");

/// What librocksdb-sys needs to link Debian's librocksdb-dev instead of building
/// RocksDB's C++ (22 minutes; see runtime/Cargo.toml): the same values as the
/// workspace's `.cargo/config.toml`, so a generated crate and the workspace's tests
/// share one build of it in the shared target directory. A variable already set in
/// the environment wins.
pub const ROCKSDB_ENV: [(&str, &str); 2] = [
    ("ROCKSDB_LIB_DIR", "/usr/lib/x86_64-linux-gnu"),
    ("ROCKSDB_INCLUDE_DIR", "/usr/include"),
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Unsupported(CodegenError),
    /// A streamc bug: generated code did not compile, or code generation failed.
    #[error(
        "internal error: the code generated for `{spec}` did not compile. This is a streamc \
         bug, not a mistake in your spec; please report it with the log at {log}"
    )]
    Internal { spec: String, log: PathBuf },
    #[error("internal error in code generation for `{spec}`: {message}")]
    Codegen { spec: String, message: String },
    #[error("cargo failed to build the pipeline (not a compile error in generated code):\n{0}")]
    Cargo(String),
    #[error("could not run cargo: {0} (streamc needs a Rust toolchain with cargo on PATH)")]
    NoCargo(std::io::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("template error: {0}")]
    Template(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Where to place the binary; default `./<name>`.
    pub output: Option<PathBuf>,
    /// Shared target directory; default [`default_target_dir`].
    pub target_dir: Option<PathBuf>,
    /// Where to write the generated crate; default `<target dir>/crates/<name>-<hash>`.
    pub crate_dir: Option<PathBuf>,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct Built {
    pub binary: PathBuf,
    pub crate_dir: PathBuf,
    pub elapsed: Duration,
    /// Crates cargo actually compiled (0 when everything was fresh).
    pub compiled: usize,
}

/// The runtime crate generated crates depend on: `STREAMC_RUNTIME_DIR`, else the
/// `runtime/` beside the compiler's sources.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMC_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
    p.canonicalize().unwrap_or(p)
}

/// `STREAMC_TARGET_DIR`, else `target/streamc` of the streamc workspace (a directory of
/// its own so that a nested cargo never waits on the lock of an enclosing build).
pub fn default_target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMC_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ws = ws.canonicalize().unwrap_or(ws);
    ws.join("target").join("streamc")
}

fn short_hash(s: &str) -> String {
    format!("{:08x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as u32)
}

/// Writes the pipeline crate into `dir`: `Cargo.toml`, `Cargo.lock`, `src/main.rs`.
/// Files whose content is unchanged are not rewritten (cargo then sees nothing new).
pub fn write_crate(plan: &Plan, dir: &Path) -> Result<(), BuildError> {
    let code = codegen::generate_main(plan).map_err(|e| match e {
        CodegenError::Unsupported(_) => BuildError::Unsupported(e),
        CodegenError::Internal(message) => BuildError::Codegen {
            spec: plan.spec_path.display().to_string(),
            message,
        },
    })?;
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    let spec_file = plan
        .spec_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let data = json!({
        "name": plan.name,
        "bin_name": bin_name(plan),
        "spec_file": spec_file,
        "streamc_version": env!("CARGO_PKG_VERSION"),
        "runtime_path": runtime_dir().to_string_lossy().replace('\\', "/"),
        "features": codegen::runtime_features(plan),
        "code": code,
    });
    let cargo_toml = hb
        .render_template(CARGO_TOML_TEMPLATE, &data)
        .map_err(|e| BuildError::Template(e.to_string()))?;
    let main_rs = hb
        .render_template(MAIN_RS_TEMPLATE, &data)
        .map_err(|e| BuildError::Template(e.to_string()))?;
    std::fs::create_dir_all(dir.join("src")).map_err(io(format!("creating {}", dir.display())))?;
    write_if_changed(&dir.join("Cargo.toml"), &cargo_toml)?;
    write_if_changed(&dir.join("src/main.rs"), &main_rs)?;
    if !dir.join("Cargo.lock").exists() {
        write_if_changed(&dir.join("Cargo.lock"), WORKSPACE_LOCK)?;
    }
    Ok(())
}

fn write_if_changed(path: &Path, content: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::write(path, content).map_err(io(format!("writing {}", path.display())))
}

/// The binary's name inside the shared target directory: unique per spec path, so two
/// pipelines with the same name never overwrite each other's artifact.
fn bin_name(plan: &Plan) -> String {
    format!(
        "{}-{}",
        plan.name,
        short_hash(&plan.spec_path.to_string_lossy())
    )
}

/// Generates and compiles `plan`; returns where the binary is.
pub fn build(plan: &Plan, opts: &BuildOptions) -> Result<Built, BuildError> {
    let start = Instant::now();
    let target = opts.target_dir.clone().unwrap_or_else(default_target_dir);
    let crate_dir = opts
        .crate_dir
        .clone()
        .unwrap_or_else(|| target.join("crates").join(bin_name(plan)));
    write_crate(plan, &crate_dir)?;
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&plan.name));
    compile(
        &crate_dir,
        &target,
        &plan.name,
        &plan.spec_path.display().to_string(),
        &output,
        opts.progress,
        start,
    )
}

/// A binary of the runtime that the CLI runs for a command whose dependencies it does
/// not link itself.
struct Tool {
    /// The package name (`streamc-pipeline-` + this).
    name: &'static str,
    /// The binary's name (`streamc-` + something).
    bin_name: &'static str,
    /// The command, for messages (`streamc serve`).
    what: &'static str,
    /// The runtime features it needs.
    features: &'static [&'static str],
    /// The path of its `main` in the runtime.
    main: &'static str,
}

/// Builds the binary of `streamc serve`: the runtime's dashboard server fed by Redis
/// (features `serve` and `redis`), compiled like a pipeline (same template, profile,
/// lock file and target directory), so the `streamc` CLI itself never links axum and
/// tokio. `opts.output` defaults to `<target dir>/bin/streamc-serve`.
pub fn build_server(opts: &BuildOptions) -> Result<Built, BuildError> {
    build_tool(
        &Tool {
            name: "serve",
            bin_name: "streamc-serve",
            what: "streamc serve",
            features: &["serve", "redis"],
            main: "serve::redis::main",
        },
        opts,
    )
}

/// Builds the binary `streamc checkpoints` runs for `s3://` storage: the runtime's
/// `checkpoint::inspect::main` with the feature `s3`, so the CLI never links the S3
/// client. `opts.output` defaults to `<target dir>/bin/streamc-checkpoints`.
pub fn build_checkpoint_tool(opts: &BuildOptions) -> Result<Built, BuildError> {
    build_tool(
        &Tool {
            name: "checkpoints",
            bin_name: "streamc-checkpoints",
            what: "streamc checkpoints (S3)",
            features: &["s3"],
            main: "checkpoint::inspect::main",
        },
        opts,
    )
}

fn build_tool(tool: &Tool, opts: &BuildOptions) -> Result<Built, BuildError> {
    let start = Instant::now();
    let target = opts.target_dir.clone().unwrap_or_else(default_target_dir);
    let crate_dir = opts
        .crate_dir
        .clone()
        .unwrap_or_else(|| target.join("crates").join(tool.bin_name));
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    let data = json!({
        "name": tool.name,
        "bin_name": tool.bin_name,
        "spec_file": format!("({})", tool.what),
        "streamc_version": env!("CARGO_PKG_VERSION"),
        "runtime_path": runtime_dir().to_string_lossy().replace('\\', "/"),
        "features": tool.features,
    });
    let cargo_toml = hb
        .render_template(CARGO_TOML_TEMPLATE, &data)
        .map_err(|e| BuildError::Template(e.to_string()))?;
    let main_rs = format!(
        "// Generated by streamc {}: the binary of `{}`. Do not edit.\n\
         fn main() -> ::std::process::ExitCode {{\n    ::streamc_runtime::{}()\n}}\n",
        env!("CARGO_PKG_VERSION"),
        tool.what,
        tool.main
    );
    std::fs::create_dir_all(crate_dir.join("src"))
        .map_err(io(format!("creating {}", crate_dir.display())))?;
    write_if_changed(&crate_dir.join("Cargo.toml"), &cargo_toml)?;
    write_if_changed(&crate_dir.join("src/main.rs"), &main_rs)?;
    if !crate_dir.join("Cargo.lock").exists() {
        write_if_changed(&crate_dir.join("Cargo.lock"), WORKSPACE_LOCK)?;
    }
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| target.join("bin").join(tool.bin_name));
    compile(
        &crate_dir,
        &target,
        tool.name,
        tool.what,
        &output,
        opts.progress,
        start,
    )
}

/// Compiles the crate in `crate_dir` (package `streamc-pipeline-<name>`) and places
/// its binary at `output`.
fn compile(
    crate_dir: &Path,
    target: &Path,
    name: &str,
    what: &str,
    output: &Path,
    progress: bool,
    start: Instant,
) -> Result<Built, BuildError> {
    let crate_dir = crate_dir.to_path_buf();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (k, v) in ROCKSDB_ENV {
        if std::env::var_os(k).is_none() {
            command.env(k, v);
        }
    }
    let mut child = command
        .arg("build")
        .arg("--release")
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::NoCargo)?;

    let total = WORKSPACE_LOCK.matches("[[package]]").count() as u64;
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} building {prefix} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix(name.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    // stderr is drained on a thread so cargo never blocks on a full pipe.
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut executable: Option<PathBuf> = None;
    let mut rendered = String::new();
    let mut compiled = 0usize;
    let mut own_errors = 0usize;
    let pkg = format!("streamc-pipeline-{name}");
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            match msg["reason"].as_str() {
                Some("compiler-artifact") => {
                    let name = msg["target"]["name"].as_str().unwrap_or("");
                    if msg["fresh"].as_bool() == Some(false) {
                        compiled += 1;
                    }
                    bar.inc(1);
                    bar.set_message(name.to_string());
                    if msg["package_id"].as_str().is_some_and(|p| p.contains(&pkg))
                        && let Some(exe) = msg["executable"].as_str()
                    {
                        executable = Some(PathBuf::from(exe));
                    }
                }
                Some("compiler-message") => {
                    if let Some(r) = msg["message"]["rendered"].as_str() {
                        rendered.push_str(r);
                    }
                    let is_error = msg["message"]["level"].as_str() == Some("error");
                    if is_error && msg["package_id"].as_str().is_some_and(|p| p.contains(&pkg)) {
                        own_errors += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let status = child.wait().map_err(io("waiting for cargo"))?;
    let stderr = err_thread.join().unwrap_or_default();
    bar.finish_and_clear();

    if !status.success() {
        if own_errors > 0 {
            let log = crate_dir.join("build.log");
            let _ = std::fs::write(&log, format!("{rendered}\n{stderr}"));
            return Err(BuildError::Internal {
                spec: what.to_string(),
                log,
            });
        }
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(BuildError::Cargo(tail.join("\n")));
    }
    let exe = executable
        .ok_or_else(|| BuildError::Cargo("cargo reported no executable for the pipeline".into()))?;
    let binary = output.to_path_buf();
    if let Some(parent) = binary.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    // Copy to a temporary name and rename: a running binary at `binary` is never
    // overwritten in place ("text file busy").
    let tmp = binary.with_extension("streamc-tmp");
    std::fs::copy(&exe, &tmp).map_err(io(format!("copying {}", exe.display())))?;
    std::fs::rename(&tmp, &binary).map_err(io(format!("placing {}", binary.display())))?;
    Ok(Built {
        binary,
        crate_dir,
        elapsed: start.elapsed(),
        compiled,
    })
}
