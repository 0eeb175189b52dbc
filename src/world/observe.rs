//! Builds a [`World`] from the real machine: the state store, the managed root and the
//! route files.
//!
//! It only looks. Under the root it reads exactly the paths the planner reasons about,
//! for each project with a valid id: `ROOT/P`, `ROOT/P/current`, `ROOT/P/deployments`
//! (one entry per release), `ROOT/webroot/P`, and `ROOT/P/deployments/ID/public` of the
//! releases the planner may ask it of: the one `current` leads to, the one the webroot
//! link leads to, and, once the store has said which they are, the live releases (one
//! `fstatat` a project, where one for each release cost 3 to 4% of `plan`'s CPU). It
//! never walks a release's tree, follows no symbolic link but the root itself (a root
//! that is a link to a folder is observed as that folder; links below it are recorded with
//! their target, as `readlink` gives it), and only descends through real directories,
//! so nothing outside the root is reached through a link. Ids that are not plain names
//! stay in the world for the planner to report, but never become paths.
//!
//! Below the root every look is relative to an open folder (`world::at`): the root and
//! `ROOT/webroot` are opened once; each project's `P/deployments` is opened through `P`
//! in one call that refuses a link anywhere on the way (`openat2` with
//! `RESOLVE_NO_SYMLINKS`), and `current` read beside it as `../current`; when that call
//! fails (a link, a file, nothing there, an old kernel), `P` and then `deployments` are
//! opened one at a time with `O_NOFOLLOW`, so a link in their place is recorded, never
//! entered. Links are read at once rather than `lstat`ed first. A call then resolves a
//! name or two, not the whole path from `/` again.
//!
//! Of the store it reads what the rules need and not the history (see
//! [`Store::load_readable`]): of the finished releases, the newest per project, and the
//! rest of a project's releases only when it lost its folder while the folder of a
//! release not read is there, since that one may be the fallback `current` must point
//! at. The projects' folders are scanned while the store reads their deployments, from
//! 2,000 projects on by one thread per core (4 at most), each taking the next run of
//! [`SCAN_CHUNK`] projects nobody took yet; the route files are read on a thread of
//! their own.
//!
//! The sources of unfinished deployments (`source.file_path`, a local `source.repo`) are
//! looked at too, wherever they are, so the planner knows whether they still exist: those
//! outside the root as soon as the store has parsed the deployments, on its thread while
//! the scan goes on, those under it once the scan is done, unless it saw them; a folder
//! holding many of them (a PaaS's uploads) is listed rather than looked in name by name.
//! What was seen then becomes one map, on a thread of its own while the fallbacks are
//! looked for: the scan's paths and the sources' are one list, sorted once, where adding
//! the sources to a map of the scan's rebuilt the whole map (about 4 ms at 10,000
//! projects, on one core while the other idled).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::FileType;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::at::{Below, Dir, Kind, Link, Opened, Use};
use super::routes::{RouteError, observe_routes};
use crate::model::{
    Deployment, Files, Layout, Node, Project, World, join_all, path_order, resolved_link, starts_with_path, valid_id,
    valid_project_id,
};
use crate::spec::Specs;
use crate::store::{RELEASE_WINDOW, Store, StoreError};

/// Where to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveConfig {
    /// The managed root.
    pub root: PathBuf,
    /// The folder of route files (`--routes-dir`).
    pub routes_dir: PathBuf,
}

/// How much one observation cost, for tests that check it stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObserveStats {
    /// SQL statements run against the store.
    pub statements: u64,
    /// Folders opened (or tried: a path that is not a folder is then looked at).
    pub opened: u64,
    /// Looks at a path that tell only what it is (`lstat`, `fstatat`).
    pub stat: u64,
    /// Links read (or tried: a path that is not a link is then looked at).
    pub read_link: u64,
    /// Folders listed.
    pub read_dir: u64,
}

impl ObserveStats {
    fn add(&mut self, other: &ObserveStats) {
        self.statements += other.statements;
        self.opened += other.opened;
        self.stat += other.stat;
        self.read_link += other.read_link;
        self.read_dir += other.read_dir;
    }
}

/// Why the world could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A path exists but could not be looked at (for example permission denied).
    #[error("cannot observe `{path}`")]
    Fs {
        /// The path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The routes folder could not be listed.
    #[error(transparent)]
    Routes(#[from] RouteError),
}

/// Observes the world: the store's projects and deployments, the paths under the root,
/// the sources of unfinished deployments and the route files. Containers are `None`: no
/// container engine adapter exists yet.
///
/// # Errors
///
/// [`ObserveError::Store`], [`ObserveError::Fs`] for a path that exists but cannot be
/// looked at, [`ObserveError::Routes`].
pub fn observe(store: &Store, specs: &Specs, cfg: &ObserveConfig) -> Result<World, ObserveError> {
    observe_with_stats(store, specs, cfg).map(|(world, _)| world)
}

/// [`observe`], also counting the statements and file system calls it made.
///
/// # Errors
///
/// As [`observe`].
pub fn observe_with_stats(
    store: &Store,
    specs: &Specs,
    cfg: &ObserveConfig,
) -> Result<(World, ObserveStats), ObserveError> {
    let before = store.statements();
    // The route files are read on a thread of their own from the start, the projects'
    // folders are scanned while the store reads and parses their deployments, and the
    // sources of the unfinished ones outside the root are looked up as soon as they are
    // parsed, while the scan goes on.
    let mut scan = Scan::default();
    let (loaded, routes) = std::thread::scope(|s| {
        let routes = crate::threads::spawn(s, || observe_routes(&cfg.routes_dir));
        let loaded = store.load_readable(
            &specs.live_phases(),
            |projects| scan.root(&cfg.root, projects, Share::of(projects.len())),
            |deployments| Sources::look(&cfg.root, deployments),
        );
        (loaded, routes.join())
    });
    let ((projects, mut deployments, bad_rows), scanned, sources) = loaded?;
    scanned?;
    let Sources { seen: sourced, under: mut under_root } = sources;
    let mut sourced = sourced?;
    let routes = routes?;
    mark_gone_workers(&mut deployments, &crate::host::hostname());
    let mut unreadable = BTreeMap::new();
    for (project, error) in bad_rows {
        unreadable.entry(project).or_insert_with(|| error.to_string());
    }
    // The paths seen so far become a map on a thread of its own while the fallbacks,
    // finished deployments all, are looked for and read, and the `public`s the scan did
    // not look at are found: none needs another.
    let folders = std::mem::take(&mut scan.folders);
    let listed = folders.by_project();
    let (mut files, publics) = std::thread::scope(|s| {
        let files = crate::threads::spawn(s, || {
            // The sources outside the root, in one folder as a PaaS keeps its uploads,
            // mostly go in among the scan's paths in one piece (see `Files::append`).
            let mut files = scan.take_files();
            files.append(&mut sourced.take_files());
            files
        });
        let mut find_publics = || -> Result<Vec<PathBuf>, ObserveError> {
            let fallbacks = fallbacks_needed(specs, &deployments, &listed);
            if !fallbacks.is_empty() {
                let (more, bad_rows) = store.load_live_of(&fallbacks, &specs.live_phases())?;
                merge(&mut deployments, more);
                for (project, error) in bad_rows {
                    unreadable.entry(project).or_insert_with(|| error.to_string());
                }
            }
            // The `public` of a live release the scan did not look at (not the one
            // `current` or the webroot link leads to): nearly always none.
            Ok(publics_unseen(specs, &cfg.root, &deployments, &listed))
        };
        let publics = find_publics();
        (files.join(), publics)
    });
    let mut publics = publics?;
    // The sources under the root the scan did not see, and the `public` of another
    // project's release a webroot link leads to: nearly always none.
    under_root.retain(|path| !files.contains_key(path));
    sourced.paths(&under_root)?;
    publics.extend(
        scan.elsewhere
            .iter()
            .filter(|public| {
                let release = public.parent().expect("a `public` below a release");
                release.file_name().and_then(OsStr::to_str).is_some_and(valid_id)
                    && files.get(release) == Some(&Node::Dir)
                    && !files.contains_key(public.as_path())
            })
            .cloned(),
    );
    publics.sort_unstable_by(|a, b| path_order(a, b));
    publics.dedup();
    sourced.paths(&publics)?;
    scan.stats.add(&sourced.stats);
    files.append(&mut sourced.take_files());
    scan.stats.stat += 1;
    let routes_folder_missing = !cfg.routes_dir.is_dir();
    scan.stats.statements = store.statements() - before;
    let world = World {
        root: cfg.root.clone(),
        projects,
        deployments,
        files,
        containers: None,
        images: None,
        routes,
        routes_folder_missing,
        unreadable,
    };
    Ok((world, scan.stats))
}

/// The projects whose newest live releases, as many as the store read for them
/// ([`RELEASE_WINDOW`]), all lost their release folder while the folder of a deployment
/// not read is there: it may be an older live release, the fallback `current` must
/// point at, so the rest of their live releases must be read. A project without such a
/// folder has no fallback to find, however long its history: under a wrong `--root`,
/// nothing more is read.
///
/// `deployments` are sorted by project, as the store returns them; `folders` are the
/// names the scan listed in each project's `deployments` ([`Folders`]), walked beside
/// them in the order of their ids: no path is made, searched or compared.
fn fallbacks_needed<'a>(specs: &Specs, deployments: &'a [Deployment], listed: &[(&[u8], &[u8])]) -> Vec<&'a str> {
    debug_assert!(deployments.is_sorted_by(|a, b| a.project <= b.project), "deployments sorted by project");
    let mut needed = Vec::new();
    let mut window: Vec<&Deployment> = Vec::new();
    let mut listing = Beside::new(listed);
    for of_project in deployments.chunk_by(|a, b| a.project == b.project) {
        window.clear();
        window.extend(of_project.iter().filter(|d| d.finished_at.is_some() && specs.is_live(d)));
        // Only a project with a whole window of live releases can need more; the others'
        // were all read.
        if window.len() < RELEASE_WINDOW as usize {
            continue;
        }
        let project = of_project[0].project.as_str();
        let Some(names) = listing.names_of(project) else { continue };
        // As the planner has it ([`crate::plan::release_present`]): an id that is no
        // plain name is never live, a release its container serves needs no folder.
        let candidates = window.iter().filter(|d| valid_id(&d.id));
        let mut present = candidates.clone().any(|d| !d.kind.has_release_folder());
        let mut other = false;
        for (name, _) in Folders::names(names) {
            if candidates.clone().any(|d| d.id.as_bytes() == name) {
                present = true;
            } else if !of_project.iter().any(|d| d.id.as_bytes() == name) {
                other |= std::str::from_utf8(name).is_ok_and(valid_id);
            }
        }
        if !present && other {
            needed.push(project);
        }
    }
    needed
}

/// The `public` of each release of `deployments` (sorted by project) that the planner may
/// take for live, whose folder the scan listed (`listed`, [`Folders::by_project`]) but
/// whose `public` it did not look at ([`Scan::releases`]): the planner asks for the live
/// release's, which is the one `current` leads to unless `current` is wrong.
fn publics_unseen(specs: &Specs, root: &Path, deployments: &[Deployment], listed: &[(&[u8], &[u8])]) -> Vec<PathBuf> {
    debug_assert!(deployments.is_sorted_by(|a, b| a.project <= b.project), "deployments sorted by project");
    let mut unseen = Vec::new();
    let mut listing = Beside::new(listed);
    for of_project in deployments.chunk_by(|a, b| a.project == b.project) {
        let project = of_project[0].project.as_str();
        // As the planner has them ([`crate::plan::releases`]).
        let mut live =
            of_project.iter().filter(|d| specs.is_live(d) && d.kind.has_release_folder() && valid_id(&d.id)).peekable();
        if live.peek().is_none() {
            continue;
        }
        let Some(names) = listing.names_of(project) else { continue };
        for d in live {
            if Folders::names(names).any(|(name, looked)| name == d.id.as_bytes() && !looked) {
                unseen.push(join_all(&Layout::new(root, project).release(&d.id), &["public"]));
            }
        }
    }
    unseen
}

/// The scan's listing ([`Folders::by_project`]) walked beside the store's projects: both
/// come in the order of their ids, so each project's part is found where the last one
/// was left, no list searched.
struct Beside<'l, 'b> {
    listed: &'l [(&'b [u8], &'b [u8])],
    at: usize,
}

impl<'l, 'b> Beside<'l, 'b> {
    fn new(listed: &'l [(&'b [u8], &'b [u8])]) -> Self {
        Beside { listed, at: 0 }
    }

    /// The part of `project` (for [`Folders::names`]), asked in the order of ids; `None`
    /// for a project never scanned (its id is no plain name, or its folder is not there),
    /// which has no folder.
    fn names_of(&mut self, project: &str) -> Option<&'b [u8]> {
        while self.listed.get(self.at).is_some_and(|(id, _)| *id < project.as_bytes()) {
            self.at += 1;
        }
        self.listed.get(self.at).filter(|(id, _)| *id == project.as_bytes()).map(|(_, names)| *names)
    }
}

/// The names of the folders in each project's `deployments`, as the scan lists them, for
/// [`fallbacks_needed`]: kept where the listing is at hand, so that finding whether a
/// project needs more of its releases read searches no list of paths (that search, and
/// the check that the list was sorted for it, took about 17 ms at 10,000 projects, on
/// one core while the other idled).
#[derive(Debug, Default)]
struct Folders {
    /// Each project's id, then the names of its folders, each followed by `/`, which no
    /// name holds, and preceded by a NUL, which no name holds either, when the scan
    /// looked at its `public`.
    bytes: Vec<u8>,
    /// Where each project's part of `bytes` ends, in the order the projects were scanned.
    ends: Vec<usize>,
}

impl Folders {
    /// Starts the part of project `id`.
    fn project(&mut self, id: &str) {
        self.bytes.extend_from_slice(id.as_bytes());
        self.bytes.push(b'/');
        self.ends.push(self.bytes.len());
    }

    /// Adds the folder `name` to the project started last, `looked` when the scan looked
    /// at its `public`.
    fn folder(&mut self, name: &OsStr, looked: bool) {
        if looked {
            self.bytes.push(0);
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(b'/');
        if let Some(end) = self.ends.last_mut() {
            *end = self.bytes.len();
        }
    }

    /// Adds the projects of `other` after these.
    fn append(&mut self, other: Folders) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|end| end + at));
    }

    /// Each project's id and its part of names (for [`Folders::names`]), sorted by id:
    /// the scan's order, the store's, unless a project came twice or out of order.
    fn by_project(&self) -> Vec<(&[u8], &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let mut listed: Vec<(&[u8], &[u8])> = starts
            .zip(&self.ends)
            .map(|(start, &end)| {
                let part = &self.bytes[start..end];
                // The id ends at the first separator; the names follow it.
                part.split_at(part.iter().position(|&b| b == b'/').unwrap_or(part.len()))
            })
            .collect();
        if !listed.is_sorted_by(|a, b| a.0 <= b.0) {
            listed.sort_by(|a, b| a.0.cmp(b.0));
        }
        listed
    }

    /// The names in a part of [`Folders::by_project`] (which starts with a separator),
    /// each with whether the scan looked at its `public`.
    fn names(part: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
        part.split(|&b| b == b'/').filter(|name| !name.is_empty()).map(|name| match name {
            [0, name @ ..] => (name, true),
            name => (name, false),
        })
    }
}

/// The uploads and local repositories of unfinished deployments, wherever they are, each
/// once and sorted by their bytes: those outside `root`, then those under it. Relative
/// paths and remote repository URLs are not looked up: the first would depend on the
/// current directory, the second on the network.
fn source_paths<'d>(root: &Path, deployments: &'d [Deployment]) -> (Vec<&'d Path>, Vec<&'d Path>) {
    let mut paths: Vec<&Path> = Vec::new();
    for d in deployments.iter().filter(|d| d.finished_at.is_none()) {
        let upload = d.source.file_path.as_deref();
        let repo = d.source.repo.as_deref().map(Path::new);
        paths.extend([upload, repo].into_iter().flatten().filter(|p| p.is_absolute()));
    }
    // Sorted by their bytes, only to drop repeats: no path is split into components.
    paths.sort_unstable_by_key(|p| p.as_os_str().as_bytes());
    paths.dedup_by_key(|p| p.as_os_str().as_bytes());
    paths.into_iter().partition(|p| !starts_with_path(p, root))
}

/// The sources of unfinished deployments ([`source_paths`]), as the store gives them.
struct Sources {
    /// What a look at those outside the root saw.
    seen: Result<Scan, ObserveError>,
    /// Those under the root: looked up once the scan is done, unless it saw them.
    under: Vec<PathBuf>,
}

impl Sources {
    /// Looks up the sources of `deployments` outside `root`, on this thread, and keeps
    /// those under it for later.
    ///
    /// Beside the scan both cores are busy already: threads of their own for the sources
    /// added no core, only peak memory (62 to 72 MiB at 10,000 projects with two, 63 to
    /// 64 with one, in 10 alternating runs each; no difference in time past the spread).
    fn look(root: &Path, deployments: &[Deployment]) -> Self {
        let (outside, under) = source_paths(root, deployments);
        let mut seen = Scan::default();
        let seen = seen.paths(&outside).map(|()| seen);
        Sources { seen, under: under.into_iter().map(Path::to_path_buf).collect() }
    }
}

/// Adds `more` to `deployments`, each id once, keeping them sorted by project then id.
fn merge(deployments: &mut Vec<Deployment>, more: Vec<Deployment>) {
    let known: BTreeSet<String> = deployments.iter().map(|d| d.id.clone()).collect();
    deployments.extend(more.into_iter().filter(|d| !known.contains(&d.id)));
    deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
}

/// Marks the claims whose worker ran on `host` and whose process is gone: their
/// deployments are resumable at once (see [`crate::model::Claim::gone`]).
fn mark_gone_workers(deployments: &mut [crate::model::Deployment], host: &str) {
    let claims = deployments.iter_mut().filter_map(|d| d.owner.as_mut());
    for claim in claims.filter(|c| c.process.as_ref().is_some_and(|p| crate::host::is_gone(p, host))) {
        claim.gone = true;
    }
}

/// The paths seen so far and what seeing them cost.
///
/// Paths are gathered in a list, in the order of paths (each project's, and apart from
/// them `ROOT/webroot` and its links), and made a [`Files`] once, by [`Scan::take_files`]:
/// the check that the list is sorted costs a path comparison a path, where inserting each
/// into a map cost a descent of the tree, about twenty.
#[derive(Default)]
struct Scan {
    files: Vec<(PathBuf, Node)>,
    /// `ROOT/webroot` and `ROOT/webroot/P`, kept apart so that both lists stay sorted.
    webroot_links: Vec<(PathBuf, Node)>,
    /// The folders in each project's `deployments`, by name.
    folders: Folders,
    /// The `public` of another project's release that a webroot link leads to, looked at
    /// once the scan is done, when the release is there ([`publics_unseen`]).
    elsewhere: Vec<PathBuf>,
    stats: ObserveStats,
}

impl Scan {
    /// The paths seen since the last call, as [`Files`].
    fn take_files(&mut self) -> Files {
        // `collect` sees in one pass that a sorted list is sorted, and sorts one that is
        // not.
        self.take_list().into_iter().collect()
    }

    /// The paths seen since the last call, in the order of paths ([`path_order`]) as a
    /// scan sees them.
    ///
    /// The webroot's paths all sort together, where `ROOT/webroot` sorts among the
    /// projects: they go in there as one block, found by a search of the bytes, rather
    /// than leave [`Files`]' sort a merge of the two lists, each of its steps a comparison
    /// of paths. Each list is sorted, the projects coming by id as the store gives them.
    fn take_list(&mut self) -> Vec<(PathBuf, Node)> {
        let mut files = std::mem::take(&mut self.files);
        let links = std::mem::take(&mut self.webroot_links);
        if let Some((first, _)) = links.first() {
            let at = files.partition_point(|(path, _)| path_order(path, first) == Ordering::Less);
            files.splice(at..at, links);
        }
        files
    }

    /// The root, `ROOT/webroot` and each valid project's paths, shared as `share` says.
    fn root(&mut self, root: &Path, projects: &[Project], share: Share) -> Result<(), ObserveError> {
        let mut kind = self.lstat(root)?;
        // The root itself may be a link to a folder (`/var/www` -> `/srv/www`): it is the
        // one link followed, so it is recorded as the folder it leads to. Links below it
        // are never followed.
        if kind == Some(Kind::Symlink) && std::fs::metadata(root).is_ok_and(|m| m.is_dir()) {
            self.files.pop();
            self.files.push((root.to_owned(), Node::Dir));
            kind = Some(Kind::Dir);
        }
        if kind != Some(Kind::Dir) {
            return Ok(());
        }
        self.stats.opened += 1;
        let top = match Dir::open(root, Use::Lookups).map_err(fs_error(root))? {
            Opened::Dir(top) => top,
            // Gone or replaced since: nothing below it to see.
            Opened::Other(_) | Opened::Absent => return Ok(()),
        };
        let before = self.files.len();
        let webroot = self.open(&top, root, "webroot", Use::Lookups)?;
        self.webroot_links.extend(self.files.drain(before..));
        let valid: Vec<&Project> = projects.iter().filter(|p| valid_project_id(&p.id)).collect();
        let (top, webroot) = (&top, webroot.as_ref());
        self.split(&valid, share, |scan, part| scan.projects(root, top, webroot, part))
    }

    /// Runs `look` over `items` cut in runs of `share.chunk`, shared by this thread and up
    /// to `share.threads - 1` more, each taking the next run nobody took yet (so none
    /// idles while another has runs left: the store and the route files take turns on
    /// the same cores), then gathers what each run saw in the runs' order, so the paths
    /// stay sorted runs. The work is mostly waiting for the kernel. A failed look ends its
    /// run; the first failure in the order of `items` is the one given.
    fn split<T: Sync>(
        &mut self,
        items: &[T],
        share: Share,
        look: impl Fn(&mut Scan, &[T]) -> Result<(), ObserveError> + Sync,
    ) -> Result<(), ObserveError> {
        let helpers = share.threads.saturating_sub(1);
        let ((), runs) = crate::threads::share(
            items,
            share.chunk,
            helpers,
            || (),
            |run| {
                let mut scan = Scan::default();
                look(&mut scan, run).map(|()| scan)
            },
        );
        let runs = runs.into_iter().collect::<Result<Vec<Scan>, _>>()?;
        // Room for every run's paths and the webroot links that go in among them (see
        // `Scan::take_list`) at once, rather than the list grown as they come: 4.1 to 7.3
        // ms of gathering down to 2.5 to 3.7 at 10,000 projects (four runs each way).
        let paths = runs.iter().map(|run| run.files.len() + run.webroot_links.len()).sum();
        self.files.reserve(paths);
        for mut run in runs {
            self.files.append(&mut run.files);
            self.webroot_links.append(&mut run.webroot_links);
            self.folders.append(run.folders);
            self.elsewhere.append(&mut run.elsewhere);
            self.stats.add(&run.stats);
        }
        Ok(())
    }

    /// Each of `projects`' paths: its folder, `current`, releases and webroot link, read
    /// relative to the open root and webroot folders.
    fn projects(
        &mut self,
        root: &Path,
        top: &Dir,
        webroot: Option<&Dir>,
        projects: &[&Project],
    ) -> Result<(), ObserveError> {
        let webroot_path = root.join("webroot");
        for project in projects {
            self.folders.project(&project.id);
            let path = join_all(root, &[&project.id]);
            let releases_dir = join_all(&path, &["deployments"]);
            // The webroot link first: the release it leads to, as the one `current` leads
            // to, has its `public` looked at (see `Scan::releases`).
            let mut wanted: [Option<OsString>; 2] = [None, None];
            if let Some(webroot) = webroot {
                let before = self.files.len();
                self.read_link(webroot, &webroot_path, &project.id)?;
                wanted[0] = self.webroot_release(root, &releases_dir, before);
                self.webroot_links.extend(self.files.drain(before..));
            }
            // Most projects have both folders, opened in one call when neither is a link;
            // the others, and all on a kernel without that call, are looked at one name
            // at a time, which tells what is there.
            let below = top
                .open_below(join_all(Path::new(&project.id), &["deployments"]).as_os_str(), Use::Listing)
                .map_err(fs_error(&path))?;
            if !matches!(below, Below::Unasked) {
                self.stats.opened += 1;
            }
            if let Below::Opened(releases) = below {
                self.files.push((path.clone(), Node::Dir));
                // `current` beside the folder opened: `..` of a folder is the one it is in.
                let before = self.files.len();
                self.read_link_to(&releases, "../current".as_ref(), join_all(&path, &["current"]))?;
                wanted[1] = self.linked_release(&releases_dir, before);
                self.files.push((releases_dir.clone(), Node::Dir));
                self.releases(releases, releases_dir, &wanted)?;
            } else if let Some(dir) = self.open(top, root, &project.id, Use::Lookups)? {
                let before = self.files.len();
                self.read_link(&dir, &path, "current")?;
                wanted[1] = self.linked_release(&releases_dir, before);
                if let Some(releases) = self.open(&dir, &path, "deployments", Use::Listing)? {
                    self.releases(releases, releases_dir, &wanted)?;
                }
            }
        }
        Ok(())
    }

    /// The release of `releases_dir` (`ROOT/P/deployments`) that the link recorded at
    /// `at`, if a link was recorded there, leads to, by name.
    fn linked_release(&self, releases_dir: &Path, at: usize) -> Option<OsString> {
        let (link, Node::Symlink(target)) = self.files.get(at)? else { return None };
        entry_of(releases_dir, &resolved_link(link, target)).map(OsStr::to_owned)
    }

    /// The release of `releases_dir` whose `public` the webroot link recorded at `at`
    /// leads to, by name; the `public` of another project's release is kept for later
    /// (`Scan::elsewhere`).
    fn webroot_release(&mut self, root: &Path, releases_dir: &Path, at: usize) -> Option<OsString> {
        let (link, Node::Symlink(target)) = self.files.get(at)? else { return None };
        // The link as trueup writes it, to `ROOT/P/current/public`, leads to no release
        // by name (its `current`'s is looked at anyway), and to no other project's: said
        // from its bytes, without the parse of its parts below (about 2,500 instructions
        // a project, 25 million at 10,000).
        let project_dir = releases_dir.as_os_str().as_bytes().strip_suffix(b"/deployments");
        if project_dir.is_some_and(|dir| target.as_os_str().as_bytes().strip_prefix(dir) == Some(b"/current/public")) {
            return None;
        }
        let public = resolved_link(link, target);
        let release = public.parent().filter(|_| public.file_name() == Some(OsStr::new("public")))?;
        if let Some(name) = entry_of(releases_dir, release) {
            return Some(name.to_owned());
        }
        // `ROOT/X/deployments/R/public`, for another project X.
        let project_dir =
            release.parent().filter(|dir| dir.file_name() == Some(OsStr::new("deployments")))?.parent()?;
        if project_dir.parent() == Some(root) {
            self.elsewhere.push(public.into_owned());
        }
        None
    }

    /// The entries of `ROOT/P/deployments` (open as `releases`, at `dir`), one per
    /// release, and the `public` of the releases `wanted`: those `current` and the
    /// webroot link lead to. The planner asks for the `public` of the live release, to
    /// say whether the webroot link will lead anywhere, and of the release the webroot
    /// link leads to, to say whether it dangles. The live release is `current`'s unless
    /// `current` is wrong: then its `public` is looked at once the store has said which
    /// it is ([`publics_unseen`]).
    fn releases(&mut self, mut releases: Dir, dir: PathBuf, wanted: &[Option<OsString>]) -> Result<(), ObserveError> {
        self.stats.read_dir += 1;
        let mut entries = Vec::new();
        for (name, kind) in releases.entries().map_err(fs_error(&dir))? {
            let kind = match kind {
                Some(kind) => Some(kind),
                // The listing did not say: one call more for this entry.
                None => self.stat(&releases, &dir, &name)?,
            };
            entries.extend(kind.map(|kind| (name, kind)));
        }
        // By name, each release before its `public`: the paths stay in order (see `Scan`).
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            self.found(&releases, &dir, &name, kind)?;
            if kind != Kind::Dir {
                continue;
            }
            let looked = name.to_str().is_some_and(valid_id) && wanted.iter().any(|w| w.as_deref() == Some(&*name));
            self.folders.folder(&name, looked);
            if looked {
                let public = join_all(Path::new(&name), &["public"]);
                if let Some(kind) = self.stat(&releases, &dir, public.as_os_str())? {
                    self.found(&releases, &dir, public.as_os_str(), kind)?;
                }
            }
        }
        Ok(())
    }

    /// What `name` is in `dir` (at `path`), without following a final link.
    fn stat(&mut self, dir: &Dir, path: &Path, name: &OsStr) -> Result<Option<Kind>, ObserveError> {
        self.stats.stat += 1;
        dir.stat(name).map_err(|source| ObserveError::Fs { path: join_all(path, &[name]), source })
    }

    /// Records `name` in `dir` (at `path`), known to be of `kind`: a link with its target.
    fn found(&mut self, dir: &Dir, path: &Path, name: &OsStr, kind: Kind) -> Result<(), ObserveError> {
        let path = join_all(path, &[name]);
        let node = match kind {
            Kind::Symlink => {
                self.stats.read_link += 1;
                let link = dir.read_link(name).map_err(fs_error(&path))?;
                self.record_link(path, link);
                return Ok(());
            }
            Kind::Dir => Node::Dir,
            Kind::File | Kind::Special => Node::File,
        };
        self.files.push((path, node));
        Ok(())
    }

    /// Opens `name` in `dir` (at `path`) for `use_` if it is a real folder, recording
    /// it; records what else is there otherwise.
    fn open(&mut self, dir: &Dir, path: &Path, name: &str, use_: Use) -> Result<Option<Dir>, ObserveError> {
        self.stats.opened += 1;
        let full = join_all(path, &[name]);
        match dir.open_dir(name.as_ref(), use_).map_err(fs_error(&full))? {
            Opened::Dir(opened) => {
                self.files.push((full, Node::Dir));
                Ok(Some(opened))
            }
            Opened::Other(kind) => {
                // The open looked at it to say what it is.
                self.stats.stat += 1;
                self.found(dir, path, name.as_ref(), kind)?;
                Ok(None)
            }
            Opened::Absent => Ok(None),
        }
    }

    /// Reads the link `name` in `dir` (at `path`), recording it or what is there instead.
    fn read_link(&mut self, dir: &Dir, path: &Path, name: &str) -> Result<(), ObserveError> {
        self.read_link_to(dir, name.as_ref(), join_all(path, &[name]))
    }

    /// Reads the link `name` relative to `dir`, which is at `path`, recording it or what
    /// is there instead.
    fn read_link_to(&mut self, dir: &Dir, name: &OsStr, path: PathBuf) -> Result<(), ObserveError> {
        self.stats.read_link += 1;
        let link = dir.read_link(name).map_err(fs_error(&path))?;
        if matches!(link, Link::Other(_)) {
            self.stats.stat += 1;
        }
        self.record_link(path, link);
        Ok(())
    }

    /// Records what a read of a link found at `path`.
    fn record_link(&mut self, path: PathBuf, link: Link) {
        let node = match link {
            Link::Target(target) => Node::Symlink(target),
            Link::Other(Kind::Dir) => Node::Dir,
            Link::Other(_) => Node::File,
            Link::Absent => return,
        };
        self.files.push((path, node));
    }

    /// Looks up each of `paths` (sorted) relative to its folder, opened once for a run of
    /// paths in it (a PaaS mostly keeps its uploads in one): a call then resolves one
    /// name, not the whole path again. A run of [`LIST_FROM`] paths or more is found in
    /// a listing of their folder instead, which tells what each entry is (about 0.3 µs an
    /// entry where a look cost 1.5 µs, with 10,000 uploads), unless the folder holds more
    /// than [`LIST_PER_PATH`] entries a path: the listing then stops, and each path is
    /// looked up.
    fn paths<P: AsRef<Path>>(&mut self, paths: &[P]) -> Result<(), ObserveError> {
        let mut rest = paths;
        while let Some(path) = rest.first().map(AsRef::as_ref) {
            let Some(parent) = path.parent().filter(|_| path.file_name().is_some()) else {
                self.lstat(path)?;
                rest = &rest[1..];
                continue;
            };
            let names: Vec<&OsStr> = rest
                .iter()
                .map_while(|p| {
                    let (dir, name) = (p.as_ref().parent()?, p.as_ref().file_name()?);
                    (dir.as_os_str() == parent.as_os_str()).then_some(name)
                })
                .collect();
            rest = &rest[names.len()..];
            self.stats.opened += 1;
            // Opened for a listing when it may pay, for lookups alone otherwise or when it
            // cannot be read (search permission is enough for a look); either serves the
            // looks of a listing that stopped.
            let listing = (names.len() >= LIST_FROM).then(|| Dir::open(parent, Use::Listing).ok()).flatten();
            let listable = listing.is_some();
            let opened = match listing {
                Some(opened) => opened,
                None => Dir::open(parent, Use::Lookups).map_err(fs_error(parent))?,
            };
            // No folder there, so nothing in it.
            let Opened::Dir(mut dir) = opened else { continue };
            if listable && self.listed(&mut dir, parent, &names)? {
                continue;
            }
            for name in names {
                if let Some(kind) = self.stat(&dir, parent, name)? {
                    self.found(&dir, parent, name, kind)?;
                }
            }
        }
        Ok(())
    }

    /// Records what of `names` is in `dir` (the folder `parent`, open for a listing), from
    /// a listing of it: false, with nothing recorded, when it holds more than
    /// [`LIST_PER_PATH`] entries a name or cannot be listed to its end.
    fn listed(&mut self, dir: &mut Dir, parent: &Path, names: &[&OsStr]) -> Result<bool, ObserveError> {
        self.stats.read_dir += 1;
        let Ok(Some(entries)) = dir.entries_up_to(LIST_PER_PATH * names.len()) else { return Ok(false) };
        // Each name looked for by its hash among the entries, where a sort of the listing
        // and a search in it cost about 1,200 instructions an entry more.
        let mut kinds: HashMap<&[u8], Option<Kind>, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(entries.len(), foldhash::fast::RandomState::default());
        kinds.extend(entries.iter().map(|(entry, kind)| (entry.as_bytes(), *kind)));
        for name in names {
            let kind = match kinds.get(name.as_bytes()) {
                None => continue,
                Some(Some(kind)) => Some(*kind),
                // The listing did not say: one call more for this entry.
                Some(None) => self.stat(dir, parent, name)?,
            };
            if let Some(kind) = kind {
                self.found(dir, parent, name, kind)?;
            }
        }
        Ok(true)
    }

    /// Records what is at `path` without following a final link; `None` when absent.
    fn lstat(&mut self, path: &Path) -> Result<Option<Kind>, ObserveError> {
        self.stats.stat += 1;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => self.record(path, meta.file_type()).map(Some),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
            Err(source) => Err(ObserveError::Fs { path: path.to_owned(), source }),
        }
    }

    /// Records a path of a known type, reading a link's target.
    fn record(&mut self, path: &Path, file_type: FileType) -> Result<Kind, ObserveError> {
        let (node, kind) = if file_type.is_symlink() {
            self.stats.read_link += 1;
            let target =
                std::fs::read_link(path).map_err(|source| ObserveError::Fs { path: path.to_owned(), source })?;
            (Node::Symlink(target), Kind::Symlink)
        } else if file_type.is_dir() {
            (Node::Dir, Kind::Dir)
        } else {
            (Node::File, Kind::File)
        };
        self.files.push((path.to_owned(), node));
        Ok(kind)
    }
}

/// How many paths in one folder are found by listing it rather than one look each
/// ([`Scan::paths`]): below that, the looks cost about a tenth of a millisecond.
const LIST_FROM: usize = 64;

/// How many entries a folder listed for [`Scan::paths`] may hold for each path looked
/// for: past that, the listing stops. By the costs in [`Scan::paths`] (0.3 µs an entry,
/// 1.5 µs a look), a folder of old uploads a hundred times larger than those in flight
/// then costs about two fifths of a look more per path than the looks alone (the two
/// entries a path read before it stops), and at most one read of the listing (8 KiB of
/// entries) past its bound; one that holds little else, a fifth of the looks.
const LIST_PER_PATH: usize = 2;

/// The most threads a scan uses.
const MAX_THREADS: usize = 4;

/// How many projects (or sources) a thread of a scan split among threads looks at before
/// it takes more: a few milliseconds of work, so that the threads end together. Each run
/// of sources opens their folder again.
pub const SCAN_CHUNK: usize = 256;

/// How a scan is shared among threads.
#[derive(Debug, Clone, Copy)]
struct Share {
    /// How many threads look, this one among them.
    threads: usize,
    /// How many items a thread takes at a time.
    chunk: usize,
}

impl Share {
    /// The share of a scan of `items` projects or sources: one thread for a small root,
    /// where starting threads costs more than it saves, and all items in one run; else
    /// one per core, up to [`MAX_THREADS`], [`SCAN_CHUNK`] items at a time.
    fn of(items: usize) -> Self {
        match crate::threads::count(items, MAX_THREADS) {
            1 => Share { threads: 1, chunk: items },
            threads => Share { threads, chunk: SCAN_CHUNK },
        }
    }
}

/// The name of `path` in `dir`, when `path` is `dir/NAME`.
///
/// A path spelled as `dir`, a `/` and a name (not empty, nor `.` nor `..`, no `/`), as the
/// links trueup writes are, is that name without a parse of its parts (`Path`'s `parent`
/// and `file_name` took about 570 instructions, at a link or two a project).
fn entry_of<'p>(dir: &Path, path: &'p Path) -> Option<&'p OsStr> {
    let spelled = (!dir.as_os_str().is_empty())
        .then(|| path.as_os_str().as_bytes().strip_prefix(dir.as_os_str().as_bytes())?.strip_prefix(b"/"))
        .flatten()
        .filter(|name| !name.contains(&b'/') && !matches!(*name, b"" | b"." | b".."));
    if let Some(name) = spelled {
        return Some(OsStr::from_bytes(name));
    }
    let (parent, name) = (path.parent()?, path.file_name()?);
    (parent.as_os_str() == dir.as_os_str() || parent == dir).then_some(name)
}

/// The error of a look at `path` that failed.
fn fs_error(path: &Path) -> impl Fn(std::io::Error) -> ObserveError + '_ {
    move |source| ObserveError::Fs { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_split_among_threads_sees_what_one_thread_sees() {
        let dir = crate::test_dir::TestDir::new("scan");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("webroot")).unwrap();
        let mut projects = Vec::new();
        for i in 0..23 {
            let id = format!("p{i:02}");
            let release = root.join(&id).join("deployments/d1");
            std::fs::create_dir_all(release.join("public")).unwrap();
            std::fs::create_dir_all(root.join(&id).join("deployments/d2")).unwrap();
            std::os::unix::fs::symlink(&release, root.join(&id).join("current")).unwrap();
            if i % 3 != 0 {
                std::os::unix::fs::symlink(root.join(&id).join("current/public"), root.join("webroot").join(&id))
                    .unwrap();
            }
            projects.push(Project { id, active: true, domain: None, services: Vec::new() });
        }
        let scan = |threads, chunk| {
            let mut scan = Scan::default();
            scan.root(&root, &projects, Share { threads, chunk }).unwrap();
            let stats = scan.stats;
            (scan.take_files(), stats)
        };
        let (one, one_stats) = scan(1, SCAN_CHUNK);
        // The root, the webroot; per project its folder, `current`, `deployments`, two
        // releases and one `public`; fifteen webroot links.
        assert_eq!(one.len(), 2 + 23 * 6 + 15, "{one:#?}");
        // Runs of one project, of a few (the last one shorter), all in one run.
        for (threads, chunk) in [(1, 1), (2, 1), (2, 5), (3, 4), (4, 2), (30, 1), (4, SCAN_CHUNK)] {
            assert_eq!(scan(threads, chunk), (one.clone(), one_stats), "{threads} threads, runs of {chunk}");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = Share::of(crate::threads::PARALLEL_FROM);
        let chunk = if cores == 1 { crate::threads::PARALLEL_FROM } else { SCAN_CHUNK };
        assert_eq!((share.threads, share.chunk), (cores.min(MAX_THREADS), chunk));
        let small = Share::of(crate::threads::PARALLEL_FROM - 1);
        assert_eq!((small.threads, small.chunk), (1, crate::threads::PARALLEL_FROM - 1), "one run");
    }

    #[test]
    fn a_scan_split_in_runs_gives_the_first_failure_in_order_and_every_path_in_order() {
        let items: Vec<u32> = (0..40).collect();
        // Items 9 and 13 cannot be looked at: whichever thread meets one first, the
        // failure given is 9's.
        let look = |scan: &mut Scan, run: &[u32]| {
            for &i in run {
                if i == 9 || i == 13 {
                    let source = std::io::Error::from_raw_os_error(libc::EACCES);
                    return Err(ObserveError::Fs { path: PathBuf::from(format!("/p{i}")), source });
                }
                scan.files.push((PathBuf::from(format!("/p{i:02}")), Node::Dir));
            }
            Ok(())
        };
        for (threads, chunk) in [(1, 40), (1, 3), (2, 3), (4, 1), (3, 5)] {
            let mut scan = Scan::default();
            let Err(ObserveError::Fs { path, .. }) = scan.split(&items, Share { threads, chunk }, look) else {
                panic!("the scan fails with {threads} threads, runs of {chunk}");
            };
            assert_eq!(path, Path::new("/p9"), "{threads} threads, runs of {chunk}");
        }
        // Without a failure, every item's path, in order.
        let fine: Vec<u32> = items.iter().copied().filter(|&i| i != 9 && i != 13).collect();
        let mut scan = Scan::default();
        scan.split(&fine, Share { threads: 3, chunk: 4 }, look).unwrap();
        let want: Vec<PathBuf> = fine.iter().map(|i| PathBuf::from(format!("/p{i:02}"))).collect();
        assert_eq!(scan.take_list().into_iter().map(|(p, _)| p).collect::<Vec<_>>(), want);
    }

    #[test]
    fn the_paths_of_a_scan_come_sorted_with_the_webroot_among_the_projects() {
        let dir = crate::test_dir::TestDir::new("scan-order");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("webroot")).unwrap();
        // Names around `webroot` and around the separator: `a`, `a-b` and `a.b` sort
        // after `a/...` as paths, though `-` and `.` are below `/` as bytes.
        let ids = ["a", "a-b", "a.b", "ab", "w", "web", "webroot-2", "webrootx", "x", "zz"];
        let projects: Vec<Project> = ids
            .iter()
            .map(|id| {
                let release = root.join(id).join("deployments/d1");
                std::fs::create_dir_all(release.join("public")).unwrap();
                std::os::unix::fs::symlink(&release, root.join(id).join("current")).unwrap();
                std::os::unix::fs::symlink(root.join(id).join("current/public"), root.join("webroot").join(id))
                    .unwrap();
                Project { id: (*id).into(), active: true, domain: None, services: Vec::new() }
            })
            .collect();
        for (threads, chunk) in [(1, SCAN_CHUNK), (3, 2)] {
            let mut scan = Scan::default();
            scan.root(&root, &projects, Share { threads, chunk }).unwrap();
            let list = scan.take_list();
            // The root, the webroot; per project its folder, `current`, `deployments`,
            // its release and `public`, and its webroot link.
            assert_eq!(list.len(), 2 + ids.len() * 6, "{list:#?}");
            let paths: Vec<&Path> = list.iter().map(|(path, _)| path.as_path()).collect();
            assert!(paths.is_sorted_by(|a, b| a < b), "with {threads} threads: {paths:#?}");
        }
    }

    #[test]
    fn paths_compare_by_their_bytes_as_by_their_components() {
        let paths = [
            "/",
            "/r",
            "/r/a",
            "/r/a/b",
            "/r/a/b/c",
            "/r/a-b",
            "/r/a.b",
            "/r/a0",
            "/r/ab",
            "/r/ab/c",
            "/r/b",
            "/r/webroot",
            "/r/webroot/a",
            "/r/webroot-2",
            "/r2",
            "/r-2/a",
            "/s",
            "/\u{e9}t\u{e9}",
            "/r/\u{e9}",
            // Differences at the 16th byte and right after it.
            "/0123456789abcde",
            "/0123456789abcde/f",
            "/0123456789abcde-f",
            "/0123456789abcdef",
            "/0123456789abcdef/g",
            "/0123456789abcdef-g",
        ];
        // The same again below long folders, as a root: the difference lies past them.
        let long = ["/var/lib/trueup", "/var/lib/trueup/projects-of-the-paas"];
        let paths: Vec<String> = paths
            .iter()
            .map(|p| (*p).to_owned())
            .chain(long.iter().flat_map(|l| paths.map(|p| format!("{l}{p}"))))
            .collect();
        for a in &paths {
            for b in &paths {
                let (a, b) = (Path::new(a), Path::new(b));
                assert_eq!(path_order(a, b), a.cmp(b), "{} against {}", a.display(), b.display());
            }
        }
    }

    #[test]
    fn sources_are_read_once_each_and_split_among_threads_seen_as_on_one_thread() {
        let dir = crate::test_dir::TestDir::new("sources");
        let root = dir.join("root");
        for folder in ["a", "b", "root/p/deployments"] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
        }
        let mut deployments = Vec::new();
        let mut upload = |i: usize, path: PathBuf| {
            let mut d = finished("p", &format!("d{i}"), "BUILDING", 0);
            d.finished_at = None;
            d.source.file_path = Some(path);
            deployments.push(d);
        };
        // Two folders of uploads, one in three missing; a link; a folder that does not
        // exist; the same upload twice; a relative path; two under the root.
        for i in 0..2_100 {
            let path = dir.join(if i % 2 == 0 { "a" } else { "b" }).join(format!("u{i}.tar.gz"));
            if i % 3 != 0 {
                std::fs::write(&path, "x").unwrap();
            }
            upload(i, path);
        }
        std::os::unix::fs::symlink(dir.join("a/u1.tar.gz"), dir.join("a/link.tar.gz")).unwrap();
        upload(9_001, dir.join("a/link.tar.gz"));
        upload(9_002, dir.join("none/u.tar.gz"));
        upload(9_003, dir.join("a/u2.tar.gz"));
        upload(9_004, PathBuf::from("relative/u.tar.gz"));
        upload(9_005, root.join("p/deployments"));
        upload(9_006, root.join("uploads/u.tar.gz"));

        // Each absolute path once, sorted by bytes; those under the root apart.
        let (outside, under) = source_paths(&root, &deployments);
        assert_eq!(under, [root.join("p/deployments"), root.join("uploads/u.tar.gz")]);
        assert_eq!(outside.len(), 2_100 + 2, "{:?}", &outside[..3]);
        assert!(outside.is_sorted_by_key(|p| p.as_os_str().as_bytes()));
        assert!(!outside.contains(&Path::new("relative/u.tar.gz")));
        let paths = outside;
        let mut one = Scan::default();
        one.paths(&paths).unwrap();
        let (one_stats, one) = (one.stats, one.take_files());
        // Two thirds of the uploads and the link are there; the rest is absent.
        assert_eq!(one.len(), 1_400 + 1, "{:?}", one.iter().take(3).collect::<Vec<_>>());
        assert_eq!(one.get(&dir.join("a/link.tar.gz")), Some(&Node::Symlink(dir.join("a/u1.tar.gz"))));
        // On one thread both folders of uploads are listed, once each, and the folder
        // that does not exist is not.
        assert_eq!((one_stats.read_dir, one_stats.stat, one_stats.read_link), (2, 0, 1));
        for (threads, chunk) in [(1, 100), (2, SCAN_CHUNK), (3, 7), (7, 1_000)] {
            let mut split = Scan::default();
            split.split(&paths, Share { threads, chunk }, Scan::paths).unwrap();
            let stats = split.stats;
            let with = format!("with {threads} threads, runs of {chunk}");
            assert_eq!(split.take_files(), one, "{with}");
            // A run that starts inside a folder opens it once more; a run of a few paths
            // of a folder looks them up rather than list it.
            let runs = paths.len().div_ceil(chunk) as u64;
            let opened = one_stats.opened..=one_stats.opened + runs - 1;
            assert!(opened.contains(&stats.opened), "{} opened {with}", stats.opened);
            assert_eq!(stats.read_link, one_stats.read_link, "{with}");
        }
    }

    #[test]
    fn a_folder_of_many_paths_is_listed_once_and_seen_as_by_a_look_at_each() {
        let dir = crate::test_dir::TestDir::new("listed");
        let mut paths = Vec::new();
        // `many`: LIST_FROM paths and as many other entries, so listed; one in three
        // absent, a link, a folder, a pipe among them. `crowded`: more other entries than
        // LIST_PER_PATH a path, so each is looked up after all. `few`: one path too few
        // to list.
        for (folder, wanted, others) in
            [("many", LIST_FROM, LIST_FROM), ("crowded", LIST_FROM, 2 * LIST_FROM), ("few", LIST_FROM - 1, 0)]
        {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            for i in 0..others {
                std::fs::write(dir.join(folder).join(format!("other-{i}")), "x").unwrap();
            }
            for i in 0..wanted {
                let path = dir.join(folder).join(format!("u{i:03}"));
                match i % 6 {
                    0 | 3 => {}
                    1 => std::os::unix::fs::symlink("other-0", &path).unwrap(),
                    2 => std::fs::create_dir(&path).unwrap(),
                    4 => {
                        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
                        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
                    }
                    _ => std::fs::write(&path, "x").unwrap(),
                }
                paths.push(path);
            }
        }
        paths.sort_by(|a, b| path_order(a, b));
        let mut seen = Scan::default();
        seen.paths(&paths).unwrap();
        let mut looked = Scan::default();
        for path in &paths {
            looked.lstat(path).unwrap();
        }
        let present = |wanted: usize| (0..wanted).filter(|i| i % 3 != 0).count();
        assert_eq!(seen.files.len(), 2 * present(LIST_FROM) + present(LIST_FROM - 1));
        assert_eq!(seen.take_files(), looked.take_files());
        // `many` listed; `crowded` listed until past its bound, then looked up; `few`
        // looked up. Each link read once.
        assert_eq!(seen.stats.read_dir, 2);
        assert_eq!(seen.stats.stat, (LIST_FROM + LIST_FROM - 1) as u64);
        let links = |wanted: usize| (0..wanted).filter(|i| i % 6 == 1).count();
        assert_eq!(seen.stats.read_link, (2 * links(LIST_FROM) + links(LIST_FROM - 1)) as u64);
        assert_eq!(seen.stats.opened, 3);
    }

    /// A finished deployment of `project` in `phase`, finished `minutes` after the epoch.
    fn finished(project: &str, id: &str, phase: &str, minutes: i64) -> Deployment {
        Deployment {
            id: id.into(),
            project: project.into(),
            service: None,
            kind: crate::model::DeploymentType::Upload,
            phase: phase.into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts: 0,
            finished_at: Some(crate::time::Timestamp::from_unix(minutes * 60)),
            source: crate::model::Source::default(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: None,
        }
    }

    #[test]
    fn only_a_window_of_live_releases_without_a_folder_beside_another_folder_needs_the_rest_read() {
        let specs = Specs::builtin();
        // Per project, the rows the store read, (id, phase, finished at; none: in
        // flight), and the names of its release folders.
        type Rows<'a> = &'a [(&'a str, &'a str, Option<i64>)];
        let worlds: &[(&str, Rows<'_>, &[&str])] = &[
            // The newest has its folder.
            ("a", &[("a2", "ACTIVE", Some(2))], &["a1", "a2"]),
            // The newest lost it, a folder of a deployment not read is there: it may be
            // an older live release, the fallback.
            ("b", &[("b2", "ACTIVE", Some(2))], &["b1"]),
            // No folder at all, as under a wrong root: no fallback to find.
            ("c", &[("c2", "ACTIVE", Some(2))], &[]),
            // No live release read: nothing to fall back from.
            ("d", &[("d1", "FAILED", Some(1))], &["d0"]),
            // The folders there are those of deployments read, not live: no fallback.
            ("e", &[("e0", "FAILED", Some(3)), ("e1", "ACTIVE", Some(1)), ("e9", "BUILDING", None)], &["e0", "e9"]),
            // A folder whose name is no deployment id is no release.
            ("f", &[("f1", "ACTIVE", Some(1))], &["not an id"]),
            // The newest keeps its folder among others.
            ("g", &[("g9", "ACTIVE", Some(9))], &["g1", "g5", "g9"]),
            // The newest has an id that is no plain name, so it is never live: an older
            // release may be.
            ("h", &[("h 2", "ACTIVE", Some(2))], &["h 2", "h1"]),
            // The newest is served by its container, as it is (below).
            ("i", &[("i2", "ACTIVE", Some(2))], &["i1"]),
        ];
        // The folders of `listed` projects, as a scan lists them.
        let listing = |listed: &mut dyn Iterator<Item = (&str, &[&str])>| {
            let mut folders = Folders::default();
            for (project, names) in listed {
                folders.project(project);
                // Whether the scan looked at a release's `public` changes nothing here.
                names.iter().enumerate().for_each(|(i, name)| folders.folder(name.as_ref(), i % 2 == 1));
            }
            folders
        };
        let mut deployments = Vec::new();
        for (project, rows, _) in worlds {
            for &(id, phase, at) in *rows {
                let mut d = finished(project, id, phase, at.unwrap_or(0));
                d.finished_at = at.and(d.finished_at);
                deployments.push(d);
            }
        }
        let folders = listing(&mut worlds.iter().map(|&(p, _, names)| (p, names)));
        deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
        deployments.iter_mut().filter(|d| d.id == "i2").for_each(|d| d.kind = crate::model::DeploymentType::Image);
        let needed = |folders: &Folders| fallbacks_needed(&specs, &deployments, &folders.by_project());
        assert_eq!(needed(&folders), ["b", "h"]);
        // Listed in another order, in runs appended one after the other, they say the same.
        let mut reversed = Folders::default();
        for &(project, _, names) in worlds.iter().rev() {
            reversed.append(listing(&mut std::iter::once((project, names))));
        }
        assert_eq!(needed(&reversed), ["b", "h"]);
        // A project never listed (its folder is not there) has no folder to fall back to,
        // and the others are still found past it.
        let without_a = listing(&mut worlds.iter().filter(|(p, _, _)| *p != "a").map(|&(p, _, names)| (p, names)));
        let no_b = listing(&mut worlds.iter().map(|&(p, _, names)| (p, if p == "b" { &[][..] } else { names })));
        assert_eq!(needed(&without_a), ["b", "h"]);
        assert_eq!(needed(&no_b), ["h"]);
    }

    #[test]
    fn the_folders_of_a_scan_are_each_projects_listed_by_name() {
        let dir = crate::test_dir::TestDir::new("scan-folders");
        let root = dir.join("root");
        // `a` has two releases and a file, `b` none, `c` no folder of its own, `d` a
        // release and a link to another: only folders are releases. `current` leads to
        // `a1`, and `d`'s webroot link to `d1/public`: theirs are the `public`s looked at.
        // `b`'s webroot link leads to `a2/public`, another project's: kept for later.
        for folder in ["a/deployments/a1/public", "a/deployments/a2", "b/deployments", "d/deployments/d1", "webroot"] {
            std::fs::create_dir_all(root.join(folder)).unwrap();
        }
        std::fs::write(root.join("a/deployments/notes.txt"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("a/deployments/a1"), root.join("d/deployments/d0")).unwrap();
        std::os::unix::fs::symlink("deployments/a1", root.join("a/current")).unwrap();
        std::os::unix::fs::symlink(root.join("d/deployments/d1/public"), root.join("webroot/d")).unwrap();
        std::os::unix::fs::symlink("../a/deployments/a2/public", root.join("webroot/b")).unwrap();
        let projects: Vec<Project> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| Project { id: (*id).into(), active: true, domain: None, services: Vec::new() })
            .collect();
        // Each project's id, and its folders' names with whether their `public` was looked at.
        type Listed<'a> = Vec<(&'a [u8], Vec<(&'a [u8], bool)>)>;
        let want: Listed = vec![
            (b"a", vec![(b"a1", true), (b"a2", false)]),
            (b"b", vec![]),
            (b"c", vec![]),
            (b"d", vec![(b"d1", true)]),
        ];
        for (threads, chunk) in [(1, SCAN_CHUNK), (3, 1), (2, 3)] {
            let mut scan = Scan::default();
            scan.root(&root, &projects, Share { threads, chunk }).unwrap();
            let listed = scan.folders.by_project();
            let seen: Listed = listed.iter().map(|(id, names)| (*id, Folders::names(names).collect())).collect();
            assert_eq!(seen, want, "with {threads} threads, runs of {chunk}");
            assert_eq!(scan.elsewhere, [root.join("a/deployments/a2/public")], "with {threads} threads");
            let publics: Vec<PathBuf> =
                scan.files.iter().map(|(p, _)| p).filter(|p| p.ends_with("public")).cloned().collect();
            assert_eq!(publics, [root.join("a/deployments/a1/public")], "a1's, the one there");
        }
    }

    #[test]
    fn a_path_is_an_entry_of_a_folder_however_the_folder_is_spelled() {
        let path = Path::new("/r/p/deployments/d2");
        for dir in ["/r/p/deployments", "/r//p/deployments", "/r/p/./deployments/"] {
            assert_eq!(entry_of(Path::new(dir), path), Some(OsStr::new("d2")), "{dir}");
        }
        for dir in ["/r/p", "/r/q/deployments", "/r/p/deployments/d2"] {
            assert_eq!(entry_of(Path::new(dir), path), None, "{dir}");
        }
        assert_eq!(entry_of(Path::new("/"), Path::new("/")), None);
        // No folder at all: `/d2` is in `/`, not in it.
        assert_eq!(entry_of(Path::new(""), Path::new("/d2")), None);
    }

    proptest::proptest! {
        /// A path is an entry of a folder as `Path`'s parts have it, whatever the spelling
        /// of either.
        #[test]
        fn a_path_is_an_entry_of_a_folder_as_its_parts_say(dir in "/?[/.ab]{0,10}", rest in "[/.ab]{0,6}") {
            let path = format!("{dir}{rest}");
            let (dir, path) = (Path::new(&dir), Path::new(&path));
            let by_parts = path.parent().zip(path.file_name())
                .and_then(|(parent, name)| (parent.as_os_str() == dir.as_os_str() || parent == dir).then_some(name));
            proptest::prop_assert_eq!(entry_of(dir, path), by_parts, "{:?} in {:?}", path, dir);
        }
    }

    #[test]
    fn a_list_out_of_order_still_makes_the_whole_map() {
        let mut scan = Scan::default();
        for path in ["/r/b", "/r/a/deployments", "/r/a", "/r/a-b", "/r/a/deployments/x"] {
            scan.files.push((PathBuf::from(path), Node::Dir));
        }
        scan.webroot_links.push((PathBuf::from("/r/webroot"), Node::Dir));
        let paths: Vec<PathBuf> = scan.take_files().keys().cloned().collect();
        let want = ["/r/a", "/r/a/deployments", "/r/a/deployments/x", "/r/a-b", "/r/b", "/r/webroot"];
        assert_eq!(paths, want.map(PathBuf::from));
    }
}
