//! An in-process fake of the parts of Sentry's web API stagebot uses, following Sentry's
//! documentation: create a release (`POST /api/0/organizations/{org}/releases/`, `201`, or `208`
//! when the version exists), create a deploy (`POST
//! /api/0/organizations/{org}/releases/{version}/deploys/`, `201`, `404` for an unknown release),
//! list a project's issues (`GET /api/0/projects/{org}/{project}/issues/?query=…`, the search
//! tokens `is:unresolved`, `firstRelease:`, `release:` and `environment:` understood). Every
//! call needs `Authorization: Bearer <token>` (`401` otherwise). It records what it was asked
//! and can be taken down (`503`) to test that Sentry being down changes nothing but the count.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// A release as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRelease {
    pub org: String,
    pub version: String,
    pub projects: Vec<String>,
}

/// A deploy as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeploy {
    pub org: String,
    pub version: String,
    pub environment: String,
    pub name: Option<String>,
    pub url: Option<String>,
}

/// An issue the fake lists.
#[derive(Debug, Clone)]
pub struct FakeIssue {
    pub project: String,
    pub title: String,
    pub environment: String,
    pub first_release: String,
    pub resolved: bool,
}

#[derive(Debug, Default)]
struct FakeState {
    releases: Vec<FakeRelease>,
    deploys: Vec<FakeDeploy>,
    issues: Vec<FakeIssue>,
    issue_queries: Vec<String>,
    down: bool,
}

/// The fake Sentry server, on a loopback port until dropped (its task is aborted).
#[derive(Clone)]
pub struct FakeSentry {
    state: Arc<Mutex<FakeState>>,
    url: String,
    token: String,
    task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<FakeState>>,
    token: String,
}

fn lock(m: &Mutex<FakeState>) -> std::sync::MutexGuard<'_, FakeState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeSentry {
    /// Start on 127.0.0.1 with an ephemeral port; calls must carry `token`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let ctx = Ctx {
            state: state.clone(),
            token: token.to_owned(),
        };
        let app = Router::new()
            .route("/api/0/organizations/{org}/releases/", post(create_release))
            .route(
                "/api/0/organizations/{org}/releases/{version}/deploys/",
                post(create_deploy),
            )
            .route("/api/0/projects/{org}/{project}/issues/", get(list_issues))
            .with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            state,
            url: format!("http://{addr}"),
            token: token.to_owned(),
            task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// `SENTRY_URL` for stagebot.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token calls must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Answer every call `503` (true) or serve again (false).
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// Add an issue to the project's list.
    pub fn add_issue(&self, issue: FakeIssue) {
        lock(&self.state).issues.push(issue);
    }

    pub fn releases(&self) -> Vec<FakeRelease> {
        lock(&self.state).releases.clone()
    }

    pub fn deploys(&self) -> Vec<FakeDeploy> {
        lock(&self.state).deploys.clone()
    }

    /// The `query` of every issue list call, in order.
    pub fn issue_queries(&self) -> Vec<String> {
        lock(&self.state).issue_queries.clone()
    }

    /// Whether the server task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.0.is_finished()
    }
}

/// `401` without the right bearer token, `503` when down.
fn refuse(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    if lock(&ctx.state).down {
        return Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"detail": "down"})),
            )
                .into_response(),
        );
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {}", ctx.token) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"detail": "Invalid token"})),
            )
                .into_response(),
        );
    }
    None
}

async fn create_release(
    State(ctx): State<Ctx>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refuse(&ctx, &headers) {
        return r;
    }
    let Some(version) = body["version"].as_str().filter(|v| !v.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"version": ["This field is required."]})),
        )
            .into_response();
    };
    let projects: Vec<String> = body["projects"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if projects.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"projects": ["This field is required."]})),
        )
            .into_response();
    }
    let mut st = lock(&ctx.state);
    let exists = st
        .releases
        .iter()
        .any(|r| r.org == org && r.version == version);
    let answer = json!({ "version": version, "projects": projects.iter().map(|p| json!({"slug": p})).collect::<Vec<_>>() });
    if exists {
        return (StatusCode::ALREADY_REPORTED, Json(answer)).into_response();
    }
    st.releases.push(FakeRelease {
        org,
        version: version.to_owned(),
        projects,
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn create_deploy(
    State(ctx): State<Ctx>,
    Path((org, version)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refuse(&ctx, &headers) {
        return r;
    }
    let mut st = lock(&ctx.state);
    if !st
        .releases
        .iter()
        .any(|r| r.org == org && r.version == version)
    {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "The requested resource does not exist"})),
        )
            .into_response();
    }
    let Some(environment) = body["environment"].as_str().filter(|e| !e.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"environment": ["This field is required."]})),
        )
            .into_response();
    };
    let deploy = FakeDeploy {
        org,
        version,
        environment: environment.to_owned(),
        name: body["name"].as_str().map(str::to_owned),
        url: body["url"].as_str().map(str::to_owned),
    };
    let id = st.deploys.len() + 1;
    let answer = json!({
        "id": id.to_string(),
        "environment": deploy.environment,
        "name": deploy.name,
        "url": deploy.url,
        "dateStarted": null,
        "dateFinished": chrono::Utc::now().to_rfc3339(),
    });
    st.deploys.push(deploy);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn list_issues(
    State(ctx): State<Ctx>,
    Path((_org, project)): Path<(String, String)>,
    Query(params): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&ctx, &headers) {
        return r;
    }
    // Sentry's default search is `is:unresolved`.
    let query = params
        .get("query")
        .cloned()
        .unwrap_or_else(|| "is:unresolved".into());
    let mut st = lock(&ctx.state);
    st.issue_queries.push(query.clone());
    let list: Vec<Value> = st
        .issues
        .iter()
        .enumerate()
        .filter(|(_, i)| i.project == project)
        .filter(|(_, i)| {
            query
                .split_whitespace()
                .all(|token| match token.split_once(':') {
                    Some(("is", "unresolved")) => !i.resolved,
                    Some(("is", "resolved")) => i.resolved,
                    Some(("firstRelease", r)) | Some(("release", r)) => i.first_release == r,
                    Some(("environment", e)) => i.environment == e,
                    _ => true,
                })
        })
        .map(|(n, i)| {
            json!({
                "id": (n + 1).to_string(),
                "title": i.title,
                "status": if i.resolved { "resolved" } else { "unresolved" },
                "firstRelease": { "version": i.first_release },
            })
        })
        .collect();
    Json(list).into_response()
}
