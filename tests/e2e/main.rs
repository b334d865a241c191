//! End-to-end tests: real plugins compiled to wasm, real HTTP servers on loopback, the real
//! `medic` binary.
//!
//! - `sandbox`: hostile plugins against the host, each ending as the right named failure.
//! - `loading`: digests, missing files, non-components, incompatible contracts, the cache.

mod api;
mod authoring;
mod aws;
mod budget;
mod canary;
mod cancel;
pub mod changed_plugins;
pub mod cli;
mod data_dir;
mod drills;
mod execution;
mod flags;
mod fleet;
mod fleet_interrupted;
mod fleet_pace;
mod lab;
mod loading;
mod pglab;
mod plugins;
pub mod recovery;
mod responder;
mod routers;
mod runbooks;
mod sandbox;
mod security;
pub mod serve;
mod serve_runs;
mod servers;
pub mod shared_store;
mod stalled_store;
mod store;
pub mod store_daemon;
mod store_postgres;
mod store_sled;
mod support;
mod verdicts;
