//! The manifest flow in the fake: the web page a browser posts a manifest to
//! (`POST /settings/apps/new`, `POST /organizations/{org}/settings/apps/new`), which "creates" the
//! App and redirects to the manifest's `redirect_url` with a `code` and the `state`; and
//! `POST /app-manifests/{code}/conversions`, which trades the code (single use, one hour) for the
//! App's credentials. From the conversion on, the fake *is* the new App: it verifies app JWTs
//! with the new key and names the new id (its bot keeps the login `stagebot[bot]`).

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};

use super::{Outcome, Reply, Req, parse_query, user_json};
use crate::fake_github::{FAKE_APP_ID, FakeGitHub, TEST_PRIVATE_KEY_PEM, TEST_PUBLIC_KEY_PEM};

/// The private key of Apps registered from a manifest (test-only).
pub const MANIFEST_APP_PRIVATE_KEY_PEM: &str =
    include_str!("../../../fixtures/keys/manifest-app-private-key.pem");
const MANIFEST_APP_PUBLIC_KEY_PEM: &str =
    include_str!("../../../fixtures/keys/manifest-app-public-key.pem");
/// How long a manifest code can be converted (GitHub: one hour).
const CODE_TTL: Duration = Duration::from_secs(3600);

/// The App the fake is.
#[derive(Clone)]
pub(in crate::fake_github) struct Identity {
    pub(in crate::fake_github) id: u64,
    pub(in crate::fake_github) key: jsonwebtoken::DecodingKey,
    pub(in crate::fake_github) private_pem: &'static str,
}

impl Identity {
    /// The fake's own App: [`FAKE_APP_ID`] with the test key.
    pub(in crate::fake_github) fn original() -> std::io::Result<Self> {
        Ok(Self {
            id: FAKE_APP_ID,
            key: jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes())
                .map_err(|e| std::io::Error::other(format!("test public key: {e}")))?,
            private_pem: TEST_PRIVATE_KEY_PEM,
        })
    }
}

/// An App registered from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRegisteredApp {
    pub id: u64,
    pub slug: String,
    pub name: String,
    /// The organization it was registered for, else the signed-in user (`octocat`).
    pub owner: String,
    /// The manifest as posted.
    pub manifest: Value,
    /// The `state` the post carried.
    pub state: Option<String>,
    pub webhook_secret: String,
    pub client_id: String,
    pub client_secret: String,
    /// Its code was converted.
    pub converted: bool,
}

/// Registered Apps and their unconverted codes.
#[derive(Default)]
pub(in crate::fake_github) struct Registry {
    apps: Vec<FakeRegisteredApp>,
    /// code → (index in `apps`, when issued).
    codes: std::collections::HashMap<String, (usize, Instant)>,
}

fn random_hex(bytes: usize) -> String {
    std::iter::repeat_with(|| format!("{:02x}", fastrand::u8(..)))
        .take(bytes)
        .collect()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeGitHub {
    pub(in crate::fake_github) fn identity(&self) -> Identity {
        lock(&self.shared.identity).clone()
    }

    /// Apps registered from manifests, in order.
    pub fn registered_apps(&self) -> Vec<FakeRegisteredApp> {
        lock(&self.shared.manifests).apps.clone()
    }
}

fn http_url(v: &Value) -> Option<&str> {
    v.as_str()
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `POST [/organizations/{org}]/settings/apps/new?state=…` with the form field `manifest`.
pub(super) fn new_app(req: &Req<'_>, org: Option<&str>) -> Outcome {
    let bad = |m: &str| Reply::unprocessable(m);
    let form = parse_query(req.body.as_str());
    let text = form
        .get("manifest")
        .ok_or_else(|| bad("the form has no manifest field"))?;
    let manifest: Value =
        serde_json::from_str(text).map_err(|_| bad("the manifest is not JSON"))?;
    let name = manifest["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| bad("name is required"))?
        .to_owned();
    http_url(&manifest["url"]).ok_or_else(|| bad("url is required"))?;
    http_url(&manifest["hook_attributes"]["url"])
        .ok_or_else(|| bad("hook_attributes.url is required"))?;
    let redirect = http_url(&manifest["redirect_url"])
        .ok_or_else(|| bad("redirect_url is required for this flow"))?
        .to_owned();
    let slug: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let state = req.params.get("state").cloned();
    let code = random_hex(10);
    let mut reg = lock(&req.fake.shared.manifests);
    let id = FAKE_APP_ID + 1 + reg.apps.len() as u64;
    reg.apps.push(FakeRegisteredApp {
        id,
        slug,
        name,
        owner: org.unwrap_or("octocat").to_owned(),
        manifest,
        state: state.clone(),
        webhook_secret: random_hex(20),
        client_id: format!("Iv23li{}", random_hex(7)),
        client_secret: random_hex(20),
        converted: false,
    });
    let index = reg.apps.len() - 1;
    reg.codes.insert(code.clone(), (index, Instant::now()));
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect}{sep}code={code}");
    if let Some(s) = state {
        location.push_str("&state=");
        location.push_str(&form_encode(&s));
    }
    Ok(
        Reply::json(StatusCode::FOUND, json!({ "location": location }))
            .header(http::header::LOCATION, location),
    )
}

/// `POST /app-manifests/{code}/conversions` (no authentication: the code is the credential).
pub(super) fn convert(req: &Req<'_>, code: &str) -> Outcome {
    let mut reg = lock(&req.fake.shared.manifests);
    let (index, issued) = reg.codes.remove(code).ok_or_else(Reply::not_found)?;
    if issued.elapsed() > CODE_TTL {
        return Err(Reply::not_found());
    }
    let app = &mut reg.apps[index];
    app.converted = true;
    let app = app.clone();
    drop(reg);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(MANIFEST_APP_PUBLIC_KEY_PEM.as_bytes())
        .map_err(|_| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "fake: manifest key"))?;
    *lock(&req.fake.shared.identity) = Identity {
        id: app.id,
        key,
        private_pem: MANIFEST_APP_PRIVATE_KEY_PEM,
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let base = req.fake.url();
    Ok(Reply::created(json!({
        "id": app.id,
        "slug": app.slug,
        "node_id": format!("A_kwDO{:08}", app.id),
        "client_id": app.client_id,
        "owner": user_json(&app.owner, false),
        "name": app.name,
        "description": app.manifest["description"].as_str().unwrap_or_default(),
        "external_url": app.manifest["url"],
        "html_url": format!("{base}/apps/{}", app.slug),
        "created_at": now,
        "updated_at": now,
        "permissions": app.manifest.get("default_permissions").cloned().unwrap_or_else(|| json!({})),
        "events": app.manifest.get("default_events").cloned().unwrap_or_else(|| json!([])),
        "installations_count": 0,
        "client_secret": app.client_secret,
        "webhook_secret": app.webhook_secret,
        "pem": MANIFEST_APP_PRIVATE_KEY_PEM,
    })))
}
