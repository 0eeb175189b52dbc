//! Container reconciliation for real: `trueup apply` against a Podman API service (see
//! [`crate::podman`]), over a staged world whose project `shop` has a live deployment
//! `d0` and `d1` in flight. Each test makes containers through the adapter, runs
//! the `trueup` binary, and checks what the engine holds afterwards.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use trueup::model::{Container, ContainerState};
use trueup::time::{Timestamp, clock};
use trueup::world::containers::{Engine, NewContainer};
use trueup::world::fixture;
use trueup::world::stage::{Staged, stage};

use crate::podman::{IMAGE, Podman, podman};
use crate::scratch::Scratch;
use crate::support::{Ran, Trueup};

/// A world at `now`: image deployments of `shop`, `d0` live (its route right, and no
/// release folder or links, as an image has none), `d1` starting its container since now.
fn world(now: Timestamp) -> String {
    let before = Timestamp::from_unix(now.unix() - 3600);
    format!(
        r#"
description: "issue 10: the project of the container tests"
now: {now}
root: /var/www
projects:
  - {{ id: shop, services: [ {{ id: web, primary: true }} ] }}
deployments:
  - {{ id: dx, project: shop, type: image, phase: FAILED, finished_at: {before} }}
  - {{ id: d0, project: shop, type: image, phase: ACTIVE, finished_at: {before}, metadata: {{ upstream: "http://127.0.0.1:8080" }} }}
  - {{ id: d1, project: shop, type: image, phase: STARTING_CONTAINER, phase_updated_at: {now}, heartbeat_at: {now} }}
routes:
  shop: {{ deployment: d0, upstream: "http://127.0.0.1:8080" }}
"#
    )
}

fn staged(label: &str) -> (Scratch, Staged) {
    let now = clock::now();
    let text = world(now);
    let fx = fixture::load(label, &text).unwrap_or_else(|d| panic!("{}", trueup::diag::render(label, &text, &d)));
    let scratch = Scratch::new(label);
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    (scratch, staged)
}

/// `trueup --container-socket SOCKET ARGS...` against `staged`, expecting `code`.
#[track_caller]
fn trueup(podman: &Podman, staged: &Staged, args: &[&str], code: i32) -> Ran {
    Trueup::new(args.iter().copied()).staged(staged).arg("--container-socket").arg(&podman.socket).code(code).run()
}

/// trueup's labels for a container of `shop`.
fn labels(deployment: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("trueup.project".to_owned(), "shop".to_owned()),
        ("trueup.deployment".to_owned(), deployment.to_owned()),
        ("trueup.role".to_owned(), role.to_owned()),
    ])
}

/// Creates a container of the test image and starts it when `running`; returns its id.
fn container(engine: &Engine, new: NewContainer, running: bool) -> String {
    let name = new.name.clone();
    let id = engine.create(&NewContainer { image: IMAGE.to_owned(), ..new }).unwrap();
    engine.start(&id, &name).unwrap();
    if !running {
        engine.stop(&id, &name).unwrap();
    }
    id
}

/// Every container of the engine, labelled or not, by name.
fn all(podman: &Podman) -> BTreeMap<String, (String, ContainerState)> {
    let out = podman.command().args(["ps", "--all", "--format", "{{.Names}} {{.ID}} {{.State}}"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            let state = match v[2] {
                "running" => ContainerState::Running,
                "created" => ContainerState::Created,
                _ => ContainerState::Exited,
            };
            (v[0].to_owned(), (v[1].to_owned(), state))
        })
        .collect()
}

fn by_name<'c>(listed: &'c [Container], name: &str) -> &'c Container {
    listed.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container `{name}` in {listed:#?}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body `GET /` answers on `127.0.0.1:port`, waiting up to 10 seconds for it.
fn get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match answer {
            Ok(body) if body.starts_with("HTTP/1.") => return body,
            other => assert!(Instant::now() < deadline, "nothing answers on port {port}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stopped_app_container_of_the_live_deployment_is_started() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let (_scratch, staged) = staged("start");
    let id = container(
        &engine,
        NewContainer { name: "shop-web".into(), labels: labels("d0", "app"), ..Default::default() },
        false,
    );
    assert_eq!(by_name(&engine.list().unwrap(), "shop-web").state, ContainerState::Exited);
    let plan = trueup(podman, &staged, &["plan"], 0).stdout;
    assert!(plan.contains("the live app container exited"), "{plan}");
    trueup(podman, &staged, &["apply"], 0);
    let listed = engine.list().unwrap();
    assert_eq!(
        (by_name(&listed, "shop-web").id.as_str(), by_name(&listed, "shop-web").state),
        (id.as_str(), ContainerState::Running)
    );
    trueup(podman, &staged, &["plan", "--detailed-exitcode"], 0);
}

#[test]
fn a_container_with_wrong_labels_is_recreated_and_the_old_one_is_gone_once_the_new_one_runs() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let (_scratch, staged) = staged("recreate");
    let port = free_port();
    let mut wrong = labels("d0", "app");
    wrong.insert("trueup.service".into(), "api".into());
    let new = NewContainer {
        name: "shop-web".into(),
        labels: wrong,
        env: vec!["PORT=8080".into()],
        publish: Some((8080, port)),
        ..Default::default()
    };
    let old = container(&engine, new, true);
    assert!(get(port).contains("trueup test image"));
    let plan = trueup(podman, &staged, &["plan"], 0).stdout;
    assert!(plan.contains("labels do not match its deployment: `trueup.service` is `api`, expected `web`"), "{plan}");
    trueup(podman, &staged, &["apply"], 0);
    let listed = engine.list().unwrap();
    let now = by_name(&listed, "shop-web");
    assert_ne!(now.id, old, "the container was not replaced");
    assert_eq!(now.state, ContainerState::Running);
    assert_eq!(now.label("trueup.service"), Some("web"));
    assert_eq!(listed.len(), 1, "the old container is still there: {listed:#?}");
    assert!(!all(podman).values().any(|(id, _)| old.starts_with(id.as_str())), "{:?}", all(podman));
    // The new one kept what the old one ran with: its environment and its published port.
    assert!(get(port).contains("trueup test image"));
    trueup(podman, &staged, &["plan", "--detailed-exitcode"], 0);
}

#[test]
fn a_zombie_and_an_old_helper_are_removed() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let (_scratch, staged) = staged("zombies");
    container(
        &engine,
        NewContainer { name: "shop-web".into(), labels: labels("d0", "app"), ..Default::default() },
        true,
    );
    container(
        &engine,
        NewContainer { name: "shop-web-dx".into(), labels: labels("dx", "app"), ..Default::default() },
        true,
    );
    container(
        &engine,
        NewContainer { name: "shop-build-d1".into(), labels: labels("d1", "helper"), ..Default::default() },
        true,
    );
    // The helper of the build in flight is young for the default age (1h)...
    let plan = trueup(podman, &staged, &["plan"], 0).stdout;
    assert!(plan.contains("zombie: its deployment `dx` is neither live nor in flight"), "{plan}");
    assert!(!plan.contains("shop-build-d1"), "{plan}");
    // ...and old for one second, a minute from now.
    let later = Timestamp::from_unix(clock::now().unix() + 60).to_string();
    let old = ["--helper-max-age", "1s", "--now", &later];
    let plan = trueup(podman, &staged, &[&["plan"][..], &old].concat(), 0).stdout;
    assert!(plan.contains("because helper container created 1m"), "{plan}");
    assert!(plan.contains("ago, older than 1s"), "{plan}");
    trueup(podman, &staged, &[&["apply"][..], &old].concat(), 0);
    let names: Vec<String> = engine.list().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["shop-web"]);
    trueup(podman, &staged, &[&["plan", "--detailed-exitcode"][..], &old].concat(), 0);
}

#[test]
fn unlabelled_containers_with_trueup_like_names_are_never_touched() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let (_scratch, staged) = staged("unlabelled");
    let bare = |name: &str| NewContainer { name: name.into(), ..Default::default() };
    container(&engine, bare("shop-web"), true);
    // Where a recreate of `shop-api` would put the old one aside: in the way, never removed.
    container(&engine, bare("shop-api.trueup-old"), false);
    // Another tool's label only, on a name like a zombie's: still not trueup's.
    let mut foreign = bare("shop-web-dx");
    foreign.labels.insert("trueup.deployment".into(), "dx".into());
    container(&engine, foreign, true);
    // trueup's own beside them: a zombie, and the live app with a wrong label.
    container(
        &engine,
        NewContainer { name: "shop-old".into(), labels: labels("dx", "app"), ..Default::default() },
        true,
    );
    let mut wrong = labels("d0", "app");
    wrong.insert("trueup.service".into(), "api".into());
    container(&engine, NewContainer { name: "shop-api".into(), labels: wrong, ..Default::default() }, true);
    let before = all(podman);
    assert_eq!(before.len(), 5, "{before:?}");
    let applied = trueup(podman, &staged, &["apply"], 1);
    let refused = "container name `shop-api.trueup-old` is held by";
    assert!(applied.stdout.contains(refused) || applied.stderr.contains(refused), "{applied:?}");
    let mut after = before.clone();
    after.remove("shop-old");
    assert_eq!(all(podman), after, "only the zombie is gone");
    let plan = trueup(podman, &staged, &["plan", "--detailed-exitcode"], 2).stdout;
    assert!(plan.contains("recreate"), "{plan}");
}

#[test]
fn a_socket_that_was_asked_for_and_does_not_answer_is_an_error_saying_what_to_check() {
    let (scratch, staged) = staged("unreachable");
    let socket = scratch.join("no-engine.sock");
    for args in [&["plan"][..], &["apply"], &["status"]] {
        let out =
            Trueup::new(args.iter().copied()).staged(&staged).arg("--container-socket").arg(&socket).code(1).run();
        let said = format!(
            "cannot reach the container engine at `{}` (named by `--container-socket`): check that the file exists",
            socket.display()
        );
        assert!(out.stderr.contains(&said), "{args:?}: {out:?}");
    }
    // `DOCKER_HOST` is read when no flag names a socket, and only unix sockets are taken.
    let out = Trueup::new(["plan"]).staged(&staged).env("TRUEUP_CONTAINER_SOCKET", "").code(1);
    let out = out.env("DOCKER_HOST", "tcp://127.0.0.1:2375").run();
    assert!(out.stderr.contains("`DOCKER_HOST` is `tcp://127.0.0.1:2375`, which is not a unix socket"), "{out:?}");
    // No engine at all: the plan says once that containers are not checked.
    let plan = Trueup::new(["plan", "-v"]).staged(&staged).run().stdout;
    assert_eq!(plan.matches("no container engine is configured").count(), 1, "{plan}");
}

#[test]
fn the_daemon_starts_a_stopped_app_container_in_its_first_cycle_before_it_is_ready() {
    let Some(podman) = podman() else { return };
    let engine = podman.lock();
    let (_scratch, staged) = staged("serve");
    let id = container(
        &engine,
        NewContainer { name: "shop-web".into(), labels: labels("d0", "app"), ..Default::default() },
        false,
    );
    let socket = podman.socket.to_str().unwrap();
    let args = ["--no-run", "--log-format", "json", "--container-socket", socket];
    let mut daemon = crate::serve::Daemon::start(&staged, &args, &[]);
    daemon.wait_for("ready");
    let listed = engine.list().unwrap();
    assert_eq!(
        (by_name(&listed, "shop-web").id.as_str(), by_name(&listed, "shop-web").state),
        (id.as_str(), ContainerState::Running),
        "the stopped container of the live deployment is running before ready"
    );
    let log = daemon.log();
    let summary =
        log.iter().map(|l| crate::serve::json(l)).find(|l| l["message"].as_str().unwrap().starts_with("cycle 1 done"));
    let summary = summary.unwrap_or_else(|| panic!("no summary before ready:\n{}", log.join("\n")));
    let counts = crate::serve::cycle_counts(&summary);
    assert!(counts.contains(&("containers_started", 1)), "{summary}");
    assert!(counts.contains(&("containers_removed", 0)) && counts.contains(&("errors", 0)), "{summary}");
    daemon.signal("TERM");
    let (code, log) = daemon.exit();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    trueup(podman, &staged, &["plan", "--detailed-exitcode"], 0);
}
