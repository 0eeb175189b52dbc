//! The build phase: a user's command, run with `sh -c` in its own process group.
//!
//! Its output goes to the deployment log line by line while it runs; the worker is asked
//! at least once a second whether to go on. When it must stop, or runs past its time
//! limit, the whole process group goes (SIGTERM, then SIGKILL after a short grace), so no
//! compiler or bundler it started lives on. The same supervision runs `git` for
//! [`super::source`].
//!
//! This module only runs processes: it never decides what to build or where the output
//! goes.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{PhaseError, Ticker, Watch, human, io_error};
use crate::model::LogLevel;

/// How long a process group has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How long the output of a finished command is still read, for a process that left the
/// group (`setsid`) and kept its pipes open.
const DRAIN: Duration = Duration::from_secs(1);

/// The longest output line kept, in bytes; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;

/// How many of the last output lines a failure quotes.
const LAST_LINES: usize = 10;

/// Runs `sh -c COMMAND` in `dir`, with `env` added to trueup's own environment, until it
/// exits.
///
/// Standard output is logged at [`LogLevel::Info`], standard error at [`LogLevel::Warn`],
/// one line each (invalid UTF-8 replaced, lines past 4 KiB cut); standard input is empty.
/// Whatever the command left running in its process group when it exits is stopped too.
///
/// # Errors
///
/// - [`PhaseError::Stopped`] when [`Watch::tick`] says so; the process group is gone.
/// - [`PhaseError::Retry`] when the command cannot be started for a passing reason (the
///   machine at its limit of processes, memory or open files: EAGAIN, ENOMEM, EMFILE).
/// - [`PhaseError::Failed`] when it cannot be started for another reason, exits with a
///   nonzero status or a signal, or runs past `limit` (then its process group is gone);
///   the reason quotes its last lines.
pub fn run(
    command: &str,
    dir: &Path,
    env: &[(String, String)],
    limit: Duration,
    watch: &mut dyn Watch,
) -> Result<(), PhaseError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(dir).envs(env.iter().map(|(k, v)| (k, v)));
    let ran = supervise(&mut cmd, limit, watch).map_err(|e| match e {
        Unfinished::Spawn(e) => io_error(&format!("the build command could not be started in `{}`", dir.display()), &e),
        other => other.into_phase_error("the build"),
    })?;
    if ran.status.success() {
        return Ok(());
    }
    Err(PhaseError::Failed(format!("the build {}{}", ended(ran.status), last_lines(&ran.last))))
}

/// How a supervised process ended: its status, and its last output lines.
#[derive(Debug)]
pub(crate) struct Ran {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its last output lines, oldest first, both streams interleaved as they arrived.
    pub(crate) last: VecDeque<String>,
}

/// Why a supervised process did not run to its end.
#[derive(Debug)]
pub(crate) enum Unfinished {
    /// It could not be started.
    Spawn(io::Error),
    /// The watch said stop; its process group is gone.
    Stopped(String),
    /// It ran past its limit; its process group is gone.
    PastLimit(Duration, VecDeque<String>),
    /// trueup could not wait for it (the OS refused `waitpid`).
    Wait(io::Error),
}

impl Unfinished {
    /// The phase error for everything but a failed spawn, which each caller words itself.
    pub(crate) fn into_phase_error(self, what: &str) -> PhaseError {
        match self {
            Unfinished::Spawn(e) => io_error(&format!("{what} could not be started"), &e),
            Unfinished::Stopped(why) => PhaseError::Stopped(why),
            Unfinished::PastLimit(limit, last) => {
                PhaseError::Failed(format!("{what} ran past its limit of {}{}", human(limit), last_lines(&last)))
            }
            Unfinished::Wait(e) => PhaseError::Retry(format!("could not wait for {what}: {e}")),
        }
    }
}

/// How a process ended, as a phrase: `exited with status 2`, `was killed by signal 9`.
pub(crate) fn ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// `; its last lines:` and the lines, indented, or `; it printed nothing`.
fn last_lines(last: &VecDeque<String>) -> String {
    if last.is_empty() {
        return "; it printed nothing".to_owned();
    }
    let mut out = "; its last lines:".to_owned();
    for line in last {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

/// A message from a reader thread.
enum Output {
    /// One line of standard output (`false`) or standard error (`true`).
    Line(bool, String),
    /// One of the two streams is closed.
    Closed,
}

/// Runs `cmd` in a process group of its own with empty stdin and its output sent to
/// `watch`, ticking the watch at least once a second, until it exits, must stop, or
/// passes `limit`. Whatever it left in its group when it exits is stopped as well.
pub(crate) fn supervise(cmd: &mut Command, limit: Duration, watch: &mut dyn Watch) -> Result<Ran, Unfinished> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // Run from a worker thread, it would inherit SIGINT and SIGTERM blocked.
    crate::threads::unblock_signals_in(cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(Unfinished::Spawn)?;
    // With `process_group(0)` the child leads a new group whose id is its pid.
    let group = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let readers = [reader(stdout, false, tx.clone()), reader(stderr, true, tx)];
    if readers.iter().any(Result::is_err) {
        // Without a reader a full pipe would block the command forever.
        kill_group(group, &mut child);
        let e = readers.into_iter().find_map(Result::err).expect("one reader failed");
        return Err(Unfinished::Spawn(e));
    }
    let mut run = Running { child, group, rx, last: VecDeque::new(), open: 2 };
    match run.watch(start + limit, watch) {
        Ok(status) => Ok(Ran { status, last: run.last }),
        Err(e) => {
            kill_group(run.group, &mut run.child);
            Err(match e {
                Stop::Stopped(why) => Unfinished::Stopped(why),
                Stop::PastLimit => {
                    // The lines written just before the kill are the most telling.
                    run.read_for(Duration::from_millis(100), &mut *watch);
                    Unfinished::PastLimit(limit, run.last)
                }
                Stop::Wait(e) => Unfinished::Wait(e),
            })
        }
    }
}

/// Why [`Running::watch`] stopped before the command exited.
enum Stop {
    Stopped(String),
    PastLimit,
    Wait(io::Error),
}

/// A started command and what is known of it.
struct Running {
    child: Child,
    group: libc::pid_t,
    rx: Receiver<Output>,
    last: VecDeque<String>,
    /// How many of the two streams are still open.
    open: u8,
}

impl Running {
    /// Logs output and ticks until the command exits and its output is read, or it must
    /// stop, or `deadline` passes.
    fn watch(&mut self, deadline: Instant, watch: &mut dyn Watch) -> Result<ExitStatus, Stop> {
        let mut ticker = Ticker::new();
        let mut exited: Option<(ExitStatus, Instant)> = None;
        loop {
            let now = Instant::now();
            if let Some((status, at)) = exited
                && (self.open == 0 || now >= at + DRAIN)
            {
                return Ok(status);
            }
            if now >= deadline {
                return Err(Stop::PastLimit);
            }
            // Short waits once the command is gone or its pipes are closed, so an exit is
            // noticed quickly; otherwise wait for output up to the tick interval.
            let wait = if exited.is_some() || self.open == 0 { Duration::from_millis(20) } else { Ticker::EVERY };
            self.read_for(wait.min(deadline - now), watch);
            if exited.is_none() {
                match self.child.try_wait() {
                    Ok(Some(status)) => {
                        // The shell is done: what it left running in its group goes too.
                        kill_group(self.group, &mut self.child);
                        exited = Some((status, Instant::now()));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Stop::Wait(e)),
                }
            }
            ticker.tick(watch).map_err(|e| match e {
                PhaseError::Stopped(why) => Stop::Stopped(why),
                other => Stop::Stopped(other.to_string()),
            })?;
        }
    }

    /// Logs the output that arrives within `wait` (the first message is waited for, the
    /// rest taken as they are).
    fn read_for(&mut self, wait: Duration, watch: &mut dyn Watch) {
        if self.open == 0 {
            std::thread::sleep(wait);
            return;
        }
        let mut next = self.rx.recv_timeout(wait);
        loop {
            match next {
                Ok(Output::Line(err, text)) => {
                    watch.line(if err { LogLevel::Warn } else { LogLevel::Info }, &text);
                    if self.last.len() == LAST_LINES {
                        self.last.pop_front();
                    }
                    self.last.push_back(text);
                }
                Ok(Output::Closed) => self.open -= 1,
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.open = 0;
                    return;
                }
            }
            next = self.rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
    }
}

/// Starts a thread that sends the lines of `stream` to `tx`, then [`Output::Closed`]. The
/// thread is not joined: a process that escaped the group may hold the pipe open past the
/// build, and the thread then ends when that process does.
fn reader(stream: impl Read + Send + 'static, err: bool, tx: Sender<Output>) -> io::Result<()> {
    let name = if err { "build-stderr" } else { "build-stdout" };
    crate::threads::start(name, move || {
        split_lines(stream, |line| tx.send(Output::Line(err, line)).is_ok());
        let _ = tx.send(Output::Closed);
    })?;
    Ok(())
}

/// Calls `each` with every line of `stream` (lossy UTF-8, without its `\n` or `\r\n`, cut
/// at [`MAX_LINE`] bytes) until the stream ends or `each` returns false. A last line
/// without a newline counts too.
fn split_lines(mut stream: impl Read, mut each: impl FnMut(String) -> bool) {
    let mut line = Vec::new();
    // Whether the current line passed MAX_LINE and its rest is being skipped.
    let mut cut = false;
    let mut buf = [0u8; 8192];
    let emit = |line: &mut Vec<u8>, cut: bool, each: &mut dyn FnMut(String) -> bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(line).into_owned();
        if cut {
            text.push_str(" [line cut]");
        }
        line.clear();
        each(text)
    };
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if !emit(&mut line, cut, &mut each) {
                    return;
                }
                cut = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() || cut {
        emit(&mut line, cut, &mut each);
    }
}

/// Stops every process in `group`: SIGTERM, then SIGKILL to whatever is left after
/// [`GRACE`], and reaps `leader` (the group's first process, trueup's child).
///
/// A process that is gone but not yet reaped still counts as a member, and orphans are
/// reaped by pid 1, which may be slow to do it; so a group that seems to linger gets the
/// SIGKILL too, which harms nothing.
pub(crate) fn kill_group(group: libc::pid_t, leader: &mut Child) {
    // SAFETY: killpg only sends a signal; `group` is a process group this process made.
    let signal = |sig| unsafe { libc::killpg(group, sig) } == 0;
    if signal(libc::SIGTERM) {
        let until = Instant::now() + GRACE;
        while Instant::now() < until {
            let _ = leader.try_wait();
            if !signal(0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        signal(libc::SIGKILL);
    }
    let _ = leader.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        split_lines(input, |l| {
            out.push(l);
            true
        });
        out
    }

    #[test]
    fn lines_are_split_cut_and_lossy() {
        assert_eq!(lines_of(b"a\r\nb\n\nlast"), ["a", "b", "", "last"]);
        assert_eq!(lines_of(b"caf\xff\n"), ["caf\u{fffd}"]);
        let long = vec![b'x'; MAX_LINE + 10];
        let got = lines_of(&[&long[..], b"\nnext\n"].concat());
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with("x [line cut]") && got[0].len() == MAX_LINE + " [line cut]".len());
        assert_eq!(got[1], "next");
    }

    #[test]
    fn exit_phrases() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(ended(ExitStatus::from_raw(2 << 8)), "exited with status 2");
        assert_eq!(ended(ExitStatus::from_raw(9)), "was killed by signal 9");
    }
}
