//! Running one deployment from its phase to the end, under its own claim.
//!
//! The runner claims the deployment (taking over a claim whose worker is gone), then,
//! phase after phase: runs the phase's executor, fires the spec's `done` event (or
//! `fail` with the reason, or `retry` when a health check is exhausted, whose guard
//! decides between another attempt and failure), and records the move with its log line
//! in one transaction. It heartbeats the claim while any phase works. Ctrl-C (the
//! [`Control`]'s stop flag) stops the phase in hand (a build's whole process group) and
//! leaves the deployment in its phase, to be resumed; so does a phase that could not be
//! done now (a full disk). The claim is released on every way out: given back when the
//! deployment finished, let lapse otherwise, still naming this process, so that the
//! next `trueup apply` or `trueup work` resumes it at once once this process has exited.

use std::collections::BTreeMap;

use super::{Engine, EngineError, guard, steps};
use crate::machine::{self, StepError};
use crate::model::{Deployment, LogEntry, LogLevel};
use crate::phases::{PhaseError, Stopped, Watch};
use crate::spec::{Guard, Spec, StateId};
use crate::store::{Advance, Fence};
use crate::time::{Timestamp, clock};

/// What a caller of [`Engine::run`] controls: when to stop.
#[derive(Clone, Copy)]
pub struct Control<'a> {
    /// True when the deployment must stop (Ctrl-C, SIGTERM): the phase in hand stops,
    /// and the deployment stays in its phase for a resume. Asked at least once a second.
    pub stop: &'a dyn Fn() -> bool,
}

/// What the runner tells its caller as it goes.
pub trait Report {
    /// Deployment `id` enters `phase`.
    fn phase(&mut self, id: &str, phase: &str);
    /// A line of its log.
    fn line(&mut self, id: &str, level: LogLevel, text: &str);
}

/// A [`Report`] that reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Report for Silent {
    fn phase(&mut self, _: &str, _: &str) {}
    fn line(&mut self, _: &str, _: LogLevel, _: &str) {}
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It reached a final phase: `live` when it is the spec's live phase.
    Finished {
        /// The final phase.
        phase: String,
        /// Whether it is live.
        live: bool,
        /// Why it failed, when it did.
        reason: Option<String>,
    },
    /// It was stopped (Ctrl-C, SIGTERM, its claim lost) in `phase`, to be resumed.
    Stopped {
        /// Its phase.
        phase: String,
        /// Why.
        why: String,
    },
    /// Its phase could not be done now (a full disk, a server that does not answer): it
    /// stays in `phase`, to be resumed.
    Interrupted {
        /// Its phase.
        phase: String,
        /// Why.
        why: String,
    },
}

/// A run in progress: the [`Watch`] the executors report to.
pub(super) struct Session<'e, 'a> {
    pub(super) engine: &'e Engine<'a>,
    pub(super) id: String,
    phase: String,
    stop: &'e dyn Fn() -> bool,
    report: &'e mut dyn Report,
    renewed: std::time::Instant,
    lost: bool,
}

impl Watch for Session<'_, '_> {
    fn line(&mut self, level: LogLevel, text: &str) {
        self.report.line(&self.id, level, text);
        let entry = LogEntry {
            deployment: self.id.clone(),
            at: clock::now(),
            level,
            phase: Some(self.phase.clone()),
            message: text.to_owned(),
            metadata: BTreeMap::new(),
        };
        if self.engine.store.append_log(Fence::Claim { owner: &self.engine.worker.owner }, &entry).is_err() {
            self.lost = true;
        }
    }

    fn tick(&mut self) -> Result<(), Stopped> {
        if (self.stop)() {
            return Err(Stopped("interrupted".to_owned()));
        }
        let ttl = self.engine.settings.claim_ttl;
        if self.renewed.elapsed().as_secs() * 3 >= ttl.secs() {
            let now = clock::now();
            let kept = self.engine.store.renew_claim(&self.id, &self.engine.worker.owner, now, now.plus(ttl));
            if !matches!(kept, Ok(true)) {
                self.lost = true;
            }
            self.renewed = std::time::Instant::now();
        }
        if self.lost {
            return Err(Stopped("its claim was lost to another worker".to_owned()));
        }
        Ok(())
    }
}

impl Engine<'_> {
    /// Runs deployment `id` from its phase to the end under its own claim. A deployment
    /// held by a live worker is refused; one held by a worker whose process is gone is
    /// taken over.
    ///
    /// # Errors
    ///
    /// [`EngineError::Held`]; [`EngineError::UnknownPhase`]; [`EngineError::Store`]
    /// (the claim is released all the same).
    pub fn run(&self, id: &str, control: Control<'_>, report: &mut dyn Report) -> Result<Ended, EngineError> {
        let d = self.store.deployment(id)?;
        if d.finished_at.is_some() {
            return Ok(self.ended(&d));
        }
        let now = clock::now();
        let dead = d.owner.as_ref().filter(|c| self.is_dead(c)).map(|c| c.owner.as_str());
        let until = now.plus(self.settings.claim_ttl);
        if !self.store.claim_for(id, &self.worker.owner, &self.worker.process, now, until, dead)? {
            let current = self.store.deployment(id)?;
            return match current.owner {
                Some(c) => Err(EngineError::Held { deployment: id.to_owned(), owner: c.owner, until: c.until }),
                None => Ok(self.ended(&current)),
            };
        }
        let mut session = Session {
            engine: self,
            id: id.to_owned(),
            phase: d.phase.clone(),
            stop: control.stop,
            report,
            renewed: std::time::Instant::now(),
            lost: false,
        };
        let by = format!(
            "run by {} (process {} on {})",
            self.worker.owner, self.worker.process.pid, self.worker.process.host
        );
        session.line(LogLevel::Info, &by);
        let result = self.drive(&mut session);
        match &result {
            // Left in its phase: the claim lapses but keeps naming this process, so that
            // the deployment is resumable at once when this process is gone.
            Ok(Ended::Stopped { .. } | Ended::Interrupted { .. }) => {
                let _ = self.store.lapse_claim(id, &self.worker.owner, clock::now());
            }
            _ => {
                let _ = self.store.release_claim(id, &self.worker.owner);
            }
        }
        result
    }

    /// How a finished deployment ended.
    fn ended(&self, d: &Deployment) -> Ended {
        let spec = self.specs.of(d);
        let live = spec.find(&d.phase).is_some_and(|s| s == spec.roles.live);
        let reason = (!live)
            .then(|| self.store.logs(&d.id).ok())
            .flatten()
            .and_then(|logs| logs.iter().rev().find(|l| l.level == LogLevel::Error).map(|l| l.message.clone()));
        Ended::Finished { phase: d.phase.clone(), live, reason }
    }

    /// The phase loop.
    fn drive(&self, s: &mut Session<'_, '_>) -> Result<Ended, EngineError> {
        loop {
            let d = self.store.deployment(&s.id)?;
            let spec = self.specs.of(&d);
            let state = spec
                .find(&d.phase)
                .ok_or_else(|| EngineError::UnknownPhase { deployment: d.id.clone(), phase: d.phase.clone() })?;
            if spec.is_final(state) {
                // The work folder is a copy of the source and its build: the release
                // folder holds what is kept.
                let _ = std::fs::remove_dir_all(self.work_dir(&d.id));
                return Ok(self.ended(&d));
            }
            s.phase.clone_from(&d.phase);
            s.report.phase(&d.id, &d.phase);
            if let Some(reason) = self.superseded(&d)? {
                self.fail(s, &d, spec, state, &reason)?;
                continue;
            }
            let run = spec.state(state).run.clone();
            test_pause(s, &d.phase, "before");
            let outcome = steps::execute(s, &d, run.as_ref());
            test_pause(s, &d.phase, "after");
            match outcome {
                Ok(steps::Done::Ok(metadata)) => {
                    let done = format!("{} done", d.phase);
                    self.fire_role(s, &d, spec, state, &spec.roles.done, &done, LogLevel::Info, &metadata)?;
                }
                Ok(steps::Done::Unhealthy(reason)) => {
                    let to = self.next(spec, &d, state, &spec.roles.retry);
                    if to.is_none_or(|t| spec.is_final(t)) {
                        steps::rollback(s, &d);
                    }
                    self.fire_role(s, &d, spec, state, &spec.roles.retry, &reason, LogLevel::Error, &BTreeMap::new())?;
                }
                Err(PhaseError::Failed(reason)) => {
                    steps::rollback(s, &d);
                    self.fail(s, &d, spec, state, &reason)?;
                }
                Err(PhaseError::Retry(why)) => {
                    s.line(LogLevel::Warn, &format!("{} could not be done now, left to be resumed: {why}", d.phase));
                    return Ok(Ended::Interrupted { phase: d.phase, why });
                }
                Err(PhaseError::Stopped(why)) => {
                    s.lost = false;
                    s.line(LogLevel::Warn, &format!("stopped in {}: {why}; it resumes from there", d.phase));
                    return Ok(Ended::Stopped { phase: d.phase, why });
                }
            }
        }
    }

    /// Where `event` takes `d` from `state`, guards answered for it.
    fn next(&self, spec: &Spec, d: &Deployment, state: StateId, event: &str) -> Option<StateId> {
        let guards = |g: Guard| guard(spec, d, g);
        machine::step(spec, state, event, &guards).ok().map(|t| t.target)
    }

    /// Fires a role event on `d` and records the move with its log line.
    #[allow(clippy::too_many_arguments)]
    fn fire_role(
        &self,
        s: &mut Session<'_, '_>,
        d: &Deployment,
        spec: &Spec,
        state: StateId,
        event: &str,
        message: &str,
        level: LogLevel,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let guards = |g: Guard| guard(spec, d, g);
        let t = machine::step(spec, state, event, &guards).map_err(|e| match e {
            StepError::Unhandled { accepted, .. } => EngineError::IllegalEvent {
                deployment: d.id.clone(),
                phase: d.phase.clone(),
                event: event.to_owned(),
                accepted: accepted.join(", "),
            },
            other => EngineError::BadOptions(other.to_string()),
        })?;
        let moved = Move { to: t.target, event: Some(event), message, level };
        self.record(s, d, spec, state, &moved, metadata)
    }

    /// Fails `d` where [`machine::failing`] says, as the planner fails a deployment (a
    /// phase that cannot fail, such as waiting in the queue, still ends when it must,
    /// rather than being picked again and again).
    fn fail(
        &self,
        s: &mut Session<'_, '_>,
        d: &Deployment,
        spec: &Spec,
        state: StateId,
        message: &str,
    ) -> Result<(), EngineError> {
        let (to, event) = machine::failing(spec, state, &|g| guard(spec, d, g));
        let moved = Move { to, event, message, level: LogLevel::Error };
        self.record(s, d, spec, state, &moved, &BTreeMap::new())
    }

    /// Records `d`'s move from `state` with its log line.
    fn record(
        &self,
        s: &mut Session<'_, '_>,
        d: &Deployment,
        spec: &Spec,
        state: StateId,
        moved: &Move<'_>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let to = spec.name(moved.to);
        let now: Timestamp = clock::now();
        let attempts = if moved.to == state { d.attempts + 1 } else { 0 };
        let finished = spec.is_final(moved.to);
        let level = if finished && moved.to != spec.roles.live { LogLevel::Error } else { moved.level };
        let message = moved.message;
        let text =
            if level == LogLevel::Error { format!("failed in {}: {message}", d.phase) } else { message.to_owned() };
        let mut meta = BTreeMap::from([("new_phase".to_owned(), to.to_owned())]);
        if let Some(event) = moved.event {
            meta.insert("event".to_owned(), event.to_owned());
        }
        if level == LogLevel::Error {
            meta.insert("reason".to_owned(), message.to_owned());
        }
        let log = LogEntry {
            deployment: d.id.clone(),
            at: now,
            level,
            phase: Some(d.phase.clone()),
            message: text,
            metadata: meta,
        };
        let advance = Advance { phase: to, at: now, attempts, finished, metadata, log: &log };
        s.report.line(&d.id, level, &log.message);
        self.store.advance(Fence::Claim { owner: &self.worker.owner }, &d.id, &advance)?;
        Ok(())
    }

    /// Why `d` is superseded, when a deployment of its project created after it is live
    /// already: finishing `d` would roll the site back.
    fn superseded(&self, d: &Deployment) -> Result<Option<String>, EngineError> {
        let Some(created) = d.created_at else { return Ok(None) };
        let live = self.specs.live_phases();
        let all = self.store.reconcilable_of(&d.project, &live)?;
        let newer = all.iter().find(|o| {
            o.id != d.id && o.service == d.service && self.specs.is_live(o) && o.created_at.is_some_and(|c| c > created)
        });
        Ok(newer.map(|n| format!("superseded: `{}`, created after it, is already live", n.id)))
    }
}

/// A move of a deployment to record: where to, through which event (none for a move
/// straight to a role's state), and its log line.
struct Move<'m> {
    to: StateId,
    event: Option<&'m str>,
    message: &'m str,
    level: LogLevel,
}

/// The crash tests' pause at a phase boundary, in debug builds only (release builds
/// ignore it): with `TRUEUP_TEST_PAUSE=PHASE` (or `PHASE:after`) in the environment, the
/// runner stops for ten minutes right before the phase's executor runs (or right after
/// it, before the phase is recorded done), so that a test can kill the process with
/// SIGKILL exactly there. The pause is written to the deployment's log first, so that the
/// test knows when it is there.
fn test_pause(s: &mut Session<'_, '_>, phase: &str, when: &str) {
    if cfg!(debug_assertions)
        && let Ok(asked) = std::env::var("TRUEUP_TEST_PAUSE")
    {
        let (at, w) = asked.split_once(':').unwrap_or((asked.as_str(), "before"));
        if at == phase && w == when {
            s.line(LogLevel::Debug, &format!("TRUEUP_TEST_PAUSE: paused {when} {phase}"));
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
    }
}

/// A control that never stops.
pub fn never() -> Control<'static> {
    Control { stop: &|| false }
}

/// Whether a run stopped for good: `Finished` in a phase that is not live.
pub fn failed(ended: &Ended) -> bool {
    matches!(ended, Ended::Finished { live: false, .. })
}
