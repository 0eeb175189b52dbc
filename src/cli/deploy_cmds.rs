//! `trueup deploy`, `work`, `event`, `heartbeat` and `logs`: the engine's operations for
//! a PaaS, and the settings `init` records.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{Args, load_specs, noteln, out, outln, plan_cmds::open_store, signals};
use crate::engine::{Control, Ended, Engine, NewDeployment, Settings, Worker, run::Report};
use crate::model::{DeploymentType, LogLevel, Source};
use crate::spec::Specs;
use crate::store::Store;
use crate::world::containers::ContainerConfig;

/// The settings `trueup init` records and other commands may override.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Traefik's HTTP entrypoint (`127.0.0.1:8080`): health checks go through it
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// The base domain: a project answers on PROJECT.DOMAIN (default `localhost`)
    #[arg(long)]
    pub domain: Option<String>,
    /// The static web server whose root is --root and that follows links (`http://127.0.0.1:8081`)
    #[arg(long, value_name = "URL")]
    pub webroot_upstream: Option<String>,
    /// How long a build may run (default 30m)
    #[arg(long, value_name = "DURATION")]
    pub build_timeout: Option<String>,
    /// How long a worker's claim lasts between heartbeats (default 60s)
    #[arg(long, value_name = "DURATION")]
    pub claim_ttl: Option<String>,
    /// How long one health check attempt retries (default 30s)
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// The loopback ports image deployments' containers are given (default 20000-20999)
    #[arg(long, value_name = "FIRST-LAST")]
    pub container_ports: Option<String>,
}

impl SettingsArgs {
    /// The flags that were given, by setting key.
    fn given(&self) -> Vec<(&'static str, &str)> {
        let all = [
            ("proxy", &self.proxy),
            ("domain", &self.domain),
            ("webroot_upstream", &self.webroot_upstream),
            ("build_timeout", &self.build_timeout),
            ("claim_ttl", &self.claim_ttl),
            ("health_timeout", &self.health_timeout),
            ("container_ports", &self.container_ports),
        ];
        all.into_iter().filter_map(|(k, v)| v.as_deref().map(|v| (k, v))).collect()
    }
}

/// The settings in force: those recorded in the database, then the flags over them.
pub(super) fn settings(store: &Store, flags: &SettingsArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::from_map(&store.settings()?)
        .context("the settings recorded in the state database do not read; fix them with `trueup init`")?;
    for (key, value) in flags.given() {
        settings.set(key, value).with_context(|| format!("--{}", key.replace('_', "-")))?;
    }
    Ok(settings)
}

/// Records the given settings (for `trueup init`) and prints them all.
pub fn record_settings(store: &Store, flags: &SettingsArgs) -> anyhow::Result<()> {
    let settings = settings(store, flags)?;
    store.put_settings(&settings.to_map())?;
    for (key, value) in settings.to_map() {
        outln!("  {key} = {value}")?;
    }
    Ok(())
}

/// Arguments of `trueup deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The project (created on first use): a plain name
    #[arg(long)]
    pub project: String,
    /// The upload (a folder or a .tar.gz) or the git repository (a path or file:// URL)
    #[arg(long, value_name = "PATH|GIT_URL", required_unless_present = "image", conflicts_with = "image")]
    pub source: Option<String>,
    /// The container image (`--type image`), which the container engine holds or pulls
    /// from the registry it names
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// `upload`, `git` or `image` (default: `image` with --image, `git` for a repository,
    /// else `upload`)
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// The branch, tag or commit to deploy (git)
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The build command, run with `sh -c` in the source folder
    #[arg(long, value_name = "CMD")]
    pub build: Option<String>,
    /// The folder the build leaves the site in (default `public`, else the whole source)
    #[arg(long, value_name = "SUBDIR")]
    pub output: Option<String>,
    /// The path the health check requests (default `/`)
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Only queue it, for `trueup work` to run
    #[arg(long)]
    pub detach: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Arguments of `trueup work`.
#[derive(Debug, clap::Args)]
pub struct WorkArgs {
    /// Run what is queued now, then exit (instead of waiting for more)
    #[arg(long)]
    pub once: bool,
    /// How many deployments to run at once (of different projects)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Arguments of `trueup event`.
#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// The deployment
    pub id: String,
    /// The event, one its phase accepts (`cancel`, ...)
    pub event: String,
}

/// Arguments of `trueup heartbeat`.
#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    /// The deployment
    pub id: String,
}

/// Arguments of `trueup logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The deployment
    pub id: String,
    /// Keep printing new lines until the deployment finishes
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

pub(super) fn new_engine<'a>(
    args: &Args,
    store: &'a Store,
    specs: &'a Specs,
    flags: &SettingsArgs,
    containers: &ContainerConfig,
) -> anyhow::Result<Engine<'a>> {
    Ok(Engine {
        store,
        specs,
        root: args.root.clone(),
        routes_dir: args.routes_dir.clone(),
        settings: settings(store, flags)?,
        worker: Worker::this(),
        containers: containers.clone(),
    })
}

/// Prints phases and the lines that matter as a deployment runs.
struct Printer {
    verbose: bool,
    quiet: bool,
}

impl Report for Printer {
    fn phase(&mut self, id: &str, phase: &str) {
        if !self.quiet {
            let _ = outln!("{id}: {phase}");
        }
    }

    fn line(&mut self, id: &str, level: LogLevel, text: &str) {
        if self.verbose || level >= LogLevel::Warn {
            let shown: String = text.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect();
            let _ = outln!("{id}:   {shown}");
        }
    }
}

/// The exit code and closing line of a run.
fn close(id: &str, ended: &Ended, json: bool) -> anyhow::Result<ExitCode> {
    let (code, text, status) = match ended {
        Ended::Finished { phase, live: true, .. } => (0, format!("{id} is live ({phase})"), "live"),
        Ended::Finished { phase, reason, .. } => {
            (1, format!("{id} ended in {phase}: {}", reason.as_deref().unwrap_or("no reason recorded")), "failed")
        }
        Ended::Stopped { phase, why } => (
            signals::caught().map_or(1, |(_, c)| c),
            format!("{id} stopped in {phase} ({why}); `trueup apply` or `trueup work` resumes it"),
            "stopped",
        ),
        Ended::Interrupted { phase, why } => (1, format!("{id} left in {phase} to be resumed: {why}"), "interrupted"),
    };
    if json {
        outln!("{}", serde_json::json!({ "deployment": id, "status": status, "message": text }))?;
    } else if code == 0 {
        outln!("{text}")?;
    } else {
        noteln!("error: {text}");
    }
    Ok(ExitCode::from(code))
}

/// `trueup deploy`.
pub fn deploy(args: &Args, cmd: &DeployArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    // Bad input is refused before anything is opened or created.
    let new = new_deployment(cmd)?;
    crate::engine::check(&new)?;
    let store = open_store(args)?;
    let containers = super::plan_cmds::container_config(args)?;
    let engine = new_engine(args, &store, &specs, &cmd.settings, &containers)?;
    let d = engine.create(&new, super::now(args))?;
    if cmd.detach {
        if cmd.json {
            outln!("{}", serde_json::json!({ "deployment": d.id, "status": "queued" }))?;
        } else {
            outln!("queued {} for project {}; `trueup work` runs it", d.id, d.project)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    signals::catch().context("cannot catch SIGINT and SIGTERM")?;
    let mut printer = Printer { verbose: args.verbose, quiet: args.quiet || cmd.json };
    let stop = || signals::caught().is_some();
    let ended = engine.run(&d.id, Control { stop: &stop }, &mut printer)?;
    close(&d.id, &ended, cmd.json)
}

/// The deployment `cmd` asks for.
fn new_deployment(cmd: &DeployArgs) -> anyhow::Result<NewDeployment> {
    let looks_git = |s: &str| {
        s.starts_with("file://")
            || s.starts_with("git@")
            || s.starts_with("https://")
            || s.starts_with("http://")
            || s.ends_with(".git")
            || std::path::Path::new(s).join(".git").exists()
    };
    let kind = match cmd.kind.as_deref() {
        Some(name) => DeploymentType::from_name(name)
            .with_context(|| format!("--type `{name}`: `trueup deploy` takes `upload`, `git` or `image`"))?,
        None if cmd.image.is_some() => DeploymentType::Image,
        None if cmd.source.as_deref().is_some_and(looks_git) => DeploymentType::Git,
        None => DeploymentType::Upload,
    };
    let absolute = |s: &str| -> anyhow::Result<PathBuf> {
        Ok(crate::model::normalize(&std::path::absolute(s).with_context(|| format!("cannot resolve `{s}`"))?))
    };
    let mut source = Source {
        build: cmd.build.clone(),
        output: cmd.output.clone(),
        health_path: cmd.health_path.clone(),
        ..Source::default()
    };
    let given = match (kind, &cmd.source, &cmd.image) {
        (DeploymentType::Image, None, Some(_)) => String::new(),
        (DeploymentType::Image, _, _) => anyhow::bail!("--type image takes `--image NAME`, not `--source`"),
        (_, Some(given), None) => given.clone(),
        (_, _, _) => anyhow::bail!("--image is for `--type image`; an {} deployment takes `--source`", kind.name()),
    };
    match kind {
        DeploymentType::Git => {
            let repo = if given.contains("://") || given.starts_with("git@") {
                given.clone()
            } else {
                absolute(&given)?.display().to_string()
            };
            source.repo = Some(repo);
            source.git_ref.clone_from(&cmd.git_ref);
        }
        DeploymentType::Image => {
            if cmd.git_ref.is_some() {
                anyhow::bail!("--ref is for git sources, not images");
            }
            source.image.clone_from(&cmd.image);
        }
        DeploymentType::Upload => {
            if cmd.git_ref.is_some() {
                anyhow::bail!("--ref is for git sources; `{given}` is an upload");
            }
            source.file_path = Some(absolute(&given)?);
        }
    }
    Ok(NewDeployment { project: cmd.project.clone(), kind, source })
}

/// `trueup work`.
pub fn work(args: &Args, cmd: &WorkArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    let store = open_store(args)?;
    signals::catch().context("cannot catch SIGINT and SIGTERM")?;
    // Found once, not on every poll; the settings are read again by each run.
    let containers = super::plan_cmds::container_config(args)?;
    settings(&store, &cmd.settings)?;
    let mut failed = 0usize;
    let mut told = Vec::new();
    // With --once, a deployment whose run ended in an error is not taken again.
    let mut resting = Resting::new((!cmd.once).then_some(Resting::PAUSE));
    loop {
        let ready = ready(&store, &specs)?;
        for waiting in ready.news(&mut told) {
            noteln!("warning: {waiting}");
        }
        let ready = resting.awake(ready.ids, std::time::Instant::now());
        if ready.is_empty() {
            if cmd.once || signals::caught().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        }
        let batch: Vec<String> = ready.into_iter().take(usize::from(cmd.jobs)).collect();
        let ran = run_all(args, &specs, &cmd.settings, &containers, &batch, usize::from(cmd.jobs))?;
        failed += ran.failed;
        for id in ran.errored {
            if !cmd.once {
                noteln!("{id} is left where it is, not taken again for {}s", Resting::PAUSE.as_secs());
            }
            resting.rest(id, std::time::Instant::now());
        }
        if signals::caught().is_some() {
            break;
        }
    }
    if let Some((_, code)) = signals::caught() {
        return Ok(ExitCode::from(code));
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How the runs of [`run_all`] went.
pub struct Ran {
    /// How many did not go live (a deployment another worker holds is not counted: it
    /// runs there).
    pub failed: usize,
    /// The deployments whose run ended in an error, left where they were.
    pub errored: Vec<String>,
}

/// Runs deployments `ids` to the end, up to `jobs` at once, each under its own claim and
/// store connection, printing each one's outcome.
///
/// # Errors
///
/// When printing fails.
pub fn run_all(
    args: &Args,
    specs: &Specs,
    settings: &SettingsArgs,
    containers: &ContainerConfig,
    ids: &[String],
    jobs: usize,
) -> anyhow::Result<Ran> {
    let mut failed = 0;
    let mut errored = Vec::new();
    let stop = || signals::caught().is_some();
    let printer = || Box::new(Printer { verbose: args.verbose, quiet: args.quiet }) as Box<dyn Report>;
    let workers = Workers { args, specs, settings, containers, jobs, stop: &stop, report: &printer };
    for (id, result) in run_each(&workers, ids) {
        match result {
            Ok(ended) => {
                if close(&id, &ended, false)? != ExitCode::SUCCESS {
                    failed += 1;
                }
            }
            // Another worker took it first: it runs there.
            Err(e) if is_held(&e) => noteln!("{id}: {e}"),
            Err(e) => {
                noteln!("error: {id}: {e:#}");
                failed += 1;
                errored.push(id);
            }
        }
    }
    Ok(Ran { failed, errored })
}

/// The deployments whose run ended in an error, each left alone for a pause (or for
/// good): taken again at once, a run would fail the same way as fast as the loop turns
/// (a full disk, a spec whose queue cannot be left), flooding the log and a core.
pub(super) struct Resting {
    pause: Option<std::time::Duration>,
    until: std::collections::HashMap<String, Option<std::time::Instant>>,
}

impl Resting {
    /// How long a worker that keeps running leaves such a deployment alone.
    pub(super) const PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

    /// Each deployment put to rest is left alone for `pause`, or for good without one.
    pub(super) fn new(pause: Option<std::time::Duration>) -> Resting {
        Resting { pause, until: std::collections::HashMap::new() }
    }

    /// Leaves `id` alone from `now`.
    pub(super) fn rest(&mut self, id: String, now: std::time::Instant) {
        self.until.insert(id, self.pause.map(|p| now + p));
    }

    /// `ids` without those still resting at `now`.
    pub(super) fn awake(&mut self, ids: Vec<String>, now: std::time::Instant) -> Vec<String> {
        self.until.retain(|_, until| until.is_none_or(|u| u > now));
        ids.into_iter().filter(|id| !self.until.contains_key(id)).collect()
    }
}

/// Whether `err` says another worker holds the deployment (so it runs there).
pub(super) fn is_held(err: &anyhow::Error) -> bool {
    err.downcast_ref::<crate::engine::EngineError>()
        .is_some_and(|e| matches!(e, crate::engine::EngineError::Held { .. }))
}

/// What runs deployments: the command's flags, how many at once, when to stop, and what
/// each run reports to (made once per run, in its own thread).
pub(super) struct Workers<'a> {
    pub(super) args: &'a Args,
    pub(super) specs: &'a Specs,
    pub(super) settings: &'a SettingsArgs,
    pub(super) containers: &'a ContainerConfig,
    pub(super) jobs: usize,
    pub(super) stop: &'a (dyn Fn() -> bool + Sync),
    pub(super) report: &'a (dyn Fn() -> Box<dyn Report> + Sync),
}

/// Runs deployments `ids` to the end, up to `workers.jobs` at once, each under its own
/// claim and store connection, and returns how each run ended, in the order of `ids`. Once
/// `workers.stop` says so, the runs in hand stop (their deployments stay in their phase,
/// released, to be resumed) and no other starts.
pub(super) fn run_each(workers: &Workers<'_>, ids: &[String]) -> Vec<(String, anyhow::Result<Ended>)> {
    let mut ended = Vec::new();
    for batch in ids.chunks(workers.jobs.max(1)) {
        if (workers.stop)() {
            break;
        }
        ended.extend(std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|id| {
                    // On a machine at its limit of processes, one after the other.
                    crate::threads::spawn(scope, move || -> anyhow::Result<Ended> {
                        let (store, _) = Store::open(&workers.args.db)?;
                        let engine =
                            new_engine(workers.args, &store, workers.specs, workers.settings, workers.containers)?;
                        let mut report = (workers.report)();
                        Ok(engine.run(id, Control { stop: workers.stop }, report.as_mut())?)
                    })
                })
                .collect();
            batch
                .iter()
                .zip(handles)
                .map(|(id, h)| {
                    (id.clone(), h.outcome().unwrap_or_else(|_| Err(anyhow::anyhow!("its worker panicked"))))
                })
                .collect::<Vec<_>>()
        }));
    }
    ended
}

/// What a worker may take now ([`ready`]).
pub(super) struct Ready {
    /// The head of each project's queue that is queued (in its spec's initial phase) and
    /// unheld, or held by a worker that is gone.
    pub(super) ids: Vec<String>,
    /// Why each project whose head cannot be read back waits, a sentence each.
    pub(super) waiting: Vec<String>,
}

impl Ready {
    /// The sentences of [`Ready::waiting`] not in `told`, which becomes them all: what a
    /// worker that looks every few seconds says once, not at every look.
    pub(super) fn news(&self, told: &mut Vec<String>) -> Vec<String> {
        let news = self.waiting.iter().filter(|w| !told.contains(w)).cloned().collect();
        told.clone_from(&self.waiting);
        news
    }
}

/// The deployments a worker may take now. A head that cannot be read back holds back its
/// project's queue alone.
pub(super) fn ready(store: &Store, specs: &Specs) -> anyhow::Result<Ready> {
    let now = crate::time::clock::now();
    let (heads, unreadable) = store.queue_heads()?;
    let waiting = unreadable
        .into_iter()
        .map(|(project, error)| {
            format!("{error}: the queue of project `{}` waits until the row is fixed", project.escape_debug())
        })
        .collect();
    let host = crate::host::hostname();
    let ids = heads
        .into_iter()
        .filter(|d| {
            let spec = specs.of(d);
            let queued = spec.find(&d.phase).is_some_and(|s| s == spec.leaf_of(spec.initial));
            let dead =
                d.owner.as_ref().is_some_and(|c| c.process.as_ref().is_some_and(|p| crate::host::is_gone(p, &host)));
            (queued && !d.held_at(now)) || dead
        })
        .map(|d| d.id)
        .collect();
    Ok(Ready { ids, waiting })
}

/// `trueup event`.
pub fn event(args: &Args, cmd: &EventArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    let store = open_store(args)?;
    // An event runs no phase: no container engine is looked for (a `DOCKER_HOST` it
    // could not use would refuse it).
    let engine = new_engine(args, &store, &specs, &SettingsArgs::default(), &ContainerConfig::default())?;
    let to = engine.fire(&cmd.id, &cmd.event, super::now(args))?;
    outln!("{}: {} -> {to}", cmd.id, cmd.event)?;
    Ok(ExitCode::SUCCESS)
}

/// `trueup heartbeat`.
pub fn heartbeat(args: &Args, cmd: &HeartbeatArgs) -> anyhow::Result<ExitCode> {
    let specs = load_specs(&args.specs)?;
    let store = open_store(args)?;
    // As `event`: a heartbeat needs no container engine.
    let engine = new_engine(args, &store, &specs, &SettingsArgs::default(), &ContainerConfig::default())?;
    engine.heartbeat(&cmd.id, super::now(args))?;
    Ok(ExitCode::SUCCESS)
}

/// `trueup logs`.
pub fn logs(args: &Args, cmd: &LogsArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = Store::open_read_only(&args.db)?;
    let mut shown = 0usize;
    loop {
        let d = store.deployment(&cmd.id)?;
        let lines = store.logs(&cmd.id)?;
        for l in lines.iter().skip(shown) {
            if cmd.json {
                let line = serde_json::json!({
                    "at": l.at.to_string(), "level": l.level.as_str(), "phase": l.phase, "message": l.message,
                });
                outln!("{line}")?;
            } else {
                let text: String =
                    l.message.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect();
                out!("{} {:5} {} {text}\n", l.at, l.level.as_str(), l.phase.as_deref().unwrap_or("-"))?;
            }
        }
        shown = lines.len();
        if !cmd.follow || d.finished_at.is_some() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Ready, Resting};

    #[test]
    fn a_deployment_put_to_rest_is_left_alone_for_its_pause_or_for_good() {
        let ids = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let t0 = Instant::now();
        let pause = Duration::from_secs(30);
        let mut resting = Resting::new(Some(pause));
        resting.rest("a".to_owned(), t0);
        assert_eq!(resting.awake(ids(&["a", "b"]), t0), ["b"]);
        let just_before = t0 + pause - Duration::from_millis(1);
        assert_eq!(resting.awake(ids(&["a", "b"]), just_before), ["b"], "still resting");
        assert_eq!(resting.awake(ids(&["a", "b"]), t0 + pause), ["a", "b"]);
        // Awake again, it is not left alone any more until it is put to rest again.
        assert_eq!(resting.awake(ids(&["a"]), t0), ["a"]);

        let mut for_good = Resting::new(None);
        for_good.rest("a".to_owned(), t0);
        assert_eq!(for_good.awake(ids(&["a", "b"]), t0 + Duration::from_secs(86_400)), ["b"]);
    }

    #[test]
    fn why_a_queue_waits_is_told_once_and_again_once_it_changed() {
        let ready =
            |waiting: &[&str]| Ready { ids: Vec::new(), waiting: waiting.iter().map(|w| (*w).to_owned()).collect() };
        let mut told = Vec::new();
        assert_eq!(ready(&["a", "b"]).news(&mut told), ["a", "b"]);
        assert!(ready(&["a", "b"]).news(&mut told).is_empty(), "told already");
        assert_eq!(ready(&["b", "c"]).news(&mut told), ["c"]);
        assert!(ready(&[]).news(&mut told).is_empty());
        // Fixed, then broken again: told again.
        assert_eq!(ready(&["b"]).news(&mut told), ["b"]);
    }
}
