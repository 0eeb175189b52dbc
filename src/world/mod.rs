//! The world: one snapshot of everything trueup reconciles, and the edges that observe
//! and change the real machine.
//!
//! A [`World`](crate::model::World) (plain data, in [`crate::model`]) is built from the
//! real machine by [`observe`], or from a fixture file by [`fixture`]. The planner reads a
//! `World` and nothing else, so the same snapshot always gives the same plan.
//!
//! This is one of the two modules allowed to touch the outside (with [`crate::store`]):
//! observers read the file system, the store, route files and the container engine;
//! effect adapters change them. Nothing here decides *what* to change: that is [`crate::plan`]'s job.

pub(crate) mod at;
pub mod containers;
pub mod effects;
pub mod fixture;
pub mod observe;
pub mod routes;
pub mod stage;
