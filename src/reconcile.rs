//! One reconcile pass against the real machine: observe, plan, and apply under the lease.
//!
//! This is the library behind `trueup plan`, `trueup apply` and `trueup status`: it
//! wires the edges ([`crate::store`], [`crate::world::observe`], the [`Host`] effects) to
//! the pure core ([`crate::plan`]) and the executor ([`crate::apply`]). It owns the
//! single-writer discipline: the apply lease is taken (waiting up to a timeout) before
//! anything is observed for an apply, renewed before every action, journaled per action,
//! and released at the end. A saved plan (`plan --out`) carries digests of the world it
//! was made from, so that applying it later refuses a world that changed, and says where.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::apply::{self, HookError, Hooks, Report, Status};
use crate::model::{World, valid_id};
use crate::plan::{self, Action, Finding, Plan};
use crate::spec::Specs;
use crate::store::{Holder, JournalOutcome, JournalStatus, Lease, OpenRun, Store, StoreError, TookOver};
use crate::time::clock;
use crate::time::{Duration, Timestamp};
use crate::world::containers::{self, ContainerConfig, ContainerError, Engine};
use crate::world::effects::{Host, RealFs};
use crate::world::observe::{ObserveConfig, ObserveError, observe};

/// Where the real machine is, and how an apply behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The managed root.
    pub root: PathBuf,
    /// The folder of route files.
    pub routes_dir: PathBuf,
    /// Who this process is, in the lease and the journal.
    pub owner: String,
    /// This machine's hostname, recorded in the lease.
    pub host: String,
    /// This process's id, recorded in the lease.
    pub pid: u32,
    /// Whether a process of this host still runs: a lease whose holder ran here and is
    /// gone is taken over at once, instead of waiting for it to lapse.
    pub alive: fn(u32) -> bool,
    /// How long to wait for another apply to finish before giving up.
    pub lock_timeout: std::time::Duration,
    /// How long the lease lasts without renewal (it is renewed before every action).
    pub lease_ttl: Duration,
    /// The container engine, if any, and the container rules' limits.
    pub containers: ContainerConfig,
}

/// Why a reconcile pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The machine could not be observed.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// The container engine could not be reached or listed.
    #[error(transparent)]
    Containers(#[from] ContainerError),
    /// Another apply held the lease for the whole timeout.
    #[error(
        "another apply is running: `{owner}` holds the lease until {until} (waited {waited}); \
         try again then, or wait longer with `--lock-timeout`"
    )]
    Busy {
        /// Who holds the lease.
        owner: String,
        /// Until when.
        until: Timestamp,
        /// How long this one waited.
        waited: Duration,
    },
    /// The apply was asked to stop (see [`Listener::interrupted`]) while it waited for the
    /// lease or observed, before anything changed.
    #[error("{0} before anything changed")]
    Interrupted(String),
    /// The lease lapsed before the apply began (another apply took over meanwhile).
    #[error("the apply lease was lost before anything changed")]
    LeaseLost(#[source] crate::world::effects::BoxError),
    /// A path of the configuration cannot be made absolute.
    #[error("cannot make `{}` absolute", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A saved plan cannot be read.
    #[error("`{path}` is not a plan saved by `trueup plan --out`")]
    BadPlanFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// A saved plan of another format version.
    #[error("`{path}` has plan format version {found}; this trueup reads version {SAVED_PLAN_VERSION}")]
    PlanVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The configuration looks wrong (a missing, empty or non-folder root, `/` as the
    /// root, a missing routes folder): nothing was planned or changed.
    #[error(
        "the configuration looks wrong, so nothing was changed (root `{}`, routes folder `{}`): {}",
        root.display(),
        routes_dir.display(),
        problems.join("; ")
    )]
    Configuration {
        /// The root given.
        root: PathBuf,
        /// The routes folder given.
        routes_dir: PathBuf,
        /// What looks wrong, each naming the flag to check.
        problems: Vec<String>,
    },
    /// The world changed since the saved plan was made.
    #[error(
        "the plan is stale: the world changed since it was made ({}); run `trueup plan --out FILE` again",
        plan::first_named(changed)
    )]
    Stale {
        /// What changed, e.g. `project p1`, `routes`.
        changed: Vec<String>,
    },
    /// A saved plan whose actions are not those planned for the world it was made from:
    /// edited by hand, or made with other specs.
    #[error(
        "the saved plan is not the plan of the world it was made from (edited, or made with another \
         `--spec`?): {difference}; run `trueup plan --out FILE` again"
    )]
    Altered {
        /// The first difference, e.g. an action the file has and the plan has not.
        difference: String,
    },
}

/// The version of the saved-plan file format.
pub const SAVED_PLAN_VERSION: u32 = 1;

/// A plan saved by `trueup plan --out`, to be applied as it is by `trueup apply FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`SAVED_PLAN_VERSION`].
    pub format_version: u32,
    /// The instant it was planned at.
    pub now: Timestamp,
    /// The digest of the whole observed world.
    pub fingerprint: String,
    /// Digests of the world's parts, to say what changed.
    pub digests: BTreeMap<String, String>,
    /// The actions.
    pub actions: Vec<Action>,
    /// The findings.
    pub findings: Vec<Finding>,
}

impl SavedPlan {
    /// The saved form of `plan`, made from `world` at `now`.
    pub fn new(plan: &Plan, world: &World, now: Timestamp) -> Self {
        SavedPlan {
            format_version: SAVED_PLAN_VERSION,
            now,
            fingerprint: plan.fingerprint.clone(),
            digests: digests(world),
            actions: plan.actions.clone(),
            findings: plan.findings.clone(),
        }
    }

    /// Reads a saved plan.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::BadPlanFile`] or [`ReconcileError::PlanVersion`].
    pub fn read(path: &std::path::Path, text: &str) -> Result<Self, ReconcileError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let bad = |source| ReconcileError::BadPlanFile { path: path.to_owned(), source };
        let version: Version = serde_json::from_str(text).map_err(bad)?;
        if version.format_version != SAVED_PLAN_VERSION {
            return Err(ReconcileError::PlanVersion { path: path.to_owned(), found: version.format_version });
        }
        serde_json::from_str(text).map_err(bad)
    }

    /// The plan it holds.
    pub fn plan(&self) -> Plan {
        Plan { actions: self.actions.clone(), findings: self.findings.clone(), fingerprint: self.fingerprint.clone() }
    }

    /// Whether `bytes` have the shape of a saved plan (of any format version): the test
    /// for a file that `plan --out` may replace.
    pub fn looks_like(bytes: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Shape {
            #[allow(dead_code, reason = "only its presence is checked")]
            format_version: u32,
            #[allow(dead_code, reason = "only its presence is checked")]
            fingerprint: String,
            #[allow(dead_code, reason = "only its presence is checked")]
            digests: BTreeMap<String, String>,
        }
        serde_json::from_slice::<Shape>(bytes).is_ok()
    }

    /// `Ok` when `world` is the world this plan was made from, and its actions are those
    /// that `specs` plan for that world at the plan's instant under `limits` (reasons
    /// aside): a file
    /// edited by hand never applies an action trueup did not plan.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Stale`], naming the parts that changed;
    /// [`ReconcileError::Altered`], naming the first action that differs.
    pub fn check_fresh(&self, specs: &Specs, world: &World, limits: &plan::Limits) -> Result<(), ReconcileError> {
        if plan::fingerprint(world) == self.fingerprint {
            let planned = plan::plan_unsealed(specs, world, self.now, limits).actions;
            return match first_difference(&self.actions, &planned) {
                None => Ok(()),
                Some(difference) => Err(ReconcileError::Altered { difference }),
            };
        }
        let now = digests(world);
        let keys: std::collections::BTreeSet<&String> = now.keys().chain(self.digests.keys()).collect();
        let mut changed: Vec<String> =
            keys.into_iter().filter(|k| now.get(*k) != self.digests.get(*k)).cloned().collect();
        if changed.is_empty() {
            changed.push("the world".to_owned());
        }
        Err(ReconcileError::Stale { changed })
    }
}

/// The first action where `saved` and `planned` differ by kind, project or subject, in
/// words; `None` when they are the same actions in the same order.
fn first_difference(saved: &[Action], planned: &[Action]) -> Option<String> {
    let shown = |a: &Action| {
        let (symbol, verb, target) = plan::describe(&a.change, &a.project);
        format!("`{symbol} {verb} {target}` of project `{}`", a.project)
    };
    let same = |a: &Action, b: &Action| a.project == b.project && a.change == b.change;
    let at = saved.iter().zip(planned).position(|(a, b)| !same(a, b));
    match (at, saved.len().cmp(&planned.len())) {
        (Some(i), _) => {
            Some(format!("action {} is {} in the file but {} in the plan", i + 1, shown(&saved[i]), shown(&planned[i])))
        }
        (None, std::cmp::Ordering::Greater) => {
            let i = planned.len();
            Some(format!("action {} of the file, {}, is not in the plan", i + 1, shown(&saved[i])))
        }
        (None, std::cmp::Ordering::Less) => {
            let i = saved.len();
            Some(format!("the file lacks action {}, {}", i + 1, shown(&planned[i])))
        }
        (None, std::cmp::Ordering::Equal) => None,
    }
}

/// Digests of a world by part: one per project (its record, deployments, links, route
/// and containers), and one for everything else.
pub fn digests(world: &World) -> BTreeMap<String, String> {
    let known: std::collections::BTreeSet<&str> =
        world.projects.iter().map(|p| p.id.as_str()).filter(|id| valid_id(id)).collect();
    let key_of = |project: &str| {
        if known.contains(project) {
            format!("project {project}")
        } else {
            "other projects, routes and containers".to_owned()
        }
    };
    let mut parts: BTreeMap<String, World> = BTreeMap::new();
    for p in &world.projects {
        parts.entry(key_of(&p.id)).or_default().projects.push(p.clone());
    }
    for d in &world.deployments {
        parts.entry(key_of(&d.project)).or_default().deployments.push(d.clone());
    }
    for (project, route) in &world.routes {
        parts.entry(key_of(project)).or_default().routes.insert(project.clone(), route.clone());
    }
    for c in world.containers.iter().flatten() {
        let project = c.label(crate::model::labels::PROJECT).unwrap_or_default();
        parts.entry(key_of(project)).or_default().containers.get_or_insert_with(Vec::new).push(c.clone());
    }
    for (path, node) in &world.files {
        // `ROOT/PROJECT/...` and `ROOT/webroot/PROJECT` belong to the project.
        let mut rest = path.strip_prefix(&world.root).into_iter().flat_map(|r| r.components());
        let first = rest.next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        let project = match first.as_deref() {
            Some("webroot") => rest.next().map(|c| c.as_os_str().to_string_lossy().into_owned()),
            other => other.map(str::to_owned),
        };
        let key = match project {
            Some(p) if known.contains(p.as_str()) => key_of(&p),
            _ => "files outside the projects".to_owned(),
        };
        parts.entry(key).or_default().files.insert(path.clone(), node.clone());
    }
    parts.entry("images".to_owned()).or_default().images = world.images.clone();
    parts.into_iter().map(|(k, w)| (k, plan::fingerprint(&w))).collect()
}

/// Observes the machine and plans its repairs at `now`.
///
/// # Errors
///
/// When the store or the machine cannot be read, and
/// [`ReconcileError::Configuration`] when the configuration looks wrong.
pub fn plan_machine(
    store: &Store,
    specs: &Specs,
    cfg: &Config,
    now: Timestamp,
) -> Result<(World, Plan), ReconcileError> {
    let (world, mut plan) = plan_machine_unsealed(store, specs, cfg, now)?;
    plan.seal(&world);
    Ok((world, plan))
}

/// [`plan_machine`] without the plan's fingerprint (see [`plan::plan_unsealed`]): for a
/// plan that is only shown, as `trueup plan` without `--json` or `--out`.
///
/// # Errors
///
/// As [`plan_machine`].
pub fn plan_machine_unsealed(
    store: &Store,
    specs: &Specs,
    cfg: &Config,
    now: Timestamp,
) -> Result<(World, Plan), ReconcileError> {
    let cfg = &cfg.absolute()?;
    let (world, _) = observe_machine(store, specs, cfg)?;
    let plan = plan::plan_unsealed(specs, &world, now, &cfg.limits());
    refuse_wrong_configuration(plan.errors(), cfg)?;
    Ok((world, plan))
}

/// Observes the machine as [`plan_machine_unsealed`] does and refuses the same wrong
/// configurations, without planning: for `status`, which shows the world.
///
/// # Errors
///
/// As [`plan_machine_unsealed`].
pub fn observe_checked(store: &Store, specs: &Specs, cfg: &Config) -> Result<World, ReconcileError> {
    let cfg = &cfg.absolute()?;
    let (world, _) = observe_machine(store, specs, cfg)?;
    refuse_wrong_configuration(&plan::configuration_errors(specs, &world), cfg)?;
    Ok(world)
}

/// Observes the store, the files and the routes, then the container engine when one is
/// configured: its labelled containers and its images, listed once for every project.
/// Returns the engine too, for the effects of an apply.
fn observe_machine(store: &Store, specs: &Specs, cfg: &Config) -> Result<(World, Option<Engine>), ReconcileError> {
    let mut world = observe(store, specs, &observe_config(cfg))?;
    let engine = containers::connect(&cfg.containers)?;
    if let Some(engine) = &engine {
        world.containers = Some(engine.list()?);
        world.images = Some(engine.images()?);
    }
    Ok((world, engine))
}

/// `Ok` unless `errors`, the [`plan::Level::Error`] findings of a plan or of
/// [`plan::configuration_errors`], say the configuration is wrong.
fn refuse_wrong_configuration<'f>(
    errors: impl IntoIterator<Item = &'f plan::Finding>,
    cfg: &Config,
) -> Result<(), ReconcileError> {
    let problems: Vec<String> = errors.into_iter().map(|f| f.message.clone()).collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ReconcileError::Configuration { root: cfg.root.clone(), routes_dir: cfg.routes_dir.clone(), problems })
}

impl Config {
    /// The same configuration with the root and routes folder made absolute: links are
    /// written with absolute targets, and a relative one would resolve to nothing.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Path`] for an empty path or an unreadable working directory.
    pub fn absolute(&self) -> Result<Config, ReconcileError> {
        let abs = |p: &PathBuf| {
            let absolute = std::path::absolute(p).map_err(|source| ReconcileError::Path { path: p.clone(), source })?;
            Ok::<_, ReconcileError>(crate::model::normalize(&absolute))
        };
        Ok(Config { root: abs(&self.root)?, routes_dir: abs(&self.routes_dir)?, ..self.clone() })
    }

    /// The limits the plan applies.
    pub fn limits(&self) -> plan::Limits {
        plan::Limits { helper_max_age: self.containers.helper_max_age }
    }
}

fn observe_config(cfg: &Config) -> ObserveConfig {
    ObserveConfig { root: cfg.root.clone(), routes_dir: cfg.routes_dir.clone() }
}

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The plan that was applied.
    pub plan: Plan,
    /// What happened to each action.
    pub report: Report,
    /// The journal's run id.
    pub run: String,
    /// The holder whose lease this apply took over (it lapsed, or its process is gone).
    pub took_over: Option<TookOver>,
    /// Links that were checked and already pointed where they should.
    pub verified_links: usize,
    /// Earlier applies that died with actions unfinished; this one closed them.
    pub interrupted: Vec<OpenRun>,
}

impl Applied {
    /// The closing line of `trueup apply`, see [`apply::Counts::line`].
    pub fn summary_line(&self) -> String {
        self.report.counts.line(self.verified_links)
    }
}

#[derive(Serialize)]
struct JsonApplied<'a> {
    format_version: u32,
    now: Timestamp,
    run: &'a str,
    fingerprint: &'a str,
    outcomes: &'a [apply::Outcome],
    counts: &'a apply::Counts,
    verified_links: usize,
    stopped: Option<&'a str>,
    findings: &'a [Finding],
}

/// What an apply did, as JSON (`trueup apply --json`), format version 1.
///
/// ```json
/// {
///   "format_version": 1,
///   "now": "2025-10-02T12:00:00Z",
///   "run": "20251002T120000Z-7",
///   "fingerprint": "9f3c0d1e2a4b5c6d",
///   "outcomes": [
///     { "action": { "project": "p1", "kind": "resume", ..., "reason": "..." },
///       "status": { "status": "done" } },
///     { "action": { ... }, "status": { "status": "skipped", "why": "..." } }
///   ],
///   "counts": { "deployments_resumed": 1, ..., "errors": 0, "skipped": 1 },
///   "verified_links": 4,
///   "stopped": null,
///   "findings": [ { "project": "p1", "level": "warning", "message": "..." } ]
/// }
/// ```
///
/// An action is as in [`plan::render_json`], a status as [`Status`] serializes (`done`,
/// `failed` or `skipped`, with `why`), the counts as documented on [`apply::Counts`].
/// `run` is the journal's run id, `stopped` why the apply stopped early.
pub fn render_json(applied: &Applied, now: Timestamp) -> String {
    let doc = JsonApplied {
        format_version: 1,
        now,
        run: &applied.run,
        fingerprint: &applied.plan.fingerprint,
        outcomes: &applied.report.outcomes,
        counts: &applied.report.counts,
        verified_links: applied.verified_links,
        stopped: applied.report.stopped.as_deref(),
        findings: &applied.plan.findings,
    };
    serde_json::to_string_pretty(&doc).expect("a report is plain data and always serializes")
}

/// Hears how an apply goes, for progress display. Both methods default to nothing.
pub trait Listener {
    /// The plan is made (or a saved one checked) and nothing has changed yet. A fresh
    /// plan has no fingerprint yet: it is hashed while the changes are made, and
    /// [`Applied::plan`] carries it.
    fn planned(&mut self, plan: &Plan) {
        let _ = plan;
    }

    /// Action `index` is about to run: the lease is checked and no stop was asked.
    fn acting(&mut self, index: usize) {
        let _ = index;
    }

    /// Action `index` of `total` ended with `status`. Its journal row may be written
    /// later, with its batch's.
    fn finished(&mut self, index: usize, total: usize, action: &Action, status: &Status) {
        let _ = (index, total, action, status);
    }

    /// Another apply holds the lease until `until`: this one waits, up to its
    /// `lock_timeout`. Heard once, when the wait begins.
    fn waiting(&mut self, owner: &str, until: Timestamp) {
        let _ = (owner, until);
    }

    /// Why the apply must stop, if it must (a signal, an output that cannot be written),
    /// e.g. `interrupted by SIGTERM`. Asked while waiting for the lease and before each
    /// action: the action in hand finishes, the rest are journaled as skipped with this
    /// reason, and the lease is released as at every end.
    fn interrupted(&mut self) -> Option<String> {
        None
    }
}

/// A listener that hears nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Listener for Quiet {}

/// What to apply: a fresh plan, or a saved one.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Observe and plan now.
    Fresh,
    /// Apply this saved plan if the world is still the one it was made from.
    Saved(&'a SavedPlan),
}

/// Takes the lease, observes, plans (or checks a saved plan), applies, and gives the
/// lease back. `listener` hears about the plan before anything changes, and about each
/// action as it ends.
///
/// # Errors
///
/// [`ReconcileError::Busy`] when another apply holds the lease past the timeout;
/// [`ReconcileError::Stale`] for a saved plan whose world changed; store and observation
/// failures. Failed actions are not errors: they are in the [`Report`].
pub fn apply_machine(
    store: &Store,
    specs: &Specs,
    cfg: &Config,
    now: Timestamp,
    source: Source<'_>,
    listener: &mut dyn Listener,
) -> Result<Applied, ReconcileError> {
    let cfg = &cfg.absolute()?;
    let (lease, took_over) = take_lease(store, cfg, listener)?;
    let result = apply_leased(store, specs, cfg, now, source, &lease, listener);
    // A lease lost mid-apply cannot be released; that is the reason the apply stopped.
    let _ = store.release_lease(&lease);
    result.map(|(plan, report, run, verified_links, interrupted)| Applied {
        plan,
        report,
        run,
        took_over,
        verified_links,
        interrupted,
    })
}

fn apply_leased(
    store: &Store,
    specs: &Specs,
    cfg: &Config,
    now: Timestamp,
    source: Source<'_>,
    lease: &Lease,
    listener: &mut dyn Listener,
) -> Result<(Plan, Report, String, usize, Vec<OpenRun>), ReconcileError> {
    let (world, engine) = observe_machine(store, specs, cfg)?;
    // Each link on its own: a webroot link that is right counts even while `current`,
    // which it leads through, is being repaired. The plan is made from the same view.
    let view = plan::view(specs, &world, now);
    let verified_links = view
        .projects
        .values()
        .filter_map(|v| v.live.map(|live| (crate::model::Layout::new(&world.root, &v.project.id), live)))
        .flat_map(|(layout, live)| {
            [(layout.current(), layout.release(&live.id)), (layout.webroot(), layout.webroot_target())]
        })
        .filter(|(link, want)| plan::health(&view.paths, link, want) == plan::LinkHealth::Ok)
        .count();
    // Before any verdict, removal or journal row: a wrong configuration changes nothing,
    // whatever a saved plan says. Its errors are the view's; a saved plan is checked
    // against a plan of its own time, so only a fresh one is made from this view.
    refuse_wrong_configuration(view.findings.iter().filter(|f| f.level == plan::Level::Error), cfg)?;
    let (mut plan, fresh) = match source {
        // Sealed while the changes are made (below).
        Source::Fresh => (plan::plan_of_view(specs, &world, view, now, &cfg.limits()), true),
        Source::Saved(saved) => {
            // The saved plan carries its own fingerprint, checked against this world.
            saved.check_fresh(specs, &world, &cfg.limits())?;
            (saved.plan(), false)
        }
    };
    let run = format!("{}-{}", clock::now().compact(), lease.token);
    // Runs that died mid-apply: every action is idempotent, so this plan redoes their work.
    let interrupted: Vec<OpenRun> = store.open_runs()?.into_iter().filter(|r| r.token < lease.token).collect();
    if !interrupted.is_empty() {
        // Killed in the middle of a link switch, a run may have left a link under the
        // switch's temporary name, which no plan looks at.
        for open in &interrupted {
            crate::world::effects::clear_half_switched(&cfg.root, &store.unfinished_links(&open.run)?);
        }
        store.close_open_runs(lease, &run, clock::now())?;
    }
    listener.planned(&plan);
    let mut hooks = Journal {
        store,
        lease: lease.clone(),
        ttl: cfg.lease_ttl,
        renewed: std::time::Instant::now(),
        run: &run,
        total: plan.actions.len(),
        listener,
        fenced: 0,
        planned: Vec::new(),
        finished: Vec::new(),
    };
    // Showing the plan may have taken a while (a slow reader of stdout): renew now. An
    // interruption meanwhile is seen again before the first action, which journals every
    // action as skipped.
    hooks.renew().map_err(|e| ReconcileError::LeaseLost(Box::new(e)))?;
    let mut host =
        Host::new(RealFs::new(&cfg.root, &cfg.routes_dir), store, lease.clone()).with_engine(engine.as_ref());
    // A fresh plan's fingerprint serializes the whole world it was made from (about 40 ms
    // at 10,000 projects, growing with the world): it is hashed on a thread of its own
    // while the changes are made, which mostly wait for the disk, and the plan reported
    // carries it.
    let (report, fingerprint) = std::thread::scope(|s| {
        let fingerprint = fresh.then(|| crate::threads::spawn(s, || plan::fingerprint(&world)));
        let report = apply::apply(&plan, &mut host, now, &mut hooks);
        (report, fingerprint.map(crate::threads::Task::join))
    });
    if let Some(fingerprint) = fingerprint {
        plan.fingerprint = fingerprint;
    }
    Ok((plan, report, run, verified_links, interrupted))
}

/// Takes the lease, polling until `cfg.lock_timeout` or until `listener` says to stop.
/// Returns the holder it replaced (lapsed, or dead on this host), if any.
fn take_lease(
    store: &Store,
    cfg: &Config,
    listener: &mut dyn Listener,
) -> Result<(Lease, Option<TookOver>), ReconcileError> {
    let started = std::time::Instant::now();
    let mut heard = false;
    loop {
        if let Some(why) = listener.interrupted() {
            return Err(ReconcileError::Interrupted(why));
        }
        let holder = Holder { owner: &cfg.owner, host: &cfg.host, pid: cfg.pid };
        match store.acquire_lease_as(holder, clock::now(), cfg.lease_ttl, &cfg.alive) {
            Ok(taken) => return Ok(taken),
            Err(StoreError::LeaseHeld { owner, until }) => {
                if !std::mem::replace(&mut heard, true) && !cfg.lock_timeout.is_zero() {
                    listener.waiting(&owner, until);
                }
                let waited = started.elapsed();
                if waited >= cfg.lock_timeout {
                    let waited = Duration::from_secs(waited.as_secs());
                    return Err(ReconcileError::Busy { owner, until, waited });
                }
                std::thread::sleep(std::time::Duration::from_millis(100).min(cfg.lock_timeout - waited));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The store side of an apply: the journal, written in batches, and the lease, checked
/// before every action and renewed as its time runs down.
struct Journal<'a, 'f> {
    store: &'a Store,
    lease: Lease,
    ttl: Duration,
    /// When the lease was last renewed.
    renewed: std::time::Instant,
    run: &'a str,
    total: usize,
    listener: &'f mut dyn Listener,
    /// How many actions passed the fence: the index of the next one.
    fenced: usize,
    /// Actions planned and not journaled yet.
    planned: Vec<(u32, Action)>,
    /// Outcomes heard and not journaled yet: the apply syncs its effects before it asks
    /// for them to be written.
    finished: Vec<(u32, Status)>,
}

/// Whether a lease of `ttl` renewed `elapsed` ago is due for renewal: once a third of
/// its time has passed, so that two renewals can be missed before it lapses.
fn renewal_due(elapsed: std::time::Duration, ttl: Duration) -> bool {
    elapsed.as_secs() * 3 >= ttl.secs()
}

fn seq(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl Journal<'_, '_> {
    /// Extends the lease by its time to live from now.
    fn renew(&mut self) -> Result<(), StoreError> {
        self.lease = self.store.renew_lease(&self.lease, clock::now(), self.ttl)?;
        self.renewed = std::time::Instant::now();
        Ok(())
    }
}

impl Hooks for Journal<'_, '_> {
    /// Renews the lease once a third of its time has passed (a write, synced), and
    /// otherwise checks that it is still this apply's by reading it: an `unlock` or a
    /// takeover is seen before the next action either way.
    fn fence(&mut self) -> Result<(), HookError> {
        if let Some(why) = self.listener.interrupted() {
            return Err(HookError::Interrupted(why));
        }
        let checked = if renewal_due(self.renewed.elapsed(), self.ttl) {
            self.renew()
        } else {
            self.store.check_lease(&self.lease)
        };
        checked.map_err(|e| HookError::LeaseLost(Box::new(e)))?;
        self.listener.acting(self.fenced);
        self.fenced += 1;
        Ok(())
    }

    fn planned(&mut self, index: usize, action: &Action) -> Result<(), HookError> {
        self.planned.push((seq(index), action.clone()));
        Ok(())
    }

    fn finished(&mut self, index: usize, action: &Action, status: &Status) -> Result<(), HookError> {
        self.finished.push((seq(index), status.clone()));
        self.listener.finished(index, self.total, action, status);
        Ok(())
    }

    /// Writes the plan in one transaction, then the outcomes kept back in another.
    fn flush(&mut self) -> Result<(), HookError> {
        // Journaling a large plan takes a while: keep the lease fresh meanwhile.
        if renewal_due(self.renewed.elapsed(), self.ttl) {
            self.renew().map_err(|e| HookError::LeaseLost(Box::new(e)))?;
        }
        let at = clock::now();
        let planned = std::mem::take(&mut self.planned);
        self.store.journal_plan(&self.lease, self.run, &planned, at).map_err(|e| HookError::Journal(Box::new(e)))?;
        let finished = std::mem::take(&mut self.finished);
        let outcomes: Vec<JournalOutcome<'_>> = finished
            .iter()
            .map(|(seq, status)| match status {
                Status::Done => JournalOutcome { seq: *seq, status: JournalStatus::Done, error: None },
                Status::Failed(why) => JournalOutcome { seq: *seq, status: JournalStatus::Failed, error: Some(why) },
                Status::Skipped(why) => JournalOutcome { seq: *seq, status: JournalStatus::Skipped, error: Some(why) },
            })
            .collect();
        self.store.journal_outcomes(&self.lease, self.run, &outcomes, at).map_err(|e| HookError::Journal(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_once_a_third_of_its_time_has_passed() {
        let secs = std::time::Duration::from_secs;
        let ttl = Duration::from_secs(60);
        let due: Vec<bool> = [0, 1, 19, 20, 21, 59, 60, 200].map(|s| renewal_due(secs(s), ttl)).to_vec();
        assert_eq!(due, [false, false, false, true, true, true, true, true]);
        let short = Duration::from_secs(2);
        assert!(!renewal_due(std::time::Duration::from_millis(999), short));
        assert!(renewal_due(secs(1), short));
    }

    #[test]
    fn a_stale_plan_names_a_few_changed_parts_and_counts_the_rest() {
        let changed = |n: usize| (1..=n).map(|i| format!("project p{i}")).collect::<Vec<_>>();
        let said = |n| ReconcileError::Stale { changed: changed(n) }.to_string();
        assert_eq!(
            said(1),
            "the plan is stale: the world changed since it was made (project p1); run `trueup plan --out FILE` again"
        );
        assert!(said(5).contains("(project p1, project p2, project p3, project p4, project p5);"), "{}", said(5));
        // A wrong `--root` changes every project: the message stays one short line.
        assert!(said(10_000).contains("(project p1, project p2, project p3, project p4, and 9996 more);"));
        assert_eq!(plan::first_named(&changed(6)), "project p1, project p2, project p3, project p4, and 2 more");
    }
}
