//! Drawing a compiled [`Spec`]: Mermaid `stateDiagram-v2` and Graphviz `dot` text.
//!
//! Both renderers are pure functions from a spec to a string; the CLI prints them.
//! Superstates become nested states (Mermaid) or clusters (dot), final states are marked
//! (`--> [*]` in Mermaid, a double border in dot), guards are shown in brackets on edge
//! labels, each phase's resume rule is a note beside it, and a state's box says what the
//! phase runs (`run build`) and which roles it plays (`role live`). State names are letters,
//! digits and `_` (the loader enforces it), so they are valid identifiers in both
//! languages; free text (descriptions, reasons) is escaped.

use std::fmt::Write as _;

use crate::spec::{Resume, ResumeRule, Spec, StateId, StateKind, TransitionDef};

/// The output formats of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// Mermaid `stateDiagram-v2`, for Markdown files and GitHub.
    Mermaid,
    /// Graphviz `dot`, for `dot -Tsvg`.
    Dot,
}

/// Renders `spec` in `format`.
pub fn render(spec: &Spec, format: Format) -> String {
    match format {
        Format::Mermaid => mermaid(spec),
        Format::Dot => dot(spec),
    }
}

fn label(t: &TransitionDef) -> String {
    match t.guard {
        Some(g) => format!("{} [{g}]", t.event),
        None => t.event.clone(),
    }
}

/// The lines of a resume rule's note: the rule, then its check, reason and requirements.
fn resume_lines(resume: &Resume) -> Vec<String> {
    let mut lines = Vec::new();
    match &resume.rule {
        ResumeRule::RestartPhase => lines.push("resume: restart_phase".to_owned()),
        ResumeRule::VerifyThenContinue { check } => {
            lines.push("resume: verify_then_continue".to_owned());
            lines.push(format!("check: {check}"));
        }
        ResumeRule::Fail { reason } => {
            lines.push("resume: fail".to_owned());
            lines.push(format!("reason: {}", one_line(reason)));
        }
    }
    if !resume.requires.is_empty() {
        let names: Vec<&str> = resume.requires.iter().map(|p| p.name()).collect();
        lines.push(format!("requires: {}", names.join(", ")));
    }
    lines
}

/// The lines a state's box shows under its name: what the phase runs, and the roles the
/// state plays.
fn state_lines(spec: &Spec, id: StateId) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(run) = &spec.state(id).run {
        lines.push(format!("run {}", one_line(&run.to_string())));
    }
    let roles: Vec<&str> = spec.roles.states().iter().filter(|(_, s)| *s == id).map(|(r, _)| r.name()).collect();
    if !roles.is_empty() {
        lines.push(format!("role {}", roles.join(", ")));
    }
    lines
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost compound state that contains both `a` and `b` (`None`: the top level).
fn common_parent(spec: &Spec, a: StateId, b: StateId) -> Option<StateId> {
    let bs = &spec.state(b).ancestors;
    spec.state(a).ancestors.iter().copied().find(|x| bs.contains(x))
}

/// Renders `spec` as a Mermaid `stateDiagram-v2`.
///
/// Each transition is written inside the innermost superstate that holds both its ends,
/// after the states of that block are declared, so Mermaid never invents a state at the
/// wrong level.
pub fn mermaid(spec: &Spec) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    if let Some(d) = &spec.description {
        let _ = writeln!(out, "    %% {}", one_line(d));
    }
    let _ = writeln!(out, "    [*] --> {}", spec.state(spec.initial).name);
    let top: Vec<StateId> = spec.ids().filter(|&i| spec.state(i).parent.is_none()).collect();
    mermaid_block(spec, None, &top, 1, &mut out);
    out
}

fn mermaid_block(spec: &Spec, block: Option<StateId>, children: &[StateId], depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    for &c in children {
        let s = spec.state(c);
        if let Some(d) = &s.description {
            let _ = writeln!(out, "{pad}{} : {}", s.name, mermaid_text(d));
        }
        for line in state_lines(spec, c) {
            let _ = writeln!(out, "{pad}{} : {}", s.name, mermaid_text(&line));
        }
        if let StateKind::Compound { initial, children: inner } = &s.kind {
            let _ = writeln!(out, "{pad}state {} {{", s.name);
            let _ = writeln!(out, "{pad}    [*] --> {}", spec.state(*initial).name);
            mermaid_block(spec, Some(c), inner, depth + 1, out);
            let _ = writeln!(out, "{pad}}}");
        }
        if let Some(resume) = &s.resume {
            let _ = writeln!(out, "{pad}note right of {}", s.name);
            for line in resume_lines(resume) {
                let _ = writeln!(out, "{pad}    {}", mermaid_text(&line));
            }
            let _ = writeln!(out, "{pad}end note");
        }
    }
    for id in spec.ids() {
        for t in &spec.state(id).on {
            if common_parent(spec, id, t.target) == block && (block.is_none() || in_block(spec, id, block)) {
                let _ = writeln!(out, "{pad}{} --> {} : {}", spec.state(id).name, spec.state(t.target).name, label(t));
            }
        }
    }
    for &c in children {
        if spec.is_final(c) {
            let _ = writeln!(out, "{pad}{} --> [*]", spec.state(c).name);
        }
    }
}

fn in_block(spec: &Spec, id: StateId, block: Option<StateId>) -> bool {
    block.is_none_or(|b| spec.state(id).ancestors.contains(&b))
}

/// Mermaid text on one line, without the characters that end a statement or a note.
fn mermaid_text(text: &str) -> String {
    one_line(text).replace(';', ",").replace('#', "").replace("end note", "end-note")
}

/// Renders `spec` as a Graphviz digraph.
///
/// A superstate is a cluster holding a point node of its own name (its initial marker),
/// which edges to and from the superstate attach to with `lhead`/`ltail`.
pub fn dot(spec: &Spec) -> String {
    let mut out = String::from("digraph spec {\n");
    out.push_str("    graph [rankdir=LR, compound=true, fontname=\"Helvetica\"");
    if let Some(d) = &spec.description {
        let _ = write!(out, ", label=\"{}\", labelloc=t", dot_text(d));
    }
    out.push_str("];\n");
    out.push_str("    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("    edge [fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("    __start [shape=point, width=0.15];\n");
    let _ = writeln!(out, "    __start -> {};", dot_endpoint(spec, spec.initial, "lhead").0);
    let top: Vec<StateId> = spec.ids().filter(|&i| spec.state(i).parent.is_none()).collect();
    dot_block(spec, &top, 1, &mut out);
    for id in spec.ids() {
        for t in &spec.state(id).on {
            let (from, tail) = dot_endpoint(spec, id, "ltail");
            let (to, head) = dot_endpoint(spec, t.target, "lhead");
            let attrs: Vec<String> =
                [Some(format!("label=\"{}\"", dot_text(&label(t)))), tail, head].into_iter().flatten().collect();
            let _ = writeln!(out, "    {from} -> {to} [{}];", attrs.join(", "));
        }
    }
    out.push_str("}\n");
    out
}

/// The node an edge attaches to for a state, and the cluster attribute for a superstate.
fn dot_endpoint(spec: &Spec, id: StateId, attr: &str) -> (String, Option<String>) {
    let name = spec.state(id).name.clone();
    match spec.state(id).kind {
        StateKind::Compound { .. } => (name.clone(), Some(format!("{attr}=cluster_{name}"))),
        _ => (name, None),
    }
}

fn dot_block(spec: &Spec, children: &[StateId], depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    for &c in children {
        let s = spec.state(c);
        match &s.kind {
            StateKind::Compound { initial, children: inner } => {
                let _ = writeln!(out, "{pad}subgraph cluster_{} {{", s.name);
                let _ = writeln!(out, "{pad}    label=\"{}\";", s.name);
                let _ = writeln!(out, "{pad}    style=rounded;");
                let _ = writeln!(out, "{pad}    {} [shape=point, width=0.15];", s.name);
                let _ = writeln!(out, "{pad}    {} -> {};", s.name, dot_endpoint(spec, *initial, "lhead").0);
                dot_block(spec, inner, depth + 1, out);
                let _ = writeln!(out, "{pad}}}");
            }
            StateKind::Final | StateKind::Atomic => {
                let mut attrs = Vec::new();
                if s.kind == StateKind::Final {
                    attrs.push("peripheries=2".to_owned());
                }
                attrs.extend(dot_label(spec, c));
                attrs.push(format!("tooltip=\"{}\"", tooltip(s.description.as_deref())));
                let _ = writeln!(out, "{pad}{} [{}];", s.name, attrs.join(", "));
            }
        }
        if let Some(resume) = &s.resume {
            let text: Vec<String> = resume_lines(resume).iter().map(|l| dot_text(l)).collect();
            let _ = writeln!(
                out,
                "{pad}{}__resume [shape=note, style=\"\", fontsize=9, label=\"{}\\l\"];",
                s.name,
                text.join("\\l")
            );
            let _ = writeln!(out, "{pad}{0} -> {0}__resume [style=dashed, arrowhead=none];", s.name);
        }
    }
}

/// `label="NAME\nrun build"` when the state's box shows more than its name.
fn dot_label(spec: &Spec, id: StateId) -> Option<String> {
    let lines = state_lines(spec, id);
    if lines.is_empty() {
        return None;
    }
    let text: Vec<String> = std::iter::once(spec.name(id).to_owned()).chain(lines).map(|l| dot_text(&l)).collect();
    Some(format!("label=\"{}\"", text.join("\\n")))
}

fn tooltip(description: Option<&str>) -> String {
    description.map(dot_text).unwrap_or_default()
}

/// Text inside a dot double-quoted string.
fn dot_text(text: &str) -> String {
    one_line(text).replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::default_spec;

    #[test]
    fn mermaid_nests_superstates_and_marks_finals() {
        let text = mermaid(&default_spec());
        assert!(text.starts_with("stateDiagram-v2\n"));
        assert!(text.contains("    state IN_PROGRESS {\n        [*] --> PULLING_SOURCE\n"));
        assert!(text.contains("    ACTIVE --> [*]\n"));
        assert!(text.contains("        HEALTH_CHECK --> HEALTH_CHECK : retry [attempts_remaining]\n"));
    }

    #[test]
    fn dot_uses_clusters() {
        let text = dot(&default_spec());
        assert!(text.contains("subgraph cluster_IN_PROGRESS {"));
        assert!(text.contains("IN_PROGRESS -> FAILED [label=\"fail\", ltail=cluster_IN_PROGRESS];"));
    }

    #[test]
    fn both_show_what_a_phase_runs_and_the_roles_of_states() {
        let spec = default_spec();
        let text = mermaid(&spec);
        assert!(text.contains("        BUILDING : run build\n"), "{text}");
        assert!(text.contains("    ACTIVE : role live\n"), "{text}");
        let text = dot(&spec);
        assert!(text.contains("BUILDING [label=\"BUILDING\\nrun build\", tooltip="), "{text}");
        assert!(text.contains("ACTIVE [peripheries=2, label=\"ACTIVE\\nrole live\", tooltip="), "{text}");
    }

    #[test]
    fn a_command_is_escaped_and_a_state_with_two_roles_shows_both() {
        let source = "version: 2\ninitial: A\nstuck_after: 5m\nroles: { live: B, failed: C, cancelled: C, done: done, fail: fail, retry: retry }\nstates:\n  A:\n    run: { command: \"echo \\\"a;b\\\" # x\" }\n    resume: restart_phase\n    on: { done: B, fail: C, retry: A }\n  B: { final: true }\n  C: { final: true }\n";
        let (spec, _) = crate::spec::load("x.yaml", source).unwrap();
        let text = dot(&spec);
        assert!(text.contains(r#"A [label="A\nrun command `echo \"a;b\" # x`", tooltip=""];"#), "{text}");
        assert!(text.contains(r#"C [peripheries=2, label="C\nrole failed, cancelled", tooltip=""];"#), "{text}");
        let text = mermaid(&spec);
        assert!(text.contains("    A : run command `echo \"a,b\"  x`\n"), "{text}");
        assert!(text.contains("    C : role failed, cancelled\n"), "{text}");
    }
}
