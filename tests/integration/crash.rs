//! Real processes against a real SQLite file and real folders.
//!
//! `trueup apply` is killed with SIGKILL at several points of a large apply (right after
//! it starts, early, midway, late) and run again until it converges; two applies started
//! together never both write; the lease of a dead apply blocks the next one until it
//! lapses, and is then taken over. The manual scenarios of the original design run
//! against staged worlds: stuck deployments processed once each with a summary, a broken
//! `current` restored, an upload gone before the resume, a saved plan refused once the
//! world changed. And `apply --dry-run` changes nothing, byte for byte. A table of
//! faults (stdout closed or full, SIGINT and SIGTERM from the start to the last action)
//! hits an apply, each at an exact point: it never panics, frees its lease, and the next
//! apply starts at once and converges.
//!
//! Everything is asserted from what a person could look at afterwards (the journal, the
//! lease row, deployment logs, the tree), never from timings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use rusqlite::{Connection, OpenFlags};
use trueup::model::{Deployment, DeploymentType, Node, Project, Route, Service, Source, World};
use trueup::plan::{self, Change};
use trueup::spec;
use trueup::time::Timestamp;
use trueup::world::fixture;
use trueup::world::routes::observe_routes;
use trueup::world::stage::{Staged, stage};

use crate::machine::{trueup, trueup_command};
use crate::scratch::Scratch;
use crate::support::tree;

/// The instant every plan and apply here is made at.
pub(crate) const NOW: &str = "2025-10-02T12:00:00Z";

/// The lease of an apply that will be killed: short, so the next run waits seconds for it
/// to lapse instead of the default minute. Long enough that it is still held when the
/// test looks right after the kill.
const SHORT_LEASE: &str = "2s";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn ago(minutes: u64) -> Timestamp {
    Timestamp::from_unix(now().unix() - i64::try_from(minutes * 60).unwrap())
}

// ---------------------------------------------------------------------------------------
// Worlds

/// How one project is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    Missing,
    Wrong,
    Dangling,
    RealFolder,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Webroot {
    Missing,
    Wrong,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// QUEUED for an hour: back to the queue.
    Queued,
    /// BUILDING for an hour, its upload still there: the build is re-run.
    Building,
    /// BUILDING for an hour, its upload gone: failed, naming the upload.
    UploadGone,
    /// HEALTH_CHECK for an hour after its last attempt: failed.
    Exhausted,
    /// COPYING_FILES for an hour, its upload still there: the copy is re-run.
    Copying,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteFile {
    Missing,
    Wrong,
    Right,
}

#[derive(Debug, Clone, Copy)]
struct Damage {
    current: Current,
    webroot: Webroot,
    stuck: Stuck,
    route: RouteFile,
}

impl Damage {
    const NONE: Damage =
        Damage { current: Current::Right, webroot: Webroot::Right, stuck: Stuck::None, route: RouteFile::Right };

    /// True when the project's stuck deployment is resumed and has a release folder (its
    /// copy finished before the crash): it then owns the project's links and route, which
    /// are left to it. A resumed deployment with no release yet (queued, building) owns
    /// nothing, so the project's links are repaired around it.
    fn in_flight(self) -> bool {
        matches!(self.stuck, Stuck::Copying)
    }

    /// Project `n`'s damage: each kind cycles with its own period, so a few hundred
    /// projects cover every combination many times.
    fn nth(n: usize) -> Damage {
        let current = [Current::Missing, Current::Wrong, Current::Dangling, Current::RealFolder, Current::Right][n % 5];
        let webroot = [Webroot::Missing, Webroot::Wrong, Webroot::Right][n % 3];
        let stuck = [
            Stuck::Queued,
            Stuck::Building,
            Stuck::UploadGone,
            Stuck::Exhausted,
            Stuck::Copying,
            Stuck::None,
            Stuck::None,
        ][n % 7];
        let route = [RouteFile::Missing, RouteFile::Wrong, RouteFile::Right, RouteFile::Right][n % 4];
        Damage { current, webroot, stuck, route }
    }
}

/// The live release of project `p`.
fn live(p: &str) -> String {
    format!("{p}-live")
}

/// The stuck deployment of project `p`, if it has one.
fn stuck(p: &str) -> String {
    format!("{p}-stuck")
}

fn upstream(n: usize) -> String {
    format!("http://127.0.0.1:{}", 10_000 + n)
}

fn finished(p: &str, id: &str, days_ago: u64, upstream: &str) -> Deployment {
    Deployment {
        id: id.to_owned(),
        project: p.to_owned(),
        service: None,
        kind: DeploymentType::Upload,
        phase: "ACTIVE".to_owned(),
        phase_updated_at: None,
        heartbeat_at: None,
        attempts: 1,
        finished_at: Some(ago(days_ago * 24 * 60)),
        source: Source::default(),
        metadata: BTreeMap::from([("upstream".to_owned(), upstream.to_owned())]),
        owner: None,
        created_at: None,
    }
}

/// A world of `damages.len()` projects `p0`, `p1`, ..., each with two ACTIVE releases
/// (`pN-old`, and `pN-live`, the later one) and its damage; plus route files of
/// `stale_routes` projects that no longer exist.
fn world(damages: &[Damage], stale_routes: usize) -> World {
    let root = PathBuf::from("/var/www");
    let mut world = World { root: root.clone(), ..World::default() };
    for (n, damage) in damages.iter().enumerate() {
        let p = format!("p{n}");
        world.projects.push(Project {
            id: p.clone(),
            active: true,
            domain: None,
            services: vec![Service { id: "web".into(), primary: true }],
        });
        let releases = root.join(&p).join("deployments");
        let old = format!("{p}-old");
        for (id, days) in [(&old, 2), (&live(&p), 1)] {
            world.deployments.push(finished(&p, id, days, &upstream(n)));
            world.files.insert(releases.join(id).join("public/index.html"), Node::File);
        }
        let current = root.join(&p).join("current");
        match damage.current {
            Current::Missing => {}
            Current::Wrong => drop(world.files.insert(current.clone(), Node::Symlink(releases.join(&old)))),
            Current::Dangling => drop(world.files.insert(current.clone(), Node::Symlink("deployments/gone".into()))),
            Current::RealFolder => drop(world.files.insert(current.join("index.html"), Node::File)),
            Current::Right => drop(world.files.insert(current.clone(), Node::Symlink(releases.join(live(&p))))),
        }
        let webroot = root.join("webroot").join(&p);
        match damage.webroot {
            Webroot::Missing => {}
            Webroot::Wrong => drop(world.files.insert(webroot, Node::Symlink(releases.join(&old).join("public")))),
            Webroot::Right => drop(world.files.insert(webroot, Node::Symlink(current.join("public")))),
        }
        let upload = PathBuf::from(format!("/uploads/{p}.tar.gz"));
        let (phase, attempts, kind, upload_there) = match damage.stuck {
            Stuck::None => ("", 0, DeploymentType::Upload, false),
            Stuck::Queued => ("QUEUED", 0, DeploymentType::Git, false),
            Stuck::Building => ("BUILDING", 0, DeploymentType::Upload, true),
            Stuck::UploadGone => ("BUILDING", 1, DeploymentType::Upload, false),
            Stuck::Exhausted => ("HEALTH_CHECK", 3, DeploymentType::Upload, true),
            Stuck::Copying => ("COPYING_FILES", 2, DeploymentType::Upload, true),
        };
        if !phase.is_empty() {
            let source = match kind {
                DeploymentType::Git => {
                    Source { repo: Some(format!("https://example.invalid/{p}.git")), ..Source::default() }
                }
                _ => Source { file_path: Some(upload.clone()), ..Source::default() },
            };
            world.deployments.push(Deployment {
                id: stuck(&p),
                project: p.clone(),
                service: None,
                kind,
                phase: phase.to_owned(),
                phase_updated_at: Some(ago(60)),
                heartbeat_at: None,
                attempts,
                finished_at: None,
                source,
                metadata: BTreeMap::new(),
                owner: None,
                created_at: None,
            });
            if matches!(damage.stuck, Stuck::Exhausted | Stuck::Copying) {
                world.files.insert(releases.join(stuck(&p)).join("public/index.html"), Node::File);
            }
        }
        if upload_there {
            world.files.insert(upload, Node::File);
        }
        let route = match damage.route {
            RouteFile::Missing => None,
            RouteFile::Wrong => Some(Route {
                deployment: Some(old),
                upstream: "http://127.0.0.1:9".into(),
                domain: None,
                problem: None,
            }),
            RouteFile::Right => {
                Some(Route { deployment: Some(live(&p)), upstream: upstream(n), domain: None, problem: None })
            }
        };
        if let Some(route) = route {
            world.routes.insert(p, route);
        }
    }
    for i in 0..stale_routes {
        let route = Route {
            deployment: Some(format!("gone{i}-d")),
            upstream: "http://127.0.0.1:9".into(),
            domain: None,
            problem: None,
        };
        world.routes.insert(format!("gone{i}"), route);
    }
    // Route files answer on `PROJECT.localhost`, as the observer reads them back.
    for (project, route) in &mut world.routes {
        route.domain.get_or_insert_with(|| format!("{project}.localhost"));
    }
    fixture::close_parents(&mut world.files);
    world.deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
    world
}

/// `projects` projects with every kind of damage, and a few stale route files.
pub(crate) fn damaged(projects: usize) -> World {
    world(&(0..projects).map(Damage::nth).collect::<Vec<_>>(), projects / 20 + 1)
}

/// Stages `world` in a fresh folder of `scratch`.
pub(crate) fn staged(scratch: &Scratch, world: &World) -> Staged {
    stage(world, &scratch.join("w"), now()).unwrap()
}

/// The model's plan for a staged world.
pub(crate) fn model_plan(staged: &Staged, world: &World) -> plan::Plan {
    let specs = spec::default_spec().into();
    plan::plan(&specs, &staged.rebase_world(world, &specs), now())
}

// ---------------------------------------------------------------------------------------
// Looking at the machine

/// The state database, opened read-only: the test never writes it, and can read it while
/// an apply runs.
pub(crate) fn db(staged: &Staged) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&staged.db, flags).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn
}

/// The lease row: (holder, fencing token).
fn lease(conn: &Connection) -> (Option<String>, i64) {
    conn.query_row("SELECT owner, token FROM lease WHERE name = 'apply'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
}

/// One apply run in the journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Run {
    tokens: BTreeSet<i64>,
    rows: usize,
    done: usize,
    failed: usize,
}

/// The journal, by run id.
fn journal(conn: &Connection) -> BTreeMap<String, Run> {
    let mut stmt = conn.prepare("SELECT run, token, status FROM journal").unwrap();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))).unwrap();
    for row in rows {
        let (run, token, status) = row.unwrap();
        let run = runs.entry(run).or_default();
        run.tokens.insert(token);
        run.rows += 1;
        run.done += usize::from(status == "done");
        run.failed += usize::from(status == "failed");
    }
    runs
}

/// Journal rows of runs whose token is above `token`, and how many of them are done.
fn progress_since(conn: &Connection, token: i64) -> (usize, usize) {
    let (rows, done, _) = journal_since(conn, token).unwrap();
    (rows, done)
}

/// Journal rows of runs whose token is above `token`: how many, how many are done, and
/// how many are still planned.
fn journal_since(conn: &Connection, token: i64) -> rusqlite::Result<(usize, usize, usize)> {
    let sql = "SELECT count(*), coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'planned'), 0) \
               FROM journal WHERE token > ?1";
    let count = |n: i64| usize::try_from(n).unwrap();
    conn.query_row(sql, [token], |r| Ok((count(r.get(0)?), count(r.get(1)?), count(r.get(2)?))))
}

/// A deployment's row: phase, attempts, finished.
fn deployment_row(conn: &Connection, id: &str) -> (String, u32, bool) {
    conn.query_row("SELECT phase, attempts, finished_at IS NOT NULL FROM deployments WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

/// A deployment's log: (message, metadata).
fn logs(conn: &Connection, id: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut stmt =
        conn.prepare("SELECT message, metadata FROM deployment_logs WHERE deployment = ?1 ORDER BY id").unwrap();
    stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|row| {
            let (message, metadata) = row.unwrap();
            (message, serde_json::from_str(&metadata).unwrap())
        })
        .collect()
}

/// How many log lines each deployment has.
pub(crate) fn log_counts(conn: &Connection) -> BTreeMap<String, i64> {
    let mut stmt = conn.prepare("SELECT deployment, count(*) FROM deployment_logs GROUP BY deployment").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// What is at a path, without following a final link; `None` when nothing is.
fn node(path: &Path) -> Option<Node> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(if meta.file_type().is_symlink() {
        Node::Symlink(std::fs::read_link(path).unwrap())
    } else if meta.is_dir() {
        Node::Dir
    } else {
        Node::File
    })
}

/// The links a reader follows: each project's `current` and webroot link.
fn links(staged: &Staged, projects: usize) -> BTreeMap<PathBuf, Option<Node>> {
    (0..projects)
        .flat_map(|n| [staged.root.join(format!("p{n}/current")), staged.root.join(format!("webroot/p{n}"))])
        .map(|path| {
            let n = node(&path);
            (path, n)
        })
        .collect()
}

/// What differs between two trees, one line per path.
fn diff(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{}: {:?} -> {:?}", p.display(), before.get(p), after.get(p)))
        .collect()
}

/// Paths under `dir` whose name starts with `.trueup-tmp-`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    tree(dir).into_keys().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".trueup-tmp-")).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn said(out: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", out.status.code(), text(&out.stdout), text(&out.stderr))
}

// ---------------------------------------------------------------------------------------
// Applies that are killed

/// When to kill an apply.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the process exists.
    Spawned,
    /// Once this share (in percent) of its journaled actions are done.
    Done(usize),
    /// As its last action begins (stopped there by the test hook `TRUEUP_TEST_STOP_IN`):
    /// as late as a kill can leave work undone. The journal then holds the batches
    /// before the last, which grow as they go, so no share near the end is sure to be
    /// journaled while an action is still open (a batch cut short by its time limit
    /// moves the next ones): "90% done" could be one batch short of the end in one run,
    /// and past it in the next.
    Last,
}

/// What a killed apply left behind.
struct Killed {
    /// Its process id, which its lease owner name ends with.
    pid: u32,
    /// Its journal rows and how many were done.
    rows: usize,
    done: usize,
    /// Who held the lease after it died.
    holder: Option<String>,
}

/// Starts `trueup apply` with a lease of `lease_ttl` and kills it with SIGKILL at `at`:
/// the one caller of a killed apply.
#[track_caller]
fn apply_killed(staged: &Staged, at: KillAt, lease_ttl: &str) -> Killed {
    let conn = db(staged);
    let (_, token_before) = lease(&conn);
    let mut command =
        trueup_command(staged, &["apply", "--now", NOW, "--lease-ttl", lease_ttl, "--lock-timeout", "60s"]);
    if let KillAt::Last = at {
        // The apply plans what a plan made now has: the same world, the same `--now`.
        let plan = trueup(staged, &["plan", "--json", "--now", NOW]);
        let actions: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        let last = actions["actions"].as_array().unwrap().len().checked_sub(1).expect("something left to do");
        command.env("TRUEUP_TEST_STOP_IN", last.to_string());
    }
    let mut child: Child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    if let KillAt::Done(percent) = at {
        loop {
            // The journal is read while the apply is stopped, so the SIGKILL lands on what
            // was read: the journal is written a batch at a time, and a running apply could
            // journal its last batches between the read and the kill.
            if let Some(status) = child.try_wait().unwrap() {
                let (rows, done) = progress_since(&conn, token_before);
                panic!(
                    "the apply ended ({status}) with {done} of {rows} actions done, before {percent}% of them: make the world bigger"
                );
            }
            signal(&child, "STOP");
            while !matches!(process_state(&child), 'T' | 'Z') {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            // Every action is journaled as planned before the first one runs, so once one
            // is done, the row count is the size of this run's plan. Some must still be
            // open: killed after its last batch was journaled, the run would leave nothing
            // unfinished for the next apply to report and redo. Stopped in the middle of a
            // write, the apply may hold what a reader needs (SQLite then answers "locking
            // protocol"): it runs on a little, and is read at its next stop.
            if let Ok((rows, done, open)) = journal_since(&conn, token_before)
                && done > 0
                && done * 100 >= rows * percent
                && open > 0
            {
                break;
            }
            signal(&child, "CONT");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    if let KillAt::Last = at {
        wait_until(&mut child, "its last action", |child| process_state(child) == 'T');
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "it was killed, not finished");
    let (rows, done) = progress_since(&conn, token_before);
    let (holder, _) = lease(&conn);
    Killed { pid, rows, done, holder }
}

/// Runs `trueup apply` to its end, waiting for a dead holder's lease to lapse.
#[track_caller]
fn apply_to_the_end(staged: &Staged) -> Output {
    trueup(staged, &["apply", "--now", NOW, "--lease-ttl", SHORT_LEASE, "--lock-timeout", "60s"])
}

/// Runs `trueup apply` that will not wait for the lease.
#[track_caller]
fn apply_without_waiting(staged: &Staged) -> Output {
    trueup(staged, &["apply", "--now", NOW, "--lock-timeout", "0s"])
}

/// Checks what a reader would see after a crash, against the world before and after.
#[track_caller]
fn check_links_mid_repair(path: &Path, before: &Option<Node>, mid: &Option<Node>, after: &Option<Node>) {
    // Each link is switched with one rename: a reader sees the old link or the new one.
    // The one other state is a real folder moved aside and its link not made yet.
    let moved_aside = *before == Some(Node::Dir) && mid.is_none();
    assert!(
        mid == before || mid == after || moved_aside,
        "`{}` is {mid:?} after a crash: neither as it was ({before:?}) nor as repaired ({after:?})",
        path.display()
    );
    if moved_aside {
        let aside = path.with_file_name(format!("current.trueup-aside-{}", now().compact()));
        assert_eq!(node(&aside.join("index.html")), Some(Node::File), "`{}` moved aside is gone", path.display());
    }
}

#[test]
fn an_apply_killed_at_any_point_converges_when_run_again() {
    const PROJECTS: usize = 300;
    let scratch = Scratch::new("crash");
    let world = damaged(PROJECTS);
    let staged = staged(&scratch, &world);
    let model = model_plan(&staged, &world);
    let stuck_ids: BTreeMap<String, Change> = model
        .actions
        .iter()
        .filter_map(|a| match &a.change {
            Change::Resume { deployment, .. } | Change::Fail { deployment, .. } => {
                Some((deployment.clone(), a.change.clone()))
            }
            _ => None,
        })
        .collect();
    assert!(model.actions.len() > 500, "a large apply: {} actions", model.actions.len());
    assert!(stuck_ids.len() > 200);
    let before = links(&staged, PROJECTS);

    let mut mids = Vec::new();
    let mut killed_runs = 0;
    let mut last_holder = None;
    for at in [KillAt::Spawned, KillAt::Done(5), KillAt::Done(50), KillAt::Last] {
        let killed = apply_killed(&staged, at, SHORT_LEASE);
        let conn = db(&staged);
        if let KillAt::Done(percent) = at {
            assert!(killed.rows > 0 && killed.done * 100 >= killed.rows * percent);
        }
        if let KillAt::Done(_) | KillAt::Last = at {
            assert!(killed.done > 0, "killed at {at:?} with nothing journaled done of {} actions", killed.rows);
            assert!(killed.done < killed.rows, "killed at {at:?}, yet all {} actions were done", killed.rows);
            killed_runs += 1;
        }
        if killed.rows > 0 && matches!(at, KillAt::Spawned) {
            killed_runs += 1;
        }
        // Nothing was done twice: a verdict is one transaction, logged once.
        let twice: Vec<_> = log_counts(&conn).into_iter().filter(|(_, n)| *n > 1).collect();
        assert_eq!(twice, vec![], "deployments logged more than once after a crash at {at:?}");
        mids.push(links(&staged, PROJECTS));

        // The dead apply's lease is still held (renewed just before the kill), by a
        // process that is gone: `status` says so.
        if let Some(holder) = &killed.holder {
            assert!(holder.ends_with(&format!(":{}", killed.pid)), "holder `{holder}`, pid {}", killed.pid);
            let status = text(&trueup(&staged, &["status", "--now", NOW]).stdout);
            let died = format!("The apply of `{holder}` (process {}) died", killed.pid);
            assert!(status.contains(&died) || status.contains("An apply was interrupted: run"), "{status}");
            assert!(!status.contains("An apply is running"), "{status}");
        } else {
            assert!(matches!(at, KillAt::Spawned), "an apply killed at {at:?} held no lease");
        }
        // `status` shows the dead apply: as the lease holder, or once its lease lapsed,
        // as a run with unfinished actions.
        if killed.done > 0 {
            let status = text(&trueup(&staged, &["status", "--now", NOW]).stdout);
            let shown = status.contains(") died; the next apply takes over at once, or run `trueup unlock`.")
                || status.contains("An apply was interrupted: run");
            assert!(shown, "status does not show the apply killed at {at:?}:\n{status}");
        }
        last_holder = killed.holder;
    }
    assert!(killed_runs >= 3);

    let (_, token_before_last) = lease(&db(&staged));
    let last = apply_to_the_end(&staged);
    assert_eq!(last.status.code(), Some(0), "{}", said(&last));
    let holder = lease(&db(&staged)).0;
    assert_eq!(holder, None, "the lease is released at the end");
    let took_over = text(&last.stderr);
    let dead = last_holder.expect("the last apply was killed holding the lease");
    let dead_or_lapsed =
        [format!("Took over the lease of `{dead}` (process "), format!("Took over the apply lease from `{dead}`")];
    assert!(dead_or_lapsed.iter().any(|m| took_over.contains(m)), "{took_over}");
    assert!(took_over.contains("was interrupted with"), "the killed runs are not reported:\n{took_over}");
    let open: i64 =
        db(&staged).query_row("SELECT count(*) FROM journal WHERE status = 'planned'", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0, "journal rows of killed runs are still open");
    let status = text(&trueup(&staged, &["status", "--now", NOW]).stdout);
    assert!(!status.contains("An apply"), "status still reports an apply:\n{status}");

    let again = trueup(&staged, &["plan", "--detailed-exitcode", "--now", NOW]);
    assert_eq!(again.status.code(), Some(0), "the world did not converge:\n{}", said(&again));

    // The repaired world: every link where it belongs, read through by a reader.
    let after = links(&staged, PROJECTS);
    let routes = observe_routes(&staged.routes_dir).unwrap();
    for n in 0..PROJECTS {
        let p = format!("p{n}");
        let release = staged.root.join(format!("{p}/deployments/{}", live(&p)));
        let current = staged.root.join(format!("{p}/current"));
        let webroot = staged.root.join(format!("webroot/{p}"));
        if Damage::nth(n).in_flight() {
            // A resumed deployment owns its project's links and route: none that served
            // anything was touched, and a missing one now leads to the live release (issue
            // 8: the site is never left down).
            for (link, want) in [(&current, &release), (&webroot, &current.join("public"))] {
                let served = match &before[link] {
                    Some(Node::Symlink(t)) => link.parent().unwrap().join(t).exists(),
                    other => other.is_some(),
                };
                let expected = if served { before[link].clone() } else { Some(Node::Symlink(want.clone())) };
                assert_eq!(after[link], expected, "{p}: {}", link.display());
            }
            assert_eq!(routes.get(&p), world.routes.get(&p), "{p}");
            continue;
        }
        assert_eq!(after[&current], Some(Node::Symlink(release.clone())), "{p}");
        let index = std::fs::read_to_string(staged.root.join(format!("webroot/{p}/index.html"))).unwrap();
        assert_eq!(index.trim(), release.join("public/index.html").display().to_string(), "{p}");
        assert_eq!(routes[&p].deployment.as_deref(), Some(live(&p).as_str()), "{p}");
        if Damage::nth(n).current == Current::RealFolder {
            let aside = current.with_file_name(format!("current.trueup-aside-{}", now().compact()));
            assert_eq!(node(&aside.join("index.html")), Some(Node::File), "{p}: what was in `current` was kept");
        }
    }
    assert!(routes.keys().all(|p| p.starts_with('p')), "stale routes remain: {:?}", routes.keys());
    assert_eq!(leftovers(&scratch.0), Vec::<PathBuf>::new(), "temporary links or files left over");

    // After every crash, each link was as it was or as repaired: never something else.
    for mid in &mids {
        for (path, now_there) in mid {
            check_links_mid_repair(path, &before[path], now_there, &after[path]);
        }
    }
    // Somewhere, some crash caught the world half repaired.
    assert!(mids.iter().any(|m| m != &before && m != &after));

    // Each stuck deployment was processed exactly once over all the runs.
    let conn = db(&staged);
    for (id, change) in &stuck_ids {
        assert_eq!(logs(&conn, id).len(), 1, "{id}");
        let (phase, attempts, finished) = deployment_row(&conn, id);
        match change {
            Change::Resume { to_phase, attempt, .. } => {
                assert_eq!((phase.as_str(), attempts, finished), (to_phase.as_str(), *attempt, false), "{id}")
            }
            Change::Fail { to_phase, .. } => assert_eq!((phase.as_str(), finished), (to_phase.as_str(), true), "{id}"),
            _ => unreachable!(),
        }
    }

    // One writer per lease: each run's rows carry one token, no two runs share one, and
    // the last apply did all it planned. It may have found nothing to do: outcomes are
    // journaled a batch at a time, so the apply killed last may have made all its changes
    // before it could journal them; the last apply closed those rows as interrupted.
    let runs = journal(&conn);
    assert!(runs.len() >= killed_runs, "{runs:?}");
    let mut tokens = BTreeSet::new();
    for (id, run) in &runs {
        assert_eq!(run.tokens.len(), 1, "run {id} was written under several leases: {run:?}");
        assert!(tokens.insert(*run.tokens.first().unwrap()), "two runs under one lease: {runs:?}");
    }
    let last_runs: Vec<(&String, &Run)> =
        runs.iter().filter(|(_, r)| *r.tokens.first().unwrap() > token_before_last).collect();
    match last_runs.as_slice() {
        [] => {
            assert!(text(&last.stdout).starts_with("No changes"), "the last apply journaled nothing:\n{}", said(&last))
        }
        [(id, run)] => {
            let errors: Vec<(String, Option<String>)> = conn
                .prepare("SELECT action, error FROM journal WHERE run = ?1 AND status != 'done'")
                .unwrap()
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!((run.done, run.failed), (run.rows, 0), "{run:?}: {errors:#?}\n{}", said(&last));
        }
        more => panic!("the last apply wrote several runs: {more:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Two applies at once

/// Starts two `trueup apply` processes on `staged` at once, both with `lock_timeout`, and
/// waits for both: the one caller of concurrent applies. Returns each one's pid and output.
#[track_caller]
fn race(staged: &Staged, lock_timeout: &str) -> [(u32, Output); 2] {
    let start = || {
        trueup_command(staged, &["apply", "--now", NOW, "--lock-timeout", lock_timeout])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    // Both outputs are read at once: a child blocked on a full pipe while the other is
    // read would hold its lease without renewing it.
    std::thread::scope(|s| {
        let waits = [a, b].map(|child| s.spawn(move || (child.id(), child.wait_with_output().unwrap())));
        waits.map(|w| w.join().unwrap())
    })
}

#[test]
fn two_applies_started_together_never_both_write() {
    const PROJECTS: usize = 150;
    for lock_timeout in ["0s", "60s"] {
        let scratch = Scratch::new("race");
        let world = damaged(PROJECTS);
        let staged = staged(&scratch, &world);
        let model = model_plan(&staged, &world);
        let outs = race(&staged, lock_timeout);
        let both = || format!("{}\n{}", said(&outs[0].1), said(&outs[1].1));

        // One run wrote, under one lease, everything it planned; the other wrote nothing.
        let conn = db(&staged);
        let runs = journal(&conn);
        assert_eq!(runs.len(), 1, "{runs:?}\n{}", both());
        let run = runs.values().next().unwrap();
        assert_eq!(run.tokens.len(), 1, "{run:?}");
        assert_eq!((run.rows, run.done), (model.actions.len(), model.actions.len()), "{run:?}");
        let twice: Vec<_> = log_counts(&conn).into_iter().filter(|(_, n)| *n > 1).collect();
        assert_eq!(twice, vec![], "deployments processed twice");

        let winner =
            outs.iter().position(|(_, o)| text(&o.stdout).contains("Plan: ")).unwrap_or_else(|| panic!("{}", both()));
        let (winner_pid, won) = &outs[winner];
        let (_, lost) = &outs[1 - winner];
        assert_eq!(won.status.code(), Some(0), "{}", both());
        let (_, token) = lease(&conn);
        if lock_timeout == "0s" {
            // The loser did not wait: it exited 1 naming the holder, and never took the lease.
            assert_eq!(lost.status.code(), Some(1), "{}", both());
            let stderr = text(&lost.stderr);
            assert!(stderr.contains(&format!(":{winner_pid}` holds the lease")), "{stderr}");
            assert_eq!(token, 1, "only the winner ever held the lease");
        } else {
            // The loser waited for the lease, then found nothing left to do.
            assert_eq!(lost.status.code(), Some(0), "{}", both());
            assert!(text(&lost.stdout).starts_with("No changes."), "{}", both());
            // The winner released its lease: the loser took nothing over.
            assert!(!text(&lost.stderr).contains("Took over"), "{}", both());
            assert_eq!(token, 2, "the loser took the lease after the winner");
        }
        let again = plan_exit(&staged);
        assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    }
}

// ---------------------------------------------------------------------------------------
// The manual scenarios of the original design

/// Runs `trueup apply` at [`NOW`] with `args`: the one caller of a plain apply.
#[track_caller]
fn apply(staged: &Staged, args: &[&str]) -> Output {
    let mut all = vec!["apply", "--now", NOW];
    all.extend_from_slice(args);
    trueup(staged, &all)
}

/// `trueup plan --detailed-exitcode` at [`NOW`]: exit 0 when nothing is left to do.
#[track_caller]
fn plan_exit(staged: &Staged) -> Output {
    trueup(staged, &["plan", "--detailed-exitcode", "--now", NOW])
}

/// The `Summary:` line of an apply's output.
fn summary(out: &Output) -> String {
    let stdout = text(&out.stdout);
    stdout.lines().find(|l| l.starts_with("Summary: ")).unwrap_or_else(|| panic!("no summary:\n{stdout}")).to_owned()
}

#[test]
fn stuck_deployments_are_processed_once_each_with_a_summary() {
    let scratch = Scratch::new("stuck");
    let stuck_kinds = [Stuck::Queued, Stuck::Building, Stuck::Exhausted, Stuck::UploadGone, Stuck::Copying];
    let damages: Vec<Damage> = stuck_kinds.iter().map(|&stuck| Damage { stuck, ..Damage::NONE }).collect();
    let world = world(&damages, 0);
    let staged = staged(&scratch, &world);

    let out = apply(&staged, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(
        summary(&out),
        "Summary: deployments 3 resumed, 2 failed, 0 skipped, 0 errors; symlinks 0 fixed, 10 verified, 0 moved aside, 0 errors; \
         containers 0 started, 0 recreated, 0 removed, 0 errors; routes 0 written, 0 removed, 0 errors; 0 actions skipped in all."
    );
    let conn = db(&staged);
    // (phase it was stuck in, where it went, the attempt logged, a phrase of the reason)
    let expected = [
        ("QUEUED", "QUEUED", "1", "stuck in QUEUED since 2025-10-02T11:00:00Z"),
        ("BUILDING", "BUILDING", "1", "stuck in BUILDING since 2025-10-02T11:00:00Z"),
        ("HEALTH_CHECK", "FAILED", "3", "after 3 of 3 attempts"),
        ("BUILDING", "FAILED", "1", "/outside/uploads/p3.tar.gz` is gone"),
        ("COPYING_FILES", "COPYING_FILES", "3", "stuck in COPYING_FILES since 2025-10-02T11:00:00Z"),
    ];
    for (n, (from, to, attempt, reason)) in expected.into_iter().enumerate() {
        let id = stuck(&format!("p{n}"));
        let log = logs(&conn, &id);
        assert_eq!(log.len(), 1, "{id}: {log:?}");
        let (message, metadata) = &log[0];
        let meta =
            |k: &str| metadata.get(k).map(String::as_str).unwrap_or_else(|| panic!("{id}: no `{k}` in {metadata:?}"));
        assert_eq!(
            (meta("resume_attempted"), meta("original_phase"), meta("new_phase"), meta("attempt"), meta("stuck_since")),
            ("true", from, to, attempt, "2025-10-02T11:00:00Z"),
            "{id}"
        );
        assert!(meta("reason").contains(reason), "{id}: {metadata:?}");
        assert!(message.contains(reason), "{id}: {message}");
        let (phase, _, finished) = deployment_row(&conn, &id);
        assert_eq!((phase.as_str(), finished), (to, to == "FAILED"), "{id}");
    }

    // Again at the same instant: each was handled once, nothing more happens.
    let again = apply(&staged, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    assert!(
        summary(&again).starts_with("Summary: deployments 0 resumed, 0 failed, 0 skipped, 0 errors;"),
        "{}",
        said(&again)
    );
    assert!(log_counts(&conn).values().all(|n| *n == 1), "{:?}", log_counts(&conn));
}

#[test]
fn a_deleted_wrong_or_dangling_current_is_restored() {
    let scratch = Scratch::new("current");
    let kinds = [Current::Right, Current::Wrong, Current::Dangling, Current::RealFolder];
    let damages: Vec<Damage> = kinds.iter().map(|&current| Damage { current, ..Damage::NONE }).collect();
    let world = world(&damages, 0);
    let staged = staged(&scratch, &world);
    // p0's `current` was right when staged; an operator deletes it by hand.
    std::fs::remove_file(staged.root.join("p0/current")).unwrap();
    let broken = |n: usize| std::fs::read_to_string(staged.root.join(format!("webroot/p{n}/index.html"))).ok();
    assert_eq!(broken(0), None);

    let out = apply(&staged, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(summary(&out).contains("symlinks 4 fixed, 4 verified, 1 moved aside, 0 errors;"), "{}", said(&out));
    for n in 0..kinds.len() {
        let p = format!("p{n}");
        let release = staged.root.join(format!("{p}/deployments/{}", live(&p)));
        assert_eq!(node(&staged.root.join(format!("{p}/current"))), Some(Node::Symlink(release.clone())), "{p}");
        // A reader going through the webroot gets the live release's page.
        let page = broken(n).unwrap_or_else(|| panic!("{p}: nothing behind the webroot"));
        assert_eq!(page.trim(), release.join("public/index.html").display().to_string(), "{p}");
    }
    let aside = staged.root.join(format!("p3/current.trueup-aside-{}", now().compact()));
    assert_eq!(node(&aside.join("index.html")), Some(Node::File), "the real folder was moved aside, not deleted");
    assert_eq!(plan_exit(&staged).status.code(), Some(0));
}

#[test]
fn an_upload_removed_before_the_resume_fails_the_deployment_naming_it() {
    let scratch = Scratch::new("upload");
    let world = world(&[Damage { stuck: Stuck::Building, ..Damage::NONE }], 0);
    let staged = staged(&scratch, &world);
    let upload = staged.dir.join("outside/uploads/p0.tar.gz");
    let planned = text(&trueup(&staged, &["plan", "--now", NOW]).stdout);
    assert!(planned.contains("resume     deployment p0-stuck: restart BUILDING (attempt 1)"), "{planned}");

    std::fs::remove_file(&upload).unwrap();
    let out = apply(&staged, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let conn = db(&staged);
    let (phase, attempts, finished) = deployment_row(&conn, "p0-stuck");
    assert_eq!((phase.as_str(), attempts, finished), ("FAILED", 0, true));
    let log = logs(&conn, "p0-stuck");
    assert_eq!(log.len(), 1, "{log:?}");
    let gone = format!("its upload `{}` is gone", upload.display());
    assert!(log[0].0.starts_with("failed in BUILDING: ") && log[0].0.contains(&gone), "{log:?}");
    assert_eq!(log[0].1["reason"], log[0].0["failed in BUILDING: ".len()..], "{log:?}");
}

#[test]
fn a_saved_plan_is_refused_once_the_world_changed_and_applied_when_it_did_not() {
    let scratch = Scratch::new("saved");
    let damages = [Damage::NONE, Damage::NONE, Damage::nth(1), Damage::nth(2)];
    let world = world(&damages, 1);
    let staged = staged(&scratch, &world);
    let file = scratch.join("plan.json");
    let saved = trueup(&staged, &["plan", "--now", NOW, "--out", file.to_str().unwrap()]);
    assert_eq!(saved.status.code(), Some(0), "{}", said(&saved));
    let file = file.to_str().unwrap();

    // Someone deletes p1's `current`: the saved plan no longer describes this world.
    let current = staged.root.join("p1/current");
    let link = std::fs::read_link(&current).unwrap();
    std::fs::remove_file(&current).unwrap();
    let before = tree(&staged.dir);
    let out = trueup(&staged, &["apply", file]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the plan is stale: the world changed since it was made (project p1)"), "{stderr}");
    assert!(journal(&db(&staged)).is_empty(), "a refused plan journals nothing");
    // The database changed (the lease was taken and given back); no file did.
    let changed = diff(&before, &tree(&staged.dir));
    let changed: Vec<_> = changed.into_iter().filter(|line| !line.starts_with("state.db")).collect();
    assert_eq!(changed, Vec::<String>::new(), "a refused plan changes no file");

    // Put it back as it was: the same world, so the saved plan applies.
    std::os::unix::fs::symlink(&link, &current).unwrap();
    let out = trueup(&staged, &["apply", "--no-run", file]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // A resume, and a failure (its reason travels in the saved plan), as planned. p2's
    // resumed build has no release yet, so its wrong links and route are repaired too.
    assert_eq!(
        summary(&out),
        "Summary: deployments 1 resumed, 1 failed, 0 skipped, 0 errors; symlinks 3 fixed, 5 verified, 0 moved aside, 0 errors; \
         containers 0 started, 0 recreated, 0 removed, 0 errors; routes 1 written, 1 removed, 0 errors; 0 actions skipped in all."
    );
    let failed = logs(&db(&staged), "p3-stuck");
    assert!(failed.len() == 1 && failed[0].0.contains("/outside/uploads/p3.tar.gz` is gone"), "{failed:?}");
    assert_eq!(plan_exit(&staged).status.code(), Some(0));
}

#[test]
fn a_dry_run_changes_nothing() {
    let scratch = Scratch::new("dry");
    let world = damaged(20);
    let staged = staged(&scratch, &world);
    let before = tree(&scratch.0);
    let out = apply(&staged, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Plan: ") && stdout.ends_with("\nDry run: nothing was changed.\n"), "{stdout}");
    let changed = diff(&before, &tree(&scratch.0));
    assert_eq!(changed, Vec::<String>::new(), "the dry run changed files (the database included)");
}

// ---------------------------------------------------------------------------------------
// Output that cannot be written, and applies stopped by a signal

#[test]
fn a_closed_stdout_ends_plan_quietly_with_the_sigpipe_status() {
    let scratch = Scratch::new("pipe");
    let staged = staged(&scratch, &damaged(40));
    // `trueup plan | head -1`: the reader goes away after its first line. The pipe's
    // reading end is closed before trueup even starts, so its first write fails (closed
    // after the start, a small plan could fit in the pipe before the reader left).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = trueup_command(&staged, &["plan", "--now", NOW]).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{}", said(&out));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "a closed pipe is not an error to report:\n{stderr}");

    // `trueup plan --out FILE | head -1`: the plan is saved all the same.
    let saved = scratch.join("plan.json");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = trueup_command(&staged, &["plan", "--now", NOW, "--out"])
        .arg(&saved)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", said(&out));
    let read =
        |path: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };
    let whole = scratch.join("whole.json");
    let wrote = trueup_command(&staged, &["plan", "--now", NOW, "--out"]).arg(&whole).output().unwrap();
    assert!(wrote.status.success(), "{}", said(&wrote));
    let (saved, whole) = (read(&saved), read(&whole));
    assert!(saved["actions"].as_array().is_some_and(|a| a.len() > 40), "a plan of 40 damaged projects");
    assert!(saved["actions"] == whole["actions"], "the plan saved with a closed stdout is not the whole plan");
}

/// Where a signal reaches an apply.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// As soon as the process exists: before it catches signals, or while it starts.
    Start,
    /// While it waits for the lease, which a live process (this test) holds.
    WaitingForLease,
    /// As soon as it holds the lease: observing, or planning.
    Observing,
    /// While it shows its plan, blocked on a stdout that nobody reads yet.
    ShowingPlan,
    /// Between two actions, once the nth has ended.
    After(Nth),
    /// While the action after the nth is in hand: it may not even have begun, so the
    /// signal only stops the actions after it.
    During(Nth),
}

/// An action of the plan, counted from the first.
#[derive(Debug, Clone, Copy)]
enum Nth {
    First,
    Half,
    LastButOne,
}

impl Nth {
    /// How many actions end before this point, in a plan of `total`.
    fn of(self, total: usize) -> usize {
        match self {
            Nth::First => 1,
            Nth::Half => total / 2,
            Nth::LastButOne => total - 1,
        }
    }
}

/// What goes wrong around an apply.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Its stdout is a pipe whose reading end is closed (`trueup apply | head -1`).
    StdoutClosed,
    /// Its stdout is `/dev/full`.
    StdoutFull,
    /// A signal (a kill(1) name: `INT`, `TERM`) at a point.
    Signal(&'static str, Point),
}

/// The fault-injection matrix of issue 8: each fault hits an apply of [`FAULT_PROJECTS`]
/// damaged projects. Each point is reached for certain, not by timing: the plan of such a
/// world is larger than a pipe holds, so an apply whose stdout is not read cannot reach
/// its first action; among the actions, the apply stops itself where the test asks
/// (`TRUEUP_TEST_STOP_AFTER` between two actions, `TRUEUP_TEST_STOP_IN` inside one).
const FAULTS: &[(&str, Fault)] = &[
    ("stdout closed", Fault::StdoutClosed),
    ("stdout on /dev/full", Fault::StdoutFull),
    ("SIGINT right after start", Fault::Signal("INT", Point::Start)),
    ("SIGTERM right after start", Fault::Signal("TERM", Point::Start)),
    ("SIGINT while waiting for the lease", Fault::Signal("INT", Point::WaitingForLease)),
    ("SIGTERM while waiting for the lease", Fault::Signal("TERM", Point::WaitingForLease)),
    ("SIGINT while observing", Fault::Signal("INT", Point::Observing)),
    ("SIGTERM while showing the plan", Fault::Signal("TERM", Point::ShowingPlan)),
    ("SIGTERM after the first action", Fault::Signal("TERM", Point::After(Nth::First))),
    ("SIGINT between two actions half way", Fault::Signal("INT", Point::After(Nth::Half))),
    ("SIGTERM during an action half way", Fault::Signal("TERM", Point::During(Nth::Half))),
    ("SIGINT before the last action", Fault::Signal("INT", Point::After(Nth::LastButOne))),
    ("SIGTERM during the last action", Fault::Signal("TERM", Point::During(Nth::LastButOne))),
];

/// The size of each world of [`FAULTS`]: a few hundred projects.
const FAULT_PROJECTS: usize = 200;

/// What a faulted apply did.
struct Faulted {
    status: std::process::ExitStatus,
    stderr: String,
    /// The lease's token before it started.
    token_before: i64,
    /// How many of its actions were done when the signal was sent.
    done_at_signal: Option<usize>,
    /// The lease this test held while the apply waited for it.
    ours: Option<trueup::store::Lease>,
}

/// Sends `signal` (a kill(1) name) to `child`; once this returns, the signal is pending.
pub fn signal(child: &Child, signal: &str) {
    // Sent from this process at once: a `kill` command takes milliseconds to start, long
    // enough for a small apply to end first ("right after start" then came too late).
    let number = match signal {
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        other => panic!("no signal {other} in this test"),
    };
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: `kill` reads no memory; `pid` is our own child, not yet reaped.
    let sent = unsafe { libc::kill(pid, number) };
    assert_eq!(sent, 0, "kill -s {signal} failed: {}", std::io::Error::last_os_error());
}

/// A process's state letter (`R`, `S`, `T`, ...), from `/proc`.
pub fn process_state(child: &Child) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    stat.rsplit_once(')').unwrap().1.trim_start().chars().next().unwrap()
}

/// Polls until `ready` says so, failing if the apply ends first.
fn wait_until(child: &mut Child, what: &str, mut ready: impl FnMut(&Child) -> bool) {
    while !ready(child) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the apply ended ({status}) before {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs `trueup apply` on `staged`, whose plan has `total` actions, with `fault`: the
/// one caller of a faulted apply.
fn apply_faulted(staged: &Staged, scratch: &Scratch, total: usize, fault: Fault) -> Faulted {
    use std::io::{BufRead as _, Read as _};
    let conn = db(staged);
    let err_path = scratch.join("fault.err");
    let mut args = vec!["apply", "--now", NOW];
    let mut ours = None;
    if let Fault::Signal(_, Point::WaitingForLease) = fault {
        use trueup::store::{Holder, Store};
        args.extend(["--lock-timeout", "60s"]);
        let (store, _) = Store::open(&staged.db).unwrap();
        let holder = Holder { owner: "live-holder", host: &hostname(), pid: std::process::id() };
        let ttl = trueup::time::Duration::from_secs(60);
        ours = Some(store.acquire_lease_as(holder, trueup::time::clock::now(), ttl, &|_| true).unwrap().0);
    }
    let (_, token_before) = lease(&conn);
    let mut command = trueup_command(staged, &args);
    match fault {
        Fault::Signal(_, Point::After(nth)) => _ = command.env("TRUEUP_TEST_STOP_AFTER", nth.of(total).to_string()),
        Fault::Signal(_, Point::During(nth)) => _ = command.env("TRUEUP_TEST_STOP_IN", nth.of(total).to_string()),
        _ => {}
    }
    let stdout = match fault {
        Fault::StdoutFull => Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap()),
        Fault::Signal(_, Point::After(_) | Point::During(_) | Point::WaitingForLease) => {
            Stdio::from(std::fs::File::create(scratch.join("fault.out")).unwrap())
        }
        _ => Stdio::piped(),
    };
    let stderr = match fault {
        Fault::Signal(_, Point::WaitingForLease) => Stdio::piped(),
        _ => Stdio::from(std::fs::File::create(&err_path).unwrap()),
    };
    let mut child = command.stdout(stdout).stderr(stderr).spawn().unwrap();
    let mut piped = child.stdout.take();
    let mut done_at_signal = None;
    match fault {
        Fault::StdoutClosed => drop(piped.take()),
        Fault::StdoutFull => {}
        Fault::Signal(name, Point::Start) => signal(&child, name),
        Fault::Signal(name, Point::WaitingForLease) => {
            let mut lines = std::io::BufReader::new(child.stderr.take().unwrap());
            let mut said = String::new();
            while !said.contains("Waiting for the apply lease") {
                let mut line = String::new();
                assert!(lines.read_line(&mut line).unwrap() > 0, "the apply never waited:\n{said}");
                said.push_str(&line);
            }
            signal(&child, name);
            lines.read_to_string(&mut said).unwrap();
            let status = child.wait().unwrap();
            return Faulted { status, stderr: said, token_before, done_at_signal, ours };
        }
        Fault::Signal(name, Point::Observing) => {
            let pid = format!(":{}", child.id());
            wait_until(&mut child, "it took the lease", |_| lease(&conn).0.is_some_and(|o| o.ends_with(&pid)));
            signal(&child, name);
        }
        Fault::Signal(name, Point::ShowingPlan) => {
            let mut first = [0_u8];
            piped.as_mut().unwrap().read_exact(&mut first).unwrap();
            signal(&child, name);
        }
        Fault::Signal(name, Point::After(nth) | Point::During(nth)) => {
            // Stopped between action N-1 and action N, or inside action N (counted from
            // 0): N actions ended, whether or not their batch is journaled yet.
            wait_until(&mut child, "it stopped itself", |c| process_state(c) == 'T');
            done_at_signal = Some(nth.of(total));
            // Pending while it is stopped, and handled before it runs on: between two
            // actions, before the next begins; inside one, once it ends.
            signal(&child, name);
            signal(&child, "CONT");
        }
    }
    // The plan, read to its end now that the fault is in place.
    if let Some(mut piped) = piped {
        std::io::copy(&mut piped, &mut std::io::sink()).unwrap();
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(err_path).unwrap();
    Faulted { status, stderr, token_before, done_at_signal, ours }
}

/// Checks what one fault left, then that the lease is free and the next apply converges.
fn check_fault(fault: Fault) {
    use std::os::unix::process::ExitStatusExt as _;
    let scratch = Scratch::in_memory("fault");
    let world = damaged(FAULT_PROJECTS);
    let staged = staged(&scratch, &world);
    let total = model_plan(&staged, &world).actions.len();
    assert!(total > 300, "a large apply: {total} actions");
    let faulted = apply_faulted(&staged, &scratch, total, fault);
    let (code, stderr) = (faulted.status.code(), &faulted.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let conn = db(&staged);
    let (rows, done) = progress_since(&conn, faulted.token_before);
    let (holder, token) = lease(&conn);
    let skipped = |why: &str| -> usize {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM journal WHERE token > ?1 AND status = 'skipped' AND error LIKE ?2",
                (faulted.token_before, format!("%{why}%")),
                |r| r.get(0),
            )
            .unwrap();
        usize::try_from(n).unwrap()
    };
    let interrupted = |name: &str| format!("error: the apply was interrupted by SIG{name}");
    match fault {
        Fault::StdoutClosed => {
            assert_eq!(code, Some(141), "{stderr}");
            assert!(!stderr.lines().any(|l| l.starts_with("error")), "a closed pipe is not an error:\n{stderr}");
            assert!(token > faulted.token_before, "it never took the lease");
            assert_eq!((done, skipped("standard output cannot be written")), (0, rows), "nothing is done unseen");
        }
        Fault::StdoutFull => {
            assert_eq!(code, Some(1), "{stderr}");
            let said = "error: cannot show the plan, so nothing was applied: cannot write to standard output";
            assert!(stderr.contains(said), "{stderr}");
            assert!(token > faulted.token_before, "it never took the lease");
            assert_eq!((done, skipped("standard output cannot be written")), (0, rows), "nothing is done unseen");
        }
        Fault::Signal(name, point) => {
            let number = if name == "INT" { 2 } else { 15 };
            let caught = code == Some(128 + number);
            match point {
                // Before it catches signals, the signal's default action ends it: it
                // held no lease yet.
                Point::Start => assert!(caught || faulted.status.signal() == Some(number), "{:?}", faulted.status),
                _ => assert!(caught, "exit {code:?}, not {}:\n{stderr}", 128 + number),
            }
            match point {
                Point::Start => assert_eq!(done, 0, "an action was done"),
                Point::WaitingForLease => {
                    assert!(
                        stderr
                            .contains(&format!("{} before it took the lease; nothing was changed", interrupted(name))),
                        "{stderr}"
                    );
                    assert_eq!(rows, 0, "it journaled without the lease");
                    assert_eq!(holder.as_deref(), Some("live-holder"), "the live holder's lease was taken");
                    assert_eq!(token, faulted.token_before, "it took the lease");
                    let (store, _) = trueup::store::Store::open(&staged.db).unwrap();
                    store.release_lease(faulted.ours.as_ref().unwrap()).unwrap();
                }
                Point::Observing | Point::ShowingPlan => {
                    assert!(stderr.contains(&interrupted(name)), "{stderr}");
                    assert!(rows > 0, "the apply journaled no plan");
                    assert_eq!((done, skipped(&format!("interrupted by SIG{name}"))), (0, rows), "{stderr}");
                }
                Point::After(_) | Point::During(_) => {
                    assert!(stderr.contains(&interrupted(name)), "{stderr}");
                    // Between two actions, no other begins; during one, it finishes.
                    let before = faulted.done_at_signal.unwrap();
                    let in_hand = usize::from(matches!(point, Point::During(_)));
                    assert_eq!(done, before + in_hand, "{before} done when the signal was sent");
                    assert_eq!(rows, total, "its journal is not its plan");
                    assert_eq!(skipped(&format!("interrupted by SIG{name}")), rows - done, "{stderr}");
                }
            }
        }
    }
    let open: i64 = conn.query_row("SELECT count(*) FROM journal WHERE status = 'planned'", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0, "journal rows left open");
    let twice: Vec<_> = log_counts(&conn).into_iter().filter(|(_, n)| *n > 1).collect();
    assert_eq!(twice, vec![], "deployments processed twice");
    drop(conn);

    // The lease is free: `status` names no holder, and an apply starts at once.
    assert_eq!(lease(&db(&staged)).0, None, "the lease is held");
    let status = text(&trueup(&staged, &["status", "--now", NOW]).stdout);
    assert!(!status.contains("An apply is running") && !status.contains(") died;"), "{status}");
    let next = apply_without_waiting(&staged);
    assert_eq!(next.status.code(), Some(0), "the next apply: {}", said(&next));
    assert!(!text(&next.stderr).contains("Took over"), "the next apply: {}", said(&next));
    let again = plan_exit(&staged);
    assert_eq!(again.status.code(), Some(0), "the world did not converge:\n{}", said(&again));
}

#[test]
fn an_apply_hit_by_a_fault_frees_its_lease_and_the_next_converges() {
    // Two cases at a time: each is mostly waiting for the disk (verdicts commit one by
    // one; links are synced a batch at a time).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some((name, fault)) = FAULTS.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                    let started = std::time::Instant::now();
                    let outcome = std::panic::catch_unwind(|| check_fault(*fault));
                    eprintln!("fault case `{name}`: {:.1?}", started.elapsed());
                    if let Err(panic) = outcome {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push(format!("{name} ({fault:?}): {why}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} fault cases failed:\n{}", failures.len(), FAULTS.len(), failures.join("\n"));
}

#[test]
fn an_apply_holds_its_lease_for_the_lease_ttl_it_was_given() {
    let scratch = Scratch::new("lease-ttl");
    let staged = staged(&scratch, &damaged(20));
    let mut child = trueup_command(&staged, &["apply", "--now", NOW, "--lease-ttl", "5s"])
        .env("TRUEUP_TEST_STOP_AFTER", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(&mut child, "it stopped itself", |c| process_state(c) == 'T');
    // Renewed (or taken) before now, for 5 seconds: it lapses within 5 seconds of now, and
    // never with the default minute.
    let until: String =
        db(&staged).query_row("SELECT until FROM lease WHERE name = 'apply'", [], |r| r.get(0)).unwrap();
    let until: trueup::time::Timestamp = until.parse().unwrap();
    let now = trueup::time::clock::now();
    signal(&child, "CONT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(until.unix() <= now.unix() + 5, "the lease runs until {until}, more than 5s after {now}");
    assert!(until.unix() + 60 > now.unix() + 5, "the lease ran out long ago: {until}");
}

#[test]
fn lease_durations_are_bounded_when_parsed_and_the_default_wait_outlasts_the_lease() {
    use crate::support::Trueup;
    // A staged world, so that a bound that stops working changes nothing outside it.
    let scratch = Scratch::new("bounds");
    let staged = staged(&scratch, &damaged(1));
    for (flag, value, limit) in [
        ("--lease-ttl", "999999999999d", "at most 1d"),
        ("--lease-ttl", "25h", "at most 1d"),
        ("--lease-ttl", "0s", "at least 1s"),
        ("--lock-timeout", "61m", "at most 1h"),
    ] {
        let out = Trueup::new(["apply", "--dry-run", flag, value]).staged(&staged).code(1).run();
        assert!(out.stderr.contains(&format!("invalid value '{value}' for '{flag}")), "{}", out.stderr);
        assert!(out.stderr.contains(limit), "{flag} {value}: {}", out.stderr);
    }
    let help = Trueup::new(["apply", "--help"]).run().stdout;
    let default = |flag: &str| {
        let at = help.find(flag).unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
        let rest = &help[at..];
        let start = rest.find("[default: ").unwrap() + "[default: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].parse::<trueup::time::Duration>().unwrap()
    };
    assert!(default("--lock-timeout <") > default("--lease-ttl <"), "{help}");
}

#[test]
fn a_lease_row_with_an_absurd_expiry_is_lapsed_not_fatal() {
    let scratch = Scratch::new("absurd-lease");
    let staged = staged(&scratch, &damaged(3));
    // What `--lease-ttl 999999999999d` wrote before durations were bounded, or a hand edit.
    for until in ["2737909033-01-01T00:00:00Z", "soon"] {
        let conn = Connection::open(&staged.db).unwrap();
        conn.execute("UPDATE lease SET owner = 'trueup-apply@gone:1', until = ?1 WHERE name = 'apply'", [until])
            .unwrap();
        drop(conn);
        let status = trueup(&staged, &["status", "--now", NOW]);
        assert_eq!(status.status.code(), Some(0), "{until}: {}", said(&status));
        assert!(!text(&status.stdout).contains("An apply is running"), "{until}: {}", said(&status));
        let next = apply_without_waiting(&staged);
        assert_eq!(next.status.code(), Some(0), "{until}: {}", said(&next));
        assert!(text(&next.stderr).contains("Took over the apply lease from `trueup-apply@gone:1`"), "{}", said(&next));
        assert_eq!(lease(&db(&staged)).0, None);
    }
}

/// This machine's hostname, as trueup records it in the lease.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

/// The lease row's expiry, as stored.
fn lease_until(conn: &Connection) -> Option<String> {
    conn.query_row("SELECT until FROM lease WHERE name = 'apply'", [], |r| r.get(0)).unwrap()
}

#[test]
fn an_apply_killed_mid_way_is_taken_over_at_once_by_the_next_with_default_flags() {
    use crate::support::Trueup;
    let scratch = Scratch::new("dead-holder");
    let world = damaged(300);
    let staged = staged(&scratch, &world);
    // Killed with the default lease of a minute, a third of the way through.
    let killed = apply_killed(&staged, KillAt::Done(30), "60s");
    let holder = killed.holder.expect("killed holding the lease");
    let until: Timestamp = lease_until(&db(&staged)).unwrap().parse().unwrap();

    let status = Trueup::new(["status", "--now", NOW]).staged(&staged).run().stdout;
    let died = format!(
        "The apply of `{holder}` (process {}) died; the next apply takes over at once, or run `trueup unlock`.",
        killed.pid
    );
    assert!(status.contains(&died), "{status}");
    assert!(!status.contains("An apply is running"), "{status}");

    // With default flags: it would wait up to 90s for the lease to lapse, and does not.
    let started = trueup::time::clock::now();
    let next = Trueup::new(["apply", "--now", NOW]).staged(&staged).run();
    assert!(started < until, "the dead apply's lease had lapsed ({until}) before the next began ({started})");
    let took_over = format!(
        "Took over the lease of `{holder}` (process {} on {} is gone; its lease ran until {until}).",
        killed.pid,
        hostname()
    );
    assert!(next.stderr.contains(&took_over), "{}", next.stderr);
    assert_eq!(lease(&db(&staged)).0, None, "the lease is released at the end");
    let plan = plan_exit(&staged);
    assert_eq!(plan.status.code(), Some(0), "{}", said(&plan));
}

#[test]
fn unlock_frees_a_dead_holder_and_refuses_a_live_one() {
    use crate::support::Trueup;
    use trueup::store::{Holder, Store};
    let scratch = Scratch::new("unlock");
    let staged = staged(&scratch, &damaged(3));
    let out = Trueup::new(["unlock"]).staged(&staged).run();
    assert_eq!(out.stdout, "The apply lease is free: nothing to unlock.\n");
    let host = hostname();
    let ttl = trueup::time::Duration::from_secs(60);
    let hold = |pid: u32| {
        let (store, _) = Store::open(&staged.db).unwrap();
        let holder = Holder { owner: "holder", host: &host, pid };
        store.acquire_lease_as(holder, trueup::time::clock::now(), ttl, &|_| true).unwrap();
    };

    // This test's own process holds it: alive, refused, naming it.
    hold(std::process::id());
    let refused = Trueup::new(["unlock"]).staged(&staged).code(1).run();
    let pid = std::process::id();
    assert!(
        refused.stderr.contains("error: not unlocking: `holder` holds the apply lease until ")
            && refused.stderr.contains(&format!("its process {pid} on {host} is running")),
        "{}",
        refused.stderr
    );
    let status = Trueup::new(["status", "--now", NOW]).staged(&staged).run().stdout;
    assert!(status.contains("An apply is running: `holder` holds the lease"), "{status}");
    assert_eq!(lease(&db(&staged)).0.as_deref(), Some("holder"), "a refused unlock changes nothing");

    // A process that ended: its lease is freed, long before it expires.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let (store, _) = Store::open(&staged.db).unwrap();
    let current = store.lease_held().unwrap().unwrap();
    drop(store);
    let conn = Connection::open(&staged.db).unwrap();
    conn.execute("UPDATE lease SET pid = ?1 WHERE name = 'apply'", [dead]).unwrap();
    drop(conn);
    let out = Trueup::new(["unlock"]).staged(&staged).run();
    assert_eq!(
        out.stdout,
        format!(
            "Released the apply lease of `holder` (process {dead} on {host} is gone). The next apply starts at once.\n"
        )
    );
    assert!(trueup::time::clock::now() < current.until);
    assert_eq!(lease(&db(&staged)).0, None);
}

#[test]
fn the_apply_after_one_killed_mid_switch_clears_what_it_left_under_temporary_names() {
    use std::os::unix::fs::symlink;
    use trueup::store::Store;
    let scratch = Scratch::new("half-switched");
    let staged = staged(&scratch, &world(&[Damage::NONE; 4], 0));
    let root = &staged.root;
    let current = |p: &str| root.join(p).join("current");
    let tmp = |p: &str| root.join(p).join(".trueup-tmp-current");
    // A run that died: it had planned to switch the `current` of p0, p1 and p2, and to
    // resume a deployment, and journaled only the switch of p2 as done. Its lease lapsed
    // long ago.
    let (store, _) = Store::open(&staged.db).unwrap();
    let lease = store.acquire_lease("killed", ago(24 * 60), trueup::time::Duration::from_secs(60)).unwrap();
    let action = |p: &str, change: Change| plan::Action { project: p.into(), change, reason: "test".into() };
    let link = |p: &str| action(p, Change::Link { path: current(p), before: None, target: root.join("elsewhere") });
    let resume = action(
        "p3",
        Change::Resume {
            deployment: "p3-gone".into(),
            from_phase: "BUILDING".into(),
            to_phase: "BUILDING".into(),
            attempt: 1,
            stuck_since: Some(ago(60)),
            dead_claim: None,
        },
    );
    let planned = [(0, link("p0")), (1, link("p1")), (2, link("p2")), (3, resume)];
    store.journal_plan(&lease, "killed-run", &planned, ago(24 * 60)).unwrap();
    store.journal_done(&lease, "killed-run", 2, ago(24 * 60)).unwrap();
    drop(store);
    // What it left: an old link set aside (p0), a folder a person made (p1), a link
    // beside a switch journaled as done (p2), and one beside a deployment's (p3).
    symlink(root.join("p0/deployments/old"), tmp("p0")).unwrap();
    std::fs::create_dir(tmp("p1")).unwrap();
    symlink(root.join("p2/deployments/old"), tmp("p2")).unwrap();
    symlink(root.join("p3/deployments/old"), tmp("p3")).unwrap();
    let before = links(&staged, 4);

    let out = apply_without_waiting(&staged);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // Only the link under the name of a switch that never ended is removed.
    let left = ["p1", "p2", "p3"].map(|p| tmp(p).strip_prefix(root).unwrap().to_owned());
    assert_eq!(leftovers(root), left);
    assert_eq!(links(&staged, 4), before, "the links themselves are untouched");
}
