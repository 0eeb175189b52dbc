//! House rules that no compiler checks: every module documents itself, no debugging
//! leftovers, and no snapshot or fixture without the other.

use std::fs;
use std::path::{Path, PathBuf};

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_module_opens_with_its_doc() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "benches"] {
        if !top().join(dir).exists() {
            continue;
        }
        for file in files_under(&top().join(dir), ".rs") {
            let text = fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(file.strip_prefix(top()).unwrap().display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "these files do not open with a `//!` paragraph: {missing:?}");
}

#[test]
fn no_debugging_leftovers() {
    let banned = [concat!("db", "g!("), concat!("to", "do!("), concat!("unimpl", "emented!("), concat!("#[", "ignore")];
    let mut found = Vec::new();
    for dir in ["src", "tests"] {
        for file in files_under(&top().join(dir), ".rs") {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if banned.iter().any(|b| line.contains(b)) {
                    found.push(format!("{}:{}: {}", file.strip_prefix(top()).unwrap().display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "debugging leftovers:\n{}", found.join("\n"));
}

#[test]
fn snapshots_have_their_fixture_or_test_and_none_is_pending() {
    let mut problems = Vec::new();
    for file in files_under(&top().join("snapshots"), "") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".snap.new") || name.ends_with(".pending-snap") {
            problems.push(format!("unreviewed snapshot {name}"));
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let header =
            |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().trim_matches('"').to_owned());
        if let Some(input) = header("input_file:") {
            if !top().join(&input).exists() {
                problems.push(format!("{name}: its fixture {input} is gone"));
            }
            continue;
        }
        let source = header("source:").expect("insta writes a source header");
        let test = fs::read_to_string(top().join(&source)).unwrap_or_default();
        // insta names a snapshot `module__path__name` or `name@suffix`.
        let stem = name.trim_end_matches(".snap");
        let stem = stem.rsplit_once("__").map_or(stem, |(_, s)| s);
        let snapshot = stem.split_once('@').map_or(stem, |(_, s)| s);
        let function = stem.split_once('@').map_or(stem, |(f, _)| f);
        if !test.contains(snapshot) && !test.contains(function) {
            problems.push(format!("{name}: nothing in {source} names it"));
        }
    }
    assert!(problems.is_empty(), "orphan or pending snapshots:\n{}", problems.join("\n"));
}

#[test]
fn plan_fixtures_have_snapshots() {
    let snapshots: Vec<String> = files_under(&top().join("snapshots"), ".snap")
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("input_file:").map(|v| v.trim().to_owned())))
        .collect();
    let mut orphans = Vec::new();
    for fixture in files_under(&top().join("fixtures"), ".yaml") {
        let rel = fixture.strip_prefix(top()).unwrap().display().to_string();
        let is_snapshotted =
            ["fixtures/plan/", "fixtures/plan-err/", "fixtures/validate/err/"].iter().any(|d| rel.starts_with(d));
        if is_snapshotted && !snapshots.contains(&rel) {
            orphans.push(rel);
        }
    }
    assert!(orphans.is_empty(), "fixtures without a snapshot: {orphans:?}");
}

/// The engine spells no phase or event name of the default machine: the planner, the
/// store and the effects read the spec's roles. The names stand in one place, the roles
/// a version-1 spec gets (`mod v1` of `src/spec/load.rs`), and in tests.
#[test]
fn phase_names_are_spelled_only_in_the_version_1_roles() {
    // Event names (`done`, `fail`) are also ordinary words of other vocabularies (an
    // action's verb, a journal status), so the phases stand for both here.
    let names = ["\"ACTIVE\"", "\"FAILED\"", "\"CANCELLED\"", "\"QUEUED\"", "\"BUILDING\"", "\"HEALTH_CHECK\""];
    let mut found = Vec::new();
    for file in files_under(&top().join("src"), ".rs") {
        let text = fs::read_to_string(&file).unwrap();
        // Lines inside test modules and `mod v1 { ... }` are skipped, by brace depth.
        let (mut depth, mut skip_below) = (0i32, None::<i32>);
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let test_module = trimmed.starts_with("mod ") && trimmed.ends_with("tests {");
            if skip_below.is_none() && (test_module || trimmed.starts_with("mod v1 {")) {
                skip_below = Some(depth);
            }
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            let skipped = skip_below.is_some();
            if skip_below.is_some_and(|d| depth <= d) {
                skip_below = None;
            }
            if skipped || trimmed.starts_with("//") {
                continue;
            }
            if let Some(name) = names.iter().find(|n| line.contains(*n)) {
                found.push(format!("{}:{}: {name}", file.strip_prefix(top()).unwrap().display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "phase or event names spelled outside the version-1 roles:\n{}", found.join("\n"));
}
