//! The release phase: a build's output, copied into its release folder
//! (`ROOT/PROJECT/deployments/ID`).
//!
//! A release folder is complete when it holds the marker file [`MARKER`], written last,
//! before the folder is renamed to its final name; only complete releases are ever
//! exposed. A folder at the final name without the marker was made by something else: it
//! is moved aside, never deleted.
//!
//! This module only copies; switching `current` and the webroot to a release is not its
//! business.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::source::{copy_tree, rename_into_place, temporary};
use super::{PhaseError, Watch, io_error, remove, sync_tree};
use crate::model::LogLevel;

/// The name of the completion marker inside a release folder; it holds the deployment id.
pub const MARKER: &str = ".trueup-release";

/// Copies the build output `from` into `release` (into its subfolder `under` when given:
/// `public`, what the webroot link serves), marked complete for `deployment`.
///
/// The copy is made in the sibling `.trueup-tmp-ID` (a leftover one is replaced), the
/// marker written last, everything flushed, and the folder renamed into place. A release
/// already complete for `deployment` is left as it is. A folder at `release` that is not
/// one (no marker, or another deployment's) is moved aside to `ID.trueup-aside-SECS`.
///
/// # Errors
///
/// - [`PhaseError::Failed`] when `from` does not exist (`the build made no `public/`
///   folder`, named after `from`'s last component), or holds a link out of it, a device, a
///   fifo or a socket.
/// - [`PhaseError::Retry`] on a full disk or another passing IO condition.
/// - [`PhaseError::Stopped`] when the watch says so.
pub fn copy(
    from: &Path,
    release: &Path,
    under: Option<&str>,
    deployment: &str,
    watch: &mut dyn Watch,
) -> Result<(), PhaseError> {
    if marker_of(release).as_deref() == Some(deployment) {
        watch.line(LogLevel::Info, &format!("the release `{}` is already complete", release.display()));
        return Ok(());
    }
    match fs::metadata(from) {
        Ok(m) if m.is_dir() => {}
        Ok(_) | Err(_) => {
            let name = from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(PhaseError::Failed(format!(
                "the build made no `{name}/` folder (looked for `{}`)",
                from.display()
            )));
        }
    }
    let tmp = temporary(release)?;
    let what = format!("the build output `{}`", from.display());
    let made = match under {
        None => copy_tree(from, &tmp, &what, watch),
        Some(sub) => fs::create_dir(&tmp)
            .map_err(|e| io_error(&format!("could not create `{}`", tmp.display()), &e))
            .and_then(|()| copy_tree(from, &tmp.join(sub), &what, watch)),
    }
    .and_then(|()| mark(&tmp, deployment));
    if let Err(e) = made {
        let _ = remove(&tmp);
        return Err(e);
    }
    sync_tree(&tmp).map_err(|e| io_error(&format!("could not flush `{}`", tmp.display()), &e))?;
    if fs::symlink_metadata(release).is_ok() {
        let aside = move_aside(release)?;
        watch.line(
            LogLevel::Warn,
            &format!("`{}` was not a complete release: moved aside to `{}`", release.display(), aside.display()),
        );
    }
    rename_into_place(&tmp, release)
}

/// Whether `release` is a folder holding the completion marker.
pub fn is_complete(release: &Path) -> bool {
    marker_of(release).is_some()
}

/// The deployment id in `release`'s marker, when it is a folder with one.
fn marker_of(release: &Path) -> Option<String> {
    if !fs::symlink_metadata(release).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let marker = release.join(MARKER);
    if !fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file()) {
        return None;
    }
    fs::read_to_string(marker).ok().map(|s| s.trim().to_owned())
}

/// Writes the marker into the copy at `tmp`, replacing one the build output may hold.
fn mark(tmp: &Path, deployment: &str) -> Result<(), PhaseError> {
    let marker = tmp.join(MARKER);
    let write = |e: io::Error| io_error(&format!("could not write `{}`", marker.display()), &e);
    remove(&marker).map_err(write)?;
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&marker).map_err(write)?;
    file.write_all(deployment.as_bytes()).map_err(write)?;
    file.sync_all().map_err(write)
}

/// Renames `release` to `ID.trueup-aside-SECS` (with `-2`, `-3`… when that is taken) and
/// returns the new name.
fn move_aside(release: &Path) -> Result<PathBuf, PhaseError> {
    let name = release.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let secs = crate::time::clock::now().unix();
    let base = release.with_file_name(format!("{name}.trueup-aside-{secs}"));
    let mut aside = base.clone();
    let mut n = 1;
    while fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        aside = PathBuf::from(format!("{}-{n}", base.display()));
    }
    fs::rename(release, &aside).map_err(|e| io_error(&format!("could not move `{}` aside", release.display()), &e))?;
    Ok(aside)
}
