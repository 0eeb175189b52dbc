//! A line diff of expected against actual, for people: the longest common subsequence,
//! with a little context around each change.

/// Lines kept around a change; farther unchanged lines are elided as `...`.
const CONTEXT: usize = 2;

/// `expected` against `actual`, one line each: `- ` expected only, `+ ` actual only,
/// `  ` both. Runs of unchanged lines far from any change are shown as one `  ...`.
pub fn diff_lines(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: the longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            ops.push((' ', &expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Expected lines first, so a changed line reads `- old` then `+ new`.
            ops.push(('-', &expected[i]));
            i += 1;
        } else {
            ops.push(('+', &actual[j]));
            j += 1;
        }
    }
    let near_change =
        |k: usize| ops[k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(ops.len())].iter().any(|(c, _)| *c != ' ');
    let mut out = String::new();
    let mut elided = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if *c == ' ' && !near_change(k) {
            if !elided {
                out.push_str("  ...\n");
                elided = true;
            }
            continue;
        }
        elided = false;
        out.push(*c);
        out.push(' ');
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn changes_are_marked_and_far_context_elided() {
        let diff = diff_lines(&lines("a b c d e f g"), &lines("a b c d x f g"));
        assert_eq!(diff, "  ...\n  c\n  d\n- e\n+ x\n  f\n  g\n");
        assert_eq!(diff_lines(&[], &lines("a")), "+ a\n");
        assert_eq!(diff_lines(&lines("a"), &[]), "- a\n");
    }
}
