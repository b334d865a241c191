//! A run picked up again after one of its plugins changed (a plugin file rebuilt, a medic
//! upgrade's builtin): its undo would be made by other code than the one that acted. Refused
//! unless the responder accepts it, which the journal records; never done unattended.

use crate::cli::{medic, medic_command, stderr, stdout};
use crate::serve::Serve;
use std::path::Path;

/// The step the killed run is killed in: a 20 s action.
const SLOW: &str =
    "[[steps]]\nid = \"slow\"\nuses = \"slow\"\nwith = { mode = \"sleep\", sleep = \"20s\" }\n";

/// A step that fails the run after `change` acted.
pub(crate) const FAILING: &str =
    "[[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n";

/// `changing.toml` in `dir`: its action `act`, a copy of the scripted action beside it
/// (`act.wasm`, to be changed), acts and is undone by its revert; then the step `then`.
/// Interrupted runs are rolled back by `medic serve`, as the runbook declares.
pub(crate) fn runbook(dir: &Path, then: &str) -> std::path::PathBuf {
    std::fs::copy(medic::host::fixtures::SCRIPTED_ACTION, dir.join("act.wasm")).unwrap();
    let rb = dir.join("changing.toml");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nname = \"changing\"\non_interrupted = \"rollback\"\n\n\
             [plugins.act]\nsource = \"act.wasm\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.slow]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n{then}\n\
             [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
            medic::host::fixtures::SCRIPTED_CHECK,
            medic::host::fixtures::HOSTILE,
        ),
    )
    .unwrap();
    rb
}

/// The plugin rebuilt: the same component with a custom section more (valid, another digest).
pub(crate) fn rebuild(plugin: &Path) {
    let mut bytes = std::fs::read(plugin).unwrap();
    // Section 0 (custom), 7 bytes: a name of 6 bytes ("medic!"), no payload.
    bytes.extend_from_slice(b"\x00\x07\x06medic!");
    std::fs::write(plugin, bytes).unwrap();
}

fn journal(cache: &Path, id: &str) -> Vec<serde_json::Value> {
    let o = medic(cache, &["runs", "export", id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let export: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    export["journal"].as_array().unwrap().clone()
}

#[test]
fn a_run_whose_plugin_changed_is_not_undone_unattended_and_only_when_a_responder_accepts_it() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path();
    let rb = runbook(work.path(), SLOW);
    // SIGKILL inside the slow action, after `act` acted.
    let mut run = medic_command(cache);
    run.args(["run", rb.to_str().unwrap(), "--output", "json"]);
    crate::support::killed_inside(run, "slow");
    rebuild(&work.path().join("act.wasm"));

    // Unattended: medic serve finds the run interrupted, and its runbook asks for a
    // rollback, but not with another `act` than the one that acted.
    let data = cache.join("data");
    let drills = work.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let mut serve = Serve::start(&data, &drills, &[]);
    let said = serve.wait_for("cannot roll it back");
    assert!(
        said.contains("the plugin `act` (") && said.contains("changed since run"),
        "{said}"
    );
    assert_eq!(serve.stop(), Some(0));
    let o = medic(cache, &["runs", "list", "--output", "json"]);
    let runs = crate::support::json_lines(&stdout(&o));
    assert_eq!(runs.len(), 1, "{}", stdout(&o));
    assert_eq!(runs[0]["status"], "interrupted");
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let journaled = journal(cache, &id);
    assert!(
        !journaled.iter().any(|e| e["type"] == "run_resumed"),
        "nothing was picked up: {journaled:?}"
    );

    // A responder is refused too, told why and what to do.
    let o = medic(cache, &["runs", "rollback", &id]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the plugin `act` (")
            && err.contains("refusing to rollback it with other code")
            && err.contains("--accept-changed-plugins"),
        "{err}"
    );
    assert_eq!(
        journal(cache, &id).len(),
        journaled.len(),
        "nothing recorded"
    );

    // Accepted: undone with the plugin there now, and the journal says so.
    let o = medic(
        cache,
        &["runs", "rollback", &id, "--accept-changed-plugins"],
    );
    assert_eq!(o.status.code(), Some(4), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("✓ change.rollback"), "{}", stdout(&o));
    let resumed: Vec<serde_json::Value> = journal(cache, &id)
        .into_iter()
        .filter(|e| e["type"] == "run_resumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let changed = resumed[0]["changed_plugins"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{resumed:?}");
    assert_eq!(changed[0]["alias"], "act");
    let now = std::fs::read(work.path().join("act.wasm")).unwrap();
    let now = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&now));
    assert_eq!(changed[0]["sha256"], now.as_str());
    let o = medic(cache, &["runs", "show", &id]);
    assert!(
        stdout(&o).contains("accepting plugins changed since the run started: act (now sha256"),
        "{}",
        stdout(&o)
    );
}
