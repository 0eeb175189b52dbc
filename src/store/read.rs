//! Reading the store: the snapshot [`crate::world::observe`] builds a world from, the stuck
//! scan, deployment logs and the journal.
//!
//! Every reader runs a fixed number of statements, inside one read transaction so that
//! they see one consistent snapshot, whatever the number of rows.

use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{Row, TransactionBehavior};

use super::{Store, StoreError, sql};
use crate::model::{Claim, Deployment, DeploymentType, LogEntry, LogLevel, Process, Project, Service, Source};
use crate::time::Timestamp;

/// Where a journaled action stands.
///
/// Its names ([`JournalStatus::as_str`]) are the one spelling of the journal's states in
/// Rust: statements bind them, or format them into their text where SQLite must see the
/// value to use a partial index. The migrations spell them in their `CHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStatus {
    /// Written before the action ran: a crash leaves it here, and the run stays open.
    Planned,
    /// The action completed.
    Done,
    /// The action failed; `error` says why.
    Failed,
    /// The action was not tried (a worker kept its deployment, or it built on an action
    /// that did not succeed); `error` says why. It is finished, like done and failed.
    Skipped,
}

impl JournalStatus {
    /// Every status.
    pub const ALL: &'static [JournalStatus] =
        &[JournalStatus::Planned, JournalStatus::Done, JournalStatus::Failed, JournalStatus::Skipped];

    /// Its name in the `journal.status` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Planned => "planned",
            JournalStatus::Done => "done",
            JournalStatus::Failed => "failed",
            JournalStatus::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }
}

/// One action of an apply run, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The run id.
    pub run: String,
    /// The action's position in the plan.
    pub seq: u32,
    /// The action, as JSON.
    pub action: serde_json::Value,
    /// Planned, done, failed or skipped.
    pub status: JournalStatus,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// When the status was last written.
    pub at: Timestamp,
    /// The fencing token of the writer.
    pub token: i64,
}

/// What [`Store::load_readable`] returns: the projects, the deployments that could be
/// read, and each row that could not, with its project.
pub type Loaded = (Vec<Project>, Vec<Deployment>, Vec<(String, StoreError)>);

/// Deployment rows read back: those that parse, and each that does not, with its project.
pub type Parsed = (Vec<Deployment>, Vec<(String, StoreError)>);

/// The columns a [`Deployment`] is read from, in [`RawDeployment`]'s order.
const DEPLOYMENT_COLUMNS: &str = "id, project, service, type, phase, phase_updated_at, heartbeat_at, attempts, \
                                  finished_at, source, metadata, owner, lease_until, created_at, \
                                  claim_host, claim_pid, claim_start";

/// How many of a project's newest finished deployments in a live phase are read: the
/// latest, which `current` follows. The older ones, its fallbacks, matter only once its
/// release folder is gone: a project whose window all lost its folder, while the folder
/// of a deployment not read is there, gets the rest read by [`Store::load_live_of`] (see
/// [`crate::world::observe`]), so no fallback is missed. Each one more in the window is a
/// row more per project on every run for what is nearly never needed: a window of 3
/// read half the rows of 10,000 projects with two releases each and a history, and a
/// third of them without.
pub const RELEASE_WINDOW: u32 = 1;

/// What the reconciler reads of `deployments`, as one statement over indexes only:
///
/// - every open deployment (the stuck scan: no `finished_at`), through an index of open rows
///   (`deployments_open` or `deployments_queue`);
/// - of the finished ones, project by project, through a `rowid IN` that reads each row
///   once however many of these reasons select it:
///   - the newest [`RELEASE_WINDOW`] per project in a live phase (`{LIVE}`, one parameter
///     per phase), through `deployments_newest`: the live release;
///   - those in a live phase created after a deployment of their project that is still
///     open: they may supersede it. Such a release finished after it was created, so
///     after the open one was, and is found among its project's newest, through
///     `deployments_newest` again, right after the window: the index page is still in
///     SQLite's cache, and a history costs one page per project, not two. A release
///     recorded as finished before it was created (a clock set back in between) is found
///     through `deployments_backwards`, which holds only those, from each open deployment
///     of a known project rather than from each project: no page of that index is shared
///     with the window, and a project with nothing open then costs no second look for
///     one;
///   - those a worker still holds, through `deployments_claimed` (a claim protects its
///     project, whatever the phase).
///
///   The last two, both nearly always none, through a `rowid IN` of their own: a row one
///   of them selects that the project's reasons selected too is read twice, and the
///   second dropped once the rows are sorted ([`Store::parsed_deployments_where`]). The
///   project's rows are selected in the join with the projects that finds them, rather
///   than their rowids gathered for all the projects and looked up again: 22 million
///   instructions fewer at 10,000 projects, and 1,700 fewer pages read with a history
///   of 1,000,000 rows.
///
/// The rest of the history is never read. An older schema, without those indexes, is
/// read by the same statement, through the indexes it has.
///
/// The `CROSS JOIN`s fix the order of the loops (SQLite keeps the left table outside), so
/// that the projects or their open deployments drive the lookups, not the history; the
/// `+` keeps the phase filter off the `deployments_by_phase` index, and the claimed rows
/// on the index of claims rather than a walk of every finished row, for the same reason.
///
/// `{OF}`, `{OF_P}`, `{OF_O}` and `{OF_H}` narrow it to one project (see [`Of`]): each
/// part then starts from that project's entries of the same indexes.
const RECONCILABLE: &str = "WHERE finished_at IS NULL{OF} \
     UNION ALL SELECT {N_COLUMNS} FROM projects p CROSS JOIN deployments n ON n.rowid IN ( \
         SELECT rowid FROM (SELECT w.rowid FROM deployments w \
             WHERE w.project = p.id AND w.finished_at IS NOT NULL AND w.phase IN ({LIVE}) \
             ORDER BY w.finished_at DESC, w.id DESC LIMIT {WINDOW}) \
         UNION ALL SELECT c.rowid FROM deployments o CROSS JOIN deployments c \
             ON c.project = o.project AND c.finished_at > o.created_at AND c.created_at > o.created_at \
             WHERE o.project = p.id AND o.finished_at IS NULL AND +c.phase IN ({LIVE})){OF_P} \
     UNION ALL SELECT {COLUMNS} FROM deployments WHERE finished_at IS NOT NULL AND rowid IN ( \
         SELECT c.rowid FROM deployments o CROSS JOIN deployments c \
             ON c.project = o.project AND c.created_at > o.created_at AND c.finished_at < c.created_at \
             WHERE o.finished_at IS NULL AND +c.phase IN ({LIVE}){OF_O} \
                 AND EXISTS (SELECT 1 FROM projects p WHERE p.id = o.project) \
         UNION ALL SELECT h.rowid FROM deployments h WHERE h.owner IS NOT NULL AND +h.finished_at IS NOT NULL{OF_H})";

/// The statement that reads the deployments `filter` selects, in no particular order.
fn deployments_where(filter: &str) -> String {
    format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments {filter}")
}

/// Whose deployments a reconcilable read selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Of {
    /// Every project's.
    All,
    /// Those of the project given as the parameter after the `live` phases.
    OneProject,
}

/// The filter of [`Store::load_reconcilable`] for `live` phases, of `of`'s projects.
fn reconcilable(live: &[&str], of: Of) -> String {
    let project = format!("?{}", live.len() + 1);
    let (open, projects, opened, claimed) = match of {
        Of::All => (String::new(), String::new(), String::new(), String::new()),
        Of::OneProject => (
            format!(" AND project = {project}"),
            format!(" WHERE p.id = {project}"),
            format!(" AND o.project = {project}"),
            format!(" AND h.project = {project}"),
        ),
    };
    RECONCILABLE
        .replace("{N_COLUMNS}", &columns_of("n"))
        .replace("{COLUMNS}", DEPLOYMENT_COLUMNS)
        .replace("{LIVE}", &placeholders(live.len()))
        .replace("{WINDOW}", &RELEASE_WINDOW.to_string())
        .replace("{OF_P}", &projects)
        .replace("{OF_O}", &opened)
        .replace("{OF_H}", &claimed)
        .replace("{OF}", &open)
}

/// [`DEPLOYMENT_COLUMNS`], each named as a column of `table`.
fn columns_of(table: &str) -> String {
    DEPLOYMENT_COLUMNS.split(',').map(|column| format!("{table}.{}", column.trim())).collect::<Vec<_>>().join(", ")
}

/// `?1, ?2, ... ?n`.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// A `deployments` row as stored, before its text columns are parsed.
struct RawDeployment<'r> {
    id: String,
    project: String,
    service: Option<String>,
    kind: &'r str,
    phase: String,
    phase_updated_at: Option<&'r str>,
    heartbeat_at: Option<&'r str>,
    /// Read wide, so that a value out of range is this row's problem, not the query's.
    attempts: i64,
    finished_at: Option<&'r str>,
    source: &'r str,
    metadata: &'r str,
    owner: Option<String>,
    lease_until: Option<&'r str>,
    created_at: Option<&'r str>,
    claim_host: Option<String>,
    /// Read wide, as `attempts`.
    claim_pid: Option<i64>,
    claim_start: Option<i64>,
}

impl<'r> RawDeployment<'r> {
    /// The columns a [`Deployment`] keeps as text are copied out of the row; those it
    /// parses (its type, times, source and metadata) are borrowed from it, as the row is
    /// parsed before the next one is read.
    fn from_row(r: &'r Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawDeployment {
            id: r.get(0)?,
            project: r.get(1)?,
            service: r.get(2)?,
            kind: text(r, 3)?,
            phase: r.get(4)?,
            phase_updated_at: text_or_null(r, 5)?,
            heartbeat_at: text_or_null(r, 6)?,
            attempts: r.get(7)?,
            finished_at: text_or_null(r, 8)?,
            source: text(r, 9)?,
            metadata: text(r, 10)?,
            owner: r.get(11)?,
            lease_until: text_or_null(r, 12)?,
            created_at: text_or_null(r, 13)?,
            claim_host: r.get(14)?,
            claim_pid: r.get(15)?,
            claim_start: r.get(16)?,
        })
    }

    fn parse(self) -> Result<Deployment, StoreError> {
        let key = self.id.as_str();
        let corrupt =
            |column, reason: String| StoreError::Corrupt { table: "deployments", key: key.to_owned(), column, reason };
        let Some(kind) = DeploymentType::from_name(self.kind) else {
            return Err(corrupt("type", format!("unknown type `{}`", self.kind)));
        };
        let attempts = u32::try_from(self.attempts)
            .map_err(|_| corrupt("attempts", format!("{} is not a count of attempts", self.attempts)))?;
        let source: Source = serde_json::from_str(self.source).map_err(|e| corrupt("source", e.to_string()))?;
        let metadata = serde_json::from_str(self.metadata).map_err(|e| corrupt("metadata", e.to_string()))?;
        let process = match (self.claim_host, self.claim_pid) {
            (Some(host), Some(pid)) => Some(Process {
                host,
                pid: u32::try_from(pid).map_err(|_| corrupt("claim_pid", format!("{pid} is not a process id")))?,
                started: self.claim_start.and_then(|s| u64::try_from(s).ok()),
            }),
            _ => None,
        };
        let owner = match (self.owner, timestamp("deployments", key, "lease_until", self.lease_until)?) {
            (Some(owner), Some(until)) => Some(Claim { process, ..Claim::new(owner, until) }),
            _ => None,
        };
        Ok(Deployment {
            phase_updated_at: timestamp("deployments", key, "phase_updated_at", self.phase_updated_at)?,
            heartbeat_at: timestamp("deployments", key, "heartbeat_at", self.heartbeat_at)?,
            finished_at: timestamp("deployments", key, "finished_at", self.finished_at)?,
            created_at: timestamp("deployments", key, "created_at", self.created_at)?,
            id: self.id,
            project: self.project,
            service: self.service,
            kind,
            phase: self.phase,
            attempts,
            source,
            metadata,
            owner,
        })
    }
}

/// Column `i` of `r` as text borrowed from the row, or the error `Row::get::<String>`
/// gives for a value that is not text.
fn text<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    let value = r.get_ref(i)?;
    value.as_str().map_err(|e| read_error(r, i, value, e))
}

/// [`text`], or `None` for NULL, as `Row::get::<Option<String>>`.
fn text_or_null<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    let value = r.get_ref(i)?;
    value.as_str_or_null().map_err(|e| read_error(r, i, value, e))
}

/// The error of reading column `i` of `r`, holding `value`, as `Row::get` words it.
fn read_error(r: &Row<'_>, i: usize, value: ValueRef<'_>, error: FromSqlError) -> rusqlite::Error {
    match error {
        FromSqlError::InvalidType => {
            let name = r.as_ref().column_name(i).unwrap_or_default().to_owned();
            rusqlite::Error::InvalidColumnType(i, name, value.data_type())
        }
        FromSqlError::Utf8Error(e) => rusqlite::Error::Utf8Error(i, e),
        other => rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(other)),
    }
}

/// The row a [`RawDeployment::parse`] error names (its id), for sorting.
fn corrupt_row(error: &StoreError) -> &str {
    match error {
        StoreError::Corrupt { key, .. } => key,
        _ => "",
    }
}

/// Parses an optional RFC 3339 column.
pub(super) fn timestamp(
    table: &'static str,
    key: &str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, StoreError> {
    text.map(|t| time_column(table, key, column, t)).transpose()
}

/// Parses an RFC 3339 column, naming the table, row and column of a value that is not one.
pub(super) fn time_column(
    table: &'static str,
    key: &str,
    column: &'static str,
    text: &str,
) -> Result<Timestamp, StoreError> {
    text.parse().map_err(|e: crate::time::TimeError| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        column,
        reason: e.to_string(),
    })
}

impl Store {
    /// Every project (with its services) and every deployment, sorted: projects by id,
    /// services by id, deployments by project then id. Runs five statements whatever the
    /// number of rows.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the database fails; [`StoreError::Corrupt`] naming the row
    /// and column of a value that cannot be read back.
    pub fn load(&self) -> Result<(Vec<Project>, Vec<Deployment>), StoreError> {
        self.transaction(TransactionBehavior::Deferred, "load the state", || {
            Ok((self.projects()?, self.deployments_where("", &[])?))
        })
    }

    /// What the reconciler needs, and not the history: every project, every unfinished
    /// deployment (the stuck scan: no `finished_at`, so not in a final phase), of those in
    /// one of the `live` phases (one per spec, see [`crate::spec::Specs::live_phases`]) the
    /// newest [`RELEASE_WINDOW`] per project (the releases `current` may point at) and
    /// every one created after an open deployment of its project (which it may
    /// supersede), and every finished one still claimed by a worker, sorted like
    /// [`Store::load`]. Five statements whatever the number of rows; the deployments come
    /// from one query over indexes (see `RECONCILABLE`).
    ///
    /// # Errors
    ///
    /// As [`Store::load`].
    pub fn load_reconcilable(&self, live: &[&str]) -> Result<(Vec<Project>, Vec<Deployment>), StoreError> {
        let ((projects, deployments, mut unreadable), (), ()) = self.load_readable(live, |_| (), |_| ())?;
        match unreadable.pop() {
            Some((_, error)) => Err(error),
            None => Ok((projects, deployments)),
        }
    }

    /// What [`Store::load_reconcilable`] reads of one project's deployments, sorted by id,
    /// in one statement over the same indexes, starting from that project's entries: what
    /// a run of one of its deployments asks (is a newer one live already, which release
    /// to go back to) costs the same with one project as with ten thousand and their
    /// history, and a row of another project that cannot be read back is never read.
    ///
    /// # Errors
    ///
    /// As [`Store::load`], for a row of this project.
    pub fn reconcilable_of(&self, project: &str, live: &[&str]) -> Result<Vec<Deployment>, StoreError> {
        let params: Vec<&str> = live.iter().copied().chain([project]).collect();
        self.deployments_where(&reconcilable(live, Of::OneProject), &params)
    }

    /// The project `id`, with its services, or `None` when there is none: two statements
    /// over its own rows.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the database fails; [`StoreError::Corrupt`] for a
    /// `services` row of `id` without its project.
    pub fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        self.transaction(TransactionBehavior::Deferred, "read a project", || Ok(self.projects_where(Some(id))?.pop()))
    }

    /// [`Store::load_reconcilable`], except that a deployment row that cannot be read
    /// back (a timestamp an operator edited, a count out of range) does not fail the
    /// load: it is returned apart, with its project, so that the other projects are
    /// still reconciled.
    ///
    /// `beside` is given the projects as soon as they are read, and runs on a thread of its
    /// own while the deployments are read and parsed: the observer scans their folders meanwhile.
    /// What it sees comes after what the store says, as when it runs after the load: the
    /// transaction's snapshot is taken by the first read, that of the projects. `then` is
    /// given the deployments as soon as they are parsed, and runs on this thread while
    /// `beside` may still run: the observer looks up their sources meanwhile.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the database fails; [`StoreError::Corrupt`] for a
    /// `services` row without its project. When the projects cannot be read, neither
    /// `beside` nor `then` runs; when the deployments cannot, `then` does not run and what
    /// `beside` returned is dropped.
    pub fn load_readable<T: Send, U>(
        &self,
        live: &[&str],
        beside: impl FnOnce(&[Project]) -> T + Send,
        then: impl FnOnce(&[Deployment]) -> U,
    ) -> Result<(Loaded, T, U), StoreError> {
        self.transaction(TransactionBehavior::Deferred, "load the state", || {
            let projects = self.projects()?;
            let (parsed, beside) = std::thread::scope(|s| {
                let beside = crate::threads::spawn(s, || beside(&projects));
                let parsed = self
                    .parsed_deployments_where(&reconcilable(live, Of::All), live)
                    .map(|parsed| (then(&parsed.0), parsed));
                (parsed, beside.join())
            });
            let (then, (deployments, unreadable)) = parsed?;
            Ok(((projects, deployments, unreadable), beside, then))
        })
    }

    /// Every finished deployment in one of the `live` phases of `projects`, sorted like
    /// [`Store::load`], in one statement: the fallbacks beyond [`RELEASE_WINDOW`], read
    /// only for a project whose newest ones all lost their release folder. Rows that
    /// cannot be read back are returned apart, as by [`Store::load_readable`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the database fails.
    pub fn load_live_of(&self, projects: &[&str], live: &[&str]) -> Result<Parsed, StoreError> {
        let filter = format!(
            "WHERE finished_at IS NOT NULL AND phase IN ({}) AND project IN (SELECT value FROM json_each(?{}))",
            placeholders(live.len()),
            live.len() + 1
        );
        let list = serde_json::to_string(projects).expect("a list of strings always serializes");
        let params: Vec<&str> = live.iter().copied().chain([list.as_str()]).collect();
        self.parsed_deployments_where(&filter, &params)
    }

    /// The log of `deployment`, oldest first.
    ///
    /// # Errors
    ///
    /// As [`Store::load`].
    pub fn logs(&self, deployment: &str) -> Result<Vec<LogEntry>, StoreError> {
        let what = format!("read `deployment_logs` of `{deployment}`");
        let mut stmt = self.stmt(
            &what,
            "SELECT at, level, phase, message, metadata FROM deployment_logs WHERE deployment = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([deployment], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sql(&what))?;
        rows.into_iter()
            .map(|(at, level, phase, message, metadata)| {
                let corrupt = |column, reason: String| StoreError::Corrupt {
                    table: "deployment_logs",
                    key: deployment.to_owned(),
                    column,
                    reason,
                };
                Ok(LogEntry {
                    deployment: deployment.to_owned(),
                    at: at.parse().map_err(|e: crate::time::TimeError| corrupt("at", e.to_string()))?,
                    level: LogLevel::parse(&level)
                        .ok_or_else(|| corrupt("level", format!("unknown level `{level}`")))?,
                    phase,
                    message,
                    metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e.to_string()))?,
                })
            })
            .collect()
    }

    /// The journal of apply run `run`, by sequence number.
    ///
    /// # Errors
    ///
    /// As [`Store::load`].
    pub fn journal(&self, run: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let what = format!("read the `journal` of run `{run}`");
        let mut stmt =
            self.stmt(&what, "SELECT seq, action, status, error, at, token FROM journal WHERE run = ?1 ORDER BY seq")?;
        let rows = stmt
            .query_map([run], |r| {
                let row: (u32, String, String, Option<String>, String, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                Ok(row)
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sql(&what))?;
        rows.into_iter()
            .map(|(seq, action, status, error, at, token)| {
                let corrupt = |column, reason: String| StoreError::Corrupt {
                    table: "journal",
                    key: format!("{run}/{seq}"),
                    column,
                    reason,
                };
                Ok(JournalEntry {
                    run: run.to_owned(),
                    seq,
                    action: serde_json::from_str(&action).map_err(|e| corrupt("action", e.to_string()))?,
                    status: JournalStatus::parse(&status)
                        .ok_or_else(|| corrupt("status", format!("unknown status `{status}`")))?,
                    error,
                    at: at.parse().map_err(|e: crate::time::TimeError| corrupt("at", e.to_string()))?,
                    token,
                })
            })
            .collect()
    }

    /// Projects with their services: two statements.
    fn projects(&self) -> Result<Vec<Project>, StoreError> {
        self.projects_where(None)
    }

    /// The project `only`, or every project, with their services: two statements.
    fn projects_where(&self, only: Option<&str>) -> Result<Vec<Project>, StoreError> {
        let (of_project, of_service, params) = match only {
            Some(id) => ("WHERE id = ?1 ", "WHERE project = ?1 ", vec![id]),
            None => ("", "", Vec::new()),
        };
        const WHAT: &str = "read `projects`";
        let mut projects = self
            .stmt(WHAT, &format!("SELECT id, active, domain FROM projects {of_project}ORDER BY id"))?
            .query_map(rusqlite::params_from_iter(&params), |r| {
                Ok(Project { id: r.get(0)?, active: r.get(1)?, domain: r.get(2)?, services: Vec::new() })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sql(WHAT))?;
        const SERVICES: &str = "read `services`";
        let services = self
            .stmt(SERVICES, &format!("SELECT project, id, \"primary\" FROM services {of_service}ORDER BY project, id"))?
            .query_map(rusqlite::params_from_iter(&params), |r| {
                Ok((r.get::<_, String>(0)?, Service { id: r.get(1)?, primary: r.get(2)? }))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sql(SERVICES))?;
        // Both in id order (bytes, SQLite's `BINARY` collation): each service's project is
        // found by walking forward, not searched for.
        let mut at = 0;
        for (project, service) in services {
            while projects.get(at).is_some_and(|p| p.id < project) {
                at += 1;
            }
            let Some(owner) = projects.get_mut(at).filter(|p| p.id == project) else {
                return Err(StoreError::Corrupt {
                    table: "services",
                    key: format!("{project}/{}", service.id),
                    column: "project",
                    reason: format!("no project `{project}`"),
                });
            };
            owner.services.push(service);
        }
        Ok(projects)
    }

    /// Deployments matching `filter` (empty, or a `WHERE` clause over `params`), sorted by
    /// project then id: one statement. The first row that cannot be read back, in that
    /// order, fails the whole read.
    pub(super) fn deployments_where(&self, filter: &str, params: &[&str]) -> Result<Vec<Deployment>, StoreError> {
        let (deployments, unreadable) = self.parsed_deployments_where(filter, params)?;
        match unreadable.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(deployments),
        }
    }

    /// The deployments `filter` selects, as [`Store::deployments_where`], each row parsed
    /// as soon as it is read (the rows are never all held twice, as text and parsed):
    /// those that parse, and each that does not, with its project, both sorted by project
    /// then id.
    pub(super) fn parsed_deployments_where(&self, filter: &str, params: &[&str]) -> Result<Parsed, StoreError> {
        const WHAT: &str = "read `deployments`";
        let mut deployments = Vec::new();
        let mut unreadable = Vec::new();
        let mut stmt = self.stmt(WHAT, &self.deployments_statement(filter))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(sql(WHAT))?;
        while let Some(row) = rows.next().map_err(sql(WHAT))? {
            let mut raw = RawDeployment::from_row(row).map_err(sql(WHAT))?;
            // Moved out and back rather than copied: only a row that fails needs it apart.
            let project = std::mem::take(&mut raw.project);
            match raw.parse() {
                Ok(d) => deployments.push(Deployment { project, ..d }),
                Err(error) => unreadable.push((project, error)),
            }
        }
        // By project then id, as SQLite's `ORDER BY project, id` would (bytes, like its
        // `BINARY` collation; ids are unique), but without its sorter, which writes every
        // selected row, whole, to a temporary file once there are a few thousand. The
        // rows mostly come in runs already in that order (the open ones through an index
        // by project, the finished ones project by project, each's by rowid, which follows
        // the order they were written in), which a stable sort finds and merges: 24 million instructions fewer
        // than an unstable sort on the bench's world of 10,000 projects (callgrind); rows
        // in no order it sorts all the same.
        deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
        unreadable.sort_by(|(a, e), (b, f)| (a, corrupt_row(e)).cmp(&(b, corrupt_row(f))));
        // A row read twice, for two reasons (see `RECONCILABLE`), is the same row twice.
        deployments.dedup_by(|a, b| a.id == b.id);
        unreadable.dedup_by(|(a, e), (b, f)| a == b && corrupt_row(e) == corrupt_row(f));
        Ok((deployments, unreadable))
    }

    /// The statement of the deployments `filter` selects, in the columns this schema has.
    fn deployments_statement(&self, filter: &str) -> String {
        let text = deployments_where(filter);
        if self.schema < 5 {
            // Before schema 5 no claim recorded its worker's process.
            return text
                .replace("n.claim_host, n.claim_pid, n.claim_start", "NULL, NULL, NULL")
                .replace("claim_host, claim_pid, claim_start", "NULL, NULL, NULL");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new store in a folder of its own (kept with it) holding what `sql` inserts.
    fn store_with(name: &str, sql: &str) -> (crate::test_dir::TestDir, Store) {
        let dir = crate::test_dir::TestDir::new(name);
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.conn.execute_batch(sql).unwrap();
        (dir, store)
    }

    #[test]
    fn rows_read_are_sorted_by_project_then_id_and_those_that_fail_kept_apart() {
        // Inserted out of order; `b`'s d3 and d1 and `a`'s d7 carry a time that is none.
        let (_dir, store) = store_with(
            "read-sorted",
            "INSERT INTO projects (id) VALUES ('b'), ('a');
                 INSERT INTO deployments (id, project, type, phase, created_at, finished_at) VALUES
                   ('d5', 'b', 'upload', 'BUILDING', '2025-10-01T00:00:00Z', NULL),
                   ('d3', 'b', 'upload', 'BUILDING', 'soon', NULL),
                   ('d9', 'a', 'upload', 'ACTIVE', '2025-10-01T00:00:00Z', '2025-10-01T01:00:00Z'),
                   ('d1', 'b', 'upload', 'BUILDING', 'later', NULL),
                   ('d7', 'a', 'upload', 'BUILDING', 'never', NULL),
                   ('d2', 'a', 'upload', 'BUILDING', '2025-10-01T00:00:00Z', NULL);",
        );
        // `then` is given the deployments read, as they are returned.
        let ids_of = |ds: &[Deployment]| ds.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        let ((projects, deployments, unreadable), (), given) =
            store.load_readable(&["ACTIVE"], |_| (), ids_of).unwrap();
        let ids = |ps: &[Project]| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&projects), ["a", "b"]);
        let rows: Vec<(&str, &str)> = deployments.iter().map(|d| (d.project.as_str(), d.id.as_str())).collect();
        assert_eq!(rows, [("a", "d2"), ("a", "d9"), ("b", "d5")]);
        assert_eq!(given, ids_of(&deployments));
        let failed: Vec<(&str, &str)> = unreadable.iter().map(|(p, e)| (p.as_str(), corrupt_row(e))).collect();
        assert_eq!(failed, [("a", "d7"), ("b", "d1"), ("b", "d3")]);
        assert!(unreadable.iter().all(|(_, e)| e.to_string().contains("column `created_at`")), "{unreadable:?}");
    }

    #[test]
    fn a_row_selected_for_two_reasons_is_read_once() {
        // `d1`, the live release, is held by a worker; `d2`, held too, is one that cannot be
        // read back: each is selected as the window and as claimed.
        let (_dir, store) = store_with(
            "read-twice",
            "INSERT INTO projects (id) VALUES ('a'), ('b');
                 INSERT INTO deployments (id, project, type, phase, created_at, finished_at, owner, lease_until) VALUES
                   ('d1', 'a', 'upload', 'ACTIVE', '2025-10-01T00:00:00Z', '2025-10-01T01:00:00Z', 'w', '2025-10-01T02:00:00Z'),
                   ('d2', 'b', 'upload', 'ACTIVE', 'never', '2025-10-01T01:00:00Z', 'w', '2025-10-01T02:00:00Z');",
        );
        let ((_, deployments, unreadable), (), ()) = store.load_readable(&["ACTIVE"], |_| (), |_| ()).unwrap();
        let ids: Vec<&str> = deployments.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d1"]);
        assert!(deployments[0].owner.is_some(), "read with its claim");
        let failed: Vec<(&str, &str)> = unreadable.iter().map(|(p, e)| (p.as_str(), corrupt_row(e))).collect();
        assert_eq!(failed, [("b", "d2")]);
    }

    #[test]
    fn text_that_is_not_utf8_fails_the_read_naming_its_column_borrowed_or_copied() {
        // The tables are strict, so a value of another type cannot be stored; bytes that
        // are no UTF-8 can, as text. `created_at` is borrowed from the row, `phase`
        // copied out of it: both fail the read alike, naming the column's place.
        let index = |column: &str| DEPLOYMENT_COLUMNS.split(',').position(|c| c.trim() == column).unwrap();
        for column in ["created_at", "phase", "heartbeat_at"] {
            let (_dir, store) = store_with(
                &format!("read-utf8-{column}"),
                &format!(
                    "INSERT INTO projects (id) VALUES ('a');
                     INSERT INTO deployments (id, project, type, phase, created_at) VALUES
                       ('d1', 'a', 'upload', 'BUILDING', '2025-10-01T00:00:00Z');
                     UPDATE deployments SET {column} = CAST(x'ff' AS TEXT);"
                ),
            );
            let then = |_: &[Deployment]| panic!("`then` runs only once the deployments are read");
            let cause = format!("{:?}", store.load_readable(&["ACTIVE"], |_| (), then).unwrap_err());
            assert!(cause.contains(&format!("Utf8Error({}, ", index(column))), "{column}: {cause}");
        }
    }

    #[test]
    fn services_join_their_projects_and_one_without_its_project_is_named() {
        let (_dir, store) = store_with(
            "read-services",
            "INSERT INTO projects (id) VALUES ('b'), ('a'), ('c'), ('ab');
             INSERT INTO services (project, id, \"primary\") VALUES
               ('c', 'web', 1), ('a', 'worker', 0), ('ab', 'web', 1), ('a', 'web', 1);",
        );
        let projects = store.projects().unwrap();
        let services: Vec<(&str, Vec<&str>)> =
            projects.iter().map(|p| (p.id.as_str(), p.services.iter().map(|s| s.id.as_str()).collect())).collect();
        assert_eq!(services, [("a", vec!["web", "worker"]), ("ab", vec!["web"]), ("b", vec![]), ("c", vec!["web"])]);
        // A row of a project that is gone (written with the foreign keys off), between
        // two that are there and after the last: each read names it.
        for orphan in ["aa", "d"] {
            store
                .conn
                .execute_batch(&format!(
                    "PRAGMA foreign_keys = OFF; DELETE FROM services WHERE project NOT IN (SELECT id FROM projects);
                     INSERT INTO services (project, id) VALUES ('{orphan}', 'api'); PRAGMA foreign_keys = ON;"
                ))
                .unwrap();
            let error = store.projects().unwrap_err().to_string();
            let named = format!("table `services`, row `{orphan}/api`, column `project`: no project `{orphan}`");
            assert_eq!(error, named);
        }
    }

    /// The steps of SQLite's plan of the reconcilable read of `of`, for two live phases.
    fn query_plan(store: &Store, of: Of) -> Vec<String> {
        let text = format!("EXPLAIN QUERY PLAN {}", deployments_where(&reconcilable(&["ACTIVE", "RUNNING"], of)));
        let params: &[&str] = if of == Of::All { &["ACTIVE", "RUNNING"] } else { &["ACTIVE", "RUNNING", "p"] };
        let mut stmt = store.conn.prepare(&text).unwrap();
        stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn the_reconciler_reads_deployments_through_indexes_only() {
        let path = std::env::temp_dir().join(format!("trueup-unit-{}-stuck-plan.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (store, _) = Store::open(&path).unwrap();
        let plan = query_plan(&store, Of::All);
        let one = query_plan(&store, Of::OneProject);
        drop(store);
        let _ = std::fs::remove_file(&path);
        // One project's read starts from its entries: no scan but of a window it made.
        assert!(one.iter().all(|s| !s.starts_with("SCAN") || s.starts_with("SCAN (subquery-")), "{one:#?}");
        assert!(one.iter().any(|s| s.starts_with("SEARCH p USING") && s.contains("(id=?)")), "{one:#?}");
        // Its open rows through either index of open rows, its claimed ones through theirs.
        let open = ["deployments_open", "deployments_queue"]
            .map(|i| format!("SEARCH deployments USING INDEX {i} (project=?)"));
        assert!(one.iter().any(|s| open.contains(s)), "{one:#?}");
        assert!(one.contains(&"SEARCH h USING INDEX deployments_claimed (project=?)".to_owned()), "{one:#?}");
        assert_eq!(one.iter().filter(|s| s.contains("deployments_newest")).count(), 2, "{one:#?}");
        assert!(!one.iter().any(|step| step.contains("TEMP B-TREE FOR ORDER BY")), "{one:#?}");
        // No full scan of the table, and the history (the live phase) never drives a loop:
        // every scan goes through an index of open or claimed rows, or over the projects.
        // (A scan of a subquery goes over the few rows it made: a project's window.)
        let scans: Vec<&String> =
            plan.iter().filter(|s| s.starts_with("SCAN") && !s.starts_with("SCAN (subquery-")).collect();
        let through = ["deployments_open", "deployments_queue", "deployments_claimed", "sqlite_autoindex_projects"];
        assert!(scans.iter().all(|s| through.iter().any(|i| s.contains(i))), "{plan:#?}");
        assert!(!plan.iter().any(|s| s.contains("deployments_by_phase")), "{plan:#?}");
        for index in ["deployments_newest", "deployments_backwards", "deployments_claimed"] {
            assert!(plan.iter().any(|step| step.contains(index)), "{index} is not used: {plan:#?}");
        }
        // The releases created after an open deployment are looked up where the window
        // was, not in an index of their own.
        let newest = plan.iter().filter(|step| step.contains("deployments_newest")).count();
        assert_eq!(newest, 2, "{plan:#?}");
        // Those recorded as finished before they were created, from the open deployments
        // rather than from each project: one walk of the index of open rows.
        let from_open = plan.iter().filter(|s| s.starts_with("SCAN o USING INDEX deployments_")).count();
        assert_eq!(from_open, 1, "{plan:#?}");
        // The open rows through either index of open rows (unordered, SQLite may take either).
        let open = ["deployments_open", "deployments_queue"];
        assert!(plan.iter().any(|step| open.iter().any(|i| step.contains(i))), "{plan:#?}");
        // The rows are sorted in Rust: SQLite's sorter would spill them to a file.
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE FOR ORDER BY")), "{plan:#?}");
    }
}
