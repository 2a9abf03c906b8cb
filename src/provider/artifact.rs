//! Build once, promote the artifact (docs/providers.md, "Artifacts"): the local provider keeps
//! each release's built checkout (the result of `build`, before `seed` and `start` touch it),
//! keyed by the commit, the `build` command and the variables `build` sees (the repository's
//! base `env` and the operator's variables). A later deploy with the same key, in any
//! environment of the repository (promote, rollback, redeploy), starts from a copy of it
//! instead of running `build` again.
//!
//! Retention: every environment keeps the artifacts of its newest `keep` releases that used one
//! (the live release is the newest); an artifact no environment keeps is deleted, and a
//! teardown lets go of everything the environment kept. The index is one JSON file per
//! repository next to the artifacts, `<data dir>/artifacts/<owner>/<name>/index.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::types::{RepoName, Sha, Slug};

/// The artifact key: SHA-256 of the commit, the build command and the build's variables.
pub fn key(sha: &Sha, build: &str, vars: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for part in [sha.as_str(), build] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for (k, v) in vars {
        for part in [k, v] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One artifact in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The commit it was built from.
    pub sha: String,
    /// The environment and release it was first built for.
    pub env: String,
    pub release: u32,
    /// Which releases of which environments run (or can roll back to) it.
    pub users: BTreeMap<String, BTreeSet<u32>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    artifacts: BTreeMap<String, Entry>,
}

/// The artifact store of the local provider.
#[derive(Debug)]
pub struct Artifacts {
    root: PathBuf,
    keep: usize,
    lock: tokio::sync::Mutex<()>,
}

impl Artifacts {
    /// Artifacts under `root`, `keep` per environment; `0` keeps none (every deploy builds).
    pub fn new(root: PathBuf, keep: usize) -> Self {
        Self {
            root,
            keep,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root
            .join(repo.owner().to_ascii_lowercase())
            .join(repo.name().to_ascii_lowercase())
    }

    fn read_index(&self, repo: &RepoName) -> Index {
        let path = self.repo_dir(repo).join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable artifact index; starting afresh");
                Index::default()
            }),
            Err(_) => Index::default(),
        }
    }

    fn write_index(&self, repo: &RepoName, index: &Index) -> io::Result<()> {
        let dir = self.repo_dir(repo);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("index.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(index).map_err(io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join("index.json"))
    }

    /// The artifact with `key`, if it is kept: its directory and entry.
    pub async fn find(&self, repo: &RepoName, key: &str) -> Option<(PathBuf, Entry)> {
        if self.keep == 0 {
            return None;
        }
        let _g = self.lock.lock().await;
        let entry = self.read_index(repo).artifacts.get(key).cloned()?;
        let dir = self.repo_dir(repo).join(key);
        dir.is_dir().then_some((dir, entry))
    }

    /// Keep a copy of the built checkout `from` as the artifact `key`, first built for release
    /// `release` of `env`.
    pub async fn save(
        &self,
        repo: &RepoName,
        key: &str,
        from: &Path,
        sha: &Sha,
        env: &Slug,
        release: u32,
    ) -> io::Result<()> {
        if self.keep == 0 {
            return Ok(());
        }
        let _g = self.lock.lock().await;
        let dir = self.repo_dir(repo);
        tokio::fs::create_dir_all(&dir).await?;
        let target = dir.join(key);
        let tmp = dir.join(format!("{key}.tmp"));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        copy_tree(from, &tmp).await?;
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&tmp, &target).await?;
        let mut index = self.read_index(repo);
        index.artifacts.insert(
            key.to_owned(),
            Entry {
                sha: sha.to_string(),
                env: env.to_string(),
                release,
                users: BTreeMap::from([(env.to_string(), BTreeSet::from([release]))]),
            },
        );
        self.write_index(repo, &index)
    }

    /// Release `release` of `env` went live with artifact `key` (if any): record it, then keep
    /// only the environment's newest `keep` releases and delete artifacts nobody keeps.
    pub async fn used(
        &self,
        repo: &RepoName,
        key: Option<&str>,
        env: &Slug,
        release: u32,
    ) -> io::Result<()> {
        let _g = self.lock.lock().await;
        let mut index = self.read_index(repo);
        if let Some(entry) = key.and_then(|k| index.artifacts.get_mut(k)) {
            entry
                .users
                .entry(env.to_string())
                .or_default()
                .insert(release);
        }
        let mut releases: Vec<u32> = index
            .artifacts
            .values()
            .filter_map(|e| e.users.get(env.as_str()))
            .flatten()
            .copied()
            .collect();
        releases.sort_unstable_by(|a, b| b.cmp(a));
        releases.dedup();
        let kept: BTreeSet<u32> = releases.into_iter().take(self.keep).collect();
        for entry in index.artifacts.values_mut() {
            if let Some(r) = entry.users.get_mut(env.as_str()) {
                r.retain(|n| kept.contains(n));
            }
            entry.users.retain(|_, r| !r.is_empty());
        }
        self.prune(repo, &mut index).await;
        self.write_index(repo, &index)
    }

    /// `env` was torn down: it keeps nothing any more.
    pub async fn forget(&self, repo: &RepoName, env: &Slug) -> io::Result<()> {
        let _g = self.lock.lock().await;
        let mut index = self.read_index(repo);
        for entry in index.artifacts.values_mut() {
            entry.users.remove(env.as_str());
        }
        self.prune(repo, &mut index).await;
        self.write_index(repo, &index)
    }

    /// Delete the artifacts no environment keeps.
    async fn prune(&self, repo: &RepoName, index: &mut Index) {
        let dir = self.repo_dir(repo);
        let unused: Vec<String> = index
            .artifacts
            .iter()
            .filter(|(_, e)| e.users.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in unused {
            index.artifacts.remove(&key);
            if let Err(e) = tokio::fs::remove_dir_all(dir.join(&key)).await
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(%key, error = %e, "cannot delete an artifact");
            }
            tracing::info!(repo = %repo, %key, "artifact pruned");
        }
    }

    /// How many artifacts of `repo` are kept (for tests and the operator).
    pub async fn count(&self, repo: &RepoName) -> usize {
        let _g = self.lock.lock().await;
        self.read_index(repo).artifacts.len()
    }
}

/// Copy a directory tree with its modes, times and symlinks (`cp -a`, reflinks where the file
/// system has them). Paths are arguments, never shell text.
pub async fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cp -a failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_commit_build_and_variables_only() {
        let sha = Sha::new(&"a".repeat(40)).unwrap();
        let other = Sha::new(&"b".repeat(40)).unwrap();
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let k = key(&sha, "make", &vars);
        assert_eq!(k, key(&sha, "make", &vars));
        assert_eq!(k.len(), 64);
        assert_ne!(k, key(&other, "make", &vars));
        assert_ne!(k, key(&sha, "make all", &vars));
        assert_ne!(k, key(&sha, "make", &BTreeMap::new()));
        // no ambiguity between parts
        let ab = BTreeMap::from([("AB".to_owned(), "".to_owned())]);
        let a_b = BTreeMap::from([("A".to_owned(), "B".to_owned())]);
        assert_ne!(key(&sha, "m", &ab), key(&sha, "m", &a_b));
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_releases_per_environment() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("built.txt"), "x").unwrap();
        let store = Artifacts::new(root.path().to_path_buf(), 2);
        let repo: RepoName = "acme/web".parse().unwrap();
        let (staging, prod) = (Slug::staging(), Slug::production());
        let sha = |c: char| Sha::new(&c.to_string().repeat(40)).unwrap();
        for (n, c) in [(1, 'a'), (2, 'b'), (3, 'c')] {
            let k = format!("k{c}");
            store
                .save(&repo, &k, src.path(), &sha(c), &staging, n)
                .await
                .unwrap();
            store.used(&repo, Some(&k), &staging, n).await.unwrap();
        }
        // staging keeps its newest two: ka is gone
        assert!(store.find(&repo, "ka").await.is_none());
        let (dir, entry) = store.find(&repo, "kb").await.unwrap();
        assert!(dir.join("built.txt").is_file());
        assert_eq!((entry.env.as_str(), entry.release), ("staging", 2));
        // production uses kb: it survives staging moving on
        store.used(&repo, Some("kb"), &prod, 1).await.unwrap();
        for n in [4, 5] {
            let k = format!("k{n}");
            store
                .save(&repo, &k, src.path(), &sha('d'), &staging, n)
                .await
                .unwrap();
            store.used(&repo, Some(&k), &staging, n).await.unwrap();
        }
        assert!(store.find(&repo, "kb").await.is_some());
        assert!(store.find(&repo, "kc").await.is_none());
        assert_eq!(store.count(&repo).await, 3);
        // destroying staging lets go of its artifacts; production's stays
        store.forget(&repo, &staging).await.unwrap();
        assert_eq!(store.count(&repo).await, 1);
        assert!(store.find(&repo, "kb").await.is_some());
        store.forget(&repo, &prod).await.unwrap();
        assert_eq!(store.count(&repo).await, 0);
        assert!(!root.path().join("acme/web/kb").exists());
    }
}
