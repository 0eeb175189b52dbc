//! The spec language: YAML phase machines, loaded, validated and compiled into an arena.
//!
//! A spec file describes one hierarchical state machine (see `specs/README.md`). This
//! module owns reading it (with node positions), checking it (every problem at once, as
//! [`Diagnostic`](crate::diag::Diagnostic)s) and compiling it into a [`Spec`]: a flat arena of states with parent
//! indices and precomputed ancestor chains, which [`crate::machine`] interprets and
//! [`crate::plan`] consults for resume rules.
//!
//! [`Diagnostic`]: crate::diag::Diagnostic
//!
//! It is pure: it reads from a `&str` and never touches the file system or the clock.
//! The closed vocabularies of [`Guard`]s and [`Predicate`]s live here; their meaning on a
//! real world is implemented by the planner and the phases.

use std::fmt;

use serde::Serialize;

use crate::time::Duration;

mod load;
mod specs;
mod yaml;

pub use load::{load, load_bytes};
pub use specs::Specs;

/// The default deployment machine, compiled into the binary.
pub const DEFAULT_SPEC_SOURCE: &str = include_str!("../../specs/deployment.yaml");

/// The file name shown in diagnostics of the default spec.
pub const DEFAULT_SPEC_NAME: &str = "specs/deployment.yaml";

/// The default machine of image deployments, compiled into the binary.
pub const IMAGE_SPEC_SOURCE: &str = include_str!("../../specs/image.yaml");

/// The file name shown in diagnostics of the image spec.
pub const IMAGE_SPEC_NAME: &str = "specs/image.yaml";

/// The default deployment machine.
pub fn default_spec() -> Spec {
    builtin(DEFAULT_SPEC_NAME, DEFAULT_SPEC_SOURCE)
}

/// The default machine of image deployments: no build and no release folder, an app
/// container per deployment instead.
pub fn image_spec() -> Spec {
    builtin(IMAGE_SPEC_NAME, IMAGE_SPEC_SOURCE)
}

fn builtin(name: &str, source: &str) -> Spec {
    match load(name, source) {
        Ok((spec, _warnings)) => spec,
        Err(diagnostics) => panic!(
            "the built-in spec is checked by the test suite, yet it failed: {}",
            crate::diag::render(name, source, &diagnostics)
        ),
    }
}

/// The index of a state in its [`Spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StateId(pub(crate) u16);

impl StateId {
    /// The position of the state in [`Spec::states`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What a state is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKind {
    /// A leaf the machine can rest in.
    Atomic,
    /// A superstate: entering it enters `initial`; `children` in document order.
    Compound {
        /// The child entered when the compound state is the target.
        initial: StateId,
        /// The direct children, in document order.
        children: Vec<StateId>,
    },
    /// A leaf the machine never leaves.
    Final,
}

/// One transition of a state, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionDef {
    /// The event that triggers it.
    pub event: String,
    /// The state it leads to (possibly compound: the machine then enters its initial).
    pub target: StateId,
    /// Fires only when this guard holds; `None` always fires.
    pub guard: Option<Guard>,
}

/// How a stuck deployment in this phase is recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// What to do.
    pub rule: ResumeRule,
    /// Facts about the world that must hold, or the deployment fails instead.
    pub requires: Vec<Predicate>,
    /// Why this rule is right for the phase, one line.
    pub description: Option<String>,
}

/// The three resume rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeRule {
    /// Run the phase again from its start; the phase is idempotent.
    RestartPhase,
    /// If `check` holds, the phase's work is done: continue with its transition on the
    /// `done` role's event.
    /// If it does not, run the phase again.
    VerifyThenContinue {
        /// The predicate that tells the phase's work is done.
        check: Predicate,
    },
    /// Mark the deployment failed.
    Fail {
        /// The reason recorded on the deployment.
        reason: String,
    },
}

/// One state of the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The state's unique name, e.g. `BUILDING`.
    pub name: String,
    /// The enclosing compound state; `None` at the top level.
    pub parent: Option<StateId>,
    /// Atomic, compound or final.
    pub kind: StateKind,
    /// One line for people.
    pub description: Option<String>,
    /// Own transitions, in document order.
    pub on: Vec<TransitionDef>,
    /// Effective `stuck_after`: own, else the nearest ancestor's, else the spec's.
    pub stuck_after: Option<Duration>,
    /// Effective `max_attempts`: own, else inherited.
    pub max_attempts: Option<u32>,
    /// The resume rule (atomic non-final states only).
    pub resume: Option<Resume>,
    /// Proper ancestors, innermost first.
    pub ancestors: Vec<StateId>,
    /// What the phase runs (atomic non-final states only); `None` in a version-1 spec for
    /// a phase whose name is not one of the default machine's.
    pub run: Option<Run>,
}

/// What a phase runs when a worker drives a deployment through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// One of the engine's executors.
    Executor(Executor),
    /// A user's command, run with `sh -c` in the deployment's work folder.
    Command(String),
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Run::Executor(e) => f.write_str(e.name()),
            Run::Command(c) => write!(f, "command `{c}`"),
        }
    }
}

/// The states and events the engine relies on. A spec names them (`roles:`, version 2),
/// so the engine never spells a phase or event name of its own: a spec whose phases are
/// renamed behaves exactly like the default, renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// The final phase of a live release: among a project's deployments in it, the one
    /// that finished last (and whose release folder exists) is what `current` points at.
    pub live: StateId,
    /// The final phase of a failed deployment.
    pub failed: StateId,
    /// The final phase of a cancelled deployment.
    pub cancelled: StateId,
    /// The event that ends a phase successfully.
    pub done: String,
    /// The event that fails a deployment.
    pub fail: String,
    /// The event that runs a phase again.
    pub retry: String,
}

impl Roles {
    /// The state of each state role: live, failed, cancelled.
    pub fn states(&self) -> [(Role, StateId); 3] {
        [(Role::Live, self.live), (Role::Failed, self.failed), (Role::Cancelled, self.cancelled)]
    }

    /// The event of each event role: done, fail, retry.
    pub fn events(&self) -> [(Role, &str); 3] {
        [(Role::Done, &self.done), (Role::Fail, &self.fail), (Role::Retry, &self.retry)]
    }
}

/// A validated, compiled machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The spec's `version` (1 or 2).
    pub version: u32,
    /// The spec's own description.
    pub description: Option<String>,
    /// All states, parents before children, in document order.
    pub states: Vec<State>,
    /// The top-level `initial` state.
    pub initial: StateId,
    /// The states and events the engine relies on.
    pub roles: Roles,
    /// Every step the machine can take, worked out from `states` when the spec is loaded.
    pub(crate) table: crate::machine::Table,
}

impl Spec {
    /// The state with this name.
    pub fn find(&self, name: &str) -> Option<StateId> {
        self.states.iter().position(|s| s.name == name).map(|i| StateId(i as u16))
    }

    /// The state behind an id.
    pub fn state(&self, id: StateId) -> &State {
        &self.states[id.index()]
    }

    /// Every state id, in arena order.
    pub fn ids(&self) -> impl Iterator<Item = StateId> + '_ {
        (0..self.states.len()).map(|i| StateId(i as u16))
    }

    /// The name of a state.
    pub fn name(&self, id: StateId) -> &str {
        &self.states[id.index()].name
    }

    /// True when `phase` names the live role's state.
    pub fn is_live(&self, phase: &str) -> bool {
        self.name(self.roles.live) == phase
    }

    /// True for final states.
    pub fn is_final(&self, id: StateId) -> bool {
        self.state(id).kind == StateKind::Final
    }

    /// The atomic state entered when `id` is the target: `id` itself, or the initial
    /// leaf of a compound state.
    pub fn leaf_of(&self, mut id: StateId) -> StateId {
        while let StateKind::Compound { initial, .. } = &self.state(id).kind {
            id = *initial;
        }
        id
    }
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])+ $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl $name {
            /// Every member, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name used in spec files.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// What it means, for `--help` and the docs.
            pub fn doc(self) -> &'static str {
                match self { $($name::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }

            /// The member with this spec name.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

vocabulary! {
    /// A fact about the world that a resume rule requires or checks.
    Predicate {
        /// The deployment's source is still there: the upload file or folder for
        /// `upload`, the repository for `git`, the image for `image`.
        SourcePresent = "source_present",
        /// The release folder `ROOT/PROJECT/deployments/ID` exists.
        ReleaseDirPresent = "release_dir_present",
        /// The deployment's image is known to the container engine, or names its
        /// registry, so that a phase can pull it (again).
        ImagePresent = "image_present",
        /// `ROOT/PROJECT/current` points at the deployment's release folder, and the
        /// webroot link at `current/public`.
        CurrentLinksRelease = "current_links_release",
        /// The project's route file targets this deployment.
        RouteTargetsDeployment = "route_targets_deployment",
    }
}

vocabulary! {
    /// What the engine runs for a phase (`run:`); a user's command is [`Run::Command`].
    Executor {
        /// Wait in the queue for a worker; nothing runs.
        Wait = "wait",
        /// Fetch the upload, clone the repository or find the image.
        PullSource = "pull_source",
        /// Run the deployment's build command in its work folder.
        Build = "build",
        /// Copy the build output into the release folder through a temporary folder.
        CopyFiles = "copy_files",
        /// Switch `current` and the webroot link to the release.
        SwitchLinks = "switch_links",
        /// Write the project's proxy route for the deployment.
        WriteRoute = "write_route",
        /// Probe the release until it answers.
        HealthCheck = "health_check",
        /// Make sure the deployment's image is present (image deployments).
        PullImage = "pull_image",
        /// Create and start the deployment's app container (image deployments).
        StartContainer = "start_container",
    }
}

vocabulary! {
    /// What a spec names in its `roles:` block, so that the engine spells no phase or
    /// event name of its own (the fields of [`Roles`]).
    Role {
        /// The final state of a deployment whose release went live (of a project's
        /// deployments there, the one that finished last is what `current` points at).
        Live = "live",
        /// The final state of a deployment that failed (the previous release stays live).
        Failed = "failed",
        /// The final state of a deployment that a user cancelled.
        Cancelled = "cancelled",
        /// The event that ends a phase successfully and moves the deployment on.
        Done = "done",
        /// The event that fails a deployment.
        Fail = "fail",
        /// The event that runs a phase again.
        Retry = "retry",
    }
}

impl Role {
    /// True for the roles that name a state (`live`, `failed`, `cancelled`); the others
    /// name an event.
    pub fn is_state(self) -> bool {
        matches!(self, Role::Live | Role::Failed | Role::Cancelled)
    }
}

vocabulary! {
    /// A condition on a transition, evaluated by whoever drives the machine.
    Guard {
        /// The deployment has attempts left before `max_attempts`.
        AttemptsRemaining = "attempts_remaining",
        /// The project has an earlier release in the `live` role's state to roll back to.
        HasPreviousRelease = "has_previous_release",
        /// The deployment's type is `image` (nothing to build or copy).
        IsImageDeployment = "is_image_deployment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip_their_names() {
        for p in Predicate::ALL {
            assert_eq!(Predicate::from_name(p.name()), Some(*p));
            assert!(!p.doc().is_empty());
        }
        for g in Guard::ALL {
            assert_eq!(Guard::from_name(g.name()), Some(*g));
        }
        for e in Executor::ALL {
            assert_eq!(Executor::from_name(e.name()), Some(*e));
            assert!(!e.doc().is_empty());
        }
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(*r));
        }
        let states: Vec<Role> = Role::ALL.iter().copied().filter(|r| r.is_state()).collect();
        assert_eq!(states, [Role::Live, Role::Failed, Role::Cancelled]);
    }
}
