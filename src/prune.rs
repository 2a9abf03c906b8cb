//! Disk bounded by the retention (issue 13): what the periodic loop prunes besides deliveries
//! (`serve::prune`), every `STAGEBOT_RECONCILE_INTERVAL`, with `STAGEBOT_DELIVERY_RETENTION`:
//!
//! - archived (destroyed) environments archived before the cutoff: their records, releases
//!   and deploy attempts (`Store::prune_archive`) and their release logs;
//! - release logs of live environments older than the cutoff, except those the environment
//!   page and reports point at (its live release, its newest and the one being written);
//! - log directories of environments stagebot no longer knows of, untouched since the cutoff;
//! - the local provider's checkouts of environments that are not live and its git caches of
//!   repositories without a live environment, unused since the cutoff
//!   (`provider::local::LocalProvider::prune_dirs`).
//!
//! Nothing a live environment uses is removed; the archive keeps what it still shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::dirs::files;
use crate::provider::Provider;
use crate::store::StoreError;
use crate::types::EnvId;

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskPruned {
    /// Archived environments forgotten (records, releases, attempts, logs).
    pub environments: usize,
    /// Release log files removed (of live environments and unknown ones).
    pub logs: usize,
    /// Checkouts of environments no longer live.
    pub env_dirs: usize,
    /// Git caches of repositories without live environments.
    pub repo_caches: usize,
}

impl DiskPruned {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Prune what was kept on disk for longer than `cutoff` allows (see the module docs).
pub async fn prune_disk(app: &App, cutoff: DateTime<Utc>) -> Result<DiskPruned, StoreError> {
    let mut out = DiskPruned::default();
    let gone = app.store().prune_archive(cutoff)?;
    out.environments = gone.len();
    // What the log pass keeps per live environment: the live release's log, the newest and
    // the next (being written).
    let mut keep: BTreeMap<EnvId, BTreeSet<u32>> = BTreeMap::new();
    let live = app.store().envs()?;
    for e in &live {
        let mut ns: BTreeSet<u32> = [e.releases(), e.releases() + 1].into();
        ns.extend(e.current_release());
        keep.insert(e.id.clone(), ns);
    }
    let archived = app.store().archived_ids()?;
    let logs = app.settings().data_dir.join("logs");
    let cutoff_time = SystemTime::from(cutoff);
    out.logs = tokio::task::spawn_blocking(move || {
        prune_logs(&logs, &gone, &keep, &archived, cutoff_time)
    })
    .await
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
    if let Provider::Local(p) = app.provider() {
        let live_ids: BTreeSet<EnvId> = live.into_iter().map(|e| e.id).collect();
        let dirs = p.prune_dirs(&live_ids, cutoff_time).await;
        out.env_dirs = dirs.env_dirs;
        out.repo_caches = dirs.repo_caches;
    }
    Ok(out)
}

/// The log pass over `logs/<owner>/<name>/<slug>/<n>.log`; returns the files removed.
fn prune_logs(
    logs: &Path,
    gone: &[EnvId],
    keep: &BTreeMap<EnvId, BTreeSet<u32>>,
    archived: &BTreeSet<EnvId>,
    cutoff: SystemTime,
) -> usize {
    let dir_of = |id: &EnvId| {
        logs.join(id.repo.owner())
            .join(id.repo.name())
            .join(id.slug.as_str())
    };
    let old = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff)
    };
    let mut removed = 0;
    for id in gone {
        // An environment of the same id made live again since (a PR reopened just now) keeps
        // its logs: only a directory whose every file is older than the cutoff goes.
        let dir = dir_of(id);
        if keep.contains_key(id) || !files(&dir).iter().all(|(_, p)| old(p)) {
            continue;
        }
        removed += remove_dir_counting(&dir);
    }
    for (id, dir) in crate::dirs::env_dirs(logs) {
        if archived.contains(&id) {
            // History: kept with its record.
            continue;
        }
        let files = files(&dir);
        match keep.get(&id) {
            Some(ns) => {
                for (name, path) in files {
                    let n = name
                        .strip_suffix(".log")
                        .and_then(|n| n.parse::<u32>().ok());
                    if n.is_some_and(|n| !ns.contains(&n))
                        && old(&path)
                        && std::fs::remove_file(&path).is_ok()
                    {
                        removed += 1;
                    }
                }
            }
            // Nobody's: gone once nothing in it is newer than the cutoff.
            None if files.iter().all(|(_, p)| old(p)) && old(&dir) => {
                removed += remove_dir_counting(&dir);
            }
            None => {}
        }
    }
    removed
}

/// Remove `dir` with its files; returns how many files it held.
fn remove_dir_counting(dir: &Path) -> usize {
    let n = files(dir).len();
    match std::fs::remove_dir_all(dir) {
        Ok(()) => n,
        Err(_) => 0,
    }
}
