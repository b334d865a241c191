use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::host::bindings::medic::plugin::kv::Host;
use crate::host::sandbox::StoreState;

use super::CapabilityDenied;

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 << 10;
pub const MAX_TOTAL_BYTES: usize = 1 << 20;

/// Where a run's key-value writes become durable. A plugin saves what its revert needs
/// (http-deploy's previous version, elbv2-weights' previous weights) *before* it acts, so
/// the write must be on disk before the plugin is told it succeeded: a `kill -9` inside the
/// action must not take the way back with it.
pub trait KvJournal: Send + Sync {
    /// Records `key` = `value` (`None`: deleted) in the space named `space`, durably.
    fn write(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<(), String>;
}

/// The key-value space of one plugin declaration in one run. Cloning shares it.
#[derive(Clone, Default)]
pub struct KvSpace {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    journal: Option<(Arc<dyn KvJournal>, Arc<str>)>,
}

impl std::fmt::Debug for KvSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSpace")
            .field("keys", &self.map.lock().unwrap().len())
            .field("journaled", &self.journal.is_some())
            .finish()
    }
}

impl KvSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// A space that starts from `entries` (an earlier process's, from its journal) and, with
    /// a journal, writes every change through it under the name `space`.
    pub fn restored(
        entries: BTreeMap<String, Vec<u8>>,
        journal: Option<Arc<dyn KvJournal>>,
        space: &str,
    ) -> Self {
        KvSpace {
            map: Arc::new(Mutex::new(entries)),
            journal: journal.map(|j| (j, Arc::from(space))),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.map.lock().unwrap().clone()
    }

    /// Writes through the journal first: a change that is not durable is not made. The wait
    /// for the store is added to `waited`: the store's time, not the plugin's.
    fn persist(
        &self,
        key: &str,
        value: Option<&[u8]>,
        waited: &super::StoreWaited,
    ) -> Result<(), String> {
        let Some((journal, space)) = &self.journal else {
            return Ok(());
        };
        let begun = Instant::now();
        let written = journal.write(space, key, value);
        waited.add(begun.elapsed());
        written.map_err(|e| format!("the run's state could not be recorded: {e}"))
    }
}

impl StoreState {
    fn kv_allowed(&mut self, op: &str, key: &str) -> wasmtime::Result<()> {
        if self.caps.grants.kv {
            return Ok(());
        }
        let message = self.caps.deny(
            "kv",
            format!("{op} {key:?}"),
            "kv is not granted to this plugin".into(),
        );
        Err(wasmtime::Error::new(CapabilityDenied(message)))
    }
}

impl Host for StoreState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.kv_allowed("get", &key)?;
        let start = Instant::now();
        let value = self.caps.kv.map.lock().unwrap().get(&key).cloned();
        let result = if value.is_some() { "hit" } else { "miss" };
        self.caps
            .record("kv", format!("get {key}"), true, result.into(), start);
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.kv_allowed("set", &key)?;
        let start = self.caps.before_acting(Instant::now())?;
        let result = {
            let kv = self.caps.kv.clone();
            let mut map = kv.map.lock().unwrap();
            let used: usize = map
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(k, v)| k.len() + v.len())
                .sum();
            if key.len() > MAX_KEY_BYTES {
                Err(format!("key is longer than {MAX_KEY_BYTES} bytes"))
            } else if value.len() > MAX_VALUE_BYTES {
                Err(format!("value is larger than {MAX_VALUE_BYTES} bytes"))
            } else if used + key.len() + value.len() > MAX_TOTAL_BYTES {
                Err(format!(
                    "the run's state would exceed {MAX_TOTAL_BYTES} bytes"
                ))
            } else {
                // Under the lock, so the journal's order is the map's order.
                kv.persist(&key, Some(&value), &self.caps.store_waited)
                    .map(|()| {
                        map.insert(key.clone(), value);
                    })
            }
        };
        let shown = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        };
        self.caps
            .record("kv", format!("set {key}"), true, shown, start);
        Ok(result)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.kv_allowed("delete", &key)?;
        let start = self.caps.before_acting(Instant::now())?;
        let kv = self.caps.kv.clone();
        let result = {
            let mut map = kv.map.lock().unwrap();
            let persisted = if map.contains_key(&key) {
                kv.persist(&key, None, &self.caps.store_waited)
            } else {
                Ok(())
            };
            persisted.map(|()| {
                map.remove(&key);
            })
        };
        let shown = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        };
        self.caps
            .record("kv", format!("delete {key}"), true, shown, start);
        // The contract's delete cannot fail; a plugin that cannot forget must not go on as if
        // it had, so an unrecordable delete ends the call.
        result.map_err(wasmtime::Error::msg)
    }
}
