//! Colours for a person at a terminal: the symbol of each planned change, and the level
//! of each finding. Never in a pipe or a file, never with `NO_COLOR` set, unless asked
//! for with `--color always`.

use std::io::IsTerminal as _;

/// When to colour the text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto,
    /// Always, even in a pipe.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether standard output gets colours.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
            }
        }
    }
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// `text` (a rendered plan or status) with its symbols and levels coloured when `on`.
pub fn paint(text: &str, on: bool) -> String {
    if !on {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        out.push_str(&paint_line(line));
    }
    out
}

fn paint_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    for (prefix, color) in [("error:", RED), ("warning:", YELLOW), ("note:", CYAN)] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            return format!("{indent}{color}{prefix}{RESET}{rest}");
        }
    }
    // A planned change: `  SYMBOL VERB TARGET`, the symbol right-aligned in 3 columns.
    for (symbol, color) in [("-/+", YELLOW), ("+", GREEN), ("~", YELLOW), ("-", RED), ("x", RED), (">", CYAN)] {
        if let Some(rest) = trimmed.strip_prefix(symbol).filter(|r| r.starts_with(' '))
            && (2..=4).contains(&indent.len())
        {
            return format!("{indent}{color}{symbol}{RESET}{rest}");
        }
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_and_levels_are_coloured_and_nothing_else() {
        let text = "trueup will make these changes:\n\n  # project p1\n    + link       /r/p1/current -> x\n    \
                    x fail       deployment d1\n  -/+ recreate   container c\n      because - x + in a reason\n\
                    Findings (not changed):\n  warning: p1: something\n";
        let painted = paint(text, true);
        assert!(painted.contains("    \x1b[32m+\x1b[0m link"), "{painted}");
        assert!(painted.contains("    \x1b[31mx\x1b[0m fail"), "{painted}");
        assert!(painted.contains("  \x1b[33m-/+\x1b[0m recreate"), "{painted}");
        assert!(painted.contains("  \x1b[33mwarning:\x1b[0m p1"), "{painted}");
        assert!(painted.contains("      because - x + in a reason\n"), "a reason is left as it is: {painted}");
        assert_eq!(paint(text, false), text);
    }
}
