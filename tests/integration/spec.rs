//! The spec language from outside: validation fixtures to snapshots, machine traces of
//! the default spec, property tests of the loader and the machine, graph output, and the
//! `validate` and `graph` commands.

use std::fmt;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use trueup::spec::{self, Spec, StateId, StateKind};
use trueup::{diag, graph, machine};

/// Insta settings shared by every snapshot here: files live in the top-level `snapshots/`.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../../snapshots");
    s.set_omit_expression(true);
    s
}

fn relative(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

// ---------------------------------------------------------------------------------------
// Validation fixtures

/// Loads one fixture; returns whether it is valid and what a person reads about it.
#[track_caller]
fn check(path: &Path) -> (bool, String) {
    let bytes = std::fs::read(path).unwrap();
    let name = relative(path);
    let source = String::from_utf8_lossy(&bytes);
    match spec::load_bytes(&name, &bytes) {
        Ok((spec, warnings)) => {
            let finals = spec.ids().filter(|&i| spec.is_final(i)).count();
            let mut text = format!("valid: {} states, {finals} final\n", spec.states.len());
            let states = spec.roles.states().map(|(role, id)| format!("{role} {}", spec.name(id)));
            let events = spec.roles.events().map(|(role, event)| format!("{role} `{event}`"));
            let _ = writeln!(text, "roles: {}, {}", states.join(", "), events.join(", "));
            let runs: Vec<String> = spec
                .ids()
                .filter(|&i| spec.state(i).kind == StateKind::Atomic)
                .map(|i| match &spec.state(i).run {
                    Some(run) => format!("{} {run}", spec.name(i)),
                    None => format!("{} (nothing)", spec.name(i)),
                })
                .collect();
            let _ = writeln!(text, "run: {}", runs.join(", "));
            if !warnings.is_empty() {
                text.push('\n');
                text.push_str(&diag::render(&name, &source, &warnings));
            }
            (true, text)
        }
        Err(diagnostics) => {
            assert!(diagnostics.iter().any(diag::Diagnostic::is_error), "an invalid spec has an error");
            (false, diag::render(&name, &source, &diagnostics))
        }
    }
}

#[test]
fn validate_err() {
    let mut count = 0;
    settings().bind(|| {
        insta::glob!("../../fixtures/validate/err", "*.yaml", |path| {
            count += 1;
            let (valid, text) = check(path);
            assert!(!valid, "{} should be invalid", path.display());
            insta::assert_snapshot!(text);
        });
    });
    assert!(count >= 15, "only {count} error fixtures");
}

#[test]
fn validate_ok() {
    settings().bind(|| {
        insta::glob!("../../fixtures/validate/ok", "*.yaml", |path| {
            let (valid, text) = check(path);
            assert!(valid, "{} should be valid:\n{text}", path.display());
            insta::assert_snapshot!(text);
        });
    });
}

#[test]
fn default_spec_is_valid_without_warnings() {
    let (_, warnings) = spec::load(spec::DEFAULT_SPEC_NAME, spec::DEFAULT_SPEC_SOURCE).unwrap();
    assert_eq!(warnings, []);
}

// ---------------------------------------------------------------------------------------
// Traces of the default machine

/// Runs `events` from the state named `start` with every guard answering `guards`.
#[track_caller]
fn check_trace(start: &str, events: &[&str], guards: bool) -> String {
    let spec = spec::default_spec();
    let id = spec.find(start).unwrap();
    machine::render_trace(&spec, id, events, &|_| guards)
}

#[test]
fn trace_happy_path() {
    let text = check_trace("QUEUED", &["done", "done", "done", "done", "done", "done", "done"], true);
    settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn trace_fail_from_every_phase() {
    let spec = spec::default_spec();
    let mut text = String::new();
    for id in spec.ids().filter(|&i| spec.state(i).kind == StateKind::Atomic) {
        text.push_str(&check_trace(&spec.state(id).name, &["fail"], true));
    }
    settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn trace_cancel_from_a_deep_phase() {
    let text = check_trace("PULLING_SOURCE", &["done", "done", "done", "done", "cancel"], true);
    settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn trace_self_transitions() {
    let mut text = check_trace("BUILDING", &["retry", "retry"], true);
    text += &check_trace("HEALTH_CHECK", &["retry"], true);
    text += &check_trace("HEALTH_CHECK", &["retry"], false);
    settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn trace_rejected_events() {
    let mut text = check_trace("BUILDING", &["deploy"], true);
    text += &check_trace("QUEUED", &["retry"], true);
    text += &check_trace("FAILED", &["retry"], true);
    settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn step_errors_display() {
    let default = spec::default_spec();
    let guarded = "version: 2\ninitial: A\nstuck_after: 5m\nroles: { live: B, failed: C, cancelled: C, done: stop, fail: fail, retry: go }\nstates:\n  A:\n    run: wait\n    resume: restart_phase\n    on:\n      go:\n        - { target: B, guard: attempts_remaining }\n        - { target: B, guard: has_previous_release }\n      stop: B\n      fail: C\n  B: { final: true }\n  C: { final: true }\n";
    let (small, _) = spec::load("guarded.yaml", guarded).unwrap();
    let errors = [
        machine::step(&default, default.find("BUILDING").unwrap(), "deploy", &|_| true),
        machine::step(&small, small.find("A").unwrap(), "go", &|_| false),
        machine::step(&default, default.find("IN_PROGRESS").unwrap(), "done", &|_| true),
        machine::step(&small, default.find("CANCELLED").unwrap(), "go", &|_| true),
    ];
    let text: String = errors.into_iter().map(|e| format!("{}\n", e.unwrap_err())).collect();
    settings().bind(|| insta::assert_snapshot!(text));
}

// ---------------------------------------------------------------------------------------
// Property tests

/// Text that proptest prints as itself, so a failing input pastes into a file.
#[derive(Clone)]
struct Yaml(String);

impl fmt::Debug for Yaml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n---\n{}\n...", self.0)
    }
}

/// A YAML tree whose names lean towards the spec language, so the validator goes deep.
#[derive(Debug, Clone)]
enum Tree {
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

const WORDS: &[&str] = &[
    "version",
    "initial",
    "states",
    "on",
    "final",
    "stuck_after",
    "max_attempts",
    "resume",
    "rule",
    "requires",
    "check",
    "reason",
    "description",
    "target",
    "guard",
    "true",
    "false",
    "1",
    "0",
    "2",
    "5m",
    "90s",
    "0s",
    "5 m",
    "A",
    "B",
    "C",
    "BUILDING",
    "restart_phase",
    "verify_then_continue",
    "fail",
    "source_present",
    "attempts_remaining",
    "done",
    "bad name",
    "",
    "~",
    "*x",
    "&a",
    "- x",
    "a: b",
    "{",
    "]",
    "#c",
    "é",
    "\t",
    "\"",
];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

fn tree() -> impl Strategy<Value = Tree> {
    word().prop_map(Tree::Scalar).prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Seq),
            prop::collection::vec((word(), inner), 0..5).prop_map(Tree::Map),
        ]
    })
}

fn scalar(text: &str, raw: bool) -> String {
    if raw || (!text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// Block-style YAML; with `raw`, scalars are written unquoted, which breaks some files.
fn emit(tree: &Tree, indent: usize, raw: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    match tree {
        Tree::Scalar(s) => {
            let _ = writeln!(out, " {}", scalar(s, raw));
        }
        Tree::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Tree::Seq(items) => {
            out.push('\n');
            for item in items {
                let _ = write!(out, "{pad}-");
                emit(item, indent + 2, raw, out);
            }
        }
        Tree::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                let _ = write!(out, "{pad}{}:", scalar(k, raw));
                emit(v, indent + 2, raw, out);
            }
        }
    }
}

/// A map whose keys are unique (keeping the first of each), as YAML requires.
fn unique(entries: Vec<(String, Tree)>) -> Tree {
    let mut out: Vec<(String, Tree)> = Vec::new();
    for (k, v) in entries {
        if !out.iter().any(|(seen, _)| *seen == k) {
            out.push((k, v));
        }
    }
    Tree::Map(out)
}

fn entry(key: &'static str, value: impl Strategy<Value = Tree>) -> impl Strategy<Value = Option<(String, Tree)>> {
    prop::option::weighted(0.7, value.prop_map(move |v| (key.to_owned(), v)))
}

/// A `roles:` map: role keys (and typos of them) naming likely states and events, or noise.
fn roles_tree() -> impl Strategy<Value = Tree> {
    let key = prop::sample::select(&["live", "failed", "cancelled", "done", "fail", "retry", "liv"][..]);
    let value = prop::sample::select(&["A", "B", "C", "done", "go", ""][..]).prop_map(|v| Tree::Scalar(v.to_owned()));
    let value = prop_oneof![4 => value, 1 => tree()];
    prop::collection::vec((key.prop_map(str::to_owned), value), 0..8).prop_map(unique)
}

/// A `states:` map of spec-shaped states, nested a few levels, with random noise.
fn states_tree() -> impl Strategy<Value = Tree> {
    let name = prop::sample::select(&["A", "B", "C", "BUILDING", "S_1", "bad name", ""][..]).prop_map(str::to_owned);
    let leaf = Just(Tree::Map(Vec::new()));
    leaf.prop_recursive(3, 24, 4, move |inner| {
        let on =
            prop::collection::vec((word(), prop_oneof![word().prop_map(Tree::Scalar), tree()]), 0..3).prop_map(unique);
        let resume = prop_oneof![
            word().prop_map(Tree::Scalar),
            prop::collection::vec(
                (
                    prop::sample::select(&["rule", "requires", "check", "reason", "x"][..]).prop_map(str::to_owned),
                    tree()
                ),
                0..4
            )
            .prop_map(unique),
        ];
        let run = prop_oneof![
            prop::sample::select(&["wait", "build", "bild", ""][..]).prop_map(|r| Tree::Scalar(r.to_owned())),
            prop::collection::vec((prop::sample::select(&["command", "x"][..]).prop_map(str::to_owned), tree()), 0..3)
                .prop_map(unique),
            tree(),
        ];
        let body = (
            entry("initial", word().prop_map(Tree::Scalar)),
            entry("final", word().prop_map(Tree::Scalar)),
            entry("stuck_after", word().prop_map(Tree::Scalar)),
            entry("on", on),
            entry("run", run),
            entry("resume", resume),
            (entry("states", inner), prop::option::of((word(), tree()))),
        )
            .prop_map(|(a, b, c, d, e, f, (g, h))| unique([a, b, c, d, e, f, g, h].into_iter().flatten().collect()));
        prop::collection::vec((name.clone(), body), 1..4).prop_map(unique)
    })
}

fn yaml_tree() -> impl Strategy<Value = Yaml> {
    let top = (
        entry(
            "version",
            prop_oneof![2 => Just("1".to_owned()), 2 => Just("2".to_owned()), 1 => word()].prop_map(Tree::Scalar),
        ),
        entry("initial", prop_oneof![Just("A".to_owned()), word()].prop_map(Tree::Scalar)),
        entry("stuck_after", word().prop_map(Tree::Scalar)),
        entry("roles", roles_tree()),
        entry("states", states_tree()),
        prop::collection::vec((word(), tree()), 0..3),
    )
        .prop_map(|(a, b, c, d, e, noise)| [a, b, c, d, e].into_iter().flatten().chain(noise).collect::<Vec<_>>());
    (top, any::<bool>(), any::<bool>()).prop_map(|(entries, dedup, raw)| {
        let tree = if dedup { unique(entries) } else { Tree::Map(entries) };
        let mut out = String::new();
        emit(&tree, 0, raw, &mut out);
        Yaml(out.trim_start().to_owned())
    })
}

/// A random valid spec: a tree of phases chained in document order (on `next`, the `done`
/// role) towards the first final state (the `live` role), the first phase able to reach
/// every final state (on `end1`, the `fail` role, to the `failed` one) and to retry itself
/// (on `again`), each phase running an executor or a command, plus random extra
/// transitions (which keep it valid: they only add edges, on events of their own).
fn valid_spec() -> impl Strategy<Value = Yaml> {
    #[derive(Debug, Clone)]
    struct Shape(Vec<Shape>);
    let shape =
        Just(Shape(Vec::new())).prop_recursive(3, 12, 3, |inner| prop::collection::vec(inner, 1..4).prop_map(Shape));
    let extra = (any::<prop::sample::Index>(), 0..4usize, any::<prop::sample::Index>(), prop::option::of(0..3usize));
    (
        prop::collection::vec(shape, 1..4),
        2..4usize,
        prop::collection::vec(extra, 0..10),
        prop::collection::vec((0..3u8, any::<prop::sample::Index>()), 40),
        prop::sample::select(&["90s", "5m", "2h", "1h30m"][..]),
    )
        .prop_map(|(top, finals, extras, rules, stuck)| {
            // Name the states in document order and remember each one's children.
            struct Node {
                name: String,
                depth: usize,
                children: Vec<usize>,
            }
            fn walk(shape: &Shape, depth: usize, nodes: &mut Vec<Node>) -> usize {
                let i = nodes.len();
                nodes.push(Node { name: format!("S{i}"), depth, children: Vec::new() });
                let children: Vec<usize> = shape.0.iter().map(|c| walk(c, depth + 1, nodes)).collect();
                nodes[i].children = children;
                i
            }
            let mut nodes = Vec::new();
            for s in &top {
                walk(s, 0, &mut nodes);
            }
            let leaves: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].children.is_empty()).collect();
            let final_names: Vec<String> = (0..finals).map(|j| format!("F{j}")).collect();
            let all: Vec<String> = nodes.iter().map(|n| n.name.clone()).chain(final_names.iter().cloned()).collect();
            // Transitions per state, in the order they are written.
            let mut on: Vec<Vec<(String, String, Option<&str>)>> = vec![Vec::new(); nodes.len()];
            for (k, &leaf) in leaves.iter().enumerate() {
                let next = leaves.get(k + 1).map_or(final_names[0].clone(), |&n| nodes[n].name.clone());
                on[leaf].push(("next".into(), next, None));
            }
            for (j, f) in final_names.iter().enumerate() {
                on[leaves[0]].push((format!("end{j}"), f.clone(), None));
            }
            on[leaves[0]].push(("again".into(), nodes[leaves[0]].name.clone(), None));
            let guards = ["attempts_remaining", "has_previous_release", "is_image_deployment"];
            for (source, event, target, guard) in extras {
                let source = source.index(nodes.len());
                on[source].push((format!("e{event}"), all[target.index(all.len())].clone(), guard.map(|g| guards[g])));
            }
            let cancelled = &final_names[finals - 1];
            let mut out = format!(
                "version: 2\ninitial: {}\nstuck_after: {stuck}\nroles:\n  live: F0\n  failed: F1\n  cancelled: {cancelled}\n  done: next\n  fail: end1\n  retry: again\nstates:\n",
                nodes[0].name
            );
            for (i, n) in nodes.iter().enumerate() {
                let pad = "  ".repeat(2 * n.depth + 1);
                let _ = writeln!(out, "{pad}{}:", n.name);
                if n.children.is_empty() {
                    let (rule, run) = rules[i % rules.len()];
                    let executors = spec::Executor::ALL;
                    let run = match run.index(executors.len() + 1) {
                        k if k < executors.len() => executors[k].name().to_owned(),
                        _ => format!("{{ command: \"./step-{i}.sh --verbose\" }}"),
                    };
                    let _ = writeln!(out, "{pad}  run: {run}");
                    let rule = match rule {
                        0 => "resume: restart_phase".to_owned(),
                        1 => "resume: { rule: verify_then_continue, check: current_links_release, requires: [release_dir_present] }"
                            .to_owned(),
                        _ => "resume: { rule: fail, reason: cannot be resumed }".to_owned(),
                    };
                    let _ = writeln!(out, "{pad}  {rule}");
                } else {
                    let _ = writeln!(out, "{pad}  initial: {}", nodes[n.children[0]].name);
                }
                if !on[i].is_empty() {
                    let _ = writeln!(out, "{pad}  on:");
                    let mut events: Vec<&str> = Vec::new();
                    for (e, _, _) in &on[i] {
                        if !events.contains(&e.as_str()) {
                            events.push(e);
                        }
                    }
                    for e in events {
                        let these: Vec<_> = on[i].iter().filter(|t| t.0 == e).collect();
                        if let [(_, target, None)] = these.as_slice() {
                            let _ = writeln!(out, "{pad}    {e}: {target}");
                            continue;
                        }
                        let _ = writeln!(out, "{pad}    {e}:");
                        for (_, target, guard) in these {
                            match guard {
                                Some(g) => {
                                    let _ = writeln!(out, "{pad}      - {{ target: {target}, guard: {g} }}");
                                }
                                None => {
                                    let _ = writeln!(out, "{pad}      - {{ target: {target} }}");
                                }
                            }
                        }
                    }
                }
                if !n.children.is_empty() {
                    let _ = writeln!(out, "{pad}  states:");
                }
            }
            for f in &final_names {
                let _ = writeln!(out, "  {f}:\n    final: true");
            }
            Yaml(out)
        })
}

/// Checks one step of a walk: where it may lead, and that finals are never left.
#[track_caller]
fn check_step(spec: &Spec, state: StateId, event: &str, guard: bool) -> StateId {
    let result = machine::step(spec, state, event, &|g| guard ^ (g.name().len() % 2 == 0));
    if spec.is_final(state) {
        assert!(result.is_err(), "left final state `{}` on `{event}`", spec.state(state).name);
        return state;
    }
    let Ok(t) = result else { return state };
    assert!(t.target.index() < spec.states.len(), "undeclared state #{}", t.target.index());
    assert!(!matches!(spec.state(t.target).kind, StateKind::Compound { .. }), "rests in a compound state");
    assert_eq!(t.entries.last(), Some(&t.target));
    assert_eq!(t.exits.first(), Some(&state));
    for id in t.exits.iter().chain(&t.entries) {
        assert!(id.index() < spec.states.len());
    }
    t.target
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = spec::load_bytes("bytes.yaml", &bytes);
    }

    #[test]
    fn yaml_like_text_never_panics_the_loader(text in "[a-z_:{}\\[\\],&*!|>'\"#%@` \n\t-]{0,200}") {
        let _ = spec::load("text.yaml", &text);
    }

    #[test]
    fn arbitrary_yaml_trees_never_panic_the_loader(yaml in yaml_tree()) {
        if let Err(diagnostics) = spec::load("tree.yaml", &yaml.0) {
            // Rendering must not panic either, whatever the positions.
            let _ = diag::render("tree.yaml", &yaml.0, &diagnostics);
        }
    }

    #[test]
    fn random_valid_specs_validate_and_walks_stay_inside(
        yaml in valid_spec(),
        walk in prop::collection::vec((0..9usize, any::<bool>()), 0..40),
    ) {
        let spec = match spec::load("random.yaml", &yaml.0) {
            Ok((spec, _warnings)) => spec,
            Err(d) => panic!("{}", diag::render("random.yaml", &yaml.0, &d)),
        };
        for (_, id) in spec.roles.states() {
            prop_assert!(spec.is_final(id), "role state `{}` is not final", spec.name(id));
        }
        for (_, event) in spec.roles.events() {
            prop_assert!(spec.states.iter().any(|s| s.on.iter().any(|t| t.event == event)), "`{event}` is not handled");
        }
        for id in spec.ids().filter(|&i| spec.state(i).kind == StateKind::Atomic) {
            prop_assert!(spec.state(id).run.is_some(), "phase `{}` runs nothing", spec.name(id));
        }
        let events = ["next", "end0", "end1", "again", "e0", "e1", "e2", "e3", "nope"];
        let mut state = spec.leaf_of(spec.initial);
        for (e, guard) in walk {
            state = check_step(&spec, state, events[e], guard);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Graphs and the command line

/// Runs the built `trueup` with `args`, feeding nothing on stdin.
#[track_caller]
fn run(args: &[&str]) -> (i32, String, String) {
    let out = crate::support::Trueup::new(args).command().output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn fixtures(kind: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/validate").join(kind);
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| relative(&e.unwrap().path()))
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn cli_validate_default_spec_exits_0() {
    let (code, stdout, stderr) = run(&["validate"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "specs/deployment.yaml: valid (11 states)\n", ""));
}

#[test]
fn cli_validate_exit_codes_follow_the_fixtures() {
    for file in fixtures("err") {
        let (code, stdout, stderr) = run(&["validate", &file]);
        assert_eq!(code, 1, "{file}: {stderr}");
        assert!(stdout.is_empty() && stderr.starts_with("error: "), "{file}: {stderr}");
        assert!(stderr.contains(&format!("--> {file}:")), "{file}: {stderr}");
    }
    let ok = fixtures("ok");
    let mut args = vec!["validate"];
    args.extend(ok.iter().map(String::as_str));
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    args.push("fixtures/validate/err/0003_unknown_target.yaml");
    assert_eq!(run(&args).0, 1, "one bad file among good ones fails the run");
    assert_eq!(run(&["validate", "fixtures/validate/does-not-exist.yaml"]).0, 1);
}

#[test]
fn cli_validate_json() {
    let (code, stdout, stderr) = run(&[
        "validate",
        "--json",
        "fixtures/validate/ok/0004_shadowed_transition_warns.yaml",
        "fixtures/validate/err/0021_many_typos.yaml",
    ]);
    assert_eq!((code, stderr.as_str()), (1, ""));
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    settings().bind(|| insta::assert_json_snapshot!(value));
}

#[test]
fn cli_validate_prints_the_warnings_of_a_valid_spec() {
    let file = "fixtures/validate/ok/0006_version_1_warns.yaml";
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let (_, warnings) = spec::load(file, &source).unwrap();
    assert_eq!(warnings.len(), 1);
    let (code, stdout, stderr) = run(&["validate", file]);
    assert_eq!((code, stdout), (0, format!("{file}: valid (6 states, 1 warning)\n")));
    assert_eq!(stderr, format!("{}\n", diag::render(file, &source, &warnings)));
    let (code, stdout, stderr) = run(&["validate", "--json", file]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value, serde_json::json!([{ "file": file, "valid": true, "diagnostics": warnings }]));
}

#[test]
fn cli_graph_mermaid() {
    let (code, stdout, stderr) = run(&["graph", "--format", "mermaid"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(stdout.starts_with("stateDiagram-v2\n"));
    assert_eq!(stdout, graph::mermaid(&spec::default_spec()));
    // Blocks balance, and every state is declared before a transition at its level names it.
    assert_eq!(stdout.matches('{').count(), stdout.matches('}').count());
    settings().bind(|| insta::assert_snapshot!(stdout));
}

#[test]
fn cli_graph_dot() {
    let (code, stdout, stderr) = run(&["graph", "--format", "dot", "specs/deployment.yaml"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, graph::dot(&spec::default_spec()));
    settings().bind(|| insta::assert_snapshot!(stdout));
}

/// Finds Graphviz's `dot`, or says loudly why the test does not run.
fn graphviz() -> Option<&'static str> {
    let found = Command::new("dot").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if found {
        return Some("dot");
    }
    if std::env::var("TRUEUP_SKIP_GRAPHVIZ").as_deref() == Ok("1") {
        eprintln!("SKIPPED: Graphviz `dot` is not installed and TRUEUP_SKIP_GRAPHVIZ=1");
        return None;
    }
    panic!("Graphviz `dot` is not on PATH: install graphviz, or set TRUEUP_SKIP_GRAPHVIZ=1 to skip this test");
}

#[test]
fn graphviz_accepts_the_dot_of_every_valid_spec() {
    let Some(dot) = graphviz() else { return };
    let mut specs = vec![spec::default_spec()];
    for file in fixtures("ok") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
        specs.push(spec::load(&file, &std::fs::read_to_string(path).unwrap()).unwrap().0);
    }
    for spec in &specs {
        let text = graph::dot(spec);
        let mut child = Command::new(dot)
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dot rejected:\n{text}\n{stderr}");
        assert!(!stderr.contains("Error") && !stderr.contains("syntax"), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}

#[test]
fn cli_help_teaches_with_examples() {
    for cmd in ["validate", "graph"] {
        let (code, stdout, _) = run(&[cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(stdout.contains("Example"), "`trueup {cmd} --help` has no example:\n{stdout}");
    }
}

// ---------------------------------------------------------------------------------------
// The language documentation

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/README.md")).unwrap()
}

#[test]
fn readme_documents_every_vocabulary() {
    let text = readme();
    let names = (spec::Predicate::ALL.iter().map(|p| p.name()))
        .chain(spec::Guard::ALL.iter().map(|g| g.name()))
        .chain(spec::Executor::ALL.iter().map(|e| e.name()))
        .chain(spec::Role::ALL.iter().map(|r| r.name()));
    for name in names {
        assert!(text.contains(&format!("| `{name}` ")), "specs/README.md does not document `{name}`");
    }
}

#[test]
fn readme_examples_of_whole_specs_validate() {
    let text = readme();
    let mut count = 0;
    for block in text.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap();
        if yaml.starts_with("version: ") {
            count += 1;
            match spec::load("README.md", yaml) {
                // Only the example of a version-1 spec warns, about its version, exactly as
                // the README shows.
                Ok((_, warnings)) if yaml.starts_with("version: 1\n") => {
                    let shown = diag::render("old.yaml", yaml, &warnings);
                    assert_eq!(warnings.len(), 1, "{shown}");
                    assert!(text.contains(&format!("```text\n{shown}```")), "the README does not show:\n{shown}");
                }
                Ok((_, warnings)) => assert!(warnings.is_empty(), "{}", diag::render("README.md", yaml, &warnings)),
                Err(d) => panic!("{}", diag::render("README.md", yaml, &d)),
            }
        }
    }
    assert!(count >= 2);
}
