//! The source phase: a deployment's source, pulled into a folder of its own.
//!
//! The source is an uploaded folder, an uploaded `.tar.gz` tarball, or a git repository.
//! Whatever it is, [`pull`] builds the result in a temporary sibling folder and renames it
//! into place, so a re-run after a crash replaces a partial result whole.
//!
//! An upload is untrusted: every tarball entry and every folder entry is checked before it
//! is written, and trueup writes each one itself (never a whole-archive `unpack`). Nothing
//! may land outside the destination, and no link may point out of it.
//!
//! This module owns the one tree copy of the phases (`copy_tree`), which
//! [`super::release`] reuses; it never runs a build or touches a release.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::build::{Unfinished, ended, supervise};
use super::{PhaseError, Ticker, Watch, io_error, remove, sync_dir, sync_tree};

/// Where a deployment's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An uploaded folder, copied as it is.
    Folder(PathBuf),
    /// An uploaded gzipped tarball (`.tar.gz` or `.tgz`).
    Tarball(PathBuf),
    /// A git repository, cloned with the `git` binary.
    Git {
        /// What `git clone` accepts: a path, a `file://` or a network URL.
        url: String,
        /// The branch, tag or commit to check out; the repository's default branch when
        /// `None`.
        git_ref: Option<String>,
    },
}

impl Origin {
    /// The origin of an upload at `path`: a tarball when its name ends with `.tar.gz` or
    /// `.tgz`, a folder otherwise. The path need not exist yet; [`pull`] says when it is
    /// gone or is neither.
    pub fn from_upload(path: &Path) -> Origin {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Origin::Tarball(path.to_path_buf())
        } else {
            Origin::Folder(path.to_path_buf())
        }
    }
}

/// How much an untrusted source may hold, and how long fetching it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a tarball may unpack to, counted as they are written.
    pub max_bytes: u64,
    /// The most entries (files, folders, links) a tarball may hold.
    pub max_entries: u64,
    /// How long each `git` command may run.
    pub max_time: Duration,
}

impl Default for Limits {
    /// 1 GiB, 100 000 entries, 10 minutes.
    fn default() -> Self {
        Limits { max_bytes: 1 << 30, max_entries: 100_000, max_time: Duration::from_secs(600) }
    }
}

/// Makes `dest` hold exactly the source at `origin`, replacing whatever it held.
///
/// The source is made in the sibling folder `.trueup-tmp-NAME`, flushed to disk, and
/// renamed to `dest` (an old `dest` is removed just before); a leftover temporary folder
/// from an interrupted run is removed first. A git checkout loses its `.git` folder.
///
/// # Errors
///
/// - [`PhaseError::Failed`] when the upload is gone or is neither a folder nor a tarball;
///   when an entry is unsafe (an absolute path, a `..`, a link out of the tree, a device,
///   fifo or socket) or a tarball passes `limits`, naming the entry; when git cannot clone
///   the repository or check out the ref, with git's message.
/// - [`PhaseError::Retry`] on a full disk or another passing IO condition.
/// - [`PhaseError::Stopped`] when the watch says so.
pub fn pull(origin: &Origin, dest: &Path, limits: &Limits, watch: &mut dyn Watch) -> Result<(), PhaseError> {
    let tmp = temporary(dest)?;
    let made = match origin {
        Origin::Folder(path) => copy_upload(path, &tmp, watch),
        Origin::Tarball(path) => unpack(path, &tmp, limits, watch),
        Origin::Git { url, git_ref } => clone(url, git_ref.as_deref(), &tmp, limits, watch),
    };
    if let Err(e) = made {
        // A partial copy is of no use to a re-run, and on a full disk it holds the space.
        let _ = remove(&tmp);
        return Err(e);
    }
    let write = |e: io::Error| io_error(&format!("could not put the source in place at `{}`", dest.display()), &e);
    sync_tree(&tmp).map_err(write)?;
    remove(dest).map_err(write)?;
    rename_into_place(&tmp, dest)
}

/// The temporary sibling of `dest`, `.trueup-tmp-NAME`, with nothing left in it from an
/// earlier run, and `dest`'s parent made.
pub(crate) fn temporary(dest: &Path) -> Result<PathBuf, PhaseError> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(PhaseError::Failed(format!("`{}` cannot be a destination folder", dest.display())));
    };
    let tmp = parent.join(format!(".trueup-tmp-{}", name.to_string_lossy()));
    let write = |e: io::Error| io_error(&format!("could not clear `{}`", tmp.display()), &e);
    fs::create_dir_all(parent).map_err(write)?;
    remove(&tmp).map_err(write)?;
    Ok(tmp)
}

/// Renames the flushed folder `tmp` to `dest` (which must not exist) and makes the rename
/// durable.
pub(crate) fn rename_into_place(tmp: &Path, dest: &Path) -> Result<(), PhaseError> {
    let write = |e: io::Error| io_error(&format!("could not rename `{}` into place", tmp.display()), &e);
    fs::rename(tmp, dest).map_err(write)?;
    sync_dir(dest.parent().expect("`temporary` checked that it has one")).map_err(write)
}

/// `the upload `PATH` is gone`.
fn gone(path: &Path) -> PhaseError {
    PhaseError::Failed(format!("the upload `{}` is gone", path.display()))
}

fn copy_upload(path: &Path, tmp: &Path, watch: &mut dyn Watch) -> Result<(), PhaseError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(gone(path)),
        Err(e) => Err(io_error(&format!("could not read the upload `{}`", path.display()), &e)),
        Ok(m) if !m.is_dir() => Err(PhaseError::Failed(format!(
            "the upload `{}` is neither a folder nor a `.tar.gz` tarball",
            path.display()
        ))),
        Ok(_) => copy_tree(path, tmp, &format!("the upload `{}`", path.display()), watch),
    }
}

/// Copies the folder `from` to `to`, which must not exist: folders, files with their
/// permission bits (`rwx` for owner, group and others; no setuid, setgid or sticky bit),
/// and symlinks that stay inside the tree (see [`link_stays_inside`]). `from` itself may
/// be a symlink to a folder; `what` names it in messages (`the upload `PATH``).
///
/// # Errors
///
/// [`PhaseError::Failed`] naming the entry for a link out of the tree, a device, a fifo or
/// a socket; IO errors as [`io_error`] sorts them; [`PhaseError::Stopped`] from the watch.
pub(crate) fn copy_tree(from: &Path, to: &Path, what: &str, watch: &mut dyn Watch) -> Result<(), PhaseError> {
    let read = |p: &Path, e: io::Error| io_error(&format!("could not read `{}`", p.display()), &e);
    let write = |p: &Path, e: io::Error| io_error(&format!("could not write `{}`", p.display()), &e);
    let refuse = |rel: &Path, kind: &str| PhaseError::Failed(format!("{what} holds `{}`, {kind}", rel.display()));
    let mut ticker = Ticker::new();
    let root_mode = fs::metadata(from).map_err(|e| read(from, e))?.permissions().mode();
    fs::create_dir(to).map_err(|e| write(to, e))?;
    // Folder modes are set last, deepest first, so a read-only folder is still filled.
    let mut modes = vec![(to.to_path_buf(), root_mode)];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries = fs::read_dir(from.join(&rel))
            .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>())
            .map_err(|e| read(&from.join(&rel), e))?;
        // Sorted, so the entry a refusal names does not depend on the file system's order.
        entries.sort();
        for name in entries {
            ticker.tick(watch)?;
            let rel = rel.join(name);
            let (src, dst) = (from.join(&rel), to.join(&rel));
            let meta = fs::symlink_metadata(&src).map_err(|e| read(&src, e))?;
            let kind = meta.file_type();
            let mode = meta.permissions().mode() & 0o777;
            if kind.is_dir() {
                fs::create_dir(&dst).map_err(|e| write(&dst, e))?;
                modes.push((dst, mode));
                stack.push(rel);
            } else if kind.is_file() {
                copy_file(&src, &dst, mode).map_err(|(p, e)| if p { read(&src, e) } else { write(&dst, e) })?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&src).map_err(|e| read(&src, e))?;
                if !link_stays_inside(&rel, &target) {
                    return Err(refuse(&rel, &format!("a symlink to `{}` outside it", target.display())));
                }
                std::os::unix::fs::symlink(&target, &dst).map_err(|e| write(&dst, e))?;
            } else {
                let kind = if kind.is_fifo() {
                    "a fifo"
                } else if kind.is_socket() {
                    "a socket"
                } else if kind.is_block_device() || kind.is_char_device() {
                    "a device"
                } else {
                    "neither a file, a folder nor a symlink"
                };
                return Err(refuse(&rel, kind));
            }
        }
    }
    for (dir, mode) in modes.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o777)).map_err(|e| write(dir, e))?;
    }
    Ok(())
}

/// Copies a regular file's bytes to the new file `dst` and gives it `mode`. The error
/// says whether reading (`true`) or writing failed.
fn copy_file(src: &Path, dst: &Path, mode: u32) -> Result<(), (bool, io::Error)> {
    let mut input = File::open(src).map_err(|e| (true, e))?;
    let mut output = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst).map_err(|e| (false, e))?;
    // `io::copy` between two files uses `copy_file_range`, in the kernel. Which side
    // failed is not told apart there; a full disk is the likely one.
    io::copy(&mut input, &mut output).map_err(|e| (false, e))?;
    output.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| (false, e))
}

/// Whether a symlink at `rel` (a path inside a tree) pointing to `target` resolves inside
/// the tree, judged from the text alone: the target is relative, climbs with `..` only
/// at its start and no higher than the tree's top, then only descends. Descending through
/// other links stays inside too, since every link in the tree is held to this rule; a `..`
/// after a name is refused because the kernel resolves it from wherever that name leads.
pub(crate) fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    let depth = rel.components().count().saturating_sub(1);
    let (mut ups, mut named) = (0, false);
    if target.as_os_str().is_empty() {
        return false;
    }
    for component in target.components() {
        match component {
            Component::ParentDir if !named => ups += 1,
            Component::CurDir => {}
            Component::Normal(_) => named = true,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    ups <= depth
}

/// The path of a tarball entry (or a hard link's target) as a plain relative path, or why
/// it is refused.
fn archive_path(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("with an absolute path"),
            Component::ParentDir => return Err("whose path climbs out with `..`"),
        }
    }
    Ok(out)
}

/// Unpacks the gzipped tarball at `path` into the new folder `tmp`, entry by entry.
fn unpack(path: &Path, tmp: &Path, limits: &Limits, watch: &mut dyn Watch) -> Result<(), PhaseError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone(path)),
        Err(e) => return Err(io_error(&format!("could not read the upload `{}`", path.display()), &e)),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(PhaseError::Failed(format!("the upload `{}` is not a file", path.display())));
    }
    fs::create_dir(tmp).map_err(|e| io_error(&format!("could not write `{}`", tmp.display()), &e))?;
    let mut unpacking = Unpacking { tarball: path, tmp, limits, bytes: 0, entries: 0, ticker: Ticker::new() };
    let unreadable =
        |e: io::Error| PhaseError::Failed(format!("the upload `{}` is not a readable .tar.gz: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut modes = Vec::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        if let Some(dir) = unpacking.entry(&mut entry, watch)? {
            modes.push(dir);
        }
    }
    for (dir, mode) in modes.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| io_error(&format!("could not write `{}`", dir.display()), &e))?;
    }
    Ok(())
}

/// A tarball being unpacked, and what it has used of its limits.
struct Unpacking<'a> {
    tarball: &'a Path,
    tmp: &'a Path,
    limits: &'a Limits,
    bytes: u64,
    entries: u64,
    ticker: Ticker,
}

impl Unpacking<'_> {
    fn refuse(&self, entry: &Path, why: &str) -> PhaseError {
        PhaseError::Failed(format!("the tarball `{}` holds `{}`, {why}", self.tarball.display(), entry.display()))
    }

    fn write(&self, path: &Path, e: &io::Error) -> PhaseError {
        io_error(&format!("could not write `{}`", path.display()), e)
    }

    /// Checks and writes one entry; a folder's path and mode come back, to be set last.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        watch: &mut dyn Watch,
    ) -> Result<Option<(PathBuf, u32)>, PhaseError> {
        self.ticker.tick(watch)?;
        let name = entry
            .path()
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| PathBuf::from(String::from_utf8_lossy(&entry.path_bytes()).into_owned()));
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            return Ok(None);
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.refuse(&name, &format!("past the limit of {} entries", self.limits.max_entries)));
        }
        let rel = archive_path(&name).map_err(|why| self.refuse(&name, why))?;
        if rel.as_os_str().is_empty() {
            // The archive's own top folder (`./`).
            return Ok(None);
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        if kind.is_dir() {
            let dst = self.place(&name, &rel, true)?;
            return Ok(Some((dst, mode)));
        }
        if kind.is_file() || kind.is_contiguous() {
            self.file(entry, &name, &rel, mode, watch)?;
        } else if kind.is_symlink() {
            let target = self.link_name(entry, &name)?;
            if !link_stays_inside(&rel, &target) {
                return Err(self.refuse(&name, &format!("a symlink to `{}` outside it", target.display())));
            }
            let dst = self.place(&name, &rel, false)?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| self.write(&dst, &e))?;
        } else if kind.is_hard_link() {
            let target = self.link_name(entry, &name)?;
            let outside = || self.refuse(&name, &format!("a hard link to `{}` outside it", target.display()));
            let inside = archive_path(&target).map_err(|_| outside())?;
            let original = self.tmp.join(&inside);
            // The target must be a file already unpacked, reached through folders only.
            let through_folders = inside.parent().is_none_or(|p| !self.passes_a_link(p));
            if inside.as_os_str().is_empty()
                || !through_folders
                || !fs::symlink_metadata(&original).is_ok_and(|m| m.is_file())
            {
                return Err(self.refuse(&name, &format!("a hard link to `{}`, not a file before it", target.display())));
            }
            let dst = self.place(&name, &rel, false)?;
            fs::hard_link(&original, &dst).map_err(|e| self.write(&dst, &e))?;
        } else if kind.is_character_special() || kind.is_block_special() {
            return Err(self.refuse(&name, "a device"));
        } else if kind.is_fifo() {
            return Err(self.refuse(&name, "a fifo"));
        } else if kind.is_gnu_sparse() {
            return Err(self.refuse(&name, "a sparse file, which trueup does not unpack"));
        } else {
            return Err(self.refuse(&name, &format!("an entry of unknown type `{}`", kind.as_byte() as char)));
        }
        Ok(None)
    }

    fn link_name<R: Read>(&self, entry: &tar::Entry<'_, R>, name: &Path) -> Result<PathBuf, PhaseError> {
        match entry.link_name() {
            Ok(Some(target)) => Ok(target.into_owned()),
            _ => Err(self.refuse(name, "a link without a readable target")),
        }
    }

    /// Writes a regular file's bytes, counting them against the limit as they come: the
    /// header's size is checked first but not trusted.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &Path,
        rel: &Path,
        mode: u32,
        watch: &mut dyn Watch,
    ) -> Result<(), PhaseError> {
        let max = self.limits.max_bytes;
        let past = |this: &Self| this.refuse(name, &format!("past the limit of {max} bytes unpacked"));
        if self.bytes.saturating_add(entry.header().size().unwrap_or(0)) > max {
            return Err(past(self));
        }
        let dst = self.place(name, rel, false)?;
        let mut out =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&dst).map_err(|e| self.write(&dst, &e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PhaseError::Failed(format!(
                        "the upload `{}` is not a readable .tar.gz (at `{}`): {e}",
                        self.tarball.display(),
                        name.display()
                    )));
                }
            };
            self.bytes += n as u64;
            if self.bytes > max {
                return Err(past(self));
            }
            out.write_all(&buf[..n]).map_err(|e| self.write(&dst, &e))?;
            self.ticker.tick(watch)?;
        }
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| self.write(&dst, &e))
    }

    /// Whether the folders of `rel` pass through something that is not a folder.
    fn passes_a_link(&self, rel: &Path) -> bool {
        let mut at = self.tmp.to_path_buf();
        rel.components().any(|c| {
            at.push(c);
            fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir())
        })
    }

    /// Makes the folders above `rel` (refusing to pass through a link or a file, which an
    /// earlier entry may have put there) and clears the way for the entry itself: an
    /// earlier entry of the same name is replaced, as `tar` does, unless it is a folder.
    /// Returns the entry's place in the temporary folder.
    fn place(&self, name: &Path, rel: &Path, folder: bool) -> Result<PathBuf, PhaseError> {
        let mut at = self.tmp.to_path_buf();
        if let Some(parent) = rel.parent() {
            for component in parent.components() {
                at.push(component);
                match fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        let prefix = at.strip_prefix(self.tmp).unwrap_or(&at);
                        return Err(self.refuse(name, &format!("below `{}`, which is not a folder", prefix.display())));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&at).map_err(|e| self.write(&at, &e))?;
                    }
                    Err(e) => return Err(self.write(&at, &e)),
                }
            }
        }
        let dst = self.tmp.join(rel);
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && folder => {}
            Ok(m) if m.is_dir() => return Err(self.refuse(name, "in place of a folder of the same name")),
            Ok(_) => {
                fs::remove_file(&dst).map_err(|e| self.write(&dst, &e))?;
                if folder {
                    fs::create_dir(&dst).map_err(|e| self.write(&dst, &e))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if folder {
                    fs::create_dir(&dst).map_err(|e| self.write(&dst, &e))?;
                }
            }
            Err(e) => return Err(self.write(&dst, &e)),
        }
        Ok(dst)
    }
}

/// Clones `url` into `tmp` (which must not exist), checks out `git_ref`, and drops `.git`.
fn clone(
    url: &str,
    git_ref: Option<&str>,
    tmp: &Path,
    limits: &Limits,
    watch: &mut dyn Watch,
) -> Result<(), PhaseError> {
    // A leading dash would be read as an option; `--` guards the URL but not the ref.
    if url.is_empty() || git_ref.is_some_and(|r| r.is_empty() || r.starts_with('-')) {
        return Err(PhaseError::Failed(format!(
            "the git source `{url}` at `{}` is not a valid repository and ref",
            git_ref.unwrap_or_default()
        )));
    }
    let mut cmd = git();
    cmd.args(["clone", "--quiet", "--", url]).arg(tmp);
    run_git(&mut cmd, &format!("git could not clone `{url}`"), limits, watch)?;
    if let Some(git_ref) = git_ref {
        let mut cmd = git();
        cmd.arg("-C").arg(tmp).args(["checkout", "--quiet", git_ref]);
        run_git(&mut cmd, &format!("git could not check out `{git_ref}` of `{url}`"), limits, watch)?;
    }
    let dot_git = tmp.join(".git");
    remove(&dot_git).map_err(|e| io_error(&format!("could not remove `{}`", dot_git.display()), &e))
}

/// The `git` binary, never prompting, and deaf to a repository trueup itself runs in.
fn git() -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs one git command under [`supervise`]; a failure is `WHAT: git's last lines`.
fn run_git(cmd: &mut Command, what: &str, limits: &Limits, watch: &mut dyn Watch) -> Result<(), PhaseError> {
    let ran = supervise(cmd, limits.max_time, watch).map_err(|e| match e {
        Unfinished::Spawn(e) => io_error("git could not be started", &e),
        other => other.into_phase_error("git"),
    })?;
    if ran.status.success() {
        return Ok(());
    }
    let said: Vec<_> = ran.last.into_iter().collect();
    let said = if said.is_empty() { format!("it {}", ended(ran.status)) } else { said.join(" / ") };
    Err(PhaseError::Failed(format!("{what}: {said}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_judged_by_their_text() {
        let inside = |rel: &str, target: &str| link_stays_inside(Path::new(rel), Path::new(target));
        assert!(inside("a", "b"));
        assert!(inside("a", "./b/c"));
        assert!(inside("sub/a", "../b"));
        assert!(inside("sub/a", ".."));
        assert!(!inside("a", "../b"));
        assert!(!inside("sub/a", "../../b"));
        assert!(!inside("a", "/etc/passwd"));
        assert!(!inside("a", ""));
        // `s/..` climbs from wherever `s` leads, which may be the top itself.
        assert!(!inside("a", "s/../b"));
    }

    #[test]
    fn archive_paths_are_plain() {
        assert_eq!(archive_path(Path::new("./a/b")), Ok(PathBuf::from("a/b")));
        assert_eq!(archive_path(Path::new("/etc/x")), Err("with an absolute path"));
        assert_eq!(archive_path(Path::new("a/../../x")), Err("whose path climbs out with `..`"));
    }

    #[test]
    fn uploads_are_told_apart_by_name() {
        assert_eq!(Origin::from_upload(Path::new("/u/a.tar.gz")), Origin::Tarball("/u/a.tar.gz".into()));
        assert_eq!(Origin::from_upload(Path::new("/u/a.TGZ")), Origin::Tarball("/u/a.TGZ".into()));
        assert_eq!(Origin::from_upload(Path::new("/u/site")), Origin::Folder("/u/site".into()));
    }
}
