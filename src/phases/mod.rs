//! The phase executors: what each phase of a deployment really does.
//!
//! A spec's phase names what it runs (`run:`); a worker maps that to one of these executors and calls it with the deployment's stored options. Every
//! executor is idempotent and safe to re-run after a crash at any instant: what it makes
//! is made under a temporary name and renamed into place, so a re-run replaces a partial
//! result whole and never builds on it.
//!
//! Executors do no bookkeeping of their own. They report output lines and ask whether to
//! go on through a [`Watch`], which the worker implements (it heartbeats its claim and
//! notices Ctrl-C there), and they end with a [`PhaseError`] that says what the worker
//! should do next: fail the deployment, or leave it to be resumed.
//!
//! - [`source`] pulls a deployment's source (an upload folder, a tarball, a git
//!   repository) into a folder of its own.
//! - [`build`] runs the build command in its own process group, streaming its output.
//! - [`release`] copies the build output into the release folder, with a completion
//!   marker.
//! - [`probe`] asks a release over HTTP whether it is healthy.
//!
//! Executors touch only the folders they are given; they never read the store or the
//! spec, and they never print.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::model::LogLevel;

pub mod build;
pub mod probe;
pub mod release;
pub mod source;

/// What an executor reports to, and asks of, the worker that runs it.
pub trait Watch {
    /// A line for the deployment's log (a build's output line, a step taken).
    fn line(&mut self, level: LogLevel, text: &str);

    /// Called at least once a second while an executor works. The worker heartbeats its
    /// claim here, and answers [`Stopped`] when the deployment must stop now (Ctrl-C,
    /// SIGTERM, its claim lost): the executor then stops what it started (a build's whole
    /// process group) and returns [`PhaseError::Stopped`].
    ///
    /// # Errors
    ///
    /// [`Stopped`] when the executor must stop.
    fn tick(&mut self) -> Result<(), Stopped>;
}

/// Why an executor must stop before its phase is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// How a phase ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    /// It was asked to stop: the deployment stays in its phase, to be resumed.
    #[error("stopped: {0}")]
    Stopped(String),
    /// It failed for a reason that running it again will not fix (a missing source, an
    /// unsafe tarball, a failed build): the deployment fails with this reason.
    #[error("{0}")]
    Failed(String),
    /// It could not be done now (a full disk, a server that does not answer): the
    /// deployment stays in its phase, and a resume runs it again.
    #[error("{0}")]
    Retry(String),
}

impl From<Stopped> for PhaseError {
    fn from(s: Stopped) -> Self {
        PhaseError::Stopped(s.0)
    }
}

/// A [`Watch`] that keeps the lines and never stops: for tests and one-off calls.
#[derive(Debug, Default)]
pub struct Lines {
    /// Every line reported, with its level.
    pub lines: Vec<(LogLevel, String)>,
    /// How many times [`Watch::tick`] was called.
    pub ticks: usize,
}

impl Watch for Lines {
    fn line(&mut self, level: LogLevel, text: &str) {
        self.lines.push((level, text.to_owned()));
    }

    fn tick(&mut self) -> Result<(), Stopped> {
        self.ticks += 1;
        Ok(())
    }
}

/// Calls [`Watch::tick`] about twice a second from a loop that may spin faster: copying
/// many small files should not heartbeat once per file.
pub(crate) struct Ticker {
    last: Instant,
}

impl Ticker {
    /// How often the watch is asked: well inside its "at least once a second".
    const EVERY: Duration = Duration::from_millis(400);

    pub(crate) fn new() -> Self {
        Ticker { last: Instant::now() }
    }

    /// Ticks the watch when [`Ticker::EVERY`] has passed since the last tick.
    pub(crate) fn tick(&mut self, watch: &mut dyn Watch) -> Result<(), PhaseError> {
        if self.last.elapsed() >= Self::EVERY {
            self.last = Instant::now();
            watch.tick()?;
        }
        Ok(())
    }
}

/// A limit as a person writes it: `30m`, `90s`, `1h30m`, or `500ms` below a second.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        crate::time::Duration::from_secs(d.as_secs()).to_string()
    }
}

/// An IO error while doing `what`, as a phase error: a full disk or another passing
/// condition of the machine is [`PhaseError::Retry`] (a resume may succeed), anything else
/// (a missing or unreadable input, a path that is in the way) is [`PhaseError::Failed`].
pub(crate) fn io_error(what: &str, e: &io::Error) -> PhaseError {
    let passing = [
        libc::ENOSPC,
        libc::EDQUOT,
        libc::EIO,
        libc::ENOMEM,
        libc::EMFILE,
        libc::ENFILE,
        libc::EAGAIN,
        libc::EINTR,
        libc::EBUSY,
        libc::EROFS,
    ];
    let text = format!("{what}: {e}");
    match e.raw_os_error() {
        Some(code) if passing.contains(&code) => PhaseError::Retry(text),
        _ if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => PhaseError::Retry(text),
        _ => PhaseError::Failed(text),
    }
}

/// Flushes everything written under `dir` to disk, then the folder itself: one `syncfs`
/// for a whole copied tree instead of an fsync per file.
pub(crate) fn sync_tree(dir: &Path) -> io::Result<()> {
    let folder = std::fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `folder` is an open descriptor for the whole call.
        if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe {
        libc::sync()
    };
    folder.sync_all()
}

/// Makes a rename or removal inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes what is at `path`, a folder tree or a file or link, without following a link;
/// nothing there is fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
