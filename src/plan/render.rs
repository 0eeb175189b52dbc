//! Showing a plan: text in the style of `terraform plan`, and versioned JSON.
//!
//! Text groups actions by project, one symbol per [`Kind`] of change (the table of
//! symbols is in its module), the reason under each line, findings after, and a closing
//! summary line. The symbols, verbs and summary counts all come from the kind's row.
//!
//! The JSON format is documented on [`render_json`]; its `format_version` changes only
//! when a field changes meaning or goes away.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{Action, Change, Kind, Level, Plan, Planned, Verbosity};
use crate::time::Timestamp;

/// The counts of a plan by kind of change, in the order of [`Kind::ALL`], under the keys
/// of [`Planned`]: `resume`, `fail`, `symlink_repairs`, `moves_aside`, `container_starts`,
/// `recreates`, `removals` (containers and route files), `route_writes`. It serializes as
/// a map in that order, zeros included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    counts: Vec<(Planned, usize)>,
}

impl Summary {
    /// Counts the actions of a plan.
    pub fn of(actions: &[Action]) -> Self {
        let mut counts: Vec<(Planned, usize)> = Vec::new();
        for kind in Kind::ALL {
            if !counts.iter().any(|(p, _)| p.key == kind.planned().key) {
                counts.push((kind.planned(), 0));
            }
        }
        for a in actions {
            let key = a.change.kind().planned().key;
            let (_, n) = counts.iter_mut().find(|(p, _)| p.key == key).expect("every kind's count is listed above");
            *n += 1;
        }
        Summary { counts }
    }

    /// The counts by key (`symlink_repairs`), in order, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.counts.iter().map(|(p, n)| (p.key, *n))
    }

    /// `2 resume, 1 fail, 3 symlink repairs`: the non-zero counts, in a fixed order.
    pub fn line(&self) -> String {
        let shown: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| format!("{n} {}", if *n == 1 { p.one } else { p.many }))
            .collect();
        shown.join(", ")
    }
}

impl Serialize for Summary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// How many names [`first_named`] shows before it only counts the rest.
const NAMED: usize = 5;

/// `a, b, c`, or, for more than five names, the first four and a count of the rest
/// (`a, b, c, d, and 9996 more`): a server back from a reboot may resume ten thousand
/// deployments, and a wrong `--root` changes every project, yet the sentence that says
/// so must stay one line.
pub fn first_named(names: &[String]) -> String {
    if names.len() <= NAMED {
        return names.join(", ");
    }
    format!("{}, and {} more", names[..NAMED - 1].join(", "), names.len() - (NAMED - 1))
}

/// The symbol, the verb and the target of one action, as shown in the text plan.
pub fn describe(change: &Change, project: &str) -> (&'static str, &'static str, String) {
    let kind = change.kind();
    (kind.symbol(), kind.verb(), target(change, project))
}

/// What an action changes, in words: the one part of [`describe`] that is per variant.
fn target(change: &Change, project: &str) -> String {
    match change {
        Change::Resume { deployment, from_phase, to_phase, attempt, .. } if from_phase == to_phase => {
            format!("deployment {deployment}: restart {from_phase} (attempt {attempt})")
        }
        Change::Resume { deployment, from_phase, to_phase, .. }
        | Change::Fail { deployment, from_phase, to_phase, .. } => {
            format!("deployment {deployment}: {from_phase} -> {to_phase}")
        }
        Change::Link { path, before: Some(old), target } => {
            format!("{} -> {} (was {})", path.display(), target.display(), old.display())
        }
        Change::Link { path, before: None, target } => format!("{} -> {}", path.display(), target.display()),
        Change::MoveAside { path, to } => format!("{} => {}", path.display(), short(path, to)),
        Change::StartContainer { id, name }
        | Change::RecreateContainer { id, name, .. }
        | Change::RemoveContainer { id, name } => format!("container {name} ({id})"),
        Change::WriteRoute { deployment, upstream, domain } => {
            format!("{project} -> {deployment} at {upstream} (Host {domain})")
        }
        Change::RemoveRoute { deployment } => {
            let was = deployment.as_deref().map(|d| format!(" (targeted {d})")).unwrap_or_default();
            format!("{project}{was}")
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
    let errors = plan.errors().count();
    if errors > 0 {
        let s = if errors == 1 { "" } else { "s" };
        let _ =
            writeln!(out, "Nothing will be changed at {now}: the configuration looks wrong ({errors} error{s} below).");
    } else if plan.actions.is_empty() && warnings > 0 {
        let (s, verb) = if warnings == 1 { ("", "needs") } else { ("s", "need") };
        let _ = writeln!(out, "No changes to make at {now}, but {warnings} warning{s} below {verb} a person.");
    } else if plan.actions.is_empty() {
        let _ = writeln!(out, "No changes. The world matches its deployments at {now}.");
    } else if verbosity == Verbosity::Quiet {
        let _ = writeln!(out, "trueup will make {} changes at {now}.", plan.actions.len());
    } else {
        let _ = writeln!(out, "trueup will make these changes at {now}:");
        let mut last: Option<&str> = None;
        for a in &plan.actions {
            if last != Some(a.project.as_str()) {
                let _ = writeln!(out, "\n  # project {}", a.project.escape_debug());
                last = Some(a.project.as_str());
            }
            let (symbol, verb, target) = describe(&a.change, &a.project);
            let _ = writeln!(out, "  {symbol:>3} {verb:<10} {target}");
            let _ = writeln!(out, "      {:<10} because {}", "", a.reason);
        }
    }
    let brief = verbosity == Verbosity::Brief;
    let flying: BTreeSet<&str> = plan.findings.iter().filter_map(|f| f.in_flight.as_deref()).collect();
    let shown = |f: &&super::Finding| match verbosity {
        Verbosity::Quiet => f.level != Level::Note,
        Verbosity::Brief => f.in_flight.is_none(),
        Verbosity::Verbose => true,
    };
    if plan.findings.iter().any(|f| shown(&f)) || (brief && !flying.is_empty()) {
        let _ = writeln!(out, "\nFindings (not changed):");
        if brief && !flying.is_empty() {
            let stuck = plan.actions.iter().filter(|a| a.change.is_verdict()).count();
            let stuck = if stuck == 0 { "none stuck".to_owned() } else { format!("{stuck} stuck") };
            let line = super::status::deployments_in_flight(flying.len());
            let _ = writeln!(out, "  note: {line}, {stuck} (`--verbose` lists each)");
        }
        for f in plan.findings.iter().filter(shown) {
            let mark = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
                Level::Note => "note",
            };
            // Ids come from the database: a control character in one (an escape sequence,
            // a newline) is shown escaped, never sent to the terminal.
            let scope = if f.project.is_empty() { String::new() } else { format!("{}: ", f.project.escape_debug()) };
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
