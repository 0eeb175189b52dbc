//! The store reads back the deployments the model says the reconciler needs, or fewer live ones:
//! `Store::load_reconcilable` (SQL) against `Deployment::reconcilable` (Rust), over
//! generated histories and specs with one or two live phases.

use proptest::prelude::*;
use trueup::model::Claim;
use trueup::store::Store;

use crate::scratch::Scratch;
use crate::store::{deployment, project, t};

const PHASES: [&str; 5] = ["QUEUED", "BUILDING", "ACTIVE", "LIVE", "FAILED"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_store_reads_what_the_model_calls_reconcilable(
        rows in proptest::collection::vec((0..PHASES.len(), any::<bool>(), any::<bool>()), 0..12),
        two_live in any::<bool>(),
    ) {
        let live: &[&str] = if two_live { &["ACTIVE", "LIVE"] } else { &["ACTIVE"] };
        let dir = Scratch::new("reconcilable");
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.upsert_projects(&[project("p1")]).unwrap();
        let mut all = Vec::new();
        for (i, (phase, finished, claimed)) in rows.into_iter().enumerate() {
            let mut d = deployment(&format!("d{i:02}"), "p1", PHASES[phase]);
            d.finished_at = finished.then(|| t("2025-10-01T00:00:00Z"));
            d.owner = claimed.then(|| Claim::new("w", t("2025-10-02T12:00:00Z")));
            all.push(d);
        }
        store.insert_deployments(&all, t("2025-09-30T00:00:00Z")).unwrap();
        let (_, read) = store.load_reconcilable(live).unwrap();
        let read: Vec<&str> = read.iter().map(|d| d.id.as_str()).collect();
        let expected: Vec<&str> =
            all.iter().filter(|d| d.reconcilable(live.contains(&d.phase.as_str()))).map(|d| d.id.as_str()).collect();
        // The store reads less than the model of the live ones (a window per project, see
        // `Deployment::reconcilable`; tests/integration/lean.rs shows it plans the same),
        // never more, and every deployment that is open or claimed.
        let open: Vec<&str> = all.iter().filter(|d| d.reconcilable(false)).map(|d| d.id.as_str()).collect();
        prop_assert!(read.iter().all(|id| expected.contains(id)), "read {:?}, beyond {:?}", read, expected);
        prop_assert!(open.iter().all(|id| read.contains(id)), "read {:?}, without all of {:?}", read, open);
    }
}
