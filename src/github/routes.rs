//! Request and response bodies of every GitHub route the client uses. Only the fields we read are
//! declared; GitHub sends many more.

use serde::{Deserialize, Serialize};

/// `POST /app/installations/{id}/access_tokens` → 201.
#[derive(Debug, Deserialize)]
pub(crate) struct AccessTokenResponse {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /repos/{o}/{r}/installation` → 200.
#[derive(Debug, Deserialize)]
pub(crate) struct InstallationResponse {
    pub id: u64,
}

/// A user as GitHub embeds it in other objects.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserRef {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// The app that made a comment (GitHub sets it for comments posted with an installation token).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AppRef {
    pub id: u64,
}

/// An issue comment: `GET /repos/{o}/{r}/issues/{n}/comments` (array) and the answer of POST /
/// PATCH on comments.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<UserRef>,
    #[serde(default)]
    pub performed_via_github_app: Option<AppRef>,
}

/// `POST /repos/{o}/{r}/issues/{n}/comments` and `PATCH /repos/{o}/{r}/issues/comments/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct CommentBody<'a> {
    pub body: &'a str,
}

/// `POST /repos/{o}/{r}/issues/comments/{id}/reactions`.
#[derive(Debug, Serialize)]
pub(crate) struct NewReaction {
    pub content: &'static str,
}

/// `POST /repos/{o}/{r}/statuses/{sha}`.
#[derive(Debug, Serialize)]
pub(crate) struct NewStatus<'a> {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<&'a str>,
    pub description: &'a str,
    pub context: &'a str,
}

/// `POST /repos/{o}/{r}/deployments`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateDeployment<'a> {
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub task: &'static str,
    pub auto_merge: bool,
    pub required_contexts: [&'static str; 0],
    pub payload: &'a serde_json::Value,
    pub environment: &'a str,
    pub description: &'a str,
    pub transient_environment: bool,
    pub production_environment: bool,
}

/// The answer of `POST /repos/{o}/{r}/deployments` (201) and the items of `GET
/// /repos/{o}/{r}/deployments`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeploymentResponse {
    pub id: u64,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub environment: String,
    /// An object, or a string when the deployment was created with one; anything else is `null`.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// `POST /repos/{o}/{r}/deployments/{id}/statuses`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateDeploymentStatus<'a> {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<&'a str>,
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_inactive: Option<bool>,
}

/// `GET /repos/{o}/{r}/collaborators/{login}/permission`.
#[derive(Debug, Deserialize)]
pub(crate) struct PermissionResponse {
    pub permission: String,
    #[serde(default)]
    pub role_name: Option<String>,
}

/// `GET /repos/{o}/{r}/contents/{path}?ref=` for a file.
#[derive(Debug, Deserialize)]
pub(crate) struct ContentFile {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// A repository as embedded in a pull request's `head`/`base`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PrRepo {
    pub full_name: String,
    #[serde(default)]
    pub clone_url: Option<String>,
}

/// A pull request's `head` or `base`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PrBranch {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    #[serde(default)]
    pub repo: Option<PrRepo>,
}

/// `GET /repos/{o}/{r}/pulls/{n}` and the items of `GET /repos/{o}/{r}/pulls`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullRequest {
    pub number: u64,
    pub state: String,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub title: String,
    pub head: PrBranch,
    pub base: PrBranch,
    #[serde(default)]
    pub user: Option<UserRef>,
}

/// `GET /repos/{o}/{r}` → 200 (the fields stagebot reads).
#[derive(Debug, Deserialize)]
pub(crate) struct Repository {
    pub full_name: String,
    pub default_branch: String,
    #[serde(default)]
    pub clone_url: Option<String>,
    #[serde(default)]
    pub private: bool,
}

/// `GET /repos/{o}/{r}/branches/{branch}` → 200.
#[derive(Debug, Deserialize)]
pub(crate) struct Branch {
    pub commit: BranchCommit,
}

/// The head commit of a [`Branch`].
#[derive(Debug, Deserialize)]
pub(crate) struct BranchCommit {
    pub sha: String,
}

/// `GET /repos/{o}/{r}/commits/{ref}/check-runs` → 200.
#[derive(Debug, Deserialize)]
pub(crate) struct CheckRuns {
    #[serde(default)]
    pub check_runs: Vec<CheckRun>,
}

/// One check run.
#[derive(Debug, Deserialize)]
pub(crate) struct CheckRun {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
}

/// `GET /repos/{o}/{r}/commits/{ref}/status` → 200 (the combined status).
#[derive(Debug, Deserialize)]
pub(crate) struct CombinedStatus {
    #[serde(default)]
    pub statuses: Vec<CommitStatus>,
}

/// One commit status (the newest of its context).
#[derive(Debug, Deserialize)]
pub(crate) struct CommitStatus {
    pub context: String,
    pub state: String,
}
