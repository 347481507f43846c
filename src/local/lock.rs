//! Lock files: files that stay and are flock'ed, for the local tier (trim, live owners) and
//! for the remote tier's fetches across processes sharing a cache dir.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Opens (creating) a lock file, owner-only like the cache dir: lock names can be ActionIDs.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// An exclusive flock on a lock file, released on drop (the file stays).
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    pub(crate) fn acquire(path: PathBuf) -> io::Result<FileLock> {
        let file = Self::open_in_dir(&path)?;
        file.lock()?;
        Ok(FileLock { file })
    }

    /// `None` while another process holds it.
    pub(crate) fn try_acquire(path: PathBuf) -> io::Result<Option<FileLock>> {
        let file = Self::open_in_dir(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// As [`open`], creating its directory (owner-only) if needed.
    fn open_in_dir(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)?;
        }
        open(path)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
