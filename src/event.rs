//! Typed webhook events (docs/architecture.md, "The parts and the flow"). The raw payload becomes exactly one [`Event`]; past this
//! module nothing looks at JSON.

use serde::{Deserialize, Serialize};

use crate::types::{PrNumber, RepoName, Sha};

mod parse;
pub mod payloads;

pub use parse::parse_event;

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

/// `check_run`, `check_suite` or `status`: CI results of `sha` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiEvent {
    pub repo: RepoInfo,
    pub installation_id: Option<u64>,
    pub sha: Sha,
    /// The check's name or the status's context (for logs).
    pub name: String,
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
    /// Who caused this event: the author for `created`, the editor for `edited` (GitHub lets
    /// writers edit other people's comments). Commands run with this actor's permission.
    pub sender: Actor,
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
    /// A check run, check suite or commit status of a commit changed (CI gates).
    CiChanged(CiEvent),
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
            Event::CiChanged(e) => Some(&e.repo),
            _ => None,
        }
    }
    pub fn installation_id(&self) -> Option<u64> {
        match self {
            Event::PullRequest(e) => e.installation_id,
            Event::Push(e) => e.installation_id,
            Event::BranchDeleted(e) => e.installation_id,
            Event::Comment(e) => e.installation_id,
            Event::CiChanged(e) => e.installation_id,
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::payloads::{self, CommentPayload, InstallationPayload, PrPayload, PushPayload};
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const HEAD: &str = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0";

    fn sha(s: &str) -> Sha {
        Sha::new(s).unwrap()
    }

    fn repo_name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn webapp() -> RepoInfo {
        RepoInfo {
            name: repo_name("octo-org/webapp"),
            default_branch: "main".into(),
            clone_url: "https://github.com/octo-org/webapp.git".into(),
            private: false,
        }
    }

    fn user(login: &str) -> Actor {
        Actor {
            login: login.into(),
            is_bot: false,
        }
    }

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-webhook-examples")
    }

    fn fixture(name: &str) -> Event {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let event = name.split('-').next().unwrap();
        parse_event(event, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn kind(event: &Event) -> &'static str {
        match event {
            Event::PullRequest(_) => "PullRequest",
            Event::Push(_) => "Push",
            Event::BranchDeleted(_) => "BranchDeleted",
            Event::Comment(_) => "Comment",
            Event::Installation(_) => "Installation",
            Event::InstallationRepositories(_) => "InstallationRepositories",
            Event::Ping { .. } => "Ping",
            Event::CiChanged(_) => "CiChanged",
            Event::Ignored { .. } => "Ignored",
        }
    }

    /// What an example must become, judged from the raw JSON independently of the parser.
    fn expected_kind(event: &str, body: &Value) -> &'static str {
        let action = body["action"].as_str().unwrap_or("");
        match event {
            "pull_request" => match action {
                "opened" | "reopened" | "synchronize" | "ready_for_review"
                | "converted_to_draft" | "closed" | "labeled" | "unlabeled" => "PullRequest",
                _ => "Ignored",
            },
            "push" if body["ref"].as_str().unwrap().starts_with("refs/heads/") => "Push",
            "delete" if body["ref_type"] == "branch" => "BranchDeleted",
            "issue_comment" if action == "created" || action == "edited" => "Comment",
            "installation" => "Installation",
            "installation_repositories" => "InstallationRepositories",
            "ping" => "Ping",
            "check_run" | "check_suite" => "CiChanged",
            "status" if !body["context"].as_str().unwrap().starts_with("stagebot/") => "CiChanged",
            _ => "Ignored",
        }
    }

    #[test]
    fn every_github_example_parses() {
        let dir = examples_dir();
        let folders = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "the conformance corpus {} is missing ({e}); it is vendored under fixtures/",
                dir.display()
            )
        });
        let mut count = 0;
        let mut kinds_seen = std::collections::BTreeSet::new();
        for folder in folders {
            let folder = folder.unwrap().path();
            if !folder.is_dir() {
                continue;
            }
            let event = folder.file_name().unwrap().to_str().unwrap().to_owned();
            for file in std::fs::read_dir(&folder).unwrap() {
                let file = file.unwrap().path();
                if file.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let bytes = std::fs::read(&file).unwrap();
                let raw: Value = serde_json::from_slice(&bytes).unwrap();
                let parsed = parse_event(&event, &bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                assert_eq!(
                    kind(&parsed),
                    expected_kind(&event, &raw),
                    "{}: {parsed:?}",
                    file.display()
                );
                // Typed events carry what the raw payload says.
                match &parsed {
                    Event::PullRequest(e) => {
                        let pr = &raw["pull_request"];
                        assert_eq!(e.pr.number.0, pr["number"].as_u64().unwrap());
                        assert_eq!(e.pr.head_sha.as_str(), pr["head"]["sha"].as_str().unwrap());
                        assert_eq!(e.pr.draft, pr["draft"].as_bool().unwrap());
                        assert_eq!(e.pr.open, pr["state"] == "open");
                        assert!(!e.pr.fork, "the corpus has no fork PRs");
                        assert_eq!(e.installation_id, raw["installation"]["id"].as_u64());
                    }
                    Event::Comment(e) => {
                        assert_eq!(e.body, raw["comment"]["body"].as_str().unwrap());
                        assert_eq!(e.is_pr, !raw["issue"]["pull_request"].is_null());
                    }
                    Event::Installation(e) => {
                        assert_eq!(
                            e.installation_id,
                            raw["installation"]["id"].as_u64().unwrap()
                        );
                    }
                    Event::CiChanged(e) => {
                        let sha = raw["check_run"]["head_sha"]
                            .as_str()
                            .or(raw["check_suite"]["head_sha"].as_str())
                            .or(raw["sha"].as_str())
                            .unwrap();
                        assert_eq!(e.sha.as_str(), sha);
                    }
                    Event::Ignored { reason } => assert!(!reason.is_empty()),
                    _ => {}
                }
                kinds_seen.insert(kind(&parsed));
                count += 1;
            }
        }
        assert!(
            count >= 50,
            "only {count} examples found in {}",
            dir.display()
        );
        for k in [
            "PullRequest",
            "Push",
            "Comment",
            "Installation",
            "InstallationRepositories",
            "Ping",
            "CiChanged",
            "Ignored",
        ] {
            assert!(kinds_seen.contains(k), "no example became {k}");
        }
    }

    #[test]
    fn example_details() {
        let read = |p: &str| std::fs::read(examples_dir().join(p)).unwrap();
        let Event::PullRequest(e) =
            parse_event("pull_request", &read("pull_request/22-synchronize.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            e.action,
            PrAction::Synchronize {
                before: Some(sha("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"))
            }
        );
        assert_eq!(e.pr.head_ref, "changes");
        assert_eq!(e.repo.name, repo_name("Codertocat/Hello-World"));
        assert_eq!(e.repo.default_branch, "master");
        let Event::PullRequest(e) =
            parse_event("pull_request", &read("pull_request/03-closed.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.action, PrAction::Closed { merged: false });
        let Event::PullRequest(e) =
            parse_event("pull_request", &read("pull_request/08-labeled.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            e.action,
            PrAction::Labeled {
                label: "bug".into()
            }
        );
        assert_eq!(
            parse_event("pull_request", &read("pull_request/10-locked.json")).unwrap(),
            Event::Ignored {
                reason: "pull_request action `locked` is not handled".into()
            }
        );
        let Event::CiChanged(e) =
            parse_event("check_run", &read("check_run/01-completed.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (e.sha.as_str(), e.name.as_str()),
            (
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                "Octocoders-linter"
            )
        );
        let Event::CiChanged(e) = parse_event("status", &read("status/00.json")).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.sha.as_str(), e.name.as_str()),
            ("6113728f27ae82c7b1a177c8d03f9e96e0adf246", "default")
        );
        let mut own: Value = serde_json::from_slice(&read("status/00.json")).unwrap();
        own["context"] = "stagebot/production".into();
        assert!(matches!(
            parse_event("status", &serde_json::to_vec(&own).unwrap()).unwrap(),
            Event::Ignored { .. }
        ));
        assert_eq!(
            parse_event("ping", &read("ping/03.json")).unwrap(),
            Event::Ping {
                zen: Some("Anything added dilutes everything else.".into()),
                hook_id: Some(109948940)
            }
        );
        let Event::Push(e) = parse_event("push", &read("push/04.json")).unwrap() else {
            panic!()
        };
        assert!(e.created && e.before.is_zero() && e.is_default_branch);
        assert_eq!(e.branch, "master");
        let Event::Comment(e) =
            parse_event("issue_comment", &read("issue_comment/07-edited.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            e.action,
            CommentAction::Edited {
                previous_body: Some(
                    "You are totally right! I'll get this fixed right away.".into()
                )
            }
        );
        let Event::InstallationRepositories(e) = parse_event(
            "installation_repositories",
            &read("installation_repositories/02-removed.json"),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(e.removed, vec![repo_name("octocat/Hello-World")]);
        assert!(e.added.is_empty());
        let Event::Installation(e) =
            parse_event("installation", &read("installation/05-suspend.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.action, InstallationAction::Suspend);
        assert!(e.repos.is_empty());
    }

    fn login_page_pr() -> PullRequest {
        PullRequest {
            number: PrNumber(42),
            title: "Add login page".into(),
            author: user("Codertocat"),
            head_ref: "feature/login-page".into(),
            head_sha: sha(HEAD),
            head_clone_url: "https://github.com/octo-org/webapp.git".into(),
            base_ref: "main".into(),
            draft: false,
            fork: false,
            merged: false,
            merge_commit_sha: None,
            open: true,
        }
    }

    #[test]
    fn fixture_pull_request_opened() {
        assert_eq!(
            fixture("pull_request-opened.json"),
            Event::PullRequest(PullRequestEvent {
                action: PrAction::Opened,
                repo: webapp(),
                installation_id: Some(4242),
                sender: user("Codertocat"),
                pr: login_page_pr(),
            })
        );
    }

    #[test]
    fn fixture_pull_request_opened_fork() {
        assert_eq!(
            fixture("pull_request-opened-fork.json"),
            Event::PullRequest(PullRequestEvent {
                action: PrAction::Opened,
                repo: webapp(),
                installation_id: Some(4242),
                sender: user("forker"),
                pr: PullRequest {
                    author: user("forker"),
                    head_clone_url: "https://github.com/forker/webapp.git".into(),
                    fork: true,
                    ..login_page_pr()
                },
            })
        );
    }

    #[test]
    fn fixture_pull_request_synchronize() {
        assert_eq!(
            fixture("pull_request-synchronize.json"),
            Event::PullRequest(PullRequestEvent {
                action: PrAction::Synchronize {
                    before: Some(sha("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"))
                },
                repo: webapp(),
                installation_id: Some(4242),
                sender: user("Codertocat"),
                pr: login_page_pr(),
            })
        );
    }

    #[test]
    fn fixture_pull_request_closed_merged() {
        assert_eq!(
            fixture("pull_request-closed-merged.json"),
            Event::PullRequest(PullRequestEvent {
                action: PrAction::Closed { merged: true },
                repo: webapp(),
                installation_id: Some(4242),
                sender: user("Codertocat"),
                pr: PullRequest {
                    merged: true,
                    merge_commit_sha: Some(sha("c4295bd74fb0f4fda03689c3df3f2803b658fd85")),
                    open: false,
                    ..login_page_pr()
                },
            })
        );
    }

    #[test]
    fn fixture_comments() {
        let expected = CommentEvent {
            action: CommentAction::Created,
            repo: webapp(),
            installation_id: Some(4242),
            number: PrNumber(42),
            is_pr: true,
            comment_id: 2101234567,
            body: "/stage".into(),
            author: user("Codertocat"),
            author_association: "OWNER".into(),
            sender: user("Codertocat"),
        };
        assert_eq!(
            fixture("issue_comment-created-pr.json"),
            Event::Comment(expected.clone())
        );
        assert_eq!(
            fixture("issue_comment-edited-pr.json"),
            Event::Comment(CommentEvent {
                action: CommentAction::Edited {
                    previous_body: Some("/stage".into())
                },
                body: "/stage lite".into(),
                ..expected
            })
        );
    }

    fn push_event() -> PushEvent {
        PushEvent {
            repo: webapp(),
            installation_id: Some(4242),
            branch: "feature/login-page".into(),
            before: sha("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"),
            after: sha(HEAD),
            created: false,
            deleted: false,
            forced: false,
            is_default_branch: false,
            sender: user("Codertocat"),
        }
    }

    #[test]
    fn fixture_pushes() {
        assert_eq!(fixture("push-branch.json"), Event::Push(push_event()));
        assert_eq!(
            fixture("push-default-branch.json"),
            Event::Push(PushEvent {
                branch: "main".into(),
                before: sha("c4295bd74fb0f4fda03689c3df3f2803b658fd85"),
                forced: true,
                is_default_branch: true,
                ..push_event()
            })
        );
        assert_eq!(
            fixture("push-branch-deleted.json"),
            Event::Push(PushEvent {
                before: sha(HEAD),
                after: sha(ZERO),
                deleted: true,
                ..push_event()
            })
        );
    }

    #[test]
    fn fixture_delete_and_installation() {
        assert_eq!(
            fixture("delete-branch.json"),
            Event::BranchDeleted(BranchDeletedEvent {
                repo: webapp(),
                installation_id: Some(4242),
                branch: "feature/login-page".into(),
                sender: user("Codertocat"),
            })
        );
        assert_eq!(
            fixture("installation-created.json"),
            Event::Installation(InstallationEvent {
                action: InstallationAction::Created,
                installation_id: 4242,
                account: "octo-org".into(),
                repos: vec![repo_name("octo-org/webapp"), repo_name("octo-org/api")],
                sender: user("Codertocat"),
            })
        );
    }

    fn field_error(event: &str, body: Value) -> String {
        match parse_event(event, body.to_string().as_bytes()) {
            Err(EventError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        let repo = repo_name("octo-org/webapp");
        let mut pr = payloads::pull_request(&PrPayload::new("opened", &repo, 1));
        pr["pull_request"].as_object_mut().unwrap().remove("number");
        assert_eq!(field_error("pull_request", pr), "pull_request.number");

        let mut pr = payloads::pull_request(&PrPayload::new("opened", &repo, 1));
        pr["pull_request"]["head"]["sha"] = json!(12);
        assert_eq!(field_error("pull_request", pr), "pull_request.head.sha");

        let mut pr = payloads::pull_request(&PrPayload::new("labeled", &repo, 1));
        pr.as_object_mut().unwrap().remove("label");
        assert_eq!(field_error("pull_request", pr), "label.name");

        assert_eq!(field_error("pull_request", json!({})), "action");
        assert_eq!(field_error("pull_request", json!({"action": 5})), "action");
        assert_eq!(
            field_error("push", json!({"ref": "refs/heads/x"})),
            "repository"
        );
        assert_eq!(field_error("delete", json!({"ref": "x"})), "ref_type");

        let mut c = payloads::issue_comment(&CommentPayload::new(&repo, 3, "/stage"));
        c["comment"]["user"] = Value::Null;
        assert_eq!(field_error("issue_comment", c), "comment.user");

        let mut push = payloads::push(&PushPayload::new(&repo, "x"));
        push["repository"]
            .as_object_mut()
            .unwrap()
            .remove("clone_url");
        assert_eq!(field_error("push", push), "repository.clone_url");

        let mut i = payloads::installation(&InstallationPayload::new("created", 1, "o", &[]));
        i["installation"]["id"] = json!("one");
        assert_eq!(field_error("installation", i), "installation.id");

        let err = parse_event("pull_request", b"{}").unwrap_err().to_string();
        assert_eq!(
            err,
            "payload for `pull_request` is missing or has a bad `action`"
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        let repo = repo_name("octo-org/webapp");
        let mut pr = payloads::pull_request(&PrPayload::new("opened", &repo, 1));
        pr["pull_request"]["head"]["sha"] = json!("not-a-sha");
        assert!(matches!(
            parse_event("pull_request", pr.to_string().as_bytes()),
            Err(EventError::Invalid { .. })
        ));
        let mut push = payloads::push(&PushPayload::new(&repo, "x"));
        push["repository"]["full_name"] = json!("no-slash");
        assert!(matches!(
            parse_event("push", push.to_string().as_bytes()),
            Err(EventError::Invalid { .. })
        ));
    }

    #[test]
    fn leniency() {
        let repo = repo_name("octo-org/webapp");
        // Optional fields null or of an unexpected type: still parses, with defaults.
        let mut pr = payloads::pull_request(&PrPayload::new("synchronize", &repo, 9));
        pr["pull_request"]["draft"] = Value::Null;
        pr["pull_request"]["title"] = json!(17);
        pr["pull_request"]["merge_commit_sha"] = json!("garbage");
        pr["pull_request"]["user"] = Value::Null;
        pr["before"] = json!("nope");
        pr["pull_request"]["head"]["repo"] = Value::Null;
        pr.as_object_mut().unwrap().remove("installation");
        pr["repository"]
            .as_object_mut()
            .unwrap()
            .remove("default_branch");
        pr["sender"]["login"] = json!("renovate[bot]");
        let Event::PullRequest(e) = parse_event("pull_request", pr.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.action, PrAction::Synchronize { before: None });
        assert!(!e.pr.draft);
        assert_eq!(e.pr.title, "");
        assert_eq!(e.pr.merge_commit_sha, None);
        assert_eq!(e.pr.author, user("ghost"));
        assert!(e.pr.fork, "a deleted head repository counts as a fork");
        assert_eq!(
            e.pr.head_clone_url,
            "https://github.com/octo-org/webapp.git"
        );
        assert_eq!(e.installation_id, None);
        assert_eq!(e.repo.default_branch, "main");
        assert!(e.sender.is_bot);
    }

    #[test]
    fn ignored_events_and_actions() {
        let repo = repo_name("octo-org/webapp");
        let reason =
            |event: &str, body: Value| match parse_event(event, body.to_string().as_bytes()) {
                Ok(Event::Ignored { reason }) => reason,
                other => panic!("expected Ignored, got {other:?}"),
            };
        for event in ["deployment", "workflow_run", "create", ""] {
            assert_eq!(
                reason(event, json!({})),
                format!("event `{event}` is not handled")
            );
        }
        for event in ["check_run", "check_suite", "status"] {
            assert_eq!(
                reason(
                    event,
                    json!({"action": "completed", "check_run": {"id": 4}})
                ),
                format!(
                    "`{event}` without a usable commit or repository: nothing to look at again"
                )
            );
        }
        let tag = payloads::push(&PushPayload {
            git_ref: Some("refs/tags/v1.0".into()),
            ..PushPayload::new(&repo, "x")
        });
        assert_eq!(reason("push", tag), "push to a tag (`refs/tags/v1.0`)");
        let deleted = payloads::issue_comment(&CommentPayload {
            action: "deleted".into(),
            ..CommentPayload::new(&repo, 3, "/stage")
        });
        assert_eq!(
            reason("issue_comment", deleted),
            "issue_comment action `deleted` is not handled"
        );
        assert_eq!(
            reason("delete", json!({"ref": "v1", "ref_type": "tag"})),
            "delete of a tag is not handled"
        );
        assert_eq!(
            reason("installation", json!({"action": "moved"})),
            "installation action `moved` is not handled"
        );
        assert_eq!(
            reason("pull_request", json!({"action": "assigned"})),
            "pull_request action `assigned` is not handled"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let not_objects: &[&[u8]] = &[
            b"",
            b"   ",
            b"[]",
            b"\"x\"",
            b"null",
            b"42",
            b"{",
            b"{\"action\": \"opened\"",
            b"{\"action\": \"opened\"}}",
            b"\xff\xfe",
            b"{\"a\":\"\xff\"}",
        ];
        for event in [
            "pull_request",
            "push",
            "delete",
            "issue_comment",
            "installation",
            "ping",
            "check_run",
        ] {
            for input in not_objects {
                let result = parse_event(event, input);
                assert!(
                    matches!(result, Err(EventError::Json(_))),
                    "{event} {:?}: {result:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Objects with the wrong types where a handled event needs a value.
        let wrong_types: &[(&str, &[u8])] = &[
            ("pull_request", b"{\"action\":\"opened\",\"pull_request\":[]}"),
            ("pull_request", b"{\"action\":\"opened\",\"pull_request\":{\"number\":\"x\"}}"),
            ("pull_request", b"{\"action\":[\"opened\"]}"),
            ("push", b"{\"ref\":42}"),
            ("push", b"{\"ref\":\"refs/heads/\"}"),
            ("delete", b"{\"ref_type\":\"branch\",\"ref\":{}}"),
            ("issue_comment", b"{\"action\":\"created\",\"issue\":{\"number\":-1}}"),
            ("installation", b"{\"action\":\"created\",\"installation\":{\"id\":1.5}}"),
            ("installation_repositories", b"{\"action\":\"added\",\"installation\":{\"id\":1,\"account\":{\"login\":\"o\"}},\"repositories_added\":[{\"full_name\":\"nope\"}]}"),
        ];
        for (event, input) in wrong_types {
            let result = parse_event(event, input);
            assert!(
                result.is_err(),
                "{event} {:?}: {result:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Deeply nested JSON is refused by serde_json's recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_event("push", deep.as_bytes()).is_err());
    }

    /// Every leaf of every fixture, removed or replaced by a value of another type, never panics.
    #[test]
    fn mutated_fixtures_never_panic() {
        fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if let Value::Object(map) = v {
                for (k, child) in map {
                    // URLs, timestamps and counters are never read: skip them to keep this fast.
                    if k.ends_with("url") || k.ends_with("_at") || k.ends_with("_count") {
                        continue;
                    }
                    prefix.push(k.clone());
                    out.push(prefix.clone());
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks");
        let mut mutations = 0;
        for file in std::fs::read_dir(dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            let event = name.split('-').next().unwrap().to_owned();
            let original: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            let mut all = Vec::new();
            paths(&original, &mut Vec::new(), &mut all);
            for path in all {
                // Removed, null, or of a type no field has (`[]`).
                for replacement in [None, Some(Value::Null), Some(json!([]))] {
                    let mut v = original.clone();
                    let (last, parents) = path.split_last().unwrap();
                    let mut target = &mut v;
                    for p in parents {
                        target = &mut target[p.as_str()];
                    }
                    match &replacement {
                        None => {
                            target.as_object_mut().unwrap().remove(last);
                        }
                        Some(r) => target[last.as_str()] = r.clone(),
                    }
                    let _ = parse_event(&event, v.to_string().as_bytes());
                    mutations += 1;
                }
            }
        }
        assert!(mutations > 500, "{mutations}");
    }

    #[test]
    fn payload_builders_round_trip() {
        let repo = repo_name("octo-org/webapp");
        let parse =
            |event: &str, body: Value| parse_event(event, body.to_string().as_bytes()).unwrap();

        let p = PrPayload {
            head_ref: "feature/login-page".into(),
            head_sha: HEAD.into(),
            ..PrPayload::new("opened", &repo, 42)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert_eq!(e.action, PrAction::Opened);
        assert_eq!(e.repo, webapp());
        assert_eq!(e.installation_id, Some(1));
        assert_eq!(
            e.pr,
            PullRequest {
                title: "Pull request 42".into(),
                author: user("octocat"),
                ..login_page_pr()
            }
        );

        let p = PrPayload {
            fork: true,
            draft: true,
            author_login: "dependabot[bot]".into(),
            author_is_bot: true,
            clone_url: Some("file:///srv/git/webapp".into()),
            ..PrPayload::new("reopened", &repo, 7)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert!(e.pr.fork && e.pr.draft && e.pr.author.is_bot && e.sender.is_bot);
        assert_eq!(e.repo.clone_url, "file:///srv/git/webapp");
        assert_eq!(
            e.pr.head_clone_url,
            "https://github.com/dependabot[bot]/webapp.git"
        );

        let p = PrPayload {
            merged: true,
            merge_commit_sha: Some("c4295bd74fb0f4fda03689c3df3f2803b658fd85".into()),
            sender_login: Some("maintainer".into()),
            ..PrPayload::new("closed", &repo, 7)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert_eq!(e.action, PrAction::Closed { merged: true });
        assert!(!e.pr.open && e.pr.merged);
        assert_eq!(e.sender, user("maintainer"));
        assert_eq!(
            e.pr.merge_commit_sha,
            Some(sha("c4295bd74fb0f4fda03689c3df3f2803b658fd85"))
        );

        let p = PrPayload {
            before: Some(ZERO.into()),
            ..PrPayload::new("synchronize", &repo, 7)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert_eq!(
            e.action,
            PrAction::Synchronize {
                before: Some(sha(ZERO))
            }
        );

        let p = PrPayload {
            label: Some("stage".into()),
            ..PrPayload::new("unlabeled", &repo, 7)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert_eq!(
            e.action,
            PrAction::Unlabeled {
                label: "stage".into()
            }
        );

        let p = PrPayload {
            head_repo_deleted: true,
            ..PrPayload::new("closed", &repo, 7)
        };
        let Event::PullRequest(e) = parse("pull_request", payloads::pull_request(&p)) else {
            panic!()
        };
        assert!(e.pr.fork);

        let p = PushPayload {
            before: "f95f852bd8fca8fcc58a9a2d6c842781e32a215e".into(),
            after: HEAD.into(),
            sender_login: "Codertocat".into(),
            installation_id: Some(4242),
            ..PushPayload::new(&repo, "feature/login-page")
        };
        assert_eq!(parse("push", payloads::push(&p)), Event::Push(push_event()));
        let p = PushPayload {
            after: ZERO.into(),
            deleted: true,
            ..PushPayload::new(&repo, "main")
        };
        let Event::Push(e) = parse("push", payloads::push(&p)) else {
            panic!()
        };
        assert!(e.deleted && e.is_default_branch && e.after.is_zero());

        assert_eq!(
            parse(
                "delete",
                payloads::delete_branch(&repo, Some(4242), "feature/login-page", "Codertocat")
            ),
            fixture("delete-branch.json")
        );

        let p = CommentPayload {
            action: "edited".into(),
            is_pr: false,
            author_login: "renovate[bot]".into(),
            author_association: "NONE".into(),
            previous_body: Some("/stage".into()),
            ..CommentPayload::new(&repo, 5, "/stage lite")
        };
        assert_eq!(
            parse("issue_comment", payloads::issue_comment(&p)),
            Event::Comment(CommentEvent {
                action: CommentAction::Edited {
                    previous_body: Some("/stage".into())
                },
                repo: webapp(),
                installation_id: Some(1),
                number: PrNumber(5),
                is_pr: false,
                comment_id: 1_000_005,
                body: "/stage lite".into(),
                author: Actor {
                    login: "renovate[bot]".into(),
                    is_bot: true
                },
                author_association: "NONE".into(),
                sender: Actor {
                    login: "renovate[bot]".into(),
                    is_bot: true
                },
            })
        );

        // An edit by someone else carries the editor as `sender`; an edit without a sender is
        // malformed (it could not be judged), a new comment without one is its author's.
        let p = CommentPayload {
            action: "edited".into(),
            author_login: "admin".into(),
            sender_login: Some("writer".into()),
            ..CommentPayload::new(&repo, 5, "/promote production")
        };
        let Event::Comment(e) = parse("issue_comment", payloads::issue_comment(&p)) else {
            panic!()
        };
        assert_eq!((e.author, e.sender), (user("admin"), user("writer")));
        let mut edited = payloads::issue_comment(&p);
        edited.as_object_mut().unwrap().remove("sender");
        assert!(matches!(
            parse_event("issue_comment", edited.to_string().as_bytes()),
            Err(EventError::Field { field, .. }) if field == "sender"
        ));
        let mut created = payloads::issue_comment(&CommentPayload::new(&repo, 5, "/stage"));
        created.as_object_mut().unwrap().remove("sender");
        let Event::Comment(e) = parse("issue_comment", created) else {
            panic!()
        };
        assert_eq!(e.sender, user("octo-org"));

        let repos = [repo.clone(), repo_name("octo-org/api")];
        let p = InstallationPayload::new("new_permissions_accepted", 77, "octo-org", &repos);
        assert_eq!(
            parse("installation", payloads::installation(&p)),
            Event::Installation(InstallationEvent {
                action: InstallationAction::NewPermissionsAccepted,
                installation_id: 77,
                account: "octo-org".into(),
                repos: repos.to_vec(),
                sender: user("octo-org"),
            })
        );
        assert_eq!(
            parse(
                "installation_repositories",
                payloads::installation_repositories("added", 77, "octo-org", &repos[1..], &[])
            ),
            Event::InstallationRepositories(InstallationReposEvent {
                installation_id: 77,
                account: "octo-org".into(),
                added: repos[1..].to_vec(),
                removed: vec![],
                sender: user("octo-org"),
            })
        );
        assert_eq!(
            parse("ping", payloads::ping("Keep it logically awesome.", 9)),
            Event::Ping {
                zen: Some("Keep it logically awesome.".into()),
                hook_id: Some(9)
            }
        );
    }

    /// Every JSON value of another shape, put in place of a payload's values one at a time.
    fn replacements() -> Vec<Value> {
        [
            "null",
            "1",
            "-1",
            "1.5",
            "18446744073709551616",
            "\"x\"",
            "\"\\u00e9\"",
            "true",
            "[]",
            "{}",
            "[\"x\", 1]",
            "[{}]",
            "{\"a\": 1}",
        ]
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect()
    }

    /// Every path to a value inside `v` (object keys and array indexes).
    fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (k, child) in children {
            at.push(k);
            out.push(at.clone());
            paths(child, at, out);
            at.pop();
        }
    }

    fn replaced(v: &Value, path: &[String], with: &Value) -> Value {
        let mut v = v.clone();
        let mut at = &mut v;
        for k in path {
            at = match at {
                Value::Object(m) => m.get_mut(k).unwrap(),
                Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        *at = with.clone();
        v
    }

    /// The one-pass reader gives what the reader through a JSON tree gives: for every example,
    /// and for the examples with any one value swapped for a value of every other shape.
    #[test]
    fn one_pass_reads_like_a_tree() {
        let same = |event: &str, bytes: &[u8]| {
            let one = format!("{:?}", parse_event(event, bytes));
            let tree = format!("{:?}", parse::parse_event_through_tree(event, bytes));
            assert_eq!(one, tree, "{event}: {}", String::from_utf8_lossy(bytes));
        };
        let dir = examples_dir();
        let mut swapped = 0;
        for (event, file) in [
            ("pull_request", "pull_request/08-labeled.json"),
            (
                "installation_repositories",
                "installation_repositories/00-added.json",
            ),
            ("issue_comment", "issue_comment/00-created.json"),
            ("push", "push/00.json"),
            ("workflow_run", "pull_request/08-labeled.json"),
        ] {
            let path = dir.join(file);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
            same(event, &bytes);
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            let mut all = Vec::new();
            paths(&value, &mut Vec::new(), &mut all);
            for path in all.iter().filter(|p| p.len() <= 3) {
                for with in replacements() {
                    same(
                        event,
                        &serde_json::to_vec(&replaced(&value, path, &with)).unwrap(),
                    );
                    swapped += 1;
                }
            }
        }
        assert!(swapped > 1000, "only {swapped} variants");
        for folder in std::fs::read_dir(&dir).unwrap() {
            let folder = folder.unwrap().path();
            let Some(event) = folder
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if !folder.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&folder).unwrap() {
                same(&event, &std::fs::read(file.unwrap().path()).unwrap());
            }
        }
    }

    /// Strings nobody reads are checked as a tree checks them (escapes, surrogates, control
    /// characters).
    #[test]
    fn unread_strings_are_checked_like_read_ones() {
        for text in [
            r#"{"zz": "\ud800"}"#,
            r#"{"zz": "\udc00"}"#,
            r#"{"zz": "\ud800\u0041"}"#,
            r#"{"zz": "\ud83d\ude00"}"#,
            r#"{"zz": "\x"}"#,
            "{\"zz\": \"a\u{1}b\"}",
            r#"{"zz": {"y": ["\ud800"]}}"#,
            r#"{"action": "labeled", "zz": "\ud800"}"#,
        ] {
            for event in [
                "pull_request",
                "push",
                "installation",
                "workflow_run",
                "ping",
            ] {
                assert_eq!(
                    format!("{:?}", parse_event(event, text.as_bytes())),
                    format!(
                        "{:?}",
                        parse::parse_event_through_tree(event, text.as_bytes())
                    ),
                    "{event} {text}"
                );
            }
        }
    }

    /// A key given twice: the last one counts (as a JSON object keeps it).
    #[test]
    fn a_key_given_twice_reads_as_its_last() {
        let bytes = br#"{"action": "opened", "zen": "first", "zen": "second", "hook_id": 7}"#;
        assert_eq!(
            parse_event("ping", bytes).unwrap(),
            Event::Ping {
                zen: Some("second".into()),
                hook_id: Some(7)
            }
        );
        assert_eq!(
            format!("{:?}", parse_event("ping", bytes)),
            format!("{:?}", parse::parse_event_through_tree("ping", bytes))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            event in prop::sample::select(vec![
                "pull_request", "push", "delete", "issue_comment", "installation",
                "installation_repositories", "ping", "check_run",
            ]),
            bytes in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = parse_event(event, &bytes);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            event in prop::sample::select(vec![
                "pull_request", "push", "delete", "issue_comment", "installation",
                "installation_repositories", "ping", "workflow_run",
            ]),
            text in r#"\{("(action|ref|ref_type|pull_request|repository|sender|installation|number|head|sha|full_name|clone_url|login|id|issue|comment|before|after)":(null|1|-1|"[a-z/]{0,8}"|true|\[\]|\{\}|\{"[a-z_]{1,6}":("x"|1|null)\}),?){0,8}\}"#,
        ) {
            let one = format!("{:?}", parse_event(event, text.as_bytes()));
            let tree = format!("{:?}", parse::parse_event_through_tree(event, text.as_bytes()));
            prop_assert_eq!(one, tree);
        }
    }
}
