//! `trueup status`: where each project and each unfinished deployment stands.
//!
//! A pure reading of a [`World`], with the same notions the planner uses (live release,
//! link health, stuck or not), so that status and plan never disagree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::rules::{Progress, by_project, progress, releases};
use crate::model::{Layout, Node, World, inside, resolve_link, valid_id};
use crate::spec::Spec;
use crate::time::{Duration, Timestamp};

/// The state of every project and unfinished deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// When it was read.
    pub now: Timestamp,
    /// Projects, sorted by id.
    pub projects: Vec<ProjectStatus>,
    /// Deployments not in a final phase, sorted by project then id.
    pub unfinished: Vec<DeploymentStatus>,
}

/// One project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectStatus {
    /// Its id.
    pub id: String,
    /// False for a disabled project.
    pub active: bool,
    /// The live deployment: the latest ACTIVE one whose release folder exists.
    pub live: Option<String>,
    /// Its release folder.
    pub release: Option<PathBuf>,
    /// The health of `current`.
    pub current: LinkHealth,
    /// The health of the webroot link.
    pub webroot: LinkHealth,
    /// The deployment its route file targets.
    pub route: Option<String>,
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

/// One unfinished deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStatus {
    /// Its id.
    pub id: String,
    /// Its project.
    pub project: String,
    /// Its phase.
    pub phase: String,
    /// Its last progress.
    pub last_progress: Option<Timestamp>,
    /// How long ago that was.
    pub age: Option<Duration>,
    /// Its phase's `stuck_after`.
    pub stuck_after: Option<Duration>,
    /// `in_flight` (within its deadline), `stuck`, `held`, `future` or `unknown_phase`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// The worker holding it and until when.
    pub owner: Option<String>,
}

/// Reads the status of a world at `now`.
pub fn status(spec: &Spec, world: &World, now: Timestamp) -> Status {
    let by_project = by_project(world);
    let mut projects = Vec::new();
    for p in world.projects.iter().filter(|p| valid_id(&p.id)) {
        let deployments = by_project.get(p.id.as_str()).into_iter().flatten().copied();
        let (_, live) = releases(world, &p.id, deployments);
        let layout = Layout::new(&world.root, &p.id);
        let release = live.map(|d| layout.release(&d.id));
        let (current, webroot) = match &release {
            Some(release) => {
                (health(world, &layout.current(), release), health(world, &layout.webroot(), &layout.webroot_target()))
            }
            None => (LinkHealth::Unknown, LinkHealth::Unknown),
        };
        // A link to the release of a deployment still in flight is that deployment's work.
        let deploying = |h: LinkHealth| match &h {
            LinkHealth::Wrong(target) => by_project
                .get(p.id.as_str())
                .into_iter()
                .flatten()
                .find(|d| {
                    layout.release(&d.id) == *target
                        && matches!(progress(spec, d, now), Progress::Running { .. } | Progress::Held(_))
                })
                .map_or(h.clone(), |d| LinkHealth::Deploying(d.id.clone())),
            _ => h,
        };
        let current = deploying(current);
        projects.push(ProjectStatus {
            id: p.id.clone(),
            active: p.active,
            live: live.map(|d| d.id.clone()),
            release,
            current,
            webroot,
            route: world.routes.get(&p.id).and_then(|r| r.deployment.clone()),
        });
    }
    let mut unfinished = Vec::new();
    for d in &world.deployments {
        let (state, age, limit) = match progress(spec, d, now) {
            Progress::Finished => continue,
            Progress::UnknownPhase => ("unknown_phase", None, None),
            Progress::Held(_) => ("held", d.last_progress().and_then(|t| now.since(t)), None),
            Progress::Future(_) => ("future", None, None),
            Progress::Running { age, limit, .. } => ("in_flight", Some(age), Some(limit)),
            Progress::Stuck { age, limit, .. } => ("stuck", age, Some(limit)),
        };
        unfinished.push(DeploymentStatus {
            id: d.id.clone(),
            project: d.project.clone(),
            phase: d.phase.clone(),
            last_progress: d.last_progress(),
            age,
            stuck_after: limit,
            state,
            attempts: d.attempts,
            owner: d.owner.as_ref().map(|c| format!("{} until {}", c.owner, c.until)),
        });
    }
    Status { now, projects, unfinished }
}

fn health(world: &World, link: &Path, want: &Path) -> LinkHealth {
    match world.files.get(link) {
        None => LinkHealth::Missing,
        Some(Node::Symlink(target)) => {
            let resolved = resolve_link(link, target);
            if resolved == want {
                LinkHealth::Ok
            } else if !inside(&world.root, &resolved) {
                LinkHealth::Outside(resolved)
            } else if world.files.contains_key(&resolved) {
                LinkHealth::Wrong(resolved)
            } else {
                LinkHealth::Dangling(resolved)
            }
        }
        Some(_) => LinkHealth::NotALink,
    }
}

impl LinkHealth {
    fn text(&self) -> String {
        match self {
            LinkHealth::Ok => "ok".into(),
            LinkHealth::Missing => "MISSING".into(),
            LinkHealth::Wrong(t) => format!("WRONG (-> {})", t.display()),
            LinkHealth::Dangling(t) => format!("DANGLING (-> {})", t.display()),
            LinkHealth::Outside(t) => format!("OUTSIDE THE ROOT (-> {})", t.display()),
            LinkHealth::NotALink => "NOT A LINK".into(),
            LinkHealth::Deploying(d) => format!("-> {d} (deploying)"),
            LinkHealth::Unknown => "-".into(),
        }
    }
}

/// The status as a person reads it.
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Projects at {}:", status.now);
    if status.projects.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for p in &status.projects {
        let live = p.live.as_deref().unwrap_or("-");
        let inactive = if p.active { "" } else { " (inactive)" };
        let route = p.route.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {}{inactive}: live {live}, current {}, webroot {}, route -> {route}",
            p.id,
            p.current.text(),
            p.webroot.text()
        );
    }
    let _ = writeln!(out, "\nUnfinished deployments:");
    if status.unfinished.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for d in &status.unfinished {
        let age = match (d.age, d.last_progress) {
            (Some(a), _) => format!("{a} ago"),
            (None, Some(t)) if t > status.now => format!("at {t}, in the future (clock skew?)"),
            (None, Some(t)) => format!("at {t}"),
            (None, None) => "never".into(),
        };
        let limit = d.stuck_after.map(|l| format!(", stuck after {l}")).unwrap_or_default();
        let owner = d.owner.as_deref().map(|o| format!(", held by {o}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}/{}: {} {}, last progress {age}{limit}, attempts {}{owner}",
            d.project,
            d.id,
            d.phase,
            d.state.to_uppercase(),
            d.attempts
        );
    }
    out
}
