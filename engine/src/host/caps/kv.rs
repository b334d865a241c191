use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::host::bindings::medic::plugin::kv::Host;
use crate::host::sandbox::StoreState;

use super::CapabilityDenied;

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 << 10;
pub const MAX_TOTAL_BYTES: usize = 1 << 20;

/// The key-value space of one plugin declaration in one run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct KvSpace(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl KvSpace {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.lock().unwrap().clone()
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
        let value = self.caps.kv.0.lock().unwrap().get(&key).cloned();
        let result = if value.is_some() { "hit" } else { "miss" };
        self.caps
            .record("kv", format!("get {key}"), true, result.into(), start);
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.kv_allowed("set", &key)?;
        let start = Instant::now();
        let result = {
            let mut map = self.caps.kv.0.lock().unwrap();
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
                map.insert(key.clone(), value);
                Ok(())
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
        let start = Instant::now();
        self.caps.kv.0.lock().unwrap().remove(&key);
        self.caps
            .record("kv", format!("delete {key}"), true, "ok".into(), start);
        Ok(())
    }
}
