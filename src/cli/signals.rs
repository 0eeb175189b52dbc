//! SIGINT and SIGTERM during `trueup apply`: caught, so the apply can stop cleanly.
//!
//! A killed apply leaves its lease held and an action possibly half done. Instead, once
//! [`catch`] is called, the first SIGINT or SIGTERM is only recorded; the apply sees it
//! through [`caught`] before its next action, finishes the one in hand, journals the rest
//! as skipped, releases the lease and exits 128 + the signal (130, 143). The handler is
//! installed with `SA_RESETHAND`, so a second signal kills at once, for an operator who
//! cannot wait for the action in hand. It owns no other signal, and nothing else here
//! is `unsafe` but [`stop_for_test`].
//!
//! Test hooks: with `TRUEUP_TEST_STOP_AFTER=N` in its environment, `trueup apply` stops
//! itself (SIGSTOP) once its Nth action has ended, between two actions; with
//! `TRUEUP_TEST_STOP_IN=N`, once action N (counted from 0) has begun, before its change
//! is made. A test sends a signal at that exact point and then continues it (SIGCONT).
//! Unset, they do nothing.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal caught, or 0.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: the one kind of work that is safe in a signal handler.
    CAUGHT.store(signal, Ordering::SeqCst);
}

/// Catches the next SIGINT and SIGTERM, see the module docs.
///
/// # Errors
///
/// When the system refuses the handler.
pub fn catch() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `action` is fully initialized (zeroed, then an empty mask), the handler
        // only stores to an atomic, and the old action is not asked for (null).
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal caught since [`catch`], if any: its name and the exit code it calls for.
pub fn caught() -> Option<(&'static str, u8)> {
    match CAUGHT.load(Ordering::SeqCst) {
        libc::SIGINT => Some(("SIGINT", 130)),
        libc::SIGTERM => Some(("SIGTERM", 143)),
        _ => None,
    }
}

/// The environment variable of the test hook, see the module docs.
pub const STOP_AFTER_VAR: &str = "TRUEUP_TEST_STOP_AFTER";

/// The action count after which the test hook stops the apply, when its variable is set.
pub fn stop_after() -> Option<usize> {
    std::env::var(STOP_AFTER_VAR).ok().and_then(|n| n.parse().ok())
}

/// The environment variable of the test hook that stops inside an action.
pub const STOP_IN_VAR: &str = "TRUEUP_TEST_STOP_IN";

/// The action in which the test hook stops the apply, when its variable is set.
pub fn stop_in() -> Option<usize> {
    std::env::var(STOP_IN_VAR).ok().and_then(|n| n.parse().ok())
}

/// Stops this process until a SIGCONT: the test hook, see the module docs.
pub fn stop_for_test() {
    // SAFETY: `raise` takes a signal number and touches no memory of ours.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}
