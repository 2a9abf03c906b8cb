//! Actions from the environment page (docs/dashboard.md, "Actions"): promote, roll back to a
//! chosen release, redeploy, extend, tear down. Each is a POST form with the session's CSRF
//! token. The signed-in user's permission on the repository is asked of GitHub with the
//! installation token, as for a comment's sender; [`crate::policy::dashboard`] decides with the
//! same rules as the matching slash command; the engine applies its actions through the same
//! path ([`App::apply`](crate::engine)), so the deploy is recorded as that user's release and the
//! pull request's sticky comment says what was done and by whom.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebState;
use super::auth::{csrf_ok, message_page, viewer};
use crate::app::App;
use crate::command::PromoteTarget;
use crate::engine::{Ctx, EngineError};
use crate::policy::{self, DashboardAction};
use crate::types::{EnvId, RepoName, Slug};

/// Why an action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The policy refused, with the reason for the user.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl App {
    /// Run a dashboard action on environment `id` as GitHub user `login`.
    #[tracing::instrument(skip(self, action), fields(env = %id, login = %login))]
    pub async fn dashboard_action(
        &self,
        id: &EnvId,
        action: &DashboardAction,
        login: &str,
    ) -> Result<(), ActionError> {
        let (mut state, config, info, client) = self
            .repo_state::<ActionError>(&id.repo, Some(&id.slug))
            .await?;
        // The same question the engine asks for a comment's sender.
        let permission = client.permission(login).await?;
        state.permission = Some(permission);
        let actions = policy::dashboard(&id.slug, action, login, permission, &config, &state)
            .map_err(ActionError::Refused)?;
        // The environment's own privacy, not the API's answer (the fake says every repo is).
        let info = crate::event::RepoInfo {
            private: state
                .envs
                .iter()
                .find(|e| e.id == *id)
                .map_or(info.private, |e| e.private),
            ..info
        };
        let ctx = Ctx {
            repo: &info,
            client: &client,
            installation: client.installation_id(),
            now: state.now,
        };
        tracing::info!(?action, %permission, "dashboard action");
        for a in actions {
            self.engine().apply(&ctx, a).await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    /// `promote`, `rollback`, `redeploy`, `extend` or `teardown`.
    action: Option<String>,
    /// `promote`: `staging` or `production`.
    to: Option<String>,
    /// `rollback`: the release number.
    release: Option<String>,
    /// `extend`: a duration (`1d`, `12h`).
    by: Option<String>,
}

fn parse_action(f: &ActionForm) -> Result<DashboardAction, String> {
    Ok(match f.action.as_deref().unwrap_or_default() {
        "promote" => DashboardAction::Promote {
            to: match f.to.as_deref() {
                Some("staging") => PromoteTarget::Staging,
                Some("production") => PromoteTarget::Production,
                _ => return Err("promote to `staging` or `production`".into()),
            },
        },
        "rollback" => DashboardAction::Rollback {
            to: f
                .release
                .as_deref()
                .and_then(|r| r.trim().parse::<u32>().ok())
                .filter(|n| *n > 0)
                .ok_or("roll back to which release? (a release number)")?,
        },
        "redeploy" => DashboardAction::Redeploy,
        "extend" => DashboardAction::Extend {
            by: f
                .by
                .as_deref()
                .and_then(crate::command::parse_duration)
                .ok_or("extend by how long? (e.g. 1d, 12h)")?,
        },
        "teardown" => DashboardAction::Teardown,
        _ => return Err("unknown action".into()),
    })
}

/// `POST /repos/{owner}/{repo}/env/{slug}/actions`.
pub async fn act(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Path((owner, repo, slug)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    if !csrf_ok(&app, &web, &viewer, form.csrf.as_deref()) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "this form's CSRF token is missing or wrong, or you are not signed in: reload the page and try again",
        );
    }
    let Some(login) = viewer.login().map(str::to_owned) else {
        return message_page(StatusCode::FORBIDDEN, "Refused", "sign in first");
    };
    let (Ok(repo), Ok(slug)) = (RepoName::new(&owner, &repo), Slug::new(&slug)) else {
        return message_page(StatusCode::NOT_FOUND, "Not found", "no such environment");
    };
    let id = EnvId { repo, slug };
    match app.store().env(&id) {
        Ok(Some(env)) if viewer.sees(&app, &env) => {}
        _ => return message_page(StatusCode::NOT_FOUND, "Not found", "no such environment"),
    }
    let action = match parse_action(&form) {
        Ok(a) => a,
        Err(m) => return message_page(StatusCode::BAD_REQUEST, "Not done", &m),
    };
    let back = format!(
        "/repos/{}/{}/env/{}",
        super::percent(id.repo.owner()),
        super::percent(id.repo.name()),
        super::percent(id.slug.as_str())
    );
    match app.dashboard_action(&id, &action, &login).await {
        Ok(()) => Redirect::to(&back).into_response(),
        Err(ActionError::Refused(m)) => {
            message_page(StatusCode::CONFLICT, "Not done", &m.replace("**", ""))
        }
        Err(e) => {
            tracing::warn!(env = %id, error = %e, "dashboard action failed");
            message_page(
                StatusCode::BAD_GATEWAY,
                "Not done",
                &format!("{e}. Try again: the page shows what was done."),
            )
        }
    }
}
