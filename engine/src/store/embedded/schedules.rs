//! What schedulers and triggers remember, in the embedded store's trees `drills`,
//! `drill_state` and `triggers`.

use super::super::backend::Runs as _;

use super::super::StoreError;
use super::super::backend::Schedules;
use super::super::drills::{DrillRecord, Paused};
use super::super::triggers::AlertRecord;
use super::{DRILL_STATE, DRILLS, Sled, TRIGGERS};
use crate::trigger::policy::State;

fn drill_key(drill: &str, started_ms: u64, tie: &str) -> Vec<u8> {
    let mut k = drill.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&started_ms.to_be_bytes());
    k.extend_from_slice(tie.as_bytes());
    k
}

impl Schedules for Sled {
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        let tie = r.run_id.clone().unwrap_or_else(crate::executor::new_run_id);
        self.write(|b| {
            b.put_json(DRILLS, drill_key(&r.drill, r.started_ms, &tie), r);
            Ok(())
        })?;
        self.flush()
    }

    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        let iter = match drill {
            Some(name) => {
                let mut prefix = name.as_bytes().to_vec();
                prefix.push(0);
                self.drills.scan_prefix(prefix)
            }
            None => self.drills.iter(),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let r: DrillRecord = self.decode(&k, &v)?;
            if r.started_ms >= since_ms {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.started_ms);
        Ok(out)
    }

    fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .drill_state
            .get(drill.as_bytes())
            .map_err(|e| self.err(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn claim_drill_slot(&self, drill: &str, ms: u64) -> Result<bool, StoreError> {
        // Read and written under the writer lock: threads of this process asking at once
        // get it once.
        let claimed = self.write(|b| {
            let last = self.drill_last_scheduled(drill)?;
            if last.is_some_and(|last| last >= ms) {
                return Ok(false);
            }
            b.put(DRILL_STATE, drill, ms.to_be_bytes().to_vec());
            Ok(true)
        })?;
        if claimed {
            self.flush()?;
        }
        Ok(claimed)
    }

    fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        let key = format!("paused:{drill}");
        match self
            .drill_state
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(v) => self.decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        let key = format!("paused:{drill}");
        self.write(|b| {
            match paused {
                Some(p) => b.put_json(DRILL_STATE, &key, p),
                None => b.remove(DRILL_STATE, &key),
            }
            Ok(())
        })?;
        self.flush()
    }

    /// One process at a time holds the store, and `medic serve` decides alerts one at a
    /// time: there is no one else to exclude.
    fn hold_trigger(&self, _trigger: &str) -> Result<Box<dyn Send>, StoreError> {
        Ok(Box::new(()))
    }

    fn trigger_state(&self, trigger: &str) -> Result<Option<State>, StoreError> {
        let key = format!("state:{trigger}");
        match self.triggers.get(key.as_bytes()).map_err(|e| self.err(e))? {
            Some(v) => self.decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError> {
        self.write(|b| {
            b.put_json(TRIGGERS, format!("state:{trigger}"), state);
            Ok(())
        })?;
        self.flush()
    }

    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        let mut key = b"alert:".to_vec();
        key.extend_from_slice(&record.at_ms.to_be_bytes());
        key.extend_from_slice(&id.to_be_bytes());
        self.write(|b| {
            b.put_json(TRIGGERS, key, record);
            Ok(())
        })
    }

    fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let mut from = b"alert:".to_vec();
        from.extend_from_slice(&since_ms.to_be_bytes());
        let mut out: Vec<AlertRecord> = self
            .triggers
            .range(from..b"alert;".to_vec())
            .rev()
            .take(limit)
            .map(|e| {
                let (k, v) = e.map_err(|e| self.err(e))?;
                self.decode(&k, &v)
            })
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}
