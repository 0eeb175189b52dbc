//! The single-writer lease and the fences that writes carry.
//!
//! One row in `lease` says who may change the world (an `apply` run) and until when. Each
//! acquisition bumps a fencing token; every fenced write checks, in its own transaction,
//! that the token it carries is still the current one, so a writer that stalled past its
//! lease and was replaced cannot write anything afterwards.

use rusqlite::OptionalExtension;

use super::read::time_column;
use super::{Store, StoreError, sql};
use crate::time::{Duration, Timestamp};

/// A held lease: proof that its owner is the one writer, until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (a process or host name; unique per process).
    pub owner: String,
    /// When it lapses unless renewed.
    pub until: Timestamp,
    /// The fencing token: grows by one at every acquisition.
    pub token: i64,
}

/// What a write to a deployment carries to prove its writer may still make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// The apply lease: its token must still be current.
    Lease(&'a Lease),
    /// A worker's claim on the deployment it writes: it must still hold it.
    Claim {
        /// The worker, as it claimed the deployment.
        owner: &'a str,
    },
}

impl Store {
    /// Takes the single-writer lease for `owner` until `now + ttl`, when nobody holds it
    /// or the holder's lease lapsed. Every acquisition gets a new fencing token.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseHeld`] naming the holder while another lease is live;
    /// [`StoreError::Sql`] when the database fails.
    pub fn acquire_lease(&self, owner: &str, now: Timestamp, ttl: Duration) -> Result<Lease, StoreError> {
        const WHAT: &str = "acquire the `lease`";
        let until = now.plus(ttl);
        self.write(WHAT, || {
            let token: Option<i64> = self
                .stmt(
                    WHAT,
                    "UPDATE lease SET owner = ?1, until = ?2, token = token + 1
                     WHERE name = 'apply'
                       AND (owner IS NULL OR until <= ?3 OR length(until) != length(?3))
                     RETURNING token",
                )?
                .query_row((owner, until.to_string(), now.to_string()), |r| r.get(0))
                .optional()
                .map_err(sql(WHAT))?;
            match token {
                Some(token) => Ok(Lease { owner: owner.to_owned(), until, token }),
                None => Err(self.lease_holder()?),
            }
        })
    }

    /// Who holds the lease, or last held it without releasing it, and until when.
    ///
    /// An expiry that is not a fixed-width timestamp (written by hand, or by an older
    /// trueup from an absurd `--lease-ttl` such as year 2737909033) is read as lapsed
    /// at the Unix epoch, and [`Store::acquire_lease`] takes it over: one bad row must
    /// never make every command fail.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn lease_holder_at(&self) -> Result<Option<(String, Timestamp)>, StoreError> {
        let (_, held) = self.lease_row()?;
        held.map(|(owner, until)| Ok((owner, parse_until(&until)?))).transpose()
    }

    /// Extends a held lease to `now + ttl`.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when the lease was released or taken over;
    /// [`StoreError::Sql`] when the database fails.
    pub fn renew_lease(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<Lease, StoreError> {
        const WHAT: &str = "renew the `lease`";
        let until = now.plus(ttl);
        self.write(WHAT, || {
            let text = "UPDATE lease SET until = ?1 WHERE name = 'apply' AND token = ?2 AND owner IS NOT NULL";
            match self.exec(WHAT, text, (until.to_string(), lease.token))? {
                0 => Err(self.stale(lease)?),
                _ => Ok(Lease { until, ..lease.clone() }),
            }
        })
    }

    /// Gives the lease up, so the next writer need not wait for it to lapse.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when it was already released or taken over (nothing is
    /// changed then); [`StoreError::Sql`] when the database fails.
    pub fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        const WHAT: &str = "release the `lease`";
        self.write(WHAT, || {
            let text =
                "UPDATE lease SET owner = NULL, until = NULL WHERE name = 'apply' AND token = ?1 AND owner IS NOT NULL";
            match self.exec(WHAT, text, [lease.token])? {
                0 => Err(self.stale(lease)?),
                _ => Ok(()),
            }
        })
    }

    /// Checks `fence` inside the caller's write transaction, for a write to `deployment`.
    pub(super) fn check_fence(&self, fence: Fence<'_>, deployment: &str) -> Result<(), StoreError> {
        match fence {
            Fence::Lease(lease) => {
                let (current, held) = self.lease_row()?;
                if current == lease.token && held.is_some() { Ok(()) } else { Err(self.stale(lease)?) }
            }
            Fence::Claim { owner } => {
                let what = format!("check the claim on deployment `{deployment}`");
                let holder: Option<Option<String>> = self
                    .stmt(&what, "SELECT owner FROM deployments WHERE id = ?1")?
                    .query_row([deployment], |r| r.get(0))
                    .optional()
                    .map_err(sql(&what))?;
                match holder {
                    None => Err(StoreError::UnknownDeployment(deployment.to_owned())),
                    Some(Some(h)) if h == owner => Ok(()),
                    Some(_) => {
                        Err(StoreError::NotClaimed { deployment: deployment.to_owned(), owner: owner.to_owned() })
                    }
                }
            }
        }
    }

    /// The current token and, when held, the holder and expiry.
    fn lease_row(&self) -> Result<(i64, Option<(String, String)>), StoreError> {
        const WHAT: &str = "read the `lease`";
        let (token, owner, until): (i64, Option<String>, Option<String>) = self
            .stmt(WHAT, "SELECT token, owner, until FROM lease WHERE name = 'apply'")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql(WHAT))?;
        Ok((token, owner.zip(until)))
    }

    /// The error for a lease that is no longer current.
    fn stale(&self, lease: &Lease) -> Result<StoreError, StoreError> {
        let (current, _) = self.lease_row()?;
        Ok(StoreError::StaleLease { token: lease.token, current })
    }

    /// The error naming who holds the lease.
    fn lease_holder(&self) -> Result<StoreError, StoreError> {
        let (_, held) = self.lease_row()?;
        let (owner, until) = held.unwrap_or_default();
        Ok(StoreError::LeaseHeld { owner, until: parse_until(&until)? })
    }
}

/// The expiry of the lease row; garbage is lapsed (see [`Store::lease_holder_at`]).
fn parse_until(text: &str) -> Result<Timestamp, StoreError> {
    // Fixed width, as trueup writes it and as `acquire_lease` compares it.
    const WIDTH: usize = "2025-10-02T12:00:00Z".len();
    match time_column("lease", "apply", "until", text) {
        Ok(until) if text.len() == WIDTH => Ok(until),
        _ => Ok(Timestamp::from_unix(0)),
    }
}
