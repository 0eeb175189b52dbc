//! A folder of its own for a unit test under the system's temporary folder, removed when
//! the test ends, passed or failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder, removed on drop: also when an assertion fails, and when a test
/// is killed nothing but the folder is left.
pub(crate) struct TestDir(pub(crate) PathBuf);

impl TestDir {
    /// `TMP/trueup-unit-PID-NAME-N`, made empty.
    pub(crate) fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trueup-unit-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
