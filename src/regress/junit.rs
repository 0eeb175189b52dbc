//! JUnit XML, the report format CI systems read: one `testcase` per case, a `failure` for
//! one that ran and differs, an `error` for one that cannot be read.

use std::fmt::Write as _;

use super::{Outcome, Status};

/// The outcomes as a JUnit XML document, in one `testsuite` named `suite`.
pub fn junit(suite: &str, outcomes: &[Outcome]) -> String {
    let failures = outcomes.iter().filter(|o| matches!(o.status, Status::Failed { .. })).count();
    let errors = outcomes.iter().filter(|o| matches!(o.status, Status::Malformed { .. })).count();
    let tests = outcomes.len();
    let suite = escape(suite);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!("tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\"");
    let _ = writeln!(out, "<testsuites name=\"{suite}\" {counts}>");
    let _ = writeln!(out, "  <testsuite name=\"{suite}\" {counts} skipped=\"0\">");
    for o in outcomes {
        let class = o.kind.map_or("unknown", |k| k.name());
        let head = format!("    <testcase name=\"{}\" classname=\"{class}\"", escape(&o.name));
        let (tag, message, body) = match &o.status {
            Status::Passed => {
                let _ = writeln!(out, "{head}/>");
                continue;
            }
            Status::Failed { message, diff } => ("failure", message, diff),
            Status::Malformed { message, diagnostics } => ("error", message, diagnostics),
        };
        let _ = writeln!(out, "{head}>");
        let _ = writeln!(out, "      <{tag} message=\"{}\">{}</{tag}>", escape(message), escape(body));
        let _ = writeln!(out, "    </testcase>");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `text` as XML character data or an attribute value: the five markup characters as
/// entities, line breaks and tabs as character references (an attribute keeps them
/// then), and the control characters XML 1.0 cannot hold at all as `?`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regress::CaseKind;

    #[test]
    fn markup_in_names_and_messages_is_escaped() {
        let outcomes = [Outcome {
            name: "a<&>\"'.yaml".to_owned(),
            kind: Some(CaseKind::Plan),
            status: Status::Failed { message: "x < y".to_owned(), diff: "- a\u{1b}[0m\n+ b".to_owned() },
            actual: None,
        }];
        let xml = junit("s", &outcomes);
        assert!(xml.contains("name=\"a&lt;&amp;&gt;&quot;&apos;.yaml\""), "{xml}");
        assert!(xml.contains("<failure message=\"x &lt; y\">- a?[0m&#10;+ b</failure>"), "{xml}");
        assert!(xml.contains("tests=\"1\" failures=\"1\" errors=\"0\""), "{xml}");
    }
}
