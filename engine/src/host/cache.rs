//! On-disk cache of compiled plugins.
//!
//! An entry is keyed by the wasm's sha256, the wasmtime version and a hash of the engine's
//! configuration. A `.cwasm` is native code that runs without the sandbox's verification,
//! so an entry is trusted only when Medic itself wrote it: it carries an HMAC-SHA256, under a
//! per-user key (`key`, 0600, in the cache directory), of the plugin's digest, the engine
//! key and the payload. A truncated, corrupted, planted or swapped file (another plugin's
//! entry under this plugin's name) fails the check and is recompiled from the pinned wasm,
//! never handed to wasmtime's deserializer. A cache directory another user owns or can
//! write is not used at all.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"MEDICC02";
const KEY_FILE: &str = "key";

pub enum Lookup {
    Hit(Component),
    Miss,
    /// Unreadable, corrupt, or written by another engine configuration.
    Untrusted,
}

pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// The per-user MAC key, read (or made) on first use; an error: the cache is not used.
    key: std::sync::OnceLock<Result<[u8; 32], String>>,
}

/// How a component was obtained, for `plugin inspect` and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    /// Compiled, and the result stored.
    Compiled,
    /// The entry was unreadable, corrupt or from another engine: recompiled and replaced.
    Replaced,
    /// No cache configured.
    Disabled,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        wasmtime_version().hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
            key: std::sync::OnceLock::new(),
        }
    }

    /// The MAC key, once the directory is known to be ours alone.
    fn key(&self) -> Result<&[u8; 32], &str> {
        self.key
            .get_or_init(|| {
                let key = crate::private::private_dir(&self.dir, "cache directory")
                    .and_then(|()| read_or_make_key(&self.dir.join(KEY_FILE)));
                if let Err(e) = &key {
                    tracing::warn!("not using the compiled-plugin cache: {e}");
                }
                key
            })
            .as_ref()
            .map_err(String::as_str)
    }

    fn mac(&self, key: &[u8; 32], digest: &str, payload: &[u8]) -> [u8; 32] {
        hmac_sha256(
            key,
            &[
                digest.as_bytes(),
                b"\0",
                self.engine_key.as_bytes(),
                b"\0",
                payload,
            ],
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Looks a component up. On a miss or an untrusted entry the caller recompiles and
    /// [`CompileCache::store`]s.
    pub fn load(&self, engine: &Engine, digest: &str) -> Lookup {
        let Ok(key) = self.key() else {
            return Lookup::Miss;
        };
        let bytes = match read_no_follow(&self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(_) => return Lookup::Untrusted,
        };
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Lookup::Untrusted;
        }
        let (mac, payload) = bytes[MAGIC.len()..].split_at(32);
        if !same(&self.mac(key, digest, payload), mac) {
            return Lookup::Untrusted;
        }
        // SAFETY: the payload is byte-for-byte what `Component::serialize` produced for this
        // plugin and engine configuration: the MAC above, under a key only this user can
        // read, proves this process's user wrote it for this digest and has not been changed
        // since (and wasmtime re-checks version and configuration compatibility itself).
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(c) => Lookup::Hit(c),
            Err(_) => Lookup::Untrusted,
        }
    }

    /// Stores a compiled component atomically (write to a temporary file, then rename), so a
    /// crash never leaves a half-written entry under the real name.
    pub fn store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        let key = self.key().map_err(std::io::Error::other)?;
        let payload = component.serialize().map_err(std::io::Error::other)?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.mac(key, digest, &payload));
        bytes.extend_from_slice(&payload);
        crate::private::write_atomic(&self.path(digest), &bytes)
    }

    #[doc(hidden)]
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.path(digest)
    }
}

/// Reads a file without following a symlink at its name.
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The cache's MAC key: read if it is ours alone (0600, owned by this user), else made
/// from the system's randomness and created exclusively.
fn read_or_make_key(path: &Path) -> Result<[u8; 32], String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            // SAFETY: getuid(2) cannot fail.
            let me = unsafe { libc::getuid() };
            if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is not a private file of this user (mode {:o}, owner {}): remove it",
                    path.display(),
                    meta.mode() & 0o777,
                    meta.uid()
                ));
            }
            let bytes = read_no_follow(path).map_err(|e| format!("{}: {e}", path.display()))?;
            bytes
                .try_into()
                .map_err(|_| format!("{} is not a 32-byte key: remove it", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut key))
                .map_err(|e| format!("no randomness for the cache key: {e}"))?;
            match crate::private::create_new(path) {
                Ok(mut f) => {
                    f.write_all(&key)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(key)
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_make_key(path),
                Err(e) => Err(format!("{}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`: a few lines, not worth a crate.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn wasmtime_version() -> &'static str {
    // Kept in step with the workspace's wasmtime requirement; a bump changes cache keys.
    "48"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_shape() {
        // RFC 4231 test case 2 uses a short key; a 32-byte zero-padded key is the same HMAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
