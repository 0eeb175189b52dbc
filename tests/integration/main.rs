//! The one integration test binary: every test that runs the crate from outside.

mod apply_props;
mod atomic_switch;
mod cli;
mod config;
mod containers;
mod crash;
mod deploy;
mod images;
mod kinds;
mod lean;
mod machine;
mod observed;
mod phases;
mod plan;
mod podman;
mod proxy;
mod regress;
mod scratch;
mod serve;
mod spec;
mod store;
mod support;
mod tidy;
mod verdict_props;
mod view;
mod worlds;
