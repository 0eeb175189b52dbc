//! `trueup test`: finds the cases under the paths given, reads them and their
//! expectations, runs them with [`crate::regress::run`], prints each failure and the
//! count, and with `--update` writes the new expectations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{Args, load_specs, note, noteln, out, outln};
use crate::regress::{self, EXPECT_SUFFIX, Input, Outcome, Status};

/// Arguments of `trueup test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Case files, or folders searched for `*.yaml` cases (default: fixtures/)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write each failing plan case's actual plan as its new expectation (fixture files
    /// are never written)
    #[arg(long)]
    pub update: bool,
    /// `text` for people, `junit` for CI (JUnit XML, on standard output unless `--out`)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// With `--format junit`, write the XML to FILE; the text report goes to standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Run only the cases whose path contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// The report formats of `trueup test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One block per failing case, then `N passed, N failed`.
    Text,
    /// JUnit XML.
    Junit,
}

/// The largest case or expectation file read: as large as a fixture may be.
const CASE_CAP: u64 = 64 << 20;

/// Runs the cases and reports them.
pub fn test(args: &Args, cmd: &TestArgs) -> anyhow::Result<ExitCode> {
    if cmd.out.is_some() && cmd.format != Format::Junit {
        anyhow::bail!("`--out` writes the JUnit report: give `--format junit` with it");
    }
    let specs = load_specs(&args.specs)?;
    let roots = if cmd.paths.is_empty() { vec![PathBuf::from("fixtures/")] } else { cmd.paths.clone() };
    let mut inputs = Vec::new();
    let mut unreadable = Vec::new();
    let mut passed_over = Vec::new();
    for root in &roots {
        let meta = std::fs::metadata(root).with_context(|| format!("cannot read `{}`", root.display()))?;
        let files = if meta.is_dir() { walk(root)? } else { vec![(root.clone(), true)] };
        for (path, named) in files {
            let name = path.display().to_string();
            if cmd.filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let bytes = super::read_capped_bytes(&path, "case", CASE_CAP)?;
            let text = String::from_utf8_lossy(&bytes);
            if !named && regress::kind_of(&text).is_none() {
                passed_over.push(name);
                continue;
            }
            let source = match String::from_utf8(bytes) {
                Ok(source) => source,
                Err(_) => {
                    unreadable.push((name.clone(), format!("case `{name}` is not UTF-8 text")));
                    continue;
                }
            };
            let expect = regress::expectation_path(&path);
            let expectation = match std::fs::symlink_metadata(&expect) {
                Ok(_) => Some((expect.display().to_string(), super::read_capped(&expect, "expectation", CASE_CAP)?)),
                Err(_) => None,
            };
            let must_be_refused = regress::must_be_refused(&path);
            inputs.push(Input { name, source, expectation, must_be_refused });
        }
    }
    if args.verbose && !passed_over.is_empty() {
        noteln!("not cases (no top-level `now:` or `events:`), passed over: {}", passed_over.join(", "));
    }
    if inputs.is_empty() && unreadable.is_empty() {
        let shown: Vec<String> = roots.iter().map(|r| format!("`{}`", r.display())).collect();
        anyhow::bail!(
            "no cases under {}{}",
            shown.join(", "),
            cmd.filter.as_ref().map(|f| format!(" matching `{f}`")).unwrap_or_default()
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut outcomes = regress::run(&specs, &inputs, threads);
    for (name, why) in unreadable {
        outcomes.push(Outcome {
            name,
            kind: None,
            status: Status::Malformed { message: why, diagnostics: String::new() },
            actual: None,
        });
    }
    if cmd.update {
        update(&inputs, &mut outcomes)?;
    }
    report(args, cmd, &outcomes)?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if failed == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    // For a CI log read from stderr; the count on stdout stays the last line.
    super::noteln!("error: {failed} of {} cases failed", outcomes.len());
    Ok(ExitCode::FAILURE)
}

/// Every `*.yaml` (or `*.yml`) file under `dir`, sorted, without the folders of
/// expectations; each marked as found by the walk, not named.
fn walk(dir: &Path) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("cannot list `{}`", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list `{}`", d.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().with_context(|| format!("cannot read `{}`", path.display()))?;
            if kind.is_dir() {
                if !name.ends_with(EXPECT_SUFFIX) && !name.starts_with('.') {
                    todo.push(path);
                }
            } else if kind.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                files.push((path, false));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Writes the actual plan of each plan case that did not pass as its expectation, and
/// counts it as passed. Only files in folders of expectations are written.
fn update(inputs: &[Input], outcomes: &mut [Outcome]) -> anyhow::Result<()> {
    for (input, outcome) in inputs.iter().zip(outcomes.iter_mut()) {
        let Some(actual) = &outcome.actual else { continue };
        if outcome.passed() || input.must_be_refused {
            continue;
        }
        let path = regress::expectation_path(Path::new(&input.name));
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).with_context(|| format!("cannot create `{}`", folder.display()))?;
        }
        std::fs::write(&path, actual).with_context(|| format!("cannot write `{}`", path.display()))?;
        noteln!("updated {}", path.display());
        outcome.status = Status::Passed;
    }
    Ok(())
}

fn report(args: &Args, cmd: &TestArgs, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let summary = regress::summary(outcomes);
    if cmd.format == Format::Junit {
        let xml = regress::junit("trueup test", outcomes);
        match &cmd.out {
            Some(path) => std::fs::write(path, xml).with_context(|| format!("cannot write `{}`", path.display()))?,
            None => {
                out!("{xml}")?;
                note!("{summary}\n");
                return Ok(());
            }
        }
    }
    let on = args.color.enabled();
    for o in outcomes {
        out!("{}", paint(&regress::render_failure(o), on))?;
    }
    outln!("{summary}")?;
    Ok(())
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// A failure report with its heading bold, expected lines red and actual lines green,
/// when `on`.
fn paint(text: &str, on: bool) -> String {
    if !on {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        let color = if body.starts_with("FAIL ") {
            BOLD
        } else if body.starts_with("    - ") {
            RED
        } else if body.starts_with("    + ") {
            GREEN
        } else {
            ""
        };
        if color.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&format!("{color}{body}{RESET}{end}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_lines_are_red_and_actual_green_on_a_terminal() {
        let text = "FAIL a.yaml: the plan differs\n    - fail [p1] x\n    + resume [p1] x\n      ...\n";
        let painted = paint(text, true);
        assert!(painted.contains("\x1b[31m    - fail [p1] x\x1b[0m\n"), "{painted}");
        assert!(painted.contains("\x1b[32m    + resume [p1] x\x1b[0m\n"), "{painted}");
        assert!(painted.ends_with("      ...\n"), "{painted}");
        assert_eq!(paint(text, false), text);
    }
}
