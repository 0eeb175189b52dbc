//! Applies that did not finish: journal rows left `planned` by a run that was killed.
//!
//! A crashed apply is visible: its rows stay `planned`. The next apply, holding a newer
//! lease, closes them as failed with the reason (it redoes their work from a fresh plan,
//! since every action is idempotent), and `trueup status` reports any run still open.

use super::read::time_column;
use super::{Fence, Lease, Store, StoreError, sql};
use crate::time::Timestamp;

/// A run with actions journaled as planned that never ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenRun {
    /// The run id.
    pub run: String,
    /// The lease token it held.
    pub token: i64,
    /// How many of its actions never ended.
    pub unfinished: u32,
    /// When it journaled its plan.
    pub since: Timestamp,
}

impl Store {
    /// Runs with actions still `planned`, oldest first: the apply holding the lease now,
    /// or applies that died.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for an unreadable timestamp; [`StoreError::Sql`].
    pub fn open_runs(&self) -> Result<Vec<OpenRun>, StoreError> {
        const WHAT: &str = "read the unfinished runs of the `journal`";
        let rows: Vec<(String, i64, u32, String)> = self
            .stmt(
                WHAT,
                "SELECT run, max(token), count(*), min(at) FROM journal WHERE status = 'planned'
                 GROUP BY run ORDER BY min(at), run",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sql(WHAT))?
            .collect::<Result<_, _>>()
            .map_err(sql(WHAT))?;
        rows.into_iter()
            .map(|(run, token, unfinished, at)| {
                let since = time_column("journal", &run, "at", &at)?;
                Ok(OpenRun { run, token, unfinished, since })
            })
            .collect()
    }

    /// Closes the `planned` rows of runs older than `lease` as failed, saying that run
    /// `by` took over. Returns how many rows it closed.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`]; [`StoreError::Sql`].
    pub fn close_open_runs(&self, lease: &Lease, by: &str, at: Timestamp) -> Result<usize, StoreError> {
        const WHAT: &str = "close the unfinished runs of the `journal`";
        let error = format!(
            "interrupted: the apply stopped before this action ended; closed by run `{by}`, which plans afresh"
        );
        self.write(WHAT, || {
            self.check_fence(Fence::Lease(lease), "")?;
            self.exec(
                WHAT,
                "UPDATE journal SET status = 'failed', error = ?1, at = ?2 WHERE status = 'planned' AND token < ?3",
                (&error, at.to_string(), lease.token),
            )
        })
    }
}
