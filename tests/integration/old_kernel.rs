//! A kernel without `openat2` (before 5.6, as on RHEL 8 or Debian 10), or a sandbox that
//! refuses it: the observation then opens one name at a time, and must see the same
//! world and make the same plans.
//!
//! A seccomp filter makes `openat2` fail with the errno of such a system. Filters hold
//! for the process they are installed in and everything it starts, and the scan caches
//! that `openat2` is unsupported for the whole process; so the tests that check
//! observation and plans run again in a child copy of this test binary with the filter
//! installed, not in this process, where the other tests run beside them.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Set in a child run by [`rerun_without_openat2`]: the errno its `openat2` fails with.
const DENIED: &str = "TRUEUP_TEST_OPENAT2_DENIED";

/// `AUDIT_ARCH_*` of this machine, which the kernel passes the filter (not in `libc`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The number of `openat2`, as the filter compares it (437 on every architecture).
const OPENAT2: u32 = libc::SYS_openat2 as u32;

/// Makes every later `openat2` of this thread, and of the threads and processes it
/// starts, fail with `errno`. Async-signal-safe: it only makes two system calls, so it
/// may run between `fork` and `exec`.
fn deny_openat2(errno: i32) -> io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump =
        |k: u32, jt: u8, jf: u8| libc::sock_filter { jt, jf, ..stmt(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k) };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // `struct seccomp_data`: the call's number at offset 0, the architecture at 4. A call
    // of another architecture (of the 32-bit ABI, say) is allowed: its numbers differ.
    let mut filter = [
        load(4),
        jump(AUDIT_ARCH, 0, 3),
        load(0),
        jump(OPENAT2, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno.unsigned_abs()),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: plain `prctl`s; `program` and the filter it points at outlive the call,
    // which copies them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const program) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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

/// In a child run by [`rerun_without_openat2`], the errno its `openat2` fails with,
/// after checking that it does; `None` in a normal run.
#[track_caller]
pub fn openat2_denied() -> Option<i32> {
    let errno: i32 = std::env::var(DENIED).ok()?.parse().expect("an errno");
    let said = try_openat2().expect_err("the filter refuses openat2").raw_os_error();
    assert_eq!(said, Some(errno), "openat2 fails as the filter says");
    Some(errno)
}

/// Runs the test `name` of this binary again in a child process whose `openat2` fails
/// with `errno`, and checks that it ran and passed.
#[track_caller]
fn rerun_without_openat2(name: &str, errno: i32) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"));
    child.args([name, "--exact", "--test-threads=1"]).env(DENIED, errno.to_string());
    // SAFETY: `deny_openat2` only makes system calls, as the time between `fork` and
    // `exec` allows.
    unsafe { child.pre_exec(move || deny_openat2(errno)) };
    let out = child.output().expect("the test binary runs again");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{name}` without openat2 (errno {errno}) failed:\n{said}");
    assert!(said.contains("test result: ok. 1 passed"), "`{name}` did not run:\n{said}");
}

#[test]
fn the_filter_refuses_openat2_and_nothing_else() {
    assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Ok(()), "this kernel has openat2");
    // On a thread of its own: a filter holds for the thread that installs it (and those it
    // starts), so the rest of this process keeps its `openat2`.
    std::thread::spawn(|| {
        deny_openat2(libc::ENOSYS).unwrap();
        assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSYS)));
        assert!(std::fs::metadata(".").unwrap().is_dir(), "other calls still work");
    })
    .join()
    .unwrap();
    assert_eq!(try_openat2().map_err(|e| e.raw_os_error()), Ok(()), "the filter stayed on its thread");
}

#[test]
fn without_openat2_the_scan_sees_the_same_tree_one_name_at_a_time() {
    // A kernel before 5.6 says ENOSYS; a sandbox that does not know the call, ENOSYS or
    // EPERM.
    for errno in [libc::ENOSYS, libc::EPERM] {
        rerun_without_openat2("store::observe::observe_builds_the_world_of_a_real_tree", errno);
        rerun_without_openat2("store::observe::observe_cost_is_bounded_per_project_and_constant_in_queries", errno);
    }
}

#[test]
fn without_openat2_every_fixture_plans_and_applies_as_the_model_says() {
    // The child's `trueup` processes inherit the filter.
    rerun_without_openat2("machine::real_plans_match_the_model_for_every_fixture", libc::ENOSYS);
}
