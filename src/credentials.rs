//! The GitHub App's credentials and where they come from (docs/security.md, "Credentials"):
//! the environment (`APP_ID`, `PRIVATE_KEY`/`PRIVATE_KEY_PATH`, `WEBHOOK_SECRET`), or `app.json`
//! in the data dir, written (`0600`) by the `/setup` manifest flow (src/setup.rs). A value set in
//! the environment wins over the file's: the App's id and key as a pair, the webhook secret on
//! its own. Nothing anywhere: `stagebot serve` starts in setup mode.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signature::WebhookSecrets;
use crate::types::Secret;

/// The file the manifest flow writes in the data dir.
pub const FILE: &str = "app.json";

/// An App registered through `/setup`: what GitHub's manifest conversion returned, as kept in
/// `app.json`. The OAuth client id and secret are there for sign-in with GitHub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredentials {
    /// The App's id.
    pub app_id: u64,
    /// Its slug (`https://github.com/apps/<slug>`).
    pub slug: String,
    /// Its name.
    pub name: String,
    /// Its page on GitHub.
    pub html_url: String,
    /// The account that owns it.
    pub owner: Option<String>,
    /// Its private key (PEM).
    pub private_key_pem: Secret,
    /// Its webhook secret.
    pub webhook_secret: Secret,
    /// OAuth client id (`GITHUB_CLIENT_ID` wins over it).
    pub client_id: Option<String>,
    /// OAuth client secret (`GITHUB_CLIENT_SECRET` wins over it).
    pub client_secret: Option<Secret>,
    /// When the flow wrote it.
    pub created_at: DateTime<Utc>,
}

/// `app.json` on disk.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    app_id: u64,
    slug: String,
    name: String,
    html_url: String,
    #[serde(default)]
    owner: Option<String>,
    private_key_pem: String,
    webhook_secret: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    created_at: DateTime<Utc>,
}

/// Why the credentials cannot be read, written or put together.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{} cannot be read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid credentials file: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{} cannot be written: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Some credentials are set and others missing.
    #[error("{0}")]
    Incomplete(String),
}

/// `app.json`'s path in a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

impl AppCredentials {
    /// Read `app.json` from the data dir; `None` when there is none.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, CredentialsError> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CredentialsError::Read { path, source }),
        };
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the App's credentials file is readable by others; making it 0600");
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let d: OnDisk = serde_json::from_str(&text).map_err(|e| CredentialsError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if d.private_key_pem.trim().is_empty() || d.webhook_secret.trim().is_empty() {
            return Err(CredentialsError::Invalid {
                path,
                message: "private_key_pem and webhook_secret must not be empty".into(),
            });
        }
        Ok(Some(Self {
            app_id: d.app_id,
            slug: d.slug,
            name: d.name,
            html_url: d.html_url,
            owner: d.owner,
            private_key_pem: Secret::new(d.private_key_pem),
            webhook_secret: Secret::new(d.webhook_secret),
            client_id: d.client_id,
            client_secret: d.client_secret.map(Secret::new),
            created_at: d.created_at,
        }))
    }

    /// Write `app.json` (`0600`, replaced atomically: a crash leaves the old file or the new
    /// one, never half of either), creating the data dir (`0700`) if needed.
    pub fn save(&self, data_dir: &Path) -> Result<(), CredentialsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let target = path(data_dir);
        let fail = |source| CredentialsError::Write {
            path: target.clone(),
            source,
        };
        crate::store::create_private_dir(data_dir).map_err(fail)?;
        let d = OnDisk {
            app_id: self.app_id,
            slug: self.slug.clone(),
            name: self.name.clone(),
            html_url: self.html_url.clone(),
            owner: self.owner.clone(),
            private_key_pem: self.private_key_pem.expose().to_owned(),
            webhook_secret: self.webhook_secret.expose().to_owned(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.as_ref().map(|s| s.expose().to_owned()),
            created_at: self.created_at,
        };
        let json = serde_json::to_vec_pretty(&d)
            .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        file.write_all(&json).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        drop(file);
        std::fs::rename(&tmp, &target).map_err(fail)?;
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The credentials the environment set (after `PRIVATE_KEY_PATH` was read).
#[derive(Clone, Debug, Default)]
pub struct EnvCredentials {
    /// `APP_ID`.
    pub app_id: Option<u64>,
    /// `PRIVATE_KEY`, or the contents of `PRIVATE_KEY_PATH`.
    pub private_key: Option<Secret>,
    /// `WEBHOOK_SECRET` (comma-separated).
    pub webhook_secret: Option<String>,
}

/// Which credentials the environment supplied (and a registration through `/setup` therefore
/// does not replace in the running server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FromEnv {
    /// `APP_ID` with `PRIVATE_KEY`/`PRIVATE_KEY_PATH`.
    pub app: bool,
    /// `WEBHOOK_SECRET`.
    pub webhook: bool,
}

/// The credentials stagebot runs with.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub app_id: u64,
    pub private_key_pem: Secret,
    pub webhook_secrets: WebhookSecrets,
    /// What came from the environment (the rest came from `app.json`).
    pub from_env: FromEnv,
    /// `app.json`, when there is one (its OAuth client is there even when the environment
    /// supplies the App).
    pub file: Option<AppCredentials>,
}

/// Put the environment's and `app.json`'s credentials together, the environment's first.
/// `Ok(None)`: neither has any (setup mode). Half a set is an error naming what is missing.
pub fn resolve(
    env: &EnvCredentials,
    file: Option<AppCredentials>,
) -> Result<Option<Resolved>, CredentialsError> {
    let env_secrets = env
        .webhook_secret
        .as_deref()
        .and_then(WebhookSecrets::parse);
    let (app, app_from_env) = match (env.app_id, &env.private_key, &file) {
        (Some(id), Some(key), _) => (Some((id, key.clone())), true),
        (Some(_), None, _) => {
            return Err(CredentialsError::Incomplete(
                "APP_ID is set but PRIVATE_KEY or PRIVATE_KEY_PATH is not (the GitHub App's private key)"
                    .into(),
            ));
        }
        (None, Some(_), _) => {
            return Err(CredentialsError::Incomplete(
                "PRIVATE_KEY or PRIVATE_KEY_PATH is set but APP_ID is not (the GitHub App's numeric id)"
                    .into(),
            ));
        }
        (None, None, Some(f)) => (Some((f.app_id, f.private_key_pem.clone())), false),
        (None, None, None) => (None, false),
    };
    let (secrets, webhook_from_env) = match (env_secrets, &file) {
        (Some(s), _) => (Some(s), true),
        (None, Some(f)) => (WebhookSecrets::parse(f.webhook_secret.expose()), false),
        (None, None) => (None, false),
    };
    match (app, secrets) {
        (None, None) => Ok(None),
        (Some((app_id, private_key_pem)), Some(webhook_secrets)) => Ok(Some(Resolved {
            app_id,
            private_key_pem,
            webhook_secrets,
            from_env: FromEnv {
                app: app_from_env,
                webhook: webhook_from_env,
            },
            file,
        })),
        (Some(_), None) => Err(CredentialsError::Incomplete(
            "WEBHOOK_SECRET is required (the secret set on the GitHub App's webhook), or unset \
             APP_ID and the private key to register an App at /setup"
                .into(),
        )),
        (None, Some(_)) => Err(CredentialsError::Incomplete(
            "WEBHOOK_SECRET is set but APP_ID and PRIVATE_KEY (or PRIVATE_KEY_PATH) are not, and \
             the data dir holds no App registered through /setup; set them, or unset \
             WEBHOOK_SECRET to start in setup mode"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_creds() -> AppCredentials {
        AppCredentials {
            app_id: 77,
            slug: "stagebot".into(),
            name: "stagebot".into(),
            html_url: "https://github.com/apps/stagebot".into(),
            owner: Some("acme".into()),
            private_key_pem: Secret::new("file-key"),
            webhook_secret: Secret::new("file-secret"),
            client_id: Some("Iv1.abc".into()),
            client_secret: Some(Secret::new("client-secret")),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn env(app: bool, webhook: bool) -> EnvCredentials {
        EnvCredentials {
            app_id: app.then_some(5),
            private_key: app.then(|| Secret::new("env-key")),
            webhook_secret: webhook.then(|| "env-secret".to_owned()),
        }
    }

    #[test]
    fn the_environment_wins_value_by_value() {
        let body = b"{}";
        // (env app, env webhook, file) → (app id, key, secret that verifies, from_env)
        let table = [
            (true, true, true, 5, "env-key", "env-secret", (true, true)),
            (true, true, false, 5, "env-key", "env-secret", (true, true)),
            (
                false,
                false,
                true,
                77,
                "file-key",
                "file-secret",
                (false, false),
            ),
            (
                true,
                false,
                true,
                5,
                "env-key",
                "file-secret",
                (true, false),
            ),
            (
                false,
                true,
                true,
                77,
                "file-key",
                "env-secret",
                (false, true),
            ),
        ];
        for (app, webhook, file, id, key, secret, (fa, fw)) in table {
            let r = resolve(&env(app, webhook), file.then(file_creds))
                .unwrap()
                .unwrap();
            assert_eq!(r.app_id, id);
            assert_eq!(r.private_key_pem.expose(), key);
            assert!(
                r.webhook_secrets
                    .verify(&crate::webhook::sign(secret, body), body)
            );
            assert_eq!(
                r.from_env,
                FromEnv {
                    app: fa,
                    webhook: fw
                }
            );
            assert_eq!(r.file.is_some(), file);
        }
    }

    #[test]
    fn nothing_means_setup_mode_and_half_a_set_is_an_error() {
        assert!(resolve(&EnvCredentials::default(), None).unwrap().is_none());
        let only_id = EnvCredentials {
            app_id: Some(1),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&only_id, Some(file_creds())),
            Err(CredentialsError::Incomplete(m)) if m.contains("PRIVATE_KEY")
        ));
        let only_key = EnvCredentials {
            private_key: Some(Secret::new("k")),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&only_key, None),
            Err(CredentialsError::Incomplete(m)) if m.contains("APP_ID")
        ));
        assert!(matches!(
            resolve(&env(true, false), None),
            Err(CredentialsError::Incomplete(m)) if m.contains("WEBHOOK_SECRET is required")
        ));
        assert!(matches!(
            resolve(&env(false, true), None),
            Err(CredentialsError::Incomplete(m)) if m.contains("setup mode")
        ));
        // A blank secret is no secret.
        let blank = EnvCredentials {
            webhook_secret: Some(" , ".into()),
            ..Default::default()
        };
        assert!(resolve(&blank, None).unwrap().is_none());
    }

    #[test]
    fn the_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(AppCredentials::load(&data).unwrap().is_none());
        let creds = file_creds();
        creds.save(&data).unwrap();
        let mode = std::fs::metadata(path(&data)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(AppCredentials::load(&data).unwrap(), Some(creds.clone()));
        // Saved again (a second registration): replaced, still 0600, no temp file left.
        let mut second = creds;
        second.app_id = 78;
        second.save(&data).unwrap();
        assert_eq!(AppCredentials::load(&data).unwrap().unwrap().app_id, 78);
        assert!(!data.join("app.json.tmp").exists());
        let mode = std::fs::metadata(path(&data)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"app_id\": \"x\"").unwrap();
        let e = AppCredentials::load(dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("app.json is not a valid credentials file"),
            "{e}"
        );
    }
}
