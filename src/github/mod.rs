//! The GitHub client (docs/architecture.md, "Talking to GitHub"): GitHub App authentication, installation-token caching, retries
//! with backoff, and the handful of REST calls stagebot makes.
//!
//! HTTP goes through [`octocrab`] pointed at [`GitHubConfig::api_url`] (so GitHub Enterprise
//! Server and the [fake](crate::fake_github) work by changing one URL), using its raw
//! `build_request`/`execute` API with our own request/response structs (see `routes`) and our own
//! `Authorization` header on every request. octocrab's retry layer is not compiled in (its `retry`
//! feature is off in `Cargo.toml`); retries are ours, see [`RetryPolicy`].

mod app_api;
mod auth;
mod error;
mod manifest;
mod repo;
mod retry;
mod routes;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use http::{Method, Uri};
use http_body_util::BodyExt as _;
use octocrab::Octocrab;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::escape::percent as enc;
use crate::types::{Permission, PrNumber, RepoName, Secret, Sha};

pub use app_api::{
    AppInstallation, DeploymentInfo, DeploymentStatusInfo, HookDelivery, InstalledRepo,
};
pub use auth::{AppClaims, JWT_BACKDATE_SECS, JWT_LIFETIME_SECS};
pub use error::GitHubError;
pub use manifest::{ManifestApp, create_app_from_manifest, is_manifest_code};
pub use repo::{RepoClient, reply_marker, with_sticky_marker};
pub use retry::RetryPolicy;

use auth::AppKey;
use error::{FailedAnswer, classify};

/// The public GitHub API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The hidden marker that identifies the bot's sticky comment on a PR.
pub const STICKY_MARKER: &str = "<!-- stagebot:sticky -->";
/// An installation token is renewed when it has less than this left to live.
pub const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a collaborator's permission is believed without asking again.
pub const PERMISSION_TTL: Duration = Duration::from_secs(60);
/// GitHub's limit on commit-status and deployment-status descriptions, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 140;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const PER_PAGE: u32 = 100;
/// A new comment whose answer was lost (5xx, timeout) is looked for and posted again at most
/// this many times.
const LOST_ANSWER_RETRIES: u32 = 3;
const MAX_PAGES: usize = 100;

/// How to reach GitHub and who we are there.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// API root: `https://api.github.com`, `https://HOST/api/v3` for GitHub Enterprise Server, or
    /// a fake's URL in tests.
    pub api_url: String,
    /// The GitHub App's id (the JWT's `iss`).
    pub app_id: u64,
    /// The app's RSA private key, PEM (PKCS#1 or PKCS#8).
    pub private_key_pem: Secret,
    /// When and how often failed calls are retried.
    pub retry: RetryPolicy,
}

impl GitHubConfig {
    /// A config for the public GitHub API with the default retry policy.
    pub fn new(app_id: u64, private_key_pem: Secret) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            app_id,
            private_key_pem,
            retry: RetryPolicy::default(),
        }
    }
}

/// Counters of the client's HTTP traffic since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GitHubMetrics {
    /// HTTP requests sent (every attempt counts).
    pub calls: u64,
    /// Attempts that were followed by another one (backoff retries and re-authentication).
    pub retries: u64,
    /// Calls that finally failed (after any retries). 404s are not counted: they are often the
    /// expected answer (unknown collaborator, missing file, deleted comment).
    pub failures: u64,
}

/// The reactions the bot puts on command comments (docs/commands.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reaction {
    /// 👀 received.
    Eyes,
    /// 🚀 done.
    Rocket,
    /// 😕 refused or failed.
    Confused,
    /// 👍
    ThumbsUp,
}

impl Reaction {
    /// GitHub's name for it (`content`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reaction::Eyes => "eyes",
            Reaction::Rocket => "rocket",
            Reaction::Confused => "confused",
            Reaction::ThumbsUp => "+1",
        }
    }
}

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusState {
    /// Running.
    Pending,
    /// Succeeded.
    Success,
    /// Failed because of the code.
    Failure,
    /// Failed because of us.
    Error,
}

impl StatusState {
    /// GitHub's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// A deployment status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentState {
    /// Deploying.
    InProgress,
    /// Live.
    Success,
    /// The deploy failed.
    Failure,
    /// We failed.
    Error,
    /// Torn down or superseded.
    Inactive,
    /// Waiting to start.
    Queued,
}

impl DeploymentState {
    /// GitHub's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Error => "error",
            DeploymentState::Inactive => "inactive",
            DeploymentState::Queued => "queued",
        }
    }
}

/// A GitHub Deployment to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    /// The commit deployed.
    pub git_ref: Sha,
    /// GitHub's environment name, e.g. `preview/pr-42-login`.
    pub environment: String,
    /// Shown in GitHub's UI.
    pub description: String,
    /// True for previews: GitHub may forget the environment when it is torn down.
    pub transient_environment: bool,
    /// True for production.
    pub production_environment: bool,
    /// The deployment's `payload`: a JSON object (GitHub also accepts a string); stagebot's
    /// schema is `reporter::DeploymentPayload`.
    pub payload: serde_json::Value,
}

/// A deployment as listed by GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Its id.
    pub id: u64,
    /// The commit it deploys.
    pub sha: String,
    /// The environment's name.
    pub environment: String,
    /// Its `payload` as GitHub stored it (an object, a string or `null`).
    pub payload: serde_json::Value,
}

/// A status to add to a GitHub Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeploymentStatus {
    /// The new state.
    pub state: DeploymentState,
    /// Where the environment is reachable (on success).
    pub environment_url: Option<String>,
    /// Where the deploy's logs are.
    pub log_url: Option<String>,
    /// Shown in GitHub's UI; truncated to 140 characters.
    pub description: String,
    /// GitHub's `auto_inactive` (GitHub's default, when `None`, is true).
    pub auto_inactive: Option<bool>,
}

/// What stagebot needs to know about a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrInfo {
    /// Its number.
    pub number: PrNumber,
    /// Open (not closed, not merged).
    pub open: bool,
    /// Merged.
    pub merged: bool,
    /// A draft.
    pub draft: bool,
    /// Its title.
    pub title: String,
    /// The head branch's name.
    pub head_ref: String,
    /// The head commit.
    pub head_sha: Sha,
    /// The branch it targets.
    pub base_ref: String,
    /// The head lives in another repository (or that repository was deleted).
    pub fork: bool,
    /// The author's login.
    pub author: String,
    /// HTTPS clone URL of the head repository; empty when that repository was deleted.
    pub head_clone_url: String,
}

/// One check run or commit status of a commit, as a CI gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiResult {
    /// The check run's name or the status's context.
    pub name: String,
    /// Where it stands.
    pub state: CiState,
}

/// The state of a [`CiResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiState {
    /// Queued, in progress, or a `pending` status.
    Pending,
    /// Completed successfully (also `neutral` and `skipped` check runs).
    Success,
    /// Failed, errored, cancelled, timed out or needing action.
    Failure,
}

/// The app-level GitHub client: the app's signing key, the installation-token cache, the
/// permission cache and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct GitHub {
    inner: Arc<Inner>,
}

struct Inner {
    octo: Octocrab,
    /// The app's id and signing key; replaced when the App is registered anew (`/setup`).
    key: std::sync::RwLock<AppKey>,
    api_url: String,
    retry: RetryPolicy,
    tokens: Mutex<HashMap<u64, TokenSlot>>,
    permissions: Mutex<HashMap<(RepoName, String), (Permission, Instant)>>,
    calls: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

/// One installation's cached token; the async mutex makes concurrent callers wait for one mint.
type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

struct CachedToken {
    token: Secret,
    expires_at: DateTime<Utc>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.inner.api_url)
            .field("app_id", &self.app_id())
            .finish_non_exhaustive()
    }
}

/// Who a request is made as.
#[derive(Debug, Clone, Copy)]
enum As {
    /// The app itself (JWT).
    App,
    /// An installation (installation token).
    Installation(u64),
}

/// A successful answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GitHub {
    /// Parse the key and set up the HTTP client. Makes no request.
    pub fn new(cfg: GitHubConfig) -> Result<Self, GitHubError> {
        let key = AppKey::from_pem(cfg.app_id, cfg.private_key_pem.expose())?;
        let api_url = cfg.api_url.trim_end_matches('/').to_owned();
        let uri: Uri = api_url
            .parse()
            .map_err(|e| GitHubError::Config(format!("GitHub API URL {api_url:?}: {e}")))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(GitHubError::Config(format!(
                "GitHub API URL {api_url:?} must be absolute (https://HOST[/api/v3])"
            )));
        }
        let octo = Octocrab::builder()
            .base_uri(uri)
            .map_err(|e| GitHubError::Config(format!("GitHub API URL {api_url:?}: {e}")))?
            .set_connect_timeout(Some(CONNECT_TIMEOUT))
            .set_read_timeout(Some(READ_TIMEOUT))
            .build()
            .map_err(|e| {
                GitHubError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                octo,
                key: std::sync::RwLock::new(key),
                api_url,
                retry: cfg.retry,
                tokens: Mutex::default(),
                permissions: Mutex::default(),
                calls: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }

    /// The app id this client authenticates as.
    pub fn app_id(&self) -> u64 {
        self.inner
            .key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .app_id()
    }

    /// The API root this client talks to (no trailing slash).
    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    /// Act as another App from now on (a registration through `/setup`): its id and private
    /// key replace the current ones, and the installation tokens and permissions cached for the
    /// previous App are forgotten. The key is checked first; on error nothing changes.
    pub fn set_app(&self, app_id: u64, private_key_pem: &Secret) -> Result<(), GitHubError> {
        let key = AppKey::from_pem(app_id, private_key_pem.expose())?;
        *self
            .inner
            .key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        lock(&self.inner.tokens).clear();
        lock(&self.inner.permissions).clear();
        tracing::info!(app_id, "the GitHub client acts as a newly configured App");
        Ok(())
    }

    /// The installation of this app that covers `repo` (`GET /repos/{o}/{r}/installation`, as
    /// the app).
    pub async fn installation_for_repo(&self, repo: &RepoName) -> Result<u64, GitHubError> {
        let path = format!(
            "/repos/{}/{}/installation",
            enc(repo.owner()),
            enc(repo.name())
        );
        let answer = self
            .call(
                As::App,
                Method::GET,
                "/repos/{owner}/{repo}/installation",
                path,
                None,
            )
            .await?;
        Ok(answer
            .json::<routes::InstallationResponse>("installation")?
            .id)
    }

    /// A client for one repository, acting as `installation_id`.
    pub fn repo(&self, installation_id: u64, repo: RepoName) -> RepoClient {
        RepoClient {
            gh: self.clone(),
            installation_id,
            repo,
        }
    }

    /// The installation's access token: cached, and renewed when it has less than
    /// [`TOKEN_RENEW_MARGIN`] left. Concurrent callers share one renewal.
    pub async fn installation_token(&self, installation_id: u64) -> Result<Secret, GitHubError> {
        let slot = lock(&self.inner.tokens)
            .entry(installation_id)
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at - Utc::now()
                > chrono::Duration::from_std(TOKEN_RENEW_MARGIN).unwrap_or_default()
        {
            return Ok(t.token.clone());
        }
        let path = format!("/app/installations/{installation_id}/access_tokens");
        // Boxed: minting is itself a call, and calls as an installation come back here.
        let answer = Box::pin(self.call(
            As::App,
            Method::POST,
            "/app/installations/{id}/access_tokens",
            path,
            None,
        ))
        .await?;
        let minted: routes::AccessTokenResponse = answer.json("installation access token")?;
        tracing::debug!(installation_id, expires_at = %minted.expires_at, "minted an installation token");
        let token = Secret::new(minted.token);
        *cached = Some(CachedToken {
            token: token.clone(),
            expires_at: minted.expires_at,
        });
        Ok(token)
    }

    /// A fresh installation token limited to repository `name` of the installation with
    /// `contents: read` (`POST /app/installations/{id}/access_tokens` with `repositories` and
    /// `permissions`).
    pub async fn scoped_token(
        &self,
        installation_id: u64,
        name: &str,
    ) -> Result<Secret, GitHubError> {
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let body = serde_json::json!({
            "repositories": [name],
            "permissions": { "contents": "read" },
        });
        let answer = self
            .call(
                As::App,
                Method::POST,
                "/app/installations/{id}/access_tokens",
                path,
                Some(body),
            )
            .await?;
        let minted: routes::AccessTokenResponse =
            answer.json("scoped installation access token")?;
        tracing::debug!(installation_id, repository = name, expires_at = %minted.expires_at, "minted a scoped token");
        Ok(Secret::new(minted.token))
    }

    /// Drop the cached token of `installation_id` if it is still `used` (GitHub refused it).
    async fn forget_token(&self, installation_id: u64, used: &Secret) {
        let slot = lock(&self.inner.tokens).get(&installation_id).cloned();
        if let Some(slot) = slot {
            let mut cached = slot.lock().await;
            if cached.as_ref().is_some_and(|t| &t.token == used) {
                *cached = None;
            }
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> GitHubMetrics {
        GitHubMetrics {
            calls: self.inner.calls.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
        }
    }

    /// The `Authorization` header for a request made `who`, and the installation token used.
    async fn authorization(&self, who: As) -> Result<(HeaderValue, Option<Secret>), GitHubError> {
        let (value, token) = match who {
            As::App => {
                let jwt = self
                    .inner
                    .key
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .jwt(Utc::now())?;
                (format!("Bearer {jwt}"), None)
            }
            As::Installation(id) => {
                let token = self.installation_token(id).await?;
                (format!("token {}", token.expose()), Some(token))
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| GitHubError::Auth("credential is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok((value, token))
    }

    /// Send one logical request, retrying per the policy. `route` is the path template, for logs;
    /// `path` is the concrete path (and query) under the API root.
    async fn call(
        &self,
        who: As,
        method: Method,
        route: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.call_traced(who, method, route, path, body, true).await
    }

    /// Like [`call`](Self::call) for a request that must not take effect twice: retried only
    /// when GitHub surely did not act on it (a rate limit). After a server error or a lost
    /// answer, the error is returned and the caller finds out what happened.
    async fn call_not_twice(
        &self,
        who: As,
        method: Method,
        route: &'static str,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.call_traced(who, method, route, path, body, false)
            .await
    }

    async fn call_traced(
        &self,
        who: As,
        method: Method,
        route: &'static str,
        path: String,
        body: Option<serde_json::Value>,
        retry_ambiguous: bool,
    ) -> Result<Answer, GitHubError> {
        let span = tracing::info_span!("github", %method, route, path = %strip_query(&path));
        self.call_inner(who, method, path, body, retry_ambiguous)
            .instrument(span)
            .await
    }

    async fn call_inner(
        &self,
        who: As,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
        retry_ambiguous: bool,
    ) -> Result<Answer, GitHubError> {
        let policy = &self.inner.retry;
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        let what = format!("{method} {}", strip_query(&path));
        loop {
            attempt += 1;
            let (authorization, token) = match self.authorization(who).await {
                Ok(auth) => auth,
                Err(e) => {
                    // A failed mint was counted by its own call; a JWT that cannot be signed
                    // was not.
                    if matches!(who, As::App) {
                        self.inner.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            };
            self.inner.calls.fetch_add(1, Ordering::Relaxed);
            let error = match self
                .attempt(&method, &path, body.as_ref(), authorization)
                .await
            {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    tracing::debug!(attempt, status = answer.status, "GitHub answered");
                    return Ok(answer);
                }
                Ok(answer) => {
                    tracing::debug!(attempt, status = answer.status, "GitHub answered");
                    answer_error(&what, &answer)
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "GitHub unreachable");
                    e
                }
            };
            if let (GitHubError::Unauthorized { .. }, As::Installation(id), Some(used)) =
                (&error, who, &token)
                && !reauthenticated
            {
                // The token was revoked or expired early: mint a new one, once.
                tracing::warn!(attempt, "installation token refused; renewing it");
                self.forget_token(id, used).await;
                reauthenticated = true;
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let ambiguous = !matches!(error, GitHubError::RateLimited { .. });
            if !error.is_retryable() || (ambiguous && !retry_ambiguous) {
                if error.is_not_found() {
                    // Often the expected answer (no such collaborator, file, comment).
                    tracing::debug!(attempt, %error, "GitHub: not found");
                } else {
                    tracing::warn!(attempt, %error, "GitHub call failed");
                    self.inner.failures.fetch_add(1, Ordering::Relaxed);
                }
                return Err(error);
            }
            let delay = policy.delay(attempt, error.retry_after(), fastrand::f64());
            if attempt >= policy.max_attempts || started.elapsed() + delay > policy.max_total {
                tracing::warn!(attempt, %error, "GitHub call failed; giving up");
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
                return Err(GitHubError::RetriesExhausted {
                    attempts: attempt,
                    last: error.to_string(),
                });
            }
            tracing::warn!(attempt, ?delay, %error, "GitHub call failed; retrying");
            self.inner.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange through octocrab; any HTTP status is an `Ok`.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
        authorization: HeaderValue,
    ) -> Result<Answer, GitHubError> {
        let uri: Uri = path
            .parse()
            .map_err(|e| GitHubError::Config(format!("bad request path {path:?}: {e}")))?;
        let builder = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            // Plain JSON: GitHub's default representation; also what OpenAPI mocks can serve
            // (Prism refuses `application/vnd.github+json`).
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, authorization);
        let request = self.inner.octo.build_request(builder, body).map_err(|e| {
            GitHubError::Transport(format!("cannot build the request: {}", chain(&e)))
        })?;
        let exchange = async {
            let response = self.inner.octo.execute(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, octocrab::Error>((parts, body))
        };
        let limit = self.inner.retry.attempt_timeout;
        match tokio::time::timeout(limit, exchange).await {
            Err(_) => Err(GitHubError::Transport(format!(
                "no complete answer within {limit:?}"
            ))),
            Ok(Err(e)) => Err(GitHubError::Transport(chain(&e))),
            Ok(Ok((parts, body))) => Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.to_vec(),
            }),
        }
    }

    /// GET the pages of a list in order, following `Link: rel="next"`, handing each page to
    /// `visit` until it returns `true` (found what it wanted) or the pages run out.
    async fn visit_pages<T: DeserializeOwned>(
        &self,
        who: As,
        route: &'static str,
        first: String,
        mut visit: impl FnMut(Vec<T>) -> bool,
    ) -> Result<(), GitHubError> {
        let mut path = first;
        for _ in 0..MAX_PAGES {
            let answer = self.call(who, Method::GET, route, path, None).await?;
            if visit(answer.json::<Vec<T>>(route)?) {
                return Ok(());
            }
            match next_page(&answer.headers, &self.inner.api_url)? {
                Some(next) => path = next,
                None => return Ok(()),
            }
        }
        Err(GitHubError::Decode(format!(
            "{route}: more than {MAX_PAGES} pages"
        )))
    }

    /// GET every page of a list.
    async fn get_all<T: DeserializeOwned>(
        &self,
        who: As,
        route: &'static str,
        first: String,
    ) -> Result<Vec<T>, GitHubError> {
        let mut items = Vec::new();
        self.visit_pages(who, route, first, |page: Vec<T>| {
            items.extend(page);
            false
        })
        .await?;
        Ok(items)
    }
}

/// The typed error for an unsuccessful answer.
fn answer_error(what: &str, answer: &Answer) -> GitHubError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<serde_json::Value>,
    }
    let text = String::from_utf8_lossy(&answer.body);
    let message = match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(ErrorBody {
            message: Some(m),
            errors,
        }) if !errors.is_empty() => format!("{m} {}", serde_json::Value::Array(errors)),
        Ok(ErrorBody {
            message: Some(m), ..
        }) => m,
        _ => text.trim().to_owned(),
    };
    let message: String = message.chars().take(500).collect();
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    classify(
        what,
        &FailedAnswer {
            status: answer.status,
            message: &message,
            retry_after_s: header("retry-after"),
            ratelimit_remaining: header("x-ratelimit-remaining"),
            ratelimit_reset_epoch: header("x-ratelimit-reset"),
            now_epoch: u64::try_from(Utc::now().timestamp()).unwrap_or(0),
        },
    )
}

/// The path and query of the `rel="next"` link, if any. Links to another host are refused: our
/// credentials go only to the configured API.
fn next_page(headers: &HeaderMap, api_url: &str) -> Result<Option<String>, GitHubError> {
    let Some(link) = headers.get("link").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(next) = link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    }) else {
        return Ok(None);
    };
    let uri: Uri = next
        .parse()
        .map_err(|e| GitHubError::Decode(format!("bad next-page link {next:?}: {e}")))?;
    let api: Uri = api_url
        .parse()
        .map_err(|e| GitHubError::Config(format!("GitHub API URL: {e}")))?;
    if uri.authority().is_some() && uri.authority() != api.authority() {
        return Err(GitHubError::Decode(format!(
            "next-page link {next:?} leaves the API host"
        )));
    }
    Ok(uri.path_and_query().map(|pq| pq.as_str().to_owned()))
}

fn to_json<T: Serialize>(body: &T) -> Result<serde_json::Value, GitHubError> {
    serde_json::to_value(body)
        .map_err(|e| GitHubError::Decode(format!("cannot encode request: {e}")))
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// At most `max` characters; an ellipsis marks a cut.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::repo::{decode_content, is_our_sticky, parse_permission};
    use super::*;

    fn comment(body: &str, login: &str, kind: &str, app: Option<u64>) -> routes::IssueComment {
        routes::IssueComment {
            id: 1,
            body: Some(body.to_owned()),
            user: Some(routes::UserRef {
                login: login.to_owned(),
                kind: Some(kind.to_owned()),
            }),
            performed_via_github_app: app.map(|id| routes::AppRef { id }),
        }
    }

    #[test]
    fn marker_is_prepended_once() {
        let b = with_sticky_marker("| env | status |");
        assert_eq!(b, "<!-- stagebot:sticky -->\n| env | status |");
        assert_eq!(with_sticky_marker(&b), b);
    }

    #[test]
    fn only_our_bots_marked_comment_is_the_sticky() {
        let marked = with_sticky_marker("hi");
        assert!(is_our_sticky(
            &comment(&marked, "stagebot[bot]", "Bot", Some(7)),
            7
        ));
        assert!(is_our_sticky(
            &comment(&marked, "stagebot[bot]", "Bot", None),
            7
        ));
        assert!(!is_our_sticky(
            &comment(&marked, "mallory", "User", None),
            7
        ));
        assert!(!is_our_sticky(
            &comment(&marked, "other[bot]", "Bot", Some(8)),
            7
        ));
        assert!(!is_our_sticky(
            &comment("hi", "stagebot[bot]", "Bot", Some(7)),
            7
        ));
        assert!(!is_our_sticky(
            &comment(&format!("quote: {marked}"), "stagebot[bot]", "Bot", Some(7)),
            7
        ));
    }

    #[test]
    fn descriptions_are_cut_to_140_characters() {
        assert_eq!(truncate_chars("short", 140), "short");
        let long = "é".repeat(200);
        let cut = truncate_chars(&long, 140);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_chars(&"x".repeat(140), 140).len(), 140);
    }

    #[test]
    fn permission_prefers_role_name() {
        let p = |permission: &str, role: Option<&str>| {
            parse_permission(&routes::PermissionResponse {
                permission: permission.to_owned(),
                role_name: role.map(str::to_owned),
            })
        };
        assert_eq!(p("write", Some("maintain")), Permission::Maintain);
        assert_eq!(p("read", Some("triage")), Permission::Triage);
        assert_eq!(p("write", Some("custom-deployer")), Permission::Write);
        assert_eq!(p("admin", None), Permission::Admin);
        assert_eq!(p("weird", None), Permission::None);
    }

    #[test]
    fn next_page_link_is_followed_only_on_the_api_host() {
        let mut h = HeaderMap::new();
        assert_eq!(next_page(&h, "http://127.0.0.1:9").unwrap(), None);
        h.insert(
            "link",
            HeaderValue::from_static(
                "<http://127.0.0.1:9/api/v3/repos/o/r/pulls?page=2&per_page=100>; rel=\"next\", \
                 <http://127.0.0.1:9/api/v3/repos/o/r/pulls?page=3&per_page=100>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_page(&h, "http://127.0.0.1:9/api/v3")
                .unwrap()
                .as_deref(),
            Some("/api/v3/repos/o/r/pulls?page=2&per_page=100")
        );
        assert!(next_page(&h, "http://evil.example").is_err());
        h.insert(
            "link",
            HeaderValue::from_static("<http://127.0.0.1:9/x?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_page(&h, "http://127.0.0.1:9").unwrap(), None);
    }

    #[test]
    fn contents_are_base64_with_newlines() {
        let file = routes::ContentFile {
            kind: "file".into(),
            encoding: Some("base64".into()),
            content: Some("YnVp\nbGQ6IG1h\naw==\n".into()),
        };
        assert_eq!(decode_content(&file).unwrap(), "build: mak");
        let dir = routes::ContentFile {
            kind: "dir".into(),
            encoding: None,
            content: None,
        };
        assert!(decode_content(&dir).is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(enc("feature/x"), "feature%2Fx");
        assert_eq!(enc("dependabot[bot]"), "dependabot%5Bbot%5D");
    }

    #[test]
    fn error_bodies_become_messages() {
        let answer = Answer {
            status: 422,
            headers: HeaderMap::new(),
            body: br#"{"message":"Validation Failed","errors":[{"code":"invalid"}]}"#.to_vec(),
        };
        let e = answer_error("POST /x", &answer);
        assert_eq!(
            e,
            GitHubError::Unprocessable {
                message: r#"POST /x: Validation Failed [{"code":"invalid"}]"#.into()
            }
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        let limited = answer_error(
            "GET /y",
            &Answer {
                status: 403,
                headers,
                body: b"{\"message\":\"You have exceeded a secondary rate limit\"}".to_vec(),
            },
        );
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
    }
}
