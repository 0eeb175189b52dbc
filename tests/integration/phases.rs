//! The phase executors against the real thing: real processes and process groups, real
//! folders, tarballs made here with the `tar` crate, a git repository made with the `git`
//! binary, and a loopback HTTP server.

use std::path::Path;
use std::time::{Duration, Instant};

use trueup::model::LogLevel;
use trueup::phases::{Lines, PhaseError, Stopped, Watch};

use crate::scratch::Scratch;

/// A watch that says stop once `after` has passed.
struct StopAfter {
    after: Instant,
    lines: Vec<String>,
}

impl Watch for StopAfter {
    fn line(&mut self, _: LogLevel, text: &str) {
        self.lines.push(text.to_owned());
    }

    fn tick(&mut self) -> Result<(), Stopped> {
        if Instant::now() >= self.after { Err(Stopped("Ctrl-C".to_owned())) } else { Ok(()) }
    }
}

/// Whether process `pid` is gone. A process that ended but is not reaped yet counts as
/// gone: orphans are reaped by pid 1, which on some machines (containers) never does it.
fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesized command name: `1234 (sleep) Z ...`.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Waits up to two seconds for the pids listed in `file` to be gone.
#[track_caller]
fn assert_gone(file: &Path) {
    let pids: Vec<i32> =
        std::fs::read_to_string(file).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(!pids.is_empty());
    let until = Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&p| gone(p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| !gone(p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
}

mod build {
    use super::*;
    use trueup::phases::build;

    fn run(dir: &Path, command: &str, limit: Duration, watch: &mut dyn Watch) -> Result<(), PhaseError> {
        build::run(command, dir, &[("GREETING".to_owned(), "hello".to_owned())], limit, watch)
    }

    fn failed(result: Result<(), PhaseError>) -> String {
        match result {
            Err(PhaseError::Failed(reason)) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn output_lines_arrive_in_order_with_their_stream() {
        let dir = Scratch::new("build-lines");
        let mut lines = Lines::default();
        // The two streams are read apart, so only pauses order lines across them.
        let script = "echo \"$GREETING\"; pwd; sleep 0.3; echo oops >&2; sleep 0.3; for i in 1 2 3; do echo line $i; done; printf tail";
        run(&dir.0, script, Duration::from_secs(30), &mut lines).unwrap();
        let text: Vec<_> = lines.lines.iter().map(|(l, t)| (*l, t.as_str())).collect();
        let cwd = dir.0.canonicalize().unwrap();
        assert_eq!(
            text,
            [
                (LogLevel::Info, "hello"),
                (LogLevel::Info, cwd.to_str().unwrap()),
                (LogLevel::Warn, "oops"),
                (LogLevel::Info, "line 1"),
                (LogLevel::Info, "line 2"),
                (LogLevel::Info, "line 3"),
                (LogLevel::Info, "tail"),
            ]
        );
        assert!(lines.ticks >= 1, "a build of more than half a second ticks");
    }

    #[test]
    fn a_nonzero_exit_names_its_status_and_last_lines() {
        let dir = Scratch::new("build-exit");
        let script = "for i in $(seq 1 15); do echo step $i; done; echo broken; exit 3";
        let reason = failed(run(&dir.0, script, Duration::from_secs(30), &mut Lines::default()));
        let expected = "the build exited with status 3; its last lines:\n    step 7\n    step 8\n    step 9\n    \
                        step 10\n    step 11\n    step 12\n    step 13\n    step 14\n    step 15\n    broken";
        assert_eq!(reason, expected);
        let reason = failed(run(&dir.0, "kill -9 $$", Duration::from_secs(30), &mut Lines::default()));
        assert_eq!(reason, "the build was killed by signal 9; it printed nothing");
    }

    #[test]
    fn a_command_that_cannot_start_fails() {
        let dir = Scratch::new("build-spawn");
        let missing = dir.join("no-such-folder");
        let reason = failed(run(&missing, "true", Duration::from_secs(5), &mut Lines::default()));
        assert!(reason.starts_with("the build command could not be started in `"), "{reason}");
    }

    #[test]
    fn a_command_that_cannot_start_for_want_of_threads_or_processes_is_retried() {
        // A machine at its limit of processes: EAGAIN, whether for the command or for the
        // threads that read its output. Running it again later may work.
        let dir = Scratch::new("build-eagain");
        let expected = format!(
            "the build command could not be started in `{}`: Resource temporarily unavailable (os error 11)",
            dir.0.display()
        );
        let ran = std::thread::spawn(move || {
            crate::seccomp::deny_threads_here();
            run(&dir.0, "true", Duration::from_secs(5), &mut Lines::default())
        });
        assert_eq!(ran.join().unwrap(), Err(PhaseError::Retry(expected)));
    }

    #[test]
    fn the_limit_kills_the_whole_process_group() {
        let dir = Scratch::new("build-limit");
        let pids = dir.join("pids");
        let script = format!(
            "sh -c 'sleep 100 & echo $! >> {p}; sleep 100' & echo $! >> {p}; echo started; sleep 100",
            p = pids.display()
        );
        let start = Instant::now();
        let reason = failed(run(&dir.0, &script, Duration::from_secs(1), &mut Lines::default()));
        assert_eq!(reason, "the build ran past its limit of 1s; its last lines:\n    started");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_gone(&pids);
    }

    #[test]
    fn stopped_kills_the_whole_process_group() {
        let dir = Scratch::new("build-stop");
        let pids = dir.join("pids");
        // The grandchild ignores SIGTERM, so only the SIGKILL after the grace ends it.
        let script = format!(
            "sh -c 'trap \"\" TERM; sleep 100 & echo $! >> {p}; wait' & echo $! >> {p}; sleep 100",
            p = pids.display()
        );
        let mut watch = StopAfter { after: Instant::now() + Duration::from_millis(500), lines: Vec::new() };
        let result = run(&dir.0, &script, Duration::from_secs(60), &mut watch);
        assert_eq!(result, Err(PhaseError::Stopped("Ctrl-C".to_owned())));
        assert_gone(&pids);
    }

    #[test]
    fn what_a_finished_build_left_running_is_stopped() {
        let dir = Scratch::new("build-leftover");
        let pids = dir.join("pids");
        let script = format!("sleep 100 & echo $! >> {}; echo done", pids.display());
        let start = Instant::now();
        run(&dir.0, &script, Duration::from_secs(60), &mut Lines::default()).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_gone(&pids);
    }
}

/// Every path under `dir` with what it is: `file 644 TEXT`, `dir 755`, `link -> TARGET`.
fn listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_symlink() {
                out.push(format!("{rel}: link -> {}", std::fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.push(format!("{rel}: dir {mode:o}"));
                stack.push(path);
            } else {
                out.push(format!("{rel}: file {mode:o} {}", std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    // By path, so that a folder comes before what it holds.
    out.sort_by(|a, b| a.split(": ").next().cmp(&b.split(": ").next()));
    out
}

pub mod source {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use trueup::phases::source::{self, Limits, Origin};

    #[track_caller]
    fn pull(origin: &Origin, dest: &Path, limits: &Limits) -> Result<(), PhaseError> {
        source::pull(origin, dest, limits, &mut Lines::default())
    }

    #[track_caller]
    fn refused(origin: &Origin, dest: &Path, limits: &Limits) -> String {
        match pull(origin, dest, limits) {
            Err(PhaseError::Failed(reason)) => {
                let tmp = dest.parent().unwrap().join(format!(".trueup-tmp-{}", dest.file_name().unwrap().display()));
                assert!(!tmp.exists(), "a refused pull leaves no temporary folder");
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// One tarball entry, its name written into the header as raw bytes so that the
    /// checks of `tar::Builder` cannot keep an evil name out.
    pub enum Entry<'a> {
        File(&'a str, &'a str, u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Other(&'a str, tar::EntryType),
    }

    pub fn tarball(path: &Path, entries: &[Entry]) {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for entry in entries {
            let mut header = tar::Header::new_old();
            let (name, kind, data, mode, link) = match *entry {
                Entry::File(n, text, mode) => (n, tar::EntryType::Regular, text, mode, ""),
                Entry::Dir(n) => (n, tar::EntryType::Directory, "", 0o755, ""),
                Entry::Symlink(n, to) => (n, tar::EntryType::Symlink, "", 0o777, to),
                Entry::HardLink(n, to) => (n, tar::EntryType::Link, "", 0o644, to),
                Entry::Other(n, kind) => (n, kind, "", 0o644, ""),
            };
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_folder_is_copied_with_modes_and_inner_links_and_replaced_whole() {
        let s = Scratch::new("source-folder");
        let upload = s.join("upload");
        write(&upload.join("index.html"), "hi", 0o644);
        write(&upload.join("bin/run.sh"), "#!/bin/sh", 0o755);
        std::os::unix::fs::symlink("../index.html", upload.join("bin/home")).unwrap();
        std::os::unix::fs::symlink("bin", upload.join("tools")).unwrap();
        let dest = s.join("builds/d1/src");
        // A leftover of an interrupted run, and a first run's file that must not survive.
        write(&s.join("builds/d1/.trueup-tmp-src/half"), "x", 0o644);
        write(&dest.join("stale.txt"), "old", 0o644);
        pull(&Origin::from_upload(&upload), &dest, &Limits::default()).unwrap();
        assert_eq!(
            listing(&dest),
            [
                "bin: dir 755",
                "bin/home: link -> ../index.html",
                "bin/run.sh: file 755 #!/bin/sh",
                "index.html: file 644 hi",
                "tools: link -> bin",
            ]
        );
        assert_eq!(std::fs::read_dir(s.join("builds/d1")).unwrap().count(), 1, "no temporary folder is left");
        std::fs::remove_file(upload.join("index.html")).unwrap();
        pull(&Origin::Folder(upload.clone()), &dest, &Limits::default()).unwrap();
        assert!(!dest.join("index.html").exists(), "a re-run replaces the source whole");
    }

    #[test]
    fn a_folder_with_a_link_out_or_a_fifo_is_refused() {
        let s = Scratch::new("source-folder-evil");
        let upload = s.join("upload");
        write(&upload.join("sub/ok"), "", 0o644);
        std::os::unix::fs::symlink("../../etc", upload.join("sub/up")).unwrap();
        let dest = s.join("src");
        let origin = Origin::Folder(upload.clone());
        let reason = refused(&origin, &dest, &Limits::default());
        assert_eq!(
            reason,
            format!("the upload `{}` holds `sub/up`, a symlink to `../../etc` outside it", upload.display())
        );
        std::fs::remove_file(upload.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", upload.join("abs")).unwrap();
        let reason = refused(&origin, &dest, &Limits::default());
        assert!(reason.ends_with("holds `abs`, a symlink to `/etc/passwd` outside it"), "{reason}");
        std::fs::remove_file(upload.join("abs")).unwrap();
        let fifo = std::ffi::CString::new(upload.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only makes a file.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(refused(&origin, &dest, &Limits::default()).ends_with("holds `pipe`, a fifo"));
        assert!(!dest.exists());
    }

    #[test]
    fn a_missing_or_odd_upload_fails() {
        let s = Scratch::new("source-missing");
        let dest = s.join("src");
        let gone = s.join("upload.tgz");
        assert_eq!(
            refused(&Origin::from_upload(&gone), &dest, &Limits::default()),
            format!("the upload `{}` is gone", gone.display())
        );
        let gone = s.join("upload");
        assert_eq!(
            refused(&Origin::from_upload(&gone), &dest, &Limits::default()),
            format!("the upload `{}` is gone", gone.display())
        );
        std::fs::write(&gone, "not a folder").unwrap();
        assert!(
            refused(&Origin::from_upload(&gone), &dest, &Limits::default())
                .ends_with("is neither a folder nor a `.tar.gz` tarball")
        );
        let not_gzip = s.join("x.tar.gz");
        std::fs::write(&not_gzip, "plain text").unwrap();
        let reason = refused(&Origin::from_upload(&not_gzip), &dest, &Limits::default());
        assert!(
            reason.starts_with(&format!("the upload `{}` is not a readable .tar.gz: ", not_gzip.display())),
            "{reason}"
        );
    }

    #[test]
    fn a_tarball_is_unpacked_entry_by_entry() {
        let s = Scratch::new("source-tarball");
        let upload = s.join("site.tar.gz");
        tarball(
            &upload,
            &[
                Entry::Dir("./"),
                Entry::Dir("./assets/"),
                Entry::File("./assets/app.js", "js", 0o600),
                Entry::File("deep/er/run", "sh", 0o755),
                Entry::Symlink("deep/app", "../assets/app.js"),
                Entry::HardLink("again.js", "./assets/app.js"),
                Entry::File("twice", "first", 0o644),
                Entry::File("twice", "second", 0o644),
            ],
        );
        let dest = s.join("src");
        pull(&Origin::from_upload(&upload), &dest, &Limits::default()).unwrap();
        assert_eq!(
            listing(&dest),
            [
                "again.js: file 600 js",
                "assets: dir 755",
                "assets/app.js: file 600 js",
                "deep: dir 755",
                "deep/app: link -> ../assets/app.js",
                "deep/er: dir 755",
                "deep/er/run: file 755 sh",
                "twice: file 644 second",
            ]
        );
        tarball(&upload, &[Entry::File("new", "", 0o644)]);
        pull(&Origin::from_upload(&upload), &dest, &Limits::default()).unwrap();
        assert_eq!(listing(&dest), ["new: file 644 "], "a re-run replaces the source whole");
    }

    #[test]
    fn every_unsafe_tarball_entry_is_refused_by_name() {
        let s = Scratch::new("source-tarball-evil");
        let upload = s.join("evil.tgz");
        let dest = s.join("src");
        let limits = Limits { max_bytes: 10, max_entries: 4, ..Limits::default() };
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (vec![Entry::File("/etc/cron.d/x", "", 0o644)], "`/etc/cron.d/x`, with an absolute path"),
            (vec![Entry::File("a/../../x", "", 0o644)], "`a/../../x`, whose path climbs out with `..`"),
            (vec![Entry::Symlink("l", "/etc/passwd")], "`l`, a symlink to `/etc/passwd` outside it"),
            (vec![Entry::Symlink("a/l", "../../x")], "`a/l`, a symlink to `../../x` outside it"),
            (vec![Entry::HardLink("h", "/etc/shadow")], "`h`, a hard link to `/etc/shadow` outside it"),
            (vec![Entry::HardLink("h", "../x")], "`h`, a hard link to `../x` outside it"),
            (vec![Entry::HardLink("h", "later")], "`h`, a hard link to `later`, not a file before it"),
            (vec![Entry::Symlink("d", "."), Entry::File("d/f", "", 0o644)], "`d/f`, below `d`, which is not a folder"),
            (vec![Entry::Other("tty", tar::EntryType::Char)], "`tty`, a device"),
            (vec![Entry::Other("disk", tar::EntryType::Block)], "`disk`, a device"),
            (vec![Entry::Other("p", tar::EntryType::Fifo)], "`p`, a fifo"),
            (
                vec![Entry::File("a", "123456", 0o644), Entry::File("b", "123456", 0o644)],
                "`b`, past the limit of 10 bytes unpacked",
            ),
            (
                vec![Entry::Dir("1"), Entry::Dir("2"), Entry::Dir("3"), Entry::Dir("4"), Entry::Dir("5")],
                "`5`, past the limit of 4 entries",
            ),
        ];
        for (entries, expected) in cases {
            tarball(&upload, &entries);
            let reason = refused(&Origin::Tarball(upload.clone()), &dest, &limits);
            assert_eq!(reason, format!("the tarball `{}` holds {expected}", upload.display()));
            assert!(!dest.exists() && !s.join("x").exists());
        }
    }

    #[test]
    fn bytes_are_counted_as_they_come_not_from_the_header() {
        // A header that says 1 byte and data that says more is read as 1 byte: the tar
        // crate never reads past the size it was given, and trueup counts what it reads.
        let s = Scratch::new("source-tarball-count");
        let upload = s.join("big.tar.gz");
        let big = "x".repeat(3000);
        tarball(&upload, &[Entry::File("a", &big, 0o644), Entry::File("b", &big, 0o644)]);
        let limits = Limits { max_bytes: 5000, ..Limits::default() };
        let reason = refused(&Origin::Tarball(upload.clone()), &s.join("src"), &limits);
        assert!(reason.ends_with("holds `b`, past the limit of 5000 bytes unpacked"), "{reason}");
    }

    /// A repository with a commit on `main` tagged `v1`, a second commit on `main`, and a
    /// branch `feature` with a third; returns the first commit's id.
    fn repository(dir: &Path) -> String {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        std::fs::create_dir_all(dir).unwrap();
        git(&["init", "--quiet", "-b", "main"]);
        std::fs::write(dir.join("version"), "1").unwrap();
        git(&["add", "."]);
        git(&["commit", "--quiet", "-m", "one"]);
        git(&["tag", "v1"]);
        let first = git(&["rev-parse", "HEAD"]);
        std::fs::write(dir.join("version"), "2").unwrap();
        git(&["commit", "--quiet", "-am", "two"]);
        git(&["checkout", "--quiet", "-b", "feature"]);
        std::fs::write(dir.join("version"), "feature").unwrap();
        git(&["commit", "--quiet", "-am", "three"]);
        git(&["checkout", "--quiet", "main"]);
        first
    }

    #[test]
    fn git_at_the_default_branch_a_branch_a_tag_and_a_commit() {
        let s = Scratch::new("source-git");
        let repo = s.join("repo");
        let first = repository(&repo);
        let dest = s.join("src");
        let url = format!("file://{}", repo.display());
        let at = |url: &str, git_ref: Option<&str>| {
            let origin = Origin::Git { url: url.to_owned(), git_ref: git_ref.map(str::to_owned) };
            pull(&origin, &dest, &Limits::default()).unwrap();
            assert!(!dest.join(".git").exists());
            std::fs::read_to_string(dest.join("version")).unwrap()
        };
        assert_eq!(at(&url, None), "2");
        assert_eq!(at(repo.to_str().unwrap(), Some("feature")), "feature");
        assert_eq!(at(&url, Some("v1")), "1");
        assert_eq!(at(&url, Some(&first)), "1");
        assert_eq!(at(&url, Some("main")), "2");
        assert_eq!(listing(&dest), ["version: file 644 2"]);
    }

    #[test]
    fn a_missing_repository_or_ref_fails_with_gits_message() {
        let s = Scratch::new("source-git-missing");
        let repo = s.join("repo");
        repository(&repo);
        let dest = s.join("src");
        let missing = s.join("nothing-here");
        let origin = Origin::Git { url: missing.display().to_string(), git_ref: None };
        let reason = refused(&origin, &dest, &Limits::default());
        assert!(
            reason.starts_with(&format!("git could not clone `{}`: fatal: repository", missing.display())),
            "{reason}"
        );
        let origin = Origin::Git { url: repo.display().to_string(), git_ref: Some("nope".to_owned()) };
        let reason = refused(&origin, &dest, &Limits::default());
        assert!(
            reason.starts_with(&format!(
                "git could not check out `nope` of `{}`: error: pathspec 'nope'",
                repo.display()
            )),
            "{reason}"
        );
        let origin = Origin::Git { url: repo.display().to_string(), git_ref: Some("--help".to_owned()) };
        assert!(refused(&origin, &dest, &Limits::default()).ends_with("is not a valid repository and ref"));
    }
}

mod release {
    use super::*;
    use trueup::phases::release;

    fn output(s: &Scratch) -> std::path::PathBuf {
        let out = s.join("build/public");
        std::fs::create_dir_all(out.join("css")).unwrap();
        std::fs::write(out.join("index.html"), "v2").unwrap();
        std::fs::write(out.join("css/site.css"), "body{}").unwrap();
        out
    }

    #[test]
    fn a_release_is_copied_marked_and_left_alone_when_complete() {
        let s = Scratch::new("release-copy");
        let from = output(&s);
        let release = s.join("site/deployments/d7");
        let mut lines = Lines::default();
        release::copy(&from, &release, None, "d7", &mut lines).unwrap();
        assert!(release::is_complete(&release));
        assert_eq!(
            listing(&release),
            [
                ".trueup-release: file 644 d7",
                "css: dir 755",
                "css/site.css: file 644 body{}",
                "index.html: file 644 v2"
            ]
        );
        // A second run leaves it as it is, even when the output changed since.
        std::fs::write(from.join("index.html"), "changed").unwrap();
        release::copy(&from, &release, None, "d7", &mut lines).unwrap();
        assert_eq!(std::fs::read_to_string(release.join("index.html")).unwrap(), "v2");
        assert_eq!(std::fs::read_dir(s.join("site/deployments")).unwrap().count(), 1);
    }

    #[test]
    fn a_crash_before_the_rename_is_finished_by_a_re_run() {
        let s = Scratch::new("release-crash");
        let from = output(&s);
        let release = s.join("site/deployments/d7");
        // What a kill between the copy and the rename leaves: a half temporary folder.
        let tmp = s.join("site/deployments/.trueup-tmp-d7");
        std::fs::create_dir_all(tmp.join("css")).unwrap();
        std::fs::write(tmp.join("index.html"), "half").unwrap();
        std::fs::write(tmp.join("leftover"), "").unwrap();
        release::copy(&from, &release, None, "d7", &mut Lines::default()).unwrap();
        assert!(release::is_complete(&release));
        assert!(!tmp.exists());
        assert_eq!(std::fs::read_to_string(release.join("index.html")).unwrap(), "v2");
        assert!(!release.join("leftover").exists());
    }

    #[test]
    fn an_incomplete_folder_in_the_way_is_moved_aside() {
        let s = Scratch::new("release-aside");
        let from = output(&s);
        let release = s.join("site/deployments/d7");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("precious"), "keep me").unwrap();
        assert!(!release::is_complete(&release));
        let mut lines = Lines::default();
        release::copy(&from, &release, None, "d7", &mut lines).unwrap();
        assert!(release::is_complete(&release));
        let names: Vec<String> = std::fs::read_dir(s.join("site/deployments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let aside = names.iter().find(|n| n.starts_with("d7.trueup-aside-")).expect("moved aside");
        let kept = s.join("site/deployments").join(aside).join("precious");
        assert_eq!(std::fs::read_to_string(kept).unwrap(), "keep me");
        assert!(lines.lines.iter().any(|(l, t)| *l == LogLevel::Warn && t.contains("moved aside")));
    }

    #[test]
    fn missing_output_fails_with_its_name() {
        let s = Scratch::new("release-missing");
        let from = s.join("build/public");
        let release = s.join("site/deployments/d7");
        let result = release::copy(&from, &release, None, "d7", &mut Lines::default());
        assert_eq!(
            result,
            Err(PhaseError::Failed(format!("the build made no `public/` folder (looked for `{}`)", from.display())))
        );
        assert!(!release.exists() && !s.join("site/deployments/.trueup-tmp-d7").exists());
        assert!(!release::is_complete(&release));
    }
}

mod probe {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use trueup::phases::probe::{self, Request, Unmet};

    /// A loopback server that answers one connection per canned answer, in order, and
    /// returns the request heads it got. An empty answer holds the connection silent.
    fn serve(answers: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8(head).unwrap());
                if answer.is_empty() {
                    std::thread::sleep(Duration::from_millis(800));
                    continue;
                }
                // Written in pieces, as a real server may.
                for piece in answer.chunks(7) {
                    let _ = conn.write_all(piece);
                    let _ = conn.flush();
                }
            }
            heads
        });
        (port, handle)
    }

    fn get(port: u16, path: &str) -> Result<probe::Response, String> {
        let url = format!("http://127.0.0.1:{port}{path}");
        probe::get(&url, Some("site.localhost"), &[("X-Probe", "1")], Duration::from_secs(5))
    }

    #[test]
    fn a_get_sends_the_host_asked_for_and_reads_status_headers_and_first_line() {
        let body = "  <!doctype html>  \nrest\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Trueup-Deployment: d7\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (port, server) = serve(vec![answer.into_bytes()]);
        let response = get(port, "/health").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-trueup-deployment"), Some("d7"));
        assert_eq!(response.header("CONTENT-TYPE"), Some("text/html"));
        assert_eq!(response.header("missing"), None);
        assert_eq!(response.first_line, "<!doctype html>");
        let heads = server.join().unwrap();
        assert!(heads[0].starts_with("GET /health HTTP/1.1\r\nHost: site.localhost\r\nX-Probe: 1\r\n"), "{}", heads[0]);
    }

    #[test]
    fn chunked_close_delimited_and_long_bodies() {
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n9;x=y\r\nready\nyet\r\n0\r\n\r\n";
        let closed = b"HTTP/1.0 404 Not Found\r\n\r\nno such site".to_vec();
        let long = format!("HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n{}", "y".repeat(300));
        let (port, server) = serve(vec![chunked.to_vec(), closed, long.into_bytes()]);
        let r = get(port, "").unwrap();
        assert_eq!((r.status, r.first_line.as_str()), (503, "not ready"));
        let r = get(port, "/").unwrap();
        assert_eq!((r.status, r.first_line.as_str()), (404, "no such site"));
        let r = get(port, "/").unwrap();
        assert_eq!(r.first_line, "y".repeat(200));
        server.join().unwrap();
    }

    #[test]
    fn no_server_and_a_silent_one_are_errors() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = get(port, "/").unwrap_err();
        assert!(e.starts_with(&format!("could not connect to `127.0.0.1:{port}`")), "{e}");
        let (port, server) = serve(vec![Vec::new()]);
        let url = format!("http://127.0.0.1:{port}/");
        let e = probe::get(&url, None, &[], Duration::from_millis(300)).unwrap_err();
        assert_eq!(e, format!("`{url}` did not answer within 300ms"));
        assert!(server.join().unwrap()[0].contains(&format!("Host: 127.0.0.1:{port}\r\n")));
        assert!(probe::get("https://x/", None, &[], Duration::from_secs(1)).is_err());
        assert!(probe::get(&url, Some("a\r\nEvil: 1"), &[], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn until_retries_until_the_answer_is_right() {
        let busy = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec();
        let ready = b"HTTP/1.1 200 OK\r\nX-Trueup-Deployment: d7\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let (port, server) = serve(vec![busy.clone(), busy.clone(), ready]);
        let url = format!("http://127.0.0.1:{port}/");
        let request =
            Request { url: &url, host: Some("site.localhost"), headers: &[], timeout: Duration::from_secs(2) };
        let mut lines = Lines::default();
        let ok = |r: &probe::Response| r.status == 200 && r.header("x-trueup-deployment") == Some("d7");
        let response = probe::until(&request, Duration::from_secs(10), ok, &mut lines).unwrap();
        assert_eq!(response.first_line, "ok");
        assert!(lines.ticks >= 2);
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[test]
    fn until_gives_the_last_answer_or_error_on_timeout_and_stops_when_told() {
        let busy = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (port, server) = serve(vec![busy.clone(); 40]);
        let url = format!("http://127.0.0.1:{port}/");
        let request = Request { url: &url, host: None, headers: &[], timeout: Duration::from_secs(1) };
        let start = Instant::now();
        let result = probe::until(&request, Duration::from_millis(700), |r| r.status == 200, &mut Lines::default());
        assert!(matches!(result, Err(Unmet::Answer(ref r)) if r.status == 502), "{result:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
        let mut stop = StopAfter { after: Instant::now(), lines: Vec::new() };
        let result = probe::until(&request, Duration::from_secs(30), |r| r.status == 200, &mut stop);
        assert_eq!(result, Err(Unmet::Stopped("Ctrl-C".to_owned())));
        drop(server);
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{closed}/");
        let request = Request { url: &url, host: None, headers: &[], timeout: Duration::from_secs(1) };
        let result = probe::until(&request, Duration::from_millis(300), |_| true, &mut Lines::default());
        assert!(matches!(result, Err(Unmet::NoAnswer(ref e)) if e.starts_with("could not connect")), "{result:?}");
    }
}
