//! The four reconcile rules, in order: deployments, links, containers, routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Action, Change, Finding, Level, Plan, fingerprint};
use crate::machine;
use crate::model::{
    Claim, Container, ContainerState, Deployment, DeploymentType, Layout, Node, Project, World, inside, labels,
    resolve_link, valid_id,
};
use crate::spec::{Guard, Predicate, ResumeRule, Spec, StateId};
use crate::time::{Duration, Timestamp};
use crate::world::effects::{aside_path, recreated_name};
use crate::world::routes;

/// The phase of a deployment that is live; see [`crate::model::LIVE_PHASE`].
pub const ACTIVE_PHASE: &str = crate::model::LIVE_PHASE;

/// The event that fails a deployment; its target is the phase a failed deployment gets.
pub const FAIL_EVENT: &str = "fail";

/// The event that ends a phase successfully.
const DONE_EVENT: &str = "done";

/// How long a helper container (build, copy) may live before it counts as left over.
pub const HELPER_MAX_AGE: Duration = Duration::from_secs(3600);

/// Computes the plan that makes `world` true at `now` under `spec`.
///
/// The order of the actions is the order of the rules (deployments, links, containers,
/// routes) within each project, projects sorted by id; findings follow the same order.
pub fn plan(spec: &Spec, world: &World, now: Timestamp) -> Plan {
    let skipped = std::collections::BTreeSet::new();
    let mut planner =
        Planner { by_project: by_project(world), skipped, spec, world, now, actions: Vec::new(), findings: Vec::new() };
    planner.run();
    let Planner { mut actions, mut findings, .. } = planner;
    actions.sort_by(|a, b| a.project.cmp(&b.project));
    findings.sort_by(|a, b| a.project.cmp(&b.project));
    Plan { actions, findings, fingerprint: fingerprint(world) }
}

/// The deployments of each project, in world order, so that no rule scans all
/// deployments once per project.
pub(super) fn by_project(world: &World) -> BTreeMap<&str, Vec<&Deployment>> {
    let mut map: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
    for d in &world.deployments {
        map.entry(d.project.as_str()).or_default().push(d);
    }
    map
}

/// Where a deployment stands at an instant, before any resume rule is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// Its phase is not a state of the spec.
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

/// Classifies a deployment at `now`: the first step of rule 1, shared with `status`.
pub fn progress<'a>(spec: &Spec, d: &'a Deployment, now: Timestamp) -> Progress<'a> {
    let Some(state) = spec.find(&d.phase) else { return Progress::UnknownPhase };
    if let Some(claim) = d.owner.as_ref().filter(|_| d.held_at(now)) {
        return Progress::Held(claim);
    }
    if spec.is_final(state) {
        return Progress::Finished;
    }
    let last = d.last_progress();
    if let Some(last) = last.filter(|t| *t > now) {
        return Progress::Future(last);
    }
    let limit = spec.state(state).stuck_after.unwrap_or_default();
    let age = last.and_then(|t| now.since(t));
    match age {
        Some(age) if age < limit => Progress::Running { state, age, limit },
        _ => Progress::Stuck { state, since: last, limit, age },
    }
}

/// The latest ACTIVE deployment of a project, and the live one: the latest whose
/// release folder exists. They differ when the latest lost its folder.
pub fn releases<'a>(
    world: &World,
    project: &str,
    deployments: impl Iterator<Item = &'a Deployment>,
) -> (Option<&'a Deployment>, Option<&'a Deployment>) {
    let mut actives: Vec<&'a Deployment> = deployments.filter(|d| d.phase == ACTIVE_PHASE && valid_id(&d.id)).collect();
    actives.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
    let live = actives.iter().copied().find(|d| release_exists(world, project, &d.id));
    (actives.first().copied(), live)
}

/// True when `ROOT/PROJECT/deployments/ID` is a folder.
pub fn release_exists(world: &World, project: &str, deployment: &str) -> bool {
    let path = Layout::new(&world.root, project).release(deployment);
    world.files.get(&path) == Some(&Node::Dir)
}

/// What the deployment rule decided about one unfinished deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A worker is on it (live claim, or progress within its deadline), or it resumes in
    /// this plan: it owns its project's links and routes.
    InFlight,
    /// It fails in this plan: its project's links go back to the live release.
    Failing,
}

struct Planner<'a> {
    /// Deployments by project, in world order, so no rule scans all deployments per project.
    by_project: BTreeMap<&'a str, Vec<&'a Deployment>>,
    /// Known projects that are left alone as a whole (their folder is a symlink).
    skipped: std::collections::BTreeSet<&'a str>,
    spec: &'a Spec,
    world: &'a World,
    now: Timestamp,
    actions: Vec<Action>,
    findings: Vec<Finding>,
}

/// Per project, what the rules after the first need to know.
struct ProjectView<'a> {
    project: &'a Project,
    /// The release `current` must point at.
    live: Option<&'a Deployment>,
    /// Unfinished deployments and what happens to them.
    fates: BTreeMap<&'a str, Fate>,
    /// The deployments in flight that own the project's links and routes.
    owners: std::collections::BTreeSet<&'a str>,
}

impl ProjectView<'_> {
    /// True when some deployment in flight owns the project's links and routes: one a
    /// worker holds, or one whose release folder exists (the links may point at it).
    fn busy(&self) -> bool {
        !self.owners.is_empty()
    }
}

impl<'a> Planner<'a> {
    fn act(&mut self, project: &str, change: Change, reason: String) {
        self.actions.push(Action { project: project.to_owned(), change, reason });
    }

    fn find(&mut self, project: &str, level: Level, message: String) {
        self.findings.push(Finding { project: project.to_owned(), level, message });
    }

    fn run(&mut self) {
        let world = self.world;
        if world.containers.is_none() {
            self.find(
                "",
                Level::Note,
                "no container engine is configured: containers and images are not checked".into(),
            );
        }
        if !world.projects.is_empty() && world.files.get(&world.root) != Some(&Node::Dir) {
            let message = format!("the managed root `{}` is not a folder (a wrong `--root`?)", world.root.display());
            self.find("", Level::Warning, message);
        }
        let mut views: BTreeMap<&'a str, ProjectView<'a>> = BTreeMap::new();
        for project in &world.projects {
            if !valid_id(&project.id) {
                self.find(
                    &project.id,
                    Level::Warning,
                    format!("project id `{}` is not a plain name: it is left alone", project.id.escape_debug()),
                );
                continue;
            }
            if views.contains_key(project.id.as_str()) {
                self.find(
                    &project.id,
                    Level::Warning,
                    format!("project `{}` is listed twice: the first is used", project.id),
                );
                continue;
            }
            let dir = Layout::new(&world.root, &project.id).project_dir();
            if let Some(Node::Symlink(t)) = world.files.get(&dir) {
                self.find(
                    &project.id,
                    Level::Warning,
                    format!(
                        "`{}` is a symlink to `{}`: it is never followed, and the project is left alone",
                        dir.display(),
                        t.display()
                    ),
                );
                self.skipped.insert(&project.id);
                continue;
            }
            views.insert(
                &project.id,
                ProjectView { project, live: None, fates: BTreeMap::new(), owners: Default::default() },
            );
        }
        let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in &world.deployments {
            seen.entry(&d.id).or_default().push(&d.project);
        }
        for d in &world.deployments {
            if let Some(projects) = seen.get(d.id.as_str()).filter(|p| p.len() > 1) {
                let message = format!(
                    "deployment id `{}` is used by several deployments (projects {}): ids must be unique, so it is left alone",
                    d.id,
                    projects.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                );
                self.find(&d.project, Level::Warning, message);
                continue;
            }
            if !valid_id(&d.id) {
                self.find(
                    &d.project,
                    Level::Warning,
                    format!("deployment id `{}` is not a plain name: it is left alone", d.id.escape_debug()),
                );
                continue;
            }
            let Some(view) = views.get(d.project.as_str()) else {
                if valid_id(&d.project) && !self.skipped.contains(d.project.as_str()) {
                    self.find(
                        &d.project,
                        Level::Warning,
                        format!("deployment `{}` belongs to unknown project `{}`: it is left alone", d.id, d.project),
                    );
                }
                continue;
            };
            let Some(fate) = self.deployment(view, d) else { continue };
            let held = d.held_at(self.now);
            let owns = fate == Fate::InFlight && (held || self.release_exists(&d.project, &d.id));
            if owns && !held {
                let message = format!(
                    "deployment `{}` has a release folder and is still in flight: the project's links and routes are left to it",
                    d.id
                );
                self.find(&d.project, Level::Note, message);
            }
            let view = views.get_mut(d.project.as_str()).expect("the view was found above");
            view.fates.insert(&d.id, fate);
            if owns {
                view.owners.insert(&d.id);
            }
        }
        for view in views.values_mut() {
            view.live = self.live_release(view.project);
        }
        for view in views.values() {
            self.links(view);
        }
        self.containers(&views);
        self.routes(&views);
    }

    // Rule 1: deployments.

    /// Resumes or fails a stuck deployment; `None` for finished ones.
    fn deployment(&mut self, view: &ProjectView<'a>, d: &'a Deployment) -> Option<Fate> {
        let project = view.project.id.as_str();
        let (state, last, limit, age) = match progress(self.spec, d, self.now) {
            Progress::UnknownPhase => {
                let names: Vec<&str> = self.spec.states.iter().map(|s| s.name.as_str()).collect();
                let hint = crate::diag::did_you_mean(&d.phase, names)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                let message = format!(
                    "deployment `{}` is in phase `{}`, which the spec does not declare{hint}: it is left alone",
                    d.id, d.phase
                );
                self.find(project, Level::Warning, message);
                return Some(Fate::InFlight);
            }
            Progress::Held(claim) => {
                let message = format!(
                    "deployment `{}` in {} is held by `{}` until {}: it and the project's links and routes are left alone",
                    d.id, d.phase, claim.owner, claim.until
                );
                self.find(project, Level::Note, message);
                return Some(Fate::InFlight);
            }
            Progress::Finished => return None,
            Progress::Future(last) => {
                let message = format!(
                    "deployment `{}` last progressed at {last}, which is in the future (clock skew?): it is not treated as stuck",
                    d.id
                );
                self.find(project, Level::Warning, message);
                return Some(Fate::InFlight);
            }
            Progress::Running { age, limit, .. } => {
                let message = format!(
                    "deployment `{}` is in {} and progressed {age} ago: not stuck before {limit}",
                    d.id, d.phase
                );
                self.find(project, Level::Note, message);
                return Some(Fate::InFlight);
            }
            Progress::Stuck { state, since, limit, age } => (state, since, limit, age),
        };
        let s = self.spec.state(state);
        let stuck = match (last, age) {
            (Some(last), Some(age)) => {
                format!("stuck in {} since {last} ({age} without progress, limit {limit})", d.phase)
            }
            _ => format!("stuck in {} with no recorded progress", d.phase),
        };
        let max = s.max_attempts;
        if let Some(max) = max.filter(|m| d.attempts >= *m) {
            let reason = format!("{stuck} after {} of {max} attempts", d.attempts);
            self.fail(project, d, state, reason);
            return Some(Fate::Failing);
        }
        let Some(resume) = &s.resume else {
            self.fail(project, d, state, format!("{stuck}, and the phase has no resume rule"));
            return Some(Fate::Failing);
        };
        for predicate in &resume.requires {
            if let Err(why) = self.holds(*predicate, view, d) {
                self.fail(project, d, state, format!("{stuck}, and `{predicate}` does not hold: {why}"));
                return Some(Fate::Failing);
            }
        }
        let why = resume.description.as_deref().map(|t| format!("; {}", lowercase_first(t))).unwrap_or_default();
        let (to, reason) = match &resume.rule {
            ResumeRule::Fail { reason } => {
                self.fail(project, d, state, format!("{stuck}: {reason}"));
                return Some(Fate::Failing);
            }
            ResumeRule::RestartPhase => (state, format!("{stuck}{why}")),
            ResumeRule::VerifyThenContinue { check } => match self.holds(*check, view, d) {
                Ok(()) => match self.next(d, state, DONE_EVENT) {
                    Some(next) => {
                        (next, format!("{stuck}; `{check}` holds, so it continues with {}", self.spec.state(next).name))
                    }
                    None => (
                        state,
                        format!("{stuck}; `{check}` holds, but {} has no `{DONE_EVENT}`, so it is re-run", d.phase),
                    ),
                },
                Err(not) => (state, format!("{stuck}; `{check}` does not hold ({not}), so the phase is re-run")),
            },
        };
        // `attempts` counts resumes in the current phase: a move to the next phase starts
        // that phase's count afresh.
        let attempt = if to == state { d.attempts + 1 } else { 0 };
        let change = Change::Resume {
            deployment: d.id.clone(),
            from_phase: d.phase.clone(),
            to_phase: self.spec.state(to).name.clone(),
            attempt,
            stuck_since: last,
        };
        self.act(project, change, reason);
        Some(Fate::InFlight)
    }

    fn fail(&mut self, project: &str, d: &Deployment, state: StateId, reason: String) {
        let failed = self.failed_state(d, state);
        let change = Change::Fail {
            deployment: d.id.clone(),
            from_phase: d.phase.clone(),
            to_phase: failed,
            stuck_since: d.last_progress(),
        };
        self.act(project, change, reason);
    }

    /// The phase the spec's `fail` event leads to from `state`.
    fn failed_state(&self, d: &Deployment, state: StateId) -> String {
        let guards = |g: Guard| self.guard(g, d);
        match machine::step(self.spec, state, FAIL_EVENT, &guards) {
            Ok(t) => self.spec.state(t.target).name.clone(),
            Err(_) => "FAILED".to_owned(),
        }
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
            Guard::HasPreviousRelease => self.project_deployments(&d.project).any(|o| {
                o.id != d.id && o.phase == ACTIVE_PHASE && valid_id(&o.id) && self.release_exists(&o.project, &o.id)
            }),
            Guard::IsImageDeployment => d.kind == DeploymentType::Image,
        }
    }

    /// `Ok` when the predicate holds for `d`, else why not.
    fn holds(&self, predicate: Predicate, view: &ProjectView<'_>, d: &Deployment) -> Result<(), String> {
        let layout = Layout::new(&self.world.root, &view.project.id);
        match predicate {
            Predicate::SourcePresent => match d.kind {
                DeploymentType::Upload => match &d.source.file_path {
                    None => Err("its upload has no `file_path`".into()),
                    Some(path) if self.exists(path) => Ok(()),
                    Some(path) => Err(format!("its upload `{}` is gone", path.display())),
                },
                DeploymentType::Git => match d.source.repo.as_deref() {
                    None => Err("it names no repository".into()),
                    Some(repo) if !repo.starts_with('/') || self.exists(Path::new(repo)) => Ok(()),
                    Some(repo) => Err(format!("its repository `{repo}` is gone")),
                },
                DeploymentType::Image => self.holds(Predicate::ImagePresent, view, d),
            },
            Predicate::ImagePresent => match (&d.source.image, &self.world.images) {
                (None, _) => Err("it names no image".into()),
                (Some(_), None) => Ok(()),
                (Some(image), Some(images)) if images.contains(image) => Ok(()),
                (Some(image), Some(_)) => Err(format!("its image `{image}` is not in the container engine")),
            },
            Predicate::ReleaseDirPresent => {
                let release = layout.release(&d.id);
                if self.release_exists(&view.project.id, &d.id) {
                    Ok(())
                } else {
                    Err(format!("its release folder `{}` is gone", release.display()))
                }
            }
            Predicate::CurrentLinksRelease => {
                if self.link_target(&layout.current()).as_deref() != Some(layout.release(&d.id).as_path()) {
                    Err("`current` does not point at its release".into())
                } else if self.link_target(&layout.webroot()).as_deref() != Some(layout.webroot_target().as_path()) {
                    Err("the webroot link does not point at `current/public`".into())
                } else {
                    Ok(())
                }
            }
            Predicate::RouteTargetsDeployment => match self.world.routes.get(&view.project.id) {
                Some(r) if r.problem.is_none() && r.deployment.as_deref() == Some(d.id.as_str()) => Ok(()),
                Some(_) => Err(format!("the route of `{}` targets another deployment", view.project.id)),
                None => Err(format!("`{}` has no route file", view.project.id)),
            },
        }
    }

    /// The deployments of one project.
    fn project_deployments(&self, project: &str) -> impl Iterator<Item = &'a Deployment> + '_ {
        self.by_project.get(project).into_iter().flatten().copied()
    }

    fn exists(&self, path: &Path) -> bool {
        self.world.files.contains_key(path)
    }

    fn release_exists(&self, project: &str, deployment: &str) -> bool {
        release_exists(self.world, project, deployment)
    }

    /// Where the link at `path` resolves to, or `None` when it is not a link.
    fn link_target(&self, path: &Path) -> Option<PathBuf> {
        match self.world.files.get(path)? {
            Node::Symlink(target) => Some(resolve_link(path, target)),
            _ => None,
        }
    }

    // Rule 2: links.

    /// The latest ACTIVE deployment whose release folder exists, warning on fallback.
    fn live_release(&mut self, project: &'a Project) -> Option<&'a Deployment> {
        if !project.active {
            return None;
        }
        let (latest, live) = releases(self.world, &project.id, self.project_deployments(&project.id));
        match (latest, live) {
            (Some(latest), Some(live)) if latest.id != live.id => {
                let missing = Layout::new(&self.world.root, &project.id).release(&latest.id);
                self.find(
                    &project.id,
                    Level::Warning,
                    format!(
                        "the latest release `{}` has no folder `{}`: falling back to `{}`",
                        latest.id,
                        missing.display(),
                        live.id
                    ),
                );
            }
            (Some(_), None) => {
                self.find(
                    &project.id,
                    Level::Warning,
                    "no ACTIVE deployment has a release folder: `current` is left as it is".into(),
                );
            }
            _ => {}
        }
        live
    }

    fn links(&mut self, view: &ProjectView<'a>) {
        let project = view.project;
        if !project.active {
            return;
        }
        let Some(live) = view.live else { return };
        let layout = Layout::new(&self.world.root, &project.id);
        if let Some(Node::Symlink(t)) = self.world.files.get(&layout.project_dir()) {
            self.find(
                &project.id,
                Level::Warning,
                format!(
                    "`{}` is a symlink to `{}`: the project is left alone",
                    layout.project_dir().display(),
                    t.display()
                ),
            );
            return;
        }
        if view.busy() {
            return;
        }
        let release = layout.release(&live.id);
        let why = format!("the live release is `{}`", live.id);
        self.link(&project.id, "`current`", &layout.current(), &release, &why);
        let webroot_dir = self.world.root.join("webroot");
        if let Some(Node::Symlink(_) | Node::File) = self.world.files.get(&webroot_dir) {
            self.find(
                &project.id,
                Level::Warning,
                format!("`{}` is not a folder: the webroot link is left alone", webroot_dir.display()),
            );
            return;
        }
        if self.world.files.get(&release.join("public")) != Some(&Node::Dir) {
            self.find(
                &project.id,
                Level::Note,
                format!("release `{}` has no `public` folder: the webroot link resolves to nothing", live.id),
            );
        }
        self.link(
            &project.id,
            "the webroot link",
            &layout.webroot(),
            &layout.webroot_target(),
            "the webroot follows `current/public`",
        );
    }

    /// Plans the link at `path` to point at `target`, moving a real file aside.
    fn link(&mut self, project: &str, name: &str, path: &Path, target: &Path, why: &str) {
        let before = match self.world.files.get(path) {
            Some(Node::Symlink(old)) => {
                let resolved = resolve_link(path, old);
                if resolved == target {
                    return;
                }
                let state = if !inside(&self.world.root, &resolved) {
                    format!("points outside the root at `{}`", resolved.display())
                } else if self.exists(&resolved) {
                    format!("points at `{}`", resolved.display())
                } else {
                    format!("dangles: `{}` does not exist", resolved.display())
                };
                self.act(
                    project,
                    Change::Link { path: path.to_owned(), before: Some(old.clone()), target: target.to_owned() },
                    format!("{name} {state}; {why}"),
                );
                return;
            }
            None => None,
            Some(node) => Some(node),
        };
        if let Some(node) = before {
            let what = if *node == Node::Dir { "a real folder" } else { "a real file" };
            let to = self.aside_name(path);
            self.act(
                project,
                Change::MoveAside { path: path.to_owned(), to },
                format!("{name} is {what}, not a link: it is moved aside, never deleted"),
            );
            self.act(
                project,
                Change::Link { path: path.to_owned(), before: None, target: target.to_owned() },
                format!("{name} must be a link; {why}"),
            );
        } else {
            self.act(
                project,
                Change::Link { path: path.to_owned(), before: None, target: target.to_owned() },
                format!("{name} is missing; {why}"),
            );
        }
    }

    /// `PATH.trueup-aside-STAMP` ([`aside_path`]), with a counter when that name is taken.
    fn aside_name(&self, path: &Path) -> PathBuf {
        let base = aside_path(path, self.now);
        (1..)
            .map(|n| if n == 1 { base.clone() } else { PathBuf::from(format!("{}.{n}", base.display())) })
            .find(|p| !self.exists(p))
            .expect("an unbounded counter always finds a free name")
    }

    // Rule 3: containers.

    fn containers(&mut self, views: &BTreeMap<&str, ProjectView<'a>>) {
        let Some(containers) = &self.world.containers else { return };
        // As for route files: no projects at all is far more likely the wrong `--db`.
        let managed = containers.iter().filter(|c| c.managed()).count();
        if self.world.projects.is_empty() && managed > 0 {
            let message = format!(
                "the state database lists no projects, yet {managed} containers labelled by trueup exist: \
                 is `--db` right? They are left alone"
            );
            self.find("", Level::Warning, message);
            return;
        }
        for c in containers {
            if !c.managed() {
                continue;
            }
            let project_id = c.label(labels::PROJECT).unwrap_or_default();
            if !valid_id(project_id) {
                self.find(
                    project_id,
                    Level::Warning,
                    format!(
                        "container `{}` has project label `{}`, not a plain name: it is left alone",
                        c.name,
                        project_id.escape_debug()
                    ),
                );
                continue;
            }
            let Some(view) = views.get(project_id) else {
                if self.skipped.contains(project_id) {
                    continue;
                }
                self.remove(project_id, c, format!("its project `{project_id}` no longer exists"));
                continue;
            };
            if !view.project.active {
                continue;
            }
            self.container(view, c);
        }
    }

    fn container(&mut self, view: &ProjectView<'a>, c: &Container) {
        let project = view.project.id.as_str();
        let Some(dep_id) = c.label(labels::DEPLOYMENT) else {
            self.remove(project, c, format!("it has no `{}` label, so no deployment owns it", labels::DEPLOYMENT));
            return;
        };
        let fate = view.fates.get(dep_id).copied();
        let role = c.label(labels::ROLE).unwrap_or("app");
        if role == "helper" {
            let age = c.created_at.and_then(|t| self.now.since(t));
            match (fate, age) {
                (Some(Fate::InFlight), Some(age)) if age >= HELPER_MAX_AGE && !self.held(dep_id, project) => {
                    self.remove(project, c, format!("helper container created {age} ago, older than {HELPER_MAX_AGE}"));
                }
                (Some(Fate::InFlight), _) => {}
                _ => self.remove(project, c, format!("helper container of `{dep_id}`, which is no longer running")),
            }
            return;
        }
        let Some(live) = view.live.filter(|l| l.id == dep_id) else {
            if fate == Some(Fate::InFlight) {
                return;
            }
            // Worded without the history, which a real observation does not read.
            let live = view.live.map(|l| format!(" (live is `{}`)", l.id)).unwrap_or_default();
            self.remove(project, c, format!("zombie: its deployment `{dep_id}` is neither live nor in flight{live}"));
            return;
        };
        let expected = expected_labels(view.project, live);
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(k, v)| c.label(k).filter(|actual| actual != v).map(|actual| (k, v, actual)))
            .map(|(k, v, actual)| format!("`{k}` is `{actual}`, expected `{v}`"))
            .collect();
        // A `NAME.trueup-old` is the old container of a recreate that a crash cut short:
        // the recreate of `NAME` is planned again, whatever its state and labels.
        let name = recreated_name(&c.name);
        if !wrong.is_empty() || c.state == ContainerState::Dead || name != c.name {
            let mut labels = c.labels.clone();
            labels.extend(expected);
            let why = if name != c.name {
                format!("an interrupted recreate of `{name}` left it behind")
            } else if wrong.is_empty() {
                "the live app container is dead".to_owned()
            } else {
                format!("labels do not match its deployment: {}", wrong.join(", "))
            };
            let change = Change::RecreateContainer {
                id: c.id.clone(),
                name: name.to_owned(),
                image: c.image.clone(),
                deployment: live.id.clone(),
                labels,
            };
            self.act(project, change, why);
            return;
        }
        match c.state {
            ContainerState::Exited | ContainerState::Created => {
                let state = if c.state == ContainerState::Exited { "exited" } else { "was never started" };
                self.act(
                    project,
                    Change::StartContainer { id: c.id.clone(), name: c.name.clone() },
                    format!("the live app container {state}"),
                );
            }
            ContainerState::Paused => {
                self.find(
                    project,
                    Level::Note,
                    format!("the live app container `{}` is paused: left as it is", c.name),
                );
            }
            ContainerState::Running | ContainerState::Restarting | ContainerState::Dead => {}
        }
    }

    fn held(&self, deployment: &str, project: &str) -> bool {
        self.project_deployments(project).any(|d| d.id == deployment && d.held_at(self.now))
    }

    fn remove(&mut self, project: &str, c: &Container, reason: String) {
        self.act(project, Change::RemoveContainer { id: c.id.clone(), name: c.name.clone() }, reason);
    }

    // Rule 4: routes.

    fn routes(&mut self, views: &BTreeMap<&str, ProjectView<'a>>) {
        for view in views.values() {
            let project = view.project;
            if !project.active || view.busy() {
                continue;
            }
            let Some(live) = view.live else { continue };
            let existing = self.world.routes.get(&project.id);
            if let Some(foreign) = existing.filter(|r| !r.managed()) {
                let why = foreign.problem.as_deref().unwrap_or("it has no trueup header");
                let message = format!(
                    "route file `{}.yaml` is not trueup's ({why}): it is left alone; \
                     move it away to let trueup manage this project's route",
                    project.id
                );
                self.find(&project.id, Level::Warning, message);
                continue;
            }
            let readable = existing.filter(|r| r.problem.is_none());
            let upstream = live.metadata.get("upstream").or(readable.map(|r| &r.upstream)).filter(|u| !u.is_empty());
            let Some(upstream) = upstream else {
                if let Some(problem) = existing.and_then(|r| r.problem.as_ref()) {
                    self.find(
                        &project.id,
                        Level::Warning,
                        format!("the route file cannot be read ({problem}) and no upstream is known to rewrite it"),
                    );
                }
                continue;
            };
            let domain = project.domain.clone().unwrap_or_else(|| format!("{}.localhost", project.id));
            // A value that cannot be written safely into the route file is reported, not
            // turned into an action that would fail at every apply.
            let bad = if !routes::valid_upstream(upstream) {
                Some(format!("records upstream `{}`, which is not a plain http(s) URL", upstream.escape_debug()))
            } else if !routes::valid_domain(&domain) {
                Some(format!("has domain `{}`, which is not a plain host name", domain.escape_debug()))
            } else {
                None
            };
            if let Some(bad) = bad {
                let message = format!("the live deployment `{}` {bad}: its route file is left as it is", live.id);
                self.find(&project.id, Level::Warning, message);
                continue;
            }
            let reason = match existing {
                None => "no route file".to_owned(),
                Some(r) => match &r.problem {
                    Some(problem) => format!("the route file cannot be read: {problem}"),
                    None if r.deployment.as_deref() != Some(live.id.as_str()) => {
                        let old = r.deployment.as_deref().unwrap_or("nothing");
                        format!("the route targets `{old}`")
                    }
                    None if &r.upstream != upstream => format!("the route sends traffic to `{}`", r.upstream),
                    None if r.domain.as_ref().is_some_and(|d| *d != domain) => {
                        format!("the route answers on `{}`", r.domain.as_deref().unwrap_or_default())
                    }
                    None => continue,
                },
            };
            let change = Change::WriteRoute { deployment: live.id.clone(), upstream: upstream.clone(), domain };
            self.act(&project.id, change, format!("{reason}; the live deployment is `{}` at `{upstream}`", live.id));
        }
        // A state database with no projects at all next to route files trueup wrote is far
        // more likely the wrong `--db` than every project gone: removing them all would
        // take every site down.
        let managed = self.world.routes.values().filter(|r| r.managed()).count();
        if self.world.projects.is_empty() && managed > 0 {
            let message = format!(
                "the state database lists no projects, yet {managed} route files written by trueup exist: \
                 is `--db` right? They are left alone"
            );
            self.find("", Level::Warning, message);
            return;
        }
        // Stale routes: only files trueup wrote; any other file in the folder is not ours.
        for (id, route) in self.world.routes.iter().filter(|(_, r)| r.managed()) {
            if !valid_id(id) {
                self.find(
                    id,
                    Level::Warning,
                    format!(
                        "route file for `{}` is not named after a plain project id: it is left alone",
                        id.escape_debug()
                    ),
                );
                continue;
            }
            let why = match views.get(id.as_str()) {
                None if self.skipped.contains(id.as_str()) => continue,
                None => format!("project `{id}` no longer exists"),
                Some(v) if !v.project.active && !v.busy() => format!("project `{id}` is inactive"),
                Some(_) => continue,
            };
            self.act(id, Change::RemoveRoute { deployment: route.deployment.clone() }, format!("stale route: {why}"));
        }
    }
}

/// The labels the live app container of a project must carry. The project and
/// deployment labels match by construction; a service or role label that is present
/// must match too (an absent one is filled in only when the container is recreated).
fn expected_labels(project: &Project, live: &Deployment) -> BTreeMap<String, String> {
    let service = live
        .service
        .clone()
        .or_else(|| project.services.iter().find(|s| s.primary).map(|s| s.id.clone()))
        .unwrap_or_else(|| "web".to_owned());
    BTreeMap::from([
        (labels::PROJECT.to_owned(), project.id.clone()),
        (labels::DEPLOYMENT.to_owned(), live.id.clone()),
        (labels::SERVICE.to_owned(), service),
        (labels::ROLE.to_owned(), "app".to_owned()),
    ])
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
