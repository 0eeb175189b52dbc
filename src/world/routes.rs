//! Proxy route files: one Traefik dynamic-configuration YAML file per project,
//! `ROUTES_DIR/PROJECT.yaml`, that the proxy's file provider watches.
//!
//! A file starts with a header comment naming the project and the deployment it was
//! written for; the router and service are both called `trueup-PROJECT`:
//!
//! ```yaml
//! # Managed by trueup: project=p1 deployment=d7. Changes are overwritten.
//! http:
//!   routers:
//!     trueup-p1:
//!       rule: "Host(`p1.localhost`)"
//!       service: trueup-p1
//!   services:
//!     trueup-p1:
//!       loadBalancer:
//!         servers:
//!           - url: "http://127.0.0.1:8080"
//! ```
//!
//! [`render_route`] is pure and validates everything it interpolates, so a rendered file
//! is always well-formed. Reading never fails on a bad file: [`read_route`] reports it in
//! [`Route::problem`] for the planner to repair. Nothing here writes files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Route, valid_id};

/// How every route file trueup writes begins.
const HEADER_PREFIX: &str = "# Managed by trueup: project=";
/// How its header ends.
const HEADER_SUFFIX: &str = ". Changes are overwritten.";

/// Why a route cannot be rendered or the routes folder cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A project or deployment id is not a plain name (see [`valid_id`]).
    #[error("{what} id `{id}` is not a plain name")]
    InvalidId {
        /// `project` or `deployment`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The upstream is not an `http://` or `https://` URL of plain characters.
    #[error("upstream `{0}` is not an http(s) URL without spaces, quotes or control characters")]
    InvalidUpstream(String),
    /// The domain is not a host name.
    #[error("domain `{0}` is not a host name")]
    InvalidDomain(String),
    /// The routes folder exists but cannot be listed.
    #[error("cannot list the routes folder `{path}`")]
    ReadDir {
        /// The folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// The route file of `project` in `dir`. The caller checks [`valid_id`] first.
pub fn route_path(dir: &Path, project: &str) -> PathBuf {
    dir.join(format!("{project}.yaml"))
}

/// Renders the route file that sends `domain` to `upstream` for `deployment` of `project`.
///
/// # Errors
///
/// [`RouteError::InvalidId`], [`RouteError::InvalidUpstream`] or
/// [`RouteError::InvalidDomain`] when a value could break out of its place in the file.
pub fn render_route(project: &str, deployment: &str, upstream: &str, domain: &str) -> Result<String, RouteError> {
    for (what, id) in [("project", project), ("deployment", deployment)] {
        if !valid_id(id) {
            return Err(RouteError::InvalidId { what, id: id.to_owned() });
        }
    }
    if !valid_upstream(upstream) {
        return Err(RouteError::InvalidUpstream(upstream.to_owned()));
    }
    if !valid_domain(domain) {
        return Err(RouteError::InvalidDomain(domain.to_owned()));
    }
    Ok(format!(
        "{HEADER_PREFIX}{project} deployment={deployment}{HEADER_SUFFIX}
http:
  routers:
    trueup-{project}:
      rule: \"Host(`{domain}`)\"
      service: trueup-{project}
  services:
    trueup-{project}:
      loadBalancer:
        servers:
          - url: \"{upstream}\"
"
    ))
}

/// `http://` or `https://`, a host, and only printable ASCII that needs no escaping in a
/// double-quoted YAML string.
pub fn valid_upstream(upstream: &str) -> bool {
    let rest = upstream.strip_prefix("http://").or_else(|| upstream.strip_prefix("https://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && r.bytes().all(|b| b.is_ascii_graphic() && !b"\"'\\`".contains(&b))
    })
}

/// Dot-separated labels of letters, digits, `-` and `_`, at most 253 bytes. `_` is not
/// valid in DNS host names, but ids may hold it and the default domain is `ID.localhost`.
pub fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The part of Traefik's dynamic configuration a trueup route file holds.
#[derive(Deserialize)]
struct TraefikFile {
    http: Http,
}

#[derive(Deserialize)]
struct Http {
    #[serde(default)]
    routers: BTreeMap<String, Router>,
    #[serde(default)]
    services: BTreeMap<String, Service>,
}

#[derive(Deserialize)]
struct Router {
    #[serde(default)]
    rule: String,
    service: String,
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "loadBalancer")]
    load_balancer: LoadBalancer,
}

#[derive(Deserialize)]
struct LoadBalancer {
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct Server {
    url: String,
}

/// Reads the route file at `path`, for the project named by its stem. A file that cannot
/// be read or is not a trueup route comes back with [`Route::problem`] set.
pub fn read_route(path: &Path) -> Route {
    let project = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.take(ROUTE_CAP + 1).read_to_end(&mut bytes)) {
        return broken(None, format!("cannot read it: {e}"));
    }
    if bytes.len() as u64 > ROUTE_CAP {
        return broken(
            None,
            format!("it is larger than {} KiB, more than a route file trueup writes", ROUTE_CAP >> 10),
        );
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse_route(project, &text),
        Err(_) => broken(None, "it is not UTF-8 text".to_owned()),
    }
}

/// The largest route file trueup reads: one it writes is a few hundred bytes.
const ROUTE_CAP: u64 = 256 << 10;

/// Reads the text of `project`'s route file (pure).
pub fn parse_route(project: &str, text: &str) -> Route {
    let Some((named, deployment)) = header(text.lines().next().unwrap_or_default()) else {
        return broken(None, "it has no `# Managed by trueup:` header".to_owned());
    };
    let deployment = Some(deployment.to_owned());
    if named != project {
        return broken(deployment, format!("its header names project `{named}`"));
    }
    let file: TraefikFile = match serde_saphyr::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            return broken(deployment, format!("it is not valid Traefik YAML: {first}"));
        }
    };
    let name = format!("trueup-{project}");
    let Some(router) = file.http.routers.get(&name).filter(|r| r.service == name) else {
        return broken(deployment, format!("it has no router `{name}` for service `{name}`"));
    };
    let Some(domain) = router.rule.strip_prefix("Host(`").and_then(|r| r.strip_suffix("`)")) else {
        return broken(deployment, format!("router `{name}` has rule `{}`, not Host(`DOMAIN`)", router.rule));
    };
    let domain = Some(domain.to_owned());
    match file.http.services.get(&name).map(|s| s.load_balancer.servers.as_slice()) {
        Some([server]) => Route { deployment, upstream: server.url.clone(), domain, problem: None },
        _ => broken(deployment, format!("service `{name}` does not have exactly one server")),
    }
}

/// The first line of a route file trueup writes, naming its project and deployment.
pub fn header_line(project: &str, deployment: &str) -> String {
    format!("{HEADER_PREFIX}{project} deployment={deployment}{HEADER_SUFFIX}")
}

/// True when `text` starts with trueup's header: the file is trueup's to rewrite or remove.
pub fn is_managed(text: &str) -> bool {
    header(text.lines().next().unwrap_or_default()).is_some()
}

/// The project and deployment named by a header line.
fn header(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(HEADER_PREFIX)?.strip_suffix(HEADER_SUFFIX)?;
    rest.split_once(" deployment=")
}

fn broken(deployment: Option<String>, problem: String) -> Route {
    Route { deployment, upstream: String::new(), domain: None, problem: Some(problem) }
}

/// Every route file in `dir` by project id (the file stem): files ending in `.yaml`,
/// skipping names that start with `.` (temporary files being written). A missing
/// folder has no routes. Links and folders are reported as problems, never followed.
///
/// # Errors
///
/// [`RouteError::ReadDir`] when the folder exists but cannot be listed.
pub fn observe_routes(dir: &Path) -> Result<BTreeMap<String, Route>, RouteError> {
    let fail = |source| RouteError::ReadDir { path: dir.to_owned(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(fail(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(fail)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        // trueup writes `PROJECT.yaml` only; a `.yml` file is never one of its routes.
        let stem = name.strip_suffix(".yaml");
        if let Some(stem) = stem.filter(|_| !name.starts_with('.')) {
            files.push((stem.to_owned(), name.clone(), entry.file_type().map_err(fail)?));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut routes = BTreeMap::new();
    for (project, name, kind) in files {
        let route = if kind.is_file() {
            read_route(&dir.join(&name))
        } else {
            broken(None, format!("`{name}` is not a regular file"))
        };
        routes.insert(project, route);
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_route_reads_back() {
        let text = render_route("p1", "d7", "http://127.0.0.1:8080", "p1.localhost").unwrap();
        assert_eq!(
            text,
            "# Managed by trueup: project=p1 deployment=d7. Changes are overwritten.
http:
  routers:
    trueup-p1:
      rule: \"Host(`p1.localhost`)\"
      service: trueup-p1
  services:
    trueup-p1:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8080\"
"
        );
        let route = parse_route("p1", &text);
        assert_eq!(
            route,
            Route {
                deployment: Some("d7".into()),
                upstream: "http://127.0.0.1:8080".into(),
                domain: Some("p1.localhost".into()),
                problem: None
            }
        );
        // Ids may end in a dot; the header still reads back.
        let text = render_route("p1", "d7.", "https://app:8443/x", "a.example.org").unwrap();
        assert_eq!(parse_route("p1", &text).deployment.as_deref(), Some("d7."));
    }

    #[test]
    fn render_refuses_what_would_break_the_file() {
        let bad = [
            ("../p", "d1", "http://x", "p.localhost", "project id `../p` is not a plain name"),
            ("p", "d 1", "http://x", "p.localhost", "deployment id `d 1` is not a plain name"),
            (
                "p",
                "d1",
                "http://x\"\n  evil: 1",
                "p.localhost",
                "upstream `http://x\"\n  evil: 1` is not an http(s) URL without spaces, quotes or control characters",
            ),
            (
                "p",
                "d1",
                "ftp://x",
                "p.localhost",
                "upstream `ftp://x` is not an http(s) URL without spaces, quotes or control characters",
            ),
            (
                "p",
                "d1",
                "http://",
                "p.localhost",
                "upstream `http://` is not an http(s) URL without spaces, quotes or control characters",
            ),
            ("p", "d1", "http://x", "a`)||Host(`b", "domain `a`)||Host(`b` is not a host name"),
            ("p", "d1", "http://x", "", "domain `` is not a host name"),
        ];
        for (project, deployment, upstream, domain, message) in bad {
            let err = render_route(project, deployment, upstream, domain).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn a_bad_file_is_a_problem_not_an_error() {
        let good = render_route("p1", "d7", "http://127.0.0.1:8080", "p1.localhost").unwrap();
        let cases = [
            ("http: {}\n", "it has no `# Managed by trueup:` header"),
            (&good.replace("project=p1", "project=p2"), "its header names project `p2`"),
            (&format!("{good}  : : [\n"), "it is not valid Traefik YAML"),
            (&good.replace("service: trueup-p1", "service: other"), "it has no router `trueup-p1`"),
            (&good.replace("          - url", "          - url: \"http://b\"\n          - url"), "exactly one server"),
        ];
        for (text, problem) in cases {
            let route = parse_route("p1", text);
            let got = route.problem.unwrap_or_default();
            assert!(got.starts_with(problem) || got.contains(problem), "{got:?} for\n{text}");
        }
    }
}
