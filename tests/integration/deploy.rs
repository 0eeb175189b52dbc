//! `trueup deploy`, `work`, `event` and `logs` for real: sources in folders, builds with
//! `sh`, releases on disk, served by Caddy through Traefik (the shared [`proxy`]).
//!
//! Each test has a state database of its own and project names of its own in the
//! proxy's shared root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::phases::source::{Entry, tarball};
use crate::proxy::Proxy;
use crate::scratch::Scratch;
use crate::support::{Ran, Trueup};

/// A test's own database, root and routes folder, behind a Traefik and a Caddy of its own:
/// `apply` owns every route file of its folder.
struct Paas {
    scratch: Scratch,
    proxy: Arc<Proxy>,
}

impl Paas {
    /// A new database, with the proxy's addresses recorded by `trueup init`.
    fn new(name: &str) -> Paas {
        let paas = Paas { scratch: Scratch::new(name), proxy: Arc::new(Proxy::own()) };
        paas.trueup(["init"])
            .arg("--proxy")
            .arg(paas.proxy.traefik.to_string())
            .arg("--webroot-upstream")
            .arg(format!("http://{}", paas.proxy.static_server))
            .arg("--health-timeout")
            .arg("10s")
            .run();
        paas
    }

    fn db(&self) -> PathBuf {
        self.scratch.join("state.db")
    }

    /// `trueup` with this database, the proxy's root and routes folder, then `args`.
    fn trueup<const N: usize>(&self, args: [&str; N]) -> Trueup {
        Trueup::new(["--db"])
            .arg(self.db())
            .arg("--root")
            .arg(&self.proxy.root)
            .arg("--routes-dir")
            .arg(&self.proxy.routes)
            .args(args)
    }

    /// A source folder `name` whose `index.html` says `body`.
    fn source(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.scratch.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        dir
    }

    /// `trueup deploy` of `source` to `project`, with the build that copies it to `public/`.
    fn deploy(&self, project: &str, source: &Path) -> Trueup {
        self.trueup(["deploy", "--project", project, "--build", BUILD, "--source"]).arg(source)
    }

    /// Deployment ids of `project`, oldest first, with their phase.
    fn deployments(&self, project: &str) -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        let mut stmt =
            conn.prepare("SELECT id, phase FROM deployments WHERE project = ?1 ORDER BY created_at, rowid").unwrap();
        stmt.query_map([project], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }
}

/// The build of every test site: its `index.html` into `public/`.
const BUILD: &str = "mkdir -p public && cp index.html public/";

/// The id a `deploy` printed first (`ID: QUEUED`).
fn id_of(ran: &Ran) -> String {
    ran.stdout.split(':').next().unwrap().trim().to_owned()
}

/// The id a `deploy --detach --json` printed.
fn queued_id(ran: &Ran) -> String {
    let json = ran.json();
    assert_eq!(json["status"], "queued", "{}", ran.stdout);
    json["deployment"].as_str().unwrap().to_owned()
}

#[test]
fn a_site_is_deployed_served_through_traefik_and_replaced_by_its_next_version() {
    let paas = Paas::new("deploy-two");
    let v1 = paas.deploy("blog", &paas.source("v1", "blog v1")).run();
    let id1 = id_of(&v1);
    assert!(v1.stdout.contains(&format!("{id1}: BUILDING\n")), "each phase is printed:\n{}", v1.stdout);
    assert!(v1.stdout.ends_with(&format!("{id1} is live (ACTIVE)\n")), "{}", v1.stdout);
    assert_eq!(paas.proxy.get("blog.localhost", "/"), (200, Some(id1.clone()), "blog v1".to_owned()));

    let id2 = id_of(&paas.deploy("blog", &paas.source("v2", "blog v2")).run());
    assert_eq!(paas.proxy.get("blog.localhost", "/"), (200, Some(id2.clone()), "blog v2".to_owned()));
    let phases: Vec<String> = paas.deployments("blog").into_iter().map(|(_, p)| p).collect();
    assert_eq!(phases, ["ACTIVE", "ACTIVE"]);
    // What deploy made is what apply would make: nothing to repair.
    paas.trueup(["plan", "--detailed-exitcode"]).run();
    // The work folders are gone; the releases stay.
    assert!(!paas.proxy.root.join(".trueup/work").join(&id1).exists());
    assert!(paas.proxy.root.join("blog/deployments").join(&id1).join("public/index.html").is_file());
    let log = paas.trueup(["logs"]).arg(&id2).run().stdout;
    for phase in ["PULLING_SOURCE", "BUILDING", "COPYING_FILES", "CREATING_SYMLINKS", "UPDATING_ROUTES", "HEALTH_CHECK"]
    {
        assert!(log.contains(&format!(" {phase} {phase} done\n")), "{phase} in the log:\n{log}");
    }
}

#[test]
fn a_release_whose_check_fails_is_never_served_and_the_deployment_says_why() {
    let paas = Paas::new("deploy-broken");
    let id1 = id_of(&paas.deploy("shop", &paas.source("v1", "shop v1")).run());
    let serving = Serving::watch(&paas.proxy, "shop.localhost", &["shop v1"]);
    // The build leaves no index.html: the release answers 404.
    let broken = paas
        .trueup(["deploy", "--project", "shop", "--build", "mkdir -p public", "--source"])
        .arg(paas.source("v2", "never served"))
        .code(1)
        .run();
    let id2 = id_of(&broken);
    assert!(
        broken.stderr.contains(&format!("error: {id2} ended in FAILED: failed in CREATING_SYMLINKS: the new release failed its check before it was exposed: http://")),
        "{}",
        broken.stderr
    );
    assert!(broken.stderr.contains("answered 404"), "{}", broken.stderr);
    assert_eq!(paas.proxy.get("shop.localhost", "/"), (200, Some(id1.clone()), "shop v1".to_owned()));
    serving.stop_and_check();
    let log = paas.trueup(["logs"]).arg(&id2).run().stdout;
    assert!(
        log.contains("error CREATING_SYMLINKS failed in CREATING_SYMLINKS: the new release failed its check"),
        "{log}"
    );
    paas.trueup(["plan", "--detailed-exitcode"]).run();
}

#[test]
fn a_first_release_that_fails_its_check_gets_no_route() {
    let paas = Paas::new("deploy-first-broken");
    let broken = paas
        .trueup(["deploy", "--project", "fresh", "--build", "mkdir -p public", "--source"])
        .arg(paas.source("v1", "x"))
        .code(1)
        .run();
    assert!(broken.stderr.contains("answered 404"), "{}", broken.stderr);
    assert!(!paas.proxy.routes.join("fresh.yaml").exists(), "no route for a release that never passed");
    assert_eq!(paas.proxy.get("fresh.localhost", "/").0, 404);
}

#[test]
fn a_row_of_another_project_that_cannot_be_read_back_stops_no_deploy_nor_worker() {
    let paas = Paas::new("deploy-other-row");
    let id1 = id_of(&paas.deploy("notes", &paas.source("v1", "notes v1")).run());
    paas.trueup(["deploy", "--detach", "--project", "ledger", "--source"]).arg(paas.source("l1", "x")).run();
    // An operator's edit by hand leaves the other project's row unreadable.
    let raw = rusqlite::Connection::open(paas.db()).unwrap();
    assert_eq!(raw.execute("UPDATE deployments SET created_at = 'yesterday' WHERE project = 'ledger'", []).unwrap(), 1);
    drop(raw);
    // Each phase reads what it needs of its own project (is a newer release live, the
    // domain for the route and the check), and none of the row it cannot read.
    let v2 = paas.deploy("notes", &paas.source("v2", "notes v2")).run();
    let id2 = id_of(&v2);
    assert!(v2.stdout.ends_with(&format!("{id2} is live (ACTIVE)\n")), "{}", v2.stdout);
    assert_eq!(paas.proxy.get("notes.localhost", "/"), (200, Some(id2.clone()), "notes v2".to_owned()));
    // The unreadable row heads `ledger`'s queue: a worker says so, once, and runs the
    // other queues.
    let queued = paas.trueup(["deploy", "--detach", "--json", "--project", "notes", "--build", BUILD, "--source"]);
    let id3 = queued_id(&queued.arg(paas.source("v3", "notes v3")).run());
    let worked = paas.trueup(["work", "--once"]).run();
    assert!(worked.stdout.contains(&format!("{id3} is live (ACTIVE)")), "{}", worked.stdout);
    let waits = "column `created_at`: `yesterday` is not an RFC 3339 timestamp (expected e.g. `2025-10-02T12:00:00Z`): \
                 the queue of project `ledger` waits until the row is fixed";
    assert_eq!(worked.stderr.matches(waits).count(), 1, "{}", worked.stderr);
    assert_eq!(paas.proxy.get("notes.localhost", "/"), (200, Some(id3.clone()), "notes v3".to_owned()));
    let active = |id: String| (id, "ACTIVE".to_owned());
    assert_eq!(paas.deployments("notes"), [active(id1), active(id2), active(id3)]);
}

#[test]
fn a_queued_deployment_a_newer_live_release_supersedes_ends_failed_once_and_the_site_stays() {
    let paas = Paas::new("deploy-superseded");
    // Queued first (created earlier), then overtaken by a deploy that ran at once.
    let queued = paas.deploy("wiki", &paas.source("v1", "wiki v1")).args(["--detach", "--json"]);
    let id1 = queued_id(&queued.now("2025-10-02T12:00:00Z").run());
    let id2 = id_of(&paas.deploy("wiki", &paas.source("v2", "wiki v2")).run());
    // Running the older one would roll the site back: it fails, in the queue, saying why
    // once (no phase of it runs).
    let worked = paas.trueup(["work", "--once"]).within(Duration::from_secs(120)).code(1).run();
    let why = format!("superseded: `{id2}`, created after it, is already live");
    assert_eq!(worked.stderr, format!("error: {id1} ended in FAILED: failed in QUEUED: {why}\n"));
    assert!(!worked.stdout.contains("PULLING_SOURCE"), "{}", worked.stdout);
    let phase = |id: &str, phase: &str| (id.to_owned(), phase.to_owned());
    assert_eq!(paas.deployments("wiki"), [phase(&id1, "FAILED"), phase(&id2, "ACTIVE")]);
    assert_eq!(paas.proxy.get("wiki.localhost", "/"), (200, Some(id2.clone()), "wiki v2".to_owned()));
    let log = paas.trueup(["logs"]).arg(&id1).run().stdout;
    assert!(log.contains(&format!(" error QUEUED failed in QUEUED: {why}\n")), "{log}");
    paas.trueup(["plan", "--detailed-exitcode"]).run();
}

#[test]
fn a_newer_deployment_that_failed_supersedes_nothing_queued_before_it() {
    let paas = Paas::new("deploy-not-superseded");
    // Creation times are to the second: each deployment is created a second apart.
    let tick = || std::thread::sleep(Duration::from_millis(1100));
    let id1 = id_of(&paas.deploy("docs", &paas.source("v1", "docs v1")).run());
    tick();
    let id2 = queued_id(&paas.deploy("docs", &paas.source("v2", "docs v2")).args(["--detach", "--json"]).run());
    tick();
    // Newer than the queued one, but it never went live: the queued one still runs.
    let broken = paas.trueup(["deploy", "--project", "docs", "--build", "exit 3", "--source"]);
    let id3 = id_of(&broken.arg(paas.source("v3", "x")).code(1).run());
    paas.trueup(["work", "--once"]).within(Duration::from_secs(120)).run();
    let phase = |id: &str, phase: &str| (id.to_owned(), phase.to_owned());
    assert_eq!(paas.deployments("docs"), [phase(&id1, "ACTIVE"), phase(&id2, "ACTIVE"), phase(&id3, "FAILED")]);
    assert_eq!(paas.proxy.get("docs.localhost", "/"), (200, Some(id2), "docs v2".to_owned()));
}

#[test]
fn a_release_that_fails_its_check_once_exposed_puts_the_previous_one_back() {
    let paas = Paas::new("deploy-rollback");
    let id1 = id_of(&paas.deploy("forum", &paas.source("v1", "forum v1")).run());
    // A newer live release lost its folder: older than it, the first is the one to go
    // back to, past the newest live release that the store reads of each project.
    let lost = id_of(&paas.deploy("forum", &paas.source("lost", "forum lost")).run());
    let layout = paas.proxy.root.join("forum");
    std::fs::remove_dir_all(layout.join("deployments").join(&lost)).unwrap();
    // The new release is exposed (its links and route switched), then the deploy is
    // killed and the release loses its page before the check through the proxy.
    let (mut child, id2) = paused_deploy(&paas, "forum", &paas.source("v2", "forum v2"), "HEALTH_CHECK");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(std::fs::read_link(layout.join("current")).unwrap(), layout.join("deployments").join(&id2));
    std::fs::remove_file(layout.join("deployments").join(&id2).join("public/index.html")).unwrap();
    // The resumed check fails each attempt: the deployment fails, and the site is put
    // back on the previous release, links and route.
    let applied = paas.trueup(["apply", "--health-timeout", "1s"]).within(Duration::from_secs(120)).code(1).run();
    assert!(applied.stdout.contains(&format!("rolled back: the site is {id1} again")), "{}", applied.stdout);
    assert!(
        applied.stderr.contains(&format!("error: {id2} ended in FAILED: failed in HEALTH_CHECK: ")),
        "{}",
        applied.stderr
    );
    assert_eq!(std::fs::read_link(layout.join("current")).unwrap(), layout.join("deployments").join(&id1));
    // Traefik reads the route file back within moments.
    paas.proxy.until("forum.localhost", &[], &id1);
    assert_eq!(paas.proxy.get("forum.localhost", "/"), (200, Some(id1.clone()), "forum v1".to_owned()));
    let phase = |id: &str, phase: &str| (id.to_owned(), phase.to_owned());
    assert_eq!(paas.deployments("forum"), [phase(&id1, "ACTIVE"), phase(&lost, "ACTIVE"), phase(&id2, "FAILED")]);
    paas.trueup(["plan", "--detailed-exitcode"]).run();
}

/// The built-in spec, but a deployment may leave the queue only when its project has a
/// release to roll back to: a project's first deployment can never leave it.
pub fn spec_with_a_queue_not_left(scratch: &Scratch) -> PathBuf {
    let spec = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/deployment.yaml")).unwrap();
    let from = "done: IN_PROGRESS  # a worker took it: waiting is done";
    assert!(spec.contains(from));
    let file = scratch.join("stuck-queue.yaml");
    std::fs::write(&file, spec.replace(from, "done: { target: IN_PROGRESS, guard: has_previous_release }")).unwrap();
    file
}

#[test]
fn a_worker_tells_a_run_that_errs_once_and_does_not_spin_on_it() {
    let paas = Paas::new("deploy-errs");
    let spec = spec_with_a_queue_not_left(&paas.scratch);
    let id = queued_id(&paas.deploy("first", &paas.source("v1", "x")).args(["--detach", "--json"]).run());
    let error = "state `QUEUED` accepts event `done`, but none of its guards holds (`has_previous_release`)";
    // Once: the run errs, is told, and the worker ends.
    let once = paas.trueup(["work", "--once", "--spec"]).arg(&spec).within(Duration::from_secs(120)).code(1).run();
    assert_eq!(once.stderr.matches(&format!("error: {id}: ")).count(), 1, "{}", once.stderr);
    assert!(once.stderr.contains(error), "{}", once.stderr);
    // A worker that keeps running leaves it alone for 30 s, rather than taking it again
    // as fast as it can, then tries again (the cause may be gone: a disk freed).
    let mut worker = paas.trueup(["work", "--spec"]).arg(&spec).command();
    let worker = worker.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(33));
    // SAFETY: a plain kill(2) of the child just started.
    assert_eq!(unsafe { libc::kill(i32::try_from(worker.id()).unwrap(), libc::SIGTERM) }, 0);
    let out = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(&format!("error: {id}: ")).count(), 2, "{stderr}");
    assert!(stderr.contains(&format!("{id} is left where it is, not taken again for 30s")), "{stderr}");
    let runs = String::from_utf8_lossy(&out.stdout).matches(&format!("{id}: QUEUED")).count();
    assert_eq!(runs, 2, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(paas.deployments("first"), [(id, "QUEUED".to_owned())], "left where it is");
}

#[test]
fn bad_input_is_a_clear_error_that_leaves_the_live_release_untouched() {
    let paas = Paas::new("deploy-bad");
    let id1 = id_of(&paas.deploy("tidy", &paas.source("v1", "tidy v1")).run());
    let live = || paas.proxy.get("tidy.localhost", "/");
    let missing = paas.scratch.join("nowhere");
    let err = paas.deploy("tidy", &missing).code(1).run().stderr;
    assert!(err.contains(&format!("the upload `{}` does not exist", missing.display())), "{err}");
    let err = paas.deploy("a/b", &paas.source("v2", "x")).code(1).run().stderr;
    assert!(err.contains("project `a/b` is not a plain name"), "{err}");
    let err = paas
        .trueup([
            "deploy",
            "--project",
            "tidy",
            "--build",
            "echo compiling; echo 'syntax error' >&2; exit 3",
            "--source",
        ])
        .arg(paas.source("v3", "x"))
        .code(1)
        .run()
        .stderr;
    assert!(err.contains("failed in BUILDING"), "{err}");
    assert!(err.contains("syntax error"), "the last lines of the build are in the reason: {err}");
    let slow = paas
        .trueup(["deploy", "--project", "tidy", "--build", "sleep 100", "--build-timeout", "2s", "--source"])
        .arg(paas.source("v4", "x"))
        .code(1)
        .run()
        .stderr;
    assert!(slow.contains("past its limit of 2s"), "{slow}");
    let git = paas
        .trueup(["deploy", "--project", "tidy", "--type", "git", "--source"])
        .arg(format!("file://{}", paas.scratch.join("no-repo").display()))
        .code(1)
        .run()
        .stderr;
    assert!(git.contains("failed in PULLING_SOURCE"), "{git}");
    let evil = paas.scratch.join("evil.tar.gz");
    tarball(&evil, &[Entry::File("index.html", "x", 0o644), Entry::File("../../etc/owned", "x", 0o644)]);
    let err = paas.deploy("tidy", &evil).code(1).run().stderr;
    assert!(err.contains("failed in PULLING_SOURCE") && err.contains("../../etc/owned"), "{err}");
    let linked = paas.scratch.join("linked.tar.gz");
    tarball(&linked, &[Entry::File("index.html", "x", 0o644), Entry::Symlink("passwd", "/etc/passwd")]);
    let err = paas.deploy("tidy", &linked).code(1).run().stderr;
    assert!(err.contains("failed in PULLING_SOURCE") && err.contains("passwd"), "{err}");
    let repo = paas.scratch.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap();
        assert!(ok.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&ok.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("index.html"), "from git").unwrap();
    git(&["add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"]);
    let err = paas
        .trueup(["deploy", "--project", "tidy", "--ref", "no-such-branch", "--build", BUILD, "--source"])
        .arg(&repo)
        .code(1)
        .run()
        .stderr;
    assert!(err.contains("failed in PULLING_SOURCE") && err.contains("no-such-branch"), "{err}");
    assert_eq!(live(), (200, Some(id1.clone()), "tidy v1".to_owned()), "the live release is untouched");
    // The same repository at a branch that exists deploys.
    let from_git =
        paas.trueup(["deploy", "--project", "tidy", "--ref", "main", "--build", BUILD, "--source"]).arg(&repo).run();
    assert_eq!(live(), (200, Some(id_of(&from_git)), "from git".to_owned()));
    // An event the phase does not accept names those it does.
    let err = paas.trueup(["event"]).arg(&id1).arg("cancel").code(1).run().stderr;
    assert!(err.contains("is in ACTIVE, which does not accept event `cancel`; it accepts none: it is final"), "{err}");
    let queued = queued_id(&paas.deploy("tidy", &paas.source("v5", "x")).args(["--detach", "--json"]).run());
    let err = paas.trueup(["event"]).arg(&queued).arg("deploy").code(1).run().stderr;
    assert!(err.contains("is in QUEUED, which does not accept event `deploy`; it accepts `done`, `cancel`"), "{err}");
    let out = paas.trueup(["event"]).arg(&queued).arg("cancel").run().stdout;
    assert!(out.contains("cancel -> CANCELLED"), "{out}");
    assert_eq!(live().2, "from git");
}

/// Requests through Traefik in a loop, on another thread, recording every answer that is
/// not one of the expected bodies.
pub struct Serving {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Serving {
    fn watch(proxy: &Arc<Proxy>, host: &'static str, bodies: &[&str]) -> Serving {
        Self::watching(proxy, host, Arc::new(std::sync::Mutex::new(bodies.iter().map(|b| (*b).to_owned()).collect())))
    }

    fn watching(proxy: &Arc<Proxy>, host: &'static str, bodies: Arc<std::sync::Mutex<Vec<String>>>) -> Serving {
        Self::accepting(proxy, host, move |body| bodies.lock().unwrap().iter().any(|b| b == body))
    }

    /// Requests `host`'s `/` every few milliseconds; an answer other than 200 with a body
    /// `accept` takes is recorded, with the deployment that answered.
    pub fn accepting(
        proxy: &Arc<Proxy>,
        host: &'static str,
        accept: impl Fn(&str) -> bool + Send + 'static,
    ) -> Serving {
        let proxy = Arc::clone(proxy);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut count, mut wrong) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                let (status, id, body) = proxy.get(host, "/");
                count += 1;
                if status != 200 || !accept(&body) {
                    wrong.push(format!("{status} from {id:?}: {body:?}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (count, wrong)
        });
        Serving { stop, thread }
    }

    pub fn stop_and_check(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (count, wrong) = self.thread.join().unwrap();
        assert!(
            wrong.is_empty(),
            "{} of {count} requests got something else: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert!(count > 0);
        count
    }
}

#[test]
fn ten_deployments_in_a_row_lose_no_request() {
    let paas = Paas::new("deploy-ten");
    paas.deploy("steady", &paas.source("v0", "steady 0")).run();
    let bodies = Arc::new(std::sync::Mutex::new(vec!["steady 0".to_owned()]));
    let serving = Serving::watching(&paas.proxy, "steady.localhost", Arc::clone(&bodies));
    let mut last = String::new();
    for n in 1..=10 {
        let body = format!("steady {n}");
        bodies.lock().unwrap().push(body.clone());
        last = id_of(&paas.deploy("steady", &paas.source(&format!("v{n}"), &body)).run());
    }
    let requests = serving.stop_and_check();
    assert_eq!(paas.proxy.get("steady.localhost", "/"), (200, Some(last), "steady 10".to_owned()));
    assert!(requests > 100, "only {requests} requests were made");
}

/// Starts a deploy that pauses at `pause` (`PHASE` or `PHASE:after`), and waits until it
/// is there: its log says so.
// The caller kills and waits for the child it gets back.
#[allow(clippy::zombie_processes)]
fn paused_deploy(paas: &Paas, project: &str, source: &Path, pause: &str) -> (Child, String) {
    let mut command = paas.deploy(project, source).env("TRUEUP_TEST_PAUSE", pause).command();
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let (phase, when) = pause.split_once(':').unwrap_or((pause, "before"));
    let said = format!("TRUEUP_TEST_PAUSE: paused {when} {phase}");
    let started = Instant::now();
    loop {
        let conn = rusqlite::Connection::open(paas.db()).unwrap();
        let paused: Option<String> = conn
            .query_row("SELECT deployment FROM deployment_logs WHERE message = ?1 ORDER BY id DESC", [&said], |r| {
                r.get(0)
            })
            .ok();
        if let Some(id) = paused.filter(|id| paas.deployments(project).last().is_some_and(|(last, _)| last == id)) {
            return (child, id);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the deploy never paused {when} {phase}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_deploy_killed_in_any_phase_is_resumed_by_the_next_apply_and_the_site_never_fails() {
    let paas = Paas::new("deploy-kill");
    paas.deploy("phoenix", &paas.source("v0", "phoenix 0")).run();
    let bodies = Arc::new(std::sync::Mutex::new(vec!["phoenix 0".to_owned()]));
    let serving = Serving::watching(&paas.proxy, "phoenix.localhost", Arc::clone(&bodies));
    let pauses = [
        "QUEUED",
        "PULLING_SOURCE",
        "BUILDING",
        "BUILDING:after",
        "COPYING_FILES:after",
        "CREATING_SYMLINKS",
        "CREATING_SYMLINKS:after",
        "UPDATING_ROUTES",
        "HEALTH_CHECK",
    ];
    let current = paas.proxy.root.join("phoenix/current");
    for (n, pause) in pauses.iter().enumerate() {
        let body = format!("phoenix {}", n + 1);
        bodies.lock().unwrap().push(body.clone());
        let (mut child, id) = paused_deploy(&paas, "phoenix", &paas.source(&format!("v{}", n + 1), &body), pause);
        child.kill().unwrap();
        child.wait().unwrap();
        // No half-copied release is ever `current`.
        let target = std::fs::read_link(&current).unwrap();
        assert!(target.join(".trueup-release").is_file(), "{pause}: current is {}", target.display());
        // No --now: the dead claim is noticed at once.
        let applied = paas.trueup(["apply"]).run();
        assert!(applied.stdout.contains(&format!("{id} is live (ACTIVE)")), "{pause}:\n{}", applied.stdout);
        assert_eq!(paas.proxy.get("phoenix.localhost", "/"), (200, Some(id.clone()), body), "{pause}");
        paas.trueup(["plan", "--detailed-exitcode"]).run();
    }
    serving.stop_and_check();
}

#[test]
fn a_worker_that_cannot_start_threads_says_so_and_leaves_its_deployments_to_resume() {
    let paas = Paas::new("deploy-no-threads");
    let ids: Vec<String> = ["alpha", "beta"]
        .iter()
        .map(|project| {
            let source = paas.source(project, &format!("{project} 1"));
            queued_id(&paas.deploy(project, &source).args(["--detach", "--json"]).run())
        })
        .collect();
    // A machine at its limit of processes: the worker's builds cannot start.
    let mut worker = paas.trueup(["work", "--once", "--jobs", "2"]).command();
    let out = crate::seccomp::without_threads(&mut worker).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let phase = |id: &str| -> String {
        let conn = rusqlite::Connection::open(paas.db()).unwrap();
        conn.query_row("SELECT phase FROM deployments WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    for id in &ids {
        let said = format!("{id} left in BUILDING to be resumed: the build command could not be started in `");
        assert!(stderr.contains(&said), "{stderr}");
        assert_eq!(phase(id), "BUILDING", "not failed for a passing want of processes");
    }
    // Once the machine has room again, the next worker runs them to the end.
    paas.trueup(["work", "--once", "--jobs", "2"]).run();
    for (id, project) in ids.iter().zip(["alpha", "beta"]) {
        assert_eq!(phase(id), "ACTIVE");
        assert_eq!(
            paas.proxy.get(&format!("{project}.localhost"), "/"),
            (200, Some(id.clone()), format!("{project} 1"))
        );
    }
}

#[test]
fn two_workers_never_run_the_same_deployment_nor_two_of_a_project_at_once() {
    let paas = Paas::new("deploy-workers");
    let mut queued = BTreeMap::new();
    for n in 0..3 {
        for project in ["alpha", "beta"] {
            let source = paas.source(&format!("{project}{n}"), &format!("{project} {n}"));
            queued.insert(queued_id(&paas.deploy(project, &source).args(["--detach", "--json"]).run()), project);
        }
    }
    let workers: Vec<Child> =
        (0..2).map(|_| paas.trueup(["work", "--once", "--jobs", "2"]).command().spawn().unwrap()).collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let conn = rusqlite::Connection::open(paas.db()).unwrap();
    for id in queued.keys() {
        let phase: String = conn.query_row("SELECT phase FROM deployments WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        // Each ran once: one run line, whichever worker it was.
        let runs: i64 = conn
            .query_row(
                "SELECT count(*) FROM deployment_logs WHERE deployment = ?1 AND message LIKE 'run by %'",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((phase.as_str(), runs), ("ACTIVE", 1), "{id}");
    }
    // Within a project, one deployment's log rows never interleave with another's.
    for project in ["alpha", "beta"] {
        let mut stmt = conn
            .prepare(
                "SELECT l.deployment FROM deployment_logs l JOIN deployments d ON d.id = l.deployment
                 WHERE d.project = ?1 ORDER BY l.id",
            )
            .unwrap();
        let order: Vec<String> = stmt.query_map([project], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let mut runs: Vec<&String> = order.iter().collect();
        runs.dedup();
        // The queue lines come first, then each deployment's run in one block, oldest first.
        let blocks: Vec<&&String> = runs.iter().skip(3).collect();
        assert_eq!(blocks.len(), 3, "{project}: {runs:?}");
    }
}

#[test]
fn sigterm_stops_the_whole_build_and_the_next_apply_resumes_the_deployment_at_once() {
    let paas = Paas::new("deploy-sigterm");
    let source = paas.source("v1", "calm v1");
    let pids = paas.scratch.join("pids");
    // The build starts a grandchild and records both; the first run waits, a resumed one
    // (the file is there) finishes.
    let build = format!(
        "if [ -e {p} ]; then {BUILD}; else echo $$ > {p}.tmp; sleep 300 & echo $! >> {p}.tmp; mv {p}.tmp {p}; wait; fi",
        p = pids.display()
    );
    let mut child = paas.trueup(["deploy", "--project", "calm", "--build", &build, "--source"]).arg(&source).command();
    child.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = child.spawn().unwrap();
    let started = Instant::now();
    while !pids.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the build never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group: Vec<i32> = std::fs::read_to_string(&pids).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    crate::crash::signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM exits 143");
    for pid in group {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie nobody reaps here: either way it runs no more.
        assert!(state.is_empty() || state.contains(") Z "), "build process {pid} still runs: {state}");
    }
    let (id, phase) = paas.deployments("calm").pop().unwrap();
    assert_eq!(phase, "BUILDING", "left in its phase");
    let log = paas.trueup(["logs"]).arg(&id).run().stdout;
    assert!(log.contains("stopped in BUILDING: interrupted; it resumes from there"), "{log}");
    // No --now, no waiting for BUILDING's 30 minutes: the stopped worker's claim died with it.
    let applied = paas.trueup(["apply"]).run();
    assert!(applied.stdout.contains(&format!("{id} is live (ACTIVE)")), "{}", applied.stdout);
    assert_eq!(paas.proxy.get("calm.localhost", "/"), (200, Some(id), "calm v1".to_owned()));
}

#[test]
fn the_readme_walk_through_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme.split("<!-- walk-through -->\n```sh\n").nth(1).expect("the README has the walk-through");
    let block = block.split("\n```\n").next().unwrap();
    // The one line a test cannot run as written: cargo is running this test. The binary it
    // built is the one the line would put on the PATH.
    let build = "cargo build -q && export PATH=$PWD/target/debug:$PATH";
    assert!(block.starts_with(build), "the walk-through starts with the build:\n{block}");
    let bin = Path::new(env!("CARGO_BIN_EXE_trueup")).parent().unwrap();
    let script = block.replacen(build, &format!("export PATH={}:$PATH", bin.display()), 1);
    let scratch = Scratch::new("walk-through");
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("W", scratch.join("w"))
        .env("TRAEFIK_ADDR", port())
        .env("STATIC_ADDR", port())
        .envs(std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with("TRUEUP_")))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        // Whatever the block started must not outlive it.
        let _ = std::process::Command::new("bash")
            .args(["scripts/proxy.sh", "stop"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("STATE_DIR", scratch.join("w/proxy"))
            .output();
    }
    assert!(out.status.success(), "the walk-through failed:\n{said}");
    assert!(said.contains("Hello, version 3"), "{said}");
    assert!(said.contains("is live (ACTIVE)"), "{said}");
}
