//! The last step of GitHub's App manifest flow: `POST /app-manifests/{code}/conversions`
//! exchanges the code GitHub's redirect carried for the new App's id, private key, webhook secret
//! and OAuth credentials (docs/operations.md, "First start"). Unauthenticated: the code is the
//! credential, valid once and for an hour.

use std::fmt;

use http::header::{ACCEPT, USER_AGENT};
use http::{Method, Uri};
use http_body_util::BodyExt as _;
use octocrab::Octocrab;
use serde::Deserialize;
use tracing::Instrument as _;

use super::auth::AppKey;
use super::{Answer, CONNECT_TIMEOUT, GitHubError, READ_TIMEOUT, answer_error};
use super::{chain, enc};
use crate::types::Secret;

/// The App GitHub registered from a manifest, as the conversion returns it.
#[derive(Clone)]
pub struct ManifestApp {
    /// The App's id.
    pub id: u64,
    /// Its slug (`https://github.com/apps/<slug>`).
    pub slug: String,
    /// Its name.
    pub name: String,
    /// Its page on GitHub.
    pub html_url: String,
    /// The account that owns it.
    pub owner: Option<String>,
    /// Its private key (PEM); checked to be an RSA key stagebot can sign with.
    pub pem: Secret,
    /// The webhook secret GitHub generated.
    pub webhook_secret: Secret,
    /// The OAuth client id (sign-in with GitHub).
    pub client_id: Option<String>,
    /// The OAuth client secret.
    pub client_secret: Option<Secret>,
}

impl fmt::Debug for ManifestApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestApp")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .field("html_url", &self.html_url)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Owner {
    login: String,
}

#[derive(Deserialize)]
struct Conversion {
    id: u64,
    #[serde(default)]
    slug: Option<String>,
    name: String,
    html_url: String,
    #[serde(default)]
    owner: Option<Owner>,
    pem: String,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// Is `code` shaped like a manifest code (GitHub's are short hex strings)? Anything else is
/// refused before it reaches a URL.
pub fn is_manifest_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 128
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST {api_url}/app-manifests/{code}/conversions`, once (the code is single-use: a retry
/// could only be refused). The answer's key must be an RSA PEM and a webhook secret must be
/// present, or the App is not one stagebot can run as ([`GitHubError::Decode`]).
pub async fn create_app_from_manifest(
    api_url: &str,
    code: &str,
) -> Result<ManifestApp, GitHubError> {
    if !is_manifest_code(code) {
        return Err(GitHubError::Config(
            "the manifest code is not one GitHub issues (letters, digits, - and _)".into(),
        ));
    }
    let api_url = api_url.trim_end_matches('/');
    let base: Uri = api_url
        .parse()
        .map_err(|e| GitHubError::Config(format!("GitHub API URL {api_url:?}: {e}")))?;
    let octo = Octocrab::builder()
        .base_uri(base)
        .map_err(|e| GitHubError::Config(format!("GitHub API URL {api_url:?}: {e}")))?
        .set_connect_timeout(Some(CONNECT_TIMEOUT))
        .set_read_timeout(Some(READ_TIMEOUT))
        .build()
        .map_err(|e| GitHubError::Config(format!("cannot build the HTTP client: {}", chain(&e))))?;
    let path = format!("/app-manifests/{}/conversions", enc(code));
    let span = tracing::info_span!(
        "github",
        method = "POST",
        route = "/app-manifests/{code}/conversions"
    );
    let uri: Uri = path
        .parse()
        .map_err(|e| GitHubError::Config(format!("bad request path: {e}")))?;
    let builder = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, "stagebot");
    let request = octo
        .build_request::<()>(builder, None)
        .map_err(|e| GitHubError::Transport(format!("cannot build the request: {}", chain(&e))))?;
    let exchange = async {
        let response = octo.execute(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, octocrab::Error>((parts, body))
    };
    let limit = super::retry::RetryPolicy::default().attempt_timeout;
    let answer = match tokio::time::timeout(limit, exchange).instrument(span).await {
        Err(_) => {
            return Err(GitHubError::Transport(format!(
                "no complete answer within {limit:?}"
            )));
        }
        Ok(Err(e)) => return Err(GitHubError::Transport(chain(&e))),
        Ok(Ok((parts, body))) => Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_vec(),
        },
    };
    if !(200..300).contains(&answer.status) {
        let e = answer_error("POST /app-manifests/{code}/conversions", &answer);
        tracing::warn!(error = %e, "the manifest conversion failed");
        return Err(e);
    }
    let c: Conversion = answer.json("app manifest conversion")?;
    AppKey::from_pem(c.id, &c.pem)
        .map_err(|e| GitHubError::Decode(format!("the new App's private key is unusable: {e}")))?;
    let webhook_secret = c
        .webhook_secret
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            GitHubError::Decode(
                "GitHub returned no webhook secret (the manifest must set hook_attributes.url)"
                    .into(),
            )
        })?;
    tracing::info!(app_id = c.id, slug = ?c.slug, "GitHub App registered from the manifest");
    Ok(ManifestApp {
        id: c.id,
        slug: c.slug.unwrap_or_default(),
        name: c.name,
        html_url: c.html_url,
        owner: c.owner.map(|o| o.login),
        pem: Secret::new(c.pem),
        webhook_secret: Secret::new(webhook_secret),
        client_id: c.client_id.filter(|s| !s.is_empty()),
        client_secret: c.client_secret.filter(|s| !s.is_empty()).map(Secret::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_before_they_reach_a_url() {
        assert!(is_manifest_code("a1b2c3d4e5"));
        assert!(is_manifest_code("AbC-12_x"));
        assert!(!is_manifest_code(""));
        assert!(!is_manifest_code("../app/installations"));
        assert!(!is_manifest_code("a b"));
        assert!(!is_manifest_code("a%2Fb"));
        assert!(!is_manifest_code(&"a".repeat(129)));
    }
}
