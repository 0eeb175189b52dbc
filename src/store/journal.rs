//! Applies that did not finish: journal rows left `planned` by a run that was killed.
//!
//! An action's row is `planned` until it ends `done`, `failed` or `skipped`
//! ([`JournalStatus`]), so a crashed apply is visible: its rows stay `planned`. The next
//! apply, holding a newer lease, closes them as failed with the reason (it redoes their
//! work from a fresh plan, since every action is idempotent), and `trueup status` reports
//! any run still open. A skipped action ended: it never keeps its run open.

use std::path::PathBuf;

use super::read::time_column;
use super::{Fence, JournalStatus, Lease, Store, StoreError, sql};
use crate::plan::{Action, Change};
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
            .stmt(WHAT, &open_runs_sql())?
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

    /// The links that run `run` had planned to switch and did not journal as ended:
    /// where, killed in the middle of a switch, it may have left the old link under its
    /// temporary name (see [`crate::world::effects::RealFs`]). Rows that are not link
    /// switches, or that no longer parse as actions, are passed over. Not through
    /// [`Store::journal`]: that reads every row of the run, done ones too, and fails on
    /// one it cannot read, where a clean-up after a crash must not stop at a bad row.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn unfinished_links(&self, run: &str) -> Result<Vec<PathBuf>, StoreError> {
        const WHAT: &str = "read the unfinished actions of a run in the `journal`";
        let query =
            format!("SELECT action FROM journal WHERE run = ?1 AND status = '{}'", JournalStatus::Planned.as_str());
        let rows: Vec<String> = self
            .stmt(WHAT, &query)?
            .query_map([run], |r| r.get(0))
            .map_err(sql(WHAT))?
            .collect::<Result<_, _>>()
            .map_err(sql(WHAT))?;
        Ok(rows
            .iter()
            .filter_map(|row| match serde_json::from_str::<Action>(row).ok()?.change {
                Change::Link { path, .. } => Some(path),
                _ => None,
            })
            .collect())
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
                &format!(
                    "UPDATE journal SET status = ?4, error = ?1, at = ?2 WHERE status = '{}' AND token < ?3",
                    JournalStatus::Planned.as_str()
                ),
                (&error, at.to_string(), lease.token, JournalStatus::Failed.as_str()),
            )
        })
    }
}

/// The runs with `planned` rows. The status is in the text, not bound: SQLite uses the
/// partial index `journal_planned` only for a condition it sees when it prepares.
fn open_runs_sql() -> String {
    format!(
        "SELECT run, max(token), count(*), min(at) FROM journal WHERE status = '{}' GROUP BY run ORDER BY min(at), run",
        JournalStatus::Planned.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_runs_are_found_by_index_and_every_status_is_allowed() {
        let path = std::env::temp_dir().join(format!("trueup-unit-{}-open-runs.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (store, _) = Store::open(&path).unwrap();
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", open_runs_sql()))
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The schema's CHECK allows exactly the statuses the code spells.
        let allowed: Vec<bool> = JournalStatus::ALL
            .iter()
            .map(|status| {
                store
                    .conn
                    .execute(
                        "INSERT INTO journal (run, seq, action, status, at, token) VALUES ('r', 0, '{}', ?1, 'x', 0)",
                        [status.as_str()],
                    )
                    .and_then(|_| store.conn.execute("DELETE FROM journal", []))
                    .is_ok()
            })
            .collect();
        let unknown = store.conn.execute(
            "INSERT INTO journal (run, seq, action, status, at, token) VALUES ('r', 0, '{}', 'lost', 'x', 0)",
            [],
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
        assert!(plan.iter().any(|step| step.contains("journal_planned")), "{plan:?}");
        assert!(allowed.iter().all(|ok| *ok), "{allowed:?}");
        assert!(unknown.is_err());
    }
}
