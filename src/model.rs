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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

mod files;

pub use files::Files;
pub(crate) use files::path_order;

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
    pub files: Files,
    /// Containers, or `None` when no container engine is configured.
    pub containers: Option<Vec<Container>>,
    /// Image references the container engine holds, sorted, or `None` when no container
    /// engine is configured.
    pub images: Option<Vec<String>>,
    /// Route files by project id.
    pub routes: BTreeMap<String, Route>,
    /// True when the routes folder does not exist: a wrong `--routes-dir`, so no route
    /// file can be read or written. (Left out of the JSON when false, so the fingerprints
    /// of every other world stay as they were.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub routes_folder_missing: bool,
    /// Projects with a state-database row that could not be read back, each with what is
    /// wrong (naming the table, row and column): the plan leaves them alone as a whole,
    /// since what it cannot read may be their live release.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable: BTreeMap<String, String>,
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

    /// True when its deployments have a release folder (`ROOT/PROJECT/deployments/ID`)
    /// that `current` and the webroot link lead to; an image deployment runs in its own
    /// container instead, and is never given links.
    pub fn has_release_folder(self) -> bool {
        self != DeploymentType::Image
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
    /// The folder, inside the source, that the build leaves the site in (`public`, `dist`);
    /// it becomes the release's `public/`. Absent: `public` when the source has one after
    /// the build, else the whole source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The path the health check requests (`/` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
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
    /// The worker's host and process, when it recorded them (trueup's own workers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Observed: the worker ran on this host and its process is gone (kill -9, a crash,
    /// a reboot). Such a claim is dead at once, whatever `until` says, and its deployment
    /// counts as stuck without waiting for `stuck_after`; the fencing keeps a late writer
    /// out, since the claim is taken over by name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

impl Claim {
    /// A claim by `owner` until `until`, with no process recorded.
    pub fn new(owner: impl Into<String>, until: Timestamp) -> Self {
        Claim { owner: owner.into(), until, process: None, gone: false }
    }
}

/// Where a worker runs: enough to tell, on its own host, whether it is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// The machine's hostname.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/PID/stat`), so that a reused
    /// process id is not mistaken for the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
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
    /// history. [`crate::store::Store::load_reconcilable`] reads less: of the live ones
    /// only those a rule can use (the newest per project, those created after an open
    /// deployment, and the rest when the newest lost its folder), which plan as this
    /// whole set does (`tests/integration/lean.rs`).
    pub fn reconcilable(&self, live: bool) -> bool {
        self.finished_at.is_none() || live || self.owner.is_some()
    }

    /// The last sign of progress: the later of the phase update and the heartbeat.
    pub fn last_progress(&self) -> Option<Timestamp> {
        self.phase_updated_at.max(self.heartbeat_at)
    }

    /// True while a worker holds a claim that has not lapsed at `now` and whose process
    /// is not known to be gone.
    pub fn held_at(&self, now: Timestamp) -> bool {
        self.owner.as_ref().is_some_and(|c| c.until > now && !c.gone)
    }

    /// The claim of a worker whose process is gone, if that is what holds it.
    pub fn dead_claim(&self) -> Option<&Claim> {
        self.owner.as_ref().filter(|c| c.gone)
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

/// The names the layout gives a meaning of its own: `ROOT/webroot` holds the webroot
/// links, and `deployments` and `current` are what a project's folder holds (as webroot
/// links, `ROOT/webroot/current` and `ROOT/webroot/deployments` would be those of a
/// project named `webroot`).
pub const RESERVED_PROJECT_IDS: &[&str] = &["webroot", "deployments", "current"];

/// True for a name a project can have: a plain name ([`valid_id`]) that the layout does
/// not reserve ([`RESERVED_PROJECT_IDS`]). Deployments have no such limit: one named
/// `current` is `ROOT/PROJECT/deployments/current`, which collides with nothing.
pub fn valid_project_id(id: &str) -> bool {
    valid_id(id) && !RESERVED_PROJECT_IDS.contains(&id)
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
        self.below(&[self.project])
    }

    /// `ROOT/PROJECT/deployments`.
    pub fn releases_dir(&self) -> PathBuf {
        self.below(&[self.project, "deployments"])
    }

    /// `ROOT/PROJECT/deployments/ID`.
    pub fn release(&self, deployment: &str) -> PathBuf {
        self.below(&[self.project, "deployments", deployment])
    }

    /// `ROOT/PROJECT/current`.
    pub fn current(&self) -> PathBuf {
        self.below(&[self.project, "current"])
    }

    /// `ROOT/webroot/PROJECT`.
    pub fn webroot(&self) -> PathBuf {
        self.below(&["webroot", self.project])
    }

    /// What the webroot link must point at: `ROOT/PROJECT/current/public`.
    pub fn webroot_target(&self) -> PathBuf {
        self.below(&[self.project, "current", "public"])
    }

    /// The root joined with `parts` in turn: see [`join_all`].
    fn below(&self, parts: &[&str]) -> PathBuf {
        join_all(self.root, parts)
    }
}

/// `base` joined with each of `parts` in turn, as [`Path::join`] would, in one allocation
/// of the path's size (each `join` copies the path so far, then grows the copy): the scan
/// makes one per path it records, the planner a few per project. The bytes are joined as
/// [`PathBuf::push`] joins them on Unix (a part that starts with `/` replaces the path; a
/// separator goes between unless the path is empty or ends with one), without the parse of
/// each part that `push` makes to know as much (at 10,000 projects, 71 million
/// instructions with `push`, 59 without).
pub(crate) fn join_all<S: AsRef<std::ffi::OsStr>>(base: &Path, parts: &[S]) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
    let size = base.as_os_str().len() + parts.iter().map(|part| part.as_ref().len() + 1).sum::<usize>();
    let mut path = Vec::with_capacity(size);
    path.extend_from_slice(base.as_os_str().as_bytes());
    for part in parts {
        let part = part.as_ref().as_bytes();
        if part.first() == Some(&b'/') {
            path.clear();
        } else if path.last().is_some_and(|&byte| byte != b'/') {
            path.push(b'/');
        }
        path.extend_from_slice(part);
    }
    PathBuf::from(std::ffi::OsString::from_vec(path))
}

/// True when `path` is absolute and spelled the one way its components write it: no `.`
/// or `..` part, no repeated or trailing `/`. Two such paths are the same path exactly
/// when their bytes are equal, and [`normalize`] gives such a path back unchanged.
///
/// Only a separator followed by `/` or `.` can start a part that is not plain, and those
/// are found eight bytes at a time (`Bytes8`): a byte at a time, the check was most of
/// the instructions of the plan's index of paths (about 700 a path of 90 bytes, for about
/// 360 now).
pub fn is_plain_absolute(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    match bytes {
        [b'/'] => true,
        [b'/', ..] => names_after_separators(bytes, 0),
        _ => false,
    }
}

/// [`is_plain_absolute`] of `path`, when `before` is plain: only the bytes from three
/// before the first that differs are read. A separator before those starts a part that
/// is the same in both up to the next separator, or that has three bytes or more before
/// that: a name either way. In a sorted list of paths (as a world's are indexed) the
/// next mostly differs in its last part: about a quarter of its bytes are read.
pub(crate) fn is_plain_after(before: &Path, path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    match files::first_difference(before.as_os_str().as_bytes(), bytes) {
        0 => is_plain_absolute(path),
        // Starting as `before` does, with `/`.
        at => bytes == b"/" || names_after_separators(bytes, at.saturating_sub(3)),
    }
}

/// True when each separator of `bytes` from `from` on starts a part that is a name:
/// neither empty (a repeated or trailing `/`) nor `.` nor `..`.
fn names_after_separators(bytes: &[u8], from: usize) -> bool {
    let plain_after = |at: usize| starts_with_name(&bytes[at + 1..]);
    let mut at = from;
    // Eight separators at a time, with the eight bytes after them: a byte of `suspect`
    // is set where a separator is followed by `/` or `.`.
    while at + 9 <= bytes.len() {
        let this = Bytes8::at(bytes, at);
        let next = Bytes8::at(bytes, at + 1);
        let mut suspect = this.equal(b'/') & (next.equal(b'/') | next.equal(b'.'));
        while suspect != 0 {
            if !plain_after(at + (suspect.trailing_zeros() / 8) as usize) {
                return false;
            }
            suspect &= suspect - 1;
        }
        at += 8;
    }
    (at..bytes.len()).all(|i| bytes[i] != b'/' || plain_after(i))
}

/// True when the part that starts `rest` (the bytes after a separator) is a name: not
/// empty, nor `.` nor `..`.
fn starts_with_name(rest: &[u8]) -> bool {
    !matches!(rest, [] | [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..])
}

/// Eight bytes of a path, read as one word, so that a comparison of each with a byte is a
/// few operations for all eight.
struct Bytes8(u64);

impl Bytes8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

    /// The eight bytes from `at`, the first in the lowest byte of the word.
    fn at(bytes: &[u8], at: usize) -> Self {
        let word: [u8; 8] = bytes[at..at + 8].try_into().expect("eight bytes");
        Bytes8(u64::from_le_bytes(word))
    }

    /// The high bit of each byte of the word set where the byte is `byte`, and only there:
    /// no carry crosses from one byte into the next (the sum of seven low bits and 0x7f
    /// stays in its byte).
    fn equal(&self, byte: u8) -> u64 {
        let diff = self.0 ^ (u64::from(byte) * 0x0101_0101_0101_0101);
        !(((diff & Self::LOW7) + Self::LOW7) | diff | Self::LOW7)
    }
}

/// `path` with `.` and `..` folded lexically, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    normalized(path).into_owned()
}

/// [`normalize`], borrowing `path` when there is nothing to fold, as in most paths, the
/// links trueup writes among them.
fn normalized(path: &Path) -> Cow<'_, Path> {
    if is_plain_absolute(path) {
        return Cow::Borrowed(path);
    }
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
    Cow::Owned(out)
}

/// Where a symlink at `link` with target `target` points, as an absolute, normalized path.
pub fn resolve_link(link: &Path, target: &Path) -> PathBuf {
    resolved_link(link, target).into_owned()
}

/// [`resolve_link`], borrowing `target` when it is absolute and normalized already, as the
/// links trueup writes are: the planner resolves two links a project.
pub(crate) fn resolved_link<'t>(link: &Path, target: &'t Path) -> Cow<'t, Path> {
    if is_plain_absolute(target) {
        return Cow::Borrowed(target);
    }
    let base = link.parent().unwrap_or(Path::new("/"));
    Cow::Owned(normalize(&base.join(target)))
}

/// `path.starts_with(base)`: from their bytes when both are plain ([`is_plain_absolute`]),
/// as a world's are, where `Path` compares them part by part (about 2,150 instructions for
/// an upload beside a root ten parts deep, 800 this way, most of them the two checks that
/// the paths are plain).
pub(crate) fn starts_with_path(path: &Path, base: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    if !(is_plain_absolute(base) && is_plain_absolute(path)) {
        return path.starts_with(base);
    }
    let (path, base) = (path.as_os_str().as_bytes(), base.as_os_str().as_bytes());
    base == b"/" || (path.starts_with(base) && matches!(path.get(base.len()), None | Some(b'/')))
}

/// True when `path` (normalized) is `root` or lies below it.
pub fn inside(root: &Path, path: &Path) -> bool {
    normalized(path).starts_with(normalized(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_are_the_joins_they_name() {
        for root in ["/srv/www", "/srv/www/", "/", "relative"] {
            let root = Path::new(root);
            let layout = Layout::new(root, "shop");
            let project = root.join("shop");
            assert_eq!(layout.project_dir(), project);
            assert_eq!(layout.releases_dir(), project.join("deployments"));
            assert_eq!(layout.release("d1"), project.join("deployments").join("d1"));
            assert_eq!(layout.current(), project.join("current"));
            assert_eq!(layout.webroot(), root.join("webroot").join("shop"));
            assert_eq!(layout.webroot_target(), project.join("current").join("public"));
            for path in [layout.release("d1"), layout.webroot_target(), layout.webroot()] {
                // Made at its size: at most the one separator the root already ends with.
                assert!(path.capacity() <= path.as_os_str().len() + 1, "{path:?}: {}", path.capacity());
            }
        }
    }

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

    #[test]
    fn a_plain_path_is_absolute_and_spelled_the_one_way_and_normalizes_to_itself() {
        for plain in ["/", "/a", "/var/www/p1/deployments/d1", "/a/.b/..c/b.."] {
            assert!(is_plain_absolute(Path::new(plain)), "{plain}");
            assert_eq!(normalize(Path::new(plain)).as_os_str(), plain, "{plain}");
        }
        // Each is spelled another way than its components write it; normalized, the
        // bytes are those of the plain spelling.
        let spelled = [
            ("/a//b", "/a/b"),
            ("/a/b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/.", "/a/b"),
            ("/a/x/../b", "/a/b"),
            ("/a/b/..", "/a"),
            ("//a", "/a"),
        ];
        for (path, normal) in spelled {
            assert!(!is_plain_absolute(Path::new(path)), "{path}");
            assert_eq!(normalize(Path::new(path)).as_os_str(), normal, "{path}");
        }
        for relative in ["", "a", "a/b", "./a", "../a"] {
            assert!(!is_plain_absolute(Path::new(relative)), "{relative}");
        }
        assert_eq!(normalize(Path::new("a/./b/../c")).as_os_str(), "a/c");
    }

    /// [`is_plain_absolute`] as its definition reads: each part after the first `/`.
    fn plain_by_parts(path: &str) -> bool {
        match path.strip_prefix('/') {
            Some("") => true,
            Some(rest) => rest.split('/').all(|part| !matches!(part, "" | "." | "..")),
            None => false,
        }
    }

    #[test]
    fn every_short_path_of_separators_dots_and_a_letter_is_plain_as_its_parts_say() {
        // Every spelling up to 11 bytes: a word of eight bytes, and the bytes after it.
        let mut paths = vec![String::new()];
        let mut longest = vec![String::new()];
        for _ in 0..11 {
            longest = longest.iter().flat_map(|p| ["/", ".", "a"].map(|c| format!("{p}{c}"))).collect();
            paths.extend(longest.iter().cloned());
        }
        assert_eq!(paths.len(), (0..=11).map(|n| 3usize.pow(n)).sum::<usize>());
        for path in &paths {
            assert_eq!(is_plain_absolute(Path::new(path)), plain_by_parts(path), "{path:?}");
        }
        // After each plain path of up to 6 bytes, each path of up to 6 bytes.
        let short: Vec<&String> = paths.iter().filter(|p| p.len() <= 6).collect();
        for before in short.iter().filter(|p| plain_by_parts(p)) {
            for path in &short {
                assert_eq!(
                    is_plain_after(Path::new(before), Path::new(path)),
                    plain_by_parts(path),
                    "{path:?} after {before:?}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Long paths, where the parts that are not plain fall anywhere in a word of
        /// eight bytes or across two.
        #[test]
        fn a_long_path_is_plain_as_its_parts_say(path in "/[/.ab]{0,60}", name in "[a-z]{8,20}") {
            for path in [path.clone(), format!("/{name}{path}"), format!("{path}/{name}")] {
                proptest::prop_assert_eq!(is_plain_absolute(Path::new(&path)), plain_by_parts(&path), "{:?}", path);
            }
        }

        /// A path after a plain one is plain as it is by itself, however much of the one
        /// before it starts with.
        #[test]
        fn a_path_after_a_plain_one_is_plain_as_by_itself(before in "/[/.ab]{0,30}", after in "[/.ab]{0,30}", cut in 0..31_usize) {
            let path = format!("{}{after}", &before[..cut.min(before.len())]);
            if is_plain_absolute(Path::new(&before)) {
                proptest::prop_assert_eq!(
                    is_plain_after(Path::new(&before), Path::new(&path)),
                    plain_by_parts(&path),
                    "{:?} after {:?}", path, before
                );
            }
        }

        /// A path starts with another as `Path` has it, whatever their spelling.
        #[test]
        fn a_path_starts_with_another_as_path_says(base in "/?[/.ab]{0,12}", rest in "[/.ab]{0,12}", cut in 0..13_usize) {
            let path = format!("{}{rest}", &base[..cut.min(base.len())]);
            for (path, base) in [(&path, &base), (&base, &path)] {
                let (path, base) = (Path::new(path), Path::new(base));
                proptest::prop_assert_eq!(starts_with_path(path, base), path.starts_with(base), "{:?} {:?}", path, base);
            }
        }

        /// [`join_all`] joins as [`Path::join`] does, part after part, whatever the parts.
        #[test]
        fn joining_all_is_joining_each_in_turn(base in "[/a.]{0,6}", parts in proptest::collection::vec("[/a.]{0,4}", 0..5)) {
            let mut joined = PathBuf::from(&base);
            for part in &parts {
                joined = joined.join(part);
            }
            proptest::prop_assert_eq!(join_all(Path::new(&base), &parts).into_os_string(), joined.into_os_string());
        }

        /// A link resolves as its folder joined with its target, normalized, whether or not
        /// the target is plain already.
        #[test]
        fn a_link_resolves_as_its_folder_joined_with_its_target(link in "/[a.]{1,3}(/[a.]{1,3}){0,3}", target in "/?[a.]{1,3}(/[a.]{0,3}){0,3}") {
            let (link, target) = (Path::new(&link), Path::new(&target));
            let joined = normalize(&link.parent().unwrap_or(Path::new("/")).join(target));
            proptest::prop_assert_eq!(resolve_link(link, target).into_os_string(), joined.into_os_string());
        }
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
    /// The owner of a claim the plan saw dead (its process gone): that claim does not
    /// refuse the verdict. Owner names are unique per process, so a claim taken since by
    /// a live worker still does.
    pub dead_claim: Option<&'a str>,
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

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Progress.
    Info,
    /// Something odd that did not stop the deployment.
    Warn,
    /// Something that failed.
    Error,
}

impl LogLevel {
    /// Its name, as the store's `deployment_logs.level` column spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level that [`LogLevel::as_str`] spells `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error].into_iter().find(|l| l.as_str() == text)
    }
}

/// One line of a deployment's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The deployment.
    pub deployment: String,
    /// When it was written.
    pub at: Timestamp,
    /// How much it matters.
    pub level: LogLevel,
    /// The phase the deployment was in, if any.
    pub phase: Option<String>,
    /// What happened, for a person.
    pub message: String,
    /// Structured details.
    pub metadata: BTreeMap<String, String>,
}

/// What a deployment's row holds when a verdict on it is about to be recorded: the part
/// of it that [`verdict`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The phase it is in.
    pub phase: String,
    /// Resumes of that phase so far.
    pub attempts: u32,
    /// The claim on it, if any, lapsed or not.
    pub owner: Option<Claim>,
    /// Its last progress: the later of the phase update and the heartbeat.
    pub last_progress: Option<Timestamp>,
}

impl Standing {
    /// Where `deployment` stands.
    pub fn of(deployment: &Deployment) -> Self {
        Standing {
            phase: deployment.phase.clone(),
            attempts: deployment.attempts,
            owner: deployment.owner.clone(),
            last_progress: deployment.last_progress(),
        }
    }
}

/// What [`verdict`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The deployment already is where the verdict puts it: nothing is written, and the
    /// verdict counts as done ([`Recorded::AlreadyThere`]).
    AlreadyThere,
    /// The verdict must not go through: a worker holds the deployment or acted on it
    /// since the plan was made.
    Refused(Refusal),
    /// The verdict goes through: write this, in one transaction.
    Go(Move),
}

/// Why a verdict may no longer go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another owner holds a claim that is live at the earlier of the verdict's instant
    /// and the wall clock.
    Claimed {
        /// Who holds it.
        owner: String,
        /// Until when.
        until: Timestamp,
    },
    /// The deployment is no longer in the phase the plan saw: someone moved it.
    PhaseMoved {
        /// The phase it is in.
        actual: String,
        /// Its attempts.
        attempts: u32,
    },
    /// Its worker showed progress after the plan saw it stuck.
    Progressed {
        /// Its last progress now.
        since: Option<Timestamp>,
    },
}

/// Everything a verdict that goes through writes. Writing it also gives the claim back
/// (owner and expiry cleared): the reconciler's own, and a lapsed one a dead worker left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The phase it enters.
    pub phase: String,
    /// Its attempts from now on.
    pub attempts: u32,
    /// The new `phase_updated_at`: the verdict's instant.
    pub phase_updated_at: Timestamp,
    /// The new `finished_at` when the verdict fails it; `None` keeps what the row holds.
    pub finished_at: Option<Timestamp>,
    /// The line to append to its log, saying why, with what an operator needs.
    pub log: LogEntry,
}

/// Decides whether verdict `v` on a deployment that stands as `row` may still go through,
/// for the reconciler named `reconciler`, with the wall clock at `wall`. The one place
/// that decides it: the store ([`crate::store::Store::record_verdict`]) and the in-memory
/// world (`MemoryWorld`, the test double of the `test-util` feature) both write what it
/// says.
///
/// The checks, in order:
/// 1. Already there (in `to_phase`, with the verdict's attempt for a resume): a repeated
///    verdict is a no-op, whoever holds the deployment now.
/// 2. Another owner's claim live at `min(v.now, wall)` refuses it: an instant passed by
///    hand (`--now`) can never make a worker's live claim look lapsed. A claim held by
///    the reconciler itself does not refuse, nor one the plan saw dead (`v.dead_claim`).
/// 3. A phase other than `from_phase` refuses it: someone moved the deployment.
/// 4. Last progress other than `stuck_since` refuses it: its worker is not stuck after
///    all. Phase and progress say whether anyone touched it; attempts alone would not (a
///    move to the next phase starts them afresh).
pub fn verdict(v: &Verdict<'_>, row: &Standing, wall: Timestamp, reconciler: &str) -> Decision {
    let there = row.phase == v.to_phase && v.attempt.is_none_or(|attempt| row.attempts == attempt);
    if there {
        return Decision::AlreadyThere;
    }
    if let Some(claim) = &row.owner
        && claim.owner != reconciler
        && Some(claim.owner.as_str()) != v.dead_claim
        && claim.until > v.now.min(wall)
    {
        return Decision::Refused(Refusal::Claimed { owner: claim.owner.clone(), until: claim.until });
    }
    if row.phase != v.from_phase {
        return Decision::Refused(Refusal::PhaseMoved { actual: row.phase.clone(), attempts: row.attempts });
    }
    if row.last_progress != v.stuck_since {
        return Decision::Refused(Refusal::Progressed { since: row.last_progress });
    }
    let attempts = v.attempt.unwrap_or(row.attempts);
    Decision::Go(Move {
        phase: v.to_phase.to_owned(),
        attempts,
        phase_updated_at: v.now,
        finished_at: v.attempt.is_none().then_some(v.now),
        log: verdict_log(v, attempts, reconciler),
    })
}

/// The log line of a verdict that goes through: its text, level and metadata.
fn verdict_log(v: &Verdict<'_>, attempts: u32, reconciler: &str) -> LogEntry {
    let (level, message) = match v.attempt {
        Some(a) if v.to_phase == v.from_phase => {
            (LogLevel::Warn, format!("resumed: restarting {} (attempt {a}): {}", v.to_phase, v.reason))
        }
        Some(_) => {
            (LogLevel::Warn, format!("resumed: {} verified, continuing in {}: {}", v.from_phase, v.to_phase, v.reason))
        }
        None => (LogLevel::Error, format!("failed in {}: {}", v.from_phase, v.reason)),
    };
    let mut metadata = BTreeMap::from([
        ("original_phase".to_owned(), v.from_phase.to_owned()),
        ("new_phase".to_owned(), v.to_phase.to_owned()),
        // The reconciler tried to resume it either way; a failure is that try's outcome.
        ("resume_attempted".to_owned(), "true".to_owned()),
        ("reason".to_owned(), v.reason.to_owned()),
        ("attempt".to_owned(), attempts.to_string()),
        ("reconciler".to_owned(), reconciler.to_owned()),
    ]);
    if let Some(since) = v.stuck_since {
        metadata.insert("stuck_since".to_owned(), since.to_string());
    }
    LogEntry {
        deployment: v.deployment.to_owned(),
        at: v.now,
        level,
        phase: Some(v.from_phase.to_owned()),
        message,
        metadata,
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().expect("a valid timestamp")
    }

    const NOW: &str = "2025-10-02T12:00:00Z";
    const STUCK: &str = "2025-10-02T11:00:00Z";

    fn resume(to: &'static str, attempt: u32) -> Verdict<'static> {
        Verdict {
            deployment: "d1",
            from_phase: "BUILDING",
            to_phase: to,
            attempt: Some(attempt),
            stuck_since: Some(t(STUCK)),
            dead_claim: None,
            reason: "stuck 1h",
            now: t(NOW),
        }
    }

    fn fail() -> Verdict<'static> {
        Verdict { to_phase: "FAILED", attempt: None, reason: "its upload is gone", ..resume("FAILED", 0) }
    }

    fn row(phase: &str, attempts: u32, owner: Option<(&str, &str)>) -> Standing {
        Standing {
            phase: phase.to_owned(),
            attempts,
            owner: owner.map(|(owner, until)| Claim::new(owner, t(until))),
            last_progress: Some(t(STUCK)),
        }
    }

    /// The one caller of [`verdict`] here: wall clock an hour after `NOW`, reconciler `r`.
    #[track_caller]
    fn check(v: &Verdict<'_>, row: &Standing) -> Decision {
        verdict(v, row, t("2025-10-02T13:00:00Z"), "r")
    }

    fn refusal(d: Decision) -> Refusal {
        match d {
            Decision::Refused(why) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_resume_moves_logs_and_keeps_finished_at() {
        let Decision::Go(to) = check(&resume("BUILDING", 2), &row("BUILDING", 1, None)) else { panic!() };
        assert_eq!(
            (to.phase.as_str(), to.attempts, to.phase_updated_at, to.finished_at),
            ("BUILDING", 2, t(NOW), None)
        );
        assert_eq!((to.log.level, to.log.at, to.log.phase.as_deref()), (LogLevel::Warn, t(NOW), Some("BUILDING")));
        assert_eq!(to.log.message, "resumed: restarting BUILDING (attempt 2): stuck 1h");
        let meta: Vec<_> = to.log.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            meta,
            [
                "attempt=2",
                "new_phase=BUILDING",
                "original_phase=BUILDING",
                "reason=stuck 1h",
                "reconciler=r",
                "resume_attempted=true",
                "stuck_since=2025-10-02T11:00:00Z",
            ]
        );
        let Decision::Go(on) = check(&resume("COPYING_FILES", 0), &row("BUILDING", 3, None)) else { panic!() };
        assert_eq!((on.phase.as_str(), on.attempts), ("COPYING_FILES", 0));
        assert_eq!(on.log.message, "resumed: BUILDING verified, continuing in COPYING_FILES: stuck 1h");
    }

    #[test]
    fn a_failure_finishes_keeping_the_attempts() {
        let v = Verdict { stuck_since: None, ..fail() };
        let Decision::Go(to) = check(&v, &Standing { last_progress: None, ..row("BUILDING", 3, None) }) else {
            panic!()
        };
        assert_eq!((to.phase.as_str(), to.attempts, to.finished_at), ("FAILED", 3, Some(t(NOW))));
        assert_eq!(
            (to.log.level, to.log.message.as_str()),
            (LogLevel::Error, "failed in BUILDING: its upload is gone")
        );
        assert_eq!(to.log.metadata["attempt"], "3");
        assert!(!to.log.metadata.contains_key("stuck_since"));
    }

    #[test]
    fn already_there_wins_over_every_refusal() {
        let held = Some(("worker", "2999-01-01T00:00:00Z"));
        assert_eq!(check(&resume("BUILDING", 2), &row("BUILDING", 2, held)), Decision::AlreadyThere);
        assert_eq!(check(&fail(), &row("FAILED", 7, held)), Decision::AlreadyThere, "whatever the attempts");
        // The same phase with other attempts is not there: it moved on or back.
        assert!(matches!(check(&resume("BUILDING", 2), &row("BUILDING", 1, held)), Decision::Refused(_)));
    }

    #[test]
    fn a_claim_refuses_while_live_at_the_earlier_of_now_and_the_wall_clock() {
        let v = resume("BUILDING", 1);
        let claimed = |until: &str, wall: &str, who: &str| {
            let row = row("BUILDING", 0, Some((who, until)));
            matches!(verdict(&v, &row, t(wall), "r"), Decision::Refused(Refusal::Claimed { .. }))
        };
        assert!(claimed("2025-10-02T12:00:01Z", "2025-10-02T13:00:00Z", "w"), "live at now");
        assert!(!claimed("2025-10-02T12:00:00Z", "2025-10-02T13:00:00Z", "w"), "lapses at its instant");
        // A wall clock behind `now` (a `--now` in the future) cannot make it look lapsed.
        assert!(claimed("2025-10-02T11:30:01Z", "2025-10-02T11:30:00Z", "w"), "live at the wall clock");
        assert!(!claimed("2025-10-02T11:30:00Z", "2025-10-02T11:30:00Z", "w"));
        assert!(!claimed("2999-01-01T00:00:00Z", "2025-10-02T13:00:00Z", "r"), "the reconciler's own claim");
        // A claim the plan saw dead does not refuse; another owner's live claim still does.
        let dead = Verdict { dead_claim: Some("w"), ..v.clone() };
        let row_w = row("BUILDING", 0, Some(("w", "2999-01-01T00:00:00Z")));
        assert!(!matches!(verdict(&dead, &row_w, t(NOW), "r"), Decision::Refused(_)), "the dead worker's claim");
        let row_x = row("BUILDING", 0, Some(("x", "2999-01-01T00:00:00Z")));
        assert!(matches!(verdict(&dead, &row_x, t(NOW), "r"), Decision::Refused(Refusal::Claimed { .. })));
        let why = refusal(check(&v, &row("QUEUED", 4, Some(("w", "2999-01-01T00:00:00Z")))));
        assert_eq!(why, Refusal::Claimed { owner: "w".into(), until: t("2999-01-01T00:00:00Z") }, "before the phase");
    }

    #[test]
    fn a_moved_phase_refuses_before_progress() {
        let moved = Standing { last_progress: Some(t(NOW)), ..row("QUEUED", 4, None) };
        assert_eq!(
            refusal(check(&resume("BUILDING", 1), &moved)),
            Refusal::PhaseMoved { actual: "QUEUED".into(), attempts: 4 }
        );
        let progressed = Standing { last_progress: Some(t(NOW)), ..row("BUILDING", 0, None) };
        assert_eq!(refusal(check(&resume("BUILDING", 1), &progressed)), Refusal::Progressed { since: Some(t(NOW)) });
        let never = Standing { last_progress: None, ..row("BUILDING", 0, None) };
        assert_eq!(refusal(check(&resume("BUILDING", 1), &never)), Refusal::Progressed { since: None });
    }

    #[test]
    fn log_levels_read_back_as_written() {
        for level in [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
            assert_eq!(LogLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(LogLevel::parse("fatal"), None);
    }
}
