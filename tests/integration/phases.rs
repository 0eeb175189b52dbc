//! The phase executors against the real thing: real processes and process groups, real
//! folders, tarballs made here with the `tar` crate, a git repository made with the `git`
//! binary, and a loopback HTTP server.

use std::path::Path;
use std::time::{Duration, Instant};

use trueup::model::LogLevel;
use trueup::phases::{Lines, PhaseError, Stopped, Watch};

use crate::scratch::Scratch;

/// A watch that says stop once `after` has passed.
struct StopAfter {
    after: Instant,
    lines: Vec<String>,
}

impl Watch for StopAfter {
    fn line(&mut self, _: LogLevel, text: &str) {
        self.lines.push(text.to_owned());
    }

    fn tick(&mut self) -> Result<(), Stopped> {
        if Instant::now() >= self.after { Err(Stopped("Ctrl-C".to_owned())) } else { Ok(()) }
    }
}

/// Whether process `pid` is gone. A process that ended but is not reaped yet counts as
/// gone: orphans are reaped by pid 1, which on some machines (containers) never does it.
fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesized command name: `1234 (sleep) Z ...`.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Waits up to two seconds for the pids listed in `file` to be gone.
#[track_caller]
fn assert_gone(file: &Path) {
    let pids: Vec<i32> =
        std::fs::read_to_string(file).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(!pids.is_empty());
    let until = Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&p| gone(p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| !gone(p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
}

mod build {
    use super::*;
    use trueup::phases::build;

    fn run(dir: &Path, command: &str, limit: Duration, watch: &mut dyn Watch) -> Result<(), PhaseError> {
        build::run(command, dir, &[("GREETING".to_owned(), "hello".to_owned())], limit, watch)
    }

    fn failed(result: Result<(), PhaseError>) -> String {
        match result {
            Err(PhaseError::Failed(reason)) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn output_lines_arrive_in_order_with_their_stream() {
        let dir = Scratch::new("build-lines");
        let mut lines = Lines::default();
        // The two streams are read apart, so only pauses order lines across them.
        let script = "echo \"$GREETING\"; pwd; sleep 0.3; echo oops >&2; sleep 0.3; for i in 1 2 3; do echo line $i; done; printf tail";
        run(&dir.0, script, Duration::from_secs(30), &mut lines).unwrap();
        let text: Vec<_> = lines.lines.iter().map(|(l, t)| (*l, t.as_str())).collect();
        let cwd = dir.0.canonicalize().unwrap();
        assert_eq!(
            text,
            [
                (LogLevel::Info, "hello"),
                (LogLevel::Info, cwd.to_str().unwrap()),
                (LogLevel::Warn, "oops"),
                (LogLevel::Info, "line 1"),
                (LogLevel::Info, "line 2"),
                (LogLevel::Info, "line 3"),
                (LogLevel::Info, "tail"),
            ]
        );
        assert!(lines.ticks >= 1, "a build of more than half a second ticks");
    }

    #[test]
    fn a_nonzero_exit_names_its_status_and_last_lines() {
        let dir = Scratch::new("build-exit");
        let script = "for i in $(seq 1 15); do echo step $i; done; echo broken; exit 3";
        let reason = failed(run(&dir.0, script, Duration::from_secs(30), &mut Lines::default()));
        let expected = "the build exited with status 3; its last lines:\n    step 7\n    step 8\n    step 9\n    \
                        step 10\n    step 11\n    step 12\n    step 13\n    step 14\n    step 15\n    broken";
        assert_eq!(reason, expected);
        let reason = failed(run(&dir.0, "kill -9 $$", Duration::from_secs(30), &mut Lines::default()));
        assert_eq!(reason, "the build was killed by signal 9; it printed nothing");
    }

    #[test]
    fn a_command_that_cannot_start_fails() {
        let dir = Scratch::new("build-spawn");
        let missing = dir.join("no-such-folder");
        let reason = failed(run(&missing, "true", Duration::from_secs(5), &mut Lines::default()));
        assert!(reason.starts_with("the build command could not be started in `"), "{reason}");
    }

    #[test]
    fn the_limit_kills_the_whole_process_group() {
        let dir = Scratch::new("build-limit");
        let pids = dir.join("pids");
        let script = format!(
            "sh -c 'sleep 100 & echo $! >> {p}; sleep 100' & echo $! >> {p}; echo started; sleep 100",
            p = pids.display()
        );
        let start = Instant::now();
        let reason = failed(run(&dir.0, &script, Duration::from_secs(1), &mut Lines::default()));
        assert_eq!(reason, "the build ran past its limit of 1s; its last lines:\n    started");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_gone(&pids);
    }

    #[test]
    fn stopped_kills_the_whole_process_group() {
        let dir = Scratch::new("build-stop");
        let pids = dir.join("pids");
        // The grandchild ignores SIGTERM, so only the SIGKILL after the grace ends it.
        let script = format!(
            "sh -c 'trap \"\" TERM; sleep 100 & echo $! >> {p}; wait' & echo $! >> {p}; sleep 100",
            p = pids.display()
        );
        let mut watch = StopAfter { after: Instant::now() + Duration::from_millis(500), lines: Vec::new() };
        let result = run(&dir.0, &script, Duration::from_secs(60), &mut watch);
        assert_eq!(result, Err(PhaseError::Stopped("Ctrl-C".to_owned())));
        assert_gone(&pids);
    }

    #[test]
    fn what_a_finished_build_left_running_is_stopped() {
        let dir = Scratch::new("build-leftover");
        let pids = dir.join("pids");
        let script = format!("sleep 100 & echo $! >> {}; echo done", pids.display());
        let start = Instant::now();
        run(&dir.0, &script, Duration::from_secs(60), &mut Lines::default()).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_gone(&pids);
    }
}
