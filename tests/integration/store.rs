//! The SQLite store against real database files in a temp dir, and the real-machine
//! observer against real folders and symlinks.

use std::collections::BTreeMap;
use std::path::Path;

use trueup::model::{Claim, Deployment, DeploymentType, Project, Service, Source};
use trueup::model::{LogEntry, LogLevel};
use trueup::store::{
    Fence, Held, Holder, JournalStatus, Opened, PhaseUpdate, SCHEMA_VERSION, Store, StoreError, TookOver, Unlocked,
};
use trueup::time::{Duration, Timestamp};

pub use crate::scratch::Scratch;

pub fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

pub fn project(id: &str) -> Project {
    Project { id: id.into(), active: true, domain: None, services: vec![Service { id: "web".into(), primary: true }] }
}

pub fn deployment(id: &str, project: &str, phase: &str) -> Deployment {
    Deployment {
        id: id.into(),
        project: project.into(),
        service: None,
        kind: DeploymentType::Upload,
        phase: phase.into(),
        phase_updated_at: None,
        heartbeat_at: None,
        attempts: 0,
        finished_at: None,
        source: Source::default(),
        metadata: BTreeMap::new(),
        owner: None,
        created_at: None,
    }
}

fn open(path: &Path) -> Store {
    Store::open(path).unwrap().0
}

/// Every file in `dir` with its length and a digest of its bytes: a database and its
/// `-wal`/`-shm` side files.
fn snapshot(dir: &Path) -> BTreeMap<String, (usize, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            let digest =
                bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            (e.file_name().to_string_lossy().into_owned(), (bytes.len(), digest))
        })
        .collect()
}

#[track_caller]
fn check_refused(path: &Path, want: impl Fn(&StoreError) -> bool) {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let err = Store::open(path).expect_err("must be refused");
    assert!(want(&err), "unexpected error: {err}");
    assert_eq!(snapshot(dir), before, "a refused file must be left byte for byte as it was");
}

#[test]
fn migrations_apply_once_and_reopening_is_a_no_op() {
    let dir = Scratch::new("migrate");
    let db = dir.join("state.db");
    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Created);
    drop(store);
    let before = snapshot(&dir.0);
    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Existing);
    drop(store);
    assert_eq!(snapshot(&dir.0), before, "reopening an up-to-date database changes no byte");

    let raw = rusqlite::Connection::open(&db).unwrap();
    let versions: Vec<(u32, String)> = raw
        .prepare("SELECT version, name FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        versions,
        vec![
            (1, "init".to_owned()),
            (2, "live phase index".to_owned()),
            (3, "journal skipped status".to_owned()),
            (4, "lease holder host and pid".to_owned()),
            (5, "worker processes and settings".to_owned()),
            (6, "release window indexes".to_owned()),
            (7, "daemon lease".to_owned()),
            (8, "backwards releases index".to_owned())
        ]
    );
    assert_eq!(SCHEMA_VERSION, 8);
    let mode: String = raw.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let app: i32 = raw.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    assert_eq!(app, trueup::store::APPLICATION_ID);
}

#[test]
fn an_empty_file_becomes_a_database() {
    let dir = Scratch::new("empty");
    let db = dir.join("state.db");
    std::fs::write(&db, b"").unwrap();
    assert_eq!(Store::open(&db).unwrap().1, Opened::Created);
}

#[test]
fn a_database_from_a_newer_trueup_is_refused_untouched() {
    let dir = Scratch::new("newer");
    let db = dir.join("state.db");
    drop(open(&db));
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (42, 'future', 'x')", []).unwrap();
    drop(raw);
    check_refused(&db, |e| matches!(e, StoreError::NewerSchema { found: 42, known: SCHEMA_VERSION, .. }));

    // A newer trueup also stamps `user_version`: refused from the header alone.
    let db = dir.join("stamped.db");
    drop(open(&db));
    rusqlite::Connection::open(&db).unwrap().pragma_update(None, "user_version", 9).unwrap();
    check_refused(&db, |e| matches!(e, StoreError::NewerSchema { found: 9, known: SCHEMA_VERSION, .. }));
}

#[test]
fn a_database_from_an_older_trueup_is_migrated_keeping_its_rows() {
    let dir = Scratch::new("older");
    let db = dir.join("state.db");
    let store = open(&db);
    store.upsert_projects(&[project("p1")]).unwrap();
    store.insert_deployment(&deployment("d1", "p1", "BUILDING"), t("2025-10-02T12:00:00Z")).unwrap();
    drop(store);
    // Make it what trueup 1 left: schema 1, without the live-phase index.
    let raw = rusqlite::Connection::open(&db).unwrap();
    lease_of_schema_3(&raw);
    journal_of_schema_2(&raw);
    raw.execute_batch(
        "DROP INDEX deployments_by_phase; DROP INDEX deployments_claimed; DROP INDEX journal_planned;
         DELETE FROM schema_migrations WHERE version >= 2; PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(raw);
    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Migrated { from: 1, to: SCHEMA_VERSION });
    assert_eq!(store.load().unwrap().1.len(), 1, "the rows are kept");
    drop(store);
    let raw = rusqlite::Connection::open(&db).unwrap();
    let index: i64 = raw
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index'
             AND name IN ('deployments_by_phase', 'deployments_newest', 'deployments_backwards', 'deployments_created')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 3, "the indexes of schemas 2, 6 and 8, and not the one 8 dropped");
}

/// Takes migration 8 out: the finished releases by creation time in one index, not only
/// those that finished before they were created.
pub fn backwards_index_of_schema_7(raw: &rusqlite::Connection) {
    raw.execute_batch(
        "DROP INDEX deployments_backwards;
         CREATE INDEX deployments_created ON deployments (project, created_at, phase) WHERE finished_at IS NOT NULL;
         DELETE FROM schema_migrations WHERE version = 8; PRAGMA user_version = 7;",
    )
    .unwrap();
}

/// Takes migrations 7 and 8 out: the lease table as schema 6 had it, the `apply` row only.
fn daemon_lease_of_schema_6(raw: &rusqlite::Connection) {
    backwards_index_of_schema_7(raw);
    raw.execute_batch(
        "CREATE TABLE lease_v6 (
             name  TEXT PRIMARY KEY NOT NULL CHECK (name = 'apply'),
             owner TEXT,
             until TEXT,
             token INTEGER NOT NULL DEFAULT 0,
             host TEXT,
             pid INTEGER,
             CHECK ((owner IS NULL) = (until IS NULL))
         ) STRICT;
         INSERT INTO lease_v6 SELECT name, owner, until, token, host, pid FROM lease WHERE name = 'apply';
         DROP TABLE lease; ALTER TABLE lease_v6 RENAME TO lease;
         DELETE FROM schema_migrations WHERE version = 7; PRAGMA user_version = 6;",
    )
    .unwrap();
}

/// Takes migrations 6 to 8 out: no release window indexes, no daemon lease.
fn release_window_of_schema_5(raw: &rusqlite::Connection) {
    daemon_lease_of_schema_6(raw);
    raw.execute_batch(
        "DROP INDEX deployments_newest; DROP INDEX deployments_created;
         DELETE FROM schema_migrations WHERE version = 6; PRAGMA user_version = 5;",
    )
    .unwrap();
}

#[test]
fn a_release_recorded_as_finished_before_it_was_created_is_read_when_it_may_supersede() {
    // The clock went back between d4's creation and its end: by the rows, it finished
    // before it was created, and before d1 (still open) was created. It is not among
    // the three newest, yet it was created after d1, so it may supersede it.
    let dir = Scratch::new("backwards");
    let db = dir.join("state.db");
    let store = open(&db);
    store.upsert_projects(&[project("p1")]).unwrap();
    let at = |id: &str, created: &str, finished: Option<&str>| {
        let mut d = deployment(id, "p1", if finished.is_some() { "ACTIVE" } else { "BUILDING" });
        d.created_at = Some(t(created));
        d.finished_at = finished.map(t);
        d
    };
    let rows = [
        at("d1", "2025-10-01T10:00:00Z", None),
        at("d4", "2025-10-01T11:00:00Z", Some("2025-10-01T09:00:00Z")),
        at("d5", "2025-10-01T12:00:00Z", Some("2025-10-01T12:30:00Z")),
        at("d6", "2025-10-01T13:00:00Z", Some("2025-10-01T13:30:00Z")),
        at("d7", "2025-10-01T14:00:00Z", Some("2025-10-01T14:30:00Z")),
        // Finished before d1 was created, and created before it: history.
        at("d0", "2025-10-01T08:00:00Z", Some("2025-10-01T08:30:00Z")),
    ];
    store.insert_deployments(&rows, t("2025-10-01T08:00:00Z")).unwrap();
    drop(store);
    let read = |schema: u32| {
        let (store, version) = Store::open_read_only(&db).unwrap();
        assert_eq!(version, schema);
        let (_, read) = store.load_reconcilable(&["ACTIVE"]).unwrap();
        read.into_iter().map(|d| d.id).collect::<Vec<_>>()
    };
    assert_eq!(read(SCHEMA_VERSION), ["d1", "d4", "d5", "d6", "d7"]);
    // Schema 7 found it through its index of every finished release by creation time.
    backwards_index_of_schema_7(&rusqlite::Connection::open(&db).unwrap());
    assert_eq!(read(7), ["d1", "d4", "d5", "d6", "d7"]);
}

#[test]
fn of_a_project_the_store_does_not_list_only_open_and_claimed_rows_are_read() {
    // p9's rows were written with the foreign keys off (an operator's sqlite3 shell): its
    // releases, a backwards one and a newer one among them, may supersede its open
    // deployment, but no project p9 has links to heal. Only its open and claimed rows are
    // read, which the plan reports as belonging to an unknown project; of p1's same rows,
    // the open one, the backwards release and the newer one are read.
    let dir = Scratch::new("unlisted");
    let db = dir.join("state.db");
    let store = open(&db);
    store.upsert_projects(&[project("p1"), project("p9")]).unwrap();
    let mut rows = Vec::new();
    for p in ["p1", "p9"] {
        let at = |id: &str, created: &str, finished: Option<&str>| {
            let mut d = deployment(&format!("{p}-{id}"), p, if finished.is_some() { "ACTIVE" } else { "BUILDING" });
            d.created_at = Some(t(created));
            d.finished_at = finished.map(t);
            d
        };
        rows.extend([
            at("d1", "2025-10-01T10:00:00Z", None),
            at("d2", "2025-10-01T07:00:00Z", Some("2025-10-01T07:30:00Z")),
            at("d3", "2025-10-01T08:00:00Z", Some("2025-10-01T08:30:00Z")),
            // Created after d1, finished before it was created: backwards.
            at("d4", "2025-10-01T11:00:00Z", Some("2025-10-01T09:00:00Z")),
            // Created after d1 and finished after it: a newer release, and the window.
            at("d5", "2025-10-01T12:00:00Z", Some("2025-10-01T12:30:00Z")),
        ]);
    }
    rows.last_mut().unwrap().owner = Some(Claim::new("w", t("2025-10-02T12:00:00Z")));
    store.insert_deployments(&rows, t("2025-10-01T06:00:00Z")).unwrap();
    drop(store);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             DELETE FROM services WHERE project = 'p9'; DELETE FROM projects WHERE id = 'p9';",
        )
        .unwrap();
    let (store, _) = Store::open_read_only(&db).unwrap();
    let (projects, read) = store.load_reconcilable(&["ACTIVE"]).unwrap();
    assert_eq!(projects.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["p1"]);
    let read: Vec<&str> = read.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(read, ["p1-d1", "p1-d4", "p1-d5", "p9-d1", "p9-d5"]);
    let of_p9 = store.reconcilable_of("p9", &["ACTIVE"]).unwrap();
    assert_eq!(of_p9.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["p9-d1", "p9-d5"]);
}

#[test]
fn a_schema_5_claim_is_read_with_its_workers_process_and_a_schema_4_one_without() {
    for (schema, process) in [(5, true), (4, false)] {
        let dir = Scratch::new("schema5-claim");
        let db = dir.join("state.db");
        let store = open(&db);
        store.upsert_projects(&[project("p1")]).unwrap();
        store.insert_deployments(&[deployment("d1", "p1", "BUILDING")], t("2025-10-02T12:00:00Z")).unwrap();
        drop(store);
        let raw = rusqlite::Connection::open(&db).unwrap();
        raw.execute_batch(
            "UPDATE deployments SET owner = 'w1', lease_until = '2025-10-02T12:05:00Z',
               claim_host = 'h', claim_pid = 7, claim_start = 9 WHERE id = 'd1'",
        )
        .unwrap();
        if schema == 5 {
            release_window_of_schema_5(&raw)
        } else {
            workers_of_schema_4(&raw)
        }
        drop(raw);

        // Read as it is, without migrating.
        let (store, version) = Store::open_read_only(&db).unwrap();
        assert_eq!(version, schema);
        let (_, deployments) = store.load_reconcilable(&["ACTIVE"]).unwrap();
        assert_eq!(store.reconcilable_of("p1", &["ACTIVE"]).unwrap(), deployments, "schema {schema}");
        let claim = deployments[0].owner.as_ref().expect("the claim is read");
        assert_eq!(claim.owner, "w1", "schema {schema}");
        let seen = claim.process.as_ref().map(|p| (p.host.as_str(), p.pid, p.started));
        assert_eq!(seen, process.then_some(("h", 7, Some(9))), "schema {schema}");
    }
}

/// Takes migrations 5 to 8 out: claims without their worker's process, no settings.
fn workers_of_schema_4(raw: &rusqlite::Connection) {
    release_window_of_schema_5(raw);
    raw.execute_batch(
        "DROP INDEX deployments_queue; DROP TABLE settings;
         ALTER TABLE deployments DROP COLUMN claim_host; ALTER TABLE deployments DROP COLUMN claim_pid;
         ALTER TABLE deployments DROP COLUMN claim_start;
         DELETE FROM schema_migrations WHERE version = 5; PRAGMA user_version = 4;",
    )
    .unwrap();
}

/// Takes migrations 4 to 8 out: the lease row without its holder's host and process.
fn lease_of_schema_3(raw: &rusqlite::Connection) {
    workers_of_schema_4(raw);
    raw.execute_batch(
        "ALTER TABLE lease DROP COLUMN host; ALTER TABLE lease DROP COLUMN pid;
         DELETE FROM schema_migrations WHERE version = 4; PRAGMA user_version = 3;",
    )
    .unwrap();
}

#[test]
fn a_schema_3_lease_is_migrated_keeping_its_holder_and_waited_for() {
    let dir = Scratch::new("schema3");
    let db = dir.join("state.db");
    drop(open(&db));
    let raw = rusqlite::Connection::open(&db).unwrap();
    lease_of_schema_3(&raw);
    // An apply of trueup 3 holds the lease: no host, no process.
    raw.execute_batch(
        "UPDATE lease SET owner = 'trueup-apply@h:7', until = '2025-10-02T12:01:00Z', token = 5 WHERE name = 'apply'",
    )
    .unwrap();
    drop(raw);

    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Migrated { from: 3, to: SCHEMA_VERSION });
    let held = store.lease_held().unwrap().unwrap();
    assert_eq!(
        held,
        Held { owner: "trueup-apply@h:7".to_owned(), until: t("2025-10-02T12:01:00Z"), host: None, pid: None }
    );
    // Its process is unknown: it is waited for until it lapses, whatever the check says.
    let me = Holder { owner: "b", host: "h", pid: 8 };
    let now = t("2025-10-02T12:00:00Z");
    let err = store.acquire_lease_as(me, now, Duration::from_secs(60), &|_| false).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err}");
    let (lease, took_over) =
        store.acquire_lease_as(me, t("2025-10-02T12:01:00Z"), Duration::from_secs(60), &|_| false).unwrap();
    assert_eq!(lease.token, 6, "the token is kept and grows");
    assert!(matches!(took_over, Some(TookOver::Lapsed(_))));
    drop(store);
    let before = snapshot(&dir.0);
    assert_eq!(Store::open(&db).unwrap().1, Opened::Existing);
    assert_eq!(snapshot(&dir.0), before, "once migrated, opening changes no byte");
}

/// Rebuilds the journal as schema 1 and 2 had it (the table of `0001_init.sql`, whose
/// CHECK knows no `skipped`), and takes migration 3 out of the history.
fn journal_of_schema_2(raw: &rusqlite::Connection) {
    let init = include_str!("../../src/store/migrations/0001_init.sql");
    let start = init.find("CREATE TABLE journal (").unwrap();
    let end = start + init[start..].find(") STRICT;").unwrap() + ") STRICT;".len();
    raw.execute_batch(&format!(
        "DROP TABLE journal; {}
         CREATE INDEX journal_planned ON journal (run) WHERE status = 'planned';
         DELETE FROM schema_migrations WHERE version = 3; PRAGMA user_version = 2;",
        &init[start..end]
    ))
    .unwrap();
}

#[test]
fn a_schema_2_journal_is_migrated_and_its_old_skips_become_skipped() {
    let dir = Scratch::new("schema2");
    let db = dir.join("state.db");
    drop(open(&db));
    let raw = rusqlite::Connection::open(&db).unwrap();
    lease_of_schema_3(&raw);
    journal_of_schema_2(&raw);
    // As trueup 2 wrote them: a skip was `failed` with a `skipped: ` prefix.
    raw.execute_batch(
        "INSERT INTO journal (run, seq, action, status, error, at, token) VALUES
           ('r1', 0, '{}', 'done', NULL, '2025-10-02T12:00:01Z', 1),
           ('r1', 1, '{}', 'failed', 'permission denied', '2025-10-02T12:00:02Z', 1),
           ('r1', 2, '{}', 'failed', 'skipped: left to its worker: held by `w`', '2025-10-02T12:00:03Z', 1),
           ('r2', 0, '{}', 'planned', NULL, '2025-10-02T13:00:00Z', 2);",
    )
    .unwrap();
    let refused = raw.execute(
        "INSERT INTO journal (run, seq, action, status, at, token) VALUES ('r3', 0, '{}', 'skipped', 'x', 3)",
        [],
    );
    assert!(refused.is_err(), "schema 2 knows no `skipped`");
    drop(raw);

    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Migrated { from: 2, to: SCHEMA_VERSION });
    let rows: Vec<_> = store.journal("r1").unwrap().into_iter().map(|e| (e.seq, e.status, e.error, e.token)).collect();
    assert_eq!(
        rows,
        vec![
            (0, JournalStatus::Done, None, 1),
            (1, JournalStatus::Failed, Some("permission denied".to_owned()), 1),
            (2, JournalStatus::Skipped, Some("left to its worker: held by `w`".to_owned()), 1),
        ]
    );
    let open_runs: Vec<_> = store.open_runs().unwrap().into_iter().map(|r| (r.run, r.unfinished)).collect();
    assert_eq!(open_runs, vec![("r2".to_owned(), 1)], "a planned row keeps its run open, as before");
    drop(store);
    let before = snapshot(&dir.0);
    assert_eq!(Store::open(&db).unwrap().1, Opened::Existing);
    assert_eq!(snapshot(&dir.0), before, "once migrated, opening changes no byte");
}

#[test]
fn a_text_file_is_refused_untouched() {
    let dir = Scratch::new("text");
    let db = dir.join("notes.txt");
    std::fs::write(&db, "shopping list: eggs, milk, and a great deal more text than a header\n".repeat(20)).unwrap();
    check_refused(&db, |e| matches!(e, StoreError::NotTrueup { reason, .. } if reason == "not an SQLite database"));
}

#[test]
fn someone_elses_sqlite_database_is_refused_untouched() {
    let dir = Scratch::new("foreign");
    let db = dir.join("app.db");
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO users VALUES (1, 'ada');",
    )
    .unwrap();
    drop(raw);
    check_refused(&db, |e| matches!(e, StoreError::NotTrueup { .. }));
    let err = Store::open(&db).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is not a trueup state database (its application_id is 0x0, not trueup's 0x54525550); \
             it was left untouched",
            db.display()
        )
    );
}

#[test]
fn load_returns_the_world_types_sorted_in_a_bounded_number_of_statements() {
    let dir = Scratch::new("load");
    let store = open(&dir.join("state.db"));
    let mut p2 = project("p2");
    p2.active = false;
    p2.domain = Some("example.org".into());
    p2.services = vec![Service { id: "worker".into(), primary: false }, Service { id: "api".into(), primary: true }];
    // Invalid ids are stored and read back: the planner reports them.
    store.upsert_projects(&[p2.clone(), project("p1"), project("../evil")]).unwrap();

    let mut d1 = deployment("d1", "p1", "BUILDING");
    d1.phase_updated_at = Some(t("2025-10-02T11:50:00Z"));
    d1.heartbeat_at = Some(t("2025-10-02T11:55:00Z"));
    d1.attempts = 2;
    d1.source.file_path = Some("/uploads/d1.tar.gz".into());
    d1.metadata.insert("upstream".into(), "http://127.0.0.1:8080".into());
    d1.owner = Some(Claim::new("worker-1", t("2025-10-02T12:05:00Z")));
    let mut d0 = deployment("d0", "p1", "ACTIVE");
    d0.finished_at = Some(t("2025-10-01T09:00:00Z"));
    d0.service = Some("web".into());
    let mut g = deployment("g1", "p2", "QUEUED");
    g.kind = DeploymentType::Git;
    g.source.repo = Some("/srv/git/p2".into());
    g.source.git_ref = Some("main".into());
    // A deployment keeps its own creation time; the others get the one given.
    g.created_at = Some(t("2025-09-30T08:00:00Z"));
    store.insert_deployments(&[g.clone(), d1.clone(), d0.clone()], t("2025-10-01T00:00:00Z")).unwrap();
    for d in [&mut d0, &mut d1] {
        d.created_at = Some(t("2025-10-01T00:00:00Z"));
    }

    let before = store.statements();
    let (projects, deployments) = store.load().unwrap();
    assert_eq!(store.statements() - before, 5, "BEGIN, projects, services, deployments, COMMIT");
    p2.services.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(projects, vec![project("../evil"), project("p1"), p2.clone()]);
    assert_eq!(deployments, vec![d0, d1, g]);

    // One project is read as the whole load has it, from its own rows.
    let before = store.statements();
    assert_eq!(store.project("p2").unwrap(), Some(p2));
    assert_eq!(store.statements() - before, 4, "BEGIN, the project, its services, COMMIT");
    assert_eq!(store.project("../evil").unwrap(), Some(project("../evil")));
    assert_eq!(store.project("p").unwrap(), None, "no project of that id");
}

#[test]
fn a_project_has_exactly_one_primary_service() {
    let dir = Scratch::new("primary");
    let store = open(&dir.join("state.db"));
    let mut p = project("p1");
    p.services.push(Service { id: "api".into(), primary: true });
    let err = store.upsert_project(&p).unwrap_err();
    assert_eq!(err.to_string(), "project `p1`: needs exactly one primary service, has 2");
    p.services.iter_mut().for_each(|s| s.primary = false);
    assert!(matches!(store.upsert_project(&p), Err(StoreError::InvalidProject { .. })));

    // Switching the primary in an update works; the database itself refuses a second one.
    p.services[0].primary = true;
    store.upsert_project(&p).unwrap();
    p.services[0].primary = false;
    p.services[1].primary = true;
    store.upsert_project(&p).unwrap();
    let primary: Vec<_> =
        store.load().unwrap().0[0].services.iter().filter(|s| s.primary).map(|s| s.id.clone()).collect();
    assert_eq!(primary, vec!["api"]);
    let raw = rusqlite::Connection::open(store.path()).unwrap();
    assert!(raw.execute("UPDATE services SET \"primary\" = 1 WHERE project = 'p1'", []).is_err());

    // Services left out of an update are removed.
    p.services.remove(0);
    store.upsert_project(&p).unwrap();
    assert_eq!(store.load().unwrap().0[0].services, vec![Service { id: "api".into(), primary: true }]);
}

#[test]
fn a_claim_is_exclusive_and_a_lapsed_one_can_be_retaken() {
    let dir = Scratch::new("claim");
    let db = dir.join("state.db");
    let store = open(&db);
    store.upsert_project(&project("p1")).unwrap();
    store.insert_deployment(&deployment("d1", "p1", "BUILDING"), t("2025-10-02T11:00:00Z")).unwrap();
    let now = t("2025-10-02T12:00:00Z");
    let until = t("2025-10-02T12:01:00Z");

    // Two workers, two connections, racing: exactly one wins.
    let barrier = std::sync::Barrier::new(2);
    let wins: Vec<bool> = std::thread::scope(|s| {
        let racers: Vec<_> = ["w1", "w2"]
            .map(|who| {
                let (db, barrier) = (&db, &barrier);
                s.spawn(move || {
                    let store = open(db);
                    barrier.wait();
                    store.claim("d1", who, now, until).unwrap()
                })
            })
            .into_iter()
            .collect();
        racers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let winner = if wins[0] { "w1" } else { "w2" };

    assert!(!store.claim("d1", "w3", now, until).unwrap(), "held until 12:01");
    assert!(!store.release_claim("d1", "w3").unwrap(), "only the holder releases");
    let later = t("2025-10-02T12:01:00Z");
    assert!(store.claim("d1", "w3", later, t("2025-10-02T12:02:00Z")).unwrap(), "lapsed at 12:01");
    let owner = store.load().unwrap().1[0].owner.clone().unwrap();
    assert_eq!(owner, Claim::new("w3", t("2025-10-02T12:02:00Z")));

    // The first winner's writes are now fenced off.
    let update = PhaseUpdate { phase: "COPYING_FILES", at: later, attempts: 1, finished: false, metadata: None };
    let err = store.set_phase(Fence::Claim { owner: winner }, "d1", &update).unwrap_err();
    assert_eq!(err.to_string(), format!("deployment `d1` is not claimed by `{winner}`"));
    store.set_phase(Fence::Claim { owner: "w3" }, "d1", &update).unwrap();
    assert!(store.release_claim("d1", "w3").unwrap());
    assert!(matches!(store.claim("nope", "w3", now, until), Err(StoreError::UnknownDeployment(d)) if d == "nope"));
}

#[test]
fn checking_a_lease_reads_whether_it_is_still_the_current_one() {
    let dir = Scratch::new("check-lease");
    let store = open(&dir.join("state.db"));
    let now = t("2025-10-02T12:00:00Z");
    let ttl = Duration::from_secs(60);
    let a = store.acquire_lease("apply-a", now, ttl).unwrap();
    store.check_lease(&a).unwrap();
    store.release_lease(&a).unwrap();
    assert!(matches!(store.check_lease(&a), Err(StoreError::StaleLease { .. })), "released");
    let b = store.acquire_lease("apply-b", now, ttl).unwrap();
    store.check_lease(&b).unwrap();
    assert!(matches!(store.check_lease(&a), Err(StoreError::StaleLease { .. })), "taken by another");
}

#[test]
fn a_stale_lease_cannot_write() {
    let dir = Scratch::new("lease");
    let store = open(&dir.join("state.db"));
    store.upsert_project(&project("p1")).unwrap();
    store.insert_deployment(&deployment("d1", "p1", "BUILDING"), t("2025-10-02T11:00:00Z")).unwrap();
    let now = t("2025-10-02T12:00:00Z");
    let ttl = Duration::from_secs(60);

    let a = store.acquire_lease("apply-a", now, ttl).unwrap();
    let err = store.acquire_lease("apply-b", now, ttl).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the state database is being changed by `apply-a` (lease held until 2025-10-02T12:01:00Z)"
    );
    let a = store.renew_lease(&a, t("2025-10-02T12:00:30Z"), ttl).unwrap();
    assert_eq!(a.until, t("2025-10-02T12:01:30Z"));

    // A stalls past its lease; B takes over with a newer token.
    let b = store.acquire_lease("apply-b", t("2025-10-02T12:01:30Z"), ttl).unwrap();
    assert_eq!(b.token, a.token + 1);
    let update = PhaseUpdate { phase: "FAILED", at: now, attempts: 1, finished: true, metadata: None };
    let err = store.set_phase(Fence::Lease(&a), "d1", &update).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("lease token {} is stale (current token {}): another writer took over", a.token, b.token)
    );
    assert!(matches!(store.journal_planned(&a, "run-a", 0, &"x", now), Err(StoreError::StaleLease { .. })));
    let log = LogEntry {
        deployment: "d1".into(),
        at: now,
        level: LogLevel::Warn,
        phase: Some("BUILDING".into()),
        message: "resumed".into(),
        metadata: BTreeMap::new(),
    };
    assert!(matches!(store.append_log(Fence::Lease(&a), &log), Err(StoreError::StaleLease { .. })));
    assert!(matches!(store.renew_lease(&a, now, ttl), Err(StoreError::StaleLease { .. })));
    assert!(matches!(store.release_lease(&a), Err(StoreError::StaleLease { .. })));
    assert_eq!(store.load().unwrap().1[0].phase, "BUILDING", "nothing A tried was written");

    // B's writes go through, and nothing is written once B released.
    store.set_phase(Fence::Lease(&b), "d1", &update).unwrap();
    store.append_log(Fence::Lease(&b), &log).unwrap();
    assert_eq!(store.logs("d1").unwrap(), vec![log.clone()]);
    let d1 = store.load().unwrap().1.remove(0);
    assert_eq!((d1.phase.as_str(), d1.finished_at), ("FAILED", Some(now)));
    assert!(store.load_reconcilable(&["ACTIVE"]).unwrap().1.is_empty(), "a failed deployment is history, not read");
    store.release_lease(&b).unwrap();
    assert!(matches!(store.append_log(Fence::Lease(&b), &log), Err(StoreError::StaleLease { .. })));
    let c = store.acquire_lease("apply-c", now, ttl).unwrap();
    assert_eq!(c.token, b.token + 1, "a released lease is free at once");
}

/// The one caller of [`Store::acquire_lease_as`] in the take-over tests: `b` on host `h`,
/// with `alive` answering for the processes of `h`.
#[track_caller]
fn take(
    store: &Store,
    now: &str,
    alive: &dyn Fn(u32) -> bool,
) -> Result<(trueup::store::Lease, Option<TookOver>), StoreError> {
    store.acquire_lease_as(Holder { owner: "b", host: "h", pid: 2 }, t(now), Duration::from_secs(60), alive)
}

#[test]
fn a_dead_holder_on_this_host_is_taken_over_at_once_and_fenced_off() {
    let dir = Scratch::new("take-over");
    let store = open(&dir.join("state.db"));
    let now = "2025-10-02T12:00:00Z";
    let a = store
        .acquire_lease_as(Holder { owner: "a", host: "h", pid: 1 }, t(now), Duration::from_secs(60), &|_| true)
        .unwrap()
        .0;
    let held = store.lease_held().unwrap().unwrap();
    assert_eq!((held.host.as_deref(), held.pid), (Some("h"), Some(1)), "the holder's host and process are recorded");

    // Alive: waited for, as before.
    let err = take(&store, now, &|pid| pid == 1).unwrap_err();
    assert_eq!(err.to_string(), "the state database is being changed by `a` (lease held until 2025-10-02T12:01:00Z)");
    // Dead on this host: taken over at once, long before its lease lapses.
    let (b, took_over) = take(&store, now, &|pid| pid != 1).unwrap();
    assert_eq!(took_over, Some(TookOver::Dead(held)));
    assert_eq!(b.token, a.token + 1);
    assert!(matches!(store.renew_lease(&a, t(now), Duration::from_secs(60)), Err(StoreError::StaleLease { .. })));
    assert!(matches!(store.journal_planned(&a, "run-a", 0, &"x", t(now)), Err(StoreError::StaleLease { .. })));
    store.release_lease(&b).unwrap();
    assert_eq!(store.lease_held().unwrap(), None);

    // A holder on another host is never checked, dead or not: waited for until it lapses.
    store
        .acquire_lease_as(Holder { owner: "c", host: "elsewhere", pid: 1 }, t(now), Duration::from_secs(60), &|_| true)
        .unwrap();
    let err = take(&store, now, &|_| false).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { ref owner, .. } if owner == "c"), "{err}");
    let (_, took_over) = take(&store, "2025-10-02T12:01:00Z", &|_| false).unwrap();
    assert!(matches!(took_over, Some(TookOver::Lapsed(ref h)) if h.owner == "c"), "{took_over:?}");
}

#[test]
fn a_schema_6_lease_is_migrated_keeping_the_apply_holder_and_adding_a_free_daemon_lease() {
    let dir = Scratch::new("schema6");
    let db = dir.join("state.db");
    drop(open(&db));
    let raw = rusqlite::Connection::open(&db).unwrap();
    daemon_lease_of_schema_6(&raw);
    raw.execute_batch(
        "UPDATE lease SET owner = 'a', until = '2025-10-02T12:01:00Z', token = 5, host = 'h', pid = 7
         WHERE name = 'apply'",
    )
    .unwrap();
    let refused = raw.execute("INSERT INTO lease (name, token) VALUES ('daemon', 0)", []);
    assert!(refused.is_err(), "schema 6 allows the `apply` row only");
    drop(raw);

    let (store, opened) = Store::open(&db).unwrap();
    assert_eq!(opened, Opened::Migrated { from: 6, to: SCHEMA_VERSION });
    let apply =
        Held { owner: "a".to_owned(), until: t("2025-10-02T12:01:00Z"), host: Some("h".to_owned()), pid: Some(7) };
    assert_eq!(store.lease_held().unwrap(), Some(apply));
    assert_eq!(store.daemon_lease_held().unwrap(), None);
    // The token is kept: the next apply gets 6.
    let now = t("2025-10-02T12:00:00Z");
    let (lease, _) = store
        .acquire_lease_as(Holder { owner: "b", host: "h", pid: 8 }, now, Duration::from_secs(60), &|p| p != 7)
        .unwrap();
    assert_eq!(lease.token, 6);
}

#[test]
fn the_daemon_lease_is_one_per_database_apart_from_the_apply_lease() {
    let dir = Scratch::new("daemon-lease");
    let store = open(&dir.join("state.db"));
    let now = t("2025-10-02T12:00:00Z");
    let ttl = Duration::from_secs(60);
    let first = Holder { owner: "serve-1", host: "h", pid: 1 };
    let second = Holder { owner: "serve-2", host: "h", pid: 2 };
    let (daemon, took_over) = store.acquire_daemon_lease(first, now, ttl, &|_| true).unwrap();
    assert_eq!((daemon.owner(), took_over), ("serve-1", None));
    let held = store.daemon_lease_held().unwrap().unwrap();
    assert_eq!((held.owner.as_str(), held.host.as_deref(), held.pid), ("serve-1", Some("h"), Some(1)));

    // A second daemon is refused while the first lives, naming it.
    let err = store.acquire_daemon_lease(second, now, ttl, &|_| true).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { ref owner, .. } if owner == "serve-1"), "{err}");
    // The apply lease is another row: taken and given back while the daemon holds its own.
    let apply = store.acquire_lease("apply-1", now, ttl).unwrap();
    assert!(store.daemon_lease_held().unwrap().is_some());
    store.release_lease(&apply).unwrap();
    assert_eq!(store.lease_held().unwrap(), None);
    assert!(store.daemon_lease_held().unwrap().is_some(), "releasing the apply lease leaves the daemon's");

    // Renewed, it outlasts its first expiry.
    let later = t("2025-10-02T12:00:50Z");
    let daemon = store.renew_daemon_lease(&daemon, later, ttl).unwrap();
    assert_eq!(daemon.until(), t("2025-10-02T12:01:50Z"));
    let err = store.acquire_daemon_lease(second, t("2025-10-02T12:01:10Z"), ttl, &|_| true).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err}");

    // Its process gone on this host: taken over at once, and the dead one can neither
    // renew nor release it.
    let (taken, took_over) = store.acquire_daemon_lease(second, later, ttl, &|pid| pid != 1).unwrap();
    assert!(matches!(took_over, Some(TookOver::Dead(ref h)) if h.owner == "serve-1"), "{took_over:?}");
    assert!(matches!(store.renew_daemon_lease(&daemon, later, ttl), Err(StoreError::StaleLease { .. })));
    assert!(matches!(store.release_daemon_lease(&daemon), Err(StoreError::StaleLease { .. })));
    assert!(store.lease_held().unwrap().is_none(), "the apply lease is untouched");
    store.release_daemon_lease(&taken).unwrap();
    assert_eq!(store.daemon_lease_held().unwrap(), None);
}

#[test]
fn unlock_frees_a_gone_holder_and_refuses_a_live_one() {
    let dir = Scratch::new("unlock");
    let store = open(&dir.join("state.db"));
    let now = t("2025-10-02T12:00:00Z");
    let ttl = Duration::from_secs(60);
    assert_eq!(store.unlock_lease("h", now, &|_| false).unwrap(), Unlocked::Free);

    let a = store.acquire_lease_as(Holder { owner: "a", host: "h", pid: 1 }, now, ttl, &|_| true).unwrap().0;
    let err = store.unlock_lease("h", now, &|_| true).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { ref owner, .. } if owner == "a"), "a live holder is refused: {err}");
    let err = store.unlock_lease("other", now, &|_| false).unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { .. }), "another host's live lease cannot be told dead: {err}");
    assert!(matches!(store.unlock_lease("h", now, &|_| false).unwrap(), Unlocked::Released(TookOver::Dead(_))));
    assert_eq!(store.lease_held().unwrap(), None);
    assert!(matches!(store.journal_planned(&a, "run-a", 0, &"x", now), Err(StoreError::StaleLease { .. })));

    store.acquire_lease_as(Holder { owner: "c", host: "other", pid: 1 }, now, ttl, &|_| true).unwrap();
    let released = store.unlock_lease("h", t("2025-10-02T12:01:00Z"), &|_| true).unwrap();
    assert!(matches!(released, Unlocked::Released(TookOver::Lapsed(_))), "an expired lease: {released:?}");
    let next = store.acquire_lease("d", now, ttl).unwrap();
    assert!(next.token > a.token);
}

#[test]
fn the_journal_records_each_action() {
    let dir = Scratch::new("journal");
    let store = open(&dir.join("state.db"));
    let now = t("2025-10-02T12:00:00Z");
    let lease = store.acquire_lease("apply", now, Duration::from_secs(60)).unwrap();
    let action = serde_json::json!({ "kind": "link", "path": "/var/www/p1/current" });
    store.journal_planned(&lease, "r1", 0, &action, now).unwrap();
    store.journal_planned(&lease, "r1", 1, &action, now).unwrap();
    store.journal_done(&lease, "r1", 0, t("2025-10-02T12:00:01Z")).unwrap();
    store.journal_planned(&lease, "r1", 2, &action, now).unwrap();
    store.journal_failed(&lease, "r1", 1, "permission denied", t("2025-10-02T12:00:02Z")).unwrap();
    store.journal_skipped(&lease, "r1", 2, "an earlier action did not succeed", t("2025-10-02T12:00:03Z")).unwrap();
    assert!(matches!(store.journal_done(&lease, "r1", 7, now), Err(StoreError::UnknownJournalEntry { seq: 7, .. })));
    let entries = store.journal("r1").unwrap();
    let got: Vec<_> = entries.iter().map(|e| (e.seq, e.status, e.error.as_deref(), e.at)).collect();
    assert_eq!(
        got,
        vec![
            (0, JournalStatus::Done, None, t("2025-10-02T12:00:01Z")),
            (1, JournalStatus::Failed, Some("permission denied"), t("2025-10-02T12:00:02Z")),
            (2, JournalStatus::Skipped, Some("an earlier action did not succeed"), t("2025-10-02T12:00:03Z")),
        ]
    );
    assert_eq!(store.open_runs().unwrap(), vec![], "done, failed and skipped actions are finished");
    assert_eq!(entries[0].action, action);
    assert_eq!(entries[0].token, lease.token);
}

#[test]
fn the_reconciler_reads_open_and_live_deployments_not_the_history() {
    let dir = Scratch::new("reconcilable");
    let store = open(&dir.join("state.db"));
    store.upsert_projects(&[project("p1"), project("p2")]).unwrap();
    let now = t("2025-10-02T12:00:00Z");
    let finished = |id: &str, project: &str, phase: &str| {
        let mut d = deployment(id, project, phase);
        d.finished_at = Some(now);
        d
    };
    let mut held = deployment("b-held", "p1", "BUILDING");
    held.owner = Some(Claim::new("w", t("2025-10-02T12:00:01Z")));
    let rows = [
        finished("a-live", "p1", "ACTIVE"),
        finished("c-failed", "p1", "FAILED"),
        finished("d-cancelled", "p2", "CANCELLED"),
        held,
        deployment("e-free", "p2", "QUEUED"),
        finished("f-live", "p2", "ACTIVE"),
        Deployment {
            owner: Some(Claim::new("w", t("2025-10-02T12:10:00Z"))),
            ..finished("g-rolling-back", "p2", "FAILED")
        },
    ];
    store.insert_deployments(&rows, now).unwrap();
    let before = store.statements();
    let (projects, deployments) = store.load_reconcilable(&["ACTIVE"]).unwrap();
    assert_eq!(store.statements() - before, 5, "a bounded number of statements");
    assert_eq!(projects.len(), 2);
    let ids: Vec<_> = deployments.into_iter().map(|d| d.id).collect();
    assert_eq!(ids, vec!["a-live", "b-held", "e-free", "f-live", "g-rolling-back"], "sorted, no history");

    // One project's, in one statement.
    let of = |p: &str| store.reconcilable_of(p, &["ACTIVE"]).map(|ds| ds.into_iter().map(|d| d.id).collect::<Vec<_>>());
    let before = store.statements();
    assert_eq!(of("p1").unwrap(), ["a-live", "b-held"]);
    assert_eq!(store.statements() - before, 1);
    assert_eq!(of("p2").unwrap(), ["e-free", "f-live", "g-rolling-back"]);
    // A row of p2 that cannot be read back (an operator's edit) fails a read of every
    // project and of p2, never one of p1.
    let raw = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    raw.execute("UPDATE deployments SET created_at = 'yesterday' WHERE id = 'e-free'", []).unwrap();
    let error = store.load_reconcilable(&["ACTIVE"]).unwrap_err().to_string();
    assert!(error.contains("e-free") && error.contains("created_at"), "{error}");
    assert!(of("p2").unwrap_err().to_string().contains("e-free"));
    assert_eq!(of("p1").unwrap(), ["a-live", "b-held"]);
}

#[test]
fn a_queue_head_that_cannot_be_read_back_holds_back_its_project_alone() {
    let dir = Scratch::new("queue-heads");
    let store = open(&dir.join("state.db"));
    store.upsert_projects(&[project("p1"), project("p2"), project("p3")]).unwrap();
    let queued =
        |id: &str, project: &str, at: &str| Deployment { created_at: Some(t(at)), ..deployment(id, project, "QUEUED") };
    let rows = [
        queued("a1", "p1", "2025-10-02T12:00:00Z"),
        queued("a2", "p1", "2025-10-02T12:01:00Z"),
        queued("b1", "p2", "2025-10-02T11:00:00Z"),
        queued("c1", "p3", "2025-10-02T10:00:00Z"),
        queued("c2", "p3", "2025-10-02T10:01:00Z"),
    ];
    store.insert_deployments(&rows, t("2025-10-02T12:00:00Z")).unwrap();
    let heads = |store: &Store| {
        let (heads, unreadable) = store.queue_heads().unwrap();
        let unreadable: Vec<(String, String)> = unreadable.into_iter().map(|(p, e)| (p, e.to_string())).collect();
        (heads.into_iter().map(|d| d.id).collect::<Vec<_>>(), unreadable)
    };
    assert_eq!(heads(&store), (vec!["c1".to_owned(), "b1".to_owned(), "a1".to_owned()], vec![]), "oldest first");
    // An operator's edit: p2's head, and a row behind p3's head.
    let raw = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    raw.execute("UPDATE deployments SET phase_updated_at = 'noon' WHERE id IN ('b1', 'c2')", []).unwrap();
    let (ids, unreadable) = heads(&store);
    assert_eq!(ids, ["c1", "a1"], "p2 waits; p3's head is read, not the row behind it");
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0].0, "p2");
    assert!(unreadable[0].1.contains("row `b1`, column `phase_updated_at`"), "{unreadable:?}");
}

/// Records one verdict: the one caller of `record_verdict` here.
#[track_caller]
fn verdict(
    store: &Store,
    lease: &trueup::store::Lease,
    d: &str,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Result<trueup::model::Recorded, StoreError> {
    let v = trueup::model::Verdict {
        deployment: d,
        from_phase: "BUILDING",
        to_phase: "BUILDING",
        attempt: Some(1),
        stuck_since: since,
        dead_claim: None,
        reason: "stuck",
        now,
    };
    store.record_verdict(lease, &v)
}

#[test]
fn a_verdict_is_refused_when_its_worker_progressed_or_holds_a_live_claim() {
    let dir = Scratch::new("verdict");
    let store = open(&dir.join("state.db"));
    store.upsert_projects(&[project("p1")]).unwrap();
    let now = t("2025-10-02T12:00:00Z");
    let stuck_since = t("2025-10-02T11:00:00Z");
    let mut d1 = deployment("d1", "p1", "BUILDING");
    d1.phase_updated_at = Some(stuck_since);
    let mut d2 = d1.clone();
    d2.id = "d2".into();
    // A claim lapsed at the plan's instant, but live by the wall clock (years later).
    d2.owner = Some(Claim::new("worker-7", t("2999-01-01T00:00:00Z")));
    store.insert_deployments(&[d1, d2], now).unwrap();
    let lease = store.acquire_lease("apply", trueup::time::clock::now(), Duration::from_secs(60)).unwrap();

    // The worker heartbeats after the plan saw it stuck: the verdict is refused.
    store.heartbeat(Fence::Lease(&lease), "d1", t("2025-10-02T11:59:00Z")).unwrap();
    let err = verdict(&store, &lease, "d1", Some(stuck_since), now).unwrap_err();
    assert!(matches!(err, StoreError::Progressed { .. }), "{err}");
    assert_eq!(store.logs("d1").unwrap().len(), 0, "nothing was logged");
    // Planned again with the heartbeat it now has, the verdict goes through, once.
    let since = Some(t("2025-10-02T11:59:00Z"));
    assert_eq!(verdict(&store, &lease, "d1", since, now).unwrap(), trueup::model::Recorded::Moved);
    assert_eq!(verdict(&store, &lease, "d1", since, now).unwrap(), trueup::model::Recorded::AlreadyThere);

    // A verdict that moves it on to the next phase starts that phase's attempts afresh.
    let mut d3 = deployment("d3", "p1", "CREATING_SYMLINKS");
    d3.phase_updated_at = Some(stuck_since);
    d3.attempts = 2;
    store.insert_deployment(&d3, now).unwrap();
    let onward = trueup::model::Verdict {
        deployment: "d3",
        from_phase: "CREATING_SYMLINKS",
        to_phase: "UPDATING_ROUTES",
        attempt: Some(0),
        stuck_since: Some(stuck_since),
        dead_claim: None,
        reason: "links verified",
        now,
    };
    assert_eq!(store.record_verdict(&lease, &onward).unwrap(), trueup::model::Recorded::Moved);
    let d3 = store.load().unwrap().1.into_iter().find(|d| d.id == "d3").unwrap();
    assert_eq!((d3.phase.as_str(), d3.attempts, d3.phase_updated_at), ("UPDATING_ROUTES", 0, Some(now)));
    assert_eq!(store.record_verdict(&lease, &onward).unwrap(), trueup::model::Recorded::AlreadyThere);

    // An instant far in the future cannot make a live claim look lapsed.
    let err = verdict(&store, &lease, "d2", Some(stuck_since), t("3000-01-01T00:00:00Z")).unwrap_err();
    assert!(matches!(err, StoreError::Claimed { .. }), "{err}");
}

mod observe {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use trueup::model::{Node, Route, World};
    use trueup::store::Store;
    use trueup::world::observe::{ObserveConfig, ObserveStats, observe, observe_with_stats};
    use trueup::world::routes::render_route;

    use super::{Scratch, deployment, project, t};

    fn mkdir(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
    }

    fn touch(p: &Path) {
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn observe_builds_the_world_of_a_real_tree() {
        // Run again without openat2 or threads too (`seccomp.rs`): then checks the filter.
        crate::seccomp::check_denied();
        let dir = Scratch::new("observe");
        let (root, routes, uploads) = (dir.join("www"), dir.join("routes"), dir.join("uploads"));
        for d in [&root, &routes, &uploads] {
            mkdir(d);
        }
        let outside = dir.join("outside");
        mkdir(&outside.join("secret"));
        touch(&outside.join("secret/key"));

        // p1: two releases and a temporary copy, a dangling `current`, a webroot link.
        mkdir(&root.join("p1/deployments/d0/public"));
        touch(&root.join("p1/deployments/d0/public/index.html"));
        mkdir(&root.join("p1/deployments/d1"));
        mkdir(&root.join("p1/deployments/.d2.tmp/public"));
        touch(&root.join("p1/deployments/stray.txt"));
        symlink("deployments/d9", root.join("p1/current")).unwrap();
        mkdir(&root.join("webroot"));
        symlink("../p1/current/public", root.join("webroot/p1")).unwrap();
        // p2: `current` is a real folder.
        mkdir(&root.join("p2/current"));
        touch(&root.join("p2/current/index.html"));
        // p3's folder and p4's links point outside the root.
        symlink(&outside, root.join("p3")).unwrap();
        mkdir(&root.join("p4"));
        symlink(&outside, root.join("p4/current")).unwrap();
        symlink(&outside, root.join("p4/deployments")).unwrap();
        symlink(&outside, root.join("webroot/p4")).unwrap();
        touch(&uploads.join("d5.tar.gz"));
        // Sources in several folders, taken in turn: a link (read, never followed), a
        // repository, one under a file, one in a folder that is not there.
        symlink(outside.join("secret/key"), uploads.join("d7.tar.gz")).unwrap();
        let repos = dir.join("repos");
        mkdir(&repos.join("app.git"));

        std::fs::write(
            routes.join("p1.yaml"),
            render_route("p1", "d0", "http://127.0.0.1:8080", "p1.localhost").unwrap(),
        )
        .unwrap();
        std::fs::write(routes.join("p2.yaml"), "http: [not, a, route\n").unwrap();
        std::fs::write(routes.join(".p3.yaml.tmp"), "partial").unwrap();
        std::fs::write(routes.join("README.md"), "not a route").unwrap();
        symlink(outside.join("secret/key"), routes.join("p4.yaml")).unwrap();

        let store = Store::open(&dir.join("state.db")).unwrap().0;
        store.upsert_projects(&[project("p1"), project("p2"), project("p3"), project("p4"), project("..")]).unwrap();
        let mut d0 = deployment("d0", "p1", "ACTIVE");
        d0.finished_at = Some(t("2025-10-01T09:00:00Z"));
        d0.source.file_path = Some(uploads.join("d0.tar.gz"));
        let mut d5 = deployment("d5", "p1", "BUILDING");
        d5.source.file_path = Some(uploads.join("d5.tar.gz"));
        let mut d6 = deployment("d6", "p2", "PULLING_SOURCE");
        d6.source.file_path = Some(uploads.join("d6.tar.gz"));
        let mut d7 = deployment("d7", "p2", "QUEUED");
        d7.source.file_path = Some(uploads.join("d7.tar.gz"));
        d7.source.repo = Some(repos.join("app.git").to_str().unwrap().to_owned());
        // Under the root: one the scan never reads (inside a release), one it listed.
        let mut d9 = deployment("d9", "p1", "QUEUED");
        d9.source.file_path = Some(root.join("p1/deployments/d0/public/index.html"));
        d9.source.repo = Some(root.join("p1/deployments/stray.txt").to_str().unwrap().to_owned());
        let mut d8 = deployment("d8", "p4", "QUEUED");
        d8.source.file_path = Some(uploads.join("d5.tar.gz/inner.tar.gz"));
        d8.source.repo = Some(dir.join("gone/app.git").to_str().unwrap().to_owned());
        let evil = deployment("e1", "..", "QUEUED");
        store.insert_deployments(&[d0, d5, d6, d7, d8, d9, evil], t("2025-10-01T00:00:00Z")).unwrap();

        let cfg = ObserveConfig { root: root.clone(), routes_dir: routes.clone() };
        let world = observe(&store, &trueup::spec::default_spec().into(), &cfg).unwrap();

        let (projects, deployments) = store.load().unwrap();
        let link = |p: &Path| Node::Symlink(p.to_owned());
        let expected_files: trueup::model::Files = [
            (root.clone(), Node::Dir),
            (root.join("webroot"), Node::Dir),
            (root.join("p1"), Node::Dir),
            (root.join("p1/current"), link(Path::new("deployments/d9"))),
            (root.join("p1/deployments"), Node::Dir),
            (root.join("p1/deployments/d0"), Node::Dir),
            (root.join("p1/deployments/d0/public"), Node::Dir),
            (root.join("p1/deployments/d0/public/index.html"), Node::File),
            (root.join("p1/deployments/d1"), Node::Dir),
            (root.join("p1/deployments/.d2.tmp"), Node::Dir),
            (root.join("p1/deployments/stray.txt"), Node::File),
            (root.join("webroot/p1"), link(Path::new("../p1/current/public"))),
            (root.join("p2"), Node::Dir),
            (root.join("p2/current"), Node::Dir),
            (root.join("p3"), link(&outside)),
            (root.join("p4"), Node::Dir),
            (root.join("p4/current"), link(&outside)),
            (root.join("p4/deployments"), link(&outside)),
            (root.join("webroot/p4"), link(&outside)),
            (uploads.join("d5.tar.gz"), Node::File),
            (uploads.join("d7.tar.gz"), link(&outside.join("secret/key"))),
            (repos.join("app.git"), Node::Dir),
        ]
        .into_iter()
        .collect();
        let expected = World {
            root: root.clone(),
            projects,
            deployments,
            files: expected_files,
            containers: None,
            images: None,
            routes_folder_missing: false,
            unreadable: Default::default(),
            routes: [
                (
                    "p1".to_owned(),
                    Route {
                        deployment: Some("d0".into()),
                        upstream: "http://127.0.0.1:8080".into(),
                        domain: Some("p1.localhost".into()),
                        problem: None,
                    },
                ),
                (
                    "p2".to_owned(),
                    Route {
                        deployment: None,
                        upstream: String::new(),
                        domain: None,
                        problem: Some("it has no `# Managed by trueup:` header".into()),
                    },
                ),
                (
                    "p4".to_owned(),
                    Route {
                        deployment: None,
                        upstream: String::new(),
                        domain: None,
                        problem: Some("`p4.yaml` is not a regular file".into()),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(world, expected);
        assert!(world.files.keys().all(|p| !p.starts_with(&outside)), "links out of the root are never followed");
        assert_eq!(world.projects.iter().filter(|p| p.id == "..").count(), 1, "invalid ids stay in the world");
    }

    #[test]
    fn the_public_of_a_release_is_looked_at_where_the_plan_may_ask_for_it() {
        let dir = Scratch::new("observe-publics");
        let (root, routes) = (dir.join("www"), dir.join("routes"));
        mkdir(&routes);
        mkdir(&root.join("webroot"));
        // p1's releases all have a `public`. `current` leads to d2, the webroot link to
        // d1's; d3 is the live release (the newest in the store); p2's webroot link leads
        // to p1's d4; d5 is a folder of no row that nothing leads to, f1 one of a failed
        // deployment, g1 one of a deployment in flight, "x y" one whose name is no id, d6
        // a link to d1.
        // p2's `current` leads to e1, its live release is e2. p3's webroot link leads to
        // p1's d6, p4's to p1's "x y".
        for release in ["e1", "e2"] {
            mkdir(&root.join(format!("p2/deployments/{release}/public")));
        }
        symlink(root.join("p2/deployments/e1"), root.join("p2/current")).unwrap();
        mkdir(&root.join("p1/deployments/f1/public"));
        mkdir(&root.join("p1/deployments/g1/public"));
        mkdir(&root.join("p1/deployments/x y/public"));
        symlink(root.join("p1/deployments/d1"), root.join("p1/deployments/d6")).unwrap();
        symlink(root.join("p1/deployments/d6/public"), root.join("webroot/p3")).unwrap();
        symlink(root.join("p1/deployments/x y/public"), root.join("webroot/p4")).unwrap();
        for release in ["d1", "d2", "d3", "d4", "d5"] {
            mkdir(&root.join(format!("p1/deployments/{release}/public")));
        }
        symlink(root.join("p1/deployments/d2"), root.join("p1/current")).unwrap();
        symlink("../p1/deployments/d1/public", root.join("webroot/p1")).unwrap();
        symlink(root.join("p1/deployments/d4/public"), root.join("webroot/p2")).unwrap();
        let store = Store::open(&dir.join("state.db")).unwrap().0;
        store.upsert_projects(&[project("p1"), project("p2"), project("p3"), project("p4")]).unwrap();
        let rows = [
            ("d1", "p1", "ACTIVE", "07"),
            ("d2", "p1", "ACTIVE", "08"),
            ("d3", "p1", "ACTIVE", "09"),
            ("f1", "p1", "FAILED", "10"),
            ("e1", "p2", "ACTIVE", "09"),
            ("e2", "p2", "ACTIVE", "10"),
        ];
        let releases: Vec<_> = rows
            .into_iter()
            .map(|(id, project, phase, hour)| {
                let mut d = deployment(id, project, phase);
                d.finished_at = Some(t(&format!("2025-10-01T{hour}:00:00Z")));
                d
            })
            .chain([deployment("g1", "p1", "BUILDING")])
            .collect();
        store.insert_deployments(&releases, t("2025-10-01T00:00:00Z")).unwrap();
        let cfg = ObserveConfig { root: root.clone(), routes_dir: routes };
        let specs: trueup::spec::Specs = trueup::spec::default_spec().into();
        let world = observe(&store, &specs, &cfg).unwrap();
        let public = |release: &str| root.join(format!("{release}/public"));
        for release in ["p1/deployments/d1", "p1/deployments/d2", "p1/deployments/d3", "p1/deployments/d4"] {
            assert_eq!(world.files.get(&public(release)), Some(&Node::Dir), "{release}");
        }
        assert_eq!(world.files.get(&public("p2/deployments/e2")), Some(&Node::Dir), "p2's live release");
        for (release, why) in [
            ("p1/deployments/d5", "nothing leads to d5"),
            ("p1/deployments/f1", "f1 failed: it is never live"),
            ("p1/deployments/g1", "g1 is in flight: not live yet"),
            ("p1/deployments/x y", "`x y` is no id"),
            ("p1/deployments/d6", "d6 is a link, never followed"),
        ] {
            assert_eq!(world.files.get(&public(release)), None, "{why}: its `public` is never asked for");
        }
        // What the scan left out changes no plan.
        let mut whole = world.clone();
        for release in ["p1/deployments/d5", "p1/deployments/f1", "p1/deployments/g1", "p1/deployments/x y"] {
            whole.files.insert(public(release), Node::Dir);
        }
        let now = t("2025-10-02T12:00:00Z");
        let plan = trueup::plan::plan_unsealed(&specs, &world, now, &Default::default());
        assert_eq!(plan, trueup::plan::plan_unsealed(&specs, &whole, now, &Default::default()));
        let reasons: Vec<&str> = plan.actions.iter().map(|a| a.reason.as_str()).collect();
        // Links that lead to releases there, not dangling ones.
        for there in ["d2`", "d1/public`", "d4/public`", "e1`"] {
            assert!(reasons.iter().any(|r| r.contains("points at") && r.contains(there)), "{there}: {reasons:?}");
        }
    }

    /// Builds `n` projects, each with one release, `current`, a webroot link, and a
    /// deployment in flight whose upload, in one folder apart, exists for every other
    /// project; and observes them.
    fn observe_projects(n: usize) -> ObserveStats {
        let dir = Scratch::new(&format!("scale-{n}"));
        let root = dir.join("www");
        mkdir(&root.join("webroot"));
        let ids: Vec<String> = (0..n).map(|i| format!("p{i:05}")).collect();
        for id in &ids {
            mkdir(&root.join(format!("{id}/deployments/d-{id}/public")));
            symlink(format!("deployments/d-{id}"), root.join(format!("{id}/current"))).unwrap();
            symlink(format!("../{id}/current/public"), root.join(format!("webroot/{id}"))).unwrap();
        }
        let store = Store::open(&dir.join("state.db")).unwrap().0;
        store.upsert_projects(&ids.iter().map(|id| project(id)).collect::<Vec<_>>()).unwrap();
        let mut deployments: Vec<_> = ids.iter().map(|id| deployment(&format!("d-{id}"), id, "ACTIVE")).collect();
        deployments.iter_mut().for_each(|d| d.finished_at = Some(t("2025-10-01T00:00:00Z")));
        let uploads = dir.join("uploads");
        mkdir(&uploads);
        for (i, id) in ids.iter().enumerate() {
            let mut d = deployment(&format!("u-{id}"), id, "BUILDING");
            d.source.file_path = Some(uploads.join(format!("u-{id}.tar.gz")));
            if i % 2 == 0 {
                touch(&uploads.join(format!("u-{id}.tar.gz")));
            }
            deployments.push(d);
        }
        store.insert_deployments(&deployments, t("2025-10-01T00:00:00Z")).unwrap();
        let cfg = ObserveConfig { root, routes_dir: dir.join("routes") };
        let (world, stats) = observe_with_stats(&store, &trueup::spec::default_spec().into(), &cfg).unwrap();
        assert_eq!((world.projects.len(), world.deployments.len()), (n, 2 * n));
        // Per project: the folder, `current`, `deployments`, one release and its `public`,
        // and the webroot link; plus the root and `ROOT/webroot`; and the uploads there.
        assert_eq!(world.files.len(), 2 + 6 * n + n.div_ceil(2));
        stats
    }

    /// Run `TRUEUP_SCALE_PROJECTS=10000 cargo test --test integration observe_cost -- --nocapture`
    /// for the full-size figure.
    #[test]
    fn observe_cost_is_bounded_per_project_and_constant_in_queries() {
        let n: usize = std::env::var("TRUEUP_SCALE_PROJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
        let small = observe_projects(10);
        let large = observe_projects(n);
        eprintln!("observe of 10 projects: {small:?}");
        eprintln!("observe of {n} projects: {large:?}");
        assert_eq!(large.statements, small.statements, "the store is read in a fixed number of statements");
        assert_eq!(large.statements, 5);
        // The uploads, one per project in one folder, are found in one run on the
        // store's thread, beside the scan: the folder is opened and listed once, however
        // many (half of them are there, so it holds fewer entries than paths asked).
        let n = n as u64;
        if crate::seccomp::openat2_denied().is_some() {
            // The first observation asked `openat2` once, and learned it is missing.
            assert_eq!(small.opened, 3 + 2 * 10 + 1, "P and P/deployments, one name at a time");
            assert_eq!(
                large.opened,
                3 + 2 * n,
                "the root, ROOT/webroot and the uploads' folder, then P and P/deployments"
            );
        } else {
            assert_eq!(
                large.opened,
                3 + n,
                "the root, ROOT/webroot and the uploads' folder, then P/deployments through P"
            );
        }
        assert_eq!(large.stat, 2 + n, "the root itself and the routes folder, then each release's `public`");
        assert_eq!(large.read_link, 2 * n, "current and webroot/P");
        assert_eq!(large.read_dir, n + 1, "one listing of P/deployments, and one of the uploads' folder");
    }
}
