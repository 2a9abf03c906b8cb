//! Telling GitHub (docs/architecture.md, "Talking to GitHub"): deployments and their statuses, commit statuses, the PR's sticky
//! comment and command reactions. Reports are rebuilt from the store, so sending one twice is
//! harmless; one that fails marks the environment `report_pending` and the reconciler sends it
//! again later. A GitHub outage delays reports; it never loses state.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::environment::{EnvRecord, EnvState, Op, Release, Trigger};
use crate::github::{
    DeploymentState, GitHub, GitHubError, NewDeployment, NewDeploymentStatus, Reaction, RepoClient,
    StatusState,
};
use crate::messages::{self, CommitStatus, DeploymentStatus};
use crate::metrics::Metrics;
use crate::sentry::SentryIssues;
use crate::store::{AttemptRecord, Store, StoreError};
use crate::types::{EnvId, EnvKind, PrNumber, RepoName, Sha, Slug};

/// What a report to GitHub announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A deploy waits for its CI gate (`require_checks`).
    Waiting,
    Deploying,
    Live,
    Failed,
    Destroyed,
}

/// Why a report did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// GitHub's errors already say "GitHub: …".
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl ReportError {
    /// Worth sending again later? A store error is: the report is rebuilt from the store, and
    /// skipping it (rather than sending something built from nothing) is what keeps GitHub right.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReportError::GitHub(e) => e.is_retryable(),
            ReportError::Store(_) => true,
        }
    }
}

/// The version of [`DeploymentPayload`] this build writes.
pub const PAYLOAD_SCHEMA: u32 = 1;

/// What stagebot puts in the `payload` of every GitHub Deployment it creates, under the key
/// `"stagebot"` (docs/architecture.md, "Idempotency"). (`environment`, `attempt`) is the
/// idempotency key: after a crash the reporter finds the deployment of an attempt by it instead
/// of creating a second one. The rest describes the release, so state can be rebuilt from
/// GitHub's deployments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentPayload {
    /// [`PAYLOAD_SCHEMA`].
    pub schema: u32,
    /// GitHub's environment name: `preview/<slug>`, `staging` or `production`.
    pub environment: String,
    /// The deploy attempt's id (unique per store, see `store::AttemptRecord`).
    pub attempt: u64,
    /// `owner/name`.
    pub repo: String,
    pub kind: EnvKind,
    pub slug: Slug,
    /// The release number the attempt records when it succeeds.
    pub release: u32,
    pub sha: Sha,
    pub git_ref: String,
    /// What asked for the deploy (same shape as a release's trigger).
    pub trigger: Trigger,
    /// Who asked for it (a login, or `stagebot`).
    pub actor: String,
    pub pr: Option<PrNumber>,
    /// The stagebot incarnation (store openings) that started the attempt.
    pub incarnation: u64,
}

impl DeploymentPayload {
    /// The payload of an attempt.
    pub fn of(a: &AttemptRecord) -> Self {
        Self {
            schema: PAYLOAD_SCHEMA,
            environment: crate::types::environment_name(a.kind, &a.env.slug),
            attempt: a.attempt,
            repo: a.env.repo.to_string(),
            kind: a.kind,
            slug: a.env.slug.clone(),
            release: a.release,
            sha: a.sha.clone(),
            git_ref: a.git_ref.clone(),
            trigger: a.trigger.clone(),
            actor: a.actor.clone(),
            pr: a.pr,
            incarnation: a.incarnation,
        }
    }

    /// As sent: `{"stagebot": {…}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "stagebot": self })
    }

    /// Read a deployment's payload; `None` for anything that is not ours (another tool's
    /// payload, a string, an unknown schema).
    pub fn from_json(payload: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(payload.get("stagebot")?.clone()).ok()
    }
}

/// How many times a failed write of a deployment's id is tried again before the report fails.
const ID_WRITE_RETRIES: u32 = 3;
/// Creating a deployment whose answer was lost (5xx, timeout) is tried this many more times,
/// each after looking for it first.
const LOST_ANSWER_RETRIES: u32 = 3;

/// The reporter: tells GitHub what happened to environments (deployments and their statuses,
/// commit statuses, sticky comments, the reactions that acknowledge commands). Its state is what
/// it reads: the store, the GitHub App client, the clock, where release logs are served, the
/// Sentry issue counts the sticky comment shows; it counts its failures in the metrics.
pub struct Reporter {
    store: Store,
    github: GitHub,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    /// stagebot's base URL (`Settings::public_url`): the release logs' links.
    public_url: String,
    sentry: Arc<SentryIssues>,
}

impl Reporter {
    pub fn new(
        store: Store,
        github: GitHub,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        public_url: String,
        sentry: Arc<SentryIssues>,
    ) -> Self {
        Self {
            store,
            github,
            metrics,
            clock,
            public_url,
            sentry,
        }
    }

    /// The GitHub client for a repository (src/installation.rs).
    async fn repo_client(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<RepoClient, GitHubError> {
        crate::installation::repo_client(&self.github, &self.store, installation, repo).await
    }

    /// Report an environment's phase; failures are remembered for the reconciler.
    pub async fn report(&self, id: &EnvId, phase: Phase) {
        // The environment moved on (a new deploy, a teardown) while GitHub was never told that
        // its live release went live: tell it first, or that commit's status stays "Deploying…"
        // and its deployment never shows success (found by the chaos run).
        let mut owed = Ok(());
        if phase != Phase::Live && self.live_report_owed(id) {
            tracing::info!(env = %id, ?phase, "the live release was never reported to GitHub; reporting it first");
            owed = self.try_report(id, Phase::Live).await;
            if let Err(e) = &owed {
                tracing::warn!(env = %id, error = %e, "report of the live release failed; will retry");
            }
        }
        let result = self.try_report(id, phase).await;
        // Retryable failures wait for the reconciler; a final answer (404, 422…) will not change.
        let pending = matches!(&result, Err(e) if e.is_retryable())
            || matches!(&owed, Err(e) if e.is_retryable());
        if let Err(e) = &result {
            Metrics::inc(&self.metrics.report_failures);
            tracing::warn!(env = %id, ?phase, error = %e, "report to GitHub failed; will retry");
        }
        if let Err(e) = self.store.update_env(id, |r| r.report_pending = pending) {
            // Nothing is lost: `report_pending` was set with the transition, so at worst the
            // reconciler sends this report once more (reports are idempotent).
            tracing::error!(
                env = %id,
                ?phase,
                report_pending = pending,
                error = %e,
                "could not record the report's outcome (report_pending) in the store"
            );
        }
    }

    /// The environment's live release went live, but its deployment never got its `success`
    /// on GitHub (the report failed for good and the environment moved on before the
    /// reconciler sent it again). A store error counts as not owed: the report itself fails on
    /// it and stays pending.
    fn live_report_owed(&self, id: &EnvId) -> bool {
        let owed = || -> Result<bool, StoreError> {
            let Some(rec) = self.store.env(id)? else {
                return Ok(false);
            };
            let Some(n) = rec.current_release() else {
                return Ok(false);
            };
            let Some(release) = self.store.release(id, n)? else {
                return Ok(false);
            };
            Ok(self
                .store
                .attempts(id)?
                .iter()
                .rev()
                .find(|a| a.release == n && a.sha == release.sha)
                .is_some_and(|a| {
                    matches!(a.state.as_deref(), None | Some("in_progress" | "queued"))
                }))
        };
        owed().unwrap_or(false)
    }

    async fn try_report(&self, id: &EnvId, phase: Phase) -> Result<(), ReportError> {
        let Some(rec) = self.store.env(id)? else {
            return Ok(());
        };
        let client = self.repo_client(rec.installation_id, &id.repo).await?;
        let release = match rec.current_release() {
            Some(n) => self.store.release(id, n)?,
            None => None,
        };
        // The commit this report is about.
        let sha = match phase {
            Phase::Deploying => rec.deploying().cloned(),
            Phase::Live | Phase::Destroyed => release.as_ref().map(|r| r.sha.clone()),
            Phase::Failed | Phase::Waiting => rec.attempted().cloned(),
        };
        let context = format!("stagebot/{}", rec.kind);
        let log_url = crate::settings::log_url(
            &self.public_url,
            id,
            // The log of the release this report is about: the attempt in progress (or the one
            // that failed) will be the next release; a live or removed one is the current.
            match phase {
                Phase::Waiting | Phase::Deploying | Phase::Failed => rec.releases() + 1,
                Phase::Live | Phase::Destroyed => {
                    rec.current_release().unwrap_or(rec.releases() + 1)
                }
            },
        );
        if let Some(sha) = &sha {
            let status = match phase {
                Phase::Waiting => Some((
                    StatusState::Pending,
                    CommitStatus::Waiting { ci: rec.ci_wait() },
                    log_url.clone(),
                )),
                Phase::Deploying => Some((
                    StatusState::Pending,
                    CommitStatus::Deploying,
                    log_url.clone(),
                )),
                Phase::Live => Some((
                    StatusState::Success,
                    CommitStatus::Live { url: &rec.url },
                    rec.url.clone(),
                )),
                Phase::Failed => Some((
                    StatusState::Failure,
                    CommitStatus::Failed {
                        error: rec.last_error.as_deref(),
                    },
                    log_url.clone(),
                )),
                Phase::Destroyed => None,
            };
            // The commit status first: the deployment's recorded state then tells whether the
            // whole report went through (see `live_report_owed`).
            if let Some((state, description, target)) = status {
                let description = messages::commit_status(description);
                client
                    .set_status(sha, state, &context, &description, Some(&target))
                    .await?;
            }
            self.report_deployment(&client, &rec, release.as_ref(), phase, sha, &log_url)
                .await?;
        }
        // The PR's sticky comment, and for a shared environment the comments of the PRs merged
        // as this commit (the merge's production release shows on the merged PR).
        let mut prs: Vec<PrNumber> = rec.pr.into_iter().collect();
        if let (Some(sha), true) = (&sha, rec.kind != EnvKind::Preview) {
            for pr in self.store.prs_merged_as(&id.repo, sha)? {
                if !prs.contains(&pr) {
                    prs.push(pr);
                }
            }
        }
        for pr in prs {
            self.refresh_sticky(&client, pr).await?;
        }
        Ok(())
    }

    /// The GitHub Deployment side of a report: every deploy attempt has its own deployment
    /// (found or created through its attempt record), and a release going live makes the older
    /// deployments of the environment `inactive`.
    async fn report_deployment(
        &self,
        client: &RepoClient,
        rec: &EnvRecord,
        release: Option<&Release>,
        phase: Phase,
        sha: &Sha,
        log_url: &str,
    ) -> Result<(), ReportError> {
        let attempts = self.store.attempts(&rec.id)?;
        match phase {
            Phase::Deploying | Phase::Waiting => {
                // Only the op being deployed right now (a newer op reports for itself).
                let Some(Op::Deploy {
                    sha: op_sha,
                    git_ref,
                    trigger,
                    by,
                    ..
                }) = &rec.op()
                else {
                    return Ok(());
                };
                if op_sha != sha {
                    return Ok(());
                }
                let found = attempts
                    .iter()
                    .rev()
                    .find(|a| a.generation == rec.generation() && &a.sha == sha)
                    .cloned();
                let (attempt, fresh) = match found {
                    Some(a) => (a, false),
                    None => (
                        self.new_attempt(rec, sha, git_ref, rec.releases() + 1, trigger, by)?,
                        true,
                    ),
                };
                let deployment = self.ensure_deployment(client, &attempt, fresh).await?;
                // Attempts cut short by this newer one never finished: they end inactive.
                for old in attempts.iter().filter(|a| {
                    a.attempt < attempt.attempt
                        && a.deployment_id.is_some()
                        && matches!(
                            a.state.as_deref(),
                            None | Some("in_progress") | Some("queued")
                        )
                }) {
                    self.post_status(
                        client,
                        old,
                        DeploymentState::Inactive,
                        None,
                        None,
                        messages::deployment_status(DeploymentStatus::Superseded { sha }),
                    )
                    .await?;
                }
                self.post_status(
                    client,
                    &AttemptRecord {
                        deployment_id: Some(deployment),
                        ..attempt
                    },
                    if phase == Phase::Waiting {
                        DeploymentState::Queued
                    } else {
                        DeploymentState::InProgress
                    },
                    None,
                    Some(log_url.to_owned()),
                    messages::deployment_status(match (&rec.ci_wait(), phase) {
                        (Some(wait), Phase::Waiting) => DeploymentStatus::Waiting { ci: wait },
                        _ => DeploymentStatus::Deploying { sha },
                    }),
                )
                .await?;
            }
            Phase::Failed => {
                let Some(attempt) = attempts
                    .iter()
                    .rev()
                    .find(|a| a.generation == rec.generation() && &a.sha == sha)
                    .cloned()
                else {
                    tracing::warn!(env = %rec.id, sha = %sha.short(), "no deploy attempt recorded for this failure; no deployment to mark failed");
                    return Ok(());
                };
                let deployment = self.ensure_deployment(client, &attempt, false).await?;
                self.post_status(
                    client,
                    &AttemptRecord {
                        deployment_id: Some(deployment),
                        ..attempt
                    },
                    DeploymentState::Failure,
                    None,
                    Some(log_url.to_owned()),
                    messages::deployment_status(DeploymentStatus::Failed {
                        error: rec.last_error.as_deref(),
                    }),
                )
                .await?;
            }
            Phase::Live => {
                let Some(release) = release else {
                    return Ok(());
                };
                // The attempt that made this release: the newest one for its number and commit.
                let found = attempts
                    .iter()
                    .rev()
                    .find(|a| a.release == release.n && a.sha == release.sha)
                    .cloned();
                let (attempt, fresh) = match found {
                    Some(a) => (a, false),
                    // Released before its attempt was recorded (a store written by an older
                    // version, or an intent that could not be written).
                    None => {
                        let mut a = self.new_attempt(
                            rec,
                            &release.sha,
                            &release.git_ref,
                            release.n,
                            &release.trigger,
                            &release.by,
                        )?;
                        // An older version's deployment of this commit is this release's.
                        if let Some(id) = rec.deployments.get(release.sha.as_str()) {
                            a.deployment_id = Some(*id);
                            self.store.put_attempt(&a)?;
                        }
                        (a, true)
                    }
                };
                let deployment = self.ensure_deployment(client, &attempt, fresh).await?;
                let this = attempt.attempt;
                self.post_status(
                    client,
                    &AttemptRecord {
                        deployment_id: Some(deployment),
                        ..attempt
                    },
                    DeploymentState::Success,
                    Some(rec.url.clone()),
                    Some(release.log.clone()).filter(|l| !l.is_empty()),
                    messages::deployment_status(DeploymentStatus::Live { url: &rec.url }),
                )
                .await?;
                self.deactivate_others(client, rec, this, release.n).await?;
            }
            Phase::Destroyed => {
                let open: Vec<&AttemptRecord> = attempts
                    .iter()
                    .filter(|a| a.deployment_id.is_some() && a.is_open())
                    .collect();
                for a in &open {
                    self.post_status(
                        client,
                        a,
                        DeploymentState::Inactive,
                        None,
                        None,
                        messages::deployment_status(DeploymentStatus::Removed),
                    )
                    .await?;
                }
                // Deployments made before attempts were recorded (one per commit).
                if attempts.is_empty()
                    && let Some(id) = rec.deployments.get(sha.as_str())
                {
                    client
                        .create_deployment_status(
                            *id,
                            &NewDeploymentStatus {
                                state: DeploymentState::Inactive,
                                environment_url: None,
                                log_url: None,
                                description: messages::deployment_status(DeploymentStatus::Removed),
                                auto_inactive: None,
                            },
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// After attempt `this` went live: the environment's other deployments that still show as
    /// current (`success`, or never finished) become `inactive`. GitHub's `auto_inactive` (on by
    /// default on the `success` status just posted) already did that for the earlier `success`
    /// deployments of a non-transient, non-production environment (staging): those are only
    /// recorded. Previews (transient) and production are excluded from `auto_inactive` by
    /// GitHub, so stagebot posts their `inactive` statuses itself.
    async fn deactivate_others(
        &self,
        client: &RepoClient,
        rec: &EnvRecord,
        this: u64,
        release: u32,
    ) -> Result<(), ReportError> {
        let github_does_it = rec.kind == EnvKind::Staging;
        for a in self.store.attempts(&rec.id)? {
            // Only older attempts: a newer one (deploying right now) reports for itself.
            if a.attempt >= this || a.deployment_id.is_none() || !a.is_open() {
                continue;
            }
            if github_does_it && a.state.as_deref() == Some("success") {
                self.record_state(&a, DeploymentState::Inactive)?;
                continue;
            }
            self.post_status(
                client,
                &a,
                DeploymentState::Inactive,
                None,
                None,
                messages::deployment_status(DeploymentStatus::Replaced { release }),
            )
            .await?;
        }
        Ok(())
    }

    /// Generate an attempt id and write the attempt (the intent) before its deployment exists.
    fn new_attempt(
        &self,
        rec: &EnvRecord,
        sha: &Sha,
        git_ref: &str,
        release: u32,
        trigger: &Trigger,
        actor: &str,
    ) -> Result<AttemptRecord, StoreError> {
        let attempt = AttemptRecord {
            v: 1,
            attempt: self.store.new_attempt_id()?,
            env: rec.id.clone(),
            kind: rec.kind,
            generation: rec.generation(),
            sha: sha.clone(),
            git_ref: git_ref.to_owned(),
            release,
            trigger: trigger.clone(),
            actor: actor.to_owned(),
            pr: rec.pr,
            incarnation: self.store.incarnation(),
            created_at: self.clock.now(),
            deployment_id: None,
            state: None,
        };
        self.store.put_attempt(&attempt)?;
        Ok(attempt)
    }

    /// The GitHub Deployment of `attempt`: the recorded one; else, unless the intent was just
    /// written (`fresh`, so no `POST` can have been sent), the deployment GitHub already has with
    /// this attempt's key (a `POST` whose answer was lost to a crash or a timeout); else a new
    /// one. Its id is recorded before the deployment is used.
    async fn ensure_deployment(
        &self,
        client: &RepoClient,
        attempt: &AttemptRecord,
        fresh: bool,
    ) -> Result<u64, ReportError> {
        if let Some(id) = attempt.deployment_id {
            return Ok(id);
        }
        let payload = DeploymentPayload::of(attempt);
        // Not fresh: a crash (or a lost answer) may have left the deployment made; find it by
        // its payload before creating one.
        let mut look_first = !fresh;
        let mut lost_answers = 0;
        let id = loop {
            if look_first && let Some(id) = Self::find_deployment(client, &payload, attempt).await?
            {
                tracing::info!(env = %attempt.env, attempt = attempt.attempt, deployment = id, "adopted the deployment created before a crash or a lost answer");
                break id;
            }
            let created = client
                .create_deployment(&NewDeployment {
                    git_ref: attempt.sha.clone(),
                    environment: payload.environment.clone(),
                    description: messages::deployment(
                        attempt.kind,
                        &attempt.env.slug,
                        attempt.release,
                    ),
                    transient_environment: attempt.kind == EnvKind::Preview,
                    production_environment: attempt.kind == EnvKind::Production,
                    payload: payload.to_json(),
                })
                .await;
            match created {
                Ok(id) => break id,
                // GitHub may have created it and the answer was lost: look before trying again.
                Err(e) if e.is_retryable() && lost_answers < LOST_ANSWER_RETRIES => {
                    lost_answers += 1;
                    tracing::warn!(env = %attempt.env, attempt = attempt.attempt, error = %e, "creating the deployment got no clear answer; looking for it before trying again");
                    look_first = true;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Without this record a later report would look the deployment up again (one GET), not
        // create a second one; still, try a few times before failing the report.
        let mut tries = 0;
        loop {
            let recorded = AttemptRecord {
                deployment_id: Some(id),
                ..attempt.clone()
            };
            match self.store.put_attempt(&recorded) {
                Ok(()) => return Ok(id),
                Err(e) if tries < ID_WRITE_RETRIES => {
                    tries += 1;
                    tracing::warn!(env = %attempt.env, attempt = attempt.attempt, deployment = id, error = %e, "could not record the deployment's id; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << tries)).await;
                }
                Err(e) => {
                    tracing::error!(env = %attempt.env, attempt = attempt.attempt, deployment = id, error = %e, "could not record the deployment's id; the report fails and the retry looks the deployment up");
                    return Err(e.into());
                }
            }
        }
    }

    /// The deployment GitHub holds for `attempt` (found by its payload), if any.
    async fn find_deployment(
        client: &RepoClient,
        payload: &DeploymentPayload,
        attempt: &AttemptRecord,
    ) -> Result<Option<u64>, ReportError> {
        Ok(client
            .deployments(&payload.environment, &attempt.sha)
            .await?
            .into_iter()
            .find(|d| {
                DeploymentPayload::from_json(&d.payload).is_some_and(|p| {
                    p.environment == payload.environment && p.attempt == attempt.attempt
                })
            })
            .map(|d| d.id))
    }

    /// Post a status on the attempt's deployment and record the new state.
    async fn post_status(
        &self,
        client: &RepoClient,
        attempt: &AttemptRecord,
        state: DeploymentState,
        environment_url: Option<String>,
        log_url: Option<String>,
        description: String,
    ) -> Result<(), ReportError> {
        let Some(id) = attempt.deployment_id else {
            return Ok(());
        };
        client
            .create_deployment_status(
                id,
                &NewDeploymentStatus {
                    state,
                    environment_url,
                    log_url,
                    description,
                    auto_inactive: None,
                },
            )
            .await?;
        self.record_state(attempt, state)?;
        Ok(())
    }

    /// Remember the deployment state of an attempt (re-read, so concurrent changes are kept).
    fn record_state(
        &self,
        attempt: &AttemptRecord,
        state: DeploymentState,
    ) -> Result<(), StoreError> {
        let current = self
            .store
            .attempts(&attempt.env)?
            .into_iter()
            .find(|a| a.attempt == attempt.attempt)
            .unwrap_or_else(|| attempt.clone());
        self.store.put_attempt(&AttemptRecord {
            deployment_id: current.deployment_id.or(attempt.deployment_id),
            state: Some(state.as_str().to_owned()),
            ..current
        })
    }

    /// React to the comment that asked for an op, now that it is done.
    pub(crate) async fn ack(&self, rec: &EnvRecord, comment: Option<u64>, ok: bool) {
        let Some(comment) = comment else { return };
        match self.repo_client(rec.installation_id, &rec.id.repo).await {
            Ok(client) => {
                if let Err(e) = client.react(comment, ack_reaction(ok)).await {
                    tracing::warn!(env = %rec.id, error = %e, "could not react to the command");
                }
            }
            Err(e) => tracing::warn!(env = %rec.id, error = %e, "could not react to the command"),
        }
    }

    /// Re-render the PR's sticky comment from the store and upsert it. A store error fails the
    /// refresh before anything is sent: a comment rendered from a failed read would replace the
    /// real one with an empty table. The caller retries later (a report stays pending).
    pub async fn refresh_sticky(
        &self,
        client: &RepoClient,
        pr: PrNumber,
    ) -> Result<(), ReportError> {
        let repo = client.repo().clone();
        let record = self.store.pr(&repo, pr)?;
        let mut rows = Vec::new();
        for env in self.store.envs_of_repo_for_pr(&repo, pr)? {
            // Only the PR's environments and, once it was merged, the shared ones.
            if env.pr != Some(pr) && (env.kind == EnvKind::Preview || record.merge_sha.is_none()) {
                continue;
            }
            let release = match env.current_release() {
                Some(n) => self.store.release(&env.id, n)?,
                None => None,
            };
            // A shared environment (production) deploying or serving the PR's merge commit.
            let merged_here = env.kind != EnvKind::Preview
                && record.merge_sha.as_ref().is_some_and(|m| {
                    env.deploying() == Some(m)
                        || env.attempted() == Some(m)
                        || release.as_ref().is_some_and(|r| &r.sha == m)
                });
            if env.pr != Some(pr) && !merged_here {
                continue;
            }
            let queue_position = if env.state() == EnvState::Queued {
                self.queue_position(&env)?
            } else {
                None
            };
            rows.push((env, release, queue_position));
        }
        // Per environment, its Sentry issue stream and new-issue count (src/services.rs).
        let errors = self.sentry.error_streams(&rows).await;
        let body = messages::sticky(&record, &rows, self.clock.now(), &errors);
        let id = client
            .upsert_sticky_comment(pr, record.sticky_comment_id, &body)
            .await?;
        if record.sticky_comment_id != Some(id) {
            self.store
                .update_pr(&repo, pr, |r| r.sticky_comment_id = Some(id))?;
        }
        Ok(())
    }

    fn queue_position(&self, env: &EnvRecord) -> Result<Option<usize>, StoreError> {
        let mut queued: Vec<EnvRecord> = self
            .store
            .envs()?
            .into_iter()
            .filter(|e| e.state() == EnvState::Queued && e.installation_id == env.installation_id)
            .collect();
        queued.sort_by_key(|e| e.queued_at());
        Ok(queued.iter().position(|e| e.id == env.id).map(|p| p + 1))
    }
}

/// The sticky comment's error streams are written by `messages` (kept here for callers).
pub use crate::messages::ErrorStream;

/// A reaction for an acknowledged command that is done.
pub(crate) fn ack_reaction(ok: bool) -> Reaction {
    if ok {
        Reaction::Rocket
    } else {
        Reaction::Confused
    }
}

#[cfg(test)]
mod tests {
    //! The deployment payload is a contract: its exact JSON is a fixture. (The texts the
    //! reporter posts have their golden files in `messages`.)
    use super::*;
    use crate::environment::Trigger;
    use crate::types::{EnvKind, Slug};
    use chrono::{DateTime, Utc};

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap_or_default()
    }

    fn sha(c: char) -> Sha {
        Sha::new(&c.to_string().repeat(40)).unwrap()
    }

    /// The reporter is a part of its own: built from a store, a GitHub client (to the
    /// in-process fake), metrics, a clock, a URL and the Sentry counts, with no `App`.
    #[tokio::test]
    async fn the_reporter_stands_alone() {
        use crate::clock::{ManualClock, SharedClock};
        use crate::github::GitHub;
        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        let fake = crate::fake_github::FakeGitHub::start().await;
        let repo: crate::types::RepoName = "acme/webapp".parse().unwrap();
        fake.add_installation(7, "acme");
        fake.add_repo(&repo, "main", 7);
        fake.upsert_pr(
            &repo,
            crate::fake_github::FakePr::new(42, "login", sha('a')),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let github = GitHub::new(fake.github_config()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let clock: SharedClock = Arc::new(ManualClock::new(at(0)));
        let reporter = Reporter::new(
            store.clone(),
            github,
            Arc::clone(&metrics),
            clock,
            "http://bot.example/".into(),
            Arc::new(SentryIssues::new(None)),
        );

        // PR 42's preview, deploying commit a.
        let id = EnvId {
            repo: repo.clone(),
            slug: Slug::new("pr-42-login").unwrap(),
        };
        let mut rec = EnvRecord::new(id.clone(), EnvKind::Preview, "login", at(0));
        rec.pr = Some(PrNumber(42));
        rec.installation_id = Some(7);
        rec.url = "http://pr-42-login.preview.example".into();
        let change = rec
            .request_deploy(Op::Deploy {
                sha: sha('a'),
                git_ref: "login".into(),
                trigger: Trigger::PullRequest,
                by: "alice".into(),
                ack: None,
                force: false,
                gate: None,
                checks: None,
            })
            .unwrap();
        rec.begin_deploy(change.generation, &sha('a'), false)
            .unwrap();
        store.put_env(&rec).unwrap();

        reporter.report(&id, Phase::Deploying).await;
        let deployments = fake.deployments(&repo, "preview/pr-42-login");
        assert_eq!(deployments.len(), 1, "{deployments:?}");
        assert_eq!(deployments[0].sha, sha('a').to_string());
        assert_eq!(deployments[0].last_state(), Some("in_progress"));
        assert_eq!(
            deployments[0].statuses[0].log_url.as_deref(),
            Some("http://bot.example/logs/acme/webapp/pr-42-login/1"),
            "the log link is under the public URL the reporter was given"
        );
        let statuses = fake.statuses(&repo, &sha('a'));
        assert!(
            statuses
                .iter()
                .any(|s| s.context == "stagebot/preview" && s.state == "pending"),
            "{statuses:?}"
        );
        let stickies = fake
            .comments(&repo, PrNumber(42))
            .into_iter()
            .filter(|c| c.is_sticky())
            .count();
        assert_eq!(stickies, 1);
        assert_eq!(metrics.report_failures.load(Ordering::Relaxed), 0);
        assert!(!store.env(&id).unwrap().unwrap().report_pending);

        // The attempt's deployment was recorded in the store: reporting again adds a status to
        // it, never a second deployment, and edits the sticky comment in place.
        reporter.report(&id, Phase::Deploying).await;
        let deployments = fake.deployments(&repo, "preview/pr-42-login");
        assert_eq!(deployments.len(), 1, "{deployments:?}");
        assert_eq!(deployments[0].statuses.len(), 2);
        let stickies = fake
            .comments(&repo, PrNumber(42))
            .into_iter()
            .filter(|c| c.is_sticky())
            .count();
        assert_eq!(stickies, 1);
    }

    #[test]
    fn deployment_payload_schema() {
        let attempt = AttemptRecord {
            v: 1,
            attempt: 1234,
            env: crate::types::EnvId {
                repo: "acme/webapp".parse().unwrap(),
                slug: Slug::new("pr-42-feature-login").unwrap(),
            },
            kind: EnvKind::Preview,
            generation: 9,
            sha: sha('a'),
            git_ref: "feature/login".into(),
            release: 3,
            trigger: Trigger::Rollback { to_release: 1 },
            actor: "alice".into(),
            pr: Some(PrNumber(42)),
            incarnation: 7,
            created_at: at(0),
            deployment_id: None,
            state: None,
        };
        let payload = DeploymentPayload::of(&attempt);
        let json = payload.to_json();
        let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/deployment-payload.json");
        if std::env::var_os("STAGEBOT_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with STAGEBOT_BLESS=1)", path.display()));
        assert_eq!(
            text, expected,
            "the payload schema changed; bump PAYLOAD_SCHEMA and bless"
        );
        assert_eq!(DeploymentPayload::from_json(&json), Some(payload));
        // Not ours: ignored, never an error.
        for foreign in [
            serde_json::json!({}),
            serde_json::json!("{\"stagebot\":1}"),
            serde_json::json!({ "stagebot": "x" }),
            serde_json::json!({ "stagebot": { "schema": 1, "attempt": 1234 } }),
            serde_json::json!({ "deploy": { "attempt": 1234 } }),
            serde_json::Value::Null,
        ] {
            assert_eq!(DeploymentPayload::from_json(&foreign), None, "{foreign}");
        }
    }
}
