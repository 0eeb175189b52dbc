//! Recording the reconciler's verdict on a stuck deployment: resume it, or fail it.
//!
//! Each verdict is one write transaction under the apply lease: claim the deployment
//! (refused while another owner's claim is live), check that it is still where the plan
//! saw it (compare-and-set on phase and last progress), move it, log why with the details an
//! operator needs, and give the claim back. Two reconcilers can therefore never process
//! the same deployment twice, and a repeated verdict is a no-op.

use std::collections::BTreeMap;

use rusqlite::OptionalExtension;

use super::read::timestamp;
use super::{Fence, Lease, LogEntry, LogLevel, Store, StoreError, sql};
use crate::model::{Recorded, Verdict};

impl Store {
    /// Records `verdict` in one transaction fenced by `lease`.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when the lease was lost; [`StoreError::Claimed`] while
    /// another owner's claim on the deployment is live; [`StoreError::Progressed`] when
    /// its worker showed progress since `stuck_since`; [`StoreError::PhaseMoved`] when
    /// the deployment is no longer where the plan saw it; [`StoreError::UnknownDeployment`];
    /// [`StoreError::Sql`].
    pub fn record_verdict(&self, lease: &Lease, verdict: &Verdict<'_>) -> Result<Recorded, StoreError> {
        let id = verdict.deployment;
        let what = format!("record the verdict on deployment `{id}`");
        self.write(&what, || {
            self.check_fence(Fence::Lease(lease), id)?;
            type Row = (String, u32, Option<String>, Option<String>, Option<String>, Option<String>);
            let row: Option<Row> = self
                .stmt(
                    &what,
                    "SELECT phase, attempts, owner, lease_until, phase_updated_at, heartbeat_at
                     FROM deployments WHERE id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .optional()
                .map_err(sql(&what))?;
            let Some((phase, attempts, owner, until, updated, heartbeat)) = row else {
                return Err(StoreError::UnknownDeployment(id.to_owned()));
            };
            let stamp = |column, text| timestamp("deployments", id, column, text);
            let progress = stamp("phase_updated_at", updated)?.max(stamp("heartbeat_at", heartbeat)?);
            let done = match verdict.attempt {
                Some(attempt) => phase == verdict.to_phase && attempts == attempt,
                None => phase == verdict.to_phase,
            };
            if done {
                return Ok(Recorded::AlreadyThere);
            }
            // The claim: refused while someone else holds a live one.
            if let (Some(owner), Some(until)) = (owner, stamp("lease_until", until)?)
                && owner != lease.owner
            {
                // Live at the verdict's instant or at the wall clock: an instant passed in
                // by hand (`--now`) can never make a worker's live claim look lapsed.
                if until > verdict.now.min(crate::time::clock::now()) {
                    return Err(StoreError::Claimed { deployment: id.to_owned(), owner, until });
                }
            }
            // Phase and progress say whether anyone touched it since the plan; attempts
            // alone would not (a move to the next phase starts them afresh).
            let moved = phase != verdict.from_phase;
            if moved {
                return Err(StoreError::PhaseMoved {
                    deployment: id.to_owned(),
                    expected: verdict.from_phase.to_owned(),
                    actual: phase,
                    attempts,
                });
            }
            // A worker that showed progress after the plan was made is not stuck after all.
            if progress != verdict.stuck_since {
                return Err(StoreError::Progressed { deployment: id.to_owned(), since: progress });
            }
            let now = verdict.now.to_string();
            let finished = verdict.attempt.is_none();
            self.exec(
                &what,
                "UPDATE deployments SET phase = ?2, attempts = ?3, phase_updated_at = ?4,
                        finished_at = CASE WHEN ?5 THEN ?4 ELSE finished_at END,
                        owner = NULL, lease_until = NULL
                 WHERE id = ?1",
                (id, verdict.to_phase, verdict.attempt.unwrap_or(attempts), &now, finished),
            )?;
            let (level, message) = match verdict.attempt {
                Some(a) if verdict.to_phase == verdict.from_phase => (
                    LogLevel::Warn,
                    format!("resumed: restarting {} (attempt {a}): {}", verdict.to_phase, verdict.reason),
                ),
                Some(_) => (
                    LogLevel::Warn,
                    format!(
                        "resumed: {} verified, continuing in {}: {}",
                        verdict.from_phase, verdict.to_phase, verdict.reason
                    ),
                ),
                None => (LogLevel::Error, format!("failed in {}: {}", verdict.from_phase, verdict.reason)),
            };
            let mut metadata = BTreeMap::from([
                ("original_phase".to_owned(), verdict.from_phase.to_owned()),
                ("new_phase".to_owned(), verdict.to_phase.to_owned()),
                // The reconciler tried to resume it either way; a failure is that try's outcome.
                ("resume_attempted".to_owned(), "true".to_owned()),
                ("reason".to_owned(), verdict.reason.to_owned()),
                ("attempt".to_owned(), verdict.attempt.unwrap_or(attempts).to_string()),
                ("reconciler".to_owned(), lease.owner.clone()),
            ]);
            if let Some(since) = verdict.stuck_since {
                metadata.insert("stuck_since".to_owned(), since.to_string());
            }
            let entry = LogEntry {
                deployment: id.to_owned(),
                at: verdict.now,
                level,
                phase: Some(verdict.from_phase.to_owned()),
                message,
                metadata,
            };
            self.insert_log(&what, &entry)?;
            Ok(Recorded::Moved)
        })
    }
}
