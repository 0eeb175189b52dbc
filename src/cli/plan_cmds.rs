//! `trueup simulate`, `trueup plan`, `trueup status` and `trueup apply`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::lease_cmds::{self, HolderState};
use super::{Args, color, load_specs, note, noteln, out, outln, signals};
use crate::apply;
use crate::model::World;
use crate::plan::{self, render_json, render_text};
use crate::reconcile::{self, SavedPlan, Source};
use crate::store::{Held, OpenRun, Opened, Store, TookOver};
use crate::time::Duration;
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
    let specs = load_specs(&args.specs)?;
    let name = cmd.fixture.display().to_string();
    let source = super::read_capped(&cmd.fixture, "fixture", FIXTURE_CAP)?;
    let fixture = match fixture::load(&name, &source) {
        Ok(f) => f,
        Err(diagnostics) => {
            note!("{}", crate::diag::render(&name, &source, &diagnostics));
            anyhow::bail!("fixture `{name}` is invalid");
        }
    };
    let now = args.now.unwrap_or(fixture.now);
    let plan = plan::plan(&specs, &fixture.world, now);
    if cmd.json {
        outln!("{}", render_json(&plan, now))?;
    } else {
        out!("{}", args.paint(&render_text(&plan, now, args.verbosity())))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest fixture `simulate` reads: a world of thousands of projects.
const FIXTURE_CAP: u64 = 64 << 20;

/// Arguments of `trueup plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Print the plan as JSON (format version 1)
    #[arg(long)]
    pub json: bool,
    /// Exit 2 when there are changes to make (0: nothing to do, 1: error)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also save the plan to FILE, for `trueup apply FILE`: a new file, or a plan saved
    /// before (never the state database, a device, a folder or a symbolic link)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With `--out`, replace FILE even if it is a regular file that is not a saved plan
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// Observes the machine and prints the plan of repairs.
pub fn plan(args: &Args, cmd: &PlanArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    // Before anything is observed: a wrong `--out` is refused before the plan is shown.
    if let Some(out) = &cmd.out {
        check_out(out, &args.db, cmd.force)?;
    }
    let store = open_store_read_only(args)?;
    let now = super::now(args);
    // The fingerprint serializes the whole world: only a plan printed as JSON or saved
    // carries it.
    let (world, mut plan) =
        reconcile::plan_machine_unsealed(&store, &specs, &config(args, Duration::from_secs(0))?, now)?;
    if cmd.json || cmd.out.is_some() {
        plan.seal(&world);
    }
    // Saved before it is shown: a reader that closes the pipe early (`| head -1`) stops
    // the printing, and must not cost the file.
    if let Some(out) = &cmd.out {
        let saved = serde_json::to_string_pretty(&SavedPlan::new(&plan, &world, now))? + "\n";
        write_atomically(out, &saved).with_context(|| format!("cannot write the plan to `{}`", out.display()))?;
    }
    if cmd.json {
        outln!("{}", render_json(&plan, now))?;
    } else {
        out!("{}", args.paint(&render_text(&plan, now, args.verbosity())))?;
        let run = to_run(&plan);
        if !run.is_empty() {
            outln!(
                "\n`trueup apply` then runs the {} resumed deployment(s) to the end: {} (`--no-run` only records them).",
                run.len(),
                plan::first_named(&run)
            )?;
        }
    }
    if let Some(out) = &cmd.out {
        noteln!("Saved the plan to `{}`. Apply it with: trueup apply {}", out.display(), out.display());
    }
    let pending = !plan.actions.is_empty();
    // The process ends here: freeing a world of ten thousand projects path by path, and
    // a plan of as many findings, would only delay the exit (the memory goes back with
    // the process).
    std::mem::forget((world, plan));
    Ok(if cmd.detailed_exitcode && pending { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// What an apply recovered from before it began, a sentence each: the runs of earlier
/// applies it found interrupted, and the lease it took over from a holder that died or
/// lapsed. `apply` prints them; `serve` logs them.
pub(super) fn recovered(applied: &reconcile::Applied) -> Vec<String> {
    let mut lines: Vec<String> = applied
        .interrupted
        .iter()
        .map(|run| {
            format!(
                "An earlier apply (run `{}`, started {}) was interrupted with {} actions unfinished; this apply redid their work.",
                run.run, run.since, run.unfinished
            )
        })
        .collect();
    match &applied.took_over {
        Some(TookOver::Lapsed(held)) => lines.push(format!(
            "Took over the apply lease from `{}`, whose lease expired at {} (it died or stalled).",
            held.owner, held.until
        )),
        Some(TookOver::Dead(held)) => lines.push(format!(
            "Took over the lease of `{}` ({} is gone; its lease ran until {}).",
            held.owner,
            lease_cmds::process_of(held),
            held.until
        )),
        None => {}
    }
    lines
}

/// The largest saved plan `trueup apply FILE` reads: far above the plan of 10,000 broken
/// projects, far below what would exhaust memory.
const SAVED_PLAN_CAP: u64 = 64 << 20;

/// Refuses an `--out` that `plan` must not replace: the state database, anything but a
/// regular file (a device, a folder, a symbolic link, whose target would be kept or
/// replaced), and, unless `force`, an existing file that is not a saved plan.
fn check_out(out: &Path, db: &Path, force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot check `--out {shown}`")),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        anyhow::bail!("`--out {shown}` is a symbolic link: give the path of the plan file itself");
    }
    if kind.is_dir() {
        anyhow::bail!("`--out {shown}` is a folder: give the path of a file in it");
    }
    if !kind.is_file() {
        anyhow::bail!("`--out {shown}` is not a regular file (a device, a pipe or a socket): it is left alone");
    }
    let db_meta = std::fs::metadata(db).ok();
    if db_meta.is_some_and(|d| (d.dev(), d.ino()) == (meta.dev(), meta.ino())) {
        anyhow::bail!("`--out {shown}` is the state database: save the plan to another file");
    }
    let mut head = Vec::new();
    std::fs::File::open(out)
        .and_then(|f| f.take(SAVED_PLAN_CAP).read_to_end(&mut head))
        .with_context(|| format!("cannot read `--out {shown}`"))?;
    if !force && !SavedPlan::looks_like(&head) {
        anyhow::bail!(
            "`--out {shown}` exists and is not a plan saved by trueup: give a new file, or `--force` to replace it"
        );
    }
    Ok(())
}

/// Writes `text` to a new temporary file beside `path` and renames it over, so a crash
/// never leaves a truncated plan behind.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.trueup-tmp-{}", std::process::id()));
    // `create_new`: never through a link or over a file someone left under that name.
    let _ = std::fs::remove_file(&tmp);
    std::fs::File::create_new(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        // A full disk or a failed rename leaves no half-written temporary file behind.
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Arguments of `trueup status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
    /// Exit 2 when something needs repair: a deployment is stuck, a link is broken, or a
    /// row cannot be read (0: all is well, 1: error)
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Prints each project's live release and link health, and each unfinished deployment.
pub fn status(args: &Args, cmd: &StatusArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    let store = open_store_read_only(args)?;
    let now = super::now(args);
    let world = reconcile::observe_checked(&store, &specs, &config(args, Duration::from_secs(0))?)?;
    let status = plan::status(&specs, &world, now);
    // The real clock, as the lease's expiry is. A lapsed lease is no apply any more.
    let lease = store
        .lease_held()?
        .map(|held| (HolderState::of(&held, crate::time::clock::now()), held))
        .filter(|(state, _)| *state != HolderState::Lapsed);
    let open = store.open_runs()?;
    let attention = status.needs_repair() || !world.unreadable.is_empty();
    let exit = if cmd.detailed_exitcode && attention { ExitCode::from(2) } else { ExitCode::SUCCESS };
    if cmd.json {
        let lease = lease.as_ref().map(|(state, held)| {
            serde_json::json!({
                "owner": held.owner,
                "until": held.until,
                "host": held.host,
                "pid": held.pid,
                "state": state.name(),
            })
        });
        let doc = serde_json::json!({
            "format_version": 1,
            "now": status.now,
            "projects": status.projects,
            "unfinished": status.unfinished,
            "apply_lease": lease,
            "open_runs": open,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_status(args, &world, &status, lease.as_ref(), &open)?;
    }
    // The process ends here: freeing a world of ten thousand projects path by path, and
    // a row per project, would only delay the exit, as after `plan` (at 10,000 projects,
    // 75 million instructions, about 27 ms).
    std::mem::forget((world, status));
    Ok(exit)
}

/// The text of `status`: each project's row, the rows the store could not read, and the
/// lease and the runs an apply left open.
fn print_status(
    args: &Args,
    world: &World,
    status: &plan::Status,
    lease: Option<&(HolderState, Held)>,
    open: &[OpenRun],
) -> anyhow::Result<()> {
    out!("{}", args.paint(&plan::render_status(status, args.verbosity())))?;
    for (project, why) in &world.unreadable {
        outln!("\nwarning: {why}: project `{}` is left alone until the row is fixed", project.escape_debug())?;
    }
    match lease {
        Some((HolderState::Running, held)) => outln!(
            "\nAn apply is running: `{}` holds the lease until {} (if it died, the lease lapses then).",
            held.owner,
            held.until
        )?,
        Some((HolderState::Unknown, held)) => outln!(
            "\nThe lease is held by `{}`{} until {}: trueup cannot tell from this host whether it still runs \
             (if it died, the lease lapses then).",
            held.owner,
            held.host.as_ref().map_or_else(String::new, |host| format!(" on {host}")),
            held.until
        )?,
        _ => {
            if let Some((_, held)) = lease {
                outln!(
                    "\nThe apply of `{}` ({}) died; the next apply takes over at once, or run `trueup unlock`.",
                    held.owner,
                    held.pid.map_or_else(|| "its process".to_owned(), |pid| format!("process {pid}"))
                )?;
            }
            for run in open {
                outln!(
                    "\nAn apply was interrupted: run `{}` (started {}) left {} actions unfinished. \
                     The next `trueup apply` redoes their work.",
                    run.run,
                    run.since,
                    run.unfinished
                )?;
            }
        }
    }
    Ok(())
}

/// Arguments of `trueup apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved by `trueup plan --out FILE`; refused if the world changed since
    pub plan_file: Option<PathBuf>,
    /// Show the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for another apply to finish, e.g. `30s` or `2m`, at most `1h`.
    /// The default outlasts the default `--lease-ttl`, so the lease of a dead apply of
    /// another host lapses while the next one waits
    #[arg(long, default_value = "90s", value_name = "DURATION", value_parser = lock_timeout)]
    pub lock_timeout: Duration,
    /// How long the apply lease lasts unless renewed, e.g. `60s`, from `1s` to `1d`. It
    /// is renewed before every action, so it must outlast the slowest one. A dead apply
    /// of this host is taken over at once; one of another host only once its lease lapses
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = lease_ttl)]
    pub lease_ttl: Duration,
    /// Print the plan and the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Only record the resumes, for the PaaS's own workers to run (as before `deploy`)
    #[arg(long)]
    pub no_run: bool,
    /// How many resumed deployments to run at once, after the repairs
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    #[command(flatten)]
    pub settings: super::deploy_cmds::SettingsArgs,
}

/// The longest `--lease-ttl`: a day. A longer lease, left by a dead apply, would block
/// every apply after it for that long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(86_400);

/// The longest `--lock-timeout`: an hour. An apply stuck waiting longer than that is
/// better told to the operator.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses `--lease-ttl`: from 1s to [`MAX_LEASE_TTL`].
fn lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl: Duration = text.parse().map_err(|e| format!("{e}"))?;
    if ttl.secs() == 0 {
        return Err("must be at least 1s: a lease of 0s would lapse as soon as it is taken".to_owned());
    }
    if ttl > MAX_LEASE_TTL {
        return Err("must be at most 1d (86400s): a dead apply's lease would block the next for that long".to_owned());
    }
    Ok(ttl)
}

/// Parses `--lock-timeout`: at most [`MAX_LOCK_TIMEOUT`].
pub(super) fn lock_timeout(text: &str) -> Result<Duration, String> {
    let timeout: Duration = text.parse().map_err(|e| format!("{e}"))?;
    if timeout > MAX_LOCK_TIMEOUT {
        return Err("must be at most 1h (3600s)".to_owned());
    }
    Ok(timeout)
}

/// Observes, plans, shows the plan, applies it, and shows each result and a summary.
pub fn apply(args: &Args, cmd: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    let saved = match &cmd.plan_file {
        Some(path) => {
            let text = super::read_capped(path, "saved plan", SAVED_PLAN_CAP)?;
            Some(SavedPlan::read(path, &text)?)
        }
        None => None,
    };
    let store = open_store(args)?;
    // A saved plan is applied now: its resumes are stamped with the time they happen.
    let now = super::now(args);
    if args.now.is_some() && !cmd.dry_run {
        noteln!(
            "Note: --now makes apply record {now} in the state database (phase times, log lines). \
             Use it to rehearse on a copy, not on the live database."
        );
    }
    let cfg = reconcile::Config { lease_ttl: cmd.lease_ttl, ..config(args, cmd.lock_timeout)? };
    if cmd.dry_run {
        let (world, plan) = reconcile::plan_machine(&store, &specs, &cfg, now)?;
        let plan = match &saved {
            Some(saved) => {
                saved.check_fresh(&specs, &world, &cfg.limits())?;
                saved.plan()
            }
            None => plan,
        };
        if cmd.json {
            outln!("{}", render_json(&plan, now))?;
        } else {
            out!("{}", args.paint(&render_text(&plan, now, args.verbosity())))?;
            outln!("\nDry run: nothing was changed.")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let source = saved.as_ref().map_or(Source::Fresh, Source::Saved);
    let mut shown = Shown {
        now,
        lock_timeout: cmd.lock_timeout,
        color: args.color.enabled(),
        verbosity: args.verbosity(),
        text: !cmd.json,
        progress: std::io::stderr().is_terminal() && !cmd.json,
        broken: None,
        stop_after: signals::stop_after(),
        stop_in: signals::stop_in(),
    };
    // From here on, SIGINT and SIGTERM stop the apply between two actions instead of
    // killing it with the lease held.
    signals::catch().context("cannot catch SIGINT and SIGTERM")?;
    let result = reconcile::apply_machine(&store, &specs, &cfg, now, source, &mut shown);
    if shown.progress {
        note!("\r\x1b[2K");
    }
    // The lease is released by now, whatever happened.
    if let Some(err) = shown.broken.take() {
        return Err(err);
    }
    let applied = match result {
        Err(reconcile::ReconcileError::Interrupted(why)) => {
            // Only ever while it waited for the lease: another apply may still hold it.
            noteln!("error: the apply was {why} before it took the lease; nothing was changed");
            return Ok(interrupted_exit());
        }
        other => other?,
    };
    for line in recovered(&applied) {
        noteln!("{line}");
    }
    if cmd.json {
        outln!("{}", reconcile::render_json(&applied, now))?;
    } else {
        if args.quiet {
            // Only what did not go through, each with why.
            for o in applied.report.outcomes.iter().filter(|o| o.status != apply::Status::Done) {
                let (_, verb, target) = plan::describe(&o.action.change, &o.action.project);
                let (mark, why) = match &o.status {
                    apply::Status::Failed(why) => ("FAILED ", why),
                    apply::Status::Skipped(why) => ("skipped", why),
                    apply::Status::Done => continue,
                };
                outln!("  {mark} {}: {verb} {target}\n          {why}", o.action.project.escape_debug())?;
            }
        } else if !applied.plan.actions.is_empty() {
            out!("\n{}", apply::render_report(&applied.report))?;
        }
        outln!("{}", applied.summary_line())?;
    }
    if let Some((name, _)) = signals::caught() {
        let skipped = applied.report.outcomes.iter().filter(|o| matches!(o.status, apply::Status::Skipped(_))).count();
        noteln!(
            "error: the apply was interrupted by {name}: the action in hand finished, {skipped} were skipped \
             and journaled so; the lease is free. Run `trueup apply` again to finish."
        );
        return Ok(interrupted_exit());
    }
    // The lease is free: the deployments just resumed now run under their own claims.
    let resumed = resumed(&applied);
    let mut failed_runs = 0;
    if args.now.is_some() && !cmd.no_run && !resumed.is_empty() {
        noteln!(
            "Note: with --now, the {} resumed deployment(s) are recorded, not run: their phases would run at the wall clock.",
            resumed.len()
        );
    } else if !cmd.no_run && !resumed.is_empty() {
        if !cmd.json {
            outln!("\nRunning {} resumed deployment(s) to the end (--no-run only records them):", resumed.len())?;
        }
        failed_runs =
            super::deploy_cmds::run_all(args, &specs, &cmd.settings, &cfg.containers, &resumed, usize::from(cmd.jobs))?
                .failed;
        if signals::caught().is_some() {
            return Ok(interrupted_exit());
        }
    }
    Ok(if applied.report.succeeded() && failed_runs == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The deployments a plan resumes, which `apply` then runs.
fn to_run(plan: &plan::Plan) -> Vec<String> {
    let resumes = plan.actions.iter().filter_map(|a| match &a.change {
        plan::Change::Resume { deployment, .. } => Some(deployment.clone()),
        _ => None,
    });
    resumes.collect()
}

/// The deployments this apply resumed: their resume went through.
pub(super) fn resumed(applied: &reconcile::Applied) -> Vec<String> {
    let done = applied.report.outcomes.iter().filter(|o| o.status == apply::Status::Done);
    done.filter_map(|o| match &o.action.change {
        plan::Change::Resume { deployment, .. } => Some(deployment.clone()),
        _ => None,
    })
    .collect()
}

/// The exit code of an apply stopped by a signal: 128 + its number, as a shell reports a
/// process that signal killed (130 for SIGINT, 143 for SIGTERM).
fn interrupted_exit() -> ExitCode {
    ExitCode::from(signals::caught().map_or(1, |(_, code)| code))
}

/// What `trueup apply` shows while it works: the plan before anything changes, then a
/// progress line per action when stderr is a terminal. It stops the apply when a signal
/// comes, or when the plan cannot be shown.
struct Shown {
    now: crate::time::Timestamp,
    lock_timeout: Duration,
    /// Whether the plan is coloured.
    color: bool,
    verbosity: plan::Verbosity,
    text: bool,
    progress: bool,
    /// Why stdout could not be written: the apply stops, and the command fails with it.
    broken: Option<anyhow::Error>,
    /// The test hook of [`signals`]: stop this process once this many actions ended.
    stop_after: Option<usize>,
    /// The other test hook of [`signals`]: stop this process once this action began.
    stop_in: Option<usize>,
}

impl reconcile::Listener for Shown {
    fn planned(&mut self, plan: &plan::Plan) {
        // Shown (and flushed) before the first change, even when stdout is a pipe.
        if self.text
            && let Err(err) = out!("{}", color::paint(&render_text(plan, self.now, self.verbosity), self.color))
        {
            self.broken = Some(err.context("cannot show the plan, so nothing was applied"));
        }
    }

    fn waiting(&mut self, owner: &str, until: crate::time::Timestamp) {
        // On stderr, so a script reading the plan from stdout is not disturbed.
        noteln!(
            "Waiting for the apply lease: `{}` holds it until {until} (up to `--lock-timeout` {}; \
             Ctrl-C stops waiting)...",
            owner.escape_debug(),
            self.lock_timeout
        );
    }

    fn interrupted(&mut self) -> Option<String> {
        if self.broken.is_some() {
            return Some("stopped: standard output cannot be written".to_owned());
        }
        signals::caught().map(|(name, _)| format!("interrupted by {name}"))
    }

    fn acting(&mut self, index: usize) {
        if self.stop_in == Some(index) {
            signals::stop_for_test();
        }
    }

    fn finished(&mut self, index: usize, total: usize, action: &plan::Action, _: &apply::Status) {
        if self.progress {
            note!("\r\x1b[2K  applying {}/{total}: {} {}", index + 1, action.project, action.change.kind().verb());
        }
        if self.stop_after == Some(index + 1) {
            signals::stop_for_test();
        }
    }
}

/// The reconcile configuration from the global flags, with the default lease of 60s: the
/// container socket is `--container-socket`, else `DOCKER_HOST`, else a default socket
/// that is present.
fn config(args: &Args, lock_timeout: Duration) -> anyhow::Result<reconcile::Config> {
    let mut cfg = machine_config(&args.root, &args.routes_dir, lock_timeout);
    cfg.containers = container_config(args)?;
    Ok(cfg)
}

/// The container engine the global flags name: `--container-socket`, else `DOCKER_HOST`,
/// else a default socket that is present; and `--helper-max-age`.
pub(super) fn container_config(args: &Args) -> anyhow::Result<crate::world::containers::ContainerConfig> {
    use crate::world::containers::{ContainerConfig, DEFAULT_SOCKETS, locate};
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let defaults = DEFAULT_SOCKETS.map(std::path::Path::new);
    let socket = locate(args.container_socket.as_deref(), docker_host.as_deref(), &defaults)?;
    Ok(ContainerConfig { socket, helper_max_age: args.helper_max_age, ..ContainerConfig::default() })
}

/// The reconcile configuration for a root and a routes folder, with no container engine.
pub(super) fn machine_config(
    root: &std::path::Path,
    routes_dir: &std::path::Path,
    lock_timeout: Duration,
) -> reconcile::Config {
    let host = lease_cmds::this_host();
    let pid = std::process::id();
    reconcile::Config {
        root: root.to_owned(),
        routes_dir: routes_dir.to_owned(),
        owner: format!("trueup-apply@{host}:{pid}"),
        host,
        pid,
        alive: lease_cmds::alive,
        lock_timeout: std::time::Duration::from_secs(lock_timeout.secs()),
        lease_ttl: Duration::from_secs(60),
        containers: crate::world::containers::ContainerConfig::default(),
    }
}

/// Opens the state database for reading only (`plan`, `status`): a missing one is an
/// error, never created, and an older schema is read as it is, with a note.
fn open_store_read_only(args: &Args) -> anyhow::Result<Store> {
    let (store, version) = Store::open_read_only(&args.db)?;
    if version < crate::store::SCHEMA_VERSION {
        noteln!(
            "Note: the state database `{}` has schema version {version}; `trueup apply` or `trueup init` \
             migrates it to {}.",
            args.db.display(),
            crate::store::SCHEMA_VERSION
        );
    }
    Ok(store)
}

/// Arguments of `trueup init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    settings: super::deploy_cmds::SettingsArgs,
}

/// Creates the state database (and its folder), or migrates an existing one, and says
/// which.
pub fn init(args: &Args, cmd: &InitArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(args)?;
    outln!(
        "The state database `{}` is ready (schema version {}). Settings:",
        store.path().display(),
        crate::store::SCHEMA_VERSION
    )?;
    super::deploy_cmds::record_settings(&store, &cmd.settings)?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the state database, creating it (and its folder) on first use, and says so.
pub fn open_store(args: &Args) -> anyhow::Result<Store> {
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the folder `{}`", dir.display()))?;
    }
    let (store, opened) = Store::open(&args.db)?;
    match opened {
        Opened::Created => noteln!("Created an empty state database at `{}`.", args.db.display()),
        Opened::Migrated { from, to } => {
            noteln!("Migrated the state database `{}` from schema {from} to {to}.", args.db.display());
        }
        Opened::Existing => {}
    }
    Ok(store)
}
