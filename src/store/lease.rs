//! The single-writer lease and the fences that writes carry.
//!
//! One row in `lease` says who may change the world (an `apply` run) and until when. Each
//! acquisition bumps a fencing token; every fenced write checks, in its own transaction,
//! that the token it carries is still the current one, so a writer that stalled past its
//! lease and was replaced cannot write anything afterwards.
//!
//! A second row, `daemon`, is held by `trueup serve` for its lifetime: one daemon per state
//! database. It follows the same rules (an expiry, a holder's host and process, taken over
//! at once from a dead holder of this host) but fences nothing: a [`DaemonLease`] is its
//! own type, so it can never be passed where the apply lease is checked.

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

/// The daemon lease, held by `trueup serve` for its lifetime (see the module docs). It is
/// no [`Lease`]: no write is fenced by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonLease(Lease);

impl DaemonLease {
    /// Who holds it.
    pub fn owner(&self) -> &str {
        &self.0.owner
    }

    /// When it lapses unless renewed.
    pub fn until(&self) -> Timestamp {
        self.0.until
    }
}

/// The names of the rows of `lease`.
const APPLY: &str = "apply";
const DAEMON: &str = "daemon";

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

/// Who asks for the lease: its owner name, and the host and process it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    /// Its owner name, as the lease and the journal show it.
    pub owner: &'a str,
    /// The machine's hostname.
    pub host: &'a str,
    /// Its process id.
    pub pid: u32,
}

/// The lease row while someone holds it (or held it without releasing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Who holds it.
    pub owner: String,
    /// When it lapses unless renewed (the Unix epoch for an unreadable expiry).
    pub until: Timestamp,
    /// The holder's host, unless an older trueup took the lease.
    pub host: Option<String>,
    /// The holder's process id, unless an older trueup took the lease.
    pub pid: Option<u32>,
}

impl Held {
    /// Whether the holder is known to be gone: it ran on `host` (this machine) and
    /// `alive` says its process no longer exists. A holder on another host, or one whose
    /// host and process are not recorded, cannot be checked from here: it is not gone.
    pub fn is_gone(&self, host: &str, alive: &dyn Fn(u32) -> bool) -> bool {
        match (&self.host, self.pid) {
            (Some(h), Some(pid)) => h == host && !alive(pid),
            _ => false,
        }
    }

    /// Whether its lease lapsed at `now`.
    pub fn lapsed(&self, now: Timestamp) -> bool {
        self.until <= now
    }
}

/// Why [`Store::acquire_lease_as`] took the lease over from its last holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TookOver {
    /// Its lease had lapsed.
    Lapsed(Held),
    /// Its process, on this host, is gone, whatever its lease's expiry.
    Dead(Held),
}

/// What [`Store::unlock_lease`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocked {
    /// Nobody held the lease: nothing was changed.
    Free,
    /// The lease of a holder that is gone was released.
    Released(TookOver),
}

impl Store {
    /// Takes the single-writer lease for `owner` until `now + ttl`, when nobody holds it
    /// or the holder's lease lapsed. Every acquisition gets a new fencing token. The
    /// holder's host and process are not recorded: see [`Store::acquire_lease_as`].
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseHeld`] naming the holder while another lease is live;
    /// [`StoreError::Sql`] when the database fails.
    pub fn acquire_lease(&self, owner: &str, now: Timestamp, ttl: Duration) -> Result<Lease, StoreError> {
        self.acquire(APPLY, owner, None, now, ttl, &|_| true).map(|(lease, _)| lease)
    }

    /// Takes the single-writer lease for `holder` until `now + ttl`, recording its host
    /// and process, when nobody holds it, when the last holder's lease lapsed, or when the
    /// last holder ran on this host and its process is gone (`alive` answers for a process
    /// id of this host; the lease's expiry does not matter then). Every acquisition gets a
    /// new fencing token, so a late write of the holder it replaced is refused. Returns
    /// the lease and, when it replaced a holder that had not released it, why.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseHeld`] naming the holder while another lease is live;
    /// [`StoreError::Sql`] when the database fails.
    pub fn acquire_lease_as(
        &self,
        holder: Holder<'_>,
        now: Timestamp,
        ttl: Duration,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<(Lease, Option<TookOver>), StoreError> {
        self.acquire(APPLY, holder.owner, Some((holder.host, holder.pid)), now, ttl, &|pid| {
            // This very process is alive, whatever the check says.
            pid == holder.pid || alive(pid)
        })
    }

    /// Takes the daemon lease for `holder` until `now + ttl`, by the rules of
    /// [`Store::acquire_lease_as`]: when nobody holds it, when its holder's lease lapsed,
    /// or when its holder ran on this host and its process is gone.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseHeld`] naming the daemon that holds it;
    /// [`StoreError::Sql`] when the database fails.
    pub fn acquire_daemon_lease(
        &self,
        holder: Holder<'_>,
        now: Timestamp,
        ttl: Duration,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<(DaemonLease, Option<TookOver>), StoreError> {
        self.acquire(DAEMON, holder.owner, Some((holder.host, holder.pid)), now, ttl, &|pid| {
            pid == holder.pid || alive(pid)
        })
        .map(|(lease, took_over)| (DaemonLease(lease), took_over))
    }

    /// Extends a held daemon lease to `now + ttl`.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when it was released or taken over;
    /// [`StoreError::Sql`] when the database fails.
    pub fn renew_daemon_lease(
        &self,
        lease: &DaemonLease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<DaemonLease, StoreError> {
        self.renew(DAEMON, &lease.0, now, ttl).map(DaemonLease)
    }

    /// Gives the daemon lease up, so the next daemon starts at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when it was already released or taken over;
    /// [`StoreError::Sql`] when the database fails.
    pub fn release_daemon_lease(&self, lease: &DaemonLease) -> Result<(), StoreError> {
        self.release(DAEMON, &lease.0)
    }

    /// The daemon lease's holder, or `None` when free, as [`Store::lease_held`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn daemon_lease_held(&self) -> Result<Option<Held>, StoreError> {
        self.held(DAEMON)
    }

    fn acquire(
        &self,
        name: &str,
        owner: &str,
        process: Option<(&str, u32)>,
        now: Timestamp,
        ttl: Duration,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<(Lease, Option<TookOver>), StoreError> {
        let what = format!("acquire the `{name}` lease");
        let until = now.plus(ttl);
        let this_host = process.map_or("", |(host, _)| host);
        self.write(&what, || {
            let took_over = match self.held(name)? {
                None => None,
                Some(held) if held.lapsed(now) => Some(TookOver::Lapsed(held)),
                Some(held) if process.is_some() && held.is_gone(this_host, alive) => Some(TookOver::Dead(held)),
                Some(held) => return Err(StoreError::LeaseHeld { owner: held.owner, until: held.until }),
            };
            let token: i64 = self
                .stmt(
                    &what,
                    "UPDATE lease SET owner = ?1, until = ?2, host = ?3, pid = ?4, token = token + 1
                     WHERE name = ?5 RETURNING token",
                )?
                .query_row((owner, until.to_string(), process.map(|p| p.0), process.map(|p| p.1), name), |r| r.get(0))
                .map_err(sql(&what))?;
            Ok((Lease { owner: owner.to_owned(), until, token }, took_over))
        })
    }

    /// Releases the lease of a holder that is gone: its lease lapsed at `now`, or it ran
    /// on `host` (this machine) and `alive` says its process no longer exists. For
    /// `trueup unlock`, after a crash.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseHeld`] naming the holder when it may still run (nothing is
    /// changed then); [`StoreError::Sql`] when the database fails.
    pub fn unlock_lease(
        &self,
        host: &str,
        now: Timestamp,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<Unlocked, StoreError> {
        const WHAT: &str = "unlock the `lease`";
        self.write(WHAT, || {
            let took_over = match self.held(APPLY)? {
                None => return Ok(Unlocked::Free),
                Some(held) if held.lapsed(now) => TookOver::Lapsed(held),
                Some(held) if held.is_gone(host, alive) => TookOver::Dead(held),
                Some(held) => return Err(StoreError::LeaseHeld { owner: held.owner, until: held.until }),
            };
            // The token stays: with no holder, no fence of the dead one passes, and the
            // next acquisition bumps it.
            self.exec(
                WHAT,
                "UPDATE lease SET owner = NULL, until = NULL, host = NULL, pid = NULL WHERE name = 'apply'",
                [],
            )?;
            Ok(Unlocked::Released(took_over))
        })
    }

    /// The lease's holder, with its host and process when recorded, or `None` when free.
    /// An unreadable expiry is lapsed, as in [`Store::lease_holder_at`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Sql`].
    pub fn lease_held(&self) -> Result<Option<Held>, StoreError> {
        self.held(APPLY)
    }

    fn held(&self, name: &str) -> Result<Option<Held>, StoreError> {
        let what = format!("read the `{name}` lease holder");
        let row: (Option<String>, Option<String>, Option<String>, Option<i64>) = self
            .stmt(&what, "SELECT owner, until, host, pid FROM lease WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sql(&what))?;
        let (owner, until, host, pid) = row;
        let Some((owner, until)) = owner.zip(until) else { return Ok(None) };
        // A process id that is no `u32` (a hand edit) cannot be checked: unknown.
        let pid = pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
        Ok(Some(Held { owner, until: parse_until(&until)?, host, pid }))
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
        let (_, held) = self.lease_row(APPLY)?;
        held.map(|(owner, until)| Ok((owner, parse_until(&until)?))).transpose()
    }

    /// Extends a held lease to `now + ttl`.
    ///
    /// # Errors
    ///
    /// [`StoreError::StaleLease`] when the lease was released or taken over;
    /// [`StoreError::Sql`] when the database fails.
    pub fn renew_lease(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<Lease, StoreError> {
        self.renew(APPLY, lease, now, ttl)
    }

    fn renew(&self, name: &str, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<Lease, StoreError> {
        let what = format!("renew the `{name}` lease");
        let until = now.plus(ttl);
        self.write(&what, || {
            let text = "UPDATE lease SET until = ?1 WHERE name = ?3 AND token = ?2 AND owner IS NOT NULL";
            match self.exec(&what, text, (until.to_string(), lease.token, name))? {
                0 => Err(self.stale(name, lease)?),
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
        self.release(APPLY, lease)
    }

    fn release(&self, name: &str, lease: &Lease) -> Result<(), StoreError> {
        let what = format!("release the `{name}` lease");
        self.write(&what, || {
            let text = "UPDATE lease SET owner = NULL, until = NULL, host = NULL, pid = NULL \
                        WHERE name = ?2 AND token = ?1 AND owner IS NOT NULL";
            match self.exec(&what, text, (lease.token, name))? {
                0 => Err(self.stale(name, lease)?),
                _ => Ok(()),
            }
        })
    }

    /// Checks `fence` inside the caller's write transaction, for a write to `deployment`.
    pub(super) fn check_fence(&self, fence: Fence<'_>, deployment: &str) -> Result<(), StoreError> {
        match fence {
            Fence::Lease(lease) => {
                let (current, held) = self.lease_row(APPLY)?;
                if current == lease.token && held.is_some() { Ok(()) } else { Err(self.stale(APPLY, lease)?) }
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
    fn lease_row(&self, name: &str) -> Result<(i64, Option<(String, String)>), StoreError> {
        let what = format!("read the `{name}` lease");
        let (token, owner, until): (i64, Option<String>, Option<String>) = self
            .stmt(&what, "SELECT token, owner, until FROM lease WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql(&what))?;
        Ok((token, owner.zip(until)))
    }

    /// The error for a lease that is no longer current.
    fn stale(&self, name: &str, lease: &Lease) -> Result<StoreError, StoreError> {
        let (current, _) = self.lease_row(name)?;
        Ok(StoreError::StaleLease { token: lease.token, current })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held(host: Option<&str>, pid: Option<u32>) -> Held {
        Held { owner: "a".to_owned(), until: Timestamp::from_unix(60), host: host.map(str::to_owned), pid }
    }

    #[test]
    fn only_a_holder_of_this_host_whose_process_is_gone_is_gone() {
        let dead = |_: u32| false;
        let alive = |_: u32| true;
        assert!(held(Some("h"), Some(7)).is_gone("h", &dead));
        assert!(!held(Some("h"), Some(7)).is_gone("h", &alive), "alive");
        assert!(!held(Some("other"), Some(7)).is_gone("h", &dead), "another host cannot be checked");
        assert!(!held(None, None).is_gone("h", &dead), "an older trueup's lease cannot be checked");
        assert!(!held(Some("h"), None).is_gone("h", &dead));
    }
}
