//! Write Medic plugins in Rust.
//!
//! A Medic plugin is a WebAssembly component (`wasm32-wasip2`) that the engine runs in a
//! sandbox. It is either a **check** (observes and reports health: a probe, a metric gate) or
//! an **action** (changes something: shifts traffic, restarts, deploys) that may know how to
//! **revert** itself. It sees nothing of the machine it runs on; everything it does goes
//! through capabilities the runbook grants: [`http`], [`tcp`], [`command`], [`kv`], [`log`] and
//! [`clock`].
//!
//! Implement [`Plugin`] and call [`export!`]:
//!
//! ```no_run
//! use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, http};
//!
//! struct Ping;
//!
//! impl Plugin for Ping {
//!     fn manifest() -> Manifest {
//!         Manifest::check("ping", "0.1.0")
//!             .describe("Checks that a URL answers 200")
//!             .param(Param::text("url").required().describe("The URL to fetch"))
//!             .capability("http")
//!     }
//!
//!     fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
//!         let url = params.text("url")?;
//!         let response = http::get(url).send()?;
//!         if response.status == 200 {
//!             Ok(Outcome::success(format!("{url} answered 200")))
//!         } else {
//!             Ok(Outcome::failure(format!("{url} answered {}", response.status)))
//!         }
//!     }
//! }
//!
//! medic_plugin_sdk::export!(Ping);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and point a runbook at the
//! `.wasm` file in `target/wasm32-wasip2/release/`.
#![deny(missing_docs)]

mod context;
mod error;
mod host;
mod manifest;
mod outcome;
mod value;

pub mod clock;
pub mod command;
pub mod http;
pub mod kv;
pub mod log;
pub mod tcp;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::Context;
pub use error::Error;
pub use manifest::{Kind, Manifest, Param};
pub use outcome::{Outcome, Status};
pub use value::{Params, Value, ValueType};

/// The raw bindings generated from the WIT contract. Not part of the API: use the types
/// re-exported at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // A link to the repository's `wit/`, so the published crate carries the contract.
        path: "wit",
        world: "medic-plugin-validated",
        pub_export_macro: true,
        export_macro_name: "__export_medic_plugin",
        default_bindings_module: "medic_plugin_sdk::bindings",
    });
}

/// A Medic plugin: a check or an action.
///
/// The engine calls [`Plugin::manifest`] once when it loads the plugin, to learn its
/// parameters and the capabilities it needs, and checks every runbook step against it before
/// anything runs. Each [`Plugin::run`] then happens in a fresh sandbox: no state survives
/// between calls except what the plugin stores through [`kv`].
pub trait Plugin {
    /// Describes the plugin: its name, kind, parameters and capabilities.
    fn manifest() -> Manifest;

    /// Runs the check or action. The parameters have already been checked against the
    /// manifest, so reading a declared parameter with its declared type only fails for an
    /// optional parameter that was not set.
    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error>;

    /// Undoes a successful [`Plugin::run`], given its parameters and the outputs it returned.
    /// Only called when the manifest says [`Manifest::revertible`].
    fn revert(ctx: &Context, params: &Params, outputs: &Params) -> Result<Outcome, Error> {
        let _ = (ctx, params, outputs);
        Err(Error::permanent("this plugin cannot revert"))
    }

    /// Refuses bad parameters before anything runs. `medic validate` and `medic plan` call
    /// it for every step that uses the plugin, with the parameters whose values are known
    /// then: a parameter written as a template over an earlier step's outputs is absent, so
    /// check only what is present. No capability is available here (no HTTP, no kv), and it
    /// must be quick. The default accepts everything; `run` must still check what it relies
    /// on, since values rendered during the run are not seen here.
    ///
    /// ```no_run
    /// # use medic_plugin_sdk::{ParamProblem, Params};
    /// fn check_params(params: &Params) -> Vec<ParamProblem> {
    ///     match params.integer("weight") {
    ///         Ok(w) if !(0..=256).contains(&w) => {
    ///             vec![ParamProblem::new("weight", "must be from 0 to 256")]
    ///         }
    ///         _ => Vec::new(),
    ///     }
    /// }
    /// ```
    fn check_params(params: &Params) -> Vec<ParamProblem> {
        let _ = params;
        Vec::new()
    }
}

/// A parameter [`Plugin::check_params`] refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// The parameter's name; empty when the combination of parameters is the problem.
    pub name: String,
    /// Why, in a few words: "must be from 0 to 256".
    pub message: String,
}

impl ParamProblem {
    /// A problem with the parameter `name`.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        ParamProblem {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// Exports a type implementing [`Plugin`] as the component's plugin.
///
/// Use it once per plugin crate, at the crate root:
///
/// ```ignore
/// medic_plugin_sdk::export!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __MedicPluginExport;

        impl $crate::bindings::exports::medic::plugin::plugin::Guest for __MedicPluginExport {
            fn get_manifest() -> $crate::bindings::medic::plugin::types::Manifest {
                $crate::__private::manifest::<$plugin>()
            }

            fn run(
                ctx: $crate::bindings::medic::plugin::types::Context,
                params: $crate::bindings::medic::plugin::types::Values,
            ) -> ::core::result::Result<
                $crate::bindings::medic::plugin::types::Outcome,
                $crate::bindings::medic::plugin::types::PluginError,
            > {
                $crate::__private::run::<$plugin>(ctx, params)
            }

            fn revert(
                ctx: $crate::bindings::medic::plugin::types::Context,
                params: $crate::bindings::medic::plugin::types::Values,
                outputs: $crate::bindings::medic::plugin::types::Values,
            ) -> ::core::result::Result<
                $crate::bindings::medic::plugin::types::Outcome,
                $crate::bindings::medic::plugin::types::PluginError,
            > {
                $crate::__private::revert::<$plugin>(ctx, params, outputs)
            }
        }

        impl $crate::bindings::exports::medic::plugin::validate::Guest for __MedicPluginExport {
            fn check_params(
                params: $crate::bindings::medic::plugin::types::Values,
            ) -> $crate::__private::WitProblems {
                $crate::__private::check_params::<$plugin>(params)
            }
        }

        $crate::bindings::__export_medic_plugin!(__MedicPluginExport);
    };
}

/// Glue used by [`export!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings::medic::plugin::types as wit;
    use crate::{Context, Params, Plugin};

    pub fn manifest<P: Plugin>() -> wit::Manifest {
        P::manifest().into_wit()
    }

    pub fn run<P: Plugin>(
        ctx: wit::Context,
        params: wit::Values,
    ) -> Result<wit::Outcome, wit::PluginError> {
        let ctx = Context::from_wit(ctx);
        let params = Params::from_wit(params);
        P::run(&ctx, &params)
            .map(|o| o.into_wit())
            .map_err(|e| e.into_wit())
    }

    /// What `validate.check-params` returns.
    pub type WitProblems = Vec<crate::bindings::exports::medic::plugin::validate::ParamProblem>;

    pub fn check_params<P: Plugin>(params: wit::Values) -> WitProblems {
        let params = Params::from_wit(params);
        P::check_params(&params)
            .into_iter()
            .map(
                |p| crate::bindings::exports::medic::plugin::validate::ParamProblem {
                    name: p.name,
                    message: p.message,
                },
            )
            .collect()
    }

    pub fn revert<P: Plugin>(
        ctx: wit::Context,
        params: wit::Values,
        outputs: wit::Values,
    ) -> Result<wit::Outcome, wit::PluginError> {
        let ctx = Context::from_wit(ctx);
        let params = Params::from_wit(params);
        let outputs = Params::from_wit(outputs);
        P::revert(&ctx, &params, &outputs)
            .map(|o| o.into_wit())
            .map_err(|e| e.into_wit())
    }
}
