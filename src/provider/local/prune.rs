//! Retention of the local provider's directories (issue 13, `src/prune.rs`): checkouts left
//! under `envs/` by environments that are no longer live, and the per-repository git caches
//! under `repos/` of repositories without a live environment that no deploy used since the
//! cutoff. Never anything a live environment uses: the caller passes the live environments,
//! and each removal holds the environment's or the repository's lock (a deploy waiting for it
//! then starts from a fresh cache).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use super::LocalProvider;
use crate::dirs::subdirs;
use crate::types::{EnvId, RepoName};

/// What [`LocalProvider::prune_dirs`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirsPruned {
    pub env_dirs: usize,
    pub repo_caches: usize,
}

/// The file a deploy touches in the repository's cache when it fetched from it (`last used`).
pub(super) const CACHE_USED: &str = "stagebot-last-used";

/// The newest modification time of `path` and of the direct entries named `names` in it.
fn last_touched(path: &Path, names: &[&str]) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    for name in names {
        if let Ok(t) = std::fs::metadata(path.join(name)).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

/// Move `dir` aside (one rename: nobody sees it half deleted), then delete it.
async fn remove_aside(dir: &Path, trash: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(trash).await?;
    let aside = trash.join(format!("{:016x}", fastrand::u64(..)));
    tokio::fs::rename(dir, &aside).await?;
    tokio::fs::remove_dir_all(&aside).await
}

impl LocalProvider {
    /// Remove the checkouts of environments not in `live` and the git caches of repositories
    /// with no environment in `live`, when nothing touched them since `cutoff`.
    pub async fn prune_dirs(&self, live: &BTreeSet<EnvId>, cutoff: SystemTime) -> DirsPruned {
        let mut out = DirsPruned::default();
        let data = self.inner.cfg.data_dir.clone();
        let trash = data.join("prune-trash");
        // Whatever an interrupted pass left aside.
        let _ = tokio::fs::remove_dir_all(&trash).await;
        for (id, dir) in crate::dirs::env_dirs(&data.join("envs")) {
            // Whatever the store says, an environment with an app running keeps its checkout.
            if live.contains(&id) || self.running().contains_key(&id) {
                continue;
            }
            let lock = self.env_lock(&id);
            let _guard = lock.lock().await;
            if last_touched(&dir, &[]).is_some_and(|t| t < cutoff)
                && remove_aside(&dir, &trash).await.is_ok()
            {
                tracing::info!(env = %id, "pruned the checkout of an environment no longer live");
                out.env_dirs += 1;
            }
        }
        let repos_in_use: BTreeSet<&RepoName> = live.iter().map(|id| &id.repo).collect();
        for (owner, owner_dir) in subdirs(&data.join("repos")) {
            for (name, cache) in subdirs(&owner_dir) {
                let Some(repo) = name
                    .strip_suffix(".git")
                    .and_then(|n| RepoName::new(&owner, n).ok())
                else {
                    continue;
                };
                if repos_in_use.contains(&repo) {
                    continue;
                }
                let lock = self.repo_lock(&repo);
                let _guard = lock.lock().await;
                if last_touched(&cache, &[CACHE_USED, "FETCH_HEAD"]).is_some_and(|t| t < cutoff)
                    && remove_aside(&cache, &trash).await.is_ok()
                {
                    tracing::info!(%repo, "pruned the git cache of a repository without live environments");
                    out.repo_caches += 1;
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(&trash).await;
        out
    }
}
