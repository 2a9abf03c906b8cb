//! The release pipeline's operator side (docs/commands.md, "Operator commands"):
//! `stagebot promote OWNER/REPO` and `stagebot env deploy OWNER/REPO --branch NAME`, run by the
//! server for the CLI over the admin socket. They gather state as the engine does for a
//! webhook, ask the same policy, and apply its deploy through the same path.

use crate::app::App;
use crate::engine::{Ctx, EngineError};
use crate::environment::Trigger;
use crate::github::GitHubError;
use crate::policy::{self, Action, State};
use crate::repo_config::RepoConfig;
use crate::store::StoreError;
use crate::types::{EnvId, EnvKind, RepoName, Slug};

/// Why an operator request did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The policy refused, with the reason for the operator.
    #[error("{0}")]
    Refused(String),
    /// The branch does not exist on GitHub.
    #[error("branch {0} does not exist")]
    NoBranch(String),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What an operator request started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Started {
    /// The environment that deploys.
    pub env: EnvId,
    /// The commit it deploys.
    pub sha: String,
    /// Its URL.
    pub url: String,
}

impl App {
    /// `stagebot promote OWNER/REPO [--from ENV] [--release N]`: promote release `release` of
    /// `from` (default: its live release) to production, as the operator.
    pub async fn operator_promote(
        &self,
        repo: &RepoName,
        from: &Slug,
        release: Option<u32>,
    ) -> Result<Started, OperatorError> {
        let (state, config, ctx_repo, client) =
            self.repo_state::<OperatorError>(repo, Some(from)).await?;
        let deploy = policy::operator_promote(from, release, &state, &config)
            .map_err(OperatorError::Refused)?;
        self.operator_apply(&ctx_repo, &client, deploy).await
    }

    /// `stagebot env deploy OWNER/REPO --branch NAME`: deploy the branch's environment
    /// (`br-<branch>`) at the branch's head, as the operator.
    pub async fn operator_deploy_branch(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<Started, OperatorError> {
        let (state, config, ctx_repo, client) =
            self.repo_state::<OperatorError>(repo, None).await?;
        if branch == ctx_repo.default_branch {
            return Err(OperatorError::Refused(format!(
                "{branch} is the default branch: it deploys what `on_merge` says, not a branch environment"
            )));
        }
        let sha = client
            .branch_head(branch)
            .await?
            .ok_or_else(|| OperatorError::NoBranch(branch.to_owned()))?;
        let slug = crate::slug::preview_slug(None, branch);
        // The branch environment's profile, also when it was destroyed (archived).
        let profile = self
            .store()
            .env(&EnvId {
                repo: repo.clone(),
                slug: slug.clone(),
            })?
            .and_then(|e| e.profile);
        let mut deploy = policy::branch_deploy(
            branch,
            sha,
            Trigger::Stage,
            "operator",
            profile,
            &config,
            &state,
        );
        // By hand: deployed even when this commit is already live.
        deploy.force = true;
        self.operator_apply(&ctx_repo, &client, deploy).await
    }

    /// What the policy needs to decide an action on `repo` that comes from no pull request
    /// (the operator's CLI, the dashboard): its environments, the releases of `releases_of`,
    /// the default branch's config (the defaults if it is invalid), the capacity in use; no
    /// permission (the caller sets the asker's). With the repository and its client.
    pub(crate) async fn repo_state<E>(
        &self,
        repo: &RepoName,
        releases_of: Option<&Slug>,
    ) -> Result<
        (
            State,
            RepoConfig,
            crate::event::RepoInfo,
            crate::github::RepoClient,
        ),
        E,
    >
    where
        E: From<StoreError> + From<GitHubError> + From<EngineError>,
    {
        let envs = self.store().envs_of_repo(repo)?;
        let installation = envs.iter().find_map(|e| e.installation_id);
        let client = self.repo_client(installation, repo).await?;
        let info = client.repository().await?;
        let config = match self
            .engine()
            .repo_config(&client, &info.default_branch)
            .await?
        {
            Ok(c) => c,
            Err(message) => {
                tracing::warn!(%message, "invalid config on the default branch; using the defaults");
                RepoConfig::default()
            }
        };
        let mut releases = Vec::new();
        if let Some(slug) = releases_of {
            let id = EnvId {
                repo: repo.clone(),
                slug: slug.clone(),
            };
            releases.push((slug.clone(), self.store().releases(&id)?));
        }
        let previews_in_use = match self.settings().limits.max_previews {
            Some(_) => self.engine().previews_in_use(client.installation_id())?,
            None => 0,
        };
        let state = State {
            now: self.now(),
            envs,
            releases,
            pr_record: None,
            pr_info: None,
            permission: None,
            head_profiles: None,
            previews_in_use,
            limits: self.settings().limits.clone(),
            received: None,
            open_pr_branches: Vec::new(),
        };
        Ok((state, config, info, client))
    }

    async fn operator_apply(
        &self,
        info: &crate::event::RepoInfo,
        client: &crate::github::RepoClient,
        deploy: policy::Deploy,
    ) -> Result<Started, OperatorError> {
        let id = EnvId {
            repo: info.name.clone(),
            slug: deploy.target.slug.clone(),
        };
        let sha = deploy.sha.to_string();
        let preview = deploy.target.kind == EnvKind::Preview;
        let ctx = Ctx {
            repo: info,
            client,
            installation: client.installation_id(),
            now: self.now(),
        };
        self.engine().apply(&ctx, Action::Deploy(deploy)).await?;
        let url = self.store().env(&id)?.map(|e| e.url).unwrap_or_default();
        tracing::info!(env = %id, %sha, preview, "operator deploy requested");
        Ok(Started { env: id, sha, url })
    }
}
