//! The plugin author's path, as a stranger would take it: `medic plugin new`, `cargo test`
//! (native, against the SDK's fake host), `cargo build --target wasm32-wasip2`, then
//! `medic run` of the generated runbook against the demo service.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{medic, service, stderr, stdout};

/// A target directory shared by the generated crates across test runs (and CI's cache), so
/// their dependencies build once.
fn shared_target() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_medic"))
        .parent()
        .and_then(Path::parent)
        .expect("the medic binary lives in <target>/<profile>/")
        .join("scaffolded-plugins")
}

/// cargo in `dir`, without the outer test build's settings.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", shared_target());
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}{}",
        dir.display(),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Generates, tests and builds a plugin; returns its directory, with the component where
/// its runbook expects it.
fn scaffold(work: &Path, cache: &Path, name: &str, kind: &str) -> PathBuf {
    let dir = work.join(name);
    let o = medic(
        cache,
        &[
            "plugin",
            "new",
            name,
            "--kind",
            kind,
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("cargo build --release --target wasm32-wasip2"));
    // The crate carries the SDK: nothing in it points at this repository, so it builds on a
    // machine that only has the `medic` binary.
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("medic-plugin-sdk = { path = \"vendor/medic-plugin-sdk\" }"),
        "{manifest}"
    );
    let repo = crate::cli::repo().canonicalize().unwrap();
    for f in crate::support::files_under(&dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(repo.to_str().unwrap()),
            "{} names the repository",
            f.display()
        );
    }
    assert!(dir.join("vendor/medic-plugin-sdk/wit/plugin.wit").is_file());

    let tests = cargo(&dir, &["test"]);
    let report = stdout(&tests);
    assert!(report.contains("test result: ok."), "{report}");
    assert!(
        !report.contains(" 0 passed"),
        "the generated tests must run: {report}"
    );

    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let file = format!("{}.wasm", name.replace('-', "_"));
    let built = shared_target().join("wasm32-wasip2/release").join(&file);
    // With the default target directory cargo puts it here; the test shares one instead.
    let expected = dir.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&expected).unwrap();
    std::fs::copy(&built, expected.join(&file)).unwrap();
    dir
}

#[test]
fn a_generated_check_and_action_build_test_and_run() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&["v9"]);
    let host = format!("host={}", svc.addr);

    let check = scaffold(work.path(), cache.path(), "disk-check", "check");
    let o = medic(
        cache.path(),
        &[
            "run",
            check.join("runbook.toml").to_str().unwrap(),
            "--param",
            &host,
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("answered 200"), "{out}");

    let inspect = medic(
        cache.path(),
        &[
            "plugin",
            "inspect",
            check
                .join("target/wasm32-wasip2/release/disk_check.wasm")
                .to_str()
                .unwrap(),
        ],
    );
    let shown = stdout(&inspect);
    assert!(shown.starts_with("disk-check 0.1.0 (Check)"), "{shown}");
    assert!(shown.contains("capabilities: http"), "{shown}");

    // Pinned with the line `plugin pin` prints, the runbook runs; a changed file is refused.
    let wasm = check.join("target/wasm32-wasip2/release/disk_check.wasm");
    let pin = medic(cache.path(), &["plugin", "pin", wasm.to_str().unwrap()]);
    assert_eq!(pin.status.code(), Some(0), "{}", stderr(&pin));
    let line = stdout(&pin).trim().to_owned();
    assert!(
        line.starts_with("sha256 = \"") && line.len() == 75,
        "{line}"
    );
    let rb = check.join("runbook.toml");
    let text = std::fs::read_to_string(&rb).unwrap();
    let source = "source = \"target/wasm32-wasip2/release/disk_check.wasm\"";
    assert!(text.contains(source), "{text}");
    std::fs::write(&rb, text.replace(source, &format!("{source}\n{line}"))).unwrap();
    let run = |cache: &Path| medic(cache, &["run", rb.to_str().unwrap(), "--param", &host]);
    let o = run(cache.path());
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&wasm, bytes).unwrap();
    let o = run(cache.path());
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("does not match its pinned sha256"),
        "{}",
        stderr(&o)
    );
    let o = medic(cache.path(), &["plugin", "pin", "/nonexistent.wasm"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let action = scaffold(work.path(), cache.path(), "flip-version", "action");
    let runbook = action.join("runbook.toml");
    let o = medic(
        cache.path(),
        &[
            "run",
            runbook.to_str().unwrap(),
            "--param",
            &host,
            "--param",
            "value=v2",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("set v2 (was v1)"), "{out}");

    // A bad value: the health gate fails and the plugin's own revert restores v2.
    let o = medic(
        cache.path(),
        &[
            "run",
            runbook.to_str().unwrap(),
            "--param",
            &host,
            "--param",
            "value=v9",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{}", stderr(&o));
    assert!(out.contains("restored v2 (was v9)"), "{out}");
}

#[test]
fn plugin_new_refuses_bad_names_and_occupied_directories() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let o = medic(
        cache.path(),
        &["plugin", "new", "Disk_Check", "--kind", "check"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a plugin name"),
        "{}",
        stderr(&o)
    );

    std::fs::write(work.path().join("mine.txt"), "keep").unwrap();
    let o = medic(
        cache.path(),
        &[
            "plugin",
            "new",
            "x",
            "--kind",
            "action",
            "--dir",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
}

/// A plugin built by `scripts/setup --FLAG` into `<target>/DIR/FILE` (the Python one with
/// componentize-py, the JavaScript one with componentize-js).
fn foreign_plugin(dir: &str, file: &str, flag: &str) -> PathBuf {
    let path = shared_target().parent().unwrap().join(dir).join(file);
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/setup --{flag}` (scripts/test does)",
        path.display()
    );
    path
}

/// A check written in another language than Rust, built into a component against the same
/// contract: inspected, then run passing, failing, and refused a host it was not granted.
fn runs_like_any_other(wasm: &Path, name: &str) {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let svc = service(&[]);

    let o = medic(cache.path(), &["plugin", "inspect", wasm.to_str().unwrap()]);
    let shown = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{shown}{}", stderr(&o));
    assert!(
        shown.starts_with(&format!("{name} 0.1.0 (Check)")),
        "{shown}"
    );
    assert!(
        shown.contains("contract:     medic:plugin@0.1.1"),
        "{shown}"
    );

    let runbook = work.path().join("foreign.toml");
    std::fs::write(
        &runbook,
        format!(
            "[runbook]\nname = \"foreign-check\"\n\n\
             [params.expect]\ntype = \"string\"\ndefault = \"v1\"\n\n\
             [params.url]\ntype = \"string\"\ndefault = \"http://{addr}/version\"\n\n\
             [plugins.version]\nsource = {:?}\ngrants = {{ http = [\"{addr}\"] }}\n\n\
             [[steps]]\nid = \"version\"\nuses = \"version\"\n\
             with = {{ url = \"{{{{ params.url }}}}\", expect = \"{{{{ params.expect }}}}\" }}\n",
            wasm.display().to_string(),
            addr = svc.addr
        ),
    )
    .unwrap();
    let path = runbook.to_str().unwrap();

    let o = medic(cache.path(), &["run", path]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains(&format!("http://{}/version runs v1", svc.addr)),
        "{out}"
    );

    let o = medic(cache.path(), &["run", path, "--param", "expect=v7, v8"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("runs v1, expected v7 or v8"), "{out}");

    // The sandbox holds whatever the language: a host the runbook did not grant is refused.
    let o = medic(
        cache.path(),
        &["run", path, "--param", "url=http://127.0.0.1:9/version"],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("denied"), "{out}");
}

#[test]
fn a_plugin_written_in_python_runs_like_any_other() {
    runs_like_any_other(
        &foreign_plugin("python-plugins", "version_check.wasm", "python"),
        "version-check",
    );
}

#[test]
fn a_plugin_written_in_javascript_runs_like_any_other() {
    runs_like_any_other(
        &foreign_plugin("js-plugins", "version_check_js.wasm", "javascript"),
        "version-check-js",
    );
}
