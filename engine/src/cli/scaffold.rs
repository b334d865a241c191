//! `medic plugin new`: a ready-to-build plugin crate.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// Where a generated crate finds the SDK when no `--sdk` is given: a copy of it inside the
/// crate, so that it builds on any machine (the binary carries the SDK's source).
pub const VENDORED_SDK: &str = "vendor/medic-plugin-sdk";

/// The SDK's source as this binary was built with it (the crate's files, and the WIT
/// contract it binds to), so that `medic plugin new` needs no Medic repository.
const SDK_FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../plugin-sdk/README.md")),
    (
        "src/clock.rs",
        include_str!("../../../plugin-sdk/src/clock.rs"),
    ),
    (
        "src/command.rs",
        include_str!("../../../plugin-sdk/src/command.rs"),
    ),
    (
        "src/context.rs",
        include_str!("../../../plugin-sdk/src/context.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../plugin-sdk/src/error.rs"),
    ),
    (
        "src/host.rs",
        include_str!("../../../plugin-sdk/src/host.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../plugin-sdk/src/http.rs"),
    ),
    ("src/kv.rs", include_str!("../../../plugin-sdk/src/kv.rs")),
    ("src/lib.rs", include_str!("../../../plugin-sdk/src/lib.rs")),
    ("src/log.rs", include_str!("../../../plugin-sdk/src/log.rs")),
    (
        "src/manifest.rs",
        include_str!("../../../plugin-sdk/src/manifest.rs"),
    ),
    (
        "src/outcome.rs",
        include_str!("../../../plugin-sdk/src/outcome.rs"),
    ),
    ("src/tcp.rs", include_str!("../../../plugin-sdk/src/tcp.rs")),
    (
        "src/value.rs",
        include_str!("../../../plugin-sdk/src/value.rs"),
    ),
    (
        "src/testing/fake.rs",
        include_str!("../../../plugin-sdk/src/testing/fake.rs"),
    ),
    (
        "src/testing/mod.rs",
        include_str!("../../../plugin-sdk/src/testing/mod.rs"),
    ),
    (
        "src/testing/tests.rs",
        include_str!("../../../plugin-sdk/src/testing/tests.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
];
const SDK_CARGO_TOML: &str = include_str!("templates/sdk-Cargo.toml.tmpl");

/// Writes the SDK this binary carries into `dir` (a generated crate's `vendor/...`).
fn vendor_sdk(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let cargo = SDK_CARGO_TOML.replace("{{version}}", env!("CARGO_PKG_VERSION"));
    // The SDK binds to `wit/` beside its manifest (in the repository a link to the
    // workspace's), so the copy carries the contract as the published crate does.
    for (rel, text) in SDK_FILES
        .iter()
        .map(|(rel, text)| (*rel, (*text).to_owned()))
        .chain([("Cargo.toml", cargo)])
    {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Check,
    Action,
}

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const README: &str = include_str!("templates/README.md.tmpl");
const CHECK_RS: &str = include_str!("templates/check.rs.tmpl");
const ACTION_RS: &str = include_str!("templates/action.rs.tmpl");
const CHECK_RUNBOOK: &str = include_str!("templates/runbook-check.toml.tmpl");
const ACTION_RUNBOOK: &str = include_str!("templates/runbook-action.toml.tmpl");

/// A plugin name: lower case letters, digits and dashes, starting with a letter.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a plugin name: use lower case letters, digits and dashes, starting \
             with a letter (e.g. `disk-check`)"
        ))
    }
}

/// The SDK directory given with `--sdk`, checked.
pub fn sdk_dir(given: &Path) -> Result<PathBuf, String> {
    let dir = given.to_path_buf();
    let manifest = dir.join("Cargo.toml");
    match std::fs::read_to_string(&manifest) {
        Ok(text) if text.contains("name = \"medic-plugin-sdk\"") => dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display())),
        Ok(_) => Err(format!(
            "{} is not the medic-plugin-sdk crate",
            manifest.display()
        )),
        Err(_) => Err(format!(
            "the plugin SDK is not at {} (--sdk takes the `plugin-sdk` directory of a Medic \
             repository; without it, the crate gets the SDK this binary carries)",
            dir.display()
        )),
    }
}

/// Writes the crate into `dir`, which must not exist or be empty, depending on the SDK at
/// `sdk`, or on a copy of the SDK this binary carries (in the crate) when none is given.
/// Returns the files written.
pub fn generate(
    name: &str,
    kind: Kind,
    dir: &Path,
    sdk: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    valid_name(name)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if entries.next().is_some() {
            return Err(format!(
                "{} already exists and is not empty; nothing was written",
                dir.display()
            ));
        }
    }
    let crate_name = name.replace('-', "_");
    let sdk = sdk.map_or_else(|| VENDORED_SDK.to_owned(), |s| s.display().to_string());
    let (kind_word, lib, runbook) = match kind {
        Kind::Check => ("check", CHECK_RS, CHECK_RUNBOOK),
        Kind::Action => ("action", ACTION_RS, ACTION_RUNBOOK),
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{ident}}", &crate_name)
            .replace("{{kind}}", kind_word)
            // TOML basic strings treat backslashes as escapes (Windows paths).
            .replace("{{sdk}}", &sdk.replace('\\', "\\\\"))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("README.md", fill(README)),
        ("src/lib.rs", fill(lib)),
        ("runbook.toml", fill(runbook)),
        (".gitignore", "/target\n".to_owned()),
    ];
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    if sdk == VENDORED_SDK {
        written.extend(vendor_sdk(&dir.join(VENDORED_SDK))?);
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("disk-check").is_ok());
        assert!(valid_name("probe2").is_ok());
        for bad in ["", "Disk", "2probe", "disk_check", "disk-", "a b", "../x"] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_binary_carries_every_file_of_the_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.join("src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(&root).unwrap().to_owned();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        for f in &on_disk {
            assert!(
                SDK_FILES.iter().any(|(rel, _)| rel == f),
                "plugin-sdk/{f} is not in SDK_FILES: generated crates would miss it"
            );
        }
        let lib = SDK_FILES
            .iter()
            .find(|(r, _)| *r == "src/lib.rs")
            .unwrap()
            .1;
        assert_eq!(
            lib.matches("path: \"wit\"").count(),
            1,
            "the SDK binds to the wit/ beside it, which the copy carries"
        );
        // The copy's wit-bindgen is the workspace's.
        let workspace = include_str!("../../../Cargo.toml");
        let line = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("wit-bindgen = "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(line(SDK_CARGO_TOML), line(workspace));
    }

    #[test]
    fn refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let e = generate("x", Kind::Check, dir.path(), None).unwrap_err();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn fills_every_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [Kind::Check, Kind::Action] {
            let out = dir.path().join(format!("{kind:?}"));
            for f in generate("disk-check", kind, &out, None).unwrap() {
                let text = std::fs::read_to_string(&f).unwrap();
                for p in ["{{name}}", "{{crate}}", "{{ident}}", "{{kind}}", "{{sdk}}"] {
                    assert!(!text.contains(p), "{} keeps {p}", f.display());
                }
            }
            let runbook = std::fs::read_to_string(out.join("runbook.toml")).unwrap();
            assert!(runbook.contains("target/wasm32-wasip2/release/disk_check.wasm"));
        }
    }
}
