//! API tokens: who may use `medic serve --listen`, with which role, in which environments.
//!
//! Kept in `DATA_DIR/tokens.json` (0600) beside the embedded store, or as a document of a
//! shared store (every host's `medic serve` knows every token). Only a token's sha256 is
//! kept; the token itself is shown once, when created. Tokens are 32 random bytes, so a plain
//! digest is enough (nothing to brute-force, nothing to salt). Changes to the file are
//! serialised by an exclusive lock on `tokens.lock` and written atomically.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::now_ms;
use crate::private::write_atomic;

const FILE: &str = "tokens.json";
const LOCK: &str = "tokens.lock";
/// The registry's document on a shared store.
const DOCUMENT: &str = "tokens";
/// What every token starts with, so a leaked one is recognisable (and greppable in logs).
pub const PREFIX: &str = "medic_";

/// What a token may do. Each role includes the ones before it, except that `approver` does
/// not include `responder`: deciding and acting are different jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads runs, logs, approvals, drills, stats.
    Viewer,
    /// Also starts, cancels, resumes and rolls back runs in its environments.
    Responder,
    /// Also decides approvals in its environments.
    Approver,
    /// Everything: tokens, drills, the audit log, every environment.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "responder" => Ok(Role::Responder),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "`{s}` is not a role: use viewer, responder, approver or admin"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// Environments it may act in. Empty: every environment that is not protected; a
    /// protected one must be named.
    pub envs: Vec<String>,
    /// Groups it is in, for approval policies that name a group (`approvers =
    /// ["oncall-leads"]`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// sha256 of the token, hex.
    pub hash: String,
    pub created_ms: u64,
    pub created_by: String,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
}

impl Token {
    /// Whether it may act in `env` (`protected`: the run needed an approval reason).
    pub fn allows_env(&self, env: &str, protected: bool) -> bool {
        if self.role == Role::Admin {
            return true;
        }
        if self.envs.is_empty() {
            !protected
        } else {
            self.envs.iter().any(|e| e == env)
        }
    }

    pub fn usable(&self, now: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<Token>,
}

/// The token registry of a data directory, or of a shared store (one document, changed by
/// compare-and-swap, so every host sees every change at once).
#[derive(Clone)]
pub struct Tokens {
    dir: PathBuf,
    shared: Option<std::sync::Arc<dyn super::backend::Documents>>,
    /// The tokens as last read, with the file's identity then: every API request verifies a
    /// token, and re-reading the file costs a parse each time. Any change (create, revoke,
    /// from any process) renames a new file in, so a different inode or mtime re-reads it.
    seen: std::sync::Arc<std::sync::Mutex<Option<Seen>>>,
}

/// One version of the tokens file, as read.
type Seen = (Stamp, Vec<Token>);

/// What identifies one version of the tokens file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 bytes from the kernel's random source, as a token.
fn fresh_token() -> Result<String, String> {
    Ok(format!("{PREFIX}{}", random_hex()?))
}

/// 32 bytes from the kernel's random source, in hex (tokens, web sessions).
pub fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read random bytes: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Token names appear in the audit log and in run records as `token:NAME`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

impl Tokens {
    /// The registry in the data directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Tokens {
            dir: dir.to_owned(),
            shared: None,
            seen: Default::default(),
        }
    }

    /// The registry where a store keeps it.
    pub fn at(place: &super::Place) -> Self {
        match place {
            super::Place::Files(dir) => Tokens::new(dir),
            super::Place::Shared(docs) => Tokens {
                shared: Some(docs.clone()),
                ..Tokens::new(Path::new(""))
            },
        }
    }

    /// `f` of the tokens, read again only when the file changed.
    fn with_current<R>(&self, f: impl FnOnce(&[Token]) -> R) -> Result<R, String> {
        use std::os::unix::fs::MetadataExt;
        if self.shared.is_some() {
            return Ok(f(&self.read()?.tokens));
        }
        let path = self.dir.join(FILE);
        let stamp = match std::fs::metadata(&path) {
            Ok(m) => Stamp {
                ino: m.ino(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                len: m.len(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(f(&[])),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut seen = self.seen.lock().unwrap();
        if seen.as_ref().is_none_or(|(s, _)| *s != stamp) {
            *seen = Some((stamp, self.read()?.tokens));
        }
        Ok(f(seen.as_ref().map_or(&[][..], |(_, tokens)| tokens)))
    }

    fn read(&self) -> Result<File, String> {
        if let Some(docs) = &self.shared {
            return match docs.document(DOCUMENT) {
                Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                    .map_err(|e| format!("the shared token registry is unreadable: {e}")),
                Ok(None) => Ok(File::default()),
                Err(e) => Err(format!("cannot read the tokens: {e}")),
            };
        }
        let path = self.dir.join(FILE);
        match crate::input::read_text(&path, 4 << 20) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{} is unreadable: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Runs `change` on the registry under the lock, and writes the result.
    fn change<T>(
        &self,
        mut change: impl FnMut(&mut File) -> Result<T, String>,
    ) -> Result<T, String> {
        if let Some(docs) = &self.shared {
            // Compare-and-swap: a change made meanwhile by another process is read again
            // and this one applied on top of it. Each failed swap is another's success.
            for _ in 0..100 {
                let old = docs
                    .document(DOCUMENT)
                    .map_err(|e| format!("cannot read the tokens: {e}"))?;
                let mut file: File = match &old {
                    Some(bytes) => serde_json::from_slice(bytes)
                        .map_err(|e| format!("the shared token registry is unreadable: {e}"))?,
                    None => File::default(),
                };
                let out = change(&mut file)?;
                let new = serde_json::to_vec_pretty(&file).expect("serialize");
                if docs
                    .put_document(DOCUMENT, &new, Some(old.as_deref()))
                    .map_err(|e| format!("cannot write the tokens: {e}"))?
                {
                    return Ok(out);
                }
            }
            return Err("the tokens kept changing under this process; try again".to_owned());
        }
        crate::private::private_dir(&self.dir, "data directory")?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK))
            .map_err(|e| format!("cannot lock the tokens: {e}"))?;
        // SAFETY: flock(2) on an open descriptor; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock the tokens: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut file = self.read()?;
        let out = change(&mut file)?;
        write_atomic(
            &self.dir.join(FILE),
            &serde_json::to_vec_pretty(&file).expect("serialize"),
        )
        .map_err(|e| format!("cannot write the tokens: {e}"))?;
        Ok(out)
    }

    /// Creates a token; returns it (the only time it is seen) with its record.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        envs: &[String],
        groups: &[String],
        expires_ms: Option<u64>,
        by: &str,
    ) -> Result<(String, Token), String> {
        if !valid_name(name) {
            return Err(format!(
                "`{name}` is not a token name: letters, digits, `-`, `_`, `.` and `@`, at most 64"
            ));
        }
        let secret = fresh_token()?;
        let envs: Vec<String> = envs
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Some(bad) = groups.iter().find(|g| !valid_name(g)) {
            return Err(format!(
                "`{bad}` is not a group name: letters, digits, `-`, `_`, `.` and `@`, at most 64"
            ));
        }
        let token = Token {
            name: name.to_owned(),
            role,
            envs,
            groups: groups.to_vec(),
            hash: digest(&secret),
            created_ms: now_ms(),
            created_by: by.to_owned(),
            expires_ms,
            revoked_ms: None,
        };
        let record = token.clone();
        self.change(|f| {
            if f.tokens
                .iter()
                .any(|t| t.name == name && t.revoked_ms.is_none())
            {
                return Err(format!(
                    "a token named `{name}` exists; revoke it first (`medic token revoke {name}`)"
                ));
            }
            f.tokens.push(token.clone());
            Ok(())
        })?;
        Ok((secret, record))
    }

    /// Every token ever created, revoked ones included (they explain old audit entries).
    pub fn list(&self) -> Result<Vec<Token>, String> {
        Ok(self.read()?.tokens)
    }

    /// Revokes the live token named `name`.
    pub fn revoke(&self, name: &str) -> Result<Token, String> {
        self.change(|f| {
            let t = f
                .tokens
                .iter_mut()
                .find(|t| t.name == name && t.revoked_ms.is_none())
                .ok_or_else(|| format!("no live token named `{name}`"))?;
            t.revoked_ms = Some(now_ms());
            Ok(t.clone())
        })
    }

    /// The live token whose secret this is, if any.
    pub fn verify(&self, secret: &str) -> Result<Option<Token>, String> {
        if !secret.starts_with(PREFIX) {
            return Ok(None);
        }
        let hash = digest(secret);
        let now = now_ms();
        self.with_current(|tokens| {
            tokens
                .iter()
                .find(|t| t.hash == hash && t.usable(now))
                .cloned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_as_digests_and_can_be_revoked_or_expire() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new(dir.path());
        let (secret, t) = tokens
            .create("ci", Role::Responder, &["staging".into()], &[], None, "me")
            .unwrap();
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 64);
        let stored = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            !stored.contains(&secret[PREFIX.len()..]),
            "the secret is stored"
        );
        assert_eq!(tokens.verify(&secret).unwrap(), Some(t.clone()));
        assert_eq!(tokens.verify("medic_nope").unwrap(), None);
        assert!(
            tokens
                .create("ci", Role::Viewer, &[], &[], None, "me")
                .is_err()
        );
        // Revoked by another process (`medic token revoke` while serve runs): the one that
        // verified before, and remembered the file, sees it at once.
        Tokens::new(dir.path()).revoke("ci").unwrap();
        assert_eq!(tokens.verify(&secret).unwrap(), None);

        let (old, _) = tokens
            .create("old", Role::Viewer, &[], &[], Some(now_ms() - 1), "me")
            .unwrap();
        assert_eq!(tokens.verify(&old).unwrap(), None);
        assert!(t.allows_env("staging", true) && !t.allows_env("prod", false));
    }
}
