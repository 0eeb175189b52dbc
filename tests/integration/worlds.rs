//! Random worlds for property tests: a few projects with releases, stuck and finished
//! deployments, damaged links, labelled and unlabelled containers, and route files.
//!
//! A generated case prints as fixture YAML, so a failure can be pasted into
//! `fixtures/plan/` as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use proptest::prelude::*;
use trueup::model::{
    Claim, Container, ContainerState, Deployment, DeploymentType, Node, Project, Route, Service, Source, World,
};
use trueup::time::Timestamp;
use trueup::world::fixture::{self, Fixture};

/// The instant every generated world is planned at.
pub const NOW: i64 = 1_759_406_400; // 2025-10-02T12:00:00Z

/// A generated fixture; its `Debug` is the fixture's YAML.
#[derive(Clone)]
pub struct Case(pub Fixture);

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}", fixture::to_yaml(&self.0))
    }
}

/// Phases to draw from. ACTIVE is listed four times so that most projects have a live
/// release, without which the link, container and route rules have nothing to repair.
const PHASES: &[&str] = &[
    "QUEUED",
    "PULLING_SOURCE",
    "BUILDING",
    "COPYING_FILES",
    "CREATING_SYMLINKS",
    "UPDATING_ROUTES",
    "HEALTH_CHECK",
    "ACTIVE",
    "ACTIVE",
    "ACTIVE",
    "ACTIVE",
    "FAILED",
    "CANCELLED",
];

#[derive(Debug, Clone)]
struct DeploymentSeed {
    phase: usize,
    kind: u8,
    age_min: i64,
    attempts: u32,
    claim: Option<i64>,
    release: u8,
    upload: bool,
}

fn deployment_seed() -> impl Strategy<Value = DeploymentSeed> {
    (0..PHASES.len(), 0u8..3, -30i64..240, 0u32..5, proptest::option::weighted(0.2, -60i64..60), 0u8..3, any::<bool>())
        .prop_map(|(phase, kind, age_min, attempts, claim, release, upload)| DeploymentSeed {
            phase,
            kind,
            age_min,
            attempts,
            claim,
            release,
            upload,
        })
}

#[derive(Debug, Clone)]
struct ProjectSeed {
    active: bool,
    deployments: Vec<DeploymentSeed>,
    current: u8,
    webroot: u8,
    route: u8,
    containers: Vec<(u8, u8, u8, bool)>,
}

fn project_seed() -> impl Strategy<Value = ProjectSeed> {
    (
        proptest::bool::weighted(0.85),
        proptest::collection::vec(deployment_seed(), 0..4),
        0u8..7,
        0u8..4,
        0u8..4,
        proptest::collection::vec((0u8..4, 0u8..6, 0u8..3, any::<bool>()), 0..3),
    )
        .prop_map(|(active, deployments, current, webroot, route, containers)| ProjectSeed {
            active,
            deployments,
            current,
            webroot,
            route,
            containers,
        })
}

/// Worlds of up to four projects (one of them possibly with an invalid id), plus stray
/// containers and route files.
pub fn case() -> impl Strategy<Value = Case> {
    (proptest::collection::vec(project_seed(), 1..5), any::<bool>(), any::<bool>(), proptest::bool::weighted(0.9))
        .prop_map(|(projects, invalid, stray, engine)| Case(build(&projects, invalid, stray, engine)))
}

fn at(minutes_ago: i64) -> Timestamp {
    Timestamp::from_unix(NOW - minutes_ago * 60)
}

fn build(seeds: &[ProjectSeed], invalid: bool, stray: bool, engine: bool) -> Fixture {
    let root = PathBuf::from("/var/www");
    let mut world = World { root: root.clone(), ..World::default() };
    let mut containers = Vec::new();
    for (pi, seed) in seeds.iter().enumerate() {
        let pid = if invalid && pi == 1 { "../escape".to_owned() } else { format!("p{pi}") };
        world.projects.push(Project {
            id: pid.clone(),
            active: seed.active,
            domain: None,
            services: vec![Service { id: "web".into(), primary: true }],
        });
        let releases = root.join(&pid).join("deployments");
        let mut ids = Vec::new();
        for (di, d) in seed.deployments.iter().enumerate() {
            // Deployment ids are unique across projects, as the store's primary key makes them.
            let did = format!("p{pi}d{di}");
            let phase = PHASES[d.phase];
            let finished = matches!(phase, "ACTIVE" | "FAILED" | "CANCELLED");
            let kind = [DeploymentType::Upload, DeploymentType::Git, DeploymentType::Image][d.kind as usize];
            let upload = PathBuf::from(format!("/uploads/{pid}-{did}.tar.gz"));
            let source = match kind {
                DeploymentType::Upload => Source { file_path: Some(upload.clone()), ..Source::default() },
                DeploymentType::Git => Source { repo: Some(format!("/srv/git/{pid}.git")), ..Source::default() },
                DeploymentType::Image => Source { image: Some(format!("localhost/{pid}:{did}")), ..Source::default() },
            };
            if d.upload {
                world.files.insert(upload, Node::File);
                world.files.insert(PathBuf::from(format!("/srv/git/{pid}.git")), Node::Dir);
            }
            if d.release > 0 {
                world.files.insert(releases.join(&did), Node::Dir);
            }
            if d.release > 1 {
                world.files.insert(releases.join(&did).join("public/index.html"), Node::File);
            }
            let mut metadata = BTreeMap::new();
            if di % 2 == 0 {
                metadata.insert("upstream".to_owned(), format!("http://127.0.0.1:{}", 8000 + di));
            }
            world.deployments.push(Deployment {
                id: did.clone(),
                project: pid.clone(),
                service: None,
                kind,
                phase: phase.to_owned(),
                phase_updated_at: (!finished).then(|| at(d.age_min)),
                heartbeat_at: None,
                attempts: d.attempts,
                finished_at: finished.then(|| at(1000 - di as i64)),
                source,
                metadata,
                owner: d.claim.map(|m| Claim::new("worker-1", at(-m))),
                // Later deployments of a project are created later; odd projects do not
                // record it, so both the superseded rule and its absence are exercised.
                created_at: (pi % 2 == 0).then(|| at(2000 - 10 * di as i64)),
            });
            ids.push(did);
        }
        let current = root.join(&pid).join("current");
        let pick = |n: u8| ids.get(n as usize % ids.len().max(1)).cloned().unwrap_or_else(|| "d9".into());
        match seed.current {
            0 => {}
            1 | 2 => {
                world.files.insert(current.clone(), Node::Symlink(releases.join(pick(seed.current))));
            }
            3 => {
                world.files.insert(current.clone(), Node::Symlink(PathBuf::from("deployments/d9")));
            }
            4 => {
                world.files.insert(current.clone(), Node::Symlink(PathBuf::from("../../../etc")));
            }
            5 => {
                world.files.insert(current.join("index.html"), Node::File);
            }
            _ => {
                world.files.insert(current.clone(), Node::File);
            }
        }
        let webroot = root.join("webroot").join(&pid);
        match seed.webroot {
            0 => {}
            1 => {
                world.files.insert(webroot, Node::Symlink(current.join("public")));
            }
            2 => {
                world.files.insert(webroot, Node::Symlink(releases.join(pick(0)).join("public")));
            }
            _ => {
                world.files.insert(webroot.join("index.html"), Node::File);
            }
        }
        match seed.route {
            0 => {}
            1 => {
                world.routes.insert(
                    pid.clone(),
                    Route {
                        deployment: Some(pick(0)),
                        upstream: "http://127.0.0.1:8000".into(),
                        domain: None,
                        problem: None,
                    },
                );
            }
            2 => {
                world.routes.insert(
                    pid.clone(),
                    Route {
                        deployment: Some(pick(1)),
                        upstream: "http://127.0.0.1:9999".into(),
                        domain: None,
                        problem: None,
                    },
                );
            }
            _ => {
                world.routes.insert(
                    pid.clone(),
                    Route { deployment: None, upstream: String::new(), domain: None, problem: Some("not YAML".into()) },
                );
            }
        }
        for (ci, (dep, state, role, labelled)) in seed.containers.iter().enumerate() {
            let did = pick(*dep);
            let mut labels = BTreeMap::new();
            if *labelled {
                labels.insert("trueup.project".to_owned(), pid.clone());
                labels.insert("trueup.deployment".to_owned(), did.clone());
                labels.insert("trueup.role".to_owned(), ["app", "app", "helper"][*role as usize].to_owned());
                if *role == 1 {
                    labels.insert("trueup.service".to_owned(), "worker".to_owned());
                }
            }
            let state = [
                ContainerState::Running,
                ContainerState::Exited,
                ContainerState::Created,
                ContainerState::Paused,
                ContainerState::Dead,
                ContainerState::Exited,
            ][*state as usize];
            containers.push(Container {
                id: format!("c-{pi}-{ci}"),
                name: format!("{pid}-web-{did}-{ci}"),
                image: format!("localhost/{pid}:{did}"),
                state,
                labels,
                created_at: Some(at(30 + 40 * ci as i64)),
            });
        }
    }
    if stray {
        world.routes.insert(
            "gone".into(),
            Route {
                deployment: Some("x1".into()),
                upstream: "http://127.0.0.1:7000".into(),
                domain: None,
                problem: None,
            },
        );
        containers.push(Container {
            id: "c-gone".into(),
            name: "gone-web-x1".into(),
            image: "localhost/gone:x1".into(),
            state: ContainerState::Running,
            labels: BTreeMap::from([("trueup.project".to_owned(), "gone".to_owned())]),
            created_at: None,
        });
    }
    fixture::close_parents(&mut world.files);
    world.projects.sort_by(|a, b| a.id.cmp(&b.id));
    world.deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    if engine {
        let mut images: Vec<String> = containers.iter().map(|c| c.image.clone()).collect();
        images.sort();
        images.dedup();
        world.images = Some(images);
        world.containers = Some(containers);
    }
    Fixture { description: "generated".into(), now: Timestamp::from_unix(NOW), world }
}
