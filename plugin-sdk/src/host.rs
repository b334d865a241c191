//! Where capability calls go. Inside a component they are the engine's imports; in a native
//! build (a plugin's own `cargo test`) they go to the fake host of [`crate::testing`], since
//! there is no engine to answer them.

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::bindings::medic::plugin::{clock, command, http, kv, log, tcp};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::fake::{clock, command, http, kv, log, tcp};
