//! Diagnostics on YAML input: one type, one renderer.
//!
//! Specs and fixtures both report problems as [`Diagnostic`]s that point at a line and
//! column of their file. [`render`] is the only place that turns them into text, in the
//! style of rustc and cargo:
//!
//! ```text
//! error: unknown target state `BUILDNG`
//!  --> specs/deployment.yaml:14:15
//!    |
//! 14 |       done: BUILDNG
//!    |             ^^^^^^^
//!    = help: did you mean `BUILDING`?
//! ```
//!
//! This module owns the formatting and the "did you mean" search; it knows nothing of
//! what the YAML means.

use std::fmt::Write as _;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input is unusable.
    Error,
    /// The input works, but probably not as its author meant.
    Warning,
}

/// A 1-based line and column in a source file. Line 0 means "no position known".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A lowercase phrase, names in backticks.
    pub message: String,
    /// Where the offending node starts.
    pub pos: Pos,
    /// A hint, usually the nearest valid name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, message: message.into(), pos, help: None }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, message: message.into(), pos, help: None }
    }

    /// The same diagnostic with a help line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds `did you mean` when some candidate is close to `name`.
    #[must_use]
    pub fn suggest<'a>(self, name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match did_you_mean(name, candidates) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= (c.chars().count().max(name.chars().count()) / 3).max(1))
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Renders every diagnostic of one file, in the order given, separated by blank lines.
///
/// `file` is the name shown after `-->`; `source` is the file's text, used for the
/// quoted line and the caret.
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, file, source, d);
    }
    out
}

fn render_one(out: &mut String, file: &str, source: &str, d: &Diagnostic) {
    let label = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(out, "{label}: {}", d.message);
    let line_text = (d.pos.line > 0).then(|| source.lines().nth(d.pos.line as usize - 1)).flatten();
    let Some(text) = line_text else {
        let _ = writeln!(out, " --> {file}");
        if let Some(help) = &d.help {
            write_help(out, " ", help);
        }
        return;
    };
    let number = d.pos.line.to_string();
    let pad = " ".repeat(number.len());
    let _ = writeln!(out, "{pad}--> {file}:{}:{}", d.pos.line, d.pos.column);
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{number} | {}", text.trim_end());
    let col = (d.pos.column.max(1) - 1) as usize;
    let indent: String = text.chars().take(col).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let width = token_width(text.chars().skip(col));
    let _ = writeln!(out, "{pad} | {indent}{}", "^".repeat(width));
    if let Some(help) = &d.help {
        write_help(out, &pad, help);
    }
}

/// Writes a help note; the lines after its first (a block of YAML to paste, say) are
/// aligned under the first one's text, as rustc aligns its notes.
fn write_help(out: &mut String, pad: &str, help: &str) {
    let mut lines = help.lines();
    let _ = writeln!(out, "{pad} = help: {}", lines.next().unwrap_or_default());
    for line in lines {
        let _ = writeln!(out, "{pad}         {line}");
    }
}

/// The width of the YAML token that starts here: a quoted string; or a plain scalar or
/// key, which runs (spaces included) up to a `: `, a flow delimiter `,` `]` `}`, a
/// comment or the end of the line.
fn token_width(chars: impl Iterator<Item = char>) -> usize {
    let chars: Vec<char> = chars.collect();
    let Some(&first) = chars.first() else { return 1 };
    if first == '"' || first == '\'' {
        let close = chars.iter().skip(1).position(|&c| c == first);
        return close.map_or(chars.len(), |i| i + 2);
    }
    let mut end = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        if i > 0 && matches!(c, ',' | ']' | '}') {
            break;
        }
        if c == ':' && next.is_none_or(char::is_whitespace) {
            break;
        }
        if c.is_whitespace() {
            if next == Some('#') {
                break;
            }
        } else {
            end = i + 1;
        }
    }
    end.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_token() {
        let src = "states:\n  A:\n    on: { go: BEE }\n";
        let d =
            Diagnostic::error(Pos { line: 3, column: 15 }, "unknown target state `BEE`").suggest("BEE", ["B", "BEES"]);
        let text = render("x.yaml", src, &[d]);
        assert_eq!(
            text,
            "error: unknown target state `BEE`\n --> x.yaml:3:15\n  |\n3 |     on: { go: BEE }\n  |               ^^^\n  = help: did you mean `BEES`?\n"
        );
    }

    #[test]
    fn caret_spans_a_key_without_its_colon() {
        let src = "foo: 1\nstuk_after: 5m\n";
        let d = Diagnostic::error(Pos { line: 2, column: 1 }, "unknown key");
        assert!(render("x", src, &[d]).contains("2 | stuk_after: 5m\n  | ^^^^^^^^^^\n"));
    }

    #[test]
    fn caret_spans_a_plain_value_with_spaces_but_not_a_comment() {
        let src = "stuck_after: 5 minutes  # too long\n";
        let d = Diagnostic::error(Pos { line: 1, column: 14 }, "invalid duration");
        assert!(render("x", src, &[d]).contains("  |              ^^^^^^^^^\n"));
        let src = "a: { b: \"x y\", c: d }\n";
        let d = Diagnostic::error(Pos { line: 1, column: 9 }, "quoted");
        assert!(render("x", src, &[d]).contains("  |         ^^^^^\n"));
    }

    #[test]
    fn a_help_of_several_lines_is_aligned_under_its_first() {
        let src = "version: 2\n";
        let d = Diagnostic::error(Pos { line: 1, column: 1 }, "missing `roles`").with_help("add:\nroles:\n  live: A");
        assert_eq!(
            render("x", src, std::slice::from_ref(&d)),
            "error: missing `roles`\n --> x:1:1\n  |\n1 | version: 2\n  | ^^^^^^^\n  = help: add:\n          roles:\n            live: A\n"
        );
        let nowhere = Diagnostic { pos: Pos::default(), ..d };
        assert!(render("x", src, &[nowhere]).ends_with("  = help: add:\n          roles:\n            live: A\n"));
    }

    #[test]
    fn suggestions_only_for_close_names() {
        assert_eq!(did_you_mean("BUILDNG", ["BUILDING", "QUEUED"]), Some("BUILDING"));
        assert_eq!(did_you_mean("zzz", ["BUILDING", "QUEUED"]), None);
    }
}
