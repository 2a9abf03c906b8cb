//! Which installation of the GitHub App serves a repository, and the GitHub client for it: the
//! one the event named, else the one the store remembers, else GitHub's answer (remembered).
//! Shared by the engine, the reporter and the App's own orchestration.

use crate::github::{GitHub, GitHubError, RepoClient};
use crate::store::Store;
use crate::types::RepoName;

/// The GitHub client for `repo`, finding its installation when the event lacked it.
pub async fn repo_client(
    github: &GitHub,
    store: &Store,
    installation: Option<u64>,
    repo: &RepoName,
) -> Result<RepoClient, GitHubError> {
    let id = match installation {
        Some(id) => id,
        None => match store.installation_of_repo(repo).ok().flatten() {
            Some(id) => id,
            None => {
                let id = github.installation_for_repo(repo).await?;
                if let Err(e) = store.set_repo_installation(repo, id) {
                    // Only a cache: the next call asks GitHub again.
                    tracing::warn!(%repo, installation = id, error = %e, "could not remember the repository's installation");
                }
                id
            }
        },
    };
    Ok(github.repo(id, repo.clone()))
}
