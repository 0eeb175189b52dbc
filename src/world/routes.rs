//! Proxy route files: one Traefik dynamic-configuration YAML file per project,
//! `ROUTES_DIR/PROJECT.yaml`, that the proxy's file provider watches.
//!
//! # Format v2
//!
//! A file starts with a header comment naming the project and the deployment it was
//! written for. The router and the service are both called `trueup-PROJECT`; the router
//! always goes through a `headers` middleware, `trueup-PROJECT-id`, that answers every
//! response with `X-Trueup-Deployment: ID`. When the upstream has a path
//! (`http://127.0.0.1:8081/webroot/p1`, the static web server whose root is trueup's
//! root), the service's server is the origin only and an `addPrefix` middleware,
//! `trueup-PROJECT-prefix`, adds the path:
//!
//! ```yaml
//! # Managed by trueup: project=p1 deployment=d7. Changes are overwritten.
//! http:
//!   routers:
//!     trueup-p1:
//!       rule: "Host(`p1.localhost`)"
//!       service: trueup-p1
//!       middlewares:
//!         - trueup-p1-id
//!         - trueup-p1-prefix
//!   middlewares:
//!     trueup-p1-id:
//!       headers:
//!         customResponseHeaders:
//!           X-Trueup-Deployment: "d7"
//!     trueup-p1-prefix:
//!       addPrefix:
//!         prefix: "/webroot/p1"
//!   services:
//!     trueup-p1:
//!       loadBalancer:
//!         servers:
//!           - url: "http://127.0.0.1:8081"
//! ```
//!
//! Why the header: Traefik's file provider reloads a changed file only after a delay, so
//! a deployment that has just written its route cannot tell from the file whether the
//! proxy already routes by it. With Traefik 3.7's defaults the delay is about two seconds
//! (its `providers.providersThrottleDuration`, 2 s: measured 1.9 to 2.3 s for a changed
//! file, 0.05 to 0.3 s with the throttle at 0 or 200 ms; the proxy tests print it). The
//! header tells, in every response, which deployment the route in force was written for:
//! a switch is confirmed when a request through Traefik answers with the new id.
//!
//! Why the prefix: Traefik's server URLs carry no path, so an upstream with one needs a
//! middleware to reach it. [`parse_route`] reads the upstream back as the server URL
//! followed by the prefix, the same string that was rendered, so the planner never sees
//! a difference. A version-1 file (no middlewares) still reads as it always did.
//!
//! # Preview
//!
//! A new release is probed through Traefik before it is exposed (healthy before
//! exposed): [`render`] with a [`Preview`] adds a second router, `trueup-PROJECT~preview`,
//! with the rule ``Host(`DOMAIN`) && Header(`X-Trueup-Preview`, `ID`)`` (Traefik v3 rule
//! syntax; v2 spelled it `Headers`) and a higher `priority` than the main router, its own
//! service with the same prefix treatment, and its own headers middleware answering
//! `X-Trueup-Deployment: PREVIEW_ID`. Only requests that carry the preview header reach
//! the new release; everyone else still gets the live one. The preview's names hold a
//! `~`, which no id may hold, so they never collide with another project's names (a
//! project called `p1-preview` owns `trueup-p1-preview`). The header line and the main
//! router name the live deployment: [`parse_route`] ignores the preview, and
//! [`preview_of`] reads it.
//!
//! [`render`] is pure and validates everything it interpolates, so a rendered file is
//! always well-formed. Reading never fails on a bad file: [`read_route`] reports it in
//! [`Route::problem`] for the planner to repair. Nothing here writes files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Route, valid_id};

/// How every route file trueup writes begins.
const HEADER_PREFIX: &str = "# Managed by trueup: project=";
/// How its header ends.
const HEADER_SUFFIX: &str = ". Changes are overwritten.";

/// The response header that names the deployment a route was written for.
pub const DEPLOYMENT_HEADER: &str = "X-Trueup-Deployment";
/// The request header that reaches a preview: its value is the previewed deployment.
pub const PREVIEW_HEADER: &str = "X-Trueup-Preview";
/// The preview router's priority. Traefik gives a router without one the length of its
/// rule; a main router's rule, `Host(`DOMAIN`)` with a domain of at most 253 bytes, is
/// shorter than this, so a request that matches both goes to the preview.
const PREVIEW_PRIORITY: &str = "1000";

/// Why a route cannot be rendered or the routes folder cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A project or deployment id is not a plain name (see [`valid_id`]).
    #[error("{what} id `{id}` is not a plain name")]
    InvalidId {
        /// `project`, `deployment` or `preview deployment`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The upstream is not an `http://` or `https://` URL of plain characters.
    #[error("upstream `{0}` is not an http(s) URL without spaces, quotes, control characters, query or fragment")]
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

/// What one route file says: `domain` goes to `upstream` for `deployment` of `project`,
/// and, with a [`Preview`], requests that ask for the preview go to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFile<'a> {
    /// The project, which names the file, its router and its service.
    pub project: &'a str,
    /// The live deployment, named by the header line and the response header.
    pub deployment: &'a str,
    /// Where the live deployment is served, e.g. `http://127.0.0.1:8081/webroot/p1`.
    pub upstream: &'a str,
    /// The host name the project answers on.
    pub domain: &'a str,
    /// A release probed before it is exposed.
    pub preview: Option<Preview<'a>>,
}

/// A release reachable through the proxy only by requests that carry
/// `X-Trueup-Preview: DEPLOYMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview<'a> {
    /// The previewed deployment.
    pub deployment: &'a str,
    /// Where it is served.
    pub upstream: &'a str,
}

/// A preview as read back from a route file by [`preview_of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRoute {
    /// The previewed deployment.
    pub deployment: String,
    /// Where it is served, as it was rendered.
    pub upstream: String,
}

/// Renders the route file that sends `domain` to `upstream` for `deployment` of `project`,
/// with no preview: [`render`] of a [`RouteFile`] without one.
///
/// # Errors
///
/// As [`render`].
pub fn render_route(project: &str, deployment: &str, upstream: &str, domain: &str) -> Result<String, RouteError> {
    render(&RouteFile { project, deployment, upstream, domain, preview: None })
}

/// Renders a route file (format v2, see the module docs).
///
/// # Errors
///
/// [`RouteError::InvalidId`], [`RouteError::InvalidUpstream`] or
/// [`RouteError::InvalidDomain`] when a value could break out of its place in the file.
pub fn render(route: &RouteFile<'_>) -> Result<String, RouteError> {
    let mut text = String::with_capacity(1024);
    write_route(route, &mut text)?;
    Ok(text)
}

/// Where the text of a route file goes, a piece at a time.
trait Out {
    fn put(&mut self, piece: &str);

    fn put_all(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.put(piece);
        }
    }
}

impl Out for String {
    fn put(&mut self, piece: &str) {
        self.push_str(piece);
    }
}

/// The pieces of a text compared with `text` in turn rather than written: what is left
/// of it after those that matched, `None` from the first that did not.
struct Matches<'t>(Option<&'t str>);

impl Out for Matches<'_> {
    fn put(&mut self, piece: &str) {
        self.0 = self.0.and_then(|rest| rest.strip_prefix(piece));
    }
}

/// Writes the text of `route` to `out` once its values are checked, as [`render`] gives
/// it.
fn write_route(route: &RouteFile<'_>, out: &mut impl Out) -> Result<(), RouteError> {
    let RouteFile { project, deployment, upstream, domain, preview } = *route;
    let ids = [("project", project), ("deployment", deployment)];
    for (what, id) in ids.into_iter().chain(preview.map(|p| ("preview deployment", p.deployment))) {
        if !valid_id(id) {
            return Err(RouteError::InvalidId { what, id: id.to_owned() });
        }
    }
    let mut upstreams = std::iter::once(upstream).chain(preview.map(|p| p.upstream));
    if let Some(bad) = upstreams.find(|u| !valid_upstream(u)) {
        return Err(RouteError::InvalidUpstream(bad.to_owned()));
    }
    if !valid_domain(domain) {
        return Err(RouteError::InvalidDomain(domain.to_owned()));
    }
    let main = Served::new(project, false, domain, deployment, upstream);
    let preview = preview.map(|p| Served::new(project, true, domain, p.deployment, p.upstream));
    let all = [Some(&main), preview.as_ref()];
    out.put_all(&header_pieces(project, deployment));
    out.put("\nhttp:\n  routers:\n");
    for s in all.iter().flatten() {
        s.router(out);
    }
    out.put("  middlewares:\n");
    for s in all.iter().flatten() {
        s.middlewares(out);
    }
    out.put("  services:\n");
    for s in all.iter().flatten() {
        s.service(out);
    }
    Ok(())
}

/// One router of a route file with its middlewares and its service, all named after it:
/// `trueup-PROJECT`, or for the preview `trueup-PROJECT~preview` ([`name_pieces`]).
struct Served<'a> {
    project: &'a str,
    preview: bool,
    domain: &'a str,
    deployment: &'a str,
    /// The upstream's origin, the server's URL.
    origin: &'a str,
    /// The upstream's path, which the `addPrefix` middleware adds ([`split_upstream`]).
    prefix: Option<&'a str>,
}

impl<'a> Served<'a> {
    fn new(project: &'a str, preview: bool, domain: &'a str, deployment: &'a str, upstream: &'a str) -> Self {
        let (origin, prefix) = split_upstream(upstream);
        Served { project, preview, domain, deployment, origin, prefix }
    }

    /// Indented by `indent`, the name and what follows it on its line.
    fn name(&self, out: &mut impl Out, indent: &str, then: &str) {
        out.put(indent);
        out.put_all(&name_pieces(self.project, self.preview));
        out.put(then);
    }

    fn router(&self, out: &mut impl Out) {
        self.name(out, "    ", ":\n");
        out.put("      rule: \"");
        out.put_all(&rule_pieces(self.domain, self.preview.then_some(self.deployment)));
        if self.preview {
            out.put_all(&["\"\n      priority: ", PREVIEW_PRIORITY, "\n"]);
        } else {
            out.put("\"\n");
        }
        self.name(out, "      service: ", "\n      middlewares:\n");
        self.name(out, "        - ", "-id\n");
        if self.prefix.is_some() {
            self.name(out, "        - ", "-prefix\n");
        }
    }

    fn middlewares(&self, out: &mut impl Out) {
        self.name(out, "    ", "-id:\n      headers:\n        customResponseHeaders:\n");
        out.put_all(&["          ", DEPLOYMENT_HEADER, ": \"", self.deployment, "\"\n"]);
        if let Some(prefix) = self.prefix {
            self.name(out, "    ", "-prefix:\n      addPrefix:\n");
            out.put_all(&["        prefix: \"", prefix, "\"\n"]);
        }
    }

    fn service(&self, out: &mut impl Out) {
        self.name(out, "    ", ":\n      loadBalancer:\n        servers:\n");
        out.put_all(&["          - url: \"", self.origin, "\"\n"]);
    }
}

/// The preview's router and service. `~` is in no id, so no project's names are these.
fn preview_name(project: &str) -> String {
    name_pieces(project, true).concat()
}

/// The pieces of a router's (and its service's) name: `trueup-PROJECT`, and for the
/// preview `trueup-PROJECT~preview`.
fn name_pieces(project: &str, preview: bool) -> [&str; 3] {
    ["trueup-", project, if preview { "~preview" } else { "" }]
}

fn preview_rule(domain: &str, deployment: &str) -> String {
    rule_pieces(domain, Some(deployment)).concat()
}

/// The pieces of a router's rule: ``Host(`DOMAIN`)``, and for a preview of `deployment`
/// `` && Header(`X-Trueup-Preview`, `DEPLOYMENT`)`` after it.
fn rule_pieces<'a>(domain: &'a str, preview: Option<&'a str>) -> [&'a str; 8] {
    let [a, b, c, d, e] = match preview {
        Some(deployment) => [" && Header(`", PREVIEW_HEADER, "`, `", deployment, "`)"],
        None => [""; 5],
    };
    ["Host(`", domain, "`)", a, b, c, d, e]
}

/// An upstream's origin (scheme and authority) and its path, when it has one other than
/// `/`: Traefik's server URL and the prefix its `addPrefix` middleware adds. The two
/// together are the upstream again, byte for byte.
fn split_upstream(upstream: &str) -> (&str, Option<&str>) {
    let scheme = upstream.find("://").map_or(0, |i| i + 3);
    match upstream[scheme..].find('/').map(|i| scheme + i) {
        Some(at) if &upstream[at..] != "/" => (&upstream[..at], Some(&upstream[at..])),
        _ => (upstream, None),
    }
}

/// `http://` or `https://`, a host, and only printable ASCII that needs no escaping in a
/// double-quoted YAML string. No query or fragment: the path becomes a Traefik `addPrefix`,
/// where they would mean nothing.
pub fn valid_upstream(upstream: &str) -> bool {
    let rest = upstream.strip_prefix("http://").or_else(|| upstream.strip_prefix("https://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && r.bytes().all(|b| b.is_ascii_graphic() && !b"\"'\\`?#".contains(&b))
    })
}

/// Dot-separated labels of letters, digits, `-` and `_`, at most 253 bytes. `_` is not
/// valid in DNS host names, but ids may hold it and the default domain is `ID.localhost`.
///
/// One pass over the bytes, a label's length counted as it goes: a split into labels,
/// each searched for its end, took 5 million instructions more at 10,000 projects, where
/// it runs twice a project (in the check of a route file and in the rules).
pub fn valid_domain(domain: &str) -> bool {
    let label_ok = |len: usize| (1..=63).contains(&len);
    let mut label = 0;
    domain.len() <= 253
        && domain.bytes().all(|b| match b {
            b'.' => label_ok(std::mem::take(&mut label)),
            // No label starts with `-`.
            b'-' if label == 0 => false,
            b'-' | b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {
                label += 1;
                true
            }
            _ => false,
        })
        && label_ok(label)
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
    middlewares: BTreeMap<String, Middleware>,
    #[serde(default)]
    services: BTreeMap<String, Service>,
}

#[derive(Deserialize)]
struct Router {
    #[serde(default)]
    rule: String,
    service: String,
    #[serde(default)]
    middlewares: Vec<String>,
}

/// The two kinds of middleware trueup writes; others are read as neither.
#[derive(Deserialize)]
struct Middleware {
    headers: Option<Headers>,
    #[serde(rename = "addPrefix")]
    add_prefix: Option<AddPrefix>,
}

#[derive(Deserialize)]
struct Headers {
    #[serde(rename = "customResponseHeaders", default)]
    custom_response_headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AddPrefix {
    prefix: String,
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

/// What a router of a route file does, as read back.
struct Read<'f> {
    rule: &'f str,
    /// The server URL followed by the `addPrefix` prefix, as it was rendered.
    upstream: String,
    /// The value of [`DEPLOYMENT_HEADER`] it answers with, when it has trueup's headers
    /// middleware.
    answers: Option<&'f str>,
}

/// Reads router `name` with its service and the middlewares trueup writes for it
/// (`NAME-id`, `NAME-prefix`). A router that uses another middleware is not one trueup
/// wrote.
fn read_router<'f>(http: &'f Http, name: &str) -> Result<Read<'f>, String> {
    let Some(router) = http.routers.get(name).filter(|r| r.service == name) else {
        return Err(format!("it has no router `{name}` for service `{name}`"));
    };
    let (id, prefix_name) = (format!("{name}-id"), format!("{name}-prefix"));
    let (mut answers, mut prefix) = (None, "");
    for used in &router.middlewares {
        let defined = http.middlewares.get(used);
        if *used == id {
            let Some(headers) = defined.and_then(|m| m.headers.as_ref()) else {
                return Err(format!(
                    "router `{name}` uses `{used}`, which the file does not define as a headers middleware"
                ));
            };
            answers = headers.custom_response_headers.get(DEPLOYMENT_HEADER).map(String::as_str);
        } else if *used == prefix_name {
            let Some(add) = defined.and_then(|m| m.add_prefix.as_ref()) else {
                return Err(format!(
                    "router `{name}` uses `{used}`, which the file does not define as an addPrefix middleware"
                ));
            };
            prefix = &add.prefix;
        } else {
            return Err(format!("router `{name}` uses middleware `{used}`, which trueup does not write"));
        }
    }
    match http.services.get(name).map(|s| s.load_balancer.servers.as_slice()) {
        Some([server]) => Ok(Read { rule: &router.rule, upstream: format!("{}{prefix}", server.url), answers }),
        _ => Err(format!("service `{name}` does not have exactly one server")),
    }
}
/// Reads the route file at `path`, for the project named by its stem. A file that cannot
/// be read or is not a trueup route comes back with [`Route::problem`] set.
pub fn read_route(path: &Path) -> Route {
    let project = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    use std::io::Read as _;
    // Room for a whole route file: one read and the one that finds its end, without the
    // small probing reads an empty buffer starts with.
    let mut bytes = Vec::with_capacity(4096);
    let read = std::fs::File::open(path).and_then(|f| f.take(ROUTE_CAP + 1).read_to_end(&mut bytes));
    route_of(project, read.map(|_| bytes))
}

/// The route `project`'s file holds, from what reading it (at most [`ROUTE_CAP`] bytes
/// and one more) gave.
fn route_of(project: &str, read: std::io::Result<Vec<u8>>) -> Route {
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) => return broken(None, format!("cannot read it: {e}")),
    };
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

/// Reads the text of `project`'s route file (pure): the header line's deployment and the
/// main router's domain and upstream. A preview in the file is left out (see
/// [`preview_of`]).
pub fn parse_route(project: &str, text: &str) -> Route {
    parse_rendered(project, text).unwrap_or_else(|| parse_route_yaml(project, text))
}

/// The route in `text` when `text` is, byte for byte, what [`render_route`] writes for
/// it, found without parsing YAML: the header's deployment, the rule's domain and the
/// server URL and prefix are picked out of their lines, rendered again and compared with
/// the whole text. Since [`parse_route_yaml`] reads every rendered route back as it was
/// rendered, the two agree wherever this one answers; anything else (a preview, a file
/// edited by hand, another version) gets `None` and goes to the YAML parser.
fn parse_rendered(project: &str, text: &str) -> Option<Route> {
    let (first, rest) = text.split_once('\n')?;
    let (_, deployment) = header(first)?;
    // Each value is taken from the first line that holds it, a line at a time: a value
    // taken from the wrong line only makes the text differ from the render.
    let (mut domain, mut origin, mut prefix) = (None, None, None);
    for line in rest.as_bytes().split(|&b| b == b'\n') {
        let value = |start: &str, end: &str| line.strip_prefix(start.as_bytes())?.strip_suffix(end.as_bytes());
        domain = domain.or_else(|| value("      rule: \"Host(`", "`)\""));
        origin = origin.or_else(|| value("          - url: \"", "\""));
        prefix = prefix.or_else(|| value("        prefix: \"", "\""));
    }
    // Cut from the text at ASCII bytes, each value is UTF-8 as the text is.
    let (domain, origin) = (std::str::from_utf8(domain?).ok()?, std::str::from_utf8(origin?).ok()?);
    let upstream = match prefix {
        Some(prefix) => [origin, std::str::from_utf8(prefix).ok()?].concat(),
        None => origin.to_owned(),
    };
    // The text is compared with the render piece by piece, without writing it.
    let file = RouteFile { project, deployment, upstream: &upstream, domain, preview: None };
    let mut same = Matches(Some(text));
    write_route(&file, &mut same).ok()?;
    (same.0 == Some("")).then(|| Route {
        deployment: Some(deployment.to_owned()),
        upstream,
        domain: Some(domain.to_owned()),
        problem: None,
    })
}

/// [`parse_route`] through the YAML parser always: what it falls back to for a file that
/// is not exactly one [`render_route`] writes, and the reference its fast path is tested
/// against.
pub fn parse_route_yaml(project: &str, text: &str) -> Route {
    let Some((named, deployment)) = header(text.lines().next().unwrap_or_default()) else {
        return broken(None, "it has no `# Managed by trueup:` header".to_owned());
    };
    if named != project {
        return broken(Some(deployment.to_owned()), format!("its header names project `{named}`"));
    }
    let file: TraefikFile = match serde_saphyr::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            return broken(Some(deployment.to_owned()), format!("it is not valid Traefik YAML: {first}"));
        }
    };
    let name = format!("trueup-{project}");
    let read = match read_router(&file.http, &name) {
        Ok(read) => read,
        Err(problem) => return broken(Some(deployment.to_owned()), problem),
    };
    let Some(domain) = read.rule.strip_prefix("Host(`").and_then(|r| r.strip_suffix("`)")) else {
        let problem = format!("router `{name}` has rule `{}`, not Host(`DOMAIN`)", read.rule);
        return broken(Some(deployment.to_owned()), problem);
    };
    if let Some(answers) = read.answers.filter(|a| *a != deployment) {
        let problem = format!("router `{name}` answers `{DEPLOYMENT_HEADER}: {answers}`, not `{deployment}`");
        return broken(Some(deployment.to_owned()), problem);
    }
    Route {
        deployment: Some(deployment.to_owned()),
        upstream: read.upstream,
        domain: Some(domain.to_owned()),
        problem: None,
    }
}

/// The preview in the text of `project`'s route file (pure), when it holds one as
/// [`render`] writes it: its router, service and middlewares, a rule naming the previewed
/// deployment and a response header that names the same one.
pub fn preview_of(project: &str, text: &str) -> Option<PreviewRoute> {
    let file: TraefikFile = serde_saphyr::from_str(text).ok()?;
    let read = read_router(&file.http, &preview_name(project)).ok()?;
    let (_, rest) = read.rule.split_once(&format!(") && Header(`{PREVIEW_HEADER}`, `"))?;
    let deployment = rest.strip_suffix("`)")?;
    let rendered = read.rule.strip_prefix("Host(`").and_then(|r| r.split_once('`')).map(|(d, _)| d);
    let sound = rendered.is_some_and(|domain| read.rule == preview_rule(domain, deployment))
        && read.answers == Some(deployment);
    sound.then(|| PreviewRoute { deployment: deployment.to_owned(), upstream: read.upstream })
}

/// The first line of a route file trueup writes, naming its project and deployment.
pub fn header_line(project: &str, deployment: &str) -> String {
    header_pieces(project, deployment).concat()
}

/// The pieces of [`header_line`].
fn header_pieces<'a>(project: &'a str, deployment: &'a str) -> [&'a str; 5] {
    [HEADER_PREFIX, project, " deployment=", deployment, HEADER_SUFFIX]
}

/// True when `text` starts with trueup's header: the file is trueup's to rewrite or remove.
pub fn is_managed(text: &str) -> bool {
    header(text.lines().next().unwrap_or_default()).is_some()
}

/// The project and deployment named by a header line.
fn header(line: &str) -> Option<(&str, &str)> {
    const DEPLOYMENT: &str = " deployment=";
    let rest = line.strip_prefix(HEADER_PREFIX)?.strip_suffix(HEADER_SUFFIX)?;
    // The first ` deployment=`, as `split_once` finds it, but through a search for its
    // space, a byte: a search for the whole string set up its searcher for each file
    // (about 700 instructions a route file, 7 million at 10,000 projects).
    let at = rest.match_indices(' ').map(|(at, _)| at).find(|&at| rest[at..].starts_with(DEPLOYMENT))?;
    Some((&rest[..at], &rest[at + DEPLOYMENT.len()..]))
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
    use crate::world::at::{Dir, Kind, Opened, Use};
    let fail = |source| RouteError::ReadDir { path: dir.to_owned(), source };
    // Each file is read relative to the open folder: one short lookup, not the whole
    // path again, ten thousand times.
    let mut folder = match Dir::open(dir, Use::Listing).map_err(fail)? {
        Opened::Dir(folder) => folder,
        Opened::Absent => return Ok(BTreeMap::new()),
        Opened::Other(_) => return Err(fail(std::io::Error::from_raw_os_error(libc::ENOTDIR))),
    };
    let mut files = Vec::new();
    for (name, kind) in folder.entries().map_err(fail)? {
        let Ok(name) = name.into_string() else { continue };
        // trueup writes `PROJECT.yaml` only; a `.yml` file is never one of its routes.
        let stem = name.strip_suffix(".yaml");
        if let Some(stem) = stem.filter(|_| !name.starts_with('.')) {
            let kind = match kind {
                Some(kind) => Some(kind),
                None => folder.stat(name.as_ref()).map_err(fail)?,
            };
            files.push((stem.to_owned(), name.clone(), kind));
        }
    }
    // Read in the order of their projects (names are unique in a folder, so no order
    // between equals to keep), and the map built from them in that order at once, rather
    // than by an insert each that searches the map: the sort and the map, 27 million
    // instructions to 13 at 10,000 route files (callgrind).
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let routes = files.into_iter().filter_map(|(project, name, kind)| {
        let route = match kind {
            Some(Kind::File) => route_of(&project, folder.read_file(name.as_ref(), ROUTE_CAP)),
            // The listing gave no kind and the look that followed found nothing: gone since
            // the listing, so no route (one removed between the listing and its read, with
            // the kind given, is reported as a route that cannot be read).
            None => return None,
            Some(_) => broken(None, format!("`{name}` is not a regular file")),
        };
        Some((project, route))
    });
    Ok(routes.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(deployment: &str, upstream: &str, domain: &str) -> Route {
        Route {
            deployment: Some(deployment.into()),
            upstream: upstream.into(),
            domain: Some(domain.into()),
            problem: None,
        }
    }

    #[test]
    fn a_rendered_route_is_read_without_the_parser_and_anything_else_is_left_to_it() {
        for upstream in ["http://127.0.0.1:8080", "http://127.0.0.1:8081/webroot/p1"] {
            let text = render_route("p1", "d7", upstream, "p1.localhost").unwrap();
            assert_eq!(parse_rendered("p1", &text), Some(route("d7", upstream, "p1.localhost")));
            // Another project's file, one edited after the header, one with more after it.
            assert_eq!(parse_rendered("p2", &text), None);
            assert_eq!(parse_rendered("p1", &text.replace("\"d7\"", "\"d8\"")), None);
            assert_eq!(parse_rendered("p1", &format!("{text}# more\n")), None);
            assert_eq!(parse_rendered("p1", text.trim_end()), None);
        }
    }

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
      middlewares:
        - trueup-p1-id
  middlewares:
    trueup-p1-id:
      headers:
        customResponseHeaders:
          X-Trueup-Deployment: \"d7\"
  services:
    trueup-p1:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8080\"
"
        );
        assert_eq!(parse_route("p1", &text), route("d7", "http://127.0.0.1:8080", "p1.localhost"));
        assert_eq!(preview_of("p1", &text), None);
        // Ids may end in a dot; the header still reads back.
        let text = render_route("p1", "d7.", "https://app:8443/x", "a.example.org").unwrap();
        assert_eq!(parse_route("p1", &text), route("d7.", "https://app:8443/x", "a.example.org"));
    }

    #[test]
    fn an_upstream_path_becomes_a_prefix_and_reads_back_whole() {
        let text = render_route("site", "d2", "http://127.0.0.1:8081/webroot/site", "site.localhost").unwrap();
        assert_eq!(
            text,
            "# Managed by trueup: project=site deployment=d2. Changes are overwritten.
http:
  routers:
    trueup-site:
      rule: \"Host(`site.localhost`)\"
      service: trueup-site
      middlewares:
        - trueup-site-id
        - trueup-site-prefix
  middlewares:
    trueup-site-id:
      headers:
        customResponseHeaders:
          X-Trueup-Deployment: \"d2\"
    trueup-site-prefix:
      addPrefix:
        prefix: \"/webroot/site\"
  services:
    trueup-site:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8081\"
"
        );
        assert_eq!(parse_route("site", &text), route("d2", "http://127.0.0.1:8081/webroot/site", "site.localhost"));
        // Every upstream reads back as it was written, whatever its path.
        let upstreams = [
            ("http://h", None),
            ("http://h/", None),
            ("http://h:1/a/", Some("/a/")),
            ("https://h/a//b", Some("/a//b")),
            ("http://u@h:9/x.y/z", Some("/x.y/z")),
        ];
        for (upstream, prefix) in upstreams {
            let text = render_route("p", "d", upstream, "p.localhost").unwrap();
            assert_eq!(parse_route("p", &text).upstream, upstream, "{text}");
            let rendered = text.split_once("prefix: \"").map(|(_, rest)| rest.split_once('"').unwrap().0);
            assert_eq!(rendered, prefix, "{text}");
        }
    }

    #[test]
    fn a_version_1_file_still_reads() {
        let v1 = "# Managed by trueup: project=p1 deployment=d7. Changes are overwritten.
http:
  routers:
    trueup-p1:
      rule: \"Host(`p1.localhost`)\"
      service: trueup-p1
  services:
    trueup-p1:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8080/x\"
";
        assert_eq!(parse_route("p1", v1), route("d7", "http://127.0.0.1:8080/x", "p1.localhost"));
        assert_eq!(preview_of("p1", v1), None);
    }

    #[test]
    fn a_preview_sits_beside_the_live_route() {
        let text = render(&RouteFile {
            project: "p1",
            deployment: "d1",
            upstream: "http://127.0.0.1:8081/webroot/p1",
            domain: "p1.localhost",
            preview: Some(Preview { deployment: "d2", upstream: "http://127.0.0.1:8082" }),
        })
        .unwrap();
        assert_eq!(
            text,
            "# Managed by trueup: project=p1 deployment=d1. Changes are overwritten.
http:
  routers:
    trueup-p1:
      rule: \"Host(`p1.localhost`)\"
      service: trueup-p1
      middlewares:
        - trueup-p1-id
        - trueup-p1-prefix
    trueup-p1~preview:
      rule: \"Host(`p1.localhost`) && Header(`X-Trueup-Preview`, `d2`)\"
      priority: 1000
      service: trueup-p1~preview
      middlewares:
        - trueup-p1~preview-id
  middlewares:
    trueup-p1-id:
      headers:
        customResponseHeaders:
          X-Trueup-Deployment: \"d1\"
    trueup-p1-prefix:
      addPrefix:
        prefix: \"/webroot/p1\"
    trueup-p1~preview-id:
      headers:
        customResponseHeaders:
          X-Trueup-Deployment: \"d2\"
  services:
    trueup-p1:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8081\"
    trueup-p1~preview:
      loadBalancer:
        servers:
          - url: \"http://127.0.0.1:8082\"
"
        );
        // The live route is what the planner reads; the preview is read on its own.
        assert_eq!(parse_route("p1", &text), route("d1", "http://127.0.0.1:8081/webroot/p1", "p1.localhost"));
        let preview = PreviewRoute { deployment: "d2".into(), upstream: "http://127.0.0.1:8082".into() };
        assert_eq!(preview_of("p1", &text), Some(preview));
        let text = render(&RouteFile {
            project: "p1",
            deployment: "d1",
            upstream: "http://127.0.0.1:8081/webroot/p1",
            domain: "p1.localhost",
            preview: Some(Preview { deployment: "d2.x", upstream: "http://127.0.0.1:8081/webroot/p1-next" }),
        })
        .unwrap();
        let preview =
            PreviewRoute { deployment: "d2.x".into(), upstream: "http://127.0.0.1:8081/webroot/p1-next".into() };
        assert_eq!(preview_of("p1", &text), Some(preview));
        // Another project's file holds no preview of this one.
        assert_eq!(preview_of("p2", &text), None);
        // A preview whose response header names another deployment is not trueup's.
        assert_eq!(preview_of("p1", &text.replace("\"d2.x\"", "\"d3\"")), None);
    }

    #[test]
    fn render_refuses_what_would_break_the_file() {
        let not_url = "is not an http(s) URL without spaces, quotes, control characters, query or fragment";
        let bad = [
            ("../p", "d1", "http://x", "p.localhost", "project id `../p` is not a plain name".to_owned()),
            ("p", "d 1", "http://x", "p.localhost", "deployment id `d 1` is not a plain name".to_owned()),
            ("p", "d1", "http://x\"\n  evil: 1", "p.localhost", format!("upstream `http://x\"\n  evil: 1` {not_url}")),
            ("p", "d1", "ftp://x", "p.localhost", format!("upstream `ftp://x` {not_url}")),
            ("p", "d1", "http://", "p.localhost", format!("upstream `http://` {not_url}")),
            ("p", "d1", "http://x/a?b=1", "p.localhost", format!("upstream `http://x/a?b=1` {not_url}")),
            ("p", "d1", "http://x/a#b", "p.localhost", format!("upstream `http://x/a#b` {not_url}")),
            ("p", "d1", "http://x", "a`)||Host(`b", "domain `a`)||Host(`b` is not a host name".to_owned()),
            ("p", "d1", "http://x", "", "domain `` is not a host name".to_owned()),
        ];
        for (project, deployment, upstream, domain, message) in bad {
            let err = render_route(project, deployment, upstream, domain).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        let previews = [
            (
                Preview { deployment: "d`2", upstream: "http://x" },
                "preview deployment id `d`2` is not a plain name".to_owned(),
            ),
            (Preview { deployment: "d2", upstream: "http://x/\"" }, format!("upstream `http://x/\"` {not_url}")),
        ];
        for (preview, message) in previews {
            let file = RouteFile {
                project: "p",
                deployment: "d1",
                upstream: "http://x",
                domain: "p.localhost",
                preview: Some(preview),
            };
            assert_eq!(render(&file).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn a_route_file_is_read_up_to_its_cap_and_one_past_it_is_a_problem() {
        let dir = crate::test_dir::TestDir::new("route-cap");
        let good = render_route("p1", "d7", "http://127.0.0.1:8080", "p1.localhost").unwrap();
        let padded = |len: usize| {
            let mut text = good.clone();
            text.push_str(&"#".repeat(len - text.len()));
            text
        };
        let cap = usize::try_from(ROUTE_CAP).unwrap();
        for (len, larger) in [(cap, false), (cap + 1, true)] {
            let path = dir.join("p1.yaml");
            std::fs::write(&path, padded(len)).unwrap();
            let problems = [read_route(&path).problem, observe_routes(&dir).unwrap()["p1"].problem.clone()];
            for problem in problems {
                let said = problem.as_deref().is_some_and(|p| p.contains("larger than 256 KiB"));
                assert_eq!(said, larger, "{len} bytes: {problem:?}");
            }
        }
    }

    #[test]
    fn a_bad_file_is_a_problem_not_an_error() {
        let good = render_route("p1", "d7", "http://127.0.0.1:8080/webroot/p1", "p1.localhost").unwrap();
        let cases = [
            ("http: {}\n", "it has no `# Managed by trueup:` header"),
            (&good.replace("project=p1", "project=p2"), "its header names project `p2`"),
            (&format!("{good}  : : [\n"), "it is not valid Traefik YAML"),
            (&good.replace("service: trueup-p1", "service: other"), "it has no router `trueup-p1`"),
            (&good.replace("          - url", "          - url: \"http://b\"\n          - url"), "exactly one server"),
            (
                &good.replace("X-Trueup-Deployment: \"d7\"", "X-Trueup-Deployment: \"d6\""),
                "router `trueup-p1` answers `X-Trueup-Deployment: d6`, not `d7`",
            ),
            (
                &good.replace("        - trueup-p1-prefix", "        - trueup-p1-prefix\n        - auth@file"),
                "router `trueup-p1` uses middleware `auth@file`, which trueup does not write",
            ),
            (
                &good.replace("    trueup-p1-prefix:", "    trueup-p1-other:"),
                "router `trueup-p1` uses `trueup-p1-prefix`, which the file does not define as an addPrefix middleware",
            ),
            (
                &good.replace("      headers:", "      chain:"),
                "router `trueup-p1` uses `trueup-p1-id`, which the file does not define as a headers middleware",
            ),
        ];
        for (text, problem) in cases {
            let route = parse_route("p1", text);
            let got = route.problem.unwrap_or_default();
            assert!(got.starts_with(problem) || got.contains(problem), "{got:?} for\n{text}");
            let header = (!text.starts_with("http:")).then_some("d7");
            assert_eq!(route.deployment.as_deref(), header, "{text}");
        }
    }

    proptest::proptest! {
        /// Whatever it holds, a rendered file reads back as the route and the preview it
        /// was rendered from.
        #[test]
        fn render_then_parse_is_the_identity(
            project in "[a-z0-9][a-z0-9._-]{0,12}",
            live in "[A-Za-z0-9][A-Za-z0-9._-]{0,12}",
            next in "[A-Za-z0-9][A-Za-z0-9._-]{0,12}",
            upstream in "https?://[a-z0-9.-]{1,12}(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]{0,20})?",
            preview_upstream in "https?://[a-z0-9.-]{1,12}(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]{0,20})?",
            domain in "[a-z0-9][a-z0-9_-]{0,10}(\\.[a-z0-9][a-z0-9_-]{0,10}){0,3}",
            with_preview: bool,
        ) {
            let preview = with_preview.then_some(Preview { deployment: &next, upstream: &preview_upstream });
            let file = RouteFile { project: &project, deployment: &live, upstream: &upstream, domain: &domain, preview };
            let text = render(&file).unwrap();
            proptest::prop_assert_eq!(parse_route(&project, &text), route(&live, &upstream, &domain));
            let read = preview_of(&project, &text);
            let want = preview.map(|p| PreviewRoute { deployment: p.deployment.to_owned(), upstream: p.upstream.to_owned() });
            proptest::prop_assert_eq!(read, want);
        }

        /// A domain is valid as its labels, split at each `.`, say.
        #[test]
        fn a_domain_is_valid_as_its_labels_say(labels in proptest::collection::vec("[a-z0-9_-]{0,3}|[a-z]{60,66}|[-.A\u{e9} ]", 0..6), long in 0..2_usize) {
            let domain = labels.join(".").repeat(1 + long * 60);
            let by_labels = domain.len() <= 253
                && domain.split('.').all(|label| {
                    (1..=63).contains(&label.len())
                        && !label.starts_with('-')
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            proptest::prop_assert_eq!(valid_domain(&domain), by_labels, "{:?}", domain);
        }

        /// A header line is cut at its first ` deployment=`, as `split_once` cuts it,
        /// however many there are and whatever spaces come before.
        #[test]
        fn a_header_is_cut_at_its_first_deployment(rest in "[ a-z=]{0,12}( deployment=[ a-z=]{0,12}){0,3}") {
            let line = [HEADER_PREFIX, &rest, HEADER_SUFFIX].concat();
            proptest::prop_assert_eq!(header(&line), rest.split_once(" deployment="));
        }
    }
}
