//! A YAML document as a small tree of nodes that remember where they start.
//!
//! Spec validation must point at keys as well as values, and report every problem at
//! once, so it cannot stop at serde's first error. This module reads the event stream of
//! the parser that serde-saphyr itself is built on (re-exported as
//! [`serde_saphyr::granit_parser`]) into [`Node`]s with the position of every key and
//! value. It knows nothing of what a spec means. It never panics: syntax errors, aliases
//! to unknown anchors, complex keys and overly deep or large documents all come back as
//! one [`Diagnostic`].

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span};

use crate::diag::{Diagnostic, Pos};

/// Nesting deeper than this is refused: no spec needs it, and it bounds recursion.
const MAX_DEPTH: usize = 64;

/// More nodes than this (counting alias expansions) are refused, which defuses
/// "billion laughs" documents.
const MAX_NODES: usize = 100_000;

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Where the node's first character is.
    pub pos: Pos,
    /// Its content.
    pub kind: NodeKind,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// A scalar's text; `plain` is false when it was quoted or a block scalar, so `"1"`
    /// is a string and `1` may be a number.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order, keys unique.
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a scalar in specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// The key's text.
    pub text: String,
    /// Where the key starts.
    pub pos: Pos,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an empty plain scalar or `~`/`null`: what YAML reads as null.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of node this is, for messages: `a map`, `a list`, `a string`.
    pub fn what(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }
}

fn pos(m: &Marker) -> Pos {
    // The parser counts lines from 1 and columns from 0.
    let line = u32::try_from(m.line()).unwrap_or(u32::MAX);
    let column = u32::try_from(m.col()).unwrap_or(u32::MAX - 1).saturating_add(1);
    Pos { line, column }
}

fn syntax_error(e: &ScanError) -> Diagnostic {
    Diagnostic::error(pos(e.marker()), format!("invalid YAML: {}", e.info()))
}

/// A collection being built.
enum Open {
    Seq(Pos, usize, Vec<Node>),
    /// A mapping: its position, anchor, entries so far, and the key waiting for a value.
    Map(Pos, usize, Vec<(Key, Node)>, Option<Key>),
}

/// Parses the first YAML document of `source`. An empty file is a null scalar.
///
/// # Errors
///
/// The first syntax or structure problem, as one diagnostic.
pub(crate) fn parse(source: &str) -> Result<Node, Diagnostic> {
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: Vec<(usize, Node)> = Vec::new();
    let mut nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span): (Event<'_>, Span) = next.map_err(|e| syntax_error(&e))?;
        let at = pos(&span.start);
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(at, "a spec file holds one YAML document, this is a second one"));
                }
                continue;
            }
            Event::SequenceStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(at, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Open::Seq(at, anchor, Vec::new()));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(at, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Open::Map(at, anchor, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(p, anchor, items)) => (Node { pos: p, kind: NodeKind::Seq(items) }, anchor),
                Some(Open::Map(p, anchor, entries, _)) => (Node { pos: p, kind: NodeKind::Map(entries) }, anchor),
                None => return Err(Diagnostic::error(at, "invalid YAML: unbalanced collection end")),
            },
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == ScalarStyle::Plain;
                (Node { pos: at, kind: NodeKind::Scalar { text: text.into_owned(), plain } }, anchor)
            }
            Event::Alias(id) => {
                let Some((_, target)) = anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(Diagnostic::error(at, "alias to an anchor that is not defined before it"));
                };
                // Every tree built so far obeys the depth limit, so these recursions are
                // bounded; the copy must obey it too where it lands.
                if stack.len() + height(target) > MAX_DEPTH {
                    return Err(Diagnostic::error(at, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                nodes = nodes.saturating_add(count(target));
                let mut copy = target.clone();
                copy.pos = at;
                (copy, 0)
            }
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(Diagnostic::error(at, format!("the document has more than {MAX_NODES} nodes")));
        }
        if anchor != 0 {
            anchors.push((anchor, node.clone()));
        }
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    root = Some(node);
                }
            }
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, entries, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let Some(text) = node.as_str() else {
                        return Err(Diagnostic::error(node.pos, "map keys must be plain names, not lists or maps"));
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == text) {
                        return Err(Diagnostic::error(node.pos, format!("duplicate key `{text}`"))
                            .with_help(format!("`{text}` is first set on line {}", first.pos.line)));
                    }
                    *pending = Some(Key { text: text.to_owned(), pos: node.pos });
                }
            },
        }
    }
    Ok(root.unwrap_or(Node {
        pos: Pos { line: 1, column: 1 },
        kind: NodeKind::Scalar { text: String::new(), plain: true },
    }))
}

/// How many levels of collections a tree has (a scalar has none).
fn height(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Seq(items) => 1 + items.iter().map(height).max().unwrap_or(0),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(_, v)| height(v)).max().unwrap_or(0),
    }
}

/// The number of nodes in a tree.
fn count(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => items.iter().map(count).fold(1, usize::saturating_add),
        NodeKind::Map(entries) => entries.iter().map(|(_, v)| count(v)).fold(1 + entries.len(), usize::saturating_add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, column: u32) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn keys_and_values_have_positions() {
        let node = parse("a: 1\nb:\n  - x\n  - { c: \"d\" }\n").unwrap();
        let NodeKind::Map(entries) = &node.kind else { panic!("{node:?}") };
        assert_eq!(entries[0].0.pos, p(1, 1));
        assert_eq!(entries[0].1.pos, p(1, 4));
        assert_eq!(entries[1].0.pos, p(2, 1));
        let NodeKind::Seq(items) = &entries[1].1.kind else { panic!() };
        assert_eq!(items[0].pos, p(3, 5));
        let NodeKind::Map(inner) = &items[1].kind else { panic!() };
        assert_eq!(inner[0].0.pos, p(4, 7));
        assert_eq!(inner[0].1, Node { pos: p(4, 10), kind: NodeKind::Scalar { text: "d".into(), plain: false } });
    }

    #[test]
    fn problems_are_diagnostics() {
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML: "), "{e:?}");
        assert!(parse("a: 1\na: 2\n").unwrap_err().message.contains("duplicate key `a`"));
        assert!(parse("? [a]\n: 1\n").is_err());
        assert!(parse("a: *nope\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).is_err());
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(parse(laughs).unwrap_err().message.contains("more than"));
        let mut tower = String::from("a0: &a0 [x]\n");
        for i in 1..100 {
            tower += &format!("a{i}: &a{i} [*a{}]\n", i - 1);
        }
        assert!(parse(&tower).unwrap_err().message.contains("nesting deeper"));
        assert!(parse("").unwrap().is_null());
    }
}
