//! `trueup demo`: a broken PaaS in a folder, repaired step by step.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::plan_cmds::machine_config;
use super::{Args, out, outln};
use crate::apply;
use crate::plan::{self, Verbosity, render_text};
use crate::reconcile::{self, Source};
use crate::spec::{self, Specs};
use crate::store::Store;
use crate::time::Duration;
use crate::world::stage::stage_demo;

/// Arguments of `trueup demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Build the demo world in DIR (new or empty) instead of a new temporary folder
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Tells the plan as step 2, before anything changes, and opens step 3; stops the apply
/// when stdout cannot be written.
struct Narrate(crate::time::Timestamp, Option<anyhow::Error>);

impl reconcile::Listener for Narrate {
    fn planned(&mut self, plan: &crate::plan::Plan) {
        let told = outln!("\n== 2. What trueup will do about it (trueup plan)\n")
            .and_then(|()| out!("{}", render_text(plan, self.0, Verbosity::Verbose)))
            .and_then(|()| outln!("\n== 3. Doing it (trueup apply)\n"));
        self.1 = told.err();
    }

    fn interrupted(&mut self) -> Option<String> {
        self.1.as_ref().map(|_| "stopped: standard output cannot be written".to_owned())
    }
}

/// Builds the demo world, shows its status and plan, applies it, and plans again.
pub fn demo(args: &Args, cmd: &DemoArgs) -> anyhow::Result<ExitCode> {
    let now = super::now(args);
    let dir = match &cmd.dir {
        Some(dir) => crate::model::normalize(
            &std::path::absolute(dir).with_context(|| format!("cannot make `{}` absolute", dir.display()))?,
        ),
        None => std::env::temp_dir().join(format!("trueup-demo-{}-{}", now.compact(), std::process::id())),
    };
    let staged = stage_demo(&dir, now).with_context(|| format!("cannot build the demo in `{}`", dir.display()))?;
    let specs = Specs::one(spec::default_spec());
    let (store, _) = Store::open(&staged.db)?;
    let cfg = machine_config(&staged.root, &staged.routes_dir, Duration::from_secs(5));
    let flags = format!(
        "--db {} --root {} --routes-dir {}",
        staged.db.display(),
        staged.root.display(),
        staged.routes_dir.display()
    );

    outln!("trueup demo: a small PaaS, frozen right after the server rebooted in the middle of")?;
    outln!("four deploys. It lives in {}:", dir.display())?;
    outln!("  state database  {}", staged.db.display())?;
    outln!("  managed root    {}   (releases, `current` links, webroot links)", staged.root.display())?;
    outln!("  route files     {}   (Traefik dynamic configuration)", staged.routes_dir.display())?;

    let (world, _) = reconcile::plan_machine(&store, &specs, &cfg, now)?;
    outln!("\n== 1. What the machine looks like (trueup status)\n")?;
    out!("{}", plan::render_status(&plan::status(&specs, &world, now), Verbosity::Verbose))?;

    let mut narrate = Narrate(now, None);
    let applied = reconcile::apply_machine(&store, &specs, &cfg, now, Source::Fresh, &mut narrate);
    if let Some(err) = narrate.1 {
        return Err(err);
    }
    let applied = applied?;
    out!("{}", apply::render_report(&applied.report))?;
    outln!("{}", applied.summary_line())?;

    outln!("\n== 4. Planning again: a repaired world needs nothing more\n")?;
    let (world, again) = reconcile::plan_machine(&store, &specs, &cfg, now)?;
    out!("{}", render_text(&again, now, Verbosity::Verbose))?;
    outln!("\n{}", plan::render_status(&plan::status(&specs, &world, now), Verbosity::Verbose))?;

    outln!("== Try it yourself\n")?;
    outln!("  trueup {flags} status")?;
    outln!("  rm {}/blog/current && trueup {flags} plan", staged.root.display())?;
    outln!("  trueup {flags} apply")?;
    outln!("\nThe folder stays until you remove it: rm -r {}", dir.display())?;
    let converged = applied.report.all_done() && again.actions.is_empty();
    Ok(if converged { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
