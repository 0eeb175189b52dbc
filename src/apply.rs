//! The executor: carries a [`Plan`] out through [`Effects`], action by action.
//!
//! [`apply`] is the only caller of effects. It runs the actions in plan order and never
//! stops at a failed one: a broken project does not block the others. Within a project,
//! an action is skipped when an earlier action of the same project that touches the
//! same thing failed or was skipped, since it would build on a change that did not
//! happen. "The same thing" is a path (a link's path, a move-aside's source or
//! destination), a container (by id or name) or a deployment (a resume, a failure, a
//! recreated container's deployment, a route's deployment). So a `current` that could
//! not be moved aside is not linked over, but the project's routes are still written.
//!
//! The store is reached through [`Hooks`]: the journal (every action planned before
//! anything changes, then done, failed or skipped) and the lease fence, checked before
//! each action. A hook error stops the apply: the remaining actions are skipped, and
//! [`Report::stopped`] says why.
//!
//! It reads no clock (`now` is a parameter) and prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::model::Verdict;
use crate::plan::{Action, Change, Group, Kind, Plan, Tally};
use crate::time::Timestamp;
use crate::world::effects::{BoxError, EffectError, Effects};

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "why", rename_all = "lowercase")]
pub enum Status {
    /// It was made (or the machine already was so).
    Done,
    /// It failed; the error, with its causes.
    Failed(String),
    /// It was not tried; why.
    Skipped(String),
}

/// One action and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The action, as planned.
    pub action: Action,
    /// Done, failed or skipped.
    pub status: Status,
}

/// How many actions of each kind ended how.
///
/// Every number is derived from the kinds' table ([`Kind`]), and it serializes (as
/// `apply --json`'s `counts`) to a map in this order: each [`Group`]'s done counters
/// ([`Kind::done`]) and its own skipped counter ([`Group::skipped`]), then each group's
/// failures ([`Group::errors`]), then `errors` and `skipped` of any kind:
///
/// `deployments_resumed`, `deployments_failed`, `deployments_skipped`, `symlinks_fixed`,
/// `moved_aside`, `containers_started`, `containers_recreated`, `containers_removed`,
/// `routes_written`, `routes_removed`, `deployment_errors`, `symlink_errors`,
/// `container_errors`, `route_errors`, `errors`, `skipped`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    by_kind: BTreeMap<Kind, Ended>,
}

/// How the actions of one kind ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Ended {
    done: usize,
    failed: usize,
    skipped: usize,
}

impl Counts {
    /// Counts one action of `kind` that ended with `status`.
    pub fn add(&mut self, kind: Kind, status: &Status) {
        let ended = self.by_kind.entry(kind).or_default();
        match status {
            Status::Done => ended.done += 1,
            Status::Failed(_) => ended.failed += 1,
            Status::Skipped(_) => ended.skipped += 1,
        }
    }

    /// Every counter by key, in the order documented on [`Counts`], zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> {
        let groups = self.groups();
        let mut all: Vec<(&'static str, usize)> =
            groups.iter().flat_map(|g| g.done.iter().chain(&g.skipped)).map(|(t, n)| (t.key, *n)).collect();
        all.extend(groups.iter().map(|g| (g.group.errors(), g.errors)));
        all.extend([("errors", self.errors()), ("skipped", self.skipped())]);
        all.into_iter()
    }

    /// The counter under `key`, if there is such a key.
    pub fn get(&self, key: &str) -> Option<usize> {
        self.iter().find(|(k, _)| *k == key).map(|(_, n)| n)
    }

    /// Actions that failed, of any kind.
    pub fn errors(&self) -> usize {
        self.by_kind.values().map(|e| e.failed).sum()
    }

    /// Actions not tried, of any kind (they depended on one that did not succeed, a
    /// worker kept its deployment, or the apply stopped).
    pub fn skipped(&self) -> usize {
        self.by_kind.values().map(|e| e.skipped).sum()
    }

    /// `Summary: deployments 3 resumed, 2 failed, 0 skipped, 0 errors; symlinks ...; 0
    /// actions skipped in all.`: each group's counters in the order of the JSON, with
    /// `verified_links`, the links found already right, after the links fixed.
    pub fn line(&self, verified_links: usize) -> String {
        let groups: Vec<String> = self
            .groups()
            .iter()
            .map(|g| {
                let mut parts: Vec<String> =
                    g.done.iter().chain(&g.skipped).map(|(t, n)| format!("{n} {}", t.word)).collect();
                // A link found right is no action, so no kind counts it: it is shown
                // beside the links fixed.
                if g.group == Group::Symlink {
                    parts.insert(parts.len().min(1), format!("{verified_links} verified"));
                }
                parts.push(format!("{} errors", g.errors));
                format!("{} {}", g.group.noun(), parts.join(", "))
            })
            .collect();
        format!("Summary: {}; {} actions skipped in all.", groups.join("; "), self.skipped())
    }

    /// Each group's numbers, in the order of [`Group::ALL`].
    fn groups(&self) -> Vec<GroupCounts> {
        let sum = |which: &dyn Fn(Kind) -> bool, field: fn(&Ended) -> usize| -> usize {
            self.by_kind.iter().filter(|(k, _)| which(**k)).map(|(_, e)| field(e)).sum()
        };
        Group::ALL
            .iter()
            .map(|&group| {
                // Kinds may share a counter (both kinds of link fix a symlink): each once.
                let mut done: Vec<(Tally, usize)> = Vec::new();
                for tally in group.kinds().map(Kind::done) {
                    if !done.iter().any(|(t, _)| *t == tally) {
                        done.push((tally, sum(&|k| k.done() == tally, |e| e.done)));
                    }
                }
                let in_group = |k: Kind| k.group() == group;
                GroupCounts {
                    group,
                    done,
                    skipped: group.skipped().map(|t| (t, sum(&in_group, |e| e.skipped))),
                    errors: sum(&in_group, |e| e.failed),
                }
            })
            .collect()
    }
}

/// One group's numbers, as the JSON and the summary line list them.
struct GroupCounts {
    group: Group,
    /// Its done counters, each once, in the order of the table.
    done: Vec<(Tally, usize)>,
    /// Its own skipped counter, if it has one.
    skipped: Option<(Tally, usize)>,
    /// Its failed actions.
    errors: usize,
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// One outcome per action, in plan order.
    pub outcomes: Vec<Outcome>,
    /// The totals.
    pub counts: Counts,
    /// Why the apply stopped early (a lost lease, a journal that cannot be written).
    pub stopped: Option<String>,
}

impl Report {
    /// True when every action was done.
    pub fn all_done(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == Status::Done)
    }

    /// True when nothing failed and the apply ran to its end: every action was done, or
    /// skipped because a worker kept its deployment.
    pub fn succeeded(&self) -> bool {
        self.stopped.is_none() && self.outcomes.iter().all(|o| !matches!(o.status, Status::Failed(_)))
    }
}

/// Why a hook stopped the apply.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The apply lease expired or was taken over: nothing more may change.
    #[error("the apply lease is no longer held")]
    LeaseLost(#[source] BoxError),
    /// The journal could not record an action.
    #[error("cannot write the journal")]
    Journal(#[source] BoxError),
    /// The apply was asked to stop (a signal, an output that cannot be written): the
    /// lease is still held, so the actions left are journaled as skipped with this reason.
    #[error("{0}")]
    Interrupted(String),
}

/// Where [`apply`] reports to the store. Every method defaults to doing nothing.
pub trait Hooks {
    /// Checks, before each action, that this apply still holds the lease.
    ///
    /// # Errors
    ///
    /// [`HookError::LeaseLost`] or [`HookError::Interrupted`] stops the apply.
    fn fence(&mut self) -> Result<(), HookError> {
        Ok(())
    }

    /// Records that action `index` is planned; called for every action before any runs.
    ///
    /// # Errors
    ///
    /// [`HookError::Journal`] stops the apply before anything changes.
    fn planned(&mut self, index: usize, action: &Action) -> Result<(), HookError> {
        let _ = (index, action);
        Ok(())
    }

    /// Hears that action `index` ended with `status`. The record may wait for
    /// [`Hooks::flush`], which [`apply`] calls only once what the action changed is
    /// durable.
    ///
    /// # Errors
    ///
    /// [`HookError::Journal`] stops the apply after this action.
    fn finished(&mut self, index: usize, action: &Action, status: &Status) -> Result<(), HookError> {
        let _ = (index, action, status);
        Ok(())
    }

    /// Writes what [`Hooks::planned`] and [`Hooks::finished`] kept back. [`apply`] calls it
    /// once every action is planned, and after each batch of actions, once the effects
    /// are synced ([`Effects::sync`]).
    ///
    /// # Errors
    ///
    /// [`HookError::Journal`] stops the apply (before anything changes, when the plan is
    /// what could not be written).
    fn flush(&mut self) -> Result<(), HookError> {
        Ok(())
    }
}

/// The most actions run between the first two syncs of the effects and journal writes.
/// Each batch after it may hold twice as many as the one before, up to [`BATCH`]: the
/// first outcomes reach the journal soon, and a long repair pays for few syncs.
pub const FIRST_BATCH: usize = 32;

/// At most this many actions run between two syncs of the effects and journal writes.
/// Each sync waits for the disk (and for the old links a batch set aside to be
/// unlinked), so fewer of them make a large repair faster: an apply repairing 4,000
/// links took 1.17 s with batches of 256 against 1.39 s with batches of 32 (medians of
/// 9 runs); with [`BATCH_TIME`], progress still reaches the journal at least four times
/// a second.
pub const BATCH: usize = 256;

/// At most this long passes between two syncs of the effects and journal writes, so
/// that progress reaches the journal while a slow batch runs.
pub const BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// Hooks that record nothing and never fence: for dry worlds and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Carries out `plan` through `effects` at `now`, reporting to `hooks`.
///
/// Durability is batched: after at most [`FIRST_BATCH`] actions, then twice as many each
/// batch up to [`BATCH`], or after [`BATCH_TIME`], and before
/// a change a power cut cannot take back ([`Change::is_irreversible`]), the effects are
/// synced, then the journal written ([`Hooks::flush`]), so the journal never records as
/// done a change that a power cut could still undo, and no container goes before the
/// route that left it is durable. A failed sync stops the apply; the
/// actions since the last sync are reported failed and stay `planned` in the journal.
pub fn apply(plan: &Plan, effects: &mut dyn Effects, now: Timestamp, hooks: &mut dyn Hooks) -> Report {
    let mut report = Report::default();
    // Whether the journal still takes rows: not once it failed or the lease was lost,
    // but still after an interruption, so the actions left are recorded as skipped.
    let mut journaling = true;
    let planned = plan.actions.iter().enumerate().try_for_each(|(index, action)| hooks.planned(index, action));
    if let Err(e) = planned.and_then(|()| hooks.flush()) {
        report.stopped = Some(chain(&e));
        journaling = false;
    }
    // Subjects of actions that failed or were skipped, with their project.
    let mut blocked: BTreeSet<(&str, Subject<'_>)> = BTreeSet::new();
    // Projects whose deployment verdict did not go through: the plan gave their links and
    // routes back to the live release only because that deployment was to be resumed or
    // failed, so nothing more of theirs is changed in this apply.
    let mut undecided: BTreeSet<&str> = BTreeSet::new();
    // The outcomes since the last sync, and when that batch began.
    let mut batch: Vec<Outcome> = Vec::new();
    let mut began = std::time::Instant::now();
    let mut limit = FIRST_BATCH;
    for (index, action) in plan.actions.iter().enumerate() {
        let subjects = subjects(&action.change);
        // What came before a change that cannot be taken back is made durable first: a
        // zombie is removed only once the route that left it survives a power cut.
        // Only a batch with something else in it: removals back to back have nothing to
        // make durable between them.
        let pending = || batch.iter().any(|o| !o.action.change.is_irreversible());
        if action.change.is_irreversible() && report.stopped.is_none() && pending() {
            settle(&mut batch, effects, hooks, &mut journaling, &mut report);
            began = std::time::Instant::now();
        }
        let status = if let Some(why) = &report.stopped {
            Status::Skipped(format!("the apply stopped: {why}"))
        } else if let Err(e) = hooks.fence() {
            let why = chain(&e);
            journaling = matches!(e, HookError::Interrupted(_));
            report.stopped = Some(why.clone());
            Status::Skipped(format!("the apply stopped: {why}"))
        } else if let Some(s) = subjects.iter().find(|s| blocked.contains(&(action.project.as_str(), **s))) {
            Status::Skipped(format!("an earlier action on {s} did not succeed"))
        } else if undecided.contains(action.project.as_str()) {
            Status::Skipped(format!("a verdict on a deployment of `{}` did not go through", action.project))
        } else {
            match run(action, effects, now) {
                Ok(()) => Status::Done,
                // A worker that woke up since the plan keeps its deployment: not an error.
                Err(e) if e.is_race() => Status::Skipped(format!("left to its worker: {}", chain(&e))),
                Err(e) => Status::Failed(chain(&e)),
            }
        };
        if status != Status::Done {
            if action.change.kind().group() == Group::Deployment {
                undecided.insert(&action.project);
            }
            blocked.extend(subjects.into_iter().map(|s| (action.project.as_str(), s)));
        }
        if journaling && let Err(e) = hooks.finished(index, action, &status) {
            report.stopped.get_or_insert_with(|| chain(&e));
            journaling = false;
        }
        batch.push(Outcome { action: action.clone(), status });
        if batch.len() >= limit || began.elapsed() >= BATCH_TIME {
            settle(&mut batch, effects, hooks, &mut journaling, &mut report);
            began = std::time::Instant::now();
            limit = (limit * 2).min(BATCH);
        }
    }
    settle(&mut batch, effects, hooks, &mut journaling, &mut report);
    report
}

/// Ends a batch: syncs the effects, then writes the journal, then reports the batch's
/// outcomes. When the sync fails, the actions done in the batch are reported failed, the
/// journal is not written (their rows stay `planned`) and the apply stops.
fn settle(
    batch: &mut Vec<Outcome>,
    effects: &mut dyn Effects,
    hooks: &mut dyn Hooks,
    journaling: &mut bool,
    report: &mut Report,
) {
    if batch.is_empty() {
        return;
    }
    match effects.sync() {
        Ok(()) => {
            if *journaling && let Err(e) = hooks.flush() {
                report.stopped.get_or_insert_with(|| chain(&e));
                *journaling = false;
            }
        }
        Err(e) => {
            let why = format!("made, but not durable: {}", chain(&e));
            for o in batch.iter_mut().filter(|o| o.status == Status::Done) {
                o.status = Status::Failed(why.clone());
            }
            report.stopped.get_or_insert_with(|| format!("cannot make the changes durable: {}", chain(&e)));
            *journaling = false;
        }
    }
    for o in batch.drain(..) {
        report.counts.add(o.action.change.kind(), &o.status);
        report.outcomes.push(o);
    }
}

/// The outcome of each action, one line each (two for a failure or a skip, with why).
pub fn render_report(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("Results:\n");
    for o in &report.outcomes {
        let (_, verb, target) = crate::plan::describe(&o.action.change, &o.action.project);
        let (mark, why) = match &o.status {
            Status::Done => ("done   ", None),
            Status::Failed(why) => ("FAILED ", Some(why)),
            Status::Skipped(why) => ("skipped", Some(why)),
        };
        let _ = writeln!(out, "  {mark} {}: {verb} {target}", o.action.project);
        if let Some(why) = why {
            let _ = writeln!(out, "          {why}");
        }
    }
    if let Some(why) = &report.stopped {
        let _ = writeln!(out, "The apply stopped early: {why}");
    }
    out
}

/// Makes one change.
fn run(action: &Action, effects: &mut dyn Effects, now: Timestamp) -> Result<(), EffectError> {
    match &action.change {
        Change::Resume { deployment, from_phase, to_phase, attempt, stuck_since, dead_claim } => {
            effects.verdict(&Verdict {
                deployment,
                from_phase,
                to_phase,
                attempt: Some(*attempt),
                stuck_since: *stuck_since,
                dead_claim: dead_claim.as_deref(),
                reason: &action.reason,
                now,
            })
        }
        Change::Fail { deployment, from_phase, to_phase, stuck_since, dead_claim } => effects.verdict(&Verdict {
            deployment,
            from_phase,
            to_phase,
            attempt: None,
            stuck_since: *stuck_since,
            dead_claim: dead_claim.as_deref(),
            reason: &action.reason,
            now,
        }),
        Change::Link { path, target, .. } => effects.link(path, target),
        Change::MoveAside { path, to } => effects.move_aside(path, to),
        Change::StartContainer { id, name } => effects.start_container(id, name),
        Change::RecreateContainer { id, name, image, labels, .. } => {
            effects.recreate_container(id, name, image, labels, now)
        }
        Change::RemoveContainer { id, name } => effects.remove_container(id, name),
        Change::WriteRoute { deployment, upstream, domain } => {
            effects.write_route(&action.project, deployment, upstream, domain)
        }
        Change::RemoveRoute { .. } => effects.remove_route(&action.project, now),
    }
}

/// A thing an action touches; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Subject<'a> {
    Path(&'a Path),
    Container(&'a str),
    Deployment(&'a str),
}

impl std::fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Path(p) => write!(f, "`{}`", p.display()),
            Subject::Container(c) => write!(f, "container `{c}`"),
            Subject::Deployment(d) => write!(f, "deployment `{d}`"),
        }
    }
}

fn subjects(change: &Change) -> Vec<Subject<'_>> {
    match change {
        Change::Resume { deployment, .. } | Change::Fail { deployment, .. } => vec![Subject::Deployment(deployment)],
        Change::Link { path, .. } => vec![Subject::Path(path)],
        Change::MoveAside { path, to } => vec![Subject::Path(path), Subject::Path(to)],
        Change::StartContainer { id, name } | Change::RemoveContainer { id, name } => {
            vec![Subject::Container(id), Subject::Container(name)]
        }
        Change::RecreateContainer { id, name, deployment, .. } => {
            vec![Subject::Container(id), Subject::Container(name), Subject::Deployment(deployment)]
        }
        Change::WriteRoute { deployment, .. } => vec![Subject::Deployment(deployment)],
        Change::RemoveRoute { deployment } => deployment.as_deref().map(Subject::Deployment).into_iter().collect(),
    }
}

/// An error and its causes, joined with `: `, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::{Node, World};
    use crate::world::effects::MemoryWorld;

    fn now() -> Timestamp {
        "2025-10-02T12:00:00Z".parse().unwrap()
    }

    fn action(project: &str, change: Change) -> Action {
        Action { project: project.into(), change, reason: "test".into() }
    }

    fn link(path: &str, target: &str) -> Change {
        Change::Link { path: path.into(), before: None, target: target.into() }
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan { actions, findings: Vec::new(), fingerprint: String::new() }
    }

    fn world() -> World {
        let mut w = World { root: "/r".into(), ..World::default() };
        for p in ["p1", "p2"] {
            w.files.insert(PathBuf::from(format!("/r/{p}/deployments/d1/public/index.html")), Node::File);
        }
        // p1's `current` is a real file in the way, so its link cannot be made.
        w.files.insert("/r/p1/current".into(), Node::File);
        w
    }

    #[test]
    fn a_failure_skips_what_builds_on_it_and_nothing_else() {
        let plan = plan(vec![
            action("p1", link("/r/p1/current", "/r/p1/deployments/d1")),
            action("p1", link("/r/p1/current", "/r/p1/deployments/d1")),
            action("p1", link("/r/webroot/p1", "/r/p1/current/public")),
            action("p2", link("/r/p2/current", "/r/p2/deployments/d1")),
            action("p2", Change::StartContainer { id: "c1".into(), name: "web".into() }),
            action("p2", Change::WriteRoute { deployment: "d1".into(), upstream: "u".into(), domain: "p2".into() }),
        ]);
        let mut m = MemoryWorld::new(world());
        let report = apply(&plan, &mut m, now(), &mut NoHooks);
        let statuses: Vec<_> = report.outcomes.iter().map(|o| o.status.clone()).collect();
        assert_eq!(
            statuses,
            [
                Status::Failed("`/r/p1/current` is a real file, not a symlink: it must be moved aside first".into()),
                Status::Skipped("an earlier action on `/r/p1/current` did not succeed".into()),
                Status::Done,
                Status::Done,
                Status::Failed("cannot change container `web`: no container engine is configured".into()),
                Status::Done,
            ]
        );
        let c = &report.counts;
        let got = ["symlinks_fixed", "errors", "routes_written", "containers_started"].map(|k| c.get(k).unwrap());
        assert_eq!(got, [2, 2, 1, 0]);
        assert!(!report.all_done());
        assert_eq!(report.stopped, None);
    }

    /// Records the journal calls, and loses the lease before action `lose_at`.
    struct Recorder {
        calls: Vec<String>,
        fences: usize,
        lose_at: usize,
    }

    /// The memory world, whose syncs are recorded in `log` and fail when `fail` is set.
    struct Syncs<'l> {
        inner: MemoryWorld,
        log: &'l std::cell::RefCell<Vec<String>>,
        fail: bool,
    }

    impl Effects for Syncs<'_> {
        fn link(&mut self, path: &std::path::Path, target: &std::path::Path) -> Result<(), EffectError> {
            self.log.borrow_mut().push(format!("link {}", path.display()));
            self.inner.link(path, target)
        }
        fn move_aside(&mut self, path: &std::path::Path, to: &std::path::Path) -> Result<(), EffectError> {
            self.inner.move_aside(path, to)
        }
        fn start_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
            self.inner.start_container(id, name)
        }
        fn recreate_container(
            &mut self,
            id: &str,
            name: &str,
            image: &str,
            labels: &std::collections::BTreeMap<String, String>,
            now: Timestamp,
        ) -> Result<(), EffectError> {
            self.inner.recreate_container(id, name, image, labels, now)
        }
        fn remove_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
            self.log.borrow_mut().push(format!("remove {name}"));
            self.inner.remove_container(id, name)
        }
        fn write_route(
            &mut self,
            project: &str,
            deployment: &str,
            upstream: &str,
            domain: &str,
        ) -> Result<(), EffectError> {
            self.inner.write_route(project, deployment, upstream, domain)
        }
        fn remove_route(&mut self, project: &str, now: Timestamp) -> Result<(), EffectError> {
            self.inner.remove_route(project, now)
        }
        fn verdict(&mut self, verdict: &crate::model::Verdict<'_>) -> Result<(), EffectError> {
            self.inner.verdict(verdict)
        }
        fn sync(&mut self) -> Result<(), EffectError> {
            self.log.borrow_mut().push("sync".into());
            if self.fail {
                let source = std::io::Error::from_raw_os_error(libc::EIO);
                return Err(EffectError::Io { op: "sync folder", path: "/r/webroot".into(), source });
            }
            Ok(())
        }
    }

    /// Records the journal's writes in `log`, as the journal makes them.
    struct Flushes<'l> {
        log: &'l std::cell::RefCell<Vec<String>>,
        kept: Vec<String>,
    }

    impl Hooks for Flushes<'_> {
        fn planned(&mut self, index: usize, _: &Action) -> Result<(), HookError> {
            self.kept.push(format!("planned {index}"));
            Ok(())
        }
        fn finished(&mut self, index: usize, _: &Action, status: &Status) -> Result<(), HookError> {
            let word = if *status == Status::Done { "done" } else { "not done" };
            self.kept.push(format!("{word} {index}"));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), HookError> {
            self.log.borrow_mut().push(format!("journal {}", self.kept.join(", ")));
            self.kept.clear();
            Ok(())
        }
    }

    fn links(n: usize) -> Plan {
        plan((0..n).map(|i| action("p2", link(&format!("/r/webroot/l{i}"), "/r/p2/deployments/d1"))).collect())
    }

    #[test]
    fn the_journal_is_written_after_each_batch_is_synced_never_before() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut effects = Syncs { inner: MemoryWorld::new(world()), log: &log, fail: false };
        let n = 482;
        let report = apply(&links(n), &mut effects, now(), &mut Flushes { log: &log, kept: Vec::new() });
        assert!(report.all_done(), "{report:?}");
        let log = log.into_inner();
        let planned: Vec<String> = (0..n).map(|i| format!("planned {i}")).collect();
        assert_eq!(log[0], format!("journal {}", planned.join(", ")), "the plan is journaled first, whole");
        // Then a batch of links, a sync, the journal of that batch, and the same for the
        // rest: 32 links first, twice as many each time up to 256.
        assert_eq!((FIRST_BATCH, BATCH), (32, 256));
        let mut expected = vec![log[0].clone()];
        for batch in [0..32, 32..96, 96..224, 224..480, 480..n] {
            expected.extend(batch.clone().map(|i| format!("link /r/webroot/l{i}")));
            expected.push("sync".into());
            expected.push(format!("journal {}", batch.map(|i| format!("done {i}")).collect::<Vec<_>>().join(", ")));
        }
        assert_eq!(log, expected);
    }

    /// Applies `actions` to the model world, with an engine, and returns the log of its
    /// effects, syncs and journal writes, in order; every action must be done.
    fn logged(actions: Vec<Action>) -> Vec<String> {
        let log = std::cell::RefCell::new(Vec::new());
        let mut world = world();
        world.containers = Some(Vec::new());
        let mut effects = Syncs { inner: MemoryWorld::new(world), log: &log, fail: false };
        let report = apply(&plan(actions), &mut effects, now(), &mut Flushes { log: &log, kept: Vec::new() });
        assert!(report.all_done(), "{report:?}");
        log.into_inner()
    }

    fn remove(id: &str, name: &str) -> Change {
        Change::RemoveContainer { id: id.into(), name: name.into() }
    }

    #[test]
    fn a_container_is_removed_only_once_what_came_before_it_is_durable() {
        let actions = vec![
            action("p2", link("/r/webroot/l0", "/r/p2/deployments/d1")),
            action("p2", remove("c1", "zombie")),
            action("p2", link("/r/webroot/l1", "/r/p2/deployments/d1")),
        ];
        let expected = [
            "journal planned 0, planned 1, planned 2",
            "link /r/webroot/l0",
            "sync",
            "journal done 0",
            "remove zombie",
            "link /r/webroot/l1",
            "sync",
            "journal done 1, done 2",
        ];
        assert_eq!(logged(actions), expected);
    }

    #[test]
    fn containers_removed_back_to_back_make_one_batch() {
        let actions = vec![
            action("p2", link("/r/webroot/l0", "/r/p2/deployments/d1")),
            action("p2", remove("c1", "zombie")),
            action("p2", remove("c2", "zombie2")),
        ];
        let expected = [
            "journal planned 0, planned 1, planned 2",
            "link /r/webroot/l0",
            "sync",
            "journal done 0",
            "remove zombie",
            "remove zombie2",
            "sync",
            "journal done 1, done 2",
        ];
        assert_eq!(logged(actions), expected);
    }

    #[test]
    fn a_failed_sync_fails_the_batch_keeps_it_out_of_the_journal_and_stops() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut effects = Syncs { inner: MemoryWorld::new(world()), log: &log, fail: true };
        let n = FIRST_BATCH + 2;
        let report = apply(&links(n), &mut effects, now(), &mut Flushes { log: &log, kept: Vec::new() });
        let why = "made, but not durable: cannot sync folder `/r/webroot`: Input/output error (os error 5)";
        for o in &report.outcomes[..FIRST_BATCH] {
            assert_eq!(o.status, Status::Failed(why.into()));
        }
        for o in &report.outcomes[FIRST_BATCH..] {
            assert!(
                matches!(&o.status, Status::Skipped(w) if w.starts_with("the apply stopped: cannot make the changes durable")),
                "{o:?}"
            );
        }
        assert_eq!(report.counts.errors(), FIRST_BATCH);
        assert!(report.stopped.as_deref().unwrap().starts_with("cannot make the changes durable: cannot sync folder"));
        let log = log.into_inner();
        let journals: Vec<&String> = log.iter().filter(|l| l.starts_with("journal")).collect();
        assert_eq!(journals.len(), 1, "only the plan is journaled: {journals:?}");
        assert_eq!(
            log.iter().filter(|l| l.starts_with("link")).count(),
            FIRST_BATCH,
            "nothing runs after the failed sync"
        );
    }

    impl Hooks for Recorder {
        fn fence(&mut self) -> Result<(), HookError> {
            self.fences += 1;
            if self.fences > self.lose_at { Err(HookError::LeaseLost("taken by `host-b`".into())) } else { Ok(()) }
        }
        fn planned(&mut self, index: usize, _: &Action) -> Result<(), HookError> {
            self.calls.push(format!("planned {index}"));
            Ok(())
        }
        fn finished(&mut self, index: usize, _: &Action, status: &Status) -> Result<(), HookError> {
            let word = match status {
                Status::Done => "done",
                Status::Failed(_) => "failed",
                Status::Skipped(_) => "skipped",
            };
            self.calls.push(format!("{word} {index}"));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), HookError> {
            self.calls.push("flush".into());
            Ok(())
        }
    }

    #[test]
    fn the_journal_sees_every_action_and_a_lost_lease_stops_the_rest() {
        let plan = plan(vec![
            action("p2", link("/r/p2/current", "/r/p2/deployments/d1")),
            action("p1", link("/r/p1/current", "/r/p1/deployments/d1")),
            action("p2", link("/r/webroot/p2", "/r/p2/current/public")),
        ]);
        let mut hooks = Recorder { calls: Vec::new(), fences: 0, lose_at: 2 };
        let mut m = MemoryWorld::new(world());
        let report = apply(&plan, &mut m, now(), &mut hooks);
        // The lease is lost before the batch is journaled: its outcomes are not written
        // (the journal would refuse them), and the next apply closes the run.
        assert_eq!(hooks.calls, ["planned 0", "planned 1", "planned 2", "flush", "done 0", "failed 1"]);
        assert_eq!(report.stopped.as_deref(), Some("the apply lease is no longer held: taken by `host-b`"));
        assert_eq!(
            report.outcomes[2].status,
            Status::Skipped("the apply stopped: the apply lease is no longer held: taken by `host-b`".into())
        );
        assert!(!m.world.files.contains_key(&PathBuf::from("/r/webroot/p2")), "nothing changed after the stop");
    }

    #[test]
    fn later_changes_to_a_deployment_whose_resume_failed_are_skipped() {
        let plan = plan(vec![
            action(
                "p1",
                Change::Resume {
                    deployment: "d1".into(),
                    from_phase: "BUILDING".into(),
                    to_phase: "BUILDING".into(),
                    attempt: 1,
                    stuck_since: None,
                    dead_claim: None,
                },
            ),
            action(
                "p1",
                Change::Fail {
                    deployment: "d1".into(),
                    from_phase: "BUILDING".into(),
                    to_phase: "FAILED".into(),
                    stuck_since: None,
                    dead_claim: None,
                },
            ),
        ]);
        let report = apply(&plan, &mut MemoryWorld::new(world()), now(), &mut NoHooks);
        assert_eq!(report.outcomes[0].status, Status::Failed("deployment `d1` does not exist".into()));
        assert_eq!((report.counts.errors(), report.counts.get("deployments_skipped")), (1, Some(1)));
    }
}
