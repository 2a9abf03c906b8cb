//! The HTTP surface (docs/operations.md): the webhook, health, metrics, the dashboard and JSON API, release
//! logs, and the built-in reverse proxy in front of them all (requests whose Host is a preview's
//! go to the preview). Also the admin API the CLI uses over a Unix socket in the data dir while
//! the server holds the store.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::environment::{EnvRecord, EnvState, Op};
use crate::store::DeliveryStatus;
use crate::types::{DeliveryId, EnvId, RepoName, Slug};

/// The public router: webhook, health, metrics, dashboard, API, logs, behind the proxy.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/webhook", post(crate::webhook::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/environments", get(api_envs))
        .route("/api/environments/{owner}/{repo}/{slug}", get(api_env))
        .route("/logs/{owner}/{repo}/{slug}/{n}", get(logs))
        .route("/api/deliveries", get(api_deliveries))
        .merge(crate::setup::routes::<App>())
        .merge(crate::web::router())
        .layer(axum::Extension(crate::web::WebState::default()))
        // Inside `proxy_first`: stagebot's own answers only, never a preview's.
        .layer(middleware::from_fn(own_page_headers))
        .layer(middleware::from_fn_with_state(app.clone(), proxy_first))
        .layer(axum::Extension(crate::webhook::UnverifiedBudget::new(
            app.settings().max_unverified_bytes,
        )))
        .with_state(app)
}

/// The admin router served on the Unix socket only.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/admin/environments", get(admin_envs))
        .route("/admin/environments/{owner}/{repo}/{slug}", get(admin_env))
        .route(
            "/admin/environments/{owner}/{repo}/{slug}/teardown",
            post(admin_teardown),
        )
        .route("/admin/deliveries", get(admin_deliveries))
        .route("/admin/deliveries/{id}/replay", post(admin_replay))
        .route("/admin/deliveries/summary", get(api_deliveries))
        .route("/admin/backup", post(admin_backup))
        .route("/admin/snapshot", post(crate::services::admin_snapshot))
        .route("/admin/repos/{owner}/{repo}/promote", post(admin_promote))
        .route(
            "/admin/repos/{owner}/{repo}/branch-deploy",
            post(admin_branch_deploy),
        )
        .with_state(app)
}

/// Headers on every answer of stagebot's own (never on a proxied preview's). The previews are
/// usually on sibling subdomains of stagebot's host, so "same-site" for the browser: without
/// these a preview page could frame the dashboard, with the visitor's session cookie sent, and
/// overlay a decoy on its "Promote" button (clickjacking).
async fn own_page_headers(req: axum::extract::Request, next: middleware::Next) -> Response {
    use axum::http::{HeaderValue, header};
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
        );
    }
    resp
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Paths that answer on every host no environment is routed on: the webhook is authenticated by
/// its signature, and health probes send an IP (or anything) as `Host`.
const ANY_HOST: &[&str] = &["/webhook", "/healthz", "/readyz"];

pub use crate::settings::own_hosts;

/// The request's host: the `Host` header, or the authority of an absolute-form URI; lowercase.
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

/// Routed hosts go to their environment; `/webhook` and the probes answer on any other host;
/// stagebot's own pages only on its own host ([`own_hosts`]); everything else is the proxy's
/// 404.
async fn proxy_first(State(app): State<App>, req: Request, next: Next) -> Response {
    let visited = crate::proxy::request_host(&req);
    let req = match crate::proxy::forward(app.routes(), app.proxy_client(), req).await {
        Ok(resp) => {
            // Somebody uses this environment: the sweeper counts it as activity.
            if let Some(h) = visited {
                app.routes().visit(&h, app.now());
            }
            return resp;
        }
        Err(req) => req,
    };
    let host = request_host(&req);
    let own = host
        .as_deref()
        .is_some_and(|h| app.settings().own_hosts.iter().any(|o| o == h));
    if own || ANY_HOST.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    crate::proxy::no_live_environment(host.as_deref().unwrap_or("no Host header"))
}

/// May this viewer see this environment? Private repositories' environments are shown to
/// signed-in users GitHub says can read the repository, and to everybody when the operator made
/// the dashboard public (src/web/mod.rs).
fn visible(app: &App, viewer: &crate::web::Viewer, env: &EnvRecord) -> bool {
    viewer.sees(app, env)
}

/// `{"ready": bool, "checks": {"<name>": {"ok": bool, "detail": "…"}}}`: 200 when ready, 503
/// when not. The store and the services (backups, PostgreSQL) decide readiness; the provider's
/// checks (sandbox, limits) are warnings shown here and on the dashboard.
async fn readyz(State(app): State<App>) -> Response {
    let mut checks = serde_json::Map::new();
    let store = match app.store().schema_version() {
        Ok(v) => (true, format!("schema {v}")),
        Err(e) => (false, e.to_string()),
    };
    // The store and the services' checks (backups, postgres: src/services.rs) decide readiness.
    for (name, (ok, detail)) in std::iter::once(("store", store)).chain(app.service_checks().await)
    {
        checks.insert(name.to_owned(), json!({ "ok": ok, "detail": detail }));
    }
    let ready = checks.values().all(|c| c["ok"] == true);
    // The provider's checks (sandbox, limits) and the sweeper's are warnings: shown, never
    // "not ready".
    for (name, check) in app.provider().checks() {
        checks.insert(name.to_owned(), json!(check));
    }
    checks.insert("sweeper".to_owned(), sweeper_check(&app));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}

/// The sweeper is stuck when its last run is more than three reconcile intervals old.
fn sweeper_check(app: &App) -> serde_json::Value {
    let last = app
        .metrics()
        .sweeper_last_run
        .load(std::sync::atomic::Ordering::Relaxed);
    if last == 0 {
        return json!({ "ok": true, "detail": "not run yet since the start" });
    }
    let ago = u64::try_from(app.now().timestamp())
        .unwrap_or(0)
        .saturating_sub(last);
    let limit = app
        .settings()
        .reconcile_interval
        .as_secs()
        .saturating_mul(3);
    json!({
        "ok": ago <= limit,
        "detail": format!("last run {ago}s ago (every {}s)", app.settings().reconcile_interval.as_secs()),
    })
}

async fn metrics(State(app): State<App>) -> Response {
    let envs = app.store().envs().unwrap_or_default();
    let count = |s: EnvState| envs.iter().filter(|e| e.state() == s).count() as u64;
    let pending = app.store().pending().map(|p| p.len() as u64).unwrap_or(0);
    let gh = app.github().metrics();
    let recovered = app.store().recovered_total().unwrap_or(0);
    let body = app.metrics().render(
        &[
            (
                "stagebot_environments_live",
                "Environments live.",
                count(EnvState::Live),
            ),
            (
                "stagebot_environments_deploying",
                "Environments deploying.",
                count(EnvState::Deploying),
            ),
            (
                "stagebot_environments_failed",
                "Environments failed.",
                count(EnvState::Failed),
            ),
            (
                "stagebot_environments_queued",
                "Previews waiting for capacity.",
                count(EnvState::Queued),
            ),
            (
                "stagebot_inbox_pending",
                "Deliveries waiting in the inbox.",
                pending,
            ),
            (
                "stagebot_sweeper_last_run_timestamp_seconds",
                "When the sweeper last finished a run (Unix time; 0: not yet): alert when it stops moving.",
                app.metrics()
                    .sweeper_last_run
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "stagebot_backup_last_success_timestamp_seconds",
                "When the last scheduled backup was written and verified (Unix time; 0: none yet).",
                app.backup_status()
                    .last_success
                    .map_or(0, |t| t.timestamp().max(0) as u64),
            ),
            (
                "stagebot_proxy_websockets_open",
                "WebSocket connections the proxy carries to environments now.",
                app.proxy_client().open_tunnels() as u64,
            ),
        ],
        &[
            (
                "stagebot_github_calls_total",
                "GitHub API calls made.",
                gh.calls,
            ),
            (
                "stagebot_github_retries_total",
                "GitHub API calls retried.",
                gh.retries,
            ),
            (
                "stagebot_github_failures_total",
                "GitHub API calls that failed for good.",
                gh.failures,
            ),
            (
                "stagebot_deliveries_recovered_total",
                "Deliveries GitHub redelivered at the catch-up's request (they had been lost).",
                recovered,
            ),
            (
                "stagebot_store_flushes_total",
                "Store flushes (group commits: one covers every delivery waiting for it).",
                app.store().flushes(),
            ),
        ],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn env_json(app: &App, env: &EnvRecord) -> serde_json::Value {
    let releases = app.store().releases(&env.id).unwrap_or_default();
    json!({
        "repo": env.id.repo.to_string(),
        "slug": env.id.slug.as_str(),
        "kind": env.kind,
        "state": env.state(),
        "url": env.url,
        "branch": env.branch,
        "pr": env.pr,
        "current_release": env.current_release(),
        "deploying": env.deploying(),
        "last_error": env.last_error,
        "expires_at": env.expires_at(),
        "last_activity": env.last_activity,
        "pending_op": env.op().as_ref().map(|op| match op {
            Op::Deploy { sha, .. } => format!("deploy {sha}"),
            Op::Restart { release } => format!("restart #{release}"),
            Op::Teardown { reason, .. } => format!("teardown: {reason}"),
        }),
        "releases": releases,
    })
}

async fn api_envs(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<crate::web::WebState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let viewer = crate::web::auth::viewer(&app, &web, &headers);
    match app.store().all_envs() {
        Ok(envs) => Json(
            envs.iter()
                .filter(|e| visible(&app, &viewer, e))
                .map(|e| env_json(&app, e))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The admin socket's list: everything, private repositories included (the operator's own).
async fn admin_envs(State(app): State<App>) -> Response {
    match app.store().all_envs() {
        Ok(envs) => {
            Json(envs.iter().map(|e| env_json(&app, e)).collect::<Vec<_>>()).into_response()
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn env_id(owner: &str, repo: &str, slug: &str) -> Result<EnvId, Box<Response>> {
    let bad = |e: crate::types::InvalidValue| Box::new(err(StatusCode::BAD_REQUEST, e.to_string()));
    let repo = RepoName::new(owner, repo).map_err(bad)?;
    let slug = Slug::new(slug).map_err(bad)?;
    Ok(EnvId { repo, slug })
}

async fn api_env(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<crate::web::WebState>,
    headers: axum::http::HeaderMap,
    Path((owner, repo, slug)): Path<(String, String, String)>,
) -> Response {
    let id = match env_id(&owner, &repo, &slug) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let viewer = crate::web::auth::viewer(&app, &web, &headers);
    match app.store().env(&id) {
        // A hidden environment is answered exactly like a missing one.
        Ok(Some(env)) if visible(&app, &viewer, &env) => Json(env_json(&app, &env)).into_response(),
        Ok(_) => err(StatusCode::NOT_FOUND, format!("no environment {id}")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The admin socket's view of one environment, private or not.
async fn admin_env(
    State(app): State<App>,
    Path((owner, repo, slug)): Path<(String, String, String)>,
) -> Response {
    let id = match env_id(&owner, &repo, &slug) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match app.store().env(&id) {
        Ok(Some(env)) => Json(env_json(&app, &env)).into_response(),
        Ok(None) => err(StatusCode::NOT_FOUND, format!("no environment {id}")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn logs(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<crate::web::WebState>,
    headers: axum::http::HeaderMap,
    Path((owner, repo, slug, n)): Path<(String, String, String, String)>,
) -> Response {
    let viewer = crate::web::auth::viewer(&app, &web, &headers);
    let id = match env_id(&owner, &repo, &slug) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Ok(n) = n.parse::<u32>() else {
        return err(StatusCode::BAD_REQUEST, "release must be a number");
    };
    let not_found = || {
        err(
            StatusCode::NOT_FOUND,
            format!("no log for {id} release {n}"),
        )
    };
    match app.store().env(&id) {
        Ok(Some(env)) if visible(&app, &viewer, &env) => {}
        // Private (or missing: answered alike) for an anonymous visitor: through sign-in and
        // back to this log.
        Ok(_) if viewer.session.is_none() && app.oauth_app().is_some() => {
            let here = format!(
                "/logs/{}/{}/{}/{n}",
                crate::web::percent(id.repo.owner()),
                crate::web::percent(id.repo.name()),
                crate::web::percent(id.slug.as_str())
            );
            return axum::response::Redirect::to(&crate::web::auth::login_url(&here))
                .into_response();
        }
        Ok(_) => return not_found(),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let (path, _) = app.log_location(&id, n);
    match LogTail::open(&path, LOG_TAIL_BYTES).await {
        Ok(tail) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            axum::body::Body::new(tail),
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// `/logs` shows at most this much of the end of a release's log.
pub const LOG_TAIL_BYTES: u64 = 1024 * 1024;

/// The end of a release log (its previous segment too, when the current one is short), streamed
/// in 64 KiB chunks: memory stays flat however large the file.
struct LogTail {
    note: Option<axum::body::Bytes>,
    segments: VecDeque<(tokio::fs::File, u64)>,
    buf: Box<[u8]>,
}

impl LogTail {
    async fn open(path: &std::path::Path, max: u64) -> std::io::Result<Self> {
        use tokio::io::AsyncSeekExt;
        let current = tokio::fs::File::open(path).await?;
        let len = current.metadata().await?.len();
        let mut segments = VecDeque::new();
        let mut want = max;
        let mut cut = false;
        let previous = crate::provider::process::previous_segment(path);
        if len < max
            && let Ok(mut prev) = tokio::fs::File::open(&previous).await
        {
            let prev_len = prev.metadata().await?.len();
            let take = prev_len.min(max - len);
            prev.seek(std::io::SeekFrom::Start(prev_len - take)).await?;
            segments.push_back((prev, take));
            want -= take;
            // Rotated at least once: what came before the previous segment is gone.
            cut = true;
        }
        let mut current = current;
        let take = len.min(want);
        if take < len {
            cut = true;
        }
        current.seek(std::io::SeekFrom::Start(len - take)).await?;
        segments.push_back((current, take));
        let note = cut.then(|| {
            axum::body::Bytes::from(format!(
                "[stagebot: the end of the log, at most its last {} KiB; earlier output is not shown]\n",
                max / 1024
            ))
        });
        Ok(Self {
            note,
            segments,
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
        })
    }
}

impl hyper::body::Body for LogTail {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        if let Some(note) = this.note.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(note))));
        }
        loop {
            let Some((file, remaining)) = this.segments.front_mut() else {
                return Poll::Ready(None);
            };
            let want = usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(this.buf.len());
            if want == 0 {
                this.segments.pop_front();
                continue;
            }
            let mut read = tokio::io::ReadBuf::new(&mut this.buf[..want]);
            match Pin::new(file).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) => {
                    let got = read.filled().len();
                    if got == 0 {
                        // Shorter than it was (truncated or rotated meanwhile): next segment.
                        this.segments.pop_front();
                        continue;
                    }
                    *remaining -= got as u64;
                    let chunk = axum::body::Bytes::copy_from_slice(read.filled());
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))));
                }
            }
        }
    }
}

async fn admin_teardown(
    State(app): State<App>,
    Path((owner, repo, slug)): Path<(String, String, String)>,
) -> Response {
    let id = match env_id(&owner, &repo, &slug) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match app.request_teardown(&id, "stagebot env teardown (operator)") {
        Ok(true) => (
            StatusCode::ACCEPTED,
            Json(json!({ "teardown": id.to_string() })),
        )
            .into_response(),
        Ok(false) => err(StatusCode::NOT_FOUND, format!("no active environment {id}")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    #[serde(default)]
    failed: bool,
}

async fn admin_deliveries(State(app): State<App>, Query(q): Query<DeliveriesQuery>) -> Response {
    match app.store().deliveries() {
        Ok(list) => Json(
            list.into_iter()
                .filter(|d| !q.failed || d.is_failing() || d.status == DeliveryStatus::Dead)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `{"recovered_total": n}`: deliveries GitHub redelivered at the catch-up's request since the
/// store was created (`stagebot_deliveries_recovered_total`; src/catchup.rs). Counts only, so
/// the public API shows nothing of private repositories.
async fn api_deliveries(State(app): State<App>) -> Response {
    match app.store().recovered_total() {
        Ok(n) => Json(json!({ "recovered_total": n })).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn admin_replay(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = DeliveryId::new(&id) else {
        return err(StatusCode::BAD_REQUEST, "bad delivery id");
    };
    match app.store().replay_delivery(&id) {
        Ok(rec) => {
            app.wake_worker();
            Json(rec).into_response()
        }
        Err(e) => err(StatusCode::CONFLICT, e.to_string()),
    }
}

#[derive(Deserialize)]
struct BackupBody {
    path: PathBuf,
}

async fn admin_backup(State(app): State<App>, Json(body): Json<BackupBody>) -> Response {
    match app.store().backup(&body.path) {
        Ok(summary) => {
            Json(json!({ "path": body.path, "entries": summary.entries, "bytes": summary.bytes }))
                .into_response()
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct PromoteBody {
    from: String,
    release: Option<u32>,
}

/// `stagebot promote`: the operator's promotion to production (docs/commands.md).
async fn admin_promote(
    State(app): State<App>,
    Path((owner, repo)): Path<(String, String)>,
    Json(body): Json<PromoteBody>,
) -> Response {
    let id = match env_id(&owner, &repo, &body.from) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    operator_answer(app.operator_promote(&id.repo, &id.slug, body.release).await)
}

#[derive(Deserialize)]
struct BranchDeployBody {
    branch: String,
}

/// `stagebot env deploy --branch`: a branch environment by hand (docs/commands.md).
async fn admin_branch_deploy(
    State(app): State<App>,
    Path((owner, repo)): Path<(String, String)>,
    Json(body): Json<BranchDeployBody>,
) -> Response {
    let repo = match RepoName::new(&owner, &repo) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let branch = body.branch.trim();
    if branch.is_empty() || branch.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return err(StatusCode::BAD_REQUEST, "invalid branch name");
    }
    operator_answer(app.operator_deploy_branch(&repo, branch).await)
}

fn operator_answer(
    result: Result<crate::pipeline::Started, crate::pipeline::OperatorError>,
) -> Response {
    use crate::pipeline::OperatorError as E;
    match result {
        Ok(started) => (StatusCode::ACCEPTED, Json(json!(started))).into_response(),
        Err(e @ E::Refused(_)) => err(StatusCode::CONFLICT, e.to_string()),
        Err(e @ E::NoBranch(_)) => err(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => err(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn own_hosts_follow_the_public_url_or_the_listen_address() {
        assert_eq!(
            own_hosts(Some("https://Stagebot.Example.com/"), None),
            ["stagebot.example.com:443", "stagebot.example.com"]
        );
        assert_eq!(
            own_hosts(Some("http://bot.example.com"), None),
            ["bot.example.com:80", "bot.example.com"]
        );
        assert_eq!(
            own_hosts(Some("https://bot.example.com:8443"), None),
            ["bot.example.com:8443"]
        );
        let listen: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        assert_eq!(
            own_hosts(None, Some(listen)),
            ["0.0.0.0:3000", "localhost:3000", "127.0.0.1:3000"]
        );
        // The public URL wins over the listen address.
        assert_eq!(
            own_hosts(Some("http://127.0.0.1:3000"), Some(listen)),
            ["127.0.0.1:3000"]
        );
        assert!(own_hosts(Some("not a url"), Some(listen)).is_empty());
        assert!(own_hosts(Some("/relative"), None).is_empty());
        assert!(own_hosts(Some("stagebot.example.com"), None).is_empty());
        assert!(own_hosts(Some("ftp://stagebot.example.com"), None).is_empty());
    }
}
