//! The verdict, differentially: the real store ([`Store::record_verdict_at`] on a SQLite
//! file) against the in-memory world of the property tests ([`MemoryWorld`]).
//!
//! proptest generates races: a deployment's starting row (phase, attempts, progress, a
//! claim by a worker or by the reconciler itself, expiring around `now` or the wall
//! clock), a verdict planned on that row (restart the phase, move on, or fail; its
//! `stuck_since` sometimes stale), what happens between the plan and the apply (a
//! heartbeat, a claim taken, a worker moving the phase), and a wall clock before or after
//! `now`. Both sides play the same race and must end the same way: the same outcome, twice
//! (a repeated verdict is a no-op), the same row and the same log rows. The convergence
//! properties of `apply_props` thereby speak for the store too.
//!
//! A canary shows that the harness notices a model that drifts: fed a decision altered on
//! its own (ignoring the wall clock, or skipping the progress check), it reports a
//! divergence.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::Serialize;
use trueup::model::{self, Claim, Decision, Deployment, DeploymentType, LogEntry, Standing, Verdict, World};
use trueup::store::{Fence, Lease, PhaseUpdate, Store, StoreError};
use trueup::time::{Duration, Timestamp};
use trueup::world::effects::{Decide, EffectError, Effects, MemoryWorld};

use crate::scratch::Scratch;
use crate::store::project;

/// The reconciler: the apply lease's owner.
const RECONCILER: &str = "apply-r";
/// The workers that claim deployments.
const WORKERS: [&str; 2] = ["worker-7", "worker-9"];
/// The phases a deployment is stuck in, in order; the verdict's "next phase" is the one after.
const PHASES: [&str; 3] = ["QUEUED", "BUILDING", "COPYING_FILES"];
/// The final phase of a failure.
const FAILED: &str = "FAILED";

/// The instant the verdicts are made at.
fn now() -> Timestamp {
    "2025-10-02T12:00:00Z".parse().expect("a valid timestamp")
}

/// `now` moved by `secs` seconds.
fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix(now().unix() + secs)
}

/// One race between a plan and its apply, printed as YAML when the sides disagree.
#[derive(Clone, Serialize)]
struct Race {
    /// The verdict's instant.
    now: Timestamp,
    /// The wall clock when the verdict is recorded.
    wall: Timestamp,
    /// The row when the plan was made.
    start: Deployment,
    /// The verdict planned on it.
    verdict: Planned,
    /// What happens between the plan and the apply, in order.
    events: Vec<Event>,
}

impl fmt::Debug for Race {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}", serde_saphyr::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// The verdict, as planned.
#[derive(Clone, Serialize)]
struct Planned {
    from_phase: String,
    to_phase: String,
    attempt: Option<u32>,
    stuck_since: Option<Timestamp>,
}

/// Something a worker does between the plan and the apply.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    /// A sign of life.
    Heartbeat { at: Timestamp },
    /// A claim, taken when the deployment is free or its claim lapsed at `at`.
    Claim { owner: String, at: Timestamp, until: Timestamp },
    /// A move to another phase, with a fresh attempt count.
    SetPhase { phase: String, at: Timestamp, finished: bool },
}

impl Race {
    fn verdict(&self) -> Verdict<'_> {
        Verdict {
            deployment: &self.start.id,
            from_phase: &self.verdict.from_phase,
            to_phase: &self.verdict.to_phase,
            attempt: self.verdict.attempt,
            stuck_since: self.verdict.stuck_since,
            dead_claim: None,
            reason: "stuck for an hour",
            now: self.now,
        }
    }
}

/// Offsets from `now`, in seconds, around the edges that matter.
fn offset() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![-3600, -600, -1, 0, 1, 600])
}

/// The starting row, without its claim (drawn by [`race`], once the wall clock is).
fn start() -> impl Strategy<Value = Deployment> {
    (
        0..=PHASES.len(),
        0..3u32,
        prop::option::weighted(0.9, prop::sample::select(vec![-7200, -3600, -600])),
        prop::option::weighted(0.5, prop::sample::select(vec![-3000, -300, -1])),
    )
        .prop_map(|(phase, attempts, updated, heartbeat)| {
            let phase = PHASES.get(phase).copied().unwrap_or(FAILED);
            Deployment {
                id: "d".into(),
                project: "p1".into(),
                service: None,
                kind: DeploymentType::Upload,
                phase: phase.into(),
                phase_updated_at: updated.map(at),
                heartbeat_at: heartbeat.map(at),
                attempts,
                finished_at: (phase == FAILED).then(|| at(-60)),
                source: Default::default(),
                metadata: BTreeMap::new(),
                owner: None,
                created_at: Some(at(-86_400)),
            }
        })
}

/// When a starting claim expires, as an instant that matters to the verdict: `lo` and
/// `hi` are the earlier and the later of `now` and the wall clock, and a claim is live
/// while its expiry is after `lo`.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    LongBefore,
    AtLo,
    JustAfterLo,
    Between,
    AtHi,
    JustAfterHi,
    LongAfter,
}

impl Expiry {
    const ALL: [Expiry; 7] = [
        Expiry::LongBefore,
        Expiry::AtLo,
        Expiry::JustAfterLo,
        Expiry::Between,
        Expiry::AtHi,
        Expiry::JustAfterHi,
        Expiry::LongAfter,
    ];

    fn instant(self, now: Timestamp, wall: Timestamp) -> Timestamp {
        let (lo, hi) = (now.min(wall).unix(), now.max(wall).unix());
        Timestamp::from_unix(match self {
            Expiry::LongBefore => lo - 600,
            Expiry::AtLo => lo,
            Expiry::JustAfterLo => lo + 1,
            Expiry::Between => lo + (hi - lo) / 2,
            Expiry::AtHi => hi,
            Expiry::JustAfterHi => hi + 1,
            Expiry::LongAfter => hi + 600,
        })
    }
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        prop::sample::select(vec![-30, -1, 0, 5]).prop_map(|s| Event::Heartbeat { at: at(s) }),
        (prop::sample::select(WORKERS.to_vec()), offset(), prop::sample::select(vec![1, 60, 600]))
            .prop_map(|(owner, s, ttl)| Event::Claim { owner: owner.into(), at: at(s), until: at(s + ttl) }),
        (0..=PHASES.len(), prop::sample::select(vec![-10, 0])).prop_map(|(p, s)| {
            let phase = PHASES.get(p).copied().unwrap_or(FAILED);
            Event::SetPhase { phase: phase.into(), at: at(s), finished: phase == FAILED }
        }),
    ]
}

fn race() -> impl Strategy<Value = Race> {
    let claim = prop::option::weighted(
        0.7,
        (prop::sample::select(vec![RECONCILER, WORKERS[0]]), prop::sample::select(Expiry::ALL.to_vec())),
    );
    (
        (start(), claim),
        0..3u8,
        any::<bool>(),
        prop::sample::select(vec![0, 0, 0, 60, -1]),
        prop::collection::vec(event(), 0..3),
        prop::sample::select(vec![-3600, -1, 0, 1, 3600]),
    )
        .prop_map(|((mut start, claim), kind, again, stale, events, wall)| {
            let wall = at(wall);
            start.owner = claim.map(|(owner, expiry)| Claim::new(owner, expiry.instant(now(), wall)));
            let i = PHASES.iter().position(|p| *p == start.phase).unwrap_or(0);
            let (to_phase, attempt) = match kind {
                // `again` plans the attempt the row already has: already there at once.
                0 => (start.phase.clone(), Some(start.attempts + u32::from(!again))),
                1 => (PHASES[(i + 1) % PHASES.len()].to_owned(), Some(0)),
                _ => (FAILED.to_owned(), None),
            };
            let progress = start.last_progress();
            let stuck_since = match stale {
                0 => progress,
                -1 => None,
                secs => progress.map(|p| Timestamp::from_unix(p.unix() - secs)),
            };
            let verdict = Planned { from_phase: start.phase.clone(), to_phase, attempt, stuck_since };
            Race { now: now(), wall, start, verdict, events }
        })
}

/// How one recording of the verdict ended, on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Moved,
    AlreadyThere,
    Claimed { owner: String, until: Timestamp },
    PhaseMoved { expected: String, actual: String, attempts: u32 },
    // The in-memory error does not carry the progress it saw.
    Progressed,
    Other(String),
}

impl Outcome {
    /// Its kind, for counting.
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Moved => "moved",
            Outcome::AlreadyThere => "already there",
            Outcome::Claimed { .. } => "claimed",
            Outcome::PhaseMoved { .. } => "phase moved",
            Outcome::Progressed => "progressed",
            Outcome::Other(_) => "other",
        }
    }
}

/// What one side made of a race.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// Whether each claim event got the deployment.
    claims: Vec<bool>,
    /// The verdict recorded, then recorded again.
    outcomes: [Outcome; 2],
    /// The row at the end.
    row: Deployment,
    /// Its log at the end.
    log: Vec<LogEntry>,
}

/// A store on a temporary SQLite file, reused by many races (each gets its own
/// deployment), and the reconciler's lease.
struct Db {
    store: Store,
    lease: Lease,
    races: Cell<u32>,
    _dir: Scratch,
}

impl Db {
    fn new(name: &str) -> Db {
        let dir = Scratch::new(name);
        let (store, _) = Store::open(&dir.join("state.db")).unwrap();
        store.upsert_project(&project("p1")).unwrap();
        let lease = store.acquire_lease(RECONCILER, now(), Duration::from_secs(3600)).unwrap();
        Db { store, lease, races: Cell::new(0), _dir: dir }
    }

    /// `race` with a deployment id no earlier race used.
    fn fresh(&self, race: &Race) -> Race {
        let n = self.races.get() + 1;
        self.races.set(n);
        let mut race = race.clone();
        race.start.id = format!("d{n}");
        race
    }
}

/// The model side of [`check`]: plays a race on a [`MemoryWorld`] (see [`memory_side`]).
type Model<'a> = &'a dyn Fn(&Race) -> Observed;

/// The one caller of both verdict implementations: plays `race` on the store in `db` and
/// on `model`, and says where they differ, if they do.
#[track_caller]
fn check(db: &Db, race: &Race, model: Model<'_>) -> Result<(), String> {
    let race = db.fresh(race);
    let (real, modelled) = (store_side(db, &race), model(&race));
    let mut diffs = Vec::new();
    if real.claims != modelled.claims {
        diffs.push(format!("claims taken: store {:?}, model {:?}", real.claims, modelled.claims));
    }
    if real.outcomes != modelled.outcomes {
        diffs.push(format!("outcomes: store {:?}, model {:?}", real.outcomes, modelled.outcomes));
    }
    if real.row != modelled.row {
        diffs.push(format!("row: store {:?}, model {:?}", real.row, modelled.row));
    }
    if real.log != modelled.log {
        diffs.push(format!("log: store {:#?}, model {:#?}", real.log, modelled.log));
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join("\n")) }
}

/// The race on the real store: the row inserted, the events made through the store's
/// own writers, the verdict recorded twice with the race's wall clock.
fn store_side(db: &Db, race: &Race) -> Observed {
    let (store, lease) = (&db.store, &db.lease);
    let id = race.start.id.as_str();
    store.insert_deployment(&race.start, at(-7200)).unwrap();
    let mut claims = Vec::new();
    for event in &race.events {
        // A worker's writes, fenced here by the test's lease: what they leave in the row
        // is the point, not who may make them.
        match event {
            Event::Heartbeat { at } => store.heartbeat(Fence::Lease(lease), id, *at).unwrap(),
            Event::Claim { owner, at, until } => claims.push(store.claim(id, owner, *at, *until).unwrap()),
            Event::SetPhase { phase, at, finished } => {
                let update = PhaseUpdate { phase, at: *at, attempts: 0, finished: *finished, metadata: None };
                store.set_phase(Fence::Lease(lease), id, &update).unwrap();
            }
        }
    }
    let record = || match store.record_verdict_at(lease, &race.verdict(), race.wall) {
        Ok(model::Recorded::Moved) => Outcome::Moved,
        Ok(model::Recorded::AlreadyThere) => Outcome::AlreadyThere,
        Err(StoreError::Claimed { owner, until, .. }) => Outcome::Claimed { owner, until },
        Err(StoreError::PhaseMoved { expected, actual, attempts, .. }) => {
            Outcome::PhaseMoved { expected, actual, attempts }
        }
        Err(StoreError::Progressed { .. }) => Outcome::Progressed,
        Err(other) => Outcome::Other(other.to_string()),
    };
    let outcomes = [record(), record()];
    let row = store.load().unwrap().1.into_iter().find(|d| d.id == id).expect("the row was inserted");
    Observed { claims, outcomes, row, log: store.logs(id).unwrap() }
}

/// The race on a [`MemoryWorld`] deciding with `decide`: the events are made on its
/// world as the store's writers make them.
fn memory_side(race: &Race, decide: Decide) -> Observed {
    let mut d = race.start.clone();
    let mut claims = Vec::new();
    for event in &race.events {
        match event {
            Event::Heartbeat { at } => d.heartbeat_at = Some(*at),
            Event::Claim { owner, at, until } => {
                let free = d.owner.as_ref().is_none_or(|c| c.until <= *at);
                if free {
                    d.owner = Some(Claim::new(owner.clone(), *until));
                }
                claims.push(free);
            }
            Event::SetPhase { phase, at, finished } => {
                d.phase.clone_from(phase);
                d.phase_updated_at = Some(*at);
                d.attempts = 0;
                d.finished_at = finished.then_some(*at);
            }
        }
    }
    let world = World { deployments: vec![d], ..World::default() };
    let mut m = MemoryWorld::new(world).reconciler(RECONCILER).wall_clock(race.wall).decide_with(decide);
    let mut record = || {
        let steps = m.steps();
        match m.verdict(&race.verdict()) {
            // The in-memory world takes one sub-step for the store transaction of a move.
            Ok(()) if m.steps() > steps => Outcome::Moved,
            Ok(()) => Outcome::AlreadyThere,
            Err(EffectError::Claimed { owner, until, .. }) => Outcome::Claimed { owner, until },
            Err(EffectError::PhaseMoved { expected, actual, attempts, .. }) => {
                Outcome::PhaseMoved { expected, actual, attempts }
            }
            Err(EffectError::Progressed(_)) => Outcome::Progressed,
            Err(other) => Outcome::Other(other.to_string()),
        }
    };
    let outcomes = [record(), record()];
    let row = m.world.deployments.remove(0);
    Observed { claims, outcomes, row, log: m.log }
}

/// The model as it is.
fn memory(race: &Race) -> Observed {
    memory_side(race, model::verdict)
}

#[test]
fn the_store_and_the_model_decide_every_race_alike() {
    let db = Db::new("verdict-props");
    let mut runner = TestRunner::new(Config { cases: 256, source_file: Some(file!()), ..Config::default() });
    let seen: RefCell<BTreeMap<&str, u32>> = RefCell::default();
    let result = runner.run(&race(), |race| {
        let outcomes = memory(&race).outcomes;
        *seen.borrow_mut().entry(outcomes[0].kind()).or_default() += 1;
        if outcomes[0] == Outcome::Moved {
            prop_assert_eq!(&outcomes[1], &Outcome::AlreadyThere, "a repeated verdict is a no-op");
        }
        check(&db, &race, &memory).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Each kind of outcome is reached often, so the agreement above means something.
    let seen = seen.into_inner();
    for kind in ["moved", "already there", "claimed", "phase moved", "progressed"] {
        assert!(seen.get(kind).is_some_and(|n| *n >= 10), "`{kind}` is rarely reached: {seen:?}");
    }
}

/// The model deciding as if the wall clock were at the end of time: a claim is compared
/// with the verdict's instant alone, as the model did before it shared the store's decision.
fn ignores_the_wall_clock(v: &Verdict<'_>, row: &Standing, _wall: Timestamp, reconciler: &str) -> Decision {
    model::verdict(v, row, Timestamp::from_unix(i64::MAX), reconciler)
}

/// The model never seeing progress made after the plan.
fn skips_the_progress_check(v: &Verdict<'_>, row: &Standing, wall: Timestamp, reconciler: &str) -> Decision {
    let row = Standing { last_progress: v.stuck_since, ..row.clone() };
    model::verdict(v, &row, wall, reconciler)
}

/// A deployment stuck in `BUILDING` since an hour ago, and its restart planned.
fn stuck() -> Race {
    let start = Deployment {
        id: "d".into(),
        project: "p1".into(),
        service: None,
        kind: DeploymentType::Upload,
        phase: "BUILDING".into(),
        phase_updated_at: Some(at(-3600)),
        heartbeat_at: None,
        attempts: 0,
        finished_at: None,
        source: Default::default(),
        metadata: BTreeMap::new(),
        owner: None,
        created_at: Some(at(-86_400)),
    };
    let verdict = Planned {
        from_phase: "BUILDING".into(),
        to_phase: "BUILDING".into(),
        attempt: Some(1),
        stuck_since: Some(at(-3600)),
    };
    Race { now: now(), wall: at(3600), start, verdict, events: Vec::new() }
}

#[test]
fn the_harness_notices_a_model_that_drifts() {
    let db = Db::new("verdict-canary");
    let wall = Race {
        // A worker's claim lapsed at the verdict's instant (`--now` an hour ahead), live
        // by the wall clock.
        wall: at(-3600),
        start: Deployment { owner: Some(Claim::new(WORKERS[0], at(-1800))), ..stuck().start },
        ..stuck()
    };
    let progressed = Race { events: vec![Event::Heartbeat { at: at(-1) }], ..stuck() };
    check(&db, &wall, &memory).unwrap();
    check(&db, &progressed, &memory).unwrap();
    let drifts: [(&str, Decide, &Race, &str); 2] = [
        ("ignores the wall clock", ignores_the_wall_clock, &wall, "outcomes: store [Claimed"),
        ("skips the progress check", skips_the_progress_check, &progressed, "outcomes: store [Progressed"),
    ];
    for (name, decide, race, said) in drifts {
        let drifted = |race: &Race| memory_side(race, decide);
        let err = check(&db, race, &drifted).expect_err(name);
        assert!(err.starts_with(said), "{name}: {err}\n{race:?}");
        // Generated races find it as well.
        let mut runner = TestRunner::deterministic();
        let found = (0..256).any(|_| check(&db, &draw(&mut runner), &drifted).is_err());
        assert!(found, "{name}: none of 256 generated races diverged");
    }
}

/// One race drawn from [`race`], outside a property.
fn draw(runner: &mut TestRunner) -> Race {
    race().new_tree(runner).expect("the race strategy never rejects").current()
}
