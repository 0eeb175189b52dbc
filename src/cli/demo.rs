//! `trueup demo`: a broken PaaS in a folder, repaired step by step.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::Args;
use super::plan_cmds::machine_config;
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

/// Tells the plan as step 2, before anything changes, and opens step 3.
struct Narrate(crate::time::Timestamp);

impl reconcile::Listener for Narrate {
    fn planned(&mut self, plan: &crate::plan::Plan) {
        println!("\n== 2. What trueup will do about it (trueup plan)\n");
        print!("{}", render_text(plan, self.0, Verbosity::Verbose));
        println!("\n== 3. Doing it (trueup apply)\n");
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

    println!("trueup demo: a small PaaS, frozen right after the server rebooted in the middle of");
    println!("four deploys. It lives in {}:", dir.display());
    println!("  state database  {}", staged.db.display());
    println!("  managed root    {}   (releases, `current` links, webroot links)", staged.root.display());
    println!("  route files     {}   (Traefik dynamic configuration)", staged.routes_dir.display());

    let (world, _) = reconcile::plan_machine(&store, &specs, &cfg, now)?;
    println!("\n== 1. What the machine looks like (trueup status)\n");
    print!("{}", plan::render_status(&plan::status(&specs, &world, now), Verbosity::Verbose));

    let applied = reconcile::apply_machine(&store, &specs, &cfg, now, Source::Fresh, &mut Narrate(now))?;
    print!("{}", apply::render_report(&applied.report));
    println!("{}", applied.summary_line());

    println!("\n== 4. Planning again: a repaired world needs nothing more\n");
    let (world, again) = reconcile::plan_machine(&store, &specs, &cfg, now)?;
    print!("{}", render_text(&again, now, Verbosity::Verbose));
    println!("\n{}", plan::render_status(&plan::status(&specs, &world, now), Verbosity::Verbose));

    println!("== Try it yourself\n");
    println!("  trueup {flags} status");
    println!("  rm {}/blog/current && trueup {flags} plan", staged.root.display());
    println!("  trueup {flags} apply");
    println!("\nThe folder stays until you remove it: rm -r {}", dir.display());
    let converged = applied.report.all_done() && again.actions.is_empty();
    Ok(if converged { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
