//! The plugin host: owns wasmtime, loads and checks plugins, and runs sandboxed calls.
//!
//! A plugin is loaded once per process ([`PluginHost::load`]): its bytes are digested and
//! checked against any pin, compiled (or taken from the on-disk cache), checked against the
//! contract, linked, and asked for its manifest. Each call then gets a fresh instance from the
//! pooling allocator ([`PluginHost::invoke`]), so nothing a call does can affect the next.

mod bindings;
pub mod cache;
pub mod caps;
mod check;
mod download;
pub mod limits;
pub mod manifest;
pub mod outcome;
mod pool;
pub mod redact;
pub mod sandbox;
mod sharing;
pub mod value;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::{CacheStatus, CompileCache};
pub use caps::{CommandGrant, Grants, HostGrant, KvJournal, KvSpace};
pub use check::ParamProblem;
pub use manifest::{Manifest, ParamSpec, PluginKind};
pub use outcome::{CapabilityUse, Failure, Invocation, LogLevel, LogLine, Outcome, Status};
pub use pool::Batching;
pub use pool::calls_on_call_threads;
pub use redact::Redactor;
pub use sandbox::{Call, CallContext, Placement, Sandbox, StoreState};
pub use sharing::{GivenWay, give_way};
pub use value::{Value, ValueType, Values};

use bindings::MedicPluginPre;

/// The contract this engine implements.
pub const CONTRACT_PACKAGE: &str = "medic:plugin";
pub const CONTRACT_VERSION: &str = "0.1.1";

/// Epoch interruption granularity: deadlines are enforced to within about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long a plugin may take to describe itself, or to check parameters.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);

mod builtin_data {
    pub struct Builtin {
        pub name: &'static str,
        pub wasm: &'static [u8],
        pub sha256: &'static str,
    }
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}
pub use builtin_data::{BUILTINS, Builtin, fixtures};

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginSource {
    Builtin(String),
    File(PathBuf),
    /// `https://...`: downloaded once into the cache, by its pinned sha256.
    Url(url::Url),
}

impl PluginSource {
    /// Parses `builtin:NAME` or a path (relative paths are resolved against `base`, the
    /// directory of the runbook).
    pub fn parse(text: &str, base: &Path) -> Self {
        if (text.starts_with("https://") || text.starts_with("http://"))
            && let Ok(url) = url::Url::parse(text)
        {
            return PluginSource::Url(url);
        }
        match text.strip_prefix("builtin:") {
            Some(name) => PluginSource::Builtin(name.to_owned()),
            None => {
                let p = Path::new(text);
                PluginSource::File(if p.is_absolute() {
                    p.to_owned()
                } else {
                    base.join(p)
                })
            }
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(n) => write!(f, "builtin:{n}"),
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Url(u) => write!(f, "{u}"),
        }
    }
}

/// Why a plugin could not be loaded. Each names the plugin and what to do about it.
#[derive(Debug, Error)]
pub enum LoadError {
    /// `builtin:NAME` names no embedded plugin.
    #[error("there is no builtin plugin `{name}` (builtins: {available})")]
    UnknownBuiltin { name: String, available: String },
    /// A plugin from a URL could not be fetched.
    #[error("cannot download plugin {url}: {reason}")]
    Download { url: String, reason: String },
    /// The file does not exist or cannot be read.
    #[error("cannot read plugin file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// The bytes do not match the pinned digest.
    #[error(
        "plugin {plugin} does not match its pinned sha256\n  pinned:   {expected}\n  actual:   {actual}\nrefusing to run it; if the new plugin is intended, update `sha256` in the runbook"
    )]
    DigestMismatch {
        plugin: String,
        expected: String,
        actual: String,
    },
    /// A pin that is not a sha256 hex digest.
    #[error("the sha256 pin `{pin}` for {plugin} is not 64 hexadecimal characters")]
    BadPin { plugin: String, pin: String },
    /// Not WebAssembly at all.
    #[error("{plugin} is not a WebAssembly file")]
    NotWasm { plugin: String },
    /// A core module rather than a component.
    #[error(
        "{plugin} is a core WebAssembly module, not a component: build plugins for the wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)"
    )]
    NotComponent { plugin: String },
    /// Valid wasm that wasmtime cannot compile.
    #[error("{plugin} cannot be compiled: {reason}")]
    Invalid { plugin: String, reason: String },
    /// Built against another version of the contract.
    #[error("{plugin} was built for plugin contract {found}; this medic supports {CONTRACT_PACKAGE}@{supported}. Rebuild the plugin against this version of the plugin SDK.", supported = supported_versions())]
    IncompatibleContract { plugin: String, found: String },
    /// Does not export the plugin interface at all.
    #[error(
        "{plugin} is a component but not a Medic plugin: it does not export {CONTRACT_PACKAGE}/plugin"
    )]
    NotAPlugin { plugin: String },
    /// Imports something the host does not provide.
    #[error(
        "{plugin} imports `{import}`, which medic does not provide (plugins may import {CONTRACT_PACKAGE} capabilities and wasi:* 0.2)"
    )]
    UnknownImport { plugin: String, import: String },
    /// Instantiating or calling `get-manifest` failed.
    #[error("{plugin} failed to describe itself: {reason}")]
    Manifest { plugin: String, reason: String },
}

fn supported_versions() -> String {
    let (major_minor, _) = CONTRACT_VERSION.rsplit_once('.').unwrap();
    format!("{major_minor}.x")
}

/// What loading a plugin found, kept for its next load.
#[derive(Clone)]
struct Loaded {
    manifest: Manifest,
    contract: String,
    pre: MedicPluginPre<StoreState>,
    exports: bindings::Exports,
}

/// A loaded, checked plugin, ready for fresh instances.
pub struct Plugin {
    pub source: PluginSource,
    pub sha256: String,
    pub size: usize,
    pub manifest: Manifest,
    pub contract: String,
    pub cache: CacheStatus,
    pre: MedicPluginPre<StoreState>,
    exports: bindings::Exports,
}

impl Plugin {
    /// It exports `validate` (contract 0.1.1): its parameters are checked before a run.
    pub fn validates(&self) -> bool {
        self.exports.validates()
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .field("name", &self.manifest.name)
            .finish()
    }
}

/// Settings for a [`PluginHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled plugins are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin instances may be alive at once (pool size).
    pub max_instances: u32,
    /// The memory all calls running at once may be allowed together, in bytes: a call
    /// waits until its own limit fits (a fleet of 50 targets at 64 MiB each does not get
    /// 3.2 GiB). A call whose limit exceeds the whole budget runs alone.
    pub memory_budget: u64,
    /// A CA (PEM) to trust besides the system's, for plugins from `https://` URLs.
    pub ca_cert: Option<PathBuf>,
}

/// The default [`HostConfig::memory_budget`].
pub const DEFAULT_MEMORY_BUDGET: u64 = 4 << 30;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: default_cache_dir(),
            max_instances: 100,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            ca_cert: None,
        }
    }
}

/// `MEDIC_CACHE_DIR`, else the platform cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("MEDIC_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("medic").join("plugins")))
}

/// Stops the epoch ticker thread when the host is dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub struct PluginHost {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: Option<CompileCache>,
    http: caps::http::LazyHttp,
    /// Plugins already loaded by this host, by digest: a long-lived process (`medic serve`
    /// planning each run and drill) loads a plugin once, not once per plan.
    loaded: std::sync::Mutex<std::collections::HashMap<String, Loaded>>,
    /// Memory limits of calls in flight, in MiB, drawn from the budget.
    memory: Arc<tokio::sync::Semaphore>,
    memory_budget_mib: u32,
    /// For plugins from URLs: the cache directory (downloads are kept there) and a CA.
    downloads: (Option<PathBuf>, Option<PathBuf>),
    /// Where calls made together run ([`Placement::Workers`]), started at the first.
    calls: pool::CallPool,
    _ticker: Ticker,
}

/// The low bytes of a linear memory reset in place rather than unmapped (the pages of it a
/// call touched, found by PAGEMAP_SCAN).
const KEEP_RESIDENT: usize = 512 << 10;
const TABLE_KEEP_RESIDENT: usize = 16 << 10;

/// The engine's settings; `reset_in_place` needs PAGEMAP_SCAN (Linux 6.7+): without it,
/// keeping memory resident means zeroing all of it at every call, slower than unmapping.
fn engine_config(max_instances: u32, reset_in_place: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasip2 component holds a handful of core instances; size the pool for that.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 8)
        .total_stacks(max_instances)
        .max_memory_size(limits::MAX_MEMORY as usize);
    if reset_in_place {
        // Every call gets a fresh instance, and freeing its slot resets its memory. By
        // default that unmaps it, and the next call takes a page fault on every page it
        // touches again (a Rust guest's stack, its data, its first heap pages). With
        // PAGEMAP_SCAN (Linux 6.7+) only the pages the call touched are reset in place and
        // kept: 25 us -> 9 us a call on the development machine. Tables alike.
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// rustls needs a process-wide crypto provider before any HTTP client is built; a second
/// install is a harmless no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl PluginHost {
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        // Kernels without PAGEMAP_SCAN refuse the first; they get the second.
        let engine = Engine::new(&engine_config(config.max_instances, true))
            .or_else(|_| Engine::new(&engine_config(config.max_instances, false)))
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wasi: {e:#}"))?;
        bindings::MedicPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking the plugin contract: {e:#}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("medic-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }

        // Every TLS client of the process needs it, not only the plugins' (made later).
        install_crypto_provider();
        let http = caps::http::LazyHttp::default();
        let downloads = (config.cache_dir.clone(), config.ca_cert.clone());
        let cache = config.cache_dir.map(|dir| CompileCache::new(dir, &engine));
        let memory_budget_mib = u32::try_from(config.memory_budget >> 20)
            .unwrap_or(u32::MAX)
            .max(1);
        Ok(PluginHost {
            engine,
            linker,
            cache,
            http,
            loaded: std::sync::Mutex::default(),
            memory: Arc::new(tokio::sync::Semaphore::new(memory_budget_mib as usize)),
            memory_budget_mib,
            downloads,
            calls: pool::CallPool::default(),
            _ticker: Ticker(stop),
        })
    }

    /// Forgets the plugins loaded so far (benchmarks measure loading from the disk cache).
    #[doc(hidden)]
    pub fn forget_loaded(&self) {
        self.loaded.lock().unwrap().clear();
    }

    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    fn read_source(
        source: &PluginSource,
    ) -> Result<(std::borrow::Cow<'static, [u8]>, String), LoadError> {
        match source {
            PluginSource::Builtin(name) => {
                let b = BUILTINS.iter().find(|b| b.name == name).ok_or_else(|| {
                    LoadError::UnknownBuiltin {
                        name: name.clone(),
                        available: BUILTINS
                            .iter()
                            .map(|b| b.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })?;
                Ok((b.wasm.into(), b.sha256.to_owned()))
            }
            PluginSource::File(path) => {
                let bytes = crate::input::read_bounded(path, crate::input::MAX_PLUGIN_BYTES)
                    .map_err(|e| LoadError::Unreadable {
                        path: path.clone(),
                        reason: match e.kind() {
                            std::io::ErrorKind::NotFound => "no such file".to_owned(),
                            _ => e.to_string(),
                        },
                    })?;
                let digest = hex::encode(Sha256::digest(&bytes));
                Ok((bytes.into(), digest))
            }
            // Fetched (asynchronously) by `load`, never read here.
            PluginSource::Url(u) => Err(LoadError::Download {
                url: u.to_string(),
                reason: "not a file".into(),
            }),
        }
    }

    fn compile(
        &self,
        bytes: &[u8],
        digest: &str,
        source: &str,
    ) -> Result<(Component, CacheStatus), LoadError> {
        let mut status = CacheStatus::Disabled;
        if let Some(cache) = &self.cache {
            match cache.load(&self.engine, digest) {
                cache::Lookup::Hit(c) => return Ok((c, CacheStatus::Hit)),
                cache::Lookup::Miss => status = CacheStatus::Compiled,
                cache::Lookup::Untrusted => {
                    tracing::warn!(%source, "compiled-plugin cache entry is stale or corrupt; recompiling");
                    status = CacheStatus::Replaced;
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
            plugin: source.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(digest, &component)
        {
            // The cache only saves time; a read-only or full disk must not stop a run.
            tracing::warn!(%source, dir = %cache.dir().display(), "cannot write the compiled-plugin cache: {e}");
        }
        Ok((component, status))
    }

    /// Finds the contract version the component was built for, and refuses anything this
    /// engine does not implement, before linking (whose errors would be cryptic).
    fn check_contract(&self, component: &Component, source: &str) -> Result<String, LoadError> {
        let ty = component.component_type();
        let prefix = format!("{CONTRACT_PACKAGE}/plugin@");
        let export = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .find(|name| name.starts_with(&prefix));
        let Some(export) = export else {
            return Err(LoadError::NotAPlugin {
                plugin: source.to_owned(),
            });
        };
        let found = &export[prefix.len()..];
        if !contract_compatible(found) {
            return Err(LoadError::IncompatibleContract {
                plugin: source.to_owned(),
                found: format!("{CONTRACT_PACKAGE}@{found}"),
            });
        }
        for (name, item) in ty.imports(&self.engine) {
            let known = name.starts_with("wasi:")
                || (name.starts_with(&format!("{CONTRACT_PACKAGE}/"))
                    && name
                        .rsplit_once('@')
                        .is_some_and(|(_, v)| contract_compatible(v)));
            if !known || !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(LoadError::UnknownImport {
                    plugin: source.to_owned(),
                    import: name.to_owned(),
                });
            }
        }
        Ok(format!("{CONTRACT_PACKAGE}@{found}"))
    }

    /// Loads and checks a plugin. `pin` is the sha256 the runbook requires, if any.
    pub async fn load(
        &self,
        source: &PluginSource,
        pin: Option<&str>,
    ) -> Result<Plugin, LoadError> {
        let shown = source.to_string();
        let (bytes, digest) = match source {
            PluginSource::Url(url) => {
                let (cache, ca) = &self.downloads;
                let (bytes, digest) =
                    download::fetch(url, pin, cache.as_deref(), ca.as_deref()).await?;
                (std::borrow::Cow::Owned(bytes), digest)
            }
            _ => Self::read_source(source)?,
        };
        if let Some(pin) = pin {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(LoadError::BadPin { plugin: shown, pin });
            }
            if pin != digest {
                return Err(LoadError::DigestMismatch {
                    plugin: shown,
                    expected: pin,
                    actual: digest,
                });
            }
        }
        let known = self.loaded.lock().unwrap().get(&digest).cloned();
        if let Some(known) = known {
            return Ok(Plugin {
                source: source.clone(),
                sha256: digest,
                size: bytes.len(),
                manifest: known.manifest,
                contract: known.contract,
                cache: CacheStatus::Hit,
                pre: known.pre,
                exports: known.exports,
            });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => {}
            Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => {
                return Err(LoadError::NotComponent { plugin: shown });
            }
            _ => return Err(LoadError::NotWasm { plugin: shown }),
        }
        let size = bytes.len();
        let (component, cache) = self.compile(&bytes, &digest, &shown)?;
        let contract = self.check_contract(&component, &shown)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(MedicPluginPre::new)
            .map_err(|e| LoadError::Invalid {
                plugin: shown.clone(),
                reason: format!("{e:#}"),
            })?;
        let (manifest, exports) =
            self.describe(&pre, &shown)
                .await
                .map_err(|reason| LoadError::Manifest {
                    plugin: shown,
                    reason,
                })?;
        let plugin = Plugin {
            source: source.clone(),
            sha256: digest,
            size,
            manifest,
            contract,
            cache,
            pre,
            exports,
        };
        self.loaded.lock().unwrap().insert(
            plugin.sha256.clone(),
            Loaded {
                manifest: plugin.manifest.clone(),
                contract: plugin.contract.clone(),
                pre: plugin.pre.clone(),
                exports: plugin.exports,
            },
        );
        Ok(plugin)
    }

    /// The plugin's manifest, and its exports found and their types checked.
    async fn describe(
        &self,
        pre: &MedicPluginPre<StoreState>,
        shown: &str,
    ) -> Result<(Manifest, bindings::Exports), String> {
        let sandbox = Sandbox {
            timeout: MANIFEST_TIMEOUT,
            ..Sandbox::default()
        };
        let output = sandbox::OutputTail::default();
        let mut store = self.new_store(shown, &sandbox, "manifest", &output);
        let call = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            let exports = bindings::Exports::checked(&mut store, &instance)?;
            let manifest = bindings::MedicPlugin::new(&mut store, &instance)?
                .medic_plugin_plugin()
                .call_get_manifest(&mut store)
                .await?;
            wasmtime::Result::Ok((manifest, exports))
        };
        let raw = tokio::time::timeout(MANIFEST_TIMEOUT + Duration::from_millis(100), call)
            .await
            .map_err(|_| {
                format!(
                    "no manifest within {}",
                    humantime::format_duration(MANIFEST_TIMEOUT)
                )
            })?;
        match raw {
            Ok((m, exports)) => Ok((Manifest::from_wit(m)?, exports)),
            Err(e) => Err(sandbox::describe_error(
                &e,
                MANIFEST_TIMEOUT,
                &output.contents(),
            )),
        }
    }
}

/// Same major (and for 0.x, same minor) version: the component model's semver rule.
fn contract_compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(version), parse(CONTRACT_VERSION)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert!(contract_compatible("0.1.0"));
        assert!(contract_compatible("0.1.7"));
        assert!(!contract_compatible("0.2.0"));
        assert!(!contract_compatible("9.0.0"));
        assert!(!contract_compatible("junk"));
    }

    #[test]
    fn sources() {
        let base = Path::new("/rb");
        assert_eq!(
            PluginSource::parse("builtin:x", base),
            PluginSource::Builtin("x".into())
        );
        assert_eq!(
            PluginSource::parse("p.wasm", base),
            PluginSource::File("/rb/p.wasm".into())
        );
        assert_eq!(
            PluginSource::parse("/abs.wasm", base),
            PluginSource::File("/abs.wasm".into())
        );
    }
}
