//! [`Engine`]: one connection to a Docker Engine API socket, through bollard, on a
//! current-thread tokio runtime of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions, RemoveContainerOptions,
    RenameContainerOptions, StopContainerOptions,
};

use super::{ContainerError, Socket};
use crate::model::{Container, ContainerState, labels};
use crate::time::{Duration, Timestamp};
use crate::world::effects::{EffectError, old_container_name};

/// How long one API request may take, beyond a stop's own timeout.
const REQUEST_TIMEOUT_SECS: u64 = 60;

/// One connection to a container engine.
pub struct Engine {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    socket: PathBuf,
    stop_timeout: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("socket", &self.socket).finish_non_exhaustive()
    }
}

/// A container to create: what trueup sets on the containers it makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewContainer {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its labels (trueup's: [`labels`]).
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// The command, instead of the image's.
    pub cmd: Option<Vec<String>>,
    /// `(container port, loopback host port)`: the container's TCP port published on
    /// `127.0.0.1` only.
    pub publish: Option<(u16, u16)>,
}

/// A container as inspected: the model's view and what a recreate copies.
struct Inspected {
    container: Container,
    raw: ContainerInspectResponse,
}

fn not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::DockerResponseServerError { status_code: 404, .. })
}

/// 304: the container already is as asked (started, stopped).
fn not_modified(e: &ApiError) -> bool {
    matches!(e, ApiError::DockerResponseServerError { status_code: 304, .. })
}

fn failed<'a>(op: &'static str, container: &'a str) -> impl FnOnce(ApiError) -> ContainerError + 'a {
    move |e| ContainerError::Failed { op, container: container.to_owned(), source: Box::new(e) }
}

/// The model's state for the engine's status; a container being removed or stopped
/// counts as exited (it does not run), one the engine cannot name as created.
/// `status` is the engine's word for it, as the API spells it in lists and inspections.
fn state(status: &str) -> ContainerState {
    match status {
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        "dead" => ContainerState::Dead,
        "exited" | "removing" | "stopping" => ContainerState::Exited,
        _ => ContainerState::Created,
    }
}

/// The API version spoken to an engine that does not name its own: 1.41, what Podman 4
/// serves and Docker from 20.10.
const OLDEST_VERSION: &bollard::ClientVersion = &bollard::ClientVersion { major_version: 1, minor_version: 41 };

/// `GET /_ping` on the engine's socket: `Ok` when it answers 200, with the version its
/// `Api-Version` header names, if any. HTTP/1.0, so the engine closes the connection
/// after its answer, which is read whole (a few hundred bytes; at most 64 KiB).
fn ping_version(socket: &Path) -> std::io::Result<Option<bollard::ClientVersion>> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    let patience = Some(std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS));
    stream.set_read_timeout(patience)?;
    stream.set_write_timeout(patience)?;
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("`/_ping` was answered `{}`", status.trim())));
    }
    let version = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("api-version"))
        .and_then(|(_, value)| value.trim().split_once('.'))
        .and_then(|(major, minor)| {
            Some(bollard::ClientVersion { major_version: major.parse().ok()?, minor_version: minor.parse().ok()? })
        });
    Ok(version)
}

/// A name as the engine lists it (`/web`), without its slash.
fn bare(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

impl Engine {
    /// Connects to `socket` at the API version the engine says it speaks in the
    /// `Api-Version` header of its `/_ping` (as `docker version` reads it), at most
    /// bollard's own: 1.41 for Podman 4, 1.52 for Docker 29, which refuses 1.41. One short
    /// request proves the engine answers and names its version; bollard's
    /// `negotiate_version` asks `/version`, which takes Podman about 0.45 s, every command.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Unreachable`], naming the socket and what to check.
    pub fn connect(socket: &Socket, stop_timeout: Duration) -> Result<Engine, ContainerError> {
        let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| ContainerError::Unreachable {
            socket: socket.path.clone(),
            origin: socket.origin,
            source,
        };
        let version = ping_version(&socket.path).map_err(|e| unreachable(Box::new(e)))?;
        let version = match version {
            Some(v) if v > *bollard::API_DEFAULT_VERSION => *bollard::API_DEFAULT_VERSION,
            Some(v) => v,
            None => *OLDEST_VERSION,
        };
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| unreachable(Box::new(e)))?;
        let path = socket.path.to_string_lossy();
        let timeout = REQUEST_TIMEOUT_SECS + stop_timeout.secs();
        // Entering the runtime: bollard's connector needs one to be built.
        let docker = runtime
            .block_on(async { Docker::connect_with_unix(&path, timeout, &version) })
            .map_err(|e| unreachable(Box::new(e)))?;
        Ok(Engine { runtime, docker, socket: socket.path.clone(), stop_timeout })
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every container carrying trueup's project label, running or not, in one request,
    /// sorted by name. Unlabelled containers are never listed, so never touched.
    ///
    /// # Errors
    ///
    /// [`ContainerError::List`].
    pub fn list(&self) -> Result<Vec<Container>, ContainerError> {
        let filters = HashMap::from([("label".to_owned(), vec![labels::PROJECT.to_owned()])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let listed = self.runtime.block_on(self.docker.list_containers(Some(options))).map_err(|e| {
            ContainerError::List { what: "containers", socket: self.socket.clone(), source: Box::new(e) }
        })?;
        let mut out: Vec<Container> = listed
            .into_iter()
            .filter_map(|c| {
                let labels: BTreeMap<String, String> = c.labels?.into_iter().collect();
                // The filter already asked for it; an engine that ignores filters must not
                // hand trueup a container it did not create.
                labels.contains_key(labels::PROJECT).then_some(())?;
                Some(Container {
                    id: c.id?,
                    name: c.names.and_then(|n| n.first().map(|n| bare(n).to_owned())).unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    state: state(&c.state.map(|s| s.to_string()).unwrap_or_default()),
                    labels,
                    created_at: c.created.map(Timestamp::from_unix),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(out)
    }

    /// The image references the engine holds (`localhost/web:latest` and `localhost/web`
    /// both, as a deployment may name either), sorted.
    ///
    /// # Errors
    ///
    /// [`ContainerError::List`].
    pub fn images(&self) -> Result<Vec<String>, ContainerError> {
        let listed = self
            .runtime
            .block_on(self.docker.list_images(Some(ListImagesOptions::default())))
            .map_err(|e| ContainerError::List { what: "images", socket: self.socket.clone(), source: Box::new(e) })?;
        let mut out: Vec<String> = listed
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| !t.starts_with("<none>"))
            .flat_map(|t| {
                let untagged = t.strip_suffix(":latest").map(str::to_owned);
                std::iter::once(t).chain(untagged)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The loopback host ports that containers of the engine publish, trueup's or not,
    /// running or not (a stopped one takes its port back when it starts again).
    ///
    /// # Errors
    ///
    /// [`ContainerError::List`].
    pub fn published_ports(&self) -> Result<BTreeSet<u16>, ContainerError> {
        let options = ListContainersOptions { all: true, ..Default::default() };
        let listed = self.runtime.block_on(self.docker.list_containers(Some(options))).map_err(|e| {
            ContainerError::List { what: "containers", socket: self.socket.clone(), source: Box::new(e) }
        })?;
        let mut ports: BTreeSet<u16> =
            listed.iter().flat_map(|c| c.ports.iter().flatten()).filter_map(|p| p.public_port).collect();
        // The list leaves out the bindings of a container that never started: inspected.
        for c in listed.iter().filter(|c| c.ports.as_ref().is_none_or(Vec::is_empty)) {
            let Some(id) = c.id.as_deref() else { continue };
            if let Some(found) = self.inspect(id)? {
                let bindings = found.raw.host_config.and_then(|h| h.port_bindings).unwrap_or_default();
                let host_ports = bindings.into_values().flatten().flatten().filter_map(|b| b.host_port);
                ports.extend(host_ports.filter_map(|p| p.parse::<u16>().ok()));
            }
        }
        Ok(ports)
    }

    /// Pulls `image` from its registry.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Pull`] with what the engine or the registry said.
    pub fn pull(&self, image: &str) -> Result<(), ContainerError> {
        use futures_util::StreamExt as _;
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let pulled: Result<(), ApiError> = self.runtime.block_on(async {
            let mut progress = std::pin::pin!(self.docker.create_image(Some(options), None, None));
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok(())
        });
        pulled.map_err(|e| ContainerError::Pull { image: image.to_owned(), source: Box::new(e) })
    }

    /// The container with this id or name, `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn find(&self, container: &str) -> Result<Option<Container>, ContainerError> {
        Ok(self.inspect(container)?.map(|found| found.container))
    }

    /// The container with this id or name, `None` when there is none.
    fn inspect(&self, container: &str) -> Result<Option<Inspected>, ContainerError> {
        let raw = match self.runtime.block_on(self.docker.inspect_container(container, None)) {
            Ok(raw) => raw,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(failed("inspect", container)(e)),
        };
        let config = raw.config.as_ref();
        let container = Container {
            id: raw.id.clone().unwrap_or_default(),
            name: raw.name.as_deref().map(bare).unwrap_or_default().to_owned(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            state: state(&raw.state.as_ref().and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default()),
            labels: config.and_then(|c| c.labels.clone()).unwrap_or_default().into_iter().collect(),
            // Not needed by the effects, which are all that inspect; the list has it.
            created_at: None,
        };
        Ok(Some(Inspected { container, raw }))
    }

    /// Creates a container (not started) and returns its id.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn create(&self, new: &NewContainer) -> Result<String, ContainerError> {
        let host_config = new.publish.map(|(inside, host)| HostConfig {
            port_bindings: Some(HashMap::from([(
                format!("{inside}/tcp"),
                Some(vec![bollard::models::PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(host.to_string()),
                }]),
            )])),
            ..Default::default()
        });
        let body = ContainerCreateBody {
            image: Some(new.image.clone()),
            labels: Some(new.labels.clone().into_iter().collect()),
            env: (!new.env.is_empty()).then(|| new.env.clone()),
            cmd: new.cmd.clone(),
            exposed_ports: new.publish.map(|(inside, _)| vec![format!("{inside}/tcp")]),
            host_config,
            ..Default::default()
        };
        self.create_body(&new.name, body)
    }

    fn create_body(&self, name: &str, body: ContainerCreateBody) -> Result<String, ContainerError> {
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
        let created =
            self.runtime.block_on(self.docker.create_container(Some(options), body)).map_err(failed("create", name))?;
        Ok(created.id)
    }

    /// Starts a container; one that runs already is fine.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn start(&self, id: &str, name: &str) -> Result<(), ContainerError> {
        match self.runtime.block_on(self.docker.start_container(id, None)) {
            Err(e) if !not_modified(&e) => Err(failed("start", name)(e)),
            _ => Ok(()),
        }
    }

    /// Stops a container, killing it after the stop timeout; a stopped or missing one is
    /// fine.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn stop(&self, id: &str, name: &str) -> Result<(), ContainerError> {
        let t = i32::try_from(self.stop_timeout.secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(t), signal: None };
        match self.runtime.block_on(self.docker.stop_container(id, Some(options))) {
            Err(e) if !not_modified(&e) && !not_found(&e) => Err(failed("stop", name)(e)),
            _ => Ok(()),
        }
    }

    /// Renames a container.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn rename(&self, id: &str, name: &str, to: &str) -> Result<(), ContainerError> {
        let options = RenameContainerOptions { name: to.to_owned() };
        self.runtime.block_on(self.docker.rename_container(id, options)).map_err(failed("rename", name))
    }

    /// Removes a container (stopped first by [`Engine::stop`] where it matters); a missing
    /// one is fine.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Failed`] naming it.
    pub fn remove(&self, id: &str, name: &str) -> Result<(), ContainerError> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        match self.runtime.block_on(self.docker.remove_container(id, Some(options))) {
            Err(e) if !not_found(&e) => Err(failed("remove", name)(e)),
            _ => Ok(()),
        }
    }

    /// The managed container `id`, `None` when it is gone.
    fn managed(&self, id: &str, name: &str) -> Result<Option<Inspected>, EffectError> {
        let Some(found) = self.inspect(id)? else { return Ok(None) };
        if !found.container.managed() {
            return Err(EffectError::Unmanaged { id: id.to_owned(), name: name.to_owned() });
        }
        Ok(Some(found))
    }

    /// [`Effects::start_container`](crate::world::effects::Effects::start_container).
    ///
    /// # Errors
    ///
    /// [`EffectError::NoSuchContainer`], [`EffectError::Unmanaged`] or
    /// [`EffectError::Engine`].
    pub fn start_container(&self, id: &str, name: &str) -> Result<(), EffectError> {
        if self.managed(id, name)?.is_none() {
            return Err(EffectError::NoSuchContainer { id: id.to_owned(), name: name.to_owned() });
        }
        self.start(id, name)?;
        Ok(())
    }

    /// [`Effects::remove_container`](crate::world::effects::Effects::remove_container):
    /// stopped (with the stop timeout), then removed.
    ///
    /// # Errors
    ///
    /// [`EffectError::Unmanaged`] or [`EffectError::Engine`].
    pub fn remove_container(&self, id: &str, name: &str) -> Result<(), EffectError> {
        let Some(found) = self.managed(id, name)? else { return Ok(()) };
        if found.container.state != ContainerState::Exited && found.container.state != ContainerState::Created {
            self.stop(id, name)?;
        }
        self.remove(id, name)?;
        Ok(())
    }

    /// [`Effects::recreate_container`](crate::world::effects::Effects::recreate_container),
    /// in the model's sub-steps: rename the old one to `NAME.trueup-old`, stop it, create
    /// the new one (with the old one's command, environment, ports and network, and the
    /// new labels), start it, and only then remove the old one.
    ///
    /// # Errors
    ///
    /// [`EffectError::NameTaken`], [`EffectError::Unmanaged`] or [`EffectError::Engine`].
    pub fn recreate_container(
        &self,
        id: &str,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EffectError> {
        // A container other than the old one that holds the name is ours from a previous
        // (maybe crashed) run when it matches, else someone else's: checked first.
        let holder = self.inspect(name)?.map(|h| h.container).filter(|h| h.id != id);
        if let Some(h) = &holder
            && (!h.managed() || h.image != image || h.labels != *labels)
        {
            return Err(EffectError::NameTaken { name: name.to_owned(), id: h.id.clone() });
        }
        let old = self.managed(id, name)?;
        if let Some(old) = &old {
            let aside = old_container_name(name);
            if old.container.name != aside {
                // A container already aside is ours from an earlier recreate that a crash
                // cut short, or someone else's, which is never touched.
                if let Some(there) = self.inspect(&aside)?.map(|a| a.container) {
                    if !there.managed() {
                        return Err(EffectError::NameTaken { name: aside, id: there.id });
                    }
                    self.remove(&there.id, &aside)?;
                }
                self.rename(id, name, &aside)?;
            }
            if old.container.state != ContainerState::Exited && old.container.state != ContainerState::Created {
                self.stop(id, &aside)?;
            }
        }
        let new_id = match holder {
            Some(h) => h.id,
            None => {
                let mut body = old.as_ref().map(|o| copied(o.raw.clone())).unwrap_or_default();
                body.image = Some(image.to_owned());
                body.labels = Some(labels.clone().into_iter().collect());
                self.create_body(name, body)?
            }
        };
        self.start(&new_id, name)?;
        if let Some(found) = self.inspect(&new_id)?
            && found.container.state != ContainerState::Running
        {
            // Exited at once: the old one is kept, so the next run tries again.
            let source = format!("it is {:?} right after its start", found.container.state).to_lowercase();
            return Err(
                ContainerError::Failed { op: "start", container: name.to_owned(), source: source.into() }.into()
            );
        }
        if old.is_some() {
            self.remove(id, &old_container_name(name))?;
        }
        Ok(())
    }
}

/// What a recreated container keeps of the one it replaces: how it runs and where it
/// listens, not what the engine filled in on its own.
fn copied(raw: ContainerInspectResponse) -> ContainerCreateBody {
    let config = raw.config.unwrap_or_default();
    let host = raw.host_config.unwrap_or_default();
    ContainerCreateBody {
        env: config.env,
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        working_dir: config.working_dir.filter(|w| !w.is_empty()),
        user: config.user.filter(|u| !u.is_empty()),
        exposed_ports: config.exposed_ports,
        stop_signal: config.stop_signal,
        host_config: Some(HostConfig {
            port_bindings: host.port_bindings,
            network_mode: host.network_mode,
            binds: host.binds,
            restart_policy: host.restart_policy,
            extra_hosts: host.extra_hosts,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::world::containers::Origin;

    /// Serves one request on `socket`, answering it with the status and header line
    /// `answer` gives for its path; returns the path asked, once served.
    fn engine(socket: &Path, answer: fn(&str) -> (u16, &'static str)) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            let (status, header) = answer(&path);
            let reply = format!("HTTP/1.1 {status} X\r\n{header}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
            reader.get_mut().write_all(reply.as_bytes()).unwrap();
            path
        })
    }

    /// The version of a client connected to an engine whose answer to `/_ping` is
    /// `answer`'s.
    fn spoken(name: &str, answer: fn(&str) -> (u16, &'static str)) -> Result<bollard::ClientVersion, ContainerError> {
        let dir = crate::test_dir::TestDir::new(&format!("engine-{name}"));
        let socket = dir.join("engine.sock");
        let served = engine(&socket, answer);
        let engine = Engine::connect(&Socket { path: socket, origin: Origin::Flag }, Duration::from_secs(1));
        assert_eq!(served.join().unwrap(), "/_ping", "one request, whatever the answer");
        engine.map(|e| e.docker.client_version())
    }

    #[test]
    fn the_engine_is_spoken_to_at_the_version_its_ping_names_at_most_bollards() {
        let version = |minor| bollard::ClientVersion { major_version: 1, minor_version: minor };
        assert_eq!(spoken("podman", |_| (200, "Api-Version: 1.41")).unwrap(), version(41));
        assert_eq!(spoken("docker-29", |_| (200, "api-version: 1.52")).unwrap(), version(52));
        assert_eq!(spoken("newer", |_| (200, "Api-Version: 1.99")).unwrap(), *bollard::API_DEFAULT_VERSION);
        assert_eq!(spoken("unnamed", |_| (200, "Server: x")).unwrap(), version(41));
        assert_eq!(spoken("odd", |_| (200, "Api-Version: one")).unwrap(), version(41));
        let err = spoken("refuses", |_| (500, "Server: x")).unwrap_err();
        assert!(matches!(err, ContainerError::Unreachable { .. }), "{err}");
        assert!(format!("{err:?}").contains("500"), "{err:?}");
    }
}
