//! What an environment receives besides its code, and stagebot's scheduled jobs: a PostgreSQL
//! database of its own (src/database.rs), Sentry variables (src/sentry.rs), scheduled backups of
//! the store (src/backup.rs) and snapshot refreshes. The lifecycle calls
//! [`App::prepare_services`] before a deploy and [`App::release_services`] after a teardown;
//! the server calls [`App::run_schedules`] periodically.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::app::App;
use crate::backup::{BackupError, BackupStatus};
use crate::database::{DatabaseError, database_name};
use crate::environment::{EnvRecord, EnvState};
use crate::policy::{self, DatabasePlan};
use crate::provider::{DeploySpec, ProviderError, TeardownSpec};
use crate::repo_config::RepoConfig;
use crate::types::{EnvKind, RepoName, Slug};

pub use crate::schedules::{ServicesState, SnapshotStatus};

/// Why a service operation outside a deploy failed (`stagebot snapshot`, the schedules).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Database(#[from] DatabaseError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Backup(#[from] BackupError),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl From<DatabaseError> for ProviderError {
    fn from(e: DatabaseError) -> Self {
        match e {
            DatabaseError::Config(m) => ProviderError::Config(format!("database: {m}")),
            e @ DatabaseError::Sql { .. } => ProviderError::Deploy {
                message: e.to_string(),
                log_tail: String::new(),
            },
        }
    }
}

impl App {
    /// The repositories stagebot serves, for the snapshot-name check; failing closed.
    fn known_repos(&self) -> Result<Vec<crate::types::RepoName>, DatabaseError> {
        self.store().known_repos().map_err(|e| {
            DatabaseError::Config(format!(
                "cannot read the repositories stagebot serves to check the snapshot name: {e}"
            ))
        })
    }

    /// `.github/stagebot.yml` on the repository's default branch (the product rules).
    async fn default_branch_config(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<RepoConfig, String> {
        let client = self
            .repo_client(installation, repo)
            .await
            .map_err(|e| format!("cannot reach GitHub: {e}"))?;
        match self.engine().repo_config(&client, "").await {
            Ok(Ok(cfg)) => Ok(cfg),
            Ok(Err(message)) => Err(format!(
                "the configuration on the default branch: {message}"
            )),
            Err(e) => Err(format!(
                "cannot read the configuration on the default branch: {e}"
            )),
        }
    }

    /// Before a deploy: the environment's database (created from the snapshot when new; the
    /// URL goes into the configured variable) and the server's Sentry variables.
    pub(crate) async fn prepare_services(
        &self,
        rec: &EnvRecord,
        spec: &mut DeploySpec,
    ) -> Result<(), ProviderError> {
        if let Some(dsn) = &self.settings().sentry.dsn {
            spec.vars
                .extend(crate::sentry::env_vars(dsn, spec.kind, &spec.sha));
        }
        let Some(pg) = &self.settings().postgres else {
            return Ok(());
        };
        if spec.kind == EnvKind::Production {
            return Ok(());
        }
        let config = self
            .default_branch_config(rec.installation_id, &spec.env.repo)
            .await
            .map_err(ProviderError::Config)?;
        let plan = policy::database_plan(true, &config, spec.kind, spec.profile.as_deref());
        let Some(pcfg) = config.database.postgres.as_ref() else {
            return Ok(());
        };
        let repo = &spec.env.repo;
        let url = match plan {
            DatabasePlan::None => return Ok(()),
            DatabasePlan::Own { .. } => {
                if let Some(s) = &pcfg.snapshot {
                    pg.check_snapshot(repo, s, &self.known_repos()?)?;
                }
                let name = database_name(repo, &spec.env.slug);
                pg.ensure(&name, pcfg.snapshot.as_deref()).await?
            }
            DatabasePlan::SharedStaging => {
                let name = database_name(repo, &Slug::staging());
                if !pg.exists(&name).await? {
                    return Err(ProviderError::Config(format!(
                        "database: the `{}` profile uses staging's database, which does not exist yet: deploy staging first",
                        spec.profile.as_deref().unwrap_or_default()
                    )));
                }
                pg.url(&name)
            }
        };
        spec.vars.insert(pcfg.env.as_str().to_owned(), url);
        Ok(())
    }

    /// After a teardown (and its `predestroy`): a preview's database and role are dropped.
    /// Staging's is never dropped, production's never touched.
    pub(crate) async fn release_services(&self, spec: &TeardownSpec) -> Result<(), ProviderError> {
        let Some(pg) = &self.settings().postgres else {
            return Ok(());
        };
        if !policy::drops_database_on_teardown(spec.kind) {
            return Ok(());
        }
        pg.drop_database(&database_name(&spec.env.repo, &spec.env.slug))
            .await?;
        Ok(())
    }

    /// `stagebot snapshot OWNER/REPO [--from staging]`: refresh the repository's snapshot
    /// (`database.postgres.snapshot` on the default branch) from an environment's database,
    /// running `database.postgres.anonymize` (an SQL file on the default branch) on the copy.
    /// Returns the snapshot's name.
    pub async fn refresh_snapshot(
        &self,
        repo: &RepoName,
        from: &Slug,
    ) -> Result<String, ServiceError> {
        let Some(pg) = &self.settings().postgres else {
            return Err(ServiceError::Config(
                "STAGEBOT_POSTGRES_URL is not set".into(),
            ));
        };
        let installation = self.store().installation_of_repo(repo).ok().flatten();
        let config = self
            .default_branch_config(installation, repo)
            .await
            .map_err(ServiceError::Config)?;
        let Some(pcfg) = config.database.postgres.as_ref() else {
            return Err(ServiceError::Config(format!(
                "{repo} has no database.postgres in its configuration on the default branch"
            )));
        };
        let Some(snapshot) = pcfg.snapshot.as_deref() else {
            return Err(ServiceError::Config(format!(
                "{repo} names no database.postgres.snapshot on the default branch"
            )));
        };
        pg.check_snapshot(repo, snapshot, &self.known_repos()?)?;
        let anonymize = match &pcfg.anonymize {
            None => None,
            Some(path) => {
                let client = self
                    .repo_client(installation, repo)
                    .await
                    .map_err(|e| ServiceError::Config(format!("cannot reach GitHub: {e}")))?;
                match client.file_at(path, "").await {
                    Ok(Some(sql)) => Some(sql),
                    Ok(None) => {
                        return Err(ServiceError::Config(format!(
                            "database.postgres.anonymize: {path} does not exist on the default branch"
                        )));
                    }
                    Err(e) => {
                        return Err(ServiceError::Config(format!(
                            "database.postgres.anonymize: cannot read {path}: {e}"
                        )));
                    }
                }
            }
        };
        let source = database_name(repo, from);
        pg.snapshot(&source, snapshot, anonymize.as_deref()).await?;
        Ok(snapshot.to_owned())
    }

    /// Run the scheduled jobs that are due by the injected clock: the backup, then the snapshot
    /// refreshes. Never fails: failures are logged and kept for `/readyz`.
    pub async fn run_schedules(&self) {
        let _one = self.0.services.schedule_lock.lock().await;
        self.backup_if_due().await;
        self.snapshots_if_due().await;
    }

    async fn backup_if_due(&self) {
        let Some(settings) = self.settings().backup.clone() else {
            return;
        };
        let now = self.now();
        let due = {
            let mut st = lock(&self.0.services.backup);
            let next = *st.next_due.get_or_insert_with(|| {
                // After a restart the schedule continues from the newest backup on disk.
                crate::backup::list(&settings.dir)
                    .ok()
                    .and_then(|l| l.first().map(|(at, _)| *at))
                    .and_then(|at| {
                        chrono::Duration::from_std(settings.every)
                            .ok()
                            .map(|e| at + e)
                    })
                    .unwrap_or(now)
            });
            next <= now
        };
        if !due {
            return;
        }
        let store = self.store().clone();
        let s = settings.clone();
        let result = tokio::task::spawn_blocking(move || crate::backup::write(&store, &s, now))
            .await
            .unwrap_or_else(|e| Err(BackupError::Task(e.to_string())));
        let every = chrono::Duration::from_std(settings.every).unwrap_or(chrono::Duration::days(1));
        let mut st = lock(&self.0.services.backup);
        match result {
            Ok(path) => {
                tracing::info!(file = %path.display(), "backup written and verified");
                st.last_success = Some(now);
                st.last_file = Some(path);
                st.last_error = None;
                st.next_due = Some(now + every);
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %settings.dir.display(), "scheduled backup failed");
                st.last_error = Some(e.to_string());
                // Try again soon, not a whole period later.
                st.next_due = Some(now + every.min(chrono::Duration::minutes(15)));
            }
        }
    }

    /// The backup schedule's state.
    pub fn backup_status(&self) -> BackupStatus {
        lock(&self.0.services.backup).clone()
    }

    async fn snapshots_if_due(&self) {
        let (Some(every), Some(_)) = (self.settings().snapshot_every, &self.settings().postgres)
        else {
            return;
        };
        let now = self.now();
        {
            let mut st = lock(&self.0.services.snapshots);
            let next = *st.next_due.get_or_insert(now);
            if next > now {
                return;
            }
            st.next_due =
                Some(now + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::days(1)));
        }
        let repos: std::collections::BTreeSet<RepoName> = self
            .store()
            .envs()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == EnvKind::Staging && e.state() == EnvState::Live)
            .map(|e| e.id.repo)
            .collect();
        let mut errors = Vec::new();
        for repo in repos {
            match self.refresh_snapshot(&repo, &Slug::staging()).await {
                Ok(name) => tracing::info!(%repo, snapshot = %name, "snapshot refreshed"),
                Err(ServiceError::Config(m)) if m.contains("no database.postgres") => {}
                Err(e) => {
                    tracing::error!(%repo, error = %e, "scheduled snapshot failed");
                    errors.push(format!("{repo}: {e}"));
                }
            }
        }
        lock(&self.0.services.snapshots).last_error =
            (!errors.is_empty()).then(|| errors.join("; "));
    }

    fn sentry_client(&self) -> Option<&crate::sentry::SentryClient> {
        self.0.sentry.client()
    }

    /// A release went live: create the Sentry release (the commit) and a deploy record for the
    /// environment's kind. Called once per committed release; failures are logged only, the
    /// release is live whatever Sentry answers.
    pub(crate) async fn sentry_release_live(
        &self,
        rec: &EnvRecord,
        sha: &crate::types::Sha,
        url: &str,
    ) {
        let Some(client) = self.sentry_client() else {
            return;
        };
        let version = sha.to_string();
        let name = crate::types::environment_name(rec.kind, &rec.id.slug);
        let result = async {
            client.create_release(&version).await?;
            client
                .create_deploy(&version, rec.kind.as_str(), &name, url)
                .await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(env = %rec.id, release = %sha.short(), "Sentry release and deploy recorded")
            }
            Err(e) => {
                tracing::warn!(env = %rec.id, error = %e, "Sentry release/deploy not recorded")
            }
        }
    }

    /// `/readyz` checks of the services: `backups` (when scheduled) and `postgres` (when set).
    /// Each is `(ok, detail)`.
    pub async fn service_checks(&self) -> BTreeMap<&'static str, (bool, String)> {
        let mut checks = BTreeMap::new();
        if let Some(settings) = &self.settings().backup {
            let st = self.backup_status();
            let check = match (&st.last_error, st.last_success) {
                (Some(e), _) => (false, format!("last backup failed: {e}")),
                (None, Some(at)) => (
                    true,
                    format!(
                        "last backup {} in {}",
                        at.to_rfc3339(),
                        settings.dir.display()
                    ),
                ),
                (None, None) => (true, "no backup yet this run".to_owned()),
            };
            checks.insert("backups", check);
        }
        if let Some(pg) = &self.settings().postgres {
            let mut check =
                match tokio::time::timeout(std::time::Duration::from_secs(5), pg.check()).await {
                    Ok(Ok(())) => (true, "reachable".to_owned()),
                    Ok(Err(e)) => (false, e.to_string()),
                    Err(_) => (false, "no answer within 5s".to_owned()),
                };
            if let Some(e) = &lock(&self.0.services.snapshots).last_error {
                check = (
                    false,
                    format!("{}; last snapshot refresh failed: {e}", check.1),
                );
            }
            checks.insert("postgres", check);
        }
        checks
    }
}

/// `POST /admin/snapshot {"repo": "owner/name", "from": "staging"}` (the CLI's `stagebot
/// snapshot` while the server runs).
pub(crate) async fn admin_snapshot(
    axum::extract::State(app): axum::extract::State<App>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let bad = |status: StatusCode, m: String| {
        (status, axum::Json(serde_json::json!({ "error": m }))).into_response()
    };
    let repo = match body["repo"].as_str().map(str::parse::<RepoName>) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
        None => return bad(StatusCode::BAD_REQUEST, "`repo` is required".into()),
    };
    let from = match Slug::new(body["from"].as_str().unwrap_or("staging")) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match app.refresh_snapshot(&repo, &from).await {
        Ok(name) => {
            axum::Json(serde_json::json!({ "snapshot": name, "from": database_name(&repo, &from) }))
                .into_response()
        }
        Err(e) => bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// How often the scheduler looks at the (injected) clock.
pub const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(15);

/// The server's scheduler: [`App::run_schedules`] at start and every [`SCHEDULE_TICK`] until
/// shutdown. Does nothing when no schedule is configured.
pub async fn run_schedules_loop(app: App, signal: crate::shutdown::Shutdown) {
    let s = app.settings();
    if s.backup.is_none() && (s.snapshot_every.is_none() || s.postgres.is_none()) {
        return;
    }
    loop {
        tokio::select! {
            () = app.run_schedules() => {}
            _ = signal.wait() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(SCHEDULE_TICK) => {}
            _ = signal.wait() => return,
        }
    }
}
