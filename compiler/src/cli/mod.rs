//! Subcommands of the `streamc` binary that are not compiler passes (declared by
//! `main.rs`; not part of the library).

pub mod checkpoints;
