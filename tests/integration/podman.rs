//! The real container engine, shared by every container test: one Podman API service
//! (`podman system service`, Docker-compatible) per test run, on a socket in a temporary
//! folder.
//!
//! ```ignore
//! let Some(podman) = podman::podman() else { return }; // only with TRUEUP_SKIP_CONTAINER_TESTS=1
//! let engine = podman.lock(); // this test alone, on an engine with no container
//! engine.create(&NewContainer { .. })?;
//! Trueup::new(["apply"]).staged(&staged).arg("--container-socket").arg(&podman.socket).run();
//! ```
//!
//! [`podman`] starts the service once, with storage of its own (so an apply sees this
//! run's containers only, never the machine's or another run's), holding the test image
//! `localhost/trueup-web` loaded from `.venv-tools/trueup-web.tar`. `trueup apply` acts on
//! every trueup-labelled container of the engine, so [`Podman::lock`] makes the container
//! tests take turns and starts each on an empty engine. As with the proxy, a watcher shell
//! reading a pipe from this process stops the service, removes its containers and the
//! folder when the test process exits, however it exits; what a killed watcher left, the
//! next run removes before it starts.
//!
//! What is missing (podman, the image archive: `bash .ci/install` brings both) fails the
//! tests with what to do, unless `TRUEUP_SKIP_CONTAINER_TESTS=1` is set: then each test
//! says loudly that it skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use trueup::world::containers::{Engine, Origin, Socket};

/// The test image, imported by `.ci/install` from a busybox-static rootfs: `httpd` serving
/// `/www` on `$PORT` (8080 unless told).
pub const IMAGE: &str = "localhost/trueup-web";

/// The running service.
pub struct Podman {
    /// Its API socket.
    pub socket: PathBuf,
    turn: Mutex<()>,
    /// The watcher shell; kept only to hold the pipe open.
    _watcher: Child,
    _stdin: ChildStdin,
}

/// A container test's turn on the engine: an engine client, on an engine that had no
/// container when the turn began.
pub struct Turn {
    /// A client of the engine.
    pub engine: Engine,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Turn {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// The service of this test run, started by the first caller; `None` only when it cannot
/// start and `TRUEUP_SKIP_CONTAINER_TESTS=1` says to skip.
pub fn podman() -> Option<&'static Podman> {
    static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
    match PODMAN.get_or_init(start) {
        Ok(podman) => Some(podman),
        Err(missing) if std::env::var("TRUEUP_SKIP_CONTAINER_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED, as TRUEUP_SKIP_CONTAINER_TESTS=1 asks: a container test, since {missing}");
            None
        }
        Err(missing) => panic!("{missing}; (TRUEUP_SKIP_CONTAINER_TESTS=1 skips the container tests)"),
    }
}

impl Podman {
    /// This test's turn: waits for the others, then removes every container.
    pub fn lock(&'static self) -> Turn {
        let turn = self.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine = self.engine();
        self.podman(&["rm", "--all", "--force", "--time", "0"]);
        Turn { engine, _turn: turn }
    }

    /// A new client of the engine.
    pub fn engine(&self) -> Engine {
        let socket = Socket { path: self.socket.clone(), origin: Origin::Flag };
        Engine::connect(&socket, trueup::time::Duration::from_secs(2)).unwrap()
    }

    /// `podman` on this run's storage, to look at the engine apart from trueup's adapter.
    pub fn command(&self) -> Command {
        storage(Command::new("podman"), self.socket.parent().expect("the socket is in the run's folder"))
    }

    /// Runs `podman ARGS` against this run's storage, expecting success.
    fn podman(&self, args: &[&str]) {
        let out = self.command().args(args).output().unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Removes what earlier test runs left when their watcher was killed too (a SIGKILL to
/// the watcher's group; before it had a group of its own, a harness's timeout that killed
/// the tests' group did it): their containers, whose network namespaces and forwarded
/// ports outlive them, then their folders. A port of the tests' range still forwarded to
/// a gone container made a later run's image deployments fail their check ("connection
/// timed out"). Runs whose process or watcher is alive are left alone: a watcher still
/// cleaning up after its run must not have the storage removed under it (that left a
/// run's containers running with no storage to remove them from).
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("trueup-podman-test-")) else { continue };
        let dir = entry.path();
        let watcher = std::fs::read_to_string(dir.join(WATCHER_PID)).unwrap_or_default();
        // A zombie is dead too: here nothing may reap a watcher whose test process died.
        let alive = |pid: &str| {
            pid.parse::<u32>().is_ok()
                && std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
                    .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        };
        if pid.parse::<u32>().is_err() || alive(pid) || alive(watcher.trim()) {
            continue;
        }
        for args in [&["rm", "--all", "--force", "--time", "0"][..], &["system", "reset", "--force"]] {
            let _ =
                storage(Command::new("podman"), &dir).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The file in a run's folder that names its watcher's process.
const WATCHER_PID: &str = "watcher.pid";

/// `podman --root DIR/storage --runroot DIR/run`.
fn storage(mut command: Command, dir: &Path) -> Command {
    command.arg("--root").arg(dir.join("storage")).arg("--runroot").arg(dir.join("run"));
    command
}

fn start() -> Result<Podman, String> {
    let install = "run `bash .ci/install` as root (Podman, runc and busybox-static from Debian, \
                   /etc/containers/containers.conf and the test image)";
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/trueup-web.tar");
    match Command::new("podman").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err(format!("the container tests need `podman` on the PATH: {install}")),
    }
    if !archive.is_file() {
        return Err(format!("the container tests need the test image `{}`: {install}", archive.display()));
    }
    sweep_dead_runs();
    let dir = std::env::temp_dir().join(format!("trueup-podman-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = storage(Command::new("podman"), &dir).arg("load").arg("-q").arg("-i").arg(&archive).output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "podman cannot load the test image `{}` ({}): {install}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let socket = dir.join("api.sock");
    // The service's containers outlive it (conmon holds them), so the watcher removes them
    // before the folder.
    let script = r#"
        podman --root "$DIR/storage" --runroot "$DIR/run" system service --time=0 "unix://$DIR/api.sock" \
            >"$DIR/service.log" 2>&1 </dev/null &
        service=$!
        cat >/dev/null
        kill "$service" 2>/dev/null
        wait
        podman --root "$DIR/storage" --runroot "$DIR/run" rm --all --force --time 0 >/dev/null 2>&1
        podman --root "$DIR/storage" --runroot "$DIR/run" system reset --force >/dev/null 2>&1
        rm -rf "$DIR"
    "#;
    let mut watcher = Command::new("sh");
    // A group of its own: a signal to the tests' group (Ctrl-C, a harness's timeout that
    // kills the group) must not take the watcher with the tests, or nothing would clean up.
    std::os::unix::process::CommandExt::process_group(&mut watcher, 0);
    let mut watcher = watcher
        .args(["-c", script])
        .env("DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the watcher shell `sh` of the Podman service: {e}"))?;
    let stdin = watcher.stdin.take().expect("stdin was piped");
    std::fs::write(dir.join(WATCHER_PID), watcher.id().to_string())
        .map_err(|e| format!("cannot write the watcher's pid in `{}`: {e}", dir.display()))?;
    let podman = Podman { socket, turn: Mutex::new(()), _watcher: watcher, _stdin: stdin };
    let deadline = Instant::now() + Duration::from_secs(30);
    let socket = Socket { path: podman.socket.clone(), origin: Origin::Flag };
    loop {
        match Engine::connect(&socket, trueup::time::Duration::from_secs(2)) {
            Ok(_) => return Ok(podman),
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
                return Err(format!("the Podman service does not answer ({e}); its log:\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
