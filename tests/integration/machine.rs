//! The real machine against the model: every plan fixture is staged for real (a SQLite
//! file, folders and symlinks, route files in a scratch folder), `trueup plan --json` runs
//! as a process against it, and its actions must be the model's actions for the same
//! world. Then `trueup apply` runs, and a second `trueup plan --detailed-exitcode` must
//! find nothing to do. This checks the observer, the CLI, the planner and the real
//! effects together, case by case.

use std::path::Path;
use std::process::{Command, Output};

use trueup::plan;
use trueup::spec;
use trueup::world::fixture;
use trueup::world::stage::{Staged, stage};

use crate::scratch::Scratch;

/// Runs the `trueup` binary against a staged world, to completion: the one caller of the
/// CLI here.
#[track_caller]
pub fn trueup(staged: &Staged, args: &[&str]) -> Output {
    trueup_command(staged, args).output().unwrap()
}

/// The `trueup` command line against a staged world, not started yet: for tests that
/// need the process itself (to kill it, or to start two at once).
pub fn trueup_command(staged: &Staged, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trueup"));
    command
        .arg("--db")
        .arg(&staged.db)
        .arg("--root")
        .arg(&staged.root)
        .arg("--routes-dir")
        .arg(&staged.routes_dir)
        .args(args);
    command
}

fn actions_json(stdout: &[u8]) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    doc["actions"].clone()
}

/// Fixtures of worlds the store itself refuses to hold, so they cannot be staged.
const UNSTORABLE: &[&str] = &["0052_duplicate_deployment_id.yaml"];

#[test]
fn real_plans_match_the_model_for_every_fixture() {
    let spec = spec::default_spec();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    fixtures.sort();
    assert!(fixtures.len() >= 30);
    for path in fixtures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let fx = fixture::load(&name, &source).unwrap();
        let scratch = Scratch::new("stage");
        let staged = stage(&fx.world, &scratch.join("w"), fx.now);
        if UNSTORABLE.contains(&name.as_str()) {
            let err = staged.expect_err("the store must refuse this world");
            assert!(format!("{err:?}").contains("UNIQUE constraint failed"), "{name}: {err:?}");
            continue;
        }
        let staged = staged.unwrap();
        let out = trueup(&staged, &["plan", "--json", "--now", &fx.now.to_string()]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let model = plan::plan(&spec, &staged.rebase_world(&fx.world), fx.now);
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

#[test]
fn the_demo_repairs_its_world_and_reads_well() {
    let scratch = Scratch::new("demo");
    let dir = scratch.join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_trueup"))
        .args(["demo", "--now", "2025-10-02T03:00:00Z", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap().replace(&dir.display().to_string(), "DIR");
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let again = text.split("== 4.").nth(1).expect("the demo plans a second time");
    assert!(again.contains("No changes."), "the second plan is not empty:\n{again}");
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("demo", text);
    });
}
