//! Writing the store: the catalog (projects, services, deployments) that the PaaS API
//! records, and the fenced writes that apply and workers make (phases, heartbeats, claims,
//! logs, journal).
//!
//! Each public writer is one transaction. Claims are compare-and-set on the deployment
//! row, so two workers can never both hold one.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Fence, JournalStatus, Lease, Store, StoreError, sql};
use crate::model::{Deployment, LogEntry, Project};
use crate::time::Timestamp;

/// How one action of an apply ended, for [`Store::journal_outcomes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOutcome<'a> {
    /// The action's place in its run.
    pub seq: u32,
    /// Done, failed or skipped.
    pub status: JournalStatus,
    /// Why it failed or was skipped.
    pub error: Option<&'a str>,
}

/// A deployment's move to a phase, as [`Store::set_phase`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseUpdate<'a> {
    /// The phase it enters.
    pub phase: &'a str,
    /// When (becomes `phase_updated_at`, and `finished_at` when `finished`).
    pub at: Timestamp,
    /// Its attempt count from now on.
    pub attempts: u32,
    /// True when `phase` is final: sets `finished_at`, so the stuck scan skips it.
    pub finished: bool,
    /// New phase metadata, replacing the old; `None` keeps it.
    pub metadata: Option<&'a BTreeMap<String, String>>,
}

pub(super) fn json<T: Serialize>(what: impl FnOnce() -> String, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what: what(), source })
}

fn text(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

impl Store {
    /// Creates or updates `project` and its services, in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidProject`] when it has services but not exactly one primary;
    /// [`StoreError::Sql`] when the database refuses (for example removing a service a
    /// deployment still uses).
    pub fn upsert_project(&self, project: &Project) -> Result<(), StoreError> {
        self.upsert_projects(std::slice::from_ref(project))
    }

    /// Creates or updates many projects in one transaction (imports, tests at scale).
    ///
    /// # Errors
    ///
    /// As [`Store::upsert_project`]; nothing is written when one fails.
    pub fn upsert_projects(&self, projects: &[Project]) -> Result<(), StoreError> {
        self.write("write `projects`", || projects.iter().try_for_each(|p| self.put_project(p)))
    }

    fn put_project(&self, p: &Project) -> Result<(), StoreError> {
        let primaries = p.services.iter().filter(|s| s.primary).count();
        if !p.services.is_empty() && primaries != 1 {
            let reason = format!("needs exactly one primary service, has {primaries}");
            return Err(StoreError::InvalidProject { project: p.id.clone(), reason });
        }
        let what = format!("write project `{}`", p.id);
        self.exec(
            &what,
            "INSERT INTO projects (id, active, domain) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET active = excluded.active, domain = excluded.domain",
            (&p.id, p.active, &p.domain),
        )?;
        let ids =
            json(|| format!("the services of `{}`", p.id), &p.services.iter().map(|s| &s.id).collect::<Vec<_>>())?;
        self.exec(
            &what,
            "DELETE FROM services WHERE project = ?1 AND id NOT IN (SELECT value FROM json_each(?2))",
            (&p.id, &ids),
        )?;
        // Clear the old primary first: the unique index allows one at a time.
        self.exec(&what, "UPDATE services SET \"primary\" = 0 WHERE project = ?1", [&p.id])?;
        for s in &p.services {
            self.exec(
                &what,
                "INSERT INTO services (project, id, \"primary\") VALUES (?1, ?2, ?3)
                 ON CONFLICT (project, id) DO UPDATE SET \"primary\" = excluded.\"primary\"",
                (&p.id, &s.id, s.primary),
            )?;
        }
        Ok(())
    }

    /// Records a new deployment, created at its own `created_at`, else at `created_at`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the id exists, the project or service is unknown, or the
    /// database fails.
    pub fn insert_deployment(&self, deployment: &Deployment, created_at: Timestamp) -> Result<(), StoreError> {
        self.insert_deployments(std::slice::from_ref(deployment), created_at)
    }

    /// Records many new deployments in one transaction.
    ///
    /// # Errors
    ///
    /// As [`Store::insert_deployment`]; nothing is written when one fails.
    pub fn insert_deployments(&self, deployments: &[Deployment], created_at: Timestamp) -> Result<(), StoreError> {
        self.write("write `deployments`", || deployments.iter().try_for_each(|d| self.put_deployment(d, created_at)))
    }

    pub(super) fn put_deployment(&self, d: &Deployment, created_at: Timestamp) -> Result<(), StoreError> {
        let what = format!("insert deployment `{}`", d.id);
        let source = json(|| format!("the source of deployment `{}`", d.id), &d.source)?;
        let metadata = json(|| format!("the metadata of deployment `{}`", d.id), &d.metadata)?;
        let process = d.owner.as_ref().and_then(|c| c.process.as_ref());
        self.exec(
            &what,
            "INSERT INTO deployments (id, project, service, type, phase, phase_updated_at, heartbeat_at, attempts,
                                      finished_at, created_at, source, metadata, owner, lease_until,
                                      claim_host, claim_pid, claim_start)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            rusqlite::params![
                d.id,
                d.project,
                d.service,
                d.kind.name(),
                d.phase,
                text(d.phase_updated_at),
                text(d.heartbeat_at),
                d.attempts,
                text(d.finished_at),
                d.created_at.unwrap_or(created_at).to_string(),
                source,
                metadata,
                d.owner.as_ref().map(|c| &c.owner),
                text(d.owner.as_ref().map(|c| c.until)),
                process.map(|p| &p.host),
                process.map(|p| p.pid),
                process.and_then(|p| p.started).and_then(|s| i64::try_from(s).ok()),
            ],
        )?;
        Ok(())
    }

    /// Moves `deployment` to a phase, under `fence`.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] or [`StoreError::NotClaimed`] when the fence no longer
    /// holds; [`StoreError::UnknownDeployment`]; [`StoreError::Sql`].
    pub fn set_phase(&self, fence: Fence<'_>, deployment: &str, update: &PhaseUpdate<'_>) -> Result<(), StoreError> {
        let what = format!("set the phase of deployment `{deployment}`");
        let metadata = update.metadata.map(|m| json(|| format!("the metadata of `{deployment}`"), m)).transpose()?;
        self.write(&what, || {
            self.check_fence(fence, deployment)?;
            let changed = self.exec(
                &what,
                "UPDATE deployments SET phase = ?2, phase_updated_at = ?3, attempts = ?4,
                        finished_at = CASE WHEN ?5 THEN ?3 ELSE NULL END, metadata = coalesce(?6, metadata)
                 WHERE id = ?1",
                (deployment, update.phase, update.at.to_string(), update.attempts, update.finished, metadata),
            )?;
            found(changed, deployment)
        })
    }

    /// Records a sign of life from the worker running `deployment`, under `fence`.
    ///
    /// # Errors
    ///
    /// As [`Store::set_phase`].
    pub fn heartbeat(&self, fence: Fence<'_>, deployment: &str, at: Timestamp) -> Result<(), StoreError> {
        let what = format!("record a heartbeat of deployment `{deployment}`");
        self.write(&what, || {
            self.check_fence(fence, deployment)?;
            let changed = self.exec(
                &what,
                "UPDATE deployments SET heartbeat_at = ?2 WHERE id = ?1",
                (deployment, at.to_string()),
            )?;
            found(changed, deployment)
        })
    }

    /// Claims `deployment` for `owner` until `until`, only when it is unclaimed or its
    /// claim lapsed at `now` (an atomic compare-and-set). Returns whether `owner` got it.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownDeployment`]; [`StoreError::Sql`].
    pub fn claim(&self, deployment: &str, owner: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        let what = format!("claim deployment `{deployment}`");
        self.write(&what, || {
            let changed = self.exec(
                &what,
                "UPDATE deployments SET owner = ?2, lease_until = ?3, claim_host = NULL, claim_pid = NULL, claim_start = NULL
                 WHERE id = ?1 AND (owner IS NULL OR lease_until <= ?4)",
                (deployment, owner, until.to_string(), now.to_string()),
            )?;
            if changed == 0 {
                self.exists(deployment)?;
            }
            Ok(changed == 1)
        })
    }

    /// Gives up `owner`'s claim on `deployment`. Returns false (and changes nothing) when
    /// `owner` does not hold it.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownDeployment`]; [`StoreError::Sql`].
    pub fn release_claim(&self, deployment: &str, owner: &str) -> Result<bool, StoreError> {
        let what = format!("release the claim on deployment `{deployment}`");
        self.write(&what, || {
            let changed = self.exec(
                &what,
                "UPDATE deployments SET owner = NULL, lease_until = NULL, claim_host = NULL, claim_pid = NULL,
                        claim_start = NULL
                 WHERE id = ?1 AND owner = ?2",
                (deployment, owner),
            )?;
            if changed == 0 {
                self.exists(deployment)?;
            }
            Ok(changed == 1)
        })
    }

    /// Appends a line to a deployment's log, under `fence`.
    ///
    /// # Errors
    ///
    /// As [`Store::set_phase`].
    pub fn append_log(&self, fence: Fence<'_>, entry: &LogEntry) -> Result<(), StoreError> {
        let what = format!("append to the log of deployment `{}`", entry.deployment);
        self.write(&what, || {
            self.check_fence(fence, &entry.deployment)?;
            self.insert_log(&what, entry)
        })
    }

    /// Inserts a log line, inside the caller's transaction.
    pub(super) fn insert_log(&self, what: &str, entry: &LogEntry) -> Result<(), StoreError> {
        let metadata = json(|| format!("log metadata of `{}`", entry.deployment), &entry.metadata)?;
        self.exec(
            what,
            "INSERT INTO deployment_logs (deployment, at, level, phase, message, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            (&entry.deployment, entry.at.to_string(), entry.level.as_str(), &entry.phase, &entry.message, metadata),
        )?;
        Ok(())
    }

    /// Journals action `seq` of apply run `run` as planned, before it runs. Writing the
    /// same entry again (a retried run) resets it to planned.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`]; [`StoreError::Encode`]; [`StoreError::Sql`].
    pub fn journal_planned<A: Serialize>(
        &self,
        lease: &Lease,
        run: &str,
        seq: u32,
        action: &A,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.journal_plan(lease, run, &[(seq, action)], at)
    }

    /// Journals the actions of apply run `run` as planned, all in one transaction (one
    /// sync of the database for the whole plan), each as [`Store::journal_planned`] does.
    ///
    /// # Errors
    ///
    /// As [`Store::journal_planned`]; nothing is written then.
    pub fn journal_plan<A: Serialize>(
        &self,
        lease: &Lease,
        run: &str,
        actions: &[(u32, A)],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let Some((first, _)) = actions.first() else { return Ok(()) };
        let what = match actions.len() {
            1 => format!("journal action {first} of run `{run}`"),
            n => format!("journal {n} actions of run `{run}` from action {first}"),
        };
        let rows = actions
            .iter()
            .map(|(seq, action)| Ok((*seq, json(|| format!("action {seq} of run `{run}`"), action)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let at = at.to_string();
        self.write(&what, || {
            self.check_fence(Fence::Lease(lease), "")?;
            for (seq, action) in &rows {
                self.exec(
                    &what,
                    "INSERT INTO journal (run, seq, action, status, error, at, token) VALUES (?1, ?2, ?3, ?6, NULL, ?4, ?5)
                     ON CONFLICT (run, seq) DO UPDATE SET action = excluded.action, status = excluded.status, error = NULL,
                                                          at = excluded.at, token = excluded.token",
                    (run, seq, action, &at, lease.token, JournalStatus::Planned.as_str()),
                )?;
            }
            Ok(())
        })
    }

    /// Journals action `seq` of run `run` as done.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`]; [`StoreError::UnknownJournalEntry`]; [`StoreError::Sql`].
    pub fn journal_done(&self, lease: &Lease, run: &str, seq: u32, at: Timestamp) -> Result<(), StoreError> {
        self.journal_status(lease, run, seq, JournalStatus::Done, None, at)
    }

    /// Journals action `seq` of run `run` as failed, with why.
    ///
    /// # Errors
    ///
    /// As [`Store::journal_done`].
    pub fn journal_failed(
        &self,
        lease: &Lease,
        run: &str,
        seq: u32,
        error: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.journal_status(lease, run, seq, JournalStatus::Failed, Some(error), at)
    }

    /// Journals action `seq` of run `run` as skipped (not tried), with why.
    ///
    /// # Errors
    ///
    /// As [`Store::journal_done`].
    pub fn journal_skipped(
        &self,
        lease: &Lease,
        run: &str,
        seq: u32,
        why: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.journal_status(lease, run, seq, JournalStatus::Skipped, Some(why), at)
    }

    fn journal_status(
        &self,
        lease: &Lease,
        run: &str,
        seq: u32,
        status: JournalStatus,
        error: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.journal_outcomes(lease, run, &[JournalOutcome { seq, status, error }], at)
    }

    /// Journals how actions of run `run` ended, all in one transaction (one sync of the
    /// database for the batch). The caller writes an action's outcome only once what the
    /// action changed is durable, so the journal never says done what a power cut could
    /// undo.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`]; [`StoreError::UnknownJournalEntry`] for an action that
    /// was never journaled as planned; [`StoreError::Sql`]. Nothing is written then.
    pub fn journal_outcomes(
        &self,
        lease: &Lease,
        run: &str,
        outcomes: &[JournalOutcome<'_>],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let Some(first) = outcomes.first() else { return Ok(()) };
        let what = match outcomes.len() {
            1 => format!("journal the outcome of action {} of run `{run}`", first.seq),
            n => format!("journal the outcomes of {n} actions of run `{run}` from action {}", first.seq),
        };
        let at = at.to_string();
        self.write(&what, || {
            self.check_fence(Fence::Lease(lease), "")?;
            for o in outcomes {
                let changed = self.exec(
                    &what,
                    "UPDATE journal SET status = ?3, error = ?4, at = ?5, token = ?6 WHERE run = ?1 AND seq = ?2",
                    (run, o.seq, o.status.as_str(), o.error, &at, lease.token),
                )?;
                if changed == 0 {
                    return Err(StoreError::UnknownJournalEntry { run: run.to_owned(), seq: o.seq });
                }
            }
            Ok(())
        })
    }

    /// Checks, reading only, that `lease` is still the current apply lease: cheaper than
    /// renewing it, which writes and syncs the database.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when it was released, expired and taken, or unlocked;
    /// [`StoreError::Sql`].
    pub fn check_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.check_fence(Fence::Lease(lease), "")
    }

    /// Fails with [`StoreError::UnknownDeployment`] when `deployment` does not exist.
    pub(super) fn exists(&self, deployment: &str) -> Result<(), StoreError> {
        let what = format!("look up deployment `{deployment}`");
        let n: i64 = self
            .stmt(&what, "SELECT count(*) FROM deployments WHERE id = ?1")?
            .query_row([deployment], |r| r.get(0))
            .map_err(sql(&what))?;
        found(usize::try_from(n).unwrap_or(0), deployment)
    }
}

/// `Ok` when a statement touched the deployment, [`StoreError::UnknownDeployment`] otherwise.
fn found(changed: usize, deployment: &str) -> Result<(), StoreError> {
    if changed == 0 { Err(StoreError::UnknownDeployment(deployment.to_owned())) } else { Ok(()) }
}
