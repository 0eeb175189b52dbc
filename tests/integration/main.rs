//! The one integration test binary: every test that runs the crate from outside.

mod apply_props;
mod atomic_switch;
mod crash;
mod kinds;
mod machine;
mod plan;
mod scratch;
mod spec;
mod store;
mod tidy;
mod worlds;
