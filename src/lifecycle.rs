//! The environment state machine in motion (docs/architecture.md, "The environment state machine"). One runner task per environment
//! executes the environment's durable `op`; every transition is persisted before the side effect
//! it announces. A newer op (a newer commit) bumps the environment's generation, which cancels a
//! running deploy of an older one: newest wins.

use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use crate::app::App;
use crate::environment::{EnvRecord, EnvState, Failure, Op, Release, Trigger, applied};
use crate::metrics::Metrics;
use crate::provider::{DeploySpec, ProviderStatus, TeardownSpec};
use crate::store::StoreError;
use crate::types::{EnvId, EnvKind};

/// What a report to GitHub announces (the reporter's).
pub use crate::reporter::Phase;

impl App {
    /// Make sure a runner works on `id`'s op (generation `generation` or newer).
    pub fn kick(&self, id: &EnvId, generation: u64) {
        let Some(rx) = self.0.runners.claim(id, generation) else {
            return;
        };
        let app = self.clone();
        let id = id.clone();
        let span = tracing::info_span!("env", repo = %id.repo, env = %id.slug);
        tokio::spawn(async move { app.run_env(&id, rx).await }.instrument(span));
    }

    /// Ask for an environment's teardown outside a webhook (operator CLI): the engine's.
    pub fn request_teardown(
        &self,
        id: &EnvId,
        reason: &str,
    ) -> Result<bool, crate::store::StoreError> {
        self.engine().request_teardown(id, reason)
    }

    /// Number of environments with a runner at work.
    pub fn busy_runners(&self) -> usize {
        self.0.runners.busy()
    }

    /// Wait until no runner is at work.
    pub async fn runners_idle(&self) {
        self.0.runners.idle().await;
    }

    async fn run_env(&self, id: &EnvId, mut generation: watch::Receiver<u64>) {
        let mut teardown_failures = 0u32;
        loop {
            let rec = match self.store().env(id) {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(env = %id, error = %e, "cannot read environment; runner stops");
                    break;
                }
            };
            let op = match rec.op() {
                Some(op) if !rec.runner_idle() => op.clone(),
                _ => {
                    // Leave only if nothing new arrived meanwhile (checked under the registry's
                    // lock, which `kick` takes too, so an op is never stranded).
                    let left = self.0.runners.leave_if(id, || {
                        self.store()
                            .env(id)
                            .ok()
                            .flatten()
                            .as_ref()
                            .is_none_or(EnvRecord::runner_idle)
                    });
                    if left {
                        return;
                    }
                    continue;
                }
            };
            generation.borrow_and_update();
            let result = match op {
                Op::Deploy { .. } | Op::Restart { .. } => {
                    self.run_deploy(rec, &mut generation).await
                }
                Op::Teardown { .. } => {
                    self.run_teardown(rec, &mut teardown_failures, &mut generation)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!(env = %id, error = %e, "runner step failed; will retry");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        self.0.runners.leave(id);
    }

    async fn run_deploy(
        &self,
        rec: EnvRecord,
        generation: &mut watch::Receiver<u64>,
    ) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let gen_now = rec.generation();
        let (sha, git_ref, trigger, by, ack, force, restart_of) = match rec.op() {
            Some(Op::Deploy {
                sha,
                git_ref,
                trigger,
                by,
                ack,
                force,
                ..
            }) => (
                sha.clone(),
                git_ref.clone(),
                trigger.clone(),
                by.clone(),
                *ack,
                *force,
                None,
            ),
            Some(Op::Restart { release }) => {
                let Some(r) = self.store().release(&id, *release)? else {
                    self.clear_op(&id, gen_now)?;
                    return Ok(());
                };
                (
                    r.sha,
                    r.git_ref,
                    r.trigger,
                    r.by,
                    None,
                    true,
                    Some(*release),
                )
            }
            _ => return Ok(()),
        };
        // Already live at this commit: nothing to deploy (idempotent replays).
        let live_sha = match rec.current_release() {
            Some(n) => self.store().release(&id, n)?.map(|r| r.sha),
            None => None,
        };
        if !force && rec.state() == EnvState::Live && live_sha.as_ref() == Some(&sha) {
            if self.clear_op(&id, gen_now)? {
                self.reporter().ack(&rec, ack, true).await;
                self.reporter().report(&id, Phase::Live).await;
            }
            return Ok(());
        }
        // The CI gate (`require_checks`): wait, fail, or go on with what allowed it.
        let (gate, mut checks) = match rec.op() {
            Some(Op::Deploy { gate, checks, .. }) => (gate.clone(), checks.clone()),
            _ => (None, None),
        };
        if let (Some(gate), None) = (&gate, restart_of) {
            match self.ci_gate(&rec, &sha, gate).await {
                crate::policy::GateVerdict::Pass(summary) => checks = Some(summary),
                crate::policy::GateVerdict::Wait(text) => {
                    let waiting = self
                        .store()
                        .update_env(&id, |r| r.wait_for_ci(gen_now, &sha, &text, true))?;
                    if applied(&id, waiting).is_some() {
                        tracing::info!(env = %id, sha = %sha.short(), wait = %text, "deploy waits for CI");
                        self.reporter().report(&id, Phase::Waiting).await;
                    }
                    return Ok(());
                }
                crate::policy::GateVerdict::Fail(text) => {
                    // A gate that fails at its first look has no GitHub deployment yet: the
                    // attempt is reported (queued) first, so its deployment ends `failure`.
                    let reported = self
                        .store()
                        .attempts(&id)?
                        .iter()
                        .any(|a| a.generation == gen_now && a.sha == sha);
                    if !reported {
                        let noted = self
                            .store()
                            .update_env(&id, |r| r.wait_for_ci(gen_now, &sha, &text, false))?;
                        if applied(&id, noted).is_none() {
                            return Ok(());
                        }
                        self.reporter().report(&id, Phase::Waiting).await;
                    }
                    let failed = self
                        .store()
                        .update_env(&id, |r| r.fail_ci_gate(gen_now, &sha, &text))?;
                    if applied(&id, failed).is_some() {
                        Metrics::inc(&self.metrics().deploys_failed);
                        tracing::warn!(env = %id, sha = %sha.short(), error = %text, "CI gate failed");
                        self.reporter().ack(&rec, ack, false).await;
                        self.reporter().report(&id, Phase::Failed).await;
                    }
                    return Ok(());
                }
            }
        }
        // A promotion always says what allowed it, also when nothing was required.
        if gate.is_none() && checks.is_none() && matches!(trigger, Trigger::Promote { .. }) {
            checks = Some(crate::messages::ci(&crate::messages::CiText::NoGate {
                kind: rec.kind,
            }));
        }
        // Persist the transition before acting on it.
        let begun = self
            .store()
            .update_env(&id, |r| r.begin_deploy(gen_now, &sha, restart_of.is_some()))?;
        let Some((rec, Ok(_))) = begun else {
            applied(&id, begun);
            return Ok(());
        };
        Metrics::inc(&self.metrics().deploys_started);
        if restart_of.is_none() {
            self.reporter().report(&id, Phase::Deploying).await;
        }
        let n = restart_of.unwrap_or(rec.releases() + 1);
        let (log_path, log_url) = self.log_location(&id, n);
        let clone_token = if rec.clone_url.starts_with("https://") {
            match self.repo_client(rec.installation_id, &id.repo).await {
                Ok(c) => c.clone_token().await.ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        let mut spec = DeploySpec {
            env: id.clone(),
            kind: rec.kind,
            branch: git_ref.clone(),
            sha: sha.clone(),
            pr: rec.pr,
            release: n,
            previous_sha: live_sha.clone(),
            clone_url: rec.clone_url.clone(),
            clone_token,
            host: rec.host.clone(),
            public_url: rec.url.clone(),
            profile: rec.profile.clone(),
            first_deploy: !rec.seeded(),
            vars: self.settings().vars.clone(),
            log_path,
            artifact: self.first_release_of(&id, &sha, n)?,
        };
        let started = Instant::now();
        let span = tracing::info_span!("deploy", sha = %sha.short(), release = n);
        let outcome = async {
            // The environment's database and Sentry variables first (src/services.rs).
            let deploy = async {
                self.prepare_services(&rec, &mut spec).await?;
                self.provider().deploy(&spec).await
            };
            tokio::pin!(deploy);
            loop {
                tokio::select! {
                    res = &mut deploy => break Some(res),
                    changed = generation.changed() => {
                        if changed.is_err() || *generation.borrow() != gen_now {
                            break None;
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
        let Some(outcome) = outcome else {
            // Superseded: the newer op runs next; the dropped deploy cleaned up after itself.
            Metrics::inc(&self.metrics().deploys_superseded);
            tracing::info!(env = %id, sha = %sha.short(), "deploy superseded by a newer one");
            self.reporter().ack(&rec, ack, false).await;
            return Ok(());
        };
        match outcome {
            Ok(deployed) => {
                let ms = started.elapsed().as_millis() as u64;
                if let Some(r) = restart_of {
                    let done = self.store().update_env(&id, |e| e.restarted(gen_now, r))?;
                    if let Some((e, Ok(_))) = done {
                        tracing::info!(env = %id, release = r, "restarted");
                        // A report owed from before the crash goes out now.
                        if e.report_pending {
                            self.reporter().report(&id, Phase::Live).await;
                        }
                    }
                    return Ok(());
                }
                let release = Release {
                    v: 1,
                    n,
                    sha: sha.clone(),
                    git_ref,
                    by,
                    trigger,
                    at: self.now(),
                    url: deployed.url.clone(),
                    log: log_url,
                    pr: rec.pr,
                    checks,
                    artifact: deployed.artifact.clone(),
                };
                let committed = self
                    .store()
                    .commit_release(&id, &release, |e| e.commit_live(gen_now, n, &deployed.url))?;
                if applied(&id, committed).is_none() {
                    return Ok(());
                }
                Metrics::inc(&self.metrics().deploys_succeeded);
                self.metrics()
                    .deploy_ms_sum
                    .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
                Metrics::inc(&self.metrics().deploy_ms_count);
                tracing::info!(env = %id, sha = %sha.short(), release = n, ms, "live");
                self.reporter().ack(&rec, ack, true).await;
                self.reporter().report(&id, Phase::Live).await;
                self.sentry_release_live(&rec, &sha, &deployed.url).await;
            }
            Err(err) => {
                let (message, tail) = (err.to_string(), err.log_tail().map(str::to_owned));
                let now = self.now();
                let failure = Failure {
                    message: message.clone(),
                    log_tail: tail,
                };
                let failed = self
                    .store()
                    .update_env(&id, |e| e.fail(gen_now, failure.clone(), restart_of, now))?;
                if applied(&id, failed).is_none() {
                    return Ok(());
                }
                Metrics::inc(&self.metrics().deploys_failed);
                tracing::warn!(env = %id, sha = %sha.short(), error = %message, "deploy failed");
                self.reporter().ack(&rec, ack, false).await;
                if restart_of.is_none() {
                    self.reporter().report(&id, Phase::Failed).await;
                }
            }
        }
        Ok(())
    }

    async fn run_teardown(
        &self,
        rec: EnvRecord,
        failures: &mut u32,
        generation: &mut watch::Receiver<u64>,
    ) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let gen_now = rec.generation();
        let ack = match rec.op() {
            Some(Op::Teardown { ack, .. }) => *ack,
            _ => None,
        };
        let begun = self
            .store()
            .update_env(&id, |r| r.begin_teardown(gen_now))?;
        let Some((rec, Ok(_))) = begun else {
            applied(&id, begun);
            return Ok(());
        };
        let sha = match rec.current_release() {
            Some(n) => self.store().release(&id, n)?.map(|r| r.sha),
            None => None,
        };
        let (log_path, _) = self.log_location(&id, rec.releases().max(1));
        let spec = TeardownSpec {
            env: id.clone(),
            kind: rec.kind,
            branch: rec.branch.clone(),
            sha,
            pr: rec.pr,
            log_path,
        };
        let torn_down = match self.provider().teardown(&spec).await {
            Ok(()) => self.release_services(&spec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = torn_down {
            // Keep the op: the runner (or the reconciler) tries again.
            tracing::warn!(env = %id, error = %e, "teardown failed; will retry");
            let noted = self
                .store()
                .update_env(&id, |r| r.teardown_failed(format!("teardown failed: {e}")))?;
            applied(&id, noted);
            // 2 s, 4 s, 8 s … capped at 5 minutes; a newer op (a redeploy) ends the wait.
            *failures += 1;
            let wait = std::time::Duration::from_secs(1u64 << (*failures).min(8))
                .min(std::time::Duration::from_secs(300));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = generation.changed() => {}
            }
            return Ok(());
        }
        let done = self.store().update_env(&id, |r| r.destroyed(gen_now))?;
        if applied(&id, done).is_some() {
            Metrics::inc(&self.metrics().teardowns);
            tracing::info!(env = %id, "destroyed");
            self.reporter().ack(&rec, ack, true).await;
            self.reporter().report(&id, Phase::Destroyed).await;
            if rec.kind == EnvKind::Preview {
                self.start_queued(rec.installation_id).await;
            }
        }
        Ok(())
    }

    /// Clear a finished op when the environment is still at `generation`.
    fn clear_op(&self, id: &EnvId, generation: u64) -> Result<bool, StoreError> {
        let done = self.store().update_env(id, |r| r.finish_op(generation))?;
        Ok(applied(id, done).is_some())
    }

    /// Start queued previews when capacity allows (policy decides which).
    pub async fn start_queued(&self, installation: Option<u64>) {
        let Some(installation) = installation else {
            return;
        };
        let Ok(envs) = self.store().envs() else {
            return;
        };
        let queued: Vec<EnvRecord> = envs
            .into_iter()
            .filter(|e| e.installation_id == Some(installation) && e.state() == EnvState::Queued)
            .collect();
        let in_use = self
            .engine()
            .previews_in_use(installation)
            .unwrap_or(usize::MAX);
        for slug in crate::policy::dequeue(&queued, in_use, &self.settings().limits) {
            let Some(env) = queued.iter().find(|e| e.id.slug == slug) else {
                continue;
            };
            let id = env.id.clone();
            match self.store().update_env(&id, EnvRecord::leave_queue) {
                Ok(left) => {
                    if let Some(change) = applied(&id, left) {
                        tracing::info!(env = %id, "leaving the capacity queue");
                        self.kick(&id, change.generation);
                    }
                }
                Err(e) => {
                    tracing::warn!(env = %id, error = %e, "cannot take a preview out of the queue")
                }
            }
        }
    }

    /// Compare stored state with reality and repair it (docs/architecture.md, "The reconciler and the sweeper"): both passes below.
    pub async fn reconcile(&self) -> Result<ReconcileSummary, StoreError> {
        let mut summary = self.reconcile_local().await?;
        let remote = self.reconcile_github().await?;
        summary.closed = remote.closed;
        summary.reported = remote.reported;
        Ok(summary)
    }

    /// At start-up, before [`App::reconcile_local`]: the provider adopts the processes of live
    /// releases a previous stagebot left running (no redeploy, no new release, no report) and
    /// stops everything else that stagebot left behind (docs/providers.md, "Restarts and crash
    /// recovery"). An environment whose app died meanwhile is restarted by the reconcile pass.
    pub async fn adopt_processes(
        &self,
    ) -> Result<crate::provider::local::AdoptSummary, StoreError> {
        let live: Vec<crate::provider::local::LiveRelease> = self
            .store()
            .envs()?
            .into_iter()
            .filter(|e| e.is_active() && e.state() != EnvState::Queued)
            .filter_map(|e| {
                Some(crate::provider::local::LiveRelease {
                    release: e.current_release()?,
                    env: e.id,
                })
            })
            .collect();
        Ok(self.provider().adopt(&live).await)
    }

    /// What needs no GitHub: unfinished ops (a crash mid-deploy) are resumed, live environments
    /// whose process died are restarted (with backoff when the restart itself fails), and queued
    /// previews start when there is room. Fast: runs before the server accepts webhooks.
    pub async fn reconcile_local(&self) -> Result<ReconcileSummary, StoreError> {
        let mut summary = ReconcileSummary::default();
        let now = self.now();
        for env in self.store().envs()? {
            if env.state() == EnvState::Queued {
                continue;
            }
            if env.op().is_some() {
                summary.resumed += 1;
                self.kick(&env.id, env.generation());
                continue;
            }
            if env.restartable(now).is_none() {
                continue;
            }
            if matches!(
                self.provider().status(&env.id).await,
                Ok(ProviderStatus::Stopped)
            ) {
                let updated = self
                    .store()
                    .update_env(&env.id, |r| r.request_restart(now))?;
                if let Some(change) = applied(&env.id, updated) {
                    summary.restarted += 1;
                    self.kick(&env.id, change.generation);
                }
            }
        }
        let installations: std::collections::BTreeSet<u64> = self
            .store()
            .envs()?
            .iter()
            .filter(|e| e.state() == EnvState::Queued)
            .filter_map(|e| e.installation_id)
            .collect();
        for inst in installations {
            self.start_queued(Some(inst)).await;
        }
        Ok(summary)
    }

    /// What needs GitHub: previews of PRs closed while webhooks were lost are torn down (one
    /// `list open pulls` call per repository, not one per preview), and reports GitHub missed
    /// are sent again. A GitHub outage only delays this pass.
    pub async fn reconcile_github(&self) -> Result<ReconcileSummary, StoreError> {
        let mut summary = ReconcileSummary::default();
        let envs = self.store().envs()?;
        let mut repos: std::collections::BTreeMap<&crate::types::RepoName, Option<u64>> =
            Default::default();
        // A closed PR's preview goes even if it is being (re)started or deployed right now.
        let closable = |e: &EnvRecord| {
            e.kind == EnvKind::Preview
                && e.is_active()
                && e.pr.is_some()
                && !matches!(e.op(), Some(Op::Teardown { .. }))
        };
        for env in envs.iter().filter(|e| closable(e)) {
            repos.entry(&env.id.repo).or_insert(env.installation_id);
        }
        for (repo, installation) in repos {
            let open = match self.repo_client(installation, repo).await {
                Ok(client) => client.open_pulls().await,
                Err(e) => Err(e),
            };
            let open: Vec<_> = match open {
                Ok(list) => list.into_iter().map(|p| p.number).collect(),
                Err(e) => {
                    tracing::warn!(%repo, error = %e, "cannot list open pull requests; will retry");
                    continue;
                }
            };
            for env in envs.iter().filter(|e| {
                &e.id.repo == repo && closable(e) && e.pr.is_some_and(|pr| !open.contains(&pr))
            }) {
                let updated = self.store().update_env(&env.id, |r| {
                    r.request_teardown("the pull request is closed", "stagebot", None)
                })?;
                if let Some(change) = applied(&env.id, updated) {
                    summary.closed += 1;
                    self.kick(&env.id, change.generation);
                }
            }
        }
        for env in self.store().envs()? {
            // A gate whose check events were lost (or could not be read) is looked at again.
            if env.waits_for_ci() {
                self.recheck_ci(&env.id)?;
            }
            if env.report_pending && env.op().is_none() {
                summary.reported += 1;
                let phase = match env.state() {
                    EnvState::Live => Phase::Live,
                    EnvState::Failed => Phase::Failed,
                    EnvState::Destroyed => Phase::Destroyed,
                    _ => Phase::Deploying,
                };
                self.reporter().report(&env.id, phase).await;
            }
        }
        Ok(summary)
    }
}

impl App {
    /// `<slug>-<release>` of the first release of commit `sha` in `id`'s repository, or of
    /// release `n` of `id` (the deploy about to run) when there is none.
    fn first_release_of(
        &self,
        id: &EnvId,
        sha: &crate::types::Sha,
        n: u32,
    ) -> Result<String, StoreError> {
        let mut first: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
        for env in self.store().all_envs_of_repo(&id.repo)? {
            for r in self.store().releases(&env.id)? {
                if &r.sha == sha && first.as_ref().is_none_or(|(at, _)| r.at < *at) {
                    first = Some((r.at, format!("{}-{}", env.id.slug, r.n)));
                }
            }
        }
        Ok(first.map_or_else(|| format!("{}-{n}", id.slug), |(_, name)| name))
    }
}

impl App {
    /// Evaluate a deploy's CI gate on commit `sha`. A gate that cannot be read waits, saying
    /// why (a missing `checks: read` permission, GitHub unreachable).
    async fn ci_gate(
        &self,
        rec: &EnvRecord,
        sha: &crate::types::Sha,
        gate: &crate::repo_config::CiGate,
    ) -> crate::policy::GateVerdict {
        let results = match self.repo_client(rec.installation_id, &rec.id.repo).await {
            Ok(client) => client.ci_results(sha).await,
            Err(e) => Err(e),
        };
        match results {
            Ok(results) => crate::policy::ci_gate(gate, &results),
            Err(e) => {
                tracing::warn!(env = %rec.id, sha = %sha.short(), error = %e, "cannot read the CI results");
                crate::policy::GateVerdict::Wait(crate::messages::ci(
                    &crate::messages::CiText::Unreadable {
                        forbidden: matches!(e, crate::github::GitHubError::Forbidden { .. }),
                    },
                ))
            }
        }
    }

    /// Re-evaluate the CI gate of `id`'s waiting deploy: the engine's.
    pub fn recheck_ci(&self, id: &EnvId) -> Result<(), StoreError> {
        self.engine().recheck_ci(id)
    }
}

/// What a reconcile pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub resumed: usize,
    pub restarted: usize,
    pub closed: usize,
    pub reported: usize,
}
