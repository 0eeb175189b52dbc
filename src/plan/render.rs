//! Showing a plan: text in the style of `terraform plan`, and versioned JSON.
//!
//! Text groups actions by project, one symbol per kind of change, the reason under each
//! line, findings after, and a closing summary line:
//!
//! ```text
//!   ~  change in place (resume, relink, start)   +  create (new link, new route file)
//!   x  fail a deployment                          >  move aside (never delete)
//!  -/+ recreate a container                       -  remove (zombie container, stale route)
//! ```
//!
//! The JSON format is documented on [`render_json`]; its `format_version` changes only
//! when a field changes meaning or goes away.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{Action, Change, Level, Plan, Verbosity};
use crate::time::Timestamp;

/// The counts of a plan, by kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Deployments resumed (restarted or continued).
    pub resume: usize,
    /// Deployments failed.
    pub fail: usize,
    /// Links switched or created.
    pub symlink_repairs: usize,
    /// Files or folders moved out of a link's way.
    pub moves_aside: usize,
    /// Containers started.
    pub container_starts: usize,
    /// Containers recreated.
    pub recreates: usize,
    /// Containers and route files removed.
    pub removals: usize,
    /// Route files written.
    pub route_writes: usize,
}

impl Summary {
    /// Counts the actions of a plan.
    pub fn of(actions: &[Action]) -> Self {
        let mut s = Summary::default();
        for a in actions {
            match a.change {
                Change::Resume { .. } => s.resume += 1,
                Change::Fail { .. } => s.fail += 1,
                Change::Link { .. } => s.symlink_repairs += 1,
                Change::MoveAside { .. } => s.moves_aside += 1,
                Change::StartContainer { .. } => s.container_starts += 1,
                Change::RecreateContainer { .. } => s.recreates += 1,
                Change::RemoveContainer { .. } | Change::RemoveRoute { .. } => s.removals += 1,
                Change::WriteRoute { .. } => s.route_writes += 1,
            }
        }
        s
    }

    /// `2 resume, 1 fail, 3 symlink repairs`: the non-zero counts, in a fixed order.
    pub fn line(&self) -> String {
        let parts = [
            (self.resume, "resume", "resume"),
            (self.fail, "fail", "fail"),
            (self.symlink_repairs, "symlink repair", "symlink repairs"),
            (self.moves_aside, "move aside", "moves aside"),
            (self.container_starts, "container start", "container starts"),
            (self.recreates, "recreate", "recreates"),
            (self.removals, "removal", "removals"),
            (self.route_writes, "route write", "route writes"),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        shown.join(", ")
    }
}

/// The symbol, the verb and the target of one action, as shown in the text plan.
pub fn describe(change: &Change, project: &str) -> (&'static str, &'static str, String) {
    match change {
        Change::Resume { deployment, from_phase, to_phase, attempt, .. } if from_phase == to_phase => {
            ("~", "resume", format!("deployment {deployment}: restart {from_phase} (attempt {attempt})"))
        }
        Change::Resume { deployment, from_phase, to_phase, .. } => {
            ("~", "resume", format!("deployment {deployment}: {from_phase} -> {to_phase}"))
        }
        Change::Fail { deployment, from_phase, to_phase, .. } => {
            ("x", "fail", format!("deployment {deployment}: {from_phase} -> {to_phase}"))
        }
        Change::Link { path, before: Some(old), target } => {
            ("~", "link", format!("{} -> {} (was {})", path.display(), target.display(), old.display()))
        }
        Change::Link { path, before: None, target } => {
            ("+", "link", format!("{} -> {}", path.display(), target.display()))
        }
        Change::MoveAside { path, to } => (">", "move aside", format!("{} => {}", path.display(), short(path, to))),
        Change::StartContainer { id, name } => ("~", "start", format!("container {name} ({id})")),
        Change::RecreateContainer { id, name, .. } => ("-/+", "recreate", format!("container {name} ({id})")),
        Change::RemoveContainer { id, name } => ("-", "remove", format!("container {name} ({id})")),
        Change::WriteRoute { deployment, upstream, domain } => {
            ("+", "route", format!("{project} -> {deployment} at {upstream} (Host {domain})"))
        }
        Change::RemoveRoute { deployment } => {
            let was = deployment.as_deref().map(|d| format!(" (targeted {d})")).unwrap_or_default();
            ("-", "route", format!("{project}{was}"))
        }
    }
}

/// `to` relative to `from`'s folder when it is a sibling, else in full.
fn short(from: &Path, to: &Path) -> String {
    match (from.parent(), to.parent(), to.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => name.to_string_lossy().into_owned(),
        _ => to.display().to_string(),
    }
}

/// The plan as a person reads it.
///
/// Notes about healthy deployments in flight are summed up in one line unless
/// `verbosity` asks for each: a world of thousands of projects deploying prints a plan
/// that fits on a screen when nothing is wrong.
pub fn render_text(plan: &Plan, now: Timestamp, verbosity: Verbosity) -> String {
    let mut out = String::new();
    let warnings = plan.findings.iter().filter(|f| f.level == Level::Warning).count();
    if plan.actions.is_empty() && warnings > 0 {
        let (s, verb) = if warnings == 1 { ("", "needs") } else { ("s", "need") };
        let _ = writeln!(out, "No changes to make at {now}, but {warnings} warning{s} below {verb} a person.");
    } else if plan.actions.is_empty() {
        let _ = writeln!(out, "No changes. The world matches its deployments at {now}.");
    } else {
        let _ = writeln!(out, "trueup will make these changes at {now}:");
        let mut last: Option<&str> = None;
        for a in &plan.actions {
            if last != Some(a.project.as_str()) {
                let _ = writeln!(out, "\n  # project {}", a.project);
                last = Some(a.project.as_str());
            }
            let (symbol, verb, target) = describe(&a.change, &a.project);
            let _ = writeln!(out, "  {symbol:>3} {verb:<10} {target}");
            let _ = writeln!(out, "      {:<10} because {}", "", a.reason);
        }
    }
    let brief = verbosity == Verbosity::Brief;
    let flying: BTreeSet<&str> = plan.findings.iter().filter_map(|f| f.in_flight.as_deref()).collect();
    if !plan.findings.is_empty() {
        let _ = writeln!(out, "\nFindings (not changed):");
        if brief && !flying.is_empty() {
            let stuck = plan.actions.iter().filter(|a| a.change.is_verdict()).count();
            let stuck = if stuck == 0 { "none stuck".to_owned() } else { format!("{stuck} stuck") };
            let line = super::status::deployments_in_flight(flying.len());
            let _ = writeln!(out, "  note: {line}, {stuck} (`--verbose` lists each)");
        }
        for f in plan.findings.iter().filter(|f| !brief || f.in_flight.is_none()) {
            let mark = match f.level {
                Level::Warning => "warning",
                Level::Note => "note",
            };
            let scope = if f.project.is_empty() { String::new() } else { format!("{}: ", f.project) };
            let _ = writeln!(out, "  {mark}: {scope}{}", f.message);
        }
    }
    if !plan.actions.is_empty() {
        let _ = writeln!(out, "\nPlan: {}.", Summary::of(&plan.actions).line());
    }
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    now: Timestamp,
    fingerprint: &'a str,
    summary: Summary,
    actions: &'a [Action],
    findings: &'a [super::Finding],
}

/// The plan as JSON, format version 1.
///
/// ```json
/// {
///   "format_version": 1,
///   "now": "2025-10-02T12:00:00Z",
///   "fingerprint": "9f3c0d1e2a4b5c6d",
///   "summary": { "resume": 1, "fail": 0, "symlink_repairs": 1, "moves_aside": 0,
///                "container_starts": 0, "recreates": 0, "removals": 0, "route_writes": 0 },
///   "actions": [
///     { "project": "p1", "kind": "resume", "deployment": "d1", "from_phase": "BUILDING",
///       "to_phase": "BUILDING", "attempt": 2, "stuck_since": "2025-10-02T11:20:00Z",
///       "reason": "stuck in BUILDING since ..." },
///     { "project": "p1", "kind": "link", "path": "/var/www/p1/current",
///       "before": null, "target": "/var/www/p1/deployments/d0", "reason": "..." }
///   ],
///   "findings": [ { "project": "p1", "level": "warning", "message": "..." } ]
/// }
/// ```
///
/// `kind` is one of `resume`, `fail`, `link`, `move_aside`, `start_container`,
/// `recreate_container`, `remove_container`, `write_route`, `remove_route`; the other
/// fields of an action are those of the matching [`Change`] variant. `fingerprint`
/// identifies the observed world the plan was computed from.
pub fn render_json(plan: &Plan, now: Timestamp) -> String {
    let doc = JsonPlan {
        format_version: 1,
        now,
        fingerprint: &plan.fingerprint,
        summary: Summary::of(&plan.actions),
        actions: &plan.actions,
        findings: &plan.findings,
    };
    serde_json::to_string_pretty(&doc).expect("a plan is plain data and always serializes")
}
