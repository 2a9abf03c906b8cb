//! The fake's web side of "Sign in with GitHub" (GitHub's OAuth web flow for GitHub Apps) and the
//! user-to-server API the dashboard calls with the user's token: the authorize page, the code
//! exchange, `GET /user`, `GET /user/installations` and
//! `GET /user/installations/{id}/repositories`, shaped as GitHub's REST documentation shows.
//! A user can read a repository when the fake grants them a permission on it
//! ([`FakeGitHub::set_permission`]) of at least `read`.

use crate::escape::{html as escape, percent};
use std::collections::HashMap;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FakeGitHub;
use crate::types::Permission;

/// The fake App's OAuth client id.
pub const FAKE_CLIENT_ID: &str = "Iv1.fakeclient0001";
/// The fake App's OAuth client secret.
pub const FAKE_CLIENT_SECRET: &str = "fake-oauth-client-secret";

/// What the fake remembers of the OAuth flow.
#[derive(Default)]
pub(super) struct OAuthState {
    /// code → (login, redirect_uri); a code is good once.
    codes: HashMap<String, (String, String)>,
    /// user-to-server token → login.
    user_tokens: HashMap<String, String>,
    /// The login the authorize page proposes (its text field's value).
    login: Option<String>,
    /// Skip the page: authorize as `login` at once (GitHub does so once a user has authorized
    /// the App).
    auto: bool,
    /// Codes exchanged (for tests that count them).
    exchanged: u64,
}

impl FakeGitHub {
    /// The authorize page proposes `login` (a test user); with `auto`, it does not show and
    /// signs `login` in at once, as GitHub does for a user who authorized the App before.
    pub fn set_oauth_user(&self, login: &str, auto: bool) {
        let mut st = self.state();
        st.oauth.login = Some(login.to_owned());
        st.oauth.auto = auto;
    }

    /// How many OAuth codes were exchanged for a token.
    pub fn oauth_exchanges(&self) -> u64 {
        self.state().oauth.exchanged
    }
}

pub(super) fn router() -> Router<FakeGitHub> {
    Router::new()
        .route(
            "/login/oauth/authorize",
            get(authorize_page).post(authorize),
        )
        .route(
            "/login/oauth/access_token",
            axum::routing::post(access_token),
        )
        .route("/user", get(user))
        .route("/user/installations", get(user_installations))
        .route(
            "/user/installations/{id}/repositories",
            get(user_installation_repositories),
        )
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Html(escape(message))).into_response()
}

/// `GET /login/oauth/authorize`: the page where the user authorizes the App.
async fn authorize_page(
    AxState(fake): AxState<FakeGitHub>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    if q.client_id.as_deref() != Some(FAKE_CLIENT_ID) {
        return bad("unknown client_id");
    }
    let Some(redirect_uri) = q.redirect_uri.filter(|r| !r.is_empty()) else {
        return bad("redirect_uri is required");
    };
    let state = q.state.unwrap_or_default();
    let (login, auto) = {
        let st = fake.state();
        (st.oauth.login.clone(), st.oauth.auto)
    };
    if auto && let Some(login) = login {
        return redirect_with_code(&fake, &login, &redirect_uri, &state);
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Authorize stagebot</title>\
         <h1>Authorize stagebot</h1><p>stagebot would like to know who you are and which of its \
         installations you can access.</p>\
         <form method=post action=\"/login/oauth/authorize\">\
         <input type=hidden name=client_id value=\"{}\">\
         <input type=hidden name=redirect_uri value=\"{}\">\
         <input type=hidden name=state value=\"{}\">\
         <label>Sign in as <input name=login id=login value=\"{}\"></label>\
         <button type=submit id=authorize>Authorize stagebot</button></form>",
        escape(FAKE_CLIENT_ID),
        escape(&redirect_uri),
        escape(&state),
        escape(login.as_deref().unwrap_or("octocat")),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct AuthorizeForm {
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    state: String,
    login: String,
}

/// The authorize page's button: back to the App with a code.
async fn authorize(AxState(fake): AxState<FakeGitHub>, Form(f): Form<AuthorizeForm>) -> Response {
    if f.client_id != FAKE_CLIENT_ID {
        return bad("unknown client_id");
    }
    let login = f.login.trim();
    if login.is_empty() || !login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return bad("not a GitHub login");
    }
    redirect_with_code(&fake, login, &f.redirect_uri, &f.state)
}

fn redirect_with_code(fake: &FakeGitHub, login: &str, redirect_uri: &str, state: &str) -> Response {
    let code: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(20)
        .collect();
    fake.state()
        .oauth
        .codes
        .insert(code.clone(), (login.to_owned(), redirect_uri.to_owned()));
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{redirect_uri}{sep}code={}&state={}",
        percent(&code),
        percent(state)
    ))
    .into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: String,
    redirect_uri: Option<String>,
}

/// `POST /login/oauth/access_token`: a code for a user-to-server token. Errors are answered 200
/// with an `error` field, as GitHub does.
async fn access_token(
    AxState(fake): AxState<FakeGitHub>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let json_wanted = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json_wanted {
        // GitHub answers form-encoded then; stagebot always asks for JSON.
        return (StatusCode::NOT_ACCEPTABLE, "ask for application/json").into_response();
    }
    let err = |error: &str, description: &str| {
        Json(json!({
            "error": error,
            "error_description": description,
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors",
        }))
        .into_response()
    };
    if f.client_id != FAKE_CLIENT_ID || f.client_secret != FAKE_CLIENT_SECRET {
        return err(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let mut st = fake.state();
    let Some((login, redirect_uri)) = st.oauth.codes.remove(&f.code) else {
        return err(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    if f.redirect_uri.as_ref().is_some_and(|r| *r != redirect_uri) {
        return err(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    let token: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(36)
        .collect();
    let token = format!("ghu_{token}");
    st.oauth.user_tokens.insert(token.clone(), login);
    st.oauth.exchanged += 1;
    Json(json!({
        "access_token": token,
        "expires_in": 28800,
        "refresh_token": format!("ghr_{}", std::iter::repeat_with(fastrand::alphanumeric).take(36).collect::<String>()),
        "refresh_token_expires_in": 15_811_200,
        "scope": "",
        "token_type": "bearer",
    }))
    .into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_str() })),
    )
        .into_response()
}

/// The login a user-to-server token stands for; else GitHub's 401.
fn user_of(fake: &FakeGitHub, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")
        })
        .map(|(_, c)| c.trim().to_owned())
        .ok_or_else(|| {
            Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
            ))
        })?;
    fake.state()
        .oauth
        .user_tokens
        .get(&credential)
        .cloned()
        .ok_or_else(|| Box::new(api_error(StatusCode::UNAUTHORIZED, "Bad credentials")))
}

/// Repository keys of installation `id` that `login` may read.
fn readable(fake: &FakeGitHub, login: &str, installation: u64) -> Vec<Value> {
    let st = fake.state();
    let login = login.to_ascii_lowercase();
    st.repos
        .iter()
        .filter(|(_, r)| r.installation_id == installation)
        .filter(|(key, _)| {
            st.permissions
                .get(&((*key).clone(), login.clone()))
                .is_some_and(|(_, p)| *p >= Permission::Read)
        })
        .map(|(_, r)| {
            json!({
                "id": r.id,
                "node_id": format!("R_{}", r.id),
                "name": r.name.name(),
                "full_name": r.name.to_string(),
                "private": true,
                "owner": super::server::user_json(r.name.owner(), false),
                "html_url": format!("https://github.com/{}", r.name),
                "default_branch": r.default_branch,
                "permissions": { "pull": true },
            })
        })
        .collect()
}

/// `GET /user`.
async fn user(AxState(fake): AxState<FakeGitHub>, headers: HeaderMap) -> Response {
    match user_of(&fake, &headers) {
        Ok(login) => {
            let mut u = super::server::user_json(&login, false);
            if let Some(o) = u.as_object_mut() {
                o.insert("name".into(), Value::String(login.clone()));
                o.insert(
                    "html_url".into(),
                    Value::String(format!("https://github.com/{login}")),
                );
            }
            Json(u).into_response()
        }
        Err(r) => *r,
    }
}

/// `GET /user/installations`: the App's installations where the user can read a repository.
async fn user_installations(AxState(fake): AxState<FakeGitHub>, headers: HeaderMap) -> Response {
    let login = match user_of(&fake, &headers) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let ids: Vec<(u64, String)> = fake
        .state()
        .installations
        .iter()
        .map(|(id, account)| (*id, account.clone()))
        .collect();
    let installations: Vec<Value> = ids
        .into_iter()
        .filter(|(id, _)| !readable(&fake, &login, *id).is_empty())
        .map(|(id, account)| {
            json!({
                "id": id,
                "app_id": fake.app_id(),
                "app_slug": super::FAKE_APP_SLUG,
                "account": super::server::user_json(&account, false),
                "target_type": "Organization",
                "repository_selection": "selected",
                "permissions": {},
                "events": [],
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    Json(json!({ "total_count": installations.len(), "installations": installations }))
        .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// `GET /user/installations/{id}/repositories`: the installation's repositories the user can
/// read (paginated with `per_page`/`page`).
async fn user_installation_repositories(
    AxState(fake): AxState<FakeGitHub>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let login = match user_of(&fake, &headers) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<u64>() else {
        return api_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repos = readable(&fake, &login, id);
    if repos.is_empty() {
        return api_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let total = repos.len();
    let chunk: Vec<Value> = repos
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    Json(json!({ "total_count": total, "repository_selection": "selected", "repositories": chunk }))
        .into_response()
}
