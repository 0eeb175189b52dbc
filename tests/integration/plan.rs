//! Fixture worlds to plan snapshots, and properties of the planner.

use std::path::Path;

use trueup::plan::{self, Plan};
use trueup::spec;
use trueup::world::fixture;

/// Loads a fixture and plans it with the default spec: the one caller of the planner here.
#[track_caller]
fn check(path: &Path) -> (fixture::Fixture, Plan) {
    let source = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let fixture = match fixture::load(&name, &source) {
        Ok(f) => f,
        Err(d) => panic!("{}", trueup::diag::render(&name, &source, &d)),
    };
    let plan = plan::plan(&spec::default_spec(), &fixture.world, fixture.now);
    (fixture, plan)
}

#[test]
fn fixtures_plan_as_snapshotted() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots/plan");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("../../fixtures/plan", "*.yaml", |path| {
            let (fixture, plan) = check(path);
            let text = plan::render_text(&plan, fixture.now);
            insta::assert_snapshot!(text, &format!("{}\n", fixture.description));
        });
    });
}

#[test]
fn planning_is_deterministic_and_stable_under_reload() {
    insta::glob!("../../fixtures/plan", "*.yaml", |path| {
        let (fixture, first) = check(path);
        let second = plan::plan(&spec::default_spec(), &fixture.world, fixture.now);
        assert_eq!(first, second);
        assert_eq!(plan::render_json(&first, fixture.now), plan::render_json(&second, fixture.now));
    });
}
