//! Generates the fused code of `pipelines/bench_tumbling.yaml` into `$OUT_DIR` for the
//! in-process benchmark (`benches/fused.rs` `include!`s it), with the same code
//! generator `streamc build` uses.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = root.join("pipelines/bench_tumbling.yaml");
    println!("cargo:rerun-if-changed={}", spec.display());
    println!("cargo:rerun-if-changed=../compiler/src");
    let checked = match streamc::check::check_file(&spec) {
        Ok(c) => c,
        Err(d) => panic!("{}", streamc::diag::render(&d, false)),
    };
    let code = streamc::codegen::generate_module(&checked.plan)
        .unwrap_or_else(|e| panic!("generating {}: {e}", spec.display()));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("bench_tumbling.rs");
    std::fs::write(out, code).expect("writing generated code");
}
