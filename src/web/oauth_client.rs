//! The calls "Sign in with GitHub" makes: the code exchange on GitHub's web host
//! (`POST {GITHUB_WEB_URL}/login/oauth/access_token`) and, with the user-to-server token it
//! returns, `GET /user`, `GET /user/installations` and
//! `GET /user/installations/{id}/repositories` on the API. HTTPS through the rustls stack
//! stagebot already uses (hyper-rustls, ring, the system's roots). The token is used for these
//! calls only and never stored.

use std::collections::BTreeSet;

use http_body_util::BodyExt as _;
use serde::Deserialize;

use super::{OAuthApp, WebError, percent};
use crate::http::HttpClient;
use crate::types::Secret;

/// How long one call may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many pages of 100 repositories per installation are read.
const MAX_PAGES: usize = 20;
/// Largest answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What sign-in learns about the user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub login: String,
    /// `owner/name`, lowercase: repositories of the App's installations the user can read.
    pub repos: BTreeSet<String>,
}

pub struct OAuthClient {
    http: HttpClient,
    web_url: String,
    api_url: String,
    app_id: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Installations {
    installations: Vec<Installation>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
    app_id: Option<u64>,
}

#[derive(Deserialize)]
struct Repositories {
    repositories: Vec<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

impl OAuthClient {
    pub fn new(web_url: &str, api_url: &str, app_id: u64) -> Result<Self, WebError> {
        let http = crate::http::https_client().map_err(WebError::OAuth)?;
        Ok(Self {
            http,
            web_url: web_url.trim_end_matches('/').to_owned(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            app_id,
        })
    }

    async fn send(
        &self,
        what: &str,
        req: http::Request<http_body_util::Full<hyper::body::Bytes>>,
    ) -> Result<(http::StatusCode, Vec<u8>), WebError> {
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| WebError::OAuth(format!("{what}: {e}")))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| WebError::OAuth(format!("{what}: {e}")))?
                .to_bytes();
            Ok::<_, WebError>((status, body.to_vec()))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| WebError::OAuth(format!("{what}: no answer within 10s")))?
    }

    /// Exchange the callback's `code` for a user-to-server token.
    pub async fn exchange(
        &self,
        oauth: &OAuthApp,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Secret, WebError> {
        let body = format!(
            "client_id={}&client_secret={}&code={}&redirect_uri={}",
            percent(&oauth.client_id),
            percent(oauth.client_secret.expose()),
            percent(code),
            percent(redirect_uri)
        );
        let req = http::Request::post(format!("{}/login/oauth/access_token", self.web_url))
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::USER_AGENT, "stagebot")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| WebError::OAuth(e.to_string()))?;
        let (status, body) = self.send("code exchange", req).await?;
        if !status.is_success() {
            return Err(WebError::OAuth(format!(
                "code exchange answered {}",
                status.as_u16()
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| WebError::OAuth(format!("code exchange: not the expected JSON: {e}")))?;
        match (answer.access_token, answer.error) {
            (Some(token), None) if !token.is_empty() => Ok(Secret::new(token)),
            (_, error) => Err(WebError::OAuth(format!(
                "GitHub refused the code: {} {}",
                error.unwrap_or_default(),
                answer.error_description.unwrap_or_default()
            ))),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
    ) -> Result<T, WebError> {
        let req = http::Request::get(format!("{}{path}", self.api_url))
            .header(http::header::ACCEPT, "application/json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(http::header::USER_AGENT, "stagebot")
            .body(http_body_util::Full::new(hyper::body::Bytes::new()))
            .map_err(|e| WebError::OAuth(e.to_string()))?;
        let what = path.split('?').next().unwrap_or(path).to_owned();
        let (status, body) = self.send(&what, req).await?;
        if !status.is_success() {
            return Err(WebError::OAuth(format!(
                "GET {what} answered {}",
                status.as_u16()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| WebError::OAuth(format!("GET {what}: not the expected JSON: {e}")))
    }

    /// `owner/name` (lowercase) of the repositories of installation `id` the token's user can
    /// read (`GET /user/installations/{id}/repositories`, all pages up to 2,000 repositories).
    pub async fn installation_repositories(
        &self,
        token: &Secret,
        id: u64,
    ) -> Result<BTreeSet<String>, WebError> {
        let mut repos = BTreeSet::new();
        for page in 1..=MAX_PAGES {
            let list: Repositories = self
                .get(
                    token,
                    &format!("/user/installations/{id}/repositories?per_page=100&page={page}"),
                )
                .await?;
            let n = list.repositories.len();
            repos.extend(
                list.repositories
                    .into_iter()
                    .map(|r| r.full_name.to_ascii_lowercase()),
            );
            if n < 100 {
                break;
            }
        }
        Ok(repos)
    }

    /// Who the token belongs to, and which repositories of the App's installations they can read.
    pub async fn signed_in(&self, token: &Secret) -> Result<SignedIn, WebError> {
        let user: User = self.get(token, "/user").await?;
        let installations: Installations =
            self.get(token, "/user/installations?per_page=100").await?;
        let mut repos = BTreeSet::new();
        for inst in installations
            .installations
            .iter()
            .filter(|i| i.app_id.is_none_or(|a| a == self.app_id))
        {
            repos.extend(self.installation_repositories(token, inst.id).await?);
        }
        Ok(SignedIn {
            login: user.login,
            repos,
        })
    }
}
