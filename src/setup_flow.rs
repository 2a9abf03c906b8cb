//! The `/setup` manifest flow's state (src/setup.rs serves the flow): its settings
//! ([`SetupConfig`]), the single-use states handed out, who may open `/setup`, and the App it
//! last registered ([`SetupCore`]). A leaf: the App holds a [`SetupCore`] without importing the
//! flow's routes.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};

use crate::credentials::{AppCredentials, FromEnv};
use crate::settings::Settings;
use crate::types::Secret;

/// How long a `state` handed out by `/setup` stays valid (GitHub's manifest codes live an hour).
pub const STATE_TTL: Duration = Duration::from_secs(3600);
/// States kept at most; beyond it the oldest is forgotten (someone reloading `/setup` in a loop
/// cannot grow memory).
pub const MAX_PENDING_STATES: usize = 64;

/// Why the flow cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("app.yml is not a valid manifest: {0}")]
    Manifest(String),
    #[error("cannot make a random state: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
}

/// What the flow needs to know.
#[derive(Clone, Debug)]
pub struct SetupConfig {
    /// stagebot's own URL (`STAGEBOT_PUBLIC_URL`): the manifest's URLs go under it.
    pub public_url: String,
    /// `GITHUB_WEB_URL`: where the manifest is posted.
    pub github_web_url: String,
    /// `GITHUB_API_URL`: where the code is exchanged.
    pub github_api_url: String,
    /// `STAGEBOT_ADMIN_TOKEN`.
    pub admin_token: Option<Secret>,
    /// Where `app.json` is written.
    pub data_dir: PathBuf,
    /// Credentials the environment supplies (a new registration does not replace them).
    pub from_env: FromEnv,
}

/// The flow's state: its settings, the states handed out, and the App it last registered.
pub struct SetupCore {
    pub(crate) config: SetupConfig,
    pending: Mutex<HashMap<String, Instant>>,
    flow: RwLock<Option<Arc<AppCredentials>>>,
}

impl std::fmt::Debug for SetupCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupCore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SetupCore {
    pub fn new(config: SetupConfig) -> Self {
        Self {
            config,
            pending: Mutex::new(HashMap::new()),
            flow: RwLock::new(None),
        }
    }

    /// From the server's settings and the GitHub API URL.
    pub fn from_settings(settings: &Settings, github_api_url: &str) -> Self {
        Self::new(SetupConfig {
            public_url: settings.public_url.clone(),
            github_web_url: settings.github_web_url.clone(),
            github_api_url: github_api_url.to_owned(),
            admin_token: settings.admin_token.clone(),
            data_dir: settings.data_dir.clone(),
            from_env: settings.credentials_from_env,
        })
    }

    pub fn config(&self) -> &SetupConfig {
        &self.config
    }

    /// The App the manifest flow registered (`app.json`, or a registration since the start),
    /// with its OAuth client; `None` when the App comes from the environment only.
    pub fn flow_credentials(&self) -> Option<Arc<AppCredentials>> {
        self.flow
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Remember the App the flow registered (or `app.json`'s, at start).
    pub fn set_flow_credentials(&self, creds: Option<AppCredentials>) {
        *self
            .flow
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = creds.map(Arc::new);
    }

    /// A new random state, remembered for [`STATE_TTL`].
    pub(crate) fn issue_state(&self) -> Result<String, SetupError> {
        let state = random_hex(32).map_err(SetupError::Random)?;
        let now = Instant::now();
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.retain(|_, issued| now.duration_since(*issued) < STATE_TTL);
        while pending.len() >= MAX_PENDING_STATES {
            let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, issued)| **issued)
                .map(|(s, _)| s.clone())
            else {
                break;
            };
            pending.remove(&oldest);
        }
        pending.insert(state.clone(), now);
        Ok(state)
    }

    /// Was `state` handed out, unused, less than [`STATE_TTL`] ago? It is used up either way.
    pub(crate) fn take_state(&self, state: &str) -> bool {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending
            .remove(state)
            .is_some_and(|issued| issued.elapsed() < STATE_TTL)
    }

    /// May this request open `/setup`?
    pub(crate) fn allowed(
        &self,
        configured: bool,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> bool {
        match &self.config.admin_token {
            Some(token) => {
                let bearer = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                bearer
                    .into_iter()
                    .chain(query_token)
                    .any(|given| same_secret(given, token.expose()))
            }
            None => !configured,
        }
    }
}

/// Constant-time comparison (of the SHA-256 digests: the time taken says nothing about where
/// the strings differ, nor their lengths).
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `n` random bytes from the kernel, hex-encoded.
fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn core(token: Option<&str>) -> SetupCore {
        SetupCore::new(SetupConfig {
            public_url: "https://stagebot.example.com".into(),
            github_web_url: crate::settings::DEFAULT_WEB_URL.into(),
            github_api_url: crate::github::DEFAULT_API_URL.into(),
            admin_token: token.map(Secret::new),
            data_dir: PathBuf::from("/nonexistent"),
            from_env: FromEnv::default(),
        })
    }

    #[test]
    fn states_are_random_single_use_and_bounded() {
        let c = core(None);
        let a = c.issue_state().unwrap();
        let b = c.issue_state().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(!c.take_state("forged"));
        assert!(c.take_state(&a));
        assert!(!c.take_state(&a), "a state is single use");
        assert!(c.take_state(&b));
        for _ in 0..(MAX_PENDING_STATES * 2) {
            c.issue_state().unwrap();
        }
        assert_eq!(c.pending.lock().unwrap().len(), MAX_PENDING_STATES);
        // An expired state is refused (and forgotten).
        let old = c.issue_state().unwrap();
        if let Some(t) = Instant::now().checked_sub(STATE_TTL + Duration::from_secs(1)) {
            c.pending.lock().unwrap().insert(old.clone(), t);
            assert!(!c.take_state(&old));
        }
    }

    #[test]
    fn who_may_open_setup() {
        let none = HeaderMap::new();
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        let mut wrong = HeaderMap::new();
        wrong.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        // No token set: open until an App is configured, closed after.
        assert!(core(None).allowed(false, &none, None));
        assert!(!core(None).allowed(true, &none, None));
        assert!(!core(None).allowed(true, &bearer, Some("s3cret")));
        // A token set: needed before and after.
        let c = core(Some("s3cret"));
        for configured in [false, true] {
            assert!(!c.allowed(configured, &none, None));
            assert!(c.allowed(configured, &bearer, None));
            assert!(c.allowed(configured, &none, Some("s3cret")));
            assert!(!c.allowed(configured, &wrong, Some("s3cre")));
            assert!(!c.allowed(configured, &none, Some("")));
        }
        assert!(same_secret("a", "a"));
        assert!(!same_secret("a", "b"));
        assert!(!same_secret("", "a"));
    }
}
