//! The optional `validate` export (contract 0.1.1): a plugin refuses bad parameters before
//! anything runs, so `medic validate` catches what the step would only find mid-run.

use std::time::Duration;

use super::outcome::truncate;
use super::sandbox::{self, Sandbox};
use super::value::values_to_wit;
use super::{MANIFEST_TIMEOUT, Plugin, PluginHost, Value};

/// At most this many problems are kept from one check, each at most this long: a plugin's
/// answer is untrusted input.
const MAX_PROBLEMS: usize = 32;
const MAX_PROBLEM_BYTES: usize = 512;

/// A parameter a plugin refused: its name (empty for the combination) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    pub name: String,
    pub message: String,
}

impl PluginHost {
    /// Asks a plugin that exports `validate` whether it accepts `params`. Plugins without it
    /// accept everything. The call runs in a sandbox with no capability granted; a plugin that
    /// traps, hangs or runs out of memory there is an error, as a broken manifest would be.
    pub async fn check_params(
        &self,
        plugin: &Plugin,
        params: &[(String, Value)],
    ) -> Result<Vec<ParamProblem>, String> {
        if !plugin.validates() {
            return Ok(Vec::new());
        }
        let sandbox = Sandbox {
            timeout: MANIFEST_TIMEOUT,
            ..Sandbox::default()
        };
        let output = sandbox::OutputTail::default();
        let mut store = self.new_store(&plugin.manifest.name, &sandbox, "validate", &output);
        let wit = values_to_wit(params);
        let call = async {
            let instance = plugin
                .pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await?;
            let check = plugin.exports.check(&mut store, &instance)?;
            let (problems,) = check.call_async(&mut store, (&wit,)).await?;
            wasmtime::Result::Ok(problems)
        };
        let raw = tokio::time::timeout(MANIFEST_TIMEOUT + Duration::from_millis(100), call)
            .await
            .map_err(|_| {
                format!(
                    "no answer to the parameter check within {}",
                    humantime::format_duration(MANIFEST_TIMEOUT)
                )
            })?;
        let problems =
            raw.map_err(|e| sandbox::describe_error(&e, MANIFEST_TIMEOUT, &output.contents()))?;
        Ok(problems
            .into_iter()
            .take(MAX_PROBLEMS)
            .map(|p| {
                let (mut name, mut message) = (p.name, p.message);
                truncate(&mut name, 128);
                truncate(&mut message, MAX_PROBLEM_BYTES);
                ParamProblem { name, message }
            })
            .collect())
    }
}
