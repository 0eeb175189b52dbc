//! What a worker knows of the machine it runs on: its hostname, and whether a process of
//! it is still the one that took a claim.
//!
//! A claim records its worker's host, process id and start time ([`Process`]). On the
//! same host, a claim whose process is gone is dead at once; the start time tells a
//! reused process id from the worker. Everything is read from `/proc`; where `/proc` is
//! not there, no process is ever called gone.

use crate::model::Process;

/// This machine's hostname (`localhost` when it cannot be read).
pub fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    if host.is_empty() { "localhost".to_owned() } else { host }
}

/// This process, as a claim records it.
pub fn this_process() -> Process {
    let pid = std::process::id();
    Process { host: hostname(), pid, started: start_time(pid) }
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in the text of a `/proc/PID/stat` file. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself: fields are counted after
/// its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first, so field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `process` is known to be gone: it ran on this host, and no process with its id
/// runs now, or one does that started at another time (its id was reused).
pub fn is_gone(process: &Process, host: &str) -> bool {
    if process.host != host || !std::path::Path::new("/proc/self/stat").exists() {
        return false;
    }
    match start_time(process.pid) {
        None => !std::path::Path::new(&format!("/proc/{}", process.pid)).exists(),
        Some(started) => process.started.is_some_and(|s| s != started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_not_gone_and_a_reaped_child_is() {
        let me = this_process();
        assert!(me.started.is_some());
        assert!(!is_gone(&me, &me.host));
        assert!(!is_gone(&me, "another-host"), "a process of another host cannot be checked");
        // The same id with another start time is a reused id: gone.
        let reused = Process { started: me.started.map(|s| s + 1), ..me.clone() };
        assert!(is_gone(&reused, &me.host));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Process { host: me.host.clone(), pid, started: Some(1) };
        assert!(is_gone(&dead, &me.host));
    }
}
