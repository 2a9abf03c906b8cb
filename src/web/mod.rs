//! The dashboard people use (docs/dashboard.md): "Sign in with GitHub" and sessions
//! ([`auth`]), the repositories, pipeline and environment pages ([`pages`]), and the actions
//! taken from them ([`actions`]). Served on stagebot's own host only (src/server.rs).
//!
//! Who sees what (docs/security.md, "The dashboard"): anonymous visitors see the environments
//! of public repositories, and of private ones only with `STAGEBOT_DASHBOARD_PUBLIC`; a
//! signed-in user also sees the repositories GitHub says they can read among those the App is
//! installed on. Acting needs a session, its CSRF token, and the permission the matching slash
//! command needs, asked of GitHub at the time of the action.

pub mod actions;
pub mod auth;
pub mod oauth_client;
pub mod pages;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};

use crate::app::App;
use crate::environment::EnvRecord;
pub use crate::escape::{html as escape, percent};
use crate::github::PrInfo;
use crate::types::{PrNumber, RepoName};

/// The App's OAuth credentials (`GITHUB_CLIENT_ID`, `GITHUB_CLIENT_SECRET`).
pub use crate::settings::OAuthApp;

impl App {
    /// The OAuth credentials sign-in uses: `GITHUB_CLIENT_ID`/`GITHUB_CLIENT_SECRET` when set,
    /// otherwise those the `/setup` flow obtained (src/setup.rs), updated live when the App is
    /// registered again. `None`: no sign-in is offered.
    pub fn oauth_app(&self) -> Option<OAuthApp> {
        if let Some(o) = &self.settings().github_oauth {
            return Some(o.clone());
        }
        let flow = self.flow_credentials()?;
        match (&flow.client_id, &flow.client_secret) {
            (Some(id), Some(secret)) => Some(OAuthApp {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }),
            _ => None,
        }
    }
}

/// Errors of the dashboard's own machinery (sessions, the key, GitHub's OAuth answers).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("session key {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error("session store: {0}")]
    Sessions(std::io::Error),
    #[error("GitHub sign-in: {0}")]
    OAuth(String),
}

/// How long a pull request's title and author are kept before GitHub is asked again.
const PR_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// Pull requests' titles and authors as GitHub said, and when it was asked.
type PrCache = HashMap<(RepoName, PrNumber), (Option<PrInfo>, Instant)>;

/// What the dashboard keeps besides the store: the session key (loaded once) and a short cache
/// of pull request titles.
#[derive(Clone, Default)]
pub struct WebState {
    key: Arc<Mutex<Option<Arc<auth::SessionKey>>>>,
    prs: Arc<Mutex<PrCache>>,
}

impl WebState {
    /// The session key from the data dir (created there, `0600`, on first use).
    pub fn key(&self, app: &App) -> Result<Arc<auth::SessionKey>, WebError> {
        let mut slot = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let key = Arc::new(auth::SessionKey::load_or_create(&app.settings().data_dir)?);
        *slot = Some(key.clone());
        Ok(key)
    }

    /// The pull request's title and author as GitHub says (cached; `None` when GitHub could
    /// not be asked).
    pub async fn pr_info(&self, app: &App, env: &EnvRecord, pr: PrNumber) -> Option<PrInfo> {
        let key = (env.id.repo.clone(), pr);
        if let Some((info, at)) = self.prs.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < PR_CACHE_TTL
        {
            return info.clone();
        }
        let info = match app.repo_client(env.installation_id, &env.id.repo).await {
            Ok(client) => match client.pull_request(pr).await {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::debug!(repo = %env.id.repo, %pr, error = %e, "dashboard: pull request not read");
                    None
                }
            },
            Err(_) => None,
        };
        let mut cache = self.prs.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < PR_CACHE_TTL);
        cache.insert(key, (info.clone(), Instant::now()));
        info
    }
}

/// Who is looking at a page.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Signed in: the session.
    pub session: Option<auth::Session>,
}

impl Viewer {
    pub fn login(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.login.as_str())
    }

    /// The repositories (lowercase `owner/name`) GitHub said the user can read at sign-in.
    fn repos(&self) -> Option<&BTreeSet<String>> {
        self.session.as_ref().map(|s| &s.repos)
    }

    /// May this viewer see the environments of `repo` (private or not)?
    pub fn can_see(&self, app: &App, repo: &RepoName, private: bool) -> bool {
        !private
            || app.settings().dashboard_public
            || self
                .repos()
                .is_some_and(|r| r.contains(&repo.to_string().to_ascii_lowercase()))
    }

    /// May this viewer see this environment?
    pub fn sees(&self, app: &App, env: &EnvRecord) -> bool {
        self.can_see(app, &env.id.repo, env.private)
    }
}

/// The dashboard's routes (merged into the public router, own host only; the router adds a
/// [`WebState`] extension).
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(pages::index))
        .route("/repos/{owner}/{repo}", get(pages::pipeline))
        .route("/repos/{owner}/{repo}/version", get(pages::version))
        .route("/repos/{owner}/{repo}/env/{slug}", get(pages::environment))
        .route(
            "/repos/{owner}/{repo}/env/{slug}/actions",
            post(actions::act),
        )
        .route("/dashboard.css", get(pages::stylesheet))
        .route("/dashboard.js", get(pages::script))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
}
