//! Looks at paths relative to an open folder (`openat`, `readlinkat`, `fstatat`), never
//! following a link: what the observation of a large root is made of.
//!
//! A call relative to a folder resolves one or two names where the same call by full
//! path resolves every folder from `/` down again, and each `open` is asked
//! `O_NOFOLLOW`, so a folder reached this way is a real folder, not a link to one.
//! Every call here tells "absent" from "something else is there" without a second call
//! in the common case: a link is read at once (`readlinkat` fails with `EINVAL` on what
//! is not a link), a folder is opened at once (`openat` with `O_DIRECTORY | O_NOFOLLOW`
//! fails with `ENOTDIR` or `ELOOP` on what is not one), and only then is the path
//! `fstatat`ed to learn what it is.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a path is, without following a final link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Dir,
    /// A regular file.
    File,
    Symlink,
    /// A device, a pipe or a socket.
    Special,
}

impl Kind {
    fn of_mode(mode: libc::mode_t) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFREG => Kind::File,
            _ => Kind::Special,
        }
    }

    /// The kind a folder listing gives, when it gives one (`DT_UNKNOWN` does not).
    fn of_dirent(d_type: u8) -> Option<Kind> {
        match d_type {
            libc::DT_DIR => Some(Kind::Dir),
            libc::DT_LNK => Some(Kind::Symlink),
            libc::DT_REG => Some(Kind::File),
            libc::DT_UNKNOWN => None,
            _ => Some(Kind::Special),
        }
    }
}

/// An open folder, for calls relative to it.
#[derive(Debug)]
pub(crate) struct Dir(OwnedFd);

/// What opening a folder found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// A real folder, open.
    Dir(Dir),
    /// Something else: a file, a link (never followed), a device.
    Other(Kind),
    /// Nothing.
    Absent,
}

/// What [`Dir::open_below`] did.
#[derive(Debug)]
pub(crate) enum Below {
    /// Opened, through real folders only.
    Opened(Dir),
    /// Asked, and the kernel could not open it that way.
    Refused,
    /// Not asked: this kernel has no `openat2`.
    Unasked,
}

/// What reading a link found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// A link, and its target as stored.
    Target(PathBuf),
    /// Something that is not a link.
    Other(Kind),
    /// Nothing.
    Absent,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| nul_in_name())
}

fn nul_in_name() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte")
}

/// Calls `f` with `name` as a C string, copied on the stack when it is short, as the
/// names of a scan are (a heap copy each would be one allocation per call).
fn with_c_name<T>(name: &OsStr, f: impl FnOnce(&CStr) -> io::Result<T>) -> io::Result<T> {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    match buf.get_mut(..=bytes.len()) {
        Some(room) => {
            room[..bytes.len()].copy_from_slice(bytes);
            f(CStr::from_bytes_with_nul(room).map_err(|_| nul_in_name())?)
        }
        None => f(&c_name(name)?),
    }
}

/// The entries of a folder, with their kind when its listing gives it ([`Dir::entries`]).
pub(crate) type Entries = Vec<(OsString, Option<Kind>)>;

/// What a folder is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Calls relative to it only: opened with `O_PATH`, which needs no read permission
    /// on it, as a look at a path through it needs none (search is enough, as for
    /// `lstat`). [`Dir::entries`] of such a folder fails.
    Lookups,
    /// Listing it too: opened for reading, which needs read permission.
    Listing,
}

/// `openat(fd, name, O_DIRECTORY)`, with `O_NOFOLLOW` unless `follow`, for `use_`; the
/// result as an owned descriptor, `None` when something else than a folder is there.
fn open_dir_at(fd: RawFd, name: &CStr, follow: bool, use_: Use) -> io::Result<Option<OwnedFd>> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let access = match use_ {
        Use::Lookups => libc::O_PATH,
        Use::Listing => libc::O_RDONLY,
    };
    let flags = access | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let raw = unsafe { libc::openat(fd, name.as_ptr(), flags) };
    if raw >= 0 {
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTDIR | libc::ELOOP) => Ok(None),
        _ => Err(e),
    }
}

/// `fstatat(fd, name, AT_SYMLINK_NOFOLLOW)`: what is there, `None` when nothing is.
fn stat_at(fd: RawFd, name: &CStr) -> io::Result<Option<Kind>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a valid C string and `st` is large enough for a `stat`.
    let r = unsafe { libc::fstatat(fd, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        // SAFETY: `fstatat` succeeded, so it filled `st`.
        return Ok(Some(Kind::of_mode(unsafe { st.assume_init() }.st_mode)));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => Ok(None),
        _ => Err(e),
    }
}

/// `readlinkat(fd, name)`, into a buffer on the stack and, for a target longer than
/// that, a larger one until it fits. Never `Link::Other(Kind::Symlink)`: a path that
/// became a link between the two calls is read again, a few times at most.
fn read_link_at(fd: RawFd, name: &CStr) -> io::Result<Link> {
    let mut stack = [0u8; 512];
    let mut heap: Vec<u8> = Vec::new();
    let mut changed = 0;
    loop {
        let buf: &mut [u8] = if heap.is_empty() { &mut stack } else { &mut heap };
        // SAFETY: `name` is a valid C string; the kernel writes at most `buf.len()` bytes.
        let n = unsafe { libc::readlinkat(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINVAL) => match stat_at(fd, name)? {
                    Some(Kind::Symlink) if changed < 3 => {
                        changed += 1;
                        continue;
                    }
                    Some(Kind::Symlink) => Err(e),
                    Some(kind) => Ok(Link::Other(kind)),
                    None => Ok(Link::Absent),
                },
                Some(libc::ENOENT | libc::ENOTDIR) => Ok(Link::Absent),
                _ => Err(e),
            };
        }
        let n = n.unsigned_abs();
        if n < buf.len() {
            // Copied out at its size: the world keeps ten thousand, without spare room.
            return Ok(Link::Target(PathBuf::from(OsString::from_vec(buf[..n].to_vec()))));
        }
        // The target may have been cut at the buffer's end: ask again with room to spare.
        heap = vec![0; buf.len() * 2];
    }
}

/// Opens `name` relative to `fd` if it is a folder, following a final link only when
/// `follow`; says what is there otherwise.
fn open_at(fd: RawFd, name: &CStr, follow: bool, use_: Use) -> io::Result<Opened> {
    match open_dir_at(fd, name, follow, use_) {
        Ok(Some(fd)) => Ok(Opened::Dir(Dir(fd))),
        Ok(None) => Ok(stat_at(fd, name)?.map_or(Opened::Absent, Opened::Other)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Absent),
        Err(e) => Err(e),
    }
}

impl Dir {
    /// Opens the folder at `path` for `use_`, following links on the way (the caller has
    /// checked what it needed of `path` itself).
    pub(crate) fn open(path: &Path, use_: Use) -> io::Result<Opened> {
        open_at(libc::AT_FDCWD, &c_name(path.as_os_str())?, true, use_)
    }

    /// Opens `name` in this folder for `use_` if it is a real folder; says what it is
    /// otherwise.
    pub(crate) fn open_dir(&self, name: &OsStr, use_: Use) -> io::Result<Opened> {
        with_c_name(name, |name| open_at(self.0.as_raw_fd(), name, false, use_))
    }

    /// Opens `path` below this folder (names joined by `/`, none of them `..`) for
    /// `use_` in one call, if every name on the way is a real folder: `openat2` with
    /// `RESOLVE_NO_SYMLINKS`, which refuses a link anywhere on the way as `O_NOFOLLOW`
    /// refuses one at the end. [`Below::Refused`] when that call cannot say: something
    /// else or nothing on the way, or a failure; [`Below::Unasked`] once the kernel
    /// proved to have no `openat2` (before 5.6, or a sandbox that hides it). The caller
    /// then opens one name at a time, which tells these apart.
    pub(crate) fn open_below(&self, path: &OsStr, use_: Use) -> io::Result<Below> {
        static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(Below::Unasked);
        }
        let access = match use_ {
            Use::Lookups => libc::O_PATH,
            Use::Listing => libc::O_RDONLY,
        };
        // No `O_NOFOLLOW`: `RESOLVE_NO_SYMLINKS` refuses the last name too.
        let flags = access | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // The kernel's `struct open_how` (libc's cannot be built outside it).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow { flags: flags.unsigned_abs().into(), mode: 0, resolve: libc::RESOLVE_NO_SYMLINKS };
        let raw = with_c_name(path, |path| {
            // SAFETY: `path` is a valid C string and `how` a valid `open_how` of the size
            // passed, both alive for the duration of the call.
            Ok(unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.0.as_raw_fd(),
                    path.as_ptr(),
                    &raw const how,
                    std::mem::size_of::<OpenHow>(),
                )
            })
        })?;
        if raw < 0 {
            // A kernel before 5.6 says ENOSYS; a seccomp sandbox that does not know the
            // call says ENOSYS or EPERM. An open of a folder seldom fails with EPERM
            // otherwise, and if one did, the way by one name at a time is as right.
            if matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            return Ok(Below::Refused);
        }
        let raw = RawFd::try_from(raw).map_err(|_| io::Error::other("openat2 returned no descriptor"))?;
        // SAFETY: `openat2` returned a new descriptor that nothing else owns.
        Ok(Below::Opened(Dir(unsafe { OwnedFd::from_raw_fd(raw) })))
    }

    /// The entries of this folder, but `.` and `..`, with their kind when the listing
    /// gives it (`getdents64` straight, without a `DIR` stream, whose set-up costs three
    /// calls more per folder). Once: the listing reads the descriptor to its end, so it
    /// takes the folder mutably (a shared one would be listed from where another left).
    /// The folder must be open for [`Use::Listing`].
    pub(crate) fn entries(&mut self) -> io::Result<Entries> {
        Ok(self.entries_up_to(usize::MAX)?.unwrap_or_default())
    }

    /// [`Dir::entries`], or `None` as soon as more than `max` were read: a folder much
    /// larger than the caller needs is not read to its end.
    pub(crate) fn entries_up_to(&mut self, max: usize) -> io::Result<Option<Entries>> {
        // 8-byte aligned, as the kernel's records are; only what the kernel wrote is read,
        // so the buffer is not cleared first.
        let mut buf = std::mem::MaybeUninit::<[u64; 1024]>::uninit();
        let size = std::mem::size_of_val(&buf);
        let mut entries = Vec::new();
        loop {
            // SAFETY: the kernel writes at most `size` bytes into `buf`.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, self.0.as_raw_fd(), buf.as_mut_ptr(), size) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(Some(entries));
            }
            // SAFETY: the kernel filled the first `n` bytes of `buf`, at most `size`.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n.unsigned_abs() as usize) };
            let mut at = 0;
            // Each record: inode (8 bytes), offset (8), its length (2), type (1), then
            // the name, NUL-terminated, padded to the record's length.
            while let Some(record) = bytes.get(at..).filter(|r| r.len() >= 19) {
                let len = usize::from(u16::from_ne_bytes([record[16], record[17]]));
                let Some(record) = record.get(..len).filter(|_| len >= 19) else {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a folder listing record out of bounds"));
                };
                let name = &record[19..];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    entries.push((OsStr::from_bytes(name).to_owned(), Kind::of_dirent(record[18])));
                }
                at += len;
            }
            if entries.len() > max {
                return Ok(None);
            }
        }
    }

    /// The bytes of the file `name` in this folder, at most `cap` and one more (so
    /// that the caller sees a file larger than `cap`). A link is not followed (`ELOOP`),
    /// and a pipe put there is not waited on.
    pub(crate) fn read_file(&self, name: &OsStr, cap: u64) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: `name` is a valid C string for the duration of the call.
        let raw = with_c_name(name, |name| Ok(unsafe { libc::openat(self.0.as_raw_fd(), name.as_ptr(), flags) }))?;
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // Room for a small file in one read, and the read that finds its end.
        let mut bytes = Vec::with_capacity(4096);
        file.take(cap + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Reads the link `name` in this folder, or says what is there instead.
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<Link> {
        with_c_name(name, |name| read_link_at(self.0.as_raw_fd(), name))
    }

    /// What `name` (which may have several parts, none of them `..` or a link the
    /// caller has not ruled out) is in this folder, without following a final link.
    pub(crate) fn stat(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        with_c_name(name, |name| stat_at(self.0.as_raw_fd(), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_tells_absent_from_what_is_there_and_follows_no_link() {
        let dir = crate::test_dir::TestDir::new("at");
        std::fs::create_dir_all(dir.join("folder/inner")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        std::os::unix::fs::symlink("folder", dir.join("link")).unwrap();
        let long = "t/".repeat(300);
        std::os::unix::fs::symlink(&long, dir.join("long")).unwrap();

        let Opened::Dir(mut top) = Dir::open(&dir, Use::Listing).unwrap() else { panic!("the folder opens") };
        assert!(matches!(top.open_dir("folder".as_ref(), Use::Lookups).unwrap(), Opened::Dir(_)));
        assert!(matches!(top.open_dir("link".as_ref(), Use::Lookups).unwrap(), Opened::Other(Kind::Symlink)));
        assert!(matches!(top.open_dir("file".as_ref(), Use::Lookups).unwrap(), Opened::Other(Kind::File)));
        assert!(matches!(top.open_dir("none".as_ref(), Use::Lookups).unwrap(), Opened::Absent));
        assert!(matches!(Dir::open(&dir.join("none"), Use::Lookups).unwrap(), Opened::Absent));
        assert!(matches!(Dir::open(&dir.join("file"), Use::Lookups).unwrap(), Opened::Other(Kind::File)));
        // Only a missing path is absent; any other failure is an error.
        assert!(Dir::open(&dir.join("n".repeat(300)), Use::Lookups).is_err(), "a name longer than the system allows");
        assert!(top.open_dir("n".repeat(300).as_ref(), Use::Lookups).is_err());
        // The one call that follows a link: the root handed in.
        assert!(matches!(Dir::open(&dir.join("link"), Use::Lookups).unwrap(), Opened::Dir(_)));

        assert_eq!(top.read_link("link".as_ref()).unwrap(), Link::Target("folder".into()));
        assert_eq!(top.read_link("long".as_ref()).unwrap(), Link::Target(long.into()), "a target of 600 bytes");
        let Link::Target(kept) = top.read_link("link".as_ref()).unwrap() else { panic!("a link") };
        assert!(kept.capacity() < 64, "a target kept in the world has no spare room: {}", kept.capacity());
        assert_eq!(top.read_link("folder".as_ref()).unwrap(), Link::Other(Kind::Dir));
        assert_eq!(top.read_link("file".as_ref()).unwrap(), Link::Other(Kind::File));
        assert_eq!(top.read_link("none".as_ref()).unwrap(), Link::Absent);
        assert_eq!(top.read_link("file/below".as_ref()).unwrap(), Link::Absent);

        assert_eq!(top.stat("folder/inner".as_ref()).unwrap(), Some(Kind::Dir));
        assert_eq!(top.stat("link".as_ref()).unwrap(), Some(Kind::Symlink));
        assert_eq!(top.stat("file/below".as_ref()).unwrap(), None);
        assert!(top.stat("a\0b".as_ref()).is_err(), "a NUL byte is an error, not a truncated name");

        let mut seen = top.entries().unwrap();
        seen.sort();
        let names: Vec<_> = seen.iter().map(|(n, k)| (n.to_str().unwrap(), *k)).collect();
        assert_eq!(top.read_file("file".as_ref(), 10).unwrap(), b"x");
        assert_eq!(top.read_file("file".as_ref(), 0).unwrap(), b"x", "one byte past the cap, to show it is larger");
        assert_eq!(top.read_file("link".as_ref(), 10).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(top.read_file("none".as_ref(), 10).unwrap_err().kind(), io::ErrorKind::NotFound);

        let kinds = [("file", Kind::File), ("folder", Kind::Dir), ("link", Kind::Symlink), ("long", Kind::Symlink)];
        // A file system may leave the kind out of its listing; ext4 and tmpfs give it.
        for ((name, kind), (want_name, want_kind)) in names.iter().zip(kinds) {
            assert_eq!(*name, want_name);
            assert!(kind.is_none_or(|k| k == want_kind), "{name}: {kind:?}");
        }
        assert_eq!(names.len(), 4);
        // A folder opened for lookups serves them, and refuses a listing.
        let Opened::Dir(mut lookups) = Dir::open(&dir, Use::Lookups).unwrap() else { panic!("the folder opens") };
        assert_eq!(lookups.read_link("link".as_ref()).unwrap(), Link::Target("folder".into()));
        assert_eq!(lookups.stat("folder/inner".as_ref()).unwrap(), Some(Kind::Dir));
        assert_eq!(lookups.read_file("file".as_ref(), 10).unwrap(), b"x");
        assert!(matches!(lookups.open_dir("folder".as_ref(), Use::Listing).unwrap(), Opened::Dir(_)));
        assert_eq!(lookups.entries().unwrap_err().raw_os_error(), Some(libc::EBADF));
        // More entries than one call of the listing returns.
        for i in 0..600 {
            std::fs::create_dir(dir.join(format!("folder/inner/entry-with-a-longish-name-{i:04}"))).unwrap();
        }
        let Opened::Dir(inner) = top.open_dir("folder".as_ref(), Use::Lookups).unwrap() else {
            panic!("the folder opens")
        };
        let Opened::Dir(mut inner) = inner.open_dir("inner".as_ref(), Use::Listing).unwrap() else {
            panic!("the folder opens")
        };
        let mut names: Vec<_> = inner.entries().unwrap().into_iter().map(|(n, _)| n.into_string().unwrap()).collect();
        names.sort();
        let want: Vec<_> = (0..600).map(|i| format!("entry-with-a-longish-name-{i:04}")).collect();
        assert_eq!(names, want);
    }

    #[test]
    fn names_short_and_long_reach_the_same_paths() {
        let dir = crate::test_dir::TestDir::new("at-names");
        std::fs::create_dir_all(dir.join("folder/inner")).unwrap();
        let Opened::Dir(top) = Dir::open(&dir, Use::Lookups).unwrap() else { panic!("the folder opens") };
        // Names copied on the stack up to 255 bytes, longer ones on the heap: both reach
        // the same path, and a NUL byte is refused either way.
        let name = "f".repeat(255);
        std::fs::write(dir.join(&name), "x").unwrap();
        assert_eq!(top.stat(name.as_ref()).unwrap(), Some(Kind::File), "a name of 255 bytes");
        assert_eq!(top.read_file(name.as_ref(), 10).unwrap(), b"x");
        let deep = format!("{}folder/{name}", "folder/inner/../../".repeat(20));
        std::fs::write(dir.join("folder").join(&name), "y").unwrap();
        assert!(deep.len() > 256);
        assert_eq!(top.stat(deep.as_ref()).unwrap(), Some(Kind::File), "a name of {} bytes", deep.len());
        assert_eq!(top.read_file(deep.as_ref(), 10).unwrap(), b"y");
        assert_eq!(top.read_link(deep.as_ref()).unwrap(), Link::Other(Kind::File));
        for nul in [format!("{}\0", "a".repeat(254)), format!("{}\0", "a".repeat(300))] {
            assert_eq!(top.stat(nul.as_ref()).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{}", nul.len());
        }
    }

    #[test]
    fn a_listing_up_to_a_bound_stops_past_it_and_reads_a_smaller_folder_whole() {
        let dir = crate::test_dir::TestDir::new("at-bound");
        // More entries than one read of the listing returns (8 KiB of records).
        let names: Vec<String> = (0..700).map(|i| format!("entry-{i:04}")).collect();
        for name in &names {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        let list = |max| {
            let Opened::Dir(mut folder) = Dir::open(&dir, Use::Listing).unwrap() else { panic!("the folder opens") };
            folder.entries_up_to(max).unwrap().map(|mut entries| {
                entries.sort();
                entries.into_iter().map(|(name, kind)| (name.into_string().unwrap(), kind)).collect::<Vec<_>>()
            })
        };
        let whole: Vec<_> = names.iter().map(|name| (name.clone(), Some(Kind::File))).collect();
        for max in [700, 701, usize::MAX] {
            assert_eq!(list(max).as_ref(), Some(&whole), "at most {max}");
        }
        for max in [0, 1, 100, 699] {
            assert_eq!(list(max), None, "at most {max}");
        }
    }

    #[test]
    fn a_folder_below_opens_in_one_call_only_through_real_folders() {
        let dir = crate::test_dir::TestDir::new("at-below");
        std::fs::create_dir_all(dir.join("p/deployments/r1")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere/deployments")).unwrap();
        std::fs::create_dir_all(dir.join("q")).unwrap();
        std::fs::write(dir.join("q/file"), "x").unwrap();
        std::os::unix::fs::symlink("p", dir.join("link")).unwrap();
        std::os::unix::fs::symlink("../elsewhere/deployments", dir.join("q/deployments")).unwrap();
        let Opened::Dir(top) = Dir::open(&dir, Use::Lookups).unwrap() else { panic!("the folder opens") };

        let Below::Opened(mut below) = top.open_below("p/deployments".as_ref(), Use::Listing).unwrap() else {
            panic!("two real folders open in one call")
        };
        assert_eq!(below.entries().unwrap(), [("r1".into(), Some(Kind::Dir))]);
        assert_eq!(below.stat("../deployments/r1".as_ref()).unwrap(), Some(Kind::Dir), "`..` is the folder it is in");
        let Below::Opened(mut lookups) = top.open_below("p/deployments".as_ref(), Use::Lookups).unwrap() else {
            panic!("opened for lookups")
        };
        assert_eq!(lookups.entries().unwrap_err().raw_os_error(), Some(libc::EBADF));
        // A link at the start, at the end, something else, nothing: the caller looks.
        for path in ["link/deployments", "q/deployments", "q/file", "q/none", "none/deployments"] {
            for use_ in [Use::Listing, Use::Lookups] {
                let below = top.open_below(path.as_ref(), use_).unwrap();
                assert!(matches!(below, Below::Refused), "{path} for {use_:?}: {below:?}");
            }
        }
    }

    #[test]
    fn a_pipe_is_read_without_waiting_for_a_writer() {
        let dir = crate::test_dir::TestDir::new("at-pipe");
        let pipe = CString::new(dir.join("pipe").into_os_string().into_vec()).unwrap();
        // SAFETY: `pipe` is a valid C string.
        assert_eq!(unsafe { libc::mkfifo(pipe.as_ptr(), 0o644) }, 0, "{}", io::Error::last_os_error());
        let Opened::Dir(top) = Dir::open(&dir, Use::Lookups).unwrap() else { panic!("the folder opens") };
        // No writer: an open that waited for one would never return.
        assert_eq!(top.read_file("pipe".as_ref(), 10).unwrap(), b"");
        assert_eq!(top.stat("pipe".as_ref()).unwrap(), Some(Kind::Special));
    }
}
