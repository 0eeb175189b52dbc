//! The interpreter: one event applied to one active state of a compiled [`Spec`].
//!
//! [`step`] follows the W3C SCXML algorithm for the subset of the spec language (atomic,
//! compound and final states, no parallel regions, no history):
//! - the innermost active state handles an event first, then its ancestors; within a
//!   state, transitions are tried in document order and the first whose guard holds is
//!   taken;
//! - every transition is external: the states exited are the active states below the
//!   transition's domain (the least compound ancestor proper to its source that also
//!   contains its target), innermost first, and the states entered run from just below
//!   that domain down to the target, then through `initial` children to a leaf.
//!
//! It is pure: guards are answered by the caller, and nothing here knows what a phase
//! does. [`render_trace`] prints a run of steps for snapshots and for people.

use std::fmt::Write as _;

use crate::spec::{Guard, Spec, State, StateId, StateKind};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state whose transition fired: the active leaf or one of its ancestors.
    pub source: StateId,
    /// The atomic (or final) state the machine rests in afterwards: the declared target,
    /// or, when that is compound, its initial leaf.
    pub target: StateId,
    /// States exited, innermost first.
    pub exits: Vec<StateId>,
    /// States entered, outermost first; the last one is `target`.
    pub entries: Vec<StateId>,
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// No active state has a transition for the event.
    #[error("state `{state}` does not accept event `{event}`; {}", accepted_list(.accepted))]
    Unhandled {
        /// The active state's name.
        state: String,
        /// The event.
        event: String,
        /// The events the state or its ancestors accept, innermost and in document order
        /// first.
        accepted: Vec<String>,
    },
    /// Transitions exist for the event, but the guard of each one is false.
    #[error("state `{state}` accepts event `{event}`, but none of its guards holds ({})", guard_list(.guards))]
    Blocked {
        /// The active state's name.
        state: String,
        /// The event.
        event: String,
        /// The guards that were tried, in order.
        guards: Vec<Guard>,
    },
    /// The state is compound: the machine only rests in atomic or final states.
    #[error("state `{state}` is compound; the machine rests in one of its atomic descendants")]
    NotAtomic {
        /// The compound state's name.
        state: String,
    },
    /// The event id does not belong to this spec.
    #[error("event #{index} is not in this spec, which has {len} events")]
    UnknownEvent {
        /// The id's index.
        index: usize,
        /// How many events the spec has.
        len: usize,
    },
    /// The id does not belong to this spec.
    #[error("state #{index} is not in this spec, which has {len} states")]
    UnknownState {
        /// The id's index.
        index: usize,
        /// How many states the spec has.
        len: usize,
    },
}

fn accepted_list(accepted: &[String]) -> String {
    if accepted.is_empty() {
        return "it accepts no event".to_owned();
    }
    let names: Vec<String> = accepted.iter().map(|e| format!("`{e}`")).collect();
    format!("it accepts {}", names.join(", "))
}

fn guard_list(guards: &[Guard]) -> String {
    guards.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ")
}

/// An event of a [`Spec`], resolved to its index when the spec is loaded
/// ([`Spec::event`]), so that [`step_id`] compares no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(u16);

/// Every step a spec can take, worked out once when the spec is loaded: for each state
/// and each event it or an ancestor handles, the candidate transitions in priority order (the state's own, then its
/// ancestors', each in document order), each with its exits and entries already computed.
/// A step is then a search among the state's few slots, the guards, and a reference to a
/// ready [`Transition`].
///
/// The first candidate lives in the slot itself, so that the usual step (one candidate,
/// no guard) reads no list beside it; the rest, rare, live in `more`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    /// The spec's events, in order of first appearance in the document.
    events: Vec<String>,
    /// The slots of state `s` are `slots[starts[s]..starts[s + 1]]`, their events
    /// `keys[starts[s]..starts[s + 1]]`, sorted: one for each event the state or an
    /// ancestor handles, none for a compound state. Sparse, so a spec of many states each
    /// with events of its own stays small (a table of every state by every event grows
    /// with their product); the keys apart, so a lookup scans a few packed ids.
    starts: Vec<u32>,
    keys: Vec<EventId>,
    slots: Vec<Slot>,
    /// The candidates after each slot's first, slot by slot.
    more: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    first: Option<Candidate>,
    /// `more[rest.0..rest.1]` follow `first`.
    rest: (u32, u32),
}

/// The slot of an event a state does not handle.
static UNHANDLED: Slot = Slot { first: None, rest: (0, 0) };

#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    guard: Option<Guard>,
    transition: Transition,
}

impl Table {
    /// Works out every step of the machine whose arena is `states`.
    pub(crate) fn compile(states: &[State]) -> Table {
        let mut events: Vec<String> = Vec::new();
        let mut ids: std::collections::HashMap<&str, EventId> = std::collections::HashMap::new();
        for t in states.iter().flat_map(|s| &s.on) {
            if !ids.contains_key(t.event.as_str()) {
                ids.insert(&t.event, EventId(events.len() as u16));
                events.push(t.event.clone());
            }
        }
        let id = |name: &str| ids[name];
        let mut starts = Vec::with_capacity(states.len() + 1);
        let (mut keys, mut slots) = (Vec::new(), Vec::new());
        let mut more = Vec::new();
        for (i, leaf) in states.iter().enumerate() {
            starts.push(slots.len() as u32);
            if matches!(leaf.kind, StateKind::Compound { .. }) {
                continue;
            }
            let leaf_id = StateId(i as u16);
            let chain: Vec<StateId> = std::iter::once(leaf_id).chain(leaf.ancestors.iter().copied()).collect();
            let mut handled: Vec<EventId> =
                chain.iter().flat_map(|s| &states[s.index()].on).map(|t| id(&t.event)).collect();
            handled.sort_unstable();
            handled.dedup();
            for event in handled {
                let mut candidates = Vec::new();
                for &source in &chain {
                    for t in states[source.index()].on.iter().filter(|t| id(&t.event) == event) {
                        let transition = transition(states, leaf_id, source, t.target);
                        candidates.push(Candidate { guard: t.guard, transition });
                    }
                }
                let mut candidates = candidates.into_iter();
                let first = candidates.next();
                let from = more.len() as u32;
                more.extend(candidates);
                keys.push(event);
                slots.push(Slot { first, rest: (from, more.len() as u32) });
            }
        }
        starts.push(slots.len() as u32);
        Table { events, starts, keys, slots, more }
    }

    fn event(&self, name: &str) -> Option<EventId> {
        self.events.iter().position(|e| e == name).map(|i| EventId(i as u16))
    }

    /// The slot of `event` in `state`, or `None` when either is not this table's.
    #[inline]
    fn slot(&self, state: StateId, event: EventId) -> Option<&Slot> {
        if usize::from(event.0) >= self.events.len() {
            return None;
        }
        let (from, to) = (*self.starts.get(state.index())?, *self.starts.get(state.index() + 1)?);
        // A handful of slots: a scan beats a binary search's unpredictable branches.
        let (from, to) = (from as usize, to as usize);
        let at = self.keys[from..to].iter().position(|e| *e == event);
        Some(at.map_or(&UNHANDLED, |i| &self.slots[from + i]))
    }

    /// The candidates after a slot's first.
    fn rest(&self, slot: &Slot) -> &[Candidate] {
        &self.more[slot.rest.0 as usize..slot.rest.1 as usize]
    }

    /// Every candidate of `event` in `state`, in priority order, or `None` when either is
    /// not this table's.
    fn candidates(&self, state: StateId, event: EventId) -> Option<impl Iterator<Item = &Candidate>> {
        let slot = self.slot(state, event)?;
        Some(slot.first.iter().chain(self.rest(slot)))
    }
}

impl Spec {
    /// The event with this name, if any state of the spec accepts it.
    pub fn event(&self, name: &str) -> Option<EventId> {
        self.table.event(name)
    }

    /// The name of an event.
    pub fn event_name(&self, id: EventId) -> &str {
        &self.table.events[usize::from(id.0)]
    }
}

/// Applies `event` to the machine resting in `state`.
///
/// `guards` answers each guard the chosen candidates carry; it is called in priority
/// order and only as far as needed. The name is looked up among the spec's events; a
/// driver that steps often resolves it once with [`Spec::event`] and calls [`step_id`].
///
/// # Errors
///
/// [`StepError::Unhandled`] when no active state accepts the event (a final state
/// accepts none), [`StepError::Blocked`] when every candidate's guard is false,
/// [`StepError::NotAtomic`] for a compound `state`, [`StepError::UnknownState`] for an id
/// from another spec.
pub fn step<'s>(
    spec: &'s Spec,
    state: StateId,
    event: &str,
    guards: &dyn Fn(Guard) -> bool,
) -> Result<&'s Transition, StepError> {
    match spec.event(event) {
        Some(id) => step_id(spec, state, id, guards),
        None => {
            let active = atomic(spec, state)?;
            Err(StepError::Unhandled {
                state: active.name.clone(),
                event: event.to_owned(),
                accepted: accepted(spec, state),
            })
        }
    }
}

/// Where a deployment resting in `state` goes when it fails: the target of the spec's
/// fail event where the machine takes it there, else straight to the failed role (a state
/// that cannot fail, such as waiting in a queue, still ends when it must). The planner's
/// verdicts and the engine's runs both fail through it, so they never disagree. The
/// event is given back when it was taken.
pub fn failing<'s>(spec: &'s Spec, state: StateId, guards: &dyn Fn(Guard) -> bool) -> (StateId, Option<&'s str>) {
    let event = spec.roles.fail.as_str();
    match step(spec, state, event, guards) {
        Ok(t) => (t.target, Some(event)),
        Err(_) => (spec.roles.failed, None),
    }
}

/// [`step`] for an event resolved with [`Spec::event`]: a lookup in the table the spec
/// was compiled with, then the guards; no string is compared and nothing is allocated
/// unless the step fails.
///
/// # Errors
///
/// As [`step`]'s, and [`StepError::UnknownEvent`] for an id from another spec.
#[inline]
pub fn step_id<'s>(
    spec: &'s Spec,
    state: StateId,
    event: EventId,
    guards: &dyn Fn(Guard) -> bool,
) -> Result<&'s Transition, StepError> {
    if let Some(Slot { first: Some(first), .. }) = spec.table.slot(state, event) {
        if first.guard.is_none_or(guards) {
            return Ok(&first.transition);
        }
        return guarded(spec, state, event, guards);
    }
    Err(failed(spec, state, event))
}

/// [`step_id`] past a first candidate whose guard is false.
fn guarded<'s>(
    spec: &'s Spec,
    state: StateId,
    event: EventId,
    guards: &dyn Fn(Guard) -> bool,
) -> Result<&'s Transition, StepError> {
    let candidates = spec.table.candidates(state, event).into_iter().flatten().skip(1);
    for c in candidates {
        if c.guard.is_none_or(guards) {
            return Ok(&c.transition);
        }
    }
    Err(failed(spec, state, event))
}

/// Why [`step_id`] found no transition to take; off the fast path.
#[cold]
#[inline(never)]
fn failed(spec: &Spec, state: StateId, event: EventId) -> StepError {
    let active = match atomic(spec, state) {
        Ok(active) => active,
        Err(e) => return e,
    };
    let Some(candidates) = spec.table.candidates(state, event) else {
        return StepError::UnknownEvent { index: usize::from(event.0), len: spec.table.events.len() };
    };
    let event = spec.event_name(event).to_owned();
    let guards: Vec<Guard> = candidates.filter_map(|c| c.guard).collect();
    if guards.is_empty() {
        StepError::Unhandled { state: active.name.clone(), accepted: accepted(spec, state), event }
    } else {
        StepError::Blocked { state: active.name.clone(), event, guards }
    }
}

/// The state behind `state`, if it is one the machine can rest in.
fn atomic(spec: &Spec, state: StateId) -> Result<&State, StepError> {
    let Some(active) = spec.states.get(state.index()) else {
        return Err(StepError::UnknownState { index: state.index(), len: spec.states.len() });
    };
    if matches!(active.kind, StateKind::Compound { .. }) {
        return Err(StepError::NotAtomic { state: active.name.clone() });
    }
    Ok(active)
}

/// The events the machine accepts while resting in `state`: its own, then its
/// ancestors', each once, in priority order.
pub fn accepted(spec: &Spec, state: StateId) -> Vec<String> {
    let Some(active) = spec.states.get(state.index()) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for s in std::iter::once(state).chain(active.ancestors.iter().copied()) {
        for t in &spec.state(s).on {
            if !out.contains(&t.event) {
                out.push(t.event.clone());
            }
        }
    }
    out
}

/// The exit and entry sets of the transition from `source` (with `leaf` active) to
/// `declared`.
fn transition(states: &[State], leaf: StateId, source: StateId, declared: StateId) -> Transition {
    // The domain: the innermost proper ancestor of the source that is also a proper
    // ancestor of the target. All ancestors are compound, so this is the SCXML LCCA;
    // `None` is the document root.
    let target_ancestors = &states[declared.index()].ancestors;
    let domain = states[source.index()].ancestors.iter().copied().find(|a| target_ancestors.contains(a));
    let below_domain = |s: StateId| match domain {
        None => true,
        Some(d) => states[s.index()].ancestors.contains(&d),
    };
    let exits: Vec<StateId> = std::iter::once(leaf)
        .chain(states[leaf.index()].ancestors.iter().copied())
        .take_while(|&s| below_domain(s))
        .collect();
    let mut entries: Vec<StateId> =
        std::iter::once(declared).chain(target_ancestors.iter().copied()).take_while(|&s| below_domain(s)).collect();
    entries.reverse();
    let mut at = declared;
    while let StateKind::Compound { initial, .. } = &states[at.index()].kind {
        at = *initial;
        entries.push(at);
    }
    Transition { source, target: at, exits, entries }
}

/// Runs `events` from `start`, answering every guard with `guards`, and renders each
/// step as text: the event, the states exited and entered, and where the machine rests.
/// A step that fails is rendered with its error and ends the run.
///
/// ```text
/// QUEUED --start--> PULLING_SOURCE  (via QUEUED)
///   exit:  QUEUED
///   enter: IN_PROGRESS, PULLING_SOURCE
/// ```
pub fn render_trace(spec: &Spec, start: StateId, events: &[&str], guards: &dyn Fn(Guard) -> bool) -> String {
    let name = |id: StateId| spec.states.get(id.index()).map_or("?", |s| s.name.as_str());
    let list = |ids: &[StateId]| ids.iter().map(|&i| name(i)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let mut state = start;
    for event in events {
        match step(spec, state, event, guards) {
            Ok(t) => {
                let _ = writeln!(out, "{} --{event}--> {}  (via {})", name(state), name(t.target), name(t.source));
                let _ = writeln!(out, "  exit:  {}", list(&t.exits));
                let _ = writeln!(out, "  enter: {}", list(&t.entries));
                state = t.target;
            }
            Err(e) => {
                let _ = writeln!(out, "{} --{event}--> error: {e}", name(state));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::default_spec;

    #[test]
    fn fail_from_a_phase_exits_through_the_superstate() {
        let spec = default_spec();
        let building = spec.find("BUILDING").unwrap();
        let t = step(&spec, building, "fail", &|_| true).unwrap();
        assert_eq!(t.source, spec.find("IN_PROGRESS").unwrap());
        assert_eq!(t.exits, vec![building, spec.find("IN_PROGRESS").unwrap()]);
        assert_eq!(t.entries, vec![spec.find("FAILED").unwrap()]);
    }

    #[test]
    fn a_failing_phase_takes_the_fail_event_and_one_that_cannot_fail_goes_to_the_failed_role() {
        let spec = default_spec();
        let failed = spec.find("FAILED").unwrap();
        assert_eq!(failing(&spec, spec.find("BUILDING").unwrap(), &|_| true), (failed, Some("fail")));
        // Waiting in the queue accepts `done` and `cancel` only.
        assert_eq!(failing(&spec, spec.find("QUEUED").unwrap(), &|_| true), (failed, None));
    }

    #[test]
    fn self_transition_exits_and_reenters() {
        let spec = default_spec();
        let building = spec.find("BUILDING").unwrap();
        let t = step(&spec, building, "retry", &|_| true).unwrap();
        assert_eq!((t.exits.to_vec(), t.entries.to_vec()), (vec![building], vec![building]));
    }

    #[test]
    fn errors_name_the_state_and_what_it_accepts() {
        let spec = default_spec();
        let e = step(&spec, spec.find("BUILDING").unwrap(), "nope", &|_| true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "state `BUILDING` does not accept event `nope`; it accepts `done`, `retry`, `fail`, `cancel`"
        );
        let e = step(&spec, spec.find("ACTIVE").unwrap(), "done", &|_| true).unwrap_err();
        assert_eq!(e.to_string(), "state `ACTIVE` does not accept event `done`; it accepts no event");
    }

    /// Every spec the repository ships, and every valid spec of the fixtures (nested
    /// three levels deep, guarded, shadowed, renamed), compiled.
    fn shipped() -> Vec<Spec> {
        let mut specs = vec![default_spec()];
        for dir in ["specs", "fixtures/validate/ok"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let source = std::fs::read_to_string(&path).unwrap();
                    let loaded = crate::spec::load(&path.display().to_string(), &source);
                    specs.push(loaded.unwrap_or_else(|e| panic!("{}: {e:?}", path.display())).0);
                }
            }
        }
        assert!(specs.len() > 8, "{} specs", specs.len());
        specs
    }

    #[test]
    fn a_step_by_id_is_the_step_by_name_for_every_state_event_and_guard() {
        let mut steps = 0;
        for spec in shipped() {
            let events: Vec<String> = spec.states.iter().flat_map(|s| s.on.iter().map(|t| t.event.clone())).collect();
            for state in spec.ids() {
                for event in &events {
                    let id = spec.event(event).unwrap();
                    assert_eq!(spec.event_name(id), event);
                    for answer in [true, false] {
                        let by_name = step(&spec, state, event, &|_| answer);
                        let by_id = step_id(&spec, state, id, &|_| answer);
                        assert_eq!(by_name, by_id, "{} --{event}--> with guards {answer}", spec.name(state));
                        // And both are what the states say, read without the table.
                        let by_states = straight(&spec, state, event, &|_| answer);
                        assert_eq!(
                            by_id.as_ref().ok().copied(),
                            by_states.as_ref(),
                            "{} --{event}-->",
                            spec.name(state)
                        );
                        steps += usize::from(by_id.is_ok());
                    }
                }
            }
        }
        assert!(steps > 20, "only {steps} steps were taken");
    }

    /// A step read straight off the states, as the machine's semantics say: the active
    /// atomic state's transitions on `event`, then each ancestor's, in document order;
    /// the first whose guard holds is taken.
    fn straight(spec: &Spec, state: StateId, event: &str, guards: &dyn Fn(Guard) -> bool) -> Option<Transition> {
        if matches!(spec.state(state).kind, StateKind::Compound { .. }) {
            return None;
        }
        let chain = std::iter::once(state).chain(spec.state(state).ancestors.iter().copied());
        chain
            .flat_map(|source| spec.state(source).on.iter().map(move |t| (source, t)))
            .find(|(_, t)| t.event == event && t.guard.is_none_or(guards))
            .map(|(source, t)| transition(&spec.states, state, source, t.target))
    }

    #[test]
    fn a_spec_of_many_states_each_with_events_of_its_own_compiles_to_a_table_of_its_size() {
        // Each state handles an event of its own and `fail`: a table of every state by
        // every event would hold 3,000 x 3,001 slots (650 MB); this one holds two a state.
        let n = 3_000;
        let mut source = String::from(
            "version: 2\ninitial: S0\nstuck_after: 90s\n\
             roles: { live: DONE, failed: FAILED, cancelled: FAILED, done: done, fail: fail, retry: retry }\n\
             states:\n  S0: { run: wait, resume: restart_phase, on: { done: S1, fail: FAILED, retry: S0 } }\n",
        );
        for i in 1..n {
            let next = if i + 1 == n { "DONE".to_owned() } else { format!("S{}", i + 1) };
            source +=
                &format!("  S{i}: {{ run: wait, resume: restart_phase, on: {{ e{i}: {next}, fail: FAILED }} }}\n");
        }
        source += "  DONE: { final: true }\n  FAILED: { final: true }\n";
        let spec = crate::spec::load("chain.yaml", &source).unwrap().0;
        assert_eq!(spec.table.slots.len(), 2 * n + 1, "S0 handles three events, every other state two");
        let last = spec.find(&format!("S{}", n - 1)).unwrap();
        let event = spec.event(&format!("e{}", n - 1)).unwrap();
        assert_eq!(spec.name(step_id(&spec, last, event, &|_| true).unwrap().target), "DONE");
        let e1 = spec.event("e1").unwrap();
        assert!(matches!(step_id(&spec, last, e1, &|_| true), Err(StepError::Unhandled { .. })));
    }

    #[test]
    fn guards_are_asked_in_priority_order_and_only_as_far_as_needed() {
        let spec = default_spec();
        let check = spec.find("HEALTH_CHECK").unwrap();
        let retry = spec.event("retry").unwrap();
        for (answer, target) in [(true, "HEALTH_CHECK"), (false, "FAILED")] {
            let asked = std::cell::RefCell::new(Vec::new());
            let t = step_id(&spec, check, retry, &|g| {
                asked.borrow_mut().push(g);
                answer
            })
            .unwrap();
            assert_eq!(*asked.borrow(), [Guard::AttemptsRemaining], "asked when the guard is {answer}");
            assert_eq!(spec.name(t.target), target, "when the guard is {answer}");
        }
    }

    #[test]
    fn a_step_whose_every_guard_is_false_is_blocked_and_names_them() {
        let source = "version: 2\ninitial: WORKING\nstuck_after: 90s\n\
            roles: { live: DONE, failed: FAILED, cancelled: FAILED, done: done, fail: fail, retry: retry }\n\
            states:\n  WORKING:\n    run: build\n    resume: restart_phase\n\
            \x20   on:\n      done: DONE\n      fail: FAILED\n      retry:\n\
            \x20       - { target: WORKING, guard: attempts_remaining }\n\
            \x20       - { target: FAILED, guard: has_previous_release }\n\
            \x20 DONE: { final: true }\n  FAILED: { final: true }\n";
        let (spec, _) = crate::spec::load("guarded.yaml", source).unwrap_or_else(|e| panic!("{e:?}"));
        let working = spec.find("WORKING").unwrap();
        let e = step_id(&spec, working, spec.event("retry").unwrap(), &|_| false).unwrap_err();
        let guards = vec![Guard::AttemptsRemaining, Guard::HasPreviousRelease];
        assert_eq!(e, StepError::Blocked { state: "WORKING".into(), event: "retry".into(), guards });
        let t = step_id(&spec, working, spec.event("retry").unwrap(), &|g| g == Guard::HasPreviousRelease).unwrap();
        assert_eq!(spec.name(t.target), "FAILED");
    }

    #[test]
    fn ids_of_another_spec_or_no_state_are_errors_not_steps() {
        let spec = default_spec();
        let len = spec.states.len();
        let done = spec.event("done").unwrap();
        assert_eq!(spec.event("nope"), None);
        assert_eq!(
            step_id(&spec, StateId(len as u16), done, &|_| true).unwrap_err(),
            StepError::UnknownState { index: len, len }
        );
        let events = spec.table.events.len();
        let foreign = EventId(events as u16);
        for state in spec.ids() {
            assert_eq!(
                step_id(&spec, state, foreign, &|_| true).unwrap_err(),
                match spec.state(state).kind {
                    StateKind::Compound { .. } => StepError::NotAtomic { state: spec.name(state).to_owned() },
                    _ => StepError::UnknownEvent { index: events, len: events },
                }
            );
        }
        let in_progress = spec.find("IN_PROGRESS").unwrap();
        assert_eq!(
            step(&spec, in_progress, "nope", &|_| true).unwrap_err(),
            StepError::NotAtomic { state: "IN_PROGRESS".into() }
        );
    }
}
