//! `trueup validate` and `trueup graph`: thin wrappers over [`crate::spec::load_bytes`]
//! and [`crate::graph::render`].

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::{Args, out};
use crate::diag::{self, Diagnostic};
use crate::graph::{self, Format};
use crate::spec::{self, DEFAULT_SPEC_NAME, DEFAULT_SPEC_SOURCE};

/// Arguments of `trueup validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files to check; the built-in spec when none is given
    pub specs: Vec<PathBuf>,
    /// Print diagnostics as JSON on stdout instead of text on stderr
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `trueup graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The spec to draw; else `--spec`, else the built-in spec
    pub spec: Option<PathBuf>,
    /// The diagram language
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: Format,
}

/// One file's result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    file: String,
    valid: bool,
    diagnostics: Vec<Diagnostic>,
}

/// Checks each spec; exit 0 when all are valid, 1 otherwise.
///
/// # Errors
///
/// Only when stdout or stderr cannot be written; unreadable files are reported and
/// make the exit code 1.
pub fn validate(_args: &Args, cmd: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut inputs: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
    if cmd.specs.is_empty() {
        inputs.push((DEFAULT_SPEC_NAME.to_owned(), Ok(DEFAULT_SPEC_SOURCE.as_bytes().to_vec())));
    }
    for path in &cmd.specs {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read spec `{name}`: {e}"));
        inputs.push((name, bytes));
    }
    let mut reports = Vec::new();
    let mut stderr = std::io::stderr().lock();
    let mut stdout = std::io::stdout().lock();
    for (name, bytes) in inputs {
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(message) => {
                if !cmd.json {
                    writeln!(stderr, "error: {message}")?;
                }
                let d = Diagnostic::error(diag::Pos::default(), message);
                reports.push(Report { file: name, valid: false, diagnostics: vec![d] });
                continue;
            }
        };
        let (valid, diagnostics, states) = match spec::load_bytes(&name, &bytes) {
            Ok((spec, warnings)) => (true, warnings, spec.states.len()),
            Err(diagnostics) => (false, diagnostics, 0),
        };
        if !cmd.json {
            let source = String::from_utf8_lossy(&bytes);
            let text = diag::render(&name, &source, &diagnostics);
            if !text.is_empty() {
                writeln!(stderr, "{text}")?;
            }
            if valid {
                let warnings = match diagnostics.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_owned(),
                    n => format!(", {n} warnings"),
                };
                writeln!(stdout, "{name}: valid ({states} states{warnings})")?;
            } else {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                let s = if errors == 1 { "" } else { "s" };
                writeln!(stderr, "{name}: invalid ({errors} error{s})")?;
            }
        }
        reports.push(Report { file: name, valid, diagnostics });
    }
    if cmd.json {
        let text = serde_json::to_string_pretty(&reports).context("cannot encode the report as JSON")?;
        writeln!(stdout, "{text}")?;
    }
    let all_valid = reports.iter().all(|r| r.valid);
    Ok(if all_valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Prints the spec as a diagram.
///
/// # Errors
///
/// When the spec cannot be read or is invalid.
pub fn graph(args: &Args, cmd: &GraphArgs) -> anyhow::Result<ExitCode> {
    let untyped = args.specs.iter().find(|s| s.kind.is_none()).map(|s| s.path.as_path());
    let spec = super::load_spec(cmd.spec.as_deref().or(untyped))?;
    out!("{}", graph::render(&spec, cmd.format))?;
    Ok(ExitCode::SUCCESS)
}
