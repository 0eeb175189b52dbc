//! `trueup serve`: the daemon beside the PaaS API.
//!
//! It holds the daemon lease for its lifetime (one daemon per state database), runs the
//! startup sequence (one apply cycle: resume incomplete deployments first, then repair
//! links, containers and routes; then the resumed and queued deployments with `--jobs`
//! workers), logs that it is ready, and then reconciles every `--interval` and on SIGHUP,
//! picking up queued deployments every few seconds between cycles; both wait while the
//! worker runs deployments (see [`Daemon::run_queued`]). It takes the
//! apply lease only for each cycle, so an operator's `trueup apply` between cycles runs at
//! once.
//!
//! Two threads share the work. A tokio current-thread runtime (the supervisor) owns the
//! clock and SIGHUP: it wakes the worker for each cycle and poll, and renews the daemon
//! lease with its own connection. SIGTERM and SIGINT are caught as `apply` catches them
//! ([`super::signals`]): the handler sets the flag the worker's cycle and runs read before
//! each action, so the action in hand is the last one, however busy the supervisor is;
//! the supervisor only logs it and wakes a worker that waits. The worker (this command's thread) does the blocking work, SQLite
//! and builds, one thing at a time, with the library's own functions. On SIGTERM the
//! action in hand finishes, the rest of the cycle is journaled as skipped, running builds
//! stop and their deployments are released to be resumed, both leases are released, and
//! the daemon exits 0.
//!
//! Logs go through `tracing` to stderr: text by default, one JSON object per line with
//! `--log-format json`. Each cycle ends with one summary line carrying the counts as
//! fields. This module never decides what to repair: that is [`crate::reconcile`]'s job.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::deploy_cmds::{self, SettingsArgs, Workers};
use super::{Args, lease_cmds, load_specs, plan_cmds, signals};
use crate::apply::Status;
use crate::engine::{Ended, run::Report};
use crate::model::LogLevel;
use crate::plan::{self, Action, Plan};
use crate::reconcile::{self, Applied, ReconcileError, Source};
use crate::spec::Specs;
use crate::store::{DaemonLease, Holder, Store, StoreError, TookOver};
use crate::time::{Duration, clock};

/// Arguments of `trueup serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// How often to reconcile after the startup sequence, e.g. `1h` or `15m`, from `1s` to `1d`
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = interval)]
    pub interval: Duration,
    /// How many deployments to run at once (of different projects)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// How long a cycle waits for an operator's apply to give the apply lease back, e.g.
    /// `30s`, at most `1h`; then the cycle is tried again at the next poll (a few seconds)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = plan_cmds::lock_timeout)]
    pub lock_timeout: Duration,
    /// Run the startup sequence, then exit with `apply`'s exit codes
    #[arg(long)]
    pub once: bool,
    /// How to write the logs: `text` for people, `json` (one object per line) for log shippers
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Only record the resumes and repairs; run no deployment (the PaaS's own workers do)
    #[arg(long)]
    pub no_run: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// The log formats of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Parses `--interval`: from 1s to a day.
fn interval(text: &str) -> Result<Duration, String> {
    let interval: Duration = text.parse().map_err(|e| format!("{e}"))?;
    if interval.secs() == 0 || interval.secs() > 86_400 {
        return Err("must be between 1s and 1d".to_owned());
    }
    Ok(interval)
}

/// How long the daemon lease lasts unless renewed; the supervisor renews it every third of
/// that. A dead daemon of this host is taken over at once whatever its expiry; one of
/// another host once it lapses.
const DAEMON_TTL: Duration = Duration::from_secs(60);

/// How often the supervisor looks whether SIGTERM or SIGINT came.
const LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// How often queued deployments are looked for between cycles.
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What wakes the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wake {
    /// The startup sequence.
    Startup,
    /// A cycle: its interval passed, or SIGHUP.
    Cycle(&'static str),
    /// Look for queued deployments.
    Poll,
    /// The daemon lease could not be renewed: stop, failing.
    LeaseLost(String),
}

/// Set once the daemon lease could not be renewed: the daemon stops, failing.
static LEASE_LOST: AtomicBool = AtomicBool::new(false);

/// Why the daemon stops, if it does: SIGINT or SIGTERM, caught by [`signals`]' handler
/// itself (so the worker sees it before its next action, however busy the supervisor),
/// or a lost daemon lease; and the exit code it calls for with `--once`.
fn stopping() -> Option<(&'static str, u8)> {
    signals::caught().or_else(|| LEASE_LOST.load(Ordering::SeqCst).then_some(("a lost daemon lease", 1)))
}

fn stop_requested() -> bool {
    stopping().is_some()
}

/// `trueup serve`.
pub fn serve(args: &Args, cmd: &ServeArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    init_logs(cmd.log_format)?;
    // Before any lease is taken: from here on, SIGTERM and SIGINT stop the daemon cleanly.
    signals::catch().context("cannot catch SIGINT and SIGTERM")?;
    let store = plan_cmds::open_store(args)?;
    // Settings that do not read would stop every run: refused now, not logged every poll.
    deploy_cmds::settings(&store, &cmd.settings)?;
    let cfg = reconcile::Config {
        owner: format!("trueup-serve@{}:{}", lease_cmds::this_host(), std::process::id()),
        // The container engine of the global flags: each cycle reconciles containers too.
        containers: plan_cmds::container_config(args)?,
        ..plan_cmds::machine_config(&args.root, &args.routes_dir, cmd.lock_timeout)
    };
    let holder = Holder { owner: &cfg.owner, host: &cfg.host, pid: cfg.pid };
    let (daemon, took_over) = match store.acquire_daemon_lease(holder, clock::now(), DAEMON_TTL, &lease_cmds::alive) {
        Err(StoreError::LeaseHeld { owner, until }) => anyhow::bail!(
            "another `trueup serve` runs on the state database `{}`: `{owner}` holds the daemon lease until {until}",
            args.db.display()
        ),
        other => other?,
    };
    match &took_over {
        Some(TookOver::Dead(held)) => {
            info!(holder = %held.owner, "took over the daemon lease of `{}`: {} is gone", held.owner, lease_cmds::process_of(held));
        }
        Some(TookOver::Lapsed(held)) => {
            info!(holder = %held.owner, "took over the daemon lease of `{}`, which lapsed at {}", held.owner, held.until);
        }
        None => {}
    }
    info!(owner = %cfg.owner, db = %args.db.display(), "trueup serve starting");
    let (wake, woken) = mpsc::unbounded_channel();
    let daemon_ref = &daemon;
    let ran = std::thread::scope(|scope| {
        // The supervisor must run beside the worker: without it there is no daemon.
        let supervisor = std::thread::Builder::new()
            .name("supervisor".to_owned())
            .spawn_scoped(scope, move || supervise(&args.db, daemon_ref, cmd, &wake))
            .map_err(|err| {
                anyhow::anyhow!("cannot start the supervisor thread: {err} (is the machine at its limit of processes?)")
            })?;
        let daemon = Daemon {
            args,
            cmd,
            specs: &specs,
            store: &store,
            cfg: &cfg,
            told: std::cell::RefCell::default(),
            resting: std::cell::RefCell::new(deploy_cmds::Resting::new(Some(deploy_cmds::Resting::PAUSE))),
        };
        let worked = daemon.work(woken);
        anyhow::Ok((worked, supervisor.join()))
    });
    if let Err(err) = store.release_daemon_lease(&daemon) {
        error!("cannot release the daemon lease: {err}");
    }
    let (worked, supervised) = ran?;
    // The supervisor's failure first: the worker's is then only that it was left alone.
    match supervised {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err),
        Err(_) => anyhow::bail!("the supervisor thread panicked"),
    }
    let code = worked?;
    info!("trueup serve stopped; both leases are free");
    Ok(code)
}

/// Installs the global `tracing` subscriber: text or JSON lines on stderr.
fn init_logs(format: LogFormat) -> anyhow::Result<()> {
    // A closed stderr (the journal restarted, `2>&1 | head`) loses log lines, never the
    // daemon: without this, the subscriber panics on the failed write, leases held.
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).log_internal_errors(false);
    let set = match format {
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).finish(),
        ),
    };
    set.context("cannot install the logger")
}

/// The supervisor thread: a current-thread runtime that turns signals and timers into
/// [`Wake`]s for the worker and renews the daemon lease, until the worker hangs up.
fn supervise(
    db: &std::path::Path,
    daemon: &DaemonLease,
    cmd: &ServeArgs,
    wake: &mpsc::UnboundedSender<Wake>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the tokio runtime")?;
    // Its own connection: the worker's is busy with a cycle when the lease is due.
    let (store, _) = Store::open(db)?;
    runtime.block_on(async {
        let mut hup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
        // Only once SIGHUP is caught: before, it would kill the daemon.
        let _ = wake.send(Wake::Startup);
        let every = std::time::Duration::from_secs(cmd.interval.secs());
        let start = tokio::time::Instant::now();
        let mut cycle = tokio::time::interval_at(start + every, every);
        cycle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval_at(start + POLL, POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renew_every = std::time::Duration::from_secs(DAEMON_TTL.secs() / 3);
        let mut renew = tokio::time::interval_at(start + renew_every, renew_every);
        // SIGTERM and SIGINT are caught by the handler of `signals`, which only sets a flag
        // the worker reads before each action; this looks at it often, to log it and wake
        // a worker that waits for its next cycle.
        let mut look = tokio::time::interval(LOOK);
        let mut told = false;
        let mut hung_up = std::pin::pin!(wake.closed());
        loop {
            let event = std::future::poll_fn(|cx| {
                if hung_up.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                // Until it is pending, so that the next tick wakes this task.
                while look.poll_tick(cx).is_ready() {
                    if !told && signals::caught().is_some() {
                        return Poll::Ready(Some(Event::Stop));
                    }
                }
                if renew.poll_tick(cx).is_ready() {
                    return Poll::Ready(Some(Event::Renew));
                }
                if hup.poll_recv(cx).is_ready() {
                    return Poll::Ready(Some(Event::Wake(Wake::Cycle("SIGHUP"))));
                }
                if cycle.poll_tick(cx).is_ready() {
                    return Poll::Ready(Some(Event::Wake(Wake::Cycle("its interval passed"))));
                }
                if poll.poll_tick(cx).is_ready() {
                    return Poll::Ready(Some(Event::Wake(Wake::Poll)));
                }
                Poll::Pending
            })
            .await;
            match event {
                // The worker is done: nothing is left to supervise.
                None => return Ok(()),
                Some(Event::Stop) => {
                    told = true;
                    if let Some((name, _)) = signals::caught() {
                        info!("{name}: stopping once the action in hand is done");
                    }
                    // Wakes a worker that waits for its next cycle.
                    let _ = wake.send(Wake::Poll);
                }
                Some(Event::Renew) => {
                    if let Err(err) = store.renew_daemon_lease(daemon, clock::now(), DAEMON_TTL) {
                        LEASE_LOST.store(true, Ordering::SeqCst);
                        let _ = wake.send(Wake::LeaseLost(err.to_string()));
                    }
                }
                // The worker coalesces what piles up while it works.
                Some(Event::Wake(w)) if !cmd.once => drop(wake.send(w)),
                Some(Event::Wake(_)) => {}
            }
        }
    })
}

/// What the supervisor heard.
enum Event {
    Stop,
    Renew,
    Wake(Wake),
}

/// The worker: what it needs to run cycles and deployments.
struct Daemon<'a> {
    args: &'a Args,
    cmd: &'a ServeArgs,
    specs: &'a Specs,
    store: &'a Store,
    cfg: &'a reconcile::Config,
    /// Why projects' queues wait, as last logged: each reason is logged once.
    told: std::cell::RefCell<Vec<String>>,
    /// The queued deployments whose run ended in an error, not taken again at every poll.
    resting: std::cell::RefCell<deploy_cmds::Resting>,
}

/// What a cycle ended with, for `--once`.
struct Cycled {
    /// Every action went through, and every run went live.
    succeeded: bool,
}

impl Daemon<'_> {
    /// Waits for each [`Wake`] and does what it asks, until a signal stops the daemon or
    /// (with `--once`) the startup sequence is done. Returns the exit code.
    fn work(&self, mut woken: mpsc::UnboundedReceiver<Wake>) -> anyhow::Result<ExitCode> {
        let mut started = false;
        let mut cycles = 0u64;
        // The cycle to run at the next wake, and why.
        let mut due = Some("startup");
        loop {
            let Some(first) = woken.blocking_recv() else {
                anyhow::bail!("the supervisor stopped before the daemon did");
            };
            let mut wakes = vec![first];
            while let Ok(more) = woken.try_recv() {
                wakes.push(more);
            }
            if let Some(Wake::LeaseLost(why)) = wakes.iter().find(|w| matches!(w, Wake::LeaseLost(_))) {
                anyhow::bail!("the daemon lease was lost ({why}): another daemon may have taken over; stopping");
            }
            if let Some((name, code)) = stopping() {
                info!("stopped by {name} between cycles");
                return Ok(if self.cmd.once && !started { ExitCode::from(code) } else { ExitCode::SUCCESS });
            }
            // A cycle that could not take the apply lease stays due: so does the startup
            // sequence, which every wake retries until it went through.
            if let Some(why) = wakes.iter().find_map(|w| if let Wake::Cycle(why) = w { Some(*why) } else { None }) {
                due.get_or_insert(why);
            }
            let Some(why) = due else {
                self.run_queued(&[]);
                continue;
            };
            let n = cycles + 1;
            let cycled = match self.cycle(n, why) {
                Ok(cycled) => cycled,
                // An operator's apply holds the lease: tried again at the next poll.
                Err(ReconcileError::Busy { owner, .. }) if !self.cmd.once => {
                    warn!(cycle = n, "the apply lease is held by `{owner}`: the cycle is tried again shortly");
                    continue;
                }
                Err(ReconcileError::Interrupted(why)) => {
                    info!(cycle = n, "the cycle was {why} before it took the apply lease");
                    return Ok(self.stopped_code());
                }
                Err(err) if started => {
                    cycles = n;
                    due = None;
                    error!(cycle = n, "the cycle failed: {:#}", anyhow::Error::new(err));
                    continue;
                }
                Err(err) => return Err(err).context("the startup sequence failed"),
            };
            cycles = n;
            due = None;
            if let Some((name, _)) = stopping() {
                info!("stopped by {name}; deployments in hand were released, to be resumed");
                return Ok(self.stopped_code());
            }
            if !started {
                started = true;
                let every = self.cmd.interval;
                info!(cycle = cycles, "ready: the startup sequence is done; reconciling every {every} and on SIGHUP");
                if self.cmd.once {
                    return Ok(if cycled.succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) });
                }
            }
        }
    }

    /// The exit code once a signal stopped the daemon: 0, as a daemon told to stop; with
    /// `--once`, `apply`'s (130, 143).
    fn stopped_code(&self) -> ExitCode {
        match stopping() {
            Some((_, code)) if self.cmd.once => ExitCode::from(code),
            _ => ExitCode::SUCCESS,
        }
    }

    /// One cycle: the apply (resumes, links, containers, routes, cleanup) under the apply
    /// lease, its summary line, then the deployments it resumed and those queued.
    fn cycle(&self, n: u64, why: &str) -> Result<Cycled, ReconcileError> {
        info!(cycle = n, "cycle {n} begins ({why})");
        let now = super::now(self.args);
        let mut listener =
            Logged { cycle: n, stop_after: super::signals::stop_after(), stop_in: super::signals::stop_in() };
        let applied = reconcile::apply_machine(self.store, self.specs, self.cfg, now, Source::Fresh, &mut listener)?;
        for line in plan_cmds::recovered(&applied) {
            warn!(cycle = n, "{line}");
        }
        log_summary(n, &applied);
        let resumed = plan_cmds::resumed(&applied);
        let failed_runs = self.run_queued(&resumed);
        Ok(Cycled { succeeded: applied.report.succeeded() && failed_runs == 0 })
    }

    /// Runs `first` (the deployments a cycle just resumed), then every queued deployment
    /// that is ready, each once, with `--jobs` workers. Returns how many did not go live.
    fn run_queued(&self, first: &[String]) -> usize {
        if self.cmd.no_run || stop_requested() {
            return 0;
        }
        if self.args.now.is_some() {
            if !first.is_empty() {
                info!("with --now, the {} resumed deployment(s) are recorded, not run", first.len());
            }
            return 0;
        }
        let ready = match deploy_cmds::ready(self.store, self.specs) {
            Ok(ready) => {
                for waiting in ready.news(&mut self.told.borrow_mut()) {
                    warn!("{waiting}");
                }
                self.resting.borrow_mut().awake(ready.ids, std::time::Instant::now())
            }
            Err(err) => {
                error!("cannot read the queue: {err:#}");
                // Nothing ran: the deployments just resumed did not go live.
                return first.len().max(1);
            }
        };
        let mut ids: Vec<String> = first.to_vec();
        for id in ready {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return 0;
        }
        info!(deployments = ids.len(), "running {} deployment(s)", ids.len());
        let report = || Box::new(LoggedRun) as Box<dyn Report>;
        let workers = Workers {
            args: self.args,
            specs: self.specs,
            settings: &self.cmd.settings,
            containers: &self.cfg.containers,
            jobs: usize::from(self.cmd.jobs),
            stop: &stop_requested,
            report: &report,
        };
        let mut failed = 0;
        for (id, ended) in deploy_cmds::run_each(&workers, &ids) {
            match ended {
                Ok(Ended::Finished { phase, live: true, .. }) => info!(deployment = %id, "{id} is live ({phase})"),
                Ok(Ended::Finished { phase, reason, .. }) => {
                    failed += 1;
                    let reason = reason.as_deref().unwrap_or("no reason recorded");
                    warn!(deployment = %id, "{id} ended in {phase}: {reason}");
                }
                Ok(Ended::Stopped { phase, why }) => {
                    info!(deployment = %id, "{id} stopped in {phase} ({why}): released, to be resumed");
                }
                Ok(Ended::Interrupted { phase, why }) => {
                    failed += 1;
                    warn!(deployment = %id, "{id} left in {phase} to be resumed: {why}");
                }
                Err(err) if deploy_cmds::is_held(&err) => info!(deployment = %id, "{id}: {err}"),
                Err(err) => {
                    failed += 1;
                    let again = deploy_cmds::Resting::PAUSE.as_secs();
                    error!(deployment = %id, "{id}: {err:#}; left where it is, not taken again for {again}s");
                    self.resting.borrow_mut().rest(id, std::time::Instant::now());
                }
            }
        }
        failed
    }
}

/// Logs the cycle's summary: the counts as fields, and `apply`'s summary line.
fn log_summary(n: u64, applied: &Applied) {
    let counts = &applied.report.counts;
    let get = |key: &str| counts.get(key).unwrap_or(0);
    info!(
        cycle = n,
        resumed = get("deployments_resumed"),
        failed = get("deployments_failed"),
        skipped = get("deployments_skipped"),
        symlinks_fixed = get("symlinks_fixed"),
        symlinks_verified = applied.verified_links,
        symlink_errors = get("symlink_errors"),
        containers_started = get("containers_started"),
        containers_removed = get("containers_removed"),
        errors = counts.errors(),
        "cycle {n} done. {}",
        applied.summary_line()
    );
}

/// Hears a cycle's apply and logs it: the plan's size, each action that did not go
/// through, and the stop flag as its interruption.
struct Logged {
    cycle: u64,
    /// The test hooks of [`super::signals`]: stop this process once this many actions of
    /// the cycle ended, or inside this action, so a test can signal or kill it mid-cycle
    /// at an exact point.
    stop_after: Option<usize>,
    stop_in: Option<usize>,
}

impl reconcile::Listener for Logged {
    fn planned(&mut self, plan: &Plan) {
        info!(cycle = self.cycle, actions = plan.actions.len(), "planned {} action(s)", plan.actions.len());
        // What `plan` shows a person: a mistyped `--db` or `--root` is only said here.
        for f in &plan.findings {
            let project = f.project.escape_debug();
            match f.level {
                plan::Level::Error | plan::Level::Warning => warn!(cycle = self.cycle, %project, "{}", f.message),
                plan::Level::Note => tracing::debug!(cycle = self.cycle, %project, "{}", f.message),
            }
        }
    }

    fn finished(&mut self, index: usize, _: usize, action: &Action, status: &Status) {
        let (_, verb, target) = plan::describe(&action.change, &action.project);
        let project = action.project.escape_debug();
        match status {
            Status::Done => tracing::debug!(cycle = self.cycle, "{project}: {verb} {target}"),
            Status::Failed(why) => warn!(cycle = self.cycle, "{project}: {verb} {target} FAILED: {why}"),
            Status::Skipped(why) => info!(cycle = self.cycle, "{project}: {verb} {target} skipped: {why}"),
        }
        if self.stop_after == Some(index + 1) {
            super::signals::stop_for_test();
        }
    }

    fn acting(&mut self, index: usize) {
        if self.stop_in == Some(index) {
            super::signals::stop_for_test();
        }
    }

    fn waiting(&mut self, owner: &str, until: crate::time::Timestamp) {
        info!(cycle = self.cycle, "waiting for the apply lease: `{}` holds it until {until}", owner.escape_debug());
    }

    fn interrupted(&mut self) -> Option<String> {
        stopping().map(|(name, _)| format!("interrupted by {name}"))
    }
}

/// Logs a deployment's phases, and its log lines from warnings up.
struct LoggedRun;

impl Report for LoggedRun {
    fn phase(&mut self, id: &str, phase: &str) {
        info!(deployment = %id, "{id}: {phase}");
    }

    fn line(&mut self, id: &str, level: LogLevel, text: &str) {
        if level >= LogLevel::Warn {
            warn!(deployment = %id, "{id}: {}", text.escape_debug());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_bounded() {
        assert_eq!(interval("1h"), Ok(Duration::from_secs(3600)));
        assert!(interval("0s").is_err());
        assert!(interval("2d").is_err());
        assert!(interval("soon").is_err());
    }
}
