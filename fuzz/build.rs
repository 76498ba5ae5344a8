//! Generates the fused code of `decoder.yaml` into `$OUT_DIR` with the code generator
//! `streamc build` uses; `src/decoder.rs` `include!`s it.

use std::path::Path;

fn main() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("decoder.yaml");
    println!("cargo:rerun-if-changed={}", spec.display());
    println!("cargo:rerun-if-changed=../compiler/src");
    let checked = match streamc::check::check_file(&spec) {
        Ok(c) => c,
        Err(d) => panic!("{}", streamc::diag::render(&d, false)),
    };
    let code = streamc::codegen::generate_module(&checked.plan)
        .unwrap_or_else(|e| panic!("generating {}: {e}", spec.display()));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("decoder.rs");
    std::fs::write(out, code).expect("writing generated code");
}
