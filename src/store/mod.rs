//! The state store: one SQLite file holding projects, services, deployments, their logs,
//! the apply journal and the single-writer lease.
//!
//! This module owns the schema (embedded, numbered migrations in `migrations/`, applied
//! in order inside one transaction and recorded in `schema_migrations`) and every SQL
//! statement trueup runs. It hands out plain data ([`crate::model::Project`],
//! [`crate::model::Deployment`], [`Lease`], ...) and never decides what to repair: that is
//! [`crate::plan`]'s job.
//!
//! Safety rules it keeps:
//! - A file that is not a trueup database (not SQLite, or SQLite without trueup's
//!   `application_id`) or that was written by a newer trueup is refused with a typed error
//!   and never modified: its header is read before SQLite opens it, and the migration
//!   history is checked again under the write lock before the first write.
//! - Timestamps are RFC 3339 text (`2025-10-02T12:00:00Z`), so operators can read the file
//!   with `sqlite3`; trueup writes them at fixed width, so they also compare as text.
//! - Reads run a bounded number of statements whatever the number of rows
//!   ([`Store::statements`] counts them, for tests).
//! - Writes that apply makes are fenced: they carry the [`Lease`] (or, for a worker, its
//!   deployment claim) and fail with [`StoreError::StaleLease`] (or
//!   [`StoreError::NotClaimed`]) once someone else took over.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::time::Timestamp;

mod journal;
mod lease;
mod read;
mod recover;
mod work;
mod write;

pub use journal::OpenRun;
pub use lease::{DaemonLease, Fence, Held, Holder, Lease, TookOver, Unlocked};
pub use read::{JournalEntry, JournalStatus, Loaded, Parsed, RELEASE_WINDOW};

pub use work::Advance;
pub use write::{JournalOutcome, PhaseUpdate};

/// The `PRAGMA application_id` of every trueup database: `TRUP` in ASCII.
pub const APPLICATION_ID: i32 = 0x5452_5550;

/// The embedded migrations: version, name, SQL. Versions start at 1 and have no gaps.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "live phase index", include_str!("migrations/0002_live_phase_index.sql")),
    (3, "journal skipped status", include_str!("migrations/0003_journal_skipped.sql")),
    (4, "lease holder host and pid", include_str!("migrations/0004_lease_holder.sql")),
    (5, "worker processes and settings", include_str!("migrations/0005_workers_and_settings.sql")),
    (6, "release window indexes", include_str!("migrations/0006_release_window.sql")),
    (7, "daemon lease", include_str!("migrations/0007_daemon_lease.sql")),
    (8, "backwards releases index", include_str!("migrations/0008_backwards_index.sql")),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The oldest schema [`Store::open_read_only`] reads: the reads use no table, column or
/// value added since (later migrations add indexes and the journal's `skipped` status),
/// except the claims' worker processes (schema 5), read as unknown before.
const OLDEST_READABLE: u32 = 1;

/// How long a statement waits for another writer's lock before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Statements run so far (including `BEGIN` and `COMMIT`), see [`Store::statements`].
    statements: Cell<u64>,
    /// Its schema version (older than [`SCHEMA_VERSION`] only when opened read-only).
    schema: u32,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The file did not exist (or was empty): an empty state database was created.
    Created,
    /// An existing database, already at [`SCHEMA_VERSION`].
    Existing,
    /// An existing database, migrated from version `from` to `to`.
    Migrated {
        /// The version it had.
        from: u32,
        /// The version it has now.
        to: u32,
    },
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened by SQLite at all.
    #[error("cannot open the state database `{path}`")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A read-only command found no database to read; nothing was created.
    #[error(
        "no state database at `{path}` ({found}): check `--db`, or create one with `trueup init` \
         (a first `trueup apply` also does)"
    )]
    Missing {
        /// The path.
        path: PathBuf,
        /// What is there instead: no file, or an empty one.
        found: &'static str,
    },
    /// A database too old for a read-only command to read; it was left untouched.
    #[error(
        "the state database `{path}` has schema version {found}, too old to read without migrating it; \
         run `trueup init` or `trueup apply` to migrate it to {SCHEMA_VERSION}"
    )]
    OldSchema {
        /// The file.
        path: PathBuf,
        /// Its newest applied migration.
        found: u32,
    },
    /// The file is not a trueup database; it was not modified.
    #[error("`{path}` is not a trueup state database ({reason}); it was left untouched")]
    NotTrueup {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The file exists but cannot be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer trueup; it was not modified.
    #[error(
        "the state database `{path}` has schema version {found}, newer than the {known} this trueup knows; \
         it was left untouched (upgrade trueup)"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its newest applied migration.
        found: u32,
        /// The newest migration this build knows.
        known: u32,
    },
    /// The `schema_migrations` table does not list versions 1 to N without gaps.
    #[error("the state database `{path}` has an inconsistent migration history: {reason}")]
    BrokenHistory {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// SQLite would not switch the file to write-ahead logging (e.g. an unsupported file system).
    #[error("the state database `{path}` cannot use WAL journaling (journal_mode stayed `{mode}`)")]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode it kept.
        mode: String,
    },
    /// A statement failed.
    #[error("cannot {what} in the state database")]
    Sql {
        /// What was being done, naming the table and row.
        what: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value cannot be read back (for example a timestamp an operator edited).
    #[error("table `{table}`, row `{key}`, column `{column}`: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// The column.
        column: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// A project cannot be stored as given.
    #[error("project `{project}`: {reason}")]
    InvalidProject {
        /// The project.
        project: String,
        /// Why.
        reason: String,
    },
    /// No deployment has this id.
    #[error("no deployment `{0}` in the state database")]
    UnknownDeployment(String),
    /// No journal row has this run and sequence number.
    #[error("no journal entry {seq} of run `{run}`")]
    UnknownJournalEntry {
        /// The run id.
        run: String,
        /// The action's sequence number.
        seq: u32,
    },
    /// Another writer holds the lease.
    #[error("the state database is being changed by `{owner}` (lease held until {until})")]
    LeaseHeld {
        /// Who holds it.
        owner: String,
        /// When it lapses unless renewed.
        until: Timestamp,
    },
    /// The caller's lease was released or taken over: its writes are refused.
    #[error("lease token {token} is stale (current token {current}): another writer took over")]
    StaleLease {
        /// The caller's token.
        token: i64,
        /// The token in the database.
        current: i64,
    },
    /// Another owner holds a live claim on the deployment.
    #[error("deployment `{deployment}` is held by `{owner}` until {until}")]
    Claimed {
        /// The deployment.
        deployment: String,
        /// Who holds it.
        owner: String,
        /// Until when.
        until: Timestamp,
    },
    /// The deployment's worker showed progress after the plan saw it stuck.
    #[error("deployment `{deployment}` progressed since the plan was made (last progress {}): it is left to its worker", since.map_or_else(|| "never".to_owned(), |t| t.to_string()))]
    Progressed {
        /// The deployment.
        deployment: String,
        /// Its last progress now.
        since: Option<Timestamp>,
    },
    /// The deployment is no longer where the plan saw it: someone moved it since.
    #[error("deployment `{deployment}` is in `{actual}` (attempts {attempts}), not `{expected}` as planned")]
    PhaseMoved {
        /// The deployment.
        deployment: String,
        /// The phase the plan saw.
        expected: String,
        /// The phase it is in.
        actual: String,
        /// Its attempts.
        attempts: u32,
    },
    /// A worker wrote to a deployment it no longer holds.
    #[error("deployment `{deployment}` is not claimed by `{owner}`")]
    NotClaimed {
        /// The deployment.
        deployment: String,
        /// The worker that tried to write.
        owner: String,
    },
}

/// Maps a SQLite error to [`StoreError::Sql`] with what was being done.
fn sql<W: Into<String>>(what: W) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { what: what.into(), source }
}

/// Where a database stands before migrating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// An empty file: nothing to protect.
    Empty,
    /// A trueup database at this schema version.
    At(u32),
}

impl Store {
    /// Opens the state database at `path`, creating it when missing, and applies pending
    /// migrations in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotTrueup`] for a file that is not a trueup database,
    /// [`StoreError::NewerSchema`] for one written by a newer trueup (both left untouched),
    /// [`StoreError::BrokenHistory`], [`StoreError::Open`] when SQLite cannot open the
    /// file, [`StoreError::Sql`] when a migration fails (it is rolled back).
    pub fn open(path: &Path) -> Result<(Store, Opened), StoreError> {
        precheck(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        let store = Store { conn, path: path.to_owned(), statements: Cell::new(0), schema: SCHEMA_VERSION };
        store.configure()?;
        let opened = store.migrate()?;
        store.use_wal()?;
        Ok((store, opened))
    }

    /// Opens an existing state database for reading only, for `plan` and `status`: it
    /// creates nothing, migrates nothing and writes nothing. Returns its schema version,
    /// which may be older than [`SCHEMA_VERSION`] (then [`Store::open`] would migrate it).
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] when there is no file or an empty one,
    /// [`StoreError::OldSchema`] for a schema older than the reads understand, and the
    /// errors of [`Store::open`] for a file that is not a trueup database or is newer.
    pub fn open_read_only(path: &Path) -> Result<(Store, u32), StoreError> {
        let missing = |found| StoreError::Missing { path: path.to_owned(), found };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing("no such file")),
            Err(source) => return Err(StoreError::Read { path: path.to_owned(), source }),
            Ok(meta) if meta.is_file() && meta.len() == 0 => return Err(missing("an empty file")),
            Ok(_) => {}
        }
        precheck(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        let mut store = Store { conn, path: path.to_owned(), statements: Cell::new(0), schema: SCHEMA_VERSION };
        store.configure()?;
        match inspect(&store.conn, path, None)? {
            Found::Empty => Err(missing("an empty file")),
            Found::At(found) if found < OLDEST_READABLE => Err(StoreError::OldSchema { path: path.to_owned(), found }),
            Found::At(found) => {
                store.schema = found;
                Ok((store, found))
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many SQL statements this store ran since it was opened (`BEGIN` and `COMMIT`
    /// included). Tests use it to check that reads stay bounded whatever the data size.
    pub fn statements(&self) -> u64 {
        self.statements.get()
    }

    /// Connection settings; none of them writes to the file.
    fn configure(&self) -> Result<(), StoreError> {
        let what = || format!("configure `{}`", self.path.display());
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(what()))?;
        self.conn.pragma_update(None, "foreign_keys", true).map_err(sql(what()))?;
        Ok(())
    }

    /// Switches the file to write-ahead logging, so readers never block the writer. Runs
    /// after [`Store::migrate`] checked the file: it writes the header.
    fn use_wal(&self) -> Result<(), StoreError> {
        let what = || format!("configure `{}`", self.path.display());
        let mode: String = self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql(what()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path: self.path.clone(), mode });
        }
        Ok(())
    }

    /// Applies pending migrations under the write lock, checking the file once more.
    fn migrate(&self) -> Result<Opened, StoreError> {
        let what = || format!("migrate `{}`", self.path.display());
        let before = inspect(&self.conn, &self.path, None)?;
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(sql(what()))?;
        // Under the write lock, once more: another process may have created it meanwhile.
        let found = inspect(&tx, &self.path, Some(before))?;
        let from = match found {
            Found::Empty => {
                tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql(what()))?;
                tx.execute_batch(
                    "CREATE TABLE schema_migrations (
                        version    INTEGER PRIMARY KEY NOT NULL,
                        name       TEXT NOT NULL,
                        applied_at TEXT NOT NULL
                    ) STRICT;",
                )
                .map_err(sql(what()))?;
                0
            }
            Found::At(v) => v,
        };
        for &(version, name, text) in MIGRATIONS.iter().filter(|m| m.0 > from) {
            let what = || format!("apply migration {version:04}_{name} to `{}`", self.path.display());
            tx.execute_batch(text).map_err(sql(what()))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at)
                 VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                (version, name),
            )
            .map_err(sql(what()))?;
        }
        // Only when it differs: writing the header, even with the same value, bumps the
        // file's change counter, and opening an up-to-date database must change nothing
        // (`trueup plan`, `status` and `apply --dry-run` only read).
        let user_version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql(what()))?;
        if user_version != SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql(what()))?;
        }
        tx.commit().map_err(sql(what()))?;
        Ok(match found {
            Found::Empty => Opened::Created,
            Found::At(v) if v == SCHEMA_VERSION => Opened::Existing,
            Found::At(v) => Opened::Migrated { from: v, to: SCHEMA_VERSION },
        })
    }

    /// Runs `f` inside an immediate (write-locked) transaction, rolled back on error.
    fn write<T>(&self, what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Immediate, what, f)
    }

    /// Runs `f` inside a transaction, rolled back on error. Reads use a deferred one so
    /// that several statements see one snapshot.
    fn transaction<T>(
        &self,
        behavior: TransactionBehavior,
        what: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.count(1);
        let tx = Transaction::new_unchecked(&self.conn, behavior).map_err(sql(what))?;
        let out = f()?;
        self.count(1);
        tx.commit().map_err(sql(what))?;
        Ok(out)
    }

    /// Prepares (or reuses) a statement and counts one statement run.
    fn stmt(&self, what: &str, text: &str) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        self.count(1);
        self.conn.prepare_cached(text).map_err(sql(what))
    }

    /// Runs one statement that returns no rows; returns the number of rows changed.
    fn exec<P: rusqlite::Params>(&self, what: &str, text: &str, params: P) -> Result<usize, StoreError> {
        self.stmt(what, text)?.execute(params).map_err(sql(what))
    }

    fn count(&self, n: u64) {
        self.statements.set(self.statements.get() + n);
    }
}

/// Looks at an existing file's 100-byte SQLite header before SQLite opens it, so that a
/// foreign file is refused without SQLite creating so much as a `-shm` beside it.
fn precheck(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut header = Vec::with_capacity(100);
    match std::fs::File::open(path) {
        Ok(file) => file.take(100).read_to_end(&mut header),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|source| StoreError::Read { path: path.to_owned(), source })?;
    let not_trueup = |reason: String| StoreError::NotTrueup { path: path.to_owned(), reason };
    if header.is_empty() {
        return Ok(());
    }
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Err(not_trueup("not an SQLite database".to_owned()));
    }
    let be = |at: usize| i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let app_id = be(68);
    if app_id != APPLICATION_ID {
        return Err(not_trueup(format!("its application_id is {app_id:#x}, not trueup's {APPLICATION_ID:#x}")));
    }
    // trueup sets user_version to its schema version at every migration.
    let user_version = u32::try_from(be(60)).unwrap_or(u32::MAX);
    if user_version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: path.to_owned(), found: user_version, known: SCHEMA_VERSION });
    }
    Ok(())
}

/// Reads (never writes) what the file is: empty, or a trueup database at some version.
///
/// `earlier` is what an inspection before the caller's write transaction found: beginning
/// one gives an empty file its first page, still with no marker and no tables.
fn inspect(conn: &Connection, path: &Path, earlier: Option<Found>) -> Result<Found, StoreError> {
    let not_trueup = |reason: String| StoreError::NotTrueup { path: path.to_owned(), reason };
    let pages: i64 = match conn.query_row("PRAGMA page_count", [], |r| r.get(0)) {
        Ok(n) => n,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            return Err(not_trueup("not an SQLite database".to_owned()));
        }
        Err(source) => return Err(StoreError::Open { path: path.to_owned(), source }),
    };
    if pages == 0 {
        return Ok(Found::Empty);
    }
    let what = || format!("read the header of `{}`", path.display());
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(sql(what()))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql(what()))?;
    if earlier == Some(Found::Empty) && app_id == 0 && objects == 0 {
        return Ok(Found::Empty);
    }
    if app_id != APPLICATION_ID {
        return Err(not_trueup(format!("its application_id is {app_id:#x}, not trueup's {APPLICATION_ID:#x}")));
    }
    let has_table: bool = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'", [], |r| {
            r.get(0)
        })
        .map_err(sql(what()))?;
    if !has_table {
        return Err(not_trueup("it has no `schema_migrations` table".to_owned()));
    }
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version").map_err(sql(what()))?;
    let versions = stmt
        .query_map([], |r| r.get::<_, i64>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(sql(what()))?;
    let found = versions.last().copied().unwrap_or(0);
    if found > i64::from(SCHEMA_VERSION) {
        let found = u32::try_from(found).unwrap_or(u32::MAX);
        return Err(StoreError::NewerSchema { path: path.to_owned(), found, known: SCHEMA_VERSION });
    }
    if versions.iter().zip(1..).any(|(&v, want)| v != want) {
        let reason = format!("expected versions 1 to {found} without gaps, found {versions:?}");
        return Err(StoreError::BrokenHistory { path: path.to_owned(), reason });
    }
    Ok(Found::At(u32::try_from(found).expect("the gap check above makes versions exactly 1..=found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, (version, _, text)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
            assert!(!text.trim().is_empty());
        }
    }

    #[test]
    fn error_messages_name_the_file() {
        let e = StoreError::NewerSchema { path: "/s/state.db".into(), found: 7, known: 1 };
        assert_eq!(
            e.to_string(),
            "the state database `/s/state.db` has schema version 7, newer than the 1 this trueup knows; \
             it was left untouched (upgrade trueup)"
        );
    }
}
