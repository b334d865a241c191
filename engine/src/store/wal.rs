//! The embedded store's redo log: every change to sled is written here first, and a change
//! is made durable by one `fdatasync` of this file, never by flushing sled.
//!
//! Why: sled's flush hands its buffers to its own threads and waits for them (a thread
//! switch each way) and writes its page table too: on tmpfs, where the disk costs nothing,
//! a recorded action step took ~140 µs with it and ~45 µs with this log (on this machine's
//! disk the `fdatasync` dominates either way). Here a change is one `pwrite` of a frame and,
//! when durable, one `fdatasync` shared by every thread waiting at that moment (group
//! commit), and changes made together are one frame: all or none survive a crash.
//!
//! sled stays the index that reads go to (the changes to runs and journals since the last
//! checkpoint wait in memory, `embedded::pending`); it is flushed only at a checkpoint (when
//! this log passes [`CHECKPOINT_BYTES`], and when the store closes), after which the log
//! starts over at its beginning, reusing its blocks (so an `fdatasync` in the steady state
//! rewrites data and no file size). Opening the store replays the log, which then goes on
//! after what it replayed: every change is a blind put or remove, so replaying a log over a
//! sled that kept some of it gives the same result.
//!
//! File: a header (`MAGIC`, then the first frame's sequence number, little-endian u64), then
//! frames: length of the body (u32), CRC-32 of sequence number and body (u32), sequence
//! number (u64), body. Replay stops at the first frame that is torn, fails its checksum, or
//! does not carry the next sequence number: frames left from before a checkpoint have
//! smaller ones, so they are never mistaken for new.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

const MAGIC: &[u8; 8] = b"medicwal";
const HEADER: u64 = 16;
const FRAME_HEAD: usize = 16;
/// Past this the log is checkpointed: sled flushed, the log started over. It bounds the
/// replay at an open after a crash (a few ms) and the file's size.
pub(super) const CHECKPOINT_BYTES: u64 = 4 << 20;
/// The log is made longer by this much at a time, written with zeros before frames go
/// there: an `fdatasync` of data written in place is the disk's floor, while one that also
/// grows the file commits the file system's journal too (a recorded step took ~20 µs more
/// here without this). Zeros never read as a frame (no frame has sequence number 0).
const GROW_BYTES: u64 = 1 << 20;

/// Why the log cannot be written: the error itself, once; afterwards every write says the
/// log is broken (after a failed `fdatasync` the kernel may have dropped the pages it could
/// not write, so nothing written since can be trusted to be on disk).
#[derive(Debug)]
pub(super) enum WalError {
    Io(std::io::Error),
    Broken,
}

impl From<std::io::Error> for WalError {
    fn from(e: std::io::Error) -> WalError {
        WalError::Io(e)
    }
}

struct Tail {
    /// Where the next frame goes.
    end: u64,
    next_seq: u64,
    /// How much of the file is written (frames or zeros).
    allocated: u64,
}

#[derive(Default)]
struct Synced {
    /// Every frame up to this sequence number is on disk.
    upto: u64,
    /// A thread is in `fdatasync`; the others wait for it, then one of them goes next.
    syncing: bool,
    /// Threads waiting for it: only they are woken (waking nobody is still a system call,
    /// once per durable write).
    waiting: usize,
}

pub(super) struct Wal {
    file: File,
    tail: Mutex<Tail>,
    /// The last sequence number written (it may not be synced yet).
    written: AtomicU64,
    synced: Mutex<Synced>,
    synced_changed: Condvar,
    /// `synced.upto`, for a thread that watches it without taking the lock.
    synced_upto: AtomicU64,
    broken: AtomicBool,
    /// How long an `fdatasync` of this log takes lately, in ns (a moving average): whether
    /// handing one to another thread is worth the hand-off ([`Wal::flush_time`]).
    flush_ns: AtomicU64,
    /// For tests: flushes wait while this is set ([`Wal::hold_flushes`]).
    #[cfg(test)]
    held: AtomicBool,
    /// Intact frames found past where the replay stopped, until the opener takes them.
    damage: Mutex<Option<Damage>>,
}

/// The log as found at its open stopped replaying at a frame that is torn or damaged, and
/// intact frames follow it: a bad block in the middle of the log, or the frames a power loss
/// kept while it lost an earlier one. What they record is not replayed (a journal with a
/// hole in it would be read as whole), and the log goes on over them: the opener keeps the
/// file as found and says so.
pub(super) struct Damage {
    /// Where the replay stopped.
    pub(super) at: u64,
    /// The intact frames' bodies after it, in order.
    pub(super) later: Vec<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wal {
    /// Opens (creating) the log at `path`; returns it and the bodies of the frames to replay,
    /// in order.
    pub(super) fn open(path: &Path) -> Result<(Wal, Vec<Vec<u8>>), std::io::Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)?;
        let Parsed {
            header,
            first,
            frames,
            end,
        } = parse(&bytes);
        let next_seq = first + frames.len() as u64;
        let later = intact_after(&bytes, end, next_seq);
        let damage = (!later.is_empty()).then(|| Damage {
            at: end,
            later: later.into_iter().map(<[u8]>::to_vec).collect(),
        });
        let wal = Wal {
            file,
            // After the frames to replay, which the log keeps until its next checkpoint.
            tail: Mutex::new(Tail {
                end,
                next_seq,
                allocated: (bytes.len() as u64).max(HEADER),
            }),
            written: AtomicU64::new(next_seq - 1),
            synced: Mutex::new(Synced {
                upto: next_seq - 1,
                syncing: false,
                waiting: 0,
            }),
            synced_changed: Condvar::new(),
            synced_upto: AtomicU64::new(next_seq - 1),
            broken: AtomicBool::new(false),
            flush_ns: AtomicU64::new(0),
            #[cfg(test)]
            held: AtomicBool::new(false),
            damage: Mutex::new(damage),
        };
        if header.is_none() {
            wal.write_header(next_seq)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok((wal, frames.into_iter().map(<[u8]>::to_vec).collect()))
    }

    fn write_header(&self, first: u64) -> Result<(), std::io::Error> {
        let mut head = [0u8; HEADER as usize];
        head[..8].copy_from_slice(MAGIC);
        head[8..].copy_from_slice(&first.to_le_bytes());
        self.file.write_all_at(&head, 0)?;
        self.file.sync_data()
    }

    /// What the open found past where the replay stopped, once (see [`Damage`]).
    pub(super) fn take_damage(&self) -> Option<Damage> {
        lock(&self.damage).take()
    }

    /// Whether a write or sync failed: nothing more is written.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), WalError> {
        if self.is_broken() {
            return Err(WalError::Broken);
        }
        Ok(())
    }

    fn fail(&self, e: std::io::Error) -> WalError {
        self.broken.store(true, Ordering::SeqCst);
        WalError::Io(e)
    }

    /// [`Wal::append_frame`] of a body given as bytes (copied into a frame).
    #[cfg(test)]
    pub(super) fn append(&self, body: &[u8]) -> Result<u64, WalError> {
        let mut frame = Frame::with_capacity(body.len());
        frame.0.extend_from_slice(body);
        self.append_frame(&mut frame)
    }

    /// Writes one frame (not synced); returns its sequence number. Callers write one frame at
    /// a time, in the order they change sled (the store's writer lock). The frame's body was
    /// made in place ([`encode`]) and its head is filled in here, so the body (a fleet's
    /// group of targets is tens of KiB) is not copied again on its way to the file.
    pub(super) fn append_frame(&self, frame: &mut Frame) -> Result<u64, WalError> {
        self.check()?;
        let mut tail = lock(&self.tail);
        let seq = tail.next_seq;
        let (head, body) = frame.0.split_at_mut(FRAME_HEAD);
        head[..4].copy_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        head[4..8].copy_from_slice(&checksum(seq, body).to_le_bytes());
        head[8..].copy_from_slice(&seq.to_le_bytes());
        let frame = &frame.0;
        let needed = tail.end + frame.len() as u64;
        if needed > tail.allocated {
            let to = needed.next_multiple_of(GROW_BYTES);
            // From one static block: a fresh zeroed buffer of a megabyte is a page fault per
            // page at every growth (it was a tenth of a fleet's recording time).
            static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
            let mut at = tail.allocated;
            while at < to {
                let n = (to - at).min(ZEROS.len() as u64);
                self.file
                    .write_all_at(&ZEROS[..n as usize], at)
                    .map_err(|e| self.fail(e))?;
                at += n;
            }
            tail.allocated = to;
        }
        // A frame written in part (a full disk) is torn: replay stops there, and nothing after
        // it was acknowledged because the log is broken from here on.
        self.file
            .write_all_at(frame, tail.end)
            .map_err(|e| self.fail(e))?;
        tail.end += frame.len() as u64;
        tail.next_seq += 1;
        self.written.store(seq, Ordering::SeqCst);
        Ok(seq)
    }

    /// The last sequence number written.
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Whether the log has grown past [`CHECKPOINT_BYTES`].
    pub(super) fn wants_checkpoint(&self) -> bool {
        lock(&self.tail).end > CHECKPOINT_BYTES
    }

    /// Returns once every frame up to `seq` is on disk. One thread syncs at a time, covering
    /// every frame written before it began; the threads that wait meanwhile are covered by it
    /// or by the next one.
    pub(super) fn sync(&self, seq: u64) -> Result<(), WalError> {
        let mut synced = lock(&self.synced);
        loop {
            self.check()?;
            if synced.upto >= seq {
                return Ok(());
            }
            if synced.syncing {
                synced.waiting += 1;
                synced = self
                    .synced_changed
                    .wait(synced)
                    .unwrap_or_else(PoisonError::into_inner);
                synced.waiting -= 1;
                continue;
            }
            synced.syncing = true;
            let target = self.written();
            drop(synced);
            #[cfg(test)]
            while self.held.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let begun = std::time::Instant::now();
            // Woken by the disk, this thread goes on (with the next targets of a fleet)
            // rather than wait out a call thread's time slice.
            let given_way = crate::host::give_way();
            let result = self.file.sync_data();
            drop(given_way);
            self.flushed_in(begun.elapsed());
            synced = lock(&self.synced);
            synced.syncing = false;
            let result = result.map_err(|e| self.fail(e));
            if result.is_ok() {
                synced.upto = synced.upto.max(target);
                self.synced_upto.store(synced.upto, Ordering::SeqCst);
            }
            if synced.waiting > 0 {
                self.synced_changed.notify_all();
            }
            result?;
        }
    }

    fn flushed_in(&self, took: std::time::Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let before = self.flush_ns.load(Ordering::Relaxed);
        // The first one counts whole; then each an eighth, so that one slow flush (the disk
        // busy for a moment) does not change how the next ones are made.
        let now = if before == 0 {
            took
        } else {
            before - before / 8 + took / 8
        };
        self.flush_ns.store(now.max(1), Ordering::Relaxed);
    }

    /// How long a flush of this log takes lately (zero before the first).
    pub(super) fn flush_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.flush_ns.load(Ordering::Relaxed))
    }

    /// For tests: flushes are taken to last `took` (until the next few real ones).
    #[cfg(test)]
    pub(super) fn pretend_flushes_take(&self, took: std::time::Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.flush_ns.store(took, Ordering::Relaxed);
    }

    /// For tests: every flush begun from now on waits until this is called with false (a
    /// disk that stalls).
    #[cfg(test)]
    pub(super) fn hold_flushes(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }

    /// For tests: the disk failed.
    #[cfg(test)]
    pub(super) fn break_now(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Whether every frame up to `seq` is on disk, or the log broke (without a lock).
    pub(super) fn is_synced(&self, seq: u64) -> bool {
        self.synced_upto.load(Ordering::SeqCst) >= seq || self.is_broken()
    }

    /// Makes the whole file durable, whatever this process counts as synced: frames a killed
    /// process wrote may still be only in the page cache when the next one replays them.
    pub(super) fn sync_all(&self) -> Result<(), WalError> {
        self.check()?;
        self.file.sync_data().map_err(|e| self.fail(e))
    }

    /// Starts the log over: the caller made everything in it durable elsewhere (flushed
    /// sled) and writes nothing meanwhile (it holds the store's writer lock).
    pub(super) fn restart(&self) -> Result<(), WalError> {
        self.check()?;
        let mut tail = lock(&self.tail);
        self.write_header(tail.next_seq).map_err(|e| self.fail(e))?;
        tail.end = HEADER;
        let mut synced = lock(&self.synced);
        synced.upto = synced.upto.max(tail.next_seq - 1);
        self.synced_upto.store(synced.upto, Ordering::SeqCst);
        self.synced_changed.notify_all();
        Ok(())
    }
}

/// What a log file holds.
struct Parsed<'a> {
    /// The first frame's sequence number, if the file has a header.
    header: Option<u64>,
    first: u64,
    frames: Vec<&'a [u8]>,
    /// Where the frames end.
    end: u64,
}

fn parse(bytes: &[u8]) -> Parsed<'_> {
    let header = bytes
        .get(..HEADER as usize)
        .filter(|head| &head[..8] == MAGIC)
        .map(|head| u64::from_le_bytes(head[8..16].try_into().unwrap_or_default()));
    match header {
        Some(first) => {
            let (frames, end) = read_frames(bytes, first);
            Parsed {
                header,
                first,
                frames,
                end,
            }
        }
        // New, or cut short before its header was written: nothing was ever acknowledged
        // from a log without a header (its creation is synced before any frame).
        None => Parsed {
            header,
            first: 1,
            frames: Vec::new(),
            end: HEADER,
        },
    }
}

/// The changes a log file's contents would replay, frame by frame (None for a frame that
/// passes its checksum but does not decode), then those of the intact frames found past a
/// damaged one ([`Damage`]); then `bytes` decoded as one frame's body. For
/// the fuzzer: a log left by a crash or a bad disk must never panic the store's open.
pub(super) fn inspect(bytes: &[u8]) -> (Vec<Option<usize>>, Option<usize>) {
    let parsed = parse(bytes);
    let next = parsed.first + parsed.frames.len() as u64;
    let later = intact_after(bytes, parsed.end, next);
    let frames = parsed
        .frames
        .into_iter()
        .chain(later)
        .map(|body| decode(body).map(|c| c.len()))
        .collect();
    (frames, decode(bytes).map(|c| c.len()))
}

fn checksum(seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// The frames after the header that follow on from `first` without a gap, and where they end.
fn read_frames(bytes: &[u8], first: u64) -> (Vec<&[u8]>, u64) {
    let mut frames = Vec::new();
    let mut at = HEADER as usize;
    let mut expect = first;
    while let Some(head) = bytes.get(at..at + FRAME_HEAD) {
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let Some(body) = bytes.get(at + FRAME_HEAD..at + FRAME_HEAD + len) else {
            break;
        };
        if seq != expect || checksum(seq, body) != crc {
            break;
        }
        frames.push(body);
        at += FRAME_HEAD + len;
        expect += 1;
    }
    (frames, at as u64)
}

/// The intact frames past `end`, where the replay stopped, that carry sequence numbers from
/// `expect` on. The log ends cleanly where the replay stopped at zeros (space written
/// beforehand) or at an intact frame left from before the last checkpoint (a smaller
/// sequence number); only a stop anywhere else is looked past, byte by byte.
fn intact_after(bytes: &[u8], end: u64, expect: u64) -> Vec<&[u8]> {
    let frame_at = |at: usize| -> Option<(u64, &[u8])> {
        let head = bytes.get(at..at + FRAME_HEAD)?;
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let body = bytes.get(at + FRAME_HEAD..(at + FRAME_HEAD).checked_add(len)?)?;
        (checksum(seq, body) == crc).then_some((seq, body))
    };
    let end = end as usize;
    let clean = match bytes.get(end..end + FRAME_HEAD) {
        None => true,
        Some(head) if head.iter().all(|&b| b == 0) => true,
        Some(_) => frame_at(end).is_some_and(|(seq, _)| seq < expect),
    };
    let mut found = Vec::new();
    if clean {
        return found;
    }
    let mut next = expect;
    let mut at = end + 1;
    while at + FRAME_HEAD <= bytes.len() {
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap_or_default());
        // A frame carries the next numbers; anything else here is a body's bytes.
        if seq >= next
            && seq - next < 1 << 20
            && let Some((seq, body)) = frame_at(at)
        {
            found.push(body);
            next = seq + 1;
            at += FRAME_HEAD + body.len();
            continue;
        }
        at += 1;
    }
    found
}

/// Where the log of the store in `dir` lives (beside sled's own directory).
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join("journal.wal")
}

/// One change to sled as the log holds it. `tree` names a tree by its index in the store's
/// list; a `value` of None removes the key.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) tree: u8,
    pub(super) key: Vec<u8>,
    pub(super) value: Option<Vec<u8>>,
}

/// Encodes changes as a frame's body, after room for its head: per change, tree (u8), kind (0 remove, 1 put), key
/// length (u32) and key, then for a put value length (u32) and value.
pub(super) fn encode(changes: &[Change]) -> Frame {
    let size: usize = changes
        .iter()
        .map(|c| 10 + c.key.len() + c.value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut frame = Frame::with_capacity(size);
    let out = &mut frame.0;
    for c in changes {
        out.push(c.tree);
        out.push(u8::from(c.value.is_some()));
        put_bytes(out, &c.key);
        if let Some(v) = &c.value {
            put_bytes(out, v);
        }
    }
    frame
}

/// One frame as it goes to the file: room for its head (filled in by [`Wal::append_frame`],
/// which alone knows the sequence number), then its body.
pub(super) struct Frame(Vec<u8>);

impl Frame {
    fn with_capacity(body: usize) -> Frame {
        let mut bytes = Vec::with_capacity(FRAME_HEAD + body);
        bytes.resize(FRAME_HEAD, 0);
        Frame(bytes)
    }

    /// What [`decode`] reads back.
    #[cfg(test)]
    fn body(&self) -> &[u8] {
        &self.0[FRAME_HEAD..]
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes a frame body; None when it is not one `encode` made (a frame passes its checksum,
/// so this means a bug or another program's file, and the store says so).
pub(super) fn decode(mut body: &[u8]) -> Option<Vec<Change>> {
    fn take<'a>(body: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = body.split_at_checked(n)?;
        *body = rest;
        Some(head)
    }
    fn bytes(body: &mut &[u8]) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(take(body, 4)?.try_into().ok()?) as usize;
        take(body, len).map(<[u8]>::to_vec)
    }
    let mut changes = Vec::new();
    while !body.is_empty() {
        let head = take(&mut body, 2)?;
        let key = bytes(&mut body)?;
        let value = match head[1] {
            0 => None,
            1 => Some(bytes(&mut body)?),
            _ => return None,
        };
        changes.push(Change {
            tree: head[0],
            key,
            value,
        });
    }
    Some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tree: u8, key: &str, value: &str) -> Change {
        Change {
            tree,
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn changes_round_trip_and_garbage_is_refused() {
        let changes = vec![
            put(1, "run/1", "{}"),
            Change {
                tree: 3,
                key: b"lock".to_vec(),
                value: None,
            },
            put(0, "", ""),
        ];
        assert_eq!(decode(encode(&changes).body()).unwrap(), changes);
        let frame = encode(&changes);
        let body = frame.body();
        assert!(decode(&body[..body.len() - 1]).is_none());
        assert!(decode(&[1, 7, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn frames_written_are_read_back_and_a_torn_or_flipped_frame_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let (wal, replay) = Wal::open(&path).unwrap();
        assert!(replay.is_empty());
        for i in 0..5u8 {
            let seq = wal.append(&[i; 100]).unwrap();
            wal.sync(seq).unwrap();
        }
        drop(wal);
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());

        // A frame cut short by a crash: the ones before it stay.
        let end = HEADER + 5 * (FRAME_HEAD as u64 + 100);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(end - 10).unwrap();
        let (wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.len(), 4);
        assert!(wal.take_damage().is_none(), "a torn end is no damage");

        // A flipped bit in the second frame's body: only the first is replayed, and the
        // intact frames after it are found (the fifth is still torn).
        f.write_all_at(
            &[0xff],
            HEADER + FRAME_HEAD as u64 + 100 + FRAME_HEAD as u64 + 3,
        )
        .unwrap();
        let (wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay, vec![vec![0u8; 100]]);
        let damage = wal.take_damage().expect("frames after the damage");
        assert_eq!(damage.at, HEADER + FRAME_HEAD as u64 + 100);
        assert_eq!(damage.later, vec![vec![2u8; 100], vec![3u8; 100]]);
        assert!(wal.take_damage().is_none(), "told once");
    }

    #[test]
    fn after_a_restart_the_old_frames_are_never_replayed_and_new_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let (wal, _) = Wal::open(&path).unwrap();
        for i in 0..3u8 {
            wal.append(&[i; 300]).unwrap();
        }
        wal.restart().unwrap();
        // Shorter than the old first frame: old frames stay in the file after it.
        let seq = wal.append(&[9; 10]).unwrap();
        wal.sync(seq).unwrap();
        assert_eq!(seq, 4);
        drop(wal);
        let (wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay, vec![vec![9u8; 10]]);
        // Sequence numbers go on from the replayed ones.
        assert_eq!(wal.written(), 4);
        assert_eq!(wal.append(b"next").unwrap(), 5);
    }

    #[test]
    fn the_fuzzers_seeds_read_as_their_names_say() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/redo_log/");
        let read = |name: &str| std::fs::read(format!("{seeds}{name}")).unwrap();
        assert_eq!(inspect(&read("two-frames.wal")).0, [Some(2), Some(1)]);
        assert_eq!(inspect(&read("body.bin")).1, Some(2));
        assert!(inspect(&read("stale-after-restart.wal")).0.is_empty());
    }

    #[test]
    fn threads_syncing_at_once_are_all_covered() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(&path(dir.path())).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let wal = &wal;
                s.spawn(move || {
                    for i in 0..20u8 {
                        let seq = wal.append(&[t, i]).unwrap();
                        wal.sync(seq).unwrap();
                        assert!(lock(&wal.synced).upto >= seq);
                    }
                });
            }
        });
        drop(wal);
        let (_, replay) = Wal::open(&path(dir.path())).unwrap();
        assert_eq!(replay.len(), 160);
    }
}
