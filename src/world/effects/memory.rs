//! [`MemoryWorld`]: the effects on a [`World`] snapshot, with crash injection.
//!
//! Each effect is made of the sub-steps the real machine takes, and a crash can land
//! after any of them:
//!
//! | effect | sub-steps |
//! |---|---|
//! | link | create missing parents (if any), create `.trueup-tmp-NAME`, rename it over `NAME`, fsync the folder |
//! | link, already right | remove a leftover `.trueup-tmp-NAME` (if any) |
//! | move aside | rename, fsync the folder |
//! | write route | write and sync the temporary file (invisible), rename over, fsync the folder |
//! | remove route | rename to `PROJECT.yaml.trueup-removed-STAMP` (kept in [`MemoryWorld::removed_routes`]), fsync the folder |
//! | start container | start |
//! | recreate container | rename the old one to `NAME.trueup-old` (if present), stop it (if running), create, start, remove the old one |
//! | remove container | stop (if running), remove |
//! | resume, fail | one store transaction (claim, log, set phase) |
//!
//! A verdict is decided by [`model::verdict`], the function the store runs too, and its
//! log lines are the store's rows ([`LogEntry`]). The decision compares a claim with the
//! earlier of the verdict's instant and the wall clock; [`MemoryWorld::wall_clock`] sets
//! the latter, which by default is the end of time, so that a claim is compared with the
//! verdict's instant alone (generated worlds live at a fixed instant, not today).
//!
//! [`MemoryWorld::crash_after`]`(k)` lets `k` sub-steps complete; the next one, and every
//! one after it, fails with [`EffectError::Crashed`] and changes nothing: the process is
//! dead. By default a crash is a process crash (`kill -9`): completed sub-steps stay.
//! With [`MemoryWorld::power_loss`] a crash that lands between a rename and the fsync of
//! its folder undoes the rename (the folder entry never reached the disk), leaving the
//! temporary link behind, as a reboot may.
//!
//! Fixtures list files without their folders, so a path with entries below it counts as
//! a folder; a link's missing parents are added as explicit [`Node::Dir`] entries.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use crate::model::valid_id;
use crate::model::{
    self, Container, ContainerState, Decision, LogEntry, Node, Refusal, Route, Standing, Verdict, World,
};
use crate::time::Timestamp;

use super::{EffectError, Effects, check_link, check_path, free_aside, old_container_name, parents_below, tmp_path};

/// A [`World`] that effects change in memory, as the real machine would change.
#[derive(Debug, Clone)]
pub struct MemoryWorld {
    /// The world as it is now.
    pub world: World,
    /// The deployment log the store would keep, oldest first.
    pub log: Vec<LogEntry>,
    /// Route files removed, as kept: by file name (`PROJECT.yaml.trueup-removed-STAMP`),
    /// which the world's routes, like the real observer, do not list.
    pub removed_routes: BTreeMap<String, Route>,
    reconciler: String,
    wall_clock: Timestamp,
    decide: Decide,
    crash_after: Option<usize>,
    power_loss: bool,
    steps: usize,
    crashed: bool,
}

/// How a verdict is decided: [`model::verdict`]'s signature.
pub type Decide = fn(&Verdict<'_>, &Standing, Timestamp, &str) -> Decision;

/// The wall clock of a new [`MemoryWorld`]: the end of time (9999-12-31T23:59:59Z), later
/// than any verdict's instant.
const END_OF_TIME: Timestamp = Timestamp::from_unix(253_402_300_799);

/// What stands at a path: an explicit node, or a folder implied by entries below it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link(PathBuf),
}

impl MemoryWorld {
    /// A world that never crashes, reconciled by `trueup` with the wall clock at the end
    /// of time (see the module docs).
    pub fn new(world: World) -> Self {
        MemoryWorld {
            world,
            log: Vec::new(),
            removed_routes: BTreeMap::new(),
            reconciler: "trueup".to_owned(),
            wall_clock: END_OF_TIME,
            decide: model::verdict,
            crash_after: None,
            power_loss: false,
            steps: 0,
            crashed: false,
        }
    }

    /// Names the reconciler, as the store knows it by its lease: its own claims never
    /// refuse its verdicts, and its name is logged with them.
    pub fn reconciler(mut self, name: &str) -> Self {
        name.clone_into(&mut self.reconciler);
        self
    }

    /// Sets the wall clock that verdicts compare claims with (see [`model::verdict`]).
    pub fn wall_clock(mut self, wall: Timestamp) -> Self {
        self.wall_clock = wall;
        self
    }

    /// Decides verdicts with `decide` instead of [`model::verdict`]. Only for tests that
    /// check that a differential harness notices a model drifting from the store.
    pub fn decide_with(mut self, decide: Decide) -> Self {
        self.decide = decide;
        self
    }

    /// Lets `k` more sub-steps complete, then crashes (see the module docs).
    pub fn crash_after(mut self, k: usize) -> Self {
        self.crash_after = Some(k);
        self
    }

    /// Makes a crash between a rename and its folder's fsync undo the rename.
    pub fn power_loss(mut self, on: bool) -> Self {
        self.power_loss = on;
        self
    }

    /// How many sub-steps completed so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// True once the injected crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// The world, consumed.
    pub fn into_world(self) -> World {
        self.world
    }

    /// Takes one sub-step, or crashes.
    fn step(&mut self) -> Result<(), EffectError> {
        match &mut self.crash_after {
            Some(0) => {
                self.crashed = true;
                return Err(EffectError::Crashed);
            }
            Some(k) => *k -= 1,
            None => {}
        }
        self.steps += 1;
        Ok(())
    }

    /// The fsync after a rename: on a crash with power loss, `undo` runs.
    fn fsync(&mut self, undo: impl FnOnce(&mut World)) -> Result<(), EffectError> {
        let result = self.step();
        if result.is_err() && self.power_loss {
            undo(&mut self.world);
        }
        result
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        match self.world.files.get(path) {
            Some(Node::Dir) => Some(Kind::Dir),
            Some(Node::File) => Some(Kind::File),
            Some(Node::Symlink(t)) => Some(Kind::Link(t.clone())),
            None => self.subtree(path).next().map(|_| Kind::Dir),
        }
    }

    /// `path` and every path below it, in order (paths sort component by component, so
    /// a subtree is one contiguous range).
    fn subtree<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.world
            .files
            .range((Bound::Included(path), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(path))
    }

    /// The parents of `path` below the root that are missing, after checking that the
    /// present ones are folders.
    fn missing_parents(&self, path: &Path) -> Result<Vec<PathBuf>, EffectError> {
        let mut missing = Vec::new();
        for parent in parents_below(&self.world.root, path) {
            match self.kind(parent) {
                Some(Kind::Dir) => {}
                Some(_) => return Err(EffectError::ParentNotDir { path: parent.to_owned() }),
                None => missing.push(parent.to_owned()),
            }
        }
        Ok(missing)
    }

    fn containers(&mut self, name: &str) -> Result<&mut Vec<Container>, EffectError> {
        self.world.containers.as_mut().ok_or_else(|| EffectError::NoContainerEngine { name: name.to_owned() })
    }

    /// Container `id`, which the caller found just before.
    fn container_mut(&mut self, id: &str, name: &str) -> Result<&mut Container, EffectError> {
        let c = self.containers(name)?.iter_mut().find(|c| c.id == id);
        Ok(c.expect("the caller found the container just before"))
    }

    fn deployment_index(&self, deployment: &str) -> Result<usize, EffectError> {
        self.world
            .deployments
            .iter()
            .position(|d| d.id == deployment)
            .ok_or_else(|| EffectError::NoSuchDeployment(deployment.to_owned()))
    }

    /// `Ok` unless `project`'s route file exists without trueup's header, as the real
    /// adapter checks.
    fn ensure_ours(&self, project: &str) -> Result<(), EffectError> {
        match self.world.routes.get(project) {
            Some(route) if !route.managed() => {
                Err(EffectError::NotOurs { path: PathBuf::from(format!("routes/{project}.yaml")) })
            }
            _ => Ok(()),
        }
    }
}

fn in_the_way(path: &Path, kind: &Kind) -> EffectError {
    let what = if *kind == Kind::Dir { "folder" } else { "file" };
    EffectError::InTheWay { path: path.to_owned(), what }
}

fn managed_or_refuse(c: &Container) -> Result<(), EffectError> {
    if c.managed() { Ok(()) } else { Err(EffectError::Unmanaged { id: c.id.clone(), name: c.name.clone() }) }
}

impl Effects for MemoryWorld {
    fn link(&mut self, path: &Path, target: &Path) -> Result<(), EffectError> {
        check_link(&self.world.root, path, target)?;
        let missing = self.missing_parents(path)?;
        let tmp = tmp_path(path);
        let leftover = match self.kind(&tmp) {
            Some(Kind::Link(_)) => true,
            Some(kind) => return Err(in_the_way(&tmp, &kind)),
            None => false,
        };
        match self.kind(path) {
            Some(Kind::Link(t)) if t == target => {
                if leftover {
                    self.step()?;
                    self.world.files.remove(&tmp);
                }
                return Ok(());
            }
            Some(Kind::Link(_)) | None => {}
            Some(kind) => return Err(in_the_way(path, &kind)),
        }
        if !missing.is_empty() {
            self.step()?;
            self.world.files.extend(missing.into_iter().map(|p| (p, Node::Dir)));
        }
        self.step()?;
        self.world.files.insert(tmp.clone(), Node::Symlink(target.to_owned()));
        self.step()?;
        let node = self.world.files.remove(&tmp).expect("the temporary link was inserted just above");
        let before = self.world.files.insert(path.to_owned(), node.clone());
        self.fsync(|w| {
            match before {
                Some(old) => w.files.insert(path.to_owned(), old),
                None => w.files.remove(path),
            };
            w.files.insert(tmp, node);
        })
    }

    fn move_aside(&mut self, path: &Path, to: &Path) -> Result<(), EffectError> {
        check_path(&self.world.root, path)?;
        check_path(&self.world.root, to)?;
        match self.kind(path) {
            None | Some(Kind::Link(_)) => return Ok(()),
            Some(_) => {}
        }
        let to = free_aside(path, to, |c| Ok(self.kind(c).is_some()))?;
        if !self.missing_parents(&to)?.is_empty() {
            let source = std::io::Error::from(std::io::ErrorKind::NotFound);
            return Err(EffectError::Io { op: "move aside", path: to, source });
        }
        self.step()?;
        let moved: Vec<PathBuf> = self.subtree(path).cloned().collect();
        let rekey = |w: &mut World, from: &Path, into: &Path, keys: &[PathBuf]| {
            for key in keys {
                let rest = key.strip_prefix(from).expect("subtree keys start with their root");
                let node = w.files.remove(&from.join(rest)).expect("the key was just listed");
                w.files.insert(into.join(rest), node);
            }
        };
        rekey(&mut self.world, path, &to, &moved);
        let moved_back: Vec<PathBuf> = moved.iter().map(|k| to.join(k.strip_prefix(path).unwrap_or(k))).collect();
        self.fsync(|w| rekey(w, &to, path, &moved_back))
    }

    fn start_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
        let containers = self.containers(name)?;
        let Some(c) = containers.iter().find(|c| c.id == id) else {
            return Err(EffectError::NoSuchContainer { id: id.to_owned(), name: name.to_owned() });
        };
        managed_or_refuse(c)?;
        if c.state == ContainerState::Running {
            return Ok(());
        }
        self.step()?;
        let c = self.containers(name)?.iter_mut().find(|c| c.id == id).expect("found just above");
        c.state = ContainerState::Running;
        Ok(())
    }

    fn recreate_container(
        &mut self,
        id: &str,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<(), EffectError> {
        let containers = self.containers(name)?;
        // A container other than the old one that holds the name is ours from a
        // previous (maybe crashed) run when it matches, else someone else's: checked
        // before anything changes.
        let holder = containers.iter().find(|c| c.name == name && c.id != id).cloned();
        if let Some(h) = &holder
            && (!h.managed() || h.image != image || h.labels != *labels)
        {
            return Err(EffectError::NameTaken { name: name.to_owned(), id: h.id.clone() });
        }
        let old = containers.iter().find(|c| c.id == id).cloned();
        if let Some(old) = &old {
            managed_or_refuse(old)?;
            // The old one leaves the name before the new one takes it, and stays until
            // the new one runs: a crash in between leaves it under a name the planner
            // recognizes, so the next run recreates again instead of losing it.
            let aside = old_container_name(name);
            if old.name != aside {
                self.step()?;
                self.container_mut(id, name)?.name = aside;
            }
            if old.state == ContainerState::Running {
                self.step()?;
                self.container_mut(id, name)?.state = ContainerState::Exited;
            }
        }
        let new_id = match holder {
            Some(h) => h.id,
            None => {
                let new_id = format!("mem-{name}");
                self.step()?;
                self.containers(name)?.push(Container {
                    id: new_id.clone(),
                    name: name.to_owned(),
                    image: image.to_owned(),
                    state: ContainerState::Created,
                    labels: labels.clone(),
                    created_at: Some(now),
                });
                new_id
            }
        };
        self.start_container(&new_id, name)?;
        if old.is_some() {
            self.step()?;
            self.containers(name)?.retain(|c| c.id != id);
        }
        Ok(())
    }

    fn remove_container(&mut self, id: &str, name: &str) -> Result<(), EffectError> {
        let containers = self.containers(name)?;
        let Some(c) = containers.iter().find(|c| c.id == id) else { return Ok(()) };
        managed_or_refuse(c)?;
        if c.state == ContainerState::Running {
            self.step()?;
            let c = self.containers(name)?.iter_mut().find(|c| c.id == id).expect("found just above");
            c.state = ContainerState::Exited;
        }
        self.step()?;
        self.containers(name)?.retain(|c| c.id != id);
        Ok(())
    }

    fn write_route(
        &mut self,
        project: &str,
        deployment: &str,
        upstream: &str,
        domain: &str,
    ) -> Result<(), EffectError> {
        if !valid_id(project) {
            return Err(EffectError::InvalidId(project.to_owned()));
        }
        let route = Route {
            deployment: Some(deployment.to_owned()),
            upstream: upstream.to_owned(),
            domain: Some(domain.to_owned()),
            problem: None,
        };
        if self.world.routes.get(project) == Some(&route) {
            return Ok(());
        }
        self.ensure_ours(project)?;
        self.step()?; // the temporary file, written and synced: no reader sees it
        self.step()?;
        let before = self.world.routes.insert(project.to_owned(), route);
        self.fsync(|w| match before {
            Some(old) => drop(w.routes.insert(project.to_owned(), old)),
            None => drop(w.routes.remove(project)),
        })
    }

    fn remove_route(&mut self, project: &str, now: Timestamp) -> Result<(), EffectError> {
        if !valid_id(project) {
            return Err(EffectError::InvalidId(project.to_owned()));
        }
        if !self.world.routes.contains_key(project) {
            return Ok(());
        }
        self.ensure_ours(project)?;
        let file = PathBuf::from(format!("{project}.yaml"));
        let taken = |p: &Path| Ok(self.removed_routes.contains_key(&*p.to_string_lossy()));
        let to = free_aside(&file, &super::removed_route_path(&file, now), taken)?.to_string_lossy().into_owned();
        self.step()?; // the rename
        let before = self.world.routes.remove(project).expect("checked just above");
        self.removed_routes.insert(to.clone(), before.clone());
        let result = self.fsync(|w| drop(w.routes.insert(project.to_owned(), before)));
        if result.is_err() && self.power_loss {
            self.removed_routes.remove(&to);
        }
        result
    }

    fn verdict(&mut self, v: &Verdict<'_>) -> Result<(), EffectError> {
        let i = self.deployment_index(v.deployment)?;
        let to = match (self.decide)(v, &Standing::of(&self.world.deployments[i]), self.wall_clock, &self.reconciler) {
            Decision::AlreadyThere => return Ok(()),
            Decision::Refused(why) => return Err(refused(v, why)),
            Decision::Go(to) => to,
        };
        self.step()?;
        let d = &mut self.world.deployments[i];
        d.phase = to.phase;
        d.attempts = to.attempts;
        d.phase_updated_at = Some(to.phase_updated_at);
        d.finished_at = to.finished_at.or(d.finished_at);
        // The claim taken for the verdict is given back in the same transaction; a lapsed
        // claim left by a dead worker goes with it, as in the store.
        d.owner = None;
        self.log.push(to.log);
        Ok(())
    }
}

/// The error for a verdict [`model::verdict`] refused, as [`super::Host`] reports the
/// store's.
fn refused(v: &Verdict<'_>, why: Refusal) -> EffectError {
    let deployment = v.deployment.to_owned();
    match why {
        Refusal::Claimed { owner, until } => EffectError::Claimed { deployment, owner, until },
        Refusal::PhaseMoved { actual, attempts } => {
            EffectError::PhaseMoved { deployment, expected: v.from_phase.to_owned(), actual, attempts }
        }
        Refusal::Progressed { .. } => EffectError::Progressed(deployment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Claim, Deployment, DeploymentType, LogLevel, labels};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn now() -> Timestamp {
        "2025-10-02T12:00:00Z".parse().unwrap()
    }

    fn world() -> World {
        let mut w = World { root: p("/r"), containers: Some(Vec::new()), ..World::default() };
        w.files.insert(p("/r/p1/deployments/d0/public/index.html"), Node::File);
        w.files.insert(p("/r/p1/deployments/d1/public/index.html"), Node::File);
        w.files.insert(p("/r/p1/current"), Node::Symlink(p("/r/p1/deployments/d0")));
        w
    }

    fn sym(target: &str) -> Node {
        Node::Symlink(p(target))
    }

    #[test]
    fn link_switches_once_and_twice_alike() {
        let mut m = MemoryWorld::new(world());
        m.link(&p("/r/p1/current"), &p("/r/p1/deployments/d1")).unwrap();
        assert_eq!(m.world.files[&p("/r/p1/current")], sym("/r/p1/deployments/d1"));
        assert_eq!(m.steps(), 3, "temporary link, rename, fsync");
        let once = m.world.clone();
        m.link(&p("/r/p1/current"), &p("/r/p1/deployments/d1")).unwrap();
        assert_eq!(m.world, once);
        assert_eq!(m.steps(), 3, "an applied link takes no step");
    }

    #[test]
    fn link_creates_missing_parents_but_not_implied_ones() {
        let mut m = MemoryWorld::new(world());
        m.link(&p("/r/webroot/p1"), &p("/r/p1/current/public")).unwrap();
        assert_eq!(m.world.files.get(&p("/r/webroot")), Some(&Node::Dir));
        // `/r/p1` is implied by the files below it, so linking in it adds no entry.
        m.link(&p("/r/p1/other"), &p("/r/p1/deployments/d0")).unwrap();
        assert_eq!(m.world.files.get(&p("/r/p1")), None);
    }

    #[test]
    fn link_refuses_what_it_must_not_touch() {
        let mut w = world();
        w.files.insert(p("/r/p2/current/index.html"), Node::File);
        w.files.insert(p("/r/p3"), Node::Symlink(p("/elsewhere")));
        let mut m = MemoryWorld::new(w);
        let before = m.world.clone();
        let err = m.link(&p("/r/p2/current"), &p("/r/p2/deployments/d0")).unwrap_err();
        assert_eq!(err.to_string(), "`/r/p2/current` is a real folder, not a symlink: it must be moved aside first");
        let err = m.link(&p("/r/p3/current"), &p("/r/p3/deployments/d0")).unwrap_err();
        assert_eq!(err.to_string(), "`/r/p3` is not a real folder");
        let err = m.link(&p("/etc/current"), &p("/r/p1/deployments/d0")).unwrap_err();
        assert!(matches!(err, EffectError::OutsideRoot { .. }));
        let err = m.link(&p("/r/p1/current"), &p("/etc")).unwrap_err();
        assert!(matches!(err, EffectError::OutsideRoot { .. }));
        assert_eq!(m.world, before);
        assert_eq!(m.steps(), 0);
    }

    #[test]
    fn a_crash_before_the_rename_leaves_a_temporary_link_the_next_run_removes() {
        let target = p("/r/p1/deployments/d1");
        let mut m = MemoryWorld::new(world()).crash_after(1);
        assert!(matches!(m.link(&p("/r/p1/current"), &target), Err(EffectError::Crashed)));
        assert!(m.crashed());
        assert_eq!(m.world.files[&p("/r/p1/.trueup-tmp-current")], Node::Symlink(target.clone()));
        assert_eq!(m.world.files[&p("/r/p1/current")], sym("/r/p1/deployments/d0"), "old link intact");
        let mut m = MemoryWorld::new(m.into_world());
        m.link(&p("/r/p1/current"), &target).unwrap();
        let mut clean = MemoryWorld::new(world());
        clean.link(&p("/r/p1/current"), &target).unwrap();
        assert_eq!(m.world, clean.world);
    }

    #[test]
    fn a_crash_between_rename_and_fsync_keeps_or_loses_the_rename() {
        let target = p("/r/p1/deployments/d1");
        let mut m = MemoryWorld::new(world()).crash_after(2);
        assert!(m.link(&p("/r/p1/current"), &target).is_err());
        assert_eq!(m.world.files[&p("/r/p1/current")], Node::Symlink(target.clone()), "kill -9: rename kept");
        assert!(!m.world.files.contains_key(&p("/r/p1/.trueup-tmp-current")));

        let mut m = MemoryWorld::new(world()).crash_after(2).power_loss(true);
        assert!(m.link(&p("/r/p1/current"), &target).is_err());
        assert_eq!(m.world.files[&p("/r/p1/current")], sym("/r/p1/deployments/d0"), "power loss: rename lost");
        assert!(m.world.files.contains_key(&p("/r/p1/.trueup-tmp-current")));
        let mut m = MemoryWorld::new(m.into_world());
        m.link(&p("/r/p1/current"), &target).unwrap();
        assert!(!m.world.files.contains_key(&p("/r/p1/.trueup-tmp-current")));
    }

    #[test]
    fn move_aside_moves_a_whole_folder_and_numbers_taken_names() {
        let mut w = world();
        w.files.insert(p("/r/p1/current"), Node::Dir);
        w.files.insert(p("/r/p1/current/a/b.txt"), Node::File);
        w.files.insert(p("/r/p1/current/a/l"), Node::Symlink(p("b.txt")));
        w.files.insert(p("/r/p1/current-x"), Node::File);
        w.files.insert(p("/r/p1/aside"), Node::File);
        let mut m = MemoryWorld::new(w);
        m.move_aside(&p("/r/p1/current"), &p("/r/p1/aside")).unwrap();
        let got: Vec<_> = m.world.files.keys().filter(|k| k.starts_with("/r/p1/aside.1")).cloned().collect();
        assert_eq!(got, [p("/r/p1/aside.1"), p("/r/p1/aside.1/a/b.txt"), p("/r/p1/aside.1/a/l")]);
        assert_eq!(m.world.files[&p("/r/p1/aside.1/a/l")], Node::Symlink(p("b.txt")));
        assert!(m.world.files.contains_key(&p("/r/p1/current-x")), "a sibling with a longer name stays");
        assert!(!m.world.files.keys().any(|k| k.starts_with("/r/p1/current")));
        let once = m.world.clone();
        m.move_aside(&p("/r/p1/current"), &p("/r/p1/aside")).unwrap();
        assert_eq!(m.world, once);
    }

    fn container(id: &str, state: ContainerState, managed: bool) -> Container {
        let mut labels = BTreeMap::new();
        if managed {
            labels.insert(labels::PROJECT.to_owned(), "p1".to_owned());
        }
        Container { id: id.into(), name: format!("n-{id}"), image: "img".into(), state, labels, created_at: None }
    }

    #[test]
    fn containers_change_idempotently_and_unlabelled_ones_are_refused() {
        let mut w = world();
        w.containers = Some(vec![
            container("c1", ContainerState::Exited, true),
            container("c2", ContainerState::Running, true),
            container("c3", ContainerState::Exited, false),
        ]);
        let mut m = MemoryWorld::new(w);
        for _ in 0..2 {
            m.start_container("c1", "n-c1").unwrap();
            m.remove_container("c2", "n-c2").unwrap();
        }
        let ids: Vec<_> = m.world.containers.iter().flatten().map(|c| (c.id.as_str(), c.state)).collect();
        assert_eq!(ids, [("c1", ContainerState::Running), ("c3", ContainerState::Exited)]);
        let err = m.start_container("c3", "n-c3").unwrap_err();
        assert_eq!(err.to_string(), "container `n-c3` (`c3`) is not managed by trueup");
        assert!(m.remove_container("c3", "n-c3").is_err());
        let err = m.start_container("c9", "n-c9").unwrap_err();
        assert_eq!(err.to_string(), "container `n-c9` (`c9`) does not exist");

        let labels: BTreeMap<_, _> = [(labels::PROJECT.to_owned(), "p1".to_owned())].into();
        m.recreate_container("c1", "n-c1", "img2", &labels, now()).unwrap();
        let once = m.world.clone();
        m.recreate_container("c1", "n-c1", "img2", &labels, now()).unwrap();
        assert_eq!(m.world, once);
        let c = m.world.containers.iter().flatten().find(|c| c.name == "n-c1").unwrap();
        assert_eq!((c.id.as_str(), c.image.as_str(), c.state), ("mem-n-c1", "img2", ContainerState::Running));
        let err = m.recreate_container("c0", "n-c3", "img", &labels, now()).unwrap_err();
        assert_eq!(err.to_string(), "container name `n-c3` is held by `c3`, which is not managed by trueup");

        let mut m = MemoryWorld::new(World { containers: None, ..world() });
        let err = m.start_container("c1", "web").unwrap_err();
        assert_eq!(err.to_string(), "cannot change container `web`: no container engine is configured");
    }

    #[test]
    fn a_recreate_cut_short_leaves_the_old_container_under_a_name_the_planner_knows() {
        let mut w = world();
        w.containers = Some(vec![container("c1", ContainerState::Running, true)]);
        let labels: BTreeMap<_, _> = [(labels::PROJECT.to_owned(), "p1".to_owned())].into();
        let mut clean = MemoryWorld::new(w.clone());
        clean.recreate_container("c1", "n-c1", "img2", &labels, now()).unwrap();
        assert_eq!(clean.steps(), 5, "rename, stop, create, start, remove");
        for k in 0..5 {
            let mut m = MemoryWorld::new(w.clone()).crash_after(k);
            assert!(m.recreate_container("c1", "n-c1", "img2", &labels, now()).is_err());
            let old = m.world.containers.iter().flatten().find(|c| c.id == "c1").expect("kept until the new one runs");
            let name = old.name.clone();
            assert_eq!(name, if k == 0 { "n-c1" } else { "n-c1.trueup-old" });
            let mut m = MemoryWorld::new(m.into_world());
            m.recreate_container("c1", super::super::recreated_name(&name), "img2", &labels, now()).unwrap();
            assert_eq!(m.world, clean.world, "crash after {k}");
        }
    }

    fn deployment(id: &str, phase: &str, attempts: u32) -> Deployment {
        Deployment {
            id: id.into(),
            project: "p1".into(),
            service: None,
            kind: DeploymentType::Upload,
            phase: phase.into(),
            phase_updated_at: None,
            heartbeat_at: None,
            attempts,
            finished_at: None,
            source: Default::default(),
            metadata: BTreeMap::new(),
            owner: None,
            created_at: None,
        }
    }

    fn resume<'a>(d: &'a str, from: &'a str, to: &'a str, attempt: u32, reason: &'a str) -> Verdict<'a> {
        Verdict {
            deployment: d,
            from_phase: from,
            to_phase: to,
            attempt: Some(attempt),
            stuck_since: None,
            dead_claim: None,
            reason,
            now: now(),
        }
    }

    fn fail<'a>(d: &'a str, from: &'a str, reason: &'a str) -> Verdict<'a> {
        Verdict {
            deployment: d,
            from_phase: from,
            to_phase: "FAILED",
            attempt: None,
            stuck_since: None,
            dead_claim: None,
            reason,
            now: now(),
        }
    }

    #[test]
    fn resume_and_fail_are_compare_and_set() {
        let mut w = world();
        w.deployments = vec![deployment("d1", "BUILDING", 1), deployment("d2", "PULLING_SOURCE", 0)];
        let mut m = MemoryWorld::new(w);
        for _ in 0..2 {
            m.verdict(&resume("d1", "BUILDING", "BUILDING", 2, "stuck 10m")).unwrap();
            m.verdict(&fail("d2", "PULLING_SOURCE", "source is gone")).unwrap();
        }
        let d1 = &m.world.deployments[0];
        assert_eq!((d1.phase.as_str(), d1.attempts, d1.phase_updated_at), ("BUILDING", 2, Some(now())));
        let d2 = &m.world.deployments[1];
        assert_eq!((d2.phase.as_str(), d2.finished_at), ("FAILED", Some(now())));
        assert_eq!(m.log.len(), 2, "a repeated change logs nothing more");
        let err = m.verdict(&resume("d1", "COPYING_FILES", "COPYING_FILES", 3, "x")).unwrap_err();
        assert_eq!(err.to_string(), "deployment `d1` is in `BUILDING` (attempts 2), not `COPYING_FILES`");
        assert!(matches!(m.verdict(&fail("d9", "A", "x")), Err(EffectError::NoSuchDeployment(_))));
    }

    #[test]
    fn a_verdict_is_decided_as_the_store_decides_it() {
        let mut w = world();
        let mut held = deployment("d1", "BUILDING", 0);
        // Lapsed at the verdict's instant, live by a wall clock an hour earlier.
        held.owner = Some(Claim::new("worker-7", "2025-10-02T11:30:00Z".parse().unwrap()));
        let mut own = deployment("d2", "BUILDING", 0);
        own.owner = Some(Claim::new("apply-1", "2999-01-01T00:00:00Z".parse().unwrap()));
        w.deployments = vec![held, own];
        let wall = "2025-10-02T11:00:00Z".parse().unwrap();
        let mut m = MemoryWorld::new(w.clone()).reconciler("apply-1").wall_clock(wall);
        let err = m.verdict(&resume("d1", "BUILDING", "BUILDING", 1, "stuck")).unwrap_err();
        assert_eq!(err.to_string(), "deployment `d1` is held by `worker-7` until 2025-10-02T11:30:00Z");
        m.verdict(&resume("d2", "BUILDING", "BUILDING", 1, "stuck")).unwrap();
        assert_eq!(m.world.deployments[1].owner, None, "its own claim does not refuse, and is given back");
        let line = &m.log[0];
        assert_eq!(
            (line.deployment.as_str(), line.level, line.phase.as_deref()),
            ("d2", LogLevel::Warn, Some("BUILDING"))
        );
        assert_eq!(line.message, "resumed: restarting BUILDING (attempt 1): stuck");
        assert_eq!(line.metadata["reconciler"], "apply-1");

        // By default the wall clock is the end of time: the claim lapsed at the verdict's instant.
        let mut m = MemoryWorld::new(w);
        m.verdict(&resume("d1", "BUILDING", "BUILDING", 1, "stuck")).unwrap();
        assert_eq!(m.log[0].metadata["reconciler"], "trueup");
        assert!(matches!(m.verdict(&resume("d2", "BUILDING", "BUILDING", 1, "x")), Err(EffectError::Claimed { .. })));
    }

    #[test]
    fn routes_are_written_and_removed_idempotently() {
        let mut m = MemoryWorld::new(world());
        for _ in 0..2 {
            m.write_route("p1", "d1", "http://127.0.0.1:8080", "p1.localhost").unwrap();
        }
        assert_eq!(m.steps(), 3);
        assert_eq!(m.world.routes["p1"].deployment.as_deref(), Some("d1"));
        let now = Timestamp::from_unix(1_759_406_400);
        for _ in 0..2 {
            m.remove_route("p1", now).unwrap();
        }
        assert!(m.world.routes.is_empty());
        let kept: Vec<&str> = m.removed_routes.keys().map(String::as_str).collect();
        assert_eq!(kept, ["p1.yaml.trueup-removed-20251002T120000Z"], "kept under a name Traefik does not load");
        assert!(matches!(m.remove_route("../x", now), Err(EffectError::InvalidId(_))));
    }
}
