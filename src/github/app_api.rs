//! The calls behind the catch-up (`src/catchup.rs`) and `stagebot recover` (`src/recover.rs`):
//! the App's webhook delivery log, redeliveries, the installations and their repositories, and
//! everything a repository holds about past deployments.

use chrono::{DateTime, Utc};
use http::Method;
use serde::Deserialize;

use super::{As, GitHub, GitHubError, PER_PAGE, RepoClient, next_page, routes};
use crate::types::{PrNumber, RepoName};

/// One entry of the App's webhook delivery log (`GET /app/hook/deliveries`). Every attempt is an
/// entry of its own (a redelivery too), with its own `id` and the delivery's `guid`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HookDelivery {
    /// This attempt's id (what a redelivery request names).
    pub id: u64,
    /// The delivery's GUID, sent as `X-GitHub-Delivery`; a redelivery keeps it.
    pub guid: String,
    /// When GitHub sent it.
    pub delivered_at: DateTime<Utc>,
    /// A redelivery.
    #[serde(default)]
    pub redelivery: bool,
    /// `OK`, `Invalid HTTP Response: 502`, `timed out`…
    #[serde(default)]
    pub status: String,
    /// The HTTP status the receiver answered (0 when there was no answer).
    #[serde(default)]
    pub status_code: u16,
    /// The event (`X-GitHub-Event`).
    pub event: String,
    /// The payload's `action`, if any.
    #[serde(default)]
    pub action: Option<String>,
    /// The installation it was about, if any.
    #[serde(default)]
    pub installation_id: Option<u64>,
    /// The repository it was about, if any.
    #[serde(default)]
    pub repository_id: Option<u64>,
}

/// An installation of the App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInstallation {
    /// Its id.
    pub id: u64,
    /// The account it is installed on.
    pub account: String,
    /// Suspended installations get no webhooks and cannot act.
    pub suspended: bool,
}

/// A deployment as listed, with what recovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Its id.
    pub id: u64,
    /// The commit.
    pub sha: String,
    /// The `ref` it was created with.
    pub git_ref: String,
    /// The environment (`preview/<slug>`, `staging`, `production`).
    pub environment: String,
    /// Its `payload` (stagebot's schema: `reporter::DeploymentPayload`).
    pub payload: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The GitHub App that created it (`performed_via_github_app.id`); `None` when a user (or
    /// a workflow token) did.
    pub app_id: Option<u64>,
}

/// A deployment status as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatusInfo {
    /// `success`, `inactive`, `in_progress`…
    pub state: String,
    /// The environment's URL.
    pub environment_url: Option<String>,
    /// The log's URL.
    pub log_url: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct InstallationItem {
    id: u64,
    #[serde(default)]
    account: Option<routes::UserRef>,
    #[serde(default)]
    suspended_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RepositoryItem {
    full_name: String,
    /// Missing means private: the safe side for what the dashboard shows.
    #[serde(default = "private_by_default")]
    private: bool,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    default_branch: Option<String>,
}

/// A repository an installation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRepo {
    /// `owner/name`.
    pub name: RepoName,
    /// HTTPS clone URL.
    pub clone_url: String,
    /// The default branch.
    pub default_branch: String,
    /// A private repository (its environments are hidden from anonymous visitors).
    pub private: bool,
}

fn private_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct RepositoryList {
    #[serde(default)]
    repositories: Vec<RepositoryItem>,
}

#[derive(Debug, Deserialize)]
struct DeploymentItem {
    id: u64,
    #[serde(default)]
    sha: String,
    #[serde(rename = "ref", default)]
    git_ref: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    payload: serde_json::Value,
    created_at: DateTime<Utc>,
    #[serde(default)]
    performed_via_github_app: Option<routes::AppRef>,
}

#[derive(Debug, Deserialize)]
struct StatusItem {
    state: String,
    #[serde(default)]
    environment_url: Option<String>,
    #[serde(default)]
    log_url: Option<String>,
    created_at: DateTime<Utc>,
}

impl GitHub {
    /// Read the App's delivery log newest first (`GET /app/hook/deliveries`, 100 per page,
    /// following the cursor in `Link`), handing each page to `visit` until it returns `true`
    /// (it has read far enough) or the log ends.
    pub async fn visit_hook_deliveries(
        &self,
        visit: impl FnMut(Vec<HookDelivery>) -> bool,
    ) -> Result<(), GitHubError> {
        self.visit_pages(
            As::App,
            "/app/hook/deliveries",
            format!("/app/hook/deliveries?per_page={PER_PAGE}"),
            visit,
        )
        .await
    }

    /// Ask GitHub to send the delivery-log entry `id` again (`POST
    /// /app/hook/deliveries/{id}/attempts`, 202). It keeps its GUID.
    pub async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
        self.call(
            As::App,
            Method::POST,
            "/app/hook/deliveries/{delivery_id}/attempts",
            format!("/app/hook/deliveries/{id}/attempts"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Every installation of the App (`GET /app/installations`).
    pub async fn installations(&self) -> Result<Vec<AppInstallation>, GitHubError> {
        let items: Vec<InstallationItem> = self
            .get_all(
                As::App,
                "/app/installations",
                format!("/app/installations?per_page={PER_PAGE}"),
            )
            .await?;
        Ok(items
            .into_iter()
            .map(|i| AppInstallation {
                id: i.id,
                account: i.account.map(|a| a.login).unwrap_or_default(),
                suspended: i.suspended_at.is_some(),
            })
            .collect())
    }

    /// The repositories an installation covers (`GET /installation/repositories`, as it).
    /// Names GitHub sends that are not valid repository names are skipped.
    pub async fn installation_repositories(
        &self,
        installation_id: u64,
    ) -> Result<Vec<InstalledRepo>, GitHubError> {
        let mut out = Vec::new();
        let mut path = format!("/installation/repositories?per_page={PER_PAGE}");
        for _ in 0..super::MAX_PAGES {
            let answer = self
                .call(
                    As::Installation(installation_id),
                    Method::GET,
                    "/installation/repositories",
                    path,
                    None,
                )
                .await?;
            let list: RepositoryList = answer.json("/installation/repositories")?;
            out.extend(list.repositories.into_iter().filter_map(|r| {
                let name = r.full_name.parse::<RepoName>().ok()?;
                Some(InstalledRepo {
                    clone_url: r
                        .clone_url
                        .unwrap_or_else(|| format!("https://github.com/{name}.git")),
                    default_branch: r.default_branch.unwrap_or_else(|| "main".to_owned()),
                    private: r.private,
                    name,
                })
            }));
            match next_page(&answer.headers, &self.inner.api_url)? {
                Some(next) => path = next,
                None => return Ok(out),
            }
        }
        Err(GitHubError::Decode(
            "/installation/repositories: too many pages".into(),
        ))
    }
}

impl RepoClient {
    /// Every deployment of the repository, newest first (`GET /repos/{o}/{r}/deployments`).
    pub async fn all_deployments(&self) -> Result<Vec<DeploymentInfo>, GitHubError> {
        let items: Vec<DeploymentItem> = self
            .gh
            .get_all(
                As::Installation(self.installation_id),
                "/repos/{owner}/{repo}/deployments",
                self.path(&format!("/deployments?per_page={PER_PAGE}")),
            )
            .await?;
        Ok(items
            .into_iter()
            .map(|d| DeploymentInfo {
                id: d.id,
                sha: d.sha,
                git_ref: d.git_ref,
                environment: d.environment,
                payload: d.payload,
                created_at: d.created_at,
                app_id: d.performed_via_github_app.map(|a| a.id),
            })
            .collect())
    }

    /// The statuses of a deployment, newest first (`GET
    /// /repos/{o}/{r}/deployments/{id}/statuses`).
    pub async fn deployment_statuses(
        &self,
        deployment_id: u64,
    ) -> Result<Vec<DeploymentStatusInfo>, GitHubError> {
        let items: Vec<StatusItem> = self
            .gh
            .get_all(
                As::Installation(self.installation_id),
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                self.path(&format!(
                    "/deployments/{deployment_id}/statuses?per_page={PER_PAGE}"
                )),
            )
            .await?;
        Ok(items
            .into_iter()
            .map(|s| DeploymentStatusInfo {
                state: s.state,
                environment_url: s.environment_url,
                log_url: s.log_url,
                created_at: s.created_at,
            })
            .collect())
    }

    /// The id of the App's sticky comment on `pr`, if there is one.
    pub async fn find_sticky_comment(&self, pr: PrNumber) -> Result<Option<u64>, GitHubError> {
        self.find_marked_comment(pr, super::STICKY_MARKER).await
    }
}
