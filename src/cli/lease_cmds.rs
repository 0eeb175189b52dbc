//! `trueup unlock`, and what the apply lease needs to know of this machine: its hostname,
//! and whether a process of it still runs.
//!
//! The store decides from a holder's host and process whether it is gone; the check of a
//! real process id lives here, so the library never asks the system about processes.

use std::process::ExitCode;

use super::{Args, noteln, outln, plan_cmds::open_store};
use crate::store::{Held, Store, StoreError, TookOver, Unlocked};

/// Arguments of `trueup unlock`.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {}

/// This machine's hostname, as the lease records it (`localhost` when it cannot be read).
pub(super) fn this_host() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    if host.is_empty() { "localhost".to_owned() } else { host }
}

/// Whether process `pid` of this machine exists. `kill(pid, 0)` sends nothing: it fails
/// with `ESRCH` when there is no such process, and with `EPERM` when there is one that
/// this user may not signal, which is alive.
pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    if pid <= 0 {
        // 0 and negative ids name process groups, not a process: never call it dead.
        return true;
    }
    // SAFETY: signal 0 performs only the existence and permission checks.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// What the lease's holder is, from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HolderState {
    /// Its process runs on this host, and its lease has not lapsed.
    Running,
    /// Its process on this host is gone.
    Dead,
    /// Its lease lapsed: it died or stalled.
    Lapsed,
    /// It runs on another host (or an older trueup took the lease) and its lease has not
    /// lapsed: whether it still runs cannot be told from here.
    Unknown,
}

impl HolderState {
    /// The state of `held` at `now`, from this host.
    pub(super) fn of(held: &Held, now: crate::time::Timestamp) -> HolderState {
        if held.is_gone(&this_host(), &alive) {
            HolderState::Dead
        } else if held.lapsed(now) {
            HolderState::Lapsed
        } else if held.host.as_deref() == Some(this_host().as_str()) && held.pid.is_some() {
            HolderState::Running
        } else {
            HolderState::Unknown
        }
    }

    /// Its name in `trueup status --json`.
    pub(super) fn name(self) -> &'static str {
        match self {
            HolderState::Running => "running",
            HolderState::Dead => "dead",
            HolderState::Lapsed => "lapsed",
            HolderState::Unknown => "unknown",
        }
    }
}

/// How a holder is named in messages: its owner, and its process and host when known.
pub(super) fn process_of(held: &Held) -> String {
    match (held.pid, &held.host) {
        (Some(pid), Some(host)) => format!("process {pid} on {host}"),
        _ => "its process".to_owned(),
    }
}

/// Releases the apply lease of a holder that is gone, and refuses a live one.
pub fn unlock(args: &Args, _: &UnlockArgs) -> anyhow::Result<ExitCode> {
    // A missing database holds no lease: refused, as `plan` and `status` refuse it,
    // rather than created at a mistyped `--db` with "nothing to unlock".
    if let Err(err @ StoreError::Missing { .. }) = Store::open_read_only(&args.db) {
        return Err(err.into());
    }
    let store = open_store(args)?;
    // The real clock, as the lease's expiry is: `--now` does not lapse a live lease.
    let now = crate::time::clock::now();
    match store.unlock_lease(&this_host(), now, &alive) {
        Ok(Unlocked::Free) => outln!("The apply lease is free: nothing to unlock.")?,
        Ok(Unlocked::Released(TookOver::Dead(held))) => outln!(
            "Released the apply lease of `{}` ({} is gone). The next apply starts at once.",
            held.owner,
            process_of(&held)
        )?,
        Ok(Unlocked::Released(TookOver::Lapsed(held))) => outln!(
            "Released the apply lease of `{}`, which expired at {}. The next apply starts at once.",
            held.owner,
            held.until
        )?,
        Err(StoreError::LeaseHeld { owner, until }) => {
            let held = store.lease_held()?;
            let running = held.as_ref().is_some_and(|h| HolderState::of(h, now) == HolderState::Running);
            let why = if running {
                format!("its {} is running", held.as_ref().map(process_of).unwrap_or_default())
            } else {
                "it runs on another host, or its process is not recorded, so trueup cannot tell whether it still runs"
                    .to_owned()
            };
            noteln!(
                "error: not unlocking: `{owner}` holds the apply lease until {until} and {why}. \
                 Wait for it to finish, or stop it first."
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}
