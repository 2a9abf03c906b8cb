//! The HTTP surface (docs/operations.md): the webhook, health, metrics, the dashboard and JSON API, release
//! logs, and the built-in reverse proxy in front of them all (requests whose Host is a preview's
//! go to the preview). Also the admin API the CLI uses over a Unix socket in the data dir while
//! the server holds the store.

use std::path::PathBuf;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::store::{DeliveryStatus, EnvRecord, EnvState, Op};
use crate::types::{DeliveryId, EnvId, RepoName, Slug};

/// The public router: webhook, health, metrics, dashboard, API, logs, behind the proxy.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/webhook", post(crate::webhook::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .route("/api/environments", get(api_envs))
        .route("/api/environments/{owner}/{repo}/{slug}", get(api_env))
        .route("/logs/{owner}/{repo}/{slug}/{n}", get(logs))
        .layer(middleware::from_fn_with_state(app.clone(), proxy_first))
        .with_state(app)
}

/// The admin router served on the Unix socket only.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/admin/environments", get(api_envs))
        .route("/admin/environments/{owner}/{repo}/{slug}", get(api_env))
        .route(
            "/admin/environments/{owner}/{repo}/{slug}/teardown",
            post(admin_teardown),
        )
        .route("/admin/deliveries", get(admin_deliveries))
        .route("/admin/deliveries/{id}/replay", post(admin_replay))
        .route("/admin/backup", post(admin_backup))
        .with_state(app)
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn proxy_first(State(app): State<App>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.to_ascii_lowercase());
    let req = match crate::proxy::forward(app.routes(), app.proxy_client(), req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    if let Some(host) = host
        && crate::proxy::is_preview_host(&host, &app.settings().preview_domain)
    {
        return crate::proxy::no_live_environment(&host);
    }
    next.run(req).await
}

async fn readyz(State(app): State<App>) -> Response {
    match app.store().schema_version() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let envs = app.store().envs().unwrap_or_default();
    let count = |s: EnvState| envs.iter().filter(|e| e.state == s).count() as u64;
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
        "state": env.state,
        "url": env.url,
        "branch": env.branch,
        "pr": env.pr,
        "current_release": env.current_release,
        "deploying": env.deploying,
        "last_error": env.last_error,
        "expires_at": env.expires_at,
        "last_activity": env.last_activity,
        "pending_op": env.op.as_ref().map(|op| match op {
            Op::Deploy { sha, .. } => format!("deploy {sha}"),
            Op::Restart { release } => format!("restart #{release}"),
            Op::Teardown { reason, .. } => format!("teardown: {reason}"),
        }),
        "releases": releases,
    })
}

async fn api_envs(State(app): State<App>) -> Response {
    match app.store().envs() {
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
    Path((owner, repo, slug, n)): Path<(String, String, String, String)>,
) -> Response {
    let id = match env_id(&owner, &repo, &slug) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Ok(n) = n.parse::<u32>() else {
        return err(StatusCode::BAD_REQUEST, "release must be a number");
    };
    let (path, _) = app.log_location(&id, n);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(_) => err(
            StatusCode::NOT_FOUND,
            format!("no log for {id} release {n}"),
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn dashboard(State(app): State<App>) -> Response {
    let envs = app.store().envs().unwrap_or_default();
    let mut rows = String::new();
    for e in envs.iter().filter(|e| e.is_active()) {
        let release = e
            .current_release
            .and_then(|n| app.store().release(&e.id, n).ok().flatten());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&e.id.repo.to_string()),
            escape(e.id.slug.as_str()),
            e.kind,
            e.state.as_str(),
            if e.state == EnvState::Live {
                format!("<a href=\"{0}\">{0}</a>", escape(&e.url))
            } else {
                String::new()
            },
            release
                .as_ref()
                .map(|r| format!("#{} <code>{}</code>", r.n, r.sha.short()))
                .unwrap_or_default(),
            e.expires_at
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=7>No environments yet. Open a pull request.</td></tr>");
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>stagebot</title>\
         <style>body{{font:14px system-ui;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style>\
         <h1>stagebot</h1><table><tr><th>Repository</th><th>Environment</th><th>Kind</th><th>State</th><th>URL</th><th>Release</th><th>Expires</th></tr>{rows}</table>\
         <p><a href=\"/api/environments\">JSON</a> · <a href=\"/metrics\">metrics</a></p>"
    ))
    .into_response()
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
