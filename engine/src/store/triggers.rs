//! What triggers remember: each trigger's state (its groups' last runs, the storm window,
//! the brake), and every alert that arrived with what was decided about it.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::trigger::policy::State;

/// One alert as it arrived at one trigger, and what was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub at_ms: u64,
    pub trigger: String,
    pub alert: String,
    pub fingerprint: String,
    pub status: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub starts_at_ms: u64,
    /// `start`, `attached`, `cooled_down`, `braked`, `resolved`, `refused`, ...
    pub decision: String,
    /// The run it started or was attached to.
    pub run_id: Option<String>,
    /// Why, in words.
    pub detail: String,
}

impl Store {
    /// A trigger's state; the default when it has none yet.
    pub fn trigger_state(&self, trigger: &str) -> Result<State, StoreError> {
        Ok(self.backend.trigger_state(trigger)?.unwrap_or_default())
    }

    /// Holds a trigger against every other scheduler on the store until the value is
    /// dropped (see [`super::backend::Schedules::hold_trigger`]).
    pub fn hold_trigger(&self, trigger: &str) -> Result<Box<dyn Send>, StoreError> {
        self.backend.hold_trigger(trigger)
    }

    pub fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError> {
        self.backend.set_trigger_state(trigger, state)
    }

    /// Records one alert's decision (durable before the alert is answered).
    pub fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        self.backend.record_alert(record)
    }

    /// Alerts recorded at or after `since_ms`, oldest first, at most the newest `limit`.
    pub fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.backend.alerts(since_ms, limit)
    }
}
