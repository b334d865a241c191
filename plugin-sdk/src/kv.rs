//! Key-value state that lives as long as the run.
//!
//! Each plugin declaration in a runbook has its own space: an action can store what it
//! changed, and its revert (or a later step using the same declaration) can read it back.
//! Requires the `kv` capability grant.

use crate::host::kv as wit;
use crate::{Context, Error};

/// Reads a value.
pub fn get(key: &str) -> Option<Vec<u8>> {
    wit::get(key)
}

/// Reads a value as UTF-8 text; `None` when absent or not text.
pub fn get_text(key: &str) -> Option<String> {
    get(key).and_then(|v| String::from_utf8(v).ok())
}

/// Stores a value. Fails when the key or value is too large or the run's store is full.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    wit::set(key, value.as_ref()).map_err(Error::permanent)
}

/// Removes a value.
pub fn delete(key: &str) {
    wit::delete(key)
}

/// The key under which [`save_original`] keeps `key` for the change a call makes: one per
/// step (and per fleet target), so two steps using the same plugin declaration never
/// overwrite each other's way back. A revert's call (`deploy.rollback`,
/// `deploy.rollback[web-1]`) names the same change as the step it undoes.
fn change_key(ctx: &Context, key: &str) -> String {
    let id = &ctx.step_id;
    let change = match id.find(".rollback") {
        Some(i) if id[i + ".rollback".len()..].is_empty() => id[..i].to_owned(),
        Some(i) if id[i + ".rollback".len()..].starts_with('[') => {
            format!("{}{}", &id[..i], &id[i + ".rollback".len()..])
        }
        _ => id.clone(),
    };
    format!("{key}@{change}")
}

/// Saves the state a change is about to replace, for its revert, and returns the state to
/// restore.
///
/// Call it just before acting, with what is in place now. The engine makes the value durable
/// before this returns, so a revert still finds it after the process running the step is
/// killed mid-change.
///
/// On the first attempt the value is saved and returned. On a later attempt (a retry, or a
/// run resumed after a crash: `ctx.attempt > 1`) an earlier attempt may have made part of
/// the change already, so what is in place now may be half-changed: the value that attempt
/// saved is kept and returned instead. Report the returned value as the step's output.
///
/// ```no_run
/// # use medic_plugin_sdk::{Context, Error, kv};
/// # fn current_version() -> String { String::new() }
/// # fn run(ctx: &Context) -> Result<(), Error> {
/// let now = current_version();
/// let previous = String::from_utf8_lossy(&kv::save_original(ctx, "previous_version", &now)?)
///     .into_owned();
/// // ... deploy, then output `previous` for the revert.
/// # Ok(()) }
/// ```
pub fn save_original(
    ctx: &Context,
    key: &str,
    current: impl AsRef<[u8]>,
) -> Result<Vec<u8>, Error> {
    let scoped = change_key(ctx, key);
    if ctx.attempt > 1
        && let Some(saved) = get(&scoped)
    {
        return Ok(saved);
    }
    set(&scoped, current.as_ref())?;
    Ok(current.as_ref().to_vec())
}

/// What [`save_original`] saved for the change this call undoes (call it from `revert`).
pub fn original(ctx: &Context, key: &str) -> Option<Vec<u8>> {
    get(&change_key(ctx, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(step_id: &str) -> Context {
        Context {
            run_id: "r".into(),
            step_id: step_id.to_owned(),
            attempt: 1,
            environment: "test".into(),
            dry_run: false,
            timeout: std::time::Duration::from_secs(1),
            deadline_unix_ms: 0,
        }
    }

    #[test]
    fn a_revert_names_the_change_it_undoes() {
        assert_eq!(change_key(&ctx("deploy"), "v"), "v@deploy");
        assert_eq!(change_key(&ctx("deploy.rollback"), "v"), "v@deploy");
        assert_eq!(change_key(&ctx("deploy[web-1]"), "v"), "v@deploy[web-1]");
        assert_eq!(
            change_key(&ctx("deploy.rollback[web-1]"), "v"),
            "v@deploy[web-1]"
        );
        assert_eq!(change_key(&ctx("a.rollbacks"), "v"), "v@a.rollbacks");
    }
}
