//! Standard output and standard error for the commands: a write error never panics.
//!
//! `print!` panics when stdout is a closed pipe (`trueup plan | head -1`) or a full
//! device (`> /dev/full`). Every command writes its output with [`out!`] and [`outln!`]
//! instead, whose error ends the command: [`exit_code`] turns a closed pipe into a quiet
//! exit [`EXIT_BROKEN_PIPE`], as a shell reports a process killed by SIGPIPE, and any
//! other error into `error: ...` on stderr and exit 1. Notes on stderr go through
//! [`note!`] and [`noteln!`], which drops its own errors: stderr is where an error would be said, so
//! there is nobody left to tell, and a note must never stop an apply halfway.

use std::io::Write as _;
use std::process::ExitCode;

/// The exit code when stdout is a closed pipe: 128 + SIGPIPE (13), what a shell reports
/// for a process that SIGPIPE killed, so `set -o pipefail` scripts see the same thing.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Writes `args` to stdout and flushes it.
///
/// # Errors
///
/// When stdout cannot be written: a closed pipe, a full device.
pub fn write_out(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args).and_then(|()| stdout.flush()).map_err(|e| anyhow::Error::new(e).context(OUT))
}

/// What a failed write to stdout says.
const OUT: &str = "cannot write to standard output";

/// Writes `args` to stderr, dropping any error (see the module docs).
pub fn write_note(args: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|()| stderr.flush());
}

/// `print!` that returns an error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!($($arg)*)) };
}

/// `println!` that returns an error instead of panicking.
macro_rules! outln {
    () => { $crate::cli::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics and drops its errors.
macro_rules! note {
    ($($arg:tt)*) => { $crate::cli::output::write_note(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics and drops its errors.
macro_rules! noteln {
    ($($arg:tt)*) => { $crate::cli::output::write_note(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {note, noteln, out, outln};

/// True when `err` is, at its root, stdout or stderr being a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Says `err` once on stderr with its chain and gives the exit code: quietly
/// [`EXIT_BROKEN_PIPE`] for a closed pipe (the reader wanted no more), 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::from(EXIT_BROKEN_PIPE);
    }
    write_note(format_args!("error: {err:#}\n"));
    ExitCode::from(1)
}
