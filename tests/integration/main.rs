//! The one integration test binary: every test that runs the crate from outside.

mod store;
