//! The executors of image deployments (`pull_image`, `start_container`), and what the
//! shared executors do differently for them.
//!
//! An image deployment has no source to build and no release folder: it runs in an app
//! container of its own, named `PROJECT-ID`, with the labels the reconciler expects of a
//! live app container ([`crate::plan::app_labels`]). The container publishes one loopback
//! port from [`super::Settings::container_ports`] that no other container holds and
//! nothing listens on, and the app is told it as `PORT`; so the old and the new container
//! run side by side during the switch. `start_container` probes the new container
//! directly before anything points at it and records its address as the deployment's
//! `upstream`; `write_route` then points the project's route at it, and once
//! `health_check` has seen the deployment's own `X-Trueup-Deployment` header through
//! Traefik, the project's older app containers are stopped and removed
//! ([`retire_previous`]). A deployment that fails has its own container removed
//! ([`remove_own`]) and leaves the old one serving.
//!
//! Every executor here is idempotent: a container that an interrupted attempt left under
//! the deployment's name is removed and made again, on a port chosen again.

use crate::apply::chain;
use std::collections::BTreeMap;

use super::run::Session;
use super::steps::{Done, Step, check, done, health_path, unexposed};
use crate::model::{Deployment, LogLevel, labels};
use crate::phases::{PhaseError, Watch};
use crate::world::containers::{self, ContainerError, Engine as Containers, NewContainer};

/// The name of `d`'s app container.
pub(super) fn container_name(d: &Deployment) -> String {
    format!("{}-{}", d.project, d.id)
}

fn image_of(d: &Deployment) -> Result<&str, PhaseError> {
    d.source.image.as_deref().ok_or_else(|| PhaseError::Failed("the deployment records no image".to_owned()))
}

/// The container engine, for this phase. None configured fails the deployment; one that
/// does not answer leaves it to be resumed.
fn connect(s: &Session<'_, '_>) -> Result<Containers, PhaseError> {
    match containers::connect(&s.engine.containers) {
        Ok(Some(engine)) => Ok(engine),
        Ok(None) => Err(PhaseError::Failed(
            "an image deployment needs a container engine, and none is configured: pass `--container-socket PATH` \
             or set `DOCKER_HOST`"
                .to_owned(),
        )),
        Err(e @ ContainerError::NotBuilt { .. }) => Err(PhaseError::Failed(chain(&e))),
        Err(e) => Err(PhaseError::Retry(chain(&e))),
    }
}

/// `pull_image`: the engine holds the image, or pulls it when the image names its
/// registry ([`containers::names_registry`]).
pub(super) fn pull_image(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let image = image_of(d)?;
    let engine = connect(s)?;
    let held = engine.images().map_err(|e| PhaseError::Retry(chain(&e)))?;
    if held.iter().any(|i| i == image) {
        s.line(LogLevel::Info, &format!("the container engine holds `{image}`"));
        return done();
    }
    if !containers::names_registry(image) {
        return Err(PhaseError::Failed(format!(
            "the container engine does not hold the image `{image}`, which names no registry to pull it from: \
             load it into the engine first (`podman load`, `docker load`)"
        )));
    }
    s.line(LogLevel::Info, &format!("pulling `{image}`"));
    engine.pull(image).map_err(|e| PhaseError::Failed(chain(&e)))?;
    done()
}

/// `start_container`: creates and starts `d`'s app container on a free port, and probes
/// it directly; records its address as the deployment's `upstream`.
pub(super) fn start_container(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let image = image_of(d)?.to_owned();
    let engine = connect(s)?;
    let name = container_name(d);
    let project = s.engine.store.project(&d.project).map_err(|e| PhaseError::Retry(e.to_string()))?;
    let Some(project) = project else {
        return Err(PhaseError::Failed(format!("project `{}` is not in the state database", d.project)));
    };
    let labels = crate::plan::app_labels(&project, d);
    if let Some(there) = engine.find(&name).map_err(|e| PhaseError::Retry(chain(&e)))? {
        if !there.managed() || there.label(labels::DEPLOYMENT) != Some(d.id.as_str()) {
            return Err(PhaseError::Failed(format!(
                "container name `{name}` is held by `{}`, which is not this deployment's container",
                there.id
            )));
        }
        s.line(LogLevel::Info, &format!("removing `{name}`, which an interrupted attempt left"));
        engine.remove_container(&there.id, &name).map_err(|e| PhaseError::Retry(chain(&e)))?;
    }
    let port = free_port(s, &engine)?;
    let new = NewContainer {
        name: name.clone(),
        image: image.clone(),
        labels,
        env: vec![format!("PORT={port}")],
        cmd: None,
        publish: Some((port, port)),
    };
    let id = engine.create(&new).map_err(|e| PhaseError::Failed(chain(&e)))?;
    engine.start(&id, &name).map_err(|e| PhaseError::Failed(chain(&e)))?;
    let upstream = format!("http://127.0.0.1:{port}");
    s.line(LogLevel::Info, &format!("container `{name}` runs `{image}` with PORT={port}, published on {upstream}"));
    let url = format!("{upstream}{}", health_path(d));
    s.line(LogLevel::Info, &format!("probing the new container directly: {url}"));
    check(s, &url, None, &[], &d.id, false).map_err(unexposed)?;
    Ok(Done::Ok(BTreeMap::from([("upstream".to_owned(), upstream), ("container".to_owned(), name)])))
}

/// The first port of the configured range that no container publishes and nothing on
/// this host listens on.
fn free_port(s: &Session<'_, '_>, engine: &Containers) -> Result<u16, PhaseError> {
    let taken = engine.published_ports().map_err(|e| PhaseError::Retry(chain(&e)))?;
    let range = s.engine.settings.container_ports.clone();
    let free = |p: &u16| !taken.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok();
    range.clone().find(free).ok_or_else(|| {
        PhaseError::Retry(format!("no port of {}-{} is free for a new container", range.start(), range.end()))
    })
}

/// After `d`'s check through the proxy passed: stops and removes the project's other app
/// containers of the same service (the previous deployment's, and any a crash left).
/// One that cannot be removed is left to the reconciler, which removes it as a zombie.
pub(super) fn retire_previous(s: &mut Session<'_, '_>, d: &Deployment) {
    let listed = connect(s).and_then(|e| e.list().map(|l| (e, l)).map_err(|e| PhaseError::Retry(chain(&e))));
    let (engine, listed) = match listed {
        Ok(found) => found,
        Err(e) => {
            s.line(LogLevel::Warn, &format!("the old containers are left to the next apply: {e}"));
            return;
        }
    };
    let own = listed.iter().find(|c| c.name == container_name(d));
    let service = own.and_then(|c| c.label(labels::SERVICE));
    let previous = listed.iter().filter(|c| {
        c.label(labels::PROJECT) == Some(d.project.as_str())
            && c.label(labels::ROLE).unwrap_or("app") == "app"
            && c.label(labels::DEPLOYMENT) != Some(d.id.as_str())
            && c.label(labels::SERVICE) == service
    });
    for c in previous {
        let of = c.label(labels::DEPLOYMENT).unwrap_or("?");
        match engine.remove_container(&c.id, &c.name) {
            Ok(()) => s.line(LogLevel::Info, &format!("stopped and removed `{}`, the container of `{of}`", c.name)),
            Err(e) => s.line(
                LogLevel::Warn,
                &format!("cannot remove `{}` (the next apply removes it): {}", c.name, chain(&e)),
            ),
        }
    }
}

/// After `d` failed: removes its own container, so only the previous one serves.
pub(super) fn remove_own(s: &mut Session<'_, '_>, d: &Deployment) {
    let Ok(engine) = connect(s) else { return };
    let name = container_name(d);
    if let Ok(Some(c)) = engine.find(&name)
        && c.label(labels::DEPLOYMENT) == Some(d.id.as_str())
    {
        match engine.remove_container(&c.id, &name) {
            Ok(()) => s.line(LogLevel::Warn, &format!("removed `{name}`, the failed deployment's container")),
            Err(e) => {
                s.line(LogLevel::Warn, &format!("cannot remove `{name}` (the next apply removes it): {}", chain(&e)))
            }
        }
    }
}
