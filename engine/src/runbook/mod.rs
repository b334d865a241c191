//! Runbooks: the TOML format ([`model`]), validation into a [`Plan`] ([`plan`]), templates
//! ([`template`]) and diagnostics that point at the mistake ([`diag`]).
//!
//! The stages are separate so that `medic validate` and `medic plan` can stop after the second
//! one and touch nothing: parse (syntax, unknown keys) -> validate and resolve (plugins loaded
//! and digested, parameters checked against manifests, templates resolved) -> execute.

pub mod diag;
pub mod model;
pub mod plan;
pub mod rollout;
pub mod schema;
pub mod shape;
pub mod template;

pub use diag::{Diagnostic, Report};
pub use model::{OnFailure, RetryOn};
pub use plan::{
    Amount, ApprovalGate, Arg, Environment, Fleet, FleetOrder, FleetTargets, Gate, Plan,
    PlanOptions, PlanParam, PlanPlugin, PlanStep, Retry, Source, StepRollback, plan,
};
