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

/// The optional `validate` export (contract 0.1.1), looked up on each plugin apart: plugins
/// built for 0.1.0 do not have it.
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "medic-validator",
        exports: { default: async },
        with: { "medic:plugin/types": super::medic::plugin::types },
    });
}
