//! [`Host`]: the effects on the real machine, as `trueup apply` makes them.
//!
//! File system and route changes go through [`RealFs`]; resumes and failures are
//! recorded in the [`Store`] under the apply lease, each in one transaction
//! ([`Store::record_verdict`]). Container changes go through the container engine when
//! one is configured ([`Host::with_engine`]), and fail with
//! [`EffectError::NoContainerEngine`] otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use super::{EffectError, Effects, RealFs};
use crate::model::Verdict;
use crate::store::{Lease, Store, StoreError};
use crate::time::Timestamp;
use crate::world::containers::Engine;

/// The real machine: files under the root, route files, and the state store.
#[derive(Debug)]
pub struct Host<'a> {
    fs: RealFs,
    store: &'a Store,
    lease: Lease,
    engine: Option<&'a Engine>,
}

impl<'a> Host<'a> {
    /// Effects through `fs` and `store`, writing to the store under `lease`.
    pub fn new(fs: RealFs, store: &'a Store, lease: Lease) -> Self {
        Host { fs, store, lease, engine: None }
    }

    /// The same, with container changes made through `engine`.
    pub fn with_engine(self, engine: Option<&'a Engine>) -> Self {
        Host { engine, ..self }
    }
}

impl Effects for Host<'_> {
    fn link(&mut self, path: &Path, target: &Path) -> Result<(), EffectError> {
        self.fs.link(path, target)
    }

    fn move_aside(&mut self, path: &Path, to: &Path) -> Result<(), EffectError> {
        self.fs.move_aside(path, to)
    }

    fn sync(&mut self) -> Result<(), EffectError> {
        self.fs.sync()
    }

    fn start_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
        match self.engine {
            Some(engine) => engine.start_container(id, name),
            None => self.fs.start_container(id, name),
        }
    }

    fn recreate_container(
        &mut self,
        id: &str,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<(), EffectError> {
        match self.engine {
            Some(engine) => engine.recreate_container(id, name, image, labels),
            None => self.fs.recreate_container(id, name, image, labels, now),
        }
    }

    fn remove_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
        match self.engine {
            Some(engine) => engine.remove_container(id, name),
            None => self.fs.remove_container(id, name),
        }
    }

    fn write_route(
        &mut self,
        project: &str,
        deployment: &str,
        upstream: &str,
        domain: &str,
    ) -> Result<(), EffectError> {
        self.fs.write_route(project, deployment, upstream, domain)
    }

    fn remove_route(&mut self, project: &str, now: Timestamp) -> Result<(), EffectError> {
        self.fs.remove_route(project, now)
    }

    fn verdict(&mut self, verdict: &Verdict<'_>) -> Result<(), EffectError> {
        self.store.record_verdict(&self.lease, verdict).map(|_| ()).map_err(|e| match e {
            StoreError::UnknownDeployment(d) => EffectError::NoSuchDeployment(d),
            StoreError::Progressed { deployment, .. } => EffectError::Progressed(deployment),
            StoreError::Claimed { deployment, owner, until } => EffectError::Claimed { deployment, owner, until },
            StoreError::PhaseMoved { deployment, expected, actual, attempts } => {
                EffectError::PhaseMoved { deployment, expected, actual, attempts }
            }
            other => EffectError::Store { deployment: verdict.deployment.to_owned(), source: Box::new(other) },
        })
    }
}
