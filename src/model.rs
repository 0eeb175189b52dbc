//! The model: the plain data types of a world, at the bottom of the crate.
//!
//! [`World`] is one snapshot of everything trueup reconciles: projects and deployments
//! from the store, the paths under the managed root (and the sources deployments point
//! at), containers and proxy routes. [`Verdict`] is the reconciler's decision on one stuck
//! deployment, and [`verdict`] decides whether it may still go through.
//!
//! Everything here is plain data and pure functions over it: no IO, no clock. Both
//! [`crate::store`] and the [`crate::world`] adapters build on these types; the store
//! imports nothing of the world, and the world reaches the store only through its API.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Everything the reconciler looks at, at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct World {
    /// The managed root: `ROOT/PROJECT/deployments/ID`, `ROOT/PROJECT/current`,
    /// `ROOT/webroot/PROJECT`. Nothing outside it is ever changed.
    pub root: PathBuf,
    /// Projects, sorted by id.
    pub projects: Vec<Project>,
    /// Deployments, sorted by project then id.
    pub deployments: Vec<Deployment>,
    /// Every observed path: under the root, and the sources that deployments point at.
    /// A path that is absent here does not exist.
    pub files: BTreeMap<PathBuf, Node>,
    /// Containers, or `None` when no container engine is configured.
    pub containers: Option<Vec<Container>>,
    /// Image references the container engine holds, sorted, or `None` when no container
    /// engine is configured.
    pub images: Option<Vec<String>>,
    /// Route files by project id.
    pub routes: BTreeMap<String, Route>,
}

/// A project of the PaaS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Its id: a plain name, see [`valid_id`].
    pub id: String,
    /// Inactive projects are left alone: no links, containers or routes are repaired.
    #[serde(default = "yes")]
    pub active: bool,
    /// The host name its route answers on; defaults to `ID.localhost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Its services; one is primary.
    #[serde(default)]
    pub services: Vec<Service>,
}

fn yes() -> bool {
    true
}

/// A service of a project (`web`, `worker`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its id within the project.
    pub id: String,
    /// The primary service is the one routes and symlinks follow.
    #[serde(default)]
    pub primary: bool,
}

/// How a deployment gets its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    /// An uploaded tarball or folder.
    Upload,
    /// A git repository.
    Git,
    /// A container image.
    Image,
}

impl DeploymentType {
    /// Every type.
    pub const ALL: [DeploymentType; 3] = [DeploymentType::Upload, DeploymentType::Git, DeploymentType::Image];

    /// The name used in the store, fixtures and flags.
    pub fn name(self) -> &'static str {
        match self {
            DeploymentType::Upload => "upload",
            DeploymentType::Git => "git",
            DeploymentType::Image => "image",
        }
    }

    /// The type with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Where a deployment's source lives.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The uploaded file or folder (`upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<PathBuf>,
    /// The repository path or URL (`git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The branch, tag or commit (`git`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The image reference (`image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The build command run in the source folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// A worker's claim on a deployment: while `until` is in the future, nobody else
/// touches the deployment, its project's links or its routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Who holds it (a process or host name).
    pub owner: String,
    /// When it lapses unless renewed.
    pub until: Timestamp,
}

/// One deployment of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Its id: a plain name, see [`valid_id`].
    pub id: String,
    /// The project it belongs to.
    pub project: String,
    /// The service it deploys; the project's primary service when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Upload, git or image.
    #[serde(rename = "type")]
    pub kind: DeploymentType,
    /// The spec state it is in, e.g. `BUILDING`.
    pub phase: String,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_updated_at: Option<Timestamp>,
    /// The last sign of life from its worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Timestamp>,
    /// Resumes of its current phase so far; a move to another phase starts it at 0.
    #[serde(default)]
    pub attempts: u32,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Where its source lives.
    #[serde(default)]
    pub source: Source,
    /// What phases recorded (`upstream`, ports, build output, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The worker holding it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Claim>,
    /// When it was created. A deployment live now supersedes the stuck ones of its
    /// project and service created before it; when either time is unknown, neither
    /// supersedes the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
}

impl Deployment {
    /// True when the reconciler reads it: it is unfinished, or `live` (in its spec's live
    /// phase: a release `current` may point at), or a worker still claims it. The rest is
    /// history. [`crate::store::Store::load_reconcilable`] reads the same in SQL.
    pub fn reconcilable(&self, live: bool) -> bool {
        self.finished_at.is_none() || live || self.owner.is_some()
    }

    /// The last sign of progress: the later of the phase update and the heartbeat.
    pub fn last_progress(&self) -> Option<Timestamp> {
        self.phase_updated_at.max(self.heartbeat_at)
    }

    /// True while a worker holds a claim that has not lapsed at `now`.
    pub fn held_at(&self, now: Timestamp) -> bool {
        self.owner.as_ref().is_some_and(|c| c.until > now)
    }
}

/// What lives at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Node {
    /// A directory.
    Dir,
    /// Any other non-link file.
    File,
    /// A symbolic link and its target, as `readlink` returns it.
    Symlink(PathBuf),
}

/// A container's run state, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Stopped.
    Exited,
    /// Dead.
    Dead,
}

/// The labels trueup puts on the containers it creates.
pub mod labels {
    /// The project id.
    pub const PROJECT: &str = "trueup.project";
    /// The deployment id.
    pub const DEPLOYMENT: &str = "trueup.deployment";
    /// The service id.
    pub const SERVICE: &str = "trueup.service";
    /// `app` for the deployment's long-running container, `helper` for short-lived
    /// build or copy containers.
    pub const ROLE: &str = "trueup.role";
}

/// A container known to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// The engine's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its image.
    #[serde(default)]
    pub image: String,
    /// Running, exited, ...
    pub state: ContainerState,
    /// Its labels; trueup only touches containers carrying [`labels::PROJECT`].
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
}

impl Route {
    /// True when the file carries trueup's header, which names its deployment. A route
    /// file without it is not trueup's: it is never rewritten or removed.
    pub fn managed(&self) -> bool {
        self.deployment.is_some()
    }
}

impl Container {
    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// True when trueup created it (it carries the project label).
    pub fn managed(&self) -> bool {
        self.labels.contains_key(labels::PROJECT)
    }
}

/// A project's route, as read from its route file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The deployment it was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Where the proxy sends traffic, e.g. `http://127.0.0.1:8080`.
    #[serde(default)]
    pub upstream: String,
    /// The host name it answers on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Set when the file exists but cannot be read as a trueup route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// True for a plain name: ASCII letters, digits, `-`, `_` and `.`, not starting with a
/// dot, at most 128 bytes. Such a name is one path component that stays where it is put.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The canonical release, link and webroot paths of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<'a> {
    root: &'a Path,
    project: &'a str,
}

impl<'a> Layout<'a> {
    /// The layout of `project` under `root`. The caller checks [`valid_id`] first.
    pub fn new(root: &'a Path, project: &'a str) -> Self {
        Layout { root, project }
    }

    /// `ROOT/PROJECT`.
    pub fn project_dir(&self) -> PathBuf {
        self.root.join(self.project)
    }

    /// `ROOT/PROJECT/deployments`.
    pub fn releases_dir(&self) -> PathBuf {
        self.project_dir().join("deployments")
    }

    /// `ROOT/PROJECT/deployments/ID`.
    pub fn release(&self, deployment: &str) -> PathBuf {
        self.releases_dir().join(deployment)
    }

    /// `ROOT/PROJECT/current`.
    pub fn current(&self) -> PathBuf {
        self.project_dir().join("current")
    }

    /// `ROOT/webroot/PROJECT`.
    pub fn webroot(&self) -> PathBuf {
        self.root.join("webroot").join(self.project)
    }

    /// What the webroot link must point at: `ROOT/PROJECT/current/public`.
    pub fn webroot_target(&self) -> PathBuf {
        self.current().join("public")
    }
}

/// `path` with `.` and `..` folded lexically, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Where a symlink at `link` with target `target` points, as an absolute, normalized path.
pub fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    let base = link.parent().unwrap_or(Path::new("/"));
    normalize(&base.join(target))
}

/// True when `path` (normalized) is `root` or lies below it.
pub fn inside(root: &Path, path: &Path) -> bool {
    normalize(path).starts_with(normalize(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        for ok in ["p1", "my-app", "a_b.c", "D0"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b", "sp ace", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn links_resolve_relative_to_their_folder() {
        let link = Path::new("/var/www/p1/current");
        assert_eq!(resolve_link(link, Path::new("deployments/d1")), Path::new("/var/www/p1/deployments/d1"));
        assert_eq!(resolve_link(link, Path::new("/abs/x")), Path::new("/abs/x"));
        assert_eq!(resolve_link(link, Path::new("../../../etc")), Path::new("/etc"));
        assert!(!inside(Path::new("/var/www"), Path::new("/var/www/../etc")));
        assert!(inside(Path::new("/var/www"), Path::new("/var/www/p1/./current")));
    }
}

/// What to do with one stuck deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The deployment.
    pub deployment: &'a str,
    /// The phase the plan saw it stuck in.
    pub from_phase: &'a str,
    /// The phase it moves to.
    pub to_phase: &'a str,
    /// `Some(attempt)` to resume it as that attempt; `None` to fail it (`to_phase` is final).
    pub attempt: Option<u32>,
    /// Its last progress, as the plan saw it.
    pub stuck_since: Option<Timestamp>,
    /// Why, one line.
    pub reason: &'a str,
    /// When.
    pub now: Timestamp,
}

/// How a verdict ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The deployment was moved and the move logged.
    Moved,
    /// The deployment already was where the verdict puts it: nothing was written.
    AlreadyThere,
}
