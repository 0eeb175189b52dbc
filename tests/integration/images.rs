//! Image deployments for real (issue 10): `trueup deploy --type image` against the Podman
//! API service of the test run ([`crate::podman`]), served through a Traefik of the
//! test's own ([`Proxy::own`]). Each test takes its turn on the engine, as the container
//! tests do, since an apply acts on every trueup container of the engine.

use std::sync::Arc;
use std::time::Duration;

use trueup::model::ContainerState;

use crate::deploy::Serving;
use crate::podman::{IMAGE, Podman, Turn, podman};
use crate::proxy::Proxy;
use crate::scratch::Scratch;
use crate::support::{Ran, Trueup};

/// The loopback ports the tests' containers are given: clear of the ephemeral ports
/// that other tests' servers bind.
const PORTS: &str = "21000-21099";

/// A test's database, root and routes folder behind a Traefik of its own, with the
/// run's container engine.
struct Site {
    scratch: Scratch,
    proxy: Arc<Proxy>,
    podman: &'static Podman,
}

impl Site {
    fn new(name: &str, podman: &'static Podman) -> Site {
        let site = Site { scratch: Scratch::new(name), proxy: Arc::new(Proxy::own()), podman };
        site.trueup(["init", "--proxy"])
            .arg(site.proxy.traefik.to_string())
            .args(["--health-timeout", "5s", "--container-ports", PORTS])
            .run();
        site
    }

    /// `trueup` with this database, root, routes folder and container engine, then `args`.
    fn trueup<const N: usize>(&self, args: [&str; N]) -> Trueup {
        Trueup::new(["--db"])
            .arg(self.scratch.join("state.db"))
            .arg("--root")
            .arg(&self.proxy.root)
            .arg("--routes-dir")
            .arg(&self.proxy.routes)
            .arg("--container-socket")
            .arg(&self.podman.socket)
            .args(args)
    }

    /// `trueup deploy --type image --image IMAGE` to project `web`.
    fn deploy(&self, image: &str) -> Trueup {
        self.trueup(["deploy", "--project", "web", "--type", "image", "--image", image])
    }

    /// `GET /` on `web.localhost` through Traefik: status, deployment header, body.
    fn get(&self) -> (u16, Option<String>, String) {
        self.proxy.get("web.localhost", "/")
    }
}

/// The id a `deploy` printed first (`ID: QUEUED`).
fn id_of(ran: &Ran) -> String {
    ran.stdout.split(':').next().unwrap().trim().to_owned()
}

/// The engine's containers, by name, with their state and deployment label.
fn containers(engine: &Turn) -> Vec<(String, ContainerState, String)> {
    let listed = engine.list().unwrap();
    listed
        .into_iter()
        .map(|c| (c.name.clone(), c.state, c.label("trueup.deployment").unwrap_or("").to_owned()))
        .collect()
}

/// Requests `/` of the site through Traefik in a loop, accepting only the test image's
/// page.
fn serve_loop(proxy: &Arc<Proxy>) -> Serving {
    Serving::accepting(proxy, "web.localhost", |body| body.contains("trueup test image"))
}

#[test]
fn an_image_deployment_replaces_the_previous_through_traefik_without_a_failed_request() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let site = Site::new("image-switch", podman);
    let first = site.deploy(IMAGE).run();
    let id1 = id_of(&first);
    for phase in ["PULLING_IMAGE", "STARTING_CONTAINER", "UPDATING_ROUTES", "HEALTH_CHECK"] {
        assert!(first.stdout.contains(&format!("{id1}: {phase}\n")), "{phase}:\n{}", first.stdout);
    }
    let (status, header, body) = site.get();
    assert_eq!((status, header.as_deref(), body.trim()), (200, Some(id1.as_str()), "trueup test image"));

    let stop = serve_loop(&site.proxy);
    std::thread::sleep(Duration::from_millis(200));
    let id2 = id_of(&site.deploy(IMAGE).run());
    std::thread::sleep(Duration::from_millis(200));
    let count = stop.stop_and_check();
    assert!(count > 20, "only {count} requests were made");

    assert_eq!(site.get().1.as_deref(), Some(id2.as_str()));
    // The old container is gone once the new one served through Traefik.
    assert_eq!(containers(&engine), [(format!("web-{id2}"), ContainerState::Running, id2.clone())]);
    let log = site.trueup(["logs"]).arg(&id2).run().stdout;
    assert!(log.contains(&format!("stopped and removed `web-{id1}`, the container of `{id1}`")), "{log}");
    // The route leads to the container's own loopback port; the deployment has no
    // release folder, so it is never given `current` or a webroot link.
    let route = std::fs::read_to_string(site.proxy.routes.join("web.yaml")).unwrap();
    assert!(route.contains("http://127.0.0.1:210"), "{route}");
    for link in ["web/current", "webroot/web"] {
        assert!(std::fs::symlink_metadata(site.proxy.root.join(link)).is_err(), "{link} exists");
    }
    // What deploy made is what apply would make, containers included.
    site.trueup(["plan", "--detailed-exitcode"]).run();
}

/// Starts an image deploy that pauses at `pause` (`PHASE` or `PHASE:after`), waits until
/// its log says it is there, and kills it with SIGKILL; returns its id.
fn killed_at(site: &Site, pause: &str) -> String {
    let mut command = site.deploy(IMAGE).env("TRUEUP_TEST_PAUSE", pause).command();
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let (phase, when) = pause.split_once(':').unwrap_or((pause, "before"));
    let said = format!("TRUEUP_TEST_PAUSE: paused {when} {phase}");
    let started = std::time::Instant::now();
    let paused = loop {
        let conn = rusqlite::Connection::open(site.scratch.join("state.db")).unwrap();
        let query = "SELECT deployment FROM deployment_logs WHERE message = ?1 ORDER BY id DESC";
        if let Ok(id) = conn.query_row(query, [&said], |r| r.get::<_, String>(0)) {
            break id;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the deploy never paused {when} {phase}");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    paused
}

#[test]
fn an_image_deploy_killed_in_any_phase_is_resumed_by_apply_and_the_site_never_fails() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let site = Site::new("image-kill", podman);
    site.deploy(IMAGE).run();
    let stop = serve_loop(&site.proxy);
    for pause in ["PULLING_IMAGE", "STARTING_CONTAINER:after", "UPDATING_ROUTES", "HEALTH_CHECK", "HEALTH_CHECK:after"]
    {
        let id = killed_at(&site, pause);
        // No --now: the dead claim is noticed at once, and apply runs the deployment on.
        let applied = site.trueup(["apply"]).run();
        assert!(applied.stdout.contains(&format!("{id} is live (ACTIVE)")), "{pause}:\n{}", applied.stdout);
        assert_eq!(site.get().1.as_deref(), Some(id.as_str()), "{pause}");
        // One container, the new one: the killed attempt's and the old one are gone.
        assert_eq!(containers(&engine), [(format!("web-{id}"), ContainerState::Running, id.clone())], "{pause}");
        site.trueup(["plan", "--detailed-exitcode"]).run();
    }
    stop.stop_and_check();
}

#[test]
fn a_failing_image_leaves_the_old_container_serving() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    // An image whose app exits at once: the test image with another command.
    let podman_cli = |args: &[&str]| {
        let out = podman.command().args(args).output().unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    podman_cli(&["create", "--name", "broken-base", IMAGE]);
    podman_cli(&["commit", "-q", "--change", r#"CMD ["/bin/sh", "-c", "exit 3"]"#, "broken-base", "localhost/broken"]);
    podman_cli(&["rm", "broken-base"]);

    let site = Site::new("image-broken", podman);
    let id1 = id_of(&site.deploy(IMAGE).run());
    let failed = site.deploy("localhost/broken").code(1).run();
    let id2 = id_of(&failed);
    assert!(failed.stderr.contains(&format!("{id2} ended in FAILED")), "{failed:?}");
    assert!(failed.stderr.contains("failed its check before it was exposed"), "{failed:?}");

    let (status, header, _) = site.get();
    assert_eq!((status, header.as_deref()), (200, Some(id1.as_str())));
    assert_eq!(containers(&engine), [(format!("web-{id1}"), ContainerState::Running, id1.clone())]);
    // An image the engine does not hold, and that names no registry, fails at once.
    let missing = site.deploy("localhost/nothing-here").code(1).run();
    assert!(missing.stderr.contains("does not hold the image `localhost/nothing-here`"), "{missing:?}");
    assert_eq!(site.get().1.as_deref(), Some(id1.as_str()));
    site.trueup(["plan", "--detailed-exitcode"]).run();
}

#[test]
fn an_image_deployment_without_a_container_engine_fails_saying_what_to_configure() {
    let scratch = Scratch::new("image-no-engine");
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let deploy = |args: &[&str], code: i32| {
        Trueup::new(["--db"])
            .arg(scratch.join("state.db"))
            .arg("--root")
            .arg(&root)
            .arg("--routes-dir")
            .arg(&root)
            .args(["deploy", "--project", "web"])
            .args(args)
            .code(code)
            .run()
    };
    let out = deploy(&["--image", IMAGE], 1);
    assert!(out.stderr.contains("ended in FAILED"), "{out:?}");
    assert!(out.stderr.contains("needs a container engine, and none is configured: pass `--container-socket PATH`"));
    let out = deploy(&["--type", "upload", "--image", IMAGE], 1);
    assert!(out.stderr.contains("--image is for `--type image`"), "{out:?}");
    let out = deploy(&["--type", "image", "--image", IMAGE, "--build", "make"], 1);
    assert!(out.stderr.contains("nothing to build"), "{out:?}");
}
