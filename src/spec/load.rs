//! Reading a spec file: YAML with positions, validation, compilation into the arena.
//!
//! [`load`] runs in three passes, so that one run reports every problem:
//! 1. [`super::yaml`] reads the text into nodes with positions (a syntax error stops here);
//! 2. the schema pass walks the nodes into [`RawState`]s, reporting unknown keys, wrong
//!    types, bad durations and counts, unknown guards, predicates and executors,
//!    malformed resume rules and `run`s, and a `roles:` block with missing or unknown
//!    keys, and going on after each;
//! 3. the structure pass resolves names (duplicates, targets, `initial`s, roles), then,
//!    when the names are sound, checks the graph: reachability from the initial state and
//!    a path to a final state from every reachable phase.
//!
//! Only a spec with no error is compiled into a [`Spec`].
//!
//! Version 2 declares what the engine relies on (`roles:`, and a `run:` per phase).
//! Version 1 cannot, so it gets the default machine's names from [`v1`], with a warning
//! that says how to upgrade; it is an error when it lacks one of the default final states.

use indexmap::IndexMap;

use super::yaml::{self, Key, Node, NodeKind};
use super::{
    Executor, Guard, Predicate, Resume, ResumeRule, Role, Roles, Run, Spec, State, StateId, StateKind, TransitionDef,
};
use crate::diag::{self, Diagnostic, Pos};
use crate::time::Duration;

/// The keys of the top level of a spec file.
const TOP_KEYS: &[&str] = &["version", "description", "initial", "roles", "states", "stuck_after", "max_attempts"];
/// The keys of a state.
const STATE_KEYS: &[&str] =
    &["description", "initial", "states", "on", "final", "stuck_after", "max_attempts", "run", "resume"];
/// The keys of a `run` map.
const RUN_KEYS: &[&str] = &["command"];
/// The keys of one entry in a list of transitions.
const TRANSITION_KEYS: &[&str] = &["target", "guard"];
/// The keys of a `resume` map.
const RESUME_KEYS: &[&str] = &["rule", "requires", "check", "reason", "description"];
/// The names of the resume rules.
const RULES: &[&str] = &["restart_phase", "verify_then_continue", "fail"];

/// The spec version this loader writes about; it reads version 1 too.
const VERSION: u32 = 2;

/// What a version-1 spec, which cannot declare roles, relies on: the default machine's
/// names. This is the one place the engine spells phase and event names.
mod v1 {
    use std::fmt::Write as _;

    use super::{Executor, Role};

    /// The version these defaults are for.
    pub(super) const VERSION: u32 = 1;
    /// The initial phase, for examples in messages.
    pub(super) const INITIAL: &str = "QUEUED";
    /// The live, failed and cancelled phases.
    pub(super) const LIVE: &str = "ACTIVE";
    pub(super) const FAILED: &str = "FAILED";
    pub(super) const CANCELLED: &str = "CANCELLED";
    /// The events that finish a phase, fail a deployment and retry a phase.
    pub(super) const DONE: &str = "done";
    pub(super) const FAIL: &str = "fail";
    pub(super) const RETRY: &str = "retry";
    /// What each phase of the default machine runs.
    pub(super) const RUN: &[(&str, Executor)] = &[
        ("QUEUED", Executor::Wait),
        ("PULLING_SOURCE", Executor::PullSource),
        ("BUILDING", Executor::Build),
        ("COPYING_FILES", Executor::CopyFiles),
        ("CREATING_SYMLINKS", Executor::SwitchLinks),
        ("UPDATING_ROUTES", Executor::WriteRoute),
        ("HEALTH_CHECK", Executor::HealthCheck),
    ];

    /// The default machine's name for a role.
    pub(super) fn name(role: Role) -> &'static str {
        match role {
            Role::Live => LIVE,
            Role::Failed => FAILED,
            Role::Cancelled => CANCELLED,
            Role::Done => DONE,
            Role::Fail => FAIL,
            Role::Retry => RETRY,
        }
    }

    /// What the default machine's phase of this name runs.
    pub(super) fn run(phase: &str) -> Option<Executor> {
        RUN.iter().find(|(name, _)| *name == phase).map(|(_, e)| *e)
    }

    /// The default machine's `roles:` block, as a spec writes it.
    pub(super) fn roles_block() -> String {
        let mut out = String::from("roles:");
        for role in Role::ALL {
            let _ = write!(out, "\n  {}: {}", role.name(), name(*role));
        }
        out
    }
}

/// Loads, validates and compiles one spec.
///
/// `file` is the name shown in diagnostics; `source` is the YAML text. Diagnostics carry
/// positions only, so `file` is not needed to find them: pass the same name to
/// [`crate::diag::render`] to show them.
///
/// # Errors
///
/// Every error and warning found, each with its position, in the order of the file. On
/// success, the warnings.
pub fn load(file: &str, source: &str) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let _ = file;
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut cx = Cx::default();
    let top = cx.top(&root);
    let resolved = top.as_ref().and_then(|top| cx.structure(top));
    // Diagnostics are found pass by pass; people read them top to bottom.
    let mut diags = cx.diags;
    diags.sort_by_key(|d| d.pos);
    match (top, resolved) {
        (Some(top), Some(resolved)) if !diags.iter().any(Diagnostic::is_error) => match compile(&top, &resolved) {
            Ok(spec) => Ok((spec, diags)),
            Err(d) => Err(vec![d]),
        },
        _ => Err(diags),
    }
}

/// Like [`load`], for raw bytes: text that is not UTF-8 is one diagnostic pointing at the
/// first bad byte.
///
/// # Errors
///
/// As [`load`].
pub fn load_bytes(file: &str, bytes: &[u8]) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    match std::str::from_utf8(bytes) {
        Ok(source) => load(file, source),
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let pos = Pos {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
            };
            Err(vec![Diagnostic::error(pos, "the file is not valid UTF-8")])
        }
    }
}

/// A name and where it is written.
type Named = (String, Pos);

/// A transition's guard as written: `None` when absent, `Some(None)` when its name is
/// unknown (already reported).
type RawGuard = Option<Option<Guard>>;

/// A state as written, before names are resolved.
#[derive(Debug, Default)]
struct RawState {
    name: String,
    name_pos: Pos,
    parent: Option<usize>,
    description: Option<String>,
    initial: Option<(String, Pos)>,
    /// Present when the state has a `states:` key, even an empty one.
    children: Option<Vec<usize>>,
    is_final: bool,
    on: Vec<RawTransition>,
    stuck_after: Option<Duration>,
    max_attempts: Option<u32>,
    resume: Option<(Resume, Pos)>,
    /// A `resume` key is present, valid or not (so a bad one is not also "missing").
    resume_written: bool,
    /// A `stuck_after` key is present, valid or not.
    stuck_written: bool,
    /// What the phase runs, when written and valid.
    run: Option<Run>,
    /// Where a `run` value is written, valid or not (so a bad one is not also "missing").
    run_pos: Option<Pos>,
}

#[derive(Debug)]
struct RawTransition {
    event: String,
    event_pos: Pos,
    target: String,
    target_pos: Pos,
    guard: RawGuard,
}

/// The top level as written.
#[derive(Debug, Default)]
struct Top {
    /// The version, when it is one this loader reads.
    version: Option<u32>,
    /// Where the version's value is written (or the top level, without one).
    version_pos: Pos,
    description: Option<String>,
    /// The `roles:` block, when written in a spec that may have one.
    roles: Option<RawRoles>,
    initial: Option<(String, Pos)>,
    states: Vec<RawState>,
    top_level: Vec<usize>,
    stuck_after: Option<Duration>,
    max_attempts: Option<u32>,
    stuck_written: bool,
}

/// The `roles:` block as written.
#[derive(Debug, Default)]
struct RawRoles {
    /// The names given, each with where it is written, in the order of the file.
    given: Vec<(Role, Named)>,
}

/// Names resolved to indices into [`Top::states`].
struct Resolved {
    initial: usize,
    /// Per state: the index of its `initial` child.
    initials: Vec<Option<usize>>,
    /// Per state, per transition: the target index.
    targets: Vec<Vec<usize>>,
    roles: ResolvedRoles,
}

/// The roles, states as indices into [`Top::states`].
struct ResolvedRoles {
    live: usize,
    failed: usize,
    cancelled: usize,
    done: String,
    fail: String,
    retry: String,
}

#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
    /// A transition was dropped for an error: the graph checks would then report
    /// consequences of that error, so they are skipped.
    dropped: bool,
    /// The spec's version, once read (states are read after it, whatever the order of
    /// the file): `run` depends on it.
    version: Option<u32>,
    /// Every event some `on:` handles, in the order of the file, for the event roles.
    events: Vec<String>,
    /// A version-1 spec writes `roles:` or `run:`: the errors say how to upgrade, so
    /// the upgrade warning would only repeat them.
    upgrading: bool,
}

fn plural_keys(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// `` `A` ``, `` `A` and `B` ``, `` `A`, `B` and `C` ``.
fn and_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("`{one}`"),
        [rest @ .., last] => format!("{} and `{last}`", plural_keys(rest)),
    }
}

/// A vocabulary doc sentence as a phrase inside a message: `The event that ...` becomes
/// `the event that ...`.
fn phrase(doc: &str) -> String {
    let doc = doc.trim_end_matches('.');
    let mut chars = doc.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

fn executors() -> Vec<&'static str> {
    Executor::ALL.iter().map(|e| e.name()).collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_event(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Cx {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(pos, message));
        self.diags.last_mut().expect("a diagnostic was just pushed")
    }

    fn help(&mut self, help: impl Into<String>) {
        if let Some(last) = self.diags.last_mut() {
            last.help = Some(help.into());
        }
    }

    fn unknown_key(&mut self, key: &Key, context: &str, allowed: &[&str]) {
        let d = Diagnostic::error(key.pos, format!("unknown key `{}` in {context}", key.text));
        let d = match crate::diag::did_you_mean(&key.text, allowed.iter().copied()) {
            Some(best) => d.with_help(format!("did you mean `{best}`?")),
            None => d.with_help(format!("expected one of {}", plural_keys(allowed))),
        };
        self.diags.push(d);
    }

    /// The entries of a map node, or an error naming what was expected.
    fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match &node.kind {
            NodeKind::Map(entries) => Some(entries),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.error(node.pos, format!("{what} must be a map, not {}", node.what()));
                None
            }
        }
    }

    /// The text of a scalar node, or an error.
    fn text<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match &node.kind {
            NodeKind::Scalar { text, .. } if !node.is_null() => Some(text),
            _ => {
                self.error(node.pos, format!("{what} must be a string, not {}", node.what()));
                None
            }
        }
    }

    fn state_name(&mut self, node: &Node, what: &str) -> Option<(String, Pos)> {
        let text = self.text(node, what)?;
        if !valid_name(text) {
            self.error(node.pos, format!("{what} `{text}` is not a valid state name")).help =
                Some("state names are letters, digits and `_`".into());
            return None;
        }
        Some((text.to_owned(), node.pos))
    }

    fn duration(&mut self, node: &Node) -> Option<Duration> {
        let text = self.text(node, "`stuck_after`")?;
        match text.parse::<Duration>() {
            Ok(d) if d.secs() == 0 => {
                self.error(node.pos, "`stuck_after` must be longer than `0s`");
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                self.error(node.pos, format!("invalid duration `{text}`"));
                self.help("write durations like `90s`, `5m`, `2h` or `1h30m`");
                None
            }
        }
    }

    fn max_attempts(&mut self, node: &Node) -> Option<u32> {
        let text = self.text(node, "`max_attempts`")?;
        match text.parse::<u32>() {
            Ok(0) => {
                self.error(node.pos, "`max_attempts` must be at least 1");
                self.help("a deployment always gets its first attempt; `1` means no retry");
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.error(node.pos, format!("`max_attempts` must be a whole number, not `{text}`"));
                None
            }
        }
    }

    fn description(&mut self, node: &Node) -> Option<String> {
        self.text(node, "`description`").map(str::to_owned)
    }

    fn predicate(&mut self, node: &Node) -> Option<Predicate> {
        self.word(node, "predicate", Predicate::ALL, Predicate::name)
    }

    fn guard(&mut self, node: &Node) -> Option<Guard> {
        self.word(node, "guard", Guard::ALL, Guard::name)
    }

    /// A name from a closed vocabulary (`all`, spelled by `name`): its member, or an error
    /// with the nearest valid name, or the whole list when none is close.
    fn word<T: Copy>(&mut self, node: &Node, what: &str, all: &[T], name: fn(T) -> &'static str) -> Option<T> {
        let text = self.text(node, &format!("a {what}"))?;
        let found = all.iter().copied().find(|v| name(*v) == text);
        if found.is_none() {
            let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            let d =
                Diagnostic::error(node.pos, format!("unknown {what} `{text}`")).suggest(text, names.iter().copied());
            let d = if d.help.is_none() { d.with_help(format!("{what}s are {}", plural_keys(&names))) } else { d };
            self.diags.push(d);
        }
        found
    }

    /// Pass 2, the top level.
    fn top(&mut self, root: &Node) -> Option<Top> {
        let NodeKind::Map(entries) = &root.kind else {
            self.error(
                root.pos,
                format!("a spec must be a map with `version`, `initial` and `states`, not {}", root.what()),
            );
            return None;
        };
        let mut top = Top { version_pos: root.pos, ..Top::default() };
        let (mut version, mut states, mut roles) = (None, None, None);
        for (key, value) in entries {
            match key.text.as_str() {
                "version" => version = Some(value),
                "description" => top.description = self.description(value),
                "initial" => top.initial = self.state_name(value, "`initial`"),
                "roles" => roles = Some((key, value)),
                "states" => states = Some(value),
                "stuck_after" => {
                    top.stuck_written = true;
                    top.stuck_after = self.duration(value);
                }
                "max_attempts" => top.max_attempts = self.max_attempts(value),
                _ => self.unknown_key(key, "the spec", TOP_KEYS),
            }
        }
        match version {
            None => {
                self.error(root.pos, "missing `version`");
                self.help(format!("start the file with `version: {VERSION}`"));
            }
            Some(v) => {
                top.version_pos = v.pos;
                match v.as_str() {
                    Some("1") => top.version = Some(v1::VERSION),
                    Some("2") => top.version = Some(VERSION),
                    Some(other) => {
                        self.error(v.pos, format!("unsupported spec version `{other}`"));
                        self.help(format!("this trueup reads `version: {VERSION}`, and the older `version: 1`"));
                    }
                    None => {
                        self.error(v.pos, format!("`version` must be `{VERSION}`, not {}", v.what()));
                    }
                }
            }
        }
        self.version = top.version;
        match (roles, top.version) {
            (Some((key, _)), Some(v1::VERSION)) => self.needs_version_2(key),
            (Some((key, value)), _) => top.roles = self.roles(key, value),
            (None, Some(VERSION)) => {
                self.error(root.pos, "missing `roles`");
                self.help(format!(
                    "a version-{VERSION} spec names the states and events the engine relies on; add, with your own names:\n{}",
                    v1::roles_block()
                ));
            }
            (None, _) => {}
        }
        if top.initial.is_none() && !entries.iter().any(|(k, _)| k.text == "initial") {
            self.error(root.pos, "missing top-level `initial`");
            self.help(format!("name the state a new deployment starts in, e.g. `initial: {}`", v1::INITIAL));
        }
        match states {
            None => {
                self.error(root.pos, "missing `states`");
            }
            Some(node) => {
                let children = self.states(node, None, &mut top.states);
                if children.as_ref().is_some_and(Vec::is_empty) {
                    self.error(node.pos, "the spec has no states");
                }
                top.top_level = children.unwrap_or_default();
            }
        }
        Some(top)
    }

    /// `roles:` and `run:` are version 2's: in a version-1 spec, an error at the key.
    fn needs_version_2(&mut self, key: &Key) {
        self.upgrading = true;
        self.error(key.pos, format!("`{}` needs `version: {VERSION}`", key.text));
        self.help(format!(
            "set `version: {VERSION}`; a version-{VERSION} spec declares its `roles:` and gives every phase a `run:`"
        ));
    }

    /// The `roles:` block: a name for every role. A missing role is reported at `roles`,
    /// unless an unknown key is a typo of it (which is reported instead).
    fn roles(&mut self, key: &Key, node: &Node) -> Option<RawRoles> {
        let entries = self.map(node, "`roles`")?;
        let keys: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
        let mut out = RawRoles::default();
        let mut seen: Vec<Role> = Vec::new();
        for (k, value) in entries {
            let Some(role) = Role::from_name(&k.text) else {
                seen.extend(diag::did_you_mean(&k.text, keys.iter().copied()).and_then(Role::from_name));
                self.unknown_key(k, "`roles`", &keys);
                continue;
            };
            seen.push(role);
            let what = format!("`{role}`");
            let name = if role.is_state() {
                self.state_name(value, &what)
            } else {
                self.text(value, &what).map(|t| (t.to_owned(), value.pos))
            };
            out.given.extend(name.map(|n| (role, n)));
        }
        for &role in Role::ALL {
            if !seen.contains(&role) {
                self.error(key.pos, format!("missing role `{role}`"));
                self.help(format!("`{role}` names {}, e.g. `{role}: {}`", phrase(role.doc()), v1::name(role)));
            }
        }
        Some(out)
    }

    /// A phase's `run`: an executor's name, or a map with a user's `command`.
    fn run(&mut self, node: &Node) -> Option<Run> {
        let entries = match &node.kind {
            NodeKind::Scalar { .. } if !node.is_null() => {
                return self.word(node, "executor", Executor::ALL, Executor::name).map(Run::Executor);
            }
            NodeKind::Map(entries) => entries,
            _ => {
                self.error(node.pos, format!("`run` must be an executor or a map with `command`, not {}", node.what()));
                self.help(format!("executors are {}", plural_keys(&executors())));
                return None;
            }
        };
        let mut command = None;
        for (key, value) in entries {
            match key.text.as_str() {
                "command" => command = Some(value),
                _ => self.unknown_key(key, "`run`", RUN_KEYS),
            }
        }
        let Some(command) = command else {
            self.error(node.pos, "`run` needs a `command`");
            self.help("write e.g. `run: { command: ./scan.sh }`, or name an executor: `run: build`");
            return None;
        };
        if command.is_null() || command.as_str().is_some_and(|t| t.trim().is_empty()) {
            self.error(command.pos, "the `command` to run is empty");
            self.help("write the command a worker runs with `sh -c` in the work folder, e.g. `command: ./scan.sh`");
            return None;
        }
        self.text(command, "`command`").map(|t| Run::Command(t.to_owned()))
    }

    /// Reads a `states:` map into `out`, parents before children; returns the indices of
    /// its direct children.
    fn states(&mut self, node: &Node, parent: Option<usize>, out: &mut Vec<RawState>) -> Option<Vec<usize>> {
        let entries = self.map(node, "`states`")?;
        let mut children = Vec::new();
        for (key, body) in entries {
            if !valid_name(&key.text) {
                self.error(key.pos, format!("`{}` is not a valid state name", key.text));
                self.help("state names are letters, digits and `_`");
                continue;
            }
            let index = out.len();
            children.push(index);
            out.push(RawState { name: key.text.clone(), name_pos: key.pos, parent, ..RawState::default() });
            self.state(body, index, out);
        }
        Some(children)
    }

    fn state(&mut self, node: &Node, index: usize, out: &mut Vec<RawState>) {
        let Some(entries) = self.map(node, "a state") else { return };
        let mut s = RawState::default();
        let mut final_node = None;
        for (key, value) in entries {
            match key.text.as_str() {
                "description" => s.description = self.description(value),
                "initial" => s.initial = self.state_name(value, "`initial`"),
                "states" => {
                    s.children = Some(self.states(value, Some(index), out).unwrap_or_default());
                    if s.children.as_ref().is_some_and(Vec::is_empty) {
                        self.error(value.pos, format!("`states` of `{}` is empty", out[index].name));
                        self.help("remove `states` to make it an atomic state");
                    }
                }
                "on" => s.on = self.transitions(value),
                "final" => {
                    final_node = Some(value);
                    match value.as_str() {
                        Some("true") => s.is_final = true,
                        Some("false") => {}
                        _ => {
                            self.error(value.pos, "`final` must be `true` or `false`");
                        }
                    }
                }
                "stuck_after" => {
                    s.stuck_written = true;
                    s.stuck_after = self.duration(value);
                }
                "max_attempts" => s.max_attempts = self.max_attempts(value),
                "resume" => {
                    s.resume_written = true;
                    s.resume = self.resume(value).map(|r| (r, value.pos));
                }
                "run" if self.version == Some(v1::VERSION) => self.needs_version_2(key),
                "run" => {
                    s.run_pos = Some(value.pos);
                    s.run = self.run(value);
                }
                _ => self.unknown_key(key, "a state", STATE_KEYS),
            }
        }
        let name = out[index].name.clone();
        if s.is_final {
            let at = final_node.map_or(out[index].name_pos, |n| n.pos);
            if s.children.is_some() {
                self.error(at, format!("final state `{name}` cannot have child states"));
            }
            if let Some((_, pos)) = &s.resume {
                self.error(*pos, format!("final state `{name}` cannot have a resume rule"));
                self.help("a final state is never left, so there is nothing to resume");
            }
            if let Some(pos) = s.run_pos {
                self.error(pos, format!("final state `{name}` cannot have a `run`"));
                self.help("a final state is never left, so nothing runs in it");
            }
            for t in &s.on {
                self.error(t.event_pos, format!("final state `{name}` handles event `{}`", t.event));
                self.help("a final state is never left; remove its `on`");
            }
            s.on.clear();
        }
        let slot = &mut out[index];
        *slot = RawState { name: std::mem::take(&mut slot.name), name_pos: slot.name_pos, parent: slot.parent, ..s };
    }

    fn transitions(&mut self, node: &Node) -> Vec<RawTransition> {
        let Some(entries) = self.map(node, "`on`") else {
            self.dropped = true;
            return Vec::new();
        };
        let mut out = Vec::new();
        for (event, value) in entries {
            if !valid_event(&event.text) {
                self.dropped = true;
                self.error(event.pos, format!("`{}` is not a valid event name", event.text));
                self.help("event names are letters, digits, `_`, `-` and `.`");
                continue;
            }
            if !self.events.contains(&event.text) {
                self.events.push(event.text.clone());
            }
            let mut push = |target: (String, Pos), guard| {
                out.push(RawTransition {
                    event: event.text.clone(),
                    event_pos: event.pos,
                    target: target.0,
                    target_pos: target.1,
                    guard,
                });
            };
            match &value.kind {
                NodeKind::Scalar { .. } => match self.state_name(value, "a target") {
                    Some(target) => push(target, None),
                    None => self.dropped = true,
                },
                NodeKind::Seq(items) => {
                    if items.is_empty() {
                        self.error(value.pos, format!("event `{}` has an empty list of transitions", event.text));
                    }
                    for item in items {
                        match self.guarded(item) {
                            Some((target, guard)) => push(target, guard),
                            None => self.dropped = true,
                        }
                    }
                }
                NodeKind::Map(_) => match self.guarded(value) {
                    Some((target, guard)) => push(target, guard),
                    None => self.dropped = true,
                },
            }
        }
        out
    }

    /// One `{ target, guard }` entry.
    fn guarded(&mut self, node: &Node) -> Option<(Named, RawGuard)> {
        let NodeKind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!("a transition in a list must be a map `{{ target, guard }}`, not {}", node.what()),
            );
            return None;
        };
        let (mut target, mut guard, mut target_seen) = (None, None, false);
        for (key, value) in entries {
            match key.text.as_str() {
                "target" => {
                    target_seen = true;
                    target = self.state_name(value, "a target");
                }
                "guard" => guard = Some(self.guard(value)),
                _ => self.unknown_key(key, "a transition", TRANSITION_KEYS),
            }
        }
        if !target_seen {
            self.error(node.pos, "a transition needs a `target`");
        }
        Some((target?, guard))
    }

    fn resume(&mut self, node: &Node) -> Option<Resume> {
        let (mut rule, mut requires, mut check, mut reason, mut description) = (None, Vec::new(), None, None, None);
        let mut ok = true;
        match &node.kind {
            NodeKind::Scalar { .. } => rule = Some(node),
            NodeKind::Map(entries) => {
                for (key, value) in entries {
                    match key.text.as_str() {
                        "rule" => rule = Some(value),
                        "requires" => {
                            let items = match &value.kind {
                                NodeKind::Seq(items) => items.as_slice(),
                                _ => std::slice::from_ref(value),
                            };
                            for item in items {
                                match self.predicate(item) {
                                    Some(p) => requires.push(p),
                                    None => ok = false,
                                }
                            }
                        }
                        "check" => check = Some((self.predicate(value), value.pos)),
                        "reason" => reason = Some((self.text(value, "`reason`").map(str::to_owned), value.pos)),
                        "description" => description = self.description(value),
                        _ => self.unknown_key(key, "`resume`", RESUME_KEYS),
                    }
                }
            }
            NodeKind::Seq(_) => {
                self.error(node.pos, "`resume` must be a rule name or a map with `rule`, not a list");
                return None;
            }
        }
        let Some(rule_node) = rule else {
            self.error(node.pos, "`resume` needs a `rule`");
            self.help(format!("rules are {}", plural_keys(RULES)));
            return None;
        };
        let name = self.text(rule_node, "a resume rule")?;
        let rule = match name {
            "restart_phase" => Some(ResumeRule::RestartPhase),
            "verify_then_continue" => match check {
                Some((Some(check), _)) => Some(ResumeRule::VerifyThenContinue { check }),
                Some((None, _)) => None,
                None => {
                    self.error(rule_node.pos, "`verify_then_continue` needs a `check` predicate");
                    self.help("add e.g. `check: current_links_release`");
                    None
                }
            },
            "fail" => match &reason {
                Some((Some(reason), _)) => Some(ResumeRule::Fail { reason: reason.clone() }),
                Some((None, _)) => None,
                None => {
                    self.error(rule_node.pos, "the `fail` rule needs a `reason`");
                    self.help("add e.g. `reason: the build cannot be resumed`");
                    None
                }
            },
            _ => {
                let d = Diagnostic::error(rule_node.pos, format!("unknown resume rule `{name}`"))
                    .suggest(name, RULES.iter().copied());
                let d = if d.help.is_none() { d.with_help(format!("rules are {}", plural_keys(RULES))) } else { d };
                self.diags.push(d);
                return None;
            }
        };
        if let Some((_, pos)) = check
            && name != "verify_then_continue"
        {
            self.error(pos, format!("`check` does not apply to the `{name}` rule"));
            self.help("only `verify_then_continue` checks a predicate");
        }
        if let Some((_, pos)) = reason
            && name != "fail"
        {
            self.error(pos, format!("`reason` does not apply to the `{name}` rule"));
            self.help("only `fail` records a reason");
        }
        if !ok {
            return None;
        }
        Some(Resume { rule: rule?, requires, description })
    }

    /// Pass 3: names, then the graph.
    fn structure(&mut self, top: &Top) -> Option<Resolved> {
        let states = &top.states;
        let mut sound = true;
        let mut by_name: IndexMap<&str, usize> = IndexMap::new();
        for (i, s) in states.iter().enumerate() {
            if let Some(&first) = by_name.get(s.name.as_str()) {
                self.error(s.name_pos, format!("duplicate state name `{}`", s.name));
                self.help(format!("`{}` is first defined on line {}", s.name, states[first].name_pos.line));
                sound = false;
            } else {
                by_name.insert(&s.name, i);
            }
        }
        let names: Vec<&str> = by_name.keys().copied().collect();

        let initial = match &top.initial {
            Some((name, pos)) => match by_name.get(name.as_str()) {
                Some(&i) if states[i].parent.is_none() => Some(i),
                Some(_) => {
                    self.error(*pos, format!("initial state `{name}` is not a top-level state"));
                    let top_names: Vec<&str> = top.top_level.iter().map(|&i| states[i].name.as_str()).collect();
                    self.help(format!("the top-level states are {}", plural_keys(&top_names)));
                    None
                }
                None => {
                    let top_names = top.top_level.iter().map(|&i| states[i].name.as_str());
                    self.diags.push(
                        Diagnostic::error(*pos, format!("unknown initial state `{name}`")).suggest(name, top_names),
                    );
                    None
                }
            },
            None => None,
        };
        sound &= initial.is_some() && !self.dropped;

        let mut initials = vec![None; states.len()];
        for (i, s) in states.iter().enumerate() {
            if s.is_final {
                // Its children were reported already; they make no compound state.
                continue;
            }
            match (&s.children, &s.initial) {
                (Some(children), None) if !children.is_empty() => {
                    self.error(s.name_pos, format!("compound state `{}` has no `initial`", s.name));
                    self.help(format!(
                        "add `initial: {}` to say which child is entered first",
                        states[children[0]].name
                    ));
                    sound = false;
                }
                (Some(children), Some((name, pos))) => {
                    match children.iter().copied().find(|&c| states[c].name == *name) {
                        Some(c) => initials[i] = Some(c),
                        None => {
                            let child_names = children.iter().map(|&c| states[c].name.as_str());
                            self.diags.push(
                                Diagnostic::error(
                                    *pos,
                                    format!("initial state `{name}` is not a child of `{}`", s.name),
                                )
                                .suggest(name, child_names),
                            );
                            sound = false;
                        }
                    }
                }
                (None, Some((_, pos))) => {
                    self.error(*pos, format!("atomic state `{}` has an `initial` but no `states`", s.name));
                }
                _ => {}
            }
        }

        let mut targets = Vec::with_capacity(states.len());
        for s in states {
            let mut row = Vec::with_capacity(s.on.len());
            for t in &s.on {
                match by_name.get(t.target.as_str()) {
                    Some(&i) => row.push(i),
                    None => {
                        self.diags.push(
                            Diagnostic::error(t.target_pos, format!("unknown target state `{}`", t.target))
                                .suggest(&t.target, names.iter().copied()),
                        );
                        sound = false;
                        row.push(usize::MAX);
                    }
                }
            }
            targets.push(row);
        }

        self.phases(top);
        let roles = self.resolve_roles(top, &by_name);
        self.shadowed(states);

        let initial = initial?;
        if sound {
            self.graph(states, initial, &initials, &targets);
            return roles.map(|roles| Resolved { initial, initials, targets, roles });
        }
        None
    }

    /// Phases need a resume rule, a stuck timeout (own or inherited) and, in version 2,
    /// a `run`; compound states have neither a resume rule nor a `run` of their own.
    fn phases(&mut self, top: &Top) {
        let states = &top.states;
        for (i, s) in states.iter().enumerate() {
            if s.is_final || s.children.is_some() {
                if let (Some(_), Some((_, pos))) = (&s.children, &s.resume) {
                    self.error(*pos, format!("resume rule on compound state `{}`", s.name));
                    self.help("resume rules belong to atomic phases; move it to each child");
                }
                if let (Some(_), Some(pos)) = (&s.children, s.run_pos)
                    && !s.is_final
                {
                    self.error(pos, format!("`run` on compound state `{}`", s.name));
                    self.help("a compound state runs nothing itself: its phases do; give each of them a `run`");
                }
                continue;
            }
            if !s.resume_written {
                self.error(s.name_pos, format!("phase `{}` has no resume rule", s.name));
                self.help(
                    "add `resume: restart_phase`, `verify_then_continue` (with `check`) or `fail` (with `reason`)",
                );
            }
            let inherited = ancestors(states, i).any(|a| states[a].stuck_written) || top.stuck_written;
            if !s.stuck_written && !inherited {
                self.error(s.name_pos, format!("phase `{}` has no `stuck_after`, own or inherited", s.name));
                self.help("add e.g. `stuck_after: 5m` to it, to an enclosing state or to the top level");
            }
            if top.version == Some(VERSION) && s.run_pos.is_none() {
                self.error(s.name_pos, format!("phase `{}` has no `run`", s.name));
                self.help(format!(
                    "say what it runs: an executor, e.g. `run: build` ({}), or a command, e.g. `run: {{ command: ./scan.sh }}`",
                    plural_keys(&executors())
                ));
            }
        }
    }

    /// The roles: a version-2 spec's own, resolved and checked; or, in version 1, the
    /// default machine's, which the spec must have, with a warning to upgrade.
    fn resolve_roles(&mut self, top: &Top, by_name: &IndexMap<&str, usize>) -> Option<ResolvedRoles> {
        if top.version == Some(v1::VERSION) {
            return self.v1_roles(top, by_name);
        }
        let raw = top.roles.as_ref()?;
        let names: Vec<&str> = by_name.keys().copied().collect();
        let mut states: Vec<(Role, usize, Pos)> = Vec::new();
        let mut events: Vec<(Role, &str, Pos)> = Vec::new();
        let mut sound = true;
        for (role, (name, pos)) in &raw.given {
            let (role, pos) = (*role, *pos);
            if !role.is_state() {
                if self.events.contains(name) {
                    events.push((role, name, pos));
                    continue;
                }
                sound = false;
                let handled: Vec<&str> = self.events.iter().map(String::as_str).collect();
                let d = Diagnostic::error(pos, format!("role `{role}` names event `{name}`, which no state handles"))
                    .suggest(name, handled.iter().copied());
                let d = match (&d.help, handled.is_empty()) {
                    (Some(_), _) => d,
                    (None, true) => d.with_help("no state has an `on:`; add the transitions the engine sends"),
                    (None, false) => d.with_help(format!("the events handled in `on:` are {}", plural_keys(&handled))),
                };
                self.diags.push(d);
                continue;
            }
            match by_name.get(name.as_str()) {
                Some(&i) if top.states[i].is_final => states.push((role, i, pos)),
                Some(_) => {
                    sound = false;
                    self.error(pos, format!("role `{role}` names `{name}`, which is not a final state"));
                    self.help(format!(
                        "the engine ends deployments in the `{role}` state, and one that could leave it would go on \
                         after it ended; name a state with `final: true`"
                    ));
                }
                None => {
                    sound = false;
                    self.diags.push(
                        Diagnostic::error(pos, format!("role `{role}` names an unknown state `{name}`"))
                            .suggest(name, names.iter().copied()),
                    );
                }
            }
        }
        sound &= self.distinct(&top.states, &states, &events);
        let state = |r: Role| states.iter().find(|s| s.0 == r).map(|s| s.1);
        let event = |r: Role| events.iter().find(|e| e.0 == r).map(|e| e.1.to_owned());
        let roles = ResolvedRoles {
            live: state(Role::Live)?,
            failed: state(Role::Failed)?,
            cancelled: state(Role::Cancelled)?,
            done: event(Role::Done)?,
            fail: event(Role::Fail)?,
            retry: event(Role::Retry)?,
        };
        sound.then_some(roles)
    }

    /// The live state is neither the failed nor the cancelled one (a failed deployment
    /// must never count as live), and the three events differ (the engine tells a phase's
    /// success, failure and retry apart by them). Reported at the later role.
    fn distinct(
        &mut self,
        top_states: &[RawState],
        states: &[(Role, usize, Pos)],
        events: &[(Role, &str, Pos)],
    ) -> bool {
        let mut sound = true;
        let live = states.iter().find(|s| s.0 == Role::Live);
        for &(role, i, pos) in states {
            if let Some(&(_, live_i, live_pos)) = live
                && role != Role::Live
                && i == live_i
            {
                sound = false;
                let at = pos.max(live_pos);
                let name = &top_states[i].name;
                self.error(at, format!("roles `live` and `{role}` name the same state `{name}`"));
                self.help(format!(
                    "a {role} deployment must never count as live; give `live` a final state of its own"
                ));
            }
        }
        for (k, &(role, name, pos)) in events.iter().enumerate() {
            if let Some(&(other, _, other_pos)) = events[..k].iter().find(|e| e.1 == name) {
                sound = false;
                self.error(pos.max(other_pos), format!("roles `{other}` and `{role}` name the same event `{name}`"));
                self.help("the engine tells a phase's success, its failure and a retry apart by these events");
            }
        }
        sound
    }

    /// Version 1's roles: the default machine's names, whose states must exist and be
    /// final. The spec loads with one warning at its `version`, which says how to upgrade.
    fn v1_roles(&mut self, top: &Top, by_name: &IndexMap<&str, usize>) -> Option<ResolvedRoles> {
        let state = |role: Role| by_name.get(v1::name(role)).copied().filter(|&i| top.states[i].is_final);
        let lacking: Vec<&str> = [Role::Live, Role::Failed, Role::Cancelled]
            .into_iter()
            .filter(|&r| state(r).is_none())
            .map(v1::name)
            .collect();
        if !lacking.is_empty() {
            let (states, them) = if lacking.len() == 1 { ("a final state", "it") } else { ("final states", "them") };
            self.error(
                top.version_pos,
                format!("version 1 relies on {states} {}, and this spec lacks {them}", and_list(&lacking)),
            );
            self.help(format!(
                "set `version: {VERSION}` and declare which of your final states are `live`, `failed` and \
                 `cancelled` in a `roles:` block, with the events that finish, fail and retry a phase, e.g.\n{}\n\
                 and give every phase a `run:`",
                v1::roles_block()
            ));
            return None;
        }
        if !self.upgrading {
            self.diags.push(
                Diagnostic::warning(
                    top.version_pos,
                    "a version-1 spec cannot declare its roles: the engine assumes the default machine's names",
                )
                .with_help(format!(
                    "upgrade: set `version: {VERSION}`, declare the roles with your own states and events:\n{}\n\
                     and give every phase a `run:`, an executor (`run: build`) or a command \
                     (`run: {{ command: ./scan.sh }}`); see specs/README.md",
                    v1::roles_block()
                )),
            );
        }
        Some(ResolvedRoles {
            live: state(Role::Live)?,
            failed: state(Role::Failed)?,
            cancelled: state(Role::Cancelled)?,
            done: v1::DONE.to_owned(),
            fail: v1::FAIL.to_owned(),
            retry: v1::RETRY.to_owned(),
        })
    }

    /// Warns about transitions that an earlier unguarded one of the same state and event
    /// always pre-empts.
    fn shadowed(&mut self, states: &[RawState]) {
        for s in states {
            for (j, t) in s.on.iter().enumerate() {
                let earlier = s.on[..j].iter().find(|e| e.event == t.event && e.guard.is_none());
                if let Some(e) = earlier {
                    self.diags.push(
                        Diagnostic::warning(
                            t.target_pos,
                            format!("transition on `{}` to `{}` can never fire", t.event, t.target),
                        )
                        .with_help(format!(
                            "the transition to `{}` on line {} has no guard and always fires first",
                            e.target, e.target_pos.line
                        )),
                    );
                }
            }
        }
    }

    /// Reachability from the initial state, and a path to a final state from every
    /// reachable phase, over the active leaf states.
    fn graph(&mut self, states: &[RawState], initial: usize, initials: &[Option<usize>], targets: &[Vec<usize>]) {
        let leaf = |mut i: usize| {
            while let Some(c) = initials[i] {
                i = c;
            }
            i
        };
        // The leaves each leaf can step to: per event, the candidates in priority order up
        // to and including the first unguarded one, which always fires.
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); states.len()];
        for (i, s) in states.iter().enumerate() {
            if s.children.is_some() || s.is_final {
                continue;
            }
            let mut closed: Vec<&str> = Vec::new();
            for a in std::iter::once(i).chain(ancestors(states, i)) {
                for (t, &target) in states[a].on.iter().zip(&targets[a]) {
                    if closed.contains(&t.event.as_str()) {
                        continue;
                    }
                    edges[i].push(leaf(target));
                    if t.guard.is_none() {
                        closed.push(&t.event);
                    }
                }
            }
        }
        let start = leaf(initial);
        let mut reached = vec![false; states.len()];
        let mut queue = vec![start];
        reached[start] = true;
        while let Some(i) = queue.pop() {
            for &j in &edges[i] {
                if !reached[j] {
                    reached[j] = true;
                    queue.push(j);
                }
            }
        }
        let mut active = reached.clone();
        for (i, r) in reached.iter().enumerate() {
            if *r {
                for a in ancestors(states, i) {
                    active[a] = true;
                }
            }
        }
        for (i, s) in states.iter().enumerate() {
            let parent_active = s.parent.is_none_or(|p| active[p]);
            if !active[i] && parent_active {
                self.error(
                    s.name_pos,
                    format!("state `{}` is unreachable from the initial state `{}`", s.name, states[start].name),
                );
                self.help("add a transition that leads to it, or remove it");
            }
        }
        // Backwards from the final states.
        let mut finishes = vec![false; states.len()];
        let mut changed = true;
        for (i, s) in states.iter().enumerate() {
            finishes[i] = s.is_final;
        }
        while changed {
            changed = false;
            for i in 0..states.len() {
                if !finishes[i] && edges[i].iter().any(|&j| finishes[j]) {
                    finishes[i] = true;
                    changed = true;
                }
            }
        }
        for (i, s) in states.iter().enumerate() {
            if reached[i] && !finishes[i] {
                self.error(s.name_pos, format!("state `{}` has no path to a final state", s.name));
                self.help("a deployment that enters it could never finish; add a transition towards a final state");
            }
        }
    }
}

/// Proper ancestors of a raw state, innermost first.
fn ancestors(states: &[RawState], i: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::successors(states[i].parent, |&p| states[p].parent)
}

/// Builds the arena from a spec with no errors.
fn compile(top: &Top, resolved: &Resolved) -> Result<Spec, Diagnostic> {
    let version = top.version.expect("a spec without a version this loader reads has an error");
    let id = |i: usize| -> Result<StateId, Diagnostic> {
        u16::try_from(i)
            .map(StateId)
            .map_err(|_| Diagnostic::error(Pos::default(), format!("a spec may hold at most {} states", u16::MAX)))
    };
    let mut states = Vec::with_capacity(top.states.len());
    for (i, raw) in top.states.iter().enumerate() {
        let kind = match (&raw.children, resolved.initials[i]) {
            (Some(children), Some(initial)) => StateKind::Compound {
                initial: id(initial)?,
                children: children.iter().map(|&c| id(c)).collect::<Result<_, _>>()?,
            },
            _ if raw.is_final => StateKind::Final,
            _ => StateKind::Atomic,
        };
        let chain: Vec<usize> = ancestors(&top.states, i).collect();
        let inherit = |own: Option<Duration>| {
            own.or_else(|| chain.iter().find_map(|&a| top.states[a].stuck_after)).or(top.stuck_after)
        };
        let max_attempts =
            raw.max_attempts.or_else(|| chain.iter().find_map(|&a| top.states[a].max_attempts)).or(top.max_attempts);
        // A version-1 spec cannot say what its phases run: the default machine's phases
        // run what they always did, and others nothing the engine knows of.
        let run = match version {
            v1::VERSION if kind == StateKind::Atomic => v1::run(&raw.name).map(Run::Executor),
            _ => raw.run.clone(),
        };
        let mut on = Vec::with_capacity(raw.on.len());
        for (t, &target) in raw.on.iter().zip(&resolved.targets[i]) {
            on.push(TransitionDef { event: t.event.clone(), target: id(target)?, guard: t.guard.flatten() });
        }
        states.push(State {
            name: raw.name.clone(),
            parent: raw.parent.map(id).transpose()?,
            kind,
            description: raw.description.clone(),
            on,
            stuck_after: inherit(raw.stuck_after),
            max_attempts,
            resume: raw.resume.as_ref().map(|(r, _)| r.clone()),
            ancestors: chain.iter().map(|&a| id(a)).collect::<Result<_, _>>()?,
            run,
        });
    }
    let r = &resolved.roles;
    let roles = Roles {
        live: id(r.live)?,
        failed: id(r.failed)?,
        cancelled: id(r.cancelled)?,
        done: r.done.clone(),
        fail: r.fail.clone(),
        retry: r.retry.clone(),
    };
    let table = crate::machine::Table::compile(&states);
    Ok(Spec { version, description: top.description.clone(), states, initial: id(resolved.initial)?, roles, table })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DEFAULT_SPEC_NAME, DEFAULT_SPEC_SOURCE};

    #[test]
    fn the_image_spec_compiles_without_warnings_and_runs_the_container_executors() {
        let (spec, warnings) = load(crate::spec::IMAGE_SPEC_NAME, crate::spec::IMAGE_SPEC_SOURCE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let runs: Vec<String> = ["PULLING_IMAGE", "STARTING_CONTAINER", "UPDATING_ROUTES", "HEALTH_CHECK"]
            .iter()
            .map(|p| format!("{:?}", spec.state(spec.find(p).unwrap()).run))
            .collect();
        assert_eq!(
            runs,
            [
                "Some(Executor(PullImage))",
                "Some(Executor(StartContainer))",
                "Some(Executor(WriteRoute))",
                "Some(Executor(HealthCheck))"
            ]
        );
        assert!(spec.is_live("ACTIVE"));
    }

    #[test]
    fn the_default_spec_compiles() {
        let (spec, warnings) = load(DEFAULT_SPEC_NAME, DEFAULT_SPEC_SOURCE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(spec.state(spec.initial).name, "QUEUED");
        let building = spec.find("BUILDING").unwrap();
        let s = spec.state(building);
        assert_eq!(s.stuck_after, Some(Duration::from_secs(1800)));
        assert_eq!(s.max_attempts, Some(3));
        assert_eq!(s.ancestors, vec![spec.find("IN_PROGRESS").unwrap()]);
        assert_eq!(spec.state(spec.find("PULLING_SOURCE").unwrap()).stuck_after, Some(Duration::from_secs(300)));
        assert_eq!(spec.leaf_of(spec.find("IN_PROGRESS").unwrap()), spec.find("PULLING_SOURCE").unwrap());
    }

    #[test]
    fn the_default_spec_declares_the_default_roles_and_runs() {
        let (spec, _) = load(DEFAULT_SPEC_NAME, DEFAULT_SPEC_SOURCE).unwrap();
        assert_eq!(spec.version, 2);
        assert_eq!(spec.roles.states().map(|(_, id)| spec.name(id)), ["ACTIVE", "FAILED", "CANCELLED"]);
        assert_eq!(spec.roles.events().map(|(_, e)| e), ["done", "fail", "retry"]);
        assert!(spec.is_live("ACTIVE") && !spec.is_live("FAILED"));
        // The default spec says what version 1 assumes, so both agree.
        for role in Role::ALL {
            let declared = match spec.roles.states().iter().find(|(r, _)| r == role) {
                Some((_, id)) => spec.name(*id),
                None => spec.roles.events().into_iter().find(|(r, _)| r == role).unwrap().1,
            };
            assert_eq!(declared, v1::name(*role));
        }
        let runs: Vec<(&str, Executor)> = spec
            .ids()
            .filter_map(|id| match &spec.state(id).run {
                Some(Run::Executor(e)) => Some((spec.name(id), *e)),
                _ => None,
            })
            .collect();
        assert_eq!(runs, v1::RUN);
        assert!(
            spec.ids().filter(|&id| spec.state(id).kind != StateKind::Atomic).all(|id| spec.state(id).run.is_none())
        );
    }

    /// The renamed fixture is the default spec, names aside: renaming the default's states
    /// and events gives exactly the spec it compiles to, roles included.
    #[test]
    fn a_renamed_spec_is_the_default_renamed() {
        const SOURCE: &str = include_str!("../../fixtures/validate/ok/0007_renamed_phases.yaml");
        let (renamed, warnings) = load("renamed.yaml", SOURCE).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(renamed.roles.states().map(|(_, id)| renamed.name(id)), ["LIVE", "BROKEN", "STOPPED"]);
        assert_eq!(renamed.roles.events().map(|(_, e)| e), ["ok", "abort", "again"]);
        let states = [
            ("QUEUED", "WAITING"),
            ("IN_PROGRESS", "WORKING"),
            ("PULLING_SOURCE", "FETCHING"),
            ("BUILDING", "COMPILING"),
            ("COPYING_FILES", "STAGING"),
            ("CREATING_SYMLINKS", "LINKING"),
            ("UPDATING_ROUTES", "ROUTING"),
            ("HEALTH_CHECK", "PROBING"),
            ("ACTIVE", "LIVE"),
            ("FAILED", "BROKEN"),
            ("CANCELLED", "STOPPED"),
        ];
        let events = [("done", "ok"), ("fail", "abort"), ("retry", "again"), ("cancel", "halt")];
        let rename = |table: &[(&str, &'static str)], name: &str| {
            table.iter().find(|(from, _)| *from == name).map(|(_, to)| (*to).to_owned()).unwrap()
        };
        let mut expected = crate::spec::default_spec();
        for s in &mut expected.states {
            s.name = rename(&states, &s.name);
            for t in &mut s.on {
                t.event = rename(&events, &t.event);
            }
        }
        for event in [&mut expected.roles.done, &mut expected.roles.fail, &mut expected.roles.retry] {
            *event = rename(&events, event);
        }
        expected.table = crate::machine::Table::compile(&expected.states);
        assert_eq!(renamed, expected);
    }

    #[test]
    fn a_version_1_spec_gets_the_default_roles_and_one_warning() {
        // BUILDING is a compound state here: only a phase named like a default one runs
        // what that one runs.
        let source = "version: 1\ninitial: QUEUED\nstuck_after: 5m\nstates:\n  QUEUED:\n    resume: restart_phase\n    on: { start: BUILDING, cancel: CANCELLED }\n  BUILDING:\n    initial: SCANNING\n    states:\n      SCANNING:\n        resume: restart_phase\n        on: { done: ACTIVE, fail: FAILED }\n  ACTIVE: { final: true }\n  FAILED: { final: true }\n  CANCELLED: { final: true }\n";
        let (spec, warnings) = load("v1.yaml", source).unwrap();
        assert_eq!(spec.version, 1);
        assert_eq!(spec.roles.states().map(|(_, id)| spec.name(id)), ["ACTIVE", "FAILED", "CANCELLED"]);
        assert_eq!(spec.roles.events().map(|(_, e)| e), ["done", "fail", "retry"]);
        assert_eq!(spec.state(spec.find("QUEUED").unwrap()).run, Some(Run::Executor(Executor::Wait)));
        assert_eq!(spec.state(spec.find("SCANNING").unwrap()).run, None);
        assert_eq!(spec.state(spec.find("BUILDING").unwrap()).run, None);
        let [warning] = warnings.as_slice() else { panic!("{warnings:?}") };
        assert!(!warning.is_error());
        assert_eq!(warning.pos, Pos { line: 1, column: 10 });
        assert!(warning.help.as_deref().unwrap().contains("set `version: 2`"));
        assert!(warning.help.as_deref().unwrap().contains("roles:\n  live: ACTIVE\n"));
    }

    #[test]
    fn a_version_1_spec_without_a_default_final_state_is_an_error_at_its_version() {
        let source = "version: 1\ninitial: A\nstuck_after: 5m\nstates:\n  A:\n    resume: restart_phase\n    on: { done: ACTIVE, fail: FAILED }\n  ACTIVE: {}\n  FAILED: { final: true }\n";
        let errors = load("v1.yaml", source).unwrap_err();
        let messages: Vec<(&str, Pos)> = errors.iter().map(|d| (d.message.as_str(), d.pos)).collect();
        let at_version = Pos { line: 1, column: 10 };
        // `ACTIVE` is there but not final (and so a phase without a resume rule).
        assert!(
            messages.contains(&(
                "version 1 relies on final states `ACTIVE` and `CANCELLED`, and this spec lacks them",
                at_version
            )),
            "{messages:?}"
        );
        assert!(errors.iter().all(|d| d.is_error()), "no upgrade warning besides the error: {errors:?}");
    }
}
