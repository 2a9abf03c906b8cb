//! The dashboard's pages (docs/dashboard.md): `/` (the repositories the viewer may see, and
//! their environments), `/repos/{owner}/{repo}` (the pipeline: previews → staging →
//! production) and `/repos/{owner}/{repo}/env/{slug}` (an environment: its releases, its log's
//! tail, its actions). Server-rendered; every value is escaped ([`escape`]). A little script
//! polls `/repos/{owner}/{repo}/version` and reloads the page when something changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use sha2::Digest as _;

use super::auth::{csrf_token, login_url, message_page, viewer};
use super::{Viewer, WebState, escape, percent};
use crate::app::App;
use crate::environment::{EnvRecord, EnvState, Release};
use crate::types::{EnvId, EnvKind, RepoName, Slug};

/// How much of the end of a log the environment page shows.
const PAGE_LOG_TAIL: u64 = 16 * 1024;

const CSS: &str = r#"*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:center;justify-content:space-between;padding:.7em 1.2em;background:#24292f;color:#fff}
header a{color:#fff}header .brand{font-weight:600;font-size:1.1em;text-decoration:none}
header form{display:inline;margin:0}
main{padding:1em 1.2em;max-width:1200px;margin:0 auto}main.narrow{max-width:640px}
a{color:#0969da}h1{font-size:1.4em;margin:.3em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .5em}
.pipeline{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:1em}
@media (max-width:760px){.pipeline{grid-template-columns:1fr}}
.column h2{margin-top:0;text-transform:uppercase;font-size:.8em;letter-spacing:.06em;color:#57606a}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:.7em .9em;margin-bottom:.8em;overflow-wrap:anywhere}
.card h3{margin:0 0 .3em;font-size:1em}.card dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:.1em .8em;font-size:.9em}
.card dt{color:#57606a}.card dd{margin:0}
.empty{color:#57606a;font-style:italic}
.state{display:inline-block;border-radius:1em;padding:0 .6em;font-size:.8em;font-weight:600;background:#eaeef2}
.state-live{background:#dafbe1;color:#116329}.state-deploying,.state-pending{background:#fff8c5;color:#7d4e00}
.state-failed{background:#ffebe9;color:#a40e26}.state-queued{background:#ddf4ff;color:#0550ae}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;border-radius:8px;font-size:.9em}
td,th{padding:.4em .6em;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
.scroll{overflow-x:auto}
pre.log{background:#0d1117;color:#e6edf3;padding:.8em;border-radius:8px;overflow:auto;max-height:28em;font-size:.8em;white-space:pre-wrap}
.actions{display:flex;flex-wrap:wrap;gap:.5em;align-items:center}.actions form{margin:0;display:flex;gap:.3em}
button{font:inherit;padding:.25em .8em;border-radius:6px;border:1px solid #d0d7de;background:#f6f8fa;cursor:pointer}
button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}button.danger{color:#cf222e}
.warning{background:#fff8c5;padding:.5em .8em;border-radius:6px}.message{background:#fff;padding:.8em;border:1px solid #d0d7de;border-radius:6px}
.muted{color:#57606a}code{font-size:.9em}
"#;

const SCRIPT: &str = r#"(function(){
var b=document.body,v=b.getAttribute("data-version"),u=b.getAttribute("data-poll");
if(!u||!v)return;
function poll(){if(document.hidden)return;fetch(u,{credentials:"same-origin"}).then(function(r){return r.ok?r.text():v}).then(function(t){if(t.trim()!==v)location.reload()}).catch(function(){})}
setInterval(poll,3000);
})();
"#;

pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The page around `body`: header with the sign-in state, the script when `poll` is given.
fn page(
    app: &App,
    web: &WebState,
    viewer: &Viewer,
    title: &str,
    here: &str,
    body: &str,
    poll: Option<(&str, &str)>,
) -> Response {
    let user = match viewer.login() {
        Some(login) => format!(
            "<span>Signed in as <strong>@{}</strong></span> \
             <form method=post action=\"/auth/logout\"><input type=hidden name=csrf value=\"{}\">\
             <button type=submit id=logout>Sign out</button></form>",
            escape(login),
            escape(&csrf_token(app, web, viewer).unwrap_or_default())
        ),
        None if app.oauth_app().is_some() => format!(
            "<a id=signin href=\"{}\">Sign in with GitHub</a>",
            escape(&login_url(here))
        ),
        None => String::new(),
    };
    let data = match poll {
        Some((url, version)) => format!(
            " data-poll=\"{}\" data-version=\"{}\"",
            escape(url),
            escape(version)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{} · stagebot</title><link rel=stylesheet href=\"/dashboard.css\">\
         <body{data}><header><a class=brand href=\"/\">stagebot</a><nav>{user}</nav></header>\
         <main>{body}</main><script src=\"/dashboard.js\"></script></body></html>",
        escape(title)
    ))
    .into_response()
}

/// Anonymous visitors who may not see a page are sent to sign-in (when it is set up) and back;
/// everybody else gets the same 404 as for something that does not exist.
fn hidden(app: &App, viewer: &Viewer, here: &str, what: &str) -> Response {
    if viewer.session.is_none() && app.oauth_app().is_some() {
        return Redirect::to(&login_url(here)).into_response();
    }
    message_page(StatusCode::NOT_FOUND, "Not found", &format!("no {what}"))
}

/// `GET /`: the repositories this viewer may see, and their environments.
pub async fn index(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    let envs = app.store().envs().unwrap_or_default();
    let mut repos: BTreeMap<String, (RepoName, usize)> = BTreeMap::new();
    let mut rows = String::new();
    for e in envs
        .iter()
        .filter(|e| e.is_active() && viewer.sees(&app, e))
    {
        repos
            .entry(e.id.repo.to_string().to_ascii_lowercase())
            .or_insert((e.id.repo.clone(), 0))
            .1 += 1;
        let release = e
            .current_release()
            .and_then(|n| app.store().release(&e.id, n).ok().flatten());
        let _ = write!(
            rows,
            "<tr><td><a href=\"{}\">{}</a></td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&repo_path(&e.id.repo)),
            escape(&e.id.repo.to_string()),
            escape(&env_path(&e.id)),
            escape(e.id.slug.as_str()),
            e.kind,
            state_badge(e.state()),
            if e.state() == EnvState::Live {
                format!("<a href=\"{0}\">{0}</a>", escape(&e.url))
            } else {
                String::new()
            },
            release
                .as_ref()
                .map(|r| format!("#{} <code>{}</code>", r.n, escape(r.sha.short())))
                .unwrap_or_default(),
            e.expires_at().map(ts).unwrap_or_default(),
        );
    }
    // Repositories the user can read that have no environment yet.
    if let Some(session) = &viewer.session {
        for full in &session.repos {
            if let Ok(name) = full.parse::<RepoName>() {
                repos.entry(full.clone()).or_insert((name, 0));
            }
        }
    }
    let mut body = String::from("<h1>Repositories</h1>");
    for (name, c) in app.provider().checks().into_iter().filter(|(_, c)| !c.ok) {
        let _ = write!(
            body,
            "<p class=warning><strong>{}</strong>: {}</p>",
            escape(name),
            escape(&c.detail)
        );
    }
    if repos.is_empty() {
        body.push_str("<p class=empty>No repositories to show yet. Open a pull request in a repository the App is installed on.</p>");
    } else {
        body.push_str("<div class=pipeline>");
        for (name, count) in repos.values() {
            let _ = write!(
                body,
                "<div class=card><h3><a class=repo href=\"{}\">{}</a></h3><span class=muted>{} environment{}</span></div>",
                escape(&repo_path(name)),
                escape(&name.to_string()),
                count,
                if *count == 1 { "" } else { "s" }
            );
        }
        body.push_str("</div>");
    }
    if !rows.is_empty() {
        let _ = write!(
            body,
            "<h2>All environments</h2><div class=scroll><table><tr><th>Repository</th><th>Environment</th><th>Kind</th><th>State</th><th>URL</th><th>Release</th><th>Expires</th></tr>{rows}</table></div>"
        );
    }
    // Webhooks GitHub failed to deliver and redelivered at the catch-up's request.
    match app.store().recovered_total() {
        Ok(0) => {}
        Ok(n) => {
            let _ = write!(
                body,
                "<p class=muted>{n} lost webhook deliver{} recovered from GitHub's delivery log \
                 (<code>stagebot deliveries list</code> marks them).</p>",
                if n == 1 { "y" } else { "ies" }
            );
        }
        Err(e) => {
            let _ = write!(
                body,
                "<p class=warning>recovered deliveries: {}</p>",
                escape(&e.to_string())
            );
        }
    }
    if !app.settings().dashboard_public {
        body.push_str(if viewer.session.is_some() {
            "<p class=muted>Environments of private repositories are hidden here unless GitHub says you can read the repository.</p>"
        } else {
            "<p class=muted>Environments of private repositories are hidden here, with their logs and releases: sign in with GitHub to see those you can read. (An operator can show them to everybody with <code>STAGEBOT_DASHBOARD_PUBLIC=true</code> when access to this page is restricted some other way.)</p>"
        });
    }
    body.push_str("<p class=muted><a href=\"/api/environments\">JSON</a> · <a href=\"/metrics\">metrics</a></p>");
    page(&app, &web, &viewer, "Repositories", "/", &body, None)
}

fn repo_path(repo: &RepoName) -> String {
    format!("/repos/{}/{}", percent(repo.owner()), percent(repo.name()))
}

fn env_path(id: &EnvId) -> String {
    format!("{}/env/{}", repo_path(&id.repo), percent(id.slug.as_str()))
}

fn state_badge(state: EnvState) -> String {
    format!("<span class=\"state state-{0}\">{0}</span>", state.as_str())
}

fn web_url(app: &App) -> &str {
    app.settings().github_web_url.trim_end_matches('/')
}

/// The active environments of `repo` this viewer may see; `None` when they may see none
/// (hidden, or none exist).
fn visible_envs(app: &App, viewer: &Viewer, repo: &RepoName) -> Option<Vec<EnvRecord>> {
    let envs: Vec<EnvRecord> = app
        .store()
        .envs_of_repo(repo)
        .ok()?
        .into_iter()
        .filter(|e| viewer.sees(app, e))
        .collect();
    let readable = viewer
        .session
        .as_ref()
        .is_some_and(|s| s.repos.contains(&repo.to_string().to_ascii_lowercase()));
    // A repository whose environments were all destroyed (archived) is still shown.
    let history = || {
        app.store()
            .archived_envs_of_repo(repo)
            .is_ok_and(|a| a.iter().any(|e| viewer.sees(app, e)))
    };
    (!envs.is_empty() || readable || history()).then_some(envs)
}

/// A fingerprint of what the pages of `repo` show; the script reloads when it changes.
fn fingerprint(app: &App, envs: &[EnvRecord]) -> String {
    let mut h = sha2::Sha256::new();
    for e in envs {
        h.update(
            format!(
                "{}|{}|{}|{:?}|{}|{:?}|{:?}|{:?}\n",
                e.id.slug,
                e.state().as_str(),
                e.generation(),
                e.current_release(),
                e.releases(),
                e.expires_at(),
                e.last_visit,
                e.ci_wait()
            )
            .as_bytes(),
        );
        // A log being written: its growth refreshes the environment page's tail.
        if matches!(e.state(), EnvState::Deploying | EnvState::Pending) {
            let (path, _) = app.log_location(&e.id, e.releases() + 1);
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            h.update(len.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// `GET /repos/{owner}/{repo}/version`: the fingerprint the pages poll.
pub async fn version(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    let Ok(repo) = RepoName::new(&owner, &repo) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match visible_envs(&app, &viewer, &repo) {
        Some(envs) => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            fingerprint(&app, &envs),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Position in the capacity queue of the installation (1 = next), for a queued preview.
fn queue_position(app: &App, env: &EnvRecord) -> Option<usize> {
    if env.state() != EnvState::Queued {
        return None;
    }
    let mut queued: Vec<(DateTime<Utc>, EnvId)> = app
        .store()
        .envs()
        .ok()?
        .into_iter()
        .filter(|e| e.state() == EnvState::Queued && e.installation_id == env.installation_id)
        .map(|e| (e.queued_at().unwrap_or(e.created_at), e.id))
        .collect();
    queued.sort();
    queued
        .iter()
        .position(|(_, id)| *id == env.id)
        .map(|p| p + 1)
}

/// The lines of an environment's card and page header.
async fn details(app: &App, web: &WebState, env: &EnvRecord) -> String {
    let repo = env.id.repo.to_string();
    let mut dl = String::new();
    if let Some(pr) = env.pr {
        let info = web.pr_info(app, env, pr).await;
        let _ = write!(
            dl,
            "<dt>Pull request</dt><dd><a href=\"{}/{}/pull/{}\">#{}</a>{}</dd>",
            escape(web_url(app)),
            escape(&repo),
            pr,
            pr,
            info.map(|i| format!(
                " {} <span class=muted>by @{}</span>",
                escape(&i.title),
                escape(&i.author)
            ))
            .unwrap_or_default()
        );
    }
    let _ = write!(
        dl,
        "<dt>Branch</dt><dd><code>{}</code></dd>",
        escape(&env.branch)
    );
    let release = env
        .current_release()
        .and_then(|n| app.store().release(&env.id, n).ok().flatten());
    if let Some(r) = &release {
        let _ = write!(
            dl,
            "<dt>Live commit</dt><dd><a class=commit href=\"{}/{}/commit/{}\"><code>{}</code></a> (#{})</dd>\
             <dt>Deployed</dt><dd>by @{} at {}</dd>",
            escape(web_url(app)),
            escape(&repo),
            escape(r.sha.as_str()),
            escape(r.sha.short()),
            r.n,
            escape(&r.by),
            ts(r.at)
        );
    }
    if let Some(sha) = &env.deploying() {
        let _ = write!(
            dl,
            "<dt>Deploying</dt><dd><code>{}</code></dd>",
            escape(sha.short())
        );
    }
    if let Some(wait) = &env.ci_wait() {
        let _ = write!(dl, "<dt>Waiting for</dt><dd>{}</dd>", escape(wait));
    }
    if let Some(pos) = queue_position(app, env) {
        let _ = write!(dl, "<dt>Queue</dt><dd>position {pos}</dd>");
    }
    if let Some(t) = env.expires_at() {
        let _ = write!(dl, "<dt>Expires</dt><dd>{}</dd>", ts(t));
    }
    let _ = write!(
        dl,
        "<dt>Last visit</dt><dd>{}</dd>",
        env.last_visit.map(ts).unwrap_or_else(|| "—".into())
    );
    if env.state() == EnvState::Live {
        let _ = write!(
            dl,
            "<dt>URL</dt><dd><a class=envurl href=\"{0}\">{0}</a></dd>",
            escape(&env.url)
        );
    }
    if let Some(err) = &env.last_error {
        let _ = write!(dl, "<dt>Error</dt><dd>{}</dd>", escape(err));
    }
    format!("<dl>{dl}</dl>")
}

/// `GET /repos/{owner}/{repo}`: the pipeline.
pub async fn pipeline(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    let Ok(repo) = RepoName::new(&owner, &repo) else {
        return message_page(StatusCode::NOT_FOUND, "Not found", "no such repository");
    };
    let here = repo_path(&repo);
    let Some(envs) = visible_envs(&app, &viewer, &repo) else {
        return hidden(&app, &viewer, &here, "such repository");
    };
    let mut body = format!(
        "<h1>{} <a class=muted href=\"{}/{}\">on GitHub</a></h1><div class=pipeline>",
        escape(&repo.to_string()),
        escape(web_url(&app)),
        escape(&repo.to_string())
    );
    for (kind, title) in [
        (EnvKind::Preview, "Previews"),
        (EnvKind::Staging, "Staging"),
        (EnvKind::Production, "Production"),
    ] {
        let _ = write!(
            body,
            "<section class=column id=\"col-{kind}\"><h2>{title}</h2>"
        );
        let mut any = false;
        for env in envs.iter().filter(|e| e.kind == kind && e.is_active()) {
            any = true;
            let _ = write!(
                body,
                "<div class=card id=\"env-{slug}\"><h3><a href=\"{path}\">{slug}</a> {state}</h3>{details}</div>",
                slug = escape(env.id.slug.as_str()),
                path = escape(&env_path(&env.id)),
                state = state_badge(env.state()),
                details = details(&app, &web, env).await
            );
        }
        if !any {
            body.push_str("<p class=empty>Nothing here.</p>");
        }
        body.push_str("</section>");
    }
    body.push_str("</div>");
    let poll = format!("{here}/version");
    let version = fingerprint(&app, &envs);
    page(
        &app,
        &web,
        &viewer,
        &repo.to_string(),
        &here,
        &body,
        Some((&poll, &version)),
    )
}

/// The end of a file, at most `max` bytes, as text (cut at a line start when cut).
async fn tail(path: &std::path::Path, max: u64) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut f = tokio::fs::File::open(path).await.ok()?;
    let len = f.metadata().await.ok()?.len();
    let start = len.saturating_sub(max);
    f.seek(std::io::SeekFrom::Start(start)).await.ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(if start > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(text)
    } else {
        text
    })
}

fn action_form(
    path: &str,
    csrf: &str,
    action: &str,
    extra: &str,
    label: &str,
    id: &str,
    class: &str,
) -> String {
    format!(
        "<form method=post action=\"{}\"><input type=hidden name=csrf value=\"{}\">\
         <input type=hidden name=action value=\"{}\">{extra}<button type=submit id=\"{}\" class=\"{}\">{}</button></form>",
        escape(path),
        escape(csrf),
        escape(action),
        escape(id),
        escape(class),
        escape(label)
    )
}

/// `GET /repos/{owner}/{repo}/env/{slug}`: one environment.
pub async fn environment(
    State(app): State<App>,
    axum::Extension(web): axum::Extension<WebState>,
    headers: HeaderMap,
    Path((owner, repo, slug)): Path<(String, String, String)>,
) -> Response {
    let viewer = viewer(&app, &web, &headers);
    let (Ok(repo), Ok(slug)) = (RepoName::new(&owner, &repo), Slug::new(&slug)) else {
        return message_page(StatusCode::NOT_FOUND, "Not found", "no such environment");
    };
    let id = EnvId { repo, slug };
    let here = env_path(&id);
    let env = match app.store().env(&id) {
        Ok(Some(env)) if viewer.sees(&app, &env) => env,
        _ => return hidden(&app, &viewer, &here, "such environment"),
    };
    let releases: Vec<Release> = app.store().releases(&id).unwrap_or_default();
    let repo_s = id.repo.to_string();
    let mut body = format!(
        "<p><a href=\"{}\">{}</a> / {}</p><h1>{} {}</h1>",
        escape(&repo_path(&id.repo)),
        escape(&repo_s),
        escape(env.kind.as_str()),
        escape(id.slug.as_str()),
        state_badge(env.state())
    );
    let _ = write!(body, "<div class=card>{}", details(&app, &web, &env).await);
    // The GitHub deployment of the live release (recorded on its deploy attempt).
    let deployment = env.current_release().and_then(|n| {
        app.store()
            .attempts(&id)
            .ok()?
            .into_iter()
            .rev()
            .find(|a| a.release == n && a.deployment_id.is_some())
            .and_then(|a| a.deployment_id)
            .or_else(|| {
                let r = releases.iter().find(|r| r.n == n)?;
                env.deployments.get(r.sha.as_str()).copied()
            })
    });
    if let Some(dep) = deployment {
        let _ = write!(
            body,
            "<p><a class=deployment href=\"{}/{}/deployments\">GitHub deployment {}</a></p>",
            escape(web_url(&app)),
            escape(&repo_s),
            dep
        );
    }
    body.push_str("</div>");
    // Actions: for signed-in users; GitHub's answer on their permission decides when they act.
    let active = env.is_active() && env.state() != EnvState::TearingDown;
    match csrf_token(&app, &web, &viewer) {
        Some(csrf) if active => {
            let post = format!("{here}/actions");
            body.push_str("<h2>Actions</h2><div class=actions>");
            let promote_to: &[(&str, &str)] = match env.kind {
                EnvKind::Preview => &[
                    ("staging", "Promote to staging"),
                    ("production", "Promote to production"),
                ],
                EnvKind::Staging => &[("production", "Promote to production")],
                EnvKind::Production => &[],
            };
            if env.current_release().is_some() {
                for (to, label) in promote_to {
                    body.push_str(&action_form(
                        &post,
                        &csrf,
                        "promote",
                        &format!("<input type=hidden name=to value=\"{to}\">"),
                        label,
                        &format!("promote-{to}"),
                        "primary",
                    ));
                }
                body.push_str(&action_form(
                    &post, &csrf, "redeploy", "", "Redeploy", "redeploy", "",
                ));
            }
            if env.kind == EnvKind::Preview {
                body.push_str(&action_form(
                    &post,
                    &csrf,
                    "extend",
                    "<select name=by aria-label=\"Extend by\"><option value=1d>1 day</option><option value=3d>3 days</option><option value=7d>7 days</option></select>",
                    "Extend",
                    "extend",
                    "",
                ));
                body.push_str(&action_form(
                    &post,
                    &csrf,
                    "teardown",
                    "",
                    "Tear down",
                    "teardown",
                    "danger",
                ));
            }
            body.push_str("</div>");
        }
        Some(_) => {}
        None if app.oauth_app().is_some() => {
            let _ = write!(
                body,
                "<p class=muted><a href=\"{}\">Sign in with GitHub</a> to promote, roll back, redeploy, extend or tear down.</p>",
                escape(&login_url(&here))
            );
        }
        None => {}
    }
    // Release history, newest first.
    body.push_str("<h2>Releases</h2>");
    if releases.is_empty() {
        body.push_str("<p class=empty>No release yet.</p>");
    } else {
        let csrf = csrf_token(&app, &web, &viewer).filter(|_| active);
        body.push_str("<div class=scroll><table id=releases><tr><th>#</th><th>Commit</th><th>Trigger</th><th>By</th><th>When</th><th>Log</th><th></th></tr>");
        for r in releases.iter().rev() {
            let live = env.current_release() == Some(r.n);
            let rollback = match (&csrf, live) {
                (Some(csrf), false) => action_form(
                    &format!("{here}/actions"),
                    csrf,
                    "rollback",
                    &format!("<input type=hidden name=release value=\"{}\">", r.n),
                    "Roll back",
                    &format!("rollback-{}", r.n),
                    "",
                ),
                _ => String::new(),
            };
            let (_, log) = app.log_location(&id, r.n);
            let _ = write!(
                body,
                "<tr id=\"release-{n}\"><td>#{n}{live}</td><td><a href=\"{web}/{repo}/commit/{sha}\"><code>{short}</code></a></td><td>{trigger}</td><td>@{by}</td><td>{at}</td><td><a class=log href=\"{log}\">log</a></td><td>{rollback}</td></tr>",
                n = r.n,
                live = if live { " <strong>live</strong>" } else { "" },
                web = escape(web_url(&app)),
                repo = escape(&repo_s),
                sha = escape(r.sha.as_str()),
                short = escape(r.sha.short()),
                trigger = escape(&crate::messages::trigger(&r.trigger)),
                by = escape(&r.by),
                at = ts(r.at),
                log = escape(&log),
            );
        }
        body.push_str("</table></div>");
    }
    // The end of the newest log (the deploy running now, else the last release's).
    for n in [env.releases() + 1, env.releases()] {
        if n == 0 {
            continue;
        }
        let (path, url) = app.log_location(&id, n);
        if let Some(text) = tail(&path, PAGE_LOG_TAIL).await {
            let _ = write!(
                body,
                "<h2>Log of #{n} <a class=muted href=\"{}\">whole log</a></h2><pre class=log id=log>{}</pre>",
                escape(&url),
                escape(&text)
            );
            break;
        }
    }
    let envs = vec![env];
    let poll = format!("{}/version", repo_path(&id.repo));
    let version = visible_envs(&app, &viewer, &id.repo)
        .map(|all| fingerprint(&app, &all))
        .unwrap_or_else(|| fingerprint(&app, &envs));
    page(
        &app,
        &web,
        &viewer,
        &format!("{} · {}", id.slug, repo_s),
        &here,
        &body,
        Some((&poll, &version)),
    )
}
