//! The spec front end's syntax layer: YAML with positions ([`yaml`]), structural decoding
//! into a spanned AST ([`ast`]), expression syntax ([`expr`]) and scalar values
//! ([`values`]: durations, types, names). Semantic checks live in `check`.

pub mod ast;
mod decode;
pub mod expr;
pub mod values;
pub mod yaml;

use crate::diag::Reporter;

/// Parses and decodes a spec. `None` when the YAML itself is invalid (reported); other
/// errors are reported and the AST holds what could be read.
pub(crate) fn parse(rep: &mut Reporter) -> Option<ast::Spec> {
    let root = yaml::parse(rep)?;
    Some(decode::decode(rep, &root))
}
