//! A data directory however a responder names it: relative to where the command runs, or
//! deeper than a Unix socket's address can hold. Every command, the store daemon and
//! `medic serve` must still meet on the same store.

use std::time::Duration;

use crate::cli::{medic, medic_command, stderr, stdout};
use crate::store_daemon::daemon_pid;
use crate::support::json_lines;

#[test]
fn a_relative_data_directory_names_the_same_store_for_the_daemon_and_its_clients() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("data");
    let rb = crate::shared_store::quick_runbook(cache.path());
    // As a responder types it, from the directory the store is in: the daemon, which runs
    // in the data directory, must not read `data` from there.
    let relative = |args: &[&str], how: &str| {
        let mut cmd = medic_command(cache.path());
        cmd.current_dir(cache.path());
        match how {
            "flag" => cmd
                .env_remove("MEDIC_DATA_DIR")
                .args(["--data-dir", "data"]),
            _ => cmd.env("MEDIC_DATA_DIR", "data"),
        };
        cmd.args(args).output().unwrap()
    };
    let o = relative(&["run", rb.to_str().unwrap()], "flag");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(data.join("store.sock").exists(), "the daemon's socket");
    assert!(
        !data.join("data").exists(),
        "the daemon opened a store of its own"
    );
    let o = relative(&["run", rb.to_str().unwrap()], "env");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = relative(&["runs", "list", "--output", "json"], "flag");
    assert_eq!(json_lines(&stdout(&o)).len(), 2, "{}", stderr(&o));
    // The same store from anywhere, through the same daemon.
    let daemon = daemon_pid(&data);
    let o = medic(cache.path(), &["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 2, "{}", stderr(&o));
    assert_eq!(daemon_pid(&data), daemon);
}

#[test]
fn a_data_directory_too_long_for_a_sockets_address_is_served_all_the_same() {
    let cache = tempfile::tempdir().unwrap();
    // As under a deep home or CI workspace: the sockets' paths pass the 107 bytes their
    // address holds.
    let data = cache
        .path()
        .join("d".repeat(60))
        .join("e".repeat(60))
        .join("data");
    assert!(data.join("store.sock").as_os_str().len() > 107);
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let rb = crate::shared_store::quick_runbook(cache.path());
    let with_data = |args: &[&str]| {
        medic_command(cache.path())
            .env("MEDIC_DATA_DIR", &data)
            .args(args)
            .output()
            .unwrap()
    };
    // Through the store daemon.
    let o = with_data(&["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(data.join("store.sock").exists(), "the daemon's socket");
    let o = with_data(&["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 1, "{}", stderr(&o));
    // Through `medic serve`, whose socket a command finds, and runs through.
    let drills = cache.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    let serve = crate::serve::Serve::start(&data, &drills, &[]);
    let remote = medic::store::remote::Remote::connect(&data).expect("serve's socket");
    let status: serde_json::Value = remote
        .call(&serde_json::json!({"op": "status"}), Duration::from_secs(5))
        .unwrap();
    assert_eq!(status["serving"], "medic serve", "{status}");
    let o = with_data(&["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(serve.stop(), Some(0));
    let o = with_data(&["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 2, "{}", stderr(&o));
}

/// `MEDIC_SERVER= medic run ...` is how a responder runs locally while the server in their
/// profile is down; a template can leave any variable empty. An empty `MEDIC_*` counts as
/// unset, as an empty `XDG_*` does; an empty value typed after a flag is still refused.
#[test]
fn empty_medic_variables_count_as_unset() {
    let home = tempfile::tempdir().unwrap();
    let rb = crate::shared_store::quick_runbook(home.path());
    let empty = |args: &[&str]| {
        let mut cmd = medic_command(home.path());
        for var in [
            "MEDIC_DATA_DIR",
            "MEDIC_CACHE_DIR",
            "MEDIC_SERVER",
            "MEDIC_TOKEN",
            "MEDIC_STORE",
            "MEDIC_RETENTION",
            "MEDIC_PG_CONNECTIONS",
        ] {
            cmd.env(var, "");
        }
        cmd.env("XDG_DATA_HOME", home.path().join("xdg-data"))
            .env("XDG_CACHE_HOME", home.path().join("xdg-cache"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = empty(&["run", rb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let data = home.path().join("xdg-data").join("medic");
    assert!(
        data.join("store.sock").exists(),
        "recorded in the platform data directory"
    );
    assert!(
        home.path().join("xdg-cache").join("medic").exists(),
        "the platform cache"
    );
    let o = empty(&["runs", "list", "--output", "json"]);
    assert_eq!(json_lines(&stdout(&o)).len(), 1, "{}", stderr(&o));
    let o = empty(&["runs", "list", "--data-dir", ""]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--data-dir"), "{}", stderr(&o));
}
