//! The data dir's directories: created private (`create_private_dir`, for the store, the
//! payload segments, sessions and credentials), and the per-environment trees (`envs/`, `logs/`:
//! `<owner>/<repo>/<slug>`) walked by the pruning passes (src/prune.rs,
//! src/provider/local/prune.rs). A leaf: names nothing of the running application.

use std::path::{Path, PathBuf};

use crate::types::{EnvId, RepoName, Slug};

/// Create `dir` (and missing parents) readable by stagebot's user only (0700); an existing data
/// dir open to group or others is narrowed to 0700 (it holds the admin socket, logs and
/// checkouts).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The subdirectories of `dir` with their names (unreadable entries and names that are not
/// UTF-8 skipped; a missing `dir` has none).
pub fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    entries(dir, true)
}

/// The plain files of `dir` with their names, as [`subdirs`].
pub fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    entries(dir, false)
}

fn entries(dir: &Path, dirs: bool) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == dirs))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

/// The `<owner>/<repo>/<slug>` directories under `root` that name an environment, with its id;
/// anything else there (a name that is not a valid owner, repository or slug) is skipped.
pub fn env_dirs(root: &Path) -> Vec<(EnvId, PathBuf)> {
    let mut out = Vec::new();
    for (owner, owner_dir) in subdirs(root) {
        for (name, repo_dir) in subdirs(&owner_dir) {
            let Ok(repo) = RepoName::new(&owner, &name) else {
                continue;
            };
            for (slug, dir) in subdirs(&repo_dir) {
                let Ok(slug) = Slug::new(&slug) else {
                    continue;
                };
                out.push((
                    EnvId {
                        repo: repo.clone(),
                        slug,
                    },
                    dir,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_dirs_name_environments_and_skip_the_rest() {
        let root = tempfile::tempdir().unwrap();
        for p in [
            "acme/webapp/pr-1",
            "acme/webapp/Bad Slug",
            "acme/bad name/pr-2",
            "x/y/staging",
        ] {
            std::fs::create_dir_all(root.path().join(p)).unwrap();
        }
        std::fs::write(root.path().join("acme/webapp/file"), b"").unwrap();
        let mut found: Vec<String> = env_dirs(root.path())
            .into_iter()
            .map(|(id, dir)| {
                assert!(dir.ends_with(id.slug.as_str()));
                id.to_string()
            })
            .collect();
        found.sort();
        assert_eq!(found, ["acme/webapp#pr-1", "x/y#staging"]);
        assert!(env_dirs(&root.path().join("missing")).is_empty());
    }
}
