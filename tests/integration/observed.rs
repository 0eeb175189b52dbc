//! The store reads back exactly the deployments its contract names, and nothing the
//! model calls history: `Store::load_reconcilable` (SQL) against `Deployment::reconcilable`
//! and the release window (Rust), over generated histories and specs with one or two
//! live phases. `lean.rs` shows that what it leaves out never changes a plan.

use proptest::prelude::*;
use trueup::model::Claim;
use trueup::store::{RELEASE_WINDOW, Store};

use crate::scratch::Scratch;
use crate::store::{deployment, project, t};

/// `ACTIVE` thrice: enough live releases that the window leaves some out.
const PHASES: [&str; 7] = ["QUEUED", "BUILDING", "ACTIVE", "LIVE", "FAILED", "ACTIVE", "ACTIVE"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_reads_what_the_model_calls_reconcilable(
        rows in proptest::collection::vec((0..PHASES.len(), any::<bool>(), any::<bool>(), 0..3_u8), 0..12),
        two_live in any::<bool>(),
    ) {
        let live: &[&str] = if two_live { &["ACTIVE", "LIVE"] } else { &["ACTIVE"] };
        let dir = Scratch::new("reconcilable");
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.upsert_projects(&[project("p1")]).unwrap();
        let all = generated(&["p1"], rows.into_iter().map(|(phase, finished, claimed, at)| (0, phase, finished, claimed, at)));
        store.insert_deployments(&all, t("2025-09-30T00:00:00Z")).unwrap();
        let (_, read) = store.load_reconcilable(live).unwrap();
        let read: Vec<&str> = read.iter().map(|d| d.id.as_str()).collect();
        let expected = reconcilable(&all, live);
        prop_assert_eq!(&read, &expected);
        // A schema 7 database, without the index of releases that finished before they
        // were created, is read the same, through the indexes it has.
        let raw = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        crate::store::backwards_index_of_schema_7(&raw);
        drop(raw);
        let (older, schema) = Store::open_read_only(&dir.join("state.db")).unwrap();
        prop_assert_eq!(schema, 7);
        let (_, read_older) = older.load_reconcilable(live).unwrap();
        prop_assert_eq!(read_older.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), read.clone());
        // Nothing the model calls history is read.
        for d in all.iter().filter(|d| read.contains(&d.id.as_str())) {
            prop_assert!(d.reconcilable(live.contains(&d.phase.as_str())), "`{}` is history", d.id);
        }
    }

    #[test]
    fn one_project_is_read_as_the_read_of_every_project_has_it(
        rows in proptest::collection::vec((0..2_usize, 0..PHASES.len(), any::<bool>(), any::<bool>(), 0..3_u8), 0..16),
        two_live in any::<bool>(),
    ) {
        let live: &[&str] = if two_live { &["ACTIVE", "LIVE"] } else { &["ACTIVE"] };
        let dir = Scratch::new("reconcilable-of");
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.upsert_projects(&[project("p1"), project("p2")]).unwrap();
        let all = generated(&["p1", "p2"], rows);
        store.insert_deployments(&all, t("2025-09-30T00:00:00Z")).unwrap();
        let (_, every) = store.load_reconcilable(live).unwrap();
        let raw = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        crate::store::backwards_index_of_schema_7(&raw);
        drop(raw);
        let (older, _) = Store::open_read_only(&dir.join("state.db")).unwrap();
        for p in ["p1", "p2"] {
            let own: Vec<_> = all.iter().filter(|d| d.project == p).cloned().collect();
            let expected = reconcilable(&own, live);
            let of_every: Vec<&str> = every.iter().filter(|d| d.project == p).map(|d| d.id.as_str()).collect();
            prop_assert_eq!(&of_every, &expected);
            for store in [&store, &older] {
                let read = store.reconcilable_of(p, live).unwrap();
                prop_assert_eq!(read.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), expected.clone());
                prop_assert!(read.iter().all(|d| all.contains(d)), "read back as written");
            }
        }
        prop_assert!(store.reconcilable_of("p3", live).unwrap().is_empty());
    }
}

/// Deployments `d00`, `d01`, ... of `projects[k]` from `(k, phase, finished, claimed, at)`:
/// created in order; finished at one of three times, so that ties are common, the first
/// between the first and second creations, so that the later ones finished before they
/// were created (a clock set back in between).
fn generated(
    projects: &[&str],
    rows: impl IntoIterator<Item = (usize, usize, bool, bool, u8)>,
) -> Vec<trueup::model::Deployment> {
    let mut all = Vec::new();
    for (i, (k, phase, finished, claimed, at)) in rows.into_iter().enumerate() {
        let mut d = deployment(&format!("d{i:02}"), projects[k], PHASES[phase]);
        d.created_at = Some(t(&format!("2025-09-30T00:{i:02}:00Z")));
        let finished_at = ["2025-09-30T00:00:30Z", "2025-10-01T00:00:00Z", "2025-10-01T01:00:00Z"][usize::from(at)];
        d.finished_at = finished.then(|| t(finished_at));
        d.owner = claimed.then(|| Claim::new("w", t("2025-10-02T12:00:00Z")));
        all.push(d);
    }
    all
}

/// The ids of one project's deployments `all` the model calls reconcilable, in order:
/// the open, the claimed, the newest live release (`current`'s) and
/// those created after its first open deployment.
fn reconcilable<'a>(all: &'a [trueup::model::Deployment], live: &[&str]) -> Vec<&'a str> {
    let is_live = |d: &&trueup::model::Deployment| d.finished_at.is_some() && live.contains(&d.phase.as_str());
    // Newest first, ties by id.
    let mut newest: Vec<_> = all.iter().filter(is_live).collect();
    newest.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
    newest.truncate(RELEASE_WINDOW as usize);
    let first_open = all.iter().filter(|d| d.finished_at.is_none()).filter_map(|d| d.created_at).min();
    all.iter()
        .filter(|d| {
            d.finished_at.is_none()
                || d.owner.is_some()
                || newest.iter().any(|n| n.id == d.id)
                || (is_live(d) && first_open.is_some_and(|open| d.created_at > Some(open)))
        })
        .map(|d| d.id.as_str())
        .collect()
}
