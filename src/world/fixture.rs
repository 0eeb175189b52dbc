//! Fixture worlds: one YAML file, one case.
//!
//! A fixture describes a [`World`] and the instant to plan at, so that `trueup simulate`
//! and the snapshot tests can show the plan for a case without any real machine. The
//! format is documented field by field in `fixtures/README.md`. A malformed fixture
//! gets [`Diagnostic`]s with line and column, rendered like spec diagnostics.
//!
//! Loading is pure: it reads a `&str`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Pos};
use crate::model::{Container, Deployment, Files, Node, Project, Route, World};
use crate::time::Timestamp;

/// A loaded fixture: the case's description, its clock and its world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// What the case shows, one line.
    pub description: String,
    /// The instant to plan at.
    pub now: Timestamp,
    /// The world.
    pub world: World,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    description: String,
    now: Timestamp,
    root: PathBuf,
    #[serde(default)]
    projects: Vec<Project>,
    #[serde(default)]
    deployments: Vec<Deployment>,
    #[serde(default)]
    files: IndexMap<PathBuf, FileEntry>,
    #[serde(default = "engine_present")]
    container_engine: bool,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    routes: BTreeMap<String, Route>,
    #[serde(default = "engine_present", skip_serializing_if = "is_true")]
    routes_folder: bool,
}

fn engine_present() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, deny_unknown_fields)]
enum FileEntry {
    Kind(FileKind),
    Link { symlink: PathBuf },
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum FileKind {
    File,
    Dir,
}

/// Reads a fixture.
///
/// `file` is the name shown in diagnostics; `source` is the YAML text.
///
/// # Errors
///
/// The problems found, each with its position: YAML syntax, unknown or missing keys,
/// values of the wrong kind, bad timestamps, relative paths.
pub fn load(file: &str, source: &str) -> Result<Fixture, Vec<Diagnostic>> {
    let _ = file;
    let parsed: FixtureFile = serde_saphyr::from_str(source).map_err(|e| vec![yaml_diagnostic(&e)])?;
    let mut problems = Vec::new();
    if !parsed.root.is_absolute() {
        problems.push(Diagnostic::error(find_key(source, "root"), "`root` must be an absolute path"));
    }
    let mut files = Files::new();
    for (path, entry) in parsed.files {
        if !path.is_absolute() {
            problems.push(Diagnostic::error(
                find_key(source, &path.display().to_string()),
                format!("file path `{}` must be absolute", path.display()),
            ));
            continue;
        }
        let node = match entry {
            FileEntry::Kind(FileKind::File) => Node::File,
            FileEntry::Kind(FileKind::Dir) => Node::Dir,
            FileEntry::Link { symlink } => Node::Symlink(symlink),
        };
        add_parents(&mut files, &path);
        files.insert(path, node);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut projects = parsed.projects;
    projects.sort_by(|a, b| a.id.cmp(&b.id));
    let mut deployments = parsed.deployments;
    deployments.sort_by(|a, b| (&a.project, &a.id).cmp(&(&b.project, &b.id)));
    let mut containers = parsed.containers;
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    let (containers, images) = if parsed.container_engine {
        let mut images = parsed.images;
        images.sort();
        images.dedup();
        (Some(containers), Some(images))
    } else {
        (None, None)
    };
    let world = World {
        root: parsed.root,
        projects,
        deployments,
        files,
        containers,
        images,
        routes: parsed.routes,
        routes_folder_missing: !parsed.routes_folder,
        unreadable: BTreeMap::new(),
    };
    Ok(Fixture { description: parsed.description, now: parsed.now, world })
}

/// Writes a fixture that [`load`] reads back to the same description, instant and world
/// (given a world whose listed paths have their parent folders listed too, as
/// [`close_parents`] makes them). Property tests print their inputs this way, so a failing
/// case can be pasted into `fixtures/plan/` as it is.
pub fn to_yaml(fixture: &Fixture) -> String {
    let w = &fixture.world;
    let files = w
        .files
        .iter()
        .map(|(path, node)| {
            let entry = match node {
                Node::Dir => FileEntry::Kind(FileKind::Dir),
                Node::File => FileEntry::Kind(FileKind::File),
                Node::Symlink(target) => FileEntry::Link { symlink: target.clone() },
            };
            (path.clone(), entry)
        })
        .collect();
    let out = FixtureFile {
        description: fixture.description.clone(),
        now: fixture.now,
        root: w.root.clone(),
        projects: w.projects.clone(),
        deployments: w.deployments.clone(),
        files,
        container_engine: w.containers.is_some(),
        images: w.images.clone().unwrap_or_default(),
        containers: w.containers.clone().unwrap_or_default(),
        routes: w.routes.clone(),
        routes_folder: !w.routes_folder_missing,
    };
    serde_saphyr::to_string(&out).expect("a fixture is plain data and always serializes")
}

/// Adds every proper ancestor of every listed path as a folder, unless listed otherwise.
pub fn close_parents(files: &mut Files) {
    let paths: Vec<PathBuf> = files.keys().cloned().collect();
    for path in paths {
        add_parents(files, &path);
    }
}

/// Every proper ancestor of a declared path exists as a folder, unless declared otherwise.
fn add_parents(files: &mut Files, path: &Path) {
    for parent in path.ancestors().skip(1) {
        if !files.contains_key(parent) {
            files.insert(parent.to_path_buf(), Node::Dir);
        }
    }
}

/// A serde-saphyr error as a diagnostic at its location.
pub(crate) fn yaml_diagnostic(err: &serde_saphyr::Error) -> Diagnostic {
    let pos = err
        .location()
        .map(|l| Pos { line: u32::try_from(l.line()).unwrap_or(0), column: u32::try_from(l.column()).unwrap_or(0) })
        .unwrap_or_default();
    if let serde_saphyr::Error::Budget { breach, .. } = err.without_snippet() {
        return Diagnostic::error(pos, budget_message(breach));
    }
    let text = err.without_snippet().to_string();
    // serde-saphyr appends the position to its message; the renderer shows it already.
    let message = text.split(" at line ").next().unwrap_or(&text).trim();
    // serde-saphyr's advice to its own callers is not for the person reading this.
    let message = message.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable").to_owned();
    let diagnostic = Diagnostic::error(pos, message.clone());
    // serde names the expected keys or variants; point at the nearest one.
    let Some((found, expected)) = unknown_name(&message) else { return diagnostic };
    diagnostic.suggest(found, expected.split(", ").map(|e| e.trim_matches('`')))
}

/// What a YAML reader's budget refused, for a person: serde-saphyr's own text is the
/// `Debug` of its breach (`budget breached: Nodes { nodes: 250001 }`).
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let what = match breach {
        B::Nodes { nodes } => format!("more than {} values", nodes - 1),
        B::Events { events } => format!("more than {} YAML events", events - 1),
        B::Aliases { aliases } => format!("more than {} aliases (`*name`)", aliases - 1),
        B::Anchors { anchors } => format!("more than {} anchors (`&name`)", anchors - 1),
        B::Depth { depth } => format!("nesting deeper than {} levels", depth - 1),
        B::Documents { documents } => format!("more than {} YAML documents", documents - 1),
        B::ScalarBytes { .. } => "too much text in its values".to_owned(),
        B::MergeKeys { merge_keys } => format!("more than {} merge keys (`<<`)", merge_keys - 1),
        B::AliasAnchorRatio { .. } => "far more aliases than anchors (an alias bomb?)".to_owned(),
        _ => "a size or shape the YAML reader refuses".to_owned(),
    };
    format!("the file is too large or too deep to read: {what}")
}

/// `(found, expected list)` from serde's "unknown field `x`, expected one of a, b".
fn unknown_name(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (found, rest) = rest.split_once('`')?;
    let expected = rest.strip_prefix(", expected one of ").or_else(|| rest.strip_prefix(", expected "))?;
    Some((found, expected))
}

/// The position of the first `key:` in the source, for checks made after parsing.
fn find_key(source: &str, key: &str) -> Pos {
    for (i, line) in source.lines().enumerate() {
        if let Some(col) = line.find(&format!("{key}:")) {
            return Pos { line: i as u32 + 1, column: col as u32 + 1 };
        }
    }
    Pos::default()
}
