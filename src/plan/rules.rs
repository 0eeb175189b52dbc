//! The four reconcile rules, in order: deployments, links, containers, routes.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use super::view::{Fate, Index, Judged, LinkHealth, Paths as _, ProjectView, View, health, view};
use super::{Action, Change, Finding, Level, Plan};
use crate::model::{Container, ContainerState, Deployment, Layout, Node, Project, World, join_all, labels, valid_id};
use crate::spec::{Specs, StateId};
use crate::time::{Duration, Timestamp};
use crate::world::effects::{aside_path, recreated_name};
use crate::world::routes;

/// How long a helper container (build, copy) may live before it counts as left over.
pub const HELPER_MAX_AGE: Duration = Duration::from_secs(3600);

/// The limits the rules apply beyond the specs' own: what an operator configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How old a helper container of a running deployment may grow before it counts as
    /// left over and is removed.
    pub helper_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { helper_max_age: HELPER_MAX_AGE }
    }
}

/// Computes the plan that makes `world` true at `now` under `specs`, with the default
/// [`Limits`].
pub fn plan(specs: &Specs, world: &World, now: Timestamp) -> Plan {
    plan_with(specs, world, now, &Limits::default())
}

/// Computes the plan that makes `world` true at `now` under `specs` and `limits`.
///
/// The order of the actions is the order of the rules (deployments, links, containers,
/// routes) within each project, but for container removals, which come last, once the
/// route no longer leads to them; projects sorted by id; findings follow the same order.
/// A project with a row the store could not read ([`World::unreadable`]), or whose name
/// the layout reserves ([`crate::model::RESERVED_PROJECT_IDS`]), is left alone as a whole
/// with one warning (see [`super::view`]).
pub fn plan_with(specs: &Specs, world: &World, now: Timestamp, limits: &Limits) -> Plan {
    let mut plan = plan_unsealed(specs, world, now, limits);
    plan.seal(world);
    plan
}

/// [`plan_with`] without the fingerprint of the world ([`Plan::fingerprint`] is empty):
/// for a plan that is only shown, never saved or compared, since the fingerprint
/// serializes the whole world. [`Plan::seal`] adds it.
pub fn plan_unsealed(specs: &Specs, world: &World, now: Timestamp, limits: &Limits) -> Plan {
    plan_of_view(specs, world, view(specs, world, now), now, limits)
}

/// [`plan_unsealed`] from the [`view`] of `world` at `now`, made by the caller (who had a
/// use for it first).
///
/// On a world of 2,000 projects or more, on more than one core, the links are planned on
/// two threads; the plan is the same.
pub fn plan_of_view(specs: &Specs, world: &World, view: View<'_>, now: Timestamp, limits: &Limits) -> Plan {
    let View { projects, skipped, findings, paths } = view;
    // A configuration that looks wrong makes the whole view untrustworthy: no change at
    // all, and only the errors are shown (the rest would be read off the wrong folders).
    if findings.iter().any(|f| f.level == Level::Error) {
        let findings = findings.into_iter().filter(|f| f.level == Level::Error).collect();
        return Plan { actions: Vec::new(), findings, fingerprint: String::new() };
    }
    let mut planner = Planner {
        specs,
        views: &projects,
        skipped: &skipped,
        world,
        paths: &paths,
        now,
        limits: *limits,
        actions: Vec::new(),
        removals: Vec::new(),
        findings,
    };
    planner.run();
    let Planner { mut actions, mut findings, .. } = planner;
    actions.sort_by(|a, b| a.project.cmp(&b.project));
    findings.sort_by(|a, b| a.project.cmp(&b.project));
    Plan { actions, findings, fingerprint: String::new() }
}

/// How many projects' links a thread plans at a time, on a large world.
const LINKS_CHUNK: usize = 256;

struct Planner<'v, 'a> {
    specs: &'v Specs,
    /// Every project the rules may act on.
    views: &'v BTreeMap<&'a str, ProjectView<'a>>,
    /// Known projects that are left alone as a whole (their folder is a symlink).
    skipped: &'v BTreeSet<&'a str>,
    world: &'a World,
    /// The world's paths, indexed.
    paths: &'v Index<'a>,
    now: Timestamp,
    limits: Limits,
    actions: Vec<Action>,
    /// Containers to remove: planned after every other action of their project, so a
    /// zombie that still serves the route goes only once the route leads elsewhere.
    removals: Vec<Action>,
    findings: Vec<Finding>,
}

impl<'a> Planner<'_, 'a> {
    fn act(&mut self, project: &str, change: Change, reason: String) {
        self.actions.push(Action { project: project.to_owned(), change, reason });
    }

    fn note(&mut self, project: &str, level: Level, message: String) {
        self.findings.push(Finding::new(project, level, message));
    }

    fn run(&mut self) {
        let views = self.views;
        // The links of a large world are planned on two threads, in chunks of projects
        // each takes in turn, this one once it has planned the verdicts, containers and
        // routes: the links read only the view and the paths, and no other rule reads what
        // they plan. What they plan is put where it would have been in turn: after the
        // verdicts, before the containers and the routes.
        let linker = self.apart();
        let webroot_dir = self.world.root.join("webroot");
        let webroot_dir_ok = !matches!(self.paths.node(&webroot_dir), Some(Node::Symlink(_) | Node::File));
        let list: Vec<&ProjectView<'a>> = views.values().collect();
        let helpers = crate::threads::count(list.len(), 2) - 1;
        let ((actions_at, findings_at), linked) = crate::threads::share(
            &list,
            LINKS_CHUNK,
            helpers,
            || {
                // Project by project, each one's deployments in world order: the order the
                // actions are sorted into at the end, with no lookup of a project per
                // deployment.
                for view in views.values() {
                    for judged in view.deployments.iter().filter_map(|d| view.judged.get(d.id.as_str())) {
                        self.verdict(judged);
                    }
                }
                let at = (self.actions.len(), self.findings.len());
                self.containers();
                self.routes();
                at
            },
            |chunk| {
                let mut planner = linker.apart();
                for view in chunk {
                    planner.links(view, &webroot_dir, webroot_dir_ok);
                }
                (planner.actions, planner.findings)
            },
        );
        let (actions, findings): (Vec<_>, Vec<_>) = linked.into_iter().unzip();
        self.actions.splice(actions_at..actions_at, actions.into_iter().flatten());
        self.findings.splice(findings_at..findings_at, findings.into_iter().flatten());
        self.actions.append(&mut self.removals);
    }

    /// A planner of the same world with nothing planned yet.
    fn apart(&self) -> Self {
        Planner { actions: Vec::new(), removals: Vec::new(), findings: Vec::new(), ..*self }
    }

    // Rule 1: deployments.

    /// The action for a stuck deployment's verdict, if it has one.
    fn verdict(&mut self, judged: &Judged<'_>) {
        let d = judged.deployment;
        let stuck_since = d.last_progress();
        let dead_claim = d.dead_claim().map(|c| c.owner.clone());
        let (change, reason) = match &judged.fate {
            Fate::InFlight => return,
            Fate::Resume { to, attempt, reason } => {
                let to_phase = self.spec_name(d, *to);
                let change = Change::Resume {
                    deployment: d.id.clone(),
                    from_phase: d.phase.clone(),
                    to_phase,
                    attempt: *attempt,
                    stuck_since,
                    dead_claim,
                };
                (change, reason.clone())
            }
            Fate::Fail { to, reason } => {
                let to_phase = self.spec_name(d, *to);
                (
                    Change::Fail {
                        deployment: d.id.clone(),
                        from_phase: d.phase.clone(),
                        to_phase,
                        stuck_since,
                        dead_claim,
                    },
                    reason.clone(),
                )
            }
        };
        self.act(&d.project, change, reason);
    }

    /// The name of a state of `d`'s spec.
    fn spec_name(&self, d: &Deployment, state: StateId) -> String {
        self.specs.of(d).name(state).to_owned()
    }

    fn exists(&self, path: &Path) -> bool {
        self.paths.node(path).is_some()
    }

    // Rule 2: links.

    /// The links of one project; `webroot_dir` is `ROOT/webroot`, `webroot_dir_ok` false
    /// when a link or a file stands there.
    fn links(&mut self, view: &ProjectView<'a>, webroot_dir: &Path, webroot_dir_ok: bool) {
        let project = view.project;
        // An inactive project has no live release.
        let Some(live) = view.live else { return };
        // A deployment without a release folder (an image's container) is never given
        // links: whatever `current` holds is left as it is.
        if !live.kind.has_release_folder() {
            return;
        }
        let layout = Layout::new(&self.world.root, &project.id);
        let release = layout.release(&live.id);
        // A deployment in flight owns the links it may have switched. A link that is
        // missing or dangles serves nothing, though: it is pointed at the live release
        // whatever is in flight (the deployment's own phase switches it again when it gets
        // there), so the site is never left down.
        let owner = view.owner();
        let down = |path: &Path, target: &Path| {
            matches!(health(self.paths, path, target), LinkHealth::Missing | LinkHealth::Dangling(_))
        };
        let while_in_flight = || owner.map(|d| format!(", even while `{}` is in flight", d.id)).unwrap_or_default();
        if owner.is_none() || down(&layout.current(), &release) {
            let why = || format!("the live release is `{}`{}", live.id, while_in_flight());
            self.link(&project.id, "`current`", &layout.current(), &release, why);
        }
        if owner.is_some() {
            if webroot_dir_ok && down(&layout.webroot(), &layout.webroot_target()) {
                let why = || format!("the webroot follows `current/public`{}", while_in_flight());
                self.link(&project.id, "the webroot link", &layout.webroot(), &layout.webroot_target(), why);
            }
            return;
        }
        if !webroot_dir_ok {
            let message = format!("`{}` is not a folder: the webroot link is left alone", webroot_dir.display());
            self.note(&project.id, Level::Warning, message);
            return;
        }
        // Joined by its bytes, as `Path::join` would (4 million instructions fewer at
        // 10,000 projects than its parse of the path).
        if self.paths.node(&join_all(&release, &["public"])) != Some(&Node::Dir) {
            let message = format!("release `{}` has no `public` folder: the webroot link resolves to nothing", live.id);
            self.note(&project.id, Level::Note, message);
        }
        let why = || "the webroot follows `current/public`".to_owned();
        self.link(&project.id, "the webroot link", &layout.webroot(), &layout.webroot_target(), why);
    }

    /// Plans the link at `path` to point at `target`, moving a real file aside; `why`
    /// says why it must point there, asked only when it does not already.
    fn link(&mut self, project: &str, name: &str, path: &Path, target: &Path, why: impl FnOnce() -> String) {
        let link = |before: Option<PathBuf>| Change::Link { path: path.to_owned(), before, target: target.to_owned() };
        let state = match health(self.paths, path, target) {
            LinkHealth::Ok => return,
            LinkHealth::Missing => {
                self.act(project, link(None), format!("{name} is missing; {}", why()));
                return;
            }
            LinkHealth::NotALink => {
                let what = if self.paths.node(path) == Some(&Node::Dir) { "a real folder" } else { "a real file" };
                let to = self.aside_name(path);
                let reason = format!("{name} is {what}, not a link: it is moved aside, never deleted");
                self.act(project, Change::MoveAside { path: path.to_owned(), to }, reason);
                self.act(project, link(None), format!("{name} must be a link; {}", why()));
                return;
            }
            LinkHealth::Outside(at) => format!("points outside the root at `{}`", at.display()),
            LinkHealth::Wrong(at) => format!("points at `{}`", at.display()),
            LinkHealth::Dangling(at) => format!("dangles: `{}` does not exist", at.display()),
            LinkHealth::Deploying(_) | LinkHealth::Unknown => unreachable!("`health` never judges ownership"),
        };
        let before = match self.paths.node(path) {
            Some(Node::Symlink(old)) => Some(old.clone()),
            _ => None,
        };
        self.act(project, link(before), format!("{name} {state}; {}", why()));
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

    fn containers(&mut self) {
        let views = self.views;
        let Some(containers) = &self.world.containers else { return };
        let labelled = containers.iter().filter(|c| c.managed()).map(|c| c.label(labels::PROJECT).unwrap_or_default());
        if self.wrong_database(labelled, "containers labelled by trueup") {
            return;
        }
        for c in containers {
            if !c.managed() {
                continue;
            }
            let project_id = c.label(labels::PROJECT).unwrap_or_default();
            if !valid_id(project_id) {
                self.note(
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
        let in_flight = view.fate(dep_id).is_some_and(|f| !matches!(f, Fate::Fail { .. }));
        let role = c.label(labels::ROLE).unwrap_or("app");
        if role == "helper" {
            let age = c.created_at.and_then(|t| self.now.since(t));
            match (in_flight, age) {
                (true, Some(age)) if age >= self.limits.helper_max_age && !self.held(view, dep_id) => {
                    let max = self.limits.helper_max_age;
                    self.remove(project, c, format!("helper container created {age} ago, older than {max}"));
                }
                (true, _) => {}
                _ => self.remove(project, c, format!("helper container of `{dep_id}`, which is no longer running")),
            }
            return;
        }
        let Some(live) = view.live.filter(|l| l.id == dep_id) else {
            if in_flight {
                return;
            }
            // Worded without the history, which a real observation does not read.
            let live = view.live.map(|l| format!(" (live is `{}`)", l.id)).unwrap_or_default();
            self.remove(project, c, format!("zombie: its deployment `{dep_id}` is neither live nor in flight{live}"));
            return;
        };
        let expected = app_labels(view.project, live);
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
                self.note(
                    project,
                    Level::Note,
                    format!("the live app container `{}` is paused: left as it is", c.name),
                );
            }
            ContainerState::Running | ContainerState::Restarting | ContainerState::Dead => {}
        }
    }

    /// True, with a warning, when the state database knows none of the projects that
    /// trueup's `things` (its route files or containers) belong to: no projects at all, or
    /// only others. That is far more likely the wrong `--db` than every one of those
    /// projects gone, and removing them all would take every site down, so none is removed.
    fn wrong_database<'i>(&mut self, projects: impl Iterator<Item = &'i str>, things: &str) -> bool {
        let all: Vec<&str> = projects.collect();
        let projects: BTreeSet<&str> = all.iter().copied().collect();
        let known = |id: &&str| self.world.projects.iter().any(|p| p.id == *id);
        if projects.is_empty() || projects.iter().any(known) {
            return false;
        }
        let message = if self.world.projects.is_empty() {
            format!(
                "the state database lists no projects, yet {} {things} exist: is `--db` right? They are left alone",
                all.len()
            )
        } else {
            format!(
                "the state database knows none of the projects of the {} {things} ({}): is `--db` right? \
                 They are left alone",
                all.len(),
                projects.iter().map(|p| format!("`{}`", p.escape_debug())).collect::<Vec<_>>().join(", ")
            )
        };
        self.note("", Level::Warning, message);
        true
    }

    fn held(&self, view: &ProjectView<'_>, deployment: &str) -> bool {
        view.judged.get(deployment).is_some_and(|j| j.deployment.held_at(self.now))
    }

    fn remove(&mut self, project: &str, c: &Container, reason: String) {
        let change = Change::RemoveContainer { id: c.id.clone(), name: c.name.clone() };
        self.removals.push(Action { project: project.to_owned(), change, reason });
    }

    // Rule 4: routes.

    fn routes(&mut self) {
        let views = self.views;
        // The route files by project id, walked beside the views, which are in the same
        // order: no lookup per project.
        let mut files = self.world.routes.iter().peekable();
        for view in views.values() {
            let project = view.project;
            let existing = seek(&mut files, &project.id);
            if !project.active || view.busy() {
                continue;
            }
            let Some(live) = view.live else { continue };
            if let Some(foreign) = existing.filter(|r| !r.managed()) {
                let why = foreign.problem.as_deref().unwrap_or("it has no trueup header");
                let message = format!(
                    "route file `{}.yaml` is not trueup's ({why}): it is left alone; \
                     move it away to let trueup manage this project's route",
                    project.id
                );
                self.note(&project.id, Level::Warning, message);
                continue;
            }
            let readable = existing.filter(|r| r.problem.is_none());
            let upstream = live.metadata.get("upstream").or(readable.map(|r| &r.upstream)).filter(|u| !u.is_empty());
            let Some(upstream) = upstream else {
                if let Some(problem) = existing.and_then(|r| r.problem.as_ref()) {
                    self.note(
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
                self.note(&project.id, Level::Warning, message);
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
        // The route files this plan writes count as trueup's too: after the apply they are,
        // and the next plan must not find a different answer (apply then plan is empty).
        let writes: Vec<String> = self
            .actions
            .iter()
            .filter(|a| matches!(a.change, Change::WriteRoute { .. }))
            .map(|a| a.project.clone())
            .collect();
        let written = self.world.routes.iter().filter(|(_, r)| r.managed()).map(|(id, _)| id.as_str());
        if self.wrong_database(written.chain(writes.iter().map(String::as_str)), "route files written by trueup") {
            return;
        }
        // Stale routes: only files trueup wrote; any other file in the folder is not ours.
        // The views are walked beside them, in the same order.
        let mut by_id = views.iter().peekable();
        for (id, route) in self.world.routes.iter().filter(|(_, r)| r.managed()) {
            if !valid_id(id) {
                self.note(
                    id,
                    Level::Warning,
                    format!(
                        "route file for `{}` is not named after a plain project id: it is left alone",
                        id.escape_debug()
                    ),
                );
                continue;
            }
            let why = match seek(&mut by_id, id) {
                None if self.skipped.contains(id.as_str()) => continue,
                None => format!("project `{id}` no longer exists"),
                Some(v) if !v.project.active && !v.busy() => format!("project `{id}` is inactive"),
                Some(_) => continue,
            };
            self.act(id, Change::RemoveRoute { deployment: route.deployment.clone() }, format!("stale route: {why}"));
        }
    }
}

/// The value at `key` in `entries`, a map's entries in key order, walked forward to it:
/// the keys asked for must come in that order too. A lookup in a second map while
/// walking the first, without a descent of the map each time.
fn seek<K: AsRef<str>, V: Copy>(entries: &mut Peekable<impl Iterator<Item = (K, V)>>, key: &str) -> Option<V> {
    while entries.next_if(|(k, _)| k.as_ref() < key).is_some() {}
    entries.peek().filter(|(k, _)| k.as_ref() == key).map(|(_, v)| *v)
}

/// The labels the live app container of a project must carry. The project and
/// deployment labels match by construction; a service or role label that is present
/// must match too (an absent one is filled in only when the container is recreated).
/// An image deployment's container is created with them ([`crate::engine`]).
pub fn app_labels(project: &Project, live: &Deployment) -> BTreeMap<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_in_order_finds_what_the_map_holds_and_nothing_else() {
        let map: BTreeMap<String, u32> = [("b", 1), ("d", 2), ("e", 3)].map(|(k, v)| (k.to_owned(), v)).into();
        let mut entries = map.iter().peekable();
        let found: Vec<Option<u32>> =
            ["a", "b", "b", "c", "e", "f"].iter().map(|k| seek(&mut entries, k).copied()).collect();
        assert_eq!(found, [None, Some(1), Some(1), None, Some(3), None]);
    }
}
