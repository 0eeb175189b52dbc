//! trueup keeps the deployments of a single-node PaaS true to what was declared, across
//! crashes.
//!
//! Deployment phases and their resume rules are a hierarchical state machine loaded from
//! YAML ([`spec`]) and interpreted by [`machine`]. A reconciler observes the state store
//! and the real machine into a [`world::World`], computes a [`plan::Plan`] of repairs, and
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
//! - Only [`world`] and [`store`] touch the outside.
//! - [`apply`] is the only caller of effects, and every effect is idempotent: applying an
//!   action twice equals applying it once.
//! - A plan computed after a successful apply is empty (convergence).
//! - Nothing the engine did not create is touched: unlabelled containers, files outside
//!   the managed root, a `current` that is a real directory (moved aside, never deleted).
//! - The library never prints; the [`cli`] module (feature `cli`) does.

pub mod apply;
#[cfg(feature = "cli")]
pub mod cli;
pub mod diag;
pub mod graph;
pub mod machine;
pub mod plan;
pub mod reconcile;
pub mod spec;
pub mod store;
pub mod time;
pub mod world;
