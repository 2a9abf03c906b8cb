//! The fake's HTTP side: one handler that authenticates, routes by path segments, answers in
//! GitHub's shapes and records every exchange.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Value, json};

use super::chaos::{ChaosFault, ChaosKind};
use super::{
    DeploymentEntry, FakeComment, FakeDeployment, FakeDeploymentStatus, FakeGitHub, FakePr,
    FakeStatus, FaultKind, IssuedToken, JWT_LEEWAY_SECS, Reaction, RecordedRequest, RepoEntry,
    State, StatusEntry,
};
use crate::types::Permission;

pub(super) mod manifest;

pub(super) fn router(fake: FakeGitHub) -> Router {
    Router::new()
        .merge(super::oauth::router())
        .fallback(handle)
        .with_state(fake)
}

/// An answer before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Value,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    fn created(body: Value) -> Self {
        Self::json(StatusCode::CREATED, body)
    }

    fn error(status: StatusCode, message: &str) -> Self {
        Self::json(
            status,
            json!({ "message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_str() }),
        )
    }

    fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "Not Found")
    }

    fn unprocessable(message: &str) -> Self {
        Self::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "message": "Validation Failed",
                "errors": [{ "resource": "Request", "code": "invalid", "message": message }],
                "documentation_url": "https://docs.github.com/rest",
                "status": "422",
            }),
        )
    }

    fn header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.append(name, v);
            }
        }
        (self.status, headers, axum::Json(self.body)).into_response()
    }
}

type Outcome = Result<Reply, Reply>;

async fn handle(
    AxState(fake): AxState<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let mut released = fake.shared.released.subscribe();
    let fault = take_fault(&mut fake.state(), &method, &path);
    let fault = match fault {
        Some(FaultKind::Delay { ms }) => {
            // A slow GitHub: hold the answer back, then serve it normally.
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            None
        }
        other => other,
    };
    // The chaos run's seeded faults (chaos.rs), for requests no explicit fault took.
    let chaos = match fault {
        None => chaos_decision(&fake, &method, &path, query.as_deref()),
        Some(_) => None,
    };
    if let Some((
        ChaosFault {
            kind: ChaosKind::Timeout,
            applied: false,
        },
        hang,
    )) = chaos
    {
        // No answer in time, and the request never reached GitHub.
        tokio::time::sleep(hang).await;
    }
    let (reply, stall) = {
        let mut st = fake.state();
        let reply = match (fault, chaos) {
            (
                None,
                Some((
                    ChaosFault {
                        kind,
                        applied: false,
                    },
                    _,
                )),
            ) => chaos_reply(kind),
            (
                None,
                Some((
                    ChaosFault {
                        kind,
                        applied: true,
                    },
                    _,
                )),
            ) => {
                let req = Req {
                    fake: &fake,
                    method: &method,
                    path: &path,
                    params: parse_query(query.as_deref()),
                    headers: &headers,
                    body: &body,
                };
                let served = route(&mut st, &req).unwrap_or_else(|e| e);
                match kind {
                    // Applied; the answer is held back below until the client gave up.
                    ChaosKind::Timeout => served,
                    kind => chaos_reply(kind),
                }
            }
            (fault @ (Some(FaultKind::ServedThen502) | None), _) => {
                let req = Req {
                    fake: &fake,
                    method: &method,
                    path: &path,
                    params: parse_query(query.as_deref()),
                    headers: &headers,
                    body: &body,
                };
                let served = route(&mut st, &req).unwrap_or_else(|e| e);
                match fault {
                    // Applied, but the answer is lost on the way back.
                    Some(kind) => fault_reply(&kind),
                    None => served,
                }
            }
            (Some(kind), _) => fault_reply(&kind),
        };
        let stall = st
            .stalls
            .iter()
            .position(|s| s.method == method && s.path == path);
        if let Some(i) = stall {
            st.stalls[i].times -= 1;
            if st.stalls[i].times == 0 {
                st.stalls.remove(i);
            }
        }
        st.requests.push(RecordedRequest {
            method: method.to_string(),
            path,
            query,
            status: reply.status.as_u16(),
            body,
        });
        if stall.is_some() {
            st.stalled += 1;
        }
        for out in std::mem::take(&mut st.outbox) {
            tokio::spawn(super::send_outgoing(fake.clone(), out));
        }
        (reply, stall)
    };
    if let Some((
        ChaosFault {
            kind: ChaosKind::Timeout,
            applied: true,
        },
        hang,
    )) = chaos
    {
        // Applied and recorded; the answer comes after the client stopped waiting.
        tokio::time::sleep(hang).await;
    }
    if stall.is_some() {
        // Applied and recorded; the answer waits until the test releases it.
        tracing::debug!(%method, path = %uri.path(), "fake GitHub holds its answer back");
        let _ = released.changed().await;
        let mut st = fake.state();
        st.stalled = st.stalled.saturating_sub(1);
        drop(st);
    }
    tracing::debug!(%method, path = %uri.path(), status = reply.status.as_u16(), "fake GitHub answered");
    reply
}

fn take_fault(st: &mut State, method: &Method, path: &str) -> Option<FaultKind> {
    let i = st.faults.iter().position(|f| {
        path.starts_with(&f.path_prefix) && f.method.as_ref().is_none_or(|m| m == method)
    })?;
    let fault = &mut st.faults[i];
    let kind = fault.kind.clone();
    fault.times = fault.times.saturating_sub(1);
    if fault.times == 0 {
        st.faults.remove(i);
    }
    Some(kind)
}

/// The chaos run's decision for this request and how long a timeout holds its answer.
fn chaos_decision(
    fake: &FakeGitHub,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<(ChaosFault, std::time::Duration)> {
    let mut st = fake.state();
    let chaos = st.chaos.as_mut()?;
    let hang = chaos.chaos.hang;
    chaos
        .decide(method.as_str(), path, query)
        .map(|fault| (fault, hang))
}

fn chaos_reply(kind: ChaosKind) -> Reply {
    match kind {
        ChaosKind::Status500 => fault_reply(&FaultKind::Status500),
        ChaosKind::Status502 => fault_reply(&FaultKind::ServedThen502),
        ChaosKind::SecondaryRateLimit => {
            fault_reply(&FaultKind::SecondaryRateLimit403 { retry_after_s: 1 })
        }
        // Nobody reads it: the client gave up waiting.
        ChaosKind::Timeout => Reply::error(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
    }
}

fn fault_reply(kind: &FaultKind) -> Reply {
    match kind {
        FaultKind::Status500 => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error"),
        FaultKind::TooMany429 { retry_after_s } => {
            Reply::error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
                .header(http::header::RETRY_AFTER, retry_after_s.to_string())
        }
        FaultKind::SecondaryRateLimit403 { retry_after_s } => Reply::error(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        )
        .header(http::header::RETRY_AFTER, retry_after_s.to_string()),
        FaultKind::Unprocessable422 => Reply::unprocessable("injected fault"),
        // Taken care of in `handle`: a delay is served normally after it.
        FaultKind::Delay { .. } => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "delay"),
        FaultKind::ServedThen502 => Reply::error(StatusCode::BAD_GATEWAY, "Bad Gateway"),
    }
}

struct Req<'a> {
    fake: &'a FakeGitHub,
    method: &'a Method,
    path: &'a str,
    params: HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a Value,
}

impl Req<'_> {
    fn str_field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }

    fn bool_field(&self, name: &str) -> Option<bool> {
        self.body.get(name).and_then(Value::as_bool)
    }

    fn credential(&self) -> Option<&str> {
        let value = self
            .headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, credential) = value.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            .then(|| credential.trim())
    }
}

fn route(st: &mut State, req: &Req<'_>) -> Outcome {
    // GitHub Enterprise Server serves the API under /api/v3; accept both layouts.
    let path = req.path.strip_prefix("/api/v3").unwrap_or(req.path);
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = req.method;
    match s.as_slice() {
        ["app", "installations", id, "access_tokens"] if m == Method::POST => {
            verify_jwt(req)?;
            access_token(st, req, id)
        }
        ["repos", owner, name, "installation"] if m == Method::GET => {
            verify_jwt(req)?;
            let repo = find_repo(st, owner, name).ok_or_else(Reply::not_found)?;
            let account = st.installations.get(&repo.installation_id).cloned();
            let account = account.ok_or_else(Reply::not_found)?;
            Ok(Reply::ok(json!({
                "id": repo.installation_id,
                "app_id": req.fake.app_id(),
                "app_slug": super::FAKE_APP_SLUG,
                "account": { "login": account, "id": 1, "type": "Organization" },
                "target_type": "Organization",
                "repository_selection": "selected",
                "permissions": app_permissions(),
                "events": ["pull_request", "push", "issue_comment"],
            })))
        }
        ["app", "hook", "deliveries"] if m == Method::GET => {
            verify_jwt(req)?;
            Ok(hook_deliveries(st, req))
        }
        ["app", "hook", "deliveries", id, "attempts"] if m == Method::POST => {
            verify_jwt(req)?;
            redeliver(st, id)
        }
        ["app", "installations"] if m == Method::GET => {
            verify_jwt(req)?;
            let items = st
                .installations
                .iter()
                .map(|(id, account)| {
                    json!({
                        "id": id,
                        "app_id": req.fake.app_id(),
                        "app_slug": super::FAKE_APP_SLUG,
                        "account": user_json(account, false),
                        "target_type": "Organization",
                        "repository_selection": "selected",
                        "permissions": app_permissions(),
                        "events": ["pull_request", "push", "issue_comment"],
                        "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", req.fake.url()),
                        "repositories_url": format!("{}/installation/repositories", req.fake.url()),
                        "html_url": format!("https://github.com/organizations/{account}/settings/installations/{id}"),
                        "target_id": 1,
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z",
                        "single_file_name": null,
                        "suspended_at": null,
                        "suspended_by": null,
                    })
                })
                .collect();
            Ok(paginate(req, items))
        }
        ["installation", "repositories"] if m == Method::GET => {
            let installation = authorize_installation(st, req)?;
            let repos: Vec<Value> = st
                .repos
                .values()
                .filter(|r| r.installation_id == installation)
                .map(|r| {
                    json!({
                        "id": r.id,
                        "name": r.name.name(),
                        "full_name": r.name.to_string(),
                        "private": true,
                        "default_branch": r.default_branch,
                        "clone_url": r.clone_url.clone().unwrap_or_else(|| format!("https://github.com/{}.git", r.name)),
                        "owner": user_json(r.name.owner(), false),
                    })
                })
                .collect();
            let total = repos.len();
            let page = paginate(req, repos);
            // GitHub wraps this list in an object.
            let body = json!({ "total_count": total, "repository_selection": "selected", "repositories": page.body });
            Ok(Reply { body, ..page })
        }
        ["repos", owner, name, rest @ ..] => {
            let repo_key = authorize_repo(st, req, owner, name)?;
            repo_route(st, req, &repo_key, rest)
        }
        // The manifest flow (server/manifest.rs): GitHub's web page, then the conversion.
        ["settings", "apps", "new"] if m == Method::POST => manifest::new_app(req, None),
        ["organizations", org, "settings", "apps", "new"] if m == Method::POST => {
            manifest::new_app(req, Some(org))
        }
        ["app-manifests", code, "conversions"] if m == Method::POST => manifest::convert(req, code),
        _ => Err(Reply::not_found()),
    }
}

fn app_permissions() -> Value {
    json!({
        "contents": "read", "pull_requests": "write", "issues": "write",
        "statuses": "write", "deployments": "write", "metadata": "read", "checks": "read",
    })
}

fn find_repo<'a>(st: &'a State, owner: &str, name: &str) -> Option<&'a RepoEntry> {
    st.repos
        .get(&format!("{owner}/{name}").to_ascii_lowercase())
}

/// The app JWT rules GitHub applies (RS256, our key, `iss`, lifetime ≤ 10 min).
fn verify_jwt(req: &Req<'_>) -> Result<(), Reply> {
    let unauthorized = |m: &str| Reply::error(StatusCode::UNAUTHORIZED, m);
    let token = req
        .credential()
        .ok_or_else(|| unauthorized("A JSON web token could not be decoded"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let app = req.fake.identity();
    let data = jsonwebtoken::decode::<Value>(token, &app.key, &validation)
        .map_err(|_| unauthorized("A JSON web token could not be decoded"))?;
    let claims = data.claims;
    let iss_ok = match claims.get("iss") {
        Some(Value::String(s)) => s == &app.id.to_string(),
        Some(Value::Number(n)) => n.as_u64() == Some(app.id),
        _ => false,
    };
    if !iss_ok {
        return Err(unauthorized(
            "'Issuer' claim ('iss') must be an Integer or the app's client ID",
        ));
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(unauthorized("'iat' and 'exp' claims are required"));
    };
    let now = Utc::now().timestamp();
    if exp <= now {
        return Err(unauthorized(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ));
    }
    if iat > now + JWT_LEEWAY_SECS {
        return Err(unauthorized(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ));
    }
    if exp - iat > 600 + JWT_LEEWAY_SECS || exp > now + 600 + JWT_LEEWAY_SECS {
        return Err(unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(())
}

fn access_token(st: &mut State, req: &Req<'_>, id: &str) -> Outcome {
    let id: u64 = id.parse().map_err(|_| Reply::not_found())?;
    let Some(account) = st.installations.get(&id).cloned() else {
        return Err(Reply::not_found());
    };
    // GitHub's optional scoping: `repositories` (names in the installation's account),
    // `repository_ids`, and `permissions` no wider than the app's.
    if req.body.get("repository_ids").is_some() {
        return Err(Reply::unprocessable(
            "repository_ids is not supported by the fake; use repositories",
        ));
    }
    let repositories = match req.body.get("repositories") {
        None | Some(Value::Null) => None,
        Some(Value::Array(names)) => {
            let mut keys = Vec::new();
            for name in names {
                let name = name
                    .as_str()
                    .ok_or_else(|| Reply::unprocessable("repositories must be names"))?;
                let repo = find_repo(st, &account, name)
                    .filter(|r| r.installation_id == id)
                    .ok_or_else(|| {
                        Reply::unprocessable(&format!(
                            "There is at least one repository that does not exist or is not accessible to the parent installation: {name}"
                        ))
                    })?;
                keys.push(repo.name.to_string().to_ascii_lowercase());
            }
            Some(keys)
        }
        Some(_) => return Err(Reply::unprocessable("repositories must be an array")),
    };
    let permissions = match req.body.get("permissions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(asked)) => {
            let app = app_permissions();
            for (name, level) in asked {
                let granted = app.get(name).and_then(Value::as_str);
                let ok = matches!(
                    (level.as_str(), granted),
                    (Some("read"), Some("read" | "write")) | (Some("write"), Some("write"))
                );
                if !ok {
                    return Err(Reply::unprocessable(&format!(
                        "The permissions requested are not granted to this installation: {name}"
                    )));
                }
            }
            Some(asked.clone())
        }
        Some(_) => return Err(Reply::unprocessable("permissions must be an object")),
    };
    let shown_permissions = permissions
        .clone()
        .map(Value::Object)
        .unwrap_or_else(app_permissions);
    let token: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(36)
        .collect();
    let token = format!("ghs_{token}");
    let expires_at = Utc::now()
        + chrono::Duration::from_std(st.token_lifetime).unwrap_or(chrono::Duration::hours(1));
    st.tokens.insert(
        token.clone(),
        IssuedToken {
            installation_id: id,
            expires_at,
            repositories,
            permissions,
        },
    );
    Ok(Reply::created(json!({
        "token": token,
        "expires_at": ts(expires_at),
        "permissions": shown_permissions,
        "repository_selection": "selected",
    })))
}

/// The delivery log, newest first, cursor-paginated like GitHub (`per_page` ≤ 100, default 30;
/// `cursor` from the `Link` header's `next`).
fn hook_deliveries(st: &State, req: &Req<'_>) -> Reply {
    let per_page = req
        .params
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    // The cursor is opaque to clients; here it is `v1_<id>`: start at entries with id ≤ it.
    let start = req
        .params
        .get("cursor")
        .and_then(|c| c.strip_prefix("v1_"))
        .and_then(|c| c.parse::<u64>().ok());
    let mut entries = st
        .hook_log
        .iter()
        .rev()
        .filter(|d| start.is_none_or(|s| d.id <= s));
    let page: Vec<Value> = entries
        .by_ref()
        .take(per_page)
        .map(|d| {
            json!({
                "id": d.id,
                "guid": d.guid,
                "delivered_at": ts(d.delivered_at),
                "redelivery": d.redelivery,
                "duration": 0.12,
                "status": d.status,
                "status_code": d.status_code,
                "event": d.event,
                "action": d.action,
                "installation_id": d.installation_id,
                "repository_id": d.repository_id,
            })
        })
        .collect();
    let reply = Reply::ok(Value::Array(page));
    match entries.next() {
        Some(next) => reply.header(
            http::header::LINK,
            format!(
                "<{}{}?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                req.fake.url(),
                req.path,
                next.id
            ),
        ),
        None => reply,
    }
}

/// `POST /app/hook/deliveries/{id}/attempts`: 202, then the payload is sent again (same GUID).
fn redeliver(st: &mut State, id: &str) -> Outcome {
    let id: u64 = id.parse().map_err(|_| Reply::not_found())?;
    let entry = st
        .hook_log
        .iter()
        .find(|d| d.id == id)
        .cloned()
        .ok_or_else(Reply::not_found)?;
    if let Some(target) = st.webhook_target.clone() {
        st.outbox.push(super::Outgoing {
            target,
            guid: entry.guid,
            event: entry.event,
            payload: entry.payload,
        });
    }
    Ok(Reply::json(StatusCode::ACCEPTED, json!({})))
}

/// The installation an installation token stands for; else 401 as GitHub.
fn authorize_installation(st: &State, req: &Req<'_>) -> Result<u64, Reply> {
    let credential = req
        .credential()
        .ok_or_else(|| Reply::error(StatusCode::UNAUTHORIZED, "Requires authentication"))?;
    st.tokens
        .get(credential)
        .filter(|t| t.expires_at > Utc::now())
        .map(|t| t.installation_id)
        .ok_or_else(|| Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials"))
}

/// An installation token that covers the repository → its key; else 401/404 as GitHub.
fn authorize_repo(st: &State, req: &Req<'_>, owner: &str, name: &str) -> Result<String, Reply> {
    let Some(credential) = req.credential() else {
        return Err(Reply::error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    };
    let token = st
        .tokens
        .get(credential)
        .filter(|t| t.expires_at > Utc::now())
        .ok_or_else(|| Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials"))?;
    let repo = find_repo(st, owner, name)
        .filter(|r| r.installation_id == token.installation_id)
        .ok_or_else(Reply::not_found)?;
    let key = repo.name.to_string().to_ascii_lowercase();
    // A token scoped to other repositories does not see this one (GitHub answers 404).
    if let Some(repos) = &token.repositories
        && !repos.contains(&key)
    {
        return Err(Reply::not_found());
    }
    if let Some(granted) = &token.permissions {
        let path = req.path.strip_prefix("/api/v3").unwrap_or(req.path);
        let rest: Vec<&str> = path.split('/').skip(4).collect();
        let needed = match rest.first().copied() {
            Some("contents" | "git" | "commits" | "branches") => "contents",
            Some("issues") => "issues",
            Some("pulls") => "pull_requests",
            Some("statuses") => "statuses",
            Some("deployments") => "deployments",
            _ => "metadata",
        };
        let write = *req.method != Method::GET && *req.method != Method::HEAD;
        let ok = match granted.get(needed).and_then(Value::as_str) {
            Some("write") => true,
            Some("read") => !write,
            _ => needed == "metadata" && !write,
        };
        if !ok {
            return Err(Reply::error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            ));
        }
    }
    Ok(key)
}

fn repo_route(st: &mut State, req: &Req<'_>, repo: &str, rest: &[&str]) -> Outcome {
    let m = req.method;
    let num = |s: &str| s.parse::<u64>().map_err(|_| Reply::not_found());
    match rest {
        ["issues", n, "comments"] if m == Method::GET => {
            let n = num(n)?;
            pr(st, repo, n)?;
            let items = st
                .comments
                .values()
                .filter(|(r, c)| r == repo && c.pr.0 == n)
                .map(|(_, c)| comment_json(req, repo, c))
                .collect();
            Ok(paginate(req, items))
        }
        ["issues", n, "comments"] if m == Method::POST => {
            let n = num(n)?;
            pr(st, repo, n)?;
            let body = req
                .str_field("body")
                .ok_or_else(|| Reply::unprocessable("body is missing"))?;
            let id = st.id();
            let now = Utc::now();
            let comment = FakeComment {
                id,
                pr: crate::types::PrNumber(n),
                author: req.fake.app_login(),
                by_app: true,
                body: body.to_owned(),
                created_at: now,
                updated_at: now,
            };
            let answer = comment_json(req, repo, &comment);
            st.comments.insert(id, (repo.to_owned(), comment));
            Ok(Reply::created(answer).header(
                http::header::LOCATION,
                format!("{}/repos/{repo}/issues/comments/{id}", req.fake.url()),
            ))
        }
        ["issues", "comments", id] if m == Method::GET => {
            let c = comment(st, repo, num(id)?)?;
            Ok(Reply::ok(comment_json(req, repo, c)))
        }
        ["issues", "comments", id] if m == Method::PATCH => {
            let body = req
                .str_field("body")
                .ok_or_else(|| Reply::unprocessable("body is missing"))?
                .to_owned();
            let id = num(id)?;
            comment(st, repo, id)?;
            let c = match st.comments.get_mut(&id) {
                Some((_, c)) => c,
                None => return Err(Reply::not_found()),
            };
            c.body = body;
            c.updated_at = Utc::now();
            Ok(Reply::ok(comment_json(req, repo, c)))
        }
        ["issues", "comments", id, "reactions"] if m == Method::POST => {
            let id = num(id)?;
            comment(st, repo, id)?;
            let content = req.str_field("content").unwrap_or_default().to_owned();
            const VALID: [&str; 8] = [
                "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
            ];
            if !VALID.contains(&content.as_str()) {
                return Err(Reply::unprocessable("content is not a valid reaction"));
            }
            let user = req.fake.app_login();
            let new_id = st.id();
            let reactions = st.reactions.entry(id).or_default();
            if let Some(r) = reactions
                .iter()
                .find(|r| r.content == content && r.user == user)
            {
                return Ok(Reply::ok(reaction_json(r)));
            }
            let r = Reaction {
                id: new_id,
                content,
                user,
                created_at: Utc::now(),
            };
            let answer = reaction_json(&r);
            reactions.push(r);
            Ok(Reply::created(answer))
        }
        ["issues", "comments", id, "reactions"] if m == Method::GET => {
            let id = num(id)?;
            comment(st, repo, id)?;
            let items = st
                .reactions
                .get(&id)
                .map(|rs| rs.iter().map(reaction_json).collect())
                .unwrap_or_default();
            Ok(paginate(req, items))
        }
        ["statuses", sha] if m == Method::POST => {
            let state = req.str_field("state").unwrap_or_default();
            if !["error", "failure", "pending", "success"].contains(&state) {
                return Err(Reply::unprocessable("state is not included in the list"));
            }
            let description = req.str_field("description").unwrap_or_default();
            if description.chars().count() > 140 {
                return Err(Reply::unprocessable(
                    "description is too long (maximum is 140 characters)",
                ));
            }
            let status = FakeStatus {
                state: state.to_owned(),
                context: req.str_field("context").unwrap_or("default").to_owned(),
                description: description.to_owned(),
                target_url: req.str_field("target_url").map(str::to_owned),
            };
            let entry = StatusEntry {
                id: st.id(),
                repo: repo.to_owned(),
                sha: sha.to_ascii_lowercase(),
                status,
                created_at: Utc::now(),
            };
            let answer = status_json(req, &entry);
            st.statuses.push(entry);
            Ok(Reply::created(answer))
        }
        [] if m == Method::GET => {
            let entry = st.repos.get(repo).ok_or_else(Reply::not_found)?;
            let full_name = entry.name.to_string();
            Ok(Reply::ok(json!({
                "id": entry.id,
                "name": entry.name.name(),
                "full_name": full_name,
                "private": false,
                "fork": false,
                "default_branch": entry.default_branch,
                "clone_url": entry.clone_url.clone().unwrap_or_else(|| format!("https://github.com/{full_name}.git")),
                "owner": user_json(entry.name.owner(), false),
            })))
        }
        ["branches", branch] if m == Method::GET => {
            let branch = percent_decode(branch);
            let sha = st
                .branches
                .get(&(repo.to_owned(), branch.clone()))
                .ok_or_else(Reply::not_found)?;
            Ok(Reply::ok(json!({
                "name": branch,
                "commit": { "sha": sha.as_str(), "url": format!("{}/repos/{repo}/commits/{}", req.fake.url(), sha.as_str()) },
                "protected": false,
            })))
        }
        ["commits", git_ref, "check-runs"] if m == Method::GET => {
            if st.checks_denied {
                return Err(Reply::error(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                ));
            }
            let shas = resolve_ref(st, repo, git_ref);
            let runs: Vec<Value> = shas
                .iter()
                .filter_map(|s| st.check_runs.get(&(repo.to_owned(), s.clone())))
                .flatten()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "name": r.name,
                        "head_sha": git_ref,
                        "status": r.status,
                        "conclusion": r.conclusion,
                    })
                })
                .collect();
            Ok(Reply::ok(
                json!({ "total_count": runs.len(), "check_runs": runs }),
            ))
        }
        ["commits", git_ref, "status"] if m == Method::GET => {
            let shas = resolve_ref(st, repo, git_ref);
            // The newest status of each context, like GitHub's combined status.
            let mut newest: Vec<&StatusEntry> = Vec::new();
            for s in st
                .statuses
                .iter()
                .rev()
                .filter(|s| s.repo == repo && shas.contains(&s.sha))
            {
                if !newest.iter().any(|n| n.status.context == s.status.context) {
                    newest.push(s);
                }
            }
            let state = if newest
                .iter()
                .any(|s| matches!(s.status.state.as_str(), "failure" | "error"))
            {
                "failure"
            } else if !newest.is_empty() && newest.iter().all(|s| s.status.state == "success") {
                "success"
            } else {
                "pending"
            };
            let statuses: Vec<Value> = newest.iter().map(|s| status_json(req, s)).collect();
            Ok(Reply::ok(json!({
                "state": state,
                "sha": git_ref,
                "total_count": statuses.len(),
                "statuses": statuses,
            })))
        }
        ["commits", git_ref, "statuses"] if m == Method::GET => {
            let shas = resolve_ref(st, repo, git_ref);
            let items = st
                .statuses
                .iter()
                .rev()
                .filter(|s| s.repo == repo && shas.contains(&s.sha))
                .map(|s| status_json(req, s))
                .collect();
            Ok(paginate(req, items))
        }
        ["deployments"] if m == Method::POST => create_deployment(st, req, repo),
        ["deployments"] if m == Method::GET => {
            let items = st
                .deployments
                .iter()
                .rev()
                .filter(|(_, d)| d.repo == repo)
                .filter(|(_, d)| {
                    let matches = |param: &str, value: &str| {
                        req.params.get(param).is_none_or(|want| want == value)
                    };
                    // GitHub's filters: exact matches; `sha` is the commit, `ref` the ref as
                    // given when the deployment was created.
                    matches("environment", &d.deployment.environment)
                        && matches("sha", &d.deployment.sha)
                        && matches("ref", &d.deployment.git_ref)
                        && matches("task", &d.task)
                })
                .map(|(_, d)| deployment_json(req, repo, d))
                .collect();
            Ok(paginate(req, items))
        }
        ["deployments", id] if m == Method::GET => {
            let d = st
                .deployments
                .get(&num(id)?)
                .filter(|d| d.repo == repo)
                .ok_or_else(Reply::not_found)?;
            Ok(Reply::ok(deployment_json(req, repo, d)))
        }
        ["deployments", id, "statuses"] if m == Method::POST => {
            create_deployment_status(st, req, repo, num(id)?)
        }
        ["deployments", id, "statuses"] if m == Method::GET => {
            let d = st
                .deployments
                .get(&num(id)?)
                .filter(|d| d.repo == repo)
                .ok_or_else(Reply::not_found)?;
            let items = d
                .deployment
                .statuses
                .iter()
                .zip(&d.status_ids)
                .rev()
                .map(|(s, (id, at))| deployment_status_json(req, repo, d, s, *id, *at))
                .collect();
            Ok(paginate(req, items))
        }
        ["collaborators", user, "permission"] if m == Method::GET => {
            let (login, permission) = st
                .permissions
                .get(&(repo.to_owned(), user.to_ascii_lowercase()))
                .cloned()
                .ok_or_else(Reply::not_found)?;
            let legacy = match permission {
                Permission::Admin => "admin",
                Permission::Maintain | Permission::Write => "write",
                Permission::Triage | Permission::Read => "read",
                Permission::None => "none",
            };
            Ok(Reply::ok(json!({
                "permission": legacy,
                "role_name": permission.as_str(),
                "user": user_json(&login, false),
            })))
        }
        ["contents", path @ ..] if m == Method::GET && !path.is_empty() => {
            let path = path.join("/");
            let default_branch = st
                .repos
                .get(repo)
                .map(|r| r.default_branch.clone())
                .unwrap_or_default();
            let git_ref = req.params.get("ref").cloned().unwrap_or(default_branch);
            let content = resolve_ref(st, repo, &git_ref)
                .into_iter()
                .chain([git_ref.clone()])
                .find_map(|r| st.files.get(&(repo.to_owned(), r, path.clone())))
                .ok_or_else(Reply::not_found)?;
            Ok(Reply::ok(content_json(req, repo, &path, &git_ref, content)))
        }
        ["pulls", n] if m == Method::GET => {
            let p = pr(st, repo, num(n)?)?;
            Ok(Reply::ok(pr_json(st, req, repo, p)))
        }
        ["pulls"] if m == Method::GET => {
            let want = req.params.get("state").map_or("open", String::as_str);
            let items = st
                .prs
                .iter()
                .rev()
                .filter(|((r, _), p)| {
                    r == repo
                        && match want {
                            "all" => true,
                            "closed" => !p.open,
                            _ => p.open,
                        }
                })
                .map(|(_, p)| pr_json(st, req, repo, p))
                .collect();
            Ok(paginate(req, items))
        }
        _ => Err(Reply::not_found()),
    }
}

fn pr<'a>(st: &'a State, repo: &str, n: u64) -> Result<&'a FakePr, Reply> {
    st.prs
        .get(&(repo.to_owned(), n))
        .ok_or_else(Reply::not_found)
}

fn comment<'a>(st: &'a State, repo: &str, id: u64) -> Result<&'a FakeComment, Reply> {
    st.comments
        .get(&id)
        .filter(|(r, _)| r == repo)
        .map(|(_, c)| c)
        .ok_or_else(Reply::not_found)
}

/// The commit shas a ref may name: itself, and a PR head's sha when it is that head's branch (or
/// the branch when it is a head's sha).
fn resolve_ref(st: &State, repo: &str, git_ref: &str) -> Vec<String> {
    let mut out = vec![git_ref.to_ascii_lowercase()];
    for ((r, _), p) in &st.prs {
        if r != repo {
            continue;
        }
        if p.head_ref == git_ref {
            out.push(p.head_sha.to_string());
        } else if p.head_sha.as_str() == git_ref.to_ascii_lowercase() {
            out.push(p.head_ref.clone());
        }
    }
    out
}

fn create_deployment(st: &mut State, req: &Req<'_>, repo: &str) -> Outcome {
    let git_ref = req
        .str_field("ref")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Reply::unprocessable("ref is missing"))?
        .to_owned();
    let environment = req
        .str_field("environment")
        .unwrap_or("production")
        .to_owned();
    let production = req
        .bool_field("production_environment")
        .unwrap_or(environment == "production");
    // GitHub takes an object or a string (JSON text) and answers with what it stored.
    let payload = match req.body.get("payload") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => return Err(Reply::unprocessable("payload is not a JSON object")),
        },
        Some(_) => {
            return Err(Reply::unprocessable(
                "payload must be an object or a string",
            ));
        }
    };
    // The commit the ref names: a full sha is itself, a PR head branch is its head.
    let sha = resolve_ref(st, repo, &git_ref)
        .into_iter()
        .find(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| git_ref.clone());
    let id = st.id();
    let entry = DeploymentEntry {
        repo: repo.to_owned(),
        by_app: true,
        task: req.str_field("task").unwrap_or("deploy").to_owned(),
        created_at: Utc::now(),
        deployment: FakeDeployment {
            id,
            sha,
            git_ref,
            payload,
            environment,
            description: req.str_field("description").unwrap_or_default().to_owned(),
            transient: req.bool_field("transient_environment").unwrap_or(false),
            production,
            statuses: Vec::new(),
        },
        status_ids: Vec::new(),
    };
    let answer = deployment_json(req, repo, &entry);
    st.deployments.insert(id, entry);
    Ok(Reply::created(answer))
}

fn create_deployment_status(st: &mut State, req: &Req<'_>, repo: &str, id: u64) -> Outcome {
    const STATES: [&str; 7] = [
        "error",
        "failure",
        "inactive",
        "in_progress",
        "queued",
        "pending",
        "success",
    ];
    if st.deployments.get(&id).is_none_or(|d| d.repo != repo) {
        return Err(Reply::not_found());
    }
    let state = req.str_field("state").unwrap_or_default().to_owned();
    if !STATES.contains(&state.as_str()) {
        return Err(Reply::unprocessable("state is not included in the list"));
    }
    let description = req.str_field("description").unwrap_or_default();
    if description.chars().count() > 140 {
        return Err(Reply::unprocessable(
            "description is too long (maximum is 140 characters)",
        ));
    }
    let status = FakeDeploymentStatus {
        state: state.clone(),
        environment_url: req.str_field("environment_url").map(str::to_owned),
        log_url: req
            .str_field("log_url")
            .or_else(|| req.str_field("target_url"))
            .map(str::to_owned),
        description: description.to_owned(),
    };
    let status_id = st.id();
    let now = Utc::now();
    let Some(d) = st.deployments.get_mut(&id) else {
        return Err(Reply::not_found());
    };
    d.deployment.statuses.push(status.clone());
    d.status_ids.push((status_id, now));
    let answer = deployment_status_json(req, repo, d, &status, status_id, now);
    // GitHub's `auto_inactive` (default true), as its REST reference describes it: "Adds a new
    // inactive status to all prior non-transient, non-production environment deployments with the
    // same repository and environment name as the created status's deployment. An inactive status
    // is only added to deployments that had a success state." Applied when the new status is a
    // success (a deployment that becomes current); "had a success state" is read as "whose newest
    // status is success".
    if state == "success" && req.bool_field("auto_inactive").unwrap_or(true) {
        let environment = d.deployment.environment.clone();
        let mut ids = Vec::new();
        for (other_id, other) in st.deployments.iter() {
            if *other_id < id
                && other.repo == repo
                && other.deployment.environment == environment
                && !other.deployment.transient
                && !other.deployment.production
                && other.deployment.last_state() == Some("success")
            {
                ids.push(*other_id);
            }
        }
        for other_id in ids {
            let inactive_id = st.id();
            if let Some(other) = st.deployments.get_mut(&other_id) {
                other.deployment.statuses.push(FakeDeploymentStatus {
                    state: "inactive".to_owned(),
                    environment_url: None,
                    log_url: None,
                    description: String::new(),
                });
                other.status_ids.push((inactive_id, now));
            }
        }
    }
    Ok(Reply::created(answer))
}

/// One page of `items` (`per_page` ≤ 100, default 30; `page` from 1) with GitHub's `Link` header.
fn paginate(req: &Req<'_>, items: Vec<Value>) -> Reply {
    let per_page = req
        .params
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = req
        .params
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let link_to = |p: usize, rel: &str| {
        let mut params: Vec<(String, String)> = req
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.sort();
        params.push(("per_page".into(), per_page.to_string()));
        params.push(("page".into(), p.to_string()));
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::escape::percent(k),
                    crate::escape::percent(v)
                )
            })
            .collect();
        format!(
            "<{}{}?{}>; rel=\"{rel}\"",
            req.fake.url(),
            req.path,
            query.join("&")
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link_to(page + 1, "next"));
        links.push(link_to(last, "last"));
    }
    if page > 1 {
        links.push(link_to(1, "first"));
        links.push(link_to(page - 1, "prev"));
    }
    let reply = Reply::ok(Value::Array(chunk));
    if links.is_empty() {
        reply
    } else {
        reply.header(http::header::LINK, links.join(", "))
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn user_json(login: &str, bot: bool) -> Value {
    json!({
        "login": login,
        "id": login.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 1_000_000_000,
        "type": if bot { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn comment_json(req: &Req<'_>, repo: &str, c: &FakeComment) -> Value {
    let base = req.fake.url();
    json!({
        "id": c.id,
        "node_id": format!("IC_{}", c.id),
        "url": format!("{base}/repos/{repo}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{repo}/pull/{}#issuecomment-{}", c.pr, c.id),
        "issue_url": format!("{base}/repos/{repo}/issues/{}", c.pr),
        "body": c.body,
        "user": user_json(&c.author, c.by_app),
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
        "author_association": if c.by_app { "NONE" } else { "MEMBER" },
        "performed_via_github_app": if c.by_app {
            json!({ "id": req.fake.app_id(), "slug": super::FAKE_APP_SLUG, "name": "stagebot" })
        } else {
            Value::Null
        },
    })
}

fn reaction_json(r: &Reaction) -> Value {
    json!({
        "id": r.id,
        "node_id": format!("REA_{}", r.id),
        "content": r.content,
        "user": user_json(&r.user, r.user.ends_with("[bot]")),
        "created_at": ts(r.created_at),
    })
}

fn status_json(req: &Req<'_>, s: &StatusEntry) -> Value {
    json!({
        "id": s.id,
        "node_id": format!("SC_{}", s.id),
        "url": format!("{}/repos/{}/statuses/{}", req.fake.url(), s.repo, s.sha),
        "state": s.status.state,
        "description": s.status.description,
        "target_url": s.status.target_url,
        "context": s.status.context,
        "created_at": ts(s.created_at),
        "updated_at": ts(s.created_at),
        "creator": user_json(&req.fake.app_login(), true),
    })
}

fn deployment_json(req: &Req<'_>, repo: &str, d: &DeploymentEntry) -> Value {
    let base = req.fake.url();
    let id = d.deployment.id;
    json!({
        "id": id,
        "node_id": format!("DE_{id}"),
        "url": format!("{base}/repos/{repo}/deployments/{id}"),
        "sha": d.deployment.sha,
        "ref": d.deployment.git_ref,
        "task": d.task,
        "payload": d.deployment.payload,
        "original_environment": d.deployment.environment,
        "environment": d.deployment.environment,
        "description": d.deployment.description,
        "creator": if d.by_app {
            user_json(&req.fake.app_login(), true)
        } else {
            user_json("mallory", false)
        },
        "performed_via_github_app": if d.by_app {
            json!({ "id": req.fake.app_id(), "slug": super::FAKE_APP_SLUG, "name": "stagebot" })
        } else {
            Value::Null
        },
        "created_at": ts(d.created_at),
        "updated_at": ts(d.created_at),
        "statuses_url": format!("{base}/repos/{repo}/deployments/{id}/statuses"),
        "repository_url": format!("{base}/repos/{repo}"),
        "transient_environment": d.deployment.transient,
        "production_environment": d.deployment.production,
    })
}

fn deployment_status_json(
    req: &Req<'_>,
    repo: &str,
    d: &DeploymentEntry,
    s: &FakeDeploymentStatus,
    id: u64,
    at: DateTime<Utc>,
) -> Value {
    let base = req.fake.url();
    let deployment = d.deployment.id;
    json!({
        "id": id,
        "node_id": format!("DES_{id}"),
        "url": format!("{base}/repos/{repo}/deployments/{deployment}/statuses/{id}"),
        "state": s.state,
        "creator": user_json(&req.fake.app_login(), true),
        "description": s.description,
        "environment": d.deployment.environment,
        "environment_url": s.environment_url.clone().unwrap_or_default(),
        "log_url": s.log_url.clone().unwrap_or_default(),
        "target_url": s.log_url.clone().unwrap_or_default(),
        "created_at": ts(at),
        "updated_at": ts(at),
        "deployment_url": format!("{base}/repos/{repo}/deployments/{deployment}"),
        "repository_url": format!("{base}/repos/{repo}"),
    })
}

fn content_json(req: &Req<'_>, repo: &str, path: &str, git_ref: &str, content: &str) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(content.as_bytes());
    // GitHub wraps the base64 at 60 columns.
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(60)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let name = path.rsplit('/').next().unwrap_or(path);
    let url = format!(
        "{}/repos/{repo}/contents/{path}?ref={git_ref}",
        req.fake.url()
    );
    json!({
        "type": "file",
        "encoding": "base64",
        "size": content.len(),
        "name": name,
        "path": path,
        "content": format!("{}\n", wrapped.join("\n")),
        "sha": format!("{:040x}", content.bytes().fold(0u128, |h, b| h.wrapping_mul(131).wrapping_add(u128::from(b))) & u128::from(u64::MAX)),
        "url": url,
        "git_url": Value::Null,
        "html_url": Value::Null,
        "download_url": Value::Null,
        "_links": { "self": url, "git": Value::Null, "html": Value::Null },
    })
}

fn pr_json(st: &State, req: &Req<'_>, repo: &str, p: &FakePr) -> Value {
    let entry = st.repos.get(repo);
    let full_name = entry.map_or_else(|| repo.to_owned(), |r| r.name.to_string());
    let repo_id = entry.map_or(0, |r| r.id);
    let name = entry.map_or("", |r| r.name.name());
    let owner = entry.map_or("", |r| r.name.owner());
    let head_full = if p.fork {
        format!("{}/{name}", p.author)
    } else {
        full_name.clone()
    };
    let head_clone = p
        .head_clone_url
        .clone()
        .unwrap_or_else(|| format!("https://github.com/{head_full}.git"));
    let base = req.fake.url();
    json!({
        "id": repo_id * 100_000 + p.number.0,
        "number": p.number.0,
        "url": format!("{base}/repos/{full_name}/pulls/{}", p.number),
        "html_url": format!("https://github.com/{full_name}/pull/{}", p.number),
        "state": if p.open { "open" } else { "closed" },
        "locked": false,
        "title": p.title,
        "user": user_json(&p.author, false),
        "body": Value::Null,
        "draft": p.draft,
        "merged": p.merged,
        "merged_at": if p.merged { Value::String(ts(Utc::now())) } else { Value::Null },
        "head": {
            "label": format!("{}:{}", if p.fork { p.author.as_str() } else { owner }, p.head_ref),
            "ref": p.head_ref,
            "sha": p.head_sha.as_str(),
            "user": user_json(if p.fork { &p.author } else { owner }, false),
            "repo": {
                "id": if p.fork { repo_id + 1 } else { repo_id },
                "name": name,
                "full_name": head_full,
                "fork": p.fork,
                "private": false,
                "clone_url": head_clone,
                "owner": user_json(if p.fork { &p.author } else { owner }, false),
            },
        },
        "base": {
            "label": format!("{owner}:{}", p.base_ref),
            "ref": p.base_ref,
            "sha": "0".repeat(40),
            "user": user_json(owner, false),
            "repo": {
                "id": repo_id,
                "name": name,
                "full_name": full_name,
                "fork": false,
                "private": false,
                "clone_url": format!("https://github.com/{full_name}.git"),
                "default_branch": entry.map_or("main", |r| r.default_branch.as_str()),
                "owner": user_json(owner, false),
            },
        },
    })
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(crate::escape::percent("preview/pr-1"), "preview%2Fpr-1");
        let q = parse_query(Some("environment=preview%2Fpr-1&per_page=5&x"));
        assert_eq!(q["environment"], "preview/pr-1");
        assert_eq!(q["per_page"], "5");
        assert_eq!(q["x"], "");
    }
}
