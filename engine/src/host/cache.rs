//! On-disk cache of compiled plugins.
//!
//! An entry is keyed by the wasm's sha256, the wasmtime version and a hash of the engine's
//! configuration. A `.cwasm` is native code that runs without the sandbox's verification,
//! so an entry is trusted only when Medic itself wrote it: beside it, a `.mac` file holds an
//! HMAC-SHA256, under a per-user key (`key`, 0600, in the cache directory), of the plugin's
//! digest, the engine key and the `.cwasm`'s bytes. A truncated, corrupted, planted or
//! swapped file (another plugin's entry under this plugin's name) fails the check and is
//! recompiled from the pinned wasm, never handed to wasmtime's deserializer. A cache
//! directory another user owns or can write is not used at all.
//!
//! The `.cwasm` is wasmtime's serialized form alone, so that wasmtime can map the checked
//! file itself instead of copying it into fresh memory (a third of a load from the cache).

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"MEDICC03";
/// Part of every entry's name: entries of an earlier layout (the MAC in the `.cwasm`'s
/// header) are other names, never read as this one.
const LAYOUT: &str = "cwasm+mac";
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
        LAYOUT.hash(&mut h);
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

    fn mac_path(&self, digest: &str) -> PathBuf {
        self.path(digest).with_extension("mac")
    }

    /// Looks a component up. On a miss or an untrusted entry the caller recompiles and
    /// [`CompileCache::store`]s.
    pub fn load(&self, engine: &Engine, digest: &str) -> Lookup {
        let Ok(key) = self.key() else {
            return Lookup::Miss;
        };
        let (file, payload) = match open_no_follow(&self.path(digest)).and_then(|mut f| {
            let bytes = read_all(&mut f)?;
            Ok((f, bytes))
        }) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(_) => return Lookup::Untrusted,
        };
        // A `.cwasm` without its MAC (a crash between the two writes) is not trusted.
        let Ok(sealed) = open_no_follow(&self.mac_path(digest)).and_then(|mut f| read_all(&mut f))
        else {
            return Lookup::Untrusted;
        };
        let Some(mac) = sealed.strip_prefix(MAGIC) else {
            return Lookup::Untrusted;
        };
        if !same(&self.mac(key, digest, &payload), mac) {
            return Lookup::Untrusted;
        }
        // SAFETY: the payload is byte-for-byte what `Component::serialize` produced for this
        // plugin and engine configuration: the MAC above, under a key only this user can
        // read, proves this process's user wrote it for this digest and has not been changed
        // since (and wasmtime re-checks version and configuration compatibility itself).
        // wasmtime maps the same file (the open descriptor, not the name, which could have
        // been replaced since): only this user could have written to it in place since it
        // was read, in a directory no other user can write, and Medic itself never does (it
        // replaces an entry by renaming a new file over it).
        let mapped = unsafe {
            Component::deserialize_file(
                engine,
                format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)),
            )
        };
        let component = mapped.or_else(|mapped| {
            // No /proc, or a cache on a file system mounted `noexec` (its files cannot be
            // mapped executable): the checked bytes are copied into memory instead.
            tracing::debug!("cannot map the compiled plugin ({mapped:#}); copying it");
            // SAFETY: as above; these are the very bytes the MAC was checked against.
            unsafe { Component::deserialize(engine, &payload) }
        });
        match component {
            Ok(c) => Lookup::Hit(c),
            Err(_) => Lookup::Untrusted,
        }
    }

    /// Stores a compiled component: the code, then its MAC, each written atomically (to a
    /// temporary file, then renamed), so a crash never leaves a half-written file under the
    /// real name, and a crash between the two leaves a `.cwasm` whose MAC does not match it
    /// (or is missing): not trusted, recompiled.
    pub fn store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        let key = self.key().map_err(std::io::Error::other)?;
        let payload = component.serialize().map_err(std::io::Error::other)?;
        let sealed = [&MAGIC[..], &self.mac(key, digest, &payload)].concat();
        crate::private::write_atomic(&self.path(digest), &payload)?;
        crate::private::write_atomic(&self.mac_path(digest), &sealed)
    }

    #[doc(hidden)]
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.path(digest)
    }
}

/// Opens a file for reading without following a symlink at its name.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn read_all(f: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(f, &mut bytes)?;
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
            let bytes = open_no_follow(path)
                .and_then(|mut f| read_all(&mut f))
                .map_err(|e| format!("{}: {e}", path.display()))?;
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
