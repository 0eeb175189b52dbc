//! The container engine: trueup's containers through a Docker Engine API socket (Docker,
//! or Podman's compatible service), reached with `bollard`.
//!
//! [`locate`] decides which socket to use, from `--container-socket`, then `DOCKER_HOST`,
//! then the usual sockets when one is present ([`DEFAULT_SOCKETS`]); none at all means no
//! container engine, and the plan says once that containers are not checked. An
//! [`Engine`] is one connection: it lists trueup's containers (those carrying the project
//! label, in one call per observation), lists images, and creates, starts, stops, renames
//! and removes containers. Its [`Engine::start_container`], [`Engine::recreate_container`]
//! and [`Engine::remove_container`] are the container half of
//! [`Effects`](super::effects::Effects): idempotent, and refusing any container without
//! trueup's labels.
//!
//! The library is synchronous: each engine owns a small current-thread tokio runtime and
//! blocks on it, so no caller sees async code. Without the `containers` feature there is
//! no bollard, tokio or hyper in the build: [`Engine`] is then a type with no values, and
//! connecting to a configured socket fails with [`ContainerError::NotBuilt`].
//!
//! This module decides nothing: what to start, recreate or remove is [`crate::plan`]'s.

use std::path::{Path, PathBuf};

use crate::time::Duration;
use crate::world::effects::BoxError;

#[cfg(feature = "containers")]
mod engine;
#[cfg(feature = "containers")]
pub use engine::{Engine, NewContainer};

/// The sockets looked for when neither `--container-socket` nor `DOCKER_HOST` names one:
/// Podman's system service, then Docker's.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/podman/podman.sock", "/var/run/docker.sock"];

/// The `--container-socket` value that turns the container engine off.
pub const NO_SOCKET: &str = "none";

/// Where the socket in use came from, for messages that say what to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--container-socket` (or `TRUEUP_CONTAINER_SOCKET`).
    Flag,
    /// The `DOCKER_HOST` environment variable.
    DockerHost,
    /// One of [`DEFAULT_SOCKETS`], found present.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Flag => "`--container-socket`",
            Origin::DockerHost => "`DOCKER_HOST`",
            Origin::Default => "the default sockets",
        })
    }
}

/// The socket of a container engine, and where it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// The socket file.
    pub path: PathBuf,
    /// Who named it.
    pub origin: Origin,
}

/// How trueup reaches the container engine, and how its container rules behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The engine's socket; `None`: no engine, containers are not checked.
    pub socket: Option<Socket>,
    /// How long a container may take to stop before the engine kills it.
    pub stop_timeout: Duration,
    /// How old a helper container of a running deployment may grow before it is removed.
    pub helper_max_age: Duration,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            socket: None,
            stop_timeout: Duration::from_secs(10),
            helper_max_age: crate::plan::HELPER_MAX_AGE,
        }
    }
}

/// Why the container engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A socket was named in a form other than a unix socket.
    #[error(
        "{origin} is `{value}`, which is not a unix socket: trueup reaches container engines through a \
         socket file (`/run/podman/podman.sock` or `unix:///run/podman/podman.sock`)"
    )]
    NotUnix {
        /// What was given.
        value: String,
        /// Where it was given.
        origin: Origin,
    },
    /// The socket cannot be reached, or does not answer as a Docker Engine API.
    #[error(
        "cannot reach the container engine at `{}` (named by {origin}): check that the file exists, that its \
         service runs (`podman system service`, `systemctl start podman.socket` or `docker.service`) and that \
         this user may open it; `--container-socket none` checks no containers",
        socket.display()
    )]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// Who named it.
        origin: Origin,
        /// What the client said.
        #[source]
        source: BoxError,
    },
    /// A socket is configured, but this build has no container adapter.
    #[error(
        "a container engine is configured (`{}`, named by {origin}) but this trueup was built without its \
         `containers` feature; pass `--container-socket none` to check no containers",
        socket.display()
    )]
    NotBuilt {
        /// The socket.
        socket: PathBuf,
        /// Who named it.
        origin: Origin,
    },
    /// The engine could not list containers or images.
    #[error("cannot list the {what} of the container engine at `{}`", socket.display())]
    List {
        /// `containers` or `images`.
        what: &'static str,
        /// The socket.
        socket: PathBuf,
        /// What the engine said.
        #[source]
        source: BoxError,
    },
    /// An image could not be pulled.
    #[error("cannot pull image `{image}`")]
    Pull {
        /// The image.
        image: String,
        /// What the engine or the registry said.
        #[source]
        source: BoxError,
    },
    /// An operation on one container failed.
    #[error("cannot {op} container `{container}`")]
    Failed {
        /// `create`, `start`, `stop`, `rename`, `remove` or `inspect`.
        op: &'static str,
        /// The container's name (or id, when its name is not known).
        container: String,
        /// What the engine said.
        #[source]
        source: BoxError,
    },
}

/// The socket to use: `flag` (`--container-socket`; [`NO_SOCKET`] for none), else
/// `docker_host` (`DOCKER_HOST`), else the first of `defaults` that exists, else `None`;
/// an empty value counts as not given.
/// A socket named by the flag or `DOCKER_HOST` is returned whether or not it exists:
/// connecting to it then says what is wrong.
///
/// # Errors
///
/// [`ContainerError::NotUnix`] for a `tcp://`, `ssh://` or other non-unix address.
pub fn locate(
    flag: Option<&str>,
    docker_host: Option<&str>,
    defaults: &[&Path],
) -> Result<Option<Socket>, ContainerError> {
    let named = |value: &str, origin| {
        if let Some(path) = value.strip_prefix("unix://") {
            return Ok(Socket { path: path.into(), origin });
        }
        if value.contains("://") || value.is_empty() {
            return Err(ContainerError::NotUnix { value: value.to_owned(), origin });
        }
        Ok(Socket { path: value.into(), origin })
    };
    // An empty value (`TRUEUP_CONTAINER_SOCKET=`) names nothing, as an empty `DOCKER_HOST`.
    match (flag.filter(|f| !f.is_empty()), docker_host) {
        (Some(NO_SOCKET), _) => Ok(None),
        (Some(flag), _) => named(flag, Origin::Flag).map(Some),
        (None, Some(host)) if !host.is_empty() => named(host, Origin::DockerHost).map(Some),
        _ => {
            Ok(defaults.iter().find(|p| p.exists()).map(|p| Socket { path: p.to_path_buf(), origin: Origin::Default }))
        }
    }
}

/// True when `image` names the registry it comes from (`registry.example.com/app:1`,
/// `host:5000/app`): only such an image is pulled when the engine does not hold it. A
/// bare name (`app`, `library/app`) or `localhost/...` is one the engine must hold
/// already, since trueup pulls from no default registry.
pub fn names_registry(image: &str) -> bool {
    match image.split_once('/') {
        Some((host, _)) => host != "localhost" && (host.contains('.') || host.contains(':')),
        None => false,
    }
}

/// Without the `containers` feature: an engine that cannot exist.
#[cfg(not(feature = "containers"))]
#[derive(Debug)]
pub enum Engine {}

#[cfg(not(feature = "containers"))]
impl Engine {
    /// Always [`ContainerError::NotBuilt`]: this build has no container adapter.
    ///
    /// # Errors
    ///
    /// [`ContainerError::NotBuilt`].
    pub fn connect(socket: &Socket, _stop_timeout: Duration) -> Result<Engine, ContainerError> {
        Err(ContainerError::NotBuilt { socket: socket.path.clone(), origin: socket.origin })
    }

    /// Unreachable: there is no engine.
    ///
    /// # Errors
    ///
    /// Never.
    pub fn list(&self) -> Result<Vec<crate::model::Container>, ContainerError> {
        match *self {}
    }

    /// Unreachable: there is no engine.
    ///
    /// # Errors
    ///
    /// Never.
    pub fn images(&self) -> Result<Vec<String>, ContainerError> {
        match *self {}
    }

    /// Unreachable: there is no engine.
    ///
    /// # Errors
    ///
    /// Never.
    pub fn start_container(&self, _id: &str, _name: &str) -> Result<(), super::effects::EffectError> {
        match *self {}
    }

    /// Unreachable: there is no engine.
    ///
    /// # Errors
    ///
    /// Never.
    pub fn recreate_container(
        &self,
        _id: &str,
        _name: &str,
        _image: &str,
        _labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), super::effects::EffectError> {
        match *self {}
    }

    /// Unreachable: there is no engine.
    ///
    /// # Errors
    ///
    /// Never.
    pub fn remove_container(&self, _id: &str, _name: &str) -> Result<(), super::effects::EffectError> {
        match *self {}
    }
}

/// Connects to the engine `cfg` names, if it names one.
///
/// # Errors
///
/// [`ContainerError::Unreachable`] or [`ContainerError::NotBuilt`].
pub fn connect(cfg: &ContainerConfig) -> Result<Option<Engine>, ContainerError> {
    cfg.socket.as_ref().map(|socket| Engine::connect(socket, cfg.stop_timeout)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_image_that_names_its_registry_is_pulled() {
        for (image, pulled) in [
            ("registry.example.com/app:1", true),
            ("host:5000/team/app", true),
            ("localhost/trueup-web", false),
            ("library/nginx", false),
            ("nginx:1.27", false),
        ] {
            assert_eq!(names_registry(image), pulled, "{image}");
        }
    }

    #[test]
    fn the_socket_comes_from_the_flag_then_docker_host_then_the_defaults() {
        let missing = Path::new("/nonexistent/trueup.sock");
        let present = Path::new("/");
        let s = |path: &str, origin| Some(Socket { path: path.into(), origin });
        assert_eq!(locate(Some("/a.sock"), Some("unix:///b.sock"), &[present]).unwrap(), s("/a.sock", Origin::Flag));
        assert_eq!(locate(Some("unix:///a.sock"), None, &[]).unwrap(), s("/a.sock", Origin::Flag));
        assert_eq!(locate(Some("none"), Some("unix:///b.sock"), &[present]).unwrap(), None);
        assert_eq!(locate(None, Some("unix:///b.sock"), &[present]).unwrap(), s("/b.sock", Origin::DockerHost));
        assert_eq!(locate(None, Some(""), &[missing, present]).unwrap(), s("/", Origin::Default));
        assert_eq!(locate(Some(""), Some("/b.sock"), &[]).unwrap(), s("/b.sock", Origin::DockerHost));
        assert_eq!(locate(None, None, &[missing]).unwrap(), None);
        let err = locate(None, Some("tcp://10.0.0.1:2375"), &[present]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`DOCKER_HOST` is `tcp://10.0.0.1:2375`, which is not a unix socket: trueup reaches container engines \
             through a socket file (`/run/podman/podman.sock` or `unix:///run/podman/podman.sock`)"
        );
    }
}
