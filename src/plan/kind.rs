//! The kinds of action, described in one table: how each is shown and counted.
//!
//! A [`Kind`]'s row gives its symbol and verb in the text plan, its count in the plan's
//! [`Summary`](super::Summary) (text and JSON), its counter in an apply's
//! [`Counts`](crate::apply::Counts) and its [`Group`], under which its failures are
//! counted. Everything that treats actions by kind reads this table, so adding a kind
//! of change means a [`Change`] variant, its rule, its effect and its row here; the
//! match in [`Change::kind`] is the only one that names every variant for that purpose.
//!
//! The symbols are terraform's:
//!
//! ```text
//!   ~  change in place (resume, relink, start)   +  create (new link, new route file)
//!   x  fail a deployment                          >  move aside (never delete)
//!  -/+ recreate a container                       -  remove (zombie container, stale route)
//! ```

use super::Change;

/// A count in the plan's summary: its JSON key and how the text line says it. Several
/// kinds may share one (both kinds of link are symlink repairs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The key in `plan --json`'s `summary`, e.g. `symlink_repairs`.
    pub key: &'static str,
    /// `symlink repair`, after a count of one.
    pub one: &'static str,
    /// `symlink repairs`, after any other count.
    pub many: &'static str,
}

/// A counter of an apply: its JSON key and how the summary line says it (`3 fixed`).
/// Several kinds may share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The key in `apply --json`'s `counts`, e.g. `symlinks_fixed`.
    pub key: &'static str,
    /// The word after the number in the summary line, e.g. `fixed`.
    pub word: &'static str,
}

/// What a kind of action is shown and counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    symbol: &'static str,
    verb: &'static str,
    planned: Planned,
    done: Tally,
    group: Group,
}

/// Declares [`Kind`] and its table from one list, so that [`Kind::ALL`] cannot miss a
/// kind that has a row, and no kind lacks a row.
macro_rules! kinds {
    ($($(#[doc = $doc:literal])+ $kind:ident => $row:expr,)+) => {
        /// A kind of action, as shown and counted; see the module docs.
        ///
        /// It is finer than the `kind` of an action in the JSON plan: a link that
        /// replaces another ([`Kind::Relink`]) and one made where there was none
        /// ([`Kind::NewLink`]) are both `link` there, but show different symbols.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $($(#[doc = $doc])+ $kind,)+
        }

        impl Kind {
            /// Every kind, in the order of the table: counts are listed in this order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)+];

            /// Its row of the table.
            const fn row(self) -> Row {
                match self {
                    $(Kind::$kind => $row,)+
                }
            }
        }
    };
}

kinds! {
    /// Resume a stuck deployment: re-run its phase, or begin the next one.
    Resume => Row {
        symbol: "~",
        verb: "resume",
        planned: Planned { key: "resume", one: "resume", many: "resume" },
        done: Tally { key: "deployments_resumed", word: "resumed" },
        group: Group::Deployment,
    },
    /// Mark a stuck deployment failed.
    Fail => Row {
        symbol: "x",
        verb: "fail",
        planned: Planned { key: "fail", one: "fail", many: "fail" },
        done: Tally { key: "deployments_failed", word: "failed" },
        group: Group::Deployment,
    },
    /// Switch a link that points elsewhere.
    Relink => Row { symbol: "~", verb: "link", planned: SYMLINK_REPAIRS, done: SYMLINKS_FIXED, group: Group::Symlink },
    /// Make a link where there is none.
    NewLink => Row { symbol: "+", verb: "link", planned: SYMLINK_REPAIRS, done: SYMLINKS_FIXED, group: Group::Symlink },
    /// Move a real file or folder out of a link's way.
    MoveAside => Row {
        symbol: ">",
        verb: "move aside",
        planned: Planned { key: "moves_aside", one: "move aside", many: "moves aside" },
        done: Tally { key: "moved_aside", word: "moved aside" },
        group: Group::Symlink,
    },
    /// Start a stopped container.
    StartContainer => Row {
        symbol: "~",
        verb: "start",
        planned: Planned { key: "container_starts", one: "container start", many: "container starts" },
        done: Tally { key: "containers_started", word: "started" },
        group: Group::Container,
    },
    /// Replace a container by one with the right labels.
    RecreateContainer => Row {
        symbol: "-/+",
        verb: "recreate",
        planned: Planned { key: "recreates", one: "recreate", many: "recreates" },
        done: Tally { key: "containers_recreated", word: "recreated" },
        group: Group::Container,
    },
    /// Remove a container trueup created.
    RemoveContainer => Row {
        symbol: "-",
        verb: "remove",
        planned: REMOVALS,
        done: Tally { key: "containers_removed", word: "removed" },
        group: Group::Container,
    },
    /// Write a project's route file.
    WriteRoute => Row {
        symbol: "+",
        verb: "route",
        planned: Planned { key: "route_writes", one: "route write", many: "route writes" },
        done: Tally { key: "routes_written", word: "written" },
        group: Group::Route,
    },
    /// Remove a stale route file.
    RemoveRoute => Row {
        symbol: "-",
        verb: "route",
        planned: REMOVALS,
        done: Tally { key: "routes_removed", word: "removed" },
        group: Group::Route,
    },
}

/// Both kinds of link repair one symlink.
const SYMLINK_REPAIRS: Planned = Planned { key: "symlink_repairs", one: "symlink repair", many: "symlink repairs" };
/// Both kinds of link fix one symlink.
const SYMLINKS_FIXED: Tally = Tally { key: "symlinks_fixed", word: "fixed" };
/// Removed containers and route files are summed in a plan's summary.
const REMOVALS: Planned = Planned { key: "removals", one: "removal", many: "removals" };

impl Kind {
    /// `~`, `x`, `+`, `>`, `-/+` or `-`: see the module docs.
    pub const fn symbol(self) -> &'static str {
        self.row().symbol
    }

    /// `resume`, `link`, `move aside`, ...: what the text plan and the results say.
    pub const fn verb(self) -> &'static str {
        self.row().verb
    }

    /// Its count in the plan's summary.
    pub const fn planned(self) -> Planned {
        self.row().planned
    }

    /// Its counter in an apply's counts, when it is done.
    pub const fn done(self) -> Tally {
        self.row().done
    }

    /// Where its failures are counted.
    pub const fn group(self) -> Group {
        self.row().group
    }
}

/// What an action changes, for counting its failures (and, for deployments, its skips).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Resumes and failures: verdicts on deployments.
    Deployment,
    /// Links and moves aside.
    Symlink,
    /// Container starts, recreates and removals.
    Container,
    /// Route writes and removals.
    Route,
}

impl Group {
    /// Every group, in the order of the counts and of the summary line.
    pub const ALL: &'static [Group] = &[Group::Deployment, Group::Symlink, Group::Container, Group::Route];

    /// `deployments`: how the summary line names the group.
    pub const fn noun(self) -> &'static str {
        match self {
            Group::Deployment => "deployments",
            Group::Symlink => "symlinks",
            Group::Container => "containers",
            Group::Route => "routes",
        }
    }

    /// The counter of its failed actions, e.g. `deployment_errors`.
    pub const fn errors(self) -> &'static str {
        match self {
            Group::Deployment => "deployment_errors",
            Group::Symlink => "symlink_errors",
            Group::Container => "container_errors",
            Group::Route => "route_errors",
        }
    }

    /// The counter of its skipped actions, if it has its own. Only deployments do: a
    /// verdict skipped because a worker kept its deployment is news, while any other
    /// skip is counted in the apply's total alone.
    pub const fn skipped(self) -> Option<Tally> {
        match self {
            Group::Deployment => Some(Tally { key: "deployments_skipped", word: "skipped" }),
            Group::Symlink | Group::Container | Group::Route => None,
        }
    }

    /// Its kinds, in the order of the table.
    pub fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.iter().copied().filter(move |k| k.group() == self)
    }
}

impl Change {
    /// Its kind: what it is shown and counted as.
    pub fn kind(&self) -> Kind {
        match self {
            Change::Resume { .. } => Kind::Resume,
            Change::Fail { .. } => Kind::Fail,
            Change::Link { before: Some(_), .. } => Kind::Relink,
            Change::Link { before: None, .. } => Kind::NewLink,
            Change::MoveAside { .. } => Kind::MoveAside,
            Change::StartContainer { .. } => Kind::StartContainer,
            Change::RecreateContainer { .. } => Kind::RecreateContainer,
            Change::RemoveContainer { .. } => Kind::RemoveContainer,
            Change::WriteRoute { .. } => Kind::WriteRoute,
            Change::RemoveRoute { .. } => Kind::RemoveRoute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_that_share_a_count_agree_on_its_words() {
        for a in Kind::ALL {
            for b in Kind::ALL {
                if a.planned().key == b.planned().key {
                    assert_eq!(a.planned(), b.planned(), "{a:?} and {b:?}");
                }
                if a.done().key == b.done().key {
                    assert_eq!((a.done(), a.group()), (b.done(), b.group()), "{a:?} and {b:?}");
                }
            }
        }
    }

    #[test]
    fn every_kind_has_its_own_look_and_a_listed_group() {
        for (i, a) in Kind::ALL.iter().enumerate() {
            assert!(Group::ALL.contains(&a.group()), "{a:?}'s group is not in Group::ALL");
            assert!(!a.verb().is_empty() && !a.symbol().is_empty(), "{a:?}");
            for b in &Kind::ALL[i + 1..] {
                assert_ne!((a.symbol(), a.verb()), (b.symbol(), b.verb()), "{a:?} and {b:?} look alike in a plan");
            }
        }
    }
}
