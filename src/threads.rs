//! Work started on a scoped thread of its own when one can be had, and done on the
//! calling thread when none can: a machine at its limit of processes (a cgroup's
//! `pids.max`, `RLIMIT_NPROC`), with runaway or zombie containers, is one trueup is
//! there to repair, so the threads that make it faster must never be what stops it.
//! (`Scope::spawn` panics when the system refuses a thread.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

/// From how many items (projects, paths) work is split among threads: below, starting a
/// thread costs more than it saves.
pub(crate) const PARALLEL_FROM: usize = 2_000;

/// How many threads share work over `items` items: one below [`PARALLEL_FROM`] or on one
/// core, else one per core, `most` at most.
pub(crate) fn count(items: usize, most: usize) -> usize {
    if items < PARALLEL_FROM {
        return 1;
    }
    cores().min(most)
}

/// The cores this process may use, asked once: the answer reads the cgroup's quota, a
/// handful of files (about 40 µs), and a plan asks at each of its steps.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Work given to [`spawn`]: running on its thread, or already done (or panicked) here.
pub(crate) enum Task<'scope, T> {
    Running(ScopedJoinHandle<'scope, T>),
    Done(std::thread::Result<T>),
}

/// Runs `work` on a thread of `scope`, or, when the system refuses one, here and now; a
/// panic of the work is then kept for [`Task::join`], as a thread's would be.
pub(crate) fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Task<'scope, T> {
    // The thread takes the work out of the slot; a thread that never started leaves it
    // there (the closure that would have taken it is dropped with the error).
    let slot = Arc::new(Mutex::new(Some(work)));
    let theirs = Arc::clone(&slot);
    let started = std::thread::Builder::new().spawn_scoped(scope, move || {
        leave_stop_signals();
        take(&theirs)()
    });
    match started {
        Ok(running) => Task::Running(running),
        Err(_) => Task::Done(std::panic::catch_unwind(std::panic::AssertUnwindSafe(take(&slot)))),
    }
}

/// Starts `work` on a thread of its own named `name`, not joined by a scope (one that
/// outlives the call that starts it), leaving SIGINT and SIGTERM to the others as
/// [`spawn`]'s threads do.
///
/// # Errors
///
/// When the system refuses the thread.
pub(crate) fn start<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        leave_stop_signals();
        work()
    })
}

/// Blocks SIGINT and SIGTERM on the calling thread, a helper, so that the kernel hands
/// them to the thread that started it, which handles them (`cli::signals`). Otherwise
/// a helper could take one the moment a stopped process goes on, its handler running
/// after the main thread has looked and begun its next action; a signal whose default
/// action ends the process still ends it, through the thread that does not block it.
/// A process started from a helper inherits the mask: [`unblock_signals_in`] clears it.
fn leave_stop_signals() {
    // SAFETY: `set` is initialized by `sigemptyset` before it is read, and the old mask
    // is not asked for (null); the call changes this thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Clears the signal mask of the process `cmd` starts, before it runs: one started from
/// a helper thread would otherwise inherit SIGINT and SIGTERM blocked
/// ([`leave_stop_signals`]), and a build stopped with SIGTERM would go on.
pub(crate) fn unblock_signals_in(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec the closure only calls `sigemptyset` and
    // `pthread_sigmask`, both async-signal-safe, on a set of its own stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) {
                0 => Ok(()),
                e => Err(std::io::Error::from_raw_os_error(e)),
            }
        });
    }
}

/// The work in `slot`, taken out.
fn take<F>(slot: &Mutex<Option<F>>) -> F {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take().expect("the work is taken once")
}

/// Work started on a thread of its own when asked to ([`defer`]), else left to be done
/// here when its result is wanted.
pub(crate) enum Deferred<'scope, T, F> {
    Apart(Task<'scope, T>),
    Here(F),
}

/// `work` started on a thread of `scope` ([`spawn`]) when `apart`, else kept to be done
/// by [`Deferred::join`] on the calling thread.
pub(crate) fn defer<'scope, T: Send + 'scope, F: FnOnce() -> T + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    apart: bool,
    work: F,
) -> Deferred<'scope, T, F> {
    if apart { Deferred::Apart(spawn(scope, work)) } else { Deferred::Here(work) }
}

impl<T, F: FnOnce() -> T> Deferred<'_, T, F> {
    /// What the work returned, done here now if it was not started apart; a panic of the
    /// work goes on here.
    pub(crate) fn join(self) -> T {
        match self {
            Deferred::Apart(task) => task.join(),
            Deferred::Here(work) => work(),
        }
    }
}

/// `each` over `items` cut in chunks of `chunk`, shared by the calling thread and up to
/// `helpers` threads more (no more than there are chunks for): each takes the next chunk
/// nobody took yet, so none waits while another has work left. The calling thread first
/// does `first`. Gives what `first` returned, and what `each` gave for every chunk, in the
/// chunks' order.
pub(crate) fn share<T: Sync, R: Send, B>(
    items: &[T],
    chunk: usize,
    helpers: usize,
    first: impl FnOnce() -> B,
    each: impl Fn(&[T]) -> R + Sync,
) -> (B, Vec<R>) {
    let chunks: Vec<&[T]> = items.chunks(chunk.max(1)).collect();
    let next = AtomicUsize::new(0);
    // The chunks one thread took, each by its place.
    let take_chunks = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&chunk) = chunks.get(k) else { return done };
            done.push((k, each(chunk)));
        }
    };
    let take_chunks = &take_chunks;
    let helpers = helpers.min(chunks.len().saturating_sub(1));
    let (first, mut done) = std::thread::scope(|s| {
        let theirs: Vec<_> = (0..helpers).map(|_| spawn(s, take_chunks)).collect();
        let first = first();
        let mut done = take_chunks();
        for task in theirs {
            done.extend(task.join());
        }
        (first, done)
    });
    done.sort_unstable_by_key(|(k, _)| *k);
    (first, done.into_iter().map(|(_, r)| r).collect())
}

impl<T> Task<'_, T> {
    /// What the work returned; a panic of the work goes on here.
    pub(crate) fn join(self) -> T {
        self.outcome().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// What the work returned, or its panic.
    pub(crate) fn outcome(self) -> std::thread::Result<T> {
        match self {
            Task::Running(running) => running.join(),
            Task::Done(outcome) => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_work_runs_once_apart_when_asked_and_here_otherwise() {
        let here = std::thread::current().id();
        for apart in [true, false] {
            let runs = std::sync::atomic::AtomicU32::new(0);
            let there = std::thread::scope(|s| {
                let work = defer(s, apart, || {
                    runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::current().id()
                });
                work.join()
            });
            assert_eq!(runs.into_inner(), 1);
            assert_eq!(there != here, apart, "apart: {apart}");
        }
    }

    #[test]
    fn shared_work_covers_every_chunk_once_in_order_after_the_first_work_here() {
        let items: Vec<u32> = (0..1000).collect();
        let here = std::thread::current().id();
        for helpers in [0, 1, 3] {
            let calls = AtomicUsize::new(0);
            let takers = Mutex::new(std::collections::HashSet::new());
            // The first work and each chunk take a while, so that the threads take turns
            // and finish their chunks out of order.
            let (first, sums) = share(
                &items,
                64,
                helpers,
                || {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    std::thread::current().id()
                },
                |chunk| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    takers.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    (chunk[0], chunk.len())
                },
            );
            assert_eq!(first, here, "the first work is done by the calling thread");
            let want: Vec<(u32, usize)> = items.chunks(64).map(|c| (c[0], c.len())).collect();
            assert_eq!(sums, want, "helpers: {helpers}");
            assert_eq!(calls.into_inner(), want.len(), "each chunk once");
            // The calling thread takes chunks too, and so do helpers, no more than asked:
            // the chunks are there for them from the start, and the first work waits.
            let takers = takers.into_inner().unwrap();
            assert!(takers.contains(&here), "the calling thread takes chunks too");
            let most = helpers + 1;
            assert!((most.min(2)..=most).contains(&takers.len()), "helpers: {helpers}, {takers:?}");
        }
        let (_, none) = share(&[] as &[u32], 8, 3, || (), |c: &[u32]| c.len());
        assert!(none.is_empty());
        // No more helpers than chunks to give them: a single chunk stays here.
        let (_, one) = share(&items[..8], 8, 3, || (), |_| std::thread::current().id());
        assert_eq!(one, [here]);
    }

    #[test]
    fn work_is_split_from_a_size_on_one_thread_per_core_up_to_the_most_asked() {
        assert_eq!(count(0, 4), 1);
        assert_eq!(count(PARALLEL_FROM - 1, 4), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(count(PARALLEL_FROM, 4), cores.min(4));
        assert_eq!(count(PARALLEL_FROM * 50, 1), 1);
    }

    /// Whether `signal` is blocked on the calling thread.
    fn blocked(signal: libc::c_int) -> bool {
        // SAFETY: `mask` is written by the call (the new mask is null: nothing changes).
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask), 0);
            libc::sigismember(&mask, signal) == 1
        }
    }

    #[test]
    fn helper_threads_leave_sigint_and_sigterm_to_the_thread_that_started_them() {
        let stop = [libc::SIGINT, libc::SIGTERM];
        let here = std::thread::spawn(move || {
            let blocked_here = stop.map(blocked);
            let apart = std::thread::scope(|s| spawn(s, move || (stop.map(blocked), blocked(libc::SIGHUP))).join());
            let started = start("signals", move || (stop.map(blocked), blocked(libc::SIGHUP))).unwrap().join().unwrap();
            (blocked_here, apart, started, stop.map(blocked))
        });
        let (before, apart, started, after) = here.join().unwrap();
        assert_eq!(before, [false, false]);
        assert_eq!(apart, ([true, true], false), "only those two, on the helper");
        assert_eq!(started, ([true, true], false), "only those two, on a thread started apart");
        assert_eq!(after, [false, false], "the calling thread's mask is its own");
    }

    #[test]
    fn a_process_a_helper_starts_blocks_no_signal_once_unblocked() {
        // A build a worker thread runs must still stop on SIGTERM (`phases::build`).
        // `grep` reads its own mask: a shell between would show its own.
        let mask = |unblock: bool| {
            std::thread::scope(|s| {
                spawn(s, move || {
                    let mut grep = std::process::Command::new("grep");
                    grep.args(["SigBlk", "/proc/self/status"]);
                    if unblock {
                        unblock_signals_in(&mut grep);
                    }
                    String::from_utf8(grep.output().unwrap().stdout)
                        .unwrap()
                        .split_whitespace()
                        .nth(1)
                        .unwrap()
                        .to_owned()
                })
                .join()
            })
        };
        // Inherited as it is: SIGINT (2) and SIGTERM (15) blocked.
        assert_eq!(mask(false), "0000000000004002");
        assert_eq!(mask(true), "0000000000000000");
    }

    #[test]
    fn work_runs_once_on_a_thread_of_its_own_and_a_panic_goes_on_at_join() {
        let here = std::thread::current().id();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let (there, out) = std::thread::scope(|s| {
            let task = spawn(s, || {
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (std::thread::current().id(), 42)
            });
            task.join()
        });
        assert_eq!((out, runs.into_inner()), (42, 1));
        assert_ne!(there, here, "on a thread of its own");
        let panicked = std::panic::catch_unwind(|| {
            std::thread::scope(|s| spawn(s, || -> u8 { panic!("the work failed") }).join())
        });
        assert_eq!(panicked.unwrap_err().downcast_ref::<&str>(), Some(&"the work failed"));
    }
}
