//! Scheduled backups of stagebot's state (docs/operations.md, "Backups"): every
//! `STAGEBOT_BACKUP_EVERY` the store's consistent export ([`Store::backup`]) is written to
//! `STAGEBOT_BACKUP_DIR` atomically (a temporary file, fsync, rename, fsync of the directory),
//! read back and checked, and backups beyond `STAGEBOT_BACKUP_KEEP` are removed, oldest first.
//! The schedule follows the injected clock, so tests drive it by moving a manual clock.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::store::{Store, StoreError};

/// Where, how often and how many.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// `STAGEBOT_BACKUP_DIR`.
    pub dir: PathBuf,
    /// `STAGEBOT_BACKUP_EVERY` (default 24 h).
    pub every: Duration,
    /// `STAGEBOT_BACKUP_KEEP` (default 7).
    pub keep: usize,
}

impl BackupSettings {
    /// The defaults for a directory: every 24 hours, keep 7.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            every: Duration::from_secs(24 * 3600),
            keep: 7,
        }
    }
}

/// Why a scheduled backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot write the backup in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the backup read back holds {read} entries, {written} were written")]
    Mismatch { written: usize, read: usize },
    #[error("the backup task failed: {0}")]
    Task(String),
}

/// What the schedule knows (for `/readyz` and `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct BackupStatus {
    /// When the last verified backup was written.
    pub last_success: Option<DateTime<Utc>>,
    /// The file it went to.
    pub last_file: Option<PathBuf>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// When the next one is due (unset until the first tick looked at the directory).
    pub next_due: Option<DateTime<Utc>>,
}

const PREFIX: &str = "stagebot-";
const SUFFIX: &str = ".backup.json";
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// The file name of a backup taken at `at`.
pub fn file_name(at: DateTime<Utc>) -> String {
    format!("{PREFIX}{}{SUFFIX}", at.format(STAMP))
}

/// When the backup named `name` was taken; `None` for other files.
pub fn taken_at(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    NaiveDateTime::parse_from_str(stamp, STAMP)
        .ok()
        .map(|t| t.and_utc())
}

/// The backups in `dir`, newest first.
pub fn list(dir: &Path) -> io::Result<Vec<(DateTime<Utc>, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(at) = entry.file_name().to_str().and_then(taken_at) {
            found.push((at, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// Write one backup of `store` taken at `at` into `settings.dir`, verify it, prune beyond
/// `keep`. Blocking (file I/O and fsync): run it on a blocking thread.
pub fn write(
    store: &Store,
    settings: &BackupSettings,
    at: DateTime<Utc>,
) -> Result<PathBuf, BackupError> {
    let dir = &settings.dir;
    let io_err = |source| BackupError::Io {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let name = file_name(at);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = store.backup(&tmp)?;
    let result = (|| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err)?;
        let read = Store::verify_backup(&tmp)?;
        if read.entries != written.entries || read.bytes != written.bytes {
            return Err(BackupError::Mismatch {
                written: written.entries,
                read: read.entries,
            });
        }
        let path = dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(io_err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
        Ok(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let path = result?;
    for (_, old) in list(dir)
        .map_err(io_err)?
        .into_iter()
        .skip(settings.keep.max(1))
    {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(file = %old.display(), error = %e, "cannot remove an old backup");
        }
    }
    Ok(path)
}
