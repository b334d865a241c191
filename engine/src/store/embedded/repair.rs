//! Opening sled when a crash or a full disk left it a file it cannot read.

use std::path::{Path, PathBuf};

use super::super::now_ms;
use super::super::wal::{self, Damage};

/// Opens sled in `dir/db`, repairing what sled 0.34 cannot: a snapshot it was writing when
/// its process was killed or the disk filled (`snap.*.generating`, never renamed into place)
/// is taken for the newest snapshot at the next open, fails its checksum, and the store
/// would never open again ("Read corrupted data"). Such a file is never complete by
/// construction (sled renames it once synced), so it is set aside in `dir/aside/` and the
/// open tried again; the repair is returned, to be reported. sled takes its file lock before it
/// reads snapshots, so a corruption error means no other process held the store; openers
/// that hit it repair one at a time (`dir/repair.lock`).
/// The most sled's page cache holds, in bytes.
const CACHE: u64 = 64 << 20;

pub(super) fn open_repairing(dir: &Path) -> sled::Result<(sled::Db, Option<String>)> {
    // sled's own periodic flush is off: the redo log makes changes durable, and sled is
    // flushed at its checkpoints. Its page cache is capped well below sled's default (1 GiB):
    // a long-lived `medic serve` writes every run through it, and reads are of recent runs.
    let open = || {
        sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(None)
            .cache_capacity(CACHE)
            .open()
    };
    let first = match open() {
        Err(e @ sled::Error::Corruption { .. }) => e,
        other => return other.map(|db| (db, None)),
    };
    let Ok(lock) = std::fs::File::create(dir.join("repair.lock")) else {
        return Err(first);
    };
    if lock.lock().is_err() {
        return Err(first);
    }
    // Another process may have repaired it while this one waited for the lock.
    match open() {
        Err(sled::Error::Corruption { .. }) => {}
        other => return other.map(|db| (db, None)),
    }
    let unfinished: Vec<PathBuf> = std::fs::read_dir(dir.join("db"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
                })
                .collect()
        })
        .unwrap_or_default();
    if unfinished.is_empty() {
        return Err(first);
    }
    let aside = dir.join("aside").join(now_ms().to_string());
    if std::fs::create_dir_all(&aside).is_err() {
        return Err(first);
    }
    let mut moved = Vec::new();
    for path in &unfinished {
        let name = path.file_name().unwrap_or_default();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if std::fs::rename(path, aside.join(name)).is_err() {
            return Err(first);
        }
        moved.push(format!("{} ({size} bytes)", name.to_string_lossy()));
    }
    let db = open()?;
    let notice = format!(
        "repaired the run store in {}: an unfinished snapshot left by a crash or a full disk ({}) kept it from opening; set it aside in {} and opened the store from its log (a snapshot only summarizes the log: nothing recorded is lost)",
        dir.display(),
        moved.join(", "),
        aside.display()
    );
    Ok((db, Some(notice)))
}

/// `repaired`, and what [`keep_damaged_log`] says if the log `wal` was found damaged; an
/// error when the damaged log cannot be kept (nothing may write over it then).
pub(super) fn with_damage(
    dir: &Path,
    shown: &str,
    wal: &wal::Wal,
    repaired: Option<String>,
    runs_tree: u8,
) -> Result<Option<String>, super::super::StoreError> {
    let Some(damage) = wal.take_damage() else {
        return Ok(repaired);
    };
    let notice = keep_damaged_log(dir, &wal::path(dir), &damage, runs_tree).map_err(|e| {
        super::super::StoreError::Log {
            dir: shown.to_owned(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "its redo log is damaged, and cannot be kept aside before it is written over: {e}"
                ),
            ),
        }
    })?;
    Ok(Some(match repaired {
        Some(r) => format!("{r}; {notice}"),
        None => notice,
    }))
}

/// Keeps the redo log as found aside (`dir/aside/MS/journal.wal`) when intact frames follow
/// where its replay stopped ([`Damage`]): the log goes on over them from there. Returns what
/// to tell the user: where the replay stopped, which runs the frames past it wrote to, and
/// where the log is kept. The copy is synced before anything writes to the log; without it
/// the store does not open.
fn keep_damaged_log(
    dir: &Path,
    log: &Path,
    damage: &Damage,
    runs_tree: u8,
) -> std::io::Result<String> {
    let aside = dir.join("aside").join(now_ms().to_string());
    std::fs::create_dir_all(&aside)?;
    let kept = aside.join(log.file_name().unwrap_or_default());
    std::fs::copy(log, &kept)?;
    std::fs::File::open(&kept)?.sync_all()?;
    std::fs::File::open(&aside)?.sync_all()?;
    let mut runs: Vec<String> = damage
        .later
        .iter()
        .filter_map(|body| wal::decode(body))
        .flatten()
        .filter(|c| c.tree == runs_tree)
        .map(|c| String::from_utf8_lossy(&c.key).into_owned())
        .collect();
    runs.sort();
    runs.dedup();
    let named = match runs.len() {
        0 => String::new(),
        1 => format!(", which wrote to run {}", runs[0]),
        _ => format!(", which wrote to runs {}", runs.join(", ")),
    };
    Ok(format!(
        "the run store's redo log in {} stops at a damaged or torn frame (byte {}), and {} intact frame{} follow it{named}: they were not replayed, so what they recorded is missing (a run that ended among them shows as interrupted: check what it did before rolling it back or resuming it); the log as found is kept in {}",
        dir.display(),
        damage.at,
        damage.later.len(),
        if damage.later.len() == 1 { "" } else { "s" },
        kept.display()
    ))
}
