//! What the redo log holds for the two trees every step writes (`runs`, `events`), kept in
//! memory until the log's next checkpoint instead of in sled.
//!
//! Why: sled's insert (its node copies, splits and own log) was half of a recorded step's
//! CPU, and a run's record is written again at nearly every step. Here a change is a map
//! insert; at a checkpoint ([`Pending::settle`]) each record goes to sled once, and the
//! journal chunks a run appended since the last checkpoint go as a few chunks of up to
//! [`CHUNK_BYTES`] (entries appended together are already one chunk, keyed by the last
//! one's sequence number, see `Sled::append_all_to`: consecutive chunks of a journal joined
//! read the same). Measured with these changes not applied at all, the upper bound of this:
//! a recorded action step on tmpfs ~110 -> ~73 µs.
//!
//! Nothing changes for a crash: every change is in the redo log first, and replay puts them
//! back here. Reads of those trees see these changes over sled's ([`merge`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use sled::IVec;

use super::super::wal::Change;

/// A chunk of a journal made at a checkpoint from chunks appended since the last one grows
/// to about this much. sled writes a node bigger than a quarter of its segment (128 KiB) as
/// a blob file of its own, made at every change to it, and a leaf holds up to 17 keys: with
/// 16 KiB chunks every events leaf was a new file at each checkpoint, which also hung
/// sled's last flush where no file can be made (a data directory removed, a full disk).
/// Small, a read of a journal's newest entries (the web UI following a run) also decodes
/// little more than it asked for.
const CHUNK_BYTES: usize = 6 << 10;

/// The changes, by key: `None` is a removal.
type Changes = BTreeMap<IVec, Option<IVec>>;

/// Which of the pending trees a change is to.
#[derive(Clone, Copy)]
pub(super) enum Kept {
    Runs,
    Events,
}

pub(super) struct Pending {
    runs: sled::Tree,
    events: sled::Tree,
    /// `runs`' changes, then `events'`. A reader copies what it needs of them before it reads
    /// sled, and [`Pending::settle`] empties them only after sled has them (under this
    /// lock): a read sees every change either here or in sled.
    changes: Mutex<[Changes; 2]>,
}

impl Pending {
    pub(super) fn new(runs: sled::Tree, events: sled::Tree) -> Pending {
        Pending {
            runs,
            events,
            changes: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, [Changes; 2]> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `changes` made to its trees; returns the others, for sled.
    pub(super) fn keep(
        &self,
        changes: Vec<Change>,
        kept: impl Fn(u8) -> Option<Kept>,
    ) -> Vec<Change> {
        let mut others = Vec::new();
        let mut held = self.lock();
        for c in changes {
            match kept(c.tree) {
                Some(k) => {
                    held[k as usize].insert(IVec::from(c.key), c.value.map(IVec::from));
                }
                None => others.push(c),
            }
        }
        others
    }

    /// The change to `key`, if there is one (`Some(None)`: removed).
    pub(super) fn get(&self, tree: Kept, key: &[u8]) -> Option<Option<IVec>> {
        self.lock()[tree as usize].get(key).cloned()
    }

    /// The changes to keys in `range`, in key order.
    pub(super) fn range(
        &self,
        tree: Kept,
        range: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> Vec<(IVec, Option<IVec>)> {
        self.lock()[tree as usize]
            .range::<[u8], _>(range)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Makes sled hold every change kept here, then forgets them. Called at a checkpoint,
    /// with the store's writer lock held, before sled is flushed.
    pub(super) fn settle(&self) -> sled::Result<()> {
        let mut held = self.lock();
        let [runs, events] = &mut *held;
        for (k, v) in runs.iter() {
            match v {
                Some(v) => self.runs.insert(k, v)?,
                None => self.runs.remove(k)?,
            };
        }
        for (k, v) in joined(events) {
            match v {
                Some(v) => self.events.insert(k, v)?,
                None => self.events.remove(k)?,
            };
        }
        runs.clear();
        events.clear();
        Ok(())
    }
}

/// The journal's part of the changes, with consecutive chunks of one journal joined into one
/// of up to about [`CHUNK_BYTES`], keyed by its last: a journal is appended in order, so
/// one's chunks kept here follow each other and all come after its chunks in sled.
fn joined(events: &Changes) -> Vec<(IVec, Option<IVec>)> {
    let mut out: Vec<(IVec, Option<IVec>)> = Vec::new();
    // The chunks being joined: their journal (the key less its sequence number), the last
    // one's key, and the entries as the inside of a JSON array.
    let mut open: Option<(Vec<u8>, IVec, Vec<u8>)> = None;
    let close = |open: &mut Option<(Vec<u8>, IVec, Vec<u8>)>,
                 out: &mut Vec<(IVec, Option<IVec>)>| {
        if let Some((_, key, mut inner)) = open.take() {
            inner.push(b']');
            out.push((key, Some(IVec::from(inner))));
        }
    };
    for (k, v) in events {
        let Some(v) = v else {
            close(&mut open, &mut out);
            out.push((k.clone(), None));
            continue;
        };
        let journal = &k[..k.len().saturating_sub(4)];
        let entries: &[u8] = match v.first() {
            Some(b'[') => &v[1..v.len().saturating_sub(1)],
            _ => v,
        };
        match &mut open {
            Some((j, key, inner)) if j == journal && inner.len() + entries.len() < CHUNK_BYTES => {
                inner.push(b',');
                inner.extend_from_slice(entries);
                *key = k.clone();
            }
            _ => {
                close(&mut open, &mut out);
                let mut inner = Vec::with_capacity(CHUNK_BYTES.min(entries.len() * 4) + 2);
                inner.push(b'[');
                inner.extend_from_slice(entries);
                open = Some((journal.to_vec(), k.clone(), inner));
            }
        }
    }
    close(&mut open, &mut out);
    out
}

/// The bounds of the keys that start with `prefix`.
pub(super) fn prefixed(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// sled's entries (`sled`, in key order, or reversed when `rev`) with `changes` (the same
/// keys' changes, in the same order) made to them.
pub(super) struct Merge<I: Iterator> {
    sled: std::iter::Peekable<I>,
    changes: std::iter::Peekable<std::vec::IntoIter<(IVec, Option<IVec>)>>,
    rev: bool,
}

pub(super) fn merge<I>(sled: I, changes: Vec<(IVec, Option<IVec>)>, rev: bool) -> Merge<I>
where
    I: Iterator<Item = sled::Result<(IVec, IVec)>>,
{
    let mut changes = changes;
    if rev {
        changes.reverse();
    }
    Merge {
        sled: sled.peekable(),
        changes: changes.into_iter().peekable(),
        rev,
    }
}

impl<I> Iterator for Merge<I>
where
    I: Iterator<Item = sled::Result<(IVec, IVec)>>,
{
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.sled.peek(), self.changes.peek()) {
                (Some(Err(_)), _) => return self.sled.next(),
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((a, _))), Some((b, _))) => {
                    let o = a.cmp(b);
                    if self.rev { o.reverse() } else { o }
                }
            };
            match order {
                std::cmp::Ordering::Less => return self.sled.next(),
                std::cmp::Ordering::Equal => {
                    // Changed since: the change is what is there.
                    self.sled.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            let (k, v) = self.changes.next()?;
            if let Some(v) = v {
                return Some(Ok((k, v)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::backend::Runs as _;
    use super::super::super::{JournalEntry, ListFilter, RunRecord, RunStatus};
    use super::super::{Sled, test_keys as keys, test_kv as kv, test_record as record};
    use super::*;

    /// What a write past the log's checkpoint size does.
    fn checkpoint(s: &Sled) {
        let _one_at_a_time = s.writing.lock().unwrap();
        s.checkpoint().unwrap();
    }

    fn expected(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("k{i}")).collect()
    }

    #[test]
    fn a_journal_reads_the_same_across_checkpoints_and_its_chunks_are_joined() {
        let dir = tempfile::tempdir().unwrap();
        // Three appends, a checkpoint, three more (one of two entries), and another run's
        // between them.
        let s = appended(&dir, 3);
        s.append_entries("other", None, &[kv(0, 10)], false)
            .unwrap();
        checkpoint(&s);
        s.append_entries("r", None, &[kv(3, 10)], false).unwrap();
        s.append_entries("r", None, &[kv(4, 10), kv(5, 10)], false)
            .unwrap();
        for from in 0..8 {
            assert_eq!(keys(&s, "r", from), expected(from, 6), "from {from}");
        }
        assert_eq!(keys(&s, "other", 0), expected(0, 1));
        checkpoint(&s);
        for from in 0..8 {
            assert_eq!(keys(&s, "r", from), expected(from, 6), "from {from}");
        }
        // In sled: one chunk a run a checkpoint, keyed by its last entry.
        let stored: Vec<(Vec<u8>, usize)> = s
            .events
            .iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                let n = serde_json::from_slice::<Vec<serde_json::Value>>(&v)
                    .unwrap()
                    .len();
                (k.to_vec(), n)
            })
            .collect();
        let key = |run: &str, seq: u32| super::super::Sled::event_key(run, seq);
        assert_eq!(
            stored,
            [(key("other", 0), 1), (key("r", 2), 3), (key("r", 5), 3)]
        );
        assert_eq!(s.append_entries("r", None, &[kv(6, 10)], false).unwrap(), 6);
    }

    /// A store with run `r`'s entries `0..n`, each appended alone.
    fn appended(dir: &tempfile::TempDir, n: usize) -> Sled {
        let s = Sled::open(dir.path(), "test").unwrap();
        for i in 0..n {
            s.append_entries("r", None, &[kv(i, 10)], false).unwrap();
        }
        s
    }

    #[test]
    fn runs_half_in_sled_half_in_memory_list_page_and_prune_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path(), "test").unwrap();
        let ids = |rs: Vec<RunRecord>| -> Vec<(String, RunStatus)> {
            rs.into_iter().map(|r| (r.run_id, r.status)).collect()
        };
        let (ok, failed) = (RunStatus::Succeeded, RunStatus::Failed);
        s.append_entries("01a", Some(&record("01a", 1, ok)), &[kv(0, 10)], false)
            .unwrap();
        s.append_entries("01b", Some(&record("01b", 2, ok)), &[kv(0, 10)], false)
            .unwrap();
        checkpoint(&s);
        // Since the checkpoint: a new run, and one in sled changed and grown.
        s.append_entries("01c", Some(&record("01c", 3, ok)), &[kv(0, 10)], false)
            .unwrap();
        s.append_entries("01b", Some(&record("01b", 2, failed)), &[kv(1, 10)], false)
            .unwrap();
        let all = ListFilter::default();
        let newest_first = [
            ("01c".to_owned(), ok),
            ("01b".to_owned(), failed),
            ("01a".to_owned(), ok),
        ];
        assert_eq!(ids(s.list(&all, 10).unwrap()), newest_first);
        let older = ListFilter {
            before: Some("01c".into()),
            ..ListFilter::default()
        };
        assert_eq!(ids(s.list(&older, 10).unwrap()), newest_first[1..]);
        assert_eq!(ids(s.by_prefix("01b", 10).unwrap()), newest_first[1..2]);
        assert_eq!(keys(&s, "01b", 0), expected(0, 2));
        // Pruned whole: its record and journal, in sled and in memory alike.
        assert_eq!(s.prune(3).unwrap(), 2);
        assert_eq!(ids(s.list(&all, 10).unwrap()), newest_first[..1]);
        assert!(s.journal_from("01b", 0, usize::MAX).unwrap().is_empty());
        checkpoint(&s);
        let left: Vec<Vec<u8>> = s.runs.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(left, [b"01c".to_vec()]);
        assert!(
            s.events
                .iter()
                .keys()
                .all(|k| k.unwrap().starts_with(b"01c/"))
        );
    }

    #[test]
    fn a_read_meeting_chunks_joined_meanwhile_returns_each_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = appended(&dir, 3);
        // What a read sees when a checkpoint ran after it copied the changes kept here
        // (entries 0 to 2) and the journal grew meanwhile: sled holds them joined with the
        // entry appended since.
        let joined: Vec<JournalEntry> = (0..4).map(|i| kv(i, 10)).collect();
        s.events
            .insert(
                super::super::Sled::event_key("r", 3),
                serde_json::to_vec(&joined).unwrap(),
            )
            .unwrap();
        for from in 0..5 {
            assert_eq!(keys(&s, "r", from), expected(from, 4), "from {from}");
        }
    }

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn key(run: &str, seq: u32) -> IVec {
        let mut k = run.as_bytes().to_vec();
        k.push(b'/');
        k.extend_from_slice(&seq.to_be_bytes());
        IVec::from(k)
    }

    #[test]
    fn a_merge_shows_the_changes_over_sled_both_ways() {
        let sled = vec![
            Ok((iv("a"), iv("1"))),
            Ok((iv("b"), iv("2"))),
            Ok((iv("d"), iv("4"))),
        ];
        let changes = vec![
            (iv("b"), None),
            (iv("c"), Some(iv("3"))),
            (iv("d"), Some(iv("44"))),
            (iv("e"), Some(iv("5"))),
        ];
        let seen = |rev: bool| {
            let mut s = sled.clone();
            if rev {
                s.reverse();
            }
            merge(s.into_iter(), changes.clone(), rev)
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&k),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seen(false), ["a=1", "c=3", "d=44", "e=5"]);
        assert_eq!(seen(true), ["e=5", "d=44", "c=3", "a=1"]);
    }

    #[test]
    fn chunks_of_one_journal_are_joined_in_order_and_others_kept_apart() {
        let mut events = Changes::new();
        events.insert(key("r1", 0), Some(iv(r#"{"n":0}"#)));
        events.insert(key("r1", 2), Some(iv(r#"[{"n":1},{"n":2}]"#)));
        events.insert(key("r1", 3), Some(iv(r#"{"n":3}"#)));
        events.insert(key("r2", 7), Some(iv(r#"{"m":7}"#)));
        events.insert(key("r3", 1), None);
        let out = joined(&events);
        let shown: Vec<_> = out
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    key("r1", 3),
                    Some(r#"[{"n":0},{"n":1},{"n":2},{"n":3}]"#.to_owned())
                ),
                (key("r2", 7), Some(r#"[{"m":7}]"#.to_owned())),
                (key("r3", 1), None),
            ]
        );
    }

    #[test]
    fn a_joined_chunk_stops_growing_at_its_size() {
        let mut events = Changes::new();
        let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(CHUNK_BYTES / 3));
        for seq in 0..7 {
            events.insert(key("r", seq), Some(IVec::from(big.as_bytes())));
        }
        let out = joined(&events);
        assert!(out.len() >= 3, "{} chunks", out.len());
        let mut count = 0;
        for (_, v) in &out {
            let v: Vec<serde_json::Value> = serde_json::from_slice(v.as_ref().unwrap()).unwrap();
            count += v.len();
        }
        assert_eq!(count, 7);
        assert_eq!(out.last().unwrap().0, key("r", 6));
    }

    #[test]
    fn a_prefix_ends_past_its_last_byte() {
        assert_eq!(
            prefixed(b"ab/"),
            (
                Bound::Included(b"ab/".to_vec()),
                Bound::Excluded(b"ab0".to_vec())
            )
        );
        assert_eq!(
            prefixed(&[1, 255]),
            (Bound::Included(vec![1, 255]), Bound::Excluded(vec![2]))
        );
        assert_eq!(
            prefixed(&[255]),
            (Bound::Included(vec![255]), Bound::Unbounded)
        );
    }
}
