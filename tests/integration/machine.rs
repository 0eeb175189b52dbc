//! The real machine against the model: every plan fixture is staged for real (a SQLite
//! file, folders and symlinks, route files in a scratch folder), `trueup plan --json` runs
//! as a process against it, and its actions must be the model's actions for the same
//! world. Then `trueup apply` runs, and a second `trueup plan --detailed-exitcode` must
//! find nothing to do. This checks the observer, the CLI, the planner and the real
//! effects together, case by case.

use std::path::Path;
use std::process::{Command, Output};

use trueup::model::Node;
use trueup::plan;
use trueup::spec;
use trueup::store::Store;
use trueup::world::fixture;
use trueup::world::observe::{ObserveConfig, observe};
use trueup::world::stage::{Staged, stage};

use crate::scratch::Scratch;
use crate::support::Trueup;

/// Runs the `trueup` binary against a staged world, to completion: the one caller of the
/// CLI here.
#[track_caller]
pub fn trueup(staged: &Staged, args: &[&str]) -> Output {
    trueup_command(staged, args).output().unwrap()
}

/// The `trueup` command line against a staged world, not started yet: for tests that
/// need the process itself (to kill it, or to start two at once).
pub fn trueup_command(staged: &Staged, args: &[&str]) -> Command {
    crate::support::Trueup::new(args).staged(staged).command()
}

fn actions_json(stdout: &[u8]) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    doc["actions"].clone()
}

/// Fixtures of worlds the store itself refuses to hold, so they cannot be staged.
const UNSTORABLE: &[&str] = &["0052_duplicate_deployment_id.yaml"];

#[test]
fn real_plans_match_the_model_for_every_fixture() {
    // Run again without openat2 or threads too (`seccomp.rs`): then checks the filter.
    crate::seccomp::check_denied();
    let spec = spec::Specs::builtin();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    fixtures.sort();
    assert!(fixtures.len() >= 30);
    for path in fixtures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let fx = fixture::load(&name, &source).unwrap();
        let scratch = Scratch::new("stage");
        if plan::plan(&spec, &fx.world, fx.now).errors().next().is_some() {
            wrong_configuration_changes_nothing(&name, &fx, &spec, &scratch);
            continue;
        }
        let staged = stage(&fx.world, &scratch.join("w"), fx.now);
        if UNSTORABLE.contains(&name.as_str()) {
            let err = staged.expect_err("the store must refuse this world");
            assert!(format!("{err:?}").contains("UNIQUE constraint failed"), "{name}: {err:?}");
            continue;
        }
        let staged = staged.unwrap();
        let out = trueup(&staged, &["plan", "--json", "--now", &fx.now.to_string()]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let model = plan::plan(&spec, &staged.rebase_world(&fx.world, &spec), fx.now);
        let model_json: serde_json::Value = serde_json::from_str(&plan::render_json(&model, fx.now)).unwrap();
        assert_eq!(actions_json(&out.stdout), model_json["actions"], "{name}: the real plan differs from the model");

        let now = fx.now.to_string();
        let applied = trueup(&staged, &["apply", "--now", &now]);
        let said = String::from_utf8_lossy(&applied.stdout);
        assert!(applied.status.success(), "{name}: apply failed:\n{said}{}", String::from_utf8_lossy(&applied.stderr));
        let again = trueup(&staged, &["plan", "--detailed-exitcode", "--now", &now]);
        let said = String::from_utf8_lossy(&again.stdout);
        assert_eq!(again.status.code(), Some(0), "{name}: the plan after apply is not empty:\n{said}");
    }
}

/// A fixture whose configuration is wrong: staged as the fixture says (its root or
/// routes folder removed, or a file), `plan` must exit 1 naming each problem on stderr,
/// and `apply` must exit 1 and change no file and no row. `/` as the root cannot be
/// staged: `tests/integration/config.rs` runs it against the real `/`.
fn wrong_configuration_changes_nothing(name: &str, fx: &fixture::Fixture, spec: &spec::Specs, scratch: &Scratch) {
    let world = &fx.world;
    if world.root.parent().is_none() {
        return;
    }
    // Staged with its root as a folder, then made what the fixture says.
    let mut as_staged = world.clone();
    as_staged.files.remove(&world.root);
    let staged = &stage(&as_staged, &scratch.join("w"), fx.now).unwrap();
    let model = plan::plan(spec, &staged.rebase_world(world, spec), fx.now);
    assert!(model.errors().next().is_some(), "{name}: staged, the configuration is no longer wrong");
    match world.files.get(&world.root) {
        Some(trueup::model::Node::Dir) => {}
        Some(_) => {
            std::fs::remove_dir_all(&staged.root).unwrap();
            std::fs::write(&staged.root, "not a folder\n").unwrap();
        }
        None => std::fs::remove_dir_all(&staged.root).unwrap(),
    }
    if world.routes_folder_missing {
        std::fs::remove_dir_all(&staged.routes_dir).unwrap();
    }
    let now = fx.now.to_string();
    let before = crate::support::machine_state(staged);
    let planned = crate::support::Trueup::new(["plan", "--now", &now]).staged(staged).code(1).run();
    for error in model.errors() {
        assert!(
            planned.stderr.contains(&error.message),
            "{name}: `plan` does not say {:?}:\n{}",
            error.message,
            planned.stderr
        );
    }
    let applied = crate::support::Trueup::new(["apply", "--now", &now]).staged(staged).code(1).run();
    assert!(
        applied.stderr.contains("the configuration looks wrong, so nothing was changed"),
        "{name}: {}",
        applied.stderr
    );
    assert_eq!(crate::support::machine_state(staged), before, "{name}: a refused apply changed something");
}

#[test]
fn the_demo_repairs_its_world_and_reads_well() {
    let scratch = Scratch::new("demo");
    let dir = scratch.join("demo");
    let out = Trueup::new(["demo", "--now", "2025-10-02T03:00:00Z", "--dir"]).arg(&dir).run();
    let text = out.stdout.replace(&dir.display().to_string(), "DIR");
    let again = text.split("== 4.").nth(1).expect("the demo plans a second time");
    assert!(again.contains("No changes."), "the second plan is not empty:\n{again}");
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("demo", text);
    });
}

/// Makes a folder immutable (`chattr +i`) until dropped, so that creating anything in it
/// fails even for root: a real, deterministic failure of an effect.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Immutable {
        let out =
            Command::new("chattr").arg("+i").arg(dir).output().expect("chattr (e2fsprogs) is needed for this test");
        assert!(out.status.success(), "chattr +i failed: {}", String::from_utf8_lossy(&out.stderr));
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Two projects whose `current` is missing; the tests make p1's folder immutable, so its
/// link cannot be made.
const TWO_MISSING_LINKS: &str = r#"
description: "a link that cannot be made on one project, a missing link on another"
now: 2025-10-02T12:00:00Z
root: /var/www
projects: [ { id: p1 }, { id: p2 } ]
deployments:
  - { id: a1, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: b1, project: p2, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
files:
  /var/www/p1/deployments/a1/public/index.html: file
  /var/www/webroot/p1: { symlink: /var/www/p1/current/public }
  /var/www/p2/deployments/b1/public/index.html: file
  /var/www/webroot/p2: { symlink: /var/www/p2/current/public }
"#;

#[test]
fn one_failing_action_does_not_stop_the_others() {
    // p1's `current` is missing and its project folder is immutable, so the link cannot be
    // made; p2's `current` is missing too and must be repaired all the same.
    let (_scratch, staged, now) = staged_yaml("partial", TWO_MISSING_LINKS);
    let frozen = Immutable::new(&staged.root.join("p1"));
    let out = trueup(&staged, &["apply", "--now", &now.to_string()]);
    drop(frozen);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("FAILED  p1: link"), "{said}");
    assert!(said.contains("Operation not permitted"), "the failure does not say why:\n{said}");
    assert!(said.contains("done    p2: link"), "{said}");
    assert!(said.contains("symlinks 1 fixed, 2 verified, 0 moved aside, 1 errors;"), "{said}");
    assert_eq!(std::fs::read_link(staged.root.join("p2/current")).unwrap(), staged.root.join("p2/deployments/b1"));
}

#[test]
fn route_files_trueup_did_not_write_survive_apply() {
    let (_scratch, staged, now) = staged_fixture("0037_stale_route_file.yaml");
    let foreign =
        [("middlewares.yaml", "http:\n  middlewares: {}\n"), ("tls.yml", "tls: {}\n"), ("p9.yaml", "http: {}\n")];
    for (name, text) in foreign {
        std::fs::write(staged.routes_dir.join(name), text).unwrap();
    }
    let out = trueup(&staged, &["apply", "--now", &now.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("done    gone: route gone"), "the stale route trueup wrote is removed:\n{said}");
    assert!(!staged.routes_dir.join("gone.yaml").exists());
    for (name, text) in foreign {
        assert_eq!(std::fs::read_to_string(staged.routes_dir.join(name)).unwrap(), text, "{name} was touched");
    }
}

/// A world staged for real in a scratch folder (kept alive by the returned `Scratch`),
/// from YAML in the fixture format, and its instant.
pub fn staged_yaml(label: &str, yaml: &str) -> (Scratch, Staged, trueup::time::Timestamp) {
    let fx = fixture::load(label, yaml).unwrap();
    let scratch = Scratch::new(label);
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    (scratch, staged, fx.now)
}

/// A fixture of `fixtures/plan/`, staged for real.
pub fn staged_fixture(name: &str) -> (Scratch, Staged, trueup::time::Timestamp) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan").join(name));
    staged_yaml(name, &text.unwrap())
}

#[test]
fn relative_paths_on_the_command_line_make_working_links() {
    let (scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    let now = now.to_string();
    let relative = |args: &[&str]| {
        Trueup::new(["--db", "state.db", "--root", "root", "--routes-dir", "routes"])
            .dir(scratch.join("w"))
            .args(args)
            .now(&now)
    };
    relative(&["apply"]).run();
    let index = std::fs::read_to_string(staged.root.join("webroot/p1/index.html")).unwrap();
    assert!(index.contains("deployments/d0/public/index.html"), "the repaired link leads to the release: {index}");
    relative(&["plan", "--detailed-exitcode"]).run();
}

#[test]
fn the_real_plan_repairs_exactly_the_damage_made() {
    // The demo world, staged for real, with its damage known by construction (see
    // `src/world/demo.yaml`): each expected action is written out by hand here, not
    // derived from the planner.
    let scratch = Scratch::new("damage");
    let now = "2025-10-02T03:00:00Z";
    let staged = trueup::world::stage::stage_demo(&scratch.join("w"), now.parse().unwrap()).unwrap();
    let out = trueup(&staged, &["plan", "--json", "--now", now]);
    assert!(out.status.success());
    let root = staged.root.display().to_string();
    let actions: Vec<String> = actions_json(&out.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let target = ["deployment", "path", "to_phase"]
                .iter()
                .filter_map(|k| a[*k].as_str())
                .map(|v| v.replace(&root, "ROOT"))
                .collect::<Vec<_>>()
                .join(" ");
            format!("{} {} {target}", a["project"].as_str().unwrap(), a["kind"].as_str().unwrap())
        })
        .collect();
    let expected = [
        "api resume a2 BUILDING",            // build cut off, its repository still there
        "blog link ROOT/blog/current",       // `current` left on the previous release b1
        "blog link ROOT/webroot/blog",       // webroot link missing
        "blog write_route b2",               // route still on b1
        "docs resume o2 QUEUED",             // queued 40 minutes, nobody picked it up
        "docs link ROOT/docs/current",       // `current` dangling (o0 does not exist)
        "oldsite remove_route x9",           // route file of a project that is gone
        "shop fail s2 FAILED",               // its upload is gone
        "shop move_aside ROOT/shop/current", // a real folder where `current` belongs
        "shop link ROOT/shop/current",
        "wiki resume w2 UPDATING_ROUTES", // links already switched: continue
    ];
    assert_eq!(actions, expected);
}

/// Seen from the year 3000, d2 has been stuck for hours on its last attempt and its
/// worker's claim lapsed, so the plan fails it and rolls `current` back to d1. By the
/// wall clock the claim is live: the store refuses the verdict.
const REFUSED_VERDICT: &str = r#"
description: "a verdict refused by a live claim"
now: 3000-01-01T00:00:00Z
root: /var/www
projects: [ { id: p1 } ]
deployments:
  - { id: d1, project: p1, type: upload, phase: ACTIVE, finished_at: 2999-12-30T09:00:00Z }
  - { id: d2, project: p1, type: upload, phase: CREATING_SYMLINKS, phase_updated_at: 2999-12-31T20:00:00Z, attempts: 3, owner: { owner: worker-7, until: 2999-12-31T23:00:00Z } }
files:
  /var/www/p1/deployments/d1/public/index.html: file
  /var/www/p1/deployments/d2/public/index.html: file
  /var/www/p1/current: { symlink: /var/www/p1/deployments/d2 }
  /var/www/webroot/p1: { symlink: /var/www/p1/current/public }
"#;

#[test]
fn a_refused_verdict_leaves_its_project_alone() {
    // The rollback that depended on the refused verdict must not happen either.
    let (_scratch, staged, now) = staged_yaml("refused", REFUSED_VERDICT);
    let planned = trueup(&staged, &["plan", "--now", &now.to_string()]);
    let planned = String::from_utf8_lossy(&planned.stdout).into_owned();
    assert!(planned.contains("x fail") && planned.contains("~ link"), "the plan fails d2 and relinks:\n{planned}");
    let out = trueup(&staged, &["apply", "--now", &now.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "a worker keeping its deployment is not an error:\n{said}");
    assert!(said.contains("skipped p1: fail deployment d2") && said.contains("held by `worker-7`"), "{said}");
    assert!(said.contains("skipped p1: link") && said.contains("did not go through"), "{said}");
    assert!(said.contains("0 errors; 2 actions skipped in all."), "{said}");
    assert_eq!(std::fs::read_link(staged.root.join("p1/current")).unwrap(), staged.root.join("p1/deployments/d2"));
}

#[test]
fn skipped_actions_are_journaled_as_skipped_and_leave_no_run_open() {
    let (_scratch, staged, now) = staged_yaml("skipped", REFUSED_VERDICT);
    let now = now.to_string();
    let out = trueup(&staged, &["apply", "--json", "--now", &now]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<(String, Option<String>)> = doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["status"]["status"].as_str().unwrap().to_owned(), o["status"]["why"].as_str().map(str::to_owned)))
        .collect();
    assert!(outcomes.iter().filter(|(s, _)| s == "skipped").count() >= 2, "{outcomes:?}");

    // The database is up to date, so opening it writes nothing.
    let (store, _) = Store::open(&staged.db).unwrap();
    let journal: Vec<(String, Option<String>)> = store
        .journal(doc["run"].as_str().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| (e.status.as_str().to_owned(), e.error))
        .collect();
    assert_eq!(journal, outcomes, "each action is journaled as it ended, a skip with its why");
    assert_eq!(store.open_runs().unwrap(), vec![], "skipped actions ended: the run is closed");
    drop(store);

    let status = trueup(&staged, &["status", "--now", &now]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("interrupted"), "status sees no interrupted apply");
    let again = trueup(&staged, &["apply", "--now", &now]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success() && !said.contains("interrupted"), "the next apply closes no run:\n{said}");
}

#[test]
fn status_detailed_exitcode_says_whether_anything_needs_repair() {
    // Stuck deployments and a wrong `current`: 2 until an apply repairs them, then 0.
    let (_scratch, staged, now) = staged_fixture("0045_many_stuck_after_reboot.yaml");
    let now = now.to_string();
    let status = |code| Trueup::new(["status", "--detailed-exitcode"]).staged(&staged).now(&now).code(code);
    let out = status(2).run();
    assert!(out.stdout.contains("STUCK"), "{}", out.stdout);
    status(2).arg("--json").run();
    Trueup::new(["status"]).staged(&staged).now(&now).run();
    Trueup::new(["apply"]).staged(&staged).now(&now).run();
    status(0).run();
}

#[test]
fn an_apply_that_waits_for_the_lease_says_so_on_stderr() {
    let (_scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    // Another apply holds the lease for a minute from now (by the real clock).
    let (store, _) = trueup::store::Store::open(&staged.db).unwrap();
    let lease = store
        .acquire_lease("apply-elsewhere", trueup::time::clock::now(), trueup::time::Duration::from_secs(60))
        .unwrap();
    let out = Trueup::new(["apply", "--lock-timeout", "1s"]).staged(&staged).now(&now.to_string()).code(1).run();
    assert!(out.stderr.contains("Waiting for the apply lease: `apply-elsewhere` holds it until"), "{}", out.stderr);
    assert!(out.stderr.contains("up to `--lock-timeout` 1s"), "{}", out.stderr);
    store.release_lease(&lease).unwrap();
    // No wait, no word of it.
    let out = Trueup::new(["apply"]).staged(&staged).now(&now.to_string()).run();
    assert!(!out.stderr.contains("Waiting"), "{}", out.stderr);
}

#[test]
fn quiet_says_only_what_needs_a_person() {
    // Two missing links; p1's folder is immutable, so its link fails and p2's is made.
    let (_scratch, staged, now) = staged_yaml("quiet", TWO_MISSING_LINKS);
    let now = now.to_string();
    let plan = Trueup::new(["plan", "-q"]).staged(&staged).now(&now).run().stdout;
    assert_eq!(plan, format!("trueup will make 2 changes at {now}.\n\nPlan: 2 symlink repairs.\n"));
    let frozen = Immutable::new(&staged.root.join("p1"));
    let out = Trueup::new(["apply", "--quiet"]).staged(&staged).now(&now).code(1).run();
    drop(frozen);
    assert!(out.stdout.contains("FAILED  p1: link"), "{}", out.stdout);
    assert!(!out.stdout.contains("done    p2"), "a done action is not said: {}", out.stdout);
    assert!(!out.stdout.contains("because"), "no list of changes: {}", out.stdout);
    assert!(out.stdout.contains("Summary: "), "{}", out.stdout);
}

#[test]
fn a_project_folder_that_links_out_of_the_root_is_never_read_or_written() {
    // `ROOT/p1` links to a folder outside the root that holds what looks like a project:
    // a dangling `current` and a release. Following the link would "repair" it.
    let yaml = r#"
description: "a project folder that is a symlink out of the root, beside a sound project"
now: 2025-10-02T12:00:00Z
root: /var/www
projects: [ { id: p1 }, { id: p2 } ]
deployments:
  - { id: d0, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: e0, project: p2, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
files:
  /var/www/p2/deployments/e0/public/index.html: file
  /var/www/p2/current: { symlink: /var/www/p2/deployments/e0 }
  /var/www/webroot/p2: { symlink: /var/www/p2/current/public }
"#;
    let (scratch, staged, now) = staged_yaml("outside", yaml);
    let outside = scratch.join("outside-p1");
    std::fs::create_dir_all(outside.join("deployments/d0/public")).unwrap();
    std::os::unix::fs::symlink("deployments/gone", outside.join("current")).unwrap();
    std::os::unix::fs::symlink(&outside, staged.root.join("p1")).unwrap();
    let before = crate::support::tree(&outside);

    // Nothing below the link is observed: the link itself is all the world holds of p1.
    let (store, _) = Store::open_read_only(&staged.db).unwrap();
    let cfg = ObserveConfig { root: staged.root.clone(), routes_dir: staged.routes_dir.clone() };
    let world = observe(&store, &spec::default_spec().into(), &cfg).unwrap();
    let p1 = staged.root.join("p1");
    assert_eq!(world.files.get(&p1), Some(&Node::Symlink(outside.clone())));
    let below: Vec<_> = world.files.keys().filter(|p| p.starts_with(&p1) && **p != p1).collect();
    assert_eq!(below, Vec::<&std::path::PathBuf>::new(), "observed through the link out of the root");
    drop(store);

    let json = Trueup::new(["plan", "--json"]).staged(&staged).now(&now.to_string()).run().json();
    let actions = json["actions"].as_array().unwrap();
    assert!(actions.iter().all(|a| a["project"] != "p1"), "an action on p1: {json}");
    let findings = json["findings"].to_string();
    assert!(findings.contains("is never followed, and the project is left alone"), "{findings}");
    Trueup::new(["apply"]).staged(&staged).now(&now.to_string()).run();
    assert_eq!(crate::support::tree(&outside), before, "the folder outside the root changed");
    assert_eq!(std::fs::read_link(outside.join("current")).unwrap(), Path::new("deployments/gone"));
}
