//! Reading files named by the user (runbooks, drill files, secrets `from_file`, plugins):
//! regular files only, and bounded. `medic validate /dev/zero` or a secret read from a FIFO
//! would otherwise read forever while memory grows.

use std::io::{self, Read};
use std::path::Path;

/// The largest runbook or drill file read (a 10,000-step runbook is about 1 MiB).
pub const MAX_RUNBOOK_BYTES: u64 = 16 << 20;
/// The largest file a parameter's value is read from.
pub const MAX_PARAM_FILE_BYTES: u64 = 1 << 20;
/// The largest plugin file read.
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// The bytes of `path`, if it is a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or directory): only files are read",
        ));
    }
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "larger than {}: not read",
            crate::host::limits::format_bytes(limit)
        ),
    )
}

/// Like [`read_bounded`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The `*.toml` files of `dir`, in name order.
pub fn toml_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_huge_files_are_refused_at_once() {
        let e = read_text(Path::new("/dev/zero"), MAX_RUNBOOK_BYTES).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening a FIFO for reading blocks until a writer comes: one does, and is refused.
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || drop(std::fs::OpenOptions::new().write(true).open(fifo))
        });
        let e = read_text(&fifo, MAX_RUNBOOK_BYTES).unwrap_err();
        writer.join().unwrap();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap();
        let e = read_text(&big, 1024).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(read_text(&big, 4096).unwrap().len(), 2048);
    }
}
