//! Telling GitHub (docs/architecture.md, "Talking to GitHub"): deployments and their statuses, commit statuses, the PR's sticky
//! comment and command reactions. Reports are rebuilt from the store, so sending one twice is
//! harmless; one that fails marks the environment `report_pending` and the reconciler sends it
//! again later. A GitHub outage delays reports; it never loses state.

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::engine::ack_reaction;
use crate::github::{
    DeploymentState, GitHubError, NewDeployment, NewDeploymentStatus, RepoClient, StatusState,
};
use crate::lifecycle::Phase;
use crate::metrics::Metrics;
use crate::store::{EnvRecord, EnvState, PrRecord, Release};
use crate::types::{EnvId, EnvKind, PrNumber};

impl App {
    /// Report an environment's phase; failures are remembered for the reconciler.
    pub async fn report(&self, id: &EnvId, phase: Phase) {
        let result = self.try_report(id, phase).await;
        // Retryable failures wait for the reconciler; a final answer (404, 422…) will not change.
        let pending = matches!(&result, Err(e) if e.is_retryable());
        if let Err(e) = &result {
            Metrics::inc(&self.metrics().report_failures);
            tracing::warn!(env = %id, ?phase, error = %e, "report to GitHub failed; will retry");
        }
        let _ = self.store().update_env(id, |r| r.report_pending = pending);
    }

    async fn try_report(&self, id: &EnvId, phase: Phase) -> Result<(), GitHubError> {
        let Ok(Some(rec)) = self.store().env(id) else {
            return Ok(());
        };
        let client = self.repo_client(rec.installation_id, &id.repo).await?;
        let release = match rec.current_release {
            Some(n) => self.store().release(id, n).ok().flatten(),
            None => None,
        };
        // The commit this report is about.
        let sha = match phase {
            Phase::Deploying => rec.deploying.clone(),
            Phase::Live | Phase::Destroyed => release.as_ref().map(|r| r.sha.clone()),
            Phase::Failed => rec.attempted.clone(),
        };
        let context = format!("stagebot/{}", rec.kind);
        let environment = crate::types::environment_name(rec.kind, &rec.id.slug);
        let (_, log_url) = self.log_location(
            id,
            match phase {
                Phase::Failed => rec.releases + 1,
                _ => rec.current_release.unwrap_or(rec.releases + 1),
            },
        );
        if let Some(sha) = &sha {
            // One GitHub deployment per (environment, commit).
            let key = sha.to_string();
            let deployment_id = match rec.deployments.get(&key) {
                Some(id) => *id,
                None if phase == Phase::Destroyed => 0,
                None => {
                    let new_id = client
                        .create_deployment(&NewDeployment {
                            git_ref: sha.clone(),
                            environment: environment.clone(),
                            description: format!("stagebot {} {}", rec.kind, rec.id.slug),
                            transient_environment: rec.kind == EnvKind::Preview,
                            production_environment: rec.kind == EnvKind::Production,
                        })
                        .await?;
                    let _ = self.store().update_env(id, |r| {
                        r.deployments.insert(key.clone(), new_id);
                        while r.deployments.len() > 50 {
                            r.deployments.pop_first();
                        }
                    });
                    new_id
                }
            };
            let (state, env_url, description) = match phase {
                Phase::Deploying => (
                    DeploymentState::InProgress,
                    None,
                    format!("Deploying {}", sha.short()),
                ),
                Phase::Live => (
                    DeploymentState::Success,
                    Some(rec.url.clone()),
                    format!("Live at {}", rec.url),
                ),
                Phase::Failed => (
                    DeploymentState::Failure,
                    None,
                    rec.last_error
                        .clone()
                        .unwrap_or_else(|| "Deploy failed".into()),
                ),
                Phase::Destroyed => (
                    DeploymentState::Inactive,
                    None,
                    "Environment removed".into(),
                ),
            };
            if deployment_id != 0 {
                client
                    .create_deployment_status(
                        deployment_id,
                        &NewDeploymentStatus {
                            state,
                            environment_url: env_url,
                            log_url: Some(log_url.clone()),
                            description,
                            auto_inactive: None,
                        },
                    )
                    .await?;
            }
            let status = match phase {
                Phase::Deploying => Some((
                    StatusState::Pending,
                    "Deploying…".to_string(),
                    log_url.clone(),
                )),
                Phase::Live => Some((
                    StatusState::Success,
                    format!("Live at {}", rec.url),
                    rec.url.clone(),
                )),
                Phase::Failed => Some((
                    StatusState::Failure,
                    rec.last_error
                        .clone()
                        .unwrap_or_else(|| "Deploy failed".into()),
                    log_url.clone(),
                )),
                Phase::Destroyed => None,
            };
            if let Some((state, description, target)) = status {
                client
                    .set_status(sha, state, &context, &description, Some(&target))
                    .await?;
            }
        }
        if let Some(pr) = rec.pr {
            self.refresh_sticky(&client, pr).await?;
        }
        Ok(())
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

    /// Re-render the PR's sticky comment from the store and upsert it.
    pub async fn refresh_sticky(
        &self,
        client: &RepoClient,
        pr: PrNumber,
    ) -> Result<(), GitHubError> {
        let repo = client.repo().clone();
        let record = self.store().pr(&repo, pr).unwrap_or_default();
        let envs: Vec<EnvRecord> = self
            .store()
            .envs_of_repo(&repo)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.pr == Some(pr))
            .collect();
        let mut rows = Vec::new();
        for env in &envs {
            let release = env
                .current_release
                .and_then(|n| self.store().release(&env.id, n).ok().flatten());
            let queue_position = if env.state == EnvState::Queued {
                self.queue_position(env)
            } else {
                None
            };
            rows.push((env.clone(), release, queue_position));
        }
        let body = render_sticky(&record, &rows, self.now());
        let id = client
            .upsert_sticky_comment(pr, record.sticky_comment_id, &body)
            .await?;
        if record.sticky_comment_id != Some(id) {
            let _ = self
                .store()
                .update_pr(&repo, pr, |r| r.sticky_comment_id = Some(id));
        }
        Ok(())
    }

    fn queue_position(&self, env: &EnvRecord) -> Option<usize> {
        let mut queued: Vec<EnvRecord> = self
            .store()
            .envs()
            .ok()?
            .into_iter()
            .filter(|e| e.state == EnvState::Queued && e.installation_id == env.installation_id)
            .collect();
        queued.sort_by_key(|e| e.queued_at);
        queued.iter().position(|e| e.id == env.id).map(|p| p + 1)
    }
}

/// A code fence longer than any run of backticks in `text`, so a log cannot close it early.
fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

fn state_label(env: &EnvRecord) -> String {
    match env.state {
        EnvState::Pending => "⏳ pending".into(),
        EnvState::Queued => "⏸️ queued".into(),
        EnvState::Deploying => "🔄 deploying".into(),
        EnvState::Live => "✅ live".into(),
        EnvState::Failed if env.current_release.is_some() => {
            "❌ failed (previous release still serving)".into()
        }
        EnvState::Failed => "❌ failed".into(),
        EnvState::TearingDown => "🧹 tearing down".into(),
        EnvState::Destroyed => "🗑️ removed".into(),
    }
}

/// "in 2d 23h", "in 5h 10m", "in 12m": the two largest units, rounded down to the minute.
fn relative(to: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (to - now).num_seconds();
    if secs < 60 {
        return "in under a minute".into();
    }
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h, m) {
        (0, 0, m) => format!("in {m}m"),
        (0, h, 0) => format!("in {h}h"),
        (0, h, m) => format!("in {h}h {m}m"),
        (d, 0, _) => format!("in {d}d"),
        (d, h, _) => format!("in {d}d {h}h"),
    }
}

/// The sticky comment's markdown (without the hidden marker, which the client adds).
pub fn render_sticky(
    pr: &PrRecord,
    rows: &[(EnvRecord, Option<Release>, Option<usize>)],
    now: DateTime<Utc>,
) -> String {
    let mut out = String::from("### 🚀 stagebot\n\n");
    if let Some(notice) = &pr.notice {
        out.push_str(&format!("> {notice}\n\n"));
    }
    if rows.is_empty() {
        if pr.notice.is_none() {
            out.push_str(
                "No environment for this pull request yet. Comment `/stage` to deploy one.\n\n",
            );
        }
    } else {
        out.push_str("| Environment | State | URL | Commit | Last deploy | Expires |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for (env, release, queue) in rows {
            let url = if matches!(
                env.state,
                EnvState::Live | EnvState::Failed | EnvState::Deploying
            ) && release.is_some()
            {
                format!(
                    "[{}]({})",
                    env.url
                        .trim_start_matches("http://")
                        .trim_start_matches("https://"),
                    env.url
                )
            } else {
                "—".into()
            };
            let commit = match (&env.deploying, release) {
                (Some(sha), _) => format!("`{}` (deploying)", sha.short()),
                (None, Some(r)) => format!("`{}`", r.sha.short()),
                _ => "—".into(),
            };
            let last = release
                .as_ref()
                .map(|r| {
                    format!(
                        "#{} {} by @{}",
                        r.n,
                        r.at.format("%Y-%m-%d %H:%M UTC"),
                        r.by
                    )
                })
                .unwrap_or_else(|| "—".into());
            let expires = match (env.state, env.expires_at) {
                (EnvState::Destroyed, _) => "—".into(),
                (_, Some(t)) => relative(t, now),
                _ => "never".into(),
            };
            let mut state = state_label(env);
            if let Some(p) = queue {
                state.push_str(&format!(" (position {p})"));
            }
            out.push_str(&format!(
                "| {} `{}` | {state} | {url} | {commit} | {last} | {expires} |\n",
                env.kind, env.id.slug
            ));
        }
        out.push('\n');
        for (env, _, _) in rows {
            if env.state == EnvState::Failed
                && let Some(err) = &env.last_error
            {
                // The error quotes config files and git: shown as code, never as markdown.
                out.push_str(&format!(
                    "**`{}` failed:** {}\n",
                    env.id.slug,
                    crate::markdown::inert(err)
                ));
                if let Some(tail) = &env.last_log_tail {
                    let fence = fence_for(tail);
                    out.push_str(&format!(
                        "\n<details><summary>Log tail</summary>\n\n{fence}\n{}\n{fence}\n</details>\n\n",
                        tail.trim_end()
                    ));
                }
            }
            if env.state == EnvState::Destroyed {
                out.push_str(&format!(
                    "`{}` was removed. Comment `/stage` to bring it back.\n\n",
                    env.id.slug
                ));
            }
            if env.warned_at.is_some()
                && env.is_active()
                && let Some(t) = env.expires_at
            {
                out.push_str(&format!(
                    "⏳ `{}` will be removed {} for inactivity: comment `/extend 2d` to keep it.\n\n",
                    env.id.slug,
                    relative(t, now)
                ));
            }
        }
    }
    out.push_str("<details><summary>Commands</summary>\n\n");
    out.push_str(&crate::command::help_text());
    out.push_str("\n</details>\n");
    out
}

#[cfg(test)]
mod tests {
    //! Golden files for the messages people read: a reviewer sees the exact text in
    //! `fixtures/messages/`. `STAGEBOT_BLESS=1 cargo test --lib reporter` rewrites them after an
    //! intended change.
    use super::*;
    use crate::store::{Op, Trigger};
    use crate::types::{EnvKind, RepoName, Sha, Slug};

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap_or_default()
    }

    fn sha(c: char) -> Sha {
        Sha::new(&c.to_string().repeat(40)).unwrap()
    }

    fn env(slug: &str, kind: EnvKind, state: EnvState) -> EnvRecord {
        let repo: RepoName = "acme/webapp".parse().unwrap();
        let id = crate::types::EnvId {
            repo,
            slug: Slug::new(slug).unwrap(),
        };
        EnvRecord {
            state,
            pr: Some(PrNumber(42)),
            installation_id: Some(1),
            host: format!("{slug}--webapp.previews.example.com"),
            url: format!("https://{slug}--webapp.previews.example.com"),
            generation: 3,
            current_release: Some(2),
            releases: 2,
            updated_at: at(1),
            last_activity: at(1),
            expires_at: Some(at(1 + 72)),
            ttl_secs: Some(3 * 86_400),
            seeded: true,
            ..EnvRecord::new(id, kind, "feature/login", at(0))
        }
    }

    fn release(n: u32, c: char) -> Release {
        Release {
            v: 1,
            n,
            sha: sha(c),
            git_ref: "feature/login".into(),
            by: "alice".into(),
            trigger: Trigger::Push,
            at: at(1),
            url: String::new(),
            log: String::new(),
            pr: Some(PrNumber(42)),
        }
    }

    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/messages")
            .join(name);
        if std::env::var_os("STAGEBOT_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with STAGEBOT_BLESS=1)", path.display()));
        assert_eq!(actual, expected, "{name} changed; bless it if intended");
    }

    #[test]
    fn sticky_live_with_staging() {
        let preview = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
        let mut staging = env("staging", EnvKind::Staging, EnvState::Live);
        staging.expires_at = None;
        staging.current_release = Some(1);
        let rows = vec![
            (preview, Some(release(2, 'b')), None),
            (staging, Some(release(1, 'b')), None),
        ];
        golden(
            "sticky-live.md",
            &render_sticky(&PrRecord::default(), &rows, at(2)),
        );
    }

    #[test]
    fn sticky_failed_deploying_queued_removed() {
        let mut failed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Failed);
        failed.last_error = Some("`build` exited with status 2".into());
        failed.last_log_tail = Some("npm ERR! missing script: build\n```oops```".into());
        let mut deploying = env("pr-42-feature-login", EnvKind::Preview, EnvState::Deploying);
        deploying.deploying = Some(sha('c'));
        deploying.op = Some(Op::Teardown {
            reason: String::new(),
            by: String::new(),
            ack: None,
        });
        let mut queued = env("pr-42-feature-login", EnvKind::Preview, EnvState::Queued);
        queued.current_release = None;
        let mut removed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Destroyed);
        removed.expires_at = None;
        let mut warned = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
        warned.warned_at = Some(at(60));
        let mut out = String::new();
        for (title, rows) in [
            ("failed", vec![(failed, Some(release(2, 'b')), None)]),
            ("deploying", vec![(deploying, Some(release(2, 'b')), None)]),
            ("queued", vec![(queued, None, Some(3))]),
            ("removed", vec![(removed, Some(release(2, 'b')), None)]),
            ("warned", vec![(warned, Some(release(2, 'b')), None)]),
        ] {
            out.push_str(&format!("<!-- {title} -->\n"));
            out.push_str(&render_sticky(&PrRecord::default(), &rows, at(62)));
        }
        golden("sticky-states.md", &out);
    }

    #[test]
    fn sticky_error_text_is_inert() {
        let mut out = String::new();
        for err in [
            ".github/stagebot.yml: unknown key `x` at line 1 — expected `build` <img src=x onerror=alert(1)> @everyone [click](https://evil.example)",
            "git fetch: fatal: ``` \n</details>\n# @maintainers <b>pwned</b>",
        ] {
            let mut failed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Failed);
            failed.last_error = Some(err.into());
            failed.last_log_tail = Some("<script>alert(1)</script>\n````".into());
            out.push_str(&render_sticky(
                &PrRecord::default(),
                &[(failed, Some(release(2, 'b')), None)],
                at(62),
            ));
        }
        golden("sticky-hostile-error.md", &out);
    }

    #[test]
    fn sticky_notices() {
        let mut out = String::new();
        for notice in [
            crate::policy::Notice::Draft,
            crate::policy::Notice::Fork,
            crate::policy::Notice::ForkNeedsApproval { sha: sha('d') },
            crate::policy::Notice::OnDemand,
        ] {
            let pr = PrRecord {
                notice: Some(crate::engine::notice_text(&notice)),
                ..PrRecord::default()
            };
            out.push_str(&render_sticky(&pr, &[], at(0)));
        }
        golden("sticky-notices.md", &out);
    }
}
