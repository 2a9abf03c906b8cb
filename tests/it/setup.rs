//! One-click registration (`/setup`, GitHub's manifest flow) and setup mode, end to end with
//! the real binary against the fake GitHub: `stagebot serve` without credentials starts in setup
//! mode, the page's form goes to the fake's `/settings/apps/new`, its redirect comes back to
//! `/setup/callback`, and the same process then serves as the new App: a webhook signed with
//! the new secret is accepted and answered through the GitHub API as the new App.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stagebot::event::payloads::{self, CommentPayload};
use stagebot::fake_github::{FakeGitHub, FakePr};
use stagebot::types::{PrNumber, RepoName, Sha};
use stagebot::webhook::sign;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_stagebot");
/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-token-0123456789abcdef";

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `stagebot serve` as a child process, killed when dropped.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(data_dir: &Path, fake: &FakeGitHub, env: &[(&str, &str)]) -> Serve {
        let addr = free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("GITHUB_API_URL", fake.url())
            .env("GITHUB_WEB_URL", fake.url())
            .env("STAGEBOT_DATA_DIR", data_dir)
            .env("STAGEBOT_LISTEN", addr.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut serve = Serve {
            child,
            base: format!("http://{addr}"),
        };
        let client = http();
        let url = format!("{}/healthz", serve.base);
        let child = &mut serve.child;
        poll("the server to answer /healthz", async || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "stagebot serve exited early ({status}); see {}",
                    data_dir.with_extension("log").display()
                );
            }
            let resp = client.get(&url).send().await.ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that does not follow redirects (the test follows them, looking at each).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(url: &str, bearer: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = http().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// POST a delivery signed with `secret`; the status.
async fn deliver(base: &str, secret: &str, event: &str, delivery: &str, payload: &Value) -> u16 {
    let body = serde_json::to_vec(payload).unwrap();
    http()
        .post(format!("{base}/webhook"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sign(secret, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first `attr="…"` after `anchor` in `html`, unescaped.
fn attr_after(html: &str, anchor: &str, attr: &str) -> String {
    let at = html
        .find(anchor)
        .unwrap_or_else(|| panic!("no {anchor:?} in {html}"));
    let rest = &html[at..];
    let key = format!("{attr}=\"");
    let start = rest
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {rest}"))
        + key.len();
    let end = rest[start..].find('"').unwrap() + start;
    unescape(&rest[start..end])
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

/// Seed the fake with an installation, a repository and PR #7, and have `alice` comment
/// `/help` on it; the comment's delivery payload.
fn help_comment(fake: &FakeGitHub) -> Value {
    let repo: RepoName = "acme/webapp".parse().unwrap();
    fake.add_installation(1, "acme");
    fake.add_repo(&repo, "main", 1);
    fake.upsert_pr(
        &repo,
        FakePr::new(7, "feature", Sha::new("abcdef1234567890").unwrap()),
    );
    another_help_comment(fake)
}

/// `alice` comments `/help` on PR #7 again; the delivery payload.
fn another_help_comment(fake: &FakeGitHub) -> Value {
    let repo: RepoName = "acme/webapp".parse().unwrap();
    let id = fake.add_user_comment(&repo, PrNumber(7), "alice", "/help");
    let mut p = CommentPayload::new(&repo, 7, "/help");
    p.comment_id = id;
    p.author_login = "alice".into();
    p.author_association = "MEMBER".into();
    p.installation_id = Some(1);
    payloads::issue_comment(&p)
}

/// Replies by the App on PR #7.
fn app_replies(fake: &FakeGitHub) -> usize {
    let repo: RepoName = "acme/webapp".parse().unwrap();
    fake.comments(&repo, PrNumber(7))
        .iter()
        .filter(|c| c.by_app)
        .count()
}

fn delivery_id(n: u64) -> String {
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_registers_the_app_and_the_same_process_serves_as_it() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let fake = FakeGitHub::start().await;
    let serve = Serve::start(&data, &fake, &[("STAGEBOT_ADMIN_TOKEN", TOKEN)]).await;
    let base = serve.base.clone();

    // Setup mode: ready (so a load balancer lets /setup through), saying why; webhooks wait.
    let (status, _, body) = get(&format!("{base}/readyz"), None).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["setup_mode"], true, "{body}");
    assert!(
        body.contains("setup mode: no App configured"),
        "readyz says why: {body}"
    );
    let ping = serde_json::json!({ "zen": "x" });
    assert_eq!(
        deliver(&base, "anything", "ping", &delivery_id(1), &ping).await,
        503
    );
    assert_eq!(get(&format!("{base}/"), None).await.0, 503);

    // /setup wants the admin token, which is set, even before an App exists.
    assert_eq!(get(&format!("{base}/setup"), None).await.0, 403);
    assert_eq!(
        get(&format!("{base}/setup?token=wrong-token"), None)
            .await
            .0,
        403
    );
    // A hostile organization name is refused, and shown escaped.
    let (status, _, body) = get(
        &format!("{base}/setup?token={TOKEN}&org=%3Cscript%3Ealert(1)%3C/script%3E"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        !body.contains("<script>") && body.contains("&lt;script&gt;"),
        "{body}"
    );
    // For an organization: the form goes to the organization's page.
    let (status, _, body) = get(&format!("{base}/setup?token={TOKEN}&org=acme"), None).await;
    assert_eq!(status, 200, "{body}");
    let org_action = attr_after(&body, "<form method=post", "action");
    assert!(
        org_action.starts_with(&format!(
            "{}/organizations/acme/settings/apps/new?state=",
            fake.url()
        )),
        "{org_action}"
    );

    // The page (token as a header): a form posting the manifest to the fake's web side.
    let (status, headers, page) = get(&format!("{base}/setup"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let action = attr_after(&page, "<form method=post", "action");
    assert!(
        action.starts_with(&format!("{}/settings/apps/new?state=", fake.url())),
        "{action}"
    );
    let state = query_param(&action, "state");
    assert_ne!(
        query_param(&org_action, "state"),
        state,
        "states are random"
    );
    let manifest_text = attr_after(&page, "name=manifest", "value");
    let manifest: Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(manifest["name"], "stagebot");
    assert_eq!(manifest["url"], format!("{base}/"));
    assert_eq!(
        manifest["hook_attributes"]["url"],
        format!("{base}/webhook")
    );
    assert_eq!(manifest["redirect_url"], format!("{base}/setup/callback"));
    assert_eq!(
        manifest["callback_urls"],
        serde_json::json!([format!("{base}/auth/callback")])
    );
    assert_eq!(manifest["default_permissions"]["deployments"], "write");

    // The browser posts the form to GitHub, which creates the App and redirects back.
    let resp = http()
        .post(&action)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("manifest={}", form_encode(&manifest_text)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{base}/setup/callback?code=")),
        "{location}"
    );
    assert_eq!(query_param(&location, "state"), state);
    let code = query_param(&location, "code");
    let registered = fake.registered_apps();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        registered[0].manifest, manifest,
        "GitHub got the page's manifest"
    );

    // A forged state is refused before the code is spent.
    let (status, _, _) = get(
        &format!("{base}/setup/callback?code={code}&state=forged"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(!fake.registered_apps()[0].converted);

    // GitHub's redirect: the code is exchanged, the credentials written.
    let (status, _, body) = get(&location, None).await;
    assert_eq!(status, 200, "{body}");
    let app = fake.registered_apps().remove(0);
    assert!(app.converted);
    assert!(body.contains(&format!("id {}", app.id)), "{body}");
    let file = data.join("app.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "app.json is 0600");
    }
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["app_id"], app.id);
    assert_eq!(written["webhook_secret"], app.webhook_secret.as_str());
    assert_eq!(written["client_id"], app.client_id.as_str());
    assert_eq!(written["client_secret"], app.client_secret.as_str());
    assert!(
        written["private_key_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    // The same redirect again (a replayed state) is refused.
    assert_eq!(get(&location, None).await.0, 400);
    // The full service starts in the same process.
    poll("the full service", async || {
        let (status, _, body) = get(&format!("{base}/readyz"), None).await;
        (status == 200 && body.contains("\"store\"")).then_some(())
    })
    .await;
    let pid_before = serve.child.id();
    // The code is spent too: with a fresh state, GitHub refuses it, and the page says so.
    let (_, _, page) = get(&format!("{base}/setup"), Some(TOKEN)).await;
    let fresh = query_param(&attr_after(&page, "<form method=post", "action"), "state");
    let (status, _, body) = get(
        &format!("{base}/setup/callback?code={code}&state={fresh}"),
        None,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not found"), "{body}");
    // A code that could reach another URL is refused before any call.
    let (_, _, page) = get(&format!("{base}/setup"), Some(TOKEN)).await;
    let fresh = query_param(&attr_after(&page, "<form method=post", "action"), "state");
    let conversions = fake.requests_to("POST", "/app-manifests/").len();
    let (status, _, _) = get(
        &format!("{base}/setup/callback?code=..%2Fapp%2Finstallations&state={fresh}"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        fake.requests_to("POST", "/app-manifests/").len(),
        conversions
    );

    // A webhook signed with the new secret is accepted and processed as the new App; one signed
    // with another secret is refused.
    let comment = help_comment(&fake);
    assert_eq!(
        deliver(
            &base,
            "stagebot-test-secret",
            "issue_comment",
            &delivery_id(2),
            &comment
        )
        .await,
        401
    );
    assert_eq!(
        deliver(
            &base,
            &app.webhook_secret,
            "issue_comment",
            &delivery_id(3),
            &comment
        )
        .await,
        202
    );
    poll("the App's reply to /help", async || {
        (app_replies(&fake) >= 1).then_some(())
    })
    .await;
    // The installation token was minted with a JWT of the new App (the fake is that App now
    // and refuses the old key).
    let mints = fake.requests_to("POST", "/app/installations/1/access_tokens");
    assert!(
        !mints.is_empty() && mints.iter().all(|r| r.status == 201),
        "{mints:?}"
    );
    assert_eq!(serve.child.id(), pid_before);

    // /setup now needs the admin token; with it, it offers to register again.
    assert_eq!(get(&format!("{base}/setup"), None).await.0, 403);
    let (status, _, body) = get(&format!("{base}/setup"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("configured already"), "{body}");

    // Registering again (with the token): the running server switches to the newer App at once.
    let action = attr_after(&body, "<form method=post", "action");
    let manifest_text = attr_after(&body, "name=manifest", "value");
    let resp = http()
        .post(&action)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("manifest={}", form_encode(&manifest_text)))
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (status, _, body) = get(&location, None).await;
    assert_eq!(status, 200, "{body}");
    let second = fake.registered_apps().remove(1);
    assert!(second.converted && second.id != app.id);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["app_id"], second.id);
    let mints_before = fake
        .requests_to("POST", "/app/installations/1/access_tokens")
        .len();
    let comment = another_help_comment(&fake);
    assert_eq!(
        deliver(
            &base,
            &app.webhook_secret,
            "issue_comment",
            &delivery_id(8),
            &comment
        )
        .await,
        401,
        "the first App's secret is retired"
    );
    assert_eq!(
        deliver(
            &base,
            &second.webhook_secret,
            "issue_comment",
            &delivery_id(9),
            &comment
        )
        .await,
        202
    );
    poll("the newer App's reply to /help", async || {
        (app_replies(&fake) >= 2).then_some(())
    })
    .await;
    // A fresh token, minted with a JWT naming the newer App (the fake checks `iss`).
    let mints = fake.requests_to("POST", "/app/installations/1/access_tokens");
    assert!(mints.len() > mints_before, "{mints:?}");
    assert!(mints.iter().all(|r| r.status == 201), "{mints:?}");
    assert_eq!(serve.child.id(), pid_before);
    drop(serve);

    // A restart without credentials in the environment uses app.json: no setup mode.
    let serve = Serve::start(&data, &fake, &[]).await;
    let (status, _, body) = get(&format!("{}/readyz", serve.base), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("setup_mode"), "{body}");
    assert_eq!(
        deliver(
            &serve.base,
            &second.webhook_secret,
            "ping",
            &delivery_id(4),
            &ping
        )
        .await,
        200
    );
    assert_eq!(
        deliver(
            &serve.base,
            "stagebot-test-secret",
            "ping",
            &delivery_id(5),
            &ping
        )
        .await,
        401
    );
    // No admin token this time: with an App configured, nobody may open /setup.
    let (status, _, body) = get(&format!("{}/setup", serve.base), None).await;
    assert_eq!(status, 403);
    assert!(body.contains("STAGEBOT_ADMIN_TOKEN"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_environment_win_over_app_json() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A registration through /setup left another App in the data dir.
    stagebot::credentials::AppCredentials {
        app_id: 9999,
        slug: "other".into(),
        name: "other".into(),
        html_url: "https://github.com/apps/other".into(),
        owner: None,
        private_key_pem: stagebot::types::Secret::new(
            stagebot::fake_github::MANIFEST_APP_PRIVATE_KEY_PEM,
        ),
        webhook_secret: stagebot::types::Secret::new("file-secret"),
        client_id: None,
        client_secret: None,
        created_at: chrono::Utc::now(),
    }
    .save(&data)
    .unwrap();
    let fake = FakeGitHub::start().await;
    let app_id = fake.app_id().to_string();
    let key = fake.private_key_pem();
    let serve = Serve::start(
        &data,
        &fake,
        &[
            ("APP_ID", app_id.as_str()),
            ("PRIVATE_KEY", key.expose()),
            ("WEBHOOK_SECRET", "env-secret"),
        ],
    )
    .await;
    let comment = help_comment(&fake);
    assert_eq!(
        deliver(
            &serve.base,
            "file-secret",
            "issue_comment",
            &delivery_id(6),
            &comment
        )
        .await,
        401
    );
    assert_eq!(
        deliver(
            &serve.base,
            "env-secret",
            "issue_comment",
            &delivery_id(7),
            &comment
        )
        .await,
        202
    );
    // Answered as the environment's App (the fake refuses JWTs of app 9999).
    poll("the App's reply to /help", async || {
        (app_replies(&fake) >= 1).then_some(())
    })
    .await;
    // An App is configured and no admin token is set: /setup is closed.
    assert_eq!(get(&format!("{}/setup", serve.base), None).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_set_of_credentials_is_refused_before_anything_binds() {
    let tmp = TempDir::new().unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STAGEBOT_DATA_DIR", tmp.path().join("data"))
        .env("STAGEBOT_LISTEN", free_addr().to_string())
        .env("WEBHOOK_SECRET", "only-the-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("APP_ID") && err.contains("setup mode"),
        "{err}"
    );
}
