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
    let plan = plan::plan(&spec::Specs::builtin(), &fixture.world, fixture.now);
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
            let text = plan::render_text(&plan, fixture.now, plan::Verbosity::Brief);
            insta::with_settings!({ description => fixture.description.as_str(), omit_expression => true }, {
                insta::assert_snapshot!(text);
            });
        });
    });
}

#[test]
fn status_reads_like_the_plan() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots/status");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for name in [
            "0017_live_owner",
            "0019_clock_skew",
            "0028_current_real_directory",
            "0044_current_outside_root",
            "0045_many_stuck_after_reboot",
        ] {
            let (fixture, _) = check(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/plan/{name}.yaml")));
            let status = plan::status(&spec::Specs::builtin(), &fixture.world, fixture.now);
            insta::assert_snapshot!(name, plan::render_status(&status, plan::Verbosity::Brief));
        }
    });
}

#[test]
fn planning_is_deterministic_and_stable_under_reload() {
    insta::glob!("../../fixtures/plan", "*.yaml", |path| {
        let (fixture, first) = check(path);
        let second = plan::plan(&spec::Specs::builtin(), &fixture.world, fixture.now);
        assert_eq!(first, second);
        assert_eq!(plan::render_json(&first, fixture.now), plan::render_json(&second, fixture.now));
    });
}

mod properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use trueup::model::{Deployment, DeploymentType, Layout, Node, Project, Source, inside, valid_id};
    use trueup::plan::{self, Change, LinkHealth};
    use trueup::spec;
    use trueup::world::fixture;

    use crate::worlds;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn fixtures_round_trip_through_yaml(case in worlds::case()) {
            let text = fixture::to_yaml(&case.0);
            let back = fixture::load("generated.yaml", &text).map_err(|d| TestCaseError::fail(trueup::diag::render("generated.yaml", &text, &d)))?;
            prop_assert_eq!(back, case.0);
        }

        /// From 2,000 projects on the view and the rules share their work among threads,
        /// in chunks: a world grown past that by idle projects (inactive, each with one
        /// failed deployment, which plan to nothing) plans exactly as it did on one thread.
        /// The idle projects sort among the others and come after them in world order;
        /// their deployments come between the others', a few hundred before each, so that
        /// those are judged in different chunks.
        #[test]
        fn a_world_plans_alike_split_among_threads(case in worlds::case()) {
            let spec = spec::default_spec().into();
            let limits = plan::Limits::default();
            let small = &case.0.world;
            let mut large = small.clone();
            let idle: Vec<Project> = (0..2_000)
                .map(|k| Project { id: format!("p{}-idle{k:04}", k % 5), active: false, domain: None, services: Vec::new() })
                .collect();
            let mut failed = idle.iter().map(|p| Deployment {
                id: format!("{}-d", p.id),
                project: p.id.clone(),
                service: None,
                kind: DeploymentType::Upload,
                phase: "FAILED".into(),
                phase_updated_at: None,
                heartbeat_at: None,
                attempts: 0,
                finished_at: Some(case.0.now),
                source: Source::default(),
                metadata: Default::default(),
                owner: None,
                created_at: None,
            });
            large.projects.extend(idle.iter().cloned());
            large.deployments.clear();
            for d in &small.deployments {
                large.deployments.extend(failed.by_ref().take(300));
                large.deployments.push(d.clone());
            }
            large.deployments.extend(failed);
            let alone = plan::plan_unsealed(&spec, small, case.0.now, &limits);
            prop_assert_eq!(plan::plan_unsealed(&spec, &large, case.0.now, &limits), alone);
        }

        #[test]
        fn plans_are_deterministic_and_stay_in_bounds(case in worlds::case()) {
            let spec = spec::default_spec().into();
            let w = &case.0.world;
            let now = case.0.now;
            let first = plan::plan(&spec, w, now);
            prop_assert_eq!(&first, &plan::plan(&spec, &w.clone(), now));

            let held: BTreeSet<&str> = w.deployments.iter().filter(|d| d.held_at(now)).map(|d| d.id.as_str()).collect();
            let held_projects: BTreeSet<&str> = w.deployments.iter().filter(|d| d.held_at(now)).map(|d| d.project.as_str()).collect();
            let managed: BTreeSet<&str> = w.containers.iter().flatten().filter(|c| c.managed()).map(|c| c.id.as_str()).collect();
            for action in &first.actions {
                prop_assert!(valid_id(&action.project), "action on invalid project id: {:?}", action);
                match &action.change {
                    Change::Resume { deployment, .. } | Change::Fail { deployment, .. } => {
                        let d = w.deployments.iter().find(|d| &d.id == deployment && d.project == action.project);
                        prop_assert!(d.is_some(), "unknown deployment in {:?}", action);
                        prop_assert!(!held.contains(deployment.as_str()) || !d.unwrap().held_at(now), "held deployment touched: {:?}", action);
                    }
                    Change::Link { path, target, .. } => {
                        prop_assert!(inside(&w.root, path) && inside(&w.root, target), "link leaves the root: {:?}", action);
                        // A held project's links are its worker's, unless they serve
                        // nothing: a missing or dangling link is pointed at the live
                        // release all the same (issue 8: the site is never left down).
                        let down = matches!(plan::health(w, path, target), LinkHealth::Missing | LinkHealth::Dangling(_));
                        prop_assert!(!held_projects.contains(action.project.as_str()) || down, "held project's link touched: {:?}", action);
                        let layout = Layout::new(&w.root, &action.project);
                        if *path == layout.current() {
                            prop_assert_eq!(w.files.get(target), Some(&Node::Dir), "current linked to a missing folder: {:?}", action);
                        } else {
                            prop_assert_eq!(path, &layout.webroot());
                            prop_assert_eq!(target, &layout.webroot_target());
                        }
                    }
                    Change::MoveAside { path, to } => {
                        prop_assert!(inside(&w.root, path) && inside(&w.root, to), "move leaves the root: {:?}", action);
                        prop_assert!(!w.files.contains_key(to), "move aside onto an existing path: {:?}", action);
                    }
                    Change::StartContainer { id, .. } | Change::RecreateContainer { id, .. } | Change::RemoveContainer { id, .. } => {
                        prop_assert!(managed.contains(id.as_str()), "unlabelled container touched: {:?}", action);
                    }
                    Change::WriteRoute { .. } | Change::RemoveRoute { .. } => {
                        prop_assert!(!held_projects.contains(action.project.as_str()), "held project's route touched: {:?}", action);
                    }
                }
            }
        }
    }
}

#[test]
fn malformed_fixtures_are_reported_with_their_position() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots/plan-err");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("../../fixtures/plan-err", "*.yaml", |path| {
            let rel = format!("fixtures/plan-err/{}", path.file_name().unwrap().to_string_lossy());
            let out = crate::support::Trueup::new(["simulate", &rel]).code(1).run();
            assert!(out.stdout.is_empty(), "{rel}: a refused fixture prints no plan");
            insta::assert_snapshot!(out.stderr);
        });
    });
}
