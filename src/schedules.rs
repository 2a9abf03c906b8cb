//! The scheduled jobs' runtime state (not persisted): the backup's and the snapshot refreshes'
//! status and the scheduler's pass lock. src/services.rs runs the jobs; the App holds this
//! state. A leaf: it imports neither.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::backup::BackupStatus;

/// Runtime state of the services (not persisted).
#[derive(Debug, Default)]
pub struct ServicesState {
    pub(crate) backup: Mutex<BackupStatus>,
    /// Snapshot refreshes: when each repository's is next due, the last error.
    pub(crate) snapshots: Mutex<SnapshotStatus>,
    /// One scheduler pass at a time.
    pub(crate) schedule_lock: tokio::sync::Mutex<()>,
}

/// The snapshot schedule's state.
#[derive(Debug, Default, Clone)]
pub struct SnapshotStatus {
    pub next_due: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}
