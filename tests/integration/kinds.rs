//! Every kind of action, end to end: how each renders in the text and JSON plan, how an
//! apply counts it done, failed or skipped, and how the apply's JSON reads. The snapshots
//! were taken before the kinds were described in one table, so they pin every byte; and
//! a test walks [`Kind::ALL`] so that a new kind cannot be left out of a count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use trueup::apply::{self, NoHooks};
use trueup::model::Verdict;
use trueup::plan::{self, Action, Change, Kind, Plan, Summary};
use trueup::time::Timestamp;
use trueup::world::effects::{EffectError, Effects};

fn now() -> Timestamp {
    "2025-10-02T12:00:00Z".parse().unwrap()
}

fn action(project: &str, change: Change) -> Action {
    Action { project: project.into(), change, reason: format!("{project} needs it") }
}

fn resume(deployment: &str, to_phase: &str) -> Change {
    Change::Resume {
        deployment: deployment.into(),
        from_phase: "BUILDING".into(),
        to_phase: to_phase.into(),
        attempt: 2,
        stuck_since: Some("2025-10-02T11:00:00Z".parse().unwrap()),
        dead_claim: None,
    }
}

fn fail(deployment: &str) -> Change {
    Change::Fail {
        deployment: deployment.into(),
        from_phase: "BUILDING".into(),
        to_phase: "FAILED".into(),
        stuck_since: None,
        dead_claim: None,
    }
}

fn link(path: &str, before: Option<&str>) -> Change {
    Change::Link { path: path.into(), before: before.map(Into::into), target: format!("{path}.target").into() }
}

fn move_aside(path: &str) -> Change {
    Change::MoveAside { path: path.into(), to: format!("{path}.trueup-aside-20251002T120000Z").into() }
}

fn start(name: &str) -> Change {
    Change::StartContainer { id: format!("{name}-id"), name: name.into() }
}

fn recreate(name: &str) -> Change {
    let labels = BTreeMap::from([("trueup.project".to_owned(), "p1".to_owned())]);
    Change::RecreateContainer {
        id: format!("{name}-id"),
        name: name.into(),
        image: "img:1".into(),
        deployment: format!("{name}-deployment"),
        labels,
    }
}

fn remove(name: &str) -> Change {
    Change::RemoveContainer { id: format!("{name}-id"), name: name.into() }
}

fn write_route(deployment: &str) -> Change {
    Change::WriteRoute {
        deployment: deployment.into(),
        upstream: "http://127.0.0.1:8100".into(),
        domain: "p1.localhost".into(),
    }
}

fn remove_route(deployment: Option<&str>) -> Change {
    Change::RemoveRoute { deployment: deployment.map(Into::into) }
}

/// One action of every shape a plan can show (both resumes, both links, both routes), and
/// under the `Scripted` effects every way an action ends.
fn every_shape() -> Plan {
    let actions = vec![
        action("p1", resume("d1", "BUILDING")),
        action("p1", resume("d2", "COPYING_FILES")),
        action("p1", fail("d3")),
        action("p1", link("/r/p1/current", Some("/r/p1/deployments/d0"))),
        action("p1", move_aside("/r/p1/stray")),
        action("p1", link("/r/webroot/p1", None)),
        action("p2", start("web")),
        action("p2", recreate("worker")),
        action("p2", remove("zombie")),
        action("p2", write_route("d7")),
        action("p3", remove_route(Some("d9"))),
        action("p4", remove_route(None)),
        action("p5", resume("race5", "BUILDING")),
        action("p6", link("/r/p6/fail", None)),
        action("p6", link("/r/p6/fail", None)),
    ];
    Plan { actions, findings: Vec::new(), fingerprint: "0123456789abcdef".into() }
}

#[track_caller]
fn snapshot(name: &str, text: &str) {
    insta::with_settings!({ snapshot_path => "../../snapshots/kinds", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn every_shape_of_action_renders_as_snapshotted() {
    let plan = every_shape();
    snapshot("every_shape_text", &plan::render_text(&plan, now(), plan::Verbosity::Brief));
    snapshot("every_shape_json", &plan::render_json(&plan, now()));
    let report = apply::apply(&plan, &mut Scripted, now(), &mut NoHooks);
    snapshot("every_shape_report", &apply::render_report(&report));
}

/// Effects that succeed, except on a subject whose name says otherwise: `fail` gives an
/// error, `race` (a deployment) a worker that kept it.
struct Scripted;

fn outcome(subject: &str) -> Result<(), EffectError> {
    if subject.contains("race") {
        Err(EffectError::Progressed(subject.to_owned()))
    } else if subject.contains("fail") {
        Err(EffectError::InvalidId(subject.to_owned()))
    } else {
        Ok(())
    }
}

impl Effects for Scripted {
    fn link(&mut self, path: &Path, _: &Path) -> Result<(), EffectError> {
        outcome(&path.display().to_string())
    }
    fn move_aside(&mut self, path: &Path, _: &Path) -> Result<(), EffectError> {
        outcome(&path.display().to_string())
    }
    fn start_container(&mut self, _: &str, name: &str) -> Result<(), EffectError> {
        outcome(name)
    }
    fn recreate_container(
        &mut self,
        _: &str,
        name: &str,
        _: &str,
        _: &BTreeMap<String, String>,
        _: Timestamp,
    ) -> Result<(), EffectError> {
        outcome(name)
    }
    fn remove_container(&mut self, _: &str, name: &str) -> Result<(), EffectError> {
        outcome(name)
    }
    fn write_route(&mut self, project: &str, _: &str, _: &str, _: &str) -> Result<(), EffectError> {
        outcome(project)
    }
    fn remove_route(&mut self, project: &str, _: trueup::time::Timestamp) -> Result<(), EffectError> {
        outcome(project)
    }
    fn verdict(&mut self, verdict: &Verdict<'_>) -> Result<(), EffectError> {
        outcome(verdict.deployment)
    }
}

/// How many actions of each shape of [`counted`] are done, and fail.
const DONE: [usize; 10] = [1, 2, 1, 2, 4, 5, 6, 7, 8, 9];
const FAILED: [usize; 10] = [9, 0, 4, 6, 0, 4, 4, 4, 5, 8];
/// How many resumes are left to their worker.
const RACES: usize = 13;

/// A plan after which every counter of the apply, and every count of the plan's summary,
/// holds a different number, so that a count that reads another kind's number shows: the
/// shapes are done [`DONE`] times and fail [`FAILED`] times, some resumes are left to
/// their worker, and two actions are skipped after one on the same thing failed.
fn counted() -> Plan {
    let shapes: [fn(&str) -> Change; 10] = [
        |s| resume(s, "BUILDING"),
        fail,
        |s| link(&format!("/r/{s}/current"), Some("/r/old")),
        |s| link(&format!("/r/{s}/current"), None),
        |s| move_aside(&format!("/r/{s}/current")),
        start,
        recreate,
        remove,
        |_| write_route("d1"),
        |_| remove_route(Some("d1")),
    ];
    let mut actions = Vec::new();
    for (n, shape) in shapes.iter().enumerate() {
        // Routes are named by their project, the others by their subject.
        for i in 0..DONE[n] {
            actions.push(action(&format!("ok{n}-{i}"), shape(&format!("ok{n}-{i}"))));
        }
        for i in 0..FAILED[n] {
            actions.push(action(&format!("fail{n}-{i}"), shape(&format!("fail{n}-{i}"))));
        }
    }
    for i in 0..RACES {
        actions.push(action(&format!("race{i}"), resume(&format!("race{i}"), "BUILDING")));
    }
    actions.push(action("q1", resume("fail-d", "BUILDING")));
    actions.push(action("q1", fail("fail-d")));
    actions.push(action("q2", move_aside("/r/q2/fail")));
    actions.push(action("q2", link("/r/q2/fail", None)));
    Plan { actions, findings: Vec::new(), fingerprint: "0123456789abcdef".into() }
}

#[test]
fn every_kind_is_counted_as_snapshotted() {
    let plan = counted();
    let summary = Summary::of(&plan.actions);
    let report = apply::apply(&plan, &mut Scripted, now(), &mut NoHooks);
    let text = format!(
        "Plan: {}.\n{}\n{}\n",
        summary.line(),
        serde_json::to_string_pretty(&summary).unwrap(),
        serde_json::to_string_pretty(&report.counts).unwrap(),
    );
    snapshot("every_kind_counted", &text);
    // The line the CLI printed with its own format string before the counts came from
    // the kinds' table, filled in by hand with the numbers above.
    assert_eq!(
        report.counts.line(99),
        "Summary: deployments 1 resumed, 2 failed, 14 skipped, 10 errors; \
         symlinks 3 fixed, 99 verified, 4 moved aside, 11 errors; \
         containers 5 started, 6 recreated, 7 removed, 12 errors; \
         routes 8 written, 9 removed, 13 errors; 15 actions skipped in all."
    );
}

#[test]
fn the_apply_json_reads_as_snapshotted() {
    let scratch = crate::scratch::Scratch::new("apply-json");
    let now = "2025-10-02T03:00:00Z";
    let staged = trueup::world::stage::stage_demo(&scratch.join("w"), now.parse().unwrap()).unwrap();
    let out = crate::machine::trueup(&staged, &["apply", "--json", "--now", now]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // The run id is made from the wall clock, and the fingerprint digests the scratch
    // folder's name.
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let text = text
        .replace(doc["run"].as_str().unwrap(), "RUN")
        .replace(doc["fingerprint"].as_str().unwrap(), "FINGERPRINT")
        .replace(&staged.dir.display().to_string(), "DIR");
    snapshot("apply_json", &text);
}

/// An action of `kind` on `subject` (`fail` in it makes [`Scripted`] fail it). The one
/// place a new kind must be added to these tests: the match names every kind.
fn sample(kind: Kind, subject: &str) -> Action {
    let change = match kind {
        Kind::Resume => resume(subject, "BUILDING"),
        Kind::Fail => fail(subject),
        Kind::Relink => link(&format!("/r/{subject}"), Some("/r/old")),
        Kind::NewLink => link(&format!("/r/{subject}"), None),
        Kind::MoveAside => move_aside(&format!("/r/{subject}")),
        Kind::StartContainer => start(subject),
        Kind::RecreateContainer => recreate(subject),
        Kind::RemoveContainer => remove(subject),
        Kind::WriteRoute => write_route("d1"),
        Kind::RemoveRoute => remove_route(Some("d1")),
    };
    action(subject, change)
}

#[test]
fn no_kind_is_forgotten_by_the_plan_or_the_apply() {
    let plan_of = |actions: Vec<Action>| Plan { actions, findings: Vec::new(), fingerprint: String::new() };
    let mut summary_keys = BTreeSet::new();
    let mut counter_keys = BTreeSet::new();
    for &kind in Kind::ALL {
        let ok = sample(kind, "ok");
        assert_eq!(ok.change.kind(), kind, "the sample of {kind:?} is of another kind");
        let plan = plan_of(vec![ok.clone()]);

        // The text plan shows its symbol and verb.
        let text = plan::render_text(&plan, now(), plan::Verbosity::Brief);
        let shown = format!("{:>3} {:<10} ", kind.symbol(), kind.verb());
        assert!(text.contains(&shown), "{kind:?} is not shown as `{shown}`:\n{text}");

        // The JSON summary counts it under its key, and nothing else.
        let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan, now())).unwrap();
        let summary = json["summary"].as_object().unwrap();
        for (key, n) in summary {
            let want = u64::from(key == kind.planned().key);
            assert_eq!(n.as_u64(), Some(want), "{kind:?}: summary `{key}`");
        }
        assert!(Summary::of(&plan.actions).line().ends_with(kind.planned().one), "{kind:?}");
        summary_keys.insert(kind.planned().key);

        // An apply counts it done under its counter, failed under its group's, skipped
        // in the total (and its group's own counter, if the group has one).
        let failing = sample(kind, "fail");
        let blocked = Action { project: failing.project.clone(), ..sample(kind, "fail") };
        let report = apply::apply(&plan_of(vec![ok, failing, blocked]), &mut Scripted, now(), &mut NoHooks);
        let statuses: Vec<&str> = report
            .outcomes
            .iter()
            .map(|o| match o.status {
                apply::Status::Done => "done",
                apply::Status::Failed(_) => "failed",
                apply::Status::Skipped(_) => "skipped",
            })
            .collect();
        assert_eq!(statuses, ["done", "failed", "skipped"], "{kind:?}");
        let counts: BTreeMap<&str, usize> = report.counts.iter().collect();
        assert_eq!(counts.get(kind.done().key), Some(&1), "{kind:?} is not counted done");
        assert_eq!(counts.get(kind.group().errors()), Some(&1), "{kind:?} is not counted failed");
        let group_skipped = kind.group().skipped().map(|t| t.key);
        for (key, n) in &counts {
            let want = [kind.done().key, kind.group().errors(), "errors", "skipped"].contains(key)
                || group_skipped == Some(*key);
            assert_eq!(*n, usize::from(want), "{kind:?}: counter `{key}`");
        }
        counter_keys.extend([kind.done().key, kind.group().errors()].into_iter().chain(group_skipped));
    }
    // Every key of the JSON belongs to some kind: none is left over from a kind removed.
    let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan_of(Vec::new()), now())).unwrap();
    let listed: BTreeSet<&str> = json["summary"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(listed, summary_keys);
    let listed: BTreeSet<&str> = apply::Counts::default().iter().map(|(k, _)| k).collect();
    counter_keys.extend(["errors", "skipped"]);
    assert_eq!(listed, counter_keys);
}
