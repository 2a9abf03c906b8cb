//! From a stored delivery to actions applied (docs/architecture.md, "The parts and the flow"): parse the event, gather the
//! state the policy needs (store, repo config at the commit, the commenter's permission), ask the
//! policy, and apply its actions. Every action is idempotent, so a delivery processed twice
//! (after a crash, or a retry) changes nothing the second time.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::environment::{EnvRecord, Op, applied};
use crate::event::{Event, InstallationAction, RepoInfo, parse_event};
use crate::github::{GitHub, GitHubError, PrInfo, RepoClient};
use crate::metrics::Metrics;
use crate::policy::{self, Action, Decision, Limits, State};
use crate::proxy::Routes;
use crate::repo_config::RepoConfig;
use crate::reporter::Reporter;
use crate::settings::PreviewUrls;
use crate::store::{InstallationRecord, PendingDelivery, Store, StoreError};
use crate::types::{EnvId, EnvKind, Permission, PrNumber, RepoName};

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    Ignored(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The payload cannot be understood: retrying will not help.
    #[error("malformed payload: {0}")]
    Malformed(#[from] crate::event::EventError),
    /// GitHub's errors already say "GitHub: …".
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl EngineError {
    /// Worth another attempt later?
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Malformed(_) => false,
            EngineError::GitHub(e) => e.is_retryable(),
            EngineError::Store(_) => true,
        }
    }
}

impl From<crate::reporter::ReportError> for EngineError {
    fn from(e: crate::reporter::ReportError) -> Self {
        match e {
            crate::reporter::ReportError::GitHub(e) => EngineError::GitHub(e),
            crate::reporter::ReportError::Store(e) => EngineError::Store(e),
        }
    }
}

/// Where the repository config comes from for an event.
const CONFIG_PATH: &str = ".github/stagebot.yml";

/// What the engine needs of the lifecycle (src/lifecycle.rs): a runner at work on an
/// environment's op. The engine writes the op; whoever implements this runs it.
pub trait Runners: Send + Sync {
    /// Make sure a runner works on `id`'s op (generation `generation` or newer).
    fn kick(&self, id: &EnvId, generation: u64);
}

/// The engine: deliveries and dashboard or operator actions in, environment ops and GitHub
/// replies out. Its state: the installation locks that serialize capacity decisions; it reads
/// the store, GitHub and the routes' last visits, tells the reporter to refresh sticky comments
/// and the runners to run the ops it wrote.
pub struct Engine {
    store: Store,
    github: GitHub,
    reporter: Arc<Reporter>,
    runners: Arc<dyn Runners>,
    routes: Routes,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    limits: Limits,
    previews: PreviewUrls,
    /// Capacity decisions are serialized per installation (deliveries of its repositories run
    /// concurrently otherwise).
    installation_locks: InstallationLocks,
}

/// What an [`Engine`] is made of, besides its handle on the runners.
pub struct EngineParts {
    pub store: Store,
    pub github: GitHub,
    pub reporter: Arc<Reporter>,
    pub routes: Routes,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    /// `Settings::limits`.
    pub limits: Limits,
    /// `Settings::preview_urls()`.
    pub previews: PreviewUrls,
}

/// One lock per installation: the engine serializes the capacity decisions of an installation's
/// repositories (their deliveries run concurrently otherwise).
#[derive(Default)]
pub(crate) struct InstallationLocks(
    std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<tokio::sync::Mutex<()>>>>,
);

impl InstallationLocks {
    /// The lock of `installation`.
    pub(crate) fn of(&self, installation: u64) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(installation)
            .or_default()
            .clone()
    }
}

impl Engine {
    pub fn new(parts: EngineParts, runners: Arc<dyn Runners>) -> Self {
        Self {
            store: parts.store,
            github: parts.github,
            reporter: parts.reporter,
            runners,
            routes: parts.routes,
            metrics: parts.metrics,
            clock: parts.clock,
            limits: parts.limits,
            previews: parts.previews,
            installation_locks: InstallationLocks::default(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The GitHub client for a repository (src/installation.rs).
    async fn repo_client(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<RepoClient, GitHubError> {
        crate::installation::repo_client(&self.github, &self.store, installation, repo).await
    }

    /// Ask for an environment's teardown outside a webhook (operator CLI, an uninstalled App).
    pub fn request_teardown(&self, id: &EnvId, reason: &str) -> Result<bool, StoreError> {
        let updated = self
            .store
            .update_env(id, |r| r.request_teardown(reason, "operator", None))?;
        match applied(id, updated) {
            Some(change) => {
                self.runners.kick(id, change.generation);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Re-evaluate the CI gate of `id`'s waiting deploy (a check event for its commit, or the
    /// reconciler). Does nothing unless a deploy waits.
    pub fn recheck_ci(&self, id: &EnvId) -> Result<(), StoreError> {
        let updated = self.store.update_env(id, EnvRecord::recheck_ci)?;
        if let Some(change) = applied(id, updated) {
            self.runners.kick(id, change.generation);
        }
        Ok(())
    }

    /// Process one delivery.
    pub async fn handle_delivery(&self, d: &PendingDelivery) -> Result<Outcome, EngineError> {
        let event = parse_event(&d.record.event, &d.payload)?;
        self.handle_event_at(event, Some(d.record.received_seq()))
            .await
    }

    /// Process one typed event that did not come through the inbox.
    pub async fn handle_event(&self, event: Event) -> Result<Outcome, EngineError> {
        self.handle_event_at(event, None).await
    }

    /// Process one typed event; `seq` is the arrival sequence of its delivery (what came
    /// "before" it, for fork approval and edited comments).
    pub async fn handle_event_at(
        &self,
        event: Event,
        seq: Option<u64>,
    ) -> Result<Outcome, EngineError> {
        match &event {
            Event::Ignored { reason } => return Ok(Outcome::Ignored(reason.clone())),
            Event::Ping { .. } => return Ok(Outcome::Ignored("ping".into())),
            Event::Installation(e) => {
                let now = self.now();
                match e.action {
                    InstallationAction::Deleted => {
                        // The app is gone from these repositories: stop their environments.
                        let envs = self.store.envs()?;
                        for env in envs.iter().filter(|env| {
                            env.installation_id == Some(e.installation_id) && env.is_active()
                        }) {
                            self.request_teardown(&env.id, "the GitHub App was uninstalled")?;
                        }
                        self.store.remove_installation(e.installation_id)?
                    }
                    _ => self.store.put_installation(&InstallationRecord {
                        v: 1,
                        id: e.installation_id,
                        account: e.account.clone(),
                        suspended: e.action == InstallationAction::Suspend,
                        repos: e.repos.clone(),
                        updated_at: now,
                    })?,
                }
                return Ok(Outcome::Processed);
            }
            Event::InstallationRepositories(e) => {
                let now = self.now();
                let mut rec =
                    self.store
                        .installation(e.installation_id)?
                        .unwrap_or(InstallationRecord {
                            v: 1,
                            id: e.installation_id,
                            account: e.account.clone(),
                            suspended: false,
                            repos: Vec::new(),
                            updated_at: now,
                        });
                rec.repos.retain(|r| !e.removed.contains(r));
                for r in &e.added {
                    if !rec.repos.contains(r) {
                        rec.repos.push(r.clone());
                    }
                }
                rec.updated_at = now;
                for r in &e.removed {
                    self.store.remove_repo_installation(r)?;
                    for env in self
                        .store
                        .envs_of_repo(r)?
                        .iter()
                        .filter(|env| env.is_active())
                    {
                        self.request_teardown(
                            &env.id,
                            "the repository was removed from the GitHub App's installation",
                        )?;
                    }
                }
                self.store.put_installation(&rec)?;
                return Ok(Outcome::Processed);
            }
            _ => {}
        }
        let Some(repo) = event.repo().cloned() else {
            return Ok(Outcome::Ignored("event without a repository".into()));
        };
        tracing::Span::current().record("repo", tracing::field::display(&repo.name));
        // Decided before anything is read or asked of GitHub (a label storm costs no API call);
        // the PR's head is still recorded in arrival order.
        if let Some(reason) = policy::ignored_whatever_the_state(&event) {
            if let (Event::PullRequest(e), Some(seq)) = (&event, seq) {
                self.store
                    .record_pr_head(&repo.name, e.pr.number, seq, &e.pr.head_sha)?;
            }
            return Ok(Outcome::Ignored(reason.to_owned()));
        }
        let client = self
            .repo_client(event.installation_id(), &repo.name)
            .await?;
        let installation = client.installation_id();
        let now = self.now();

        // Gather what the policy needs. Product rules (auto previews, TTL, who may touch
        // production) come from the config on the default branch, never from the pull request:
        // a PR must not be able to change who may deploy production. What to build and run
        // comes from the deployed commit (the provider reads it there).
        let mut pr_info: Option<PrInfo> = None;
        let mut permission: Option<Permission> = None;
        let mut head_profiles: Option<Vec<String>> = None;
        let mut needs_config = true;
        let pr_number: Option<PrNumber> = match &event {
            Event::PullRequest(e) => Some(e.pr.number),
            Event::Push(e) => {
                needs_config = !e.deleted;
                None
            }
            Event::BranchDeleted(_) | Event::CiChanged(_) => {
                needs_config = false;
                None
            }
            Event::Comment(e) => {
                let by_bot = e.sender.is_bot
                    || (e.author.is_bot && e.action == crate::event::CommentAction::Created);
                if by_bot || !e.is_pr || crate::command::parse_commands(&e.body).is_empty() {
                    needs_config = false;
                } else {
                    let info = client.pull_request(e.number).await?;
                    // The sender: the editor of an edited comment, never its author.
                    permission = Some(client.permission(&e.sender.login).await?);
                    if let Ok(head) = self.repo_config(&client, info.head_sha.as_str()).await? {
                        head_profiles = Some(head.preview.profiles.keys().cloned().collect());
                    }
                    pr_info = Some(info);
                }
                Some(e.number)
            }
            _ => None,
        };
        let config = if needs_config {
            match self.repo_config(&client, &repo.default_branch).await? {
                Ok(c) => c,
                Err(message) => {
                    tracing::warn!(%message, branch = %repo.default_branch, "invalid {CONFIG_PATH} on the default branch; using the defaults");
                    RepoConfig::default()
                }
            }
        } else {
            RepoConfig::default()
        };
        // Live environments, and the destroyed ones this event names (docs/architecture.md,
        // "Store layout"): the cost does not grow with the repository's history.
        let envs = match policy::pr_named(&event) {
            Some(pr) => self.store.envs_of_repo_for_pr(&repo.name, pr)?,
            None => self.store.envs_of_repo(&repo.name)?,
        };
        let envs = self
            .store
            .with_archived(envs, &repo.name, &policy::slugs_named(&event))?;
        // A push that could deploy a branch environment: which branches have an open pull
        // request of this repository (those get only the PR's preview).
        let mut open_pr_branches = Vec::new();
        if let Event::Push(e) = &event
            && !e.deleted
            && !e.is_default_branch
            && (config.branch_matches(&e.branch)
                || envs.iter().any(|env| {
                    env.kind == EnvKind::Preview && env.pr.is_none() && env.branch == e.branch
                }))
        {
            open_pr_branches = client
                .open_pulls()
                .await?
                .into_iter()
                .filter(|p| !p.fork && p.head_ref == e.branch)
                .map(|p| p.head_ref)
                .collect();
        }
        // Only commands read releases (`/promote`, `/rollback`, `/status`), and only those of
        // the PR's own environments and the shared ones. Reading every release of every
        // environment the repository ever had, for every delivery, cost ~25 ms per delivery
        // at 1,000 environments × 10 releases (docs/performance.md).
        let mut releases = Vec::new();
        if let (Event::Comment(_), Some(pr)) = (&event, pr_number) {
            for env in envs
                .iter()
                .filter(|e| e.pr == Some(pr) || e.kind != EnvKind::Preview)
            {
                releases.push((env.id.slug.clone(), self.store.releases(&env.id)?));
            }
        }
        // The count scans every environment of every repository: only when a limit needs it.
        // Deliveries of different repositories run concurrently; under a limit, counting,
        // deciding and applying are serialized per installation so two repositories cannot
        // both take the last slot.
        let capacity_lock = self
            .limits
            .max_previews
            .map(|_| self.installation_locks.of(installation));
        let _capacity_guard = match &capacity_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let previews_in_use = match self.limits.max_previews {
            Some(_) => self.previews_in_use(installation)?,
            None => 0,
        };
        // The PR's head in the order stagebot received its events: "the head when a comment
        // was written" (fork approval) is read from this record.
        if let (Event::PullRequest(e), Some(seq)) = (&event, seq) {
            self.store
                .record_pr_head(&repo.name, e.pr.number, seq, &e.pr.head_sha)?;
        }
        let state = State {
            now,
            previews_in_use,
            envs,
            releases,
            pr_record: match pr_number {
                Some(pr) => Some(self.store.pr(&repo.name, pr)?),
                None => None,
            },
            pr_info,
            permission,
            head_profiles,
            limits: self.limits.clone(),
            received: seq,
            open_pr_branches,
        };
        match policy::decide(&event, &config, &state) {
            Decision::Ignore(reason) => Ok(Outcome::Ignored(reason)),
            Decision::Act(actions) => {
                let ctx = Ctx {
                    repo: &repo,
                    client: &client,
                    installation,
                    now,
                };
                let mut first = true;
                for action in actions {
                    let reaction = matches!(action, Action::React { .. });
                    match self.apply(&ctx, action).await {
                        // The comment that triggered the delivery was deleted: nothing of it is
                        // run (its first action is the 👀 reaction), or only its last reaction
                        // is lost.
                        Err(EngineError::GitHub(e)) if reaction && e.is_not_found() => {
                            if first {
                                return Ok(Outcome::Ignored(
                                    "the comment was deleted before its commands ran".into(),
                                ));
                            }
                            tracing::info!("the comment was deleted; its reaction is skipped");
                        }
                        other => other?,
                    }
                    first = false;
                }
                Ok(Outcome::Processed)
            }
        }
    }

    /// The repository's config at `git_ref`: defaults when the file is absent, `Err(message)`
    /// when it is invalid.
    pub async fn repo_config(
        &self,
        client: &RepoClient,
        git_ref: &str,
    ) -> Result<Result<RepoConfig, String>, EngineError> {
        Ok(match client.file_at(CONFIG_PATH, git_ref).await? {
            None => Ok(RepoConfig::default()),
            Some(text) => crate::repo_config::parse(&text).map_err(|e| e.to_string()),
        })
    }

    /// Previews occupying a capacity slot in an installation.
    pub fn previews_in_use(&self, installation: u64) -> Result<usize, StoreError> {
        Ok(self
            .store
            .envs()?
            .iter()
            .filter(|e| {
                e.kind == EnvKind::Preview
                    && e.installation_id == Some(installation)
                    && e.state().occupies_slot()
            })
            .count())
    }

    pub(crate) async fn apply(&self, ctx: &Ctx<'_>, action: Action) -> Result<(), EngineError> {
        let repo = &ctx.repo.name;
        match action {
            Action::Deploy(d) => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug: d.target.slug.clone(),
                };
                let (host, url) = self.previews.host_and_url(repo, &d.target.slug);
                let clone_url = d
                    .target
                    .clone_url
                    .clone()
                    .unwrap_or_else(|| ctx.repo.clone_url.clone());
                let now = ctx.now;
                let op = Op::Deploy {
                    sha: d.sha.clone(),
                    git_ref: d.target.branch.clone(),
                    trigger: d.trigger.clone(),
                    by: d.by.clone(),
                    ack: d.ack,
                    force: d.force,
                    gate: d.gate.clone(),
                    checks: d.checks.clone(),
                };
                let existing = self.store.env(&id)?;
                let rec = match existing {
                    None => new_env(&id, &d.target, ctx.installation, clone_url, host, url, now),
                    Some(rec) => rec,
                };
                let mut rec = rec;
                let expires = d
                    .ttl
                    .and_then(|t| chrono::Duration::from_std(t).ok())
                    .map(|t| now + t);
                rec.note_deploy_request(expires, d.ttl.map(|t| t.as_secs()), now);
                rec.remember(&d.sha);
                if d.target.pr.is_some() {
                    rec.pr = d.target.pr;
                }
                rec.branch = d.target.branch.clone();
                if d.target.kind == EnvKind::Preview {
                    rec.fork = d.target.fork;
                }
                rec.private = ctx.repo.private;
                // No clone URL: this repository's (staging and production always fetch from
                // it, whatever an earlier deploy of the environment fetched from).
                rec.clone_url = d
                    .target
                    .clone_url
                    .clone()
                    .unwrap_or_else(|| ctx.repo.clone_url.clone());
                rec.installation_id = Some(ctx.installation);
                if d.profile.is_some() || d.trigger == crate::environment::Trigger::Stage {
                    rec.profile = d.profile.clone();
                }
                // The same commit already queued or deploying (not forced): nothing new to do.
                let change = if d.queue {
                    rec.enqueue(op, now)
                } else {
                    rec.request_deploy(op)
                };
                self.store.put_env(&rec)?;
                let change = match change {
                    Ok(change) if !change.unchanged => change,
                    Ok(_) => return Ok(()),
                    Err(refused) => {
                        tracing::warn!(env = %id, sha = %d.sha, reason = %refused, "deploy not requested");
                        return Ok(());
                    }
                };
                tracing::info!(env = %id, sha = %d.sha, trigger = ?d.trigger, queued = d.queue, "deploy requested");
                if d.queue {
                    if let Some(pr) = rec.pr {
                        self.reporter.refresh_sticky(ctx.client, pr).await?;
                    }
                } else {
                    self.runners.kick(&id, change.generation);
                }
            }
            Action::Teardown {
                slug,
                reason,
                by,
                ack,
            } => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug,
                };
                let updated = self.store.update_env(&id, |rec| {
                    let change = rec.request_teardown(&reason, &by, ack)?;
                    rec.updated_at = ctx.now;
                    Ok(change)
                })?;
                if let Some(change) = applied(&id, updated) {
                    tracing::info!(env = %id, reason, "teardown requested");
                    self.runners.kick(&id, change.generation);
                }
            }
            Action::Extend { slug, until } => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug,
                };
                let extended = self
                    .store
                    .update_env(&id, |rec| rec.extend(until, ctx.now))?;
                applied(&id, extended);
            }
            Action::Visited { slug, at, until } => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug,
                };
                // A warning already given no longer holds once the expiry moves: the next one
                // is due before the new expiry.
                let visited = self.store.update_env(&id, |rec| rec.visit(at, until))?;
                applied(&id, visited);
            }
            Action::WarnExpiry { slug, at } => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug: slug.clone(),
                };
                let updated = self
                    .store
                    .update_env(&id, |rec| rec.warn_expiry(ctx.now).map(|_| rec.pr))?;
                if let Some((_, Ok(Some(pr)))) = updated {
                    ctx.client
                        .reply(pr, &crate::messages::expiry_warning(&slug, at))
                        .await?;
                    self.reporter.refresh_sticky(ctx.client, pr).await?;
                }
            }
            Action::React {
                comment_id,
                reaction,
            } => ctx.client.react(comment_id, reaction).await?,
            Action::CommandRan {
                comment,
                index,
                run,
            } => self.store.command_ran(repo, &comment, index, run)?,
            Action::CommentReply { comment, body } => {
                self.reply_once(ctx, &comment, &body).await?;
            }
            Action::Sticky { pr, notice } => {
                let text = notice.map(|n| crate::messages::notice(&n));
                self.store.update_pr(repo, pr, |r| {
                    if text.is_some() {
                        r.notice = text.clone();
                    }
                })?;
                self.reporter.refresh_sticky(ctx.client, pr).await?;
            }
            Action::ApproveFork { pr, sha } => {
                self.store.update_pr(repo, pr, |r| {
                    r.approved_sha = Some(sha);
                    r.notice = None;
                })?;
            }
            Action::CommentHandled { comment } => {
                self.store.comment_handled(repo, &comment)?;
            }
            Action::MarkPrClosed { pr, closed } => {
                self.store.update_pr(repo, pr, |r| {
                    r.closed = closed;
                    if !closed {
                        r.notice = None;
                    }
                })?;
            }
            Action::RecordMerge { pr, sha } => {
                self.store
                    .update_pr(repo, pr, |r| r.merge_sha = Some(sha.clone()))?;
            }
            Action::RecheckCi { slug } => {
                self.recheck_ci(&EnvId {
                    repo: repo.clone(),
                    slug,
                })?;
            }
            Action::Remember { slug, shas } => {
                let id = EnvId {
                    repo: repo.clone(),
                    slug,
                };
                self.store.update_env(&id, |rec| {
                    for s in &shas {
                        rec.remember(s);
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Post the combined reply to a comment exactly once: not again once GitHub accepted it,
    /// and after an attempt whose answer was lost, only if GitHub does not have it (found by its
    /// hidden marker).
    async fn reply_once(
        &self,
        ctx: &Ctx<'_>,
        comment: &policy::CommentRef,
        body: &str,
    ) -> Result<(), EngineError> {
        let repo = &ctx.repo.name;
        let record = self.store.pr(repo, comment.pr)?;
        let progress = record
            .in_progress
            .get(&comment.comment_id)
            .filter(|p| p.signature == comment.signature);
        if progress.is_some_and(|p| p.reply_id.is_some()) {
            return Ok(());
        }
        let marker = crate::github::reply_marker(comment.comment_id);
        let store = &self.store;
        if progress.is_some_and(|p| p.reply_attempted)
            && let Some(found) = ctx.client.find_marked_comment(comment.pr, &marker).await?
        {
            tracing::info!(
                comment_id = comment.comment_id,
                reply = found,
                "the reply was already posted"
            );
            store.reply_posted(repo, comment, found)?;
            return Ok(());
        }
        store.reply_attempted(repo, comment)?;
        let posted = ctx
            .client
            .reply_not_twice(comment.pr, &format!("{marker}\n{body}"))
            .await?;
        store.reply_posted(repo, comment, posted)?;
        Ok(())
    }

    /// Run the sweeper once over every repository (docs/architecture.md, "The reconciler and the sweeper"): warnings, then teardowns.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let envs = self.store.envs()?;
        let mut by_repo: std::collections::BTreeMap<RepoName, Vec<EnvRecord>> = Default::default();
        for env in envs {
            by_repo.entry(env.id.repo.clone()).or_default().push(env);
        }
        let mut n = 0;
        for (repo, envs) in by_repo {
            let actions = policy::sweep_with_visits(
                &envs,
                |slug| {
                    let (host, _) = self.previews.host_and_url(&repo, slug);
                    self.routes.last_visit(&host)
                },
                now,
            );
            if actions.is_empty() {
                continue;
            }
            let installation = envs.iter().find_map(|e| e.installation_id);
            // One repository's trouble (GitHub down for it, app removed) must not stop the sweep
            // of the others.
            let client = match self.repo_client(installation, &repo).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%repo, error = %e, "sweep skipped this repository");
                    continue;
                }
            };
            let info = RepoInfo {
                name: repo.clone(),
                default_branch: String::new(),
                clone_url: envs
                    .first()
                    .map(|e| e.clone_url.clone())
                    .unwrap_or_default(),
                private: envs.iter().any(|e| e.private),
            };
            let ctx = Ctx {
                repo: &info,
                client: &client,
                installation: client.installation_id(),
                now,
            };
            for action in actions {
                n += 1;
                if let Err(e) = self.apply(&ctx, action).await {
                    tracing::warn!(%repo, error = %e, "sweep action failed; retried next pass");
                }
            }
        }
        self.metrics.sweeper_last_run.store(
            u64::try_from(self.now().timestamp()).unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(n)
    }
}

/// What applying actions needs to know about the event's repository.
pub(crate) struct Ctx<'a> {
    pub repo: &'a RepoInfo,
    pub client: &'a RepoClient,
    pub installation: u64,
    pub now: DateTime<Utc>,
}

fn new_env(
    id: &EnvId,
    target: &policy::Target,
    installation: u64,
    clone_url: String,
    host: String,
    url: String,
    now: DateTime<Utc>,
) -> EnvRecord {
    let mut rec = EnvRecord::new(id.clone(), target.kind, &target.branch, now);
    rec.pr = target.pr;
    rec.installation_id = Some(installation);
    rec.clone_url = clone_url;
    rec.host = host;
    rec.url = url;
    rec.fork = target.fork;
    rec
}

#[cfg(test)]
mod tests {
    //! The engine is a part of its own: built from a store, a GitHub client (to the in-process
    //! fake), a reporter and a handle on the runners, with no `App`; the runners are started
    //! only through that handle.
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::event::payloads::{self, PrPayload};
    use crate::fake_github::{FakeGitHub, FakePr};
    use crate::sentry::SentryIssues;
    use crate::types::Sha;

    /// The runners the engine asked for, in order.
    #[derive(Default)]
    struct Kicks(Mutex<Vec<(EnvId, u64)>>);

    impl Runners for Kicks {
        fn kick(&self, id: &EnvId, generation: u64) {
            self.0.lock().unwrap().push((id.clone(), generation));
        }
    }

    impl Kicks {
        fn take(&self) -> Vec<(EnvId, u64)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn event(action: &str, repo: &RepoName) -> Event {
        let body = payloads::pull_request(&PrPayload::new(action, repo, 42));
        parse_event("pull_request", body.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn the_engine_stands_alone_and_starts_runners_through_its_handle() {
        let fake = FakeGitHub::start().await;
        let repo: RepoName = "acme/webapp".parse().unwrap();
        fake.add_installation(1, "acme");
        fake.add_repo(&repo, "main", 1);
        let head = PrPayload::new("opened", &repo, 42).head_sha;
        fake.upsert_pr(&repo, FakePr::new(42, "feature", Sha::new(&head).unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let github = GitHub::new(fake.github_config()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let clock: SharedClock = Arc::new(ManualClock::new(
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        ));
        let reporter = Arc::new(Reporter::new(
            store.clone(),
            github.clone(),
            Arc::clone(&metrics),
            Arc::clone(&clock),
            "http://bot.example".into(),
            Arc::new(SentryIssues::new(None)),
        ));
        let kicks = Arc::new(Kicks::default());
        let engine = Engine::new(
            EngineParts {
                store: store.clone(),
                github,
                reporter,
                routes: Routes::default(),
                metrics,
                clock,
                limits: Limits::default(),
                previews: PreviewUrls {
                    domain: "preview.example".into(),
                    scheme: "https".into(),
                },
            },
            Arc::clone(&kicks) as Arc<dyn Runners>,
        );

        // An opened PR: its preview's deploy op is written, and one runner is asked for.
        let outcome = engine.handle_event(event("opened", &repo)).await.unwrap();
        assert_eq!(outcome, Outcome::Processed);
        let envs = store.envs_of_repo(&repo).unwrap();
        assert_eq!(envs.len(), 1, "{envs:?}");
        let env = &envs[0];
        assert_eq!(env.pr, Some(PrNumber(42)));
        assert!(
            env.url.starts_with("https://") && env.url.ends_with(".preview.example"),
            "{}",
            env.url
        );
        assert!(
            matches!(env.op(), Some(Op::Deploy { sha, .. }) if sha.as_str() == head),
            "{:?}",
            env.op()
        );
        assert_eq!(kicks.take(), vec![(env.id.clone(), env.generation())]);

        // Closed: a teardown op with a newer generation, and the runner told of it.
        let outcome = engine.handle_event(event("closed", &repo)).await.unwrap();
        assert_eq!(outcome, Outcome::Processed);
        let env = store.env(&env.id).unwrap().unwrap();
        assert!(
            matches!(env.op(), Some(Op::Teardown { .. })),
            "{:?}",
            env.op()
        );
        assert_eq!(kicks.take(), vec![(env.id.clone(), env.generation())]);
    }
}
