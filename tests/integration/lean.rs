//! The lean observation path (issue 11): what it skips must never change a plan.
//!
//! - The store is read without the history: the newest live release per project, those
//!   created after an open deployment, and the rest of a project's releases only when
//!   the newest lost its folder and another release folder is there. A staged world whose fallback and
//!   superseding release both lie beyond that window must plan, for real, exactly as the
//!   model plans the whole world.
//! - A route file in trueup's own shape is read without a YAML parse: wherever the fast
//!   path answers, it must agree with the parser, for every rendered route and for files
//!   that are almost, but not exactly, rendered ones.
//! - A plan that is only shown carries no fingerprint, which serializes the whole world;
//!   an apply hashes it while it makes its changes.

use proptest::prelude::*;
use trueup::model::Route;
use trueup::plan;
use trueup::spec;
use trueup::store::Store;
use trueup::world::fixture;
use trueup::world::observe::{ObserveConfig, observe};
use trueup::world::routes::{Preview, RouteFile, parse_route, parse_route_yaml, render, render_route};
use trueup::world::stage::stage;

use crate::scratch::Scratch;
use crate::support::Trueup;

/// `p1`: six live releases, the five newest without a folder, so its fallback lies past
/// the window. `p2`: a QUEUED deployment stuck, and `o1`, created after it and live, but
/// finished before three other live releases, so it lies past the window too: `o1`
/// supersedes it all the same. `p3`: a history of live releases, never read.
const WORLD: &str = r#"
description: fallbacks and a superseding release past the window of newest releases
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1, services: [ { id: web, primary: true } ] }
  - { id: p2, services: [ { id: web, primary: true } ] }
  - { id: p3, services: [ { id: web, primary: true } ] }
deployments:
  - { id: a1, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-01T00:00:00Z, finished_at: 2025-09-01T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8001" } }
  - { id: a2, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-02T00:00:00Z, finished_at: 2025-09-02T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8002" } }
  - { id: a3, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-03T00:00:00Z, finished_at: 2025-09-03T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8003" } }
  - { id: a4, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-04T00:00:00Z, finished_at: 2025-09-04T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8004" } }
  - { id: a5, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-05T00:00:00Z, finished_at: 2025-09-05T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8005" } }
  - { id: a6, project: p1, type: upload, phase: ACTIVE, created_at: 2025-09-06T00:00:00Z, finished_at: 2025-09-06T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8006" } }
  - { id: q1, project: p2, type: upload, phase: QUEUED, phase_updated_at: 2025-10-02T11:00:00Z, created_at: 2025-10-02T09:00:00Z, source: { file_path: /uploads/q1.tar.gz } }
  - { id: o1, project: p2, type: upload, phase: ACTIVE, created_at: 2025-10-02T09:30:00Z, finished_at: 2025-10-02T09:40:00Z, metadata: { upstream: "http://127.0.0.1:8011" } }
  - { id: b1, project: p2, type: upload, phase: ACTIVE, created_at: 2025-10-02T08:00:00Z, finished_at: 2025-10-02T10:00:00Z, metadata: { upstream: "http://127.0.0.1:8012" } }
  - { id: b2, project: p2, type: upload, phase: ACTIVE, created_at: 2025-10-02T08:10:00Z, finished_at: 2025-10-02T10:10:00Z, metadata: { upstream: "http://127.0.0.1:8013" } }
  - { id: b3, project: p2, type: upload, phase: ACTIVE, created_at: 2025-10-02T08:20:00Z, finished_at: 2025-10-02T10:20:00Z, metadata: { upstream: "http://127.0.0.1:8014" } }
  - { id: h1, project: p3, type: upload, phase: ACTIVE, created_at: 2025-08-01T00:00:00Z, finished_at: 2025-08-01T01:00:00Z }
  - { id: h2, project: p3, type: upload, phase: ACTIVE, created_at: 2025-08-02T00:00:00Z, finished_at: 2025-08-02T01:00:00Z }
  - { id: h3, project: p3, type: upload, phase: ACTIVE, created_at: 2025-08-03T00:00:00Z, finished_at: 2025-08-03T01:00:00Z }
  - { id: h4, project: p3, type: upload, phase: ACTIVE, created_at: 2025-08-04T00:00:00Z, finished_at: 2025-08-04T01:00:00Z }
  - { id: h5, project: p3, type: upload, phase: ACTIVE, created_at: 2025-08-05T00:00:00Z, finished_at: 2025-08-05T01:00:00Z, metadata: { upstream: "http://127.0.0.1:8021" } }
files:
  /uploads/q1.tar.gz: file
  /var/www/p1/deployments/a1/public/index.html: file
  /var/www/p1/current: { symlink: /var/www/p1/deployments/a6 }
  /var/www/webroot/p1: { symlink: /var/www/p1/current/public }
  /var/www/p2/deployments/b3/public/index.html: file
  /var/www/p2/current: { symlink: /var/www/p2/deployments/b3 }
  /var/www/webroot/p2: { symlink: /var/www/p2/current/public }
  /var/www/p3/deployments/h5/public/index.html: file
  /var/www/p3/current: { symlink: /var/www/p3/deployments/h5 }
  /var/www/webroot/p3: { symlink: /var/www/p3/current/public }
routes:
  p1: { deployment: a6, upstream: "http://127.0.0.1:8006", domain: p1.localhost }
  p2: { deployment: b3, upstream: "http://127.0.0.1:8014", domain: p2.localhost }
  p3: { deployment: h5, upstream: "http://127.0.0.1:8021", domain: p3.localhost }
"#;

#[test]
fn fallbacks_and_superseding_releases_past_the_window_still_plan_as_the_model() {
    let specs: spec::Specs = spec::default_spec().into();
    let fx = fixture::load("lean.yaml", WORLD).unwrap();
    let scratch = Scratch::new("lean");
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();

    // What is read: p1's older releases (its fallback `a1` among them), of p2 the newest
    // live release and `o1`, and of p3 only the newest.
    let (store, _) = Store::open(&staged.db).unwrap();
    let cfg = ObserveConfig { root: staged.root.clone(), routes_dir: staged.routes_dir.clone() };
    let world = observe(&store, &specs, &cfg).unwrap();
    let ids: Vec<&str> = world.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3", "a4", "a5", "a6", "b3", "o1", "q1", "h5"]);
    drop(store);

    // The real plan is the model's plan of the whole world, history included.
    let now = fx.now.to_string();
    let real = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).code(0).run().json();
    let model = plan::plan(&specs, &staged.rebase_world(&fx.world, &specs), fx.now);
    let model: serde_json::Value = serde_json::from_str(&plan::render_json(&model, fx.now)).unwrap();
    assert_eq!(real["actions"], model["actions"]);
    assert_eq!(real["findings"], model["findings"]);
    let shown = serde_json::to_string(&real["actions"]).unwrap();
    assert!(shown.contains("deployments/a1"), "p1 falls back to `a1`: {shown}");
    assert!(shown.contains("superseded: `o1`"), "q1 is superseded by `o1`: {shown}");
}

#[test]
fn an_apply_reports_the_fingerprint_of_the_world_it_planned_from() {
    let (_scratch, staged, now) = crate::machine::staged_yaml("lean-fingerprint", WORLD);
    let now = now.to_string();
    let planned = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).code(0).run().json();
    let applied = Trueup::new(["apply", "--json", "--no-run"]).staged(&staged).now(&now).code(0).run().json();
    // The apply observed the world the plan had, and hashed it while it changed it.
    let fingerprint = planned["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16, "{fingerprint}");
    assert_eq!(applied["fingerprint"].as_str(), Some(fingerprint));
    assert!(!applied["outcomes"].as_array().unwrap().is_empty(), "the apply changed nothing");
    // Changed, the world has another fingerprint.
    let after = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).code(0).run().json();
    assert_ne!(after["fingerprint"].as_str(), Some(fingerprint));
}

/// Equal, and each the route it was rendered from when `rendered` is given.
#[track_caller]
fn check(project: &str, text: &str, rendered: Option<&Route>) {
    let fast = parse_route(project, text);
    assert_eq!(fast, parse_route_yaml(project, text), "the fast path and the parser differ on:\n{text}");
    if let Some(route) = rendered {
        assert_eq!(&fast, route, "a rendered route does not read back:\n{text}");
    }
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_.-]{0,12}"
}

fn upstream() -> impl Strategy<Value = String> {
    let path = prop_oneof![Just(String::new()), Just("/".to_owned()), "(/[a-z0-9_.-]{0,6}){1,3}/?"];
    ("https?", "[a-z0-9.-]{1,12}", proptest::option::of(1u16..), path).prop_map(|(scheme, host, port, path)| {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{scheme}://{host}{port}{path}")
    })
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9_][a-z0-9_-]{0,10}(\\.[a-z0-9][a-z0-9-]{0,8}){0,3}"
}

proptest! {
    #[test]
    fn a_rendered_route_reads_the_same_without_the_parser(
        project in id(), deployment in id(), upstream in upstream(), domain in domain(), other in id(),
    ) {
        let Ok(text) = render_route(&project, &deployment, &upstream, &domain) else { return Ok(()) };
        let route = Route {
            deployment: Some(deployment.clone()),
            upstream: upstream.clone(),
            domain: Some(domain.clone()),
            problem: None,
        };
        check(&project, &text, Some(&route));
        // Read as another project's file, or nearly rendered: the parser decides.
        check(&other, &text, None);
        let edits = [("\n", "\r\n"), ("  ", "   "), ("\"", "'"), ("url", "URL"), ("service: trueup-", "service: x-")];
        for (from, to) in edits {
            check(&project, &text.replacen(from, to, 1), None);
        }
        check(&project, &text.replace(&domain, &format!("x{domain}")), None);
        check(&project, text.trim_end(), None);
        check(&project, &format!("{text}# a comment\n"), None);
        let preview = Preview { deployment: &other, upstream: &upstream };
        let file = RouteFile { project: &project, deployment: &deployment, upstream: &upstream, domain: &domain, preview: Some(preview) };
        if let Ok(text) = render(&file) {
            check(&project, &text, Some(&route));
        }
    }
}

#[test]
fn a_plan_only_shown_skips_the_fingerprint_and_sealing_adds_the_same_one() {
    let specs: spec::Specs = spec::default_spec().into();
    let fx = fixture::load("lean.yaml", WORLD).unwrap();
    let mut shown = plan::plan_unsealed(&specs, &fx.world, fx.now, &plan::Limits::default());
    assert_eq!(shown.fingerprint, "", "the fingerprint serializes the world: not for a plan only shown");
    shown.seal(&fx.world);
    assert_eq!(shown, plan::plan(&specs, &fx.world, fx.now));
    assert_eq!(shown.fingerprint, plan::fingerprint(&fx.world));
}
