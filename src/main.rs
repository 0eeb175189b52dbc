//! The `trueup` command: parse the arguments, run, print any error chain once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match trueup::cli::Args::try_parse() {
        Ok(args) => args,
        // clap exits 2 on a usage error, the code `plan --detailed-exitcode` keeps for
        // "changes pending": a mistyped flag is an error like any other, exit 1.
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 1 } else { 0 });
        }
    };
    match trueup::cli::run(args) {
        Ok(code) => code,
        Err(err) => trueup::cli::exit_code(&err),
    }
}
