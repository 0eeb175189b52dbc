//! The machine of each deployment type: one spec for all types, or one per type.

use std::collections::BTreeMap;

use super::Spec;
use crate::model::{Deployment, DeploymentType};

/// The specs the engine runs with: a default machine, and optionally another for some
/// deployment types (`--spec image=specs/image.yaml`), so that image deployments can have
/// phases of their own. Every rule reads a deployment's phases through the spec of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specs {
    default: Spec,
    by_type: BTreeMap<DeploymentType, Spec>,
}

impl Specs {
    /// One spec for every deployment type.
    pub fn one(spec: Spec) -> Self {
        Specs { default: spec, by_type: BTreeMap::new() }
    }

    /// The built-in specs: [`super::default_spec`] for uploads and git repositories,
    /// [`super::image_spec`] for images.
    pub fn builtin() -> Self {
        Specs::one(super::default_spec()).with(DeploymentType::Image, super::image_spec())
    }

    /// These specs, with `spec` for deployments of type `kind`.
    #[must_use]
    pub fn with(mut self, kind: DeploymentType, spec: Spec) -> Self {
        self.by_type.insert(kind, spec);
        self
    }

    /// The spec of deployments of type `kind`.
    pub fn of_type(&self, kind: DeploymentType) -> &Spec {
        self.by_type.get(&kind).unwrap_or(&self.default)
    }

    /// The spec of a deployment.
    pub fn of(&self, d: &Deployment) -> &Spec {
        self.of_type(d.kind)
    }

    /// True when the deployment is in the live phase of its own spec.
    pub fn is_live(&self, d: &Deployment) -> bool {
        self.of(d).is_live(&d.phase)
    }

    /// The names of the live phases of every spec, sorted, without repeats: what the
    /// store reads besides unfinished deployments.
    pub fn live_phases(&self) -> Vec<&str> {
        let mut names: Vec<&str> =
            std::iter::once(&self.default).chain(self.by_type.values()).map(|s| s.name(s.roles.live)).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl From<Spec> for Specs {
    fn from(spec: Spec) -> Self {
        Specs::one(spec)
    }
}
