//! Reading a spec file: YAML with positions, validation, compilation into the arena.

use super::Spec;
use crate::diag::{Diagnostic, Pos};

/// Loads, validates and compiles one spec.
///
/// `file` is the name shown in diagnostics; `source` is the YAML text.
///
/// # Errors
///
/// Every error found, each with its position. On success, the warnings.
pub fn load(file: &str, source: &str) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let _ = (file, source);
    Err(vec![Diagnostic::error(Pos::default(), "the spec loader is being written")])
}
