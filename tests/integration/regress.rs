//! `trueup test` from outside: the repository's own cases pass, a changed spec fails the
//! cases it changes and `--update` accepts it without touching a fixture, malformed cases
//! are reported and do not stop the others, the machine cases walk every transition of
//! the default spec, and the JUnit report reads back in an independent reader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use trueup::regress::MachineCase;
use trueup::spec;

use crate::scratch::Scratch;
use crate::support::{Trueup, tree};

fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the files of `from` (not its subfolders) into `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// `N passed, M failed`, the last line of a text report, as `(N, M)`.
#[track_caller]
fn counts(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let parse = |s: &str, word: &str| s.trim().strip_suffix(word).unwrap().trim().parse::<usize>().unwrap();
    let (passed, failed) = last.split_once(", ").unwrap_or_else(|| panic!("the last line is not a count: {last:?}"));
    (parse(passed, "passed"), parse(failed, "failed"))
}

#[test]
fn the_repository_cases_all_pass() {
    let out = Trueup::new(["test", "fixtures/"]).run();
    let plan_cases = std::fs::read_dir(top().join("fixtures/plan")).unwrap().count();
    let (passed, failed) = counts(&out.stdout);
    assert_eq!(failed, 0, "{}", out.stdout);
    assert!(passed > plan_cases + 15, "only {passed} cases ran:\n{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "a passing suite prints its count alone:\n{}", out.stdout);
    // Without a path, `fixtures/` is searched.
    assert_eq!(Trueup::new(["test"]).run().stdout, out.stdout);
}

/// The default spec with `BUILDING` failing instead of restarting when it is stuck.
fn spec_with_building_failing() -> String {
    let default = std::fs::read_to_string(top().join("specs/deployment.yaml")).unwrap();
    let rule = "rule: restart_phase\n          requires: [source_present]\n          description: Builds are re-run from the source, which must still be there";
    assert!(default.contains(rule), "BUILDING's resume rule moved in specs/deployment.yaml");
    default.replace(rule, "rule: fail\n          reason: a build cut off by a crash needs a person")
}

#[test]
fn a_changed_resume_rule_fails_the_cases_it_changes_and_update_accepts_it() {
    let scratch = Scratch::new("regress-spec");
    copy_folder(&top().join("fixtures/plan"), &scratch.join("cases/plan"));
    copy_folder(&top().join("fixtures/plan.expect"), &scratch.join("cases/plan.expect"));
    std::fs::write(scratch.join("my.yaml"), spec_with_building_failing()).unwrap();
    let cases_before = tree(&scratch.join("cases/plan"));
    let expect_before = tree(&scratch.join("cases/plan.expect"));

    // `--spec FILE` is for every type: image deployments keep their own spec beside it.
    let image = format!("image={}", top().join("specs/image.yaml").display());
    let run = |args: &[&str], code: i32| {
        Trueup::new(args).dir(&scratch.0).args(["--color", "never", "--spec", &image]).code(code).run()
    };
    let out = run(&["test", "--spec", "my.yaml", "cases/plan"], 1);
    let stdout = &out.stdout;
    let (passed, failed) = counts(stdout);
    assert!(failed >= 1 && passed > 50, "{stdout}");
    // The case, the project and the action that changed, expected against actual.
    assert!(stdout.contains("FAIL cases/plan/0005_building_restart.yaml: the plan differs"), "{stdout}");
    assert!(stdout.contains("\n    - resume [p1] deployment d1: restart BUILDING (attempt 1)\n"), "{stdout}");
    assert!(stdout.contains("\n    + fail [p1] deployment d1: BUILDING -> FAILED\n"), "{stdout}");
    assert!(stdout.contains("\n    +     because stuck in BUILDING since"), "{stdout}");
    let failing: BTreeSet<&str> =
        stdout.lines().filter_map(|l| l.strip_prefix("FAIL cases/plan/")).filter_map(|l| l.split(':').next()).collect();
    assert_eq!(failing.len(), failed, "one heading line per failing case:\n{stdout}");
    // Only cases with a stuck BUILDING deployment change.
    for name in &failing {
        let case = std::fs::read_to_string(scratch.join("cases/plan").join(name)).unwrap();
        assert!(case.contains("phase: BUILDING"), "{name} has no BUILDING deployment, yet its plan changed:\n{stdout}");
    }

    let updated = run(&["test", "--spec", "my.yaml", "--update", "cases/plan"], 0);
    assert_eq!(counts(&updated.stdout), (passed + failed, 0), "{}", updated.stdout);
    assert_eq!(updated.stderr.lines().filter(|l| l.starts_with("updated ")).count(), failed, "{}", updated.stderr);
    let again = run(&["test", "--spec", "my.yaml", "cases/plan"], 0);
    assert_eq!(counts(&again.stdout), (passed + failed, 0), "{}", again.stdout);

    assert_eq!(tree(&scratch.join("cases/plan")), cases_before, "--update changed a fixture file");
    let expect_after = tree(&scratch.join("cases/plan.expect"));
    let changed: BTreeSet<String> = expect_after
        .iter()
        .filter(|(p, digest)| expect_before.get(*p) != Some(digest))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert_eq!(changed, failing.iter().map(|n| n.to_string()).collect(), "--update rewrote other expectations");
    let rewritten = std::fs::read_to_string(scratch.join("cases/plan.expect/0005_building_restart.yaml")).unwrap();
    assert!(rewritten.contains("a build cut off by a crash needs a person"), "{rewritten}");
}

#[test]
fn a_malformed_case_is_reported_with_its_position_and_the_others_run() {
    let scratch = Scratch::new("regress-malformed");
    let cases = scratch.join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::create_dir_all(scratch.join("cases.expect")).unwrap();
    for name in ["0005_building_restart.yaml", "0006_building_upload_gone.yaml"] {
        std::fs::copy(top().join("fixtures/plan").join(name), cases.join(name)).unwrap();
        std::fs::copy(top().join("fixtures/plan.expect").join(name), scratch.join("cases.expect").join(name)).unwrap();
    }
    std::fs::copy(top().join("fixtures/machine/0015_building_retry.yaml"), cases.join("0007_retry.yaml")).unwrap();
    std::fs::write(
        cases.join("0001_bad_world.yaml"),
        "description: x\nnow: 2025-10-02T12:00:00Z\nroot: /var/www\nprojcts: []\n",
    )
    .unwrap();
    std::fs::write(
        cases.join("0002_bad_walk.yaml"),
        "description: x\nstart: QUEUED\nevents:\n  - { event: start, stat: X }\n",
    )
    .unwrap();
    // A broken expectation is the expectation file's problem, reported at its position.
    std::fs::write(
        scratch.join("cases.expect/0006_building_upload_gone.yaml"),
        "actions:\n  - { kind: fail, projet: p1 }\n",
    )
    .unwrap();

    let out = Trueup::new(["test", "cases"]).dir(&scratch.0).code(1).run();
    let stdout = &out.stdout;
    assert_eq!(counts(stdout), (2, 3), "{stdout}");
    assert!(
        stdout.contains("FAIL cases/0001_bad_world.yaml: `cases/0001_bad_world.yaml` cannot be read\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    error: unknown field `projcts`"), "{stdout}");
    assert!(stdout.contains("     --> cases/0001_bad_world.yaml:4:1\n"), "{stdout}");
    assert!(stdout.contains("     --> cases/0002_bad_walk.yaml:4:21\n"), "{stdout}");
    assert!(stdout.contains("= help: did you mean `state`?"), "{stdout}");
    assert!(stdout.contains("     --> cases.expect/0006_building_upload_gone.yaml:2:"), "{stdout}");
    assert!(!stdout.contains("0005_building_restart") && !stdout.contains("0007_retry"), "{stdout}");

    // `--filter` runs only the cases whose path matches.
    let out = Trueup::new(["test", "cases", "--filter", "retry"]).dir(&scratch.0).run();
    assert_eq!(out.stdout, "1 passed, 0 failed\n");
    Trueup::new(["test", "cases", "--filter", "nothing-matches"]).dir(&scratch.0).code(1).run();
}

/// Every transition of the default spec, as `(state, event, guard, target)`, is taken by
/// some machine case under `fixtures/machine/`, with both branches of a guard.
#[test]
fn machine_cases_walk_every_transition_of_the_default_spec() {
    let spec = spec::default_spec();
    let mut all = BTreeSet::new();
    for id in spec.ids() {
        for t in &spec.state(id).on {
            all.insert((
                spec.name(id).to_owned(),
                t.event.clone(),
                t.guard.map(|g| g.name()),
                spec.name(t.target).to_owned(),
            ));
        }
    }
    let mut taken = BTreeSet::new();
    let dir = top().join("fixtures/machine");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in &files {
        let case: MachineCase = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let mut state = spec.find(&case.start).unwrap();
        for step in &case.events {
            // The transition taken is the first, innermost first, whose guard the case
            // answers true (or that has none): what `machine::step` picks.
            let t = trueup::machine::step(&spec, state, &step.event, &|g| case.guards[g.name()]).unwrap();
            let def = spec
                .state(t.source)
                .on
                .iter()
                .find(|d| d.event == step.event && d.guard.is_none_or(|g| case.guards[g.name()]))
                .unwrap();
            taken.insert((
                spec.name(t.source).to_owned(),
                def.event.clone(),
                def.guard.map(|g| g.name()),
                spec.name(def.target).to_owned(),
            ));
            state = t.target;
        }
    }
    let missing: Vec<_> = all.difference(&taken).collect();
    assert!(missing.is_empty(), "transitions no machine case takes: {missing:?}");
    let out = Trueup::new(["test", "fixtures/machine"]).run();
    assert_eq!(out.stdout, format!("{} passed, 0 failed\n", files.len()));
}

/// The Python of the tools venv (`.ci/install` creates it), or a failure that says how
/// to create it: this test never skips.
fn tools_python() -> PathBuf {
    let python = top().join(".venv-tools/bin/python");
    let has_junitparser = std::process::Command::new(&python)
        .args(["-c", "import junitparser"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_junitparser,
        "this test reads JUnit XML with the `junitparser` package of a venv in `.venv-tools`, which is missing; \
         run `.ci/install`, or: python3 -m venv .venv-tools && .venv-tools/bin/pip install junitparser"
    );
    python
}

const READ_JUNIT: &str = r#"
import sys
from junitparser import JUnitXml, Failure, Error
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    print(f"suite {suite.name} tests={suite.tests} failures={suite.failures} errors={suite.errors}")
    for case in suite:
        for result in case.result:
            kind = "failure" if isinstance(result, Failure) else "error" if isinstance(result, Error) else "other"
            print(f"{kind} {case.name} [{case.classname}]: {result.message}")
            print(f"text: {result.text}")
"#;

#[test]
fn junit_reads_back_in_junitparser() {
    let python = tools_python();
    let scratch = Scratch::new("regress-junit");
    let cases = scratch.join("cases");
    copy_folder(&top().join("fixtures/plan"), &cases);
    copy_folder(&top().join("fixtures/plan.expect"), &scratch.join("cases.expect"));
    // One case whose expectation no longer holds: d1 is expected to be resumed.
    let expect = scratch.join("cases.expect/0006_building_upload_gone.yaml");
    let text = std::fs::read_to_string(&expect).unwrap();
    std::fs::write(&expect, text.replace("- kind: fail", "- kind: resume")).unwrap();
    let total = std::fs::read_dir(&cases).unwrap().count();

    let out = Trueup::new(["test", "cases", "--format", "junit", "--out", "report.xml"]).dir(&scratch.0).code(1).run();
    assert_eq!(counts(&out.stdout), (total - 1, 1), "the text report still goes to stdout:\n{}", out.stdout);
    let read =
        std::process::Command::new(&python).arg("-c").arg(READ_JUNIT).arg(scratch.join("report.xml")).output().unwrap();
    let said = String::from_utf8(read.stdout).unwrap();
    assert!(read.status.success(), "junitparser refused the report:\n{}", String::from_utf8_lossy(&read.stderr));
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some(format!("suite trueup test tests={total} failures=1 errors=0").as_str()), "{said}");
    assert_eq!(
        lines.next(),
        Some(
            "failure cases/0006_building_upload_gone.yaml [plan]: the plan differs from \
             `cases.expect/0006_building_upload_gone.yaml`"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "text: - resume [p1] deployment d1: BUILDING -> FAILED\n+ fail [p1] deployment d1: BUILDING -> FAILED\n"
        ),
        "{said}"
    );

    // Without `--out`, the XML is standard output and the count goes to stderr.
    let out = Trueup::new(["test", "cases", "--format", "junit"]).dir(&scratch.0).code(1).run();
    assert!(out.stdout.starts_with("<?xml"), "{}", out.stdout);
    assert_eq!(out.stderr, format!("{} passed, 1 failed\nerror: 1 of {total} cases failed\n", total - 1));
}

#[test]
fn failures_are_coloured_on_request_and_the_help_has_examples() {
    let scratch = Scratch::new("regress-color");
    std::fs::create_dir_all(scratch.join("c")).unwrap();
    std::fs::write(
        scratch.join("c/walk.yaml"),
        "description: x\nstart: QUEUED\nevents:\n  - { event: done, state: BUILDING }\n",
    )
    .unwrap();
    let out = Trueup::new(["test", "c", "--color", "always"]).dir(&scratch.0).code(1).run();
    assert!(out.stdout.contains("\x1b[31m    - QUEUED --done--> BUILDING\x1b[0m\n"), "{}", out.stdout);
    assert!(out.stdout.contains("\x1b[32m    + QUEUED --done--> PULLING_SOURCE\x1b[0m\n"), "{}", out.stdout);
    assert!(out.stdout.ends_with("\n0 passed, 1 failed\n"), "{}", out.stdout);
    let plain = Trueup::new(["test", "c"]).dir(&scratch.0).code(1).run();
    assert!(!plain.stdout.contains('\x1b'), "no colour in a pipe: {}", plain.stdout);

    let help = Trueup::new(["test", "--help"]).run().stdout;
    assert!(help.contains("Examples:\n  trueup test\n  trueup test --spec my.yaml fixtures/plan\n"), "{help}");
}
