//! How planning and observing grow with the number of projects.
//!
//! Every project has two ACTIVE releases, a `current` link, a webroot link, a route, an
//! app container and one stuck deployment; one project in ten of each kind carries some
//! damage (an old `current`, a missing webroot link, a stale route, a lost upload, a lost
//! release folder, a real folder as `current`, a stopped container, a zombie container).
//!
//! - Planning: [`trueup::plan::plan`] over in-memory worlds of 1,000 and 10,000 projects.
//!   It prints the cost per project and the ratio t(10k) / t(1k), which is about 10 when
//!   planning is linear; above 15 it is flagged as superlinear.
//! - Observing: worlds of 100, 1,000 and 10,000 projects (without containers, which need
//!   an engine) staged on disk with [`trueup::world::stage::stage`] in a folder under
//!   Cargo's target dir, removed afterwards, then read back with
//!   [`trueup::world::observe::observe_with_stats`]. It prints the SQL statements, folders opened,
//!   `stat`s, `readlink`s and folder listings per project, which must not grow with the number of
//!   projects (three sizes, so the two slopes between them must agree), and the ratio
//!   observe(10k) / observe(1k).
//!
//! The plan's fingerprint is timed on its own too: it is linear code (JSON, then a hash
//! of the bytes), so its ratio shows what the bigger world costs through the caches alone.
//!
//! Times are medians of a few samples, and only ratios between sizes measured in this
//! process are meant to be compared. Run it with `cargo bench --bench scale`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trueup::model::{
    Container, ContainerState, Deployment, DeploymentType, Layout, Node, Project, Route, Service, Source, World, labels,
};
use trueup::plan::{fingerprint, plan};
use trueup::spec::default_spec;
use trueup::store::Store;
use trueup::time::Timestamp;
use trueup::world::fixture::close_parents;
use trueup::world::observe::{ObserveConfig, ObserveStats, observe_with_stats};
use trueup::world::stage::stage;

/// 2025-10-02T12:00:00Z, the instant every world is planned at.
const NOW: i64 = 1_759_406_400;

/// Above this t(10N) / t(N), growth is reported as superlinear.
const SUPERLINEAR: f64 = 15.0;

fn ago(minutes: i64) -> Timestamp {
    Timestamp::from_unix(NOW - minutes * 60)
}

/// The phases the stuck deployments are in, by project. None of them has a release folder
/// yet, so the project's links and routes are still healed around it.
const STUCK_PHASES: [&str; 4] = ["QUEUED", "PULLING_SOURCE", "BUILDING", "COPYING_FILES"];

fn deployment(id: &str, project: &str, phase: &str) -> Deployment {
    Deployment {
        id: id.to_owned(),
        project: project.to_owned(),
        service: None,
        kind: DeploymentType::Upload,
        phase: phase.to_owned(),
        phase_updated_at: None,
        heartbeat_at: None,
        attempts: 1,
        finished_at: None,
        source: Source { file_path: Some(PathBuf::from(format!("/srv/uploads/{id}.tar.gz"))), ..Source::default() },
        metadata: BTreeMap::new(),
        owner: None,
        created_at: None,
    }
}

fn container(project: &str, deployment: &str, state: ContainerState) -> Container {
    let labels =
        [(labels::PROJECT, project), (labels::DEPLOYMENT, deployment), (labels::SERVICE, "web"), (labels::ROLE, "app")];
    Container {
        id: format!("c-{deployment}"),
        name: format!("{project}-web-{deployment}"),
        image: format!("localhost/{project}:{deployment}"),
        state,
        labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        created_at: Some(ago(1440)),
    }
}

/// A world of `n` projects, as described in the header; `n` a multiple of 10 gives every
/// kind of damage the same share at every size.
fn world(n: usize) -> World {
    let root = PathBuf::from("/srv/paas");
    let mut world = World { root: root.clone(), containers: Some(Vec::new()), ..World::default() };
    let mut containers = Vec::new();
    for i in 0..n {
        let id = format!("p{i:05}");
        let damage = i % 10;
        let layout = Layout::new(&root, &id);
        world.projects.push(Project {
            id: id.clone(),
            active: true,
            domain: None,
            services: vec![Service { id: "web".into(), primary: true }],
        });
        let (old, new, stuck) = (format!("{id}-r1"), format!("{id}-r2"), format!("{id}-s"));
        let upstream = |d: &str| format!("http://127.0.0.1:{}", 20_000 + 2 * (i % 20_000) + usize::from(d == new));
        for (release, days) in [(&old, 2), (&new, 1)] {
            let mut d = deployment(release, &id, "ACTIVE");
            d.finished_at = Some(ago(days * 1440));
            d.metadata.insert("upstream".into(), upstream(release));
            world.deployments.push(d);
            if !(damage == 5 && *release == new) {
                world.files.insert(layout.release(release).join("public/index.html"), Node::File);
            }
        }
        let mut d = deployment(&stuck, &id, STUCK_PHASES[(i / 10) % STUCK_PHASES.len()]);
        d.phase_updated_at = Some(ago(180));
        if damage != 4 {
            let upload = d.source.file_path.clone().expect("every deployment here is an upload");
            world.files.insert(upload, Node::File);
        }
        world.deployments.push(d);

        match damage {
            1 => world.files.insert(layout.current(), Node::Symlink(layout.release(&old))),
            6 => world.files.insert(layout.current().join("index.html"), Node::File),
            _ => world.files.insert(layout.current(), Node::Symlink(layout.release(&new))),
        };
        if damage != 2 {
            world.files.insert(layout.webroot(), Node::Symlink(layout.webroot_target()));
        }
        let routed = if damage == 3 { &old } else { &new };
        world.routes.insert(
            id.clone(),
            Route { deployment: Some(routed.clone()), upstream: upstream(routed), domain: None, problem: None },
        );
        let state = if damage == 7 { ContainerState::Exited } else { ContainerState::Running };
        containers.push(container(&id, &new, state));
        if damage == 8 {
            containers.push(container(&id, &old, ContainerState::Running));
        }
    }
    close_parents(&mut world.files);
    world.containers = Some(containers);
    world
}

/// The median time of `f`, over `samples` samples of `reps` calls each, per call.
fn time<T>(samples: usize, reps: u32, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                black_box(f());
            }
            start.elapsed() / reps
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us_per(d: Duration, n: usize) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6 / n as f64)
}

fn growth(small: Duration, large: Duration) -> String {
    let ratio = large.as_secs_f64() / small.as_secs_f64();
    let verdict = if ratio > SUPERLINEAR { "SUPERLINEAR" } else { "linear" };
    format!("{ratio:.1}x ({verdict})")
}

/// Plans worlds of 1,000 and 10,000 projects.
fn planning(spec: &trueup::spec::Specs) {
    let now = Timestamp::from_unix(NOW);
    let sizes = [1_000, 10_000];
    let worlds: Vec<World> = sizes.iter().map(|&n| world(n)).collect();
    // Warm up, and keep one plan of each size to describe.
    let plans: Vec<_> = worlds.iter().map(|w| plan(spec, w, now)).collect();
    let timed: Vec<(Duration, Duration)> = worlds
        .iter()
        .zip(sizes)
        .map(|(w, n)| {
            let reps = (10_000 / n) as u32;
            (time(7, reps, || plan(black_box(spec), black_box(w), now)), time(7, reps, || fingerprint(black_box(w))))
        })
        .collect();
    let [(p1, f1), (p10, f10)] = [timed[0], timed[1]];

    println!("plan (pure, in memory)   {:>14} {:>14}   t(10k)/t(1k)", "N=1,000", "N=10,000");
    println!("  plan                   {:>14} {:>14}   {}", ms(p1), ms(p10), growth(p1, p10));
    println!("  per project            {:>14} {:>14}", us_per(p1, sizes[0]), us_per(p10, sizes[1]));
    // The fingerprint (JSON, then FNV over the bytes) is linear by construction: where it
    // grows faster than 10x too, the memory hierarchy, not an algorithm, is the cause.
    println!("  of which fingerprint   {:>14} {:>14}   {}", ms(f1), ms(f10), growth(f1, f10));
    let count = |i: usize| format!("{} / {}", plans[i].actions.len(), plans[i].findings.len());
    println!("  actions / findings     {:>14} {:>14}", count(0), count(1));
    println!("  (the fingerprint is serde_json then FNV: linear code, so its ratio is what memory alone costs)");
}

/// Removes the staging folder when dropped, also when the bench panics.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stages a world of `n` projects in `dir` and observes it: the statistics of one
/// observation and the median time of three, after one to warm the caches.
fn observe_staged(n: usize, dir: &Path) -> (ObserveStats, Duration, usize) {
    let staged = stage(&world(n), dir, Timestamp::from_unix(NOW)).expect("the bench world stages");
    let (store, _) = Store::open(&staged.db).expect("the staged database opens");
    let cfg = ObserveConfig { root: staged.root.clone(), routes_dir: staged.routes_dir.clone() };
    let (world, stats) = observe_with_stats(&store, &trueup::spec::Specs::one(default_spec()), &cfg)
        .expect("the staged world is observable");
    assert_eq!(world.projects.len(), n, "every staged project is observed");
    let t = time(3, 1, || {
        observe_with_stats(&store, &trueup::spec::Specs::one(default_spec()), &cfg)
            .expect("the staged world is observable")
    });
    (stats, t, world.files.len())
}

/// One of the file system counts of an observation.
type Count = fn(&ObserveStats) -> u64;

/// Stages and observes worlds of 100, 1,000 and 10,000 projects.
fn observing() {
    let sizes = [100, 1_000, 10_000];
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-bench-{}", std::process::id()));
    let _cleanup = TempDir(base.clone());
    let mut rows = Vec::new();
    for n in sizes {
        let start = Instant::now();
        let (stats, t, files) = observe_staged(n, &base.join(n.to_string()));
        rows.push((n, stats, t, files, start.elapsed()));
    }

    println!("observe (staged on disk) {:>14} {:>14} {:>14}", "N=100", "N=1,000", "N=10,000");
    let line = |name: &str, cell: &dyn Fn(usize) -> String| {
        println!("  {name:<22} {:>14} {:>14} {:>14}", cell(0), cell(1), cell(2));
    };
    line("stage + observe", &|i| ms(rows[i].4));
    line("observe", &|i| ms(rows[i].2));
    line("observe per project", &|i| us_per(rows[i].2, rows[i].0));
    line("paths observed", &|i| rows[i].3.to_string());
    line("SQL statements", &|i| rows[i].1.statements.to_string());
    let counts: [(&str, Count); 4] =
        [("open", |s| s.opened), ("stat", |s| s.stat), ("readlink", |s| s.read_link), ("read_dir", |s| s.read_dir)];
    for (name, get) in counts {
        line(&format!("{name} per project"), &|i| format!("{:.3}", get(&rows[i].1) as f64 / rows[i].0 as f64));
    }
    let ratio = rows[2].2.as_secs_f64() / rows[1].2.as_secs_f64();
    let verdict = if ratio > SUPERLINEAR { "SUPERLINEAR" } else { "linear" };
    println!("  observe(10k)/observe(1k) {ratio:.1}x ({verdict})");

    // Each count is `fixed + per_project * n`: the two slopes between the three sizes must
    // agree, and the statements must not grow at all.
    let slope = |get: Count, a: usize, b: usize| {
        let (x, y) = (&rows[a], &rows[b]);
        (get(&y.1) as f64 - get(&x.1) as f64) / (y.0 - x.0) as f64
    };
    let mut bounded = rows.iter().all(|r| r.1.statements == rows[0].1.statements);
    let mut per_project = vec![format!("{} SQL statements in all", rows[0].1.statements)];
    for (name, get) in counts {
        let (low, high) = (slope(get, 0, 1), slope(get, 1, 2));
        bounded &= low == high;
        let fixed = get(&rows[0].1) as f64 - high * rows[0].0 as f64;
        per_project.push(format!("{name} {high} per project + {fixed}"));
    }
    let verdict = if bounded { "constant per project" } else { "NOT constant per project" };
    println!("  cost: {} ({verdict})", per_project.join(", "));
}

fn main() {
    let spec = trueup::spec::Specs::one(default_spec());
    println!(
        "scale: per project 2 ACTIVE releases, `current`, a webroot link, a route, an app container and a stuck \
         deployment; 1 in 10 damaged in each of 8 ways"
    );
    planning(&spec);
    observing();
}
