//! Medic runs operational runbooks made of sandboxed WebAssembly plugins.
//!
//! The crate is organised one module per concern: [`runbook`] (model, parsing, validation
//! into a plan), [`host`] (wasmtime, sandbox, capabilities), [`executor`] (runs a plan),
//! [`store`] (records, tokens, audit), [`serve`] and its HTTP [`api`], [`cli`] (the `medic`
//! command) and [`demo`] (the demo service).

pub mod ahead;
pub mod api;
pub mod cli;
pub mod cpus;
pub mod demo;
pub mod drill;
pub mod executor;
pub mod host;
pub mod input;
pub mod later;
pub mod pickup;
pub mod private;
pub mod runbook;
pub mod serve;
pub mod store;
pub mod trigger;
