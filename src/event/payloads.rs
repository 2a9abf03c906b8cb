//! Webhook bodies in GitHub's shape, for tests: the test harness sends these to the real router,
//! and [`parse_event`](super::parse_event) accepts every one of them.
//!
//! Each builder takes a parameter struct; start from its `new(…)` (sensible defaults for every
//! field) and override what the test is about:
//!
//! ```
//! use stagebot::event::payloads::{self, PrPayload};
//! let repo = "octo-org/webapp".parse().unwrap();
//! let body = payloads::pull_request(&PrPayload {
//!     fork: true,
//!     ..PrPayload::new("opened", &repo, 7)
//! });
//! assert_eq!(body["pull_request"]["number"], 7);
//! ```
//!
//! The bodies carry the fields stagebot reads plus enough of the rest (ids, node ids, URLs,
//! timestamps) to look like a real delivery; they are not a full copy of GitHub's schema.

use serde_json::{Value, json};

use crate::types::RepoName;

/// The all-zero sha GitHub sends for a created or deleted ref.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Parameters of a `pull_request` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrPayload {
    /// `opened`, `synchronize`, `closed`, `labeled`, ...
    pub action: String,
    /// The base repository.
    pub repo: RepoName,
    pub installation_id: Option<u64>,
    pub number: u64,
    pub title: String,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    /// The base repository's default branch.
    pub default_branch: String,
    pub author_login: String,
    pub author_is_bot: bool,
    /// Who triggered the delivery; `None` means the author.
    pub sender_login: Option<String>,
    pub draft: bool,
    /// The head branch lives in `<author_login>/<repo name>` instead of the base repository.
    pub fork: bool,
    /// Sends `"head": {"repo": null}`, as GitHub does after a fork was deleted.
    pub head_repo_deleted: bool,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    /// The base repository's clone URL; `None` means `https://github.com/<repo>.git`.
    pub clone_url: Option<String>,
    /// The head repository's clone URL; `None` means the base one, or the fork's GitHub URL.
    pub head_clone_url: Option<String>,
    /// `before` of a `synchronize`.
    pub before: Option<String>,
    /// `label.name` of a `labeled`/`unlabeled`.
    pub label: Option<String>,
    pub private: bool,
}

impl PrPayload {
    /// An open, same-repository, non-draft pull request from `octocat`'s branch `feature` to `main`.
    pub fn new(action: &str, repo: &RepoName, number: u64) -> Self {
        Self {
            action: action.to_owned(),
            repo: repo.clone(),
            installation_id: Some(1),
            number,
            title: format!("Pull request {number}"),
            head_ref: "feature".to_owned(),
            head_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".to_owned(),
            base_ref: "main".to_owned(),
            default_branch: "main".to_owned(),
            author_login: "octocat".to_owned(),
            author_is_bot: false,
            sender_login: None,
            draft: false,
            fork: false,
            head_repo_deleted: false,
            merged: false,
            merge_commit_sha: None,
            clone_url: None,
            head_clone_url: None,
            before: None,
            label: None,
            private: false,
        }
    }
}

/// A `pull_request` delivery.
pub fn pull_request(p: &PrPayload) -> Value {
    let base_clone = clone_url_of(&p.repo, p.clone_url.as_deref());
    let base_repo = repository(
        &p.repo.to_string(),
        &base_clone,
        &p.default_branch,
        p.private,
        false,
    );
    let head_repo = if p.head_repo_deleted {
        Value::Null
    } else if p.fork {
        // Not a `RepoName`: a bot's fork (`dependabot[bot]/webapp`) need not be a valid one.
        let fork_name = format!("{}/{}", p.author_login, p.repo.name());
        let clone = p
            .head_clone_url
            .clone()
            .unwrap_or_else(|| format!("https://github.com/{fork_name}.git"));
        repository(&fork_name, &clone, &p.default_branch, p.private, true)
    } else {
        let clone = p
            .head_clone_url
            .clone()
            .unwrap_or_else(|| base_clone.clone());
        repository(
            &p.repo.to_string(),
            &clone,
            &p.default_branch,
            p.private,
            false,
        )
    };
    let closed = p.action == "closed";
    let author = user(&p.author_login, p.author_is_bot);
    let sender_login = p.sender_login.as_deref().unwrap_or(&p.author_login);
    let sender = if sender_login == p.author_login {
        author.clone()
    } else {
        user(sender_login, false)
    };
    let api = format!("https://api.github.com/repos/{}", p.repo);
    let html = format!("https://github.com/{}", p.repo);
    let head_owner = if p.fork {
        p.author_login.as_str()
    } else {
        p.repo.owner()
    };
    let mut body = json!({
        "action": p.action,
        "number": p.number,
        "pull_request": {
            "url": format!("{api}/pulls/{}", p.number),
            "id": 279_147_437u64 + p.number,
            "node_id": "MDExOlB1bGxSZXF1ZXN0Mjc5MTQ3NDM3",
            "html_url": format!("{html}/pull/{}", p.number),
            "diff_url": format!("{html}/pull/{}.diff", p.number),
            "number": p.number,
            "state": if closed { "closed" } else { "open" },
            "locked": false,
            "title": p.title,
            "user": author,
            "body": "",
            "created_at": "2024-05-01T10:00:00Z",
            "updated_at": "2024-05-01T10:05:00Z",
            "closed_at": if closed { json!("2024-05-02T09:00:00Z") } else { Value::Null },
            "merged_at": if p.merged { json!("2024-05-02T09:00:00Z") } else { Value::Null },
            "merge_commit_sha": p.merge_commit_sha,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": p.label.iter().map(|l| json!({"name": l, "color": "d73a4a", "default": false})).collect::<Vec<_>>(),
            "milestone": null,
            "draft": p.draft,
            "head": {
                "label": format!("{head_owner}:{}", p.head_ref),
                "ref": p.head_ref,
                "sha": p.head_sha,
                "user": user(head_owner, false),
                "repo": head_repo,
            },
            "base": {
                "label": format!("{}:{}", p.repo.owner(), p.base_ref),
                "ref": p.base_ref,
                "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
                "user": user(p.repo.owner(), false),
                "repo": base_repo.clone(),
            },
            "author_association": "CONTRIBUTOR",
            "merged": p.merged,
            "mergeable": null,
            "rebaseable": null,
            "mergeable_state": "unknown",
            "merged_by": if p.merged { user(sender_login, false) } else { Value::Null },
            "comments": 0,
            "review_comments": 0,
            "maintainer_can_modify": p.fork,
            "commits": 1,
            "additions": 1,
            "deletions": 1,
            "changed_files": 1,
        },
        "repository": base_repo,
        "sender": sender,
    });
    if let Some(before) = &p.before {
        body["before"] = json!(before);
        body["after"] = json!(p.head_sha);
    }
    if let Some(label) = &p.label {
        body["label"] = json!({"name": label, "color": "d73a4a", "default": false});
    }
    add_installation(&mut body, p.installation_id);
    body
}

/// Parameters of a `push` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPayload {
    pub repo: RepoName,
    pub installation_id: Option<u64>,
    /// Pushed to `refs/heads/<branch>` unless `git_ref` is set.
    pub branch: String,
    /// The full ref, e.g. `refs/tags/v1.0`, overriding `branch`.
    pub git_ref: Option<String>,
    pub before: String,
    pub after: String,
    pub created: bool,
    pub deleted: bool,
    pub forced: bool,
    pub default_branch: String,
    pub sender_login: String,
    pub sender_is_bot: bool,
    /// `None` means `https://github.com/<repo>.git`.
    pub clone_url: Option<String>,
    pub private: bool,
}

impl PushPayload {
    /// A fast-forward push of one commit to `branch` by `octocat`.
    pub fn new(repo: &RepoName, branch: &str) -> Self {
        Self {
            repo: repo.clone(),
            installation_id: Some(1),
            branch: branch.to_owned(),
            git_ref: None,
            before: "f95f852bd8fca8fcc58a9a2d6c842781e32a215e".to_owned(),
            after: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".to_owned(),
            created: false,
            deleted: false,
            forced: false,
            default_branch: "main".to_owned(),
            sender_login: "octocat".to_owned(),
            sender_is_bot: false,
            clone_url: None,
            private: false,
        }
    }
}

/// A `push` delivery.
pub fn push(p: &PushPayload) -> Value {
    let clone = clone_url_of(&p.repo, p.clone_url.as_deref());
    let mut repo = repository(
        &p.repo.to_string(),
        &clone,
        &p.default_branch,
        p.private,
        false,
    );
    // Push payloads carry `master_branch` and numeric timestamps.
    repo["master_branch"] = json!(p.default_branch);
    repo["pushed_at"] = json!(1_714_557_900u64);
    repo["created_at"] = json!(1_557_933_565u64);
    let git_ref = p
        .git_ref
        .clone()
        .unwrap_or_else(|| format!("refs/heads/{}", p.branch));
    let commit = json!({
        "id": p.after,
        "tree_id": "a3dd2b3b8c6d1e5f4a7c9b0e2d4f6a8c1b3d5e7f",
        "distinct": true,
        "message": "Update README.md",
        "timestamp": "2024-05-01T12:05:00+02:00",
        "url": format!("https://github.com/{}/commit/{}", p.repo, p.after),
        "author": {"name": p.sender_login, "email": format!("{}@users.noreply.github.com", p.sender_login), "username": p.sender_login},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": [],
        "removed": [],
        "modified": ["README.md"],
    });
    let commits = if p.deleted {
        json!([])
    } else {
        json!([commit.clone()])
    };
    let mut body = json!({
        "ref": git_ref,
        "before": p.before,
        "after": p.after,
        "repository": repo,
        "pusher": {"name": p.sender_login, "email": format!("{}@users.noreply.github.com", p.sender_login)},
        "sender": user(&p.sender_login, p.sender_is_bot),
        "created": p.created,
        "deleted": p.deleted,
        "forced": p.forced,
        "base_ref": null,
        "compare": format!("https://github.com/{}/compare/{}...{}", p.repo, short(&p.before), short(&p.after)),
        "commits": commits,
        "head_commit": if p.deleted { Value::Null } else { commit },
    });
    add_installation(&mut body, p.installation_id);
    body
}

/// A `delete` delivery for a branch.
pub fn delete_branch(
    repo: &RepoName,
    installation_id: Option<u64>,
    branch: &str,
    sender_login: &str,
) -> Value {
    let clone = clone_url_of(repo, None);
    let mut body = json!({
        "ref": branch,
        "ref_type": "branch",
        "pusher_type": "user",
        "repository": repository(&repo.to_string(), &clone, "main", false, false),
        "sender": user(sender_login, false),
    });
    add_installation(&mut body, installation_id);
    body
}

/// Parameters of an `issue_comment` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentPayload {
    /// `created`, `edited` or `deleted`.
    pub action: String,
    pub repo: RepoName,
    pub installation_id: Option<u64>,
    /// The issue or pull request number.
    pub number: u64,
    /// The issue is a pull request.
    pub is_pr: bool,
    pub comment_id: u64,
    pub body: String,
    pub author_login: String,
    pub author_is_bot: bool,
    /// `OWNER`, `MEMBER`, `COLLABORATOR`, `CONTRIBUTOR`, `NONE`, ...
    pub author_association: String,
    /// `changes.body.from` of an `edited`.
    pub previous_body: Option<String>,
    /// `None` means `https://github.com/<repo>.git`.
    pub clone_url: Option<String>,
    /// Who caused the event (the editor of an `edited`); `None` means the author.
    pub sender_login: Option<String>,
}

impl CommentPayload {
    /// A new comment `body` by the repository's owner on pull request `number`.
    pub fn new(repo: &RepoName, number: u64, body: &str) -> Self {
        Self {
            action: "created".to_owned(),
            repo: repo.clone(),
            installation_id: Some(1),
            number,
            is_pr: true,
            comment_id: 1_000_000 + number,
            body: body.to_owned(),
            author_login: repo.owner().to_owned(),
            author_is_bot: false,
            author_association: "OWNER".to_owned(),
            previous_body: None,
            clone_url: None,
            sender_login: None,
        }
    }
}

/// An `issue_comment` delivery.
pub fn issue_comment(p: &CommentPayload) -> Value {
    let clone = clone_url_of(&p.repo, p.clone_url.as_deref());
    let html = format!("https://github.com/{}", p.repo);
    let api = format!("https://api.github.com/repos/{}", p.repo);
    let kind = if p.is_pr { "pull" } else { "issues" };
    let author = user(&p.author_login, p.author_is_bot);
    let mut issue = json!({
        "url": format!("{api}/issues/{}", p.number),
        "html_url": format!("{html}/{kind}/{}", p.number),
        "id": 444_500_041u64 + p.number,
        "node_id": "MDU6SXNzdWU0NDQ1MDAwNDE=",
        "number": p.number,
        "title": format!("Issue {}", p.number),
        "user": user(p.repo.owner(), false),
        "labels": [],
        "state": "open",
        "locked": false,
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "comments": 1,
        "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:10:00Z",
        "closed_at": null,
        "author_association": "OWNER",
        "body": "",
    });
    if p.is_pr {
        issue["pull_request"] = json!({
            "url": format!("{api}/pulls/{}", p.number),
            "html_url": format!("{html}/pull/{}", p.number),
            "diff_url": format!("{html}/pull/{}.diff", p.number),
            "patch_url": format!("{html}/pull/{}.patch", p.number),
            "merged_at": null,
        });
    }
    let mut body = json!({
        "action": p.action,
        "issue": issue,
        "comment": {
            "url": format!("{api}/issues/comments/{}", p.comment_id),
            "html_url": format!("{html}/{kind}/{}#issuecomment-{}", p.number, p.comment_id),
            "issue_url": format!("{api}/issues/{}", p.number),
            "id": p.comment_id,
            "node_id": "MDEyOklzc3VlQ29tbWVudDQ5MjcwMDQwMA==",
            "user": author.clone(),
            "created_at": "2024-05-01T10:10:00Z",
            "updated_at": "2024-05-01T10:10:00Z",
            "author_association": p.author_association,
            "body": p.body,
            "performed_via_github_app": null,
        },
        "repository": repository(&p.repo.to_string(), &clone, "main", false, false),
        "sender": match &p.sender_login {
            Some(login) => user(login, login.ends_with("[bot]")),
            None => author,
        },
    });
    if let Some(previous) = &p.previous_body {
        body["changes"] = json!({"body": {"from": previous}});
    }
    add_installation(&mut body, p.installation_id);
    body
}

/// Parameters of an `installation` delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationPayload {
    /// `created`, `deleted`, `suspend`, `unsuspend`, `new_permissions_accepted`.
    pub action: String,
    pub installation_id: u64,
    pub account: String,
    pub repos: Vec<RepoName>,
    pub sender_login: String,
}

impl InstallationPayload {
    /// `account` installs the app (as itself) on `repos`.
    pub fn new(action: &str, installation_id: u64, account: &str, repos: &[RepoName]) -> Self {
        Self {
            action: action.to_owned(),
            installation_id,
            account: account.to_owned(),
            repos: repos.to_vec(),
            sender_login: account.to_owned(),
        }
    }
}

/// An `installation` delivery.
pub fn installation(p: &InstallationPayload) -> Value {
    json!({
        "action": p.action,
        "installation": installation_object(p.installation_id, &p.account),
        "repositories": p.repos.iter().map(repo_ref).collect::<Vec<_>>(),
        "requester": null,
        "sender": user(&p.sender_login, false),
    })
}

/// An `installation_repositories` delivery (`action` is `added` or `removed`).
pub fn installation_repositories(
    action: &str,
    installation_id: u64,
    account: &str,
    added: &[RepoName],
    removed: &[RepoName],
) -> Value {
    json!({
        "action": action,
        "installation": installation_object(installation_id, account),
        "repository_selection": "selected",
        "repositories_added": added.iter().map(repo_ref).collect::<Vec<_>>(),
        "repositories_removed": removed.iter().map(repo_ref).collect::<Vec<_>>(),
        "requester": null,
        "sender": user(account, false),
    })
}

/// A `ping` delivery.
pub fn ping(zen: &str, hook_id: u64) -> Value {
    json!({
        "zen": zen,
        "hook_id": hook_id,
        "hook": {
            "type": "App",
            "id": hook_id,
            "name": "web",
            "active": true,
            "events": ["pull_request", "push", "delete", "issue_comment"],
            "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://stagebot.example.com/webhook"},
            "app_id": 12345,
        },
    })
}

fn clone_url_of(repo: &RepoName, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("https://github.com/{repo}.git"), str::to_owned)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A stable, made-up numeric id for a name.
fn id_of(name: &str) -> u64 {
    name.bytes().fold(1_469_598_103u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511)
    }) % 100_000_000
}

fn user(login: &str, is_bot: bool) -> Value {
    json!({
        "login": login,
        "id": id_of(login),
        "node_id": "MDQ6VXNlcjIxMDMxMDY3",
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", id_of(login)),
        "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if is_bot { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn repository(
    repo: &str,
    clone_url: &str,
    default_branch: &str,
    private: bool,
    fork: bool,
) -> Value {
    let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
    json!({
        "id": id_of(repo),
        "node_id": "MDEwOlJlcG9zaXRvcnkxODYxODUzMDI=",
        "name": name,
        "full_name": repo,
        "private": private,
        "owner": user(owner, false),
        "html_url": format!("https://github.com/{repo}"),
        "description": null,
        "fork": fork,
        "url": format!("https://api.github.com/repos/{repo}"),
        "created_at": "2019-05-15T15:19:25Z",
        "updated_at": "2024-05-01T10:00:00Z",
        "pushed_at": "2024-05-01T10:00:00Z",
        "git_url": format!("git://github.com/{repo}.git"),
        "ssh_url": format!("git@github.com:{repo}.git"),
        "clone_url": clone_url,
        "svn_url": format!("https://github.com/{repo}"),
        "homepage": null,
        "size": 0,
        "language": "Rust",
        "archived": false,
        "disabled": false,
        "visibility": if private { "private" } else { "public" },
        "default_branch": default_branch,
    })
}

fn repo_ref(repo: &RepoName) -> Value {
    json!({
        "id": id_of(&repo.to_string()),
        "node_id": "MDEwOlJlcG9zaXRvcnkxODYxODUzMDI=",
        "name": repo.name(),
        "full_name": repo.to_string(),
        "private": false,
    })
}

fn installation_object(id: u64, account: &str) -> Value {
    json!({
        "id": id,
        "account": user(account, false),
        "repository_selection": "selected",
        "access_tokens_url": format!("https://api.github.com/app/installations/{id}/access_tokens"),
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": format!("https://github.com/settings/installations/{id}"),
        "app_id": 12345,
        "app_slug": "stagebot",
        "target_id": id_of(account),
        "target_type": "Organization",
        "permissions": {"contents": "read", "deployments": "write", "issues": "write", "metadata": "read", "pull_requests": "write", "statuses": "write"},
        "events": ["delete", "issue_comment", "pull_request", "push"],
        "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z",
        "single_file_name": null,
        "suspended_at": null,
        "suspended_by": null,
    })
}

fn add_installation(body: &mut Value, installation_id: Option<u64>) {
    if let Some(id) = installation_id {
        body["installation"] =
            json!({"id": id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="});
    }
}

/// A `check_run` payload (action `created`, `completed`…) for check `name` on commit `sha`.
pub fn check_run(
    repo: &RepoName,
    installation_id: Option<u64>,
    sha: &str,
    name: &str,
    status: &str,
    conclusion: Option<&str>,
) -> Value {
    let full = repo.to_string();
    let action = if status == "completed" {
        "completed"
    } else {
        "created"
    };
    let mut body = json!({
        "action": action,
        "check_run": {
            "id": id_of(name),
            "name": name,
            "head_sha": sha,
            "status": status,
            "conclusion": conclusion,
            "app": {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"},
            "check_suite": {"id": id_of(sha), "head_sha": sha, "status": status, "conclusion": conclusion},
        },
        "repository": repository(&full, &format!("https://github.com/{full}.git"), "main", false, false),
        "sender": user("github-actions[bot]", true),
    });
    if let Some(id) = installation_id {
        body["installation"] =
            json!({"id": id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="});
    }
    body
}

/// A `status` payload: commit status `context` of commit `sha` is now `state`.
pub fn status(
    repo: &RepoName,
    installation_id: Option<u64>,
    sha: &str,
    context: &str,
    state: &str,
) -> Value {
    let full = repo.to_string();
    let mut body = json!({
        "id": id_of(context),
        "sha": sha,
        "name": full,
        "target_url": null,
        "context": context,
        "description": null,
        "state": state,
        "branches": [],
        "repository": repository(&full, &format!("https://github.com/{full}.git"), "main", false, false),
        "sender": user("ci-bot[bot]", true),
    });
    if let Some(id) = installation_id {
        body["installation"] =
            json!({"id": id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="});
    }
    body
}
