//! Drill results and slots, trigger state and alerts on PostgreSQL.

use super::{Postgres, decode, ms, rows_to, sql_limit};
use crate::store::StoreError;
use crate::store::backend::Schedules;
use crate::store::drills::{DrillRecord, Paused};
use crate::store::triggers::AlertRecord;
use crate::trigger::policy::State;

impl Schedules for Postgres {
    fn put_drill(&self, r: &DrillRecord) -> Result<(), StoreError> {
        let tie = r.run_id.clone().unwrap_or_else(crate::executor::new_run_id);
        let (drill, started) = (r.drill.clone(), ms(r.started_ms));
        let text = serde_json::to_string(r).expect("drill records serialize");
        self.call(move |c| {
            c.execute(
                "INSERT INTO medic_drills (drill, started_ms, tie, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (drill, started_ms, tie) DO UPDATE SET record = EXCLUDED.record",
                &[&drill, &started, &tie, &text],
            )?;
            Ok(())
        })
    }

    fn drill_records(
        &self,
        drill: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<DrillRecord>, StoreError> {
        let (drill, since, place) = (drill.map(str::to_owned), ms(since_ms), self.place.clone());
        self.call(move |c| {
            let rows = c.query(
                "SELECT record FROM medic_drills
                 WHERE ($1::text IS NULL OR drill = $1) AND started_ms >= $2
                 ORDER BY started_ms, drill, tie",
                &[&drill, &since],
            )?;
            rows_to(&place, &rows, "drills")
        })
    }

    fn drill_last_scheduled(&self, drill: &str) -> Result<Option<u64>, StoreError> {
        let drill = drill.to_owned();
        self.call(move |c| {
            let row = c.query_opt(
                "SELECT last_scheduled_ms FROM medic_drill_state WHERE drill = $1",
                &[&drill],
            )?;
            Ok(row
                .and_then(|r| r.get::<_, Option<i64>>(0))
                .map(|v| v as u64))
        })
    }

    /// One statement, so the row lock PostgreSQL takes for the conflict decides between
    /// schedulers asking at once: the first moves the slot on, the others find it moved.
    fn claim_drill_slot(&self, drill: &str, at: u64) -> Result<bool, StoreError> {
        let (drill, at) = (drill.to_owned(), ms(at));
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO medic_drill_state (drill, last_scheduled_ms) VALUES ($1, $2)
                 ON CONFLICT (drill) DO UPDATE SET last_scheduled_ms = EXCLUDED.last_scheduled_ms
                 WHERE medic_drill_state.last_scheduled_ms IS NULL
                    OR medic_drill_state.last_scheduled_ms < EXCLUDED.last_scheduled_ms",
                &[&drill, &at],
            )?;
            Ok(n == 1)
        })
    }

    fn drill_paused(&self, drill: &str) -> Result<Option<Paused>, StoreError> {
        let (drill, place) = (drill.to_owned(), self.place.clone());
        self.call(move |c| {
            let row = c.query_opt(
                "SELECT paused FROM medic_drill_state WHERE drill = $1",
                &[&drill],
            )?;
            match row.and_then(|r| r.get::<_, Option<String>>(0)) {
                Some(text) => Ok(Some(decode(
                    &place,
                    &format!("paused:{drill}"),
                    text.as_bytes(),
                )?)),
                None => Ok(None),
            }
        })
    }

    fn set_drill_paused(&self, drill: &str, paused: Option<&Paused>) -> Result<(), StoreError> {
        let drill = drill.to_owned();
        let text = paused.map(|p| serde_json::to_string(p).expect("serialize"));
        self.call(move |c| {
            c.execute(
                "INSERT INTO medic_drill_state (drill, paused) VALUES ($1, $2)
                 ON CONFLICT (drill) DO UPDATE SET paused = EXCLUDED.paused",
                &[&drill, &text],
            )?;
            Ok(())
        })
    }

    fn hold_trigger(&self, trigger: &str) -> Result<Box<dyn Send>, StoreError> {
        self.holder.hold(&format!("medic trigger {trigger}"))
    }

    fn trigger_state(&self, trigger: &str) -> Result<Option<State>, StoreError> {
        let (trigger, place) = (trigger.to_owned(), self.place.clone());
        self.call(move |c| {
            let rows = c.query(
                "SELECT state FROM medic_trigger_state WHERE trigger = $1",
                &[&trigger],
            )?;
            Ok(rows_to(&place, &rows, &format!("state:{trigger}"))?.pop())
        })
    }

    fn set_trigger_state(&self, trigger: &str, state: &State) -> Result<(), StoreError> {
        let trigger = trigger.to_owned();
        let text = serde_json::to_string(state).expect("serialize");
        self.call(move |c| {
            c.execute(
                "INSERT INTO medic_trigger_state (trigger, state) VALUES ($1, $2)
                 ON CONFLICT (trigger) DO UPDATE SET state = EXCLUDED.state",
                &[&trigger, &text],
            )?;
            Ok(())
        })
    }

    fn record_alert(&self, record: &AlertRecord) -> Result<(), StoreError> {
        let (at, text) = (
            ms(record.at_ms),
            serde_json::to_string(record).expect("serialize"),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO medic_alerts (at_ms, record) VALUES ($1, $2)",
                &[&at, &text],
            )?;
            Ok(())
        })
    }

    fn alerts(&self, since_ms: u64, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let (since, limit, place) = (ms(since_ms), sql_limit(limit), self.place.clone());
        self.call(move |c| {
            let rows = c.query(
                "SELECT record FROM (
                     SELECT id, at_ms, record FROM medic_alerts WHERE at_ms >= $1
                     ORDER BY at_ms DESC, id DESC LIMIT $2
                 ) newest ORDER BY at_ms, id",
                &[&since, &limit],
            )?;
            rows_to(&place, &rows, "alerts")
        })
    }
}
