//! The real GitHub client against the fake GitHub, over HTTP.

use std::time::{Duration, Instant};

use stagebot::fake_github::{FakeGitHub, FakePr, Fault, FaultKind, Method};
use stagebot::github::{
    DeploymentState, GitHub, GitHubConfig, GitHubError, NewDeployment, NewDeploymentStatus,
    Reaction, RepoClient, RetryPolicy, STICKY_MARKER, StatusState,
};
use stagebot::types::{Permission, PrNumber, RepoName, Secret, Sha};

const INSTALLATION: u64 = 77;
const HEAD: &str = "1111111111111111111111111111111111111111";
const OTHER_KEY: &str = include_str!("../../fixtures/keys/other-private-key.pem");

fn sha(s: &str) -> Sha {
    Sha::new(s).unwrap()
}

/// Retries that never sleep long: delays capped at 20 ms.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        max_total: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

struct World {
    fake: FakeGitHub,
    gh: GitHub,
    repo: RepoName,
    rc: RepoClient,
}

fn config(fake: &FakeGitHub) -> GitHubConfig {
    GitHubConfig {
        api_url: fake.url(),
        app_id: fake.app_id(),
        private_key_pem: fake.private_key_pem(),
        retry: fast_retry(),
    }
}

async fn world() -> World {
    let fake = FakeGitHub::start().await;
    let repo: RepoName = "octo/web".parse().unwrap();
    fake.add_installation(INSTALLATION, "octo");
    fake.add_repo(&repo, "main", INSTALLATION);
    fake.upsert_pr(
        &repo,
        FakePr::new(42, "login-page", sha(HEAD)).title("New login"),
    );
    let gh = GitHub::new(config(&fake)).unwrap();
    let rc = gh.repo(INSTALLATION, repo.clone());
    World { fake, gh, repo, rc }
}

impl World {
    fn token_mints(&self) -> usize {
        self.fake
            .requests_to(
                "POST",
                &format!("/app/installations/{INSTALLATION}/access_tokens"),
            )
            .len()
    }
}

fn app_jwt(key_pem: &str, iss: &str, iat: i64, exp: i64) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({ "iss": iss, "iat": iat, "exp": exp }),
        &key,
    )
    .unwrap()
}

async fn raw_status(url: &str, method: reqwest::Method, authorization: &str) -> u16 {
    reqwest::Client::new()
        .request(method, url)
        .header("authorization", authorization)
        .header("user-agent", "stagebot-tests")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

// ---- authentication ------------------------------------------------------------------------

#[tokio::test]
async fn installation_is_found_with_the_app_jwt() {
    let w = world().await;
    assert_eq!(
        w.gh.installation_for_repo(&w.repo).await.unwrap(),
        INSTALLATION
    );
    let unknown: RepoName = "octo/nope".parse().unwrap();
    let err = w.gh.installation_for_repo(&unknown).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn one_token_serves_many_calls() {
    let w = world().await;
    for _ in 0..3 {
        w.rc.pull_request(PrNumber(42)).await.unwrap();
        w.rc.permission("nobody").await.unwrap();
    }
    assert_eq!(w.token_mints(), 1);
    // The clone token is not the cached one: a fresh token scoped to the repository, read-only.
    assert_ne!(
        w.rc.clone_token().await.unwrap(),
        w.gh.installation_token(INSTALLATION).await.unwrap()
    );
    assert_eq!(w.token_mints(), 2);
    let m = w.gh.metrics();
    assert_eq!(
        m.calls,
        1 + 3 + 1 + 1,
        "a mint, three PR reads, one permission read (then cached), one scoped mint"
    );
    assert_eq!((m.retries, m.failures), (0, 0));
}

#[tokio::test]
async fn concurrent_callers_share_one_mint() {
    let w = world().await;
    let calls = (0..8).map(|_| {
        let rc = w.rc.clone();
        tokio::spawn(async move { rc.pull_request(PrNumber(42)).await })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(w.token_mints(), 1);
}

#[tokio::test]
async fn token_is_renewed_when_near_expiry() {
    let w = world().await;
    // Tokens living 4 minutes are inside the 5-minute renewal margin: each use mints anew.
    w.fake.set_token_lifetime(Duration::from_secs(4 * 60));
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    assert_eq!(w.token_mints(), 2);
    // A fresh one-hour token is then kept.
    w.fake.set_token_lifetime(Duration::from_secs(3600));
    for _ in 0..3 {
        w.rc.pull_request(PrNumber(42)).await.unwrap();
    }
    assert_eq!(w.token_mints(), 3);
}

#[tokio::test]
async fn revoked_token_is_replaced_once() {
    let w = world().await;
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    w.fake.revoke_tokens();
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    assert_eq!(w.token_mints(), 2);
    assert_eq!(w.gh.metrics().retries, 1);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let w = world().await;
    // Every token the fake issues is already expired: the client renews once, then gives up.
    w.fake.set_token_lifetime(Duration::ZERO);
    let err = w.rc.pull_request(PrNumber(42)).await.unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(w.token_mints(), 2);
    assert_eq!(w.gh.metrics().failures, 1);
}

#[tokio::test]
async fn fake_refuses_unknown_tokens_and_tokens_of_other_installations() {
    let w = world().await;
    let url = format!("{}/repos/octo/web/pulls/42", w.fake.url());
    assert_eq!(
        raw_status(&url, reqwest::Method::GET, "token ghs_made_up").await,
        401
    );
    assert_eq!(raw_status(&url, reqwest::Method::GET, "").await, 401);
    let token = w.gh.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(
        raw_status(
            &url,
            reqwest::Method::GET,
            &format!("token {}", token.expose())
        )
        .await,
        200
    );
    assert_eq!(
        raw_status(
            &url,
            reqwest::Method::GET,
            &format!("Bearer {}", token.expose())
        )
        .await,
        200
    );
    // A token of another installation does not see the repository.
    w.fake.add_installation(78, "someone-else");
    let other = w.gh.installation_token(78).await.unwrap();
    assert_eq!(
        raw_status(
            &url,
            reqwest::Method::GET,
            &format!("token {}", other.expose())
        )
        .await,
        404
    );
    // An installation token is not an app JWT.
    let mint = format!(
        "{}/app/installations/{INSTALLATION}/access_tokens",
        w.fake.url()
    );
    assert_eq!(
        raw_status(
            &mint,
            reqwest::Method::POST,
            &format!("Bearer {}", token.expose())
        )
        .await,
        401
    );
}

#[tokio::test]
async fn fake_refuses_bad_app_jwts() {
    let w = world().await;
    let url = format!(
        "{}/app/installations/{INSTALLATION}/access_tokens",
        w.fake.url()
    );
    let now = chrono::Utc::now().timestamp();
    let key = stagebot::fake_github::TEST_PRIVATE_KEY_PEM;
    let good = app_jwt(key, "4242", now - 60, now + 480);
    let post = |jwt: String| {
        let url = url.clone();
        async move { raw_status(&url, reqwest::Method::POST, &format!("Bearer {jwt}")).await }
    };
    assert_eq!(post(good.clone()).await, 201);
    // Signed with another key.
    assert_eq!(
        post(app_jwt(OTHER_KEY, "4242", now - 60, now + 480)).await,
        401
    );
    // Tampered signature.
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(post(tampered).await, 401);
    // Another app.
    assert_eq!(post(app_jwt(key, "4243", now - 60, now + 480)).await, 401);
    // Expired.
    assert_eq!(post(app_jwt(key, "4242", now - 700, now - 100)).await, 401);
    // Living longer than ten minutes.
    assert_eq!(post(app_jwt(key, "4242", now - 60, now + 1200)).await, 401);
    // Issued in the future.
    assert_eq!(post(app_jwt(key, "4242", now + 300, now + 500)).await, 401);
    // Unknown installation.
    let unknown = format!("{}/app/installations/999/access_tokens", w.fake.url());
    assert_eq!(
        raw_status(&unknown, reqwest::Method::POST, &format!("Bearer {good}")).await,
        404
    );

    // The client with the wrong key is refused and says so, without retrying.
    let wrong = GitHub::new(GitHubConfig {
        private_key_pem: Secret::new(OTHER_KEY),
        ..config(&w.fake)
    })
    .unwrap();
    let err = wrong.installation_for_repo(&w.repo).await.unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    let err = wrong
        .repo(INSTALLATION, w.repo.clone())
        .pull_request(PrNumber(42))
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    assert_eq!(wrong.metrics().retries, 0);
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    let fake = FakeGitHub::start().await;
    let bad_key = GitHub::new(GitHubConfig {
        private_key_pem: Secret::new(
            "-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----",
        ),
        ..config(&fake)
    });
    assert!(matches!(bad_key, Err(GitHubError::Auth(_))));
    let bad_url = GitHub::new(GitHubConfig {
        api_url: "not a url".into(),
        ..config(&fake)
    });
    assert!(matches!(bad_url, Err(GitHubError::Config(_))));
}

#[tokio::test]
async fn enterprise_base_path_is_kept() {
    let w = world().await;
    let ghes = GitHub::new(GitHubConfig {
        api_url: format!("{}/api/v3/", w.fake.url()),
        ..config(&w.fake)
    })
    .unwrap();
    let rc = ghes.repo(INSTALLATION, w.repo.clone());
    assert_eq!(
        rc.pull_request(PrNumber(42)).await.unwrap().title,
        "New login"
    );
    let paths: Vec<String> = w.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            format!("/api/v3/app/installations/{INSTALLATION}/access_tokens"),
            "/api/v3/repos/octo/web/pulls/42".to_owned(),
        ]
    );
}

// ---- the calls -----------------------------------------------------------------------------

#[tokio::test]
async fn sticky_comment_is_created_once_then_edited_in_place() {
    let w = world().await;
    let pr = PrNumber(42);
    // Someone quoting the marker does not own the sticky comment.
    w.fake.add_user_comment(
        &w.repo,
        pr,
        "mallory",
        &format!("{STICKY_MARKER}\nfake table"),
    );

    let id =
        w.rc.upsert_sticky_comment(pr, None, "| env | status |")
            .await
            .unwrap();
    let ours: Vec<_> = w
        .fake
        .comments(&w.repo, pr)
        .into_iter()
        .filter(|c| c.by_app)
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].id, id);
    assert_eq!(ours[0].author, "stagebot[bot]");
    assert_eq!(ours[0].body, format!("{STICKY_MARKER}\n| env | status |"));
    assert_eq!(ours[0].text(), "| env | status |");

    // Without a known id: found by the marker and edited.
    assert_eq!(
        w.rc.upsert_sticky_comment(pr, None, "v2").await.unwrap(),
        id
    );
    // With the known id: edited directly, no listing.
    w.fake.clear_requests();
    assert_eq!(
        w.rc.upsert_sticky_comment(pr, Some(id), "v3")
            .await
            .unwrap(),
        id
    );
    let methods: Vec<(String, String)> = w
        .fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        methods,
        [(
            "PATCH".to_owned(),
            format!("/repos/octo/web/issues/comments/{id}")
        )]
    );
    // A stale known id (comment deleted or from another PR): falls back to the search.
    assert_eq!(
        w.rc.upsert_sticky_comment(pr, Some(999_999), "v4")
            .await
            .unwrap(),
        id
    );
    // Unchanged body: found, not edited.
    w.fake.clear_requests();
    assert_eq!(
        w.rc.upsert_sticky_comment(pr, None, "v4").await.unwrap(),
        id
    );
    assert!(w.fake.requests_to("PATCH", "/").is_empty());

    let comments = w.fake.comments(&w.repo, pr);
    assert_eq!(comments.len(), 2, "mallory's and ours");
    assert_eq!(w.fake.comment_by_id(id).unwrap().text(), "v4");
    assert_eq!(
        w.fake
            .requests_to("POST", "/repos/octo/web/issues/42/comments")
            .len(),
        0
    );
}

#[tokio::test]
async fn sticky_comment_is_found_on_a_later_page() {
    let w = world().await;
    let pr = PrNumber(42);
    let id = w.rc.upsert_sticky_comment(pr, None, "table").await.unwrap();
    for i in 0..150 {
        w.fake
            .add_user_comment(&w.repo, pr, "chatty", &format!("comment {i}"));
    }
    // Ours is on the first page: the search stops there.
    w.fake.clear_requests();
    assert_eq!(
        w.rc.upsert_sticky_comment(pr, None, "table v2")
            .await
            .unwrap(),
        id
    );
    assert_eq!(
        w.fake
            .requests_to("GET", "/repos/octo/web/issues/42/comments")
            .len(),
        1
    );

    // A second PR whose only sticky comes after 150 others needs page 2.
    w.fake
        .upsert_pr(&w.repo, FakePr::new(43, "other", sha(HEAD)));
    for i in 0..150 {
        w.fake
            .add_user_comment(&w.repo, PrNumber(43), "chatty", &format!("comment {i}"));
    }
    let id43 =
        w.rc.reply(PrNumber(43), &format!("{STICKY_MARKER}\nold"))
            .await
            .unwrap();
    assert_eq!(
        w.rc.upsert_sticky_comment(PrNumber(43), None, "new")
            .await
            .unwrap(),
        id43
    );
    assert_eq!(w.fake.comment_by_id(id43).unwrap().text(), "new");
    assert_eq!(w.fake.comments(&w.repo, PrNumber(43)).len(), 151);
    let pages = w
        .fake
        .requests_to("GET", "/repos/octo/web/issues/43/comments");
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1].query.as_deref(), Some("per_page=100&page=2"));
}

#[tokio::test]
async fn replies_and_reactions() {
    let w = world().await;
    let command = w
        .fake
        .add_user_comment(&w.repo, PrNumber(42), "alice", "/stage");
    w.rc.react(command, Reaction::Eyes).await.unwrap();
    w.rc.react(command, Reaction::Eyes).await.unwrap();
    w.rc.react(command, Reaction::Rocket).await.unwrap();
    w.rc.react(command, Reaction::ThumbsUp).await.unwrap();
    assert_eq!(w.fake.reactions(command), ["eyes", "rocket", "+1"]);
    let err = w.rc.react(123_456, Reaction::Confused).await.unwrap_err();
    assert!(err.is_not_found());

    let id = w.rc.reply(PrNumber(42), "Deployed!").await.unwrap();
    let reply = w.fake.comment_by_id(id).unwrap();
    assert_eq!(
        (reply.body.as_str(), reply.by_app, reply.pr),
        ("Deployed!", true, PrNumber(42))
    );
    let err = w.rc.reply(PrNumber(404), "nobody home").await.unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn commit_statuses() {
    let w = world().await;
    let head = sha(HEAD);
    w.rc.set_status(
        &head,
        StatusState::Pending,
        "stagebot/preview",
        "Deploying",
        None,
    )
    .await
    .unwrap();
    let long = "x".repeat(300);
    w.rc.set_status(
        &head,
        StatusState::Success,
        "stagebot/preview",
        &long,
        Some("http://pr-42--web.localhost:3000"),
    )
    .await
    .unwrap();
    let statuses = w.fake.statuses(&w.repo, &head);
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        (statuses[0].state.as_str(), statuses[0].context.as_str()),
        ("pending", "stagebot/preview")
    );
    assert_eq!(statuses[1].state, "success");
    assert_eq!(statuses[1].description.chars().count(), 140);
    assert_eq!(
        statuses[1].target_url.as_deref(),
        Some("http://pr-42--web.localhost:3000")
    );
}

#[tokio::test]
async fn deployments_and_their_statuses() {
    let w = world().await;
    let id =
        w.rc.create_deployment(&NewDeployment {
            git_ref: sha(HEAD),
            environment: "preview/pr-42-login".into(),
            description: "Preview of #42".into(),
            transient_environment: true,
            production_environment: false,
            payload: serde_json::json!({ "stagebot": { "attempt": 7 } }),
        })
        .await
        .unwrap();
    let sent = &w.fake.requests_to("POST", "/repos/octo/web/deployments")[0].body;
    assert_eq!(sent["auto_merge"], false);
    assert_eq!(sent["required_contexts"], serde_json::json!([]));
    assert_eq!(
        sent["payload"],
        serde_json::json!({ "stagebot": { "attempt": 7 } })
    );
    assert_eq!(sent["ref"], HEAD);

    let status = |state, url: Option<&str>| NewDeploymentStatus {
        state,
        environment_url: url.map(str::to_owned),
        log_url: url.map(|u| format!("{u}/_logs")),
        description: "d".repeat(200),
        auto_inactive: None,
    };
    w.rc.create_deployment_status(id, &status(DeploymentState::InProgress, None))
        .await
        .unwrap();
    w.rc.create_deployment_status(
        id,
        &status(DeploymentState::Success, Some("http://pr-42.localhost")),
    )
    .await
    .unwrap();
    let deployments = w.fake.deployments(&w.repo, "preview/pr-42-login");
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(
        (d.id, d.sha.as_str(), d.transient, d.production),
        (id, HEAD, true, false)
    );
    let states: Vec<&str> = d.statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(
        d.statuses[1].environment_url.as_deref(),
        Some("http://pr-42.localhost")
    );
    assert_eq!(
        d.statuses[1].log_url.as_deref(),
        Some("http://pr-42.localhost/_logs")
    );
    assert_eq!(d.statuses[1].description.chars().count(), 140);

    w.rc.create_deployment_status(id, &status(DeploymentState::Inactive, None))
        .await
        .unwrap();
    assert_eq!(
        w.fake.deployments(&w.repo, "preview/pr-42-login")[0].last_state(),
        Some("inactive")
    );
    let err =
        w.rc.create_deployment_status(987_654, &status(DeploymentState::Queued, None))
            .await
            .unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn permissions_are_read_and_cached() {
    let w = world().await;
    w.fake.set_permission(&w.repo, "alice", Permission::Write);
    w.fake.set_permission(&w.repo, "mia", Permission::Maintain);
    w.fake.set_permission(&w.repo, "tom", Permission::Triage);
    w.fake.set_permission(&w.repo, "root", Permission::Admin);
    assert_eq!(w.rc.permission("alice").await.unwrap(), Permission::Write);
    assert_eq!(w.rc.permission("mia").await.unwrap(), Permission::Maintain);
    assert_eq!(w.rc.permission("tom").await.unwrap(), Permission::Triage);
    assert_eq!(w.rc.permission("root").await.unwrap(), Permission::Admin);
    assert_eq!(w.rc.permission("stranger").await.unwrap(), Permission::None);

    w.fake.clear_requests();
    w.fake.set_permission(&w.repo, "alice", Permission::Read);
    assert_eq!(
        w.rc.permission("alice").await.unwrap(),
        Permission::Write,
        "cached"
    );
    assert_eq!(
        w.rc.permission("ALICE").await.unwrap(),
        Permission::Write,
        "logins are case-insensitive"
    );
    assert_eq!(
        w.rc.permission("stranger").await.unwrap(),
        Permission::None,
        "404s are cached too"
    );
    // The cache is shared by every RepoClient of the same GitHub.
    let again = w.gh.repo(INSTALLATION, w.repo.clone());
    assert_eq!(again.permission("alice").await.unwrap(), Permission::Write);
    assert!(w.fake.requests().is_empty(), "{:?}", w.fake.requests());
}

#[tokio::test]
async fn files_at_a_ref() {
    let w = world().await;
    let config = "build: make\nstart: ./serve --port $PORT\n# ünïcödé\n".repeat(20);
    w.fake
        .set_file(&w.repo, HEAD, ".github/stagebot.yml", &config);
    w.fake.set_file(&w.repo, "main", "README.md", "hello");
    assert_eq!(
        w.rc.file_at(".github/stagebot.yml", HEAD)
            .await
            .unwrap()
            .as_deref(),
        Some(config.as_str())
    );
    // A branch name resolves to the PR head's commit.
    assert_eq!(
        w.rc.file_at(".github/stagebot.yml", "login-page")
            .await
            .unwrap()
            .as_deref(),
        Some(config.as_str())
    );
    assert_eq!(
        w.rc.file_at("README.md", "main").await.unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(w.rc.file_at("README.md", HEAD).await.unwrap(), None);
    assert_eq!(w.rc.file_at("no/such file.yml", HEAD).await.unwrap(), None);
}

#[tokio::test]
async fn pull_requests() {
    let w = world().await;
    w.fake.upsert_pr(
        &w.repo,
        FakePr::new(
            43,
            "patch-1",
            sha("2222222222222222222222222222222222222222"),
        )
        .author("forker")
        .fork()
        .draft(),
    );
    w.fake
        .upsert_pr(&w.repo, FakePr::new(44, "done", sha(HEAD)));
    assert!(w.fake.set_pr_state(&w.repo, PrNumber(44), false, true));

    let pr = w.rc.pull_request(PrNumber(42)).await.unwrap();
    assert_eq!(pr.number, PrNumber(42));
    assert!(pr.open && !pr.merged && !pr.draft && !pr.fork);
    assert_eq!(
        (
            pr.title.as_str(),
            pr.head_ref.as_str(),
            pr.base_ref.as_str()
        ),
        ("New login", "login-page", "main")
    );
    assert_eq!(pr.head_sha, sha(HEAD));
    assert_eq!(pr.author, "octocat");
    assert_eq!(pr.head_clone_url, "https://github.com/octo/web.git");

    let fork = w.rc.pull_request(PrNumber(43)).await.unwrap();
    assert!(fork.fork && fork.draft && fork.open);
    assert_eq!(fork.head_clone_url, "https://github.com/forker/web.git");

    let merged = w.rc.pull_request(PrNumber(44)).await.unwrap();
    assert!(!merged.open && merged.merged);

    let err = w.rc.pull_request(PrNumber(45)).await.unwrap_err();
    assert!(err.is_not_found());

    let mut open: Vec<u64> =
        w.rc.open_pulls()
            .await
            .unwrap()
            .iter()
            .map(|p| p.number.0)
            .collect();
    open.sort_unstable();
    assert_eq!(open, [42, 43]);
}

#[tokio::test]
async fn open_pulls_follows_pages() {
    let w = world().await;
    for n in 100..330 {
        w.fake
            .upsert_pr(&w.repo, FakePr::new(n, &format!("b{n}"), sha(HEAD)));
    }
    w.fake.clear_requests();
    let open = w.rc.open_pulls().await.unwrap();
    assert_eq!(open.len(), 231);
    let pages = w.fake.requests_to("GET", "/repos/octo/web/pulls");
    assert_eq!(pages.len(), 3);
    assert!(pages[2].query.as_deref().unwrap().contains("page=3"));
}

// ---- resilience ----------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let w = world().await;
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    let before = w.gh.metrics();
    w.fake
        .inject_fault(Fault::new("/repos/octo/web/pulls", 2, FaultKind::Status500));
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    let after = w.gh.metrics();
    assert_eq!(after.calls - before.calls, 3);
    assert_eq!(after.retries - before.retries, 2);
    assert_eq!(after.failures, 0);
    let statuses: Vec<u16> = w
        .fake
        .requests_to("GET", "/repos/octo/web/pulls/42")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 500, 500, 200]);
}

#[tokio::test]
async fn rate_limits_are_retried_honoring_retry_after_within_the_cap() {
    let w = world().await;
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    w.fake.inject_fault(
        Fault::new(
            "/repos/octo/web/issues",
            2,
            FaultKind::TooMany429 { retry_after_s: 1 },
        )
        .method(Method::POST),
    );
    w.fake.inject_fault(Fault::new(
        "/repos/octo/web/statuses",
        1,
        FaultKind::SecondaryRateLimit403 { retry_after_s: 1 },
    ));
    let started = Instant::now();
    w.rc.reply(PrNumber(42), "hi").await.unwrap();
    w.rc.set_status(
        &sha(HEAD),
        StatusState::Pending,
        "stagebot/preview",
        "",
        None,
    )
    .await
    .unwrap();
    // Retry-After: 1 s was honored as 20 ms (the test policy's max_delay).
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(w.gh.metrics().retries, 3);
    assert_eq!(
        w.fake.comments(&w.repo, PrNumber(42)).len(),
        1,
        "no duplicate comment"
    );
    assert_eq!(w.fake.statuses(&w.repo, &sha(HEAD)).len(), 1);
}

#[tokio::test]
async fn persistent_failures_exhaust_the_attempts() {
    let w = world().await;
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    w.fake.inject_fault(Fault::new(
        "/repos/octo/web/pulls",
        100,
        FaultKind::Status500,
    ));
    let err = w.rc.pull_request(PrNumber(42)).await.unwrap_err();
    match &err {
        GitHubError::RetriesExhausted { attempts, last } => {
            assert_eq!(*attempts, 5);
            assert!(last.contains("500"), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(err.is_retryable(), "a later attempt may succeed");
    let m = w.gh.metrics();
    assert_eq!((m.retries, m.failures), (4, 1));
}

#[tokio::test]
async fn the_total_deadline_stops_retries_early() {
    let w = world().await;
    let gh = GitHub::new(GitHubConfig {
        retry: RetryPolicy {
            max_attempts: 50,
            base_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(40),
            max_total: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..config(&w.fake)
    })
    .unwrap();
    w.fake.inject_fault(Fault::new(
        "/repos/octo/web/installation",
        100,
        FaultKind::Status500,
    ));
    let started = Instant::now();
    let err = gh.installation_for_repo(&w.repo).await.unwrap_err();
    assert!(
        matches!(err, GitHubError::RetriesExhausted { attempts, .. } if attempts < 50),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn unprocessable_and_not_found_are_final_at_once() {
    let w = world().await;
    w.rc.pull_request(PrNumber(42)).await.unwrap();
    w.fake.inject_fault(
        Fault::new(
            "/repos/octo/web/deployments",
            1,
            FaultKind::Unprocessable422,
        )
        .method(Method::POST),
    );
    let err =
        w.rc.create_deployment(&NewDeployment {
            git_ref: sha(HEAD),
            environment: "staging".into(),
            description: String::new(),
            transient_environment: false,
            production_environment: false,
            payload: serde_json::json!({}),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::Unprocessable { message } if message.contains("Validation Failed")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let err = w.rc.pull_request(PrNumber(9)).await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    let m = w.gh.metrics();
    assert_eq!(
        (m.retries, m.failures),
        (0, 1),
        "the 404 is not counted as a failure"
    );
    assert_eq!(
        w.fake
            .requests_to("POST", "/repos/octo/web/deployments")
            .len(),
        1
    );
    assert!(w.fake.all_deployments(&w.repo).is_empty());
}

#[tokio::test]
async fn connection_failures_are_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fake = FakeGitHub::start().await;
    let gh = GitHub::new(GitHubConfig {
        api_url: format!("http://127.0.0.1:{port}"),
        ..config(&fake)
    })
    .unwrap();
    let err = gh
        .installation_for_repo(&"octo/web".parse().unwrap())
        .await
        .unwrap_err();
    match &err {
        GitHubError::RetriesExhausted { attempts: 5, last } => {
            assert!(last.contains("transport"), "{last}")
        }
        other => panic!("expected RetriesExhausted after 5 attempts, got {other:?}"),
    }
    assert_eq!(gh.metrics().retries, 4);
}

#[tokio::test]
async fn unknown_routes_are_404_and_recorded() {
    let w = world().await;
    let token = w.gh.installation_token(INSTALLATION).await.unwrap();
    let url = format!("{}/repos/octo/web/milestones?state=open", w.fake.url());
    assert_eq!(
        raw_status(
            &url,
            reqwest::Method::GET,
            &format!("token {}", token.expose())
        )
        .await,
        404
    );
    assert_eq!(
        raw_status(&format!("{}/nope", w.fake.url()), reqwest::Method::GET, "").await,
        404
    );
    let log = w.fake.requests();
    let last_two: Vec<(&str, &str, Option<&str>, u16)> = log[log.len() - 2..]
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.query.as_deref(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        last_two,
        [
            ("GET", "/repos/octo/web/milestones", Some("state=open"), 404),
            ("GET", "/nope", None, 404),
        ]
    );
}

async fn deploy(w: &World, environment: &str, git_ref: &str, payload: serde_json::Value) -> u64 {
    // `git_ref` may be a branch: the client takes a `Sha`, so branches go through raw HTTP.
    if let Ok(sha) = Sha::new(git_ref) {
        return w
            .rc
            .create_deployment(&NewDeployment {
                git_ref: sha,
                environment: environment.into(),
                description: String::new(),
                transient_environment: environment.starts_with("preview/"),
                production_environment: environment == "production",
                payload,
            })
            .await
            .unwrap();
    }
    let token = w.gh.installation_token(INSTALLATION).await.unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/repos/octo/web/deployments", w.fake.url()))
        .header("authorization", format!("token {}", token.expose()))
        .json(
            &serde_json::json!({ "ref": git_ref, "environment": environment, "payload": payload }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].as_u64().unwrap()
}

async fn raw_list(w: &World, query: &str) -> (Vec<u64>, String) {
    let token = w.gh.installation_token(INSTALLATION).await.unwrap();
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/repos/octo/web/deployments?{query}",
            w.fake.url()
        ))
        .header("authorization", format!("token {}", token.expose()))
        .send()
        .await
        .unwrap();
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let items: Vec<serde_json::Value> = resp.json().await.unwrap();
    (
        items.iter().map(|d| d["id"].as_u64().unwrap()).collect(),
        link,
    )
}

#[tokio::test]
async fn deployments_are_listed_newest_first_and_filtered_like_github() {
    let w = world().await;
    let other = "2222222222222222222222222222222222222222";
    let d1 = deploy(
        &w,
        "staging",
        HEAD,
        serde_json::json!({ "stagebot": { "attempt": 1 } }),
    )
    .await;
    // a branch ref (the PR head `login-page`, at HEAD) and a payload sent as a JSON string
    let d2 = deploy(&w, "staging", "login-page", serde_json::json!("{\"x\":1}")).await;
    let d3 = deploy(&w, "production", HEAD, serde_json::json!({})).await;
    let d4 = deploy(&w, "staging", other, serde_json::json!({})).await;

    let listed = w.rc.deployments("staging", &sha(HEAD)).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        [d2, d1],
        "newest first, by environment and commit"
    );
    assert_eq!(listed[0].payload, serde_json::json!({ "x": 1 }));
    assert_eq!(
        listed[1].payload,
        serde_json::json!({ "stagebot": { "attempt": 1 } })
    );
    assert!(
        listed
            .iter()
            .all(|d| d.sha == HEAD && d.environment == "staging")
    );
    let q = &w.fake.requests_to("GET", "/repos/octo/web/deployments")[0];
    assert_eq!(
        q.query.as_deref(),
        Some(format!("environment=staging&sha={HEAD}&per_page=100").as_str())
    );

    assert_eq!(
        raw_list(&w, "ref=login-page").await.0,
        [d2],
        "ref is the ref as given"
    );
    assert_eq!(raw_list(&w, &format!("ref={HEAD}")).await.0, [d3, d1]);
    assert_eq!(raw_list(&w, "task=deploy").await.0, [d4, d3, d2, d1]);
    assert!(raw_list(&w, "task=migrate").await.0.is_empty());
    assert_eq!(raw_list(&w, "environment=production").await.0, [d3]);
    let (page, link) = raw_list(&w, "per_page=1&page=2").await;
    assert_eq!(page, [d3]);
    assert!(
        link.contains("rel=\"next\"") && link.contains("rel=\"prev\""),
        "{link}"
    );
}

#[tokio::test]
async fn auto_inactive_follows_githubs_documented_rule() {
    let w = world().await;
    let post = |id: u64, state: DeploymentState, auto_inactive: Option<bool>| {
        let rc = w.rc.clone();
        async move {
            rc.create_deployment_status(
                id,
                &NewDeploymentStatus {
                    state,
                    environment_url: None,
                    log_url: None,
                    description: String::new(),
                    auto_inactive,
                },
            )
            .await
            .unwrap()
        }
    };
    let last = |environment: &str| -> Vec<String> {
        w.fake
            .deployments(&w.repo, environment)
            .iter()
            .map(|d| d.last_state().unwrap_or("none").to_owned())
            .collect()
    };
    // staging (neither transient nor production): a success makes earlier successes inactive,
    // not a deployment that never succeeded
    let s1 = deploy(&w, "staging", HEAD, serde_json::json!({})).await;
    let s2 = deploy(&w, "staging", HEAD, serde_json::json!({})).await;
    let s3 = deploy(&w, "staging", HEAD, serde_json::json!({})).await;
    post(s1, DeploymentState::Success, None).await;
    post(s2, DeploymentState::InProgress, None).await;
    post(s3, DeploymentState::Success, None).await;
    assert_eq!(last("staging"), ["inactive", "in_progress", "success"]);
    // auto_inactive false leaves the earlier success alone
    let s4 = deploy(&w, "staging", HEAD, serde_json::json!({})).await;
    post(s4, DeploymentState::Success, Some(false)).await;
    assert_eq!(
        last("staging"),
        ["inactive", "in_progress", "success", "success"]
    );
    // production and transient environments are excluded
    for environment in ["production", "preview/pr-42-login"] {
        let a = deploy(&w, environment, HEAD, serde_json::json!({})).await;
        let b = deploy(&w, environment, HEAD, serde_json::json!({})).await;
        post(a, DeploymentState::Success, None).await;
        post(b, DeploymentState::Success, None).await;
        assert_eq!(last(environment), ["success", "success"], "{environment}");
    }
}
