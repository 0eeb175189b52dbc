//! trueup keeps the deployments of a single-node PaaS true to what was declared, across
//! crashes.
//!
//! Deployment phases and their resume rules are a hierarchical state machine loaded from
//! YAML ([`spec`]) and interpreted by [`machine`]. A reconciler observes the state store
//! and the real machine into a [`model::World`], computes a [`plan::Plan`] of repairs, and
//! [`apply`] carries it out, idempotently.
//!
//! # Architecture: a pure core between two edges
//!
//! ```text
//! specs/*.yaml --spec--> Spec (validated arena) --machine--> step(state, event) -> transition
//! store (SQLite) --+
//! filesystem ------+--world::observe--> World --plan(spec, world, now)--> Plan
//! containers ------+                                                        |
//! routes ----------+             apply(plan) -- effects through world adapters
//! ```
//!
//! # Invariants
//!
//! - [`spec`], [`machine`], [`plan`] and [`graph`] are pure: no IO, no clock, no
//!   randomness. `now` is a parameter. The same inputs give the same output, byte for byte.
//! - Only [`world`] and [`store`] touch the outside; [`reconcile`] wires them to the core.
//! - [`apply`] is the only caller of effects, and every effect is idempotent: applying an
//!   action twice equals applying it once.
//! - A plan computed after a successful apply is empty (convergence).
//! - Whether a verdict on a stuck deployment may still go through, and what it writes, is
//!   decided once, by [`model::verdict`]: the store and the in-memory world of the
//!   property tests both write what it says, and a differential test holds them together.
//! - Each kind of action is described once, in [`plan::Kind`]'s table: the plan's symbols
//!   and summary and the apply's counts are derived from it, never listed by hand.
//! - Nothing the engine did not create is touched: unlabelled containers, files outside
//!   the managed root, a `current` that is a real directory (moved aside, never deleted).
//! - The library never prints; the `cli` module (feature `cli`) does.
//!
//! # Example
//!
//! Plan a fixture world with the default spec:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let specs = trueup::spec::Specs::one(trueup::spec::default_spec());
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/plan/0006_building_upload_gone.yaml");
//! let source = std::fs::read_to_string(path)?;
//! let fixture = trueup::world::fixture::load("case.yaml", &source)
//!     .map_err(|d| trueup::diag::render("case.yaml", &source, &d))?;
//! let plan = trueup::plan::plan(&specs, &fixture.world, fixture.now);
//! assert!(trueup::plan::render_text(&plan, fixture.now, trueup::plan::Verbosity::Brief).contains("x fail"));
//! # Ok(())
//! # }
//! ```
//!
//! Against the real machine, [`reconcile::plan_machine`] and [`reconcile::apply_machine`]
//! observe, plan and apply under the single-writer lease.

#![warn(missing_docs)]

pub mod apply;
#[cfg(feature = "cli")]
pub mod cli;
pub mod diag;
pub mod engine;
pub mod graph;
pub mod host;
pub mod machine;
pub mod model;
pub mod phases;
pub mod plan;
pub mod reconcile;
pub mod regress;
pub mod spec;
pub mod store;
#[cfg(test)]
mod test_dir;
mod threads;
pub mod time;
pub mod world;
