//! Effect adapters: the only code that changes the machine.
//!
//! [`Effects`] has one method per [`crate::plan::Change`] kind, each taking plain data and
//! each idempotent: applying it twice leaves the machine as applying it once. Two
//! implementations live here:
//!
//! - `MemoryWorld` (a test double, behind the `test-util` feature) changes a
//!   [`World`](crate::model::World) snapshot exactly as the real machine would change,
//!   sub-step by sub-step, and can crash after any number of sub-steps, so property tests
//!   can check that a fresh run repairs every interrupted one.
//! - [`RealFs`] changes the real file system under the managed root and the route files
//!   (atomic symlink switch, move-aside, atomic route write). It answers container and
//!   store changes with [`EffectError::NoContainerEngine`] and [`EffectError::NoStore`];
//!   [`Host`] adds the store and, when one is configured, the container engine
//!   ([`crate::world::containers::Engine`]).
//!
//! Nothing here decides *what* to change ([`crate::plan`] does) or in which order
//! ([`crate::apply`] does).
//!
//! # Names trueup leaves behind
//!
//! - `.trueup-tmp-NAME` ([`tmp_path`]): the temporary link or route file written next to
//!   `NAME` before it is renamed over it. Its name is fixed, so the next switch of the
//!   same path removes a leftover from a crashed run before writing its own. Observers and
//!   the planner ignore these names.
//! - `NAME.trueup-aside-20251002T120000Z` ([`aside_path`]), then `.1`, `.2`, ... when
//!   taken: a real file or folder that stood where a link must go, moved, never deleted.
//! - `PROJECT.yaml.trueup-removed-20251002T120000Z` ([`removed_route_path`]), then `.1`,
//!   `.2`, ...: a route file of a project that is gone, kept under a name Traefik's file
//!   provider does not load (it reads `*.yaml` only) and observation ignores, never
//!   deleted.
//! - `NAME.trueup-old` ([`old_container_name`]): a container being recreated, renamed out
//!   of its name's way before the new one is created and removed once the new one runs. A
//!   crash in between leaves it behind; the planner sees the name and plans the recreate
//!   of `NAME` again ([`recreated_name`]), so a fresh run finishes the job.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::model::Verdict;
use crate::time::Timestamp;

use crate::model::{inside, normalize, resolved_link};

#[cfg(any(test, feature = "test-util"))]
mod memory;
mod real;

mod host;

pub use host::Host;
#[cfg(any(test, feature = "test-util"))]
pub use memory::{Decide, MemoryWorld};
pub use real::{RealFs, clear_half_switched, move_aside, remove_route_file, route_file, switch_link, write_route_file};

/// Any error, boxed, for sources that come from another module (a route renderer).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The prefix of temporary names (see the module docs).
pub const TMP_PREFIX: &str = ".trueup-tmp-";

/// The mark in the name of a moved-aside file or folder (see the module docs).
pub const ASIDE_MARK: &str = ".trueup-aside-";

/// The mark in the name of a removed route file (see the module docs).
pub const REMOVED_MARK: &str = ".trueup-removed-";

/// The suffix of a container renamed out of the way of its replacement (see the module
/// docs).
pub const OLD_CONTAINER_MARK: &str = ".trueup-old";

/// How many numbered aside names are tried before giving up.
const MAX_ASIDE: u32 = 1000;

/// The changes trueup can make, one method per [`crate::plan::Change`] kind.
///
/// Every method is idempotent: when the machine already is as asked, it does nothing and
/// returns `Ok`. A method that returns an error has changed nothing, except where a
/// crash cut it short (a process killed mid-way), which the next run repairs.
pub trait Effects {
    /// Makes `path` a symlink to `target`, atomically: readers see the old link or the
    /// new one, never nothing. Missing parent folders inside the root are created.
    ///
    /// # Errors
    ///
    /// [`EffectError::OutsideRoot`] when `path` or the resolved `target` leaves the root,
    /// [`EffectError::InTheWay`] when a real file or folder stands at `path` (move it
    /// aside first), [`EffectError::ParentNotDir`] when a parent is a file or a symlink,
    /// [`EffectError::Io`] when the file system refuses.
    fn link(&mut self, path: &Path, target: &Path) -> Result<(), EffectError>;

    /// Moves the real file or folder at `path` to `to` (or `to.1`, `to.2`, ... when
    /// taken), whole. A missing `path` or a symlink there is left alone.
    ///
    /// # Errors
    ///
    /// [`EffectError::OutsideRoot`], [`EffectError::ParentNotDir`] or [`EffectError::Io`].
    fn move_aside(&mut self, path: &Path, to: &Path) -> Result<(), EffectError>;

    /// Starts container `id` (named `name`) unless it runs already.
    ///
    /// # Errors
    ///
    /// [`EffectError::NoContainerEngine`], [`EffectError::NoSuchContainer`] or
    /// [`EffectError::Unmanaged`] for a container trueup did not create.
    fn start_container(&mut self, id: &str, name: &str) -> Result<(), EffectError>;

    /// Replaces container `id` with a new one named `name`, from `image`, with `labels`.
    /// The old one is renamed to [`old_container_name`]`(name)` and stopped first, and
    /// removed only once the new one runs, so a crash in between leaves it behind under
    /// a name the planner recognizes, never a deployment without its container. Done when
    /// a container named `name` with that image and labels runs and `id` is gone.
    ///
    /// # Errors
    ///
    /// [`EffectError::NoContainerEngine`], [`EffectError::Unmanaged`], or
    /// [`EffectError::NameTaken`] when a container trueup does not manage holds `name`.
    fn recreate_container(
        &mut self,
        id: &str,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<(), EffectError>;

    /// Stops and removes container `id`; a missing one is fine.
    ///
    /// # Errors
    ///
    /// [`EffectError::NoContainerEngine`] or [`EffectError::Unmanaged`].
    fn remove_container(&mut self, id: &str, name: &str) -> Result<(), EffectError>;

    /// Writes `project`'s route file, atomically, pointing `domain` at `upstream`.
    ///
    /// # Errors
    ///
    /// [`EffectError::InvalidId`], [`EffectError::Render`] or [`EffectError::Io`].
    fn write_route(&mut self, project: &str, deployment: &str, upstream: &str, domain: &str)
    -> Result<(), EffectError>;

    /// Takes `project`'s route file out of the proxy's sight: it is renamed to
    /// [`removed_route_path`] at `now`, never deleted. A missing one is fine.
    ///
    /// # Errors
    ///
    /// [`EffectError::InvalidId`], [`EffectError::NoAsideName`] or [`EffectError::Io`].
    fn remove_route(&mut self, project: &str, now: Timestamp) -> Result<(), EffectError>;

    /// Records the reconciler's verdict on a stuck deployment: claims it, moves it from
    /// `from_phase` to `to_phase` (with `attempts = attempt` and `phase_updated_at = now`
    /// for a resume; with `finished_at = now` as well for a failure, `attempt: None`),
    /// logs why, and gives the claim back, as one transaction. Done when it already is
    /// where the verdict puts it. Whether it may go through, and what it writes, is
    /// decided by [`crate::model::verdict`] in every implementation.
    ///
    /// # Errors
    ///
    /// [`EffectError::NoSuchDeployment`]; [`EffectError::Claimed`] while another owner's
    /// claim is live; [`EffectError::PhaseMoved`] when it is no longer in `from_phase`
    /// (someone else moved it); [`EffectError::Progressed`] when its worker showed
    /// progress since the plan; [`EffectError::Store`]; or [`EffectError::NoStore`].
    fn verdict(&mut self, verdict: &Verdict<'_>) -> Result<(), EffectError>;

    /// Makes every change made so far durable. An adapter may batch the syncs of its
    /// changes until this call; the apply calls it before it journals actions as done.
    /// The default has nothing to sync.
    ///
    /// # Errors
    ///
    /// [`EffectError::Io`] when a sync fails: the changes were made but may not survive
    /// a power cut.
    fn sync(&mut self) -> Result<(), EffectError> {
        Ok(())
    }
}

/// Why an effect could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// A path is not a plain path (no `.` or `..`) strictly below the managed root.
    #[error("`{}` is not a plain path inside the managed root `{}`", path.display(), root.display())]
    OutsideRoot {
        /// The path refused.
        path: PathBuf,
        /// The managed root.
        root: PathBuf,
    },
    /// A real file or folder stands where a symlink must go; it is never replaced.
    #[error("`{}` is a real {what}, not a symlink: it must be moved aside first", path.display())]
    InTheWay {
        /// Its path.
        path: PathBuf,
        /// `file` or `folder`.
        what: &'static str,
    },
    /// A parent of a path is a file or a symlink, so the path cannot be reached safely.
    #[error("`{}` is not a real folder", path.display())]
    ParentNotDir {
        /// The parent.
        path: PathBuf,
    },
    /// A file-system call failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        /// What was being done (`rename`, `create link`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another owner holds a live claim on the deployment.
    #[error("deployment `{deployment}` is held by `{owner}` until {until}")]
    Claimed {
        /// The deployment.
        deployment: String,
        /// Who holds it.
        owner: String,
        /// Until when.
        until: Timestamp,
    },
    /// The deployment's worker showed progress after the plan saw it stuck.
    #[error("deployment `{0}` progressed since the plan was made: it is left to its worker")]
    Progressed(String),
    /// A route file that trueup did not write (it has no trueup header) is in the way.
    #[error("`{}` was not written by trueup (it has no trueup header): it is left alone", path.display())]
    NotOurs {
        /// The file.
        path: PathBuf,
    },
    /// Every numbered aside name was taken.
    #[error("no free aside name for `{}` (tried {MAX_ASIDE})", path.display())]
    NoAsideName {
        /// What was to be moved.
        path: PathBuf,
    },
    /// A project id is not a plain name (see [`crate::model::valid_id`]).
    #[error("`{0}` is not a valid project id")]
    InvalidId(String),
    /// The route renderer refused the route.
    #[error("cannot render the route of project `{project}`")]
    Render {
        /// The project.
        project: String,
        /// The renderer's error.
        #[source]
        source: BoxError,
    },
    /// Container changes need a container engine, and none is configured.
    #[error("cannot change container `{name}`: no container engine is configured")]
    NoContainerEngine {
        /// The container's name.
        name: String,
    },
    /// The container does not exist.
    #[error("container `{name}` (`{id}`) does not exist")]
    NoSuchContainer {
        /// The engine's id.
        id: String,
        /// Its name.
        name: String,
    },
    /// The container has no trueup labels: trueup never touches it.
    #[error("container `{name}` (`{id}`) is not managed by trueup")]
    Unmanaged {
        /// The engine's id.
        id: String,
        /// Its name.
        name: String,
    },
    /// The name of a container to create is held by a container trueup does not manage.
    #[error("container name `{name}` is held by `{id}`, which is not managed by trueup")]
    NameTaken {
        /// The name.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// The container engine failed or refused an operation.
    #[error(transparent)]
    Engine(#[from] crate::world::containers::ContainerError),
    /// Deployment changes need the store, and it is not connected.
    #[error("cannot change deployment `{0}`: no store is connected")]
    NoStore(String),
    /// The store refused the verdict (a lost lease, another owner's live claim).
    #[error("cannot record the verdict on deployment `{deployment}`")]
    Store {
        /// The deployment.
        deployment: String,
        /// What the store said.
        #[source]
        source: BoxError,
    },
    /// The deployment does not exist.
    #[error("deployment `{0}` does not exist")]
    NoSuchDeployment(String),
    /// The deployment is not in the phase the plan saw: someone else moved it.
    #[error("deployment `{deployment}` is in `{actual}` (attempts {attempts}), not `{expected}`")]
    PhaseMoved {
        /// The deployment.
        deployment: String,
        /// The phase the plan expected.
        expected: String,
        /// The phase it is in.
        actual: String,
        /// Its attempts so far.
        attempts: u32,
    },
    /// `MemoryWorld`'s injected crash: the simulated process is dead.
    #[cfg(any(test, feature = "test-util"))]
    #[error("crash injected")]
    Crashed,
}

impl EffectError {
    /// True when the error means a worker acted on the deployment after the plan was made
    /// (it progressed, holds a live claim, or moved it): the verdict is moot, not failed.
    pub fn is_race(&self) -> bool {
        matches!(self, EffectError::Progressed(_) | EffectError::Claimed { .. } | EffectError::PhaseMoved { .. })
    }
}

/// `DIR/.trueup-tmp-NAME` for `DIR/NAME`: where a link or file is written before it is
/// renamed over `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(TMP_PREFIX);
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// `DIR/NAME.trueup-aside-20251002T120000Z`: where a real `DIR/NAME` in a link's way goes.
pub fn aside_path(path: &Path, now: Timestamp) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(ASIDE_MARK);
    name.push(now.compact());
    path.with_file_name(name)
}

/// `FILE.trueup-removed-STAMP`: where a removed route file `FILE` is kept.
pub fn removed_route_path(file: &Path, now: Timestamp) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(REMOVED_MARK);
    name.push(now.compact());
    file.with_file_name(name)
}

/// `NAME.trueup-old`: the name a container takes while its replacement is created.
pub fn old_container_name(name: &str) -> String {
    format!("{name}{OLD_CONTAINER_MARK}")
}

/// The name a container is recreated under: `NAME` for a `NAME.trueup-old` left behind by
/// an interrupted recreate, else its own name.
pub fn recreated_name(name: &str) -> &str {
    name.strip_suffix(OLD_CONTAINER_MARK).filter(|n| !n.is_empty()).unwrap_or(name)
}

/// `to` for `n == 0`, else `to.n`.
fn numbered(to: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return to.to_owned();
    }
    let mut name = to.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{n}"));
    to.with_file_name(name)
}

/// The first of `to`, `to.1`, `to.2`, ... for which `taken` is false.
fn free_aside(
    path: &Path,
    to: &Path,
    mut taken: impl FnMut(&Path) -> Result<bool, EffectError>,
) -> Result<PathBuf, EffectError> {
    for n in 0..MAX_ASIDE {
        let candidate = numbered(to, n);
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(EffectError::NoAsideName { path: path.to_owned() })
}

/// Checks that `path` is a plain path (no `.` or `..`) strictly below `root`.
fn check_path(root: &Path, path: &Path) -> Result<(), EffectError> {
    let root_n = normalize(root);
    let plain = path.components().all(|c| !matches!(c, Component::CurDir | Component::ParentDir));
    if plain && path.starts_with(&root_n) && path != root_n {
        Ok(())
    } else {
        Err(EffectError::OutsideRoot { path: path.to_owned(), root: root.to_owned() })
    }
}

/// Checks a link at `path` and what it will point at: both stay inside `root`.
fn check_link(root: &Path, path: &Path, target: &Path) -> Result<(), EffectError> {
    check_path(root, path)?;
    let resolved = resolved_link(path, target);
    if inside(root, &resolved) {
        Ok(())
    } else {
        Err(EffectError::OutsideRoot { path: resolved.into_owned(), root: root.to_owned() })
    }
}

/// The folders between `root` (excluded) and `path` (excluded), outermost first.
/// `path` has passed [`check_path`].
fn parents_below<'p>(root: &Path, path: &'p Path) -> Vec<&'p Path> {
    let root_n = normalize(root);
    let mut out: Vec<&Path> = path.ancestors().skip(1).take_while(|a| a.starts_with(&root_n) && *a != root_n).collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_left_behind() {
        let now: Timestamp = "2025-10-02T12:00:00Z".parse().unwrap();
        let p = Path::new("/r/p1/current");
        assert_eq!(tmp_path(p), Path::new("/r/p1/.trueup-tmp-current"));
        assert_eq!(aside_path(p, now), Path::new("/r/p1/current.trueup-aside-20251002T120000Z"));
        assert_eq!(numbered(&aside_path(p, now), 2), Path::new("/r/p1/current.trueup-aside-20251002T120000Z.2"));
        assert_eq!(old_container_name("p1-web"), "p1-web.trueup-old");
        assert_eq!(recreated_name("p1-web.trueup-old"), "p1-web");
        assert_eq!(recreated_name("p1-web"), "p1-web");
        assert_eq!(recreated_name(".trueup-old"), ".trueup-old");
    }

    #[test]
    fn paths_must_stay_below_the_root() {
        let root = Path::new("/r");
        check_path(root, Path::new("/r/p1/current")).unwrap();
        for bad in ["/r", "/etc/passwd", "/r/../etc", "/r/p1/../../etc", "/rx/p1", "r/p1"] {
            let err = check_path(root, Path::new(bad)).unwrap_err();
            assert!(matches!(err, EffectError::OutsideRoot { .. }), "{bad}");
        }
        check_link(root, Path::new("/r/p1/current"), Path::new("deployments/d1")).unwrap();
        let err = check_link(root, Path::new("/r/p1/current"), Path::new("../../etc")).unwrap_err();
        assert_eq!(err.to_string(), "`/etc` is not a plain path inside the managed root `/r`");
        assert_eq!(parents_below(root, Path::new("/r/a/b/c")), [Path::new("/r/a"), Path::new("/r/a/b")]);
    }
}
