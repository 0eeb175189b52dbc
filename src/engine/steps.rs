//! The glue between a phase's `run:` and the executors of [`crate::phases`]: what each
//! one is given from the deployment's stored options and the settings, and the three
//! executors that act on the live site (`switch_links`, `write_route`, `health_check`)
//! with the same atomic switch and route renderer as `apply`.
//!
//! Healthy before exposed: `switch_links` first probes the new release where nobody else
//! sees it (through a preview router on the project's route when one is live, else at
//! the static server directly), and only then switches `current` and the webroot link.
//! `health_check` then confirms, through Traefik on the project's own host, that the
//! response carries this deployment's `X-Trueup-Deployment` header, so neither the old
//! release nor a route Traefik has not reloaded yet can pass it.
//!
//! Image deployments (`pull_image`, `start_container`; see `image`) have no release
//! folder and no links: their container is probed directly, the route leads to it, and
//! the same check through Traefik comes before the old container is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

#[cfg(feature = "containers")]
use super::image;
use super::run::Session;
use crate::model::{Deployment, DeploymentType, Layout, LogLevel};

use crate::phases::{PhaseError, Watch, build, probe, release, source};
use crate::spec::{Executor, Run};
use crate::world::effects::{remove_route_file, switch_link, write_route_file};
use crate::world::routes::{self, DEPLOYMENT_HEADER, PREVIEW_HEADER, Preview, RouteFile};

/// How a phase's work ended when it did not fail.
pub(super) enum Done {
    /// Done, with metadata to record on the deployment.
    Ok(BTreeMap<String, String>),
    /// The health check gave up within this attempt: the spec's retry event decides.
    Unhealthy(String),
}

pub(super) type Step = Result<Done, PhaseError>;

pub(super) fn done() -> Step {
    Ok(Done::Ok(BTreeMap::new()))
}

/// Runs the executor `run` names for `d`.
pub(super) fn execute(s: &mut Session<'_, '_>, d: &Deployment, run: Option<&Run>) -> Step {
    match run {
        None => Err(PhaseError::Failed(format!("phase {} has no `run:` in its spec", d.phase))),
        Some(Run::Command(command)) => {
            let src = pulled(s, d)?;
            command_in(s, d, command, &src)?;
            done()
        }
        Some(Run::Executor(e)) => match e {
            Executor::Wait => done(),
            Executor::PullSource => {
                pull(s, d)?;
                done()
            }
            Executor::Build => build_step(s, d),
            Executor::CopyFiles => copy_files(s, d),
            Executor::SwitchLinks => switch_links(s, d),
            Executor::WriteRoute => write_route(s, d),
            Executor::HealthCheck => health_check(s, d),
            Executor::PullImage => image::pull_image(s, d),
            Executor::StartContainer => image::start_container(s, d),
        },
    }
}

/// `ROOT/.trueup/work/ID/src`: where the source is pulled and built.
fn src_dir(s: &Session<'_, '_>, d: &Deployment) -> PathBuf {
    s.engine.work_dir(&d.id).join("src")
}

/// Pulls `d`'s source into its work folder, replacing what was there.
fn pull(s: &mut Session<'_, '_>, d: &Deployment) -> Result<PathBuf, PhaseError> {
    let origin = match d.kind {
        DeploymentType::Upload => {
            let Some(path) = &d.source.file_path else {
                return Err(PhaseError::Failed("the deployment records no upload".to_owned()));
            };
            source::Origin::from_upload(path)
        }
        DeploymentType::Git => {
            let Some(url) = &d.source.repo else {
                return Err(PhaseError::Failed("the deployment records no repository".to_owned()));
            };
            source::Origin::Git { url: url.clone(), git_ref: d.source.git_ref.clone() }
        }
        DeploymentType::Image => {
            return Err(PhaseError::Failed("an image deployment has no source to pull".to_owned()));
        }
    };
    let dest = src_dir(s, d);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| PhaseError::Retry(format!("cannot create `{}`: {e}", parent.display())))?;
    }
    s.line(LogLevel::Info, &format!("pulling the source into {}", dest.display()));
    source::pull(&origin, &dest, &source::Limits::default(), s)?;
    Ok(dest)
}

/// The pulled source, pulled again first when a crash lost it (pulling is idempotent).
fn pulled(s: &mut Session<'_, '_>, d: &Deployment) -> Result<PathBuf, PhaseError> {
    let src = src_dir(s, d);
    if src.is_dir() { Ok(src) } else { pull(s, d) }
}

/// Runs `command` in `src` with the build time limit.
fn command_in(s: &mut Session<'_, '_>, d: &Deployment, command: &str, src: &Path) -> Result<(), PhaseError> {
    let env = vec![("TRUEUP_PROJECT".to_owned(), d.project.clone()), ("TRUEUP_DEPLOYMENT".to_owned(), d.id.clone())];
    let limit = StdDuration::from_secs(s.engine.settings.build_timeout.secs());
    s.line(LogLevel::Info, &format!("running `{command}`"));
    build::run(command, src, &env, limit, s)
}

fn build_step(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let src = pulled(s, d)?;
    match d.source.build.clone() {
        Some(command) => command_in(s, d, &command, &src)?,
        None => s.line(LogLevel::Info, "no build command: the source is the output"),
    }
    done()
}

/// The build output: the `--output` folder, else `public` when the source has one, else
/// the whole source.
fn output_dir(src: &Path, d: &Deployment) -> PathBuf {
    match &d.source.output {
        Some(out) => src.join(out),
        None if src.join("public").is_dir() => src.join("public"),
        None => src.to_owned(),
    }
}

fn copy_files(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let layout = Layout::new(&s.engine.root, &d.project);
    let target = layout.release(&d.id);
    if release::is_complete(&target) {
        s.line(LogLevel::Info, "the release is already complete");
        return done();
    }
    let src = src_dir(s, d);
    if !src.is_dir() {
        // A crash lost the work folder: build again from the source.
        pull(s, d)?;
        if let Some(command) = d.source.build.clone() {
            command_in(s, d, &command, &src)?;
        }
    }
    let out = output_dir(&src, d);
    std::fs::create_dir_all(layout.releases_dir())
        .map_err(|e| PhaseError::Retry(format!("cannot create `{}`: {e}", layout.releases_dir().display())))?;
    s.line(LogLevel::Info, &format!("copying the output into {}", target.display()));
    release::copy(&out, &target, Some("public"), &d.id, s)?;
    done()
}

/// The upstream of `d`'s release once live: the static server's view of the webroot link,
/// or for a deployment without a release folder the address its container was started on.
fn upstream(s: &Session<'_, '_>, d: &Deployment) -> Option<String> {
    if !d.kind.has_release_folder() {
        return d.metadata.get("upstream").cloned();
    }
    s.engine.settings.webroot_upstream.as_ref().map(|u| format!("{u}/webroot/{}", d.project))
}

/// The upstream that reaches `d`'s release itself, before any link points at it.
fn release_upstream(s: &Session<'_, '_>, d: &Deployment) -> Option<String> {
    s.engine.settings.webroot_upstream.as_ref().map(|u| format!("{u}/{}/deployments/{}/public", d.project, d.id))
}

/// The host name `d`'s project answers on.
fn domain(s: &Session<'_, '_>, d: &Deployment) -> Result<String, PhaseError> {
    let project = s.engine.store.project(&d.project).map_err(|e| PhaseError::Retry(e.to_string()))?;
    let own = project.and_then(|p| p.domain);
    Ok(own.unwrap_or_else(|| format!("{}.{}", d.project, s.engine.settings.domain)))
}

pub(super) fn health_path(d: &Deployment) -> &str {
    d.source.health_path.as_deref().unwrap_or("/")
}

fn switch_links(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let layout = Layout::new(&s.engine.root, &d.project);
    let target = layout.release(&d.id);
    if !release::is_complete(&target) {
        return Err(PhaseError::Failed(format!(
            "the release folder `{}` is missing or incomplete: it is never linked",
            target.display()
        )));
    }
    preview(s, d)?;
    let root = s.engine.root.clone();
    let fail = |e: crate::world::effects::EffectError| PhaseError::Retry(e.to_string());
    switch_link(&root, &layout.current(), &target).map_err(fail)?;
    switch_link(&root, &layout.webroot(), &layout.webroot_target()).map_err(fail)?;
    s.line(LogLevel::Info, &format!("`current` and the webroot link now lead to {}", d.id));
    done()
}

/// Probes `d`'s release before it is exposed: through the project's live route with a
/// preview router, or at the static server directly when the project has no route yet.
fn preview(s: &mut Session<'_, '_>, d: &Deployment) -> Result<(), PhaseError> {
    let Some(release_up) = release_upstream(s, d) else {
        s.line(LogLevel::Warn, "no webroot upstream is configured: the release is not probed before it is exposed");
        return Ok(());
    };
    let path = health_path(d).to_owned();
    let file = routes::route_path(&s.engine.routes_dir, &d.project);
    let live = std::fs::read_to_string(&file).ok().map(|text| routes::parse_route(&d.project, &text));
    let live = live.filter(|r| r.problem.is_none()).and_then(|r| Some((r.deployment?, r.upstream, r.domain?)));
    match (&s.engine.settings.proxy, live) {
        (Some(proxy), Some((live_id, live_up, domain))) if live_id != d.id => {
            let text = routes::render(&RouteFile {
                project: &d.project,
                deployment: &live_id,
                upstream: &live_up,
                domain: &domain,
                preview: Some(Preview { deployment: &d.id, upstream: &release_up }),
            })
            .map_err(|e| PhaseError::Failed(e.to_string()))?;
            write_route_file(&s.engine.routes_dir, &d.project, &text).map_err(|e| PhaseError::Retry(e.to_string()))?;
            let url = format!("http://{proxy}{path}");
            s.line(LogLevel::Info, &format!("probing the release through the preview route: {url} on {domain}"));
            let headers = [(PREVIEW_HEADER, d.id.as_str())];
            check(s, &url, Some(&domain), &headers, &d.id, true).map_err(unexposed)
        }
        _ => {
            let url = format!("{release_up}{path}");
            s.line(LogLevel::Info, &format!("probing the release at the static server: {url}"));
            check(s, &url, None, &[], &d.id, false).map_err(unexposed)
        }
    }
}

/// The failure of a probe before exposure: the release was never served.
pub(super) fn unexposed(e: PhaseError) -> PhaseError {
    match e {
        PhaseError::Failed(why) => {
            PhaseError::Failed(format!("the new release failed its check before it was exposed: {why}"))
        }
        other => other,
    }
}

/// Requests `url` until it answers below 400 (and, with `header`, names deployment `id`)
/// or the health timeout passes. `Err` says why it never did.
pub(super) fn check(
    s: &mut Session<'_, '_>,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    id: &str,
    header: bool,
) -> Result<(), PhaseError> {
    let request = probe::Request { url, host, headers, timeout: StdDuration::from_secs(5) };
    let within = StdDuration::from_secs(s.engine.settings.health_timeout.secs());
    let ok = |r: &probe::Response| r.status < 400 && (!header || r.header(DEPLOYMENT_HEADER) == Some(id));
    let failed = match probe::until(&request, within, ok, s) {
        Ok(_) => return Ok(()),
        Err(probe::Unmet::Answer(r)) if r.status < 400 => {
            format!("{url} answered for deployment `{}`, not `{id}`", r.header(DEPLOYMENT_HEADER).unwrap_or("(none)"))
        }
        Err(probe::Unmet::Answer(r)) if r.first_line.is_empty() => {
            format!("{url} answered {} with an empty body", r.status)
        }
        Err(probe::Unmet::Answer(r)) => format!("{url} answered {}: {}", r.status, r.first_line),
        Err(probe::Unmet::NoAnswer(e)) => format!("{url}: {e}"),
        Err(probe::Unmet::Stopped(why)) => return Err(PhaseError::Stopped(why)),
    };
    Err(PhaseError::Failed(failed))
}

fn write_route(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let Some(up) = upstream(s, d) else {
        if !d.kind.has_release_folder() {
            return Err(PhaseError::Failed(
                "the deployment records no upstream: its container never started".to_owned(),
            ));
        }
        s.line(LogLevel::Warn, "no webroot upstream is configured: no route is written");
        return done();
    };
    let domain = domain(s, d)?;
    let text = routes::render_route(&d.project, &d.id, &up, &domain).map_err(|e| PhaseError::Failed(e.to_string()))?;
    write_route_file(&s.engine.routes_dir, &d.project, &text).map_err(|e| PhaseError::Retry(e.to_string()))?;
    s.engine.store.set_domain(&d.project, &domain).map_err(|e| PhaseError::Retry(e.to_string()))?;
    s.line(LogLevel::Info, &format!("the route sends {domain} to {up} for {}", d.id));
    Ok(Done::Ok(BTreeMap::from([("upstream".to_owned(), up)])))
}

fn health_check(s: &mut Session<'_, '_>, d: &Deployment) -> Step {
    let path = health_path(d).to_owned();
    let result = match (&s.engine.settings.proxy, upstream(s, d)) {
        (Some(proxy), Some(_)) => {
            let domain = domain(s, d)?;
            let url = format!("http://{proxy}{path}");
            s.line(LogLevel::Info, &format!("checking {url} on {domain} answers for {}", d.id));
            check(s, &url, Some(&domain), &[], &d.id, true)
        }
        (None, Some(up)) => {
            let url = format!("{up}{path}");
            s.line(LogLevel::Info, &format!("no proxy is configured: checking {url}"));
            check(s, &url, None, &[], &d.id, false)
        }
        (_, None) => {
            s.line(LogLevel::Warn, "no webroot upstream is configured: nothing to check");
            return done();
        }
    };
    match result {
        Ok(()) => {
            if !d.kind.has_release_folder() {
                image::retire_previous(s, d);
            }
            done()
        }
        Err(PhaseError::Failed(why)) => Ok(Done::Unhealthy(format!("the health check failed: {why}"))),
        Err(other) => Err(other),
    }
}

/// Puts the site back on the project's previous live release, after `d` failed: its
/// `current`, webroot link and route, when they lead to `d`. With no previous release,
/// `d`'s route is taken down (kept aside), so a failed release is never served.
pub(super) fn rollback(s: &mut Session<'_, '_>, d: &Deployment) {
    if !d.kind.has_release_folder() {
        image::remove_own(s, d);
    }
    let layout = Layout::new(&s.engine.root, &d.project);
    let ours = std::fs::read_link(layout.current()).is_ok_and(|t| t == layout.release(&d.id));
    let file = routes::route_path(&s.engine.routes_dir, &d.project);
    let route = std::fs::read_to_string(&file).ok().map(|text| routes::parse_route(&d.project, &text));
    let route_ours = route.as_ref().is_some_and(|r| r.deployment.as_deref() == Some(d.id.as_str()));
    let preview = std::fs::read_to_string(&file).ok().and_then(|text| routes::preview_of(&d.project, &text));
    if !ours && !route_ours && preview.is_none() {
        return;
    }
    let previous = previous_release(s, d);
    let root = s.engine.root.clone();
    match previous {
        Some(prev) => {
            if ours {
                let _ = switch_link(&root, &layout.current(), &layout.release(&prev.id));
                let _ = switch_link(&root, &layout.webroot(), &layout.webroot_target());
            }
            if let (Some(up), Ok(domain)) =
                (prev.metadata.get("upstream").cloned().or_else(|| upstream(s, &prev)), domain(s, d))
                && let Ok(text) = routes::render_route(&d.project, &prev.id, &up, &domain)
            {
                let _ = write_route_file(&s.engine.routes_dir, &d.project, &text);
            }
            s.line(LogLevel::Warn, &format!("rolled back: the site is {} again", prev.id));
        }
        None if route_ours || preview.is_some() => {
            let _ = remove_route_file(&s.engine.routes_dir, &d.project, crate::time::clock::now());
            s.line(LogLevel::Warn, "no previous release: the route is taken down (kept aside), not served");
        }
        None => {}
    }
}

/// The project's latest live deployment other than `d` whose release is complete. The
/// store reads a project's newest live release ([`crate::store::RELEASE_WINDOW`]) and
/// those created after `d`: when none of them is complete, its older live releases are
/// read too.
fn previous_release(s: &Session<'_, '_>, d: &Deployment) -> Option<Deployment> {
    let live = s.engine.specs.live_phases();
    let layout = Layout::new(&s.engine.root, &d.project);
    let latest = |all: Vec<Deployment>| {
        all.into_iter()
            .filter(|o| o.id != d.id && s.engine.specs.is_live(o))
            .filter(|o| !o.kind.has_release_folder() || layout.release(&o.id).is_dir())
            .max_by_key(|o| (o.finished_at, o.created_at))
    };
    latest(s.engine.store.reconcilable_of(&d.project, &live).ok()?).or_else(|| {
        let (older, _) = s.engine.store.load_live_of(&[d.project.as_str()], &live).ok()?;
        latest(older)
    })
}

/// Without the `containers` feature, image deployments fail saying why.
#[cfg(not(feature = "containers"))]
mod image {
    use super::{Deployment, PhaseError, Session, Step};

    fn not_built() -> Step {
        Err(PhaseError::Failed("this trueup was built without its `containers` feature: it runs no image".to_owned()))
    }

    pub(super) fn pull_image(_: &mut Session<'_, '_>, _: &Deployment) -> Step {
        not_built()
    }

    pub(super) fn start_container(_: &mut Session<'_, '_>, _: &Deployment) -> Step {
        not_built()
    }

    pub(super) fn retire_previous(_: &mut Session<'_, '_>, _: &Deployment) {}

    pub(super) fn remove_own(_: &mut Session<'_, '_>, _: &Deployment) {}
}
