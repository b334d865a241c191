//! Host bindings generated from `wit/plugin.wit`. Every import is async (capabilities do I/O
//! and must be cut at the deadline) and trappable (a deadline or a denied capability ends the
//! call from inside a host function).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "medic-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::medic::plugin::types;

/// The types of the optional `validate` export (contract 0.1.1; plugins built for 0.1.0 do
/// not have it), which [`Exports`] looks up on each plugin apart.
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "medic-validator",
        exports: { default: async },
        with: { "medic:plugin/types": super::medic::plugin::types },
    });
}

use wasmtime::component::{ComponentExportIndex, Instance, TypedFunc};
use wasmtime::{AsContextMut, Store};

use self::medic::plugin::types::{Context, Outcome, PluginError, Value};

type Params<'a> = &'a [(String, Value)];
type Answer = (Result<Outcome, PluginError>,);
pub type RunFunc<'a> = TypedFunc<(&'a Context, Params<'a>), Answer>;
pub type RevertFunc<'a> = TypedFunc<(&'a Context, Params<'a>, Params<'a>), Answer>;
type Problems = (Vec<validator::exports::medic::plugin::validate::ParamProblem>,);
pub type CheckFunc<'a> = TypedFunc<(Params<'a>,), Problems>;

/// A plugin's `run` and `revert` exports (and `check-params`, where it has one), found and
/// their types checked once, when the plugin is loaded. A call takes them from its fresh
/// instance as they are: the generated bindings would check the types of all of them at
/// every instantiation (6% of a trivial call).
#[derive(Clone, Copy)]
pub struct Exports {
    run: ComponentExportIndex,
    revert: ComponentExportIndex,
    check: Option<ComponentExportIndex>,
}

impl Exports {
    /// Finds `run`, `revert` and `check-params` (optional: contract 0.1.1) in an instance of
    /// the plugin and checks their types.
    pub fn checked<T: Send>(store: &mut Store<T>, instance: &Instance) -> wasmtime::Result<Self> {
        // Semver-aware lookups: a plugin built for a later 0.1.x matches.
        let find = |store: &mut Store<T>, interface: &str, name: &str| {
            let interface = format!(
                "{}/{interface}@{}",
                super::CONTRACT_PACKAGE,
                super::CONTRACT_VERSION
            );
            let interface = instance.get_export_index(&mut *store, None, &interface)?;
            instance.get_export_index(&mut *store, Some(&interface), name)
        };
        let required = |found: Option<ComponentExportIndex>, name: &str| {
            found.ok_or_else(|| wasmtime::format_err!("the plugin does not export `{name}`"))
        };
        let exports = Exports {
            run: required(find(store, "plugin", "run"), "run")?,
            revert: required(find(store, "plugin", "revert"), "revert")?,
            check: find(store, "validate", "check-params"),
        };
        instance.get_typed_func::<(&Context, Params), Answer>(&mut *store, exports.run)?;
        instance
            .get_typed_func::<(&Context, Params, Params), Answer>(&mut *store, exports.revert)?;
        if let Some(check) = exports.check {
            instance.get_typed_func::<(Params,), Problems>(&mut *store, check)?;
        }
        Ok(exports)
    }

    /// Whether the plugin exports `check-params`.
    pub fn validates(&self) -> bool {
        self.check.is_some()
    }

    /// `run` in a fresh instance of the plugin these exports were found in.
    pub fn run<'a>(
        &self,
        store: impl AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<RunFunc<'a>> {
        let func = instance.get_func(store, self.run).ok_or_else(not_found)?;
        // SAFETY: the export's type was checked against `RunFunc`'s when the plugin was
        // loaded (`checked`), in an instance of the same component: a component's exports
        // and their types never change, and `get_func` finds nothing in an instance of
        // another component (an export index carries its component's identity).
        Ok(unsafe { RunFunc::new_unchecked(func) })
    }

    /// `revert`, as [`Exports::run`].
    pub fn revert<'a>(
        &self,
        store: impl AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<RevertFunc<'a>> {
        let func = instance
            .get_func(store, self.revert)
            .ok_or_else(not_found)?;
        // SAFETY: as in `run`.
        Ok(unsafe { RevertFunc::new_unchecked(func) })
    }

    /// `check-params`, as [`Exports::run`]; an error for a plugin without it (see
    /// [`Exports::validates`]).
    pub fn check<'a>(
        &self,
        store: impl AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<CheckFunc<'a>> {
        let index = self
            .check
            .ok_or_else(|| wasmtime::format_err!("the plugin does not export `check-params`"))?;
        let func = instance.get_func(store, index).ok_or_else(not_found)?;
        // SAFETY: as in `run`.
        Ok(unsafe { CheckFunc::new_unchecked(func) })
    }
}

fn not_found() -> wasmtime::Error {
    wasmtime::format_err!("an instance of another plugin than the one its exports were found in")
}
