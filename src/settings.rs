//! stagebot's settings: what shapes its behaviour, built from the CLI and the environment by the
//! binary (src/main.rs) or by tests, with their defaults. A leaf: it names no part of the
//! running application, so every part can read settings without importing `app`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::Limits;
use crate::types::{EnvId, RepoName, Secret, Slug};

/// The default of `STAGEBOT_MAX_CONNECTIONS` (src/serve.rs).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default of `GITHUB_WEB_URL` (src/setup.rs, src/web/).
pub const DEFAULT_WEB_URL: &str = "https://github.com";

/// The App's OAuth credentials (`GITHUB_CLIENT_ID`, `GITHUB_CLIENT_SECRET`; src/web/).
#[derive(Debug, Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: Secret,
}

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
    /// ([`own_hosts`]); every other host is the proxy's.
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
    pub github_oauth: Option<OAuthApp>,
}

impl Settings {
    pub fn new(data_dir: PathBuf, public_url: String, preview_domain: String) -> Self {
        let own_hosts = own_hosts(Some(&public_url), None);
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
            log_max: crate::provider::process::DEFAULT_LOG_MAX,
            dead_letters_max: crate::store::DEFAULT_DEAD_LETTERS_MAX,
            postgres: None,
            snapshot_every: None,
            sentry: crate::sentry::SentrySettings::default(),
            backup: None,
            proxy_idle_timeout: crate::proxy::BODY_IDLE_TIMEOUT,
            github_web_url: DEFAULT_WEB_URL.to_owned(),
            admin_token: None,
            credentials_from_env: crate::credentials::FromEnv::default(),
            github_oauth: None,
        }
    }

    /// The host (one DNS label under the preview domain) and URL of an environment.
    pub fn host_and_url(&self, repo: &RepoName, slug: &Slug) -> (String, String) {
        self.preview_urls().host_and_url(repo, slug)
    }

    /// Where previews live: the preview domain and scheme.
    pub fn preview_urls(&self) -> PreviewUrls {
        PreviewUrls {
            domain: self.preview_domain.clone(),
            scheme: self.preview_scheme.clone(),
        }
    }

    /// Where a release's log is written, and the URL it is served at.
    pub fn log_location(&self, id: &EnvId, release: u32) -> (PathBuf, String) {
        let path = self
            .data_dir
            .join("logs")
            .join(id.repo.owner())
            .join(id.repo.name())
            .join(id.slug.as_str())
            .join(format!("{release}.log"));
        (path, log_url(&self.public_url, id, release))
    }
}

/// Where previews live ([`Settings::preview_domain`], [`Settings::preview_scheme`]).
#[derive(Debug, Clone)]
pub struct PreviewUrls {
    pub domain: String,
    pub scheme: String,
}

impl PreviewUrls {
    /// The host (one DNS label under the preview domain) and URL of an environment.
    pub fn host_and_url(&self, repo: &RepoName, slug: &Slug) -> (String, String) {
        let host = format!("{}.{}", crate::slug::host_label(slug, repo), self.domain);
        let url = format!("{}://{}", self.scheme, host);
        (host, url)
    }
}

/// The URL release `release` of `id`'s log is served at under stagebot's `public_url`.
pub fn log_url(public_url: &str, id: &EnvId, release: u32) -> String {
    format!(
        "{}/logs/{}/{}/{}/{release}",
        public_url.trim_end_matches('/'),
        id.repo.owner(),
        id.repo.name(),
        id.slug
    )
}

/// The `Host` values stagebot's own pages (dashboard, `/api`, `/metrics`, `/logs`) answer on:
/// `public_url`'s host with its port (both `host` and `host:<default port>` when the URL names
/// none); without a public URL, the listen address, `localhost` and `127.0.0.1` with the listen
/// port. Lowercase. Never anything judged by the peer's address: apps share the host network.
pub fn own_hosts(public_url: Option<&str>, listen: Option<SocketAddr>) -> Vec<String> {
    let mut hosts = Vec::new();
    match public_url {
        Some(url) => {
            if let Ok(uri) = url.trim().parse::<axum::http::Uri>()
                && matches!(uri.scheme_str(), Some("http" | "https"))
                && let Some(authority) = uri.authority()
            {
                let host = authority.host().to_ascii_lowercase();
                match authority.port_u16() {
                    Some(port) => hosts.push(format!("{host}:{port}")),
                    None => {
                        let port = if uri.scheme_str() == Some("https") {
                            443
                        } else {
                            80
                        };
                        hosts.push(format!("{host}:{port}"));
                        hosts.push(host);
                    }
                }
            }
        }
        None => {
            if let Some(listen) = listen {
                let port = listen.port();
                hosts.push(listen.to_string());
                hosts.push(format!("localhost:{port}"));
                hosts.push(format!("127.0.0.1:{port}"));
            }
        }
    }
    hosts.dedup();
    hosts
}
