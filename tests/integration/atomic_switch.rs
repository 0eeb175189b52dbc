//! The concurrent-reader test: a reader following `ROOT/p1/current/public/index.html`
//! never fails while `current` is switched between two releases with
//! [`trueup::world::effects::switch_link`], and the same harness does see failures with a
//! non-atomic switch (unlink, then create), which shows it can fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use trueup::world::effects::switch_link;

use crate::scratch::Scratch;

/// What the reader saw.
#[derive(Debug, Default)]
struct Seen {
    switches: usize,
    reads_a: usize,
    reads_b: usize,
    failures: usize,
}

/// Switches `ROOT/p1/current` between releases `a` and `b` with `switch` up to `max`
/// times (stopping early once the reader failed, when `stop_on_failure`), while a reader
/// thread reads through it in a loop.
fn race(name: &str, max: usize, stop_on_failure: bool, switch: fn(&Path, &Path, &Path)) -> Seen {
    let t = Scratch::new(name);
    let root = t.0.as_path();
    let releases: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|id| {
            let dir = root.join("p1/deployments").join(id);
            fs::create_dir_all(dir.join("public")).unwrap();
            fs::write(dir.join("public/index.html"), id).unwrap();
            dir
        })
        .collect();
    let current = root.join("p1/current");
    switch_link(root, &current, &releases[0]).unwrap();
    let page = current.join("public/index.html");

    let done = AtomicBool::new(false);
    let (reads_a, reads_b, failures) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let mut switches = 0;
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match fs::read_to_string(&page).as_deref() {
                    Ok("a") => reads_a.fetch_add(1, Ordering::Relaxed),
                    Ok("b") => reads_b.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        // Start switching once the reader is reading, so the two overlap.
        while reads_a.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        while switches < max && !(stop_on_failure && failures.load(Ordering::Relaxed) > 0) {
            switches += 1;
            switch(root, &current, &releases[switches % 2]);
        }
        done.store(true, Ordering::Relaxed);
    });
    Seen { switches, reads_a: reads_a.into_inner(), reads_b: reads_b.into_inner(), failures: failures.into_inner() }
}

fn atomic(root: &Path, link: &Path, target: &Path) {
    switch_link(root, link, target).unwrap();
}

/// What `ln -sfn` without the temporary name, or a naive script, does.
fn unlink_then_create(_root: &Path, link: &Path, target: &Path) {
    fs::remove_file(link).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn readers_never_fail_while_current_is_switched_atomically() {
    let seen = race("rename", 5_000, false, atomic);
    assert_eq!(seen.switches, 5_000);
    assert_eq!(seen.failures, 0, "{seen:?}");
    // The reader saw both releases: it was reading while the link moved.
    assert!(seen.reads_a > 0 && seen.reads_b > 0, "{seen:?}");
}

#[test]
fn the_same_harness_catches_a_non_atomic_switch() {
    let seen = race("unlink", 2_000_000, true, unlink_then_create);
    assert!(seen.failures > 0, "no failed read in {} non-atomic switches: {seen:?}", seen.switches);
}
