//! "Sign in with GitHub" (docs/dashboard.md, docs/security.md "The dashboard"): the OAuth web
//! flow, sessions and CSRF tokens.
//!
//! - `/auth/login` sets a short pre-session cookie holding a random `state` (and where to go
//!   back to), signed, and sends the browser to GitHub's authorize page.
//! - `/auth/callback` checks that the `state` GitHub sends back is the cookie's, exchanges the
//!   code for a user-to-server token, reads the user and the repositories of the App's
//!   installations they can read, writes a session record (`<data dir>/sessions/<id>.json`,
//!   `0600`) and sets the session cookie: `<id>.<expiry>.<HMAC-SHA256>`, `HttpOnly`,
//!   `SameSite=Lax`, `Secure` when the public URL is https, host-only. The token is dropped.
//! - The CSRF token of a session is HMAC-SHA256(key, session id): every form carries it, every
//!   POST checks it.
//!
//! The key is 32 random bytes in `<data dir>/session.key` (`0600`), created once: sessions
//! survive restarts; deleting the file signs everybody out.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{WebError, WebState, escape, percent};
use crate::app::App;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "stagebot_session";
/// The pre-session cookie's name (the OAuth `state`).
pub const OAUTH_COOKIE: &str = "stagebot_oauth";
/// Sessions one GitHub login keeps at once (browsers, devices); signing in once more ends the
/// oldest.
pub const MAX_SESSIONS_PER_LOGIN: usize = 8;
/// How long a session lasts; the repository list is read again at the next sign-in.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(8);
/// How long the authorize round trip may take.
const OAUTH_TTL: chrono::Duration = chrono::Duration::minutes(10);

type HmacSha256 = Hmac<Sha256>;

/// The key that signs cookies and derives CSRF tokens.
pub struct SessionKey {
    key: [u8; 32],
    sessions: PathBuf,
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// 32 random bytes as 64 hex digits (session ids, OAuth `state`).
pub fn random_id() -> std::io::Result<String> {
    Ok(hex::encode(random_bytes::<32>()?))
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SessionKey {
    /// `<data_dir>/session.key`, created (`0600`, 32 random bytes) when missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, WebError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join("session.key");
        let err = |source| WebError::Key {
            path: path.display().to_string(),
            source,
        };
        crate::store::create_private_dir(data_dir).map_err(err)?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut f) => {
                let key = random_bytes::<32>().map_err(err)?;
                f.write_all(hex::encode(key).as_bytes()).map_err(err)?;
                f.sync_all().map_err(err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        let text = std::fs::read_to_string(&path).map_err(err)?;
        let key: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| {
                err(std::io::Error::other(
                    "not 64 hex digits: delete it to make a new one (everybody is signed out)",
                ))
            })?;
        let sessions = data_dir.join("sessions");
        crate::store::create_private_dir(&sessions).map_err(WebError::Sessions)?;
        Ok(Self { key, sessions })
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    /// Constant-time check of a signature made by [`Self::sign`].
    fn verify(&self, parts: &[&str], signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(sig) => self.mac(parts).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }

    /// The CSRF token of session `id`.
    pub fn csrf(&self, id: &str) -> String {
        self.sign(&["csrf", id])
    }

    fn session_path(&self, id: &str) -> Option<PathBuf> {
        is_id(id).then(|| self.sessions.join(format!("{id}.json")))
    }

    /// Write a new session; returns its cookie value.
    fn create(&self, session: &Session) -> Result<String, WebError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self
            .session_path(&session.id)
            .ok_or_else(|| WebError::OAuth("bad session id".into()))?;
        let body = serde_json::to_vec(session)
            .map_err(|e| WebError::Sessions(std::io::Error::other(e)))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(WebError::Sessions)?;
        f.write_all(&body).map_err(WebError::Sessions)?;
        f.sync_all().map_err(WebError::Sessions)?;
        let exp = session.expires_at.timestamp().to_string();
        Ok(format!(
            "{}.{exp}.{}",
            session.id,
            self.sign(&["session", &session.id, &exp])
        ))
    }

    /// The session a cookie value names, if its signature holds, it has not expired and its
    /// record exists.
    fn open(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (id, exp, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !self.verify(&["session", id, exp], sig) {
            return None;
        }
        let exp: i64 = exp.parse().ok()?;
        if exp <= now.timestamp() {
            return None;
        }
        let text = std::fs::read(self.session_path(id)?).ok()?;
        let mut session: Session = serde_json::from_slice(&text).ok()?;
        session.id = id.to_owned();
        (session.expires_at > now).then_some(session)
    }

    fn remove(&self, id: &str) {
        if let Some(path) = self.session_path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Delete the records of expired sessions.
    /// Remove expired sessions, and `login`'s oldest beyond [`MAX_SESSIONS_PER_LOGIN`] - 1 (a
    /// new one is about to be written): signing in again and again costs bounded disk.
    fn prune(&self, now: DateTime<Utc>, login: &str) {
        let Ok(dir) = std::fs::read_dir(&self.sessions) else {
            return;
        };
        let mut theirs = Vec::new();
        for entry in dir.flatten() {
            let path = entry.path();
            match std::fs::read(&path)
                .ok()
                .and_then(|t| serde_json::from_slice::<Session>(&t).ok())
            {
                Some(s) if s.expires_at > now => {
                    if s.login.eq_ignore_ascii_case(login) {
                        theirs.push((s.created_at, path));
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        theirs.sort();
        let surplus = theirs.len().saturating_sub(MAX_SESSIONS_PER_LOGIN - 1);
        for (_, path) in theirs.into_iter().take(surplus) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A signed-in user's session (server-side record; the cookie only names and signs it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    #[serde(skip)]
    pub id: String,
    pub login: String,
    /// `owner/name`, lowercase: what GitHub said the user can read, at sign-in.
    pub repos: BTreeSet<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn secure(app: &App) -> bool {
    app.settings()
        .public_url
        .trim()
        .to_ascii_lowercase()
        .starts_with("https://")
}

/// The name a cookie goes by: over https with the `__Host-` prefix, which browsers accept only
/// with `Secure`, `Path=/` and no `Domain`, so a preview on a sibling subdomain cannot plant
/// (toss) one of its own for stagebot's host: no signing in a visitor as someone else.
fn cookie_name(app: &App, base: &str) -> String {
    host_only_name(secure(app), base)
}

fn host_only_name(secure: bool, base: &str) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// `Set-Cookie` for cookie `base` (see [`cookie_name`]), host-only, on every path.
fn set_cookie(app: &App, base: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if secure(app) { "; Secure" } else { "" };
    let name = cookie_name(app, base);
    let text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Who is asking: the session named by the request's cookie, if valid.
pub fn viewer(app: &App, web: &WebState, headers: &HeaderMap) -> super::Viewer {
    let session = cookie(headers, &cookie_name(app, SESSION_COOKIE)).and_then(|c| {
        let key = web.key(app).ok()?;
        key.open(&c, app.now())
    });
    super::Viewer { session }
}

/// Is `token` the CSRF token of the viewer's session? (No session: never.)
pub fn csrf_ok(app: &App, web: &WebState, viewer: &super::Viewer, token: Option<&str>) -> bool {
    let (Some(session), Some(token)) = (viewer.session.as_ref(), token) else {
        return false;
    };
    web.key(app)
        .is_ok_and(|k| k.verify(&["csrf", &session.id], token))
}

/// The CSRF token to put in the viewer's forms.
pub fn csrf_token(app: &App, web: &WebState, viewer: &super::Viewer) -> Option<String> {
    let session = viewer.session.as_ref()?;
    web.key(app).ok().map(|k| k.csrf(&session.id))
}

/// A local path to go back to after sign-in: `/…`, never `//host` or a URL elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 1024
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Where sign-in starts for a visitor who wanted `next`.
pub fn login_url(next: &str) -> String {
    format!("/auth/login?next={}", percent(next))
}

/// A small HTML page with a message (errors of the sign-in flow and of actions).
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        axum::response::Html(format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
             <title>{t} · stagebot</title><link rel=stylesheet href=\"/dashboard.css\">\
             <main class=narrow><h1>{t}</h1><p class=message>{m}</p><p><a href=\"/\">Back to the dashboard</a></p></main>",
            t = escape(title),
            m = escape(message)
        )),
    )
        .into_response()
}

fn redirect(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn callback_url(app: &App) -> String {
    format!(
        "{}/auth/callback",
        app.settings().public_url.trim_end_matches('/')
    )
}

/// `GET /auth/login[?next=/path]`: to GitHub's authorize page.
pub async fn login(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(oauth) = app.oauth_app() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Sign-in is not set up",
            "This stagebot has no GitHub OAuth credentials (GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET), so nobody can sign in.",
        );
    };
    let key = match web.key(&app) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: no session key");
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "stagebot cannot read or create its session key; the operator finds why in its log.",
            );
        }
    };
    let Ok(state) = random_id() else {
        return message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "no random numbers",
        );
    };
    let next = hex::encode(safe_next(q.next.as_deref()));
    let exp = (app.now() + OAUTH_TTL).timestamp().to_string();
    let value = format!(
        "{state}.{exp}.{next}.{}",
        key.sign(&["oauth", &state, &exp, &next])
    );
    let url = format!(
        "{}/login/oauth/authorize?client_id={}&redirect_uri={}&state={}",
        app.settings().github_web_url.trim_end_matches('/'),
        percent(&oauth.client_id),
        percent(&callback_url(&app)),
        state
    );
    redirect(
        &url,
        vec![set_cookie(
            &app,
            OAUTH_COOKIE,
            &value,
            OAUTH_TTL.num_seconds(),
        )],
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback?code&state`: GitHub sends the user back here.
pub async fn callback(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let refused = |message: &str| message_page(StatusCode::FORBIDDEN, "Sign-in failed", message);
    let Some(oauth) = app.oauth_app() else {
        return refused("sign-in is not set up on this stagebot");
    };
    if let Some(error) = q.error {
        return refused(&format!("GitHub answered: {error}"));
    }
    let key = match web.key(&app) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: no session key");
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "stagebot cannot read its session key",
            );
        }
    };
    // The state must be the one this browser was sent off with (signed, not expired).
    let pre = cookie(&headers, &cookie_name(&app, OAUTH_COOKIE)).unwrap_or_default();
    let mut parts = pre.split('.');
    let (Some(state), Some(exp), Some(next), Some(sig), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return refused(
            "this browser did not start a sign-in here (no sign-in cookie): start again from the dashboard",
        );
    };
    let fresh = exp.parse::<i64>().is_ok_and(|e| e > app.now().timestamp());
    let same_state = q
        .state
        .as_deref()
        .is_some_and(|s| key.sign(&["state", s]) == key.sign(&["state", state]));
    if !key.verify(&["oauth", state, exp, next], sig) || !fresh || !same_state {
        return refused(
            "the sign-in answer does not belong to this browser's sign-in (or took too long): start again",
        );
    }
    let next = hex::decode(next)
        .ok()
        .and_then(|n| String::from_utf8(n).ok());
    let next = safe_next(next.as_deref());
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 512) else {
        return refused("GitHub sent no code");
    };
    let client = match super::oauth_client::OAuthClient::new(
        &app.settings().github_web_url,
        app.github().api_url(),
        app.github().app_id(),
    ) {
        Ok(c) => c,
        Err(e) => return refused(&e.to_string()),
    };
    let signed_in = async {
        let token = client.exchange(&oauth, &code, &callback_url(&app)).await?;
        client.signed_in(&token).await
    }
    .await;
    let signed_in = match signed_in {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: sign-in failed");
            return message_page(StatusCode::BAD_GATEWAY, "Sign-in failed", &e.to_string());
        }
    };
    let now = app.now();
    key.prune(now, &signed_in.login);
    let Ok(id) = random_id() else {
        return refused("no random numbers");
    };
    let session = Session {
        id,
        login: signed_in.login,
        repos: signed_in.repos,
        created_at: now,
        expires_at: now + SESSION_TTL,
    };
    let value = match key.create(&session) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: session not written");
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "stagebot could not write the session",
            );
        }
    };
    tracing::info!(login = %session.login, repos = session.repos.len(), "dashboard: signed in");
    redirect(
        &next,
        vec![
            set_cookie(&app, SESSION_COOKIE, &value, SESSION_TTL.num_seconds()),
            set_cookie(&app, OAUTH_COOKIE, "", 0),
        ],
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /auth/logout` (with the CSRF token): the session is deleted.
pub async fn logout(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    if !csrf_ok(&app, &web, &viewer, f.csrf.as_deref()) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "this form's CSRF token is missing or wrong: reload the page and try again",
        );
    }
    if let (Some(s), Ok(key)) = (viewer.session.as_ref(), web.key(&app)) {
        key.remove(&s.id);
    }
    redirect("/", vec![set_cookie(&app, SESSION_COOKIE, "", 0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_https_the_cookies_are_host_only_by_name() {
        // `__Host-`: a preview on a sibling subdomain cannot plant one (cookie tossing).
        assert_eq!(
            host_only_name(true, SESSION_COOKIE),
            "__Host-stagebot_session"
        );
        assert_eq!(host_only_name(true, OAUTH_COOKIE), "__Host-stagebot_oauth");
        assert_eq!(host_only_name(false, SESSION_COOKIE), "stagebot_session");
    }

    #[test]
    fn next_stays_on_this_host() {
        assert_eq!(safe_next(Some("/logs/a/b/pr-1/2")), "/logs/a/b/pr-1/2");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn signing_in_again_and_again_keeps_a_bounded_number_of_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(dir.path()).unwrap();
        let now = Utc::now();
        let session = |login: &str, i: i64| Session {
            id: random_id().unwrap(),
            login: login.into(),
            repos: Default::default(),
            created_at: now + chrono::Duration::seconds(i),
            expires_at: now + SESSION_TTL,
        };
        let other = key.create(&session("grace", 0)).unwrap();
        let mut cookies = Vec::new();
        for i in 0..30 {
            key.prune(now, "ada");
            cookies.push(key.create(&session("ada", i)).unwrap());
        }
        let files = std::fs::read_dir(dir.path().join("sessions"))
            .unwrap()
            .count();
        assert_eq!(
            files,
            MAX_SESSIONS_PER_LOGIN + 1,
            "ada's newest and grace's"
        );
        assert!(key.open(&cookies[29], now).is_some(), "the newest is kept");
        assert!(key.open(&cookies[0], now).is_none(), "the oldest is gone");
        assert!(
            key.open(&other, now).is_some(),
            "another user's is untouched"
        );
    }

    #[test]
    fn sessions_are_signed_and_survive_a_new_key_object() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(dir.path()).unwrap();
        let now = Utc::now();
        let session = Session {
            id: random_id().unwrap(),
            login: "ada".into(),
            repos: ["acme/webapp".to_owned()].into(),
            created_at: now,
            expires_at: now + SESSION_TTL,
        };
        let cookie = key.create(&session).unwrap();
        assert_eq!(key.open(&cookie, now).unwrap().login, "ada");
        // The key file is private and read again by a restarted server.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("session.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SessionKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&cookie, now).unwrap().login, "ada");
        // A changed expiry or id breaks the signature; an expired session is gone.
        let (id, rest) = cookie.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let later = (now + SESSION_TTL * 2).timestamp();
        assert!(again.open(&format!("{id}.{later}.{sig}"), now).is_none());
        assert!(again.open(&cookie, now + SESSION_TTL).is_none());
        assert!(again.open("../../etc/passwd.1.00", now).is_none());
        // CSRF tokens are per session and checked in constant time.
        let csrf = again.csrf(id);
        assert!(again.verify(&["csrf", id], &csrf));
        assert!(!again.verify(&["csrf", id], "00"));
        assert!(!again.verify(&["csrf", &random_id().unwrap()], &csrf));
    }
}
