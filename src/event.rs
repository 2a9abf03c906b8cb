//! Typed webhook events (DESIGN §1.3). The raw payload becomes exactly one [`Event`]; past this
//! module nothing looks at JSON.

use serde::{Deserialize, Serialize};

use crate::types::{PrNumber, RepoName, Sha};

/// Someone who acts on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub login: String,
    /// `type == "Bot"` or a login ending in `[bot]`.
    pub is_bot: bool,
}

/// The repository an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    pub name: RepoName,
    pub default_branch: String,
    pub clone_url: String,
    pub private: bool,
}

/// The fields of a pull request stagebot uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: PrNumber,
    pub title: String,
    pub author: Actor,
    pub head_ref: String,
    pub head_sha: Sha,
    /// Clone URL of the head repository (differs from the base repository's for forks).
    pub head_clone_url: String,
    pub base_ref: String,
    pub draft: bool,
    /// The head repository differs from the base repository (or was deleted).
    pub fork: bool,
    pub merged: bool,
    pub merge_commit_sha: Option<Sha>,
    /// `open` or `closed`.
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrAction {
    Opened,
    Reopened,
    Synchronize { before: Option<Sha> },
    ReadyForReview,
    ConvertedToDraft,
    Closed { merged: bool },
    Labeled { label: String },
    Unlabeled { label: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestEvent {
    pub action: PrAction,
    pub repo: RepoInfo,
    pub installation_id: Option<u64>,
    pub sender: Actor,
    pub pr: PullRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    pub repo: RepoInfo,
    pub installation_id: Option<u64>,
    /// The branch name without `refs/heads/`.
    pub branch: String,
    pub before: Sha,
    pub after: Sha,
    pub created: bool,
    pub deleted: bool,
    pub forced: bool,
    pub is_default_branch: bool,
    pub sender: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchDeletedEvent {
    pub repo: RepoInfo,
    pub installation_id: Option<u64>,
    pub branch: String,
    pub sender: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentAction {
    Created,
    /// `previous_body` is `changes.body.from` when GitHub sent it.
    Edited {
        previous_body: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentEvent {
    pub action: CommentAction,
    pub repo: RepoInfo,
    pub installation_id: Option<u64>,
    /// The issue or pull request number the comment is on.
    pub number: PrNumber,
    /// The comment is on a pull request (the issue has `pull_request`).
    pub is_pr: bool,
    pub comment_id: u64,
    pub body: String,
    pub author: Actor,
    /// OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, ...
    pub author_association: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallationAction {
    Created,
    Deleted,
    Suspend,
    Unsuspend,
    NewPermissionsAccepted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationEvent {
    pub action: InstallationAction,
    pub installation_id: u64,
    pub account: String,
    /// Repositories listed in the payload (may be empty when the installation covers all).
    pub repos: Vec<RepoName>,
    pub sender: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationReposEvent {
    pub installation_id: u64,
    pub account: String,
    pub added: Vec<RepoName>,
    pub removed: Vec<RepoName>,
    pub sender: Actor,
}

/// One webhook delivery, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    PullRequest(PullRequestEvent),
    Push(PushEvent),
    BranchDeleted(BranchDeletedEvent),
    Comment(CommentEvent),
    Installation(InstallationEvent),
    InstallationRepositories(InstallationReposEvent),
    Ping {
        zen: Option<String>,
        hook_id: Option<u64>,
    },
    /// An event or action stagebot does not act on, with the reason (logged and recorded).
    Ignored {
        reason: String,
    },
}

impl Event {
    /// The repository the event concerns, when it concerns one.
    pub fn repo(&self) -> Option<&RepoInfo> {
        match self {
            Event::PullRequest(e) => Some(&e.repo),
            Event::Push(e) => Some(&e.repo),
            Event::BranchDeleted(e) => Some(&e.repo),
            Event::Comment(e) => Some(&e.repo),
            _ => None,
        }
    }
    pub fn installation_id(&self) -> Option<u64> {
        match self {
            Event::PullRequest(e) => e.installation_id,
            Event::Push(e) => e.installation_id,
            Event::BranchDeleted(e) => e.installation_id,
            Event::Comment(e) => e.installation_id,
            Event::Installation(e) => Some(e.installation_id),
            Event::InstallationRepositories(e) => Some(e.installation_id),
            _ => None,
        }
    }
}

/// Why a payload could not be read at all (a malformed payload for an event we handle).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("payload for `{event}` is missing or has a bad `{field}`")]
    Field { event: String, field: String },
    #[error("payload for `{event}` has an invalid value: {source}")]
    Invalid {
        event: String,
        #[source]
        source: crate::types::InvalidValue,
    },
}

/// Parse a delivery body for the `X-GitHub-Event` name `event`.
///
/// Events and actions stagebot does not handle become [`Event::Ignored`] with a reason; only a
/// payload that claims to be a handled event but lacks what that event must carry is an error.
pub fn parse_event(event: &str, payload: &[u8]) -> Result<Event, EventError> {
    let _ = (event, payload);
    Err(EventError::Field {
        event: event.to_owned(),
        field: "(parser not written yet)".to_owned(),
    })
}
