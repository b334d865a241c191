//! The local store, cache and approvals are trusted only when they are this user's alone;
//! what a plugin or a runbook prints cannot take over the terminal.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::cli::{MEDIC, medic_command, scripted_runbook, stderr, stdout};

/// Every file and directory under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((
                e.path().display().to_string(),
                meta.mode() & 0o777,
                meta.is_dir(),
            ));
        }
    }
    out
}

#[test]
fn everything_medic_writes_is_private_whatever_the_umask() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = scripted_runbook(
        dir.path(),
        "",
        "[[steps]]\nid = \"go\"\nuses = \"act\"\napproval = { timeout = \"2s\" }\n",
    );
    // A permissive umask, as some shells and CI runners have.
    let o = Command::new("sh")
        .args([
            "-c",
            &format!("umask 000; exec {MEDIC} run {}", rb.display()),
        ])
        .env("MEDIC_CACHE_DIR", cache.path().join("cache"))
        .env("MEDIC_DATA_DIR", cache.path().join("data"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let all = modes(cache.path());
    assert!(all.iter().any(|(p, ..)| p.ends_with("/key")), "{all:?}");
    assert!(all.iter().any(|(p, ..)| p.contains("approvals")), "{all:?}");
    for (path, mode, is_dir) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}, not {want:o}");
    }
}

#[test]
fn a_data_or_cache_directory_others_can_write_is_refused_by_name() {
    let top = tempfile::tempdir().unwrap();
    let open = top.path().join("shared");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = medic_command(top.path())
        .env("MEDIC_DATA_DIR", &open)
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the data directory {} is writable by every user",
            open.display()
        )),
        "{}",
        stderr(&o)
    );
    // A cache others can write is not used (the run still works, compiling in memory).
    let o = medic_command(top.path())
        .env("MEDIC_CACHE_DIR", &open)
        .args(["validate", "runbooks/demo.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not using the compiled-plugin cache")
            && stderr(&o).contains("writable by every user"),
        "{}",
        stderr(&o)
    );
    assert!(
        std::fs::read_dir(&open).unwrap().next().is_none(),
        "nothing was written into it"
    );
}
