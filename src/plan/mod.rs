//! The reconcile rules: a pure function from (spec, world, now) to a [`Plan`].
//!
//! [`plan`] reads a [`World`] snapshot and the [`Spec`](crate::spec::Spec)'s resume rules and lists the
//! repairs that would make the world true again, each with a one-line reason: resume or
//! fail stuck deployments, heal `current` and webroot links, start, recreate or remove
//! containers, write or remove route files. Problems it must not repair itself (an
//! invalid id, a path that leaves the root, a clock in the future) become [`Finding`]s.
//!
//! It does no IO, reads no clock and draws no random numbers: the same inputs give the
//! same plan, byte for byte. From 2,000 projects on, on a machine with more than one
//! core, it shares its work with a second thread (the only thing it asks the system is
//! how many cores it has); the plan is the same. [`crate::apply`] is the only code that
//! carries a plan out.

use std::path::PathBuf;

mod kind;
mod render;
mod rules;
mod status;
mod view;

pub use kind::{Group, Kind, Planned, Tally};
pub use render::{Summary, describe, first_named, render_json, render_text};
pub use rules::{HELPER_MAX_AGE, Limits, app_labels, plan, plan_of_view, plan_unsealed, plan_with};
pub use status::{DeploymentStatus, ProjectStatus, Status, render_status, status};
pub use view::{
    Fate, Index, Judged, LinkHealth, Paths, Progress, ProjectView, View, configuration_errors, health, progress,
    release_exists, release_present, releases, view,
};

use serde::{Deserialize, Serialize};

use crate::model::World;
use crate::time::Timestamp;

/// The repairs for one world, in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// What to change, in order: deployments, links, containers, routes.
    pub actions: Vec<Action>,
    /// What was seen and will not be changed.
    pub findings: Vec<Finding>,
    /// A digest of the observed world: `apply FILE` refuses a plan whose world changed.
    /// Empty for a plan made by [`plan_unsealed`], which is only shown.
    pub fingerprint: String,
}

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The project it belongs to.
    pub project: String,
    /// What changes.
    #[serde(flatten)]
    pub change: Change,
    /// Why, in one line.
    pub reason: String,
}

/// The closed set of changes the engine knows how to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Claim a stuck deployment, log the resume, and put it in `to_phase` (the same
    /// phase to re-run it, or the next one when its work was verified done) with one
    /// more attempt.
    Resume {
        /// The deployment.
        deployment: String,
        /// The phase it was stuck in.
        from_phase: String,
        /// The phase it resumes in.
        to_phase: String,
        /// The deployment's `attempts` afterwards: the resumes of its phase so far + 1 when
        /// the phase is re-run, 0 when it moves on to the next phase.
        attempt: u32,
        /// Its last sign of progress.
        stuck_since: Option<Timestamp>,
        /// The owner of the claim on it, when the plan saw that worker's process gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dead_claim: Option<String>,
    },
    /// Mark a deployment failed, recording the action's reason on it (the reason is not
    /// repeated here: a saved or JSON plan would then hold the key `reason` twice).
    Fail {
        /// The deployment.
        deployment: String,
        /// The phase it was in.
        from_phase: String,
        /// The final phase it moves to (the spec's `fail` target).
        to_phase: String,
        /// Its last sign of progress.
        stuck_since: Option<Timestamp>,
        /// The owner of the claim on it, when the plan saw that worker's process gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dead_claim: Option<String>,
    },
    /// Point a symlink at `target`, atomically (temporary link, then rename over).
    Link {
        /// The link's path.
        path: PathBuf,
        /// What it points at now (`None` when missing or not a link).
        before: Option<PathBuf>,
        /// What it will point at.
        target: PathBuf,
    },
    /// Move a real file or folder out of a link's way, never deleting it.
    MoveAside {
        /// What is in the way.
        path: PathBuf,
        /// Where it goes.
        to: PathBuf,
    },
    /// Start a stopped container.
    StartContainer {
        /// The engine's id.
        id: String,
        /// Its name.
        name: String,
    },
    /// Remove a container and create it again with the right labels.
    RecreateContainer {
        /// The engine's id of the old container.
        id: String,
        /// Its name, kept by the new one.
        name: String,
        /// The image of the new one.
        image: String,
        /// The deployment it serves.
        deployment: String,
        /// The labels it must carry.
        labels: std::collections::BTreeMap<String, String>,
    },
    /// Stop and remove a container trueup created.
    RemoveContainer {
        /// The engine's id.
        id: String,
        /// Its name.
        name: String,
    },
    /// Write the project's route file.
    WriteRoute {
        /// The deployment it targets.
        deployment: String,
        /// The upstream URL.
        upstream: String,
        /// The host name it answers on.
        domain: String,
    },
    /// Remove the route file of a project that is gone or inactive.
    RemoveRoute {
        /// The deployment the stale route targeted, if known.
        deployment: Option<String>,
    },
}

/// How much of what is healthy a text rendering lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Only what needs a person: warnings, errors and the closing line; no list of
    /// changes, no notes.
    Quiet,
    /// Healthy deployments in flight are summed up in one line.
    #[default]
    Brief,
    /// Everything is listed one by one.
    Verbose,
}

impl Change {
    /// True for a verdict on a stuck deployment: a resume or a failure.
    pub fn is_verdict(&self) -> bool {
        matches!(self, Change::Resume { .. } | Change::Fail { .. })
    }

    /// True for a container removed or replaced: outside the file system the apply
    /// syncs, so no power cut takes it back, while a rename not yet synced may come
    /// undone. What the plan did before such a change (the route moved away from a
    /// zombie) must be durable first.
    pub fn is_irreversible(&self) -> bool {
        matches!(self, Change::RemoveContainer { .. } | Change::RecreateContainer { .. })
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The configuration looks wrong (a missing or empty root, `/` as the root, a missing
    /// routes folder): the plan makes no change at all, `plan` exits 1 and `apply` refuses
    /// to start, since acting on a wrong view of the machine could fail deployments and
    /// remove routes for good.
    Error,
    /// Needs a person: the engine will not repair it.
    Warning,
    /// For information.
    Note,
}

/// Something seen that the plan does not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The project it concerns; empty for the whole world.
    pub project: String,
    /// Error, warning or note.
    pub level: Level,
    /// What, in one line.
    pub message: String,
    /// For a note about a healthy deployment in flight (a worker holds it, or it
    /// progressed within its deadline), that deployment: the text plan sums these notes
    /// up in one line unless asked to list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<String>,
}

impl Finding {
    /// A finding that is not about a healthy deployment in flight.
    pub fn new(project: &str, level: Level, message: String) -> Self {
        Finding { project: project.to_owned(), level, message, in_flight: None }
    }
}

impl Plan {
    /// Adds the fingerprint of `world`, the world it was planned from, as [`plan`] does;
    /// [`plan_unsealed`] leaves it out.
    pub fn seal(&mut self, world: &World) {
        self.fingerprint = fingerprint(world);
    }

    /// The findings of level [`Level::Error`]: a configuration that looks wrong. A plan
    /// with any has no actions, and nothing may be applied.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Error)
    }
}

/// A stable digest of a world: 64-bit FNV-1a over its canonical JSON, in hex.
pub fn fingerprint(world: &World) -> String {
    // The JSON is hashed as it is written, never held whole: for ten thousand projects
    // it is megabytes.
    let mut fnv = Fnv(0xcbf2_9ce4_8422_2325);
    serde_json::to_writer(&mut fnv, world).expect("a World is plain data and always serializes");
    format!("{:016x}", fnv.0)
}

/// 64-bit FNV-1a over the bytes written to it.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = bytes.iter().fold(self.0, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;

    #[test]
    fn a_fingerprint_is_fnv_1a_of_the_world_s_json_and_stays_what_it_was() {
        let mut world = World { root: "/srv/paas".into(), ..World::default() };
        world.files.insert("/srv/paas".into(), Node::Dir);
        world.files.insert("/srv/paas/p1/current".into(), Node::Symlink("deployments/d1".into()));
        let json = serde_json::to_vec(&world).unwrap();
        let mut want = 0xcbf2_9ce4_8422_2325_u64;
        for b in json {
            want ^= u64::from(b);
            want = want.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fingerprint(&world), format!("{want:016x}"));
        // Saved plans carry it: the same world keeps the same fingerprint across versions.
        assert_eq!(fingerprint(&World::default()), "db6bddae044f5d04");
    }
}
