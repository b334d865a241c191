//! Shared documents (approvals, tokens, the audit log) on PostgreSQL: one table of keys
//! and values.

use super::{Postgres, sql_limit};
use crate::store::StoreError;
use crate::store::backend::Documents;

impl Documents for Postgres {
    fn document(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.call(move |c| {
            let row = c.query_opt("SELECT value FROM medic_documents WHERE key = $1", &[&key])?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn put_document(
        &self,
        key: &str,
        value: &[u8],
        only_if: Option<Option<&[u8]>>,
    ) -> Result<bool, StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        let only_if = only_if.map(|o| o.map(<[u8]>::to_vec));
        self.call(move |c| {
            let n = match only_if {
                None => c.execute(
                    "INSERT INTO medic_documents (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&key, &value],
                )?,
                Some(None) => c.execute(
                    "INSERT INTO medic_documents (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &value],
                )?,
                Some(Some(old)) => c.execute(
                    "UPDATE medic_documents SET value = $2 WHERE key = $1 AND value = $3",
                    &[&key, &value, &old],
                )?,
            };
            Ok(n == 1)
        })
    }

    fn documents(
        &self,
        from: &str,
        to: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (from, to, limit) = (from.to_owned(), to.to_owned(), sql_limit(limit));
        self.call(move |c| {
            let order = if descending { "DESC" } else { "ASC" };
            let rows = c.query(
                &format!(
                    "SELECT key, value FROM medic_documents WHERE key >= $1 AND key < $2
                     ORDER BY key {order} LIMIT $3"
                ),
                &[&from, &to, &limit],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn delete_documents(&self, from: &str, to: &str) -> Result<usize, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM medic_documents WHERE key >= $1 AND key < $2",
                &[&from, &to],
            )?;
            Ok(n as usize)
        })
    }
}
