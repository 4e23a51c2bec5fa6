//! A request body held on disk once it is too large to hold in memory, and read back as one
//! mapped [`Bytes`], as nginx keeps a body past `client_body_buffer_size` in a temporary file.
//!
//! The gateway reads an APPEND whole before any worker sees it. Held in memory, a few slow
//! clients could pin the memory every tenant shares; held here, it costs disk, and what the
//! walk and the send read back is page cache the kernel may evict and read again.
//!
//! The file never has a name that outlives its creation (`O_TMPFILE` where the file system
//! supports it, else removed as soon as it is made): nothing is left behind by a crash, and no
//! other process can open it by path. It is written only through [`Spill`], and never after
//! [`Spill::finish`] maps it.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::Bytes;
use memmap2::{Advice, Mmap};

/// A body being written to disk.
#[derive(Debug)]
pub struct Spill {
    file: File,
    len: u64,
}

impl Spill {
    /// A new, empty, nameless file in `dir`.
    ///
    /// # Errors
    /// `dir` is missing, not writable, or full.
    pub fn new_in(dir: &Path) -> io::Result<Spill> {
        Ok(Spill {
            file: tempfile::tempfile_in(dir)?,
            len: 0,
        })
    }

    /// Appends `data`.
    ///
    /// # Errors
    /// The write failed (a full disk: `ENOSPC`); the body is then unusable.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything written, mapped read-only. `keep` (say, the body's place under a cap) is
    /// dropped with the last clone of the bytes, when the file's disk space is freed too.
    ///
    /// # Errors
    /// Mapping failed (address space or the kernel's map count).
    pub fn finish<K: Send + 'static>(self, keep: K) -> io::Result<Bytes> {
        if self.len == 0 {
            return Ok(Bytes::new());
        }
        // SAFETY: a mapped file changed or cut short by someone else is undefined behaviour
        // (or SIGBUS). This one has no name any other process can open, it is written only
        // through `self.file`, which ends here, and its length is what was written. What is
        // left is a process of the same user writing through `/proc/<gateway>/fd`, which could
        // as well write the gateway's memory; workers, which run as that user, are kept out of
        // `/proc` by their Landlock rules.
        let map = unsafe { Mmap::map(&self.file)? };
        // The walk reads it once from the start, and the send once more.
        let _ = map.advise(Advice::Sequential);
        Ok(Bytes::from_owner(Mapped { map, _keep: keep }))
    }
}

/// The mapping, and what is released with it.
struct Mapped<K> {
    map: Mmap,
    _keep: K,
}

impl<K> AsRef<[u8]> for Mapped<K> {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

/// Bytes an unprivileged process may still write below `dir`.
///
/// # Errors
/// `dir` cannot be queried (missing, or not reachable).
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    let path = c_path(dir)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is written by the call before it is read.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // The field widths differ between C libraries.
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether `dir` is on a file system kept in memory (tmpfs, ramfs), where a body "on disk"
/// takes memory all the same.
///
/// # Errors
/// `dir` cannot be queried.
pub fn in_memory(dir: &Path) -> io::Result<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let path = c_path(dir)?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: as in `available_bytes`.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // The field's type differs between C libraries.
    let kind = stat.f_type as i64;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

fn c_path(dir: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn what_was_written_reads_back_whole_and_keep_goes_with_the_last_clone() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new_in(dir.path()).unwrap();
        let pieces: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 10_007]).collect();
        for piece in &pieces {
            spill.write(piece).unwrap();
        }
        assert_eq!(spill.len(), 500_350);
        let dropped = Arc::new(AtomicBool::new(false));
        let bytes = spill.finish(Flag(dropped.clone())).unwrap();
        assert_eq!(bytes, pieces.concat());
        // Nameless: the folder stays empty while the body is held.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let tail = bytes.slice(400_000..);
        drop(bytes);
        assert!(!dropped.load(Ordering::SeqCst));
        assert_eq!(tail[0], 39);
        drop(tail);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn an_empty_spill_is_empty_bytes_and_a_missing_folder_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new_in(dir.path()).unwrap();
        assert!(spill.is_empty());
        assert!(spill.finish(()).unwrap().is_empty());
        assert!(Spill::new_in(&dir.path().join("missing")).is_err());
        assert!(available_bytes(&dir.path().join("missing")).is_err());
        assert!(available_bytes(dir.path()).unwrap() > 0);
        assert!(in_memory(&dir.path().join("missing")).is_err());
        // /dev/shm is tmpfs wherever it exists; /proc never is.
        if Path::new("/dev/shm").is_dir() {
            assert!(in_memory(Path::new("/dev/shm")).unwrap());
        }
        assert!(!in_memory(Path::new("/proc")).unwrap());
    }
}
