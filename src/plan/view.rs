//! One view of each project, read by both the planner and `status`.
//!
//! [`view`] classifies every deployment of a world at `now` once: which projects and
//! deployments the engine may act on at all, where each unfinished deployment stands
//! ([`Progress`]), what its phase's resume rule makes of it ([`Fate`]), which release is
//! live, and which deployment in flight owns the project's links and routes. The rules in
//! `rules.rs` turn a view into actions; `status.rs` shows the same view to a person. So
//! `status` calls a deployment stuck exactly when the plan has a verdict for it, and shows
//! a project as deploying exactly when the plan leaves its links to a deployment.
//!
//! Every phase and event name comes from the [`Specs`]' roles: nothing here spells one.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Finding, Level};
use crate::machine;
use crate::model::{
    Claim, Deployment, DeploymentType, Files, Layout, Node, Project, RESERVED_PROJECT_IDS, World, inside,
    is_plain_absolute, is_plain_after, resolved_link, valid_id,
};
use crate::spec::{Guard, Predicate, ResumeRule, Spec, Specs, StateId};
use crate::time::{Duration, Timestamp};

/// Where a deployment stands at an instant, before any resume rule is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// Its phase is not a state of its spec.
    UnknownPhase,
    /// A worker holds a claim that has not lapsed.
    Held(&'a Claim),
    /// It is in a final state.
    Finished,
    /// Its last progress is later than now: the clock is not to be trusted.
    Future(Timestamp),
    /// It progressed within its phase's `stuck_after`.
    Running {
        /// Its phase.
        state: StateId,
        /// How long since its last progress.
        age: Duration,
        /// Its phase's `stuck_after`.
        limit: Duration,
    },
    /// Its deadline passed: the resume rule applies.
    Stuck {
        /// Its phase.
        state: StateId,
        /// Its last progress, if it ever recorded one.
        since: Option<Timestamp>,
        /// Its phase's `stuck_after`.
        limit: Duration,
        /// How long since its last progress, if known.
        age: Option<Duration>,
    },
}

/// Classifies a deployment at `now` under its own spec.
pub fn progress<'a>(spec: &Spec, d: &'a Deployment, now: Timestamp) -> Progress<'a> {
    let Some(state) = spec.find(&d.phase) else { return Progress::UnknownPhase };
    if let Some(claim) = d.owner.as_ref().filter(|_| d.held_at(now)) {
        return Progress::Held(claim);
    }
    if spec.is_final(state) {
        return Progress::Finished;
    }
    let last = d.last_progress();
    let limit = spec.state(state).stuck_after.unwrap_or_default();
    let age = last.and_then(|t| now.since(t));
    // A worker whose process is gone makes no more progress: its deployment is stuck at
    // once, without waiting for `stuck_after` (nor for a clock that looks ahead).
    if d.dead_claim().is_some() {
        return Progress::Stuck { state, since: last, limit, age };
    }
    if let Some(last) = last.filter(|t| *t > now) {
        return Progress::Future(last);
    }
    match age {
        Some(age) if age < limit => Progress::Running { state, age, limit },
        _ => Progress::Stuck { state, since: last, limit, age },
    }
}

/// What the deployment rule makes of one deployment that is not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// A worker is on it (a live claim, progress within its deadline), or it cannot be
    /// judged (a phase its spec does not know, a clock in the future): it is left alone.
    InFlight,
    /// It is stuck and resumes: put back in `to` (its phase, or the next one when the
    /// phase's work was verified done) as attempt `attempt`.
    Resume {
        /// The phase it resumes in.
        to: StateId,
        /// Its `attempts` afterwards.
        attempt: u32,
        /// Why, one line.
        reason: String,
    },
    /// It is stuck and fails: moved to `to`, the target of its spec's fail event.
    Fail {
        /// The final phase it moves to.
        to: StateId,
        /// Why, one line.
        reason: String,
    },
}

/// One unfinished deployment, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// Where it stands.
    pub progress: Progress<'a>,
    /// What happens to it.
    pub fate: Fate,
    /// True when it owns its project's links and routes: it is in flight (or resumes) and
    /// a worker holds it or its release folder exists, so the links may point at it.
    pub owns_links: bool,
}

/// How a link looks compared to what it should point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "health", content = "target", rename_all = "snake_case")]
pub enum LinkHealth {
    /// Points where it should.
    Ok,
    /// Does not exist.
    Missing,
    /// Points at an existing path, but not the right one.
    Wrong(PathBuf),
    /// Points at nothing.
    Dangling(PathBuf),
    /// Points outside the managed root.
    Outside(PathBuf),
    /// A real file or folder stands where the link should be.
    NotALink,
    /// Points at the release of a deployment still in flight, which owns the link.
    Deploying(String),
    /// There is nothing to point at yet (no live release).
    Unknown,
}

/// Where the rules look a path up: a [`World`]'s own map of paths, or an [`Index`] of it.
pub trait Paths {
    /// The managed root.
    fn root(&self) -> &Path;
    /// What is at `path`, if anything.
    fn node(&self, path: &Path) -> Option<&Node>;
}

impl Paths for World {
    fn root(&self) -> &Path {
        &self.root
    }

    fn node(&self, path: &Path) -> Option<&Node> {
        self.files.get(path)
    }
}

/// A world's paths with a hash index beside its ordered map, for the many lookups of one
/// plan: a lookup hashes the path's bytes once, where the map compares it with a score of
/// other paths, component by component. A path whose bytes are no key (absent, or spelled
/// another way, like `a//b`) is then looked up in the map, so every answer is the map's;
/// unless the path and every key are plain ([`is_plain_absolute`]), as those of a real
/// world are: then bytes that are no key are no path of the map either.
///
/// The index waits on memory more than it computes (each path's bytes are an allocation
/// of their own, read once, and the table is a few megabytes): on a large world its two
/// halves, the paths before the middle of the map and those after, are indexed at once
/// on two threads (`Index::in_halves`), and a lookup asks one, then the other.
#[derive(Clone)]
pub struct Index<'a> {
    root: &'a Path,
    files: &'a Files,
    halves: [Half<'a>; 2],
    /// Every key of both halves is plain.
    plain: bool,
}

/// The paths of one half of a map, by their bytes.
#[derive(Clone)]
struct Half<'a> {
    by_bytes: HashMap<&'a [u8], &'a Node, foldhash::fast::RandomState>,
    /// Every key of this half is plain.
    plain: bool,
}

impl<'a> Half<'a> {
    /// Indexes `paths`, `count` of them.
    fn of(paths: impl Iterator<Item = (&'a PathBuf, &'a Node)>, count: usize) -> Self {
        let mut by_bytes = HashMap::with_capacity_and_hasher(count, foldhash::fast::RandomState::default());
        // Each path is checked as it is hashed, its bytes at hand (a second walk of the
        // map read them all again), and from where it first differs from the one before:
        // 11.6 million instructions fewer at 10,000 projects than each path whole.
        let mut plain = true;
        let mut before: Option<&Path> = None;
        by_bytes.extend(paths.map(|(path, node)| {
            plain = plain && before.map_or_else(|| is_plain_absolute(path), |before| is_plain_after(before, path));
            before = Some(path);
            (path.as_os_str().as_bytes(), node)
        }));
        Half { by_bytes, plain }
    }
}

impl<'a> Index<'a> {
    /// Indexes the paths of `world`.
    pub fn new(world: &'a World) -> Self {
        Index::of(&world.root, &world.files)
    }

    /// Indexes `files`, the paths seen under `root`, before they are a world's.
    pub fn of(root: &'a Path, files: &'a Files) -> Self {
        Index::joined(root, files, [Half::of(files.iter(), files.len()), Half::of(std::iter::empty(), 0)])
    }

    /// The index of `files` made of its two `halves`.
    fn joined(root: &'a Path, files: &'a Files, halves: [Half<'a>; 2]) -> Self {
        let plain = halves.iter().all(|half| half.plain);
        Index { root, files, halves, plain }
    }

    /// [`Index::new`], in halves: the second indexed on a thread of `scope` when `apart`
    /// while this one indexes the first, then does `meanwhile`.
    fn in_halves<'s, T>(
        scope: &'s std::thread::Scope<'s, '_>,
        world: &'a World,
        apart: bool,
        meanwhile: impl FnOnce() -> T,
    ) -> (Self, T)
    where
        'a: 's,
    {
        let files = &world.files;
        let half = files.len() / 2;
        // Skipping steps over the list's entries, not the paths' bytes.
        let second = crate::threads::defer(scope, apart, move || Half::of(files.iter().skip(half), files.len() - half));
        let first = Half::of(files.iter().take(half), half);
        let also = meanwhile();
        (Index::joined(&world.root, files, [first, second.join()]), also)
    }
}

impl std::fmt::Debug for Index<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: usize = self.halves.iter().map(|half| half.by_bytes.len()).sum();
        f.debug_struct("Index").field("paths", &paths).finish_non_exhaustive()
    }
}

impl Paths for Index<'_> {
    fn root(&self) -> &Path {
        self.root
    }

    fn node(&self, path: &Path) -> Option<&Node> {
        let bytes = path.as_os_str().as_bytes();
        match self.halves.iter().find_map(|half| half.by_bytes.get(bytes)) {
            Some(node) => Some(node),
            None if self.plain && is_plain_absolute(path) => None,
            None => self.files.get(path),
        }
    }
}

/// How the link at `link` compares with `want`.
pub fn health(world: &(impl Paths + ?Sized), link: &Path, want: &Path) -> LinkHealth {
    match world.node(link) {
        None => LinkHealth::Missing,
        Some(Node::Symlink(target)) => {
            let resolved = resolved_link(link, target);
            if resolved == want {
                LinkHealth::Ok
            } else if !inside(world.root(), &resolved) {
                LinkHealth::Outside(resolved.into_owned())
            } else if world.node(&resolved).is_some() {
                LinkHealth::Wrong(resolved.into_owned())
            } else {
                LinkHealth::Dangling(resolved.into_owned())
            }
        }
        Some(_) => LinkHealth::NotALink,
    }
}

/// One project, as every rule sees it.
#[derive(Debug, Clone)]
pub struct ProjectView<'a> {
    /// The project.
    pub project: &'a Project,
    /// Its deployments, in world order (those left alone included).
    pub deployments: Vec<&'a Deployment>,
    /// The latest deployment in its spec's live phase, whether or not its folder exists.
    pub latest: Option<&'a Deployment>,
    /// The live release, which `current` must point at: the latest deployment in its
    /// live phase whose release folder exists. `None` for an inactive project.
    pub live: Option<&'a Deployment>,
    /// Its unfinished deployments that the engine may act on, judged, by id.
    pub judged: JudgedById<'a>,
}

/// A project's judged deployments, sorted by id. Most projects have one or none: a list
/// holds one in its size, where a map's first node has room for eleven (a tenth of the
/// plan's memory, over ten thousand projects).
#[derive(Debug, Clone, Default)]
pub struct JudgedById<'a>(Vec<Judged<'a>>);

impl<'a> JudgedById<'a> {
    /// The judgement of the deployment `id`.
    pub fn get(&self, id: &str) -> Option<&Judged<'a>> {
        self.position(id).ok().map(|i| &self.0[i])
    }

    /// Every judgement, by id.
    pub fn values(&self) -> impl Iterator<Item = &Judged<'a>> {
        self.0.iter()
    }

    /// Adds `more`: taken whole when there is no judgement yet and they come by id, as a
    /// run of the store's deployments does (one project's, sorted), rather than put in
    /// place one by one on the thread that joins the chunks while the other core idles
    /// (at 10,000 projects about 4 million instructions of the join's 3 to 5 ms).
    fn extend(&mut self, more: Vec<Judged<'a>>) {
        if self.0.is_empty() && more.is_sorted_by(|a, b| a.deployment.id < b.deployment.id) {
            self.0 = more;
            return;
        }
        for judged in more {
            self.insert(judged);
        }
    }

    /// Adds `judged`, in place of an earlier judgement of the same deployment.
    fn insert(&mut self, judged: Judged<'a>) {
        match self.position(&judged.deployment.id) {
            Ok(i) => self.0[i] = judged,
            Err(i) => self.0.insert(i, judged),
        }
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|j| j.deployment.id.as_str().cmp(id))
    }
}

impl<'a> ProjectView<'a> {
    /// The deployment in flight that owns the project's links and routes, if any (the
    /// first by id when several do).
    pub fn owner(&self) -> Option<&'a Deployment> {
        self.judged.values().find(|j| j.owns_links).map(|j| j.deployment)
    }

    /// True when a deployment in flight owns the project's links and routes.
    pub fn busy(&self) -> bool {
        self.owner().is_some()
    }

    /// The fate of a deployment of this project, if it is unfinished and judged.
    pub fn fate(&self, deployment: &str) -> Option<&Fate> {
        self.judged.get(deployment).map(|j| &j.fate)
    }
}

/// Every project the engine may act on, and what it saw on the way.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Projects by id: valid, listed once, and not left alone.
    pub projects: BTreeMap<&'a str, ProjectView<'a>>,
    /// Projects left alone as a whole (their folder is a symlink): nothing of theirs is
    /// touched, route files and containers included.
    pub skipped: BTreeSet<&'a str>,
    /// What the view saw and will not change, in the order it was seen.
    pub findings: Vec<Finding>,
    /// The world's paths, indexed for the rules' lookups.
    pub paths: Index<'a>,
}

/// How many projects' runs of deployments a thread judges at a time, on a large world.
const JUDGE_CHUNK: usize = 256;

/// Reads `world` at `now` under `specs`. Pure. On a world of 2,000 projects or more, on
/// more than one core, some of the work is done on a second thread: half the paths are
/// indexed there (`Index::in_halves`), and the deployments are judged on both threads
/// (`threads::share`); the view is the same.
pub fn view<'a>(specs: &Specs, world: &'a World, now: Timestamp) -> View<'a> {
    let helpers = crate::threads::count(world.projects.len(), 2) - 1;
    let apart = helpers > 0;
    let (paths, users) = std::thread::scope(|s| Index::in_halves(s, world, apart, || shared_ids(&world.deployments)));
    let mut v = View { projects: BTreeMap::new(), skipped: BTreeSet::new(), findings: Vec::new(), paths };
    if world.containers.is_none() {
        v.findings.push(Finding::new(
            "",
            Level::Note,
            "no container engine is configured: containers and images are not checked".into(),
        ));
    }
    v.findings.extend(configuration_errors(specs, world));
    // The projects in world order, and where each is among them: a hashed lookup a
    // deployment run, where the ordered map compares a score of ids. The map is made
    // once all are in, from a list nearly always sorted already.
    let mut views: Vec<ProjectView<'a>> = Vec::with_capacity(world.projects.len());
    let mut at: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(world.projects.len(), foldhash::fast::RandomState::default());
    for project in &world.projects {
        if !valid_id(&project.id) {
            let message = format!("project id `{}` is not a plain name: it is left alone", project.id.escape_debug());
            v.findings.push(Finding::new(&project.id, Level::Warning, message));
            continue;
        }
        // A project with a row the store could not read is left alone as a whole (what is
        // missing may be its live release), and so is one whose name the layout reserves
        // (its folder is not its own).
        let held = match world.unreadable.get(&project.id) {
            Some(why) => {
                Some(format!("{why}: project `{}` is left alone until the row is fixed", project.id.escape_debug()))
            }
            None if RESERVED_PROJECT_IDS.contains(&project.id.as_str()) => Some(format!(
                "project name `{}` is reserved by the layout (`ROOT/webroot`, `ROOT/PROJECT/current`, \
                 `ROOT/PROJECT/deployments`): it is left alone; rename the project",
                project.id
            )),
            None => None,
        };
        if let Some(why) = held {
            v.findings.push(Finding::new(&project.id, Level::Warning, why));
            v.skipped.insert(&project.id);
            continue;
        }
        let Entry::Vacant(entry) = at.entry(&project.id) else {
            v.findings.push(Finding::new(
                &project.id,
                Level::Warning,
                format!("project `{}` is listed twice: the first is used", project.id),
            ));
            continue;
        };
        let dir = Layout::new(&world.root, &project.id).project_dir();
        if let Some(Node::Symlink(t)) = v.paths.node(&dir) {
            let message = format!(
                "`{}` is a symlink to `{}`: it is never followed, and the project is left alone",
                dir.display(),
                t.display()
            );
            v.findings.push(Finding::new(&project.id, Level::Warning, message));
            v.skipped.insert(&project.id);
            continue;
        }
        entry.insert(views.len());
        views.push(ProjectView {
            project,
            deployments: Vec::new(),
            latest: None,
            live: None,
            judged: JudgedById::default(),
        });
    }
    // The store gives each project's deployments in a run: one lookup a run.
    let runs: Vec<&[Deployment]> = world.deployments.chunk_by(|a, b| a.project == b.project).collect();
    for run in &runs {
        if let Some(&i) = at.get(run[0].project.as_str()) {
            views[i].deployments.extend(*run);
        }
    }
    // On a large world the deployments are judged on two threads, in chunks of runs each
    // takes in turn, this one once it has found each project's live release: neither reads
    // what the other finds. Each chunk's judgements and findings are taken in turn.
    let View { skipped, findings, paths, .. } = &mut v;
    let paths = &*paths;
    let found =
        || -> Vec<_> { views.iter().map(|view| releases(specs, paths, view.deployments.iter().copied())).collect() };
    let judge = |runs: &[&'a [Deployment]]| {
        let mut judged = Vec::new();
        let mut findings = Vec::new();
        for run in runs {
            let i = at.get(run[0].project.as_str()).copied();
            let mut of_run = Vec::new();
            for d in *run {
                if let Some(sharing) = users.get(d.id.as_str()) {
                    let message = format!(
                        "deployment id `{}` is used by several deployments (projects {}): ids must be unique, so it is left alone",
                        d.id,
                        sharing.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                    );
                    findings.push(Finding::new(&d.project, Level::Warning, message));
                    continue;
                }
                if !valid_id(&d.id) {
                    let message =
                        format!("deployment id `{}` is not a plain name: it is left alone", d.id.escape_debug());
                    findings.push(Finding::new(&d.project, Level::Warning, message));
                    continue;
                }
                let Some(i) = i else {
                    if valid_id(&d.project) && !skipped.contains(d.project.as_str()) {
                        let message = format!(
                            "deployment `{}` belongs to unknown project `{}`: it is left alone",
                            d.id, d.project
                        );
                        findings.push(Finding::new(&d.project, Level::Warning, message));
                    }
                    continue;
                };
                let view = &views[i];
                let spec = specs.of(d);
                let progress = progress(spec, d, now);
                let fate = match &progress {
                    Progress::Finished => continue,
                    Progress::UnknownPhase | Progress::Held(_) | Progress::Future(_) | Progress::Running { .. } => {
                        Fate::InFlight
                    }
                    Progress::Stuck { state, since, limit, age } => {
                        Judge { specs, spec, world, paths, view }.stuck(d, *state, *since, *limit, *age)
                    }
                };
                let held = d.held_at(now);
                // What a deployment may already have switched to itself: its release folder,
                // or for an image deployment its container, once started (its upstream
                // recorded).
                let exposed = if d.kind.has_release_folder() {
                    release_exists(paths, &d.project, &d.id)
                } else {
                    d.metadata.contains_key("upstream")
                };
                let owns_links = matches!(fate, Fate::InFlight | Fate::Resume { .. }) && (held || exposed);
                let healthy = matches!(progress, Progress::Held(_) | Progress::Running { .. });
                let in_flight = healthy.then(|| d.id.clone());
                if let Some((level, message)) = progress_notes(spec, d, &progress) {
                    findings.push(Finding { project: d.project.clone(), level, message, in_flight: in_flight.clone() });
                }
                if owns_links && !held {
                    let has = if d.kind.has_release_folder() { "a release folder" } else { "a running container" };
                    let message = format!(
                        "deployment `{}` has {has} and is still in flight: the project's links and routes are left to it",
                        d.id
                    );
                    findings.push(Finding { project: d.project.clone(), level: Level::Note, message, in_flight });
                }
                of_run.push(Judged { deployment: d, progress, fate, owns_links });
            }
            if let Some(i) = i {
                judged.push((i, of_run));
            }
        }
        (judged, findings)
    };
    let (found, chunks) = crate::threads::share(&runs, JUDGE_CHUNK, helpers, found, judge);
    let mut judgements: Vec<JudgedById<'a>> = vec![JudgedById::default(); views.len()];
    for (judged, mut seen) in chunks {
        for (i, of_run) in judged {
            judgements[i].extend(of_run);
        }
        findings.append(&mut seen);
    }
    for ((view, judged), (latest, live)) in views.iter_mut().zip(judgements).zip(found) {
        view.judged = judged;
        view.latest = latest;
        // An inactive project has no live release.
        view.live = live.filter(|_| view.project.active);
    }
    v.projects = views.into_iter().map(|view| (view.project.id.as_str(), view)).collect();
    for view in v.projects.values().filter(|view| view.project.active) {
        match (view.latest, view.live) {
            (Some(latest), Some(live)) if latest.id != live.id => {
                let missing = Layout::new(&world.root, &view.project.id).release(&latest.id);
                let message = format!(
                    "the latest release `{}` has no folder `{}`: falling back to `{}`",
                    latest.id,
                    missing.display(),
                    live.id
                );
                v.findings.push(Finding::new(&view.project.id, Level::Warning, message));
            }
            (Some(latest), None) => {
                let live = specs.of(latest);
                let message = format!(
                    "no {} deployment has a release folder: `current` is left as it is",
                    live.name(live.roles.live)
                );
                v.findings.push(Finding::new(&view.project.id, Level::Warning, message));
            }
            _ => {}
        }
    }
    v
}

/// The ids used by more than one of `deployments`, each with the projects of those using
/// it, in world order. Found through a hash set of the ids, which costs a hashed insert
/// per deployment where a sort of the ids compared each with a score of others; nearly
/// always none is shared, and then nothing more is read.
fn shared_ids(deployments: &[Deployment]) -> BTreeMap<&str, Vec<&str>> {
    let mut seen: HashSet<&str, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(deployments.len(), foldhash::fast::RandomState::default());
    let shared: HashSet<&str, foldhash::fast::RandomState> =
        deployments.iter().map(|d| d.id.as_str()).filter(|id| !seen.insert(id)).collect();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    if shared.is_empty() {
        return users;
    }
    for d in deployments.iter().filter(|d| shared.contains(d.id.as_str())) {
        users.entry(d.id.as_str()).or_default().push(d.project.as_str());
    }
    users
}

/// What says the configuration is wrong, as [`Level::Error`] findings: a root that is
/// `/`, missing, not a folder, or empty while the database has live releases, and a
/// missing routes folder. Acting on such a world would fail deployments whose release
/// folders merely look gone and remove route files for good, so the plan then makes no
/// change at all.
pub fn configuration_errors(specs: &Specs, world: &World) -> Vec<Finding> {
    let mut errors = Vec::new();
    let mut error = |message: String| errors.push(Finding::new("", Level::Error, message));
    let root = world.root.display();
    if world.root.parent().is_none() {
        error(format!("the managed root is `{root}`, the whole file system: check `--root`"));
    } else {
        match world.files.get(&world.root) {
            None => error(format!("the managed root `{root}` does not exist (a typo?): check `--root`")),
            Some(Node::Dir) => {
                // Paths below the root come right after it in the map's order.
                let mut after = world.files.range((Bound::Excluded(world.root.as_path()), Bound::Unbounded));
                let empty = !after.next().is_some_and(|(p, _)| p.starts_with(&world.root));
                // Only releases with a folder: an image deployment's lives in its container.
                // Counted one per project, the one `current` would point at: the store
                // reads only the newest of a project's live releases
                // (`store::RELEASE_WINDOW`), so a count of rows would depend on what was
                // read.
                let live = || {
                    let rows = world.deployments.iter().filter(|d| specs.is_live(d) && d.kind.has_release_folder());
                    rows.map(|d| d.project.as_str()).collect::<std::collections::BTreeSet<_>>().len()
                };
                if let Some(live) = empty.then(live).filter(|&n| n > 0) {
                    let s = if live == 1 { "" } else { "s" };
                    error(format!(
                        "the managed root `{root}` is empty, yet the state database has {live} live release{s}: \
                         check `--root` (and `--db`)"
                    ));
                }
            }
            Some(_) => error(format!("the managed root `{root}` is not a folder: check `--root`")),
        }
    }
    if world.routes_folder_missing {
        error("the routes folder does not exist: check `--routes-dir`".to_owned());
    }
    errors
}

/// A project's latest deployment in its live phase, and the live one: the latest whose
/// release folder exists, or that has none by its type ([`release_present`]). They differ
/// when the latest lost its folder.
pub fn releases<'a>(
    specs: &Specs,
    world: &(impl Paths + ?Sized),
    deployments: impl Iterator<Item = &'a Deployment>,
) -> (Option<&'a Deployment>, Option<&'a Deployment>) {
    let mut live: Vec<&'a Deployment> = deployments.filter(|d| specs.is_live(d) && valid_id(&d.id)).collect();
    live.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
    let present = live.iter().copied().find(|d| release_present(world, d));
    (live.first().copied(), present)
}

/// True when `d` can be live: its release folder exists, or it has none by its type (an
/// image deployment, served by its container).
pub fn release_present(world: &(impl Paths + ?Sized), d: &Deployment) -> bool {
    !d.kind.has_release_folder() || release_exists(world, &d.project, &d.id)
}

/// True when `ROOT/PROJECT/deployments/ID` is a folder.
pub fn release_exists(world: &(impl Paths + ?Sized), project: &str, deployment: &str) -> bool {
    let path = Layout::new(world.root(), project).release(deployment);
    world.node(&path) == Some(&Node::Dir)
}

/// The resume rules of one stuck deployment's phase, applied to the world.
struct Judge<'s, 'a> {
    specs: &'s Specs,
    spec: &'s Spec,
    world: &'a World,
    paths: &'s Index<'a>,
    view: &'s ProjectView<'a>,
}

impl Judge<'_, '_> {
    /// Rule 1 for a stuck deployment: superseded, out of attempts, no resume rule, a
    /// requirement that does not hold, or its resume rule.
    fn stuck(
        &self,
        d: &Deployment,
        state: StateId,
        last: Option<Timestamp>,
        limit: Duration,
        age: Option<Duration>,
    ) -> Fate {
        let spec = self.spec;
        let s = spec.state(state);
        let stuck = match (last, age) {
            _ if let Some(claim) = d.dead_claim() => {
                let process = claim.process.as_ref().map(|p| format!(" (process {} on {})", p.pid, p.host));
                format!("its worker `{}`{} is gone, in {}", claim.owner, process.unwrap_or_default(), d.phase)
            }
            (Some(last), Some(age)) => {
                format!("stuck in {} since {last} ({age} without progress, limit {limit})", d.phase)
            }
            _ => format!("stuck in {} with no recorded progress", d.phase),
        };
        if let Some(newer) = self.superseded_by(d) {
            let at = newer.created_at.map(|t| format!(" at {t}")).unwrap_or_default();
            let reason = format!(
                "{stuck}, and it is superseded: `{}`, created after it{at}, is already live (finishing this one would roll the site back)",
                newer.id
            );
            return self.fail(d, state, reason);
        }
        if let Some(max) = s.max_attempts.filter(|m| d.attempts >= *m) {
            return self.fail(d, state, format!("{stuck} after {} of {max} attempts", d.attempts));
        }
        let Some(resume) = &s.resume else {
            return self.fail(d, state, format!("{stuck}, and the phase has no resume rule"));
        };
        for predicate in &resume.requires {
            if let Err(why) = self.holds(*predicate, d) {
                return self.fail(d, state, format!("{stuck}, and `{predicate}` does not hold: {why}"));
            }
        }
        let why = resume.description.as_deref().map(|t| format!("; {}", lowercase_first(t))).unwrap_or_default();
        let done = spec.roles.done.as_str();
        let (to, reason) = match &resume.rule {
            ResumeRule::Fail { reason } => return self.fail(d, state, format!("{stuck}: {reason}")),
            ResumeRule::RestartPhase => (state, format!("{stuck}{why}")),
            ResumeRule::VerifyThenContinue { check } => match self.holds(*check, d) {
                Ok(()) => match self.next(d, state, done) {
                    Some(next) => (next, format!("{stuck}; `{check}` holds, so it continues with {}", spec.name(next))),
                    None => {
                        (state, format!("{stuck}; `{check}` holds, but {} has no `{done}`, so it is re-run", d.phase))
                    }
                },
                Err(not) => (state, format!("{stuck}; `{check}` does not hold ({not}), so the phase is re-run")),
            },
        };
        // `attempts` counts resumes in the current phase: a move to the next phase starts
        // that phase's count afresh.
        let attempt = if to == state { d.attempts + 1 } else { 0 };
        Fate::Resume { to, attempt, reason }
    }

    /// The live deployment of the same project and service created after `d`, if any: `d`
    /// finishing would roll the site back to an older release.
    fn superseded_by(&self, d: &Deployment) -> Option<&Deployment> {
        let created = d.created_at?;
        let service = self.service(d);
        self.view.deployments.iter().copied().find(|o| {
            o.id != d.id
                && self.specs.is_live(o)
                && o.created_at.is_some_and(|t| t > created)
                && self.service(o) == service
        })
    }

    /// The service a deployment deploys: its own, else the project's primary one.
    fn service<'d>(&'d self, d: &'d Deployment) -> Option<&'d str> {
        d.service.as_deref().or_else(|| self.view.project.services.iter().find(|s| s.primary).map(|s| s.id.as_str()))
    }

    /// A failure: the target of the spec's fail event from `state`, else its failed role.
    fn fail(&self, d: &Deployment, state: StateId, reason: String) -> Fate {
        let (to, _) = machine::failing(self.spec, state, &|g| self.guard(g, d));
        Fate::Fail { to, reason }
    }

    /// Where `event` leads from `state`, if the machine accepts it there.
    fn next(&self, d: &Deployment, state: StateId, event: &str) -> Option<StateId> {
        let guards = |g: Guard| self.guard(g, d);
        machine::step(self.spec, state, event, &guards).ok().map(|t| t.target)
    }

    fn guard(&self, guard: Guard, d: &Deployment) -> bool {
        match guard {
            Guard::AttemptsRemaining => {
                let max = self.spec.find(&d.phase).and_then(|s| self.spec.state(s).max_attempts);
                max.is_none_or(|m| d.attempts < m)
            }
            Guard::HasPreviousRelease => self
                .view
                .deployments
                .iter()
                .any(|o| o.id != d.id && self.specs.is_live(o) && valid_id(&o.id) && release_present(self.paths, o)),
            Guard::IsImageDeployment => d.kind == DeploymentType::Image,
        }
    }

    /// `Ok` when the predicate holds for `d`, else why not.
    fn holds(&self, predicate: Predicate, d: &Deployment) -> Result<(), String> {
        let project = self.view.project.id.as_str();
        let layout = Layout::new(&self.world.root, project);
        let exists = |path: &Path| self.paths.node(path).is_some();
        match predicate {
            Predicate::SourcePresent => match d.kind {
                DeploymentType::Upload => match &d.source.file_path {
                    None => Err("its upload has no `file_path`".into()),
                    Some(path) if exists(path) => Ok(()),
                    Some(path) => Err(format!("its upload `{}` is gone", path.display())),
                },
                DeploymentType::Git => match d.source.repo.as_deref() {
                    None => Err("it names no repository".into()),
                    Some(repo) if !repo.starts_with('/') || exists(Path::new(repo)) => Ok(()),
                    Some(repo) => Err(format!("its repository `{repo}` is gone")),
                },
                DeploymentType::Image => self.holds(Predicate::ImagePresent, d),
            },
            Predicate::ImagePresent => match (&d.source.image, &self.world.images) {
                (None, _) => Err("it names no image".into()),
                (Some(_), None) => Ok(()),
                (Some(image), Some(images)) if images.contains(image) => Ok(()),
                // A phase pulls it again: a pull cut short (killed, the registry down) is
                // resumed, not failed.
                (Some(image), Some(_)) if crate::world::containers::names_registry(image) => Ok(()),
                (Some(image), Some(_)) => Err(format!("its image `{image}` is not in the container engine")),
            },
            Predicate::ReleaseDirPresent => {
                if release_exists(self.paths, project, &d.id) {
                    Ok(())
                } else {
                    Err(format!("its release folder `{}` is gone", layout.release(&d.id).display()))
                }
            }
            Predicate::CurrentLinksRelease => {
                if health(self.paths, &layout.current(), &layout.release(&d.id)) != LinkHealth::Ok {
                    Err("`current` does not point at its release".into())
                } else if health(self.paths, &layout.webroot(), &layout.webroot_target()) != LinkHealth::Ok {
                    Err("the webroot link does not point at `current/public`".into())
                } else {
                    Ok(())
                }
            }
            Predicate::RouteTargetsDeployment => match self.world.routes.get(project) {
                Some(r) if r.problem.is_none() && r.deployment.as_deref() == Some(d.id.as_str()) => Ok(()),
                Some(_) => Err(format!("the route of `{project}` targets another deployment")),
                None => Err(format!("`{project}` has no route file")),
            },
        }
    }
}

/// What a person is told about a deployment the rules leave to its worker, or cannot
/// judge.
fn progress_notes(spec: &Spec, d: &Deployment, progress: &Progress<'_>) -> Option<(Level, String)> {
    match progress {
        Progress::UnknownPhase => {
            let names = spec.states.iter().map(|s| s.name.as_str());
            let hint = crate::diag::did_you_mean(&d.phase, names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let message = format!(
                "deployment `{}` is in phase `{}`, which the spec does not declare{hint}: it is left alone",
                d.id, d.phase
            );
            Some((Level::Warning, message))
        }
        Progress::Held(claim) => Some((
            Level::Note,
            format!(
                "deployment `{}` in {} is held by `{}` until {}: it and the project's links and routes are left alone",
                d.id, d.phase, claim.owner, claim.until
            ),
        )),
        Progress::Future(last) => Some((
            Level::Warning,
            format!(
                "deployment `{}` last progressed at {last}, which is in the future (clock skew?): it is not treated as stuck",
                d.id
            ),
        )),
        Progress::Running { age, limit, .. } => Some((
            Level::Note,
            format!("deployment `{}` is in {} and progressed {age} ago: not stuck before {limit}", d.id, d.phase),
        )),
        Progress::Finished | Progress::Stuck { .. } => None,
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    fn deployment(id: &str, phase: &str) -> Deployment {
        Deployment {
            id: id.into(),
            project: "p1".into(),
            service: None,
            kind: DeploymentType::Upload,
            phase: phase.into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts: 0,
            finished_at: None,
            source: Source::default(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: None,
        }
    }

    #[test]
    fn an_empty_root_counts_the_live_releases_one_per_project_whatever_was_read_of_the_history() {
        let specs = Specs::builtin();
        let of = |id: &str, project: &str, phase: &str| Deployment { project: project.into(), ..deployment(id, phase) };
        let image = Deployment { kind: DeploymentType::Image, ..of("i1", "p3", "ACTIVE") };
        let mut world = World { root: "/r".into(), ..World::default() };
        world.files.insert("/r".into(), Node::Dir);
        let message =
            |world: &World| configuration_errors(&specs, world).into_iter().map(|f| f.message).collect::<Vec<_>>();
        let live = |n: &str| {
            vec![format!("the managed root `/r` is empty, yet the state database has {n}: check `--root` (and `--db`)")]
        };
        // Nothing live: an empty root is no sign of a wrong one.
        world.deployments = vec![of("f1", "p4", "FAILED")];
        assert!(message(&world).is_empty());
        // `p1` with its history read, `p2` with its newest release only, `p3` served by
        // a container, `p4` with nothing live.
        world.deployments = vec![
            of("a1", "p1", "ACTIVE"),
            of("a2", "p1", "ACTIVE"),
            of("a3", "p1", "ACTIVE"),
            image,
            of("f1", "p4", "FAILED"),
        ];
        assert_eq!(message(&world), live("1 live release"));
        world.deployments.push(of("b1", "p2", "ACTIVE"));
        assert_eq!(message(&world), live("2 live releases"));
        // A root with anything below it is not empty.
        world.files.insert("/r/p1".into(), Node::Dir);
        assert!(message(&world).is_empty());
    }

    #[test]
    fn judgements_are_kept_by_id_one_per_deployment() {
        let ds: Vec<Deployment> = ["d2", "d9", "d1", "d5"].iter().map(|id| deployment(id, "BUILDING")).collect();
        let judged =
            |d, owns_links| Judged { deployment: d, progress: Progress::Finished, fate: Fate::InFlight, owns_links };
        let mut by_id = JudgedById::default();
        for d in &ds {
            by_id.insert(judged(d, false));
        }
        by_id.insert(judged(&ds[3], true));
        let ids: Vec<&str> = by_id.values().map(|j| j.deployment.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d2", "d5", "d9"], "sorted, and d5 once");
        assert!(by_id.get("d5").is_some_and(|j| j.owns_links), "the later judgement replaces the earlier");
        assert!(by_id.get("d2").is_some_and(|j| !j.owns_links));
        assert!(by_id.get("d1").is_some() && by_id.get("d9").is_some());
        assert!(by_id.get("d3").is_none() && by_id.get("d0").is_none() && by_id.get("e").is_none());
    }

    #[test]
    fn judgements_of_a_run_are_taken_whole_when_sorted_and_else_put_in_place() {
        let ds: Vec<Deployment> = ["d1", "d2", "d5", "d9"].iter().map(|id| deployment(id, "BUILDING")).collect();
        let judged =
            |d, owns_links| Judged { deployment: d, progress: Progress::Finished, fate: Fate::InFlight, owns_links };
        let ids = |by_id: &JudgedById<'_>| by_id.values().map(|j| j.deployment.id.clone()).collect::<Vec<_>>();
        // A run by id, as the store gives it.
        let mut by_id = JudgedById::default();
        by_id.extend(ds.iter().map(|d| judged(d, false)).collect());
        assert_eq!(ids(&by_id), ["d1", "d2", "d5", "d9"]);
        // Out of order, backwards, or with an id twice (the later judgement wins, as by
        // `insert`).
        let mut by_id = JudgedById::default();
        by_id.extend(vec![judged(&ds[3], false), judged(&ds[0], false), judged(&ds[2], false)]);
        assert_eq!(ids(&by_id), ["d1", "d5", "d9"]);
        let mut by_id = JudgedById::default();
        by_id.extend(ds.iter().rev().map(|d| judged(d, false)).collect());
        assert_eq!(ids(&by_id), ["d1", "d2", "d5", "d9"]);
        let mut by_id = JudgedById::default();
        by_id.extend(vec![judged(&ds[0], false), judged(&ds[0], true)]);
        assert_eq!(ids(&by_id), ["d1"]);
        assert!(by_id.get("d1").is_some_and(|j| j.owns_links), "the later judgement replaces the earlier");
        // A second run of the same project goes in among the first's, by id.
        let mut by_id = JudgedById::default();
        by_id.extend(vec![judged(&ds[1], false), judged(&ds[3], false)]);
        by_id.extend(vec![judged(&ds[0], false), judged(&ds[2], false), judged(&ds[3], true)]);
        assert_eq!(ids(&by_id), ["d1", "d2", "d5", "d9"]);
        assert!(by_id.get("d9").is_some_and(|j| j.owns_links));
    }

    /// Runs `check` with a judge over a project holding `deployments`, whose release
    /// folders `with_folder` exist.
    fn judged<T>(deployments: Vec<Deployment>, with_folder: &[&str], check: impl Fn(&Judge<'_, '_>) -> T) -> T {
        let specs: Specs = crate::spec::default_spec().into();
        let mut world = World { root: "/r".into(), deployments, ..World::default() };
        world.projects.push(Project { id: "p1".into(), active: true, domain: None, services: Vec::new() });
        for id in with_folder {
            world.files.insert(Layout::new(Path::new("/r"), "p1").release(id), Node::Dir);
        }
        let view = ProjectView {
            project: &world.projects[0],
            deployments: world.deployments.iter().collect(),
            latest: None,
            live: None,
            judged: JudgedById::default(),
        };
        let paths = Index::new(&world);
        let spec = specs.of_type(DeploymentType::Upload);
        check(&Judge { specs: &specs, spec, world: &world, paths: &paths, view: &view })
    }

    #[test]
    fn ids_used_more_than_once_are_found_with_their_projects_in_world_order() {
        let of = |id: &str, project: &str| Deployment { project: project.into(), ..deployment(id, "ACTIVE") };
        let ds = [of("d1", "p2"), of("d2", "p1"), of("d1", "p1"), of("d3", "p3"), of("d1", "p2"), of("d3", "p1")];
        let want = BTreeMap::from([("d1", vec!["p2", "p1", "p2"]), ("d3", vec!["p3", "p1"])]);
        assert_eq!(shared_ids(&ds), want);
        assert_eq!(shared_ids(&ds[..4]), BTreeMap::from([("d1", vec!["p2", "p1"])]));
        assert!(shared_ids(&ds[..2]).is_empty());
        assert!(shared_ids(&[]).is_empty());
    }

    #[test]
    fn guards_read_attempts_and_earlier_releases() {
        let mut d = deployment("d2", "HEALTH_CHECK");
        d.attempts = 2;
        let live = deployment("d1", "ACTIVE");
        let (attempts, previous) = judged(vec![d.clone(), live.clone()], &["d1"], |j| {
            (
                j.guard(Guard::AttemptsRemaining, j.view.deployments[0]),
                j.guard(Guard::HasPreviousRelease, j.view.deployments[0]),
            )
        });
        assert!(attempts, "2 of 3 attempts used: one remains");
        assert!(previous, "`d1` is live and has its folder");
        d.attempts = 3;
        let attempts = judged(vec![d.clone()], &[], |j| j.guard(Guard::AttemptsRemaining, j.view.deployments[0]));
        assert!(!attempts, "3 of 3 attempts used");
        // An earlier release without its folder, or the deployment itself, is no previous release.
        assert!(
            !judged(vec![d.clone(), live.clone()], &[], |j| j.guard(Guard::HasPreviousRelease, j.view.deployments[0]))
        );
        let mut own = d.clone();
        own.phase = "ACTIVE".into();
        assert!(!judged(vec![own], &["d2"], |j| j.guard(Guard::HasPreviousRelease, j.view.deployments[0])));
        assert!(!judged(vec![d.clone(), deployment("d1", "FAILED")], &["d1"], |j| {
            j.guard(Guard::HasPreviousRelease, j.view.deployments[0])
        }));
        let image = Deployment { kind: DeploymentType::Image, ..d.clone() };
        assert!(judged(vec![image], &[], |j| j.guard(Guard::IsImageDeployment, j.view.deployments[0])));
        assert!(!judged(vec![d], &[], |j| j.guard(Guard::IsImageDeployment, j.view.deployments[0])));
    }

    #[test]
    fn only_a_live_deployment_created_strictly_later_supersedes() {
        let at = |t: &str| Some(t.parse::<Timestamp>().unwrap());
        let stuck = Deployment { created_at: at("2025-10-02T09:00:00Z"), ..deployment("d1", "BUILDING") };
        let later = Deployment { created_at: at("2025-10-02T10:00:00Z"), ..deployment("d2", "ACTIVE") };
        let tie = Deployment { created_at: at("2025-10-02T09:00:00Z"), ..deployment("d3", "ACTIVE") };
        let other_service = Deployment { service: Some("worker".into()), ..later.clone() };
        let unknown = Deployment { created_at: None, ..later.clone() };
        let superseded = |others: Vec<Deployment>| {
            let mut all = vec![stuck.clone()];
            all.extend(others);
            judged(all, &[], |j| j.superseded_by(j.view.deployments[0]).map(|d| d.id.clone()))
        };
        assert_eq!(superseded(vec![later.clone()]), Some("d2".into()));
        assert_eq!(superseded(vec![tie]), None, "created at the same instant is not after it");
        assert_eq!(superseded(vec![other_service]), None, "another service");
        assert_eq!(superseded(vec![unknown]), None, "an unknown creation time");
        assert_eq!(superseded(vec![Deployment { phase: "FAILED".into(), ..later }]), None, "not live");
    }

    #[test]
    fn progress_is_running_until_the_deadline_and_future_only_after_now() {
        let spec = crate::spec::default_spec();
        let now: Timestamp = "2025-10-02T12:00:00Z".parse().unwrap();
        let at = |secs_ago: i64| Timestamp::from_unix(now.unix() - secs_ago);
        let building = |last: Timestamp| Deployment { phase_updated_at: Some(last), ..deployment("d1", "BUILDING") };
        let kind = |d: &Deployment| match progress(&spec, d, now) {
            Progress::Running { .. } => "running",
            Progress::Stuck { .. } => "stuck",
            Progress::Future(_) => "future",
            other => panic!("{other:?}"),
        };
        // BUILDING is stuck after 30 minutes: not a second early.
        assert_eq!(kind(&building(now)), "running", "progress right now is not in the future");
        assert_eq!(kind(&building(at(-1))), "future");
        assert_eq!(kind(&building(at(30 * 60 - 30))), "running", "30 s before the deadline");
        assert_eq!(kind(&building(at(30 * 60))), "stuck", "exactly at the deadline");
    }

    #[test]
    fn a_link_is_ok_only_when_it_resolves_to_what_it_must() {
        let mut world = World { root: "/r".into(), ..World::default() };
        world.files.insert("/r/p/deployments/d1".into(), Node::Dir);
        world.files.insert("/r/p/current".into(), Node::Symlink("deployments/d1".into()));
        world.files.insert("/r/p/other".into(), Node::Symlink("/etc".into()));
        world.files.insert("/r/p/dir".into(), Node::Dir);
        let want = Path::new("/r/p/deployments/d1");
        assert_eq!(health(&world, Path::new("/r/p/current"), want), LinkHealth::Ok);
        assert_eq!(health(&world, Path::new("/r/p/other"), want), LinkHealth::Outside("/etc".into()));
        assert_eq!(health(&world, Path::new("/r/p/dir"), want), LinkHealth::NotALink);
        assert_eq!(health(&world, Path::new("/r/p/none"), want), LinkHealth::Missing);
        assert_eq!(
            health(&world, Path::new("/r/p/current"), Path::new("/r/p/deployments/d2")),
            LinkHealth::Wrong(want.into())
        );
        // The index gives the same answers as the world's own map.
        let index = Index::new(&world);
        for (link, want) in [("/r/p/current", want), ("/r/p/other", want), ("/r/p/none", want)] {
            assert_eq!(health(&index, Path::new(link), want), health(&world, Path::new(link), want), "{link}");
        }
    }

    #[test]
    fn the_index_answers_what_the_map_answers_however_a_path_is_spelled() {
        let mut world = World { root: "/r".into(), ..World::default() };
        world.files.insert("/r/p/deployments/d1".into(), Node::Dir);
        world.files.insert("/r/p/current".into(), Node::Symlink("deployments/d1".into()));
        // A fixture may spell a key in a way of its own: the map still finds it.
        world.files.insert("/r/q/current/".into(), Node::File);
        let index = Index::new(&world);
        assert_eq!(index.root(), Path::new("/r"));
        let spellings = [
            ("/r/p/current", Some(Node::Symlink("deployments/d1".into()))),
            ("/r/p//current", Some(Node::Symlink("deployments/d1".into()))),
            ("/r/p/./deployments/d1", Some(Node::Dir)),
            ("/r/p/deployments/d1/", Some(Node::Dir)),
            ("/r/q/current", Some(Node::File)),
            ("/r/p/deployments/d2", None),
            ("/r/p", None),
        ];
        for (path, want) in spellings {
            assert_eq!(index.node(Path::new(path)), want.as_ref(), "{path}");
            assert_eq!(index.node(Path::new(path)), world.node(Path::new(path)), "{path}");
        }
        assert!(format!("{index:?}").contains("paths: 3"), "{index:?}");
    }

    #[test]
    fn an_index_made_in_halves_answers_what_the_map_answers_from_either_half() {
        // Six paths, three a half; a key spelled another way in one half or the other.
        for odd in [0, 5] {
            let mut world = World { root: "/r".into(), ..World::default() };
            for (i, name) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
                let path = if i == odd { format!("/r/{name}/x/") } else { format!("/r/{name}/x") };
                world.files.insert(path.into(), Node::Symlink(format!("/t/{name}").into()));
            }
            for apart in [false, true] {
                let (index, meanwhile) = std::thread::scope(|s| Index::in_halves(s, &world, apart, || "done"));
                assert_eq!(meanwhile, "done");
                assert_eq!(index.halves.each_ref().map(|half| half.by_bytes.len()), [3, 3], "apart: {apart}");
                for name in ["a", "b", "c", "d", "e", "f", "g"] {
                    for path in [format!("/r/{name}/x"), format!("/r/{name}//x"), format!("/r/{name}/x/")] {
                        let path = Path::new(&path);
                        assert_eq!(
                            index.node(path),
                            world.node(path),
                            "{} (apart: {apart}, odd: {odd})",
                            path.display()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_index_of_plain_paths_finds_every_spelling_and_misses_what_is_absent() {
        let mut world = World { root: "/r".into(), ..World::default() };
        world.files.insert("/r/p/deployments/d1".into(), Node::Dir);
        world.files.insert("/r/p/current".into(), Node::Symlink("deployments/d1".into()));
        let index = Index::new(&world);
        let spellings = [
            ("/r/p/current", Some(Node::Symlink("deployments/d1".into()))),
            ("/r/p//current", Some(Node::Symlink("deployments/d1".into()))),
            ("/r/p/./deployments/d1", Some(Node::Dir)),
            ("/r/p/deployments/d1/", Some(Node::Dir)),
            ("/r/p/deployments/d2", None),
            ("/r/p/deployments//d2", None),
            ("r/p/current", None),
        ];
        for (path, want) in spellings {
            assert_eq!(index.node(Path::new(path)), want.as_ref(), "{path}");
            assert_eq!(index.node(Path::new(path)), world.node(Path::new(path)), "{path}");
        }
    }
}
