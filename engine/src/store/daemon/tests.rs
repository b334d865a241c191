use super::super::embedded::test_record;
use super::*;
use crate::store::{JournalEntry, JournalEvent, RunRecord, RunStatus};

#[test]
fn an_append_sent_from_borrowed_entries_is_read_as_the_append_it_is() {
    let entries = [
        JournalEntry::now(JournalEvent::RunStarted { pid: 7 }),
        JournalEntry::now(JournalEvent::PhaseStarted {
            phase: crate::executor::Phase::Rollback,
            reason: "a \"quoted\" reason".to_owned(),
        }),
    ];
    let sent = serde_json::to_string(&Request::AppendMany {
        run_id: "01RUN".into(),
        record: None,
        entries: std::borrow::Cow::Borrowed(&entries),
        durable: true,
    })
    .unwrap();
    let wire: AppendWire<'_> = serde_json::from_str(&sent).unwrap();
    assert_eq!(wire.run_id, "01RUN");
    assert!(wire.durable && wire.record.is_none());
    assert_eq!(wire.entries.len(), 2);
    for (raw, entry) in wire.entries.iter().zip(&entries) {
        assert_eq!(raw.get(), serde_json::to_string(entry).unwrap());
        serde_json::from_str::<EntryHead>(raw.get()).unwrap();
    }
    // And as any request, for a daemon that reads it the long way.
    let Request::AppendMany {
        run_id,
        record,
        entries: read,
        durable,
    } = serde_json::from_str(&sent).unwrap()
    else {
        panic!("not read as an append: {sent}");
    };
    assert_eq!((&*run_id, record.is_none(), durable), ("01RUN", true, true));
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&entries).unwrap()
    );
}

/// An append as this medic's client sends it.
fn sent(run_id: &str, record: Option<&RunRecord>) -> String {
    let entries = [JournalEntry::now(JournalEvent::RunStarted { pid: 7 })];
    serde_json::to_string(&Request::AppendMany {
        run_id: run_id.into(),
        record: record.map(|r| Box::new(std::borrow::Cow::Borrowed(r))),
        entries: std::borrow::Cow::Borrowed(&entries),
        durable: false,
    })
    .unwrap()
}

fn json(r: &RunRecord) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn a_record_sent_with_an_append_is_stored_as_written_and_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Sled::open(dir.path(), "test").unwrap();
    let append = |line: &str| append_raw(&sled, serde_json::from_str(line).unwrap());
    let running = test_record("01A", 1, RunStatus::Running);
    let mut ended = test_record("01B", 2, RunStatus::Running);
    // As written, byte for byte: even a field this medic does not know (a newer
    // client's) is kept, where a record read and written out again would lose it.
    let newer = sent("01A", Some(&running)).replacen(r#""v":1,"#, r#""v":1,"later":7,"#, 1);
    append(&newer).unwrap();
    let wire: AppendWire<'_> = serde_json::from_str(&newer).unwrap();
    let written = wire.record.unwrap().get().as_bytes();
    assert!(
        std::str::from_utf8(written)
            .unwrap()
            .contains(r#""later":7"#)
    );
    assert_eq!(sled.record_json("01A").unwrap().as_deref(), Some(written));
    append(&sent("01B", Some(&ended))).unwrap();
    ended.status = RunStatus::Succeeded;
    ended.ended_ms = Some(3);
    append(&sent("01B", Some(&ended))).unwrap();
    append(&sent("01B", None)).unwrap();
    let stored = |id| sled.record(id).unwrap().as_ref().map(json);
    assert_eq!(stored("01A"), Some(json(&running)));
    assert_eq!(stored("01B"), Some(json(&ended)));
    assert_eq!(sled.journal_from("01B", 0, usize::MAX).unwrap().len(), 3);
    // Indexed as running while its record says so: of the two runs whose process is
    // gone, only the one still running is found interrupted.
    assert_eq!(sled.recover().unwrap(), ["01A"]);

    // A record the store could not index is refused, with its whole append.
    let odd = sent("01C", Some(&test_record("01C", 4, RunStatus::Running)))
        .replace(r#""status":"running""#, r#""status":"resting""#);
    let e = append(&odd).unwrap_err().to_string();
    assert!(
        e.contains("a run record the store daemon does not know"),
        "{e}"
    );
    assert!(sled.record("01C").unwrap().is_none());
    assert!(sled.journal_from("01C", 0, usize::MAX).unwrap().is_empty());
}

/// Which of a client's requests, coming `gaps` after their answers, are watched for.
fn watched(w: &mut Watching, gaps: &[Duration]) -> Vec<bool> {
    gaps.iter()
        .map(|&gap| {
            let watch = w.now();
            w.came(gap, watch.then_some(gap < WATCH));
            watch
        })
        .collect()
}

#[test]
fn watches_in_vain_are_spaced_out_until_a_request_comes_soon_again() {
    let (soon, late) = (WATCH / 4, WATCH * 4);
    let mut w = Watching::new(WATCH);
    assert!(watched(&mut w, &[soon; 20]).iter().all(|&w| w));
    // A slow client: 1, 2, 4, then 8 requests unwatched after each watch in vain.
    let slow: Vec<usize> = watched(&mut w, &[late; 40])
        .iter()
        .enumerate()
        .filter_map(|(i, &w)| w.then_some(i))
        .collect();
    assert_eq!(slow, [0, 2, 5, 10, 19, 28, 37]);
    // The first request that comes soon, watched or not, has the next ones watched.
    let back = watched(&mut w, &[soon; 5]);
    assert_eq!(back[1..], [true; 4]);
    // One slow request among quick ones costs one unwatched request, not eight.
    let once = watched(&mut w, &[soon, late, soon, soon, soon]);
    assert_eq!(once, [true, true, false, true, true]);
}
