//! `trueup serve` as real processes against staged worlds.
//!
//! The daemon is started over a world with stuck deployments and broken links, and must
//! have resumed and repaired them (as `apply` does, count for count) before it logs that
//! it is ready; SIGHUP runs another cycle that finds nothing left; SIGTERM frees both
//! leases and exits 0, so the next daemon starts at once. Daemons started together never
//! both hold the daemon lease, and an operator's `apply` runs between cycles; a cycle
//! that finds an operator's apply holding the lease runs once it is done. A daemon
//! stopped mid-cycle and killed with SIGKILL is taken over at once by the next, which
//! converges; one sent SIGTERM there finishes the action in hand and exits 0. Deployments
//! killed mid-build are resumed and run live before ready; queued deployments are run
//! between cycles, and SIGTERM stops a running build and leaves its deployment to be
//! resumed. The README's systemd unit is run with its own flags.
//!
//! A stopped app container started by the first cycle, before ready, is in
//! `containers.rs`, beside the Podman service it needs.
//!
//! Staged worlds have fake sources, so those runs use `--no-run` (only the verdicts are
//! recorded, as `apply --no-run` does) and `--now`, the instant the world was staged at;
//! the tests that run deployments deploy a real folder with the wall clock. Everything is asserted from
//! the daemon's log lines, the state database and the exit status, never from timings:
//! waits only bound how long a test may hang.

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trueup::world::stage::Staged;

use crate::crash::{NOW, damaged, db, log_counts, staged};
use crate::machine::{trueup, trueup_command};
use crate::scratch::Scratch;

/// The longest a test waits for a log line or an exit before it fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running `trueup` process (a daemon, or an apply a test holds) and the lines of its
/// stderr so far.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread that collects the lines: it ends at the end of stderr.
    reader: std::thread::JoinHandle<()>,
}

impl Daemon {
    /// `trueup serve ARGS` against `staged`, with `env` set.
    pub fn start(staged: &Staged, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let mut command = trueup_command(staged, &all);
        command.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped());
        Daemon::from_child(command.spawn().unwrap())
    }

    /// A started process whose stderr is piped, its lines collected as they come.
    fn from_child(mut child: Child) -> Daemon {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, lines, reader }
    }

    /// Once the process exited: waits for the reader to reach the end of its stderr, so
    /// that the log is whole (up to 10 s: a child it left running may hold stderr open).
    fn drained(&self) {
        let started = Instant::now();
        while !self.reader.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a log line that contains `text`, and returns it; fails when the daemon
    /// exits first.
    #[track_caller]
    pub fn wait_for(&mut self, text: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader may not have caught up yet.
                self.drained();
                if let Some(line) = self.log().into_iter().find(|l| l.contains(text)) {
                    return line;
                }
                panic!("trueup serve exited {status} before logging `{text}`:\n{}", self.log().join("\n"));
            }
            assert!(started.elapsed() < PATIENCE, "no `{text}` in the log:\n{}", self.log().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the test hook (`TRUEUP_TEST_STOP_AFTER`) stopped the daemon mid-cycle.
    #[track_caller]
    fn wait_stopped(&mut self) {
        let started = Instant::now();
        while crate::crash::process_state(&self.child) != 'T' {
            assert!(self.child.try_wait().unwrap().is_none(), "it ended first:\n{}", self.log().join("\n"));
            assert!(started.elapsed() < PATIENCE, "it never stopped:\n{}", self.log().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        crate::crash::signal(&self.child, signal);
    }

    /// Waits for the daemon to exit; returns its exit code and its whole log.
    #[track_caller]
    pub fn exit(mut self) -> (Option<i32>, Vec<String>) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "trueup serve did not exit:\n{}", self.log().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        };
        self.drained();
        (status.code(), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test leaves no daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON log line, parsed.
#[track_caller]
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
}

/// Both lease rows: (name, holder), in name order.
fn leases(staged: &Staged) -> Vec<(String, Option<String>)> {
    let conn = db(staged);
    let mut stmt = conn.prepare("SELECT name, owner FROM lease ORDER BY name").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn free() -> Vec<(String, Option<String>)> {
    vec![("apply".to_owned(), None), ("daemon".to_owned(), None)]
}

/// `plan --detailed-exitcode` at [`NOW`]: 0 when nothing is left to do.
#[track_caller]
fn converged(staged: &Staged) {
    let out = trueup(staged, &["plan", "--detailed-exitcode", "--now", NOW]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The deployments of a staged world that are not finished.
fn unfinished(staged: &Staged) -> Vec<String> {
    let conn = db(staged);
    let mut stmt = conn.prepare("SELECT id FROM deployments WHERE finished_at IS NULL ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// The summary counts of a JSON cycle line, by the names `apply --json` gives them.
pub fn cycle_counts(line: &serde_json::Value) -> Vec<(&'static str, u64)> {
    let field = |k: &str| line[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {line}"));
    vec![
        ("deployments_resumed", field("resumed")),
        ("deployments_failed", field("failed")),
        ("deployments_skipped", field("skipped")),
        ("symlinks_fixed", field("symlinks_fixed")),
        ("verified_links", field("symlinks_verified")),
        ("symlink_errors", field("symlink_errors")),
        ("containers_started", field("containers_started")),
        ("containers_removed", field("containers_removed")),
        ("errors", field("errors")),
    ]
}

#[test]
fn the_startup_cycle_repairs_everything_before_ready_and_each_deployment_once() {
    // The seed's checklist: sixty projects, fifty of them with a stuck deployment.
    let scratch = Scratch::new("serve-startup");
    let world = damaged(60);
    let staged = staged(&scratch, &world);
    let stuck = unfinished(&staged);
    assert!(
        world.projects.len() >= 50 && stuck.len() >= 10,
        "{} projects, {} stuck",
        world.projects.len(),
        stuck.len()
    );
    // The same world beside it, repaired by `apply`: the daemon must do what it does.
    let twin_scratch = Scratch::new("serve-startup-twin");
    let twin = crate::crash::staged(&twin_scratch, &world);
    let applied = trueup(&twin, &["apply", "--no-run", "--json", "--now", NOW]);
    assert_eq!(applied.status.code(), Some(0), "{}", String::from_utf8_lossy(&applied.stderr));
    let applied: serde_json::Value = serde_json::from_slice(&applied.stdout).unwrap();

    let mut daemon = Daemon::start(&staged, &["--no-run", "--now", NOW, "--log-format", "json"], &[]);
    let ready = json(&daemon.wait_for("ready"));
    // Ready means done: nothing is left to repair, and each stuck deployment got one
    // verdict, with one log line.
    converged(&staged);
    let counts = log_counts(&db(&staged));
    for id in &stuck {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    let log = daemon.log();
    let summary = log.iter().map(|l| json(l)).find(|l| l["message"].as_str().unwrap().starts_with("cycle 1 done"));
    let summary = summary.unwrap_or_else(|| panic!("no summary before ready:\n{}", log.join("\n")));
    let expected: Vec<(&str, u64)> = cycle_counts(&summary)
        .into_iter()
        .map(|(k, _)| {
            let n = if k == "verified_links" { &applied["verified_links"] } else { &applied["counts"][k] };
            (k, n.as_u64().unwrap())
        })
        .collect();
    assert_eq!(cycle_counts(&summary), expected, "the first cycle did what `apply` does");
    let resumed = summary["resumed"].as_u64().unwrap() + summary["failed"].as_u64().unwrap();
    assert_eq!(resumed, stuck.len() as u64, "every stuck deployment got its verdict");
    assert!(summary["symlinks_fixed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(ready["cycle"], 1);

    // SIGHUP: a cycle at once, which finds nothing left to do.
    daemon.signal("HUP");
    let second = json(&daemon.wait_for("cycle 2 done"));
    assert!(daemon.wait_for("cycle 2 begins").contains("SIGHUP"));
    assert!(cycle_counts(&second).iter().all(|(k, n)| *n == 0 || *k == "verified_links"), "{second}");
    assert_eq!(log_counts(&db(&staged)), counts, "no deployment was handled twice");

    daemon.signal("TERM");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    assert_eq!(leases(&staged), free());
}

#[test]
fn one_daemon_per_database_and_sigterm_frees_it_for_the_next_at_once() {
    let scratch = Scratch::new("serve-one");
    let staged = staged(&scratch, &damaged(6));
    let args = ["--no-run", "--now", NOW];
    // Four started at once: exactly one gets the lease; each other exits 1 naming it.
    let mut daemons: Vec<Daemon> = (0..4).map(|_| Daemon::start(&staged, &args, &[])).collect();
    let started = Instant::now();
    let mut losers = Vec::new();
    while daemons.len() > 1 {
        let exited = daemons.iter_mut().position(|d| d.child.try_wait().unwrap().is_some());
        match exited {
            Some(i) => losers.push(daemons.remove(i)),
            None => {
                let logs: Vec<String> = daemons.iter().map(|d| d.log().join("\n")).collect();
                assert!(started.elapsed() < PATIENCE, "{} daemons still run:\n{}", daemons.len(), logs.join("\n--\n"));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mut winner = daemons.pop().unwrap();
    let winner_pid = winner.child.id();
    for loser in losers {
        let (code, log) = loser.exit();
        assert_eq!(code, Some(1), "{}", log.join("\n"));
        let said = log.join("\n");
        assert!(
            said.contains("another `trueup serve` runs") && said.contains(&format!(":{winner_pid}`")),
            "each loser names the holder:\n{said}"
        );
    }
    winner.wait_for("ready");
    let held = leases(&staged);
    assert_eq!(held[0].1, None, "between cycles the apply lease is free");
    assert!(held[1].1.as_deref().unwrap().ends_with(&format!(":{winner_pid}")), "{held:?}");

    // An operator's apply between cycles runs at once, and finds nothing to do.
    let out = trueup(&staged, &["apply", "--lock-timeout", "0s", "--now", NOW]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployments 0 resumed"));

    winner.signal("TERM");
    let (code, log) = winner.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    assert_eq!(leases(&staged), free(), "SIGTERM released both leases");
    let mut next = Daemon::start(&staged, &args, &[]);
    next.wait_for("ready");
    assert!(!next.log().join("\n").contains("took over"), "a released lease is taken, not taken over");
}

#[test]
fn a_daemon_killed_mid_cycle_is_taken_over_at_once_and_the_next_converges() {
    let scratch = Scratch::new("serve-killed");
    let staged = staged(&scratch, &damaged(30));
    let stuck = unfinished(&staged);
    // The hook stops the daemon once 5 actions of its cycle ended: killed right there.
    let mut killed = Daemon::start(&staged, &["--no-run", "--now", NOW], &[("TRUEUP_TEST_STOP_AFTER", "5")]);
    killed.wait_stopped();
    let pid = killed.child.id();
    killed.signal("KILL");
    let (code, _) = killed.exit();
    assert_eq!(code, None, "killed by a signal");
    let held = leases(&staged);
    assert!(
        held.iter().all(|(_, owner)| owner.as_deref().is_some_and(|o| o.ends_with(&format!(":{pid}")))),
        "{held:?}"
    );

    // Started again: both leases are taken over at once (the holder's process is gone),
    // the cycle finishes the work, and each stuck deployment was handled once in all.
    let mut next = Daemon::start(&staged, &["--no-run", "--now", NOW], &[]);
    next.wait_for("ready");
    let said = next.log().join("\n");
    assert!(said.contains("took over the daemon lease"), "{said}");
    // And the apply lease and the killed cycle's run, as `apply` would say.
    assert!(said.contains("Took over the lease of `trueup-serve@"), "{said}");
    assert!(said.contains("was interrupted with") && said.contains("this apply redid their work"), "{said}");
    converged(&staged);
    let counts = log_counts(&db(&staged));
    for id in &stuck {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    next.signal("TERM");
    assert_eq!(next.exit().0, Some(0));
    assert_eq!(leases(&staged), free());
}

/// A source folder in `scratch` whose `index.html` says hello.
fn site(scratch: &Scratch) -> std::path::PathBuf {
    let site = scratch.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "hello").unwrap();
    site
}

#[test]
fn queued_deployments_run_between_cycles_and_sigterm_releases_a_running_build() {
    // A world with nothing stuck: the only runs are those queued here.
    let (scratch, staged, _) = crate::machine::staged_fixture("0001_all_true.yaml");
    let mut daemon = Daemon::start(&staged, &["--interval", "1h"], &[]);
    daemon.wait_for("ready");

    // Queued after ready: picked up by a poll, not by a cycle.
    let site = site(&scratch);
    let queued = trueup(&staged, &["deploy", "--project", "q1", "--source", site.to_str().unwrap(), "--detach"]);
    assert_eq!(queued.status.code(), Some(0), "{}", String::from_utf8_lossy(&queued.stderr));
    let live = daemon.wait_for(" is live");
    assert!(!daemon.log().join("\n").contains("cycle 2 begins"), "{live}");

    // A build that runs until it is stopped: SIGTERM stops it and releases its deployment.
    let slow = trueup(
        &staged,
        &["deploy", "--project", "q2", "--source", site.to_str().unwrap(), "--build", "sleep 60", "--detach", "--json"],
    );
    assert_eq!(slow.status.code(), Some(0), "{}", String::from_utf8_lossy(&slow.stderr));
    let slow: serde_json::Value = serde_json::from_slice(&slow.stdout).unwrap();
    daemon.wait_for(&format!("{}: BUILDING", slow["deployment"].as_str().unwrap()));
    let daemon_pid = daemon.child.id();
    daemon.signal("TERM");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("released, to be resumed")), "{}", log.join("\n"));
    assert_eq!(leases(&staged), free());
    let daemon_pid = i64::from(daemon_pid);
    let conn = db(&staged);
    let (phase, pid): (String, Option<i64>) = conn
        .query_row("SELECT phase, claim_pid FROM deployments WHERE project = 'q2'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    // Its claim lapsed naming the daemon, whose process is gone: the next apply resumes it
    // at once, without waiting for BUILDING's `stuck_after`.
    assert_eq!((phase.as_str(), pid), ("BUILDING", Some(daemon_pid)), "left in its phase, to be resumed");
    let applied = trueup(&staged, &["apply", "--no-run", "--json"]);
    assert_eq!(applied.status.code(), Some(0), "{}", String::from_utf8_lossy(&applied.stderr));
    let applied: serde_json::Value = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(applied["counts"]["deployments_resumed"], 1, "{applied}");
}

#[test]
fn a_queue_head_that_cannot_be_read_back_is_logged_once_and_the_other_queues_run() {
    let (scratch, staged, _) = crate::machine::staged_fixture("0001_all_true.yaml");
    let site = site(&scratch);
    let queue = |project: &str| {
        let queued = trueup(&staged, &["deploy", "--project", project, "--source", site.to_str().unwrap(), "--detach"]);
        assert_eq!(queued.status.code(), Some(0), "{}", String::from_utf8_lossy(&queued.stderr));
    };
    queue("edited");
    // An operator's edit by hand.
    let edit = rusqlite::Connection::open(&staged.db).unwrap();
    assert_eq!(edit.execute("UPDATE deployments SET created_at = 'noon' WHERE project = 'edited'", []).unwrap(), 1);
    drop(edit);
    let mut daemon = Daemon::start(&staged, &["--interval", "1h"], &[]);
    daemon.wait_for("ready");
    queue("q1");
    daemon.wait_for(" is live");
    // Polls every two seconds meanwhile: the reason is logged once, not at each.
    std::thread::sleep(Duration::from_secs(5));
    daemon.signal("TERM");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    // (The cycle's plan says too that the project is left alone, once a cycle.)
    let waits = "`noon` is not an RFC 3339 timestamp (expected e.g. `2025-10-02T12:00:00Z`): \
                 the queue of project `edited` waits until the row is fixed";
    assert_eq!(log.iter().filter(|l| l.contains(waits)).count(), 1, "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("cannot read the queue")), "{}", log.join("\n"));
}

#[test]
fn a_queued_deployment_whose_run_errs_is_logged_once_not_at_every_poll() {
    let (scratch, staged, _) = crate::machine::staged_fixture("0001_all_true.yaml");
    let site = site(&scratch);
    let spec = crate::deploy::spec_with_a_queue_not_left(&scratch);
    let spec = spec.to_str().unwrap();
    let queued = trueup(&staged, &["deploy", "--project", "first", "--source", site.to_str().unwrap(), "--detach"]);
    assert_eq!(queued.status.code(), Some(0), "{}", String::from_utf8_lossy(&queued.stderr));
    let error = "state `QUEUED` accepts event `done`, but none of its guards holds (`has_previous_release`)";
    // Its startup sequence alone: a run that erred is a failed one.
    let once = trueup(&staged, &["serve", "--once", "--spec", spec]);
    let once_log = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(1), "{once_log}");
    assert_eq!(once_log.matches(error).count(), 1, "{once_log}");
    let mut daemon = Daemon::start(&staged, &["--interval", "1h", "--spec", spec], &[]);
    daemon.wait_for(error);
    // Polls every two seconds meanwhile: the run is not taken again at each.
    std::thread::sleep(Duration::from_secs(5));
    daemon.signal("TERM");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let errs: Vec<&String> = log.iter().filter(|l| l.contains(error)).collect();
    assert_eq!(errs.len(), 1, "{}", log.join("\n"));
    assert!(errs[0].contains("left where it is, not taken again for 30s"), "{}", errs[0]);
}

#[test]
fn sigterm_mid_cycle_finishes_the_action_in_hand_frees_both_leases_and_exits_0() {
    // Stopped after its fifth action, the signal is handled before the sixth; stopped
    // inside its sixth, that one is finished first.
    sigterm_mid_cycle(("TRUEUP_TEST_STOP_AFTER", "5"), 5);
    sigterm_mid_cycle(("TRUEUP_TEST_STOP_IN", "5"), 6);
}

/// A daemon stopped by the test hook `hook` mid-cycle, sent SIGTERM, then let go: it ends
/// with `done` actions done and both leases free, and the next daemon finishes the work.
#[track_caller]
fn sigterm_mid_cycle(hook: (&str, &str), done_at_end: i64) {
    let scratch = Scratch::new("serve-term");
    let staged = staged(&scratch, &damaged(30));
    let stuck = unfinished(&staged);
    let mut daemon = Daemon::start(&staged, &["--no-run", "--now", NOW], &[hook]);
    daemon.wait_stopped();
    daemon.signal("TERM");
    daemon.signal("CONT");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    assert_eq!(leases(&staged), free(), "both leases were released");
    assert!(!log.iter().any(|l| l.contains("ready")), "stopped before the startup sequence was done");
    let conn = db(&staged);
    let (done, skipped, open): (i64, i64, i64) = conn
        .query_row(
            "SELECT coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'skipped'), 0),
                    coalesce(sum(status = 'planned'), 0) FROM journal",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((done, open), (done_at_end, 0), "{hook:?}: none left open:\n{}", log.join("\n"));
    assert!(skipped > 0, "the rest of the cycle is journaled as skipped");

    // The next daemon takes the free lease and finishes the work, each deployment once.
    let mut next = Daemon::start(&staged, &["--no-run", "--now", NOW], &[]);
    next.wait_for("ready");
    assert!(!next.log().join("\n").contains("took over"), "a released lease is taken, not taken over");
    converged(&staged);
    let counts = log_counts(&db(&staged));
    for id in &stuck {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    next.signal("TERM");
    assert_eq!(next.exit().0, Some(0));
}

#[test]
fn the_readme_systemd_unit_starts_a_daemon_that_reloads_on_sighup() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let unit = readme.split("```ini\n").nth(1).expect("the README has a systemd unit").split("```").next().unwrap();
    let line = |key: &str| {
        let found = unit.lines().find_map(|l| l.strip_prefix(key));
        found.unwrap_or_else(|| panic!("no `{key}` in the unit:\n{unit}")).trim().to_owned()
    };
    assert_eq!(line("ExecReload="), "/bin/kill -HUP $MAINPID");
    assert_eq!(line("KillMode="), "mixed", "SIGTERM to trueup alone: it stops its builds itself");
    let exec = line("ExecStart=");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[..2], ["/usr/local/bin/trueup", "serve"], "{exec}");
    // Its flags, run for real: the startup sequence, then SIGHUP is a cycle.
    let scratch = Scratch::new("serve-unit");
    let staged = staged(&scratch, &damaged(3));
    let mut flags: Vec<&str> = args[2..].to_vec();
    flags.extend(["--no-run", "--now", NOW]);
    let mut daemon = Daemon::start(&staged, &flags, &[]);
    daemon.wait_for("ready");
    daemon.signal("HUP");
    assert!(daemon.wait_for("cycle 2 begins").contains("SIGHUP"));
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
}

/// Starts `trueup apply` over `staged` and waits until it holds the apply lease, paused
/// by the test hook after its first action.
fn paused_apply(staged: &Staged) -> Daemon {
    let mut command = trueup_command(staged, &["apply", "--no-run", "--now", NOW]);
    command.env("TRUEUP_TEST_STOP_AFTER", "1").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut apply = Daemon::from_child(command.spawn().unwrap());
    apply.wait_stopped();
    apply
}

#[test]
fn a_cycle_that_finds_an_operators_apply_holding_the_lease_is_tried_again_until_it_runs() {
    let scratch = Scratch::new("serve-busy");
    let staged = staged(&scratch, &damaged(6));
    let args = ["--no-run", "--now", NOW, "--lock-timeout", "1s"];
    // The startup sequence: retried until the operator's apply is done, and only then ready.
    let apply = paused_apply(&staged);
    let mut daemon = Daemon::start(&staged, &args, &[]);
    daemon.wait_for("the apply lease is held by");
    assert!(!daemon.log().iter().any(|l| l.contains("ready")), "{}", daemon.log().join("\n"));
    apply.signal("CONT");
    assert_eq!(apply.exit().0, Some(0));
    daemon.wait_for("ready");
    converged(&staged);

    // Damage again, and SIGHUP while another apply holds the lease: the cycle stays due
    // and runs once the lease is free, with no second SIGHUP.
    let link = std::fs::read_dir(&staged.root)
        .unwrap()
        .map(|e| e.unwrap().path().join("current"))
        .find(|p| p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()))
        .expect("a project with a `current` link");
    std::fs::remove_file(&link).unwrap();
    let apply = paused_apply(&staged);
    let held = daemon.log().iter().filter(|l| l.contains("the apply lease is held by")).count();
    daemon.signal("HUP");
    let started = Instant::now();
    while daemon.log().iter().filter(|l| l.contains("the apply lease is held by")).count() == held {
        assert!(started.elapsed() < PATIENCE, "{}", daemon.log().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    apply.signal("CONT");
    assert_eq!(apply.exit().0, Some(0));
    daemon.wait_for("cycle 2 done");
    converged(&staged);
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    assert_eq!(leases(&staged), free());
}

#[test]
fn deployments_killed_mid_build_are_resumed_and_run_live_with_jobs_workers_before_ready() {
    let (scratch, staged, _) = crate::machine::staged_fixture("0001_all_true.yaml");
    let site = site(&scratch);
    // Two deployments of two projects, each killed with SIGKILL in its first build; a
    // resumed build (its marker is there) passes at once.
    for project in ["k1", "k2"] {
        let marker = scratch.join(&format!("{project}.pid"));
        let build = format!(
            "if [ -e {m} ]; then :; else echo $$ > {m}.tmp; mv {m}.tmp {m}; exec sleep 60; fi",
            m = marker.display()
        );
        let mut deploy = trueup_command(
            &staged,
            &["deploy", "--project", project, "--source", site.to_str().unwrap(), "--build", &build],
        );
        let mut deploy = deploy.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        while !marker.exists() {
            assert!(started.elapsed() < PATIENCE, "the build of {project} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        deploy.kill().unwrap();
        deploy.wait().unwrap();
        let sleep = std::fs::read_to_string(&marker).unwrap();
        let _ = std::process::Command::new("kill").args(["-KILL", sleep.trim()]).status();
    }
    let conn = db(&staged);
    let phases = |conn: &rusqlite::Connection| -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT project, phase FROM deployments WHERE project IN ('k1', 'k2') ORDER BY project")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(phases(&conn), [("k1".to_owned(), "BUILDING".to_owned()), ("k2".to_owned(), "BUILDING".to_owned())]);

    // No --now, no --no-run: the startup cycle resumes both at once (their workers are
    // gone) and runs them to the end with its workers before it reports ready.
    let mut daemon = Daemon::start(&staged, &["--jobs", "2", "--log-format", "json"], &[]);
    daemon.wait_for("ready");
    assert_eq!(phases(&conn), [("k1".to_owned(), "ACTIVE".to_owned()), ("k2".to_owned(), "ACTIVE".to_owned())]);
    let log: Vec<serde_json::Value> = daemon.log().iter().map(|l| json(l)).collect();
    let summary = log.iter().find(|l| l["message"].as_str().unwrap().starts_with("cycle 1 done")).unwrap();
    assert_eq!(summary["resumed"], 2, "{summary}");
    let live = log.iter().filter(|l| l["message"].as_str().unwrap().ends_with("is live (ACTIVE)")).count();
    assert_eq!(live, 2, "each ran once:\n{}", daemon.log().join("\n"));
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    assert_eq!(leases(&staged), free());
}

#[test]
fn a_daemon_whose_lease_was_taken_stops_at_its_next_renewal_and_exits_1() {
    let scratch = Scratch::new("serve-lost");
    let staged = staged(&scratch, &damaged(3));
    let mut daemon = Daemon::start(&staged, &["--no-run", "--now", NOW], &[]);
    daemon.wait_for("ready");
    // Another daemon's takeover, as the store makes it: a new holder and token.
    let conn = rusqlite::Connection::open(&staged.db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute("UPDATE lease SET owner = 'trueup-serve@elsewhere:1', token = token + 1 WHERE name = 'daemon'", [])
        .unwrap();
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(1), "{}", log.join("\n"));
    assert!(log.join("\n").contains("the daemon lease was lost"), "{}", log.join("\n"));
    let held = leases(&staged);
    assert_eq!(held[1].1.as_deref(), Some("trueup-serve@elsewhere:1"), "the new holder's lease is left alone");
    assert_eq!(held[0].1, None, "the apply lease is free");
}

#[test]
fn a_closed_stderr_loses_log_lines_never_the_daemon_or_its_leases() {
    // `trueup serve --once 2>&1 | head -2`, or a journal that went away: the log's
    // reader is gone before the first line.
    let scratch = Scratch::new("serve-closed-stderr");
    let staged = staged(&scratch, &damaged(20));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = trueup_command(&staged, &["serve", "--once", "--no-run", "--now", NOW]);
    let status = command.stdout(Stdio::null()).stderr(Stdio::from(writer)).status().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(leases(&staged), free(), "the leases are left held");
    converged(&staged);
}

#[test]
fn a_daemon_that_cannot_start_a_thread_says_why_and_frees_its_lease() {
    // A machine at its limit of processes: the daemon's supervisor cannot start.
    let scratch = Scratch::new("serve-no-threads");
    let staged = staged(&scratch, &damaged(3));
    let mut command = trueup_command(&staged, &["serve", "--once", "--no-run", "--now", NOW]);
    let out = crate::seccomp::without_threads(&mut command).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start the supervisor thread: Resource temporarily unavailable"), "{stderr}");
    assert!(stderr.contains("is the machine at its limit of processes?"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(leases(&staged), free(), "the leases are left held");
}

#[test]
fn a_daemon_on_a_mistyped_database_says_what_plan_would_say() {
    // `--db ./stat.db`: a new, empty database beside a root full of projects. `plan`
    // warns that the database looks wrong; the daemon must not stay silent about it.
    let scratch = Scratch::new("serve-wrong-db");
    let staged = staged(&scratch, &damaged(5));
    let mut typo = staged.clone();
    typo.db = scratch.join("stat.db");
    let before = (crate::support::tree(&staged.root), crate::support::tree(&staged.routes_dir));
    let mut command = trueup_command(&typo, &["serve", "--once", "--no-run", "--now", NOW]);
    let out = command.stdin(Stdio::null()).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let warned = log.lines().any(|l| l.contains("WARN") && l.contains("is `--db` right?"));
    assert!(warned, "no warning about the database:\n{log}");
    let after = (crate::support::tree(&staged.root), crate::support::tree(&staged.routes_dir));
    assert_eq!(after, before, "the routes and links of the real database were touched");
}

#[test]
fn settings_that_do_not_read_refuse_the_daemon_before_it_takes_a_lease() {
    // Left to the first run, they failed every poll with an error line, and `--once`
    // exited 0 with the queue never run.
    let scratch = Scratch::new("serve-bad-settings");
    let staged = staged(&scratch, &damaged(3));
    let conn = rusqlite::Connection::open(&staged.db).unwrap();
    conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('health_timeout', 'banana')", []).unwrap();
    drop(conn);
    let out = trueup_command(&staged, &["serve", "--once", "--now", NOW]).stdin(Stdio::null()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("the settings recorded in the state database do not read"), "{said}");
    assert_eq!(leases(&staged), free(), "a lease was taken");
}
