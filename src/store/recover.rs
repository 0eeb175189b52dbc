//! Recording the reconciler's verdict on a stuck deployment: resume it, or fail it.
//!
//! Each verdict is one write transaction under the apply lease: read the deployment's
//! row, let [`model::verdict`] decide (already there; refused while another owner's claim
//! is live, or when the deployment moved or progressed since the plan; else what to
//! write), and write what it says: the move, the claim given back, and the log line. Two
//! reconcilers can therefore never process the same deployment twice, and a repeated
//! verdict is a no-op.
//!
//! This file only reads and writes: the decision, its order of checks and the log text
//! live in [`model::verdict`], which the in-memory world of the property tests runs too.

use rusqlite::OptionalExtension;

use super::read::timestamp;
use super::{Fence, Lease, Store, StoreError, sql};
use crate::model::{self, Claim, Decision, Move, Recorded, Refusal, Standing, Verdict};
use crate::time::Timestamp;

impl Store {
    /// Records `verdict` in one transaction fenced by `lease`, reading the wall clock.
    ///
    /// # Errors
    ///
    /// As [`Store::record_verdict_at`].
    pub fn record_verdict(&self, lease: &Lease, verdict: &Verdict<'_>) -> Result<Recorded, StoreError> {
        self.record_verdict_at(lease, verdict, crate::time::clock::now())
    }

    /// Records `verdict` in one transaction fenced by `lease`, with the wall clock at
    /// `wall` (a claim must have lapsed at the earlier of `verdict.now` and `wall`, see
    /// [`model::verdict`]). [`Store::record_verdict`] passes the system clock; tests pass
    /// their own.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when the lease was lost; [`StoreError::Claimed`] while
    /// another owner's claim on the deployment is live; [`StoreError::PhaseMoved`] when
    /// the deployment is no longer where the plan saw it; [`StoreError::Progressed`] when
    /// its worker showed progress since `stuck_since`; [`StoreError::UnknownDeployment`];
    /// [`StoreError::Corrupt`] for an unreadable timestamp; [`StoreError::Sql`].
    pub fn record_verdict_at(
        &self,
        lease: &Lease,
        verdict: &Verdict<'_>,
        wall: Timestamp,
    ) -> Result<Recorded, StoreError> {
        let id = verdict.deployment;
        let what = format!("record the verdict on deployment `{id}`");
        self.write(&what, || {
            self.check_fence(Fence::Lease(lease), id)?;
            let row = self.standing(&what, id)?;
            match model::verdict(verdict, &row, wall, &lease.owner) {
                Decision::AlreadyThere => Ok(Recorded::AlreadyThere),
                Decision::Refused(why) => Err(refused(verdict, why)),
                Decision::Go(to) => {
                    self.write_move(&what, id, &to)?;
                    Ok(Recorded::Moved)
                }
            }
        })
    }

    /// What the verdict reads of deployment `id`'s row, inside the caller's transaction.
    fn standing(&self, what: &str, id: &str) -> Result<Standing, StoreError> {
        type Row = (String, u32, Option<String>, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> = self
            .stmt(
                what,
                "SELECT phase, attempts, owner, lease_until, phase_updated_at, heartbeat_at
                 FROM deployments WHERE id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .optional()
            .map_err(sql(what))?;
        let Some((phase, attempts, owner, until, updated, heartbeat)) = row else {
            return Err(StoreError::UnknownDeployment(id.to_owned()));
        };
        let stamp = |column, text: Option<String>| timestamp("deployments", id, column, text.as_deref());
        // An owner without an expiry is no claim, as `Store::load` reads it.
        let owner = owner.zip(stamp("lease_until", until)?).map(|(owner, until)| Claim::new(owner, until));
        let last_progress = stamp("phase_updated_at", updated)?.max(stamp("heartbeat_at", heartbeat)?);
        Ok(Standing { phase, attempts, owner, last_progress })
    }

    /// Writes a verdict's move and its log line, inside the caller's transaction.
    fn write_move(&self, what: &str, id: &str, to: &Move) -> Result<(), StoreError> {
        self.exec(
            what,
            "UPDATE deployments SET phase = ?2, attempts = ?3, phase_updated_at = ?4,
                    finished_at = coalesce(?5, finished_at), owner = NULL, lease_until = NULL,
                    claim_host = NULL, claim_pid = NULL, claim_start = NULL
             WHERE id = ?1",
            (id, &to.phase, to.attempts, to.phase_updated_at.to_string(), to.finished_at.map(|t| t.to_string())),
        )?;
        self.insert_log(what, &to.log)
    }
}

/// The error for a verdict [`model::verdict`] refused.
fn refused(verdict: &Verdict<'_>, why: Refusal) -> StoreError {
    let deployment = verdict.deployment.to_owned();
    match why {
        Refusal::Claimed { owner, until } => StoreError::Claimed { deployment, owner, until },
        Refusal::PhaseMoved { actual, attempts } => {
            StoreError::PhaseMoved { deployment, expected: verdict.from_phase.to_owned(), actual, attempts }
        }
        Refusal::Progressed { since } => StoreError::Progressed { deployment, since },
    }
}
