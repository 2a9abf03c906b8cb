//! `stagebot recover` and `STAGEBOT_RECOVER=auto` (docs/reliability.md, "State recoverable from
//! GitHub"): rebuild environments and release history of an empty store from what GitHub holds.
//!
//! Which repositories: those of the App's installations (`GET /app/installations`, then `GET
//! /installation/repositories` as each). In each, every deployment stagebot created (its payload
//! carries `reporter::DeploymentPayload`: kind, slug, release number, commit, ref, trigger,
//! actor, PR) and its statuses give the releases (a deployment that reached `success`) and which
//! release is live (the newest whose newest status is still `success`); the open pull requests
//! decide whether a preview should still exist (and give its clone URL), and their sticky
//! comments are found again so they are edited, not duplicated. Environments that should be live
//! are written `live`: the reconciler's local pass finds them stopped and restarts their live
//! release (same release number, nothing new reported). What cannot be recovered is listed in
//! docs/reliability.md.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument as _;

use crate::app::App;
use crate::environment::{EnvRecord, Release};
use crate::github::{DeploymentInfo, GitHubError, InstalledRepo, PrInfo, RepoClient};
use crate::reporter::DeploymentPayload;
use crate::store::{InstallationRecord, StoreError};
use crate::types::{EnvId, EnvKind, PrNumber, Slug};

/// What a recovery rebuilt.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RecoverSummary {
    pub installations: usize,
    pub repositories: usize,
    /// Environments written (any state).
    pub environments: usize,
    /// Of those, written `live` (the reconciler restarts them).
    pub live: usize,
    pub releases: usize,
    /// Sticky comments found again.
    pub stickies: usize,
    /// Installations and repositories that could not be read (skipped; listed with the error).
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("the store already holds data: recover only into an empty data dir")]
    NotEmpty,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
}

/// One release found on GitHub.
struct Found {
    payload: DeploymentPayload,
    deployment: DeploymentInfo,
    /// When it went live, its URL and log URL.
    success: Option<(DateTime<Utc>, Option<String>, Option<String>)>,
    /// Its newest status is `success`: it is what the environment serves.
    live_now: bool,
}

impl App {
    /// Rebuild an empty store from GitHub (see the module docs). Refuses a store with data.
    pub async fn recover(&self) -> Result<RecoverSummary, RecoverError> {
        if !self.store().is_empty() {
            return Err(RecoverError::NotEmpty);
        }
        let mut summary = RecoverSummary::default();
        let now = self.now();
        for inst in self.github().installations().await? {
            if inst.suspended {
                continue;
            }
            summary.installations += 1;
            let repos = match self.github().installation_repositories(inst.id).await {
                Ok(repos) => repos,
                Err(e) => {
                    tracing::warn!(installation = inst.id, error = %e,
                        "installation's repositories could not be listed; skipped");
                    summary
                        .skipped
                        .push(format!("installation {} ({}): {e}", inst.id, inst.account));
                    continue;
                }
            };
            self.store().put_installation(&InstallationRecord {
                v: 1,
                id: inst.id,
                account: inst.account.clone(),
                suspended: false,
                repos: repos.iter().map(|r| r.name.clone()).collect(),
                updated_at: now,
            })?;
            for repo in repos {
                self.store().set_repo_installation(&repo.name, inst.id)?;
                summary.repositories += 1;
                let span = tracing::info_span!("recover", repo = %repo.name);
                let result = self
                    .recover_repo(inst.id, &repo, &mut summary)
                    .instrument(span)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "repository could not be recovered; skipped");
                    summary.skipped.push(format!("{}: {e}", repo.name));
                }
            }
        }
        // Nothing GitHub sent before this moment is replayed (issue 14's horizon rule).
        self.store().reset_catchup(Utc::now())?;
        self.store().flush().await?;
        tracing::info!(?summary, "recovered from GitHub");
        Ok(summary)
    }

    async fn recover_repo(
        &self,
        installation: u64,
        repo: &InstalledRepo,
        summary: &mut RecoverSummary,
    ) -> Result<(), RecoverError> {
        let rc = self.github().repo(installation, repo.name.clone());
        let open: BTreeMap<PrNumber, PrInfo> = rc
            .open_pulls()
            .await?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        // Deployments stagebot made, by environment.
        let mut by_env: BTreeMap<Slug, Vec<Found>> = BTreeMap::new();
        let app_id = self.github().app_id();
        for d in rc.all_deployments().await? {
            // Anyone with write access can create a deployment with a payload of our shape:
            // only those this App created count (else a writer could forge a production release).
            if d.app_id != Some(app_id) {
                continue;
            }
            let Some(payload) = DeploymentPayload::from_json(&d.payload) else {
                continue;
            };
            if !payload.repo.eq_ignore_ascii_case(&repo.name.to_string())
                || payload.environment
                    != crate::types::environment_name(payload.kind, &payload.slug)
            {
                continue;
            }
            let statuses = rc.deployment_statuses(d.id).await?;
            let success = statuses
                .iter()
                .find(|s| s.state == "success")
                .map(|s| (s.created_at, s.environment_url.clone(), s.log_url.clone()));
            let live_now = statuses.first().is_some_and(|s| s.state == "success");
            by_env.entry(payload.slug.clone()).or_default().push(Found {
                payload,
                deployment: d,
                success,
                live_now,
            });
        }
        let mut ttl: Option<std::time::Duration> = None;
        for (slug, found) in by_env {
            let id = EnvId {
                repo: repo.name.clone(),
                slug,
            };
            let written = self
                .recover_env(&rc, repo, &id, found, &open, &mut ttl)
                .await?;
            if let Some((releases, live)) = written {
                summary.environments += 1;
                summary.releases += releases;
                summary.live += usize::from(live);
            }
        }
        for pr in open.keys() {
            if let Some(comment) = rc.find_sticky_comment(*pr).await? {
                self.store()
                    .update_pr(&repo.name, *pr, |r| r.sticky_comment_id = Some(comment))?;
                summary.stickies += 1;
            }
        }
        Ok(())
    }

    /// Write one environment and its releases; `(releases, live)` when anything was written.
    async fn recover_env(
        &self,
        rc: &RepoClient,
        repo: &InstalledRepo,
        id: &EnvId,
        mut found: Vec<Found>,
        open: &BTreeMap<PrNumber, PrInfo>,
        ttl: &mut Option<std::time::Duration>,
    ) -> Result<Option<(usize, bool)>, RecoverError> {
        found.sort_by_key(|f| (f.payload.release, f.deployment.created_at, f.deployment.id));
        let Some(newest) = found.last() else {
            return Ok(None);
        };
        let kind = newest.payload.kind;
        let pr = newest.payload.pr;
        // One release per number: the deployment that went live (a failed attempt that was
        // retried under the same number has no `success`).
        let mut releases: BTreeMap<u32, (Release, u64, bool)> = BTreeMap::new();
        for f in &found {
            let Some((at, url, log)) = &f.success else {
                continue;
            };
            let p = &f.payload;
            releases.insert(
                p.release,
                (
                    Release {
                        v: 1,
                        n: p.release,
                        sha: p.sha.clone(),
                        git_ref: p.git_ref.clone(),
                        by: p.actor.clone(),
                        trigger: p.trigger.clone(),
                        at: *at,
                        url: url.clone().unwrap_or_default(),
                        log: log.clone().unwrap_or_default(),
                        pr: p.pr,
                        // Not in the deployment payload: the CI result and the artifact are
                        // not recovered (docs/reliability.md).
                        checks: None,
                        artifact: None,
                    },
                    f.deployment.id,
                    f.live_now,
                ),
            );
        }
        if releases.is_empty() {
            // Never went live: nothing to serve, nothing to remember.
            return Ok(None);
        }
        let open_pr = pr.and_then(|n| open.get(&n));
        let live = releases
            .iter()
            .rev()
            .find(|(_, (_, _, live_now))| *live_now)
            .map(|(n, _)| *n);
        // A preview lives only while its PR is open.
        let live = live.filter(|_| kind != EnvKind::Preview || open_pr.is_some());
        let Some((last_n, (last, _, _))) = releases.iter().next_back() else {
            return Ok(None);
        };
        let now = self.now();
        let (host, url) = self.host_and_url(&id.repo, &id.slug);
        let clone_url = match open_pr {
            Some(p) if !p.head_clone_url.is_empty() => p.head_clone_url.clone(),
            _ => repo.clone_url.clone(),
        };
        let mut rec = EnvRecord::new(id.clone(), kind, &last.git_ref, now);
        rec.pr = pr;
        rec.installation_id = Some(rc.installation_id());
        rec.clone_url = clone_url;
        rec.host = host;
        rec.url = url;
        rec.fork = open_pr.is_some_and(|p| p.fork);
        rec.private = repo.private;
        if let Some(p) = open_pr {
            rec.branch = p.head_ref.clone();
        }
        let mut expires = None;
        if kind == EnvKind::Preview && live.is_some() {
            let ttl = match ttl {
                Some(t) => *t,
                None => {
                    let t = match self.engine().repo_config(rc, &repo.default_branch).await {
                        Ok(Ok(cfg)) => cfg.preview.ttl,
                        _ => crate::repo_config::RepoConfig::default().preview.ttl,
                    };
                    *ttl = Some(t);
                    t
                }
            };
            rec.ttl_secs = Some(ttl.as_secs());
            expires = chrono::Duration::from_std(ttl).ok().map(|t| now + t);
        }
        for (release, deployment, _) in releases.values() {
            rec.remember(&release.sha);
            rec.deployments.insert(release.sha.to_string(), *deployment);
        }
        // The releases first, then the environment that names them: a crash in between leaves
        // no environment, and the next recovery starts again.
        for (release, _, _) in releases.values() {
            self.store().put_release(id, release)?;
        }
        let count = releases.len();
        if let Err(refused) = rec.recover(*last_n, live.map(|n| (n, expires))) {
            tracing::warn!(env = %id, reason = %refused, "environment not recovered");
            return Ok(None);
        }
        self.store().put_env(&rec)?;
        tracing::info!(env = %id, releases = count, live = ?live, "environment recovered");
        Ok(Some((count, live.is_some())))
    }
}
