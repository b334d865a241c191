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
