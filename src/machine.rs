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

use crate::spec::{Guard, Spec, StateId, StateKind};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state whose transition fired: the active leaf or one of its ancestors.
    pub source: StateId,
    /// The atomic (or final) state the machine rests in afterwards: the declared target,
    /// or, when that is compound, its initial leaf.
    pub target: StateId,
    /// States exited, innermost first.
    pub exits: StateList,
    /// States entered, outermost first; the last one is `target`.
    pub entries: StateList,
}

/// How many states a [`StateList`] holds before it moves to the heap. A transition of the
/// default spec exits or enters at most two.
const INLINE: usize = 8;

/// A short list of states: a transition's exits or entries. It reads as a slice (it
/// derefs to `[StateId]`) and compares with a `Vec<StateId>`. Up to eight states are kept
/// inline and only deeper paths go to the heap, so a step allocates nothing for machines
/// of ordinary depth.
#[derive(Clone)]
pub struct StateList(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, ids: [StateId; INLINE] },
    Heap(Vec<StateId>),
}

impl StateList {
    fn new() -> Self {
        StateList(Repr::Inline { len: 0, ids: [StateId(0); INLINE] })
    }

    fn push(&mut self, id: StateId) {
        match &mut self.0 {
            Repr::Inline { len, ids } if usize::from(*len) < INLINE => {
                ids[usize::from(*len)] = id;
                *len += 1;
            }
            Repr::Inline { ids, .. } => {
                let mut heap = Vec::with_capacity(2 * INLINE);
                heap.extend_from_slice(ids);
                heap.push(id);
                self.0 = Repr::Heap(heap);
            }
            Repr::Heap(heap) => heap.push(id),
        }
    }
}

impl std::ops::Deref for StateList {
    type Target = [StateId];

    #[inline]
    fn deref(&self) -> &[StateId] {
        match &self.0 {
            Repr::Inline { len, ids } => &ids[..usize::from(*len)],
            Repr::Heap(heap) => heap,
        }
    }
}

impl std::ops::DerefMut for StateList {
    #[inline]
    fn deref_mut(&mut self) -> &mut [StateId] {
        match &mut self.0 {
            Repr::Inline { len, ids } => &mut ids[..usize::from(*len)],
            Repr::Heap(heap) => heap,
        }
    }
}

impl FromIterator<StateId> for StateList {
    fn from_iter<I: IntoIterator<Item = StateId>>(iter: I) -> Self {
        let mut list = StateList::new();
        for id in iter {
            list.push(id);
        }
        list
    }
}

impl<'a> IntoIterator for &'a StateList {
    type Item = &'a StateId;
    type IntoIter = std::slice::Iter<'a, StateId>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for StateList {
    /// As a `Vec` prints: `[StateId(1), StateId(2)]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for StateList {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for StateList {}

impl PartialEq<Vec<StateId>> for StateList {
    fn eq(&self, other: &Vec<StateId>) -> bool {
        **self == **other
    }
}

impl PartialEq<[StateId]> for StateList {
    fn eq(&self, other: &[StateId]) -> bool {
        **self == *other
    }
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

/// Applies `event` to the machine resting in `state`.
///
/// `guards` answers each guard the chosen candidates carry; it is called in priority
/// order and only as far as needed.
///
/// # Errors
///
/// [`StepError::Unhandled`] when no active state accepts the event (a final state
/// accepts none), [`StepError::Blocked`] when every candidate's guard is false,
/// [`StepError::NotAtomic`] for a compound `state`, [`StepError::UnknownState`] for an id
/// from another spec.
pub fn step(spec: &Spec, state: StateId, event: &str, guards: &dyn Fn(Guard) -> bool) -> Result<Transition, StepError> {
    let Some(active) = spec.states.get(state.index()) else {
        return Err(StepError::UnknownState { index: state.index(), len: spec.states.len() });
    };
    if matches!(active.kind, StateKind::Compound { .. }) {
        return Err(StepError::NotAtomic { state: active.name.clone() });
    }
    let mut tried = Vec::new();
    for source in std::iter::once(state).chain(active.ancestors.iter().copied()) {
        for t in spec.state(source).on.iter().filter(|t| t.event == event) {
            match t.guard {
                Some(g) if !guards(g) => tried.push(g),
                _ => return Ok(transition(spec, state, source, t.target)),
            }
        }
    }
    if tried.is_empty() {
        Err(StepError::Unhandled {
            state: active.name.clone(),
            event: event.to_owned(),
            accepted: accepted(spec, state),
        })
    } else {
        Err(StepError::Blocked { state: active.name.clone(), event: event.to_owned(), guards: tried })
    }
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
fn transition(spec: &Spec, leaf: StateId, source: StateId, declared: StateId) -> Transition {
    // The domain: the innermost proper ancestor of the source that is also a proper
    // ancestor of the target. All ancestors are compound, so this is the SCXML LCCA;
    // `None` is the document root.
    let target_ancestors = &spec.state(declared).ancestors;
    let domain = spec.state(source).ancestors.iter().copied().find(|a| target_ancestors.contains(a));
    let below_domain = |s: StateId| match domain {
        None => true,
        Some(d) => spec.state(s).ancestors.contains(&d),
    };
    let exits: StateList = std::iter::once(leaf)
        .chain(spec.state(leaf).ancestors.iter().copied())
        .take_while(|&s| below_domain(s))
        .collect();
    let mut entries: StateList =
        std::iter::once(declared).chain(target_ancestors.iter().copied()).take_while(|&s| below_domain(s)).collect();
    entries.reverse();
    let mut at = declared;
    while let StateKind::Compound { initial, .. } = &spec.state(at).kind {
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
    fn self_transition_exits_and_reenters() {
        let spec = default_spec();
        let building = spec.find("BUILDING").unwrap();
        let t = step(&spec, building, "retry", &|_| true).unwrap();
        assert_eq!((t.exits.to_vec(), t.entries.to_vec()), (vec![building], vec![building]));
    }

    #[test]
    fn state_lists_move_to_the_heap_past_eight_states() {
        for n in [0, 1, INLINE, INLINE + 1, 3 * INLINE] {
            let ids: Vec<StateId> = (0..n as u16).map(StateId).collect();
            let mut list: StateList = ids.iter().copied().collect();
            assert_eq!(list, ids);
            assert_eq!(format!("{list:?}"), format!("{ids:?}"));
            list.reverse();
            assert_eq!(list.iter().rev().copied().collect::<Vec<_>>(), ids);
        }
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
}
