//! Error tracking per environment (docs/configuration.md, `sentry`): the variables every
//! environment receives, and (with an auth token) Sentry releases, deploy records and the count
//! of new issues shown in the sticky comment.

use std::collections::BTreeMap;

use crate::http::HttpClient;
use crate::types::{EnvKind, Sha};

/// The server's Sentry settings (sentry-cli's names).
#[derive(Debug, Clone, Default)]
pub struct SentrySettings {
    /// `SENTRY_DSN`: every environment receives it (wins over the repository's `sentry.dsn`).
    pub dsn: Option<String>,
    /// `SENTRY_AUTH_TOKEN`, `SENTRY_ORG`, `SENTRY_PROJECT`, `SENTRY_URL`: releases, deploys and
    /// issue counts. All three of token, org and project, or none.
    pub api: Option<SentryApi>,
}

/// Where and as whom stagebot talks to Sentry's API.
#[derive(Debug, Clone)]
pub struct SentryApi {
    /// `SENTRY_URL` without a trailing `/` (default `https://sentry.io`).
    pub url: String,
    pub token: crate::types::Secret,
    pub org: String,
    pub project: String,
}

impl SentrySettings {
    /// Build from the server's settings; a partial API configuration is an error.
    pub fn from_parts(
        dsn: Option<String>,
        token: Option<String>,
        org: Option<String>,
        project: Option<String>,
        url: &str,
    ) -> Result<Self, String> {
        let dsn = dsn.filter(|d| !d.trim().is_empty());
        let api = match (token, org, project) {
            (None, None, None) => None,
            (Some(token), Some(org), Some(project)) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(format!("SENTRY_URL must be an http(s) URL (got {url:?})"));
                }
                Some(SentryApi {
                    url: url.trim_end_matches('/').to_owned(),
                    token: crate::types::Secret::new(token),
                    org,
                    project,
                })
            }
            _ => {
                return Err(
                    "SENTRY_AUTH_TOKEN, SENTRY_ORG and SENTRY_PROJECT go together: set all three or none"
                        .into(),
                );
            }
        };
        Ok(Self { dsn, api })
    }
}

/// The variables an environment's processes get when a DSN is known: `SENTRY_DSN`,
/// `SENTRY_ENVIRONMENT` (the kind: `production`, `staging` or `preview`) and `SENTRY_RELEASE`
/// (the commit). The branch is in `STAGEBOT_BRANCH` already.
pub fn env_vars(dsn: &str, kind: EnvKind, sha: &Sha) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("SENTRY_DSN".into(), dsn.to_owned());
    v.insert("SENTRY_ENVIRONMENT".into(), kind.to_string());
    v.insert("SENTRY_RELEASE".into(), sha.to_string());
    v
}

/// Why a Sentry call failed (logged; it never fails a deploy).
#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    #[error("Sentry: {0}")]
    Http(String),
    #[error("Sentry answered {status} to {what}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
}

/// The least Sentry's API needs from a URL path segment: everything but unreserved characters
/// percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of Sentry's documented web API: releases, deploys, the issue list. HTTPS through
/// the rustls stack stagebot already uses for GitHub (hyper-rustls, ring, the system's roots).
#[derive(Clone)]
pub struct SentryClient {
    api: SentryApi,
    http: HttpClient,
}

impl std::fmt::Debug for SentryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryClient")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// How long one Sentry call may take.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl SentryClient {
    pub fn new(api: SentryApi) -> Result<Self, SentryError> {
        let http = crate::http::https_client().map_err(SentryError::Http)?;
        Ok(Self { api, http })
    }

    async fn send(
        &self,
        what: &'static str,
        method: http::Method,
        url: String,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, SentryError> {
        use http_body_util::BodyExt as _;
        let bytes = match body {
            Some(b) => serde_json::to_vec(&b).map_err(|e| SentryError::Http(e.to_string()))?,
            None => Vec::new(),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.api.token.expose()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "stagebot")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(bytes)))
            .map_err(|e| SentryError::Http(e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| SentryError::Http(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| SentryError::Http(e.to_string()))?
                .to_bytes();
            Ok::<_, SentryError>((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| SentryError::Http(format!("{what}: no answer within 3s")))??;
        if !status.is_success() {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(200);
            return Err(SentryError::Status {
                what,
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// `POST /api/0/organizations/{org}/releases/`: the release `version` of the project (an
    /// existing one is answered 208 and is fine).
    pub async fn create_release(&self, version: &str) -> Result<(), SentryError> {
        let url = format!(
            "{}/api/0/organizations/{}/releases/",
            self.api.url,
            seg(&self.api.org)
        );
        let body = serde_json::json!({ "version": version, "ref": version, "projects": [self.api.project] });
        self.send("create release", http::Method::POST, url, Some(body))
            .await
            .map(drop)
    }

    /// `POST /api/0/organizations/{org}/releases/{version}/deploys/`: a deploy record of
    /// `version` to `environment`.
    pub async fn create_deploy(
        &self,
        version: &str,
        environment: &str,
        name: &str,
        url: &str,
    ) -> Result<(), SentryError> {
        let endpoint = format!(
            "{}/api/0/organizations/{}/releases/{}/deploys/",
            self.api.url,
            seg(&self.api.org),
            seg(version)
        );
        let body = serde_json::json!({
            "environment": environment,
            "name": name,
            "url": url,
            "projects": [self.api.project],
        });
        self.send("create deploy", http::Method::POST, endpoint, Some(body))
            .await
            .map(drop)
    }

    /// The search that finds the issues new in `release` in `environment`.
    fn new_issues_query(release: &str, environment: &str) -> String {
        format!("is:unresolved firstRelease:{release} environment:{environment}")
    }

    /// `GET /api/0/projects/{org}/{project}/issues/?query=…`: how many unresolved issues were
    /// first seen in `release` in `environment` (at most 100 counted).
    pub async fn new_issue_count(
        &self,
        release: &str,
        environment: &str,
    ) -> Result<usize, SentryError> {
        let url = format!(
            "{}/api/0/projects/{}/{}/issues/?query={}&limit=100",
            self.api.url,
            seg(&self.api.org),
            seg(&self.api.project),
            seg(&Self::new_issues_query(release, environment))
        );
        let v = self
            .send("list issues", http::Method::GET, url, None)
            .await?;
        match v.as_array() {
            Some(list) => Ok(list.len()),
            None => Err(SentryError::Http(
                "the issue list is not a JSON array".into(),
            )),
        }
    }

    /// The issue stream of `environment` filtered to `release:<release>`, in Sentry's web UI.
    pub fn issues_link(&self, release: &str, environment: &str) -> String {
        format!(
            "{}/organizations/{}/issues/?environment={}&query={}",
            self.api.url,
            seg(&self.api.org),
            seg(environment),
            seg(&format!("release:{release}"))
        )
    }
}

/// The Sentry API as the running server uses it: the client, built on first use (`None`: not
/// configured or unusable), and the last new-issue count Sentry gave per (environment kind,
/// commit). Shared by the reporter (the sticky comment's error streams) and the services
/// (releases and deploy records, src/services.rs).
#[derive(Debug)]
pub struct SentryIssues {
    api: Option<SentryApi>,
    client: std::sync::OnceLock<Option<SentryClient>>,
    counts: std::sync::Mutex<std::collections::HashMap<(crate::types::EnvKind, String), usize>>,
}

impl SentryIssues {
    /// Nothing is built or asked until first use.
    pub fn new(api: Option<SentryApi>) -> Self {
        Self {
            api,
            client: std::sync::OnceLock::new(),
            counts: std::sync::Mutex::default(),
        }
    }

    /// The API client, when Sentry's API is configured and usable.
    pub fn client(&self) -> Option<&SentryClient> {
        self.client
            .get_or_init(|| {
                let api = self.api.clone()?;
                match SentryClient::new(api) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "Sentry API disabled");
                        None
                    }
                }
            })
            .as_ref()
    }

    fn counts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(crate::types::EnvKind, String), usize>>
    {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sticky comment's error streams: for every environment serving a release, the link
    /// to its issues in Sentry and the count of issues new in that release, fetched now (a few
    /// seconds at most) and cached; the cached count (or none) when Sentry does not answer.
    pub async fn error_streams(
        &self,
        rows: &[(
            crate::environment::EnvRecord,
            Option<crate::environment::Release>,
            Option<usize>,
        )],
    ) -> Vec<crate::messages::ErrorStream> {
        use crate::environment::EnvState;
        let Some(client) = self.client() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (env, release, _) in rows {
            let Some(release) = release else { continue };
            if !matches!(
                env.state(),
                EnvState::Live | EnvState::Failed | EnvState::Deploying
            ) {
                continue;
            }
            let kind = env.kind.as_str();
            let sha = release.sha.to_string();
            let key = (env.kind, sha.clone());
            let new_issues = match client.new_issue_count(&sha, kind).await {
                Ok(n) => {
                    self.counts().insert(key, n);
                    Some(n)
                }
                Err(e) => {
                    tracing::warn!(env = %env.id, error = %e, "Sentry issue count unavailable");
                    self.counts().get(&key).copied()
                }
            };
            out.push(crate::messages::ErrorStream {
                slug: env.id.slug.clone(),
                sha: release.sha.clone(),
                link: client.issues_link(&sha, kind),
                new_issues,
            });
        }
        out
    }
}
