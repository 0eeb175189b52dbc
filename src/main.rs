//! The `trueup` command: parse the arguments, run, print any error chain once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = trueup::cli::Args::parse();
    match trueup::cli::run(args) {
        Ok(code) => code,
        Err(err) => trueup::cli::exit_code(&err),
    }
}
