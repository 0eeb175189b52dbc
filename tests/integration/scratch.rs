//! Scratch folders: a fresh, empty folder per test under the system temp dir, removed
//! when dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, empty folder for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        Scratch::under(&std::env::temp_dir(), name)
    }

    /// A fresh folder in memory (`/dev/shm`) where the system has one, else as
    /// [`Scratch::new`]: for tests that run many applies, whose `fsync`s cost nothing there.
    pub fn in_memory(name: &str) -> Scratch {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() { Scratch::under(shm, name) } else { Scratch::new(name) }
    }

    fn under(base: &std::path::Path, name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("trueup-it-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
