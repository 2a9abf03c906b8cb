//! The endpoints of one repository ([`RepoClient`]): comments (the sticky one and replies),
//! reactions, commit statuses, deployments and their statuses, permissions, file contents, pull
//! requests, branches and CI results. The transport they go through (authentication, retries,
//! pagination, errors) is the parent module's.

use base64::Engine as _;

use super::*;

/// A client for one repository, acting as one installation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RepoClient {
    pub(super) gh: GitHub,
    pub(super) installation_id: u64,
    pub(super) repo: RepoName,
}

impl RepoClient {
    /// The repository.
    pub fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// The installation it acts as.
    pub fn installation_id(&self) -> u64 {
        self.installation_id
    }

    pub(super) fn path(&self, rest: &str) -> String {
        format!(
            "/repos/{}/{}{rest}",
            enc(self.repo.owner()),
            enc(self.repo.name())
        )
    }

    async fn call(
        &self,
        method: Method,
        route: &'static str,
        rest: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.gh
            .call(
                As::Installation(self.installation_id),
                method,
                route,
                self.path(rest),
                body,
            )
            .await
    }

    /// Create or edit the bot's one sticky comment on `pr` and return its id. The body gets
    /// [`STICKY_MARKER`] prepended. With `known_id`, that comment is edited (if it is gone, the
    /// comment is looked for); otherwise the PR's comments are searched for one made by this app
    /// that carries the marker; otherwise a new comment is posted.
    pub async fn upsert_sticky_comment(
        &self,
        pr: PrNumber,
        known_id: Option<u64>,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let body = with_sticky_marker(body);
        if let Some(id) = known_id {
            match self.edit_comment(id, &body).await {
                Ok(()) => return Ok(id),
                Err(e) if e.is_not_found() => {
                    tracing::info!(
                        comment_id = id,
                        "sticky comment is gone; looking for another"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let app_id = self.gh.app_id();
        let mut lost_answers = 0;
        loop {
            let mut found = None;
            self.gh
                .visit_pages(
                    As::Installation(self.installation_id),
                    "/repos/{owner}/{repo}/issues/{number}/comments",
                    self.path(&format!("/issues/{pr}/comments?per_page={PER_PAGE}")),
                    |page: Vec<routes::IssueComment>| {
                        found = page.into_iter().find(|c| is_our_sticky(c, app_id));
                        found.is_some()
                    },
                )
                .await?;
            if let Some(c) = found {
                if c.body.as_deref() != Some(body.as_str()) {
                    self.edit_comment(c.id, &body).await?;
                }
                return Ok(c.id);
            }
            // Never posted twice: after an answer that leaves open whether GitHub created it,
            // look again before posting again.
            match self.reply_not_twice(pr, &body).await {
                Ok(id) => return Ok(id),
                Err(e) if e.is_retryable() && lost_answers < LOST_ANSWER_RETRIES => {
                    lost_answers += 1;
                    tracing::warn!(%pr, error = %e, "posting the sticky comment got no clear answer; looking for it before posting again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The id of a comment on `pr` made by this app whose body starts with `marker` (a hidden
    /// HTML comment), if there is one.
    pub async fn find_marked_comment(
        &self,
        pr: PrNumber,
        marker: &str,
    ) -> Result<Option<u64>, GitHubError> {
        let app_id = self.gh.app_id();
        let mut found = None;
        self.gh
            .visit_pages(
                As::Installation(self.installation_id),
                "/repos/{owner}/{repo}/issues/{number}/comments",
                self.path(&format!("/issues/{pr}/comments?per_page={PER_PAGE}")),
                |page: Vec<routes::IssueComment>| {
                    found = page
                        .into_iter()
                        .find(|c| is_ours_with(c, app_id, marker))
                        .map(|c| c.id);
                    found.is_some()
                },
            )
            .await?;
        Ok(found)
    }

    async fn edit_comment(&self, id: u64, body: &str) -> Result<(), GitHubError> {
        self.call(
            Method::PATCH,
            "/repos/{owner}/{repo}/issues/comments/{id}",
            &format!("/issues/comments/{id}"),
            Some(to_json(&routes::CommentBody { body })?),
        )
        .await?;
        Ok(())
    }

    /// Post a new comment on `pr`; returns its id.
    pub async fn reply(&self, pr: PrNumber, body: &str) -> Result<u64, GitHubError> {
        let answer = self
            .call(
                Method::POST,
                "/repos/{owner}/{repo}/issues/{number}/comments",
                &format!("/issues/{pr}/comments"),
                Some(to_json(&routes::CommentBody { body })?),
            )
            .await?;
        Ok(answer.json::<routes::IssueComment>("comment")?.id)
    }

    /// Post a new comment on `pr` that must not be posted twice: retried only after a rate
    /// limit, never after an answer that leaves open whether GitHub created it (see
    /// [`find_marked_comment`](Self::find_marked_comment)); returns its id.
    pub async fn reply_not_twice(&self, pr: PrNumber, body: &str) -> Result<u64, GitHubError> {
        let answer = self
            .gh
            .call_not_twice(
                As::Installation(self.installation_id),
                Method::POST,
                "/repos/{owner}/{repo}/issues/{number}/comments",
                self.path(&format!("/issues/{pr}/comments")),
                Some(to_json(&routes::CommentBody { body })?),
            )
            .await?;
        Ok(answer.json::<routes::IssueComment>("comment")?.id)
    }

    /// React to an issue comment. Reacting twice with the same reaction is fine.
    pub async fn react(&self, comment_id: u64, reaction: Reaction) -> Result<(), GitHubError> {
        self.call(
            Method::POST,
            "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
            &format!("/issues/comments/{comment_id}/reactions"),
            Some(to_json(&routes::NewReaction {
                content: reaction.as_str(),
            })?),
        )
        .await?;
        Ok(())
    }

    /// Set a commit status on `sha`. `description` is cut to 140 characters.
    pub async fn set_status(
        &self,
        sha: &Sha,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), GitHubError> {
        let description = truncate_chars(description, DESCRIPTION_MAX_CHARS);
        self.call(
            Method::POST,
            "/repos/{owner}/{repo}/statuses/{sha}",
            &format!("/statuses/{sha}"),
            Some(to_json(&routes::NewStatus {
                state: state.as_str(),
                target_url,
                description: &description,
                context,
            })?),
        )
        .await?;
        Ok(())
    }

    /// Create a GitHub Deployment (never auto-merged, no required contexts); returns its id.
    ///
    /// Retried only after a rate limit, never after an answer that leaves open whether GitHub
    /// created it (a second deployment would stay "in progress" forever): the caller looks the
    /// deployment up by its payload (see [`deployments`](Self::deployments)) before creating
    /// it again.
    pub async fn create_deployment(&self, req: &NewDeployment) -> Result<u64, GitHubError> {
        let answer = self
            .gh
            .call_not_twice(
                As::Installation(self.installation_id),
                Method::POST,
                "/repos/{owner}/{repo}/deployments",
                self.path("/deployments"),
                Some(to_json(&routes::CreateDeployment {
                    git_ref: req.git_ref.as_str(),
                    task: "deploy",
                    auto_merge: false,
                    required_contexts: [],
                    payload: &req.payload,
                    environment: &req.environment,
                    description: &req.description,
                    transient_environment: req.transient_environment,
                    production_environment: req.production_environment,
                })?),
            )
            .await?;
        if answer.status != 201 {
            return Err(GitHubError::Decode(format!(
                "creating a deployment answered {} instead of 201: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        Ok(answer.json::<routes::DeploymentResponse>("deployment")?.id)
    }

    /// The newest deployments of `sha` to `environment` (one page of up to 100, newest first, as
    /// GitHub lists them). Enough to find the deployment of a recent attempt: a commit is not
    /// deployed to one environment a hundred times.
    pub async fn deployments(
        &self,
        environment: &str,
        sha: &Sha,
    ) -> Result<Vec<Deployment>, GitHubError> {
        let answer = self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/deployments",
                &format!(
                    "/deployments?environment={}&sha={}&per_page={PER_PAGE}",
                    enc(environment),
                    enc(sha.as_str())
                ),
                None,
            )
            .await?;
        let items: Vec<routes::DeploymentResponse> = answer.json("deployments")?;
        Ok(items
            .into_iter()
            .map(|d| Deployment {
                id: d.id,
                sha: d.sha,
                environment: d.environment,
                payload: d.payload,
            })
            .collect())
    }

    /// Add a status to a deployment. `description` is cut to 140 characters.
    pub async fn create_deployment_status(
        &self,
        deployment_id: u64,
        st: &NewDeploymentStatus,
    ) -> Result<(), GitHubError> {
        let description = truncate_chars(&st.description, DESCRIPTION_MAX_CHARS);
        self.call(
            Method::POST,
            "/repos/{owner}/{repo}/deployments/{id}/statuses",
            &format!("/deployments/{deployment_id}/statuses"),
            Some(to_json(&routes::CreateDeploymentStatus {
                state: st.state.as_str(),
                environment_url: st.environment_url.as_deref(),
                log_url: st.log_url.as_deref(),
                description: &description,
                auto_inactive: st.auto_inactive,
            })?),
        )
        .await?;
        Ok(())
    }

    /// `login`'s permission on the repository; [`Permission::None`] if they are not a
    /// collaborator (404). Answers are cached for [`PERMISSION_TTL`] per (repository, login).
    pub async fn permission(&self, login: &str) -> Result<Permission, GitHubError> {
        let key = (self.repo.clone(), login.to_ascii_lowercase());
        if let Some((permission, at)) = lock(&self.gh.inner.permissions).get(&key)
            && at.elapsed() < PERMISSION_TTL
        {
            return Ok(*permission);
        }
        let permission = match self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/collaborators/{username}/permission",
                &format!("/collaborators/{}/permission", enc(login)),
                None,
            )
            .await
        {
            Ok(answer) => {
                let r: routes::PermissionResponse = answer.json("collaborator permission")?;
                parse_permission(&r)
            }
            Err(e) if e.is_not_found() => Permission::None,
            Err(e) => return Err(e),
        };
        let mut cache = lock(&self.gh.inner.permissions);
        cache.retain(|_, (_, at)| at.elapsed() < PERMISSION_TTL);
        cache.insert(key, (permission, Instant::now()));
        Ok(permission)
    }

    /// The text of the file at `path` in commit/branch/tag `git_ref` (empty: the default branch);
    /// `None` if it does not exist.
    pub async fn file_at(&self, path: &str, git_ref: &str) -> Result<Option<String>, GitHubError> {
        let encoded_path = path
            .trim_start_matches('/')
            .split('/')
            .map(enc)
            .collect::<Vec<_>>()
            .join("/");
        let answer = match self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/contents/{path}",
                &if git_ref.is_empty() {
                    format!("/contents/{encoded_path}")
                } else {
                    format!("/contents/{encoded_path}?ref={}", enc(git_ref))
                },
                None,
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: routes::ContentFile = answer
            .json("contents")
            .map_err(|_| GitHubError::Decode(format!("{path} at {git_ref} is not a file")))?;
        decode_content(&file)
            .map(Some)
            .map_err(|why| GitHubError::Decode(format!("{path} at {git_ref}: {why}")))
    }

    /// One pull request.
    pub async fn pull_request(&self, pr: PrNumber) -> Result<PrInfo, GitHubError> {
        let answer = self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/pulls/{number}",
                &format!("/pulls/{pr}"),
                None,
            )
            .await?;
        pr_info(answer.json("pull request")?)
    }

    /// Every open pull request (all pages).
    pub async fn open_pulls(&self) -> Result<Vec<PrInfo>, GitHubError> {
        let pulls: Vec<routes::PullRequest> = self
            .gh
            .get_all(
                As::Installation(self.installation_id),
                "/repos/{owner}/{repo}/pulls",
                self.path(&format!("/pulls?state=open&per_page={PER_PAGE}")),
            )
            .await?;
        pulls.into_iter().map(pr_info).collect()
    }

    /// The repository itself: its default branch and clone URL.
    pub async fn repository(&self) -> Result<crate::event::RepoInfo, GitHubError> {
        let r: routes::Repository = self
            .call(Method::GET, "/repos/{owner}/{repo}", "", None)
            .await?
            .json("repository")?;
        if !r.full_name.eq_ignore_ascii_case(&self.repo.to_string()) {
            tracing::info!(asked = %self.repo, answered = %r.full_name, "the repository was renamed");
        }
        Ok(crate::event::RepoInfo {
            name: self.repo.clone(),
            default_branch: r.default_branch,
            clone_url: r.clone_url.unwrap_or_default(),
            private: r.private,
        })
    }

    /// The head commit of `branch`; `None` when there is no such branch.
    pub async fn branch_head(&self, branch: &str) -> Result<Option<Sha>, GitHubError> {
        let answer = match self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/branches/{branch}",
                &format!("/branches/{}", enc(branch)),
                None,
            )
            .await
        {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let b: routes::Branch = answer.json("branch")?;
        Sha::new(&b.commit.sha)
            .map(Some)
            .map_err(|e| GitHubError::Decode(format!("branch {branch}: {e}")))
    }

    /// The check runs and commit statuses of commit `sha` (the newest status per context), as
    /// CI results. A check run needs the `checks: read` permission, a status `statuses: read`.
    pub async fn ci_results(&self, sha: &Sha) -> Result<Vec<CiResult>, GitHubError> {
        let runs: routes::CheckRuns = self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/commits/{ref}/check-runs",
                &format!("/commits/{sha}/check-runs?per_page={PER_PAGE}"),
                None,
            )
            .await?
            .json("check runs")?;
        let combined: routes::CombinedStatus = self
            .call(
                Method::GET,
                "/repos/{owner}/{repo}/commits/{ref}/status",
                &format!("/commits/{sha}/status?per_page={PER_PAGE}"),
                None,
            )
            .await?
            .json("combined status")?;
        let mut out: Vec<CiResult> = runs
            .check_runs
            .into_iter()
            .map(|r| CiResult {
                state: match (r.status.as_str(), r.conclusion.as_deref()) {
                    ("completed", Some("success" | "neutral" | "skipped")) => CiState::Success,
                    ("completed", _) => CiState::Failure,
                    _ => CiState::Pending,
                },
                name: r.name,
            })
            .collect();
        out.extend(combined.statuses.into_iter().map(|s| CiResult {
            state: match s.state.as_str() {
                "success" => CiState::Success,
                "failure" | "error" => CiState::Failure,
                _ => CiState::Pending,
            },
            name: s.context,
        }));
        Ok(out)
    }

    /// A token for `git clone https://x-access-token:TOKEN@…` (the local provider's fetch, the
    /// command provider's `STAGEBOT_CLONE_TOKEN`): scoped to this one repository with
    /// `contents: read` only, so a deploy script (or whatever reads its environment) can neither
    /// write nor reach the installation's other repositories. Minted per call, never cached.
    pub async fn clone_token(&self) -> Result<Secret, GitHubError> {
        self.gh
            .scoped_token(self.installation_id, self.repo.name())
            .await
    }
}

/// `body` with [`STICKY_MARKER`] on its first line (once).
pub fn with_sticky_marker(body: &str) -> String {
    if body.starts_with(STICKY_MARKER) {
        body.to_owned()
    } else {
        format!("{STICKY_MARKER}\n{body}")
    }
}

/// The hidden first line of the bot's one reply to comment `comment_id`, by which a retry finds
/// a reply GitHub may have accepted without stagebot learning it.
pub fn reply_marker(comment_id: u64) -> String {
    format!("<!-- stagebot:reply:{comment_id} -->")
}

/// Is this comment our sticky one: it carries the marker, a bot wrote it and, when GitHub says
/// which app made it, that app is us.
pub(super) fn is_our_sticky(c: &routes::IssueComment, app_id: u64) -> bool {
    is_ours_with(c, app_id, STICKY_MARKER)
}

/// Does this comment start with `marker`, and did a bot write it (this app, when GitHub says)?
pub(super) fn is_ours_with(c: &routes::IssueComment, app_id: u64, marker: &str) -> bool {
    let marked = c
        .body
        .as_deref()
        .is_some_and(|b| b.trim_start().starts_with(marker));
    let by_bot = c
        .user
        .as_ref()
        .is_some_and(|u| u.kind.as_deref() == Some("Bot") || u.login.ends_with("[bot]"));
    let by_us = c
        .performed_via_github_app
        .as_ref()
        .is_none_or(|a| a.id == app_id);
    marked && by_bot && by_us
}

pub(super) fn parse_permission(r: &routes::PermissionResponse) -> Permission {
    // `role_name` has the fine-grained role (maintain, triage); `permission` the legacy level.
    r.role_name
        .as_deref()
        .and_then(|role| role.parse().ok())
        .or_else(|| r.permission.parse().ok())
        .unwrap_or(Permission::None)
}

pub(super) fn decode_content(file: &routes::ContentFile) -> Result<String, String> {
    if file.kind != "file" {
        return Err(format!("is a {}, not a file", file.kind));
    }
    match file.encoding.as_deref() {
        Some("base64") => {}
        other => return Err(format!("unsupported encoding {other:?} (file too large?)")),
    }
    let compact: String = file
        .content
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("bad base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

pub(super) fn pr_info(p: routes::PullRequest) -> Result<PrInfo, GitHubError> {
    let head_sha = Sha::new(&p.head.sha)
        .map_err(|e| GitHubError::Decode(format!("pull request #{}: {e}", p.number)))?;
    let base_repo = p
        .base
        .repo
        .as_ref()
        .map(|r| r.full_name.to_ascii_lowercase());
    let head_repo = p
        .head
        .repo
        .as_ref()
        .map(|r| r.full_name.to_ascii_lowercase());
    let merged = p.merged.unwrap_or(p.merged_at.is_some());
    Ok(PrInfo {
        number: PrNumber(p.number),
        open: p.state == "open",
        merged,
        draft: p.draft.unwrap_or(false),
        title: p.title,
        head_ref: p.head.git_ref,
        head_sha,
        base_ref: p.base.git_ref,
        fork: head_repo.is_none() || head_repo != base_repo,
        author: p.user.map(|u| u.login).unwrap_or_default(),
        head_clone_url: p.head.repo.and_then(|r| r.clone_url).unwrap_or_default(),
    })
}
