//! The deployment engine: what a PaaS embeds to run deployments through their phases.
//!
//! [`Engine::create`] queues a deployment (creating its project on first use),
//! [`Engine::fire`] sends it an event the spec must accept in its phase,
//! [`Engine::heartbeat`] records a sign of life, [`Engine::logs`] reads its log, and
//! [`Engine::run`] (in [`run`]) takes its claim and drives it from its phase to the end,
//! each phase by the executor its spec's `run:` names (see [`crate::phases`]).
//!
//! Every phase change is one transaction: phase, `phase_updated_at`, attempts and a log
//! row ([`Store::advance`]). A running deployment holds a claim that names its worker's
//! process; on the same host a claim whose process is gone is dead at once, so the
//! reconciler resumes the deployment right after a kill -9.
//!
//! The engine reads its [`Settings`] from the state database (`trueup init` writes them);
//! each deployment's own options are stored with it ([`crate::model::Source`]), so a
//! resume runs it exactly as first asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::machine::{self, StepError};
use crate::model::{Deployment, DeploymentType, LogEntry, LogLevel, Process, Source, valid_id, valid_project_id};
use crate::spec::{Guard, Specs};
use crate::store::{Store, StoreError};
use crate::time::{Duration, Timestamp};

#[cfg(feature = "containers")]
mod image;
pub mod run;
mod steps;

pub use run::{Control, Ended, Report};

/// What every command reads from the state database, written by `trueup init` (flags
/// override each one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Traefik's HTTP entrypoint, `HOST:PORT`: health checks go through it.
    pub proxy: Option<String>,
    /// The base domain: a project without its own domain answers on `PROJECT.DOMAIN`.
    pub domain: String,
    /// The static web server whose document root is the managed root and that follows
    /// links (`http://127.0.0.1:8081`): a site is served from `/webroot/PROJECT` there.
    pub webroot_upstream: Option<String>,
    /// How long a build may run.
    pub build_timeout: Duration,
    /// How long a worker's claim lasts between heartbeats.
    pub claim_ttl: Duration,
    /// How long one health check attempt retries before it gives up.
    pub health_timeout: Duration,
    /// The loopback host ports an image deployment's container may be given, one per
    /// container, so an old and a new one run side by side during the switch.
    pub container_ports: std::ops::RangeInclusive<u16>,
}

/// The default of [`Settings::container_ports`].
pub const CONTAINER_PORTS: std::ops::RangeInclusive<u16> = 20000..=20999;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy: None,
            domain: "localhost".to_owned(),
            webroot_upstream: None,
            build_timeout: Duration::from_secs(30 * 60),
            claim_ttl: Duration::from_secs(60),
            health_timeout: Duration::from_secs(30),
            container_ports: CONTAINER_PORTS,
        }
    }
}

/// The keys of [`Settings`] in the `settings` table.
pub const SETTING_KEYS: [&str; 7] =
    ["proxy", "domain", "webroot_upstream", "build_timeout", "claim_ttl", "health_timeout", "container_ports"];

impl Settings {
    /// The settings recorded in `map` over the defaults.
    ///
    /// # Errors
    ///
    /// [`EngineError::Setting`] naming a key whose value does not read.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, EngineError> {
        let mut s = Settings::default();
        for (key, value) in map {
            s.set(key, value)?;
        }
        Ok(s)
    }

    /// Sets one setting from its text.
    ///
    /// # Errors
    ///
    /// [`EngineError::Setting`] for an unknown key or a value that does not read.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), EngineError> {
        let bad =
            |why: &str| EngineError::Setting { key: key.to_owned(), value: value.to_owned(), why: why.to_owned() };
        let duration = |max: u64| -> Result<Duration, EngineError> {
            let d: Duration = value.parse().map_err(|_| bad("not a duration such as `90s`, `30m` or `1h`"))?;
            if d.secs() == 0 || d.secs() > max {
                return Err(bad(&format!("must be between 1s and {}", Duration::from_secs(max))));
            }
            Ok(d)
        };
        match key {
            "proxy" => {
                if value.parse::<std::net::SocketAddr>().is_err() {
                    return Err(bad("not an address such as `127.0.0.1:8080`"));
                }
                self.proxy = Some(value.to_owned());
            }
            "domain" => {
                if !crate::world::routes::valid_domain(value) {
                    return Err(bad("not a host name"));
                }
                value.clone_into(&mut self.domain);
            }
            "webroot_upstream" => {
                if !crate::world::routes::valid_upstream(value) || value.trim_end_matches('/').matches('/').count() > 2
                {
                    return Err(bad("not an http URL without a path, such as `http://127.0.0.1:8081`"));
                }
                self.webroot_upstream = Some(value.trim_end_matches('/').to_owned());
            }
            "build_timeout" => self.build_timeout = duration(24 * 3600)?,
            "claim_ttl" => self.claim_ttl = duration(3600)?,
            "health_timeout" => self.health_timeout = duration(3600)?,
            "container_ports" => {
                let range =
                    value.split_once('-').and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
                match range {
                    Some((first, last)) if 1024 <= first && first <= last => self.container_ports = first..=last,
                    _ => return Err(bad("not a range of ports above 1023 such as `20000-20999`")),
                }
            }
            _ => return Err(bad(&format!("unknown setting; the settings are {}", SETTING_KEYS.join(", ")))),
        }
        Ok(())
    }

    /// Every setting as text, as the `settings` table keeps them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::from([
            ("domain".to_owned(), self.domain.clone()),
            ("build_timeout".to_owned(), self.build_timeout.to_string()),
            ("claim_ttl".to_owned(), self.claim_ttl.to_string()),
            ("health_timeout".to_owned(), self.health_timeout.to_string()),
            ("container_ports".to_owned(), format!("{}-{}", self.container_ports.start(), self.container_ports.end())),
        ]);
        if let Some(p) = &self.proxy {
            map.insert("proxy".to_owned(), p.clone());
        }
        if let Some(u) = &self.webroot_upstream {
            map.insert("webroot_upstream".to_owned(), u.clone());
        }
        map
    }
}

/// Why the engine refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting does not read.
    #[error("setting `{key}` = `{value}`: {why}")]
    Setting {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A project name that is not a plain name.
    #[error(
        "project `{0}` is not a plain name: use letters, digits, `-`, `_` and `.`, not starting with `.`, and not `webroot`, `deployments` or `current`"
    )]
    BadProject(String),
    /// A deployment's options do not make sense.
    #[error("{0}")]
    BadOptions(String),
    /// The spec does not accept the event in the deployment's phase.
    #[error("deployment `{deployment}` is in {phase}, which does not accept event `{event}`; it accepts {accepted}")]
    IllegalEvent {
        /// The deployment.
        deployment: String,
        /// Its phase.
        phase: String,
        /// The event.
        event: String,
        /// What the phase accepts, listed.
        accepted: String,
    },
    /// The deployment's phase is not a state of its spec.
    #[error("deployment `{deployment}` is in `{phase}`, which its spec does not know")]
    UnknownPhase {
        /// The deployment.
        deployment: String,
        /// Its phase.
        phase: String,
    },
    /// A live worker holds the deployment.
    #[error("deployment `{deployment}` is held by worker `{owner}` until {until}; it is running elsewhere")]
    Held {
        /// The deployment.
        deployment: String,
        /// Who holds it.
        owner: String,
        /// Until when.
        until: Timestamp,
    },
}

/// The worker this process is: its claim owner name and its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The owner name its claims carry: unique per process (`trueup-HOST-PID-START`).
    pub owner: String,
    /// Its host, process id and start time.
    pub process: Process,
}

impl Worker {
    /// This process as a worker.
    pub fn this() -> Self {
        let process = crate::host::this_process();
        let owner = format!("trueup-{}-{}-{}", process.host, process.pid, process.started.unwrap_or_default());
        Worker { owner, process }
    }
}

/// What [`Engine::create`] needs to queue a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    /// The project (created on first use).
    pub project: String,
    /// Upload, git or image.
    pub kind: DeploymentType,
    /// Its source and options.
    pub source: Source,
}

/// The engine over one state database, root and routes folder.
#[derive(Debug)]
pub struct Engine<'a> {
    /// The state database.
    pub store: &'a Store,
    /// The spec of each deployment type.
    pub specs: &'a Specs,
    /// The managed root.
    pub root: PathBuf,
    /// Traefik's dynamic-configuration folder.
    pub routes_dir: PathBuf,
    /// The settings.
    pub settings: Settings,
    /// Who this worker is.
    pub worker: Worker,
    /// The container engine image deployments run on (none: they fail saying so).
    pub containers: crate::world::containers::ContainerConfig,
}

impl Engine<'_> {
    /// Queues a new deployment in its spec's initial phase, creating its project on first
    /// use, and returns it.
    ///
    /// # Errors
    ///
    /// [`EngineError::BadProject`] for a project name that is not a plain name;
    /// [`EngineError::BadOptions`] for options that do not fit its type;
    /// [`EngineError::Store`].
    pub fn create(&self, new: &NewDeployment, now: Timestamp) -> Result<Deployment, EngineError> {
        check(new)?;
        let spec = self.specs.of_type(new.kind);
        let id = new_id(now);
        let phase = spec.name(spec.leaf_of(spec.initial)).to_owned();
        let d = Deployment {
            id: id.clone(),
            project: new.project.clone(),
            service: None,
            kind: new.kind,
            phase: phase.clone(),
            phase_updated_at: Some(now),
            heartbeat_at: None,
            attempts: 0,
            finished_at: None,
            source: new.source.clone(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: Some(now),
        };
        let log = LogEntry {
            deployment: id,
            at: now,
            level: LogLevel::Info,
            phase: Some(phase.clone()),
            message: format!("queued in {phase}"),
            metadata: BTreeMap::new(),
        };
        self.store.enqueue(&d, None, &log)?;
        Ok(d)
    }

    /// Fires `event` on deployment `id`: the spec must accept it in the deployment's
    /// phase. A deployment a live worker holds is refused (stop that worker first).
    /// Returns the phase it moved to.
    ///
    /// # Errors
    ///
    /// [`EngineError::IllegalEvent`] naming the events the phase accepts;
    /// [`EngineError::Held`]; [`EngineError::UnknownPhase`]; [`EngineError::Store`].
    pub fn fire(&self, id: &str, event: &str, now: Timestamp) -> Result<String, EngineError> {
        let d = self.store.deployment(id)?;
        let spec = self.specs.of(&d);
        let state = spec
            .find(&d.phase)
            .ok_or_else(|| EngineError::UnknownPhase { deployment: d.id.clone(), phase: d.phase.clone() })?;
        let guards = |g: Guard| guard(spec, &d, g);
        let t = machine::step(spec, state, event, &guards).map_err(|e| match e {
            StepError::Unhandled { accepted, .. } => EngineError::IllegalEvent {
                deployment: d.id.clone(),
                phase: d.phase.clone(),
                event: event.to_owned(),
                accepted: if accepted.is_empty() {
                    "none: it is final".to_owned()
                } else {
                    accepted.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
                },
            },
            other => EngineError::BadOptions(other.to_string()),
        })?;
        let _claim = self.hold(&d, now)?;
        let to = spec.name(t.target).to_owned();
        let attempts = if t.target == state { d.attempts + 1 } else { 0 };
        let log = LogEntry {
            deployment: d.id.clone(),
            at: now,
            level: LogLevel::Info,
            phase: Some(d.phase.clone()),
            message: format!("event `{event}`: {} -> {to}", d.phase),
            metadata: BTreeMap::from([("event".to_owned(), event.to_owned())]),
        };
        let advance = crate::store::Advance {
            phase: &to,
            at: now,
            attempts,
            finished: spec.is_final(t.target),
            metadata: &BTreeMap::new(),
            log: &log,
        };
        self.store.advance(crate::store::Fence::Claim { owner: &self.worker.owner }, &d.id, &advance)?;
        Ok(to)
    }

    /// Records a heartbeat of deployment `id`, for a worker that runs it outside trueup:
    /// its `stuck_after` counts from now. A deployment held by a live trueup worker is
    /// refused (that worker heartbeats it itself).
    ///
    /// # Errors
    ///
    /// [`EngineError::Held`]; [`EngineError::Store`].
    pub fn heartbeat(&self, id: &str, now: Timestamp) -> Result<(), EngineError> {
        let d = self.store.deployment(id)?;
        let _claim = self.hold(&d, now)?;
        self.store.heartbeat(crate::store::Fence::Claim { owner: &self.worker.owner }, id, now)?;
        Ok(())
    }

    /// Deployment `id`'s log, oldest first.
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`], with [`StoreError::UnknownDeployment`] for an unknown id.
    pub fn logs(&self, id: &str) -> Result<Vec<LogEntry>, EngineError> {
        self.store.deployment(id)?;
        Ok(self.store.logs(id)?)
    }

    /// Claims `d` for this worker for a moment, taking over a dead worker's claim.
    fn hold(&self, d: &Deployment, now: Timestamp) -> Result<Hold<'_>, EngineError> {
        let dead = d.owner.as_ref().filter(|c| self.is_dead(c)).map(|c| c.owner.as_str());
        let until = now.plus(self.settings.claim_ttl);
        if !self.store.claim_for(&d.id, &self.worker.owner, &self.worker.process, now, until, dead)? {
            let current = self.store.deployment(&d.id)?;
            return Err(match current.owner {
                Some(c) => EngineError::Held { deployment: d.id.clone(), owner: c.owner, until: c.until },
                None => EngineError::BadOptions(format!("deployment `{}` is finished ({})", d.id, current.phase)),
            });
        }
        Ok(Hold { store: self.store, id: d.id.clone(), owner: &self.worker.owner })
    }

    /// Whether `claim`'s worker is known to be gone.
    fn is_dead(&self, claim: &crate::model::Claim) -> bool {
        claim.process.as_ref().is_some_and(|p| crate::host::is_gone(p, &self.worker.process.host))
    }

    /// Where deployment `id`'s source is pulled and built.
    pub fn work_dir(&self, id: &str) -> PathBuf {
        work_dir(&self.root, id)
    }
}

/// Where deployment `id`'s source is pulled and built: `ROOT/.trueup/work/ID` (a name
/// that is never a project).
pub fn work_dir(root: &Path, id: &str) -> PathBuf {
    root.join(".trueup").join("work").join(id)
}

/// A claim held for the length of one call; released when dropped.
struct Hold<'a> {
    store: &'a Store,
    id: String,
    owner: &'a str,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let _ = self.store.release_claim(&self.id, self.owner);
    }
}

/// A guard of `spec`, answered for `d`.
fn guard(spec: &crate::spec::Spec, d: &Deployment, g: Guard) -> bool {
    match g {
        Guard::AttemptsRemaining => {
            let max = spec.find(&d.phase).and_then(|s| spec.state(s).max_attempts);
            max.is_none_or(|m| d.attempts < m)
        }
        // The engine asks this of a deployment it runs: a previous release is one the
        // project had live before; the runner's rollback decides by itself.
        Guard::HasPreviousRelease => false,
        Guard::IsImageDeployment => d.kind == DeploymentType::Image,
    }
}

/// Checks a deployment before it is queued: a plain project name, options that fit its
/// type, an upload that exists. [`Engine::create`] checks the same; a caller may check
/// first, before it opens (or creates) anything.
///
/// # Errors
///
/// [`EngineError::BadProject`]; [`EngineError::BadOptions`].
pub fn check(new: &NewDeployment) -> Result<(), EngineError> {
    if !valid_project_id(&new.project) {
        return Err(EngineError::BadProject(new.project.clone()));
    }
    check_options(new)
}

/// Checks that `new`'s options fit its type.
fn check_options(new: &NewDeployment) -> Result<(), EngineError> {
    let s = &new.source;
    let bad = |m: String| Err(EngineError::BadOptions(m));
    match new.kind {
        DeploymentType::Upload => match &s.file_path {
            None => return bad("an upload deployment needs `--source PATH` (a folder or a .tar.gz)".to_owned()),
            Some(p) if !p.is_absolute() => {
                return bad(format!("the upload `{}` must be an absolute path", p.display()));
            }
            Some(p) if !p.exists() => return bad(format!("the upload `{}` does not exist", p.display())),
            Some(_) => {}
        },
        DeploymentType::Git => {
            if s.repo.as_deref().is_none_or(str::is_empty) {
                return bad("a git deployment needs `--source REPOSITORY` (a path or a file:// URL)".to_owned());
            }
        }
        DeploymentType::Image => {
            match s.image.as_deref() {
                None | Some("") => return bad("an image deployment needs `--image NAME`".to_owned()),
                Some(i) if i.starts_with('-') || i.bytes().any(|b| !b.is_ascii_graphic()) => {
                    return bad(format!("the image `{}` is not an image reference", i.escape_debug()));
                }
                Some(_) => {}
            }
            if s.build.is_some() || s.output.is_some() {
                return bad(
                    "an image deployment has nothing to build: `--build` and `--output` are for sources".to_owned()
                );
            }
        }
    }
    if let Some(out) = &s.output {
        let p = Path::new(out);
        if p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return bad(format!("the output folder `{out}` must be a plain relative path inside the source"));
        }
    }
    if let Some(h) = &s.health_path
        && (!h.starts_with('/') || h.bytes().any(|b| !b.is_ascii_graphic()))
    {
        return bad(format!("the health path `{}` must start with `/` and hold no spaces", h.escape_debug()));
    }
    if let Some(r) = &s.git_ref
        && (r.is_empty() || r.starts_with('-') || r.bytes().any(|b| !b.is_ascii_graphic()))
    {
        return bad(format!("the git ref `{}` is not a branch, tag or commit name", r.escape_debug()));
    }
    Ok(())
}

/// A new deployment id: the instant, then random hex, so ids sort by creation and never
/// collide across processes.
fn new_id(now: Timestamp) -> String {
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map(|()| u32::from_le_bytes(bytes))
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            nanos.subsec_nanos() ^ std::process::id()
        });
    let id = format!("d{}-{random:08x}", now.compact());
    debug_assert!(valid_id(&id));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_back_and_refuse_what_does_not_read() {
        let mut s = Settings::default();
        assert_eq!((s.domain.as_str(), s.build_timeout.secs(), s.claim_ttl.secs()), ("localhost", 1800, 60));
        s.set("proxy", "127.0.0.1:8080").unwrap();
        s.set("webroot_upstream", "http://127.0.0.1:8081/").unwrap();
        s.set("domain", "example.org").unwrap();
        s.set("build_timeout", "2m").unwrap();
        s.set("claim_ttl", "30s").unwrap();
        s.set("health_timeout", "1h").unwrap();
        s.set("container_ports", "30000-30009").unwrap();
        assert_eq!(s.container_ports, 30000..=30009);
        assert_eq!(s.webroot_upstream.as_deref(), Some("http://127.0.0.1:8081"), "a trailing slash is dropped");
        assert_eq!(Settings::from_map(&s.to_map()).unwrap(), s, "what is recorded reads back the same");
        let refused = [
            ("proxy", "localhost", "not an address"),
            ("domain", "a b", "not a host name"),
            ("webroot_upstream", "http://127.0.0.1:8081/x", "without a path"),
            ("webroot_upstream", "ftp://x", "without a path"),
            ("build_timeout", "soon", "not a duration"),
            ("build_timeout", "0s", "between 1s and 1d"),
            ("build_timeout", "2d", "between 1s and 1d"),
            ("claim_ttl", "2h", "between 1s and 1h"),
            ("health_timeout", "0s", "between 1s and 1h"),
            ("container_ports", "20000", "not a range of ports"),
            ("container_ports", "20010-20000", "not a range of ports"),
            ("container_ports", "80-90", "not a range of ports above 1023"),
            ("colour", "red", "unknown setting; the settings are proxy, domain"),
        ];
        for (key, value, why) in refused {
            let err = Settings::default().set(key, value).unwrap_err().to_string();
            assert!(err.starts_with(&format!("setting `{key}` = `{value}`: ")) && err.contains(why), "{err}");
        }
        // The edges are allowed.
        let mut edge = Settings::default();
        edge.set("build_timeout", "1d").unwrap();
        edge.set("claim_ttl", "1h").unwrap();
        edge.set("health_timeout", "1s").unwrap();
        assert_eq!((edge.build_timeout.secs(), edge.claim_ttl.secs(), edge.health_timeout.secs()), (86_400, 3600, 1));
        assert!(!Settings::default().to_map().contains_key("proxy"), "an unset address is not recorded");
    }

    fn upload(project: &str, source: Source) -> NewDeployment {
        NewDeployment { project: project.to_owned(), kind: DeploymentType::Upload, source }
    }

    #[test]
    fn a_deployment_is_checked_before_it_is_queued() {
        let here = Source { file_path: Some(std::env::current_dir().unwrap()), ..Source::default() };
        check(&upload("blog", here.clone())).unwrap();
        let err = |new: NewDeployment| check(&new).unwrap_err().to_string();
        for project in ["a/b", "webroot", ".hidden", "", "current"] {
            assert!(err(upload(project, here.clone())).contains("is not a plain name"), "{project}");
        }
        assert!(err(upload("blog", Source::default())).contains("needs `--source PATH`"));
        let relative = Source { file_path: Some("site".into()), ..Source::default() };
        assert!(err(upload("blog", relative)).contains("must be an absolute path"));
        let gone = Source { file_path: Some("/no/such/upload".into()), ..Source::default() };
        assert!(err(upload("blog", gone)).contains("`/no/such/upload` does not exist"));
        let git = |source| NewDeployment { project: "blog".into(), kind: DeploymentType::Git, source };
        assert!(err(git(Source::default())).contains("needs `--source REPOSITORY`"));
        let repo = Source { repo: Some("file:///srv/blog.git".into()), ..Source::default() };
        check(&git(repo.clone())).unwrap();
        for bad in ["-x", "a b", ""] {
            let source = Source { git_ref: Some(bad.into()), ..repo.clone() };
            assert!(err(git(source)).contains("is not a branch, tag or commit name"), "{bad:?}");
        }
        let image = |source| NewDeployment { project: "blog".into(), kind: DeploymentType::Image, source };
        assert!(err(image(Source::default())).contains("needs `--image NAME`"));
        let named = Source { image: Some("localhost/blog:2".into()), ..Source::default() };
        check(&image(named.clone())).unwrap();
        assert!(
            err(image(Source { image: Some("-x".into()), ..Source::default() })).contains("not an image reference")
        );
        let built = Source { build: Some("make".into()), ..named };
        assert!(err(image(built)).contains("nothing to build"));
        for out in ["../up", "/abs", "a/../b"] {
            let source = Source { output: Some(out.into()), ..here.clone() };
            assert!(err(upload("blog", source)).contains("plain relative path"), "{out}");
        }
        check(&upload("blog", Source { output: Some("dist/site".into()), ..here.clone() })).unwrap();
        for path in ["health", "/a b"] {
            let source = Source { health_path: Some(path.into()), ..here.clone() };
            assert!(err(upload("blog", source)).contains("must start with `/`"), "{path}");
        }
        check(&upload("blog", Source { health_path: Some("/healthz".into()), ..here })).unwrap();
    }

    #[test]
    fn ids_are_plain_sort_by_creation_and_differ() {
        let a = new_id(Timestamp::from_unix(1_759_406_400));
        let b = new_id(Timestamp::from_unix(1_759_406_400));
        assert!(
            valid_id(&a) && a.starts_with("d20251002T120000Z-") && a.len() == "d20251002T120000Z-".len() + 8,
            "{a}"
        );
        assert_ne!(a, b);
        assert!(new_id(Timestamp::from_unix(1_759_406_401)) > a);
    }

    #[test]
    fn the_attempts_guard_reads_the_phase_s_limit() {
        let spec = crate::spec::default_spec();
        let mut d = Deployment {
            id: "d1".into(),
            project: "p".into(),
            service: None,
            kind: DeploymentType::Upload,
            phase: "HEALTH_CHECK".into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts: 2,
            finished_at: None,
            source: Source::default(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: None,
        };
        assert!(guard(&spec, &d, Guard::AttemptsRemaining), "2 of 3");
        d.attempts = 3;
        assert!(!guard(&spec, &d, Guard::AttemptsRemaining), "3 of 3");
        assert!(!guard(&spec, &d, Guard::IsImageDeployment));
        d.kind = DeploymentType::Image;
        assert!(guard(&spec, &d, Guard::IsImageDeployment));
    }
}
