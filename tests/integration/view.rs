//! The one view of a project: `status` and `plan` agree on generated worlds, and a spec
//! whose phases and events are renamed plans exactly like the default, renamed.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use trueup::model::{Layout, World};
use trueup::plan::{self, Change, LinkHealth, Plan};
use trueup::spec::{self, Specs};
use trueup::time::Timestamp;
use trueup::world::fixture;

use crate::support::Trueup;
use crate::worlds;

/// The renames of `fixtures/validate/ok/*_renamed_phases.yaml`: states, then events.
const STATES: [(&str, &str); 11] = [
    ("QUEUED", "WAITING"),
    ("IN_PROGRESS", "WORKING"),
    ("PULLING_SOURCE", "FETCHING"),
    ("BUILDING", "COMPILING"),
    ("COPYING_FILES", "STAGING"),
    ("CREATING_SYMLINKS", "LINKING"),
    ("UPDATING_ROUTES", "ROUTING"),
    ("HEALTH_CHECK", "PROBING"),
    ("ACTIVE", "LIVE"),
    ("FAILED", "BROKEN"),
    ("CANCELLED", "STOPPED"),
];
const EVENTS: [(&str, &str); 4] = [("done", "ok"), ("fail", "abort"), ("retry", "again"), ("cancel", "halt")];

/// The spec with every phase and event of the default renamed.
fn renamed_spec() -> Specs {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/validate/ok");
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_renamed_phases.yaml"))
        .expect("the renamed-phases spec is a validate/ok fixture");
    let source = std::fs::read_to_string(&path).unwrap();
    match spec::load("renamed.yaml", &source) {
        Ok((spec, warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            spec.into()
        }
        Err(d) => panic!("{}", trueup::diag::render("renamed.yaml", &source, &d)),
    }
}

/// The actions and findings of a plan as JSON, the fingerprint left out (the worlds differ
/// in their phase names), and so is the "did you mean" of a phase no spec declares: it
/// depends on how the typo is spelled, which a rename does not carry over.
fn shown(plan: &Plan, now: Timestamp) -> serde_json::Value {
    let mut json: serde_json::Value = serde_json::from_str(&plan::render_json(plan, now)).unwrap();
    json.as_object_mut().unwrap().remove("fingerprint");
    for finding in json["findings"].as_array_mut().unwrap() {
        let message = finding["message"].as_str().unwrap();
        if let (Some(start), Some(end)) = (message.find(" (did you mean `"), message.find("`?)")) {
            finding["message"] = format!("{}{}", &message[..start], &message[end + 3..]).into();
        }
    }
    json
}

/// `text` with each renamed name put back: states as whole words, events where the
/// engine quotes them.
fn named_back(text: &str) -> String {
    let mut out = text.to_owned();
    for (old, new) in STATES {
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(new) {
            let before = rest[..i].chars().next_back();
            let after = rest[i + new.len()..].chars().next();
            let word = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            result.push_str(&rest[..i]);
            result.push_str(if word(before) && word(after) { old } else { new });
            rest = &rest[i + new.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    for (old, new) in EVENTS {
        out = out.replace(&format!("`{new}`"), &format!("`{old}`"));
    }
    out
}

#[test]
fn a_spec_with_renamed_phases_plans_like_the_default_over_every_plan_fixture() {
    let default: Specs = spec::default_spec().into();
    let renamed = renamed_spec();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut compared = 0;
    for path in paths {
        let source = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fx =
            fixture::load(&name, &source).unwrap_or_else(|d| panic!("{}", trueup::diag::render(&name, &source, &d)));
        let mut world: World = fx.world.clone();
        for d in &mut world.deployments {
            if let Some((_, new)) = STATES.iter().find(|(old, _)| *old == d.phase) {
                d.phase = (*new).to_owned();
            }
        }
        let expected = shown(&plan::plan(&default, &fx.world, fx.now), fx.now);
        let actual = shown(&plan::plan(&renamed, &world, fx.now), fx.now);
        let actual: serde_json::Value = serde_json::from_str(&named_back(&actual.to_string())).unwrap();
        assert_eq!(actual, expected, "{name}: the renamed spec plans differently");
        compared += 1;
    }
    assert!(compared > 50, "only {compared} fixtures were compared");
}

#[test]
fn renaming_back_touches_whole_names_only() {
    assert_eq!(
        named_back("stuck in COMPILING, not COMPILING_X; `ok`, ok"),
        "stuck in BUILDING, not COMPILING_X; `done`, ok"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `status` calls a deployment stuck exactly when the plan has a verdict for it, and
    /// shows a project as deploying exactly when the plan leaves its broken links alone;
    /// a missing or dangling `current` is always repaired, never left.
    #[test]
    fn status_agrees_with_the_plan(case in worlds::case()) {
        let specs: Specs = spec::default_spec().into();
        let (w, now) = (&case.0.world, case.0.now);
        let plan = plan::plan(&specs, w, now);
        // A wrong configuration (a generated world without its root) plans nothing, and
        // `status` refuses to read it, as `plan` does: there is nothing to agree on.
        if plan.errors().next().is_some() {
            prop_assert!(plan.actions.is_empty());
            return Ok(());
        }
        let status = plan::status(&specs, w, now);

        let verdicts: BTreeSet<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.change {
                Change::Resume { deployment, .. } | Change::Fail { deployment, .. } => Some(deployment.as_str()),
                _ => None,
            })
            .collect();
        let stuck: BTreeSet<&str> =
            status.unfinished.iter().filter(|d| d.state == "stuck").map(|d| d.id.as_str()).collect();
        prop_assert_eq!(&stuck, &verdicts);
        for d in &status.unfinished {
            prop_assert_eq!(d.verdict.is_some(), d.state == "stuck", "{:?}", d);
        }

        for p in status.projects.iter().filter(|p| p.active) {
            let Some(release) = &p.release else { continue };
            let current = Layout::new(&w.root, &p.id).current();
            if plan::health(w, &current, release) == LinkHealth::Ok {
                continue;
            }
            let relinked = plan.actions.iter().any(|a| {
                a.project == p.id && matches!(&a.change, Change::Link { path, .. } if *path == current)
            });
            // A missing or dangling `current` serves nothing: it is repaired whatever is in
            // flight, so it is never shown as left to a deployment (issue 8).
            let down = matches!(plan::health(w, &current, release), LinkHealth::Missing | LinkHealth::Dangling(_));
            if down {
                prop_assert!(relinked, "a down `current` is repaired: {:?}", p);
                prop_assert!(!matches!(p.current, LinkHealth::Deploying(_)), "{:?}", p);
                // The webroot leads through `current`: it serves nothing either.
                prop_assert_ne!(&p.webroot, &LinkHealth::Ok, "{:?}", p);
            } else {
                prop_assert_eq!(p.deploying.is_some(), !relinked, "{:?}", p);
                prop_assert_eq!(matches!(p.current, LinkHealth::Deploying(_)), p.deploying.is_some(), "{:?}", p);
            }
        }
    }
}

/// A world of `n` healthy projects, each with a deployment building for a minute.
fn busy_world(n: usize, now: Timestamp) -> World {
    use trueup::model::{Deployment, DeploymentType, Node, Project, Route, Source};
    let mut w = World { root: "/var/www".into(), containers: Some(Vec::new()), ..World::default() };
    w.files.insert("/var/www".into(), Node::Dir);
    for i in 0..n {
        let p = format!("p{i:05}");
        let layout = Layout::new(Path::new("/var/www"), &p);
        w.projects.push(Project { id: p.clone(), active: true, domain: None, services: Vec::new() });
        let deployment = |id: &str, phase: &str| Deployment {
            id: format!("{p}-{id}"),
            project: p.clone(),
            service: None,
            kind: DeploymentType::Upload,
            phase: phase.into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts: 0,
            finished_at: None,
            source: Source { file_path: Some(format!("/uploads/{p}.tar.gz").into()), ..Source::default() },
            metadata: [("upstream".to_owned(), "http://127.0.0.1:8080".to_owned())].into(),
            owner: None,
            created_at: None,
        };
        let mut live = deployment("d1", "ACTIVE");
        live.finished_at = Some(Timestamp::from_unix(now.unix() - 86_400));
        let mut building = deployment("d2", "BUILDING");
        building.phase_updated_at = Some(Timestamp::from_unix(now.unix() - 60));
        w.files.insert(layout.release(&live.id).join("public"), Node::Dir);
        w.files.insert(layout.current(), Node::Symlink(layout.release(&live.id)));
        w.files.insert(layout.webroot(), Node::Symlink(layout.webroot_target()));
        w.routes.insert(
            p.clone(),
            Route {
                deployment: Some(live.id.clone()),
                upstream: "http://127.0.0.1:8080".into(),
                domain: Some(format!("{p}.localhost")),
                problem: None,
            },
        );
        w.deployments.extend([live, building]);
    }
    trueup::world::fixture::close_parents(&mut w.files);
    w
}

#[test]
fn ten_thousand_projects_deploying_print_a_plan_that_fits_a_screen() {
    let now: Timestamp = "2025-10-02T12:00:00Z".parse().unwrap();
    let specs: Specs = spec::default_spec().into();
    let world = busy_world(10_000, now);
    let plan = plan::plan(&specs, &world, now);
    assert!(plan.actions.is_empty(), "{:?}", &plan.actions[..1]);
    assert_eq!(plan.findings.iter().filter(|f| f.in_flight.is_some()).count(), 10_000, "JSON keeps every note");
    let brief = plan::render_text(&plan, now, plan::Verbosity::Brief);
    assert_eq!(
        brief,
        "No changes. The world matches its deployments at 2025-10-02T12:00:00Z.\n\n\
         Findings (not changed):\n  note: 10000 deployments in flight, none stuck (`--verbose` lists each)\n"
    );
    let verbose = plan::render_text(&plan, now, plan::Verbosity::Verbose);
    assert_eq!(verbose.lines().count(), 3 + 10_000, "--verbose lists each");
    let status = plan::render_status(&plan::status(&specs, &world, now), plan::Verbosity::Brief);
    assert!(status.contains("\n  10000 deployments in flight, nothing else (`--verbose` lists each)\n"), "{status}");
}

// ---------------------------------------------------------------------------------------
// The command line: a spec per deployment type, and what `--verbose` adds

/// The renamed-phases spec's path, relative to the repository.
fn renamed_path() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/validate/ok");
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_renamed_phases.yaml"))
        .unwrap();
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string()
}

/// A world where an image deployment is stuck in the renamed spec's `COMPILING`.
const IMAGE_IN_COMPILING: &str = r#"description: an image deployment stuck in a phase only the renamed spec declares
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1 }
images: [ "localhost/p1:d1" ]
files: { /var/www: dir }
deployments:
  - { id: d1, project: p1, type: image, phase: COMPILING, phase_updated_at: 2025-10-02T11:00:00Z, source: { image: "localhost/p1:d1" } }
"#;

#[test]
fn a_spec_for_one_deployment_type_drives_only_that_type() {
    let dir = crate::scratch::Scratch::new("spec-per-type");
    let fixture = dir.join("image.yaml");
    std::fs::write(&fixture, IMAGE_IN_COMPILING).unwrap();
    let typed = format!("image={}", renamed_path());

    let out = Trueup::new(["--spec", &typed, "simulate"]).arg(&fixture).run();
    assert!(out.stdout.contains("~ resume     deployment d1: restart COMPILING (attempt 1)"), "{}", out.stdout);
    // The same through the environment, with the default spec named for the rest.
    let both = format!("{typed},specs/deployment.yaml");
    let out = Trueup::new(["simulate"]).arg(&fixture).env("TRUEUP_SPEC", both).run();
    assert!(out.stdout.contains("restart COMPILING"), "{}", out.stdout);
    // Without it, the default machine does not know the phase and leaves it alone.
    let out = Trueup::new(["simulate"]).arg(&fixture).run();
    assert!(out.stdout.contains("phase `COMPILING`, which the spec does not declare"), "{}", out.stdout);

    let out = Trueup::new(["--spec", &typed, "--spec", &typed, "simulate"]).arg(&fixture).code(1).run();
    assert!(out.stderr.contains("two specs for `image` deployments"), "{}", out.stderr);
    let renamed = renamed_path();
    let out =
        Trueup::new(["--spec", &renamed, "--spec", "specs/deployment.yaml", "simulate"]).arg(&fixture).code(1).run();
    assert!(out.stderr.contains("two specs for every deployment type"), "{}", out.stderr);
    let out = Trueup::new(["--spec", "imgae=specs/deployment.yaml", "simulate"]).arg(&fixture).code(1).run();
    assert!(
        out.stderr.contains("`imgae=` is not a deployment type: `--spec TYPE=FILE` takes `upload`, `git`, `image`"),
        "{}",
        out.stderr
    );
}

#[test]
fn verbose_lists_each_deployment_in_flight_and_a_loaded_spec_warns_on_stderr() {
    let fixture = "fixtures/plan/0007_building_not_yet_stuck.yaml";
    let brief = Trueup::new(["simulate", fixture]).now("2025-10-02T12:00:00Z").run();
    assert!(
        brief.stdout.contains("note: 1 deployment in flight, none stuck (`--verbose` lists each)"),
        "{}",
        brief.stdout
    );
    assert!(!brief.stdout.contains("progressed"), "{}", brief.stdout);
    let verbose = Trueup::new(["simulate", "-v", fixture]).run();
    assert!(
        verbose.stdout.contains("is in BUILDING and progressed 20m ago: not stuck before 30m"),
        "{}",
        verbose.stdout
    );
    assert!(!verbose.stdout.contains("in flight, none stuck"), "{}", verbose.stdout);
    let json = Trueup::new(["simulate", "--json", fixture]).run().json();
    assert_eq!(json["findings"][0]["in_flight"], "d1", "{json}");

    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/validate/ok/0006_version_1_warns.yaml");
    let out = Trueup::new(["--spec"]).arg(&v1).arg("simulate").arg(fixture).run();
    assert!(out.stderr.contains("warning: a version-1 spec cannot declare its roles"), "{}", out.stderr);
    assert!(!out.stdout.contains("version-1"), "warnings stay off stdout: {}", out.stdout);
}
