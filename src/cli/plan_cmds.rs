//! `trueup simulate`, `trueup plan` and `trueup status`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{Args, load_spec};
use crate::plan::{self, render_json, render_text};
use crate::world::fixture;

/// Arguments of `trueup simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The fixture: one YAML world, see fixtures/README.md
    pub fixture: PathBuf,
    /// Print the plan as JSON (format version 1)
    #[arg(long)]
    pub json: bool,
}

/// Prints the plan for a fixture world, with no side effects.
///
/// The fixture's `now` is used unless `--now` is given.
pub fn simulate(args: &Args, cmd: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let spec = load_spec(args.spec.as_deref())?;
    let name = cmd.fixture.display().to_string();
    let source = std::fs::read_to_string(&cmd.fixture).with_context(|| format!("cannot read fixture `{name}`"))?;
    let fixture = match fixture::load(&name, &source) {
        Ok(f) => f,
        Err(diagnostics) => {
            eprint!("{}", crate::diag::render(&name, &source, &diagnostics));
            anyhow::bail!("fixture `{name}` is invalid");
        }
    };
    let now = args.now.unwrap_or(fixture.now);
    let plan = plan::plan(&spec, &fixture.world, now);
    if cmd.json {
        println!("{}", render_json(&plan, now));
    } else {
        print!("{}", render_text(&plan, now));
    }
    Ok(ExitCode::SUCCESS)
}
