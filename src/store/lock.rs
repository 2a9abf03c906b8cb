//! One process at a time on a data dir's store: an exclusive lock on `<data dir>/store.lock`,
//! held by an open [`super::Store`] for its lifetime and by a store-file rotation for all of its
//! steps. sled locks its own files too, but a rotation lets go of sled's lock before it swaps
//! the directories; without this lock another process could open (or create) a store in that
//! window and lose what it writes (found by review; `tests` below).

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Result, StoreError};

const LOCK_FILE: &str = "store.lock";

/// The held lock; released when dropped (the last clone of a `Store`).
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock of the data dir `dir`, waiting up to `wait` for another holder. When it
    /// stays taken the error is the one sled gives for its own lock, so callers tell "another
    /// stagebot runs" the same way ([`super::Store::is_locked`]).
    pub(super) fn acquire(dir: &Path, wait: Duration) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                        format!(
                            "could not acquire lock on {}: another stagebot process holds this store",
                            path.display()
                        ),
                    ))));
                }
                Err(TryLockError::Error(e)) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        match DirLock::acquire(dir.path(), Duration::from_millis(50)) {
            Err(StoreError::Sled(e)) => assert!(super::super::Store::is_locked(&e), "{e}"),
            other => panic!("a second holder: {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
