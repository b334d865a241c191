//! Files and directories only this user can read or change.
//!
//! The run store, the approvals a run waits on and the compiled-plugin cache are trusted by
//! Medic: a record it reads back decides what a resume does, an approval file lets a step
//! act, and a cached `.cwasm` is native code. Other local users are assumed hostile, so:
//!
//! - the process creates everything with umask 077 (files 0600, directories 0700, whatever
//!   the user's umask), and gives commands it runs for plugins the user's own umask back;
//! - a data or cache directory owned by another user, or writable by group or others, is
//!   refused, naming it (a directory of ours that others can merely read is tightened);
//! - temporary files are created exclusively and never through a symlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The umask the process started with (restored for commands plugins run).
static STARTED_WITH: AtomicU32 = AtomicU32::new(0o022);

/// Sets the process umask to 077, remembering the user's.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o077) };
    STARTED_WITH.store(old as u32, Ordering::SeqCst);
}

/// The user's own umask, for child processes that create files on the user's behalf.
pub fn user_umask() -> libc::mode_t {
    STARTED_WITH.load(Ordering::SeqCst) as libc::mode_t
}

/// Creates `dir` (0700) if needed and checks that it is ours alone: owned by this user and
/// not writable by group or others. A directory of ours readable by others is tightened
/// to 0700. `what` names the directory in the error ("data directory").
pub fn private_dir(dir: &Path, what: &str) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => format!(
                "the {what} {} is a file, not a directory: name a directory (it is made if missing)",
                dir.display()
            ),
            _ => format!("cannot create the {what} {}: {e}", dir.display()),
        })?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read the {what} {}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() {
        // Followed once to check the real directory: the link itself may be ours.
        let real = std::fs::metadata(dir)
            .map_err(|e| format!("cannot read the {what} {}: {e}", dir.display()))?;
        return check_owned(dir, what, &real);
    }
    check_owned(dir, what, &meta)?;
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the {what} {} private: {e}", dir.display()))?;
    }
    Ok(())
}

fn check_owned(dir: &Path, what: &str, meta: &std::fs::Metadata) -> Result<(), String> {
    // SAFETY: getuid(2) cannot fail.
    let me = unsafe { libc::getuid() };
    if meta.uid() != me {
        return Err(format!(
            "the {what} {} belongs to user {} (this is user {me}): refusing to trust it; use a directory of your own",
            dir.display(),
            meta.uid()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("the {what} {} is not a directory", dir.display()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the {what} {} is writable by {} (mode {:o}): refusing to trust it; run chmod 700 on it",
            dir.display(),
            if meta.mode() & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The login name of user `uid` from the password database (not `$USER`, which anyone can
/// set), or `uid N` when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r(3) writes only into `pwd` and `buf`, both ours and sized as passed;
    // `pw_name` points into `buf`, read before `buf` goes away.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc == 0
            && !found.is_null()
            && !pwd.pw_name.is_null()
            && let Ok(name) = std::ffi::CStr::from_ptr(pwd.pw_name).to_str()
        {
            return name.to_owned();
        }
    }
    format!("uid {uid}")
}

/// The names of the groups this process's user is in (its real group and supplementary
/// ones), from the group database: an environment's `approvers` may name a group.
pub fn my_groups() -> Vec<String> {
    // SAFETY: getgroups(2) with a zero size only counts; then it fills at most `n` entries.
    let gids: Vec<libc::gid_t> = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut gids = vec![0; n.max(0) as usize];
        let got = libc::getgroups(n, gids.as_mut_ptr());
        gids.truncate(got.max(0) as usize);
        gids.push(libc::getgid());
        gids
    };
    let mut names: Vec<String> = gids.into_iter().filter_map(group_name).collect();
    names.sort();
    names.dedup();
    names
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: getgrgid_r(3) writes only into `grp` and `buf`, both ours and sized as passed;
    // `gr_name` points into `buf`, read before `buf` goes away.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc == 0 && !found.is_null() && !grp.gr_name.is_null() {
            return std::ffi::CStr::from_ptr(grp.gr_name)
                .to_str()
                .ok()
                .map(str::to_owned);
        }
    }
    None
}

/// This process's real user, by name.
pub fn me() -> String {
    // SAFETY: getuid(2) cannot fail.
    user_name(unsafe { libc::getuid() })
}

/// The user id of the process at the other end of a Unix socket (SO_PEERCRED).
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`, which is that size.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
}

/// Binds or connects (`at`) to the Unix socket `name` in `dir`, however long the directory's
/// path: a socket's address holds at most 107 bytes, and a data directory under a deep
/// home or CI workspace is longer. Past that, the socket is reached through a handle on the
/// directory (`/proc/self/fd/N/name`), which names the same file.
pub fn at_socket<T>(
    dir: &Path,
    name: &str,
    at: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    // sun_path's size, its closing NUL included.
    const SUN_PATH: usize = 108;
    let path = dir.join(name);
    if path.as_os_str().as_bytes().len() < SUN_PATH {
        return at(&path);
    }
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    at(&Path::new("/proc/self/fd")
        .join(handle.as_raw_fd().to_string())
        .join(name))
}

/// Creates a new file (0600) that must not exist yet, never following a symlink at `path`.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` atomically: a fresh temporary file beside it (created
/// exclusively, 0600), synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = written_beside(path, bytes)?;
    let renamed = std::fs::rename(&tmp, path);
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// Writes `bytes` to `path` only if nothing is there yet, whole or not at all (a temporary
/// file beside it, synced, then linked to `path`, which fails if `path` exists). Returns
/// whether it was written: of two writers racing, exactly one is told it was.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = written_beside(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A fresh temporary file beside `path` (created exclusively, 0600) holding `bytes`, synced.
fn written_beside(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        ulid::Ulid::new()
    ));
    let mut f = create_new(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_in_a_directory_too_long_for_its_address_is_bound_and_reached_there() {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("x".repeat(100));
        std::fs::create_dir(&dir).unwrap();
        // Too long to bind as it is.
        assert!(UnixListener::bind(dir.join("s.sock")).is_err());
        let listener = at_socket(&dir, "s.sock", |at| UnixListener::bind(at)).unwrap();
        assert!(dir.join("s.sock").exists(), "bound in the directory itself");
        let mut client = at_socket(&dir, "s.sock", |at| UnixStream::connect(at)).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut served, _) = listener.accept().unwrap();
        let mut got = [0u8; 2];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // A short path is used as it is.
        let short = at_socket(top.path(), "t.sock", |at| Ok(at.to_owned())).unwrap();
        assert_eq!(short, top.path().join("t.sock"));
    }

    #[test]
    fn a_file_or_a_directory_others_can_write_is_refused_and_one_they_can_read_is_tightened() {
        let top = tempfile::tempdir().unwrap();
        let open = top.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let file = top.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = private_dir(&file, "data directory").unwrap_err();
        assert!(e.contains("is a file, not a directory"), "{e}");
        let e = private_dir(&open, "data directory").unwrap_err();
        assert!(
            e.contains("writable by every user") && e.contains("chmod 700"),
            "{e}"
        );

        let readable = top.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&readable, "data directory").unwrap();
        let mode = std::fs::metadata(&readable).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let fresh = top.path().join("a/b");
        private_dir(&fresh, "cache directory").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn new_files_never_follow_a_planted_symlink() {
        let top = tempfile::tempdir().unwrap();
        let target = top.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let link = top.path().join("planted");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_new(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        write_atomic(&top.path().join("x.json"), b"{}").unwrap();
        let meta = std::fs::metadata(top.path().join("x.json")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}
