//! Error tracking per environment (docs/configuration.md, `sentry`): the variables every
//! environment receives, and (with an auth token) Sentry releases, deploy records and the count
//! of new issues shown in the sticky comment.

use std::collections::BTreeMap;

use crate::provider::DeploySpec;

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
pub fn env_vars(dsn: &str, spec: &DeploySpec) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("SENTRY_DSN".into(), dsn.to_owned());
    v.insert("SENTRY_ENVIRONMENT".into(), spec.kind.to_string());
    v.insert("SENTRY_RELEASE".into(), spec.sha.to_string());
    v
}
