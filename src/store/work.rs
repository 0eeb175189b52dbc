//! What trueup's own workers write and read: the queue, claims that name their process,
//! phase moves with their log line, and the settings `trueup init` keeps.
//!
//! A claim is a compare-and-set on the deployment row. A worker records its host,
//! process id and process start time with it, so that on the same host a claim whose
//! process is gone is taken over at once (by its owner's name: a claim renewed since by a
//! live worker is never taken). The fence of every later write is the owner's name, which
//! is unique per process, so a worker that lost its claim writes nothing more.

use std::collections::BTreeMap;

use super::write::json;
use super::{Fence, Parsed, Store, StoreError, sql};
use crate::model::{Deployment, LogEntry, Process};
use crate::time::Timestamp;

/// A deployment's move to a phase, with the log line that says why, written together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance<'a> {
    /// The phase it enters.
    pub phase: &'a str,
    /// When.
    pub at: Timestamp,
    /// Its attempt count from now on.
    pub attempts: u32,
    /// True when `phase` is final.
    pub finished: bool,
    /// Metadata entries to add or replace (an upstream, a port); the others are kept.
    pub metadata: &'a BTreeMap<String, String>,
    /// The log line.
    pub log: &'a LogEntry,
}

impl Store {
    /// Records a new deployment in its spec's initial phase, creating its project on
    /// first use (active, with `domain` when given), with a first log line, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`] when the id exists or the database fails.
    pub fn enqueue(&self, deployment: &Deployment, domain: Option<&str>, log: &LogEntry) -> Result<(), StoreError> {
        let what = format!("queue deployment `{}`", deployment.id);
        self.write(&what, || {
            self.exec(
                &what,
                "INSERT INTO projects (id, active, domain) VALUES (?1, 1, ?2)
                 ON CONFLICT (id) DO UPDATE SET domain = coalesce(?2, domain)",
                (&deployment.project, domain),
            )?;
            self.put_deployment(deployment, deployment.created_at.unwrap_or(log.at))?;
            self.insert_log(&what, log)
        })
    }

    /// One deployment, by id.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownDeployment`]; [`StoreError::Corrupt`] for a row that cannot be
    /// read back; [`StoreError::Sql`].
    pub fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        let found = self.deployments_where("WHERE id = ?1", &[id])?;
        found.into_iter().next().ok_or_else(|| StoreError::UnknownDeployment(id.to_owned()))
    }

    /// The head of each project's queue: for every project, its oldest unfinished
    /// deployment (by `created_at`, then the order it was recorded in), oldest first. One deployment of a project
    /// runs at a time, so the newer ones wait behind it, claimed or not.
    ///
    /// A head that cannot be read back (a timestamp an operator edited) is returned apart,
    /// with its project, as by [`Store::load_readable`]: that project's queue waits until
    /// the row is fixed, and the others' still run.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn queue_heads(&self) -> Result<Parsed, StoreError> {
        let (mut heads, unreadable) = self.parsed_deployments_where(
            "WHERE finished_at IS NULL AND NOT EXISTS (
                 SELECT 1 FROM deployments e
                 WHERE e.project = deployments.project AND e.finished_at IS NULL
                   AND (e.created_at < deployments.created_at
                        OR (e.created_at = deployments.created_at AND e.rowid < deployments.rowid)))",
            &[],
        )?;
        // Heads are of different projects: their order is only who goes first.
        heads.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok((heads, unreadable))
    }

    /// Claims unfinished `deployment` for `owner`, running as `process`, until `until`:
    /// only when nobody holds it, its claim lapsed at `now`, or it is held by `dead` (an
    /// owner the caller found gone). Returns whether `owner` got it.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownDeployment`]; [`StoreError::Sql`].
    pub fn claim_for(
        &self,
        deployment: &str,
        owner: &str,
        process: &Process,
        now: Timestamp,
        until: Timestamp,
        dead: Option<&str>,
    ) -> Result<bool, StoreError> {
        let what = format!("claim deployment `{deployment}`");
        self.write(&what, || {
            let changed = self.exec(
                &what,
                "UPDATE deployments SET owner = ?2, lease_until = ?3, claim_host = ?4, claim_pid = ?5,
                        claim_start = ?6
                 WHERE id = ?1 AND finished_at IS NULL
                   AND (owner IS NULL OR lease_until <= ?7 OR owner = ?8)",
                rusqlite::params![
                    deployment,
                    owner,
                    until.to_string(),
                    process.host,
                    process.pid,
                    process.started.and_then(|s| i64::try_from(s).ok()),
                    now.to_string(),
                    dead,
                ],
            )?;
            if changed == 0 {
                self.exists(deployment)?;
            }
            Ok(changed == 1)
        })
    }

    /// Extends `owner`'s claim on `deployment` to `until` and records a heartbeat at
    /// `now`. Returns false, writing nothing, when `owner` no longer holds it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn renew_claim(
        &self,
        deployment: &str,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let what = format!("renew the claim on deployment `{deployment}`");
        self.write(&what, || {
            let changed = self.exec(
                &what,
                "UPDATE deployments SET lease_until = ?3, heartbeat_at = ?4 WHERE id = ?1 AND owner = ?2",
                (deployment, owner, until.to_string(), now.to_string()),
            )?;
            Ok(changed == 1)
        })
    }

    /// Lets `owner`'s claim on `deployment` lapse at `now`, keeping its owner and process:
    /// the claim of a worker that stops (Ctrl-C, SIGTERM) without finishing. Nobody is
    /// held off, and once the worker's process is gone its deployment is resumable at once
    /// (see [`crate::model::Claim::gone`]), without waiting for `stuck_after`. Returns
    /// false, writing nothing, when `owner` no longer holds it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn lapse_claim(&self, deployment: &str, owner: &str, now: Timestamp) -> Result<bool, StoreError> {
        let what = format!("let the claim on deployment `{deployment}` lapse");
        self.write(&what, || {
            let changed = self.exec(
                &what,
                "UPDATE deployments SET lease_until = ?3 WHERE id = ?1 AND owner = ?2",
                (deployment, owner, now.to_string()),
            )?;
            Ok(changed == 1)
        })
    }

    /// Moves `deployment` to a phase and writes its log line, in one transaction, under
    /// `fence`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotClaimed`] or [`StoreError::StaleLease`] when the fence no longer
    /// holds; [`StoreError::UnknownDeployment`]; [`StoreError::Sql`].
    pub fn advance(&self, fence: Fence<'_>, deployment: &str, to: &Advance<'_>) -> Result<(), StoreError> {
        let what = format!("move deployment `{deployment}` to {}", to.phase);
        self.write(&what, || {
            self.check_fence(fence, deployment)?;
            let old: String = self
                .stmt(&what, "SELECT metadata FROM deployments WHERE id = ?1")?
                .query_row([deployment], |r| r.get(0))
                .map_err(sql(&what))?;
            let mut metadata: BTreeMap<String, String> = serde_json::from_str(&old).unwrap_or_default();
            metadata.extend(to.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            let metadata = json(|| format!("the metadata of `{deployment}`"), &metadata)?;
            self.exec(
                &what,
                "UPDATE deployments SET phase = ?2, phase_updated_at = ?3, attempts = ?4,
                        finished_at = CASE WHEN ?5 THEN ?3 ELSE NULL END, metadata = ?6
                 WHERE id = ?1",
                (deployment, to.phase, to.at.to_string(), to.attempts, to.finished, metadata),
            )?;
            self.insert_log(&what, to.log)
        })
    }

    /// Sets a project's domain.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn set_domain(&self, project: &str, domain: &str) -> Result<(), StoreError> {
        let what = format!("set the domain of project `{project}`");
        self.write(&what, || self.exec(&what, "UPDATE projects SET domain = ?2 WHERE id = ?1", (project, domain)))
            .map(drop)
    }

    /// Every setting `trueup init` recorded.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn settings(&self) -> Result<BTreeMap<String, String>, StoreError> {
        const WHAT: &str = "read `settings`";
        self.stmt(WHAT, "SELECT key, value FROM settings ORDER BY key")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(sql(WHAT))
    }

    /// Records settings, replacing those of the same keys, in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn put_settings(&self, settings: &BTreeMap<String, String>) -> Result<(), StoreError> {
        const WHAT: &str = "write `settings`";
        self.write(WHAT, || {
            for (key, value) in settings {
                self.exec(
                    WHAT,
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = ?2",
                    (key, value),
                )?;
            }
            Ok(())
        })
    }
}
