//! Whole `trueup` processes against the floor of what they must do, in one run.
//!
//! Worlds of 10,000 projects (and 100,000 with `TRUEUP_BENCH_BIG=1`) are staged on disk
//! under Cargo's target dir: per project two live releases, `current`, a webroot link, a
//! route file and one deployment in flight (BUILDING, progressed a minute ago). A copy of
//! the state database also gets a history of finished live deployments, 100,000 rows (or
//! 1,000,000 with `TRUEUP_BENCH_BIG=1`), written in one transaction through one prepared
//! statement. Then, side by side:
//!
//! - `trueup plan` with nothing to do against the syscall floor written here: per project
//!   `readlink` of `current` and of the webroot link, `lstat` of the release folder and a
//!   read of the route file, nothing else; and against `systemd-tmpfiles --create` with
//!   the same two links per project, when it is installed.
//! - The same `plan` with the history, against the same world without it: time and peak
//!   memory (the child's `VmHWM`, read as it exits).
//! - `trueup status` against `plan`.
//! - `trueup apply` repairing 20% of the links (`current` and webroot of one project in
//!   five point at the older release) against the floor: for each wrong link a new link
//!   under a temporary name, a `rename(2)` over the old one and an `fsync` of its folder.
//! - `trueup deploy` of a one-file site to a project of its own, with the world's history
//!   copy, against the same deploy in a world of that one project: a run reads its own
//!   project, so the ratio stays near 1 (not a target of issue 11: a bound of this
//!   bench's, [`DEPLOY_TARGET`]). Its health check asks a server in this process. This
//!   runs last, as it adds the project to the history copy and the root.
//! - With `TRUEUP_BENCH_BIG=1`, how time and memory grow from 10,000 to 100,000 projects.
//!
//! The `trueup` measured is the binary Cargo builds for this bench (`CARGO_BIN_EXE_trueup`,
//! with the bench profile, so optimized). Times are medians of a few samples, all taken
//! in this process, the measures of a ratio taking turns (the floor, `plan`, `plan` with
//! the history and `status`; the repair and its floor), so that a change in the load of
//! the machine weighs on both sides alike. Every line prints the ratio and flags it
//! `PAST TARGET` when it misses the target of issue 11. Run it with `cargo bench --bench floor` (and
//! `TRUEUP_BENCH_BIG=1 cargo bench --bench floor` for the large worlds); with
//! `TRUEUP_BENCH_KEEP=1` the staged worlds are kept, to profile a command against them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trueup::model::{Deployment, DeploymentType, Layout, Node, Project, Route, Service, Source, World};
use trueup::time::Timestamp;
use trueup::world::fixture::close_parents;
use trueup::world::stage::{Staged, stage};

/// 2025-10-02T12:00:00Z, the instant every command runs at (`--now`).
const NOW: i64 = 1_759_406_400;

/// The targets of issue 11.
const VERIFY_TARGET: f64 = 1.5;
const HISTORY_TIME_TARGET: f64 = 1.2;
const HISTORY_MEMORY_TARGET_MIB: f64 = 100.0;
const REPAIR_TARGET: f64 = 1.0;
const GROWTH_RANGE: (f64, f64) = (8.0, 12.0);
/// A deploy in this world with its history, against one in a world of its project alone.
const DEPLOY_TARGET: f64 = 1.5;

fn ago(minutes: i64) -> Timestamp {
    Timestamp::from_unix(NOW - minutes * 60)
}

fn id(i: usize) -> String {
    format!("p{i:06}")
}

fn upstream(i: usize, release: usize) -> String {
    format!("http://127.0.0.1:{}", 20_000 + 2 * (i % 20_000) + release)
}

fn deployment(id: &str, project: &str, phase: &str) -> Deployment {
    Deployment {
        id: id.to_owned(),
        project: project.to_owned(),
        service: None,
        kind: DeploymentType::Upload,
        phase: phase.to_owned(),
        phase_updated_at: None,
        heartbeat_at: None,
        attempts: 0,
        finished_at: None,
        source: Source { file_path: Some(PathBuf::from(format!("/srv/uploads/{id}.tar.gz"))), ..Source::default() },
        metadata: BTreeMap::new(),
        owner: None,
        created_at: None,
    }
}

/// A world of `n` healthy projects, as described in the header.
fn world(n: usize) -> World {
    let root = PathBuf::from("/srv/paas");
    let mut world = World { root: root.clone(), ..World::default() };
    for i in 0..n {
        let id = id(i);
        let layout = Layout::new(&root, &id);
        world.projects.push(Project {
            id: id.clone(),
            active: true,
            domain: None,
            services: vec![Service { id: "web".into(), primary: true }],
        });
        for (release, days) in [(1, 2), (2, 1)] {
            let mut d = deployment(&format!("{id}-r{release}"), &id, "ACTIVE");
            d.finished_at = Some(ago(days * 1440));
            d.created_at = Some(ago(days * 1440 + 10));
            d.metadata.insert("upstream".into(), upstream(i, release));
            world.files.insert(layout.release(&d.id).join("public/index.html"), Node::File);
            world.deployments.push(d);
        }
        let mut d = deployment(&format!("{id}-s"), &id, "BUILDING");
        d.phase_updated_at = Some(ago(1));
        d.created_at = Some(ago(5));
        world.files.insert(d.source.file_path.clone().expect("an upload"), Node::File);
        world.deployments.push(d);
        world.files.insert(layout.current(), Node::Symlink(layout.release(&format!("{id}-r2"))));
        world.files.insert(layout.webroot(), Node::Symlink(layout.webroot_target()));
        let route =
            Route { deployment: Some(format!("{id}-r2")), upstream: upstream(i, 2), domain: None, problem: None };
        world.routes.insert(id, route);
    }
    close_parents(&mut world.files);
    world
}

/// Adds `rows` finished live deployments, older than every release, spread over the
/// projects of `db`: one transaction, one prepared statement.
fn add_history(db: &Path, projects: usize, rows: usize) {
    let mut conn = rusqlite::Connection::open(db).expect("the staged database opens");
    let tx = conn.transaction().expect("a transaction");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO deployments (id, project, service, type, phase, attempts, finished_at, created_at, \
                 source, metadata) VALUES (?1, ?2, 'web', 'upload', 'ACTIVE', 0, ?3, ?3, '{}', '{}')",
            )
            .expect("the insert prepares");
        for row in 0..rows {
            let project = id(row % projects);
            // Days before the older release, one a day per project.
            let at = ago((3 + (row / projects) as i64) * 1440).to_string();
            insert.execute(rusqlite::params![format!("{project}-h{row}"), project, at]).expect("a history row");
        }
    }
    tx.commit().expect("the history commits");
}

/// One staged world and the paths the floor reads.
struct Bench {
    staged: Staged,
    /// The state database with the history.
    history_db: PathBuf,
    n: usize,
}

impl Bench {
    fn new(dir: &Path, n: usize, history: usize) -> Self {
        let staged = stage(&world(n), dir, Timestamp::from_unix(NOW)).expect("the bench world stages");
        let history_db = dir.join("history.db");
        fs::copy(&staged.db, &history_db).expect("the database copies");
        add_history(&history_db, n, history);
        Bench { staged, history_db, n }
    }

    fn layout(&self, i: usize) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let id = id(i);
        let layout = Layout::new(&self.staged.root, &id);
        let route = self.staged.routes_dir.join(format!("{id}.yaml"));
        (layout.current(), layout.webroot(), layout.release(&format!("{id}-r2")), route)
    }

    /// The command line of `trueup SUB` on this world.
    fn trueup(&self, sub: &str, db: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trueup"));
        cmd.arg(sub)
            .arg("--db")
            .arg(db)
            .arg("--root")
            .arg(&self.staged.root)
            .arg("--routes-dir")
            .arg(&self.staged.routes_dir)
            .args(["--now", &Timestamp::from_unix(NOW).to_string(), "--color", "never"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// The verify floor: per project, exactly the checks of the issue.
    fn verify_floor(&self) -> usize {
        let mut seen = 0;
        for i in 0..self.n {
            let (current, webroot, release, route) = self.layout(i);
            seen += usize::from(fs::read_link(&current).is_ok());
            seen += usize::from(fs::read_link(&webroot).is_ok());
            seen += usize::from(fs::symlink_metadata(&release).is_ok_and(|m| m.is_dir()));
            seen += fs::read(&route).map_or(0, |b| usize::from(!b.is_empty()));
        }
        assert_eq!(seen, 4 * self.n, "the floor sees every link, folder and route");
        seen
    }

    /// The links of one project in five, pointed at the older release: 20% of the links.
    fn damage(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut repairs = Vec::new();
        for i in (0..self.n).step_by(5) {
            let (current, webroot, release, _) = self.layout(i);
            let old = release.with_file_name(format!("{}-r1", id(i)));
            replace_link(&old, &current, false);
            replace_link(&old.join("public"), &webroot, false);
            repairs.push((current, release));
            repairs.push((webroot.clone(), Layout::new(&self.staged.root, &id(i)).webroot_target()));
        }
        repairs
    }
}

/// Points `link` at `target`: a new link under a temporary name renamed over it, then,
/// when `sync`, an `fsync` of its folder.
fn replace_link(target: &Path, link: &Path, sync: bool) {
    let tmp = link.with_file_name(format!(".{}.floor-tmp", link.file_name().expect("a name").to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).expect("the temporary link");
    fs::rename(&tmp, link).expect("the rename");
    if sync {
        fs::File::open(link.parent().expect("a folder")).and_then(|f| f.sync_all()).expect("the folder syncs");
    }
}

/// A finished child: its wall time and peak resident memory.
struct Run {
    time: Duration,
    max_rss_kib: u64,
}

/// Runs `cmd` to completion, with its peak memory: the `VmHWM` of `/proc/PID/status`,
/// read while the child stops on its way out (`PTRACE_O_TRACEEXIT`). `wait4`'s
/// `ru_maxrss` would not do: the child starts as a copy of this process, whose memory
/// (the world it staged) the kernel counts in the child's peak across `exec`.
fn run(mut cmd: Command, ok: &[i32]) -> Run {
    // SAFETY: `ptrace(PTRACE_TRACEME)` is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, std::ptr::null_mut::<libc::c_void>(), 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("the command starts");
    let stderr = child.stderr.take();
    let pid = i32::try_from(child.id()).expect("a pid");
    let mut status = 0;
    let mut hwm_kib = 0;
    loop {
        // SAFETY: `pid` is our own child; the pointer is valid.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid sees the child");
        if !libc::WIFSTOPPED(status) {
            break;
        }
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        let forward = if event == libc::PTRACE_EVENT_EXIT {
            hwm_kib = vm_hwm_kib(pid);
            0
        } else if signal == libc::SIGTRAP && event == 0 && hwm_kib == 0 {
            // The stop after `exec`: from now on, stop again on the way out.
            let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
            // SAFETY: `pid` is our tracee, stopped.
            unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) };
            0
        } else {
            signal
        };
        // SAFETY: `pid` is our tracee, stopped; `forward` is the signal it stopped with.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, forward) };
    }
    let time = start.elapsed();
    let code = libc::WEXITSTATUS(status);
    if !libc::WIFEXITED(status) || !ok.contains(&code) {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        panic!("{cmd:?} exited with {status:#x}:\n{text}");
    }
    // The child is reaped: `Child`'s drop must not wait again.
    std::mem::forget(child);
    Run { time, max_rss_kib: hwm_kib }
}

/// The `VmHWM` line of `/proc/PID/status`, in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or_default();
    line.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of `samples` runs of each of `fs`, after one of each to warm the
/// caches. The runs take turns (one of each per round), so that a change in the load of
/// this shared machine weighs on every measure of a ratio alike, not on one alone.
fn sample_in_turn<const N: usize>(samples: usize, mut fs: [&mut dyn FnMut() -> Duration; N]) -> [Duration; N] {
    for f in &mut fs {
        f();
    }
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (f, times) in fs.iter_mut().zip(&mut times) {
            times.push(f());
        }
    }
    times.map(median)
}

/// One run of a command, its time, and its peak memory added to `peak_kib`.
fn timed(cmd: Command, ok: &[i32], peak_kib: &mut u64) -> Duration {
    let r = run(cmd, ok);
    *peak_kib = (*peak_kib).max(r.max_rss_kib);
    r.time
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// A ratio, flagged when it is past `target` (`at most`).
fn ratio_line(what: &str, ours: Duration, floor: Duration, target: Option<f64>) -> f64 {
    let r = ours.as_secs_f64() / floor.as_secs_f64();
    let flag = match target {
        Some(t) if r > t => format!("  PAST TARGET (at most {t}x)"),
        Some(t) => format!("  ok (at most {t}x)"),
        None => String::new(),
    };
    println!("  {what:<44} {:>10} vs {:>10}  {r:>6.2}x{flag}", secs(ours), secs(floor));
    r
}

/// What one size measured, for the growth lines.
struct Measured {
    plan: Duration,
    plan_mib: f64,
}

fn measure(dir: &Path, n: usize, history: usize) -> Measured {
    let samples = if n > 10_000 { 3 } else { 5 };
    let start = Instant::now();
    let b = Bench::new(dir, n, history);
    println!(
        "\n{n} projects ({} links, {history} past deployments in the history copy), staged in {}",
        2 * n,
        secs(start.elapsed())
    );

    let (mut plan_kib, mut history_kib) = (0, 0);
    let [floor, plan, with_history, status] = sample_in_turn(
        samples,
        [
            &mut || {
                let t = Instant::now();
                b.verify_floor();
                t.elapsed()
            },
            &mut || timed(b.trueup("plan", &b.staged.db), &[0], &mut plan_kib),
            &mut || timed(b.trueup("plan", &b.history_db), &[0], &mut history_kib),
            &mut || run(b.trueup("status", &b.staged.db), &[0]).time,
        ],
    );
    let (plan_mib, history_mib) = (mib(plan_kib), mib(history_kib));
    ratio_line("plan (nothing to do) / syscall floor", plan, floor, Some(VERIFY_TARGET));
    if let Some(tmpfiles) = tmpfiles(&b, dir, samples) {
        // The target reads the other way round: plan at least 10x faster than tmpfiles.
        let r = tmpfiles.as_secs_f64() / plan.as_secs_f64();
        ratio_line("systemd-tmpfiles --create / syscall floor", tmpfiles, floor, None);
        let flag = if r < 10.0 { "PAST TARGET (at least 10x)" } else { "ok (at least 10x)" };
        println!(
            "  {:<44} {:>10} vs {:>10}  {r:>6.2}x  {flag}",
            "systemd-tmpfiles --create / plan",
            secs(tmpfiles),
            secs(plan)
        );
    } else {
        println!("  systemd-tmpfiles is not installed: no comparison");
    }

    ratio_line("plan with history / without", with_history, plan, Some(HISTORY_TIME_TARGET));
    let over = n == 10_000 && history_mib > HISTORY_MEMORY_TARGET_MIB;
    let flag = if over { "  PAST TARGET (at most 100 MiB at 10,000)" } else { "" };
    println!("  {:<44} {plan_mib:>8.1} MiB vs {history_mib:>6.1} MiB{flag}", "peak memory without / with history");

    ratio_line("status / plan", status, plan, None);

    let mut repairs = Vec::new();
    let [ours, floor] = sample_in_turn(
        samples.min(3),
        [
            &mut || {
                b.damage();
                run(b.trueup("apply", &b.staged.db), &[0]).time
            },
            &mut || {
                repairs = b.damage();
                let t = Instant::now();
                for (link, target) in &repairs {
                    replace_link(target, link, true);
                }
                t.elapsed()
            },
        ],
    );
    let what = format!("apply repairing {} links / rename+fsync floor", repairs.len());
    ratio_line(&what, ours, floor, Some(REPAIR_TARGET));

    let upstream = serve_anything();
    let site = dir.join("site");
    fs::create_dir_all(&site).expect("the site folder");
    fs::write(site.join("index.html"), "hello").expect("the site");
    let alone = dir.join("alone");
    let alone = [alone.join("state.db"), alone.join("root"), alone.join("routes")];
    for folder in &alone[1..] {
        fs::create_dir_all(folder).expect("the folders of a world of one project");
    }
    let here = [b.history_db.clone(), b.staged.root.clone(), b.staged.routes_dir.clone()];
    // A deploy takes tens of milliseconds, `fsync`s among them, on a shared disk: three
    // times the samples for its medians (with five, one run read 1.54x, 0.048 s against
    // 0.031 s, where the runs around it read 0.90x to 1.06x).
    let [with_history, by_itself] = sample_in_turn(
        3 * samples,
        [&mut || run(deploy(&here, &site, &upstream), &[0]).time, &mut || {
            run(deploy(&alone, &site, &upstream), &[0]).time
        }],
    );
    ratio_line("deploy with history / in a world of its own", with_history, by_itself, Some(DEPLOY_TARGET));
    Measured { plan, plan_mib }
}

/// `trueup deploy` of `site` (an `index.html`, copied to `public/` by the build) to the
/// project `bench-deploy` of the world of `[database, root, routes folder]`, through
/// every phase: the route sends it to `upstream`, which the checks ask directly.
fn deploy([db, root, routes]: &[PathBuf; 3], site: &Path, upstream: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trueup"));
    cmd.arg("deploy")
        .arg("--db")
        .arg(db)
        .arg("--root")
        .arg(root)
        .arg("--routes-dir")
        .arg(routes)
        .args(["--project", "bench-deploy", "--build", "mkdir -p public && cp index.html public/"])
        .args(["--webroot-upstream", upstream, "--color", "never", "--source"])
        .arg(site)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// `http://ADDRESS` of a server, on a thread of this process, that answers every request
/// `200 OK`: the deploys' health checks.
fn serve_anything() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the health checks");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = std::io::BufReader::new(stream);
            // The request's head, up to its empty line; a check sends no body.
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut stream, &mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            let _ = std::io::Write::write_all(stream.get_mut(), answer);
        }
    });
    format!("http://{address}")
}

/// `systemd-tmpfiles --create` over a configuration of the same links, if installed.
fn tmpfiles(b: &Bench, dir: &Path, samples: usize) -> Option<Duration> {
    let bin = ["/usr/bin/systemd-tmpfiles", "/bin/systemd-tmpfiles"].into_iter().find(|p| Path::new(p).exists())?;
    let conf = dir.join("links.conf");
    let mut text = String::new();
    for i in 0..b.n {
        let (current, webroot, release, _) = b.layout(i);
        let target = Layout::new(&b.staged.root, &id(i)).webroot_target();
        text += &format!("L {} - - - - {}\n", current.display(), release.display());
        text += &format!("L {} - - - - {}\n", webroot.display(), target.display());
    }
    fs::write(&conf, text).expect("the tmpfiles configuration");
    let make = || {
        let mut cmd = Command::new(bin);
        cmd.arg("--create").arg(&conf).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    };
    Some(sample_in_turn(samples, [&mut || run(make(), &[0]).time])[0])
}

/// Removes the staging folder when dropped, also when the bench panics.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("TRUEUP_BENCH_KEEP").is_some() {
            println!("kept the staged worlds in `{}`", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn main() {
    // Only `cargo bench` runs the measurement; `cargo test --benches` just builds it.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let big = std::env::var_os("TRUEUP_BENCH_BIG").is_some_and(|v| v == "1");
    let history = if big { 1_000_000 } else { 100_000 };
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("floor-bench-{}", std::process::id()));
    let _cleanup = TempDir(base.clone());
    println!(
        "floor: `trueup` ({}) as whole processes against the syscalls they stand for; \
         ratio = first / second",
        env!("CARGO_BIN_EXE_trueup")
    );
    let small = measure(&base.join("10k"), 10_000, history);
    if big {
        let large = measure(&base.join("100k"), 100_000, history);
        println!("\ngrowth from 10,000 to 100,000 projects (target between 8 and 12)");
        for (what, r) in [
            ("plan time", large.plan.as_secs_f64() / small.plan.as_secs_f64()),
            ("plan peak memory", large.plan_mib / small.plan_mib),
        ] {
            let flag = if (GROWTH_RANGE.0..=GROWTH_RANGE.1).contains(&r) { "ok" } else { "PAST TARGET" };
            println!("  {what:<44} {r:>6.2}x  {flag}");
        }
    } else {
        println!("\n(set TRUEUP_BENCH_BIG=1 for 100,000 projects and a 1,000,000-row history)");
    }
}
