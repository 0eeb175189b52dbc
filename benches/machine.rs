//! How fast the spec interpreter steps, against a compile-time machine of the same shape.
//!
//! [`trueup::machine::step`] runs the default deployment machine, loaded at run time from
//! `specs/deployment.yaml`. The reference is the same machine written at compile time with
//! `statig` (QUEUED; the IN_PROGRESS superstate holding the six phases and handling
//! `fail` and `cancel`; ACTIVE, FAILED and CANCELLED). Both get the same events: the happy
//! path, then `fail` from every phase, repeated many times. The bench prints ns per step
//! for each, the ratio trueup / statig (the median of several interleaved samples, all in
//! this process, so the machine's speed cancels out), and allocations per step counted by
//! a global allocator. Run it with `cargo bench --bench machine`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use statig::blocking::{self, IntoStateMachine, IntoStateMachineExt as _, Outcome};
use trueup::machine::{EventId, step, step_id};
use trueup::spec::{Spec, StateId, default_spec};

/// Counts allocations (and reallocations) and the bytes they asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// A load and a store rather than `fetch_add`: the bench is single-threaded, and a locked
/// add on every allocation would slow down the allocating side more than the count is worth.
fn count(bytes: usize) {
    ALLOCATIONS.store(ALLOCATIONS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    BYTES.store(BYTES.load(Ordering::Relaxed) + bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations and bytes counted so far.
fn allocated() -> (u64, u64) {
    (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}

/// The events of the default spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Start,
    Done,
    Retry,
    Unhealthy,
    Fail,
    Cancel,
}

impl Event {
    /// The event's name in `specs/deployment.yaml`. The spec speaks only role events: a
    /// worker taking a queued deployment is QUEUED's `done`, and an exhausted health check
    /// fires `retry`; the reference keeps its own names for them.
    fn name(self) -> &'static str {
        match self {
            Event::Start => "done",
            Event::Done => "done",
            Event::Retry => "retry",
            Event::Unhealthy => "retry",
            Event::Fail => "fail",
            Event::Cancel => "cancel",
        }
    }
}

/// The reference machine's shared storage: its entry and exit actions count, so it does
/// per step what the interpreter's exit and entry lists stand for.
#[derive(Debug, Default)]
struct Deployment {
    exits: u32,
    entries: u32,
    /// The `attempts_remaining` guard of `unhealthy`.
    attempts_remaining: bool,
}

/// The reference machine's leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    PullingSource,
    Building,
    CopyingFiles,
    CreatingSymlinks,
    UpdatingRoutes,
    HealthCheck,
    Active,
    Failed,
    Cancelled,
}

impl Phase {
    /// The state's name in `specs/deployment.yaml`.
    fn name(self) -> &'static str {
        match self {
            Phase::Queued => "QUEUED",
            Phase::PullingSource => "PULLING_SOURCE",
            Phase::Building => "BUILDING",
            Phase::CopyingFiles => "COPYING_FILES",
            Phase::CreatingSymlinks => "CREATING_SYMLINKS",
            Phase::UpdatingRoutes => "UPDATING_ROUTES",
            Phase::HealthCheck => "HEALTH_CHECK",
            Phase::Active => "ACTIVE",
            Phase::Failed => "FAILED",
            Phase::Cancelled => "CANCELLED",
        }
    }
}

/// The reference machine's one superstate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    InProgress,
}

impl IntoStateMachine for Deployment {
    type Event<'evt> = Event;
    type Context<'ctx> = ();
    type State = Phase;
    type Superstate<'sub> = Group;

    fn initial() -> Phase {
        Phase::Queued
    }
}

// What `#[state_machine]` would generate; written out so that statig needs no macro crate.
impl blocking::State<Deployment> for Phase {
    fn call_handler(&mut self, d: &mut Deployment, event: &Event, _: &mut ()) -> Outcome<Phase> {
        use Phase::*;
        let to = match (*self, *event) {
            (Queued, Event::Start) => PullingSource,
            (Queued, Event::Cancel) => Cancelled,
            (PullingSource, Event::Done) => Building,
            (Building, Event::Done) => CopyingFiles,
            (Building, Event::Retry) => Building,
            (CopyingFiles, Event::Done) => CreatingSymlinks,
            (CreatingSymlinks, Event::Done) => UpdatingRoutes,
            (UpdatingRoutes, Event::Done) => HealthCheck,
            (HealthCheck, Event::Done) => Active,
            (HealthCheck, Event::Unhealthy) if d.attempts_remaining => HealthCheck,
            (HealthCheck, Event::Unhealthy) => Failed,
            _ => return Outcome::Super,
        };
        Outcome::Transition(to)
    }

    fn call_entry_action(&mut self, d: &mut Deployment, _: &mut ()) {
        d.entries += 1;
    }

    fn call_exit_action(&mut self, d: &mut Deployment, _: &mut ()) {
        d.exits += 1;
    }

    fn superstate(&mut self) -> Option<Group> {
        use Phase::*;
        match self {
            PullingSource | Building | CopyingFiles | CreatingSymlinks | UpdatingRoutes | HealthCheck => {
                Some(Group::InProgress)
            }
            Queued | Active | Failed | Cancelled => None,
        }
    }
}

impl blocking::Superstate<Deployment> for Group {
    fn call_handler(&mut self, _: &mut Deployment, event: &Event, _: &mut ()) -> Outcome<Phase> {
        match event {
            Event::Fail => Outcome::Transition(Phase::Failed),
            Event::Cancel => Outcome::Transition(Phase::Cancelled),
            _ => Outcome::Super,
        }
    }

    fn call_entry_action(&mut self, d: &mut Deployment, _: &mut ()) {
        d.entries += 1;
    }

    fn call_exit_action(&mut self, d: &mut Deployment, _: &mut ()) {
        d.exits += 1;
    }
}

/// One round of the workload: runs that each start from QUEUED. The happy path, then
/// `fail` from each of the six phases.
fn workload() -> Vec<Vec<Event>> {
    let mut runs = vec![[vec![Event::Start], vec![Event::Done; 6]].concat()];
    for phase in 0..6 {
        runs.push([vec![Event::Start], vec![Event::Done; phase], vec![Event::Fail]].concat());
    }
    runs
}

/// Runs that reach every other transition, to check the two machines have one shape:
/// `cancel` from QUEUED and from each phase, `retry` while building, `unhealthy` while
/// checking health (its guard holds on both sides).
fn other_transitions() -> Vec<Vec<Event>> {
    let mut runs = vec![vec![Event::Cancel]];
    for phase in 0..6 {
        runs.push([vec![Event::Start], vec![Event::Done; phase], vec![Event::Cancel]].concat());
    }
    runs.push(vec![Event::Start, Event::Done, Event::Retry, Event::Done]);
    runs.push([vec![Event::Start], vec![Event::Done; 5], vec![Event::Unhealthy, Event::Done]].concat());
    runs
}

/// Runs the workload `rounds` times through the interpreter, from `start`, each event
/// through `step`, which gives the step's exits and entries and where it rests; returns
/// a checksum.
fn run_trueup<E: Copy>(
    start: StateId,
    runs: &[Vec<E>],
    rounds: u32,
    step: impl Fn(StateId, E) -> (usize, StateId),
) -> usize {
    let mut sum = 0;
    for _ in 0..rounds {
        for run in runs {
            let mut state = start;
            for &event in run {
                let (moved, target) = step(state, black_box(event));
                sum += moved;
                state = target;
            }
            sum += state.index();
        }
    }
    sum
}

/// A step with events resolved to their indices when the spec was loaded, as a worker
/// steps.
fn stepping_by_id(spec: &Spec) -> impl Fn(StateId, EventId) -> (usize, StateId) + '_ {
    move |state, event| {
        let t = step_id(spec, state, event, &|_| true).expect("the workload only sends accepted events");
        (t.exits.len() + t.entries.len(), t.target)
    }
}

/// A step with events given by name, looked up at every step.
fn stepping_by_name(spec: &Spec) -> impl Fn(StateId, &str) -> (usize, StateId) + '_ {
    move |state, event| {
        let t = step(spec, state, event, &|_| true).expect("the workload only sends accepted events");
        (t.exits.len() + t.entries.len(), t.target)
    }
}

/// Runs the workload `rounds` times through the statig machine, a new machine per run
/// (as each deployment gets its own); returns a checksum.
fn run_statig(runs: &[Vec<Event>], rounds: u32) -> usize {
    let mut sum = 0;
    for _ in 0..rounds {
        for run in runs {
            let mut machine = Deployment { attempts_remaining: true, ..Deployment::default() }.state_machine();
            for event in run {
                machine.handle(black_box(event));
            }
            let d = machine.inner();
            sum += (d.exits + d.entries) as usize + *machine.state() as usize;
        }
    }
    sum
}

/// Checks, step by step, that both machines take the same transitions: the same number of
/// exits and entries, and the same state to rest in.
fn check_same_shape(spec: &Spec, runs: &[Vec<Event>]) {
    for run in runs {
        let mut state = spec.initial;
        let mut machine = Deployment { attempts_remaining: true, ..Deployment::default() }.state_machine();
        machine.init();
        for event in run {
            let t = step(spec, state, event.name(), &|_| true).expect("the workload only sends accepted events");
            let before = (machine.inner().exits, machine.inner().entries);
            machine.handle(event);
            let after = (machine.inner().exits, machine.inner().entries);
            let ours = (t.exits.len(), t.entries.len(), spec.state(t.target).name.as_str());
            let theirs = ((after.0 - before.0) as usize, (after.1 - before.1) as usize, machine.state().name());
            assert_eq!(ours, theirs, "{event:?} from {}: (exits, entries, target) differ", spec.state(state).name);
            state = t.target;
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ns_per(d: Duration, steps: u64) -> f64 {
    d.as_nanos() as f64 / steps as f64
}

fn main() {
    const ROUNDS: u32 = 100_000;
    const SAMPLES: usize = 7;
    /// The most the indexed step may cost, in steps of statig (issue 11).
    const TARGET: f64 = 3.0;

    let spec = default_spec();
    let runs = workload();
    check_same_shape(&spec, &[runs.clone(), other_transitions()].concat());
    let names: Vec<Vec<&str>> = runs.iter().map(|r| r.iter().map(|e| e.name()).collect()).collect();
    let ids: Vec<Vec<EventId>> =
        names.iter().map(|r| r.iter().map(|e| spec.event(e).expect("the spec has every event")).collect()).collect();
    let per_round: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let steps = per_round * u64::from(ROUNDS);

    // Allocations of one round each, before timing.
    let before = allocated();
    black_box(run_trueup(spec.initial, &ids, 1, stepping_by_id(&spec)));
    let mid = allocated();
    black_box(run_statig(&runs, 1));
    let after = allocated();
    let per_step = |from: (u64, u64), to: (u64, u64)| {
        ((to.0 - from.0) as f64 / per_round as f64, (to.1 - from.1) as f64 / per_round as f64)
    };
    let (trueup_allocs, trueup_bytes) = per_step(before, mid);
    let (statig_allocs, statig_bytes) = per_step(mid, after);

    // Warm up, then interleave the samples so that a busy neighbour hits both sides alike.
    black_box(run_trueup(spec.initial, &ids, ROUNDS / 10, stepping_by_id(&spec)));
    black_box(run_trueup(spec.initial, &names, ROUNDS / 10, stepping_by_name(&spec)));
    black_box(run_statig(&runs, ROUNDS / 10));
    let (mut ours, mut by_name, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let t = Instant::now();
        black_box(run_trueup(spec.initial, black_box(&ids), ROUNDS, stepping_by_id(black_box(&spec))));
        ours.push(t.elapsed());
        let t = Instant::now();
        black_box(run_trueup(spec.initial, black_box(&names), ROUNDS, stepping_by_name(black_box(&spec))));
        by_name.push(t.elapsed());
        let t = Instant::now();
        black_box(run_statig(black_box(&runs), ROUNDS));
        theirs.push(t.elapsed());
    }
    let (ours, theirs) = (ns_per(median(ours), steps), ns_per(median(theirs), steps));
    let by_name = ns_per(median(by_name), steps);

    println!(
        "workload: {} runs per round (happy path, `fail` from each of 6 phases), {per_round} steps per round, \
         {ROUNDS} rounds, median of {SAMPLES} samples",
        runs.len()
    );
    let flag = if ours / theirs > TARGET { "  PAST TARGET" } else { "" };
    println!(
        "machine: trueup {ours:.1} ns/step, statig {theirs:.1} ns/step, ratio {:.1}x (target {TARGET}x){flag}",
        ours / theirs
    );
    println!(
        "machine, events by name: trueup {by_name:.1} ns/step, ratio {:.1}x (a lookup among the spec's events per step)",
        by_name / theirs
    );
    println!(
        "allocations: trueup {trueup_allocs:.2} per step ({trueup_bytes:.1} bytes), \
         statig {statig_allocs:.2} per step ({statig_bytes:.1} bytes)"
    );
}
