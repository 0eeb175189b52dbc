//! Machines that refuse a system call trueup uses, made with a seccomp filter:
//!
//! - a kernel without `openat2` (before 5.6, as on RHEL 8 or Debian 10), or a sandbox that
//!   refuses it (ENOSYS or EPERM): the scan then opens one name at a time, and must see the
//!   same world and make the same plans;
//! - a machine at its limit of processes (a cgroup's `pids.max`, `RLIMIT_NPROC`), where no
//!   thread can be started (EAGAIN): the work meant for other threads is done on the
//!   calling one, and must come out the same.
//!
//! A filter holds for the thread that installs it and everything that thread starts, and
//! the scan caches that `openat2` is missing for its whole process. So the tests that
//! check observation, plans and applies run again in a child copy of this test binary
//! with the filter installed, not in this process, where the other tests run beside them.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Set in a child run by [`rerun_denied`]: what it is denied, as [`Denied::name`] says.
const DENIED: &str = "TRUEUP_TEST_DENIED";

/// `AUDIT_ARCH_*` of this machine, which the kernel passes the filter (not in `libc`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The calls' numbers, as the filter compares them (the same on both architectures).
const OPENAT2: u32 = libc::SYS_openat2 as u32;
const CLONE: u32 = libc::SYS_clone as u32;
const CLONE3: u32 = libc::SYS_clone3 as u32;

/// What a child run is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// `openat2` fails with this errno.
    Openat2(i32),
    /// A new thread fails with EAGAIN; a new process starts.
    Threads,
}

impl Denied {
    fn name(self) -> String {
        match self {
            Denied::Openat2(errno) => format!("openat2:{errno}"),
            Denied::Threads => "threads".to_owned(),
        }
    }

    /// What the child run of this process is denied, if it is one.
    fn of_this_process() -> Option<Denied> {
        let name = std::env::var(DENIED).ok()?;
        let denied = match name.strip_prefix("openat2:") {
            Some(errno) => Denied::Openat2(errno.parse().expect("an errno")),
            None => Denied::Threads,
        };
        assert_eq!(denied.name(), name, "{DENIED} names what is denied");
        Some(denied)
    }

    /// Installs the filter on this thread, for it and everything it starts.
    /// Async-signal-safe: it only makes two system calls, so it may run between `fork`
    /// and `exec`.
    fn install(self) -> io::Result<()> {
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jump =
            |op: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { jt, jf, ..stmt(libc::BPF_JMP | op | libc::BPF_K, k) };
        let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
        let fail = |errno: i32| stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno.unsigned_abs());
        let allow = stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
        // `struct seccomp_data`: the call's number at offset 0, the architecture at 4, the
        // low half of the first argument at 16. A call of another architecture (of the
        // 32-bit ABI, say) is allowed: its numbers differ. A jump skips `jt` or `jf`
        // statements.
        let openat2;
        let threads;
        let filter: &[libc::sock_filter] = match self {
            Denied::Openat2(errno) => {
                openat2 = [
                    load(4),
                    jump(libc::BPF_JEQ, AUDIT_ARCH, 0, 3),
                    load(0),
                    jump(libc::BPF_JEQ, OPENAT2, 0, 1),
                    fail(errno),
                    allow,
                ];
                &openat2
            }
            // glibc starts threads and processes with `clone3`, and with `clone` where
            // the kernel has no `clone3`: `clone3` is made missing, and `clone` refused
            // when it would start a thread (`CLONE_THREAD` among its flags).
            Denied::Threads => {
                threads = [
                    load(4),
                    jump(libc::BPF_JEQ, AUDIT_ARCH, 0, 7),
                    load(0),
                    jump(libc::BPF_JEQ, CLONE3, 0, 1),
                    fail(libc::ENOSYS),
                    jump(libc::BPF_JEQ, CLONE, 0, 3),
                    load(16),
                    jump(libc::BPF_JSET, libc::CLONE_THREAD.unsigned_abs(), 0, 1),
                    fail(libc::EAGAIN),
                    allow,
                ];
                &threads
            }
        };
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: plain `prctl`s; `program` and the filter it points at outlive the call,
        // which copies them and writes neither.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const program) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Opens `.` with `openat2` and closes it: `Ok` when it opened, else the error.
fn try_openat2() -> io::Result<()> {
    // The kernel's `struct open_how`: flags, mode, resolve.
    let how: [u64; 3] = [(libc::O_PATH | libc::O_CLOEXEC).unsigned_abs().into(), 0, 0];
    // SAFETY: a valid C string and `open_how` of the size passed, alive for the call.
    let fd =
        unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c".".as_ptr(), how.as_ptr(), size_of_val(&how)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is ours and closed once.
    unsafe { libc::close(i32::try_from(fd).expect("a descriptor")) };
    Ok(())
}

/// Starts a thread and waits for it: `Ok` when it started, else the error.
fn try_thread() -> io::Result<()> {
    std::thread::Builder::new().spawn(|| ())?.join().expect("the thread ends");
    Ok(())
}

/// In a child run by [`rerun_denied`] without `openat2`, the errno it fails with, after
/// checking that it does; `None` in any other run.
#[track_caller]
pub fn openat2_denied() -> Option<i32> {
    let Some(Denied::Openat2(errno)) = Denied::of_this_process() else { return None };
    assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Err(Some(errno)), "the filter refuses openat2");
    Some(errno)
}

/// In a child run by [`rerun_denied`], checks that the filter refuses what it says; in
/// any other run, nothing.
#[track_caller]
pub fn check_denied() {
    match Denied::of_this_process() {
        Some(Denied::Openat2(_)) => {
            openat2_denied();
        }
        Some(Denied::Threads) => {
            assert_eq!(
                try_thread().map_err(|e| e.kind()),
                Err(io::ErrorKind::WouldBlock),
                "the filter refuses threads"
            );
        }
        None => {}
    }
}

/// Makes this thread, and those it starts, unable to start a thread.
pub fn deny_threads_here() {
    Denied::Threads.install().expect("the filter installs");
}

/// Makes `command`'s process, once started, unable to start a thread.
pub fn without_threads(command: &mut Command) -> &mut Command {
    denying(command, Denied::Threads)
}

/// Makes `command`'s process, once started, denied `denied`.
fn denying(command: &mut Command, denied: Denied) -> &mut Command {
    // SAFETY: `install` only makes system calls, as the time between `fork` and `exec`
    // allows.
    unsafe { command.pre_exec(move || denied.install()) }
}

/// Runs the test `name` of this binary again in a child process denied `denied`, with
/// the environment `env`, and checks that it ran and passed.
#[track_caller]
fn rerun_denied(name: &str, denied: Denied, env: &[(&str, &str)]) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"));
    child.args([name, "--exact", "--test-threads=1"]).env(DENIED, denied.name()).envs(env.iter().copied());
    let out = denying(&mut child, denied).output().expect("the test binary runs again");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{name}` denied {denied:?} failed:\n{said}");
    assert!(said.contains("test result: ok. 1 passed"), "`{name}` did not run:\n{said}");
}

#[test]
fn the_filters_refuse_what_they_say_and_nothing_else() {
    assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Ok(()), "this kernel has openat2");
    // On threads of their own: a filter holds for the thread that installs it (and those
    // it starts), so the rest of this process keeps its calls.
    std::thread::spawn(|| {
        Denied::Openat2(libc::ENOSYS).install().unwrap();
        assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSYS)));
        assert!(std::fs::metadata(".").unwrap().is_dir(), "other calls still work");
        try_thread().expect("threads still start");
    })
    .join()
    .unwrap();
    std::thread::spawn(|| {
        Denied::Threads.install().unwrap();
        assert_eq!(try_thread().map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(Command::new("true").status().unwrap().success(), "processes still start");
        try_openat2().expect("openat2 still works");
    })
    .join()
    .unwrap();
    assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Ok(()), "the filter stayed on its thread");
    try_thread().expect("threads start here");
}

#[test]
fn without_openat2_the_scan_sees_the_same_tree_one_name_at_a_time() {
    // A kernel before 5.6 says ENOSYS; a sandbox that does not know the call, ENOSYS or
    // EPERM.
    for errno in [libc::ENOSYS, libc::EPERM] {
        rerun_denied("store::observe::observe_builds_the_world_of_a_real_tree", Denied::Openat2(errno), &[]);
        rerun_denied(
            "store::observe::observe_cost_is_bounded_per_project_and_constant_in_queries",
            Denied::Openat2(errno),
            &[],
        );
    }
}

#[test]
fn without_openat2_every_fixture_plans_and_applies_as_the_model_says() {
    // The child's `trueup` processes inherit the filter.
    rerun_denied("machine::real_plans_match_the_model_for_every_fixture", Denied::Openat2(libc::ENOSYS), &[]);
}

#[test]
fn without_threads_observation_plans_and_applies_work_on_one_thread() {
    rerun_denied("store::observe::observe_builds_the_world_of_a_real_tree", Denied::Threads, &[]);
    // Enough projects for the scan to split them among threads.
    rerun_denied(
        "store::observe::observe_cost_is_bounded_per_project_and_constant_in_queries",
        Denied::Threads,
        &[("TRUEUP_SCALE_PROJECTS", "2000")],
    );
    // The child's `trueup` processes start, and inherit the filter.
    rerun_denied("machine::real_plans_match_the_model_for_every_fixture", Denied::Threads, &[]);
    // A world large enough for the view and the rules to share their work: the thread
    // refused, this one does it all, and the plan is the same.
    rerun_denied("plan::properties::a_world_plans_alike_split_among_threads", Denied::Threads, &[]);
}

#[test]
fn without_threads_trueup_test_runs_every_case_on_one() {
    let normal = crate::support::Trueup::new(["test", "fixtures/machine", "fixtures/plan"]).run();
    let mut command = crate::support::Trueup::new(["test", "fixtures/machine", "fixtures/plan"]).command();
    let out = without_threads(&mut command).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), normal.stdout);
}
