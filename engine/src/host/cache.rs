//! On-disk cache of compiled plugins.
//!
//! An entry is keyed by the wasm's sha256, the wasmtime version and a hash of the engine's
//! configuration, and carries a sha256 of its own payload: a truncated or corrupted file is
//! detected and recompiled, never handed to wasmtime's deserializer.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"MEDICC01";

pub enum Lookup {
    Hit(Component),
    Miss,
    /// Unreadable, corrupt, or written by another engine configuration.
    Untrusted,
}

pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
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
        }
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
        let bytes = match std::fs::read(self.path(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(_) => return Lookup::Untrusted,
        };
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Lookup::Untrusted;
        }
        let (sum, payload) = bytes[MAGIC.len()..].split_at(32);
        if Sha256::digest(payload).as_slice() != sum {
            return Lookup::Untrusted;
        }
        // SAFETY: the payload is byte-for-byte what `Component::serialize` produced for this
        // engine configuration (the checksum above proves it is unmodified since we wrote it,
        // and wasmtime re-checks version and configuration compatibility itself).
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(c) => Lookup::Hit(c),
            Err(_) => Lookup::Untrusted,
        }
    }

    /// Stores a compiled component atomically (write to a temporary file, then rename), so a
    /// crash never leaves a half-written entry under the real name.
    pub fn store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        let payload = component.serialize().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let final_path = self.path(digest);
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&Sha256::digest(&payload))?;
        f.write_all(&payload)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &final_path)
    }

    #[doc(hidden)]
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.path(digest)
    }
}

pub fn wasmtime_version() -> &'static str {
    // Kept in step with the workspace's wasmtime requirement; a bump changes cache keys.
    "48"
}
