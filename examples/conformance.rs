//! Conformance check of the GitHub client against GitHub's OpenAPI description.
//!
//! `cargo run --example conformance -- http://127.0.0.1:4010` with a Prism mock of
//! `@octokit/openapi`'s `api.github.com.json` listening there (`scripts/conformance.sh` sets it
//! up). The client talks to Prism through a small recording proxy started here, so what is
//! checked is exactly what the client sends: every kind of call stagebot makes is made, and the
//! run fails if any answer is a 4xx/5xx or carries Prism's `sl-violations` header.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri};
use stagebot::fake_github::{FAKE_APP_ID, TEST_PRIVATE_KEY_PEM};
use stagebot::github::{
    DeploymentState, GitHub, GitHubConfig, GitHubError, NewDeployment, NewDeploymentStatus,
    Reaction, RetryPolicy, StatusState,
};
use stagebot::types::{PrNumber, RepoName, Secret, Sha};

/// One exchange seen by the proxy.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    violations: Option<String>,
    answer: String,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
}

async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut outgoing = proxy.client.request(
        method.clone(),
        format!("{}{}", proxy.upstream, for_prism(&path)),
    );
    for (name, value) in &headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response();
        }
    };
    let status = answer.status();
    let mut answer_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != http::header::TRANSFER_ENCODING && name != http::header::CONTENT_LENGTH {
            answer_headers.append(name, value.clone());
        }
    }
    let violations = answer
        .headers()
        .get("sl-violations")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut log = proxy.log.lock().unwrap_or_else(|p| p.into_inner());
    log.push(Exchange {
        method: method.to_string(),
        path,
        status: status.as_u16(),
        violations,
        answer: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
    });
    (status, answer_headers, bytes).into_response()
}

/// Prism's router cannot match a path parameter spanning several segments, which GitHub's
/// `/repos/{owner}/{repo}/contents/{path}` does (`.github/stagebot.yml`). The client sends the
/// slashes raw, as GitHub wants (with some token kinds GitHub answers 404 to `%2F`); only the
/// copy sent to Prism has them encoded so that the route resolves and is validated.
fn for_prism(path: &str) -> String {
    let Some((head, rest)) = path.split_once("/contents/") else {
        return path.to_owned();
    };
    let (file, query) = rest
        .split_once('?')
        .map_or((rest, None), |(f, q)| (f, Some(q)));
    let mut out = format!("{head}/contents/{}", file.replace('/', "%2F"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Violations Prism found in what we sent (`location` starting with `request`). Violations in
/// Prism's own generated answers (`response`) are the description's examples disagreeing with
/// its schemas: reported, not ours to fix.
fn request_violations(header: &str) -> (Vec<String>, Vec<String>) {
    let parsed: Vec<serde_json::Value> = serde_json::from_str(header).unwrap_or_else(|_| {
        vec![serde_json::json!({ "location": ["request"], "message": header })]
    });
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for v in parsed {
        let text = v.to_string();
        if v["location"][0].as_str() == Some("response") {
            theirs.push(text);
        } else {
            ours.push(text);
        }
    }
    (ours, theirs)
}

/// The outcome of one client call: fine, or an error (decoding Prism's generated examples may
/// legitimately fail; anything else is a finding).
fn note(name: &str, result: Result<String, GitHubError>, problems: &mut Vec<String>) {
    match result {
        Ok(what) => println!("  ok    {name}: {what}"),
        Err(GitHubError::Decode(why)) => {
            println!("  ok    {name}: (Prism's example answer not understood: {why})")
        }
        Err(e) => {
            println!("  FAIL  {name}: {e}");
            problems.push(format!("{name}: {e}"));
        }
    }
}

/// [`note`] for the dashboard's OAuth client (its own error type).
fn note_web(
    name: &str,
    result: Result<String, stagebot::web::WebError>,
    problems: &mut Vec<String>,
) {
    match result {
        Ok(what) => println!("  ok    {name}: {what}"),
        Err(e) if e.to_string().contains("not the expected JSON") => {
            println!("  ok    {name}: (Prism's example answer not understood: {e})")
        }
        Err(e) => {
            println!("  FAIL  {name}: {e}");
            problems.push(format!("{name}: {e}"));
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(upstream) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("STAGEBOT_CONFORMANCE_URL").ok())
    else {
        eprintln!("usage: conformance <prism-url>   (or STAGEBOT_CONFORMANCE_URL)");
        return ExitCode::from(2);
    };
    match run(upstream.trim_end_matches('/').to_owned()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            eprintln!("\nconformance FAILED:");
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(upstream: String) -> Result<(), Vec<String>> {
    let fatal = |what: &str, e: &dyn std::fmt::Display| vec![format!("{what}: {e}")];
    // The check is only worth something if Prism validates requests: make sure it refuses one.
    let probe = reqwest::Client::new()
        .post(format!(
            "{upstream}/repos/octo-org/webapp/statuses/6dcb09b5b57875f334f61aebed695e2e4193db5e"
        ))
        .json(&serde_json::json!({ "state": "bogus", "context": "probe" }))
        .send()
        .await
        .map_err(|e| fatal("reach Prism", &e))?;
    if !probe.status().is_client_error() {
        return Err(vec![format!(
            "Prism accepted an invalid request ({}): is request validation off?",
            probe.status()
        )]);
    }
    println!(
        "Prism validates requests (an invalid status was answered {})",
        probe.status()
    );

    let proxy = Proxy {
        upstream,
        client: reqwest::Client::new(),
        log: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fatal("bind the proxy", &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fatal("proxy address", &e))?;
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gh = GitHub::new(GitHubConfig {
        api_url: format!("http://{addr}"),
        app_id: FAKE_APP_ID,
        private_key_pem: Secret::new(TEST_PRIVATE_KEY_PEM),
        retry: RetryPolicy::none(),
    })
    .map_err(|e| fatal("client", &e))?;
    let repo: RepoName = "octo-org/webapp".parse().map_err(|e| fatal("repo", &e))?;
    let sha = Sha::new("6dcb09b5b57875f334f61aebed695e2e4193db5e").map_err(|e| fatal("sha", &e))?;
    let pr = PrNumber(42);
    let mut problems = Vec::new();

    println!("calls:");
    note(
        "installation_for_repo",
        gh.installation_for_repo(&repo)
            .await
            .map(|id| format!("installation {id}")),
        &mut problems,
    );
    note(
        "installation_token",
        gh.installation_token(1).await.map(|_| "minted".to_owned()),
        &mut problems,
    );
    note(
        "scoped_token (one repository, contents: read)",
        gh.scoped_token(1, repo.name())
            .await
            .map(|_| "minted".to_owned()),
        &mut problems,
    );
    let rc = gh.repo(1, repo.clone());
    note(
        "upsert_sticky_comment (search)",
        rc.upsert_sticky_comment(pr, None, "| env | status |")
            .await
            .map(|id| format!("comment {id}")),
        &mut problems,
    );
    note(
        "upsert_sticky_comment (known id)",
        rc.upsert_sticky_comment(pr, Some(1), "| env | status |")
            .await
            .map(|id| format!("comment {id}")),
        &mut problems,
    );
    note(
        "reply",
        rc.reply(pr, "Deployed")
            .await
            .map(|id| format!("comment {id}")),
        &mut problems,
    );
    for reaction in [
        Reaction::Eyes,
        Reaction::Rocket,
        Reaction::Confused,
        Reaction::ThumbsUp,
    ] {
        note(
            &format!("react {}", reaction.as_str()),
            rc.react(1, reaction).await.map(|()| "reacted".to_owned()),
            &mut problems,
        );
    }
    for state in [
        StatusState::Pending,
        StatusState::Success,
        StatusState::Failure,
        StatusState::Error,
    ] {
        note(
            &format!("set_status {}", state.as_str()),
            rc.set_status(
                &sha,
                state,
                "stagebot/preview",
                &"long description ".repeat(20),
                Some("http://pr-42--webapp.localhost:3000"),
            )
            .await
            .map(|()| "set".to_owned()),
            &mut problems,
        );
    }
    note(
        "set_status without target_url",
        rc.set_status(
            &sha,
            StatusState::Pending,
            "stagebot/preview",
            "Deploying",
            None,
        )
        .await
        .map(|()| "set".to_owned()),
        &mut problems,
    );
    for (environment, transient, production) in [
        ("preview/pr-42-login", true, false),
        ("staging", false, false),
        ("production", false, true),
    ] {
        note(
            &format!("create_deployment {environment}"),
            rc.create_deployment(&NewDeployment {
                git_ref: sha.clone(),
                environment: environment.to_owned(),
                description: "stagebot deploy".to_owned(),
                transient_environment: transient,
                production_environment: production,
                payload: serde_json::json!({ "stagebot": { "schema": 1, "attempt": 7, "environment": environment } }),
            })
            .await
            .map(|id| format!("deployment {id}")),
            &mut problems,
        );
    }
    note(
        "deployments (list by environment and sha)",
        rc.deployments("preview/pr-42-login", &sha)
            .await
            .map(|list| format!("{} deployment(s)", list.len())),
        &mut problems,
    );
    for state in [
        DeploymentState::Queued,
        DeploymentState::InProgress,
        DeploymentState::Success,
        DeploymentState::Failure,
        DeploymentState::Error,
        DeploymentState::Inactive,
    ] {
        let success = state == DeploymentState::Success;
        note(
            &format!("create_deployment_status {}", state.as_str()),
            rc.create_deployment_status(
                1,
                &NewDeploymentStatus {
                    state,
                    environment_url: success
                        .then(|| "http://pr-42--webapp.localhost:3000".to_owned()),
                    log_url: success.then(|| "http://stagebot.localhost/logs/1".to_owned()),
                    description: "x".repeat(200),
                    auto_inactive: success.then_some(false),
                },
            )
            .await
            .map(|()| "created".to_owned()),
            &mut problems,
        );
    }
    note(
        "permission",
        rc.permission("octocat").await.map(|p| format!("{p}")),
        &mut problems,
    );
    note(
        "file_at",
        rc.file_at(".github/stagebot.yml", sha.as_str())
            .await
            .map(|f| format!("{} bytes", f.map_or(0, |f| f.len()))),
        &mut problems,
    );
    note(
        "pull_request",
        rc.pull_request(pr)
            .await
            .map(|p| format!("#{} {}", p.number, p.head_sha)),
        &mut problems,
    );
    note(
        "open_pulls",
        rc.open_pulls()
            .await
            .map(|ps| format!("{} pulls", ps.len())),
        &mut problems,
    );
    note(
        "repository",
        rc.repository()
            .await
            .map(|r| format!("default branch {}", r.default_branch)),
        &mut problems,
    );
    note(
        "branch_head",
        rc.branch_head("release/1.2")
            .await
            .map(|s| format!("{s:?}")),
        &mut problems,
    );
    note(
        "ci_results (check runs + combined status)",
        rc.ci_results(&sha)
            .await
            .map(|r| format!("{} result(s)", r.len())),
        &mut problems,
    );
    // The catch-up (src/catchup.rs) and `stagebot recover` (src/recover.rs).
    let mut first_delivery = None;
    note(
        "visit_hook_deliveries",
        gh.visit_hook_deliveries(|page| {
            first_delivery = page.first().map(|d| d.id);
            true
        })
        .await
        .map(|()| format!("first entry {first_delivery:?}")),
        &mut problems,
    );
    note(
        "redeliver",
        gh.redeliver(first_delivery.unwrap_or(12345678))
            .await
            .map(|()| "requested".to_owned()),
        &mut problems,
    );
    note(
        "installations",
        gh.installations()
            .await
            .map(|is| format!("{} installations", is.len())),
        &mut problems,
    );
    note(
        "installation_repositories",
        gh.installation_repositories(1)
            .await
            .map(|rs| format!("{} repositories", rs.len())),
        &mut problems,
    );
    note(
        "all_deployments",
        rc.all_deployments()
            .await
            .map(|ds| format!("{} deployments", ds.len())),
        &mut problems,
    );
    note(
        "deployment_statuses",
        rc.deployment_statuses(1)
            .await
            .map(|s| format!("{} statuses", s.len())),
        &mut problems,
    );
    note(
        "find_sticky_comment",
        rc.find_sticky_comment(pr).await.map(|id| format!("{id:?}")),
        &mut problems,
    );
    // The manifest flow's last step (/setup/callback, src/setup.rs): unauthenticated.
    note(
        "create_app_from_manifest (apps/create-from-manifest)",
        stagebot::github::create_app_from_manifest(&format!("http://{addr}"), "a1b2c3d4e5f6")
            .await
            .map(|app| format!("app {} ({})", app.id, app.slug)),
        &mut problems,
    );

    // "Sign in with GitHub" (src/web/): the user-to-server calls made with the user's token.
    match stagebot::web::oauth_client::OAuthClient::new(
        "https://github.com",
        &format!("http://{addr}"),
        FAKE_APP_ID,
    ) {
        Ok(oauth) => {
            let token = Secret::new("ghu_16C7e42F292c6912E7710c838347Ae178B4a");
            note_web(
                "signed_in (GET /user, /user/installations)",
                oauth
                    .signed_in(&token)
                    .await
                    .map(|s| format!("@{}, {} repositories", s.login, s.repos.len())),
                &mut problems,
            );
            note_web(
                "installation_repositories (GET /user/installations/1/repositories)",
                oauth
                    .installation_repositories(&token, 1)
                    .await
                    .map(|r| format!("{} repositories", r.len())),
                &mut problems,
            );
        }
        Err(e) => problems.push(format!("OAuth client: {e}")),
    }

    let log = proxy.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!("\nexchanges with Prism ({}):", log.len());
    let mut response_only = 0;
    for x in &log {
        let (ours, theirs) = x
            .violations
            .as_deref()
            .map(request_violations)
            .unwrap_or_default();
        let flag = if x.status >= 400 || !ours.is_empty() {
            "FAIL"
        } else {
            "ok  "
        };
        println!("  {flag}  {} {} -> {}", x.method, x.path, x.status);
        for v in &ours {
            println!("          sl-violations (request): {v}");
            problems.push(format!("{} {}: request violation {v}", x.method, x.path));
        }
        for v in &theirs {
            response_only += 1;
            println!("          sl-violations (Prism's example answer, not ours): {v}");
        }
        if x.status >= 400 {
            println!("          answer: {}", x.answer);
            problems.push(format!(
                "{} {} answered {}: {}",
                x.method, x.path, x.status, x.answer
            ));
        }
    }
    if response_only > 0 {
        println!(
            "\n{response_only} violation(s) located in Prism's generated answers (spec examples vs schemas) were ignored"
        );
    }
    // Every route the product uses must have been exercised.
    let routes: [(&str, &str); 24] = [
        ("POST", "/app/installations/1/access_tokens"),
        ("GET", "/repos/octo-org/webapp/installation"),
        ("GET", "/repos/octo-org/webapp/issues/42/comments"),
        ("PATCH", "/repos/octo-org/webapp/issues/comments/"),
        ("POST", "/repos/octo-org/webapp/issues/42/comments"),
        ("POST", "/repos/octo-org/webapp/issues/comments/1/reactions"),
        ("POST", "/repos/octo-org/webapp/statuses/"),
        ("POST", "/repos/octo-org/webapp/deployments"),
        ("POST", "/repos/octo-org/webapp/deployments/1/statuses"),
        (
            "GET",
            "/repos/octo-org/webapp/deployments?environment=preview%2Fpr-42-login&sha=",
        ),
        (
            "GET",
            "/repos/octo-org/webapp/collaborators/octocat/permission",
        ),
        (
            "GET",
            "/repos/octo-org/webapp/contents/.github/stagebot.yml",
        ),
        ("GET", "/repos/octo-org/webapp/pulls/42"),
        ("GET", "/repos/octo-org/webapp/pulls?state=open"),
        ("GET", "/repos/octo-org/webapp/pulls"),
        ("GET", "/repos/octo-org/webapp/branches/release%2F1.2"),
        (
            "GET",
            "/repos/octo-org/webapp/commits/6dcb09b5b57875f334f61aebed695e2e4193db5e/check-runs",
        ),
        (
            "GET",
            "/repos/octo-org/webapp/commits/6dcb09b5b57875f334f61aebed695e2e4193db5e/status",
        ),
        ("GET", "/app/hook/deliveries?per_page=100"),
        ("POST", "/app/hook/deliveries/"),
        ("GET", "/app/installations?per_page=100"),
        ("GET", "/installation/repositories?per_page=100"),
        ("GET", "/repos/octo-org/webapp/deployments?per_page=100"),
        (
            "GET",
            "/repos/octo-org/webapp/deployments/1/statuses?per_page=100",
        ),
    ];
    // The user-to-server routes of the dashboard's sign-in.
    for (method, prefix) in [
        ("GET", "/user"),
        ("GET", "/user/installations?per_page=100"),
        ("GET", "/user/installations/1/repositories?per_page=100"),
    ] {
        if !log
            .iter()
            .any(|x| x.method == method && x.path.starts_with(prefix))
        {
            problems.push(format!("route never exercised: {method} {prefix}"));
        }
    }
    // The repository itself (every other path starts with it).
    if !log
        .iter()
        .any(|x| x.method == "GET" && x.path == "/repos/octo-org/webapp")
    {
        problems.push("route never exercised: GET /repos/octo-org/webapp".to_owned());
    }
    for (method, prefix) in routes {
        if !log
            .iter()
            .any(|x| x.method == method && x.path.starts_with(prefix))
        {
            problems.push(format!("route never exercised: {method} {prefix}"));
        }
    }
    if problems.is_empty() {
        println!(
            "\nconformance OK: {} exchanges, no 4xx/5xx, no request violations",
            log.len()
        );
        Ok(())
    } else {
        Err(problems)
    }
}
