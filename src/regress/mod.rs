//! Spec-driven regression tests: cases with their expected results, run against a spec.
//!
//! Two kinds of case, each one YAML file:
//! - a **plan case** is a fixture world ([`crate::world::fixture`]); what it must plan
//!   (actions and findings) lives in an expectation file beside its folder
//!   ([`expectation_path`]), written by `trueup test --update`, never by hand-editing the
//!   fixture, whose comments a YAML writer would lose;
//! - a **machine case** is a starting state, a list of events and the state expected
//!   after each (optionally the states exited and entered), written by hand.
//!
//! This module loads cases from text, runs them (in parallel, on scoped threads), compares
//! and renders the differences, and writes JUnit XML. It reads no file, writes none and
//! prints nothing: the `test` command finds the files, reads them, writes the new
//! expectations and prints what [`run`] returns.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diag::{self, Diagnostic, Pos};
use crate::machine;
use crate::model::DeploymentType;
use crate::plan::{self, Level, Plan};
use crate::spec::{Guard, Specs};
use crate::world::fixture;

mod diff;
mod junit;

pub use diff::diff_lines;
pub use junit::junit;

/// What a case checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaseKind {
    /// A fixture world and the plan expected for it.
    Plan,
    /// A walk through the machine and the states expected on the way.
    Machine,
}

impl CaseKind {
    /// `plan` or `machine`: the JUnit class name of its cases.
    pub fn name(self) -> &'static str {
        match self {
            CaseKind::Plan => "plan",
            CaseKind::Machine => "machine",
        }
    }
}

/// The kind of case a YAML text holds, from its top-level keys: a world has `now:`, a
/// machine case `events:`. `None` for anything else (a spec, an expectation), which is
/// not a case. The test is on the text, so that a case with broken YAML is still found,
/// and reported.
pub fn kind_of(source: &str) -> Option<CaseKind> {
    let has = |key: &str| source.lines().any(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')));
    if has("events") {
        Some(CaseKind::Machine)
    } else if has("now") {
        Some(CaseKind::Plan)
    } else {
        None
    }
}

/// The expectation file of the plan case at `case`: `DIR/NAME.yaml` has
/// `DIR.expect/NAME.yaml`. It sits in a folder of its own beside the cases' folder, so
/// that a folder of cases holds nothing else (every file of `fixtures/plan/` is a world).
pub fn expectation_path(case: &Path) -> PathBuf {
    let name = case.file_name().map(PathBuf::from).unwrap_or_default();
    let dir = case.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = if dir == Path::new(".") {
        std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
    } else {
        dir.to_owned()
    };
    let folder = dir
        .file_name()
        .map(|n| format!("{}{EXPECT_SUFFIX}", n.to_string_lossy()))
        .unwrap_or_else(|| EXPECT_SUFFIX.to_owned());
    dir.with_file_name(folder).join(name)
}

/// The suffix of a folder of expectations: never searched for cases.
pub const EXPECT_SUFFIX: &str = ".expect";

/// True when a case under `path` must be refused: a folder named `err`, or ending in
/// `-err` (`fixtures/plan-err/`), holds inputs that must not load.
pub fn must_be_refused(path: &Path) -> bool {
    path.parent().into_iter().flat_map(Path::components).any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name == "err" || name.ends_with("-err")
    })
}

/// One case to run, as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The case's path as shown: its name in every report.
    pub name: String,
    /// Its text.
    pub source: String,
    /// A plan case's expectation file (its path as shown, and its text), when there is one.
    pub expectation: Option<(String, String)>,
    /// It must be refused ([`must_be_refused`]).
    pub must_be_refused: bool,
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The case's name ([`Input::name`]).
    pub name: String,
    /// Its kind, when it was recognised.
    pub kind: Option<CaseKind>,
    /// Passed, failed or malformed.
    pub status: Status,
    /// For a plan case that loaded: its actual plan as an expectation file, for `--update`.
    pub actual: Option<String>,
}

/// The verdict on one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// What happened is what was expected.
    Passed,
    /// It ran, and something differs.
    Failed {
        /// One line: what differs.
        message: String,
        /// Expected against actual, line by line (`-` expected, `+` actual).
        diff: String,
    },
    /// The case (or its expectation) cannot be read: its diagnostics, rendered with file,
    /// line and column.
    Malformed {
        /// One line: which file.
        message: String,
        /// The rendered diagnostics.
        diagnostics: String,
    },
}

impl Outcome {
    /// True when it passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }
}

/// Runs every case against `specs`, on up to `threads` threads, and returns their
/// outcomes in the order of `inputs`.
pub fn run(specs: &Specs, inputs: &[Input], threads: usize) -> Vec<Outcome> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Outcome>> = vec![None; inputs.len()];
    let workers = threads.clamp(1, inputs.len().max(1));
    let done: Vec<Vec<(usize, Outcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                // Without a thread to be had, the first takes every case.
                crate::threads::spawn(scope, || {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(input) = inputs.get(i) else { break };
                        mine.push((i, run_one(specs, input)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.outcome().expect("a case never panics: every failure is an outcome")).collect()
    });
    for (i, outcome) in done.into_iter().flatten() {
        results[i] = Some(outcome);
    }
    results.into_iter().map(|o| o.expect("every case was taken by one worker")).collect()
}

/// Runs one case.
pub fn run_one(specs: &Specs, input: &Input) -> Outcome {
    let kind = kind_of(&input.source);
    let outcome = |status, actual| Outcome { name: input.name.clone(), kind, status, actual };
    let malformed = |file: &str, source: &str, d: &[Diagnostic]| Status::Malformed {
        message: format!("`{file}` cannot be read"),
        diagnostics: diag::render(file, source, d),
    };
    let loaded = match kind {
        Some(CaseKind::Plan) => fixture::load(&input.name, &input.source).map(Loaded::Plan),
        Some(CaseKind::Machine) => load_machine(&input.source).map(Loaded::Machine),
        None => Err(vec![Diagnostic::error(
            Pos { line: 1, column: 1 },
            "not a case: a plan case has a top-level `now:`, a machine case `events:`",
        )]),
    };
    if input.must_be_refused {
        let status = match loaded {
            Err(_) => Status::Passed,
            Ok(_) => Status::Failed {
                message: "it loads, but a case in an `err` folder must be refused".to_owned(),
                diff: String::new(),
            },
        };
        return outcome(status, None);
    }
    match loaded {
        Err(d) => outcome(malformed(&input.name, &input.source, &d), None),
        Ok(Loaded::Plan(fx)) => {
            let plan = plan::plan(specs, &fx.world, fx.now);
            let actual = Expected::of(&plan);
            let text = actual.to_yaml(&input.name);
            let status = match &input.expectation {
                None => Status::Failed {
                    message: "no expectation yet: `trueup test --update` writes it".to_owned(),
                    diff: diff_lines(&[], &actual.lines(None)),
                },
                Some((file, source)) => match load_expected(source) {
                    Err(d) => malformed(file, source, &d),
                    Ok(expected) => compare_plan(&expected, &actual, file),
                },
            };
            outcome(status, Some(text))
        }
        Ok(Loaded::Machine(case)) => outcome(run_machine(specs, &case, &input.name, &input.source), None),
    }
}

enum Loaded {
    Plan(fixture::Fixture),
    Machine(MachineCase),
}

// Plan cases

/// A plan as an expectation: its actions and findings in a form a person reads and edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The actions, in the plan's order.
    #[serde(default)]
    pub actions: Vec<ExpectedAction>,
    /// The findings, in the plan's order.
    #[serde(default)]
    pub findings: Vec<ExpectedFinding>,
}

/// One expected action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAction {
    /// The `kind` of the JSON plan: `resume`, `fail`, `link`, `move_aside`, ...
    pub kind: String,
    /// The project.
    pub project: String,
    /// What changes, as the text plan says it: `deployment d1: BUILDING -> FAILED`.
    pub subject: String,
    /// Why; when left out, any reason matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One expected finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFinding {
    /// `error`, `warning` or `note`.
    pub level: Level,
    /// The project; empty for the whole world.
    #[serde(default)]
    pub project: String,
    /// What was seen.
    pub message: String,
}

impl Expected {
    /// The expectation a plan meets exactly, reasons included.
    pub fn of(plan: &Plan) -> Self {
        let actions = plan
            .actions
            .iter()
            .map(|a| {
                let json = serde_json::to_value(&a.change).expect("a change is plain data and always serializes");
                let kind = json["kind"].as_str().expect("a change serializes with its `kind` tag").to_owned();
                let (_, _, subject) = plan::describe(&a.change, &a.project);
                ExpectedAction { kind, project: a.project.clone(), subject, reason: Some(a.reason.clone()) }
            })
            .collect();
        let findings = plan
            .findings
            .iter()
            .map(|f| ExpectedFinding { level: f.level, project: f.project.clone(), message: f.message.clone() })
            .collect();
        Expected { actions, findings }
    }

    /// The expectation file's text, headed by a comment naming its case.
    pub fn to_yaml(&self, case: &str) -> String {
        let body = serde_saphyr::to_string(self).expect("an expectation is plain data and always serializes");
        format!("# The plan expected for {case}, written by `trueup test --update`.\n{body}")
    }

    /// One line per action and finding, for a diff. An action's reason is shown when
    /// `reasons` says so for it (by its index here): the expectation's own, or, for the
    /// actual plan, when the expected action it matches has one.
    fn lines(&self, reasons: Option<&dyn Fn(&ExpectedAction) -> bool>) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.actions {
            out.push(format!("{} [{}] {}", a.kind, a.project, a.subject));
            if let Some(reason) = &a.reason
                && reasons.is_none_or(|shown| shown(a))
            {
                out.push(format!("    because {reason}"));
            }
        }
        for f in &self.findings {
            let level = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
                Level::Note => "note",
            };
            let project = if f.project.is_empty() { String::new() } else { format!("[{}] ", f.project) };
            out.push(format!("finding {level}: {project}{}", f.message));
        }
        out
    }
}

/// Reads an expectation file.
///
/// # Errors
///
/// Its problems, each with its position.
pub fn load_expected(source: &str) -> Result<Expected, Vec<Diagnostic>> {
    serde_saphyr::from_str(source).map_err(|e| vec![fixture::yaml_diagnostic(&e)])
}

fn compare_plan(expected: &Expected, actual: &Expected, file: &str) -> Status {
    // An expected action without a reason matches any reason: the actual reason of an
    // action with the same kind, project and subject is then left out of the comparison.
    let key = |a: &ExpectedAction| (a.kind.clone(), a.project.clone(), a.subject.clone());
    let unreasoned: std::collections::BTreeSet<_> =
        expected.actions.iter().filter(|a| a.reason.is_none()).map(key).collect();
    let shown = |a: &ExpectedAction| !unreasoned.contains(&key(a));
    let want = expected.lines(None);
    let got = actual.lines(Some(&shown));
    if want == got {
        return Status::Passed;
    }
    let count = |e: &Expected| (e.actions.len(), e.findings.len());
    let ((ea, ef), (aa, af)) = (count(expected), count(actual));
    // The counts are news only when they changed.
    let counts = if (ea, ef) == (aa, af) {
        String::new()
    } else {
        format!(
            ": expected {ea} action{}, {ef} finding{}; planned {aa} action{}, {af} finding{}",
            plural(ea),
            plural(ef),
            plural(aa),
            plural(af)
        )
    };
    Status::Failed { message: format!("the plan differs from `{file}`{counts}"), diff: diff_lines(&want, &got) }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// Machine cases

/// A machine case: where the machine starts, and each event with what must follow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineCase {
    /// What the case shows, one line.
    pub description: String,
    /// The deployment type whose spec runs it, when `--spec TYPE=FILE` gives a type its
    /// own; `upload` when left out (the spec for every type, unless `upload` has its own).
    #[serde(default, rename = "type")]
    pub kind: Option<DeploymentType>,
    /// The state the machine rests in first.
    pub start: String,
    /// The answer of each guard the walk meets; a guard not listed fails the step.
    #[serde(default)]
    pub guards: indexmap::IndexMap<String, bool>,
    /// The events, in order.
    pub events: Vec<MachineStep>,
}

/// One event and what must follow it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineStep {
    /// The event sent.
    pub event: String,
    /// The state the machine rests in afterwards.
    pub state: String,
    /// The states exited, innermost first; not checked when left out.
    #[serde(default)]
    pub exits: Option<Vec<String>>,
    /// The states entered, outermost first; not checked when left out.
    #[serde(default)]
    pub entries: Option<Vec<String>>,
}

fn load_machine(source: &str) -> Result<MachineCase, Vec<Diagnostic>> {
    serde_saphyr::from_str(source).map_err(|e| vec![fixture::yaml_diagnostic(&e)])
}

fn run_machine(specs: &Specs, case: &MachineCase, name: &str, source: &str) -> Status {
    let spec = specs.of_type(case.kind.unwrap_or(DeploymentType::Upload));
    let Some(start) = spec.find(&case.start) else {
        let names: Vec<&str> = spec.states.iter().map(|s| s.name.as_str()).collect();
        let d = Diagnostic::error(value_pos(source, "start"), format!("the spec has no state `{}`", case.start))
            .suggest(&case.start, names);
        return Status::Malformed {
            message: format!("`{name}` cannot be read"),
            diagnostics: diag::render(name, source, &[d]),
        };
    };
    let missing = std::cell::RefCell::new(Vec::new());
    let guards = |g: Guard| {
        case.guards.get(g.name()).copied().unwrap_or_else(|| {
            missing.borrow_mut().push(g.name());
            false
        })
    };
    // Guards the spec does not know are named when the case is read, not on the way.
    let known: Vec<&str> = Guard::ALL.iter().map(|g| g.name()).collect();
    if let Some(unknown) = case.guards.keys().find(|k| !known.contains(&k.as_str())) {
        let d = Diagnostic::error(key_pos(source, unknown), format!("unknown guard `{unknown}`"))
            .suggest(unknown, known.iter().copied());
        return Status::Malformed {
            message: format!("`{name}` cannot be read"),
            diagnostics: diag::render(name, source, &[d]),
        };
    }
    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut state = start;
    let mut expected_from = case.start.as_str();
    let mut first_difference = None;
    for (n, step) in case.events.iter().enumerate() {
        let before = (want.len(), got.len());
        want.push(format!("{expected_from} --{}--> {}", step.event, step.state));
        expected_from = &step.state;
        if let Some(exits) = &step.exits {
            want.push(format!("    exit:  {}", exits.join(", ")));
        }
        if let Some(entries) = &step.entries {
            want.push(format!("    enter: {}", entries.join(", ")));
        }
        missing.borrow_mut().clear();
        let head = |to: &str| format!("{} --{}--> {to}", spec.name(state), step.event);
        let taken = machine::step(spec, state, &step.event, &guards);
        let unanswered = missing.borrow().clone();
        let ended = match taken {
            // A guard the case does not answer must not pick a branch silently.
            _ if !unanswered.is_empty() => {
                let names = unanswered.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ");
                got.push(head(&format!("error: the case's `guards` does not answer {names}")));
                true
            }
            Ok(t) => {
                let names =
                    |ids: &[crate::spec::StateId]| ids.iter().map(|&i| spec.name(i)).collect::<Vec<_>>().join(", ");
                got.push(head(spec.name(t.target)));
                if step.exits.is_some() {
                    got.push(format!("    exit:  {}", names(&t.exits)));
                }
                if step.entries.is_some() {
                    got.push(format!("    enter: {}", names(&t.entries)));
                }
                state = t.target;
                false
            }
            Err(e) => {
                got.push(head(&format!("error: {e}")));
                true
            }
        };
        if first_difference.is_none() && want[before.0..] != got[before.1..] {
            first_difference = Some((n + 1, step.event.as_str()));
        }
        if ended {
            // The rest of the walk is expected, and did not happen.
            for step in &case.events[n + 1..] {
                want.push(format!("{expected_from} --{}--> {}", step.event, step.state));
                expected_from = &step.state;
            }
            break;
        }
    }
    match first_difference {
        None => Status::Passed,
        Some((n, event)) => Status::Failed {
            message: format!("the machine walks otherwise from step {n} (`{event}`) on"),
            diff: diff_lines(&want, &got),
        },
    }
}

/// The position of the first `key:` anywhere, for a key found after parsing.
fn key_pos(source: &str, key: &str) -> Pos {
    for (i, line) in source.lines().enumerate() {
        if let Some(col) = line.find(&format!("{key}:")) {
            return Pos { line: i as u32 + 1, column: col as u32 + 1 };
        }
    }
    Pos::default()
}

/// The position of the value of the first top-level `key:`.
fn value_pos(source: &str, key: &str) -> Pos {
    for (i, line) in source.lines().enumerate() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let skipped = rest.len() - rest.trim_start().len();
            return Pos { line: i as u32 + 1, column: (key.len() + 1 + skipped + 1) as u32 };
        }
    }
    Pos::default()
}

/// `N passed, N failed`: the closing line of a run.
pub fn summary(outcomes: &[Outcome]) -> String {
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    format!("{passed} passed, {} failed", outcomes.len() - passed)
}

/// One failing case as a person reads it: a heading line naming the case and what went
/// wrong, then the diff or the diagnostics, indented. Empty for a case that passed.
pub fn render_failure(outcome: &Outcome) -> String {
    let (message, detail) = match &outcome.status {
        Status::Passed => return String::new(),
        Status::Failed { message, diff } => (message, diff),
        Status::Malformed { message, diagnostics } => (message, diagnostics),
    };
    let mut out = format!("FAIL {}: {message}\n", outcome.name);
    for line in detail.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_told_by_their_top_level_keys() {
        assert_eq!(kind_of("description: x\nnow: 2025-10-02T12:00:00Z\n"), Some(CaseKind::Plan));
        assert_eq!(kind_of("start: QUEUED\nevents:\n  - { event: start, state: X }\n"), Some(CaseKind::Machine));
        assert_eq!(kind_of("version: 2\nstates: {}\n"), None);
        assert_eq!(kind_of("  now: indented is not top level\n"), None);
    }

    #[test]
    fn expectations_live_in_a_folder_beside_the_cases() {
        assert_eq!(
            expectation_path(Path::new("fixtures/plan/0006_x.yaml")),
            Path::new("fixtures/plan.expect/0006_x.yaml")
        );
        assert_eq!(expectation_path(Path::new("/a/b.yaml")), Path::new("/a.expect/b.yaml"));
        assert!(must_be_refused(Path::new("fixtures/plan-err/0001.yaml")));
        assert!(must_be_refused(Path::new("x/err/0001.yaml")));
        assert!(!must_be_refused(Path::new("fixtures/plan/0001_err.yaml")));
    }
}
