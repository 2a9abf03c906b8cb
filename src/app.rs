//! The application context: one struct that every part receives instead of eight arguments.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::engine::{Engine, EngineParts, Runners};
use crate::github::{GitHub, GitHubError, RepoClient};
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::proxy::{ProxyClient, Routes};
use crate::reporter::Reporter;
use crate::sentry::SentryIssues;
use crate::signature::WebhookSecrets;
use crate::store::Store;
use crate::types::{EnvId, RepoName, Slug};

pub use crate::settings::{DEFAULT_MAX_UNVERIFIED_BYTES, RetrySchedule, Settings};

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) github: GitHub,
    pub(crate) provider: Provider,
    pub(crate) routes: Routes,
    pub(crate) proxy_client: ProxyClient,
    pub(crate) clock: SharedClock,
    pub(crate) secrets: WebhookSecrets,
    pub(crate) metrics: Arc<Metrics>,
    /// The worker's own state: wake-ups, its pass lock, the keys in flight (src/dispatch.rs).
    pub(crate) worker: crate::dispatch::WorkerState,
    /// Which environments have a runner at work (src/runners.rs).
    pub(crate) runners: crate::runners::RunnerRegistry,
    /// Scheduled jobs' state (backups, snapshots; src/schedules.rs).
    pub(crate) services: crate::schedules::ServicesState,
    /// The `/setup` manifest flow's state (src/setup_flow.rs).
    pub(crate) setup: crate::setup_flow::SetupCore,
    /// The Sentry API client and issue counts (the reporter's and the services').
    pub(crate) sentry: Arc<SentryIssues>,
    /// Tells GitHub what happened (src/reporter.rs).
    pub(crate) reporter: Arc<Reporter>,
    /// Deliveries and actions to environment ops (src/engine.rs).
    pub(crate) engine: Engine,
}

/// The engine's handle on the runners: the App's lifecycle ([`App::kick`]), reached without
/// keeping the App alive (the App owns the engine).
struct AppRunners(Weak<Inner>);

impl Runners for AppRunners {
    fn kick(&self, id: &EnvId, generation: u64) {
        match self.0.upgrade() {
            Some(inner) => App(inner).kick(id, generation),
            // Only while the App is being dropped: nothing is left to run it.
            None => tracing::debug!(env = %id, generation, "no App to start a runner"),
        }
    }
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
        let setup =
            crate::setup_flow::SetupCore::from_settings(&parts.settings, parts.github.api_url());
        let metrics = Arc::new(Metrics::default());
        let sentry = Arc::new(SentryIssues::new(parts.settings.sentry.api.clone()));
        let reporter = Arc::new(Reporter::new(
            parts.store.clone(),
            parts.github.clone(),
            Arc::clone(&metrics),
            Arc::clone(&parts.clock),
            parts.settings.public_url.clone(),
            Arc::clone(&sentry),
        ));
        let engine = EngineParts {
            store: parts.store.clone(),
            github: parts.github.clone(),
            reporter: Arc::clone(&reporter),
            routes: parts.routes.clone(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&parts.clock),
            limits: parts.settings.limits.clone(),
            previews: parts.settings.preview_urls(),
        };
        Self(Arc::new_cyclic(|weak| Inner {
            // Its handle on the runners is the App being built.
            engine: Engine::new(engine, Arc::new(AppRunners(weak.clone()))),
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
            metrics,
            worker: crate::dispatch::WorkerState::default(),
            runners: crate::runners::RunnerRegistry::default(),
            services: crate::schedules::ServicesState::default(),
            setup,
            sentry,
            reporter,
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
    /// The engine: deliveries, dashboard and operator actions, the sweeper (src/engine.rs).
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }
    /// The reporter: deployments, statuses, sticky comments, reactions (src/reporter.rs).
    pub fn reporter(&self) -> &Reporter {
        &self.0.reporter
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

    /// The GitHub client for a repository, finding its installation when the event lacked it.
    pub async fn repo_client(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<RepoClient, GitHubError> {
        crate::installation::repo_client(self.github(), self.store(), installation, repo).await
    }

    /// The host (one DNS label under the preview domain) and URL of an environment.
    pub fn host_and_url(&self, repo: &RepoName, slug: &Slug) -> (String, String) {
        self.settings().host_and_url(repo, slug)
    }

    /// Where a release's log is written, and the URL it is served at.
    pub fn log_location(&self, id: &EnvId, release: u32) -> (PathBuf, String) {
        self.settings().log_location(id, release)
    }
}
