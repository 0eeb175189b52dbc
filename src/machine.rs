//! Placeholder interpreter until the real one lands (taken from the `spec` branch).

use crate::spec::{Guard, Spec, StateId};

/// A transition taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The resolved atomic target.
    pub target: StateId,
}

/// No transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError;

/// Takes `event` in `state`.
///
/// # Errors
///
/// When no active state accepts the event.
pub fn step(spec: &Spec, state: StateId, event: &str, guards: &dyn Fn(Guard) -> bool) -> Result<Transition, StepError> {
    let mut chain = vec![state];
    chain.extend(spec.state(state).ancestors.iter().copied());
    for s in chain {
        for t in &spec.state(s).on {
            if t.event == event && t.guard.is_none_or(guards) {
                return Ok(Transition { target: spec.leaf_of(t.target) });
            }
        }
    }
    Err(StepError)
}
