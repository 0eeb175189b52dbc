//! What every test of the `trueup` binary shares: one builder for a CLI run.
//!
//! ```ignore
//! let out = Trueup::new(["plan", "--json"]).staged(&staged).now(NOW).code(2).run();
//! insta::assert_snapshot!(out.stdout);
//! ```
//!
//! A run starts from the repository's folder with no `TRUEUP_*` variable of the
//! environment and no container engine (`TRUEUP_CONTAINER_SOCKET=none`, no `DOCKER_HOST`),
//! so what a test does not say cannot change what it sees. `run` checks the
//! exit code (0 unless told) and returns what the process printed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trueup::world::stage::Staged;

/// A `trueup` command line to run.
#[derive(Debug, Clone)]
pub struct Trueup {
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    dir: Option<std::path::PathBuf>,
    code: i32,
    within: Option<std::time::Duration>,
}

/// What a finished run printed.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Standard output, as text.
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
}

impl Ran {
    /// Standard output, parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Trueup {
    /// `trueup ARGS...`.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Trueup { args: args.into_iter().map(Into::into).collect(), env: Vec::new(), dir: None, code: 0, within: None }
    }

    /// Against a staged world: its database, root and routes folder.
    pub fn staged(mut self, staged: &Staged) -> Self {
        let mut args: Vec<OsString> = vec![
            "--db".into(),
            staged.db.clone().into(),
            "--root".into(),
            staged.root.clone().into(),
            "--routes-dir".into(),
            staged.routes_dir.clone().into(),
        ];
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// With the clock at `now` (RFC 3339).
    pub fn now(self, now: &str) -> Self {
        self.arg("--now").arg(now)
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// With an environment variable set.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Run from `dir` instead of the repository's folder.
    pub fn dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Expecting this exit code instead of 0.
    pub fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    /// Killed, and the test failed, if it has not ended `limit` after it started: for a
    /// command that must end, where a defect would loop forever.
    pub fn within(mut self, limit: std::time::Duration) -> Self {
        self.within = Some(limit);
        self
    }

    /// The command, not started: for tests that need the process itself.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trueup"));
        let dir = self.dir.clone().unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        command.args(&self.args).current_dir(dir);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRUEUP_") {
                command.env_remove(key);
            }
        }
        command.env_remove("DOCKER_HOST").env("TRUEUP_CONTAINER_SOCKET", "none");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        // As from a terminal, whatever started the tests: a shell runs a background job
        // with SIGINT ignored, the child inherits that through `exec`, and a SIGINT sent
        // before trueup installs its handler was then lost (the apply ran to its end).
        // SAFETY: `signal` is async-signal-safe and touches no memory of ours.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        command
    }

    /// Runs it to completion, checks its exit code, and returns what it printed.
    #[track_caller]
    pub fn run(self) -> Ran {
        let out = match self.within {
            None => self.command().output().expect("the trueup binary runs"),
            Some(limit) => self.output_within(limit),
        };
        let text = |b: Vec<u8>| String::from_utf8(b).expect("trueup prints UTF-8");
        let ran = Ran { stdout: text(out.stdout), stderr: text(out.stderr) };
        assert_eq!(
            out.status.code(),
            Some(self.code),
            "trueup {:?} exited {:?}, not {}\n--- stdout\n{}--- stderr\n{}",
            self.args,
            out.status.code(),
            self.code,
            ran.stdout,
            ran.stderr
        );
        ran
    }
}

impl Trueup {
    /// Runs it to completion, or kills it and fails once `limit` has passed.
    #[track_caller]
    fn output_within(&self, limit: std::time::Duration) -> Output {
        use std::process::Stdio;
        let mut child =
            self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the trueup binary runs");
        // Read as it comes, so that a full pipe never blocks the process.
        let drain = |mut from: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = from.read_to_end(&mut all);
                all
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                child.kill().unwrap();
                child.wait().unwrap();
                let text =
                    |h: std::thread::JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).into_owned();
                let (out, err) = (text(stdout), text(stderr));
                let tail = |t: &str| {
                    t.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
                };
                panic!(
                    "trueup {:?} had not ended after {limit:?}: killed\n--- stdout (last lines)\n{}\n--- stderr (last lines)\n{}",
                    self.args,
                    tail(&out),
                    tail(&err)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
    }
}

/// Every path under `dir` (the folder itself excluded), with link targets and a digest of
/// file contents: two equal trees are byte for byte the same. An absent `dir` is empty.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let digest = bytes
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
                format!("file of {} bytes, digest {digest:016x}", bytes.len())
            };
            out.insert(path.strip_prefix(dir).unwrap().to_owned(), what);
        }
    }
    out
}

/// What an apply could change on a staged machine: the files under its folder (the
/// database file aside, whose lease row an apply takes and gives back), and the rows of
/// the state database that record deployments, their logs and the journal.
pub fn machine_state(staged: &Staged) -> (BTreeMap<PathBuf, String>, Vec<String>) {
    let mut files = tree(&staged.dir);
    files.retain(|p, _| !p.to_string_lossy().starts_with("state.db"));
    let conn = rusqlite::Connection::open(&staged.db).unwrap();
    let mut rows = Vec::new();
    for table in ["projects", "deployments", "deployment_logs", "journal"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect();
            rows.push(format!("{table}: {}", values.join(", ")));
        }
    }
    (files, rows)
}
