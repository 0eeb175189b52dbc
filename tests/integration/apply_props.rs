//! Properties of [`trueup::plan::plan`] and [`trueup::apply::apply`] together over
//! [`MemoryWorld`] (issue 4), on generated damaged worlds ([`worlds::case`]) with the
//! default spec:
//!
//! - convergence: after apply, a fresh plan has no actions;
//! - applying the same plan twice leaves the world as applying it once;
//! - for every k, and for both a process kill and a power loss between a rename and the
//!   folder's fsync, crashing after k sub-steps and then planning and applying again
//!   reaches the world (and the deployment log) of an uninterrupted run;
//! - nothing outside the root, no unlabelled container, and no deployment held by a live
//!   owner (nor its project's links and route) changes, at any point.
//!
//! Below them, the same properties of `apply` alone over hand-made plans: plan-shaped
//! (per project: deployment, move-aside, links, containers, route) but random, including
//! actions that must fail, which the planner never produces.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use trueup::apply::{NoHooks, Report, Status, apply};
use trueup::model::{Container, ContainerState, Deployment, DeploymentType, Layout, Node, Route, World, labels};
use trueup::plan::{self, Action, Change, Plan};
use trueup::spec::Specs;
use trueup::time::Timestamp;
use trueup::world::effects::{MemoryWorld, aside_path};

use crate::worlds;

const PHASES: [&str; 4] = ["PULLING_SOURCE", "BUILDING", "COPYING_FILES", "CREATING_SYMLINKS"];
const STATES: [ContainerState; 3] = [ContainerState::Running, ContainerState::Exited, ContainerState::Created];

fn now() -> Timestamp {
    "2025-10-02T12:00:00Z".parse().expect("a valid timestamp")
}

/// A world and a plan for it, printed as YAML when a property fails.
#[derive(Clone)]
struct Case {
    world: World,
    plan: Plan,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let world = serde_saphyr::to_string(&self.world).map_err(|_| fmt::Error)?;
        let plan = serde_saphyr::to_string(&self.plan.actions).map_err(|_| fmt::Error)?;
        write!(f, "\n# world\n{world}\n# actions\n{plan}")
    }
}

/// One project's damage and the plan-shaped actions drawn for it.
#[derive(Debug, Clone)]
struct Draw {
    current: u8,
    webroot: u8,
    release_1_present: bool,
    phase: usize,
    attempts: u32,
    containers: Vec<(usize, bool)>,
    route: u8,
    deploy_op: u8,
    wrong_phase: bool,
    aside: bool,
    link_current: u8,
    link_webroot: bool,
    container_ops: Vec<u8>,
    route_op: u8,
}

fn draw() -> impl Strategy<Value = Draw> {
    let world = (
        0..5u8,
        0..3u8,
        any::<bool>(),
        0..3usize,
        0..3u32,
        prop::collection::vec((0..3usize, any::<bool>()), 0..3),
        0..3u8,
    );
    let plan = (
        0..4u8,
        prop::bool::weighted(0.1),
        any::<bool>(),
        0..3u8,
        any::<bool>(),
        prop::collection::vec(0..4u8, 3),
        0..3u8,
    );
    (world, plan).prop_map(|((current, webroot, release_1_present, phase, attempts, containers, route), plan)| {
        let (deploy_op, wrong_phase, aside, link_current, link_webroot, container_ops, route_op) = plan;
        Draw {
            current,
            webroot,
            release_1_present,
            phase,
            attempts,
            containers,
            route,
            deploy_op,
            wrong_phase,
            aside,
            link_current,
            link_webroot,
            container_ops,
            route_op,
        }
    })
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(draw(), 1..4), prop::bool::weighted(0.9)).prop_map(|(draws, engine)| build(&draws, engine))
}

fn build(draws: &[Draw], engine: bool) -> Case {
    let root = PathBuf::from("/r");
    let mut world = World { root: root.clone(), containers: engine.then(Vec::new), ..World::default() };
    // A source outside the root: it must never change.
    world.files.insert("/uploads/d.tar.gz".into(), Node::File);
    let mut actions = Vec::new();
    for (i, d) in draws.iter().enumerate() {
        let p = format!("p{i}");
        let act = |change| Action { project: p.clone(), change, reason: "drawn".into() };
        let releases = root.join(&p).join("deployments");
        let release = |n: u8| releases.join(format!("{p}d{n}"));
        world.files.insert(release(0).join("public/index.html"), Node::File);
        if d.release_1_present {
            world.files.insert(release(1).join("public/index.html"), Node::File);
        }
        let current = root.join(&p).join("current");
        match d.current {
            0 => {}
            1 => drop(world.files.insert(current.clone(), Node::Symlink(release(0)))),
            2 => drop(world.files.insert(current.clone(), Node::Symlink(release(1)))),
            3 => {
                world.files.insert(current.clone(), Node::Dir);
                world.files.insert(current.join("uploads/kept.jpg"), Node::File);
            }
            _ => drop(world.files.insert(current.clone(), Node::File)),
        }
        let webroot = root.join("webroot").join(&p);
        match d.webroot {
            0 => {}
            1 => drop(world.files.insert(webroot.clone(), Node::Symlink(current.join("public")))),
            _ => drop(world.files.insert(webroot.clone(), Node::Symlink(release(0)))),
        }
        let dep = format!("{p}d1");
        world.deployments.push(Deployment {
            id: dep.clone(),
            project: p.clone(),
            service: None,
            kind: DeploymentType::Upload,
            phase: PHASES[d.phase].into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts: d.attempts,
            finished_at: None,
            source: Default::default(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: None,
        });
        let route = |dep: &str| Route {
            deployment: Some(dep.into()),
            upstream: format!("http://{dep}"),
            domain: None,
            problem: None,
        };
        match d.route {
            0 => {}
            1 => drop(world.routes.insert(p.clone(), route(&dep))),
            _ => drop(world.routes.insert(p.clone(), route("old"))),
        }
        let mut cs = Vec::new();
        for (j, &(state, managed)) in d.containers.iter().enumerate() {
            let labels: BTreeMap<_, _> =
                if managed { [(labels::PROJECT.to_owned(), p.clone())].into() } else { BTreeMap::new() };
            let (id, name) = (format!("{p}c{j}"), format!("{p}-web-{j}"));
            cs.push(Container { id, name, image: "img:1".into(), state: STATES[state], labels, created_at: None });
        }

        // The actions, in the planner's order.
        let from = if d.wrong_phase { "QUEUED".to_owned() } else { PHASES[d.phase].to_owned() };
        let (attempt, stuck_since) = (d.attempts + 1, None);
        match d.deploy_op {
            1 => actions.push(act(Change::Resume {
                deployment: dep.clone(),
                from_phase: from,
                to_phase: PHASES[d.phase].into(),
                attempt,
                stuck_since,
                dead_claim: None,
            })),
            2 => actions.push(act(Change::Resume {
                deployment: dep.clone(),
                from_phase: from,
                to_phase: PHASES[d.phase + 1].into(),
                attempt,
                stuck_since,
                dead_claim: None,
            })),
            3 => actions.push(act(Change::Fail {
                deployment: dep.clone(),
                from_phase: from,
                to_phase: "FAILED".into(),
                stuck_since,
                dead_claim: None,
            })),
            _ => {}
        }
        if d.aside {
            actions.push(act(Change::MoveAside { path: current.clone(), to: aside_path(&current, now()) }));
        }
        if d.link_current > 0 {
            let target = release(d.link_current - 1);
            actions.push(act(Change::Link { path: current.clone(), before: None, target }));
        }
        if d.link_webroot {
            actions.push(act(Change::Link { path: webroot, before: None, target: current.join("public") }));
        }
        for (c, op) in cs.iter().zip(&d.container_ops) {
            let (id, name) = (c.id.clone(), c.name.clone());
            match op {
                1 => actions.push(act(Change::StartContainer { id, name })),
                2 => actions.push(act(Change::RemoveContainer { id, name })),
                3 => actions.push(act(Change::RecreateContainer {
                    id,
                    name,
                    image: "img:2".into(),
                    deployment: dep.clone(),
                    labels: [(labels::PROJECT.to_owned(), p.clone()), (labels::DEPLOYMENT.to_owned(), dep.clone())]
                        .into(),
                })),
                _ => {}
            }
        }
        match d.route_op {
            1 => actions.push(act(Change::WriteRoute {
                deployment: dep.clone(),
                upstream: format!("http://{dep}"),
                domain: format!("{p}.localhost"),
            })),
            2 => actions.push(act(Change::RemoveRoute { deployment: None })),
            _ => {}
        }
        if let Some(all) = world.containers.as_mut() {
            all.extend(cs);
        }
    }
    Case { world, plan: Plan { actions, findings: Vec::new(), fingerprint: String::new() } }
}

/// What [`check`] applies.
#[derive(Debug, Clone, Copy)]
enum Plans<'a> {
    /// A fresh plan of the world as it is, with the default spec.
    Fresh,
    /// This plan, as it is.
    Given(&'a Plan),
}

/// The one caller of the API under test: plans `memory`'s world at `now` (unless given
/// a plan) and applies the plan to it. Returns the plan applied and the report.
#[track_caller]
fn check(memory: &mut MemoryWorld, now: Timestamp, plans: Plans<'_>) -> (Plan, Report) {
    let plan = match plans {
        Plans::Fresh => plan::plan(spec(), &memory.world, now),
        Plans::Given(p) => p.clone(),
    };
    let report = apply(&plan, memory, now, &mut NoHooks);
    (plan, report)
}

/// The default spec, loaded once.
fn spec() -> &'static Specs {
    static SPEC: OnceLock<Specs> = OnceLock::new();
    SPEC.get_or_init(|| trueup::spec::default_spec().into())
}

fn run(world: &World, plan: &Plan) -> MemoryWorld {
    let mut m = MemoryWorld::new(world.clone());
    check(&mut m, now(), Plans::Given(plan));
    m
}

/// Paths outside the root and unlabelled containers, which must never change.
fn untouchable(w: &World) -> (Vec<(PathBuf, Node)>, Vec<Container>) {
    let files = w.files.iter().filter(|(k, _)| !k.starts_with(&w.root)).map(|(k, v)| (k.clone(), v.clone()));
    let containers = w.containers.iter().flatten().filter(|c| !c.managed()).cloned();
    (files.collect(), containers.collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn each_effect_twice_equals_once(case in case()) {
        let once = run(&case.world, &case.plan);
        let doubled = Plan {
            actions: case.plan.actions.iter().flat_map(|a| [a.clone(), a.clone()]).collect(),
            ..case.plan.clone()
        };
        let twice = run(&case.world, &doubled);
        prop_assert_eq!(&twice.world, &once.world);
        prop_assert_eq!(&twice.log, &once.log);
    }

    #[test]
    fn a_plan_applied_twice_equals_once_and_touches_nothing_foreign(case in case()) {
        let mut m = run(&case.world, &case.plan);
        let once = m.world.clone();
        let steps = m.steps();
        let (_, second) = check(&mut m, now(), Plans::Given(&case.plan));
        prop_assert_eq!(&m.world, &once);
        prop_assert_eq!(m.steps(), steps, "a second apply takes no step");
        prop_assert_eq!(second.counts.errors(), second.outcomes.iter().filter(|o| matches!(o.status, Status::Failed(_))).count());
        prop_assert_eq!(untouchable(&once), untouchable(&case.world));
        let leftovers: Vec<_> = once.files.keys().filter(|k| k.to_string_lossy().contains(".trueup-tmp-")).collect();
        prop_assert!(leftovers.is_empty(), "{:?}", leftovers);
    }

    #[test]
    fn a_crash_after_any_sub_step_then_a_fresh_run_converges(case in case(), power_loss in any::<bool>()) {
        let full = run(&case.world, &case.plan);
        for k in 0..=full.steps() {
            let mut crashed = MemoryWorld::new(case.world.clone()).crash_after(k).power_loss(power_loss);
            check(&mut crashed, now(), Plans::Given(&case.plan));
            prop_assert_eq!(crashed.crashed(), k < full.steps(), "k = {}", k);
            let rerun = run(&crashed.into_world(), &case.plan);
            prop_assert_eq!(&rerun.world, &full.world, "crash after {} of {} sub-steps", k, full.steps());
        }
    }
}

/// The plan as a person reads it, for failure messages.
fn show(plan: &Plan, now: Timestamp) -> String {
    plan::render_text(plan, now, plan::Verbosity::Verbose)
}

/// The actions that did not succeed, one a line, for failure messages.
fn failures(report: &Report) -> String {
    let lines = report.outcomes.iter().filter(|o| o.status != Status::Done);
    lines.map(|o| format!("{:?}: {:?}\n", o.action.change, o.status)).collect()
}

/// Checks that going from `before` to `after` at `now` changed nothing trueup must not
/// touch: files outside the root, unlabelled containers, and deployments held by a live
/// owner, with their project's `current`, webroot link and route.
fn foreign_unchanged(before: &World, after: &World, now: Timestamp) -> Result<(), TestCaseError> {
    prop_assert_eq!(untouchable(after), untouchable(before), "outside the root or unlabelled");
    for (project, route) in before.routes.iter().filter(|(_, r)| !r.managed()) {
        prop_assert_eq!(after.routes.get(project), Some(route), "a route file trueup did not write changed");
    }
    for held in before.deployments.iter().filter(|d| d.held_at(now)) {
        let same = after.deployments.iter().find(|d| d.id == held.id && d.project == held.project);
        prop_assert_eq!(same, Some(held), "a deployment held by a live owner changed");
        let layout = Layout::new(&before.root, &held.project);
        for path in [layout.current(), layout.webroot()] {
            // A link that served nothing (missing, or dangling) is repaired whatever is in
            // flight, so the site is never left down (issue 8); any other is the worker's.
            let served = match before.files.get(&path) {
                None => false,
                Some(Node::Symlink(t)) => before.files.contains_key(&trueup::model::resolve_link(&path, t)),
                Some(_) => true,
            };
            if served {
                prop_assert_eq!(
                    after.files.get(&path),
                    before.files.get(&path),
                    "`{}` of a held project changed",
                    path.display()
                );
            }
        }
        prop_assert_eq!(
            after.routes.get(&held.project),
            before.routes.get(&held.project),
            "the route of a held project changed"
        );
    }
    Ok(())
}

proptest! {
    // More cases than for the hand-made plans: a generated world exercises only some of
    // the rules (about one case in sixty starts a container), and these runs are cheap.
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn after_apply_a_fresh_plan_has_no_actions(case in worlds::case()) {
        let (world, now) = (&case.0.world, case.0.now);
        let mut m = MemoryWorld::new(world.clone());
        let (first, report) = check(&mut m, now, Plans::Fresh);
        prop_assert!(report.all_done(), "the plan did not apply cleanly:\n{}\n{}", show(&first, now), failures(&report));
        foreign_unchanged(world, &m.world, now)?;
        let (again, _) = check(&mut m, now, Plans::Fresh);
        prop_assert!(
            again.actions.is_empty(),
            "first plan:\n{}\nplan after applying it:\n{}",
            show(&first, now),
            show(&again, now)
        );
    }

    #[test]
    fn a_planned_plan_applied_twice_equals_once(case in worlds::case()) {
        let (world, now) = (&case.0.world, case.0.now);
        let mut m = MemoryWorld::new(world.clone());
        let (first, _) = check(&mut m, now, Plans::Fresh);
        let (once, log, steps) = (m.world.clone(), m.log.clone(), m.steps());
        let (_, second) = check(&mut m, now, Plans::Given(&first));
        prop_assert!(second.all_done(), "the second apply failed:\n{}\n{}", show(&first, now), failures(&second));
        prop_assert_eq!(&m.world, &once, "plan:\n{}", show(&first, now));
        prop_assert_eq!(&m.log, &log, "a second apply logs nothing more");
        prop_assert_eq!(m.steps(), steps, "a second apply takes no step");
    }

    #[test]
    fn a_crash_after_any_sub_step_then_a_fresh_plan_and_apply_converge(case in worlds::case()) {
        let (world, now) = (&case.0.world, case.0.now);
        let mut full = MemoryWorld::new(world.clone());
        let (first, _) = check(&mut full, now, Plans::Fresh);
        let n = full.steps();
        for power_loss in [false, true] {
            for k in 0..=n {
                let mut crashed = MemoryWorld::new(world.clone()).crash_after(k).power_loss(power_loss);
                check(&mut crashed, now, Plans::Fresh);
                prop_assert_eq!(crashed.crashed(), k < n, "k = {}", k);
                foreign_unchanged(world, &crashed.world, now)?;
                let mut log = crashed.log.clone();
                let mut rerun = MemoryWorld::new(crashed.into_world());
                let (second, report) = check(&mut rerun, now, Plans::Fresh);
                log.extend(rerun.log.iter().cloned());
                let at = format!(
                    "crash after {k} of {n} sub-steps ({}):\nplan:\n{}\nplan after the crash:\n{}{}",
                    if power_loss { "power loss" } else { "kill -9" },
                    show(&first, now),
                    show(&second, now),
                    failures(&report),
                );
                prop_assert_eq!(&rerun.world, &full.world, "{}", at);
                prop_assert_eq!(&log, &full.log, "{}", at);
            }
        }
    }

    #[test]
    fn a_worker_that_wakes_after_the_plan_keeps_its_deployment_and_project(
        case in worlds::case(),
        pick in any::<proptest::sample::Index>(),
    ) {
        let (world, now) = (&case.0.world, case.0.now);
        let plan = plan::plan(spec(), world, now);
        let verdicts: Vec<(&str, &str)> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.change {
                Change::Resume { deployment, .. } | Change::Fail { deployment, .. } => {
                    Some((a.project.as_str(), deployment.as_str()))
                }
                _ => None,
            })
            .collect();
        prop_assume!(!verdicts.is_empty());
        let (project, woken) = *pick.get(&verdicts);
        // Between the plan and the apply, the worker heartbeats.
        let mut before = world.clone();
        let d = before.deployments.iter_mut().find(|d| d.id == woken && d.project == project).unwrap();
        d.heartbeat_at = Some(now);
        let mut m = MemoryWorld::new(before.clone());
        let report = apply(&plan, &mut m, now, &mut NoHooks);
        prop_assert!(report.succeeded(), "a worker waking is not an error:\n{}", failures(&report));
        let after = &m.world;
        let find = |w: &World| w.deployments.iter().find(|d| d.id == woken && d.project == project).cloned();
        prop_assert_eq!(find(after), find(&before), "the woken deployment changed");
        let layout = Layout::new(&world.root, project);
        for path in [layout.current(), layout.webroot()] {
            prop_assert_eq!(after.files.get(&path), before.files.get(&path), "`{}` changed", path.display());
        }
        prop_assert_eq!(after.routes.get(project), before.routes.get(project), "the route changed");
    }
}
