//! `trueup status`: where each project and each unfinished deployment stands.
//!
//! A pure reading of a [`World`], with the same notions the planner uses (live release,
//! link health, stuck or not), so that status and plan never disagree.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::Verbosity;
use super::view::{Fate, Index, LinkHealth, Progress, ProjectView, health, progress, view};
use crate::model::{Layout, World};
use crate::spec::Specs;
use crate::time::{Duration, Timestamp};

/// The state of every project and unfinished deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// When it was read.
    pub now: Timestamp,
    /// Projects, sorted by id.
    pub projects: Vec<ProjectStatus>,
    /// Deployments not in a final phase, in world order (by project, then id).
    pub unfinished: Vec<DeploymentStatus>,
}

/// One project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectStatus {
    /// Its id.
    pub id: String,
    /// False for a disabled project.
    pub active: bool,
    /// The live deployment: the latest one in its live phase whose release folder exists.
    pub live: Option<String>,
    /// Its release folder.
    pub release: Option<PathBuf>,
    /// The health of `current`.
    pub current: LinkHealth,
    /// The health of the webroot link.
    pub webroot: LinkHealth,
    /// The deployment its route file targets.
    pub route: Option<String>,
    /// The deployment in flight that owns the project's links and routes: the plan
    /// leaves them to it.
    pub deploying: Option<String>,
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
    /// `in_flight` (within its deadline), `stuck` (the plan resumes or fails it), `held`,
    /// `future`, `unknown_phase` or `left_alone` (an id or project the engine does not act on).
    pub state: &'static str,
    /// For a stuck deployment, what the plan does: `resume` or `fail`.
    pub verdict: Option<&'static str>,
    /// Attempts so far.
    pub attempts: u32,
    /// The worker holding it and until when.
    pub owner: Option<String>,
}

impl Status {
    /// True when something needs repair: a deployment is stuck (the plan has a verdict for
    /// it), or a link of a live project is broken and not left to a deployment in flight.
    pub fn needs_repair(&self) -> bool {
        let broken = |h: &LinkHealth| !matches!(h, LinkHealth::Ok | LinkHealth::Deploying(_) | LinkHealth::Unknown);
        self.unfinished.iter().any(|d| d.verdict.is_some())
            || self.projects.iter().any(|p| p.active && (broken(&p.current) || broken(&p.webroot)))
    }
}

/// Reads the status of a world at `now`: the same [`view`] the planner acts on.
pub fn status(specs: &Specs, world: &World, now: Timestamp) -> Status {
    let view = view(specs, world, now);
    let projects = view.projects.values().map(|v| project(world, &view.paths, v)).collect();
    let mut unfinished = Vec::new();
    for d in &world.deployments {
        let judged = view.projects.get(d.project.as_str()).and_then(|v| v.judged.get(d.id.as_str()));
        let progress = match judged {
            Some(j) => j.progress.clone(),
            None => progress(specs.of(d), d, now),
        };
        let (state, age, limit) = match progress {
            Progress::Finished => continue,
            _ if judged.is_none() => ("left_alone", d.last_progress().and_then(|t| now.since(t)), None),
            Progress::UnknownPhase => ("unknown_phase", None, None),
            Progress::Held(_) => ("held", d.last_progress().and_then(|t| now.since(t)), None),
            Progress::Future(_) => ("future", None, None),
            Progress::Running { age, limit, .. } => ("in_flight", Some(age), Some(limit)),
            Progress::Stuck { age, limit, .. } => ("stuck", age, Some(limit)),
        };
        let verdict = judged.and_then(|j| match j.fate {
            Fate::InFlight => None,
            Fate::Resume { .. } => Some("resume"),
            Fate::Fail { .. } => Some("fail"),
        });
        unfinished.push(DeploymentStatus {
            id: d.id.clone(),
            project: d.project.clone(),
            phase: d.phase.clone(),
            last_progress: d.last_progress(),
            age,
            stuck_after: limit,
            state,
            verdict,
            attempts: d.attempts,
            owner: d.owner.as_ref().map(|c| format!("{} until {}", c.owner, c.until)),
        });
    }
    Status { now, projects, unfinished }
}

/// One project's line of the status.
fn project(world: &World, paths: &Index<'_>, view: &ProjectView<'_>) -> ProjectStatus {
    let p = view.project;
    let layout = Layout::new(&world.root, &p.id);
    let release = view.live.filter(|d| d.kind.has_release_folder()).map(|d| layout.release(&d.id));
    let deploying = view.owner().map(|d| d.id.clone());
    // A link the plan leaves to a deployment in flight is that deployment's work; one that
    // is missing or dangles is never left, so it shows as it is.
    let judge = |link: PathBuf, want: &std::path::Path| match (health(paths, &link, want), &deploying) {
        (h @ (LinkHealth::Ok | LinkHealth::Missing | LinkHealth::Dangling(_)), _) | (h, None) => h,
        (_, Some(d)) => LinkHealth::Deploying(d.clone()),
    };
    let (current, webroot) = match &release {
        Some(release) => {
            let current = judge(layout.current(), release);
            // The webroot link leads through `current`: right as a link, it still serves
            // nothing while `current` is missing or dangles.
            let webroot = match judge(layout.webroot(), &layout.webroot_target()) {
                LinkHealth::Ok if matches!(current, LinkHealth::Missing | LinkHealth::Dangling(_)) => {
                    LinkHealth::Dangling(layout.webroot_target())
                }
                h => h,
            };
            (current, webroot)
        }
        None => (LinkHealth::Unknown, LinkHealth::Unknown),
    };
    ProjectStatus {
        id: p.id.clone(),
        active: p.active,
        live: view.live.map(|d| d.id.clone()),
        release,
        current,
        webroot,
        route: world.routes.get(&p.id).and_then(|r| r.deployment.clone()),
        deploying,
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

/// The status as a person reads it. Healthy deployments in flight are summed up in one
/// line unless `verbosity` asks for each.
pub fn render_status(status: &Status, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Projects at {}:", status.now);
    if status.projects.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for p in &status.projects {
        let live = p.live.as_deref().unwrap_or("-").escape_debug();
        let inactive = if p.active { "" } else { " (inactive)" };
        let route = p.route.as_deref().unwrap_or("-").escape_debug();
        // Said once: a link shown as `-> ID (deploying)` says it already.
        let shown = [&p.current, &p.webroot].iter().any(|h| matches!(h, LinkHealth::Deploying(_)));
        let deploying = match p.deploying.as_deref() {
            Some(d) if !shown => format!(" (links left to {d}, in flight)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {}{inactive}: live {live}, current {}, webroot {}, route -> {route}{deploying}",
            // Ids come from the database: control characters are shown escaped.
            p.id.escape_debug(),
            p.current.text(),
            p.webroot.text()
        );
    }
    let _ = writeln!(out, "\nUnfinished deployments:");
    if status.unfinished.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let healthy = |d: &&DeploymentStatus| matches!(d.state, "in_flight" | "held");
    let flying = status.unfinished.iter().filter(healthy).count();
    let quiet = verbosity != Verbosity::Verbose && flying > 0;
    if quiet {
        let others = status.unfinished.len() - flying;
        let rest = if others == 0 { "nothing else".to_owned() } else { format!("{others} more below") };
        let _ = writeln!(out, "  {}, {rest} (`--verbose` lists each)", deployments_in_flight(flying));
    }
    for d in status.unfinished.iter().filter(|d| !quiet || !healthy(d)) {
        let age = match (d.age, d.last_progress) {
            (Some(a), _) => format!("{a} ago"),
            (None, Some(t)) if t > status.now => format!("at {t}, in the future (clock skew?)"),
            (None, Some(t)) => format!("at {t}"),
            (None, None) => "never".into(),
        };
        let limit = d.stuck_after.map(|l| format!(", stuck after {l}")).unwrap_or_default();
        let owner = d.owner.as_deref().map(|o| format!(", held by {}", o.escape_debug())).unwrap_or_default();
        let verdict = d.verdict.map(|v| format!(": the plan will {v} it")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}/{}: {} {}, last progress {age}{limit}, attempts {}{owner}{verdict}",
            d.project.escape_debug(),
            d.id.escape_debug(),
            d.phase.escape_debug(),
            d.state.to_uppercase(),
            d.attempts
        );
    }
    out
}

/// `12 deployments in flight`: how the text plan and status sum up healthy deployments
/// in flight.
pub(super) fn deployments_in_flight(n: usize) -> String {
    format!("{n} deployment{} in flight", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str, current: LinkHealth, deploying: Option<&str>) -> ProjectStatus {
        ProjectStatus {
            id: id.into(),
            active: true,
            live: Some("d0".into()),
            release: None,
            current,
            webroot: LinkHealth::Ok,
            route: Some("d0".into()),
            deploying: deploying.map(Into::into),
        }
    }

    fn unfinished(id: &str, state: &'static str, verdict: Option<&'static str>) -> DeploymentStatus {
        DeploymentStatus {
            id: id.into(),
            project: "p1".into(),
            phase: "BUILDING".into(),
            last_progress: None,
            age: None,
            stuck_after: None,
            state,
            verdict,
            attempts: 0,
            owner: None,
        }
    }

    #[test]
    fn healthy_deployments_in_flight_are_one_line_unless_verbose() {
        let status = Status {
            now: "2025-10-02T12:00:00Z".parse().unwrap(),
            projects: vec![
                project("p1", LinkHealth::Ok, Some("d1")),
                project("p2", LinkHealth::Deploying("d2".into()), Some("d2")),
            ],
            unfinished: vec![unfinished("d1", "in_flight", None), unfinished("d3", "stuck", Some("resume"))],
        };
        let brief = render_status(&status, Verbosity::Brief);
        assert_eq!(
            brief,
            "Projects at 2025-10-02T12:00:00Z:\n  \
             p1: live d0, current ok, webroot ok, route -> d0 (links left to d1, in flight)\n  \
             p2: live d0, current -> d2 (deploying), webroot ok, route -> d0\n\n\
             Unfinished deployments:\n  \
             1 deployment in flight, 1 more below (`--verbose` lists each)\n  \
             p1/d3: BUILDING STUCK, last progress never, attempts 0: the plan will resume it\n"
        );
        let verbose = render_status(&status, Verbosity::Verbose);
        assert!(verbose.contains("  p1/d1: BUILDING IN_FLIGHT"), "{verbose}");
        assert!(verbose.contains("  p1/d3: BUILDING STUCK"), "{verbose}");
        assert!(!verbose.contains("--verbose"), "{verbose}");
    }
}
