//! Issue 8: a wrong configuration never destroys. A staged machine is run with a typo'd
//! `--root`, `/` as the root, an empty root, or a routes folder that does not exist:
//! `plan` exits 1 naming the flag, and `apply` exits 1 and changes no file and no row.

use std::ffi::OsString;
use std::path::Path;

use trueup::world::fixture;
use trueup::world::stage::{Staged, stage};

use crate::scratch::Scratch;
use crate::support::{Ran, Trueup, machine_state};

/// A machine an apply would change for good if it believed a wrong root: a stuck
/// deployment that fails when its release folder looks gone, and a route file of a
/// project that is gone.
const WORLD: &str = r#"
description: "issue 8: a machine staged for the configuration tests"
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1, services: [ { id: web, primary: true } ] }
deployments:
  - { id: d0, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z, metadata: { upstream: "http://127.0.0.1:8080" } }
  - { id: d1, project: p1, type: upload, phase: HEALTH_CHECK, phase_updated_at: 2025-10-02T10:00:00Z, metadata: { upstream: "http://127.0.0.1:8081" } }
files:
  /var/www/p1/deployments/d0/public/index.html: file
  /var/www/p1/deployments/d1/public/index.html: file
  /var/www/p1/current: { symlink: /var/www/p1/deployments/d0 }
  /var/www/webroot/p1: { symlink: /var/www/p1/current/public }
routes:
  p1: { deployment: d0, upstream: "http://127.0.0.1:8080" }
  gone: { deployment: x1, upstream: "http://127.0.0.1:8090" }
"#;

const NOW: &str = "2025-10-02T12:00:00Z";

fn staged(label: &str) -> (Scratch, Staged) {
    let fx = fixture::load(label, WORLD).unwrap();
    let scratch = Scratch::new(label);
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    (scratch, staged)
}

/// `trueup --db DB --root ROOT --routes-dir ROUTES ARGS... --now NOW`, expecting `code`.
#[track_caller]
fn run(staged: &Staged, root: &Path, routes: &Path, args: &[&str], code: i32) -> Ran {
    let mut all: Vec<OsString> = vec![
        "--db".into(),
        staged.db.clone().into(),
        "--root".into(),
        root.into(),
        "--routes-dir".into(),
        routes.into(),
    ];
    all.extend(args.iter().map(OsString::from));
    Trueup::new(all).now(NOW).code(code).run()
}

/// `plan`, `apply` and `status` with this root and routes folder all exit 1 saying `problem`,
/// and nothing changes, neither on the staged machine nor at `root`.
#[track_caller]
fn refused(staged: &Staged, root: &Path, routes: &Path, problem: &str) {
    // A plan saved with the right configuration is refused with the wrong one too.
    let saved = staged.db.with_file_name("saved-plan.json");
    let saved = saved.to_str().unwrap();
    run(staged, &staged.root, &staged.routes_dir, &["plan", "--out", saved, "--force"], 0);
    let before = (machine_state(staged), crate::support::tree(routes), root.exists());
    let commands =
        [&["plan"][..], &["plan", "--json"], &["apply"], &["apply", "--dry-run"], &["status"], &["status", "--json"]];
    for args in commands {
        let out = run(staged, root, routes, args, 1);
        assert!(out.stderr.contains(problem), "`{args:?}` does not say {problem:?}:\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "`{args:?}` printed a plan:\n{}", out.stdout);
    }
    for apply in [&["apply"][..], &["apply", saved]] {
        let out = run(staged, root, routes, apply, 1);
        assert!(
            out.stderr.contains("the configuration looks wrong, so nothing was changed"),
            "{apply:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(problem), "`{apply:?}` does not say {problem:?}:\n{}", out.stderr);
    }
    let after = (machine_state(staged), crate::support::tree(routes), root.exists());
    assert_eq!(after, before, "a refused apply changed something");
}

#[test]
fn a_typo_in_the_root_changes_nothing() {
    let (_scratch, staged) = staged("typo-root");
    let typo = staged.root.with_file_name("roots");
    refused(&staged, &typo, &staged.routes_dir, "does not exist (a typo?): check `--root`");
    assert!(!typo.exists(), "the typo'd root was created");
}

#[test]
fn a_root_that_is_a_file_changes_nothing() {
    let (_scratch, staged) = staged("file-root");
    refused(&staged, &staged.db, &staged.routes_dir, "is not a folder: check `--root`");
}

#[test]
fn the_file_system_root_as_root_changes_nothing() {
    let (_scratch, staged) = staged("slash-root");
    refused(&staged, Path::new("/"), &staged.routes_dir, "the managed root is `/`, the whole file system");
}

#[test]
fn an_empty_root_with_live_releases_changes_nothing() {
    let (scratch, staged) = staged("empty-root");
    let empty = scratch.join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(&staged, &empty, &staged.routes_dir, "is empty, yet the state database has 1 live release");
    assert_eq!(crate::support::tree(&empty).len(), 0, "something was created in the empty root");
}

#[test]
fn a_missing_routes_folder_changes_nothing() {
    let (_scratch, staged) = staged("no-routes");
    let typo = staged.routes_dir.with_file_name("route");
    refused(&staged, &staged.root, &typo, "the routes folder does not exist: check `--routes-dir`");
    assert!(!typo.exists(), "the typo'd routes folder was created");
}

#[test]
fn the_right_configuration_does_change_this_machine() {
    // The control: the same machine with its own flags is repaired, so each refusal
    // above is the configuration's doing.
    let (_scratch, staged) = staged("right");
    let before = machine_state(&staged);
    let out = run(&staged, &staged.root, &staged.routes_dir, &["apply"], 0);
    assert!(out.stdout.contains("route gone"), "{}", out.stdout);
    assert_ne!(machine_state(&staged), before);
    // The removed route file is kept under a name Traefik does not load, and the next
    // plan does not see it.
    let kept = staged.routes_dir.join("gone.yaml.trueup-removed-20251002T120000Z");
    assert!(std::fs::read_to_string(&kept).unwrap().contains("x1"), "the removed route file is not kept");
    assert!(!staged.routes_dir.join("gone.yaml").exists());
    run(&staged, &staged.root, &staged.routes_dir, &["plan", "--detailed-exitcode"], 0);
}

#[test]
fn a_root_that_is_a_link_to_a_folder_works() {
    // `/var/www` -> `/srv/www` is a common layout: the root link itself is followed.
    let (scratch, staged) = staged("linked-root");
    let link = scratch.join("www");
    std::os::unix::fs::symlink(&staged.root, &link).unwrap();
    let direct = run(&staged, &staged.root, &staged.routes_dir, &["plan", "--json"], 0).json();
    let linked = run(&staged, &link, &staged.routes_dir, &["plan", "--json"], 0).json();
    let shown =
        |doc: &serde_json::Value, root: &Path| doc["actions"].to_string().replace(&root.display().to_string(), "ROOT");
    assert_eq!(shown(&linked, &link), shown(&direct, &staged.root), "the plan through the link differs");
    assert!(!linked["actions"].to_string().contains("is gone"), "{linked}");
    run(&staged, &link, &staged.routes_dir, &["apply"], 0);
    run(&staged, &link, &staged.routes_dir, &["plan", "--detailed-exitcode"], 0);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the root link was replaced");
}

#[test]
fn a_wrong_database_removes_no_route_file() {
    // The database of another machine: it knows a project, but none of these routes'.
    let (_scratch, staged) = staged("wrong-db");
    let other = r#"
description: "another machine's database"
now: 2025-10-02T12:00:00Z
root: /var/www
projects: [ { id: elsewhere } ]
files: { /var/www: dir }
"#;
    let fx = fixture::load("other.yaml", other).unwrap();
    let other_scratch = Scratch::new("other-db");
    let other = stage(&fx.world, &other_scratch.join("w"), fx.now).unwrap();
    let routes = crate::support::tree(&staged.routes_dir);
    assert_eq!(routes.len(), 2, "{routes:?}");
    let with_db = |args: &[&str], code| {
        let mut all: Vec<OsString> = vec!["--db".into(), other.db.clone().into(), "--root".into()];
        all.extend([staged.root.clone().into(), "--routes-dir".into(), staged.routes_dir.clone().into()]);
        all.extend(args.iter().map(OsString::from));
        Trueup::new(all).now(NOW).code(code).run()
    };
    let planned = with_db(&["plan"], 0);
    assert!(planned.stdout.contains("knows none of the projects of the 2 route files"), "{}", planned.stdout);
    with_db(&["apply"], 0);
    assert_eq!(crate::support::tree(&staged.routes_dir), routes, "a route file was touched");
}
