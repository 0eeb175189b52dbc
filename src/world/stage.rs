//! Staging: making a [`World`] real in a folder, for the demo and for tests that compare
//! the real machine with the model.
//!
//! [`stage`] writes a world's projects and deployments into a fresh state database, its
//! files, folders and symlinks under a new root, and its routes as route files. Paths are
//! rebased into the folder ([`Staged::rebase`]): the world's root becomes `DIR/root`, and
//! any other absolute path `/x/y` becomes `DIR/outside/x/y`, so nothing outside `DIR` is
//! ever written. Containers are not staged: there is no container engine here.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use super::routes;
use crate::model::{Node, World};
use crate::spec::Specs;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// The text a route is staged as: the rendered file for a sound route; for a broken one,
/// trueup's header (when the route names its deployment) over a body that is not YAML.
fn staged_text(project: &str, route: &crate::model::Route) -> String {
    const NOT_YAML: &str = "http: [ this is not a route\n";
    match (&route.problem, &route.deployment) {
        (None, Some(deployment)) => {
            let domain = route.domain.clone().unwrap_or_else(|| format!("{project}.localhost"));
            routes::render_route(project, deployment, &route.upstream, &domain)
                .unwrap_or_else(|e| format!("{}\n# cannot render: {e}\n", routes::header_line(project, deployment)))
        }
        (Some(_), Some(deployment)) => format!("{}\n{NOT_YAML}", routes::header_line(project, deployment)),
        _ => NOT_YAML.to_owned(),
    }
}

/// Where a staged world lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The folder everything is in.
    pub dir: PathBuf,
    /// The state database.
    pub db: PathBuf,
    /// The managed root.
    pub root: PathBuf,
    /// The route files.
    pub routes_dir: PathBuf,
    /// The world's own root, which `root` stands for.
    original_root: PathBuf,
    /// When deployments that record no creation time were created.
    created_at: Timestamp,
}

/// Why a world could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The folder already holds something.
    #[error("`{}` is not empty: staging needs a new or empty folder", .0.display())]
    NotEmpty(PathBuf),
    /// A file system change failed.
    #[error("cannot {what} `{}`", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The store refused the world's records.
    #[error("cannot write the state database")]
    Store(#[from] StoreError),
}

impl Staged {
    /// Where a path of the world lives in the staged folder.
    pub fn rebase(&self, path: &Path) -> PathBuf {
        if let Ok(rest) = path.strip_prefix(&self.original_root) {
            return self.root.join(rest);
        }
        let relative: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        self.dir.join("outside").join(relative)
    }

    /// The world as the observer will see it once staged under `specs`: paths rebased, no
    /// containers or images, no history, and every deployment with its creation time.
    pub fn rebase_world(&self, world: &World, specs: &Specs) -> World {
        let mut w = self.rebase_paths(world);
        w.deployments.retain(|d| d.reconcilable(specs.is_live(d)));
        for d in &mut w.deployments {
            d.created_at.get_or_insert(self.created_at);
        }
        w.containers = None;
        w.images = None;
        w
    }

    /// `world` with every path it names moved into the staged folder.
    fn rebase_paths(&self, world: &World) -> World {
        let mut w = world.clone();
        w.root = self.root.clone();
        w.files = world
            .files
            .iter()
            .map(|(path, node)| {
                let node = match node {
                    Node::Symlink(t) if t.is_absolute() => Node::Symlink(self.rebase(t)),
                    other => other.clone(),
                };
                (self.rebase(path), node)
            })
            .collect();
        for d in &mut w.deployments {
            if let Some(path) = &d.source.file_path {
                d.source.file_path = Some(self.rebase(path));
            }
            if let Some(repo) = d.source.repo.as_mut().filter(|r| r.starts_with('/')) {
                *repo = self.rebase(Path::new(repo.as_str())).display().to_string();
            }
        }
        // A claim whose worker is gone is staged as one of this host whose process is
        // not there: process 1 with a start time no process has.
        for claim in w.deployments.iter_mut().filter_map(|d| d.owner.as_mut()).filter(|c| c.gone) {
            let gone = crate::model::Process { host: crate::host::hostname(), pid: 1, started: Some(i64::MAX as u64) };
            claim.process = Some(gone);
        }
        // The model gets each route as the observer will read its staged file back.
        for (project, route) in &mut w.routes {
            *route = routes::parse_route(project, &staged_text(project, route));
        }
        w
    }
}

/// Writes `world` into `dir` (created if missing, and empty otherwise), with deployments
/// that record no creation time recorded as created at `now`. The whole history is
/// written: the observer's query decides what it reads back.
///
/// # Errors
///
/// [`StageError::NotEmpty`]; file system and store failures.
pub fn stage(world: &World, dir: &Path, now: Timestamp) -> Result<Staged, StageError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| StageError::Io { what, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    // Links are staged with absolute targets, so the folder must be absolute too.
    let dir = &crate::model::normalize(&std::path::absolute(dir).map_err(io("resolve", dir))?);
    if fs::read_dir(dir).map_err(io("read", dir))?.next().is_some() {
        return Err(StageError::NotEmpty(dir.to_owned()));
    }
    let staged = Staged {
        dir: dir.to_owned(),
        db: dir.join("state.db"),
        root: dir.join("root"),
        routes_dir: dir.join("routes"),
        original_root: world.root.clone(),
        created_at: now,
    };
    let rebased = staged.rebase_paths(world);
    for path in [&staged.root, &staged.routes_dir] {
        fs::create_dir_all(path).map_err(io("create", path))?;
    }
    // Folders first, then files and links, so every parent exists when needed.
    for (path, node) in &rebased.files {
        match node {
            Node::Dir => fs::create_dir_all(path).map_err(io("create", path))?,
            Node::File => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io("create", parent))?;
                }
                fs::write(path, format!("{}\n", path.display())).map_err(io("write", path))?;
            }
            Node::Symlink(target) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io("create", parent))?;
                }
                symlink(target, path).map_err(io("link", path))?;
            }
        }
    }
    for (project, route) in &rebased.routes {
        if !crate::model::valid_id(project) {
            continue;
        }
        let path = routes::route_path(&staged.routes_dir, project);
        let text = staged_text(project, route);
        fs::write(&path, text).map_err(io("write", &path))?;
    }
    let (store, _) = Store::open(&staged.db)?;
    store.upsert_projects(&rebased.projects)?;
    store.insert_deployments(&rebased.deployments, now)?;
    Ok(staged)
}

/// The demo world: a small PaaS right after a reboot in the middle of several deploys.
pub const DEMO_WORLD: &str = include_str!("demo.yaml");

/// Stages the demo world in `dir`, with its clock moved so that its "now" is `now`.
///
/// # Errors
///
/// As [`stage`].
pub fn stage_demo(dir: &Path, now: Timestamp) -> Result<Staged, StageError> {
    let fixture = super::fixture::load("demo.yaml", DEMO_WORLD)
        .unwrap_or_else(|d| panic!("the demo world is checked by the test suite, yet: {d:?}"));
    let by = now.unix() - fixture.now.unix();
    let shift = |t: &mut Timestamp| *t = Timestamp::from_unix(t.unix() + by);
    let mut world = fixture.world;
    for d in &mut world.deployments {
        for t in [&mut d.phase_updated_at, &mut d.heartbeat_at, &mut d.finished_at].into_iter().flatten() {
            shift(t);
        }
        if let Some(claim) = &mut d.owner {
            shift(&mut claim.until);
        }
    }
    stage(&world, dir, now)
}
