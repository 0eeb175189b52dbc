//! The store reads back exactly the deployments its contract names, and nothing the
//! model calls history: `Store::load_reconcilable` (SQL) against `Deployment::reconcilable`
//! and the release window (Rust), over generated histories and specs with one or two
//! live phases. `lean.rs` shows that what it leaves out never changes a plan.

use proptest::prelude::*;
use trueup::model::Claim;
use trueup::store::{RELEASE_WINDOW, Store};

use crate::scratch::Scratch;
use crate::store::{deployment, project, t};

const PHASES: [&str; 5] = ["QUEUED", "BUILDING", "ACTIVE", "LIVE", "FAILED"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_store_reads_what_the_model_calls_reconcilable(
        rows in proptest::collection::vec((0..PHASES.len(), any::<bool>(), any::<bool>(), 0..3_u8), 0..12),
        two_live in any::<bool>(),
    ) {
        let live: &[&str] = if two_live { &["ACTIVE", "LIVE"] } else { &["ACTIVE"] };
        let dir = Scratch::new("reconcilable");
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.upsert_projects(&[project("p1")]).unwrap();
        let mut all = Vec::new();
        for (i, (phase, finished, claimed, hour)) in rows.into_iter().enumerate() {
            let mut d = deployment(&format!("d{i:02}"), "p1", PHASES[phase]);
            // Created in order; finished at one of three hours, so that ties are common.
            d.created_at = Some(t(&format!("2025-09-30T00:{i:02}:00Z")));
            d.finished_at = finished.then(|| t(&format!("2025-10-01T0{hour}:00:00Z")));
            d.owner = claimed.then(|| Claim::new("w", t("2025-10-02T12:00:00Z")));
            all.push(d);
        }
        store.insert_deployments(&all, t("2025-09-30T00:00:00Z")).unwrap();
        let (_, read) = store.load_reconcilable(live).unwrap();
        let read: Vec<&str> = read.iter().map(|d| d.id.as_str()).collect();

        let is_live = |d: &&trueup::model::Deployment| d.finished_at.is_some() && live.contains(&d.phase.as_str());
        // The newest live releases, newest first, ties by id: `current`'s and its fallbacks.
        let mut newest: Vec<_> = all.iter().filter(is_live).collect();
        newest.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
        newest.truncate(RELEASE_WINDOW as usize);
        let first_open = all.iter().filter(|d| d.finished_at.is_none()).filter_map(|d| d.created_at).min();
        let expected: Vec<&str> = all
            .iter()
            .filter(|d| {
                d.finished_at.is_none()
                    || d.owner.is_some()
                    || newest.iter().any(|n| n.id == d.id)
                    || (is_live(d) && first_open.is_some_and(|open| d.created_at > Some(open)))
            })
            .map(|d| d.id.as_str())
            .collect();
        prop_assert_eq!(&read, &expected);
        // Nothing the model calls history is read.
        for d in all.iter().filter(|d| read.contains(&d.id.as_str())) {
            prop_assert!(d.reconcilable(live.contains(&d.phase.as_str())), "`{}` is history", d.id);
        }
    }
}
