//! The application context: one struct that every part receives instead of eight arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::github::{GitHub, GitHubError, RepoClient};
use crate::metrics::Metrics;
use crate::policy::Limits;
use crate::provider::Provider;
use crate::proxy::{ProxyClient, Routes};
use crate::signature::WebhookSecrets;
use crate::store::Store;
use crate::types::{EnvId, RepoName, Slug};

/// How failed deliveries are retried before they become dead letters.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(5),
            max: Duration::from_secs(600),
        }
    }
}

impl RetrySchedule {
    /// Delay before attempt `attempts + 1` (exponential, capped).
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The default of `STAGEBOT_MAX_UNVERIFIED_BYTES` (the front door's budget for bodies not yet
/// verified, src/webhook.rs).
pub const DEFAULT_MAX_UNVERIFIED_BYTES: usize = 64 * 1024 * 1024;

/// Settings that shape behaviour (built from the CLI/env by the binary, or by tests).
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Base URL of stagebot itself (log links, dashboard), e.g. `http://127.0.0.1:3000`.
    pub public_url: String,
    /// Domain (with port when not 80/443) previews live under, e.g. `localhost:3000`.
    pub preview_domain: String,
    /// `http` or `https` for preview URLs.
    pub preview_scheme: String,
    pub limits: Limits,
    pub delivery_retry: RetrySchedule,
    /// Finished deliveries are forgotten after this long.
    pub delivery_retention: Duration,
    /// How often the reconciler and the sweeper run (`STAGEBOT_RECONCILE_INTERVAL`); `/readyz`
    /// warns when the sweeper has not run for three of them.
    pub reconcile_interval: Duration,
    /// Extra variables for every environment.
    pub vars: BTreeMap<String, String>,
    /// The `Host` values (`host[:port]`, lowercase) stagebot's own pages answer on
    /// ([`crate::server::own_hosts`]); every other host is the proxy's.
    pub own_hosts: Vec<String>,
    /// Show private repositories' environments to anonymous visitors (`STAGEBOT_DASHBOARD_PUBLIC`).
    pub dashboard_public: bool,
    /// Body bytes held by requests whose signature is not checked yet, all requests together
    /// (`STAGEBOT_MAX_UNVERIFIED_BYTES`).
    pub max_unverified_bytes: usize,
    /// Open client connections (`STAGEBOT_MAX_CONNECTIONS`); more are answered 503.
    pub max_connections: usize,
    /// Cap of one release's log before it rotates (`STAGEBOT_LOG_MAX`).
    pub log_max: u64,
    /// Dead letters kept at most, oldest pruned first (`STAGEBOT_DEAD_LETTERS_MAX`).
    pub dead_letters_max: usize,
    /// `STAGEBOT_POSTGRES_URL`…: a database per environment (src/database.rs).
    pub postgres: Option<crate::database::Postgres>,
    /// `STAGEBOT_SNAPSHOT_EVERY`: refresh each repository's snapshot from staging this often.
    pub snapshot_every: Option<Duration>,
    /// `SENTRY_*`: error tracking per environment (src/sentry.rs).
    pub sentry: crate::sentry::SentrySettings,
    /// `STAGEBOT_BACKUP_*`: scheduled backups of the store (src/backup.rs).
    pub backup: Option<crate::backup::BackupSettings>,
    /// `STAGEBOT_PROXY_IDLE_TIMEOUT`: a proxied body, stream or WebSocket that moves no byte
    /// for this long is cut off.
    pub proxy_idle_timeout: Duration,
    /// `GITHUB_WEB_URL`: GitHub's web pages (the manifest flow, src/setup.rs; OAuth sign-in,
    /// src/web/): `https://github.com` or a GitHub Enterprise Server's `https://HOST`.
    pub github_web_url: String,
    /// `STAGEBOT_ADMIN_TOKEN`: opens `/setup` once an App is configured (src/setup.rs).
    pub admin_token: Option<crate::types::Secret>,
    /// The App credentials the environment supplied; a registration through `/setup` does not
    /// replace them (src/credentials.rs).
    pub credentials_from_env: crate::credentials::FromEnv,
    /// `GITHUB_CLIENT_ID` and `GITHUB_CLIENT_SECRET`: the App's OAuth credentials; sign-in on
    /// the dashboard (src/web/) is offered only with both.
    pub github_oauth: Option<crate::web::OAuthApp>,
}

impl Settings {
    pub fn new(data_dir: PathBuf, public_url: String, preview_domain: String) -> Self {
        let own_hosts = crate::server::own_hosts(Some(&public_url), None);
        Self {
            data_dir,
            public_url,
            preview_domain,
            preview_scheme: "http".into(),
            limits: Limits::default(),
            delivery_retry: RetrySchedule::default(),
            delivery_retention: Duration::from_secs(7 * 24 * 3600),
            reconcile_interval: Duration::from_secs(60),
            vars: BTreeMap::new(),
            own_hosts,
            dashboard_public: false,
            max_unverified_bytes: DEFAULT_MAX_UNVERIFIED_BYTES,
            max_connections: crate::serve::DEFAULT_MAX_CONNECTIONS,
            log_max: crate::provider::process::DEFAULT_LOG_MAX,
            dead_letters_max: crate::store::DEFAULT_DEAD_LETTERS_MAX,
            postgres: None,
            snapshot_every: None,
            sentry: crate::sentry::SentrySettings::default(),
            backup: None,
            proxy_idle_timeout: crate::proxy::BODY_IDLE_TIMEOUT,
            github_web_url: crate::setup::DEFAULT_WEB_URL.to_owned(),
            admin_token: None,
            credentials_from_env: crate::credentials::FromEnv::default(),
            github_oauth: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) github: GitHub,
    pub(crate) provider: Provider,
    pub(crate) routes: Routes,
    pub(crate) proxy_client: ProxyClient,
    pub(crate) clock: SharedClock,
    pub(crate) secrets: WebhookSecrets,
    pub(crate) metrics: Metrics,
    /// The worker's own state: wake-ups, its pass lock, the keys in flight (src/worker.rs).
    pub(crate) worker: crate::worker::WorkerState,
    /// Capacity decisions are serialized per installation (deliveries of its repositories run
    /// concurrently otherwise): the engine's (src/engine.rs).
    pub(crate) installation_locks: crate::engine::InstallationLocks,
    /// Which environments have a runner at work (src/runners.rs).
    pub(crate) runners: crate::runners::RunnerRegistry,
    /// Scheduled jobs' state (backups, snapshots) and the Sentry issue counts.
    pub(crate) services: crate::services::ServicesState,
    /// The `/setup` manifest flow (src/setup.rs).
    pub(crate) setup: crate::setup::SetupCore,
}

/// The parts an [`App`] is made of.
pub struct Parts {
    pub settings: Settings,
    pub store: Store,
    pub github: GitHub,
    pub provider: Provider,
    pub routes: Routes,
    pub clock: SharedClock,
    pub secrets: WebhookSecrets,
}

/// The application: cheap to clone, shared by the HTTP server, the worker and the runners.
#[derive(Clone)]
pub struct App(pub(crate) Arc<Inner>);

impl App {
    pub fn new(parts: Parts) -> Self {
        let proxy_idle = parts.settings.proxy_idle_timeout;
        // Tunnels may hold half of the connection slots; the rest stay for webhooks and pages.
        let max_tunnels = parts.settings.max_connections / 2;
        let setup = crate::setup::SetupCore::from_settings(&parts.settings, parts.github.api_url());
        Self(Arc::new(Inner {
            settings: parts.settings,
            store: parts.store,
            github: parts.github,
            provider: parts.provider,
            routes: parts.routes,
            proxy_client: ProxyClient::with_timeouts(
                crate::proxy::RESPONSE_HEADER_TIMEOUT,
                proxy_idle,
            )
            .with_max_tunnels(max_tunnels),
            clock: parts.clock,
            secrets: parts.secrets,
            metrics: Metrics::default(),
            worker: crate::worker::WorkerState::default(),
            installation_locks: crate::engine::InstallationLocks::default(),
            runners: crate::runners::RunnerRegistry::default(),
            services: crate::services::ServicesState::default(),
            setup,
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }
    pub fn store(&self) -> &Store {
        &self.0.store
    }
    pub fn github(&self) -> &GitHub {
        &self.0.github
    }
    pub fn provider(&self) -> &Provider {
        &self.0.provider
    }
    pub fn routes(&self) -> &Routes {
        &self.0.routes
    }
    pub fn proxy_client(&self) -> &ProxyClient {
        &self.0.proxy_client
    }
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    pub fn webhook_secrets(&self) -> &WebhookSecrets {
        &self.0.secrets
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }
    pub fn wake_worker(&self) {
        self.0.worker.wake.notify_one();
    }

    /// The lock that serializes capacity decisions of one installation.
    pub(crate) fn installation_lock(&self, installation: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.0.installation_locks.of(installation)
    }

    /// The GitHub client for a repository, finding its installation when the event lacked it.
    pub async fn repo_client(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<RepoClient, GitHubError> {
        let id = match installation {
            Some(id) => id,
            None => match self.store().installation_of_repo(repo).ok().flatten() {
                Some(id) => id,
                None => {
                    let id = self.github().installation_for_repo(repo).await?;
                    let _ = self.store().set_repo_installation(repo, id);
                    id
                }
            },
        };
        Ok(self.github().repo(id, repo.clone()))
    }

    /// The host (one DNS label under the preview domain) and URL of an environment.
    pub fn host_and_url(&self, repo: &RepoName, slug: &Slug) -> (String, String) {
        let host = format!(
            "{}.{}",
            crate::slug::host_label(slug, repo),
            self.settings().preview_domain
        );
        let url = format!("{}://{}", self.settings().preview_scheme, host);
        (host, url)
    }

    /// Where a release's log is written, and the URL it is served at.
    pub fn log_location(&self, id: &EnvId, release: u32) -> (PathBuf, String) {
        let path = self
            .settings()
            .data_dir
            .join("logs")
            .join(id.repo.owner())
            .join(id.repo.name())
            .join(id.slug.as_str())
            .join(format!("{release}.log"));
        let url = format!(
            "{}/logs/{}/{}/{}/{release}",
            self.settings().public_url.trim_end_matches('/'),
            id.repo.owner(),
            id.repo.name(),
            id.slug
        );
        (path, url)
    }
}
