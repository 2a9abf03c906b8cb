//! One-click registration of the GitHub App (GitHub's manifest flow) and setup mode
//! (docs/operations.md, "First start").
//!
//! `GET /setup` shows a button that posts the manifest built from `app.yml` (its URLs put under
//! `STAGEBOT_PUBLIC_URL`) to `GITHUB_WEB_URL/settings/apps/new` (or an organization's), with a
//! random `state` kept here: single use, valid for [`STATE_TTL`]. GitHub creates the App and
//! sends the browser to `GET /setup/callback?code=…&state=…`; the state is checked, the code
//! exchanged (`POST /app-manifests/{code}/conversions`), and the App's credentials written to
//! `app.json` in the data dir (src/credentials.rs) and put to use at once.
//!
//! Who may open `/setup`: anyone while no App is configured and `STAGEBOT_ADMIN_TOKEN` is unset;
//! otherwise only a request carrying that token (`Authorization: Bearer …` or `?token=…`,
//! compared in constant time). Once an App is configured and no token is set, nobody.
//!
//! Without credentials `stagebot serve` runs [`run_setup_mode`]: only `/setup`,
//! `/setup/callback`, `/healthz` and `/readyz` answer until the flow completes, then the caller
//! starts the full service on the same listening socket, in the same process.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::app::App;
use crate::credentials::AppCredentials;
use crate::escape::html as escape;
use crate::signature::WebhookSecrets;

/// The default of `GITHUB_WEB_URL`.
pub use crate::settings::DEFAULT_WEB_URL;
pub use crate::setup_flow::{MAX_PENDING_STATES, STATE_TTL, SetupConfig, SetupCore, SetupError};

/// `app.yml`, the manifest's source (its URLs are replaced by ones under the public URL).
const APP_YML: &str = include_str!("../app.yml");

/// What a completed registration changed in the running server.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The GitHub client acts as the new App now (false: the environment's App stays).
    pub app_in_use: bool,
    /// Webhooks are verified with the new secret now (false: `WEBHOOK_SECRET` stays).
    pub webhook_in_use: bool,
    /// Setup mode ends: the full service starts.
    pub starting: bool,
}

/// Where the flow runs: the full server ([`App`]) or setup mode ([`SetupMode`]).
pub trait SetupHost: Clone + Send + Sync + 'static {
    fn core(&self) -> &SetupCore;
    /// An App is configured (then `/setup` needs the admin token).
    fn configured(&self) -> bool;
    /// Put newly registered credentials (already in `app.json`) to use.
    fn complete(&self, creds: &AppCredentials) -> Result<Completion, SetupError>;
}

impl App {
    /// The `/setup` flow's state.
    pub fn setup(&self) -> &SetupCore {
        &self.0.setup
    }

    /// The App the manifest flow registered, with its OAuth client id and secret (for sign-in
    /// with GitHub; `GITHUB_CLIENT_ID`/`GITHUB_CLIENT_SECRET` win over them).
    pub fn flow_credentials(&self) -> Option<Arc<AppCredentials>> {
        self.setup().flow_credentials()
    }
}

impl SetupHost for App {
    fn core(&self) -> &SetupCore {
        self.setup()
    }

    fn configured(&self) -> bool {
        true
    }

    fn complete(&self, creds: &AppCredentials) -> Result<Completion, SetupError> {
        let from_env = self.setup().config.from_env;
        if !from_env.app {
            self.github()
                .set_app(creds.app_id, &creds.private_key_pem)?;
        }
        if !from_env.webhook
            && let Some(secrets) = WebhookSecrets::parse(creds.webhook_secret.expose())
        {
            self.webhook_secrets().replace(&secrets);
        }
        self.setup().set_flow_credentials(Some(creds.clone()));
        Ok(Completion {
            app_in_use: !from_env.app,
            webhook_in_use: !from_env.webhook,
            starting: false,
        })
    }
}

/// Setup mode: no App yet; the flow's result goes to whoever waits in [`run_setup_mode`].
#[derive(Clone)]
pub struct SetupMode(Arc<SetupModeInner>);

struct SetupModeInner {
    core: SetupCore,
    own_hosts: Vec<String>,
    done: watch::Sender<Option<AppCredentials>>,
    /// Stops setup mode's accept loop. Fired by the callback itself before it answers, so a
    /// connection the browser (or GitHub) opens after that answer is never accepted by setup
    /// mode and then closed by its shutdown: it waits in the listen queue for the full server.
    stop: crate::shutdown::Trigger,
    stopped: crate::shutdown::Shutdown,
}

impl SetupMode {
    /// `own_hosts`: the hosts `/setup` answers on ([`crate::server::own_hosts`]).
    pub fn new(core: SetupCore, own_hosts: Vec<String>) -> Self {
        let (stop, stopped) = crate::shutdown::shutdown();
        Self(Arc::new(SetupModeInner {
            core,
            own_hosts,
            done: watch::channel(None).0,
            stop,
            stopped,
        }))
    }

    /// The setup-mode router: `/setup`, `/setup/callback` (on stagebot's own hosts),
    /// `/healthz`, `/readyz`; everything else is answered 503.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(routes::<SetupMode>())
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(setup_mode_readyz))
            .fallback(setup_mode_fallback)
            .layer(middleware::from_fn_with_state(self.clone(), own_host_only))
            .with_state(self.clone())
    }
}

impl SetupHost for SetupMode {
    fn core(&self) -> &SetupCore {
        &self.0.core
    }

    fn configured(&self) -> bool {
        self.0.done.borrow().is_some()
    }

    fn complete(&self, creds: &AppCredentials) -> Result<Completion, SetupError> {
        self.0.done.send_replace(Some(creds.clone()));
        self.0.stop.fire();
        Ok(Completion {
            app_in_use: true,
            webhook_in_use: true,
            starting: true,
        })
    }
}

/// Serve setup mode on `listener` until the flow registers an App (its credentials are
/// returned, already in `app.json`) or `stop` resolves (`None`). In-flight requests finish
/// before this returns.
pub async fn run_setup_mode(
    listener: tokio::net::TcpListener,
    mode: SetupMode,
    max_connections: usize,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<Option<AppCredentials>> {
    tracing::warn!(
        public_url = %mode.0.core.config.public_url,
        "setup mode: no GitHub App is configured; open /setup to register one"
    );
    let server = tokio::spawn(crate::http_server::serve_router(
        listener,
        mode.router(),
        max_connections,
        mode.0.stopped.clone(),
    ));
    let mut done = mode.0.done.subscribe();
    let outcome = tokio::select! {
        creds = async {
            loop {
                if let Some(c) = done.borrow_and_update().clone() {
                    return Some(c);
                }
                if done.changed().await.is_err() {
                    return None;
                }
            }
        } => creds,
        () = stop => None,
    };
    mode.0.stop.fire();
    match server.await {
        Ok(result) => result?,
        Err(e) => return Err(std::io::Error::other(e)),
    }
    if let Some(c) = &outcome {
        tracing::info!(app_id = c.app_id, slug = %c.slug, "setup mode ends: the App is registered");
    }
    Ok(outcome)
}

/// `/setup` and `/setup/callback` for a host.
pub fn routes<H: SetupHost>() -> Router<H> {
    Router::new()
        .route("/setup", get(page::<H>))
        .route("/setup/callback", get(callback::<H>))
}

async fn own_host_only(State(mode): State<SetupMode>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/setup") {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.trim().to_ascii_lowercase());
        if !host.is_some_and(|h| mode.0.own_hosts.contains(&h)) {
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    }
    next.run(req).await
}

async fn setup_mode_readyz() -> Response {
    // Ready: Kubernetes sends traffic only to ready pods, and /setup must be reachable.
    Json(json!({
        "ready": true,
        "setup_mode": true,
        "checks": { "app": { "ok": false, "detail": "setup mode: no App configured; open /setup to register one" } },
    }))
    .into_response()
}

async fn setup_mode_fallback() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "stagebot is in setup mode: no GitHub App is configured yet. Open /setup on stagebot's \
         own address to register one.\n",
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The manifest

#[derive(Deserialize)]
struct AppYml {
    name: String,
    url: String,
    hook_attributes: HookAttributes,
    redirect_url: String,
    #[serde(default)]
    callback_urls: Vec<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    default_events: Vec<String>,
    #[serde(default)]
    default_permissions: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct HookAttributes {
    url: String,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// `url`'s path (and query) under `base`: `https://stagebot.example.com/webhook` under
/// `https://ci.example.org/stagebot` is `https://ci.example.org/stagebot/webhook`.
fn rebase(url: &str, base: &str) -> Result<String, SetupError> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| SetupError::Manifest(format!("{url:?}: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// The manifest GitHub gets: `app.yml` with its URLs under `public_url`.
pub fn manifest(public_url: &str) -> Result<Value, SetupError> {
    let yml: AppYml =
        serde_saphyr::from_str(APP_YML).map_err(|e| SetupError::Manifest(e.to_string()))?;
    let callback_urls = yml
        .callback_urls
        .iter()
        .map(|u| rebase(u, public_url))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "name": yml.name,
        "url": rebase(&yml.url, public_url)?,
        "hook_attributes": {
            "url": rebase(&yml.hook_attributes.url, public_url)?,
            "active": yml.hook_attributes.active,
        },
        "redirect_url": rebase(&yml.redirect_url, public_url)?,
        "callback_urls": callback_urls,
        "public": yml.public,
        "default_events": yml.default_events,
        "default_permissions": yml.default_permissions,
    }))
}

/// Is `org` a possible GitHub account name (letters, digits, single hyphens inside, ≤ 39)?
fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= 39
        && org.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !org.starts_with('-')
        && !org.ends_with('-')
        && !org.contains("--")
}

/// Where the manifest is posted.
fn new_app_url(web_url: &str, org: Option<&str>, state: &str) -> String {
    let web = web_url.trim_end_matches('/');
    match org {
        Some(org) => format!("{web}/organizations/{org}/settings/apps/new?state={state}"),
        None => format!("{web}/settings/apps/new?state={state}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Pages

/// `scheme://authority` of a URL, for the page's `form-action`.
fn origin(url: &str) -> Option<String> {
    let uri: axum::http::Uri = url.trim().parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// An HTML page: nothing cached, no referrer (a token in the address stays here), no framing,
/// forms only to stagebot itself and GitHub.
fn html(status: StatusCode, web_url: &str, title: &str, body: &str) -> Response {
    let form_action = origin(web_url).unwrap_or_default();
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>{title} · stagebot</title>\
         <style>body{{font:15px system-ui;margin:2em auto;max-width:42em;padding:0 1em}}\
         .note{{background:#fff3cd;padding:6px 10px}}button{{font:inherit;padding:6px 14px}}\
         code{{background:#f3f3f3;padding:0 3px}}</style>\
         <h1>{title}</h1>{body}",
        title = escape(title),
    );
    let mut resp = (status, axum::response::Html(page)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

fn refused<H: SetupHost>(host: &H) -> Response {
    let core = host.core();
    let why = match (&core.config.admin_token, host.configured()) {
        (Some(_), _) => {
            "This page needs the admin token: <code>STAGEBOT_ADMIN_TOKEN</code>, sent as \
             <code>Authorization: Bearer …</code> or <code>?token=…</code>."
        }
        (None, _) => {
            "A GitHub App is configured already. To register another, set \
             <code>STAGEBOT_ADMIN_TOKEN</code>, restart stagebot and open \
             <code>/setup?token=…</code>."
        }
    };
    html(
        StatusCode::FORBIDDEN,
        &core.config.github_web_url,
        "Not allowed",
        &format!("<p>{why}</p>"),
    )
}

/// Is the public URL one GitHub cannot deliver webhooks to?
fn unreachable_from_github(public_url: &str) -> bool {
    let Ok(uri) = public_url.trim().parse::<axum::http::Uri>() else {
        return true;
    };
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "[::1]"
        || host == "0.0.0.0"
}

/// `GET /setup[?org=NAME]`: the button that posts the manifest to GitHub.
pub async fn page<H: SetupHost>(
    State(host): State<H>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = host.core();
    let cfg = &core.config;
    let token = q.get("token").map(String::as_str);
    if !core.allowed(host.configured(), &headers, token) {
        tracing::warn!("GET /setup refused (no or wrong admin token)");
        return refused(&host);
    }
    let org = q.get("org").map(|o| o.trim()).filter(|o| !o.is_empty());
    if let Some(org) = org
        && !valid_org(org)
    {
        return html(
            StatusCode::BAD_REQUEST,
            &cfg.github_web_url,
            "Not an organization name",
            &format!(
                "<p><code>{}</code> is not a GitHub organization name (letters, digits and \
                 single hyphens, at most 39).</p><p><a href=\"/setup\">Back</a></p>",
                escape(org)
            ),
        );
    }
    let manifest = match manifest(&cfg.public_url) {
        Ok(m) => m.to_string(),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the App manifest");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                &cfg.github_web_url,
                "No manifest",
                &format!("<p>{}</p>", escape(&e.to_string())),
            );
        }
    };
    let state = match core.issue_state() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the manifest flow");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                &cfg.github_web_url,
                "Cannot start",
                &format!("<p>{}</p>", escape(&e.to_string())),
            );
        }
    };
    let action = new_app_url(&cfg.github_web_url, org, &state);
    let mut body = String::new();
    if host.configured() {
        let current = core
            .flow_credentials()
            .map(|c| format!(" ({}, id {})", escape(&c.slug), c.app_id))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<p class=note>A GitHub App is configured already{current}. Registering another one \
             replaces <code>app.json</code> in the data dir{}.</p>",
            if cfg.from_env.app || cfg.from_env.webhook {
                "; credentials set in the environment keep precedence over it"
            } else {
                ", and stagebot acts as the new App at once"
            }
        );
    }
    let _ = write!(
        body,
        "<p>stagebot registers itself as a GitHub App {where_}: the button sends the manifest \
         built from <code>app.yml</code> to GitHub, where you confirm the App's name. GitHub then \
         sends you back here and stagebot keeps the App's id, private key, webhook secret and \
         OAuth credentials in its data dir.</p>\
         <p>Webhooks will be sent to <code>{hook}</code>.</p>",
        where_ = match org {
            Some(o) => format!("of the organization <code>{}</code>", escape(o)),
            None => "of your GitHub account".to_owned(),
        },
        hook = escape(&format!("{}/webhook", cfg.public_url.trim_end_matches('/'))),
    );
    if cfg.admin_token.is_none() {
        body.push_str(
            "<p class=note><code>STAGEBOT_ADMIN_TOKEN</code> is not set: anyone who reaches this \
             page can register an App for this stagebot until one is configured.</p>",
        );
    }
    if unreachable_from_github(&cfg.public_url) {
        let _ = write!(
            body,
            "<p class=note>GitHub cannot reach <code>{}</code>: set <code>STAGEBOT_PUBLIC_URL</code> \
             to the address GitHub and your browser use, or webhooks will not arrive.</p>",
            escape(&cfg.public_url)
        );
    }
    let _ = write!(
        body,
        "<form method=post action=\"{action}\">\
         <input type=hidden name=manifest value=\"{manifest}\">\
         <button type=submit>Create the GitHub App on {web}</button></form>\
         <form method=get action=\"/setup\"><p>Or for an organization: \
         <input name=org placeholder=organization value=\"{org}\" pattern=\"[A-Za-z0-9-]{{1,39}}\">{token}\
         <button type=submit>Use this organization</button></p></form>",
        action = escape(&action),
        manifest = escape(&manifest),
        web = escape(&cfg.github_web_url),
        org = escape(org.unwrap_or_default()),
        token = token
            .map(|t| format!("<input type=hidden name=token value=\"{}\">", escape(t)))
            .unwrap_or_default(),
    );
    html(
        StatusCode::OK,
        &cfg.github_web_url,
        "Register stagebot",
        &body,
    )
}

/// `GET /setup/callback?code=…&state=…`: GitHub's redirect after the App was created.
pub async fn callback<H: SetupHost>(
    State(host): State<H>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = host.core();
    let web = core.config.github_web_url.clone();
    let state_ok = q.get("state").is_some_and(|s| core.take_state(s));
    if !state_ok {
        tracing::warn!("GET /setup/callback with an unknown, used or expired state: refused");
        return html(
            StatusCode::BAD_REQUEST,
            &web,
            "Link expired",
            "<p>This registration link is unknown, was used already or is older than an hour. \
             Start again at <a href=\"/setup\">/setup</a>.</p>",
        );
    }
    let Some(code) = q.get("code").filter(|c| crate::github::is_manifest_code(c)) else {
        return html(
            StatusCode::BAD_REQUEST,
            &web,
            "No code",
            "<p>GitHub's redirect carried no usable <code>code</code>. Start again at \
             <a href=\"/setup\">/setup</a>.</p>",
        );
    };
    let app = match crate::github::create_app_from_manifest(&core.config.github_api_url, code).await
    {
        Ok(app) => app,
        Err(e) => {
            return html(
                StatusCode::BAD_GATEWAY,
                &web,
                "GitHub did not complete the registration",
                &format!(
                    "<p>{}</p><p>Start again at <a href=\"/setup\">/setup</a>.</p>",
                    escape(&e.to_string())
                ),
            );
        }
    };
    let creds = AppCredentials {
        app_id: app.id,
        slug: app.slug,
        name: app.name,
        html_url: app.html_url,
        owner: app.owner,
        private_key_pem: app.pem,
        webhook_secret: app.webhook_secret,
        client_id: app.client_id,
        client_secret: app.client_secret,
        created_at: chrono::Utc::now(),
    };
    if let Err(e) = creds.save(&core.config.data_dir) {
        tracing::error!(error = %e, app_id = creds.app_id, "the new App's credentials could not be written");
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            &web,
            "Not saved",
            &format!(
                "<p>GitHub registered the App <a href=\"{url}\">{name}</a>, but stagebot could not \
                 keep its credentials: {e}</p><p>Fix the data dir, delete the App on GitHub and \
                 start again at <a href=\"/setup\">/setup</a>.</p>",
                url = escape(&creds.html_url),
                name = escape(&creds.name),
                e = escape(&e.to_string()),
            ),
        );
    }
    let done = match host.complete(&creds) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "the new App's credentials could not be put to use");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                &web,
                "Saved, not in use",
                &format!(
                    "<p>The credentials are in <code>app.json</code> but could not be used: {}. \
                     Restart stagebot.</p>",
                    escape(&e.to_string())
                ),
            );
        }
    };
    tracing::info!(app_id = creds.app_id, slug = %creds.slug, ?done, "GitHub App registered through /setup");
    let mut body = format!(
        "<p>GitHub App <a href=\"{url}\">{name}</a> (id {id}) is registered; its credentials are \
         in <code>app.json</code> in the data dir.</p>",
        url = escape(&creds.html_url),
        name = escape(&creds.name),
        id = creds.app_id,
    );
    if done.starting {
        body.push_str("<p>stagebot is starting its full service now.</p>");
    }
    if !done.app_in_use || !done.webhook_in_use {
        body.push_str(
            "<p class=note>Credentials set in the environment (<code>APP_ID</code>, \
             <code>PRIVATE_KEY</code>, <code>WEBHOOK_SECRET</code>) keep precedence: remove them \
             and restart stagebot to use the new App.</p>",
        );
    }
    let _ = write!(
        body,
        "<p>Next: <a href=\"{}/installations/new\">install the App</a> on the repositories that \
         should get previews.</p>",
        escape(creds.html_url.trim_end_matches('/'))
    );
    html(StatusCode::OK, &web, "Registered", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_app_yml_under_the_public_url() {
        let m = manifest("https://ci.example.org/stagebot/").unwrap();
        assert_eq!(m["name"], "stagebot");
        assert_eq!(m["url"], "https://ci.example.org/stagebot/");
        assert_eq!(
            m["hook_attributes"]["url"],
            "https://ci.example.org/stagebot/webhook"
        );
        assert_eq!(m["hook_attributes"]["active"], true);
        assert_eq!(
            m["redirect_url"],
            "https://ci.example.org/stagebot/setup/callback"
        );
        assert_eq!(
            m["callback_urls"],
            json!(["https://ci.example.org/stagebot/auth/callback"])
        );
        assert_eq!(m["public"], false);
        assert_eq!(m["default_permissions"]["contents"], "read");
        assert_eq!(m["default_permissions"]["issues"], "write");
        let events: Vec<&str> = m["default_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(events.contains(&"pull_request"));
        assert!(events.contains(&"issue_comment"));
        // Nothing of the example host is left.
        assert!(!m.to_string().contains("example.com"));
    }

    #[test]
    fn html_escapes_everything() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn organization_names() {
        for ok in ["acme", "Acme-Corp", "a", &"a".repeat(39)] {
            assert!(valid_org(ok), "{ok}");
        }
        for bad in [
            "",
            "-acme",
            "acme-",
            "ac--me",
            "acme/evil",
            "<b>",
            &"a".repeat(40),
            "a b",
        ] {
            assert!(!valid_org(bad), "{bad}");
        }
        assert_eq!(
            new_app_url("https://ghe.example.com/", Some("acme"), "s1"),
            "https://ghe.example.com/organizations/acme/settings/apps/new?state=s1"
        );
        assert_eq!(
            new_app_url("https://github.com", None, "s1"),
            "https://github.com/settings/apps/new?state=s1"
        );
    }

    #[test]
    fn loopback_public_urls_are_flagged() {
        assert!(unreachable_from_github("http://127.0.0.1:3000"));
        assert!(unreachable_from_github("http://localhost:3000"));
        assert!(!unreachable_from_github("https://stagebot.example.com"));
    }
}
