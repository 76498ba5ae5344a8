//! The streamc compiler as a library: the CLI (`main.rs`) and the proc-macro crate
//! (`streamc-macros`) are thin layers over it.
//!
//! Pipeline: `spec` (YAML with positions) → `check` (names, types, diagnostics) →
//! `plan::Plan` → `ir` (logical DAG and fusion) → `codegen` (Rust crate) → `build`
//! (cargo, shared target directory) → native binary.

pub mod build;
pub mod check;
pub mod codegen;
pub mod diag;
pub mod ir;
pub mod plan;
pub mod spec;
