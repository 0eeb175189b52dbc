//! `trueup validate` and `trueup graph` (placeholder, being written).

use std::process::ExitCode;

use super::Args;

/// Arguments of `trueup validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files to check; the built-in spec when none is given
    pub specs: Vec<std::path::PathBuf>,
    /// Print diagnostics as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `trueup graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The spec to draw; the built-in spec when absent
    pub spec: Option<std::path::PathBuf>,
}

pub fn validate(_args: &Args, _cmd: &ValidateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

pub fn graph(_args: &Args, _cmd: &GraphArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
