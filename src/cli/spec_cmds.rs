//! `trueup validate` and `trueup graph`: thin wrappers over [`crate::spec::load_bytes`]
//! and [`crate::graph::render`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
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
    /// Spec files to check; else each `--spec`, else the built-in spec
    #[arg(id = "files", value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    /// Print diagnostics as JSON on stdout instead of text on stderr
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `trueup graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The spec to draw; else `--spec`, else the built-in spec
    // Its own id: one named `spec` would shadow the global `--spec`.
    #[arg(id = "file", value_name = "SPEC")]
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
pub fn validate(args: &Args, cmd: &ValidateArgs) -> anyhow::Result<ExitCode> {
    // The files named here, else the specs in force (`--spec`, `TRUEUP_SPEC`), whatever
    // deployment type each is for, else the built-in spec.
    let paths: Vec<&Path> = if cmd.specs.is_empty() {
        args.specs.iter().map(|s| s.path.as_path()).collect()
    } else {
        cmd.specs.iter().map(PathBuf::as_path).collect()
    };
    let mut inputs: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
    if paths.is_empty() {
        inputs.push((DEFAULT_SPEC_NAME.to_owned(), Ok(DEFAULT_SPEC_SOURCE.as_bytes().to_vec())));
    }
    for path in paths {
        let name = path.display().to_string();
        let bytes = super::read_capped_bytes(path, "spec", super::SPEC_CAP).map_err(|e| format!("{e:#}"));
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
    // The file named here, else the `--spec` for every type, else the only `--spec`.
    let global = match args.specs.as_slice() {
        [one] => Some(one),
        many => many.iter().find(|s| s.kind.is_none()),
    };
    if cmd.spec.is_none() && global.is_none() && !args.specs.is_empty() {
        anyhow::bail!("several `--spec TYPE=FILE` and none for every type: name the spec to draw, `trueup graph FILE`");
    }
    let spec = super::load_spec(cmd.spec.as_deref().or(global.map(|s| s.path.as_path())))?;
    out!("{}", graph::render(&spec, cmd.format))?;
    Ok(ExitCode::SUCCESS)
}
