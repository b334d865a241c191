//! `medic plugin new`: a ready-to-build plugin crate.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// Where the SDK is in this source tree; generated crates depend on it by path.
const SDK_IN_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

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

/// The SDK directory to depend on: the one given, or this source tree's.
pub fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = given.map_or_else(|| PathBuf::from(SDK_IN_TREE), Path::to_path_buf);
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
            "the plugin SDK is not at {}; pass --sdk PATH (the `plugin-sdk` directory of the \
             Medic repository)",
            dir.display()
        )),
    }
}

/// Writes the crate into `dir`, which must not exist or be empty. Returns the files written.
pub fn generate(name: &str, kind: Kind, dir: &Path, sdk: &Path) -> Result<Vec<PathBuf>, String> {
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
    let sdk = sdk.display().to_string();
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
    fn refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let sdk = sdk_dir(None).unwrap();
        let e = generate("x", Kind::Check, dir.path(), &sdk).unwrap_err();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn fills_every_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = sdk_dir(None).unwrap();
        for kind in [Kind::Check, Kind::Action] {
            let out = dir.path().join(format!("{kind:?}"));
            for f in generate("disk-check", kind, &out, &sdk).unwrap() {
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
