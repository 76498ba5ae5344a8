//! Proc macros for user crates. Placeholder: the macro issue adds `#[pipeline]`, which
//! will parse with the `streamc` library's front end and generate with its code
//! generator, turning diagnostics into `compile_error!`.
